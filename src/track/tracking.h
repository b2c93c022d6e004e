/*
 * tracking.h - the tracking engine: the sink of track_emit() (core/track.h)
 * that keeps every event in the tracking store (store_tracking.h).
 *
 * track_emit() may run on any thread (the SMTP loop, HTTP workers, the
 * archive thread).  The sink deep-copies the event into one allocation and
 * appends it to a queue under a mutex; it never waits for the disk.  The
 * engine's own thread takes the queue every 200 ms (or at once when it
 * holds TRACKING_BATCH events) and writes it in one transaction.  When the
 * queue already holds TRACKING_QUEUE_MAX events (the disk cannot keep up,
 * or the store fails), further events are dropped and counted
 * (M_TRACKING_DROPPED_TOTAL, one warning a minute): tracking must never
 * slow down or stop the mail.
 *
 * Bounds: every tracking_purge_interval the thread deletes messages whose
 * last event is older than tracking_retention (default 30 days), then the
 * oldest while the file holds more than tracking_max_size octets.
 *
 * Readers (the API) open their own store handle on tracking_path().
 */
#ifndef MOAT_TRACKING_H
#define MOAT_TRACKING_H

#include <stdint.h>
#include "../core/core.h"
#include "../core/settings.h"

#define TRACKING_BATCH 512
#define TRACKING_QUEUE_MAX 200000

struct tracking;

struct tracking_config {
    const char *path;            /* the tracking database */
    int64_t retention_s;         /* tracking_retention */
    int64_t max_bytes;           /* tracking_max_size */
    int64_t purge_interval_s;    /* tracking_purge_interval */
};

/* tracking_start - open the store, start the thread, install the sink
 * (track_set_sink); NULL with err when the store cannot be opened */
struct tracking *tracking_start(const struct tracking_config *cfg, struct error *err);

/* tracking_set_limits - new retention / size (runtime settings, from the loop) */
void tracking_set_limits(struct tracking *t, int64_t retention_s, int64_t max_bytes);

/* tracking_flush - wait until every event emitted before the call is
 * written (tests, shutdown); -1 after timeout_ms */
int tracking_flush(struct tracking *t, int timeout_ms);

/* tracking_purge_now - run the purge at once on the thread and wait;
 * *removed messages */
int tracking_purge_now(struct tracking *t, int64_t *removed, struct error *err);

/* tracking_stop - remove the sink, write what is queued, stop, free */
void tracking_stop(struct tracking *t);

const char *tracking_path(const struct tracking *t);

/* added by 11A: tracking_purge_interval is a runtime setting too (moatd
 * applies it with the limits); and the count of events dropped since start
 * (the same as M_TRACKING_DROPPED_TOTAL; tests and status) */
void tracking_set_purge_interval(struct tracking *t, int64_t purge_interval_s);
uint64_t tracking_dropped(const struct tracking *t);

#endif
