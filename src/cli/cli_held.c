/*
 * cli_held.c - issue 7's held-mail commands over /api/v1/held,
 * /api/v1/blocked-senders and /api/v1/forwarding:
 *   moat held list | show ID | release ID | delete ID
 *   moat blocked add ADDRESS_OR_DOMAIN --action hold|reject | list | remove ADDRESS_OR_DOMAIN
 *   moat forward add ADDRESS TARGET [--copy] | list | remove ID
 * Human output by default, --json for the API's answer, non-zero exit on error.
 */
#include <stdlib.h>
#include <string.h>
#include "cli.h"

static int done_line(struct cli_ctx *ctx, json_t *r, const char *fmt, const char *key)
{
    if (ctx->json) {
        cli_print_json(r ? r : json_null());
        return CLI_OK;
    }
    char *k = cli_safe(key);
    printf(fmt, k);
    putchar('\n');
    free(k);
    json_decref(r);
    return CLI_OK;
}

/* --- held mail --- */

int cli_held_list(struct cli_ctx *ctx)
{
    json_t *all = cli_api_all(ctx, "/api/v1/held");
    if (all == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(all);
        return CLI_OK;
    }
    static const char *const hdr[] = { "ID", "RECEIVED", "SIZE", "SENDER", "RECIPIENTS", "REASON" };
    struct cli_table *t = cli_table_new(6, hdr);
    size_t i;
    json_t *m;
    json_array_foreach(all, i, m) {
        char when[40], size[24];
        struct buf rc = { 0 };
        cli_format_time(when, sizeof when, json_integer_value(json_object_get(m, "received")));
        xsnprintf(size, sizeof size, "%lld", (long long)json_integer_value(json_object_get(m, "size")));
        size_t k;
        json_t *a;
        json_array_foreach(json_object_get(m, "rcpts"), k, a) {
            if (k > 0)
                buf_append_str(&rc, ",");
            buf_append_str(&rc, json_string_value(a) ? json_string_value(a) : "");
        }
        const char *sender = cli_jstr(m, "sender");
        const char *row[6] = { cli_jstr(m, "id"), when, size, sender[0] ? sender : "<>",
                               rc.len ? buf_cstr(&rc) : "", cli_jstr(m, "reason") };
        cli_table_add(t, row);
        buf_free(&rc);
    }
    if (json_array_size(all) == 0)
        printf("no held messages\n");
    else
        cli_table_print(t, stdout);
    cli_table_free(t);
    json_decref(all);
    return CLI_OK;
}

static char *held_path(const char *id, const char *suffix)
{
    return cli_item_path("/api/v1/held", id, suffix);
}

