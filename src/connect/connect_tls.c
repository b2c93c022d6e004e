/*
 * connect_tls.c - TLS probes ("tested before enforced", issue 6) and the
 * Connect task tls_policies.
 *
 * Two probes, both check-shaped (run on the loop, answer through done) so
 * the API runs them with connect_run and the task reuses them:
 *   connect_tls_probe_run  - an outbound policy: the domain's MX hosts (MX,
 *                            then A/AAAA through src/dns), each classified
 *                            by the shared STARTTLS probe (smtp_tlsprobe.h)
 *                            as strict / relaxed / unsupported, or error
 *                            when unreachable; PASS when the mode is met;
 *   connect_route_probe_run - one delivery route host:port against its
 *                            configured tls (relaxed / strict).
 * The task: every route probed (a route below its mode FAILS the task: a
 * failing route blocks enforcement) and every outbound policy's last probe
 * shown; PASS when every enforced policy met its mode or was overridden.
 *
 * Input/details shapes are documented at each run function; the API
 * (api_tls.c) stores the policy probe's details in the policy row.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <event2/event.h>
#include "../dns/dns.h"
#include "../smtp/smtp_tlsprobe.h"
#include "../deliver/deliver_mtasts.h"
#include "../deliver/deliver_mx.h"
#include "../deliver/deliver_dane.h"
#include "connect_artefacts.h"
#include "connect_checks.h"

#define TLSP_MAX_MX 10
#define TLSP_MAX_ROUTES 64

/* need - the class a mode needs: 0 strict, 1 relaxed, 3 anything */
static int need_of(const char *mode, const char *fallback)
{
    if (strcmp(mode, "verify") == 0 || strcmp(mode, "mta-sts") == 0 || strcmp(mode, "strict") == 0)
        return SMTP_TLS_STRICT;
    if (strcmp(mode, "encrypt") == 0 || strcmp(mode, "relaxed") == 0)
        return SMTP_TLS_RELAXED;
    if (strcmp(mode, "dane") == 0 && fallback != NULL)
        return need_of(fallback, NULL);
    return SMTP_TLS_UNREACHABLE + 1;
}

/* verdict_name - a probe verdict: strict/relaxed/unsupported, "error" when unreachable */
static const char *verdict_name(enum smtp_tls_class c)
{
    return c == SMTP_TLS_UNREACHABLE ? "error" : smtp_tls_class_name(c);
}

static void client_config(const struct connect_env *env, struct smtp_client_config *cc)
{
    memset(cc, 0, sizeof *cc);
    cc->base = env->base;
    cc->tls_ctx = env->tls_client;
    cc->helo_name = env->hostname;
    int64_t tc = env->settings ? env->settings->delivery_timeout_connect : 30;
    cc->timeout_connect = (int)(tc > 0 && tc < 20 ? tc : 20);
    cc->timeout_command = 60;
    cc->timeout_data = 120;
}

