/*
 * store_journal.c - the journal role's configuration and legal holds in
 * SQLite (schema version 14, store.c): the journal singleton (address,
 * address for undeliverable reports, the evidence of the last journal
 * message archived), the journal sources (address ranges, validated like
 * the outbound hosts: store_cidr_authorised) and the addresses under legal
 * hold.  Its interface is the section "journaling and legal holds" of
 * store.h; callers are the API, Connect's journaling task, the snapshot
 * loader (the SMTP loop's journal address and sources) and the archive
 * thread (store_journal_seen, store_legal_hold_list).
 *
 * The default journal address, when none is configured, is
 * journal@journal.<the oldest internal domain>: a subdomain the
 * organisation's own mail server never claims, so Exchange journal rules
 * can route it to Moat by a send connector.
 *
 * Ownership: strings in returned structs and arrays belong to the caller;
 * free them with the matching *_clear / *_free.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "../core/cidr.h"
#include "store_priv.h"

#define JOURNAL_ADDR_MAX 254       /* RFC 5321 4.5.3.1.3: a path is at most 256 octets incl. <> */

enum journal_stmt {
    J_GET,
    J_SET,
    J_SEEN,
    J_SRC_ADD,
    J_SRC_DEL_CIDR,
    J_SRC_DEL_ID,
    J_SRC_LIST,
    J_HOLD_ADD,
    J_HOLD_DEL,
    J_HOLD_LIST,
    J_OLDEST_DOMAIN,
    J__COUNT
};

static const char *const journal_sql[J__COUNT] = {
    [J_GET] = "SELECT address, undeliverable, last_report, last_report_client, last_report_qid, "
              "last_report_unwrapped, reports, unwrapped, malformed, last_report_kind, "
              "last_report_error FROM journal_config WHERE id = 1",
    [J_SET] = "UPDATE journal_config SET address = ?1, "
              "undeliverable = COALESCE(?2, undeliverable) WHERE id = 1",
    [J_SEEN] = "UPDATE journal_config SET last_report = ?1, last_report_client = ?2, "
               "last_report_qid = ?3, last_report_unwrapped = ?4, reports = reports + 1, "
               "unwrapped = unwrapped + ?4, malformed = malformed + ?5, last_report_kind = ?6, "
               "last_report_error = ?7 WHERE id = 1",
    [J_SRC_ADD] = "INSERT INTO journal_sources (cidr, comment, created) VALUES (?1, ?2, ?3)",
    [J_SRC_DEL_CIDR] = "DELETE FROM journal_sources WHERE cidr = ?1",
    [J_SRC_DEL_ID] = "DELETE FROM journal_sources WHERE id = ?1",
    [J_SRC_LIST] = "SELECT id, cidr, comment, created FROM journal_sources ORDER BY id",
    [J_HOLD_ADD] = "INSERT INTO legal_holds (address, reason, created, created_by) "
                   "VALUES (?1, ?2, ?3, ?4)",
    [J_HOLD_DEL] = "DELETE FROM legal_holds WHERE address = ?1",
    [J_HOLD_LIST] = "SELECT address, reason, created, created_by FROM legal_holds ORDER BY address",
    /* internal (store_domain_internal): verified or trusted; oldest by when it
     * was added, then by insertion order within the same second */
    [J_OLDEST_DOMAIN] = "SELECT name FROM domains WHERE verified = 1 OR trust_unverified = 1 "
                        "ORDER BY created, rowid LIMIT 1",
};

int store_journal_prepare(struct store *st, const char *path, struct error *err)
{
    return store_stmts_prepare(st, path, "journal", journal_sql, J__COUNT, &st->journal_stmt, err);
}

void store_journal_finalize(struct store *st)
{
    store_stmts_finalize(&st->journal_stmt, J__COUNT);
}

static sqlite3_stmt *stmt(struct store *st, enum journal_stmt id)
{
    return store_stmt_reset(st->journal_stmt[id]);
}

/* address_canon - lower-cased, validated address into dst (field names it) */
static int address_canon(const char *a, char *dst, size_t size, const char *field, struct error *err)
{
    if (a == NULL || strlen(a) > JOURNAL_ADDR_MAX || str_copy(dst, size, a) < 0) {
        error_set(err, field, "%s is missing or longer than %d octets", field, JOURNAL_ADDR_MAX);
        return -1;
    }
    str_lower(dst);
    if (!store_address_ok(dst)) {
        error_set(err, field, "%.80s is not an address (user@example.com)", a);
        return -1;
    }
    return 0;
}

