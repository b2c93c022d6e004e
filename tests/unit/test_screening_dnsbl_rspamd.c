/*
 * test_screening_dnsbl_rspamd.c - the pure parts of the DNSBL check
 * (query names for IPv4, IPv6 nibbles and IPv4-mapped addresses; answer
 * classification incl. 127.255.255.0/24 and resolver errors; scoring with
 * weights, threshold and hold threshold), the DNSBL zone store, and the
 * rspamd answer parser and action mapping (issue 7).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "core/core.h"
#include "dns/dns.h"
#include "policy/policy_priv.h"
#include "policy/policy_rspamd.h"
#include "store/store.h"

/* --- DNSBL query names (RFC 5782 2.1, 2.4) --- */

static void test_dnsbl_query_name(void **state)
{
    static const struct { const char *addr, *name; } ok[] = {
        { "127.0.0.2", "2.0.0.127.bl.test" },
        { "192.0.2.99", "99.2.0.192.bl.test" },
        { "::ffff:192.0.2.99", "99.2.0.192.bl.test" },
        { "2001:db8:1:2::3",
          "3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test" },
        { "::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.bl.test" },
    };
    char out[300];
    (void)state;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        assert_int_equal(policy_dnsbl_query_name(ok[i].addr, "bl.test", out, sizeof out), 0);
        assert_string_equal(out, ok[i].name);
    }
    assert_int_equal(policy_dnsbl_query_name("not-an-ip", "bl.test", out, sizeof out), -1);
    assert_int_equal(policy_dnsbl_query_name("2001:db8::1", "bl.test", out, 20), -1);   /* too small */
}

/* --- answers --- */

static enum dnsbl_result classify(enum dns_status st, const char *const *addrs, size_t n,
                                  char *answer, size_t alen)
{
    struct dns_record rr[4];
    memset(rr, 0, sizeof rr);
    for (size_t i = 0; i < n; i++)
        rr[i].text = (char *)addrs[i];
    struct dns_result r = { .status = st, .n = n, .rr = rr };
    return policy_dnsbl_classify(&r, answer, alen);
}

static void test_dnsbl_classify(void **state)
{
    char a[64];
    (void)state;
    const char *listed[] = { "127.0.0.2" };
    assert_int_equal(classify(DNS_OK, listed, 1, a, sizeof a), DNSBL_LISTED);
    assert_string_equal(a, "127.0.0.2");
    const char *errcode[] = { "127.255.255.254" };
    assert_int_equal(classify(DNS_OK, errcode, 1, a, sizeof a), DNSBL_ERROR);
    assert_string_equal(a, "127.255.255.254");
    const char *errcode2[] = { "127.255.255.252" };
    assert_int_equal(classify(DNS_OK, errcode2, 1, a, sizeof a), DNSBL_ERROR);
    /* an error code beside a real listing: listed */
    const char *both[] = { "127.255.255.254", "127.0.0.10" };
    assert_int_equal(classify(DNS_OK, both, 2, a, sizeof a), DNSBL_LISTED);
    assert_string_equal(a, "127.0.0.10");
    /* 127.255.254.1 is outside 127.255.255.0/24: listed */
    const char *edge[] = { "127.255.254.1" };
    assert_int_equal(classify(DNS_OK, edge, 1, a, sizeof a), DNSBL_LISTED);
    /* an answer outside 127/8 (a wildcarding or hijacking resolver): not listed */
    const char *other[] = { "192.0.2.1" };
    assert_int_equal(classify(DNS_OK, other, 1, a, sizeof a), DNSBL_ERROR);
    assert_int_equal(classify(DNS_NXDOMAIN, NULL, 0, a, sizeof a), DNSBL_CLEAN);
    assert_int_equal(classify(DNS_NODATA, NULL, 0, a, sizeof a), DNSBL_CLEAN);
    assert_int_equal(classify(DNS_TEMPFAIL, NULL, 0, a, sizeof a), DNSBL_ERROR);
    assert_string_equal(a, "tempfail");
    assert_int_equal(classify(DNS_BOGUS, NULL, 0, a, sizeof a), DNSBL_ERROR);
}

