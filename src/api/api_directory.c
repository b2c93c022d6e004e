/*
 * api_directory.c - /api/v1/users, /api/v1/groups (manual users, aliases and
 * groups; the CSV import of users) and /api/v1/recipient-validation (the
 * per-domain mode), over src/directory.
 *
 * Every change is audited (api_audit: user.*, group.*, user.import,
 * recipient_validation.set) and followed by api_reload(), which reloads the
 * routing snapshot and the directory index: the SMTP side validates
 * recipients against the change at once.
 *
 * The import is the one route with a text/csv body (http.c passes it in
 * req->text); its size is bounded by http_max_body, so the CLI sends a big
 * file in several requests, each with the header line and ?first_line= so
 * the reported line numbers are those of the file.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "../directory/directory.h"
#include "api_priv.h"
#include "api_directory.h"

/* --- helpers --- */

/* fail - a directory_status as the one error shape */
static void fail(struct api_response *resp, int rc, const struct error *err)
{
    switch (rc) {
    case DIRECTORY_EINVAL:
        api_error_from(resp, 400, "invalid_field", err);
        break;
    case DIRECTORY_ENOENT:
        api_error_from(resp, 404, "not_found", err);
        break;
    case DIRECTORY_ECONFLICT:
        api_error_from(resp, 409, "conflict", err);
        break;
    default:
        api_error(resp, 500, "store_error", NULL, "%s", err->msg);
        break;
    }
}

static const char *action(enum directory_kind kind, const char *verb, char *buf, size_t size)
{
    xsnprintf(buf, size, "%s.%s", kind == DIRECTORY_GROUP ? "group" : "user", verb);
    return buf;
}

static void list(struct api_request *req, struct api_response *resp, enum directory_kind kind)
{
    struct error err = {0};
    size_t limit;
    const char *cursor;
    if (api_page(req, resp, &limit, &cursor) < 0)
        return;
    json_t *r = directory_list_json(req->store, kind, cursor, limit, &err);
    if (r == NULL) {
        api_error(resp, 500, "store_error", NULL, "%s", err.msg);
        return;
    }
    resp->body = r;
}

static void create(struct api_request *req, struct api_response *resp, enum directory_kind kind)
{
    struct error err = {0};
    json_t *out = NULL;
    char act[32];
    if (req->body == NULL) {
        api_error(resp, 400, "invalid_body", "body", "a JSON body with the %s is required",
                  kind == DIRECTORY_GROUP ? "group" : "user");
        return;
    }
    int rc = directory_create(req->store, kind, req->body, &out, &err);
    if (rc < 0) {
        fail(resp, rc, &err);
        return;
    }
    const char *addr = json_string_value(json_object_get(out, "address"));
    api_audit(req, action(kind, "create", act, sizeof act), addr ? addr : "", NULL, out);
    api_reload(req);
    resp->status = 201;
    resp->body = out;
}

static void get(struct api_request *req, struct api_response *resp, enum directory_kind kind)
{
    struct error err = {0};
    json_t *out = NULL;
    int rc = directory_get_json(req->store, kind, req->params[0], &out, &err);
    if (rc < 0) {
        fail(resp, rc, &err);
        return;
    }
    resp->body = out;
}

static void update(struct api_request *req, struct api_response *resp, enum directory_kind kind)
{
    struct error err = {0};
    json_t *before = NULL, *after = NULL;
    char act[32];
    if (req->body == NULL) {
        api_error(resp, 400, "invalid_body", "body", "a JSON body with the changes is required");
        return;
    }
    int rc = directory_update(req->store, kind, req->params[0], req->body, &before, &after, &err);
    if (rc < 0) {
        fail(resp, rc, &err);
        return;
    }
    const char *addr = json_string_value(json_object_get(before, "address"));
    api_audit(req, action(kind, "update", act, sizeof act), addr ? addr : "", before, after);
    json_decref(before);
    api_reload(req);
    resp->body = after;
}

static void delete(struct api_request *req, struct api_response *resp, enum directory_kind kind)
{
    struct error err = {0};
    json_t *before = NULL;
    char act[32];
    int rc = directory_delete(req->store, kind, req->params[0], &before, &err);
    if (rc < 0) {
        fail(resp, rc, &err);
        return;
    }
    const char *addr = json_string_value(json_object_get(before, "address"));
    api_audit(req, action(kind, "delete", act, sizeof act), addr ? addr : "", before, NULL);
    json_decref(before);
    api_reload(req);
    resp->status = 204;
}

