/*
 * policy_content_dmarc.c - DMARC (RFC 7489) in the content stage, with
 * libopendmarc and the public suffix list (dmarc_psl_file).
 *
 * The _dmarc TXT record is looked up here through dns_sync (the configured
 * resolver; the organizational domain's record when the author domain has
 * none, RFC 7489 6.6.3) and handed to libopendmarc with
 * opendmarc_policy_store_dmarc: libopendmarc never resolves by itself.  It
 * gets the SPF and DKIM results of the earlier checks and decides
 * alignment.  The decision (content_dmarc_decide): p=reject -> 550 5.7.1,
 * p=quarantine -> HOLD, p=none -> accept; a message outside the pct sample
 * gets the next less strict policy (6.6.4).  A DNS error is temperror and
 * never refuses.  Permitted senders do not skip DMARC.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sodium.h>
#include <opendmarc/dmarc.h>
#include "../core/core.h"
#include "../dns/dns_sync.h"
#include "policy_content.h"

/* not in dmarc.h, exported by libopendmarc: the organizational domain */
int opendmarc_get_tld(u_char *domain, u_char *tld, size_t tld_len);

static pthread_mutex_t dmarc_init_lock = PTHREAD_MUTEX_INITIALIZER;
static bool dmarc_inited;

/* dmarc_lib_init - once per process: libopendmarc reads the public suffix
 * list into a table every thread then only reads */
static void dmarc_lib_init(const char *psl)
{
    pthread_mutex_lock(&dmarc_init_lock);
    if (!dmarc_inited) {
        static OPENDMARC_LIB_T lib;
        memset(&lib, 0, sizeof lib);
        lib.tld_type = psl && psl[0] ? OPENDMARC_TLD_TYPE_MOZILLA : OPENDMARC_TLD_TYPE_NONE;
        str_copy((char *)lib.tld_source_file, sizeof lib.tld_source_file, psl ? psl : "");
        if (opendmarc_policy_library_init(&lib) != DMARC_PARSE_OKAY)
            log_error("event=dmarc_init_failed psl=\"%s\"", psl ? psl : "");
        dmarc_inited = true;
    }
    pthread_mutex_unlock(&dmarc_init_lock);
}

enum dmarc_fetch { DMARC_FOUND, DMARC_ABSENT, DMARC_DNS_FAIL };

/* dmarc_record - the v=DMARC1 TXT record at _dmarc.domain */
static enum dmarc_fetch dmarc_record(const struct content_request *rq, const char *domain,
                                     char *rec, size_t size)
{
    char name[300];
    if (xsnprintf(name, sizeof name, "_dmarc.%s", domain) < 0)
        return DMARC_ABSENT;
    struct dns_options opt = { .resolver = rq->resolver, .trust_anchor_file = rq->trust_anchor_file };
    struct dns_result r;
    dns_sync_lookup(&opt, name, DNS_T_TXT, (int)rq->content_dns_timeout_ms, &r);
    enum dmarc_fetch f = r.status == DNS_TEMPFAIL || r.status == DNS_BOGUS ? DMARC_DNS_FAIL : DMARC_ABSENT;
    int found = 0;
    for (size_t i = 0; i < r.n; i++) {
        const char *t = r.rr[i].text;
        if (strncasecmp(t, "v=DMARC1", 8) == 0 && (t[8] == ';' || t[8] == ' ' || t[8] == '\0')) {
            if (found++ == 0)
                str_copy(rec, size, t);
        }
    }
    if (found == 1)
        f = DMARC_FOUND;   /* RFC 7489 6.6.3: several records = none */
    if (f == DMARC_DNS_FAIL)
        log_info("session=%s event=dmarc_dns_error name=%s why=\"%s\"", rq->session_id, name, r.why);
    dns_sync_result_free(&r);
    return f;
}

static const int spf_outcome[] = {
    [CR_NONE] = DMARC_POLICY_SPF_OUTCOME_NONE, [CR_PASS] = DMARC_POLICY_SPF_OUTCOME_PASS,
    [CR_FAIL] = DMARC_POLICY_SPF_OUTCOME_FAIL, [CR_SOFTFAIL] = DMARC_POLICY_SPF_OUTCOME_FAIL,
    [CR_NEUTRAL] = DMARC_POLICY_SPF_OUTCOME_NONE, [CR_TEMPERROR] = DMARC_POLICY_SPF_OUTCOME_TMPFAIL,
    [CR_PERMERROR] = DMARC_POLICY_SPF_OUTCOME_FAIL, [CR_POLICY] = DMARC_POLICY_SPF_OUTCOME_NONE,
};

static int dkim_outcome(enum content_result r)
{
    return r == CR_PASS ? DMARC_POLICY_DKIM_OUTCOME_PASS : r == CR_TEMPERROR ? DMARC_POLICY_DKIM_OUTCOME_TMPFAIL
         : DMARC_POLICY_DKIM_OUTCOME_FAIL;
}

static const char *policy_word(int p)
{
    return p == DMARC_RECORD_P_REJECT ? "reject" : p == DMARC_RECORD_P_QUARANTINE ? "quarantine"
         : p == DMARC_RECORD_P_NONE ? "none" : "";
}

/* dmarc_evaluate - libopendmarc over the record and the earlier results;
 * fills st->dmarc and st->dmarc_policy, answers pct */
