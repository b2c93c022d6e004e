/*
 * cli_outbound.c - `moat outbound host|account ...` and `moat tls inbound
 * ...`: the outbound role (authorised outbound hosts, SMTP AUTH accounts)
 * and the inbound TLS requirement, over /api/v1/outbound and /api/v1/tls.
 *
 * Each noun-verb pair takes a sub-verb as its first argument (add, list,
 * remove, passwd).  A generated SMTP password is printed once; moatd keeps
 * only its hash.  A range is removed by id: the CLI looks the range up
 * first, so no "/" has to travel inside a URL path segment.
 */
#include <stdlib.h>
#include <string.h>
#include "cli.h"

#define HOSTS "/api/v1/outbound/hosts"

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* sub_args - the sub-verb's argument count is right; else a usage error */
static int sub_args(struct cli_ctx *ctx, int want)
{
    if (ctx->n_args - 1 != want)
        return cli_usage_error(ctx, "\"%s\" takes %d argument%s", ctx->args[0], want,
                               want == 1 ? "" : "s");
    return CLI_OK;
}

/* removed - the one line (or JSON) a removal prints */
static int removed(struct cli_ctx *ctx, const char *what, const char *key)
{
    char *k = cli_safe(key);
    if (ctx->json)
        cli_print_json(json_pack("{s:s, s:b}", what, k, "removed", 1));
    else
        printf("removed %s %s\n", what, k);
    free(k);
    return CLI_OK;
}

/* read_password_file - the first line of path ("-" = standard input) */
static char *read_password_file(struct cli_ctx *ctx, const char *path)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (f == NULL) {
        cli_fail(ctx, "cannot open %s", path);
        return NULL;
    }
    char buf[1100];
    char *line = fgets(buf, sizeof buf, f);
    if (f != stdin)
        fclose(f);
    if (line == NULL) {
        cli_fail(ctx, "%s: no password in the file", path);
        return NULL;
    }
    buf[strcspn(buf, "\r\n")] = '\0';
    char *p = xstrdup(buf);
    memset(buf, 0, sizeof buf);
    return p;
}

int cli_outbound_host(struct cli_ctx *ctx)
{
    const char *v = ctx->args[0];
    if (strcmp(v, "list") == 0)
        return sub_args(ctx, 0) != CLI_OK ? CLI_USAGE
               : cli_range_list(ctx, HOSTS, "no authorised outbound hosts");
    if (strcmp(v, "add") == 0)
        return sub_args(ctx, 1) != CLI_OK ? CLI_USAGE
               : cli_range_add(ctx, HOSTS, "authorised outbound host",
                               "it may relay mail to any domain");
    if (strcmp(v, "remove") == 0)
        return sub_args(ctx, 1) != CLI_OK ? CLI_USAGE : cli_range_remove(ctx, HOSTS, "outbound host");
    return cli_usage_error(ctx, "unknown action \"%s\": add, list or remove", v);
}

/* --- SMTP AUTH accounts --- */

