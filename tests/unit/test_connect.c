/*
 * test_connect.c - the Connect engine: the task table (a DAG whose every
 * prerequisite names a task, exactly DESIGN.md's table), state derivation
 * (locked / todo / the lockdown rule), the transitions a check outcome
 * causes (unknown never moves a task back; the backoff schedule), and the
 * engine on a real store: the organisation task's check, skip rules, tasks
 * whose checks arrive later, and the organisation's validation.
 *
 * The engine runs here without an event loop (env.base NULL): the
 * organisation check answers inline, which is all these tests need; the
 * checks that use DNS and SMTP are tested end to end (tests/e2e).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "connect/connect.h"
#include "connect/connect_priv.h"

#define NOW INT64_C(1800000000)

/* the prerequisites of DESIGN.md section 1, as the table must encode them */
static const struct {
    const char *id;
    const char *title;
    bool optional;
    const char *prereqs;   /* comma-separated, "a|b" = either */
} expected[] = {
    { "organisation", "Describe your organisation", false, "" },
    { "domains", "Validate your domains", false, "organisation" },
    { "directory", "Synchronise your directory", false, "domains" },
    { "users", "Add users manually", false, "domains" },
    { "authentication", "Set up user authentication", false, "domains" },
    { "inbound", "Prepare for inbound email", false, "domains" },
    { "outbound", "Set up your outbound email", false, "domains" },
    { "permitted_senders", "Import permitted senders", false, "domains" },
    { "recipient_validation", "Set up recipient validation", false, "directory|users" },
    { "mx", "Modify your MX record", false, "inbound,recipient_validation" },
    { "antispoof_bypass", "Bypass anti-spoofing", true, "mx" },
    { "tls_policies", "Set up your TLS policies", true, "inbound" },
    { "journaling", "Set up journaling", false, "domains,inbound" },
    { "admins", "Manage basic administrators", true, "directory|users" },
    { "forwarding", "Manage forwarding addresses", true, "domains" },
    { "lockdown", "Secure your inbound email (firewall lockdown)", false, "mx" },
};
#define N_EXPECTED (sizeof expected / sizeof expected[0])

static void prereqs_joined(const struct connect_task *t, char *dst, size_t size)
{
    dst[0] = '\0';
    for (const char *const *p = t->prereqs; *p; p++) {
        if (dst[0])
            strncat(dst, ",", size - strlen(dst) - 1);
        strncat(dst, *p, size - strlen(dst) - 1);
    }
}

/* --- the table --- */

static void test_table_matches_expected(void **state)
{
    assert_int_equal(connect_tasks_count, N_EXPECTED);
    for (size_t i = 0; i < N_EXPECTED; i++) {
        const struct connect_task *t = &connect_tasks[i];
        char got[256];
        assert_string_equal(t->id, expected[i].id);
        assert_string_equal(t->title, expected[i].title);
        assert_int_equal(t->optional, expected[i].optional);
        prereqs_joined(t, got, sizeof got);
        assert_string_equal(got, expected[i].prereqs);
        assert_ptr_equal(connect_task_find(t->id), t);
        /* either a check of its own, or it says what brings it */
        assert_true((t->prepare != NULL && t->run != NULL) || t->later_issue != NULL);
        assert_true(connect_task_hint(t->id)[0] != '\0');
    }
    assert_null(connect_task_find("nonesuch"));
    /* the five tasks of this issue have checks */
    const char *mine[] = { "organisation", "domains", "inbound", "mx", "lockdown" };
    for (size_t i = 0; i < 5; i++)
        assert_non_null(connect_task_find(mine[i])->run);
}

static void test_table_every_prereq_names_a_task(void **state)
{
    for (size_t i = 0; i < connect_tasks_count; i++) {
        for (const char *const *p = connect_tasks[i].prereqs; *p; p++) {
            char buf[128];
            assert_true(strlen(*p) < sizeof buf);
            strcpy(buf, *p);
            char *save = NULL;
            for (char *alt = strtok_r(buf, "|", &save); alt; alt = strtok_r(NULL, "|", &save)) {
                int k = connect_task_index(alt);
                if (k < 0)
                    fail_msg("task %s: prerequisite %s is not a task", connect_tasks[i].id, alt);
                assert_int_not_equal(k, (int)i);
            }
        }
    }
}

