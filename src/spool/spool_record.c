/*
 * spool_record.c - encoding and validation of spool records (see
 * spool_record.h for the layout).  Pure functions: no I/O, no globals, so
 * the decoder can be fuzzed on arbitrary bytes (tests/fuzz/fuzz_spool_record.c).
 *
 * Envelope encoding (COMMIT payload after the queue id), all little-endian:
 *     u8 version (2), str sender, str client_addr, str helo, ostr envid,
 *     u8 ret, u32 flags, i64 received_ms, u64 size, u8 warned,
 *     [version 2:] ostr prefix, ostr hold,
 *     u32 n_rcpts, n_rcpts x { str addr, ostr orcpt, u32 notify, u8 state, ostr diag },
 *     u32 n_extents, n_extents x { u32 seg, u64 off, u32 len },
 *     [version 3:] n_rcpts x { ostr fwd_for, ostr sender }   (forwarding, issue 7)
 * where str = u32 length + octets, ostr = u8 present + str when present.
 */
#include <stdlib.h>
#include <string.h>
#include "spool_record.h"


static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* spool_rec_header - header with the CRC over the type/len fields and payload */
void spool_rec_header(uint8_t *hdr, enum spool_rec_type type,
                      const void *const *parts, const size_t *lens, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += lens[i];
    put_u32(hdr, SPOOL_REC_MAGIC);
    hdr[4] = (uint8_t)type;
    hdr[5] = 0;
    hdr[6] = 0;
    hdr[7] = 0;
    put_u32(hdr + 8, (uint32_t)total);
    uint32_t crc = crc32c(0, hdr + 4, 8);
    for (size_t i = 0; i < n; i++)
        crc = crc32c(crc, parts[i], lens[i]);
    put_u32(hdr + 12, crc);
}

void spool_rec_trailer(uint8_t *tr)
{
    put_u32(tr, SPOOL_REC_END);
}

/* spool_rec_check - validate one record; see the header for the contract */
int spool_rec_check(const uint8_t *p, size_t avail, int *type,
                    const uint8_t **payload, uint32_t *plen, size_t *total)
{
    *total = 0;
    if (avail < SPOOL_REC_HDR)
        return avail >= 4 && get_u32(p) != SPOOL_REC_MAGIC ? -1 : 0;
    if (get_u32(p) != SPOOL_REC_MAGIC)
        return -1;
    int t = p[4];
    if (t < SPOOL_REC_DATA || t > SPOOL_REC_ARCHIVED || p[5] || p[6] || p[7])
        return -1;
    uint32_t len = get_u32(p + 8);
    if (len > SPOOL_REC_MAX || len < SPOOL_QID_LEN)
        return -1;
    size_t need = (size_t)SPOOL_REC_OVERHEAD + len;
    *total = need;
    if (avail < need)
        return 0;
    if (get_u32(p + SPOOL_REC_HDR + len) != SPOOL_REC_END)
        return -1;
    uint32_t crc = crc32c(0, p + 4, 8);
    crc = crc32c(crc, p + SPOOL_REC_HDR, len);
    if (crc != get_u32(p + 12))
        return -1;
    *type = t;
    *payload = p + SPOOL_REC_HDR;
    *plen = len;
    return 1;
}

