/*
 * cli_dkim.c - `moat dkim keygen|list|record|activate|remove`: DKIM signing
 * keys of outbound mail, through the API (/api/v1/dkim/keys).  keygen and
 * record print the exact TXT record to publish: split into character
 * strings of at most 255 octets for a zone file, and unsplit for the web
 * forms of DNS providers.  The private key never leaves moatd.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "cli.h"

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* key_path - "/api/v1/dkim/keys/DOMAIN/SELECTOR[suffix]", escaped */
static char *key_path(const char *domain, const char *selector, const char *suffix)
{
    char *d = cli_escape(domain), *s = cli_escape(selector);
    char *p = xasprintf("/api/v1/dkim/keys/%s/%s%s", d, s, suffix);
    free(d);
    free(s);
    return p;
}

/* print_record - the record of key k, for a zone file and for a web form */
static void print_record(json_t *k)
{
    json_t *rec = json_object_get(k, "dns_record");
    char *zone = cli_safe(jstr(rec, "zone")), *name = cli_safe(jstr(rec, "name"));
    char *value = cli_safe(jstr(rec, "value"));
    printf("publish this TXT record:\n\n%s\n\n", zone);
    printf("or, in a DNS provider's web form:\n  name:  %s\n  type:  TXT\n  value: %s\n",
           name, value);
    free(zone);
    free(name);
    free(value);
}

int cli_dkim_keygen(struct cli_ctx *ctx)
{
    json_t *body = json_pack("{s:s}", "domain", ctx->args[0]);
    if (cli_opt(ctx, "selector"))
        json_object_set_new(body, "selector", json_string(cli_opt(ctx, "selector")));
    if (cli_opt(ctx, "algorithm"))
        json_object_set_new(body, "algorithm", json_string(cli_opt(ctx, "algorithm")));
    bool inactive = cli_flag(ctx, "inactive");
    if (inactive)
        json_object_set_new(body, "activate", json_false());
    json_t *r = cli_api(ctx, "POST", "/api/v1/dkim/keys", body, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    char *d = cli_safe(jstr(r, "domain")), *s = cli_safe(jstr(r, "selector"));
    char *a = cli_safe(jstr(r, "algorithm"));
    printf("created DKIM key %s for %s (%s)\n\n", s, d, strcmp(a, "rsa") == 0 ? "RSA 2048" : a);
    print_record(r);
    if (inactive)
        printf("\nMoat keeps signing with the current key. Once the record is published "
               "(check with: dig +short TXT %s._domainkey.%s), switch with:\n"
               "  moat dkim activate %s %s\n", s, d, d, s);
    else
        printf("\nMail from %s is signed with this key from now on; receivers can verify it "
               "once the record is published. A previous key of %s is kept, inactive: until "
               "the new record is visible you may switch back with moat dkim activate %s "
               "OLD-SELECTOR (moat dkim list %s shows them).\n", d, d, d, d);
    free(d);
    free(s);
    free(a);
    json_decref(r);
    return CLI_OK;
}

/* list_keys - the keys of domain (NULL = all), or NULL after an error */
static json_t *list_keys(struct cli_ctx *ctx, const char *domain)
{
    char *path;
    if (domain != NULL) {
        char *e = cli_escape(domain);
        path = xasprintf("/api/v1/dkim/keys?domain=%s", e);
        free(e);
    } else {
        path = xstrdup("/api/v1/dkim/keys");
    }
    json_t *all = cli_api_all(ctx, path);
    free(path);
    return all;
}

int cli_dkim_list(struct cli_ctx *ctx)
{
    json_t *all = list_keys(ctx, ctx->n_args > 0 ? ctx->args[0] : NULL);
    if (all == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(all);
        return CLI_OK;
    }
    if (json_array_size(all) == 0) {
        printf("no DKIM keys; create one with: moat dkim keygen example.com\n");
        json_decref(all);
        return CLI_OK;
    }
    static const char *const hdr[] = { "DOMAIN", "SELECTOR", "ALGORITHM", "STATE", "CREATED" };
    struct cli_table *t = cli_table_new(5, hdr);
    size_t i;
    json_t *k;
    json_array_foreach(all, i, k) {
        char created[32];
        cli_format_time(created, sizeof created, json_integer_value(json_object_get(k, "created")));
        const char *row[] = { jstr(k, "domain"), jstr(k, "selector"), jstr(k, "algorithm"),
                              json_is_true(json_object_get(k, "active")) ? "signing" : "inactive",
                              created };
        cli_table_add(t, row);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    json_decref(all);
    return CLI_OK;
}

int cli_dkim_record(struct cli_ctx *ctx)
{
    const char *sel = cli_opt(ctx, "selector");
    json_t *all = list_keys(ctx, ctx->args[0]);
    if (all == NULL)
        return CLI_FAIL;
    json_t *found = NULL;
    size_t i;
    json_t *k;
    json_array_foreach(all, i, k) {
        const char *s = jstr(k, "selector");
        if (sel ? (s && strcasecmp(s, sel) == 0) : json_is_true(json_object_get(k, "active")))
            found = k;
    }
    if (found == NULL) {
        json_decref(all);
        return sel ? cli_fail(ctx, "%s has no DKIM key with selector %s", ctx->args[0], sel)
                   : cli_fail(ctx, "%s has no active DKIM key; create one with: moat dkim "
                              "keygen %s", ctx->args[0], ctx->args[0]);
    }
    if (ctx->json) {
        cli_print_json(json_incref(found));
    } else {
        print_record(found);
    }
    json_decref(all);
    return CLI_OK;
}

int cli_dkim_activate(struct cli_ctx *ctx)
{
    char *p = key_path(ctx->args[0], ctx->args[1], "/activate");
    json_t *r = cli_api(ctx, "POST", p, NULL, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    char *d = cli_safe(jstr(r, "domain")), *s = cli_safe(jstr(r, "selector"));
    printf("mail from %s is now signed with key %s; its record must be published:\n\n", d, s);
    print_record(r);
    free(d);
    free(s);
    json_decref(r);
    return CLI_OK;
}

int cli_dkim_remove(struct cli_ctx *ctx)
{
    char *p = key_path(ctx->args[0], ctx->args[1], "");
    json_t *r = cli_api(ctx, "DELETE", p, NULL, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    json_decref(r);
    char *d = cli_safe(ctx->args[0]), *s = cli_safe(ctx->args[1]);
    if (ctx->json)
        cli_print_json(json_pack("{s:s, s:s, s:b}", "domain", d, "selector", s, "removed", 1));
    else
        printf("removed DKIM key %s of %s; remove its record %s._domainkey.%s from DNS too\n",
               s, d, s, d);
    free(d);
    free(s);
    return CLI_OK;
}
