/*
 * store_directory.c - users, groups, their addresses and group members, the
 * per-domain recipient validation settings and the directory's sync status
 * in SQLite (schema version 4, store.c).  The section "directory: users,
 * groups, addresses, recipient validation" of store.h is its interface;
 * src/directory is its caller.
 *
 * One address, one owner: dir_addresses has the address as its primary key,
 * so the database itself refuses a second owner; a refusal is turned into
 * STORE_CONFLICT naming the field and the owner.  Every change is wrapped in
 * a savepoint so it is atomic alone and nests inside a caller's transaction
 * (store_dir_begin: a sync or a CSV batch).
 *
 * Statements live in this file's own table (dir_sql[]), prepared at
 * store_open by store_directory_prepare and kept in st->dir_stmt.
 */
#include <stdlib.h>
#include <string.h>
#include "store_priv.h"

enum dir_stmt {
    D_BEGIN_READ,
    D_BEGIN_WRITE,
    D_COMMIT,
    D_ROLLBACK,
    D_SAVEPOINT,
    D_RELEASE,
    D_ROLLBACK_TO,
    D_OWNER,
    D_ENTRY_GET,
    D_ENTRY_LIST_FROM,
    D_ENTRY_LIST_AFTER,
    D_ALIASES,
    D_MEMBERS,
    D_ENTRY_INSERT,
    D_ENTRY_UPDATE,
    D_ENTRY_DELETE,
    D_ADDR_INSERT,
    D_ADDR_CLEAR,
    D_MEMBERS_CLEAR,
    D_MEMBER_INSERT,
    D_REFS,
    D_SYNCED_SET,
    D_SYNCED_GET,
    D_COUNT_ALL,
    D_COUNT_DOMAIN,
    D_ADDR_ALL,
    D_RV_UPSERT,
    D_RV_DELETE,
    D_RV_LIST,
    D_DOMAIN_EXISTS,
    D_GEN_BUMP,
    D_GEN_GET,
    D_SAMPLE,
    D__COUNT
};

#define ENTRY_COLS "e.id, e.kind, e.source, e.external_id, e.primary_addr, e.name, e.disabled," \
                   " e.password_hash, e.fingerprint, e.created, e.updated"

