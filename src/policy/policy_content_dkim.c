/*
 * policy_content_dkim.c - DKIM verification (RFC 6376) in the content
 * stage, with libopendkim over the in-memory message.
 *
 * Keys are fetched by our key-lookup callback through dns_sync (the
 * configured resolver, from this worker thread, bounded by
 * content_dns_timeout), never by libopendkim's own resolver.  At most
 * dkim_max_signatures signatures are verified (the prescreen callback marks
 * the rest ignored), so a message carrying thousands of signatures costs
 * that many key lookups at most.  One result per verified signature:
 * pass, fail (bad signature, body hash mismatch), temperror (key lookup
 * failed), permerror (no key, malformed signature or key).
 */
#include <stdlib.h>
#include <string.h>
#include <opendkim/dkim.h>
#include "../core/core.h"
#include "../dns/dns_sync.h"
#include "policy_content.h"

struct dkim_job {
    const struct content_request *rq;
    struct dns_options opt;
    int max_sigs;
    int lookups;
    /* keys whose lookup failed (DNS error): "s._domainkey.d" names.  The
     * callback reports them as not found, so libopendkim goes on with the
     * other signatures instead of ending the whole verification; their
     * result is then temperror, not permerror */
    char failed[CONTENT_MAX_DKIM][320];
    int n_failed;
};

/* dkim_key_cb - the TXT record at SELECTOR._domainkey.DOMAIN into buf */
static DKIM_CBSTAT dkim_key_cb(DKIM *dkim, DKIM_SIGINFO *sig, unsigned char *buf, size_t buflen)
{
    struct dkim_job *j = dkim_get_user_context(dkim);
    const char *d = (const char *)dkim_sig_getdomain(sig);
    const char *s = (const char *)dkim_sig_getselector(sig);
    char name[600];
    if (j == NULL || d == NULL || s == NULL || ++j->lookups > j->max_sigs ||
        xsnprintf(name, sizeof name, "%s._domainkey.%s", s, d) < 0)
        return DKIM_CBSTAT_NOTFOUND;
    struct dns_result r;
    dns_sync_lookup(&j->opt, name, DNS_T_TXT, (int)j->rq->content_dns_timeout_ms, &r);
    DKIM_CBSTAT st;
    if (r.status == DNS_OK) {
        st = str_copy((char *)buf, buflen, r.rr[0].text) < 0 ? DKIM_CBSTAT_ERROR : DKIM_CBSTAT_CONTINUE;
    } else if (r.status == DNS_NXDOMAIN || r.status == DNS_NODATA) {
        st = DKIM_CBSTAT_NOTFOUND;
    } else {
        log_info("session=%s event=dkim_key_error name=%s why=\"%s\"", j->rq->session_id, name, r.why);
        if (j->n_failed < CONTENT_MAX_DKIM)
            str_copy(j->failed[j->n_failed++], sizeof j->failed[0], name);
        st = DKIM_CBSTAT_NOTFOUND;
    }
    dns_sync_result_free(&r);
    return st;
}

/* dkim_prescreen_cb - verify only the first max_sigs signatures */
static DKIM_CBSTAT dkim_prescreen_cb(DKIM *dkim, DKIM_SIGINFO **sigs, int nsigs)
{
    struct dkim_job *j = dkim_get_user_context(dkim);
    for (int i = j ? j->max_sigs : 0; i < nsigs; i++)
        dkim_sig_ignore(sigs[i]);
    return DKIM_CBSTAT_CONTINUE;
}

/* key_failed - the key of d/s could not be fetched (DNS error) */
static bool key_failed(const struct dkim_job *j, const char *d, const char *s)
{
    char name[600];
    if (xsnprintf(name, sizeof name, "%s._domainkey.%s", s, d) < 0)
        return false;
    for (int i = 0; i < j->n_failed; i++)
        if (strcasecmp(j->failed[i], name) == 0)
            return true;
    return false;
}