void api_users_list(struct api_request *req, struct api_response *resp) { list(req, resp, DIRECTORY_USER); }
void api_users_create(struct api_request *req, struct api_response *resp) { create(req, resp, DIRECTORY_USER); }
void api_users_get(struct api_request *req, struct api_response *resp) { get(req, resp, DIRECTORY_USER); }
void api_users_update(struct api_request *req, struct api_response *resp) { update(req, resp, DIRECTORY_USER); }
void api_users_delete(struct api_request *req, struct api_response *resp) { delete(req, resp, DIRECTORY_USER); }
void api_groups_list(struct api_request *req, struct api_response *resp) { list(req, resp, DIRECTORY_GROUP); }
void api_groups_create(struct api_request *req, struct api_response *resp) { create(req, resp, DIRECTORY_GROUP); }
void api_groups_get(struct api_request *req, struct api_response *resp) { get(req, resp, DIRECTORY_GROUP); }
void api_groups_update(struct api_request *req, struct api_response *resp) { update(req, resp, DIRECTORY_GROUP); }
void api_groups_delete(struct api_request *req, struct api_response *resp) { delete(req, resp, DIRECTORY_GROUP); }

/* api_users_import - POST /api/v1/users/import, text/csv: the report
 * {rows, created, updated, bad, errors: [{line, reason}]} */
void api_users_import(struct api_request *req, struct api_response *resp)
{
    struct error err = {0};
    size_t first = 1;
    const char *fl = api_query(req, "first_line");
    if (fl != NULL) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(fl, &end, 10);
        if (fl[0] < '1' || fl[0] > '9' || *end != '\0' || errno != 0 || v > 1000000000ULL) {
            api_error(resp, 400, "invalid_parameter", "first_line",
                      "first_line must be the file's line number of the header line (1 or more)");
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
    struct directory_import_limits lim = {
        .max_line = s ? (size_t)s->directory_csv_max_line : 0,
        .max_rows = s ? (size_t)s->directory_csv_max_rows : 0,
    };
    struct directory_import *im = directory_import_new(req->store, &lim, first, &err);
    if (im == NULL) {
        api_error(resp, 500, "store_error", NULL, "%s", err.msg);
        return;
    }
    directory_import_feed(im, req->text, req->text_len);
    json_t *report = directory_import_finish(im, &err);
    directory_import_free(im);
    if (report == NULL) {
        if (err.field[0] != '\0')
            api_error_from(resp, 400, "invalid_csv", &err);
        else
            api_error(resp, 500, "store_error", NULL, "%s", err.msg);
        return;
    }
    json_t *summary = json_pack("{s:O, s:O, s:O, s:O, s:I}", "rows", json_object_get(report, "rows"),
                                "created", json_object_get(report, "created"),
                                "updated", json_object_get(report, "updated"),
                                "bad", json_object_get(report, "bad"),
                                "first_line", (json_int_t)first);
    api_audit(req, "user.import", "", NULL, summary);
    json_decref(summary);
    if (json_integer_value(json_object_get(report, "created")) +
        json_integer_value(json_object_get(report, "updated")) > 0)
        api_reload(req);
    resp->body = report;
}

/* --- recipient validation --- */

void api_rv_list(struct api_request *req, struct api_response *resp)
{
    struct error err = {0};
    json_t *r = directory_rv_list_json(req->store, &err);
    if (r == NULL) {
        api_error(resp, 500, "store_error", NULL, "%s", err.msg);
        return;
    }
    resp->body = r;
}

/* api_rv_set - PUT /api/v1/recipient-validation/{domain} {mode, unreachable} */
void api_rv_set(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "mode", "unreachable", NULL };
    static const char *const required[] = { "mode", NULL };
    struct error err = {0};
    json_t *before = NULL, *after = NULL;
    if (api_body_check(req, resp, allowed, required) < 0)
        return;
    json_t *m = json_object_get(req->body, "mode");
    json_t *u = json_object_get(req->body, "unreachable");
    if (!json_is_string(m)) {
        api_error(resp, 400, "invalid_field", "mode", "mode must be a string");
        return;
    }
    if (u != NULL && !json_is_string(u)) {
        api_error(resp, 400, "invalid_field", "unreachable", "unreachable must be a string");
        return;
    }
    int rc = directory_rv_set(req->store, req->params[0], json_string_value(m),
                              u ? json_string_value(u) : NULL, &before, &after, &err);
    if (rc < 0) {
        fail(resp, rc, &err);
        return;
    }
    api_audit(req, "recipient_validation.set", json_string_value(json_object_get(after, "domain")),
              before, after);
    json_decref(before);
    api_reload(req);
    resp->body = after;
}
