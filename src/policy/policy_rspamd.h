/*
 * policy_rspamd.h - content scanning with rspamd (issue 7): the message is
 * sent to rspamd's HTTP protocol (POST /checkv2) and the "action" of its
 * JSON answer decides.  The scan blocks (libcurl), so it runs only on the
 * worker pool, through the end-of-DATA content stage (policy_content.h:
 * content_check_rspamd in policy_content_rspamd.c); never on the SMTP loop.
 *
 * Parts, each testable alone:
 *   rspamd_parse_response - the JSON answer, bounded in size and depth
 *                           (pure; fuzzed by fuzz_rspamd_response);
 *   rspamd_scan           - one blocking HTTP exchange with rspamd;
 *   rspamd_decide         - the action (or the failure) -> verdict and the
 *                           header lines to add (pure; unit-tested).
 */
#ifndef MOAT_POLICY_RSPAMD_H
#define MOAT_POLICY_RSPAMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "policy.h"
#include "../core/core.h"

#define RSPAMD_RESPONSE_MAX (256 * 1024)   /* a /checkv2 answer with every symbol is a few KiB */
#define RSPAMD_JSON_DEPTH_MAX 16           /* rspamd's answer nests 3-4 levels */
#define RSPAMD_SCORE_MAX 1000000.0         /* scores are clamped to +-this */

/* rspamd's actions (rspamd: src/libserver/cfg_file.h names) */
enum rspamd_action {
    RSPAMD_NO_ACTION = 0, RSPAMD_GREYLIST, RSPAMD_ADD_HEADER, RSPAMD_REWRITE_SUBJECT,
    RSPAMD_SOFT_REJECT, RSPAMD_REJECT,
};

struct rspamd_request {
    const char *url;             /* base URL: "http://127.0.0.1:11333" */
    int64_t timeout;             /* seconds, the whole exchange */
    const char *ip;              /* the client's address */
    const char *helo;
    const char *from;            /* envelope sender, "" for <> */
    const char *const *rcpts;
    size_t n_rcpts;
    const char *queue_id;        /* may be NULL */
    const char *msg;             /* the message as received */
    size_t msg_len;
};

struct rspamd_result {
    enum rspamd_action action;
    double score;
    double required;             /* required_score; 0 when absent */
};

/* what to do with a result (from the settings) */
enum rspamd_hold { RSPAMD_HOLD_NONE = 0, RSPAMD_HOLD_REJECT, RSPAMD_HOLD_ADD_HEADER };
struct rspamd_policy {
    bool unreachable_accept;     /* rspamd_unreachable = accept */
    enum rspamd_hold hold;       /* rspamd_hold_action */
};

const char *rspamd_action_name(enum rspamd_action a);
/* rspamd_parse_response - body[0..len) (not NUL-terminated) -> out; 0, or
 * -1 with why (too large, too deep, not JSON, no or unknown "action") */
int rspamd_parse_response(const char *body, size_t len, struct rspamd_result *out, char *why,
                          size_t whylen);
/* rspamd_scan - blocking: POST url/checkv2 with the headers IP, Helo, From,
 * Rcpt (one per recipient), Queue-Id; 0 with out filled, or -1 with why
 * (unreachable, timeout, HTTP status, an answer that does not parse) */
int rspamd_scan(const struct rspamd_request *rq, struct rspamd_result *out, char *why, size_t whylen);
/* rspamd_decide - scan_rc/r/why (as rspamd_scan left them) -> out (DUNNO,
 * HOLD, TEMPFAIL or REJECT with the reply and reason) and, for accepted
 * mail marked as spam, X-Spam-Status / X-Spam-Score lines appended to
 * headers (may be NULL) */
void rspamd_decide(int scan_rc, const struct rspamd_result *r, const char *why,
                   const struct rspamd_policy *pol, struct policy_verdict *out, struct buf *headers);
/* rspamd_policy_from_settings - the settings' words -> pol */
void rspamd_policy_from_settings(const char *unreachable, const char *hold_action,
                                 struct rspamd_policy *pol);

#endif
