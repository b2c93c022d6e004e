/*
 * directory_sync.c - the sync runner: the LDAP source's configuration with
 * its sealed bind password, "test connection", preview, apply (with the
 * safety stop), progress, the schedule and "sync now", and the record of
 * every run.
 *
 * Entry points: directory_sync_create/start/stop/free (moatd),
 * directory_sync_source_get/put, _test, _preview, _request, _wait, _status
 * (the API, on its worker threads).
 *
 * Threads.  Applied syncs run on this module's own thread with its own
 * store handle: the scheduled ones and those the API asks for ("sync now";
 * the API thread returns at once and may wait for the run).  Test and
 * preview run on the calling HTTP worker.  struct directory_sync's lock
 * guards the request, the progress and the last run's report; nothing
 * blocking happens under it.
 *
 * Failure never changes the directory: the whole directory is read first
 * (a bind error, a TLS error or a truncated search fails the run), and only
 * then handed to directory_sync_apply, which changes everything in one
 * transaction or nothing (the safety stop).  Every run, whatever its
 * outcome, is recorded (store_ldap_run_add) with its counts or its error.
 *
 * The schedule: times of day (local time).  A time counts when the clock
 * passes it while moatd runs; a time missed while moatd was down is not
 * made up (the next one comes within hours, and "sync now" is one command).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sodium.h>
#include "directory_ldap.h"
#include "../core/metrics.h"

#define REPORT_MAX 1000          /* unvalidated addresses kept from the last run */

struct directory_sync {
    char *database;
    struct auth *auth;
    void (*applied)(void *arg);
    void *applied_arg;

    pthread_mutex_t lock;
    pthread_cond_t cond;          /* requests for the thread; runs finished for waiters */
    pthread_t thread;
    bool started, stopping;
    /* the pending request */
    bool requested, req_confirm;
    char req_who[128];
    uint64_t seq_requested, seq_done;
    /* the run in progress */
    bool running;
    const char *phase;            /* "connecting", "reading", "applying" */
    size_t done, total;
    int64_t run_started;
    char run_trigger[16], run_who[128];
    /* what the last applied run reported (not stored: it can be long) */
    json_t *last_report;
};

/* --- the source --- */

/* load_source - the stored configuration, parsed; *sealed (may be NULL) the password blob */
static int load_source(struct store *st, struct directory_ldap_source *src,
                       struct store_ldap_source *raw, struct error *err)
{
    if (store_ldap_source_get(st, raw, err) < 0)
        return -1;
    json_error_t jerr;
    json_t *cfg = json_loads(raw->config, 0, &jerr);
    if (cfg == NULL) {
        error_set(err, "", "the stored directory source is not JSON: %s", jerr.text);
        store_ldap_source_clear(raw);
        return -1;
    }
    int rc = directory_ldap_source_parse(cfg, src, err);
    json_decref(cfg);
    if (rc < 0)
        store_ldap_source_clear(raw);
    return rc;
}

/* open_password - the bind password in the clear (caller wipes and frees), "" when none */
static int open_password(const struct directory_sync *s, const struct store_ldap_source *raw,
                         char **out, struct error *err)
{
    if (raw->password == NULL) {
        *out = xstrdup("");
        return 0;
    }
    return auth_secret_open(s->auth, DIRECTORY_LDAP_PASSWORD_LABEL, raw->password,
                            raw->password_len, out, err);
}

static void wipe_free(char *p)
{
    if (p != NULL) {
        sodium_memzero(p, strlen(p));
        free(p);
    }
}

json_t *directory_sync_source_get(struct store *st, struct error *err)
{
    struct directory_ldap_source src;
    struct store_ldap_source raw;
    if (load_source(st, &src, &raw, err) < 0)
        return NULL;
    json_t *o = directory_ldap_source_view(&src);
    json_object_set_new(o, "password_set", json_boolean(raw.password != NULL));
    json_object_set_new(o, "updated", raw.updated ? json_integer(raw.updated) : json_null());
    json_object_set_new(o, "updated_by", json_string(raw.updated_by));
    directory_ldap_source_clear(&src);
    store_ldap_source_clear(&raw);
    return o;
}

