/*
 * api_archive.c - /api/v1/archive/...: search the archive, view one
 * message, download it as .eml, export a search as mbox, the archive's
 * figures, the retention purge and legal holds (issue 8).
 *
 * Who sees what.  Every search route needs ARCHIVE_SEARCH (every role
 * holds it); the handler then scopes it by role (archive_access):
 *   admin        everything, with snippets, view and .eml;
 *   basic_admin  metadata only: from:, to:, subject:, before:, after:,
 *                has:attachment; a free-text term, a view or a download
 *                reads message content, a protected action: 403
 *                "protected" naming the parameter;
 *   user         only messages of their own address (the account name
 *                when it is one; otherwise 403), with snippets, view and
 *                .eml of those.  Another person's message is 404, as if it
 *                did not exist.
 * Export (mbox) needs ARCHIVE_EXPORT, the purge and legal holds
 * ARCHIVE_ADMIN: administrators only.
 *
 * Every search (archive.search, target the query), view (archive.view),
 * download (archive.download) and export (archive.export) is audit-logged,
 * as are purges and legal hold changes; never with message content.
 *
 * Threads: handlers run on HTTP workers with that thread's archive handle
 * (api_archive_store); the engine's counters and the runtime settings
 * (archive_retention, the MIME bounds a view extracts with) belong to the
 * loop (api_loop_call).  An export streams
 * message by message from its own archive handle, so its memory is one
 * message, not the mailbox.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include "../archive/archive.h"
#include "../archive/archive_mime.h"
#include "../archive/archive_query.h"
#include "../policy/screen_clock.h"
#include "api_priv.h"
#include "api_archive.h"

#define ARCHIVE_COUNT_CAP 10000      /* matches counted for "total" */
#define ARCHIVE_PAGE_DEFAULT 50
#define ARCHIVE_PAGE_MAX 500
#define ARCHIVE_OFFSET_MAX 1000000   /* deep paging: narrow the query instead */
/* messages in one mbox export (documented in docs/archive.md and openapi.yaml) */
#define ARCHIVE_EXPORT_MAX 100000
#define ARCHIVE_VIEW_TEXT_MAX (256u * 1024)   /* text of one message in a view */
#define ARCHIVE_VIEW_HEADERS_MAX 1000         /* header fields listed in a view */

/* --- who may see what --- */

enum archive_level { SEE_ALL, SEE_METADATA, SEE_OWN };

struct archive_access {
    enum archive_level level;
    char owner[256];                   /* SEE_OWN: the lower-case address */
    struct store_archive_scope scope;
};

/* plain_address - "local@domain" without spaces or controls */
static bool plain_address(const char *s)
{
    const char *at = strchr(s, '@');
    if (at == NULL || at == s || at[1] == '\0' || strchr(at + 1, '@') != NULL)
        return false;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == '<' || *p == '>')
            return false;
    return true;
}

/* archive_access - the caller's level and scope; -1 after a 403 */
static int archive_access(struct api_request *req, struct api_response *resp,
                          struct archive_access *a)
{
    memset(a, 0, sizeof *a);
    switch (req->who->role) {
    case AUTH_ROLE_ADMIN:
        a->level = SEE_ALL;
        a->scope.snippets = true;
        return 0;
    case AUTH_ROLE_BASIC_ADMIN:
        a->level = SEE_METADATA;
        return 0;
    case AUTH_ROLE_USER:
        if (!plain_address(req->who->name) ||
            str_copy(a->owner, sizeof a->owner, req->who->name) < 0) {
            api_error(resp, 403, "protected", NULL, "the account %s is not a mail address: a "
                      "user searches only the mail of their own address", req->who->name);
            return -1;
        }
        str_lower(a->owner);
        a->level = SEE_OWN;
        a->scope.owner = a->owner;
        a->scope.snippets = true;
        return 0;
    default:
        api_error(resp, 403, "forbidden", NULL, "this role may not search the archive");
        return -1;
    }
}

/* content_refused - a basic administrator asked for message content */
static void content_refused(struct api_response *resp, const char *field, const char *what)
{
    api_error(resp, 403, "protected", field, "%s reads message content, a protected action: "
              "only an administrator may (a basic administrator searches from:, to:, subject:, "
              "before:, after: and has:attachment)", what);
}

