/*
 * store_tracking.c - the message tracking database (store_tracking.h): a
 * SQLite file of its own (STATE/tracking.db), opened like the archive's
 * (store_sqlite_open, its own migrations in PRAGMA user_version), then
 * switched to synchronous=NORMAL: tracking is a record, not mail.
 *
 * Schema (tracking_migrations[]):
 *   messages  one row per transaction / queued message.  Lookups of an
 *             event's message run once per event: (session, txn) and qid
 *             are indexed.  client_ip is also kept normalised in ipbin (4
 *             octets for IPv4, IPv4-mapped IPv6 included, 16 for IPv6), so
 *             an exact address or a CIDR range is one index range
 *             (ip_range).  flags and fixed are what the outcome is computed
 *             from besides the recipients (outcome_of); outcome is stored
 *             so that a search by outcome is an index lookup.
 *   rcpts     (message, addr) unique, case-insensitive: the latest state of
 *             each recipient; orig keeps the address a forwarding rule
 *             rewrote (a search by recipient matches either).
 *   events    the timeline; kind and result by name (track.h).
 *
 * Searches: conditions with bound parameters only, keyset paging on id
 * (newest first).  Sender, recipient and subject are substrings (LIKE with
 * % and _ escaped): no B-tree index serves a substring, so those scan the
 * messages the other conditions (time range, outcome, address, cursor)
 * leave, a page at a time.
 *
 * Purge: by age, then by size, in batches of at most PURGE_BATCH messages,
 * each batch its own transaction (the readers on WAL are never held up
 * long); recipients and events cascade.  The file is given
 * auto_vacuum=INCREMENTAL (incremental_vacuum_on) so that, after a purge that freed much, the free
 * pages can be handed back a few at a time.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include "store_priv.h"
#include "store_tracking.h"
#include "../core/cidr.h"

struct store_tracking {
    struct store st;              /* db; the store_priv.h helpers take it */
    sqlite3_stmt **stmts;         /* tracking_sql[] */
    char *path;
};

/* stored string bounds (octets): the subject as RFC 5322 2.1.1 bounds a
 * line, replies and reasons a little more, everything else an address */
#define TRK_SUBJECT_MAX 998
#define TRK_REASON_MAX 1000
#define TRK_FIELD_MAX 320
#define PURGE_BATCH 1000
#define SEARCH_LIMIT_MAX 1000

/* --- schema --- */

static const char *const tracking_migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE messages ("
    "  id INTEGER PRIMARY KEY,"
    "  session TEXT NOT NULL, txn INTEGER NOT NULL, qid TEXT NOT NULL DEFAULT '',"
    "  first_us INTEGER NOT NULL, last_us INTEGER NOT NULL,"
    "  client_ip TEXT NOT NULL DEFAULT '', ipbin BLOB,"
    "  helo TEXT NOT NULL DEFAULT '', sender TEXT NOT NULL DEFAULT '',"
    "  subject TEXT NOT NULL DEFAULT '', message_id TEXT NOT NULL DEFAULT '',"
    "  size INTEGER NOT NULL DEFAULT 0, role TEXT NOT NULL DEFAULT '',"
    "  flags INTEGER NOT NULL DEFAULT 0, fixed TEXT NOT NULL DEFAULT '',"
    "  outcome TEXT NOT NULL DEFAULT 'open');"
    "CREATE INDEX messages_txn ON messages (session, txn);"
    "CREATE INDEX messages_qid ON messages (qid) WHERE qid <> '';"
    "CREATE INDEX messages_first ON messages (first_us);"
    "CREATE INDEX messages_last ON messages (last_us);"
    "CREATE INDEX messages_ip ON messages (ipbin);"
    "CREATE INDEX messages_msgid ON messages (message_id);"
    "CREATE INDEX messages_outcome ON messages (outcome, id);"
    "CREATE INDEX messages_sender ON messages (sender COLLATE NOCASE);"
    "CREATE TABLE rcpts ("
    "  message INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,"
    "  addr TEXT NOT NULL COLLATE NOCASE, orig TEXT NOT NULL DEFAULT '' COLLATE NOCASE,"
    "  state TEXT NOT NULL,"
    "  UNIQUE (message, addr));"
    "CREATE INDEX rcpts_addr ON rcpts (addr);"
    "CREATE TABLE events ("
    "  id INTEGER PRIMARY KEY,"
    "  message INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,"
    "  ts INTEGER NOT NULL, kind TEXT NOT NULL, result TEXT NOT NULL, code INTEGER NOT NULL,"
    "  dsn TEXT, rcpt TEXT, stage TEXT, check_name TEXT, reason TEXT, remote TEXT, tls TEXT,"
    "  actor TEXT, detail TEXT, size INTEGER NOT NULL, latency_ms INTEGER NOT NULL);"
    "CREATE INDEX events_message ON events (message, ts);",
};
#define TRACKING_SCHEMA_LATEST ((int)(sizeof tracking_migrations / sizeof *tracking_migrations))

/* what a search hit and a get show, in msg_from_row's order */
#define MSG_COLUMNS "id, first_us, last_us, qid, session, txn, client_ip, helo, sender, subject," \
                    " message_id, role, outcome, size"

enum tracking_stmt {
    T_FIND_TXN,
    T_FIND_QID,
    T_MSG_INSERT,
    T_MSG_UPDATE,
    T_MSG_STATE,
    T_MSG_OUTCOME,
    T_RCPT_SET,
    T_RCPT_FORWARD,
    T_RCPT_FORWARD_ADD,
    T_RCPT_BOUNCE_PENDING,
    T_RCPT_COUNTS,
    T_RCPT_LIST,
    T_EVENT_INSERT,
    T_GET_MSG,
    T_GET_EVENTS,
    T_PURGE_AGE,
    T_PURGE_OLDEST,
    T_COUNT_MSG,
    T_COUNT_EVENTS,
    T_OLDEST,
    T__COUNT
};

