/*
 * test_tracking_store.c - the tracking database (store_tracking.c): the
 * life of a message as its events tell it (refused at RCPT, tempfailed,
 * refused by the content stage, delivered, deferred then delivered,
 * bounced, partial, held -> released -> delivered, deleted, journal mail
 * archived, a message Moat generated) with the outcome and recipient
 * states after each step; search by every field (substrings with LIKE's
 * metacharacters, exact and CIDR client addresses in both families, time
 * range, outcome) and keyset paging; get by id and by qid; bad queries
 * naming their field; stored strings bounded; purge by age and by size
 * leaving no orphan rows; the indexes the per-event lookups need.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include "core/core.h"
#include "core/track.h"
#include "store/store_tracking.h"

#define T0 1700000000000000LL      /* 2023-11-14, microseconds */
#define MIN_US 60000000LL

struct db {
    char dir[64];
    char path[128];
    struct store_tracking *st;
};

static void db_open(struct db *d)
{
    str_copy(d->dir, sizeof d->dir, "/tmp/moat-test-tracking-XXXXXX");
    assert_non_null(mkdtemp(d->dir));
    xsnprintf(d->path, sizeof d->path, "%s/tracking.db", d->dir);
    struct error err = {0};
    d->st = store_tracking_open(d->path, &err);
    if (d->st == NULL)
        fail_msg("store_tracking_open: %s", err.msg);
}

