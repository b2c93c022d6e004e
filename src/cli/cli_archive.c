/*
 * cli_archive.c - `moat archive ...` over /api/v1/archive (issue 8):
 *   moat archive search QUERY... [--offset N] [--limit N]
 *   moat archive show ID [--eml]
 *   moat archive export QUERY... -o FILE
 *   moat archive stats | purge
 *   moat archive hold add ADDRESS [--reason TEXT] | list | remove ADDRESS
 * The words of QUERY are joined with spaces into one query (docs/archive.md:
 * from:, to:, subject:, before:, after:, has:attachment, words, "phrases").
 * Human output by default, --json for the API's answer; message text is the
 * sender's, so it is made terminal-safe before it is printed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"

#define HOLDS "/api/v1/archive/legal-holds"

/* query_of - the positional words from first on, joined (caller frees) */
static char *query_of(const struct cli_ctx *ctx, int first)
{
    struct buf b;
    buf_init(&b);
    for (int i = first; i < ctx->n_args; i++) {
        if (i > first)
            buf_append_str(&b, " ");
        buf_append_str(&b, ctx->args[i]);
    }
    char *q = xstrdup(buf_cstr(&b));
    buf_free(&b);
    return q;
}

/* print_text - s to stdout, terminal-safe but with its line breaks */
static void print_text(const char *s)
{
    char *safe = cli_safe(s);
    for (size_t i = 0; safe[i] && s[i]; i++)
        if (s[i] == '\n' || s[i] == '\t')
            safe[i] = s[i];
    fputs(safe, stdout);
    free(safe);
}

/* number_opt - --name N as a decimal number (text kept for the URL); -1 = bad */
static int number_opt(struct cli_ctx *ctx, const char *name, const char **out)
{
    const char *v = cli_opt(ctx, name);
    *out = v;
    if (v != NULL && (v[0] == '\0' || v[strspn(v, "0123456789")] != '\0')) {
        cli_usage_error(ctx, "--%s takes a whole number", name);
        return -1;
    }
    return 0;
}

/* short_date - "2026-11-29 10:11" of an ISO 8601 time */
static void short_date(char *dst, size_t size, const char *iso)
{
    if (strlen(iso) >= 16)
        xsnprintf(dst, size, "%.10s %.5s", iso, iso + 11);
    else
        str_copy(dst, size, iso[0] ? iso : "-");
}

int cli_archive_search(struct cli_ctx *ctx)
{
    const char *offset, *limit;
    if (number_opt(ctx, "offset", &offset) < 0 || number_opt(ctx, "limit", &limit) < 0)
        return CLI_USAGE;
    char *q = query_of(ctx, 0);
    char *eq = cli_escape(q);
    struct buf path;
    buf_init(&path);
    buf_printf(&path, "/api/v1/archive/messages?q=%s", eq);
    if (offset != NULL)
        buf_printf(&path, "&offset=%s", offset);
    if (limit != NULL)
        buf_printf(&path, "&limit=%s", limit);
    free(eq);
    json_t *r = cli_api(ctx, "GET", buf_cstr(&path), NULL, NULL, NULL);
    buf_free(&path);
    free(q);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    json_t *msgs = json_object_get(r, "messages");
    json_int_t total = json_integer_value(json_object_get(r, "total"));
    json_int_t off = json_integer_value(json_object_get(r, "offset"));
    bool capped = json_is_true(json_object_get(r, "total_capped"));
    if (json_array_size(msgs) == 0) {
        printf("no messages match (%s%lld in all)\n", capped ? "at least " : "", (long long)total);
        json_decref(r);
        return CLI_OK;
    }
    static const char *const hdr[] = { "ID", "DATE", "DIRECTION", "FROM", "TO", "SUBJECT" };
    struct cli_table *t = cli_table_new(6, hdr);
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m) {
        char id[32], when[32];
        xsnprintf(id, sizeof id, "%lld", (long long)json_integer_value(json_object_get(m, "id")));
        short_date(when, sizeof when, cli_jstr(m, "received"));
        const char *from = cli_jstr(m, "from");
        if (from[0] == '\0')
            from = cli_jstr(m, "sender");
        const char *row[6] = { id, when, cli_jstr(m, "direction"), from, cli_jstr(m, "to"),
                               cli_jstr(m, "subject") };
        cli_table_add(t, row);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    printf("\n%zu shown (from %lld) of %s%lld matching\n", json_array_size(msgs),
           (long long)off + 1, capped ? "at least " : "", (long long)total);
    json_decref(r);
    return CLI_OK;
}

