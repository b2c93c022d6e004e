/*
 * store_tls.c - outbound TLS policies per destination domain and the
 * MTA-STS policy cache (schema: the tls_policies and mta_sts_cache tables,
 * store.c).  The section "outbound TLS policies" of store.h is its
 * interface: the API's /api/v1/tls/policies routes write policies, the
 * snapshot (store_snapshot.c) carries them to the delivery loop, and the
 * MTA-STS fetcher (src/deliver/deliver_mtasts.c, on a worker thread) reads
 * and writes the cache.
 *
 * Statements live in this file's own table (tls_sql[]), prepared at
 * store_open and kept in st->tls_stmt.  Strings in returned structs belong
 * to the caller.
 */
#include <stdlib.h>
#include <string.h>
#include "store_priv.h"

enum tls_stmt {
    T_PUT,
    T_GET,
    T_DELETE,
    T_LIST,
    T_STS_GET,
    T_STS_PUT,
    T__COUNT
};

#define T_COLS "domain, mode, fallback, enforced, probe_time, probe_verdict, probe_reason," \
               " probe_details, override, override_by, updated, updated_by"

static const char *const tls_sql[T__COUNT] = {
    [T_PUT] = "INSERT OR REPLACE INTO tls_policies (" T_COLS ") VALUES"
              " (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    [T_GET] = "SELECT " T_COLS " FROM tls_policies WHERE domain = ?1",
    [T_DELETE] = "DELETE FROM tls_policies WHERE domain = ?1",
    [T_LIST] = "SELECT " T_COLS " FROM tls_policies ORDER BY domain",
    [T_STS_GET] = "SELECT domain, id, policy, fetched, expires FROM mta_sts_cache WHERE domain = ?1",
    [T_STS_PUT] = "INSERT OR REPLACE INTO mta_sts_cache (domain, id, policy, fetched, expires)"
                  " VALUES (?1, ?2, ?3, ?4, ?5)",
};

static const char *const mode_names[] = {
    [STORE_TLSP_OPPORTUNISTIC] = "opportunistic",
    [STORE_TLSP_ENCRYPT] = "encrypt",
    [STORE_TLSP_VERIFY] = "verify",
    [STORE_TLSP_DANE] = "dane",
    [STORE_TLSP_MTA_STS] = "mta-sts",
};

const char *store_tls_policy_mode_name(enum store_tls_policy_mode m)
{
    return (size_t)m < sizeof mode_names / sizeof mode_names[0] ? mode_names[m] : "?";
}

int store_tls_policy_mode_parse(const char *s, enum store_tls_policy_mode *out)
{
    for (size_t i = 0; s != NULL && i < sizeof mode_names / sizeof mode_names[0]; i++)
        if (strcmp(s, mode_names[i]) == 0) {
            *out = (enum store_tls_policy_mode)i;
            return 0;
        }
    return -1;
}

int store_tls_prepare(struct store *st, const char *path, struct error *err)
{
    return store_stmts_prepare(st, path, "tls", tls_sql, T__COUNT, &st->tls_stmt, err);
}

void store_tls_finalize(struct store *st)
{
    store_stmts_finalize(&st->tls_stmt, T__COUNT);
}

static sqlite3_stmt *stmt(struct store *st, enum tls_stmt id)
{
    return store_stmt_reset(st->tls_stmt[id]);
}

/* row - one policy from the current row of a T_COLS select */
static void row(sqlite3_stmt *s, struct store_tls_policy *p)
{
    memset(p, 0, sizeof *p);
    p->domain = store_col_strdup(s, 0);
    char *m = store_col_strdup(s, 1), *f = store_col_strdup(s, 2);
    if (store_tls_policy_mode_parse(m, &p->mode) < 0)
        p->mode = STORE_TLSP_OPPORTUNISTIC;
    if (store_tls_policy_mode_parse(f, &p->fallback) < 0)
        p->fallback = STORE_TLSP_OPPORTUNISTIC;
    free(m);
    free(f);
    p->enforced = sqlite3_column_int(s, 3) != 0;
    p->probe_time = sqlite3_column_int64(s, 4);
    p->probe_verdict = store_col_strdup(s, 5);
    p->probe_reason = store_col_strdup(s, 6);
    p->probe_details = store_col_strdup(s, 7);
    p->override = sqlite3_column_int(s, 8) != 0;
    p->override_by = store_col_strdup(s, 9);
    p->updated = sqlite3_column_int64(s, 10);
    p->updated_by = store_col_strdup(s, 11);
}

