/*
 * test_store.c - the SQLite store: migrations from every old schema version,
 * refusal of a newer schema, domain and route CRUD with their error fields,
 * name syntax, the routing snapshot (parents, case, trailing dot), change
 * detection across two handles, and the pragmas that back durability; and
 * migration 2 (accounts, sessions, tokens, the append-only audit log).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include <sqlite3.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include "store/store.h"
#include "store/store_priv.h"

struct fixture {
    char dir[64];
    char path[128];
    struct store *st;
};

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof *f);
    xsnprintf(f->dir, sizeof f->dir, "/tmp/moat-test-store-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    xsnprintf(f->path, sizeof f->path, "%s/moat.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char p[160];
    store_close(f->st);
    static const char *const suffix[] = { "", "-wal", "-shm" };
    for (int i = 0; i < 3; i++) {
        xsnprintf(p, sizeof p, "%s%s", f->path, suffix[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static struct store *open_ok(struct fixture *f)
{
    struct error err;
    struct store *st = store_open(f->path, &err);
    if (st == NULL)
        fail_msg("store_open: %s", err.msg);
    return st;
}

/* every old version (0 = an empty file) migrates to the latest */
static void test_migrations_from_every_version(void **state)
{
    struct fixture *f = *state;
    struct error err;

    assert_true(store_schema_latest >= 1);
    for (int v = 0; v <= store_schema_latest; v++) {
        char path[160];
        xsnprintf(path, sizeof path, "%s/v%d.db", f->dir, v);
        struct store *old = store_open_at_version(path, v, &err);
        if (old == NULL)
            fail_msg("open at version %d: %s", v, err.msg);
        assert_int_equal(store_schema_version(old), v);
        store_close(old);

        struct store *st = store_open(path, &err);
        if (st == NULL)
            fail_msg("migrate from version %d: %s", v, err.msg);
        assert_int_equal(store_schema_version(st), store_schema_latest);
        /* the migrated schema works */
        assert_int_equal(store_domain_add(st, "example.com", &err), 0);
        struct store_route r = { .host = "mx.example.com", .port = 25 };
        assert_int_equal(store_route_set(st, "example.com", &r, &err), 0);
        /* version 2: accounts, sessions, tokens, audit */
        int64_t id;
        assert_int_equal(store_account_create(st, "admin", "admin", "$argon2id$x", true, &id,
                                              &err), STORE_OK);
        struct store_audit_entry e = { .ts = 1, .action = "account.create", .target = "admin" };
        assert_int_equal(store_audit_append(st, &e, &err), STORE_OK);
        store_close(st);
        /* reopening applies nothing and keeps the data */
        st = store_open(path, &err);
        assert_non_null(st);
        struct store_domain *d;
        size_t n;
        assert_int_equal(store_domain_list(st, &d, &n, &err), 0);
        assert_int_equal(n, 1);
        store_domains_free(d, n);
        store_close(st);

        static const char *const suffix[] = { "", "-wal", "-shm" };
        for (int i = 0; i < 3; i++) {
            char p[170];
            xsnprintf(p, sizeof p, "%s%s", path, suffix[i]);
            unlink(p);
        }
    }
}

static void test_newer_schema_refused(void **state)
{
    struct fixture *f = *state;
    struct error err;
    sqlite3 *db;

    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    char sql[64];
    xsnprintf(sql, sizeof sql, "PRAGMA user_version = %d", store_schema_latest + 1);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_null(store_open(f->path, &err));
    assert_non_null(strstr(err.msg, "newer"));
}

static void test_pragmas_and_mode(void **state)
{
    struct fixture *f = *state;
    f->st = open_ok(f);
    struct stat sb;
    assert_int_equal(stat(f->path, &sb), 0);
    /* the database will hold secrets: never readable by others */
    assert_int_equal(sb.st_mode & 077, 0);

    sqlite3 *db;
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
    sqlite3_finalize(s);
    sqlite3_close(db);
    /* synchronous and foreign_keys are per connection: checked through behaviour
     * (the cascade in test_domains_crud) */
}

