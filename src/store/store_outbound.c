/*
 * store_outbound.c - the outbound role's configuration in SQLite (schema
 * version 7, store.c): authorised outbound hosts, SMTP AUTH accounts, and
 * the sender domains whose inbound mail must use TLS.  Its interface is the
 * section "the outbound role" of store.h; callers are the API
 * (api_outbound.c), Connect's outbound task and the snapshot loader.
 *
 * Statements live in this file's own table (outbound_sql[]), prepared at
 * store_open and kept in st->outbound_stmt.  Input is checked here, so
 * every caller gets the same errors with the same field names.
 *
 * Ownership: strings in returned arrays belong to the caller; free them with
 * the matching *_free.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include "../core/cidr.h"
#include "store_priv.h"

#define OUTBOUND_MIN_PREFIX4 8     /* the widest authorised IPv4 range: a /8 */
#define OUTBOUND_MIN_PREFIX6 16    /* the widest authorised IPv6 range: a /16 */

enum outbound_stmt {
    O_HOST_ADD,
    O_HOST_DEL_CIDR,
    O_HOST_DEL_ID,
    O_HOST_LIST,
    O_ACCT_ADD,
    O_ACCT_SET_HASH,
    O_ACCT_DEL,
    O_ACCT_LIST,
    O_ACCT_HASHES,
    O_TLS_ADD,
    O_TLS_DEL,
    O_TLS_LIST,
    O__COUNT
};

static const char *const outbound_sql[O__COUNT] = {
    [O_HOST_ADD] = "INSERT INTO outbound_hosts (cidr, comment, created) VALUES (?1, ?2, ?3)",
    [O_HOST_DEL_CIDR] = "DELETE FROM outbound_hosts WHERE cidr = ?1",
    [O_HOST_DEL_ID] = "DELETE FROM outbound_hosts WHERE id = ?1",
    [O_HOST_LIST] = "SELECT id, cidr, comment, created FROM outbound_hosts ORDER BY id",
    [O_ACCT_ADD] =
        "INSERT INTO smtp_accounts (name, password_hash, comment, created) VALUES (?1, ?2, ?3, ?4)",
    [O_ACCT_SET_HASH] = "UPDATE smtp_accounts SET password_hash = ?2 WHERE name = ?1",
    [O_ACCT_DEL] = "DELETE FROM smtp_accounts WHERE name = ?1",
    [O_ACCT_LIST] =
        "SELECT id, name, comment, created, last_used, disabled FROM smtp_accounts ORDER BY name",
    [O_ACCT_HASHES] =
        "SELECT name, password_hash FROM smtp_accounts WHERE disabled = 0 ORDER BY name",
    [O_TLS_ADD] = "INSERT INTO tls_inbound_required (domain, comment, created) VALUES (?1, ?2, ?3)",
    [O_TLS_DEL] = "DELETE FROM tls_inbound_required WHERE domain = ?1",
    [O_TLS_LIST] = "SELECT domain FROM tls_inbound_required ORDER BY domain",
};

int store_outbound_prepare(struct store *st, const char *path, struct error *err)
{
    return store_stmts_prepare(st, path, "outbound", outbound_sql, O__COUNT, &st->outbound_stmt, err);
}

void store_outbound_finalize(struct store *st)
{
    store_stmts_finalize(&st->outbound_stmt, O__COUNT);
}

static sqlite3_stmt *stmt(struct store *st, enum outbound_stmt id)
{
    return store_stmt_reset(st->outbound_stmt[id]);
}

/* comment_check - bounded, one line */
static int comment_check(const char *comment, struct error *err)
{
    if (comment == NULL)
        return 0;
    size_t len = strnlen(comment, STORE_COMMENT_MAX + 1);
    if (len > STORE_COMMENT_MAX) {
        error_set(err, "comment", "comment is longer than %d octets", STORE_COMMENT_MAX);
        return -1;
    }
    for (const char *p = comment; *p; p++)
        if ((unsigned char)*p < 32 || *p == 127) {
            error_set(err, "comment", "comment must be one line without control characters");
            return -1;
        }
    if (!str_valid_utf8(comment, len)) {
        error_set(err, "comment", "comment is not valid UTF-8");
        return -1;
    }
    return 0;
}

