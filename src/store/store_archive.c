/*
 * store_archive.c - the archive's database (store_archive.h): a SQLite file
 * of its own (STATE/archive.db), opened like the configuration store
 * (store_sqlite_open: WAL, synchronous=FULL) with its own numbered
 * migrations in PRAGMA user_version.
 *
 * Schema (archive_migrations[]):
 *   messages      one row per distinct message: UNIQUE (hash, message_id)
 *                 is the dedup key ("" when there is no Message-ID); the
 *                 first arrival's time, direction and sender; the latest
 *                 arrival's time (retention); header fields; attachment
 *                 names ("\n"-joined).
 *   bodies        the compressed octets, apart from messages so that a
 *                 search never pages through blobs.
 *   arrivals      one row per envelope that brought a message (qid UNIQUE:
 *                 ingest is idempotent), arrival_rcpts its recipients.
 *   addresses     (addr, role, message): role 0 "from" (envelope sender,
 *                 header From), role 1 "to" (envelope and journal
 *                 recipients, header To/Cc); rdomain is the domain with a
 *                 leading dot, reversed character by character, so "domain
 *                 or any subdomain" is one index range (see rdomain()).
 *   fts           FTS5 (subject, addrs, body, attachments), rowid = message
 *                 id; its content is the only copy of the extracted text,
 *                 which snippet() needs.
 *   meta          the counters of store_archive_stats, and how far ids
 *                 stray from received order (struct order).
 *
 * Searches are SQL built from a parsed query with bound parameters only;
 * the FTS MATCH expression quotes every word or phrase (fts_quote), so
 * nothing a user types is FTS syntax.  Three shapes, chosen per query so
 * that a page costs about a page at a million messages (bench/README.md):
 * text terms read the FTS index by descending id and stop early
 * (page_by_rowid); otherwise sparse address terms list their messages and
 * sort them, dense ones are probed per message read in received order
 * (where_addr).  Ingest runs every item of a call in one IMMEDIATE
 * transaction with the prepared statements of archive_sql[].
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "store_priv.h"

struct store_archive {
    struct store st;              /* db and the statement table; store_priv.h helpers take it */
    sqlite3_stmt **stmts;         /* archive_sql[], prepared at open */
    const char *path;
    char *path_copy;
};

/* bound parameters of one search: two per address term, the match, the
 * owner, the dates (archive_query.h bounds the terms well below this) */
#define QBIND_MAX (2 * ARCHIVE_QUERY_TERMS_BOUND + 8)
#define ARCHIVE_QUERY_TERMS_BOUND 64
/* an address condition matching this many rows is "dense" (where_addr);
 * a variable only so that the unit tests can take both paths (store_priv.h) */
int64_t store_archive_dense_min = 20000;

/* --- schema --- */

static const char *const archive_migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE messages ("
    "  id INTEGER PRIMARY KEY,"
    "  message_id TEXT NOT NULL,"           /* '' when absent */
    "  hash BLOB NOT NULL,"
    "  date INTEGER NOT NULL,"
    "  received INTEGER NOT NULL,"          /* first arrival */
    "  latest INTEGER NOT NULL,"            /* latest arrival: retention */
    "  direction TEXT NOT NULL,"            /* of the first arrival */
    "  sender TEXT NOT NULL,"               /* envelope sender of the first arrival */
    "  size INTEGER NOT NULL,"
    "  hfrom TEXT NOT NULL, hto TEXT NOT NULL, hcc TEXT NOT NULL,"
    "  from_display TEXT NOT NULL, subject TEXT NOT NULL,"
    "  attachments TEXT NOT NULL, n_attachments INTEGER NOT NULL,"
    "  truncated INTEGER NOT NULL,"
    "  codec TEXT NOT NULL, stored INTEGER NOT NULL,"
    "  UNIQUE (hash, message_id));"
    "CREATE INDEX messages_received ON messages (received);"
    "CREATE INDEX messages_latest ON messages (latest);"
    "CREATE TABLE bodies (id INTEGER PRIMARY KEY, body BLOB NOT NULL);"
    "CREATE TABLE arrivals ("
    "  id INTEGER PRIMARY KEY,"
    "  qid TEXT NOT NULL UNIQUE,"
    "  message INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,"
    "  received INTEGER NOT NULL, direction TEXT NOT NULL, source TEXT NOT NULL,"
    "  client TEXT NOT NULL, sender TEXT NOT NULL, journal TEXT, journal_error TEXT);"
    "CREATE INDEX arrivals_message ON arrivals (message);"
    "CREATE TABLE arrival_rcpts ("
    "  arrival INTEGER NOT NULL REFERENCES arrivals (id) ON DELETE CASCADE,"
    "  addr TEXT NOT NULL, kind TEXT NOT NULL, expanded TEXT, forwarded TEXT);"
    "CREATE INDEX arrival_rcpts_arrival ON arrival_rcpts (arrival);"
    "CREATE TABLE addresses ("
    "  addr TEXT NOT NULL, role INTEGER NOT NULL, message INTEGER NOT NULL,"
    "  rdomain TEXT NOT NULL,"
    "  PRIMARY KEY (addr, role, message)) WITHOUT ROWID;"
    "CREATE INDEX addresses_rdomain ON addresses (rdomain, role, message);"
    "CREATE INDEX addresses_message ON addresses (message);"
    "CREATE VIRTUAL TABLE fts USING fts5 (subject, addrs, body, attachments,"
    "  tokenize = 'unicode61 remove_diacritics 2');"
    /* order: the latest first-arrival time ingested, and how far behind it a
     * new message has ever been (see search_by_rowid) */
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
    "INSERT INTO meta (key, value) VALUES ('max_received', 0), ('lateness', 0),"
    /* the counters of store_archive_stats, kept by ingest and purge */
    "  ('messages', 0), ('arrivals', 0), ('bytes', 0), ('stored', 0),"
    "  ('journal_reports', 0), ('journal_malformed', 0);",
};
#define ARCHIVE_SCHEMA_LATEST ((int)(sizeof archive_migrations / sizeof *archive_migrations))

/* what a search hit shows, in hit_from_row's order */
#define HIT_COLUMNS "m.id, m.received, m.direction, m.message_id, m.sender, m.from_display," \
                    " m.hfrom, m.hto, m.subject, m.size, m.n_attachments"

enum archive_stmt {
    A_QID_FIND,
    A_MSG_FIND,
    A_MSG_INSERT,
    A_MSG_ARRIVED,
    A_BODY_INSERT,
    A_FTS_INSERT,
    A_FTS_ADDRS,
    A_ARRIVAL_INSERT,
    A_RCPT_INSERT,
    A_ADDR_INSERT,
    A_GET_MSG,
    A_GET_BODY,
    A_GET_ARRIVALS,
    A_GET_RCPTS,
    A_OWNER_SEES,
    A_DEL_FTS,
    A_DEL_BODY,
    A_DEL_ADDRS,
    A_DEL_MSG,
    A_STATS_MSG,
    A_STATS_ARR,
    A_META_GET,
    A_META_SET,
    A_MSG_SIZES,
    A_META_ADD,
    A_HIT,
    A__COUNT
};

