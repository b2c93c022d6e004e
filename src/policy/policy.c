/*
 * policy.c - the verdict pipeline: one table of checks, each with one
 * signature, run in table order for the stage the SMTP session asks about.
 * The first verdict other than DUNNO wins (Postfix smtpd_check.c style
 * restriction lists, as a table instead of scattered ifs).
 *
 * Entry points: policy_evaluate, policy_evaluate_async, policy_pending_cancel,
 * policy_pending_done, policy_verdict_set.
 * Relay control also decides the outbound role: an authorised outbound host
 * or an authenticated session may relay to any domain (ACCEPT, which skips
 * recipient validation); the MAIL-stage checks of that role are in
 * policy_outbound.c.
 * Checks never block and never touch the store: they read the immutable
 * routing snapshot and directory index in the request.  Adding a check = one
 * function (here or in its own file, declared in policy_priv.h) and one row
 * in policy_checks[].
 *
 * Asynchronous checks (call-forward, policy_rcpt.c) have the async member
 * instead of fn: they may answer POLICY_PENDING and finish later with
 * policy_pending_done.  struct policy_pending is the evaluation parked at
 * that check: the check owns it while waiting, the caller once it is
 * resolved; whoever lets go last frees it (policy_pending_cancel /
 * policy_pending_done), so a session that goes away mid-probe is safe.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "../core/core.h"
#include "policy.h"
#include "policy_priv.h"

typedef void (*policy_check_fn)(const struct policy_request *req, struct policy_verdict *out);
/* an asynchronous check: p is NULL when the caller cannot wait (answer now),
 * else the check may answer POLICY_PENDING and later policy_pending_done(p) */
typedef void (*policy_async_fn)(const struct policy_request *req, struct policy_verdict *out,
                                struct policy_pending *p);

struct policy_check {
    const char *name;
    enum policy_stage stage;
    policy_check_fn fn;          /* one of fn and async */
    policy_async_fn async;
};

/* an evaluation waiting for an asynchronous check; owned by the check while
 * WAITING, by the caller once RESOLVED, freed by whoever lets go last */
enum pending_state { PENDING_WAITING, PENDING_RESOLVED, PENDING_CANCELLED };

struct policy_pending {
    enum pending_state state;
    size_t index;                /* the check that answered PENDING */
    enum policy_stage stage;
    struct policy_verdict verdict;
    void (*ready)(void *arg);
    void *arg;
    bool retry;                  /* resume at the check, not after it (policy_pending_retry) */
};

void policy_verdict_set(struct policy_verdict *v, enum policy_action a, int code,
                        const char *dsn, const char *fmt, ...)
{
    va_list ap;
    v->action = a;
    v->code = code;
    if (str_copy(v->dsn, sizeof v->dsn, dsn) < 0)
        v->dsn[0] = '\0';
    va_start(ap, fmt);
    int n = vsnprintf(v->text, sizeof v->text, fmt, ap);
    va_end(ap);
    if (n < 0)
        v->text[0] = '\0';
    /* the text goes into an SMTP reply line: no CR, LF or other controls */
    for (char *p = v->text; *p; p++)
        if ((unsigned char)*p < 32 || *p == 127)
            *p = ' ';
}

/* rcpt_domain - the domain part of "local@domain" (last "@": a quoted local
 * part may contain "@"), NULL when there is none */
static const char *rcpt_domain(const char *rcpt)
{
    const char *at = strrchr(rcpt, '@');
    if (at == NULL || at[1] == '\0')
        return NULL;
    return at + 1;
}

/* policy_check_relay - relay control: mail is accepted only for recipients
 * under a verified internal domain (or a subdomain of one).  Everything else
 * is relaying and denied (RFC 5321 3.6.2 / 7.1: no open relay). */
static void policy_check_relay(const struct policy_request *req, struct policy_verdict *out)
{
    const char *rcpt = req->rcpt ? req->rcpt : "";
    if (req->snapshot == NULL) {
        /* the routing configuration is not loaded yet: ask the client to retry */
        policy_verdict_set(out, POLICY_TEMPFAIL, 451, "4.3.0",
                           "<%.200s>: Temporary failure: routing configuration not loaded, try again later", rcpt);
        return;
    }
    const char *domain = rcpt_domain(rcpt);
    if (domain == NULL) {
        /* RFC 5321 4.5.1 <postmaster>: Moat has no single domain to map it to */
        policy_verdict_set(out, POLICY_REJECT, 550, "5.1.1",
                           "<%.200s>: Recipient address rejected: a domain is required, "
                           "write to postmaster@<your domain>", rcpt);
        return;
    }
    if (domain[0] == '[') {
        policy_verdict_set(out, POLICY_REJECT, 550, "5.7.1",
                           "<%.200s>: Relaying denied: address literals are not accepted", rcpt);
        return;
    }
    if (store_snapshot_find(req->snapshot, domain) == NULL) {
        if (req->outbound_host || req->auth_user != NULL) {
            /* the outbound role: relayed by MX; recipient validation is for
             * internal domains only, so stop here */
            policy_verdict_set(out, POLICY_ACCEPT, 250, "2.1.5", "Ok");
            xsnprintf(out->reason, sizeof out->reason, "outbound relay (%s)",
                      req->auth_user ? "authenticated" : "authorised host");
            return;
        }
        policy_verdict_set(out, POLICY_REJECT, 550, "5.7.1", "<%.200s>: Relaying denied", rcpt);
        return;
    }
    out->action = POLICY_DUNNO;
}