static void db_close(struct db *d)
{
    store_tracking_close(d->st);
    char cmd[128];
    xsnprintf(cmd, sizeof cmd, "rm -rf %s", d->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", d->dir);
}

/* ev - an event of a transaction (session != NULL) or of a queued message */
static struct track_event ev(enum track_kind kind, const char *session, uint32_t txn,
                             const char *qid, int64_t ts)
{
    struct track_event e = { .kind = kind, .ts_us = ts, .txn = txn };
    if (session != NULL)
        str_copy(e.session, sizeof e.session, session);
    if (qid != NULL)
        str_copy(e.qid, sizeof e.qid, qid);
    return e;
}

static void write_events(struct db *d, const struct track_event *e, size_t n)
{
    struct error err = {0};
    if (store_tracking_write(d->st, e, n, &err) < 0)
        fail_msg("store_tracking_write: %s", err.msg);
}

/* smtp - the SMTP part of a transaction: CONNECT, MAIL, one RCPT per
 * rcpts[] (its result), DATA and QUEUED when qid is set */
struct txn {
    const char *session, *ip, *sender, *subject, *msgid, *qid;
    const char *rcpts[3];
    enum track_result rcpt_results[3];
    enum track_result data;        /* TRACK_NONE: no DATA event */
    enum track_role role;
    int64_t ts;
};

static void smtp(struct db *d, const struct txn *t)
{
    struct track_event e[10];
    size_t n = 0;
    e[n] = ev(TRACK_CONNECT, t->session, 1, NULL, t->ts);
    e[n].client_ip = t->ip;
    e[n++].helo = "client.example";
    e[n] = ev(TRACK_MAIL, t->session, 1, NULL, t->ts + 1);
    e[n].result = TRACK_ACCEPTED;
    e[n].client_ip = t->ip;
    e[n++].sender = t->sender;
    for (int i = 0; i < 3 && t->rcpts[i] != NULL; i++) {
        e[n] = ev(TRACK_RCPT, t->session, 1, NULL, t->ts + 2 + i);
        e[n].rcpt = t->rcpts[i];
        e[n].result = t->rcpt_results[i];
        e[n].code = t->rcpt_results[i] == TRACK_ACCEPTED ? 250 : 550;
        e[n++].stage = "rcpt";
    }
    if (t->data != TRACK_NONE) {
        e[n] = ev(TRACK_DATA, t->session, 1, NULL, t->ts + 10);
        e[n].result = t->data;
        e[n].subject = t->subject;
        e[n].message_id = t->msgid;
        e[n++].size = 1234;
    }
    if (t->qid != NULL) {
        e[n] = ev(TRACK_QUEUED, t->session, 1, t->qid, t->ts + 11);
        e[n].sender = t->sender;
        e[n].subject = t->subject;
        e[n].message_id = t->msgid;
        e[n].role = t->role ? t->role : TRACK_ROLE_INBOUND;
        e[n].size = 1300;
        e[n++].nrcpt = 1;
    }
    write_events(d, e, n);
}

/* after-queueing events carry the qid alone */
static void attempt(struct db *d, const char *qid, const char *rcpt, enum track_result r,
                    int64_t ts)
{
    struct track_event e = ev(TRACK_ATTEMPT, NULL, 0, qid, ts);
    e.rcpt = rcpt;
    e.result = r;
    e.code = r == TRACK_DELIVERED ? 250 : r == TRACK_DEFERRED ? 451 : 550;
    e.remote = "mx.corp.example[127.0.0.1]:25";
    e.tls = "none";
    e.latency_ms = 12;
    write_events(d, &e, 1);
}

static void simple(struct db *d, enum track_kind k, const char *qid, int64_t ts)
{
    struct track_event e = ev(k, NULL, 0, qid, ts);
    e.actor = k == TRACK_RELEASED || k == TRACK_DELETED ? "admin" : NULL;
    e.check = k == TRACK_HELD ? "dnsbl" : NULL;
    write_events(d, &e, 1);
}

/* get - the message of qid (or session's when qid is NULL is not needed) */
static void get(struct db *d, const char *qid, struct store_tracking_msg *m,
                struct store_tracking_event **e, size_t *n)
{
    struct error err = {0};
    int rc = store_tracking_get(d->st, 0, qid, m, e, n, &err);
    if (rc != STORE_OK)
        fail_msg("get %s: %d %s", qid, rc, err.msg);
}

static void assert_outcome(struct db *d, const char *qid, const char *want)
{
    struct store_tracking_msg m;
    struct store_tracking_event *e;
    size_t n;
    get(d, qid, &m, &e, &n);
    if (strcmp(m.outcome, want) != 0)
        fail_msg("%s: outcome %s, want %s", qid, m.outcome, want);
    store_tracking_msg_clear(&m);
    store_tracking_events_free(e, n);
}

/* search - the ids matching q (all pages of size 1000) */
static size_t search(struct db *d, struct store_tracking_query q, int64_t *ids, size_t max)
{
    struct store_tracking_msg *m;
    size_t n;
    int64_t next;
    struct error err = {0};
    if (q.limit == 0)
        q.limit = 1000;
    if (store_tracking_search(d->st, &q, &m, &n, &next, &err) != 0)
        fail_msg("search: %s (%s)", err.msg, err.field);
    assert_true(n <= max);
    for (size_t i = 0; i < n; i++) {
        ids[i] = m[i].id;
        if (i > 0)
            assert_true(ids[i] < ids[i - 1]);
    }
    store_tracking_msgs_free(m, n);
    return n;
}

static size_t count(struct db *d, struct store_tracking_query q)
{
    int64_t ids[64];
    return search(d, q, ids, 64);
}

/* the corpus of the life-cycle test: one message per case */
static void corpus(struct db *d)
{
    /* 1: refused at RCPT, never queued */
    smtp(d, &(struct txn){ .session = "S1", .ip = "192.0.2.10", .sender = "ann@alpha.example",
                           .rcpts = { "nobody@corp.example" }, .rcpt_results = { TRACK_REJECTED },
                           .ts = T0 });
    /* 2: queued, then delivered */
    smtp(d, &(struct txn){ .session = "S2", .ip = "192.0.2.20", .sender = "bob@alpha.example",
                           .rcpts = { "r2@corp.example" }, .rcpt_results = { TRACK_ACCEPTED },
                           .data = TRACK_ACCEPTED, .subject = "Hello 100% _sale_",
                           .msgid = "<m2@alpha.example>", .qid = "Q2", .ts = T0 + MIN_US });
    /* 3: deferred, then delivered */
    smtp(d, &(struct txn){ .session = "S3", .ip = "198.51.100.3", .sender = "cy@beta.test",
                           .rcpts = { "r3@corp.example" }, .rcpt_results = { TRACK_ACCEPTED },
                           .data = TRACK_ACCEPTED, .subject = "1000 items",
                           .msgid = "m3@beta.test", .qid = "Q3", .ts = T0 + 2 * MIN_US });
    /* 4: bounced */
    smtp(d, &(struct txn){ .session = "S4", .ip = "2001:db8::5", .sender = "",
                           .rcpts = { "r4@corp.example" }, .rcpt_results = { TRACK_ACCEPTED },
                           .data = TRACK_ACCEPTED, .subject = "bounce me",
                           .msgid = "m4@beta.test", .qid = "Q4", .ts = T0 + 3 * MIN_US });
    /* 5: partial: two recipients, one delivered, one bounced; a third refused */
    smtp(d, &(struct txn){ .session = "S5", .ip = "192.0.2.20", .sender = "dee@alpha.example",
                           .rcpts = { "a5@corp.example", "b5@corp.example", "x5@corp.example" },
                           .rcpt_results = { TRACK_ACCEPTED, TRACK_ACCEPTED, TRACK_REJECTED },
                           .data = TRACK_ACCEPTED, .subject = "two", .msgid = "m5@a",
                           .qid = "Q5", .ts = T0 + 4 * MIN_US });
    /* 6: held, released, delivered */
    smtp(d, &(struct txn){ .session = "S6", .ip = "192.0.2.60", .sender = "eve@beta.test",
                           .rcpts = { "r6@corp.example" }, .rcpt_results = { TRACK_ACCEPTED },
                           .data = TRACK_ACCEPTED, .subject = "held", .msgid = "m6@b",
                           .qid = "Q6", .ts = T0 + 5 * MIN_US });
    /* 7: held, deleted */
    smtp(d, &(struct txn){ .session = "S7", .ip = "192.0.2.70", .sender = "fay@beta.test",
                           .rcpts = { "r7@corp.example" }, .rcpt_results = { TRACK_ACCEPTED },
                           .data = TRACK_ACCEPTED, .subject = "deleted", .msgid = "m7@b",
                           .qid = "Q7", .ts = T0 + 6 * MIN_US });
    /* 8: journal mail, archived */
    smtp(d, &(struct txn){ .session = "S8", .ip = "192.0.2.80", .sender = "exchange@corp.example",
                           .rcpts = { "journal@moat.example" }, .rcpt_results = { TRACK_ACCEPTED },
                           .data = TRACK_ACCEPTED, .subject = "journal report", .msgid = "m8@c",
                           .qid = "Q8", .role = TRACK_ROLE_JOURNAL, .ts = T0 + 7 * MIN_US });
    /* 9: greylisted at RCPT */
    smtp(d, &(struct txn){ .session = "S9", .ip = "192.0.2.90", .sender = "gus@alpha.example",
                           .rcpts = { "r9@corp.example" }, .rcpt_results = { TRACK_TEMPFAILED },
                           .ts = T0 + 8 * MIN_US });
    /* 10: refused by the content stage */
    smtp(d, &(struct txn){ .session = "S10", .ip = "192.0.2.100", .sender = "spam@beta.test",
                           .rcpts = { "r10@corp.example" }, .rcpt_results = { TRACK_ACCEPTED },
                           .data = TRACK_REJECTED, .subject = "buy now", .msgid = "m10@b",
                           .ts = T0 + 9 * MIN_US });
}

static void test_lifecycle(void **state)
{
    (void)state;
    struct db d;
    db_open(&d);
    corpus(&d);

    /* before any attempt: queued */
    assert_outcome(&d, "Q2", "queued");
    attempt(&d, "Q2", "r2@corp.example", TRACK_DELIVERED, T0 + 20 * MIN_US);
    assert_outcome(&d, "Q2", "delivered");

    attempt(&d, "Q3", "R3@Corp.Example", TRACK_DEFERRED, T0 + 20 * MIN_US);
    assert_outcome(&d, "Q3", "deferred");
    attempt(&d, "Q3", "r3@corp.example", TRACK_DELIVERED, T0 + 30 * MIN_US);
    assert_outcome(&d, "Q3", "delivered");

    attempt(&d, "Q4", "r4@corp.example", TRACK_FAILED, T0 + 20 * MIN_US);
    assert_outcome(&d, "Q4", "bounced");
    /* a DSN for it: a message of its own, known by its qid alone */
    struct track_event dsn = ev(TRACK_QUEUED, NULL, 0, "Q4D", T0 + 20 * MIN_US + 1);
    dsn.role = TRACK_ROLE_DSN;
    dsn.sender = "";
    write_events(&d, &dsn, 1);
    assert_outcome(&d, "Q4D", "queued");

    attempt(&d, "Q5", "a5@corp.example", TRACK_DELIVERED, T0 + 20 * MIN_US);
    assert_outcome(&d, "Q5", "queued");   /* b5 still pending */
    attempt(&d, "Q5", "b5@corp.example", TRACK_FAILED, T0 + 21 * MIN_US);
    assert_outcome(&d, "Q5", "partial");

    simple(&d, TRACK_HELD, "Q6", T0 + 20 * MIN_US);
    assert_outcome(&d, "Q6", "held");
    simple(&d, TRACK_RELEASED, "Q6", T0 + 30 * MIN_US);
    assert_outcome(&d, "Q6", "queued");
    attempt(&d, "Q6", "r6@corp.example", TRACK_DELIVERED, T0 + 31 * MIN_US);
    assert_outcome(&d, "Q6", "delivered");

    simple(&d, TRACK_HELD, "Q7", T0 + 20 * MIN_US);
    simple(&d, TRACK_DELETED, "Q7", T0 + 21 * MIN_US);
    assert_outcome(&d, "Q7", "deleted");

    assert_outcome(&d, "Q8", "queued");
    struct track_event ar = ev(TRACK_ARCHIVED, NULL, 0, "Q8", T0 + 20 * MIN_US);
    write_events(&d, &ar, 1);
    assert_outcome(&d, "Q8", "archived");
    /* inbound mail archived too stays delivered */
    ar = ev(TRACK_ARCHIVED, NULL, 0, "Q2", T0 + 21 * MIN_US);
    write_events(&d, &ar, 1);
    assert_outcome(&d, "Q2", "delivered");

    /* the messages never queued, by outcome */
    assert_int_equal(count(&d, (struct store_tracking_query){ .outcome = "rejected" }), 2);
    assert_int_equal(count(&d, (struct store_tracking_query){ .outcome = "tempfailed" }), 1);

    /* one message in full: its fields, recipients in order, events in time order */
    struct store_tracking_msg m;
    struct store_tracking_event *e;
    size_t n;
    get(&d, "Q5", &m, &e, &n);
    assert_string_equal(m.session, "S5");
    assert_int_equal(m.txn, 1);
    assert_string_equal(m.client_ip, "192.0.2.20");
    assert_string_equal(m.helo, "client.example");
    assert_string_equal(m.sender, "dee@alpha.example");
    assert_string_equal(m.subject, "two");
    assert_string_equal(m.message_id, "m5@a");
    assert_string_equal(m.role, "inbound");
    assert_int_equal(m.size, 1300);
    assert_int_equal(m.first_us, T0 + 4 * MIN_US);
    assert_int_equal(m.last_us, T0 + 21 * MIN_US);
    assert_int_equal(m.n_rcpts, 3);
    const char *want_rcpt[3] = { "a5@corp.example", "b5@corp.example", "x5@corp.example" };
    const char *want_state[3] = { "delivered", "bounced", "rejected" };
    for (int i = 0; i < 3; i++) {
        assert_string_equal(m.rcpts[i], want_rcpt[i]);
        assert_string_equal(m.rcpt_states[i], want_state[i]);
    }
    const char *kinds[] = { "connect", "mail", "rcpt", "rcpt", "rcpt", "data", "queued",
                            "attempt", "attempt" };
    assert_int_equal(n, 9);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(e[i].kind, kinds[i]);
        if (i > 0)
            assert_true(e[i].ts_us >= e[i - 1].ts_us);
    }
    assert_string_equal(e[8].result, "failed");
    assert_int_equal(e[8].code, 550);
    assert_string_equal(e[8].remote, "mx.corp.example[127.0.0.1]:25");
    assert_int_equal(e[8].latency_ms, 12);
    assert_null(e[0].actor);
    int64_t id = m.id;
    store_tracking_msg_clear(&m);
    store_tracking_events_free(e, n);

    /* by id gives the same message */
    struct error err = {0};
    assert_int_equal(store_tracking_get(d.st, id, NULL, &m, &e, &n, &err), STORE_OK);
    assert_string_equal(m.qid, "Q5");
    store_tracking_msg_clear(&m);
    store_tracking_events_free(e, n);
    assert_int_equal(store_tracking_get(d.st, 999999, NULL, &m, &e, &n, &err), STORE_NOT_FOUND);
    assert_int_equal(store_tracking_get(d.st, 0, "NOSUCH", &m, &e, &n, &err), STORE_NOT_FOUND);
    assert_string_equal(err.field, "qid");

    /* the message refused at RCPT: no qid, its rcpt rejected */
    int64_t ids[64];
    assert_int_equal(search(&d, (struct store_tracking_query){ .sender = "ann@" }, ids, 64), 1);
    assert_int_equal(store_tracking_get(d.st, ids[0], NULL, &m, &e, &n, &err), STORE_OK);
    assert_string_equal(m.outcome, "rejected");
    assert_string_equal(m.qid, "");
    assert_int_equal(m.n_rcpts, 1);
    assert_string_equal(m.rcpt_states[0], "rejected");
    store_tracking_msg_clear(&m);
    store_tracking_events_free(e, n);
    db_close(&d);
}

