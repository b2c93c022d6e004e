/*
 * policy_dnsbl.c - the DNSBL check (issue 7): the client's address is looked
 * up in every configured blocklist zone when it connects; the verdict is
 * given at the first RCPT, so permitted senders (req->permitted) and the
 * outbound role are never judged by it.
 *
 * Entry points: policy_dnsbl_start / policy_dnsbl_free (the SMTP session,
 * one per connection), policy_check_dnsbl (the RCPT row in policy.c), and
 * the pure helpers policy_dnsbl_query_name, policy_dnsbl_classify and
 * policy_dnsbl_decide (unit-tested).
 *
 * Answers (the convention of RFC 5782 2.1, and Spamhaus's error codes):
 * an A record in 127.0.0.0/8 means listed, except 127.255.255.0/24, which a
 * blocklist returns for "you may not query" / "bad query": could not check.
 * NXDOMAIN (or no A record) is not listed.  SERVFAIL, a timeout or any
 * other answer is "could not check" and never counts as listed: it is
 * logged and counted in the session's summary line.
 *
 * Scoring: the weights of the listing zones are added; at or above
 * dnsbl_threshold the RCPT gets 554 5.7.1 naming the zones, at or above
 * dnsbl_hold_threshold (when set, lower) the message is held.
 *
 * Ownership: struct policy_dnsbl belongs to the session (freed in
 * session_free, after txn_reset has cancelled a waiting RCPT); the queries
 * belong to it and are cancelled by policy_dnsbl_free.  All on the loop.
 */
#include <arpa/inet.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../core/core.h"
#include "../dns/dns.h"
#include "policy.h"
#include "policy_priv.h"

struct dnsbl_zone_q {
    struct policy_dnsbl *owner;
    char *zone;
    int weight;
    struct dns_query *q;             /* NULL once answered */
    enum dnsbl_result result;
    char answer[64];                 /* the A record, or why it could not be checked */
};

struct policy_dnsbl {
    struct dns *dns;
    const struct moat_settings *set;
    char session[24];
    char addr[64];
    struct dnsbl_zone_q *z;
    size_t n;
    size_t outstanding;
    struct event *timer;             /* dnsbl_timeout from the connect */
    struct policy_pending *waiting;  /* a RCPT waits for the answers */
    bool decided;                    /* every answer is in: verdict is final */
    struct policy_verdict verdict;
};

static const char *const result_names[] = {
    [DNSBL_WAIT] = "wait", [DNSBL_CLEAN] = "clean", [DNSBL_LISTED] = "listed",
    [DNSBL_ERROR] = "error",
};

const char *policy_dnsbl_result_name(enum dnsbl_result r)
{
    return (unsigned)r < sizeof result_names / sizeof result_names[0] ? result_names[r] : "?";
}

/* policy_dnsbl_query_name - RFC 5782 2.1 (IPv4: octets reversed) and 2.4
 * (IPv6: 32 nibbles reversed) + "." + zone; an IPv4-mapped IPv6 address is
 * queried as IPv4.  0, or -1 when addr is no address or out is too small. */
int policy_dnsbl_query_name(const char *addr, const char *zone, char *out, size_t outlen)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, addr, &a4) == 1) {
        const unsigned char *b = (const unsigned char *)&a4;
        return xsnprintf(out, outlen, "%u.%u.%u.%u.%s", b[3], b[2], b[1], b[0], zone) < 0 ? -1 : 0;
    }
    if (inet_pton(AF_INET6, addr, &a6) != 1)
        return -1;
    const unsigned char *b = a6.s6_addr;
    static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    if (memcmp(b, mapped, sizeof mapped) == 0)
        return xsnprintf(out, outlen, "%u.%u.%u.%u.%s", b[15], b[14], b[13], b[12], zone) < 0 ? -1 : 0;
    static const char hex[] = "0123456789abcdef";
    char nib[64 + 1];
    for (int i = 0; i < 16; i++) {
        unsigned char o = b[15 - i];
        nib[4 * i] = hex[o & 0xf];
        nib[4 * i + 1] = '.';
        nib[4 * i + 2] = hex[o >> 4];
        nib[4 * i + 3] = '.';
    }
    nib[64] = '\0';
    return xsnprintf(out, outlen, "%s%s", nib, zone) < 0 ? -1 : 0;
}

/* policy_dnsbl_classify - one zone's answer: listed when an A record is in
 * 127.0.0.0/8 outside 127.255.255.0/24; the first such record (or the
 * reason it could not be checked) goes to answer */
