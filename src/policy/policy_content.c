/*
 * policy_content.c - the end-of-DATA content stage (see policy_content.h):
 * the table of content checks, the run on a worker thread, and the header
 * lines it adds (Authentication-Results, RFC 8601; X-Moat-Verdict).
 *
 * Entry points: content_run, content_format_headers, content_dmarc_decide,
 * content_request_new/free, content_state_init/free.
 * Adding a check = one function in its own file (declared in
 * policy_content.h) and one row in content_checks[].
 */
#include <stdlib.h>
#include <string.h>
#include "../core/core.h"
#include "policy_content.h"

typedef void (*content_check_fn)(const struct content_request *rq, struct content_state *st,
                                 struct policy_verdict *out);

struct content_check {
    const char *name;
    content_check_fn fn;
};

/* order matters: DMARC reads SPF and DKIM; the anti-spoofing bypass reads SPF */
static const struct content_check content_checks[] = {
    { "spf", content_check_spf },
    { "dkim", content_check_dkim },
    { "dmarc", content_check_dmarc },
    { "antispoof_spf", content_check_antispoof_spf },
    { "rspamd", content_check_rspamd },
    /* end */
};
#define N_CONTENT_CHECKS (sizeof content_checks / sizeof content_checks[0])

const char *const *content_check_names(void)
{
    static const char *names[N_CONTENT_CHECKS + 1];
    for (size_t i = 0; i < N_CONTENT_CHECKS; i++)
        names[i] = content_checks[i].name;
    names[N_CONTENT_CHECKS] = NULL;
    return names;
}

static const char *const result_names[] = {
    [CR_NONE] = "none", [CR_PASS] = "pass", [CR_FAIL] = "fail", [CR_SOFTFAIL] = "softfail",
    [CR_NEUTRAL] = "neutral", [CR_TEMPERROR] = "temperror", [CR_PERMERROR] = "permerror",
    [CR_POLICY] = "policy",
};

const char *content_result_name(enum content_result r)
{
    return (unsigned)r < sizeof result_names / sizeof result_names[0] ? result_names[r] : "none";
}

struct content_request *content_request_new(void)
{
    return xcalloc(1, sizeof(struct content_request));
}

void content_request_free(struct content_request *rq)
{
    if (rq == NULL)
        return;
    free(rq->session_id);
    free(rq->client_addr);
    free(rq->helo);
    free(rq->sender);
    for (size_t i = 0; i < rq->n_rcpts; i++)
        free(rq->rcpts[i]);
    free(rq->rcpts);
    free(rq->header_from);
    free(rq->antispoof_spf_domain);
    free(rq->hostname);
    free(rq->msg);
    free(rq->resolver);
    free(rq->trust_anchor_file);
    free(rq->dmarc_psl_file);
    free(rq->held);
    free(rq->rspamd_url);
    free(rq->rspamd_unreachable);
    free(rq->rspamd_hold_action);
    free(rq->queue_id);
    free(rq);
}

void content_state_init(struct content_state *st)
{
    memset(st, 0, sizeof *st);
    buf_init(&st->headers);
}

void content_state_free(struct content_state *st)
{
    buf_free(&st->headers);
}

void content_state_ran(struct content_state *st, const char *name)
{
    size_t len = strlen(st->checks_ran);
    xsnprintf(st->checks_ran + len, sizeof st->checks_ran - len, "%s%s", len ? " " : "", name);
}

/* verdict_wins - REJECT/TEMPFAIL end the run; the first HOLD is kept */
static bool verdict_final(const struct policy_verdict *v)
{
    return v->action == POLICY_REJECT || v->action == POLICY_TEMPFAIL;
}

void content_run(const struct content_request *rq, struct content_state *st,
                 struct policy_verdict *out)
{
    memset(out, 0, sizeof *out);
    st->body_skipped = rq->msg == NULL;
    for (size_t i = 0; i < N_CONTENT_CHECKS; i++) {
        struct policy_verdict v = { 0 };
        content_checks[i].fn(rq, st, &v);
        if (v.action == POLICY_DUNNO || v.action == POLICY_ACCEPT)
            continue;
        if (v.check == NULL)
            v.check = content_checks[i].name;
        log_info("session=%s client=%s event=content check=%s action=%s reason=\"%s\"",
                 rq->session_id ? rq->session_id : "-", rq->client_addr ? rq->client_addr : "-",
                 v.check, v.action == POLICY_REJECT ? "reject" : v.action == POLICY_TEMPFAIL ? "tempfail"
                 : "hold", v.reason[0] ? v.reason : v.text);
        if (verdict_final(&v)) {
            *out = v;
            break;
        }
        if (v.action == POLICY_HOLD && out->action != POLICY_HOLD)
            *out = v;
    }
    content_format_headers(rq, st, out);
}

/* --- header lines --- */

/* ar_token - s made safe for an A-R value: no CR/LF/';' or quotes */
static const char *ar_token(char *dst, size_t size, const char *s)
{
    size_t o = 0;
    for (; s && *s && o + 1 < size; s++) {
        unsigned char c = (unsigned char)*s;
        dst[o++] = (c <= ' ' || c >= 0x7f || c == ';' || c == '"' || c == '(' || c == ')' ||
                    c == '\\') ? '_' : (char)c;
    }
    dst[o] = '\0';
    return o ? dst : "unknown";
}

