/*
 * store_auth.c - accounts, sign-in sessions, API tokens and the audit log in
 * SQLite (schema version 2, store.c).  The section "accounts, sessions,
 * tokens, audit" of store.h is its interface; src/auth is its only caller.
 *
 * Statements live in this file's own table (auth_sql[]), prepared at
 * store_open by store_auth_prepare and kept in st->auth_stmt.
 *
 * Rules kept in SQL, so that two API threads (or the CLI and the daemon)
 * cannot race past them: the last enabled administrator can be neither
 * demoted, disabled nor deleted (one conditional statement each); a TOTP
 * time step is accepted once (a conditional update); audit rows cannot be
 * updated or deleted (triggers in migration 2; this file has no statement
 * that would try).
 *
 * Ownership: strings in returned structs belong to the caller; free them
 * with the matching *_clear / *_free.
 */
#include <stdlib.h>
#include <string.h>
#include "store_priv.h"

enum auth_stmt {
    A_ACCOUNT_INSERT,
    A_ACCOUNT_GET,
    A_ACCOUNT_GET_NAME,
    A_ACCOUNT_LIST,
    A_ACCOUNT_COUNT,
    A_ACCOUNT_COUNT_ROLE,
    A_ACCOUNT_EXISTS,
    A_ACCOUNT_SET_ROLE,
    A_ACCOUNT_SET_DISABLED,
    A_ACCOUNT_DELETE,
    A_ACCOUNT_SET_PASSWORD,
    A_ACCOUNT_SET_TOTP,
    A_ACCOUNT_USE_STEP,
    A_SESSION_INSERT,
    A_SESSION_GET,
    A_SESSION_TOUCH,
    A_SESSION_REVOKE,
    A_SESSION_REVOKE_OTHERS,
    A_SESSION_LIST,
    A_SESSION_PURGE,
    A_TOKEN_INSERT,
    A_TOKEN_GET,
    A_TOKEN_TOUCH,
    A_TOKEN_REVOKE,
    A_TOKEN_LIST,
    A_AUDIT_INSERT,
    A_AUDIT_LIST,
    A__COUNT
};

#define ACCOUNT_COLS "id, name, role, password_hash, must_change, disabled, totp_secret," \
                     " totp_active, totp_last_step, created, updated"
#define SESSION_COLS "id_hash, account_id, csrf, created, last_seen, expires, client_ip, revoked"
#define TOKEN_COLS "t.id, t.account_id, a.name, t.name, t.role, t.secret_hash, t.created," \
                   " t.last_used, t.revoked"
/* "no enabled administrator would be left": true when the row ?1 may stop being one */
#define OTHER_ADMIN_LEFT "(role != 'admin' OR disabled = 1 OR (SELECT count(*) FROM accounts" \
                         " WHERE role = 'admin' AND disabled = 0 AND id != ?1) > 0)"

