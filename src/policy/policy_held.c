/*
 * policy_held.c - the organisation-wide blocked senders (issue 7): a sender
 * address or domain an administrator listed is refused at RCPT
 * (550 5.7.1), or accepted into quarantine (POLICY_HOLD: the message is
 * spooled held and delivered only when an administrator releases it).
 * Inbound mail only: the outbound role's own senders are never screened
 * here.  Reads only the snapshot in the request.
 */
#include <string.h>
#include "../core/core.h"
#include "policy_priv.h"

/* policy_check_blocked_sender - RCPT stage, after recipient validation */
void policy_check_blocked_sender(const struct policy_request *req, struct policy_verdict *out)
{
    if (req->outbound_host || req->auth_user != NULL)
        return;
    const struct store_blocked_sender *b = store_snapshot_blocked_sender(req->snapshot, req->sender);
    if (b == NULL)
        return;
    if (b->action == STORE_BLOCK_HOLD) {
        policy_verdict_set(out, POLICY_HOLD, 250, "2.1.5", "Ok");
        xsnprintf(out->reason, sizeof out->reason, "blocked sender (hold)");
        return;
    }
    policy_verdict_set(out, POLICY_REJECT, 550, "5.7.1", "sender blocked by policy");
    xsnprintf(out->reason, sizeof out->reason, "blocked sender %.120s", b->pattern);
}
