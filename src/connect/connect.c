/*
 * connect.c - the Connect engine: task states derived from the task table
 * (connect_tasks.c) and the recorded states (store: connect_tasks), checks
 * run on demand and on a timer, and the JSON the API serves.
 *
 * Entry points: connect_create / connect_start / connect_stop /
 * connect_free, connect_overview, connect_task_detail, connect_task_check,
 * connect_task_skip; the pure rules connect_derive, connect_apply_outcome
 * and connect_backoff_next (connect_priv.h) that the unit tests walk.
 *
 * A check.  prepare runs on the calling thread (an HTTP worker or the timer
 * thread) with that thread's store handle; run is started on the event loop
 * with event_base_once and answers through done() on the loop; the calling
 * thread waits for it on the job's condition variable, so the loop never
 * waits for anything.  Then the task's apply hook and the new state are
 * written on the calling thread.  One check of a task runs at a time (busy[]).
 * A FAIL or PENDING of a task that was done is confirmed by a second run a
 * few seconds later before the task moves to attention ("re-checked before
 * alerting").  A job the caller gave up on (moatd stopping, or the check
 * overran CONNECT_CHECK_MAX_S) is marked abandoned and freed by done() if
 * that ever comes.
 *
 * The timer thread has its own store handle.  Every CONNECT_TICK_S it runs
 * the checks that are due (next_check <= now: waiting tasks with backoff,
 * done tasks for re-verification, attention tasks until they recover), and
 * when the domains or the organisation changed (through the API, the CLI or
 * another process) it re-checks the tasks that read them, so Connect follows
 * the live configuration.
 *
 * Ownership: struct connect owns its copy of the config strings, the timer
 * thread and its store handle.  The objects in env (loop, resolver, TLS
 * context, spool) are moatd's.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <event2/event.h>
#include "connect_priv.h"

#define CONNECT_TICK_S 2            /* the timer's poll interval */
#define CONNECT_CHECK_MAX_S 600     /* a check that has not answered by then is "unknown" */
#define CONNECT_CONFIRM_MAX_S 5     /* delay before confirming a failing done task */
#define CONNECT_TIMER_WHO "timer"

struct connect {
    struct connect_config cfg;
    char *database;
    struct connect_schedule sched;
    pthread_mutex_t lock;           /* busy, stopping */
    pthread_cond_t cond;            /* busy[] released, stop requested */
    bool busy[CONNECT_MAX_TASKS];
    bool stopping;
    bool timer_running;
    pthread_t timer;
};

/* one check in flight: shared by the waiting thread and the loop */
struct check_job {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
    bool abandoned;                 /* the waiter left: done() frees the job */
    const char *id;                 /* the task's id, or what connect_run names (static) */
    void (*run)(const struct connect_env *env, json_t *input, connect_done_cb done, void *arg);
    struct connect_env env;
    json_t *input;                  /* referenced until the job is freed */
    struct connect_result result;
};

static const char *const state_names[] = {
    [CONNECT_LOCKED] = "locked", [CONNECT_TODO] = "todo", [CONNECT_IN_PROGRESS] = "in_progress",
    [CONNECT_WAITING] = "waiting", [CONNECT_DONE] = "done", [CONNECT_SKIPPED] = "skipped",
    [CONNECT_ATTENTION] = "attention",
};
static const char *const outcome_names[] = {
    [CONNECT_PASS] = "pass", [CONNECT_FAIL] = "fail", [CONNECT_PENDING] = "pending",
    [CONNECT_UNKNOWN] = "unknown", [CONNECT_UNAVAILABLE] = "unavailable",
};
#define N_STATES (sizeof state_names / sizeof state_names[0])
#define N_OUTCOMES (sizeof outcome_names / sizeof outcome_names[0])

const char *connect_state_name(enum connect_state s)
{
    return (size_t)s < N_STATES ? state_names[s] : "unknown";
}

const char *connect_outcome_name(enum connect_outcome o)
{
    return (size_t)o < N_OUTCOMES ? outcome_names[o] : "unknown";
}

int connect_state_parse(const char *s, enum connect_state *out)
{
    for (size_t i = 0; s != NULL && i < N_STATES; i++) {
        if (strcmp(s, state_names[i]) == 0) {
            *out = (enum connect_state)i;
            return 0;
        }
    }
    return -1;
}

int connect_outcome_parse(const char *s, enum connect_outcome *out)
{
    for (size_t i = 0; s != NULL && i < N_OUTCOMES; i++) {
        if (strcmp(s, outcome_names[i]) == 0) {
            *out = (enum connect_outcome)i;
            return 0;
        }
    }
    return -1;
}

static int64_t now_s(void)
{
    return (int64_t)(time_wall_ms() / 1000);
}

/* ------------------------------------------------------------------ */
/* the pure rules                                                       */
/* ------------------------------------------------------------------ */

bool connect_prereq_satisfied(enum connect_state s)
{
    return s == CONNECT_DONE || s == CONNECT_SKIPPED;
}

/* prereq_satisfied - "a" or "a|b" (either) against the recorded states */
static bool prereq_satisfied(const char *p, const enum connect_state *recorded)
{
    char alt[64];
    const char *s = p;
    while (*s != '\0') {
        size_t n = strcspn(s, "|");
        if (n < sizeof alt) {
            memcpy(alt, s, n);
            alt[n] = '\0';
            int i = connect_task_index(alt);
            if (i >= 0 && connect_prereq_satisfied(recorded[i]))
                return true;
        }
        s += n;
        if (*s == '|')
            s++;
    }
    return false;
}

