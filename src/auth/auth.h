/*
 * auth.h - who is asking, and may they: accounts (administrators and basic
 * administrators now, directory users later), password hashing (argon2id,
 * libsodium), sign-in sessions with CSRF tokens, API tokens, TOTP second
 * factor (RFC 6238), sign-in rate limiting, roles and permissions, and the
 * audit log writer.
 *
 * Secrets at rest: passwords are argon2id hashes; session ids and API token
 * secrets are stored as keyed BLAKE2b hashes (a leaked database does not let
 * anyone sign in); TOTP seeds are encrypted (XChaCha20-Poly1305) with the
 * key in STATE/secret.key (0600, created at first start).  Comparisons of
 * secrets are constant-time.
 *
 * Threads: a struct auth is shared by the HTTP worker threads; it is
 * thread-safe (the rate limiter has its own lock).  Every call takes the
 * caller's store handle (a store handle belongs to one thread).
 */
#ifndef MOAT_AUTH_H
#define MOAT_AUTH_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>
#include "../core/core.h"
#include "../store/store.h"

struct auth;

enum auth_role {
    AUTH_ROLE_NONE = 0,       /* unauthenticated */
    AUTH_ROLE_USER,           /* end user: only their own data (portal, later) */
    AUTH_ROLE_BASIC_ADMIN,    /* everything except protected actions */
    AUTH_ROLE_ADMIN,          /* everything */
};

/* Permissions: every HTTP route names exactly one.  The role table in
 * auth.c is the one place that says which role holds which permission. */
enum auth_perm {
    AUTH_PERM_PUBLIC = 0,       /* no authentication (sign-in, health) */
    AUTH_PERM_SELF,             /* any signed-in account: own profile, own sessions, own password */
    AUTH_PERM_CONFIG_READ,      /* domains, routes, settings, queue list (envelopes) */
    AUTH_PERM_CONFIG_WRITE,     /* change domains, routes, settings */
    AUTH_PERM_QUEUE_WRITE,      /* retry, delete queued mail */
    AUTH_PERM_MESSAGE_CONTENT,  /* read message content other than held mail: protected */
    AUTH_PERM_ACCOUNTS_MANAGE,  /* accounts and roles, other people's tokens: protected */
    AUTH_PERM_AUDIT_READ,       /* the audit log */
    AUTH_PERM_ARCHIVE_EXPORT,   /* export the archive: protected */
    /* issue 8: search the archive.  Held by every role; the handlers scope
     * it (api_archive.c): a user sees only their own mail, a basic
     * administrator metadata only (reading content is protected) */
    AUTH_PERM_ARCHIVE_SEARCH,
    AUTH_PERM_ARCHIVE_ADMIN,    /* retention purge, legal holds: protected */
    AUTH_PERM_BACKUP,           /* issue 11: download a backup (every secret): protected */
    AUTH_PERM__COUNT
};

const char *auth_role_name(enum auth_role r);           /* "admin", "basic_admin", "user" */
int auth_role_parse(const char *s, enum auth_role *out);
const char *auth_perm_name(enum auth_perm p);
/* auth_role_allows - the role table */
bool auth_role_allows(enum auth_role r, enum auth_perm p);

/* the authenticated caller of one request */
struct auth_principal {
    int64_t account_id;         /* 0 when none */
    char name[128];
    enum auth_role role;        /* for a token: the token's scope (never above its owner's role) */
    bool via_token;             /* bearer token (no CSRF check) or session cookie */
    int64_t token_id;
    char session_id_hash[65];   /* hex, for revocation of "this" session */
    char csrf[65];              /* the session's CSRF token (cookie auth only) */
    bool must_change_password;  /* only SELF password change is allowed until done */
};

struct auth_config {
    const char *state_dir;              /* STATE/secret.key lives here */
    int64_t session_lifetime;           /* seconds, absolute */
    int64_t session_idle_timeout;       /* seconds without a request */
    int login_max_failures;             /* per account and per client IP ... */
    int64_t login_failure_window;       /* ... in this many seconds -> 429 */
};

struct auth *auth_create(const struct auth_config *cfg, struct error *err);
void auth_free(struct auth *a);

/* --- accounts --- */
/* auth_account_create - password NULL: generate one and return it in
 * *generated (caller frees); must_change forces a change at first sign-in */
int auth_account_create(struct auth *a, struct store *st, const char *name, enum auth_role role,
                        const char *password, bool must_change, char **generated,
                        int64_t *id_out, struct error *err);
/* auth_password_set - checks the policy (length >= 12, not the name) */
int auth_password_set(struct auth *a, struct store *st, int64_t account_id, const char *password,
                      bool must_change, struct error *err);
int auth_password_verify(struct auth *a, struct store *st, int64_t account_id,
                         const char *password, struct error *err);
/* auth_password_hash - argon2id of password, encoded, with the accounts'
 * parameters, into out (AUTH_PASSWORD_HASH_MAX octets); for the portal
 * passwords of directory users (issue 5).  -1 only when memory is short. */
#define AUTH_PASSWORD_HASH_MAX 128   /* crypto_pwhash_STRBYTES */
int auth_password_hash(const char *password, char out[AUTH_PASSWORD_HASH_MAX], struct error *err);

