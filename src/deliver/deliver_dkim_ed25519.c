/*
 * deliver_dkim_ed25519.c - ed25519-sha256 DKIM signatures (RFC 8463) made
 * with OpenSSL over our own relaxed/relaxed canonicalisation (RFC 6376
 * 3.4.2 and 3.4.4).
 *
 * Why not libopendkim: Debian 12's libopendkim 2.11.0~beta2 does sign
 * Ed25519 (DKIM_SIGN_ED25519SHA256), and its signatures verify, but every
 * Ed25519 signing handle leaks its private key (dkim_privkey_load allocates
 * a crypto context and an EVP_PKEY that dkim_free releases only for RSA;
 * LeakSanitizer shows ~1.3 KB per signed message).  A daemon signs without
 * end, so RSA stays with libopendkim and Ed25519 is done here.  The result
 * is checked against libopendkim's body hash in tests/unit/test_dkim.c and
 * by an independent verifier in tests/e2e/test_dkim.py.
 *
 * Entry point: dkim_ed25519_sign (deliver_dkim_priv.h).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include "deliver_dkim_priv.h"

#define ED_READ_CHUNK 65536
#define ED_MAX_FIELDS 1000         /* header fields looked at */
#define ED_FOLD_WIDTH 72

/* --- relaxed body canonicalisation, streaming (RFC 6376 3.4.4) --- */

void dkim_body_init(struct dkim_body *b)
{
    memset(b, 0, sizeof *b);
    b->md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(b->md, EVP_sha256(), NULL);
}

static void body_out(struct dkim_body *b, const void *p, size_t n)
{
    EVP_DigestUpdate(b->md, p, n);
}

/* body_char - one octet of the body, not a line end */
static void body_char(struct dkim_body *b, unsigned char c)
{
    if (c == ' ' || c == '\t') {
        b->wsp = true;   /* a run of WSP becomes one SP, unless it ends the line */
        return;
    }
    /* empty lines are held back: at the end of the body they are dropped */
    for (; b->empty_lines > 0; b->empty_lines--)
        body_out(b, "\r\n", 2);
    if (b->wsp)
        body_out(b, " ", 1);
    b->wsp = false;
    b->content = true;
    body_out(b, &c, 1);
}

static void body_eol(struct dkim_body *b)
{
    if (b->content)
        body_out(b, "\r\n", 2);
    else
        b->empty_lines++;
    b->content = false;
    b->wsp = false;
}

void dkim_body_update(struct dkim_body *b, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (b->cr) {
            b->cr = false;
            if (p[i] == '\n') {
                body_eol(b);
                continue;
            }
            body_char(b, '\r');   /* a bare CR is an ordinary octet */
        }
        if (p[i] == '\r')
            b->cr = true;
        else
            body_char(b, p[i]);
    }
}

void dkim_body_final(struct dkim_body *b, unsigned char digest[32])
{
    if (b->cr)
        body_char(b, '\r');
    if (b->content)   /* a last line without CRLF gets one */
        body_out(b, "\r\n", 2);
    unsigned int len = 32;
    EVP_DigestFinal_ex(b->md, digest, &len);
    EVP_MD_CTX_free(b->md);
    b->md = NULL;
}

/* --- relaxed header canonicalisation (RFC 6376 3.4.2) --- */

/* relaxed_header - "name:value" of one raw field (with its folding, without
 * the final CRLF) appended to out */
void dkim_relaxed_header(const char *f, size_t n, struct buf *out)
{
    const char *colon = memchr(f, ':', n);
    size_t nl = colon ? (size_t)(colon - f) : n;
    while (nl > 0 && (f[nl - 1] == ' ' || f[nl - 1] == '\t'))
        nl--;
    for (size_t i = 0; i < nl; i++) {
        char c = (char)tolower((unsigned char)f[i]);
        buf_append(out, &c, 1);
    }
    buf_append(out, ":", 1);
    if (colon == NULL)
        return;
    bool wsp = false, any = false;
    for (const char *p = colon + 1; p < f + n; p++) {
        if (*p == '\r' || *p == '\n')
            continue;   /* unfold */
        if (*p == ' ' || *p == '\t') {
            wsp = true;
            continue;
        }
        if (wsp && any)
            buf_append(out, " ", 1);
        wsp = false;
        any = true;
        buf_append(out, p, 1);
    }
}

