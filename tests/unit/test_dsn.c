/*
 * test_dsn.c - the RFC 3464 DSN builder against golden files in
 * tests/unit/data/dsn/ (failure with the full message, delay with headers,
 * success, mixed), plus the status and xtext helpers.  Set
 * MOAT_UPDATE_GOLDEN=1 to rewrite the golden files after a deliberate change.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "deliver/deliver_dsn.h"

#ifndef MOAT_SOURCE_ROOT
#define MOAT_SOURCE_ROOT "."
#endif

static const char orig_msg[] =
    "Received: from client.ext.test (client.ext.test [192.0.2.7])\r\n"
    "\tby mx.moat.test with ESMTPS id 0123456789ABCDEF; Sat, 28 Nov 2026 18:00:00 +0000\r\n"
    "From: Sender <sender@ext.test>\r\n"
    "To: alice@example.com, bob@example.com\r\n"
    "Subject: hello\r\n"
    "Message-ID: <m1@ext.test>\r\n"
    "\r\n"
    "Hello there.\r\n"
    ".leading dot stays unstuffed in the spool\r\n";

static void check_golden(const char *name, const struct buf *b)
{
    char path[512];
    xsnprintf(path, sizeof(path), "%s/tests/unit/data/dsn/%s", MOAT_SOURCE_ROOT, name);
    if (getenv("MOAT_UPDATE_GOLDEN")) {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        fwrite(b->data, 1, b->len, f);
        fclose(f);
    }
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("missing golden file %s", path);
    static char want[65536];
    size_t n = fread(want, 1, sizeof(want), f);
    fclose(f);
    if (n != b->len || memcmp(want, b->data, n) != 0) {
        fprintf(stderr, "--- got (%zu octets) ---\n%.*s\n--- want %s ---\n", b->len, (int)b->len, b->data, path);
        fail_msg("DSN differs from %s", name);
    }
}

static void base_input(struct dsn_input *in)
{
    memset(in, 0, sizeof(*in));
    in->reporting_mta = "mx.moat.test";
    in->qid = "0123456789ABCDEF";
    in->sender = "sender@ext.test";
    in->arrival_ms = 1795888800000;   /* Sat, 28 Nov 2026 18:00:00 +0000 */
    in->now_ms = 1795892400000;       /* 19:00:00 */
    in->boundary = "0123456789ABCDEF.1795892400000/moat";
    in->message_id = "<0123456789ABCDEF.1795892400000.dsn@mx.moat.test>";
}

static void test_failure_full(void **state)
{
    struct dsn_rcpt r[2] = {
        { .addr = "alice@example.com", .orcpt = "rfc822;Alice+2Bx@example.com", .action = DSN_ACTION_FAILED,
          .status = "5.1.1", .remote_mta = "mail.example.com",
          .diag = "550 5.1.1 <alice@example.com>: Recipient address rejected: User unknown",
          .last_attempt_ms = 1795892399000 },
        { .addr = "bob@example.com", .action = DSN_ACTION_FAILED, .status = "4.4.7",
          .diag = "4.4.7 delivery time expired after 5 days; last error: 4.4.1 connect to mail.example.com[192.0.2.1]:25: Connection refused" },
    };
    struct dsn_input in;
    base_input(&in);
    in.envid = "QQ+2B1";
    in.rcpts = r;
    in.n_rcpts = 2;
    in.orig = orig_msg;
    in.orig_len = sizeof(orig_msg) - 1;
    in.orig_full = true;
    struct buf b;
    buf_init(&b);
    deliver_dsn_build(&in, &b);
    check_golden("failure_full.eml", &b);
    buf_free(&b);
}

static void test_delay_headers(void **state)
{
    static const char hdrs[] = "From: Sender <sender@ext.test>\r\nSubject: hello\r\n";
    struct dsn_rcpt r[1] = {
        { .addr = "alice@example.com", .action = DSN_ACTION_DELAYED, .status = "4.4.1",
          .remote_mta = NULL, .diag = "4.4.1 connect to mail.example.com[192.0.2.1]:25: Connection refused",
          .last_attempt_ms = 1795892399000 },
    };
    struct dsn_input in;
    base_input(&in);
    in.retry_until_ms = 1796320800000;   /* 5 days after arrival */
    in.rcpts = r;
    in.n_rcpts = 1;
    in.orig = hdrs;
    in.orig_len = sizeof(hdrs) - 1;
    struct buf b;
    buf_init(&b);
    deliver_dsn_build(&in, &b);
    check_golden("delay_headers.eml", &b);
    buf_free(&b);
}

static void test_success_and_8bit(void **state)
{
    static const char hdrs[] = "From: =?utf-8?q?J=C3=B6rg?= <j@ext.test>\r\nSubject: caf\xc3\xa9\r\n";
    struct dsn_rcpt r[1] = {
        { .addr = "j\xc3\xb6rg@example.com", .action = DSN_ACTION_DELIVERED, .status = "2.0.0",
          .remote_mta = "mail.example.com", .diag = "250 2.0.0 Ok: queued as 4F1\r\nInjected: x" },
    };
    struct dsn_input in;
    base_input(&in);
    in.rcpts = r;
    in.n_rcpts = 1;
    in.orig = hdrs;
    in.orig_len = sizeof(hdrs) - 1;
    in.orig_8bit = true;
    struct buf b;
    buf_init(&b);
    deliver_dsn_build(&in, &b);
    /* a reply that tried to smuggle a header line stays on one line */
    assert_null(strstr(buf_cstr(&b), "\r\nInjected"));
    check_golden("success_8bit.eml", &b);
    buf_free(&b);
}

static void test_status_and_xtext(void **state)
{
    char st[16], x[64];
    deliver_dsn_status("550 5.1.1 <a@b>: unknown", 550, st, sizeof(st));
    assert_string_equal(st, "5.1.1");
    deliver_dsn_status("550 no enhanced code", 550, st, sizeof(st));
    assert_string_equal(st, "5.0.0");
    deliver_dsn_status("4.4.1 connect to x: refused", 0, st, sizeof(st));
    assert_string_equal(st, "4.4.1");
    deliver_dsn_status("451 4.3.0. bad", 451, st, sizeof(st));
    assert_string_equal(st, "4.0.0");
    deliver_dsn_status(NULL, 0, st, sizeof(st));
    assert_string_equal(st, "4.0.0");
    deliver_xtext_decode("a+2Bb+3Dc+zz", x, sizeof(x));
    assert_string_equal(x, "a+b=c+zz");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failure_full),
        cmocka_unit_test(test_delay_headers),
        cmocka_unit_test(test_success_and_8bit),
        cmocka_unit_test(test_status_and_xtext),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
