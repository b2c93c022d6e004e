/*
 * policy.h - the verdict pipeline.  Each check is one function with one
 * signature, listed in one table (policy.c) with the stage it runs at; it
 * answers DUNNO (no opinion), ACCEPT (stop checking, accept), REJECT,
 * TEMPFAIL or HOLD, with a complete SMTP reply.  Protocol code never decides
 * policy; it asks here.
 *
 * Checks run on the SMTP loop and must not block: they read the immutable
 * routing snapshot and directory index, never the store.  A check that must
 * ask the network (call-forward) is asynchronous: it answers POLICY_PENDING
 * and completes later on the loop (policy_evaluate_async).
 */
#ifndef MOAT_POLICY_H
#define MOAT_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <openssl/ssl.h>
#include "../core/settings.h"
#include "../store/store.h"

struct directory_index;
struct policy_callforward;
struct greylist;
struct event_base;
struct dns;
struct policy_antispoof;

enum policy_stage { POLICY_CONNECT, POLICY_HELO, POLICY_MAIL, POLICY_RCPT, POLICY_DATA,
                   /* the message is complete (CRLF.CRLF), before the spool commit:
                    * synchronous checks that read the headers (issue 7) */
                   POLICY_DATA_END };

enum policy_action { POLICY_DUNNO = 0, POLICY_ACCEPT, POLICY_REJECT, POLICY_TEMPFAIL, POLICY_HOLD,
                     POLICY_PENDING /* an asynchronous check will answer later */ };

struct policy_verdict {
    enum policy_action action;
    int code;            /* 250, 450, 550 ... */
    char dsn[12];        /* "5.7.1" */
    char text[256];      /* human text, no CR/LF */
    const char *check;   /* name of the deciding check, for the log */
    char reason[160];    /* why, for the log only (not sent); "" = text */
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
    const struct directory_index *directory; /* recipient validation; NULL = none */
    struct policy_callforward *callforward;  /* call-forward prober; NULL = unreachable */
    struct policy_dnsbl *dnsbl;              /* the session's DNSBL lookups; NULL = none */
    /* the outbound role (issue 6), computed by the session from the snapshot */
    bool outbound_host;       /* the client address is an authorised outbound host */
    const char *auth_user;    /* SMTP AUTH account of the session; NULL = none */
    /* issue 7 (permitted.h): the envelope sender is a permitted sender for
     * rcpt (org-wide, the user's own list, or auto-allowed); RCPT stage and
     * later.  Skips greylisting, DNSBL, spam scoring; never anti-spoofing,
     * DMARC or size limits.  At DATA stages: every accepted recipient was. */
    bool permitted;
    /* anti-spoofing (issue 7, policy_antispoof.c) */
    struct policy_antispoof *antispoof;   /* the loop's state (FCrDNS cache, candidates); NULL = off */
    /* RCPT and DATA_END: a check that lets mail through only on an SPF pass
     * writes the domain here (256 octets, "" = none); the session keeps it
     * as t->antispoof_spf_domain for the content stage */
    char *antispoof_spf_out;
    /* POLICY_DATA_END: the message's first octets (t->head, up to 64 KiB)
     * and its header From (policy_msg.h) */
    const char *head;
    size_t head_len;
    const char *header_from;  /* the one author domain; NULL when msg_header_from_domain is false */
    int header_from_fields;   /* From fields seen (msg_header_from_count) */
    const char *antispoof_spf_domain;   /* t->antispoof_spf_domain: SPF must pass for it, or NULL */
    struct greylist *greylist;   /* the loop's triplet table (greylist.h); NULL = none */
    /* forwarding (issue 7): the SRS key (forward.h); NULL = no SRS */
    const unsigned char *srs_key;
    /* the journal role (issue 8, policy_journal.c): the client is an
     * authorised journal source; the transaction already holds the journal
     * address (a journal transaction) */
    bool journal_source;
    bool journal_txn;
    bool archive_off;            /* setting archive=no: nothing would keep a journal report */
};

/* the name (verdict.check) of the journal role's check: an ACCEPT from it
 * makes the transaction a journal transaction */
extern const char policy_journal_check_name[];

/* policy_evaluate - run every check for req->stage in table order; the first
 * non-DUNNO verdict wins.  All DUNNO means accept (out->action = POLICY_DUNNO). */
void policy_evaluate(const struct policy_request *req, struct policy_verdict *out);

