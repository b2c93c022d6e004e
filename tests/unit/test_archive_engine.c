/*
 * test_archive_engine.c - the archive engine's pure parts (archive.c, issue
 * 8): archive_prepare of SMTP mail (envelope, direction, compression, the
 * deduplication hash over Message-ID and body), archive_body (zstd, damaged
 * bodies refused) and archive_mbox_write (mboxrd quoting).  Journal reports
 * are unwrapped by archive_journal.c and tested there and end to end
 * (tests/e2e/test_journal.py).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <zstd.h>
#include "archive/archive.h"

static const char msg1[] =
    "Received: from a.example (a.example [192.0.2.1]) by moat; Sat, 28 Nov 2026 12:00:00 +0000\r\n"
    "From: Bob <bob@remote.example.org>\r\n"
    "To: alice@example.com\r\n"
    "Subject: hello\r\n"
    "Message-ID: <m1@remote.example.org>\r\n"
    "\r\n"
    "From the start\r\n"
    ">From quoted\r\n"
    "body\r\n";

static const char msg1_again[] =
    "Received: from b.example (b.example [192.0.2.2]) by moat; Sat, 28 Nov 2026 12:05:00 +0000\r\n"
    "From: Bob <bob@remote.example.org>\r\n"
    "To: alice@example.com\r\n"
    "Subject: hello\r\n"
    "Message-ID: <m1@remote.example.org>\r\n"
    "\r\n"
    "From the start\r\n"
    ">From quoted\r\n"
    "body\r\n";

static void prepare(const char *qid, const char *msg, struct archive_prepared *out)
{
    static const char *const rcpts[] = { "Alice@Example.COM" };
    struct archive_input in = {
        .qid = qid, .received = 1795867200, .direction = "outbound", .client_addr = "192.0.2.1",
        .sender = "Bob@Remote.Example.ORG", .rcpts = rcpts, .n_rcpts = 1,
        .data = msg, .len = strlen(msg),
    };
    struct archive_limits lim = ARCHIVE_LIMITS_DEFAULT;
    struct error err = { 0 };
    if (archive_prepare(&in, &lim, NULL, NULL, out, &err) < 0)
        fail_msg("archive_prepare: %s", err.msg);
}

static void test_prepare_smtp(void **state)
{
    (void)state;
    struct archive_prepared a, b;
    prepare("00000000000000A1", msg1, &a);
    prepare("00000000000000A2", msg1_again, &b);
    const struct store_archive_item *it = &a.item;
    assert_string_equal(it->qid, "00000000000000A1");
    assert_string_equal(it->source, "smtp");
    assert_string_equal(it->direction, "outbound");
    assert_null(it->journal);
    assert_string_equal(it->sender, "bob@remote.example.org");
    assert_int_equal(it->n_rcpts, 1);
    assert_string_equal(it->rcpts[0].addr, "alice@example.com");
    assert_string_equal(it->rcpts[0].kind, "envelope");
    assert_int_equal(it->size, strlen(msg1));
    assert_string_equal(it->codec, "zstd");
    assert_int_equal(it->received, 1795867200);
    /* other trace headers, same Message-ID and body: the same dedup hash */
    assert_memory_equal(a.item.hash, b.item.hash, 32);
    /* the body is the message, compressed */
    struct store_archive_message m = { .body = (void *)it->body, .body_len = it->body_len,
                                       .codec = "zstd" };
    unsigned char *out;
    size_t len;
    struct error err = { 0 };
    assert_int_equal(archive_body(&m, &out, &len, &err), 0);
    assert_int_equal(len, strlen(msg1));
    assert_memory_equal(out, msg1, len);
    free(out);
    archive_prepared_clear(&a);
    archive_prepared_clear(&b);
    /* another body: another hash */
    static const char other[] = "Message-ID: <m1@remote.example.org>\r\n\r\nother body\r\n";
    prepare("00000000000000A3", msg1, &a);
    prepare("00000000000000A4", other, &b);
    assert_memory_not_equal(a.item.hash, b.item.hash, 32);
    archive_prepared_clear(&a);
    archive_prepared_clear(&b);
}

static void test_body_damaged(void **state)
{
    (void)state;
    unsigned char junk[32] = "not a zstd frame at all........";
    struct store_archive_message m = { .body = junk, .body_len = sizeof junk, .codec = "zstd" };
    unsigned char *out;
    size_t len;
    struct error err = { 0 };
    assert_int_equal(archive_body(&m, &out, &len, &err), -1);
    assert_null(out);
    m.codec = "lz4";
    assert_int_equal(archive_body(&m, &out, &len, &err), -1);
    assert_string_equal(err.field, "codec");
    m.body = NULL;
    m.codec = "zstd";
    assert_int_equal(archive_body(&m, &out, &len, &err), -1);
}

static void test_mbox(void **state)
{
    (void)state;
    size_t bound = ZSTD_compressBound(sizeof msg1 - 1);
    void *z = malloc(bound);
    size_t zl = ZSTD_compress(z, bound, msg1, sizeof msg1 - 1, 3);
    assert_false(ZSTD_isError(zl));
    struct store_archive_arrival arr = { .sender = "bob@remote.example.org" };
    struct store_archive_message m = { .body = z, .body_len = zl, .codec = "zstd",
                                       .received = 1795867200, .arrivals = &arr, .n_arrivals = 1 };
    struct buf b;
    buf_init(&b);
    struct error err = { 0 };
    assert_int_equal(archive_mbox_write(&b, &m, &err), 0);
    arr.sender = "";     /* the null sender */
    assert_int_equal(archive_mbox_write(&b, &m, &err), 0);
    const char *want =
        "From bob@remote.example.org Sat Nov 28 12:00:00 2026\n"
        "Received: from a.example (a.example [192.0.2.1]) by moat; Sat, 28 Nov 2026 12:00:00 +0000\n"
        "From: Bob <bob@remote.example.org>\n"
        "To: alice@example.com\n"
        "Subject: hello\n"
        "Message-ID: <m1@remote.example.org>\n"
        "\n"
        ">From the start\n"
        ">>From quoted\n"
        "body\n"
        "\n"
        "From MAILER-DAEMON Sat Nov 28 12:00:00 2026\n";
    assert_true(b.len > strlen(want));
    assert_memory_equal(b.data, want, strlen(want));
    buf_free(&b);
    free(z);
}

int main(void)
{
    archive_mime_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prepare_smtp),
        cmocka_unit_test(test_body_damaged),
        cmocka_unit_test(test_mbox),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    archive_mime_shutdown();
    return rc;
}
