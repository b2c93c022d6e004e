/*
 * api_ldap.c - the directory's LDAP / Active Directory sync routes:
 *   GET/PUT /api/v1/directory/source   the source (the password write-only)
 *   POST    /api/v1/directory/test     test connection: bind, search, paging
 *   POST    /api/v1/directory/preview  what a sync would create/update/remove
 *   POST    /api/v1/directory/sync     apply now ({confirm, wait})
 *   GET     /api/v1/directory/sync     progress of the running sync, last runs
 *
 * Test and preview run here, on the worker thread (blocking LDAP, never the
 * loop).  An applied sync runs on the sync runner's thread
 * (directory_sync.c): the handler hands it over and, with "wait": true,
 * waits up to API_LDAP_WAIT_MS for the outcome, then api_reload() so RCPT
 * lookups see the new directory at once.  Every change and every action is audited;
 * the password is never echoed (password_set only) and is redacted by
 * auth_audit anyway.
 */
#include <stdlib.h>
#include <string.h>
#include "api_ldap.h"
#include "../directory/directory_ldap.h"

/* a sync that takes longer is followed with GET (the HTTP connection would time out) */
#define API_LDAP_WAIT_MS 25000

static bool have_sync(struct api_request *req, struct api_response *resp)
{
    if (req->cfg->directory_sync != NULL)
        return true;
    api_error(resp, 503, "unavailable", NULL, "the directory sync is not running in this moatd");
    return false;
}

static void failure(struct api_response *resp, const struct error *err)
{
    if (err->field[0] != '\0')
        api_error_from(resp, 400, "invalid_field", err);
    else
        api_error_from(resp, 500, "internal", err);
}

void api_directory_source_get(struct api_request *req, struct api_response *resp)
{
    struct error err = {0};
    json_t *o = directory_sync_source_get(req->store, &err);
    if (o == NULL) {
        api_error_from(resp, 500, "store_error", &err);
        return;
    }
    resp->body = o;
}

void api_directory_source_put(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "url", "fallback_url", "starttls", "ca_file",
                                           "bind_dn", "password", "base_dn", "filter",
                                           "group_filter", "preset", "attributes", "page_size",
                                           "timeout", "max_entries", "schedule",
                                           "max_remove_share", NULL };
    static const char *const none[] = { NULL };
    struct error err = {0};
    json_t *before = NULL, *after = NULL;
    if (!have_sync(req, resp) || api_body_check(req, resp, allowed, none) < 0)
        return;
    if (req->body == NULL) {
        api_error(resp, 400, "invalid_body", NULL, "the body must be a JSON object with the "
                  "members to change");
        return;
    }
    if (directory_sync_source_put(req->cfg->directory_sync, req->store, req->body,
                                  req->who ? req->who->name : "", &before, &after, &err) < 0) {
        failure(resp, &err);
        return;
    }
    json_t *pw = json_object_get(req->body, "password");
    if (pw != NULL)   /* that it changed, never what it is */
        json_object_set_new(after, "password_changed", json_true());
    api_audit(req, "directory.source", "ldap", before, after);
    json_decref(before);
    json_object_del(after, "password_changed");
    resp->body = after;
}

void api_directory_test(struct api_request *req, struct api_response *resp)
{
    static const char *const none[] = { NULL };
    struct error err = {0};
    if (!have_sync(req, resp) || api_body_check(req, resp, none, none) < 0)
        return;
    json_t *o = directory_sync_test(req->cfg->directory_sync, req->store, &err);
    if (o == NULL) {
        failure(resp, &err);
        return;
    }
    json_t *after = json_pack("{s:O?, s:O?}", "ok", json_object_get(o, "ok"),
                              "server", json_object_get(o, "server"));
    api_audit(req, "directory.test", "ldap", NULL, after);
    json_decref(after);
    resp->body = o;
}

