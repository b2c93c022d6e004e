/*
 * cli_connect.c - `moat connect ...` (the onboarding checklist, one task,
 * its check, skip, its input) and `moat org ...` (the organisation), through
 * the API (/api/v1/connect..., /api/v1/organisation).
 *
 * The checklist is one line per task: a state marker, the state, the task
 * id and title, then what blocks it or the next step; warnings (domains
 * trusted without proof) come first.  Everything printed from the daemon
 * goes through cli_safe, so a hostile string cannot drive the terminal.
 */
#include <stdlib.h>
#include <string.h>
#include "cli.h"

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static const char *marker(const char *state)
{
    static const struct { const char *state, *mark; } marks[] = {
        { "done", "[x]" }, { "skipped", "[-]" }, { "waiting", "[~]" }, { "attention", "[!]" },
        { "in_progress", "[>]" }, { "todo", "[ ]" }, { "locked", "[#]" },
    };
    for (size_t i = 0; state && i < sizeof marks / sizeof marks[0]; i++)
        if (strcmp(marks[i].state, state) == 0)
            return marks[i].mark;
    return "[?]";
}

/* blocked_text - "inbound, directory or users, MX at Moat for the required hours" */
static void blocked_text(json_t *blocked, struct buf *b)
{
    size_t i;
    json_t *v;
    json_array_foreach(blocked, i, v) {
        const char *s = json_string_value(v);
        if (s == NULL)
            continue;
        if (i > 0)
            buf_append_str(b, ", ");
        if (strcmp(s, "mx_age") == 0) {
            buf_append_str(b, "MX pointing only at Moat long enough");
            continue;
        }
        for (const char *p = s; *p; p++) {
            if (*p == '|')
                buf_append_str(b, " or ");
            else
                buf_append(b, p, 1);
        }
    }
}

static void print_task_line(json_t *t)
{
    struct buf rest;
    buf_init(&rest);
    const char *state = jstr(t, "state");
    json_t *blocked = json_object_get(t, "blocked_by");
    if (state && strcmp(state, "locked") == 0 && json_array_size(blocked) > 0) {
        buf_append_str(&rest, "(blocked by: ");
        blocked_text(blocked, &rest);
        buf_append_str(&rest, ")");
    } else {
        buf_append_str(&rest, jstr(t, "next_step") ? jstr(t, "next_step") : "");
        if (json_array_size(blocked) > 0) {
            buf_append_str(&rest, " (still blocked by: ");
            blocked_text(blocked, &rest);
            buf_append_str(&rest, ")");
        }
    }
    char *id = cli_safe(jstr(t, "id")), *title = cli_safe(jstr(t, "title"));
    char *st = cli_safe(state), *r = cli_safe(buf_cstr(&rest));
    char shown[160];
    snprintf(shown, sizeof shown, "%s%s", title,
             json_is_true(json_object_get(t, "optional")) ? " (optional)" : "");
    printf("%s %-11s %-21s %-46s %s\n", marker(state), st, id, shown, r);
    free(id);
    free(title);
    free(st);
    free(r);
    buf_free(&rest);
}

static void print_warnings(json_t *warnings)
{
    size_t i;
    json_t *w;
    json_array_foreach(warnings, i, w) {
        char *m = cli_safe(jstr(w, "message"));
        printf("WARNING: %s\n", m);
        free(m);
    }
    if (json_array_size(warnings) > 0)
        printf("\n");
}

int cli_connect_list(struct cli_ctx *ctx)
{
    json_t *r = cli_api(ctx, "GET", "/api/v1/connect", NULL, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    print_warnings(json_object_get(r, "warnings"));
    json_t *sum = json_object_get(r, "summary");
    printf("Connect: %lld of %lld tasks done or skipped; %lld of %lld mandatory tasks done.\n\n",
           (long long)json_integer_value(json_object_get(sum, "done_or_skipped")),
           (long long)json_integer_value(json_object_get(sum, "total")),
           (long long)json_integer_value(json_object_get(sum, "mandatory_done")),
           (long long)json_integer_value(json_object_get(sum, "mandatory")));
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(r, "tasks"), i, t)
        print_task_line(t);
    printf("\nOne task in full: moat connect show TASK; verify it now: moat connect check TASK\n");
    json_decref(r);
    return CLI_OK;
}

