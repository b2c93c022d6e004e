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

/* DNSBL (policy_dnsbl.c): the RCPT-stage check and its pure parts */
struct dns_result;
enum dnsbl_result { DNSBL_WAIT = 0, DNSBL_CLEAN, DNSBL_LISTED, DNSBL_ERROR };
void policy_check_dnsbl(const struct policy_request *req, struct policy_verdict *out,
                        struct policy_pending *p);
const char *policy_dnsbl_result_name(enum dnsbl_result r);
int policy_dnsbl_query_name(const char *addr, const char *zone, char *out, size_t outlen);
enum dnsbl_result policy_dnsbl_classify(const struct dns_result *r, char *answer, size_t alen);
void policy_dnsbl_decide(const char *addr, const char *const *zones, const int *weights,
                         const enum dnsbl_result *results, size_t n, int64_t threshold,
                         int64_t hold, struct policy_verdict *out);
/* anti-spoofing (policy_antispoof.c): the envelope sender at RCPT
 * (asynchronous: FCrDNS for host bypasses), the header From at DATA_END */
void policy_check_antispoof_rcpt(const struct policy_request *req, struct policy_verdict *out,
                                 struct policy_pending *p);
void policy_check_antispoof_data_end(const struct policy_request *req, struct policy_verdict *out);
/* greylisting (policy_greylist.c), RCPT stage, after recipient validation:
 * unknown triplets of inbound mail get 451 4.7.1 */
void policy_check_greylist(const struct policy_request *req, struct policy_verdict *out);
/* policy_check_blocked_sender - issue 7 (policy_held.c), RCPT stage: an
 * administrator's blocked sender list, action reject or hold */
void policy_check_blocked_sender(const struct policy_request *req, struct policy_verdict *out);
/* policy_check_srs_bounce - issue 7 (policy_forward.c), RCPT stage: mail to
 * an SRS0 address is accepted when the address is valid, else 550 5.7.1 */
void policy_check_srs_bounce(const struct policy_request *req, struct policy_verdict *out);
/* policy_check_journal - issue 8 (policy_journal.c), RCPT stage, first: the
 * journal address from a journal source is ACCEPTed (a journal transaction),
 * from anyone else refused; other recipients never join a journal transaction */
void policy_check_journal(const struct policy_request *req, struct policy_verdict *out);

#endif