/* --- scoring --- */

static void test_dnsbl_decide(void **state)
{
    const char *zones[] = { "a.bl", "b.bl", "c.bl" };
    int weights[] = { 1, 1, 50 };
    struct policy_verdict v;
    (void)state;
    enum dnsbl_result one[] = { DNSBL_LISTED, DNSBL_CLEAN, DNSBL_ERROR };
    memset(&v, 0, sizeof v);
    policy_dnsbl_decide("192.0.2.1", zones, weights, one, 3, 2, 0, &v);
    assert_int_equal(v.action, POLICY_DUNNO);          /* 1 < 2; the error never counts */
    memset(&v, 0, sizeof v);
    policy_dnsbl_decide("192.0.2.1", zones, weights, one, 3, 1, 0, &v);
    assert_int_equal(v.action, POLICY_REJECT);
    assert_int_equal(v.code, 554);
    assert_string_equal(v.dsn, "5.7.1");
    assert_string_equal(v.text, "Service unavailable; client [192.0.2.1] listed at a.bl");
    enum dnsbl_result two[] = { DNSBL_LISTED, DNSBL_LISTED, DNSBL_CLEAN };
    memset(&v, 0, sizeof v);
    policy_dnsbl_decide("192.0.2.1", zones, weights, two, 3, 2, 0, &v);
    assert_int_equal(v.action, POLICY_REJECT);
    assert_string_equal(v.text, "Service unavailable; client [192.0.2.1] listed at a.bl, b.bl");
    /* hold between hold and reject thresholds */
    memset(&v, 0, sizeof v);
    policy_dnsbl_decide("192.0.2.1", zones, weights, one, 3, 5, 1, &v);
    assert_int_equal(v.action, POLICY_HOLD);
    assert_non_null(strstr(v.reason, "listed at a.bl"));
    /* nothing listed: never a verdict, whatever the thresholds */
    enum dnsbl_result none[] = { DNSBL_CLEAN, DNSBL_ERROR, DNSBL_ERROR };
    memset(&v, 0, sizeof v);
    policy_dnsbl_decide("192.0.2.1", zones, weights, none, 3, 1, 1, &v);
    assert_int_equal(v.action, POLICY_DUNNO);
}

/* --- the zone store --- */