int directory_sync_source_put(struct directory_sync *s, struct store *st, json_t *patch,
                              const char *who, json_t **before, json_t **after,
                              struct error *err)
{
    struct store_ldap_source raw;
    *before = *after = NULL;
    if (!json_is_object(patch)) {
        error_set(err, "", "the body must be a JSON object with the members to change");
        return -1;
    }
    *before = directory_sync_source_get(st, err);
    if (*before == NULL || store_ldap_source_get(st, &raw, err) < 0)
        return -1;
    json_t *cfg = json_loads(raw.config, 0, NULL);
    if (cfg == NULL)
        cfg = json_object();
    const char *key;
    json_t *v;
    bool set_password = false;
    const char *password = NULL;
    json_object_foreach(patch, key, v) {
        if (strcmp(key, "password") == 0) {
            if (!json_is_null(v) && !json_is_string(v)) {
                error_set(err, "password", "password must be a string (\"\" or null clears it)");
                goto fail;
            }
            set_password = true;
            password = json_string_value(v);
            continue;
        }
        /* null: back to the default */
        if (json_is_null(v))
            json_object_del(cfg, key);
        else
            json_object_set(cfg, key, v);
    }
    /* a new preset brings its own filters unless they are given too */
    if (json_object_get(patch, "preset") != NULL) {
        if (json_object_get(patch, "filter") == NULL)
            json_object_del(cfg, "filter");
        if (json_object_get(patch, "group_filter") == NULL)
            json_object_del(cfg, "group_filter");
    }
    struct directory_ldap_source src;
    if (directory_ldap_source_parse(cfg, &src, err) < 0)
        goto fail;
    json_t *stored = directory_ldap_source_json(&src);
    directory_ldap_source_clear(&src);
    char *text = json_dumps(stored, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(stored);
    unsigned char *blob = NULL;
    size_t blob_len = 0;
    if (set_password && password != NULL && password[0] != '\0' &&
        auth_secret_seal(s->auth, DIRECTORY_LDAP_PASSWORD_LABEL, password, &blob, &blob_len,
                         err) < 0) {
        free(text);
        goto fail;
    }
    int rc = store_ldap_source_set(st, text, !set_password, blob, blob_len, who,
                                   (int64_t)time(NULL), err);
    free(text);
    free(blob);
    if (rc < 0)
        goto fail;
    json_decref(cfg);
    store_ldap_source_clear(&raw);
    *after = directory_sync_source_get(st, err);
    return *after ? 0 : -1;
fail:
    json_decref(cfg);
    store_ldap_source_clear(&raw);
    json_decref(*before);
    *before = NULL;
    return -1;
}

/* --- test and preview (the calling thread) --- */

json_t *directory_sync_test(struct directory_sync *s, struct store *st, struct error *err)
{
    struct directory_ldap_source src;
    struct store_ldap_source raw;
    char *password = NULL;
    if (load_source(st, &src, &raw, err) < 0)
        return NULL;
    if (open_password(s, &raw, &password, err) < 0) {
        directory_ldap_source_clear(&src);
        store_ldap_source_clear(&raw);
        return NULL;
    }
    json_t *o = directory_ldap_test(&src, password);
    wipe_free(password);
    directory_ldap_source_clear(&src);
    store_ldap_source_clear(&raw);
    log_info("event=ldap_test ok=%s", json_is_true(json_object_get(o, "ok")) ? "yes" : "no");
    return o;
}

static json_t *counts_json(const struct directory_sync_counts *c, size_t entries)
{
    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "entries", (json_int_t)entries,
                     "created", (json_int_t)c->created, "updated", (json_int_t)c->updated,
                     "removed", (json_int_t)c->removed, "unchanged", (json_int_t)c->unchanged,
                     "skipped_unvalidated", (json_int_t)c->skipped_unvalidated,
                     "errors", (json_int_t)c->errors);
}

