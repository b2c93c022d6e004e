/*
 * test_dkim.c - DKIM keys and records (src/deliver/deliver_dkim_key.c):
 * dkim_record_matches (what Connect's outbound check relies on), the split
 * of a record into <= 255-octet TXT strings, the tag parser's bounds, the
 * selector syntax, the header From parser, key generation, and the store's
 * key table (one active key per domain).  Signing itself is checked end to
 * end by tests/e2e/test_dkim.py with an independent verifier.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <opendkim/dkim.h>
#include <openssl/evp.h>
#include "deliver/deliver_dkim_priv.h"
#include "store/store.h"

#define P_ED "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="

static void test_record_matches(void **state)
{
    static const struct {
        const char *txt, *p, *alg;
        int want;
        const char *why;       /* a word of the explanation */
    } cases[] = {
        { "v=DKIM1; k=ed25519; p=" P_ED, P_ED, "ed25519", 1, "matches" },
        { "v=DKIM1;k=ed25519;p=" P_ED ";", P_ED, "ed25519", 1, "matches" },
        /* whitespace inside p= (a record pasted across lines) does not matter */
        { "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7Ty WQHOg7hcvPa\tpiMlrwIaaPcHURo=", P_ED,
          "ed25519", 1, "matches" },
        { "k=ed25519; p=" P_ED, P_ED, "ed25519", 1, "matches" },
        /* k= absent means rsa (RFC 6376 3.6.1) */
        { "v=DKIM1; p=MIIBIjAN", "MIIBIjAN", "rsa", 1, "matches" },
        { "v=DKIM1; p=MIIBIjAN", "MIIBIjAN", "ed25519", 0, "k=rsa" },
        { "v=DKIM1; k=rsa; p=" P_ED, P_ED, "ed25519", 0, "k=rsa" },
        { "k=ed25519; v=DKIM1; p=" P_ED, P_ED, "ed25519", 0, "first" },
        { "v=DKIM2; k=ed25519; p=" P_ED, P_ED, "ed25519", 0, "DKIM2" },
        { "v=DKIM1; k=ed25519", P_ED, "ed25519", 0, "no p=" },
        { "v=DKIM1; k=ed25519; p=", P_ED, "ed25519", 0, "revoked" },
        { "v=DKIM1; k=ed25519; p=AAAA" P_ED, P_ED, "ed25519", 0, "different" },
        { "v=DKIM1; k=ed25519; p=" P_ED "; p=" P_ED, P_ED, "ed25519", 0, "twice" },
        { "moat-verification=abc", P_ED, "ed25519", 0, "not a DKIM record" },
        { "spf1=abc", "MIIB", "rsa", 0, "no p=" },
        { "just text", P_ED, "ed25519", 0, "not a DKIM record" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char why[256] = "";
        int got = dkim_record_matches(cases[i].txt, cases[i].p, cases[i].alg, why, sizeof why);
        if (got != cases[i].want || strstr(why, cases[i].why) == NULL)
            fail_msg("case %zu (%s): got %d (%s), want %d (%s)", i, cases[i].txt, got, why,
                     cases[i].want, cases[i].why);
    }
    char why[64];
    assert_int_equal(dkim_record_matches(NULL, P_ED, "ed25519", why, sizeof why), 0);
}

static void test_txt_split(void **state)
{
    char value[601];
    for (int i = 0; i < 600; i++)
        value[i] = (char)('a' + i % 26);
    value[600] = '\0';
    char *s = dkim_txt_split(value, 255, " ");
    /* 255 + 255 + 90, each quoted */
    assert_int_equal(strlen(s), 600 + 6 + 2);
    assert_true(s[0] == '"' && s[256] == '"' && s[257] == ' ' && s[258] == '"');
    assert_memory_equal(s + 1, value, 255);
    assert_memory_equal(s + 259, value + 255, 255);
    assert_memory_equal(s + 517, value + 510, 90);
    free(s);
    value[255] = '\0';
    s = dkim_txt_split(value, 255, " ");
    assert_int_equal(strlen(s), 257);   /* exactly one string */
    free(s);
    s = dkim_txt_split("", 255, " ");
    assert_string_equal(s, "\"\"");
    free(s);
    s = dkim_txt_split("abcdef", 4, "\n\t");
    assert_string_equal(s, "\"abcd\"\n\t\"ef\"");
    free(s);
    s = dkim_record_zone("moat202611", "example.com", "v=DKIM1; k=ed25519; p=" P_ED);
    assert_string_equal(s, "moat202611._domainkey.example.com. IN TXT ( \"v=DKIM1; k=ed25519; p="
                        P_ED "\" )");
    free(s);
    char name[64];
    assert_int_equal(dkim_record_name("s1", "example.com", name, sizeof name), 0);
    assert_string_equal(name, "s1._domainkey.example.com");
    assert_true(dkim_record_name("s1", "example.com", name, 10) < 0);
}