/* --- outbound hosts --- */

/* all_digits - a decimal row id rather than a range */
static bool all_digits(const char *s)
{
    if (*s == '\0' || strlen(s) > 18)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

int store_range_remove(struct store *st, sqlite3_stmt *by_id, sqlite3_stmt *by_cidr,
                       const char *what, const char *cidr_or_id, struct error *err)
{
    if (cidr_or_id != NULL && all_digits(cidr_or_id)) {
        sqlite3_bind_int64(by_id, 1, strtoll(cidr_or_id, NULL, 10));
        return store_step_change(st, by_id, what, "id", cidr_or_id, err);
    }
    struct cidr c;
    char canon[CIDR_TEXT_MAX];
    if (cidr_parse(cidr_or_id, &c, err) < 0 || cidr_format(&c, canon, sizeof canon) < 0)
        return STORE_ERR;
    sqlite3_bind_text(by_cidr, 1, canon, -1, SQLITE_TRANSIENT);
    return store_step_change(st, by_cidr, what, "cidr", canon, err);
}

/* store_cidr_authorised - parse cidr into its canonical text, refusing
 * ranges as wide as a large part of the internet (store_priv.h) */
int store_cidr_authorised(const char *cidr, const char *what, char canon[CIDR_TEXT_MAX],
                          struct error *err)
{
    struct cidr c;
    if (cidr_parse(cidr, &c, err) < 0)
        return -1;
    /* a range as wide as a large part of the internet turns Moat into an
     * open relay: the widest published provider ranges (Exchange Online's
     * /14 and /15, Google's /16 and /19) are far narrower than this */
    int min = c.family == AF_INET ? OUTBOUND_MIN_PREFIX4 : OUTBOUND_MIN_PREFIX6;
    if (c.prefix < min) {
        error_set(err, "cidr", "%s is too wide: anyone in it could %s; authorise ranges of "
                  "/%d (IPv%c) or narrower", cidr, what, min, c.family == AF_INET ? '4' : '6');
        return -1;
    }
    if (cidr_format(&c, canon, CIDR_TEXT_MAX) < 0) {
        error_set(err, "cidr", "cannot format the range");
        return -1;
    }
    return 0;
}

/* store_comment_check - bounded, one line (store_priv.h) */
int store_comment_check(const char *comment, struct error *err)
{
    return comment_check(comment, err);
}

int store_outbound_host_add(struct store *st, const char *cidr, const char *comment,
                            int64_t *id_out, struct error *err)
{
    char canon[CIDR_TEXT_MAX];
    if (store_cidr_authorised(cidr, "relay through Moat to any domain (an open relay)", canon,
                              err) < 0)
        return STORE_ERR;
    if (comment_check(comment, err) < 0)
        return STORE_ERR;
    sqlite3_stmt *s = stmt(st, O_HOST_ADD);
    sqlite3_bind_text(s, 1, canon, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, comment ? comment : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 3, (int64_t)time(NULL));
    int rc = store_step_change(st, s, "outbound host", "cidr", canon, err);
    if (rc == STORE_OK && id_out != NULL)
        *id_out = sqlite3_last_insert_rowid(st->db);
    return rc;
}

int store_outbound_host_remove(struct store *st, const char *cidr_or_id, struct error *err)
{
    return store_range_remove(st, stmt(st, O_HOST_DEL_ID), stmt(st, O_HOST_DEL_CIDR), "outbound host", cidr_or_id, err);
}

int store_outbound_host_list(struct store *st, struct store_outbound_host **out, size_t *n,
                             struct error *err)
{
    sqlite3_stmt *s = stmt(st, O_HOST_LIST);
    size_t cap = 0;
    int rc;
    *out = NULL;
    *n = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = xreallocarray(*out, cap, sizeof **out);
        }
        struct store_outbound_host *h = &(*out)[(*n)++];
        h->id = sqlite3_column_int64(s, 0);
        h->cidr = store_col_strdup(s, 1);
        h->comment = store_col_strdup(s, 2);
        h->created = sqlite3_column_int64(s, 3);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "outbound hosts");
        store_outbound_hosts_free(*out, *n);
        *out = NULL;
        *n = 0;
        return STORE_ERR;
    }
    return STORE_OK;
}

