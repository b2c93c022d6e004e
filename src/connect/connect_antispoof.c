/*
 * connect_antispoof.c - the antispoof_bypass task: "Bypass anti-spoofing".
 *
 * Anti-spoofing (policy_antispoof.c) refuses inbound mail whose envelope
 * sender or header From is under an internal domain; outside services that
 * legitimately send in the organisation's name (newsletters, CRM, ticketing)
 * are excepted with bypasses (`moat antispoof bypass add`).  The check
 * verifies both halves against Moat's own listener, with MAIL + RCPT probes
 * (no message is sent):
 *   1. a stranger is refused: from a local address outside every bypass and
 *      every authorised outbound range (the probe source, else a loopback
 *      address), MAIL FROM an internal address must get 550 5.7.1 at RCPT;
 *   2. each bypass of kind ip that covers a local address (loopback ranges in
 *      a lab, the probe source) lets the same transaction through: it must
 *      not be refused by anti-spoofing (recipient validation may still say
 *      what it thinks of the recipient: that is not this task's business).
 * Bypasses no local address can speak from, host and spf bypasses are
 * listed, not probed.
 *
 * Outcomes, worst first: FAIL (a stranger got through: anti-spoofing is off
 * or a bypass is too wide; an excepted source refused), UNKNOWN (the
 * listener unreachable, no source for the stranger), PASS.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <event2/event.h>
#include "../core/cidr.h"
#include "../smtp/smtp_client.h"
#include "connect_artefacts.h"
#include "connect_checks.h"

#define AS_PROBE_TIMEOUT 30           /* seconds per SMTP step against our own listener */
#define AS_MAX_LEGS 5                 /* the stranger and up to four bypasses */
#define AS_REFUSAL "rejected by anti-spoofing policy"

json_t *connect_antispoof_prepare(struct store *st, struct error *err)
{
    struct connect_org org;
    struct store_domain *d = NULL;
    struct store_antispoof_bypass *b = NULL;
    struct store_outbound_host *h = NULL;
    size_t nd = 0, nb = 0, nh = 0;
    json_t *in = NULL;
    if (connect_org_load(st, &org, err) < 0 || store_domain_list(st, &d, &nd, err) < 0)
        return NULL;
    if (store_antispoof_bypass_list(st, &b, &nb, err) < 0 ||
        store_outbound_host_list(st, &h, &nh, err) < 0)
        goto out;
    json_t *doms = json_array(), *byp = json_array(), *hosts = json_array();
    for (size_t i = 0; i < nd; i++)
        if (store_domain_internal(&d[i]))
            json_array_append_new(doms, json_string(d[i].name));
    for (size_t i = 0; i < nb; i++)
        json_array_append_new(byp, json_pack("{s:I, s:s, s:s, s:s}", "id", (json_int_t)b[i].id,
                                             "kind", store_antispoof_kind_name(b[i].kind),
                                             "value", b[i].value, "domain", b[i].domain));
    for (size_t i = 0; i < nh; i++)
        json_array_append_new(hosts, json_string(h[i].cidr));
    in = json_pack("{s:o, s:o, s:o, s:o}", "org", connect_org_to_json(&org), "domains", doms,
                   "bypasses", byp, "hosts", hosts);
out:
    store_domains_free(d, nd);
    store_antispoof_bypasses_free(b, nb);
    store_outbound_hosts_free(h, nh);
    return in;
}

/* ------------------------------------------------------------------ */
/* run                                                                 */
/* ------------------------------------------------------------------ */

struct as_job;

struct as_leg {
    struct as_job *job;
    bool stranger;
    char bypass[300];                 /* "ip 127.0.0.2/32 (example.com)" */
    char sender[320];
    struct sockaddr_storage src;
    socklen_t srclen;
    char src_text[64];
    struct smtp_client_config ccfg;
    struct smtp_client_rcpt rcpt;
    struct smtp_client_msg msg;
    char rcpt_addr[320];
    bool connected, accepted, spoof_refused;
    int code;
    char reply[SMTP_DIAG_MAX];
};

struct as_job {
    const struct connect_env *env;
    connect_done_cb done;
    void *arg;
    json_t *input;
    struct sockaddr_storage target;
    socklen_t targetlen;
    char target_text[96];
    struct as_leg legs[AS_MAX_LEGS];
    int n_legs, leg;
    json_t *untested;                 /* bypasses not probed, and why */
};

static void as_next(struct as_job *j);

