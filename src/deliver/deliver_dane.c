/*
 * deliver_dane.c - DANE for SMTP (RFC 7672): per MX host, whether the TLS
 * handshake must be authenticated by TLSA records, and with which.
 *
 * dane_lookup asks, in parallel, for the host's A and AAAA records (their
 * DNSSEC status decides whether TLSA may be used, RFC 7672 2.2.2) and for
 * the TLSA RRset at _<port>._tcp.<host> (RFC 7672 2.2.3); dane_decide, a
 * pure function, turns the answers into a dane_state:
 *
 *   MX RRset insecure                        -> not applicable (fallback)
 *   address lookup bogus / tempfail          -> bogus / tempfail (defer)
 *   address records insecure                 -> not applicable
 *   TLSA bogus / tempfail                    -> bogus / tempfail (defer)
 *   TLSA NXDOMAIN / NODATA / insecure        -> not applicable
 *   TLSA secure, >= 1 usable record          -> required (authenticate)
 *   TLSA secure, every record unusable       -> encrypt only (RFC 7672 2.2)
 *
 * Usable: DANE-TA(2) and DANE-EE(3) with a known selector and matching type
 * and the right data length; PKIX-TA(0)/PKIX-EE(1) are unusable for SMTP
 * (RFC 7672 3.1.3).  TLSA base domain (RFC 7672 2.2.2): when the host's
 * address answer followed a secure CNAME chain, TLSA is looked up at the
 * chain's final name too, and used from there unless that name has none
 * (then the MX host name's records apply).
 *
 * deliver_dane_probe serves the TLS policy probe: MX lookup, dane_lookup per
 * host, and for DANE_REQUIRED a test connection (STARTTLS authenticated by
 * TLSA, then QUIT) that reports "TLSA match" or "TLSA mismatch".
 *
 * Entry points: dane_lookup, dane_lookup_cancel, dane_decide,
 * dane_tlsa_usable, dane_state_name, deliver_dane_probe(_cancel).
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <event2/event.h>
#include <jansson.h>
#include "../core/core.h"
#include "../dns/dns.h"
#include "../smtp/smtp_client.h"
#include "deliver_dane.h"

const char *dane_state_name(enum dane_state s)
{
    switch (s) {
    case DANE_REQUIRED: return "required";
    case DANE_ENCRYPT_ONLY: return "encrypt-only";
    case DANE_NOT_APPLICABLE: return "not-applicable";
    case DANE_TEMPFAIL: return "tempfail";
    case DANE_BOGUS: return "bogus";
    }
    return "unknown";
}

bool dane_tlsa_usable(const struct dane_tlsa *t)
{
    if (t->usage != DANE_USAGE_DANE_TA && t->usage != DANE_USAGE_DANE_EE)
        return false;
    if (t->selector != DANE_SELECTOR_CERT && t->selector != DANE_SELECTOR_SPKI)
        return false;
    switch (t->mtype) {
    case DANE_MTYPE_FULL: return t->len > 0 && t->len <= DANE_TLSA_MAX_DATA;
    case DANE_MTYPE_SHA256: return t->len == 32;
    case DANE_MTYPE_SHA512: return t->len == 64;
    default: return false;
    }
}

static struct dane_tlsa tlsa_of(const struct dns_record *rr)
{
    struct dane_tlsa t = { .usage = rr->usage, .selector = rr->selector, .mtype = rr->mtype,
                           .len = rr->data_len, .data = rr->data };
    return t;
}

/* failure of a lookup that must be known: bogus and tempfail both defer */
static bool lookup_failed(const struct dns_result *r, const char *what, enum dane_state *st,
                          char *why, size_t why_size)
{
    if (r->status == DNS_BOGUS) {
        *st = DANE_BOGUS;
        xsnprintf(why, why_size, "%s lookup bogus: %s", what, r->why[0] ? r->why : "DNSSEC validation failed");
        return true;
    }
    if (r->status == DNS_TEMPFAIL) {
        *st = DANE_TEMPFAIL;
        xsnprintf(why, why_size, "%s lookup failed: %s", what, r->why[0] ? r->why : "no answer");
        return true;
    }
    return false;
}

