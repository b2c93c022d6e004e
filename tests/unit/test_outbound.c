/*
 * test_outbound.c - the outbound role's pure parts and its store: CIDR
 * parsing, formatting and membership (IPv4, IPv6, IPv4-mapped, bad input),
 * SMTP AUTH decoding (base64, PLAIN RFC 4616, LOGIN), the failed-attempt
 * limiter, and store_outbound.c with the snapshot accessors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include "core/core.h"
#include "core/cidr.h"
#include "smtp/smtp_auth.h"
#include "store/store.h"

/* --- CIDR --- */

static void test_cidr_parse_canonical(void **state)
{
    static const struct { const char *in, *out; } ok[] = {
        { "192.0.2.0/24", "192.0.2.0/24" },
        { "192.0.2.7", "192.0.2.7/32" },
        { "0.0.0.0/0", "0.0.0.0/0" },
        { "2001:db8::/32", "2001:db8::/32" },
        { "2001:0DB8:0000::/32", "2001:db8::/32" },
        { "::1", "::1/128" },
        { "::ffff:192.0.2.7", "192.0.2.7/32" },          /* mapped -> IPv4 */
        { "::ffff:192.0.2.0/120", "192.0.2.0/24" },
        { "10.1.2.128/25", "10.1.2.128/25" },
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct cidr c;
        struct error err = {0};
        char buf[CIDR_TEXT_MAX];
        if (cidr_parse(ok[i].in, &c, &err) < 0)
            fail_msg("%s: %s", ok[i].in, err.msg);
        assert_int_equal(cidr_format(&c, buf, sizeof buf), 0);
        assert_string_equal(buf, ok[i].out);
    }
}

static void test_cidr_parse_bad(void **state)
{
    static const char *const bad[] = {
        "", "192.0.2.0/33", "192.0.2.1/24", "300.1.1.1", "192.0.2.0/", "192.0.2.0/024",
        "192.0.2.0/-1", "2001:db8::/129", "2001:db8::1/32", "example.com", "1.2.3.4/8x",
        "::ffff:192.0.2.0/64", " 192.0.2.1", "192.0.2.1 ",
        "1111:2222:3333:4444:5555:6666:7777:8888:9999:0000:1111:2222:3333/128",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct cidr c;
        struct error err = {0};
        if (cidr_parse(bad[i], &c, &err) == 0)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_string_equal(err.field, "cidr");
    }
    struct cidr c;
    struct error err = {0};
    assert_int_equal(cidr_parse(NULL, &c, &err), -1);
}

static void sa4(struct sockaddr_storage *ss, const char *a)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *s = (struct sockaddr_in *)ss;
    s->sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, a, &s->sin_addr), 1);
}

static void sa6(struct sockaddr_storage *ss, const char *a)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)ss;
    s->sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, a, &s->sin6_addr), 1);
}

static void test_cidr_contains(void **state)
{
    struct cidr c;
    struct error err = {0};
    struct sockaddr_storage ss;
    assert_int_equal(cidr_parse("192.0.2.128/25", &c, &err), 0);
    sa4(&ss, "192.0.2.200");
    assert_true(cidr_contains(&c, (struct sockaddr *)&ss));
    sa4(&ss, "192.0.2.127");
    assert_false(cidr_contains(&c, (struct sockaddr *)&ss));
    sa6(&ss, "::ffff:192.0.2.129");     /* a v4 client on a v6 socket */
    assert_true(cidr_contains(&c, (struct sockaddr *)&ss));
    sa6(&ss, "2001:db8::1");
    assert_false(cidr_contains(&c, (struct sockaddr *)&ss));

    assert_int_equal(cidr_parse("2001:db8::/32", &c, &err), 0);
    sa6(&ss, "2001:db8:ffff::1");
    assert_true(cidr_contains(&c, (struct sockaddr *)&ss));
    sa6(&ss, "2001:db9::1");
    assert_false(cidr_contains(&c, (struct sockaddr *)&ss));
    sa4(&ss, "32.1.13.184");            /* same leading bits, other family */
    assert_false(cidr_contains(&c, (struct sockaddr *)&ss));

    assert_int_equal(cidr_parse("0.0.0.0/0", &c, &err), 0);
    sa4(&ss, "203.0.113.9");
    assert_true(cidr_contains(&c, (struct sockaddr *)&ss));
    sa6(&ss, "::1");
    assert_false(cidr_contains(&c, (struct sockaddr *)&ss));
    assert_false(cidr_contains(&c, NULL));
    assert_int_equal(cidr_parse("127.0.0.1", &c, &err), 0);
    sa4(&ss, "127.0.0.2");
    assert_false(cidr_contains(&c, (struct sockaddr *)&ss));
}