static const char *const dir_sql[D__COUNT] = {
    [D_BEGIN_READ] = "BEGIN",
    [D_BEGIN_WRITE] = "BEGIN IMMEDIATE",
    [D_COMMIT] = "COMMIT",
    [D_ROLLBACK] = "ROLLBACK",
    [D_SAVEPOINT] = "SAVEPOINT dir_change",
    [D_RELEASE] = "RELEASE dir_change",
    [D_ROLLBACK_TO] = "ROLLBACK TO dir_change",
    [D_OWNER] =
        "SELECT e.id, e.source FROM dir_addresses a JOIN dir_entries e ON e.id = a.entry_id"
        " WHERE a.address = ?1",
    [D_ENTRY_GET] =
        "SELECT " ENTRY_COLS " FROM dir_addresses a JOIN dir_entries e ON e.id = a.entry_id"
        " WHERE a.address = ?1",
    [D_ENTRY_LIST_FROM] =
        "SELECT " ENTRY_COLS " FROM dir_entries e WHERE e.kind = ?1"
        " ORDER BY e.primary_addr LIMIT ?2",
    [D_ENTRY_LIST_AFTER] =
        "SELECT " ENTRY_COLS " FROM dir_entries e WHERE e.kind = ?1 AND e.primary_addr > ?3"
        " ORDER BY e.primary_addr LIMIT ?2",
    [D_ALIASES] =
        "SELECT address FROM dir_addresses WHERE entry_id = ?1 AND is_primary = 0"
        " ORDER BY address",
    [D_MEMBERS] =
        "SELECT e.primary_addr FROM dir_members m JOIN dir_entries e ON e.id = m.member_id"
        " WHERE m.group_id = ?1 ORDER BY e.primary_addr",
    [D_ENTRY_INSERT] =
        "INSERT INTO dir_entries (kind, source, external_id, primary_addr, name, disabled,"
        " password_hash, fingerprint, created, updated)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
    [D_ENTRY_UPDATE] =
        "UPDATE dir_entries SET primary_addr = ?2, name = ?3, disabled = ?4, password_hash = ?5,"
        " fingerprint = ?6, updated = ?7 WHERE id = ?1",
    [D_ENTRY_DELETE] = "DELETE FROM dir_entries WHERE id = ?1",
    [D_ADDR_INSERT] = "INSERT INTO dir_addresses (address, entry_id, is_primary) VALUES (?1, ?2, ?3)",
    [D_ADDR_CLEAR] = "DELETE FROM dir_addresses WHERE entry_id = ?1",
    [D_MEMBERS_CLEAR] = "DELETE FROM dir_members WHERE group_id = ?1",
    [D_MEMBER_INSERT] =
        "INSERT OR IGNORE INTO dir_members (group_id, member_id)"
        " SELECT ?1, entry_id FROM dir_addresses WHERE address = ?2",
    [D_REFS] =
        "SELECT id, external_id, fingerprint, kind FROM dir_entries WHERE source = 'directory'",
    [D_SYNCED_SET] = "UPDATE dir_status SET synced_at = ?1 WHERE id = 1",
    [D_SYNCED_GET] = "SELECT synced_at FROM dir_status WHERE id = 1",
    [D_COUNT_ALL] =
        "SELECT count(*) FROM dir_entries WHERE kind = ?1 AND (?2 < 0 OR source = ?3)",
    [D_COUNT_DOMAIN] =
        "SELECT count(*) FROM dir_entries WHERE kind = ?1 AND (?2 < 0 OR source = ?3)"
        " AND (substr(primary_addr, -length(?4) - 1) = '@' || ?4"
        " OR substr(primary_addr, -length(?4) - 1) = '.' || ?4)",
    [D_ADDR_ALL] =
        "SELECT a.address, e.kind, e.source, e.disabled FROM dir_addresses a"
        " JOIN dir_entries e ON e.id = a.entry_id",
    [D_RV_UPSERT] =
        "INSERT INTO rv_domains (domain, mode, unreachable, updated) VALUES (?1, ?2, ?3, ?4)"
        " ON CONFLICT (domain) DO UPDATE SET mode = ?2, unreachable = ?3, updated = ?4",
    [D_RV_DELETE] = "DELETE FROM rv_domains WHERE domain = ?1",
    [D_RV_LIST] = "SELECT domain, mode, unreachable, updated FROM rv_domains ORDER BY domain",
    [D_DOMAIN_EXISTS] = "SELECT 1 FROM domains WHERE name = ?1",
    [D_GEN_BUMP] = "UPDATE dir_status SET generation = generation + 1 WHERE id = 1",
    [D_GEN_GET] = "SELECT generation FROM dir_status WHERE id = 1",
    [D_SAMPLE] =
        "SELECT primary_addr FROM dir_entries WHERE kind = 'user' AND disabled = 0"
        " AND (?2 < 0 OR source = ?3) AND substr(primary_addr, -length(?1) - 1) = '@' || ?1"
        " ORDER BY primary_addr LIMIT 1",
};

int store_directory_prepare(struct store *st, const char *path, struct error *err)
{
    return store_stmts_prepare(st, path, "directory", dir_sql, D__COUNT, &st->dir_stmt, err);
}

void store_directory_finalize(struct store *st)
{
    store_stmts_finalize(&st->dir_stmt, D__COUNT);
}

/* stmt - statement id, reset and unbound */
static sqlite3_stmt *stmt(struct store *st, enum dir_stmt id)
{
    return store_stmt_reset(st->dir_stmt[id]);
}

static char *col_dup(sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    return t != NULL ? xstrdup((const char *)t) : NULL;
}

/* step_done - run a statement that returns no rows; the SQLite result code */
static int step_done(sqlite3_stmt *s)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    return rc;
}

