/*
 * connect_inbound.c - the inbound task: "Prepare for inbound email".
 *
 * For each delivery route (domain -> host:port) the check connects, EHLOs
 * and tries STARTTLS with Moat's own SMTP client (the shared probe,
 * smtp_tlsprobe.h), and classifies the route:
 *   strict      - the chain is trusted (env->tls_client: the system trust
 *                 store, or SSL_CERT_FILE) and the name matches the route
 *                 host (SSL_set1_host, or the IP address for IP routes);
 *   relaxed     - encrypted, but the certificate is not trusted or its name
 *                 does not match (the reason says which);
 *   unsupported - STARTTLS not offered, or the handshake failed (why).
 * A first connection requires verification; when that fails on the
 * certificate a second one encrypts without it.  Then a test message goes
 * through the route to the mailbox the administrator named (task input
 * {"test_address": ...}); it must be accepted with 250.
 *
 * Outcomes: PASS when every route answered and the test message was
 * accepted; FAIL when a route refused the connection, the message, or
 * cannot meet its configured TLS mode; UNKNOWN when the route host could
 * not be resolved (resolver error).
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
#include "../dns/dns.h"
#include "../smtp/smtp_client.h"
#include "../smtp/smtp_tlsprobe.h"
#include "connect_artefacts.h"
#include "connect_checks.h"

#define INBOUND_MAX_ROUTES 64

/* --- prepare --- */

/* covering - the internal domain that covers addr's domain (closest), or -1 */
static ssize_t covering(const struct store_domain *d, size_t n, const char *dom)
{
    ssize_t best = -1;
    for (size_t i = 0; i < n; i++)
        if (store_domain_internal(&d[i]) && connect_domain_covers(d[i].name, dom) &&
            (best < 0 || strlen(d[i].name) > strlen(d[best].name)))
            best = (ssize_t)i;
    return best;
}

json_t *connect_inbound_prepare(struct store *st, struct error *err)
{
    struct store_domain *d = NULL;
    size_t n = 0;
    char *data = NULL;

    if (store_connect_task_data_get(st, "inbound", &data, err) < 0)
        return NULL;
    json_t *jd = json_loads(data, 0, NULL);
    free(data);
    if (store_domain_list(st, &d, &n, err) < 0) {
        json_decref(jd);
        return NULL;
    }
    json_t *routes = json_array(), *no_route = json_array();
    for (size_t i = 0; i < n; i++) {
        if (!store_domain_internal(&d[i]))
            continue;
        if (d[i].route.host == NULL)
            json_array_append_new(no_route, json_string(d[i].name));
        else
            json_array_append_new(routes, json_pack("{s:s, s:s, s:i, s:s}", "domain", d[i].name,
                                                    "host", d[i].route.host, "port", d[i].route.port,
                                                    "tls", store_tls_mode_name(d[i].route.tls)));
    }
    json_t *in = json_pack("{s:o, s:o}", "routes", routes, "no_route", no_route);
    const char *addr = json_string_value(json_object_get(jd, "test_address"));
    if (addr != NULL) {
        json_object_set_new(in, "test_address", json_string(addr));
        const char *at = strrchr(addr, '@');
        char dom[256];
        str_copy(dom, sizeof dom, at ? at + 1 : "");
        str_lower(dom);
        ssize_t k = covering(d, n, dom);
        if (k < 0)
            json_object_set_new(in, "test_error", json_sprintf(
                "The test address %s is not under one of your verified domains.", addr));
        else if (d[k].route.host == NULL)
            json_object_set_new(in, "test_error", json_sprintf(
                "The test address %s belongs to %s, which has no delivery route.", addr, d[k].name));
        else
            json_object_set_new(in, "test_route", json_pack("{s:s, s:s, s:i}", "domain", d[k].name,
                                                            "host", d[k].route.host,
                                                            "port", d[k].route.port));
    }
    json_decref(jd);
    store_domains_free(d, n);
    return in;
}

int connect_inbound_input_check(json_t *body, struct error *err)
{
    const char *key;
    json_t *v;
    memset(err, 0, sizeof *err);
    json_object_foreach(body, key, v) {
        if (strcmp(key, "test_address") != 0) {
            error_set(err, key, "unknown member \"%.60s\": the inbound task takes test_address", key);
            return -1;
        }
    }
    const char *a = json_string_value(json_object_get(body, "test_address"));
    if (a == NULL) {
        error_set(err, "test_address", "test_address must be a string: the mailbox that "
                  "receives the test message, like alice@example.com");
        return -1;
    }
    if (!connect_address_valid(a)) {
        error_set(err, "test_address", "test_address is not a mail address like alice@example.com");
        return -1;
    }
    return 0;
}

