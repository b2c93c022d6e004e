/*
 * deliver_dkim_key.c - DKIM keys and DNS records (see deliver_dkim.h):
 * generating a key pair with OpenSSL EVP, writing the TXT record to
 * publish, parsing a published record's tag=value list (RFC 6376 3.2,
 * bounded: it comes from DNS; fuzzed by tests/fuzz/fuzz_dkim_tags.c) and
 * comparing it with our key (Connect's outbound check).
 *
 * Pure functions, safe on any thread; nothing here logs a private key.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include "deliver_dkim.h"

#define DKIM_RSA_BITS 2048
#define ED25519_RAW_LEN 32

bool dkim_algorithm_valid(const char *alg)
{
    return alg != NULL && (strcmp(alg, "rsa") == 0 || strcmp(alg, "ed25519") == 0);
}

bool dkim_selector_valid(const char *sel)
{
    size_t n = sel ? strlen(sel) : 0, label = 0;
    if (n == 0 || n > DKIM_SELECTOR_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)sel[i];
        if (c == '.') {
            if (label == 0 || sel[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!isalnum(c) && !(c == '-' && label > 0))
            return false;
        label++;
    }
    return label > 0 && sel[n - 1] != '-';
}

/* base64 - standard base64 of n octets (allocated) */
static char *base64(const unsigned char *p, size_t n)
{
    char *out = xmalloc(4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    return out;
}

/* public_p - the record's p= value of key */
static char *public_p(EVP_PKEY *key, bool ed25519, struct error *err)
{
    if (ed25519) {
        unsigned char raw[ED25519_RAW_LEN];
        size_t len = sizeof raw;
        if (EVP_PKEY_get_raw_public_key(key, raw, &len) != 1 || len != sizeof raw) {
            error_set(err, NULL, "cannot read the Ed25519 public key");
            return NULL;
        }
        return base64(raw, len);
    }
    unsigned char *der = NULL;
    int len = i2d_PUBKEY(key, &der);
    if (len <= 0) {
        error_set(err, NULL, "cannot encode the RSA public key");
        return NULL;
    }
    char *p = base64(der, (size_t)len);
    OPENSSL_free(der);
    return p;
}

/* private_pem - PKCS#8 PEM of key (allocated) */
static char *private_pem(EVP_PKEY *key, struct error *err)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *out = NULL;
    if (b != NULL && PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) == 1) {
        char *data;
        long len = BIO_get_mem_data(b, &data);
        if (len > 0)
            out = xstrndup(data, (size_t)len);
    }
    if (out == NULL)
        error_set(err, NULL, "cannot encode the private key");
    if (b != NULL) {
        char *data;
        long len = BIO_get_mem_data(b, &data);
        if (len > 0)
            OPENSSL_cleanse(data, (size_t)len);
        BIO_free(b);
    }
    return out;
}

int dkim_keygen(const char *alg, char **pem, char **p, struct error *err)
{
    *pem = *p = NULL;
    if (!dkim_algorithm_valid(alg)) {
        error_set(err, "algorithm", "algorithm must be rsa or ed25519");
        return -1;
    }
    bool ed = strcmp(alg, "ed25519") == 0;
    EVP_PKEY *key = ed ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")
                       : EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)DKIM_RSA_BITS);
    if (key == NULL) {
        error_set(err, NULL, "OpenSSL could not generate a %s key", alg);
        return -1;
    }
    *pem = private_pem(key, err);
    if (*pem != NULL)
        *p = public_p(key, ed, err);
    EVP_PKEY_free(key);
    if (*p == NULL) {
        if (*pem != NULL)
            OPENSSL_cleanse(*pem, strlen(*pem));
        free(*pem);
        *pem = NULL;
        return -1;
    }
    return 0;
}

char *dkim_record_value(const char *alg, const char *p)
{
    return xasprintf("v=DKIM1; k=%s; p=%s", alg, p);
}

int dkim_record_name(const char *selector, const char *domain, char *dst, size_t size)
{
    return xsnprintf(dst, size, "%s._domainkey.%s", selector, domain) < 0 ? -1 : 0;
}

char *dkim_txt_split(const char *value, size_t max, const char *sep)
{
    struct buf b;
    size_t n = strlen(value);
    if (max == 0 || max > DKIM_TXT_STRING_MAX)
        max = DKIM_TXT_STRING_MAX;
    buf_init(&b);
    for (size_t off = 0; off < n || off == 0; off += max) {
        size_t len = n - off < max ? n - off : max;
        if (off > 0)
            buf_append_str(&b, sep);
        buf_append_str(&b, "\"");
        buf_append(&b, value + off, len);
        buf_append_str(&b, "\"");
        if (n == 0)
            break;
    }
    char *out = xstrdup(buf_cstr(&b));
    buf_free(&b);
    return out;
}

char *dkim_record_zone(const char *selector, const char *domain, const char *value)
{
    char *strings = dkim_txt_split(value, DKIM_TXT_STRING_MAX, "\n\t");
    char *out = xasprintf("%s._domainkey.%s. IN TXT ( %s )", selector, domain, strings);
    free(strings);
    return out;
}

/* --- parsing published records --- */

