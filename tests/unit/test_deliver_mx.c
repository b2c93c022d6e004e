/*
 * test_deliver_mx.c - MX order (RFC 5321 5.1: by preference, random among
 * equal preferences), MTA-STS MX pattern matching (RFC 8461 4.1), and the
 * MTA-STS policy and TXT parsers (RFC 8461 3.1, 3.2).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include "deliver/deliver_mx.h"
#include "deliver/deliver_mtasts.h"

/* a deterministic "random" source: a fixed sequence of choices */
static uint32_t script[64];
static size_t script_i;

static uint32_t scripted(uint32_t n)
{
    uint32_t v = script[script_i++ % 64];
    return v % n;
}

static void set_recs(struct dns_record *rr, const int *pref, char names[][8], size_t n)
{
    for (size_t i = 0; i < n; i++) {
        rr[i].pref = pref[i];
        rr[i].text = names[i];
    }
}

static void test_order_by_preference(void **state)
{
    char names[5][8] = { "e30", "a10", "c20", "b10", "d20" };
    int pref[5] = { 30, 10, 20, 10, 20 };
    struct dns_record rr[5];
    set_recs(rr, pref, names, 5);
    memset(script, 0, sizeof script);
    script_i = 0;
    deliver_mx_order(rr, 5, scripted);
    for (size_t i = 1; i < 5; i++)
        assert_true(rr[i - 1].pref <= rr[i].pref);
    assert_int_equal(rr[4].pref, 30);
    assert_string_equal(rr[4].text, "e30");
}

/* every permutation of an equal-preference group is reachable, and hosts
 * never cross a preference boundary */
static void test_equal_preferences_are_shuffled(void **state)
{
    char names[4][8] = { "a", "b", "c", "z" };
    int pref[4] = { 10, 10, 10, 5 };
    int seen_first[3] = { 0, 0, 0 };
    for (uint32_t k = 0; k < 27; k++) {
        struct dns_record rr[4];
        set_recs(rr, pref, names, 4);
        script[0] = k % 3;          /* k = 3 for the group of three */
        script[1] = (k / 3) % 2;    /* then k = 2 */
        script_i = 0;
        deliver_mx_order(rr, 4, scripted);
        assert_string_equal(rr[0].text, "z");   /* preference 5 always first */
        for (int i = 1; i < 4; i++)
            assert_int_equal(rr[i].pref, 10);
        seen_first[rr[1].text[0] - 'a']++;
    }
    for (int i = 0; i < 3; i++)
        assert_true(seen_first[i] > 0);
}

/* the libsodium source: over many runs both hosts of a pair come first */
static void test_default_random_source(void **state)
{
    char names[2][8] = { "a", "b" };
    int pref[2] = { 10, 10 };
    int first_a = 0;
    for (int i = 0; i < 200; i++) {
        struct dns_record rr[2];
        set_recs(rr, pref, names, 2);
        deliver_mx_order(rr, 2, NULL);
        first_a += rr[0].text[0] == 'a';
    }
    /* P(all 200 the same) = 2^-199 */
    assert_true(first_a > 0 && first_a < 200);
}