static bool sockaddr_of(const char *text, int port, struct sockaddr_storage *sa, socklen_t *len)
{
    struct sockaddr_in *s4 = (struct sockaddr_in *)sa;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)sa;
    memset(sa, 0, sizeof *sa);
    if (inet_pton(AF_INET, text, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        *len = sizeof *s4;
    } else if (inet_pton(AF_INET6, text, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *len = sizeof *s6;
    } else {
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------ */
/* one outbound policy                                                  */
/* ------------------------------------------------------------------ */

struct tp_job;

struct tp_mx {
    struct tp_job *job;
    char host[256];
    int pref;
    bool aaaa_tried;
    json_t *item;                 /* {host, pref, address, verdict, reason}, owned by job->mx */
    int cls;                      /* enum smtp_tls_class; -1 while pending */
};

struct tp_job {
    struct connect_env env;
    struct smtp_client_config cc;
    connect_done_cb done;
    void *arg;
    char domain[256];
    char mode[16];
    char fallback[16];
    int port;
    json_t *mx;
    json_t *patterns;             /* mode mta-sts: the policy's mx patterns, else NULL */
    struct tp_mx hosts[TLSP_MAX_MX];
    size_t n_hosts, pending;
};

static void tp_finish(struct tp_job *j)
{
    int worst = SMTP_TLS_STRICT;
    const struct tp_mx *w = NULL;
    for (size_t i = 0; i < j->n_hosts; i++)
        if (j->hosts[i].cls >= worst) {
            worst = j->hosts[i].cls;
            w = &j->hosts[i];
        }
    int need = need_of(j->mode, j->fallback);
    bool meets = j->n_hosts > 0 && worst <= need;
    char reason[600];
    if (w == NULL)
        xsnprintf(reason, sizeof reason, "no MX host to probe");
    else
        xsnprintf(reason, sizeof reason, "%s: %s", w->host,
                  json_string_value(json_object_get(w->item, "reason")));
    const char *verdict = verdict_name((enum smtp_tls_class)worst);
    json_t *details = json_pack("{s:s, s:s, s:s, s:s, s:b, s:O}", "domain", j->domain, "mode",
                                j->mode, "verdict", verdict, "reason", reason, "meets", meets,
                                "mx", j->mx);
    json_decref(j->mx);
    json_decref(j->patterns);
    connect_done_cb done = j->done;
    void *arg = j->arg;
    char dom[256], mode[16];
    str_copy(dom, sizeof dom, j->domain);
    str_copy(mode, sizeof mode, j->mode);
    free(j);
    log_info("event=tls_probe domain=%s mode=%s verdict=%s meets=%s", dom, mode, verdict,
             meets ? "yes" : "no");
    connect_finish(done, arg, meets ? CONNECT_PASS : CONNECT_FAIL, details,
                   meets ? "%s meets TLS policy \"%s\" (%s)."
                         : "%s does not meet TLS policy \"%s\": %s.",
                   dom, mode, meets ? verdict : reason);
}

static void tp_host_done(struct tp_mx *h, int cls, const char *address, const char *reason)
{
    h->cls = cls;
    json_object_set_new(h->item, "verdict", json_string(verdict_name((enum smtp_tls_class)cls)));
    json_object_set_new(h->item, "reason", json_string(reason));
    if (address)
        json_object_set_new(h->item, "address", json_string(address));
    if (--h->job->pending == 0)
        tp_finish(h->job);
}

static void tp_probed(void *arg, struct smtp_conn *c, enum smtp_tls_class cls,
                      enum smtp_conn_error e, const char *why)
{
    struct tp_mx *h = arg;
    if (c != NULL) {
        if (smtp_conn_tls_version(c))
            json_object_set_new(h->item, "tls_version", json_string(smtp_conn_tls_version(c)));
        smtp_conn_quit(c);
    }
    tp_host_done(h, (int)cls, NULL, why);
}

static void tp_addr(void *arg, const struct dns_result *r);

static void tp_query_addr(struct tp_mx *h, enum dns_type t)
{
    dns_query(h->job->env.dns, h->host, t, tp_addr, h);
}

static void tp_addr(void *arg, const struct dns_result *r)
{
    struct tp_mx *h = arg;
    struct sockaddr_storage sa;
    socklen_t len;
    if (r->status == DNS_OK && r->n > 0 && sockaddr_of(r->rr[0].text, h->job->port, &sa, &len)) {
        json_object_set_new(h->item, "address", json_string(r->rr[0].text));
        smtp_tls_probe(&h->job->cc, (struct sockaddr *)&sa, len, h->host, tp_probed, h);
        return;
    }
    if ((r->status == DNS_NODATA || r->status == DNS_OK) && !h->aaaa_tried) {
        h->aaaa_tried = true;
        tp_query_addr(h, DNS_T_AAAA);
        return;
    }
    char why[300];
    xsnprintf(why, sizeof why, "no address for %s (%s)", h->host,
              r->why[0] ? r->why : dns_status_name(r->status));
    tp_host_done(h, SMTP_TLS_UNREACHABLE, NULL, why);
}

/* tp_allowed - mode mta-sts: the host matches one of the policy's mx patterns */
static bool tp_allowed(const struct tp_job *j, const char *host)
{
    size_t i;
    json_t *v;
    if (j->patterns == NULL)
        return true;
    json_array_foreach(j->patterns, i, v)
        if (json_is_string(v) && deliver_mx_pattern_match(json_string_value(v), host))
            return true;
    return false;
}

static void tp_add_host(struct tp_job *j, const char *host, int pref)
{
    if (j->n_hosts == TLSP_MAX_MX)
        return;
    if (!tp_allowed(j, host)) {
        /* RFC 8461 4.1: delivery never uses it; shown, not probed */
        json_array_append_new(j->mx, json_pack("{s:s, s:i, s:s, s:s}", "host", host, "pref", pref,
                              "verdict", "excluded", "reason",
                              "not listed in the MTA-STS policy: never used"));
        return;
    }
    struct tp_mx *h = &j->hosts[j->n_hosts++];
    h->job = j;
    h->cls = -1;
    h->pref = pref;
    str_copy(h->host, sizeof h->host, host);
    h->item = json_pack("{s:s, s:i}", "host", host, "pref", pref);
    json_array_append_new(j->mx, h->item);
}

static void tp_fail(struct tp_job *j, enum connect_outcome o, const char *verdict, const char *why)
{
    json_t *details = json_pack("{s:s, s:s, s:s, s:s, s:b, s:O}", "domain", j->domain, "mode",
                                j->mode, "verdict", verdict, "reason", why, "meets", false,
                                "mx", j->mx);
    json_decref(j->mx);
    json_decref(j->patterns);
    connect_done_cb done = j->done;
    void *arg = j->arg;
    char msg[600];
    xsnprintf(msg, sizeof msg, "%s: %s", j->domain, why);
    free(j);
    connect_finish(done, arg, o, details, "%s", msg);
}

static void tp_mx(void *arg, const struct dns_result *r)
{
    struct tp_job *j = arg;
    char why[300];
    if (r->status == DNS_OK) {
        if (r->n == 1 && r->rr[0].text[0] == '\0') {
            tp_fail(j, CONNECT_FAIL, "error", "null MX: the domain accepts no mail (RFC 7505)");
            return;
        }
        for (size_t i = 0; i < r->n; i++)
            if (r->rr[i].text[0])
                tp_add_host(j, r->rr[i].text, r->rr[i].pref);
    } else if (r->status == DNS_NODATA) {
        tp_add_host(j, j->domain, 0);   /* RFC 5321 5.1: the implicit MX */
    } else if (r->status == DNS_NXDOMAIN) {
        tp_fail(j, CONNECT_FAIL, "error", "the domain does not exist (NXDOMAIN)");
        return;
    } else {
        xsnprintf(why, sizeof why, "MX lookup failed: %s",
                  r->why[0] ? r->why : dns_status_name(r->status));
        tp_fail(j, CONNECT_UNKNOWN, "error", why);
        return;
    }
    if (j->n_hosts == 0) {
        tp_fail(j, CONNECT_FAIL, "error", j->patterns ? "no MX host matches the MTA-STS policy"
                                                      : "no usable MX host");
        return;
    }
    j->pending = j->n_hosts;
    size_t n = j->n_hosts;
    for (size_t i = 0; i < n; i++)
        tp_query_addr(&j->hosts[i], DNS_T_A);
}

/* tp_dane_done - mode dane: deliver_dane_probe's per-MX results.  A host
 * meets the policy with a TLSA match (strict), with secure but unusable
 * TLSA records (TLS without authentication: relaxed), or where DANE does not
 * apply when the fallback is opportunistic; a TLSA mismatch, a bogus answer,
 * or an insecure host under an encrypt/verify fallback (probe it with that
 * mode) do not. */
static void tp_dane_done(void *arg, bool ok, const char *json_text)
{
    struct tp_job *j = arg;
    json_t *arr = json_loads(json_text ? json_text : "[]", 0, NULL);
    int worst = SMTP_TLS_STRICT;
    const char *why = "no MX host to probe";
    bool meets = ok && json_array_size(arr) > 0;
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        const char *res = json_string_value(json_object_get(v, "result"));
        const char *detail = json_string_value(json_object_get(v, "detail"));
        int cls;
        bool ok_host;
        if (res && strcmp(res, "TLSA match") == 0) {
            cls = SMTP_TLS_STRICT;
            ok_host = true;
        } else if (res && strcmp(res, "encrypt only") == 0) {
            cls = SMTP_TLS_RELAXED;
            ok_host = true;
        } else if (res && strcmp(res, "insecure: fallback") == 0) {
            cls = SMTP_TLS_UNSUPPORTED;
            ok_host = strcmp(j->fallback, "opportunistic") == 0;
        } else {
            cls = res && strcmp(res, "unreachable") == 0 ? SMTP_TLS_UNREACHABLE
                                                          : SMTP_TLS_UNSUPPORTED;
            ok_host = false;
        }
        json_array_append_new(j->mx, json_pack("{s:O, s:s, s:s, s:s}", "host",
                              json_object_get(v, "mx"), "verdict", verdict_name(cls),
                              "dane", res ? res : "", "reason", detail && *detail ? detail
                              : res ? res : ""));
        if (!ok_host && meets) {
            meets = false;
            why = detail && *detail ? detail : res ? res : "DANE check failed";
        }
        if (cls > worst)
            worst = cls;
    }
    if (meets)
        why = "every MX host meets the DANE policy";
    char reason[600];
    str_copy(reason, sizeof reason, why);
    json_decref(arr);
    const char *verdict = verdict_name((enum smtp_tls_class)worst);
    json_t *details = json_pack("{s:s, s:s, s:s, s:s, s:b, s:O}", "domain", j->domain, "mode",
                                j->mode, "verdict", verdict, "reason", reason, "meets", meets,
                                "mx", j->mx);
    json_decref(j->mx);
    json_decref(j->patterns);
    connect_done_cb done = j->done;
    void *darg = j->arg;
    char dom[256];
    str_copy(dom, sizeof dom, j->domain);
    free(j);
    log_info("event=tls_probe domain=%s mode=dane verdict=%s meets=%s", dom, verdict,
             meets ? "yes" : "no");
    connect_finish(done, darg, meets ? CONNECT_PASS : CONNECT_FAIL, details,
                   meets ? "%s meets TLS policy \"dane\" (%s)."
                         : "%s does not meet TLS policy \"dane\": %s.", dom,
                   meets ? verdict : reason);
}

/* connect_tls_probe_run - input {"domain", "mode", "fallback"?}; details
 * {domain, mode, verdict, reason, meets, mx: [{host, pref, address,
 * verdict, reason, tls_version?}]} */
void connect_tls_probe_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                           void *arg)
{
    struct tp_job *j = xcalloc(1, sizeof *j);
    j->env = *env;
    j->done = done;
    j->arg = arg;
    j->mx = json_array();
    client_config(env, &j->cc);
    const char *dom = json_string_value(json_object_get(input, "domain"));
    const char *mode = json_string_value(json_object_get(input, "mode"));
    const char *fb = json_string_value(json_object_get(input, "fallback"));
    str_copy(j->domain, sizeof j->domain, dom ? dom : "");
    str_copy(j->mode, sizeof j->mode, mode ? mode : "opportunistic");
    str_copy(j->fallback, sizeof j->fallback, fb ? fb : "opportunistic");
    json_t *pat = json_object_get(input, "mx_patterns");
    j->patterns = json_is_array(pat) ? json_incref(pat) : NULL;
    j->port = env->settings && env->settings->delivery_port > 0 ? (int)env->settings->delivery_port
                                                                : 25;
    if (env->dns == NULL) {
        json_t *details = json_pack("{s:s, s:s, s:s, s:s, s:b, s:[]}", "domain", j->domain, "mode",
                                    j->mode, "verdict", "error", "reason", "no resolver", "meets",
                                    false, "mx");
        json_decref(j->mx);
        json_decref(j->patterns);
        free(j);
        connect_finish_later(env, done, arg, CONNECT_UNKNOWN, details, "No resolver configured.");
        return;
    }
    if (strcmp(j->mode, "dane") == 0) {
        /* TLSA from validated answers, a DANE-authenticated test connection */
        deliver_dane_probe(env->dns, &j->cc, j->domain, j->port, tp_dane_done, j);
        return;
    }
    dns_query(env->dns, j->domain, DNS_T_MX, tp_mx, j);
}

/* ------------------------------------------------------------------ */
/* MTA-STS: the TXT record and the policy host's address                */
/* ------------------------------------------------------------------ */

struct sr_job {
    struct connect_env env;
    connect_done_cb done;
    void *arg;
    char domain[256];
    char id[MTASTS_ID_MAX];
};

static void sr_addr(void *arg, const struct dns_result *r)
{
    struct sr_job *j = arg;
    bool ok = r->status == DNS_OK && r->n > 0;
    json_t *d = json_pack("{s:s, s:s}", "domain", j->domain, "id", j->id);
    if (ok)
        json_object_set_new(d, "ip", json_string(r->rr[0].text));
    connect_done_cb done = j->done;
    void *a = j->arg;
    char dom[256];
    str_copy(dom, sizeof dom, j->domain);
    free(j);
    if (ok)
        connect_finish(done, a, CONNECT_PASS, d, "TXT id %s", json_string_value(json_object_get(d, "id")));
    else
        connect_finish(done, a, CONNECT_FAIL, d, "mta-sts.%s has no address (%s)", dom,
                       r->why[0] ? r->why : dns_status_name(r->status));
}

static void sr_txt(void *arg, const struct dns_result *r)
{
    struct sr_job *j = arg;
    size_t valid = 0;
    char id[MTASTS_ID_MAX];
    for (size_t i = 0; r->status == DNS_OK && i < r->n; i++)
        if (mtasts_txt_parse(r->rr[i].text, id) == 0 && valid++ == 0)
            str_copy(j->id, sizeof j->id, id);
    if (valid != 1) {
        json_t *d = json_pack("{s:s}", "domain", j->domain);
        connect_done_cb done = j->done;
        void *a = j->arg;
        char dom[256];
        str_copy(dom, sizeof dom, j->domain);
        free(j);
        connect_finish(done, a, r->status == DNS_TEMPFAIL ? CONNECT_UNKNOWN : CONNECT_FAIL, d,
                       valid ? "_mta-sts.%s has %zu STSv1 TXT records (RFC 8461 3.1: exactly one)"
                             : "_mta-sts.%s has no valid \"v=STSv1; id=...\" TXT record",
                       dom, valid);
        return;
    }
    char host[300];
    xsnprintf(host, sizeof host, "mta-sts.%s", j->domain);
    dns_query(j->env.dns, host, DNS_T_A, sr_addr, j);
}

/* connect_mtasts_resolve_run - input {"domain"}; details {domain, id, ip}:
 * PASS when the TXT record is valid and mta-sts.<domain> has an address */
void connect_mtasts_resolve_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                                void *arg)
{
    struct sr_job *j = xcalloc(1, sizeof *j);
    j->env = *env;
    j->done = done;
    j->arg = arg;
    const char *dom = json_string_value(json_object_get(input, "domain"));
    str_copy(j->domain, sizeof j->domain, dom ? dom : "");
    if (env->dns == NULL) {
        free(j);
        connect_finish_later(env, done, arg, CONNECT_UNKNOWN, json_object(), "No resolver configured.");
        return;
    }
    char name[300];
    xsnprintf(name, sizeof name, "_mta-sts.%s", j->domain);
    dns_query(env->dns, name, DNS_T_TXT, sr_txt, j);
}