/* --- the header section --- */

struct field {
    const char *p;
    size_t n;                    /* without the final CRLF */
    size_t name_len;
    bool used;
};

/* split_fields - the fields of head (ends with the empty line) */
static size_t split_fields(const char *head, size_t len, struct field *f, size_t max)
{
    size_t nf = 0;
    size_t pos = 0;
    while (pos < len && nf < max) {
        const char *line = head + pos;
        if (len - pos >= 2 && line[0] == '\r' && line[1] == '\n')
            break;   /* the empty line */
        size_t end = pos;
        for (;;) {   /* to the CRLF not followed by WSP */
            const char *crlf = memmem(head + end, len - end, "\r\n", 2);
            if (crlf == NULL) {
                end = len;
                break;
            }
            end = (size_t)(crlf - head) + 2;
            if (end >= len || (head[end] != ' ' && head[end] != '\t'))
                break;
        }
        size_t n = end - pos;
        if (n >= 2 && head[end - 2] == '\r' && head[end - 1] == '\n')
            n -= 2;
        const char *colon = memchr(line, ':', n);
        f[nf].p = line;
        f[nf].n = n;
        f[nf].name_len = colon ? (size_t)(colon - line) : 0;
        while (f[nf].name_len > 0 && (line[f[nf].name_len - 1] == ' ' ||
                                      line[f[nf].name_len - 1] == '\t'))
            f[nf].name_len--;
        f[nf].used = false;
        if (f[nf].name_len > 0)
            nf++;
        pos = end;
    }
    return nf;
}

/* take_last - the last unused field named name (RFC 6376 5.4.2), or NULL */
static struct field *take_last(struct field *f, size_t nf, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = nf; i-- > 0;)
        if (!f[i].used && f[i].name_len == len && strncasecmp(f[i].p, name, len) == 0) {
            f[i].used = true;
            return &f[i];
        }
    return NULL;
}

/* --- signing --- */

static char *b64(const unsigned char *p, size_t n)
{
    char *out = xmalloc(4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)out, p, (int)n);
    return out;
}

/* ed_sign - Ed25519 over the 32-octet hash (RFC 8463 3) */
static int ed_sign(const char *pem, const unsigned char hash[32], unsigned char sig[64],
                   char *why, size_t whylen)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (key == NULL || EVP_PKEY_get_id(key) != EVP_PKEY_ED25519) {
        EVP_PKEY_free(key);
        xsnprintf(why, whylen, "the stored key is not an Ed25519 private key");
        return -1;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t siglen = 64;
    int ok = md != NULL && EVP_DigestSignInit(md, NULL, NULL, NULL, key) == 1 &&
             EVP_DigestSign(md, sig, &siglen, hash, 32) == 1 && siglen == 64;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(key);
    if (!ok)
        xsnprintf(why, whylen, "OpenSSL could not make the Ed25519 signature");
    return ok ? 0 : -1;
}

/* fold - the field "DKIM-Signature: " + value + b, folded at the tag
 * boundaries ("; " -> ";\r\n\t", which relaxed canonicalisation reads as
 * the same single space) and inside b= */
