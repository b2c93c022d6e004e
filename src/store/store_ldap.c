/*
 * store_ldap.c - the LDAP / Active Directory source and the record of sync
 * runs in SQLite (schema version 5, store.c).  The section "directory: LDAP
 * source and sync runs" of store.h is its interface; src/directory
 * (directory_sync.c) and the API's directory routes are its callers.
 *
 * Statements live in this file's own table (ldap_sql[]), prepared at
 * store_open by store_ldap_prepare and kept in st->ldap_stmt.
 *
 * Ownership: strings and blobs in returned structs belong to the caller;
 * free them with the matching *_clear / *_free.
 */
#include <stdlib.h>
#include <string.h>
#include "store_priv.h"

enum ldap_stmt {
    L_SOURCE_GET,
    L_SOURCE_SET,
    L_SOURCE_SET_KEEP,
    L_RUN_ADD,
    L_RUN_LIST,
    L_RUN_LIST_KIND,
    L_RUN_LAST,
    L__COUNT
};

#define RUN_COLS "id, kind, trigger, who, started, finished, outcome, entries, created," \
                 " updated, removed, unchanged, skipped_unvalidated, errors, message"

static const char *const ldap_sql[L__COUNT] = {
    [L_SOURCE_GET] = "SELECT config, password, updated, updated_by FROM ldap_source WHERE id = 1",
    [L_SOURCE_SET] =
        "INSERT INTO ldap_source (id, config, password, updated, updated_by)"
        " VALUES (1, ?1, ?2, ?3, ?4) ON CONFLICT (id) DO UPDATE SET config = ?1,"
        " password = ?2, updated = ?3, updated_by = ?4",
    [L_SOURCE_SET_KEEP] =
        "INSERT INTO ldap_source (id, config, updated, updated_by) VALUES (1, ?1, ?3, ?4)"
        " ON CONFLICT (id) DO UPDATE SET config = ?1, updated = ?3, updated_by = ?4",
    [L_RUN_ADD] =
        "INSERT INTO ldap_runs (kind, trigger, who, started, finished, outcome, entries,"
        " created, updated, removed, unchanged, skipped_unvalidated, errors, message)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    [L_RUN_LIST] = "SELECT " RUN_COLS " FROM ldap_runs ORDER BY id DESC LIMIT ?1",
    [L_RUN_LIST_KIND] =
        "SELECT " RUN_COLS " FROM ldap_runs WHERE kind = ?2 ORDER BY id DESC LIMIT ?1",
    [L_RUN_LAST] =
        "SELECT " RUN_COLS " FROM ldap_runs WHERE kind = ?1 AND (?2 IS NULL OR outcome = ?2)"
        " ORDER BY id DESC LIMIT 1",
};

int store_ldap_prepare(struct store *st, const char *path, struct error *err)
{
    return store_stmts_prepare(st, path, "ldap", ldap_sql, L__COUNT, &st->ldap_stmt, err);
}

void store_ldap_finalize(struct store *st)
{
    store_stmts_finalize(&st->ldap_stmt, L__COUNT);
}

/* stmt - statement id, reset and unbound */
static sqlite3_stmt *stmt(struct store *st, enum ldap_stmt id)
{
    return store_stmt_reset(st->ldap_stmt[id]);
}

int store_ldap_source_get(struct store *st, struct store_ldap_source *out, struct error *err)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *s = stmt(st, L_SOURCE_GET);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) {
        out->config = xstrdup("{}");
        out->updated_by = xstrdup("");
        sqlite3_reset(s);
        return STORE_OK;
    }
    if (rc != SQLITE_ROW) {
        store_db_error(st, err, "directory source");
        sqlite3_reset(s);
        return STORE_ERR;
    }
    out->config = store_col_strdup(s, 0);
    int len = sqlite3_column_bytes(s, 1);
    const void *blob = sqlite3_column_blob(s, 1);
    if (blob != NULL && len > 0) {
        out->password = xmalloc((size_t)len);
        memcpy(out->password, blob, (size_t)len);
        out->password_len = (size_t)len;
    }
    out->updated = sqlite3_column_int64(s, 2);
    out->updated_by = store_col_strdup(s, 3);
    sqlite3_reset(s);
    return STORE_OK;
}

int store_ldap_source_set(struct store *st, const char *config, bool keep_password,
                          const unsigned char *password, size_t password_len, const char *who,
                          int64_t now, struct error *err)
{
    sqlite3_stmt *s = stmt(st, keep_password ? L_SOURCE_SET_KEEP : L_SOURCE_SET);
    sqlite3_bind_text(s, 1, config, -1, SQLITE_TRANSIENT);
    if (!keep_password) {
        if (password != NULL && password_len > 0)
            sqlite3_bind_blob(s, 2, password, (int)password_len, SQLITE_TRANSIENT);
        else
            sqlite3_bind_null(s, 2);
    }
    sqlite3_bind_int64(s, 3, now);
    sqlite3_bind_text(s, 4, who ? who : "", -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "directory source");
        return STORE_ERR;
    }
    st->own_commits++;
    return STORE_OK;
}