/* ------------------------------------------------------------------ */
/* routes                                                               */
/* ------------------------------------------------------------------ */

struct rp_job;

struct rp_route {
    struct rp_job *job;
    char host[256];
    int port;
    char tls[16];                  /* configured: opportunistic, relaxed, strict */
    json_t *item;
};

struct rp_job {
    struct connect_env env;
    struct smtp_client_config cc;
    connect_done_cb done;
    void *arg;
    json_t *routes, *policies;
    struct rp_route r[TLSP_MAX_ROUTES];
    size_t n, pending;
    bool single;                   /* connect_route_probe_run: one route, its own message */
};

static void rp_finish(struct rp_job *j)
{
    size_t i, bad_routes = 0, bad_policies = 0, n_policies = 0;
    json_t *v;
    const char *first = NULL;
    json_array_foreach(j->routes, i, v)
        if (!json_is_true(json_object_get(v, "meets")) && bad_routes++ == 0)
            first = json_string_value(json_object_get(v, "message"));
    char pol_first[400] = "";
    json_array_foreach(j->policies, i, v) {
        n_policies++;
        bool enforced = json_is_true(json_object_get(v, "enforced"));
        bool ok = json_is_true(json_object_get(v, "meets")) || json_is_true(json_object_get(v, "override"));
        json_object_set_new(v, "ok", json_boolean(!enforced || ok));
        if (enforced && !ok && bad_policies++ == 0)
            xsnprintf(pol_first, sizeof pol_first, "The enforced TLS policy for %s did not pass "
                      "its probe: re-probe it (`moat tls policy probe %s`).",
                      json_string_value(json_object_get(v, "domain")),
                      json_string_value(json_object_get(v, "domain")));
    }
    json_t *details = json_pack("{s:O, s:O}", "routes", j->routes, "policies", j->policies);
    enum connect_outcome oc = CONNECT_PASS;
    char msg[512];
    if (j->single) {
        json_t *it = json_array_get(j->routes, 0);
        oc = json_is_true(json_object_get(it, "meets")) ? CONNECT_PASS : CONNECT_FAIL;
        xsnprintf(msg, sizeof msg, "%s", json_string_value(json_object_get(it, "message")));
        json_decref(details);
        details = json_incref(it);
    } else if (bad_routes > 0) {
        oc = CONNECT_FAIL;
        xsnprintf(msg, sizeof msg, "%s", first);
    } else if (bad_policies > 0) {
        oc = CONNECT_FAIL;
        xsnprintf(msg, sizeof msg, "%s", pol_first);
    } else {
        xsnprintf(msg, sizeof msg, "Every route meets its TLS mode (%zu route%s); %zu outbound "
                  "TLS polic%s, each enforced one tested or overridden.", j->n, j->n == 1 ? "" : "s",
                  n_policies, n_policies == 1 ? "y" : "ies");
    }
    json_decref(j->routes);
    json_decref(j->policies);
    connect_done_cb done = j->done;
    void *arg = j->arg;
    free(j);
    connect_finish(done, arg, oc, details, "%s", msg);
}

