/*
 * test_screening.c - permitted senders and greylisting (issue 7): greylist
 * triplet keys (IPv4 /24, IPv6 /64), the window rules with a fixed clock,
 * eviction, the permitted-sender values and index lookups (address, domain,
 * parent domains, per user, auto expiry), the auto-reply header rules, the
 * store rows (org and user lists, auto-allow refresh, greylist rows) and
 * the greylisting policy check.
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
#include "policy/greylist.h"
#include "policy/permitted.h"
#include "policy/policy.h"
#include "policy/policy_priv.h"
#include "store/store.h"

/* --- triplet keys --- */

static void test_triplet_keys(void **state)
{
    static const struct { const char *addr, *sender, *rcpt, *key; } ok[] = {
        { "192.0.2.77", "Bob@Example.ORG", "Alice@example.com",
          "192.0.2.0/24|bob@example.org|alice@example.com" },
        { "192.0.2.1", "", "alice@example.com", "192.0.2.0/24||alice@example.com" },
        { "2001:db8:1:2:3:4:5:6", "a@b.example", "c@d.example",
          "2001:db8:1:2::/64|a@b.example|c@d.example" },
        { "2001:db8:1:2::ffff", "a@b.example", "c@d.example",
          "2001:db8:1:2::/64|a@b.example|c@d.example" },
        { "::ffff:198.51.100.9", "a@b.example", "c@d.example",
          "198.51.100.0/24|a@b.example|c@d.example" },
        { "::1", "x@y.example", "z@example.com", "::/64|x@y.example|z@example.com" },
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char key[GREYLIST_KEY_MAX];
        assert_int_equal(greylist_triplet_key(ok[i].addr, ok[i].sender, ok[i].rcpt, key,
                                              sizeof key), 0);
        assert_string_equal(key, ok[i].key);
    }
    char key[GREYLIST_KEY_MAX];
    assert_int_equal(greylist_triplet_key("not-an-ip", "a@b", "c@d", key, sizeof key), -1);
    assert_int_equal(greylist_triplet_key(NULL, "a@b", "c@d", key, sizeof key), -1);
    char tiny[16];
    assert_int_equal(greylist_triplet_key("192.0.2.1", "a@b.example", "c@d.example", tiny,
                                          sizeof tiny), -1);
}

/* --- the window rules, with a fixed clock --- */

static void grey_settings(struct moat_settings *s)
{
    memset(s, 0, sizeof *s);
    settings_defaults(s);
    s->greylist_min_delay = 300;
    s->greylist_max_delay = 2 * 86400;
    s->greylist_pass_lifetime = 36 * 86400;
    s->greylist_max_entries = 1000;
}

static void test_greylist_windows(void **state)
{
    struct moat_settings s;
    grey_settings(&s);
    struct greylist *g = greylist_create(NULL, NULL, NULL, &s);
    const char *k = "192.0.2.0/24|a@b.example|c@example.com";
    int64_t t0 = 1000000;
    assert_int_equal(greylist_check(g, k, t0), GREYLIST_NEW);
    assert_int_equal(greylist_check(g, k, t0 + 1), GREYLIST_EARLY);
    assert_int_equal(greylist_check(g, k, t0 + 299), GREYLIST_EARLY);
    assert_int_equal(greylist_check(g, k, t0 + 300), GREYLIST_PASSED);   /* the window opens */
    /* passed: accepted at once, its lifetime counted from the last use */
    assert_int_equal(greylist_check(g, k, t0 + 301), GREYLIST_PASSED);
    assert_int_equal(greylist_check(g, k, t0 + 301 + 36 * 86400), GREYLIST_PASSED);
    assert_int_equal(greylist_check(g, k, t0 + 302 + 72 * 86400 + 1), GREYLIST_EXPIRED);
    /* expired: it starts over */
    int64_t t1 = t0 + 302 + 72 * 86400 + 1;
    assert_int_equal(greylist_check(g, k, t1 + 10), GREYLIST_EARLY);
    assert_int_equal(greylist_check(g, k, t1 + 300), GREYLIST_PASSED);

    /* a retry after max delay starts over, and its window counts from then */
    const char *k2 = "192.0.2.0/24|late@b.example|c@example.com";
    assert_int_equal(greylist_check(g, k2, t0), GREYLIST_NEW);
    assert_int_equal(greylist_check(g, k2, t0 + 2 * 86400), GREYLIST_PASSED);   /* last moment */
    const char *k3 = "192.0.2.0/24|later@b.example|c@example.com";
    assert_int_equal(greylist_check(g, k3, t0), GREYLIST_NEW);
    assert_int_equal(greylist_check(g, k3, t0 + 2 * 86400 + 1), GREYLIST_EXPIRED);
    assert_int_equal(greylist_check(g, k3, t0 + 2 * 86400 + 2), GREYLIST_EARLY);
    assert_int_equal(greylist_check(g, k3, t0 + 2 * 86400 + 301), GREYLIST_PASSED);
    assert_int_equal(greylist_size(g), 3);
    assert_string_equal(greylist_result_name(GREYLIST_EXPIRED), "expired");
    greylist_free(g);
    settings_free(&s);
}