static char *message_path(const char *id, const char *suffix)
{
    return cli_item_path("/api/v1/archive/messages", id, suffix);
}

static void print_arrival(json_t *a)
{
    struct buf b;
    buf_init(&b);
    buf_printf(&b, "arrival:  %s %s via %s from %s, sender <%s>", cli_jstr(a, "received"),
               cli_jstr(a, "direction"), cli_jstr(a, "source"), cli_jstr(a, "client_addr"),
               cli_jstr(a, "sender"));
    const char *journal = cli_jstr(a, "journal");
    if (journal[0] != '\0')
        buf_printf(&b, ", journal %s", journal);
    if (cli_jstr(a, "journal_error")[0] != '\0')
        buf_printf(&b, " (%s)", cli_jstr(a, "journal_error"));
    buf_append_str(&b, "\n");
    size_t k;
    json_t *rc;
    json_array_foreach(json_object_get(a, "recipients"), k, rc) {
        buf_printf(&b, "          to <%s> (%s)", cli_jstr(rc, "address"), cli_jstr(rc, "kind"));
        if (cli_jstr(rc, "expanded")[0] != '\0')
            buf_printf(&b, " expanded from %s", cli_jstr(rc, "expanded"));
        if (cli_jstr(rc, "forwarded")[0] != '\0')
            buf_printf(&b, " forwarded from %s", cli_jstr(rc, "forwarded"));
        buf_append_str(&b, "\n");
    }
    print_text(buf_cstr(&b));
    buf_free(&b);
}

int cli_archive_show(struct cli_ctx *ctx)
{
    const char *id = ctx->args[0];
    if (id[0] == '\0' || id[strspn(id, "0123456789")] != '\0')
        return cli_usage_error(ctx, "ID is the number moat archive search shows");
    if (cli_flag(ctx, "eml")) {
        char *p = message_path(id, "/eml");
        int rc = cli_api_download(ctx, p, stdout, NULL);
        free(p);
        return rc < 0 ? CLI_FAIL : CLI_OK;
    }
    char *p = message_path(id, "");
    json_t *r = cli_api(ctx, "GET", p, NULL, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    struct buf b;
    buf_init(&b);
    buf_printf(&b, "id:         %lld\nmessage-id: %s\nreceived:   %s\nsize:       %lld%s\n",
               (long long)json_integer_value(json_object_get(r, "id")), cli_jstr(r, "message_id"),
               cli_jstr(r, "received"), (long long)json_integer_value(json_object_get(r, "size")),
               json_is_true(json_object_get(r, "truncated")) ? " (indexed text truncated)" : "");
    print_text(buf_cstr(&b));
    buf_free(&b);
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(r, "arrivals"), i, v)
        print_arrival(v);
    buf_init(&b);
    buf_append_str(&b, "\n");
    json_array_foreach(json_object_get(r, "headers"), i, v)
        buf_printf(&b, "%s: %s\n", cli_jstr(v, "name"), cli_jstr(v, "value"));
    json_t *atts = json_object_get(r, "attachments");
    if (json_array_size(atts) > 0) {
        buf_append_str(&b, "\nattachments:\n");
        json_array_foreach(atts, i, v)
            buf_printf(&b, "  %s\n", json_string_value(v) && json_string_value(v)[0]
                                         ? json_string_value(v) : "(no name)");
    }
    buf_printf(&b, "\n%s\n", cli_jstr(r, "text"));
    print_text(buf_cstr(&b));
    buf_free(&b);
    json_decref(r);
    return CLI_OK;
}

/* count_messages - "From " separator lines of an mboxrd file */
static long count_messages(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char line[1024];
    long n = 0;
    bool bol = true;
    while (fgets(line, sizeof line, f) != NULL) {
        if (bol && strncmp(line, "From ", 5) == 0)
            n++;
        bol = strchr(line, '\n') != NULL;
    }
    fclose(f);
    return n;
}

int cli_archive_export(struct cli_ctx *ctx)
{
    const char *file = cli_opt(ctx, "output");
    if (file == NULL || file[0] == '\0')
        return cli_usage_error(ctx, "-o FILE (--output) names the mbox file to write");
    FILE *out = fopen(file, "wx");
    if (out == NULL)
        return cli_fail(ctx, "cannot create %s: %s", file,
                        errno == EEXIST ? "it exists (choose another name)" : strerror(errno));
    char *q = query_of(ctx, 0);
    char *eq = cli_escape(q);
    char *p = xasprintf("/api/v1/archive/export?q=%s", eq);
    free(eq);
    free(q);
    int rc = cli_api_download(ctx, p, out, NULL);
    free(p);
    if (fclose(out) != 0 && rc == 0) {
        cli_fail(ctx, "cannot write %s: %s", file, strerror(errno));
        rc = -1;
    }
    if (rc < 0) {
        unlink(file);
        return CLI_FAIL;
    }
    long n = count_messages(file);
    if (ctx->json)
        cli_print_json(json_pack("{s:s, s:I}", "file", file, "messages", (json_int_t)n));
    else
        printf("exported %ld message%s to %s (mbox)\n", n, n == 1 ? "" : "s", file);
    return CLI_OK;
}

