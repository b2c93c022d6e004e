/*
 * test_archive_mime.c - what the archive indexes of a message
 * (src/archive/archive_mime.c, archive_text.c, archive_html.c): header
 * fields decoded (RFC 2047 subjects, addresses lower-case, Message-ID
 * without <>, Date), base64 and quoted-printable parts, charsets
 * (ISO-8859-1, windows-1252, ISO-2022-JP, Shift_JIS, KOI8-R, UTF-8, unknown
 * and undeclared) converted to UTF-8 byte for byte, HTML to text,
 * multipart/alternative, nested message/rfc822, attachment names (RFC 2231,
 * RFC 2047), LF and CRLF alike, and the bounds: a nesting bomb, 10k parts,
 * a huge text part cut on a character boundary, max_parse; several threads
 * extracting at once get what one thread gets.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>
#include "archive/archive_mime.h"
#include "core/core.h"

static const struct archive_limits lim = ARCHIVE_LIMITS_DEFAULT;

/* crlf - the text with LF made CR LF */
static char *crlf(const char *s)
{
    struct buf b;
    buf_init(&b);
    for (; *s; s++) {
        if (*s == '\n')
            buf_append(&b, "\r", 1);
        buf_append(&b, s, 1);
    }
    buf_cstr(&b);
    return b.data;
}

static void extract(const char *msg, size_t len, const struct archive_limits *l,
                    struct archive_doc *d)
{
    assert_int_equal(archive_mime_extract(msg, len, l, d), 0);
    assert_non_null(d->subject);
    assert_non_null(d->from);
    assert_non_null(d->to);
    assert_non_null(d->cc);
    assert_non_null(d->from_display);
    assert_non_null(d->text);
    assert_true(str_valid_utf8(d->text, strlen(d->text)));
    assert_true(str_valid_utf8(d->subject, strlen(d->subject)));
    assert_true(strlen(d->text) <= l->max_text);
}

static const char headers_msg[] =
    "Received: from x by y; Sat, 28 Nov 2026 09:00:00 +0000\n"
    "From: =?ISO-8859-1?Q?J=F6rg_M=FCller?= <Joerg.Mueller@Example.COM>\n"
    "To: Bob <BOB@example.com>, carol@Example.org,\n"
    " Team: dave@example.net, Erin <erin@example.net>;\n"
    "Cc: frank@example.com\n"
    "Subject: =?utf-8?b?R3LDvMOfZSBhdXMgTcO8bmNoZW4=?= und\n"
    " =?iso-2022-jp?b?GyRCRnxLXDhsGyhC?=\n"
    "Date: Sat, 28 Nov 2026 10:15:30 +0100\n"
    "Message-ID: <abc.123@mail.example.com>\n"
    "\n"
    "Hello.\n";

static void check_headers(const struct archive_doc *d, size_t header_len)
{
    assert_string_equal(d->subject, "Gr\xc3\xbc\xc3\x9f" "e aus M\xc3\xbc" "nchen und "
                        "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e");
    assert_string_equal(d->from, "joerg.mueller@example.com");
    assert_string_equal(d->from_display, "J\xc3\xb6rg M\xc3\xbcller <Joerg.Mueller@Example.COM>");
    assert_string_equal(d->to, "bob@example.com, carol@example.org, dave@example.net, erin@example.net");
    assert_string_equal(d->cc, "frank@example.com");
    assert_string_equal(d->message_id, "abc.123@mail.example.com");
    assert_int_equal(d->date, 1795857330);    /* 2026-11-28T09:15:30Z */
    assert_int_equal(d->header_len, header_len);
    assert_string_equal(d->text, "Hello.");
    assert_int_equal(d->n_attachments, 0);
    assert_false(d->truncated);
}