static void test_dnsbl_store(void **state)
{
    char dir[] = "/tmp/moat-test-dnsbl-XXXXXX";
    char path[300];
    struct error err = {0};
    (void)state;
    assert_non_null(mkdtemp(dir));
    xsnprintf(path, sizeof path, "%s/moat.db", dir);
    struct store *st = store_open(path, &err);
    if (st == NULL)
        fail_msg("store_open: %s", err.msg);
    assert_int_equal(store_dnsbl_zone_add(st, "Zen.Example.ORG.", 2, "main", &err), STORE_OK);
    assert_int_equal(store_dnsbl_zone_add(st, "zen.example.org", 1, NULL, &err), STORE_CONFLICT);
    assert_string_equal(err.field, "zone");
    assert_int_equal(store_dnsbl_zone_add(st, "bad zone", 1, NULL, &err), STORE_ERR);
    assert_string_equal(err.field, "zone");
    assert_int_equal(store_dnsbl_zone_add(st, "single", 1, NULL, &err), STORE_ERR);
    assert_int_equal(store_dnsbl_zone_add(st, "a..b", 1, NULL, &err), STORE_ERR);
    assert_int_equal(store_dnsbl_zone_add(st, "bl.example", 0, NULL, &err), STORE_ERR);
    assert_string_equal(err.field, "weight");
    assert_int_equal(store_dnsbl_zone_add(st, "bl.example", 101, NULL, &err), STORE_ERR);
    assert_int_equal(store_dnsbl_zone_add(st, "bl.example", 1, "two\nlines", &err), STORE_ERR);
    assert_string_equal(err.field, "comment");
    assert_int_equal(store_dnsbl_zone_add(st, "bl.example", 100, NULL, &err), STORE_OK);
    struct store_dnsbl_zone *z;
    size_t n;
    assert_int_equal(store_dnsbl_zone_list(st, &z, &n, &err), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(z[0].zone, "bl.example");
    assert_int_equal(z[0].weight, 100);
    assert_string_equal(z[1].zone, "zen.example.org");
    assert_string_equal(z[1].comment, "main");
    store_dnsbl_zones_free(z, n);
    struct store_snapshot *snap = store_snapshot_load(st, &err);
    assert_non_null(snap);
    const struct store_dnsbl_zone *sz = store_snapshot_dnsbl_zones(snap, &n);
    assert_int_equal(n, 2);
    assert_string_equal(sz[1].zone, "zen.example.org");
    store_snapshot_free(snap);
    assert_int_equal(store_dnsbl_zone_remove(st, "ZEN.example.org", &err), STORE_OK);
    assert_int_equal(store_dnsbl_zone_remove(st, "zen.example.org", &err), STORE_NOT_FOUND);
    store_close(st);
    char cmd[200];
    xsnprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

/* --- rspamd --- */

static int parse(const char *json, struct rspamd_result *r, char *why, size_t wl)
{
    return rspamd_parse_response(json, strlen(json), r, why, wl);
}

static void test_rspamd_parse(void **state)
{
    struct rspamd_result r;
    char why[160];
    (void)state;
    static const struct { const char *action; enum rspamd_action a; } acts[] = {
        { "no action", RSPAMD_NO_ACTION }, { "greylist", RSPAMD_GREYLIST },
        { "add header", RSPAMD_ADD_HEADER }, { "rewrite subject", RSPAMD_REWRITE_SUBJECT },
        { "soft reject", RSPAMD_SOFT_REJECT }, { "reject", RSPAMD_REJECT },
    };
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++) {
        char j[200];
        xsnprintf(j, sizeof j, "{\"is_skipped\":false,\"score\":7.5,\"required_score\":15,"
                  "\"action\":\"%s\",\"symbols\":{\"X\":{\"name\":\"X\",\"score\":1}}}", acts[i].action);
        assert_int_equal(parse(j, &r, why, sizeof why), 0);
        assert_int_equal(r.action, acts[i].a);
        assert_true(r.score > 7.49 && r.score < 7.51);
        assert_true(r.required > 14.99 && r.required < 15.01);
    }
    assert_int_equal(parse("{\"action\":\"discard\"}", &r, why, sizeof why), -1);
    assert_non_null(strstr(why, "unknown action"));
    assert_int_equal(parse("{\"error\":\"bad request\"}", &r, why, sizeof why), -1);
    assert_non_null(strstr(why, "bad request"));
    assert_int_equal(parse("[1,2]", &r, why, sizeof why), -1);
    assert_int_equal(parse("{\"action\":", &r, why, sizeof why), -1);
    assert_int_equal(parse("", &r, why, sizeof why), -1);
    /* depth bound: 17 levels refused, 16 accepted */
    char deep[200] = "{\"action\":\"reject\",\"x\":";
    size_t l = strlen(deep);
    for (int i = 0; i < 16; i++)
        deep[l++] = '[';
    for (int i = 0; i < 16; i++)
        deep[l++] = ']';
    deep[l++] = '}';
    deep[l] = '\0';
    assert_int_equal(parse(deep, &r, why, sizeof why), -1);
    assert_non_null(strstr(why, "deeper"));
    /* brackets inside strings do not count */
    assert_int_equal(parse("{\"action\":\"reject\",\"s\":\"[[[[[[[[[[[[[[[[[[[[[[[\\\"[[[[\"}", &r, why,
                           sizeof why), 0);
    /* absurd scores are clamped (they go into header lines) */
    assert_int_equal(parse("{\"action\":\"add header\",\"score\":1e300,\"required_score\":-1e300}",
                           &r, why, sizeof why), 0);
    assert_true(r.score == RSPAMD_SCORE_MAX && r.required == -RSPAMD_SCORE_MAX);
    /* size bound */
    size_t big = RSPAMD_RESPONSE_MAX + 1;
    char *b = malloc(big);
    memset(b, ' ', big);
    assert_int_equal(rspamd_parse_response(b, big, &r, why, sizeof why), -1);
    free(b);
}

static void test_rspamd_decide(void **state)
{
    struct rspamd_policy pol;
    struct policy_verdict v;
    struct buf h;
    (void)state;
    buf_init(&h);
    rspamd_policy_from_settings("tempfail", "none", &pol);
    struct rspamd_result r = { .action = RSPAMD_NO_ACTION, .score = 1, .required = 15 };
    rspamd_decide(0, &r, "", &pol, &v, &h);
    assert_int_equal(v.action, POLICY_DUNNO);
    assert_int_equal(h.len, 0);
    r.action = RSPAMD_ADD_HEADER;
    r.score = 7;
    rspamd_decide(0, &r, "", &pol, &v, &h);
    assert_int_equal(v.action, POLICY_DUNNO);
    assert_string_equal(buf_cstr(&h), "X-Spam-Status: Yes, score=7.00 required=15.00 action=add header\r\n"
                                      "X-Spam-Score: 7.00\r\n");
    buf_reset(&h);
    r.action = RSPAMD_REWRITE_SUBJECT;
    rspamd_decide(0, &r, "", &pol, &v, &h);
    assert_int_equal(v.action, POLICY_DUNNO);
    assert_true(h.len > 0);
    buf_reset(&h);
    static const enum rspamd_action defer[] = { RSPAMD_GREYLIST, RSPAMD_SOFT_REJECT };
    for (size_t i = 0; i < 2; i++) {
        r.action = defer[i];
        rspamd_decide(0, &r, "", &pol, &v, &h);
        assert_int_equal(v.action, POLICY_TEMPFAIL);
        assert_int_equal(v.code, 451);
        assert_string_equal(v.dsn, "4.7.1");
    }
    r.action = RSPAMD_REJECT;
    rspamd_decide(0, &r, "", &pol, &v, &h);
    assert_int_equal(v.action, POLICY_REJECT);
    assert_int_equal(v.code, 550);
    assert_string_equal(v.dsn, "5.7.1");
    assert_string_equal(v.check, "rspamd");
    rspamd_policy_from_settings("tempfail", "reject", &pol);
    rspamd_decide(0, &r, "", &pol, &v, &h);
    assert_int_equal(v.action, POLICY_HOLD);
    buf_reset(&h);
    rspamd_policy_from_settings("tempfail", "add_header", &pol);
    r.action = RSPAMD_ADD_HEADER;
    rspamd_decide(0, &r, "", &pol, &v, &h);
    assert_int_equal(v.action, POLICY_HOLD);
    /* unreachable */
    rspamd_decide(-1, &r, "Couldn't connect to server", &pol, &v, &h);
    assert_int_equal(v.action, POLICY_TEMPFAIL);
    assert_int_equal(v.code, 451);
    assert_string_equal(v.dsn, "4.7.0");
    assert_non_null(strstr(v.reason, "Couldn't connect"));
    rspamd_policy_from_settings("accept", "none", &pol);
    rspamd_decide(-1, &r, "timeout", &pol, &v, &h);
    assert_int_equal(v.action, POLICY_DUNNO);
    assert_non_null(strstr(v.reason, "accepted unscanned"));
    buf_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dnsbl_query_name),
        cmocka_unit_test(test_dnsbl_classify),
        cmocka_unit_test(test_dnsbl_decide),
        cmocka_unit_test(test_dnsbl_store),
        cmocka_unit_test(test_rspamd_parse),
        cmocka_unit_test(test_rspamd_decide),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