static void rp_done(struct rp_route *r, int cls, const char *why)
{
    int need = need_of(r->tls, NULL);
    bool meets = cls <= need;
    const char *verdict = verdict_name((enum smtp_tls_class)cls);
    json_object_set_new(r->item, "verdict", json_string(verdict));
    json_object_set_new(r->item, "reason", json_string(why));
    json_object_set_new(r->item, "meets", json_boolean(meets));
    json_object_set_new(r->item, "message", meets
        ? json_sprintf("%s:%d offers TLS %s (%s); configured %s.", r->host, r->port, verdict, why, r->tls)
        : json_sprintf("The route %s:%d is configured with TLS %s but offers %s (%s): a failing "
                       "route blocks enforcement.", r->host, r->port, r->tls, verdict, why));
    if (--r->job->pending == 0)
        rp_finish(r->job);
}

static void rp_probed(void *arg, struct smtp_conn *c, enum smtp_tls_class cls,
                      enum smtp_conn_error e, const char *why)
{
    if (c != NULL)
        smtp_conn_quit(c);
    rp_done(arg, (int)cls, why);
}

static void rp_resolved(void *arg, const struct dns_result *res)
{
    struct rp_route *r = arg;
    struct sockaddr_storage sa;
    socklen_t len;
    if (res->status == DNS_OK && res->n > 0 && sockaddr_of(res->rr[0].text, r->port, &sa, &len)) {
        json_object_set_new(r->item, "address", json_string(res->rr[0].text));
        smtp_tls_probe(&r->job->cc, (struct sockaddr *)&sa, len, r->host, rp_probed, r);
        return;
    }
    char why[300];
    xsnprintf(why, sizeof why, "cannot resolve %s: %s", r->host,
              res->why[0] ? res->why : dns_status_name(res->status));
    rp_done(r, SMTP_TLS_UNREACHABLE, why);
}

