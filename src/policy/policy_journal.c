/*
 * policy_journal.c - the journal role at RCPT (issue 8, DESIGN.md 2): mail
 * to the journal address (store_snapshot_journal_address) from an
 * authorised journal source is a journal report: accepted here (ACCEPT
 * stops the RCPT checks, so no relay control, anti-spoofing, recipient
 * validation, greylisting, DNSBL or blocked senders), and the session skips
 * the end-of-DATA and content checks and forwarding for it; size limits
 * still apply.  From anyone else the journal address is refused.  A journal
 * transaction carries the journal address alone: the archive records the
 * report's own envelope, and a recipient mixed into it would be neither
 * relayed nor archived as the sender meant.
 *
 * First in the RCPT table (policy.c): the journal address usually lies
 * under an internal domain (journal.<domain>), where recipient validation
 * would refuse it.
 */
#include <string.h>
#include "../core/core.h"
#include "policy_priv.h"

const char policy_journal_check_name[] = "journal";

void policy_check_journal(const struct policy_request *req, struct policy_verdict *out)
{
    const char *rcpt = req->rcpt ? req->rcpt : "";
    const char *jaddr = store_snapshot_journal_address(req->snapshot);
    bool to_journal = jaddr[0] != '\0' && str_ieq(rcpt, jaddr);
    if (!to_journal) {
        if (req->journal_txn) {
            /* RFC 5321 4.5.3.1.10: 452 asks the client to send it later, apart */
            policy_verdict_set(out, POLICY_TEMPFAIL, 452, "4.5.3",
                               "<%.200s>: journal reports travel alone, send this recipient in "
                               "another transaction", rcpt);
            xsnprintf(out->reason, sizeof out->reason, "recipient mixed into a journal transaction");
        }
        return;
    }
    if (!req->journal_source) {
        policy_verdict_set(out, POLICY_REJECT, 550, "5.7.1",
                           "<%.200s>: not an authorised journal source", rcpt);
        xsnprintf(out->reason, sizeof out->reason, "journal address from %.64s, not a journal source",
                  req->client_addr ? req->client_addr : "?");
        return;
    }
    if (req->archive_off) {
        /* accepting it would drop it: a journal report is kept only by the archive */
        policy_verdict_set(out, POLICY_REJECT, 550, "5.7.1",
                           "<%.200s>: journaling is off on this gateway (the archive is disabled)",
                           rcpt);
        xsnprintf(out->reason, sizeof out->reason, "journal report while the archive is off");
        return;
    }
    if (req->n_rcpts > 0 && !req->journal_txn) {
        policy_verdict_set(out, POLICY_TEMPFAIL, 452, "4.5.3",
                           "<%.200s>: journal reports travel alone, send this recipient in "
                           "another transaction", rcpt);
        xsnprintf(out->reason, sizeof out->reason, "journal address mixed into a transaction");
        return;
    }
    policy_verdict_set(out, POLICY_ACCEPT, 250, "2.1.5", "Ok");
    xsnprintf(out->reason, sizeof out->reason, "journal report from an authorised source");
}
