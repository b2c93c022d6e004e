/*
 * auth_totp.c - the optional second factor: TOTP (RFC 6238) over HOTP
 * (RFC 4226) with HMAC-SHA1, 30-second steps, 6 digits, one step of clock
 * drift either way (RFC 6238 5.2).
 *
 * Entry points: auth_totp_code (the algorithm; the RFC 6238 Appendix B
 * vectors test it), auth_totp_enroll / confirm / disable / verify, and
 * auth_totp_check_account for auth_login.
 *
 * Seeds at rest: 20 random bytes encrypted with XChaCha20-Poly1305 under a
 * subkey of STATE/secret.key; the account id is the associated data, so a
 * seed copied into another account's row does not decrypt.  A code is good
 * once: the accepted time step is recorded with a conditional update
 * (store_account_use_totp_step), so a replay inside the window is refused
 * even by another HTTP worker.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include "auth_priv.h"

#define NONCE_LEN crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define MAC_LEN crypto_aead_xchacha20poly1305_ietf_ABYTES

/* auth_base32 - RFC 4648 6 alphabet, no padding (authenticator apps accept it) */
void auth_base32(const unsigned char *in, size_t len, char *out, size_t size)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    size_t j = 0;
    unsigned buffer = 0;
    int bits = 0;

    for (size_t i = 0; i < len && j + 1 < size; i++) {
        buffer = (buffer << 8) | in[i];
        bits += 8;
        while (bits >= 5 && j + 1 < size) {
            out[j++] = alphabet[(buffer >> (bits - 5)) & 31];
            bits -= 5;
        }
    }
    if (bits > 0 && j + 1 < size)
        out[j++] = alphabet[(buffer << (5 - bits)) & 31];
    out[j] = '\0';
}

/* auth_totp_code - RFC 6238 4.2: T = floor(t / 30); HOTP(K, T) with the
 * dynamic truncation of RFC 4226 5.3; 6 to 8 digits */
int auth_totp_code(const unsigned char *secret, size_t len, int64_t t, int digits, char out[16])
{
    unsigned char msg[8], md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    if (t < 0 || digits < 6 || digits > 8 || len == 0 || len > 1024)
        return -1;
    uint64_t counter = (uint64_t)t / AUTH_TOTP_STEP;
    for (int i = 7; i >= 0; i--) {
        msg[i] = (unsigned char)(counter & 0xff);
        counter >>= 8;
    }
    if (HMAC(EVP_sha1(), secret, (int)len, msg, sizeof msg, md, &mdlen) == NULL || mdlen != 20)
        return -1;
    int off = md[19] & 0x0f;
    uint32_t bin = ((uint32_t)(md[off] & 0x7f) << 24) | ((uint32_t)md[off + 1] << 16) |
                   ((uint32_t)md[off + 2] << 8) | (uint32_t)md[off + 3];
    uint32_t mod = 1;
    for (int i = 0; i < digits; i++)
        mod *= 10;
    snprintf(out, 16, "%0*u", digits, (unsigned)(bin % mod));
    return 0;
}

static void seed_ad(int64_t account_id, char *ad, size_t size)
{
    xsnprintf(ad, size, "moat-totp:%lld", (long long)account_id);
}

/* seed_open - decrypt the stored seed; 0 = ok */
static int seed_open(const struct auth *a, const struct store_account *acc,
                     unsigned char seed[AUTH_TOTP_SECRET_BYTES])
{
    char ad[48];
    unsigned long long outlen = 0;

    if (acc->totp_secret == NULL ||
        acc->totp_secret_len != NONCE_LEN + AUTH_TOTP_SECRET_BYTES + MAC_LEN)
        return -1;
    seed_ad(acc->id, ad, sizeof ad);
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(
            seed, &outlen, NULL, acc->totp_secret + NONCE_LEN,
            acc->totp_secret_len - NONCE_LEN, (const unsigned char *)ad, strlen(ad),
            acc->totp_secret, a->totp_key) != 0 || outlen != AUTH_TOTP_SECRET_BYTES)
        return -1;
    return 0;
}

/* code_shape - exactly AUTH_TOTP_DIGITS digits */
static bool code_shape(const char *code)
{
    if (code == NULL || strlen(code) != AUTH_TOTP_DIGITS)
        return false;
    for (int i = 0; i < AUTH_TOTP_DIGITS; i++)
        if (code[i] < '0' || code[i] > '9')
            return false;
    return true;
}