static void add_blocker(struct connect_view *v, const char *id)
{
    for (size_t i = 0; i < v->n_blocked; i++)
        if (strcmp(v->blocked_by[i], id) == 0)
            return;
    if (v->n_blocked < CONNECT_MAX_BLOCKERS)
        v->blocked_by[v->n_blocked++] = id;
}

/* describe_blocker - one sentence about the first thing that blocks a task */
static void describe_blocker(struct connect_view *v, const struct connect_lockdown_facts *f)
{
    const char *b = v->blocked_by[0];
    if (strcmp(b, "mx_age") == 0) {
        int64_t need = f->mx_hours * 3600;
        if (f->mx_only_moat_since <= 0) {
            xsnprintf(v->blocked_message, sizeof v->blocked_message,
                      "Every domain's MX records must point only at Moat for %" PRId64
                      " hours first; they do not yet.", f->mx_hours);
        } else {
            char since[32];
            int64_t left = f->mx_only_moat_since + need - f->now;
            time_iso8601(since, sizeof since, (time_t)f->mx_only_moat_since);
            xsnprintf(v->blocked_message, sizeof v->blocked_message,
                      "MX records must point only at Moat for %" PRId64 " hours first: they "
                      "have since %s (%" PRId64 " h %" PRId64 " min to go).", f->mx_hours, since,
                      left / 3600, (left % 3600) / 60);
        }
        return;
    }
    const char *bar = strchr(b, '|');
    if (bar != NULL) {
        char first[64];
        size_t n = (size_t)(bar - b);
        if (n >= sizeof first)
            n = sizeof first - 1;
        memcpy(first, b, n);
        first[n] = '\0';
        const struct connect_task *t1 = connect_task_find(first);
        const struct connect_task *t2 = connect_task_find(bar + 1);
        xsnprintf(v->blocked_message, sizeof v->blocked_message,
                  "Blocked until \"%s\" (%s) or \"%s\" (%s) is done.",
                  t1 ? t1->title : first, first, t2 ? t2->title : bar + 1, bar + 1);
        return;
    }
    const struct connect_task *t = connect_task_find(b);
    xsnprintf(v->blocked_message, sizeof v->blocked_message,
              "Blocked until \"%s\" (%s) is done.", t ? t->title : b, b);
}

void connect_derive(const enum connect_state *recorded, const struct connect_lockdown_facts *f,
                    struct connect_view *views)
{
    for (size_t i = 0; i < connect_tasks_count; i++) {
        const struct connect_task *t = &connect_tasks[i];
        struct connect_view *v = &views[i];
        memset(v, 0, sizeof *v);
        for (const char *const *p = t->prereqs; *p != NULL; p++)
            if (!prereq_satisfied(*p, recorded))
                add_blocker(v, *p);
        if (strcmp(t->id, "lockdown") == 0) {
            /* DESIGN.md 1: mx, every mandatory task done, MX only at Moat for 72 h */
            for (size_t j = 0; j < connect_tasks_count; j++)
                if (j != i && !connect_tasks[j].optional &&
                    !connect_prereq_satisfied(recorded[j]))
                    add_blocker(v, connect_tasks[j].id);
            if (f != NULL && (f->mx_only_moat_since <= 0 ||
                              f->now - f->mx_only_moat_since < f->mx_hours * 3600))
                add_blocker(v, "mx_age");
        }
        v->state = recorded[i];
        if (v->n_blocked > 0) {
            /* never worked on: locked; worked on early (a check ran): what it
             * recorded, still listing what blocks it */
            if (recorded[i] == CONNECT_TODO || recorded[i] == CONNECT_LOCKED)
                v->state = CONNECT_LOCKED;
            struct connect_lockdown_facts none = { 0 };
            describe_blocker(v, f ? f : &none);
        } else if (v->state == CONNECT_LOCKED) {
            v->state = CONNECT_TODO;
        }
    }
}

int64_t connect_backoff_next(const struct connect_schedule *p, int64_t backoff)
{
    if (backoff <= 0)
        return p->recheck_min;
    if (backoff >= p->recheck_max / 2)
        return p->recheck_max;
    return backoff * 2 < p->recheck_max ? backoff * 2 : p->recheck_max;
}

void connect_apply_outcome(const struct connect_schedule *p, enum connect_state cur,
                           int64_t backoff, enum connect_outcome o, int64_t now,
                           struct connect_step *out)
{
    memset(out, 0, sizeof *out);
    if (cur == CONNECT_LOCKED)
        cur = CONNECT_TODO;
    out->state = cur;
    switch (o) {
    case CONNECT_PASS:
        out->state = CONNECT_DONE;
        out->next_check = now + p->reverify_interval;
        return;
    case CONNECT_PENDING:
    case CONNECT_FAIL:
        if (cur == CONNECT_SKIPPED) {
            /* the administrator chose to skip it: only a pass changes that */
            return;
        }
        if (cur == CONNECT_DONE || cur == CONNECT_ATTENTION) {
            /* was done; its check now fails (the caller confirmed it): keep
             * checking until it recovers */
            out->state = CONNECT_ATTENTION;
            out->backoff = cur == CONNECT_DONE ? p->recheck_min : connect_backoff_next(p, backoff);
            out->next_check = now + out->backoff;
            return;
        }
        if (o == CONNECT_PENDING) {
            /* an external change was asked for and is not visible yet */
            out->backoff = cur == CONNECT_WAITING ? connect_backoff_next(p, backoff)
                                                  : p->recheck_min;
            out->state = CONNECT_WAITING;
            out->next_check = now + out->backoff;
        } else {
            /* verified wrong: the administrator must change something */
            out->state = CONNECT_IN_PROGRESS;
        }
        return;
    case CONNECT_UNKNOWN:
        /* could not tell: never a step back; try again later where the timer
         * is watching the task anyway */
        if (cur == CONNECT_WAITING || cur == CONNECT_ATTENTION || cur == CONNECT_DONE) {
            out->backoff = connect_backoff_next(p, backoff);
            out->next_check = now + out->backoff;
        }
        return;
    case CONNECT_UNAVAILABLE:
    default:
        out->keep_schedule = true;
        return;
    }
}

