/*
 * store_settings.c - the runtime settings stored through the API, in SQLite
 * (schema version 4, store.c).  The section "runtime settings" of store.h is
 * its interface; the API's settings routes write it, moatd reads it at start.
 *
 * Statements live in this file's own table (settings_sql[]), prepared at
 * store_open by store_settings_prepare and kept in st->settings_stmt.
 *
 * The store keeps keys and values as given: the settings table
 * (src/core/settings.c) validated them before, and validates them again when
 * moatd applies them, so a value written by an older version that the
 * current one refuses is reported at start rather than trusted.
 *
 * Ownership: strings in returned structs belong to the caller; free them
 * with store_settings_free.
 */
#include <stdlib.h>
#include <string.h>
#include "store_priv.h"

enum settings_stmt {
    S_LIST,
    S_UPSERT,
    S_DELETE,
    S__COUNT
};

static const char *const settings_sql[S__COUNT] = {
    [S_LIST] = "SELECT key, value, updated, updated_by FROM settings ORDER BY key",
    [S_UPSERT] =
        "INSERT INTO settings (key, value, updated, updated_by) VALUES (?1, ?2, ?3, ?4)"
        " ON CONFLICT (key) DO UPDATE SET value = ?2, updated = ?3, updated_by = ?4",
    [S_DELETE] = "DELETE FROM settings WHERE key = ?1",
};

int store_settings_prepare(struct store *st, const char *path, struct error *err)
{
    return store_stmts_prepare(st, path, "settings", settings_sql, S__COUNT, &st->settings_stmt, err);
}

void store_settings_finalize(struct store *st)
{
    store_stmts_finalize(&st->settings_stmt, S__COUNT);
}

/* stmt - statement id, reset and unbound */
static sqlite3_stmt *stmt(struct store *st, enum settings_stmt id)
{
    return store_stmt_reset(st->settings_stmt[id]);
}

/* store_settings_list - every stored value, by key */
int store_settings_list(struct store *st, struct store_setting **out, size_t *n,
                        struct error *err)
{
    sqlite3_stmt *s = stmt(st, S_LIST);
    size_t cap = 0;
    int rc;

    *out = NULL;
    *n = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = xreallocarray(*out, cap, sizeof **out);
        }
        struct store_setting *e = &(*out)[(*n)++];
        e->key = store_col_strdup(s, 0);
        e->value = store_col_strdup(s, 1);
        e->updated = sqlite3_column_int64(s, 2);
        e->updated_by = store_col_strdup(s, 3);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "settings list");
        store_settings_free(*out, *n);
        *out = NULL;
        *n = 0;
        return STORE_ERR;
    }
    return STORE_OK;
}

/* store_settings_set - all n values in one IMMEDIATE transaction: a PATCH of
 * several keys is applied whole or not at all */
int store_settings_set(struct store *st, const char *const *keys, const char *const *values,
                       size_t n, const char *who, struct error *err)
{
    int64_t now = (int64_t)(time_wall_ms() / 1000);

    if (sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        store_db_error(st, err, "settings write");
        return STORE_ERR;
    }
    for (size_t i = 0; i < n; i++) {
        sqlite3_stmt *s = stmt(st, S_UPSERT);
        sqlite3_bind_text(s, 1, keys[i], -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s, 2, values[i], -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 3, now);
        sqlite3_bind_text(s, 4, who != NULL ? who : "", -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s);
        sqlite3_reset(s);
        if (rc != SQLITE_DONE) {
            store_db_error(st, err, "settings write");
            sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
            return STORE_ERR;
        }
    }
    if (sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        store_db_error(st, err, "settings write");
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        return STORE_ERR;
    }
    st->own_commits++;
    return STORE_OK;
}

/* store_setting_delete - STORE_NOT_FOUND when key has no stored value */
int store_setting_delete(struct store *st, const char *key, struct error *err)
{
    sqlite3_stmt *s = stmt(st, S_DELETE);
    sqlite3_bind_text(s, 1, key, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "settings delete");
        return STORE_ERR;
    }
    if (sqlite3_changes(st->db) == 0) {
        error_set(err, "name", "%.64s has no stored value", key);
        return STORE_NOT_FOUND;
    }
    st->own_commits++;
    return STORE_OK;
}

void store_settings_free(struct store_setting *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(s[i].key);
        free(s[i].value);
        free(s[i].updated_by);
    }
    free(s);
}
