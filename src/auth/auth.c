/*
 * auth.c - accounts, passwords, sign-in, sessions, API tokens, the role
 * table and the bootstrap of the first administrator (auth.h).  TOTP is in
 * auth_totp.c, the audit writer in auth_audit.c, the sign-in rate limiter in
 * auth_ratelimit.c.
 *
 * Entry points: auth_create/free, auth_role_allows, auth_account_create,
 * auth_password_set/verify, auth_login, auth_session_check/revoke/list,
 * auth_token_create/check/revoke, auth_init_admin, auth_first_start.
 *
 * Passwords: argon2id through crypto_pwhash_str with the INTERACTIVE limits
 * (2 passes, 64 MiB).  That is libsodium's figure for interactive sign-in: on
 * two cores one verification takes well under a second even with several
 * HTTP workers signing in at once, while an offline guess still costs 64 MiB
 * of memory.  A stored hash with other parameters is rehashed at the next
 * successful sign-in (crypto_pwhash_str_needs_rehash), so raising the limits
 * later upgrades every account.
 *
 * Session ids and token secrets: 32 random bytes, base64url; only a keyed
 * BLAKE2b hash is stored, so a copy of the database does not let anyone in.
 * The key is a subkey of STATE/secret.key (32 random bytes, 0600).
 *
 * Threads: struct auth is read-only after auth_create except the rate
 * limiter, which has its own lock; each call uses the caller's store handle.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "auth_priv.h"

/* session ids and token secrets: 256 bits */
#define AUTH_RANDOM_BYTES 32
#define AUTH_B64_LEN sodium_base64_ENCODED_LEN(AUTH_RANDOM_BYTES, \
                                                sodium_base64_VARIANT_URLSAFE_NO_PADDING)
/* write last_used of a token at most this often (seconds): fewer writes */
#define AUTH_TOKEN_TOUCH_EVERY 60
/* write last_seen of a session at most this often (capped by idle / 4) */
#define AUTH_SESSION_TOUCH_EVERY 60

static const char *const role_names[] = {
    [AUTH_ROLE_NONE] = "none",
    [AUTH_ROLE_USER] = "user",
    [AUTH_ROLE_BASIC_ADMIN] = "basic_admin",
    [AUTH_ROLE_ADMIN] = "admin",
};

static const char *const perm_names[AUTH_PERM__COUNT] = {
    [AUTH_PERM_PUBLIC] = "public",
    [AUTH_PERM_SELF] = "self",
    [AUTH_PERM_CONFIG_READ] = "config_read",
    [AUTH_PERM_CONFIG_WRITE] = "config_write",
    [AUTH_PERM_QUEUE_WRITE] = "queue_write",
    [AUTH_PERM_MESSAGE_CONTENT] = "message_content",
    [AUTH_PERM_ACCOUNTS_MANAGE] = "accounts_manage",
    [AUTH_PERM_AUDIT_READ] = "audit_read",
    [AUTH_PERM_ARCHIVE_EXPORT] = "archive_export",
    [AUTH_PERM_ARCHIVE_SEARCH] = "archive_search",
    [AUTH_PERM_ARCHIVE_ADMIN] = "archive_admin",
    [AUTH_PERM_BACKUP] = "backup",
};

/* role_table - THE place that says which role holds which permission.
 * Protected actions (accounts and roles, message content other than held
 * mail, archive export) are the administrator's alone. */
static const bool role_table[AUTH_ROLE_ADMIN + 1][AUTH_PERM__COUNT] = {
    [AUTH_ROLE_NONE] = {
        [AUTH_PERM_PUBLIC] = true,
    },
    [AUTH_ROLE_USER] = {
        [AUTH_PERM_PUBLIC] = true,
        [AUTH_PERM_SELF] = true,
        [AUTH_PERM_ARCHIVE_SEARCH] = true,     /* their own mail only */
    },
    [AUTH_ROLE_BASIC_ADMIN] = {
        [AUTH_PERM_PUBLIC] = true,
        [AUTH_PERM_SELF] = true,
        [AUTH_PERM_CONFIG_READ] = true,
        [AUTH_PERM_CONFIG_WRITE] = true,
        [AUTH_PERM_QUEUE_WRITE] = true,
        [AUTH_PERM_MESSAGE_CONTENT] = false,   /* protected */
        [AUTH_PERM_ACCOUNTS_MANAGE] = false,   /* protected */
        [AUTH_PERM_AUDIT_READ] = true,
        [AUTH_PERM_ARCHIVE_EXPORT] = false,    /* protected */
        [AUTH_PERM_ARCHIVE_SEARCH] = true,     /* metadata only: content is protected */
        [AUTH_PERM_ARCHIVE_ADMIN] = false,     /* protected */
        [AUTH_PERM_BACKUP] = false,            /* protected */
    },
    [AUTH_ROLE_ADMIN] = {
        [AUTH_PERM_PUBLIC] = true,
        [AUTH_PERM_SELF] = true,
        [AUTH_PERM_CONFIG_READ] = true,
        [AUTH_PERM_CONFIG_WRITE] = true,
        [AUTH_PERM_QUEUE_WRITE] = true,
        [AUTH_PERM_MESSAGE_CONTENT] = true,
        [AUTH_PERM_ACCOUNTS_MANAGE] = true,
        [AUTH_PERM_AUDIT_READ] = true,
        [AUTH_PERM_ARCHIVE_EXPORT] = true,
        [AUTH_PERM_ARCHIVE_SEARCH] = true,
        [AUTH_PERM_ARCHIVE_ADMIN] = true,
        [AUTH_PERM_BACKUP] = true,
    },
};