static void test_greylist_eviction_oldest_pending_first(void **state)
{
    struct moat_settings s;
    grey_settings(&s);
    s.greylist_max_entries = 100;
    struct greylist *g = greylist_create(NULL, NULL, NULL, &s);
    char key[64];
    /* one passed triplet, then pending ones beyond the bound */
    assert_int_equal(greylist_check(g, "passed", 0), GREYLIST_NEW);
    assert_int_equal(greylist_check(g, "passed", 400), GREYLIST_PASSED);
    for (int i = 0; i < 150; i++) {
        xsnprintf(key, sizeof key, "pending-%d", i);
        assert_int_equal(greylist_check(g, key, 500 + i), GREYLIST_NEW);
    }
    assert_int_equal(greylist_size(g), 100);
    /* the passed one survived; the oldest pending ones went */
    assert_int_equal(greylist_check(g, "passed", 1000), GREYLIST_PASSED);
    assert_int_equal(greylist_check(g, "pending-149", 1000), GREYLIST_PASSED);
    assert_int_equal(greylist_check(g, "pending-0", 1000), GREYLIST_NEW);
    greylist_free(g);
    settings_free(&s);
}

/* --- the greylisting policy check --- */

static void test_policy_greylist_bypasses(void **state)
{
    struct moat_settings s;
    grey_settings(&s);
    s.greylisting = true;
    struct greylist *g = greylist_create(NULL, NULL, NULL, &s);
    struct policy_verdict v;
    struct policy_request req = {
        .stage = POLICY_RCPT, .client_addr = "192.0.2.5", .sender = "x@ext.example",
        .rcpt = "alice@example.com", .greylist = g,
    };
    memset(&v, 0, sizeof v);
    policy_check_greylist(&req, &v);
    assert_int_equal(v.action, POLICY_TEMPFAIL);
    assert_int_equal(v.code, 451);
    assert_string_equal(v.dsn, "4.7.1");
    assert_string_equal(v.text, "greylisted, try again later");
    /* permitted senders, the outbound role and a switched-off setting pass */
    static const int cases = 4;
    for (int i = 0; i < cases; i++) {
        struct policy_request r = req;
        r.sender = "other@ext.example";
        if (i == 0)
            r.permitted = true;
        else if (i == 1)
            r.outbound_host = true;
        else if (i == 2)
            r.auth_user = "scanner@example.com";
        else
            s.greylisting = false;
        memset(&v, 0, sizeof v);
        v.action = POLICY_DUNNO;
        policy_check_greylist(&r, &v);
        assert_int_equal(v.action, POLICY_DUNNO);
    }
    assert_int_equal(greylist_size(g), 1);   /* none of them was recorded */
    greylist_free(g);
    settings_free(&s);
}

/* --- permitted values, the store and the index --- */