static const char *const tracking_sql[T__COUNT] = {
    [T_FIND_TXN] =
        "SELECT id FROM messages WHERE session = ?1 AND txn = ?2 ORDER BY id DESC LIMIT 1",
    [T_FIND_QID] = "SELECT id FROM messages WHERE qid = ?1 AND qid <> '' ORDER BY id DESC LIMIT 1",
    [T_MSG_INSERT] =
        "INSERT INTO messages (session, txn, qid, first_us, last_us) VALUES (?1, ?2, ?3, ?4, ?4)",
    /* every field an event carries fills the message; NULL leaves it */
    [T_MSG_UPDATE] =
        "UPDATE messages SET first_us = min(first_us, ?2), last_us = max(last_us, ?2),"
        " qid = coalesce(?3, qid), client_ip = coalesce(?4, client_ip),"
        " ipbin = CASE WHEN ?4 IS NULL THEN ipbin ELSE ?5 END, helo = coalesce(?6, helo),"
        " sender = coalesce(?7, sender), subject = coalesce(?8, subject),"
        " message_id = coalesce(?9, message_id), size = CASE WHEN ?10 > 0 THEN ?10 ELSE size END,"
        " role = coalesce(?11, role), flags = flags | ?12, fixed = coalesce(?13, fixed)"
        " WHERE id = ?1",
    [T_MSG_STATE] = "SELECT flags, fixed, role FROM messages WHERE id = ?1",
    [T_MSG_OUTCOME] = "UPDATE messages SET outcome = ?2 WHERE id = ?1 AND outcome <> ?2",
    [T_RCPT_SET] =
        "INSERT INTO rcpts (message, addr, state) VALUES (?1, ?2, ?3)"
        " ON CONFLICT (message, addr) DO UPDATE SET state = excluded.state",
    [T_RCPT_FORWARD] =
        "UPDATE OR IGNORE rcpts SET addr = ?3, orig = ?2 WHERE message = ?1 AND addr = ?2",
    [T_RCPT_FORWARD_ADD] =
        "INSERT OR IGNORE INTO rcpts (message, addr, orig, state) VALUES (?1, ?3, ?2, 'accepted')",
    [T_RCPT_BOUNCE_PENDING] =
        "UPDATE rcpts SET state = 'bounced'"
        " WHERE message = ?1 AND state IN ('accepted', 'deferred')",
    [T_RCPT_COUNTS] = "SELECT state, count(*) FROM rcpts WHERE message = ?1 GROUP BY state",
    [T_RCPT_LIST] = "SELECT addr, state FROM rcpts WHERE message = ?1 ORDER BY rowid",
    [T_EVENT_INSERT] =
        "INSERT INTO events (message, ts, kind, result, code, dsn, rcpt, stage, check_name, reason,"
        " remote, tls, actor, detail, size, latency_ms)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    [T_GET_MSG] = "SELECT " MSG_COLUMNS " FROM messages WHERE id = ?1",
    [T_GET_EVENTS] =
        "SELECT ts, kind, result, code, dsn, rcpt, stage, check_name, reason, remote, tls, actor,"
        " detail, size, latency_ms FROM events WHERE message = ?1 ORDER BY ts, id",
    [T_PURGE_AGE] =
        "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE last_us < ?1 LIMIT ?2)",
    [T_PURGE_OLDEST] =
        "DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY last_us LIMIT ?1)",
    [T_COUNT_MSG] = "SELECT count(*) FROM messages",
    [T_COUNT_EVENTS] = "SELECT count(*) FROM events",
    [T_OLDEST] = "SELECT coalesce(min(first_us), 0) FROM messages",
};

static sqlite3_stmt *stmt(struct store_tracking *st, enum tracking_stmt id)
{
    return store_stmt_reset(st->stmts[id]);
}

/* --- helpers --- */

static int exec(struct store_tracking *st, const char *sql, struct error *err)
{
    if (sqlite3_exec(st->st.db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        store_db_error(&st->st, err, st->path);
        return -1;
    }
    return 0;
}

static int step_done(struct store_tracking *st, sqlite3_stmt *s, struct error *err)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(&st->st, err, st->path);
        return -1;
    }
    return 0;
}

/* step_int - the first column of a one-row query; 0 when there is no row */
static int step_int(struct store_tracking *st, sqlite3_stmt *s, int64_t *out, struct error *err)
{
    int rc = sqlite3_step(s);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        store_db_error(&st->st, err, st->path);
        return -1;
    }
    return 0;
}

/* bounded_len - at most max octets of s, not cutting a UTF-8 sequence */
static size_t bounded_len(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max)
        return n;
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
        n--;
    return n;
}

/* bind_bounded - v cut to max octets, NULL when v is NULL */
static void bind_bounded(sqlite3_stmt *s, int i, const char *v, size_t max)
{
    if (v == NULL)
        sqlite3_bind_null(s, i);
    else
        sqlite3_bind_text(s, i, v, (int)bounded_len(v, max), SQLITE_TRANSIENT);
}

/* bind_nonempty - like bind_bounded, but "" is absent too */
static void bind_nonempty(sqlite3_stmt *s, int i, const char *v, size_t max)
{
    bind_bounded(s, i, v != NULL && *v != '\0' ? v : NULL, max);
}

/* strip_angles - a Message-ID without its <>, into dst */
static const char *strip_angles(const char *v, char *dst, size_t size)
{
    if (v == NULL)
        return NULL;
    size_t n = strlen(v);
    if (n >= 2 && v[0] == '<' && v[n - 1] == '>') {
        if (n - 2 >= size)
            n = size + 1;
        memcpy(dst, v + 1, n - 2);
        dst[n - 2] = '\0';
        return dst;
    }
    return v;
}

/* --- opening --- */

/* incremental_vacuum_on - a new file gets auto_vacuum=INCREMENTAL.  The
 * pragma only takes before the first table, and store_sqlite_open has
 * already switched to WAL and migrated; on a file with no message yet a
 * VACUUM applies it at no cost */