/* everything, no snippets: an export (administrators only) */
static const struct store_archive_scope scope_all = { NULL, false };

/* --- small helpers --- */

/* api_json_text - s as a JSON string; NULL -> null; invalid UTF-8 octets become '?' */
json_t *api_json_text(const char *s)
{
    if (s == NULL)
        return json_null();
    json_t *j = json_string(s);
    if (j != NULL)
        return j;
    char *c = xstrdup(s);
    for (unsigned char *p = (unsigned char *)c; *p; p++)
        if (*p >= 0x80)
            *p = '?';
    j = json_string(c);
    free(c);
    return j ? j : json_string("");
}

/* jtextn - the same for len octets that may hold NULs */
static json_t *jtextn(const char *s, size_t len)
{
    char *c = xstrndup(s, len);
    for (size_t i = 0; i < len; i++)
        if (c[i] == '\0')
            c[i] = ' ';
    json_t *j = api_json_text(c);
    free(c);
    return j;
}

/* number_param - ?name= as a whole number in [min, max]; def when absent;
 * -1 after a 400 naming it */
static int number_param(struct api_request *req, struct api_response *resp, const char *name,
                        size_t min, size_t max, size_t def, size_t *out)
{
    const char *v = api_query(req, name);
    *out = def;
    if (v == NULL)
        return 0;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (v[0] < '0' || v[0] > '9' || *end != '\0' || errno != 0 || n < min || n > max) {
        api_error(resp, 400, "invalid_parameter", name, "%s must be a whole number from %zu to %zu",
                  name, min, max);
        return -1;
    }
    *out = (size_t)n;
    return 0;
}

/* parse_query - ?q= into *q; -1 after a 400 naming "q" */
static int parse_query(struct api_request *req, struct api_response *resp, const char **text,
                       struct store_archive_query *q)
{
    struct error err = {0};
    const char *s = api_query(req, "q");
    *text = s ? s : "";
    memset(q, 0, sizeof *q);
    if (!str_valid_utf8(*text, strlen(*text))) {
        api_error(resp, 400, "invalid_query", "q", "the query is not valid UTF-8");
        return -1;
    }
    if (archive_query_parse(*text, q, &err) < 0) {
        api_error(resp, 400, "invalid_query", "q", "%s", err.msg[0] ? err.msg : "bad query");
        return -1;
    }
    return 0;
}

/* audit - an audit entry whose after is made for it (api_audit copies it) */
static void audit(struct api_request *req, const char *action, const char *target, json_t *after)
{
    api_audit(req, action, target, NULL, after);
    json_decref(after);
}

/* archive_handle - the thread's archive database; NULL after a 503 */
static struct store_archive *archive_handle(struct api_request *req, struct api_response *resp)
{
    struct error err = {0};
    struct store_archive *sa = api_archive_store(req, &err);
    if (sa == NULL)
        api_error(resp, 503, "archive_unavailable", NULL, "the archive database cannot be "
                  "opened: %s", err.msg);
    return sa;
}

/* id_param - the {id} path segment as a message id; -1 after a 400 */
static int id_param(struct api_request *req, struct api_response *resp, int64_t *id)
{
    const char *s = req->n_params > 0 ? req->params[0] : "";
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno != 0 || v <= 0) {
        char shown[60];
        api_error(resp, 400, "invalid_field", "id", "%s is not an archived message id",
                  log_quote(shown, sizeof shown, s));
        return -1;
    }
    *id = (int64_t)v;
    return 0;
}

/* --- search --- */

static json_t *hit_json(const struct store_archive_hit *h, bool snippets)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer((json_int_t)h->id));
    json_object_set_new(o, "received", api_time_json(h->received));
    json_object_set_new(o, "direction", api_json_text(h->direction));
    json_object_set_new(o, "message_id", api_json_text(h->message_id));
    json_object_set_new(o, "sender", api_json_text(h->sender));
    json_object_set_new(o, "from", api_json_text(h->from));
    json_object_set_new(o, "to", api_json_text(h->to));
    json_object_set_new(o, "subject", api_json_text(h->subject));
    json_object_set_new(o, "size", json_integer((json_int_t)h->size));
    json_object_set_new(o, "attachments", json_integer((json_int_t)h->n_attachments));
    if (snippets && h->snippet != NULL)
        json_object_set_new(o, "snippet", api_json_text(h->snippet));
    return o;
}

