/*
 * test_archive_store.c - the archive's database (store_archive.c) and its
 * query language (archive_query.c): ingest with dedup and idempotency,
 * every operator with exact counts over a generated corpus whose answers
 * are known (each case also has a predicate over the corpus, checked
 * against the store), owner scoping, paging and the count cap, snippets,
 * FTS syntax that must stay plain words, purge with legal holds (no rows
 * left behind in any table), stats; and the parser's errors.
 *
 * Items are built by hand: no GMime, the body is opaque octets.
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
#include <sqlite3.h>
#include "archive/archive_query.h"
#include "store/store_archive.h"
#include "store/store_priv.h"

#define DAY 86400
#define BASE 1704067200            /* 2024-01-01T00:00:00Z */
#define CORPUS 300

static const char *const from_domains[3] = { "alpha.example", "mail.alpha.example", "beta.test" };

/* --- the generated corpus: message i, its fields as functions of i --- */

struct gen {
    char qid[16], mid[32], sender[64], to[64], display[96], subject[96], text[256], att[32];
    unsigned char hash[32];
    struct store_archive_rcpt rcpt[2];
    const char *atts[1];
    char body[64];
    struct store_archive_item it;
};

static void gen_item(struct gen *g, int i)
{
    memset(g, 0, sizeof *g);
    xsnprintf(g->qid, sizeof g->qid, "Q%05d", i);
    xsnprintf(g->mid, sizeof g->mid, "m%d@x.example", i);
    xsnprintf(g->sender, sizeof g->sender, "user%d@%s", i % 10, from_domains[i % 3]);
    xsnprintf(g->to, sizeof g->to, "r%d@corp.example", i % 7);
    xsnprintf(g->display, sizeof g->display, "User %d <%s>", i, g->sender);
    xsnprintf(g->subject, sizeof g->subject, "Report %d%s", i, i % 5 == 0 ? " quarterly budget" : "");
    xsnprintf(g->text, sizeof g->text, "body of message %d %s common words here %s", i,
              i % 13 == 0 ? "rareword zebra" : "", i % 4 == 0 ? "the quick brown fox"
                                                                : "the brown quick fox");
    xsnprintf(g->att, sizeof g->att, "invoice%d.pdf", i);
    xsnprintf(g->body, sizeof g->body, "compressed-%d", i);
    memset(g->hash, 0, sizeof g->hash);
    g->hash[0] = (unsigned char)(i & 0xff);
    g->hash[1] = (unsigned char)(i >> 8);
    g->rcpt[0] = (struct store_archive_rcpt){ .addr = g->to, .kind = "envelope" };
    g->rcpt[1] = (struct store_archive_rcpt){ .addr = "hidden@corp.example", .kind = "bcc" };
    g->atts[0] = g->att;
    g->it = (struct store_archive_item){
        .qid = g->qid, .received = BASE + (int64_t)i * DAY, .direction = "inbound",
        .source = i % 11 == 0 ? "journal" : "smtp", .client_addr = "127.0.0.1",
        .sender = g->sender, .rcpts = g->rcpt, .n_rcpts = i % 11 == 0 ? 2 : 1,
        .journal = i % 11 == 0 ? "report" : NULL,
        .hash = g->hash, .message_id = g->mid, .date = BASE + (int64_t)i * DAY - 60,
        .from = g->sender, .to = g->to, .cc = "", .from_display = g->display,
        .subject = g->subject, .size = 1000 + (uint64_t)i, .attachments = g->atts,
        .n_attachments = i % 6 == 0 ? 1 : 0, .text = g->text, .truncated = false,
        .body = g->body, .body_len = strlen(g->body), .codec = "zstd",
    };
}

struct db {
    char dir[64];
    char path[128];
    struct store_archive *sa;
};

static void db_open(struct db *d)
{
    str_copy(d->dir, sizeof d->dir, "/tmp/moat-test-archive-XXXXXX");
    assert_non_null(mkdtemp(d->dir));
    xsnprintf(d->path, sizeof d->path, "%s/archive.db", d->dir);
    struct error err = {0};
    d->sa = store_archive_open(d->path, &err);
    if (d->sa == NULL)
        fail_msg("store_archive_open: %s", err.msg);
}