static const char *const auth_sql[A__COUNT] = {
    [A_ACCOUNT_INSERT] =
        "INSERT INTO accounts (name, role, password_hash, must_change, created, updated)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
    [A_ACCOUNT_GET] = "SELECT " ACCOUNT_COLS " FROM accounts WHERE id = ?1",
    [A_ACCOUNT_GET_NAME] = "SELECT " ACCOUNT_COLS " FROM accounts WHERE name = ?1",
    [A_ACCOUNT_LIST] = "SELECT " ACCOUNT_COLS " FROM accounts WHERE id > ?1 ORDER BY id LIMIT ?2",
    [A_ACCOUNT_COUNT] = "SELECT count(*) FROM accounts",
    [A_ACCOUNT_COUNT_ROLE] = "SELECT count(*) FROM accounts WHERE role = ?1 AND disabled = 0",
    [A_ACCOUNT_EXISTS] = "SELECT 1 FROM accounts WHERE id = ?1",
    [A_ACCOUNT_SET_ROLE] =
        "UPDATE accounts SET role = ?2, updated = ?3 WHERE id = ?1 AND (?2 = 'admin' OR "
        OTHER_ADMIN_LEFT ")",
    [A_ACCOUNT_SET_DISABLED] =
        "UPDATE accounts SET disabled = ?2, updated = ?3 WHERE id = ?1 AND (?2 = 0 OR "
        OTHER_ADMIN_LEFT ")",
    [A_ACCOUNT_DELETE] = "DELETE FROM accounts WHERE id = ?1 AND " OTHER_ADMIN_LEFT,
    [A_ACCOUNT_SET_PASSWORD] =
        "UPDATE accounts SET password_hash = ?2, must_change = ?3, updated = ?4 WHERE id = ?1",
    [A_ACCOUNT_SET_TOTP] =
        "UPDATE accounts SET totp_secret = ?2, totp_active = ?3, totp_last_step = ?4,"
        " updated = ?5 WHERE id = ?1",
    [A_ACCOUNT_USE_STEP] =
        "UPDATE accounts SET totp_last_step = ?2 WHERE id = ?1 AND totp_last_step < ?2",
    [A_SESSION_INSERT] =
        "INSERT INTO sessions (" SESSION_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0)",
    [A_SESSION_GET] = "SELECT " SESSION_COLS " FROM sessions WHERE id_hash = ?1",
    [A_SESSION_TOUCH] = "UPDATE sessions SET last_seen = ?2 WHERE id_hash = ?1 AND last_seen < ?2",
    [A_SESSION_REVOKE] =
        "UPDATE sessions SET revoked = 1 WHERE id_hash = ?1 AND (?2 = 0 OR account_id = ?2)"
        " AND revoked = 0",
    [A_SESSION_REVOKE_OTHERS] =
        "UPDATE sessions SET revoked = 1 WHERE account_id = ?1 AND id_hash IS NOT ?2"
        " AND revoked = 0",
    [A_SESSION_LIST] =
        "SELECT " SESSION_COLS " FROM sessions WHERE account_id = ?1 AND revoked = 0"
        " AND expires > ?2 AND last_seen >= ?3 ORDER BY created DESC LIMIT 1000",
    [A_SESSION_PURGE] = "DELETE FROM sessions WHERE revoked = 1 OR expires <= ?1 OR last_seen < ?2",
    [A_TOKEN_INSERT] =
        "INSERT INTO tokens (account_id, name, role, secret_hash, created)"
        " VALUES (?1, ?2, ?3, ?4, ?5)",
    [A_TOKEN_GET] =
        "SELECT " TOKEN_COLS " FROM tokens t JOIN accounts a ON a.id = t.account_id"
        " WHERE t.id = ?1",
    [A_TOKEN_TOUCH] = "UPDATE tokens SET last_used = ?2 WHERE id = ?1",
    [A_TOKEN_REVOKE] = "UPDATE tokens SET revoked = 1 WHERE id = ?1 AND revoked = 0",
    [A_TOKEN_LIST] =
        "SELECT " TOKEN_COLS " FROM tokens t JOIN accounts a ON a.id = t.account_id"
        " WHERE (?1 = 0 OR t.account_id = ?1) AND t.id > ?2 ORDER BY t.id LIMIT ?3",
    [A_AUDIT_INSERT] =
        "INSERT INTO audit (ts, account_id, account_name, via, token_id, client_ip, action,"
        " target, before_json, after_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [A_AUDIT_LIST] =
        "SELECT id, ts, account_id, account_name, via, token_id, client_ip, action, target,"
        " before_json, after_json FROM audit"
        " WHERE (?1 = 0 OR ts >= ?1) AND (?2 = 0 OR ts <= ?2)"
        " AND (?3 IS NULL OR account_name = ?3 COLLATE NOCASE)"
        " AND (?4 IS NULL OR substr(action, 1, length(?4)) = ?4)"
        " AND (?5 = 0 OR id < ?5) ORDER BY id DESC LIMIT ?6",
};