/* the pipeline: stage order is the order of the SMTP dialogue (DESIGN.md 2) */
static const struct policy_check policy_checks[] = {
    /* the journal role (issue 8, policy_journal.c): before relay control, which
     * would send journal.<internal domain> to recipient validation */
    { policy_journal_check_name, POLICY_RCPT, policy_check_journal, NULL },
    { "relay_control", POLICY_RCPT, policy_check_relay, NULL },
    /* anti-spoofing (issue 7, policy_antispoof.c): inbound mail in an internal
     * domain's name; before recipient validation, which may ACCEPT */
    { "antispoof", POLICY_RCPT, NULL, policy_check_antispoof_rcpt },
    /* issue 7 (policy_forward.c): bounces to SRS addresses of forwarded mail;
     * before recipient validation, which knows no SRS0= user */
    { "srs_bounce", POLICY_RCPT, policy_check_srs_bounce, NULL },
    /* after relay control: only recipients under internal domains get here */
    { "recipient_validation", POLICY_RCPT, NULL, policy_check_rcpt_valid },
    /* the outbound role (policy_outbound.c); MAIL stage, so their place here is free */
    { "tls_inbound", POLICY_MAIL, policy_check_tls_inbound, NULL },
    { "outbound_sender", POLICY_MAIL, policy_check_outbound_sender, NULL },
    /* issue 7: after recipient validation, answers gathered since the connect */
    { "dnsbl", POLICY_RCPT, NULL, policy_check_dnsbl },
    /* end of DATA (issue 7): the header From of inbound mail */
    { "antispoof", POLICY_DATA_END, policy_check_antispoof_data_end, NULL },
    /* issue 7: greylisting (policy_greylist.c), after recipient validation */
    { "greylisting", POLICY_RCPT, policy_check_greylist, NULL },
    /* issue 7 (policy_held.c): blocked senders, after recipient validation */
    { "blocked_sender", POLICY_RCPT, policy_check_blocked_sender, NULL },
};

#define N_CHECKS (sizeof policy_checks / sizeof policy_checks[0])

/* evaluate_from - run the checks of req->stage from index first; a pending
 * check stops the run (p NULL: asynchronous checks must answer now) */
static void evaluate_from(const struct policy_request *req, size_t first,
                          struct policy_verdict *out, struct policy_pending *p, size_t *stopped)
{
    for (size_t i = first; i < N_CHECKS; i++) {
        const struct policy_check *c = &policy_checks[i];
        if (c->stage != req->stage)
            continue;
        struct policy_verdict v;
        memset(&v, 0, sizeof v);
        v.action = POLICY_DUNNO;
        if (c->fn != NULL)
            c->fn(req, &v);
        else
            c->async(req, &v, p);
        if (v.action == POLICY_PENDING && p == NULL)
            v.action = POLICY_DUNNO;   /* a broken check: never hang a caller that cannot wait */
        if (v.action != POLICY_DUNNO) {
            *out = v;
            out->check = c->name;
            if (stopped != NULL)
                *stopped = i;
            return;
        }
    }
}

void policy_evaluate(const struct policy_request *req, struct policy_verdict *out)
{
    memset(out, 0, sizeof *out);
    out->action = POLICY_DUNNO;
    evaluate_from(req, 0, out, NULL, NULL);
}

void policy_evaluate_async(const struct policy_request *req, struct policy_verdict *out,
                           void (*ready)(void *arg), void *arg, struct policy_pending **pending)
{
    size_t first = 0, stopped = 0;
    memset(out, 0, sizeof *out);
    out->action = POLICY_DUNNO;
    struct policy_pending *p = *pending;
    if (p != NULL) {
        /* the second call: the pending check has answered */
        *pending = NULL;
        struct policy_verdict v = p->verdict;
        first = p->retry ? p->index : p->index + 1;
        bool same_stage = p->stage == req->stage && p->state == PENDING_RESOLVED;
        bool retry = p->retry;
        free(p);
        if (!same_stage)
            log_error("event=policy_bug reason=\"resumed an evaluation that is not resolved\"");
        else if (!retry && v.action != POLICY_DUNNO && v.action != POLICY_PENDING) {
            *out = v;
            out->check = policy_checks[first - 1].name;
            return;
        }
    }
    p = xcalloc(1, sizeof *p);
    p->state = PENDING_WAITING;
    p->stage = req->stage;
    p->ready = ready;
    p->arg = arg;
    evaluate_from(req, first, out, p, &stopped);
    if (out->action == POLICY_PENDING) {
        p->index = stopped;
        *pending = p;
        return;
    }
    free(p);    /* no check kept it */
}

void policy_pending_cancel(struct policy_pending *p)
{
    if (p == NULL)
        return;
    if (p->state == PENDING_WAITING)
        p->state = PENDING_CANCELLED;   /* the check frees it when it answers */
    else
        free(p);
}

void policy_pending_done(struct policy_pending *p, const struct policy_verdict *v)
{
    if (p->state == PENDING_CANCELLED) {
        free(p);
        return;
    }
    p->verdict = *v;
    if (p->verdict.action == POLICY_PENDING)
        p->verdict.action = POLICY_DUNNO;
    p->state = PENDING_RESOLVED;
    p->ready(p->arg);
}

void policy_pending_retry(struct policy_pending *p)
{
    if (p->state == PENDING_CANCELLED) {
        free(p);
        return;
    }
    memset(&p->verdict, 0, sizeof p->verdict);
    p->verdict.action = POLICY_DUNNO;
    p->retry = true;
    p->state = PENDING_RESOLVED;
    p->ready(p->arg);
}
