/*
 * tracking.c - the tracking engine (tracking.h): track_emit()'s sink, a
 * queue, and one thread that writes the queue to the tracking store
 * (store_tracking.h) and purges it.
 *
 * The sink copies an event and its strings into one allocation (struct
 * item) and appends it under the mutex; that is all the emitting thread
 * (the SMTP loop among them) ever waits for.  The thread wakes every
 * TICK_MS, or at once when TRACKING_BATCH events wait, a flush or a purge
 * is asked, or the engine stops; it takes the whole queue and writes it in
 * transactions of TRACKING_BATCH events.  Items stay counted in the queue
 * until written: when a write fails they go back to its front and are
 * tried again next round, and what the queue cannot hold (TRACKING_QUEUE_MAX)
 * is dropped and counted.  Every event gets a sequence number, so a flush
 * waits for exactly what was emitted before it.
 *
 * Ownership: struct tracking owns the store handle (used only on its
 * thread), the queue and its items.  Limits are read under the mutex.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "tracking.h"
#include "../core/metrics.h"
#include "../core/track.h"
#include "../store/store_tracking.h"

#define TICK_MS 200
#define WARN_EVERY_MS 60000   /* one warning a minute about drops, one about failures */
#define STOP_TRIES 3          /* at stop, rounds a failing store gets before events are lost */

/* one queued event; its strings follow it in str[] */
struct item {
    struct item *next;
    uint64_t seq;
    struct track_event ev;
    char str[];
};

struct tracking {
    pthread_mutex_t mu;
    pthread_cond_t wake;            /* the thread: work waits */
    pthread_cond_t done;            /* flush and purge callers: progress */
    pthread_t thread;
    struct store_tracking *st;      /* the thread's */
    char *path;

    /* under mu */
    struct item *head, *tail;
    size_t count;                   /* queued, including those being written */
    uint64_t enqueued_seq;          /* seq of the last event queued */
    uint64_t written_seq;           /* seq of the last event written */
    bool stop, flush_req;
    int64_t retention_s, max_bytes, purge_interval_s;
    uint64_t last_purge_ms;         /* monotonic */
    uint64_t purge_asked, purge_done;   /* tracking_purge_now generations */
    int purge_rc;
    int64_t purge_removed;
    struct error purge_err;
    uint64_t drop_warned_ms, fail_warned_ms;
    uint64_t drops_unreported;

    _Atomic uint64_t dropped;
};

/* --- the sink (any thread) --- */

/* the string members of an event, for copying */
#define EVENT_STRINGS(X) \
    X(client_ip) X(client_name) X(helo) X(sender) X(rcpt) X(subject) X(message_id) X(stage) \
    X(check) X(dsn) X(reason) X(remote) X(tls) X(actor) X(detail)

/* item_new - ev and its strings in one allocation */
static struct item *item_new(const struct track_event *ev)
{
    size_t total = 0;
#define LEN(f) total += ev->f != NULL ? strlen(ev->f) + 1 : 0;
    EVENT_STRINGS(LEN)
#undef LEN
    struct item *it = xcalloc(1, sizeof *it + total);
    it->ev = *ev;
    char *p = it->str;
#define COPY(f)                                  \
    if (ev->f != NULL) {                         \
        size_t n = strlen(ev->f) + 1;            \
        memcpy(p, ev->f, n);                     \
        it->ev.f = p;                            \
        p += n;                                  \
    }
    EVENT_STRINGS(COPY)
#undef COPY
    return it;
}

static void items_free(struct item *it)
{
    while (it != NULL) {
        struct item *next = it->next;
        free(it);
        it = next;
    }
}

static void sink(const struct track_event *ev, void *arg)
{
    struct tracking *t = arg;
    struct item *it = item_new(ev);
    uint64_t report = 0;
    pthread_mutex_lock(&t->mu);
    if (t->count >= TRACKING_QUEUE_MAX) {
        t->drops_unreported++;
        uint64_t now = time_mono_ms();
        if (t->drop_warned_ms == 0 || now - t->drop_warned_ms >= WARN_EVERY_MS) {
            t->drop_warned_ms = now;
            report = t->drops_unreported;
            t->drops_unreported = 0;
        }
        pthread_mutex_unlock(&t->mu);
        free(it);
        atomic_fetch_add_explicit(&t->dropped, 1, memory_order_relaxed);
        metrics_inc(M_TRACKING_DROPPED_TOTAL, NULL);
        if (report > 0)
            log_warn("event=tracking_dropped events=%llu queued=%d reason=\"the tracking "
                     "database does not keep up\"", (unsigned long long)report,
                     TRACKING_QUEUE_MAX);
        return;
    }
    it->seq = ++t->enqueued_seq;
    if (t->tail != NULL)
        t->tail->next = it;
    else
        t->head = it;
    t->tail = it;
    if (++t->count == TRACKING_BATCH)
        pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&t->mu);
}