static void test_headers(void **state)
{
    (void)state;
    struct archive_doc d;
    extract(headers_msg, strlen(headers_msg), &lim, &d);
    check_headers(&d, strlen(headers_msg) - strlen("Hello.\n"));
    archive_doc_clear(&d);

    char *c = crlf(headers_msg);
    extract(c, strlen(c), &lim, &d);
    check_headers(&d, strlen(c) - strlen("Hello.\r\n"));
    archive_doc_clear(&d);
    free(c);

    /* nothing but a body: empty fields, no Message-ID, no date */
    const char *bare = "\njust text\n";
    extract(bare, strlen(bare), &lim, &d);
    assert_null(d.message_id);
    assert_string_equal(d.subject, "");
    assert_string_equal(d.from, "");
    assert_string_equal(d.from_display, "");
    assert_int_equal(d.date, 0);
    assert_int_equal(d.header_len, 1);
    assert_string_equal(d.text, "just text");
    archive_doc_clear(&d);
}

/* one text/plain part: charset, transfer encoding, octets -> expected UTF-8 */
static const struct {
    const char *charset;        /* NULL: no charset parameter */
    const char *cte;
    const char *body;
    const char *want;
} text_cases[] = {
    { "utf-8", "base64", "R3LDvMOfZSBhdXMgTcO8bmNoZW4=\n",
      "Gr\xc3\xbc\xc3\x9f" "e aus M\xc3\xbc" "nchen" },
    { "iso-8859-1", "quoted-printable", "caf=E9 =FCber =3D so=\nft\n",
      "caf\xc3\xa9 \xc3\xbc" "ber = soft" },
    { "ISO-8859-1", "8bit", "caf\xe9 \xfc" "ber\n", "caf\xc3\xa9 \xc3\xbc" "ber" },
    { "windows-1252", "8bit", "\x80 \x93quoted\x94\n",
      "\xe2\x82\xac \xe2\x80\x9cquoted\xe2\x80\x9d" },
    { "iso-2022-jp", "7bit", "\x1b$BF|K\\8l\x1b(B\n", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e" },
    { "Shift_JIS", "8bit", "\x93\xfa\x96{\x8c\xea\n", "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e" },
    { "koi8-r", "8bit", "\xf0\xd2\xc9\xd7\xc5\xd4 \xcd\xc9\xd2\n",
      "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 \xd0\xbc\xd0\xb8\xd1\x80" },
    { "utf-8", "8bit", "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82\n",
      "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82" },
    /* declared UTF-8 but broken: the invalid octets are dropped */
    { "utf-8", "8bit", "a\xff" "b\xc3(c\xed\xa0\x80" "d\n", "ab(cd" },
    /* an unknown charset reads as Latin-1 */
    { "x-no-such-charset", "8bit", "\xc4rger\n", "\xc3\x84rger" },
    /* undeclared 8-bit text: UTF-8 where it is, Latin-1 where it is not */
    { NULL, "8bit", "\xc3\xa9t\xe9\n", "\xc3\xa9t\xc3\xa9" },
    /* a NUL in the text does not end it */
    { "us-ascii", "base64", "YQBi\n", "ab" },
};

static void test_text_charsets(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof text_cases / sizeof text_cases[0]; i++) {
        char *m;
        if (text_cases[i].charset)
            m = xasprintf("Subject: t\nMIME-Version: 1.0\n"
                          "Content-Type: text/plain; charset=\"%s\"\n"
                          "Content-Transfer-Encoding: %s\n\n%s",
                          text_cases[i].charset, text_cases[i].cte, text_cases[i].body);
        else
            m = xasprintf("Subject: t\nContent-Transfer-Encoding: %s\n\n%s",
                          text_cases[i].cte, text_cases[i].body);
        for (int pass = 0; pass < 2; pass++) {
            char *msg = pass ? crlf(m) : xstrdup(m);
            struct archive_doc d;
            extract(msg, strlen(msg), &lim, &d);
            if (strcmp(d.text, text_cases[i].want) != 0)
                fail_msg("case %zu (%s) pass %d: got \"%s\"", i,
                         text_cases[i].charset ? text_cases[i].charset : "none", pass, d.text);
            archive_doc_clear(&d);
            free(msg);
        }
        free(m);
    }
}

