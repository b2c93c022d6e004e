/*
 * api_tracking.c - /api/v1/tracking (issue 11): search the message tracking
 * database, and one message with its timeline.
 *
 *   GET /api/v1/tracking?sender=&rcpt=&subject=&message_id=&qid=&client_ip=
 *                       &outcome=&after=&before=&cursor=&limit=
 *       {"items": [message...], "next_cursor": "N" | null}, newest first
 *   GET /api/v1/tracking/{id}     {id}: a message id (digits) or a queue id
 *       {"message": {...}, "events": [event...]}
 *
 * Who: CONFIG_READ (administrators and basic administrators).  Tracking
 * holds envelopes, subjects and replies, never message content.
 *
 * Threads: handlers run on HTTP workers with that thread's tracking handle
 * (api_tracking_store); the tracking thread writes, readers never wait for
 * it (store_tracking.h).  Events arrive within ~200 ms of happening.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "../core/cidr.h"
#include "../spool/spool.h"
#include "../store/store_tracking.h"
#include "api_priv.h"
#include "api_tracking.h"

#define TRACKING_PAGE_DEFAULT 50
#define TRACKING_PAGE_MAX 1000

/* the outcomes a query may ask for (store_tracking.h) */
static const char *const outcomes[] = {
    "rejected", "tempfailed", "queued", "deferred", "held", "delivered",
    "bounced", "partial", "deleted", "archived", "open",
};

/* time_us_json - microseconds as ISO 8601 with milliseconds, UTC */
static json_t *time_us_json(int64_t us)
{
    char s[40], out[48];
    if (us <= 0)
        return json_null();
    time_iso8601(s, sizeof s, (time_t)(us / 1000000));
    size_t n = strlen(s);
    if (n == 0 || s[n - 1] != 'Z')
        return json_string(s);
    s[n - 1] = '\0';
    xsnprintf(out, sizeof out, "%s.%03dZ", s, (int)(us / 1000 % 1000));
    return json_string(out);
}

/* set_text - member key = s unless s is NULL or "" (events show what they carry) */
static void set_text(json_t *o, const char *key, const char *s)
{
    if (s != NULL && s[0] != '\0')
        json_object_set_new(o, key, api_json_text(s));
}

static json_t *msg_json(const struct store_tracking_msg *m)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer((json_int_t)m->id));
    json_object_set_new(o, "first", time_us_json(m->first_us));
    json_object_set_new(o, "last", time_us_json(m->last_us));
    json_object_set_new(o, "qid", m->qid[0] ? json_string(m->qid) : json_null());
    json_object_set_new(o, "session", m->session[0] ? json_string(m->session) : json_null());
    json_object_set_new(o, "txn", json_integer(m->txn));
    json_object_set_new(o, "client_ip", api_json_text(m->client_ip));
    json_object_set_new(o, "helo", api_json_text(m->helo));
    json_object_set_new(o, "sender", api_json_text(m->sender));
    json_object_set_new(o, "subject", api_json_text(m->subject));
    json_object_set_new(o, "message_id", api_json_text(m->message_id));
    json_object_set_new(o, "role", api_json_text(m->role));
    json_object_set_new(o, "outcome", api_json_text(m->outcome));
    json_object_set_new(o, "size", json_integer((json_int_t)m->size));
    json_t *rc = json_array();
    for (size_t i = 0; i < m->n_rcpts; i++)
        json_array_append_new(rc, json_pack("{s:o, s:o}", "address", api_json_text(m->rcpts[i]),
                                            "state", api_json_text(m->rcpt_states[i])));
    json_object_set_new(o, "rcpts", rc);
    return o;
}