int store_tls_policy_put(struct store *st, const struct store_tls_policy *p, struct error *err)
{
    sqlite3_stmt *s = stmt(st, T_PUT);
    store_bind_text(s, 1, p->domain);
    store_bind_text(s, 2, store_tls_policy_mode_name(p->mode));
    store_bind_text(s, 3, store_tls_policy_mode_name(p->fallback));
    sqlite3_bind_int(s, 4, p->enforced ? 1 : 0);
    sqlite3_bind_int64(s, 5, p->probe_time);
    store_bind_text(s, 6, p->probe_verdict ? p->probe_verdict : "");
    store_bind_text(s, 7, p->probe_reason ? p->probe_reason : "");
    store_bind_text(s, 8, p->probe_details ? p->probe_details : "{}");
    sqlite3_bind_int(s, 9, p->override ? 1 : 0);
    store_bind_text(s, 10, p->override_by ? p->override_by : "");
    sqlite3_bind_int64(s, 11, p->updated);
    store_bind_text(s, 12, p->updated_by ? p->updated_by : "");
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "tls policy write");
        if ((rc & 0xff) == SQLITE_CONSTRAINT)
            (void)str_copy(err->field, sizeof err->field, "mode");
        return STORE_ERR;
    }
    st->own_commits++;
    return STORE_OK;
}

int store_tls_policy_get(struct store *st, const char *domain, struct store_tls_policy *out,
                         struct error *err)
{
    sqlite3_stmt *s = stmt(st, T_GET);
    store_bind_text(s, 1, domain);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        row(s, out);
        sqlite3_reset(s);
        return STORE_OK;
    }
    sqlite3_reset(s);
    if (rc == SQLITE_DONE) {
        error_set(err, "domain", "%.200s has no TLS policy", domain);
        return STORE_NOT_FOUND;
    }
    store_db_error(st, err, "tls policy read");
    return STORE_ERR;
}

int store_tls_policy_delete(struct store *st, const char *domain, struct error *err)
{
    sqlite3_stmt *s = stmt(st, T_DELETE);
    store_bind_text(s, 1, domain);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "tls policy delete");
        return STORE_ERR;
    }
    if (sqlite3_changes(st->db) == 0) {
        error_set(err, "domain", "%.200s has no TLS policy", domain);
        return STORE_NOT_FOUND;
    }
    st->own_commits++;
    return STORE_OK;
}

int store_tls_policy_list(struct store *st, struct store_tls_policy **out, size_t *n,
                          struct error *err)
{
    sqlite3_stmt *s = stmt(st, T_LIST);
    size_t cap = 0;
    int rc;
    *out = NULL;
    *n = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = xreallocarray(*out, cap, sizeof **out);
        }
        row(s, &(*out)[(*n)++]);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "tls policy list");
        store_tls_policies_free(*out, *n);
        *out = NULL;
        *n = 0;
        return STORE_ERR;
    }
    return STORE_OK;
}

void store_tls_policy_clear(struct store_tls_policy *p)
{
    if (p == NULL)
        return;
    free(p->domain);
    free(p->probe_verdict);
    free(p->probe_reason);
    free(p->probe_details);
    free(p->override_by);
    free(p->updated_by);
    memset(p, 0, sizeof *p);
}

void store_tls_policies_free(struct store_tls_policy *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_tls_policy_clear(&p[i]);
    free(p);
}

/* --- the MTA-STS cache --- */

int store_mta_sts_get(struct store *st, const char *domain, struct store_mta_sts *out,
                      struct error *err)
{
    sqlite3_stmt *s = stmt(st, T_STS_GET);
    store_bind_text(s, 1, domain);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        out->domain = store_col_strdup(s, 0);
        out->id = store_col_strdup(s, 1);
        out->policy = store_col_strdup(s, 2);
        out->fetched = sqlite3_column_int64(s, 3);
        out->expires = sqlite3_column_int64(s, 4);
        sqlite3_reset(s);
        return STORE_OK;
    }
    sqlite3_reset(s);
    if (rc == SQLITE_DONE) {
        error_set(err, "domain", "no cached MTA-STS policy for %.200s", domain);
        return STORE_NOT_FOUND;
    }
    store_db_error(st, err, "mta-sts cache read");
    return STORE_ERR;
}

int store_mta_sts_put(struct store *st, const struct store_mta_sts *e, struct error *err)
{
    sqlite3_stmt *s = stmt(st, T_STS_PUT);
    store_bind_text(s, 1, e->domain);
    store_bind_text(s, 2, e->id);
    store_bind_text(s, 3, e->policy);
    sqlite3_bind_int64(s, 4, e->fetched);
    sqlite3_bind_int64(s, 5, e->expires);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "mta-sts cache write");
        return STORE_ERR;
    }
    /* a cache write is not configuration: no own_commits, no snapshot reload */
    return STORE_OK;
}

void store_mta_sts_clear(struct store_mta_sts *e)
{
    free(e->domain);
    free(e->id);
    free(e->policy);
    memset(e, 0, sizeof *e);
}
