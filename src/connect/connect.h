/*
 * connect.h - Connect, the onboarding engine: the task graph of DESIGN.md
 * section 1 as data (one table, connect_tasks.c), task states persisted with
 * who changed them and when, checks that verify each task against reality
 * (DNS, SMTP), re-checks on a timer, and instructions/artefacts generated for
 * the organisation's environment.
 *
 * One engine, three interfaces: the API (/api/v1/connect...), the CLI
 * (`moat connect ...`, over the API) and the web wizard (later).
 *
 * Threads.  Engine calls that take a struct store * run on the calling
 * thread (an HTTP worker, or the engine's own timer thread) with that
 * thread's store handle.  A check has two halves: prepare (on the calling
 * thread: read what it needs from the store into a JSON input) and run (on
 * the event loop: asynchronous DNS and SMTP, never blocking), whose result
 * comes back to the calling thread, which persists it.  A resolver error or
 * timeout is CONNECT_UNKNOWN: never "failed", never moves a task back.
 */
#ifndef MOAT_CONNECT_H
#define MOAT_CONNECT_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>
#include <openssl/ssl.h>
#include "../core/core.h"
#include "../core/settings.h"
#include "../store/store.h"
#include "../auth/auth.h"

struct event_base;
struct dns;
struct spool;
struct connect;

enum connect_state {
    CONNECT_LOCKED = 0,   /* a prerequisite is not done */
    CONNECT_TODO,
    CONNECT_IN_PROGRESS,  /* configuration started, check not passed yet */
    CONNECT_WAITING,      /* an external change was asked for; re-checked on a timer */
    CONNECT_DONE,         /* its check passed */
    CONNECT_SKIPPED,      /* optional tasks only */
    CONNECT_ATTENTION,    /* was done, its check now fails */
};

enum connect_outcome {
    CONNECT_PASS = 0,
    CONNECT_FAIL,         /* verified wrong: e.g. the route refuses the test message */
    CONNECT_PENDING,      /* not there yet: e.g. the TXT record is not published yet */
    CONNECT_UNKNOWN,      /* could not tell: resolver error, timeout */
    CONNECT_UNAVAILABLE,  /* the task's check arrives with a later capability */
};

const char *connect_state_name(enum connect_state s);
const char *connect_outcome_name(enum connect_outcome o);

/* the result of one check */
struct connect_result {
    enum connect_outcome outcome;
    char message[512];    /* one sentence an administrator can act on */
    json_t *details;      /* owned: per-domain findings, found vs expected, ... */
};

/* outbound relays the SMTP server has accepted since moatd started (the
 * outbound task's evidence when it cannot send a test from an authorised
 * address itself) */
struct connect_outbound_seen {
    uint64_t relayed;                 /* transactions with an external recipient */
    int64_t last;                     /* unix seconds of the last; 0 = none */
    char last_client[64];             /* its client address, or an account name */
};

/* what a check may use on the loop */
struct connect_env {
    struct event_base *base;
    struct dns *dns;
    SSL_CTX *tls_client;              /* with the system trust store (smtp_tls_client_ctx) */
    const struct moat_settings *settings;
    struct spool *spool;              /* test messages (spool_inject) */
    const char *hostname;
    /* outbound_seen - optional: fills *out (on the loop) */
    void (*outbound_seen)(void *arg, struct connect_outbound_seen *out);
    void *outbound_seen_arg;
    /* the SRS key of forwarding (issue 7, forward.h); NULL: no SRS shown */
    const unsigned char *srs_key;
};

typedef void (*connect_done_cb)(void *arg, struct connect_result *r);

/* One row of the task table (connect_tasks.c).  prepare runs on the calling
 * thread with its store handle and returns the check's input (NULL + err on
 * failure); run starts the check on the loop and calls done exactly once,
 * later, on the loop.  instructions returns the artefacts for the
 * organisation's environment: {"steps": [...], "artefacts": [{"kind":
 * "dns"|"powershell"|"nftables"|"postfix"|..., "title": ..., "content": ...}]}. */
