/*
 * policy_antispoof.c - anti-spoofing (issue 7 item 1): inbound mail may not
 * claim to come from one of our own (internal) domains.
 *
 *   RCPT      the envelope sender (MAIL FROM) under an internal domain is
 *             refused with 550 5.7.1 at every RCPT of the transaction (the
 *             answer only depends on the sender, the client and the
 *             snapshot, so it is the same for each; RCPT rather than MAIL so
 *             the FCrDNS lookup can be asynchronous and pipelined replies
 *             stay in order).
 *   DATA_END  the header From (policy_msg.c) under an internal domain is
 *             refused with 550 5.7.1 before the commit.  A From that names
 *             no single author (several From fields, several addresses, an
 *             unparseable address: RFC 7489 6.6.1) gets the strictest
 *             treatment, the same refusal; a message without From is left
 *             to the content checks.
 *
 * Never for the outbound role (an authorised outbound host or an
 * authenticated session): that mail is ours.  Bypasses (store_antispoof.c,
 * in the snapshot) except a source for one internal domain or all:
 *   ip    the client address is in the range;
 *   host  the client's forward-confirmed reverse DNS name (PTR, then A/AAAA
 *         of that name must contain the client address) matches;
 *   spf   the envelope sender's domain is the bypass value: the mail goes on
 *         and the content stage (SPF, policy_content_spf.c) refuses it with the same 550 5.7.1
 *         unless SPF passes for that domain (req->antispoof_spf_out).
 *
 * FCrDNS answers are cached per client address (AS_TTL_MS; a failure only
 * briefly) in a bounded table; a lookup is started at RCPT whenever host
 * bypasses exist, and waited for only when the envelope sender is internal.
 * Waiters resume through policy_pending_retry, so the check runs again with
 * a fresh request and reads the cache.  An unknown answer (resolver failure)
 * when only a host bypass could help gives 451 4.4.3, never 550.
 *
 * Candidates: every refusal is remembered per client address (count,
 * first/last seen, spoofed domains, PTR name when looked up) in a bounded
 * table (antispoof_candidates_max, least recently seen forgotten first), for
 * the API and `moat antispoof candidates`.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <event2/event.h>
#include "../core/core.h"
#include "../core/cidr.h"
#include "../dns/dns.h"
#include "policy_priv.h"

#define AS_CACHE_MAX 1024           /* FCrDNS answers remembered */
#define AS_TTL_MS (5 * 60 * 1000)   /* a complete answer */
#define AS_FAIL_TTL_MS (30 * 1000)  /* a resolver failure */
#define AS_PTR_MAX 4                /* PTR names checked per address */

enum fc_state { FC_PENDING, FC_DONE };

struct fc_waiter {
    struct fc_waiter *next;
    struct policy_pending *p;
};

struct fc_entry;
struct fc_fwd {                      /* one forward lookup of a PTR name */
    struct fc_entry *e;
    struct dns_query *q;
    char name[256];
    bool confirmed, done;
};

struct fc_entry {
    struct policy_antispoof *a;
    bool used;
    char addr[64];
    int family;
    unsigned char bin[16];
    enum fc_state state;
    bool tempfail;                   /* the resolver could not answer */
    char ptr[256];                   /* the first PTR name, "" = none */
    char confirmed[256];             /* the first forward-confirmed name, "" = none */
    uint64_t expires_ms, last_ms;
    struct dns_query *q;             /* the PTR query */
    struct fc_fwd fwd[AS_PTR_MAX];
    size_t n_fwd, fwd_left;
    struct fc_waiter *waiters;
};

struct policy_antispoof {
    struct event_base *base;
    struct dns *dns;
    const struct moat_settings *set;
    struct fc_entry *cache;          /* AS_CACHE_MAX slots */
    struct policy_antispoof_candidate *cand;   /* antispoof_candidates_max slots, lazily */
    size_t n_cand, cap_cand;
};

/* --- helpers --- */

static const char *addr_domain(const char *addr)
{
    if (addr == NULL || addr[0] == '\0')
        return NULL;
    const char *at = strrchr(addr, '@');
    return at != NULL && at[1] != '\0' ? at + 1 : NULL;
}

static bool is_inbound(const struct policy_request *req)
{
    return req->antispoof != NULL && req->antispoof->set->antispoof && !req->outbound_host &&
           req->auth_user == NULL;
}