static void as_later(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    as_next(arg);
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

/* in_ranges - sa is inside one of the ranges (JSON strings, or the "value"
 * of bypass objects of kind ip) */
static bool in_ranges(json_t *arr, const struct sockaddr *sa, bool bypasses)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        const char *text = bypasses ? json_string_value(json_object_get(v, "value"))
                                    : json_string_value(v);
        if (bypasses && strcmp(json_string_value(json_object_get(v, "kind")), "ip") != 0)
            continue;
        struct cidr c;
        struct error err = {0};
        if (text != NULL && cidr_parse(text, &c, &err) == 0 && cidr_contains(&c, sa))
            return true;
    }
    return false;
}

/* candidates - the local addresses a probe may speak from: the probe source,
 * then loopback addresses when the listener is on loopback */
static size_t candidates(const struct as_job *j, char cand[12][64])
{
    const char *probe = json_string_value(json_object_get(json_object_get(j->input, "org"),
                                                          "probe_source"));
    bool loop4 = j->target.ss_family == AF_INET &&
                 (ntohl(((const struct sockaddr_in *)&j->target)->sin_addr.s_addr) >> 24) == 127;
    bool loop6 = j->target.ss_family == AF_INET6 &&
                 IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)&j->target)->sin6_addr);
    size_t n = 0;
    if (probe && *probe)
        (void)str_copy(cand[n++], 64, probe);
    if (loop4)
        for (int i = 1; i <= 10; i++)
            xsnprintf(cand[n++], 64, "127.0.0.%d", i);
    if (loop6)
        (void)str_copy(cand[n++], 64, "::1");
    return n;
}

/* pick - a candidate of the target's family outside the authorised
 * outbound ranges, inside (range != NULL) or outside every ip bypass */
static bool pick(struct as_job *j, const struct cidr *range, struct as_leg *l)
{
    char cand[12][64];
    size_t n = candidates(j, cand);
    json_t *hosts = json_object_get(j->input, "hosts");
    json_t *byp = json_object_get(j->input, "bypasses");
    for (size_t i = 0; i < n; i++) {
        if (!set_addr(&l->src, &l->srclen, cand[i]) || l->src.ss_family != j->target.ss_family)
            continue;
        const struct sockaddr *sa = (const struct sockaddr *)&l->src;
        if (in_ranges(hosts, sa, false))
            continue;            /* the outbound role is never checked */
        bool ok = range != NULL ? cidr_contains(range, sa) : !in_ranges(byp, sa, true);
        if (ok) {
            (void)str_copy(l->src_text, sizeof l->src_text, cand[i]);
            return true;
        }
    }
    return false;
}

static void leg_sent(void *arg, struct smtp_conn *c, const struct smtp_send_result *res)
{
    struct as_leg *l = arg;
    if (c != NULL)
        smtp_conn_quit(c);
    l->code = res->codes[0];
    l->accepted = l->code >= 200 && l->code < 300;
    (void)str_copy(l->reply, sizeof l->reply, res->diags[0]);
    l->spoof_refused = l->code == 550 && strstr(l->reply, AS_REFUSAL) != NULL;
    l->job->leg++;
    as_next(l->job);
}

static void leg_ready(void *arg, struct smtp_conn *c, enum smtp_conn_error e, int code,
                      const char *diag)
{
    struct as_leg *l = arg;
    (void)code;
    if (e != SMTP_CONN_OK) {
        (void)str_copy(l->reply, sizeof l->reply, diag ? diag : "connection failed");
        l->job->leg++;
        as_next(l->job);
        return;
    }
    l->connected = true;
    smtp_conn_send(c, &l->msg, leg_sent, l);
}

static void leg_start(struct as_job *j, struct as_leg *l)
{
    l->ccfg.base = j->env->base;
    l->ccfg.helo_name = j->env->hostname;
    l->ccfg.timeout_connect = AS_PROBE_TIMEOUT;
    l->ccfg.timeout_command = AS_PROBE_TIMEOUT;
    l->ccfg.timeout_data = AS_PROBE_TIMEOUT;
    l->ccfg.source = (struct sockaddr *)&l->src;
    l->ccfg.source_len = l->srclen;
    l->msg.qid = "NOQUEUE";
    l->msg.sender = l->sender;
    l->rcpt.addr = l->rcpt_addr;
    l->msg.rcpts = &l->rcpt;
    l->msg.n_rcpts = 1;
    l->msg.flags = SMTP_MSG_PROBE;
    if (smtp_conn_open(&l->ccfg, (struct sockaddr *)&j->target, j->targetlen, "moat",
                       SMTP_CLIENT_TLS_NONE, leg_ready, l) == NULL) {
        (void)str_copy(l->reply, sizeof l->reply, "could not connect from this source address");
        j->leg++;
        struct timeval now = { 0, 0 };
        event_base_once(j->env->base, -1, EV_TIMEOUT, as_later, j, &now);
    }
}

