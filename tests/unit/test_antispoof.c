/*
 * test_antispoof.c - anti-spoofing's pure parts (issue 7): the header From
 * parser (policy_msg.c) over a table of shapes, malformed fields and
 * several From fields; the bypass matching helpers; the store of bypasses
 * with its errors; and the verdicts of the policy checks (RCPT and
 * DATA_END) against a real store snapshot, without DNS.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "core/core.h"
#include "core/settings.h"
#include "policy/policy.h"
#include "policy/policy_msg.h"
#include "store/store.h"

/* --- the header From parser --- */

static void test_header_from_table(void **state)
{
    (void)state;
    static const struct { const char *msg; const char *dom; } t[] = {
        /* one author, many shapes */
        { "From: a@Example.COM\r\n\r\nbody", "example.com" },
        { "from: a@example.com\r\n\r\n", "example.com" },
        { "FROM : a@example.com\r\n\r\n", "example.com" },               /* obs WSP before ':' */
        { "Subject: x\r\nFrom: Alice <alice@example.org>\r\nTo: b@c.d\r\n\r\n", "example.org" },
        { "From: \"Doe, John\" <john@example.net>\r\n\r\n", "example.net" },  /* comma in quotes */
        { "From: \"a@evil.test\" <ceo@example.com>\r\n\r\n", "example.com" },
        { "From: ceo@evil.test <x@example.com>\r\n\r\n", "example.com" },   /* angle wins */
        { "From: (comment, a@evil.test) john@example.com (more)\r\n\r\n", "example.com" },
        { "From: john (nested (comment) here) @ example.com\r\n\r\n", "example.com" },
        { "From: Alice\r\n <alice@folded.example>\r\n\r\n", "folded.example" },   /* folding */
        { "From:\r\n\talice@folded.example\r\n\r\n", "folded.example" },
        { "From: <@route.test,@r2.test:user@example.com>\r\n\r\n", "example.com" }, /* obs-route */
        { "From: \"quoted@local\"@example.com\r\n\r\n", "example.com" },
        { "From: group: one@example.com;\r\n\r\n", "example.com" },      /* a group of one */
        { "From: a@example.com,\r\n\r\n", "example.com" },               /* obs empty element */
        { "From: a@example.com\n\nbody", "example.com" },                /* bare LF */
        { "From: a@example.com", "example.com" },                        /* no body at all */
        { "From: a@b\xc3\xa9.example\r\n\r\n", "b\xc3\xa9.example" },     /* UTF-8 domain */
        { "Received: x\r\nFrom: a@example.com\r\n\r\nFrom: body@evil.test\r\n", "example.com" },
        /* not exactly one author: false (RFC 7489 6.6.1) */
        { "Subject: none\r\n\r\n", NULL },
        { "From: a@example.com\r\nFrom: b@example.org\r\n\r\n", NULL },
        { "From: a@example.com\r\nfrom: a@example.com\r\n\r\n", NULL },
        { "From: a@example.com, b@example.org\r\n\r\n", NULL },
        { "From: <a@example.com>, <b@example.org>\r\n\r\n", NULL },
        { "From: undisclosed:;\r\n\r\n", NULL },                          /* empty group */
        { "From: g: a@x.test, b@y.test;\r\n\r\n", NULL },
        /* malformed */
        { "From: <>\r\n\r\n", NULL },
        { "From: a@\r\n\r\n", NULL },
        { "From: @example.com\r\n\r\n", NULL },
        { "From: a@[192.0.2.1]\r\n\r\n", NULL },                          /* no domain name */
        { "From: a@exa mple.com\r\n\r\n", NULL },
        { "From: a@example..com\r\n\r\n", NULL },
        { "From: a@example.com.\r\n\r\n", NULL },
        { "From: <a@example.com\r\n\r\n", NULL },                         /* unclosed angle */
        { "From: a@example.com>\r\n\r\n", NULL },
        { "From: <a@example.com> trailing@evil.test\r\n\r\n", NULL },
        { "From: \"unterminated <a@example.com>\r\n\r\n", NULL },
        { "From: (unterminated a@example.com\r\n\r\n", NULL },
        { "From: g: a@example.com\r\n\r\n", NULL },                       /* unclosed group */
        { "From: a@example.com;\r\n\r\n", NULL },
        { " From: a@example.com\r\n\r\n", NULL },                         /* continuation first */
        { "Not a header line\r\nFrom: a@example.com\r\n\r\n", NULL },
        { "From: a@ex$ample.com\r\n\r\n", NULL },
        { "", NULL },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char dom[256] = "junk";
        bool ok = msg_header_from_domain(t[i].msg, strlen(t[i].msg), dom, sizeof dom);
        if (t[i].dom == NULL) {
            if (ok)
                fail_msg("case %zu (%s): got %s, want false", i, t[i].msg, dom);
            assert_string_equal(dom, "");
        } else {
            if (!ok)
                fail_msg("case %zu (%s): false, want %s", i, t[i].msg, t[i].dom);
            assert_string_equal(dom, t[i].dom);
        }
    }
}