static json_t *event_json(const struct store_tracking_event *e)
{
    json_t *o = json_object();
    json_object_set_new(o, "time", time_us_json(e->ts_us));
    json_object_set_new(o, "ts_us", json_integer((json_int_t)e->ts_us));
    json_object_set_new(o, "kind", json_string(e->kind));
    set_text(o, "result", e->result);
    set_text(o, "rcpt", e->rcpt);
    set_text(o, "stage", e->stage);
    set_text(o, "check", e->check);
    if (e->code != 0)
        json_object_set_new(o, "code", json_integer(e->code));
    set_text(o, "dsn", e->dsn);
    set_text(o, "reason", e->reason);
    set_text(o, "remote", e->remote);
    set_text(o, "tls", e->tls);
    if (e->actor != NULL)        /* "" is the system: shown */
        json_object_set_new(o, "actor", api_json_text(e->actor));
    set_text(o, "detail", e->detail);
    if (e->size != 0)
        json_object_set_new(o, "size", json_integer((json_int_t)e->size));
    if (strcmp(e->kind, "attempt") == 0)
        json_object_set_new(o, "latency_ms", json_integer(e->latency_ms));
    return o;
}

/* tracking_handle - the thread's tracking database; NULL after a 503 */
static struct store_tracking *tracking_handle(struct api_request *req, struct api_response *resp)
{
    struct error err = {0};
    struct store_tracking *st = api_tracking_store(req, &err);
    if (st == NULL)
        api_error(resp, 503, "tracking_unavailable", NULL, "no message tracking: %s", err.msg);
    return st;
}

static bool valid_qid(const char *s)
{
    size_t n = strlen(s);
    return n == SPOOL_QID_LEN && strspn(s, "0123456789ABCDEFabcdef") == n;
}

/* positive - s as an integer 1..max; false when it is not one */
static bool positive(const char *s, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno != 0 || v <= 0 || v > max)
        return false;
    *out = v;
    return true;
}

/* time_param - ?after= / ?before=: unix seconds or ISO 8601, as microseconds */
static int time_param(struct api_request *req, struct api_response *resp, const char *name,
                      int64_t *out_us)
{
    const char *v = api_query(req, name);
    int64_t t;
    *out_us = 0;
    if (v == NULL)
        return 0;
    if (api_parse_time(v, &t) < 0 || t < 0 || t > INT64_C(253402300799)) {
        char shown[80];
        api_error(resp, 400, "invalid_parameter", name, "%s is not a time (unix seconds, or ISO "
                  "8601 such as 2026-11-28T18:39:50Z)", log_quote(shown, sizeof shown, v));
        return -1;
    }
    *out_us = t * 1000000;
    return 0;
}

/* parse_search - the query string into q; -1 after a 400 naming the parameter */
static int parse_search(struct api_request *req, struct api_response *resp,
                        struct store_tracking_query *q)
{
    char shown[80];
    memset(q, 0, sizeof q[0]);
    q->sender = api_query(req, "sender");
    q->rcpt = api_query(req, "rcpt");
    q->subject = api_query(req, "subject");
    q->message_id = api_query(req, "message_id");
    q->qid = api_query(req, "qid");
    q->client_ip = api_query(req, "client_ip");
    q->outcome = api_query(req, "outcome");
    q->limit = TRACKING_PAGE_DEFAULT;
    const char *lim = api_query(req, "limit"), *cur = api_query(req, "cursor");
    long long v;
    if (lim != NULL) {
        if (!positive(lim, TRACKING_PAGE_MAX, &v)) {
            api_error(resp, 400, "invalid_parameter", "limit", "limit must be a number from 1 to %d",
                      TRACKING_PAGE_MAX);
            return -1;
        }
        q->limit = (int)v;
    }
    if (cur != NULL) {
        if (!positive(cur, INT64_MAX, &v)) {
            api_error(resp, 400, "invalid_parameter", "cursor",
                      "cursor must be the next_cursor of the previous page");
            return -1;
        }
        q->cursor = (int64_t)v;
    }
    if (q->qid != NULL && !valid_qid(q->qid)) {
        api_error(resp, 400, "invalid_parameter", "qid", "%s is not a queue id (16 hexadecimal "
                  "digits)", log_quote(shown, sizeof shown, q->qid));
        return -1;
    }
    if (q->client_ip != NULL) {
        struct cidr c;
        struct error err = {0};
        if (cidr_parse(q->client_ip, &c, &err) < 0) {
            api_error(resp, 400, "invalid_parameter", "client_ip", "%s is not an IP address or "
                      "range (192.0.2.1, 192.0.2.0/24, 2001:db8::/32)",
                      log_quote(shown, sizeof shown, q->client_ip));
            return -1;
        }
    }
    if (q->outcome != NULL) {
        bool known = false;
        for (size_t i = 0; i < sizeof outcomes / sizeof outcomes[0] && !known; i++)
            known = strcmp(outcomes[i], q->outcome) == 0;
        if (!known) {
            api_error(resp, 400, "invalid_parameter", "outcome", "%s is not an outcome (rejected, "
                      "tempfailed, queued, deferred, held, delivered, bounced, partial, deleted, "
                      "archived, open)", log_quote(shown, sizeof shown, q->outcome));
            return -1;
        }
    }
    if (time_param(req, resp, "after", &q->after_us) < 0 ||
        time_param(req, resp, "before", &q->before_us) < 0)
        return -1;
    return 0;
}

