/*
 * cli_tls.c - `moat tls policy add|list|show|remove|probe`: outbound TLS
 * policies per destination domain, through the API (/api/v1/tls/policies).
 * Adding a policy or probing it again shows each MX host's verdict
 * (strict / relaxed / unsupported / error) and the reason; the command fails
 * (exit 1) when the probe does not meet the mode and --override was not
 * given (the daemon then stored the policy report-only).
 */
#include <stdlib.h>
#include <string.h>
#include "cli.h"

static char *policy_path(const char *domain, const char *suffix)
{
    return cli_item_path("/api/v1/tls/policies", domain, suffix);
}

static const char *state_of(json_t *p)
{
    if (!json_is_true(json_object_get(p, "enforced")))
        return "report-only (not enforced)";
    return json_is_true(json_object_get(p, "override")) ? "enforced (override)" : "enforced";
}

/* print_policy - the policy and its last probe, one MX host a line */
static void print_policy(json_t *p)
{
    char *d = cli_safe(cli_jstr(p, "domain")), *m = cli_safe(cli_jstr(p, "mode"));
    printf("%s: %s, %s", d, m, state_of(p));
    if (json_object_get(p, "fallback"))
        printf(", fallback %s", cli_jstr(p, "fallback"));
    printf("\n");
    free(d);
    free(m);
    json_t *probe = json_object_get(p, "probe");
    json_int_t t = json_integer_value(json_object_get(probe, "time"));
    if (t == 0) {
        printf("  never probed\n");
        return;
    }
    char when[64];
    cli_format_time(when, sizeof when, t);
    char *v = cli_safe(cli_jstr(probe, "verdict")), *r = cli_safe(cli_jstr(probe, "reason"));
    printf("  probe %s: %s (%s)\n", when, v, r);
    free(v);
    free(r);
    size_t i;
    json_t *mx;
    json_array_foreach(json_object_get(json_object_get(probe, "details"), "mx"), i, mx) {
        char *h = cli_safe(cli_jstr(mx, "host")), *a = cli_safe(cli_jstr(mx, "address"));
        char *mv = cli_safe(cli_jstr(mx, "verdict")), *mr = cli_safe(cli_jstr(mx, "reason"));
        printf("  MX %s [%s]: %s - %s\n", h, a[0] && strcmp(a, "-") ? a : "?", mv, mr);
        free(h);
        free(a);
        free(mv);
        free(mr);
    }
}

/* after_failed_probe - 409: the daemon stored the policy report-only; show it */
static int after_failed_probe(struct cli_ctx *ctx, const char *domain)
{
    char *p = policy_path(domain, "");
    json_t *r = cli_api(ctx, "GET", p, NULL, NULL, NULL);
    free(p);
    if (r != NULL) {
        if (ctx->json)
            cli_print_json(r);
        else {
            print_policy(r);
            json_decref(r);
        }
    }
    return CLI_FAIL;
}

static int policy_add(struct cli_ctx *ctx)
{
    if (ctx->n_args != 3)
        return cli_usage_error(ctx, "add needs DOMAIN and MODE");
    json_t *body = json_pack("{s:s, s:s}", "domain", ctx->args[1], "mode", ctx->args[2]);
    const char *fb = cli_opt(ctx, "fallback");
    if (fb != NULL)
        json_object_set_new(body, "fallback", json_string(fb));
    if (cli_flag(ctx, "override"))
        json_object_set_new(body, "override", json_true());
    long status = 0;
    json_t *r = cli_api(ctx, "POST", "/api/v1/tls/policies", body, NULL, &status);
    if (r == NULL)
        return status == 409 ? after_failed_probe(ctx, ctx->args[1]) : CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    print_policy(r);
    json_decref(r);
    return CLI_OK;
}

static int policy_probe(struct cli_ctx *ctx)
{
    if (ctx->n_args != 2)
        return cli_usage_error(ctx, "probe needs DOMAIN");
    json_t *body = json_object();
    if (cli_flag(ctx, "override"))
        json_object_set_new(body, "override", json_true());
    char *p = policy_path(ctx->args[1], "/probe");
    long status = 0;
    json_t *r = cli_api(ctx, "POST", p, body, NULL, &status);
    free(p);
    if (r == NULL)
        return status == 409 ? after_failed_probe(ctx, ctx->args[1]) : CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    print_policy(r);
    json_decref(r);
    return CLI_OK;
}

static int policy_list(struct cli_ctx *ctx)
{
    if (ctx->n_args != 1)
        return cli_usage_error(ctx, "list takes no DOMAIN (use show)");
    json_t *items = cli_api_all(ctx, "/api/v1/tls/policies");
    if (items == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(items);
        return CLI_OK;
    }
    if (json_array_size(items) == 0)
        printf("no TLS policies: every destination is opportunistic\n");
    static const char *const hdr[] = { "DOMAIN", "MODE", "STATE", "PROBE", "REASON" };
    struct cli_table *t = cli_table_new(5, hdr);
    size_t i;
    json_t *p;
    json_array_foreach(items, i, p) {
        json_t *probe = json_object_get(p, "probe");
        const char *cells[5] = { cli_jstr(p, "domain"), cli_jstr(p, "mode"), state_of(p),
                                 cli_jstr(probe, "verdict"), cli_jstr(probe, "reason") };
        cli_table_add(t, cells);
    }
    if (json_array_size(items) > 0)
        cli_table_print(t, stdout);
    cli_table_free(t);
    json_decref(items);
    return CLI_OK;
}

static int policy_show(struct cli_ctx *ctx)
{
    if (ctx->n_args != 2)
        return cli_usage_error(ctx, "show needs DOMAIN");
    char *p = policy_path(ctx->args[1], "");
    json_t *r = cli_api(ctx, "GET", p, NULL, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    print_policy(r);
    json_decref(r);
    return CLI_OK;
}

static int policy_remove(struct cli_ctx *ctx)
{
    if (ctx->n_args != 2)
        return cli_usage_error(ctx, "remove needs DOMAIN");
    char *p = policy_path(ctx->args[1], "");
    json_t *r = cli_api(ctx, "DELETE", p, NULL, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    json_decref(r);
    char *d = cli_safe(ctx->args[1]);
    if (ctx->json)
        cli_print_json(json_pack("{s:s, s:b}", "domain", d, "removed", true));
    else
        printf("removed the TLS policy of %s: it is opportunistic again\n", d);
    free(d);
    return CLI_OK;
}

/* the sub-verbs of `moat tls policy` */
static const struct {
    const char *name;
    int (*fn)(struct cli_ctx *ctx);
} policy_verbs[] = {
    { "add", policy_add },
    { "list", policy_list },
    { "show", policy_show },
    { "remove", policy_remove },
    { "probe", policy_probe },
};

int cli_tls_policy(struct cli_ctx *ctx)
{
    for (size_t i = 0; i < sizeof policy_verbs / sizeof policy_verbs[0]; i++)
        if (strcmp(ctx->args[0], policy_verbs[i].name) == 0)
            return policy_verbs[i].fn(ctx);
    char *s = cli_safe(ctx->args[0]);
    int rc = cli_usage_error(ctx, "unknown action \"%s\": add, list, show, remove or probe", s);
    free(s);
    return rc;
}
