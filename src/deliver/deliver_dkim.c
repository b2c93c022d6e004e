/*
 * deliver_dkim.c - DKIM signing of outbound mail with libopendkim (see
 * deliver_dkim.h).
 *
 * The key set.  dkim_keyset_load runs on moatd's reload thread: it reads
 * the active keys from the store and opens their sealed private keys with
 * the auth key.  The loop only swaps the pointer (moatd.c) and reads it;
 * the set is immutable once loaded, and its libopendkim library handle is
 * used by one thread at a time (the loop, after the swap).
 *
 * Signing.  dkim_sign_message reads the message's header section through
 * the delivery reader (bounded by DKIM_HEAD_MAX) to find the header From
 * domain, picks the key of that domain or its closest parent, then feeds
 * the whole message to libopendkim (rsa-sha256, relaxed/relaxed, no l=, t=
 * set, From oversigned) and returns the DKIM-Signature field.  Ed25519
 * keys sign through deliver_dkim_ed25519.c instead, with the same choices
 * (libopendkim 2.11 leaks every Ed25519 key it loads; see that file).  The delivery engine
 * caches it with the message, so retries and other destinations reuse it.
 * It runs on the loop: an RSA 2048 signature takes about a millisecond and
 * hashing is linear in the message size (bounded by message_size_max).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <opendkim/dkim.h>
#include <time.h>
#include "deliver_dkim_priv.h"
#include "../auth/auth.h"
#include "../store/store.h"

/* the header section we look through for From (deliver.c reads as much for DSNs) */
#define DKIM_HEAD_MAX (256 * 1024)
#define DKIM_READ_CHUNK 65536
#define DKIM_DOMAIN_MAX 256

/* RFC 6376 5.4.1: the fields worth signing; From also oversigned (no second
 * From can be added without breaking the signature) */
static const char *const dkim_sign_headers[] = {
    "from", "to", "cc", "subject", "date", "message-id", "reply-to", "mime-version",
    "content-type", "content-transfer-encoding", "in-reply-to", "references", NULL
};
static const char *const dkim_oversign_headers[] = { "from", NULL };

struct dkim_key {
    char *domain;
    char *selector;
    bool ed25519;
    char *pem;                   /* private key, in the clear: wiped on free */
};

struct dkim_keyset {
    DKIM_LIB *lib;
    struct dkim_key *keys;
    size_t n;
};

static void key_clear(struct dkim_key *k)
{
    free(k->domain);
    free(k->selector);
    if (k->pem != NULL) {
        OPENSSL_cleanse(k->pem, strlen(k->pem));
        free(k->pem);
    }
}

void dkim_keyset_free(struct dkim_keyset *ks)
{
    if (ks == NULL)
        return;
    for (size_t i = 0; i < ks->n; i++)
        key_clear(&ks->keys[i]);
    free(ks->keys);
    if (ks->lib != NULL)
        dkim_close(ks->lib);
    free(ks);
}

size_t dkim_keyset_count(const struct dkim_keyset *ks)
{
    return ks ? ks->n : 0;
}

/* lib_new - a libopendkim handle with our header choices */
static DKIM_LIB *lib_new(struct error *err)
{
    DKIM_LIB *lib = dkim_init(NULL, NULL);
    if (lib == NULL) {
        error_set(err, NULL, "libopendkim cannot be initialised");
        return NULL;
    }
    /* the option takes a pointer to a NULL-terminated list, sized as a pointer */
    if (dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_OVERSIGNHDRS,
                     (void *)dkim_oversign_headers, sizeof(char **)) != DKIM_STAT_OK ||
        dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_SIGNHDRS, (void *)dkim_sign_headers,
                     sizeof(char **)) != DKIM_STAT_OK) {
        dkim_close(lib);
        error_set(err, NULL, "libopendkim refused the header lists");
        return NULL;
    }
    return lib;
}

struct dkim_keyset *dkim_keyset_load(struct store *st, const struct auth *a, struct error *err)
{
    struct store_dkim_key *k = NULL;
    size_t n = 0;
    if (store_dkim_key_list(st, NULL, true, &k, &n, err) < 0)
        return NULL;
    struct dkim_keyset *ks = xcalloc(1, sizeof *ks);
    ks->lib = lib_new(err);
    if (ks->lib == NULL) {
        store_dkim_keys_free(k, n);
        free(ks);
        return NULL;
    }
    ks->keys = xcalloc(n ? n : 1, sizeof *ks->keys);
    for (size_t i = 0; i < n; i++) {
        struct error e = {0};
        char *pem = NULL;
        if (auth_secret_open(a, DKIM_KEY_LABEL, k[i].private_key, k[i].private_key_len, &pem,
                             &e) < 0) {
            log_error("event=dkim_key_unusable domain=%s selector=%s reason=\"%s\"",
                      k[i].domain, k[i].selector, e.msg);
            continue;
        }
        struct dkim_key *d = &ks->keys[ks->n++];
        d->domain = xstrdup(k[i].domain);
        d->selector = xstrdup(k[i].selector);
        d->ed25519 = strcmp(k[i].algorithm, "ed25519") == 0;
        d->pem = pem;
    }
    store_dkim_keys_free(k, n);
    return ks;
}

