/*
 * connect_outbound.c - the outbound task: "Set up your outbound email".
 *
 * What it configures lives elsewhere (authorised outbound hosts and SMTP
 * AUTH accounts: `moat outbound ...`; DKIM keys: `moat dkim ...`); the task
 * reads it live and verifies it against reality:
 *   1. relaying is refused to a stranger: Moat connects to its own listener
 *      from a local address that is NOT authorised (the organisation's probe
 *      source, else a loopback address outside every authorised range) and
 *      asks to relay to an external address: it must get 5xx at MAIL or RCPT
 *      (an acceptance is an open relay, the worst failure there is);
 *   2. relaying works for an authorised host: from a local address inside an
 *      authorised range, the same transaction is accepted, and with a test
 *      recipient (task input) a real test message goes out; when no
 *      authorised range holds an address of this machine, the check relies on
 *      the outbound relays Moat has accepted since it started (the SMTP
 *      server's counters, through env->outbound_seen);
 *   3. SPF: each internal domain's SPF record (TXT v=spf1), resolved live,
 *      must authorise Moat's public addresses (organisation task) with ip4:
 *      or ip6: terms; the record to publish is the current one with the
 *      missing addresses inserted before its `all` term (or redirect=);
 *   4. DKIM: for each domain with an active signing key, the published
 *      record at <selector>._domainkey.<domain> must carry that key.
 *
 * Outcomes, worst first: FAIL (an open relay, an authorised host refused,
 * nothing authorised, Moat's addresses unknown), UNKNOWN (a resolver error,
 * Moat's listener unreachable), PENDING (an SPF or DKIM record not
 * published yet, no outbound relay seen yet), PASS.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <event2/event.h>
#include <sodium.h>
#include "../core/cidr.h"
#include "../deliver/deliver_dkim.h"
#include "../dns/dns.h"
#include "../smtp/smtp_client.h"
#include "connect_artefacts.h"
#include "connect_checks.h"

#define OUT_PROBE_TIMEOUT 30          /* seconds per SMTP step against our own listener */
#define OUT_STRANGER_RCPT "postmaster@moat-relay-test.example"   /* RFC 2606: never delivered */

/* ------------------------------------------------------------------ */
/* SPF: pure functions (tests/unit/test_connect_artefacts.c)           */
/* ------------------------------------------------------------------ */

/* spf_term_covers - a pass ip4:/ip6: mechanism of an SPF record that
 * contains ip ("+ip4:192.0.2.0/24" or "ip4:192.0.2.1"); other terms never */
static bool spf_term_covers(const char *term, size_t len, const char *ip)
{
    char t[128];
    if (len == 0 || len >= sizeof t)
        return false;
    memcpy(t, term, len);
    t[len] = '\0';
    const char *p = t;
    if (*p == '+')
        p++;
    else if (*p == '-' || *p == '~' || *p == '?')
        return false;   /* a fail / softfail / neutral term authorises nothing */
    int want;
    if (strncasecmp(p, "ip4:", 4) == 0)
        want = AF_INET;
    else if (strncasecmp(p, "ip6:", 4) == 0)
        want = AF_INET6;
    else
        return false;
    /* SPF masks the address with the length (RFC 7208 5.6): host bits may be set */
    struct cidr net = {0};
    char *slash = strchr(t, '/');
    net.prefix = want == AF_INET ? 32 : 128;
    if (slash != NULL) {
        char *end;
        long l = strtol(slash + 1, &end, 10);
        if (*end != '\0' || end == slash + 1 || l < 0 || l > net.prefix)
            return false;
        net.prefix = (int)l;
        *slash = '\0';
    }
    int fam, hfam;
    unsigned char host[16];
    if (cidr_addr_from_text(p + 4, &fam, net.addr) < 0 || fam != want ||
        cidr_addr_from_text(ip, &hfam, host) < 0)
        return false;
    net.family = fam;
    return cidr_contains_addr(&net, hfam, host);
}

/* connect_spf_covers - 1 when the SPF record authorises ip directly */
bool connect_spf_covers(const char *record, const char *ip)
{
    const char *p = record;
    while (*p) {
        while (*p == ' ')
            p++;
        const char *e = p;
        while (*e && *e != ' ')
            e++;
        if (spf_term_covers(p, (size_t)(e - p), ip))
            return true;
        p = e;
    }
    return false;
}

