/*
 * fuzz_smtp_auth.c - libFuzzer target for the SMTP AUTH response decoding
 * (src/smtp/smtp_auth.c): what a client sends after AUTH PLAIN / LOGIN.
 * The input is one response line.  Invariants: a PLAIN success has a
 * non-empty authcid and password, each NUL-terminated within its bound and
 * re-encodable to the same input; a LOGIN success is non-empty without NUL.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include "smtp/smtp_auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct smtp_auth_plain p;
    static char out[SMTP_AUTH_FIELD_MAX + 1];
    const char *in = (const char *)data;
    if (sodium_init() < 0)
        abort();
    if (smtp_auth_plain_decode(in, size, &p) == SMTP_AUTH_OK) {
        size_t a = strnlen(p.authzid, sizeof p.authzid), c = strnlen(p.authcid, sizeof p.authcid),
               w = strnlen(p.passwd, sizeof p.passwd);
        if (a > SMTP_AUTH_FIELD_MAX || c == 0 || c > SMTP_AUTH_FIELD_MAX || w == 0 ||
            w > SMTP_AUTH_FIELD_MAX)
            abort();
        /* round trip: the fields re-encoded give the input back */
        size_t n = a + c + w + 2;
        unsigned char *raw = malloc(n);
        memcpy(raw, p.authzid, a);
        raw[a] = 0;
        memcpy(raw + a + 1, p.authcid, c);
        raw[a + 1 + c] = 0;
        memcpy(raw + a + 2 + c, p.passwd, w);
        size_t elen = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
        char *enc = malloc(elen);
        sodium_bin2base64(enc, elen, raw, n, sodium_base64_VARIANT_ORIGINAL);
        if (strlen(enc) != size || memcmp(enc, in, size) != 0)
            abort();
        free(raw);
        free(enc);
    }
    if (smtp_auth_login_decode(in, size, out, sizeof out) == SMTP_AUTH_OK) {
        size_t l = strnlen(out, sizeof out);
        if (l == 0 || l > SMTP_AUTH_FIELD_MAX)
            abort();
    }
    return 0;
}
