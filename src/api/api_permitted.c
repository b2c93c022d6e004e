/*
 * api_permitted.c - /api/v1/permitted-senders (the organisation's list, its
 * CSV import) and /api/v1/users/{address}/permitted-senders (one user's
 * list: manual and auto-allowed entries), over store_permitted.c.
 *
 * Every change is audited (permitted_sender.create/.delete/.import,
 * user_permitted_sender.create/.delete) and followed by api_reload(): the
 * SMTP loop's permitted index is reloaded with the snapshot, so the next
 * RCPT sees the change.
 *
 * The import takes text/csv, one entry a line: `address_or_domain[,comment]`
 * (an optional header line naming the first column "value",
 * "address_or_domain", "address" or "domain" is skipped).  A bad row is
 * reported with its line number and never fails the batch; an entry already
 * listed counts as unchanged.  The body is bounded by http_max_body: the CLI
 * sends a big file in parts, each with ?first_line= (the file's line number
 * of the part's first line) so the reported numbers are the file's.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "../directory/directory.h"
#include "../policy/screen_clock.h"
#include "api_priv.h"
#include "api_permitted.h"

#define IMPORT_MAX_ERRORS 1000      /* errors listed in one report; more are only counted */

/* the clock and the auto lifetime, read on the loop (settings are loop-owned) */
struct clock_read {
    const struct moat_settings *set;
    int64_t now, lifetime;
};

static void clock_read_fn(void *arg)
{
    struct clock_read *c = arg;
    c->now = screen_clock_now(c->set);
    c->lifetime = c->set->permitted_auto_lifetime;
}

static void clock_get(const struct api_request *req, int64_t *now, int64_t *lifetime)
{
    struct clock_read c = { .set = req->cfg->settings, .now = (int64_t)time(NULL),
                            .lifetime = 120 * 86400 };
    if (c.set != NULL)
        api_loop_call(req->cfg, clock_read_fn, &c);
    *now = c.now;
    *lifetime = c.lifetime;
}

static json_t *entry_json(const struct store_permitted *e, int64_t lifetime)
{
    json_t *j = json_pack("{s:I, s:s, s:s, s:s, s:o, s:s}", "id", (json_int_t)e->id,
                          "value", e->value, "source", e->source, "comment", e->comment,
                          "created", api_time_json(e->created), "created_by", e->created_by);
    if (e->user[0] != '\0') {
        json_object_set_new(j, "user", json_string(e->user));
        json_object_set_new(j, "last_seen", api_time_json(e->last_seen));
        json_object_set_new(j, "expires", strcmp(e->source, "auto") == 0
                                              ? api_time_json(e->last_seen + lifetime) : json_null());
    }
    return j;
}

/* entry_find - the row of user with id, as JSON; NULL when none */
static json_t *entry_find(struct store *st, const char *user, int64_t id, int64_t lifetime)
{
    struct store_permitted *v;
    size_t n;
    struct error err = {0};
    if (store_permitted_list(st, user, id - 1, 1, 0, &v, &n, &err) < 0)
        return NULL;
    json_t *r = n == 1 && v[0].id == id ? entry_json(&v[0], lifetime) : NULL;
    store_permitted_free(v, n);
    return r;
}

/* user_check - the {address} of a per-user route must be a directory user */
static int user_check(struct api_request *req, struct api_response *resp, const char *user)
{
    int64_t id;
    enum store_dir_source src;
    struct error err = {0};
    int rc = store_dir_owner(req->store, user, &id, &src, &err);
    if (rc == STORE_NOT_FOUND) {
        api_error(resp, 404, "not_found", "address", "no such user: %.200s", user);
        return -1;
    }
    if (rc < 0) {
        api_store_fail(resp, rc, &err);
        return -1;
    }
    return 0;
}

/* --- shared by both lists (user NULL = the organisation's) --- */

