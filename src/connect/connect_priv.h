/*
 * connect_priv.h - private to src/connect (and tests/unit/test_connect.c):
 * the engine's pure rules (state derivation from prerequisites, the
 * transition a check outcome causes, the re-check schedule), the
 * organisation task's check and instructions, and the per-task hints.
 *
 * The rules are pure functions of their inputs so the unit tests can walk
 * every transition without a loop, a store or a clock.
 */
#ifndef MOAT_CONNECT_PRIV_H
#define MOAT_CONNECT_PRIV_H

#include "connect.h"

#define CONNECT_MAX_TASKS 32
#define CONNECT_MAX_BLOCKERS CONNECT_MAX_TASKS

/* enum <-> name ("todo", "pass", ...); -1 when unknown */
int connect_state_parse(const char *s, enum connect_state *out);
int connect_outcome_parse(const char *s, enum connect_outcome *out);

/* connect_task_index - the row of id in connect_tasks[], or -1 */
int connect_task_index(const char *id);
/* connect_task_hint - what to do for a task that is todo (one sentence) */
const char *connect_task_hint(const char *id);

/* --- derivation: what each task shows, from the recorded states --- */

/* facts the lockdown rule needs beyond the task states */
struct connect_lockdown_facts {
    int64_t now;
    int64_t mx_only_moat_since;   /* latest over the domains; 0 = not (yet) */
    int64_t mx_hours;             /* required age (lockdown_mx_hours) */
};

struct connect_view {
    enum connect_state state;              /* what the task shows */
    const char *blocked_by[CONNECT_MAX_BLOCKERS];  /* prerequisite ids ("a|b"), "mx_age" */
    size_t n_blocked;
    char blocked_message[256];             /* one sentence naming the first blocker */
};

/* connect_prereq_satisfied - a task counts as a satisfied prerequisite when done,
 * or skipped (an optional task the administrator chose to skip) */
bool connect_prereq_satisfied(enum connect_state s);

/* connect_derive - views[i] for connect_tasks[i] from recorded[i] (todo when never
 * touched).  A task never worked on (recorded todo) whose prerequisites are not
 * satisfied shows locked; a task already worked on shows its recorded state,
 * blocked_by still listing what is missing.  Lockdown is also blocked by every
 * mandatory task not done and by the MX age rule. */
void connect_derive(const enum connect_state *recorded, const struct connect_lockdown_facts *f,
                    struct connect_view *views);

/* --- transitions --- */

struct connect_schedule {
    int64_t recheck_min;          /* first re-check of a waiting task */
    int64_t recheck_max;          /* the backoff stops doubling here */
    int64_t reverify_interval;    /* done tasks */
};

struct connect_step {
    enum connect_state state;     /* the new recorded state */
    int64_t backoff;              /* the new re-check interval (0 = none) */
    int64_t next_check;           /* when the timer checks it next (0 = never) */
    bool keep_schedule;           /* UNAVAILABLE: leave next_check/backoff as they were */
};

/* connect_backoff_next - 0 -> recheck_min, then doubling, at most recheck_max */
int64_t connect_backoff_next(const struct connect_schedule *p, int64_t backoff);

/* connect_apply_outcome - the recorded state after a check with outcome o.
 * PASS -> done; PENDING -> waiting (attention stays attention); FAIL -> in_progress
 * (done -> attention); UNKNOWN and UNAVAILABLE never change the state.  The
 * caller confirms a FAIL/PENDING of a done task by a second run first. */
void connect_apply_outcome(const struct connect_schedule *p, enum connect_state cur,
                           int64_t backoff, enum connect_outcome o, int64_t now,
                           struct connect_step *out);

/* --- the organisation task (connect_org.c) --- */
json_t *connect_org_prepare(struct store *st, struct error *err);
void connect_org_run(const struct connect_env *env, json_t *input, connect_done_cb done, void *arg);
json_t *connect_org_instructions(struct store *st, struct error *err);
/* connect_org_evaluate - the check itself, on the prepared input (for tests) */
void connect_org_evaluate(json_t *input, struct connect_result *r);

#endif
