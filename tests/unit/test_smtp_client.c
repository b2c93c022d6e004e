/*
 * test_smtp_client.c - the delivery client's reply parser, table-driven:
 * single and multi-line replies, enhanced status codes, incomplete input,
 * and the malformed cases (bad codes, mixed codes, over-long lines).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include "smtp/smtp_client.h"

struct reply_case {
    const char *in;
    int rc;
    int code;
    const char *enh;
    const char *text;
    size_t used;
    const char *diag;
};

static const struct reply_case cases[] = {
    { "220 mx.example.com ESMTP\r\n", 1, 220, "", "mx.example.com ESMTP", 26, "220 mx.example.com ESMTP" },
    { "250-mx\r\n250-PIPELINING\r\n250 SIZE 100\r\nNEXT", 1, 250, "", "mx\nPIPELINING\nSIZE 100", 38, "250 mx" },
    { "550 5.1.1 <a@b>: unknown\r\n", 1, 550, "5.1.1", "5.1.1 <a@b>: unknown", 26, "550 5.1.1 <a@b>: unknown" },
    { "451 4.3.0\r\n", 1, 451, "4.3.0", "4.3.0", 11, "451 4.3.0" },
    { "250 2.0.0 Ok\n", 1, 250, "2.0.0", "2.0.0 Ok", 13, "250 2.0.0 Ok" },      /* bare LF tolerated */
    { "354\r\n", 1, 354, "", "", 5, "354" },
    { "550 4.1.1 class mismatch\r\n", 1, 550, "", "4.1.1 class mismatch", 26, "550 4.1.1 class mismatch" },
    { "250-first\r\n", 0, 0, NULL, NULL, 0, NULL },                               /* more lines to come */
    { "250 no end of line", 0, 0, NULL, NULL, 0, NULL },
    { "", 0, 0, NULL, NULL, 0, NULL },
    { "25 short\r\n", -1, 0, NULL, NULL, 0, NULL },
    { "650 bad class\r\n", -1, 0, NULL, NULL, 0, NULL },
    { "250-a\r\n550 b\r\n", -1, 0, NULL, NULL, 0, NULL },                          /* mixed codes */
    { "250xtext\r\n", -1, 0, NULL, NULL, 0, NULL },
    { "abc def\r\n", -1, 0, NULL, NULL, 0, NULL },
};

static void test_reply_table(void **state)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct reply_case *c = &cases[i];
        struct smtp_reply r;
        size_t used = 99;
        int rc = smtp_reply_parse(c->in, strlen(c->in), &r, &used);
        if (rc != c->rc)
            fail_msg("case %zu (%s): rc %d, want %d", i, c->in, rc, c->rc);
        if (rc != 1)
            continue;
        assert_int_equal(r.code, c->code);
        assert_string_equal(r.enh, c->enh);
        assert_string_equal(r.text, c->text);
        assert_int_equal(used, c->used);
        char diag[SMTP_DIAG_MAX];
        smtp_reply_diag(&r, diag, sizeof(diag));
        assert_string_equal(diag, c->diag);
    }
}

static void test_reply_bounds(void **state)
{
    /* a line longer than the bound is refused even before its end arrives */
    static char big[SMTP_REPLY_MAX_LINE + 10];
    memset(big, 'x', sizeof(big));
    memcpy(big, "250 ", 4);
    struct smtp_reply r;
    size_t used;
    assert_int_equal(smtp_reply_parse(big, sizeof(big), &r, &used), -1);
    /* too many continuation lines */
    static char many[(SMTP_REPLY_MAX_LINES + 2) * 8];
    size_t o = 0;
    for (int i = 0; i < SMTP_REPLY_MAX_LINES + 1; i++) {
        memcpy(many + o, "250-x\r\n", 7);
        o += 7;
    }
    memcpy(many + o, "250 x\r\n", 7);
    o += 7;
    assert_int_equal(smtp_reply_parse(many, o, &r, &used), -1);
    /* controls in the text are neutralised */
    const char *ctl = "550 bad\x01text\r\n";
    assert_int_equal(smtp_reply_parse(ctl, strlen(ctl), &r, &used), 1);
    assert_string_equal(r.text, "bad?text");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_table),
        cmocka_unit_test(test_reply_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
