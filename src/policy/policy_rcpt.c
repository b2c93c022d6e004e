/*
 * policy_rcpt.c - recipient validation at RCPT time (Connect's
 * recipient_validation task), after relay control, per the recipient
 * domain's mode:
 *
 *   directory     the address must belong to a user or group synced from
 *                 the directory;
 *   known         ... or to one added by hand;
 *   call-forward  the domain's own mail server (its route) is asked with an
 *                 RCPT probe: MAIL FROM:<>, RCPT TO:<addr>, answers cached;
 *   accept-all    no opinion.
 *
 * Unknown: "550 5.1.1 <addr>: Recipient address rejected: user unknown",
 * with the reason (not in the directory, the route's own reply) in the log.
 * When the source cannot answer -- the directory was never synced, the
 * route is down, slow or answers 4xx -- the domain's "unreachable" setting
 * decides: 450 4.4.3 (the sender retries) or accept.
 *
 * The directory lookups read the immutable index in the request: one hash
 * probe, no I/O.  Call-forward is the one asynchronous check: a cache hit
 * answers at once; a miss starts (or joins) a probe for that address and
 * answers POLICY_PENDING; the probe completes every waiter through
 * policy_pending_done.  Probes are bounded (CF_MAX_INFLIGHT at once, each
 * by rv_callforward_timeout), the cache too (CF_CACHE_MAX answers).  A 4xx
 * or a failure is never cached: it says nothing about the recipient.
 */
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <event2/event.h>
#include "../core/core.h"
#include "../directory/directory.h"
#include "../dns/dns.h"
#include "../smtp/smtp_client.h"
#include "forward.h"
#include "policy_priv.h"

#define CF_MAX_INFLIGHT 256       /* probes at once; beyond, the route counts as unreachable */
#define CF_CACHE_MAX 100000       /* remembered answers */
#define CF_BUCKETS 4096

enum cf_answer { CF_EXISTS = 0, CF_UNKNOWN, CF_UNREACHABLE };

struct cf_cached {
    struct cf_cached *next;
    char *addr;
    enum cf_answer answer;
    uint64_t expires_ms;          /* monotonic */
    char diag[SMTP_DIAG_MAX];
};

struct cf_waiter {
    struct cf_waiter *next;
    struct policy_pending *p;
    enum directory_rv_unreachable unreachable;
};

struct cf_probe {
    struct policy_callforward *cf;
    struct cf_probe *prev, *next;
    char *addr;                   /* lower-case */
    char *host;
    int port;
    enum store_tls_mode tls;
    struct cf_waiter *waiters;
    struct dns_query *q;
    int dns_step;                 /* 0 = A, 1 = AAAA */
    struct smtp_conn *conn;
    struct event *timer;
    struct event *begin;          /* starts the probe from the loop */
    struct sockaddr_storage sa;
    socklen_t salen;
    struct smtp_client_rcpt rcpt;
    struct smtp_client_msg msg;
};

struct policy_callforward {
    struct policy_callforward_config cfg;
    struct smtp_client_config ccfg;
    struct cf_cached *buckets[CF_BUCKETS];
    size_t n_cached;
    struct cf_probe *probes;
    size_t n_probes;
    uint64_t seed;
};

/* --- the verdicts --- */

static void verdict_unknown(struct policy_verdict *out, const char *rcpt, const char *why)
{
    policy_verdict_set(out, POLICY_REJECT, 550, "5.1.1",
                       "<%.200s>: Recipient address rejected: user unknown", rcpt);
    (void)str_copy(out->reason, sizeof out->reason, why);
    if (out->reason[0] == '\0')
        xsnprintf(out->reason, sizeof out->reason, "%.150s", why);
}