enum dane_state dane_decide(bool mx_secure, const struct dns_result *addr,
                            const struct dns_result *tlsa, char *why, size_t why_size)
{
    enum dane_state st;
    if (!mx_secure) {
        xsnprintf(why, why_size, "insecure: MX records not DNSSEC-validated");
        return DANE_NOT_APPLICABLE;
    }
    if (addr) {
        if (lookup_failed(addr, "address", &st, why, why_size))
            return st;
        if (addr->status == DNS_OK && !addr->secure) {
            xsnprintf(why, why_size, "insecure: address records not DNSSEC-validated");
            return DANE_NOT_APPLICABLE;
        }
    }
    if (!tlsa) {
        xsnprintf(why, why_size, "no TLSA lookup");
        return DANE_NOT_APPLICABLE;
    }
    if (lookup_failed(tlsa, "TLSA", &st, why, why_size))
        return st;
    if (tlsa->status == DNS_NXDOMAIN || tlsa->status == DNS_NODATA) {
        xsnprintf(why, why_size, "no TLSA records (%s%s)", tlsa->secure ? "secure " : "insecure ",
                  dns_status_name(tlsa->status));
        return DANE_NOT_APPLICABLE;
    }
    if (!tlsa->secure) {
        xsnprintf(why, why_size, "insecure: TLSA records not DNSSEC-validated");
        return DANE_NOT_APPLICABLE;
    }
    size_t usable = 0;
    for (size_t i = 0; i < tlsa->n; i++) {
        struct dane_tlsa t = tlsa_of(&tlsa->rr[i]);
        if (dane_tlsa_usable(&t))
            usable++;
    }
    if (usable == 0) {
        xsnprintf(why, why_size, "TLSA secure, all %zu records unusable: encryption without authentication",
                  tlsa->n);
        return DANE_ENCRYPT_ONLY;
    }
    xsnprintf(why, why_size, "TLSA secure, %zu of %zu records usable", usable, tlsa->n);
    return DANE_REQUIRED;
}

int deliver_dane_level(enum dane_state st, enum smtp_client_tls fallback, enum smtp_client_tls *out)
{
    switch (st) {
    case DANE_REQUIRED: *out = SMTP_CLIENT_TLS_DANE; return 0;
    case DANE_ENCRYPT_ONLY: *out = SMTP_CLIENT_TLS_ENCRYPT; return 0;
    case DANE_NOT_APPLICABLE: *out = fallback; return 0;
    case DANE_TEMPFAIL:
    case DANE_BOGUS:
        break;
    }
    return -1;
}

void deliver_dane_diag(const char *domain, const char *conn_diag, char *dst, size_t size)
{
    const char *rest = conn_diag;
    char code[16] = "4.7.5";
    /* the connection's enhanced status code: a security one (4.7.x, e.g.
     * 4.7.4 "TLS not offered") is kept, any other becomes 4.7.5 */
    const char *sp = strchr(rest, ' ');
    if (rest[0] == '4' && rest[1] == '.' && sp) {
        if (rest[2] == '7' && rest[3] == '.' && (size_t)(sp - rest) < sizeof(code))
            xsnprintf(code, sizeof(code), "%.*s", (int)(sp - rest), rest);
        rest = sp + 1;
    }
    xsnprintf(dst, size, "%s TLS policy \"dane\" for %s: %s", code, domain, rest);
}

/* --- the lookup --- */

enum { Q_A, Q_AAAA, Q_TLSA, Q_TLSA_FINAL, Q_N };

struct dane_lookup {
    struct dns *dns;
    dane_cb cb;
    void *arg;
    bool mx_secure;
    int port;
    char host[256];
    char final[256];             /* the host's CNAME target (secure chain), "" if none */
    struct dns_query *q[Q_N];
    int pending, addr_pending;
    struct event *later;         /* answer without queries (MX insecure) */
    /* the answers kept: status, secure, why; TLSA records copied */
    struct dns_result addr;      /* A and AAAA merged */
    bool addr_seen;
    struct dns_result tlsa[2];   /* at the MX host name, at the final name */
    bool tlsa_seen[2];
};

