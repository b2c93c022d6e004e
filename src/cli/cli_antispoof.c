/*
 * cli_antispoof.c - `moat antispoof bypass add|list|remove` and `moat
 * antispoof candidates`: anti-spoofing bypasses and the sources it refused
 * (issue 7), over /api/v1/antispoof.
 *
 *   moat antispoof bypass add ip|host|spf VALUE [--domain D] [--comment T]
 *   moat antispoof bypass add --from-candidate ADDRESS [--by ip|host] [--domain D]
 *   moat antispoof bypass list | remove ID
 *   moat antispoof candidates
 */
#include <stdlib.h>
#include <string.h>
#include "cli.h"

static void print_bypass(json_t *b)
{
    char *v = cli_safe(cli_jstr(b, "value")), *d = cli_safe(cli_jstr(b, "domain"));
    printf("anti-spoofing bypass %lld: %s %s for %s\n",
           (long long)json_integer_value(json_object_get(b, "id")), cli_jstr(b, "kind"), v,
           d[0] ? d : "every internal domain");
    free(v);
    free(d);
}

static int bypass_list(struct cli_ctx *ctx)
{
    json_t *all = cli_api_all(ctx, "/api/v1/antispoof/bypasses");
    if (all == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(all);
        return CLI_OK;
    }
    static const char *const hdr[] = { "ID", "KIND", "VALUE", "DOMAIN", "COMMENT", "CREATED" };
    struct cli_table *t = cli_table_new(6, hdr);
    size_t i;
    json_t *b;
    json_array_foreach(all, i, b) {
        char id[32];
        xsnprintf(id, sizeof id, "%lld", (long long)json_integer_value(json_object_get(b, "id")));
        const char *dom = cli_jstr(b, "domain");
        const char *row[6] = { id, cli_jstr(b, "kind"), cli_jstr(b, "value"), dom[0] ? dom : "(all)",
                               cli_jstr(b, "comment"), cli_jstr(b, "created") };
        cli_table_add(t, row);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    json_decref(all);
    return CLI_OK;
}

/* bypass_add_candidate - the one-step exception of a refused source */
static int bypass_add_candidate(struct cli_ctx *ctx, const char *addr)
{
    json_t *body = json_object();
    const char *by = cli_opt(ctx, "by");
    if (by != NULL)
        json_object_set_new(body, "by", json_string(by));
    if (cli_opt(ctx, "domain"))
        json_object_set_new(body, "domain", json_string(cli_opt(ctx, "domain")));
    if (cli_opt(ctx, "comment"))
        json_object_set_new(body, "comment", json_string(cli_opt(ctx, "comment")));
    char *e = cli_escape(addr);
    char *p = xasprintf("/api/v1/antispoof/candidates/%s/bypass", e);
    free(e);
    json_t *r = cli_api(ctx, "POST", p, body, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    size_t i;
    json_t *b;
    json_array_foreach(json_object_get(r, "items"), i, b)
        print_bypass(b);
    json_decref(r);
    return CLI_OK;
}

static int bypass_add(struct cli_ctx *ctx)
{
    const char *cand = cli_opt(ctx, "from-candidate");
    if (cand != NULL) {
        if (ctx->n_args != 1)
            return cli_usage_error(ctx, "add --from-candidate ADDRESS takes no other argument");
        return bypass_add_candidate(ctx, cand);
    }
    if (cli_opt(ctx, "by") != NULL)
        return cli_usage_error(ctx, "--by goes with --from-candidate");
    if (ctx->n_args != 3)
        return cli_usage_error(ctx, "add takes KIND (ip, host or spf) and VALUE, or "
                               "--from-candidate ADDRESS");
    json_t *body = json_pack("{s:s, s:s}", "kind", ctx->args[1], "value", ctx->args[2]);
    if (cli_opt(ctx, "domain"))
        json_object_set_new(body, "domain", json_string(cli_opt(ctx, "domain")));
    if (cli_opt(ctx, "comment"))
        json_object_set_new(body, "comment", json_string(cli_opt(ctx, "comment")));
    json_t *r = cli_api(ctx, "POST", "/api/v1/antispoof/bypasses", body, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json)
        cli_print_json(r);
    else {
        print_bypass(r);
        json_decref(r);
    }
    return CLI_OK;
}

static int bypass_remove(struct cli_ctx *ctx)
{
    if (ctx->n_args != 2)
        return cli_usage_error(ctx, "remove takes the bypass's ID (see moat antispoof bypass list)");
    const char *id = ctx->args[1];
    char *e = cli_escape(id);
    char *p = xasprintf("/api/v1/antispoof/bypasses/%s", e);
    free(e);
    json_t *r = cli_api(ctx, "DELETE", p, NULL, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    json_decref(r);
    char *k = cli_safe(id);
    if (ctx->json)
        cli_print_json(json_pack("{s:s, s:b}", "bypass", k, "removed", 1));
    else
        printf("removed anti-spoofing bypass %s\n", k);
    free(k);
    return CLI_OK;
}

int cli_antispoof_bypass(struct cli_ctx *ctx)
{
    const char *v = ctx->args[0];
    if (strcmp(v, "list") == 0)
        return ctx->n_args != 1 ? cli_usage_error(ctx, "list takes no argument") : bypass_list(ctx);
    if (strcmp(v, "add") == 0)
        return bypass_add(ctx);
    if (strcmp(v, "remove") == 0)
        return bypass_remove(ctx);
    return cli_usage_error(ctx, "unknown action \"%s\": add, list or remove", v);
}

int cli_antispoof_candidates(struct cli_ctx *ctx)
{
    json_t *all = cli_api_all(ctx, "/api/v1/antispoof/candidates");
    if (all == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(all);
        return CLI_OK;
    }
    if (json_array_size(all) == 0) {
        printf("no source was refused by anti-spoofing since moatd started\n");
        json_decref(all);
        return CLI_OK;
    }
    static const char *const hdr[] = { "ADDRESS", "HOST", "COUNT", "DOMAINS", "LAST SEEN" };
    struct cli_table *t = cli_table_new(5, hdr);
    size_t i, k;
    json_t *c, *d;
    json_array_foreach(all, i, c) {
        char count[32], host[300];
        struct buf doms;
        buf_init(&doms);
        json_array_foreach(json_object_get(c, "domains"), k, d)
            buf_printf(&doms, "%s%s", k ? "," : "", json_string_value(d));
        xsnprintf(count, sizeof count, "%lld", (long long)json_integer_value(json_object_get(c, "count")));
        xsnprintf(host, sizeof host, "%s%s", cli_jstr(c, "host")[0] ? cli_jstr(c, "host") : "-",
                  json_is_true(json_object_get(c, "host_confirmed")) || !cli_jstr(c, "host")[0]
                      ? "" : " (unconfirmed)");
        const char *row[5] = { cli_jstr(c, "address"), host, count, buf_cstr(&doms),
                               cli_jstr(c, "last_seen") };
        cli_table_add(t, row);
        buf_free(&doms);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    json_decref(all);
    printf("\nexcept a legitimate sender with: moat antispoof bypass add --from-candidate ADDRESS "
           "[--by ip|host]\n");
    return CLI_OK;
}
