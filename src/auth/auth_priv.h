/*
 * auth_priv.h - private to src/auth (and tests/unit/test_auth.c): the
 * struct auth itself, the keys derived from STATE/secret.key, the sign-in
 * rate limiter (auth_ratelimit.c) and the helpers shared by auth.c and
 * auth_totp.c.
 */
#ifndef MOAT_AUTH_PRIV_H
#define MOAT_AUTH_PRIV_H

#include <pthread.h>
#include <sodium.h>
#include "auth.h"

#define AUTH_KEY_FILE "secret.key"
#define AUTH_INITIAL_PASSWORD_FILE "initial-admin-password"
#define AUTH_NAME_MAX 64
#define AUTH_PASSWORD_MIN_CHARS 12
#define AUTH_PASSWORD_MAX_OCTETS 1024
#define AUTH_TOTP_SECRET_BYTES 20   /* RFC 4226 4 R6: 160 bits recommended */
#define AUTH_TOTP_STEP 30           /* RFC 6238 5.2 */
#define AUTH_TOTP_DIGITS 6
#define AUTH_RL_MAX_KEYS 4096       /* rate limiter: accounts + addresses tracked */
#define AUTH_RL_MAX_FAILURES 1000   /* a bound on login_max_failures we keep per key */

/* the rate limiter: failures per key ("n:" account name, "i:" address) */
struct auth_rl_entry {
    char key[144];
    int64_t *fails;              /* ring of failure times, capacity max */
    int n, head;                 /* how many, index of the oldest */
    int64_t last;                /* newest failure: the eviction order */
};

struct auth_ratelimit {
    pthread_mutex_t lock;
    struct auth_rl_entry *e;
    size_t n, cap;
    int max;                     /* failures allowed in the window */
    int64_t window;              /* seconds */
};

struct auth {
    char *state_dir;
    int64_t session_lifetime;
    int64_t session_idle_timeout;
    /* two subkeys of STATE/secret.key (crypto_kdf): one key never serves two primitives */
    unsigned char hash_key[crypto_generichash_KEYBYTES];       /* session ids, token secrets */
    unsigned char totp_key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES];  /* TOTP seeds */
    unsigned char secret_key[crypto_aead_xchacha20poly1305_ietf_KEYBYTES]; /* config secrets */
    char dummy_hash[crypto_pwhash_STRBYTES];   /* verified when the name is unknown */
    struct auth_ratelimit rl;
    int64_t clock_fixed;         /* tests: the clock stands here (0 = the wall clock) */
    int64_t clock_skew;          /* tests: added to the clock */
};

/* auth_now - unix seconds (with the test skew) */
int64_t auth_now(const struct auth *a);
/* auth_test_clock_skew - tests: move auth's clock by seconds (sessions, limiter, TOTP) */
void auth_test_clock_skew(struct auth *a, int64_t seconds);
/* auth_test_clock_freeze - tests: stop auth's clock at its current time */
void auth_test_clock_freeze(struct auth *a);

/* rate limiter (auth_ratelimit.c) */
void auth_rl_init(struct auth_ratelimit *rl, int max, int64_t window);
void auth_rl_free(struct auth_ratelimit *rl);
/* auth_rl_check - 0 when key may try now, else seconds until it may */
int64_t auth_rl_check(struct auth_ratelimit *rl, const char *key, int64_t now);
void auth_rl_fail(struct auth_ratelimit *rl, const char *key, int64_t now);
void auth_rl_clear(struct auth_ratelimit *rl, const char *key);

/* auth_totp_check_account - code against the account's (possibly pending)
 * secret at now; on success records the step so the code cannot be reused.
 * 0 = ok; -1 with err->field "totp" */
int auth_totp_check_account(struct auth *a, struct store *st, const struct store_account *acc,
                            const char *code, struct error *err);

/* base32 (RFC 4648 6, no padding) of len bytes into out (>= len * 8 / 5 + 2) */
void auth_base32(const unsigned char *in, size_t len, char *out, size_t size);

#endif
