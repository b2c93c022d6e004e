/*
 * store_priv.h - private to src/store: the SQLite handle, its prepared
 * statements, and test hooks for the migration tests.  Nothing outside
 * src/store (and tests/unit/test_store.c) includes this.
 */
#ifndef MOAT_STORE_PRIV_H
#define MOAT_STORE_PRIV_H

#include <sqlite3.h>
#include "store.h"
#include "store_archive.h"

/* one enum entry per prepared statement; SQL in store_sql[] (store.c) */
enum store_stmt {
    STMT_DATA_VERSION,
    STMT_DOMAIN_INSERT,
    STMT_DOMAIN_DELETE,
    STMT_DOMAIN_EXISTS,
    STMT_DOMAIN_LIST,
    STMT_ROUTE_UPSERT,
    STMT_ROUTE_DELETE,
    STMT_ROUTE_GET,
    STMT_DOMAIN_GET,
    STMT_DOMAIN_PARENT_VERIFIED,
    STMT_DOMAIN_SET_VERIFIED,
    STMT_DOMAIN_VERIFY_SUBDOMAINS,
    STMT_DOMAIN_SET_CHECK,
    STMT_DOMAIN_SET_MX_SINCE,
    STMT__COUNT
};

struct store {
    sqlite3 *db;
    sqlite3_stmt *stmt[STMT__COUNT];
    int64_t data_version;     /* PRAGMA data_version at the last store_changed() */
    uint64_t own_commits;     /* writes committed through this handle */
    uint64_t seen_commits;    /* own_commits at the last store_changed() */
    sqlite3_stmt **auth_stmt; /* store_auth.c's statement table */
    sqlite3_stmt **connect_stmt; /* store_connect.c's statement table */
    sqlite3_stmt **settings_stmt; /* store_settings.c's statement table */
    sqlite3_stmt **dir_stmt;  /* store_directory.c's statement table */
    sqlite3_stmt **ldap_stmt; /* store_ldap.c's statement table */
    sqlite3_stmt **dkim_stmt; /* store_dkim.c's statement table */
    sqlite3_stmt **outbound_stmt; /* store_outbound.c's statement table */
    sqlite3_stmt **tls_stmt;  /* store_tls.c's statement table */
    sqlite3_stmt **dnsbl_stmt; /* store_dnsbl.c's statement table */
    sqlite3_stmt **antispoof_stmt; /* store_antispoof.c's statement table */
    sqlite3_stmt **permitted_stmt; /* store_permitted.c's statement table */
    sqlite3_stmt **held_stmt; /* store_held.c's statement table */
    sqlite3_stmt **journal_stmt; /* store_journal.c's statement table (issue 8) */
    sqlite3_stmt **metrics_stmt; /* store_metrics.c's statement table (issue 11) */
};

/* store_auth_prepare - prepare store_auth.c's statements (store_open);
 * store_auth_finalize - release them (store_close; safe when unprepared) */
int store_auth_prepare(struct store *st, const char *path, struct error *err);
void store_auth_finalize(struct store *st);
/* store_connect_prepare / store_connect_finalize - the same for store_connect.c */
int store_connect_prepare(struct store *st, const char *path, struct error *err);
void store_connect_finalize(struct store *st);
/* store_settings_prepare / store_settings_finalize - the same for store_settings.c */
int store_settings_prepare(struct store *st, const char *path, struct error *err);
void store_settings_finalize(struct store *st);
/* store_directory_prepare / store_directory_finalize - the same for store_directory.c */
int store_directory_prepare(struct store *st, const char *path, struct error *err);
void store_directory_finalize(struct store *st);
/* store_ldap_prepare / store_ldap_finalize - the same for store_ldap.c */
int store_ldap_prepare(struct store *st, const char *path, struct error *err);
void store_ldap_finalize(struct store *st);
/* store_dkim_prepare / store_dkim_finalize - the same for store_dkim.c */
int store_dkim_prepare(struct store *st, const char *path, struct error *err);
void store_dkim_finalize(struct store *st);

/* store_outbound_prepare / store_outbound_finalize - the same for store_outbound.c */
int store_outbound_prepare(struct store *st, const char *path, struct error *err);
void store_outbound_finalize(struct store *st);
/* store_smtp_account_hashes - enabled accounts only: names[i] and hashes[i]
 * (both arrays and strings owned by the caller), for the snapshot */
int store_smtp_account_hashes(struct store *st, char ***names, char ***hashes, size_t *n,
                              struct error *err);
/* store_tls_prepare / store_tls_finalize - the same for store_tls.c */
int store_tls_prepare(struct store *st, const char *path, struct error *err);
void store_tls_finalize(struct store *st);
/* store_dnsbl_prepare / store_dnsbl_finalize - the same for store_dnsbl.c */
int store_dnsbl_prepare(struct store *st, const char *path, struct error *err);
void store_dnsbl_finalize(struct store *st);