/* oldest_internal - the internal domain added first ("" when none) */
static int oldest_internal(struct store *st, char *dst, size_t size, struct error *err)
{
    dst[0] = '\0';
    sqlite3_stmt *s = stmt(st, J_OLDEST_DOMAIN);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const unsigned char *name = sqlite3_column_text(s, 0);
        if (name != NULL && str_copy(dst, size, (const char *)name) < 0)
            dst[0] = '\0';
    }
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        store_db_error(st, err, "internal domains");
        return -1;
    }
    return 0;
}

int store_journal_get(struct store *st, struct store_journal *out, struct error *err)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *s = stmt(st, J_GET);
    int rc = sqlite3_step(s);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(s);
        store_db_error(st, err, "journal configuration");
        return STORE_ERR;
    }
    out->address = store_col_strdup(s, 0);
    out->undeliverable = store_col_strdup(s, 1);
    out->last_report = sqlite3_column_int64(s, 2);
    out->last_report_client = store_col_strdup(s, 3);
    out->last_report_qid = store_col_strdup(s, 4);
    out->last_report_unwrapped = sqlite3_column_int(s, 5) != 0;
    out->reports = (uint64_t)sqlite3_column_int64(s, 6);
    out->unwrapped = (uint64_t)sqlite3_column_int64(s, 7);
    out->malformed = (uint64_t)sqlite3_column_int64(s, 8);
    out->last_report_kind = store_col_strdup(s, 9);
    out->last_report_error = store_col_strdup(s, 10);
    sqlite3_reset(s);
    if (out->address[0] == '\0') {
        char dom[256];
        if (oldest_internal(st, dom, sizeof dom, err) < 0) {
            store_journal_clear(out);
            return STORE_ERR;
        }
        out->address_is_default = true;
        if (dom[0] != '\0') {
            char a[300];
            if (xsnprintf(a, sizeof a, "journal@journal.%s", dom) >= 0) {
                free(out->address);
                out->address = xstrdup(a);
            }
        }
    }
    return STORE_OK;
}

void store_journal_clear(struct store_journal *j)
{
    if (j == NULL)
        return;
    free(j->address);
    free(j->undeliverable);
    free(j->last_report_client);
    free(j->last_report_qid);
    free(j->last_report_kind);
    free(j->last_report_error);
    memset(j, 0, sizeof *j);
}

/* exec_update - a bound UPDATE of the singleton (always one row) */
static int exec_update(struct store *st, sqlite3_stmt *s, const char *what, struct error *err)
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

int store_journal_set(struct store *st, const char *address, const char *undeliverable,
                      struct error *err)
{
    char a[JOURNAL_ADDR_MAX + 2] = "", u[JOURNAL_ADDR_MAX + 2] = "";
    if (address != NULL && address[0] != '\0' &&
        address_canon(address, a, sizeof a, "address", err) < 0)
        return STORE_ERR;
    if (undeliverable != NULL && undeliverable[0] != '\0' &&
        address_canon(undeliverable, u, sizeof u, "undeliverable", err) < 0)
        return STORE_ERR;
    sqlite3_stmt *s = stmt(st, J_SET);
    sqlite3_bind_text(s, 1, a, -1, SQLITE_TRANSIENT);
    store_bind_text(s, 2, undeliverable != NULL ? u : NULL);   /* NULL: unchanged */
    return exec_update(st, s, "journal address", err);
}