/* connect_spf_merge - the SPF record to publish: current (NULL = none) with
 * each of ips not yet authorised added as ip4:/ip6: before the `all`
 * mechanism (or the redirect= modifier; else at the end).  A new record
 * ends in ~all: tighten it to -all once all outbound mail goes through
 * Moat.  Caller frees. */
char *connect_spf_merge(const char *current, const char *const *ips, size_t n)
{
    struct buf add;
    buf_init(&add);
    for (size_t i = 0; i < n; i++) {
        if (current != NULL && connect_spf_covers(current, ips[i]))
            continue;
        buf_printf(&add, "%s%s:%s", add.len ? " " : "", strchr(ips[i], ':') ? "ip6" : "ip4",
                   ips[i]);
    }
    struct buf out;
    buf_init(&out);
    if (current == NULL) {
        buf_printf(&out, "v=spf1%s%.*s ~all", add.len ? " " : "", (int)add.len,
                   add.data ? add.data : "");
    } else if (add.len == 0) {
        buf_append(&out, current, strlen(current));
    } else {
        /* find the first term that is `all` (any qualifier) or redirect= */
        const char *p = current, *at = NULL;
        while (*p && at == NULL) {
            while (*p == ' ')
                p++;
            const char *e = p, *q = p;
            while (*e && *e != ' ')
                e++;
            if (*q == '+' || *q == '-' || *q == '~' || *q == '?')
                q++;
            if (((size_t)(e - q) == 3 && strncasecmp(q, "all", 3) == 0) ||
                strncasecmp(p, "redirect=", 9) == 0)
                at = p;
            p = e;
        }
        if (at != NULL) {
            buf_append(&out, current, (size_t)(at - current));
            buf_printf(&out, "%.*s %s", (int)add.len, add.data, at);
        } else {
            size_t l = strlen(current);
            while (l > 0 && current[l - 1] == ' ')
                l--;
            buf_append(&out, current, l);
            buf_printf(&out, " %.*s", (int)add.len, add.data);
        }
    }
    buf_free(&add);
    char *r = xstrndup(out.data ? out.data : "", out.len);
    buf_free(&out);
    return r;
}

/* ------------------------------------------------------------------ */
/* prepare                                                             */
/* ------------------------------------------------------------------ */