int cli_archive_stats(struct cli_ctx *ctx)
{
    json_t *r = cli_api(ctx, "GET", "/api/v1/archive/stats", NULL, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    char ret[64];
    cli_format_duration(ret, sizeof ret, json_integer_value(json_object_get(r, "retention_seconds")));
    const char *oldest = cli_jstr(r, "oldest");
    printf("messages:          %lld (%lld arrivals)\n"
           "size:              %lld octets, %lld stored (compressed)\n"
           "journal reports:   %lld unwrapped, %lld malformed (kept as they came)\n"
           "oldest:            %s\n"
           "retention:         %s\n"
           "legal holds:       %lld\n",
           (long long)json_integer_value(json_object_get(r, "messages")),
           (long long)json_integer_value(json_object_get(r, "arrivals")),
           (long long)json_integer_value(json_object_get(r, "bytes")),
           (long long)json_integer_value(json_object_get(r, "stored_bytes")),
           (long long)json_integer_value(json_object_get(r, "journal_reports")),
           (long long)json_integer_value(json_object_get(r, "journal_malformed")),
           oldest[0] ? oldest : "-", ret,
           (long long)json_integer_value(json_object_get(r, "legal_holds")));
    json_t *e = json_object_get(r, "engine");
    if (json_is_object(e))
        printf("since start:       %lld archived (%lld duplicates), %lld pending, %lld failed, "
               "%lld purged\n",
               (long long)json_integer_value(json_object_get(e, "ingested")),
               (long long)json_integer_value(json_object_get(e, "duplicates")),
               (long long)json_integer_value(json_object_get(e, "pending")),
               (long long)json_integer_value(json_object_get(e, "failed")),
               (long long)json_integer_value(json_object_get(e, "purged")));
    json_decref(r);
    return CLI_OK;
}

int cli_archive_purge(struct cli_ctx *ctx)
{
    json_t *r = cli_api(ctx, "POST", "/api/v1/archive/purge", NULL, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    json_int_t n = json_integer_value(json_object_get(r, "purged"));
    printf("purged %lld message%s received before %s (legal holds spared)\n", (long long)n,
           n == 1 ? "" : "s", cli_jstr(r, "cutoff"));
    json_decref(r);
    return CLI_OK;
}

/* --- legal holds --- */

static int hold_list(struct cli_ctx *ctx)
{
    static const char *const hdr[] = { "ADDRESS", "REASON", "CREATED", "BY" };
    static const char *const keys[] = { "address", "reason", "created", "created_by" };
    return cli_list_table(ctx, HOLDS, "no legal holds", 4, hdr, keys);
}

int cli_archive_hold(struct cli_ctx *ctx)
{
    const char *sub = ctx->args[0];
    if (strcmp(sub, "list") == 0) {
        if (ctx->n_args != 1)
            return cli_usage_error(ctx, "\"list\" takes no argument");
        return hold_list(ctx);
    }
    if (ctx->n_args != 2)
        return cli_usage_error(ctx, "\"%s\" takes an address", sub);
    const char *addr = ctx->args[1];
    if (strcmp(sub, "add") == 0) {
        json_t *body = json_pack("{s:s}", "address", addr);
        if (cli_opt(ctx, "reason"))
            json_object_set_new(body, "reason", json_string(cli_opt(ctx, "reason")));
        json_t *r = cli_api(ctx, "POST", HOLDS, body, NULL, NULL);
        if (r == NULL)
            return CLI_FAIL;
        if (ctx->json) {
            cli_print_json(r);
            return CLI_OK;
        }
        char *a = cli_safe(cli_jstr(r, "address"));
        printf("legal hold on %s: retention never purges its mail until the hold is removed\n", a);
        free(a);
        json_decref(r);
        return CLI_OK;
    }
    if (strcmp(sub, "remove") == 0)
        return cli_delete_item(ctx, HOLDS, addr, addr, "address", "legal hold on %s removed\n");
    return cli_usage_error(ctx, "unknown sub-command \"%s\" (add, list, remove)", sub);
}
