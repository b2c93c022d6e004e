/*
 * cli_dnsbl.c - `moat dnsbl add|list|remove`: the DNS blocklists queried
 * for inbound clients (issue 7), over /api/v1/dnsbl/zones.
 */
#include <stdlib.h>
#include <string.h>
#include "cli.h"

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

int cli_dnsbl_list(struct cli_ctx *ctx)
{
    json_t *all = cli_api_all(ctx, "/api/v1/dnsbl/zones");
    if (all == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(all);
        return CLI_OK;
    }
    static const char *const hdr[] = { "ZONE", "WEIGHT", "COMMENT", "CREATED" };
    struct cli_table *t = cli_table_new(4, hdr);
    size_t i;
    json_t *z;
    json_array_foreach(all, i, z) {
        char w[24];
        xsnprintf(w, sizeof w, "%lld", (long long)json_integer_value(json_object_get(z, "weight")));
        const char *row[4] = { jstr(z, "zone"), w, jstr(z, "comment"), jstr(z, "created") };
        cli_table_add(t, row);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    json_decref(all);
    return CLI_OK;
}

int cli_dnsbl_add(struct cli_ctx *ctx)
{
    json_t *body = json_pack("{s:s}", "zone", ctx->args[0]);
    const char *w = cli_opt(ctx, "weight");
    if (w != NULL) {
        char *end = NULL;
        long long n = strtoll(w, &end, 10);
        if (end == w || *end != '\0') {
            json_decref(body);
            return cli_usage_error(ctx, "--weight must be an integer from 1 to 100, not \"%s\"", w);
        }
        json_object_set_new(body, "weight", json_integer(n));
    }
    if (cli_opt(ctx, "comment"))
        json_object_set_new(body, "comment", json_string(cli_opt(ctx, "comment")));
    json_t *r = cli_api(ctx, "POST", "/api/v1/dnsbl/zones", body, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    char *z = cli_safe(jstr(r, "zone"));
    printf("added DNSBL zone %s (weight %lld): inbound clients are looked up from the next "
           "connection\n", z, (long long)json_integer_value(json_object_get(r, "weight")));
    free(z);
    json_decref(r);
    return CLI_OK;
}

int cli_dnsbl_remove(struct cli_ctx *ctx)
{
    char *seg = cli_escape(ctx->args[0]);
    char path[512];
    int ok = xsnprintf(path, sizeof path, "/api/v1/dnsbl/zones/%s", seg);
    free(seg);
    if (ok < 0)
        return cli_usage_error(ctx, "zone name too long");
    json_t *r = cli_api(ctx, "DELETE", path, NULL, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    json_decref(r);
    char *z = cli_safe(ctx->args[0]);
    if (ctx->json)
        cli_print_json(json_pack("{s:s, s:b}", "zone", z, "removed", 1));
    else
        printf("removed DNSBL zone %s\n", z);
    free(z);
    return CLI_OK;
}
