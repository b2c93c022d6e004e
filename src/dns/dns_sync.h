/*
 * dns_sync.h - blocking DNS for worker threads (the content stage: SPF,
 * DKIM keys, DMARC records).  Each thread has its own libunbound context,
 * set up like src/dns (forwarding to the configured resolver, the trust
 * anchor file if set, a dead resolver failing in under a second): never the
 * system resolver when a resolver is configured.  Every lookup is bounded by
 * a timeout and by DNS_SYNC_MAX_ANSWERS records.  Never call on the loop.
 */
#ifndef MOAT_DNS_SYNC_H
#define MOAT_DNS_SYNC_H

#include "dns.h"

#define DNS_SYNC_MAX_ANSWERS 64

/* dns_sync_lookup - name/type on this thread's context (created on first
 * use from opt); fills r (dns_sync_result_free), r->status DNS_TEMPFAIL on
 * a resolver error or after timeout_ms */
void dns_sync_lookup(const struct dns_options *opt, const char *name, enum dns_type type,
                     int timeout_ms, struct dns_result *r);
void dns_sync_result_free(struct dns_result *r);
/* dns_sync_thread_end - drop this thread's context (optional; at thread exit) */
void dns_sync_thread_end(void);

#endif