void store_outbound_hosts_free(struct store_outbound_host *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(h[i].cidr);
        free(h[i].comment);
    }
    free(h);
}

/* --- SMTP AUTH accounts --- */

const char *store_smtp_account_name_check(const char *name)
{
    if (name == NULL || name[0] == '\0')
        return "an account name is required";
    size_t len = strnlen(name, STORE_SMTP_ACCOUNT_NAME_MAX + 1);
    if (len > STORE_SMTP_ACCOUNT_NAME_MAX)
        return "account name is longer than 128 characters";
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p <= 32 || (unsigned char)*p >= 127)
            return "account name must be printable ASCII without spaces";
    return NULL;
}

/* account_name - checked and lower-cased into dst */
static int account_name(const char *name, char dst[STORE_SMTP_ACCOUNT_NAME_MAX + 1],
                        struct error *err)
{
    const char *why = store_smtp_account_name_check(name);
    if (why != NULL) {
        error_set(err, "name", "%s", why);
        return -1;
    }
    (void)str_copy(dst, STORE_SMTP_ACCOUNT_NAME_MAX + 1, name);
    str_lower(dst);
    return 0;
}

/* hash_check - an argon2id string from auth_password_hash, nothing else */
static int hash_check(const char *h, struct error *err)
{
    if (h == NULL || strncmp(h, "$argon2id$", 10) != 0 || strlen(h) >= 128) {
        error_set(err, "password", "not an argon2id password hash");
        return -1;
    }
    return 0;
}

int store_smtp_account_add(struct store *st, const char *name, const char *pw_hash,
                           const char *comment, struct error *err)
{
    char n[STORE_SMTP_ACCOUNT_NAME_MAX + 1];
    if (account_name(name, n, err) < 0 || hash_check(pw_hash, err) < 0 ||
        comment_check(comment, err) < 0)
        return STORE_ERR;
    sqlite3_stmt *s = stmt(st, O_ACCT_ADD);
    sqlite3_bind_text(s, 1, n, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, pw_hash, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, comment ? comment : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 4, (int64_t)time(NULL));
    return store_step_change(st, s, "SMTP account", "name", n, err);
}

int store_smtp_account_set_hash(struct store *st, const char *name, const char *pw_hash,
                                struct error *err)
{
    char n[STORE_SMTP_ACCOUNT_NAME_MAX + 1];
    if (account_name(name, n, err) < 0 || hash_check(pw_hash, err) < 0)
        return STORE_ERR;
    sqlite3_stmt *s = stmt(st, O_ACCT_SET_HASH);
    sqlite3_bind_text(s, 1, n, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, pw_hash, -1, SQLITE_TRANSIENT);
    return store_step_change(st, s, "SMTP account", "name", n, err);
}

int store_smtp_account_remove(struct store *st, const char *name, struct error *err)
{
    char n[STORE_SMTP_ACCOUNT_NAME_MAX + 1];
    if (account_name(name, n, err) < 0)
        return STORE_ERR;
    sqlite3_stmt *s = stmt(st, O_ACCT_DEL);
    sqlite3_bind_text(s, 1, n, -1, SQLITE_TRANSIENT);
    return store_step_change(st, s, "SMTP account", "name", n, err);
}