/* every prerequisite comes earlier in the table: the table is in a
 * topological order, so the graph has no cycle */
static void test_table_is_a_dag(void **state)
{
    for (size_t i = 0; i < connect_tasks_count; i++) {
        for (const char *const *p = connect_tasks[i].prereqs; *p; p++) {
            char buf[128];
            strcpy(buf, *p);
            char *save = NULL;
            for (char *alt = strtok_r(buf, "|", &save); alt; alt = strtok_r(NULL, "|", &save))
                if (connect_task_index(alt) >= (int)i)
                    fail_msg("task %s needs %s, which comes later: a cycle is possible",
                             connect_tasks[i].id, alt);
        }
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(connect_tasks[i].id, connect_tasks[j].id);
    }
}

/* DESIGN.md itself, when it is beside the source tree (../shared) */
static void test_table_matches_design_md(void **state)
{
    FILE *f = fopen(MOAT_SOURCE_ROOT "/../shared/DESIGN.md", "r");
    if (f == NULL) {
        skip();
        return;
    }
    char line[4096];
    size_t seen = 0;
    bool in_section = false;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "## 1.", 5) == 0)
            in_section = true;
        else if (strncmp(line, "## ", 3) == 0)
            in_section = false;
        if (!in_section || line[0] != '|' || strncmp(line, "| id", 4) == 0 ||
            strncmp(line, "|---", 4) == 0)
            continue;
        /* | id | task | prerequisites | ... */
        char *cols[5] = { 0 };
        char *save = NULL, *c = strtok_r(line + 1, "|", &save);
        for (int k = 0; k < 5 && c; k++, c = strtok_r(NULL, "|", &save)) {
            while (*c == ' ')
                c++;
            char *e = c + strlen(c);
            while (e > c && e[-1] == ' ')
                *--e = '\0';
            cols[k] = c;
        }
        assert_non_null(cols[2]);
        const struct connect_task *t = connect_task_find(cols[0]);
        if (t == NULL)
            fail_msg("DESIGN.md task %s is not in the table", cols[0]);
        assert_string_equal(t->title, cols[1]);
        /* "mx (optional)", "domains (inbound recommended)", "directory or users",
         * "mx, and every mandatory task done; MX pointing ..." */
        char pre[512] = "", want[512] = "";
        bool optional = strstr(cols[2], "(optional)") != NULL;
        snprintf(pre, sizeof pre, "%s", cols[2]);
        char *cut;
        if ((cut = strchr(pre, '(')) != NULL)
            *cut = '\0';
        if ((cut = strstr(pre, ", and every")) != NULL)
            *cut = '\0';
        if ((cut = strchr(pre, ';')) != NULL)
            *cut = '\0';
        if (strcmp(pre, "—") == 0)
            pre[0] = '\0';
        char *s2 = NULL;
        for (char *p = strtok_r(pre, ",", &s2); p; p = strtok_r(NULL, ",", &s2)) {
            while (*p == ' ')
                p++;
            char *e = p + strlen(p);
            while (e > p && e[-1] == ' ')
                *--e = '\0';
            char *or = strstr(p, " or ");
            if (want[0])
                strcat(want, ",");
            if (or) {
                *or = '\0';
                strcat(want, p);
                strcat(want, "|");
                strcat(want, or + 4);
            } else {
                strcat(want, p);
            }
        }
        char got[512];
        prereqs_joined(t, got, sizeof got);
        if (strcmp(got, want) != 0)
            fail_msg("task %s: DESIGN.md says \"%s\", the table \"%s\"", t->id, want, got);
        assert_int_equal(t->optional, optional);
        seen++;
    }
    fclose(f);
    assert_int_equal(seen, connect_tasks_count);
}

/* --- derivation --- */

static void all(enum connect_state *rec, enum connect_state s)
{
    for (size_t i = 0; i < connect_tasks_count; i++)
        rec[i] = s;
}

static void set(enum connect_state *rec, const char *id, enum connect_state s)
{
    int i = connect_task_index(id);
    assert_true(i >= 0);
    rec[i] = s;
}