/* msg_header_value - Subject and Message-ID for the tracking events */
static void test_header_value(void **state)
{
    (void)state;
    static const struct { const char *msg, *name, *want; size_t size; } t[] = {
        { "Subject: hello\r\n\r\nbody", "Subject", "hello", 64 },
        { "subject :  spaced out  \r\n\r\n", "Subject", "spaced out", 64 },
        { "Subject: folded\r\n\tline\r\nX: y\r\n\r\n", "Subject", "folded line", 64 },
        { "Subject: first\r\nSubject: second\r\n\r\n", "Subject", "first", 64 },
        { "X: a\r\n\r\nSubject: in the body\r\n", "Subject", "", 64 },
        { "Message-ID: <a@b>\r\n\r\n", "Message-ID", "<a@b>", 64 },
        { "Subject: abcdef\r\n\r\n", "Subject", "abc", 4 },
        { "Subject: caf\xc3\xa9\r\n\r\n", "Subject", "caf", 5 },      /* no cut UTF-8 */
        { "Subject: caf\xc3\xa9\r\n\r\n", "Subject", "caf\xc3\xa9", 64 },
        { "Subject: raw \xe9t\xe9\r\n\r\n", "Subject", "raw ?t?", 64 },   /* Latin-1, not UTF-8 */
        { "Subject: a\x01" "b\r\n\r\n", "Subject", "a b", 64 },
        { "Subjects: no\r\n\r\n", "Subject", "", 64 },
        { "", "Subject", "", 64 },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char out[64] = "junk";
        size_t n = msg_header_value(t[i].msg, strlen(t[i].msg), t[i].name, out, t[i].size);
        if (strcmp(out, t[i].want) != 0)
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, out, t[i].want);
        assert_int_equal(n, strlen(t[i].want));
    }
}

/* msg_decode_words - RFC 2047 subjects as tracking shows them */
static void test_decode_words(void **state)
{
    (void)state;
    static const struct { const char *in, *want; } t[] = {
        { "plain text", "plain text" },
        { "=?utf-8?q?caf=C3=A9?= x", "caf\xc3\xa9 x" },
        { "=?UTF-8?B?Y2Fmw6k=?=", "caf\xc3\xa9" },
        { "=?iso-8859-1?q?caf=E9_au_lait?=", "caf\xc3\xa9 au lait" },
        { "=?utf-8?q?a?= =?utf-8?q?b?=", "ab" },                /* RFC 2047 6.2 */
        { "=?utf-8?q?a?= plain =?utf-8?q?b?=", "a plain b" },
        { "=?koi8-r?q?=C1?=", "=?koi8-r?q?=C1?=" },            /* unknown charset: as it came */
        { "=?utf-8?x?abc?=", "=?utf-8?x?abc?=" },
        { "=?utf-8?q?unterminated", "=?utf-8?q?unterminated" },
        { "=?utf-8?q?bad=FF?=", "bad?" },                     /* not UTF-8 once decoded */
        { "=?utf-8?q?a=0Db?=", "a b" },                        /* no controls */
        { "=?utf-8?q?x=4?=", "x=4" },                         /* a cut =XX stays */
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char s[64];
        str_copy(s, sizeof s, t[i].in);
        size_t n = msg_decode_words(s, sizeof s);
        if (strcmp(s, t[i].want) != 0)
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, s, t[i].want);
        assert_int_equal(n, strlen(t[i].want));
    }
    char s[64] = "=?utf-8?q?abcdefghij?=";     /* the result bounded by size */
    assert_int_equal(msg_decode_words(s, 8), 7);
    assert_string_equal(s, "abcdefg");
}

