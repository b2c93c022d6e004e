/*
 * test_connect_journaling.c - Connect's journaling task (connect_journaling.c):
 * the verdict of the check for every kind of evidence (table-driven), and
 * the journal-rule instructions of every environment diffed with
 * tests/unit/golden/connect/journaling-<env>.txt (MOAT_GOLDEN_UPDATE=1
 * rewrites them: review the diff).  No artefact holds a placeholder.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "connect/connect_artefacts.h"
#include "connect/connect_checks.h"
#include "golden.h"

/* --- the verdict --- */

struct verdict_case {
    const char *name;
    const char *environment;
    const char *address;
    int n_sources;
    long long last_report;
    bool unwrapped;
    int reports, n_unwrapped, malformed;
    enum connect_outcome want;
    const char *says;                  /* a fragment of the message */
    const char *kind, *error;          /* the store's last_report_kind / _error ("" unknown) */
};

static const struct verdict_case cases[] = {
    { "no address", "exchange", "", 1, 0, false, 0, 0, 0, CONNECT_FAIL, "No journal address",
      "", "" },
    { "no source", "exchange", "journal@journal.harbour.example", 0, 0, false, 0, 0, 0,
      CONNECT_FAIL, "add your mail server's address as a journal source", "", "" },
    { "waiting", "microsoft365", "journal@journal.harbour.example", 2, 0, false, 0, 0, 0,
      CONNECT_PENDING, "Waiting for a journal report from 192.0.2.10/32, 198.51.100.0/24",
      "", "" },
    { "unwrapped", "exchange", "journal@journal.harbour.example", 1, 1795000000, true, 3, 3, 0,
      CONNECT_PASS, "from 192.0.2.10 at 2026-11-18T", "", "" },
    { "malformed", "exchange", "journal@journal.harbour.example", 1, 1795000000, false, 2, 1, 1,
      CONNECT_FAIL, "was not a readable journal report", "", "" },
    { "plain from exchange", "exchange", "journal@journal.harbour.example", 1, 1795000000, false,
      1, 0, 0, CONNECT_FAIL, "a plain copy, not an envelope journal report", "", "" },
    { "plain from postfix", "smtp", "journal@journal.harbour.example", 1, 1795000000, false, 1,
      0, 0, CONNECT_PASS, "plain copy (BCC journaling)", "", "" },
    { "plain or malformed", "google", "journal@journal.harbour.example", 1, 1795000000, false,
      3, 0, 1, CONNECT_FAIL, "a plain copy or a malformed report", "", "" },
    /* the store knows the kind of the last one and why it was not readable */
    { "malformed, why", "exchange", "journal@journal.harbour.example", 1, 1795000000, false, 4, 2,
      1, CONNECT_FAIL, "not a readable journal report: no envelope block", "malformed",
      "no envelope block" },
    { "plain after a malformed one", "smtp", "journal@journal.harbour.example", 1, 1795000000,
      false, 3, 0, 1, CONNECT_PASS, "plain copy (BCC journaling)", "plain", "" },
};

static void test_verdict(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct verdict_case *c = &cases[i];
        json_t *src = json_array();
        if (c->n_sources > 0)
            json_array_append_new(src, json_string("192.0.2.10/32"));
        if (c->n_sources > 1)
            json_array_append_new(src, json_string("198.51.100.0/24"));
        json_t *in = json_pack("{s:s, s:s, s:o, s:s, s:I, s:s, s:s, s:b, s:I, s:I, s:I, s:s, s:s}",
                               "environment", c->environment, "address", c->address,
                               "sources", src, "undeliverable", "",
                               "last_report", (json_int_t)c->last_report,
                               "last_report_client", "192.0.2.10",
                               "last_report_qid", "00112233445566AA",
                               "last_report_unwrapped", c->unwrapped,
                               "reports", (json_int_t)c->reports,
                               "unwrapped", (json_int_t)c->n_unwrapped,
                               "malformed", (json_int_t)c->malformed,
                               "last_report_kind", c->kind ? c->kind : "",
                               "last_report_error", c->error ? c->error : "");
        char msg[512];
        enum connect_outcome o = connect_journaling_verdict(in, msg, sizeof msg);
        if (o != c->want || strstr(msg, c->says) == NULL)
            fail_msg("%s: got %s \"%s\", want %s with \"%s\"", c->name, connect_outcome_name(o),
                     msg, connect_outcome_name(c->want), c->says);
        json_decref(in);
    }
}