static void list(struct api_request *req, struct api_response *resp, const char *user)
{
    size_t limit;
    const char *cursor;
    struct error err = {0};
    int64_t now, lifetime, after = 0;
    if (api_page(req, resp, &limit, &cursor) < 0)
        return;
    if (cursor != NULL) {
        char *end;
        errno = 0;
        long long v = strtoll(cursor, &end, 10);
        if (*end != '\0' || errno != 0 || v < 0) {
            api_error(resp, 400, "invalid_parameter", "cursor",
                      "cursor must be the next_cursor of the previous page");
            return;
        }
        after = v;
    }
    if (user != NULL && user_check(req, resp, user) < 0)
        return;
    clock_get(req, &now, &lifetime);
    struct store_permitted *v;
    size_t n;
    int rc = store_permitted_list(req->store, user, after, limit + 1, now - lifetime, &v, &n, &err);
    if (rc < 0) {
        api_store_fail(resp, rc, &err);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < n && i < limit; i++)
        json_array_append_new(items, entry_json(&v[i], lifetime));
    json_t *next = json_null();
    if (n > limit) {
        char c[32];
        xsnprintf(c, sizeof c, "%lld", (long long)v[limit - 1].id);
        next = json_string(c);
    }
    store_permitted_free(v, n);
    resp->body = json_pack("{s:o, s:o}", "items", items, "next_cursor", next);
}

static void create(struct api_request *req, struct api_response *resp, const char *user)
{
    static const char *const allowed[] = { "value", "comment", NULL };
    static const char *const required[] = { "value", NULL };
    struct error err = {0};
    if (api_body_check(req, resp, allowed, required) < 0)
        return;
    json_t *jv = json_object_get(req->body, "value");
    json_t *jc = json_object_get(req->body, "comment");
    if (!json_is_string(jv)) {
        api_error(resp, 400, "invalid_field", "value",
                  "value must be a string: an address or a domain");
        return;
    }
    if (jc != NULL && !json_is_null(jc) && !json_is_string(jc)) {
        api_error(resp, 400, "invalid_field", "comment", "comment must be a string");
        return;
    }
    if (user != NULL && user_check(req, resp, user) < 0)
        return;
    int64_t id = 0, now, lifetime;
    int rc = store_permitted_add(req->store, user, json_string_value(jv),
                                 jc ? json_string_value(jc) : NULL, req->who ? req->who->name : "",
                                 &id, &err);
    if (rc < 0) {
        api_store_fail(resp, rc, &err);
        return;
    }
    clock_get(req, &now, &lifetime);
    json_t *after = entry_find(req->store, user, id, lifetime);
    if (after == NULL)
        after = json_pack("{s:I}", "id", (json_int_t)id);
    const char *val = json_string_value(json_object_get(after, "value"));
    char target[600];
    xsnprintf(target, sizeof target, "%s%s%s", user ? user : "", user ? ":" : "", val ? val : "");
    api_audit(req, user ? "user_permitted_sender.create" : "permitted_sender.create", target,
              NULL, after);
    api_reload(req);
    resp->status = 201;
    resp->body = after;
}

/* delete - {id} is the entry's id, or its value (an address or a domain) */
static void delete(struct api_request *req, struct api_response *resp, const char *user,
                   const char *key)
{
    struct error err = {0};
    int64_t now, lifetime;
    clock_get(req, &now, &lifetime);
    if (user != NULL && user_check(req, resp, user) < 0)
        return;
    char *end;
    errno = 0;
    long long id = strtoll(key, &end, 10);
    bool by_id = key[0] >= '0' && key[0] <= '9' && *end == '\0' && errno == 0;
    json_t *before = NULL;
    int rc;
    if (by_id) {
        before = entry_find(req->store, user, id, lifetime);
        rc = store_permitted_delete(req->store, user, id, &err);
    } else {
        rc = store_permitted_delete_value(req->store, user, key, &err);
        if (rc == STORE_OK)
            before = json_pack("{s:s}", "value", key);
    }
    if (rc < 0) {
        json_decref(before);
        api_store_fail(resp, rc, &err);
        return;
    }
    const char *val = before ? json_string_value(json_object_get(before, "value")) : NULL;
    char target[600];
    xsnprintf(target, sizeof target, "%s%s%s", user ? user : "", user ? ":" : "", val ? val : key);
    api_audit(req, user ? "user_permitted_sender.delete" : "permitted_sender.delete", target,
              before, NULL);
    json_decref(before);
    api_reload(req);
    resp->status = 204;
}

void api_permitted_list(struct api_request *req, struct api_response *resp) { list(req, resp, NULL); }
void api_permitted_create(struct api_request *req, struct api_response *resp) { create(req, resp, NULL); }
void api_permitted_delete(struct api_request *req, struct api_response *resp)
{
    delete(req, resp, NULL, req->params[0]);
}
void api_user_permitted_list(struct api_request *req, struct api_response *resp)
{
    list(req, resp, req->params[0]);
}
void api_user_permitted_create(struct api_request *req, struct api_response *resp)
{
    create(req, resp, req->params[0]);
}
void api_user_permitted_delete(struct api_request *req, struct api_response *resp)
{
    delete(req, resp, req->params[0], req->params[1]);
}