static struct store *temp_store(char *dir, size_t size)
{
    (void)str_copy(dir, size, "/tmp/moat-test-screening-XXXXXX");
    assert_non_null(mkdtemp(dir));
    char path[128];
    xsnprintf(path, sizeof path, "%s/moat.db", dir);
    struct error err = {0};
    struct store *st = store_open(path, &err);
    if (st == NULL)
        fail_msg("store_open: %s", err.msg);
    return st;
}

static void remove_store(struct store *st, const char *dir)
{
    store_close(st);
    char p[160];
    static const char *const files[] = { "moat.db", "moat.db-wal", "moat.db-shm" };
    for (size_t i = 0; i < 3; i++) {
        xsnprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    rmdir(dir);
}

static void test_permitted_values(void **state)
{
    static const struct { const char *in, *out; } ok[] = {
        { "Bob@Partner.Example", "bob@partner.example" },
        { "partner.example", "partner.example" },
        { "first.last+tag@sub.partner.example", "first.last+tag@sub.partner.example" },
        { "PARTNER.EXAMPLE", "partner.example" },
    };
    char out[STORE_PERMITTED_VALUE_MAX + 1];
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct error err = {0};
        if (store_permitted_normalise(ok[i].in, "value", out, sizeof out, &err) < 0)
            fail_msg("%s: %s", ok[i].in, err.msg);
        assert_string_equal(out, ok[i].out);
    }
    static const char *const bad[] = {
        "", "@partner.example", "bob@", "not a domain", "bob smith@partner.example",
        "bad..example", "-x.example", "a\"b@partner.example", "<bob@partner.example>",
        "bob@partner.example,extra", "example",     /* a bare TLD would permit too much */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct error err = {0};
        if (store_permitted_normalise(bad[i], "value", out, sizeof out, &err) == 0)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_string_equal(err.field, "value");
    }
    char big[400];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    struct error err = {0};
    assert_int_equal(store_permitted_normalise(big, "value", out, sizeof out, &err), -1);
}

