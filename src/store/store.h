/*
 * store.h - all persistent configuration and state, behind one interface.
 * SQLite (WAL) now; no caller may assume SQLite, so nothing here leaks SQL
 * or sqlite3 types.  A struct store is used by one thread at a time; each
 * thread that needs the store opens its own handle.
 *
 * The SMTP loop never calls the store: it reads an immutable snapshot of the
 * routing configuration (struct store_snapshot), loaded by another thread
 * and swapped in when store_changed() reports a change.
 */
#ifndef MOAT_STORE_H
#define MOAT_STORE_H

#include <stdbool.h>
#include <stdint.h>
#include "../core/core.h"

struct store;

enum store_tls_mode {
    STORE_TLS_OPPORTUNISTIC = 0,   /* STARTTLS when offered, else clear */
    STORE_TLS_RELAXED,             /* TLS required, certificate not checked */
    STORE_TLS_STRICT,              /* TLS required, trusted certificate, name matches */
};

struct store_route {
    char *host;          /* host name or IP literal; NULL = no route */
    int port;            /* default 25 */
    enum store_tls_mode tls;
};

struct store_domain {
    char *name;          /* lower-case A-label */
    bool verified;       /* ownership proven (TXT token, or a verified parent) */
    int64_t created;     /* unix seconds */
    struct store_route route;
    /* Connect's domains task (issue 4) */
    char *token;         /* 32 hex digits: publish TXT "moat-verification=<token>"; NULL for
                          * domains verified before tokens existed */
    int64_t verified_at; /* unix seconds; 0 = not verified */
    bool trust_unverified; /* lab override: internal without proof (shown as a warning) */
    int64_t last_check;  /* unix seconds of the last verification check; 0 = never */
    char *last_result;   /* its human text, or NULL */
    int64_t mx_only_moat_since; /* MX has pointed only at Moat since; 0 = not (now) */
};

/* store_domain_internal - internal for relay control: verified or trusted-unverified */
static inline bool store_domain_internal(const struct store_domain *d)
{
    return d->verified || d->trust_unverified;
}

/* store_open - open (creating) the database at path and apply migrations */
struct store *store_open(const char *path, struct error *err);
void store_close(struct store *st);
/* store_schema_version - PRAGMA user_version after migrations */
int store_schema_version(struct store *st);

/* domains: names are normalised to lower case; err->field names the bad input.
 * store_domain_add - a new domain, unverified, with a fresh random verification
 * token; a subdomain of a verified domain is verified at once (no proof needed).
 * A domain cannot be added twice ("already exists").
 * store_domain_add_trusted - the lab override (--trust-unverified): unverified,
 * but internal; the caller audit-logs it. */
int store_domain_add(struct store *st, const char *name, struct error *err);
int store_domain_add_trusted(struct store *st, const char *name, struct error *err);
/* store_domain_get - one domain (*out filled; free with store_domain_clear); -1 "no such domain" */
int store_domain_get(struct store *st, const char *name, struct store_domain *out,
                     struct error *err);
void store_domain_clear(struct store_domain *d);
/* store_domain_set_verified - verified (when = unix seconds) or not; verifying a
 * domain also verifies its pending subdomains */
int store_domain_set_verified(struct store *st, const char *name, bool verified, int64_t when,
                              struct error *err);
/* store_domain_set_check - the time and human text of the last verification check */
int store_domain_set_check(struct store *st, const char *name, int64_t when, const char *result,
                           struct error *err);
/* store_domain_set_mx_since - MX only at Moat since `since`; 0 clears */
int store_domain_set_mx_since(struct store *st, const char *name, int64_t since,
                              struct error *err);
int store_domain_remove(struct store *st, const char *name, struct error *err);
/* store_domain_list - *out is an array of *n domains, free with store_domains_free */
int store_domain_list(struct store *st, struct store_domain **out, size_t *n, struct error *err);
void store_domains_free(struct store_domain *d, size_t n);
int store_route_set(struct store *st, const char *domain, const struct store_route *r, struct error *err);
int store_route_get(struct store *st, const char *domain, struct store_route *out, struct error *err);
void store_route_clear(struct store_route *r);
const char *store_tls_mode_name(enum store_tls_mode m);
int store_tls_mode_parse(const char *s, enum store_tls_mode *out);

/* store_changed - true once for every change committed by anyone (any process)
 * since the last call on this handle; cheap, suitable for a 1 s poll */
bool store_changed(struct store *st);

/* --- immutable routing snapshot, safe to read from the SMTP loop --- */
struct store_snapshot;
struct store_snapshot *store_snapshot_load(struct store *st, struct error *err);
void store_snapshot_free(struct store_snapshot *snap);
/* store_snapshot_find - the internal domain (verified, or trusted-unverified)
 * that covers addr_domain (itself or its closest internal parent: subdomains
 * of an internal domain are internal), or NULL.  Case-insensitive. */
const struct store_domain *store_snapshot_find(const struct store_snapshot *snap,
                                               const char *addr_domain);
size_t store_snapshot_count(const struct store_snapshot *snap);

/* domain_name_valid - syntax of a DNS domain name (LDH labels, 1..63, total <= 253) */
bool domain_name_valid(const char *name);

/* ==== accounts, sessions, tokens, audit (issue 3; store_auth.c) ==== */
/*
 * The auth module (src/auth) is the only caller.  The store holds what it is
 * given: password hashes, keyed hashes of session ids and token secrets,
 * encrypted TOTP seeds; nothing here sees a secret in the clear.  Roles are
 * stored by name ("admin", "basic_admin", "user"); the store knows them only
 * to enforce the last-administrator rule in one statement.
 *
 * Results: lookups and changes of one row return STORE_OK, STORE_NOT_FOUND
 * (err names the field), STORE_CONFLICT (duplicate name, or the change would
 * leave no enabled administrator; err says which) or STORE_ERR.  All
 * failures are negative, so "< 0" tests for any of them.
 */
enum store_status {
    STORE_OK = 0,
    STORE_ERR = -1,
    STORE_NOT_FOUND = -2,
    STORE_CONFLICT = -3,
};