static void test_html_to_text(void **state)
{
    (void)state;
    static const struct {
        const char *html, *want;
    } cases[] = {
        { "<p>Hello&nbsp;&amp; welcome</p><p>Second   para</p>", "Hello & welcome\nSecond para" },
        { "<html><head><title>T</title><style>p { color: red; }</style>"
          "<script type=\"text/javascript\">var a = \"</p>\"; alert(1);</script></head>"
          "<body>Visible<!-- hidden <b>comment</b> --> text</body></html>",
          "T\nVisible text" },
        { "a<br>b<br/><br>c", "a\nb\n\nc" },
        { "<ul><li>one</li><li>two</li></ul>", "one\ntwo" },
        { "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>", "a b\nc" },
        { "&lt;tag&gt; &quot;q&quot; &#65;&#x42;&#x43 &eacute;&euro;&hellip; &bogus; & x",
          "<tag> \"q\" ABC \xc3\xa9\xe2\x82\xac\xe2\x80\xa6 &bogus; & x" },
        { "<a href=\"x\" title='a > b'>link</a> 1 < 2", "link 1 < 2" },
        { "<SCRIPT>evil()</SCRIPT>ok<STYLE>x</style>", "ok" },
        { "  \n\t lots   of\n\n space  ", "lots of space" },
        { "&#0;&#xD800;&#x110000;", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd" },
        { "<script>never closed", "" },
        { "unterminated <b", "unterminated" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *t = archive_html_to_text(cases[i].html, strlen(cases[i].html), 1000);
        if (strcmp(t, cases[i].want) != 0)
            fail_msg("case %zu: got \"%s\" want \"%s\"", i, t, cases[i].want);
        free(t);
    }
    /* the bound holds, between characters */
    char *t = archive_html_to_text("<p>\xc3\xa9\xc3\xa9\xc3\xa9</p>", 11, 5);
    assert_string_equal(t, "\xc3\xa9\xc3\xa9");
    free(t);
}

static const char alternative_msg[] =
    "From: a@example.com\n"
    "Subject: alt\n"
    "MIME-Version: 1.0\n"
    "Content-Type: multipart/mixed; boundary=\"outer\"\n"
    "\n"
    "preamble is not text\n"
    "--outer\n"
    "Content-Type: multipart/alternative; boundary=\"alt\"\n"
    "\n"
    "--alt\n"
    "Content-Type: text/plain; charset=utf-8\n"
    "\n"
    "The plain version.\n"
    "--alt\n"
    "Content-Type: text/html; charset=utf-8\n"
    "\n"
    "<p>The <b>HTML</b> version.</p>\n"
    "--alt--\n"
    "--outer\n"
    "Content-Type: text/html; charset=iso-8859-1\n"
    "Content-Transfer-Encoding: quoted-printable\n"
    "\n"
    "<div>Caf=E9 &amp; more</div>\n"
    "--outer\n"
    "Content-Type: application/octet-stream\n"
    "Content-Disposition: attachment; filename=\"data.bin\"\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "AAECAw==\n"
    "--outer--\n"
    "epilogue is not text\n";

static void test_alternative(void **state)
{
    (void)state;
    for (int pass = 0; pass < 2; pass++) {
        char *m = pass ? crlf(alternative_msg) : xstrdup(alternative_msg);
        struct archive_doc d;
        extract(m, strlen(m), &lim, &d);
        assert_string_equal(d.text, "The plain version.\n\nCaf\xc3\xa9 & more");
        assert_int_equal(d.n_attachments, 1);
        assert_string_equal(d.attachments[0], "data.bin");
        assert_false(d.truncated);
        archive_doc_clear(&d);
        free(m);
    }
    /* without a text/plain version, the HTML one */
    const char *html_only =
        "Content-Type: multipart/alternative; boundary=a\n\n"
        "--a\nContent-Type: text/enriched\n\n<bold>rich</bold>\n"
        "--a\nContent-Type: text/html\n\n<p>only&nbsp;html</p>\n--a--\n";
    struct archive_doc d;
    extract(html_only, strlen(html_only), &lim, &d);
    assert_string_equal(d.text, "only html");
    archive_doc_clear(&d);
}

static const char nested_msg[] =
    "From: outer@example.com\n"
    "Subject: Fwd: inner\n"
    "Content-Type: multipart/mixed; boundary=\"o\"\n"
    "\n"
    "--o\n"
    "Content-Type: text/plain\n"
    "\n"
    "See the forwarded message.\n"
    "--o\n"
    "Content-Type: message/rfc822\n"
    "Content-Disposition: attachment; filename=\"inner.eml\"\n"
    "\n"
    "From: inner@example.com\n"
    "Subject: inner\n"
    "Content-Type: multipart/mixed; boundary=\"i\"\n"
    "\n"
    "--i\n"
    "Content-Type: text/plain; charset=koi8-r\n"
    "Content-Transfer-Encoding: 8bit\n"
    "\n"
    "\xf0\xd2\xc9\xd7\xc5\xd4\n"
    "--i\n"
    "Content-Type: image/png; name=\"chart.png\"\n"
    "Content-Transfer-Encoding: base64\n"
    "\n"
    "iVBORw0KGgo=\n"
    "--i--\n"
    "--o--\n";

static void test_nested_message(void **state)
{
    (void)state;
    struct archive_doc d;
    extract(nested_msg, strlen(nested_msg), &lim, &d);
    assert_string_equal(d.from, "outer@example.com");
    assert_string_equal(d.subject, "Fwd: inner");
    assert_string_equal(d.text, "See the forwarded message.\n\n"
                        "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82");
    assert_int_equal(d.n_attachments, 2);
    assert_string_equal(d.attachments[0], "inner.eml");
    assert_string_equal(d.attachments[1], "chart.png");
    archive_doc_clear(&d);
}

static void test_attachment_names(void **state)
{
    (void)state;
    const char *m =
        "Subject: names\n"
        "Content-Type: multipart/mixed; boundary=\"b\"\n"
        "\n"
        "--b\n"
        "Content-Type: text/plain\n\nbody text\n"
        "--b\n"
        /* RFC 2231 with a charset, percent-encoded */
        "Content-Type: application/pdf\n"
        "Content-Disposition: attachment; filename*=UTF-8''%E2%82%AC%20rates.pdf\n\n%PDF\n"
        "--b\n"
        /* RFC 2231 continuations */
        "Content-Type: application/pdf\n"
        "Content-Disposition: attachment;\n filename*0*=iso-8859-1''Bericht%20f%FC;\n"
        " filename*1=\"r 2026.pdf\"\n\n%PDF\n"
        "--b\n"
        /* RFC 2047 in the name parameter (what Outlook sends) */
        "Content-Type: application/vnd.ms-excel; name=\"=?UTF-8?B?R3LDvMOfZS54bHM=?=\"\n"
        "Content-Transfer-Encoding: base64\n\nAAAA\n"
        "--b\n"
        /* a text part marked as attachment is an attachment, not text */
        "Content-Type: text/plain\n"
        "Content-Disposition: attachment; filename=notes.txt\n\nnot indexed as text\n"
        "--b\n"
        /* an attachment without a name */
        "Content-Type: application/octet-stream\n"
        "Content-Disposition: attachment\n\nxx\n"
        "--b\n"
        /* inline image without a name: neither text nor attachment */
        "Content-Type: image/gif\n\nGIF89a\n"
        "--b--\n";
    struct archive_doc d;
    extract(m, strlen(m), &lim, &d);
    assert_string_equal(d.text, "body text");
    assert_int_equal(d.n_attachments, 5);
    assert_string_equal(d.attachments[0], "\xe2\x82\xac rates.pdf");
    assert_string_equal(d.attachments[1], "Bericht f\xc3\xbcr 2026.pdf");
    assert_string_equal(d.attachments[2], "Gr\xc3\xbc\xc3\x9f" "e.xls");
    assert_string_equal(d.attachments[3], "notes.txt");
    assert_string_equal(d.attachments[4], "");
    archive_doc_clear(&d);
}

/* a nesting bomb: 1000 multiparts inside each other */
static void test_depth_bomb(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    buf_append_str(&b, "Subject: bomb\n");
    for (int i = 0; i < 1000; i++)
        buf_printf(&b, "Content-Type: multipart/mixed; boundary=\"b%d\"\n\n--b%d\n", i, i);
    buf_append_str(&b, "Content-Type: text/plain\n\ndeep text\n");
    for (int i = 999; i >= 0; i--)
        buf_printf(&b, "--b%d--\n", i);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct archive_doc d;
    extract(b.data, b.len, &lim, &d);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(d.truncated);
    assert_string_equal(d.subject, "bomb");
    assert_true(secs < 5.0);
    archive_doc_clear(&d);

    /* within the depth limit the same shape is read through */
    struct archive_limits deep = lim;
    deep.max_depth = 2000;
    deep.max_parts = 5000;
    extract(b.data, b.len, &deep, &d);
    archive_doc_clear(&d);

    /* 170k levels (10 MB): GMime only ever sees the first max_parts of them */
    buf_reset(&b);
    buf_append_str(&b, "Subject: bomb\n");
    for (int i = 0; i < 170000; i++)
        buf_printf(&b, "Content-Type: multipart/mixed; boundary=\"b%d\"\n\n--b%d\n", i, i);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    extract(b.data, b.len, &lim, &d);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(d.truncated);
    assert_true(secs < 0.5);
    archive_doc_clear(&d);

    /* message/rfc822 inside each other, likewise */
    buf_reset(&b);
    buf_append_str(&b, "Subject: bomb2\n");
    for (int i = 0; i < 1000; i++)
        buf_append_str(&b, "Content-Type: message/rfc822\n\nSubject: inner\n");
    buf_append_str(&b, "\ninnermost\n");
    extract(b.data, b.len, &lim, &d);
    assert_true(d.truncated);
    assert_string_equal(d.text, "");
    archive_doc_clear(&d);
    buf_free(&b);
}

/* 10k parts: the walk stops at max_parts */
static void test_many_parts(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    buf_append_str(&b, "Subject: parts\nContent-Type: multipart/mixed; boundary=\"p\"\n\n");
    for (int i = 0; i < 10000; i++)
        buf_printf(&b, "--p\nContent-Type: application/octet-stream; name=\"f%d.bin\"\n\nx\n", i);
    buf_append_str(&b, "--p--\n");
    struct archive_doc d;
    extract(b.data, b.len, &lim, &d);
    assert_true(d.truncated);
    assert_true(d.n_attachments > 0 && d.n_attachments < lim.max_parts);
    assert_string_equal(d.attachments[0], "f0.bin");
    archive_doc_clear(&d);
    buf_free(&b);
}

/* a huge text part is cut at max_text, between two characters */
static void test_text_bound(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    buf_append_str(&b, "Subject: big\nContent-Type: text/plain; charset=utf-8\n"
                       "Content-Transfer-Encoding: 8bit\n\n");
    for (int i = 0; i < 1000000; i++)
        buf_append(&b, "\xc3\xa9", 2);     /* 2 MB of e-acute */
    buf_append_str(&b, "\n");
    struct archive_limits l = lim;
    l.max_text = 1001;
    struct archive_doc d;
    extract(b.data, b.len, &l, &d);
    assert_true(d.truncated);
    assert_int_equal(strlen(d.text), 1000);
    for (size_t i = 0; i < 1000; i += 2)
        assert_memory_equal(d.text + i, "\xc3\xa9", 2);
    archive_doc_clear(&d);

    /* the default limit: 1 MiB of text at most */
    extract(b.data, b.len, &lim, &d);
    assert_true(d.truncated);
    assert_true(strlen(d.text) <= lim.max_text && strlen(d.text) >= lim.max_text - 1);
    archive_doc_clear(&d);

    /* max_parse: only the start of the message is read */
    l = lim;
    l.max_parse = 4096;
    extract(b.data, b.len, &l, &d);
    assert_true(d.truncated);
    assert_string_equal(d.subject, "big");
    assert_true(strlen(d.text) < 4096);
    assert_int_equal(d.header_len, strlen("Subject: big\nContent-Type: text/plain; charset=utf-8\n"
                                          "Content-Transfer-Encoding: 8bit\n\n"));
    archive_doc_clear(&d);
    buf_free(&b);
}

/* anything at all: no failure, valid UTF-8 out */
static void test_garbage(void **state)
{
    (void)state;
    static const char *const inputs[] = {
        "",
        "\n\n\n",
        "no header at all, just words\xff\xfe",
        "Content-Type: multipart/mixed\n\nno boundary\n",
        "Content-Type: multipart/mixed; boundary=x\n\n--x\n--x\n--x--\n",
        "Content-Type: text/plain; charset=\"\n\n\xe9t\xe9\n",
        "Subject: =?utf-8?b?////?=\nFrom: <<<>>>\nTo: ,,,@,\nDate: yesterday\nMessage-ID: <>\n\nx\n",
        "Content-Type: message/rfc822\n\n",
        "Content-Transfer-Encoding: base64\n\n!!!!====\n",
    };
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        struct archive_doc d;
        extract(inputs[i], strlen(inputs[i]), &lim, &d);
        assert_true(d.header_len <= strlen(inputs[i]));
        archive_doc_clear(&d);
    }
    unsigned seed = 12345;
    char junk[2048];
    for (int round = 0; round < 200; round++) {
        for (size_t i = 0; i < sizeof junk; i++) {
            seed = seed * 1103515245u + 12345u;
            junk[i] = (char)(seed >> 16);
        }
        struct archive_doc d;
        extract(junk, sizeof junk, &lim, &d);
        archive_doc_clear(&d);
    }
}

/* the archive thread and benchmark threads extract at once: GMime objects
 * are never shared between calls, so each thread gets what one thread gets */
#define THREADS 4
#define ROUNDS 100

static const char *const thread_msgs[] = { headers_msg, alternative_msg, nested_msg };

static void *extract_many(void *arg)
{
    const char *const *want = arg;
    for (int r = 0; r < ROUNDS; r++) {
        for (size_t i = 0; i < sizeof thread_msgs / sizeof thread_msgs[0]; i++) {
            struct archive_doc d;
            if (archive_mime_extract(thread_msgs[i], strlen(thread_msgs[i]), &lim, &d) != 0 ||
                strcmp(d.text, want[2 * i]) != 0 || strcmp(d.subject, want[2 * i + 1]) != 0) {
                archive_doc_clear(&d);
                return (void *)1;
            }
            archive_doc_clear(&d);
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    char *want[2 * sizeof thread_msgs / sizeof thread_msgs[0]];
    for (size_t i = 0; i < sizeof thread_msgs / sizeof thread_msgs[0]; i++) {
        struct archive_doc d;
        extract(thread_msgs[i], strlen(thread_msgs[i]), &lim, &d);
        want[2 * i] = xstrdup(d.text);
        want[2 * i + 1] = xstrdup(d.subject);
        archive_doc_clear(&d);
    }
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, extract_many, want), 0);
    for (int i = 0; i < THREADS; i++) {
        void *rc;
        assert_int_equal(pthread_join(t[i], &rc), 0);
        assert_null(rc);
    }
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        free(want[i]);
}

int main(void)
{
    archive_mime_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_text_charsets),
        cmocka_unit_test(test_html_to_text),
        cmocka_unit_test(test_alternative),
        cmocka_unit_test(test_nested_message),
        cmocka_unit_test(test_attachment_names),
        cmocka_unit_test(test_depth_bomb),
        cmocka_unit_test(test_many_parts),
        cmocka_unit_test(test_text_bound),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_threads),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    archive_mime_shutdown();
    return rc;
}