/* ------------------------------------------------------------------ */
/* create, start, stop                                                  */
/* ------------------------------------------------------------------ */

static void *timer_main(void *arg);

struct connect *connect_create(const struct connect_config *cfg, struct error *err)
{
    if (cfg == NULL || cfg->database == NULL || cfg->database[0] == '\0') {
        error_set(err, "database", "connect: no database path");
        return NULL;
    }
    if (connect_tasks_count > CONNECT_MAX_TASKS) {
        error_set(err, "", "connect: %zu tasks, at most %d", connect_tasks_count,
                  CONNECT_MAX_TASKS);
        return NULL;
    }
    struct connect *c = xcalloc(1, sizeof *c);
    c->cfg = *cfg;
    c->database = xstrdup(cfg->database);
    c->cfg.database = c->database;
    c->sched.recheck_min = cfg->recheck_min > 0 ? cfg->recheck_min : 60;
    c->sched.recheck_max = cfg->recheck_max > 0 ? cfg->recheck_max : 30 * 60;
    if (c->sched.recheck_max < c->sched.recheck_min)
        c->sched.recheck_max = c->sched.recheck_min;
    c->sched.reverify_interval = cfg->reverify_interval > 0 ? cfg->reverify_interval : 6 * 3600;
    if (c->cfg.lockdown_mx_hours < 0)
        c->cfg.lockdown_mx_hours = 72;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    return c;
}

int connect_start(struct connect *c, struct error *err)
{
    if (c->timer_running)
        return 0;
    int rc = pthread_create(&c->timer, NULL, timer_main, c);
    if (rc != 0) {
        error_set(err, "", "connect: cannot start the timer thread: %s", strerror(rc));
        return -1;
    }
    c->timer_running = true;
    return 0;
}

void connect_stop(struct connect *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->lock);
    c->stopping = true;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
    if (c->timer_running) {
        pthread_join(c->timer, NULL);
        c->timer_running = false;
    }
}

