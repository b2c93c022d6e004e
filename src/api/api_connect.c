/*
 * api_connect.c - the Connect routes (/api/v1/connect...: the checklist, one
 * task, run its check, skip it, give it its inputs) and the organisation
 * (/api/v1/organisation).  The engine (src/connect) does the work on this
 * worker thread with its store handle; a check waits here, never on the
 * loop.
 *
 * Changes are audited with their before and after state: a check records
 * the task's state before and after and the outcome, a skip the same, an
 * organisation PATCH the whole organisation before and after.
 */
#include <string.h>
#include "api_connect.h"
#include "../connect/connect.h"
#include "../connect/connect_checks.h"

/* connect_failure - the engine's error convention (connect.h) as HTTP */
static void connect_failure(struct api_response *resp, const struct error *err)
{
    if (strcmp(err->field, "task") == 0)
        api_error(resp, 409, "conflict", "task", "%s", err->msg);
    else if (strcmp(err->field, "shutdown") == 0)
        api_error(resp, 503, "unavailable", NULL, "%s", err->msg);
    else if (err->field[0] != '\0')
        api_error_from(resp, 400, "invalid_field", err);
    else
        api_error_from(resp, 500, "internal", err);
}

static bool have_engine(struct api_request *req, struct api_response *resp)
{
    if (req->cfg->connect != NULL)
        return true;
    api_error(resp, 503, "unavailable", NULL, "Connect is not running in this moatd");
    return false;
}

/* task_param - the {task} segment, a task of the table; else a 404 naming it */
static const struct connect_task *task_param(struct api_request *req, struct api_response *resp)
{
    const char *id = req->n_params > 0 ? req->params[0] : "";
    const struct connect_task *t = connect_task_find(id);
    if (t == NULL) {
        char shown[80];
        api_error(resp, 404, "not_found", "task", "no such task %s (see GET /api/v1/connect)",
                  log_quote(shown, sizeof shown, id));
    }
    return t;
}

static json_t *state_of(struct api_request *req, const char *id)
{
    struct error err = {0};
    json_t *d = connect_task_detail(req->cfg->connect, req->store, id, &err);
    json_t *s = json_pack("{s:O?, s:O?}", "state", json_object_get(d, "state"),
                          "recorded_state", json_object_get(d, "recorded_state"));
    json_decref(d);
    return s;
}

void api_connect_overview(struct api_request *req, struct api_response *resp)
{
    struct error err = {0};
    if (!have_engine(req, resp))
        return;
    json_t *o = connect_overview(req->cfg->connect, req->store, &err);
    if (o == NULL) {
        connect_failure(resp, &err);
        return;
    }
    resp->body = o;
}

void api_connect_detail(struct api_request *req, struct api_response *resp)
{
    struct error err = {0};
    const struct connect_task *t;
    if (!have_engine(req, resp) || (t = task_param(req, resp)) == NULL)
        return;
    json_t *d = connect_task_detail(req->cfg->connect, req->store, t->id, &err);
    if (d == NULL) {
        connect_failure(resp, &err);
        return;
    }
    resp->body = d;
}

void api_connect_check(struct api_request *req, struct api_response *resp)
{
    static const char *const none[] = { NULL };
    struct error err = {0};
    const struct connect_task *t;
    if (!have_engine(req, resp) || (t = task_param(req, resp)) == NULL ||
        api_body_check(req, resp, none, none) < 0)
        return;
    json_t *before = state_of(req, t->id);
    json_t *d = connect_task_check(req->cfg->connect, req->store, t->id, req->who, &err);
    if (d == NULL) {
        json_decref(before);
        connect_failure(resp, &err);
        return;
    }
    json_t *result = json_object_get(d, "result");
    json_t *after = json_pack("{s:O?, s:O?, s:O?, s:O?}", "state", json_object_get(d, "state"),
                              "recorded_state", json_object_get(d, "recorded_state"),
                              "outcome", json_object_get(result, "outcome"),
                              "message", json_object_get(result, "message"));
    api_audit(req, "connect.check", t->id, before, after);
    json_decref(before);
    json_decref(after);
    resp->body = d;
}

