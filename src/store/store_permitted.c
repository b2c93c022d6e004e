/*
 * store_permitted.c - permitted senders and greylist triplets in SQLite
 * (schema version 10, store.c).  Its interface is the section "permitted
 * senders and greylisting" of store.h; callers are the API
 * (api_permitted.c), the reload thread's permitted index
 * (policy/permitted.c), auto-allow and greylist persistence on the worker
 * pool (policy/screen_writer.c) and Connect's permitted_senders task.
 *
 * Statements live in this file's own table (permitted_sql[]), prepared at
 * store_open.  Values are checked and lower-cased here, so every caller
 * gets the same errors with the same field names.
 *
 * Ownership: strings in returned rows belong to the caller
 * (store_permitted_free / store_permitted_clear).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "store_priv.h"

enum permitted_stmt {
    P_ADD,
    P_LIST,
    P_DEL_ID,
    P_DEL_VALUE,
    P_AUTO_TOUCH,
    P_ALL,
    P_EXPIRE,
    P_COUNT_ORG,
    P_COUNT_AUTO,
    P_GREY_PUT,
    P_GREY_ALL,
    P_GREY_PRUNE,
    P_GENERATION,
    P__COUNT
};

#define ROW_COLS "id, user, value, source, comment, created, created_by, last_seen"

static const char *const permitted_sql[P__COUNT] = {
    [P_ADD] = "INSERT INTO permitted_senders (user, value, source, comment, created, created_by,"
              " last_seen) VALUES (?1, ?2, 'manual', ?3, ?4, ?5, ?4)",
    [P_LIST] = "SELECT " ROW_COLS " FROM permitted_senders WHERE user = ?1 AND id > ?2"
               " AND (source = 'manual' OR last_seen >= ?4) ORDER BY id LIMIT ?3",
    [P_DEL_ID] = "DELETE FROM permitted_senders WHERE user = ?1 AND id = ?2",
    [P_DEL_VALUE] = "DELETE FROM permitted_senders WHERE user = ?1 AND value = ?2",
    [P_AUTO_TOUCH] = "INSERT INTO permitted_senders (user, value, source, created, created_by, last_seen)"
                     " VALUES (?1, ?2, 'auto', ?3, 'auto-allow', ?3)"
                     " ON CONFLICT (user, value) DO UPDATE SET last_seen = MAX(last_seen, ?3)",
    [P_ALL] = "SELECT " ROW_COLS " FROM permitted_senders"
              " WHERE source = 'manual' OR last_seen >= ?1",
    [P_EXPIRE] = "DELETE FROM permitted_senders WHERE source = 'auto' AND last_seen < ?1",
    [P_COUNT_ORG] = "SELECT COUNT(*) FROM permitted_senders WHERE user = ''",
    [P_COUNT_AUTO] = "SELECT COUNT(*) FROM permitted_senders WHERE source = 'auto' AND last_seen >= ?1",
    [P_GREY_PUT] = "INSERT OR REPLACE INTO greylist (triplet, first_seen, last_seen, passed)"
                   " VALUES (?1, ?2, ?3, ?4)",
    [P_GREY_ALL] = "SELECT triplet, first_seen, last_seen, passed FROM greylist ORDER BY last_seen",
    [P_GREY_PRUNE] = "DELETE FROM greylist WHERE last_seen < ?1",
    [P_GENERATION] = "SELECT generation FROM permitted_status WHERE id = 1",
};

int store_permitted_prepare(struct store *st, const char *path, struct error *err)
{
    return store_stmts_prepare(st, path, "permitted", permitted_sql, P__COUNT, &st->permitted_stmt,
                               err);
}

void store_permitted_finalize(struct store *st)
{
    store_stmts_finalize(&st->permitted_stmt, P__COUNT);
}

static sqlite3_stmt *stmt(struct store *st, enum permitted_stmt id)
{
    return store_stmt_reset(st->permitted_stmt[id]);
}

/* --- values --- */

