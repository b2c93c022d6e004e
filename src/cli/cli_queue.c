/*
 * cli_queue.c - `moat queue ...` and `moat status`: requests to the running
 * moatd's API (/api/v1/queue, /api/v1/status).  The message objects come from
 * deliver_queue_list / deliver_queue_show; every field is optional here, so a
 * daemon that omits one (or adds new ones) still prints a sensible table.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cli.h"

#define QUEUE_DEFAULT_LIMIT 100
#define QUEUE_MAX_LIMIT 1000
#define QID_MAX 64

/* --- reading optional fields --- */

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* jint - integer (or real) field; false when absent */
static bool jint(json_t *o, const char *key, int64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (json_is_integer(v))
        *out = (int64_t)json_integer_value(v);
    else if (json_is_real(v))
        *out = (int64_t)json_real_value(v);
    else
        return false;
    return true;
}

static void fmt_time_field(json_t *o, const char *key, char *dst, size_t size)
{
    int64_t t;
    if (!jint(o, key, &t) || t <= 0)
        xsnprintf(dst, size, "-");
    else
        cli_format_time(dst, size, t);
}

static void fmt_size(json_t *o, const char *key, char *dst, size_t size)
{
    int64_t v;
    if (!jint(o, key, &v) || v < 0)
        xsnprintf(dst, size, "-");
    else if (v >= 1024 * 1024)
        xsnprintf(dst, size, "%.1fM", (double)v / (1024.0 * 1024.0));
    else if (v >= 1024)
        xsnprintf(dst, size, "%.1fk", (double)v / 1024.0);
    else
        xsnprintf(dst, size, "%lld", (long long)v);
}

/* clip - at most max code points of s, with "..." when cut */
static void clip(char *dst, size_t size, const char *s, size_t max)
{
    size_t cps = 0, i = 0;
    if (s == NULL)
        s = "-";
    for (; s[i] != '\0'; i++) {
        if (((unsigned char)s[i] & 0xc0) != 0x80 && cps++ == max)
            break;
    }
    if (s[i] == '\0')
        xsnprintf(dst, size, "%s", s);
    else
        xsnprintf(dst, size, "%.*s...", (int)i, s);
}

static const char *sender_of(json_t *m)
{
    const char *s = jstr(m, "sender");
    if (s == NULL)
        return "-";
    return s[0] ? s : "<>";
}

static int check_qid(struct cli_ctx *ctx, const char *qid)
{
    size_t n = strnlen(qid, QID_MAX + 1);
    if (n == 0 || n > QID_MAX)
        return cli_usage_error(ctx, "a queue id is 1 to %d characters", QID_MAX);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)qid[i] <= 0x20 || qid[i] == 0x7f)
            return cli_usage_error(ctx, "a queue id has no spaces or control characters");
    return CLI_OK;
}