static void test_permitted_store_and_index(void **state)
{
    char dir[64];
    struct store *st = temp_store(dir, sizeof dir);
    struct error err = {0};
    int64_t id = 0, now = 2000000000, life = 120 * 86400;
    assert_int_equal(store_permitted_add(st, NULL, "Partner.Example", "supplier", "admin", &id,
                                         &err), STORE_OK);
    assert_true(id > 0);
    assert_int_equal(store_permitted_add(st, "", "partner.example", NULL, "admin", NULL, &err),
                     STORE_CONFLICT);
    assert_string_equal(err.field, "value");
    assert_int_equal(store_permitted_add(st, NULL, "auditor@audit.example", NULL, "admin", NULL,
                                         &err), STORE_OK);
    assert_int_equal(store_permitted_add(st, "Alice@Example.com", "friend@ext.example", NULL,
                                         "admin", NULL, &err), STORE_OK);
    assert_int_equal(store_permitted_add(st, "not-an-address", "x.example", NULL, "admin", NULL,
                                         &err), STORE_ERR);
    assert_string_equal(err.field, "address");
    /* auto-allow: insert, then refresh; expired ones are dropped at load */
    assert_int_equal(store_permitted_auto_touch(st, "alice@example.com", "bob@remote.example",
                                                now - 100 * 86400, &err), STORE_OK);
    assert_int_equal(store_permitted_auto_touch(st, "alice@example.com", "bob@remote.example",
                                                now - 10 * 86400, &err), STORE_OK);
    assert_int_equal(store_permitted_auto_touch(st, "alice@example.com", "old@remote.example",
                                                now - 200 * 86400, &err), STORE_OK);
    /* a manual entry stays manual when the user writes to it */
    assert_int_equal(store_permitted_auto_touch(st, "alice@example.com", "friend@ext.example",
                                                now, &err), STORE_OK);
    struct store_permitted *v;
    size_t n;
    assert_int_equal(store_permitted_list(st, "alice@example.com", 0, 100, now - life, &v, &n,
                                          &err), STORE_OK);
    assert_int_equal(n, 2);     /* friend (manual), bob (auto); old has expired */
    assert_string_equal(v[0].value, "friend@ext.example");
    assert_string_equal(v[0].source, "manual");
    assert_string_equal(v[1].value, "bob@remote.example");
    assert_string_equal(v[1].source, "auto");
    assert_int_equal(v[1].last_seen, now - 10 * 86400);
    store_permitted_free(v, n);
    int64_t org, autos;
    assert_int_equal(store_permitted_count(st, now - life, &org, &autos, &err), STORE_OK);
    assert_int_equal(org, 2);
    assert_int_equal(autos, 1);

    struct permitted_index *ix = permitted_index_load(st, now, life, &err);
    assert_non_null(ix);
    assert_int_equal(permitted_index_count_org(ix), 2);
    assert_int_equal(permitted_index_count_auto(ix), 1);
    /* organisation-wide: the domain, its subdomains, the address */
    assert_true(permitted_check(ix, "anyone@partner.example", "carol@example.com", now));
    assert_true(permitted_check(ix, "x@Mail.Partner.Example", "carol@example.com", now));
    assert_false(permitted_check(ix, "x@notpartner.example", "carol@example.com", now));
    assert_false(permitted_check(ix, "x@partner.example.evil", "carol@example.com", now));
    assert_true(permitted_check(ix, "Auditor@audit.example", "carol@example.com", now));
    assert_false(permitted_check(ix, "other@audit.example", "carol@example.com", now));
    /* per user: only for that user */
    assert_true(permitted_check(ix, "friend@ext.example", "ALICE@example.com", now));
    assert_false(permitted_check(ix, "friend@ext.example", "carol@example.com", now));
    assert_true(permitted_check(ix, "bob@remote.example", "alice@example.com", now));
    /* an auto entry expires while the index is in use */
    assert_false(permitted_check(ix, "bob@remote.example", "alice@example.com",
                                 now - 10 * 86400 + life + 1));
    assert_false(permitted_check(ix, "old@remote.example", "alice@example.com", now));
    /* the null sender and odd input are never permitted */
    assert_false(permitted_check(ix, "", "alice@example.com", now));
    assert_false(permitted_check(ix, "partner.example", "alice@example.com", now));
    assert_false(permitted_check(NULL, "x@partner.example", "alice@example.com", now));
    permitted_index_free(ix);

    /* delete by id and by value, each within its own list */
    assert_int_equal(store_permitted_delete(st, "alice@example.com", id, &err), STORE_NOT_FOUND);
    assert_int_equal(store_permitted_delete(st, NULL, id, &err), STORE_OK);
    assert_int_equal(store_permitted_delete_value(st, NULL, "AUDITOR@audit.example", &err),
                     STORE_OK);
    assert_int_equal(store_permitted_delete_value(st, NULL, "auditor@audit.example", &err),
                     STORE_NOT_FOUND);
    assert_string_equal(err.field, "value");
    remove_store(st, dir);
}

static int count_rows(void *arg, const struct store_greylist *g)
{
    size_t *n = arg;
    (*n)++;
    return 0;
}

static void test_greylist_store_roundtrip(void **state)
{
    char dir[64];
    struct store *st = temp_store(dir, sizeof dir);
    struct error err = {0};
    int64_t now = 40 * 86400;
    struct store_greylist rows[] = {
        { "192.0.2.0/24|a@b.example|c@example.com", now - 5000, now - 4000, true },
        { "192.0.2.0/24|d@b.example|c@example.com", now - 800, now - 800, false },
        /* passed, unused for more than greylist_pass_lifetime (36 days) */
        { "192.0.2.0/24|old@b.example|c@example.com", 1, 2, true },
    };
    assert_int_equal(store_greylist_put(st, rows, 3, &err), STORE_OK);
    rows[0].last_seen = now - 1000;
    assert_int_equal(store_greylist_put(st, rows, 1, &err), STORE_OK);   /* replaces */
    struct moat_settings s;
    grey_settings(&s);
    struct greylist *g = greylist_create(NULL, NULL, NULL, &s);
    /* the old row is pruned (last seen before since), the others loaded */
    assert_int_equal(greylist_load(g, st, now, &err), 0);
    assert_int_equal(greylist_size(g), 2);
    assert_int_equal(greylist_check(g, rows[0].triplet, now), GREYLIST_PASSED);
    assert_int_equal(greylist_check(g, rows[1].triplet, now), GREYLIST_PASSED);   /* 800 s after */
    assert_int_equal(greylist_check(g, rows[2].triplet, now), GREYLIST_NEW);
    size_t n = 0;
    assert_int_equal(store_greylist_each(st, 0, count_rows, &n, &err), STORE_OK);
    assert_int_equal(n, 2);
    greylist_free(g);
    settings_free(&s);
    remove_store(st, dir);
}