static void test_header_from_bounds(void **state)
{
    (void)state;
    char dom[256], small[6];
    /* a From at the start of a 64 KiB+ header section that never ends: false */
    size_t n = MSG_HEADER_SCAN_MAX + 100;
    char *m = xmalloc(n);
    memcpy(m, "From: a@example.com\r\nX: ", 24);
    memset(m + 24, 'y', n - 24);
    assert_false(msg_header_from_domain(m, n, dom, sizeof dom));
    /* the same, ended within the bound: found */
    memcpy(m + 200, "\r\n\r\n", 4);
    assert_true(msg_header_from_domain(m, n, dom, sizeof dom));
    assert_string_equal(dom, "example.com");
    /* the length is respected: a NUL-free buffer without terminator */
    assert_true(msg_header_from_domain(m, 19, dom, sizeof dom));
    /* too small a destination: false, never overrun */
    assert_false(msg_header_from_domain(m, n, small, sizeof small));
    assert_string_equal(small, "");
    /* an over-long From field */
    struct buf b;
    buf_init(&b);
    buf_append_str(&b, "From: \"");
    for (int i = 0; i < MSG_FROM_FIELD_MAX; i++)
        buf_append_str(&b, "x");
    buf_append_str(&b, "\" <a@example.com>\r\n\r\n");
    assert_false(msg_header_from_domain(b.data, b.len, dom, sizeof dom));
    /* a NUL inside the From field hides nothing: false */
    static const char nul[] = "From: a@example.com\0, b@evil.test\r\n\r\n";
    assert_false(msg_header_from_domain(nul, sizeof nul - 1, dom, sizeof dom));
    buf_free(&b);
    free(m);
    assert_int_equal(msg_header_from_count("A: b\r\nFrom: x\r\nfrom: y\r\n\r\nFrom: z", 37), 2);
    assert_int_equal(msg_header_from_count("Subject: s\r\n\r\n", 14), 0);
}

/* --- matching helpers --- */

static void test_bypass_matching(void **state)
{
    (void)state;
    assert_true(store_antispoof_domain_applies("", "example.com"));
    assert_true(store_antispoof_domain_applies("example.com", "EXAMPLE.com"));
    assert_true(store_antispoof_domain_applies("example.com", "sub.example.com"));
    assert_false(store_antispoof_domain_applies("example.com", "badexample.com"));
    assert_false(store_antispoof_domain_applies("sub.example.com", "example.com"));
    assert_true(store_antispoof_host_matches("mail.partner.test", "MAIL.partner.test."));
    assert_false(store_antispoof_host_matches("mail.partner.test", "x.mail.partner.test"));
    assert_true(store_antispoof_host_matches("*.partner.test", "out1.partner.test"));
    assert_true(store_antispoof_host_matches("*.partner.test", "a.b.partner.test"));
    assert_false(store_antispoof_host_matches("*.partner.test", "partner.test"));
    assert_false(store_antispoof_host_matches("*.partner.test", "evilpartner.test"));
    assert_false(store_antispoof_host_matches("*.partner.test", ""));
}

/* --- store, snapshot and verdicts --- */