void api_archive_search(struct api_request *req, struct api_response *resp)
{
    struct archive_access acc;
    struct store_archive_query q;
    const char *text;
    size_t offset, limit;

    if (archive_access(req, resp, &acc) < 0 ||
        number_param(req, resp, "offset", 0, ARCHIVE_OFFSET_MAX, 0, &offset) < 0 ||
        number_param(req, resp, "limit", 1, ARCHIVE_PAGE_MAX, ARCHIVE_PAGE_DEFAULT, &limit) < 0 ||
        parse_query(req, resp, &text, &q) < 0)
        return;
    if (acc.level == SEE_METADATA && q.n_text > 0) {
        archive_query_clear(&q);
        content_refused(resp, "q", "a free-text term");
        return;
    }
    struct store_archive *sa = archive_handle(req, resp);
    if (sa == NULL) {
        archive_query_clear(&q);
        return;
    }
    struct store_archive_hit *hits = NULL;
    size_t n = 0, total = 0;
    struct error err = {0};
    int rc = store_archive_search(sa, &q, &acc.scope, offset, limit, ARCHIVE_COUNT_CAP, &hits, &n,
                                  &total, &err);
    archive_query_clear(&q);
    if (rc < 0) {
        api_store_fail(resp, rc, &err);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(items, hit_json(&hits[i], acc.scope.snippets));
    store_archive_hits_free(hits, n);
    const char *scope = acc.level == SEE_ALL ? "all" : acc.level == SEE_METADATA ? "metadata"
                                                                                 : "own";
    audit(req, "archive.search", text,
          json_pack("{s:I, s:I, s:I, s:s}", "total", (json_int_t)total, "offset",
                    (json_int_t)offset, "returned", (json_int_t)n, "scope", scope));
    resp->body = json_pack("{s:I, s:b, s:I, s:I, s:o}", "total", (json_int_t)total,
                           "total_capped", total >= ARCHIVE_COUNT_CAP, "offset",
                           (json_int_t)offset, "limit", (json_int_t)limit, "messages", items);
}

/* --- what the loop owns: the engine's counters, the runtime settings --- */

struct loop_read {
    const struct api_config *cfg;
    bool engine;
    struct archive_stats st;
    int64_t now, retention;
    struct archive_limits lim;      /* the runtime MIME bounds of the archive */
    bool done;
};
static bool loop_read(struct api_request *req, struct api_response *resp, struct loop_read *r);

/* --- one message --- */

/* headers_json - the header section as [{name, value}] (folded lines joined) */
static json_t *headers_json(const char *msg, size_t len)
{
    json_t *list = json_array();
    size_t i = 0;
    const char *name = NULL;
    size_t name_len = 0;
    struct buf value;
    buf_init(&value);

    while (i < len) {
        size_t e = i;
        while (e < len && msg[e] != '\n')
            e++;
        size_t l = e - i;
        if (l > 0 && msg[i + l - 1] == '\r')
            l--;
        bool cont = l > 0 && (msg[i] == ' ' || msg[i] == '\t');
        if (!cont && name != NULL) {
            if (json_array_size(list) < ARCHIVE_VIEW_HEADERS_MAX)
                json_array_append_new(list, json_pack("{s:o, s:o}", "name", jtextn(name, name_len),
                                                      "value", jtextn(value.data ? value.data : "",
                                                                      value.len)));
            name = NULL;
            buf_reset(&value);
        }
        if (l == 0)
            break;                      /* the end of the header section */
        if (cont) {
            if (name != NULL)
                buf_append(&value, msg + i, l);
        } else {
            const char *colon = memchr(msg + i, ':', l);
            if (colon != NULL) {
                name = msg + i;
                name_len = (size_t)(colon - name);
                const char *v = colon + 1;
                while (v < msg + i + l && (*v == ' ' || *v == '\t'))
                    v++;
                buf_append(&value, v, (size_t)(msg + i + l - v));
            }
        }
        i = e + 1;
    }
    if (name != NULL && json_array_size(list) < ARCHIVE_VIEW_HEADERS_MAX)
        json_array_append_new(list, json_pack("{s:o, s:o}", "name", jtextn(name, name_len),
                                              "value", jtextn(value.data ? value.data : "",
                                                              value.len)));
    buf_free(&value);
    return list;
}

static json_t *arrival_json(const struct store_archive_arrival *a)
{
    json_t *rc = json_array();
    for (size_t i = 0; i < a->n_rcpts; i++) {
        const struct store_archive_rcpt_row *r = &a->rcpts[i];
        json_array_append_new(rc, json_pack("{s:o, s:o, s:o, s:o}", "address", api_json_text(r->addr),
                                            "kind", api_json_text(r->kind), "expanded", api_json_text(r->expanded),
                                            "forwarded", api_json_text(r->forwarded)));
    }
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "qid", api_json_text(a->qid),
                     "received", api_time_json(a->received), "direction", api_json_text(a->direction),
                     "source", api_json_text(a->source), "client_addr", api_json_text(a->client_addr),
                     "sender", api_json_text(a->sender), "recipients", rc, "journal", api_json_text(a->journal),
                     "journal_error", api_json_text(a->journal_error));
}