/* --- AUTH decoding --- */

static void test_auth_plain(void **state)
{
    struct smtp_auth_plain p;
    /* "\0user@example.com\0secret" */
    const char *b = "AHVzZXJAZXhhbXBsZS5jb20Ac2VjcmV0";
    assert_int_equal(smtp_auth_plain_decode(b, strlen(b), &p), SMTP_AUTH_OK);
    assert_string_equal(p.authzid, "");
    assert_string_equal(p.authcid, "user@example.com");
    assert_string_equal(p.passwd, "secret");
    /* "admin\0user\0pw" : an authzid */
    b = "YWRtaW4AdXNlcgBwdw==";
    assert_int_equal(smtp_auth_plain_decode(b, strlen(b), &p), SMTP_AUTH_OK);
    assert_string_equal(p.authzid, "admin");
    assert_string_equal(p.authcid, "user");
    assert_string_equal(p.passwd, "pw");
    static const struct { const char *in; enum smtp_auth_decode rc; } bad[] = {
        { "*", SMTP_AUTH_CANCEL },
        { "not base64!", SMTP_AUTH_BAD_BASE64 },
        { "AHVzZXI", SMTP_AUTH_BAD_BASE64 },            /* no padding */
        { "=", SMTP_AUTH_BAD_FORMAT },                  /* empty: no fields */
        { "dXNlcg==", SMTP_AUTH_BAD_FORMAT },           /* "user": no NUL */
        { "AHVzZXIA", SMTP_AUTH_BAD_FORMAT },           /* "\0user\0": empty password */
        { "AABwdw==", SMTP_AUTH_BAD_FORMAT },           /* "\0\0pw": empty authcid */
        { "AHUAcABx", SMTP_AUTH_BAD_FORMAT },           /* "\0u\0p\0q": a third NUL */
        { "AHVzZXIAcHc=\r", SMTP_AUTH_BAD_BASE64 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        enum smtp_auth_decode rc = smtp_auth_plain_decode(bad[i].in, strlen(bad[i].in), &p);
        if (rc != bad[i].rc)
            fail_msg("\"%s\": got %d, want %d", bad[i].in, rc, bad[i].rc);
    }
    /* an over-long field is refused, not truncated */
    size_t n = 3 * SMTP_AUTH_FIELD_MAX;
    char *raw = calloc(1, n), *b64 = calloc(1, n * 2);
    memset(raw + 2, 'a', n - 2);
    raw[0] = '\0';
    raw[1] = 'u';
    raw[2] = '\0';
    const char *tbl = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i + 2 < n; i += 3) {
        unsigned v = (unsigned char)raw[i] << 16 | (unsigned char)raw[i + 1] << 8 |
                     (unsigned char)raw[i + 2];
        b64[o++] = tbl[v >> 18 & 63];
        b64[o++] = tbl[v >> 12 & 63];
        b64[o++] = tbl[v >> 6 & 63];
        b64[o++] = tbl[v & 63];
    }
    assert_int_not_equal(smtp_auth_plain_decode(b64, o, &p), SMTP_AUTH_OK);
    free(raw);
    free(b64);
}

