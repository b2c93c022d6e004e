/*
 * permitted.h - permitted senders (issue 7 item 2): the loop's read-only
 * index of organisation-wide and per-user permitted senders (manual and
 * auto-allowed), and the lookup every screening check may use.
 *
 * A permitted sender skips greylisting, DNSBL and spam scoring; it NEVER
 * skips anti-spoofing, DMARC or size limits.
 *
 * The index is built by moatd's reload thread from the store
 * (permitted_index_load) and swapped in on the SMTP loop like the routing
 * snapshot and the directory index; lookups never touch the store.
 *
 * For the session: struct policy_request.permitted is true when the
 * envelope sender is permitted for req->rcpt (computed per RCPT); the
 * transaction's t->all_permitted is true when every accepted recipient was
 * permitted (used at DATA / end-of-DATA by rspamd and the content stage).
 */
#ifndef MOAT_PERMITTED_H
#define MOAT_PERMITTED_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include "../core/core.h"

struct store;
struct permitted_index;

/* permitted_index_load - every organisation-wide entry and every per-user
 * entry not expired at now (auto entries: last_seen + permitted_auto_lifetime) */
struct permitted_index *permitted_index_load(struct store *st, int64_t now, int64_t auto_lifetime,
                                             struct error *err);
void permitted_index_free(struct permitted_index *ix);
/* permitted_index_released - message_id ("<id>" or "id") was released from
 * hold within the auto-allow lifetime: replies to it teach nothing */
bool permitted_index_released(const struct permitted_index *ix, const char *message_id);

/* permitted_check - is sender (MAIL FROM path, "" for <>) a permitted
 * sender for rcpt ("local@domain")?  Matches, case-insensitively: the
 * address itself, its domain, and each parent domain of it, in the
 * organisation-wide list and in rcpt's own list (manual or auto entries not
 * expired at now).  The null sender is never permitted.  ix NULL: false.
 * O(labels of the sender domain) hash lookups. */
bool permitted_check(const struct permitted_index *ix, const char *sender, const char *rcpt,
                     int64_t now);

/* counts for the Connect task and the API */
size_t permitted_index_count_org(const struct permitted_index *ix);
size_t permitted_index_count_auto(const struct permitted_index *ix);

/* --- auto-allow (permitted_learn.c) ---
 * When the outbound role relays a message from an internal sender, each
 * external recipient becomes (or is refreshed as) an auto-allowed permitted
 * sender of that internal user.  The session collects the facts at commit;
 * the store write runs on the worker pool, never on the loop. */
struct worker_pool;

/* permitted_learn_autoreply - the header block [head, head + len) (up to
 * its empty line, bounded by len) marks an automatic message: RFC 3834
 * Auto-Submitted other than "no", Precedence bulk/junk/list, X-Autoreply.
 * *why gets the header's name. */
bool permitted_learn_autoreply(const char *head, size_t len, const char **why);

/* permitted_learn_released_reply - the held-mail hook: true when the
 * message's In-Reply-To or References names a Message-ID that a release of
 * held mail recorded.  Asks the function set with
 * permitted_learn_set_released_hook for each Message-ID found (moatd sets
 * it: the permitted index holds the released ids); with none set, false. */
bool permitted_learn_released_reply(const char *head, size_t len);
void permitted_learn_set_released_hook(bool (*known)(void *arg, const char *msgid), void *arg);

/* permitted_learn_submit - queue the write: user's auto entries for
 * values[0..n) at now, on a worker-pool job with its own store handle */
void permitted_learn_submit(struct worker_pool *workers, const char *db_path, const char *user,
                            char *const *values, size_t n, int64_t now);

#endif