/* --- auto-replies (RFC 3834) --- */

static void test_autoreply_headers(void **state)
{
    static const struct { const char *head; bool autoreply; const char *why; } cases[] = {
        { "From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n", false, NULL },
        { "Auto-Submitted: auto-replied\r\n\r\n", true, "Auto-Submitted" },
        { "auto-submitted:   Auto-Generated (vacation)\r\n\r\n", true, "Auto-Submitted" },
        { "Auto-Submitted: no\r\n\r\n", false, NULL },
        { "Auto-Submitted: No ; comment\r\n\r\n", false, NULL },
        { "Precedence: bulk\r\n\r\n", true, "Precedence" },
        { "Precedence: list\r\n\r\n", true, "Precedence" },
        { "Precedence: first-class\r\n\r\n", false, NULL },
        { "X-Autoreply: yes\r\n\r\n", true, "X-Autoreply" },
        /* folded */
        { "Subject: x\r\nAuto-Submitted:\r\n auto-replied\r\n\r\n", true, "Auto-Submitted" },
        /* only the header block counts */
        { "Subject: x\r\n\r\nAuto-Submitted: auto-replied\r\n", false, NULL },
        /* a continuation of another field is not a field */
        { "Subject: x\r\n Auto-Submitted: auto-replied\r\n\r\n", false, NULL },
        /* LF only */
        { "Subject: x\nPrecedence: junk\n\n", true, "Precedence" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *why = NULL;
        bool r = permitted_learn_autoreply(cases[i].head, strlen(cases[i].head), &why);
        if (r != cases[i].autoreply)
            fail_msg("case %zu: %d", i, r);
        if (cases[i].why)
            assert_string_equal(why, cases[i].why);
    }
    /* bounded: a header cut in the middle is read up to the bound only */
    const char *h = "Precedence: bulk\r\n\r\n";
    assert_false(permitted_learn_autoreply(h, 5, NULL));
    assert_false(permitted_learn_autoreply(NULL, 0, NULL));
}

static bool known_id(void *arg, const char *msgid)
{
    return strcmp(msgid, (const char *)arg) == 0;
}

static void test_released_reply_hook(void **state)
{
    const char *h = "In-Reply-To: <a@x>\r\nReferences: <b@x>\r\n <released@held>\r\n\r\n";
    assert_false(permitted_learn_released_reply(h, strlen(h)));   /* no hook: never */
    permitted_learn_set_released_hook(known_id, (void *)"<released@held>");
    assert_true(permitted_learn_released_reply(h, strlen(h)));
    const char *other = "In-Reply-To: <a@x>\r\n\r\n";
    assert_false(permitted_learn_released_reply(other, strlen(other)));
    permitted_learn_set_released_hook(NULL, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_triplet_keys),
        cmocka_unit_test(test_greylist_windows),
        cmocka_unit_test(test_greylist_eviction_oldest_pending_first),
        cmocka_unit_test(test_policy_greylist_bypasses),
        cmocka_unit_test(test_permitted_values),
        cmocka_unit_test(test_permitted_store_and_index),
        cmocka_unit_test(test_greylist_store_roundtrip),
        cmocka_unit_test(test_autoreply_headers),
        cmocka_unit_test(test_released_reply_hook),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
