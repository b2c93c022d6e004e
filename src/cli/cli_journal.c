/*
 * cli_journal.c - `moat journal ...` over /api/v1/journal (issue 8): the
 * journal role.
 *   moat journal show
 *   moat journal set [--address A] [--undeliverable U]
 *   moat journal source add CIDR [--comment C] | list | remove CIDR|ID
 * A range is removed by id: the CLI looks it up first, so no "/" has to
 * travel inside a URL path segment (as for outbound hosts).
 */
#include <stdlib.h>
#include <string.h>
#include "cli.h"

#define SOURCES "/api/v1/journal/sources"

static void print_journal(json_t *j, json_t *sources)
{
    json_t *ev = json_object_get(j, "evidence");
    struct buf b;
    buf_init(&b);
    const char *addr = cli_jstr(j, "address");
    buf_printf(&b, "journal address:       %s%s\n", addr[0] ? addr : "(none: add a domain first)",
               json_is_true(json_object_get(j, "address_is_default")) ? " (the default)" : "");
    const char *u = cli_jstr(j, "undeliverable_address");
    buf_printf(&b, "undeliverable reports: %s\n", u[0] ? u : "(not set)");
    if (sources != NULL) {
        buf_printf(&b, "journal sources:       ");
        size_t i;
        json_t *s;
        if (json_array_size(sources) == 0)
            buf_append_str(&b, "(none: moat journal source add CIDR)");
        json_array_foreach(sources, i, s)
            buf_printf(&b, "%s%s", i ? ", " : "", cli_jstr(s, "cidr"));
        buf_append_str(&b, "\n");
    }
    const char *last = cli_jstr(ev, "last_report");
    if (last[0] != '\0')
        buf_printf(&b, "last journal message:  %s from %s (%s, queue id %s)\n", last,
                   cli_jstr(ev, "last_report_client"),
                   json_is_true(json_object_get(ev, "last_report_unwrapped"))
                       ? "unwrapped" : "not unwrapped", cli_jstr(ev, "last_report_qid"));
    else
        buf_append_str(&b, "last journal message:  none yet\n");
    buf_printf(&b, "journal messages:      %lld archived, %lld unwrapped, %lld malformed\n",
               (long long)json_integer_value(json_object_get(ev, "reports")),
               (long long)json_integer_value(json_object_get(ev, "unwrapped")),
               (long long)json_integer_value(json_object_get(ev, "malformed")));
    char *safe = cli_safe(buf_cstr(&b));
    const char *src = buf_cstr(&b);
    for (size_t i = 0; safe[i] && src[i]; i++)
        if (src[i] == '\n')
            safe[i] = '\n';
    fputs(safe, stdout);
    free(safe);
    buf_free(&b);
}

int cli_journal_show(struct cli_ctx *ctx)
{
    json_t *j = cli_api(ctx, "GET", "/api/v1/journal", NULL, NULL, NULL);
    if (j == NULL)
        return CLI_FAIL;
    json_t *sources = cli_api_all(ctx, "/api/v1/journal/sources");
    if (sources == NULL) {
        json_decref(j);
        return CLI_FAIL;
    }
    if (ctx->json) {
        json_object_set_new(j, "sources", sources);
        cli_print_json(j);
        return CLI_OK;
    }
    print_journal(j, sources);
    json_decref(sources);
    json_decref(j);
    return CLI_OK;
}

int cli_journal_set(struct cli_ctx *ctx)
{
    const char *a = cli_opt(ctx, "address"), *u = cli_opt(ctx, "undeliverable");
    if (a == NULL && u == NULL)
        return cli_usage_error(ctx, "give --address, --undeliverable or both");
    json_t *body = json_object();
    if (a != NULL)
        json_object_set_new(body, "address", json_string(a));
    if (u != NULL)
        json_object_set_new(body, "undeliverable_address", json_string(u));
    json_t *r = cli_api(ctx, "PUT", "/api/v1/journal", body, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    print_journal(r, NULL);
    json_decref(r);
    return CLI_OK;
}

int cli_journal_source(struct cli_ctx *ctx)
{
    const char *sub = ctx->args[0];
    int want = strcmp(sub, "list") == 0 ? 0 : 1;
    if (strcmp(sub, "list") != 0 && strcmp(sub, "add") != 0 && strcmp(sub, "remove") != 0)
        return cli_usage_error(ctx, "unknown sub-command \"%s\" (add, list, remove)", sub);
    if (ctx->n_args - 1 != want)
        return cli_usage_error(ctx, "\"%s\" takes %d argument%s", sub, want, want == 1 ? "" : "s");
    if (strcmp(sub, "list") == 0)
        return cli_range_list(ctx, SOURCES, "no journal sources");
    if (strcmp(sub, "add") == 0)
        return cli_range_add(ctx, SOURCES, "journal source",
                             "its mail to the journal address is archived");
    return cli_range_remove(ctx, SOURCES, "journal source");
}
