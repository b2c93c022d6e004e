/*
 * auth_secret.c - configuration secrets at rest (the LDAP bind password):
 * sealed with XChaCha20-Poly1305 under a subkey of STATE/secret.key, so a
 * copy of the database alone does not reveal them.  The label is bound as
 * associated data, so a blob sealed for one purpose cannot be replayed as
 * another.
 *
 * Entry points: auth_secret_seal, auth_secret_open (auth.h).
 * Blob layout: nonce (24 bytes) || ciphertext || tag (16 bytes).
 */
#include <stdlib.h>
#include <string.h>
#include "auth_priv.h"

#define NONCE_LEN crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define MAC_LEN crypto_aead_xchacha20poly1305_ietf_ABYTES
/* a configuration secret is a password, not a file */
#define AUTH_SECRET_MAX 4096

int auth_secret_seal(const struct auth *a, const char *label, const char *plain,
                     unsigned char **blob, size_t *blob_len, struct error *err)
{
    size_t len = strlen(plain);
    if (len > AUTH_SECRET_MAX) {
        error_set(err, "password", "a secret is at most %d bytes", AUTH_SECRET_MAX);
        return -1;
    }
    unsigned char *b = xmalloc(NONCE_LEN + len + MAC_LEN);
    randombytes_buf(b, NONCE_LEN);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(b + NONCE_LEN, &clen,
                                               (const unsigned char *)plain, len,
                                               (const unsigned char *)label, strlen(label),
                                               NULL, b, a->secret_key);
    *blob = b;
    *blob_len = NONCE_LEN + (size_t)clen;
    return 0;
}

/* auth_derive_key - a subkey of STATE/secret.key for label (keyed BLAKE2b) */
int auth_derive_key(const struct auth *a, const char *label, unsigned char *out, size_t len)
{
    if (len < crypto_generichash_BYTES_MIN || len > crypto_generichash_BYTES_MAX)
        return -1;
    return crypto_generichash(out, len, (const unsigned char *)label, strlen(label), a->secret_key,
                              sizeof a->secret_key);
}

int auth_secret_open(const struct auth *a, const char *label, const unsigned char *blob,
                     size_t blob_len, char **plain, struct error *err)
{
    if (blob == NULL || blob_len < NONCE_LEN + MAC_LEN ||
        blob_len > NONCE_LEN + AUTH_SECRET_MAX + MAC_LEN) {
        error_set(err, "password", "the stored secret is damaged; set it again");
        return -1;
    }
    size_t max = blob_len - NONCE_LEN - MAC_LEN;
    char *p = xmalloc(max + 1);
    unsigned long long plen = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt((unsigned char *)p, &plen, NULL,
                                                   blob + NONCE_LEN, blob_len - NONCE_LEN,
                                                   (const unsigned char *)label, strlen(label),
                                                   blob, a->secret_key) != 0) {
        sodium_memzero(p, max + 1);
        free(p);
        error_set(err, "password", "the stored secret cannot be decrypted (was "
                  "STATE/secret.key replaced?); set it again");
        return -1;
    }
    p[plen] = '\0';
    *plain = p;
    return 0;
}
