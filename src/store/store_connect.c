/*
 * store_connect.c - the organisation (one row) and Connect's task states in
 * SQLite (schema version 3, store.c).  The section "Connect: organisation
 * and task states" of store.h is its interface; src/connect and the API's
 * organisation routes are its callers.
 *
 * Statements live in this file's own table (connect_sql[]), prepared at
 * store_open by store_connect_prepare and kept in st->connect_stmt.
 *
 * The organisation's host and address lists are kept as JSON arrays of
 * strings in one column each: they are read and written whole, never
 * searched.  A task row is written whole (store_connect_task_put) except its
 * data column, which has its own pair of functions, so the engine persisting
 * a check result never overwrites task inputs written meanwhile.
 *
 * Ownership: strings in returned structs belong to the caller; free them
 * with the matching *_clear / *_free.
 */
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "store_priv.h"

enum connect_stmt {
    C_ORG_GET,
    C_ORG_SET,
    C_TASK_GET,
    C_TASK_PUT,
    C_TASK_LIST,
    C_TASK_DATA_GET,
    C_TASK_DATA_SET,
    C__COUNT
};

#define ORG_COLS "name, environment, contact_name, contact_email, contact_phone, public_hosts," \
                 " public_ips, probe_source, updated, updated_by"
#define TASK_COLS "id, state, changed, changed_by, last_check, last_outcome, last_message," \
                  " last_details, next_check, backoff, data"

static const char *const connect_sql[C__COUNT] = {
    [C_ORG_GET] = "SELECT " ORG_COLS " FROM organisation WHERE id = 1",
    [C_ORG_SET] =
        "INSERT INTO organisation (id, " ORG_COLS ") VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8,"
        " ?9, ?10) ON CONFLICT (id) DO UPDATE SET name = ?1, environment = ?2,"
        " contact_name = ?3, contact_email = ?4, contact_phone = ?5, public_hosts = ?6,"
        " public_ips = ?7, probe_source = ?8, updated = ?9, updated_by = ?10",
    [C_TASK_GET] = "SELECT " TASK_COLS " FROM connect_tasks WHERE id = ?1",
    [C_TASK_PUT] =
        "INSERT INTO connect_tasks (id, state, changed, changed_by, last_check, last_outcome,"
        " last_message, last_details, next_check, backoff) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,"
        " ?8, ?9, ?10) ON CONFLICT (id) DO UPDATE SET state = ?2, changed = ?3,"
        " changed_by = ?4, last_check = ?5, last_outcome = ?6, last_message = ?7,"
        " last_details = ?8, next_check = ?9, backoff = ?10",
    [C_TASK_LIST] = "SELECT " TASK_COLS " FROM connect_tasks ORDER BY id",
    [C_TASK_DATA_GET] = "SELECT data FROM connect_tasks WHERE id = ?1",
    [C_TASK_DATA_SET] =
        "INSERT INTO connect_tasks (id, state, changed, data) VALUES (?1, 'todo', ?3, ?2)"
        " ON CONFLICT (id) DO UPDATE SET data = ?2",
};

int store_connect_prepare(struct store *st, const char *path, struct error *err)
{
    return store_stmts_prepare(st, path, "connect", connect_sql, C__COUNT, &st->connect_stmt, err);
}

void store_connect_finalize(struct store *st)
{
    store_stmts_finalize(&st->connect_stmt, C__COUNT);
}

/* stmt - statement id, reset and unbound */
static sqlite3_stmt *stmt(struct store *st, enum connect_stmt id)
{
    return store_stmt_reset(st->connect_stmt[id]);
}

/* bind_time - 0 is stored as NULL ("never") */
static void bind_time(sqlite3_stmt *s, int i, int64_t v)
{
    if (v == 0)
        sqlite3_bind_null(s, i);
    else
        sqlite3_bind_int64(s, i, v);
}

static char *col_strdup_null(sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    return t != NULL ? xstrdup((const char *)t) : NULL;
}

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

/* --- the organisation --- */

/* strings_from_json - a JSON array of strings into a malloc'd vector; bad
 * elements (never written by us) are skipped */