static void rp_finish_cb(evutil_socket_t fd, short what, void *arg)
{
    rp_finish(arg);
}

static void rp_start(const struct connect_env *env, struct rp_job *j)
{
    j->pending = j->n;
    if (j->n == 0) {
        struct timeval now = { 0, 0 };
        if (event_base_once(env->base, -1, EV_TIMEOUT, rp_finish_cb, j, &now) != 0)
            log_fatal("event=connect_bug reason=\"event_base_once failed\"");
        return;
    }
    size_t n = j->n;
    for (size_t k = 0; k < n; k++) {
        struct rp_route *r = &j->r[k];
        struct sockaddr_storage sa;
        socklen_t len;
        if (sockaddr_of(r->host, r->port, &sa, &len))
            smtp_tls_probe(&j->cc, (struct sockaddr *)&sa, len, r->host, rp_probed, r);
        else if (env->dns)
            dns_query(env->dns, r->host, DNS_T_A, rp_resolved, r);
        else
            rp_done(r, SMTP_TLS_UNREACHABLE, "no resolver configured");
    }
}

static struct rp_job *rp_new(const struct connect_env *env, connect_done_cb done, void *arg)
{
    struct rp_job *j = xcalloc(1, sizeof *j);
    j->env = *env;
    j->done = done;
    j->arg = arg;
    client_config(env, &j->cc);
    j->routes = json_array();
    j->policies = json_array();
    return j;
}