int store_auth_prepare(struct store *st, const char *path, struct error *err)
{
    return store_stmts_prepare(st, path, "auth", auth_sql, A__COUNT, &st->auth_stmt, err);
}

void store_auth_finalize(struct store *st)
{
    store_stmts_finalize(&st->auth_stmt, A__COUNT);
}

/* stmt - statement id, reset and unbound */
static sqlite3_stmt *stmt(struct store *st, enum auth_stmt id)
{
    return store_stmt_reset(st->auth_stmt[id]);
}

static void col_copy(sqlite3_stmt *s, int col, char *dst, size_t size)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    if (t == NULL || str_copy(dst, size, (const char *)t) < 0)
        dst[0] = '\0';
}

/* run - step a statement that returns no rows; STORE_OK or STORE_ERR */
static int run(struct store *st, sqlite3_stmt *s, const char *what, struct error *err)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, what);
        return STORE_ERR;
    }
    st->own_commits++;
    return STORE_OK;
}

static int64_t now_s(void)
{
    return (int64_t)(time_wall_ms() / 1000);
}

/* --- accounts --- */

static void account_from_row(sqlite3_stmt *s, struct store_account *a)
{
    memset(a, 0, sizeof *a);
    a->id = sqlite3_column_int64(s, 0);
    a->name = store_col_strdup(s, 1);
    a->role = store_col_strdup(s, 2);
    a->password_hash = store_col_strdup(s, 3);
    a->must_change = sqlite3_column_int(s, 4) != 0;
    a->disabled = sqlite3_column_int(s, 5) != 0;
    if (sqlite3_column_type(s, 6) == SQLITE_BLOB) {
        int len = sqlite3_column_bytes(s, 6);
        const void *p = sqlite3_column_blob(s, 6);
        if (len > 0 && p != NULL) {
            a->totp_secret = xmalloc((size_t)len);
            memcpy(a->totp_secret, p, (size_t)len);
            a->totp_secret_len = (size_t)len;
        }
    }
    a->totp_active = sqlite3_column_int(s, 7) != 0;
    a->totp_last_step = sqlite3_column_int64(s, 8);
    a->created = sqlite3_column_int64(s, 9);
    a->updated = sqlite3_column_int64(s, 10);
}

void store_account_clear(struct store_account *a)
{
    if (a == NULL)
        return;
    free(a->name);
    free(a->role);
    if (a->password_hash != NULL) {
        memset(a->password_hash, 0, strlen(a->password_hash));
        free(a->password_hash);
    }
    free(a->totp_secret);
    memset(a, 0, sizeof *a);
}

void store_accounts_free(struct store_account *a, size_t n)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        store_account_clear(&a[i]);
    free(a);
}

int store_account_create(struct store *st, const char *name, const char *role,
                         const char *password_hash, bool must_change, int64_t *id_out,
                         struct error *err)
{
    memset(err, 0, sizeof *err);
    sqlite3_stmt *s = stmt(st, A_ACCOUNT_INSERT);
    store_bind_text(s, 1, name);
    store_bind_text(s, 2, role);
    store_bind_text(s, 3, password_hash);
    sqlite3_bind_int(s, 4, must_change ? 1 : 0);
    sqlite3_bind_int64(s, 5, now_s());
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_CONSTRAINT_UNIQUE) {
        error_set(err, "name", "an account named \"%s\" already exists", name);
        return STORE_CONFLICT;
    }
    if (rc == SQLITE_CONSTRAINT_CHECK) {
        error_set(err, "role", "invalid account: role \"%s\" or name length", role);
        return STORE_ERR;
    }
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "account create");
        return STORE_ERR;
    }
    st->own_commits++;
    if (id_out != NULL)
        *id_out = sqlite3_last_insert_rowid(st->db);
    return STORE_OK;
}