struct connect_task {
    const char *id;                   /* "organisation", "domains", ... (DESIGN.md 1) */
    const char *title;
    bool optional;
    const char *const *prereqs;       /* ids; NULL-terminated; "a|b" means either */
    json_t *(*prepare)(struct store *st, struct error *err);
    void (*run)(const struct connect_env *env, json_t *input, connect_done_cb done, void *arg);
    json_t *(*instructions)(struct store *st, struct error *err);
    const char *later_issue;          /* for tasks whose check arrives later: what brings it */
    /* apply - optional (NULL: nothing to record): runs on the calling thread
     * with its store handle after run's result came back, before the engine
     * persists the task state; records per-item findings the task owns
     * (domains verified, mx_only_moat_since).  -1 + err on a store error. */
    int (*apply)(struct store *st, const struct connect_result *r, struct error *err);
    /* input_check - optional (NULL: the task takes no input): validates a PUT
     * .../{task}/input body, the administrator's input for the check (a test
     * address); -1 with err naming the field */
    int (*input_check)(json_t *body, struct error *err);
};

extern const struct connect_task connect_tasks[];
extern const size_t connect_tasks_count;
const struct connect_task *connect_task_find(const char *id);

struct connect_config {
    struct connect_env env;
    const char *database;             /* the timer thread opens its own store handle */
    int64_t recheck_min;              /* waiting tasks: first re-check after (60 s) */
    int64_t recheck_max;              /* ... backing off up to (30 min) */
    int64_t reverify_interval;        /* done tasks are re-verified this often */
    int64_t lockdown_mx_hours;        /* MX only at Moat this long unlocks lockdown (72) */
};

struct connect *connect_create(const struct connect_config *cfg, struct error *err);
/* connect_start - start the timer thread (after the privilege drop) */
int connect_start(struct connect *c, struct error *err);
/* connect_stop - stop and join the timer thread; checks still waiting for the
 * loop give up ("moatd is shutting down").  Call it as soon as the loop has
 * stopped, before api_server_free (whose workers may wait in a check);
 * connect_free calls it too.  The engine stays readable until connect_free. */
void connect_stop(struct connect *c);
void connect_free(struct connect *c);

/* --- the engine, for the API --- */
/* connect_overview - every task: {id, title, optional, state, blocked_by: [...], next_step, last_check} */
json_t *connect_overview(struct connect *c, struct store *st, struct error *err);
/* connect_task_detail - one task: the above plus prerequisites, instructions, artefacts, last result */
json_t *connect_task_detail(struct connect *c, struct store *st, const char *id, struct error *err);
/* connect_task_check - run the check now (blocks the calling thread, never the loop); persists */
json_t *connect_task_check(struct connect *c, struct store *st, const char *id,
                           const struct auth_principal *who, struct error *err);
/* connect_run - run a check-shaped job (run on the loop, answer through
 * done) outside the task table and wait for it, like connect_task_check,
 * without persisting anything: the TLS policy and route probes of the API
 * ("tested before enforced").  id names it in logs (static string). */
void connect_run(struct connect *c, const char *id,
                 void (*run)(const struct connect_env *env, json_t *input, connect_done_cb done,
                             void *arg),
                 json_t *input, struct connect_result *out);
/* connect_task_skip - optional tasks only (and lockdown for a hybrid environment) */
int connect_task_skip(struct connect *c, struct store *st, const char *id,
                      const struct auth_principal *who, struct error *err);
/* Errors of the four calls above: err->field "task" = refused as asked (an
 * unknown task, skipping a mandatory one, a check that cannot be prepared
 * yet: 4xx); "shutdown" = moatd is stopping (503); "" = internal (500). */

/* --- the organisation (connect_org.c), for the API --- */
/* connect_org_get - the organisation as JSON: {name, environment, contact_name,
 * contact_email, contact_phone, public_hosts: [], public_ips: [], probe_source,
 * updated, updated_by} */
json_t *connect_org_get(struct store *st, struct error *err);
/* connect_org_update - apply patch (members of the shape above but updated*,
 * each validated: err->field names a bad one); *before / *after (may be NULL)
 * get the JSON for the audit log */
int connect_org_update(struct store *st, json_t *patch, const char *who, json_t **before,
                       json_t **after, struct error *err);

#endif
