/*
 * deliver.h - the delivery engine: takes durable messages from the spool,
 * groups recipients by destination (the domain's route, or MX for other
 * domains), delivers them with the SMTP client under a per-destination
 * concurrency limit, reuses connections, records per-recipient results in
 * the spool, retries temporary failures on the configured schedule, and
 * bounces (RFC 3464 DSN to the envelope sender, never to <>) permanent
 * failures and expired messages; sends one delay warning per message.
 *
 * The schedule lives in memory only; it is rebuilt from the spool at start.
 * Everything runs on the event loop.
 */
#ifndef MOAT_DELIVER_H
#define MOAT_DELIVER_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>
#include <openssl/ssl.h>
#include "../core/core.h"
#include "../core/settings.h"
#include "../core/track.h"
#include "../store/store.h"

struct event_base;
struct spool;
struct dns;
struct deliver;
struct dkim_keyset;
struct worker_pool;

struct deliver_config {
    struct event_base *base;
    /* read at each use, never copied: the runtime settings (settings.h)
     * change between events on this loop */
    const struct moat_settings *settings;
    struct spool *spool;
    struct dns *dns;
    SSL_CTX *tls_client;
    const struct store_snapshot *const *snapshot;   /* see smtp.h */
    const char *hostname;            /* EHLO name and DSN Reporting-MTA */
    /* DKIM signing keys (deliver_dkim.h), swapped in by moatd like the
     * snapshot; NULL or an empty set signs nothing */
    const struct dkim_keyset *const *dkim_keys;
    /* blocking work (MTA-STS policy fetches); NULL: MTA-STS policies are
     * treated as opportunistic (issue 6) */
    struct worker_pool *workers;
};

struct deliver_stats {
    uint64_t delivered;      /* recipients */
    uint64_t deferred;       /* recipient attempts that failed temporarily */
    uint64_t bounced;        /* recipients failed permanently or expired */
    uint64_t dsn_sent;       /* DSNs queued */
    uint64_t connections;    /* outbound connections opened */
    uint64_t active;         /* deliveries in progress */
};

struct deliver *deliver_create(const struct deliver_config *cfg, struct error *err);
/* deliver_start - attach to the spool (recovered messages are scheduled) */
void deliver_start(struct deliver *d);
/* deliver_shutdown - stop starting deliveries; let those in flight finish
 * (bounded by the command timeouts), then done(arg) */
void deliver_shutdown(struct deliver *d, void (*done)(void *arg), void *arg);
void deliver_free(struct deliver *d);
void deliver_get_stats(const struct deliver *d, struct deliver_stats *out);

/* --- queue administration (control socket now, HTTP API later) --- */
/* deliver_queue_list - JSON array of {id, sender, received, size, rcpts:[{addr,state,diag}],
 * attempts, next_attempt, last_error}; at most limit entries after cursor (a queue id, or NULL) */
json_t *deliver_queue_list(struct deliver *d, size_t limit, const char *cursor);
/* deliver_queue_show - one message as above plus its header section; NULL if unknown */
json_t *deliver_queue_show(struct deliver *d, const char *qid);
/* deliver_queue_retry - schedule now (qid, or NULL for all); returns count */
int deliver_queue_retry(struct deliver *d, const char *qid);
/* deliver_queue_delete - drop without DSN (an administrator's act); returns count (0 = unknown) */
int deliver_queue_delete(struct deliver *d, const char *qid);

/* --- held (quarantined) mail, issue 7: messages whose envelope has a hold
 * reason; never in the queue functions above --- */
/* deliver_held_list - JSON array of {id, sender, rcpts:[addr], received, size, reason} */
json_t *deliver_held_list(struct deliver *d, size_t limit, const char *cursor);
/* deliver_held_show - one held message as above plus client_addr, helo,
 * headers (the header section) and text (the first text/plain part,
 * decoded, bounded; null when none); NULL if unknown */
json_t *deliver_held_show(struct deliver *d, const char *qid);
/* deliver_held_release - lift the hold durably, then deliver; 1, or 0 when
 * unknown.  *message_id gets the message's Message-ID header (caller frees), or NULL */
int deliver_held_release(struct deliver *d, const char *qid, char **message_id);
/* deliver_held_delete - drop without DSN; 1, or 0 when unknown */
int deliver_held_delete(struct deliver *d, const char *qid);
/* deliver_held_purge - drop held messages older than held_lifetime (also on a timer) */
size_t deliver_held_purge(struct deliver *d);

/* deliver_track_msg - a tracking event about queued message qid as a whole
 * (core/track.h: RELEASED, DELETED, DSN); actor: the account, "" for the
 * system; thread-safe (the API calls it on the loop, in the turn that acts,
 * so a release is tracked before its delivery) */
void deliver_track_msg(const char *qid, enum track_kind kind, const char *actor, const char *detail);

#endif