static int incremental_vacuum_on(struct store_tracking *st, struct error *err)
{
    sqlite3_stmt *s;
    int64_t mode, n;
    if (sqlite3_prepare_v2(st->st.db, "PRAGMA auto_vacuum", -1, &s, NULL) != SQLITE_OK) {
        store_db_error(&st->st, err, st->path);
        return -1;
    }
    int rc = step_int(st, s, &mode, err);
    sqlite3_finalize(s);
    if (rc < 0 || mode == 2)
        return rc;
    if (step_int(st, stmt(st, T_COUNT_MSG), &n, err) < 0)
        return -1;
    if (n > 0)
        return 0;   /* a file from elsewhere: space is reused all the same */
    if (sqlite3_exec(st->st.db, "PRAGMA auto_vacuum = INCREMENTAL; VACUUM", NULL, NULL, NULL) !=
        SQLITE_OK) {
        store_db_error(&st->st, err, st->path);
        return -1;
    }
    return 0;
}

struct store_tracking *store_tracking_open(const char *path, struct error *err)
{
    sqlite3 *db = store_sqlite_open(path, tracking_migrations, TRACKING_SCHEMA_LATEST,
                                    TRACKING_SCHEMA_LATEST, err);
    if (db == NULL)
        return NULL;
    struct store_tracking *st = xcalloc(1, sizeof *st);
    st->st.db = db;
    st->path = xstrdup(path);
    /* a power cut may lose the last events, never corrupt the file (WAL) */
    if (sqlite3_exec(db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL) != SQLITE_OK) {
        store_db_error(&st->st, err, path);
        store_tracking_close(st);
        return NULL;
    }
    if (store_stmts_prepare(&st->st, path, "tracking", tracking_sql, T__COUNT, &st->stmts,
                            err) < 0 || incremental_vacuum_on(st, err) < 0) {
        store_tracking_close(st);
        return NULL;
    }
    return st;
}

void store_tracking_close(struct store_tracking *st)
{
    if (st == NULL)
        return;
    store_stmts_finalize(&st->stmts, T__COUNT);
    if (sqlite3_close(st->st.db) != SQLITE_OK)
        log_error("event=tracking_store_close error=\"%s\"", sqlite3_errmsg(st->st.db));
    free(st->path);
    free(st);
}

/* --- the outcome of a message --- */

/* message flags, from the events that are not about one recipient */
enum {
    F_QUEUED = 1,        /* QUEUED seen */
    F_REFUSED5 = 2,      /* 5xx at connect / MAIL */
    F_REFUSED4 = 4,      /* 4xx at connect / MAIL */
    F_DATA5 = 8,         /* the content stage refused it (5xx) */
    F_DATA4 = 16,        /* ... with 4xx */
    F_ARCHIVED = 32,     /* ARCHIVED seen: the outcome of journal mail */
};

enum rcpt_state { R_ACCEPTED, R_REJECTED, R_TEMPFAILED, R_DELIVERED, R_DEFERRED, R_BOUNCED,
                  R__COUNT };
static const char *const rcpt_state_names[R__COUNT] = {
    [R_ACCEPTED] = "accepted", [R_REJECTED] = "rejected", [R_TEMPFAILED] = "tempfailed",
    [R_DELIVERED] = "delivered", [R_DEFERRED] = "deferred", [R_BOUNCED] = "bounced",
};

static const char *const outcome_names[] = {
    "open", "rejected", "tempfailed", "queued", "deferred", "held", "delivered", "bounced",
    "partial", "deleted", "archived",
};

static bool outcome_known(const char *s)
{
    for (size_t i = 0; i < sizeof outcome_names / sizeof *outcome_names; i++)
        if (strcmp(outcome_names[i], s) == 0)
            return true;
    return false;
}

/* outcome_of - store_tracking.h's rules: fixed (held / deleted / archived)
 * decides; before queueing the refusals do; after, the recipients: any
 * pending one keeps it queued (deferred when one was deferred), then
 * delivered / bounced / partial */
static const char *outcome_of(int64_t flags, const char *fixed, const char *role,
                              const int64_t n[R__COUNT])
{
    if (fixed[0] != '\0')
        return fixed;
    /* every accepted message may be archived; journal mail ends there */
    if ((flags & F_ARCHIVED) && strcmp(role, "journal") == 0)
        return "archived";
    if (!(flags & F_QUEUED)) {
        if (flags & F_DATA5)
            return "rejected";
        if (flags & F_DATA4)
            return "tempfailed";
        if (n[R_ACCEPTED] > 0)
            return "open";     /* recipients accepted, no end of data yet (or never) */
        if ((flags & F_REFUSED5) || n[R_REJECTED] > 0)
            return "rejected";
        if ((flags & F_REFUSED4) || n[R_TEMPFAILED] > 0)
            return "tempfailed";
        return "open";
    }
    if (n[R_DEFERRED] > 0)
        return "deferred";
    if (n[R_ACCEPTED] > 0)
        return "queued";
    if (n[R_DELIVERED] > 0 && n[R_BOUNCED] > 0)
        return "partial";
    if (n[R_DELIVERED] > 0)
        return "delivered";
    if (n[R_BOUNCED] > 0)
        return "bounced";
    return "queued";
}

static int rcpt_state_index(const char *s)
{
    for (int i = 0; i < R__COUNT; i++)
        if (strcmp(rcpt_state_names[i], s) == 0)
            return i;
    return -1;
}

