/*
 * policy_rspamd.c - rspamd's HTTP protocol (see policy_rspamd.h): build the
 * /checkv2 request, read its bounded JSON answer, map the action.
 *
 * Mapping (issue 7 item 6):
 *   no action                    -> accept
 *   add header, rewrite subject  -> accept, X-Spam-Status: Yes / X-Spam-Score
 *   greylist, soft reject        -> 451 4.7.1
 *   reject                       -> 550 5.7.1 (held when rspamd_hold_action says so)
 *   unreachable, timeout, HTTP error, unreadable answer
 *                                -> 451 4.7.0, or accept with a warning
 * rspamd_hold_action "add_header" also holds add header / rewrite subject.
 *
 * Thread use: rspamd_scan runs on a worker thread; it shares nothing (one
 * curl handle per call, CURLOPT_NOSIGNAL).  Never a proxy from the
 * environment, never a redirect.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "policy_rspamd.h"

static const char *const action_names[] = {
    [RSPAMD_NO_ACTION] = "no action", [RSPAMD_GREYLIST] = "greylist",
    [RSPAMD_ADD_HEADER] = "add header", [RSPAMD_REWRITE_SUBJECT] = "rewrite subject",
    [RSPAMD_SOFT_REJECT] = "soft reject", [RSPAMD_REJECT] = "reject",
};
#define N_ACTIONS (sizeof action_names / sizeof action_names[0])

const char *rspamd_action_name(enum rspamd_action a)
{
    return (unsigned)a < N_ACTIONS ? action_names[a] : "?";
}

/* json_depth_ok - nesting of [ and { outside strings stays within max
 * (jansson's own limit is 2048: too deep for a worker thread's stack budget) */
static bool json_depth_ok(const char *p, size_t len, int max)
{
    int depth = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max)
                return false;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return true;
}

/* clamp_score - scores go into header lines and log text: keep them short
 * (rspamd's scores are within a few hundred; 1e300 would print 300 digits) */
static double clamp_score(double x)
{
    if (!(x >= -RSPAMD_SCORE_MAX))      /* also NaN */
        return -RSPAMD_SCORE_MAX;
    return x > RSPAMD_SCORE_MAX ? RSPAMD_SCORE_MAX : x;
}

int rspamd_parse_response(const char *body, size_t len, struct rspamd_result *out, char *why,
                          size_t whylen)
{
    memset(out, 0, sizeof *out);
    if (len > RSPAMD_RESPONSE_MAX) {
        xsnprintf(why, whylen, "answer larger than %d octets", RSPAMD_RESPONSE_MAX);
        return -1;
    }
    if (!json_depth_ok(body, len, RSPAMD_JSON_DEPTH_MAX)) {
        xsnprintf(why, whylen, "answer nested deeper than %d levels", RSPAMD_JSON_DEPTH_MAX);
        return -1;
    }
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL || !json_is_object(root)) {
        xsnprintf(why, whylen, "answer is not a JSON object");
        json_decref(root);
        return -1;
    }
    const char *action = json_string_value(json_object_get(root, "action"));
    int rc = -1;
    if (action == NULL) {
        const char *e = json_string_value(json_object_get(root, "error"));
        char q[120];
        xsnprintf(why, whylen, "no action in the answer%s%s", e ? ": " : "",
                  e ? log_quote(q, sizeof q, e) : "");
        goto done;
    }
    for (size_t i = 0; i < N_ACTIONS; i++)
        if (strcmp(action, action_names[i]) == 0) {
            out->action = (enum rspamd_action)i;
            rc = 0;
        }
    if (rc < 0) {
        char q[64];
        xsnprintf(why, whylen, "unknown action %s", log_quote(q, sizeof q, action));
        goto done;
    }
    json_t *s = json_object_get(root, "score");
    json_t *r = json_object_get(root, "required_score");
    out->score = clamp_score(json_is_number(s) ? json_number_value(s) : 0.0);
    out->required = clamp_score(json_is_number(r) ? json_number_value(r) : 0.0);
done:
    json_decref(root);
    return rc;
}

/* --- the HTTP exchange --- */

struct body_buf {
    struct buf b;
    bool too_big;
};

static size_t on_body(char *ptr, size_t size, size_t n, void *arg)
{
    struct body_buf *bb = arg;
    size_t len = size * n;
    if (bb->b.len + len > RSPAMD_RESPONSE_MAX) {
        bb->too_big = true;
        return 0;    /* curl stops with CURLE_WRITE_ERROR */
    }
    buf_append(&bb->b, ptr, len);
    return len;
}

/* add_header - "Name: value", refusing values that would split the header */
static struct curl_slist *add_header(struct curl_slist *h, const char *name, const char *value,
                                     bool *bad)
{
    char line[1100];
    for (const char *p = value; *p; p++)
        if ((unsigned char)*p < 32 || *p == 127)
            *bad = true;
    if (xsnprintf(line, sizeof line, "%s: %s", name, value) < 0)
        *bad = true;
    if (*bad)
        return h;
    struct curl_slist *n = curl_slist_append(h, line);
    if (n == NULL)
        log_fatal("event=alloc_failed what=\"curl header\"");
    return n;
}