static char *fold(const char *value, const char *b, size_t *len)
{
    struct buf o;
    buf_init(&o);
    buf_append_str(&o, "DKIM-Signature: ");
    size_t col = o.len;
    for (const char *p = value; *p != '\0'; p++) {
        if (p[0] == ';' && p[1] == ' ' && col > ED_FOLD_WIDTH / 2) {
            buf_append_str(&o, ";\r\n\t");
            col = 1;
            p++;
            continue;
        }
        buf_append(&o, p, 1);
        col++;
    }
    for (size_t i = 0, n = strlen(b); i < n;) {
        size_t room = col < ED_FOLD_WIDTH ? ED_FOLD_WIDTH - col : 0;
        if (room == 0) {
            buf_append_str(&o, "\r\n\t");
            col = 1;
            continue;
        }
        size_t take = n - i < room ? n - i : room;
        buf_append(&o, b + i, take);
        col += take;
        i += take;
    }
    buf_append_str(&o, "\r\n");
    *len = o.len;
    char *out = xstrndup(o.data, o.len);
    buf_free(&o);
    return out;
}

int dkim_ed25519_sign(const struct dkim_ed25519_req *r, char **hdr, size_t *hdr_len, char *why,
                      size_t whylen)
{
    *hdr = NULL;
    struct field *f = xcalloc(ED_MAX_FIELDS, sizeof *f);
    unsigned char *chunk = xmalloc(ED_READ_CHUNK);
    struct dkim_body body;
    struct buf hv, data;
    int rc = -1;
    buf_init(&hv);
    buf_init(&data);
    dkim_body_init(&body);

    size_t nf = split_fields(r->head, r->head_len, f, ED_MAX_FIELDS);
    /* the body: everything after the header section, streamed */
    uint64_t off = r->body_off;
    ssize_t got;
    while ((got = r->read(r->arg, off, chunk, ED_READ_CHUNK)) > 0) {
        dkim_body_update(&body, chunk, (size_t)got);
        off += (uint64_t)got;
    }
    unsigned char bh[32];
    dkim_body_final(&body, bh);
    if (got < 0) {
        xsnprintf(why, whylen, "the message cannot be read from the spool");
        goto out;
    }
    /* h=: every present instance of the fields to sign, bottom-up; the
     * oversigned ones once more (that entry matches no field) */
    struct buf h;
    buf_init(&h);
    for (const char *const *name = r->sign_headers; *name != NULL; name++) {
        struct field *fd;
        while ((fd = take_last(f, nf, *name)) != NULL) {
            buf_printf(&h, "%s%.*s", h.len ? ":" : "", (int)fd->name_len, fd->p);
            dkim_relaxed_header(fd->p, fd->n, &data);
            buf_append(&data, "\r\n", 2);
        }
    }
    for (const char *const *name = r->oversign_headers; *name != NULL; name++)
        buf_printf(&h, "%s%s", h.len ? ":" : "", *name);
    char *bh64 = b64(bh, sizeof bh);
    buf_printf(&hv, "v=1; a=ed25519-sha256; c=relaxed/relaxed; d=%s; s=%s; t=%lld; h=%s; "
               "bh=%s; b=", r->domain, r->selector, (long long)r->t, buf_cstr(&h), bh64);
    free(bh64);
    buf_free(&h);
    /* the signature field itself, b= empty, without CRLF (RFC 6376 3.7) */
    struct buf sf;
    buf_init(&sf);
    buf_append_str(&sf, "DKIM-Signature: ");
    buf_append(&sf, hv.data, hv.len);
    dkim_relaxed_header(sf.data, sf.len, &data);
    buf_free(&sf);
    unsigned char hash[32], sig[64];
    unsigned int hl = sizeof hash;
    if (EVP_Digest(data.data, data.len, hash, &hl, EVP_sha256(), NULL) != 1) {
        xsnprintf(why, whylen, "SHA-256 failed");
        goto out;
    }
    if (ed_sign(r->pem, hash, sig, why, whylen) < 0)
        goto out;
    char *sig64 = b64(sig, sizeof sig);
    *hdr = fold(buf_cstr(&hv), sig64, hdr_len);
    free(sig64);
    rc = 0;
out:
    free(f);
    free(chunk);
    buf_free(&hv);
    buf_free(&data);
    return rc;
}