/* load - the message the caller may see, with its body decompressed; -1
 * after an answer (403 / 404 / 500) */
static int load(struct api_request *req, struct api_response *resp, const char *what,
                int64_t *id, struct store_archive_message *m, unsigned char **body, size_t *len)
{
    struct archive_access acc;
    struct error err = {0};

    memset(m, 0, sizeof *m);
    if (archive_access(req, resp, &acc) < 0 || id_param(req, resp, id) < 0)
        return -1;
    if (acc.level == SEE_METADATA) {
        content_refused(resp, "id", what);
        return -1;
    }
    struct store_archive *sa = archive_handle(req, resp);
    if (sa == NULL)
        return -1;
    int rc = store_archive_get(sa, *id, &acc.scope, true, m, &err);
    if (rc < 0)
        store_archive_message_clear(m);
    if (rc == STORE_NOT_FOUND) {
        /* also another person's message: as if it did not exist */
        api_error(resp, 404, "not_found", "id", "no archived message %" PRId64, *id);
        return -1;
    }
    if (rc < 0) {
        api_store_fail(resp, rc, &err);
        return -1;
    }
    if (archive_body(m, body, len, &err) < 0) {
        log_error("event=archive_body_failed id=%" PRId64 " reason=\"%s\"", *id, err.msg);
        store_archive_message_clear(m);
        api_error(resp, 500, "archive_damaged", "id", "archived message %" PRId64 " cannot be "
                  "read: %s", *id, err.msg);
        return -1;
    }
    return 0;
}

void api_archive_get(struct api_request *req, struct api_response *resp)
{
    struct store_archive_message m;
    unsigned char *body = NULL;
    size_t len = 0;
    int64_t id;

    struct loop_read lr;
    if (load(req, resp, "viewing a message", &id, &m, &body, &len) < 0)
        return;
    if (!loop_read(req, resp, &lr)) {
        free(body);
        store_archive_message_clear(&m);
        return;
    }
    /* the archive's own bounds, the text cut shorter for one answer */
    struct archive_limits lim = lr.lim;
    if (lim.max_text > ARCHIVE_VIEW_TEXT_MAX)
        lim.max_text = ARCHIVE_VIEW_TEXT_MAX;
    struct archive_doc doc;
    memset(&doc, 0, sizeof doc);
    if (archive_mime_extract(body, len, &lim, &doc) < 0)
        log_fatal("event=oom where=archive_mime_extract");
    json_t *atts = json_array(), *arr = json_array();
    for (size_t i = 0; i < m.n_attachments; i++)
        json_array_append_new(atts, api_json_text(m.attachments[i]));
    for (size_t i = 0; i < m.n_arrivals; i++)
        json_array_append_new(arr, arrival_json(&m.arrivals[i]));
    size_t hlen = doc.header_len > 0 && doc.header_len <= len ? doc.header_len : len;
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer((json_int_t)m.id));
    json_object_set_new(o, "message_id", api_json_text(m.message_id));
    json_object_set_new(o, "date", api_time_json(m.date));
    json_object_set_new(o, "received", api_time_json(m.received));
    json_object_set_new(o, "from", api_json_text(m.from_display && m.from_display[0] ? m.from_display
                                                                             : m.from));
    json_object_set_new(o, "from_addresses", api_json_text(m.from));
    json_object_set_new(o, "to", api_json_text(m.to));
    json_object_set_new(o, "cc", api_json_text(m.cc));
    json_object_set_new(o, "subject", api_json_text(m.subject));
    json_object_set_new(o, "size", json_integer((json_int_t)m.size));
    json_object_set_new(o, "headers", headers_json((const char *)body, hlen));
    json_object_set_new(o, "text", api_json_text(doc.text ? doc.text : ""));
    json_object_set_new(o, "attachments", atts);
    json_object_set_new(o, "arrivals", arr);
    json_object_set_new(o, "truncated", json_boolean(m.truncated || doc.truncated));
    resp->body = o;
    char target[32];
    xsnprintf(target, sizeof target, "%" PRId64, id);
    audit(req, "archive.view", target, json_pack("{s:o}", "message_id", api_json_text(m.message_id)));
    archive_doc_clear(&doc);
    free(body);
    store_archive_message_clear(&m);
}