struct store_account {
    int64_t id;
    char *name;
    char *role;                     /* "admin", "basic_admin", "user" */
    char *password_hash;            /* argon2id encoded string */
    bool must_change;               /* password change required at next sign-in */
    bool disabled;
    unsigned char *totp_secret;     /* encrypted seed; NULL when not enrolled */
    size_t totp_secret_len;
    bool totp_active;               /* confirmed: sign-in needs a code */
    int64_t totp_last_step;         /* last accepted RFC 6238 time step (no reuse) */
    int64_t created;
    int64_t updated;
};

struct store_session {
    char id_hash[65];               /* hex keyed hash of the cookie value */
    int64_t account_id;
    char csrf[65];
    int64_t created;
    int64_t last_seen;
    int64_t expires;                /* absolute; the idle limit is the caller's */
    char client_ip[64];
    bool revoked;
};

struct store_token {
    int64_t id;
    int64_t account_id;
    char *account_name;
    char *name;
    char *role;                     /* scope */
    char secret_hash[65];           /* hex keyed hash of the secret */
    int64_t created;
    int64_t last_used;              /* 0 = never */
    bool revoked;
};

struct store_audit_entry {
    int64_t id;                     /* filled by list; ignored by append */
    int64_t ts;                     /* unix seconds */
    int64_t account_id;             /* 0 = nobody signed in (bootstrap) */
    const char *account_name;       /* copied: survives the account */
    const char *via;                /* "session", "token", "local" */
    int64_t token_id;               /* when via a token */
    const char *client_ip;
    const char *action;             /* "domain.add", "account.password", ... */
    const char *target;
    const char *before_json;        /* NULL or JSON text (already redacted) */
    const char *after_json;
};

struct store_audit_filter {
    int64_t since;                  /* ts >= since; 0 = no bound */
    int64_t until;                  /* ts <= until; 0 = no bound */
    const char *account;            /* account name (case-insensitive); NULL = all */
    const char *action_prefix;      /* "account." or "account.create"; NULL = all */
    int64_t before_id;              /* cursor: entries with id < before_id; 0 = newest */
    size_t limit;
};

/* accounts: names are unique without regard to case */
int store_account_create(struct store *st, const char *name, const char *role,
                         const char *password_hash, bool must_change, int64_t *id_out,
                         struct error *err);
int store_account_get(struct store *st, int64_t id, struct store_account *out, struct error *err);
int store_account_get_by_name(struct store *st, const char *name, struct store_account *out,
                              struct error *err);
/* store_account_list - accounts with id > after_id, by id, at most limit */
int store_account_list(struct store *st, int64_t after_id, size_t limit,
                       struct store_account **out, size_t *n, struct error *err);
/* store_account_count - every account (role NULL) or those of one role that are enabled */
int store_account_count(struct store *st, const char *role, int64_t *count, struct error *err);
/* role, disabled and delete refuse (STORE_CONFLICT) to leave no enabled admin */
int store_account_set_role(struct store *st, int64_t id, const char *role, struct error *err);
int store_account_set_disabled(struct store *st, int64_t id, bool disabled, struct error *err);
int store_account_delete(struct store *st, int64_t id, struct error *err);
int store_account_set_password(struct store *st, int64_t id, const char *password_hash,
                               bool must_change, struct error *err);
/* store_account_set_totp - secret NULL clears enrolment */
int store_account_set_totp(struct store *st, int64_t id, const unsigned char *secret,
                           size_t len, bool active, int64_t last_step, struct error *err);
/* store_account_use_totp_step - record step as used; STORE_CONFLICT when a
 * step >= it was already used (a replayed code), atomically */
int store_account_use_totp_step(struct store *st, int64_t id, int64_t step, struct error *err);
void store_account_clear(struct store_account *a);
void store_accounts_free(struct store_account *a, size_t n);

/* sessions */
int store_session_create(struct store *st, const struct store_session *s, struct error *err);
int store_session_get(struct store *st, const char *id_hash, struct store_session *out,
                      struct error *err);
int store_session_touch(struct store *st, const char *id_hash, int64_t now, struct error *err);
/* store_session_revoke - account_id 0: whoever owns it */
int store_session_revoke(struct store *st, const char *id_hash, int64_t account_id,
                         struct error *err);
/* store_session_revoke_others - every session of the account but keep_hash (NULL: all) */
int store_session_revoke_others(struct store *st, int64_t account_id, const char *keep_hash,
                                struct error *err);
/* store_session_list - the account's sessions neither revoked nor expired at now
 * nor idle since before idle_cutoff */
int store_session_list(struct store *st, int64_t account_id, int64_t now, int64_t idle_cutoff,
                       struct store_session **out, size_t *n, struct error *err);
/* store_session_purge - delete revoked, expired and idle sessions */
int store_session_purge(struct store *st, int64_t now, int64_t idle_cutoff, struct error *err);

/* API tokens */
int store_token_create(struct store *st, int64_t account_id, const char *name, const char *role,
                       const char *secret_hash, int64_t now, int64_t *id_out, struct error *err);
int store_token_get(struct store *st, int64_t id, struct store_token *out, struct error *err);
int store_token_touch(struct store *st, int64_t id, int64_t now, struct error *err);
int store_token_revoke(struct store *st, int64_t id, struct error *err);
/* store_token_list - account_id 0: every account's; id > after_id, by id */
int store_token_list(struct store *st, int64_t account_id, int64_t after_id, size_t limit,
                     struct store_token **out, size_t *n, struct error *err);
void store_token_clear(struct store_token *t);
void store_tokens_free(struct store_token *t, size_t n);

/* audit: append-only (triggers refuse UPDATE and DELETE); newest first */
int store_audit_append(struct store *st, const struct store_audit_entry *e, struct error *err);
/* store_audit_list - entries matching f, newest first; the array and its
 * strings are the caller's: free with store_audit_free */
int store_audit_list(struct store *st, const struct store_audit_filter *f,
                     struct store_audit_entry **out, size_t *n, struct error *err);
void store_audit_free(struct store_audit_entry *e, size_t n);
/* ==== end of accounts, sessions, tokens, audit ==== */

/* ==== Connect: organisation and task states (issue 4; store_connect.c) ==== */
/*
 * The organisation (one row) and the Connect engine's persisted task states.
 * The store knows task states and outcomes only by name ("todo", "done",
 * "pass", ...); src/connect gives them meaning.  Strings in returned structs
 * belong to the caller (free with the matching *_clear / *_free).
 */