/* get_one - run a single-row account query */
static int account_get_one(struct store *st, sqlite3_stmt *s, struct store_account *out,
                           const char *field, const char *shown, struct error *err)
{
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        account_from_row(s, out);
    sqlite3_reset(s);
    if (rc == SQLITE_ROW)
        return STORE_OK;
    if (rc == SQLITE_DONE) {
        error_set(err, field, "no such account %s", shown);
        return STORE_NOT_FOUND;
    }
    store_db_error(st, err, "account get");
    return STORE_ERR;
}

int store_account_get(struct store *st, int64_t id, struct store_account *out, struct error *err)
{
    char shown[32];
    memset(err, 0, sizeof *err);
    memset(out, 0, sizeof *out);
    sqlite3_stmt *s = stmt(st, A_ACCOUNT_GET);
    sqlite3_bind_int64(s, 1, id);
    xsnprintf(shown, sizeof shown, "%lld", (long long)id);
    return account_get_one(st, s, out, "id", shown, err);
}

int store_account_get_by_name(struct store *st, const char *name, struct store_account *out,
                              struct error *err)
{
    memset(err, 0, sizeof *err);
    memset(out, 0, sizeof *out);
    sqlite3_stmt *s = stmt(st, A_ACCOUNT_GET_NAME);
    store_bind_text(s, 1, name);
    return account_get_one(st, s, out, "name", "with that name", err);
}

int store_account_list(struct store *st, int64_t after_id, size_t limit,
                       struct store_account **out, size_t *n, struct error *err)
{
    struct store_account *a = NULL;
    size_t count = 0, cap = 0;
    int rc;

    memset(err, 0, sizeof *err);
    sqlite3_stmt *s = stmt(st, A_ACCOUNT_LIST);
    sqlite3_bind_int64(s, 1, after_id);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)limit);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (count == cap) {
            cap = cap ? cap * 2 : 16;
            a = xreallocarray(a, cap, sizeof *a);
        }
        account_from_row(s, &a[count++]);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "account list");
        store_accounts_free(a, count);
        return STORE_ERR;
    }
    *out = a;
    *n = count;
    return STORE_OK;
}

int store_account_count(struct store *st, const char *role, int64_t *count, struct error *err)
{
    memset(err, 0, sizeof *err);
    sqlite3_stmt *s = stmt(st, role == NULL ? A_ACCOUNT_COUNT : A_ACCOUNT_COUNT_ROLE);
    if (role != NULL)
        store_bind_text(s, 1, role);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        *count = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    if (rc != SQLITE_ROW) {
        store_db_error(st, err, "account count");
        return STORE_ERR;
    }
    return STORE_OK;
}

/* changed_or_why - after a conditional change of account id: STORE_OK when a
 * row changed, else STORE_NOT_FOUND or STORE_CONFLICT (the last administrator) */
static int changed_or_why(struct store *st, int64_t id, const char *what, struct error *err)
{
    if (sqlite3_changes(st->db) > 0) {
        st->own_commits++;
        return STORE_OK;
    }
    sqlite3_stmt *s = stmt(st, A_ACCOUNT_EXISTS);
    sqlite3_bind_int64(s, 1, id);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_DONE) {
        error_set(err, "id", "no such account %lld", (long long)id);
        return STORE_NOT_FOUND;
    }
    if (rc != SQLITE_ROW) {
        store_db_error(st, err, what);
        return STORE_ERR;
    }
    error_set(err, "last_admin", "%s: this is the last enabled administrator; "
              "make another account an administrator first", what);
    return STORE_CONFLICT;
}

int store_account_set_role(struct store *st, int64_t id, const char *role, struct error *err)
{
    memset(err, 0, sizeof *err);
    sqlite3_stmt *s = stmt(st, A_ACCOUNT_SET_ROLE);
    sqlite3_bind_int64(s, 1, id);
    store_bind_text(s, 2, role);
    sqlite3_bind_int64(s, 3, now_s());
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_CONSTRAINT_CHECK) {
        error_set(err, "role", "invalid role \"%s\"", role);
        return STORE_ERR;
    }
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "account role");
        return STORE_ERR;
    }
    return changed_or_why(st, id, "change the role", err);
}

