/*
 * cli_settings.c - `moat settings [--runtime]`, `moat settings set KEY
 * VALUE` and `moat settings reset KEY`, through the API (/api/v1/settings).
 *
 * Listing shows every setting's effective value and where it comes from
 * (default, file, store, command-line).  set stores a runtime setting
 * (docs/settings.md) and moatd applies it at once, without a restart;
 * reset drops the stored value, back to moat.conf's or the default.  moatd
 * validates and audit-logs both; the CLI only shows what it answers.
 */
#include <stdlib.h>
#include <string.h>
#include "cli.h"

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* source_text - "file", or "command-line (stored 10M waits)" when a stored
 * value is outranked by moatd -o */
static char *source_text(json_t *s)
{
    const char *src = jstr(s, "source") ? jstr(s, "source") : "?";
    json_t *stored = json_object_get(s, "stored");
    if (json_is_object(stored) && strcmp(src, "store") != 0)
        return xasprintf("%s (stored %s waits)", src,
                         jstr(stored, "value") ? jstr(stored, "value") : "?");
    return xstrdup(src);
}

/* print_changed - "KEY = VALUE (source)" for each setting of an answer */
static void print_changed(json_t *r, const char *what)
{
    const char *key;
    json_t *s;
    json_object_foreach(json_object_get(r, "settings"), key, s) {
        char *k = cli_safe(key), *v = cli_safe(jstr(s, "value")), *src = source_text(s);
        printf("%s %s = %s (%s)\n", what, k, v, src);
        if (strncmp(src, "command-line", 12) == 0)
            cli_warn("%s is set on moatd's command line (-o), which outranks the stored "
                     "value until moatd runs without it", k);
        free(k);
        free(v);
        free(src);
    }
}

int cli_settings_list(struct cli_ctx *ctx)
{
    json_t *r = cli_api(ctx, "GET", "/api/v1/settings", NULL, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    bool runtime_only = cli_flag(ctx, "runtime");
    json_t *all = json_object_get(r, "settings");
    if (ctx->json) {
        json_t *out = json_object();
        const char *key;
        json_t *s;
        json_object_foreach(all, key, s)
            if (!runtime_only || json_is_true(json_object_get(s, "runtime")))
                json_object_set(out, key, s);
        json_decref(r);
        cli_print_json(json_pack("{s:o}", "settings", out));
        return CLI_OK;
    }
    static const char *const hdr[] = { "KEY", "VALUE", "SOURCE" };
    struct cli_table *t = cli_table_new(3, hdr);
    const char *key;
    json_t *s;
    json_object_foreach(all, key, s) {
        bool runtime = json_is_true(json_object_get(s, "runtime"));
        if (runtime_only && !runtime)
            continue;
        char *src = source_text(s);
        const char *val = jstr(s, "value");
        const char *cells[3] = { key, val && *val ? val : "(empty)", src };
        cli_table_add(t, cells);
        free(src);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    if (runtime_only)
        printf("\nchange one with: moat settings set KEY VALUE (applied at once, no restart)\n");
    json_decref(r);
    return CLI_OK;
}

int cli_settings_set(struct cli_ctx *ctx)
{
    json_t *body = json_object();
    json_object_set_new(body, ctx->args[0], json_string(ctx->args[1]));
    if (json_object_size(body) != 1) {
        json_decref(body);
        return cli_fail(ctx, "the key or the value is not valid UTF-8");
    }
    json_t *r = cli_api(ctx, "PATCH", "/api/v1/settings", body, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    print_changed(r, "set");
    json_decref(r);
    return CLI_OK;
}

int cli_settings_reset(struct cli_ctx *ctx)
{
    char *e = cli_escape(ctx->args[0]);
    char *path = xasprintf("/api/v1/settings/%s", e);
    free(e);
    json_t *r = cli_api(ctx, "DELETE", path, NULL, NULL, NULL);
    free(path);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    print_changed(r, "reset");
    json_decref(r);
    return CLI_OK;
}