/* verdict_unavailable - the source cannot answer: 450 4.4.3 or accept */
static void verdict_unavailable(struct policy_verdict *out, const char *rcpt,
                                enum directory_rv_unreachable u, const char *why)
{
    if (u == DIRECTORY_RV_ACCEPT) {
        log_info("event=rcpt_unverified rcpt=%.200s reason=\"%.150s\" action=accept", rcpt, why);
        out->action = POLICY_DUNNO;
        return;
    }
    policy_verdict_set(out, POLICY_TEMPFAIL, 450, "4.4.3",
                       "<%.200s>: Recipient address rejected: recipient validation is "
                       "unavailable, try again later", rcpt);
    xsnprintf(out->reason, sizeof out->reason, "%.150s", why);
}

/* --- the cache --- */

static size_t cf_bucket(const struct policy_callforward *cf, const char *addr)
{
    uint64_t h = cf->seed ^ 0xcbf29ce484222325ULL;
    for (const char *p = addr; *p; p++) {
        h ^= (unsigned char)*p;
        h *= 0x100000001b3ULL;
    }
    return (size_t)(h % CF_BUCKETS);
}

static struct cf_cached *cf_cache_get(struct policy_callforward *cf, const char *addr)
{
    uint64_t now = time_mono_ms();
    struct cf_cached **pp = &cf->buckets[cf_bucket(cf, addr)];
    while (*pp != NULL) {
        struct cf_cached *c = *pp;
        if (c->expires_ms <= now) {
            *pp = c->next;
            free(c->addr);
            free(c);
            cf->n_cached--;
            continue;
        }
        if (strcmp(c->addr, addr) == 0)
            return c;
        pp = &c->next;
    }
    return NULL;
}

static void cf_cache_clear(struct policy_callforward *cf, bool expired_only)
{
    uint64_t now = time_mono_ms();
    for (size_t b = 0; b < CF_BUCKETS; b++) {
        struct cf_cached **pp = &cf->buckets[b];
        while (*pp != NULL) {
            struct cf_cached *c = *pp;
            if (expired_only && c->expires_ms > now) {
                pp = &c->next;
                continue;
            }
            *pp = c->next;
            free(c->addr);
            free(c);
            cf->n_cached--;
        }
    }
}

static void cf_cache_put(struct policy_callforward *cf, const char *addr, enum cf_answer a,
                         const char *diag)
{
    const struct moat_settings *s = cf->cfg.settings;
    int64_t ttl = a == CF_EXISTS ? s->rv_callforward_positive_ttl
                                 : s->rv_callforward_negative_ttl;
    if (a == CF_UNREACHABLE || ttl <= 0)
        return;
    struct cf_cached *c = cf_cache_get(cf, addr);
    if (c == NULL) {
        if (cf->n_cached >= CF_CACHE_MAX) {
            cf_cache_clear(cf, true);
            if (cf->n_cached >= CF_CACHE_MAX) {
                log_warn("event=callforward_cache_full entries=%zu action=cleared", cf->n_cached);
                cf_cache_clear(cf, false);
            }
        }
        c = xcalloc(1, sizeof *c);
        c->addr = xstrdup(addr);
        size_t b = cf_bucket(cf, addr);
        c->next = cf->buckets[b];
        cf->buckets[b] = c;
        cf->n_cached++;
    }
    c->answer = a;
    c->expires_ms = time_mono_ms() + (uint64_t)ttl * 1000;
    (void)str_copy(c->diag, sizeof c->diag, diag);
}

/* --- probes --- */

static void cf_verdict(struct policy_verdict *v, const char *addr, enum cf_answer a,
                       const char *diag, enum directory_rv_unreachable u)
{
    char why[200];
    memset(v, 0, sizeof *v);
    v->action = POLICY_DUNNO;
    switch (a) {
    case CF_EXISTS:
        break;
    case CF_UNKNOWN:
        xsnprintf(why, sizeof why, "call-forward: the route answered %.150s", diag);
        verdict_unknown(v, addr, why);
        break;
    case CF_UNREACHABLE:
        xsnprintf(why, sizeof why, "call-forward: %.170s", diag);
        verdict_unavailable(v, addr, u, why);
        break;
    }
}

