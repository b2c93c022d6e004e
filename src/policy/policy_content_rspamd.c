/*
 * policy_content_rspamd.c - the rspamd content check (issue 7 item 6) in
 * the end-of-DATA content stage (policy_content.h): on a worker thread,
 * one /checkv2 scan of the message (policy_rspamd.c) and the mapping of
 * its action to a verdict; X-Spam-Status / X-Spam-Score lines go into
 * st->headers for spam that is accepted.
 *
 * Skipped (DUNNO, nothing sent) when rspamd_url is empty, when every
 * recipient permits the sender (permitted senders skip spam scoring), or
 * when the message was too large to keep for screening.
 */
#include <string.h>
#include "../core/core.h"
#include "policy_content.h"
#include "policy_rspamd.h"

void content_check_rspamd(const struct content_request *rq, struct content_state *st,
                          struct policy_verdict *out)
{
    out->action = POLICY_DUNNO;
    out->check = "rspamd";
    if (rq->rspamd_url == NULL || rq->rspamd_url[0] == '\0')
        return;
    if (rq->all_permitted) {
        xsnprintf(out->reason, sizeof out->reason, "skipped: permitted sender");
        return;
    }
    if (rq->msg == NULL) {
        xsnprintf(out->reason, sizeof out->reason, "skipped: message larger than the screening limit");
        return;
    }
    struct rspamd_request r = {
        .url = rq->rspamd_url, .timeout = rq->rspamd_timeout, .ip = rq->client_addr,
        .helo = rq->helo, .from = rq->sender, .rcpts = (const char *const *)rq->rcpts,
        .n_rcpts = rq->n_rcpts, .queue_id = rq->queue_id, .msg = rq->msg, .msg_len = rq->msg_len,
    };
    struct rspamd_result res;
    char why[160] = "";
    int rc = rspamd_scan(&r, &res, why, sizeof why);
    struct rspamd_policy pol;
    rspamd_policy_from_settings(rq->rspamd_unreachable, rq->rspamd_hold_action, &pol);
    struct buf hdr;
    buf_init(&hdr);
    rspamd_decide(rc, &res, why, &pol, out, &hdr);
    if (rc < 0 && out->action == POLICY_DUNNO)
        log_warn("session=%s client=%s event=content check=rspamd action=accept "
                 "reason=\"%s\"", rq->session_id ? rq->session_id : "-", rq->client_addr, out->reason);
    content_state_ran(st, "rspamd");
    if (hdr.len > 0 && st->headers.len + hdr.len < CONTENT_HEADERS_MAX)
        buf_append(&st->headers, hdr.data, hdr.len);
    buf_free(&hdr);
}