/* --- run --- */

struct in_job;

struct in_route {
    struct in_job *job;
    json_t *item;               /* details entry (owned by job->items) */
    char host[256];
    int port;
    enum store_tls_mode required;
    bool send_test;
    struct sockaddr_storage sa;
    socklen_t salen;
    const char *tls;            /* "strict", "relaxed", "unsupported" */
    /* the test message */
    char *message;
    size_t message_len;
    struct smtp_client_rcpt rcpt;
    struct smtp_client_msg msg;
    char sender[300];
    char rcpt_addr[300];
    bool finished;
};

struct in_job {
    struct connect_env env;
    struct smtp_client_config ccfg;
    connect_done_cb done;
    void *arg;
    json_t *items;
    json_t *no_route;
    char *test_address;
    char *test_error;
    bool test_sent_ok;
    size_t pending;
    struct in_route *routes;
    size_t n_routes;
};

static void in_finish(struct in_job *j)
{
    size_t fails = 0, unknown = 0, i;
    json_t *it;
    const char *first_fail = NULL, *first_unknown = NULL;
    json_array_foreach(j->items, i, it) {
        const char *st = json_string_value(json_object_get(it, "status"));
        const char *m = json_string_value(json_object_get(it, "message"));
        if (strcmp(st, "fail") == 0 && fails++ == 0)
            first_fail = m;
        if (strcmp(st, "unknown") == 0 && unknown++ == 0)
            first_unknown = m;
    }
    char summary[400] = "";
    size_t o = 0;
    json_array_foreach(j->items, i, it) {
        o += (size_t)snprintf(summary + o, o < sizeof summary ? sizeof summary - o : 0, "%s%s:%d %s",
                              i ? "; " : "", json_string_value(json_object_get(it, "host")),
                              (int)json_integer_value(json_object_get(it, "port")),
                              json_string_value(json_object_get(it, "tls")));
        if (o >= sizeof summary)
            break;
    }
    json_t *details = json_pack("{s:O, s:O, s:s?}", "routes", j->items, "no_route", j->no_route,
                                "test_address", j->test_address);
    size_t n_routes = json_array_size(j->items), n_none = json_array_size(j->no_route);
    const char *none = json_string_value(json_array_get(j->no_route, 0));
    enum connect_outcome oc;
    char msg[512];
    if (n_routes == 0 && n_none == 0) {
        oc = CONNECT_FAIL;
        xsnprintf(msg, sizeof msg, "No verified domain yet: finish the domains task first.");
    } else if (n_none > 0) {
        oc = CONNECT_FAIL;
        xsnprintf(msg, sizeof msg, "%s has no delivery route: set one with "
                  "`moat route set %s HOST[:PORT]`.", none, none);
    } else if (fails > 0) {
        oc = CONNECT_FAIL;
        xsnprintf(msg, sizeof msg, "%s", first_fail);
    } else if (unknown > 0) {
        oc = CONNECT_UNKNOWN;
        xsnprintf(msg, sizeof msg, "%s", first_unknown);
    } else if (j->test_error != NULL) {
        oc = CONNECT_FAIL;
        xsnprintf(msg, sizeof msg, "%s", j->test_error);
    } else if (j->test_address == NULL) {
        oc = CONNECT_FAIL;
        xsnprintf(msg, sizeof msg, "Routes answer (%s); now name a mailbox for the test message: "
                  "PUT /api/v1/connect/inbound/input {\"test_address\": \"...\"}.", summary);
    } else if (!j->test_sent_ok) {
        oc = CONNECT_FAIL;
        xsnprintf(msg, sizeof msg, "The test message to %s was not sent.", j->test_address);
    } else {
        oc = CONNECT_PASS;
        xsnprintf(msg, sizeof msg, "Routes tested (%s); the test message to %s was accepted.",
                  summary, j->test_address);
    }
    json_decref(j->items);
    json_decref(j->no_route);
    for (size_t k = 0; k < j->n_routes; k++)
        free(j->routes[k].message);
    free(j->routes);
    free(j->test_address);
    free(j->test_error);
    connect_done_cb done = j->done;
    void *arg = j->arg;
    free(j);
    connect_finish(done, arg, oc, details, "%s", msg);
}