struct store_organisation {
    char *name;
    char *environment;              /* "", "microsoft365", "exchange", "hybrid", "google", "smtp" */
    char *contact_name;
    char *contact_email;
    char *contact_phone;
    char **public_hosts;            /* Moat's public host names (the MX targets) */
    size_t n_public_hosts;
    char **public_ips;              /* Moat's public IP addresses */
    size_t n_public_ips;
    char *probe_source;             /* lockdown probe source address; "" = none */
    int64_t updated;                /* unix seconds; 0 = never */
    char *updated_by;
};

/* store_organisation_get - the organisation (always present; empty fields when never set) */
int store_organisation_get(struct store *st, struct store_organisation *out, struct error *err);
/* store_organisation_set - replace every field (the caller validated them); who: account name */
int store_organisation_set(struct store *st, const struct store_organisation *o, const char *who,
                           struct error *err);
void store_organisation_clear(struct store_organisation *o);

struct store_connect_task {
    char *id;
    char *state;                    /* "todo", "in_progress", "waiting", "done", ... */
    int64_t changed;                /* when the state last changed (unix seconds) */
    char *changed_by;               /* account name or "timer" */
    int64_t last_check;             /* 0 = never checked */
    char *last_outcome;             /* "pass", "fail", "pending", "unknown", "unavailable"; NULL = none */
    char *last_message;
    char *last_details;             /* JSON text or NULL */
    int64_t next_check;             /* 0 = no re-check scheduled */
    int64_t backoff;                /* seconds of the current re-check interval */
    char *data;                     /* JSON text: task-specific inputs ("{}") */
};

/* store_connect_task_get - STORE_NOT_FOUND when the task was never touched */
int store_connect_task_get(struct store *st, const char *id, struct store_connect_task *out,
                           struct error *err);
/* store_connect_task_put - insert or replace every column but data (kept) */
int store_connect_task_put(struct store *st, const struct store_connect_task *t, struct error *err);
/* store_connect_task_list - every stored task state, by id */
int store_connect_task_list(struct store *st, struct store_connect_task **out, size_t *n,
                            struct error *err);
/* store_connect_task_data_get - the task's data JSON text ("{}" when none); caller frees */
int store_connect_task_data_get(struct store *st, const char *id, char **json_text,
                                struct error *err);
/* store_connect_task_data_set - replace the task's data (creates the row as "todo" if needed) */
int store_connect_task_data_set(struct store *st, const char *id, const char *json_text,
                                struct error *err);
void store_connect_task_clear(struct store_connect_task *t);
void store_connect_tasks_free(struct store_connect_task *t, size_t n);

/* ==== end of Connect ==== */

/* ==== runtime settings (store_settings.c) ==== */
/*
 * Values of the settings that may change at run time (settings.h,
 * settings_runtime), as text in moat.conf syntax.  The store does not know
 * the settings: the caller validates keys and values with the settings
 * table before writing, and applies them (moatd at start, the API after a
 * change).  A key without a row means moat.conf's value or the default.
 */
struct store_setting {
    char *key;
    char *value;
    int64_t updated;                /* unix seconds */
    char *updated_by;               /* account name */
};

/* store_settings_list - every stored value, by key; free with store_settings_free */
int store_settings_list(struct store *st, struct store_setting **out, size_t *n,
                        struct error *err);
/* store_settings_set - insert or replace n values at once (one transaction:
 * all or none); who: the account name */
int store_settings_set(struct store *st, const char *const *keys, const char *const *values,
                       size_t n, const char *who, struct error *err);
/* store_setting_delete - drop the stored value of key; STORE_NOT_FOUND when there is none */
int store_setting_delete(struct store *st, const char *key, struct error *err);
void store_settings_free(struct store_setting *s, size_t n);

/* ==== end of runtime settings ==== */
/* ==== directory: users, groups, addresses, recipient validation (issue 5; store_directory.c) ==== */
/*
 * src/directory is the caller.  An entry is a user or a group, from the
 * directory source (external_id set, replaced by each sync) or added by hand
 * (manual).  Every address of an entry -- its primary address and its
 * aliases, lower-case -- is unique across all entries: an insert or update
 * that would give an address a second owner is STORE_CONFLICT with
 * err->field "address" (the primary) or "aliases" and a message naming the
 * owner.  Group members are entries, named by any of their addresses.
 *
 * The changes below are each atomic (a savepoint) and may be grouped into
 * one transaction with store_dir_begin / store_dir_commit (the sync, a CSV
 * batch).  Strings in returned structs belong to the caller.
 */
enum store_dir_kind { STORE_DIR_USER = 0, STORE_DIR_GROUP };
enum store_dir_source { STORE_DIR_DIRECTORY = 0, STORE_DIR_MANUAL };

struct store_dir_entry {
    int64_t id;
    enum store_dir_kind kind;
    enum store_dir_source source;
    char *external_id;              /* directory entries; NULL for manual ones */
    char *primary;                  /* lower-case address */
    char *name;                     /* display name ("" when none) */
    bool disabled;
    char *password_hash;            /* argon2id encoded, or NULL; users only */
    char *fingerprint;              /* directory entries: digest of the source's view */
    char **aliases;                 /* lower-case, without the primary */
    size_t n_aliases;
    char **members;                 /* groups: the members' primary addresses (read only) */
    size_t n_members;
    int64_t created;
    int64_t updated;
};

const char *store_dir_kind_name(enum store_dir_kind k);       /* "user", "group" */
const char *store_dir_source_name(enum store_dir_source s);   /* "directory", "manual" */

/* store_dir_begin - one transaction (write: BEGIN IMMEDIATE) for a batch of changes */
int store_dir_begin(struct store *st, bool write, struct error *err);
int store_dir_commit(struct store *st, struct error *err);
void store_dir_rollback(struct store *st);

/* store_dir_get - the entry that owns address (primary or alias), with aliases
 * and members; STORE_NOT_FOUND (field "address") when nobody has it */
int store_dir_get(struct store *st, const char *address, struct store_dir_entry *out,
                  struct error *err);