int auth_totp_check_account(struct auth *a, struct store *st, const struct store_account *acc,
                            const char *code, struct error *err)
{
    unsigned char seed[AUTH_TOTP_SECRET_BYTES];
    char want[16];

    memset(err, 0, sizeof *err);
    if (!code_shape(code)) {
        error_set(err, "totp", "a TOTP code has %d digits", AUTH_TOTP_DIGITS);
        return -1;
    }
    if (seed_open(a, acc, seed) < 0) {
        log_error("event=totp_seed_unreadable account=%s", acc->name);
        error_set(err, "totp", "the TOTP secret of this account cannot be read; "
                  "an administrator must reset it");
        return -1;
    }
    int64_t now = auth_now(a), matched = -1;
    /* RFC 6238 5.2: accept one step of drift either way; look at all three
     * so the time taken does not say which one matched */
    for (int d = -1; d <= 1; d++) {
        int64_t step = now / AUTH_TOTP_STEP + d;
        if (step < 0 || auth_totp_code(seed, sizeof seed, step * AUTH_TOTP_STEP,
                                       AUTH_TOTP_DIGITS, want) < 0)
            continue;
        if (sodium_memcmp(want, code, AUTH_TOTP_DIGITS) == 0 && step > acc->totp_last_step &&
            matched < 0)
            matched = step;
    }
    sodium_memzero(seed, sizeof seed);
    sodium_memzero(want, sizeof want);
    if (matched < 0) {
        error_set(err, "totp", "the TOTP code is not right (or was already used)");
        return -1;
    }
    int rc = store_account_use_totp_step(st, acc->id, matched, err);
    if (rc == STORE_CONFLICT) {
        error_set(err, "totp", "the TOTP code was already used; wait for the next one");
        return -1;
    }
    return rc < 0 ? -1 : 0;
}

int auth_totp_enroll(struct auth *a, struct store *st, int64_t account_id, char **secret_b32_out,
                     char **uri_out, struct error *err)
{
    struct store_account acc;
    unsigned char seed[AUTH_TOTP_SECRET_BYTES];
    unsigned char blob[NONCE_LEN + AUTH_TOTP_SECRET_BYTES + MAC_LEN];
    char ad[48], b32[64];

    memset(err, 0, sizeof *err);
    *secret_b32_out = *uri_out = NULL;
    if (store_account_get(st, account_id, &acc, err) < 0)
        return -1;
    if (acc.totp_active) {
        /* replacing an active factor must go through disable (code or password) */
        error_set(err, "totp", "TOTP is already active for this account; disable it first");
        store_account_clear(&acc);
        return -1;
    }
    randombytes_buf(seed, sizeof seed);
    randombytes_buf(blob, NONCE_LEN);
    seed_ad(account_id, ad, sizeof ad);
    crypto_aead_xchacha20poly1305_ietf_encrypt(blob + NONCE_LEN, NULL, seed, sizeof seed,
                                               (const unsigned char *)ad, strlen(ad), NULL,
                                               blob, a->totp_key);
    auth_base32(seed, sizeof seed, b32, sizeof b32);
    sodium_memzero(seed, sizeof seed);
    if (store_account_set_totp(st, account_id, blob, sizeof blob, false, 0, err) < 0) {
        sodium_memzero(b32, sizeof b32);
        store_account_clear(&acc);
        return -1;
    }
    /* Key Uri Format of the authenticator apps: label "Issuer:account" */
    *uri_out = xasprintf("otpauth://totp/Moat:%s?secret=%s&issuer=Moat&algorithm=SHA1"
                         "&digits=%d&period=%d", acc.name, b32, AUTH_TOTP_DIGITS, AUTH_TOTP_STEP);
    *secret_b32_out = xstrdup(b32);
    sodium_memzero(b32, sizeof b32);
    log_info("event=totp_enrolled account=%s", acc.name);
    store_account_clear(&acc);
    return 0;
}

int auth_totp_confirm(struct auth *a, struct store *st, int64_t account_id, const char *code,
                      struct error *err)
{
    struct store_account acc;

    memset(err, 0, sizeof *err);
    if (store_account_get(st, account_id, &acc, err) < 0)
        return -1;
    int rc = -1;
    if (acc.totp_active)
        error_set(err, "code", "TOTP is already active for this account");
    else if (acc.totp_secret == NULL)
        error_set(err, "code", "no TOTP enrolment is pending: enrol first");
    else if (auth_totp_check_account(a, st, &acc, code, err) == 0) {
        /* the step just used stays recorded: the confirming code cannot sign in */
        struct store_account now;
        if (store_account_get(st, account_id, &now, err) == STORE_OK) {
            rc = store_account_set_totp(st, account_id, now.totp_secret, now.totp_secret_len,
                                        true, now.totp_last_step, err) < 0 ? -1 : 0;
            store_account_clear(&now);
        }
        if (rc == 0)
            log_info("event=totp_activated account=%s", acc.name);
    } else if (strcmp(err->field, "totp") == 0) {
        str_copy(err->field, sizeof err->field, "code");
    }
    store_account_clear(&acc);
    return rc;
}

int auth_totp_disable(struct auth *a, struct store *st, int64_t account_id, struct error *err)
{
    memset(err, 0, sizeof *err);
    if (store_account_set_totp(st, account_id, NULL, 0, false, 0, err) < 0)
        return -1;
    log_info("event=totp_disabled account_id=%lld", (long long)account_id);
    return 0;
}

int auth_totp_verify(struct auth *a, struct store *st, int64_t account_id, const char *code,
                     struct error *err)
{
    struct store_account acc;

    memset(err, 0, sizeof *err);
    if (store_account_get(st, account_id, &acc, err) < 0)
        return -1;
    int rc = -1;
    if (!acc.totp_active)
        error_set(err, "code", "TOTP is not active for this account");
    else if (auth_totp_check_account(a, st, &acc, code, err) == 0)
        rc = 0;
    else if (strcmp(err->field, "totp") == 0)
        str_copy(err->field, sizeof err->field, "code");
    store_account_clear(&acc);
    return rc;
}