/* bounded - at most REPORT_MAX items of a (consumed) report array */
static json_t *bounded(json_t *a)
{
    if (!json_is_array(a)) {
        json_decref(a);
        return json_array();
    }
    while (json_array_size(a) > REPORT_MAX)
        json_array_remove(a, json_array_size(a) - 1);
    return a;
}

static bool no_progress(void *arg, size_t done, size_t estimate)
{
    const struct directory_sync *s = arg;
    return !s->stopping;
}

json_t *directory_sync_preview(struct directory_sync *s, struct store *st, const char *who,
                               struct error *err)
{
    struct directory_ldap_source src;
    struct store_ldap_source raw;
    char *password = NULL;
    int64_t started = (int64_t)time(NULL);
    if (load_source(st, &src, &raw, err) < 0)
        return NULL;
    if (open_password(s, &raw, &password, err) < 0) {
        directory_ldap_source_clear(&src);
        store_ldap_source_clear(&raw);
        return NULL;
    }
    store_ldap_source_clear(&raw);
    struct directory_entry *e = NULL;
    size_t n = 0;
    json_t *problems = json_array(), *report = NULL;
    struct directory_sync_counts c = {0};
    int rc = directory_ldap_read(&src, password, &e, &n, problems, no_progress, s, err);
    wipe_free(password);
    /* confirm: a preview shows what would be removed; the safety stop is judged below */
    if (rc == 0)
        rc = directory_sync_apply(st, e, n, true, src.max_remove_share, true, &c, &report, err);
    directory_ldap_entries_free(e, n);
    struct store_ldap_run run = { .kind = "preview", .trigger = "manual", .who = who,
                                  .started = started, .finished = (int64_t)time(NULL),
                                  .outcome = rc == 0 ? "ok" : "error", .entries = (int64_t)n,
                                  .created = (int64_t)c.created, .updated = (int64_t)c.updated,
                                  .removed = (int64_t)c.removed,
                                  .unchanged = (int64_t)c.unchanged,
                                  .skipped_unvalidated = (int64_t)c.skipped_unvalidated,
                                  .errors = (int64_t)c.errors, .message = rc == 0 ? "" : err->msg };
    struct error rerr = {0};
    if (store_ldap_run_add(st, &run, NULL, &rerr) < 0)
        log_warn("event=ldap_run_record_failed reason=\"%s\"", rerr.msg);
    if (rc < 0) {
        json_decref(problems);
        json_decref(report);
        directory_ldap_source_clear(&src);
        return NULL;
    }
    size_t existing = c.removed + c.updated + c.unchanged;
    double share = existing ? (double)c.removed / (double)existing : 0;
    json_t *o = counts_json(&c, n);
    json_object_set_new(o, "would_remove_share", json_real(share));
    json_object_set_new(o, "max_remove_share", json_real(src.max_remove_share));
    json_object_set_new(o, "safety_stop", json_boolean(share > src.max_remove_share));
    json_object_set_new(o, "unvalidated", bounded(report));
    json_object_set_new(o, "problems", problems);
    directory_ldap_source_clear(&src);
    return o;
}

/* --- applied syncs (the sync thread) --- */

static bool report_progress(void *arg, size_t done, size_t estimate)
{
    struct directory_sync *s = arg;
    pthread_mutex_lock(&s->lock);
    s->phase = "reading";
    s->done = done;
    if (estimate > s->total)
        s->total = estimate;
    if (s->done > s->total)
        s->total = s->done;
    bool go = !s->stopping;
    pthread_mutex_unlock(&s->lock);
    return go;
}

