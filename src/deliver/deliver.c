/*
 * deliver.c - the delivery engine (see deliver.h).
 *
 * Scheduling.  Every live spool message has a struct dmsg in its user slot
 * with the wall-clock time of its next attempt; the dmsgs wait in a binary
 * min-heap, and one timer is armed for the earliest.  An attempt splits the
 * pending recipients by destination (the internal domain's route from the
 * routing snapshot, or the MX of any other domain) into jobs of at most
 * delivery_max_rcpts_per_txn recipients.  When all jobs of an attempt are
 * back, attempt_done() records outcomes, sends DSNs, and either finishes the
 * message or puts it back in the heap for the next retry.
 *
 * Destinations.  A struct dest (hash table by key) holds the queue of jobs
 * for one next hop, its resolved addresses (cached for a minute) and its
 * connections, at most delivery_concurrency_per_route.  A connection takes
 * the next queued job when it is ready and after every transaction
 * (connection reuse); with nothing queued it QUITs.
 *
 * Durability of bounces.  A recipient that failed permanently stays PENDING
 * in the spool until the DSN about it is durable; only then is it marked
 * FAILED (and the message finished).  A crash in between repeats the
 * attempt and the DSN; it never loses the bounce.
 *
 * TLS policies (issue 6).  An MX destination takes its TLS mode from the
 * outbound policy in the routing snapshot (store_snapshot_tls_policy):
 * encrypt and verify require TLS (never the clear fallback of opportunistic
 * TLS), verify against the MX host name; mta-sts fetches the domain's
 * published policy before each resolution (deliver_mtasts.h) and, in mode
 * enforce, uses only the MX hosts it names, verified.  A TLS failure under
 * an enforced policy defers with a diagnostic naming the policy; a policy
 * that is not enforced (its probe failed) leaves delivery opportunistic and
 * logs what it would have refused (event=tls_policy_report).  MX hosts are
 * tried in preference order, equal preferences in random order
 * (deliver_mx.h), every address before the destination defers.
 *
 * Tracking (issue 11, core/track.h): rcpt_result emits one ATTEMPT per
 * recipient and attempt (the remote, the reply taken apart, the TLS in use,
 * the latency since queueing); a recipient given up is BOUNCED once final
 * (after its DSN is durable, or at once without one); a DSN is DSN on the
 * original and QUEUED (role dsn) under its own queue id.
 *
 * Everything runs on the event loop; there is no per-message thread or
 * process.  MTA-STS fetches run on the worker pool.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <event2/event.h>
#include "deliver.h"
#include "deliver_dsn.h"
#include "deliver_dkim.h"
#include "deliver_mx.h"
#include "deliver_mtasts.h"
#include "deliver_dane.h"
#include "held_text.h"
#include "../dns/dns.h"
#include "../spool/spool.h"
#include "../smtp/smtp_client.h"
#include "../core/track.h"

#define DELIVER_ADDR_TTL_MS (60 * 1000)   /* resolved addresses are reused this long */
#define DELIVER_MAX_MX 10                 /* MX hosts tried per domain */
#define DELIVER_MAX_ADDRS 20
#define DELIVER_MAX_INFLIGHT 20000        /* messages in attempt at once */
#define DELIVER_BATCH 1000                /* attempts started per timer tick */
#define DELIVER_DSN_FULL_DEFAULT (100 * 1024)       /* RET not given: full message up to this */
#define DELIVER_DSN_FULL_MAX (10 * 1024 * 1024)     /* RET=FULL: full message up to this */
#define DELIVER_HEADERS_MAX (256 * 1024)

struct dest;

/* the scheduler's per-message state, in the spool message's user slot */
struct dmsg {
    struct deliver *d;
    struct spool_msg *m;
    char qid[SPOOL_QID_LEN + 1];
    size_t heap_idx;             /* SIZE_MAX when not queued */
    int64_t next_ms;
    unsigned attempts;
    int inflight;                /* jobs out */
    bool busy;                   /* in an attempt or waiting for a DSN commit */
    bool deleted;                /* an administrator deleted it during an attempt */
    char *last_error;
    /* per recipient, for this attempt */
    unsigned char *outcome;      /* enum rcpt_outcome */
    char **remote;               /* the host that answered, for Remote-MTA */
    /* DKIM: computed at the first attempt towards an external destination,
     * then sent with every try (deliver_dkim.c) */
    bool dkim_done;
    char *dkim_hdr;              /* "DKIM-Signature: ...\r\n", or NULL: unsigned */
    size_t dkim_len;
    bool held;                   /* quarantined (envelope hold): never scheduled */
};

enum rcpt_outcome { OUT_NONE, OUT_DELIVERED, OUT_DEFERRED, OUT_FAILED };

struct job {
    struct dmsg *dm;
    struct dest *ds;
    struct job *next;
    size_t n;
    size_t *idx;                 /* recipient indexes in the envelope */
    struct smtp_client_rcpt *rc;
    struct smtp_client_msg msg;
    size_t prefix_len;           /* dm->dkim_len when this job sends it, else 0 */
    size_t hdr_len;              /* the envelope's screening header lines, sent next */
    char *fwd_hdr;               /* forwarding: "X-Moat-Forwarded-For: <addr>\r\n", then */
    size_t fwd_len;
};

struct daddr {
    struct sockaddr_storage sa;
    socklen_t len;
    char *host;
    size_t rank;                 /* the MX host's place in the order tried */
};

struct slot {                    /* one connection of a destination */
    struct dest *ds;
    struct smtp_conn *conn;
    struct job *job;
    size_t addr_i;
    bool tls_fallback;           /* opportunistic TLS failed here: retry in clear */
    enum smtp_client_tls tls_used;   /* the level of the connection being opened */
    struct dane_lookup *dl;      /* DANE policy: the TLSA lookup before connecting */
    enum dane_state dane_state;  /* its answer, for this connection */
    bool dane_done;              /* dane_state is valid */
    int best_rank;               /* how far the most informative failure got */
    char best[SMTP_DIAG_MAX];
    int64_t job_start_ms;
};

struct dest {
    struct deliver *d;
    char *key;
    struct dest *hnext;
    bool is_mx;
    char *host;                  /* route host, or the domain for MX */
    int port;
    enum smtp_client_tls tls;
    /* the outbound TLS policy of an MX destination (store_snapshot_tls_policy);
     * policy NULL = none: opportunistic.  A policy that is not enforced
     * leaves tls opportunistic and report_tls says what it would require. */
    char *policy_domain;
    const char *policy_mode;     /* "encrypt", "verify", ... (static) */
    bool policy_enforced;
    enum smtp_client_tls report_tls;
    bool report;                 /* log what the policy would refuse (not enforced, or
                                  * MTA-STS mode testing) */
    /* mode mta-sts: the domain's published policy, fetched before each resolution */
    bool sts;
    struct mtasts_req *sts_req;
    struct mtasts_policy *sts_policy;   /* NULL: none published (opportunistic) */
    /* TLS policy "dane" (RFC 7672): each MX host is looked up with
     * dane_lookup before connecting; dane_fallback is the level where DANE
     * does not apply.  mx_secure: the MX answer was DNSSEC-validated (a
     * configured route host counts as secure) */
    bool dane;
    enum smtp_client_tls dane_fallback;
    bool mx_secure;
    struct job *qhead, **qtail;
    size_t qlen;
    int n_conns, n_connecting;
    struct daddr *addrs;
    size_t n_addrs;
    int64_t addrs_until;
    /* resolution in progress */
    bool resolving;
    int dns_pending;
    struct dns_query **queries;
    size_t n_queries;
    char **mx_hosts;
    size_t n_mx;
    bool res_tempfail;
    char res_why[300];
    int res_code;                /* failure code when resolution ends without addresses */
};

struct deliver {
    struct deliver_config cfg;
    struct smtp_client_config ccfg;
    struct dmsg **heap;
    size_t n_heap, cap_heap;
    struct event *timer;
    struct event *gc_ev;
    bool shutdown_scheduled;
    struct dest **dbuckets;
    size_t n_dbuckets, n_dests;
    size_t inflight_msgs;
    bool started, shutting_down;
    void (*shutdown_done)(void *);
    void *shutdown_arg;
    struct deliver_stats stats;
    struct mtasts *mtasts;       /* NULL without a worker pool */
    struct event *held_ev;       /* issue 7: the purge timer of held mail */
};

static void dest_pump(struct dest *ds);
static void attempt_done(struct dmsg *dm);
static void sched_arm(struct deliver *d);

/* --- the heap --- */

static void heap_swap(struct deliver *d, size_t a, size_t b)
{
    struct dmsg *t = d->heap[a];
    d->heap[a] = d->heap[b];
    d->heap[b] = t;
    d->heap[a]->heap_idx = a;
    d->heap[b]->heap_idx = b;
}

static void heap_up(struct deliver *d, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (d->heap[p]->next_ms <= d->heap[i]->next_ms)
            break;
        heap_swap(d, p, i);
        i = p;
    }
}

static void heap_down(struct deliver *d, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < d->n_heap && d->heap[l]->next_ms < d->heap[m]->next_ms)
            m = l;
        if (r < d->n_heap && d->heap[r]->next_ms < d->heap[m]->next_ms)
            m = r;
        if (m == i)
            break;
        heap_swap(d, m, i);
        i = m;
    }
}

static void heap_remove(struct deliver *d, struct dmsg *dm)
{
    size_t i = dm->heap_idx;
    if (i == SIZE_MAX)
        return;
    d->n_heap--;
    if (i != d->n_heap) {
        d->heap[i] = d->heap[d->n_heap];
        d->heap[i]->heap_idx = i;
        heap_down(d, i);
        heap_up(d, i);
    }
    dm->heap_idx = SIZE_MAX;
}

/* sched_at - (re)queue dm for an attempt at ms */
static void sched_at(struct deliver *d, struct dmsg *dm, int64_t ms)
{
    dm->next_ms = ms;
    if (dm->heap_idx != SIZE_MAX) {
        heap_down(d, dm->heap_idx);
        heap_up(d, dm->heap_idx);
    } else {
        if (d->n_heap == d->cap_heap) {
            d->cap_heap = d->cap_heap ? d->cap_heap * 2 : 256;
            d->heap = xreallocarray(d->heap, d->cap_heap, sizeof(*d->heap));
        }
        dm->heap_idx = d->n_heap;
        d->heap[d->n_heap++] = dm;
        heap_up(d, dm->heap_idx);
    }
    sched_arm(d);
}

static void sched_arm(struct deliver *d)
{
    if (!d->timer || d->shutting_down || !d->n_heap)
        return;
    int64_t now = (int64_t)time_wall_ms(), due = d->heap[0]->next_ms;
    int64_t delay = due > now ? due - now : 0;
    if (d->inflight_msgs >= DELIVER_MAX_INFLIGHT)
        return;   /* re-armed when an attempt ends */
    struct timeval tv = { .tv_sec = (time_t)(delay / 1000), .tv_usec = (suseconds_t)(delay % 1000) * 1000 };
    evtimer_add(d->timer, &tv);
}

/* --- helpers --- */

static const char *addr_domain(const char *addr)
{
    const char *at = strrchr(addr, '@');
    return at ? at + 1 : "";
}

