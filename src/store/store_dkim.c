/*
 * store_dkim.c - DKIM signing keys in SQLite (schema version 9, store.c).
 * The section "DKIM signing keys" of store.h is its interface; the API's
 * DKIM routes (src/api/api_dkim.c), the delivery side's key set loader
 * (src/deliver/deliver_dkim.c, on moatd's reload thread) and Connect's
 * outbound check are its callers.
 *
 * Statements live in this file's own table (dkim_sql[]), prepared at
 * store_open by store_dkim_prepare and kept in st->dkim_stmt.  Adding or
 * activating a key changes two rows (the old active key and the new one) in
 * one transaction, so the "one active key per domain" index never sees an
 * intermediate state.
 *
 * Ownership: strings and blobs in returned structs belong to the caller;
 * free them with store_dkim_keys_free (the sealed blob is wiped).
 */
#include <stdlib.h>
#include <string.h>
#include "store_priv.h"

enum dkim_stmt {
    K_BEGIN,
    K_COMMIT,
    K_ROLLBACK,
    K_DEACTIVATE,
    K_INSERT,
    K_EXISTS,
    K_ACTIVATE,
    K_DELETE,
    K_LIST,
    K__COUNT
};

#define KEY_COLS "domain, selector, algorithm, private_key, public_key, active, created, created_by"

static const char *const dkim_sql[K__COUNT] = {
    [K_BEGIN] = "BEGIN IMMEDIATE",
    [K_COMMIT] = "COMMIT",
    [K_ROLLBACK] = "ROLLBACK",
    [K_DEACTIVATE] = "UPDATE dkim_keys SET active = 0 WHERE domain = ?1 AND active = 1",
    [K_INSERT] =
        "INSERT INTO dkim_keys (" KEY_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [K_EXISTS] = "SELECT 1 FROM dkim_keys WHERE domain = ?1 AND selector = ?2",
    [K_ACTIVATE] = "UPDATE dkim_keys SET active = 1 WHERE domain = ?1 AND selector = ?2",
    [K_DELETE] = "DELETE FROM dkim_keys WHERE domain = ?1 AND selector = ?2",
    [K_LIST] =
        "SELECT " KEY_COLS " FROM dkim_keys WHERE (?1 IS NULL OR domain = ?1)"
        " AND (?2 = 0 OR active = 1) ORDER BY domain, created DESC, selector",
};

int store_dkim_prepare(struct store *st, const char *path, struct error *err)
{
    return store_stmts_prepare(st, path, "dkim", dkim_sql, K__COUNT, &st->dkim_stmt, err);
}

void store_dkim_finalize(struct store *st)
{
    store_stmts_finalize(&st->dkim_stmt, K__COUNT);
}

/* stmt - statement id, reset and unbound */
static sqlite3_stmt *stmt(struct store *st, enum dkim_stmt id)
{
    return store_stmt_reset(st->dkim_stmt[id]);
}

/* step_done - run a statement that returns no rows; 0 or -1 */
static int step_done(struct store *st, sqlite3_stmt *s, const char *what, struct error *err)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        if (err != NULL)
            store_db_error(st, err, what);
        return -1;
    }
    return 0;
}

static void rollback(struct store *st)
{
    if (!sqlite3_get_autocommit(st->db))
        (void)step_done(st, stmt(st, K_ROLLBACK), "dkim rollback", NULL);
}

static int commit(struct store *st, struct error *err)
{
    if (step_done(st, stmt(st, K_COMMIT), "dkim commit", err) < 0) {
        rollback(st);
        return STORE_ERR;
    }
    st->own_commits++;
    return STORE_OK;
}