static void lookup_free(struct dane_lookup *l)
{
    for (int i = 0; i < Q_N; i++)
        if (l->q[i])
            dns_cancel(l->dns, l->q[i]);
    if (l->later)
        event_free(l->later);
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < l->tlsa[k].n; i++)
            dns_record_clear(&l->tlsa[k].rr[i]);
        free(l->tlsa[k].rr);
    }
    free(l);
}

/* pick - RFC 7672 2.2.2: with a secure CNAME chain the final name is the
 * TLSA base domain; where it has no TLSA records, the MX host name is */
static int pick(struct dane_lookup *l, struct dane_answer *a)
{
    const struct dns_result *addr = l->addr_seen ? &l->addr : NULL;
    if (l->tlsa_seen[1]) {
        a->state = dane_decide(l->mx_secure, addr, &l->tlsa[1], a->why, sizeof(a->why));
        if (a->state != DANE_NOT_APPLICABLE ||
            (l->tlsa[1].status == DNS_OK && !l->tlsa[1].secure))
            return 1;
    }
    a->state = dane_decide(l->mx_secure, addr, l->tlsa_seen[0] ? &l->tlsa[0] : NULL, a->why, sizeof(a->why));
    return 0;
}

static void lookup_finish(struct dane_lookup *l)
{
    struct dane_answer a = { 0 };
    int k = pick(l, &a);
    str_copy(a.base, sizeof(a.base), k ? l->final : l->host);
    struct dane_tlsa *usable = NULL;
    if (a.state == DANE_REQUIRED) {
        usable = xcalloc(l->tlsa[k].n, sizeof(*usable));
        for (size_t i = 0; i < l->tlsa[k].n && a.n < DANE_TLSA_MAX_RECORDS; i++) {
            struct dane_tlsa t = tlsa_of(&l->tlsa[k].rr[i]);
            if (dane_tlsa_usable(&t))
                usable[a.n++] = t;
        }
        a.tlsa = usable;
    }
    log_debug("event=dane_lookup host=%s base=%s state=%s records=%zu why=\"%s\"", l->host, a.base,
              dane_state_name(a.state), a.n, a.why);
    l->cb(l->arg, &a);
    free(usable);
    lookup_free(l);
}

/* merge_addr - A and AAAA into one verdict: a failure of either wins, then
 * "insecure" if any answer with data was not validated */
static void merge_addr(struct dane_lookup *l, const struct dns_result *r)
{
    struct dns_result *m = &l->addr;
    if (r->status == DNS_OK && r->secure && r->canon && !l->final[0])
        str_copy(l->final, sizeof(l->final), r->canon);
    if (!l->addr_seen) {
        l->addr_seen = true;
        m->status = r->status;
        m->secure = r->secure;
        str_copy(m->why, sizeof(m->why), r->why);
        return;
    }
    static const int rank[] = { [DNS_OK] = 2, [DNS_NXDOMAIN] = 1, [DNS_NODATA] = 1, [DNS_TEMPFAIL] = 3,
                                [DNS_BOGUS] = 4 };
    if (rank[r->status] > rank[m->status]) {
        m->status = r->status;
        m->secure = r->secure;
        str_copy(m->why, sizeof(m->why), r->why);
    } else if (r->status == DNS_OK && m->status == DNS_OK) {
        m->secure = m->secure && r->secure;
    }
}