enum dnsbl_result policy_dnsbl_classify(const struct dns_result *r, char *answer, size_t alen)
{
    answer[0] = '\0';
    switch (r->status) {
    case DNS_NXDOMAIN:
    case DNS_NODATA:
        return DNSBL_CLEAN;
    case DNS_TEMPFAIL:
    case DNS_BOGUS:
        xsnprintf(answer, alen, "%s", dns_status_name(r->status));
        return DNSBL_ERROR;
    case DNS_OK:
        break;
    }
    enum dnsbl_result res = DNSBL_ERROR;
    for (size_t i = 0; i < r->n; i++) {
        struct in_addr a;
        if (r->rr[i].text == NULL || inet_pton(AF_INET, r->rr[i].text, &a) != 1)
            continue;
        uint32_t h = ntohl(a.s_addr);
        bool loop = (h >> 24) == 127;
        bool err_code = (h >> 8) == 0x7fffff;     /* 127.255.255.0/24 */
        if (loop && !err_code) {
            xsnprintf(answer, alen, "%s", r->rr[i].text);
            return DNSBL_LISTED;
        }
        if (answer[0] == '\0')
            xsnprintf(answer, alen, "%s", r->rr[i].text);
    }
    if (answer[0] == '\0')
        xsnprintf(answer, alen, "no A record");
    return res;
}

/* policy_dnsbl_decide - the verdict of a finished lookup (pure): zones[i]
 * with weight[i] and result[i]; threshold / hold (0 = none) from settings */
void policy_dnsbl_decide(const char *addr, const char *const *zones, const int *weights,
                         const enum dnsbl_result *results, size_t n, int64_t threshold,
                         int64_t hold, struct policy_verdict *out)
{
    int64_t score = 0;
    char listed[200] = "";
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        if (results[i] != DNSBL_LISTED)
            continue;
        score += weights[i];
        int k = snprintf(listed + used, sizeof listed - used, "%s%s", used ? ", " : "", zones[i]);
        if (k < 0 || (size_t)k >= sizeof listed - used)
            used = sizeof listed - 1;   /* cut: the text stays one bounded line */
        else
            used += (size_t)k;
    }
    out->action = POLICY_DUNNO;
    if (score > 0 && score >= threshold) {
        policy_verdict_set(out, POLICY_REJECT, 554, "5.7.1",
                           "Service unavailable; client [%s] listed at %s", addr, listed);
        xsnprintf(out->reason, sizeof out->reason, "DNSBL score %lld >= %lld: listed at %s",
                  (long long)score, (long long)threshold, listed);
    } else if (score > 0 && hold > 0 && score >= hold) {
        policy_verdict_set(out, POLICY_HOLD, 250, "2.1.5", "Ok");
        xsnprintf(out->reason, sizeof out->reason, "DNSBL score %lld >= hold %lld: listed at %s",
                  (long long)score, (long long)hold, listed);
    }
}

/* dnsbl_verdict - decide from the answers so far (outstanding = error) */
static void dnsbl_verdict(struct policy_dnsbl *d, struct policy_verdict *out)
{
    const char *zones[d->n ? d->n : 1];
    int weights[d->n ? d->n : 1];
    enum dnsbl_result results[d->n ? d->n : 1];
    size_t errors = 0;
    if (d->decided) {
        *out = d->verdict;
        return;
    }
    for (size_t i = 0; i < d->n; i++) {
        zones[i] = d->z[i].zone;
        weights[i] = d->z[i].weight;
        results[i] = d->z[i].result == DNSBL_WAIT ? DNSBL_ERROR : d->z[i].result;
        errors += results[i] == DNSBL_ERROR;
    }
    memset(out, 0, sizeof *out);
    policy_dnsbl_decide(d->addr, zones, weights, results, d->n, d->set->dnsbl_threshold,
                        d->set->dnsbl_hold_threshold, out);
    log_info("session=%s client=%s event=dnsbl_verdict check=dnsbl zones=%zu errors=%zu "
             "action=%s reason=\"%s\"", d->session, d->addr, d->n, errors,
             out->action == POLICY_REJECT ? "reject" : out->action == POLICY_HOLD ? "hold" : "pass",
             out->reason[0] ? out->reason : "not listed");
    d->decided = true;    /* outstanding answers have been turned into errors */
    d->verdict = *out;
}

/* dnsbl_finish_waiting - the answers are all in (or timed out): a RCPT
 * waiting for them gets the verdict */
static void dnsbl_finish_waiting(struct policy_dnsbl *d)
{
    if (d->waiting == NULL || d->outstanding > 0)
        return;
    struct policy_pending *p = d->waiting;
    d->waiting = NULL;
    struct policy_verdict v;
    dnsbl_verdict(d, &v);
    policy_pending_done(p, &v);
}