/* exists - 1 when the key is there, 0 when not, -1 on error */
static int exists(struct store *st, const char *domain, const char *selector, struct error *err)
{
    sqlite3_stmt *s = stmt(st, K_EXISTS);
    sqlite3_bind_text(s, 1, domain, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, selector, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    store_db_error(st, err, "dkim key");
    return -1;
}

int store_dkim_key_add(struct store *st, const struct store_dkim_key *k, bool activate,
                       struct error *err)
{
    if (step_done(st, stmt(st, K_BEGIN), "dkim key", err) < 0)
        return STORE_ERR;
    int e = exists(st, k->domain, k->selector, err);
    if (e != 0) {
        rollback(st);
        if (e > 0)
            error_set(err, "selector", "%s already has a key with selector %s; choose "
                      "another selector or delete that key first", k->domain, k->selector);
        return e > 0 ? STORE_CONFLICT : STORE_ERR;
    }
    if (activate) {
        sqlite3_stmt *s = stmt(st, K_DEACTIVATE);
        sqlite3_bind_text(s, 1, k->domain, -1, SQLITE_TRANSIENT);
        if (step_done(st, s, "dkim key", err) < 0) {
            rollback(st);
            return STORE_ERR;
        }
    }
    sqlite3_stmt *s = stmt(st, K_INSERT);
    sqlite3_bind_text(s, 1, k->domain, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, k->selector, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, k->algorithm, -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob(s, 4, k->private_key, (int)k->private_key_len, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 5, k->public_key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(s, 6, activate ? 1 : 0);
    sqlite3_bind_int64(s, 7, k->created);
    sqlite3_bind_text(s, 8, k->created_by ? k->created_by : "", -1, SQLITE_TRANSIENT);
    if (step_done(st, s, "dkim key", err) < 0) {
        rollback(st);
        return STORE_ERR;
    }
    return commit(st, err);
}

/* key_read - one row of KEY_COLS; everything allocated */
static void key_read(sqlite3_stmt *s, struct store_dkim_key *k)
{
    k->domain = store_col_strdup(s, 0);
    k->selector = store_col_strdup(s, 1);
    k->algorithm = store_col_strdup(s, 2);
    int len = sqlite3_column_bytes(s, 3);
    const void *blob = sqlite3_column_blob(s, 3);
    if (blob != NULL && len > 0) {
        k->private_key = xmalloc((size_t)len);
        memcpy(k->private_key, blob, (size_t)len);
        k->private_key_len = (size_t)len;
    }
    k->public_key = store_col_strdup(s, 4);
    k->active = sqlite3_column_int(s, 5) != 0;
    k->created = sqlite3_column_int64(s, 6);
    k->created_by = store_col_strdup(s, 7);
}

int store_dkim_key_list(struct store *st, const char *domain, bool active_only,
                        struct store_dkim_key **out, size_t *n, struct error *err)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *s = stmt(st, K_LIST);
    store_bind_text(s, 1, domain);
    sqlite3_bind_int(s, 2, active_only ? 1 : 0);
    struct store_dkim_key *v = NULL;
    size_t cnt = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        v = xreallocarray(v, cnt + 1, sizeof *v);
        memset(&v[cnt], 0, sizeof v[cnt]);
        key_read(s, &v[cnt++]);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_dkim_keys_free(v, cnt);
        store_db_error(st, err, "dkim keys");
        return STORE_ERR;
    }
    *out = v;
    *n = cnt;
    return STORE_OK;
}

/* not_found - the one message for a key that is not there */
static int not_found(struct error *err, const char *domain, const char *selector)
{
    error_set(err, "selector", "%s has no DKIM key with selector %s", domain, selector);
    return STORE_NOT_FOUND;
}

int store_dkim_key_activate(struct store *st, const char *domain, const char *selector,
                            struct error *err)
{
    if (step_done(st, stmt(st, K_BEGIN), "dkim key", err) < 0)
        return STORE_ERR;
    int e = exists(st, domain, selector, err);
    if (e <= 0) {
        rollback(st);
        return e == 0 ? not_found(err, domain, selector) : STORE_ERR;
    }
    sqlite3_stmt *s = stmt(st, K_DEACTIVATE);
    sqlite3_bind_text(s, 1, domain, -1, SQLITE_TRANSIENT);
    if (step_done(st, s, "dkim key", err) < 0) {
        rollback(st);
        return STORE_ERR;
    }
    s = stmt(st, K_ACTIVATE);
    sqlite3_bind_text(s, 1, domain, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, selector, -1, SQLITE_TRANSIENT);
    if (step_done(st, s, "dkim key", err) < 0) {
        rollback(st);
        return STORE_ERR;
    }
    return commit(st, err);
}

int store_dkim_key_delete(struct store *st, const char *domain, const char *selector,
                          struct error *err)
{
    sqlite3_stmt *s = stmt(st, K_DELETE);
    sqlite3_bind_text(s, 1, domain, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, selector, -1, SQLITE_TRANSIENT);
    if (step_done(st, s, "dkim key", err) < 0)
        return STORE_ERR;
    if (sqlite3_changes(st->db) == 0)
        return not_found(err, domain, selector);
    st->own_commits++;
    return STORE_OK;
}

void store_dkim_keys_free(struct store_dkim_key *k, size_t n)
{
    for (size_t i = 0; k && i < n; i++) {
        free(k[i].domain);
        free(k[i].selector);
        free(k[i].algorithm);
        if (k[i].private_key != NULL)
            memset(k[i].private_key, 0, k[i].private_key_len);
        free(k[i].private_key);
        free(k[i].public_key);
        free(k[i].created_by);
    }
    free(k);
}