static json_t *leg_json(const struct as_leg *l)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:b, s:i, s:s, s:s}", "leg",
                     l->stranger ? "stranger" : "excepted", "bypass", l->bypass, "source",
                     l->src_text, "sender", l->sender, "connected", l->connected, "code", l->code,
                     "reply", l->reply, "expected",
                     l->stranger ? "550 5.7.1 " AS_REFUSAL : "not refused by anti-spoofing");
}

static void as_finish(struct as_job *j)
{
    struct connect_result r = { .outcome = CONNECT_PASS };
    json_t *legs = json_array();
    const struct as_leg *stranger = NULL, *bad = NULL, *lost = NULL;
    int excepted = 0;
    for (int i = 0; i < j->n_legs; i++) {
        const struct as_leg *l = &j->legs[i];
        json_array_append_new(legs, leg_json(l));
        if (l->stranger)
            stranger = l;
        else if (l->connected && l->spoof_refused && bad == NULL)
            bad = l;
        else if (l->connected)
            excepted++;
        if (!l->connected && lost == NULL)
            lost = l;
    }
    bool off = !j->env->settings->antispoof;
    if (stranger != NULL && stranger->connected && !stranger->spoof_refused) {
        r.outcome = CONNECT_FAIL;
        xsnprintf(r.message, sizeof r.message, "Mail in the name of your domain from %s, which no "
                  "bypass covers, was not refused by anti-spoofing (%d %s)%s.", stranger->src_text,
                  stranger->code, stranger->reply, off ? ": anti-spoofing is off, turn it on "
                  "with `moat settings set antispoof yes`" : "");
    } else if (bad != NULL) {
        r.outcome = CONNECT_FAIL;
        xsnprintf(r.message, sizeof r.message, "The bypass %s does not let mail through from %s: "
                  "%s", bad->bypass, bad->src_text, bad->reply);
    } else if (stranger == NULL) {
        r.outcome = CONNECT_UNKNOWN;
        xsnprintf(r.message, sizeof r.message, "Moat could not test that a stranger is refused: "
                  "every local address it could speak from is excepted. Set a probe source "
                  "address outside the bypasses in the organisation task.");
    } else if (lost != NULL) {
        r.outcome = CONNECT_UNKNOWN;
        xsnprintf(r.message, sizeof r.message, "Moat's own SMTP listener %s could not be reached "
                  "from %s: %s", j->target_text, lost->src_text, lost->reply);
    } else {
        xsnprintf(r.message, sizeof r.message, "Anti-spoofing works: mail in your domain's name "
                  "from %s is refused (%s)%s%s.", stranger->src_text, stranger->reply,
                  excepted ? ", and the excepted sources get through" : "",
                  json_array_size(j->untested) ? "; some bypasses cannot be probed from this "
                  "machine (see details)" : "");
    }
    r.details = json_pack("{s:s, s:o, s:O, s:O}", "listener", j->target_text, "probes", legs,
                          "untested", j->untested, "bypasses",
                          json_object_get(j->input, "bypasses"));
    j->done(j->arg, &r);
    json_decref(r.details);
    json_decref(j->untested);
    json_decref(j->input);
    free(j);
}

static void as_next(struct as_job *j)
{
    if (j->leg < j->n_legs) {
        leg_start(j, &j->legs[j->leg]);
        return;
    }
    as_finish(j);
}

/* sender_for - an internal address for the probe: under the bypass's
 * domain, else the first internal domain */
static bool sender_for(struct as_job *j, const char *domain, struct as_leg *l)
{
    const char *d = domain && *domain ? domain
                    : json_string_value(json_array_get(json_object_get(j->input, "domains"), 0));
    if (d == NULL)
        return false;
    xsnprintf(l->sender, sizeof l->sender, "moat-antispoof-check@%s", d);
    xsnprintf(l->rcpt_addr, sizeof l->rcpt_addr, "postmaster@%s", d);
    return true;
}