static void strings_from_json(const char *text, char ***out, size_t *n)
{
    json_t *a = json_loads(text != NULL ? text : "[]", 0, NULL);
    *out = NULL;
    *n = 0;
    if (!json_is_array(a)) {
        json_decref(a);
        return;
    }
    *out = xcalloc(json_array_size(a) + 1, sizeof **out);
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v) {
        if (json_is_string(v))
            (*out)[(*n)++] = xstrdup(json_string_value(v));
    }
    json_decref(a);
}

static char *strings_to_json(char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    if (text == NULL)
        log_fatal("event=out_of_memory where=store_connect");
    return text;
}

static void strings_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

int store_organisation_get(struct store *st, struct store_organisation *out, struct error *err)
{
    sqlite3_stmt *s = stmt(st, C_ORG_GET);
    memset(out, 0, sizeof *out);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) {
        /* migration 3 inserts the row; an empty one reads as "never set" */
        sqlite3_reset(s);
        out->name = xstrdup("");
        out->environment = xstrdup("");
        out->contact_name = xstrdup("");
        out->contact_email = xstrdup("");
        out->contact_phone = xstrdup("");
        out->probe_source = xstrdup("");
        out->updated_by = xstrdup("");
        out->public_hosts = xcalloc(1, sizeof *out->public_hosts);
        out->public_ips = xcalloc(1, sizeof *out->public_ips);
        return STORE_OK;
    }
    if (rc != SQLITE_ROW) {
        store_db_error(st, err, "organisation get");
        sqlite3_reset(s);
        return STORE_ERR;
    }
    out->name = store_col_strdup(s, 0);
    out->environment = store_col_strdup(s, 1);
    out->contact_name = store_col_strdup(s, 2);
    out->contact_email = store_col_strdup(s, 3);
    out->contact_phone = store_col_strdup(s, 4);
    strings_from_json((const char *)sqlite3_column_text(s, 5), &out->public_hosts,
                      &out->n_public_hosts);
    strings_from_json((const char *)sqlite3_column_text(s, 6), &out->public_ips,
                      &out->n_public_ips);
    out->probe_source = store_col_strdup(s, 7);
    out->updated = sqlite3_column_int64(s, 8);
    out->updated_by = store_col_strdup(s, 9);
    sqlite3_reset(s);
    return STORE_OK;
}

int store_organisation_set(struct store *st, const struct store_organisation *o, const char *who,
                           struct error *err)
{
    char *hosts = strings_to_json(o->public_hosts, o->n_public_hosts);
    char *ips = strings_to_json(o->public_ips, o->n_public_ips);
    sqlite3_stmt *s = stmt(st, C_ORG_SET);
    store_bind_text(s, 1, o->name ? o->name : "");
    store_bind_text(s, 2, o->environment ? o->environment : "");
    store_bind_text(s, 3, o->contact_name ? o->contact_name : "");
    store_bind_text(s, 4, o->contact_email ? o->contact_email : "");
    store_bind_text(s, 5, o->contact_phone ? o->contact_phone : "");
    store_bind_text(s, 6, hosts);
    store_bind_text(s, 7, ips);
    store_bind_text(s, 8, o->probe_source ? o->probe_source : "");
    sqlite3_bind_int64(s, 9, now_s());
    store_bind_text(s, 10, who ? who : "");
    int rc = run(st, s, "organisation update", err);
    free(hosts);
    free(ips);
    if (rc == STORE_OK)
        log_info("event=organisation_updated by=%s", who ? who : "-");
    return rc;
}

void store_organisation_clear(struct store_organisation *o)
{
    if (o == NULL)
        return;
    free(o->name);
    free(o->environment);
    free(o->contact_name);
    free(o->contact_email);
    free(o->contact_phone);
    strings_free(o->public_hosts, o->n_public_hosts);
    strings_free(o->public_ips, o->n_public_ips);
    free(o->probe_source);
    free(o->updated_by);
    memset(o, 0, sizeof *o);
}

/* --- task states --- */

