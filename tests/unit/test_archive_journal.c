/*
 * test_archive_journal.c - Exchange envelope journal reports
 * (src/archive/archive_journal.c): a report shaped as Exchange sends it
 * (tests/unit/data/archive/exchange_report.eml: X-MS-Journal-Report,
 * multipart/mixed, a text/plain envelope block, the original as
 * message/rfc822) is unwrapped into its envelope, with To/Cc/Bcc/Recipient
 * kinds and Expanded/Forwarded origins, and the original octet for octet;
 * the same with a base64-encoded original, with a base64 ISO-8859-1
 * envelope block, with LF line ends, without the header (recognised by its
 * shape); a plain BCC-style copy is PLAIN; a
 * report without its original or with an unreadable envelope is MALFORMED
 * with a reason; the recipient bound holds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "archive/archive_journal.h"
#include "core/core.h"

static const struct archive_limits lim = ARCHIVE_LIMITS_DEFAULT;

/* sample - a file of tests/unit/data/archive, NUL-terminated */
static char *sample(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/tests/unit/data/archive/%s", MOAT_SOURCE_ROOT, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    struct buf b;
    buf_init(&b);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_append(&b, chunk, n);
    fclose(f);
    *len = b.len;
    buf_cstr(&b);
    return b.data;
}

/* lf - the text with CR LF made LF */
static char *lf(const char *s, size_t n, size_t *out)
{
    char *d = xmalloc(n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] == '\r' && i + 1 < n && s[i + 1] == '\n'))
            d[k++] = s[i];
    d[k] = '\0';
    *out = k;
    return d;
}

/* replace - a copy of s with the first from replaced by to */
static char *replace(const char *s, const char *from, const char *to)
{
    const char *at = strstr(s, from);
    assert_non_null(at);
    return xasprintf("%.*s%s%s", (int)(at - s), s, to, at + strlen(from));
}

struct want_rcpt {
    const char *addr, *kind, *expanded, *forwarded;
};

static const struct want_rcpt report_rcpts[] = {
    { "bob@contoso.example", "to", NULL, NULL },
    { "erin@contoso.example", "to", "sales@contoso.example", NULL },
    { "carol@fabrikam.example", "cc", NULL, NULL },
    { "frank@contoso.example", "cc", NULL, "grace@contoso.example" },
    { "dave@contoso.example", "bcc", NULL, NULL },
    { "heidi@fabrikam.example", "recipient", NULL, NULL },
};

static void check_str(const char *got, const char *want)
{
    if (want == NULL)
        assert_null(got);
    else
        assert_string_equal(got, want);
}

/* check_report - the envelope of the sample report, and its original == orig */
static void check_report(const struct archive_journal *j, const char *orig, size_t orig_len)
{
    assert_int_equal(j->kind, ARCHIVE_JOURNAL_REPORT);
    assert_null(j->error);
    assert_string_equal(j->sender, "alice@contoso.example");
    assert_null(j->on_behalf_of);
    assert_string_equal(j->subject, "Quarterly figures f\xc3\xbcr Q3");
    assert_string_equal(j->message_id, "orig-1@contoso.example");
    assert_int_equal(j->n_rcpts, sizeof report_rcpts / sizeof report_rcpts[0]);
    for (size_t i = 0; i < j->n_rcpts; i++) {
        assert_string_equal(j->rcpts[i].addr, report_rcpts[i].addr);
        assert_string_equal(j->rcpts[i].kind, report_rcpts[i].kind);
        check_str(j->rcpts[i].expanded, report_rcpts[i].expanded);
        check_str(j->rcpts[i].forwarded, report_rcpts[i].forwarded);
    }
    assert_int_equal(j->original_len, orig_len);
    assert_memory_equal(j->original, orig, orig_len);
}

static void test_report_crlf(void **state)
{
    (void)state;
    size_t n, on;
    char *r = sample("exchange_report.eml", &n);
    char *orig = sample("original.eml", &on);
    struct archive_journal j;
    assert_int_equal(archive_journal_parse(r, n, &lim, &j), 0);
    check_report(&j, orig, on);
    assert_string_equal(archive_journal_kind_name(j.kind), "report");
    archive_journal_clear(&j);
    free(r);
    free(orig);
}