static void test_tags_bounds(void **state)
{
    struct dkim_tags t;
    char why[128];
    const char *ok = " v = DKIM1 ;\r\n\tk=rsa; p=AB CD ; ";
    assert_int_equal(dkim_tags_parse(ok, strlen(ok), &t, why, sizeof why), 0);
    assert_int_equal(t.n, 3);
    const struct dkim_tag *p = dkim_tag_get(&t, "p");
    assert_non_null(p);
    assert_int_equal(p->value_len, 5);
    assert_memory_equal(p->value, "AB CD", 5);
    assert_null(dkim_tag_get(&t, "x"));
    /* too many tags */
    char many[1024] = "";
    for (int i = 0; i < DKIM_TAGS_MAX + 1; i++) {
        char one[16];
        snprintf(one, sizeof one, "t%d=1;", i);
        strcat(many, one);
    }
    assert_int_equal(dkim_tags_parse(many, strlen(many), &t, why, sizeof why), -1);
    assert_non_null(strstr(why, "more than"));
    /* exactly the maximum is fine */
    many[0] = '\0';
    for (int i = 0; i < DKIM_TAGS_MAX; i++) {
        char one[16];
        snprintf(one, sizeof one, "t%d=1;", i);
        strcat(many, one);
    }
    assert_int_equal(dkim_tags_parse(many, strlen(many), &t, why, sizeof why), 0);
    assert_int_equal(t.n, DKIM_TAGS_MAX);
    /* too long */
    char *big = malloc(DKIM_TXT_MAX + 2);
    memset(big, 'a', DKIM_TXT_MAX + 1);
    big[0] = 'p';
    big[1] = '=';
    big[DKIM_TXT_MAX + 1] = '\0';
    assert_int_equal(dkim_tags_parse(big, DKIM_TXT_MAX + 1, &t, why, sizeof why), -1);
    assert_int_equal(dkim_tags_parse(big, DKIM_TXT_MAX, &t, why, sizeof why), 0);
    free(big);
    static const char *const bad[] = { "p", "=x", "1a=x", "a-b=x", "a=\x01", "a=\xc3\xa9",
                                       "a=1; a=2" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (dkim_tags_parse(bad[i], strlen(bad[i]), &t, why, sizeof why) != -1)
            fail_msg("accepted %s", bad[i]);
    /* the length given is the bound, not a NUL */
    assert_int_equal(dkim_tags_parse("a=1;b", 3, &t, why, sizeof why), 0);
    assert_int_equal(t.n, 1);
}

static void test_selector_and_algorithm(void **state)
{
    static const char *const good[] = { "moat202611", "s1", "a-b", "x.y", "MOAT" };
    static const char *const bad[] = { "", "-a", "a-", "a..b", ".a", "a.", "a_b", "a b",
                                       "a/b", "0123456789012345678901234567890123456789012345678901234567890123" };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!dkim_selector_valid(good[i]))
            fail_msg("refused %s", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (dkim_selector_valid(bad[i]))
            fail_msg("accepted %s", bad[i]);
    assert_true(dkim_algorithm_valid("rsa") && dkim_algorithm_valid("ed25519"));
    assert_false(dkim_algorithm_valid("dsa") || dkim_algorithm_valid(NULL));
}

static void test_header_from(void **state)
{
    static const struct {
        const char *head, *want;
    } cases[] = {
        { "From: Ann <ann@Example.COM>\r\nTo: x@y\r\n\r\n", "example.com" },
        { "To: x@y\r\nfrom:ann@news.example.com\r\n\r\n", "news.example.com" },
        { "From: \"Ann, the admin\"\r\n <ann@example.com>\r\n\r\n", "example.com" },
        { "From: ann@example.com, bob@other.test\r\n\r\n", "example.com" },
        { "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\r\n\r\n", "mx.example.com" },
        { "X-From: ann@example.com\r\nSubject: x\r\n\r\n", NULL },
        { "From: nobody\r\n\r\n", NULL },
        { "Subject: x\r\n\r\nFrom: body@example.com\r\n", NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char dom[256] = "";
        /* the body's "From:" line is below the empty line: only the header counts */
        const char *h = cases[i].head;
        const char *end = strstr(h, "\r\n\r\n");
        size_t len = end ? (size_t)(end - h) + 4 : strlen(h);
        int rc = dkim_header_from_domain(h, len, dom, sizeof dom);
        if (cases[i].want == NULL ? rc != -1 : (rc != 0 || strcmp(dom, cases[i].want) != 0))
            fail_msg("case %zu: rc %d dom %s", i, rc, dom);
    }
}

static void test_keygen(void **state)
{
    char *pem, *p;
    struct error err = {0};
    assert_int_equal(dkim_keygen("ed25519", &pem, &p, &err), 0);
    assert_non_null(strstr(pem, "-----BEGIN PRIVATE KEY-----"));
    assert_int_equal(strlen(p), 44);   /* base64 of 32 octets (RFC 8463) */
    free(pem);
    free(p);
    assert_int_equal(dkim_keygen("rsa", &pem, &p, &err), 0);
    assert_non_null(strstr(pem, "-----BEGIN PRIVATE KEY-----"));
    assert_int_equal(strlen(p), 392);  /* SubjectPublicKeyInfo of RSA 2048 */
    assert_int_equal(strncmp(p, "MIIBIjAN", 8), 0);
    char why[128];
    char *v = dkim_record_value("rsa", p);
    assert_int_equal(dkim_record_matches(v, p, "rsa", why, sizeof why), 1);
    free(v);
    free(pem);
    free(p);
    assert_int_equal(dkim_keygen("dsa", &pem, &p, &err), -1);
    assert_string_equal(err.field, "algorithm");
}

static void test_store_keys(void **state)
{
    char path[] = "/tmp/moat-test-dkim-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    unlink(path);
    struct error err = {0};
    struct store *st = store_open(path, &err);
    assert_non_null(st);
    unsigned char blob[4] = { 1, 2, 3, 4 };
    struct store_dkim_key k = { .domain = "example.com", .selector = "one", .algorithm = "rsa",
                                .private_key = blob, .private_key_len = sizeof blob,
                                .public_key = "PUB1", .created = 100, .created_by = "admin" };
    assert_int_equal(store_dkim_key_add(st, &k, true, &err), STORE_OK);
    assert_int_equal(store_dkim_key_add(st, &k, true, &err), STORE_CONFLICT);
    assert_string_equal(err.field, "selector");
    k.selector = "two";
    k.public_key = "PUB2";
    k.created = 200;
    assert_int_equal(store_dkim_key_add(st, &k, false, &err), STORE_OK);
    struct store_dkim_key *v;
    size_t n;
    assert_int_equal(store_dkim_key_list(st, NULL, true, &v, &n, &err), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].selector, "one");
    assert_int_equal(v[0].private_key_len, 4);
    assert_memory_equal(v[0].private_key, blob, 4);
    store_dkim_keys_free(v, n);
    /* a new active key replaces the active one; the old one stays */
    k.selector = "three";
    assert_int_equal(store_dkim_key_add(st, &k, true, &err), STORE_OK);
    assert_int_equal(store_dkim_key_list(st, "example.com", false, &v, &n, &err), STORE_OK);
    assert_int_equal(n, 3);
    int active = 0;
    for (size_t i = 0; i < n; i++)
        active += v[i].active ? (strcmp(v[i].selector, "three") == 0 ? 1 : 100) : 0;
    assert_int_equal(active, 1);
    store_dkim_keys_free(v, n);
    assert_int_equal(store_dkim_key_activate(st, "example.com", "two", &err), STORE_OK);
    assert_int_equal(store_dkim_key_list(st, NULL, true, &v, &n, &err), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].selector, "two");
    store_dkim_keys_free(v, n);
    assert_int_equal(store_dkim_key_activate(st, "example.com", "nope", &err), STORE_NOT_FOUND);
    assert_int_equal(store_dkim_key_delete(st, "example.com", "two", &err), STORE_OK);
    assert_int_equal(store_dkim_key_delete(st, "example.com", "two", &err), STORE_NOT_FOUND);
    assert_int_equal(store_dkim_key_list(st, NULL, true, &v, &n, &err), STORE_OK);
    assert_int_equal(n, 0);   /* the active key is gone: nothing signs */
    store_dkim_keys_free(v, n);
    store_close(st);
    unlink(path);
    char aux[600];
    snprintf(aux, sizeof aux, "%s-wal", path);
    unlink(aux);
    snprintf(aux, sizeof aux, "%s-shm", path);
    unlink(aux);
}