/* Asynchronous checks.  policy_evaluate_async runs the same table, but a
 * check may answer POLICY_PENDING; then out->action is POLICY_PENDING,
 * *pending holds the evaluation and ready(arg) is called later, on the loop,
 * never from inside this call.  The caller then calls policy_evaluate_async
 * again with a fresh request (the snapshot may have been swapped meanwhile)
 * and the same *pending: the evaluation goes on after the pending check,
 * with its answer, and *pending is released.  policy_pending_cancel drops an
 * evaluation instead (ready is never called).  policy_evaluate is the same
 * without waiting: an asynchronous check answers from what it knows (a
 * cache) or as if the network were unreachable. */
struct policy_pending;
void policy_evaluate_async(const struct policy_request *req, struct policy_verdict *out,
                           void (*ready)(void *arg), void *arg, struct policy_pending **pending);
void policy_pending_cancel(struct policy_pending *p);
/* policy_pending_done - for asynchronous checks: the answer of p's check */
void policy_pending_done(struct policy_pending *p, const struct policy_verdict *v);
/* policy_pending_retry - for asynchronous checks that wait for data they
 * cache (anti-spoofing's FCrDNS): the evaluation resumes AT p's check,
 * with a fresh request, instead of after it */
void policy_pending_retry(struct policy_pending *p);

/* --- recipient validation (policy_rcpt.c) --- */
/* the call-forward prober: one per loop, created by moatd; probes the
 * domain's route with MAIL FROM:<> and RCPT TO:<addr>, and remembers the
 * answers (rv_callforward_positive_ttl / _negative_ttl) */
struct policy_callforward_config {
    struct event_base *base;
    struct dns *dns;                  /* for route host names; may be NULL (IP routes only) */
    SSL_CTX *tls_client;              /* STARTTLS per the route's TLS mode; may be NULL */
    const struct moat_settings *settings;
    const char *hostname;             /* EHLO name */
};
struct policy_callforward *policy_callforward_create(const struct policy_callforward_config *cfg);
/* policy_callforward_free - probes in flight end as unreachable (after the
 * SMTP server is gone: nobody waits any more) */
void policy_callforward_free(struct policy_callforward *cf);
/* policy_callforward_forget - empty the answer cache (a route or mode changed) */
void policy_callforward_forget(struct policy_callforward *cf);

/* --- DNSBL (policy_dnsbl.c, issue 7) --- */
/* policy_dnsbl_start - at connect: query every zone of the snapshot for
 * client_addr (asynchronous, on dns's loop); NULL when there are no zones */
struct policy_dnsbl *policy_dnsbl_start(struct dns *dns, const struct store_snapshot *snap,
                                        const struct moat_settings *set, const char *session,
                                        const char *client_addr);
/* policy_dnsbl_free - at session end, after txn_reset (a waiting RCPT is cancelled) */
void policy_dnsbl_free(struct policy_dnsbl *d);

/* policy_verdict_set - helper for checks */
void policy_verdict_set(struct policy_verdict *v, enum policy_action a, int code,
                        const char *dsn, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* --- anti-spoofing (issue 7, policy_antispoof.c) --- */
/* the loop's anti-spoofing state: forward-confirmed reverse DNS answers per
 * client address (for host bypasses) and the refused sources (candidates) */
struct policy_antispoof *policy_antispoof_create(struct event_base *base, struct dns *dns,
                                                 const struct moat_settings *settings);
/* policy_antispoof_free - lookups in flight end; waiters resume (after the
 * SMTP server is gone: nobody waits any more) */
void policy_antispoof_free(struct policy_antispoof *a);

#define POLICY_ANTISPOOF_DOMAINS_MAX 8   /* spoofed domains remembered per source */
struct policy_antispoof_candidate {
    char addr[64];              /* the client address */
    char host[256];             /* its PTR name when looked up, "" otherwise */
    bool host_confirmed;        /* host is forward-confirmed */
    uint64_t count;             /* refusals */
    int64_t first_seen, last_seen;   /* unix seconds */
    char domains[POLICY_ANTISPOOF_DOMAINS_MAX][256];   /* spoofed domains, first seen first */
    size_t n_domains;
};
/* policy_antispoof_candidates - a copy of the candidates, most recent
 * first (caller frees *out); on the loop only */
size_t policy_antispoof_candidates(const struct policy_antispoof *a,
                                   struct policy_antispoof_candidate **out);
/* policy_antispoof_candidate_forget - drop a source (after a bypass was
 * added for it); false when it was not listed */
bool policy_antispoof_candidate_forget(struct policy_antispoof *a, const char *addr);

#endif
