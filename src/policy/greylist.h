/*
 * greylist.h - greylisting (issue 7 item 3): the triplet table on the SMTP
 * loop and its persistence.
 *
 * A triplet is (client network, envelope sender, recipient): the client's
 * /24 (IPv4) or /64 (IPv6), the sender lower-cased ("" for <>), the
 * recipient lower-cased.  Its first attempt is greylisted (451 4.7.1); a
 * retry at least greylist_min_delay and at most greylist_max_delay after the
 * first attempt passes, and a passed triplet passes at once for
 * greylist_pass_lifetime after its last use.
 *
 * The table lives on the loop, bounded by greylist_max_entries (the oldest
 * pending triplet goes first, then the least recently used passed one).
 * Every change is queued and written to the store by a worker-pool job
 * (batched once a second), never by the loop; greylist_load reads the
 * store at start so a restart does not greylist everyone again.
 */
#ifndef MOAT_GREYLIST_H
#define MOAT_GREYLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "../core/core.h"
#include "../core/settings.h"

struct event_base;
struct worker_pool;
struct store;
struct greylist;

#define GREYLIST_KEY_MAX 600

enum greylist_result {
    GREYLIST_NEW,        /* first attempt: greylisted */
    GREYLIST_EARLY,      /* retried before greylist_min_delay: greylisted */
    GREYLIST_PASSED,     /* retried in the window, or passed before: accepted */
    GREYLIST_EXPIRED,    /* retried after greylist_max_delay, or a passed triplet unused for
                          * greylist_pass_lifetime: starts over, greylisted */
};

const char *greylist_result_name(enum greylist_result r);

/* greylist_triplet_key - "net|sender|rcpt" into out; -1 when client_addr is
 * not an IP address or the key does not fit */
int greylist_triplet_key(const char *client_addr, const char *sender, const char *rcpt, char *out,
                         size_t cap);

/* greylist_create - workers NULL or db_path NULL: nothing is persisted
 * (unit tests); set is read at each use */
struct greylist *greylist_create(struct event_base *base, struct worker_pool *workers,
                                 const char *db_path, const struct moat_settings *set);
/* greylist_free - queues the last changes on the pool first (free the pool
 * after this: it finishes queued work) */
void greylist_free(struct greylist *g);
/* greylist_load - the triplets of the store (before the loop runs) */
int greylist_load(struct greylist *g, struct store *st, int64_t now, struct error *err);

/* greylist_check - the decision for key at now, recording the attempt */
enum greylist_result greylist_check(struct greylist *g, const char *key, int64_t now);
/* greylist_settings - the settings the table reads (greylisting on/off, clock) */
const struct moat_settings *greylist_settings(const struct greylist *g);
/* greylist_size - triplets held in memory */
size_t greylist_size(const struct greylist *g);
/* greylist_flush - queue the pending changes for the store now */
void greylist_flush(struct greylist *g);

#endif