/* run_apply - read the directory and apply it; record the run */
static void run_apply(struct directory_sync *s, struct store *st, const char *trigger,
                      const char *who, bool confirm)
{
    struct directory_ldap_source src;
    struct store_ldap_source raw;
    struct error err = {0};
    struct directory_sync_counts c = {0};
    struct directory_entry *e = NULL;
    size_t n = 0;
    json_t *problems = json_array(), *report = NULL;
    char *password = NULL;
    int64_t started = (int64_t)time(NULL);
    const char *outcome = "error";
    bool have_src = false;

    /* the estimate for the progress bar: the last applied run's size */
    struct store_ldap_run *last = NULL;
    size_t estimate = 0;
    if (store_ldap_run_last(st, "apply", "ok", &last, &err) == STORE_OK)
        estimate = (size_t)last->entries;
    store_ldap_runs_free(last, last ? 1 : 0);
    memset(&err, 0, sizeof err);
    pthread_mutex_lock(&s->lock);
    s->total = estimate;
    pthread_mutex_unlock(&s->lock);

    if (load_source(st, &src, &raw, &err) < 0)
        goto done;
    have_src = true;
    int rc = open_password(s, &raw, &password, &err);
    store_ldap_source_clear(&raw);
    if (rc < 0)
        goto done;
    rc = directory_ldap_read(&src, password, &e, &n, problems, report_progress, s, &err);
    wipe_free(password);
    if (rc < 0)
        goto done;
    pthread_mutex_lock(&s->lock);
    s->phase = "applying";
    s->done = s->total = n;
    pthread_mutex_unlock(&s->lock);
    rc = directory_sync_apply(st, e, n, false, src.max_remove_share, confirm, &c, &report, &err);
    if (rc == 0)
        outcome = "ok";
    else if (strcmp(err.field, "confirm") == 0) {
        outcome = "refused";
        struct error why = err;
        error_set(&err, "confirm", "safety stop: %s; nothing was changed. If the removals are "
                  "right, apply it with `moat directory sync --confirm` (POST "
                  "/api/v1/directory/sync {\"confirm\": true})", why.msg);
    }
done:
    directory_ldap_entries_free(e, n);
    struct store_ldap_run run = { .kind = "apply", .trigger = trigger, .who = who,
                                  .started = started, .finished = (int64_t)time(NULL),
                                  .outcome = outcome, .entries = (int64_t)n,
                                  .created = (int64_t)c.created, .updated = (int64_t)c.updated,
                                  .removed = (int64_t)c.removed,
                                  .unchanged = (int64_t)c.unchanged,
                                  .skipped_unvalidated = (int64_t)c.skipped_unvalidated,
                                  .errors = (int64_t)c.errors,
                                  .message = strcmp(outcome, "ok") == 0 ? "" : err.msg };
    struct error rerr = {0};
    if (store_ldap_run_add(st, &run, NULL, &rerr) < 0)
        log_error("event=ldap_run_record_failed reason=\"%s\"", rerr.msg);
    bool ok = strcmp(outcome, "ok") == 0;
    metrics_inc(M_DIRECTORY_SYNCS_TOTAL, (const char *[]){ ok ? "ok" : "failed" });
    if (ok)
        metrics_set(M_DIRECTORY_USERS, (int64_t)(c.created + c.updated + c.unchanged));
    char q[600];
    if (strcmp(outcome, "ok") == 0)
        log_info("event=ldap_sync outcome=ok trigger=%s entries=%zu created=%zu updated=%zu "
                 "removed=%zu unchanged=%zu skipped_unvalidated=%zu errors=%zu seconds=%lld",
                 trigger, n, c.created, c.updated, c.removed, c.unchanged,
                 c.skipped_unvalidated, c.errors, (long long)(run.finished - started));
    else
        log_warn("event=ldap_sync outcome=%s trigger=%s reason=%s", outcome, trigger,
                 log_quote(q, sizeof q, err.msg));
    json_t *rep = json_pack("{s:o, s:o}", "unvalidated", bounded(report),
                            "problems", problems);
    pthread_mutex_lock(&s->lock);
    json_decref(s->last_report);
    s->last_report = rep;
    pthread_mutex_unlock(&s->lock);
    if (have_src)
        directory_ldap_source_clear(&src);
    if (strcmp(outcome, "ok") == 0 && s->applied != NULL)
        s->applied(s->applied_arg);
}