json_t *connect_outbound_prepare(struct store *st, struct error *err)
{
    struct connect_org org;
    struct store_domain *d = NULL;
    struct store_outbound_host *h = NULL;
    struct store_smtp_account *a = NULL;
    struct store_dkim_key *k = NULL;
    size_t nd = 0, nh = 0, na = 0, nk = 0;
    char *data = NULL;
    json_t *in = NULL;

    if (connect_org_load(st, &org, err) < 0 || store_domain_list(st, &d, &nd, err) < 0)
        return NULL;
    if (store_outbound_host_list(st, &h, &nh, err) < 0 ||
        store_smtp_account_list(st, &a, &na, err) < 0 ||
        store_dkim_key_list(st, NULL, true, &k, &nk, err) < 0 ||
        store_connect_task_data_get(st, "outbound", &data, err) < 0)
        goto out;

    json_t *doms = json_array(), *hosts = json_array(), *keys = json_array();
    const char *first = NULL;
    for (size_t i = 0; i < nd; i++) {
        if (!store_domain_internal(&d[i]))
            continue;
        if (first == NULL)
            first = d[i].name;
        /* a subdomain of another internal domain sends under its parent's records
         * unless it has its own: check the top-level internal domains */
        bool covered = false;
        for (size_t j = 0; j < nd && !covered; j++)
            covered = j != i && store_domain_internal(&d[j]) &&
                      connect_domain_covers(d[j].name, d[i].name);
        if (!covered)
            json_array_append_new(doms, json_string(d[i].name));
    }
    for (size_t i = 0; i < nh; i++)
        json_array_append_new(hosts, json_string(h[i].cidr));
    size_t enabled = 0;
    for (size_t i = 0; i < na; i++)
        enabled += !a[i].disabled;
    for (size_t i = 0; i < nk; i++)
        json_array_append_new(keys, json_pack("{s:s, s:s, s:s, s:s}", "domain", k[i].domain,
                                              "selector", k[i].selector, "algorithm",
                                              k[i].algorithm, "p", k[i].public_key));
    in = json_pack("{s:o, s:o, s:o, s:i, s:o}", "org", connect_org_to_json(&org), "domains", doms,
                   "hosts", hosts, "accounts", (json_int_t)enabled, "dkim", keys);
    json_t *jd = json_loads(data ? data : "{}", 0, NULL);
    const char *rcpt = json_string_value(json_object_get(jd, "test_recipient"));
    const char *sender = json_string_value(json_object_get(jd, "test_sender"));
    if (rcpt != NULL) {
        const char *at = strrchr(rcpt, '@');
        for (size_t i = 0; i < nd && at; i++)
            if (store_domain_internal(&d[i]) && connect_domain_covers(d[i].name, at + 1))
                json_object_set_new(in, "test_error", json_sprintf(
                    "The test recipient %s is under your own domain %s: name an address at "
                    "another organisation, so the message leaves through Moat.", rcpt, d[i].name));
        json_object_set_new(in, "test_recipient", json_string(rcpt));
    }
    if (sender != NULL)
        json_object_set_new(in, "test_sender", json_string(sender));
    else if (first != NULL)
        json_object_set_new(in, "test_sender", json_sprintf("postmaster@%s", first));
    json_decref(jd);
    /* a done task whose relay leg cannot be tested again (nothing relayed since
     * a restart) stays done: the outcome is "unknown", not "pending" */
    struct store_connect_task t = {0};
    struct error e2 = {0};
    if (store_connect_task_get(st, "outbound", &t, &e2) == STORE_OK) {
        json_object_set_new(in, "was_done", json_boolean(t.state && strcmp(t.state, "done") == 0));
        store_connect_task_clear(&t);
    }
out:
    free(data);
    store_domains_free(d, nd);
    store_outbound_hosts_free(h, nh);
    store_smtp_accounts_free(a, na);
    store_dkim_keys_free(k, nk);
    return in;
}

