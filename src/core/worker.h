/*
 * worker.h - a small pool of threads for blocking work started from the
 * event loop (argon2id verification, HTTPS fetches, key operations): the
 * loop never blocks.  work(arg) runs on a pool thread; done(arg) runs later
 * on the loop that owns the pool, always exactly once per submitted job,
 * never inside worker_submit.
 *
 * A caller that may go away before done runs (an SMTP session whose client
 * hung up) keeps its job state in arg and marks it orphaned; done then only
 * frees it.  The pool does not cancel work.
 */
#ifndef MOAT_WORKER_H
#define MOAT_WORKER_H

#include "core.h"

struct event_base;
struct worker_pool;

/* worker_pool_create - threads >= 1; the completion fd is watched by base */
struct worker_pool *worker_pool_create(struct event_base *base, int threads, struct error *err);
/* worker_submit - queue work; thread-safe, but done always runs on base's loop */
void worker_submit(struct worker_pool *p, void (*work)(void *arg), void (*done)(void *arg), void *arg);
/* worker_pool_free - on the loop thread: finish queued and running work,
 * run every pending done callback, join the threads, free */
void worker_pool_free(struct worker_pool *p);

#endif
