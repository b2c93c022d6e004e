/*
 * test_tracking_engine.c - the tracking engine (src/track/tracking.c)
 * behind track_emit(): events from four threads at once all reach the
 * store after a flush; while the store cannot be written (another
 * connection holds its write lock) emitting never waits, the queue keeps
 * TRACKING_QUEUE_MAX events and drops and counts the rest, a flush times
 * out, and once the lock is gone every kept event is written; a purge on
 * demand applies the retention.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include "core/core.h"
#include "core/track.h"
#include "store/store_tracking.h"
#include "track/tracking.h"

#define THREADS 4
#define PER_THREAD 10000
#define DAY_S 86400

struct dir {
    char dir[64];
    char path[128];
};

static void dir_make(struct dir *d)
{
    str_copy(d->dir, sizeof d->dir, "/tmp/moat-test-tracking-XXXXXX");
    assert_non_null(mkdtemp(d->dir));
    xsnprintf(d->path, sizeof d->path, "%s/tracking.db", d->dir);
}

static void dir_remove(struct dir *d)
{
    char cmd[128];
    xsnprintf(cmd, sizeof cmd, "rm -rf %s", d->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", d->dir);
}

static struct tracking *start(struct dir *d, int64_t retention_s)
{
    struct tracking_config cfg = { .path = d->path, .retention_s = retention_s,
                                   .max_bytes = 1LL << 30, .purge_interval_s = 3600 };
    struct error err = {0};
    struct tracking *t = tracking_start(&cfg, &err);
    if (t == NULL)
        fail_msg("tracking_start: %s", err.msg);
    assert_string_equal(tracking_path(t), d->path);
    return t;
}

static void stats(const char *path, struct store_tracking_stats *s)
{
    struct error err = {0};
    struct store_tracking *st = store_tracking_open(path, &err);
    if (st == NULL)
        fail_msg("open: %s", err.msg);
    assert_int_equal(store_tracking_stats(st, s, &err), 0);
    store_tracking_close(st);
}

/* emitter - PER_THREAD transactions of its own session, one MAIL each */
static void *emitter(void *arg)
{
    int k = (int)(intptr_t)arg;
    char sender[64];
    for (int i = 0; i < PER_THREAD; i++) {
        struct track_event e = { .kind = TRACK_MAIL, .result = TRACK_ACCEPTED,
                                 .txn = (uint32_t)i + 1 };
        xsnprintf(e.session, sizeof e.session, "thread%d", k);
        xsnprintf(sender, sizeof sender, "t%d-%d@sender.example", k, i);
        e.sender = sender;   /* borrowed: the sink copies it before returning */
        e.client_ip = "127.0.0.1";
        track_emit(&e);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    struct dir d;
    dir_make(&d);
    struct tracking *t = start(&d, 30 * DAY_S);
    pthread_t th[THREADS];
    for (int k = 0; k < THREADS; k++)
        assert_int_equal(pthread_create(&th[k], NULL, emitter, (void *)(intptr_t)k), 0);
    for (int k = 0; k < THREADS; k++)
        pthread_join(th[k], NULL);
    assert_int_equal(tracking_flush(t, 60000), 0);
    struct store_tracking_stats s;
    stats(d.path, &s);
    assert_int_equal(s.messages, THREADS * PER_THREAD);
    assert_int_equal(s.events, THREADS * PER_THREAD);
    assert_int_equal(tracking_dropped(t), 0);

    /* the copies kept the strings: one message read back in full */
    struct error err = {0};
    struct store_tracking *st = store_tracking_open(d.path, &err);
    assert_non_null(st);
    struct store_tracking_query q = { .sender = "t3-9999@", .limit = 10 };
    struct store_tracking_msg *m;
    size_t n;
    int64_t next;
    assert_int_equal(store_tracking_search(st, &q, &m, &n, &next, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(m[0].session, "thread3");
    assert_int_equal(m[0].txn, 10000);
    assert_string_equal(m[0].client_ip, "127.0.0.1");
    store_tracking_msgs_free(m, n);
    store_tracking_close(st);

    tracking_stop(t);
    /* stopped: the sink is gone, an event now reaches nobody */
    struct track_event e = { .kind = TRACK_CONNECT, .session = "after" };
    track_emit(&e);
    stats(d.path, &s);
    assert_int_equal(s.messages, THREADS * PER_THREAD);
    dir_remove(&d);
}

static void test_overflow(void **state)
{
    (void)state;
    struct dir d;
    dir_make(&d);
    struct tracking *t = start(&d, 30 * DAY_S);

    /* another connection takes the write lock: every store write fails */
    sqlite3 *lock;
    assert_int_equal(sqlite3_open(d.path, &lock), SQLITE_OK);
    assert_int_equal(sqlite3_exec(lock, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);

    /* emitting returns at once all the same (this loop ends while the lock is held) */
    enum { EXTRA = 1000 };
    for (int i = 0; i < TRACKING_QUEUE_MAX + EXTRA; i++) {
        struct track_event e = { .kind = TRACK_CONNECT, .session = "flood", .client_ip = "::1" };
        track_emit(&e);
    }
    assert_int_equal(tracking_dropped(t), EXTRA);
    assert_int_equal(tracking_flush(t, 300), -1);

    assert_int_equal(sqlite3_exec(lock, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(lock);
    /* the kept events were retried and written */
    assert_int_equal(tracking_flush(t, 100000), 0);
    struct store_tracking_stats s;
    stats(d.path, &s);
    assert_int_equal(s.messages, 1);
    assert_int_equal(s.events, TRACKING_QUEUE_MAX);
    assert_int_equal(tracking_dropped(t), EXTRA);
    tracking_stop(t);
    dir_remove(&d);
}

static void test_purge_now(void **state)
{
    (void)state;
    struct dir d;
    dir_make(&d);
    struct tracking *t = start(&d, 30 * DAY_S);
    int64_t now_us = (int64_t)time_wall_ms() * 1000;
    for (int i = 0; i < 8; i++) {
        /* 5 transactions 10 days old, 3 of now */
        struct track_event e = { .kind = TRACK_CONNECT, .txn = 0,
                                 .ts_us = i < 5 ? now_us - 10LL * DAY_S * 1000000 : 0 };
        xsnprintf(e.session, sizeof e.session, "p%d", i);
        track_emit(&e);
    }
    assert_int_equal(tracking_flush(t, 10000), 0);
    int64_t removed = -1;
    struct error err = {0};
    assert_int_equal(tracking_purge_now(t, &removed, &err), 0);
    assert_int_equal(removed, 0);      /* 30 days kept */
    tracking_set_limits(t, 7 * DAY_S, 1LL << 30);
    assert_int_equal(tracking_purge_now(t, &removed, &err), 0);
    assert_int_equal(removed, 5);
    struct store_tracking_stats s;
    stats(d.path, &s);
    assert_int_equal(s.messages, 3);
    tracking_stop(t);
    dir_remove(&d);
}

int main(void)
{
    log_set_level(LOG_FATAL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_purge_now),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