/* --- the CSV import --- */

struct import {
    struct store *st;
    const char *by;
    size_t max_rows;
    size_t rows, created, unchanged, bad;
    json_t *errors;
    bool header_checked;
    size_t line_offset;         /* ?first_line - 1: the part's place in the whole file */
};

static void import_error(struct import *im, size_t line, const char *reason)
{
    im->bad++;
    line += im->line_offset;
    if (json_array_size(im->errors) < IMPORT_MAX_ERRORS)
        json_array_append_new(im->errors, json_pack("{s:I, s:s}", "line", (json_int_t)line,
                                                    "reason", reason));
}

static bool is_header(const char *f)
{
    static const char *const names[] = { "value", "address_or_domain", "address", "domain",
                                         "sender", NULL };
    for (size_t i = 0; names[i]; i++)
        if (str_ieq(f, names[i]))
            return true;
    return false;
}

static void import_record(void *arg, size_t line, char **fields, size_t n)
{
    struct import *im = arg;
    bool first = !im->header_checked;
    im->header_checked = true;
    if (first && im->line_offset == 0 && line == 1 && n >= 1 && is_header(fields[0]))
        return;     /* the file's header line */
    im->rows++;
    if (im->max_rows > 0 && im->rows > im->max_rows) {
        if (im->rows == im->max_rows + 1)
            import_error(im, line, "too many rows: the rest of the file is ignored "
                                   "(directory_csv_max_rows)");
        return;
    }
    if (n > 2) {
        import_error(im, line, "too many columns: expected address_or_domain[,comment]");
        return;
    }
    struct error err = {0};
    int rc = store_permitted_add(im->st, NULL, fields[0], n == 2 ? fields[1] : NULL, im->by, NULL,
                                 &err);
    if (rc == STORE_OK)
        im->created++;
    else if (rc == STORE_CONFLICT)
        im->unchanged++;
    else
        import_error(im, line, err.msg);
}

static void import_bad(void *arg, size_t line, const char *reason)
{
    struct import *im = arg;
    im->header_checked = true;
    im->rows++;
    import_error(im, line, reason);
}

void api_permitted_import(struct api_request *req, struct api_response *resp)
{
    size_t first = 1;
    const char *fl = api_query(req, "first_line");
    if (fl != NULL) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(fl, &end, 10);
        if (fl[0] < '1' || fl[0] > '9' || *end != '\0' || errno != 0 || v > 1000000000ULL) {
            api_error(resp, 400, "invalid_parameter", "first_line",
                      "first_line must be the file's line number of this part's first line "
                      "(1 or more)");
            return;
        }
        first = (size_t)v;
    }
    if (req->text == NULL) {
        api_error(resp, 415, "unsupported_media_type", "Content-Type",
                  "send the CSV as the request body with Content-Type: text/csv");
        return;
    }
    const struct moat_settings *s = req->cfg->settings;
    struct import im = {
        .st = req->store, .by = req->who ? req->who->name : "",
        .max_rows = s ? (size_t)s->directory_csv_max_rows : 0, .errors = json_array(),
        .line_offset = first - 1,
    };
    struct directory_csv *c = directory_csv_new(s ? (size_t)s->directory_csv_max_line : 0, 8,
                                                import_record, import_bad, &im);
    struct error err = {0};
    if (store_permitted_batch(req->store, false, &err) < 0) {
        directory_csv_free(c);
        json_decref(im.errors);
        api_error_from(resp, 500, "store_error", &err);
        return;
    }
    directory_csv_feed(c, req->text, req->text_len);
    directory_csv_finish(c);
    directory_csv_free(c);
    if (store_permitted_batch(req->store, true, &err) < 0) {
        json_decref(im.errors);
        api_error_from(resp, 500, "store_error", &err);
        return;
    }
    json_t *summary = json_pack("{s:I, s:I, s:I, s:I}", "rows", (json_int_t)im.rows,
                                "created", (json_int_t)im.created,
                                "unchanged", (json_int_t)im.unchanged, "bad", (json_int_t)im.bad);
    api_audit(req, "permitted_sender.import", "", NULL, summary);
    if (im.created > 0)
        api_reload(req);
    json_object_set_new(summary, "errors", im.errors);
    resp->body = summary;
}