/* outcome_update - recompute and store the outcome of message id */
static int outcome_update(struct store_tracking *st, int64_t id, struct error *err)
{
    int64_t n[R__COUNT] = {0}, flags = 0;
    char fixed[16] = "", role[16] = "";
    sqlite3_stmt *s = stmt(st, T_MSG_STATE);
    sqlite3_bind_int64(s, 1, id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        flags = sqlite3_column_int64(s, 0);
        str_copy(fixed, sizeof fixed, (const char *)sqlite3_column_text(s, 1));
        str_copy(role, sizeof role, (const char *)sqlite3_column_text(s, 2));
    }
    sqlite3_reset(s);
    if (rc != SQLITE_ROW)
        goto fail;
    s = stmt(st, T_RCPT_COUNTS);
    sqlite3_bind_int64(s, 1, id);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int i = rcpt_state_index((const char *)sqlite3_column_text(s, 0));
        if (i >= 0)
            n[i] = sqlite3_column_int64(s, 1);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        goto fail;
    s = stmt(st, T_MSG_OUTCOME);
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_text(s, 2, outcome_of(flags, fixed, role, n), -1, SQLITE_STATIC);
    return step_done(st, s, err);
fail:
    store_db_error(&st->st, err, st->path);
    return -1;
}

/* --- writing events --- */

/* event_message - the message an event belongs to, created when new; 0
 * when the event names neither a transaction nor a queue id */
static int event_message(struct store_tracking *st, const struct track_event *ev, int64_t *id,
                         struct error *err)
{
    sqlite3_stmt *s;
    *id = 0;
    if (ev->session[0] != '\0') {
        s = stmt(st, T_FIND_TXN);
        sqlite3_bind_text(s, 1, ev->session, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 2, ev->txn);
    } else if (ev->qid[0] != '\0') {
        s = stmt(st, T_FIND_QID);
        sqlite3_bind_text(s, 1, ev->qid, -1, SQLITE_STATIC);
    } else {
        return 0;
    }
    if (step_int(st, s, id, err) < 0)
        return -1;
    if (*id != 0)
        return 0;
    s = stmt(st, T_MSG_INSERT);
    sqlite3_bind_text(s, 1, ev->session, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, ev->txn);
    sqlite3_bind_text(s, 3, ev->qid, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, ev->ts_us);
    if (step_done(st, s, err) < 0)
        return -1;
    *id = sqlite3_last_insert_rowid(st->st.db);
    return 0;
}

/* what an event does to its message: flags set for each verdict, and the
 * outcome it fixes ("" clears it, NULL leaves it) */
static int64_t event_flags(const struct track_event *ev)
{
    bool five = ev->result == TRACK_REJECTED, four = ev->result == TRACK_TEMPFAILED;
    switch (ev->kind) {
    case TRACK_CONNECT:
    case TRACK_MAIL:
        return five ? F_REFUSED5 : four ? F_REFUSED4 : 0;
    case TRACK_DATA:
        return five ? F_DATA5 : four ? F_DATA4 : 0;
    case TRACK_QUEUED:
        return F_QUEUED;
    case TRACK_ARCHIVED:
        return F_ARCHIVED;
    default:
        return 0;
    }
}

static const char *event_fixed(const struct track_event *ev)
{
    switch (ev->kind) {
    case TRACK_HELD:
        return "held";
    case TRACK_RELEASED:
        return "";
    case TRACK_DELETED:
        return "deleted";
    default:
        return NULL;
    }
}

static int message_update(struct store_tracking *st, int64_t id, const struct track_event *ev,
                          struct error *err)
{
    char mid[TRK_REASON_MAX + 1], bin[16];
    int family;
    sqlite3_stmt *s = stmt(st, T_MSG_UPDATE);
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int64(s, 2, ev->ts_us);
    bind_nonempty(s, 3, ev->qid, TRACK_QID_MAX);
    bind_nonempty(s, 4, ev->client_ip, TRK_FIELD_MAX);
    if (ev->client_ip != NULL && cidr_addr_from_text(ev->client_ip, &family,
                                                     (unsigned char *)bin) == 0)
        sqlite3_bind_blob(s, 5, bin, family == AF_INET ? 4 : 16, SQLITE_TRANSIENT);
    bind_nonempty(s, 6, ev->helo, TRK_FIELD_MAX);
    bind_bounded(s, 7, ev->kind == TRACK_MAIL || ev->kind == TRACK_QUEUED ? ev->sender : NULL,
                 TRK_FIELD_MAX);
    bind_nonempty(s, 8, ev->subject, TRK_SUBJECT_MAX);
    bind_nonempty(s, 9, strip_angles(ev->message_id, mid, sizeof mid), TRK_FIELD_MAX);
    bool sized = ev->kind == TRACK_MAIL || ev->kind == TRACK_DATA || ev->kind == TRACK_QUEUED;
    sqlite3_bind_int64(s, 10, sized ? (int64_t)ev->size : 0);
    bind_nonempty(s, 11, track_role_name(ev->role), 16);
    sqlite3_bind_int64(s, 12, event_flags(ev));
    const char *fixed = event_fixed(ev);
    bind_bounded(s, 13, fixed, 16);
    return step_done(st, s, err);
}

/* rcpt_state_of - the state an event gives its recipient, NULL: none */
static const char *rcpt_state_of(const struct track_event *ev)
{
    if (ev->kind == TRACK_RCPT)
        return ev->result == TRACK_REJECTED     ? "rejected"
               : ev->result == TRACK_TEMPFAILED ? "tempfailed"
                                                : "accepted";
    if (ev->kind == TRACK_ATTEMPT)
        return ev->result == TRACK_DELIVERED ? "delivered"
               : ev->result == TRACK_FAILED  ? "bounced"
                                             : "deferred";
    if (ev->kind == TRACK_BOUNCED)
        return "bounced";
    return NULL;
}