static void rp_add(struct rp_job *j, const char *host, int port, const char *tls, const char *domain)
{
    for (size_t k = 0; k < j->n; k++)
        if (strcmp(j->r[k].host, host) == 0 && j->r[k].port == port) {
            if (need_of(tls, NULL) < need_of(j->r[k].tls, NULL)) {
                str_copy(j->r[k].tls, sizeof j->r[k].tls, tls);
                json_object_set_new(j->r[k].item, "tls", json_string(tls));
            }
            if (domain)
                json_array_append_new(json_object_get(j->r[k].item, "domains"), json_string(domain));
            return;
        }
    if (j->n == TLSP_MAX_ROUTES)
        return;
    struct rp_route *r = &j->r[j->n++];
    r->job = j;
    str_copy(r->host, sizeof r->host, host);
    r->port = port > 0 ? port : 25;
    str_copy(r->tls, sizeof r->tls, tls);
    r->item = json_pack("{s:s, s:i, s:s, s:[]}", "host", host, "port", r->port, "tls", tls,
                        "domains");
    if (domain)
        json_array_append_new(json_object_get(r->item, "domains"), json_string(domain));
    json_array_append_new(j->routes, r->item);
}

/* connect_route_probe_run - input {"host", "port", "tls"}; details {host,
 * port, tls, verdict, reason, meets, message, address?} */