/* store_dir_list - entries of kind with primary > after (NULL: from the
 * start), by primary, at most limit, with aliases and members */
int store_dir_list(struct store *st, enum store_dir_kind kind, const char *after, size_t limit,
                   struct store_dir_entry **out, size_t *n, struct error *err);
/* store_dir_owner - who has address: *id and *source (STORE_NOT_FOUND when nobody) */
int store_dir_owner(struct store *st, const char *address, int64_t *id,
                    enum store_dir_source *source, struct error *err);

/* store_dir_insert - a new entry and its addresses (members: store_dir_members_set) */
int store_dir_insert(struct store *st, const struct store_dir_entry *e, int64_t *id_out,
                     struct error *err);
/* store_dir_update - replace name, primary, aliases, disabled, password_hash and
 * fingerprint of entry id (kind, source and external_id stay) */
int store_dir_update(struct store *st, int64_t id, const struct store_dir_entry *e,
                     struct error *err);
/* store_dir_addresses_clear - drop every address of entry id (a sync frees the
 * addresses of the entries it changes before giving them out again) */
int store_dir_addresses_clear(struct store *st, int64_t id, struct error *err);
/* store_dir_delete - the entry, its addresses and memberships */
int store_dir_delete(struct store *st, int64_t id, struct error *err);
/* store_dir_members_set - group id's members are exactly these addresses;
 * strict: an address nobody has is STORE_NOT_FOUND (field "members"), else
 * it is skipped and counted in *skipped (may be NULL) */
int store_dir_members_set(struct store *st, int64_t group_id, char *const *addresses, size_t n,
                          bool strict, size_t *skipped, struct error *err);

/* sync support: every directory entry's id, external id, kind and fingerprint */
struct store_dir_ref {
    int64_t id;
    char *external_id;
    char *fingerprint;
    enum store_dir_kind kind;
};
int store_dir_refs(struct store *st, struct store_dir_ref **out, size_t *n, struct error *err);
void store_dir_refs_free(struct store_dir_ref *r, size_t n);
/* store_dir_synced - record an applied directory sync at when; *_get: 0 = never */
int store_dir_synced_set(struct store *st, int64_t when, struct error *err);
int store_dir_synced_get(struct store *st, int64_t *when, struct error *err);
/* store_dir_generation - a number that moves with every change of users,
 * groups, addresses, validation settings or sync status (cheap: one read), so
 * the daemon reloads its RCPT index only when the directory changed */
int store_dir_generation(struct store *st, int64_t *gen, struct error *err);

/* store_dir_count - entries of kind from source (source < 0: any) under domain
 * (NULL: anywhere; else primary address ending in @domain or .domain) */
int store_dir_count(struct store *st, enum store_dir_kind kind, int source, const char *domain,
                    int64_t *count, struct error *err);

/* store_dir_sample - the primary address of an active user directly under
 * domain (source < 0: any source), for probes; STORE_NOT_FOUND when none */
int store_dir_sample(struct store *st, const char *domain, int source, char *out, size_t size,
                     struct error *err);

/* store_dir_addresses_each - every address with its owner's kind, source and
 * state, for the RCPT index (directory_index_load); fn returning -1 stops */
typedef int (*store_dir_address_fn)(void *arg, const char *address, enum store_dir_kind kind,
                                    enum store_dir_source source, bool disabled);
int store_dir_addresses_each(struct store *st, store_dir_address_fn fn, void *arg,
                             struct error *err);

void store_dir_entry_clear(struct store_dir_entry *e);
void store_dir_entries_free(struct store_dir_entry *e, size_t n);

/* recipient validation, per internal domain: mode "directory", "known",
 * "call-forward" or "accept-all"; unreachable "tempfail" or "accept" */
struct store_rv_domain {
    char *domain;
    char *mode;
    char *unreachable;
    int64_t updated;
};
/* store_rv_set - mode NULL removes the domain's setting (no validation) */
int store_rv_set(struct store *st, const char *domain, const char *mode, const char *unreachable,
                 struct error *err);
int store_rv_list(struct store *st, struct store_rv_domain **out, size_t *n, struct error *err);
void store_rv_free(struct store_rv_domain *r, size_t n);
/* ==== end of directory ==== */

/* ==== directory: LDAP source and sync runs (issue 5; store_ldap.c) ==== */
/*
 * The LDAP / Active Directory source (one row) and the record of every sync
 * run.  src/directory gives the configuration its meaning: the store keeps
 * it as a JSON object text, and the bind password only as the blob
 * src/auth sealed (auth_secret_seal); nothing here sees it in the clear.
 * Strings and blobs in returned structs belong to the caller.
 */
struct store_ldap_source {
    char *config;                   /* JSON object text; "{}" when never set */
    unsigned char *password;        /* the sealed bind password; NULL = none */
    size_t password_len;
    int64_t updated;                /* unix seconds; 0 = never */
    char *updated_by;
};

/* store_ldap_source_get - the source (always present; config "{}" when never set) */
int store_ldap_source_get(struct store *st, struct store_ldap_source *out, struct error *err);
/* store_ldap_source_set - replace the configuration; keep_password: leave the
 * stored password as it is, else store password (NULL clears it) */
int store_ldap_source_set(struct store *st, const char *config, bool keep_password,
                          const unsigned char *password, size_t password_len, const char *who,
                          int64_t now, struct error *err);
void store_ldap_source_clear(struct store_ldap_source *s);

struct store_ldap_run {
    int64_t id;                     /* filled by add and list */
    const char *kind;               /* "apply", "preview" */
    const char *trigger;            /* "manual", "schedule" */
    const char *who;                /* account name, "" for the schedule */
    int64_t started, finished;      /* unix seconds */
    const char *outcome;            /* "ok", "error", "refused" (the safety stop) */
    int64_t entries;                /* entries read from the directory */
    int64_t created, updated, removed, unchanged, skipped_unvalidated, errors;
    const char *message;            /* the error or the refusal, "" when ok */
};

/* store_ldap_run_add - record one finished run; *id (may be NULL) gets its id */
int store_ldap_run_add(struct store *st, const struct store_ldap_run *r, int64_t *id,
                       struct error *err);