/* local_char_ok - an unquoted local part (RFC 5322 dot-atom, plus UTF-8) */
static bool local_char_ok(unsigned char c)
{
    if (c >= 0x80 || isalnum(c))
        return true;
    return strchr("!#$%&'*+-/=?^_`{|}~.", c) != NULL;
}

int store_permitted_normalise(const char *value, const char *field, char *out, size_t cap,
                              struct error *err)
{
    if (value == NULL || value[0] == '\0') {
        error_set(err, field, "%s is required: an address (name@example.com) or a domain", field);
        return -1;
    }
    size_t len = strnlen(value, STORE_PERMITTED_VALUE_MAX + 1);
    if (len > STORE_PERMITTED_VALUE_MAX || len >= cap) {
        error_set(err, field, "%s is longer than %d octets", field, STORE_PERMITTED_VALUE_MAX);
        return -1;
    }
    for (size_t i = 0; i <= len; i++)
        out[i] = (char)tolower((unsigned char)value[i]);
    const char *at = strrchr(out, '@');
    const char *domain = at ? at + 1 : out;
    if (at != NULL) {
        if (at == out) {
            error_set(err, field, "%s \"%.100s\": the local part before \"@\" is empty", field, value);
            return -1;
        }
        for (const char *p = out; p < at; p++)
            if (!local_char_ok((unsigned char)*p)) {
                error_set(err, field, "%s \"%.100s\": character not allowed in an address", field,
                          value);
                return -1;
            }
        if (!str_valid_utf8(out, (size_t)(at - out))) {
            error_set(err, field, "%s \"%.100s\" is not valid UTF-8", field, value);
            return -1;
        }
    }
    if (!domain_name_valid(domain)) {
        error_set(err, field, "%s \"%.100s\": \"%.100s\" is not a valid domain name", field, value,
                  domain);
        return -1;
    }
    return 0;
}

/* user_key - "" for the organisation, else the user address lower-cased */
static int user_key(const char *user, char *out, size_t cap, struct error *err)
{
    if (user == NULL || user[0] == '\0') {
        out[0] = '\0';
        return 0;
    }
    if (store_permitted_normalise(user, "address", out, cap, err) < 0)
        return -1;
    if (strchr(out, '@') == NULL) {
        error_set(err, "address", "address \"%.100s\" is not a user address (name@domain)", user);
        return -1;
    }
    return 0;
}

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

/* --- permitted senders --- */

int store_permitted_add(struct store *st, const char *user, const char *value,
                        const char *comment, const char *by, int64_t *id_out, struct error *err)
{
    char u[STORE_PERMITTED_VALUE_MAX + 1], v[STORE_PERMITTED_VALUE_MAX + 1];
    if (user_key(user, u, sizeof u, err) < 0 || store_permitted_normalise(value, "value", v, sizeof v, err) < 0 ||
        comment_check(comment, err) < 0)
        return STORE_ERR;
    sqlite3_stmt *s = stmt(st, P_ADD);
    sqlite3_bind_text(s, 1, u, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, v, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, comment ? comment : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)time(NULL));
    sqlite3_bind_text(s, 5, by ? by : "", -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if ((rc & 0xff) == SQLITE_CONSTRAINT) {
        error_set(err, "value", "permitted sender %s is already listed", v);
        return STORE_CONFLICT;
    }
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "permitted sender insert");
        return STORE_ERR;
    }
    st->own_commits++;
    if (id_out)
        *id_out = sqlite3_last_insert_rowid(st->db);
    return STORE_OK;
}

static void row_read(sqlite3_stmt *s, struct store_permitted *e)
{
    e->id = sqlite3_column_int64(s, 0);
    e->user = store_col_strdup(s, 1);
    e->value = store_col_strdup(s, 2);
    e->source = store_col_strdup(s, 3);
    e->comment = store_col_strdup(s, 4);
    e->created = sqlite3_column_int64(s, 5);
    e->created_by = store_col_strdup(s, 6);
    e->last_seen = sqlite3_column_int64(s, 7);
}