static const char *const archive_sql[A__COUNT] = {
    [A_QID_FIND] = "SELECT message FROM arrivals WHERE qid = ?1",
    [A_MSG_FIND] = "SELECT id FROM messages WHERE hash = ?1 AND message_id = ?2",
    [A_MSG_INSERT] =
        "INSERT INTO messages (message_id, hash, date, received, latest, direction, sender, size,"
        " hfrom, hto, hcc, from_display, subject, attachments, n_attachments, truncated, codec,"
        " stored) VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,"
        " ?16, ?17)",
    /* another arrival: the latest moves on; an earlier one becomes the first */
    [A_MSG_ARRIVED] =
        "UPDATE messages SET latest = max(latest, ?2),"
        " direction = CASE WHEN ?2 < received THEN ?3 ELSE direction END,"
        " sender = CASE WHEN ?2 < received THEN ?4 ELSE sender END,"
        " received = min(received, ?2) WHERE id = ?1",
    [A_BODY_INSERT] = "INSERT INTO bodies (id, body) VALUES (?1, ?2)",
    [A_FTS_INSERT] =
        "INSERT INTO fts (rowid, subject, addrs, body, attachments) VALUES (?1, ?2, ?3, ?4, ?5)",
    /* another arrival of a known message: its envelope addresses too */
    [A_FTS_ADDRS] = "UPDATE fts SET addrs = addrs || ' ' || ?2 WHERE rowid = ?1",
    [A_ARRIVAL_INSERT] =
        "INSERT INTO arrivals (qid, message, received, direction, source, client, sender,"
        " journal, journal_error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [A_RCPT_INSERT] =
        "INSERT INTO arrival_rcpts (arrival, addr, kind, expanded, forwarded)"
        " VALUES (?1, ?2, ?3, ?4, ?5)",
    [A_ADDR_INSERT] =
        "INSERT OR IGNORE INTO addresses (addr, role, message, rdomain) VALUES (?1, ?2, ?3, ?4)",
    [A_GET_MSG] =
        "SELECT id, message_id, date, received, hfrom, hto, hcc, from_display, subject, size,"
        " attachments, n_attachments, truncated, codec FROM messages WHERE id = ?1",
    [A_GET_BODY] = "SELECT body FROM bodies WHERE id = ?1",
    [A_GET_ARRIVALS] =
        "SELECT id, qid, received, direction, source, client, sender, journal, journal_error"
        " FROM arrivals WHERE message = ?1 ORDER BY received, id",
    [A_GET_RCPTS] =
        "SELECT addr, kind, expanded, forwarded FROM arrival_rcpts WHERE arrival = ?1"
        " ORDER BY rowid",
    [A_OWNER_SEES] = "SELECT 1 FROM addresses WHERE addr = ?1 AND message = ?2",
    [A_DEL_FTS] = "DELETE FROM fts WHERE rowid = ?1",
    [A_DEL_BODY] = "DELETE FROM bodies WHERE id = ?1",
    [A_DEL_ADDRS] = "DELETE FROM addresses WHERE message = ?1",
    [A_DEL_MSG] = "DELETE FROM messages WHERE id = ?1",   /* arrivals and rcpts cascade */
    [A_STATS_MSG] = "SELECT coalesce(min(received), 0) FROM messages",
    [A_STATS_ARR] =
        "SELECT count(*), coalesce(sum(journal = 'report'), 0),"
        " coalesce(sum(journal = 'malformed'), 0) FROM arrivals WHERE message = ?1",
    [A_MSG_SIZES] = "SELECT size, stored FROM messages WHERE id = ?1",
    [A_META_ADD] = "UPDATE meta SET value = value + ?2 WHERE key = ?1",
    [A_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [A_META_SET] = "UPDATE meta SET value = ?2 WHERE key = ?1",
    [A_HIT] = "SELECT " HIT_COLUMNS " FROM messages m WHERE m.id = ?1",
};

static sqlite3_stmt *stmt(struct store_archive *sa, enum archive_stmt id)
{
    return store_stmt_reset(sa->stmts[id]);
}

/* --- open / close --- */

struct store_archive *store_archive_open(const char *path, struct error *err)
{
    sqlite3 *db = store_sqlite_open(path, archive_migrations, ARCHIVE_SCHEMA_LATEST,
                                    ARCHIVE_SCHEMA_LATEST, err);
    if (db == NULL)
        return NULL;
    struct store_archive *sa = xcalloc(1, sizeof *sa);
    sa->st.db = db;
    sa->path_copy = xstrdup(path);
    sa->path = sa->path_copy;
    if (store_stmts_prepare(&sa->st, path, "archive", archive_sql, A__COUNT, &sa->stmts,
                            err) < 0) {
        store_archive_close(sa);
        return NULL;
    }
    return sa;
}

void store_archive_close(struct store_archive *sa)
{
    if (sa == NULL)
        return;
    store_stmts_finalize(&sa->stmts, A__COUNT);
    if (sqlite3_close(sa->st.db) != SQLITE_OK)
        log_error("event=archive_store_close error=\"%s\"", sqlite3_errmsg(sa->st.db));
    free(sa->path_copy);
    free(sa);
}

/* --- helpers --- */

static int exec(struct store_archive *sa, const char *sql, struct error *err)
{
    if (sqlite3_exec(sa->st.db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        store_db_error(&sa->st, err, sa->path);
        return -1;
    }
    return 0;
}

static void rollback(struct store_archive *sa)
{
    sqlite3_exec(sa->st.db, "ROLLBACK", NULL, NULL, NULL);
}

/* step_done - run a bound write statement to completion */
static int step_done(struct store_archive *sa, sqlite3_stmt *s, struct error *err)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(&sa->st, err, sa->path);
        return -1;
    }
    return 0;
}

/* rdomain - the address-table key of a domain: "." + domain, reversed, so
 * that "example.com" and every subdomain share the prefix "moc.elpmaxe." */
static char *rdomain(const char *domain)
{
    size_t n = strlen(domain);
    char *r = xmalloc(n + 2);
    for (size_t i = 0; i < n; i++)
        r[i] = domain[n - 1 - i];
    r[n] = '.';
    r[n + 1] = '\0';
    return r;
}

static char *col_dup_or_null(sqlite3_stmt *s, int col)
{
    if (sqlite3_column_type(s, col) == SQLITE_NULL)
        return NULL;
    return store_col_strdup(s, col);
}

static const char *nz(const char *s)
{
    return s != NULL ? s : "";
}

/* --- ingest --- */

static int item_check(const struct store_archive_item *it, size_t i, struct error *err)
{
    static const struct { size_t off; const char *field; } required[] = {
        { offsetof(struct store_archive_item, qid), "qid" },
        { offsetof(struct store_archive_item, direction), "direction" },
        { offsetof(struct store_archive_item, source), "source" },
        { offsetof(struct store_archive_item, codec), "codec" },
    };
    for (size_t k = 0; k < sizeof required / sizeof *required; k++) {
        const char *v = *(const char *const *)((const char *)it + required[k].off);
        if (v == NULL || *v == '\0') {
            error_set(err, required[k].field, "item %zu: %s is missing", i, required[k].field);
            return -1;
        }
    }
    if (it->hash == NULL) {
        error_set(err, "hash", "item %zu: hash is missing", i);
        return -1;
    }
    if (it->body == NULL && it->body_len > 0) {
        error_set(err, "body", "item %zu: body is missing", i);
        return -1;
    }
    if (it->n_rcpts > 0 && it->rcpts == NULL) {
        error_set(err, "rcpts", "item %zu: recipients are missing", i);
        return -1;
    }
    return 0;
}

/* addr_add - one address row (lower-cased copy; empty and domain-less
 * addresses are skipped: nothing to search for) */