static void dmsg_free(struct dmsg *dm)
{
    if (!dm)
        return;
    size_t n = dm->m ? spool_msg_envelope(dm->m)->n_rcpts : 0;
    for (size_t i = 0; i < n && dm->remote; i++)
        free(dm->remote[i]);
    free(dm->remote);
    free(dm->outcome);
    free(dm->last_error);
    free(dm->dkim_hdr);
    free(dm);
}

static void set_last_error(struct dmsg *dm, const char *e)
{
    free(dm->last_error);
    dm->last_error = e ? xstrdup(e) : NULL;
}

static int code_of(const char *diag)
{
    if (diag && diag[0] >= '2' && diag[0] <= '5' && diag[1] >= '0' && diag[1] <= '9' && diag[2] >= '0' &&
        diag[2] <= '9')
        return (diag[0] - '0') * 100 + (diag[1] - '0') * 10 + (diag[2] - '0');
    return 0;
}

/* finish - the message has nothing left to do */
static void finish(struct deliver *d, struct dmsg *dm)
{
    heap_remove(d, dm);
    struct spool_msg *m = dm->m;
    spool_msg_set_user(m, NULL);
    log_debug("qid=%s event=removed", dm->qid);
    dmsg_free(dm);
    spool_msg_done(d->cfg.spool, m);
}

/* --- tracking (core/track.h) --- */

static const char *diag_text(const char *diag);

/* track_role_of - the message's role from its envelope */
static enum track_role track_role_of(const struct spool_envelope *env)
{
    return env->flags & SPOOL_F_BOUNCE ? TRACK_ROLE_DSN : env->flags & SPOOL_F_JOURNAL ? TRACK_ROLE_JOURNAL
         : env->flags & SPOOL_F_OUTBOUND ? TRACK_ROLE_OUTBOUND : TRACK_ROLE_INBOUND;
}

/* track_rcpt - an ATTEMPT or BOUNCED event for recipient i: the reply
 * (code, enhanced status, text) taken apart from the diagnostic */
static void track_rcpt(struct dmsg *dm, size_t i, enum track_kind kind, enum track_result result,
                       const char *diag, const char *relay, const char *tls)
{
    const struct spool_envelope *env = spool_msg_envelope(dm->m);
    const char *p = diag ? diag : "";
    char dsn[16];
    int code = code_of(p);
    deliver_dsn_status(p, code, dsn, sizeof(dsn));
    if (code && p[3] == ' ')
        p += 4;
    int64_t ms = (int64_t)time_wall_ms() - env->received_ms;
    struct track_event ev = {
        .kind = kind, .result = result, .role = track_role_of(env), .rcpt = env->rcpts[i].addr,
        .code = code, .dsn = dsn,
        .reason = diag_text(p), .remote = relay ? relay : "", .tls = tls ? tls : "none",
        .latency_ms = ms <= 0 ? 0 : ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms,
    };
    str_copy(ev.qid, sizeof(ev.qid), dm->qid);
    track_emit(&ev);
}

/* deliver_track_msg - an event about the message as a whole (DSN, DELETED...) */
void deliver_track_msg(const char *qid, enum track_kind kind, const char *actor, const char *detail)
{
    struct track_event ev = { .kind = kind, .actor = actor, .detail = detail };
    str_copy(ev.qid, sizeof(ev.qid), qid);
    track_emit(&ev);
}

/* --- recording outcomes --- */

static void log_outcome(struct deliver *d, struct dmsg *dm, size_t i, const char *event,
                        const char *relay, const char *tls, const char *diag)
{
    const struct spool_envelope *env = spool_msg_envelope(dm->m);
    char q[SMTP_DIAG_MAX + 8];
    int64_t delay = (int64_t)time_wall_ms() - env->received_ms;
    log_info("qid=%s event=%s rcpt=<%s> relay=%s code=%d tls=%s delay=%.2f diag=%s", dm->qid, event,
             env->rcpts[i].addr, relay && *relay ? relay : "none", code_of(diag), tls ? tls : "none",
             delay > 0 ? (double)delay / 1000.0 : 0.0, log_quote(q, sizeof(q), diag ? diag : ""));
}

/* rcpt_result - one recipient's result of this attempt */
static void rcpt_result(struct deliver *d, struct dmsg *dm, size_t i, int code, const char *diag,
                        const char *relay, const char *tls, const char *track_tls)
{
    struct spool *sp = d->cfg.spool;
    track_rcpt(dm, i, TRACK_ATTEMPT, code >= 200 && code < 300 ? TRACK_DELIVERED
                                     : code >= 500 ? TRACK_FAILED : TRACK_DEFERRED,
               diag, relay, track_tls);
    if (code >= 200 && code < 300) {
        dm->outcome[i] = OUT_DELIVERED;
        spool_msg_set_rcpt(sp, dm->m, i, SPOOL_RCPT_DELIVERED, diag);
        d->stats.delivered++;
        log_outcome(d, dm, i, "delivered", relay, tls, diag);
    } else if (code >= 500) {
        /* stays PENDING (with its reason) until the DSN about it is durable */
        dm->outcome[i] = OUT_FAILED;
        spool_msg_set_rcpt(sp, dm->m, i, SPOOL_RCPT_PENDING, diag);
        set_last_error(dm, diag);
        log_outcome(d, dm, i, "bounced", relay, tls, diag);
    } else {
        dm->outcome[i] = OUT_DEFERRED;
        spool_msg_set_rcpt(sp, dm->m, i, SPOOL_RCPT_PENDING, diag);
        set_last_error(dm, diag);
        d->stats.deferred++;
        log_outcome(d, dm, i, "deferred", relay, tls, diag);
    }
    if (relay) {
        /* Remote-MTA is the host name part of "host[addr]:port" */
        free(dm->remote[i]);
        size_t hl = strcspn(relay, "[");
        dm->remote[i] = xstrndup(relay, hl);
    }
}

static void job_free(struct job *j)
{
    free(j->idx);
    free(j->rc);
    free(j->fwd_hdr);
    free(j);
}

/* job_done - every recipient of the job has a result */
static void job_done(struct deliver *d, struct job *j)
{
    struct dmsg *dm = j->dm;
    job_free(j);
    if (--dm->inflight == 0)
        attempt_done(dm);
}

/* job_fail_all - a whole job fails with one reason (DNS, connection) */
static void job_fail_all(struct deliver *d, struct job *j, int code, const char *diag, const char *relay)
{
    char full[SMTP_DIAG_MAX];
    if (code_of(diag))
        str_copy(full, sizeof(full), diag);
    else
        xsnprintf(full, sizeof(full), "%d %s", code, diag);
    for (size_t k = 0; k < j->n; k++)
        rcpt_result(d, j->dm, j->idx[k], code, full, relay, NULL, NULL);
    job_done(d, j);
}

/* --- destinations --- */

static uint64_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static struct dest *dest_get(struct deliver *d, const char *key, bool is_mx, const char *host, int port,
                             enum smtp_client_tls tls)
{
    if (!d->n_dbuckets) {
        d->n_dbuckets = 256;
        d->dbuckets = xcalloc(d->n_dbuckets, sizeof(*d->dbuckets));
    }
    size_t b = str_hash(key) & (d->n_dbuckets - 1);
    for (struct dest *ds = d->dbuckets[b]; ds; ds = ds->hnext)
        if (strcmp(ds->key, key) == 0)
            return ds;
    if (d->n_dests >= d->n_dbuckets * 2) {
        size_t nb = d->n_dbuckets * 4;
        struct dest **nbk = xcalloc(nb, sizeof(*nbk));
        for (size_t i = 0; i < d->n_dbuckets; i++) {
            struct dest *ds = d->dbuckets[i];
            while (ds) {
                struct dest *nx = ds->hnext;
                size_t s = str_hash(ds->key) & (nb - 1);
                ds->hnext = nbk[s];
                nbk[s] = ds;
                ds = nx;
            }
        }
        free(d->dbuckets);
        d->dbuckets = nbk;
        d->n_dbuckets = nb;
        b = str_hash(key) & (nb - 1);
    }
    struct dest *ds = xcalloc(1, sizeof(*ds));
    ds->d = d;
    ds->key = xstrdup(key);
    ds->is_mx = is_mx;
    ds->host = xstrdup(host);
    ds->port = port;
    ds->tls = tls;
    ds->qtail = &ds->qhead;
    ds->hnext = d->dbuckets[b];
    d->dbuckets[b] = ds;
    d->n_dests++;
    return ds;
}

static void dest_clear_addrs(struct dest *ds)
{
    for (size_t i = 0; i < ds->n_addrs; i++)
        free(ds->addrs[i].host);
    free(ds->addrs);
    ds->addrs = NULL;
    ds->n_addrs = 0;
}

static void dest_clear_resolution(struct dest *ds)
{
    if (ds->sts_req) {
        mtasts_cancel(ds->sts_req);
        ds->sts_req = NULL;
    }
    for (size_t i = 0; i < ds->n_queries; i++)
        if (ds->queries[i])
            dns_cancel(ds->d->cfg.dns, ds->queries[i]);
    free(ds->queries);
    ds->queries = NULL;
    ds->n_queries = 0;
    for (size_t i = 0; i < ds->n_mx; i++)
        free(ds->mx_hosts[i]);
    free(ds->mx_hosts);
    ds->mx_hosts = NULL;
    ds->n_mx = 0;
    ds->dns_pending = 0;
    ds->resolving = false;
}

static struct job *dest_pop(struct dest *ds);

static void dest_destroy(struct dest *ds)
{
    struct job *j;
    while ((j = dest_pop(ds)))
        job_free(j);
    dest_clear_addrs(ds);
    dest_clear_resolution(ds);
    free(ds->key);
    free(ds->host);
    free(ds->policy_domain);
    free(ds->sts_policy);
    free(ds);
}

/* gc_cb - forget idle destinations.  Destinations are freed only here, at
 * the end of a loop turn, so no frame ever holds a freed one. */
static void gc_cb(evutil_socket_t fd, short what, void *arg)
{
    struct deliver *d = arg;
    for (size_t b = 0; b < d->n_dbuckets; b++) {
        struct dest **pp = &d->dbuckets[b];
        while (*pp) {
            struct dest *ds = *pp;
            if (!ds->qhead && !ds->n_conns && !ds->resolving) {
                *pp = ds->hnext;
                d->n_dests--;
                dest_destroy(ds);
            } else {
                pp = &ds->hnext;
            }
        }
    }
}

/* dest_maybe_free - an idle destination is forgotten at the end of the turn */
static void dest_maybe_free(struct dest *ds)
{
    if (!ds->qhead && !ds->n_conns && !ds->resolving)
        event_active(ds->d->gc_ev, EV_TIMEOUT, 0);
}

static void job_free(struct job *j);

static struct job *dest_pop(struct dest *ds)
{
    struct job *j = ds->qhead;
    if (j) {
        ds->qhead = j->next;
        if (!ds->qhead)
            ds->qtail = &ds->qhead;
        ds->qlen--;
        j->next = NULL;
    }
    return j;
}

static void dest_push(struct dest *ds, struct job *j)
{
    j->next = NULL;
    *ds->qtail = j;
    ds->qtail = &j->next;
    ds->qlen++;
}