static int64_t now_s(void)
{
    return (int64_t)(time_wall_ms() / 1000);
}

static const char *const kind_names[] = { "user", "group" };
static const char *const source_names[] = { "directory", "manual" };

const char *store_dir_kind_name(enum store_dir_kind k)
{
    return (unsigned)k <= STORE_DIR_GROUP ? kind_names[k] : "unknown";
}

const char *store_dir_source_name(enum store_dir_source s)
{
    return (unsigned)s <= STORE_DIR_MANUAL ? source_names[s] : "unknown";
}

/* --- transactions --- */

/* bump - the directory changed (store_dir_generation); inside the change's
 * own savepoint or transaction, so it commits or rolls back with it */
static int bump(struct store *st, struct error *err)
{
    if (step_done(stmt(st, D_GEN_BUMP)) != SQLITE_DONE) {
        store_db_error(st, err, "directory generation");
        return STORE_ERR;
    }
    return STORE_OK;
}

static int simple(struct store *st, enum dir_stmt id, const char *what, struct error *err)
{
    if (step_done(stmt(st, id)) != SQLITE_DONE) {
        store_db_error(st, err, what);
        return STORE_ERR;
    }
    return STORE_OK;
}

int store_dir_begin(struct store *st, bool write, struct error *err)
{
    return simple(st, write ? D_BEGIN_WRITE : D_BEGIN_READ, "directory transaction", err);
}

int store_dir_commit(struct store *st, struct error *err)
{
    if (simple(st, D_COMMIT, "directory commit", err) < 0) {
        store_dir_rollback(st);
        return STORE_ERR;
    }
    st->own_commits++;
    return STORE_OK;
}

void store_dir_rollback(struct store *st)
{
    if (!sqlite3_get_autocommit(st->db))
        (void)step_done(stmt(st, D_ROLLBACK));
}

static void undo(struct store *st)
{
    (void)step_done(stmt(st, D_ROLLBACK_TO));
    (void)step_done(stmt(st, D_RELEASE));
}

/* savepoint / release / undo - every change below is atomic on its own */
static int savepoint(struct store *st, struct error *err)
{
    return simple(st, D_SAVEPOINT, "directory savepoint", err);
}

static int release(struct store *st, struct error *err)
{
    if (bump(st, err) < 0) {
        undo(st);
        return STORE_ERR;
    }
    if (simple(st, D_RELEASE, "directory change", err) < 0)
        return STORE_ERR;
    st->own_commits++;
    return STORE_OK;
}


/* --- reading --- */

static void strv_push(char ***v, size_t *n, char *s)
{
    *v = xreallocarray(*v, *n + 2, sizeof **v);
    (*v)[(*n)++] = s;
    (*v)[*n] = NULL;
}

/* column_strings - every row's column 0 of statement id bound to ?1 = key */
static int column_strings(struct store *st, enum dir_stmt id, int64_t key, char ***out, size_t *n,
                          struct error *err)
{
    sqlite3_stmt *s = stmt(st, id);
    int rc;
    sqlite3_bind_int64(s, 1, key);
    *out = xcalloc(1, sizeof **out);
    *n = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        strv_push(out, n, col_dup(s, 0));
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "directory read");
        return STORE_ERR;
    }
    return STORE_OK;
}

/* entry_from_row - the ENTRY_COLS of a row */
static void entry_from_row(sqlite3_stmt *s, struct store_dir_entry *e)
{
    memset(e, 0, sizeof *e);
    e->id = sqlite3_column_int64(s, 0);
    const char *k = (const char *)sqlite3_column_text(s, 1);
    e->kind = k != NULL && strcmp(k, "group") == 0 ? STORE_DIR_GROUP : STORE_DIR_USER;
    const char *src = (const char *)sqlite3_column_text(s, 2);
    e->source = src != NULL && strcmp(src, "manual") == 0 ? STORE_DIR_MANUAL : STORE_DIR_DIRECTORY;
    e->external_id = col_dup(s, 3);
    e->primary = col_dup(s, 4);
    e->name = col_dup(s, 5);
    if (e->name == NULL)
        e->name = xstrdup("");
    e->disabled = sqlite3_column_int(s, 6) != 0;
    e->password_hash = col_dup(s, 7);
    e->fingerprint = col_dup(s, 8);
    e->created = sqlite3_column_int64(s, 9);
    e->updated = sqlite3_column_int64(s, 10);
}