int store_account_set_disabled(struct store *st, int64_t id, bool disabled, struct error *err)
{
    memset(err, 0, sizeof *err);
    sqlite3_stmt *s = stmt(st, A_ACCOUNT_SET_DISABLED);
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int(s, 2, disabled ? 1 : 0);
    sqlite3_bind_int64(s, 3, now_s());
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "account disable");
        return STORE_ERR;
    }
    return changed_or_why(st, id, "disable the account", err);
}

int store_account_delete(struct store *st, int64_t id, struct error *err)
{
    memset(err, 0, sizeof *err);
    sqlite3_stmt *s = stmt(st, A_ACCOUNT_DELETE);
    sqlite3_bind_int64(s, 1, id);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "account delete");
        return STORE_ERR;
    }
    return changed_or_why(st, id, "delete the account", err);
}

/* changed_or_missing - after an unconditional change of account id */
static int changed_or_missing(struct store *st, int64_t id)
{
    (void)id;
    if (sqlite3_changes(st->db) > 0) {
        st->own_commits++;
        return STORE_OK;
    }
    return STORE_NOT_FOUND;
}

int store_account_set_password(struct store *st, int64_t id, const char *password_hash,
                               bool must_change, struct error *err)
{
    memset(err, 0, sizeof *err);
    sqlite3_stmt *s = stmt(st, A_ACCOUNT_SET_PASSWORD);
    sqlite3_bind_int64(s, 1, id);
    store_bind_text(s, 2, password_hash);
    sqlite3_bind_int(s, 3, must_change ? 1 : 0);
    sqlite3_bind_int64(s, 4, now_s());
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "account password");
        return STORE_ERR;
    }
    if (changed_or_missing(st, id) != STORE_OK) {
        error_set(err, "id", "no such account %lld", (long long)id);
        return STORE_NOT_FOUND;
    }
    return STORE_OK;
}

int store_account_set_totp(struct store *st, int64_t id, const unsigned char *secret,
                           size_t len, bool active, int64_t last_step, struct error *err)
{
    memset(err, 0, sizeof *err);
    sqlite3_stmt *s = stmt(st, A_ACCOUNT_SET_TOTP);
    sqlite3_bind_int64(s, 1, id);
    if (secret == NULL)
        sqlite3_bind_null(s, 2);
    else
        sqlite3_bind_blob(s, 2, secret, (int)len, SQLITE_TRANSIENT);
    sqlite3_bind_int(s, 3, active ? 1 : 0);
    sqlite3_bind_int64(s, 4, last_step);
    sqlite3_bind_int64(s, 5, now_s());
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "account totp");
        return STORE_ERR;
    }
    if (changed_or_missing(st, id) != STORE_OK) {
        error_set(err, "id", "no such account %lld", (long long)id);
        return STORE_NOT_FOUND;
    }
    return STORE_OK;
}

int store_account_use_totp_step(struct store *st, int64_t id, int64_t step, struct error *err)
{
    memset(err, 0, sizeof *err);
    sqlite3_stmt *s = stmt(st, A_ACCOUNT_USE_STEP);
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int64(s, 2, step);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "account totp step");
        return STORE_ERR;
    }
    if (sqlite3_changes(st->db) == 0) {
        error_set(err, "totp", "this code was already used; wait for the next one");
        return STORE_CONFLICT;
    }
    st->own_commits++;
    return STORE_OK;
}

/* --- sessions --- */

static void session_from_row(sqlite3_stmt *s, struct store_session *o)
{
    memset(o, 0, sizeof *o);
    col_copy(s, 0, o->id_hash, sizeof o->id_hash);
    o->account_id = sqlite3_column_int64(s, 1);
    col_copy(s, 2, o->csrf, sizeof o->csrf);
    o->created = sqlite3_column_int64(s, 3);
    o->last_seen = sqlite3_column_int64(s, 4);
    o->expires = sqlite3_column_int64(s, 5);
    col_copy(s, 6, o->client_ip, sizeof o->client_ip);
    o->revoked = sqlite3_column_int(s, 7) != 0;
}

