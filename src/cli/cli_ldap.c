/*
 * cli_ldap.c - `moat directory show|set|test|preview|sync`: the LDAP /
 * Active Directory source and its sync, through the API
 * (/api/v1/directory/source, /test, /preview, /sync).
 *
 * `moat directory sync` starts the sync and follows it (GET
 * /api/v1/directory/sync every 250 ms) with a progress bar on a terminal,
 * then prints the outcome; it exits 1 when the sync failed or the safety
 * stop refused it.  The bind password is read from standard input
 * (--password-stdin), never from the command line, and never printed.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "cli.h"

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static void print_row(const char *label, const char *value)
{
    char *v = cli_safe(value && value[0] ? value : "-");
    printf("%-18s %s\n", label, v);
    free(v);
}

static void print_source(json_t *s)
{
    char num[64];
    print_row("configured", json_is_true(json_object_get(s, "configured")) ? "yes" : "no");
    print_row("preset", jstr(s, "preset"));
    print_row("url", jstr(s, "url"));
    print_row("fallback url", jstr(s, "fallback_url"));
    print_row("starttls", json_is_true(json_object_get(s, "starttls")) ? "yes" : "no");
    print_row("ca file", jstr(s, "ca_file"));
    print_row("bind dn", jstr(s, "bind_dn"));
    print_row("password", json_is_true(json_object_get(s, "password_set")) ? "set" : "not set");
    print_row("base dn", jstr(s, "base_dn"));
    print_row("filter", jstr(s, "filter"));
    print_row("group filter", jstr(s, "group_filter"));
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(s, "attributes"), key, v) {
        char label[64];
        snprintf(label, sizeof label, "attribute %s", key);
        print_row(label, json_string_value(v));
    }
    snprintf(num, sizeof num, "%lld", (long long)json_integer_value(json_object_get(s, "page_size")));
    print_row("page size", num);
    snprintf(num, sizeof num, "%lld s", (long long)json_integer_value(json_object_get(s, "timeout")));
    print_row("timeout", num);
    snprintf(num, sizeof num, "%lld",
             (long long)json_integer_value(json_object_get(s, "max_entries")));
    print_row("max entries", num);
    print_row("schedule", jstr(s, "schedule"));
    snprintf(num, sizeof num, "%.0f %%",
             json_number_value(json_object_get(s, "max_remove_share")) * 100);
    print_row("max removals", num);
}

int cli_directory_show(struct cli_ctx *ctx)
{
    json_t *r = cli_api(ctx, "GET", "/api/v1/directory/source", NULL, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    print_source(r);
    json_decref(r);
    return CLI_OK;
}

/* read_password - the first line of standard input, without its line break */
static char *read_password(void)
{
    char buf[4200];
    if (fgets(buf, sizeof buf, stdin) == NULL)
        return NULL;
    buf[strcspn(buf, "\r\n")] = '\0';
    char *p = xstrdup(buf);
    memset(buf, 0, sizeof buf);
    return p;
}