static void test_auth_login(void **state)
{
    char out[SMTP_AUTH_FIELD_MAX + 1];
    assert_int_equal(smtp_auth_login_decode("dXNlcg==", 8, out, sizeof out), SMTP_AUTH_OK);
    assert_string_equal(out, "user");
    assert_int_equal(smtp_auth_login_decode("*", 1, out, sizeof out), SMTP_AUTH_CANCEL);
    assert_int_equal(smtp_auth_login_decode("=", 1, out, sizeof out), SMTP_AUTH_BAD_FORMAT);
    assert_int_equal(smtp_auth_login_decode("AHU=", 4, out, sizeof out), SMTP_AUTH_BAD_FORMAT);
    assert_int_equal(smtp_auth_login_decode("dXNlcg", 6, out, sizeof out), SMTP_AUTH_BAD_BASE64);
    assert_int_equal(smtp_auth_login_decode("", 0, out, sizeof out), SMTP_AUTH_BAD_BASE64);
    char small[4];
    assert_int_not_equal(smtp_auth_login_decode("dXNlcg==", 8, small, sizeof small), SMTP_AUTH_OK);
}

static void test_auth_limiter(void **state)
{
    struct smtp_auth_limiter *l = smtp_auth_limiter_new(4);
    for (int i = 0; i < 3; i++) {
        assert_false(smtp_auth_limited(l, "ip:a", 1000, 60000, 3));
        smtp_auth_failed(l, "ip:a", 1000 + (uint64_t)i, 60000);
    }
    assert_true(smtp_auth_limited(l, "ip:a", 2000, 60000, 3));
    assert_false(smtp_auth_limited(l, "ip:b", 2000, 60000, 3));
    /* the window passes */
    assert_false(smtp_auth_limited(l, "ip:a", 1000 + 60000, 60000, 3));
    /* a full table evicts the entry touched longest ago, never grows */
    smtp_auth_failed(l, "k1", 3000, 60000);
    smtp_auth_failed(l, "k2", 3001, 60000);
    smtp_auth_failed(l, "k3", 3002, 60000);
    smtp_auth_failed(l, "k4", 3003, 60000);     /* evicts ip:a (last 1002) */
    assert_false(smtp_auth_limited(l, "ip:a", 3004, 60000, 1));
    assert_true(smtp_auth_limited(l, "k4", 3004, 60000, 1));
    smtp_auth_limiter_free(l);
}

/* --- store and snapshot --- */