/* dest_fail_queue - every queued job fails with one reason */
static void dest_fail_queue(struct dest *ds, int code, const char *diag)
{
    struct job *j;
    while ((j = dest_pop(ds)))
        job_fail_all(ds->d, j, code, diag, NULL);
}

static bool add_addr(struct dest *ds, const char *ip, const char *host, size_t rank)
{
    if (ds->n_addrs >= DELIVER_MAX_ADDRS)
        return false;
    struct daddr a = { 0 };
    struct sockaddr_in *s4 = (struct sockaddr_in *)&a.sa;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a.sa;
    if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)ds->port);
        a.len = sizeof(*s4);
    } else if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)ds->port);
        a.len = sizeof(*s6);
    } else {
        return false;
    }
    for (size_t i = 0; i < ds->n_addrs; i++)
        if (ds->addrs[i].len == a.len && memcmp(&ds->addrs[i].sa, &a.sa, a.len) == 0)
            return true;
    a.host = xstrdup(host);
    a.rank = rank;
    ds->addrs = xreallocarray(ds->addrs, ds->n_addrs + 1, sizeof(*ds->addrs));
    ds->addrs[ds->n_addrs++] = a;
    return true;
}

/* literal_ip - "1.2.3.4", "[1.2.3.4]", "[IPv6:::1]", "::1" -> address text */
static bool literal_ip(const char *host, char *dst, size_t size)
{
    unsigned char tmp[16];
    const char *h = host;
    size_t n = strlen(h);
    if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
        h++;
        n -= 2;
        if (n > 5 && strncasecmp(h, "IPv6:", 5) == 0) {
            h += 5;
            n -= 5;
        }
    }
    if (n == 0 || n >= size)
        return false;
    memcpy(dst, h, n);
    dst[n] = '\0';
    return inet_pton(AF_INET, dst, tmp) == 1 || inet_pton(AF_INET6, dst, tmp) == 1;
}

/* addrs_order - the MX order (answers arrive in any order); stable, so
 * addresses of one host keep their order */
static void addrs_order(struct dest *ds)
{
    for (size_t i = 1; i < ds->n_addrs; i++) {
        struct daddr t = ds->addrs[i];
        size_t j = i;
        for (; j > 0 && ds->addrs[j - 1].rank > t.rank; j--)
            ds->addrs[j] = ds->addrs[j - 1];
        ds->addrs[j] = t;
    }
}

/* resolution_end - addresses are known (or not): serve the queue */
static void resolution_end(struct dest *ds)
{
    dest_clear_resolution(ds);
    addrs_order(ds);
    if (ds->n_addrs) {
        ds->addrs_until = (int64_t)time_mono_ms() + DELIVER_ADDR_TTL_MS;
        dest_pump(ds);
        return;
    }
    ds->addrs_until = 0;
    char why[SMTP_DIAG_MAX];
    if (ds->res_code >= 500 && !ds->res_tempfail) {
        str_copy(why, sizeof(why), ds->res_why);
        dest_fail_queue(ds, ds->res_code, why);
    } else {
        if (ds->res_why[0])
            str_copy(why, sizeof(why), ds->res_why);
        else
            xsnprintf(why, sizeof(why), "4.4.3 no address found for %s", ds->host);
        dest_fail_queue(ds, 451, why);
    }
    dest_maybe_free(ds);
}

struct addr_q {
    struct dest *ds;
    size_t slot;
    size_t rank;
    char *host;
};

static void addr_cb(void *arg, const struct dns_result *r)
{
    struct addr_q *aq = arg;
    struct dest *ds = aq->ds;
    ds->queries[aq->slot] = NULL;
    if (r->status == DNS_OK) {
        for (size_t i = 0; i < r->n; i++)
            add_addr(ds, r->rr[i].text, aq->host, aq->rank);
    } else if (r->status == DNS_TEMPFAIL || r->status == DNS_BOGUS) {
        ds->res_tempfail = true;
        xsnprintf(ds->res_why, sizeof(ds->res_why), "4.4.3 address lookup for %s failed: %s", aq->host,
                  r->why[0] ? r->why : dns_status_name(r->status));
    }
    free(aq->host);
    free(aq);
    if (--ds->dns_pending == 0)
        resolution_end(ds);
}

static void query_addrs(struct dest *ds, const char *host, size_t rank)
{
    static const enum dns_type types[2] = { DNS_T_A, DNS_T_AAAA };
    for (int t = 0; t < 2; t++) {
        struct addr_q *aq = xcalloc(1, sizeof(*aq));
        aq->ds = ds;
        aq->host = xstrdup(host);
        aq->rank = rank;
        aq->slot = ds->n_queries;
        ds->queries = xreallocarray(ds->queries, ds->n_queries + 1, sizeof(*ds->queries));
        ds->queries[ds->n_queries++] = NULL;
        ds->dns_pending++;
        ds->queries[aq->slot] = dns_query(ds->d->cfg.dns, host, types[t], addr_cb, aq);
    }
}

static void mx_cb(void *arg, const struct dns_result *r)
{
    struct dest *ds = arg;
    ds->queries[0] = NULL;
    ds->dns_pending--;
    ds->mx_secure = r->secure && (r->status == DNS_OK || r->status == DNS_NODATA);
    if (r->status == DNS_OK) {
        struct dns_record *rr = xcalloc(r->n, sizeof(*rr));
        memcpy(rr, r->rr, r->n * sizeof(*rr));
        deliver_mx_order(rr, r->n, NULL);
        /* RFC 7505: a single MX of "." means the domain accepts no mail */
        if (r->n == 1 && rr[0].text[0] == '\0') {
            free(rr);
            ds->res_code = 556;
            xsnprintf(ds->res_why, sizeof(ds->res_why), "556 5.1.10 domain %s does not accept mail (null MX)",
                      ds->host);
            resolution_end(ds);
            return;
        }
        bool sts_enforce = ds->sts_policy && ds->sts_policy->mode == MTASTS_ENFORCE;
        size_t sts_refused = 0;
        for (size_t i = 0; i < r->n && ds->n_mx < DELIVER_MAX_MX; i++) {
            if (!rr[i].text[0])
                continue;
            if (ds->sts_policy && ds->sts_policy->mode != MTASTS_NONE &&
                !mtasts_mx_allowed(ds->sts_policy, rr[i].text)) {
                /* RFC 8461 4.1: only MX hosts the policy names; testing only logs */
                log_warn("event=tls_policy_report domain=%s policy=mta-sts mode=%s mx=%s "
                         "would_refuse=yes reason=\"MX host not in the MTA-STS policy\"",
                         ds->host, mtasts_mode_name(ds->sts_policy->mode), rr[i].text);
                if (sts_enforce && ds->policy_enforced) {
                    sts_refused++;
                    continue;
                }
            }
            ds->mx_hosts = xreallocarray(ds->mx_hosts, ds->n_mx + 1, sizeof(*ds->mx_hosts));
            ds->mx_hosts[ds->n_mx++] = xstrdup(rr[i].text);
        }
        free(rr);
        if (ds->n_mx == 0 && sts_refused > 0) {
            ds->res_tempfail = true;
            xsnprintf(ds->res_why, sizeof(ds->res_why), "4.7.5 TLS policy \"mta-sts\" for %s: "
                      "no MX host matches the domain's MTA-STS policy", ds->host);
            resolution_end(ds);
            return;
        }
        /* queries complete in any order: each address carries its host's
         * rank and resolution_end puts them back in MX order */
        for (size_t i = 0; i < ds->n_mx; i++)
            query_addrs(ds, ds->mx_hosts[i], i);
        if (ds->dns_pending == 0)
            resolution_end(ds);
        return;
    }
    if (r->status == DNS_NODATA) {
        /* RFC 5321 5.1: no MX, the domain itself is the implicit MX */
        query_addrs(ds, ds->host, 0);
        return;
    }
    if (r->status == DNS_NXDOMAIN) {
        ds->res_code = 550;
        xsnprintf(ds->res_why, sizeof(ds->res_why), "550 5.1.2 domain %s not found", ds->host);
    } else {
        ds->res_tempfail = true;
        xsnprintf(ds->res_why, sizeof(ds->res_why), "4.4.3 MX lookup for %s failed: %s", ds->host,
                  r->why[0] ? r->why : dns_status_name(r->status));
    }
    resolution_end(ds);
}

static void query_mx(struct dest *ds)
{
    ds->queries = xcalloc(1, sizeof(*ds->queries));
    ds->n_queries = 1;
    ds->dns_pending = 1;
    ds->queries[0] = dns_query(ds->d->cfg.dns, ds->host, DNS_T_MX, mx_cb, ds);
}

/* sts_cb - the domain's MTA-STS policy (or none): enforce (and the Moat
 * policy enforced) = VERIFY and only matching MX hosts; testing = as before,
 * logging what enforce would refuse; none or no policy = opportunistic */
static void sts_cb(void *arg, const struct mtasts_policy *p, const char *why)
{
    struct dest *ds = arg;
    ds->sts_req = NULL;
    free(ds->sts_policy);
    ds->sts_policy = NULL;
    if (p) {
        ds->sts_policy = xmalloc(sizeof(*ds->sts_policy));
        *ds->sts_policy = *p;
    }
    bool enforce = p && p->mode == MTASTS_ENFORCE;
    ds->tls = enforce && ds->policy_enforced ? SMTP_CLIENT_TLS_VERIFY : SMTP_CLIENT_TLS_MAY;
    ds->report_tls = p && p->mode != MTASTS_NONE ? SMTP_CLIENT_TLS_VERIFY : SMTP_CLIENT_TLS_MAY;
    ds->report = !ds->policy_enforced || (p && p->mode == MTASTS_TESTING);
    log_info("event=tls_policy domain=%s policy=mta-sts published=%s tls=%s reason=\"%s\"",
             ds->host, p ? mtasts_mode_name(p->mode) : "none",
             ds->tls == SMTP_CLIENT_TLS_VERIFY ? "verify" : "opportunistic", why);
    query_mx(ds);
}

static void dest_resolve(struct dest *ds)
{
    dest_clear_addrs(ds);
    ds->mx_secure = !ds->is_mx;   /* a route host comes from configuration */
    ds->resolving = true;
    ds->res_tempfail = false;
    ds->res_code = 0;
    ds->res_why[0] = '\0';
    char ip[64];
    if (literal_ip(ds->host, ip, sizeof(ip))) {
        add_addr(ds, ip, ip, 0);
        resolution_end(ds);
        return;
    }
    if (!ds->d->cfg.dns) {
        ds->res_tempfail = true;
        xsnprintf(ds->res_why, sizeof(ds->res_why), "4.4.3 no resolver configured to look up %s", ds->host);
        resolution_end(ds);
        return;
    }
    if (ds->is_mx && ds->sts && ds->d->mtasts) {
        /* the published policy first: it decides the TLS mode and the MX hosts */
        ds->sts_req = mtasts_get(ds->d->mtasts, ds->host, sts_cb, ds);
    } else if (ds->is_mx) {
        query_mx(ds);
    } else {
        query_addrs(ds, ds->host, 0);
    }
}

/* --- connections --- */

static void slot_connect(struct slot *s);

static void slot_end(struct slot *s)
{
    struct dest *ds = s->ds;
    ds->n_conns--;
    free(s);
    dest_pump(ds);
    dest_maybe_free(ds);
}