/* entry_details - aliases and members of a read entry */
static int entry_details(struct store *st, struct store_dir_entry *e, struct error *err)
{
    if (column_strings(st, D_ALIASES, e->id, &e->aliases, &e->n_aliases, err) < 0)
        return STORE_ERR;
    if (e->kind == STORE_DIR_GROUP)
        return column_strings(st, D_MEMBERS, e->id, &e->members, &e->n_members, err);
    e->members = xcalloc(1, sizeof *e->members);
    return STORE_OK;
}

int store_dir_get(struct store *st, const char *address, struct store_dir_entry *out,
                  struct error *err)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *s = stmt(st, D_ENTRY_GET);
    store_bind_text(s, 1, address);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        entry_from_row(s, out);
    sqlite3_reset(s);
    if (rc == SQLITE_DONE) {
        error_set(err, "address", "no user or group has the address %.200s", address);
        return STORE_NOT_FOUND;
    }
    if (rc != SQLITE_ROW) {
        store_db_error(st, err, "directory get");
        return STORE_ERR;
    }
    if (entry_details(st, out, err) < 0) {
        store_dir_entry_clear(out);
        return STORE_ERR;
    }
    return STORE_OK;
}

int store_dir_list(struct store *st, enum store_dir_kind kind, const char *after, size_t limit,
                   struct store_dir_entry **out, size_t *n, struct error *err)
{
    struct store_dir_entry *v = NULL;
    size_t count = 0;
    int rc;

    sqlite3_stmt *s = stmt(st, after != NULL ? D_ENTRY_LIST_AFTER : D_ENTRY_LIST_FROM);
    sqlite3_bind_text(s, 1, kind_names[kind == STORE_DIR_GROUP], -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)limit);
    if (after != NULL)
        store_bind_text(s, 3, after);
    if (limit > 0)
        v = xcalloc(limit, sizeof *v);
    while (count < limit && (rc = sqlite3_step(s)) == SQLITE_ROW)
        entry_from_row(s, &v[count++]);
    if (count == limit)
        rc = SQLITE_DONE;
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "directory list");
        store_dir_entries_free(v, count);
        return STORE_ERR;
    }
    for (size_t i = 0; i < count; i++) {
        if (entry_details(st, &v[i], err) < 0) {
            store_dir_entries_free(v, count);
            return STORE_ERR;
        }
    }
    *out = v;
    *n = count;
    return STORE_OK;
}

int store_dir_owner(struct store *st, const char *address, int64_t *id,
                    enum store_dir_source *source, struct error *err)
{
    sqlite3_stmt *s = stmt(st, D_OWNER);
    store_bind_text(s, 1, address);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        if (id != NULL)
            *id = sqlite3_column_int64(s, 0);
        if (source != NULL) {
            const char *src = (const char *)sqlite3_column_text(s, 1);
            *source = src != NULL && strcmp(src, "manual") == 0 ? STORE_DIR_MANUAL
                                                                 : STORE_DIR_DIRECTORY;
        }
    }
    sqlite3_reset(s);
    if (rc == SQLITE_ROW)
        return STORE_OK;
    if (rc == SQLITE_DONE) {
        error_set(err, "address", "no user or group has the address %.200s", address);
        return STORE_NOT_FOUND;
    }
    store_db_error(st, err, "directory owner");
    return STORE_ERR;
}

/* --- changes --- */