static void dnsbl_answer_cb(void *arg, const struct dns_result *r)
{
    struct dnsbl_zone_q *zq = arg;
    struct policy_dnsbl *d = zq->owner;
    zq->q = NULL;
    zq->result = policy_dnsbl_classify(r, zq->answer, sizeof zq->answer);
    d->outstanding--;
    char ans[80];
    log_info("session=%s client=%s event=dnsbl check=dnsbl zone=%s result=%s answer=%s%s%s",
             d->session, d->addr, zq->zone, policy_dnsbl_result_name(zq->result),
             log_quote(ans, sizeof ans, zq->answer[0] ? zq->answer : "NXDOMAIN"),
             zq->result == DNSBL_ERROR ? " reason=" : "",
             zq->result == DNSBL_ERROR ? "\"could not check\"" : "");
    dnsbl_finish_waiting(d);
}

/* dnsbl_timeout_cb - dnsbl_timeout after the connect: what has not
 * answered could not be checked */
static void dnsbl_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct policy_dnsbl *d = arg;
    (void)fd;
    (void)what;
    for (size_t i = 0; i < d->n; i++) {
        struct dnsbl_zone_q *zq = &d->z[i];
        if (zq->q == NULL)
            continue;
        dns_cancel(d->dns, zq->q);
        zq->q = NULL;
        zq->result = DNSBL_ERROR;
        xsnprintf(zq->answer, sizeof zq->answer, "timeout");
        d->outstanding--;
        log_info("session=%s client=%s event=dnsbl check=dnsbl zone=%s result=error answer=timeout "
                 "reason=\"could not check\"", d->session, d->addr, zq->zone);
    }
    dnsbl_finish_waiting(d);
}

struct policy_dnsbl *policy_dnsbl_start(struct dns *dns, const struct store_snapshot *snap,
                                        const struct moat_settings *set, const char *session,
                                        const char *client_addr)
{
    size_t n = 0;
    const struct store_dnsbl_zone *zones = store_snapshot_dnsbl_zones(snap, &n);
    if (dns == NULL || n == 0)
        return NULL;
    struct policy_dnsbl *d = xcalloc(1, sizeof *d);
    d->dns = dns;
    d->set = set;
    (void)str_copy(d->session, sizeof d->session, session);
    (void)str_copy(d->addr, sizeof d->addr, client_addr);
    d->z = xcalloc(n, sizeof *d->z);
    d->timer = evtimer_new(dns_event_base(dns), dnsbl_timeout_cb, d);
    if (d->timer == NULL)
        log_fatal("event=alloc_failed what=\"dnsbl timer\"");
    for (size_t i = 0; i < n; i++) {
        struct dnsbl_zone_q *zq = &d->z[d->n];
        char name[300];
        if (policy_dnsbl_query_name(client_addr, zones[i].zone, name, sizeof name) < 0) {
            log_warn("session=%s client=%s event=dnsbl check=dnsbl zone=%s result=error "
                     "answer=- reason=\"not an IP address\"", session, client_addr, zones[i].zone);
            continue;
        }
        zq->owner = d;
        zq->zone = xstrdup(zones[i].zone);
        zq->weight = zones[i].weight;
        zq->result = DNSBL_WAIT;
        d->n++;
        d->outstanding++;
        zq->q = dns_query(dns, name, DNS_T_A, dnsbl_answer_cb, zq);
    }
    struct timeval tv = { (time_t)set->dnsbl_timeout, 0 };
    evtimer_add(d->timer, &tv);
    return d;
}

void policy_dnsbl_free(struct policy_dnsbl *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->n; i++) {
        if (d->z[i].q != NULL)
            dns_cancel(d->dns, d->z[i].q);
        free(d->z[i].zone);
    }
    if (d->waiting != NULL) {
        /* the session cancelled it (txn_reset): done only frees it */
        struct policy_verdict v = { .action = POLICY_DUNNO };
        policy_pending_done(d->waiting, &v);
    }
    event_free(d->timer);
    free(d->z);
    free(d);
}

/* policy_check_dnsbl - RCPT stage: the verdict once every zone answered;
 * asynchronous while answers are outstanding (bounded by dnsbl_timeout) */
void policy_check_dnsbl(const struct policy_request *req, struct policy_verdict *out,
                        struct policy_pending *p)
{
    struct policy_dnsbl *d = req->dnsbl;
    out->action = POLICY_DUNNO;
    if (d == NULL || d->n == 0 || req->outbound_host || req->auth_user != NULL || req->permitted)
        return;
    if (d->outstanding > 0 && p != NULL) {
        if (d->waiting != NULL) {
            /* a RCPT of an aborted transaction was waiting: release it */
            struct policy_pending *old = d->waiting;
            struct policy_verdict v = { .action = POLICY_DUNNO };
            d->waiting = NULL;
            policy_pending_done(old, &v);
        }
        d->waiting = p;
        out->action = POLICY_PENDING;
        return;
    }
    dnsbl_verdict(d, out);
}
