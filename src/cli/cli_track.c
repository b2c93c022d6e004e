/*
 * cli_track.c - `moat track` over /api/v1/tracking (issue 11):
 *   moat track [--from S] [--to R] [--subject T] [--message-id M] [--qid Q]
 *              [--ip A] [--after T] [--before T] [--outcome O] [--limit N]
 *       a table: time, qid (NOQUEUE when never queued), from, to, outcome,
 *       subject; when exactly one message matches, its timeline instead
 *   moat track show ID|QID
 *       one message's timeline, one line per event:
 *       2026-11-29 10:11:12.345 UTC  rcpt      bob@example.com rejected 550 5.1.1 by recipient_validation: ...
 * Times are UTC, as the API gives them.  Human output by default, --json
 * for the API's answer; text a remote client or server sent is made
 * terminal-safe before it is printed.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"

/* the options and the query parameter each one sets */
static const struct { const char *opt, *param; } track_params[] = {
    { "from", "sender" },        { "to", "rcpt" },        { "subject", "subject" },
    { "message-id", "message_id" }, { "qid", "qid" },     { "ip", "client_ip" },
    { "after", "after" },        { "before", "before" },  { "outcome", "outcome" },
    { "limit", "limit" },
};

/* shown_time - "2026-11-29 10:11:12.345" of the API's ISO 8601 UTC time */
static void shown_time(char *dst, size_t size, const char *iso)
{
    size_t n = strlen(iso);
    if (n < 19) {
        str_copy(dst, size, iso[0] ? iso : "-");
        return;
    }
    xsnprintf(dst, size, "%.10s %.*s", iso, (int)(n - 12), iso + 11);   /* without the "Z" */
}

static int jint(json_t *o, const char *key)
{
    return (int)json_integer_value(json_object_get(o, key));
}

/* --- one event in words: what leads the line depends on its kind (a
 * table), then the verdict, the reply, and who decided --- */

static void lead_connect(struct buf *b, json_t *m, json_t *e)
{
    buf_printf(b, "from %s", cli_jstr(m, "client_ip")[0] ? cli_jstr(m, "client_ip") : "-");
    if (cli_jstr(m, "helo")[0])
        buf_printf(b, " (%s)", cli_jstr(m, "helo"));
    if (cli_jstr(e, "tls")[0])
        buf_printf(b, " TLS %s", cli_jstr(e, "tls"));
}

static void lead_mail(struct buf *b, json_t *m, json_t *e)
{
    (void)e;
    buf_printf(b, "<%s>", cli_jstr(m, "sender"));
}

static void lead_queued(struct buf *b, json_t *m, json_t *e)
{
    buf_printf(b, "as %s", cli_jstr(m, "qid")[0] ? cli_jstr(m, "qid") : "-");
    if (json_object_get(e, "size"))
        buf_printf(b, ", %lld octets", (long long)json_integer_value(json_object_get(e, "size")));
}

static void lead_forwarded(struct buf *b, json_t *m, json_t *e)
{
    (void)m;
    buf_printf(b, "%s -> %s", cli_jstr(e, "rcpt"), cli_jstr(e, "detail"));
}

static void lead_dsn(struct buf *b, json_t *m, json_t *e)
{
    (void)m;
    buf_printf(b, "delivery status notification queued as %s", cli_jstr(e, "detail"));
}

static void lead_actor(struct buf *b, json_t *m, json_t *e)
{
    (void)m;
    const char *actor = cli_jstr(e, "actor");
    buf_printf(b, "by %s", actor[0] ? actor : "the system");
}

static void lead_archived(struct buf *b, json_t *m, json_t *e)
{
    (void)m;
    buf_printf(b, "in the archive (%s)", cli_jstr(e, "detail")[0] ? cli_jstr(e, "detail") : "-");
}

/* the kinds whose detail is already in their lead */
static const struct {
    const char *kind;
    void (*lead)(struct buf *b, json_t *m, json_t *e);
} leads[] = {
    { "connect", lead_connect },     { "mail", lead_mail },       { "queued", lead_queued },
    { "forwarded", lead_forwarded }, { "dsn", lead_dsn },         { "released", lead_actor },
    { "deleted", lead_actor },       { "archived", lead_archived },
};

/* describe_attempt - "RCPT REMOTE CODE DSN TEXT TLS RESULT in N ms" */
static void describe_attempt(struct buf *b, json_t *e)
{
    const char *tls = cli_jstr(e, "tls"), *reason = cli_jstr(e, "reason");
    buf_append_str(b, cli_jstr(e, "rcpt"));
    if (cli_jstr(e, "remote")[0])
        buf_printf(b, " %s", cli_jstr(e, "remote"));
    if (json_object_get(e, "code"))
        buf_printf(b, " %d", jint(e, "code"));
    if (cli_jstr(e, "dsn")[0])
        buf_printf(b, " %s", cli_jstr(e, "dsn"));
    if (reason[0])
        buf_printf(b, " %s", reason);
    bool clear = tls[0] == '\0' || strcmp(tls, "none") == 0;
    buf_printf(b, " %s %s in %d ms", clear ? "no TLS" : tls, cli_jstr(e, "result"),
               jint(e, "latency_ms"));
}