/* forwarding: the recipient becomes its target; a search finds either */
static void test_forwarded(void **state)
{
    (void)state;
    struct db d;
    db_open(&d);
    smtp(&d, &(struct txn){ .session = "F1", .ip = "192.0.2.1", .sender = "a@x.example",
                            .rcpts = { "old@corp.example" }, .rcpt_results = { TRACK_ACCEPTED },
                            .data = TRACK_ACCEPTED, .subject = "fw", .msgid = "f@x",
                            .qid = "QF", .ts = T0 });
    struct track_event f = ev(TRACK_FORWARDED, NULL, 0, "QF", T0 + 100);
    f.rcpt = "old@corp.example";
    f.detail = "new@elsewhere.example";
    write_events(&d, &f, 1);
    attempt(&d, "QF", "new@elsewhere.example", TRACK_DELIVERED, T0 + 200);
    assert_outcome(&d, "QF", "delivered");
    assert_int_equal(count(&d, (struct store_tracking_query){ .rcpt = "old@corp" }), 1);
    assert_int_equal(count(&d, (struct store_tracking_query){ .rcpt = "new@else" }), 1);
    db_close(&d);
}

static void test_search(void **state)
{
    (void)state;
    struct db d;
    db_open(&d);
    corpus(&d);
    typedef struct store_tracking_query Q;
    const struct { Q q; size_t want; } cases[] = {
        { { .sender = "@alpha.example" }, 4 },
        { { .sender = "@ALPHA.example" }, 4 },           /* case-insensitive */
        { { .sender = "beta" }, 4 },
        { { .rcpt = "5@corp" }, 1 },
        { { .rcpt = "corp.example" }, 9 },               /* journal@moat.example is not */
        { { .subject = "100%" }, 1 },                    /* not "1000 items" */
        { { .subject = "_sale_" }, 1 },
        { { .subject = "_" }, 1 },                       /* a literal underscore */
        { { .subject = "o" }, 5 },   /* Hello, bounce, two, journal report, buy now */
        { { .message_id = "<m2@alpha.example>" }, 1 },
        { { .message_id = "m2@alpha.example" }, 1 },
        { { .message_id = "m2@alpha" }, 0 },             /* exact */
        { { .qid = "Q3" }, 1 },
        { { .qid = "Q" }, 0 },
        { { .client_ip = "192.0.2.20" }, 2 },
        { { .client_ip = "::ffff:192.0.2.20" }, 2 },     /* the mapped form is IPv4 */
        { { .client_ip = "192.0.2.0/28" }, 1 },          /* .10 only */
        { { .client_ip = "192.0.2.0/24" }, 8 },
        { { .client_ip = "192.0.2.64/26" }, 4 },         /* .70 .80 .90 .100 */
        { { .client_ip = "0.0.0.0/0" }, 9 },
        { { .client_ip = "2001:db8::/32" }, 1 },
        { { .client_ip = "2001:db8::5" }, 1 },
        { { .client_ip = "::/0" }, 1 },
        { { .client_ip = "198.51.100.3/32" }, 1 },
        { { .after_us = T0 + 5 * MIN_US }, 5 },
        { { .before_us = T0 + 5 * MIN_US }, 5 },
        { { .after_us = T0 + MIN_US, .before_us = T0 + 3 * MIN_US }, 2 },
        { { .outcome = "queued" }, 7 },
        { { .outcome = "queued", .sender = "alpha" }, 2 },
        { { .outcome = "delivered" }, 0 },
        { { .sender = "bob", .client_ip = "192.0.2.0/24", .rcpt = "r2" }, 1 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t got = count(&d, cases[i].q);
        if (got != cases[i].want)
            fail_msg("case %zu: %zu matches, want %zu", i, got, cases[i].want);
    }

    /* paging: pages of 3, newest first, every message once */
    int64_t all[64], cursor = 0;
    size_t total = 0;
    int pages = 0;
    do {
        struct store_tracking_msg *m;
        size_t n;
        struct error err = {0};
        Q q = { .limit = 3, .cursor = cursor };
        assert_int_equal(store_tracking_search(d.st, &q, &m, &n, &cursor, &err), 0);
        for (size_t i = 0; i < n; i++) {
            all[total++] = m[i].id;
            if (total > 1)
                assert_true(all[total - 1] < all[total - 2]);
        }
        store_tracking_msgs_free(m, n);
        pages++;
    } while (cursor != 0);
    assert_int_equal(total, 10);
    assert_int_equal(pages, 4);

    /* bad queries name their field */
    const struct { Q q; const char *field; } bad[] = {
        { { .limit = 0 }, "limit" },
        { { .limit = 1001 }, "limit" },
        { { .limit = 10, .client_ip = "not-an-ip" }, "client_ip" },
        { { .limit = 10, .client_ip = "192.0.2.1/24" }, "client_ip" },   /* host bits */
        { { .limit = 10, .outcome = "lost" }, "outcome" },
        { { .limit = 10, .cursor = -1 }, "cursor" },
        { { .limit = 10, .after_us = -5 }, "after" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct store_tracking_msg *m = NULL;
        size_t n = 7;
        int64_t next = 7;
        struct error err = {0};
        assert_int_equal(store_tracking_search(d.st, &bad[i].q, &m, &n, &next, &err), STORE_ERR);
        assert_string_equal(err.field, bad[i].field);
        assert_null(m);
        assert_int_equal(n, 0);
    }
    db_close(&d);
}

/* stored strings are bounded, without cutting a UTF-8 sequence */
static void test_bounds(void **state)
{
    (void)state;
    struct db d;
    db_open(&d);
    char subject[3001], reason[3001], sender[700];
    /* "a" then é (2 octets) pairs: octets 997-998 are one é, which a cut
     * at 998 would split */
    subject[0] = 'a';
    for (int i = 1; i + 1 < 3000; i += 2)
        memcpy(subject + i, "\xc3\xa9", 2);
    subject[2999] = 'b';
    subject[3000] = '\0';
    memset(reason, 'r', 3000);
    reason[3000] = '\0';
    memset(sender, 's', 699);
    sender[699] = '\0';
    struct track_event e[3];
    e[0] = ev(TRACK_MAIL, "B1", 1, NULL, T0);
    e[0].sender = sender;
    e[1] = ev(TRACK_DATA, "B1", 1, NULL, T0 + 1);
    e[1].subject = subject;
    e[1].result = TRACK_REJECTED;
    e[1].reason = reason;
    e[2] = ev(TRACK_QUEUED, "B1", 1, "QB", T0 + 2);
    write_events(&d, e, 3);
    struct store_tracking_msg m;
    struct store_tracking_event *x;
    size_t n;
    get(&d, "QB", &m, &x, &n);
    assert_int_equal(strlen(m.sender), 320);
    assert_int_equal(strlen(m.subject), 997);
    assert_true(str_valid_utf8(m.subject, strlen(m.subject)));
    assert_int_equal(n, 3);
    assert_int_equal(strlen(x[1].reason), 1000);
    store_tracking_msg_clear(&m);
    store_tracking_events_free(x, n);
    db_close(&d);
}

/* stats and what is left after a purge: nothing that belongs to a purged message */
static void orphans(struct db *d, int64_t *rcpts, int64_t *events)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(d->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *s;
    const char *sql[2] = {
        "SELECT count(*) FROM rcpts WHERE message NOT IN (SELECT id FROM messages)",
        "SELECT count(*) FROM events WHERE message NOT IN (SELECT id FROM messages)",
    };
    int64_t *out[2] = { rcpts, events };
    for (int i = 0; i < 2; i++) {
        assert_int_equal(sqlite3_prepare_v2(db, sql[i], -1, &s, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        *out[i] = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
    }
    sqlite3_close(db);
}

static void test_purge_age(void **state)
{
    (void)state;
    struct db d;
    db_open(&d);
    corpus(&d);
    attempt(&d, "Q2", "r2@corp.example", TRACK_DELIVERED, T0 + 100 * MIN_US);  /* Q2 lives on */
    struct store_tracking_stats s;
    struct error err = {0};
    assert_int_equal(store_tracking_stats(d.st, &s, &err), 0);
    assert_int_equal(s.messages, 10);
    assert_int_equal(s.oldest_us, T0);
    int64_t events_before = s.events;
    assert_true(s.bytes > 0);

    /* last event before T0 + 5 min: S1..S5 (S2 had a late attempt) */
    int64_t removed;
    assert_int_equal(store_tracking_purge(d.st, T0 + 5 * MIN_US, 0, &removed, &err), 0);
    assert_int_equal(removed, 4);
    assert_int_equal(store_tracking_stats(d.st, &s, &err), 0);
    assert_int_equal(s.messages, 6);
    assert_true(s.events < events_before);
    assert_int_equal(s.oldest_us, T0 + MIN_US);
    assert_outcome(&d, "Q2", "delivered");
    struct store_tracking_msg m;
    struct store_tracking_event *e;
    size_t n;
    assert_int_equal(store_tracking_get(d.st, 0, "Q3", &m, &e, &n, &err), STORE_NOT_FOUND);
    int64_t orphan_rcpts, orphan_events;
    orphans(&d, &orphan_rcpts, &orphan_events);
    assert_int_equal(orphan_rcpts, 0);
    assert_int_equal(orphan_events, 0);
    /* nothing older left: a second run removes nothing */
    assert_int_equal(store_tracking_purge(d.st, T0 + 5 * MIN_US, 0, &removed, &err), 0);
    assert_int_equal(removed, 0);
    db_close(&d);
}

static void test_purge_size(void **state)
{
    (void)state;
    struct db d;
    db_open(&d);
    enum { N = 3000 };
    char qid[N][16], rcpt[N][40];
    static struct track_event e[N * 2];
    for (int i = 0; i < N; i++) {
        xsnprintf(qid[i], sizeof qid[i], "P%05d", i);
        xsnprintf(rcpt[i], sizeof rcpt[i], "user%d@corp.example", i);
        e[2 * i] = ev(TRACK_QUEUED, NULL, 0, qid[i], T0 + i * MIN_US);
        e[2 * i].sender = "bulk@sender.example";
        e[2 * i].subject = "a subject long enough to take some room in the pages of the file";
        e[2 * i + 1] = ev(TRACK_ATTEMPT, NULL, 0, qid[i], T0 + i * MIN_US + 5);
        e[2 * i + 1].rcpt = rcpt[i];
        e[2 * i + 1].result = TRACK_DELIVERED;
        e[2 * i + 1].reason = "250 2.0.0 Ok: queued as ABCDEF0123";
    }
    write_events(&d, e, N * 2);
    struct store_tracking_stats s;
    struct error err = {0};
    assert_int_equal(store_tracking_stats(d.st, &s, &err), 0);
    assert_int_equal(s.messages, N);
    assert_int_equal(s.events, 2 * N);
    int64_t max = s.bytes / 2, removed;
    assert_int_equal(store_tracking_purge(d.st, 0, max, &removed, &err), 0);
    assert_int_equal(store_tracking_stats(d.st, &s, &err), 0);
    assert_true(s.bytes <= max);
    assert_true(removed > 0 && removed < N);
    assert_int_equal(s.messages, N - removed);
    /* the oldest went first */
    assert_int_equal(s.oldest_us, T0 + removed * MIN_US);
    assert_outcome(&d, "P02999", "delivered");
    int64_t orphan_rcpts, orphan_events;
    orphans(&d, &orphan_rcpts, &orphan_events);
    assert_int_equal(orphan_rcpts, 0);
    assert_int_equal(orphan_events, 0);
    db_close(&d);
}

/* the file: incremental auto-vacuum; the per-event lookups use indexes */
static void test_schema(void **state)
{
    (void)state;
    struct db d;
    db_open(&d);
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(d.path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    const struct { const char *sql, *want; } cases[] = {
        { "PRAGMA auto_vacuum", "2" },
        { "EXPLAIN QUERY PLAN SELECT id FROM messages WHERE session = 'S' AND txn = 1"
          " ORDER BY id DESC LIMIT 1", "messages_txn" },
        { "EXPLAIN QUERY PLAN SELECT id FROM messages WHERE qid = 'Q' AND qid <> ''"
          " ORDER BY id DESC LIMIT 1", "messages_qid" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        sqlite3_stmt *s;
        assert_int_equal(sqlite3_prepare_v2(db, cases[i].sql, -1, &s, NULL), SQLITE_OK);
        bool found = false;
        while (sqlite3_step(s) == SQLITE_ROW)
            for (int c = 0; c < sqlite3_column_count(s); c++) {
                const char *v = (const char *)sqlite3_column_text(s, c);
                if (v != NULL && strstr(v, cases[i].want) != NULL)
                    found = true;
            }
        sqlite3_finalize(s);
        if (!found)
            fail_msg("%s: no %s", cases[i].sql, cases[i].want);
    }
    sqlite3_close(db);
    db_close(&d);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_forwarded),
        cmocka_unit_test(test_search),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_purge_age),
        cmocka_unit_test(test_purge_size),
        cmocka_unit_test(test_schema),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