static int rcpt_update(struct store_tracking *st, int64_t id, const struct track_event *ev,
                       struct error *err)
{
    sqlite3_stmt *s;
    if (ev->kind == TRACK_FORWARDED && ev->rcpt != NULL && ev->detail != NULL &&
        ev->detail[0] != '\0') {
        /* the first target takes the recipient's row, further ones are added */
        s = stmt(st, T_RCPT_FORWARD);
        sqlite3_bind_int64(s, 1, id);
        bind_bounded(s, 2, ev->rcpt, TRK_FIELD_MAX);
        bind_bounded(s, 3, ev->detail, TRK_FIELD_MAX);
        if (step_done(st, s, err) < 0)
            return -1;
        if (sqlite3_changes(st->st.db) > 0)
            return 0;
        s = stmt(st, T_RCPT_FORWARD_ADD);
        sqlite3_bind_int64(s, 1, id);
        bind_bounded(s, 2, ev->rcpt, TRK_FIELD_MAX);
        bind_bounded(s, 3, ev->detail, TRK_FIELD_MAX);
        return step_done(st, s, err);
    }
    const char *state = rcpt_state_of(ev);
    if (state == NULL)
        return 0;
    if (ev->rcpt == NULL || ev->rcpt[0] == '\0') {
        if (ev->kind != TRACK_BOUNCED)
            return 0;
        s = stmt(st, T_RCPT_BOUNCE_PENDING);   /* the whole message given up */
        sqlite3_bind_int64(s, 1, id);
        return step_done(st, s, err);
    }
    s = stmt(st, T_RCPT_SET);
    sqlite3_bind_int64(s, 1, id);
    bind_bounded(s, 2, ev->rcpt, TRK_FIELD_MAX);
    sqlite3_bind_text(s, 3, state, -1, SQLITE_STATIC);
    return step_done(st, s, err);
}

static int event_insert(struct store_tracking *st, int64_t id, const struct track_event *ev,
                        struct error *err)
{
    sqlite3_stmt *s = stmt(st, T_EVENT_INSERT);
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int64(s, 2, ev->ts_us);
    sqlite3_bind_text(s, 3, track_kind_name(ev->kind), -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, track_result_name(ev->result), -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 5, ev->code);
    bind_bounded(s, 6, ev->dsn, 16);
    bind_bounded(s, 7, ev->rcpt, TRK_FIELD_MAX);
    bind_bounded(s, 8, ev->stage, TRK_FIELD_MAX);
    bind_bounded(s, 9, ev->check, TRK_FIELD_MAX);
    bind_bounded(s, 10, ev->reason, TRK_REASON_MAX);
    bind_bounded(s, 11, ev->remote, TRK_FIELD_MAX);
    bind_bounded(s, 12, ev->tls, TRK_FIELD_MAX);
    bind_bounded(s, 13, ev->actor, TRK_FIELD_MAX);
    bind_bounded(s, 14, ev->detail, TRK_FIELD_MAX);
    sqlite3_bind_int64(s, 15, (int64_t)ev->size);
    sqlite3_bind_int64(s, 16, ev->latency_ms);
    return step_done(st, s, err);
}

/* write_one - one event: its message, the message's fields, the
 * recipient, the timeline, the outcome */
static int write_one(struct store_tracking *st, const struct track_event *ev, struct error *err)
{
    int64_t id;
    if (event_message(st, ev, &id, err) < 0)
        return -1;
    if (id == 0) {
        log_warn("event=tracking_event_orphan kind=%s reason=\"neither a session nor a queue id\"",
                 track_kind_name(ev->kind));
        return 0;
    }
    if (message_update(st, id, ev, err) < 0 || rcpt_update(st, id, ev, err) < 0 ||
        event_insert(st, id, ev, err) < 0)
        return -1;
    return outcome_update(st, id, err);
}