static const struct connect_view *view(const struct connect_view *v, const char *id)
{
    return &v[connect_task_index(id)];
}

static bool blocked_by(const struct connect_view *v, const char *what)
{
    for (size_t i = 0; i < v->n_blocked; i++)
        if (strcmp(v->blocked_by[i], what) == 0)
            return true;
    return false;
}

static void test_derive_fresh_install(void **state)
{
    enum connect_state rec[CONNECT_MAX_TASKS] = { 0 };
    struct connect_view v[CONNECT_MAX_TASKS];
    struct connect_lockdown_facts f = { .now = NOW, .mx_hours = 72 };
    all(rec, CONNECT_TODO);
    connect_derive(rec, &f, v);
    assert_int_equal(view(v, "organisation")->state, CONNECT_TODO);
    assert_int_equal(view(v, "organisation")->n_blocked, 0);
    for (size_t i = 1; i < connect_tasks_count; i++)
        assert_int_equal(v[i].state, CONNECT_LOCKED);
    assert_string_equal(view(v, "domains")->blocked_by[0], "organisation");
    assert_non_null(strstr(view(v, "domains")->blocked_message, "Describe your organisation"));
    assert_string_equal(view(v, "recipient_validation")->blocked_by[0], "directory|users");
    assert_non_null(strstr(view(v, "recipient_validation")->blocked_message, " or "));
    /* lockdown: mx first, then every mandatory task, then the MX age */
    const struct connect_view *l = view(v, "lockdown");
    assert_string_equal(l->blocked_by[0], "mx");
    assert_true(blocked_by(l, "organisation"));
    assert_true(blocked_by(l, "journaling"));
    assert_false(blocked_by(l, "forwarding"));    /* optional */
    assert_false(blocked_by(l, "lockdown"));
    assert_true(blocked_by(l, "mx_age"));
}

static void test_derive_unlocks_step_by_step(void **state)
{
    enum connect_state rec[CONNECT_MAX_TASKS] = { 0 };
    struct connect_view v[CONNECT_MAX_TASKS];
    struct connect_lockdown_facts f = { .now = NOW, .mx_hours = 72 };
    all(rec, CONNECT_TODO);
    set(rec, "organisation", CONNECT_DONE);
    connect_derive(rec, &f, v);
    assert_int_equal(view(v, "domains")->state, CONNECT_TODO);
    assert_int_equal(view(v, "inbound")->state, CONNECT_LOCKED);

    /* a prerequisite waiting or in attention is not done */
    set(rec, "domains", CONNECT_WAITING);
    connect_derive(rec, &f, v);
    assert_int_equal(view(v, "domains")->state, CONNECT_WAITING);
    assert_int_equal(view(v, "inbound")->state, CONNECT_LOCKED);
    set(rec, "domains", CONNECT_ATTENTION);
    connect_derive(rec, &f, v);
    assert_int_equal(view(v, "inbound")->state, CONNECT_LOCKED);

    set(rec, "domains", CONNECT_DONE);
    connect_derive(rec, &f, v);
    assert_int_equal(view(v, "inbound")->state, CONNECT_TODO);
    assert_int_equal(view(v, "recipient_validation")->state, CONNECT_LOCKED);
    assert_int_equal(view(v, "journaling")->state, CONNECT_LOCKED);   /* needs inbound too */

    /* "directory or users": either one */
    set(rec, "users", CONNECT_DONE);
    connect_derive(rec, &f, v);
    assert_int_equal(view(v, "recipient_validation")->state, CONNECT_TODO);
    assert_int_equal(view(v, "admins")->state, CONNECT_TODO);
    set(rec, "users", CONNECT_TODO);
    set(rec, "directory", CONNECT_SKIPPED);   /* a skipped prerequisite counts as satisfied */
    connect_derive(rec, &f, v);
    assert_int_equal(view(v, "recipient_validation")->state, CONNECT_TODO);

    /* mx needs inbound and recipient_validation */
    set(rec, "inbound", CONNECT_DONE);
    connect_derive(rec, &f, v);
    assert_int_equal(view(v, "mx")->state, CONNECT_LOCKED);
    assert_string_equal(view(v, "mx")->blocked_by[0], "recipient_validation");
    assert_int_equal(view(v, "mx")->n_blocked, 1);
    set(rec, "recipient_validation", CONNECT_DONE);
    connect_derive(rec, &f, v);
    assert_int_equal(view(v, "mx")->state, CONNECT_TODO);
    assert_int_equal(view(v, "antispoof_bypass")->state, CONNECT_LOCKED);
}