static int addr_add(struct store_archive *sa, int64_t msg, int role, const char *addr,
                    size_t len, struct error *err)
{
    while (len > 0 && (*addr == ' ' || *addr == '\t')) {
        addr++;
        len--;
    }
    while (len > 0 && (addr[len - 1] == ' ' || addr[len - 1] == '\t'))
        len--;
    if (len == 0)
        return 0;
    char *a = xstrndup(addr, len);
    str_lower(a);
    const char *at = strrchr(a, '@');
    char *rd = rdomain(at != NULL ? at + 1 : "");
    sqlite3_stmt *s = stmt(sa, A_ADDR_INSERT);
    sqlite3_bind_text(s, 1, a, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(s, 2, role);
    sqlite3_bind_int64(s, 3, msg);
    sqlite3_bind_text(s, 4, rd, -1, SQLITE_TRANSIENT);
    int rc = step_done(sa, s, err);
    free(a);
    free(rd);
    return rc;
}

/* addr_list_add - every address of a ", "-separated header list */
static int addr_list_add(struct store_archive *sa, int64_t msg, int role, const char *list,
                         struct error *err)
{
    const char *p = nz(list);
    while (*p) {
        size_t n = strcspn(p, ",");
        if (addr_add(sa, msg, role, p, n, err) < 0)
            return -1;
        p += n;
        if (*p == ',')
            p++;
    }
    return 0;
}

/* fts_addrs - the addresses indexed as text: header and envelope, one line;
 * every address of the addresses table is among them (fts_match relies on it) */
static char *fts_addrs(const struct store_archive_item *it)
{
    struct buf b;
    buf_init(&b);
    const char *parts[] = { it->from_display, it->from, it->to, it->cc, it->sender };
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++)
        if (parts[i] != NULL && *parts[i])
            buf_printf(&b, "%s%s", b.len ? " " : "", parts[i]);
    for (size_t i = 0; i < it->n_rcpts; i++) {
        const struct store_archive_rcpt *r = &it->rcpts[i];
        const char *a[] = { r->addr, r->expanded, r->forwarded };
        for (size_t k = 0; k < 3; k++)
            if (a[k] != NULL && *a[k])
                buf_printf(&b, "%s%s", b.len ? " " : "", a[k]);
    }
    char *s = xstrdup(buf_cstr(&b));
    buf_free(&b);
    return s;
}

static char *join_lines(const char *const *v, size_t n)
{
    struct buf b;
    buf_init(&b);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            buf_append(&b, "\n", 1);
        /* a name is one line: a newline in it would split it in two */
        for (const char *p = nz(v[i]); *p; p++)
            buf_append(&b, *p == '\n' || *p == '\r' ? " " : p, 1);
    }
    char *s = xstrdup(buf_cstr(&b));
    buf_free(&b);
    return s;
}

/* message_insert - a new message: its row, body, text index and header addresses */
static int message_insert(struct store_archive *sa, const struct store_archive_item *it,
                          int64_t *id, struct error *err)
{
    char *att = join_lines(it->attachments, it->n_attachments);
    sqlite3_stmt *s = stmt(sa, A_MSG_INSERT);
    sqlite3_bind_text(s, 1, nz(it->message_id), -1, SQLITE_STATIC);
    sqlite3_bind_blob(s, 2, it->hash, 32, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, it->date);
    sqlite3_bind_int64(s, 4, it->received);
    sqlite3_bind_text(s, 5, it->direction, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 6, nz(it->sender), -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 7, (int64_t)it->size);
    sqlite3_bind_text(s, 8, nz(it->from), -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 9, nz(it->to), -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 10, nz(it->cc), -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 11, nz(it->from_display), -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 12, nz(it->subject), -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 13, att, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 14, (int64_t)it->n_attachments);
    sqlite3_bind_int(s, 15, it->truncated);
    sqlite3_bind_text(s, 16, it->codec, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 17, (int64_t)it->body_len);
    int rc = step_done(sa, s, err);
    sqlite3_clear_bindings(s);
    if (rc < 0) {
        free(att);
        return -1;
    }
    *id = sqlite3_last_insert_rowid(sa->st.db);

    s = stmt(sa, A_BODY_INSERT);
    sqlite3_bind_int64(s, 1, *id);
    sqlite3_bind_blob(s, 2, it->body != NULL ? it->body : "", (int)it->body_len, SQLITE_STATIC);
    rc = step_done(sa, s, err);
    sqlite3_clear_bindings(s);
    if (rc < 0) {
        free(att);
        return -1;
    }

    char *addrs = fts_addrs(it);
    s = stmt(sa, A_FTS_INSERT);
    sqlite3_bind_int64(s, 1, *id);
    sqlite3_bind_text(s, 2, nz(it->subject), -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, addrs, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, nz(it->text), -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, att, -1, SQLITE_STATIC);
    rc = step_done(sa, s, err);
    sqlite3_clear_bindings(s);
    free(addrs);
    free(att);
    if (rc < 0)
        return -1;
    if (addr_list_add(sa, *id, 0, it->from, err) < 0 || addr_list_add(sa, *id, 1, it->to, err) < 0 ||
        addr_list_add(sa, *id, 1, it->cc, err) < 0)
        return -1;
    return 0;
}

/* arrival_insert - the envelope, its recipients and their addresses */
static int arrival_insert(struct store_archive *sa, const struct store_archive_item *it,
                          int64_t msg, struct error *err)
{
    sqlite3_stmt *s = stmt(sa, A_ARRIVAL_INSERT);
    sqlite3_bind_text(s, 1, it->qid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, msg);
    sqlite3_bind_int64(s, 3, it->received);
    sqlite3_bind_text(s, 4, it->direction, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, it->source, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 6, nz(it->client_addr), -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 7, nz(it->sender), -1, SQLITE_STATIC);
    store_bind_text(s, 8, it->journal);
    store_bind_text(s, 9, it->journal_error);
    int rc = step_done(sa, s, err);
    sqlite3_clear_bindings(s);
    if (rc < 0)
        return -1;
    int64_t arrival = sqlite3_last_insert_rowid(sa->st.db);
    for (size_t i = 0; i < it->n_rcpts; i++) {
        const struct store_archive_rcpt *r = &it->rcpts[i];
        s = stmt(sa, A_RCPT_INSERT);
        sqlite3_bind_int64(s, 1, arrival);
        sqlite3_bind_text(s, 2, nz(r->addr), -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, r->kind != NULL ? r->kind : "envelope", -1, SQLITE_STATIC);
        store_bind_text(s, 4, r->expanded);
        store_bind_text(s, 5, r->forwarded);
        rc = step_done(sa, s, err);
        sqlite3_clear_bindings(s);
        if (rc < 0)
            return -1;
        const char *to[] = { r->addr, r->expanded, r->forwarded };
        for (size_t k = 0; k < 3; k++)
            if (to[k] != NULL && addr_add(sa, msg, 1, to[k], strlen(to[k]), err) < 0)
                return -1;
    }
    if (it->sender != NULL && addr_add(sa, msg, 0, it->sender, strlen(it->sender), err) < 0)
        return -1;
    return 0;
}

/* find_id - the first column of a one-row lookup: 1 found, 0 not, -1 error */
static int find_id(struct store_archive *sa, sqlite3_stmt *s, int64_t *id, struct error *err)
{
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        *id = sqlite3_column_int64(s, 0);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    store_db_error(&sa->st, err, sa->path);
    return -1;
}

/* how far message ids are from received order: ids grow with every new
 * message; lateness is the most a new message's received time has been
 * behind the latest one ingested before it.  So a message with a smaller
 * id than x was received at most x.received + lateness (a later arrival of
 * a known message only moves its received time back). */
struct order {
    int64_t max_received;
    int64_t lateness;
};

static int meta_get(struct store_archive *sa, const char *key, int64_t *v, struct error *err)
{
    sqlite3_stmt *s = stmt(sa, A_META_GET);
    sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
    *v = 0;
    return find_id(sa, s, v, err) < 0 ? -1 : 0;
}

static int order_get(struct store_archive *sa, struct order *o, struct error *err)
{
    if (meta_get(sa, "max_received", &o->max_received, err) < 0 ||
        meta_get(sa, "lateness", &o->lateness, err) < 0)
        return -1;
    return 0;
}

static void order_note(struct order *o, int64_t received)
{
    if (received > o->max_received)
        o->max_received = received;
    else if (o->max_received - received > o->lateness)
        o->lateness = o->max_received - received;
}

