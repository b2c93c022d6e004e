/*
 * policy_outbound.c - MAIL-stage checks of issue 6: the inbound TLS
 * requirement for listed sender domains, and the sender restriction of
 * SMTP AUTH accounts.  Both read only the snapshot in the request.
 *
 * Relay control for the outbound role itself (accept any recipient domain
 * from an authorised host or an authenticated session) is in policy.c's
 * relay check, so there is one place that says who may relay.
 */
#include <string.h>
#include "../core/core.h"
#include "policy_priv.h"

/* sender_domain - the domain of the MAIL FROM path, NULL for <> or none */
static const char *sender_domain(const char *sender)
{
    if (sender == NULL || sender[0] == '\0')
        return NULL;
    const char *at = strrchr(sender, '@');
    return at != NULL && at[1] != '\0' ? at + 1 : NULL;
}

/* policy_check_tls_inbound - a sender domain (or a parent) listed in
 * tls_inbound_required may reach us only under TLS (DESIGN.md tls_policies:
 * "inbound: require TLS from given sender domains").  Mail from our own
 * outbound role is not inbound mail. */
void policy_check_tls_inbound(const struct policy_request *req, struct policy_verdict *out)
{
    const char *dom = sender_domain(req->sender);
    if (req->tls || dom == NULL || req->outbound_host || req->auth_user != NULL)
        return;
    if (!store_snapshot_tls_required(req->snapshot, dom))
        return;
    /* RFC 3207 4: 530 for a command refused until STARTTLS */
    policy_verdict_set(out, POLICY_REJECT, 530, "5.7.0", "Must issue a STARTTLS command first");
    xsnprintf(out->reason, sizeof out->reason,
              "tls_inbound policy: sender domain %.100s requires TLS", dom);
}

/* policy_check_outbound_sender - an SMTP AUTH account may use <> or a sender
 * under an internal domain only: a stolen password must not turn Moat into
 * a relay for any sender.  Authorised hosts may use any sender (they relay
 * for the organisation's own servers, forwarding included). */
void policy_check_outbound_sender(const struct policy_request *req, struct policy_verdict *out)
{
    if (req->auth_user == NULL || req->outbound_host)
        return;
    if (req->sender == NULL || req->sender[0] == '\0')
        return;
    const char *dom = sender_domain(req->sender);
    if (dom != NULL && req->snapshot != NULL && store_snapshot_find(req->snapshot, dom) != NULL)
        return;
    policy_verdict_set(out, POLICY_REJECT, 553, "5.7.1", "sender not allowed for this account");
    xsnprintf(out->reason, sizeof out->reason,
              "account %.128s may only send as an internal domain", req->auth_user);
}