static void in_finish_cb(evutil_socket_t fd, short what, void *arg)
{
    in_finish(arg);
}

/* route_done - this route is finished: status "ok", "fail" or "unknown" */
static void route_done(struct in_route *r, const char *status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void route_done(struct in_route *r, const char *status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (r->finished)
        return;
    r->finished = true;
    json_object_set_new(r->item, "status", json_string(status));
    json_object_set_new(r->item, "message", json_string(msg));
    log_info("event=connect_inbound_route host=%s port=%d status=%s tls=%s", r->host, r->port,
             status, r->tls ? r->tls : "-");
    if (--r->job->pending == 0)
        in_finish(r->job);
}

static void route_open(struct in_route *r, enum smtp_client_tls mode);

static void test_sent(void *arg, struct smtp_conn *c, const struct smtp_send_result *res)
{
    struct in_route *r = arg;
    int code = res->codes[0];
    char diag[SMTP_DIAG_MAX];
    str_copy(diag, sizeof diag, res->diags[0]);
    smtp_conn_quit(c);
    json_object_set_new(r->item, "test_message", json_pack("{s:s, s:i, s:s, s:b}", "to",
                        r->rcpt_addr, "code", code, "reply", diag, "accepted",
                        code >= 200 && code < 300));
    if (code >= 200 && code < 300) {
        r->job->test_sent_ok = true;
        route_done(r, "ok", "%s:%d (TLS %s) accepted the test message to %s: %s", r->host,
                   r->port, r->tls, r->rcpt_addr, diag);
    } else {
        route_done(r, "fail", "%s:%d refused the test message to %s: %s", r->host, r->port,
                   r->rcpt_addr, diag);
    }
}

static ssize_t msg_read(void *arg, uint64_t off, void *buf, size_t len)
{
    struct in_route *r = arg;
    if (off >= r->message_len)
        return 0;
    size_t n = r->message_len - (size_t)off;
    if (n > len)
        n = len;
    memcpy(buf, r->message + off, n);
    return (ssize_t)n;
}

/* send_test - the test message on the ready connection c */
static void send_test(struct in_route *r, struct smtp_conn *c)
{
    const char *host = r->job->env.hostname && *r->job->env.hostname ? r->job->env.hostname
                                                                      : "localhost";
    unsigned char rnd[8];
    char id[17], date[64];
    randombytes_buf(rnd, sizeof rnd);
    sodium_bin2hex(id, sizeof id, rnd, sizeof rnd);
    time_rfc5322(date, sizeof date, time(NULL));
    xsnprintf(r->sender, sizeof r->sender, "moat-connect@%s", host);
    str_copy(r->rcpt_addr, sizeof r->rcpt_addr, r->job->test_address);
    free(r->message);
    r->message = xasprintf(
        "From: Moat Connect <%s>\r\n"
        "To: <%s>\r\n"
        "Subject: Moat Connect: test of the inbound route\r\n"
        "Date: %s\r\n"
        "Message-ID: <connect-%s@%s>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "Auto-Submitted: auto-generated\r\n"
        "\r\n"
        "Moat (%s) sent this message to test the delivery route %s:%d\r\n"
        "(TLS %s). It needs no action.\r\n",
        r->sender, r->rcpt_addr, date, id, host, host, r->host, r->port, r->tls);
    r->message_len = strlen(r->message);
    r->rcpt.addr = r->rcpt_addr;
    memset(&r->msg, 0, sizeof r->msg);
    r->msg.qid = "CONNECT";
    r->msg.sender = r->sender;
    r->msg.rcpts = &r->rcpt;
    r->msg.n_rcpts = 1;
    r->msg.size = r->message_len;
    r->msg.read = msg_read;
    r->msg.read_arg = r;
    smtp_conn_send(c, &r->msg, test_sent, r);
}

/* classified - the TLS class is known and c (if not NULL) is ready in a mode
 * that meets the route's TLS setting */
static void classified(struct in_route *r, struct smtp_conn *c, const char *tls, const char *why,
                       bool fallback_clear)
{
    r->tls = tls;
    json_object_set_new(r->item, "tls", json_string(tls));
    json_object_set_new(r->item, "tls_reason", json_string(why));
    if (c != NULL && smtp_conn_tls_version(c) != NULL)
        json_object_set_new(r->item, "tls_version", json_string(smtp_conn_tls_version(c)));
    int have = strcmp(tls, "strict") == 0 ? 2 : strcmp(tls, "relaxed") == 0 ? 1 : 0;
    int need = r->required == STORE_TLS_STRICT ? 2 : r->required == STORE_TLS_RELAXED ? 1 : 0;
    if (have < need) {
        if (c)
            smtp_conn_quit(c);
        route_done(r, "fail", "%s:%d is configured with TLS %s but offers TLS %s (%s): Moat "
                   "could not deliver to it", r->host, r->port, store_tls_mode_name(r->required),
                   tls, why);
        return;
    }
    if (!r->send_test) {
        if (c)
            smtp_conn_quit(c);
        route_done(r, "ok", "%s:%d answers; TLS %s (%s)", r->host, r->port, tls, why);
        return;
    }
    if (c != NULL) {
        send_test(r, c);
        return;
    }
    /* no usable connection yet: the clear fallback delivery would use */
    route_open(r, fallback_clear ? SMTP_CLIENT_TLS_NONE : SMTP_CLIENT_TLS_MAY);
}

static void conn_failed(struct in_route *r, enum smtp_conn_error e, int code, const char *diag)
{
    if (e == SMTP_CONN_GREETING)
        route_done(r, "fail", "%s:%d refused Moat: %s", r->host, r->port, diag);
    else
        route_done(r, "fail", "Cannot reach %s:%d: %s", r->host, r->port, diag);
}

static void ready_send(void *arg, struct smtp_conn *c, enum smtp_conn_error e, int code,
                       const char *diag)
{
    struct in_route *r = arg;
    if (e != SMTP_CONN_OK) {
        conn_failed(r, e, code, diag);
        return;
    }
    send_test(r, c);
}

/* probed - the route's TLS class (smtp_tlsprobe.c, shared with the TLS
 * policy probes): a strict or relaxed connection is ready for the test */
static void probed(void *arg, struct smtp_conn *c, enum smtp_tls_class cls,
                   enum smtp_conn_error e, const char *why)
{
    struct in_route *r = arg;
    if (cls == SMTP_TLS_UNREACHABLE)
        conn_failed(r, e, 0, why);
    else
        classified(r, c, smtp_tls_class_name(cls), why, cls == SMTP_TLS_UNSUPPORTED);
}

static void route_open(struct in_route *r, enum smtp_client_tls mode)
{
    if (mode == SMTP_CLIENT_TLS_VERIFY)
        smtp_tls_probe(&r->job->ccfg, (struct sockaddr *)&r->sa, r->salen, r->host, probed, r);
    else
        smtp_conn_open(&r->job->ccfg, (struct sockaddr *)&r->sa, r->salen, r->host, mode,
                       ready_send, r);
}

static void set_port(struct in_route *r)
{
    if (r->sa.ss_family == AF_INET)
        ((struct sockaddr_in *)&r->sa)->sin_port = htons((uint16_t)r->port);
    else
        ((struct sockaddr_in6 *)&r->sa)->sin6_port = htons((uint16_t)r->port);
}

static bool addr_from_text(struct in_route *r, const char *text)
{
    struct sockaddr_in *s4 = (struct sockaddr_in *)&r->sa;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&r->sa;
    memset(&r->sa, 0, sizeof r->sa);
    if (inet_pton(AF_INET, text, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        r->salen = sizeof *s4;
    } else if (inet_pton(AF_INET6, text, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        r->salen = sizeof *s6;
    } else {
        return false;
    }
    set_port(r);
    return true;
}

static void resolved(void *arg, const struct dns_result *res)
{
    struct in_route *r = arg;
    if (res->status == DNS_OK && res->n > 0 && addr_from_text(r, res->rr[0].text)) {
        json_object_set_new(r->item, "address", json_string(res->rr[0].text));
        route_open(r, SMTP_CLIENT_TLS_VERIFY);
    } else if (res->status == DNS_NXDOMAIN || res->status == DNS_NODATA) {
        route_done(r, "fail", "The route host %s has no address in DNS (%s).", r->host,
                   dns_status_name(res->status));
    } else {
        route_done(r, "unknown", "Could not resolve the route host %s: %s (unknown, not failed).",
                   r->host, res->why[0] ? res->why : dns_status_name(res->status));
    }
}

void connect_inbound_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                         void *arg)
{
    struct in_job *j = xcalloc(1, sizeof *j);
    j->env = *env;
    j->done = done;
    j->arg = arg;
    j->items = json_array();
    j->no_route = json_deep_copy(json_object_get(input, "no_route"));
    if (j->no_route == NULL)
        j->no_route = json_array();
    const char *ta = json_string_value(json_object_get(input, "test_address"));
    const char *te = json_string_value(json_object_get(input, "test_error"));
    j->test_address = ta ? xstrdup(ta) : NULL;
    j->test_error = te ? xstrdup(te) : NULL;
    json_t *tr = json_object_get(input, "test_route");
    j->ccfg.base = env->base;
    j->ccfg.tls_ctx = env->tls_client;
    j->ccfg.helo_name = env->hostname;
    int64_t tc = env->settings ? env->settings->delivery_timeout_connect : 30;
    j->ccfg.timeout_connect = (int)(tc > 0 && tc < 20 ? tc : 20);
    j->ccfg.timeout_command = 60;
    j->ccfg.timeout_data = 120;

    /* one probe per distinct host:port; the domains it serves are listed */
    j->routes = xcalloc(INBOUND_MAX_ROUTES, sizeof *j->routes);
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(input, "routes"), i, v) {
        const char *host = json_string_value(json_object_get(v, "host"));
        const char *dom = json_string_value(json_object_get(v, "domain"));
        int port = (int)json_integer_value(json_object_get(v, "port"));
        enum store_tls_mode m = STORE_TLS_OPPORTUNISTIC;
        const char *ts = json_string_value(json_object_get(v, "tls"));
        if (host == NULL || dom == NULL)
            continue;
        if (ts)
            store_tls_mode_parse(ts, &m);
        struct in_route *r = NULL;
        for (size_t k = 0; k < j->n_routes; k++)
            if (strcmp(j->routes[k].host, host) == 0 && j->routes[k].port == port)
                r = &j->routes[k];
        if (r == NULL) {
            if (j->n_routes == INBOUND_MAX_ROUTES)
                continue;
            r = &j->routes[j->n_routes++];
            r->job = j;
            str_copy(r->host, sizeof r->host, host);
            r->port = port;
            r->required = m;
            r->item = json_pack("{s:s, s:i, s:[], s:s, s:s, s:s}", "host", host, "port", port,
                                "domains", "tls", "unknown", "status", "unknown", "message", "");
            json_array_append_new(j->items, r->item);
        }
        if (m > r->required)
            r->required = m;
        json_object_set_new(r->item, "tls_required", json_string(store_tls_mode_name(r->required)));
        json_array_append_new(json_object_get(r->item, "domains"), json_string(dom));
        if (tr && j->test_address &&
            strcmp(json_string_value(json_object_get(tr, "host")), host) == 0 &&
            json_integer_value(json_object_get(tr, "port")) == port)
            r->send_test = true;
    }
    j->pending = j->n_routes;
    if (j->pending == 0) {
        struct timeval now = { 0, 0 };
        if (event_base_once(env->base, -1, EV_TIMEOUT, in_finish_cb, j, &now) != 0)
            log_fatal("event=connect_bug reason=\"event_base_once failed\"");
        return;
    }
    /* start them all; none can call back before we return (callbacks come from the loop) */
    size_t n = j->n_routes;
    for (size_t k = 0; k < n; k++) {
        struct in_route *r = &j->routes[k];
        if (addr_from_text(r, r->host))
            route_open(r, SMTP_CLIENT_TLS_VERIFY);
        else
            dns_query(env->dns, r->host, DNS_T_A, resolved, r);
    }
}

/* --- instructions --- */

json_t *connect_inbound_instructions(struct store *st, struct error *err)
{
    struct connect_org org;
    struct store_domain *d = NULL;
    size_t n = 0;

    if (connect_org_load(st, &org, err) < 0 || store_domain_list(st, &d, &n, err) < 0)
        return NULL;
    struct connect_art_route *r = xcalloc(n ? n : 1, sizeof *r);
    size_t nr = 0;
    for (size_t i = 0; i < n; i++) {
        if (!store_domain_internal(&d[i]))
            continue;
        r[nr].domain = d[i].name;
        r[nr].host = d[i].route.host;
        r[nr].port = d[i].route.host ? d[i].route.port : 25;
        nr++;
    }
    json_t *out = connect_art_inbound(&org, r, nr);
    free(r);
    store_domains_free(d, n);
    return out;
}
