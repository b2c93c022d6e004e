/*
 * smtp.h - the SMTP server (inbound listener) and the TLS contexts.
 *
 * One listener serves every role; a session is a state machine driven by a
 * command table (smtp_session.c).  The server does no blocking work: policy
 * reads the routing snapshot, the spool commits on its own thread and calls
 * back.  The delivery-side client is in smtp_client.h.
 */
#ifndef MOAT_SMTP_H
#define MOAT_SMTP_H

#include <stdbool.h>
#include <stdint.h>
#include <openssl/ssl.h>
#include "../core/core.h"
#include "../core/settings.h"
#include "../store/store.h"

struct event_base;
struct spool;
struct smtp_server;
struct directory_index;
struct policy_callforward;
struct worker_pool;
struct policy_antispoof;
struct permitted_index;
struct greylist;

struct smtp_server_config {
    struct event_base *base;
    /* read at each use, never copied: the runtime settings (settings.h)
     * change between events on this loop */
    const struct moat_settings *settings;
    SSL_CTX *tls;                       /* server context; STARTTLS always offered */
    struct spool *spool;
    /* the current routing snapshot; main swaps *snapshot between events */
    const struct store_snapshot *const *snapshot;
    /* the current directory index (recipient validation), swapped the same way;
     * NULL (or *directory NULL): no recipient validation */
    const struct directory_index *const *directory;
    /* the call-forward prober on this loop (policy.h); NULL: call-forward
     * domains count as unreachable */
    struct policy_callforward *callforward;
    const char *hostname;               /* banner, EHLO, Received */
    /* the worker pool for blocking work (argon2id of SMTP AUTH); NULL: AUTH
     * is not offered */
    struct worker_pool *workers;
    /* asynchronous DNS on this loop, for the DNSBL lookups of each inbound
     * client (issue 7); NULL: no DNSBL */
    struct dns *dns;
    /* anti-spoofing's loop state (policy.h, issue 7); NULL: anti-spoofing off */
    struct policy_antispoof *antispoof;
    /* issue 7: the permitted-sender index (policy/permitted.h), swapped like
     * the snapshot; NULL or *permitted NULL: nobody is permitted */
    const struct permitted_index *const *permitted;
    /* the greylisting table (policy/greylist.h); NULL: no greylisting */
    struct greylist *greylist;
    /* forwarding (issue 7): the SRS key, SRS_KEY_LEN octets, filled by
     * moatd before smtp_server_start (forward.h); NULL: no SRS */
    const unsigned char *srs_key;
};

struct smtp_server_stats {
    uint64_t connections_total;
    uint64_t connections_now;
    uint64_t messages_accepted;
    uint64_t messages_rejected;
    uint64_t rcpts_rejected;
    /* outbound relays: accepted transactions from an authorised host or an
     * authenticated client with at least one external recipient */
    uint64_t outbound_relayed;
    int64_t outbound_last;            /* unix seconds; 0 = none yet */
    char outbound_last_client[64];    /* its client address, or auth=<account> */
};

/* smtp_server_create - bind every settings->smtp_listen address (IPv4 or
 * IPv6); -1 with err on a bind failure.  Binding happens here so the caller
 * can drop privileges afterwards. */
struct smtp_server *smtp_server_create(const struct smtp_server_config *cfg, struct error *err);
/* smtp_server_start - begin accepting (after privileges are dropped) */
int smtp_server_start(struct smtp_server *srv);
/* smtp_server_shutdown - stop accepting; sessions in flight get up to
 * settings->smtp_timeout_shutdown to finish, then 421 4.3.2; done(arg) is
 * called when no session is left (commits in flight complete first). */
void smtp_server_shutdown(struct smtp_server *srv, void (*done)(void *arg), void *arg);
void smtp_server_free(struct smtp_server *srv);
void smtp_server_get_stats(const struct smtp_server *srv, struct smtp_server_stats *out);
/* smtp_server_set_tls - on the loop: new STARTTLS sessions use tls (the
 * caller owns it; sessions in TLS hold their own reference to the old
 * context, so the caller may SSL_CTX_free the old one at once) */
void smtp_server_set_tls(struct smtp_server *srv, SSL_CTX *tls);

/* --- TLS (smtp_tls.c) --- */
/* smtp_tls_server_ctx - load cert/key; when both paths are empty, use (or
 * generate on first start) a self-signed pair under STATE/tls/.  Minimum
 * protocol from settings->tls_min_version. */
SSL_CTX *smtp_tls_server_ctx(const struct moat_settings *s, const char *hostname, struct error *err);
/* smtp_tls_client_ctx - client context with the system trust store */
SSL_CTX *smtp_tls_client_ctx(const struct moat_settings *s, struct error *err);

#endif