/* keyset_find - the key of domain or of its closest parent, or NULL */
static const struct dkim_key *keyset_find(const struct dkim_keyset *ks, const char *domain)
{
    for (const char *d = domain; d != NULL && *d != '\0';) {
        for (size_t i = 0; i < ks->n; i++)
            if (strcmp(ks->keys[i].domain, d) == 0)
                return &ks->keys[i];
        d = strchr(d, '.');
        if (d != NULL)
            d++;
    }
    return NULL;
}

/* --- the header From --- */

/* field_value - the unfolded value of the first field named name (with the
 * colon) in head, into dst; -1 when absent or too long */
static int field_value(const char *head, size_t len, const char *name, char *dst, size_t size)
{
    size_t nl = strlen(name);
    for (size_t pos = 0; pos < len;) {
        const char *line = head + pos;
        const char *eol = memchr(line, '\n', len - pos);
        size_t ll = eol ? (size_t)(eol - line) + 1 : len - pos;
        if (ll >= nl && strncasecmp(line, name, nl) == 0) {
            size_t o = 0;
            const char *p = line + nl, *end = head + len;
            for (;;) {
                while (p < end && *p != '\r' && *p != '\n') {
                    if (o + 1 >= size)
                        return -1;
                    dst[o++] = *p++;
                }
                while (p < end && (*p == '\r' || *p == '\n'))
                    p++;
                if (p >= end || (*p != ' ' && *p != '\t'))
                    break;   /* RFC 5322 2.2.3: a continuation line starts with WSP */
            }
            dst[o] = '\0';
            return 0;
        }
        pos += ll;
    }
    return -1;
}

int dkim_header_from_domain(const char *head, size_t len, char *dst, size_t size)
{
    char value[4096];
    if (field_value(head, len, "from:", value, sizeof value) < 0)
        return -1;
    /* the first address: inside <> when there is one, else the bare addr-spec */
    char *lt = strchr(value, '<');
    char *addr = value;
    if (lt != NULL) {
        addr = lt;
    } else {
        char *comma = strchr(value, ',');
        if (comma != NULL)
            *comma = '\0';
    }
    unsigned char *user = NULL, *domain = NULL;
    if (dkim_mail_parse((unsigned char *)addr, &user, &domain) != 0 || domain == NULL ||
        domain[0] == '\0')
        return -1;
    if (str_copy(dst, size, (const char *)domain) < 0)
        return -1;
    str_lower(dst);
    return 0;
}

enum head_end { HEAD_ERROR = -1, HEAD_COMPLETE, HEAD_ALL, HEAD_TOO_LONG };

/* read_head - the header section (up to and with the empty line, at most
 * DKIM_HEAD_MAX) into b: HEAD_COMPLETE, HEAD_ALL (the message has no body:
 * b holds all of it), HEAD_TOO_LONG or HEAD_ERROR */
static enum head_end read_head(ssize_t (*rd)(void *, uint64_t, void *, size_t), void *arg,
                               struct buf *b)
{
    char chunk[8192];
    for (;;) {
        ssize_t r = rd(arg, b->len, chunk, sizeof chunk);
        if (r < 0)
            return HEAD_ERROR;
        if (r == 0)
            return HEAD_ALL;
        buf_append(b, chunk, (size_t)r);
        const char *end = memmem(b->data, b->len, "\r\n\r\n", 4);
        if (end != NULL) {
            b->len = (size_t)(end - b->data) + 4;
            return HEAD_COMPLETE;
        }
        if (b->len >= DKIM_HEAD_MAX)
            return HEAD_TOO_LONG;
    }
}

/* signing_domain - the domain to look the key up for: header From, else
 * the envelope sender's; "" when neither */
static void signing_domain(const char *head, size_t len, const char *env_sender, char *dst,
                           size_t size)
{
    dst[0] = '\0';
    if (dkim_header_from_domain(head, len, dst, size) == 0)
        return;
    const char *at = env_sender ? strrchr(env_sender, '@') : NULL;
    if (at != NULL && str_copy(dst, size, at + 1) == 0)
        str_lower(dst);
    else
        dst[0] = '\0';
}