int store_session_create(struct store *st, const struct store_session *o, struct error *err)
{
    memset(err, 0, sizeof *err);
    sqlite3_stmt *s = stmt(st, A_SESSION_INSERT);
    store_bind_text(s, 1, o->id_hash);
    sqlite3_bind_int64(s, 2, o->account_id);
    store_bind_text(s, 3, o->csrf);
    sqlite3_bind_int64(s, 4, o->created);
    sqlite3_bind_int64(s, 5, o->last_seen);
    sqlite3_bind_int64(s, 6, o->expires);
    store_bind_text(s, 7, o->client_ip);
    return run(st, s, "session create", err);
}

int store_session_get(struct store *st, const char *id_hash, struct store_session *out,
                      struct error *err)
{
    memset(err, 0, sizeof *err);
    sqlite3_stmt *s = stmt(st, A_SESSION_GET);
    store_bind_text(s, 1, id_hash);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        session_from_row(s, out);
    sqlite3_reset(s);
    if (rc == SQLITE_ROW)
        return STORE_OK;
    if (rc == SQLITE_DONE) {
        error_set(err, "id", "no such session");
        return STORE_NOT_FOUND;
    }
    store_db_error(st, err, "session get");
    return STORE_ERR;
}

int store_session_touch(struct store *st, const char *id_hash, int64_t now, struct error *err)
{
    memset(err, 0, sizeof *err);
    sqlite3_stmt *s = stmt(st, A_SESSION_TOUCH);
    store_bind_text(s, 1, id_hash);
    sqlite3_bind_int64(s, 2, now);
    return run(st, s, "session touch", err);
}

int store_session_revoke(struct store *st, const char *id_hash, int64_t account_id,
                         struct error *err)
{
    memset(err, 0, sizeof *err);
    sqlite3_stmt *s = stmt(st, A_SESSION_REVOKE);
    store_bind_text(s, 1, id_hash);
    sqlite3_bind_int64(s, 2, account_id);
    if (run(st, s, "session revoke", err) < 0)
        return STORE_ERR;
    if (sqlite3_changes(st->db) == 0) {
        error_set(err, "id", "no such session");
        return STORE_NOT_FOUND;
    }
    return STORE_OK;
}

int store_session_revoke_others(struct store *st, int64_t account_id, const char *keep_hash,
                                struct error *err)
{
    memset(err, 0, sizeof *err);
    sqlite3_stmt *s = stmt(st, A_SESSION_REVOKE_OTHERS);
    sqlite3_bind_int64(s, 1, account_id);
    store_bind_text(s, 2, keep_hash);
    return run(st, s, "session revoke", err);
}

int store_session_list(struct store *st, int64_t account_id, int64_t now, int64_t idle_cutoff,
                       struct store_session **out, size_t *n, struct error *err)
{
    struct store_session *o = NULL;
    size_t count = 0, cap = 0;
    int rc;

    memset(err, 0, sizeof *err);
    sqlite3_stmt *s = stmt(st, A_SESSION_LIST);
    sqlite3_bind_int64(s, 1, account_id);
    sqlite3_bind_int64(s, 2, now);
    sqlite3_bind_int64(s, 3, idle_cutoff);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (count == cap) {
            cap = cap ? cap * 2 : 8;
            o = xreallocarray(o, cap, sizeof *o);
        }
        session_from_row(s, &o[count++]);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "session list");
        free(o);
        return STORE_ERR;
    }
    *out = o;
    *n = count;
    return STORE_OK;
}

int store_session_purge(struct store *st, int64_t now, int64_t idle_cutoff, struct error *err)
{
    memset(err, 0, sizeof *err);
    sqlite3_stmt *s = stmt(st, A_SESSION_PURGE);
    sqlite3_bind_int64(s, 1, now);
    sqlite3_bind_int64(s, 2, idle_cutoff);
    return run(st, s, "session purge", err);
}