/* describe - what one event of message m says, in words */
static void describe(struct buf *b, json_t *m, json_t *e)
{
    const char *kind = cli_jstr(e, "kind"), *result = cli_jstr(e, "result");
    const char *check = cli_jstr(e, "check"), *reason = cli_jstr(e, "reason");
    if (strcmp(kind, "attempt") == 0) {
        describe_attempt(b, e);
        return;
    }
    bool led = false;
    for (size_t i = 0; i < sizeof leads / sizeof leads[0] && !led; i++)
        if (strcmp(leads[i].kind, kind) == 0) {
            leads[i].lead(b, m, e);
            led = true;
        }
    if (!led)
        buf_append_str(b, cli_jstr(e, "rcpt"));
    if (result[0])
        buf_printf(b, " %s", result);
    if (json_object_get(e, "code"))
        buf_printf(b, " %d", jint(e, "code"));
    if (cli_jstr(e, "dsn")[0])
        buf_printf(b, " %s", cli_jstr(e, "dsn"));
    if (check[0])
        buf_printf(b, " by %s", check);
    if (reason[0])
        buf_printf(b, ": %s", reason);
    if (!led && cli_jstr(e, "detail")[0])
        buf_printf(b, " (%s)", cli_jstr(e, "detail"));
}

/* print_timeline - the answer of GET /api/v1/tracking/{id} */
static void print_timeline(json_t *r)
{
    json_t *m = json_object_get(r, "message");
    struct buf b = { 0 };
    const char *qid = cli_jstr(m, "qid"), *sender = cli_jstr(m, "sender");
    buf_printf(&b, "message %lld: %s, outcome %s\n",
               (long long)json_integer_value(json_object_get(m, "id")), qid[0] ? qid : "NOQUEUE",
               cli_jstr(m, "outcome"));
    buf_printf(&b, "from <%s> client %s", sender, cli_jstr(m, "client_ip")[0] ? cli_jstr(m, "client_ip") : "-");
    if (cli_jstr(m, "helo")[0])
        buf_printf(&b, " (%s)", cli_jstr(m, "helo"));
    buf_append_str(&b, "\n");
    if (cli_jstr(m, "subject")[0])
        buf_printf(&b, "subject: %s\n", cli_jstr(m, "subject"));
    if (cli_jstr(m, "message_id")[0])
        buf_printf(&b, "message-id: <%s>\n", cli_jstr(m, "message_id"));
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(r, "events"), i, e) {
        char when[48];
        shown_time(when, sizeof when, cli_jstr(e, "time"));
        struct buf what = { 0 };
        describe(&what, m, e);
        const char *w = buf_cstr(&what);
        buf_printf(&b, "%s  %-9s %s\n", when, cli_jstr(e, "kind"), w + strspn(w, " "));
        buf_free(&what);
    }
    /* the text is the senders' and the servers': no terminal controls, its line breaks kept */
    char *safe = cli_safe(buf_cstr(&b));
    const char *src = buf_cstr(&b);
    for (size_t k = 0; safe[k]; k++)
        if (src[k] == '\n')
            safe[k] = '\n';
    fputs(safe, stdout);
    free(safe);
    buf_free(&b);
}

/* show - GET /api/v1/tracking/{id} and print it */
static int show(struct cli_ctx *ctx, const char *id)
{
    char *path = cli_item_path("/api/v1/tracking", id, NULL);
    json_t *r = cli_api(ctx, "GET", path, NULL, NULL, NULL);
    free(path);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json)
        cli_print_json(r);
    else {
        print_timeline(r);
        json_decref(r);
    }
    return CLI_OK;
}

int cli_track_show(struct cli_ctx *ctx)
{
    return show(ctx, ctx->args[0]);
}

int cli_track(struct cli_ctx *ctx)
{
    struct buf path = { 0 };
    buf_append_str(&path, "/api/v1/tracking");
    char sep = '?';
    for (size_t i = 0; i < sizeof track_params / sizeof track_params[0]; i++) {
        const char *v = cli_opt(ctx, track_params[i].opt);
        if (v == NULL)
            continue;
        char *e = cli_escape(v);
        buf_printf(&path, "%c%s=%s", sep, track_params[i].param, e);
        free(e);
        sep = '&';
    }
    json_t *r = cli_api(ctx, "GET", buf_cstr(&path), NULL, NULL, NULL);
    buf_free(&path);
    if (r == NULL)
        return CLI_FAIL;
    json_t *items = json_object_get(r, "items");
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    if (json_array_size(items) == 0) {
        printf("no tracked messages match\n");
        json_decref(r);
        return CLI_OK;
    }
    if (json_array_size(items) == 1) {
        /* one message found: its timeline is what was asked for */
        char id[24];
        xsnprintf(id, sizeof id, "%lld",
                  (long long)json_integer_value(json_object_get(json_array_get(items, 0), "id")));
        json_decref(r);
        return show(ctx, id);
    }
    static const char *const hdr[] = { "TIME", "QID", "FROM", "TO", "OUTCOME", "SUBJECT" };
    struct cli_table *t = cli_table_new(6, hdr);
    size_t i;
    json_t *m;
    json_array_foreach(items, i, m) {
        char when[48];
        struct buf to = { 0 };
        shown_time(when, sizeof when, cli_jstr(m, "first"));
        size_t k;
        json_t *a;
        json_array_foreach(json_object_get(m, "rcpts"), k, a) {
            if (k > 0)
                buf_append_str(&to, ",");
            buf_append_str(&to, cli_jstr(a, "address"));
        }
        const char *qid = cli_jstr(m, "qid"), *sender = cli_jstr(m, "sender");
        const char *row[6] = { when, qid[0] ? qid : "NOQUEUE", sender[0] ? sender : "<>",
                               to.len ? buf_cstr(&to) : "-", cli_jstr(m, "outcome"),
                               cli_jstr(m, "subject") };
        cli_table_add(t, row);
        buf_free(&to);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    if (json_is_string(json_object_get(r, "next_cursor")))
        printf("(more: narrow the search, or raise --limit)\n");
    json_decref(r);
    return CLI_OK;
}