/* spool_qid_parse - strict: exactly 16 upper-case hex digits */
int spool_qid_parse(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < SPOOL_QID_LEN; i++) {
        char c = s[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

void spool_qid_format(char *dst, uint64_t v)
{
    static const char hex[] = "0123456789ABCDEF";
    for (int i = SPOOL_QID_LEN - 1; i >= 0; i--) {
        dst[i] = hex[v & 0xf];
        v >>= 4;
    }
    dst[SPOOL_QID_LEN] = '\0';
}

/* --- envelope encoding --- */

static void enc_u8(struct buf *b, uint8_t v)
{
    buf_append(b, &v, 1);
}

static void enc_u32(struct buf *b, uint32_t v)
{
    uint8_t t[4];
    put_u32(t, v);
    buf_append(b, t, 4);
}

static void enc_u64(struct buf *b, uint64_t v)
{
    enc_u32(b, (uint32_t)v);
    enc_u32(b, (uint32_t)(v >> 32));
}

static void enc_str(struct buf *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n > SPOOL_MAX_STR)
        n = SPOOL_MAX_STR;   /* never produce what the decoder refuses */
    enc_u32(b, (uint32_t)n);
    buf_append(b, s ? s : "", n);
}

static void enc_ostr(struct buf *b, const char *s)
{
    enc_u8(b, s != NULL);
    if (s)
        enc_str(b, s);
}

void spool_env_encode(struct buf *b, const struct spool_envelope *env,
                      const struct spool_extent *ext, size_t n_ext)
{
    enc_u8(b, SPOOL_ENV_VERSION);
    enc_str(b, env->sender);
    enc_str(b, env->client_addr);
    enc_str(b, env->helo);
    enc_ostr(b, env->envid);
    enc_u8(b, (uint8_t)env->ret);
    enc_u32(b, env->flags);
    enc_u64(b, (uint64_t)env->received_ms);
    enc_u64(b, env->size);
    enc_u8(b, env->warned);
    enc_ostr(b, env->prefix);
    enc_ostr(b, env->hold);
    enc_u32(b, (uint32_t)env->n_rcpts);
    for (size_t i = 0; i < env->n_rcpts; i++) {
        const struct spool_rcpt *r = &env->rcpts[i];
        enc_str(b, r->addr);
        enc_ostr(b, r->orcpt);
        enc_u32(b, r->notify);
        enc_u8(b, (uint8_t)r->state);
        enc_ostr(b, r->diag);
    }
    enc_u32(b, (uint32_t)n_ext);
    for (size_t i = 0; i < n_ext; i++) {
        enc_u32(b, ext[i].seg);
        enc_u64(b, ext[i].off);
        enc_u32(b, ext[i].len);
    }
    for (size_t i = 0; i < env->n_rcpts; i++) {
        enc_ostr(b, env->rcpts[i].fwd_for);
        enc_ostr(b, env->rcpts[i].sender);
    }
}

/* a bounded reader over a payload */
struct dec {
    const uint8_t *p;
    size_t len;
    size_t pos;
    bool bad;
};

static const uint8_t *dec_take(struct dec *d, size_t n)
{
    if (d->bad || d->len - d->pos < n) {
        d->bad = true;
        return NULL;
    }
    const uint8_t *r = d->p + d->pos;
    d->pos += n;
    return r;
}

static uint8_t dec_u8(struct dec *d)
{
    const uint8_t *p = dec_take(d, 1);
    return p ? p[0] : 0;
}

static uint32_t dec_u32(struct dec *d)
{
    const uint8_t *p = dec_take(d, 4);
    return p ? get_u32(p) : 0;
}

static uint64_t dec_u64(struct dec *d)
{
    uint64_t lo = dec_u32(d);
    uint64_t hi = dec_u32(d);
    return lo | hi << 32;
}

/* dec_str - a NUL-free string; NUL octets inside are malformed */
static char *dec_str(struct dec *d)
{
    uint32_t n = dec_u32(d);
    if (d->bad || n > SPOOL_MAX_STR) {
        d->bad = true;
        return NULL;
    }
    const uint8_t *p = dec_take(d, n);
    if (!p)
        return NULL;
    if (memchr(p, '\0', n)) {
        d->bad = true;
        return NULL;
    }
    return xstrndup((const char *)p, n);
}

static char *dec_ostr(struct dec *d)
{
    uint8_t present = dec_u8(d);
    if (present > 1)
        d->bad = true;
    return present == 1 && !d->bad ? dec_str(d) : NULL;
}

int spool_env_decode(const uint8_t *p, size_t len, struct spool_envelope *env,
                     struct spool_extent **ext, size_t *n_ext)
{
    struct dec d = { .p = p, .len = len };
    memset(env, 0, sizeof(*env));
    *ext = NULL;
    *n_ext = 0;
    uint8_t version = dec_u8(&d);
    if (version < 1 || version > SPOOL_ENV_VERSION)
        return -1;
    env->sender = dec_str(&d);
    env->client_addr = dec_str(&d);
    env->helo = dec_str(&d);
    env->envid = dec_ostr(&d);
    uint8_t ret = dec_u8(&d);
    if (ret > SPOOL_RET_HDRS)
        d.bad = true;
    env->ret = (enum spool_ret)ret;
    env->flags = dec_u32(&d);
    env->received_ms = (int64_t)dec_u64(&d);
    env->size = dec_u64(&d);
    uint8_t warned = dec_u8(&d);
    if (warned > 1)
        d.bad = true;
    env->warned = warned == 1;
    if (version >= 2) {
        env->prefix = dec_ostr(&d);
        env->hold = dec_ostr(&d);
    }
    uint32_t nr = dec_u32(&d);
    /* each recipient needs at least 14 octets: bound the allocation by the input */
    if (nr > SPOOL_MAX_RCPTS || (size_t)nr * 14 > len)
        d.bad = true;
    if (!d.bad && nr) {
        env->rcpts = xcalloc(nr, sizeof(*env->rcpts));
        for (uint32_t i = 0; i < nr && !d.bad; i++) {
            struct spool_rcpt *r = &env->rcpts[i];
            env->n_rcpts = i + 1;
            r->addr = dec_str(&d);
            r->orcpt = dec_ostr(&d);
            r->notify = dec_u32(&d);
            uint8_t st = dec_u8(&d);
            if (st > SPOOL_RCPT_FAILED)
                d.bad = true;
            r->state = (enum spool_rcpt_state)st;
            r->diag = dec_ostr(&d);
        }
    }
    uint32_t ne = dec_u32(&d);
    if (ne > SPOOL_MAX_EXTENTS || (size_t)ne * 16 > len - (d.pos < len ? d.pos : len))
        d.bad = true;
    if (!d.bad && ne) {
        *ext = xcalloc(ne, sizeof(**ext));
        uint64_t sum = 0;
        for (uint32_t i = 0; i < ne && !d.bad; i++) {
            (*ext)[i].seg = dec_u32(&d);
            (*ext)[i].off = dec_u64(&d);
            (*ext)[i].len = dec_u32(&d);
            sum += (*ext)[i].len;
        }
        if (sum != env->size)
            d.bad = true;
        *n_ext = ne;
    } else if (!d.bad && env->size != 0) {
        d.bad = true;
    }
    for (size_t i = 0; version >= 3 && i < env->n_rcpts && !d.bad; i++) {
        env->rcpts[i].fwd_for = dec_ostr(&d);
        env->rcpts[i].sender = dec_ostr(&d);
    }
    if (d.pos != d.len)
        d.bad = true;
    if (d.bad || !env->sender || !env->client_addr || !env->helo) {
        spool_env_clear(env);
        free(*ext);
        *ext = NULL;
        *n_ext = 0;
        return -1;
    }
    return 0;
}

void spool_env_clear(struct spool_envelope *env)
{
    free(env->sender);
    free(env->client_addr);
    free(env->helo);
    free(env->envid);
    free(env->prefix);
    free(env->hold);
    for (size_t i = 0; i < env->n_rcpts; i++) {
        free(env->rcpts[i].addr);
        free(env->rcpts[i].orcpt);
        free(env->rcpts[i].diag);
        free(env->rcpts[i].fwd_for);
        free(env->rcpts[i].sender);
    }
    free(env->rcpts);
    memset(env, 0, sizeof(*env));
}

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

void spool_env_copy(struct spool_envelope *dst, const struct spool_envelope *src)
{
    *dst = *src;
    dst->sender = xstrdup(src->sender ? src->sender : "");
    dst->client_addr = xstrdup(src->client_addr ? src->client_addr : "");
    dst->helo = xstrdup(src->helo ? src->helo : "");
    dst->envid = dup_or_null(src->envid);
    dst->prefix = dup_or_null(src->prefix);
    dst->hold = dup_or_null(src->hold);
    dst->rcpts = src->n_rcpts ? xcalloc(src->n_rcpts, sizeof(*dst->rcpts)) : NULL;
    for (size_t i = 0; i < src->n_rcpts; i++) {
        dst->rcpts[i] = src->rcpts[i];
        dst->rcpts[i].addr = xstrdup(src->rcpts[i].addr ? src->rcpts[i].addr : "");
        dst->rcpts[i].orcpt = dup_or_null(src->rcpts[i].orcpt);
        dst->rcpts[i].diag = dup_or_null(src->rcpts[i].diag);
        dst->rcpts[i].fwd_for = dup_or_null(src->rcpts[i].fwd_for);
        dst->rcpts[i].sender = dup_or_null(src->rcpts[i].sender);
    }
}

void spool_rcpt_encode(struct buf *b, uint32_t idx, enum spool_rcpt_state st, const char *diag)
{
    enc_u32(b, idx);
    enc_u8(b, (uint8_t)st);
    enc_ostr(b, diag);
}

int spool_rcpt_decode(const uint8_t *p, size_t len, uint32_t *idx,
                      enum spool_rcpt_state *st, char **diag)
{
    struct dec d = { .p = p, .len = len };
    *idx = dec_u32(&d);
    uint8_t s = dec_u8(&d);
    if (s > SPOOL_RCPT_FAILED)
        d.bad = true;
    *st = (enum spool_rcpt_state)s;
    *diag = d.bad ? NULL : dec_ostr(&d);
    if (d.bad || d.pos != d.len) {
        free(*diag);
        *diag = NULL;
        return -1;
    }
    return 0;
}