/* a task checked before its prerequisites are done shows what it recorded */
static void test_derive_worked_on_early(void **state)
{
    enum connect_state rec[CONNECT_MAX_TASKS] = { 0 };
    struct connect_view v[CONNECT_MAX_TASKS];
    all(rec, CONNECT_TODO);
    set(rec, "mx", CONNECT_WAITING);
    connect_derive(rec, NULL, v);
    assert_int_equal(view(v, "mx")->state, CONNECT_WAITING);
    assert_true(blocked_by(view(v, "mx"), "inbound"));
    set(rec, "mx", CONNECT_DONE);
    connect_derive(rec, NULL, v);
    assert_int_equal(view(v, "mx")->state, CONNECT_DONE);
}

static void test_derive_lockdown_rule(void **state)
{
    enum connect_state rec[CONNECT_MAX_TASKS] = { 0 };
    struct connect_view v[CONNECT_MAX_TASKS];
    struct connect_lockdown_facts f = { .now = NOW, .mx_hours = 72 };
    all(rec, CONNECT_DONE);
    set(rec, "lockdown", CONNECT_TODO);
    set(rec, "forwarding", CONNECT_TODO);      /* optional tasks do not count */
    set(rec, "admins", CONNECT_TODO);

    f.mx_only_moat_since = 0;                  /* MX not only at Moat */
    connect_derive(rec, &f, v);
    assert_int_equal(view(v, "lockdown")->state, CONNECT_LOCKED);
    assert_int_equal(view(v, "lockdown")->n_blocked, 1);
    assert_string_equal(view(v, "lockdown")->blocked_by[0], "mx_age");
    assert_non_null(strstr(view(v, "lockdown")->blocked_message, "72 hours"));

    f.mx_only_moat_since = NOW - 71 * 3600;    /* not long enough */
    connect_derive(rec, &f, v);
    assert_int_equal(view(v, "lockdown")->state, CONNECT_LOCKED);
    assert_non_null(strstr(view(v, "lockdown")->blocked_message, "1 h 0 min to go"));

    f.mx_only_moat_since = NOW - 72 * 3600;
    connect_derive(rec, &f, v);
    assert_int_equal(view(v, "lockdown")->state, CONNECT_TODO);
    assert_int_equal(view(v, "lockdown")->n_blocked, 0);

    /* one mandatory task not done blocks it, whatever the MX age */
    set(rec, "journaling", CONNECT_ATTENTION);
    connect_derive(rec, &f, v);
    assert_int_equal(view(v, "lockdown")->state, CONNECT_LOCKED);
    assert_string_equal(view(v, "lockdown")->blocked_by[0], "journaling");

    /* the hours are a setting: 0 = as soon as mx is done */
    set(rec, "journaling", CONNECT_DONE);
    f.mx_hours = 0;
    f.mx_only_moat_since = NOW;
    connect_derive(rec, &f, v);
    assert_int_equal(view(v, "lockdown")->state, CONNECT_TODO);
}

/* --- transitions --- */

static const struct connect_schedule sched = { 60, 1800, 21600 };

static struct connect_step step(enum connect_state cur, int64_t backoff, enum connect_outcome o)
{
    struct connect_step s;
    connect_apply_outcome(&sched, cur, backoff, o, NOW, &s);
    return s;
}