int connect_outbound_input_check(json_t *body, struct error *err)
{
    const char *key;
    json_t *v;
    memset(err, 0, sizeof *err);
    json_object_foreach(body, key, v) {
        if (strcmp(key, "test_recipient") != 0 && strcmp(key, "test_sender") != 0) {
            error_set(err, key, "unknown member \"%.60s\": the outbound task takes test_recipient "
                      "and test_sender", key);
            return -1;
        }
        if (!json_is_string(v) || !connect_address_valid(json_string_value(v))) {
            error_set(err, key, "%s is not a mail address like someone@example.org", key);
            return -1;
        }
    }
    if (json_object_get(body, "test_recipient") == NULL) {
        error_set(err, "test_recipient", "test_recipient is required: an address at another "
                  "organisation that receives the test message");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* run                                                                 */
/* ------------------------------------------------------------------ */

struct out_job;

/* one relay attempt against Moat's own listener */
struct out_leg {
    struct out_job *job;
    const char *name;                 /* "stranger", "authorised" */
    struct sockaddr_storage src;
    socklen_t srclen;
    char src_text[64];
    struct smtp_client_config ccfg;
    struct smtp_client_rcpt rcpt;
    struct smtp_client_msg msg;
    char *body;                       /* the test message, CRLF */
    size_t body_len;
    bool probe;                       /* MAIL+RCPT only */
    /* result */
    bool ran, connected, accepted;
    char reply[SMTP_DIAG_MAX];
};

struct out_job {
    const struct connect_env *env;
    connect_done_cb done;
    void *arg;
    json_t *input;
    struct sockaddr_storage target;
    socklen_t targetlen;
    char target_text[96];
    size_t dns_pending;
    json_t *spf, *dkim;               /* per-domain findings */
    bool spf_unknown, spf_pending, dkim_unknown, dkim_pending;
    struct out_leg legs[2];
    int leg;                          /* the one running */
};

static void out_legs_next(struct out_job *j);

/* legs_later - out_legs_next on the next loop turn (done is never called inside run) */
static void legs_later(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    out_legs_next(arg);
}

/* ---- SPF and DKIM lookups ---- */

struct out_q {
    struct out_job *job;
    json_t *item;                     /* the finding, filled by the callback */
    bool dkim;
};

static void out_dns_done(struct out_job *j)
{
    if (--j->dns_pending == 0)
        out_legs_next(j);
}

static void spf_cb(void *arg, const struct dns_result *r)
{
    struct out_q *q = arg;
    struct out_job *j = q->job;
    json_t *it = q->item;
    json_t *org = json_object_get(j->input, "org");
    json_t *ips = json_object_get(org, "public_ips");
    size_t n = json_array_size(ips);
    const char **v = xcalloc(n + 1, sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = json_string_value(json_array_get(ips, i));

    if (r->status == DNS_TEMPFAIL || r->status == DNS_BOGUS) {
        j->spf_unknown = true;
        json_object_set_new(it, "status", json_string("unknown"));
        json_object_set_new(it, "reason", json_sprintf("the resolver could not answer: %s", r->why));
    } else {
        const char *found = NULL;
        size_t count = 0;
        for (size_t i = 0; r->status == DNS_OK && i < r->n; i++)
            if (strncasecmp(r->rr[i].text, "v=spf1", 6) == 0 &&
                (r->rr[i].text[6] == ' ' || r->rr[i].text[6] == '\0')) {
                found = r->rr[i].text;
                count++;
            }
        if (found)
            json_object_set_new(it, "current", json_string(found));
        else
            json_object_set_new(it, "current", json_null());
        char *want = connect_spf_merge(count == 1 ? found : NULL, v, n);
        json_object_set_new(it, "publish", json_string(want));
        free(want);
        size_t missing = 0;
        json_t *miss = json_array();
        for (size_t i = 0; i < n; i++)
            if (count != 1 || !connect_spf_covers(found, v[i])) {
                json_array_append_new(miss, json_string(v[i]));
                missing++;
            }
        json_object_set_new(it, "missing", miss);
        if (count > 1) {
            j->spf_pending = true;
            json_object_set_new(it, "status", json_string("multiple"));
            json_object_set_new(it, "reason", json_string(
                "more than one v=spf1 record: receivers treat that as an error (RFC 7208 4.5); "
                "publish a single record"));
        } else if (count == 0) {
            j->spf_pending = true;
            json_object_set_new(it, "status", json_string("missing"));
            json_object_set_new(it, "reason", json_string("no SPF record is published"));
        } else if (missing > 0) {
            j->spf_pending = true;
            json_object_set_new(it, "status", json_string("incomplete"));
            json_object_set_new(it, "reason", json_string(
                "the SPF record does not name all of Moat's addresses with ip4:/ip6: terms"));
        } else {
            json_object_set_new(it, "status", json_string("ok"));
        }
    }
    free(v);
    free(q);
    out_dns_done(j);
}

static void dkim_cb(void *arg, const struct dns_result *r)
{
    struct out_q *q = arg;
    struct out_job *j = q->job;
    json_t *it = q->item;
    if (r->status == DNS_TEMPFAIL || r->status == DNS_BOGUS) {
        j->dkim_unknown = true;
        json_object_set_new(it, "status", json_string("unknown"));
        json_object_set_new(it, "reason", json_sprintf("the resolver could not answer: %s", r->why));
    } else if (r->status != DNS_OK || r->n == 0) {
        j->dkim_pending = true;
        json_object_set_new(it, "status", json_string("missing"));
        json_object_set_new(it, "reason", json_string("the DKIM record is not published yet"));
    } else {
        char why[256] = "";
        const char *p = json_string_value(json_object_get(it, "p"));
        const char *alg = json_string_value(json_object_get(it, "algorithm"));
        int best = 0;
        for (size_t i = 0; i < r->n && best != 1; i++)
            best = dkim_record_matches(r->rr[i].text, p, alg, why, sizeof why);
        if (best == 1) {
            json_object_set_new(it, "status", json_string("ok"));
        } else {
            j->dkim_pending = true;
            json_object_set_new(it, "status", json_string("mismatch"));
            json_object_set_new(it, "reason", json_string(why));
            json_object_set_new(it, "published", json_string(r->rr[0].text));
        }
    }
    free(q);
    out_dns_done(j);
}

static void out_query(struct out_job *j, json_t *item, const char *name, bool dkim)
{
    struct out_q *q = xcalloc(1, sizeof *q);
    q->job = j;
    q->item = item;
    q->dkim = dkim;
    j->dns_pending++;
    dns_query(j->env->dns, name, DNS_T_TXT, dkim ? dkim_cb : spf_cb, q);
}

/* ---- relay legs ---- */

static bool host_authorised(json_t *hosts, const struct sockaddr *sa)
{
    size_t i;
    json_t *h;
    json_array_foreach(hosts, i, h) {
        struct cidr c;
        struct error err = {0};
        if (cidr_parse(json_string_value(h), &c, &err) == 0 && cidr_contains(&c, sa))
            return true;
    }
    return false;
}

static bool set_addr(struct sockaddr_storage *ss, socklen_t *len, const char *text)
{
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof *ss);
    if (inet_pton(AF_INET, text, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        *len = sizeof *s4;
        return true;
    }
    if (inet_pton(AF_INET6, text, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        *len = sizeof *s6;
        return true;
    }
    return false;
}

/* pick_source - a local address of the target's family that is (want) or is
 * not (!want) inside an authorised range: the organisation's probe source,
 * then loopback addresses (on Linux all of 127.0.0.0/8 is local) */
static bool pick_source(struct out_job *j, bool want, struct out_leg *l)
{
    json_t *hosts = json_object_get(j->input, "hosts");
    const char *probe = json_string_value(json_object_get(json_object_get(j->input, "org"),
                                                          "probe_source"));
    bool loop4 = j->target.ss_family == AF_INET &&
                 (ntohl(((struct sockaddr_in *)&j->target)->sin_addr.s_addr) >> 24) == 127;
    bool loop6 = j->target.ss_family == AF_INET6 &&
                 IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&j->target)->sin6_addr);
    char cand[12][64];
    size_t n = 0;
    if (probe && *probe)
        str_copy(cand[n++], sizeof cand[0], probe);
    if (loop4)
        for (int i = 1; i <= 10; i++)
            xsnprintf(cand[n++], sizeof cand[0], "127.0.0.%d", i);
    if (loop6)
        str_copy(cand[n++], sizeof cand[0], "::1");
    for (size_t i = 0; i < n; i++) {
        if (!set_addr(&l->src, &l->srclen, cand[i]) || l->src.ss_family != j->target.ss_family)
            continue;
        /* the probe source is meant for strangers only */
        if (want && i == 0 && probe && *probe && strcmp(cand[0], probe) == 0)
            continue;
        if (host_authorised(hosts, (struct sockaddr *)&l->src) == want) {
            str_copy(l->src_text, sizeof l->src_text, cand[i]);
            return true;
        }
    }
    return false;
}

static ssize_t leg_read(void *arg, uint64_t off, void *buf, size_t len)
{
    struct out_leg *l = arg;
    if (off >= l->body_len)
        return 0;
    size_t n = l->body_len - (size_t)off;
    if (n > len)
        n = len;
    memcpy(buf, l->body + off, n);
    return (ssize_t)n;
}

static void leg_sent(void *arg, struct smtp_conn *c, const struct smtp_send_result *res)
{
    struct out_leg *l = arg;
    if (c != NULL)
        smtp_conn_quit(c);
    l->accepted = res->codes[0] >= 200 && res->codes[0] < 300;
    str_copy(l->reply, sizeof l->reply, res->diags[0]);
    l->job->leg++;
    out_legs_next(l->job);
}

static void leg_ready(void *arg, struct smtp_conn *c, enum smtp_conn_error e, int code,
                      const char *diag)
{
    struct out_leg *l = arg;
    (void)code;
    if (e != SMTP_CONN_OK) {
        str_copy(l->reply, sizeof l->reply, diag ? diag : "connection failed");
        l->job->leg++;
        out_legs_next(l->job);
        return;
    }
    l->connected = true;
    smtp_conn_send(c, &l->msg, leg_sent, l);
}

static void leg_start(struct out_job *j, struct out_leg *l)
{
    l->ran = true;
    l->ccfg.base = j->env->base;
    l->ccfg.helo_name = j->env->hostname;
    l->ccfg.timeout_connect = OUT_PROBE_TIMEOUT;
    l->ccfg.timeout_command = OUT_PROBE_TIMEOUT;
    l->ccfg.timeout_data = OUT_PROBE_TIMEOUT;
    l->ccfg.source = (struct sockaddr *)&l->src;
    l->ccfg.source_len = l->srclen;
    l->msg.qid = "NOQUEUE";
    l->msg.sender = json_string_value(json_object_get(j->input, "test_sender"));
    if (l->msg.sender == NULL)
        l->msg.sender = "";
    l->msg.rcpts = &l->rcpt;
    l->msg.n_rcpts = 1;
    if (l->probe) {
        l->msg.flags = SMTP_MSG_PROBE;
    } else {
        char date[64], id[33];
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
        unsigned char rnd[16];
        randombytes_buf(rnd, sizeof rnd);
        sodium_bin2hex(id, sizeof id, rnd, sizeof rnd);
        struct buf b;
        buf_init(&b);
        buf_printf(&b, "From: <%s>\r\nTo: <%s>\r\nSubject: Moat Connect: outbound test\r\n"
                   "Date: %s\r\nMessage-ID: <%s@%s>\r\nMIME-Version: 1.0\r\n"
                   "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
                   "This message was sent by the outbound check of Moat's Connect.\r\n"
                   "It shows that mail from your authorised mail server is relayed to the\r\n"
                   "internet. No reply is needed.\r\n", l->msg.sender, l->rcpt.addr, date, id,
                   j->env->hostname);
        l->body = xstrndup(b.data, b.len);
        l->body_len = b.len;
        buf_free(&b);
        l->msg.size = l->body_len;
        l->msg.read = leg_read;
        l->msg.read_arg = l;
    }
    if (smtp_conn_open(&l->ccfg, (struct sockaddr *)&j->target, j->targetlen, "moat",
                       SMTP_CLIENT_TLS_NONE, leg_ready, l) == NULL) {
        str_copy(l->reply, sizeof l->reply, "could not connect from this source address");
        /* smtp_conn_open never calls back when it returns NULL: go on, later */
        j->leg++;
        struct timeval now = { 0, 0 };
        event_base_once(j->env->base, -1, EV_TIMEOUT, legs_later, j, &now);
    }
}

static json_t *leg_json(const struct out_leg *l, const char *expect)
{
    return json_pack("{s:s, s:s, s:b, s:b, s:s, s:s}", "leg", l->name, "source", l->src_text,
                     "connected", l->connected, "accepted", l->accepted, "reply", l->reply,
                     "expected", expect);
}

static void out_finish(struct out_job *j)
{
    struct connect_result r = { .outcome = CONNECT_PASS };
    struct out_leg *stranger = &j->legs[0], *auth = &j->legs[1];
    json_t *org = json_object_get(j->input, "org");
    size_t n_ips = json_array_size(json_object_get(org, "public_ips"));
    size_t n_hosts = json_array_size(json_object_get(j->input, "hosts"));
    json_int_t n_accounts = json_integer_value(json_object_get(j->input, "accounts"));
    const char *test_error = json_string_value(json_object_get(j->input, "test_error"));
    bool was_done = json_is_true(json_object_get(j->input, "was_done"));

    json_t *relay = json_array();
    if (stranger->ran)
        json_array_append_new(relay, leg_json(stranger, "refused (5xx)"));
    if (auth->ran)
        json_array_append_new(relay, leg_json(auth, "accepted (250)"));

    struct connect_outbound_seen seen = {0};
    if (j->env->outbound_seen)
        j->env->outbound_seen(j->env->outbound_seen_arg, &seen);
    json_t *obs = json_pack("{s:I, s:I, s:s}", "relayed", (json_int_t)seen.relayed, "last",
                            (json_int_t)seen.last, "last_client", seen.last_client);

    /* worst first */
    if (stranger->ran && stranger->connected && stranger->accepted) {
        r.outcome = CONNECT_FAIL;
        xsnprintf(r.message, sizeof r.message, "Moat accepted to relay mail to another domain "
                  "from %s, which is not an authorised host: it would be an open relay. Check "
                  "`moat outbound host list` for a range that is too wide.", stranger->src_text);
    } else if (n_hosts == 0 && n_accounts == 0) {
        r.outcome = CONNECT_FAIL;
        xsnprintf(r.message, sizeof r.message, "Nothing may relay through Moat yet: authorise "
                  "your mail server (`moat outbound host add ADDRESS`) or create an SMTP AUTH "
                  "account (`moat outbound account add NAME`).");
    } else if (auth->ran && auth->connected && !auth->accepted) {
        r.outcome = CONNECT_FAIL;
        xsnprintf(r.message, sizeof r.message, "Moat refused to relay the test message from the "
                  "authorised address %s: %s", auth->src_text, auth->reply);
    } else if (test_error != NULL) {
        r.outcome = CONNECT_FAIL;
        str_copy(r.message, sizeof r.message, test_error);
    } else if (n_ips == 0) {
        r.outcome = CONNECT_FAIL;
        xsnprintf(r.message, sizeof r.message, "Moat's public IP addresses are not known, so "
                  "the SPF record cannot be checked: add them in the organisation task.");
    } else if (!stranger->ran) {
        r.outcome = CONNECT_UNKNOWN;
        xsnprintf(r.message, sizeof r.message, "Moat could not test that a stranger is refused: "
                  "every local address it could speak from is authorised. Set a probe source "
                  "address outside the authorised ranges in the organisation task.");
    } else if ((stranger->ran && !stranger->connected) || (auth->ran && !auth->connected)) {
        r.outcome = CONNECT_UNKNOWN;
        xsnprintf(r.message, sizeof r.message, "Moat's own SMTP listener %s could not be reached "
                  "for the relay test: %s", j->target_text,
                  stranger->ran && !stranger->connected ? stranger->reply : auth->reply);
    } else if (j->spf_unknown || j->dkim_unknown) {
        r.outcome = CONNECT_UNKNOWN;
        xsnprintf(r.message, sizeof r.message, "The resolver could not answer for every %s "
                  "record; Moat will check again.", j->spf_unknown ? "SPF" : "DKIM");
    } else if (j->spf_pending) {
        r.outcome = CONNECT_PENDING;
        xsnprintf(r.message, sizeof r.message, "Publish the SPF record shown for each domain: "
                  "receivers must see Moat's addresses as allowed senders.");
    } else if (j->dkim_pending) {
        r.outcome = CONNECT_PENDING;
        xsnprintf(r.message, sizeof r.message, "Publish the DKIM record shown for each signing "
                  "key (`moat dkim record DOMAIN`).");
    } else if (!auth->ran && seen.relayed == 0) {
        r.outcome = was_done ? CONNECT_UNKNOWN : CONNECT_PENDING;
        xsnprintf(r.message, sizeof r.message, "None of the authorised hosts is an address of "
                  "this machine, so Moat cannot send the test itself: send a message from your "
                  "mail server to an address at another organisation; this check passes once "
                  "Moat has relayed it.");
    } else if (auth->ran) {
        xsnprintf(r.message, sizeof r.message, "Outbound relaying works: %s from the authorised "
                  "address %s (%s), a stranger is refused (%s), and SPF%s authorises Moat.",
                  auth->probe ? "relaying was accepted" : "the test message was accepted",
                  auth->src_text, auth->reply, stranger->reply,
                  json_array_size(j->dkim) ? " and DKIM are published and" : "");
    } else {
        xsnprintf(r.message, sizeof r.message, "Outbound relaying works: Moat has relayed %llu "
                  "message%s from authorised senders (the last from %s), a stranger is refused "
                  "(%s), and SPF authorises Moat.", (unsigned long long)seen.relayed,
                  seen.relayed == 1 ? "" : "s", seen.last_client, stranger->reply);
    }
    r.details = json_pack("{s:s, s:o, s:O, s:O, s:o, s:O, s:I}", "listener", j->target_text,
                          "relay", relay, "spf", j->spf, "dkim", j->dkim, "observed", obs,
                          "hosts", json_object_get(j->input, "hosts"), "accounts", n_accounts);
    j->done(j->arg, &r);
    json_decref(r.details);
    for (int i = 0; i < 2; i++)
        free(j->legs[i].body);
    json_decref(j->spf);
    json_decref(j->dkim);
    json_decref(j->input);
    free(j);
}

/* out_legs_next - after the lookups: the stranger, then the authorised host */
static void out_legs_next(struct out_job *j)
{
    while (j->leg < 2) {
        struct out_leg *l = &j->legs[j->leg];
        if (l->name != NULL && !l->ran) {
            leg_start(j, l);
            return;
        }
        j->leg++;
    }
    out_finish(j);
}

void connect_outbound_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                          void *arg)
{
    struct out_job *j = xcalloc(1, sizeof *j);
    j->env = env;
    j->done = done;
    j->arg = arg;
    j->input = json_incref(input);
    j->spf = json_array();
    j->dkim = json_array();
    if (connect_listener_target(env->settings, &j->target, &j->targetlen, j->target_text,
                                sizeof j->target_text) < 0) {
        json_decref(j->spf);
        json_decref(j->dkim);
        json_decref(j->input);
        free(j);
        connect_finish_later(env, done, arg, CONNECT_FAIL, NULL, "Moat's SMTP listener address "
                             "(smtp_listen) cannot be probed: it is not an IP address and port.");
        return;
    }
    const char *rcpt = json_string_value(json_object_get(input, "test_recipient"));
    struct out_leg *s = &j->legs[0], *a = &j->legs[1];
    s->job = a->job = j;
    if (pick_source(j, false, s)) {
        s->name = "stranger";
        s->probe = true;
        s->rcpt.addr = OUT_STRANGER_RCPT;   /* external, never delivered: a probe */
    }
    if (pick_source(j, true, a) && json_object_get(input, "test_error") == NULL) {
        a->name = "authorised";
        a->probe = rcpt == NULL;
        a->rcpt.addr = rcpt ? rcpt : OUT_STRANGER_RCPT;
    }

    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(input, "domains"), i, v) {
        json_t *it = json_pack("{s:O}", "domain", v);
        json_array_append_new(j->spf, it);
        out_query(j, it, json_string_value(v), false);
    }
    json_array_foreach(json_object_get(input, "dkim"), i, v) {
        json_t *it = json_deep_copy(v);
        json_array_append_new(j->dkim, it);
        char name[512];
        xsnprintf(name, sizeof name, "%s._domainkey.%s",
                  json_string_value(json_object_get(v, "selector")),
                  json_string_value(json_object_get(v, "domain")));
        out_query(j, it, name, true);
    }
    if (j->dns_pending == 0) {
        /* nothing to look up: the legs start on the next loop turn, never inside run */
        struct timeval now = { 0, 0 };
        event_base_once(env->base, -1, EV_TIMEOUT, legs_later, j, &now);
    }
}