int store_smtp_account_list(struct store *st, struct store_smtp_account **out, size_t *n,
                            struct error *err)
{
    sqlite3_stmt *s = stmt(st, O_ACCT_LIST);
    size_t cap = 0;
    int rc;
    *out = NULL;
    *n = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = xreallocarray(*out, cap, sizeof **out);
        }
        struct store_smtp_account *a = &(*out)[(*n)++];
        a->id = sqlite3_column_int64(s, 0);
        a->name = store_col_strdup(s, 1);
        a->comment = store_col_strdup(s, 2);
        a->created = sqlite3_column_int64(s, 3);
        a->last_used = sqlite3_column_int64(s, 4);
        a->disabled = sqlite3_column_int(s, 5) != 0;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "SMTP accounts");
        store_smtp_accounts_free(*out, *n);
        *out = NULL;
        *n = 0;
        return STORE_ERR;
    }
    return STORE_OK;
}

void store_smtp_accounts_free(struct store_smtp_account *a, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(a[i].name);
        free(a[i].comment);
    }
    free(a);
}

int store_smtp_account_hashes(struct store *st, char ***names, char ***hashes, size_t *n,
                              struct error *err)
{
    sqlite3_stmt *s = stmt(st, O_ACCT_HASHES);
    size_t cap = 0;
    int rc;
    *names = NULL;
    *hashes = NULL;
    *n = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *names = xreallocarray(*names, cap, sizeof **names);
            *hashes = xreallocarray(*hashes, cap, sizeof **hashes);
        }
        (*names)[*n] = store_col_strdup(s, 0);
        (*hashes)[*n] = store_col_strdup(s, 1);
        (*n)++;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "SMTP accounts");
        for (size_t i = 0; i < *n; i++) {
            free((*names)[i]);
            free((*hashes)[i]);
        }
        free(*names);
        free(*hashes);
        *names = *hashes = NULL;
        *n = 0;
        return STORE_ERR;
    }
    return STORE_OK;
}

/* --- sender domains that must use TLS --- */

/* tls_domain - checked, lower-case, without a trailing dot */
static int tls_domain(const char *domain, char dst[256], struct error *err)
{
    if (domain == NULL || str_copy(dst, 256, domain) < 0) {
        error_set(err, "domain", "a domain name of at most 253 characters is required");
        return -1;
    }
    size_t len = strlen(dst);
    if (len > 0 && dst[len - 1] == '.')
        dst[len - 1] = '\0';
    str_lower(dst);
    if (!domain_name_valid(dst)) {
        error_set(err, "domain", "not a domain name: \"%.100s\"", domain);
        return -1;
    }
    return 0;
}

int store_tls_required_add(struct store *st, const char *domain, const char *comment,
                           struct error *err)
{
    char d[256];
    if (tls_domain(domain, d, err) < 0 || comment_check(comment, err) < 0)
        return STORE_ERR;
    sqlite3_stmt *s = stmt(st, O_TLS_ADD);
    sqlite3_bind_text(s, 1, d, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, comment ? comment : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 3, (int64_t)time(NULL));
    return store_step_change(st, s, "TLS-required domain", "domain", d, err);
}

int store_tls_required_remove(struct store *st, const char *domain, struct error *err)
{
    char d[256];
    if (tls_domain(domain, d, err) < 0)
        return STORE_ERR;
    sqlite3_stmt *s = stmt(st, O_TLS_DEL);
    sqlite3_bind_text(s, 1, d, -1, SQLITE_TRANSIENT);
    return store_step_change(st, s, "TLS-required domain", "domain", d, err);
}

int store_tls_required_list(struct store *st, char ***domains, size_t *n, struct error *err)
{
    sqlite3_stmt *s = stmt(st, O_TLS_LIST);
    size_t cap = 0;
    int rc;
    *domains = NULL;
    *n = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *domains = xreallocarray(*domains, cap, sizeof **domains);
        }
        (*domains)[(*n)++] = store_col_strdup(s, 0);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "TLS-required domains");
        for (size_t i = 0; i < *n; i++)
            free((*domains)[i]);
        free(*domains);
        *domains = NULL;
        *n = 0;
        return STORE_ERR;
    }
    return STORE_OK;
}