void api_archive_eml(struct api_request *req, struct api_response *resp)
{
    struct store_archive_message m;
    unsigned char *body = NULL;
    size_t len = 0;
    int64_t id;

    if (load(req, resp, "downloading a message", &id, &m, &body, &len) < 0)
        return;
    char target[32];
    xsnprintf(target, sizeof target, "%" PRId64, id);
    audit(req, "archive.download", target,
          json_pack("{s:o, s:I}", "message_id", api_json_text(m.message_id), "size", (json_int_t)len));
    store_archive_message_clear(&m);
    resp->content_type = "message/rfc822";
    xsnprintf(resp->disposition, sizeof resp->disposition,
              "attachment; filename=\"archive-%" PRId64 ".eml\"", id);
    resp->raw = (char *)body;
    resp->raw_len = len;
}

/* --- export: mbox, streamed message by message --- */

struct export_stream {
    struct store_archive *sa;         /* its own handle: the stream outlives the handler */
    int64_t *ids;
    size_t n, cap, next;
    struct buf out;                   /* the current message's mbox entry */
    size_t out_pos;
    uint64_t sent;
};

static int export_collect(void *arg, int64_t id)
{
    struct export_stream *x = arg;
    if (x->n == x->cap) {
        x->cap = x->cap ? x->cap * 2 : 256;
        x->ids = xreallocarray(x->ids, x->cap, sizeof *x->ids);
    }
    x->ids[x->n++] = id;
    return 0;
}

static void export_free(void *arg)
{
    struct export_stream *x = arg;
    if (x == NULL)
        return;
    if (x->sa != NULL)
        store_archive_close(x->sa);
    free(x->ids);
    buf_free(&x->out);
    free(x);
}

/* export_fill - the next message into x->out; 0 at the end, -1 on error */
static int export_fill(struct export_stream *x)
{
    while (x->next < x->n) {
        struct store_archive_message m;
        struct error err = {0};
        int64_t id = x->ids[x->next++];
        memset(&m, 0, sizeof m);
        int rc = store_archive_get(x->sa, id, &scope_all, true, &m, &err);
        if (rc == STORE_NOT_FOUND) {
            store_archive_message_clear(&m);
            continue;                   /* purged since the search */
        }
        if (rc < 0 || archive_mbox_write(&x->out, &m, &err) < 0) {
            log_error("event=archive_export_failed id=%" PRId64 " reason=\"%s\"", id, err.msg);
            store_archive_message_clear(&m);
            return -1;
        }
        store_archive_message_clear(&m);
        x->out_pos = 0;
        return 1;
    }
    return 0;
}

static long export_read(void *arg, char *dst, size_t max)
{
    struct export_stream *x = arg;
    if (x->out_pos >= x->out.len) {
        buf_reset(&x->out);
        x->out_pos = 0;
        int r = export_fill(x);
        if (r <= 0)
            return r;
    }
    size_t n = x->out.len - x->out_pos;
    if (n > max)
        n = max;
    memcpy(dst, x->out.data + x->out_pos, n);
    x->out_pos += n;
    x->sent += n;
    return (long)n;
}