int store_tracking_write(struct store_tracking *st, const struct track_event *events, size_t n,
                         struct error *err)
{
    memset(err, 0, sizeof *err);
    if (exec(st, "BEGIN IMMEDIATE", err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (write_one(st, &events[i], err) < 0) {
            sqlite3_exec(st->st.db, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
    }
    if (exec(st, "COMMIT", err) < 0) {
        sqlite3_exec(st->st.db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

/* --- reading --- */

static char *col_dup(sqlite3_stmt *s, int c)
{
    return store_col_strdup(s, c);
}

static char *col_dup_null(sqlite3_stmt *s, int c)
{
    return sqlite3_column_type(s, c) == SQLITE_NULL ? NULL : store_col_strdup(s, c);
}

static void col_copy(sqlite3_stmt *s, int c, char *dst, size_t size)
{
    const char *v = (const char *)sqlite3_column_text(s, c);
    str_copy(dst, size, v ? v : "");
}

/* msg_from_row - MSG_COLUMNS into m (recipients apart: rcpts_load) */
static void msg_from_row(sqlite3_stmt *s, struct store_tracking_msg *m)
{
    memset(m, 0, sizeof *m);
    m->id = sqlite3_column_int64(s, 0);
    m->first_us = sqlite3_column_int64(s, 1);
    m->last_us = sqlite3_column_int64(s, 2);
    col_copy(s, 3, m->qid, sizeof m->qid);
    col_copy(s, 4, m->session, sizeof m->session);
    m->txn = (uint32_t)sqlite3_column_int64(s, 5);
    m->client_ip = col_dup(s, 6);
    m->helo = col_dup(s, 7);
    m->sender = col_dup(s, 8);
    m->subject = col_dup(s, 9);
    m->message_id = col_dup(s, 10);
    col_copy(s, 11, m->role, sizeof m->role);
    col_copy(s, 12, m->outcome, sizeof m->outcome);
    m->size = (uint64_t)sqlite3_column_int64(s, 13);
}

static int rcpts_load(struct store_tracking *st, struct store_tracking_msg *m, struct error *err)
{
    sqlite3_stmt *s = stmt(st, T_RCPT_LIST);
    size_t cap = 0;
    int rc;
    sqlite3_bind_int64(s, 1, m->id);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (m->n_rcpts == cap) {
            cap = cap ? cap * 2 : 4;
            m->rcpts = xreallocarray(m->rcpts, cap, sizeof *m->rcpts);
            m->rcpt_states = xreallocarray(m->rcpt_states, cap, sizeof *m->rcpt_states);
        }
        m->rcpts[m->n_rcpts] = col_dup(s, 0);
        m->rcpt_states[m->n_rcpts++] = col_dup(s, 1);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(&st->st, err, st->path);
        return -1;
    }
    return 0;
}

void store_tracking_msg_clear(struct store_tracking_msg *m)
{
    if (m == NULL)
        return;
    free(m->client_ip);
    free(m->helo);
    free(m->sender);
    free(m->subject);
    free(m->message_id);
    for (size_t i = 0; i < m->n_rcpts; i++) {
        free(m->rcpts[i]);
        free(m->rcpt_states[i]);
    }
    free(m->rcpts);
    free(m->rcpt_states);
    memset(m, 0, sizeof *m);
}

void store_tracking_msgs_free(struct store_tracking_msg *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        store_tracking_msg_clear(&m[i]);
    free(m);
}

void store_tracking_events_free(struct store_tracking_event *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(e[i].rcpt);
        free(e[i].stage);
        free(e[i].check);
        free(e[i].dsn);
        free(e[i].reason);
        free(e[i].remote);
        free(e[i].tls);
        free(e[i].actor);
        free(e[i].detail);
    }
    free(e);
}

/* --- search --- */

/* the conditions of one search: SQL text and its bound values */
#define QBIND_MAX 16
struct qbuild {
    struct buf sql;
    enum { QB_TEXT, QB_INT, QB_BLOB } type[QBIND_MAX];
    char *text[QBIND_MAX];
    int64_t num[QBIND_MAX];
    unsigned char blob[QBIND_MAX][16];
    int blob_len[QBIND_MAX];
    int n;
};

static int qb_next(struct qbuild *qb)
{
    if (qb->n >= QBIND_MAX)
        log_fatal("event=store_bug reason=\"tracking search binds more than %d values\"",
                  QBIND_MAX);
    return ++qb->n;
}

static void qb_int(struct qbuild *qb, const char *cond, int64_t v)
{
    int i = qb_next(qb);
    qb->type[i - 1] = QB_INT;
    qb->num[i - 1] = v;
    buf_printf(&qb->sql, cond, i);
}

static void qb_text(struct qbuild *qb, const char *cond, char *v)
{
    int i = qb_next(qb);
    qb->type[i - 1] = QB_TEXT;
    qb->text[i - 1] = v;
    buf_printf(&qb->sql, cond, i);
}

/* like_pattern - "%v%" with LIKE's metacharacters escaped by '\' */
static char *like_pattern(const char *v)
{
    struct buf b;
    buf_init(&b);
    buf_append(&b, "%", 1);
    for (const char *p = v; *p != '\0'; p++) {
        if (*p == '%' || *p == '_' || *p == '\\')
            buf_append(&b, "\\", 1);
        buf_append(&b, p, 1);
    }
    buf_append(&b, "%", 1);
    char *pattern = xstrdup(buf_cstr(&b));
    buf_free(&b);
    return pattern;
}

/* ip_range - the ipbin bounds of an address or CIDR range */
static int ip_range(struct qbuild *qb, const char *text, struct error *err)
{
    struct cidr c;
    if (cidr_parse(text, &c, err) < 0) {
        error_set(err, "client_ip", "client_ip: %s", err->msg);
        return -1;
    }
    int len = c.family == AF_INET ? 4 : 16;
    unsigned char lo[16], hi[16];
    for (int i = 0; i < len; i++) {
        int bits = c.prefix - 8 * i;
        unsigned mask = bits >= 8 ? 0xff : bits <= 0 ? 0 : (0xff00u >> bits) & 0xff;
        lo[i] = c.addr[i] & mask;
        hi[i] = (unsigned char)(lo[i] | (~mask & 0xff));
    }
    for (int k = 0; k < 2; k++) {
        int i = qb_next(qb);
        qb->type[i - 1] = QB_BLOB;
        memcpy(qb->blob[i - 1], k == 0 ? lo : hi, (size_t)len);
        qb->blob_len[i - 1] = len;
    }
    buf_printf(&qb->sql, " AND m.ipbin BETWEEN ?%d AND ?%d AND length(m.ipbin) = %d",
               qb->n - 1, qb->n, len);
    return 0;
}

/* query_check - bounds of every field; err->field names the bad one */
static int query_check(const struct store_tracking_query *q, struct error *err)
{
    const struct { const char *name, *v; } strs[] = {
        { "sender", q->sender }, { "rcpt", q->rcpt }, { "subject", q->subject },
        { "message_id", q->message_id }, { "qid", q->qid }, { "client_ip", q->client_ip },
        { "outcome", q->outcome },
    };
    for (size_t i = 0; i < sizeof strs / sizeof *strs; i++)
        if (strs[i].v != NULL && strlen(strs[i].v) > TRK_SUBJECT_MAX) {
            error_set(err, strs[i].name, "%s: longer than %d octets", strs[i].name,
                      TRK_SUBJECT_MAX);
            return -1;
        }
    if (q->limit < 1 || q->limit > SEARCH_LIMIT_MAX) {
        error_set(err, "limit", "limit: must be 1 to %d", SEARCH_LIMIT_MAX);
        return -1;
    }
    if (q->outcome != NULL && !outcome_known(q->outcome)) {
        error_set(err, "outcome", "outcome: unknown (open, rejected, tempfailed, queued, "
                  "deferred, held, delivered, bounced, partial, deleted, archived)");
        return -1;
    }
    if (q->after_us < 0 || q->before_us < 0 || q->cursor < 0) {
        const char *f = q->cursor < 0 ? "cursor" : q->after_us < 0 ? "after" : "before";
        error_set(err, f, "%s: must not be negative", f);
        return -1;
    }
    return 0;
}

static int query_build(const struct store_tracking_query *q, struct qbuild *qb, struct error *err)
{
    char mid[TRK_SUBJECT_MAX + 1];
    buf_printf(&qb->sql, "SELECT " MSG_COLUMNS " FROM messages m WHERE 1");
    if (q->cursor > 0)
        qb_int(qb, " AND m.id < ?%d", q->cursor);
    if (q->after_us > 0)
        qb_int(qb, " AND m.first_us >= ?%d", q->after_us);
    if (q->before_us > 0)
        qb_int(qb, " AND m.first_us < ?%d", q->before_us);
    if (q->outcome != NULL)
        qb_text(qb, " AND m.outcome = ?%d", xstrdup(q->outcome));
    if (q->qid != NULL && q->qid[0] != '\0')
        qb_text(qb, " AND m.qid = ?%d", xstrdup(q->qid));
    if (q->message_id != NULL && q->message_id[0] != '\0')
        qb_text(qb, " AND m.message_id = ?%d",
                xstrdup(strip_angles(q->message_id, mid, sizeof mid)));
    if (q->client_ip != NULL && q->client_ip[0] != '\0' && ip_range(qb, q->client_ip, err) < 0)
        return -1;
    if (q->sender != NULL && q->sender[0] != '\0')
        qb_text(qb, " AND m.sender LIKE ?%d ESCAPE '\\'", like_pattern(q->sender));
    if (q->subject != NULL && q->subject[0] != '\0')
        qb_text(qb, " AND m.subject LIKE ?%d ESCAPE '\\'", like_pattern(q->subject));
    if (q->rcpt != NULL && q->rcpt[0] != '\0')
        qb_text(qb, " AND EXISTS (SELECT 1 FROM rcpts r WHERE r.message = m.id AND"
                " (r.addr LIKE ?%1$d ESCAPE '\\' OR r.orig LIKE ?%1$d ESCAPE '\\'))",
                like_pattern(q->rcpt));
    qb_int(qb, " ORDER BY m.id DESC LIMIT ?%d", q->limit + 1);
    return 0;
}

static void qb_bind(struct qbuild *qb, sqlite3_stmt *s)
{
    for (int i = 0; i < qb->n; i++) {
        if (qb->type[i] == QB_INT)
            sqlite3_bind_int64(s, i + 1, qb->num[i]);
        else if (qb->type[i] == QB_TEXT)
            sqlite3_bind_text(s, i + 1, qb->text[i], -1, SQLITE_STATIC);
        else
            sqlite3_bind_blob(s, i + 1, qb->blob[i], qb->blob_len[i], SQLITE_STATIC);
    }
}

static void qb_free(struct qbuild *qb)
{
    for (int i = 0; i < qb->n; i++)
        if (qb->type[i] == QB_TEXT)
            free(qb->text[i]);
    buf_free(&qb->sql);
}

int store_tracking_search(struct store_tracking *st, const struct store_tracking_query *q,
                          struct store_tracking_msg **out, size_t *n, int64_t *next_cursor,
                          struct error *err)
{
    struct qbuild qb = {0};
    sqlite3_stmt *s = NULL;
    int rc = -1;

    memset(err, 0, sizeof *err);
    *out = NULL;
    *n = 0;
    *next_cursor = 0;
    if (query_check(q, err) < 0)
        return STORE_ERR;
    buf_init(&qb.sql);
    if (query_build(q, &qb, err) < 0)
        goto done;
    buf_append(&qb.sql, "", 1);
    if (sqlite3_prepare_v2(st->st.db, qb.sql.data, -1, &s, NULL) != SQLITE_OK) {
        store_db_error(&st->st, err, st->path);
        goto done;
    }
    qb_bind(&qb, s);
    struct store_tracking_msg *m = xcalloc((size_t)q->limit, sizeof *m);
    int step;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == (size_t)q->limit) {
            *next_cursor = m[*n - 1].id;   /* one more exists */
            break;
        }
        msg_from_row(s, &m[(*n)++]);
    }
    if (step != SQLITE_ROW && step != SQLITE_DONE) {
        store_db_error(&st->st, err, st->path);
        store_tracking_msgs_free(m, *n);
        *n = 0;
        *next_cursor = 0;
        goto done;
    }
    for (size_t i = 0; i < *n; i++)
        if (rcpts_load(st, &m[i], err) < 0) {
            store_tracking_msgs_free(m, *n);
            *n = 0;
            *next_cursor = 0;
            goto done;
        }
    *out = m;
    rc = 0;
done:
    sqlite3_finalize(s);
    qb_free(&qb);
    return rc;
}

/* --- one message --- */

static int events_load(struct store_tracking *st, int64_t id, struct store_tracking_event **events,
                       size_t *n_events, struct error *err)
{
    sqlite3_stmt *s = stmt(st, T_GET_EVENTS);
    struct store_tracking_event *e = NULL;
    size_t n = 0, cap = 0;
    int rc;
    sqlite3_bind_int64(s, 1, id);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            e = xreallocarray(e, cap, sizeof *e);
        }
        struct store_tracking_event *x = &e[n++];
        memset(x, 0, sizeof *x);
        x->ts_us = sqlite3_column_int64(s, 0);
        col_copy(s, 1, x->kind, sizeof x->kind);
        col_copy(s, 2, x->result, sizeof x->result);
        x->code = sqlite3_column_int(s, 3);
        x->dsn = col_dup_null(s, 4);
        x->rcpt = col_dup_null(s, 5);
        x->stage = col_dup_null(s, 6);
        x->check = col_dup_null(s, 7);
        x->reason = col_dup_null(s, 8);
        x->remote = col_dup_null(s, 9);
        x->tls = col_dup_null(s, 10);
        x->actor = col_dup_null(s, 11);
        x->detail = col_dup_null(s, 12);
        x->size = (uint64_t)sqlite3_column_int64(s, 13);
        x->latency_ms = (uint32_t)sqlite3_column_int64(s, 14);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(&st->st, err, st->path);
        store_tracking_events_free(e, n);
        return -1;
    }
    *events = e;
    *n_events = n;
    return 0;
}