static void keep_tlsa(struct dane_lookup *l, int k, const struct dns_result *r)
{
    struct dns_result *t = &l->tlsa[k];
    l->tlsa_seen[k] = true;
    t->status = r->status;
    t->secure = r->secure;
    str_copy(t->why, sizeof(t->why), r->why);
    size_t n = r->n < DANE_TLSA_MAX_RECORDS ? r->n : DANE_TLSA_MAX_RECORDS;
    t->rr = xcalloc(n ? n : 1, sizeof(*t->rr));
    for (size_t i = 0; i < n; i++) {
        struct dns_record *d = &t->rr[i];
        const struct dns_record *s = &r->rr[i];
        d->usage = s->usage;
        d->selector = s->selector;
        d->mtype = s->mtype;
        d->data_len = s->data_len;
        d->data = xmalloc(s->data_len ? s->data_len : 1);
        memcpy(d->data, s->data, s->data_len);
        d->text = xstrdup(s->text ? s->text : "");
    }
    t->n = n;
}

static void on_tlsa_final(void *arg, const struct dns_result *r);

static bool tlsa_name(char *dst, size_t size, int port, const char *host)
{
    return xsnprintf(dst, size, "_%d._tcp.%s", port > 0 ? port : 25, host) >= 0;
}

static void on_answer(struct dane_lookup *l, int which, const struct dns_result *r)
{
    l->q[which] = NULL;
    if (which == Q_TLSA || which == Q_TLSA_FINAL) {
        keep_tlsa(l, which == Q_TLSA_FINAL, r);
    } else {
        merge_addr(l, r);
        /* both address answers in: a secure CNAME chain adds the TLSA
         * lookup at the final name (libunbound caches the rest) */
        char tname[300];
        if (--l->addr_pending == 0 && l->final[0] && l->addr.status == DNS_OK && l->addr.secure &&
            tlsa_name(tname, sizeof(tname), l->port, l->final)) {
            l->pending++;
            l->q[Q_TLSA_FINAL] = dns_query(l->dns, tname, DNS_T_TLSA, on_tlsa_final, l);
        }
    }
    if (--l->pending == 0)
        lookup_finish(l);
}

static void on_a(void *arg, const struct dns_result *r) { on_answer(arg, Q_A, r); }
static void on_aaaa(void *arg, const struct dns_result *r) { on_answer(arg, Q_AAAA, r); }
static void on_tlsa(void *arg, const struct dns_result *r) { on_answer(arg, Q_TLSA, r); }
static void on_tlsa_final(void *arg, const struct dns_result *r) { on_answer(arg, Q_TLSA_FINAL, r); }

static void on_later(evutil_socket_t fd, short what, void *arg)
{
    lookup_finish(arg);
}

struct dane_lookup *dane_lookup(struct dns *dns, const char *mx_host, int port, bool mx_secure,
                                dane_cb cb, void *arg)
{
    struct dane_lookup *l = xcalloc(1, sizeof(*l));
    l->dns = dns;
    l->cb = cb;
    l->arg = arg;
    l->mx_secure = mx_secure;
    l->port = port;
    str_copy(l->host, sizeof(l->host), mx_host ? mx_host : "");
    if (!mx_secure) {
        /* RFC 7672 2.2.1: an insecure MX RRset: DANE does not apply, no queries */
        static const struct timeval now = { 0, 0 };
        l->later = evtimer_new(dns_event_base(dns), on_later, l);
        if (!l->later || evtimer_add(l->later, &now) < 0)
            log_fatal("event=dane_defer_failed");
        return l;
    }
    char tname[300];
    if (!tlsa_name(tname, sizeof(tname), port, l->host))
        tname[0] = '\0';   /* dns_query answers TEMPFAIL "invalid query name" */
    l->pending = 3;
    l->addr_pending = 2;
    l->q[Q_A] = dns_query(dns, l->host, DNS_T_A, on_a, l);
    l->q[Q_AAAA] = dns_query(dns, l->host, DNS_T_AAAA, on_aaaa, l);
    l->q[Q_TLSA] = dns_query(dns, tname, DNS_T_TLSA, on_tlsa, l);
    return l;
}

void dane_lookup_cancel(struct dane_lookup *l)
{
    if (l)
        lookup_free(l);
}

/* --- the probe --- */

#define PROBE_MAX_MX 10