int store_permitted_list(struct store *st, const char *user, int64_t after, size_t limit,
                         int64_t expired_before, struct store_permitted **out, size_t *n,
                         struct error *err)
{
    char u[STORE_PERMITTED_VALUE_MAX + 1];
    *out = NULL;
    *n = 0;
    if (user_key(user, u, sizeof u, err) < 0)
        return STORE_ERR;
    sqlite3_stmt *s = stmt(st, P_LIST);
    sqlite3_bind_text(s, 1, u, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, after);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)limit);
    sqlite3_bind_int64(s, 4, expired_before);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = xreallocarray(*out, cap, sizeof **out);
        }
        row_read(s, &(*out)[(*n)++]);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_permitted_free(*out, *n);
        *out = NULL;
        *n = 0;
        store_db_error(st, err, "permitted sender list");
        return STORE_ERR;
    }
    return STORE_OK;
}

/* step_delete - a bound DELETE: STORE_NOT_FOUND when nothing went */
static int step_delete(struct store *st, sqlite3_stmt *s, const char *key, struct error *err)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "permitted sender delete");
        return STORE_ERR;
    }
    if (sqlite3_changes(st->db) == 0) {
        error_set(err, "id", "no such permitted sender: %s", key);
        return STORE_NOT_FOUND;
    }
    st->own_commits++;
    return STORE_OK;
}

int store_permitted_delete(struct store *st, const char *user, int64_t id, struct error *err)
{
    char u[STORE_PERMITTED_VALUE_MAX + 1], key[32];
    if (user_key(user, u, sizeof u, err) < 0)
        return STORE_ERR;
    sqlite3_stmt *s = stmt(st, P_DEL_ID);
    sqlite3_bind_text(s, 1, u, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, id);
    xsnprintf(key, sizeof key, "%lld", (long long)id);
    return step_delete(st, s, key, err);
}

int store_permitted_delete_value(struct store *st, const char *user, const char *value,
                                 struct error *err)
{
    char u[STORE_PERMITTED_VALUE_MAX + 1], v[STORE_PERMITTED_VALUE_MAX + 1];
    if (user_key(user, u, sizeof u, err) < 0 || store_permitted_normalise(value, "value", v, sizeof v, err) < 0)
        return STORE_ERR;
    sqlite3_stmt *s = stmt(st, P_DEL_VALUE);
    sqlite3_bind_text(s, 1, u, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, v, -1, SQLITE_STATIC);
    int rc = step_delete(st, s, v, err);
    if (rc == STORE_NOT_FOUND)
        error_set(err, "value", "no such permitted sender: %s", v);
    return rc;
}

int store_permitted_auto_touch(struct store *st, const char *user, const char *value, int64_t now,
                               struct error *err)
{
    char u[STORE_PERMITTED_VALUE_MAX + 1], v[STORE_PERMITTED_VALUE_MAX + 1];
    if (user_key(user, u, sizeof u, err) < 0 || u[0] == '\0' ||
        store_permitted_normalise(value, "value", v, sizeof v, err) < 0)
        return STORE_ERR;
    sqlite3_stmt *s = stmt(st, P_AUTO_TOUCH);
    sqlite3_bind_text(s, 1, u, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, v, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, now);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "auto-allow");
        return STORE_ERR;
    }
    st->own_commits++;
    return STORE_OK;
}

int store_permitted_each(struct store *st, int64_t expired_before,
                         int (*fn)(void *arg, const struct store_permitted *e), void *arg,
                         struct error *err)
{
    sqlite3_stmt *s = stmt(st, P_EXPIRE);
    sqlite3_bind_int64(s, 1, expired_before);
    if (sqlite3_step(s) != SQLITE_DONE) {
        sqlite3_reset(s);
        store_db_error(st, err, "auto-allow expiry");
        return STORE_ERR;
    }
    sqlite3_reset(s);
    if (sqlite3_changes(st->db) > 0)
        st->own_commits++;
    s = stmt(st, P_ALL);
    sqlite3_bind_int64(s, 1, expired_before);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct store_permitted e;
        row_read(s, &e);
        int r = fn(arg, &e);
        store_permitted_clear(&e);
        if (r != 0) {
            sqlite3_reset(s);
            if (r > 0)
                return STORE_OK;       /* the caller has what it wanted */
            error_set(err, NULL, "permitted senders: loading stopped");
            return STORE_ERR;
        }
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "permitted sender load");
        return STORE_ERR;
    }
    return STORE_OK;
}