/* --- sign-in --- */
enum auth_login_result {
    AUTH_LOGIN_OK = 0,
    AUTH_LOGIN_BAD,            /* unknown name or wrong password: one message for both */
    AUTH_LOGIN_TOTP_REQUIRED,  /* password right, second factor missing */
    AUTH_LOGIN_RATE_LIMITED,   /* *retry_after seconds */
    AUTH_LOGIN_DISABLED,
    AUTH_LOGIN_ERROR,          /* store failure: err */
};
/* auth_login - on OK, *session_token (caller frees) is the cookie value and
 * out describes the new session (csrf filled) */
enum auth_login_result auth_login(struct auth *a, struct store *st, const char *name,
                                  const char *password, const char *totp_code,
                                  const char *client_ip, char **session_token,
                                  struct auth_principal *out, int64_t *retry_after,
                                  struct error *err);
/* auth_session_check - a cookie value -> principal; -1 when unknown, expired or revoked */
int auth_session_check(struct auth *a, struct store *st, const char *session_token,
                       struct auth_principal *out);
int auth_session_revoke(struct auth *a, struct store *st, const char *session_id_hash,
                        int64_t account_id, struct error *err);
/* auth_sessions_list - the account's live sessions as a JSON array (no secrets) */
json_t *auth_sessions_list(struct auth *a, struct store *st, int64_t account_id, struct error *err);

/* --- API tokens: "moat_" + id + "_" + secret, shown once --- */
int auth_token_create(struct auth *a, struct store *st, int64_t account_id, const char *name,
                      enum auth_role scope, char **token_out, int64_t *id_out, struct error *err);
/* auth_token_check - bearer value -> principal; updates last-used; -1 if invalid/revoked */
int auth_token_check(struct auth *a, struct store *st, const char *token, struct auth_principal *out);
int auth_token_revoke(struct auth *a, struct store *st, int64_t token_id, struct error *err);

/* --- TOTP (RFC 6238: HMAC-SHA1, 30 s, 6 digits, +-1 step) --- */
/* auth_totp_enroll - new secret (not active until confirmed); *uri_out = otpauth:// URI */
int auth_totp_enroll(struct auth *a, struct store *st, int64_t account_id, char **secret_b32_out,
                     char **uri_out, struct error *err);
int auth_totp_confirm(struct auth *a, struct store *st, int64_t account_id, const char *code,
                      struct error *err);
int auth_totp_disable(struct auth *a, struct store *st, int64_t account_id, struct error *err);
/* auth_totp_verify - a code for the account's active second factor (and
 * not reused); 0 = ok, -1 with err->field "code" */
int auth_totp_verify(struct auth *a, struct store *st, int64_t account_id, const char *code,
                     struct error *err);
/* auth_totp_code - the code for secret at unix time t (tests and RFC 6238 vectors) */
int auth_totp_code(const unsigned char *secret, size_t len, int64_t t, int digits, char out[16]);

/* --- audit: who, when, from where, what; before/after with secrets redacted --- */
/* auth_audit - append one entry; before/after may be NULL; they are copied and
 * every member named password, secret, token, csrf, totp* or *_hash (also
 * *_password, *_secret, *_token, csrf*), at any depth, is replaced by "[redacted]" */
int auth_audit(struct store *st, const struct auth_principal *who, const char *client_ip,
               const char *action, const char *target, json_t *before, json_t *after);

/* --- configuration secrets at rest (auth_secret.c): the LDAP bind password --- */
/* auth_secret_seal - encrypt plain (XChaCha20-Poly1305, a subkey of
 * STATE/secret.key, label as associated data) into *blob (caller frees) */
int auth_secret_seal(const struct auth *a, const char *label, const char *plain,
                     unsigned char **blob, size_t *blob_len, struct error *err);
/* auth_derive_key - len (16..64) octets derived from STATE/secret.key for
 * label, the same at every start (the SRS key of forwarding, issue 7) */
int auth_derive_key(const struct auth *a, const char *label, unsigned char *out, size_t len);
/* auth_secret_open - the reverse; *plain is NUL-terminated (caller wipes and frees);
 * -1 with err->field "password" when the blob is damaged or the key changed */
int auth_secret_open(const struct auth *a, const char *label, const unsigned char *blob,
                     size_t blob_len, char **plain, struct error *err);

/* --- bootstrap (moatd) --- */
/* auth_init_admin - `moatd --init-admin NAME --token-file FILE`: on a store
 * without any account, create administrator NAME (random password that must
 * be changed, never printed) and write an admin-scoped API token to FILE
 * (created 0600, O_EXCL, fsync).  Refused when any account exists. */
int auth_init_admin(struct auth *a, struct store *st, const char *name, const char *token_file,
                    struct error *err);
/* auth_first_start - when no account exists: create "admin" with a one-time
 * password (changed at first sign-in), write it to STATE/initial-admin-password
 * (0600) and print it once to stderr (never to the log).  0 also when
 * accounts exist (nothing to do). */
int auth_first_start(struct auth *a, struct store *st, const char *state_dir, struct error *err);

/* --- the metrics token (issue 11): read /metrics from outside metrics_allow --- */
/* auth_metrics_token_create - a new random token replaces the old one; the
 * store keeps its keyed hash only; *token_out (caller frees) is shown once */
int auth_metrics_token_create(struct auth *a, struct store *st, const char *created_by,
                              char **token_out, struct error *err);
/* auth_metrics_token_check - token is the current metrics token */
bool auth_metrics_token_check(struct auth *a, struct store *st, const char *token);

#endif