int store_tracking_get(struct store_tracking *st, int64_t id, const char *qid,
                       struct store_tracking_msg *msg, struct store_tracking_event **events,
                       size_t *n_events, struct error *err)
{
    memset(err, 0, sizeof *err);
    memset(msg, 0, sizeof *msg);
    *events = NULL;
    *n_events = 0;
    if (id == 0) {
        if (qid == NULL || qid[0] == '\0') {
            error_set(err, "qid", "qid: required when there is no id");
            return STORE_ERR;
        }
        sqlite3_stmt *s = stmt(st, T_FIND_QID);
        sqlite3_bind_text(s, 1, qid, -1, SQLITE_STATIC);
        if (step_int(st, s, &id, err) < 0)
            return STORE_ERR;
    }
    sqlite3_stmt *s = stmt(st, T_GET_MSG);
    sqlite3_bind_int64(s, 1, id);
    int rc = id > 0 ? sqlite3_step(s) : SQLITE_DONE;
    if (rc == SQLITE_ROW)
        msg_from_row(s, msg);
    sqlite3_reset(s);
    if (rc == SQLITE_DONE) {
        error_set(err, id > 0 || qid == NULL ? "id" : "qid", "no such message");
        return STORE_NOT_FOUND;
    }
    if (rc != SQLITE_ROW) {
        store_db_error(&st->st, err, st->path);
        return STORE_ERR;
    }
    if (rcpts_load(st, msg, err) < 0 || events_load(st, id, events, n_events, err) < 0) {
        store_tracking_msg_clear(msg);
        return STORE_ERR;
    }
    return STORE_OK;
}