static int order_set(struct store_archive *sa, const struct order *o, struct error *err)
{
    const struct { const char *key; int64_t v; } kv[] = {
        { "max_received", o->max_received }, { "lateness", o->lateness },
    };
    for (size_t i = 0; i < 2; i++) {
        sqlite3_stmt *s = stmt(sa, A_META_SET);
        sqlite3_bind_text(s, 1, kv[i].key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, kv[i].v);
        if (step_done(sa, s, err) < 0)
            return -1;
    }
    return 0;
}

/* the stats counters a transaction changes (meta keys of the same names) */
struct counts {
    int64_t messages, arrivals, bytes, stored, journal_reports, journal_malformed;
};

static int counts_apply(struct store_archive *sa, const struct counts *c, struct error *err)
{
    const struct { const char *key; int64_t delta; } kv[] = {
        { "messages", c->messages }, { "arrivals", c->arrivals }, { "bytes", c->bytes },
        { "stored", c->stored }, { "journal_reports", c->journal_reports },
        { "journal_malformed", c->journal_malformed },
    };
    for (size_t i = 0; i < sizeof kv / sizeof *kv; i++) {
        if (kv[i].delta == 0)
            continue;
        sqlite3_stmt *s = stmt(sa, A_META_ADD);
        sqlite3_bind_text(s, 1, kv[i].key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, kv[i].delta);
        if (step_done(sa, s, err) < 0)
            return -1;
    }
    return 0;
}

static void counts_arrival(struct counts *c, const struct store_archive_item *it,
                           enum store_archive_outcome o)
{
    if (o == STORE_ARCHIVE_ALREADY)
        return;
    if (o == STORE_ARCHIVE_NEW) {
        c->messages++;
        c->bytes += (int64_t)it->size;
        c->stored += (int64_t)it->body_len;
    }
    c->arrivals++;
    if (it->journal != NULL && strcmp(it->journal, "report") == 0)
        c->journal_reports++;
    if (it->journal != NULL && strcmp(it->journal, "malformed") == 0)
        c->journal_malformed++;
}

static int ingest_one(struct store_archive *sa, const struct store_archive_item *it,
                      enum store_archive_outcome *outcome, int64_t *id, struct error *err)
{
    sqlite3_stmt *s = stmt(sa, A_QID_FIND);
    sqlite3_bind_text(s, 1, it->qid, -1, SQLITE_STATIC);
    int found = find_id(sa, s, id, err);
    if (found != 0) {
        *outcome = STORE_ARCHIVE_ALREADY;
        return found < 0 ? -1 : 0;
    }
    s = stmt(sa, A_MSG_FIND);
    sqlite3_bind_blob(s, 1, it->hash, 32, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, nz(it->message_id), -1, SQLITE_STATIC);
    found = find_id(sa, s, id, err);
    if (found < 0)
        return -1;
    if (found) {
        *outcome = STORE_ARCHIVE_DUPLICATE;
        s = stmt(sa, A_MSG_ARRIVED);
        sqlite3_bind_int64(s, 1, *id);
        sqlite3_bind_int64(s, 2, it->received);
        sqlite3_bind_text(s, 3, it->direction, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 4, nz(it->sender), -1, SQLITE_STATIC);
        int rc = step_done(sa, s, err);
        sqlite3_clear_bindings(s);
        if (rc < 0)
            return -1;
        struct store_archive_item env = { .sender = it->sender, .rcpts = it->rcpts,
                                          .n_rcpts = it->n_rcpts };
        char *addrs = fts_addrs(&env);
        s = stmt(sa, A_FTS_ADDRS);
        sqlite3_bind_int64(s, 1, *id);
        sqlite3_bind_text(s, 2, addrs, -1, SQLITE_STATIC);
        rc = step_done(sa, s, err);
        sqlite3_clear_bindings(s);
        free(addrs);
        if (rc < 0)
            return -1;
    } else {
        *outcome = STORE_ARCHIVE_NEW;
        if (message_insert(sa, it, id, err) < 0)
            return -1;
    }
    return arrival_insert(sa, it, *id, err);
}

int store_archive_ingest(struct store_archive *sa, const struct store_archive_item *items, size_t n,
                         enum store_archive_outcome *outcome, int64_t *id, struct error *err)
{
    for (size_t i = 0; i < n; i++)
        if (item_check(&items[i], i, err) < 0)
            return STORE_ERR;
    if (n == 0)
        return STORE_OK;
    if (exec(sa, "BEGIN IMMEDIATE", err) < 0)
        return STORE_ERR;
    struct order ord;
    if (order_get(sa, &ord, err) < 0) {
        rollback(sa);
        return STORE_ERR;
    }
    struct order was = ord;
    struct counts cnt = { 0 };
    for (size_t i = 0; i < n; i++) {
        enum store_archive_outcome o;
        int64_t mid = 0;
        if (ingest_one(sa, &items[i], &o, &mid, err) < 0) {
            rollback(sa);
            return STORE_ERR;
        }
        /* a duplicate may move its message's received time back: noted too */
        if (o != STORE_ARCHIVE_ALREADY)
            order_note(&ord, items[i].received);
        counts_arrival(&cnt, &items[i], o);
        if (outcome != NULL)
            outcome[i] = o;
        if (id != NULL)
            id[i] = mid;
    }
    if (((ord.max_received != was.max_received || ord.lateness != was.lateness) &&
         order_set(sa, &ord, err) < 0) || counts_apply(sa, &cnt, err) < 0) {
        rollback(sa);
        return STORE_ERR;
    }
    if (exec(sa, "COMMIT", err) < 0) {
        rollback(sa);
        return STORE_ERR;
    }
    return STORE_OK;
}

/* --- search --- */

/* bound parameters of a built query, in order */
struct qbind {
    struct {
        bool is_int;
        int64_t i;
        char *s;
    } v[QBIND_MAX];
    int n;
};

static int bind_int(struct qbind *qb, int64_t i)
{
    qb->v[qb->n].is_int = true;
    qb->v[qb->n].i = i;
    return ++qb->n;
}

static int bind_str(struct qbind *qb, char *s)
{
    qb->v[qb->n].is_int = false;
    qb->v[qb->n].s = s;       /* owned */
    return ++qb->n;
}

static void qbind_free(struct qbind *qb)
{
    for (int i = 0; i < qb->n; i++)
        if (!qb->v[i].is_int)
            free(qb->v[i].s);
    qb->n = 0;
}

static void qbind_apply(const struct qbind *qb, sqlite3_stmt *s)
{
    for (int i = 0; i < qb->n; i++) {
        if (qb->v[i].is_int)
            sqlite3_bind_int64(s, i + 1, qb->v[i].i);
        else
            sqlite3_bind_text(s, i + 1, qb->v[i].s, -1, SQLITE_STATIC);
    }
}

/* fts_has_token - does the word hold anything the tokenizer indexes (a
 * letter, a digit, or any non-ASCII character)?  A quoted phrase without
 * one matches nothing, so such a word is left out instead. */
