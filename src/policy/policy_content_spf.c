/*
 * policy_content_spf.c - SPF (RFC 7208) in the content stage, with libspf2,
 * and the anti-spoofing SPF bypass (policy_antispoof.c).
 *
 * libspf2 gets a DNS layer of our own (SPF_dns_server_t whose lookup asks
 * dns_sync, i.e. the configured resolver from this worker thread, bounded
 * by content_dns_timeout): never res_query and /etc/resolv.conf.  A
 * resolver error is TRY_AGAIN to libspf2, which makes the result temperror.
 * The identity is MAIL FROM, or the HELO name for the null sender (RFC 7208
 * 2.4).  SPF alone rejects only with spf_fail_action=reject; temperror never.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <spf2/spf.h>
#include <spf2/spf_dns.h>
#include "../core/core.h"
#include "../dns/dns_sync.h"
#include "policy_content.h"

#define SPF_TTL 60

struct spf_hook {
    struct dns_options opt;
    int timeout_ms;
    int lookups;             /* RFC 7208 4.6.4 is libspf2's; this is our own ceiling */
};

static const struct { ns_type ns; enum dns_type t; } spf_types[] = {
    { ns_t_a, DNS_T_A }, { ns_t_aaaa, DNS_T_AAAA }, { ns_t_mx, DNS_T_MX },
    { ns_t_txt, DNS_T_TXT }, { ns_t_ptr, DNS_T_PTR },
};

/* spf_rr_fill - record i of the answer into libspf2's union */
static int spf_rr_fill(SPF_dns_rr_t *rr, int i, enum dns_type t, const struct dns_record *rec)
{
    size_t len = t == DNS_T_A ? sizeof(struct in_addr) : t == DNS_T_AAAA ? sizeof(struct in6_addr)
               : strlen(rec->text) + 1;
    if (SPF_dns_rr_buf_realloc(rr, i, len) != SPF_E_SUCCESS)
        return -1;
    switch (t) {
    case DNS_T_A:
        return inet_pton(AF_INET, rec->text, &rr->rr[i]->a) == 1 ? 0 : -1;
    case DNS_T_AAAA:
        return inet_pton(AF_INET6, rec->text, &rr->rr[i]->aaaa) == 1 ? 0 : -1;
    default:
        memcpy(rr->rr[i]->txt, rec->text, len);   /* txt, mx, ptr share the storage */
        return 0;
    }
}

/* spf_lookup - libspf2's DNS layer: one blocking, bounded lookup */
static SPF_dns_rr_t *spf_lookup(SPF_dns_server_t *srv, const char *domain, ns_type type, int cache)
{
    struct spf_hook *h = srv->hook;
    enum dns_type t = 0;
    for (size_t i = 0; i < sizeof spf_types / sizeof spf_types[0]; i++)
        if (spf_types[i].ns == type)
            t = spf_types[i].t;
    if (t == 0 || ++h->lookups > 40)
        return SPF_dns_rr_new_init(srv, domain, type, 0, NO_DATA);
    struct dns_result r;
    dns_sync_lookup(&h->opt, domain, t, h->timeout_ms, &r);
    SPF_dns_rr_t *rr;
    switch (r.status) {
    case DNS_OK:
        rr = SPF_dns_rr_new_init(srv, domain, type, SPF_TTL, NETDB_SUCCESS);
        if (rr == NULL)
            break;
        for (size_t i = 0; i < r.n; i++)
            if (spf_rr_fill(rr, rr->num_rr, t, &r.rr[i]) == 0)
                rr->num_rr++;
        break;
    case DNS_NXDOMAIN:
        rr = SPF_dns_rr_new_init(srv, domain, type, SPF_TTL, HOST_NOT_FOUND);
        break;
    case DNS_NODATA:
        rr = SPF_dns_rr_new_init(srv, domain, type, SPF_TTL, NO_DATA);
        break;
    default:
        log_info("event=spf_dns_error name=%s why=\"%s\"", domain, r.why);
        rr = SPF_dns_rr_new_init(srv, domain, type, 0, TRY_AGAIN);
        break;
    }
    dns_sync_result_free(&r);
    return rr;
}

static const enum content_result spf_map[] = {
    [SPF_RESULT_INVALID] = CR_PERMERROR, [SPF_RESULT_NEUTRAL] = CR_NEUTRAL,
    [SPF_RESULT_PASS] = CR_PASS, [SPF_RESULT_FAIL] = CR_FAIL,
    [SPF_RESULT_SOFTFAIL] = CR_SOFTFAIL, [SPF_RESULT_NONE] = CR_NONE,
    [SPF_RESULT_TEMPERROR] = CR_TEMPERROR, [SPF_RESULT_PERMERROR] = CR_PERMERROR,
};