/* cf_finish - the probe's answer: cache it, answer every waiter, free */
static void cf_finish(struct cf_probe *pr, enum cf_answer a, const char *diag)
{
    struct policy_callforward *cf = pr->cf;
    log_info("event=callforward rcpt=%s route=%s:%d answer=%s diag=\"%.200s\"", pr->addr,
             pr->host, pr->port, a == CF_EXISTS ? "exists" : a == CF_UNKNOWN ? "unknown"
             : "unreachable", diag);
    cf_cache_put(cf, pr->addr, a, diag);
    if (pr->timer)
        event_free(pr->timer);
    if (pr->begin)
        event_free(pr->begin);
    if (pr->q != NULL && cf->cfg.dns != NULL)
        dns_cancel(cf->cfg.dns, pr->q);
    if (pr->prev)
        pr->prev->next = pr->next;
    else
        cf->probes = pr->next;
    if (pr->next)
        pr->next->prev = pr->prev;
    cf->n_probes--;
    struct cf_waiter *w = pr->waiters;
    while (w != NULL) {
        struct cf_waiter *next = w->next;
        struct policy_verdict v;
        cf_verdict(&v, pr->addr, a, diag, w->unreachable);
        policy_pending_done(w->p, &v);
        free(w);
        w = next;
    }
    free(pr->addr);
    free(pr->host);
    free(pr);
}

static void cf_sent(void *arg, struct smtp_conn *c, const struct smtp_send_result *res)
{
    struct cf_probe *pr = arg;
    pr->conn = NULL;
    int code = res->codes[0];
    char diag[SMTP_DIAG_MAX];
    (void)str_copy(diag, sizeof diag, res->diags[0]);
    if (c != NULL)
        smtp_conn_quit(c);
    if (code >= 200 && code < 300)
        cf_finish(pr, CF_EXISTS, diag);
    else if (code >= 500)
        cf_finish(pr, CF_UNKNOWN, diag);
    else
        cf_finish(pr, CF_UNREACHABLE, diag);
}

static void cf_ready(void *arg, struct smtp_conn *c, enum smtp_conn_error e, int code,
                     const char *diag)
{
    struct cf_probe *pr = arg;
    if (e != SMTP_CONN_OK) {
        pr->conn = NULL;
        cf_finish(pr, CF_UNREACHABLE, diag && diag[0] ? diag : "connection failed");
        return;
    }
    pr->conn = c;
    pr->rcpt.addr = pr->addr;
    pr->msg.qid = "NOQUEUE";
    pr->msg.sender = "";                 /* the null sender: no bounce can come of it */
    pr->msg.rcpts = &pr->rcpt;
    pr->msg.n_rcpts = 1;
    pr->msg.flags = SMTP_MSG_PROBE;
    smtp_conn_send(c, &pr->msg, cf_sent, pr);
}

static enum smtp_client_tls cf_tls(enum store_tls_mode m)
{
    switch (m) {
    case STORE_TLS_RELAXED:
        return SMTP_CLIENT_TLS_ENCRYPT;
    case STORE_TLS_STRICT:
        return SMTP_CLIENT_TLS_VERIFY;
    default:
        return SMTP_CLIENT_TLS_MAY;
    }
}

/* cf_connect - text is an IP address */
static bool cf_connect(struct cf_probe *pr, const char *text)
{
    struct sockaddr_in *s4 = (struct sockaddr_in *)&pr->sa;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&pr->sa;
    memset(&pr->sa, 0, sizeof pr->sa);
    if (inet_pton(AF_INET, text, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)pr->port);
        pr->salen = sizeof *s4;
    } else if (inet_pton(AF_INET6, text, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)pr->port);
        pr->salen = sizeof *s6;
    } else {
        return false;
    }
    pr->conn = smtp_conn_open(&pr->cf->ccfg, (struct sockaddr *)&pr->sa, pr->salen, pr->host,
                              cf_tls(pr->tls), cf_ready, pr);
    return true;
}