static int account_list(struct cli_ctx *ctx)
{
    json_t *all = cli_api_all(ctx, "/api/v1/outbound/accounts");
    if (all == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(all);
        return CLI_OK;
    }
    static const char *const hdr[] = { "NAME", "STATUS", "COMMENT", "CREATED" };
    struct cli_table *t = cli_table_new(4, hdr);
    size_t i;
    json_t *a;
    json_array_foreach(all, i, a) {
        const char *row[4] = { jstr(a, "name"),
                               json_is_true(json_object_get(a, "disabled")) ? "disabled" : "enabled",
                               jstr(a, "comment"), jstr(a, "created") };
        cli_table_add(t, row);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    json_decref(all);
    return CLI_OK;
}

/* account_password_body - {"password"} from --password-file, or {} (generate) */
static json_t *account_password_body(struct cli_ctx *ctx, json_t *body)
{
    const char *file = cli_opt(ctx, "password-file");
    if (file == NULL)
        return body;
    char *pw = read_password_file(ctx, file);
    if (pw == NULL) {
        json_decref(body);
        return NULL;
    }
    json_object_set_new(body, "password", json_string(pw));
    memset(pw, 0, strlen(pw));
    free(pw);
    return body;
}

/* account_print - the account line, and a generated password once */
static void account_print(struct cli_ctx *ctx, json_t *r, const char *verb)
{
    if (ctx->json) {
        cli_print_json(r);
        return;
    }
    char *n = cli_safe(jstr(r, "name"));
    printf("%s SMTP account %s\n", verb, n);
    const char *pw = jstr(r, "password");
    if (pw != NULL)
        printf("password: %s\n(shown once: Moat keeps only its hash)\n", pw);
    free(n);
    json_decref(r);
}

static int account_add(struct cli_ctx *ctx)
{
    json_t *body = json_pack("{s:s}", "name", ctx->args[1]);
    if (cli_opt(ctx, "comment"))
        json_object_set_new(body, "comment", json_string(cli_opt(ctx, "comment")));
    body = account_password_body(ctx, body);
    if (body == NULL)
        return CLI_FAIL;
    json_t *r = cli_api(ctx, "POST", "/api/v1/outbound/accounts", body, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    account_print(ctx, r, "added");
    return CLI_OK;
}

static int account_passwd(struct cli_ctx *ctx)
{
    json_t *body = account_password_body(ctx, json_object());
    if (body == NULL)
        return CLI_FAIL;
    char *e = cli_escape(ctx->args[1]);
    char *p = xasprintf("/api/v1/outbound/accounts/%s/password", e);
    free(e);
    json_t *r = cli_api(ctx, "POST", p, body, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    account_print(ctx, r, "new password for");
    return CLI_OK;
}

static int account_remove(struct cli_ctx *ctx)
{
    char *e = cli_escape(ctx->args[1]);
    char *p = xasprintf("/api/v1/outbound/accounts/%s", e);
    free(e);
    json_t *r = cli_api(ctx, "DELETE", p, NULL, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    json_decref(r);
    return removed(ctx, "SMTP account", ctx->args[1]);
}

int cli_outbound_account(struct cli_ctx *ctx)
{
    const char *v = ctx->args[0];
    if (strcmp(v, "list") == 0)
        return sub_args(ctx, 0) != CLI_OK ? CLI_USAGE : account_list(ctx);
    if (strcmp(v, "add") == 0)
        return sub_args(ctx, 1) != CLI_OK ? CLI_USAGE : account_add(ctx);
    if (strcmp(v, "passwd") == 0)
        return sub_args(ctx, 1) != CLI_OK ? CLI_USAGE : account_passwd(ctx);
    if (strcmp(v, "remove") == 0)
        return sub_args(ctx, 1) != CLI_OK ? CLI_USAGE : account_remove(ctx);
    return cli_usage_error(ctx, "unknown action \"%s\": add, list, passwd or remove", v);
}

/* --- inbound TLS requirement --- */

static int tls_list(struct cli_ctx *ctx)
{
    json_t *all = cli_api_all(ctx, "/api/v1/tls/inbound");
    if (all == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(all);
        return CLI_OK;
    }
    size_t i;
    json_t *d;
    json_array_foreach(all, i, d) {
        char *s = cli_safe(jstr(d, "domain"));
        printf("%s\n", s);
        free(s);
    }
    json_decref(all);
    return CLI_OK;
}

static int tls_add(struct cli_ctx *ctx)
{
    json_t *body = json_pack("{s:s}", "domain", ctx->args[1]);
    if (cli_opt(ctx, "comment"))
        json_object_set_new(body, "comment", json_string(cli_opt(ctx, "comment")));
    json_t *r = cli_api(ctx, "POST", "/api/v1/tls/inbound", body, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    char *s = cli_safe(jstr(r, "domain"));
    printf("mail from %s (and its subdomains) must now arrive under TLS\n", s);
    free(s);
    json_decref(r);
    return CLI_OK;
}

static int tls_remove(struct cli_ctx *ctx)
{
    char *e = cli_escape(ctx->args[1]);
    char *p = xasprintf("/api/v1/tls/inbound/%s", e);
    free(e);
    json_t *r = cli_api(ctx, "DELETE", p, NULL, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    json_decref(r);
    return removed(ctx, "domain", ctx->args[1]);
}

int cli_tls_inbound(struct cli_ctx *ctx)
{
    const char *v = ctx->args[0];
    if (strcmp(v, "list") == 0)
        return sub_args(ctx, 0) != CLI_OK ? CLI_USAGE : tls_list(ctx);
    if (strcmp(v, "add") == 0)
        return sub_args(ctx, 1) != CLI_OK ? CLI_USAGE : tls_add(ctx);
    if (strcmp(v, "remove") == 0)
        return sub_args(ctx, 1) != CLI_OK ? CLI_USAGE : tls_remove(ctx);
    return cli_usage_error(ctx, "unknown action \"%s\": add, list or remove", v);
}