/* sig_result - one signature's RFC 8601 result and a short reason */
static enum content_result sig_result(DKIM_SIGINFO *sig, char *why, size_t whylen)
{
    unsigned flags = dkim_sig_getflags(sig);
    int err = dkim_sig_geterror(sig);
    if ((flags & DKIM_SIGFLAG_PASSED) && dkim_sig_getbh(sig) == DKIM_SIGBH_MATCH) {
        why[0] = '\0';
        return CR_PASS;
    }
    if ((flags & DKIM_SIGFLAG_PASSED) && dkim_sig_getbh(sig) == DKIM_SIGBH_MISMATCH) {
        str_copy(why, whylen, "body hash mismatch");
        return CR_FAIL;
    }
    const char *s = dkim_sig_geterrorstr(err);
    str_copy(why, whylen, s ? s : "unverified");
    switch (err) {
    case DKIM_SIGERROR_KEYFAIL:
        return CR_TEMPERROR;
    case DKIM_SIGERROR_BADSIG:
    case DKIM_SIGERROR_OK:
        if (dkim_sig_getbh(sig) == DKIM_SIGBH_MISMATCH)
            str_copy(why, whylen, "body hash mismatch");
        return CR_FAIL;
    default:
        return CR_PERMERROR;
    }
}

void content_check_dkim(const struct content_request *rq, struct content_state *st,
                        struct policy_verdict *out)
{
    if (!rq->dkim_enabled)
        return;
    content_state_ran(st, "dkim");
    st->dkim_ran = true;
    if (rq->msg == NULL)
        return;     /* too large: said in the header */
    struct dkim_job j = {
        .rq = rq,
        .opt = { .resolver = rq->resolver, .trust_anchor_file = rq->trust_anchor_file },
        .max_sigs = (int)(rq->dkim_max_signatures < CONTENT_MAX_DKIM ? rq->dkim_max_signatures
                                                                     : CONTENT_MAX_DKIM),
    };
    DKIM_LIB *lib = dkim_init(NULL, NULL);
    if (lib == NULL)
        return;
    dkim_set_key_lookup(lib, dkim_key_cb);
    dkim_set_prescreen(lib, dkim_prescreen_cb);
    unsigned int flags = DKIM_LIBFLAGS_FIXCRLF;
    dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags, sizeof flags);
    DKIM_STAT status;
    DKIM *d = dkim_verify(lib, (const unsigned char *)(rq->session_id ? rq->session_id : "moat"), NULL, &status);
    if (d == NULL) {
        dkim_close(lib);
        return;
    }
    dkim_set_user_context(d, &j);
    status = dkim_chunk(d, (unsigned char *)rq->msg, rq->msg_len);
    if (status == DKIM_STAT_OK)
        status = dkim_chunk(d, NULL, 0);     /* the end of the message */
    if (status == DKIM_STAT_OK || status == DKIM_STAT_NOSIG)
        status = dkim_eom(d, NULL);
    DKIM_SIGINFO **sigs = NULL;
    int nsigs = 0;
    if (dkim_getsiglist(d, &sigs, &nsigs) == DKIM_STAT_OK) {
        for (int i = 0; i < nsigs && st->n_dkim < (size_t)j.max_sigs; i++) {
            if (dkim_sig_getflags(sigs[i]) & DKIM_SIGFLAG_IGNORE)
                continue;
            struct content_dkim *r = &st->dkim[st->n_dkim++];
            const char *dom = (const char *)dkim_sig_getdomain(sigs[i]);
            const char *sel = (const char *)dkim_sig_getselector(sigs[i]);
            str_copy(r->d, sizeof r->d, dom ? dom : "");
            str_lower(r->d);
            str_copy(r->s, sizeof r->s, sel ? sel : "");
            r->result = sig_result(sigs[i], r->why, sizeof r->why);
            if (r->result == CR_PERMERROR && key_failed(&j, dom ? dom : "", sel ? sel : "")) {
                r->result = CR_TEMPERROR;
                str_copy(r->why, sizeof r->why, "key lookup failed");
            }
            log_info("session=%s client=%s event=content check=dkim result=%s d=%s s=%s why=\"%s\" "
                     "status=\"%s\" sigerror=%d flags=0x%x bh=%d", rq->session_id, rq->client_addr,
                     content_result_name(r->result), r->d, r->s, r->why, dkim_getresultstr(status),
                     dkim_sig_geterror(sigs[i]), dkim_sig_getflags(sigs[i]), dkim_sig_getbh(sigs[i]));
        }
    }
    if (st->n_dkim == 0)
        log_info("session=%s client=%s event=content check=dkim result=none status=\"%s\"",
                 rq->session_id, rq->client_addr, dkim_getresultstr(status));
    dkim_free(d);
    dkim_close(lib);
}