/* --- bounds --- */

/* bytes_in_use - pages that hold data (not on the free list) * page size */
static int bytes_in_use(struct store_tracking *st, int64_t *bytes, int64_t *free_pages,
                        struct error *err)
{
    int64_t v[3];
    static const char *const pragmas[3] = {
        "PRAGMA page_count", "PRAGMA freelist_count", "PRAGMA page_size",
    };
    for (int i = 0; i < 3; i++) {
        sqlite3_stmt *s;
        if (sqlite3_prepare_v2(st->st.db, pragmas[i], -1, &s, NULL) != SQLITE_OK) {
            store_db_error(&st->st, err, st->path);
            return -1;
        }
        if (step_int(st, s, &v[i], err) < 0) {
            sqlite3_finalize(s);
            return -1;
        }
        sqlite3_finalize(s);
    }
    *bytes = (v[0] - v[1]) * v[2];
    if (free_pages != NULL)
        *free_pages = v[1];
    return 0;
}

/* purge_batch - one bound DELETE in its own transaction; *n rows */
static int purge_batch(struct store_tracking *st, sqlite3_stmt *s, int64_t *n, struct error *err)
{
    if (exec(st, "BEGIN IMMEDIATE", err) < 0)
        return -1;
    if (step_done(st, s, err) < 0) {
        sqlite3_exec(st->st.db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    *n = sqlite3_changes(st->st.db);
    if (exec(st, "COMMIT", err) < 0) {
        sqlite3_exec(st->st.db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

static int purge_by_age(struct store_tracking *st, int64_t before_us, int64_t *removed,
                        struct error *err)
{
    int64_t n;
    do {
        sqlite3_stmt *s = stmt(st, T_PURGE_AGE);
        sqlite3_bind_int64(s, 1, before_us);
        sqlite3_bind_int64(s, 2, PURGE_BATCH);
        if (purge_batch(st, s, &n, err) < 0)
            return -1;
        *removed += n;
    } while (n == PURGE_BATCH);
    return 0;
}

/* purge_by_size - the oldest first while more than max_bytes are in use;
 * each batch is sized from the average message (rows freed do not free
 * pages one for one, so it may take a few rounds) */
static int purge_by_size(struct store_tracking *st, int64_t max_bytes, int64_t *removed,
                         struct error *err)
{
    for (;;) {
        int64_t bytes, count, n;
        if (bytes_in_use(st, &bytes, NULL, err) < 0 ||
            step_int(st, stmt(st, T_COUNT_MSG), &count, err) < 0)
            return -1;
        if (bytes <= max_bytes || count == 0)
            return 0;
        int64_t per = bytes / count > 0 ? bytes / count : 1;
        int64_t want = (bytes - max_bytes) / per + 1;
        if (want > PURGE_BATCH)
            want = PURGE_BATCH;
        sqlite3_stmt *s = stmt(st, T_PURGE_OLDEST);
        sqlite3_bind_int64(s, 1, want);
        if (purge_batch(st, s, &n, err) < 0)
            return -1;
        *removed += n;
    }
}

int store_tracking_purge(struct store_tracking *st, int64_t before_us, int64_t max_bytes,
                         int64_t *removed, struct error *err)
{
    memset(err, 0, sizeof *err);
    *removed = 0;
    if (before_us > 0 && purge_by_age(st, before_us, removed, err) < 0)
        return -1;
    if (max_bytes > 0 && purge_by_size(st, max_bytes, removed, err) < 0)
        return -1;
    int64_t bytes, free_pages;
    if (*removed > 0 && bytes_in_use(st, &bytes, &free_pages, err) == 0 &&
        free_pages > 1024) {
        /* hand back half of what is free: the rest is reused by new events */
        char sql[64];
        xsnprintf(sql, sizeof sql, "PRAGMA incremental_vacuum(%lld)", (long long)free_pages / 2);
        if (exec(st, sql, err) < 0)
            return -1;
    }
    return 0;
}

int store_tracking_stats(struct store_tracking *st, struct store_tracking_stats *out,
                         struct error *err)
{
    memset(err, 0, sizeof *err);
    memset(out, 0, sizeof *out);
    if (step_int(st, stmt(st, T_COUNT_MSG), &out->messages, err) < 0 ||
        step_int(st, stmt(st, T_COUNT_EVENTS), &out->events, err) < 0 ||
        step_int(st, stmt(st, T_OLDEST), &out->oldest_us, err) < 0 ||
        bytes_in_use(st, &out->bytes, NULL, err) < 0)
        return -1;
    return 0;
}