/* --- the thread --- */

/* requeue - items the store refused go back to the front of the queue */
static void requeue(struct tracking *t, struct item *items)
{
    if (items == NULL)
        return;
    struct item *last = items;
    while (last->next != NULL)
        last = last->next;
    last->next = t->head;
    if (t->head == NULL)
        t->tail = last;
    t->head = items;
}

/* write_all - called with mu held, which it releases while writing: every
 * queued item in batches; on failure the rest is requeued.  0 / -1 */
static int write_all(struct tracking *t)
{
    struct item *items = t->head;
    t->head = t->tail = NULL;
    pthread_mutex_unlock(&t->mu);

    struct track_event batch[TRACKING_BATCH];
    struct error err = {0};
    int rc = 0;
    while (items != NULL) {
        size_t n = 0;
        struct item *last = NULL;
        for (struct item *it = items; it != NULL && n < TRACKING_BATCH; it = it->next) {
            batch[n++] = it->ev;
            last = it;
        }
        if (store_tracking_write(t->st, batch, n, &err) < 0) {
            rc = -1;
            break;
        }
        struct item *rest = last->next;
        uint64_t seq = last->seq;
        last->next = NULL;
        items_free(items);
        items = rest;
        pthread_mutex_lock(&t->mu);
        t->count -= n;
        t->written_seq = seq;
        pthread_cond_broadcast(&t->done);
        pthread_mutex_unlock(&t->mu);
    }

    pthread_mutex_lock(&t->mu);
    if (rc < 0) {
        requeue(t, items);
        uint64_t now = time_mono_ms();
        if (t->fail_warned_ms == 0 || now - t->fail_warned_ms >= WARN_EVERY_MS) {
            t->fail_warned_ms = now;
            log_error("event=tracking_write_failed path=%s queued=%zu reason=\"%s\"", t->path,
                      t->count, err.msg);
        }
    }
    return rc;
}

/* purge - called with mu held, released while the store works */
static void purge(struct tracking *t)
{
    int64_t now_us = (int64_t)time_wall_ms() * 1000;
    int64_t before = t->retention_s > 0 ? now_us - t->retention_s * 1000000 : 0;
    int64_t max_bytes = t->max_bytes, removed = 0;
    uint64_t asked = t->purge_asked;
    struct error err = {0};
    pthread_mutex_unlock(&t->mu);

    int rc = store_tracking_purge(t->st, before, max_bytes, &removed, &err);
    if (rc < 0)
        log_error("event=tracking_purge_failed path=%s reason=\"%s\"", t->path, err.msg);
    else if (removed > 0)
        log_info("event=tracking_purged messages=%lld", (long long)removed);

    pthread_mutex_lock(&t->mu);
    t->last_purge_ms = time_mono_ms();
    t->purge_rc = rc;
    t->purge_removed = removed;
    t->purge_err = err;
    t->purge_done = asked;
    pthread_cond_broadcast(&t->done);
}

/* wait_for_work - called with mu held: until a batch, a request, or the tick */
static void wait_for_work(struct tracking *t)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += TICK_MS * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (!t->stop && !t->flush_req && t->purge_asked == t->purge_done &&
           t->count < TRACKING_BATCH)
        if (pthread_cond_timedwait(&t->wake, &t->mu, &until) == ETIMEDOUT)
            break;
}

static bool purge_due(const struct tracking *t)
{
    if (t->purge_asked != t->purge_done)
        return true;
    return t->last_purge_ms == 0 ||
           time_mono_ms() - t->last_purge_ms >= (uint64_t)t->purge_interval_s * 1000;
}

/* give_up - at stop, when the store keeps failing: what is queued is lost */
static void give_up(struct tracking *t)
{
    log_error("event=tracking_events_lost events=%zu path=%s reason=\"the tracking database "
              "cannot be written\"", t->count, t->path);
    items_free(t->head);
    t->head = t->tail = NULL;
    t->count = 0;
}