static ssize_t job_read(void *arg, uint64_t off, void *buf, size_t len)
{
    struct job *j = arg;
    if (off < j->prefix_len) {   /* the DKIM-Signature goes before the first header */
        size_t n = j->prefix_len - (size_t)off < len ? j->prefix_len - (size_t)off : len;
        memcpy(buf, j->dm->dkim_hdr + off, n);
        return (ssize_t)n;
    }
    off -= j->prefix_len;
    if (off < j->hdr_len) {      /* then the screening headers (Authentication-Results) */
        size_t n = j->hdr_len - (size_t)off < len ? j->hdr_len - (size_t)off : len;
        memcpy(buf, spool_msg_envelope(j->dm->m)->prefix + off, n);
        return (ssize_t)n;
    }
    off -= j->hdr_len;
    if (off < j->fwd_len) {      /* then the forwarding header of this job's recipients */
        size_t n = j->fwd_len - (size_t)off < len ? j->fwd_len - (size_t)off : len;
        memcpy(buf, j->fwd_hdr + off, n);
        return (ssize_t)n;
    }
    return spool_msg_read(j->dm->d->cfg.spool, j->dm->m, off - j->fwd_len, buf, len);
}

/* spool_read - the message as spooled (the DKIM signer's reader) */
static ssize_t spool_read(void *arg, uint64_t off, void *buf, size_t len)
{
    struct dmsg *dm = arg;
    return spool_msg_read(dm->d->cfg.spool, dm->m, off, buf, len);
}

/* dkim_prefix - the DKIM-Signature for a job to an external (MX)
 * destination: signed once per message, cached; a failure sends unsigned */
static void dkim_prefix(struct deliver *d, struct dmsg *dm, struct job *j)
{
    if (!j->ds->is_mx || !d->cfg.dkim_keys || !d->cfg.snapshot)
        return;
    if (!dm->dkim_done) {
        dm->dkim_done = true;
        (void)dkim_sign_message(*d->cfg.dkim_keys, *d->cfg.snapshot, dm->qid,
                                spool_msg_envelope(dm->m)->sender, spool_read, dm,
                                &dm->dkim_hdr, &dm->dkim_len);
    }
    if (dm->dkim_hdr != NULL) {
        j->prefix_len = dm->dkim_len;
        j->msg.size += dm->dkim_len;
    }
}

static void slot_next_job(struct slot *s, struct smtp_conn *c);

static void send_done(void *arg, struct smtp_conn *c, const struct smtp_send_result *res)
{
    struct slot *s = arg;
    struct job *j = s->job;
    struct deliver *d = s->ds->d;
    s->job = NULL;
    const char *relay = c ? smtp_conn_peer(c) : NULL;
    const char *tls = c ? smtp_conn_tls_version(c) : NULL;
    char relay_copy[300] = "", tls_copy[32] = "", track_tls[128] = "";
    if (!c && s->addr_i < s->ds->n_addrs) {
        /* the connection is gone; name the peer from our own records */
        struct daddr *a = &s->ds->addrs[s->addr_i];
        char ip[INET6_ADDRSTRLEN] = "?";
        if (a->sa.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&a->sa)->sin_addr, ip, sizeof(ip));
        else
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&a->sa)->sin6_addr, ip, sizeof(ip));
        xsnprintf(relay_copy, sizeof(relay_copy), "%s[%s]:%d", a->host, ip, s->ds->port);
        relay = relay_copy;
    } else if (relay) {
        str_copy(relay_copy, sizeof(relay_copy), relay);
        relay = relay_copy;
        if (tls) {
            str_copy(tls_copy, sizeof(tls_copy), tls);
            tls = tls_copy;
            /* tracking: "TLSv1.3 TLS_AES_256_GCM_SHA384 verified" */
            xsnprintf(track_tls, sizeof(track_tls), "%s %s %s", tls, smtp_conn_tls_cipher(c),
                      smtp_conn_tls_verified(c, NULL) ? "verified" : "unverified");
        }
    }
    for (size_t k = 0; k < j->n; k++)
        rcpt_result(d, j->dm, j->idx[k], res->codes[k], res->diags[k], relay, tls,
                    track_tls[0] ? track_tls : NULL);
    job_done(d, j);
    if (c && res->usable) {
        slot_next_job(s, c);
    } else {
        s->conn = NULL;
        slot_end(s);
    }
}

/* slot_next_job - reuse the connection for the next queued job, or QUIT */
static void slot_next_job(struct slot *s, struct smtp_conn *c)
{
    struct dest *ds = s->ds;
    struct job *j = ds->d->shutting_down ? NULL : dest_pop(ds);
    if (!j) {
        smtp_conn_quit(c);
        s->conn = NULL;
        slot_end(s);
        return;
    }
    s->job = j;
    s->job_start_ms = (int64_t)time_mono_ms();
    smtp_conn_send(c, &j->msg, send_done, s);
}

/* diag_text - a client diagnostic without its enhanced status code */
static const char *diag_text(const char *diag)
{
    const char *p = diag;
    if (p[0] >= '2' && p[0] <= '5' && p[1] == '.') {
        const char *sp = strchr(p, ' ');
        if (sp)
            return sp + 1;
    }
    return p;
}

/* policy_diag - a TLS failure under an enforced policy names the policy:
 * 4.7.5 TLS policy "verify" for example.net: mx1.example.net: ... */
static void policy_diag(const struct dest *ds, const struct daddr *a, const char *diag, char *dst,
                        size_t size)
{
    xsnprintf(dst, size, "4.7.5 TLS policy \"%s\" for %s: %s: %s", ds->policy_mode,
              ds->policy_domain, a->host, diag_text(diag));
}

/* policy_report - a policy that is not enforced yet is reported only: log
 * what it would have refused on this connection (like MTA-STS testing) */
static void policy_report(const struct dest *ds, struct smtp_conn *c)
{
    if (!ds->policy_domain || !ds->report || ds->report_tls == SMTP_CLIENT_TLS_MAY)
        return;
    const char *why = NULL;
    bool verified = smtp_conn_tls_verified(c, &why);
    const char *refused = NULL;
    if (!smtp_conn_tls_version(c))
        refused = "not encrypted";
    else if (ds->report_tls == SMTP_CLIENT_TLS_VERIFY && !verified)
        refused = why && *why ? why : "certificate not verified";
    if (refused)
        log_warn("event=tls_policy_report domain=%s policy=%s enforced=%s peer=%s "
                 "would_refuse=yes reason=\"%s\"", ds->policy_domain, ds->policy_mode,
                 ds->policy_enforced ? "yes" : "no", smtp_conn_peer(c), refused);
    else
        log_info("event=tls_policy_report domain=%s policy=%s enforced=%s peer=%s would_refuse=no",
                 ds->policy_domain, ds->policy_mode, ds->policy_enforced ? "yes" : "no",
                 smtp_conn_peer(c));
}

static void conn_ready(void *arg, struct smtp_conn *c, enum smtp_conn_error err, int code, const char *diag)
{
    struct slot *s = arg;
    struct dest *ds = s->ds;
    if (err == SMTP_CONN_OK) {
        ds->n_connecting--;
        s->conn = c;
        policy_report(ds, c);
        if (smtp_conn_dane(c))
            log_info("event=dane_verified dest=%s peer=%s tlsa=\"%s\"", ds->key, smtp_conn_peer(c),
                     smtp_conn_dane(c));
        ds->d->stats.connections++;
        slot_next_job(s, c);
        return;
    }
    s->conn = NULL;
    char dane_diag[SMTP_DIAG_MAX];
    /* a TLS failure under the dane policy names the policy (not for
     * opportunistic TLS, which goes on in clear below) */
    if (s->dane_done && (err == SMTP_CONN_TLS || err == SMTP_CONN_TLS_REQUIRED) &&
        s->tls_used != SMTP_CLIENT_TLS_MAY) {
        deliver_dane_diag(ds->host, diag, dane_diag, sizeof(dane_diag));
        diag = dane_diag;
    }
    log_info("event=connect_failed dest=%s addr_index=%zu error=%d diag=\"%s\"", ds->key, s->addr_i, err, diag);
    if (err == SMTP_CONN_TLS && s->tls_used == SMTP_CLIENT_TLS_MAY && !s->tls_fallback) {
        /* opportunistic TLS that fails is not a reason to stop: retry in clear (RFC 7435 4) */
        s->tls_fallback = true;
        slot_connect(s);
        return;
    }
    /* report the failure that got furthest (a TLS or greeting problem says
     * more than "connection refused" on a backup address) */
    int rank = err == SMTP_CONN_NETWORK ? 1 : 2;
    if (rank > s->best_rank) {
        s->best_rank = rank;
        if ((err == SMTP_CONN_TLS || err == SMTP_CONN_TLS_REQUIRED) && ds->policy_domain &&
            ds->policy_enforced && diag != dane_diag)   /* deliver_dane_diag named it */
            policy_diag(ds, &ds->addrs[s->addr_i], diag, s->best, sizeof(s->best));
        else
            str_copy(s->best, sizeof(s->best), diag);
    }
    s->tls_fallback = false;
    if (++s->addr_i < ds->n_addrs) {
        slot_connect(s);   /* RFC 5321 5.1: try the next address */
        return;
    }
    ds->n_connecting--;
    /* No established connection to this destination (only this slot and
     * others still connecting): the queued jobs wait for the next retry.
     * Waiting for the last slot instead would let each failure start a new
     * connection for the same queue: a busy loop while the route refuses. */
    if (ds->n_conns - ds->n_connecting == 1) {
        char why[SMTP_DIAG_MAX];
        str_copy(why, sizeof(why), s->best);
        /* a 5xx greeting is still a temporary condition for the whole destination */
        dest_fail_queue(ds, 451, why);
        ds->addrs_until = 0;   /* resolve again next time */
    }
    slot_end(s);
}

/* slot_open - open the connection at the level chosen (a: the DANE answer, or NULL) */
static void slot_open(struct slot *s, enum smtp_client_tls tls, const struct dane_answer *da)
{
    struct dest *ds = s->ds;
    struct deliver *d = ds->d;
    struct daddr *a = &ds->addrs[s->addr_i];
    /* read at each use, not at start: runtime settings (settings.h) change on this loop */
    const struct moat_settings *set = d->cfg.settings;
    d->ccfg.timeout_connect = (int)set->delivery_timeout_connect;
    d->ccfg.timeout_command = (int)set->delivery_timeout_command;
    d->ccfg.timeout_data = (int)set->delivery_timeout_data;
    s->tls_used = tls;
    struct smtp_conn *c;
    if (tls == SMTP_CLIENT_TLS_DANE)
        c = smtp_conn_open_dane(&d->ccfg, (struct sockaddr *)&a->sa, a->len, a->host, da->base, da->tlsa,
                                da->n, conn_ready, s);
    else
        c = smtp_conn_open(&d->ccfg, (struct sockaddr *)&a->sa, a->len, a->host, tls, conn_ready, s);
    (void)c;   /* reported through conn_ready */
}