static void verdict_spoof(struct policy_verdict *out, const char *what, const char *dom,
                          const char *client)
{
    policy_verdict_set(out, POLICY_REJECT, 550, "5.7.1", "rejected by anti-spoofing policy");
    xsnprintf(out->reason, sizeof out->reason, "%s %.100s from %.46s (no bypass)", what, dom,
              client);
}

/* --- candidates --- */

static const struct fc_entry *fc_get(struct policy_antispoof *a, const char *client,
                                     struct policy_pending *p, bool *pending, bool *unknown);

static void candidate_note(struct policy_antispoof *a, const char *client, const char *dom)
{
    size_t max = (size_t)a->set->antispoof_candidates_max;
    int64_t now = (int64_t)time(NULL);
    struct policy_antispoof_candidate *c = NULL;
    for (size_t i = 0; i < a->n_cand && c == NULL; i++)
        if (strcmp(a->cand[i].addr, client) == 0)
            c = &a->cand[i];
    if (c == NULL) {
        if (a->n_cand < max) {
            if (a->n_cand == a->cap_cand) {
                a->cap_cand = a->cap_cand ? a->cap_cand * 2 : 16;
                a->cand = xreallocarray(a->cand, a->cap_cand, sizeof *a->cand);
            }
            c = &a->cand[a->n_cand++];
        } else {
            c = &a->cand[0];        /* full: forget the source seen least recently */
            for (size_t i = 1; i < a->n_cand; i++)
                if (a->cand[i].last_seen < c->last_seen)
                    c = &a->cand[i];
        }
        memset(c, 0, sizeof *c);
        (void)str_copy(c->addr, sizeof c->addr, client);
        c->first_seen = now;
    }
    c->count++;
    c->last_seen = now;
    bool known = false;
    for (size_t i = 0; i < c->n_domains && !known; i++)
        known = str_ieq(c->domains[i], dom);
    if (!known && c->n_domains < POLICY_ANTISPOOF_DOMAINS_MAX &&
        str_copy(c->domains[c->n_domains], sizeof c->domains[0], dom) >= 0)
        str_lower(c->domains[c->n_domains++]);
    /* its host name for the list (and a one-step host bypass): look it up
     * now, without waiting; policy_antispoof_candidates reads the answer */
    bool pending, unknown;
    (void)fc_get(a, client, NULL, &pending, &unknown);
}

/* candidate_host - the PTR name of a candidate, when a lookup answered */
static void candidate_host(const struct policy_antispoof *a, struct policy_antispoof_candidate *c)
{
    for (size_t i = 0; i < AS_CACHE_MAX; i++) {
        const struct fc_entry *e = &a->cache[i];
        if (e->used && e->state == FC_DONE && strcmp(e->addr, c->addr) == 0) {
            bool conf = e->confirmed[0] != '\0';
            (void)str_copy(c->host, sizeof c->host, conf ? e->confirmed : e->ptr);
            c->host_confirmed = conf;
            return;
        }
    }
}

static int cmp_cand(const void *x, const void *y)
{
    const struct policy_antispoof_candidate *a = x, *b = y;
    return a->last_seen < b->last_seen ? 1 : a->last_seen > b->last_seen ? -1
           : strcmp(a->addr, b->addr);
}

size_t policy_antispoof_candidates(const struct policy_antispoof *a,
                                   struct policy_antispoof_candidate **out)
{
    *out = NULL;
    if (a == NULL || a->n_cand == 0)
        return 0;
    *out = xcalloc(a->n_cand, sizeof **out);
    memcpy(*out, a->cand, a->n_cand * sizeof **out);
    for (size_t i = 0; i < a->n_cand; i++)
        candidate_host(a, &(*out)[i]);
    qsort(*out, a->n_cand, sizeof **out, cmp_cand);
    return a->n_cand;
}

bool policy_antispoof_candidate_forget(struct policy_antispoof *a, const char *addr)
{
    for (size_t i = 0; a != NULL && i < a->n_cand; i++)
        if (strcmp(a->cand[i].addr, addr) == 0) {
            a->cand[i] = a->cand[--a->n_cand];
            return true;
        }
    return false;
}

/* --- forward-confirmed reverse DNS --- */