void api_archive_export(struct api_request *req, struct api_response *resp)
{
    struct store_archive_query q;
    const char *text;
    struct error err = {0};

    if (parse_query(req, resp, &text, &q) < 0)
        return;
    struct store_archive *sa = archive_handle(req, resp);
    if (sa == NULL) {
        archive_query_clear(&q);
        return;
    }
    struct export_stream *x = xcalloc(1, sizeof *x);
    buf_init(&x->out);
    int rc = store_archive_each(sa, &q, &scope_all, ARCHIVE_EXPORT_MAX, export_collect, x, &err);
    archive_query_clear(&q);
    if (rc < 0) {
        export_free(x);
        api_store_fail(resp, rc, &err);
        return;
    }
    /* the stream's own handle: the thread's may serve other requests meanwhile */
    const struct moat_settings *set = req->cfg->settings;
    char *path = set->archive_database != NULL && set->archive_database[0] != '\0'
                     ? xstrdup(set->archive_database)
                     : xasprintf("%s/archive.db", set->state_dir);
    x->sa = store_archive_open(path, &err);
    free(path);
    if (x->sa == NULL) {
        export_free(x);
        api_error(resp, 503, "archive_unavailable", NULL, "the archive database cannot be "
                  "opened: %s", err.msg);
        return;
    }
    audit(req, "archive.export", text,
          json_pack("{s:I, s:b}", "messages", (json_int_t)x->n, "capped",
                    x->n >= ARCHIVE_EXPORT_MAX));
    log_info("event=archive_export messages=%zu by=%s", x->n, req->who->name);
    resp->content_type = "application/mbox";
    xsnprintf(resp->disposition, sizeof resp->disposition,
              "attachment; filename=\"moat-archive.mbox\"");
    resp->stream = export_read;
    resp->stream_free = export_free;
    resp->stream_arg = x;
}

/* --- figures, purge --- */


static void read_on_loop(void *arg)
{
    struct loop_read *r = arg;
    const struct moat_settings *set = r->cfg->settings;
    if (r->cfg->archive != NULL) {
        archive_get_stats(r->cfg->archive, &r->st);
        r->engine = true;
    }
    r->now = screen_clock_now(set);
    r->retention = set->archive_retention;
    r->lim.max_parse = (size_t)set->archive_max_parse;
    r->lim.max_text = (size_t)set->archive_max_text;
    r->lim.max_depth = (unsigned)set->archive_mime_max_depth;
    r->lim.max_parts = (unsigned)set->archive_mime_max_parts;
    r->done = true;
}

/* loop_read - what the loop owns; false after a 503 */
static bool loop_read(struct api_request *req, struct api_response *resp, struct loop_read *r)
{
    memset(r, 0, sizeof *r);
    r->cfg = req->cfg;
    api_loop_call(req->cfg, read_on_loop, r);
    if (!r->done)
        api_error(resp, 503, "unavailable", NULL, "moatd is shutting down");
    return r->done;
}

void api_archive_stats(struct api_request *req, struct api_response *resp)
{
    struct store_archive_stats st;
    struct loop_read lr;
    struct error err = {0};

    struct store_archive *sa = archive_handle(req, resp);
    if (sa == NULL || !loop_read(req, resp, &lr))
        return;
    memset(&st, 0, sizeof st);
    int rc = store_archive_stats(sa, &st, &err);
    if (rc < 0) {
        api_store_fail(resp, rc, &err);
        return;
    }
    json_t *engine = json_null();
    if (lr.engine)
        engine = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
                           "ingested", (json_int_t)lr.st.ingested,
                           "duplicates", (json_int_t)lr.st.duplicates,
                           "journal_reports", (json_int_t)lr.st.journal_reports,
                           "journal_malformed", (json_int_t)lr.st.journal_malformed,
                           "failed", (json_int_t)lr.st.failed,
                           "pending", (json_int_t)lr.st.pending,
                           "purged", (json_int_t)lr.st.purged);
    struct store_legal_hold *h = NULL;
    size_t nh = 0;
    if (store_legal_hold_list(req->store, &h, &nh, &err) == 0)
        store_legal_holds_free(h, nh);
    resp->body = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:I, s:I, s:o}",
                           "messages", (json_int_t)st.messages,
                           "arrivals", (json_int_t)st.arrivals,
                           "bytes", (json_int_t)st.bytes,
                           "stored_bytes", (json_int_t)st.stored_bytes,
                           "journal_reports", (json_int_t)st.journal_reports,
                           "journal_malformed", (json_int_t)st.journal_malformed,
                           "oldest", api_time_json(st.oldest),
                           "retention_seconds", (json_int_t)lr.retention,
                           "legal_holds", (json_int_t)nh,
                           "engine", engine);
}

