/*
 * deliver_dkim_priv.h - private to the DKIM files of src/deliver: the
 * Ed25519 signer (deliver_dkim_ed25519.c) that deliver_dkim.c calls, and
 * its relaxed canonicalisation, exposed for tests/unit/test_dkim.c.
 */
#ifndef MOAT_DELIVER_DKIM_PRIV_H
#define MOAT_DELIVER_DKIM_PRIV_H

#include <stdbool.h>
#include <openssl/evp.h>
#include "deliver_dkim.h"

/* relaxed body canonicalisation (RFC 6376 3.4.4) fed in pieces, hashed with SHA-256 */
struct dkim_body {
    EVP_MD_CTX *md;
    size_t empty_lines;          /* held back: dropped if the body ends here */
    bool wsp;                    /* WSP seen since the last octet written */
    bool content;                /* the current line has written something */
    bool cr;                     /* the last octet was a CR */
};
void dkim_body_init(struct dkim_body *b);
void dkim_body_update(struct dkim_body *b, const unsigned char *p, size_t n);
/* dkim_body_final - the body hash; frees the context */
void dkim_body_final(struct dkim_body *b, unsigned char digest[32]);
/* dkim_relaxed_header - "name:value" (RFC 6376 3.4.2) of one raw field
 * (its folding included, the final CRLF not) appended to out */
void dkim_relaxed_header(const char *f, size_t n, struct buf *out);

struct dkim_ed25519_req {
    const char *pem;             /* the private key */
    const char *domain, *selector;
    int64_t t;                   /* t= (unix seconds) */
    const char *const *sign_headers;       /* lower case, NULL-terminated */
    const char *const *oversign_headers;
    const char *head;            /* the header section with its empty line */
    size_t head_len;
    uint64_t body_off;           /* where the body starts in the message */
    ssize_t (*read)(void *arg, uint64_t off, void *buf, size_t len);
    void *arg;
};

/* dkim_ed25519_sign - the complete "DKIM-Signature: ...\r\n" field
 * (allocated) for the message; -1 with why */
int dkim_ed25519_sign(const struct dkim_ed25519_req *r, char **hdr, size_t *hdr_len, char *why,
                      size_t whylen);

#endif