/* reverse_name - "4.3.2.1.in-addr.arpa" / nibbles ".ip6.arpa" */
static void reverse_name(int family, const unsigned char *b, char *out, size_t size)
{
    if (family == AF_INET) {
        xsnprintf(out, size, "%u.%u.%u.%u.in-addr.arpa", b[3], b[2], b[1], b[0]);
        return;
    }
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (int i = 15; i >= 0 && o + 4 < size; i--) {
        out[o++] = hex[b[i] & 0xf];
        out[o++] = '.';
        out[o++] = hex[b[i] >> 4];
        out[o++] = '.';
    }
    out[o] = '\0';
    (void)str_copy(out + o, size - o, "ip6.arpa");
}

static void fc_finish(struct fc_entry *e)
{
    e->state = FC_DONE;
    e->q = NULL;
    for (size_t i = 0; i < e->n_fwd; i++)
        if (e->fwd[i].confirmed && e->confirmed[0] == '\0')
            (void)str_copy(e->confirmed, sizeof e->confirmed, e->fwd[i].name);
    e->expires_ms = time_mono_ms() + (e->tempfail && e->confirmed[0] == '\0' ? AS_FAIL_TTL_MS
                                                                             : AS_TTL_MS);
    log_info("event=fcrdns client=%s ptr=\"%s\" confirmed=\"%s\"%s", e->addr, e->ptr, e->confirmed,
             e->tempfail ? " dns=tempfail" : "");
    struct fc_waiter *w = e->waiters;
    e->waiters = NULL;
    while (w != NULL) {
        struct fc_waiter *next = w->next;
        policy_pending_retry(w->p);
        free(w);
        w = next;
    }
}

static void fc_fwd_cb(void *arg, const struct dns_result *r)
{
    struct fc_fwd *f = arg;
    struct fc_entry *e = f->e;
    f->q = NULL;
    f->done = true;
    if (r->status == DNS_TEMPFAIL || r->status == DNS_BOGUS)
        e->tempfail = true;
    for (size_t i = 0; r->status == DNS_OK && i < r->n; i++) {
        int fam;
        unsigned char b[16];
        if (cidr_addr_from_text(r->rr[i].text, &fam, b) == 0 && fam == e->family &&
            memcmp(b, e->bin, fam == AF_INET ? 4 : 16) == 0)
            f->confirmed = true;
    }
    if (--e->fwd_left == 0)
        fc_finish(e);
}

static void fc_ptr_cb(void *arg, const struct dns_result *r)
{
    struct fc_entry *e = arg;
    e->q = NULL;
    if (r->status == DNS_TEMPFAIL || r->status == DNS_BOGUS)
        e->tempfail = true;
    if (r->status != DNS_OK || r->n == 0) {
        fc_finish(e);
        return;
    }
    (void)str_copy(e->ptr, sizeof e->ptr, r->rr[0].text);
    for (size_t i = 0; i < r->n && e->n_fwd < AS_PTR_MAX; i++) {
        struct fc_fwd *f = &e->fwd[e->n_fwd];
        memset(f, 0, sizeof *f);
        f->e = e;
        if (str_copy(f->name, sizeof f->name, r->rr[i].text) < 0 || f->name[0] == '\0')
            continue;
        e->n_fwd++;
    }
    e->fwd_left = e->n_fwd;
    if (e->n_fwd == 0) {
        fc_finish(e);
        return;
    }
    /* the answers arrive later, from the loop (dns.h) */
    for (size_t i = 0; i < e->n_fwd; i++)
        e->fwd[i].q = dns_query(e->a->dns, e->fwd[i].name,
                                e->family == AF_INET ? DNS_T_A : DNS_T_AAAA, fc_fwd_cb, &e->fwd[i]);
}

/* fc_slot - the entry for addr, or a free or reusable slot; NULL when the
 * table is full of lookups in flight */
static struct fc_entry *fc_lookup(struct policy_antispoof *a, const char *addr, bool *fresh)
{
    uint64_t now = time_mono_ms();
    struct fc_entry *free_slot = NULL, *oldest = NULL;
    *fresh = false;
    for (size_t i = 0; i < AS_CACHE_MAX; i++) {
        struct fc_entry *e = &a->cache[i];
        if (!e->used) {
            if (free_slot == NULL)
                free_slot = e;
            continue;
        }
        if (strcmp(e->addr, addr) == 0) {
            if (e->state == FC_PENDING || e->expires_ms > now) {
                e->last_ms = now;
                return e;
            }
            free_slot = e;           /* expired: look again in the same slot */
            break;
        }
        if (e->state == FC_DONE && (oldest == NULL || e->last_ms < oldest->last_ms))
            oldest = e;
    }
    struct fc_entry *e = free_slot ? free_slot : oldest;
    if (e == NULL)
        return NULL;
    memset(e, 0, sizeof *e);
    e->a = a;
    e->used = true;
    e->last_ms = now;
    *fresh = true;
    (void)str_copy(e->addr, sizeof e->addr, addr);
    return e;
}