void store_ldap_source_clear(struct store_ldap_source *s)
{
    free(s->config);
    if (s->password != NULL)
        memset(s->password, 0, s->password_len);
    free(s->password);
    free(s->updated_by);
    memset(s, 0, sizeof *s);
}

int store_ldap_run_add(struct store *st, const struct store_ldap_run *r, int64_t *id,
                       struct error *err)
{
    sqlite3_stmt *s = stmt(st, L_RUN_ADD);
    sqlite3_bind_text(s, 1, r->kind, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, r->trigger, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, r->who ? r->who : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 4, r->started);
    sqlite3_bind_int64(s, 5, r->finished);
    sqlite3_bind_text(s, 6, r->outcome, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 7, r->entries);
    sqlite3_bind_int64(s, 8, r->created);
    sqlite3_bind_int64(s, 9, r->updated);
    sqlite3_bind_int64(s, 10, r->removed);
    sqlite3_bind_int64(s, 11, r->unchanged);
    sqlite3_bind_int64(s, 12, r->skipped_unvalidated);
    sqlite3_bind_int64(s, 13, r->errors);
    sqlite3_bind_text(s, 14, r->message ? r->message : "", -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "directory sync run");
        return STORE_ERR;
    }
    if (id != NULL)
        *id = sqlite3_last_insert_rowid(st->db);
    st->own_commits++;
    return STORE_OK;
}

/* run_read - one row of RUN_COLS; the strings are allocated */
static void run_read(sqlite3_stmt *s, struct store_ldap_run *r)
{
    r->id = sqlite3_column_int64(s, 0);
    r->kind = store_col_strdup(s, 1);
    r->trigger = store_col_strdup(s, 2);
    r->who = store_col_strdup(s, 3);
    r->started = sqlite3_column_int64(s, 4);
    r->finished = sqlite3_column_int64(s, 5);
    r->outcome = store_col_strdup(s, 6);
    r->entries = sqlite3_column_int64(s, 7);
    r->created = sqlite3_column_int64(s, 8);
    r->updated = sqlite3_column_int64(s, 9);
    r->removed = sqlite3_column_int64(s, 10);
    r->unchanged = sqlite3_column_int64(s, 11);
    r->skipped_unvalidated = sqlite3_column_int64(s, 12);
    r->errors = sqlite3_column_int64(s, 13);
    r->message = store_col_strdup(s, 14);
}

int store_ldap_run_list(struct store *st, const char *kind, size_t limit,
                        struct store_ldap_run **out, size_t *n, struct error *err)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *s = stmt(st, kind ? L_RUN_LIST_KIND : L_RUN_LIST);
    sqlite3_bind_int64(s, 1, (sqlite3_int64)(limit > 1000 ? 1000 : limit));
    if (kind)
        sqlite3_bind_text(s, 2, kind, -1, SQLITE_TRANSIENT);
    struct store_ldap_run *v = NULL;
    size_t cnt = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        v = xreallocarray(v, cnt + 1, sizeof *v);
        memset(&v[cnt], 0, sizeof v[cnt]);
        run_read(s, &v[cnt++]);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_ldap_runs_free(v, cnt);
        store_db_error(st, err, "directory sync runs");
        return STORE_ERR;
    }
    *out = v;
    *n = cnt;
    return STORE_OK;
}

int store_ldap_run_last(struct store *st, const char *kind, const char *outcome,
                        struct store_ldap_run **out, struct error *err)
{
    *out = NULL;
    sqlite3_stmt *s = stmt(st, L_RUN_LAST);
    sqlite3_bind_text(s, 1, kind, -1, SQLITE_TRANSIENT);
    if (outcome)
        sqlite3_bind_text(s, 2, outcome, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(s, 2);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(s);
        error_set(err, "run", "no %s run yet", kind);
        return STORE_NOT_FOUND;
    }
    if (rc != SQLITE_ROW) {
        sqlite3_reset(s);
        store_db_error(st, err, "directory sync runs");
        return STORE_ERR;
    }
    struct store_ldap_run *r = xcalloc(1, sizeof *r);
    run_read(s, r);
    sqlite3_reset(s);
    *out = r;
    return STORE_OK;
}

void store_ldap_runs_free(struct store_ldap_run *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++) {
        free((char *)r[i].kind);
        free((char *)r[i].trigger);
        free((char *)r[i].who);
        free((char *)r[i].outcome);
        free((char *)r[i].message);
    }
    free(r);
}