/* slot_passed - a schedule time in (prev, now] (local time of day) */
static bool slot_passed(const char *schedule, time_t prev, time_t now)
{
    int secs[DIRECTORY_LDAP_SCHEDULE_MAX];
    size_t n;
    struct error err = {0};
    if (now <= prev || directory_ldap_schedule_parse(schedule, secs, DIRECTORY_LDAP_SCHEDULE_MAX,
                                                     &n, &err) < 0 || n == 0)
        return false;
    struct tm a, b;
    localtime_r(&prev, &a);
    localtime_r(&now, &b);
    int pa = a.tm_hour * 3600 + a.tm_min * 60 + a.tm_sec;
    int pb = b.tm_hour * 3600 + b.tm_min * 60 + b.tm_sec;
    bool same_day = a.tm_yday == b.tm_yday && a.tm_year == b.tm_year;
    for (size_t i = 0; i < n; i++) {
        if (same_day ? (secs[i] > pa && secs[i] <= pb) : (secs[i] > pa || secs[i] <= pb))
            return true;
    }
    return false;
}

/* scheduled_due - the stored schedule has a time between prev and now */
static bool scheduled_due(struct store *st, time_t prev, time_t now)
{
    struct directory_ldap_source src;
    struct store_ldap_source raw;
    struct error err = {0};
    if (load_source(st, &src, &raw, &err) < 0)
        return false;
    store_ldap_source_clear(&raw);
    bool due = src.configured && slot_passed(src.schedule, prev, now);
    directory_ldap_source_clear(&src);
    return due;
}

static void *sync_thread(void *arg)
{
    struct directory_sync *s = arg;
    struct error err = {0};
    struct store *st = store_open(s->database, &err);
    if (st == NULL) {
        log_error("event=ldap_sync_thread_failed reason=\"%s\"", err.msg);
        return NULL;
    }
    time_t prev = time(NULL);
    pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        if (!s->requested) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 1;
            pthread_cond_timedwait(&s->cond, &s->lock, &until);
        }
        if (s->stopping)
            break;
        bool manual = s->requested, confirm = s->req_confirm;
        char who[128];
        str_copy(who, sizeof who, s->req_who);
        pthread_mutex_unlock(&s->lock);
        time_t now = time(NULL);
        bool due = !manual && scheduled_due(st, prev, now);
        prev = now;
        pthread_mutex_lock(&s->lock);
        if (!manual && !due)
            continue;
        s->requested = false;
        s->running = true;
        s->phase = "connecting";
        s->done = s->total = 0;
        s->run_started = (int64_t)now;
        str_copy(s->run_trigger, sizeof s->run_trigger, manual ? "manual" : "schedule");
        str_copy(s->run_who, sizeof s->run_who, manual ? who : "");
        pthread_mutex_unlock(&s->lock);

        run_apply(s, st, manual ? "manual" : "schedule", manual ? who : "", confirm);

        pthread_mutex_lock(&s->lock);
        s->running = false;
        s->phase = NULL;
        if (manual)
            s->seq_done = s->seq_requested;
        pthread_cond_broadcast(&s->cond);
    }
    /* whoever still waits gives up */
    s->seq_done = s->seq_requested;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    store_close(st);
    return NULL;
}

/* --- lifecycle --- */

struct directory_sync *directory_sync_create(const struct directory_sync_config *cfg,
                                             struct error *err)
{
    if (cfg->database == NULL || cfg->auth == NULL) {
        error_set(err, "", "the directory sync needs the database and auth");
        return NULL;
    }
    struct directory_sync *s = xcalloc(1, sizeof *s);
    s->database = xstrdup(cfg->database);
    s->auth = cfg->auth;
    s->applied = cfg->applied;
    s->applied_arg = cfg->applied_arg;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    return s;
}