/* spf_evaluate - the SPF result for ip, helo, sender */
static enum content_result spf_evaluate(const struct content_request *rq, struct spf_hook *hook)
{
    SPF_dns_server_t *dns = calloc(1, sizeof *dns);
    if (dns == NULL)
        return CR_TEMPERROR;
    dns->lookup = spf_lookup;
    dns->name = "moat";
    dns->hook = hook;
    dns->destroy = NULL;     /* we free it */
    SPF_server_t *srv = SPF_server_new_dns(dns, 0);
    enum content_result res = CR_TEMPERROR;
    if (srv == NULL) {
        free(dns);
        return res;
    }
    SPF_server_set_rec_dom(srv, rq->hostname);
    SPF_request_t *req = SPF_request_new(srv);
    SPF_response_t *resp = NULL;
    bool v6 = strchr(rq->client_addr, ':') != NULL;
    int bad = v6 ? SPF_request_set_ipv6_str(req, rq->client_addr)
                 : SPF_request_set_ipv4_str(req, rq->client_addr);
    if (bad == SPF_E_SUCCESS && rq->helo[0])
        bad = SPF_request_set_helo_dom(req, rq->helo);
    if (bad == SPF_E_SUCCESS && rq->sender[0])
        bad = SPF_request_set_env_from(req, rq->sender);
    if (bad == SPF_E_SUCCESS) {
        /* SPF_request_query_mailfrom without its "localhost passes" shortcut
         * (every test client is on loopback, and a local relay in front of
         * Moat must not get a free pass either): fetch, then interpret */
        resp = SPF_response_new(req);
        SPF_record_t *rec = NULL;
        req->cur_dom = req->env_from_dp != NULL ? req->env_from_dp : req->helo_dom;
        req->use_helo = req->env_from_dp == NULL;
        if (req->cur_dom == NULL || req->cur_dom[0] == '\0') {
            res = CR_NONE;      /* libspf2 would abort() on a NULL domain */
        } else if (resp != NULL) {
            SPF_errcode_t e = SPF_server_get_record(srv, req, resp, &rec);
            if (e == SPF_E_SUCCESS && rec != NULL) {
                resp->spf_record_exp = rec;   /* as SPF_request_query_record does */
                SPF_record_interpret(rec, req, resp, 0);
            }
            if (rec != NULL)
                SPF_record_free(rec);
            SPF_result_t r = SPF_response_result(resp);
            if (e != SPF_E_SUCCESS && r == SPF_RESULT_INVALID)
                r = e == SPF_E_DNS_ERROR ? SPF_RESULT_TEMPERROR : SPF_RESULT_NONE;
            res = (unsigned)r < sizeof spf_map / sizeof spf_map[0] ? spf_map[r] : CR_PERMERROR;
        }
    } else {
        res = CR_NONE;     /* no usable identity: RFC 7208 4.3 "none" */
    }
    if (resp)
        SPF_response_free(resp);
    SPF_request_free(req);
    SPF_server_free(srv);
    free(dns);
    return res;
}

void content_check_spf(const struct content_request *rq, struct content_state *st,
                       struct policy_verdict *out)
{
    if (!rq->spf_enabled && rq->antispoof_spf_domain == NULL)
        return;     /* the anti-spoofing bypass needs SPF even when it is off */
    content_state_ran(st, "spf");
    st->spf_ran = true;
    const char *at = rq->sender ? strrchr(rq->sender, '@') : NULL;
    st->spf_helo = at == NULL;
    str_copy(st->spf_domain, sizeof st->spf_domain, at ? at + 1 : rq->helo);
    str_lower(st->spf_domain);
    struct spf_hook hook = {
        .opt = { .resolver = rq->resolver, .trust_anchor_file = rq->trust_anchor_file },
        .timeout_ms = (int)rq->content_dns_timeout_ms,
    };
    st->spf = spf_evaluate(rq, &hook);
    log_info("session=%s client=%s event=content check=spf result=%s domain=%s identity=%s",
             rq->session_id, rq->client_addr, content_result_name(st->spf), st->spf_domain,
             st->spf_helo ? "helo" : "mailfrom");
    if (st->spf == CR_FAIL && rq->spf_fail_action == CONTENT_ACT_REJECT) {
        policy_verdict_set(out, POLICY_REJECT, 550, "5.7.23", "SPF check failed for %s", st->spf_domain);
        out->check = "spf";
        xsnprintf(out->reason, sizeof out->reason, "spf=fail domain=%s", st->spf_domain);
    }
}

void content_check_antispoof_spf(const struct content_request *rq, struct content_state *st,
                                 struct policy_verdict *out)
{
    if (rq->antispoof_spf_domain == NULL || rq->antispoof_spf_domain[0] == '\0')
        return;
    content_state_ran(st, "antispoof_spf");
    if (st->spf_ran && st->spf == CR_PASS && str_ieq(st->spf_domain, rq->antispoof_spf_domain))
        return;
    policy_verdict_set(out, POLICY_REJECT, 550, "5.7.1", "rejected by anti-spoofing policy");
    out->check = "antispoof_spf";
    xsnprintf(out->reason, sizeof out->reason, "spf=%s for %s, bypass needs pass for %s",
              st->spf_ran ? content_result_name(st->spf) : "not-run", st->spf_domain[0] ? st->spf_domain : "-",
              rq->antispoof_spf_domain);
}