/* conflict - err for an address that already has an owner */
static void conflict(struct store *st, const char *field, const char *address, struct error *err)
{
    struct store_dir_entry owner;
    sqlite3_stmt *s = stmt(st, D_ENTRY_GET);
    store_bind_text(s, 1, address);
    if (sqlite3_step(s) == SQLITE_ROW) {
        entry_from_row(s, &owner);
        sqlite3_reset(s);
        error_set(err, field, "the address %.200s already belongs to the %s %s %.200s", address,
                  source_names[owner.source], kind_names[owner.kind], owner.primary);
        store_dir_entry_clear(&owner);
        return;
    }
    sqlite3_reset(s);
    error_set(err, field, "the address %.200s is given twice", address);
}

/* addresses_insert - primary then aliases of e for entry id */
static int addresses_insert(struct store *st, int64_t id, const struct store_dir_entry *e,
                            struct error *err)
{
    for (size_t i = 0; i <= e->n_aliases; i++) {
        const char *a = i == 0 ? e->primary : e->aliases[i - 1];
        sqlite3_stmt *s = stmt(st, D_ADDR_INSERT);
        store_bind_text(s, 1, a);
        sqlite3_bind_int64(s, 2, id);
        sqlite3_bind_int(s, 3, i == 0);
        int rc = step_done(s);
        if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE) {
            conflict(st, i == 0 ? "address" : "aliases", a, err);
            return STORE_CONFLICT;
        }
        if (rc != SQLITE_DONE) {
            store_db_error(st, err, "directory address");
            return STORE_ERR;
        }
    }
    return STORE_OK;
}

int store_dir_insert(struct store *st, const struct store_dir_entry *e, int64_t *id_out,
                     struct error *err)
{
    if (e->primary == NULL || e->primary[0] == '\0') {
        error_set(err, "address", "an address is required");
        return STORE_ERR;
    }
    if (savepoint(st, err) < 0)
        return STORE_ERR;
    sqlite3_stmt *s = stmt(st, D_ENTRY_INSERT);
    sqlite3_bind_text(s, 1, kind_names[e->kind == STORE_DIR_GROUP], -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, source_names[e->source == STORE_DIR_MANUAL], -1, SQLITE_STATIC);
    store_bind_text(s, 3, e->source == STORE_DIR_DIRECTORY ? e->external_id : NULL);
    store_bind_text(s, 4, e->primary);
    store_bind_text(s, 5, e->name ? e->name : "");
    sqlite3_bind_int(s, 6, e->disabled ? 1 : 0);
    store_bind_text(s, 7, e->password_hash);
    store_bind_text(s, 8, e->fingerprint);
    sqlite3_bind_int64(s, 9, now_s());
    int rc = step_done(s);
    if (rc != SQLITE_DONE) {
        if (rc == SQLITE_CONSTRAINT_UNIQUE)
            error_set(err, "external_id", "the directory id %.200s is given twice",
                      e->external_id ? e->external_id : "");
        else if ((rc & 0xff) == SQLITE_CONSTRAINT)
            error_set(err, "external_id", "a directory entry needs an external id, a manual "
                      "one must not have one");
        else
            store_db_error(st, err, "directory insert");
        undo(st);
        return (rc & 0xff) == SQLITE_CONSTRAINT ? STORE_CONFLICT : STORE_ERR;
    }
    int64_t id = sqlite3_last_insert_rowid(st->db);
    int r = addresses_insert(st, id, e, err);
    if (r < 0) {
        undo(st);
        return r;
    }
    if (release(st, err) < 0)
        return STORE_ERR;
    if (id_out != NULL)
        *id_out = id;
    return STORE_OK;
}

