/*
 * policy_content.h - the end-of-DATA content stage: checks that read the
 * whole message and may ask the network (SPF, DKIM verification, DMARC,
 * rspamd).  They run on the worker pool (src/core/worker.h), never on the
 * SMTP loop.
 *
 * Flow (smtp_session.c, INBOUND transactions only: never for an authorised
 * outbound host or an authenticated client):
 *   1. end of DATA, after the synchronous POLICY_DATA_END checks (anti-spoofing);
 *   2. the session fills a struct content_request with COPIES of everything
 *      a check may read (content_request_new / content_request_free): never
 *      pointers into the snapshot or the session, which may go away (a
 *      client that disconnects orphans the job, like the SMTP AUTH job);
 *   3. worker thread: content_run(rq, st, out) runs every check of the
 *      table in policy_content.c in order.  The first verdict that is
 *      REJECT or TEMPFAIL wins and ends the run; the first HOLD is kept
 *      (the run goes on: a later check may still reject); ACCEPT and DUNNO
 *      go on.  Then content_run appends the header lines
 *      (Authentication-Results, X-Moat-Verdict) to st->headers;
 *   4. back on the loop: REJECT/TEMPFAIL -> that reply, the transaction is
 *      aborted; otherwise st->headers go into t->prefix, a HOLD verdict sets
 *      t->hold, and the commit proceeds.  No answer within content_timeout:
 *      content_timeout_action (tempfail: 451 4.7.1; accept: commit without
 *      the headers of the stage).
 *
 * Adding a check (as rspamd was): write
 *     void content_check_NAME(const struct content_request *rq,
 *                             struct content_state *st, struct policy_verdict *out);
 * in your own file, declare it below in the "checks" list, add one row to
 * content_checks[] in policy_content.c (rspamd: at the marked comment,
 * after dmarc and antispoof_spf), put any setting copies it needs at the
 * end of struct content_request (block "settings of other checks"), free
 * them in content_request_free (marked), fill them in content_request_fill
 * (smtp_session.c), and let session_screening (smtp_session.c) start the
 * stage when your check is on.  A check sets
 * out->check = its name and out->reason (for the log line
 * "event=content check=NAME action=... reason=..."), may append words to
 * st->verdict_note (shown in X-Moat-Verdict), and must be bounded in time
 * and memory by itself (its own timeout setting).
 *
 * Thread rules: a check runs on a pool thread; it may block (bounded), may
 * use dns_sync_* (src/dns/dns_sync.h: a per-thread libunbound context
 * forwarding to the configured resolver: never the system resolver), must
 * not touch the
 * store, the snapshot, libevent, or any global mutable state.
 */
#ifndef MOAT_POLICY_CONTENT_H
#define MOAT_POLICY_CONTENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "policy.h"
#include "../core/core.h"

#define CONTENT_MAX_DKIM 16            /* hard ceiling of dkim_max_signatures */
#define CONTENT_HEADERS_MAX (12 * 1024) /* st->headers stays below this (prefix < 16 KiB) */

/* RFC 8601 result words, shared by the SPF, DKIM and DMARC checks */
enum content_result {
    CR_NONE = 0, CR_PASS, CR_FAIL, CR_SOFTFAIL, CR_NEUTRAL, CR_TEMPERROR, CR_PERMERROR,
    CR_POLICY,     /* DKIM: signature acceptable by policy only (unused today) */
};
const char *content_result_name(enum content_result r);   /* "pass", "fail", ... */

enum content_action_cfg { CONTENT_ACT_NONE = 0, CONTENT_ACT_REJECT };
enum content_timeout_cfg { CONTENT_TIMEOUT_TEMPFAIL = 0, CONTENT_TIMEOUT_ACCEPT };