int cli_directory_set(struct cli_ctx *ctx)
{
    static const struct { const char *opt, *field; } text[] = {
        { "ldap-url", "url" }, { "fallback-url", "fallback_url" }, { "ca-file", "ca_file" },
        { "bind-dn", "bind_dn" }, { "base-dn", "base_dn" }, { "filter", "filter" },
        { "group-filter", "group_filter" }, { "preset", "preset" }, { "schedule", "schedule" },
    };
    static const struct { const char *opt, *field; } ints[] = {
        { "page-size", "page_size" }, { "timeout", "timeout" }, { "max-entries", "max_entries" },
    };
    json_t *body = json_object();
    for (size_t i = 0; i < sizeof text / sizeof text[0]; i++) {
        const char *v = cli_opt(ctx, text[i].opt);
        if (v == NULL)
            continue;
        json_t *s = json_string(v);
        if (s == NULL) {
            json_decref(body);
            return cli_usage_error(ctx, "--%s must be UTF-8 text", text[i].opt);
        }
        json_object_set_new(body, text[i].field, s);
    }
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        const char *v = cli_opt(ctx, ints[i].opt);
        if (v == NULL)
            continue;
        char *end;
        long long n = strtoll(v, &end, 10);
        if (*v == '\0' || *end != '\0') {
            json_decref(body);
            return cli_usage_error(ctx, "--%s needs a number", ints[i].opt);
        }
        json_object_set_new(body, ints[i].field, json_integer(n));
    }
    const char *share = cli_opt(ctx, "max-remove-share");
    if (share != NULL) {
        char *end;
        double d = strtod(share, &end);
        if (*share == '\0' || (*end != '\0' && strcmp(end, "%") != 0)) {
            json_decref(body);
            return cli_usage_error(ctx, "--max-remove-share is a share (0.10) or a percentage "
                                   "(10%%)");
        }
        json_object_set_new(body, "max_remove_share", json_real(*end == '%' ? d / 100 : d));
    }
    if (cli_flag(ctx, "starttls") && cli_flag(ctx, "no-starttls")) {
        json_decref(body);
        return cli_usage_error(ctx, "--starttls and --no-starttls contradict each other");
    }
    if (cli_flag(ctx, "starttls"))
        json_object_set_new(body, "starttls", json_true());
    if (cli_flag(ctx, "no-starttls"))
        json_object_set_new(body, "starttls", json_false());
    const char *const *attrs;
    int na = cli_opt_all(ctx, "attribute", &attrs);
    if (na > 0) {
        json_t *a = json_object();
        for (int i = 0; i < na; i++) {
            const char *eq = strchr(attrs[i], '=');
            if (eq == NULL || eq == attrs[i]) {
                json_decref(a);
                json_decref(body);
                return cli_usage_error(ctx, "--attribute is NAME=ATTRIBUTE (mail=mail, "
                                       "proxy_addresses=proxyAddresses, alias=, ...)");
            }
            char *name = xstrndup(attrs[i], (size_t)(eq - attrs[i]));
            json_object_set_new(a, name, json_string(eq + 1));
            free(name);
        }
        json_object_set_new(body, "attributes", a);
    }
    if (cli_flag(ctx, "password-stdin") && cli_flag(ctx, "clear-password")) {
        json_decref(body);
        return cli_usage_error(ctx, "--password-stdin and --clear-password contradict each other");
    }
    if (cli_flag(ctx, "clear-password"))
        json_object_set_new(body, "password", json_null());
    if (cli_flag(ctx, "password-stdin")) {
        if (isatty(STDIN_FILENO))
            fprintf(stderr, "Bind password: ");
        char *pw = read_password();
        if (pw == NULL) {
            json_decref(body);
            return cli_fail(ctx, "no password on standard input");
        }
        json_object_set_new(body, "password", json_string(pw));
        memset(pw, 0, strlen(pw));
        free(pw);
    }
    if (json_object_size(body) == 0) {
        json_decref(body);
        return cli_usage_error(ctx, "nothing to change: give at least one option");
    }
    json_t *r = cli_api(ctx, "PUT", "/api/v1/directory/source", body, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    print_source(r);
    printf("\nNext: moat directory test\n");
    json_decref(r);
    return CLI_OK;
}

static void print_check(const char *label, json_t *c, const char *okmsg)
{
    if (c == NULL)
        return;
    char *e = cli_safe(jstr(c, "error"));
    if (json_is_true(json_object_get(c, "ok")))
        printf("%-10s ok%s%s\n", label, okmsg ? ": " : "", okmsg ? okmsg : "");
    else
        printf("%-10s FAILED: %s\n", label, e);
    free(e);
}