static void db_close(struct db *d)
{
    store_archive_close(d->sa);
    char cmd[128];
    xsnprintf(cmd, sizeof cmd, "rm -rf %s", d->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", d->dir);
}

/* corpus_load - the CORPUS items, in batches of 64 */
static void corpus_load(struct db *d)
{
    struct gen *g = xcalloc(64, sizeof *g);
    struct store_archive_item items[64];
    enum store_archive_outcome out[64];
    for (int base = 0; base < CORPUS; base += 64) {
        int n = CORPUS - base < 64 ? CORPUS - base : 64;
        for (int k = 0; k < n; k++) {
            gen_item(&g[k], base + k);
            items[k] = g[k].it;
        }
        struct error err = {0};
        if (store_archive_ingest(d->sa, items, (size_t)n, out, NULL, &err) != STORE_OK)
            fail_msg("ingest: %s", err.msg);
        for (int k = 0; k < n; k++)
            assert_int_equal(out[k], STORE_ARCHIVE_NEW);
    }
    free(g);
}

/* count - the number of matches of query text q (parsed) under owner */
static size_t count(struct db *d, const char *q, const char *owner)
{
    struct store_archive_query sq;
    struct error err = {0};
    if (archive_query_parse(q, &sq, &err) < 0)
        fail_msg("parse \"%s\": %s", q, err.msg);
    struct store_archive_scope scope = { .owner = owner };
    struct store_archive_hit *h;
    size_t n, total;
    if (store_archive_search(d->sa, &sq, &scope, 0, 1000, 0, &h, &n, &total, &err) != STORE_OK)
        fail_msg("search \"%s\": %s", q, err.msg);
    assert_int_equal(n, total);
    /* newest first, and no hit twice */
    for (size_t i = 1; i < n; i++)
        assert_true(h[i - 1].received > h[i].received ||
                    (h[i - 1].received == h[i].received && h[i - 1].id > h[i].id));
    store_archive_hits_free(h, n);
    archive_query_clear(&sq);
    return total;
}

static bool in_alpha(int i) { return i % 3 != 2; }

/* the cases: a query, its count by hand, and the predicate it must equal */
static const struct {
    const char *q;
    size_t want;
    bool (*pred)(int i);
} cases[] = {
    { "", 300, NULL },
    { "from:alpha.example", 200, in_alpha },
    { "FROM:Alpha.Example", 200, in_alpha },
    { "from:mail.alpha.example", 100, NULL },
    { "from:beta.test", 100, NULL },
    { "from:lpha.example", 0, NULL },                /* a suffix, not a subdomain */
    { "from:user3@beta.test", 10, NULL },            /* i = 23 mod 30 */
    { "from:@beta.test", 100, NULL },
    { "from:r3@corp.example", 0, NULL },             /* a recipient, not a sender */
    { "to:r3@corp.example", 43, NULL },              /* i = 3 mod 7 */
    { "to:hidden@corp.example", 28, NULL },          /* journal bcc, i = 0 mod 11 */
    { "to:corp.example", 300, NULL },
    { "to:user3@beta.test", 0, NULL },
    { "subject:quarterly", 60, NULL },
    { "subject:\"quarterly budget\"", 60, NULL },
    { "subject:\"budget quarterly\"", 0, NULL },
    { "subject:zebra", 0, NULL },                    /* only in the text */
    { "zebra", 24, NULL },                           /* i = 0 mod 13 */
    { "ZEBRA rareword", 24, NULL },
    { "\"quick brown\"", 75, NULL },                 /* i = 0 mod 4 */
    { "quick brown", 300, NULL },
    { "quarterly", 60, NULL },                       /* free text covers the subject */
    { "invoice12.pdf", 1, NULL },                    /* attachment names */
    { "invoice13.pdf", 0, NULL },                    /* 13 has none */
    { "user7", 30, NULL },                           /* addresses are text too */
    { "has:attachment", 50, NULL },
    { "after:2024-01-11", 290, NULL },
    { "before:2024-01-11", 10, NULL },
    { "after:2024-01-11T00:00:00Z before:2024-01-11T00:00:01Z", 1, NULL },
    { "after:2024-01-10T23:59:59Z before:2024-01-11T00:00:00Z", 0, NULL },
    { "after:2024-02-01 before:2024-03-01", 29, NULL },   /* 2024 is a leap year */
    { "from:alpha.example has:attachment", 50, NULL },
    { "from:beta.test has:attachment", 0, NULL },
    { "to:r3@corp.example zebra", 3, NULL },         /* 52, 143, 234 */
    { "from:alpha.example to:r0@corp.example subject:quarterly after:2024-06-01", 3, NULL },
    { "from:user0@alpha.example to:hidden@corp.example", 1, NULL },    /* 0 mod 330 */
};

static bool match_user0_hidden(int i)
{
    return i % 10 == 0 && i % 3 == 0 && i % 11 == 0;
}

/* brute - the same question answered from the generator */
static size_t brute(bool (*pred)(int))
{
    size_t n = 0;
    for (int i = 0; i < CORPUS; i++)
        n += pred(i);
    return n;
}

static void received_order(struct db *d, const char *qs, const int64_t *want, size_t n);

static void test_queries(void **state)
{
    (void)state;
    struct db d;
    db_open(&d);
    corpus_load(&d);
    /* both ways of applying address conditions: listed (sparse), then
     * probed per message (dense: what a big organisation's own domain gets) */
    for (int pass = 0; pass < 2; pass++) {
    store_archive_dense_min = pass == 0 ? 20000 : 1;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t got = count(&d, cases[i].q, NULL);
        if (got != cases[i].want)
            fail_msg("\"%s\": %zu matches, want %zu", cases[i].q, got, cases[i].want);
        if (cases[i].pred != NULL)
            assert_int_equal(brute(cases[i].pred), cases[i].want);
    }
    /* ingested in order (lateness 0): text searches stop reading the index
     * early and still page in exact order */
    int64_t want[CORPUS];
    size_t nw = 0;
    for (int i = CORPUS - 1; i >= 0; i--)
        if (i % 13 == 0)
            want[nw++] = BASE + (int64_t)i * DAY;
    received_order(&d, "zebra", want, nw);
    received_order(&d, "rareword", want, nw);
    nw = 0;
    for (int i = CORPUS - 1; i >= 0; i--)
        if (i % 3 != 2)
            want[nw++] = BASE + (int64_t)i * DAY;
    received_order(&d, "from:alpha.example", want, nw);
    received_order(&d, "from:alpha.example common", want, nw);
    assert_int_equal(count(&d, "", "user3@beta.test"), 10);
    assert_int_equal(count(&d, "zebra", "user3@beta.test"), 1);
    assert_int_equal(count(&d, "", "beta.test"), 0);     /* an owner is an address, never a domain */
    }
    store_archive_dense_min = 20000;
    /* the hand counts agree with the generator where the arithmetic is less obvious */
    assert_int_equal(brute(match_user0_hidden), 0 + count(&d, "from:user0@alpha.example "
                                                               "to:hidden@corp.example", NULL));
    db_close(&d);
}