static void task_from_row(sqlite3_stmt *s, struct store_connect_task *t)
{
    t->id = store_col_strdup(s, 0);
    t->state = store_col_strdup(s, 1);
    t->changed = sqlite3_column_int64(s, 2);
    t->changed_by = store_col_strdup(s, 3);
    t->last_check = sqlite3_column_int64(s, 4);
    t->last_outcome = col_strdup_null(s, 5);
    t->last_message = col_strdup_null(s, 6);
    t->last_details = col_strdup_null(s, 7);
    t->next_check = sqlite3_column_int64(s, 8);
    t->backoff = sqlite3_column_int64(s, 9);
    t->data = store_col_strdup(s, 10);
}

int store_connect_task_get(struct store *st, const char *id, struct store_connect_task *out,
                           struct error *err)
{
    sqlite3_stmt *s = stmt(st, C_TASK_GET);
    memset(out, 0, sizeof *out);
    store_bind_text(s, 1, id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        task_from_row(s, out);
        sqlite3_reset(s);
        return STORE_OK;
    }
    sqlite3_reset(s);
    if (rc == SQLITE_DONE) {
        error_set(err, "task", "task %s has no recorded state", id);
        return STORE_NOT_FOUND;
    }
    store_db_error(st, err, "connect task get");
    return STORE_ERR;
}

int store_connect_task_put(struct store *st, const struct store_connect_task *t, struct error *err)
{
    sqlite3_stmt *s = stmt(st, C_TASK_PUT);
    store_bind_text(s, 1, t->id);
    store_bind_text(s, 2, t->state);
    sqlite3_bind_int64(s, 3, t->changed);
    store_bind_text(s, 4, t->changed_by ? t->changed_by : "");
    bind_time(s, 5, t->last_check);
    store_bind_text(s, 6, t->last_outcome);
    store_bind_text(s, 7, t->last_message);
    store_bind_text(s, 8, t->last_details);
    bind_time(s, 9, t->next_check);
    sqlite3_bind_int64(s, 10, t->backoff);
    return run(st, s, "connect task put", err);
}

int store_connect_task_list(struct store *st, struct store_connect_task **out, size_t *n,
                            struct error *err)
{
    sqlite3_stmt *s = stmt(st, C_TASK_LIST);
    size_t cap = 16, k = 0;
    struct store_connect_task *v = xcalloc(cap, sizeof *v);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (k == cap) {
            v = xreallocarray(v, cap * 2, sizeof *v);
            memset(v + cap, 0, cap * sizeof *v);
            cap *= 2;
        }
        task_from_row(s, &v[k++]);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "connect task list");
        store_connect_tasks_free(v, k);
        return STORE_ERR;
    }
    *out = v;
    *n = k;
    return STORE_OK;
}

int store_connect_task_data_get(struct store *st, const char *id, char **json_text,
                                struct error *err)
{
    sqlite3_stmt *s = stmt(st, C_TASK_DATA_GET);
    store_bind_text(s, 1, id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        *json_text = store_col_strdup(s, 0);
        sqlite3_reset(s);
        return STORE_OK;
    }
    sqlite3_reset(s);
    if (rc == SQLITE_DONE) {
        *json_text = xstrdup("{}");
        return STORE_OK;
    }
    store_db_error(st, err, "connect task data get");
    return STORE_ERR;
}

int store_connect_task_data_set(struct store *st, const char *id, const char *json_text,
                                struct error *err)
{
    sqlite3_stmt *s = stmt(st, C_TASK_DATA_SET);
    store_bind_text(s, 1, id);
    store_bind_text(s, 2, json_text ? json_text : "{}");
    sqlite3_bind_int64(s, 3, now_s());
    return run(st, s, "connect task data set", err);
}

void store_connect_task_clear(struct store_connect_task *t)
{
    if (t == NULL)
        return;
    free(t->id);
    free(t->state);
    free(t->changed_by);
    free(t->last_outcome);
    free(t->last_message);
    free(t->last_details);
    free(t->data);
    memset(t, 0, sizeof *t);
}

void store_connect_tasks_free(struct store_connect_task *t, size_t n)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        store_connect_task_clear(&t[i]);
    free(t);
}
