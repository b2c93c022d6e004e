/*
 * directory_ldap.h - the LDAP / Active Directory source (directory_ldap.c)
 * and the sync runner (directory_sync.c): its configuration, "test
 * connection", reading every user and group into struct directory_entry,
 * preview, apply with the safety stop, progress, the schedule.
 *
 * Threads: everything here blocks (libldap is synchronous); it runs on an
 * HTTP worker thread or on the sync runner's own thread, never on the SMTP
 * loop.  struct directory_sync is shared by those threads (one lock).
 */
#ifndef MOAT_DIRECTORY_LDAP_H
#define MOAT_DIRECTORY_LDAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "directory.h"
#include "../auth/auth.h"

/* bounds (CONVENTIONS.md: every input has a named bound) */
#define DIRECTORY_LDAP_VALUE_MAX 1024          /* octets of one attribute value used */
#define DIRECTORY_LDAP_VALUES_MAX 1000         /* addresses of one entry */
#define DIRECTORY_LDAP_PAGE_DEFAULT 500
#define DIRECTORY_LDAP_PAGE_MAX 10000
#define DIRECTORY_LDAP_TIMEOUT_DEFAULT 30      /* seconds: connect, bind, each page */
#define DIRECTORY_LDAP_TIMEOUT_MAX 600
#define DIRECTORY_LDAP_ENTRIES_DEFAULT 1000000 /* users + groups of one sync */
#define DIRECTORY_LDAP_ENTRIES_MAX 10000000
#define DIRECTORY_LDAP_SCHEDULE_DEFAULT "06:00,12:00,18:00"
#define DIRECTORY_LDAP_SCHEDULE_MAX 24         /* times of day */
#define DIRECTORY_LDAP_REMOVE_SHARE_DEFAULT 0.10
#define DIRECTORY_LDAP_PASSWORD_LABEL "moat-ldap-bind-password"

enum directory_ldap_preset { DIRECTORY_LDAP_AD = 0, DIRECTORY_LDAP_OPENLDAP };

/* which attribute carries what; "" = not used */
struct directory_ldap_attrs {
    char *mail;        /* primary address (further values: aliases) */
    char *proxy;       /* AD proxyAddresses: "SMTP:" primary, "smtp:" aliases, others ignored */
    char *alias;       /* plain alias addresses (mailAlternativeAddress) */
    char *upn;         /* userPrincipalName: the primary when nothing else gives one */
    char *name;        /* display name (cn when absent) */
    char *id;          /* stable id: objectGUID (binary) or entryUUID; DN when absent */
    char *member;      /* group members (DNs) */
};

/* the source, validated, with the preset's defaults filled in */
struct directory_ldap_source {
    bool configured;             /* url and base_dn are set */
    char *url, *fallback_url;    /* ldap://host[:port] or ldaps://host[:port]; fallback "" */
    bool starttls;               /* ldap:// only */
    char *ca_file;               /* "" = the system's trust store */
    char *bind_dn;               /* "" = anonymous */
    char *base_dn, *filter, *group_filter;   /* group_filter "" = no groups */
    enum directory_ldap_preset preset;
    struct directory_ldap_attrs attrs;       /* effective map */
    json_t *overrides;           /* the attribute map members set explicitly */
    int page_size;
    int timeout;
    size_t max_entries;
    char *schedule;              /* "06:00,12:00,18:00"; "" = no scheduled sync */
    double max_remove_share;     /* 0..1 */
};

const char *directory_ldap_preset_name(enum directory_ldap_preset p);
/* directory_ldap_source_parse - the stored configuration (a JSON object) into
 * src with defaults; every member is checked: -1 with err->field naming it */
int directory_ldap_source_parse(json_t *config, struct directory_ldap_source *src,
                                struct error *err);
/* directory_ldap_source_json - the configuration as stored (explicit members
 * only: url ... max_remove_share, "attributes" = the overrides) */
json_t *directory_ldap_source_json(const struct directory_ldap_source *src);
/* directory_ldap_source_view - for GET: every effective value, attributes
 * with their defaults, no password */
