/*
 * test_content.c - the content stage's pure parts (policy_content.c): the
 * table order, the Authentication-Results / X-Moat-Verdict lines (RFC 8601),
 * the DMARC decision table with pct sampling (RFC 7489 6.6.4), the result
 * words, the anti-spoofing SPF bypass, and the header From domain.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "core/core.h"
#include "policy/policy_content.h"

static void test_table_order(void **state)
{
    const char *const *n = content_check_names();
    /* DMARC reads SPF and DKIM; the anti-spoofing bypass reads SPF */
    assert_string_equal(n[0], "spf");
    assert_string_equal(n[1], "dkim");
    assert_string_equal(n[2], "dmarc");
    assert_string_equal(n[3], "antispoof_spf");
    assert_string_equal(n[4], "rspamd");    /* scores what the others let through */
    assert_null(n[5]);
}

static void test_result_names(void **state)
{
    static const struct { enum content_result r; const char *w; } rows[] = {
        { CR_NONE, "none" }, { CR_PASS, "pass" }, { CR_FAIL, "fail" }, { CR_SOFTFAIL, "softfail" },
        { CR_NEUTRAL, "neutral" }, { CR_TEMPERROR, "temperror" }, { CR_PERMERROR, "permerror" },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        assert_string_equal(content_result_name(rows[i].r), rows[i].w);
    assert_string_equal(content_result_name((enum content_result)99), "none");
}

static void test_dmarc_decide(void **state)
{
    static const struct {
        enum content_result r; const char *p; int pct; bool sampled; enum policy_action want;
    } rows[] = {
        { CR_FAIL, "reject", 100, true, POLICY_REJECT },
        { CR_FAIL, "reject", 100, false, POLICY_REJECT },   /* pct=100: always sampled */
        { CR_FAIL, "reject", 50, false, POLICY_HOLD },      /* next less strict */
        { CR_FAIL, "quarantine", 100, true, POLICY_HOLD },
        { CR_FAIL, "quarantine", 0, false, POLICY_DUNNO },
        { CR_FAIL, "none", 100, true, POLICY_DUNNO },
        { CR_FAIL, "", 100, true, POLICY_DUNNO },
        { CR_PASS, "reject", 100, true, POLICY_DUNNO },
        { CR_TEMPERROR, "reject", 100, true, POLICY_DUNNO },  /* never refuses on DNS errors */
        { CR_NONE, "reject", 100, true, POLICY_DUNNO },
        { CR_PERMERROR, "reject", 100, true, POLICY_DUNNO },
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        assert_int_equal(content_dmarc_decide(rows[i].r, rows[i].p, rows[i].pct, rows[i].sampled),
                         rows[i].want);
}

static void fill_rq(struct content_request *rq)
{
    memset(rq, 0, sizeof *rq);
    rq->hostname = "mx.example.com";
    rq->sender = "bob@sender.example";
    rq->client_addr = "192.0.2.7";
    rq->session_id = "S1";
    rq->msg = "x";
}

static void test_auth_results_format(void **state)
{
    struct content_request rq;
    fill_rq(&rq);
    struct content_state st;
    content_state_init(&st);
    st.spf_ran = true;
    st.spf = CR_SOFTFAIL;
    strcpy(st.spf_domain, "sender.example");
    st.dkim_ran = true;
    st.n_dkim = 2;
    st.dkim[0] = (struct content_dkim){ .result = CR_PASS, .d = "sender.example", .s = "s1" };
    st.dkim[1] = (struct content_dkim){ .result = CR_FAIL, .d = "other;evil\r\nX: y", .s = "s2",
                                        .why = "body hash mismatch" };
    st.dmarc_ran = true;
    st.dmarc = CR_PASS;
    strcpy(st.dmarc_domain, "sender.example");
    strcpy(st.dmarc_policy, "reject");
    content_state_ran(&st, "spf");
    content_state_ran(&st, "dkim");
    content_state_ran(&st, "dmarc");
    struct policy_verdict v = { 0 };
    content_format_headers(&rq, &st, &v);
    const char *want =
        "Authentication-Results: mx.example.com;\r\n"
        "\tspf=softfail smtp.mailfrom=bob@sender.example;\r\n"
        "\tdkim=pass header.d=sender.example header.s=s1;\r\n"
        "\tdkim=fail (body hash mismatch) header.d=other_evil__X:_y header.s=s2;\r\n"
        "\tdmarc=pass (p=reject) header.from=sender.example\r\n"
        "X-Moat-Verdict: accept; checks=spf dkim dmarc\r\n";
    assert_string_equal(buf_cstr(&st.headers), want);
    content_state_free(&st);
}

static void test_auth_results_none_and_hold(void **state)
{
    struct content_request rq;
    fill_rq(&rq);
    rq.msg = NULL;
    rq.msg_size = 20000000;
    struct content_state st;
    content_state_init(&st);
    st.body_skipped = true;
    st.spf_ran = true;
    st.spf_helo = true;
    st.spf = CR_TEMPERROR;
    strcpy(st.spf_domain, "helo.example");
    st.dkim_ran = true;
    struct policy_verdict v = { .action = POLICY_HOLD, .check = "dmarc" };
    strcpy(v.reason, "dmarc=fail policy=quarantine domain=sender.example");
    content_format_headers(&rq, &st, &v);
    const char *h = buf_cstr(&st.headers);
    assert_non_null(strstr(h, "\tspf=temperror smtp.helo=helo.example;\r\n"));
    assert_non_null(strstr(h, "\tdkim=none (message too large to verify)\r\n"));
    assert_non_null(strstr(h, "X-Moat-Verdict: hold (dmarc: dmarc=fail policy=quarantine "
                              "domain=sender.example); checks=none; body not screened (size 20000000"));
    content_state_free(&st);

    /* nothing ran: RFC 8601 2.2 "none" */
    content_state_init(&st);
    v = (struct policy_verdict){ 0 };
    content_format_headers(&rq, &st, &v);
    assert_true(strncmp(buf_cstr(&st.headers), "Authentication-Results: mx.example.com; none\r\n", 46) == 0);
    content_state_free(&st);
}

static void test_verdict_earlier_hold(void **state)
{
    struct content_request rq;
    fill_rq(&rq);
    rq.held = "sender not permitted";
    struct content_state st;
    content_state_init(&st);
    struct policy_verdict v = { 0 };
    content_format_headers(&rq, &st, &v);
    assert_non_null(strstr(buf_cstr(&st.headers), "X-Moat-Verdict: hold (sender not permitted); checks=none\r\n"));
    content_state_free(&st);
}

static void test_antispoof_spf(void **state)
{
    struct content_request rq;
    fill_rq(&rq);
    struct content_state st;
    content_state_init(&st);
    struct policy_verdict v = { 0 };
    content_check_antispoof_spf(&rq, &st, &v);          /* no bypass asked: nothing */
    assert_int_equal(v.action, POLICY_DUNNO);
    rq.antispoof_spf_domain = "example.com";
    st.spf_ran = true;
    st.spf = CR_PASS;
    strcpy(st.spf_domain, "EXAMPLE.com");
    content_check_antispoof_spf(&rq, &st, &v);          /* passed for that domain */
    assert_int_equal(v.action, POLICY_DUNNO);
    strcpy(st.spf_domain, "other.example");
    content_check_antispoof_spf(&rq, &st, &v);          /* passed, but for another domain */
    assert_int_equal(v.action, POLICY_REJECT);
    assert_int_equal(v.code, 550);
    assert_string_equal(v.dsn, "5.7.1");
    assert_string_equal(v.text, "rejected by anti-spoofing policy");
    memset(&v, 0, sizeof v);
    strcpy(st.spf_domain, "example.com");
    st.spf = CR_TEMPERROR;
    content_check_antispoof_spf(&rq, &st, &v);
    assert_int_equal(v.action, POLICY_REJECT);
    content_state_free(&st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_order),
        cmocka_unit_test(test_result_names),
        cmocka_unit_test(test_dmarc_decide),
        cmocka_unit_test(test_auth_results_format),
        cmocka_unit_test(test_auth_results_none_and_hold),
        cmocka_unit_test(test_verdict_earlier_hold),
        cmocka_unit_test(test_antispoof_spf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
