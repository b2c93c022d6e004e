/*
 * cli_range.c - the address-range resources of the CLI: authorised
 * outbound hosts (`moat outbound host`) and journal sources (`moat journal
 * source`) are the same shape on the API (a collection of {id, cidr,
 * comment, created}, deleted by id or by range), so one list, add and
 * remove serve both.
 */
#include <stdio.h>
#include <string.h>
#include "cli.h"

int cli_range_list(struct cli_ctx *ctx, const char *base, const char *none)
{
    static const char *const hdr[] = { "ID", "RANGE", "COMMENT", "CREATED" };
    static const char *const keys[] = { "id", "cidr", "comment", "created" };
    return cli_list_table(ctx, base, none, 4, hdr, keys);
}

int cli_range_add(struct cli_ctx *ctx, const char *base, const char *what, const char *meaning)
{
    json_t *body = json_pack("{s:s}", "cidr", ctx->args[1]);
    if (cli_opt(ctx, "comment"))
        json_object_set_new(body, "comment", json_string(cli_opt(ctx, "comment")));
    json_t *r = cli_api(ctx, "POST", base, body, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    char *c = cli_safe(cli_jstr(r, "cidr"));
    printf("%s %s (id %lld): %s\n", what, c,
           (long long)json_integer_value(json_object_get(r, "id")), meaning);
    free(c);
    json_decref(r);
    return CLI_OK;
}

/* range_id - the id of the row whose range is key (as typed: a single
 * address stands for its /32 or /128); "" when none matches */
static int range_id(struct cli_ctx *ctx, const char *base, const char *key, char id[32])
{
    json_t *all = cli_api_all(ctx, base);
    if (all == NULL)
        return -1;
    char want[80];
    xsnprintf(want, sizeof want, "%s%s", key,
              strchr(key, '/') ? "" : strchr(key, ':') ? "/128" : "/32");
    size_t i;
    json_t *h;
    json_array_foreach(all, i, h) {
        if (str_ieq(cli_jstr(h, "cidr"), want) || str_ieq(cli_jstr(h, "cidr"), key))
            xsnprintf(id, 32, "%lld", (long long)json_integer_value(json_object_get(h, "id")));
    }
    json_decref(all);
    return 0;
}

int cli_range_remove(struct cli_ctx *ctx, const char *base, const char *what)
{
    const char *key = ctx->args[1];
    char id[32] = "";
    if (key[0] != '\0' && key[strspn(key, "0123456789")] == '\0')
        (void)str_copy(id, sizeof id, key);
    else if (range_id(ctx, base, key, id) < 0)
        return CLI_FAIL;
    /* no row matched: let the server judge the text (a bad range gets its
     * 400 naming the field, else 404) */
    char done[96];
    xsnprintf(done, sizeof done, "removed %s %%s\n", what);
    return cli_delete_item(ctx, base, id[0] ? id : key, key, "cidr", done);
}