/* --- tokens --- */

static void token_from_row(sqlite3_stmt *s, struct store_token *t)
{
    memset(t, 0, sizeof *t);
    t->id = sqlite3_column_int64(s, 0);
    t->account_id = sqlite3_column_int64(s, 1);
    t->account_name = store_col_strdup(s, 2);
    t->name = store_col_strdup(s, 3);
    t->role = store_col_strdup(s, 4);
    col_copy(s, 5, t->secret_hash, sizeof t->secret_hash);
    t->created = sqlite3_column_int64(s, 6);
    t->last_used = sqlite3_column_int64(s, 7);
    t->revoked = sqlite3_column_int(s, 8) != 0;
}

void store_token_clear(struct store_token *t)
{
    if (t == NULL)
        return;
    free(t->account_name);
    free(t->name);
    free(t->role);
    memset(t, 0, sizeof *t);
}

void store_tokens_free(struct store_token *t, size_t n)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        store_token_clear(&t[i]);
    free(t);
}

int store_token_create(struct store *st, int64_t account_id, const char *name, const char *role,
                       const char *secret_hash, int64_t now, int64_t *id_out, struct error *err)
{
    memset(err, 0, sizeof *err);
    sqlite3_stmt *s = stmt(st, A_TOKEN_INSERT);
    sqlite3_bind_int64(s, 1, account_id);
    store_bind_text(s, 2, name);
    store_bind_text(s, 3, role);
    store_bind_text(s, 4, secret_hash);
    sqlite3_bind_int64(s, 5, now);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
        error_set(err, "account", "no such account %lld", (long long)account_id);
        return STORE_NOT_FOUND;
    }
    if (rc == SQLITE_CONSTRAINT_CHECK) {
        error_set(err, "role", "invalid token: role \"%s\" or name length", role);
        return STORE_ERR;
    }
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "token create");
        return STORE_ERR;
    }
    st->own_commits++;
    *id_out = sqlite3_last_insert_rowid(st->db);
    return STORE_OK;
}

int store_token_get(struct store *st, int64_t id, struct store_token *out, struct error *err)
{
    memset(err, 0, sizeof *err);
    memset(out, 0, sizeof *out);
    sqlite3_stmt *s = stmt(st, A_TOKEN_GET);
    sqlite3_bind_int64(s, 1, id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        token_from_row(s, out);
    sqlite3_reset(s);
    if (rc == SQLITE_ROW)
        return STORE_OK;
    if (rc == SQLITE_DONE) {
        error_set(err, "id", "no such token %lld", (long long)id);
        return STORE_NOT_FOUND;
    }
    store_db_error(st, err, "token get");
    return STORE_ERR;
}

int store_token_touch(struct store *st, int64_t id, int64_t now, struct error *err)
{
    memset(err, 0, sizeof *err);
    sqlite3_stmt *s = stmt(st, A_TOKEN_TOUCH);
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int64(s, 2, now);
    return run(st, s, "token touch", err);
}

int store_token_revoke(struct store *st, int64_t id, struct error *err)
{
    memset(err, 0, sizeof *err);
    sqlite3_stmt *s = stmt(st, A_TOKEN_REVOKE);
    sqlite3_bind_int64(s, 1, id);
    if (run(st, s, "token revoke", err) < 0)
        return STORE_ERR;
    if (sqlite3_changes(st->db) == 0) {
        error_set(err, "id", "no such token %lld (or already revoked)", (long long)id);
        return STORE_NOT_FOUND;
    }
    return STORE_OK;
}

int store_token_list(struct store *st, int64_t account_id, int64_t after_id, size_t limit,
                     struct store_token **out, size_t *n, struct error *err)
{
    struct store_token *t = NULL;
    size_t count = 0, cap = 0;
    int rc;

    memset(err, 0, sizeof *err);
    sqlite3_stmt *s = stmt(st, A_TOKEN_LIST);
    sqlite3_bind_int64(s, 1, account_id);
    sqlite3_bind_int64(s, 2, after_id);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)limit);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (count == cap) {
            cap = cap ? cap * 2 : 16;
            t = xreallocarray(t, cap, sizeof *t);
        }
        token_from_row(s, &t[count++]);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "token list");
        store_tokens_free(t, count);
        return STORE_ERR;
    }
    *out = t;
    *n = count;
    return STORE_OK;
}