/* store_ldap_run_list - newest first, at most limit; kind NULL = every kind;
 * free with store_ldap_runs_free (the strings are owned by the array) */
int store_ldap_run_list(struct store *st, const char *kind, size_t limit,
                        struct store_ldap_run **out, size_t *n, struct error *err);
/* store_ldap_run_last - the newest run of kind with outcome (NULL = any);
 * STORE_NOT_FOUND when none; free with store_ldap_runs_free(out, 1) */
int store_ldap_run_last(struct store *st, const char *kind, const char *outcome,
                        struct store_ldap_run **out, struct error *err);
void store_ldap_runs_free(struct store_ldap_run *r, size_t n);
/* ==== end of directory: LDAP source and sync runs ==== */

/* ==== DKIM signing keys (issue 6; store_dkim.c) ==== */
/*
 * The private key arrives sealed by src/auth (auth_secret_seal of its PEM);
 * nothing here sees it in the clear.  public_key is the base64 p= value of
 * the DNS record (SubjectPublicKeyInfo for RSA, the raw 32 octets for
 * Ed25519, RFC 8463).  At most one key per domain is active.
 */
struct store_dkim_key {
    char *domain;                   /* lower case */
    char *selector;
    char *algorithm;                /* "rsa", "ed25519" */
    unsigned char *private_key;     /* sealed blob */
    size_t private_key_len;
    char *public_key;               /* base64 p= */
    bool active;
    int64_t created;                /* unix seconds */
    char *created_by;
};

/* store_dkim_key_add - a new key; activate: it becomes the domain's active
 * key and the previous one is kept inactive.  STORE_CONFLICT when domain and
 * selector exist already (err names "selector"). */
int store_dkim_key_add(struct store *st, const struct store_dkim_key *k, bool activate,
                       struct error *err);
/* store_dkim_key_list - by domain and selector; domain NULL = every domain;
 * active_only = only the active key of each domain (the signing set, and
 * what Connect checks is published); free with store_dkim_keys_free */
int store_dkim_key_list(struct store *st, const char *domain, bool active_only,
                        struct store_dkim_key **out, size_t *n, struct error *err);
/* store_dkim_key_activate - the domain's active key is now this one;
 * STORE_NOT_FOUND when there is no such key */
int store_dkim_key_activate(struct store *st, const char *domain, const char *selector,
                            struct error *err);
/* store_dkim_key_delete - STORE_NOT_FOUND when there is no such key */
int store_dkim_key_delete(struct store *st, const char *domain, const char *selector,
                          struct error *err);
void store_dkim_keys_free(struct store_dkim_key *k, size_t n);
/* ==== end of DKIM signing keys ==== */
/* ==== the outbound role (issue 6; store_outbound.c) ==== */
/*
 * Authorised outbound hosts (address ranges), SMTP AUTH accounts and the
 * sender domains whose mail must arrive under TLS.  Results are STORE_OK,
 * STORE_NOT_FOUND, STORE_CONFLICT (already there) or STORE_ERR; err->field
 * names the bad input ("cidr", "name", "domain", "comment", "password").
 * The SMTP loop reads them from the snapshot (store_snapshot_outbound_host
 * and friends below), never from here.
 */
#define STORE_SMTP_ACCOUNT_NAME_MAX 128
#define STORE_COMMENT_MAX 256

struct store_outbound_host { int64_t id; char *cidr; char *comment; int64_t created; };
/* store_outbound_host_add - cidr in any accepted form; stored canonical */
int store_outbound_host_add(struct store *st, const char *cidr, const char *comment,
                            int64_t *id_out, struct error *err);
/* store_outbound_host_remove - by the range (any accepted form) or its decimal id */
int store_outbound_host_remove(struct store *st, const char *cidr_or_id, struct error *err);
int store_outbound_host_list(struct store *st, struct store_outbound_host **out, size_t *n,
                             struct error *err);
void store_outbound_hosts_free(struct store_outbound_host *h, size_t n);

struct store_smtp_account {
    int64_t id; char *name; char *comment; int64_t created; int64_t last_used; bool disabled;
};
/* store_smtp_account_name_valid - 1..128 printable ASCII octets, no space; NULL or why */
const char *store_smtp_account_name_check(const char *name);
/* names are case-insensitive (stored lower-case); pw_hash is argon2id (auth_password_hash) */
int store_smtp_account_add(struct store *st, const char *name, const char *pw_hash,
                           const char *comment, struct error *err);
int store_smtp_account_set_hash(struct store *st, const char *name, const char *pw_hash,
                                struct error *err);
int store_smtp_account_remove(struct store *st, const char *name, struct error *err);
int store_smtp_account_list(struct store *st, struct store_smtp_account **out, size_t *n,
                            struct error *err);
void store_smtp_accounts_free(struct store_smtp_account *a, size_t n);

int store_tls_required_add(struct store *st, const char *domain, const char *comment,
                           struct error *err);
int store_tls_required_remove(struct store *st, const char *domain, struct error *err);
/* store_tls_required_list - sorted names; free each and the array */
int store_tls_required_list(struct store *st, char ***domains, size_t *n, struct error *err);

/* snapshot accessors, safe on the SMTP loop */
struct sockaddr;
/* store_snapshot_outbound_host - sa is inside an authorised range (v4-mapped v6 counts as v4) */
bool store_snapshot_outbound_host(const struct store_snapshot *s, const struct sockaddr *sa);
/* store_snapshot_smtp_account_hash - the argon2id hash of an enabled account; NULL
 * when unknown or disabled.  Valid until the snapshot is swapped: copy it. */
const char *store_snapshot_smtp_account_hash(const struct store_snapshot *s, const char *name);
/* store_snapshot_tls_required - sender_domain or a parent of it is listed */
bool store_snapshot_tls_required(const struct store_snapshot *s, const char *sender_domain);
/* ==== end of the outbound role ==== */
/* ==== outbound TLS policies (issue 6; store_tls.c) ==== */
/*
 * One row per destination domain that has a policy (no row: opportunistic).
 * A policy is enforced only once a probe met its mode, or an administrator
 * overrode a failed probe; a policy that is not enforced is reported only:
 * delivery stays opportunistic and logs what the policy would have refused.
 * Strings in returned structs belong to the caller (store_tls_policies_free).
 */