/* libopendkim_bh - the bh= libopendkim computes for msg (RSA, relaxed/relaxed) */
static char *libopendkim_bh(const char *pem, const char *msg)
{
    DKIM_LIB *lib = dkim_init(NULL, NULL);
    DKIM_STAT st;
    DKIM *d = dkim_sign(lib, (const unsigned char *)"t", NULL, (dkim_sigkey_t)pem,
                        (const unsigned char *)"s", (const unsigned char *)"example.com",
                        DKIM_CANON_RELAXED, DKIM_CANON_RELAXED, DKIM_SIGN_RSASHA256, -1, &st);
    assert_non_null(d);
    if (dkim_chunk(d, (unsigned char *)msg, strlen(msg)) != DKIM_STAT_OK)
        fail_msg("libopendkim refused %s", msg);
    if (dkim_chunk(d, NULL, 0) != DKIM_STAT_OK)
        fail_msg("libopendkim refused the end of [%s]", msg);
    if (dkim_eom(d, NULL) != DKIM_STAT_OK)
        fail_msg("libopendkim refused to sign [%s]: %s", msg, dkim_geterror(d));
    unsigned char *h;
    size_t hl;
    assert_int_equal(dkim_getsighdr_d(d, 16, &h, &hl), DKIM_STAT_OK);
    const char *bh = strstr((const char *)h, "bh=");
    assert_non_null(bh);
    char *out = xstrndup(bh + 3, strcspn(bh + 3, ";"));
    dkim_free(d);
    dkim_close(lib);
    return out;
}

