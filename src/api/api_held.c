/*
 * api_held.c - issue 7's routes: held (quarantined) mail, the
 * organisation-wide blocked senders that hold or reject mail, and
 * forwarding rules.
 *
 * Held mail lives in the spool and belongs to the event loop
 * (deliver_held_*), so those calls run there through api_loop_call, like
 * api_queue.c.  Viewing held mail, its text included, needs CONFIG_READ
 * only: DESIGN.md protects message content other than held mail.  Release
 * and delete are QUEUE_WRITE and audited with the envelope (never the
 * content); the Message-ID of a released message is remembered in the
 * store (held_released_message_id), written here, off the loop.
 *
 * Blocked senders and forwarding rules are configuration read by the SMTP
 * loop from its snapshot: every change is audited and followed by
 * api_reload().
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "../deliver/deliver.h"
#include "../spool/spool.h"
#include "api_priv.h"
#include "api_held.h"

/* --- held mail --- */

enum held_op { HELD_LIST, HELD_SHOW, HELD_RELEASE, HELD_DELETE };

struct held_job {
    const struct api_config *cfg;
    enum held_op op;
    const char *id;
    size_t limit;
    const char *cursor;
    json_t *result;           /* list / show / the message before a release or delete */
    char *message_id;         /* release: the Message-ID header */
    const char *actor;        /* release, delete: the account (tracking) */
    int count;
    bool done;
};

static void held_on_loop(void *arg)
{
    struct held_job *j = arg;
    struct deliver *d = j->cfg->deliver;

    if (d != NULL) {
        switch (j->op) {
        case HELD_LIST:
            j->result = deliver_held_list(d, j->limit, j->cursor);
            break;
        case HELD_SHOW:
            j->result = deliver_held_show(d, j->id);
            break;
        case HELD_RELEASE:
            j->result = deliver_held_show(d, j->id);
            j->count = j->result ? deliver_held_release(d, j->id, &j->message_id) : 0;
            /* tracked here, on the loop, before the release can deliver it */
            if (j->count > 0)
                deliver_track_msg(j->id, TRACK_RELEASED, j->actor, NULL);
            break;
        case HELD_DELETE:
            j->result = deliver_held_show(d, j->id);
            j->count = j->result ? deliver_held_delete(d, j->id) : 0;
            if (j->count > 0)
                deliver_track_msg(j->id, TRACK_DELETED, j->actor, "held");
            break;
        }
    }
    j->done = true;
}

/* run - the job on the loop; false (with resp set) when the loop did not answer */
static bool run(struct api_request *req, struct api_response *resp, struct held_job *j)
{
    j->cfg = req->cfg;
    if (req->cfg->deliver == NULL) {
        api_error(resp, 503, "unavailable", NULL, "the delivery engine is not running");
        return false;
    }
    api_loop_call(req->cfg, held_on_loop, j);
    if (!j->done) {
        json_decref(j->result);
        j->result = NULL;
        free(j->message_id);
        j->message_id = NULL;
        api_error(resp, 503, "unavailable", NULL, "moatd is shutting down");
        return false;
    }
    return true;
}

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

void api_held_list(struct api_request *req, struct api_response *resp)
{
    struct held_job j = { .op = HELD_LIST };

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
    resp->body = json_pack("{s:o, s:o}", "items", items, "next_cursor", next);
}

void api_held_show(struct api_request *req, struct api_response *resp)
{
    char id[SPOOL_QID_LEN + 1];
    struct held_job j = { .op = HELD_SHOW, .id = id };

    if (id_param(req, resp, id) < 0 || !run(req, resp, &j))
        return;
    if (j.result == NULL) {
        api_error(resp, 404, "not_found", "id", "no held message %s", id);
        return;
    }
    resp->body = j.result;
}

/* envelope_only - the audit form of a held message: no content */
static void envelope_only(json_t *m)
{
    json_object_del(m, "headers");
    json_object_del(m, "text");
    json_object_del(m, "text_truncated");
}