void api_directory_preview(struct api_request *req, struct api_response *resp)
{
    static const char *const none[] = { NULL };
    struct error err = {0};
    if (!have_sync(req, resp) || api_body_check(req, resp, none, none) < 0)
        return;
    json_t *o = directory_sync_preview(req->cfg->directory_sync, req->store,
                                       req->who ? req->who->name : "", &err);
    if (o == NULL) {
        json_t *after = json_pack("{s:s}", "error", err.msg);
        api_audit(req, "directory.preview", "ldap", NULL, after);
        json_decref(after);
        if (err.field[0] != '\0')
            api_error_from(resp, 400, "invalid_field", &err);
        else
            api_error_from(resp, 502, "directory_error", &err);
        return;
    }
    json_t *after = json_pack("{s:O?, s:O?, s:O?, s:O?, s:O?}", "entries",
                              json_object_get(o, "entries"), "created",
                              json_object_get(o, "created"), "updated",
                              json_object_get(o, "updated"), "removed",
                              json_object_get(o, "removed"), "safety_stop",
                              json_object_get(o, "safety_stop"));
    api_audit(req, "directory.preview", "ldap", NULL, after);
    json_decref(after);
    resp->body = o;
}

void api_directory_sync_start(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "confirm", "wait", NULL };
    static const char *const none[] = { NULL };
    struct error err = {0};
    if (!have_sync(req, resp) || api_body_check(req, resp, allowed, none) < 0)
        return;
    json_t *confirm = json_object_get(req->body, "confirm");
    json_t *wait = json_object_get(req->body, "wait");
    if ((confirm && !json_is_boolean(confirm)) || (wait && !json_is_boolean(wait))) {
        api_error(resp, 400, "invalid_field", confirm && !json_is_boolean(confirm) ? "confirm"
                  : "wait", "confirm and wait are true or false");
        return;
    }
    uint64_t seq;
    if (directory_sync_request(req->cfg->directory_sync, json_is_true(confirm),
                               req->who ? req->who->name : "", &seq, &err) < 0) {
        if (strcmp(err.field, "sync") == 0)
            api_error(resp, 409, "conflict", "sync", "%s", err.msg);
        else
            api_error(resp, 503, "unavailable", NULL, "%s", err.msg);
        return;
    }
    json_t *audit = json_pack("{s:b}", "confirm", json_is_true(confirm));
    api_audit(req, "directory.sync", "ldap", NULL, audit);
    json_decref(audit);
    if (!json_is_true(wait) ||
        !directory_sync_wait(req->cfg->directory_sync, seq, API_LDAP_WAIT_MS)) {
        resp->status = 202;
        resp->body = directory_sync_status(req->cfg->directory_sync, req->store, 1, &err);
        if (resp->body == NULL)
            api_error_from(resp, 500, "store_error", &err);
        return;
    }
    json_t *st = directory_sync_status(req->cfg->directory_sync, req->store, 1, &err);
    if (st == NULL) {
        api_error_from(resp, 500, "store_error", &err);
        return;
    }
    json_t *last = json_object_get(st, "last");
    const char *outcome = json_string_value(json_object_get(last, "outcome"));
    const char *msg = json_string_value(json_object_get(last, "message"));
    if (outcome && strcmp(outcome, "ok") == 0) {
        api_reload(req);
        resp->body = st;
        return;
    }
    if (outcome && strcmp(outcome, "refused") == 0)
        api_error(resp, 409, "safety_stop", "confirm", "%s", msg ? msg : "refused");
    else
        api_error(resp, 502, "directory_error", NULL, "%s", msg ? msg : "the sync failed");
    json_decref(st);
}

void api_directory_sync_status(struct api_request *req, struct api_response *resp)
{
    struct error err = {0};
    size_t limit = 10;
    const char *l = api_query(req, "limit");
    if (l != NULL) {
        char *end;
        long v = strtol(l, &end, 10);
        if (*end != '\0' || v < 1 || v > 1000) {
            api_error(resp, 400, "invalid_field", "limit", "limit is 1..1000");
            return;
        }
        limit = (size_t)v;
    }
    json_t *o = directory_sync_status(req->cfg->directory_sync, req->store, limit, &err);
    if (o == NULL) {
        api_error_from(resp, 500, "store_error", &err);
        return;
    }
    resp->body = o;
}
