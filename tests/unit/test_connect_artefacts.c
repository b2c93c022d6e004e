/*
 * test_connect_artefacts.c - golden tests of the artefacts Connect generates
 * (connect_artefacts.c): for each environment, the inbound and lockdown
 * instructions of one organisation with real-looking values are rendered as
 * text and diffed with tests/unit/golden/connect/<env>.txt.
 * MOAT_GOLDEN_UPDATE=1 rewrites the golden files (review the diff!).
 *
 * Also: no artefact ever contains a placeholder (<...>, YOUR-, example
 * values the administrator must edit), the DNS records, the Windows
 * Firewall complement ranges, and the "missing values" path.
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

static void org_fill(struct connect_org *org, const char *env)
{
    json_t *o = json_pack("{s:s, s:s, s:[s, s], s:[s, s, s], s:s}", "name", "Harbour Works",
                          "environment", env, "public_hosts", "mx1.moat.harbour.example",
                          "mx2.moat.harbour.example.", "public_ips", "203.0.113.20",
                          "198.51.100.7", "2001:db8:25::20", "probe_source", "192.0.2.99");
    connect_org_from_json(o, org);
    json_decref(o);
}

static const struct connect_art_route routes[] = {
    { "harbour.example", "mail.harbour.example", 25 },
    { "harbour-works.example", "10.1.2.3", 2525 },
};

static void golden(const char *env)
{
    struct connect_org org;
    struct buf b;

    org_fill(&org, env);
    buf_init(&b);
    json_t *in = connect_art_inbound(&org, routes, 2);
    json_t *lk = connect_art_lockdown(&org, routes, 2);
    json_t *ob = connect_art_outbound(&org);
    buf_printf(&b, "==== inbound\n");
    golden_render(&b, in);
    buf_printf(&b, "==== lockdown\n");
    golden_render(&b, lk);
    buf_printf(&b, "==== outbound\n");
    golden_render(&b, ob);
    json_decref(in);
    json_decref(lk);
    json_decref(ob);
    char *mx = connect_art_mx_records("harbour.example", &org);
    char *txt = connect_art_txt_record("harbour.example", "0123456789abcdef0123456789abcdef");
    buf_printf(&b, "==== dns\n%s%s\n", mx, txt);
    free(mx);
    free(txt);

    const char *text = buf_cstr(&b);
    assert_null(strstr(text, "x.x.x.x"));
    char name[64], what[64];
    snprintf(name, sizeof name, "%s.txt", env);
    snprintf(what, sizeof what, "artefacts for %s", env);
    golden_check(text, name, what);
    buf_free(&b);
}

static void test_microsoft365(void **state) { golden("microsoft365"); }
static void test_exchange(void **state) { golden("exchange"); }
static void test_hybrid(void **state) { golden("hybrid"); }
static void test_google(void **state) { golden("google"); }
static void test_smtp(void **state) { golden("smtp"); }

static void test_values_everywhere(void **state)
{
    struct connect_org org;
    org_fill(&org, "hybrid");
    json_t *lk = connect_art_lockdown(&org, routes, 2);
    char *s = json_dumps(lk, 0);
    /* every address and the certificate name reach the artefacts */
    assert_non_null(strstr(s, "203.0.113.20"));
    assert_non_null(strstr(s, "198.51.100.7"));
    assert_non_null(strstr(s, "2001:db8:25::20"));
    assert_non_null(strstr(s, "-TlsSenderCertificateName mx1.moat.harbour.example"));
    assert_non_null(strstr(s, "-RequireTls $true"));
    assert_non_null(strstr(s, "-RestrictDomainsToIPAddresses $true"));
    /* both route ports are locked down */
    assert_non_null(strstr(s, "tcp dport { 25, 2525 }"));
    /* Windows Firewall blocks exactly the complement of Moat's IPv4 addresses */
    assert_non_null(strstr(s, "0.0.0.0-198.51.100.6,198.51.100.8-203.0.113.19,"
                              "203.0.113.21-255.255.255.255"));
    assert_non_null(strstr(s, "::-2001:db8:25::1f,2001:db8:25::21-"
                              "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
    free(s);
    json_decref(lk);
}

static void test_missing_values(void **state)
{
    struct connect_org org;
    memset(&org, 0, sizeof org);
    str_copy(org.environment, sizeof org.environment, "exchange");
    json_t *in = connect_art_inbound(&org, routes, 2);
    assert_int_equal(json_array_size(json_object_get(in, "artefacts")), 0);
    assert_non_null(strstr(json_string_value(json_array_get(json_object_get(in, "steps"), 0)),
                           "public IP addresses"));
    json_decref(in);
    org_fill(&org, "");
    json_t *lk = connect_art_lockdown(&org, routes, 2);
    assert_int_equal(json_array_size(json_object_get(lk, "artefacts")), 0);
    assert_non_null(strstr(json_string_value(json_array_get(json_object_get(lk, "steps"), 0)),
                           "environment"));
    json_decref(lk);
}

static void test_domain_covers(void **state)
{
    assert_true(connect_domain_covers("example.com", "example.com"));
    assert_true(connect_domain_covers("example.com", "a.b.example.com"));
    assert_false(connect_domain_covers("example.com", "notexample.com"));
    assert_false(connect_domain_covers("a.example.com", "example.com"));
    assert_false(connect_domain_covers("example.com", ".example.com"));
}

/* SPF: what authorises an address, and the record Moat asks to publish */
static void test_spf(void **state)
{
    (void)state;
    const char *ips[] = { "192.0.2.10", "2001:db8::25" };
    assert_true(connect_spf_covers("v=spf1 ip4:192.0.2.0/24 -all", "192.0.2.10"));
    assert_true(connect_spf_covers("v=spf1 +ip4:192.0.2.10 -all", "192.0.2.10"));
    assert_true(connect_spf_covers("v=spf1 ip4:192.0.2.99/24 -all", "192.0.2.10"));  /* masked */
    assert_false(connect_spf_covers("v=spf1 -ip4:192.0.2.10 ~all", "192.0.2.10"));
    assert_false(connect_spf_covers("v=spf1 ip6:192.0.2.10 ~all", "192.0.2.10"));
    assert_false(connect_spf_covers("v=spf1 ip4:192.0.2.10/33 ~all", "192.0.2.10"));
    assert_true(connect_spf_covers("v=spf1 ip6:2001:db8::/32 ~all", "2001:db8::25"));
    assert_false(connect_spf_covers("v=spf1 include:ip4:192.0.2.10 ~all", "192.0.2.10"));

    static const struct { const char *cur, *want; } cases[] = {
        { NULL, "v=spf1 ip4:192.0.2.10 ip6:2001:db8::25 ~all" },
        { "v=spf1 mx -all", "v=spf1 mx ip4:192.0.2.10 ip6:2001:db8::25 -all" },
        { "v=spf1 ip4:192.0.2.10 include:spf.example ~all",
          "v=spf1 ip4:192.0.2.10 include:spf.example ip6:2001:db8::25 ~all" },
        { "v=spf1 a redirect=_spf.example", "v=spf1 a ip4:192.0.2.10 ip6:2001:db8::25 redirect=_spf.example" },
        { "v=spf1 mx", "v=spf1 mx ip4:192.0.2.10 ip6:2001:db8::25" },
        { "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all", "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all" },
        { "v=spf1 mx ?all", "v=spf1 mx ip4:192.0.2.10 ip6:2001:db8::25 ?all" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = connect_spf_merge(cases[i].cur, ips, 2);
        assert_string_equal(got, cases[i].want);
        free(got);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_microsoft365),
        cmocka_unit_test(test_exchange),
        cmocka_unit_test(test_hybrid),
        cmocka_unit_test(test_google),
        cmocka_unit_test(test_smtp),
        cmocka_unit_test(test_values_everywhere),
        cmocka_unit_test(test_missing_values),
        cmocka_unit_test(test_domain_covers),
        cmocka_unit_test(test_spf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
