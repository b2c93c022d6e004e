/*
 * test_smtp_parse.c - table-driven tests of the pure SMTP parsers
 * (src/smtp/smtp_parse.c): command lines, paths, MAIL and RCPT parameters,
 * HELO arguments.  Every row names the input and the exact reply expected
 * (0 = accepted).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "smtp/smtp_parse.h"

struct cmd_case {
    const char *line;
    size_t len;              /* 0 = strlen */
    int code;                /* 0 = ok */
    const char *verb;
    const char *args;
};

static void test_command(void **state)
{
    static const struct cmd_case cases[] = {
        { "EHLO client.example", 0, 0, "EHLO", "client.example" },
        { "ehlo   client.example  ", 0, 0, "EHLO", "client.example" },
        { "QUIT", 0, 0, "QUIT", "" },
        { "mail FROM:<a@b.example> SIZE=10", 0, 0, "MAIL", "FROM:<a@b.example> SIZE=10" },
        { "STARTTLS", 0, 0, "STARTTLS", "" },
        { "", 0, 500, NULL, NULL },
        { "   ", 0, 500, NULL, NULL },
        { "MAIL1 x", 0, 500, NULL, NULL },
        { "VERYLONGVERBNAMEXX", 0, 500, NULL, NULL },
        { "HELO a\rb", 0, 501, NULL, NULL },
        { "HELO a\nb", 0, 501, NULL, NULL },
        { "HELO a\0b", 8, 501, NULL, NULL },
        { "HELO \xff\xfe", 0, 501, NULL, NULL },
        { "HELO \xc3\xa9xample.test", 0, 0, "HELO", "\xc3\xa9xample.test" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct cmd_case *c = &cases[i];
        struct smtp_cmdline cmd;
        struct smtp_parse_error err;
        size_t len = c->len ? c->len : strlen(c->line);
        int r = smtp_parse_command(c->line, len, &cmd, &err);
        if (c->code == 0) {
            assert_int_equal(r, 0);
            assert_string_equal(cmd.verb, c->verb);
            assert_int_equal(cmd.args_len, strlen(c->args));
            assert_memory_equal(cmd.args, c->args, cmd.args_len);
        } else {
            assert_int_equal(r, -1);
            assert_int_equal(err.code, c->code);
        }
    }
}

struct path_case {
    const char *in;
    enum smtp_path_role role;
    int code;                /* 0 = ok */
    const char *dsn;
    const char *addr;
    const char *domain;
    unsigned flags;          /* flags expected to be set */
};

#define L64 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define D63 "ddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"

static void test_path(void **state)
{
    static const struct path_case cases[] = {
        { "<user@example.com>", SMTP_PATH_RCPT, 0, NULL, "user@example.com", "example.com", 0 },
        { "<>", SMTP_PATH_SENDER, 0, NULL, "", "", SMTP_ADDR_NULL },
        { "<>", SMTP_PATH_RCPT, 501, "5.1.3", NULL, NULL, 0 },
        { "<Postmaster>", SMTP_PATH_RCPT, 0, NULL, "Postmaster", "", SMTP_ADDR_NODOMAIN },
        { "<postmaster>", SMTP_PATH_SENDER, 501, "5.1.7", NULL, NULL, 0 },
        { "<user>", SMTP_PATH_RCPT, 501, "5.1.3", NULL, NULL, 0 },
        { "<\"john doe\"@example.com>", SMTP_PATH_RCPT, 0, NULL, "\"john doe\"@example.com", "example.com",
          SMTP_ADDR_QUOTED },
        { "<\"a\\\"b\"@example.com>", SMTP_PATH_RCPT, 0, NULL, "\"a\\\"b\"@example.com", "example.com",
          SMTP_ADDR_QUOTED },
        { "<\"unterminated@example.com>", SMTP_PATH_RCPT, 501, "5.1.3", NULL, NULL, 0 },
        { "<@relay.example,@r2.example:user@example.com>", SMTP_PATH_RCPT, 0, NULL, "user@example.com",
          "example.com", SMTP_ADDR_ROUTE },
        { "<@relay.example user@example.com>", SMTP_PATH_RCPT, 501, "5.1.3", NULL, NULL, 0 },
        { "<user@[192.0.2.1]>", SMTP_PATH_RCPT, 0, NULL, "user@[192.0.2.1]", "[192.0.2.1]", SMTP_ADDR_LITERAL },
        { "<user@[IPv6:2001:db8::1]>", SMTP_PATH_RCPT, 0, NULL, "user@[IPv6:2001:db8::1]",
          "[IPv6:2001:db8::1]", SMTP_ADDR_LITERAL },
        { "<user@[300.0.2.1]>", SMTP_PATH_RCPT, 501, "5.1.3", NULL, NULL, 0 },
        { "<user@[IPv6:zz]>", SMTP_PATH_RCPT, 501, "5.1.3", NULL, NULL, 0 },
        { "<user@[192.0.2.1>", SMTP_PATH_RCPT, 501, "5.1.3", NULL, NULL, 0 },
        { "<.user@example.com>", SMTP_PATH_RCPT, 501, "5.1.3", NULL, NULL, 0 },
        { "<user.@example.com>", SMTP_PATH_RCPT, 501, "5.1.3", NULL, NULL, 0 },
        { "<us..er@example.com>", SMTP_PATH_RCPT, 501, "5.1.3", NULL, NULL, 0 },
        { "<user@example..com>", SMTP_PATH_RCPT, 501, "5.1.3", NULL, NULL, 0 },
        { "<user@-example.com>", SMTP_PATH_RCPT, 501, "5.1.3", NULL, NULL, 0 },
        { "<user@example-.com>", SMTP_PATH_RCPT, 501, "5.1.3", NULL, NULL, 0 },
        { "<user@example.com.>", SMTP_PATH_RCPT, 501, "5.1.3", NULL, NULL, 0 },
        { "<user@>", SMTP_PATH_RCPT, 501, "5.1.3", NULL, NULL, 0 },
        { "<@example.com>", SMTP_PATH_RCPT, 501, "5.1.3", NULL, NULL, 0 },
        { "user@example.com", SMTP_PATH_RCPT, 501, "5.1.3", NULL, NULL, 0 },
        { "<user@example.com", SMTP_PATH_SENDER, 501, "5.1.7", NULL, NULL, 0 },
        { "<us er@example.com>", SMTP_PATH_SENDER, 501, "5.1.7", NULL, NULL, 0 },
        { "<" L64 "@example.com>", SMTP_PATH_RCPT, 0, NULL, L64 "@example.com", "example.com", 0 },
        { "<" L64 "a@example.com>", SMTP_PATH_RCPT, 501, "5.1.3", NULL, NULL, 0 },
        { "<a@" D63 ".example>", SMTP_PATH_RCPT, 0, NULL, "a@" D63 ".example", D63 ".example", 0 },
        { "<a@" D63 "d.example>", SMTP_PATH_RCPT, 501, "5.1.3", NULL, NULL, 0 },
        /* 3 x 64-octet labels + ".com": a 259-octet path is over 256 */
        { "<a@" D63 "." D63 "." D63 "." D63 ".com>", SMTP_PATH_RCPT, 501, "5.1.3", NULL, NULL, 0 },
        { "<j\xc3\xb6rg@b\xc3\xbc" "cher.example>", SMTP_PATH_RCPT, 0, NULL, "j\xc3\xb6rg@b\xc3\xbc" "cher.example",
          "b\xc3\xbc" "cher.example", SMTP_ADDR_UTF8 },
        { "<j\xc3rg@example.com>", SMTP_PATH_RCPT, 501, "5.1.3", NULL, NULL, 0 },
        { "<a!#$%&'*+-/=?^_`{|}~@example.com>", SMTP_PATH_RCPT, 0, NULL, "a!#$%&'*+-/=?^_`{|}~@example.com",
          "example.com", 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct path_case *c = &cases[i];
        struct smtp_addr a;
        struct smtp_parse_error err;
        size_t used;
        int r = smtp_parse_path(c->in, strlen(c->in), c->role, &a, &used, &err);
        if (c->code == 0) {
            if (r != 0)
                fail_msg("case %zu \"%s\": %d %s %s", i, c->in, err.code, err.dsn, err.text);
            assert_string_equal(a.addr, c->addr);
            assert_string_equal(a.domain, c->domain);
            assert_int_equal(a.flags & c->flags, c->flags);
            assert_int_equal(used, strlen(c->in));
        } else {
            if (r != -1)
                fail_msg("case %zu \"%s\" accepted", i, c->in);
            assert_int_equal(err.code, c->code);
            assert_string_equal(err.dsn, c->dsn);
        }
    }
}

struct mail_case {
    const char *in;
    int code;
    const char *dsn;
};

static void test_mail(void **state)
{
    static const struct mail_case cases[] = {
        { "FROM:<a@example.org>", 0, NULL },
        { "from:<a@example.org>", 0, NULL },
        { "FROM: <a@example.org>", 0, NULL },
        { "FROM:<>", 0, NULL },
        { "FROM:<a@example.org> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=abc+2Bdef", 0, NULL },
        { "FROM:<a@example.org> BODY=7bit", 0, NULL },
        { "FROM:<a@example.org> SMTPUTF8", 0, NULL },
        { "FROM:<j\xc3\xb6rg@example.org> SMTPUTF8", 0, NULL },
        { "FROM:<j\xc3\xb6rg@example.org>", 553, "5.6.7" },
        { "FROM:<a@example.org> BODY=BINARYMIME", 555, "5.5.4" },
        { "FROM:<a@example.org> AUTH=<>", 555, "5.5.4" },
        { "FROM:<a@example.org> FOO", 555, "5.5.4" },
        { "FROM:<a@example.org> SIZE=abc", 501, "5.5.4" },
        { "FROM:<a@example.org> SIZE=", 501, "5.5.4" },
        { "FROM:<a@example.org> SIZE=1 SIZE=2", 501, "5.5.4" },
        { "FROM:<a@example.org> SMTPUTF8=yes", 501, "5.5.4" },
        { "FROM:<a@example.org> RET=ALL", 501, "5.5.4" },
        { "FROM:<a@example.org> ENVID=a=b", 501, "5.5.4" },
        { "FROM:<a@example.org> ENVID=a+zz", 501, "5.5.4" },
        { "FROM:<a@example.org> ENVID=a+2b", 501, "5.5.4" },
        { "FROM:<a@example.org>SIZE=1", 501, "5.5.4" },
        { "FROM a@example.org", 501, "5.5.4" },
        { "TO:<a@example.org>", 501, "5.5.4" },
        { "FROM:<a@>", 501, "5.1.7" },
        { "FROM:a@example.org", 501, "5.1.7" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct smtp_mail_args m;
        struct smtp_parse_error err;
        int r = smtp_parse_mail(cases[i].in, strlen(cases[i].in), &m, &err);
        if (cases[i].code == 0) {
            if (r != 0)
                fail_msg("case %zu \"%s\": %d %s %s", i, cases[i].in, err.code, err.dsn, err.text);
        } else {
            if (r != -1)
                fail_msg("case %zu \"%s\" accepted", i, cases[i].in);
            assert_int_equal(err.code, cases[i].code);
            assert_string_equal(err.dsn, cases[i].dsn);
        }
    }
    /* parameters are stored */
    struct smtp_mail_args m;
    struct smtp_parse_error err;
    const char *in = "FROM:<a@example.org> SIZE=99999999999999999999 BODY=8BITMIME RET=FULL ENVID=QQ+2B1 SMTPUTF8";
    assert_int_equal(smtp_parse_mail(in, strlen(in), &m, &err), 0);
    assert_int_equal(m.size, INT64_MAX);
    assert_int_equal(m.body, SMTP_BODY_8BITMIME);
    assert_int_equal(m.ret, SMTP_RET_FULL);
    assert_string_equal(m.envid, "QQ+2B1");
    assert_true(m.smtputf8);
    assert_string_equal(m.path.addr, "a@example.org");
}

static void test_rcpt(void **state)
{
    static const struct mail_case cases[] = {
        { "TO:<b@example.com>", 0, NULL },
        { "to: <b@example.com>", 0, NULL },
        { "TO:<b@example.com> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;b@example.com", 0, NULL },
        { "TO:<b@example.com> NOTIFY=never", 0, NULL },
        { "TO:<b@example.com> NOTIFY=NEVER,SUCCESS", 501, "5.5.4" },
        { "TO:<b@example.com> NOTIFY=SUCCESS,SUCCESS", 501, "5.5.4" },
        { "TO:<b@example.com> NOTIFY=SOMETIMES", 501, "5.5.4" },
        { "TO:<b@example.com> NOTIFY=", 501, "5.5.4" },
        { "TO:<b@example.com> ORCPT=rfc822", 501, "5.5.4" },
        { "TO:<b@example.com> ORCPT=;b@example.com", 501, "5.5.4" },
        { "TO:<b@example.com> ORCPT=rfc822;", 501, "5.5.4" },
        { "TO:<b@example.com> ORCPT=rfc822;a+4", 501, "5.5.4" },
        { "TO:<b@example.com> XYZ=1", 555, "5.5.4" },
        { "TO:<>", 501, "5.1.3" },
        { "TO:<b@\xc3\xa9xample.com>", 553, "5.6.7" },
        { "FROM:<b@example.com>", 501, "5.5.4" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct smtp_rcpt_args r;
        struct smtp_parse_error err;
        int rc = smtp_parse_rcpt(cases[i].in, strlen(cases[i].in), false, &r, &err);
        if (cases[i].code == 0) {
            if (rc != 0)
                fail_msg("case %zu \"%s\": %d %s %s", i, cases[i].in, err.code, err.dsn, err.text);
        } else {
            if (rc != -1)
                fail_msg("case %zu \"%s\" accepted", i, cases[i].in);
            assert_int_equal(err.code, cases[i].code);
            assert_string_equal(err.dsn, cases[i].dsn);
        }
    }
    struct smtp_rcpt_args r;
    struct smtp_parse_error err;
    const char *in = "TO:<b@\xc3\xa9xample.com> NOTIFY=FAILURE,DELAY ORCPT=utf-8;b@\xc3\xa9xample.com";
    assert_int_equal(smtp_parse_rcpt(in, strlen(in), true, &r, &err), 0);
    assert_int_equal(r.notify, SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY);
    assert_string_equal(r.orcpt, "utf-8;b@\xc3\xa9xample.com");
}

static void test_helo(void **state)
{
    static const struct mail_case cases[] = {
        { "client.example", 0, NULL },
        { "[192.0.2.1]", 0, NULL },
        { "", 501, "5.5.4" },
        { "two words", 501, "5.5.4" },
        { "tab\there", 501, "5.5.4" },
        { "\xff", 501, "5.5.2" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[SMTP_HELO_MAX + 1];
        struct smtp_parse_error err;
        int r = smtp_parse_helo(cases[i].in, strlen(cases[i].in), out, sizeof out, &err);
        if (cases[i].code == 0) {
            assert_int_equal(r, 0);
            assert_string_equal(out, cases[i].in);
        } else {
            assert_int_equal(r, -1);
            assert_int_equal(err.code, cases[i].code);
            assert_string_equal(err.dsn, cases[i].dsn);
        }
    }
    char big[300];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    char out[SMTP_HELO_MAX + 1];
    struct smtp_parse_error err;
    assert_int_equal(smtp_parse_helo(big, strlen(big), out, sizeof out, &err), -1);
}

static void test_xtext(void **state)
{
    assert_true(smtp_xtext_valid("abc", 3, false));
    assert_true(smtp_xtext_valid("a+20b", 5, false));
    assert_false(smtp_xtext_valid("a+2", 3, false));
    assert_false(smtp_xtext_valid("a+", 2, false));
    assert_false(smtp_xtext_valid("a=b", 3, false));
    assert_false(smtp_xtext_valid("a b", 3, false));
    assert_false(smtp_xtext_valid("\xc3\xa9", 2, false));
    assert_true(smtp_xtext_valid("\xc3\xa9", 2, true));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_command),
        cmocka_unit_test(test_path),
        cmocka_unit_test(test_mail),
        cmocka_unit_test(test_rcpt),
        cmocka_unit_test(test_helo),
        cmocka_unit_test(test_xtext),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