struct fixture {
    char dir[64];
    struct store *st;
    struct store_snapshot *snap;
    struct moat_settings set;
    struct policy_antispoof *as;
};

static void reload(struct fixture *f)
{
    struct error err = {0};
    store_snapshot_free(f->snap);
    f->snap = store_snapshot_load(f->st, &err);
    if (f->snap == NULL)
        fail_msg("snapshot: %s", err.msg);
}

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof *f);
    (void)str_copy(f->dir, sizeof f->dir, "/tmp/moat-test-antispoof-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char path[128];
    xsnprintf(path, sizeof path, "%s/moat.db", f->dir);
    struct error err = {0};
    f->st = store_open(path, &err);
    if (f->st == NULL)
        fail_msg("store_open: %s", err.msg);
    assert_int_equal(store_domain_add_trusted(f->st, "example.com", &err), 0);
    assert_int_equal(store_domain_add_trusted(f->st, "other.test", &err), 0);
    settings_defaults(&f->set);
    f->as = policy_antispoof_create(NULL, NULL, &f->set);   /* no DNS: host bypasses unknown */
    reload(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char path[128];
    policy_antispoof_free(f->as);
    store_snapshot_free(f->snap);
    store_close(f->st);
    xsnprintf(path, sizeof path, "%s/moat.db", f->dir);
    unlink(path);
    rmdir(f->dir);
    settings_free(&f->set);
    free(f);
    return 0;
}

static void test_store_bypasses(void **state)
{
    struct fixture *f = *state;
    struct error err = {0};
    int64_t id = 0;
    assert_int_equal(store_antispoof_bypass_add(f->st, "ip", "192.0.2.7", NULL, "relay", &id, &err),
                     STORE_OK);
    assert_true(id > 0);
    assert_int_equal(store_antispoof_bypass_add(f->st, "ip", "::ffff:192.0.2.7", "", NULL, NULL, &err),
                     STORE_CONFLICT);
    assert_int_equal(store_antispoof_bypass_add(f->st, "ip", "192.0.2.7", "Example.COM.", NULL, NULL,
                                                &err), STORE_OK);   /* another domain: another row */
    static const struct { const char *kind, *value, *domain, *field; } bad[] = {
        { "dns", "x.test", NULL, "kind" },
        { NULL, "x.test", NULL, "kind" },
        { "ip", "192.0.2.1/24", NULL, "value" },
        { "ip", "not-an-address", NULL, "value" },
        { "host", "bad host", NULL, "value" },
        { "host", "*.", NULL, "value" },
        { "host", "", NULL, "value" },
        { "spf", "a..b", NULL, "value" },
        { "spf", "partner.test", "not a domain", "domain" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&err, 0, sizeof err);
        assert_int_equal(store_antispoof_bypass_add(f->st, bad[i].kind, bad[i].value, bad[i].domain,
                                                    NULL, NULL, &err), STORE_ERR);
        assert_string_equal(err.field, bad[i].field);
    }
    assert_int_equal(store_antispoof_bypass_add(f->st, "host", "*.Partner.Test", NULL, "line\nx",
                                                NULL, &err), STORE_ERR);
    assert_string_equal(err.field, "comment");
    assert_int_equal(store_antispoof_bypass_add(f->st, "host", "*.Partner.Test.", NULL, NULL, NULL,
                                                &err), STORE_OK);
    struct store_antispoof_bypass *b;
    size_t n;
    assert_int_equal(store_antispoof_bypass_list(f->st, &b, &n, &err), STORE_OK);
    assert_int_equal(n, 3);
    assert_string_equal(b[0].value, "192.0.2.7/32");
    assert_string_equal(b[1].domain, "example.com");
    assert_string_equal(b[2].value, "*.partner.test");
    store_antispoof_bypasses_free(b, n);
    assert_int_equal(store_antispoof_bypass_remove(f->st, id, &err), STORE_OK);
    assert_int_equal(store_antispoof_bypass_remove(f->st, id, &err), STORE_NOT_FOUND);
    assert_string_equal(err.field, "id");
}

static void rcpt(struct fixture *f, const char *client, const char *sender, bool outbound,
                 struct policy_verdict *v, char spf[256])
{
    spf[0] = '\0';
    struct policy_request req = {
        .stage = POLICY_RCPT, .client_addr = client, .helo = "h", .sender = sender,
        .rcpt = "user@example.com", .snapshot = f->snap, .antispoof = f->as,
        .outbound_host = outbound, .antispoof_spf_out = spf,
    };
    policy_evaluate(&req, v);
}

static void test_verdicts_envelope(void **state)
{
    struct fixture *f = *state;
    struct error err = {0};
    struct policy_verdict v;
    char spf[256];
    rcpt(f, "192.0.2.1", "boss@example.com", false, &v, spf);
    assert_int_equal(v.action, POLICY_REJECT);
    assert_int_equal(v.code, 550);
    assert_string_equal(v.dsn, "5.7.1");
    assert_string_equal(v.text, "rejected by anti-spoofing policy");
    assert_string_equal(v.check, "antispoof");
    assert_non_null(strstr(v.reason, "envelope sender example.com from 192.0.2.1 (no bypass)"));
    rcpt(f, "192.0.2.1", "boss@SUB.example.com", false, &v, spf);   /* subdomain: internal too */
    assert_int_equal(v.action, POLICY_REJECT);
    rcpt(f, "192.0.2.1", "someone@partner.test", false, &v, spf);   /* not ours */
    assert_int_equal(v.action, POLICY_DUNNO);
    rcpt(f, "192.0.2.1", "", false, &v, spf);                       /* null sender */
    assert_int_equal(v.action, POLICY_DUNNO);
    rcpt(f, "192.0.2.1", "boss@example.com", true, &v, spf);        /* the outbound role */
    assert_true(v.action != POLICY_REJECT);
    f->set.antispoof = false;
    rcpt(f, "192.0.2.1", "boss@example.com", false, &v, spf);
    assert_int_equal(v.action, POLICY_DUNNO);
    f->set.antispoof = true;

    /* an ip bypass limited to other.test does not help example.com */
    assert_int_equal(store_antispoof_bypass_add(f->st, "ip", "192.0.2.0/24", "other.test", NULL,
                                                NULL, &err), STORE_OK);
    reload(f);
    rcpt(f, "192.0.2.1", "boss@example.com", false, &v, spf);
    assert_int_equal(v.action, POLICY_REJECT);
    rcpt(f, "192.0.2.1", "boss@other.test", false, &v, spf);
    assert_int_equal(v.action, POLICY_DUNNO);
    rcpt(f, "192.0.3.1", "boss@other.test", false, &v, spf);
    assert_int_equal(v.action, POLICY_REJECT);
    /* for all domains */
    assert_int_equal(store_antispoof_bypass_add(f->st, "ip", "2001:db8::/32", NULL, NULL, NULL, &err),
                     STORE_OK);
    reload(f);
    rcpt(f, "2001:db8::25", "boss@example.com", false, &v, spf);
    assert_int_equal(v.action, POLICY_DUNNO);
    /* spf: through, with the domain handed to the content stage */
    assert_int_equal(store_antispoof_bypass_add(f->st, "spf", "example.com", NULL, NULL, NULL, &err),
                     STORE_OK);
    reload(f);
    rcpt(f, "198.51.100.9", "news@example.com", false, &v, spf);
    assert_int_equal(v.action, POLICY_DUNNO);
    assert_string_equal(spf, "example.com");
    /* a host bypass cannot be confirmed without a resolver: 451, not 550 */
    assert_int_equal(store_antispoof_bypass_add(f->st, "host", "mx.partner.test", "other.test", NULL,
                                                NULL, &err), STORE_OK);
    reload(f);
    rcpt(f, "198.51.100.9", "x@other.test", false, &v, spf);
    assert_int_equal(v.action, POLICY_TEMPFAIL);
    assert_int_equal(v.code, 451);
    assert_string_equal(v.dsn, "4.4.3");

    /* every refusal is a candidate, grouped by source */
    struct policy_antispoof_candidate *c;
    size_t n = policy_antispoof_candidates(f->as, &c);
    assert_int_equal(n, 2);
    const struct policy_antispoof_candidate *a = strcmp(c[0].addr, "192.0.2.1") == 0 ? &c[0] : &c[1];
    assert_string_equal(a->addr, "192.0.2.1");
    assert_int_equal(a->count, 3);
    assert_int_equal(a->n_domains, 2);
    assert_string_equal(a->domains[0], "example.com");
    assert_string_equal(a->domains[1], "sub.example.com");
    free(c);
    assert_true(policy_antispoof_candidate_forget(f->as, "192.0.2.1"));
    assert_false(policy_antispoof_candidate_forget(f->as, "192.0.2.1"));
    assert_int_equal(policy_antispoof_candidates(f->as, &c), 1);
    free(c);
}

static void data_end(struct fixture *f, const char *client, const char *msg, bool outbound,
                     struct policy_verdict *v)
{
    char dom[256];
    struct policy_request req = {
        .stage = POLICY_DATA_END, .client_addr = client, .helo = "h", .sender = "x@partner.test",
        .snapshot = f->snap, .antispoof = f->as, .outbound_host = outbound,
        .head = msg, .head_len = strlen(msg),
    };
    if (msg_header_from_domain(msg, strlen(msg), dom, sizeof dom))
        req.header_from = dom;
    req.header_from_fields = msg_header_from_count(msg, strlen(msg));
    policy_evaluate(&req, v);
}

static void test_verdicts_header(void **state)
{
    struct fixture *f = *state;
    struct error err = {0};
    struct policy_verdict v;
    data_end(f, "192.0.2.1", "From: CEO <ceo@example.com>\r\n\r\nhi", false, &v);
    assert_int_equal(v.action, POLICY_REJECT);
    assert_int_equal(v.code, 550);
    assert_string_equal(v.dsn, "5.7.1");
    assert_non_null(strstr(v.reason, "header from example.com from 192.0.2.1"));
    data_end(f, "192.0.2.1", "From: CEO <ceo@example.com>\r\n\r\nhi", true, &v);
    assert_int_equal(v.action, POLICY_DUNNO);
    data_end(f, "192.0.2.1", "From: a@partner.test\r\n\r\nhi", false, &v);
    assert_int_equal(v.action, POLICY_DUNNO);
    data_end(f, "192.0.2.1", "Subject: no from\r\n\r\nhi", false, &v);
    assert_int_equal(v.action, POLICY_DUNNO);
    /* RFC 7489 6.6.1: not exactly one author -> strictest */
    data_end(f, "192.0.2.1", "From: a@partner.test\r\nFrom: ceo@example.com\r\n\r\n", false, &v);
    assert_int_equal(v.action, POLICY_REJECT);
    assert_non_null(strstr(v.text, "exactly one author"));
    data_end(f, "192.0.2.1", "From: a@partner.test, ceo@example.com\r\n\r\n", false, &v);
    assert_int_equal(v.action, POLICY_REJECT);
    assert_int_equal(store_antispoof_bypass_add(f->st, "ip", "192.0.2.1", "example.com", NULL, NULL,
                                                &err), STORE_OK);
    reload(f);
    data_end(f, "192.0.2.1", "From: CEO <ceo@example.com>\r\n\r\nhi", false, &v);
    assert_int_equal(v.action, POLICY_DUNNO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_from_table),
        cmocka_unit_test(test_header_from_bounds),
        cmocka_unit_test(test_header_value),
        cmocka_unit_test(test_decode_words),
        cmocka_unit_test(test_bypass_matching),
        cmocka_unit_test_setup_teardown(test_store_bypasses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verdicts_envelope, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verdicts_header, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
