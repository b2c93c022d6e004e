/*
 * policy_greylist.c - the greylisting check (RCPT stage; greylist.h has
 * the triplet table and its rules).
 *
 * Inbound mail only: the outbound role (an authorised outbound host, an
 * authenticated client) and permitted senders (req->permitted) are never
 * greylisted.  Every decision is logged:
 *   event=greylist check=greylisting triplet=... result=new|early|passed|expired
 *   verdict=tempfail|dunno reason="..."
 */
#include <string.h>
#include "../core/core.h"
#include "greylist.h"
#include "policy.h"
#include "policy_priv.h"
#include "screen_clock.h"

void policy_check_greylist(const struct policy_request *req, struct policy_verdict *out)
{
    if (req->greylist == NULL)
        return;
    const struct moat_settings *set = greylist_settings(req->greylist);
    if (!set->greylisting || req->outbound_host || req->auth_user != NULL)
        return;
    if (req->permitted) {
        char f[300], t[300];
        log_info("client=%s event=greylist check=greylisting result=skipped verdict=dunno "
                 "reason=\"permitted sender\" from=%s to=%s", req->client_addr,
                 log_quote(f, sizeof f, req->sender ? req->sender : ""),
                 log_quote(t, sizeof t, req->rcpt ? req->rcpt : ""));
        return;
    }
    char key[GREYLIST_KEY_MAX];
    if (greylist_triplet_key(req->client_addr, req->sender, req->rcpt, key, sizeof key) < 0)
        return;     /* not an IP client (a test socketpair) or an over-long triplet */
    int64_t now = screen_clock_now(set);
    enum greylist_result r = greylist_check(req->greylist, key, now);
    static const char *const reasons[] = {
        [GREYLIST_NEW] = "first attempt of this triplet",
        [GREYLIST_EARLY] = "retried before greylist_min_delay",
        [GREYLIST_PASSED] = "retried in the window, or passed before",
        [GREYLIST_EXPIRED] = "retried after greylist_max_delay or unused for greylist_pass_lifetime",
    };
    char q[GREYLIST_KEY_MAX + 8];
    log_info("client=%s event=greylist check=greylisting triplet=%s result=%s verdict=%s "
             "reason=\"%s\"", req->client_addr, log_quote(q, sizeof q, key),
             greylist_result_name(r), r == GREYLIST_PASSED ? "dunno" : "tempfail", reasons[r]);
    if (r == GREYLIST_PASSED)
        return;
    policy_verdict_set(out, POLICY_TEMPFAIL, 451, "4.7.1", "greylisted, try again later");
    xsnprintf(out->reason, sizeof out->reason, "greylisted (%s triplet)", greylist_result_name(r));
}