const char *auth_role_name(enum auth_role r)
{
    if ((unsigned)r > AUTH_ROLE_ADMIN)
        return "unknown";
    return role_names[r];
}

/* auth_role_parse - only roles an account or token can hold ("none" is not one) */
int auth_role_parse(const char *s, enum auth_role *out)
{
    if (s == NULL)
        return -1;
    for (int r = AUTH_ROLE_USER; r <= AUTH_ROLE_ADMIN; r++) {
        if (strcmp(s, role_names[r]) == 0) {
            *out = (enum auth_role)r;
            return 0;
        }
    }
    return -1;
}

const char *auth_perm_name(enum auth_perm p)
{
    if ((unsigned)p >= AUTH_PERM__COUNT)
        return "unknown";
    return perm_names[p];
}

bool auth_role_allows(enum auth_role r, enum auth_perm p)
{
    if ((unsigned)r > AUTH_ROLE_ADMIN || (unsigned)p >= AUTH_PERM__COUNT)
        return false;
    return role_table[r][p];
}

/* role_of - a stored role name; unknown names hold nothing */
static enum auth_role role_of(const char *s)
{
    enum auth_role r;
    return auth_role_parse(s, &r) == 0 ? r : AUTH_ROLE_NONE;
}

int64_t auth_now(const struct auth *a)
{
    int64_t base = a->clock_fixed ? a->clock_fixed : (int64_t)(time_wall_ms() / 1000);
    return base + a->clock_skew;
}

void auth_test_clock_freeze(struct auth *a)
{
    a->clock_fixed = (int64_t)(time_wall_ms() / 1000);
}

void auth_test_clock_skew(struct auth *a, int64_t seconds)
{
    a->clock_skew += seconds;
}

/* --- files --- */

/* fsync_dir - make a create or rename in dir durable */
static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int fsync_parent(const char *path)
{
    char *copy = xstrdup(path);
    int rc = fsync_dir(dirname(copy));
    free(copy);
    return rc;
}