int store_journal_seen(struct store *st, int64_t when, const char *client, const char *qid,
                       const char *kind, const char *error, struct error *err)
{
    bool report = kind != NULL && strcmp(kind, "report") == 0;
    bool malformed = kind != NULL && strcmp(kind, "malformed") == 0;
    sqlite3_stmt *s = stmt(st, J_SEEN);
    sqlite3_bind_int64(s, 1, when);
    sqlite3_bind_text(s, 2, client ? client : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, qid ? qid : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(s, 4, report ? 1 : 0);
    sqlite3_bind_int(s, 5, malformed ? 1 : 0);
    sqlite3_bind_text(s, 6, kind ? kind : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 7, malformed && error ? error : "", -1, SQLITE_TRANSIENT);
    return exec_update(st, s, "journal evidence", err);
}

/* --- journal sources --- */

int store_journal_source_add(struct store *st, const char *cidr, const char *comment,
                             struct error *err)
{
    char canon[CIDR_TEXT_MAX];
    if (store_cidr_authorised(cidr, "have its mail archived as journal reports of your "
                              "organisation", canon, err) < 0 ||
        store_comment_check(comment, err) < 0)
        return STORE_ERR;
    sqlite3_stmt *s = stmt(st, J_SRC_ADD);
    sqlite3_bind_text(s, 1, canon, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, comment ? comment : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 3, (int64_t)time(NULL));
    return store_step_change(st, s, "journal source", "cidr", canon, err);
}

int store_journal_source_remove(struct store *st, const char *cidr_or_id, struct error *err)
{
    return store_range_remove(st, stmt(st, J_SRC_DEL_ID), stmt(st, J_SRC_DEL_CIDR), "journal source", cidr_or_id, err);
}

int store_journal_source_list(struct store *st, struct store_journal_source **out, size_t *n,
                              struct error *err)
{
    sqlite3_stmt *s = stmt(st, J_SRC_LIST);
    size_t cap = 0;
    int rc;
    *out = NULL;
    *n = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            *out = xreallocarray(*out, cap, sizeof **out);
        }
        struct store_journal_source *j = &(*out)[(*n)++];
        j->id = sqlite3_column_int64(s, 0);
        j->cidr = store_col_strdup(s, 1);
        j->comment = store_col_strdup(s, 2);
        j->created = sqlite3_column_int64(s, 3);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_journal_sources_free(*out, *n);
        *out = NULL;
        *n = 0;
        store_db_error(st, err, "journal sources");
        return STORE_ERR;
    }
    return STORE_OK;
}

void store_journal_sources_free(struct store_journal_source *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(s[i].cidr);
        free(s[i].comment);
    }
    free(s);
}

/* --- legal holds --- */

int store_legal_hold_add(struct store *st, const char *address, const char *reason,
                         const char *who, struct error *err)
{
    char a[JOURNAL_ADDR_MAX + 2];
    if (address_canon(address, a, sizeof a, "address", err) < 0)
        return STORE_ERR;
    if (store_comment_check(reason, err) < 0) {
        str_copy(err->field, sizeof err->field, "reason");
        return STORE_ERR;
    }
    sqlite3_stmt *s = stmt(st, J_HOLD_ADD);
    sqlite3_bind_text(s, 1, a, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, reason ? reason : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 3, (int64_t)time(NULL));
    sqlite3_bind_text(s, 4, who ? who : "", -1, SQLITE_TRANSIENT);
    return store_step_change(st, s, "legal hold on", "address", a, err);
}

int store_legal_hold_remove(struct store *st, const char *address, struct error *err)
{
    char a[JOURNAL_ADDR_MAX + 2];
    if (address == NULL || str_copy(a, sizeof a, address) < 0) {
        error_set(err, "address", "address is missing or too long");
        return STORE_ERR;
    }
    str_lower(a);
    sqlite3_stmt *s = stmt(st, J_HOLD_DEL);
    sqlite3_bind_text(s, 1, a, -1, SQLITE_TRANSIENT);
    return store_step_change(st, s, "legal hold on", "address", a, err);
}

int store_legal_hold_list(struct store *st, struct store_legal_hold **out, size_t *n,
                          struct error *err)
{
    sqlite3_stmt *s = stmt(st, J_HOLD_LIST);
    size_t cap = 0;
    int rc;
    *out = NULL;
    *n = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            *out = xreallocarray(*out, cap, sizeof **out);
        }
        struct store_legal_hold *h = &(*out)[(*n)++];
        h->address = store_col_strdup(s, 0);
        h->reason = store_col_strdup(s, 1);
        h->created = sqlite3_column_int64(s, 2);
        h->created_by = store_col_strdup(s, 3);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_legal_holds_free(*out, *n);
        *out = NULL;
        *n = 0;
        store_db_error(st, err, "legal holds");
        return STORE_ERR;
    }
    return STORE_OK;
}

void store_legal_holds_free(struct store_legal_hold *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(h[i].address);
        free(h[i].reason);
        free(h[i].created_by);
    }
    free(h);
}