static void test_pattern_match(void **state)
{
    static const struct {
        const char *pattern, *host;
        bool match;
    } cases[] = {
        { "mx1.example.com", "mx1.example.com", true },
        { "MX1.Example.com", "mx1.example.COM.", true },
        { "mx1.example.com", "mx2.example.com", false },
        { "*.example.com", "mx1.example.com", true },
        { "*.example.com", "MX1.EXAMPLE.COM.", true },
        { "*.example.com", "example.com", false },          /* one label, not zero */
        { "*.example.com", "a.b.example.com", false },      /* one label, not two */
        { "*.example.com", "mx1.example.org", false },
        { "*.example.com", "mx1.xexample.com", false },
        { "*", "mx1.example.com", false },
        { "", "mx1.example.com", false },
        { "mx1.example.com", "", false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bool got = deliver_mx_pattern_match(cases[i].pattern, cases[i].host);
        if (got != cases[i].match)
            fail_msg("%s vs %s: got %d", cases[i].pattern, cases[i].host, got);
    }
}

static void test_policy_parse(void **state)
{
    struct mtasts_policy p;
    char why[200];
    const char *ok = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
                     "mx: *.example.net\r\nmax_age: 86400\r\nextension: ignored\r\n";
    assert_int_equal(mtasts_policy_parse(ok, strlen(ok), &p, why, sizeof why), 0);
    assert_int_equal(p.mode, MTASTS_ENFORCE);
    assert_int_equal(p.max_age, 86400);
    assert_int_equal(p.n_mx, 2);
    assert_string_equal(p.mx[1], "*.example.net");
    assert_true(mtasts_mx_allowed(&p, "mx1.example.net"));
    assert_false(mtasts_mx_allowed(&p, "mail.example.org"));
    /* LF only, no final newline, spaces around values, testing */
    const char *lf = "version:STSv1\nmode:  testing \nmx: a.example\nmax_age: 99999999999";
    assert_int_equal(mtasts_policy_parse(lf, strlen(lf), &p, why, sizeof why), -1);  /* 11 digits */
    const char *lf2 = "version:STSv1\nmode:  testing \nmx: a.example\nmax_age: 9999999999";
    assert_int_equal(mtasts_policy_parse(lf2, strlen(lf2), &p, why, sizeof why), 0);
    assert_int_equal(p.mode, MTASTS_TESTING);
    assert_int_equal(p.max_age, MTASTS_MAX_AGE);   /* capped at one year */
    const char *none = "version: STSv1\nmode: none\nmax_age: 0\n";
    assert_int_equal(mtasts_policy_parse(none, strlen(none), &p, why, sizeof why), 0);
    static const char *const bad[] = {
        "mode: enforce\nmx: a\nmax_age: 1\n",                      /* no version */
        "version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n",
        "version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmax_age: 1\n",             /* no mx */
        "version: STSv1\nmode: enforce\nmx: a\n",                  /* no max_age */
        "version: STSv1\nmode: enforce\nmx: a\nmax_age: -1\n",
        "version: STSv1\nmode enforce\nmx: a\nmax_age: 1\n",      /* no colon */
        "version: STSv1\nmode: enforce\nmx: a\x01b\nmax_age: 1\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (mtasts_policy_parse(bad[i], strlen(bad[i]), &p, why, sizeof why) != -1)
            fail_msg("accepted bad policy %zu", i);
    /* bounded: 64 KiB */
    static char big[MTASTS_MAX_POLICY + 2];
    memset(big, 'x', sizeof big);
    assert_int_equal(mtasts_policy_parse(big, sizeof big, &p, why, sizeof why), -1);
}

static void test_txt_parse(void **state)
{
    char id[MTASTS_ID_MAX];
    assert_int_equal(mtasts_txt_parse("v=STSv1; id=20160831085700Z;", id), 0);
    assert_string_equal(id, "20160831085700Z");
    assert_int_equal(mtasts_txt_parse("v=STSv1;id=abc", id), 0);
    assert_string_equal(id, "abc");
    assert_int_equal(mtasts_txt_parse("v=STSv1; ext=1; id=X1 ", id), 0);
    assert_string_equal(id, "X1");
    assert_int_equal(mtasts_txt_parse("id=abc; v=STSv1", id), -1);       /* v first */
    assert_int_equal(mtasts_txt_parse("v=STSv2; id=abc", id), -1);
    assert_int_equal(mtasts_txt_parse("v=STSv1", id), -1);               /* no id */
    assert_int_equal(mtasts_txt_parse("v=STSv1; id=a-b", id), -1);
    assert_int_equal(mtasts_txt_parse("v=STSv1; id=123456789012345678901234567890123", id), -1);
    assert_int_equal(mtasts_txt_parse("v=spf1 -all", id), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_by_preference),
        cmocka_unit_test(test_equal_preferences_are_shuffled),
        cmocka_unit_test(test_default_random_source),
        cmocka_unit_test(test_pattern_match),
        cmocka_unit_test(test_policy_parse),
        cmocka_unit_test(test_txt_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