void api_connect_skip(struct api_request *req, struct api_response *resp)
{
    static const char *const none[] = { NULL };
    struct error err = {0};
    const struct connect_task *t;
    if (!have_engine(req, resp) || (t = task_param(req, resp)) == NULL ||
        api_body_check(req, resp, none, none) < 0)
        return;
    json_t *before = state_of(req, t->id);
    if (connect_task_skip(req->cfg->connect, req->store, t->id, req->who, &err) < 0) {
        json_decref(before);
        connect_failure(resp, &err);
        return;
    }
    json_t *after = state_of(req, t->id);
    api_audit(req, "connect.skip", t->id, before, after);
    json_decref(before);
    json_decref(after);
    json_t *d = connect_task_detail(req->cfg->connect, req->store, t->id, &err);
    if (d == NULL) {
        connect_failure(resp, &err);
        return;
    }
    resp->body = d;
}

/* api_connect_input - PUT /api/v1/connect/{task}/input: what a task's check
 * needs from the administrator (inbound, outbound: test addresses) */
void api_connect_input(struct api_request *req, struct api_response *resp)
{
    struct error err = {0};
    const struct connect_task *t;
    if (!have_engine(req, resp) || (t = task_param(req, resp)) == NULL)
        return;
    if (t->input_check == NULL) {
        api_error(resp, 400, "invalid_field", "task", "the task %s takes no input", t->id);
        return;
    }
    if (req->body == NULL || !json_is_object(req->body)) {
        api_error(resp, 400, "invalid_body", "body", "the input must be a JSON object");
        return;
    }
    if (t->input_check(req->body, &err) < 0) {
        api_error_from(resp, 400, "invalid_field", &err);
        return;
    }
    char *before_text = NULL;
    if (store_connect_task_data_get(req->store, t->id, &before_text, &err) < 0) {
        api_error_from(resp, 500, "store_error", &err);
        return;
    }
    char *text = json_dumps(req->body, JSON_COMPACT);
    int rc = text ? store_connect_task_data_set(req->store, t->id, text, &err) : -1;
    free(text);
    if (rc < 0) {
        free(before_text);
        api_error_from(resp, 500, "store_error", &err);
        return;
    }
    json_t *before = json_loads(before_text, 0, NULL);
    free(before_text);
    api_audit(req, "connect.input", t->id, before, req->body);
    json_decref(before);
    json_t *d = connect_task_detail(req->cfg->connect, req->store, t->id, &err);
    if (d == NULL) {
        connect_failure(resp, &err);
        return;
    }
    resp->body = d;
}

void api_organisation_get(struct api_request *req, struct api_response *resp)
{
    struct error err = {0};
    json_t *o = connect_org_get(req->store, &err);
    if (o == NULL) {
        api_error_from(resp, 500, "store_error", &err);
        return;
    }
    resp->body = o;
}

void api_organisation_update(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "name", "environment", "contact_name",
                                           "contact_email", "contact_phone", "public_hosts",
                                           "public_ips", "probe_source", NULL };
    static const char *const none[] = { NULL };
    struct error err = {0};
    json_t *before = NULL, *after = NULL;

    if (api_body_check(req, resp, allowed, none) < 0)
        return;
    if (req->body == NULL) {
        api_error(resp, 400, "invalid_body", NULL, "the body must be a JSON object with the "
                  "members to change");
        return;
    }
    if (connect_org_update(req->store, req->body, req->who ? req->who->name : "", &before,
                           &after, &err) < 0) {
        if (err.field[0] != '\0')
            api_error_from(resp, 400, "invalid_field", &err);
        else
            api_error_from(resp, 500, "store_error", &err);
        return;
    }
    api_audit(req, "organisation.update", "organisation", before, after);
    json_decref(before);
    /* the organisation task follows at once (its check is local) */
    if (req->cfg->connect != NULL) {
        json_t *d = connect_task_check(req->cfg->connect, req->store, "organisation", req->who,
                                       &err);
        json_decref(d);
    }
    resp->body = after ? after : connect_org_get(req->store, &err);
    if (resp->body == NULL)
        api_error_from(resp, 500, "store_error", &err);
}