/* write_all - the whole buffer or -1 */
static int write_all(int fd, const void *p, size_t len)
{
    const char *c = p;
    while (len > 0) {
        ssize_t w = write(fd, c, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        c += w;
        len -= (size_t)w;
    }
    return 0;
}

/* secret_file_write - create path (0600, O_EXCL) holding data, durably; when
 * root creates it, it goes to the owner of the directory (moatd after the
 * privilege drop) as the database does */
static int secret_file_write(const char *path, const void *data, size_t len, struct error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        error_set(err, "", "%s: cannot create: %s", path, strerror(errno));
        return -1;
    }
    if (geteuid() == 0) {
        char *copy = xstrdup(path);
        struct stat dir;
        if (stat(dirname(copy), &dir) == 0 && fchown(fd, dir.st_uid, dir.st_gid) < 0)
            log_warn("event=chown_failed path=%s error=\"%s\"", path, strerror(errno));
        free(copy);
    }
    if (write_all(fd, data, len) < 0 || fsync(fd) < 0) {
        error_set(err, "", "%s: cannot write: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    if (close(fd) < 0 || fsync_parent(path) < 0) {
        error_set(err, "", "%s: cannot write: %s", path, strerror(errno));
        unlink(path);
        return -1;
    }
    return 0;
}

/* load_key - STATE/secret.key: create at first start, refuse a loose mode */
static int load_key(const char *state_dir, unsigned char key[crypto_kdf_KEYBYTES],
                    struct error *err)
{
    char path[PATH_MAX];
    struct stat sb;

    if (xsnprintf(path, sizeof path, "%s/%s", state_dir, AUTH_KEY_FILE) < 0) {
        error_set(err, "state_dir", "%s: path too long", state_dir);
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT) {
        randombytes_buf(key, crypto_kdf_KEYBYTES);
        if (secret_file_write(path, key, crypto_kdf_KEYBYTES, err) < 0)
            return -1;
        log_info("event=secret_key_created path=%s", path);
        return 0;
    }
    if (fd < 0) {
        error_set(err, "", "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fd, &sb) < 0) {
        error_set(err, "", "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    /* CONVENTIONS.md: secret files readable by group or others are refused */
    if ((sb.st_mode & 077) != 0) {
        error_set(err, "", "%s: readable or writable by group or others (mode %04o); "
                  "it holds the key that protects sessions and tokens: chmod 0600 %s",
                  path, (unsigned)(sb.st_mode & 07777), path);
        close(fd);
        return -1;
    }
    if (!S_ISREG(sb.st_mode) || sb.st_size != crypto_kdf_KEYBYTES) {
        error_set(err, "", "%s: not a %d-byte key file", path, crypto_kdf_KEYBYTES);
        close(fd);
        return -1;
    }
    ssize_t r = read(fd, key, crypto_kdf_KEYBYTES);
    close(fd);
    if (r != crypto_kdf_KEYBYTES) {
        error_set(err, "", "%s: short read", path);
        return -1;
    }
    return 0;
}

struct auth *auth_create(const struct auth_config *cfg, struct error *err)
{
    unsigned char master[crypto_kdf_KEYBYTES];

    memset(err, 0, sizeof *err);
    if (sodium_init() < 0) {
        error_set(err, "", "libsodium cannot be initialised");
        return NULL;
    }
    if (cfg->state_dir == NULL || cfg->state_dir[0] == '\0') {
        error_set(err, "state_dir", "auth needs the state directory");
        return NULL;
    }
    if (load_key(cfg->state_dir, master, err) < 0)
        return NULL;
    struct auth *a = xcalloc(1, sizeof *a);
    a->state_dir = xstrdup(cfg->state_dir);
    a->session_lifetime = cfg->session_lifetime > 0 ? cfg->session_lifetime : 12 * 3600;
    a->session_idle_timeout = cfg->session_idle_timeout > 0 ? cfg->session_idle_timeout : 3600;
    crypto_kdf_derive_from_key(a->hash_key, sizeof a->hash_key, 1, "moathash", master);
    crypto_kdf_derive_from_key(a->totp_key, sizeof a->totp_key, 2, "moattotp", master);
    crypto_kdf_derive_from_key(a->secret_key, sizeof a->secret_key, 3, "moatsecr", master);
    sodium_memzero(master, sizeof master);

    /* a hash of a password nobody knows: unknown names cost as much as known ones */
    unsigned char junk[16];
    char pw[sizeof junk * 2 + 1];
    randombytes_buf(junk, sizeof junk);
    sodium_bin2hex(pw, sizeof pw, junk, sizeof junk);
    if (crypto_pwhash_str(a->dummy_hash, pw, strlen(pw), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0) {
        error_set(err, "", "argon2id: out of memory");
        auth_free(a);
        return NULL;
    }
    auth_rl_init(&a->rl, cfg->login_max_failures > 0 ? cfg->login_max_failures : 5,
                 cfg->login_failure_window > 0 ? cfg->login_failure_window : 300);
    return a;
}

void auth_free(struct auth *a)
{
    if (a == NULL)
        return;
    auth_rl_free(&a->rl);
    free(a->state_dir);
    sodium_memzero(a, sizeof *a);
    free(a);
}

/* --- secrets --- */

/* random_b64 - AUTH_RANDOM_BYTES random bytes, base64url without padding */
static void random_b64(char out[AUTH_B64_LEN])
{
    unsigned char raw[AUTH_RANDOM_BYTES];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(out, AUTH_B64_LEN, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
}

/* keyed_hash - hex BLAKE2b-256 of label || value under the hash subkey; the
 * label keeps a session id from ever matching a token secret */
static void keyed_hash(const struct auth *a, const char *label, const char *value, char out[65])
{
    crypto_generichash_state h;
    unsigned char d[32];
    crypto_generichash_init(&h, a->hash_key, sizeof a->hash_key, sizeof d);
    crypto_generichash_update(&h, (const unsigned char *)label, strlen(label) + 1);
    crypto_generichash_update(&h, (const unsigned char *)value, strlen(value));
    crypto_generichash_final(&h, d, sizeof d);
    sodium_bin2hex(out, 65, d, sizeof d);
}

/* b64url_ok - exactly the shape random_b64 produces */
static bool b64url_ok(const char *s)
{
    size_t n = strnlen(s, AUTH_B64_LEN);
    if (n != AUTH_B64_LEN - 1)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

/* --- accounts and passwords --- */

/* name_check - account names: 1..64 of letters, digits and . _ - @, starting
 * with a letter or digit (they appear in logs, URIs and the audit log) */
static int name_check(const char *name, struct error *err)
{
    size_t len = name ? strnlen(name, AUTH_NAME_MAX + 1) : 0;
    if (len == 0 || len > AUTH_NAME_MAX) {
        error_set(err, "name", "an account name has 1 to %d characters", AUTH_NAME_MAX);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && !(i > 0 && (c == '.' || c == '_' || c == '-' || c == '@'))) {
            error_set(err, "name", "an account name has letters, digits and . _ - @ "
                      "only, and starts with a letter or digit");
            return -1;
        }
    }
    return 0;
}

/* password_policy - 12 characters or more, 1024 octets or fewer, UTF-8, not the name */
static int password_policy(const char *password, const char *name, struct error *err)
{
    size_t len = password ? strnlen(password, AUTH_PASSWORD_MAX_OCTETS + 1) : 0;
    if (len > AUTH_PASSWORD_MAX_OCTETS) {
        error_set(err, "password", "a password has at most %d octets", AUTH_PASSWORD_MAX_OCTETS);
        return -1;
    }
    if (!str_valid_utf8(password ? password : "", len)) {
        error_set(err, "password", "a password must be valid UTF-8");
        return -1;
    }
    size_t chars = 0;
    for (size_t i = 0; i < len; i++)
        if (((unsigned char)password[i] & 0xc0) != 0x80)
            chars++;
    if (chars < AUTH_PASSWORD_MIN_CHARS) {
        error_set(err, "password", "a password has at least %d characters",
                  AUTH_PASSWORD_MIN_CHARS);
        return -1;
    }
    if (name != NULL && str_ieq(password, name)) {
        error_set(err, "password", "the password must not be the account name");
        return -1;
    }
    return 0;
}

/* hash_password - argon2id, encoded; -1 only when memory is short */
static int hash_password(const char *password, char out[crypto_pwhash_STRBYTES],
                         struct error *err)
{
    if (crypto_pwhash_str(out, password, strlen(password), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0) {
        error_set(err, "", "argon2id: out of memory");
        return -1;
    }
    return 0;
}

int auth_password_hash(const char *password, char out[AUTH_PASSWORD_HASH_MAX], struct error *err)
{
    _Static_assert(AUTH_PASSWORD_HASH_MAX == crypto_pwhash_STRBYTES, "argon2id string size");
    return hash_password(password, out, err);
}

/* generate_password - 144 random bits as 24 base64url characters */
static char *generate_password(void)
{
    unsigned char raw[18];
    char out[sodium_base64_ENCODED_LEN(18, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(out, sizeof out, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    char *p = xstrdup(out);
    sodium_memzero(out, sizeof out);
    return p;
}

int auth_account_create(struct auth *a, struct store *st, const char *name, enum auth_role role,
                        const char *password, bool must_change, char **generated,
                        int64_t *id_out, struct error *err)
{
    char hash[crypto_pwhash_STRBYTES];
    char *gen = NULL;

    memset(err, 0, sizeof *err);
    if (generated != NULL)
        *generated = NULL;
    if (name_check(name, err) < 0)
        return -1;
    if (role < AUTH_ROLE_USER || role > AUTH_ROLE_ADMIN) {
        error_set(err, "role", "role must be admin, basic_admin or user");
        return -1;
    }
    if (password == NULL) {
        if (generated == NULL) {
            error_set(err, "password", "a password is required");
            return -1;
        }
        gen = generate_password();
        password = gen;
        must_change = true;
    } else if (password_policy(password, name, err) < 0) {
        return -1;
    }
    int rc = hash_password(password, hash, err);
    if (rc == 0)
        rc = store_account_create(st, name, role_names[role], hash, must_change, id_out, err);
    sodium_memzero(hash, sizeof hash);
    if (rc < 0) {
        if (gen != NULL) {
            sodium_memzero(gen, strlen(gen));
            free(gen);
        }
        return -1;
    }
    if (gen != NULL)
        *generated = gen;
    log_info("event=account_created name=%s role=%s must_change=%d", name, role_names[role],
             must_change ? 1 : 0);
    return 0;
}

int auth_password_set(struct auth *a, struct store *st, int64_t account_id, const char *password,
                      bool must_change, struct error *err)
{
    struct store_account acc;
    char hash[crypto_pwhash_STRBYTES];

    memset(err, 0, sizeof *err);
    if (store_account_get(st, account_id, &acc, err) < 0)
        return -1;
    int rc = password_policy(password, acc.name, err);
    if (rc == 0)
        rc = hash_password(password, hash, err);
    if (rc == 0)
        rc = store_account_set_password(st, account_id, hash, must_change, err) < 0 ? -1 : 0;
    sodium_memzero(hash, sizeof hash);
    if (rc == 0)
        log_info("event=password_changed account=%s must_change=%d", acc.name,
                 must_change ? 1 : 0);
    store_account_clear(&acc);
    return rc;
}

int auth_password_verify(struct auth *a, struct store *st, int64_t account_id,
                         const char *password, struct error *err)
{
    struct store_account acc;

    memset(err, 0, sizeof *err);
    if (store_account_get(st, account_id, &acc, err) < 0)
        return -1;
    size_t len = password ? strnlen(password, AUTH_PASSWORD_MAX_OCTETS + 1) : 0;
    int rc = -1;
    if (password != NULL && len <= AUTH_PASSWORD_MAX_OCTETS &&
        crypto_pwhash_str_verify(acc.password_hash, password, len) == 0)
        rc = 0;
    else
        error_set(err, "password", "the password is not right");
    store_account_clear(&acc);
    return rc;
}

/* --- principals --- */

static void principal_from_account(struct auth_principal *p, const struct store_account *acc)
{
    memset(p, 0, sizeof *p);
    p->account_id = acc->id;
    str_copy(p->name, sizeof p->name, acc->name);
    p->role = role_of(acc->role);
    p->must_change_password = acc->must_change;
}

/* --- sign-in --- */

static void rl_keys(const char *name, const char *ip, char *kn, size_t nsize, char *ki,
                    size_t isize)
{
    char lower[AUTH_NAME_MAX + 8];
    /* names are case-insensitive: "Admin" and "admin" share one counter */
    str_copy(lower, sizeof lower, "");
    if (name != NULL) {
        size_t n = strnlen(name, sizeof lower - 1);
        memcpy(lower, name, n);
        lower[n] = '\0';
        str_lower(lower);
    }
    xsnprintf(kn, nsize, "n:%s", lower);
    if (xsnprintf(ki, isize, "i:%s", ip ? ip : "") < 0)
        ki[0] = '\0';
}

/* new_session - store a session for acc and fill the principal */
static int new_session(struct auth *a, struct store *st, const struct store_account *acc,
                       const char *client_ip, char **token_out, struct auth_principal *out,
                       struct error *err)
{
    char token[AUTH_B64_LEN];
    unsigned char csrf_raw[32];
    struct store_session s;
    int64_t now = auth_now(a);

    memset(&s, 0, sizeof s);
    random_b64(token);
    keyed_hash(a, "session", token, s.id_hash);
    randombytes_buf(csrf_raw, sizeof csrf_raw);
    sodium_bin2hex(s.csrf, sizeof s.csrf, csrf_raw, sizeof csrf_raw);
    s.account_id = acc->id;
    s.created = s.last_seen = now;
    s.expires = now + a->session_lifetime;
    if (client_ip == NULL || str_copy(s.client_ip, sizeof s.client_ip, client_ip) < 0)
        s.client_ip[0] = '\0';
    if (store_session_create(st, &s, err) < 0) {
        sodium_memzero(token, sizeof token);
        return -1;
    }
    /* sign-ins are rare: a good moment to drop dead sessions (bounds the table) */
    struct error e2;
    store_session_purge(st, now, now - a->session_idle_timeout, &e2);
    principal_from_account(out, acc);
    memcpy(out->session_id_hash, s.id_hash, sizeof out->session_id_hash);
    memcpy(out->csrf, s.csrf, sizeof out->csrf);
    *token_out = xstrdup(token);
    sodium_memzero(token, sizeof token);
    return 0;
}

enum auth_login_result auth_login(struct auth *a, struct store *st, const char *name,
                                  const char *password, const char *totp_code,
                                  const char *client_ip, char **session_token,
                                  struct auth_principal *out, int64_t *retry_after,
                                  struct error *err)
{
    char kn[160], ki[160], shown[96];
    struct store_account acc;
    int64_t now = auth_now(a);

    memset(err, 0, sizeof *err);
    *session_token = NULL;
    *retry_after = 0;
    if (name == NULL)
        name = "";
    if (password == NULL)
        password = "";
    rl_keys(name, client_ip, kn, sizeof kn, ki, sizeof ki);
    log_quote(shown, sizeof shown, name);

    /* refused before any work: a limited caller learns nothing, costs nothing */
    int64_t ra = auth_rl_check(&a->rl, kn, now), ri = auth_rl_check(&a->rl, ki, now);
    if (ra > 0 || ri > 0) {
        *retry_after = ra > ri ? ra : ri;
        log_info("event=login_rate_limited name=%s client=%s retry_after=%lld", shown,
                 client_ip ? client_ip : "", (long long)*retry_after);
        error_set(err, "", "too many failed sign-ins; try again in %lld seconds",
                  (long long)*retry_after);
        return AUTH_LOGIN_RATE_LIMITED;
    }

    size_t plen = strnlen(password, AUTH_PASSWORD_MAX_OCTETS + 1);
    int found = store_account_get_by_name(st, name, &acc, err);
    if (found == STORE_ERR)
        return AUTH_LOGIN_ERROR;
    bool ok;
    if (found == STORE_OK && plen <= AUTH_PASSWORD_MAX_OCTETS) {
        ok = crypto_pwhash_str_verify(acc.password_hash, password, plen) == 0;
    } else {
        /* same work as a wrong password: no account enumeration by timing */
        int dummy = crypto_pwhash_str_verify(a->dummy_hash, password,
                                             plen > AUTH_PASSWORD_MAX_OCTETS ?
                                             AUTH_PASSWORD_MAX_OCTETS : plen);
        (void)dummy;
        ok = false;
    }
    if (!ok) {
        auth_rl_fail(&a->rl, kn, now);
        auth_rl_fail(&a->rl, ki, now);
        log_info("event=login_failed name=%s client=%s", shown, client_ip ? client_ip : "");
        error_set(err, "", "wrong name or password");
        if (found == STORE_OK)
            store_account_clear(&acc);
        return AUTH_LOGIN_BAD;
    }
    if (acc.disabled) {
        log_info("event=login_disabled name=%s client=%s", shown, client_ip ? client_ip : "");
        error_set(err, "", "this account is disabled");
        store_account_clear(&acc);
        return AUTH_LOGIN_DISABLED;
    }
    if (acc.totp_active) {
        if (totp_code == NULL || totp_code[0] == '\0') {
            error_set(err, "totp", "this account needs a TOTP code");
            store_account_clear(&acc);
            return AUTH_LOGIN_TOTP_REQUIRED;
        }
        if (auth_totp_check_account(a, st, &acc, totp_code, err) < 0) {
            /* a wrong code counts as a failure: the limiter bounds guessing */
            auth_rl_fail(&a->rl, kn, now);
            auth_rl_fail(&a->rl, ki, now);
            log_info("event=login_failed name=%s client=%s reason=totp", shown,
                     client_ip ? client_ip : "");
            store_account_clear(&acc);
            return AUTH_LOGIN_BAD;
        }
    }
    if (crypto_pwhash_str_needs_rehash(acc.password_hash, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                       crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0) {
        char hash[crypto_pwhash_STRBYTES];
        struct error e2;
        if (hash_password(password, hash, &e2) == 0 &&
            store_account_set_password(st, acc.id, hash, acc.must_change, &e2) == STORE_OK)
            log_info("event=password_rehashed account=%s", acc.name);
        sodium_memzero(hash, sizeof hash);
    }
    if (new_session(a, st, &acc, client_ip, session_token, out, err) < 0) {
        store_account_clear(&acc);
        return AUTH_LOGIN_ERROR;
    }
    auth_rl_clear(&a->rl, kn);
    log_info("event=login account=%s client=%s must_change=%d", acc.name,
             client_ip ? client_ip : "", acc.must_change ? 1 : 0);
    store_account_clear(&acc);
    return AUTH_LOGIN_OK;
}

/* --- sessions --- */

int auth_session_check(struct auth *a, struct store *st, const char *session_token,
                       struct auth_principal *out)
{
    struct store_session s;
    struct store_account acc;
    struct error err;
    int64_t now = auth_now(a);

    memset(out, 0, sizeof *out);
    if (session_token == NULL || !b64url_ok(session_token))
        return -1;
    char hash[65];
    keyed_hash(a, "session", session_token, hash);
    if (store_session_get(st, hash, &s, &err) < 0)
        return -1;
    /* the hash is the lookup key; compare it once more in constant time */
    if (sodium_memcmp(s.id_hash, hash, 64) != 0 || s.revoked || now >= s.expires ||
        now - s.last_seen > a->session_idle_timeout)
        return -1;
    if (store_account_get(st, s.account_id, &acc, &err) < 0)
        return -1;
    if (acc.disabled) {
        store_account_clear(&acc);
        return -1;
    }
    principal_from_account(out, &acc);
    store_account_clear(&acc);
    memcpy(out->session_id_hash, s.id_hash, sizeof out->session_id_hash);
    memcpy(out->csrf, s.csrf, sizeof out->csrf);
    int64_t every = a->session_idle_timeout / 4;
    if (every > AUTH_SESSION_TOUCH_EVERY)
        every = AUTH_SESSION_TOUCH_EVERY;
    if (now - s.last_seen >= every)
        store_session_touch(st, s.id_hash, now, &err);
    return 0;
}

int auth_session_revoke(struct auth *a, struct store *st, const char *session_id_hash,
                        int64_t account_id, struct error *err)
{
    memset(err, 0, sizeof *err);
    if (session_id_hash == NULL || strlen(session_id_hash) != 64) {
        error_set(err, "id", "no such session");
        return -1;
    }
    return store_session_revoke(st, session_id_hash, account_id, err) < 0 ? -1 : 0;
}

json_t *auth_sessions_list(struct auth *a, struct store *st, int64_t account_id, struct error *err)
{
    struct store_session *s;
    size_t n;
    int64_t now = auth_now(a);

    memset(err, 0, sizeof *err);
    if (store_session_list(st, account_id, now, now - a->session_idle_timeout, &s, &n, err) < 0)
        return NULL;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        /* the end of a session: its idle limit or its lifetime, whichever is first */
        int64_t idle_end = s[i].last_seen + a->session_idle_timeout;
        json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:s}", "id", s[i].id_hash,
                              "created", (json_int_t)s[i].created,
                              "last_seen", (json_int_t)s[i].last_seen,
                              "expires", (json_int_t)(idle_end < s[i].expires ? idle_end
                                                                             : s[i].expires),
                              "client_ip", s[i].client_ip);
        if (o != NULL)
            json_array_append_new(arr, o);
    }
    free(s);
    return arr;
}

/* --- API tokens --- */

int auth_token_create(struct auth *a, struct store *st, int64_t account_id, const char *name,
                      enum auth_role scope, char **token_out, int64_t *id_out, struct error *err)
{
    struct store_account acc;
    char secret[AUTH_B64_LEN], hash[65];

    memset(err, 0, sizeof *err);
    *token_out = NULL;
    size_t nlen = name ? strnlen(name, 65) : 0;
    if (nlen == 0 || nlen > 64 || !str_valid_utf8(name, nlen)) {
        error_set(err, "name", "a token name has 1 to 64 characters");
        return -1;
    }
    for (size_t i = 0; i < nlen; i++) {
        if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f) {
            error_set(err, "name", "a token name has no control characters");
            return -1;
        }
    }
    if (store_account_get(st, account_id, &acc, err) < 0) {
        if (strcmp(err->field, "id") == 0)
            str_copy(err->field, sizeof err->field, "account");
        return -1;
    }
    enum auth_role owner = role_of(acc.role);
    bool disabled = acc.disabled;
    store_account_clear(&acc);
    if (disabled) {
        error_set(err, "account", "the account is disabled");
        return -1;
    }
    if (scope < AUTH_ROLE_USER || scope > AUTH_ROLE_ADMIN) {
        error_set(err, "role", "role must be admin, basic_admin or user");
        return -1;
    }
    if (scope > owner) {
        error_set(err, "role", "a token cannot hold more than its owner's role (%s)",
                  auth_role_name(owner));
        return -1;
    }
    random_b64(secret);
    keyed_hash(a, "token", secret, hash);
    int64_t id;
    if (store_token_create(st, account_id, name, role_names[scope], hash, auth_now(a), &id,
                           err) < 0) {
        sodium_memzero(secret, sizeof secret);
        return -1;
    }
    *token_out = xasprintf("moat_%lld_%s", (long long)id, secret);
    sodium_memzero(secret, sizeof secret);
    if (id_out != NULL)
        *id_out = id;
    log_info("event=token_created id=%lld account_id=%lld role=%s", (long long)id,
             (long long)account_id, role_names[scope]);
    return 0;
}

int auth_token_check(struct auth *a, struct store *st, const char *token, struct auth_principal *out)
{
    struct store_token t;
    struct store_account acc;
    struct error err;
    char hash[65];

    memset(out, 0, sizeof *out);
    if (token == NULL || strncmp(token, "moat_", 5) != 0)
        return -1;
    const char *p = token + 5;
    int64_t id = 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 18) {
        id = id * 10 + (*p++ - '0');
        digits++;
    }
    if (digits == 0 || *p != '_' || !b64url_ok(p + 1))
        return -1;
    keyed_hash(a, "token", p + 1, hash);
    if (store_token_get(st, id, &t, &err) < 0)
        return -1;
    bool ok = sodium_memcmp(t.secret_hash, hash, 64) == 0 && !t.revoked;
    enum auth_role scope = role_of(t.role);
    int64_t owner_id = t.account_id, last_used = t.last_used;
    store_token_clear(&t);
    if (!ok || store_account_get(st, owner_id, &acc, &err) < 0)
        return -1;
    if (acc.disabled) {
        store_account_clear(&acc);
        return -1;
    }
    principal_from_account(out, &acc);
    store_account_clear(&acc);
    /* never above the owner's role now: demoting an account demotes its tokens */
    if (scope < out->role)
        out->role = scope;
    out->via_token = true;
    out->token_id = id;
    /* a token is made deliberately for automation; the owner's pending
     * password change is for interactive sign-in */
    out->must_change_password = false;
    int64_t now = auth_now(a);
    if (now - last_used >= AUTH_TOKEN_TOUCH_EVERY)
        store_token_touch(st, id, now, &err);
    return 0;
}

int auth_token_revoke(struct auth *a, struct store *st, int64_t token_id, struct error *err)
{
    memset(err, 0, sizeof *err);
    if (store_token_revoke(st, token_id, err) < 0)
        return -1;
    log_info("event=token_revoked id=%lld", (long long)token_id);
    return 0;
}

/* --- bootstrap --- */

static int no_accounts_yet(struct store *st, struct error *err)
{
    int64_t n = 0;
    if (store_account_count(st, NULL, &n, err) < 0)
        return -1;
    return n == 0 ? 1 : 0;
}

int auth_init_admin(struct auth *a, struct store *st, const char *name, const char *token_file,
                    struct error *err)
{
    char *password = NULL, *token = NULL;
    int64_t id, token_id;

    memset(err, 0, sizeof *err);
    if (name_check(name, err) < 0)
        return -1;
    if (token_file == NULL || token_file[0] == '\0') {
        error_set(err, "token-file", "--init-admin needs --token-file FILE");
        return -1;
    }
    int empty = no_accounts_yet(st, err);
    if (empty < 0)
        return -1;
    if (!empty) {
        error_set(err, "init-admin", "accounts already exist in this state directory; "
                  "--init-admin only sets up a fresh one");
        return -1;
    }
    /* claim the file first: nothing is created when it cannot be written */
    int fd = open(token_file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        error_set(err, "token-file", "%s: cannot create: %s", token_file, strerror(errno));
        return -1;
    }
    if (auth_account_create(a, st, name, AUTH_ROLE_ADMIN, NULL, true, &password, &id, err) < 0)
        goto fail;
    sodium_memzero(password, strlen(password));
    free(password);
    password = NULL;
    if (auth_token_create(a, st, id, "init-admin", AUTH_ROLE_ADMIN, &token, &token_id, err) < 0) {
        struct error e2;
        store_account_delete(st, id, &e2);
        goto fail;
    }
    size_t len = strlen(token);
    if (write_all(fd, token, len) < 0 || write_all(fd, "\n", 1) < 0 || fsync(fd) < 0 ||
        close(fd) < 0) {
        fd = -1;
        error_set(err, "token-file", "%s: cannot write: %s", token_file, strerror(errno));
        struct error e2;
        store_account_delete(st, id, &e2);
        goto fail;
    }
    fd = -1;
    fsync_parent(token_file);
    sodium_memzero(token, len);
    free(token);

    struct auth_principal who = { .account_id = 0, .role = AUTH_ROLE_ADMIN };
    str_copy(who.name, sizeof who.name, "moatd --init-admin");
    json_t *after = json_pack("{s:I, s:s, s:s, s:b, s:I}", "id", (json_int_t)id, "name", name,
                              "role", "admin", "must_change_password", 1,
                              "token_id", (json_int_t)token_id);
    auth_audit(st, &who, "", "account.create", name, NULL, after);
    json_decref(after);
    log_info("event=init_admin account=%s token_id=%lld token_file=%s", name,
             (long long)token_id, token_file);
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    unlink(token_file);
    if (token != NULL) {
        sodium_memzero(token, strlen(token));
        free(token);
    }
    return -1;
}

int auth_first_start(struct auth *a, struct store *st, const char *state_dir, struct error *err)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    char *password = NULL;
    int64_t id;

    memset(err, 0, sizeof *err);
    int empty = no_accounts_yet(st, err);
    if (empty <= 0)
        return empty;
    if (xsnprintf(path, sizeof path, "%s/%s", state_dir, AUTH_INITIAL_PASSWORD_FILE) < 0 ||
        xsnprintf(tmp, sizeof tmp, "%s.tmp", path) < 0) {
        error_set(err, "state_dir", "%s: path too long", state_dir);
        return -1;
    }
    if (auth_account_create(a, st, "admin", AUTH_ROLE_ADMIN, NULL, true, &password, &id, err) < 0)
        return -1;
    /* temporary file + rename: a stale file from an older state is replaced whole */
    unlink(tmp);
    char *text = xasprintf("%s\n", password);
    int rc = secret_file_write(tmp, text, strlen(text), err);
    sodium_memzero(text, strlen(text));
    free(text);
    if (rc == 0 && rename(tmp, path) < 0) {
        error_set(err, "", "%s: cannot rename: %s", path, strerror(errno));
        unlink(tmp);
        rc = -1;
    }
    if (rc == 0)
        fsync_parent(path);
    if (rc < 0) {
        /* no way to hand the password over: leave no account nobody can use */
        struct error e2;
        store_account_delete(st, id, &e2);
        sodium_memzero(password, strlen(password));
        free(password);
        return -1;
    }
    /* the one place a secret is printed, by design: once, to the operator's
     * terminal (stderr), never through the logger.  Under a service manager
     * stderr is the journal, which others may read (issue 11): then only
     * the file holds it. */
    if (isatty(STDERR_FILENO))
        fprintf(stderr,
                "moatd: created the initial administrator \"admin\".\n"
                "moatd: one-time password: %s\n"
                "moatd: (also in %s, readable only by moatd's user; it must be changed at the "
                "first sign-in)\n", password, path);
    else
        fprintf(stderr, "moatd: created the initial administrator \"admin\"; its one-time "
                "password is in %s (readable only by moatd's user; it must be changed at the "
                "first sign-in)\n", path);
    fflush(stderr);
    sodium_memzero(password, strlen(password));
    free(password);

    struct auth_principal who = { .account_id = 0, .role = AUTH_ROLE_ADMIN };
    str_copy(who.name, sizeof who.name, "moatd first start");
    json_t *after = json_pack("{s:I, s:s, s:s, s:b}", "id", (json_int_t)id, "name", "admin",
                              "role", "admin", "must_change_password", 1);
    auth_audit(st, &who, "", "account.create", "admin", NULL, after);
    json_decref(after);
    log_info("event=initial_admin_created account=admin password_file=%s", path);
    return 0;
}

/* --- the metrics token (issue 11): "moat_metrics_" + secret, shown once;
 * the store keeps its keyed hash under its own label, so no API token or
 * session id can ever match it --- */

#define METRICS_TOKEN_PREFIX "moat_metrics_"

int auth_metrics_token_create(struct auth *a, struct store *st, const char *created_by,
                              char **token_out, struct error *err)
{
    char secret[AUTH_B64_LEN], hash[65];
    *token_out = NULL;
    random_b64(secret);
    keyed_hash(a, "metrics", secret, hash);
    if (store_metrics_token_set(st, hash, auth_now(a), created_by, err) < 0) {
        sodium_memzero(secret, sizeof secret);
        return -1;
    }
    *token_out = xasprintf(METRICS_TOKEN_PREFIX "%s", secret);
    sodium_memzero(secret, sizeof secret);
    log_info("event=metrics_token_created");
    return 0;
}

bool auth_metrics_token_check(struct auth *a, struct store *st, const char *token)
{
    size_t plen = strlen(METRICS_TOKEN_PREFIX);
    char hash[65], stored[65];
    struct error err;
    if (token == NULL || strncmp(token, METRICS_TOKEN_PREFIX, plen) != 0 ||
        !b64url_ok(token + plen))
        return false;
    keyed_hash(a, "metrics", token + plen, hash);
    if (store_metrics_token_hash(st, stored, &err) != STORE_OK)
        return false;
    return sodium_memcmp(hash, stored, 64) == 0;
}
