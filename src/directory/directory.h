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

#endif