static void *thread_main(void *arg)
{
    struct tracking *t = arg;
    int stop_tries = 0;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        wait_for_work(t);
        bool stopping = t->stop;
        t->flush_req = false;   /* what it asked for is queued by now */
        int rc = t->head != NULL ? write_all(t) : 0;
        pthread_cond_broadcast(&t->done);
        if (stopping) {
            if (t->head == NULL)
                break;
            if (rc < 0 && ++stop_tries >= STOP_TRIES) {
                give_up(t);
                break;
            }
            continue;
        }
        if (purge_due(t))
            purge(t);
    }
    /* a purge asked for while stopping is not run */
    if (t->purge_done != t->purge_asked) {
        t->purge_rc = -1;
        error_set(&t->purge_err, "tracking", "the tracking engine is stopping");
        t->purge_done = t->purge_asked;
    }
    pthread_cond_broadcast(&t->done);
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* --- public --- */

static void limits_set(struct tracking *t, int64_t retention_s, int64_t max_bytes)
{
    t->retention_s = retention_s;
    t->max_bytes = max_bytes;
}

struct tracking *tracking_start(const struct tracking_config *cfg, struct error *err)
{
    struct store_tracking *st = store_tracking_open(cfg->path, err);
    if (st == NULL)
        return NULL;
    struct tracking *t = xcalloc(1, sizeof *t);
    t->st = st;
    t->path = xstrdup(cfg->path);
    limits_set(t, cfg->retention_s, cfg->max_bytes);
    t->purge_interval_s = cfg->purge_interval_s > 0 ? cfg->purge_interval_s : 3600;
    pthread_mutex_init(&t->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->wake, &ca);
    pthread_cond_init(&t->done, &ca);
    pthread_condattr_destroy(&ca);
    int rc = pthread_create(&t->thread, NULL, thread_main, t);
    if (rc != 0) {
        error_set(err, "tracking", "cannot start the tracking thread: %s", strerror(rc));
        store_tracking_close(st);
        free(t->path);
        free(t);
        return NULL;
    }
    track_set_sink(sink, t);
    log_info("event=tracking_started path=%s retention=%lld max_size=%lld", t->path,
             (long long)cfg->retention_s, (long long)cfg->max_bytes);
    return t;
}

void tracking_set_limits(struct tracking *t, int64_t retention_s, int64_t max_bytes)
{
    pthread_mutex_lock(&t->mu);
    bool changed = t->retention_s != retention_s || t->max_bytes != max_bytes;
    limits_set(t, retention_s, max_bytes);
    pthread_mutex_unlock(&t->mu);
    if (changed)
        log_info("event=tracking_limits retention=%lld max_size=%lld", (long long)retention_s,
                 (long long)max_bytes);
}

void tracking_set_purge_interval(struct tracking *t, int64_t purge_interval_s)
{
    if (purge_interval_s <= 0)
        return;
    pthread_mutex_lock(&t->mu);
    bool changed = t->purge_interval_s != purge_interval_s;
    t->purge_interval_s = purge_interval_s;
    pthread_mutex_unlock(&t->mu);
    if (changed)
        log_info("event=tracking_limits purge_interval=%lld", (long long)purge_interval_s);
}

/* deadline - CLOCK_MONOTONIC now + ms */
static struct timespec deadline(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

int tracking_flush(struct tracking *t, int timeout_ms)
{
    struct timespec until = deadline(timeout_ms);
    int rc = 0;
    pthread_mutex_lock(&t->mu);
    uint64_t target = t->enqueued_seq;
    t->flush_req = true;
    pthread_cond_signal(&t->wake);
    while (t->written_seq < target) {
        if (pthread_cond_timedwait(&t->done, &t->mu, &until) == ETIMEDOUT) {
            rc = t->written_seq < target ? -1 : 0;
            break;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return rc;
}

int tracking_purge_now(struct tracking *t, int64_t *removed, struct error *err)
{
    pthread_mutex_lock(&t->mu);
    uint64_t gen = ++t->purge_asked;
    pthread_cond_signal(&t->wake);
    while (t->purge_done < gen)
        pthread_cond_wait(&t->done, &t->mu);
    int rc = t->purge_rc;
    *removed = t->purge_removed;
    *err = t->purge_err;
    pthread_mutex_unlock(&t->mu);
    return rc;
}

uint64_t tracking_dropped(const struct tracking *t)
{
    return atomic_load_explicit(&((struct tracking *)t)->dropped, memory_order_relaxed);
}

void tracking_stop(struct tracking *t)
{
    if (t == NULL)
        return;
    track_set_sink(NULL, NULL);
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thread, NULL);
    items_free(t->head);
    store_tracking_close(t->st);
    pthread_cond_destroy(&t->wake);
    pthread_cond_destroy(&t->done);
    pthread_mutex_destroy(&t->mu);
    log_info("event=tracking_stopped path=%s dropped=%llu", t->path,
             (unsigned long long)tracking_dropped(t));
    free(t->path);
    free(t);
}

const char *tracking_path(const struct tracking *t)
{
    return t->path;
}