/* slot_dane_cb - the DANE answer for this MX host decides the TLS level */
static void slot_dane_cb(void *arg, const struct dane_answer *a)
{
    struct slot *s = arg;
    struct dest *ds = s->ds;
    s->dl = NULL;
    s->dane_done = true;
    s->dane_state = a->state;
    log_info("event=dane dest=%s mx=%s base=%s state=%s why=\"%s\"", ds->key, ds->addrs[s->addr_i].host,
             a->base, dane_state_name(a->state), a->why);
    enum smtp_client_tls tls;
    char diag[SMTP_DIAG_MAX];
    if (deliver_dane_level(a->state, ds->dane_fallback, &tls) == 0) {
        slot_open(s, tls, a);
        return;
    }
    /* bogus or unknown: this MX host is not used now, never in clear */
    xsnprintf(diag, sizeof(diag), "4.7.5 TLS policy \"dane\" for %s: %s at %s", ds->host, a->why,
              ds->addrs[s->addr_i].host);
    s->tls_used = SMTP_CLIENT_TLS_DANE;
    conn_ready(s, NULL, SMTP_CONN_TLS, 0, diag);
}

static void slot_connect(struct slot *s)
{
    struct dest *ds = s->ds;
    struct deliver *d = ds->d;
    s->dane_done = false;
    if (ds->dane && d->cfg.dns && !s->tls_fallback) {
        s->dl = dane_lookup(d->cfg.dns, ds->addrs[s->addr_i].host, ds->port, ds->mx_secure, slot_dane_cb, s);
        return;
    }
    slot_open(s, s->tls_fallback ? SMTP_CLIENT_TLS_NONE : ds->dane ? ds->dane_fallback : ds->tls, NULL);
}

/* dest_pump - start connections for queued jobs, within the limits */
static void dest_pump(struct dest *ds)
{
    struct deliver *d = ds->d;
    if (!ds->qhead || ds->resolving || d->shutting_down)
        return;
    if (!ds->n_addrs || ds->addrs_until <= (int64_t)time_mono_ms()) {
        if (ds->n_conns == 0) {
            dest_resolve(ds);
            return;
        }
        if (!ds->n_addrs)
            return;
    }
    int64_t limit = d->cfg.settings->delivery_concurrency_per_route > 0
                        ? d->cfg.settings->delivery_concurrency_per_route : 10;
    while (ds->qhead && ds->n_conns < limit && (size_t)ds->n_connecting < ds->qlen) {
        struct slot *s = xcalloc(1, sizeof(*s));
        s->ds = ds;
        ds->n_conns++;
        ds->n_connecting++;
        slot_connect(s);
    }
}

/* --- attempts --- */

static enum smtp_client_tls tls_of(enum store_tls_mode m)
{
    switch (m) {
    case STORE_TLS_RELAXED: return SMTP_CLIENT_TLS_ENCRYPT;
    case STORE_TLS_STRICT: return SMTP_CLIENT_TLS_VERIFY;
    default: return SMTP_CLIENT_TLS_MAY;
    }
}

/* policy_tls - the client TLS mode an outbound TLS policy requires */
static enum smtp_client_tls policy_tls(const struct store_tls_policy *tp)
{
    switch (tp->mode) {
    case STORE_TLSP_ENCRYPT: return SMTP_CLIENT_TLS_ENCRYPT;
    case STORE_TLSP_VERIFY: return SMTP_CLIENT_TLS_VERIFY;
    case STORE_TLSP_DANE:
        /* each MX host is looked up with dane_lookup before connecting
         * (slot_connect: DANE_REQUIRED authenticates by the TLSA records,
         * DANE_ENCRYPT_ONLY encrypts, TEMPFAIL/BOGUS defer); this is the
         * level where DANE does not apply (insecure or no TLSA) */
        return tp->fallback == STORE_TLSP_VERIFY ? SMTP_CLIENT_TLS_VERIFY
             : tp->fallback == STORE_TLSP_ENCRYPT ? SMTP_CLIENT_TLS_ENCRYPT : SMTP_CLIENT_TLS_MAY;
    case STORE_TLSP_MTA_STS:
        /* the published policy decides (mode enforce: VERIFY and only the
         * MX hosts it names) at each resolution: sts_cb */
        return SMTP_CLIENT_TLS_MAY;
    default: return SMTP_CLIENT_TLS_MAY;
    }
}

/* dest_for - the destination of a recipient domain; NULL with *why when none */
static struct dest *dest_for(struct deliver *d, const char *domain, char *why, size_t whysz)
{
    char key[600], dom[300];
    str_copy(dom, sizeof(dom), domain);
    str_lower(dom);
    const struct store_domain *sd = NULL;
    if (d->cfg.snapshot && *d->cfg.snapshot)
        sd = store_snapshot_find(*d->cfg.snapshot, dom);
    if (sd) {
        if (!sd->route.host || !*sd->route.host) {
            /* internal but unrouted: wait for the administrator, never bounce */
            xsnprintf(why, whysz, "4.4.0 no delivery route for %s", sd->name);
            return NULL;
        }
        int port = sd->route.port > 0 ? sd->route.port : 25;
        xsnprintf(key, sizeof(key), "route:%s:%d:%d", sd->route.host, port, (int)sd->route.tls);
        return dest_get(d, key, false, sd->route.host, port, tls_of(sd->route.tls));
    }
    if (!dom[0]) {
        xsnprintf(why, whysz, "5.1.3 recipient address has no domain");
        return NULL;
    }
    int port = d->cfg.settings->delivery_port > 0 ? (int)d->cfg.settings->delivery_port : 25;
    const struct store_tls_policy *tp = NULL;
    if (d->cfg.snapshot && *d->cfg.snapshot)
        tp = store_snapshot_tls_policy(*d->cfg.snapshot, dom);
    enum smtp_client_tls want = tp ? policy_tls(tp) : SMTP_CLIENT_TLS_MAY;
    enum smtp_client_tls tls = tp && tp->enforced ? want : SMTP_CLIENT_TLS_MAY;
    /* the policy is part of the key: a changed policy gets a fresh destination */
    xsnprintf(key, sizeof(key), "mx:%s:%d:%s:%d:%d", dom, port,
              tp ? store_tls_policy_mode_name(tp->mode) : "-", tp && tp->enforced,
              tp ? (int)tp->fallback : 0);
    struct dest *ds = dest_get(d, key, true, dom, port, tls);
    if (tp && tp->enforced && tp->mode == STORE_TLSP_DANE) {
        ds->dane = true;
        ds->dane_fallback = want;
    }
    if (tp && !ds->policy_domain) {
        ds->policy_domain = xstrdup(tp->domain);
        ds->policy_mode = store_tls_policy_mode_name(tp->mode);
        ds->policy_enforced = tp->enforced;
        ds->report_tls = want;
        ds->report = !tp->enforced;
        if (tp->mode == STORE_TLSP_MTA_STS) {
            /* decided per resolution by the published policy (sts_cb) */
            ds->sts = true;
            ds->tls = SMTP_CLIENT_TLS_MAY;
            ds->report_tls = SMTP_CLIENT_TLS_MAY;
        }
    }
    return ds;
}

/* same_variant - recipients a and b may share a transaction: the same
 * envelope sender and the same forwarding header (issue 7) */
static bool same_variant(const struct spool_rcpt *a, const struct spool_rcpt *b)
{
    bool fa = a->fwd_for != NULL, fb = b->fwd_for != NULL;
    bool sa = a->sender != NULL, sb = b->sender != NULL;
    return fa == fb && sa == sb && (!fa || strcmp(a->fwd_for, b->fwd_for) == 0) &&
           (!sa || strcmp(a->sender, b->sender) == 0);
}

static struct job *job_new(struct dmsg *dm, struct dest *ds, size_t cap, const struct spool_rcpt *first)
{
    const struct spool_envelope *env = spool_msg_envelope(dm->m);
    struct job *j = xcalloc(1, sizeof(*j));
    j->dm = dm;
    j->ds = ds;
    j->idx = xcalloc(cap, sizeof(*j->idx));
    j->rc = xcalloc(cap, sizeof(*j->rc));
    j->msg.qid = dm->qid;
    j->msg.sender = env->sender;
    j->msg.rcpts = j->rc;
    j->msg.envid = env->envid;
    j->msg.ret = (int)env->ret;
    j->msg.flags = (env->flags & SPOOL_F_8BITMIME ? SMTP_MSG_8BIT : 0) |
                   (env->flags & SPOOL_F_SMTPUTF8 ? SMTP_MSG_SMTPUTF8 : 0);
    j->msg.size = env->size;
    j->msg.read = job_read;
    j->msg.read_arg = j;
    dkim_prefix(dm->d, dm, j);
    if (env->prefix != NULL) {
        j->hdr_len = strlen(env->prefix);
        j->msg.size += j->hdr_len;
    }
    if (first->sender != NULL)
        j->msg.sender = first->sender;
    if (first->fwd_for != NULL) {
        j->fwd_hdr = xasprintf("X-Moat-Forwarded-For: <%s>\r\n", first->fwd_for);
        j->fwd_len = strlen(j->fwd_hdr);
        j->msg.size += j->fwd_len;
    }
    return j;
}

/* attempt_start - send every pending recipient towards its destination */
static void attempt_start(struct deliver *d, struct dmsg *dm)
{
    const struct spool_envelope *env = spool_msg_envelope(dm->m);
    size_t n = env->n_rcpts;
    size_t max = d->cfg.settings->delivery_max_rcpts_per_txn > 0
                     ? (size_t)d->cfg.settings->delivery_max_rcpts_per_txn : 100;
    dm->busy = true;
    dm->attempts++;
    d->inflight_msgs++;
    d->stats.active++;
    memset(dm->outcome, OUT_NONE, n);
    dm->inflight = 1;   /* held until every job is handed out */
    /* group recipients by destination; jobs of one destination fill up in order */
    struct dest **dsts = xcalloc(n ? n : 1, sizeof(*dsts));
    for (size_t i = 0; i < n; i++) {
        if (env->rcpts[i].state != SPOOL_RCPT_PENDING)
            continue;
        char why[SMTP_DIAG_MAX];
        dsts[i] = dest_for(d, addr_domain(env->rcpts[i].addr), why, sizeof(why));
        if (!dsts[i]) {
            char diag[SMTP_DIAG_MAX];
            int code = why[0] == '5' ? 550 : 451;
            xsnprintf(diag, sizeof(diag), "%d %s", code, why);
            rcpt_result(d, dm, i, code, diag, NULL, NULL, NULL);
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!dsts[i])
            continue;
        struct dest *ds = dsts[i];
        struct job *j = NULL;
        const struct spool_rcpt *first = &env->rcpts[i];
        for (size_t k = i; k < n; k++) {
            if (dsts[k] != ds || !same_variant(first, &env->rcpts[k]))
                continue;
            if (!j)
                j = job_new(dm, ds, max, first);
            j->idx[j->n] = k;
            j->rc[j->n].addr = env->rcpts[k].addr;
            j->rc[j->n].orcpt = env->rcpts[k].orcpt;
            j->rc[j->n].notify = env->rcpts[k].notify;
            j->n++;
            dsts[k] = NULL;
            if (j->n == max) {
                j->msg.n_rcpts = j->n;
                dm->inflight++;
                dest_push(ds, j);
                j = NULL;
            }
        }
        if (j) {
            j->msg.n_rcpts = j->n;
            dm->inflight++;
            dest_push(ds, j);
        }
        dest_pump(ds);
    }
    free(dsts);
    if (--dm->inflight == 0)
        attempt_done(dm);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct deliver *d = arg;
    int64_t now = (int64_t)time_wall_ms();
    int started = 0;
    while (d->n_heap && d->heap[0]->next_ms <= now && started < DELIVER_BATCH &&
           d->inflight_msgs < DELIVER_MAX_INFLIGHT && !d->shutting_down) {
        struct dmsg *dm = d->heap[0];
        heap_remove(d, dm);
        attempt_start(d, dm);
        started++;
    }
    sched_arm(d);
}