static int count_one(struct store *st, sqlite3_stmt *s, int64_t *out, struct error *err)
{
    int rc = sqlite3_step(s);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    if (rc != SQLITE_ROW) {
        store_db_error(st, err, "permitted sender count");
        return STORE_ERR;
    }
    return STORE_OK;
}

int store_permitted_count(struct store *st, int64_t expired_before, int64_t *org, int64_t *autos,
                          struct error *err)
{
    if (count_one(st, stmt(st, P_COUNT_ORG), org, err) < 0)
        return STORE_ERR;
    sqlite3_stmt *s = stmt(st, P_COUNT_AUTO);
    sqlite3_bind_int64(s, 1, expired_before);
    return count_one(st, s, autos, err);
}

int store_permitted_generation(struct store *st, int64_t *gen, struct error *err)
{
    return count_one(st, stmt(st, P_GENERATION), gen, err);
}

void store_permitted_clear(struct store_permitted *e)
{
    free(e->user);
    free(e->value);
    free(e->source);
    free(e->comment);
    free(e->created_by);
    memset(e, 0, sizeof *e);
}

void store_permitted_free(struct store_permitted *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_permitted_clear(&v[i]);
    free(v);
}

int store_permitted_batch(struct store *st, bool commit, struct error *err)
{
    const char *sql = commit ? "COMMIT" : "BEGIN IMMEDIATE";
    if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        store_db_error(st, err, commit ? "permitted import commit" : "permitted import begin");
        if (commit)
            sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        return STORE_ERR;
    }
    return STORE_OK;
}

/* --- greylist triplets --- */

int store_greylist_put(struct store *st, const struct store_greylist *v, size_t n,
                       struct error *err)
{
    if (n == 0)
        return STORE_OK;
    if (sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        store_db_error(st, err, "greylist begin");
        return STORE_ERR;
    }
    for (size_t i = 0; i < n; i++) {
        sqlite3_stmt *s = stmt(st, P_GREY_PUT);
        sqlite3_bind_text(s, 1, v[i].triplet, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, v[i].first_seen);
        sqlite3_bind_int64(s, 3, v[i].last_seen);
        sqlite3_bind_int(s, 4, v[i].passed ? 1 : 0);
        int rc = sqlite3_step(s);
        sqlite3_reset(s);
        if (rc != SQLITE_DONE) {
            store_db_error(st, err, "greylist put");
            sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
            return STORE_ERR;
        }
    }
    if (sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        store_db_error(st, err, "greylist commit");
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
        return STORE_ERR;
    }
    st->own_commits++;
    return STORE_OK;
}

int store_greylist_each(struct store *st, int64_t since,
                        int (*fn)(void *arg, const struct store_greylist *g), void *arg,
                        struct error *err)
{
    sqlite3_stmt *s = stmt(st, P_GREY_PRUNE);
    sqlite3_bind_int64(s, 1, since);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "greylist prune");
        return STORE_ERR;
    }
    s = stmt(st, P_GREY_ALL);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        struct store_greylist g = {
            .triplet = (char *)sqlite3_column_text(s, 0),
            .first_seen = sqlite3_column_int64(s, 1),
            .last_seen = sqlite3_column_int64(s, 2),
            .passed = sqlite3_column_int(s, 3) != 0,
        };
        if (g.triplet == NULL)
            continue;
        if (fn(arg, &g) < 0)
            break;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        store_db_error(st, err, "greylist load");
        return STORE_ERR;
    }
    return STORE_OK;
}