static void test_store_outbound(void **state)
{
    char dir[] = "/tmp/moat-test-outbound-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    xsnprintf(path, sizeof path, "%s/moat.db", dir);
    struct error err = {0};
    struct store *st = store_open(path, &err);
    if (st == NULL)
        fail_msg("store_open: %s", err.msg);
    int64_t id = 0;
    assert_int_equal(store_outbound_host_add(st, "192.0.2.0/24", "office", &id, &err), STORE_OK);
    assert_true(id > 0);
    assert_int_equal(store_outbound_host_add(st, "::ffff:192.0.2.0/120", NULL, NULL, &err),
                     STORE_CONFLICT);
    assert_int_equal(store_outbound_host_add(st, "192.0.2.1/24", NULL, NULL, &err), STORE_ERR);
    assert_string_equal(err.field, "cidr");
    assert_int_equal(store_outbound_host_add(st, "2001:db8::/32", "line\nbreak", NULL, &err),
                     STORE_ERR);
    assert_string_equal(err.field, "comment");
    assert_int_equal(store_outbound_host_add(st, "2001:db8::/32", NULL, NULL, &err), STORE_OK);
    /* never an open relay: the whole internet, or most of it, is refused */
    static const char *const wide[] = { "0.0.0.0/0", "128.0.0.0/1", "10.0.0.0/7", "::/0",
                                        "2000::/3", "2000::/15" };
    for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++) {
        memset(&err, 0, sizeof err);
        assert_int_equal(store_outbound_host_add(st, wide[i], NULL, NULL, &err), STORE_ERR);
        assert_string_equal(err.field, "cidr");
        assert_non_null(strstr(err.msg, "open relay"));
    }
    assert_int_equal(store_outbound_host_add(st, "10.0.0.0/8", NULL, NULL, &err), STORE_OK);
    assert_int_equal(store_outbound_host_add(st, "2a01::/16", NULL, NULL, &err), STORE_OK);
    assert_int_equal(store_outbound_host_remove(st, "10.0.0.0/8", &err), STORE_OK);
    assert_int_equal(store_outbound_host_remove(st, "2a01::/16", &err), STORE_OK);

    const char *hash = "$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNo";
    assert_int_equal(store_smtp_account_add(st, "Scanner@Example.com", hash, "", &err), STORE_OK);
    assert_int_equal(store_smtp_account_add(st, "scanner@example.com", hash, "", &err),
                     STORE_CONFLICT);
    assert_int_equal(store_smtp_account_add(st, "a b", hash, "", &err), STORE_ERR);
    assert_string_equal(err.field, "name");
    assert_int_equal(store_smtp_account_add(st, "x@example.com", "plaintext", "", &err), STORE_ERR);
    assert_string_equal(err.field, "password");
    assert_int_equal(store_smtp_account_set_hash(st, "nobody", hash, &err), STORE_NOT_FOUND);

    assert_int_equal(store_tls_required_add(st, "Partner.Test.", NULL, &err), STORE_OK);
    assert_int_equal(store_tls_required_add(st, "partner.test", NULL, &err), STORE_CONFLICT);
    assert_int_equal(store_tls_required_add(st, "bad..test", NULL, &err), STORE_ERR);
    assert_string_equal(err.field, "domain");

    struct store_snapshot *snap = store_snapshot_load(st, &err);
    assert_non_null(snap);
    struct sockaddr_storage ss;
    sa4(&ss, "192.0.2.9");
    assert_true(store_snapshot_outbound_host(snap, (struct sockaddr *)&ss));
    sa6(&ss, "::ffff:192.0.2.9");
    assert_true(store_snapshot_outbound_host(snap, (struct sockaddr *)&ss));
    sa6(&ss, "2001:db8::25");
    assert_true(store_snapshot_outbound_host(snap, (struct sockaddr *)&ss));
    sa4(&ss, "198.51.100.1");
    assert_false(store_snapshot_outbound_host(snap, (struct sockaddr *)&ss));
    assert_string_equal(store_snapshot_smtp_account_hash(snap, "SCANNER@example.com"), hash);
    assert_null(store_snapshot_smtp_account_hash(snap, "other@example.com"));
    assert_true(store_snapshot_tls_required(snap, "partner.test"));
    assert_true(store_snapshot_tls_required(snap, "mx.eu.Partner.test."));
    assert_false(store_snapshot_tls_required(snap, "notpartner.test"));
    assert_false(store_snapshot_tls_required(snap, "test"));
    store_snapshot_free(snap);

    assert_int_equal(store_outbound_host_remove(st, "192.0.2.0/24", &err), STORE_OK);
    assert_int_equal(store_outbound_host_remove(st, "192.0.2.0/24", &err), STORE_NOT_FOUND);
    assert_int_equal(store_outbound_host_remove(st, "999", &err), STORE_NOT_FOUND);
    struct store_outbound_host *h;
    size_t n;
    assert_int_equal(store_outbound_host_list(st, &h, &n, &err), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(h[0].cidr, "2001:db8::/32");
    char idtxt[24];
    xsnprintf(idtxt, sizeof idtxt, "%lld", (long long)h[0].id);
    store_outbound_hosts_free(h, n);
    assert_int_equal(store_outbound_host_remove(st, idtxt, &err), STORE_OK);
    assert_int_equal(store_smtp_account_remove(st, "SCANNER@EXAMPLE.COM", &err), STORE_OK);
    assert_int_equal(store_tls_required_remove(st, "partner.test", &err), STORE_OK);
    assert_int_equal(store_tls_required_remove(st, "partner.test", &err), STORE_NOT_FOUND);
    store_close(st);
    char cmd[200];
    xsnprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cidr_parse_canonical),
        cmocka_unit_test(test_cidr_parse_bad),
        cmocka_unit_test(test_cidr_contains),
        cmocka_unit_test(test_auth_plain),
        cmocka_unit_test(test_auth_login),
        cmocka_unit_test(test_auth_limiter),
        cmocka_unit_test(test_store_outbound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