int cli_directory_test(struct cli_ctx *ctx)
{
    json_t *r = cli_api(ctx, "POST", "/api/v1/directory/test", NULL, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    bool ok = json_is_true(json_object_get(r, "ok"));
    if (ctx->json) {
        cli_print_json(r);
        return ok ? CLI_OK : CLI_FAIL;
    }
    char *srv = cli_safe(jstr(r, "server"));
    printf("server     %s (TLS: %s)\n", srv, jstr(r, "tls") ? jstr(r, "tls") : "-");
    free(srv);
    json_t *bind = json_object_get(r, "bind");
    char *as = cli_safe(jstr(bind, "as"));
    print_check("bind", bind, json_is_true(json_object_get(bind, "ok")) ? as : NULL);
    free(as);
    print_check("base dn", json_object_get(r, "base_dn"), NULL);
    json_t *search = json_object_get(r, "search");
    if (search != NULL) {
        char msg[128];
        snprintf(msg, sizeof msg, "%lld users and %lld groups sampled",
                 (long long)json_integer_value(json_object_get(search, "users_sampled")),
                 (long long)json_integer_value(json_object_get(search, "groups_sampled")));
        print_check("search", search, msg);
    }
    json_t *paging = json_object_get(r, "paging");
    if (paging != NULL)
        printf("%-10s %s\n", "paging", json_is_true(json_object_get(paging, "supported")) ?
               "supported (RFC 2696)" : "NOT supported: a directory above the server's size "
               "limit cannot be synchronised");
    printf("\n%s\n", ok ? "The connection works. Next: moat directory preview" :
           "The connection does not work yet.");
    json_decref(r);
    return ok ? CLI_OK : CLI_FAIL;
}

static void print_report(json_t *unvalidated, json_t *problems)
{
    size_t i;
    json_t *u;
    if (json_array_size(unvalidated) > 0) {
        printf("\nNot imported (domain not validated):\n");
        json_array_foreach(unvalidated, i, u) {
            if (i >= 20) {
                printf("  ... and %zu more (--json lists them)\n",
                       json_array_size(unvalidated) - 20);
                break;
            }
            char *a = cli_safe(jstr(u, "address")), *why = cli_safe(jstr(u, "reason"));
            printf("  %s: %s\n", a, why);
            free(a);
            free(why);
        }
    }
    if (json_array_size(problems) > 0) {
        printf("\nSkipped entries and values:\n");
        json_array_foreach(problems, i, u) {
            if (i >= 20) {
                printf("  ... and %zu more (--json lists them)\n", json_array_size(problems) - 20);
                break;
            }
            char *e = cli_safe(jstr(u, "entry")), *why = cli_safe(jstr(u, "reason"));
            char *a = cli_safe(jstr(u, "address"));
            printf("  %s%s%s: %s\n", e, jstr(u, "address") ? " " : "",
                   jstr(u, "address") ? a : "", why);
            free(e);
            free(why);
            free(a);
        }
    }
}

static long long n_of(json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

int cli_directory_preview(struct cli_ctx *ctx)
{
    json_t *r = cli_api(ctx, "POST", "/api/v1/directory/preview", NULL, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    printf("A sync now would read %lld entries: create %lld, update %lld, remove %lld, leave "
           "%lld unchanged; %lld addresses under unvalidated domains would not be imported, "
           "%lld entries would be refused.\n", n_of(r, "entries"), n_of(r, "created"),
           n_of(r, "updated"), n_of(r, "removed"), n_of(r, "unchanged"),
           n_of(r, "skipped_unvalidated"), n_of(r, "errors"));
    if (json_is_true(json_object_get(r, "safety_stop")))
        printf("\nSAFETY STOP: it would remove %.1f %% of the directory's entries (more than "
               "%.0f %%); apply it with: moat directory sync --confirm\n",
               json_number_value(json_object_get(r, "would_remove_share")) * 100,
               json_number_value(json_object_get(r, "max_remove_share")) * 100);
    print_report(json_object_get(r, "unvalidated"), json_object_get(r, "problems"));
    json_decref(r);
    return CLI_OK;
}

/* draw_bar - "[#########.........]  45 %  4500/10000  reading" on stderr */
static void draw_bar(json_t *progress)
{
    long long done = n_of(progress, "done"), total = n_of(progress, "total");
    const char *phase = jstr(progress, "phase") ? jstr(progress, "phase") : "";
    char bar[41];
    int width = 40;
    if (total > 0) {
        int fill = (int)(done * width / (total ? total : 1));
        if (fill > width)
            fill = width;
        memset(bar, '#', (size_t)fill);
        memset(bar + fill, '.', (size_t)(width - fill));
        bar[width] = '\0';
        fprintf(stderr, "\r[%s] %3lld %%  %lld/%lld  %-12s", bar, done * 100 / total, done, total,
                phase);
    } else {
        fprintf(stderr, "\r%lld entries  %-12s", done, phase);
    }
    fflush(stderr);
}

static void print_run(json_t *run)
{
    const char *outcome = jstr(run, "outcome");
    char when[64];
    cli_format_time(when, sizeof when, json_integer_value(json_object_get(run, "finished")));
    if (outcome && strcmp(outcome, "ok") == 0) {
        printf("Sync applied at %s (%lld s): %lld entries read; created %lld, updated %lld, "
               "removed %lld, unchanged %lld; %lld addresses under unvalidated domains not "
               "imported; %lld refused.\n", when,
               n_of(run, "finished") - n_of(run, "started"), n_of(run, "entries"),
               n_of(run, "created"), n_of(run, "updated"), n_of(run, "removed"),
               n_of(run, "unchanged"), n_of(run, "skipped_unvalidated"), n_of(run, "errors"));
    } else {
        char *m = cli_safe(jstr(run, "message"));
        printf("Sync %s at %s: %s\n", outcome && strcmp(outcome, "refused") == 0 ?
               "REFUSED" : "FAILED", when, m);
        free(m);
    }
}

int cli_directory_sync(struct cli_ctx *ctx)
{
    if (!cli_flag(ctx, "status")) {
        json_t *body = json_object();
        if (cli_flag(ctx, "confirm"))
            json_object_set_new(body, "confirm", json_true());
        json_t *r = cli_api(ctx, "POST", "/api/v1/directory/sync", body, NULL, NULL);
        if (r == NULL)
            return CLI_FAIL;
        json_decref(r);
        if (cli_flag(ctx, "no-wait")) {
            if (!ctx->json)
                printf("Sync started; follow it with: moat directory sync --status\n");
            return CLI_OK;
        }
    }
    bool tty = isatty(STDERR_FILENO) && !ctx->json;
    bool drew = false;
    json_t *st = NULL;
    for (;;) {
        st = cli_api(ctx, "GET", "/api/v1/directory/sync", NULL, NULL, NULL);
        if (st == NULL)
            return CLI_FAIL;
        if (!json_is_true(json_object_get(st, "running")) || cli_flag(ctx, "status"))
            break;
        if (tty) {
            draw_bar(json_object_get(st, "progress"));
            drew = true;
        }
        json_decref(st);
        struct timespec ts = { 0, 250 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    if (drew)
        fprintf(stderr, "\r%-80s\r", "");
    json_t *last = json_object_get(st, "last");
    const char *outcome = jstr(last, "outcome");
    int rc = cli_flag(ctx, "status") || (outcome && strcmp(outcome, "ok") == 0) ? CLI_OK
                                                                                   : CLI_FAIL;
    if (ctx->json) {
        cli_print_json(st);
        return rc;
    }
    if (json_is_true(json_object_get(st, "running"))) {
        json_t *p = json_object_get(st, "progress");
        printf("A sync is running (%s): %lld of %lld entries.\n", jstr(p, "phase"),
               n_of(p, "done"), n_of(p, "total"));
    }
    if (last != NULL)
        print_run(last);
    else
        printf("No sync has run yet.\n");
    json_t *rep = json_object_get(st, "last_report");
    if (rep != NULL && !cli_flag(ctx, "status"))
        print_report(json_object_get(rep, "unvalidated"), json_object_get(rep, "problems"));
    json_decref(st);
    return rc;
}
