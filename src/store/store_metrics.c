/*
 * store_metrics.c - the metrics token (issue 11): the one bearer token that
 * may read /metrics from an address outside metrics_allow.  The table keeps
 * a single row with the token's keyed hash (auth.c makes and checks the
 * token; the secret itself is never stored).  Interface: the section
 * "metrics token" of store.h.
 */
#include <string.h>
#include "store_priv.h"

enum metrics_stmt { MT_SET, MT_GET, MT__COUNT };

static const char *const metrics_sql[MT__COUNT] = {
    [MT_SET] = "INSERT INTO metrics_token (id, hash, created, created_by) VALUES (1, ?1, ?2, ?3) "
               "ON CONFLICT (id) DO UPDATE SET hash = ?1, created = ?2, created_by = ?3",
    [MT_GET] = "SELECT hash FROM metrics_token WHERE id = 1",
};

int store_metrics_prepare(struct store *st, const char *path, struct error *err)
{
    return store_stmts_prepare(st, path, "metrics", metrics_sql, MT__COUNT, &st->metrics_stmt,
                               err);
}

void store_metrics_finalize(struct store *st)
{
    store_stmts_finalize(&st->metrics_stmt, MT__COUNT);
}

int store_metrics_token_set(struct store *st, const char *hash, int64_t created,
                            const char *created_by, struct error *err)
{
    sqlite3_stmt *s = store_stmt_reset(st->metrics_stmt[MT_SET]);
    sqlite3_bind_text(s, 1, hash, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, created);
    sqlite3_bind_text(s, 3, created_by ? created_by : "", -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "metrics token");
        return STORE_ERR;
    }
    st->own_commits++;
    return STORE_OK;
}

int store_metrics_token_hash(struct store *st, char hash[65], struct error *err)
{
    sqlite3_stmt *s = store_stmt_reset(st->metrics_stmt[MT_GET]);
    int rc = sqlite3_step(s);
    int ret = STORE_OK;
    if (rc == SQLITE_ROW) {
        const char *h = (const char *)sqlite3_column_text(s, 0);
        if (h == NULL || str_copy(hash, 65, h) < 0)
            ret = STORE_NOT_FOUND;
    } else if (rc == SQLITE_DONE) {
        ret = STORE_NOT_FOUND;
    } else {
        store_db_error(st, err, "metrics token");
        ret = STORE_ERR;
    }
    sqlite3_reset(s);
    return ret;
}