/* everything a content check may read: owned copies (content_request_free) */
struct content_request {
    char *session_id;          /* for log lines */
    char *client_addr;         /* "192.0.2.1", "::1" */
    char *helo;
    char *sender;              /* MAIL FROM path, "" for <> */
    char **rcpts;
    size_t n_rcpts;
    char *header_from;         /* the single author domain (policy_msg.h); NULL = none/several */
    bool all_permitted;        /* every recipient permits this sender (permitted.h) */
    char *antispoof_spf_domain; /* anti-spoofing: NULL, or the domain SPF must pass for */
    char *hostname;            /* Moat's name: the authserv-id */
    /* the message as received (CRLF lines, dot-unstuffed); NULL when it
     * exceeded screen_max_size: checks that need it are skipped and say so */
    char *msg;
    size_t msg_len;
    uint64_t msg_size;         /* the real size, also when msg is NULL */
    /* resolver, copied from the settings (read-only after start) */
    char *resolver;            /* "ADDR:PORT" or "" (resolv.conf: tests never) */
    char *trust_anchor_file;   /* "" = none */
    /* settings of the SPF/DKIM/DMARC checks */
    bool spf_enabled;
    bool dkim_enabled;
    bool dmarc_enabled;
    enum content_action_cfg spf_fail_action;
    int64_t dkim_max_signatures;
    int64_t content_dns_timeout_ms;   /* per lookup */
    char *dmarc_psl_file;             /* public suffix list */
    char *held;                /* an earlier stage's HOLD reason (t->hold), NULL = none:
                                * X-Moat-Verdict says hold */
    /* rspamd (policy_content_rspamd.c): rspamd_url "" = off */
    char *rspamd_url;
    int64_t rspamd_timeout;           /* seconds */
    char *rspamd_unreachable;         /* "tempfail" | "accept" */
    char *rspamd_hold_action;         /* "none" | "reject" | "add_header" */
    char *queue_id;                   /* for rspamd's Queue-Id and the logs */
};

struct content_request *content_request_new(void);   /* zeroed */
void content_request_free(struct content_request *rq);

struct content_dkim {
    enum content_result result;
    char d[256];               /* signing domain */
    char s[64];                /* selector */
    char why[96];              /* "bad signature", "body hash mismatch", "key not found" ... */
};

/* results accumulated along the table; later checks read earlier ones */
struct content_state {
    /* SPF (check "spf") */
    bool spf_ran;
    enum content_result spf;
    bool spf_helo;             /* the result is for the HELO identity (MAIL FROM:<>) */
    char spf_domain[256];      /* the domain evaluated */
    /* DKIM (check "dkim") */
    bool dkim_ran;
    size_t n_dkim;
    struct content_dkim dkim[CONTENT_MAX_DKIM];
    /* DMARC (check "dmarc") */
    bool dmarc_ran;
    enum content_result dmarc;
    char dmarc_domain[256];    /* header.from */
    char dmarc_policy[16];     /* "none" "quarantine" "reject" "" */
    /* what ran, for X-Moat-Verdict: "spf dkim dmarc rspamd" */
    char checks_ran[128];
    char verdict_note[256];    /* extra words for X-Moat-Verdict, appended by checks */
    bool body_skipped;         /* msg == NULL: said in the header */
    /* the header lines to add, CRLF-terminated, whole lines only */
    struct buf headers;
};

void content_state_init(struct content_state *st);
void content_state_free(struct content_state *st);
/* content_state_ran - record that check name ran (for X-Moat-Verdict) */
void content_state_ran(struct content_state *st, const char *name);

/* content_run - on a worker thread: every check in table order, then the
 * header lines; *out is the stage's verdict (DUNNO = accept) */
void content_run(const struct content_request *rq, struct content_state *st,
                 struct policy_verdict *out);

/* content_format_headers - Authentication-Results and X-Moat-Verdict for
 * st and the final verdict v, appended to st->headers (pure; unit-tested) */
void content_format_headers(const struct content_request *rq, struct content_state *st,
                            const struct policy_verdict *v);

/* the content check table, for unit tests: names in order, NULL-terminated */
const char *const *content_check_names(void);

/* --- checks (policy_content_*.c) --- */
void content_check_spf(const struct content_request *rq, struct content_state *st,
                       struct policy_verdict *out);
void content_check_dkim(const struct content_request *rq, struct content_state *st,
                        struct policy_verdict *out);
void content_check_dmarc(const struct content_request *rq, struct content_state *st,
                         struct policy_verdict *out);
/* the anti-spoofing SPF bypass (policy_antispoof.c): 550 5.7.1 unless SPF passed
 * for rq->antispoof_spf_domain */
void content_check_rspamd(const struct content_request *rq, struct content_state *st,
                          struct policy_verdict *out);
void content_check_antispoof_spf(const struct content_request *rq, struct content_state *st,
                                 struct policy_verdict *out);

/* DMARC decision (pure; unit-tested): policy p ("none"/"quarantine"/
 * "reject"), pct, whether the message is in the pct sample, the DMARC
 * result -> action DUNNO / HOLD / REJECT */
enum policy_action content_dmarc_decide(enum content_result dmarc, const char *p, int pct,
                                        bool sampled);

#endif
