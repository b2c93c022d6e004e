/*
 * test_smtp_data.c - table-driven tests of the DATA reader
 * (src/smtp/smtp_data.c): dot-stuffing, CRLF.CRLF as the only end of data,
 * bare CR / bare LF detection (the SMTP smuggling sequences), over-long
 * lines, the size and header limits, Received counting.
 *
 * Every case runs twice: the input in one piece, and one octet at a time,
 * and both must give the same output, events and consumed length.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "smtp/smtp_data.h"

struct data_case {
    const char *name;
    const char *in;
    const char *out;         /* canonical output; NULL = don't check */
    unsigned events_set;     /* must be set */
    unsigned events_clear;   /* must not be set */
    int rest;                /* octets left unconsumed after the end (-1 = not ended) */
    int code;                /* smtp_data_verdict code, 0 = acceptable */
    unsigned received;       /* Received fields counted (checked when non-zero) */
};

static const struct smtp_data_limits lim = {
    .max_line = 1000, .max_size = 200, .max_header = 120, .max_received = 3,
};

#define REF SMTP_DATA_REFUSE

static const struct data_case cases[] = {
    { "simple", "Subject: x\r\n\r\nhello\r\n.\r\n", "Subject: x\r\n\r\nhello\r\n",
      SMTP_DATA_END | SMTP_DATA_HEADER_END, REF, 0, 0, 0 },
    { "empty message", ".\r\n", "", SMTP_DATA_END, REF, 0, 0, 0 },
    { "pipelined after end", "a\r\n.\r\nQUIT\r\n", "a\r\n", SMTP_DATA_END, REF, 6, 0, 0 },
    { "dot-stuffing removed", "a\r\n..b\r\n...\r\n.\r\n", "a\r\n.b\r\n..\r\n", SMTP_DATA_END, REF, 0, 0, 0 },
    { "lone leading dot removed", "a\r\n.b\r\n.\r\n", "a\r\nb\r\n", SMTP_DATA_END, REF, 0, 0, 0 },
    { "not ended yet", "a\r\n.\r", NULL, 0, SMTP_DATA_END, -1, 0, 0 },
    { "dot not at line start", "a.\r\n.\r\n", "a.\r\n", SMTP_DATA_END, REF, 0, 0, 0 },
    /* smuggling: none of these end the data, each is refused */
    { "LF.LF", "a\n.\nMAIL FROM:<x@y>\r\n.\r\n", NULL, SMTP_DATA_END | SMTP_DATA_BARE_LF, 0, 0, 550, 0 },
    { "CR.CR", "a\r.\rMAIL FROM:<x@y>\r\n.\r\n", NULL, SMTP_DATA_END | SMTP_DATA_BARE_CR, 0, 0, 550, 0 },
    { "CRLF.LF", "a\r\n.\nMAIL FROM:<x@y>\r\n.\r\n", NULL, SMTP_DATA_END | SMTP_DATA_BARE_LF, 0, 0, 550, 0 },
    { "LF.CRLF", "a\n.\r\nMAIL FROM:<x@y>\r\n.\r\n", NULL, SMTP_DATA_END | SMTP_DATA_BARE_LF, 0, 0, 550, 0 },
    { "CR.CRLF", "a\r.\r\nb\r\n.\r\n", NULL, SMTP_DATA_END | SMTP_DATA_BARE_CR, 0, 0, 550, 0 },
    { "CRLF.CR", "a\r\n.\rb\r\n.\r\n", NULL, SMTP_DATA_END | SMTP_DATA_BARE_CR, 0, 0, 550, 0 },
    { "bare LF only, never ends", "a\n.\n", NULL, SMTP_DATA_BARE_LF, SMTP_DATA_END, -1, 0, 0 },
    { "CR CR LF", "a\r\r\n.\r\n", NULL, SMTP_DATA_END | SMTP_DATA_BARE_CR, 0, 0, 550, 0 },
    { "bare LF in header", "Subject: a\nb\r\n\r\n.\r\n", NULL, SMTP_DATA_BARE_LF, 0, 0, 550, 0 },
    { "NUL passes through", "a\0b\r\n.\r\n", NULL, SMTP_DATA_END, REF, 0, 0, 0 },
    /* limits */
    { "size limit", "Subject: x\r\n\r\n"
      "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\r\n"
      "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\r\n"
      ".\r\n", NULL, SMTP_DATA_END | SMTP_DATA_TOO_BIG, 0, 0, 552, 0 },
    { "header limit", "A: 0123456789012345678901234567890123456789012345678901234567890123456789\r\n"
      "B: 0123456789012345678901234567890123456789012345678901234567890123456789\r\n\r\n.\r\n",
      NULL, SMTP_DATA_END | SMTP_DATA_HEADER_TOO_BIG, 0, 0, 552, 0 },
    { "received count ok", "Received: a\r\nreceived: b\r\nRECEIVED : c\r\n\r\nbody\r\n.\r\n", NULL,
      SMTP_DATA_END, REF, 0, 0, 3 },
    { "received loop", "Received: a\r\nReceived: b\r\nReceived: c\r\nReceived: d\r\n\r\n.\r\n", NULL,
      SMTP_DATA_END | SMTP_DATA_LOOP, 0, 0, 554, 4 },
    { "received in body not counted", "Subject: x\r\n\r\nReceived: a\r\nReceived: b\r\nReceived: c\r\n"
      "Received: d\r\n.\r\n", NULL, SMTP_DATA_END, REF, 0, 0, 0 },
    { "continuation lines", "Subject: a\r\n b\r\n\tc\r\nReceived: x\r\n\r\n.\r\n", NULL,
      SMTP_DATA_END | SMTP_DATA_HEADER_END, REF, 0, 0, 1 },
    { "no header section", "hello world\r\nReceived: a\r\n.\r\n", NULL,
      SMTP_DATA_END | SMTP_DATA_HEADER_END, REF, 0, 0, 0 },
    { "8bit", "Subject: \xc3\xa9\r\n\r\n.\r\n", NULL, SMTP_DATA_END | SMTP_DATA_8BIT, REF, 0, 0, 0 },
};