static void test_transitions(void **state)
{
    struct connect_step s;
    /* pass: done from anywhere, re-verified later */
    static const enum connect_state any[] = { CONNECT_TODO, CONNECT_IN_PROGRESS, CONNECT_WAITING,
                                              CONNECT_DONE, CONNECT_SKIPPED, CONNECT_ATTENTION };
    for (size_t i = 0; i < sizeof any / sizeof any[0]; i++) {
        s = step(any[i], 240, CONNECT_PASS);
        assert_int_equal(s.state, CONNECT_DONE);
        assert_int_equal(s.next_check, NOW + 21600);
        assert_int_equal(s.backoff, 0);
    }
    /* pending: waiting, first re-check after a minute */
    s = step(CONNECT_TODO, 0, CONNECT_PENDING);
    assert_int_equal(s.state, CONNECT_WAITING);
    assert_int_equal(s.backoff, 60);
    assert_int_equal(s.next_check, NOW + 60);
    s = step(CONNECT_IN_PROGRESS, 0, CONNECT_PENDING);
    assert_int_equal(s.state, CONNECT_WAITING);
    /* fail: verified wrong */
    s = step(CONNECT_TODO, 0, CONNECT_FAIL);
    assert_int_equal(s.state, CONNECT_IN_PROGRESS);
    assert_int_equal(s.next_check, 0);
    s = step(CONNECT_WAITING, 240, CONNECT_FAIL);
    assert_int_equal(s.state, CONNECT_IN_PROGRESS);
    /* a done task whose (confirmed) check fails needs attention, and is watched */
    s = step(CONNECT_DONE, 0, CONNECT_FAIL);
    assert_int_equal(s.state, CONNECT_ATTENTION);
    assert_int_equal(s.next_check, NOW + 60);
    s = step(CONNECT_DONE, 0, CONNECT_PENDING);
    assert_int_equal(s.state, CONNECT_ATTENTION);
    s = step(CONNECT_ATTENTION, 60, CONNECT_FAIL);
    assert_int_equal(s.state, CONNECT_ATTENTION);
    assert_int_equal(s.backoff, 120);
    /* skipped stays skipped unless the check passes */
    s = step(CONNECT_SKIPPED, 0, CONNECT_FAIL);
    assert_int_equal(s.state, CONNECT_SKIPPED);
    s = step(CONNECT_SKIPPED, 0, CONNECT_PENDING);
    assert_int_equal(s.state, CONNECT_SKIPPED);
    /* a derived "locked" is never recorded: it counts as todo */
    s = step(CONNECT_LOCKED, 0, CONNECT_PENDING);
    assert_int_equal(s.state, CONNECT_WAITING);
}

/* unknown (resolver error, timeout) never changes a state, least of all back */
static void test_unknown_never_moves_a_task_back(void **state)
{
    static const enum connect_state any[] = { CONNECT_TODO, CONNECT_IN_PROGRESS, CONNECT_WAITING,
                                              CONNECT_DONE, CONNECT_SKIPPED, CONNECT_ATTENTION };
    for (size_t i = 0; i < sizeof any / sizeof any[0]; i++) {
        struct connect_step s = step(any[i], 120, CONNECT_UNKNOWN);
        assert_int_equal(s.state, any[i]);
        s = step(any[i], 120, CONNECT_UNAVAILABLE);
        assert_int_equal(s.state, any[i]);
        assert_true(s.keep_schedule);
    }
    /* a watched task is tried again later; an unwatched one is left alone */
    struct connect_step s = step(CONNECT_WAITING, 120, CONNECT_UNKNOWN);
    assert_int_equal(s.next_check, NOW + 240);
    s = step(CONNECT_DONE, 0, CONNECT_UNKNOWN);
    assert_int_equal(s.state, CONNECT_DONE);
    assert_int_equal(s.next_check, NOW + 60);
    s = step(CONNECT_TODO, 0, CONNECT_UNKNOWN);
    assert_int_equal(s.next_check, 0);
}

/* 1 min, 2, 4, 8, 16, then 30 min for good */
static void test_backoff_schedule(void **state)
{
    static const int64_t want[] = { 60, 120, 240, 480, 960, 1800, 1800, 1800 };
    enum connect_state cur = CONNECT_TODO;
    int64_t backoff = 0;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        struct connect_step s = step(cur, backoff, CONNECT_PENDING);
        assert_int_equal(s.state, CONNECT_WAITING);
        assert_int_equal(s.backoff, want[i]);
        assert_int_equal(s.next_check, NOW + want[i]);
        cur = s.state;
        backoff = s.backoff;
    }
    assert_int_equal(connect_backoff_next(&sched, 0), 60);
    assert_int_equal(connect_backoff_next(&sched, 1000), 1800);
    /* a pass resets the backoff; the next pending starts at a minute again */
    struct connect_step s = step(CONNECT_WAITING, 1800, CONNECT_PASS);
    s = step(CONNECT_IN_PROGRESS, s.backoff, CONNECT_PENDING);
    assert_int_equal(s.backoff, 60);
}