static void cf_dns_cb(void *arg, const struct dns_result *r)
{
    struct cf_probe *pr = arg;
    pr->q = NULL;
    if (r->status == DNS_OK && r->n > 0 && cf_connect(pr, r->rr[0].text))
        return;
    if (pr->dns_step == 0 && r->status != DNS_TEMPFAIL) {
        pr->dns_step = 1;
        pr->q = dns_query(pr->cf->cfg.dns, pr->host, DNS_T_AAAA, cf_dns_cb, pr);
        return;
    }
    char diag[200];
    xsnprintf(diag, sizeof diag, "cannot resolve the route host %.100s (%s)", pr->host,
              dns_status_name(r->status));
    cf_finish(pr, CF_UNREACHABLE, diag);
}

static void cf_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct cf_probe *pr = arg;
    if (pr->conn != NULL) {
        smtp_conn_free(pr->conn);
        pr->conn = NULL;
    }
    cf_finish(pr, CF_UNREACHABLE, "no answer within rv_callforward_timeout");
}

/* cf_begin_cb - the probe starts from the loop, never inside the check, so
 * that no waiter is answered while its evaluation is still being set up */
static void cf_begin_cb(evutil_socket_t fd, short what, void *arg)
{
    struct cf_probe *pr = arg;
    if (cf_connect(pr, pr->host))
        return;
    if (pr->cf->cfg.dns == NULL) {
        cf_finish(pr, CF_UNREACHABLE, "no resolver for the route host");
        return;
    }
    pr->q = dns_query(pr->cf->cfg.dns, pr->host, DNS_T_A, cf_dns_cb, pr);
}

/* cf_start - a probe for addr to route r, answering w */
static void cf_start(struct policy_callforward *cf, const char *addr, const struct store_route *r,
                     struct cf_waiter *w)
{
    struct cf_probe *pr = xcalloc(1, sizeof *pr);
    pr->cf = cf;
    pr->addr = xstrdup(addr);
    pr->host = xstrdup(r->host);
    pr->port = r->port > 0 ? r->port : 25;
    pr->tls = r->tls;
    pr->waiters = w;
    pr->next = cf->probes;
    if (cf->probes)
        cf->probes->prev = pr;
    cf->probes = pr;
    cf->n_probes++;
    pr->timer = evtimer_new(cf->cfg.base, cf_timeout_cb, pr);
    pr->begin = evtimer_new(cf->cfg.base, cf_begin_cb, pr);
    if (pr->timer == NULL || pr->begin == NULL)
        log_fatal("event=alloc_failed what=\"call-forward timer\"");
    struct timeval tv = { (time_t)cf->cfg.settings->rv_callforward_timeout, 0 };
    struct timeval zero = { 0, 0 };
    evtimer_add(pr->timer, &tv);
    evtimer_add(pr->begin, &zero);
}