json_t *directory_ldap_source_view(const struct directory_ldap_source *src);
void directory_ldap_source_clear(struct directory_ldap_source *src);
/* directory_ldap_schedule_parse - "HH:MM[:SS],..." into seconds after
 * midnight (sorted); -1 with err->field "schedule" */
int directory_ldap_schedule_parse(const char *s, int *secs, size_t max, size_t *n,
                                  struct error *err);

/* what a read reports as it goes (called on the reading thread); false stops the read */
typedef bool (*directory_ldap_progress_fn)(void *arg, size_t done, size_t estimate);

/* directory_ldap_read - bind and read every user and group (paged).  Any
 * failure (bind, TLS, a size limit without paging, more than max_entries)
 * fails the whole read: a partial directory is never returned.  Entries
 * without a usable address are skipped and, like bad values, listed in
 * problems (a JSON array, at most limit_problems items) */
int directory_ldap_read(const struct directory_ldap_source *src, const char *password,
                        struct directory_entry **out, size_t *n, json_t *problems,
                        directory_ldap_progress_fn progress, void *arg, struct error *err);
/* directory_ldap_entries_free - what directory_ldap_read returned */
void directory_ldap_entries_free(struct directory_entry *e, size_t n);
/* directory_ldap_test - "test connection": {ok, server, tls, bind: {ok, error},
 * base_dn: {ok, error}, search: {ok, users_sampled, groups_sampled, sample,
 * error}, paging: {supported}}; never NULL */
json_t *directory_ldap_test(const struct directory_ldap_source *src, const char *password);
/* directory_ldap_address_valid - the shape of a directory address (lower-case) */
bool directory_ldap_address_valid(const char *a);

/* --- the sync runner (directory_sync.c) --- */
struct directory_sync;

struct directory_sync_config {
    const char *database;        /* the sync thread opens its own store handle */
    struct auth *auth;           /* opens the sealed bind password (thread-safe) */
    /* after a sync was applied (on the sync thread): make moatd reload the
     * directory index; NULL = rely on the store's change poll */
    void (*applied)(void *arg);
    void *applied_arg;
};

struct directory_sync *directory_sync_create(const struct directory_sync_config *cfg,
                                             struct error *err);
/* directory_sync_start - the sync thread (schedule, "sync now"); after the privilege drop */
int directory_sync_start(struct directory_sync *s, struct error *err);
/* directory_sync_stop - a running read gives up at its next page; joins the thread */
void directory_sync_stop(struct directory_sync *s);
void directory_sync_free(struct directory_sync *s);

/* directory_sync_source_get - GET /directory/source: the view plus
 * password_set, updated, updated_by */
json_t *directory_sync_source_get(struct store *st, struct error *err);
/* directory_sync_source_put - apply the members of patch (password: write-only;
 * "" or null clears it); *before / *after for the audit log (password_set only) */
int directory_sync_source_put(struct directory_sync *s, struct store *st, json_t *patch,
                              const char *who, json_t **before, json_t **after,
                              struct error *err);
/* directory_sync_test - test connection with the stored source (calling thread) */
json_t *directory_sync_test(struct directory_sync *s, struct store *st, struct error *err);
/* directory_sync_preview - read the directory and count what a sync would do
 * (calling thread): {counts..., entries, would_remove_share, safety_stop,
 * unvalidated: [{address, reason}], problems: [...]}; NULL + err on failure */
json_t *directory_sync_preview(struct directory_sync *s, struct store *st, const char *who,
                               struct error *err);
/* directory_sync_request - start an applied sync on the sync thread now;
 * -1 with err->field "sync" when one is running; *run_seq gets its number */
int directory_sync_request(struct directory_sync *s, bool confirm, const char *who,
                           uint64_t *run_seq, struct error *err);
/* directory_sync_wait - wait until run seq finished (or timeout_ms passed); true when it did */
bool directory_sync_wait(struct directory_sync *s, uint64_t seq, int64_t timeout_ms);
/* directory_sync_status - {running, progress: {phase, done, total, started,
 * trigger}, last: run, runs: [run...]}: the last runs from the store */
json_t *directory_sync_status(struct directory_sync *s, struct store *st, size_t limit,
                              struct error *err);
/* directory_sync_run_json - one recorded run as JSON */
json_t *directory_sync_run_json(const struct store_ldap_run *r);

#endif