/* fc_get - the FCrDNS answer for the client; starts a lookup when there is
 * none.  NULL while pending (p, when given, then waits) or when no lookup
 * can be made (no resolver, not an address, table full): *unknown */
static const struct fc_entry *fc_get(struct policy_antispoof *a, const char *client,
                                     struct policy_pending *p, bool *pending, bool *unknown)
{
    *pending = *unknown = false;
    int fam;
    unsigned char bin[16];
    if (a->dns == NULL || cidr_addr_from_text(client, &fam, bin) < 0) {
        *unknown = true;
        return NULL;
    }
    bool fresh;
    struct fc_entry *e = fc_lookup(a, client, &fresh);
    if (e == NULL) {
        *unknown = true;
        return NULL;
    }
    if (fresh) {
        e->family = fam;
        memcpy(e->bin, bin, sizeof bin);
        e->state = FC_PENDING;
        char rev[80];
        reverse_name(fam, bin, rev, sizeof rev);
        e->q = dns_query(a->dns, rev, DNS_T_PTR, fc_ptr_cb, e);
    }
    if (e->state == FC_DONE)
        return e;
    *pending = true;
    if (p != NULL) {
        struct fc_waiter *w = xcalloc(1, sizeof *w);
        w->p = p;
        w->next = e->waiters;
        e->waiters = w;
    }
    return NULL;
}

struct policy_antispoof *policy_antispoof_create(struct event_base *base, struct dns *dns,
                                                 const struct moat_settings *settings)
{
    struct policy_antispoof *a = xcalloc(1, sizeof *a);
    a->base = base;
    a->dns = dns;
    a->set = settings;
    a->cache = xcalloc(AS_CACHE_MAX, sizeof *a->cache);
    return a;
}

void policy_antispoof_free(struct policy_antispoof *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < AS_CACHE_MAX; i++) {
        struct fc_entry *e = &a->cache[i];
        if (!e->used || e->state != FC_PENDING)
            continue;
        if (e->q != NULL)
            dns_cancel(a->dns, e->q);
        for (size_t j = 0; j < e->n_fwd; j++)
            if (e->fwd[j].q != NULL)
                dns_cancel(a->dns, e->fwd[j].q);
        struct fc_waiter *w = e->waiters;
        while (w != NULL) {
            struct fc_waiter *next = w->next;
            struct policy_verdict v = { .action = POLICY_DUNNO };
            policy_pending_done(w->p, &v);   /* cancelled by now: only frees */
            free(w);
            w = next;
        }
    }
    free(a->cache);
    free(a->cand);
    free(a);
}

/* --- the decision --- */

enum bypass_answer { BYPASS_NONE, BYPASS_YES, BYPASS_SPF, BYPASS_WAIT, BYPASS_UNKNOWN };

/* bypass_find - does a bypass except this client for the spoofed internal
 * domain?  p: wait for FCrDNS when a host bypass could apply */
static enum bypass_answer bypass_find(const struct policy_request *req, const char *spoofed,
                                      struct policy_pending *p, const char **why)
{
    size_t n;
    const struct store_antispoof_bypass *b = store_snapshot_antispoof(req->snapshot, &n);
    const char *env = addr_domain(req->sender);
    bool host = false, spf = false;
    int fam;
    unsigned char bin[16];
    bool have_addr = cidr_addr_from_text(req->client_addr, &fam, bin) == 0;
    for (size_t i = 0; i < n; i++) {
        if (!store_antispoof_domain_applies(b[i].domain, spoofed))
            continue;
        switch (b[i].kind) {
        case STORE_ANTISPOOF_IP:
            if (have_addr && b[i].cidr.family != 0 && cidr_contains_addr(&b[i].cidr, fam, bin)) {
                *why = b[i].value;
                return BYPASS_YES;
            }
            break;
        case STORE_ANTISPOOF_HOST:
            host = true;
            break;
        case STORE_ANTISPOOF_SPF:
            if (env != NULL && str_ieq(b[i].value, env))
                spf = true;
            break;
        }
    }
    bool unknown = false;
    if (host) {
        bool pending;
        const struct fc_entry *e = fc_get(req->antispoof, req->client_addr, p, &pending, &unknown);
        if (pending)
            return p != NULL ? BYPASS_WAIT : BYPASS_UNKNOWN;
        for (size_t i = 0; e != NULL && e->confirmed[0] && i < n; i++)
            if (b[i].kind == STORE_ANTISPOOF_HOST && store_antispoof_domain_applies(b[i].domain, spoofed) &&
                store_antispoof_host_matches(b[i].value, e->confirmed)) {
                *why = b[i].value;
                return BYPASS_YES;
            }
        if (e != NULL && e->tempfail && e->confirmed[0] == '\0')
            unknown = true;
    }
    if (spf) {
        *why = env;
        return BYPASS_SPF;
    }
    return unknown ? BYPASS_UNKNOWN : BYPASS_NONE;
}