static void test_domain_names(void **state)
{
    static const char *const good[] = {
        "example.com", "a.b", "EXAMPLE.COM", "xn--bcher-kva.example", "1a.example.org",
        "a-b.c-d.example", "123.example.com",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com", /* 63 */
    };
    static const char *const bad[] = {
        "", "com", "localhost", ".example.com", "example..com", "example.com.",
        "-a.example.com", "a-.example.com", "exa_mple.com", "exa mple.com", "b\xc3\xbc" "cher.de",
        "1.2.3.4", "example.123",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com", /* 64 */
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!domain_name_valid(good[i]))
            fail_msg("rejected %s", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (domain_name_valid(bad[i]))
            fail_msg("accepted %s", bad[i]);

    /* 253 characters is the limit */
    char name[300];
    memset(name, 0, sizeof name);
    for (int i = 0; i < 4; i++)
        memcpy(name + i * 64, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.", 64);
    name[253] = '\0';   /* 3 x 64 + 61 */
    assert_true(domain_name_valid(name));
    name[253] = 'a';
    name[254] = '\0';
    assert_false(domain_name_valid(name));
}

static void test_domains_crud(void **state)
{
    struct fixture *f = *state;
    struct error err;
    struct store_domain *d;
    size_t n;

    f->st = open_ok(f);
    assert_int_equal(store_domain_add(f->st, "Example.COM", &err), 0);
    assert_int_equal(store_domain_add(f->st, "b.example.org.", &err), 0);

    assert_int_equal(store_domain_add(f->st, "example.com", &err), -1);
    assert_string_equal(err.field, "name");
    assert_string_equal(err.msg, "domain example.com already exists");

    assert_int_equal(store_domain_add(f->st, "not a domain", &err), -1);
    assert_string_equal(err.field, "name");
    assert_non_null(strstr(err.msg, "invalid domain name \"not a domain\""));
    assert_int_equal(store_domain_add(f->st, "bad\x01name.com", &err), -1);
    /* control characters never reach a message */
    assert_null(strchr(err.msg, '\x01'));

    assert_int_equal(store_domain_list(f->st, &d, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(d[0].name, "b.example.org");
    assert_string_equal(d[1].name, "example.com");
    /* a new domain needs proof: unverified, with a 32-hex-digit token */
    assert_false(d[1].verified);
    assert_false(d[1].trust_unverified);
    assert_int_equal(d[1].verified_at, 0);
    assert_non_null(d[1].token);
    assert_int_equal(strlen(d[1].token), 32);
    assert_int_equal(strspn(d[1].token, "0123456789abcdef"), 32);
    assert_string_not_equal(d[0].token, d[1].token);
    assert_true(d[1].created > 1700000000);
    assert_null(d[1].route.host);
    store_domains_free(d, n);

    /* a route is removed with its domain (foreign key, ON DELETE CASCADE) */
    struct store_route r = { .host = "10.0.0.5", .port = 2525, .tls = STORE_TLS_STRICT };
    assert_int_equal(store_route_set(f->st, "example.com", &r, &err), 0);
    assert_int_equal(store_domain_remove(f->st, "EXAMPLE.com", &err), 0);
    assert_int_equal(store_domain_remove(f->st, "example.com", &err), -1);
    assert_string_equal(err.field, "name");
    assert_string_equal(err.msg, "no such domain example.com");
    assert_int_equal(store_domain_add(f->st, "example.com", &err), 0);
    struct store_route out;
    assert_int_equal(store_route_get(f->st, "example.com", &out, &err), 0);
    assert_null(out.host);
}

static void test_domain_verification(void **state)
{
    struct fixture *f = *state;
    struct error err;
    struct store_domain d;

    f->st = open_ok(f);
    assert_int_equal(store_domain_add(f->st, "example.com", &err), 0);
    /* pending subdomains are verified with their parent */
    assert_int_equal(store_domain_add(f->st, "a.example.com", &err), 0);
    assert_int_equal(store_domain_add(f->st, "notexample.com", &err), 0);
    assert_int_equal(store_domain_get(f->st, "a.example.com", &d, &err), 0);
    assert_false(d.verified);
    store_domain_clear(&d);
    assert_int_equal(store_domain_set_verified(f->st, "example.com", true, 1700000123, &err), 0);
    assert_int_equal(store_domain_get(f->st, "Example.com", &d, &err), 0);
    assert_true(d.verified);
    assert_int_equal(d.verified_at, 1700000123);
    store_domain_clear(&d);
    assert_int_equal(store_domain_get(f->st, "a.example.com", &d, &err), 0);
    assert_true(d.verified);
    store_domain_clear(&d);
    assert_int_equal(store_domain_get(f->st, "notexample.com", &d, &err), 0);
    assert_false(d.verified);
    store_domain_clear(&d);

    /* a subdomain added under a verified domain needs no proof */
    assert_int_equal(store_domain_add(f->st, "x.y.example.com", &err), 0);
    assert_int_equal(store_domain_get(f->st, "x.y.example.com", &d, &err), 0);
    assert_true(d.verified);
    assert_true(d.verified_at > 1700000000);
    store_domain_clear(&d);
    /* a domain cannot be added twice, trusted or not */
    assert_int_equal(store_domain_add_trusted(f->st, "example.com", &err), -1);
    assert_string_equal(err.msg, "domain example.com already exists");

    /* the lab override */
    assert_int_equal(store_domain_add_trusted(f->st, "lab.test", &err), 0);
    assert_int_equal(store_domain_get(f->st, "lab.test", &d, &err), 0);
    assert_false(d.verified);
    assert_true(d.trust_unverified);
    assert_true(store_domain_internal(&d));
    assert_non_null(d.token);
    store_domain_clear(&d);

    /* check results and the MX timestamp */
    assert_int_equal(store_domain_set_check(f->st, "lab.test", 1700000200, "no TXT yet", &err), 0);
    assert_int_equal(store_domain_set_mx_since(f->st, "lab.test", 1700000300, &err), 0);
    assert_int_equal(store_domain_get(f->st, "lab.test", &d, &err), 0);
    assert_int_equal(d.last_check, 1700000200);
    assert_string_equal(d.last_result, "no TXT yet");
    assert_int_equal(d.mx_only_moat_since, 1700000300);
    store_domain_clear(&d);
    assert_int_equal(store_domain_set_mx_since(f->st, "lab.test", 0, &err), 0);
    assert_int_equal(store_domain_get(f->st, "lab.test", &d, &err), 0);
    assert_int_equal(d.mx_only_moat_since, 0);
    store_domain_clear(&d);
    assert_int_equal(store_domain_set_verified(f->st, "nope.test", true, 1, &err), -1);
    assert_string_equal(err.msg, "no such domain nope.test");
    assert_int_equal(store_domain_get(f->st, "nope.test", &d, &err), -1);
    assert_string_equal(err.field, "name");
}

static void test_routes(void **state)
{
    struct fixture *f = *state;
    struct error err;
    struct store_route out;

    f->st = open_ok(f);
    assert_int_equal(store_domain_add(f->st, "example.com", &err), 0);

    static const struct { const char *in; const char *stored; } hosts[] = {
        { "MX.Example.COM", "mx.example.com" },
        { "mx.example.com.", "mx.example.com" },
        { "localhost", "localhost" },
        { "192.0.2.25", "192.0.2.25" },
        { "[2001:DB8::25]", "2001:db8::25" },
        { "::1", "::1" },
    };
    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
        struct store_route r = { .host = (char *)hosts[i].in, .port = 2525,
                                 .tls = STORE_TLS_RELAXED };
        if (store_route_set(f->st, "example.com", &r, &err) != 0)
            fail_msg("route host %s: %s", hosts[i].in, err.msg);
        assert_int_equal(store_route_get(f->st, "Example.com", &out, &err), 0);
        assert_string_equal(out.host, hosts[i].stored);
        assert_int_equal(out.port, 2525);
        assert_int_equal(out.tls, STORE_TLS_RELAXED);
        store_route_clear(&out);
    }

    static const struct { const char *host; int port; const char *field; } bad[] = {
        { "mx.example.com", 0, "port" },
        { "mx.example.com", 65536, "port" },
        { "mx_1.example.com", 25, "host" },
        { "[192.0.2.1]", 25, "host" },
        { "[mx.example.com]", 25, "host" },
        { "300.1.1.1", 25, "host" },
        { "", 25, "host" },
        { "mx example", 25, "host" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct store_route r = { .host = (char *)bad[i].host, .port = bad[i].port };
        if (store_route_set(f->st, "example.com", &r, &err) == 0)
            fail_msg("accepted route %s port %d", bad[i].host, bad[i].port);
        assert_string_equal(err.field, bad[i].field);
    }
    /* the last good route is intact */
    assert_int_equal(store_route_get(f->st, "example.com", &out, &err), 0);
    assert_string_equal(out.host, "::1");
    store_route_clear(&out);

    struct store_route r = { .host = "mx.example.com", .port = 25 };
    assert_int_equal(store_route_set(f->st, "unknown.example", &r, &err), -1);
    assert_string_equal(err.field, "domain");
    assert_string_equal(err.msg, "no such domain unknown.example");
    assert_int_equal(store_route_get(f->st, "unknown.example", &out, &err), -1);
    assert_string_equal(err.field, "domain");
    assert_int_equal(store_route_set(f->st, "bad domain", &r, &err), -1);
    assert_string_equal(err.field, "domain");

    /* host NULL removes the route */
    struct store_route none = { 0 };
    assert_int_equal(store_route_set(f->st, "example.com", &none, &err), 0);
    assert_int_equal(store_route_get(f->st, "example.com", &out, &err), 0);
    assert_null(out.host);

    /* TLS mode names round-trip */
    for (int m = STORE_TLS_OPPORTUNISTIC; m <= STORE_TLS_STRICT; m++) {
        enum store_tls_mode back;
        assert_int_equal(store_tls_mode_parse(store_tls_mode_name(m), &back), 0);
        assert_int_equal(back, m);
    }
    enum store_tls_mode x;
    assert_int_equal(store_tls_mode_parse("encrypt", &x), -1);
}

static void test_snapshot(void **state)
{
    struct fixture *f = *state;
    struct error err;

    f->st = open_ok(f);
    static const char *const names[] = { "example.com", "sub.example.org", "b.example.net",
                                         "a.example.net", "zz.example" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        assert_int_equal(store_domain_add(f->st, names[i], &err), 0);
        assert_int_equal(store_domain_set_verified(f->st, names[i], true, 1700000000, &err), 0);
    }
    /* pending: not internal, and it does not hide a verified parent */
    assert_int_equal(store_domain_add(f->st, "pending.example.org", &err), 0);
    assert_int_equal(store_domain_add(f->st, "other.example", &err), 0);
    /* trusted without verification (lab override): internal */
    assert_int_equal(store_domain_add_trusted(f->st, "lab.example", &err), 0);
    struct store_route r = { .host = "mx.example.com", .port = 2525, .tls = STORE_TLS_STRICT };
    assert_int_equal(store_route_set(f->st, "example.com", &r, &err), 0);

    struct store_snapshot *snap = store_snapshot_load(f->st, &err);
    assert_non_null(snap);
    assert_int_equal(store_snapshot_count(snap), 8);

    static const struct { const char *q; const char *want; } cases[] = {
        { "example.com", "example.com" },
        { "EXAMPLE.Com", "example.com" },
        { "example.com.", "example.com" },
        { "mail.example.com", "example.com" },
        { "a.b.c.example.com", "example.com" },
        { "sub.example.org", "sub.example.org" },
        { "x.sub.example.org", "sub.example.org" },
        { "example.org", NULL },
        { "other.example.org", NULL },
        { "notexample.com", NULL },
        { "com", NULL },
        { "a.example.net", "a.example.net" },
        { "b.example.net", "b.example.net" },
        { "c.example.net", NULL },
        { "zz.example", "zz.example" },
        { "pending.example.org", NULL },
        { "other.example", NULL },
        { "x.other.example", NULL },
        { "lab.example", "lab.example" },
        { "mx.lab.example", "lab.example" },
        { "", NULL },
        { "[192.0.2.1]", NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct store_domain *d = store_snapshot_find(snap, cases[i].q);
        if (cases[i].want == NULL) {
            if (d != NULL)
                fail_msg("%s matched %s", cases[i].q, d->name);
        } else {
            if (d == NULL)
                fail_msg("%s matched nothing", cases[i].q);
            assert_string_equal(d->name, cases[i].want);
        }
    }
    const struct store_domain *d = store_snapshot_find(snap, "host.example.com");
    assert_string_equal(d->route.host, "mx.example.com");
    assert_int_equal(d->route.port, 2525);
    assert_int_equal(d->route.tls, STORE_TLS_STRICT);

    /* the snapshot is a copy: later changes do not show in it */
    assert_int_equal(store_domain_remove(f->st, "example.com", &err), 0);
    assert_non_null(store_snapshot_find(snap, "example.com"));
    store_snapshot_free(snap);

    /* an unverified subdomain does not hide its verified parent */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_exec(db, "INSERT INTO domains (name, verified, created) "
                                  "VALUES ('pending.zz.example', 0, 1)", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    snap = store_snapshot_load(f->st, &err);
    d = store_snapshot_find(snap, "x.pending.zz.example");
    assert_non_null(d);
    assert_string_equal(d->name, "zz.example");
    store_snapshot_free(snap);

    /* an empty store gives an empty snapshot */
    assert_null(store_snapshot_find(NULL, "example.com"));
}

static void test_changed_across_handles(void **state)
{
    struct fixture *f = *state;
    struct error err;

    f->st = open_ok(f);
    struct store *other = open_ok(f);
    assert_false(store_changed(f->st));
    assert_false(store_changed(other));

    /* own commit */
    assert_int_equal(store_domain_add(f->st, "example.com", &err), 0);
    assert_true(store_changed(f->st));
    assert_false(store_changed(f->st));
    /* seen by the other handle (PRAGMA data_version) */
    assert_true(store_changed(other));
    assert_false(store_changed(other));

    /* a failed write is no change */
    assert_int_equal(store_domain_add(other, "example.com", &err), -1);
    assert_false(store_changed(other));
    assert_false(store_changed(f->st));

    struct store_route r = { .host = "mx.example.com", .port = 25 };
    assert_int_equal(store_route_set(other, "example.com", &r, &err), 0);
    assert_true(store_changed(f->st));
    assert_true(store_changed(other));
    assert_int_equal(store_domain_remove(other, "example.com", &err), 0);
    assert_true(store_changed(f->st));
    assert_false(store_changed(f->st));
    store_close(other);
}

/* migration 2 on a version 1 database with data: the data stays, the new
 * tables enforce their rules */
static void test_migration_2_accounts(void **state)
{
    struct fixture *f = *state;
    struct error err;
    sqlite3 *db;

    struct store *old = store_open_at_version(f->path, 1, &err);
    assert_non_null(old);
    store_close(old);
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "INSERT INTO domains (name, verified, created)"
                                  " VALUES ('old.example', 1, 5)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    f->st = open_ok(f);
    assert_true(store_schema_version(f->st) >= 2);
    struct store_domain *d;
    size_t n;
    assert_int_equal(store_domain_list(f->st, &d, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(d[0].name, "old.example");
    store_domains_free(d, n);

    /* names unique without regard to case; roles checked */
    int64_t a1, a2, b1;
    assert_int_equal(store_account_create(f->st, "Root", "admin", "h", false, &a1, &err), STORE_OK);
    assert_int_equal(store_account_create(f->st, "root", "admin", "h", false, &a2, &err),
                     STORE_CONFLICT);
    assert_string_equal(err.field, "name");
    assert_int_equal(store_account_create(f->st, "x", "god", "h", false, &a2, &err), STORE_ERR);
    assert_string_equal(err.field, "role");
    struct store_account acc;
    assert_int_equal(store_account_get_by_name(f->st, "ROOT", &acc, &err), STORE_OK);
    assert_int_equal(acc.id, a1);
    store_account_clear(&acc);
    assert_int_equal(store_account_get(f->st, 999, &acc, &err), STORE_NOT_FOUND);
    assert_string_equal(err.field, "id");

    /* the last enabled administrator can be neither demoted, disabled nor deleted */
    assert_int_equal(store_account_set_role(f->st, a1, "basic_admin", &err), STORE_CONFLICT);
    assert_string_equal(err.field, "last_admin");
    assert_int_equal(store_account_set_disabled(f->st, a1, true, &err), STORE_CONFLICT);
    assert_int_equal(store_account_delete(f->st, a1, &err), STORE_CONFLICT);
    assert_int_equal(store_account_create(f->st, "second", "admin", "h", false, &a2, &err),
                     STORE_OK);
    assert_int_equal(store_account_set_disabled(f->st, a2, true, &err), STORE_OK);
    /* a disabled administrator does not count */
    assert_int_equal(store_account_delete(f->st, a1, &err), STORE_CONFLICT);
    assert_int_equal(store_account_set_disabled(f->st, a2, false, &err), STORE_OK);
    assert_int_equal(store_account_set_role(f->st, a1, "basic_admin", &err), STORE_OK);
    assert_int_equal(store_account_set_role(f->st, a2, "user", &err), STORE_CONFLICT);
    assert_int_equal(store_account_set_role(f->st, 999, "user", &err), STORE_NOT_FOUND);
    int64_t count;
    assert_int_equal(store_account_count(f->st, "admin", &count, &err), STORE_OK);
    assert_int_equal(count, 1);
    assert_int_equal(store_account_count(f->st, NULL, &count, &err), STORE_OK);
    assert_int_equal(count, 2);

    /* a TOTP step is accepted once */
    assert_int_equal(store_account_use_totp_step(f->st, a2, 100, &err), STORE_OK);
    assert_int_equal(store_account_use_totp_step(f->st, a2, 100, &err), STORE_CONFLICT);
    assert_int_equal(store_account_use_totp_step(f->st, a2, 99, &err), STORE_CONFLICT);
    assert_int_equal(store_account_use_totp_step(f->st, a2, 101, &err), STORE_OK);

    /* sessions and tokens go with their account; audit entries stay */
    assert_int_equal(store_account_create(f->st, "temp", "basic_admin", "h", false, &b1, &err),
                     STORE_OK);
    struct store_session s = { .account_id = b1, .created = 1, .last_seen = 1,
                               .expires = 4102444800 };
    str_copy(s.id_hash, sizeof s.id_hash, "aa");
    str_copy(s.csrf, sizeof s.csrf, "cc");
    assert_int_equal(store_session_create(f->st, &s, &err), STORE_OK);
    int64_t tid;
    assert_int_equal(store_token_create(f->st, b1, "t", "basic_admin", "hh", 1, &tid, &err),
                     STORE_OK);
    assert_int_equal(store_token_create(f->st, 999, "t", "user", "hh", 1, &tid, &err),
                     STORE_NOT_FOUND);
    struct store_audit_entry e = { .ts = 1, .account_id = b1, .account_name = "temp",
                                   .action = "domain.add" };
    assert_int_equal(store_audit_append(f->st, &e, &err), STORE_OK);
    assert_int_equal(store_account_delete(f->st, b1, &err), STORE_OK);
    struct store_session got;
    assert_int_equal(store_session_get(f->st, "aa", &got, &err), STORE_NOT_FOUND);
    struct store_token t;
    assert_int_equal(store_token_get(f->st, tid, &t, &err), STORE_NOT_FOUND);
    struct store_audit_filter flt = { .account = "TEMP", .limit = 5 };
    struct store_audit_entry *list;
    assert_int_equal(store_audit_list(f->st, &flt, &list, &n, &err), STORE_OK);
    assert_int_equal(n, 1);
    store_audit_free(list, n);
    /* the triggers keep the log append-only even for raw SQL */
    assert_int_not_equal(sqlite3_exec(f->st->db, "DELETE FROM audit", NULL, NULL, NULL),
                         SQLITE_OK);
    assert_int_not_equal(sqlite3_exec(f->st->db, "UPDATE audit SET ts = 2", NULL, NULL, NULL),
                         SQLITE_OK);
}

/* runtime settings: upsert of several keys at once, listing by key, delete */
static void test_settings(void **state)
{
    struct fixture *f = *state;
    struct error err;
    struct store_setting *v;
    size_t n;

    f->st = open_ok(f);
    assert_int_equal(store_settings_list(f->st, &v, &n, &err), STORE_OK);
    assert_int_equal(n, 0);
    store_settings_free(v, n);
    const char *keys[] = { "retry_schedule", "message_size_limit" };
    const char *vals[] = { "1m,5m", "10M" };
    assert_int_equal(store_settings_set(f->st, keys, vals, 2, "admin", &err), STORE_OK);
    const char *k2[] = { "message_size_limit" };
    const char *v2[] = { "20M" };
    assert_int_equal(store_settings_set(f->st, k2, v2, 1, "ann", &err), STORE_OK);
    assert_int_equal(store_settings_list(f->st, &v, &n, &err), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].key, "message_size_limit");
    assert_string_equal(v[0].value, "20M");
    assert_string_equal(v[0].updated_by, "ann");
    assert_true(v[0].updated > 0);
    assert_string_equal(v[1].key, "retry_schedule");
    assert_string_equal(v[1].value, "1m,5m");
    store_settings_free(v, n);
    assert_int_equal(store_setting_delete(f->st, "retry_schedule", &err), STORE_OK);
    assert_int_equal(store_setting_delete(f->st, "retry_schedule", &err), STORE_NOT_FOUND);
    /* kept across a reopen */
    store_close(f->st);
    f->st = open_ok(f);
    assert_int_equal(store_settings_list(f->st, &v, &n, &err), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(v[0].value, "20M");
    store_settings_free(v, n);
}

/* issue 8: the journal role's configuration, journal sources, legal holds */
static void test_journal_config(void **state)
{
    struct fixture *f = *state;
    struct error err;
    struct store_journal j;

    f->st = open_ok(f);
    /* no internal domain: no default address */
    assert_int_equal(store_journal_get(f->st, &j, &err), STORE_OK);
    assert_string_equal(j.address, "");
    assert_true(j.address_is_default);
    assert_string_equal(j.undeliverable, "");
    assert_int_equal(j.last_report, 0);
    store_journal_clear(&j);
    /* the default: journal@journal.<the oldest internal domain>; a pending
     * domain is not internal */
    assert_int_equal(store_domain_add(f->st, "pending.example", &err), 0);
    assert_int_equal(store_domain_add_trusted(f->st, "zzz.example", &err), 0);
    assert_int_equal(store_domain_add_trusted(f->st, "aaa.example", &err), 0);
    assert_int_equal(store_journal_get(f->st, &j, &err), STORE_OK);
    assert_string_equal(j.address, "journal@journal.zzz.example");
    assert_true(j.address_is_default);
    store_journal_clear(&j);

    /* configured: validated, lower-cased; undeliverable NULL = unchanged */
    assert_int_equal(store_journal_set(f->st, "not an address", NULL, &err), STORE_ERR);
    assert_string_equal(err.field, "address");
    assert_int_equal(store_journal_set(f->st, NULL, "bad@", &err), STORE_ERR);
    assert_string_equal(err.field, "undeliverable");
    assert_int_equal(store_journal_set(f->st, "Archive@Journal.Example.COM", "ndr@other.example",
                                       &err), STORE_OK);
    assert_int_equal(store_journal_set(f->st, "archive@journal.example.com", NULL, &err), STORE_OK);
    assert_int_equal(store_journal_get(f->st, &j, &err), STORE_OK);
    assert_string_equal(j.address, "archive@journal.example.com");
    assert_false(j.address_is_default);
    assert_string_equal(j.undeliverable, "ndr@other.example");
    store_journal_clear(&j);

    /* the snapshot: the address, and the sources (v4-mapped v6 counts as v4) */
    assert_int_equal(store_journal_source_add(f->st, "16.0.0.0/4", NULL, &err), STORE_ERR);
    assert_string_equal(err.field, "cidr");
    assert_int_equal(store_journal_source_add(f->st, "192.0.2.300", NULL, &err), STORE_ERR);
    assert_string_equal(err.field, "cidr");
    assert_int_equal(store_journal_source_add(f->st, "192.0.2.7", "exchange", &err), STORE_OK);
    assert_int_equal(store_journal_source_add(f->st, "192.0.2.7/32", NULL, &err), STORE_CONFLICT);
    assert_int_equal(store_journal_source_add(f->st, "2001:db8::/64", "bad\ncomment", &err), STORE_ERR);
    assert_string_equal(err.field, "comment");
    assert_int_equal(store_journal_source_add(f->st, "2001:db8::/64", NULL, &err), STORE_OK);
    struct store_journal_source *src;
    size_t n;
    assert_int_equal(store_journal_source_list(f->st, &src, &n, &err), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(src[0].cidr, "192.0.2.7/32");
    assert_string_equal(src[0].comment, "exchange");
    assert_string_equal(src[1].cidr, "2001:db8::/64");
    store_journal_sources_free(src, n);

    struct store_snapshot *snap = store_snapshot_load(f->st, &err);
    assert_non_null(snap);
    assert_string_equal(store_snapshot_journal_address(snap), "archive@journal.example.com");
    struct sockaddr_in in4 = { .sin_family = AF_INET };
    inet_pton(AF_INET, "192.0.2.7", &in4.sin_addr);
    assert_true(store_snapshot_journal_source(snap, (struct sockaddr *)&in4));
    inet_pton(AF_INET, "192.0.2.8", &in4.sin_addr);
    assert_false(store_snapshot_journal_source(snap, (struct sockaddr *)&in4));
    struct sockaddr_in6 in6 = { .sin6_family = AF_INET6 };
    inet_pton(AF_INET6, "::ffff:192.0.2.7", &in6.sin6_addr);
    assert_true(store_snapshot_journal_source(snap, (struct sockaddr *)&in6));
    inet_pton(AF_INET6, "2001:db8::25", &in6.sin6_addr);
    assert_true(store_snapshot_journal_source(snap, (struct sockaddr *)&in6));
    store_snapshot_free(snap);
    assert_string_equal(store_snapshot_journal_address(NULL), "");

    assert_int_equal(store_journal_source_remove(f->st, "192.0.2.7", &err), STORE_OK);
    assert_int_equal(store_journal_source_remove(f->st, "192.0.2.7", &err), STORE_NOT_FOUND);
    assert_int_equal(store_journal_source_remove(f->st, "999", &err), STORE_NOT_FOUND);
    /* back to the default */
    assert_int_equal(store_journal_set(f->st, "", NULL, &err), STORE_OK);
    assert_int_equal(store_journal_get(f->st, &j, &err), STORE_OK);
    assert_string_equal(j.address, "journal@journal.zzz.example");
    assert_string_equal(j.undeliverable, "ndr@other.example");
    store_journal_clear(&j);

    /* the evidence the Connect check reads */
    assert_int_equal(store_journal_seen(f->st, 1700000000, "192.0.2.7", "AAAA", "report", NULL,
                                        &err), 0);
    assert_int_equal(store_journal_seen(f->st, 1700000100, "192.0.2.7", "BBBB", "malformed",
                                        "no envelope block", &err), 0);
    assert_int_equal(store_journal_get(f->st, &j, &err), STORE_OK);
    assert_int_equal(j.last_report, 1700000100);
    assert_string_equal(j.last_report_qid, "BBBB");
    assert_string_equal(j.last_report_client, "192.0.2.7");
    assert_false(j.last_report_unwrapped);
    assert_int_equal(j.reports, 2);
    assert_int_equal(j.unwrapped, 1);
    assert_int_equal(j.malformed, 1);
    assert_string_equal(j.last_report_kind, "malformed");
    assert_string_equal(j.last_report_error, "no envelope block");
    store_journal_clear(&j);

    /* legal holds */
    assert_int_equal(store_legal_hold_add(f->st, "nobody", NULL, "admin", &err), STORE_ERR);
    assert_string_equal(err.field, "address");
    assert_int_equal(store_legal_hold_add(f->st, "Alice@Example.com", "litigation 42", "admin", &err),
                     STORE_OK);
    assert_int_equal(store_legal_hold_add(f->st, "alice@example.com", NULL, "admin", &err),
                     STORE_CONFLICT);
    assert_int_equal(store_legal_hold_add(f->st, "bob@example.com", "x\ty", "admin", &err), STORE_ERR);
    assert_string_equal(err.field, "reason");
    struct store_legal_hold *h;
    assert_int_equal(store_legal_hold_list(f->st, &h, &n, &err), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(h[0].address, "alice@example.com");
    assert_string_equal(h[0].reason, "litigation 42");
    assert_string_equal(h[0].created_by, "admin");
    store_legal_holds_free(h, n);
    assert_int_equal(store_legal_hold_remove(f->st, "ALICE@example.com", &err), STORE_OK);
    assert_int_equal(store_legal_hold_remove(f->st, "alice@example.com", &err), STORE_NOT_FOUND);
}

int main(void)
{
    log_set_level(LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrations_from_every_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pragmas_and_mode, setup, teardown),
        cmocka_unit_test(test_domain_names),
        cmocka_unit_test_setup_teardown(test_domains_crud, setup, teardown),
        cmocka_unit_test_setup_teardown(test_domain_verification, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changed_across_handles, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_2_accounts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_journal_config, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