/* cf_check - the call-forward half of the check */
static void cf_check(const struct policy_request *req, struct policy_verdict *out,
                     struct policy_pending *p, enum directory_rv_unreachable u)
{
    struct policy_callforward *cf = req->callforward;
    char addr[321];
    if (str_copy(addr, sizeof addr, req->rcpt) < 0) {
        verdict_unavailable(out, req->rcpt, u, "call-forward: address too long to probe");
        return;
    }
    str_lower(addr);
    if (cf == NULL) {
        verdict_unavailable(out, addr, u, "call-forward: no prober on this loop");
        return;
    }
    struct cf_cached *c = cf_cache_get(cf, addr);
    if (c != NULL) {
        cf_verdict(out, addr, c->answer, c->diag, u);
        if (out->reason[0] != '\0') {
            size_t l = strlen(out->reason);
            (void)xsnprintf(out->reason + l, sizeof out->reason - l, " (cached)");
        }
        return;
    }
    const char *dom = strrchr(addr, '@');
    const struct store_domain *d = dom && req->snapshot ? store_snapshot_find(req->snapshot, dom + 1)
                                                       : NULL;
    if (d == NULL || d->route.host == NULL || d->route.host[0] == '\0') {
        verdict_unavailable(out, addr, u, "call-forward: the domain has no route to ask");
        return;
    }
    if (p == NULL) {
        verdict_unavailable(out, addr, u, "call-forward: the caller cannot wait for a probe");
        return;
    }
    struct cf_waiter *w = xcalloc(1, sizeof *w);
    w->p = p;
    w->unreachable = u;
    for (struct cf_probe *pr = cf->probes; pr != NULL; pr = pr->next) {
        if (strcmp(pr->addr, addr) == 0) {
            /* the same address is being probed: wait for that answer */
            w->next = pr->waiters;
            pr->waiters = w;
            out->action = POLICY_PENDING;
            return;
        }
    }
    if (cf->n_probes >= CF_MAX_INFLIGHT) {
        free(w);
        verdict_unavailable(out, addr, u, "call-forward: too many probes in flight");
        return;
    }
    cf_start(cf, addr, &d->route, w);
    out->action = POLICY_PENDING;
}

void policy_check_rcpt_valid(const struct policy_request *req, struct policy_verdict *out,
                             struct policy_pending *p)
{
    enum directory_rv_mode mode;
    enum directory_rv_unreachable u;
    if (req->directory == NULL || req->rcpt == NULL)
        return;     /* no index loaded: recipient validation is off */
    if (srs_is_srs(req->rcpt))
        return;     /* issue 7: a valid SRS bounce address (srs_bounce refused the others) */
    switch (directory_index_lookup(req->directory, req->rcpt, &mode, &u)) {
    case DIRECTORY_FOUND:
    case DIRECTORY_NOT_VALIDATED:
        return;
    case DIRECTORY_NOT_FOUND:
        verdict_unknown(out, req->rcpt, mode == DIRECTORY_RV_DIRECTORY
                        ? "recipient validation: not in the directory"
                        : "recipient validation: not a known user, alias or group");
        return;
    case DIRECTORY_UNAVAILABLE:
        verdict_unavailable(out, req->rcpt, u, "recipient validation: the directory was never "
                            "synchronised");
        return;
    case DIRECTORY_CALL_FORWARD:
        cf_check(req, out, p, u);
        return;
    }
}

/* --- the prober's life --- */

struct policy_callforward *policy_callforward_create(const struct policy_callforward_config *cfg)
{
    struct policy_callforward *cf = xcalloc(1, sizeof *cf);
    cf->cfg = *cfg;
    cf->ccfg.base = cfg->base;
    cf->ccfg.tls_ctx = cfg->tls_client;
    cf->ccfg.helo_name = cfg->hostname;
    int64_t t = cfg->settings->rv_callforward_timeout;
    cf->ccfg.timeout_connect = (int)t;
    cf->ccfg.timeout_command = (int)t;
    cf->ccfg.timeout_data = (int)t;
    cf->seed = (uint64_t)time_mono_ms() * 0x9e3779b97f4a7c15ULL;
    return cf;
}

void policy_callforward_forget(struct policy_callforward *cf)
{
    if (cf != NULL)
        cf_cache_clear(cf, false);
}

void policy_callforward_free(struct policy_callforward *cf)
{
    if (cf == NULL)
        return;
    while (cf->probes != NULL) {
        struct cf_probe *pr = cf->probes;
        if (pr->conn != NULL) {
            smtp_conn_free(pr->conn);
            pr->conn = NULL;
        }
        cf_finish(pr, CF_UNREACHABLE, "moatd is shutting down");
    }
    cf_cache_clear(cf, false);
    free(cf);
}