/* sign - feed the message to a signing handle and take the field */
static int sign(DKIM *dk, ssize_t (*rd)(void *, uint64_t, void *, size_t), void *arg,
                char **hdr, size_t *hdr_len, char *why, size_t whylen)
{
    unsigned char *chunk = xmalloc(DKIM_READ_CHUNK);
    uint64_t off = 0;
    DKIM_STAT stt = DKIM_STAT_OK;
    ssize_t r;
    while ((r = rd(arg, off, chunk, DKIM_READ_CHUNK)) > 0) {
        off += (uint64_t)r;
        if ((stt = dkim_chunk(dk, chunk, (size_t)r)) != DKIM_STAT_OK)
            break;
    }
    free(chunk);
    if (r < 0) {
        xsnprintf(why, whylen, "the message cannot be read from the spool");
        return -1;
    }
    if (stt == DKIM_STAT_OK)
        stt = dkim_chunk(dk, NULL, 0);
    if (stt == DKIM_STAT_OK)
        stt = dkim_eom(dk, NULL);
    unsigned char *value = NULL;
    size_t vlen = 0;
    if (stt == DKIM_STAT_OK)
        stt = dkim_getsighdr_d(dk, strlen(DKIM_SIGNHEADER) + 2, &value, &vlen);
    if (stt != DKIM_STAT_OK) {
        const char *e = dkim_geterror(dk);
        xsnprintf(why, whylen, "%s%s%s", dkim_getresultstr(stt), e ? ": " : "", e ? e : "");
        return -1;
    }
    /* libopendkim folds with bare LF + TAB: SMTP wants CRLF */
    struct buf b;
    buf_init(&b);
    buf_append_str(&b, DKIM_SIGNHEADER ": ");
    for (size_t i = 0; i < vlen && value[i] != '\0'; i++) {
        if (value[i] == '\n' && (i == 0 || value[i - 1] != '\r'))
            buf_append(&b, "\r", 1);
        buf_append(&b, &value[i], 1);
    }
    buf_append_str(&b, "\r\n");
    *hdr_len = b.len;
    *hdr = xstrndup(b.data, b.len);
    buf_free(&b);
    return 0;
}

static int sign_outcome(const char *qid, const struct dkim_key *k, const char *domain, int rc,
                        const char *why);

int dkim_sign_message(const struct dkim_keyset *ks, const struct store_snapshot *snap,
                      const char *qid, const char *env_sender,
                      ssize_t (*read)(void *arg, uint64_t off, void *buf, size_t len), void *arg,
                      char **hdr, size_t *hdr_len)
{
    *hdr = NULL;
    *hdr_len = 0;
    if (ks == NULL || ks->n == 0 || snap == NULL)
        return 0;
    struct buf head;
    buf_init(&head);
    enum head_end he = read_head(read, arg, &head);
    if (he == HEAD_ERROR) {
        buf_free(&head);
        log_warn("qid=%s event=dkim_failed reason=\"the message cannot be read from the "
                 "spool\" action=send_unsigned", qid);
        return -1;
    }
    char domain[DKIM_DOMAIN_MAX];
    buf_cstr(&head);
    signing_domain(head.data ? head.data : "", head.len, env_sender, domain, sizeof domain);
    /* only mail of our own domains: the key set holds internal domains'
     * keys, and a domain removed since keygen no longer signs */
    const struct dkim_key *k = NULL;
    if (domain[0] != '\0' && store_snapshot_find(snap, domain) != NULL)
        k = keyset_find(ks, domain);
    if (k == NULL) {
        buf_free(&head);
        return 0;
    }
    char why[300] = "";
    int rc;
    if (k->ed25519) {
        struct dkim_ed25519_req req = {
            .pem = k->pem, .domain = k->domain, .selector = k->selector,
            .t = (int64_t)time(NULL), .sign_headers = dkim_sign_headers,
            .oversign_headers = dkim_oversign_headers, .head = head.data ? head.data : "",
            .head_len = head.len, .body_off = head.len, .read = read, .arg = arg,
        };
        if (he == HEAD_TOO_LONG) {
            xsnprintf(why, sizeof why, "the header section is longer than %d octets",
                      DKIM_HEAD_MAX);
            rc = -1;
        } else {
            rc = dkim_ed25519_sign(&req, hdr, hdr_len, why, sizeof why);
        }
        buf_free(&head);
        return sign_outcome(qid, k, domain, rc, why);
    }
    buf_free(&head);
    DKIM_STAT stt;
    DKIM *dk = dkim_sign(ks->lib, (const unsigned char *)qid, NULL,
                         (dkim_sigkey_t)k->pem, (const unsigned char *)k->selector,
                         (const unsigned char *)k->domain, DKIM_CANON_RELAXED,
                         DKIM_CANON_RELAXED, DKIM_SIGN_RSASHA256, -1, &stt);
    if (dk == NULL) {
        xsnprintf(why, sizeof why, "%s", dkim_getresultstr(stt));
        rc = -1;
    } else {
        rc = sign(dk, read, arg, hdr, hdr_len, why, sizeof why);
        dkim_free(dk);
    }
    return sign_outcome(qid, k, domain, rc, why);
}

/* sign_outcome - log the result of signing with k; the return of dkim_sign_message */
static int sign_outcome(const char *qid, const struct dkim_key *k, const char *domain, int rc,
                        const char *why)
{
    if (rc < 0) {
        char q[340];
        log_warn("qid=%s event=dkim_failed d=%s s=%s reason=%s action=send_unsigned", qid,
                 k->domain, k->selector, log_quote(q, sizeof q, why));
        return -1;
    }
    log_info("qid=%s event=dkim_signed d=%s s=%s a=%s from_domain=%s", qid, k->domain,
             k->selector, k->ed25519 ? "ed25519-sha256" : "rsa-sha256", domain);
    return 1;
}