static bool is_wsp(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* trim - [*s, *s + *n) without surrounding whitespace */
static void trim(const char **s, size_t *n)
{
    while (*n > 0 && is_wsp(**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && is_wsp((*s)[*n - 1]))
        (*n)--;
}

static bool tag_name_valid(const char *s, size_t n)
{
    if (n == 0 || n > 32 || !isalpha((unsigned char)s[0]))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_')
            return false;
    return true;
}

int dkim_tags_parse(const char *txt, size_t len, struct dkim_tags *out, char *why, size_t whylen)
{
    out->n = 0;
    if (len > DKIM_TXT_MAX) {
        xsnprintf(why, whylen, "the record is longer than %d octets", DKIM_TXT_MAX);
        return -1;
    }
    size_t pos = 0;
    while (pos < len) {
        const char *spec = txt + pos;
        const char *semi = memchr(spec, ';', len - pos);
        size_t n = semi ? (size_t)(semi - spec) : len - pos;
        pos += n + (semi ? 1 : 0);
        const char *t = spec;
        size_t tn = n;
        trim(&t, &tn);
        if (tn == 0)
            continue;   /* RFC 6376 3.2: a trailing ';' is allowed */
        const char *eq = memchr(t, '=', tn);
        if (eq == NULL) {
            xsnprintf(why, whylen, "a tag without '=' (tag %zu)", out->n + 1);
            return -1;
        }
        const char *name = t, *value = eq + 1;
        size_t name_len = (size_t)(eq - t), value_len = tn - name_len - 1;
        trim(&name, &name_len);
        trim(&value, &value_len);
        if (!tag_name_valid(name, name_len)) {
            xsnprintf(why, whylen, "an invalid tag name (tag %zu)", out->n + 1);
            return -1;
        }
        for (size_t i = 0; i < value_len; i++) {
            unsigned char c = (unsigned char)value[i];
            if (c < 0x21 && !is_wsp((char)c)) {
                xsnprintf(why, whylen, "a control character in tag %.*s", (int)name_len, name);
                return -1;
            }
            if (c > 0x7e) {
                xsnprintf(why, whylen, "a non-ASCII octet in tag %.*s", (int)name_len, name);
                return -1;
            }
        }
        for (size_t i = 0; i < out->n; i++)
            if (out->t[i].name_len == name_len && memcmp(out->t[i].name, name, name_len) == 0) {
                /* RFC 6376 3.2: a duplicated tag makes the whole list invalid */
                xsnprintf(why, whylen, "tag %.*s appears twice", (int)name_len, name);
                return -1;
            }
        if (out->n == DKIM_TAGS_MAX) {
            xsnprintf(why, whylen, "more than %d tags", DKIM_TAGS_MAX);
            return -1;
        }
        out->t[out->n++] = (struct dkim_tag){ name, name_len, value, value_len };
    }
    return 0;
}

const struct dkim_tag *dkim_tag_get(const struct dkim_tags *tags, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < tags->n; i++)
        if (tags->t[i].name_len == n && memcmp(tags->t[i].name, name, n) == 0)
            return &tags->t[i];
    return NULL;
}

/* squeeze - s without whitespace into dst (size bytes); -1 when too long */
static int squeeze(const char *s, size_t n, char *dst, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (is_wsp(s[i]))
            continue;
        if (o + 1 >= size)
            return -1;
        dst[o++] = s[i];
    }
    dst[o] = '\0';
    return 0;
}

int dkim_record_matches(const char *published_txt, const char *expected_p, const char *algorithm,
                        char *why, size_t whylen)
{
    struct dkim_tags tags;
    char tagwhy[128];
    if (published_txt == NULL || dkim_tags_parse(published_txt, strlen(published_txt), &tags,
                                                 tagwhy, sizeof tagwhy) < 0) {
        xsnprintf(why, whylen, "the published record is not a DKIM record: %s",
                  published_txt ? tagwhy : "none");
        return 0;
    }
    const struct dkim_tag *v = dkim_tag_get(&tags, "v");
    if (v != NULL && (v != &tags.t[0] || v->value_len != 5 || memcmp(v->value, "DKIM1", 5) != 0)) {
        xsnprintf(why, whylen, v != &tags.t[0] ? "v= must be the first tag"
                                               : "v= is %.*s, not DKIM1", (int)v->value_len, v->value);
        return 0;
    }
    const struct dkim_tag *k = dkim_tag_get(&tags, "k");
    const char *kv = k ? k->value : "rsa";
    size_t kn = k ? k->value_len : 3;
    if (kn != strlen(algorithm) || strncasecmp(kv, algorithm, kn) != 0) {
        xsnprintf(why, whylen, "the published key type is k=%.*s, the key is %s", (int)kn, kv,
                  algorithm);
        return 0;
    }
    const struct dkim_tag *p = dkim_tag_get(&tags, "p");
    if (p == NULL) {
        xsnprintf(why, whylen, "the published record has no p= (public key)");
        return 0;
    }
    char *a = xmalloc(DKIM_TXT_MAX + 1), *b = xmalloc(DKIM_TXT_MAX + 1);
    int rc = 0;
    if (squeeze(p->value, p->value_len, a, DKIM_TXT_MAX + 1) < 0 ||
        squeeze(expected_p, strlen(expected_p), b, DKIM_TXT_MAX + 1) < 0)
        xsnprintf(why, whylen, "a public key longer than %d octets", DKIM_TXT_MAX);
    else if (a[0] == '\0')
        xsnprintf(why, whylen, "the published key is revoked (empty p=)");
    else if (strcmp(a, b) != 0)
        xsnprintf(why, whylen, "the published p= is a different public key (it may be an old "
                  "record, or cut short when it was entered)");
    else {
        xsnprintf(why, whylen, "the published record matches");
        rc = 1;
    }
    free(a);
    free(b);
    return rc;
}