void connect_antispoof_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                           void *arg)
{
    struct as_job *j = xcalloc(1, sizeof *j);
    j->env = env;
    j->done = done;
    j->arg = arg;
    j->input = json_incref(input);
    j->untested = json_array();
    if (json_array_size(json_object_get(input, "domains")) == 0 ||
        connect_listener_target(env->settings, &j->target, &j->targetlen, j->target_text,
                                sizeof j->target_text) < 0) {
        bool nodom = json_array_size(json_object_get(input, "domains")) == 0;
        json_decref(j->untested);
        json_decref(j->input);
        free(j);
        connect_finish_later(env, done, arg, CONNECT_FAIL, NULL, "%s", nodom
                             ? "There is no internal domain yet: add one (`moat domain add`)."
                             : "Moat's SMTP listener address (smtp_listen) cannot be probed: it "
                               "is not an IP address and port.");
        return;
    }
    struct as_leg *s = &j->legs[0];
    s->job = j;
    s->stranger = true;
    (void)str_copy(s->bypass, sizeof s->bypass, "none");
    if (pick(j, NULL, s) && sender_for(j, NULL, s))
        j->n_legs = 1;
    size_t i;
    json_t *b;
    json_array_foreach(json_object_get(input, "bypasses"), i, b) {
        const char *kind = json_string_value(json_object_get(b, "kind"));
        const char *value = json_string_value(json_object_get(b, "value"));
        const char *dom = json_string_value(json_object_get(b, "domain"));
        char what[300];
        xsnprintf(what, sizeof what, "%s %s (%s)", kind, value, dom && *dom ? dom : "all domains");
        struct cidr c;
        struct error err = {0};
        struct as_leg *l = &j->legs[j->n_legs];
        const char *why = NULL;
        if (strcmp(kind, "ip") != 0)
            why = strcmp(kind, "host") == 0
                  ? "host bypasses depend on the sender's reverse DNS: not probed from here"
                  : "spf bypasses are decided by the sender's SPF at the end of DATA: not probed";
        else if (j->n_legs == 0 || j->n_legs >= AS_MAX_LEGS)
            why = "not probed (no stranger to compare with, or enough probes already)";
        else if (cidr_parse(value, &c, &err) < 0 || !pick(j, &c, l))
            why = "no address of this machine is inside it: not probed from here";
        if (why != NULL) {
            json_array_append_new(j->untested, json_pack("{s:s, s:s}", "bypass", what,
                                                         "reason", why));
            continue;
        }
        l->job = j;
        (void)str_copy(l->bypass, sizeof l->bypass, what);
        if (sender_for(j, dom, l))
            j->n_legs++;
    }
    struct timeval now = { 0, 0 };    /* never inside run */
    event_base_once(env->base, -1, EV_TIMEOUT, as_later, j, &now);
}

/* ------------------------------------------------------------------ */
/* instructions                                                        */
/* ------------------------------------------------------------------ */

json_t *connect_antispoof_instructions(struct store *st, struct error *err)
{
    (void)st;
    (void)err;
    json_t *steps = json_array();
    json_array_append_new(steps, json_string(
        "Anti-spoofing refuses mail from the internet that claims to come from one of your own "
        "domains: an envelope sender (MAIL FROM) under an internal domain gets 550 5.7.1 at the "
        "first RCPT, a header From under an internal domain gets 550 5.7.1 at the end of DATA. "
        "Your own servers (authorised outbound hosts) and authenticated senders are not checked."));
    json_array_append_new(steps, json_string(
        "List the outside services that send mail in your name (newsletter, CRM, ticketing, "
        "invoicing) and except each one: by its addresses (`moat antispoof bypass add ip "
        "192.0.2.0/24 --domain example.com`), by its host name when its addresses change "
        "(`moat antispoof bypass add host '*.mailer.example.net'`: the sending host's reverse DNS "
        "must resolve back to it), or by SPF (`moat antispoof bypass add spf news.example.com`: "
        "the mail passes only when SPF passes for that envelope sender domain)."));
    json_array_append_new(steps, json_string(
        "Review what anti-spoofing refused (`moat antispoof candidates`) and except a "
        "legitimate source in one step: `moat antispoof bypass add --from-candidate ADDRESS "
        "[--by ip|host]`. Then run the check: Moat makes sure a stranger is refused and that "
        "each address bypass it can speak from gets through."));
    return json_pack("{s:o, s:o}", "steps", steps, "artefacts", json_array());
}