static void test_names(void **state)
{
    for (int s = CONNECT_LOCKED; s <= CONNECT_ATTENTION; s++) {
        enum connect_state back;
        assert_int_equal(connect_state_parse(connect_state_name((enum connect_state)s), &back), 0);
        assert_int_equal(back, s);
    }
    for (int o = CONNECT_PASS; o <= CONNECT_UNAVAILABLE; o++) {
        enum connect_outcome back;
        assert_int_equal(connect_outcome_parse(connect_outcome_name((enum connect_outcome)o),
                                               &back), 0);
        assert_int_equal(back, o);
    }
    enum connect_state x;
    assert_int_equal(connect_state_parse("failed", &x), -1);
}

/* --- the engine on a real store --- */

struct fixture {
    char dir[64];
    char db[128];
    struct store *st;
    struct connect *c;
    struct auth_principal who;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    struct error err = {0};
    snprintf(f->dir, sizeof f->dir, "/tmp/i4c-test-connect-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->db, sizeof f->db, "%s/moat.db", f->dir);
    f->st = store_open(f->db, &err);
    if (f->st == NULL)
        fail_msg("%s", err.msg);
    struct connect_config cfg = { .database = f->db, .recheck_min = 1, .recheck_max = 4,
                                  .reverify_interval = 3600, .lockdown_mx_hours = 72 };
    f->c = connect_create(&cfg, &err);
    if (f->c == NULL)
        fail_msg("%s", err.msg);
    snprintf(f->who.name, sizeof f->who.name, "ann");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    connect_free(f->c);
    store_close(f->st);
    char p[160];
    const char *files[] = { "moat.db", "moat.db-wal", "moat.db-shm" };
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", f->dir, files[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static json_t *task_of(json_t *overview, const char *id)
{
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(overview, "tasks"), i, t)
        if (strcmp(json_string_value(json_object_get(t, "id")), id) == 0)
            return t;
    return NULL;
}

static const char *state_in(struct fixture *f, const char *id)
{
    static char out[32];
    struct error err = {0};
    json_t *o = connect_overview(f->c, f->st, &err);
    assert_non_null(o);
    snprintf(out, sizeof out, "%s", json_string_value(json_object_get(task_of(o, id), "state")));
    json_decref(o);
    return out;
}

static void test_engine_overview_fresh(void **state)
{
    struct fixture *f = *state;
    struct error err = {0};
    json_t *o = connect_overview(f->c, f->st, &err);
    assert_non_null(o);
    json_t *tasks = json_object_get(o, "tasks");
    assert_int_equal(json_array_size(tasks), connect_tasks_count);
    for (size_t i = 0; i < connect_tasks_count; i++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(tasks, i), "id")),
                            connect_tasks[i].id);
    assert_string_equal(state_in(f, "organisation"), "todo");
    json_t *mx = task_of(o, "mx");
    assert_string_equal(json_string_value(json_object_get(mx, "state")), "locked");
    assert_int_equal(json_array_size(json_object_get(mx, "blocked_by")), 2);
    assert_true(json_is_null(json_object_get(mx, "last_check")));
    assert_non_null(json_string_value(json_object_get(mx, "next_step")));
    assert_int_equal(json_array_size(json_object_get(o, "warnings")), 0);
    json_decref(o);

    json_t *d = connect_task_detail(f->c, f->st, "recipient_validation", &err);
    assert_non_null(d);
    json_t *pre = json_array_get(json_object_get(d, "prerequisites"), 0);
    assert_string_equal(json_string_value(json_object_get(pre, "requires")), "directory|users");
    assert_int_equal(json_array_size(json_object_get(pre, "any_of")), 2);
    assert_true(json_is_false(json_object_get(pre, "satisfied")));
    json_decref(d);
    assert_null(connect_task_detail(f->c, f->st, "nonesuch", &err));
    assert_string_equal(err.field, "task");
}