/* run_case - feed in chunks of `step` octets (0 = all at once) */
static void run_case(const struct data_case *c, size_t step)
{
    struct smtp_data d;
    struct buf out;
    buf_init(&out);
    smtp_data_init(&d, &lim);
    size_t len = strlen(c->in);
    /* the NUL case carries an embedded NUL: count it by hand */
    if (strcmp(c->name, "NUL passes through") == 0)
        len = 8;
    size_t used = 0;
    while (used < len && !smtp_data_done(&d)) {
        size_t n = step ? (len - used < step ? len - used : step) : len - used;
        size_t k = smtp_data_feed(&d, c->in + used, n, &out);
        assert_true(k <= n);
        used += k;
        if (k < n)
            break;
    }
    unsigned ev = smtp_data_events(&d);
    if ((ev & c->events_set) != c->events_set || (ev & c->events_clear) != 0)
        fail_msg("%s (step %zu): events 0x%x, want set 0x%x clear 0x%x", c->name, step, ev, c->events_set,
                 c->events_clear);
    if (c->rest >= 0) {
        assert_true(smtp_data_done(&d));
        assert_int_equal(len - used, (size_t)c->rest);
    } else {
        assert_false(smtp_data_done(&d));
        assert_int_equal(used, len);
    }
    if (c->out != NULL) {
        if (out.len != strlen(c->out) || (out.len && memcmp(out.data, c->out, out.len) != 0))
            fail_msg("%s (step %zu): output \"%.*s\"", c->name, step, (int)out.len, out.data);
    }
    if (c->received)
        assert_int_equal(d.received, c->received);
    if (smtp_data_done(&d)) {
        int code;
        const char *dsn, *text;
        int r = smtp_data_verdict(&d, &code, &dsn, &text);
        assert_int_equal(r, c->code ? -1 : 0);
        assert_int_equal(code, c->code);
    }
    buf_free(&out);
}

static void test_cases(void **state)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_case(&cases[i], 0);
        run_case(&cases[i], 1);
        run_case(&cases[i], 3);
    }
}

/* test_line_length - 1000 octets incl. CRLF pass, 1001 are refused (RFC 5321 4.5.3.1.6) */
static void test_line_length(void **state)
{
    static char msg[1200];
    for (int extra = 0; extra <= 1; extra++) {
        struct smtp_data_limits l = { .max_line = 1000, .max_size = 10000, .max_header = 10000, .max_received = 10 };
        size_t n = 998 + (size_t)extra;
        msg[0] = '\r';
        msg[1] = '\n';      /* an empty header section: the long line is body */
        memset(msg + 2, 'x', n);
        memcpy(msg + 2 + n, "\r\n.\r\n", 5);
        struct smtp_data d;
        struct buf out;
        buf_init(&out);
        smtp_data_init(&d, &l);
        size_t used = smtp_data_feed(&d, msg, n + 7, &out);
        assert_int_equal(used, n + 7);
        assert_true(smtp_data_done(&d));
        int code;
        const char *dsn, *text;
        if (extra == 0) {
            assert_int_equal(smtp_data_verdict(&d, &code, &dsn, &text), 0);
            assert_int_equal(out.len, n + 4);
        } else {
            assert_int_equal(smtp_data_verdict(&d, &code, &dsn, &text), -1);
            assert_int_equal(code, 500);
            assert_string_equal(dsn, "5.5.6");
        }
        buf_free(&out);
    }
    /* a dot-stuffed line counts its stuffing dot: it is on the wire */
    struct smtp_data_limits l = { .max_line = 5, .max_size = 100, .max_header = 100, .max_received = 1 };
    struct smtp_data d;
    struct buf out;
    buf_init(&out);
    smtp_data_init(&d, &l);
    smtp_data_feed(&d, "\r\n..ab\r\n.\r\n", 11, &out);
    assert_true(smtp_data_events(&d) & SMTP_DATA_LINE_TOO_LONG);
    buf_free(&out);
}

/* test_precedence - smuggling outranks every other refusal */
static void test_precedence(void **state)
{
    struct smtp_data_limits l = { .max_line = 10, .max_size = 5, .max_header = 5, .max_received = 0 };
    struct smtp_data d;
    struct buf out;
    buf_init(&out);
    smtp_data_init(&d, &l);
    const char *in = "Received: aaaaaaaaaaaaaaaaaaaaa\nb\r\n.\r\n";
    smtp_data_feed(&d, in, strlen(in), &out);
    int code;
    const char *dsn, *text;
    assert_int_equal(smtp_data_verdict(&d, &code, &dsn, &text), -1);
    assert_int_equal(code, 550);
    assert_string_equal(dsn, "5.6.11");
    assert_int_equal(out.len, 0);
    buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_line_length),
        cmocka_unit_test(test_precedence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