void connect_route_probe_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                             void *arg)
{
    struct rp_job *j = rp_new(env, done, arg);
    j->single = true;
    const char *host = json_string_value(json_object_get(input, "host"));
    const char *tls = json_string_value(json_object_get(input, "tls"));
    rp_add(j, host ? host : "", (int)json_integer_value(json_object_get(input, "port")),
           tls ? tls : "opportunistic", NULL);
    rp_start(env, j);
}

/* ------------------------------------------------------------------ */
/* the Connect task                                                     */
/* ------------------------------------------------------------------ */

static json_t *policy_json(const struct store_tls_policy *p)
{
    json_t *d = json_loads(p->probe_details ? p->probe_details : "{}", 0, NULL);
    bool meets = d && json_is_true(json_object_get(d, "meets"));
    json_decref(d);
    return json_pack("{s:s, s:s, s:b, s:b, s:s, s:s, s:I, s:b}", "domain", p->domain, "mode",
                     store_tls_policy_mode_name(p->mode), "enforced", p->enforced, "override",
                     p->override, "probe_verdict", p->probe_verdict ? p->probe_verdict : "",
                     "probe_reason", p->probe_reason ? p->probe_reason : "", "probe_time",
                     (json_int_t)p->probe_time, "meets", meets);
}

json_t *connect_tls_prepare(struct store *st, struct error *err)
{
    struct store_domain *d = NULL;
    struct store_tls_policy *p = NULL;
    size_t n = 0, np = 0;
    if (store_domain_list(st, &d, &n, err) < 0)
        return NULL;
    if (store_tls_policy_list(st, &p, &np, err) < 0) {
        store_domains_free(d, n);
        return NULL;
    }
    json_t *routes = json_array(), *pols = json_array();
    for (size_t i = 0; i < n; i++)
        if (store_domain_internal(&d[i]) && d[i].route.host != NULL)
            json_array_append_new(routes, json_pack("{s:s, s:s, s:i, s:s}", "domain", d[i].name,
                                  "host", d[i].route.host, "port", d[i].route.port, "tls",
                                  store_tls_mode_name(d[i].route.tls)));
    for (size_t i = 0; i < np; i++)
        json_array_append_new(pols, policy_json(&p[i]));
    store_domains_free(d, n);
    store_tls_policies_free(p, np);
    return json_pack("{s:o, s:o}", "routes", routes, "policies", pols);
}

void connect_tls_run(const struct connect_env *env, json_t *input, connect_done_cb done, void *arg)
{
    struct rp_job *j = rp_new(env, done, arg);
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(input, "routes"), i, v) {
        const char *host = json_string_value(json_object_get(v, "host"));
        const char *tls = json_string_value(json_object_get(v, "tls"));
        if (host != NULL)
            rp_add(j, host, (int)json_integer_value(json_object_get(v, "port")),
                   tls ? tls : "opportunistic", json_string_value(json_object_get(v, "domain")));
    }
    json_decref(j->policies);
    j->policies = json_deep_copy(json_object_get(input, "policies"));
    if (j->policies == NULL)
        j->policies = json_array();
    rp_start(env, j);
}

