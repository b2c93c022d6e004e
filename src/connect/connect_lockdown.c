/*
 * connect_lockdown.c - the lockdown task: "Secure your inbound email".
 *
 * The engine unlocks it (every mandatory task done, MX only at Moat for the
 * configured time).  The artefacts restrict the mail server to Moat: the
 * Exchange Online connector, the Exchange receive connector, nftables and
 * Windows Firewall rules, a Postfix snippet (connect_artefacts.c).
 *
 * The check: where the organisation has a probe source address, Moat binds
 * a socket to it and connects to each route's host:port, as a stranger on
 * the internet would.  Refused means: the connection is refused, reset or
 * times out (a firewall), the greeting is not 2xx, or (servers that refuse
 * late, like Exchange Online and Postfix's default smtpd_delay_reject) the
 * RCPT (the inbound test mailbox, else postmaster) is refused as a matter of
 * policy (5.7.x, or a bare 554); no message is ever sent.  A 2xx to the
 * RCPT, or a refusal that is not about the client ("550 5.1.1 unknown
 * user"), means the server still talks to anyone: FAIL.  Without a
 * probe source the task passes with "configuration recorded" (DESIGN.md 1).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include "../dns/dns.h"
#include "../smtp/smtp_client.h"
#include "connect_artefacts.h"
#include "connect_checks.h"

#define PROBE_TIMEOUT 15    /* seconds per step: connect, each reply */

json_t *connect_lockdown_prepare(struct store *st, struct error *err)
{
    struct connect_org org;
    struct store_domain *d = NULL;
    size_t n = 0;

    if (connect_org_load(st, &org, err) < 0 || store_domain_list(st, &d, &n, err) < 0)
        return NULL;
    json_t *routes = json_array();
    for (size_t i = 0; i < n; i++)
        if (store_domain_internal(&d[i]) && d[i].route.host != NULL)
            json_array_append_new(routes, json_pack("{s:s, s:s, s:i}", "domain", d[i].name,
                                                    "host", d[i].route.host,
                                                    "port", d[i].route.port));
    store_domains_free(d, n);
    /* the probe's RCPT: the mailbox the administrator named for the inbound test */
    char *data = NULL;
    if (store_connect_task_data_get(st, "inbound", &data, err) < 0) {
        json_decref(routes);
        return NULL;
    }
    json_t *jd = json_loads(data, 0, NULL);
    free(data);
    json_t *in = json_pack("{s:s, s:o, s:O?}", "probe_source", org.probe_source, "routes", routes,
                           "test_address", json_object_get(jd, "test_address"));
    json_decref(jd);
    return in;
}

enum probe_step { P_CONNECT, P_GREETING, P_EHLO, P_MAIL, P_RCPT, P_DONE };

struct lk_job;

struct probe {
    struct lk_job *job;
    json_t *item;
    char host[256];
    char domain[256];
    char rcpt[320];     /* the inbound test address, else postmaster@domain */
    int port;
    struct sockaddr_storage sa;
    socklen_t salen;
    struct bufferevent *bev;
    enum probe_step step;
    bool finished;
};

struct lk_job {
    struct connect_env env;
    connect_done_cb done;
    void *arg;
    char source[64];
    json_t *items;
    struct probe *probes;
    size_t n, pending;
};

static void lk_finish(struct lk_job *j)
{
    size_t fails = 0, unknown = 0, i;
    json_t *it;
    const char *first_fail = NULL, *first_unknown = NULL;
    json_array_foreach(j->items, i, it) {
        const char *st = json_string_value(json_object_get(it, "status"));
        const char *m = json_string_value(json_object_get(it, "message"));
        if (strcmp(st, "accepts") == 0 && fails++ == 0)
            first_fail = m;
        if (strcmp(st, "unknown") == 0 && unknown++ == 0)
            first_unknown = m;
    }
    json_t *details = json_pack("{s:s, s:O}", "probe_source", j->source, "routes", j->items);
    size_t total = json_array_size(j->items);
    char src[64];
    str_copy(src, sizeof src, j->source);
    connect_done_cb done = j->done;
    void *arg = j->arg;
    json_decref(j->items);
    free(j->probes);
    free(j);
    if (total == 0)
        connect_finish(done, arg, CONNECT_FAIL, details,
                       "No delivery route to probe: set the routes (inbound task) first.");
    else if (fails > 0)
        connect_finish(done, arg, CONNECT_FAIL, details,
                       "The mail server accepts connections from %s: %s", src, first_fail);
    else if (unknown > 0)
        connect_finish(done, arg, CONNECT_UNKNOWN, details, "%s", first_unknown);
    else
        connect_finish(done, arg, CONNECT_PASS, details,
                       "Locked down: the mail server refused the probe from %s on every route.",
                       src);
}