static void test_engine_organisation_check(void **state)
{
    struct fixture *f = *state;
    struct error err = {0};

    /* nothing filled in: fail, naming what is missing */
    json_t *r = connect_task_check(f->c, f->st, "organisation", &f->who, &err);
    assert_non_null(r);
    json_t *res = json_object_get(r, "result");
    assert_string_equal(json_string_value(json_object_get(res, "outcome")), "fail");
    assert_non_null(strstr(json_string_value(json_object_get(res, "message")), "environment"));
    assert_string_equal(json_string_value(json_object_get(r, "state")), "in_progress");
    assert_string_equal(json_string_value(json_object_get(r, "changed_by")), "ann");
    json_decref(r);

    /* partly filled in */
    json_t *patch = json_pack("{s:s, s:s, s:s, s:[s]}", "environment", "microsoft365",
                              "contact_name", "Ann Admin", "contact_email", "ann@example.net",
                              "public_hosts", "MX1.Example.com.");
    json_t *before = NULL, *after = NULL;
    assert_int_equal(connect_org_update(f->st, patch, "ann", &before, &after, &err), 0);
    json_decref(patch);
    assert_string_equal(json_string_value(json_array_get(json_object_get(after, "public_hosts"), 0)),
                        "mx1.example.com");
    assert_string_equal(json_string_value(json_object_get(before, "environment")), "");
    json_decref(before);
    json_decref(after);
    r = connect_task_check(f->c, f->st, "organisation", &f->who, &err);
    res = json_object_get(r, "result");
    const char *msg = json_string_value(json_object_get(res, "message"));
    assert_non_null(strstr(msg, "public IP"));
    assert_null(strstr(msg, "environment"));
    json_decref(r);

    patch = json_pack("{s:[s, s]}", "public_ips", "192.0.2.25", "2001:DB8::25");
    assert_int_equal(connect_org_update(f->st, patch, "bob", NULL, NULL, &err), 0);
    json_decref(patch);
    r = connect_task_check(f->c, f->st, "organisation", NULL, &err);
    assert_non_null(r);
    assert_string_equal(json_string_value(json_object_get(json_object_get(r, "result"), "outcome")),
                        "pass");
    assert_string_equal(json_string_value(json_object_get(r, "state")), "done");
    assert_string_equal(json_string_value(json_object_get(r, "changed_by")), "timer");
    assert_true(json_is_integer(json_object_get(r, "next_check")));
    json_decref(r);
    assert_string_equal(state_in(f, "organisation"), "done");
    assert_string_equal(state_in(f, "domains"), "todo");   /* unlocked */

    json_t *org = connect_org_get(f->st, &err);
    assert_string_equal(json_string_value(json_array_get(json_object_get(org, "public_ips"), 1)),
                        "2001:db8::25");
    assert_string_equal(json_string_value(json_object_get(org, "updated_by")), "bob");
    json_decref(org);

    /* the state survives a new engine (persisted) */
    struct connect_config cfg = { .database = f->db };
    struct connect *c2 = connect_create(&cfg, &err);
    json_t *d = connect_task_detail(c2, f->st, "organisation", &err);
    assert_string_equal(json_string_value(json_object_get(d, "state")), "done");
    assert_string_equal(json_string_value(json_object_get(json_object_get(d, "last_check"),
                                                          "outcome")), "pass");
    json_decref(d);
    connect_free(c2);
}

