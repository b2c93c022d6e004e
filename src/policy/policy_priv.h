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

/* greylisting (policy_greylist.c), RCPT stage, after recipient validation:
 * unknown triplets of inbound mail get 451 4.7.1 */
void policy_check_greylist(const struct policy_request *req, struct policy_verdict *out);

#endif