enum store_tls_policy_mode {
    STORE_TLSP_OPPORTUNISTIC = 0,
    STORE_TLSP_ENCRYPT,           /* TLS required, certificate not checked */
    STORE_TLSP_VERIFY,            /* TLS required, trusted chain, name = MX host */
    STORE_TLSP_DANE,              /* RFC 7672; fallback when DANE does not apply */
    STORE_TLSP_MTA_STS,           /* RFC 8461: the domain's published policy */
};

struct store_tls_policy {
    char *domain;                 /* lower-case */
    enum store_tls_policy_mode mode;
    enum store_tls_policy_mode fallback;  /* dane only: opportunistic|encrypt|verify */
    bool enforced;
    int64_t probe_time;           /* unix seconds; 0 = never probed */
    char *probe_verdict;          /* "strict", "relaxed", "unsupported", "error", "" */
    char *probe_reason;
    char *probe_details;           /* JSON text */
    bool override;
    char *override_by;
    int64_t updated;
    char *updated_by;
};

const char *store_tls_policy_mode_name(enum store_tls_policy_mode m);
int store_tls_policy_mode_parse(const char *s, enum store_tls_policy_mode *out);
/* store_tls_policy_put - insert or replace the row of p->domain */
int store_tls_policy_put(struct store *st, const struct store_tls_policy *p, struct error *err);
/* store_tls_policy_get - STORE_NOT_FOUND when the domain has no policy */
int store_tls_policy_get(struct store *st, const char *domain, struct store_tls_policy *out,
                         struct error *err);
int store_tls_policy_delete(struct store *st, const char *domain, struct error *err);
int store_tls_policy_list(struct store *st, struct store_tls_policy **out, size_t *n,
                          struct error *err);
void store_tls_policy_clear(struct store_tls_policy *p);
void store_tls_policies_free(struct store_tls_policy *p, size_t n);
/* store_snapshot_tls_policy - the policy of domain, else of its closest
 * parent domain, else NULL (opportunistic); safe on the SMTP loop */
const struct store_tls_policy *store_snapshot_tls_policy(const struct store_snapshot *snap,
                                                         const char *domain);

/* the MTA-STS policy cache (RFC 8461 5.1: a fetch failure keeps an unexpired policy) */
struct store_mta_sts {
    char *domain, *id, *policy;
    int64_t fetched, expires;     /* unix seconds */
};
int store_mta_sts_get(struct store *st, const char *domain, struct store_mta_sts *out,
                      struct error *err);
int store_mta_sts_put(struct store *st, const struct store_mta_sts *e, struct error *err);
void store_mta_sts_clear(struct store_mta_sts *e);
/* ==== end of outbound TLS policies ==== */
/* ==== DNSBL zones (issue 7; store_dnsbl.c) ==== */
/*
 * The DNS blocklists queried for inbound clients, each with an integer
 * weight; policy_dnsbl.c adds the weights of the zones that list a client
 * and compares the sum with dnsbl_threshold.  err->field: "zone", "weight",
 * "comment".  The SMTP loop reads the zones from the snapshot.
 */
#define STORE_DNSBL_ZONE_MAX 180        /* + 64 octets of IPv6 nibbles < 253 */
#define STORE_DNSBL_WEIGHT_MIN 1
#define STORE_DNSBL_WEIGHT_MAX 100
struct store_dnsbl_zone { char *zone; int weight; char *comment; int64_t created; };
/* store_dnsbl_zone_check - NULL when zone is a valid zone name (normalised in
 * place: lower case, no trailing dot), else why */
const char *store_dnsbl_zone_check(char *zone);
int store_dnsbl_zone_add(struct store *st, const char *zone, int weight, const char *comment,
                         struct error *err);
int store_dnsbl_zone_remove(struct store *st, const char *zone, struct error *err);
int store_dnsbl_zone_list(struct store *st, struct store_dnsbl_zone **out, size_t *n,
                          struct error *err);
void store_dnsbl_zones_free(struct store_dnsbl_zone *z, size_t n);
/* store_snapshot_dnsbl_zones - the zones (sorted by name) in the snapshot;
 * valid while the snapshot is */
const struct store_dnsbl_zone *store_snapshot_dnsbl_zones(const struct store_snapshot *s, size_t *n);
/* ==== end of DNSBL zones ==== */
/* ==== anti-spoofing bypasses (issue 7; store_antispoof.c) ==== */
/*
 * A bypass excepts a source from anti-spoofing, for one internal domain
 * (and its subdomains) or for all (domain ""): kind ip (value: an address
 * or range, canonical), host (a name, or "*.example.net" for any name below
 * it, matched against the client's forward-confirmed reverse DNS) or spf
 * (value: a sender domain whose SPF must pass, evaluated at end of DATA).
 * Errors name the field: "kind", "value", "domain", "comment", "id".
 */
#include "../core/cidr.h"
enum store_antispoof_kind { STORE_ANTISPOOF_IP = 0, STORE_ANTISPOOF_HOST, STORE_ANTISPOOF_SPF };
struct store_antispoof_bypass {
    int64_t id;
    enum store_antispoof_kind kind;
    char *value;              /* canonical: range text, lower-case name or "*.name" */
    char *domain;             /* "" = every internal domain */
    char *comment;
    int64_t created;
    struct cidr cidr;         /* kind ip: the parsed range (family 0 = unusable) */
};
const char *store_antispoof_kind_name(enum store_antispoof_kind k);
int store_antispoof_kind_parse(const char *s, enum store_antispoof_kind *out);
/* store_antispoof_bypass_add - STORE_CONFLICT when the same kind, value and domain exist */
int store_antispoof_bypass_add(struct store *st, const char *kind, const char *value,
                               const char *domain, const char *comment, int64_t *id_out,
                               struct error *err);
int store_antispoof_bypass_remove(struct store *st, int64_t id, struct error *err);
int store_antispoof_bypass_list(struct store *st, struct store_antispoof_bypass **out, size_t *n,
                                struct error *err);
void store_antispoof_bypasses_free(struct store_antispoof_bypass *b, size_t n);
/* pure matching helpers: a bypass's domain covers the spoofed internal
 * domain; a host pattern (exact or "*.name") matches a host name */