int cli_queue_list(struct cli_ctx *ctx)
{
    int64_t limit = QUEUE_DEFAULT_LIMIT;
    const char *lim = cli_opt(ctx, "limit"), *cursor = cli_opt(ctx, "cursor");

    if (lim != NULL) {
        char *end;
        long long v = strtoll(lim, &end, 10);
        if (lim[0] < '0' || lim[0] > '9' || *end != '\0' || v < 1 || v > QUEUE_MAX_LIMIT)
            return cli_usage_error(ctx, "--limit must be a number from 1 to %d",
                                   QUEUE_MAX_LIMIT);
        limit = v;
    }
    if (cursor != NULL && check_qid(ctx, cursor) != CLI_OK)
        return CLI_USAGE;
    char *path;
    if (cursor != NULL) {
        char *e = cli_escape(cursor);
        path = xasprintf("/api/v1/queue?limit=%lld&cursor=%s", (long long)limit, e);
        free(e);
    } else {
        path = xasprintf("/api/v1/queue?limit=%lld", (long long)limit);
    }
    json_t *page = cli_api(ctx, "GET", path, NULL, NULL, NULL);
    free(path);
    if (page == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(page);
        return CLI_OK;
    }
    json_t *res = json_object_get(page, "items");
    if (!json_is_array(res)) {
        json_decref(page);
        return cli_fail(ctx, "moatd sent an unexpected answer (not a list)");
    }
    json_incref(res);
    const char *next_cursor = json_string_value(json_object_get(page, "next_cursor"));
    char *next_page = next_cursor ? cli_safe(next_cursor) : NULL;
    json_decref(page);
    size_t n = json_array_size(res);
    if (n == 0) {
        printf(cursor ? "no more queued messages\n" : "the queue is empty\n");
        json_decref(res);
        free(next_page);
        return CLI_OK;
    }
    static const char *const hdr[] = { "QUEUE ID", "RECEIVED", "SIZE", "SENDER", "RECIPIENTS",
                                       "TRIES", "NEXT ATTEMPT", "LAST ERROR" };
    struct cli_table *t = cli_table_new(8, hdr);
    const char *last_id = NULL;
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(res, i);
        char received[32], size[32], rcpts[300], tries[24], next[32], lasterr[200];
        fmt_time_field(m, "received", received, sizeof received);
        fmt_size(m, "size", size, sizeof size);
        json_t *rs = json_object_get(m, "rcpts");
        size_t nr = json_array_size(rs);
        const char *first = nr ? jstr(json_array_get(rs, 0), "addr") : NULL;
        if (nr == 0)
            xsnprintf(rcpts, sizeof rcpts, "-");
        else if (nr == 1)
            clip(rcpts, sizeof rcpts, first ? first : "?", 60);
        else {
            char f[200];
            clip(f, sizeof f, first ? first : "?", 50);
            xsnprintf(rcpts, sizeof rcpts, "%s (+%zu)", f, nr - 1);
        }
        int64_t v;
        if (jint(m, "attempts", &v))
            xsnprintf(tries, sizeof tries, "%lld", (long long)v);
        else
            xsnprintf(tries, sizeof tries, "-");
        fmt_time_field(m, "next_attempt", next, sizeof next);
        const char *le = jstr(m, "last_error");
        clip(lasterr, sizeof lasterr, le && le[0] ? le : "-", 60);
        char sender[200];
        clip(sender, sizeof sender, sender_of(m), 50);
        const char *id = jstr(m, "id");
        if (id != NULL)
            last_id = id;
        const char *row[] = { id ? id : "-", received, size, sender, rcpts, tries, next,
                              lasterr };
        cli_table_add(t, row);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    (void)last_id;
    if (next_page != NULL)
        printf("\n%zu messages shown; next page: moat queue list --limit %lld --cursor %s\n", n,
               (long long)limit, next_page);
    free(next_page);
    json_decref(res);
    return CLI_OK;
}

/* print_field - "Label:  value" with the value made terminal-safe */
static void print_field(const char *label, const char *value)
{
    char *safe = cli_safe(value);
    printf("%-14s %s\n", label, safe);
    free(safe);
}

