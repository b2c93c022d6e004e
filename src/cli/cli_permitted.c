/*
 * cli_permitted.c - `moat permitted add|list|remove|import` (the
 * organisation's permitted senders) and `moat permitted user ADDRESS
 * add|list|remove` (one user's, manual and auto-allowed), over
 * /api/v1/permitted-senders and /api/v1/users/{address}/permitted-senders.
 *
 * The import sends the file as text/csv in parts below the daemon's
 * http_max_body, split between records, each with ?first_line= so the
 * daemon reports the file's line numbers; it prints each refused row with
 * its line number and fails (exit 1) when any row was refused, after
 * importing the good ones.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

#define IMPORT_PART (512 * 1024)         /* below the default http_max_body (1M) */
#define IMPORT_MAX_RECORD (64 * 1024)    /* a record longer is refused by the daemon anyway */

/* base_path - the list's path: the organisation's, or user's (caller frees) */
static char *base_path(const char *user)
{
    if (user == NULL)
        return xstrdup("/api/v1/permitted-senders");
    char *e = cli_escape(user);
    char *p = xasprintf("/api/v1/users/%s/permitted-senders", e);
    free(e);
    return p;
}

static int do_list(struct cli_ctx *ctx, const char *user)
{
    char *path = base_path(user);
    json_t *all = cli_api_all(ctx, path);
    free(path);
    if (all == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(all);
        return CLI_OK;
    }
    static const char *const hdr_org[] = { "ID", "SENDER", "COMMENT", "CREATED", "BY" };
    static const char *const hdr_user[] = { "ID", "SENDER", "SOURCE", "LAST SEEN", "EXPIRES",
                                            "COMMENT" };
    struct cli_table *t = cli_table_new(user ? 6 : 5, user ? hdr_user : hdr_org);
    size_t i;
    json_t *e;
    json_array_foreach(all, i, e) {
        char id[32];
        xsnprintf(id, sizeof id, "%lld", (long long)json_integer_value(json_object_get(e, "id")));
        if (user) {
            const char *exp = cli_jstr(e, "expires");
            const char *row[6] = { id, cli_jstr(e, "value"), cli_jstr(e, "source"), cli_jstr(e, "last_seen"),
                                   exp[0] ? exp : "never", cli_jstr(e, "comment") };
            cli_table_add(t, row);
        } else {
            const char *row[5] = { id, cli_jstr(e, "value"), cli_jstr(e, "comment"), cli_jstr(e, "created"),
                                   cli_jstr(e, "created_by") };
            cli_table_add(t, row);
        }
    }
    if (json_array_size(all) == 0)
        printf("no permitted senders%s%s\n", user ? " for " : "", user ? user : "");
    else
        cli_table_print(t, stdout);
    cli_table_free(t);
    json_decref(all);
    return CLI_OK;
}

static int do_add(struct cli_ctx *ctx, const char *user, const char *value)
{
    json_t *body = json_pack("{s:s}", "value", value);
    if (cli_opt(ctx, "comment"))
        json_object_set_new(body, "comment", json_string(cli_opt(ctx, "comment")));
    char *path = base_path(user);
    json_t *r = cli_api(ctx, "POST", path, body, NULL, NULL);
    free(path);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    char *v = cli_safe(cli_jstr(r, "value"));
    char *u = user ? cli_safe(user) : NULL;
    printf("permitted sender %s (id %lld) added%s%s: it skips greylisting, DNSBL and spam "
           "scoring, never anti-spoofing, DMARC or size limits\n", v,
           (long long)json_integer_value(json_object_get(r, "id")), u ? " for " : "", u ? u : "");
    free(v);
    free(u);
    json_decref(r);
    return CLI_OK;
}

static int do_remove(struct cli_ctx *ctx, const char *user, const char *key)
{
    char *base = base_path(user);
    char *e = cli_escape(key);
    char *path = xasprintf("%s/%s", base, e);
    free(base);
    free(e);
    json_t *r = cli_api(ctx, "DELETE", path, NULL, NULL, NULL);
    free(path);
    if (r == NULL)
        return CLI_FAIL;
    json_decref(r);
    char *k = cli_safe(key);
    if (ctx->json)
        cli_print_json(json_pack("{s:s, s:b}", "permitted_sender", k, "removed", 1));
    else
        printf("removed permitted sender %s\n", k);
    free(k);
    return CLI_OK;
}

int cli_permitted_add(struct cli_ctx *ctx) { return do_add(ctx, NULL, ctx->args[0]); }
int cli_permitted_list(struct cli_ctx *ctx) { return do_list(ctx, NULL); }
int cli_permitted_remove(struct cli_ctx *ctx) { return do_remove(ctx, NULL, ctx->args[0]); }