int rspamd_scan(const struct rspamd_request *rq, struct rspamd_result *out, char *why, size_t whylen)
{
    char url[600];
    memset(out, 0, sizeof *out);
    size_t ul = strlen(rq->url);
    if (xsnprintf(url, sizeof url, "%s%s", rq->url,
                  ul && rq->url[ul - 1] == '/' ? "checkv2" : "/checkv2") < 0) {
        xsnprintf(why, whylen, "rspamd_url too long");
        return -1;
    }
    CURL *c = curl_easy_init();
    if (c == NULL) {
        xsnprintf(why, whylen, "cannot create an HTTP client");
        return -1;
    }
    bool bad = false;
    struct curl_slist *h = NULL;
    h = add_header(h, "IP", rq->ip ? rq->ip : "", &bad);
    if (rq->helo && rq->helo[0])
        h = add_header(h, "Helo", rq->helo, &bad);
    if (rq->from && rq->from[0])
        h = add_header(h, "From", rq->from, &bad);
    for (size_t i = 0; i < rq->n_rcpts; i++)
        h = add_header(h, "Rcpt", rq->rcpts[i], &bad);
    if (rq->queue_id && rq->queue_id[0])
        h = add_header(h, "Queue-Id", rq->queue_id, &bad);
    h = add_header(h, "Expect", "", &bad);     /* no 100-continue round trip */
    if (bad) {
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
        xsnprintf(why, whylen, "an envelope field cannot travel in an HTTP header");
        return -1;
    }
    struct body_buf bb = { .too_big = false };
    buf_init(&bb.b);
    long t = (long)(rq->timeout > 0 ? rq->timeout : 15);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, t);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, t);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, rq->msg ? rq->msg : "");
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(rq->msg ? rq->msg_len : 0));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &bb);
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    int rc = -1;
    if (bb.too_big)
        xsnprintf(why, whylen, "answer larger than %d octets", RSPAMD_RESPONSE_MAX);
    else if (cc != CURLE_OK)
        xsnprintf(why, whylen, "%s", curl_easy_strerror(cc));
    else if (status != 200)
        xsnprintf(why, whylen, "HTTP status %ld", status);
    else
        rc = rspamd_parse_response((const char *)bb.b.data, bb.b.len, out, why, whylen);
    buf_free(&bb.b);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return rc;
}

/* --- the decision --- */

void rspamd_policy_from_settings(const char *unreachable, const char *hold_action,
                                 struct rspamd_policy *pol)
{
    pol->unreachable_accept = unreachable != NULL && strcmp(unreachable, "accept") == 0;
    pol->hold = RSPAMD_HOLD_NONE;
    if (hold_action != NULL && strcmp(hold_action, "reject") == 0)
        pol->hold = RSPAMD_HOLD_REJECT;
    else if (hold_action != NULL && strcmp(hold_action, "add_header") == 0)
        pol->hold = RSPAMD_HOLD_ADD_HEADER;
}

void rspamd_decide(int scan_rc, const struct rspamd_result *r, const char *why,
                   const struct rspamd_policy *pol, struct policy_verdict *out, struct buf *headers)
{
    memset(out, 0, sizeof *out);
    out->action = POLICY_DUNNO;
    out->check = "rspamd";
    if (scan_rc < 0) {
        if (pol->unreachable_accept) {
            xsnprintf(out->reason, sizeof out->reason, "rspamd unavailable (%s): accepted unscanned",
                      why && why[0] ? why : "error");
            return;
        }
        policy_verdict_set(out, POLICY_TEMPFAIL, 451, "4.7.0",
                           "Content scanner unavailable, try again later");
        out->check = "rspamd";
        xsnprintf(out->reason, sizeof out->reason, "rspamd unavailable: %s",
                  why && why[0] ? why : "error");
        return;
    }
    bool spam_header = r->action == RSPAMD_ADD_HEADER || r->action == RSPAMD_REWRITE_SUBJECT;
    bool held = (r->action == RSPAMD_REJECT && pol->hold != RSPAMD_HOLD_NONE) ||
                (spam_header && pol->hold == RSPAMD_HOLD_ADD_HEADER);
    switch (r->action) {
    case RSPAMD_GREYLIST:
    case RSPAMD_SOFT_REJECT:
        policy_verdict_set(out, POLICY_TEMPFAIL, 451, "4.7.1",
                           "Message deferred by content filter, try again later");
        break;
    case RSPAMD_REJECT:
        if (!held)
            policy_verdict_set(out, POLICY_REJECT, 550, "5.7.1",
                               "Message rejected as spam by content filter");
        break;
    default:
        break;
    }
    if (held)
        policy_verdict_set(out, POLICY_HOLD, 250, "2.0.0", "Ok");
    out->check = "rspamd";
    xsnprintf(out->reason, sizeof out->reason, "rspamd action=\"%s\" score=%.2f required=%.2f%s",
              rspamd_action_name(r->action), r->score, r->required, held ? " (held)" : "");
    if (headers != NULL && (spam_header || (held && r->action == RSPAMD_REJECT))) {
        buf_printf(headers, "X-Spam-Status: Yes, score=%.2f required=%.2f action=%s\r\n", r->score,
                   r->required, rspamd_action_name(r->action));
        buf_printf(headers, "X-Spam-Score: %.2f\r\n", r->score);
    }
}