void api_archive_purge(struct api_request *req, struct api_response *resp)
{
    static const char *const none[] = { NULL };
    struct loop_read lr;
    struct error err = {0};
    size_t purged = 0;

    if (api_body_check(req, resp, none, none) < 0)
        return;
    struct store_archive *sa = archive_handle(req, resp);
    if (sa == NULL || !loop_read(req, resp, &lr))
        return;
    if (archive_purge_run(sa, req->store, lr.now, lr.retention, &purged, &err) < 0) {
        api_store_fail(resp, STORE_ERR, &err);
        return;
    }
    int64_t cutoff = lr.now - lr.retention;
    log_info("event=archive_purge purged=%zu cutoff=%" PRId64 " by=%s", purged, cutoff,
             req->who->name);
    json_t *after = json_pack("{s:I, s:o}", "purged", (json_int_t)purged, "cutoff",
                              api_time_json(cutoff));
    api_audit(req, "archive.purge", "archive", NULL, after);
    resp->body = after;
}

/* --- legal holds --- */

static json_t *hold_json(const struct store_legal_hold *h)
{
    return json_pack("{s:o, s:o, s:o, s:o}", "address", api_json_text(h->address), "reason",
                     api_json_text(h->reason ? h->reason : ""), "created", api_time_json(h->created),
                     "created_by", api_json_text(h->created_by ? h->created_by : ""));
}

/* hold_find - the row of address (lower case), NULL when none */
static json_t *hold_find(struct store *st, const char *address)
{
    struct store_legal_hold *h = NULL;
    size_t n = 0;
    struct error err = {0};
    json_t *r = NULL;
    if (store_legal_hold_list(st, &h, &n, &err) < 0)
        return NULL;
    for (size_t i = 0; i < n && r == NULL; i++)
        if (str_ieq(h[i].address, address))
            r = hold_json(&h[i]);
    store_legal_holds_free(h, n);
    return r;
}

void api_legal_holds_list(struct api_request *req, struct api_response *resp)
{
    struct store_legal_hold *h = NULL;
    size_t n = 0;
    struct error err = {0};
    if (store_legal_hold_list(req->store, &h, &n, &err) < 0) {
        api_store_fail(resp, STORE_ERR, &err);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(items, hold_json(&h[i]));
    store_legal_holds_free(h, n);
    resp->body = json_pack("{s:o, s:n}", "items", items, "next_cursor");
}

void api_legal_holds_create(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "address", "reason", NULL };
    static const char *const required[] = { "address", NULL };
    const char *address, *reason;
    struct error err = {0};

    if (api_body_check(req, resp, allowed, required) < 0 ||
        api_opt_string(req, resp, "address", &address) < 0 ||
        api_opt_string(req, resp, "reason", &reason) < 0)
        return;
    if (address == NULL) {
        api_error(resp, 400, "invalid_field", "address", "address must be a mail address");
        return;
    }
    int rc = store_legal_hold_add(req->store, address, reason ? reason : "", req->who->name, &err);
    if (rc < 0) {
        api_store_fail(resp, rc, &err);
        return;
    }
    char *lower = str_lower(xstrdup(address));
    json_t *after = hold_find(req->store, lower);
    if (after == NULL)
        after = json_pack("{s:s}", "address", lower);
    api_audit(req, "legal_hold.create", lower, NULL, after);
    char shown[300];
    log_info("event=legal_hold_add address=%s by=%s", log_quote(shown, sizeof shown, lower),
             req->who->name);
    free(lower);
    resp->status = 201;
    resp->body = after;
}

void api_legal_holds_delete(struct api_request *req, struct api_response *resp)
{
    struct error err = {0};
    const char *address = req->params[0];
    json_t *before = hold_find(req->store, address);
    int rc = store_legal_hold_remove(req->store, address, &err);
    if (rc < 0) {
        json_decref(before);
        api_store_fail(resp, rc, &err);
        return;
    }
    api_audit(req, "legal_hold.delete", address, before, NULL);
    json_decref(before);
    char shown[300];
    log_info("event=legal_hold_remove address=%s by=%s", log_quote(shown, sizeof shown, address),
             req->who->name);
    resp->status = 204;
}