int cli_queue_show(struct cli_ctx *ctx)
{
    if (check_qid(ctx, ctx->args[0]) != CLI_OK)
        return CLI_USAGE;
    char *e = cli_escape(ctx->args[0]);
    char *path = xasprintf("/api/v1/queue/%s", e);
    free(e);
    json_t *res = cli_api(ctx, "GET", path, NULL, NULL, NULL);
    free(path);
    if (res == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(res);
        return CLI_OK;
    }
    if (!json_is_object(res)) {
        json_decref(res);
        return cli_fail(ctx, "moatd sent an unexpected answer (not an object)");
    }
    char buf[64];
    int64_t v;
    print_field("Queue ID:", jstr(res, "id") ? jstr(res, "id") : ctx->args[0]);
    print_field("Sender:", sender_of(res));
    fmt_time_field(res, "received", buf, sizeof buf);
    print_field("Received:", buf);
    if (jint(res, "size", &v))
        xsnprintf(buf, sizeof buf, "%lld octets", (long long)v);
    else
        xsnprintf(buf, sizeof buf, "-");
    print_field("Size:", buf);
    if (jint(res, "attempts", &v))
        xsnprintf(buf, sizeof buf, "%lld", (long long)v);
    else
        xsnprintf(buf, sizeof buf, "-");
    print_field("Attempts:", buf);
    fmt_time_field(res, "next_attempt", buf, sizeof buf);
    print_field("Next attempt:", buf);
    const char *le = jstr(res, "last_error");
    print_field("Last error:", le && le[0] ? le : "-");

    json_t *rs = json_object_get(res, "rcpts");
    if (json_array_size(rs) > 0) {
        printf("\nRecipients:\n");
        static const char *const hdr[] = { "  ADDRESS", "STATE", "DIAGNOSTIC" };
        struct cli_table *t = cli_table_new(3, hdr);
        size_t i;
        json_t *r;
        json_array_foreach(rs, i, r) {
            char addr[300];
            const char *a = jstr(r, "addr");
            xsnprintf(addr, sizeof addr, "  %s", a ? a : "-");
            const char *row[] = { addr, jstr(r, "state"), jstr(r, "diag") };
            cli_table_add(t, row);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    const char *headers = jstr(res, "headers");
    if (headers == NULL)
        headers = jstr(res, "header");
    if (headers != NULL) {
        printf("\nHeader section:\n");
        /* line by line, so CR/LF are line breaks and other controls are masked */
        const char *p = headers;
        while (*p != '\0') {
            size_t len = strcspn(p, "\r\n");
            char *line = xstrndup(p, len);
            char *safe = cli_safe(line);
            printf("  %s\n", safe);
            free(safe);
            free(line);
            p += len;
            if (*p == '\r')
                p++;
            if (*p == '\n')
                p++;
        }
    }
    json_decref(res);
    return CLI_OK;
}

/* count_of - a count answer: an integer, or an object with "count" */
static bool count_of(json_t *res, int64_t *out)
{
    if (json_is_integer(res)) {
        *out = (int64_t)json_integer_value(res);
        return true;
    }
    return jint(res, "scheduled", out) || jint(res, "count", out);
}

int cli_queue_retry(struct cli_ctx *ctx)
{
    bool all = cli_flag(ctx, "all");
    if (all == (ctx->n_args == 1))
        return cli_usage_error(ctx, "give either a queue id or --all");
    if (!all && check_qid(ctx, ctx->args[0]) != CLI_OK)
        return CLI_USAGE;
    char *path;
    if (all) {
        path = xstrdup("/api/v1/queue/retry");
    } else {
        char *e = cli_escape(ctx->args[0]);
        path = xasprintf("/api/v1/queue/%s/retry", e);
        free(e);
    }
    json_t *res = cli_api(ctx, "POST", path, NULL, NULL, NULL);
    free(path);
    if (res == NULL)
        return CLI_FAIL;
    int64_t n;
    bool have = count_of(res, &n);
    if (ctx->json) {
        cli_print_json(res);
        return CLI_OK;
    }
    json_decref(res);
    if (have && n == 0 && !all)
        return cli_fail(ctx, "no queued message %s", ctx->args[0]);
    if (have)
        printf("%lld message%s scheduled for immediate delivery\n", (long long)n,
               n == 1 ? "" : "s");
    else
        printf("scheduled for immediate delivery\n");
    return CLI_OK;
}

int cli_queue_delete(struct cli_ctx *ctx)
{
    if (check_qid(ctx, ctx->args[0]) != CLI_OK)
        return CLI_USAGE;
    char *e = cli_escape(ctx->args[0]);
    char *path = xasprintf("/api/v1/queue/%s", e);
    free(e);
    json_t *res = cli_api(ctx, "DELETE", path, NULL, NULL, NULL);
    free(path);
    if (res == NULL)
        return CLI_FAIL;
    json_decref(res);
    if (ctx->json) {
        char *id = cli_safe(ctx->args[0]);
        cli_print_json(json_pack("{s:s, s:i}", "id", id, "deleted", 1));
        free(id);
        return CLI_OK;
    }
    printf("deleted %s (no notice was sent to the sender)\n", ctx->args[0]);
    return CLI_OK;
}

/* print_flat - nested objects as dotted keys, one "key: value" line each */
static void print_flat(const char *prefix, json_t *o, struct cli_table *t)
{
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        char name[200], val[200];
        xsnprintf(name, sizeof name, "%s%s%s", prefix, prefix[0] ? "." : "", key);
        if (json_is_object(v)) {
            print_flat(name, v, t);
            continue;
        }
        if (json_is_string(v)) {
            clip(val, sizeof val, json_string_value(v), 120);
        } else if (json_is_integer(v) && strstr(key, "uptime") != NULL) {
            cli_format_duration(val, sizeof val, (int64_t)json_integer_value(v));
        } else {
            char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
            clip(val, sizeof val, text ? text : "?", 120);
            free(text);
        }
        const char *row[] = { name, val };
        cli_table_add(t, row);
    }
}

int cli_status(struct cli_ctx *ctx)
{
    json_t *res = cli_api(ctx, "GET", "/api/v1/status", NULL, NULL, NULL);
    if (res == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(res);
        return CLI_OK;
    }
    printf("moatd is running\n");
    if (json_is_object(res)) {
        struct cli_table *t = cli_table_new(2, NULL);
        print_flat("", res, t);
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    json_decref(res);
    return CLI_OK;
}