bool store_antispoof_domain_applies(const char *bypass_domain, const char *spoofed);
bool store_antispoof_host_matches(const char *pattern, const char *host);
/* store_snapshot_antispoof - the bypasses in the snapshot (valid until it is
 * swapped), safe on the SMTP loop */
const struct store_antispoof_bypass *store_snapshot_antispoof(const struct store_snapshot *s,
                                                              size_t *n);
/* ==== end of anti-spoofing bypasses ==== */

/* ==== permitted senders and greylisting (issue 7; store_permitted.c) ==== */
/*
 * A permitted sender is an address or a domain (a domain covers its
 * subdomains), stored lower-case.  user "" is the organisation-wide list;
 * else the row belongs to that recipient user, source "manual" (added by an
 * administrator) or "auto" (learned from the user's outbound mail, expires
 * permitted_auto_lifetime after last_seen).
 */
#define STORE_PERMITTED_VALUE_MAX 254
struct store_permitted {
    int64_t id;
    char *user;                 /* "" = organisation-wide */
    char *value;
    char *source;               /* "manual" | "auto" */
    char *comment;
    char *created_by;
    int64_t created, last_seen;
};
/* store_permitted_normalise - value as stored (lower-case) into out; -1 with
 * err (field) when it is neither an address "local@domain" nor a domain */
int store_permitted_normalise(const char *value, const char *field, char *out, size_t cap,
                              struct error *err);
/* store_permitted_add - a manual entry (user NULL or "": organisation);
 * STORE_CONFLICT (field "value") when it is there already */
int store_permitted_add(struct store *st, const char *user, const char *value,
                        const char *comment, const char *by, int64_t *id_out, struct error *err);
/* store_permitted_batch - begin (commit false) or commit one transaction
 * around many store_permitted_add (an import: a refused row does not undo
 * the others, each INSERT is its own statement) */
int store_permitted_batch(struct store *st, bool commit, struct error *err);
/* store_permitted_list - rows of user ("" = organisation) with id > after, at
 * most limit, by id; auto rows last seen before expired_before are left out */
int store_permitted_list(struct store *st, const char *user, int64_t after, size_t limit,
                         int64_t expired_before, struct store_permitted **out, size_t *n,
                         struct error *err);
/* store_permitted_delete - by id (and user: a user's row is deleted only
 * through its user); STORE_NOT_FOUND */
int store_permitted_delete(struct store *st, const char *user, int64_t id, struct error *err);
/* store_permitted_delete_value - by value; STORE_NOT_FOUND */
int store_permitted_delete_value(struct store *st, const char *user, const char *value,
                                 struct error *err);
/* store_permitted_auto_touch - auto-allow: insert (source auto) or refresh
 * last_seen of user's entry for value (a manual entry stays manual) */
int store_permitted_auto_touch(struct store *st, const char *user, const char *value, int64_t now,
                               struct error *err);
/* store_permitted_each - every row not expired (auto rows last seen before
 * expired_before are skipped and deleted), for the loop's index; fn
 * returning > 0 stops (STORE_OK), < 0 stops (STORE_ERR) */
int store_permitted_each(struct store *st, int64_t expired_before,
                         int (*fn)(void *arg, const struct store_permitted *e), void *arg,
                         struct error *err);
/* store_permitted_count - organisation rows, and unexpired auto rows */
int store_permitted_count(struct store *st, int64_t expired_before, int64_t *org, int64_t *autos,
                          struct error *err);
/* store_permitted_generation - moves with every change of the table */
int store_permitted_generation(struct store *st, int64_t *gen, struct error *err);
void store_permitted_clear(struct store_permitted *e);
void store_permitted_free(struct store_permitted *v, size_t n);

/* greylist triplets: key "net|sender|rcpt" */
struct store_greylist {
    char *triplet;
    int64_t first_seen, last_seen;
    bool passed;
};
/* store_greylist_put - insert or replace each of v[0..n) in one transaction */
int store_greylist_put(struct store *st, const struct store_greylist *v, size_t n,
                       struct error *err);
/* store_greylist_each - rows last seen at or after since, newest last;
 * rows older are deleted first */
int store_greylist_each(struct store *st, int64_t since,
                        int (*fn)(void *arg, const struct store_greylist *g), void *arg,
                        struct error *err);
/* ==== end of permitted senders and greylisting ==== */


/* ==== held mail, blocked senders, forwarding (issue 7; store_held.c) ====
 * Blocked senders: organisation-wide, an address ("user@example.com") or a
 * domain ("example.com", covering its subdomains), with an action: reject
 * at RCPT, or hold (accept into quarantine).  Forwarding rules: mail for an
 * internal address is redirected to, or also copied to, a target address.
 * Released Message-IDs: remembered so that replies to released mail are
 * recognisable (held_released_message_id).  Results as elsewhere:
 * STORE_OK, STORE_NOT_FOUND, STORE_CONFLICT, STORE_ERR (err->field set). */
#define STORE_BLOCKED_PATTERN_MAX 254
enum store_block_action { STORE_BLOCK_REJECT = 0, STORE_BLOCK_HOLD };
struct store_blocked_sender {
    int64_t id;
    char *pattern;                /* lower-case address or domain */
    enum store_block_action action;
    char *comment;
    int64_t created;
};
const char *store_block_action_name(enum store_block_action a);
int store_block_action_parse(const char *s, enum store_block_action *out);
/* store_blocked_add - pattern is checked and lower-cased (field "address") */
int store_blocked_add(struct store *st, const char *pattern, enum store_block_action action,
                      const char *comment, int64_t *id_out, struct error *err);
/* store_blocked_delete - by pattern (case-insensitive) */
int store_blocked_delete(struct store *st, const char *pattern, struct error *err);
int store_blocked_list(struct store *st, struct store_blocked_sender **out, size_t *n,
                       struct error *err);
void store_blocked_free(struct store_blocked_sender *b, size_t n);
/* store_snapshot_blocked_sender - the rule for sender: the exact address,
 * else its domain or the closest parent domain; NULL when none (or <>) */
const struct store_blocked_sender *store_snapshot_blocked_sender(const struct store_snapshot *snap,
                                                                 const char *sender);