static void lk_finish_cb(evutil_socket_t fd, short what, void *arg)
{
    lk_finish(arg);
}

/* probe_done - status "refused" (good), "accepts" (bad) or "unknown" */
static void probe_done(struct probe *p, const char *status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void probe_done(struct probe *p, const char *status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p->finished)
        return;
    p->finished = true;
    if (p->bev) {
        if (p->step > P_GREETING && p->step < P_DONE)
            bufferevent_write(p->bev, "QUIT\r\n", 6);   /* best effort, then close */
        bufferevent_free(p->bev);
        p->bev = NULL;
    }
    json_object_set_new(p->item, "status", json_string(status));
    json_object_set_new(p->item, "message", json_string(msg));
    log_info("event=connect_lockdown_probe host=%s port=%d source=%s status=%s", p->host,
             p->port, p->job->source, status);
    if (--p->job->pending == 0)
        lk_finish(p->job);
}

static void probe_send(struct probe *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void probe_send(struct probe *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(bufferevent_get_output(p->bev), fmt, ap);
    va_end(ap);
}

/* late_reply - a refusal after the greeting counts only when it is about the
 * client (5.7.x policy, or a bare 554): "550 5.1.1 unknown user" means the
 * server talks to anyone and merely lacks the mailbox */
static void late_reply(struct probe *p, const struct smtp_reply *r, const char *diag,
                       const char *stage)
{
    bool policy = strncmp(r->enh, "5.7.", 4) == 0 || (r->enh[0] == '\0' && r->code == 554);
    if (r->code >= 500 && policy)
        probe_done(p, "refused", "%s:%d refused mail from the probe at %s: %s", p->host, p->port,
                   stage, diag);
    else if (r->code >= 500)
        probe_done(p, "accepts", "%s:%d talks to %s: its %s reply is not a refusal of the "
                   "client (%s)", p->host, p->port, p->job->source, stage, diag);
    else
        probe_done(p, "unknown", "%s:%d answered the probe's %s with a temporary error (%s)",
                   p->host, p->port, stage, diag);
}

static void probe_read(struct bufferevent *bev, void *arg)
{
    struct probe *p = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    while (!p->finished) {
        size_t len = evbuffer_get_length(in), used = 0;
        if (len == 0)
            return;
        struct smtp_reply r;
        const char *data = (const char *)evbuffer_pullup(in, -1);
        int rc = smtp_reply_parse(data, len, &r, &used);
        if (rc == 0) {
            if (len > SMTP_REPLY_MAX_TEXT * 2) {
                probe_done(p, "unknown", "%s:%d sent an over-long reply", p->host, p->port);
            }
            return;
        }
        if (rc < 0) {
            probe_done(p, "unknown", "%s:%d sent a malformed reply", p->host, p->port);
            return;
        }
        char diag[SMTP_DIAG_MAX];
        smtp_reply_diag(&r, diag, sizeof diag);
        evbuffer_drain(in, used);
        bool ok = r.code >= 200 && r.code < 400;
        const char *host = p->job->env.hostname && *p->job->env.hostname ? p->job->env.hostname
                                                                          : "localhost";
        switch (p->step) {
        case P_GREETING:
            if (!ok) {
                probe_done(p, "refused", "%s:%d refused the probe at the greeting: %s", p->host,
                           p->port, diag);
                return;
            }
            probe_send(p, "EHLO %s\r\n", host);
            p->step = P_EHLO;
            break;
        case P_EHLO:
            if (!ok) {
                probe_done(p, "refused", "%s:%d refused the probe's EHLO: %s", p->host, p->port,
                           diag);
                return;
            }
            probe_send(p, "MAIL FROM:<moat-probe@%s>\r\n", host);
            p->step = P_MAIL;
            break;
        case P_MAIL:
            if (!ok) {
                late_reply(p, &r, diag, "MAIL");
                return;
            }
            probe_send(p, "RCPT TO:<%s>\r\n", p->rcpt);
            p->step = P_RCPT;
            break;
        case P_RCPT:
            p->step = P_DONE;
            if (!ok)
                late_reply(p, &r, diag, "RCPT");
            else
                probe_done(p, "accepts", "%s:%d accepted a recipient from %s (%s)", p->host,
                           p->port, p->job->source, diag);
            return;
        default:
            return;
        }
    }
}

static void probe_event(struct bufferevent *bev, short what, void *arg)
{
    struct probe *p = arg;
    if (what & BEV_EVENT_CONNECTED) {
        p->step = P_GREETING;
        return;
    }
    int e = EVUTIL_SOCKET_ERROR();
    if (what & BEV_EVENT_TIMEOUT) {
        if (p->step == P_CONNECT)
            probe_done(p, "refused", "%s:%d did not answer the probe from %s within %d s "
                       "(filtered)", p->host, p->port, p->job->source, PROBE_TIMEOUT);
        else
            probe_done(p, "unknown", "%s:%d stopped answering the probe", p->host, p->port);
    } else if (p->step <= P_GREETING) {
        /* refused or reset before a greeting: what a firewall rule does */
        probe_done(p, "refused", "%s:%d refused the connection from %s (%s)", p->host, p->port,
                   p->job->source, (what & BEV_EVENT_EOF) ? "closed" : evutil_socket_error_to_string(e));
    } else {
        probe_done(p, "refused", "%s:%d closed the connection from %s during the probe",
                   p->host, p->port, p->job->source);
    }
}

static bool fill_addr(struct sockaddr_storage *ss, socklen_t *len, const char *text, int port)
{
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof *ss);
    if (inet_pton(AF_INET, text, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        *len = sizeof *s4;
        return true;
    }
    if (inet_pton(AF_INET6, text, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *len = sizeof *s6;
        return true;
    }
    return false;
}

/* probe_start - bind to the probe source, then connect */
static void probe_start(struct probe *p)
{
    struct sockaddr_storage src;
    socklen_t slen;
    if (!fill_addr(&src, &slen, p->job->source, 0)) {
        probe_done(p, "unknown", "The probe source %s is not an IP address.", p->job->source);
        return;
    }
    if (src.ss_family != p->sa.ss_family) {
        probe_done(p, "unknown", "The probe source %s and the route %s are of different "
                   "address families.", p->job->source, p->host);
        return;
    }
    int fd = socket(p->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        probe_done(p, "unknown", "socket: %s", strerror(errno));
        return;
    }
    if (bind(fd, (struct sockaddr *)&src, slen) < 0) {
        int e = errno;
        close(fd);
        probe_done(p, "unknown", "Cannot send from the probe source %s: %s (is it an address "
                   "of this machine?)", p->job->source, strerror(e));
        return;
    }
    p->bev = bufferevent_socket_new(p->job->env.base, fd, BEV_OPT_CLOSE_ON_FREE);
    struct timeval tv = { PROBE_TIMEOUT, 0 };
    bufferevent_set_timeouts(p->bev, &tv, &tv);
    bufferevent_setcb(p->bev, probe_read, NULL, probe_event, p);
    bufferevent_enable(p->bev, EV_READ | EV_WRITE);
    p->step = P_CONNECT;
    if (bufferevent_socket_connect(p->bev, (struct sockaddr *)&p->sa, (int)p->salen) < 0) {
        /* an immediate failure (ECONNREFUSED on loopback) is reported here */
        probe_done(p, "refused", "%s:%d refused the connection from %s", p->host, p->port,
                   p->job->source);
    }
}

static void probe_resolved(void *arg, const struct dns_result *r)
{
    struct probe *p = arg;
    if (r->status == DNS_OK && r->n > 0 && fill_addr(&p->sa, &p->salen, r->rr[0].text, p->port))
        probe_start(p);
    else if (r->status == DNS_TEMPFAIL || r->status == DNS_BOGUS)
        probe_done(p, "unknown", "Could not resolve %s: %s (unknown, not failed).", p->host,
                   r->why[0] ? r->why : dns_status_name(r->status));
    else
        probe_done(p, "unknown", "The route host %s has no address (%s).", p->host,
                   dns_status_name(r->status));
}

void connect_lockdown_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                          void *arg)
{
    const char *src = json_string_value(json_object_get(input, "probe_source"));
    if (src == NULL || *src == '\0') {
        connect_finish_later(env, done, arg, CONNECT_PASS, json_pack("{s:n}", "probe_source"),
                             "Configuration recorded; no probe source configured, so Moat "
                             "cannot test the lockdown from outside.");
        return;
    }
    struct lk_job *j = xcalloc(1, sizeof *j);
    j->env = *env;
    j->done = done;
    j->arg = arg;
    str_copy(j->source, sizeof j->source, src);
    j->items = json_array();
    json_t *routes = json_object_get(input, "routes");
    j->probes = xcalloc(json_array_size(routes) + 1, sizeof *j->probes);
    size_t i;
    json_t *v;
    json_array_foreach(routes, i, v) {
        const char *host = json_string_value(json_object_get(v, "host"));
        const char *dom = json_string_value(json_object_get(v, "domain"));
        int port = (int)json_integer_value(json_object_get(v, "port"));
        bool dup = false;
        for (size_t k = 0; k < j->n; k++)
            dup |= strcmp(j->probes[k].host, host) == 0 && j->probes[k].port == port;
        if (host == NULL || dom == NULL || dup)
            continue;
        struct probe *p = &j->probes[j->n++];
        p->job = j;
        str_copy(p->host, sizeof p->host, host);
        str_copy(p->domain, sizeof p->domain, dom);
        const char *ta = json_string_value(json_object_get(input, "test_address"));
        const char *at = ta ? strrchr(ta, '@') : NULL;
        if (at != NULL && connect_domain_covers(dom, at + 1))
            str_copy(p->rcpt, sizeof p->rcpt, ta);
        else
            xsnprintf(p->rcpt, sizeof p->rcpt, "postmaster@%s", dom);
        p->port = port;
        p->item = json_pack("{s:s, s:i, s:s, s:s}", "host", host, "port", port, "status",
                            "unknown", "message", "");
        json_array_append_new(j->items, p->item);
    }
    j->pending = j->n;
    if (j->n == 0) {
        struct timeval now = { 0, 0 };
        if (event_base_once(env->base, -1, EV_TIMEOUT, lk_finish_cb, j, &now) != 0)
            log_fatal("event=connect_bug reason=\"event_base_once failed\"");
        return;
    }
    /* hold one count so a synchronous failure inside the loop cannot finish early */
    j->pending++;
    for (size_t k = 0; k < j->n; k++) {
        struct probe *p = &j->probes[k];
        if (fill_addr(&p->sa, &p->salen, p->host, p->port))
            probe_start(p);
        else
            dns_query(env->dns, p->host, DNS_T_A, probe_resolved, p);
    }
    if (--j->pending == 0) {
        /* every probe already finished synchronously: report on the next turn */
        j->pending = 0;
        struct timeval now = { 0, 0 };
        if (event_base_once(env->base, -1, EV_TIMEOUT, lk_finish_cb, j, &now) != 0)
            log_fatal("event=connect_bug reason=\"event_base_once failed\"");
    }
}

json_t *connect_lockdown_instructions(struct store *st, struct error *err)
{
    struct connect_org org;
    struct store_domain *d = NULL;
    size_t n = 0;

    if (connect_org_load(st, &org, err) < 0 || store_domain_list(st, &d, &n, err) < 0)
        return NULL;
    struct connect_art_route *r = xcalloc(n ? n : 1, sizeof *r);
    size_t nr = 0;
    for (size_t i = 0; i < n; i++) {
        if (!store_domain_internal(&d[i]) || d[i].route.host == NULL)
            continue;
        r[nr].domain = d[i].name;
        r[nr].host = d[i].route.host;
        r[nr].port = d[i].route.port;
        nr++;
    }
    json_t *out = connect_art_lockdown(&org, r, nr);
    free(r);
    store_domains_free(d, n);
    return out;
}