/* ------------------------------------------------------------------ */
/* instructions                                                        */
/* ------------------------------------------------------------------ */

json_t *connect_outbound_instructions(struct store *st, struct error *err)
{
    struct connect_org org;
    if (connect_org_load(st, &org, err) < 0)
        return NULL;
    json_t *steps = json_array(), *arts = json_array();
    json_array_append_new(steps, json_string(
        "Authorise the mail server that sends through Moat: its address or range "
        "(`moat outbound host add 192.0.2.10`), or, for senders on changing addresses, an SMTP "
        "AUTH account (`moat outbound account add scanner@example.com`; sign-in only over "
        "STARTTLS). Anyone else who tries to relay through Moat is refused with 550 5.7.1."));
    json_array_append_new(steps, json_string(
        "Point your mail server's outbound mail at Moat (smart host / send connector below)."));
    json_array_append_new(steps, json_string(
        "Publish the SPF record shown for each domain: it is your current record with Moat's "
        "addresses added before its `all` term. Optionally create a DKIM key "
        "(`moat dkim keygen example.com`) and publish its record."));
    json_array_append_new(steps, json_string(
        "Name an address at another organisation as the test recipient "
        "(`moat connect input outbound --test-recipient you@example.org`), then run the check: "
        "Moat relays a test message from an authorised address and makes sure a stranger is "
        "refused."));
    json_t *a = connect_art_outbound(&org);
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(a, "steps"), i, v)
        json_array_append(steps, v);
    json_array_foreach(json_object_get(a, "artefacts"), i, v)
        json_array_append(arts, v);
    json_decref(a);
    return json_pack("{s:o, s:o}", "steps", steps, "artefacts", arts);
}