/* --- audit --- */

int store_audit_append(struct store *st, const struct store_audit_entry *e, struct error *err)
{
    memset(err, 0, sizeof *err);
    if (e->action == NULL || e->action[0] == '\0') {
        error_set(err, "action", "an audit entry needs an action");
        return STORE_ERR;
    }
    sqlite3_stmt *s = stmt(st, A_AUDIT_INSERT);
    sqlite3_bind_int64(s, 1, e->ts);
    sqlite3_bind_int64(s, 2, e->account_id);
    store_bind_text(s, 3, e->account_name ? e->account_name : "");
    store_bind_text(s, 4, e->via ? e->via : "");
    sqlite3_bind_int64(s, 5, e->token_id);
    store_bind_text(s, 6, e->client_ip ? e->client_ip : "");
    store_bind_text(s, 7, e->action);
    store_bind_text(s, 8, e->target ? e->target : "");
    store_bind_text(s, 9, e->before_json);
    store_bind_text(s, 10, e->after_json);
    return run(st, s, "audit append", err);
}

static const char *col_dup_or_null(sqlite3_stmt *s, int col)
{
    if (sqlite3_column_type(s, col) == SQLITE_NULL)
        return NULL;
    return store_col_strdup(s, col);
}

int store_audit_list(struct store *st, const struct store_audit_filter *f,
                     struct store_audit_entry **out, size_t *n, struct error *err)
{
    struct store_audit_entry *e = NULL;
    size_t count = 0, cap = 0;
    int rc;

    memset(err, 0, sizeof *err);
    sqlite3_stmt *s = stmt(st, A_AUDIT_LIST);
    sqlite3_bind_int64(s, 1, f->since);
    sqlite3_bind_int64(s, 2, f->until);
    store_bind_text(s, 3, f->account);
    store_bind_text(s, 4, f->action_prefix);
    sqlite3_bind_int64(s, 5, f->before_id);
    sqlite3_bind_int64(s, 6, (sqlite3_int64)(f->limit ? f->limit : 100));
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (count == cap) {
            cap = cap ? cap * 2 : 16;
            e = xreallocarray(e, cap, sizeof *e);
        }
        struct store_audit_entry *x = &e[count++];
        memset(x, 0, sizeof *x);
        x->id = sqlite3_column_int64(s, 0);
        x->ts = sqlite3_column_int64(s, 1);
        x->account_id = sqlite3_column_int64(s, 2);
        x->account_name = store_col_strdup(s, 3);
        x->via = store_col_strdup(s, 4);
        x->token_id = sqlite3_column_int64(s, 5);
        x->client_ip = store_col_strdup(s, 6);
        x->action = store_col_strdup(s, 7);
        x->target = store_col_strdup(s, 8);
        x->before_json = col_dup_or_null(s, 9);
        x->after_json = col_dup_or_null(s, 10);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "audit list");
        store_audit_free(e, count);
        return STORE_ERR;
    }
    *out = e;
    *n = count;
    return STORE_OK;
}

void store_audit_free(struct store_audit_entry *e, size_t n)
{
    if (e == NULL)
        return;
    /* the list owns its strings; the struct says const for append's callers */
    for (size_t i = 0; i < n; i++) {
        free((char *)e[i].account_name);
        free((char *)e[i].via);
        free((char *)e[i].client_ip);
        free((char *)e[i].action);
        free((char *)e[i].target);
        free((char *)e[i].before_json);
        free((char *)e[i].after_json);
    }
    free(e);
}
