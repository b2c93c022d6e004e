/*
 * smtp_auth.c - SMTP AUTH input decoding (RFC 4954, PLAIN RFC 4616, LOGIN)
 * and the failed-attempt limiter (smtp_auth.h).
 *
 * Decoding is strict: base64 with padding and nothing else (libsodium's
 * constant-time decoder), every field bounded.  The limiter is a fixed-size
 * table so a flood of addresses or names cannot grow memory: when it is
 * full, the entry touched longest ago gives way.
 */
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include "../core/core.h"
#include "smtp_auth.h"

enum smtp_auth_decode smtp_auth_b64_decode(const char *in, size_t in_len, char *out,
                                           size_t out_size, size_t *out_len)
{
    *out_len = 0;
    if (out_size == 0)
        return SMTP_AUTH_BAD_FORMAT;
    out[0] = '\0';
    if (in_len == 1 && in[0] == '*')
        return SMTP_AUTH_CANCEL;
    if (in_len == 1 && in[0] == '=')
        return SMTP_AUTH_OK;          /* RFC 4954 4: the empty response */
    if (in_len == 0 || in_len % 4 != 0)
        return SMTP_AUTH_BAD_BASE64;
    if (in_len / 4 * 3 > out_size - 1)
        return SMTP_AUTH_BAD_FORMAT;  /* longer than any field we accept */
    /* the alphabet, checked here: what the decoder skips or stops at must not pass */
    size_t pad = in[in_len - 1] == '=' ? (in[in_len - 2] == '=' ? 2 : 1) : 0;
    for (size_t i = 0; i < in_len - pad; i++) {
        unsigned char c = (unsigned char)in[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/'))
            return SMTP_AUTH_BAD_BASE64;
    }
    const char *end = NULL;
    size_t n = 0;
    if (sodium_base642bin((unsigned char *)out, out_size - 1, in, in_len, NULL, &n, &end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 || end != in + in_len)
        return SMTP_AUTH_BAD_BASE64;
    out[n] = '\0';
    *out_len = n;
    return SMTP_AUTH_OK;
}

/* field_copy - a NUL-free field [p, p+len) into dst; -1 when too long */
static int field_copy(char *dst, const char *p, size_t len)
{
    if (len > SMTP_AUTH_FIELD_MAX)
        return -1;
    memcpy(dst, p, len);
    dst[len] = '\0';
    return 0;
}

enum smtp_auth_decode smtp_auth_plain_decode(const char *in, size_t in_len,
                                             struct smtp_auth_plain *out)
{
    char buf[3 * SMTP_AUTH_FIELD_MAX + 8];
    size_t n;
    memset(out, 0, sizeof *out);
    enum smtp_auth_decode rc = smtp_auth_b64_decode(in, in_len, buf, sizeof buf, &n);
    if (rc != SMTP_AUTH_OK)
        return rc;
    /* RFC 4616 2: message = [authzid] UTF8NUL authcid UTF8NUL passwd */
    const char *nul1 = memchr(buf, '\0', n);
    const char *nul2 = nul1 ? memchr(nul1 + 1, '\0', n - (size_t)(nul1 + 1 - buf)) : NULL;
    rc = SMTP_AUTH_BAD_FORMAT;
    if (nul1 == NULL || nul2 == NULL)
        goto out;
    const char *end = buf + n;
    if (memchr(nul2 + 1, '\0', (size_t)(end - nul2 - 1)) != NULL)
        goto out;                                     /* a third NUL */
    size_t authcid_len = (size_t)(nul2 - nul1 - 1), pw_len = (size_t)(end - nul2 - 1);
    if (authcid_len == 0 || pw_len == 0)
        goto out;
    if (field_copy(out->authzid, buf, (size_t)(nul1 - buf)) < 0 ||
        field_copy(out->authcid, nul1 + 1, authcid_len) < 0 ||
        field_copy(out->passwd, nul2 + 1, pw_len) < 0)
        goto out;
    rc = SMTP_AUTH_OK;
out:
    sodium_memzero(buf, sizeof buf);
    if (rc != SMTP_AUTH_OK)
        sodium_memzero(out, sizeof *out);
    return rc;
}

enum smtp_auth_decode smtp_auth_login_decode(const char *in, size_t in_len, char *out,
                                             size_t out_size)
{
    size_t n;
    enum smtp_auth_decode rc = smtp_auth_b64_decode(in, in_len, out, out_size, &n);
    if (rc != SMTP_AUTH_OK)
        return rc;
    if (n == 0 || memchr(out, '\0', n) != NULL) {
        sodium_memzero(out, out_size);
        return SMTP_AUTH_BAD_FORMAT;
    }
    return SMTP_AUTH_OK;
}

/* --- the limiter --- */

#define LIMIT_KEY_MAX 160

struct limit_slot {
    char key[LIMIT_KEY_MAX];      /* "" = free */
    uint64_t first_ms;            /* start of the current window */
    uint64_t last_ms;             /* last touched: eviction order */
    int64_t failures;
};

struct smtp_auth_limiter {
    struct limit_slot *slots;
    size_t n;
};

struct smtp_auth_limiter *smtp_auth_limiter_new(size_t slots)
{
    struct smtp_auth_limiter *l = xcalloc(1, sizeof *l);
    l->n = slots ? slots : 1;
    l->slots = xcalloc(l->n, sizeof *l->slots);
    return l;
}

void smtp_auth_limiter_free(struct smtp_auth_limiter *l)
{
    if (l == NULL)
        return;
    free(l->slots);
    free(l);
}

static struct limit_slot *limit_find(struct smtp_auth_limiter *l, const char *key)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->slots[i].key[0] != '\0' && strcmp(l->slots[i].key, key) == 0)
            return &l->slots[i];
    return NULL;
}

bool smtp_auth_limited(struct smtp_auth_limiter *l, const char *key, uint64_t now_ms,
                       uint64_t window_ms, int64_t max)
{
    struct limit_slot *s = limit_find(l, key);
    if (s == NULL || now_ms - s->first_ms >= window_ms)
        return false;
    return s->failures >= max;
}

void smtp_auth_failed(struct smtp_auth_limiter *l, const char *key, uint64_t now_ms,
                      uint64_t window_ms)
{
    struct limit_slot *s = limit_find(l, key);
    if (s == NULL) {
        /* a free slot, else the one touched longest ago */
        s = &l->slots[0];
        for (size_t i = 0; i < l->n; i++) {
            if (l->slots[i].key[0] == '\0') {
                s = &l->slots[i];
                break;
            }
            if (l->slots[i].last_ms < s->last_ms)
                s = &l->slots[i];
        }
        (void)str_copy(s->key, sizeof s->key, key);
        if (s->key[0] == '\0')
            memcpy(s->key, key, sizeof s->key - 1);   /* truncated keys still count */
        s->key[sizeof s->key - 1] = '\0';
        s->failures = 0;
        s->first_ms = now_ms;
    } else if (now_ms - s->first_ms >= window_ms) {
        s->failures = 0;
        s->first_ms = now_ms;
    }
    s->failures++;
    s->last_ms = now_ms;
}