int directory_sync_start(struct directory_sync *s, struct error *err)
{
    int rc = pthread_create(&s->thread, NULL, sync_thread, s);
    if (rc != 0) {
        error_set(err, "", "cannot start the directory sync thread: %s", strerror(rc));
        return -1;
    }
    s->started = true;
    return 0;
}

void directory_sync_stop(struct directory_sync *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    if (s->started) {
        pthread_join(s->thread, NULL);
        s->started = false;
    }
}

void directory_sync_free(struct directory_sync *s)
{
    if (s == NULL)
        return;
    directory_sync_stop(s);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    json_decref(s->last_report);
    free(s->database);
    free(s);
}

/* --- requests and status (the API's threads) --- */

int directory_sync_request(struct directory_sync *s, bool confirm, const char *who,
                           uint64_t *run_seq, struct error *err)
{
    pthread_mutex_lock(&s->lock);
    if (!s->started || s->stopping) {
        pthread_mutex_unlock(&s->lock);
        error_set(err, "shutdown", "the directory sync is not running in this moatd");
        return -1;
    }
    if (s->running || s->requested) {
        pthread_mutex_unlock(&s->lock);
        error_set(err, "sync", "a directory sync is already running; follow it with "
                  "GET /api/v1/directory/sync (moat directory sync --status)");
        return -1;
    }
    s->requested = true;
    s->req_confirm = confirm;
    str_copy(s->req_who, sizeof s->req_who, who ? who : "");
    *run_seq = ++s->seq_requested;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

bool directory_sync_wait(struct directory_sync *s, uint64_t seq, int64_t timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&s->lock);
    int rc = 0;
    while (s->seq_done < seq && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&s->cond, &s->lock, &until);
    bool done = s->seq_done >= seq;
    pthread_mutex_unlock(&s->lock);
    return done;
}

json_t *directory_sync_run_json(const struct store_ldap_run *r)
{
    return json_pack("{s:I, s:s, s:s, s:s, s:I, s:I, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I,"
                     " s:s}",
                     "id", (json_int_t)r->id, "kind", r->kind, "trigger", r->trigger,
                     "who", r->who, "started", (json_int_t)r->started,
                     "finished", (json_int_t)r->finished, "outcome", r->outcome,
                     "entries", (json_int_t)r->entries, "created", (json_int_t)r->created,
                     "updated", (json_int_t)r->updated, "removed", (json_int_t)r->removed,
                     "unchanged", (json_int_t)r->unchanged,
                     "skipped_unvalidated", (json_int_t)r->skipped_unvalidated,
                     "errors", (json_int_t)r->errors, "message", r->message);
}

json_t *directory_sync_status(struct directory_sync *s, struct store *st, size_t limit,
                              struct error *err)
{
    struct store_ldap_run *runs = NULL;
    size_t n = 0;
    if (store_ldap_run_list(st, "apply", limit, &runs, &n, err) < 0)
        return NULL;
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(list, directory_sync_run_json(&runs[i]));
    store_ldap_runs_free(runs, n);
    json_t *o = json_pack("{s:b, s:n, s:O?, s:o}", "running", 0, "progress",
                          "last", json_array_get(list, 0), "runs", list);
    if (s == NULL)
        return o;
    pthread_mutex_lock(&s->lock);
    bool busy = s->running || s->requested;
    json_object_set_new(o, "running", json_boolean(busy));
    if (busy)
        json_object_set_new(o, "progress", json_pack(
            "{s:s, s:I, s:I, s:I, s:s, s:s}", "phase", s->phase ? s->phase : "starting",
            "done", (json_int_t)s->done, "total", (json_int_t)s->total,
            "started", (json_int_t)s->run_started, "trigger",
            s->running ? s->run_trigger : "manual", "who", s->running ? s->run_who : s->req_who));
    if (s->last_report != NULL)
        json_object_set(o, "last_report", s->last_report);
    pthread_mutex_unlock(&s->lock);
    return o;
}