/* --- the instructions --- */

static void org_fill(struct connect_org *org, const char *env)
{
    json_t *o = json_pack("{s:s, s:s, s:[s, s], s:[s, s], s:s}", "name", "Harbour Works",
                          "environment", env, "public_hosts", "mx1.moat.harbour.example",
                          "mx2.moat.harbour.example", "public_ips", "203.0.113.20",
                          "2001:db8:25::20", "probe_source", "192.0.2.99");
    connect_org_from_json(o, org);
    json_decref(o);
}

static void golden(const char *env)
{
    static const char *const sources[] = { "192.0.2.10/32", "2001:db8:1::/64" };
    struct connect_org org;
    struct buf b;

    org_fill(&org, env);
    buf_init(&b);
    buf_printf(&b, "==== journaling, undeliverable address set\n");
    json_t *j = connect_art_journaling(&org, "journal@journal.harbour.example",
                                       "journal-ndr@harbour-archive.example", sources, 2);
    golden_render(&b, j);
    json_decref(j);
    buf_printf(&b, "==== journaling, no undeliverable address, no sources\n");
    j = connect_art_journaling(&org, "journal@journal.harbour.example", "", NULL, 0);
    golden_render(&b, j);
    json_decref(j);

    char name[64], what[96];
    snprintf(name, sizeof name, "journaling-%s.txt", env);
    snprintf(what, sizeof what, "journaling instructions for %s", env);
    golden_check(buf_cstr(&b), name, what);
    buf_free(&b);
}

static void test_microsoft365(void **state) { golden("microsoft365"); }
static void test_exchange(void **state) { golden("exchange"); }
static void test_hybrid(void **state) { golden("hybrid"); }
static void test_google(void **state) { golden("google"); }
static void test_smtp(void **state) { golden("smtp"); }

/* the Exchange commands the task promises, with the organisation's values */
static void test_exchange_commands(void **state)
{
    struct connect_org org;
    org_fill(&org, "hybrid");
    json_t *j = connect_art_journaling(&org, "journal@journal.harbour.example",
                                       "ndr@elsewhere.example", NULL, 0);
    char *s = json_dumps(j, 0);
    assert_non_null(strstr(s, "Set-TransportConfig -JournalingReportNdrTo \\\"ndr@elsewhere.example\\\""));
    assert_non_null(strstr(s, "New-MailContact -Name \\\"Moat journal\\\" -ExternalEmailAddress "
                              "\\\"journal@journal.harbour.example\\\""));
    assert_non_null(strstr(s, "New-JournalRule -Name \\\"Moat archive\\\" -JournalEmailAddress "
                              "\\\"Moat journal\\\" -Scope Global -Enabled $true"));
    assert_non_null(strstr(s, "New-OutboundConnector -Name \\\"Journal to Moat\\\""));
    assert_non_null(strstr(s, "-RecipientDomains \\\"journal.harbour.example\\\""));
    assert_non_null(strstr(s, "New-SendConnector -Name \\\"Journal to Moat\\\""));
    assert_non_null(strstr(s, "SMTP:journal.harbour.example;1"));
    free(s);
    json_decref(j);
    /* no environment yet: a step says so, no artefact */
    org.environment[0] = '\0';
    j = connect_art_journaling(&org, "journal@journal.harbour.example", "", NULL, 0);
    assert_int_equal(json_array_size(json_object_get(j, "artefacts")), 0);
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verdict),
        cmocka_unit_test(test_microsoft365),
        cmocka_unit_test(test_exchange),
        cmocka_unit_test(test_hybrid),
        cmocka_unit_test(test_google),
        cmocka_unit_test(test_smtp),
        cmocka_unit_test(test_exchange_commands),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