void api_held_release(struct api_request *req, struct api_response *resp)
{
    static const char *const none[] = { NULL };
    char id[SPOOL_QID_LEN + 1];
    struct held_job j = { .op = HELD_RELEASE, .id = id, .actor = req->who ? req->who->name : "" };

    if (id_param(req, resp, id) < 0 || api_body_check(req, resp, none, none) < 0 ||
        !run(req, resp, &j))
        return;
    if (j.count == 0) {
        json_decref(j.result);
        api_error(resp, 404, "not_found", "id", "no held message %s", id);
        return;
    }
    if (j.message_id != NULL) {
        struct error err = {0};
        if (store_held_released_add(req->store, j.message_id, &err) < 0)
            log_warn("qid=%s event=held_release_remember_failed error=\"%s\"", id, err.msg);
    }
    envelope_only(j.result);
    log_info("qid=%s event=held_release by=%s", id, req->who ? req->who->name : "-");
    api_audit(req, "held.release", id, j.result, NULL);
    json_decref(j.result);
    resp->body = json_pack("{s:s, s:b}", "id", id, "released", 1);
    free(j.message_id);
}

void api_held_delete(struct api_request *req, struct api_response *resp)
{
    char id[SPOOL_QID_LEN + 1];
    struct held_job j = { .op = HELD_DELETE, .id = id, .actor = req->who ? req->who->name : "" };

    if (id_param(req, resp, id) < 0 || !run(req, resp, &j))
        return;
    if (j.count == 0) {
        json_decref(j.result);
        api_error(resp, 404, "not_found", "id", "no held message %s", id);
        return;
    }
    envelope_only(j.result);
    log_info("qid=%s event=held_delete by=%s", id, req->who ? req->who->name : "-");
    api_audit(req, "held.delete", id, j.result, NULL);
    json_decref(j.result);
    resp->status = 204;
}

/* --- blocked senders --- */

static json_t *blocked_json(const struct store_blocked_sender *b)
{
    return json_pack("{s:I, s:s, s:s, s:s, s:o}", "id", (json_int_t)b->id, "address", b->pattern,
                     "action", store_block_action_name(b->action), "comment", b->comment,
                     "created", api_time_json(b->created));
}

/* blocked_find - the row of pattern (canonical), NULL when none */
static json_t *blocked_find(struct store *st, const char *pattern)
{
    struct store_blocked_sender *b;
    size_t n;
    struct error err = {0};
    json_t *r = NULL;
    if (store_blocked_list(st, &b, &n, &err) < 0)
        return NULL;
    for (size_t i = 0; i < n && r == NULL; i++)
        if (strcasecmp(b[i].pattern, pattern) == 0)
            r = blocked_json(&b[i]);
    store_blocked_free(b, n);
    return r;
}

void api_blocked_list(struct api_request *req, struct api_response *resp)
{
    struct store_blocked_sender *b;
    size_t n;
    struct error err = {0};
    if (store_blocked_list(req->store, &b, &n, &err) < 0) {
        api_store_fail(resp, STORE_ERR, &err);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(items, blocked_json(&b[i]));
    store_blocked_free(b, n);
    resp->body = json_pack("{s:o, s:n}", "items", items, "next_cursor");
}

void api_blocked_create(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "address", "action", "comment", NULL };
    static const char *const required[] = { "address", "action", NULL };
    struct error err = {0};
    const char *address, *action, *comment;
    enum store_block_action act;
    if (api_body_check(req, resp, allowed, required) < 0 ||
        api_opt_string(req, resp, "address", &address) < 0 ||
        api_opt_string(req, resp, "action", &action) < 0 ||
        api_opt_string(req, resp, "comment", &comment) < 0)
        return;
    if (address == NULL) {
        api_error(resp, 400, "invalid_field", "address", "address must be a string");
        return;
    }
    if (action == NULL || store_block_action_parse(action, &act) < 0) {
        api_error(resp, 400, "invalid_field", "action", "action must be \"reject\" or \"hold\"");
        return;
    }
    int64_t id = 0;
    int rc = store_blocked_add(req->store, address, act, comment, &id, &err);
    if (rc < 0) {
        api_store_fail(resp, rc, &err);
        return;
    }
    json_t *after = blocked_find(req->store, address);
    if (after == NULL)
        after = json_pack("{s:I}", "id", (json_int_t)id);
    const char *canon = json_string_value(json_object_get(after, "address"));
    api_audit(req, "blocked_sender.create", canon ? canon : address, NULL, after);
    api_reload(req);
    resp->status = 201;
    resp->body = after;
}