int store_dir_update(struct store *st, int64_t id, const struct store_dir_entry *e,
                     struct error *err)
{
    if (savepoint(st, err) < 0)
        return STORE_ERR;
    sqlite3_stmt *s = stmt(st, D_ENTRY_UPDATE);
    sqlite3_bind_int64(s, 1, id);
    store_bind_text(s, 2, e->primary);
    store_bind_text(s, 3, e->name ? e->name : "");
    sqlite3_bind_int(s, 4, e->disabled ? 1 : 0);
    store_bind_text(s, 5, e->password_hash);
    store_bind_text(s, 6, e->fingerprint);
    sqlite3_bind_int64(s, 7, now_s());
    if (step_done(s) != SQLITE_DONE) {
        store_db_error(st, err, "directory update");
        undo(st);
        return STORE_ERR;
    }
    if (sqlite3_changes(st->db) == 0) {
        undo(st);
        error_set(err, "address", "no such user or group");
        return STORE_NOT_FOUND;
    }
    s = stmt(st, D_ADDR_CLEAR);
    sqlite3_bind_int64(s, 1, id);
    if (step_done(s) != SQLITE_DONE) {
        store_db_error(st, err, "directory update");
        undo(st);
        return STORE_ERR;
    }
    int r = addresses_insert(st, id, e, err);
    if (r < 0) {
        undo(st);
        return r;
    }
    return release(st, err);
}

/* by_id - run a one-parameter change keyed by id */
static int by_id(struct store *st, enum dir_stmt which, int64_t id, const char *what,
                 struct error *err)
{
    sqlite3_stmt *s = stmt(st, which);
    sqlite3_bind_int64(s, 1, id);
    if (step_done(s) != SQLITE_DONE) {
        store_db_error(st, err, what);
        return STORE_ERR;
    }
    int changes = sqlite3_changes(st->db);
    if (bump(st, err) < 0)
        return STORE_ERR;
    st->own_commits++;
    return changes;
}

int store_dir_addresses_clear(struct store *st, int64_t id, struct error *err)
{
    int rc = by_id(st, D_ADDR_CLEAR, id, "directory address clear", err);
    return rc < 0 ? rc : STORE_OK;
}

int store_dir_delete(struct store *st, int64_t id, struct error *err)
{
    int rc = by_id(st, D_ENTRY_DELETE, id, "directory delete", err);
    if (rc == 0) {
        error_set(err, "address", "no such user or group");
        return STORE_NOT_FOUND;
    }
    return rc < 0 ? rc : STORE_OK;
}

int store_dir_members_set(struct store *st, int64_t group_id, char *const *addresses, size_t n,
                          bool strict, size_t *skipped, struct error *err)
{
    size_t skip = 0;
    if (savepoint(st, err) < 0)
        return STORE_ERR;
    sqlite3_stmt *s = stmt(st, D_MEMBERS_CLEAR);
    sqlite3_bind_int64(s, 1, group_id);
    if (step_done(s) != SQLITE_DONE)
        goto dberr;
    for (size_t i = 0; i < n; i++) {
        s = stmt(st, D_MEMBER_INSERT);
        sqlite3_bind_int64(s, 1, group_id);
        store_bind_text(s, 2, addresses[i]);
        if (step_done(s) != SQLITE_DONE)
            goto dberr;
        if (sqlite3_changes(st->db) == 0) {
            /* nobody has the address -- or it was named twice (OR IGNORE) */
            int64_t owner;
            struct error e2;
            int o = store_dir_owner(st, addresses[i], &owner, NULL, &e2);
            if (o == STORE_OK)
                continue;
            if (o != STORE_NOT_FOUND)
                goto dberr;
            if (strict) {
                undo(st);
                error_set(err, "members", "no user or group has the address %.200s",
                          addresses[i]);
                return STORE_NOT_FOUND;
            }
            skip++;
        }
    }
    if (skipped != NULL)
        *skipped = skip;
    return release(st, err);
dberr:
    store_db_error(st, err, "group members");
    undo(st);
    return STORE_ERR;
}

