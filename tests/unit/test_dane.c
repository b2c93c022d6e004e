/*
 * test_dane.c - DANE's pure parts: the TLSA rdata parser (bounds, short and
 * long data), which records are usable for SMTP (RFC 7672 3.1.3), the
 * RFC 7672 decision table of deliver_dane.c (MX/address/TLSA status and
 * DNSSEC status -> state), the connection level per state, and the
 * failure text naming the policy.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "core/core.h"
#include "dns/dns.h"
#include "deliver/deliver_dane.h"

static unsigned char buf[3 + DNS_TLSA_MAX_DATA + 1];

static void test_tlsa_parse_fields(void **state)
{
    unsigned char rd[3 + 32];
    rd[0] = 3; rd[1] = 1; rd[2] = 1;
    for (int i = 0; i < 32; i++)
        rd[3 + i] = (unsigned char)(0xa0 + i);
    struct dns_record rr;
    assert_int_equal(dns_tlsa_parse(rd, sizeof(rd), &rr), 0);
    assert_int_equal(rr.usage, 3);
    assert_int_equal(rr.selector, 1);
    assert_int_equal(rr.mtype, 1);
    assert_int_equal(rr.data_len, 32);
    assert_memory_equal(rr.data, rd + 3, 32);
    assert_true(strncmp(rr.text, "3 1 1 a0a1a2", 12) == 0);
    assert_int_equal(strlen(rr.text), 6 + 64);
    dns_record_clear(&rr);
    assert_null(rr.data);
}

static void test_tlsa_parse_bounds(void **state)
{
    struct dns_record rr;
    memset(buf, 0x11, sizeof(buf));
    /* no association data at all, or less than the three fields */
    for (size_t len = 0; len < 4; len++)
        assert_int_equal(dns_tlsa_parse(buf, len, &rr), -1);
    /* one octet of data: parsed (and then unusable for any matching type) */
    assert_int_equal(dns_tlsa_parse(buf, 4, &rr), 0);
    assert_int_equal(rr.data_len, 1);
    dns_record_clear(&rr);
    /* full data up to the bound; the log text is cut, not the data */
    assert_int_equal(dns_tlsa_parse(buf, 3 + DNS_TLSA_MAX_DATA, &rr), 0);
    assert_int_equal(rr.data_len, DNS_TLSA_MAX_DATA);
    assert_true(strlen(rr.text) < 16 + 2 * 64 + 4);
    assert_non_null(strstr(rr.text, "..."));
    dns_record_clear(&rr);
    /* one octet more: refused */
    assert_int_equal(dns_tlsa_parse(buf, 3 + DNS_TLSA_MAX_DATA + 1, &rr), -1);
}

static void test_tlsa_usable(void **state)
{
    static unsigned char d[DANE_TLSA_MAX_DATA];
    static const struct { uint8_t u, s, m; uint16_t len; bool ok; } cases[] = {
        { 3, 1, 1, 32, true },     /* DANE-EE SPKI SHA2-256 */
        { 3, 0, 2, 64, true },     /* DANE-EE cert SHA2-512 */
        { 2, 0, 1, 32, true },     /* DANE-TA cert SHA2-256 */
        { 2, 1, 0, 300, true },    /* DANE-TA full key */
        { 0, 0, 1, 32, false },    /* PKIX-TA: unusable for SMTP (RFC 7672 3.1.3) */
        { 1, 1, 1, 32, false },    /* PKIX-EE */
        { 4, 1, 1, 32, false },    /* unknown usage */
        { 3, 2, 1, 32, false },    /* unknown selector */
        { 3, 1, 3, 32, false },    /* unknown matching type */
        { 3, 1, 1, 31, false },    /* SHA2-256 of the wrong length */
        { 3, 1, 1, 33, false },
        { 3, 1, 2, 32, false },    /* SHA2-512 of the wrong length */
        { 3, 1, 0, 0, false },     /* empty full data */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct dane_tlsa t = { cases[i].u, cases[i].s, cases[i].m, cases[i].len, d };
        if (dane_tlsa_usable(&t) != cases[i].ok)
            fail_msg("case %zu: %u %u %u len %u", i, cases[i].u, cases[i].s, cases[i].m, cases[i].len);
    }
}

/* a TLSA answer of n records, each "usage 1 1 <32 octets>" */
static struct dns_record recs[4];
static unsigned char hash[32];

static struct dns_result tlsa_answer(enum dns_status st, bool secure, const uint8_t *usages, size_t n)
{
    struct dns_result r = { .status = st, .secure = secure, .n = n, .rr = recs };
    for (size_t i = 0; i < n; i++) {
        memset(&recs[i], 0, sizeof(recs[i]));
        recs[i].usage = usages[i];
        recs[i].selector = 1;
        recs[i].mtype = 1;
        recs[i].data_len = 32;
        recs[i].data = hash;
    }
    return r;
}