/* decide - the verdict for a sender/author domain under an internal domain */
static void decide(const struct policy_request *req, struct policy_verdict *out,
                   struct policy_pending *p, const char *what, const char *dom)
{
    const struct store_domain *internal = store_snapshot_find(req->snapshot, dom);
    if (internal == NULL)
        return;
    const char *why = "";
    switch (bypass_find(req, internal->name, p, &why)) {
    case BYPASS_YES:
        log_info("event=antispoof_bypass check=antispoof client=%s %s=%s bypass=\"%s\"",
                 req->client_addr, what[0] == 'e' ? "sender_domain" : "header_from", dom, why);
        return;
    case BYPASS_SPF:
        if (req->antispoof_spf_out != NULL)
            (void)str_copy(req->antispoof_spf_out, 256, why);
        log_info("event=antispoof_bypass check=antispoof client=%s domain=%s bypass=spf "
                 "spf_domain=%s action=spf_required", req->client_addr, dom, why);
        return;
    case BYPASS_WAIT:
        out->action = POLICY_PENDING;
        return;
    case BYPASS_UNKNOWN:
        policy_verdict_set(out, POLICY_TEMPFAIL, 451, "4.4.3",
                           "anti-spoofing: cannot confirm the client's host name, try again later");
        xsnprintf(out->reason, sizeof out->reason,
                  "%s %.100s from %.46s: host name unconfirmed (DNS)", what, dom, req->client_addr);
        return;
    case BYPASS_NONE:
        verdict_spoof(out, what, dom, req->client_addr);
        candidate_note(req->antispoof, req->client_addr, dom);
        return;
    }
}

void policy_check_antispoof_rcpt(const struct policy_request *req, struct policy_verdict *out,
                                 struct policy_pending *p)
{
    if (!is_inbound(req) || req->snapshot == NULL)
        return;
    const char *dom = addr_domain(req->sender);
    if (dom != NULL && store_snapshot_find(req->snapshot, dom) != NULL) {
        decide(req, out, p, "envelope sender", dom);
        return;
    }
    /* not spoofed here; start the FCrDNS lookup the end of DATA may need
     * (host bypasses for the header From), without waiting */
    size_t n;
    const struct store_antispoof_bypass *b = store_snapshot_antispoof(req->snapshot, &n);
    for (size_t i = 0; i < n; i++)
        if (b[i].kind == STORE_ANTISPOOF_HOST) {
            bool pending, unknown;
            (void)fc_get(req->antispoof, req->client_addr, NULL, &pending, &unknown);
            break;
        }
}

void policy_check_antispoof_data_end(const struct policy_request *req, struct policy_verdict *out)
{
    if (!is_inbound(req) || req->snapshot == NULL)
        return;
    if (req->header_from == NULL) {
        if (req->header_from_fields == 0)
            return;          /* names no author: nothing claims to be ours */
        /* RFC 7489 6.6.1: not exactly one author domain -> the strictest treatment */
        policy_verdict_set(out, POLICY_REJECT, 550, "5.7.1",
                           "rejected by anti-spoofing policy: the From header must name exactly "
                           "one author");
        xsnprintf(out->reason, sizeof out->reason,
                  "header From with %d field(s) and not exactly one address from %.46s",
                  req->header_from_fields, req->client_addr);
        return;
    }
    decide(req, out, NULL, "header from", req->header_from);
}