int store_dir_refs(struct store *st, struct store_dir_ref **out, size_t *n, struct error *err)
{
    struct store_dir_ref *v = NULL;
    size_t count = 0, cap = 0;
    int rc;
    sqlite3_stmt *s = stmt(st, D_REFS);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (count == cap) {
            cap = cap ? cap * 2 : 256;
            v = xreallocarray(v, cap, sizeof *v);
        }
        struct store_dir_ref *r = &v[count++];
        r->id = sqlite3_column_int64(s, 0);
        r->external_id = col_dup(s, 1);
        r->fingerprint = col_dup(s, 2);
        const char *k = (const char *)sqlite3_column_text(s, 3);
        r->kind = k != NULL && strcmp(k, "group") == 0 ? STORE_DIR_GROUP : STORE_DIR_USER;
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "directory refs");
        store_dir_refs_free(v, count);
        return STORE_ERR;
    }
    *out = v;
    *n = count;
    return STORE_OK;
}

void store_dir_refs_free(struct store_dir_ref *r, size_t n)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        free(r[i].external_id);
        free(r[i].fingerprint);
    }
    free(r);
}

int store_dir_synced_set(struct store *st, int64_t when, struct error *err)
{
    sqlite3_stmt *s = stmt(st, D_SYNCED_SET);
    if (when > 0)
        sqlite3_bind_int64(s, 1, when);
    else
        sqlite3_bind_null(s, 1);
    if (step_done(s) != SQLITE_DONE) {
        store_db_error(st, err, "directory sync status");
        return STORE_ERR;
    }
    if (bump(st, err) < 0)
        return STORE_ERR;
    st->own_commits++;
    return STORE_OK;
}

int store_dir_sample(struct store *st, const char *domain, int source, char *out, size_t size,
                     struct error *err)
{
    sqlite3_stmt *s = stmt(st, D_SAMPLE);
    store_bind_text(s, 1, domain);
    sqlite3_bind_int(s, 2, source);
    sqlite3_bind_text(s, 3, source_names[source == STORE_DIR_MANUAL], -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW && str_copy(out, size, (const char *)sqlite3_column_text(s, 0)) < 0)
        rc = SQLITE_DONE;
    sqlite3_reset(s);
    if (rc == SQLITE_ROW)
        return STORE_OK;
    if (rc == SQLITE_DONE) {
        error_set(err, "domain", "no active user under %.200s", domain);
        return STORE_NOT_FOUND;
    }
    store_db_error(st, err, "directory sample");
    return STORE_ERR;
}

int store_dir_generation(struct store *st, int64_t *gen, struct error *err)
{
    sqlite3_stmt *s = stmt(st, D_GEN_GET);
    int rc = sqlite3_step(s);
    *gen = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        store_db_error(st, err, "directory generation");
        return STORE_ERR;
    }
    return STORE_OK;
}

int store_dir_synced_get(struct store *st, int64_t *when, struct error *err)
{
    sqlite3_stmt *s = stmt(st, D_SYNCED_GET);
    int rc = sqlite3_step(s);
    *when = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        store_db_error(st, err, "directory sync status");
        return STORE_ERR;
    }
    return STORE_OK;
}

int store_dir_count(struct store *st, enum store_dir_kind kind, int source, const char *domain,
                    int64_t *count, struct error *err)
{
    sqlite3_stmt *s = stmt(st, domain != NULL ? D_COUNT_DOMAIN : D_COUNT_ALL);
    sqlite3_bind_text(s, 1, kind_names[kind == STORE_DIR_GROUP], -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, source);
    sqlite3_bind_text(s, 3, source_names[source == STORE_DIR_MANUAL], -1, SQLITE_STATIC);
    if (domain != NULL)
        store_bind_text(s, 4, domain);
    int rc = sqlite3_step(s);
    *count = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    if (rc != SQLITE_ROW) {
        store_db_error(st, err, "directory count");
        return STORE_ERR;
    }
    return STORE_OK;
}