void connect_free(struct connect *c)
{
    if (c == NULL)
        return;
    connect_stop(c);
    /* callers still inside a check leave within a second of stopping */
    pthread_mutex_lock(&c->lock);
    for (;;) {
        bool any = false;
        for (size_t i = 0; i < CONNECT_MAX_TASKS; i++)
            any = any || c->busy[i];
        if (!any)
            break;
        pthread_cond_wait(&c->cond, &c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->cond);
    free(c->database);
    free(c);
}

static bool is_stopping(struct connect *c)
{
    pthread_mutex_lock(&c->lock);
    bool s = c->stopping;
    pthread_mutex_unlock(&c->lock);
    return s;
}

/* ------------------------------------------------------------------ */
/* running one check                                                    */
/* ------------------------------------------------------------------ */

static void job_free(struct check_job *j)
{
    json_decref(j->input);
    json_decref(j->result.details);
    pthread_mutex_destroy(&j->lock);
    pthread_cond_destroy(&j->cond);
    free(j);
}

/* job_done - the check's answer, on the loop (or inline without a loop) */
static void job_done(void *arg, struct connect_result *r)
{
    struct check_job *j = arg;
    pthread_mutex_lock(&j->lock);
    if (j->done) {
        pthread_mutex_unlock(&j->lock);
        log_error("event=connect_bug task=%s reason=\"done called twice\"", j->id);
        return;
    }
    j->result.outcome = r->outcome;
    if (str_copy(j->result.message, sizeof j->result.message, r->message) < 0)
        snprintf(j->result.message, sizeof j->result.message, "%s", r->message);
    j->result.details = r->details;
    r->details = NULL;
    j->done = true;
    bool abandoned = j->abandoned;
    pthread_cond_signal(&j->cond);
    pthread_mutex_unlock(&j->lock);
    if (abandoned)
        job_free(j);
}

static void job_start_on_loop(evutil_socket_t fd, short what, void *arg)
{
    struct check_job *j = arg;
    j->run(&j->env, j->input, job_done, j);
}

static void result_set(struct connect_result *r, enum connect_outcome o, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void result_set(struct connect_result *r, enum connect_outcome o, const char *fmt, ...)
{
    va_list ap;
    r->outcome = o;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof r->message, fmt, ap);
    va_end(ap);
}

/* run_on_loop - start t->run on the loop and wait for its answer in *out */
static void run_on_loop(struct connect *c, const struct connect_task *t, json_t *input,
                        struct connect_result *out)
{
    connect_run(c, t->id, t->run, input, out);
}

void connect_run(struct connect *c, const char *id,
                 void (*run)(const struct connect_env *env, json_t *input, connect_done_cb done,
                             void *arg),
                 json_t *input, struct connect_result *out)
{
    if (is_stopping(c)) {
        memset(out, 0, sizeof *out);
        result_set(out, CONNECT_UNKNOWN, "moatd is shutting down; the check did not run.");
        return;
    }
    struct check_job *j = xcalloc(1, sizeof *j);
    pthread_mutex_init(&j->lock, NULL);
    pthread_cond_init(&j->cond, NULL);
    j->id = id;
    j->run = run;
    j->env = c->cfg.env;
    j->input = json_incref(input);
    memset(out, 0, sizeof *out);

    if (c->cfg.env.base == NULL) {
        /* no loop (unit tests): the check answers inline or not at all */
        run(&j->env, j->input, job_done, j);
    } else {
        static const struct timeval now = { 0, 0 };
        if (event_base_once(c->cfg.env.base, -1, EV_TIMEOUT, job_start_on_loop, j, &now) < 0) {
            job_free(j);
            result_set(out, CONNECT_UNKNOWN, "The check could not be started: the event loop "
                       "did not accept it.");
            return;
        }
    }
    uint64_t deadline = time_mono_ms() + (uint64_t)CONNECT_CHECK_MAX_S * 1000;
    pthread_mutex_lock(&j->lock);
    while (!j->done) {
        if (is_stopping(c) || time_mono_ms() >= deadline || c->cfg.env.base == NULL) {
            bool stopping = is_stopping(c);
            j->abandoned = true;
            pthread_mutex_unlock(&j->lock);
            result_set(out, CONNECT_UNKNOWN, "%s", stopping ? "moatd is shutting down; the "
                       "check did not finish." : "The check did not finish in time.");
            return;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&j->cond, &j->lock, &ts);
    }
    pthread_mutex_unlock(&j->lock);
    *out = j->result;
    j->result.details = NULL;
    job_free(j);
}

/* check_once - prepare on this thread, run on the loop; -1 when prepare failed */
static int check_once(struct connect *c, struct store *st, const struct connect_task *t,
                      struct connect_result *r, struct error *err)
{
    json_t *input = t->prepare(st, err);
    if (input == NULL)
        return -1;
    run_on_loop(c, t, input, r);
    json_decref(input);
    return 0;
}

/* pause_interruptible - sleep up to seconds, or until the engine stops */
static void pause_interruptible(struct connect *c, int64_t seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += seconds;
    pthread_mutex_lock(&c->lock);
    while (!c->stopping) {
        if (pthread_cond_timedwait(&c->cond, &c->lock, &ts) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&c->lock);
}

static enum connect_state recorded_state(const struct store_connect_task *rec)
{
    enum connect_state s = CONNECT_TODO;
    if (rec->state == NULL || connect_state_parse(rec->state, &s) < 0 || s == CONNECT_LOCKED)
        return CONNECT_TODO;
    return s;
}

/* load_record - the task's recorded row; a never-touched task reads as todo */
static int load_record(struct store *st, const char *id, struct store_connect_task *rec,
                       struct error *err)
{
    int rc = store_connect_task_get(st, id, rec, err);
    if (rc == STORE_NOT_FOUND) {
        memset(rec, 0, sizeof *rec);
        rec->id = xstrdup(id);
        rec->state = xstrdup("todo");
        rec->changed_by = xstrdup("");
        rec->data = xstrdup("{}");
        return 0;
    }
    return rc < 0 ? -1 : 0;
}

/* persist - the outcome r of a check of t into the store, by who */
static int persist(struct connect *c, struct store *st, const struct connect_task *t,
                   const char *who, const struct connect_result *r, struct error *err)
{
    struct store_connect_task rec;
    if (load_record(st, t->id, &rec, err) < 0)
        return -1;
    int64_t now = now_s();
    enum connect_state cur = recorded_state(&rec);
    struct connect_step step;
    connect_apply_outcome(&c->sched, cur, rec.backoff, r->outcome, now, &step);
    if (step.state != cur) {
        free(rec.state);
        rec.state = xstrdup(connect_state_name(step.state));
        rec.changed = now;
        free(rec.changed_by);
        rec.changed_by = xstrdup(who);
    } else if (rec.changed == 0) {
        rec.changed = now;
    }
    rec.last_check = now;
    free(rec.last_outcome);
    rec.last_outcome = xstrdup(connect_outcome_name(r->outcome));
    free(rec.last_message);
    rec.last_message = xstrdup(r->message);
    free(rec.last_details);
    rec.last_details = r->details ? json_dumps(r->details, JSON_COMPACT) : NULL;
    if (!step.keep_schedule) {
        rec.next_check = step.next_check;
        rec.backoff = step.backoff;
    }
    int rc = store_connect_task_put(st, &rec, err);
    char msg[600];
    log_info("event=connect_check task=%s outcome=%s state=%s->%s by=%s message=%s", t->id,
             connect_outcome_name(r->outcome), connect_state_name(cur),
             connect_state_name(step.state), who, log_quote(msg, sizeof msg, r->message));
    store_connect_task_clear(&rec);
    return rc < 0 ? -1 : 0;
}

static void busy_acquire(struct connect *c, int idx)
{
    pthread_mutex_lock(&c->lock);
    while (c->busy[idx])
        pthread_cond_wait(&c->cond, &c->lock);
    c->busy[idx] = true;
    pthread_mutex_unlock(&c->lock);
}

static bool busy_try(struct connect *c, int idx)
{
    pthread_mutex_lock(&c->lock);
    bool ok = !c->busy[idx] && !c->stopping;
    if (ok)
        c->busy[idx] = true;
    pthread_mutex_unlock(&c->lock);
    return ok;
}

static void busy_release(struct connect *c, int idx)
{
    pthread_mutex_lock(&c->lock);
    c->busy[idx] = false;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

/* do_check - one check of t, confirmed, applied and persisted; *out (may be
 * NULL) gets the result.  The caller holds busy for t. */
static int do_check(struct connect *c, struct store *st, const struct connect_task *t,
                    const char *who, struct connect_result *out, struct error *err)
{
    struct connect_result r = { .outcome = CONNECT_UNKNOWN };
    if (t->prepare == NULL || t->run == NULL) {
        result_set(&r, CONNECT_UNAVAILABLE, "\"%s\" cannot be checked yet: its check arrives "
                   "with %s.", t->title, t->later_issue ? t->later_issue : "a later issue");
    } else {
        struct store_connect_task rec;
        if (load_record(st, t->id, &rec, err) < 0)
            return -1;
        enum connect_state before = recorded_state(&rec);
        store_connect_task_clear(&rec);
        if (check_once(c, st, t, &r, err) < 0)
            return -1;
        if (before == CONNECT_DONE && (r.outcome == CONNECT_FAIL || r.outcome == CONNECT_PENDING)
            && !is_stopping(c)) {
            /* re-checked before alerting: one glitch does not move a done task */
            int64_t d = c->sched.recheck_min < CONNECT_CONFIRM_MAX_S ? c->sched.recheck_min
                                                                    : CONNECT_CONFIRM_MAX_S;
            log_info("event=connect_confirm task=%s outcome=%s delay=%" PRId64, t->id,
                     connect_outcome_name(r.outcome), d);
            pause_interruptible(c, d);
            struct connect_result r2 = { .outcome = CONNECT_UNKNOWN };
            if (check_once(c, st, t, &r2, err) < 0) {
                json_decref(r.details);
                return -1;
            }
            json_decref(r.details);
            r = r2;
        }
        if (t->apply != NULL && t->apply(st, &r, err) < 0) {
            json_decref(r.details);
            return -1;
        }
    }
    if (r.outcome == CONNECT_UNKNOWN && is_stopping(c)) {
        /* nothing was learnt; record nothing */
        json_decref(r.details);
        error_set(err, "shutdown", "moatd is shutting down");
        return -1;
    }
    int rc = persist(c, st, t, who, &r, err);
    if (out != NULL) {
        *out = r;
    } else {
        json_decref(r.details);
    }
    return rc;
}

/* ------------------------------------------------------------------ */
/* the views: overview and detail                                       */
/* ------------------------------------------------------------------ */

struct snapshot {
    struct store_connect_task recs[CONNECT_MAX_TASKS];   /* by table index; id NULL = none */
    enum connect_state recorded[CONNECT_MAX_TASKS];
    struct connect_view views[CONNECT_MAX_TASKS];
    struct connect_lockdown_facts facts;
    json_t *warnings;
    char environment[32];
};

static void snapshot_clear(struct snapshot *s)
{
    for (size_t i = 0; i < CONNECT_MAX_TASKS; i++)
        store_connect_task_clear(&s->recs[i]);
    json_decref(s->warnings);
}

/* snapshot_load - every recorded state, the facts of the lockdown rule, the
 * lab-override warnings, derived views */
static int snapshot_load(struct connect *c, struct store *st, struct snapshot *s,
                         struct error *err)
{
    struct store_connect_task *list = NULL;
    size_t n = 0;
    memset(s, 0, sizeof *s);
    s->warnings = json_array();
    for (size_t i = 0; i < connect_tasks_count; i++)
        s->recorded[i] = CONNECT_TODO;
    if (store_connect_task_list(st, &list, &n, err) < 0)
        return -1;
    for (size_t k = 0; k < n; k++) {
        int i = connect_task_index(list[k].id);
        if (i < 0)
            continue;
        s->recs[i] = list[k];
        memset(&list[k], 0, sizeof list[k]);
        s->recorded[i] = recorded_state(&s->recs[i]);
    }
    store_connect_tasks_free(list, n);

    struct store_domain *d = NULL;
    size_t nd = 0;
    if (store_domain_list(st, &d, &nd, err) < 0)
        return -1;
    int64_t since = nd > 0 ? 1 : 0;
    for (size_t i = 0; i < nd; i++) {
        if (d[i].mx_only_moat_since <= 0)
            since = 0;
        else if (since > 0 && d[i].mx_only_moat_since > since)
            since = d[i].mx_only_moat_since;
        if (d[i].trust_unverified && !d[i].verified)
            json_array_append_new(s->warnings, json_pack(
                "{s:s, s:s, s:s++}", "kind", "trust_unverified", "domain", d[i].name,
                "message", "Lab override: ", d[i].name, " is treated as internal without proof "
                "of ownership (added with --trust-unverified). Publish its TXT record and "
                "verify it before production."));
    }
    store_domains_free(d, nd);
    s->facts.now = now_s();
    s->facts.mx_only_moat_since = since;
    s->facts.mx_hours = c->cfg.lockdown_mx_hours;

    struct store_organisation org;
    if (store_organisation_get(st, &org, err) < 0)
        return -1;
    str_copy(s->environment, sizeof s->environment, org.environment);
    store_organisation_clear(&org);

    connect_derive(s->recorded, &s->facts, s->views);
    return 0;
}

/* skippable - optional tasks; lockdown also for a hybrid environment
 * (DESIGN.md 1: "required on-premises, optional for hybrid") */
static bool skippable(const struct connect_task *t, const char *environment)
{
    return t->optional || (strcmp(t->id, "lockdown") == 0 && strcmp(environment, "hybrid") == 0);
}

static json_t *last_check_json(const struct store_connect_task *rec, bool with_details)
{
    if (rec->id == NULL || rec->last_check == 0)
        return json_null();
    json_t *j = json_pack("{s:I, s:s, s:s}", "at", (json_int_t)rec->last_check,
                          "outcome", rec->last_outcome ? rec->last_outcome : "unknown",
                          "message", rec->last_message ? rec->last_message : "");
    if (with_details) {
        json_t *d = rec->last_details ? json_loads(rec->last_details, 0, NULL) : NULL;
        json_object_set_new(j, "details", d ? d : json_null());
    }
    return j;
}

/* next_step - one sentence: what the administrator does next */
static void next_step(const struct connect_task *t, const struct connect_view *v,
                      const struct store_connect_task *rec, char *dst, size_t size)
{
    const char *msg = rec->id && rec->last_message && rec->last_message[0] ? rec->last_message
                                                                           : NULL;
    char when[32] = "";
    if (rec->id && rec->next_check > 0)
        time_iso8601(when, sizeof when, (time_t)rec->next_check);
    switch (v->state) {
    case CONNECT_LOCKED:
        snprintf(dst, size, "%s", v->blocked_message);
        return;
    case CONNECT_TODO:
        if (t->prepare == NULL)
            snprintf(dst, size, "%s (Connect checks it once %s arrives.)", connect_task_hint(t->id),
                     t->later_issue ? t->later_issue : "a later issue");
        else if (msg != NULL)
            snprintf(dst, size, "%s Last check: %s", connect_task_hint(t->id), msg);
        else
            snprintf(dst, size, "%s", connect_task_hint(t->id));
        return;
    case CONNECT_IN_PROGRESS:
        snprintf(dst, size, "%s Then run the check again.", msg ? msg : connect_task_hint(t->id));
        return;
    case CONNECT_WAITING:
        snprintf(dst, size, "%s Moat re-checks it automatically%s%s.", msg ? msg : "Waiting.",
                 when[0] ? " (next at " : "", when[0] ? when : "");
        if (when[0] && strlen(dst) + 2 < size) {
            /* close the parenthesis before the final full stop */
            size_t l = strlen(dst);
            dst[l - 1] = ')';
            dst[l] = '.';
            dst[l + 1] = '\0';
        }
        return;
    case CONNECT_DONE:
        snprintf(dst, size, "Nothing to do; Moat re-verifies it periodically.");
        return;
    case CONNECT_SKIPPED:
        snprintf(dst, size, "Skipped; you can still complete it and run its check.");
        return;
    case CONNECT_ATTENTION:
        snprintf(dst, size, "%s It was done before: fix it; Moat re-checks it automatically.",
                 msg ? msg : "Its check fails now.");
        return;
    }
    dst[0] = '\0';
}

static json_t *strings_array(const char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

/* task_json - the overview entry of task i */
static json_t *task_json(const struct snapshot *s, size_t i, bool with_details)
{
    const struct connect_task *t = &connect_tasks[i];
    const struct connect_view *v = &s->views[i];
    const struct store_connect_task *rec = &s->recs[i];
    char step[1024];
    next_step(t, v, rec, step, sizeof step);
    json_t *j = json_pack("{s:s, s:s, s:b, s:b, s:s, s:s, s:o, s:s, s:o, s:b}",
                          "id", t->id, "title", t->title, "optional", t->optional,
                          "skippable", skippable(t, s->environment),
                          "state", connect_state_name(v->state),
                          "recorded_state", connect_state_name(s->recorded[i]),
                          "blocked_by", strings_array(v->blocked_by, v->n_blocked),
                          "next_step", step,
                          "last_check", last_check_json(rec, with_details),
                          "checkable", t->prepare != NULL && t->run != NULL);
    if (v->n_blocked > 0)
        json_object_set_new(j, "blocked_message", json_string(v->blocked_message));
    if (with_details) {
        json_t *in = rec->id && rec->data ? json_loads(rec->data, 0, NULL) : NULL;
        json_object_set_new(j, "input", json_is_object(in) ? in : json_object());
        if (in != NULL && !json_is_object(in))
            json_decref(in);
    }
    if (t->later_issue != NULL)
        json_object_set_new(j, "later_issue", json_string(t->later_issue));
    if (rec->id != NULL) {
        json_object_set_new(j, "changed", json_integer(rec->changed));
        json_object_set_new(j, "changed_by", json_string(rec->changed_by ? rec->changed_by : ""));
        json_object_set_new(j, "next_check", rec->next_check > 0 ? json_integer(rec->next_check)
                                                                 : json_null());
    } else {
        json_object_set_new(j, "changed", json_null());
        json_object_set_new(j, "changed_by", json_null());
        json_object_set_new(j, "next_check", json_null());
    }
    return j;
}

json_t *connect_overview(struct connect *c, struct store *st, struct error *err)
{
    struct snapshot s;
    if (snapshot_load(c, st, &s, err) < 0) {
        snapshot_clear(&s);
        return NULL;
    }
    json_t *tasks = json_array();
    size_t done = 0, mandatory = 0, mandatory_done = 0;
    for (size_t i = 0; i < connect_tasks_count; i++) {
        json_array_append_new(tasks, task_json(&s, i, false));
        if (connect_prereq_satisfied(s.views[i].state))
            done++;
        if (!connect_tasks[i].optional) {
            mandatory++;
            mandatory_done += s.views[i].state == CONNECT_DONE;
        }
    }
    json_t *j = json_pack("{s:o, s:O, s:{s:I, s:I, s:I, s:I}}", "tasks", tasks,
                          "warnings", s.warnings,
                          "summary", "total", (json_int_t)connect_tasks_count,
                          "done_or_skipped", (json_int_t)done,
                          "mandatory", (json_int_t)mandatory,
                          "mandatory_done", (json_int_t)mandatory_done);
    snapshot_clear(&s);
    return j;
}

static json_t *detail_of(struct connect *c, struct store *st, const struct connect_task *t,
                         struct error *err)
{
    struct snapshot s;
    int i = connect_task_index(t->id);
    if (snapshot_load(c, st, &s, err) < 0) {
        snapshot_clear(&s);
        return NULL;
    }
    json_t *j = task_json(&s, (size_t)i, true);
    json_t *pre = json_array();
    for (const char *const *p = t->prereqs; *p != NULL; p++) {
        char alt[64];
        const char *q = *p;
        json_t *alts = json_array();
        while (*q != '\0') {
            size_t n = strcspn(q, "|");
            if (n < sizeof alt) {
                memcpy(alt, q, n);
                alt[n] = '\0';
                int k = connect_task_index(alt);
                if (k >= 0)
                    json_array_append_new(alts, json_pack(
                        "{s:s, s:s, s:s}", "id", connect_tasks[k].id, "title",
                        connect_tasks[k].title, "state", connect_state_name(s.views[k].state)));
            }
            q += n;
            if (*q == '|')
                q++;
        }
        json_array_append_new(pre, json_pack("{s:s, s:b, s:o}", "requires", *p,
                                             "satisfied", prereq_satisfied(*p, s.recorded),
                                             "any_of", alts));
    }
    json_object_set_new(j, "prerequisites", pre);
    if (strcmp(t->id, "lockdown") == 0)
        json_object_set_new(j, "rule", json_pack(
            "{s:s, s:I, s:o}", "text", "Unlocked when MX is done, every mandatory task is "
            "done, and every domain's MX has pointed only at Moat for the required hours.",
            "mx_hours", (json_int_t)s.facts.mx_hours, "mx_only_moat_since",
            s.facts.mx_only_moat_since > 0 ? json_integer(s.facts.mx_only_moat_since)
                                           : json_null()));
    json_t *steps = json_array(), *arts = json_array();
    if (t->instructions != NULL) {
        struct error ierr = {0};
        json_t *ins = t->instructions(st, &ierr);
        if (ins == NULL) {
            json_array_append_new(steps, json_pack("s+", "The instructions could not be "
                                                   "generated: ", ierr.msg));
        } else {
            json_t *v;
            if (json_is_array(v = json_object_get(ins, "steps")))
                json_array_extend(steps, v);
            if (json_is_array(v = json_object_get(ins, "artefacts")))
                json_array_extend(arts, v);
            json_object_del(ins, "steps");
            json_object_del(ins, "artefacts");
            if (json_object_size(ins) > 0)
                json_object_set(j, "context", ins);
            json_decref(ins);
        }
    } else if (t->later_issue != NULL) {
        json_array_append_new(steps, json_pack("s+", connect_task_hint(t->id), " Connect "
                                               "guides and checks this task once it arrives with ",
                                               t->later_issue, "."));
    }
    json_object_set_new(j, "instructions", steps);
    json_object_set_new(j, "artefacts", arts);
    json_object_set_new(j, "warnings", json_incref(s.warnings));
    snapshot_clear(&s);
    return j;
}

json_t *connect_task_detail(struct connect *c, struct store *st, const char *id,
                            struct error *err)
{
    const struct connect_task *t = connect_task_find(id);
    if (t == NULL) {
        error_set(err, "task", "no such task %s", id ? id : "");
        return NULL;
    }
    return detail_of(c, st, t, err);
}

static const char *who_name(const struct auth_principal *who)
{
    return who != NULL && who->name[0] != '\0' ? who->name : CONNECT_TIMER_WHO;
}

json_t *connect_task_check(struct connect *c, struct store *st, const char *id,
                           const struct auth_principal *who, struct error *err)
{
    const struct connect_task *t = connect_task_find(id);
    if (t == NULL) {
        error_set(err, "task", "no such task %s", id ? id : "");
        return NULL;
    }
    if (is_stopping(c)) {
        error_set(err, "shutdown", "moatd is shutting down");
        return NULL;
    }
    int idx = connect_task_index(id);
    busy_acquire(c, idx);
    if (is_stopping(c)) {
        busy_release(c, idx);
        error_set(err, "shutdown", "moatd is shutting down");
        return NULL;
    }
    struct connect_result r = { .outcome = CONNECT_UNKNOWN };
    int rc = do_check(c, st, t, who_name(who), &r, err);
    busy_release(c, idx);
    if (rc < 0)
        return NULL;
    json_t *j = detail_of(c, st, t, err);
    if (j != NULL)
        json_object_set_new(j, "result", json_pack("{s:s, s:s, s:o}", "outcome",
                                                   connect_outcome_name(r.outcome), "message",
                                                   r.message, "details",
                                                   r.details ? r.details : json_null()));
    else
        json_decref(r.details);
    return j;
}

int connect_task_skip(struct connect *c, struct store *st, const char *id,
                      const struct auth_principal *who, struct error *err)
{
    const struct connect_task *t = connect_task_find(id);
    if (t == NULL) {
        error_set(err, "task", "no such task %s", id ? id : "");
        return -1;
    }
    struct store_organisation org;
    if (store_organisation_get(st, &org, err) < 0)
        return -1;
    bool ok = skippable(t, org.environment);
    store_organisation_clear(&org);
    if (!ok) {
        error_set(err, "task", "\"%s\" is mandatory and cannot be skipped", t->title);
        return -1;
    }
    int idx = connect_task_index(id);
    busy_acquire(c, idx);
    struct store_connect_task rec;
    int rc = -1;
    if (load_record(st, t->id, &rec, err) < 0)
        goto out;
    enum connect_state cur = recorded_state(&rec);
    if (cur == CONNECT_DONE) {
        error_set(err, "task", "\"%s\" is done; there is nothing to skip", t->title);
    } else {
        if (cur != CONNECT_SKIPPED) {
            free(rec.state);
            rec.state = xstrdup("skipped");
            rec.changed = now_s();
            free(rec.changed_by);
            rec.changed_by = xstrdup(who_name(who));
            rec.next_check = 0;
            rec.backoff = 0;
            log_info("event=connect_skip task=%s state=%s->skipped by=%s", t->id,
                     connect_state_name(cur), who_name(who));
        }
        rc = store_connect_task_put(st, &rec, err) < 0 ? -1 : 0;
    }
    store_connect_task_clear(&rec);
out:
    busy_release(c, idx);
    return rc;
}

/* ------------------------------------------------------------------ */
/* the timer thread                                                     */
/* ------------------------------------------------------------------ */

/* fingerprints of what the checks read: when they move, re-check at once */
struct watch {
    uint64_t domains;
    int64_t org_updated;
    bool primed;
};

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= UINT64_C(1099511628211);
    }
    return h;
}

static int domains_fingerprint(struct store *st, uint64_t *out, struct error *err)
{
    struct store_domain *d = NULL;
    size_t n = 0;
    if (store_domain_list(st, &d, &n, err) < 0)
        return -1;
    uint64_t h = UINT64_C(14695981039346656037);
    for (size_t i = 0; i < n; i++) {
        char line[600];
        snprintf(line, sizeof line, "%s|%d|%d|%s|%d|%d;", d[i].name, d[i].verified,
                 d[i].trust_unverified, d[i].route.host ? d[i].route.host : "",
                 d[i].route.port, (int)d[i].route.tls);
        h = fnv(h, line, strlen(line));
    }
    store_domains_free(d, n);
    *out = h;
    return 0;
}

/* timer_check - one check from the timer; a task being checked by someone else is left */
static void timer_check(struct connect *c, struct store *st, const char *id)
{
    const struct connect_task *t = connect_task_find(id);
    if (t == NULL || t->prepare == NULL || t->run == NULL)
        return;
    int idx = connect_task_index(id);
    if (!busy_try(c, idx))
        return;
    struct error err = {0};
    if (do_check(c, st, t, CONNECT_TIMER_WHO, NULL, &err) < 0 && strcmp(err.field, "shutdown") != 0)
        log_warn("event=connect_timer_check_failed task=%s reason=\"%s\"", id, err.msg);
    busy_release(c, idx);
}

static void timer_tick(struct connect *c, struct store *st, struct watch *w)
{
    struct error err = {0};
    struct store_connect_task *list = NULL;
    size_t n = 0;

    /* live configuration first: a domain added with the CLI shows in Connect */
    uint64_t fp = 0;
    struct store_organisation org;
    bool have_fp = domains_fingerprint(st, &fp, &err) == 0;
    bool have_org = store_organisation_get(st, &org, &err) == 0;
    if (have_fp && have_org) {
        bool dom_changed = w->primed && fp != w->domains;
        bool org_changed = w->primed && org.updated != w->org_updated;
        w->domains = fp;
        w->org_updated = org.updated;
        w->primed = true;
        if (org_changed)
            timer_check(c, st, "organisation");
        if (dom_changed) {
            timer_check(c, st, "domains");
            /* mx is a DNS look-up per domain: cheap enough to follow changes
             * once it has been worked on; inbound sends a test message, so it
             * waits for its schedule or the administrator */
            struct store_connect_task rec;
            if (store_connect_task_get(st, "mx", &rec, &err) == STORE_OK) {
                if (recorded_state(&rec) != CONNECT_TODO)
                    timer_check(c, st, "mx");
                store_connect_task_clear(&rec);
            }
        }
    } else {
        log_warn("event=connect_timer_read_failed reason=\"%s\"", err.msg);
    }
    if (have_org)
        store_organisation_clear(&org);

    if (store_connect_task_list(st, &list, &n, &err) < 0) {
        log_warn("event=connect_timer_read_failed reason=\"%s\"", err.msg);
        return;
    }
    int64_t now = now_s();
    for (size_t i = 0; i < n && !is_stopping(c); i++)
        if (list[i].next_check > 0 && list[i].next_check <= now)
            timer_check(c, st, list[i].id);
    store_connect_tasks_free(list, n);
}

static void *timer_main(void *arg)
{
    struct connect *c = arg;
    struct error err = {0};
    struct store *st = store_open(c->database, &err);
    if (st == NULL) {
        log_error("event=connect_timer_failed reason=\"%s\"", err.msg);
        return NULL;
    }
    struct watch w = {0};
    log_info("event=connect_timer_started tick=%d recheck_min=%" PRId64 " recheck_max=%" PRId64
             " reverify=%" PRId64, CONNECT_TICK_S, c->sched.recheck_min, c->sched.recheck_max,
             c->sched.reverify_interval);
    for (;;) {
        timer_tick(c, st, &w);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += CONNECT_TICK_S;
        pthread_mutex_lock(&c->lock);
        while (!c->stopping && pthread_cond_timedwait(&c->cond, &c->lock, &ts) != ETIMEDOUT)
            ;
        bool stop = c->stopping;
        pthread_mutex_unlock(&c->lock);
        if (stop)
            break;
    }
    store_close(st);
    return NULL;
}
