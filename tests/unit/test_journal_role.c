/*
 * test_journal_role.c - the journal role at RCPT (issue 8, policy_journal.c)
 * through the whole RCPT pipeline (policy_evaluate): the journal address
 * from a journal source is a journal transaction, from anyone else 550
 * 5.7.1; nothing joins a journal transaction and it joins nothing (452
 * 4.5.3).  Table-driven, against a snapshot of a real store.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "policy/policy.h"
#include "store/store.h"

static const struct {
    const char *rcpt;
    bool source, txn;
    size_t n_rcpts;
    bool archive_off;
    int code;               /* 0: not decided by the journal check */
    const char *dsn;
    const char *text;
} cases[] = {
    { "journal@journal.example.com", true, false, 0, false, 250, "2.1.5", "Ok" },
    { "JOURNAL@Journal.Example.COM", true, false, 0, false, 250, "2.1.5", "Ok" },
    { "journal@journal.example.com", false, false, 0, false, 550, "5.7.1", "not an authorised journal source" },
    { "journal@journal.example.com", false, false, 2, false, 550, "5.7.1", "not an authorised journal source" },
    { "journal@journal.example.com", true, false, 1, false, 452, "4.5.3", "journal reports travel alone" },
    { "alice@example.com", true, true, 1, false, 452, "4.5.3", "journal reports travel alone" },
    { "bob@remote.example.org", false, true, 1, false, 452, "4.5.3", "journal reports travel alone" },
    { "journal@journal.example.com", true, true, 1, false, 250, "2.1.5", "Ok" },   /* the same again */
    { "alice@example.com", true, false, 0, false, 0, NULL, NULL },
    { "other@journal.example.com", true, false, 0, false, 0, NULL, NULL },
    /* archive=no: nothing would keep the report, so it is refused, not dropped */
    { "journal@journal.example.com", true, false, 0, true, 550, "5.7.1", "journaling is off" },
    { "journal@journal.example.com", false, false, 0, true, 550, "5.7.1", "not an authorised journal source" },
};

static void test_journal_rcpt(void **state)
{
    (void)state;
    char dir[] = "/tmp/moat-test-journal-XXXXXX", path[128];
    assert_non_null(mkdtemp(dir));
    xsnprintf(path, sizeof path, "%s/moat.db", dir);
    struct error err;
    struct store *st = store_open(path, &err);
    assert_non_null(st);
    assert_int_equal(store_domain_add_trusted(st, "example.com", &err), 0);
    assert_int_equal(store_journal_source_add(st, "127.0.0.1", NULL, &err), 0);
    struct store_snapshot *snap = store_snapshot_load(st, &err);
    assert_non_null(snap);
    assert_string_equal(store_snapshot_journal_address(snap), "journal@journal.example.com");

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct policy_request req = {
            .stage = POLICY_RCPT, .client_addr = "127.0.0.1", .helo = "exchange.example.com",
            .sender = "postmaster@example.com", .rcpt = cases[i].rcpt,
            .n_rcpts = cases[i].n_rcpts, .snapshot = snap,
            .journal_source = cases[i].source, .journal_txn = cases[i].txn,
            .archive_off = cases[i].archive_off,
        };
        struct policy_verdict v;
        policy_evaluate(&req, &v);
        if (cases[i].code == 0) {
            assert_true(v.check == NULL || strcmp(v.check, policy_journal_check_name) != 0);
            continue;
        }
        if (v.code != cases[i].code)
            fail_msg("case %zu (%s): %d %s %s", i, cases[i].rcpt, v.code, v.dsn, v.text);
        assert_ptr_equal(v.check, policy_journal_check_name);
        assert_string_equal(v.dsn, cases[i].dsn);
        assert_non_null(strstr(v.text, cases[i].text));
        assert_int_equal(v.action, cases[i].code == 250 ? POLICY_ACCEPT
                                   : cases[i].code == 550 ? POLICY_REJECT : POLICY_TEMPFAIL);
    }
    store_snapshot_free(snap);
    store_close(st);

    /* no internal domain, nothing configured: no journal address, no role */
    char path2[128];
    xsnprintf(path2, sizeof path2, "%s/empty.db", dir);
    st = store_open(path2, &err);
    assert_non_null(st);
    snap = store_snapshot_load(st, &err);
    assert_string_equal(store_snapshot_journal_address(snap), "");
    struct policy_request req = { .stage = POLICY_RCPT, .rcpt = "journal@journal.example.com",
                                  .snapshot = snap, .journal_source = true };
    struct policy_verdict v;
    policy_evaluate(&req, &v);
    assert_true(v.check == NULL || strcmp(v.check, policy_journal_check_name) != 0);
    store_snapshot_free(snap);
    store_close(st);
    char cmd[160];
    xsnprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_journal_rcpt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