static json_t *step(const char *title, const char *text)
{
    return json_sprintf("%s: %s", title, text);
}

json_t *connect_tls_instructions(struct store *st, struct error *err)
{
    struct store_tls_policy *p = NULL;
    size_t np = 0;
    if (store_tls_policy_list(st, &p, &np, err) < 0)
        return NULL;
    json_t *steps = json_array(), *arts = json_array();
    json_array_append_new(steps, step("What the modes mean",
        "opportunistic: STARTTLS when the server offers it, else plain text (the default). "
        "encrypt: TLS required, the certificate is not checked. verify: TLS required, the "
        "certificate must be trusted and name the MX host. dane: the domain's DNSSEC-signed TLSA "
        "records decide (RFC 7672), with a fallback mode where DANE does not apply. mta-sts: the "
        "domain's published MTA-STS policy decides (RFC 8461)."));
    json_array_append_new(steps, step("Tested before enforced",
        "Adding a policy (`moat tls policy add DOMAIN MODE`) probes the domain's MX hosts first; "
        "it is enforced only when the probe meets the mode. Otherwise it is stored as report-only "
        "(delivery stays opportunistic and logs what it would have refused) unless you pass "
        "--override, which is audit-logged."));
    json_array_append_new(steps, step("Routes to your mail server",
        "A route with tls relaxed or strict is probed the same way; the task fails while a route "
        "does not meet its mode."));
    json_array_append_new(steps, step("Your own domains (optional)",
        "To ask senders to use TLS towards you, publish an MTA-STS policy at "
        "https://mta-sts.<your domain>/.well-known/mta-sts.txt with TXT _mta-sts.<your domain> "
        "\"v=STSv1; id=<change me on every edit>\", or DNSSEC-sign your zone and publish TLSA "
        "records for Moat's certificate at _25._tcp.<mx host>."));
    struct buf b;
    buf_init(&b);
    for (size_t i = 0; i < np; i++)
        buf_printf(&b, "%s: %s%s%s\n", p[i].domain, store_tls_policy_mode_name(p[i].mode),
                   p[i].enforced ? "" : " (report only)",
                   p[i].override ? " (enforced by override)" : "");
    buf_append(&b, "", 1);
    json_array_append_new(arts, connect_artefact("text", "Domains with an outbound TLS policy",
                                                 np ? (const char *)b.data : "none yet\n"));
    /* optional: MTA-STS for the organisation's own domains, naming Moat's hosts */
    struct connect_org org;
    struct store_domain *d = NULL;
    size_t nd = 0;
    if (connect_org_load(st, &org, err) == 0 && store_domain_list(st, &d, &nd, err) == 0) {
        buf_reset(&b);
        for (size_t i = 0; i < nd; i++)
            if (store_domain_internal(&d[i]))
                buf_printf(&b, "_mta-sts.%s. 3600 IN TXT \"v=STSv1; id=%s\"\n", d[i].name,
                           "20260101T000000");
        buf_append(&b, "", 1);
        if (b.len > 1)
            json_array_append_new(arts, connect_artefact("dns", "MTA-STS TXT records (optional; "
                                  "change id whenever the policy changes)", b.data));
        buf_reset(&b);
        buf_printf(&b, "version: STSv1\nmode: testing\n");
        for (size_t i = 0; i < org.n_hosts; i++)
            buf_printf(&b, "mx: %s\n", org.hosts[i]);
        buf_printf(&b, "max_age: 604800\n");
        buf_append(&b, "", 1);
        if (org.n_hosts > 0)
            json_array_append_new(arts, connect_artefact("text", "MTA-STS policy to serve at "
                                  "https://mta-sts.<domain>/.well-known/mta-sts.txt (start with "
                                  "testing, then enforce)", b.data));
        store_domains_free(d, nd);
    }
    memset(err, 0, sizeof *err);   /* the optional part never fails the instructions */
    buf_free(&b);
    store_tls_policies_free(p, np);
    return json_pack("{s:o, s:o}", "steps", steps, "artefacts", arts);
}
