/*
 * test_dns.c - the resolver's own life cycle, without a DNS server: queries
 * that fail before reaching libunbound are answered later on the loop (never
 * inside dns_query), a cancelled query never calls back, and dns_shutdown
 * answers every query still in flight with TEMPFAIL so that its owner can
 * release what it kept.  The resolver address is a dead loopback port.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <event2/event.h>
#include "core/core.h"
#include "dns/dns.h"

struct answer {
    int calls;
    enum dns_status status;
    char why[160];
};

static void on_answer(void *arg, const struct dns_result *r)
{
    struct answer *a = arg;
    a->calls++;
    a->status = r->status;
    str_copy(a->why, sizeof a->why, r->why);
}

static struct dns *make(struct event_base **base)
{
    struct error err = {0};
    *base = event_base_new();
    assert_non_null(*base);
    struct dns_options opt = { .resolver = "127.0.0.1:9" };
    struct dns *d = dns_create(*base, &opt, &err);
    assert_non_null(d);
    return d;
}

/* the trust anchor file is read by dns_create: errors name the setting */
static void test_trust_anchor_file(void **state)
{
    char path[] = "/tmp/moat-test-anchor-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("; a comment\n\nexample.net. 3600 IN DS 12345 13 2 "
          "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF\n", f);
    fclose(f);
    struct event_base *base = event_base_new();
    struct error err = {0};
    struct dns_options opt = { .resolver = "127.0.0.1:9", .trust_anchor_file = path };
    struct dns *d = dns_create(base, &opt, &err);
    assert_non_null(d);
    dns_free(d);

    f = fopen(path, "w");
    fputs("example.net. 3600 IN A 127.0.0.1\n", f);
    fclose(f);
    assert_null(dns_create(base, &opt, &err));
    assert_string_equal(err.field, "dns_trust_anchor_file");
    assert_non_null(strstr(err.msg, ":1: not a DS or DNSKEY record"));

    f = fopen(path, "w");
    fputs("; only comments\n", f);
    fclose(f);
    assert_null(dns_create(base, &opt, &err));
    assert_non_null(strstr(err.msg, "no DS or DNSKEY record"));

    unlink(path);
    assert_null(dns_create(base, &opt, &err));
    assert_string_equal(err.field, "dns_trust_anchor_file");
    assert_non_null(strstr(err.msg, "cannot read"));
    event_base_free(base);
}

static void test_invalid_name_answered_later(void **state)
{
    struct event_base *base;
    struct dns *d = make(&base);
    struct answer a = {0};
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    dns_query(d, longname, DNS_T_TXT, on_answer, &a);
    assert_int_equal(a.calls, 0);          /* never from inside dns_query */
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.status, DNS_TEMPFAIL);
    assert_string_equal(a.why, "invalid query name");
    dns_free(d);
    event_base_free(base);
}

static void test_cancel_never_calls_back(void **state)
{
    struct event_base *base;
    struct dns *d = make(&base);
    struct answer bad = {0}, good = {0};
    struct dns_query *q = dns_query(d, "", DNS_T_A, on_answer, &bad);
    dns_cancel(d, q);
    struct dns_query *r = dns_query(d, "example.net", DNS_T_MX, on_answer, &good);
    dns_cancel(d, r);
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(bad.calls, 0);
    assert_int_equal(good.calls, 0);
    dns_free(d);
    event_base_free(base);
}

static void test_shutdown_answers_what_is_in_flight(void **state)
{
    struct event_base *base;
    struct dns *d = make(&base);
    struct answer slow = {0}, invalid = {0};
    /* the resolver is a dead port: this one is still pending */
    dns_query(d, "example.net", DNS_T_TXT, on_answer, &slow);
    dns_query(d, "", DNS_T_TXT, on_answer, &invalid);
    dns_shutdown(d);
    assert_int_equal(slow.calls, 1);
    assert_int_equal(slow.status, DNS_TEMPFAIL);
    assert_string_equal(slow.why, "the resolver is shutting down");
    assert_int_equal(invalid.calls, 1);
    /* nothing is answered twice afterwards */
    event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(slow.calls, 1);
    assert_int_equal(invalid.calls, 1);
    dns_free(d);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid_name_answered_later),
        cmocka_unit_test(test_trust_anchor_file),
        cmocka_unit_test(test_cancel_never_calls_back),
        cmocka_unit_test(test_shutdown_answers_what_is_in_flight),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