static void test_engine_org_validation(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *json;
        const char *field;
    } bad[] = {
        { "{\"environment\": \"lotus-notes\"}", "environment" },
        { "{\"environment\": 3}", "environment" },
        { "{\"contact_email\": \"not an address\"}", "contact_email" },
        { "{\"contact_email\": \"a@localhost\"}", "contact_email" },
        { "{\"contact_phone\": \"call me\"}", "contact_phone" },
        { "{\"contact_name\": \"a\\u0007b\"}", "contact_name" },
        { "{\"public_hosts\": \"mx1.example.com\"}", "public_hosts" },
        { "{\"public_hosts\": [\"mx1\"]}", "public_hosts" },
        { "{\"public_hosts\": [\"a.example.com\", \"A.example.com\"]}", "public_hosts" },
        { "{\"public_ips\": [\"192.0.2.300\"]}", "public_ips" },
        { "{\"public_ips\": [1]}", "public_ips" },
        { "{\"probe_source\": \"example.com\"}", "probe_source" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct error err = {0};
        json_t *p = json_loads(bad[i].json, 0, NULL);
        assert_non_null(p);
        if (connect_org_update(f->st, p, "ann", NULL, NULL, &err) == 0)
            fail_msg("%s was accepted", bad[i].json);
        assert_string_equal(err.field, bad[i].field);
        json_decref(p);
    }
    /* nothing was changed by the refused patches */
    struct error err = {0};
    json_t *org = connect_org_get(f->st, &err);
    assert_string_equal(json_string_value(json_object_get(org, "environment")), "");
    json_decref(org);
    /* clearing a list and the probe source */
    json_t *p = json_pack("{s:[], s:s}", "public_ips", "probe_source", "");
    assert_int_equal(connect_org_update(f->st, p, "ann", NULL, NULL, &err), 0);
    json_decref(p);
}

static void test_engine_skip_rules(void **state)
{
    struct fixture *f = *state;
    struct error err = {0};
    /* mandatory tasks cannot be skipped */
    static const char *const mandatory[] = { "organisation", "domains", "mx", "inbound",
                                             "lockdown", "directory" };
    for (size_t i = 0; i < sizeof mandatory / sizeof mandatory[0]; i++) {
        memset(&err, 0, sizeof err);
        assert_int_equal(connect_task_skip(f->c, f->st, mandatory[i], &f->who, &err), -1);
        assert_string_equal(err.field, "task");
        assert_non_null(strstr(err.msg, "mandatory"));
    }
    assert_int_equal(connect_task_skip(f->c, f->st, "nonesuch", &f->who, &err), -1);
    /* optional ones can, even while locked */
    assert_int_equal(connect_task_skip(f->c, f->st, "forwarding", &f->who, &err), 0);
    assert_string_equal(state_in(f, "forwarding"), "skipped");
    assert_int_equal(connect_task_skip(f->c, f->st, "forwarding", &f->who, &err), 0);
    /* lockdown is optional for a hybrid environment (DESIGN.md 1) */
    json_t *p = json_pack("{s:s}", "environment", "hybrid");
    assert_int_equal(connect_org_update(f->st, p, "ann", NULL, NULL, &err), 0);
    json_decref(p);
    assert_int_equal(connect_task_skip(f->c, f->st, "lockdown", &f->who, &err), 0);
    assert_string_equal(state_in(f, "lockdown"), "skipped");
}

/* tasks whose checks come later: unavailable, and nothing moves */
static void test_engine_later_tasks(void **state)
{
    struct fixture *f = *state;
    struct error err = {0};
    json_t *r = connect_task_check(f->c, f->st, "authentication", &f->who, &err);
    assert_non_null(r);
    json_t *res = json_object_get(r, "result");
    assert_string_equal(json_string_value(json_object_get(res, "outcome")), "unavailable");
    assert_non_null(strstr(json_string_value(json_object_get(res, "message")), "later issue"));
    assert_string_equal(json_string_value(json_object_get(r, "state")), "locked");
    assert_true(json_is_false(json_object_get(r, "checkable")));
    assert_true(json_array_size(json_object_get(r, "instructions")) > 0);
    json_decref(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_matches_expected),
        cmocka_unit_test(test_table_every_prereq_names_a_task),
        cmocka_unit_test(test_table_is_a_dag),
        cmocka_unit_test(test_table_matches_design_md),
        cmocka_unit_test(test_derive_fresh_install),
        cmocka_unit_test(test_derive_unlocks_step_by_step),
        cmocka_unit_test(test_derive_worked_on_early),
        cmocka_unit_test(test_derive_lockdown_rule),
        cmocka_unit_test(test_transitions),
        cmocka_unit_test(test_unknown_never_moves_a_task_back),
        cmocka_unit_test(test_backoff_schedule),
        cmocka_unit_test(test_names),
        cmocka_unit_test_setup_teardown(test_engine_overview_fresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_engine_organisation_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_engine_org_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_engine_skip_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_engine_later_tasks, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