void api_blocked_delete(struct api_request *req, struct api_response *resp)
{
    struct error err = {0};
    const char *key = req->params[0];
    json_t *before = blocked_find(req->store, key);
    int rc = store_blocked_delete(req->store, key, &err);
    if (rc < 0) {
        json_decref(before);
        api_store_fail(resp, rc, &err);
        return;
    }
    api_audit(req, "blocked_sender.delete", key, before, NULL);
    json_decref(before);
    api_reload(req);
    resp->status = 204;
}

/* --- forwarding rules --- */

static json_t *forward_json(const struct store_forward *f)
{
    return json_pack("{s:I, s:s, s:s, s:s, s:s, s:o}", "id", (json_int_t)f->id, "address",
                     f->address, "target", f->target, "mode", store_forward_mode_name(f->mode),
                     "comment", f->comment, "created", api_time_json(f->created));
}

static json_t *forward_find(struct store *st, int64_t id)
{
    struct store_forward *f;
    size_t n;
    struct error err = {0};
    json_t *r = NULL;
    if (store_forward_list(st, &f, &n, &err) < 0)
        return NULL;
    for (size_t i = 0; i < n && r == NULL; i++)
        if (f[i].id == id)
            r = forward_json(&f[i]);
    store_forwards_free(f, n);
    return r;
}

void api_forwarding_list(struct api_request *req, struct api_response *resp)
{
    struct store_forward *f;
    size_t n;
    struct error err = {0};
    if (store_forward_list(req->store, &f, &n, &err) < 0) {
        api_store_fail(resp, STORE_ERR, &err);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(items, forward_json(&f[i]));
    store_forwards_free(f, n);
    resp->body = json_pack("{s:o, s:n}", "items", items, "next_cursor");
}

void api_forwarding_create(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "address", "target", "mode", "comment", NULL };
    static const char *const required[] = { "address", "target", NULL };
    struct error err = {0};
    const char *address, *target, *mode, *comment;
    enum store_forward_mode m = STORE_FORWARD_REDIRECT;
    if (api_body_check(req, resp, allowed, required) < 0 ||
        api_opt_string(req, resp, "address", &address) < 0 ||
        api_opt_string(req, resp, "target", &target) < 0 || api_opt_string(req, resp, "mode", &mode) < 0 ||
        api_opt_string(req, resp, "comment", &comment) < 0)
        return;
    if (mode != NULL && store_forward_mode_parse(mode, &m) < 0) {
        api_error(resp, 400, "invalid_field", "mode", "mode must be \"redirect\" or \"copy\"");
        return;
    }
    /* only mail for an internal address is forwarded (no open relay) */
    const char *at = address ? strrchr(address, '@') : NULL;
    struct store_domain dom = {0};
    if (at == NULL || store_domain_get(req->store, at + 1, &dom, &err) != STORE_OK) {
        api_error(resp, 400, "invalid_field", "address",
                  "address must be under one of the organisation's domains");
        return;
    }
    store_domain_clear(&dom);
    int64_t id = 0;
    int rc = store_forward_add(req->store, address, target, m, comment, &id, &err);
    if (rc < 0) {
        api_store_fail(resp, rc, &err);
        return;
    }
    json_t *after = forward_find(req->store, id);
    if (after == NULL)
        after = json_pack("{s:I}", "id", (json_int_t)id);
    char key[32];
    xsnprintf(key, sizeof key, "%lld", (long long)id);
    api_audit(req, "forwarding.create", key, NULL, after);
    api_reload(req);
    resp->status = 201;
    resp->body = after;
}

void api_forwarding_delete(struct api_request *req, struct api_response *resp)
{
    struct error err = {0};
    const char *key = req->params[0];
    char *end = NULL;
    long long id = strtoll(key, &end, 10);
    if (key[0] == '\0' || end == NULL || *end != '\0' || id <= 0) {
        api_error(resp, 400, "invalid_field", "id", "id must be a rule id (a positive number)");
        return;
    }
    json_t *before = forward_find(req->store, id);
    int rc = store_forward_delete(req->store, id, &err);
    if (rc < 0) {
        json_decref(before);
        api_store_fail(resp, rc, &err);
        return;
    }
    api_audit(req, "forwarding.delete", key, before, NULL);
    json_decref(before);
    api_reload(req);
    resp->status = 204;
}
