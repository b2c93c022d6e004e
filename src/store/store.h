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
    bool verified;       /* internal for relay control only when true */
    int64_t created;     /* unix seconds */
    struct store_route route;
};

/* store_open - open (creating) the database at path and apply migrations */
struct store *store_open(const char *path, struct error *err);
void store_close(struct store *st);
/* store_schema_version - PRAGMA user_version after migrations */
int store_schema_version(struct store *st);

/* domains: names are normalised to lower case; err->field names the bad input */
int store_domain_add(struct store *st, const char *name, struct error *err);
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
/* store_snapshot_find - the verified domain that covers addr_domain (itself or
 * its closest verified parent: subdomains of an internal domain are internal),
 * or NULL.  Case-insensitive. */
const struct store_domain *store_snapshot_find(const struct store_snapshot *snap,
                                               const char *addr_domain);
size_t store_snapshot_count(const struct store_snapshot *snap);

/* domain_name_valid - syntax of a DNS domain name (LDH labels, 1..63, total <= 253) */
bool domain_name_valid(const char *name);

#endif