/* the Ed25519 signer's relaxed body canonicalisation agrees with libopendkim's */
static void test_body_hash_matches_libopendkim(void **state)
{
    static const char *const bodies[] = {
        "hello\r\n",
        "",
        "\r\n\r\n\r\n",
        "  leading and   inner \t spaces \t \r\ntrailing  \r\n\r\n \r\n\t\r\n",
        "no final line end",
        "a\r\n\r\n\r\nb\r\n\r\n",
        /* no bare CR or LF: smtp_data.c refuses such a message at DATA, so
         * none reaches the spool (libopendkim reads a bare LF as a line end) */
        ".dot\r\n..two\r\n",
    };
    char *pem, *p;
    struct error err = {0};
    assert_int_equal(dkim_keygen("rsa", &pem, &p, &err), 0);
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        /* libopendkim refuses a body without a final CRLF; RFC 6376 3.4.4 adds
         * one, so the reference is the same body with it */
        size_t bl = strlen(bodies[i]);
        bool open_end = bl > 0 && (bl < 2 || strcmp(bodies[i] + bl - 2, "\r\n") != 0);
        char *msg = xasprintf("From: a@example.com\r\nSubject: x\r\n\r\n%s%s", bodies[i],
                              open_end ? "\r\n" : "");
        char *want = libopendkim_bh(pem, msg);
        /* fed in odd pieces: the state carries across chunk ends (a CR at the end) */
        struct dkim_body b;
        dkim_body_init(&b);
        const char *body = bodies[i];
        for (size_t off = 0, n = strlen(body); off < n; off += 3)
            dkim_body_update(&b, (const unsigned char *)body + off, n - off < 3 ? n - off : 3);
        unsigned char d[32];
        dkim_body_final(&b, d);
        char got[64];
        EVP_EncodeBlock((unsigned char *)got, d, 32);
        if (strcmp(got, want) != 0)
            fail_msg("body %zu: ours %s, libopendkim %s", i, got, want);
        free(want);
        free(msg);
    }
    free(pem);
    free(p);
}

static void test_relaxed_header(void **state)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        { "Subject:  hello   there  ", "subject:hello there" },
        { "SUBJECT \t: x", "subject:x" },
        { "To: a@b,\r\n\tc@d", "to:a@b, c@d" },
        { "X-Empty:", "x-empty:" },
        { "From:\r\n <a@b>", "from:<a@b>" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct buf b;
        buf_init(&b);
        dkim_relaxed_header(cases[i].in, strlen(cases[i].in), &b);
        if (strcmp(buf_cstr(&b), cases[i].want) != 0)
            fail_msg("case %zu: got [%s] want [%s]", i, buf_cstr(&b), cases[i].want);
        buf_free(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_matches),
        cmocka_unit_test(test_txt_split),
        cmocka_unit_test(test_tags_bounds),
        cmocka_unit_test(test_selector_and_algorithm),
        cmocka_unit_test(test_header_from),
        cmocka_unit_test(test_keygen),
        cmocka_unit_test(test_store_keys),
        cmocka_unit_test(test_body_hash_matches_libopendkim),
        cmocka_unit_test(test_relaxed_header),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