struct probe_host {
    struct deliver_dane_probe *p;
    size_t i;
    char host[256];
    struct dane_lookup *dl;
    struct smtp_conn *conn;
    struct dns_query *aq;
    struct dane_tlsa *tlsa;      /* copies for the test connection */
    size_t n_tlsa;
    char base[256];
    enum dane_state state;
    char result[64];
    char detail[SMTP_DIAG_MAX];
    bool done;
};

struct deliver_dane_probe {
    struct dns *dns;
    struct smtp_client_config cc;
    int port;
    char domain[256];
    deliver_dane_probe_cb cb;
    void *arg;
    struct dns_query *mxq;
    bool mx_secure;
    struct probe_host *hosts;
    size_t n_hosts, n_done;
    struct event *later;
    bool failed;
    char fail_why[300];
};

static void tlsa_copies_free(struct probe_host *h)
{
    for (size_t i = 0; i < h->n_tlsa; i++)
        free(h->tlsa[i].data);
    free(h->tlsa);
    h->tlsa = NULL;
    h->n_tlsa = 0;
}

static void probe_free(struct deliver_dane_probe *p)
{
    if (p->mxq)
        dns_cancel(p->dns, p->mxq);
    for (size_t i = 0; i < p->n_hosts; i++) {
        struct probe_host *h = &p->hosts[i];
        dane_lookup_cancel(h->dl);
        if (h->aq)
            dns_cancel(p->dns, h->aq);
        if (h->conn)
            smtp_conn_free(h->conn);
        tlsa_copies_free(h);
    }
    free(p->hosts);
    if (p->later)
        event_free(p->later);
    free(p);
}

static void probe_report(struct deliver_dane_probe *p)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < p->n_hosts; i++) {
        struct probe_host *h = &p->hosts[i];
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s}", "mx", h->host, "state",
                                             dane_state_name(h->state), "result", h->result,
                                             "detail", h->detail));
    }
    if (p->failed)
        json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s}", "mx", "", "state", "tempfail",
                                             "result", "no MX host", "detail", p->fail_why));
    char *text = json_dumps(arr, JSON_COMPACT);
    json_decref(arr);
    p->cb(p->arg, !p->failed, text ? text : "[]");
    free(text);
    probe_free(p);
}

static void host_done(struct probe_host *h, const char *result, const char *detail)
{
    struct deliver_dane_probe *p = h->p;
    str_copy(h->result, sizeof(h->result), result);
    str_copy(h->detail, sizeof(h->detail), detail ? detail : "");
    h->done = true;
    if (++p->n_done == p->n_hosts)
        probe_report(p);
}

static void probe_conn_ready(void *arg, struct smtp_conn *c, enum smtp_conn_error err, int code, const char *diag)
{
    struct probe_host *h = arg;
    h->conn = NULL;
    if (err == SMTP_CONN_OK) {
        char d[SMTP_DIAG_MAX];
        xsnprintf(d, sizeof(d), "%s: %s", smtp_conn_peer(c), smtp_conn_dane(c) ? smtp_conn_dane(c) : "");
        smtp_conn_quit(c);
        host_done(h, "TLSA match", d);
    } else if (err == SMTP_CONN_TLS && strstr(diag, "TLSA mismatch")) {
        host_done(h, "TLSA mismatch", diag);
    } else {
        host_done(h, "unreachable", diag);
    }
}

static void probe_addr_cb(void *arg, const struct dns_result *r)
{
    struct probe_host *h = arg;
    struct deliver_dane_probe *p = h->p;
    h->aq = NULL;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)p->port) };
    if (r->status != DNS_OK || inet_pton(AF_INET, r->rr[0].text, &sa.sin_addr) != 1) {
        tlsa_copies_free(h);
        host_done(h, "unreachable", "no IPv4 address to test the TLSA records against");
        return;
    }
    h->conn = smtp_conn_open_dane(&p->cc, (struct sockaddr *)&sa, sizeof(sa), h->host, h->base, h->tlsa,
                                  h->n_tlsa, probe_conn_ready, h);
}