static char *task_path(const char *task, const char *suffix)
{
    return cli_item_path("/api/v1/connect", task, suffix);
}

/* safe_multiline - cli_safe that keeps line breaks and tabs (artefacts are scripts) */
static char *safe_multiline(const char *s)
{
    char *out = xstrdup(s ? s : "");
    for (unsigned char *p = (unsigned char *)out; *p; p++)
        if ((*p < 0x20 && *p != '\n' && *p != '\t') || *p == 0x7f)
            *p = '?';
    return out;
}

static void print_indented(const char *text, const char *indent)
{
    char *s = safe_multiline(text);
    char *save = NULL;
    for (char *line = strtok_r(s, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        printf("%s%s\n", indent, line);
    free(s);
}

static void print_last_check(json_t *lc)
{
    if (!json_is_object(lc)) {
        printf("Last check:  never\n");
        return;
    }
    char when[32];
    cli_format_time(when, sizeof when, json_integer_value(json_object_get(lc, "at")));
    char *o = cli_safe(jstr(lc, "outcome")), *m = cli_safe(jstr(lc, "message"));
    printf("Last check:  %s, %s: %s\n", when, o, m);
    free(o);
    free(m);
    json_t *d = json_object_get(lc, "details");
    if (d != NULL && !json_is_null(d) && json_object_size(d) + json_array_size(d) > 0) {
        char *text = json_dumps(d, JSON_INDENT(2) | JSON_SORT_KEYS);
        if (text != NULL) {
            printf("Details:\n");
            print_indented(text, "  ");
            free(text);
        }
    }
}

/* print_detail - one task in full */
static void print_detail(json_t *d)
{
    char *title = cli_safe(jstr(d, "title")), *id = cli_safe(jstr(d, "id"));
    char *st = cli_safe(jstr(d, "state"));
    printf("%s %s (%s)%s\n", marker(jstr(d, "state")), title, id,
           json_is_true(json_object_get(d, "optional")) ? ", optional" : "");
    printf("State:       %s", st);
    const char *rec = jstr(d, "recorded_state");
    if (rec && jstr(d, "state") && strcmp(rec, jstr(d, "state")) != 0) {
        char *r = cli_safe(rec);
        printf(" (recorded: %s)", r);
        free(r);
    }
    json_t *by = json_object_get(d, "changed_by");
    if (json_is_string(by) && json_string_length(by) > 0) {
        char when[32];
        cli_format_time(when, sizeof when, json_integer_value(json_object_get(d, "changed")));
        char *b = cli_safe(json_string_value(by));
        printf(", since %s by %s", when, b);
        free(b);
    }
    printf("\n");
    free(title);
    free(id);
    free(st);
    if (jstr(d, "blocked_message")) {
        char *m = cli_safe(jstr(d, "blocked_message"));
        printf("Blocked:     %s\n", m);
        free(m);
    }
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(d, "prerequisites"), i, p) {
        struct buf b;
        buf_init(&b);
        size_t k;
        json_t *a;
        json_array_foreach(json_object_get(p, "any_of"), k, a)
            buf_printf(&b, "%s%s (%s)", k ? " or " : "", jstr(a, "id") ? jstr(a, "id") : "?",
                       jstr(a, "state") ? jstr(a, "state") : "?");
        char *s = cli_safe(buf_cstr(&b));
        printf("%s %s%s\n", i == 0 ? "Requires:   " : "            ", s,
               json_is_true(json_object_get(p, "satisfied")) ? "" : "  <- not done");
        free(s);
        buf_free(&b);
    }
    json_t *nc = json_object_get(d, "next_check");
    if (json_is_integer(nc)) {
        char when[32];
        cli_format_time(when, sizeof when, json_integer_value(nc));
        printf("Next check:  %s\n", when);
    }
    char *ns = cli_safe(jstr(d, "next_step"));
    printf("Next step:   %s\n", ns);
    free(ns);
    print_last_check(json_object_get(d, "last_check"));
    json_t *in = json_object_get(d, "input");
    if (json_object_size(in) > 0) {
        const char *k;
        json_t *v;
        printf("Input:\n");
        json_object_foreach(in, k, v) {
            char *ks = cli_safe(k), *vs = cli_safe(json_is_string(v) ? json_string_value(v) : "");
            printf("  %s = %s\n", ks, vs);
            free(ks);
            free(vs);
        }
    }
    json_t *steps = json_object_get(d, "instructions");
    if (json_array_size(steps) > 0) {
        printf("\nInstructions:\n");
        json_t *s;
        json_array_foreach(steps, i, s) {
            const char *text = json_string_value(s);
            if (text == NULL)
                text = jstr(s, "text");
            char *t = cli_safe(text);
            printf("  %zu. %s\n", i + 1, t);
            free(t);
        }
    }
    json_t *arts = json_object_get(d, "artefacts");
    json_t *a;
    json_array_foreach(arts, i, a) {
        char *t = cli_safe(jstr(a, "title")), *k = cli_safe(jstr(a, "kind"));
        printf("\n--- %s (%s) ---\n", t, k);
        free(t);
        free(k);
        print_indented(jstr(a, "content") ? jstr(a, "content") : "", "");
    }
    json_t *w;
    json_array_foreach(json_object_get(d, "warnings"), i, w) {
        char *m = cli_safe(jstr(w, "message"));
        printf("%sWARNING: %s\n", i == 0 ? "\n" : "", m);
        free(m);
    }
}

int cli_connect_show(struct cli_ctx *ctx)
{
    char *p = task_path(ctx->args[0], "");
    json_t *r = cli_api(ctx, "GET", p, NULL, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    print_detail(r);
    json_decref(r);
    return CLI_OK;
}

int cli_connect_check(struct cli_ctx *ctx)
{
    char *p = task_path(ctx->args[0], "/check");
    json_t *r = cli_api(ctx, "POST", p, NULL, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    json_t *res = json_object_get(r, "result");
    char *id = cli_safe(jstr(r, "id")), *o = cli_safe(jstr(res, "outcome"));
    char *st = cli_safe(jstr(r, "state")), *m = cli_safe(jstr(res, "message"));
    printf("%s: %s, now %s: %s\n", id, o, st, m);
    json_t *d = json_object_get(res, "details");
    if (d != NULL && !json_is_null(d) && json_object_size(d) + json_array_size(d) > 0) {
        char *text = json_dumps(d, JSON_INDENT(2) | JSON_SORT_KEYS);
        if (text != NULL) {
            print_indented(text, "  ");
            free(text);
        }
    }
    if (jstr(r, "state") && strcmp(jstr(r, "state"), "done") != 0) {
        char *ns = cli_safe(jstr(r, "next_step"));
        printf("Next step: %s\n", ns);
        free(ns);
    }
    free(id);
    free(o);
    free(st);
    free(m);
    json_decref(r);
    return CLI_OK;
}

int cli_connect_skip(struct cli_ctx *ctx)
{
    char *p = task_path(ctx->args[0], "/skip");
    json_t *r = cli_api(ctx, "POST", p, NULL, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    char *id = cli_safe(jstr(r, "id")), *st = cli_safe(jstr(r, "state"));
    printf("%s: %s\n", id, st);
    free(id);
    free(st);
    json_decref(r);
    return CLI_OK;
}

int cli_connect_input(struct cli_ctx *ctx)
{
    json_t *body = json_object();
    static const char *const opts[][2] = {
        { "test-address", "test_address" },
        { "test-recipient", "test_recipient" },
        { "test-sender", "test_sender" },
    };
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        if (cli_opt(ctx, opts[i][0]))
            json_object_set_new(body, opts[i][1], json_string(cli_opt(ctx, opts[i][0])));
    if (json_object_size(body) == 0) {
        json_decref(body);
        return cli_usage_error(ctx, "nothing to set: give --test-address (inbound) or "
                               "--test-recipient (outbound)");
    }
    char *p = task_path(ctx->args[0], "/input");
    json_t *r = cli_api(ctx, "PUT", p, body, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(json_incref(json_object_get(r, "input")));
        json_decref(r);
        return CLI_OK;
    }
    char *id = cli_safe(jstr(r, "id"));
    printf("%s: input recorded; run the check with: moat connect check %s\n", id, id);
    free(id);
    json_decref(r);
    return CLI_OK;
}

/* --- the organisation --- */

static void print_list(const char *label, json_t *a)
{
    struct buf b;
    buf_init(&b);
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
        buf_printf(&b, "%s%s", i ? ", " : "", json_string_value(v) ? json_string_value(v) : "");
    char *s = cli_safe(json_array_size(a) ? buf_cstr(&b) : "-");
    printf("%-15s %s\n", label, s);
    free(s);
    buf_free(&b);
}

static void print_field(const char *label, const char *v)
{
    char *s = cli_safe(v && v[0] ? v : "-");
    printf("%-15s %s\n", label, s);
    free(s);
}

static void print_org(json_t *o)
{
    print_field("Name:", jstr(o, "name"));
    print_field("Environment:", jstr(o, "environment"));
    print_field("Contact:", jstr(o, "contact_name"));
    print_field("Contact e-mail:", jstr(o, "contact_email"));
    print_field("Contact phone:", jstr(o, "contact_phone"));
    print_list("Public hosts:", json_object_get(o, "public_hosts"));
    print_list("Public IPs:", json_object_get(o, "public_ips"));
    print_field("Probe source:", jstr(o, "probe_source"));
    json_int_t up = json_integer_value(json_object_get(o, "updated"));
    if (up > 0) {
        char when[32];
        cli_format_time(when, sizeof when, up);
        char *by = cli_safe(jstr(o, "updated_by"));
        printf("%-15s %s by %s\n", "Updated:", when, by);
        free(by);
    }
}

int cli_org_show(struct cli_ctx *ctx)
{
    json_t *r = cli_api(ctx, "GET", "/api/v1/organisation", NULL, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    print_org(r);
    json_decref(r);
    return CLI_OK;
}

/* list_option - a repeatable option as a JSON array; a single "" clears the list */
static json_t *list_option(const struct cli_ctx *ctx, const char *name)
{
    const char *const *v;
    int n = cli_opt_all(ctx, name, &v);
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        if (!(n == 1 && v[i][0] == '\0'))
            json_array_append_new(a, json_string(v[i]));
    return a;
}

int cli_org_set(struct cli_ctx *ctx)
{
    static const struct { const char *opt, *field; } text[] = {
        { "name", "name" }, { "environment", "environment" }, { "contact-name", "contact_name" },
        { "contact-email", "contact_email" }, { "contact-phone", "contact_phone" },
        { "probe-source", "probe_source" },
    };
    json_t *body = json_object();
    for (size_t i = 0; i < sizeof text / sizeof text[0]; i++) {
        const char *v = cli_opt(ctx, text[i].opt);
        if (v != NULL) {
            json_t *s = json_string(v);
            if (s == NULL) {
                json_decref(body);
                return cli_usage_error(ctx, "--%s must be UTF-8 text", text[i].opt);
            }
            json_object_set_new(body, text[i].field, s);
        }
    }
    if (cli_flag(ctx, "public-host"))
        json_object_set_new(body, "public_hosts", list_option(ctx, "public-host"));
    if (cli_flag(ctx, "public-ip"))
        json_object_set_new(body, "public_ips", list_option(ctx, "public-ip"));
    if (json_object_size(body) == 0) {
        json_decref(body);
        return cli_usage_error(ctx, "nothing to change: give at least one option");
    }
    json_t *r = cli_api(ctx, "PATCH", "/api/v1/organisation", body, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    print_org(r);
    json_decref(r);
    /* the organisation task is re-checked by the daemon: say where it stands */
    json_t *t = cli_api(ctx, "GET", "/api/v1/connect/organisation", NULL, NULL, NULL);
    if (t != NULL) {
        json_t *lc = json_object_get(t, "last_check");
        char *st = cli_safe(jstr(t, "state")), *m = cli_safe(jstr(lc, "message"));
        printf("\nTask organisation: %s. %s\n", st, json_is_object(lc) ? m : "");
        free(st);
        free(m);
        json_decref(t);
    }
    return CLI_OK;
}