static void test_report_lf(void **state)
{
    (void)state;
    size_t n, on, ln, lon;
    char *r = sample("exchange_report.eml", &n);
    char *orig = sample("original.eml", &on);
    char *rl = lf(r, n, &ln), *ol = lf(orig, on, &lon);
    struct archive_journal j;
    assert_int_equal(archive_journal_parse(rl, ln, &lim, &j), 0);
    check_report(&j, ol, lon);
    archive_journal_clear(&j);
    free(r);
    free(orig);
    free(rl);
    free(ol);
}

static void test_report_base64_original(void **state)
{
    (void)state;
    size_t n, on;
    char *r = sample("exchange_report_base64.eml", &n);
    char *orig = sample("original.eml", &on);
    assert_null(strstr(r, "Revenue grew"));   /* the original really is encoded */
    struct archive_journal j;
    assert_int_equal(archive_journal_parse(r, n, &lim, &j), 0);
    check_report(&j, orig, on);
    archive_journal_clear(&j);
    free(r);
    free(orig);
}

/* without X-MS-Journal-Report, the shape alone makes it a report */
static void test_report_by_shape(void **state)
{
    (void)state;
    size_t n, on;
    char *r = sample("exchange_report.eml", &n);
    char *orig = sample("original.eml", &on);
    char *s = replace(r, "X-MS-Journal-Report:\r\n", "");
    struct archive_journal j;
    assert_int_equal(archive_journal_parse(s, strlen(s), &lim, &j), 0);
    check_report(&j, orig, on);
    archive_journal_clear(&j);
    free(s);
    free(r);
    free(orig);
}

/* b64 - base64 of s[0..n) in 76-column CR LF lines */
static char *b64(const unsigned char *s, size_t n)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    struct buf b;
    buf_init(&b);
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0) |
                     (i + 2 < n ? s[i + 2] : 0);
        char q[4] = { a[v >> 18 & 63], a[v >> 12 & 63], i + 1 < n ? a[v >> 6 & 63] : '=',
                      i + 2 < n ? a[v & 63] : '=' };
        buf_append(&b, q, 4);
        if ((i / 3 + 1) % 19 == 0)
            buf_append(&b, "\r\n", 2);
    }
    buf_append(&b, "\r\n", 2);
    buf_cstr(&b);
    return b.data;
}

/* the envelope block itself base64-encoded, in ISO-8859-1 (non-ASCII subject) */
static void test_envelope_encoded(void **state)
{
    (void)state;
    size_t n, on;
    char *r = sample("exchange_report.eml", &n);
    char *orig = sample("original.eml", &on);
    const char *head = "Content-Type: text/plain; charset=\"utf-8\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n";
    char *start = strstr(r, head);
    assert_non_null(start);
    char *env = start + strlen(head);
    char *end = strstr(env, "\r\n--_000_JournalReport_7f3a_");
    assert_non_null(end);
    /* the block in Latin-1: the subject's u-umlaut is one octet */
    struct buf latin;
    buf_init(&latin);
    for (char *q = env; q < end; q++) {
        if ((unsigned char)q[0] == 0xc3 && (unsigned char)q[1] == 0xbc) {
            buf_append(&latin, "\xfc", 1);
            q++;
        } else {
            buf_append(&latin, q, 1);
        }
    }
    char *enc = b64((const unsigned char *)latin.data, latin.len);
    char *m = xasprintf("%.*sContent-Type: text/plain; charset=\"iso-8859-1\"\r\n"
                        "Content-Transfer-Encoding: base64\r\n\r\n%s%s",
                        (int)(start - r), r, enc, end);
    assert_null(strstr(m, "Sender: alice"));
    struct archive_journal j;
    assert_int_equal(archive_journal_parse(m, strlen(m), &lim, &j), 0);
    check_report(&j, orig, on);
    archive_journal_clear(&j);
    free(m);
    free(enc);
    buf_free(&latin);
    free(r);
    free(orig);
}