static bool fts_has_token(const char *w)
{
    for (const unsigned char *p = (const unsigned char *)w; *p; p++)
        if (*p >= 0x80 || (*p >= '0' && *p <= '9') || ((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z'))
            return true;
    return false;
}

/* fts_quote - w as one FTS5 string ("..." with "" for "): a word or a
 * phrase, never an operator, a column filter or a prefix query */
static void fts_quote(struct buf *b, const char *w)
{
    buf_append(b, "\"", 1);
    for (const char *p = w; *p; p++)
        buf_append(b, *p == '"' ? "\"\"" : p, *p == '"' ? 2 : 1);
    buf_append(b, "\"", 1);
}

/* fts_match - the MATCH expression of the query's text and subject terms, or NULL */
static char *fts_match(const struct store_archive_query *q, const char *owner)
{
    struct buf b;
    buf_init(&b);
    for (size_t i = 0; i < q->n_text; i++) {
        if (!fts_has_token(q->text[i]))
            continue;
        if (b.len)
            buf_append_str(&b, " AND ");
        fts_quote(&b, q->text[i]);
    }
    for (size_t i = 0; i < q->n_subject; i++) {
        if (!fts_has_token(q->subject[i]))
            continue;
        if (b.len)
            buf_append_str(&b, " AND ");
        buf_append_str(&b, "{subject} : ");
        fts_quote(&b, q->subject[i]);
    }
    /* with text terms, the index reads the messages by id; address
     * conditions are added as phrases in the addresses column so that FTS5
     * intersects the posting lists (skipping through the long one) instead
     * of reading every message with a common word.  A superset: "a@x.example"
     * is also the phrase "a x example"; the exact condition on the addresses
     * table decides. */
    if (b.len) {
        const char *const *lists[] = { (const char *const *)q->from, (const char *const *)q->to };
        size_t counts[] = { q->n_from, q->n_to };
        for (size_t l = 0; l < 2; l++)
            for (size_t i = 0; i < counts[l]; i++) {
                buf_append_str(&b, " AND {addrs} : ");
                fts_quote(&b, lists[l][i][0] == '@' ? lists[l][i] + 1 : lists[l][i]);
            }
        if (owner != NULL) {
            buf_append_str(&b, " AND {addrs} : ");
            fts_quote(&b, owner);
        }
    }
    char *m = b.len ? xstrdup(buf_cstr(&b)) : NULL;
    buf_free(&b);
    return m;
}

static int prepare_built(struct store_archive *sa, const char *sql, const struct qbind *qb,
                         sqlite3_stmt **s, struct error *err);

/* addr_cond - the condition on an addresses row (columns prefixed with
 * col) matching a: the address, or a domain and its subdomains as one range
 * of the rdomain index; role -1: any role, and a is always an exact
 * address (the owner scope never widens to a domain) */
static void addr_cond(struct buf *w, struct qbind *qb, const char *col, int role, const char *a)
{
    char *lc = xstrdup(a[0] == '@' ? a + 1 : a);
    str_lower(lc);
    if (strchr(lc, '@') != NULL || role < 0) {
        buf_printf(w, "%saddr = ?%d", col, bind_str(qb, lc));
    } else {
        char *lo = rdomain(lc);
        char *hi = xstrdup(lo);
        hi[strlen(hi) - 1] = '.' + 1;
        free(lc);
        int p1 = bind_str(qb, lo), p2 = bind_str(qb, hi);
        buf_printf(w, "%srdomain >= ?%d AND %srdomain < ?%d", col, p1, col, p2);
    }
    if (role >= 0)
        buf_printf(w, " AND %srole = %d", col, role);
}

/* where_addr - " AND" the messages with an address matching a.  Sparse
 * (the usual case): the list of those messages, read from the index, drives
 * the query.  Dense (tens of thousands of messages, e.g. to: the
 * organisation's own domain): a probe per message read in received (or
 * text index) order, so a page costs about a page, not the whole list. */
static void where_addr(struct buf *w, struct qbind *qb, int role, const char *a, bool dense)
{
    if (dense) {
        buf_append_str(w, " AND EXISTS (SELECT 1 FROM addresses a WHERE a.message = m.id AND ");
        addr_cond(w, qb, "a.", role, a);
    } else {
        buf_append_str(w, " AND m.id IN (SELECT message FROM addresses WHERE ");
        addr_cond(w, qb, "", role, a);
    }
    buf_append_str(w, ")");
}

/* addr_count - rows of the addresses table matching a, counted up to cap */
static int addr_count(struct store_archive *sa, int role, const char *a, int64_t cap,
                      int64_t *n, struct error *err)
{
    struct buf sql;
    struct qbind qb = { .n = 0 };
    buf_init(&sql);
    buf_append_str(&sql, "SELECT count(*) FROM (SELECT 1 FROM addresses WHERE ");
    addr_cond(&sql, &qb, "", role, a);
    buf_printf(&sql, " LIMIT %lld)", (long long)cap);
    sqlite3_stmt *s;
    int rc = prepare_built(sa, buf_cstr(&sql), &qb, &s, err);
    buf_free(&sql);
    if (rc == 0) {
        *n = 0;
        if (find_id(sa, s, n, err) < 0)
            rc = -1;
        sqlite3_finalize(s);
    }
    qbind_free(&qb);
    return rc;
}

/* addr_dense - true when every address condition of q and scope matches at
 * least store_archive_dense_min rows (then no list of them is worth building) */
static int addr_dense(struct store_archive *sa, const struct store_archive_query *q,
                      const struct store_archive_scope *scope, bool *dense, struct error *err)
{
    const char *owner = scope != NULL ? scope->owner : NULL;
    *dense = false;
    if (q->n_from + q->n_to == 0 && owner == NULL)
        return 0;
    for (int role = 0; role <= 2; role++) {
        size_t n = role == 0 ? q->n_from : role == 1 ? q->n_to : owner != NULL;
        for (size_t i = 0; i < n; i++) {
            int64_t c;
            const char *a = role == 0 ? q->from[i] : role == 1 ? q->to[i] : owner;
            if (addr_count(sa, role == 2 ? -1 : role, a, store_archive_dense_min, &c, err) < 0)
                return -1;
            if (c < store_archive_dense_min)
                return 0;
        }
    }
    *dense = true;
    return 0;
}

/* build - FROM and WHERE for q under scope (after "SELECT ... "), with
 * *match set when the full-text index takes part; count_only: the columns
 * of m are not needed */
static int build(const struct store_archive_query *q, const struct store_archive_scope *scope,
                 bool count_only, bool dense, struct buf *sql, struct qbind *qb, bool *match,
                 struct error *err)
{
    size_t n_addr = q->n_from + q->n_to + (scope != NULL && scope->owner != NULL);
    if (n_addr > ARCHIVE_QUERY_TERMS_BOUND) {
        error_set(err, "q", "too many address terms (at most %d)", ARCHIVE_QUERY_TERMS_BOUND);
        return -1;
    }
    char *m = fts_match(q, scope != NULL ? scope->owner : NULL);
    *match = m != NULL;
    bool fts_only = n_addr == 0 && q->after == 0 && q->before == 0 && !q->has_attachment;
    if (m != NULL && count_only && fts_only) {
        /* counting text matches alone needs no message rows */
        buf_printf(sql, " FROM fts WHERE fts MATCH ?%d", bind_str(qb, m));
        return 0;
    }
    if (m != NULL)
        buf_printf(sql, " FROM fts JOIN messages m ON m.id = fts.rowid WHERE fts MATCH ?%d",
                   bind_str(qb, m));
    else
        buf_append_str(sql, " FROM messages m WHERE 1");
    for (size_t i = 0; i < q->n_from; i++)
        where_addr(sql, qb, 0, q->from[i], dense);
    for (size_t i = 0; i < q->n_to; i++)
        where_addr(sql, qb, 1, q->to[i], dense);
    if (scope != NULL && scope->owner != NULL)
        where_addr(sql, qb, -1, scope->owner, dense);
    if (q->after != 0)
        buf_printf(sql, " AND m.received >= ?%d", bind_int(qb, q->after));
    if (q->before != 0)
        buf_printf(sql, " AND m.received < ?%d", bind_int(qb, q->before));
    if (q->has_attachment)
        buf_append_str(sql, " AND m.n_attachments > 0");
    return 0;
}

static int prepare_built(struct store_archive *sa, const char *sql, const struct qbind *qb,
                         sqlite3_stmt **s, struct error *err)
{
    if (sqlite3_prepare_v2(sa->st.db, sql, -1, s, NULL) != SQLITE_OK) {
        store_db_error(&sa->st, err, sa->path);
        return -1;
    }
    qbind_apply(qb, *s);
    return 0;
}

static int count_matches(struct store_archive *sa, const struct store_archive_query *q,
                         const struct store_archive_scope *scope, bool dense, size_t cap,
                         size_t *total, struct error *err)
{
    struct buf sql;
    struct qbind qb = { .n = 0 };
    bool match;
    buf_init(&sql);
    buf_append_str(&sql, "SELECT count(*) FROM (SELECT 1");
    int rc = build(q, scope, true, dense, &sql, &qb, &match, err);
    if (rc == 0) {
        if (cap > 0)
            buf_printf(&sql, " LIMIT %zu", cap);
        buf_append_str(&sql, ")");
        sqlite3_stmt *s;
        rc = prepare_built(sa, buf_cstr(&sql), &qb, &s, err);
        if (rc == 0) {
            int st = sqlite3_step(s);
            if (st == SQLITE_ROW)
                *total = (size_t)sqlite3_column_int64(s, 0);
            else {
                store_db_error(&sa->st, err, sa->path);
                rc = -1;
            }
            sqlite3_finalize(s);
        }
    }
    qbind_free(&qb);
    buf_free(&sql);
    return rc;
}

/* hit_from_row - columns HIT_COLUMNS of s into h */
static void hit_from_row(sqlite3_stmt *s, struct store_archive_hit *h)
{
    memset(h, 0, sizeof *h);
    h->id = sqlite3_column_int64(s, 0);
    h->received = sqlite3_column_int64(s, 1);
    h->direction = store_col_strdup(s, 2);
    const unsigned char *mid = sqlite3_column_text(s, 3);
    h->message_id = mid != NULL && *mid ? xstrdup((const char *)mid) : NULL;
    h->sender = store_col_strdup(s, 4);
    const unsigned char *disp = sqlite3_column_text(s, 5);
    h->from = store_col_strdup(s, disp != NULL && *disp ? 5 : 6);
    h->to = store_col_strdup(s, 7);
    h->subject = store_col_strdup(s, 8);
    h->size = (uint64_t)sqlite3_column_int64(s, 9);
    h->n_attachments = (size_t)sqlite3_column_int64(s, 10);
}

/* the best k matches so far, newest first */
struct topk {
    struct { int64_t received, id; char *snippet; } *v;
    size_t n, cap, k;
};

static void topk_free(struct topk *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i].snippet);
    free(t->v);
}

static bool newer(int64_t ra, int64_t ia, int64_t rb, int64_t ib)
{
    return ra > rb || (ra == rb && ia > ib);
}

/* topk_add - keep (received, id) if it is among the k newest; takes snippet */
static void topk_add(struct topk *t, int64_t received, int64_t id, char *snippet)
{
    if (t->n == t->k && !newer(received, id, t->v[t->n - 1].received, t->v[t->n - 1].id)) {
        free(snippet);
        return;
    }
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (newer(t->v[mid].received, t->v[mid].id, received, id))
            lo = mid + 1;
        else
            hi = mid;
    }
    if (t->n == t->k)
        free(t->v[--t->n].snippet);     /* the oldest drops out */
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 64;
        t->v = xreallocarray(t->v, t->cap, sizeof *t->v);
    }
    memmove(&t->v[lo + 1], &t->v[lo], (t->n - lo) * sizeof *t->v);
    t->v[lo].received = received;
    t->v[lo].id = id;
    t->v[lo].snippet = snippet;
    t->n++;
}