static void dmarc_evaluate(const struct content_request *rq, struct content_state *st,
                           const char *rec, const char *org, int *pct)
{
    bool v6 = strchr(rq->client_addr, ':') != NULL;
    DMARC_POLICY_T *p = opendmarc_policy_connect_init((u_char *)rq->client_addr, v6 ? 6 : 4);
    st->dmarc = CR_PERMERROR;
    if (p == NULL)
        return;
    opendmarc_policy_store_from_domain(p, (u_char *)st->dmarc_domain);
    if (st->spf_ran && st->spf_domain[0])
        opendmarc_policy_store_spf(p, (u_char *)st->spf_domain, spf_outcome[st->spf],
                                   st->spf_helo ? DMARC_POLICY_SPF_ORIGIN_HELO : DMARC_POLICY_SPF_ORIGIN_MAILFROM,
                                   NULL);
    for (size_t i = 0; i < st->n_dkim; i++)
        if (st->dkim[i].d[0])
            opendmarc_policy_store_dkim(p, (u_char *)st->dkim[i].d, (u_char *)st->dkim[i].s,
                                        dkim_outcome(st->dkim[i].result), NULL);
    if (opendmarc_policy_store_dmarc(p, (u_char *)rec, (u_char *)st->dmarc_domain,
                                     (u_char *)org) != DMARC_PARSE_OKAY) {
        opendmarc_policy_connect_shutdown(p);
        return;     /* malformed record: permerror */
    }
    /* alignment is computed here; its policy answer is not used (pct is ours) */
    (void)opendmarc_get_policy_to_enforce(p);
    int dk = 0, sp = 0;
    opendmarc_policy_fetch_alignment(p, &dk, &sp);
    bool pass = dk == DMARC_POLICY_DKIM_ALIGNMENT_PASS || sp == DMARC_POLICY_SPF_ALIGNMENT_PASS;
    st->dmarc = pass ? CR_PASS : CR_FAIL;
    int pol = 0, subpol = 0;
    opendmarc_policy_fetch_p(p, &pol);
    opendmarc_policy_fetch_sp(p, &subpol);
    if (org != NULL && subpol != DMARC_RECORD_P_UNSPECIFIED)
        pol = subpol;   /* the organizational record's sp= for a subdomain */
    str_copy(st->dmarc_policy, sizeof st->dmarc_policy, policy_word(pol));
    *pct = 100;
    opendmarc_policy_fetch_pct(p, pct);
    opendmarc_policy_connect_shutdown(p);
}

void content_check_dmarc(const struct content_request *rq, struct content_state *st,
                         struct policy_verdict *out)
{
    if (!rq->dmarc_enabled)
        return;
    content_state_ran(st, "dmarc");
    st->dmarc_ran = true;
    if (rq->header_from == NULL || rq->header_from[0] == '\0') {
        /* no single author domain: nothing can align (RFC 7489 6.6.1) */
        st->dmarc = CR_PERMERROR;
        return;
    }
    dmarc_lib_init(rq->dmarc_psl_file);
    str_copy(st->dmarc_domain, sizeof st->dmarc_domain, rq->header_from);
    str_lower(st->dmarc_domain);
    char rec[1024], org[256] = "";
    enum dmarc_fetch f = dmarc_record(rq, st->dmarc_domain, rec, sizeof rec);
    const char *org_used = NULL;
    if (f == DMARC_ABSENT && opendmarc_get_tld((u_char *)st->dmarc_domain, (u_char *)org, sizeof org) == 0 &&
        org[0] && strcasecmp(org, st->dmarc_domain) != 0) {
        f = dmarc_record(rq, org, rec, sizeof rec);
        org_used = org;
    }
    if (f == DMARC_DNS_FAIL) {
        st->dmarc = CR_TEMPERROR;
        return;
    }
    if (f == DMARC_ABSENT) {
        st->dmarc = CR_NONE;
        return;
    }
    int pct = 100;
    dmarc_evaluate(rq, st, rec, org_used, &pct);
    bool sampled = pct >= 100 || (int)randombytes_uniform(100) < pct;
    enum policy_action a = content_dmarc_decide(st->dmarc, st->dmarc_policy, pct, sampled);
    log_info("session=%s client=%s event=content check=dmarc result=%s domain=%s policy=%s pct=%d sampled=%s",
             rq->session_id, rq->client_addr, content_result_name(st->dmarc), st->dmarc_domain,
             st->dmarc_policy[0] ? st->dmarc_policy : "-", pct, sampled ? "yes" : "no");
    if (a == POLICY_REJECT) {
        policy_verdict_set(out, POLICY_REJECT, 550, "5.7.1", "rejected by DMARC policy of %s", st->dmarc_domain);
        xsnprintf(out->reason, sizeof out->reason, "dmarc=fail policy=reject domain=%s", st->dmarc_domain);
    } else if (a == POLICY_HOLD) {
        policy_verdict_set(out, POLICY_HOLD, 250, "2.0.0", "held by DMARC policy of %s", st->dmarc_domain);
        xsnprintf(out->reason, sizeof out->reason, "dmarc=fail policy=quarantine domain=%s", st->dmarc_domain);
    }
    out->check = "dmarc";
}
