/*
 * policy.h - the verdict pipeline.  Each check is one function with one
 * signature, listed in one table (policy.c) with the stage it runs at; it
 * answers DUNNO (no opinion), ACCEPT (stop checking, accept), REJECT,
 * TEMPFAIL or HOLD, with a complete SMTP reply.  Protocol code never decides
 * policy; it asks here.
 *
 * Checks run on the SMTP loop and must not block: they read the immutable
 * routing snapshot, never the store.
 */
#ifndef MOAT_POLICY_H
#define MOAT_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include "../store/store.h"

enum policy_stage { POLICY_CONNECT, POLICY_HELO, POLICY_MAIL, POLICY_RCPT, POLICY_DATA };

enum policy_action { POLICY_DUNNO = 0, POLICY_ACCEPT, POLICY_REJECT, POLICY_TEMPFAIL, POLICY_HOLD };

struct policy_verdict {
    enum policy_action action;
    int code;            /* 250, 450, 550 ... */
    char dsn[12];        /* "5.7.1" */
    char text[256];      /* human text, no CR/LF */
    const char *check;   /* name of the deciding check, for the log */
};

/* what a check may look at: filled by the SMTP session */
struct policy_request {
    enum policy_stage stage;
    const char *client_addr;
    const char *helo;
    bool tls;
    const char *sender;       /* MAIL FROM path ("" for <>) */
    const char *rcpt;         /* the recipient under test (RCPT stage) */
    size_t n_rcpts;           /* recipients accepted so far */
    const struct store_snapshot *snapshot;   /* routing configuration, may be NULL */
};

/* policy_evaluate - run every check for req->stage in table order; the first
 * non-DUNNO verdict wins.  All DUNNO means accept (out->action = POLICY_DUNNO). */
void policy_evaluate(const struct policy_request *req, struct policy_verdict *out);

/* policy_verdict_set - helper for checks */
void policy_verdict_set(struct policy_verdict *v, enum policy_action a, int code,
                        const char *dsn, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#endif