/* field names in any case, "Name <addr>" forms, blank lines, unknown fields */
static void test_envelope_variants(void **state)
{
    (void)state;
    size_t n;
    char *r = sample("exchange_report.eml", &n);
    char *s1 = replace(r, "Sender: alice@contoso.example\r\n",
                       "\r\nSENDER: \"Archer, Alice\" <Alice@Contoso.Example>\r\n"
                       "On-Behalf-Of: <boss@contoso.example>\r\n"
                       "X-Unknown-Field: whatever\r\n\r\n");
    char *s2 = replace(s1, "To: bob@contoso.example\r\n",
                       "to:   Bob Baker <BOB@contoso.example>  \r\n"
                       "garbage line without a colon\r\n");
    char *s3 = replace(s2, "Bcc: dave@contoso.example\r\n",
                       "bcc: <dave@contoso.example>, expanded: <Team@Contoso.example>\r\n");
    struct archive_journal j;
    assert_int_equal(archive_journal_parse(s3, strlen(s3), &lim, &j), 0);
    assert_int_equal(j.kind, ARCHIVE_JOURNAL_REPORT);
    assert_string_equal(j.sender, "alice@contoso.example");
    assert_string_equal(j.on_behalf_of, "boss@contoso.example");
    assert_int_equal(j.n_rcpts, 6);
    assert_string_equal(j.rcpts[0].addr, "bob@contoso.example");
    assert_string_equal(j.rcpts[0].kind, "to");
    assert_string_equal(j.rcpts[4].addr, "dave@contoso.example");
    assert_string_equal(j.rcpts[4].kind, "bcc");
    assert_string_equal(j.rcpts[4].expanded, "team@contoso.example");
    archive_journal_clear(&j);
    free(s1);
    free(s2);
    free(s3);
    free(r);
}

/* a journal copy that is not a report: archived as it came */
static void test_plain_copy(void **state)
{
    (void)state;
    size_t n;
    char *m = sample("journal_bcc_copy.eml", &n);
    struct archive_journal j;
    assert_int_equal(archive_journal_parse(m, n, &lim, &j), 0);
    assert_int_equal(j.kind, ARCHIVE_JOURNAL_PLAIN);
    assert_null(j.original);
    assert_null(j.error);
    assert_int_equal(j.n_rcpts, 0);
    assert_string_equal(archive_journal_kind_name(j.kind), "plain");
    archive_journal_clear(&j);
    free(m);

    /* a text message that merely starts with "Sender:", no attached message */
    const char *t = "From: a@example.com\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
                    "--b\r\nContent-Type: text/plain\r\n\r\nSender: x@example.com\r\nTo: y@example.com\r\n"
                    "--b--\r\n";
    assert_int_equal(archive_journal_parse(t, strlen(t), &lim, &j), 0);
    assert_int_equal(j.kind, ARCHIVE_JOURNAL_PLAIN);
    archive_journal_clear(&j);
    assert_int_equal(archive_journal_parse("", 0, &lim, &j), 0);
    assert_int_equal(j.kind, ARCHIVE_JOURNAL_PLAIN);
    archive_journal_clear(&j);
}

static void expect_malformed(const char *msg, size_t len, const char *why)
{
    struct archive_journal j;
    assert_int_equal(archive_journal_parse(msg, len, &lim, &j), 0);
    assert_int_equal(j.kind, ARCHIVE_JOURNAL_MALFORMED);
    assert_non_null(j.error);
    assert_null(strchr(j.error, '\n'));
    if (strstr(j.error, why) == NULL)
        fail_msg("error \"%s\" does not mention \"%s\"", j.error, why);
    assert_null(j.original);
    assert_string_equal(archive_journal_kind_name(j.kind), "malformed");
    archive_journal_clear(&j);
}