static void probe_dane_cb(void *arg, const struct dane_answer *a)
{
    struct probe_host *h = arg;
    h->dl = NULL;
    h->state = a->state;
    switch (a->state) {
    case DANE_REQUIRED:
        h->tlsa = xcalloc(a->n, sizeof(*h->tlsa));
        for (size_t i = 0; i < a->n; i++) {
            h->tlsa[i] = a->tlsa[i];
            h->tlsa[i].data = xmalloc(a->tlsa[i].len);
            memcpy(h->tlsa[i].data, a->tlsa[i].data, a->tlsa[i].len);
        }
        h->n_tlsa = a->n;
        str_copy(h->base, sizeof(h->base), a->base);
        h->aq = dns_query(h->p->dns, h->host, DNS_T_A, probe_addr_cb, h);
        break;
    case DANE_ENCRYPT_ONLY: host_done(h, "encrypt only", a->why); break;
    case DANE_NOT_APPLICABLE: host_done(h, "insecure: fallback", a->why); break;
    case DANE_TEMPFAIL: host_done(h, "tempfail", a->why); break;
    case DANE_BOGUS: host_done(h, "bogus", a->why); break;
    }
}

static void probe_start_hosts(struct deliver_dane_probe *p)
{
    for (size_t i = 0; i < p->n_hosts; i++) {
        struct probe_host *h = &p->hosts[i];
        h->p = p;
        h->i = i;
        h->dl = dane_lookup(p->dns, h->host, p->port, p->mx_secure, probe_dane_cb, h);
    }
}

static int cmp_pref(const void *a, const void *b)
{
    const struct dns_record *x = *(const struct dns_record *const *)a, *y = *(const struct dns_record *const *)b;
    return x->pref - y->pref;
}

static void probe_mx_cb(void *arg, const struct dns_result *r)
{
    struct deliver_dane_probe *p = arg;
    p->mxq = NULL;
    p->mx_secure = r->secure;
    if (r->status == DNS_OK) {
        const struct dns_record *sorted[PROBE_MAX_MX];
        size_t n = 0;
        for (size_t i = 0; i < r->n && n < PROBE_MAX_MX; i++)
            if (r->rr[i].text[0])
                sorted[n++] = &r->rr[i];
        qsort(sorted, n, sizeof(*sorted), cmp_pref);
        p->hosts = xcalloc(n ? n : 1, sizeof(*p->hosts));
        for (size_t i = 0; i < n; i++)
            str_copy(p->hosts[i].host, sizeof(p->hosts[i].host), sorted[i]->text);
        p->n_hosts = n;
    } else if (r->status == DNS_NODATA) {
        /* RFC 5321 5.1: the domain is its own MX */
        p->hosts = xcalloc(1, sizeof(*p->hosts));
        str_copy(p->hosts[0].host, sizeof(p->hosts[0].host), p->domain);
        p->n_hosts = 1;
    }
    if (p->n_hosts == 0) {
        p->failed = true;
        xsnprintf(p->fail_why, sizeof(p->fail_why), "MX lookup for %s: %s%s%s", p->domain,
                  dns_status_name(r->status), r->why[0] ? ": " : "", r->why);
        probe_report(p);
        return;
    }
    probe_start_hosts(p);
}

struct deliver_dane_probe *deliver_dane_probe(struct dns *dns, const struct smtp_client_config *cc,
                                              const char *domain, int port,
                                              deliver_dane_probe_cb cb, void *arg)
{
    struct deliver_dane_probe *p = xcalloc(1, sizeof(*p));
    p->dns = dns;
    p->cc = *cc;
    p->port = port > 0 ? port : 25;
    p->cb = cb;
    p->arg = arg;
    str_copy(p->domain, sizeof(p->domain), domain);
    p->mxq = dns_query(dns, p->domain, DNS_T_MX, probe_mx_cb, p);
    return p;
}

void deliver_dane_probe_cancel(struct deliver_dane_probe *p)
{
    if (p)
        probe_free(p);
}
