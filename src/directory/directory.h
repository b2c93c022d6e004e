/*
 * directory.h - users, aliases and groups under the internal domains, from
 * an LDAP / Active Directory source (directory_ldap.c) or added by hand
 * (directory_users.c, CSV import in directory_csv.c), and the recipient
 * lookup the SMTP side uses for recipient validation.
 *
 * An address (primary or alias, lower-cased) resolves to exactly one user or
 * group.  The SMTP loop never queries the store: it reads an immutable
 * address table (struct directory_index) loaded by another thread and
 * swapped in like the routing snapshot; a lookup is one hash probe.
 *
 * Threads: directory_* functions that take a struct store * run on the
 * calling thread (HTTP worker, sync thread) with its own store handle.
 */
#ifndef MOAT_DIRECTORY_H
#define MOAT_DIRECTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "../core/core.h"
#include "../store/store.h"

/* --- one directory entry as a source delivers it --- */
enum directory_kind { DIRECTORY_USER = 0, DIRECTORY_GROUP };

struct directory_entry {
    enum directory_kind kind;
    char *external_id;     /* entryUUID / objectGUID / DN: stable across syncs */
    char *primary;         /* primary address, lower-case */
    char *name;            /* display name */
    char **aliases;        /* other addresses, lower-case */
    size_t n_aliases;
    char **members;        /* groups: external ids (or primary addresses) of members */
    size_t n_members;
};
void directory_entry_clear(struct directory_entry *e);

/* what a sync would do / did */
struct directory_sync_counts {
    size_t created, updated, removed, unchanged;
    size_t skipped_unvalidated;   /* addresses under domains that are not validated */
    size_t errors;                /* entries refused (bad address, duplicate address) */
};

/* directory_sync_apply - make the directory-sourced users and groups equal
 * to entries, in one transaction (manual users are never touched).  dry_run:
 * only count (the preview).  Addresses under unvalidated domains are not
 * imported: they are listed in *report (JSON array of {address, reason}).
 * Safety: when the sync would remove more than max_remove_share (0..1) of
 * the directory users and confirm is false, nothing is changed and -1 is
 * returned with err->field = "confirm". */
int directory_sync_apply(struct store *st, const struct directory_entry *entries, size_t n,
                         bool dry_run, double max_remove_share, bool confirm,
                         struct directory_sync_counts *out, json_t **report, struct error *err);

/* --- the RCPT-time lookup (loop side) --- */
enum directory_rv_mode {
    DIRECTORY_RV_DIRECTORY = 0,    /* synced users and groups only */
    DIRECTORY_RV_KNOWN,            /* directory + manual */
    DIRECTORY_RV_CALL_FORWARD,     /* RCPT probe to the domain's route, cached */
    DIRECTORY_RV_ACCEPT_ALL,
};
enum directory_rv_unreachable { DIRECTORY_RV_TEMPFAIL = 0, DIRECTORY_RV_ACCEPT };

struct directory_index;
/* directory_index_load - the address table and every domain's validation
 * settings; loaded off the loop, swapped in by moatd */
struct directory_index *directory_index_load(struct store *st, struct error *err);
void directory_index_free(struct directory_index *ix);
/* directory_index_stale - the directory changed in the store since ix was
 * loaded (one cheap read; ix NULL: true): moatd reloads only then */
bool directory_index_stale(const struct directory_index *ix, struct store *st);

enum directory_lookup {
    DIRECTORY_FOUND = 0,       /* a user or group has this address */
    DIRECTORY_NOT_FOUND,       /* 550 5.1.1 */
    DIRECTORY_UNAVAILABLE,     /* the source cannot answer (never synced): per unreachable mode */
    DIRECTORY_NOT_VALIDATED,   /* the domain's mode is accept-all (or none set): no opinion */
    DIRECTORY_CALL_FORWARD,    /* the domain's mode is call-forward: ask the route */
};
/* directory_index_lookup - O(1); addr is "local@domain" as received; the
 * domain's mode and unreachable behaviour are returned too */
enum directory_lookup directory_index_lookup(const struct directory_index *ix, const char *addr,
                                             enum directory_rv_mode *mode,
                                             enum directory_rv_unreachable *unreachable);

/* ==== manual users and groups, CSV import, validation settings (engineer E) ==== */