static void test_malformed(void **state)
{
    (void)state;
    size_t n;
    char *r = sample("exchange_report_no_original.eml", &n);
    expect_malformed(r, n, "no message/rfc822 original");
    free(r);

    r = sample("exchange_report.eml", &n);
    /* garbage where the Sender is */
    char *s = replace(r, "Sender: alice@contoso.example", "Sender: !!! not an address");
    expect_malformed(s, strlen(s), "Sender");
    free(s);
    /* no Sender line at all (the header still claims a report) */
    s = replace(r, "Sender: alice@contoso.example\r\n", "");
    expect_malformed(s, strlen(s), "no Sender line");
    free(s);
    /* no recipient */
    char *a = replace(r, "To: bob@contoso.example\r\n", "");
    char *b = replace(a, "To: erin@contoso.example, Expanded: sales@contoso.example\r\n", "");
    char *c = replace(b, "Cc: carol@fabrikam.example\r\n", "");
    char *d = replace(c, "Cc: frank@contoso.example, Forwarded: grace@contoso.example\r\n", "");
    char *e = replace(d, "Bcc: dave@contoso.example\r\n", "");
    char *f = replace(e, "Recipient: heidi@fabrikam.example\r\n", "Recipient: nobody\r\n");
    expect_malformed(f, strlen(f), "no recipient");
    free(a);
    free(b);
    free(c);
    free(d);
    free(e);
    free(f);
    /* an empty original */
    const char *orig_start = strstr(r, "Content-Type: message/rfc822");
    assert_non_null(orig_start);
    s = xasprintf("%.*sContent-Type: message/rfc822\r\n\r\n\r\n--_000_JournalReport_7f3a_--\r\n",
                  (int)(orig_start - r), r);
    expect_malformed(s, strlen(s), "empty");
    free(s);
    free(r);

    /* claims to be a report, is not multipart */
    const char *t = "From: x@example.com\r\nX-MS-Journal-Report:\r\n\r\nSender: a@example.com\r\n";
    expect_malformed(t, strlen(t), "not a multipart");
    /* claims to be a report, the first part is not the envelope block */
    t = "X-MS-Journal-Report:\r\nContent-Type: multipart/mixed; boundary=\"q\"\r\n\r\n"
        "--q\r\nContent-Type: image/png\r\n\r\nPNG\r\n--q\r\nContent-Type: message/rfc822\r\n\r\n"
        "Subject: x\r\n\r\nbody\r\n--q--\r\n";
    expect_malformed(t, strlen(t), "envelope block");
}

/* ARCHIVE_JOURNAL_MAX_RCPTS recipients are read, the rest ignored */
static void test_rcpt_bound(void **state)
{
    (void)state;
    size_t n;
    char *r = sample("exchange_report.eml", &n);
    struct buf many;
    buf_init(&many);
    for (int i = 0; i < ARCHIVE_JOURNAL_MAX_RCPTS + 500; i++)
        buf_printf(&many, "To: user%d@contoso.example\r\n", i);
    buf_cstr(&many);
    char *s = replace(r, "To: bob@contoso.example\r\n", many.data);
    struct archive_journal j;
    assert_int_equal(archive_journal_parse(s, strlen(s), &lim, &j), 0);
    assert_int_equal(j.kind, ARCHIVE_JOURNAL_REPORT);
    assert_int_equal(j.n_rcpts, ARCHIVE_JOURNAL_MAX_RCPTS);
    assert_string_equal(j.rcpts[0].addr, "user0@contoso.example");
    archive_journal_clear(&j);
    buf_free(&many);
    free(s);
    free(r);
}

/* cut anywhere, the report never crashes, and once its header is in,
 * it is never taken for an ordinary message */
static void test_prefixes(void **state)
{
    (void)state;
    size_t n;
    char *r = sample("exchange_report.eml", &n);
    const char *h = strstr(r, "X-MS-Journal-Report:\r\n");
    assert_non_null(h);
    size_t claims_from = (size_t)(h - r) + strlen("X-MS-Journal-Report:\r\n");
    for (size_t k = 0; k <= n; k += 3) {
        struct archive_journal j;
        assert_int_equal(archive_journal_parse(r, k, &lim, &j), 0);
        if (k >= claims_from)
            assert_int_not_equal(j.kind, ARCHIVE_JOURNAL_PLAIN);
        if (j.kind == ARCHIVE_JOURNAL_REPORT)
            assert_true(j.original_len > 0 && j.n_rcpts > 0);
        if (j.kind == ARCHIVE_JOURNAL_MALFORMED)
            assert_non_null(j.error);
        archive_journal_clear(&j);
    }
    free(r);
}

int main(void)
{
    archive_mime_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_report_crlf),
        cmocka_unit_test(test_report_lf),
        cmocka_unit_test(test_report_base64_original),
        cmocka_unit_test(test_report_by_shape),
        cmocka_unit_test(test_envelope_encoded),
        cmocka_unit_test(test_envelope_variants),
        cmocka_unit_test(test_plain_copy),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_rcpt_bound),
        cmocka_unit_test(test_prefixes),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    archive_mime_shutdown();
    return rc;
}
