/*
 * test_core.c - the core toolkit: CRC-32C vectors (RFC 3720 B.4), UTF-8
 * validation edge cases, buffers, checked formatting, log quoting.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <pthread.h>
#include <event2/event.h>
#include "core/core.h"
#include "core/worker.h"

static void test_crc32c_vectors(void **state)
{
    static const struct { const char *in; size_t len; uint32_t crc; } cases[] = {
        { "123456789", 9, 0xE3069283u },
        { "", 0, 0x00000000u },
        { "a", 1, 0xC1D04330u },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(crc32c(0, cases[i].in, cases[i].len), cases[i].crc);
    /* RFC 3720 B.4: 32 bytes of zeros -> 0x8A9136AA, of 0xFF -> 0x62A8AB43 */
    unsigned char z[32];
    memset(z, 0, sizeof z);
    assert_int_equal(crc32c(0, z, sizeof z), 0x8A9136AAu);
    memset(z, 0xff, sizeof z);
    assert_int_equal(crc32c(0, z, sizeof z), 0x62A8AB43u);
    /* incremental equals one-shot */
    uint32_t c = crc32c(0, "1234", 4);
    assert_int_equal(crc32c(c, "56789", 5), 0xE3069283u);
}

static void test_utf8(void **state)
{
    static const struct { const char *s; bool ok; } cases[] = {
        { "plain", true },
        { "h\xc3\xa9llo", true },             /* é */
        { "\xe2\x82\xac", true },             /* € */
        { "\xf0\x9f\x98\x80", true },         /* U+1F600 */
        { "\xc3", false },                    /* truncated */
        { "\xc0\xaf", false },                /* overlong '/' */
        { "\xe0\x80\xaf", false },            /* overlong */
        { "\xed\xa0\x80", false },            /* surrogate */
        { "\xf4\x90\x80\x80", false },        /* > U+10FFFF */
        { "\xff", false },
        { "\x80", false },                    /* lone continuation */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(str_valid_utf8(cases[i].s, strlen(cases[i].s)), cases[i].ok);
}

static void test_buf(void **state)
{
    struct buf b;
    buf_init(&b);
    for (int i = 0; i < 1000; i++)
        buf_append(&b, "abc", 3);
    assert_int_equal(b.len, 3000);
    buf_consume(&b, 2998);
    assert_string_equal(buf_cstr(&b), "bc");
    buf_printf(&b, "-%d-", 42);
    assert_string_equal(buf_cstr(&b), "bc-42-");
    buf_append(&b, "\0x", 2);
    assert_int_equal(b.len, 8);
    buf_free(&b);
    assert_null(b.data);
}

static void test_format(void **state)
{
    char small[4];
    assert_int_equal(xsnprintf(small, sizeof small, "%s", "abc"), 3);
    assert_int_equal(xsnprintf(small, sizeof small, "%s", "abcd"), -1);
    char dst[8];
    assert_int_equal(str_copy(dst, sizeof dst, "1234567"), 7);
    assert_int_equal(str_copy(dst, sizeof dst, "12345678"), -1);
    char *p = xasprintf("%s=%d", "x", 5);
    assert_string_equal(p, "x=5");
    free(p);
    assert_true(str_ieq("Example.COM", "example.com"));
    assert_true(str_has_suffix_ci("mail.Example.com", ".EXAMPLE.com"));
    assert_false(str_has_suffix_ci("com", "example.com"));
}

static void test_log_quote(void **state)
{
    char q[32];
    assert_string_equal(log_quote(q, sizeof q, "say \"hi\"\r\n\\"), "\"say \\\"hi\\\"\\\\\"");
    char tiny[6];
    log_quote(tiny, sizeof tiny, "abcdefgh");
    assert_int_equal(tiny[0], '"');
    assert_int_equal(tiny[strlen(tiny) - 1], '"');
}

static void test_time(void **state)
{
    char d[64];
    time_rfc5322(d, sizeof d, 1795891190);   /* 2026-11-28T18:39:50Z */
    assert_string_equal(d, "Sat, 28 Nov 2026 18:39:50 +0000");
    time_iso8601(d, sizeof d, 1795891190);
    assert_string_equal(d, "2026-11-28T18:39:50Z");
    uint64_t a = time_mono_ms(), b = time_mono_ms();
    assert_true(b >= a);
}

/* worker pool: every job's work runs off the loop thread, every done runs
 * on the loop, exactly once, also for jobs still queued at free */
struct wjob {
    pthread_t loop;
    int worked, done;
    bool off_loop;
    int *remaining;
    struct event_base *base;
};

static void wjob_work(void *arg)
{
    struct wjob *j = arg;
    j->worked++;
    j->off_loop = !pthread_equal(pthread_self(), j->loop);
}

static void wjob_done(void *arg)
{
    struct wjob *j = arg;
    assert_true(pthread_equal(pthread_self(), j->loop));
    j->done++;
    if (--*j->remaining == 0 && j->base)
        event_base_loopbreak(j->base);
}

static void test_worker_pool(void **state)
{
    (void)state;
    struct error err = { 0 };
    struct event_base *base = event_base_new();
    struct worker_pool *p = worker_pool_create(base, 3, &err);
    assert_non_null(p);
    enum { N = 200 };
    struct wjob jobs[N];
    int remaining = N;
    for (int i = 0; i < N; i++) {
        jobs[i] = (struct wjob){ .loop = pthread_self(), .remaining = &remaining, .base = base };
        worker_submit(p, wjob_work, wjob_done, &jobs[i]);
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(jobs[i].done, 0);   /* never inside worker_submit */
    event_base_dispatch(base);
    assert_int_equal(remaining, 0);
    /* queued at free: still worked and done */
    int rest = 5;
    struct wjob more[5];
    for (int i = 0; i < 5; i++) {
        more[i] = (struct wjob){ .loop = pthread_self(), .remaining = &rest };
        worker_submit(p, wjob_work, wjob_done, &more[i]);
    }
    worker_pool_free(p);
    assert_int_equal(rest, 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(jobs[i].worked, 1);
        assert_int_equal(jobs[i].done, 1);
        assert_true(jobs[i].off_loop);
    }
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_vectors),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_log_quote),
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_worker_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