int store_dir_addresses_each(struct store *st, store_dir_address_fn fn, void *arg,
                             struct error *err)
{
    int rc;
    sqlite3_stmt *s = stmt(st, D_ADDR_ALL);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *a = (const char *)sqlite3_column_text(s, 0);
        const char *k = (const char *)sqlite3_column_text(s, 1);
        const char *src = (const char *)sqlite3_column_text(s, 2);
        if (a == NULL)
            continue;
        if (fn(arg, a, k != NULL && strcmp(k, "group") == 0 ? STORE_DIR_GROUP : STORE_DIR_USER,
               src != NULL && strcmp(src, "manual") == 0 ? STORE_DIR_MANUAL : STORE_DIR_DIRECTORY,
               sqlite3_column_int(s, 3) != 0) < 0) {
            sqlite3_reset(s);
            error_set(err, "", "directory address walk stopped");
            return STORE_ERR;
        }
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "directory addresses");
        return STORE_ERR;
    }
    return STORE_OK;
}

static void strv_free(char **v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void store_dir_entry_clear(struct store_dir_entry *e)
{
    if (e == NULL)
        return;
    free(e->external_id);
    free(e->primary);
    free(e->name);
    if (e->password_hash != NULL) {
        explicit_bzero(e->password_hash, strlen(e->password_hash));
        free(e->password_hash);
    }
    free(e->fingerprint);
    strv_free(e->aliases, e->n_aliases);
    strv_free(e->members, e->n_members);
    memset(e, 0, sizeof *e);
}

void store_dir_entries_free(struct store_dir_entry *e, size_t n)
{
    if (e == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        store_dir_entry_clear(&e[i]);
    free(e);
}

/* --- recipient validation settings --- */

int store_rv_set(struct store *st, const char *domain, const char *mode, const char *unreachable,
                 struct error *err)
{
    sqlite3_stmt *s = stmt(st, D_DOMAIN_EXISTS);
    store_bind_text(s, 1, domain);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_DONE) {
        error_set(err, "domain", "no such domain %.200s", domain);
        return STORE_NOT_FOUND;
    }
    if (rc != SQLITE_ROW) {
        store_db_error(st, err, "recipient validation");
        return STORE_ERR;
    }
    if (savepoint(st, err) < 0)
        return STORE_ERR;
    if (mode == NULL) {
        s = stmt(st, D_RV_DELETE);
        store_bind_text(s, 1, domain);
    } else {
        s = stmt(st, D_RV_UPSERT);
        store_bind_text(s, 1, domain);
        store_bind_text(s, 2, mode);
        store_bind_text(s, 3, unreachable ? unreachable : "tempfail");
        sqlite3_bind_int64(s, 4, now_s());
    }
    rc = step_done(s);
    if ((rc & 0xff) == SQLITE_CONSTRAINT) {
        undo(st);
        error_set(err, "mode", "invalid recipient validation mode or unreachable behaviour");
        return STORE_ERR;
    }
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "recipient validation");
        undo(st);
        return STORE_ERR;
    }
    if (release(st, err) < 0)
        return STORE_ERR;
    log_info("event=rv_set domain=%s mode=%s unreachable=%s", domain, mode ? mode : "none",
             mode ? (unreachable ? unreachable : "tempfail") : "-");
    return STORE_OK;
}

int store_rv_list(struct store *st, struct store_rv_domain **out, size_t *n, struct error *err)
{
    struct store_rv_domain *v = NULL;
    size_t count = 0, cap = 0;
    int rc;
    sqlite3_stmt *s = stmt(st, D_RV_LIST);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (count == cap) {
            cap = cap ? cap * 2 : 16;
            v = xreallocarray(v, cap, sizeof *v);
        }
        struct store_rv_domain *r = &v[count++];
        r->domain = col_dup(s, 0);
        r->mode = col_dup(s, 1);
        r->unreachable = col_dup(s, 2);
        r->updated = sqlite3_column_int64(s, 3);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "recipient validation list");
        store_rv_free(v, count);
        return STORE_ERR;
    }
    *out = v;
    *n = count;
    return STORE_OK;
}

void store_rv_free(struct store_rv_domain *r, size_t n)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        free(r[i].domain);
        free(r[i].mode);
        free(r[i].unreachable);
    }
    free(r);
}