/* cli_permitted_user - moat permitted user ADDRESS add VALUE | list | remove VALUE|ID */
int cli_permitted_user(struct cli_ctx *ctx)
{
    const char *user = ctx->args[0], *v = ctx->args[1];
    int extra = ctx->n_args - 2;
    if (strcmp(v, "list") == 0 && extra == 0)
        return do_list(ctx, user);
    if (strcmp(v, "add") == 0 && extra == 1)
        return do_add(ctx, user, ctx->args[2]);
    if (strcmp(v, "remove") == 0 && extra == 1)
        return do_remove(ctx, user, ctx->args[2]);
    if (strcmp(v, "list") == 0 || strcmp(v, "add") == 0 || strcmp(v, "remove") == 0)
        return cli_usage_error(ctx, "\"%s\" takes %d argument%s", v, strcmp(v, "list") ? 1 : 0,
                               strcmp(v, "list") ? "" : "s");
    return cli_usage_error(ctx, "unknown action \"%s\": add, list or remove", v);
}

/* --- the import: the file in parts below the daemon's body limit --- */

struct import_totals {
    json_int_t rows, created, unchanged, bad;
    json_t *errors;
};

/* send_part - one request with ?first_line; its report added to tot */
static int send_part(struct cli_ctx *ctx, const struct buf *part, size_t first_line,
                     struct import_totals *tot)
{
    char path[96];
    xsnprintf(path, sizeof path, "/api/v1/permitted-senders/import?first_line=%zu", first_line);
    json_t *r = cli_api_text(ctx, "POST", path, "text/csv", part->data, part->len, NULL);
    if (r == NULL)
        return -1;
    tot->rows += json_integer_value(json_object_get(r, "rows"));
    tot->created += json_integer_value(json_object_get(r, "created"));
    tot->unchanged += json_integer_value(json_object_get(r, "unchanged"));
    tot->bad += json_integer_value(json_object_get(r, "bad"));
    json_array_extend(tot->errors, json_object_get(r, "errors"));
    json_decref(r);
    return 0;
}

/* quotes_open - after this line, is a quoted field still open (given it was before)? */
static bool quotes_open(const char *line, size_t len, bool open)
{
    for (size_t i = 0; i < len; i++)
        if (line[i] == '"')
            open = !open;
    return open;
}

int cli_permitted_import(struct cli_ctx *ctx)
{
    const char *file = ctx->args[0];
    FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
    if (f == NULL)
        return cli_fail(ctx, "%s: %s", file, strerror(errno));
    struct import_totals tot = { .errors = json_array() };
    struct buf part, rec;
    buf_init(&part);
    buf_init(&rec);
    char *line = NULL;
    size_t cap = 0, lineno = 0, rec_start = 0, part_first = 1;
    bool open = false, failed = false;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (rec.len == 0)
            rec_start = lineno;
        buf_append(&rec, line, (size_t)n);
        open = quotes_open(line, (size_t)n, open);
        if (open && rec.len < IMPORT_MAX_RECORD)
            continue;        /* a quoted field goes on on the next line */
        open = false;        /* an over-long record: the daemon refuses it, we stay in step */
        if (part.len > 0 && part.len + rec.len > IMPORT_PART) {
            if (send_part(ctx, &part, part_first, &tot) < 0) {
                failed = true;
                break;
            }
            buf_reset(&part);
        }
        if (part.len == 0)
            part_first = rec_start;
        buf_append(&part, rec.data, rec.len);
        buf_reset(&rec);
    }
    if (!failed && ferror(f)) {
        cli_fail(ctx, "%s: %s", file, strerror(errno));
        failed = true;
    }
    if (!failed && rec.len > 0) {
        if (part.len == 0)
            part_first = rec_start;
        buf_append(&part, rec.data, rec.len);
    }
    if (!failed && lineno == 0) {
        cli_fail(ctx, "%s is empty: one address or domain a line (address_or_domain[,comment])",
                 file);
        failed = true;
    }
    if (!failed && part.len > 0 && send_part(ctx, &part, part_first, &tot) < 0)
        failed = true;
    free(line);
    buf_free(&part);
    buf_free(&rec);
    if (f != stdin)
        fclose(f);
    if (failed) {
        json_decref(tot.errors);
        return CLI_FAIL;
    }
    if (ctx->json) {
        cli_print_json(json_pack("{s:I, s:I, s:I, s:I, s:o}", "rows", tot.rows, "created",
                                 tot.created, "unchanged", tot.unchanged, "bad", tot.bad,
                                 "errors", tot.errors));
        return tot.bad > 0 ? CLI_FAIL : CLI_OK;
    }
    printf("%lld rows: %lld added, %lld already listed, %lld refused\n", (long long)tot.rows,
           (long long)tot.created, (long long)tot.unchanged, (long long)tot.bad);
    size_t i;
    json_t *e;
    json_array_foreach(tot.errors, i, e) {
        char *why = cli_safe(cli_jstr(e, "reason"));
        fprintf(stderr, "moat: permitted import: line %lld: %s\n",
                (long long)json_integer_value(json_object_get(e, "line")), why);
        free(why);
    }
    json_decref(tot.errors);
    return tot.bad > 0 ? CLI_FAIL : CLI_OK;
}