struct ids {
    int64_t id[16];
    size_t n, stop_at;
};

static int collect(void *arg, int64_t id)
{
    struct ids *c = arg;
    c->id[c->n++] = id;
    return c->n == c->stop_at || c->n == 16;
}

static void test_owner_paging_snippets(void **state)
{
    (void)state;
    struct db d;
    db_open(&d);
    corpus_load(&d);
    struct error err = {0};

    /* owner: sender, header recipient or journal recipient */
    assert_int_equal(count(&d, "", "user3@beta.test"), 10);
    assert_int_equal(count(&d, "", "USER3@beta.test"), 10);
    assert_int_equal(count(&d, "zebra", "user3@beta.test"), 1);      /* 143 */
    assert_int_equal(count(&d, "", "hidden@corp.example"), 28);
    assert_int_equal(count(&d, "", "r3@corp.example"), 43);
    assert_int_equal(count(&d, "", "nobody@corp.example"), 0);
    assert_int_equal(count(&d, "from:beta.test", "user3@alpha.example"), 0);

    /* paging: newest first, offset/limit, total, count cap */
    struct store_archive_query q = {0};
    struct store_archive_scope all = {0};
    struct store_archive_hit *h;
    size_t n, total;
    assert_int_equal(store_archive_search(d.sa, &q, &all, 0, 5, 0, &h, &n, &total, &err), STORE_OK);
    assert_int_equal(n, 5);
    assert_int_equal(total, 300);
    assert_int_equal(h[0].received, BASE + 299 * DAY);
    assert_string_equal(h[0].subject, "Report 299");
    assert_string_equal(h[0].from, "User 299 <user9@beta.test>");
    assert_string_equal(h[0].sender, "user9@beta.test");
    assert_string_equal(h[0].message_id, "m299@x.example");
    assert_string_equal(h[0].direction, "inbound");
    assert_string_equal(h[0].to, "r5@corp.example");
    assert_int_equal(h[0].size, 1299);
    assert_null(h[0].snippet);
    assert_int_equal(h[4].received, BASE + 295 * DAY);
    store_archive_hits_free(h, n);
    assert_int_equal(store_archive_search(d.sa, &q, &all, 290, 20, 0, &h, &n, &total, &err), STORE_OK);
    assert_int_equal(n, 10);
    assert_int_equal(h[9].received, BASE);
    assert_int_equal(h[0].n_attachments, 0);     /* i = 9 */
    assert_int_equal(h[3].n_attachments, 1);     /* i = 6 */
    store_archive_hits_free(h, n);
    assert_int_equal(store_archive_search(d.sa, &q, &all, 0, 3, 100, &h, &n, &total, &err), STORE_OK);
    assert_int_equal(total, 100);
    store_archive_hits_free(h, n);
    assert_int_equal(store_archive_search(d.sa, &q, &all, 400, 3, 0, &h, &n, &total, &err), STORE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(total, 300);
    store_archive_hits_free(h, n);

    /* snippets: only when asked, the match marked */
    struct store_archive_query zq;
    assert_int_equal(archive_query_parse("zebra", &zq, &err), 0);
    struct store_archive_scope snip = { .snippets = true };
    assert_int_equal(store_archive_search(d.sa, &zq, &snip, 0, 2, 0, &h, &n, &total, &err), STORE_OK);
    assert_int_equal(n, 2);
    assert_non_null(h[0].snippet);
    assert_non_null(strstr(h[0].snippet, "[zebra]"));
    store_archive_hits_free(h, n);
    assert_int_equal(store_archive_search(d.sa, &zq, &all, 0, 2, 0, &h, &n, &total, &err), STORE_OK);
    assert_null(h[0].snippet);
    store_archive_hits_free(h, n);
    archive_query_clear(&zq);

    /* each: ids newest first, bounded, stoppable */
    struct store_archive_query fq;
    assert_int_equal(archive_query_parse("from:user3@beta.test", &fq, &err), 0);
    struct ids c = { .n = 0 };
    assert_int_equal(store_archive_each(d.sa, &fq, NULL, 100, collect, &c, &err), STORE_OK);
    assert_int_equal(c.n, 10);
    for (size_t i = 1; i < c.n; i++)
        assert_true(c.id[i - 1] > c.id[i]);
    c.n = 0;
    assert_int_equal(store_archive_each(d.sa, &fq, NULL, 4, collect, &c, &err), STORE_OK);
    assert_int_equal(c.n, 4);
    c.n = 0;
    c.stop_at = 2;
    assert_int_equal(store_archive_each(d.sa, &fq, NULL, 100, collect, &c, &err), STORE_OK);
    assert_int_equal(c.n, 2);
    archive_query_clear(&fq);
    db_close(&d);
}

/* FTS5 syntax handed straight to the store: every word is a quoted phrase */
static void test_fts_injection(void **state)
{
    (void)state;
    struct db d;
    db_open(&d);
    corpus_load(&d);
    static const struct { const char *text; size_t want; } inj[] = {
        { "NEAR(zebra", 0 },            /* the phrase "near zebra" */
        { "zebra*", 24 },               /* not a prefix query */
        { "zeb*", 0 },
        { "*", 300 },                   /* nothing indexable: no condition */
        { "-zebra", 24 },
        { "\"zebra\" OR \"brown\"", 0 }, /* one phrase, not an OR */
        { "zebra OR brown", 0 },
        { "{subject}:zebra", 0 },       /* "subject zebra" as a phrase */
        { "subject:Report", 0 },
        { "zebra AND", 0 },
        { "^zebra", 24 },
        { "\"", 300 },
        { "body:zebra", 0 },
    };
    for (size_t i = 0; i < sizeof inj / sizeof *inj; i++) {
        char *t = (char *)inj[i].text;
        struct store_archive_query q = { .text = &t, .n_text = 1 };
        struct store_archive_hit *h;
        size_t n, total;
        struct error err = {0};
        if (store_archive_search(d.sa, &q, NULL, 0, 1, 0, &h, &n, &total, &err) != STORE_OK)
            fail_msg("text \"%s\": %s", inj[i].text, err.msg);
        if (total != inj[i].want)
            fail_msg("text \"%s\": %zu, want %zu", inj[i].text, total, inj[i].want);
        store_archive_hits_free(h, n);
        struct store_archive_query sq = { .subject = &t, .n_subject = 1 };
        if (store_archive_search(d.sa, &sq, NULL, 0, 1, 0, &h, &n, &total, &err) != STORE_OK)
            fail_msg("subject \"%s\": %s", inj[i].text, err.msg);
        store_archive_hits_free(h, n);
    }
    /* through the parser: never an error from the store */
    static const char *const parsed[] = { "NEAR(zebra brown)", "* - + ^", "zebra -brown",
                                          "(a OR b)", "x'y", "a:b:c" };
    for (size_t i = 0; i < sizeof parsed / sizeof *parsed; i++) {
        struct store_archive_query q;
        struct error err = {0};
        if (archive_query_parse(parsed[i], &q, &err) < 0)
            continue;      /* refused by the parser is fine too */
        struct store_archive_hit *h;
        size_t n, total;
        if (store_archive_search(d.sa, &q, NULL, 0, 1, 0, &h, &n, &total, &err) != STORE_OK)
            fail_msg("\"%s\": %s", parsed[i], err.msg);
        store_archive_hits_free(h, n);
        archive_query_clear(&q);
    }
    db_close(&d);
}

static void test_dedup_get(void **state)
{
    (void)state;
    struct db d;
    db_open(&d);
    struct error err = {0};
    struct gen a, b, c;
    gen_item(&a, 5);
    gen_item(&b, 5);                 /* the same message ... */
    str_copy(b.qid, sizeof b.qid, "Q-second");
    b.it.received = BASE + 50 * DAY;
    b.it.direction = "outbound";
    b.it.sender = "relay@corp.example";
    b.it.journal = NULL;
    struct store_archive_rcpt jr[2] = {
        { .addr = "team@corp.example", .kind = "to" },
        { .addr = "bob@corp.example", .kind = "to", .expanded = "team@corp.example",
          .forwarded = "robert@old.example" },
    };
    b.it.rcpts = jr;
    b.it.n_rcpts = 2;
    gen_item(&c, 5);                 /* same hash, another Message-ID: another message */
    str_copy(c.qid, sizeof c.qid, "Q-third");
    str_copy(c.mid, sizeof c.mid, "other@x.example");

    struct store_archive_item items[3] = { a.it, b.it, c.it };
    enum store_archive_outcome out[3];
    int64_t id[3];
    assert_int_equal(store_archive_ingest(d.sa, items, 3, out, id, &err), STORE_OK);
    assert_int_equal(out[0], STORE_ARCHIVE_NEW);
    assert_int_equal(out[1], STORE_ARCHIVE_DUPLICATE);
    assert_int_equal(out[2], STORE_ARCHIVE_NEW);
    assert_int_equal(id[0], id[1]);
    assert_true(id[2] != id[0]);

    /* again: idempotent by qid, in a batch with a new one */
    struct gen e;
    gen_item(&e, 6);
    struct store_archive_item again[3] = { a.it, b.it, e.it };
    int64_t id2[3];
    assert_int_equal(store_archive_ingest(d.sa, again, 3, out, id2, &err), STORE_OK);
    assert_int_equal(out[0], STORE_ARCHIVE_ALREADY);
    assert_int_equal(out[1], STORE_ARCHIVE_ALREADY);
    assert_int_equal(out[2], STORE_ARCHIVE_NEW);
    assert_int_equal(id2[0], id[0]);

    struct store_archive_message m;
    assert_int_equal(store_archive_get(d.sa, id[0], NULL, true, &m, &err), STORE_OK);
    assert_string_equal(m.message_id, "m5@x.example");
    assert_string_equal(m.subject, "Report 5 quarterly budget");
    assert_string_equal(m.from, "user5@beta.test");
    assert_int_equal(m.received, BASE + 5 * DAY);
    assert_int_equal(m.date, BASE + 5 * DAY - 60);
    assert_int_equal(m.size, 1005);
    assert_int_equal(m.n_arrivals, 2);
    assert_string_equal(m.arrivals[0].qid, "Q00005");
    assert_string_equal(m.arrivals[1].qid, "Q-second");
    assert_string_equal(m.arrivals[1].direction, "outbound");
    assert_int_equal(m.arrivals[1].n_rcpts, 2);
    assert_string_equal(m.arrivals[1].rcpts[1].expanded, "team@corp.example");
    assert_string_equal(m.arrivals[1].rcpts[1].forwarded, "robert@old.example");
    assert_null(m.arrivals[1].rcpts[0].expanded);
    assert_null(m.arrivals[0].journal);
    assert_int_equal(m.body_len, strlen("compressed-5"));
    assert_memory_equal(m.body, "compressed-5", m.body_len);
    assert_string_equal(m.codec, "zstd");
    assert_int_equal(m.n_attachments, 0);
    store_archive_message_clear(&m);

    /* the second arrival's addresses search too, and scope the owner */
    assert_int_equal(count(&d, "to:bob@corp.example", NULL), 1);
    assert_int_equal(count(&d, "to:team@corp.example", NULL), 1);
    assert_int_equal(count(&d, "to:robert@old.example", NULL), 1);
    assert_int_equal(count(&d, "from:relay@corp.example", NULL), 1);
    /* with text too (the address is then also an index phrase) */
    assert_int_equal(count(&d, "to:bob@corp.example quarterly", NULL), 1);
    assert_int_equal(count(&d, "to:team@corp.example quarterly", NULL), 1);
    assert_int_equal(count(&d, "to:robert@old.example \"quarterly budget\"", NULL), 1);
    assert_int_equal(count(&d, "from:relay@corp.example subject:report", NULL), 1);
    assert_int_equal(count(&d, "from:corp.example quarterly", NULL), 1);
    assert_int_equal(count(&d, "to:bob@corp.example zebra", NULL), 0);
    assert_int_equal(count(&d, "quarterly", "bob@corp.example"), 1);
    assert_int_equal(count(&d, "quarterly", "robert@old.example"), 1);
    struct store_archive_scope bob = { .owner = "bob@corp.example" };
    assert_int_equal(store_archive_get(d.sa, id[0], &bob, false, &m, &err), STORE_OK);
    assert_null(m.body);
    store_archive_message_clear(&m);
    assert_int_equal(store_archive_get(d.sa, id[2], &bob, false, &m, &err), STORE_NOT_FOUND);
    assert_int_equal(store_archive_get(d.sa, 999999, NULL, false, &m, &err), STORE_NOT_FOUND);

    /* attachments and their names come back */
    assert_int_equal(store_archive_get(d.sa, id2[2], NULL, false, &m, &err), STORE_OK);
    assert_int_equal(m.n_attachments, 1);
    assert_string_equal(m.attachments[0], "invoice6.pdf");
    store_archive_message_clear(&m);

    /* a bad item: nothing of the batch is written */
    struct gen f;
    gen_item(&f, 7);
    f.it.hash = NULL;
    struct store_archive_item bad[2] = { e.it, f.it };
    str_copy(e.qid, sizeof e.qid, "Q-new");
    bad[0] = e.it;
    assert_int_equal(store_archive_ingest(d.sa, bad, 2, out, NULL, &err), STORE_ERR);
    assert_string_equal(err.field, "hash");
    struct store_archive_stats st;
    assert_int_equal(store_archive_stats(d.sa, &st, &err), STORE_OK);
    assert_int_equal(st.messages, 3);
    assert_int_equal(st.arrivals, 4);
    assert_int_equal(st.journal_reports, 0);
    db_close(&d);
}

/* rows_left - rows of table that belong to no message */
static long long rows(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *s;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    long long n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

static void test_purge_stats(void **state)
{
    (void)state;
    struct db d;
    db_open(&d);
    corpus_load(&d);
    struct error err = {0};
    struct store_archive_stats st;
    assert_int_equal(store_archive_stats(d.sa, &st, &err), STORE_OK);
    assert_int_equal(st.messages, 300);
    assert_int_equal(st.arrivals, 300);
    assert_int_equal(st.journal_reports, 28);
    assert_int_equal(st.journal_malformed, 0);
    assert_int_equal(st.oldest, BASE);
    assert_int_equal(st.bytes, 300 * 1000 + 299 * 300 / 2);
    assert_true(st.stored_bytes > 300 * 11 && st.stored_bytes < 300 * 15);

    /* message 5 arrives again late: its latest arrival keeps it */
    struct gen late;
    gen_item(&late, 5);
    str_copy(late.qid, sizeof late.qid, "Q-late");
    late.it.received = BASE + 200 * DAY;
    assert_int_equal(store_archive_ingest(d.sa, &late.it, 1, NULL, NULL, &err), STORE_OK);

    /* cutoff day 100, user3@beta.test held (23, 53, 83): 100 - 3 - 1 = 96, batches of 40 */
    const char *held[] = { "User3@Beta.Test", "nobody@else.example" };
    size_t purged, sum = 0, calls = 0;
    do {
        assert_int_equal(store_archive_purge(d.sa, BASE + 100 * DAY, held, 2, 40, &purged, &err),
                         STORE_OK);
        sum += purged;
        calls++;
    } while (purged == 40);
    assert_int_equal(sum, 96);
    assert_int_equal(calls, 3);
    assert_int_equal(store_archive_stats(d.sa, &st, &err), STORE_OK);
    assert_int_equal(st.messages, 204);
    assert_int_equal(st.arrivals, 205);
    assert_int_equal(st.oldest, BASE + 5 * DAY);
    /* the kept counters agree with the rows */
    assert_int_equal(st.bytes, rows(d.path, "SELECT sum(size) FROM messages"));
    assert_int_equal(st.stored_bytes, rows(d.path, "SELECT sum(length(body)) FROM bodies"));
    assert_int_equal(st.journal_reports,
                     rows(d.path, "SELECT count(*) FROM arrivals WHERE journal = 'report'"));
    assert_int_equal(count(&d, "from:user3@beta.test", NULL), 10);
    assert_int_equal(count(&d, "zebra", NULL), 24 - 8);         /* 0, 13, ..., 91 gone */
    assert_int_equal(count(&d, "before:2024-04-10", NULL), 4);  /* 5, 23, 53, 83 */
    /* every table lost the rows of the purged messages */
    assert_int_equal(rows(d.path, "SELECT count(*) FROM fts"), 204);
    assert_int_equal(rows(d.path, "SELECT count(*) FROM bodies"), 204);
    assert_int_equal(rows(d.path, "SELECT count(*) FROM addresses WHERE message NOT IN "
                                  "(SELECT id FROM messages)"), 0);
    assert_int_equal(rows(d.path, "SELECT count(*) FROM arrival_rcpts WHERE arrival NOT IN "
                                  "(SELECT id FROM arrivals)"), 0);
    /* nothing held: everything older than day 300 goes */
    do {
        assert_int_equal(store_archive_purge(d.sa, BASE + 300 * DAY, NULL, 0, 1000, &purged, &err),
                         STORE_OK);
    } while (purged == 1000);
    assert_int_equal(store_archive_stats(d.sa, &st, &err), STORE_OK);
    assert_int_equal(st.messages, 0);
    assert_int_equal(st.oldest, 0);
    assert_int_equal(rows(d.path, "SELECT count(*) FROM addresses"), 0);
    db_close(&d);
}

/* received_order - page through q 7 at a time; the received times must be
 * want[0..n) exactly (newest first) */
static void received_order(struct db *d, const char *qs, const int64_t *want, size_t n)
{
    struct store_archive_query q;
    struct error err = {0};
    assert_int_equal(archive_query_parse(qs, &q, &err), 0);
    size_t got = 0;
    for (size_t off = 0; off < n + 7; off += 7) {
        struct store_archive_hit *h;
        size_t nh, total;
        assert_int_equal(store_archive_search(d->sa, &q, NULL, off, 7, 0, &h, &nh, &total, &err),
                         STORE_OK);
        assert_int_equal(total, n);
        for (size_t i = 0; i < nh; i++, got++) {
            if (got >= n || h[i].received != want[got])
                fail_msg("\"%s\": hit %zu received %lld, want %lld", qs, got,
                         (long long)h[i].received, got < n ? (long long)want[got] : -1LL);
        }
        store_archive_hits_free(h, nh);
    }
    assert_int_equal(got, n);
    archive_query_clear(&q);
}

/* ids out of received order (a spool recovered after a restart, parallel
 * sessions): text searches, which read the index by id, still page in
 * exact received order */
static void test_out_of_order(void **state)
{
    (void)state;
    struct db d;
    db_open(&d);
    struct error err = {0};
    struct gen *g = xcalloc(CORPUS, sizeof *g);
    struct store_archive_item items[CORPUS];
    for (int k = 0; k < CORPUS; k++) {
        int i = (int)(((long)k * 7919) % CORPUS);      /* 7919 is prime: a permutation */
        gen_item(&g[k], i);
        items[k] = g[k].it;
    }
    for (int k = 0; k < CORPUS; k += 50)
        assert_int_equal(store_archive_ingest(d.sa, &items[k], 50, NULL, NULL, &err), STORE_OK);
    int64_t want[CORPUS];
    size_t n = 0;
    for (int i = CORPUS - 1; i >= 0; i--)
        want[n++] = BASE + (int64_t)i * DAY;
    received_order(&d, "common", want, n);
    received_order(&d, "", want, n);
    n = 0;
    for (int i = CORPUS - 1; i >= 0; i--)
        if (i % 13 == 0)
            want[n++] = BASE + (int64_t)i * DAY;
    received_order(&d, "zebra", want, n);

    /* message 299 (the newest) arrives again, earlier than everything */
    struct gen early;
    gen_item(&early, 299);
    str_copy(early.qid, sizeof early.qid, "Q-early");
    early.it.received = BASE - 10 * DAY;
    enum store_archive_outcome o;
    assert_int_equal(store_archive_ingest(d.sa, &early.it, 1, &o, NULL, &err), STORE_OK);
    assert_int_equal(o, STORE_ARCHIVE_DUPLICATE);
    n = 0;
    for (int i = CORPUS - 2; i >= 0; i--)
        want[n++] = BASE + (int64_t)i * DAY;
    want[n++] = BASE - 10 * DAY;
    received_order(&d, "common", want, n);
    received_order(&d, "", want, n);
    free(g);
    db_close(&d);
}

/* the plans: address and date conditions go through indexes, never a
 * scan of the messages or addresses tables */
static void test_plans(void **state)
{
    (void)state;
    struct db d;
    db_open(&d);
    corpus_load(&d);
    static const struct { const char *q; const char *owner; const char *want; } plans[] = {
        { "from:user3@beta.test", NULL, "USING PRIMARY KEY (addr=? AND role=?)" },
        { "to:r3@corp.example", NULL, "USING PRIMARY KEY (addr=? AND role=?)" },
        { "from:beta.test", NULL, "USING COVERING INDEX addresses_rdomain (rdomain>? AND rdomain<?)" },
        { "after:2024-02-01 before:2024-03-01", NULL, "messages_received (received>? AND received<?)" },
        { "after:2024-02-01", NULL, "messages_received (received>?)" },
        { "", "user3@beta.test", "USING PRIMARY KEY (addr=?)" },
        { "zebra", NULL, "VIRTUAL TABLE INDEX" },
    };
    for (size_t i = 0; i < sizeof plans / sizeof *plans; i++) {
        struct store_archive_query q;
        struct error err = {0};
        assert_int_equal(archive_query_parse(plans[i].q, &q, &err), 0);
        struct store_archive_scope scope = { .owner = plans[i].owner };
        char *plan;
        assert_int_equal(store_archive_explain(d.sa, &q, &scope, &plan, &err), STORE_OK);
        if (strstr(plan, plans[i].want) == NULL || strstr(plan, "SCAN m\n") != NULL ||
            strstr(plan, "SCAN addresses") != NULL)
            fail_msg("\"%s\": plan\n%swant \"%s\"", plans[i].q, plan, plans[i].want);
        free(plan);
        archive_query_clear(&q);
    }
    /* dense: messages in received order, one probe each, no sort */
    store_archive_dense_min = 1;
    static const char *const dense_q[] = { "to:corp.example", "from:alpha.example after:2024-03-01" };
    for (size_t i = 0; i < 2; i++) {
        struct store_archive_query q;
        struct error err = {0};
        assert_int_equal(archive_query_parse(dense_q[i], &q, &err), 0);
        char *plan;
        assert_int_equal(store_archive_explain(d.sa, &q, NULL, &plan, &err), STORE_OK);
        if (strstr(plan, "messages_received") == NULL || strstr(plan, "TEMP B-TREE") != NULL)
            fail_msg("dense \"%s\": plan\n%s", dense_q[i], plan);
        free(plan);
        archive_query_clear(&q);
    }
    store_archive_dense_min = 20000;
    db_close(&d);
}

/* a database from a newer Moat is refused, not downgraded; reopening is idempotent */
static void test_open_versions(void **state)
{
    (void)state;
    struct db d;
    db_open(&d);
    store_archive_close(d.sa);
    struct error err = {0};
    d.sa = store_archive_open(d.path, &err);      /* already migrated: opens as is */
    assert_non_null(d.sa);
    store_archive_close(d.sa);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(d.path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    d.sa = store_archive_open(d.path, &err);
    assert_null(d.sa);
    assert_non_null(strstr(err.msg, "schema version 99 is newer"));
    d.sa = NULL;
    db_close(&d);
}

/* --- the parser --- */

static void test_parse(void **state)
{
    (void)state;
    struct store_archive_query q;
    struct error err = {0};
    assert_int_equal(archive_query_parse("  From:Alice@Example.COM to:example.org subject:\"Q3 "
                                         "report\" SUBJECT:budget after:2026-01-01 "
                                         "before:2026-02-01T12:00:00Z has:Attachment hello "
                                         "\"exact phrase\" after:2025-01-01 ", &q, &err), 0);
    assert_int_equal(q.n_from, 1);
    assert_string_equal(q.from[0], "alice@example.com");
    assert_int_equal(q.n_to, 1);
    assert_string_equal(q.to[0], "example.org");
    assert_int_equal(q.n_subject, 2);
    assert_string_equal(q.subject[0], "Q3 report");
    assert_string_equal(q.subject[1], "budget");
    assert_int_equal(q.after, 1767225600);          /* the later of the two after: */
    assert_int_equal(q.before, 1769947200);
    assert_true(q.has_attachment);
    assert_int_equal(q.n_text, 2);
    assert_string_equal(q.text[0], "hello");
    assert_string_equal(q.text[1], "exact phrase");
    archive_query_clear(&q);

    assert_int_equal(archive_query_parse("", &q, &err), 0);
    assert_int_equal(q.n_text + q.n_from + q.n_to + q.n_subject, 0);
    assert_int_equal(archive_query_parse("NEAR(a* -b) ^c {x}", &q, &err), 0);
    assert_int_equal(q.n_text, 4);
    assert_string_equal(q.text[0], "NEAR a");
    assert_string_equal(q.text[1], "-b");
    assert_string_equal(q.text[2], "c");
    assert_string_equal(q.text[3], "x");
    archive_query_clear(&q);
    assert_int_equal(archive_query_parse("* ( ) \"\" ...", &q, &err), 0);
    assert_int_equal(q.n_text, 0);
    archive_query_clear(&q);

    static const struct { const char *q; const char *msg; } bad[] = {
        { "foo:bar", "unknown operator \"foo:\"" },
        { "hello Re:x", "unknown operator \"re:\"" },
        { "before:2026-13-01", "bad date \"2026-13-01\" in before:" },
        { "after:2026-02-30", "bad date \"2026-02-30\" in after:" },
        { "after:2025-02-29", "bad date \"2025-02-29\" in after:" },
        { "after:2026-1-1", "bad date \"2026-1-1\" in after:" },
        { "before:2026-01-01T24:00:00Z", "bad date" },
        { "before:2026-01-01T10:00:00", "bad date" },
        { "from:a@@b.example", "bad address \"a@@b.example\" in from:" },
        { "to:a b", "bad address \"a\" in to:" },
        { "from:-x.example", "bad address" },
        { "To:<a@b.example>", "bad address \"<a@b.example>\" in to:" },
        { "has:attachments", "unknown value \"attachments\" in has:" },
        { "subject:", "empty subject: in \"subject:\"" },
        { "from:", "empty from: in" },
        { "hello \"unterminated", "unterminated quote in \"?unterminated\"" },
        { "subject:\"open", "unterminated quote in \"subject:?open\"" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&err, 0, sizeof err);
        if (archive_query_parse(bad[i].q, &q, &err) == 0)
            fail_msg("\"%s\" parsed", bad[i].q);
        if (strstr(err.msg, bad[i].msg) == NULL)
            fail_msg("\"%s\": \"%s\", want \"%s\"", bad[i].q, err.msg, bad[i].msg);
        assert_string_equal(err.field, "q");
        assert_int_equal(q.n_from + q.n_to + q.n_text + q.n_subject, 0);
    }

    /* bounds: terms, length, UTF-8 */
    char many[ARCHIVE_QUERY_MAX_LEN + 2];
    size_t len = 0;
    for (int i = 0; i < ARCHIVE_QUERY_MAX_TERMS; i++)
        len += (size_t)snprintf(many + len, sizeof many - len, "w%d ", i);
    assert_int_equal(archive_query_parse(many, &q, &err), 0);
    assert_int_equal(q.n_text, ARCHIVE_QUERY_MAX_TERMS);
    archive_query_clear(&q);
    snprintf(many + len, sizeof many - len, "extra");
    assert_int_equal(archive_query_parse(many, &q, &err), -1);
    assert_non_null(strstr(err.msg, "more than 32 terms at \"extra\""));
    memset(many, 'a', ARCHIVE_QUERY_MAX_LEN + 1);
    many[ARCHIVE_QUERY_MAX_LEN + 1] = '\0';
    assert_int_equal(archive_query_parse(many, &q, &err), -1);
    assert_non_null(strstr(err.msg, "longer than 2048"));
    many[ARCHIVE_QUERY_MAX_LEN] = '\0';
    assert_int_equal(archive_query_parse(many, &q, &err), 0);
    archive_query_clear(&q);
    assert_int_equal(archive_query_parse("caf\xc3\xa9 \xff", &q, &err), -1);
    assert_non_null(strstr(err.msg, "UTF-8"));
    assert_int_equal(archive_query_parse("caf\xc3\xa9", &q, &err), 0);
    assert_string_equal(q.text[0], "caf\xc3\xa9");
    archive_query_clear(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_queries),
        cmocka_unit_test(test_owner_paging_snippets),
        cmocka_unit_test(test_fts_injection),
        cmocka_unit_test(test_dedup_get),
        cmocka_unit_test(test_purge_stats),
        cmocka_unit_test(test_plans),
        cmocka_unit_test(test_out_of_order),
        cmocka_unit_test(test_open_versions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