/* page_by_rowid - the newest offset + limit matches of a full-text query
 * without sorting every match: the index yields matches by descending
 * message id, and a message with a smaller id than x was received at most
 * x.received + lateness (struct order).  Once the k-th best so far is at
 * least that new, no unread match can enter the page.  A common word thus
 * costs about one page of index entries, not one per matching message. */
static int page_by_rowid(struct store_archive *sa, const char *where, const struct qbind *qb,
                         size_t k, bool with_snippets, struct topk *t, struct error *err)
{
    struct order ord;
    if (order_get(sa, &ord, err) < 0)
        return -1;
    struct buf sql;
    buf_init(&sql);
    /* snippets here, for the rows read only: a later "MATCH ? AND rowid = ?"
     * would walk a common word's whole posting list once per hit */
    buf_printf(&sql, "SELECT m.id, m.received%s%s ORDER BY fts.rowid DESC",
               with_snippets ? ", snippet(fts, 2, '[', ']', '...', 12)" : "", where);
    sqlite3_stmt *s;
    int rc = prepare_built(sa, buf_cstr(&sql), qb, &s, err);
    buf_free(&sql);
    if (rc < 0)
        return -1;
    t->k = k;
    int64_t lo = INT64_MAX;
    for (;;) {
        int st = sqlite3_step(s);
        if (st == SQLITE_DONE)
            break;
        if (st != SQLITE_ROW) {
            store_db_error(&sa->st, err, sa->path);
            rc = -1;
            break;
        }
        int64_t id = sqlite3_column_int64(s, 0), received = sqlite3_column_int64(s, 1);
        topk_add(t, received, id, with_snippets ? col_dup_or_null(s, 2) : NULL);
        if (received < lo)
            lo = received;
        if (t->n == k && t->v[k - 1].received >= lo + ord.lateness)
            break;
    }
    sqlite3_finalize(s);
    return rc;
}

/* page_hits - the rows of the ids t->v[offset..] */
static int page_hits(struct store_archive *sa, struct topk *t, size_t offset,
                     struct store_archive_hit **out, size_t *n, struct error *err)
{
    if (offset >= t->n)
        return 0;
    *out = xcalloc(t->n - offset, sizeof **out);
    sqlite3_stmt *s = stmt(sa, A_HIT);
    for (size_t i = offset; i < t->n; i++) {
        sqlite3_bind_int64(s, 1, t->v[i].id);
        int st = sqlite3_step(s);
        if (st == SQLITE_ROW) {
            struct store_archive_hit *h = &(*out)[(*n)++];
            hit_from_row(s, h);
            h->snippet = t->v[i].snippet;
            t->v[i].snippet = NULL;
        }
        sqlite3_reset(s);
        if (st != SQLITE_ROW) {
            store_db_error(&sa->st, err, sa->path);
            return -1;
        }
    }
    return 0;
}

int store_archive_search(struct store_archive *sa, const struct store_archive_query *q,
                         const struct store_archive_scope *scope, size_t offset, size_t limit,
                         size_t count_cap, struct store_archive_hit **out, size_t *n,
                         size_t *total, struct error *err)
{
    *out = NULL;
    *n = 0;
    bool dense;
    if (addr_dense(sa, q, scope, &dense, err) < 0)
        return STORE_ERR;
    if (total != NULL) {
        *total = 0;
        if (count_matches(sa, q, scope, dense, count_cap, total, err) < 0)
            return STORE_ERR;
    }
    if (limit == 0)
        return STORE_OK;
    struct buf where;
    struct qbind qb = { .n = 0 };
    bool match;
    buf_init(&where);
    int rc = build(q, scope, false, dense, &where, &qb, &match, err);
    if (rc == 0 && match && offset < SIZE_MAX - limit) {
        struct topk t = { 0 };
        rc = page_by_rowid(sa, buf_cstr(&where), &qb, offset + limit,
                           scope != NULL && scope->snippets, &t, err);
        if (rc == 0)
            rc = page_hits(sa, &t, offset, out, n, err);
        topk_free(&t);
    } else if (rc == 0) {
        struct buf sql;
        buf_init(&sql);
        buf_printf(&sql, "SELECT " HIT_COLUMNS "%s ORDER BY m.received DESC, m.id DESC"
                   " LIMIT %zu OFFSET %zu", buf_cstr(&where), limit, offset);
        sqlite3_stmt *s = NULL;
        rc = prepare_built(sa, buf_cstr(&sql), &qb, &s, err);
        buf_free(&sql);
        size_t cap = 0;
        while (rc == 0) {
            int st = sqlite3_step(s);
            if (st == SQLITE_DONE)
                break;
            if (st != SQLITE_ROW) {
                store_db_error(&sa->st, err, sa->path);
                rc = -1;
                break;
            }
            if (*n == cap) {
                cap = cap ? cap * 2 : 16;
                *out = xreallocarray(*out, cap, sizeof **out);
            }
            hit_from_row(s, &(*out)[(*n)++]);
        }
        sqlite3_finalize(s);
    }
    buf_free(&where);
    qbind_free(&qb);
    if (rc < 0) {
        store_archive_hits_free(*out, *n);
        *out = NULL;
        *n = 0;
        return STORE_ERR;
    }
    return STORE_OK;
}