/* --- DSNs --- */

struct dsn_ctx {
    struct deliver *d;
    struct dmsg *dm;
    size_t *failed;             /* recipients to mark FAILED once the DSN is durable */
    size_t n_failed;
    size_t n_reported;
    bool warned;                /* mark the delay warning sent */
    uint64_t size;              /* the DSN's octets (its QUEUED event) */
};

static void msg_after_attempt(struct deliver *d, struct dmsg *dm);

static void dsn_committed(void *arg, const char *dsn_qid, int status)
{
    struct dsn_ctx *x = arg;
    struct deliver *d = x->d;
    struct dmsg *dm = x->dm;
    const struct spool_envelope *env = spool_msg_envelope(dm->m);
    if (status == 0) {
        log_info("qid=%s event=dsn dsn_qid=%s rcpts=%zu failed=%zu%s", dm->qid, dsn_qid, x->n_reported,
                 x->n_failed, x->warned ? " delay_warning=yes" : "");
        d->stats.dsn_sent++;
        for (size_t k = 0; k < x->n_failed; k++) {
            size_t i = x->failed[k];
            spool_msg_set_rcpt(d->cfg.spool, dm->m, i, SPOOL_RCPT_FAILED, env->rcpts[i].diag);
            d->stats.bounced++;
            track_rcpt(dm, i, TRACK_BOUNCED, TRACK_FAILED, env->rcpts[i].diag, NULL, NULL);
        }
        deliver_track_msg(dm->qid, TRACK_DSN, NULL, dsn_qid);
        /* the DSN is a message of its own, generated here */
        struct track_event ev = { .kind = TRACK_QUEUED, .role = TRACK_ROLE_DSN, .sender = "",
                                  .rcpt = env->sender, .nrcpt = 1, .size = x->size,
                                  .detail = dm->qid };
        str_copy(ev.qid, sizeof(ev.qid), dsn_qid);
        track_emit(&ev);
        if (x->warned)
            spool_msg_set_warned(d->cfg.spool, dm->m);
    } else {
        /* not stored (disk full): the recipients stay pending and are tried
         * again; the bounce is produced by a later attempt */
        log_error("qid=%s event=dsn_failed reason=\"spool write failed\"", dm->qid);
    }
    free(x->failed);
    free(x);
    msg_after_attempt(d, dm);
}