/* store_antispoof_prepare / store_antispoof_finalize - the same for store_antispoof.c */
int store_antispoof_prepare(struct store *st, const char *path, struct error *err);
void store_antispoof_finalize(struct store *st);

/* store_permitted_prepare / store_permitted_finalize - the same for store_permitted.c */
int store_permitted_prepare(struct store *st, const char *path, struct error *err);
void store_permitted_finalize(struct store *st);
/* store_held_prepare / store_held_finalize - the same for store_held.c */
int store_held_prepare(struct store *st, const char *path, struct error *err);
void store_held_finalize(struct store *st);

/* issue 8 (store_journal.c): journaling and legal holds */
int store_journal_prepare(struct store *st, const char *path, struct error *err);
void store_journal_finalize(struct store *st);
/* issue 11 (store_metrics.c): the metrics token */
int store_metrics_prepare(struct store *st, const char *path, struct error *err);
void store_metrics_finalize(struct store *st);
/* store_step_change - run a bound INSERT/UPDATE/DELETE of one row named
 * key (a `what`, err->field `field`): STORE_CONFLICT on a uniqueness
 * violation, STORE_NOT_FOUND when nothing changed; counts the commit */
int store_step_change(struct store *st, sqlite3_stmt *s, const char *what, const char *field,
                      const char *key, struct error *err);
/* store_range_remove - delete an address-range row (outbound hosts, journal
 * sources) by its decimal id (by_id, ?1) or by the range in any form cidr.h
 * accepts (by_cidr, ?1 = the canonical text) */
int store_range_remove(struct store *st, sqlite3_stmt *by_id, sqlite3_stmt *by_cidr,
                       const char *what, const char *cidr_or_id, struct error *err);
/* store_cidr_authorised - cidr (any form cidr.h accepts) into canonical text,
 * refusing ranges wider than /8 (IPv4) or /16 (IPv6); what says what anyone
 * in a too-wide range could do (the error text).  -1 with err (field "cidr").
 * Shared by outbound hosts and journal sources (store_outbound.c). */
int store_cidr_authorised(const char *cidr, const char *what, char canon[64], struct error *err);
/* store_comment_check - bounded (STORE_COMMENT_MAX), one line, UTF-8 (field "comment") */
int store_comment_check(const char *comment, struct error *err);
/* store_address_ok - local@domain, as forwarding targets are checked (store_held.c) */
bool store_address_ok(const char *a);

/* the migrations: store_migrations[i] takes the schema from version i to i + 1 */
extern const char *const store_migrations[];
extern const int store_schema_latest;

/* store_open_at_version - test hook: open and migrate only up to version
 * (0 = leave empty); statements are not prepared, so only store_close and
 * store_schema_version may be used on the result */
struct store *store_open_at_version(const char *path, int version, struct error *err);

/* store_stmt - the prepared statement id, reset and unbound, ready to bind */
sqlite3_stmt *store_stmt(struct store *st, enum store_stmt id);
/* store_stmts_prepare - prepare a module's statement table (n statements,
 * every one must have SQL); *out is freed by store_stmts_finalize */
int store_stmts_prepare(struct store *st, const char *path, const char *module,
                        const char *const *sql, int n, sqlite3_stmt ***out, struct error *err);
void store_stmts_finalize(sqlite3_stmt ***stmts, int n);
/* store_stmt_reset - s reset and unbound, ready to bind */
sqlite3_stmt *store_stmt_reset(sqlite3_stmt *s);
/* store_bind_text - bind v, or NULL when v is NULL */
void store_bind_text(sqlite3_stmt *s, int i, const char *v);
/* store_col_strdup - a column as a new string ("" for NULL) */
char *store_col_strdup(sqlite3_stmt *s, int col);
/* store_db_error - fill err from the handle's last SQLite error */
void store_db_error(struct store *st, struct error *err, const char *what);
/* store_sqlite_open - open (creating, mode 0600) the SQLite file at path
 * with WAL, synchronous=FULL, foreign keys and the busy timeout, and migrate
 * it to version target of migrations[0..latest) in one IMMEDIATE
 * transaction; NULL with err.  store_open and store_archive_open use it. */
sqlite3 *store_sqlite_open(const char *path, const char *const *migrations, int latest,
                           int target, struct error *err);

/* store_archive_explain - the EXPLAIN QUERY PLAN of a search (one line per
 * step; caller frees *plan): tests and bench/archive_bench.c check that
 * address and date conditions use indexes (store_archive.c) */
int store_archive_explain(struct store_archive *sa, const struct store_archive_query *q,
                          const struct store_archive_scope *scope, char **plan, struct error *err);
/* store_archive_dense_min - test hook: from how many rows on an address
 * condition is probed per message instead of listed (store_archive.c) */
extern int64_t store_archive_dense_min;

#endif