int store_archive_explain(struct store_archive *sa, const struct store_archive_query *q,
                          const struct store_archive_scope *scope, char **plan, struct error *err)
{
    struct buf sql, out;
    struct qbind qb = { .n = 0 };
    bool match;
    *plan = NULL;
    buf_init(&sql);
    buf_init(&out);
    bool dense;
    if (addr_dense(sa, q, scope, &dense, err) < 0)
        return STORE_ERR;
    buf_append_str(&sql, "EXPLAIN QUERY PLAN SELECT m.id, m.received");
    int rc = build(q, scope, false, dense, &sql, &qb, &match, err);
    sqlite3_stmt *s = NULL;
    if (rc == 0) {
        /* the page query store_archive_search runs */
        buf_append_str(&sql, match ? " ORDER BY fts.rowid DESC"
                                   : " ORDER BY m.received DESC, m.id DESC LIMIT 50");
        rc = prepare_built(sa, buf_cstr(&sql), &qb, &s, err);
    }
    while (rc == 0 && sqlite3_step(s) == SQLITE_ROW)
        buf_printf(&out, "%s\n", (const char *)sqlite3_column_text(s, 3));
    sqlite3_finalize(s);
    qbind_free(&qb);
    buf_free(&sql);
    if (rc == 0)
        *plan = xstrdup(buf_cstr(&out));
    buf_free(&out);
    return rc < 0 ? STORE_ERR : STORE_OK;
}

void store_archive_hits_free(struct store_archive_hit *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(h[i].direction);
        free(h[i].message_id);
        free(h[i].sender);
        free(h[i].from);
        free(h[i].to);
        free(h[i].subject);
        free(h[i].snippet);
    }
    free(h);
}

int store_archive_each(struct store_archive *sa, const struct store_archive_query *q,
                       const struct store_archive_scope *scope, size_t max,
                       int (*cb)(void *arg, int64_t id), void *arg, struct error *err)
{
    struct buf sql;
    struct qbind qb = { .n = 0 };
    bool match;
    buf_init(&sql);
    bool dense;
    if (addr_dense(sa, q, scope, &dense, err) < 0)
        return STORE_ERR;
    buf_append_str(&sql, "SELECT m.id");
    int rc = build(q, scope, false, dense, &sql, &qb, &match, err);
    sqlite3_stmt *s = NULL;
    if (rc == 0) {
        buf_printf(&sql, " ORDER BY m.received DESC, m.id DESC LIMIT %zu", max);
        rc = prepare_built(sa, buf_cstr(&sql), &qb, &s, err);
    }
    buf_free(&sql);
    while (rc == 0) {
        int st = sqlite3_step(s);
        if (st == SQLITE_DONE)
            break;
        if (st != SQLITE_ROW) {
            store_db_error(&sa->st, err, sa->path);
            rc = -1;
            break;
        }
        if (cb(arg, sqlite3_column_int64(s, 0)) != 0)
            break;
    }
    sqlite3_finalize(s);
    qbind_free(&qb);
    return rc < 0 ? STORE_ERR : STORE_OK;
}

/* --- one message --- */

static char **split_lines(const char *s, size_t n)
{
    char **v = xcalloc(n + 1, sizeof *v);
    for (size_t i = 0; i < n; i++) {
        size_t len = strcspn(s, "\n");
        v[i] = xstrndup(s, len);
        s += len;
        if (*s == '\n')
            s++;
    }
    return v;
}

static int get_arrivals(struct store_archive *sa, struct store_archive_message *m,
                        struct error *err)
{
    sqlite3_stmt *s = stmt(sa, A_GET_ARRIVALS);
    sqlite3_bind_int64(s, 1, m->id);
    size_t cap = 0;
    int64_t *aid = NULL;
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (m->n_arrivals == cap) {
            cap = cap ? cap * 2 : 4;
            m->arrivals = xreallocarray(m->arrivals, cap, sizeof *m->arrivals);
            aid = xreallocarray(aid, cap, sizeof *aid);
        }
        struct store_archive_arrival *a = &m->arrivals[m->n_arrivals];
        memset(a, 0, sizeof *a);
        aid[m->n_arrivals++] = sqlite3_column_int64(s, 0);
        a->qid = store_col_strdup(s, 1);
        a->received = sqlite3_column_int64(s, 2);
        a->direction = store_col_strdup(s, 3);
        a->source = store_col_strdup(s, 4);
        a->client_addr = store_col_strdup(s, 5);
        a->sender = store_col_strdup(s, 6);
        a->journal = col_dup_or_null(s, 7);
        a->journal_error = col_dup_or_null(s, 8);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        goto fail;
    for (size_t i = 0; i < m->n_arrivals; i++) {
        struct store_archive_arrival *a = &m->arrivals[i];
        s = stmt(sa, A_GET_RCPTS);
        sqlite3_bind_int64(s, 1, aid[i]);
        size_t rcap = 0;
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
            if (a->n_rcpts == rcap) {
                rcap = rcap ? rcap * 2 : 4;
                a->rcpts = xreallocarray(a->rcpts, rcap, sizeof *a->rcpts);
            }
            struct store_archive_rcpt_row *r = &a->rcpts[a->n_rcpts++];
            r->addr = store_col_strdup(s, 0);
            r->kind = store_col_strdup(s, 1);
            r->expanded = col_dup_or_null(s, 2);
            r->forwarded = col_dup_or_null(s, 3);
        }
        sqlite3_reset(s);
        if (rc != SQLITE_DONE)
            goto fail;
    }
    free(aid);
    return 0;
fail:
    free(aid);
    store_db_error(&sa->st, err, sa->path);
    return -1;
}

static int get_body(struct store_archive *sa, struct store_archive_message *m, struct error *err)
{
    sqlite3_stmt *s = stmt(sa, A_GET_BODY);
    sqlite3_bind_int64(s, 1, m->id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        m->body_len = (size_t)sqlite3_column_bytes(s, 0);
        m->body = xmalloc(m->body_len ? m->body_len : 1);
        if (m->body_len)
            memcpy(m->body, sqlite3_column_blob(s, 0), m->body_len);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        store_db_error(&sa->st, err, sa->path);
        return -1;
    }
    return 0;
}

