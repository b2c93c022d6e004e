/*
 * connect_artefacts.h - private to src/connect: the organisation as the
 * checks and generators see it, and the generators of the artefacts an
 * administrator applies outside Moat (DNS records, Exchange Online and
 * Exchange Management Shell PowerShell, nftables, Windows Firewall, a
 * Postfix snippet, Google Workspace settings).
 *
 * The generators are pure functions of their inputs (no store, no clock),
 * so tests/unit/test_connect_artefacts.c diffs them against golden files.
 * Every artefact is filled with the organisation's real values; where a
 * value is missing the generator says what to fill in Connect instead of
 * emitting a placeholder.
 */
#ifndef MOAT_CONNECT_ARTEFACTS_H
#define MOAT_CONNECT_ARTEFACTS_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>
#include <sys/socket.h>
#include "../core/core.h"
#include "../store/store.h"
#include "connect.h"

#define CONNECT_ORG_MAX 16   /* host names / addresses kept per list */

struct connect_org {
    char name[128];
    char environment[16];    /* "", "microsoft365", "exchange", "hybrid", "google", "smtp" */
    char hosts[CONNECT_ORG_MAX][256];   /* Moat's public host names, lower case */
    size_t n_hosts;
    char ips[CONNECT_ORG_MAX][64];      /* Moat's public addresses (v4 or v6) */
    size_t n_ips;
    char probe_source[64];
};

/* one route to the organisation's mail server, as the artefacts need it */
struct connect_art_route {
    const char *domain;
    const char *host;
    int port;
};

/* connect_org_load - the organisation row from the store, parsed */
int connect_org_load(struct store *st, struct connect_org *org, struct error *err);
/* connect_org_from_json - {"name","environment","public_hosts":[...],
 * "public_ips":[...],"probe_source"} (the checks' inputs carry it this way) */
void connect_org_from_json(json_t *o, struct connect_org *org);
json_t *connect_org_to_json(const struct connect_org *org);
const char *connect_env_title(const char *environment);

/* artefact - {"kind", "title", "content"} */
json_t *connect_artefact(const char *kind, const char *title, const char *content);

/* DNS: the verification TXT record of a domain */
char *connect_art_txt_record(const char *domain, const char *token);
/* DNS: the MX records of a domain, preferences 10, 20, ... in host order */
char *connect_art_mx_records(const char *domain, const struct connect_org *org);

/* the inbound task: how the mail server accepts mail from Moat */
json_t *connect_art_inbound(const struct connect_org *org, const struct connect_art_route *r,
                            size_t n);
/* the lockdown task: accept port 25 only from Moat */
json_t *connect_art_lockdown(const struct connect_org *org, const struct connect_art_route *r,
                             size_t n);

/* the outbound task: how the mail server sends through Moat (smart host,
 * connectors) and the SPF terms that authorise Moat: {"steps","artefacts"} */
json_t *connect_art_outbound(const struct connect_org *org);

/* --- shared by the checks (connect_artefacts.c) --- */
struct connect_env;
/* connect_finish - call done(arg, result) now (already on the loop, later
 * than run); details is handed over to the receiver */
void connect_finish(connect_done_cb done, void *arg, enum connect_outcome o, json_t *details,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* connect_finish_later - the same from inside run: deferred to the next loop
 * turn, because done must never be called from inside run */
void connect_finish_later(const struct connect_env *env, connect_done_cb done, void *arg,
                          enum connect_outcome o, json_t *details, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* connect_domain_covers - parent equals name or is a parent domain of it */
bool connect_domain_covers(const char *parent, const char *name);
/* connect_address_valid - a plain mail address "local@domain" (ASCII, RFC 5321 lengths) */
bool connect_address_valid(const char *a);
/* connect_listener_target - Moat's own SMTP listener as a client reaches it
 * (the first smtp_listen; a wildcard on loopback); text "127.0.0.1:25".
 * -1 when smtp_listen is not an IP address and port. */
int connect_listener_target(const struct moat_settings *s, struct sockaddr_storage *sa,
                            socklen_t *salen, char *text, size_t textlen);

#endif
