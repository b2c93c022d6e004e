/*
 * metrics.h - the gateway's counters, gauges and histograms, exposed at
 * /metrics in the Prometheus text exposition format (version 0.0.4).
 *
 * One process-wide registry, fixed at compile time: every metric is a row
 * of the table in metrics.c (name, type, help, label names), so the
 * exposition, docs and tests read one list.  Updates are lock-free
 * (relaxed atomics on per-series cells), safe from any thread, and cheap
 * enough for the SMTP hot path; a metric with labels keeps one cell per
 * label value from a fixed, small set (an unknown value is counted under
 * "other"), so the number of series is bounded.
 *
 * Most message counters are fed by tracking events: track_emit() calls
 * metrics_track() for every event, so the SMTP session and the delivery
 * engine are instrumented once.  What is not a message event (DNS query
 * latency, directory sync results, archive ingest, current connections,
 * TLS handshakes) is counted where it happens with metrics_inc /
 * metrics_observe.  Gauges of state (queue size, age of the oldest
 * message) are read at scrape time from the providers that moatd
 * registered (metrics_set_gauge_fn), on the thread that renders.
 */
#ifndef MOAT_METRICS_H
#define MOAT_METRICS_H

#include <stdint.h>
#include "core.h"
#include "track.h"

/* metric ids: one per row of the table in metrics.c */
enum metrics_id {
    M_CONNECTIONS_TOTAL = 0,       /* counter: SMTP connections accepted (one listener serves
                                    * every role, so no label) */
    M_CONNECTIONS_REFUSED_TOTAL,   /* counter: refused at connect (limits) */
    M_CONNECTIONS_CURRENT,         /* gauge */
    M_TRANSACTIONS_TOTAL,          /* counter {role, outcome}: accepted|rejected|tempfailed */
    M_REJECTIONS_TOTAL,            /* counter {stage, reason}: reason = the deciding check */
    M_HELD_TOTAL,                  /* counter {check} */
    M_RELEASED_TOTAL,              /* counter */
    M_DELIVERIES_TOTAL,            /* counter {role, result}: delivered|deferred|failed */
    M_BOUNCES_TOTAL,               /* counter */
    M_DELIVERY_LATENCY_SECONDS,    /* histogram: queueing to the route's 250 */
    M_MESSAGE_SIZE_BYTES,          /* histogram: accepted messages */
    M_TLS_INBOUND_TOTAL,           /* counter {version}: STARTTLS handshakes as server */
    M_TLS_OUTBOUND_TOTAL,          /* counter {result}: "tls" | "plain" per delivery connection */
    M_DNS_QUERIES_TOTAL,           /* counter {result}: ok|nxdomain|nodata|servfail|bogus|error */
    M_DNS_LATENCY_SECONDS,         /* histogram */
    M_DIRECTORY_SYNCS_TOTAL,       /* counter {result}: ok|failed */
    M_DIRECTORY_USERS,             /* gauge: entries (users, groups) after the last good sync */
    M_ARCHIVE_INGESTED_TOTAL,      /* counter */
    M_ARCHIVE_FAILED_TOTAL,        /* counter */
    M_ARCHIVE_PENDING,             /* gauge (provider) */
    M_QUEUE_MESSAGES,              /* gauge (provider): messages in the spool */
    M_QUEUE_OLDEST_SECONDS,        /* gauge (provider): age of the oldest queued message */
    M_TRACKING_DROPPED_TOTAL,      /* counter: events the tracking engine could not keep */
    M_START_TIME_SECONDS,          /* gauge: process start, unix time */
    M_ID_COUNT
};

/* metrics_inc - add n to the series of id with the given label values
 * (as many as the metric declares, in order; NULL for a metric without) */
void metrics_add(enum metrics_id id, const char *const *labels, uint64_t n);
static inline void metrics_inc(enum metrics_id id, const char *const *labels)
{
    metrics_add(id, labels, 1);
}
/* metrics_set - set a gauge without labels */
void metrics_set(enum metrics_id id, int64_t v);
/* metrics_observe - one observation of a histogram, in seconds (or bytes) */
void metrics_observe(enum metrics_id id, double v);

/* a gauge read at scrape time; returns the value */
typedef int64_t (*metrics_gauge_fn)(void *arg);
void metrics_set_gauge_fn(enum metrics_id id, metrics_gauge_fn fn, void *arg);

/* metrics_track - count what a tracking event says (called by track_emit) */
void metrics_track(const struct track_event *ev);

/* metrics_render - the whole exposition into out (text/plain; version=0.0.4) */
void metrics_render(struct buf *out);

/* metrics_reset - zero every series (unit tests only) */
void metrics_reset(void);

#endif