int store_archive_get(struct store_archive *sa, int64_t id, const struct store_archive_scope *scope,
                      bool with_body, struct store_archive_message *out, struct error *err)
{
    memset(out, 0, sizeof *out);
    if (scope != NULL && scope->owner != NULL) {
        char *o = xstrdup(scope->owner);
        str_lower(o);
        sqlite3_stmt *s = stmt(sa, A_OWNER_SEES);
        sqlite3_bind_text(s, 1, o, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(s, 2, id);
        int64_t one;
        int found = find_id(sa, s, &one, err);
        free(o);
        if (found < 0)
            return STORE_ERR;
        if (found == 0) {
            error_set(err, "id", "no such archived message: %lld", (long long)id);
            return STORE_NOT_FOUND;
        }
    }
    sqlite3_stmt *s = stmt(sa, A_GET_MSG);
    sqlite3_bind_int64(s, 1, id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(s);
        error_set(err, "id", "no such archived message: %lld", (long long)id);
        return STORE_NOT_FOUND;
    }
    if (rc != SQLITE_ROW) {
        sqlite3_reset(s);
        store_db_error(&sa->st, err, sa->path);
        return STORE_ERR;
    }
    out->id = sqlite3_column_int64(s, 0);
    const unsigned char *mid = sqlite3_column_text(s, 1);
    out->message_id = mid != NULL && *mid ? xstrdup((const char *)mid) : NULL;
    out->date = sqlite3_column_int64(s, 2);
    out->received = sqlite3_column_int64(s, 3);
    out->from = store_col_strdup(s, 4);
    out->to = store_col_strdup(s, 5);
    out->cc = store_col_strdup(s, 6);
    out->from_display = store_col_strdup(s, 7);
    out->subject = store_col_strdup(s, 8);
    out->size = (uint64_t)sqlite3_column_int64(s, 9);
    out->n_attachments = (size_t)sqlite3_column_int64(s, 11);
    const unsigned char *att = sqlite3_column_text(s, 10);
    out->attachments = split_lines(att != NULL ? (const char *)att : "", out->n_attachments);
    out->truncated = sqlite3_column_int(s, 12) != 0;
    out->codec = store_col_strdup(s, 13);
    sqlite3_reset(s);
    if (get_arrivals(sa, out, err) < 0 || (with_body && get_body(sa, out, err) < 0)) {
        store_archive_message_clear(out);
        return STORE_ERR;
    }
    return STORE_OK;
}

void store_archive_message_clear(struct store_archive_message *m)
{
    free(m->message_id);
    free(m->from);
    free(m->to);
    free(m->cc);
    free(m->from_display);
    free(m->subject);
    for (size_t i = 0; m->attachments != NULL && i < m->n_attachments; i++)
        free(m->attachments[i]);
    free(m->attachments);
    for (size_t i = 0; i < m->n_arrivals; i++) {
        struct store_archive_arrival *a = &m->arrivals[i];
        free(a->qid);
        free(a->direction);
        free(a->source);
        free(a->client_addr);
        free(a->sender);
        for (size_t k = 0; k < a->n_rcpts; k++) {
            free(a->rcpts[k].addr);
            free(a->rcpts[k].kind);
            free(a->rcpts[k].expanded);
            free(a->rcpts[k].forwarded);
        }
        free(a->rcpts);
        free(a->journal);
        free(a->journal_error);
    }
    free(m->arrivals);
    free(m->body);
    free(m->codec);
    memset(m, 0, sizeof *m);
}

/* --- retention --- */

/* held_json - the legal-hold addresses as a JSON array for json_each(),
 * so one prepared statement serves any number of them */
static char *held_json(const char *const *held, size_t n_held)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n_held; i++) {
        char *lc = xstrdup(held[i]);
        str_lower(lc);
        json_array_append_new(a, json_string(lc));
        free(lc);
    }
    char *s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    if (s == NULL)
        log_fatal("event=out_of_memory what=archive_held_json");
    return s;
}

/* purge_one - every row of message id; c gets what the counters lose */
static int purge_one(struct store_archive *sa, int64_t id, struct counts *c, struct error *err)
{
    sqlite3_stmt *q = stmt(sa, A_MSG_SIZES);
    sqlite3_bind_int64(q, 1, id);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        c->messages--;
        c->bytes -= sqlite3_column_int64(q, 0);
        c->stored -= sqlite3_column_int64(q, 1);
    }
    sqlite3_reset(q);
    if (rc == SQLITE_ROW) {
        q = stmt(sa, A_STATS_ARR);
        sqlite3_bind_int64(q, 1, id);
        rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            c->arrivals -= sqlite3_column_int64(q, 0);
            c->journal_reports -= sqlite3_column_int64(q, 1);
            c->journal_malformed -= sqlite3_column_int64(q, 2);
        }
        sqlite3_reset(q);
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        store_db_error(&sa->st, err, sa->path);
        return -1;
    }
    static const enum archive_stmt del[] = { A_DEL_FTS, A_DEL_BODY, A_DEL_ADDRS, A_DEL_MSG };
    for (size_t i = 0; i < sizeof del / sizeof *del; i++) {
        sqlite3_stmt *s = stmt(sa, del[i]);
        sqlite3_bind_int64(s, 1, id);
        if (step_done(sa, s, err) < 0)
            return -1;
    }
    return 0;
}

int store_archive_purge(struct store_archive *sa, int64_t cutoff, const char *const *held,
                        size_t n_held, size_t max, size_t *purged, struct error *err)
{
    *purged = 0;
    if (max == 0)
        return STORE_OK;
    char *json = held_json(held, n_held);
    sqlite3_stmt *s = NULL;
    const char *sql =
        "SELECT m.id FROM messages m WHERE m.latest < ?1 AND NOT EXISTS"
        " (SELECT 1 FROM addresses a WHERE a.message = m.id"
        "  AND a.addr IN (SELECT value FROM json_each(?2))) ORDER BY m.latest LIMIT ?3";
    if (exec(sa, "BEGIN IMMEDIATE", err) < 0) {
        free(json);
        return STORE_ERR;
    }
    if (sqlite3_prepare_v2(sa->st.db, sql, -1, &s, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_bind_int64(s, 1, cutoff);
    sqlite3_bind_text(s, 2, json, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, (int64_t)max);
    int64_t *ids = xcalloc(max, sizeof *ids);
    size_t n = 0;
    int rc;
    while (n < max && (rc = sqlite3_step(s)) == SQLITE_ROW)
        ids[n++] = sqlite3_column_int64(s, 0);
    if (n < max && rc != SQLITE_DONE) {
        free(ids);
        goto fail;
    }
    sqlite3_finalize(s);
    s = NULL;
    struct counts gone = { 0 };
    for (size_t i = 0; i < n; i++)
        if (purge_one(sa, ids[i], &gone, err) < 0) {
            free(ids);
            rollback(sa);
            free(json);
            return STORE_ERR;
        }
    free(ids);
    if (counts_apply(sa, &gone, err) < 0) {
        rollback(sa);
        free(json);
        return STORE_ERR;
    }
    free(json);
    if (exec(sa, "COMMIT", err) < 0) {
        rollback(sa);
        return STORE_ERR;
    }
    *purged = n;
    return STORE_OK;
fail:
    store_db_error(&sa->st, err, sa->path);
    sqlite3_finalize(s);
    rollback(sa);
    free(json);
    return STORE_ERR;
}

int store_archive_stats(struct store_archive *sa, struct store_archive_stats *out, struct error *err)
{
    memset(out, 0, sizeof *out);
    /* counters kept by ingest and purge: no scan of a million rows */
    const struct { const char *key; uint64_t *to; } kv[] = {
        { "messages", &out->messages }, { "arrivals", &out->arrivals },
        { "bytes", &out->bytes }, { "stored", &out->stored_bytes },
        { "journal_reports", &out->journal_reports },
        { "journal_malformed", &out->journal_malformed },
    };
    /* one read transaction: every figure from the same state */
    if (exec(sa, "BEGIN", err) < 0)
        return STORE_ERR;
    for (size_t i = 0; i < sizeof kv / sizeof *kv; i++) {
        int64_t v;
        if (meta_get(sa, kv[i].key, &v, err) < 0) {
            rollback(sa);
            return STORE_ERR;
        }
        *kv[i].to = v > 0 ? (uint64_t)v : 0;
    }
    sqlite3_stmt *s = stmt(sa, A_STATS_MSG);   /* min(received): the index's first entry */
    if (find_id(sa, s, &out->oldest, err) < 0) {
        rollback(sa);
        return STORE_ERR;
    }
    exec(sa, "COMMIT", err);
    return STORE_OK;
}
