/*
 * policy.c - the verdict pipeline: one table of checks, each with one
 * signature, run in table order for the stage the SMTP session asks about.
 * The first verdict other than DUNNO wins (Postfix smtpd_check.c style
 * restriction lists, as a table instead of scattered ifs).
 *
 * Entry points: policy_evaluate, policy_verdict_set.
 * Checks never block and never touch the store: they read the immutable
 * routing snapshot in the request.  Adding a check = one function here and
 * one row in policy_checks[].
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "../core/core.h"
#include "policy.h"

typedef void (*policy_check_fn)(const struct policy_request *req, struct policy_verdict *out);

struct policy_check {
    const char *name;
    enum policy_stage stage;
    policy_check_fn fn;
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
        policy_verdict_set(out, POLICY_REJECT, 550, "5.7.1", "<%.200s>: Relaying denied", rcpt);
        return;
    }
    out->action = POLICY_DUNNO;
}

/* the pipeline: stage order is the order of the SMTP dialogue (DESIGN.md 2) */
static const struct policy_check policy_checks[] = {
    { "relay_control", POLICY_RCPT, policy_check_relay },
};

void policy_evaluate(const struct policy_request *req, struct policy_verdict *out)
{
    memset(out, 0, sizeof *out);
    out->action = POLICY_DUNNO;
    for (size_t i = 0; i < sizeof policy_checks / sizeof policy_checks[0]; i++) {
        const struct policy_check *c = &policy_checks[i];
        if (c->stage != req->stage)
            continue;
        struct policy_verdict v;
        memset(&v, 0, sizeof v);
        v.action = POLICY_DUNNO;
        c->fn(req, &v);
        if (v.action != POLICY_DUNNO) {
            *out = v;
            out->check = c->name;
            return;
        }
    }
}
