/*
 * api_queue.c - the queue routes: list, show, retry (one or all), delete.
 *
 * The queue belongs to the event loop (deliver.h), so every call runs there
 * through api_loop_call and copies its answer out.  What a role sees: the
 * envelope (sender, recipients, states, attempts) is configuration
 * (CONFIG_READ); the header section of a message is content, so "headers"
 * is returned only to callers holding MESSAGE_CONTENT.  Retry and delete are
 * QUEUE_WRITE and audited (the audit entry holds the envelope, never the
 * headers).
 */
#include <stdlib.h>
#include <string.h>
#include "../deliver/deliver.h"
#include "../spool/spool.h"
#include "api_priv.h"

enum queue_op { QUEUE_LIST, QUEUE_SHOW, QUEUE_RETRY, QUEUE_DELETE };

struct queue_job {
    const struct api_config *cfg;
    enum queue_op op;
    const char *id;           /* NULL: all (retry) */
    size_t limit;
    const char *cursor;
    json_t *result;           /* list / show / the envelope before a delete */
    const char *actor;        /* delete: the account (tracking) */
    int count;
    bool done;
};

static void queue_on_loop(void *arg)
{
    struct queue_job *j = arg;
    struct deliver *d = j->cfg->deliver;

    if (d != NULL) {
        switch (j->op) {
        case QUEUE_LIST:
            j->result = deliver_queue_list(d, j->limit, j->cursor);
            break;
        case QUEUE_SHOW:
            j->result = deliver_queue_show(d, j->id);
            break;
        case QUEUE_RETRY:
            j->count = deliver_queue_retry(d, j->id);
            break;
        case QUEUE_DELETE:
            /* the envelope for the audit log, then the delete, in one loop turn */
            j->result = deliver_queue_show(d, j->id);
            j->count = j->result ? deliver_queue_delete(d, j->id) : 0;
            if (j->count > 0)
                deliver_track_msg(j->id, TRACK_DELETED, j->actor, "queue");
            break;
        }
    }
    j->done = true;
}

/* run - the job on the loop; false (with resp set) when the loop did not answer */
static bool run(struct api_request *req, struct api_response *resp, struct queue_job *j)
{
    j->cfg = req->cfg;
    if (req->cfg->deliver == NULL) {
        api_error(resp, 503, "unavailable", NULL, "the delivery engine is not running");
        return false;
    }
    api_loop_call(req->cfg, queue_on_loop, j);
    if (!j->done) {
        json_decref(j->result);
        j->result = NULL;
        api_error(resp, 503, "unavailable", NULL, "moatd is shutting down");
        return false;
    }
    return true;
}

/* valid_qid - 16 hexadecimal digits (spool.h) */
static bool valid_qid(const char *s)
{
    size_t n = strlen(s);
    return n == SPOOL_QID_LEN && strspn(s, "0123456789ABCDEFabcdef") == n;
}

/* id_param - the {id} path segment as a queue id, upper-cased into out */
static int id_param(struct api_request *req, struct api_response *resp, char *out)
{
    const char *id = req->n_params > 0 ? req->params[0] : "";
    if (!valid_qid(id)) {
        char shown[60];
        api_error(resp, 400, "invalid_field", "id", "%s is not a queue id (16 hexadecimal digits)",
                  log_quote(shown, sizeof shown, id));
        return -1;
    }
    for (int i = 0; i < SPOOL_QID_LEN; i++)
        out[i] = (char)(id[i] >= 'a' && id[i] <= 'f' ? id[i] - 32 : id[i]);
    out[SPOOL_QID_LEN] = '\0';
    return 0;
}

static bool may_read_content(const struct api_request *req)
{
    return req->who != NULL && auth_role_allows(req->who->role, AUTH_PERM_MESSAGE_CONTENT);
}

void api_queue_list(struct api_request *req, struct api_response *resp)
{
    struct queue_job j = { .op = QUEUE_LIST };

    if (api_page(req, resp, &j.limit, &j.cursor) < 0)
        return;
    if (j.cursor != NULL && !valid_qid(j.cursor)) {
        api_error(resp, 400, "invalid_parameter", "cursor",
                  "cursor must be a queue id (the next_cursor of the previous page)");
        return;
    }
    j.limit++;   /* one more than asked: is there a next page? */
    if (!run(req, resp, &j))
        return;
    json_t *items = json_is_array(j.result) ? j.result : json_array();
    if (items != j.result)
        json_decref(j.result);
    json_t *next = json_null();
    if (json_array_size(items) >= j.limit) {
        json_array_remove(items, j.limit - 1);
        const char *last = json_string_value(json_object_get(
            json_array_get(items, json_array_size(items) - 1), "id"));
        if (last != NULL) {
            json_decref(next);
            next = json_string(last);
        }
    }
    /* list entries carry no header section, but keep the rule in one place */
    size_t i;
    json_t *m;
    json_array_foreach(items, i, m)
        json_object_del(m, "headers");
    resp->body = json_pack("{s:o, s:o}", "items", items, "next_cursor", next);
}

void api_queue_show(struct api_request *req, struct api_response *resp)
{
    char id[SPOOL_QID_LEN + 1];
    struct queue_job j = { .op = QUEUE_SHOW, .id = id };

    if (id_param(req, resp, id) < 0 || !run(req, resp, &j))
        return;
    if (j.result == NULL) {
        api_error(resp, 404, "not_found", "id", "no message %s in the queue", id);
        return;
    }
    if (!may_read_content(req))
        json_object_del(j.result, "headers");
    resp->body = j.result;
}

/* retry_common - one message (id) or all (NULL) */
static void retry_common(struct api_request *req, struct api_response *resp, const char *id)
{
    static const char *const none[] = { NULL };
    struct queue_job j = { .op = QUEUE_RETRY, .id = id };

    if (api_body_check(req, resp, none, none) < 0 || !run(req, resp, &j))
        return;
    if (id != NULL && j.count == 0) {
        api_error(resp, 404, "not_found", "id", "no message %s in the queue", id);
        return;
    }
    log_info("event=queue_retry id=%s count=%d by=%s", id ? id : "all", j.count,
             req->who ? req->who->name : "-");
    json_t *after = json_pack("{s:i}", "scheduled", j.count);
    api_audit(req, "queue.retry", id ? id : "*", NULL, after);
    resp->body = after;
}

void api_queue_retry(struct api_request *req, struct api_response *resp)
{
    char id[SPOOL_QID_LEN + 1];
    if (id_param(req, resp, id) < 0)
        return;
    retry_common(req, resp, id);
}

void api_queue_retry_all(struct api_request *req, struct api_response *resp)
{
    retry_common(req, resp, NULL);
}

void api_queue_delete(struct api_request *req, struct api_response *resp)
{
    char id[SPOOL_QID_LEN + 1];
    struct queue_job j = { .op = QUEUE_DELETE, .id = id, .actor = req->who ? req->who->name : "" };

    if (id_param(req, resp, id) < 0 || !run(req, resp, &j))
        return;
    if (j.count == 0) {
        json_decref(j.result);
        api_error(resp, 404, "not_found", "id", "no message %s in the queue", id);
        return;
    }
    json_object_del(j.result, "headers");   /* content never goes to the audit log */
    log_info("qid=%s event=queue_delete by=%s", id, req->who ? req->who->name : "-");
    api_audit(req, "queue.delete", id, j.result, NULL);
    json_decref(j.result);
    resp->status = 204;
}