enum store_forward_mode { STORE_FORWARD_REDIRECT = 0, STORE_FORWARD_COPY };
struct store_forward {
    int64_t id;
    char *address;                /* the internal address, lower case */
    char *target;                 /* where its mail goes */
    enum store_forward_mode mode;
    char *comment;
    int64_t created;
};
const char *store_forward_mode_name(enum store_forward_mode m);
int store_forward_mode_parse(const char *s, enum store_forward_mode *out);
/* store_forward_add - address must be under an internal domain (field
 * "address"), target a valid address (field "target"), not the address itself */
int store_forward_add(struct store *st, const char *address, const char *target,
                      enum store_forward_mode mode, const char *comment, int64_t *id_out,
                      struct error *err);
int store_forward_delete(struct store *st, int64_t id, struct error *err);
int store_forward_list(struct store *st, struct store_forward **out, size_t *n, struct error *err);
void store_forwards_free(struct store_forward *f, size_t n);
/* store_snapshot_forwards - the rules of address (case-insensitive):
 * *out points at n consecutive rules inside the snapshot; 0 when none */
size_t store_snapshot_forwards(const struct store_snapshot *snap, const char *address,
                               const struct store_forward **out);

/* held_released_add - remember the Message-ID of a released message
 * (angle brackets stripped); held_released_message_id - was it released? */
int store_held_released_add(struct store *st, const char *message_id, struct error *err);
bool held_released_message_id(struct store *st, const char *message_id);
/* store_message_id_key - the key a Message-ID is remembered under (no angle
 * brackets or blanks); -1 when empty or longer than size - 1 */
int store_message_id_key(const char *id, char *dst, size_t size);
/* store_held_released_each - the keys of messages released since `since`
 * (unix seconds), newest first, at most max; fn returning non-zero stops.
 * For the permitted-sender index: no auto-allow from replies to them. */
int store_held_released_each(struct store *st, int64_t since, size_t max,
                             int (*fn)(void *arg, const char *key), void *arg, struct error *err);
/* ==== end of held mail, blocked senders, forwarding ==== */

/* ==== journaling and legal holds (issue 8; store_journal.c) ==== */
/*
 * The journal role: the journal address (mail to it from an authorised
 * journal source is a journal report, archived and never relayed; from
 * anyone else it is refused), the journal sources (address ranges, like the
 * outbound hosts), the address for undeliverable journal reports (shown in
 * Connect's instructions: Exchange Online needs one outside itself), and
 * the evidence Connect's journaling check reads (the last report archived).
 * Legal holds: addresses whose archived mail retention never purges.
 */
struct store_journal {
    char *address;              /* effective journal address: the configured one, or
                                 * journal@journal.<oldest internal domain>; "" when neither */
    bool address_is_default;    /* not configured: the default above */
    char *undeliverable;        /* "" when not set */
    int64_t last_report;        /* unix seconds a report was last archived; 0 = never */
    char *last_report_client;   /* its client address ("" none) */
    char *last_report_qid;
    bool last_report_unwrapped; /* the last was a readable report (not malformed/plain) */
    char *last_report_kind;     /* 8D: "plain", "report", "malformed"; "" = none */
    char *last_report_error;    /* 8D: malformed: why it could not be read; else "" */
    uint64_t reports;           /* journal messages archived */
    uint64_t unwrapped;         /* of which unwrapped reports */
    uint64_t malformed;
};
int store_journal_get(struct store *st, struct store_journal *out, struct error *err);
void store_journal_clear(struct store_journal *j);
/* store_journal_set - address NULL/"" = back to the default; undeliverable
 * NULL = unchanged, "" = unset; addresses validated (field "address",
 * "undeliverable"), stored lower-case */
int store_journal_set(struct store *st, const char *address, const char *undeliverable,
                      struct error *err);
/* store_journal_seen - the archive recorded a journal message (kind "plain",
 * "report", "malformed") from client; error: why a malformed one could not
 * be read (NULL otherwise; 8D added it for Connect's journaling check) */
int store_journal_seen(struct store *st, int64_t when, const char *client, const char *qid,
                       const char *kind, const char *error, struct error *err);

struct store_journal_source { int64_t id; char *cidr; char *comment; int64_t created; };
/* store_journal_source_add - cidr in any accepted form (cidr.h), stored canonical;
 * the same bounds as outbound hosts (no range wider than /8 or /16) */
int store_journal_source_add(struct store *st, const char *cidr, const char *comment,
                             struct error *err);
int store_journal_source_remove(struct store *st, const char *cidr_or_id, struct error *err);
int store_journal_source_list(struct store *st, struct store_journal_source **out, size_t *n,
                              struct error *err);
void store_journal_sources_free(struct store_journal_source *s, size_t n);

/* the snapshot (SMTP loop): the effective journal address ("" none), and
 * whether sa is an authorised journal source (v4-mapped v6 counts as v4) */
const char *store_snapshot_journal_address(const struct store_snapshot *snap);
bool store_snapshot_journal_source(const struct store_snapshot *snap, const struct sockaddr *sa);

struct store_legal_hold { char *address; char *reason; int64_t created; char *created_by; };
/* store_legal_hold_add - address (lower-cased, validated: field "address");
 * STORE_CONFLICT when already held */
int store_legal_hold_add(struct store *st, const char *address, const char *reason,
                         const char *who, struct error *err);
int store_legal_hold_remove(struct store *st, const char *address, struct error *err);
int store_legal_hold_list(struct store *st, struct store_legal_hold **out, size_t *n,
                          struct error *err);
void store_legal_holds_free(struct store_legal_hold *h, size_t n);
/* ==== end of journaling and legal holds ==== */

/* ==== the metrics token (issue 11, store_metrics.c) ==== */
/* store_metrics_token_set - replace the one metrics token by its keyed hash
 * (64 hex digits, auth.c); created_by names the account */
int store_metrics_token_set(struct store *st, const char *hash, int64_t created,
                            const char *created_by, struct error *err);
/* store_metrics_token_hash - the stored hash; STORE_NOT_FOUND when none was made */
int store_metrics_token_hash(struct store *st, char hash[65], struct error *err);
/* ==== end of the metrics token ==== */

#endif