void api_tracking_search(struct api_request *req, struct api_response *resp)
{
    struct store_tracking_query q;
    if (parse_search(req, resp, &q) < 0)
        return;
    struct store_tracking *st = tracking_handle(req, resp);
    if (st == NULL)
        return;
    struct store_tracking_msg *m = NULL;
    size_t n = 0;
    int64_t next = 0;
    struct error err = {0};
    int rc = store_tracking_search(st, &q, &m, &n, &next, &err);
    if (rc != STORE_OK) {
        api_store_fail(resp, rc, &err);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(items, msg_json(&m[i]));
    store_tracking_msgs_free(m, n);
    json_t *cursor = json_null();
    if (next > 0) {
        char c[24];
        xsnprintf(c, sizeof c, "%lld", (long long)next);
        json_decref(cursor);
        cursor = json_string(c);
    }
    resp->body = json_pack("{s:o, s:o}", "items", items, "next_cursor", cursor);
}

void api_tracking_get(struct api_request *req, struct api_response *resp)
{
    const char *s = req->n_params > 0 ? req->params[0] : "";
    int64_t id = 0;
    char qid[SPOOL_QID_LEN + 1] = "";
    long long v;
    if (valid_qid(s)) {
        for (int i = 0; i < SPOOL_QID_LEN; i++)
            qid[i] = (char)(s[i] >= 'a' && s[i] <= 'f' ? s[i] - 32 : s[i]);
        qid[SPOOL_QID_LEN] = '\0';
    } else if (positive(s, INT64_MAX, &v)) {
        id = (int64_t)v;
    } else {
        char shown[60];
        api_error(resp, 400, "invalid_field", "id", "%s is neither a tracking id (a number) nor "
                  "a queue id (16 hexadecimal digits)", log_quote(shown, sizeof shown, s));
        return;
    }
    struct store_tracking *st = tracking_handle(req, resp);
    if (st == NULL)
        return;
    struct store_tracking_msg m;
    struct store_tracking_event *ev = NULL;
    size_t n = 0;
    struct error err = {0};
    memset(&m, 0, sizeof m);
    int rc = store_tracking_get(st, id, id ? NULL : qid, &m, &ev, &n, &err);
    if (rc == STORE_NOT_FOUND) {
        api_error(resp, 404, "not_found", "id", "no tracked message %s", id ? s : qid);
        return;
    }
    if (rc != STORE_OK) {
        api_store_fail(resp, rc, &err);
        return;
    }
    json_t *events = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(events, event_json(&ev[i]));
    resp->body = json_pack("{s:o, s:o}", "message", msg_json(&m), "events", events);
    store_tracking_events_free(ev, n);
    store_tracking_msg_clear(&m);
}
