/*
 * policy_priv.h - private to src/policy: the checks that live in their own
 * files, for the table in policy.c.
 */
#ifndef MOAT_POLICY_PRIV_H
#define MOAT_POLICY_PRIV_H

#include "policy.h"

/* policy_check_rcpt_valid - recipient validation (policy_rcpt.c): the
 * directory index, or a call-forward probe (asynchronous when p != NULL) */
void policy_check_rcpt_valid(const struct policy_request *req, struct policy_verdict *out,
                             struct policy_pending *p);

/* the outbound role (policy_outbound.c), MAIL stage:
 * policy_check_tls_inbound - sender domains listed as TLS-required must come under TLS;
 * policy_check_outbound_sender - an authenticated account sends as an internal domain */
void policy_check_tls_inbound(const struct policy_request *req, struct policy_verdict *out);
void policy_check_outbound_sender(const struct policy_request *req, struct policy_verdict *out);

/* policy_check_blocked_sender - issue 7 (policy_held.c), RCPT stage: an
 * administrator's blocked sender list, action reject or hold */
void policy_check_blocked_sender(const struct policy_request *req, struct policy_verdict *out);
/* policy_check_srs_bounce - issue 7 (policy_forward.c), RCPT stage: mail to
 * an SRS0 address is accepted when the address is valid, else 550 5.7.1 */
void policy_check_srs_bounce(const struct policy_request *req, struct policy_verdict *out);

#endif