/* ar_comment - s made safe inside an RFC 5322 comment: spaces kept */
static const char *ar_comment(char *dst, size_t size, const char *s)
{
    size_t o = 0;
    for (; s && *s && o + 1 < size; s++) {
        unsigned char c = (unsigned char)*s;
        dst[o++] = (c < ' ' || c >= 0x7f || c == '(' || c == ')' || c == '\\') ? '_' : (char)c;
    }
    dst[o] = '\0';
    return dst;
}

/* ar_add - one ";"-separated resinfo, folded on its own line */
static void ar_add(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ar_add(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_append_str(b, ";\r\n\t");
    buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void content_format_headers(const struct content_request *rq, struct content_state *st,
                            const struct policy_verdict *v)
{
    struct buf ar;
    buf_init(&ar);
    char t1[256], t2[256], t3[128];
    buf_printf(&ar, "Authentication-Results: %s", ar_token(t1, sizeof t1, rq->hostname));
    size_t bare = ar.len;
    if (st->spf_ran) {
        if (st->spf_helo)
            ar_add(&ar, "spf=%s smtp.helo=%s", content_result_name(st->spf),
                   ar_token(t1, sizeof t1, st->spf_domain));
        else
            ar_add(&ar, "spf=%s smtp.mailfrom=%s", content_result_name(st->spf),
                   ar_token(t1, sizeof t1, rq->sender && rq->sender[0] ? rq->sender : st->spf_domain));
    }
    if (st->dkim_ran) {
        if (st->n_dkim == 0)
            ar_add(&ar, "dkim=none%s", st->body_skipped ? " (message too large to verify)" : "");
        for (size_t i = 0; i < st->n_dkim; i++) {
            const struct content_dkim *d = &st->dkim[i];
            ar_add(&ar, "dkim=%s%s%s%s header.d=%s header.s=%s", content_result_name(d->result),
                   d->why[0] ? " (" : "", d->why[0] ? ar_comment(t3, sizeof t3, d->why) : "",
                   d->why[0] ? ")" : "", ar_token(t1, sizeof t1, d->d), ar_token(t2, sizeof t2, d->s));
        }
    }
    if (st->dmarc_ran)
        ar_add(&ar, "dmarc=%s%s%s%s header.from=%s", content_result_name(st->dmarc),
               st->dmarc_policy[0] ? " (p=" : "", st->dmarc_policy,
               st->dmarc_policy[0] ? ")" : "",
               st->dmarc_domain[0] ? ar_token(t1, sizeof t1, st->dmarc_domain) : "unknown");
    if (ar.len == bare)
        buf_append_str(&ar, "; none");   /* RFC 8601 2.2: no-result */
    buf_append_str(&ar, "\r\n");
    if (st->headers.len + ar.len < CONTENT_HEADERS_MAX)
        buf_append(&st->headers, ar.data, ar.len);
    buf_free(&ar);

    /* X-Moat-Verdict: accept|hold (reason); checks=... */
    const char *word = v->action == POLICY_HOLD || rq->held ? "hold" : v->action == POLICY_REJECT
                     ? "reject" : v->action == POLICY_TEMPFAIL ? "tempfail" : "accept";
    struct buf xv;
    buf_init(&xv);
    buf_printf(&xv, "X-Moat-Verdict: %s", word);
    if (v->action != POLICY_DUNNO && v->action != POLICY_ACCEPT)
        buf_printf(&xv, " (%s: %s)", v->check ? v->check : "-",
                   ar_comment(t1, sizeof t1, v->reason[0] ? v->reason : v->text));
    else if (rq->held)
        buf_printf(&xv, " (%s)", ar_comment(t1, sizeof t1, rq->held));
    buf_printf(&xv, "; checks=%s", st->checks_ran[0] ? st->checks_ran : "none");
    if (st->body_skipped)
        buf_printf(&xv, "; body not screened (size %llu over screen_max_size)",
                   (unsigned long long)rq->msg_size);
    if (st->verdict_note[0])
        buf_printf(&xv, "; %s", st->verdict_note);
    /* keep it one line for the header limit (998 octets) */
    if (xv.len > 900)
        xv.len = 900;
    buf_append_str(&xv, "\r\n");
    if (st->headers.len + xv.len < CONTENT_HEADERS_MAX)
        buf_append(&st->headers, xv.data, xv.len);
    buf_free(&xv);
}

/* --- DMARC decision (RFC 7489 6.6.4) --- */

struct dmarc_row {
    const char *p;
    enum policy_action sampled, unsampled;
};

/* a message outside the pct sample gets the next less strict policy */
static const struct dmarc_row dmarc_rows[] = {
    { "reject", POLICY_REJECT, POLICY_HOLD },
    { "quarantine", POLICY_HOLD, POLICY_DUNNO },
    { "none", POLICY_DUNNO, POLICY_DUNNO },
};

enum policy_action content_dmarc_decide(enum content_result dmarc, const char *p, int pct,
                                        bool sampled)
{
    if (dmarc != CR_FAIL || p == NULL)
        return POLICY_DUNNO;
    for (size_t i = 0; i < sizeof dmarc_rows / sizeof dmarc_rows[0]; i++)
        if (strcmp(dmarc_rows[i].p, p) == 0)
            return sampled || pct >= 100 ? dmarc_rows[i].sampled : dmarc_rows[i].unsampled;
    return POLICY_DUNNO;
}