/* read_original - the returned content: whole message or its header section */
static char *read_original(struct deliver *d, struct dmsg *dm, bool full, size_t *len)
{
    const struct spool_envelope *env = spool_msg_envelope(dm->m);
    size_t cap = full ? (size_t)env->size : (env->size < DELIVER_HEADERS_MAX ? (size_t)env->size : DELIVER_HEADERS_MAX);
    char *p = xmalloc(cap + 1);
    size_t got = 0;
    while (got < cap) {
        ssize_t r = spool_msg_read(d->cfg.spool, dm->m, got, p + got, cap - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    if (!full) {
        /* RFC 5322 2.1: the header section ends at the first empty line */
        for (size_t i = 0; i + 3 < got; i++) {
            if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n') {
                got = i + 2;
                break;
            }
        }
    }
    *len = got;
    return p;
}

/* send_dsn - build and inject one DSN; returns false when none is needed */
static bool send_dsn(struct deliver *d, struct dmsg *dm, const size_t *rc_idx, const enum dsn_action *acts,
                     size_t n, size_t *failed, size_t n_failed, bool warned)
{
    const struct spool_envelope *env = spool_msg_envelope(dm->m);
    int64_t now = (int64_t)time_wall_ms();
    struct dsn_rcpt *dr = xcalloc(n, sizeof(*dr));
    char (*status)[16] = xcalloc(n, sizeof(*status));
    bool any_failed = false;
    for (size_t k = 0; k < n; k++) {
        size_t i = rc_idx[k];
        const struct spool_rcpt *r = &env->rcpts[i];
        dr[k].addr = r->addr;
        dr[k].orcpt = r->orcpt;
        dr[k].action = acts[k];
        dr[k].diag = r->diag;
        dr[k].remote_mta = dm->remote[i];
        dr[k].last_attempt_ms = now;
        deliver_dsn_status(r->diag, code_of(r->diag), status[k], sizeof(status[k]));
        if (acts[k] == DSN_ACTION_DELIVERED)
            str_copy(status[k], sizeof(status[k]), "2.0.0");
        else if (acts[k] == DSN_ACTION_DELAYED && status[k][0] != '4')
            str_copy(status[k], sizeof(status[k]), "4.0.0");
        dr[k].status = status[k];
        any_failed |= acts[k] == DSN_ACTION_FAILED;
    }
    /* RFC 3461 4.3: RET=HDRS asks for headers only; without RET we return
     * the message when it is small; delay and success reports carry headers */
    bool full = any_failed && (env->ret == SPOOL_RET_FULL ? env->size <= DELIVER_DSN_FULL_MAX
                               : env->ret == SPOOL_RET_DEFAULT && env->size <= DELIVER_DSN_FULL_DEFAULT);
    size_t olen;
    char *orig = read_original(d, dm, full, &olen);
    char boundary[64], msgid[300];
    xsnprintf(boundary, sizeof(boundary), "%s.%lld/%s", dm->qid, (long long)now, "moat");
    xsnprintf(msgid, sizeof(msgid), "<%s.%lld.dsn@%.200s>", dm->qid, (long long)now, d->cfg.hostname);
    struct dsn_input in = {
        .reporting_mta = d->cfg.hostname,
        .qid = dm->qid,
        .envid = env->envid,
        .sender = env->sender,
        .arrival_ms = env->received_ms,
        .now_ms = now,
        .retry_until_ms = env->received_ms + d->cfg.settings->queue_lifetime * 1000,
        .boundary = boundary,
        .message_id = msgid,
        .rcpts = dr,
        .n_rcpts = n,
        .orig = orig,
        .orig_len = olen,
        .orig_full = full,
        .orig_8bit = (env->flags & SPOOL_F_8BITMIME) != 0,
    };
    struct buf b;
    buf_init(&b);
    deliver_dsn_build(&in, &b);
    free(orig);
    free(status);
    free(dr);

    struct spool_rcpt to = { .addr = env->sender, .notify = SPOOL_NOTIFY_NEVER };
    struct spool_envelope denv = {
        .sender = "",
        .rcpts = &to,
        .n_rcpts = 1,
        .client_addr = "127.0.0.1",
        .helo = (char *)d->cfg.hostname,
        .flags = SPOOL_F_BOUNCE | (in.orig_8bit && full ? SPOOL_F_8BITMIME : 0),
        .received_ms = now,
    };
    struct dsn_ctx *x = xcalloc(1, sizeof(*x));
    x->d = d;
    x->dm = dm;
    x->failed = failed;
    x->n_failed = n_failed;
    x->n_reported = n;
    x->warned = warned;
    x->size = b.len;
    spool_inject(d->cfg.spool, &denv, b.data, b.len, dsn_committed, x);
    buf_free(&b);
    return true;
}

static void shutdown_now(evutil_socket_t fd, short what, void *arg)
{
    struct deliver *d = arg;
    if (d->shutdown_done) {
        void (*done)(void *) = d->shutdown_done;
        d->shutdown_done = NULL;
        done(d->shutdown_arg);
    }
}

/* shutdown_schedule - call the shutdown callback once, from the loop */
static void shutdown_schedule(struct deliver *d)
{
    if (d->shutdown_scheduled || !d->shutdown_done)
        return;
    d->shutdown_scheduled = true;
    event_base_once(d->cfg.base, -1, EV_TIMEOUT, shutdown_now, d, NULL);
}

/* msg_after_attempt - finish the message or schedule its next attempt */
static void msg_after_attempt(struct deliver *d, struct dmsg *dm)
{
    const struct spool_envelope *env = spool_msg_envelope(dm->m);
    dm->busy = false;
    d->inflight_msgs--;
    d->stats.active--;
    bool pending = false;
    for (size_t i = 0; i < env->n_rcpts; i++)
        pending |= env->rcpts[i].state == SPOOL_RCPT_PENDING;
    if (!pending || dm->deleted) {
        if (dm->deleted)
            log_info("qid=%s event=deleted", dm->qid);
        finish(d, dm);
    } else if (!d->shutting_down) {
        const struct moat_settings *s = d->cfg.settings;
        unsigned k = dm->attempts ? dm->attempts - 1 : 0;
        int64_t delay = s->n_retry_schedule > 0
                            ? s->retry_schedule[k < (unsigned)s->n_retry_schedule ? k : (unsigned)s->n_retry_schedule - 1]
                            : 300;
        int64_t next = (int64_t)time_wall_ms() + delay * 1000;
        /* never retry past the expiry: the last attempt happens at expiry */
        int64_t expiry = env->received_ms + s->queue_lifetime * 1000;
        if (next > expiry && expiry > (int64_t)time_wall_ms())
            next = expiry;
        sched_at(d, dm, next);
    }
    if (d->shutting_down && d->inflight_msgs == 0)
        shutdown_schedule(d);
    sched_arm(d);
}

static bool notify_allows(unsigned notify, unsigned bit)
{
    if (notify & SPOOL_NOTIFY_NEVER)
        return false;
    if (notify == 0)   /* RFC 3461 4.1: default FAILURE (and DELAY at our discretion) */
        return bit == SPOOL_NOTIFY_FAILURE || bit == SPOOL_NOTIFY_DELAY;
    return (notify & bit) != 0;
}

/* attempt_done - every job of the attempt is back */
static void attempt_done(struct dmsg *dm)
{
    struct deliver *d = dm->d;
    struct spool *sp = d->cfg.spool;
    const struct spool_envelope *env = spool_msg_envelope(dm->m);
    const struct moat_settings *s = d->cfg.settings;
    int64_t now = (int64_t)time_wall_ms();
    size_t n = env->n_rcpts;
    bool can_dsn = env->sender[0] != '\0' && !(env->flags & SPOOL_F_BOUNCE);
    bool expired = now - env->received_ms >= s->queue_lifetime * 1000;

    size_t *rep = xcalloc(n ? n : 1, sizeof(*rep));
    enum dsn_action *act = xcalloc(n ? n : 1, sizeof(*act));
    size_t *failed = xcalloc(n ? n : 1, sizeof(*failed));
    size_t n_rep = 0, n_failed = 0;
    bool want_delay = false;

    for (size_t i = 0; i < n; i++) {
        const struct spool_rcpt *r = &env->rcpts[i];
        if (dm->outcome[i] == OUT_DEFERRED || (r->state == SPOOL_RCPT_PENDING && dm->outcome[i] == OUT_NONE)) {
            if (expired) {
                /* RFC 5321 4.5.4.1: give up after the queue lifetime */
                char diag[SMTP_DIAG_MAX], life[32];
                if (s->queue_lifetime % 86400 == 0)
                    xsnprintf(life, sizeof(life), "%lld days", (long long)(s->queue_lifetime / 86400));
                else if (s->queue_lifetime % 3600 == 0)
                    xsnprintf(life, sizeof(life), "%lld hours", (long long)(s->queue_lifetime / 3600));
                else
                    xsnprintf(life, sizeof(life), "%lld seconds", (long long)s->queue_lifetime);
                xsnprintf(diag, sizeof(diag), "4.4.7 delivery time expired after %s; last error: %s", life,
                          r->diag ? r->diag : "none");
                spool_msg_set_rcpt(sp, dm->m, i, SPOOL_RCPT_PENDING, diag);
                log_info("qid=%s event=expired rcpt=<%s> diag=\"%s\"", dm->qid, r->addr, diag);
                dm->outcome[i] = OUT_FAILED;
            }
        }
        if (dm->outcome[i] == OUT_FAILED) {
            if (can_dsn && notify_allows(r->notify, SPOOL_NOTIFY_FAILURE)) {
                rep[n_rep] = i;
                act[n_rep++] = DSN_ACTION_FAILED;
                failed[n_failed++] = i;
            } else {
                spool_msg_set_rcpt(sp, dm->m, i, SPOOL_RCPT_FAILED, r->diag);
                d->stats.bounced++;
                track_rcpt(dm, i, TRACK_BOUNCED, TRACK_FAILED, r->diag, NULL, NULL);
                if (!can_dsn)
                    log_info("qid=%s event=bounce_suppressed rcpt=<%s> reason=\"%s\"", dm->qid, r->addr,
                             env->sender[0] ? "message is a DSN" : "null sender");
            }
        } else if (dm->outcome[i] == OUT_DELIVERED) {
            if (can_dsn && (r->notify & SPOOL_NOTIFY_SUCCESS) && !(r->notify & SPOOL_NOTIFY_NEVER)) {
                rep[n_rep] = i;
                act[n_rep++] = DSN_ACTION_DELIVERED;
            }
        }
    }
    /* one delay warning per message (RFC 3464 2.3.3 "delayed") */
    if (!expired && can_dsn && !env->warned && s->delay_warning_after > 0 &&
        now - env->received_ms >= s->delay_warning_after * 1000) {
        for (size_t i = 0; i < n; i++) {
            if (env->rcpts[i].state == SPOOL_RCPT_PENDING && dm->outcome[i] != OUT_FAILED &&
                notify_allows(env->rcpts[i].notify, SPOOL_NOTIFY_DELAY)) {
                rep[n_rep] = i;
                act[n_rep++] = DSN_ACTION_DELAYED;
                want_delay = true;
            }
        }
    }
    free(dm->outcome);
    dm->outcome = xcalloc(n ? n : 1, 1);
    if (n_rep && !dm->deleted) {
        send_dsn(d, dm, rep, act, n_rep, failed, n_failed, want_delay);
        free(rep);
        free(act);
        return;   /* continues in dsn_committed */
    }
    free(rep);
    free(act);
    free(failed);
    msg_after_attempt(d, dm);
}

/* --- the listener --- */

static void on_message(void *arg, struct spool_msg *m)
{
    struct deliver *d = arg;
    const struct spool_envelope *env = spool_msg_envelope(m);
    struct dmsg *dm = xcalloc(1, sizeof(*dm));
    dm->d = d;
    dm->m = m;
    str_copy(dm->qid, sizeof(dm->qid), spool_msg_id(m));
    dm->heap_idx = SIZE_MAX;
    dm->outcome = xcalloc(env->n_rcpts ? env->n_rcpts : 1, 1);
    dm->remote = xcalloc(env->n_rcpts ? env->n_rcpts : 1, sizeof(*dm->remote));
    spool_msg_set_user(m, dm);
    if (env->flags & SPOOL_F_JOURNAL) {
        /* a journal report is archived (the spool keeps it until then), never
         * relayed: nothing to deliver, no DSN */
        log_info("qid=%s event=journal_accepted client=%s rcpts=%zu", dm->qid,
                 env->client_addr ? env->client_addr : "", env->n_rcpts);
        finish(d, dm);
        return;
    }
    bool pending = false;
    for (size_t i = 0; i < env->n_rcpts; i++)
        pending |= env->rcpts[i].state == SPOOL_RCPT_PENDING;
    if (!pending) {
        /* recovered after its last outcome but before its DONE record */
        finish(d, dm);
        return;
    }
    if (env->hold != NULL) {
        /* quarantined: kept durably in the spool, delivered only once released */
        dm->held = true;
        log_info("qid=%s event=held reason=\"%s\"", dm->qid, env->hold);
        return;
    }
    sched_at(d, dm, (int64_t)time_wall_ms());
}

/* --- public --- */

struct deliver *deliver_create(const struct deliver_config *cfg, struct error *err)
{
    if (!cfg->base || !cfg->settings || !cfg->spool) {
        error_set(err, "deliver", "deliver_create needs an event base, settings and a spool");
        return NULL;
    }
    struct deliver *d = xcalloc(1, sizeof(*d));
    d->cfg = *cfg;
    if (!d->cfg.hostname || !*d->cfg.hostname)
        d->cfg.hostname = cfg->settings->hostname && *cfg->settings->hostname ? cfg->settings->hostname : "localhost";
    d->ccfg.base = cfg->base;
    d->ccfg.tls_ctx = cfg->tls_client;
    d->ccfg.helo_name = d->cfg.hostname;
    if (cfg->workers && cfg->dns)
        d->mtasts = mtasts_create(cfg->dns, cfg->workers, cfg->settings);
    /* the timeouts are filled in per connection (slot_connect): they may change at run time */
    d->timer = evtimer_new(cfg->base, timer_cb, d);
    d->gc_ev = event_new(cfg->base, -1, 0, gc_cb, d);
    if (!d->timer || !d->gc_ev) {
        error_set(err, "deliver", "cannot create the scheduler events");
        if (d->timer)
            event_free(d->timer);
        free(d);
        return NULL;
    }
    return d;
}

static void held_start(struct deliver *d);

void deliver_start(struct deliver *d)
{
    d->started = true;
    spool_set_listener(d->cfg.spool, on_message, d);
    held_start(d);
}


void deliver_shutdown(struct deliver *d, void (*done)(void *arg), void *arg)
{
    d->shutting_down = true;
    d->shutdown_done = done;
    d->shutdown_arg = arg;
    evtimer_del(d->timer);
    if (d->held_ev)
        evtimer_del(d->held_ev);
    if (d->cfg.spool)
        spool_set_listener(d->cfg.spool, NULL, NULL);
    /* queued jobs that have no connection yet are given back as deferred */
    for (size_t b = 0; b < d->n_dbuckets; b++)
        for (struct dest *ds = d->dbuckets[b]; ds; ds = ds->hnext) {
            if (ds->resolving)
                dest_clear_resolution(ds);
            struct job *j;
            while ((j = dest_pop(ds)))
                job_fail_all(d, j, 451, "4.3.2 delivery stopped: shutting down", NULL);
        }
    log_info("event=deliver_shutdown in_flight=%zu", d->inflight_msgs);
    if (d->inflight_msgs == 0)
        shutdown_schedule(d);
}

static int free_user(void *arg, struct spool_msg *m)
{
    struct dmsg *dm = spool_msg_user(m);
    if (dm) {
        spool_msg_set_user(m, NULL);
        dmsg_free(dm);
    }
    return 0;
}

void deliver_free(struct deliver *d)
{
    if (!d)
        return;
    if (d->cfg.spool) {
        spool_set_listener(d->cfg.spool, NULL, NULL);
        spool_foreach(d->cfg.spool, free_user, d);
    }
    for (size_t b = 0; b < d->n_dbuckets; b++) {
        struct dest *ds = d->dbuckets[b];
        while (ds) {
            struct dest *nx = ds->hnext;
            dest_destroy(ds);
            ds = nx;
        }
    }
    free(d->dbuckets);
    free(d->heap);
    mtasts_free(d->mtasts);
    if (d->timer)
        event_free(d->timer);
    if (d->gc_ev)
        event_free(d->gc_ev);
    if (d->held_ev)
        event_free(d->held_ev);
    free(d);
}

void deliver_get_stats(const struct deliver *d, struct deliver_stats *out)
{
    *out = d->stats;
}

/* --- queue administration --- */

/* msg_is_held - quarantined: only the held-mail functions below see it */
static bool msg_is_held(struct spool_msg *m)
{
    const struct dmsg *dm = spool_msg_user(m);
    return dm != NULL ? dm->held : spool_msg_envelope(m)->hold != NULL;
}

static json_t *msg_json(struct deliver *d, struct spool_msg *m)
{
    const struct spool_envelope *env = spool_msg_envelope(m);
    struct dmsg *dm = spool_msg_user(m);
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(spool_msg_id(m)));
    json_object_set_new(o, "sender", json_string(env->sender));
    /* times are unix seconds, like every other time in the API */
    json_object_set_new(o, "received", json_integer((json_int_t)(env->received_ms / 1000)));
    json_object_set_new(o, "size", json_integer((json_int_t)env->size));
    json_object_set_new(o, "bounce", json_boolean(env->flags & SPOOL_F_BOUNCE));
    json_t *rc = json_array();
    for (size_t i = 0; i < env->n_rcpts; i++) {
        const struct spool_rcpt *r = &env->rcpts[i];
        json_t *x = json_object();
        json_object_set_new(x, "addr", json_string(r->addr));
        json_object_set_new(x, "state", json_string(r->state == SPOOL_RCPT_PENDING ? "pending"
                                                    : r->state == SPOOL_RCPT_DELIVERED ? "delivered" : "failed"));
        json_object_set_new(x, "diag", r->diag ? json_string(r->diag) : json_null());
        json_array_append_new(rc, x);
    }
    json_object_set_new(o, "rcpts", rc);
    json_object_set_new(o, "attempts", json_integer(dm ? dm->attempts : 0));
    if (dm && dm->heap_idx != SIZE_MAX) {
        json_object_set_new(o, "next_attempt", json_integer((json_int_t)(dm->next_ms / 1000)));
    } else {
        json_object_set_new(o, "next_attempt", json_null());
    }
    json_object_set_new(o, "in_progress", json_boolean(dm && dm->busy));
    json_object_set_new(o, "last_error", dm && dm->last_error ? json_string(dm->last_error) : json_null());
    return o;
}

struct list_ctx {
    struct deliver *d;
    json_t *arr;
    size_t limit;
    const char *cursor;
    bool passed;
};

static int list_one(void *arg, struct spool_msg *m)
{
    struct list_ctx *x = arg;
    if (!x->passed) {
        if (strcmp(spool_msg_id(m), x->cursor) == 0)
            x->passed = true;
        return 0;
    }
    if (msg_is_held(m))
        return 0;    /* held mail has its own list (deliver_held_list) */
    json_array_append_new(x->arr, msg_json(x->d, m));
    return json_array_size(x->arr) >= x->limit;
}

json_t *deliver_queue_list(struct deliver *d, size_t limit, const char *cursor)
{
    struct list_ctx x = { .d = d, .arr = json_array(), .limit = limit ? limit : 100,
                          .cursor = cursor, .passed = cursor == NULL || *cursor == '\0' };
    spool_foreach(d->cfg.spool, list_one, &x);
    return x.arr;
}