/* the results of the calls below; err->field names the input at fault */
enum directory_status {
    DIRECTORY_OK = 0,
    DIRECTORY_EINVAL = -1,      /* bad input: 400 */
    DIRECTORY_ENOENT = -2,      /* no such user or group: 404 */
    DIRECTORY_ECONFLICT = -3,   /* the address has another owner, or the entry is synced from
                                 * the directory and cannot be changed here: 409 */
    DIRECTORY_EINTERNAL = -4,   /* store failure: 500 */
};

/* directory_address_normalise - a mailbox "local@domain" (dot-atom local
 * part, DNS domain) lower-cased into out; -1 with err naming field */
int directory_address_normalise(const char *in, const char *field, char *out, size_t size,
                                struct error *err);

/* manual users and groups (directory_users.c).  JSON shape of one entry:
 * {address, name, kind, source, state: "active"|"disabled", aliases: [...],
 * members: [...] (groups), has_password (users), created, updated}; the
 * password hash never leaves the store.  create/update bodies: {address,
 * name, aliases, password (users), members (groups), state}; every address
 * must be under an internal domain and belong to nobody else. */
json_t *directory_list_json(struct store *st, enum directory_kind kind, const char *after,
                            size_t limit, struct error *err);
int directory_get_json(struct store *st, enum directory_kind kind, const char *address,
                       json_t **out, struct error *err);
int directory_create(struct store *st, enum directory_kind kind, json_t *body, json_t **out,
                     struct error *err);
int directory_update(struct store *st, enum directory_kind kind, const char *address,
                     json_t *patch, json_t **before, json_t **after, struct error *err);
int directory_delete(struct store *st, enum directory_kind kind, const char *address,
                     json_t **before, struct error *err);

/* recipient validation settings: [{domain, mode, unreachable, internal}]
 * for every domain (mode "accept-all" when none is set) */
json_t *directory_rv_list_json(struct store *st, struct error *err);
/* directory_rv_set - mode "directory"|"known"|"call-forward"|"accept-all";
 * unreachable "tempfail"|"accept" (NULL: keep, tempfail when new) */
int directory_rv_set(struct store *st, const char *domain, const char *mode,
                     const char *unreachable, json_t **before, json_t **after,
                     struct error *err);
const char *directory_rv_mode_name(enum directory_rv_mode m);
int directory_rv_mode_parse(const char *s, enum directory_rv_mode *out);

/* --- CSV (directory_csv.c) --- */
/* the parser: RFC 4180 records (quoted fields may hold commas, quotes as
 * "" and line breaks; CRLF or LF), fed in chunks of any size; record() gets
 * each record with the line it starts on, bad() each refused one (longer
 * than max_record octets, a stray quote, a NUL) with its reason */
struct directory_csv;
typedef void (*directory_csv_record_fn)(void *arg, size_t line, char **fields, size_t n);
typedef void (*directory_csv_bad_fn)(void *arg, size_t line, const char *reason);
struct directory_csv *directory_csv_new(size_t max_record, size_t max_fields,
                                        directory_csv_record_fn record, directory_csv_bad_fn bad,
                                        void *arg);
void directory_csv_feed(struct directory_csv *c, const char *data, size_t len);
/* directory_csv_finish - the end of the input (a last record without a line break) */
void directory_csv_finish(struct directory_csv *c);
void directory_csv_free(struct directory_csv *c);

/* the import of manual users: a header line naming the columns email, name
 * and optionally password and aliases (';' or ' ' between aliases), then
 * one user a row.  A row whose email is a manual user's updates it.  Each
 * bad row is reported with its line number (counted from first_line) and
 * reason, and never fails the others.  st NULL: parse and check only. */
struct directory_import_limits {
    size_t max_line;            /* octets of one record */
    size_t max_rows;            /* rows after the header; the rest are refused */
};
struct directory_import;
struct directory_import *directory_import_new(struct store *st,
                                              const struct directory_import_limits *lim,
                                              size_t first_line, struct error *err);
void directory_import_feed(struct directory_import *im, const char *data, size_t len);
/* directory_import_finish - the report {created, updated, bad, rows,
 * errors: [{line, reason}]}; NULL + err on a store failure */
json_t *directory_import_finish(struct directory_import *im, struct error *err);
void directory_import_free(struct directory_import *im);

#endif