static void test_decide_table(void **state)
{
    static const uint8_t ee[] = { 3 }, pkix[] = { 0, 1 }, mixed[] = { 1, 2 };
    struct dns_result addr_secure = { .status = DNS_OK, .secure = true };
    struct dns_result addr_insecure = { .status = DNS_OK, .secure = false };
    struct dns_result addr_bogus = { .status = DNS_BOGUS };
    struct dns_result addr_temp = { .status = DNS_TEMPFAIL };
    struct {
        bool mx_secure;
        struct dns_result *addr;
        enum dns_status tst;
        bool tsecure;
        const uint8_t *usages;
        size_t n;
        enum dane_state want;
        const char *why;
    } cases[] = {
        /* MX insecure: nothing else matters, not even a matching TLSA */
        { false, &addr_secure, DNS_OK, true, ee, 1, DANE_NOT_APPLICABLE, "MX" },
        /* the host's address records */
        { true, &addr_insecure, DNS_OK, true, ee, 1, DANE_NOT_APPLICABLE, "address" },
        { true, &addr_bogus, DNS_OK, true, ee, 1, DANE_BOGUS, "bogus" },
        { true, &addr_temp, DNS_OK, true, ee, 1, DANE_TEMPFAIL, "address" },
        /* TLSA */
        { true, &addr_secure, DNS_OK, true, ee, 1, DANE_REQUIRED, "1 of 1" },
        { true, &addr_secure, DNS_OK, true, mixed, 2, DANE_REQUIRED, "1 of 2" },
        { true, &addr_secure, DNS_OK, true, pkix, 2, DANE_ENCRYPT_ONLY, "unusable" },
        { true, &addr_secure, DNS_OK, false, ee, 1, DANE_NOT_APPLICABLE, "insecure" },
        { true, &addr_secure, DNS_NXDOMAIN, true, NULL, 0, DANE_NOT_APPLICABLE, "secure nxdomain" },
        { true, &addr_secure, DNS_NODATA, true, NULL, 0, DANE_NOT_APPLICABLE, "secure nodata" },
        { true, &addr_secure, DNS_NODATA, false, NULL, 0, DANE_NOT_APPLICABLE, "insecure nodata" },
        { true, &addr_secure, DNS_BOGUS, false, NULL, 0, DANE_BOGUS, "bogus" },
        { true, &addr_secure, DNS_TEMPFAIL, false, NULL, 0, DANE_TEMPFAIL, "failed" },
        /* no address answer at all (NODATA for both families) is not a reason to skip TLSA */
        { true, NULL, DNS_OK, true, ee, 1, DANE_REQUIRED, "usable" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct dns_result t = tlsa_answer(cases[i].tst, cases[i].tsecure, cases[i].usages, cases[i].n);
        char why[160] = "";
        enum dane_state st = dane_decide(cases[i].mx_secure, cases[i].addr, &t, why, sizeof(why));
        if (st != cases[i].want || !strstr(why, cases[i].why))
            fail_msg("case %zu: got %s \"%s\", want %s \"...%s...\"", i, dane_state_name(st), why,
                     dane_state_name(cases[i].want), cases[i].why);
    }
}

static void test_level_per_state(void **state)
{
    enum smtp_client_tls t;
    assert_int_equal(deliver_dane_level(DANE_REQUIRED, SMTP_CLIENT_TLS_MAY, &t), 0);
    assert_int_equal(t, SMTP_CLIENT_TLS_DANE);
    assert_int_equal(deliver_dane_level(DANE_ENCRYPT_ONLY, SMTP_CLIENT_TLS_MAY, &t), 0);
    assert_int_equal(t, SMTP_CLIENT_TLS_ENCRYPT);
    assert_int_equal(deliver_dane_level(DANE_NOT_APPLICABLE, SMTP_CLIENT_TLS_VERIFY, &t), 0);
    assert_int_equal(t, SMTP_CLIENT_TLS_VERIFY);
    /* bogus and unknown never give a level: in particular never clear text */
    assert_int_equal(deliver_dane_level(DANE_BOGUS, SMTP_CLIENT_TLS_MAY, &t), -1);
    assert_int_equal(deliver_dane_level(DANE_TEMPFAIL, SMTP_CLIENT_TLS_MAY, &t), -1);
}

static void test_failure_names_the_policy(void **state)
{
    char d[256];
    deliver_dane_diag("ext.example", "4.7.5 TLSA mismatch at mx.ext.example[127.0.0.1]:25: no TLSA record matched",
                      d, sizeof(d));
    assert_string_equal(d, "4.7.5 TLS policy \"dane\" for ext.example: TLSA mismatch at "
                           "mx.ext.example[127.0.0.1]:25: no TLSA record matched");
    deliver_dane_diag("ext.example", "4.7.4 TLS is required but the server does not offer STARTTLS", d, sizeof(d));
    assert_string_equal(d, "4.7.4 TLS policy \"dane\" for ext.example: TLS is required but the server "
                           "does not offer STARTTLS");
    deliver_dane_diag("ext.example", "4.4.2 mx[127.0.0.1]:25 during the TLS handshake: TLS error", d, sizeof(d));
    assert_string_equal(d, "4.7.5 TLS policy \"dane\" for ext.example: mx[127.0.0.1]:25 during the TLS "
                           "handshake: TLS error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tlsa_parse_fields),
        cmocka_unit_test(test_tlsa_parse_bounds),
        cmocka_unit_test(test_tlsa_usable),
        cmocka_unit_test(test_decide_table),
        cmocka_unit_test(test_level_per_state),
        cmocka_unit_test(test_failure_names_the_policy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