int cli_held_show(struct cli_ctx *ctx)
{
    char *p = held_path(ctx->args[0], "");
    json_t *r = cli_api(ctx, "GET", p, NULL, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    char when[40];
    cli_format_time(when, sizeof when, json_integer_value(json_object_get(r, "received")));
    struct buf out = { 0 };
    buf_printf(&out, "id:       %s\nreceived: %s\nsize:     %lld\nfrom:     <%s>\n", cli_jstr(r, "id"),
               when, (long long)json_integer_value(json_object_get(r, "size")), cli_jstr(r, "sender"));
    size_t k;
    json_t *a;
    json_array_foreach(json_object_get(r, "rcpts"), k, a)
        buf_printf(&out, "to:       <%s>\n", json_string_value(a) ? json_string_value(a) : "");
    buf_printf(&out, "client:   %s (%s)\nreason:   %s\n\n%s\n", cli_jstr(r, "client_addr"),
               cli_jstr(r, "helo"), cli_jstr(r, "reason"), cli_jstr(r, "headers"));
    json_t *text = json_object_get(r, "text");
    if (json_is_string(text))
        buf_printf(&out, "%s%s\n", json_string_value(text),
                   json_is_true(json_object_get(r, "text_truncated")) ? "\n[... text truncated]" : "");
    else
        buf_append_str(&out, "[no text/plain part]\n");
    /* the text is the sender's: keep terminal controls out, keep line breaks */
    char *safe = cli_safe(buf_cstr(&out));
    const char *src = buf_cstr(&out);
    for (size_t i = 0; safe[i]; i++)
        if (src[i] == '\n' || src[i] == '\t')
            safe[i] = src[i];
    fputs(safe, stdout);
    free(safe);
    buf_free(&out);
    json_decref(r);
    return CLI_OK;
}

int cli_held_release(struct cli_ctx *ctx)
{
    char *p = held_path(ctx->args[0], "/release");
    json_t *r = cli_api(ctx, "POST", p, NULL, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    return done_line(ctx, r, "released %s: it is delivered now", ctx->args[0]);
}

int cli_held_delete(struct cli_ctx *ctx)
{
    char *p = held_path(ctx->args[0], "");
    json_t *r = cli_api(ctx, "DELETE", p, NULL, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    return done_line(ctx, ctx->json ? json_pack("{s:s, s:b}", "id", ctx->args[0], "deleted", 1) : r,
                     "deleted held message %s (the sender is not notified)", ctx->args[0]);
}

/* --- blocked senders --- */

int cli_blocked_add(struct cli_ctx *ctx)
{
    const char *action = cli_opt(ctx, "action");
    if (action == NULL)
        return cli_usage_error(ctx, "--action hold or --action reject is required");
    json_t *body = json_pack("{s:s, s:s}", "address", ctx->args[0], "action", action);
    if (cli_opt(ctx, "comment"))
        json_object_set_new(body, "comment", json_string(cli_opt(ctx, "comment")));
    json_t *r = cli_api(ctx, "POST", "/api/v1/blocked-senders", body, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    char *a = cli_safe(cli_jstr(r, "address"));
    printf("blocked sender %s: %s\n", a, strcmp(cli_jstr(r, "action"), "hold") == 0
           ? "its mail is held for an administrator (moat held list)"
           : "its mail is refused (550 5.7.1)");
    free(a);
    json_decref(r);
    return CLI_OK;
}

int cli_blocked_list(struct cli_ctx *ctx)
{
    json_t *all = cli_api_all(ctx, "/api/v1/blocked-senders");
    if (all == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(all);
        return CLI_OK;
    }
    static const char *const hdr[] = { "ADDRESS", "ACTION", "COMMENT", "CREATED" };
    struct cli_table *t = cli_table_new(4, hdr);
    size_t i;
    json_t *b;
    json_array_foreach(all, i, b) {
        const char *row[4] = { cli_jstr(b, "address"), cli_jstr(b, "action"), cli_jstr(b, "comment"),
                               cli_jstr(b, "created") };
        cli_table_add(t, row);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    json_decref(all);
    return CLI_OK;
}

int cli_blocked_remove(struct cli_ctx *ctx)
{
    char *e = cli_escape(ctx->args[0]);
    char *p = xasprintf("/api/v1/blocked-senders/%s", e);
    free(e);
    json_t *r = cli_api(ctx, "DELETE", p, NULL, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    return done_line(ctx, ctx->json ? json_pack("{s:s, s:b}", "address", ctx->args[0], "removed", 1) : r,
                     "removed blocked sender %s", ctx->args[0]);
}

/* --- forwarding --- */

int cli_forward_add(struct cli_ctx *ctx)
{
    json_t *body = json_pack("{s:s, s:s, s:s}", "address", ctx->args[0], "target", ctx->args[1],
                             "mode", cli_flag(ctx, "copy") ? "copy" : "redirect");
    if (cli_opt(ctx, "comment"))
        json_object_set_new(body, "comment", json_string(cli_opt(ctx, "comment")));
    json_t *r = cli_api(ctx, "POST", "/api/v1/forwarding", body, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    char *a = cli_safe(cli_jstr(r, "address")), *t = cli_safe(cli_jstr(r, "target"));
    printf("forwarding rule %lld: mail for %s is %s %s\n",
           (long long)json_integer_value(json_object_get(r, "id")), a,
           strcmp(cli_jstr(r, "mode"), "copy") == 0 ? "also copied to" : "redirected to", t);
    free(a);
    free(t);
    json_decref(r);
    return CLI_OK;
}

int cli_forward_list(struct cli_ctx *ctx)
{
    json_t *all = cli_api_all(ctx, "/api/v1/forwarding");
    if (all == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(all);
        return CLI_OK;
    }
    static const char *const hdr[] = { "ID", "ADDRESS", "TARGET", "MODE", "COMMENT" };
    struct cli_table *t = cli_table_new(5, hdr);
    size_t i;
    json_t *f;
    json_array_foreach(all, i, f) {
        char id[32];
        xsnprintf(id, sizeof id, "%lld", (long long)json_integer_value(json_object_get(f, "id")));
        const char *row[5] = { id, cli_jstr(f, "address"), cli_jstr(f, "target"), cli_jstr(f, "mode"),
                               cli_jstr(f, "comment") };
        cli_table_add(t, row);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    json_decref(all);
    return CLI_OK;
}

int cli_forward_remove(struct cli_ctx *ctx)
{
    const char *id = ctx->args[0];
    if (id[0] == '\0' || id[strspn(id, "0123456789")] != '\0')
        return cli_usage_error(ctx, "ID is the rule's number (moat forward list)");
    char *p = xasprintf("/api/v1/forwarding/%s", id);
    json_t *r = cli_api(ctx, "DELETE", p, NULL, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    return done_line(ctx, ctx->json ? json_pack("{s:s, s:b}", "id", id, "removed", 1) : r,
                     "removed forwarding rule %s", id);
}