json_t *deliver_queue_show(struct deliver *d, const char *qid)
{
    struct spool_msg *m = spool_msg_find(d->cfg.spool, qid);
    if (!m || msg_is_held(m))
        return NULL;
    json_t *o = msg_json(d, m);
    const struct spool_envelope *env = spool_msg_envelope(m);
    size_t cap = env->size < 65536 ? (size_t)env->size : 65536, got = 0;
    char *p = xmalloc(cap + 1);
    while (got < cap) {
        ssize_t r = spool_msg_read(d->cfg.spool, m, got, p + got, cap - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    for (size_t i = 0; i + 3 < got; i++)
        if (memcmp(p + i, "\r\n\r\n", 4) == 0) {
            got = i + 2;
            break;
        }
    json_t *h = json_stringn(p, got);
    if (!h) {
        /* not UTF-8: show the octets above 127 as '?' */
        for (size_t i = 0; i < got; i++)
            if ((unsigned char)p[i] >= 0x80 || p[i] == '\0')
                p[i] = '?';
        h = json_stringn(p, got);
    }
    json_object_set_new(o, "headers", h ? h : json_string(""));
    json_object_set_new(o, "client_addr", json_string(env->client_addr));
    json_object_set_new(o, "helo", json_string(env->helo));
    free(p);
    return o;
}

struct retry_ctx {
    struct deliver *d;
    int n;
};

static int retry_one(void *arg, struct spool_msg *m)
{
    struct retry_ctx *x = arg;
    struct dmsg *dm = spool_msg_user(m);
    if (dm && !dm->busy && !dm->held) {
        sched_at(x->d, dm, (int64_t)time_wall_ms());
        x->n++;
    }
    return 0;
}

int deliver_queue_retry(struct deliver *d, const char *qid)
{
    struct retry_ctx x = { .d = d };
    if (qid) {
        struct spool_msg *m = spool_msg_find(d->cfg.spool, qid);
        if (m)
            retry_one(&x, m);
        return x.n;
    }
    spool_foreach(d->cfg.spool, retry_one, &x);
    return x.n;
}

int deliver_queue_delete(struct deliver *d, const char *qid)
{
    struct spool_msg *m = spool_msg_find(d->cfg.spool, qid);
    if (!m || msg_is_held(m))
        return 0;
    struct dmsg *dm = spool_msg_user(m);
    if (dm && dm->busy) {
        dm->deleted = true;   /* finished when the attempt ends */
        return 1;
    }
    log_info("qid=%s event=deleted", qid);
    if (dm) {
        finish(d, dm);
    } else {
        spool_msg_done(d->cfg.spool, m);
    }
    return 1;
}

/* --- held (quarantined) mail, issue 7 ---
 * A held message is a live spool message whose envelope carries a hold
 * reason; on_message never schedules it.  Release appends a RELEASE record
 * (spool_msg_release) and schedules the message only once that record is
 * durable; delete and purge finish it without a DSN. */

#define HELD_PREVIEW_READ (256 * 1024)   /* octets of the message read for show */
#define HELD_PREVIEW_TEXT (32 * 1024)    /* octets of decoded text shown */
#define HELD_HEADERS_MAX (64 * 1024)
#define HELD_PURGE_MAX_MS (60 * 1000)    /* the purge check runs at least this often */

/* json_text - octets as a JSON string, bytes that are not UTF-8 shown as '?' */
static json_t *json_text(char *p, size_t n)
{
    json_t *j = json_stringn(p, n);
    if (j != NULL)
        return j;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] >= 0x80 || p[i] == '\0')
            p[i] = '?';
    j = json_stringn(p, n);
    return j ? j : json_string("");
}

static json_t *held_json(struct spool_msg *m)
{
    const struct spool_envelope *env = spool_msg_envelope(m);
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(spool_msg_id(m)));
    json_object_set_new(o, "sender", json_string(env->sender));
    json_t *rc = json_array();
    for (size_t i = 0; i < env->n_rcpts; i++)
        if (env->rcpts[i].state == SPOOL_RCPT_PENDING)
            json_array_append_new(rc, json_string(env->rcpts[i].addr));
    json_object_set_new(o, "rcpts", rc);
    json_object_set_new(o, "received", json_integer((json_int_t)(env->received_ms / 1000)));
    json_object_set_new(o, "size", json_integer((json_int_t)env->size));
    json_object_set_new(o, "reason", json_string(env->hold ? env->hold : ""));
    return o;
}

struct held_list_ctx {
    json_t *arr;
    size_t limit;
    const char *cursor;
    bool passed;
};

static int held_list_one(void *arg, struct spool_msg *m)
{
    struct held_list_ctx *x = arg;
    if (!x->passed) {
        if (strcmp(spool_msg_id(m), x->cursor) == 0)
            x->passed = true;
        return 0;
    }
    if (!msg_is_held(m))
        return 0;
    json_array_append_new(x->arr, held_json(m));
    return json_array_size(x->arr) >= x->limit;
}

json_t *deliver_held_list(struct deliver *d, size_t limit, const char *cursor)
{
    struct held_list_ctx x = { .arr = json_array(), .limit = limit ? limit : 100, .cursor = cursor,
                               .passed = cursor == NULL || *cursor == '\0' };
    spool_foreach(d->cfg.spool, held_list_one, &x);
    return x.arr;
}

/* held_find - the live held message qid, or NULL */
static struct spool_msg *held_find(struct deliver *d, const char *qid)
{
    struct spool_msg *m = spool_msg_find(d->cfg.spool, qid);
    return m != NULL && msg_is_held(m) ? m : NULL;
}

json_t *deliver_held_show(struct deliver *d, const char *qid)
{
    struct spool_msg *m = held_find(d, qid);
    if (m == NULL)
        return NULL;
    const struct spool_envelope *env = spool_msg_envelope(m);
    json_t *o = held_json(m);
    json_object_set_new(o, "client_addr", json_string(env->client_addr));
    json_object_set_new(o, "helo", json_string(env->helo));
    size_t cap = env->size < HELD_PREVIEW_READ ? (size_t)env->size : HELD_PREVIEW_READ, got = 0;
    char *p = xmalloc(cap + 1);
    while (got < cap) {
        ssize_t r = spool_msg_read(d->cfg.spool, m, got, p + got, cap - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    struct buf text = { 0 };
    bool found = held_text_preview(p, got, HELD_PREVIEW_TEXT, &text);
    json_object_set_new(o, "text", found ? json_text(text.data ? text.data : "", text.len) : json_null());
    json_object_set_new(o, "text_truncated", json_boolean(found && text.len >= HELD_PREVIEW_TEXT));
    buf_free(&text);
    size_t hl = held_header_section(p, got);
    if (hl > HELD_HEADERS_MAX)
        hl = HELD_HEADERS_MAX;
    json_object_set_new(o, "headers", json_text(p, hl));
    free(p);
    return o;
}

/* held_message_id - the Message-ID header of m (for the released list), or NULL */
static char *held_message_id(struct deliver *d, struct spool_msg *m)
{
    char p[16384];
    size_t got = 0;
    while (got < sizeof p - 1) {
        ssize_t r = spool_msg_read(d->cfg.spool, m, got, p + got, sizeof p - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    p[got] = '\0';
    size_t hl = held_header_section(p, got);
    for (size_t i = 0; i < hl; i++) {
        if ((i == 0 || p[i - 1] == '\n') && strncasecmp(p + i, "Message-ID:", 11) == 0) {
            const char *v = p + i + 11;
            v += strspn(v, " \t");
            size_t n = strcspn(v, "\r\n");
            return n > 0 ? xstrndup(v, n) : NULL;
        }
    }
    return NULL;
}

static void held_released(void *arg, const char *qid, int status)
{
    struct deliver *d = arg;
    struct spool_msg *m = spool_msg_find(d->cfg.spool, qid);
    struct dmsg *dm = m ? spool_msg_user(m) : NULL;
    if (status < 0) {
        log_error("qid=%s event=held_release_failed", qid);   /* still held */
        return;
    }
    log_info("qid=%s event=held_released", qid);
    if (dm != NULL) {
        dm->held = false;
        if (!d->shutting_down)
            sched_at(d, dm, (int64_t)time_wall_ms());
    }
}

int deliver_held_release(struct deliver *d, const char *qid, char **message_id)
{
    if (message_id)
        *message_id = NULL;
    struct spool_msg *m = held_find(d, qid);
    /* the envelope's hold is cleared at once (spool_msg_release): a second
     * release while the first is being synced finds nothing to do; the
     * message stays out of the queue until the record is durable */
    if (m == NULL || spool_msg_envelope(m)->hold == NULL)
        return 0;
    if (message_id)
        *message_id = held_message_id(d, m);
    spool_msg_release(d->cfg.spool, m, held_released, d);
    return 1;
}

/* held_drop - finish a held message without a DSN */
static void held_drop(struct deliver *d, struct spool_msg *m)
{
    struct dmsg *dm = spool_msg_user(m);
    if (dm)
        finish(d, dm);
    else
        spool_msg_done(d->cfg.spool, m);
}

int deliver_held_delete(struct deliver *d, const char *qid)
{
    struct spool_msg *m = held_find(d, qid);
    if (m == NULL)
        return 0;
    log_info("qid=%s event=held_deleted", qid);
    held_drop(d, m);
    return 1;
}

struct purge_ctx {
    struct deliver *d;
    int64_t cutoff_ms;
    size_t n;
};

static int purge_one(void *arg, struct spool_msg *m)
{
    struct purge_ctx *x = arg;
    const struct spool_envelope *env = spool_msg_envelope(m);
    if (!msg_is_held(m) || env->hold == NULL || env->received_ms > x->cutoff_ms)
        return 0;    /* env->hold NULL: a release is being synced */
    log_info("qid=%s event=held_purged from=<%s> reason=\"%s\"", spool_msg_id(m), env->sender,
             env->hold);
    deliver_track_msg(spool_msg_id(m), TRACK_DELETED, "", "held_lifetime passed");
    held_drop(x->d, m);   /* spool_foreach already took the next message */
    x->n++;
    return 0;
}

size_t deliver_held_purge(struct deliver *d)
{
    struct purge_ctx x = { .d = d,
                           .cutoff_ms = (int64_t)time_wall_ms() - d->cfg.settings->held_lifetime * 1000 };
    spool_foreach(d->cfg.spool, purge_one, &x);
    return x.n;
}

static void held_arm(struct deliver *d)
{
    int64_t ms = d->cfg.settings->held_lifetime * 1000 / 4;
    if (ms > HELD_PURGE_MAX_MS)
        ms = HELD_PURGE_MAX_MS;
    if (ms < 500)
        ms = 500;
    struct timeval tv = { .tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000 };
    evtimer_add(d->held_ev, &tv);
}

static void held_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct deliver *d = arg;
    (void)fd;
    (void)what;
    if (d->shutting_down)
        return;
    deliver_held_purge(d);
    held_arm(d);
}

static void held_start(struct deliver *d)
{
    if (d->held_ev == NULL)
        d->held_ev = evtimer_new(d->cfg.base, held_timer_cb, d);
    if (d->held_ev != NULL)
        held_arm(d);
}
