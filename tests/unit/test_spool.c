/*
 * test_spool.c - the durable spool: record encoding, commit callbacks,
 * recovery (committed kept, uncommitted dropped, torn tails set aside),
 * recipient states and DONE across reopen, segment roll-over and removal,
 * compaction.  Each test works in its own temporary directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <event2/event.h>
#include "spool/spool.h"
#include "spool/spool_record.h"

struct fixture {
    char dir[64];
    struct event_base *base;
};

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof(*f));
    str_copy(f->dir, sizeof(f->dir), "/tmp/moat-test-spool-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->base = event_base_new();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    xsnprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", f->dir);
    event_base_free(f->base);
    free(f);
    return 0;
}

struct commit_result {
    int calls;
    int status;
    char qid[SPOOL_QID_LEN + 1];
};

static void on_commit(void *arg, const char *qid, int status)
{
    struct commit_result *r = arg;
    r->calls++;
    r->status = status;
    str_copy(r->qid, sizeof(r->qid), qid);
}

/* run - turn the loop until *flag reaches want (bounded) */
static void run(struct event_base *base, int *flag, int want)
{
    for (int i = 0; i < 2000 && *flag < want; i++) {
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        if (*flag < want)
            usleep(1000);
    }
    assert_true(*flag >= want);
}

static struct spool *open_spool(struct fixture *f, uint64_t segsize)
{
    struct spool_options o = { .segment_size = segsize };
    struct error err = { 0 };
    struct spool *sp = spool_open(f->dir, &o, f->base, &err);
    if (!sp)
        fprintf(stderr, "spool_open: %s\n", err.msg);
    assert_non_null(sp);
    return sp;
}

static void make_env(struct spool_envelope *env, struct spool_rcpt *rc, size_t n)
{
    memset(env, 0, sizeof(*env));
    for (size_t i = 0; i < n; i++) {
        memset(&rc[i], 0, sizeof(rc[i]));
        rc[i].addr = i == 0 ? "alice@example.com" : "bob@example.com";
    }
    env->sender = "sender@ext.test";
    env->rcpts = rc;
    env->n_rcpts = n;
    env->client_addr = "127.0.0.1";
    env->helo = "client.ext.test";
    env->received_ms = 1700000000000;
}

/* commit_msg - one message of size octets ('a'..'z' pattern); returns its qid */
static void commit_msg(struct fixture *f, struct spool *sp, size_t size, char *qid_out)
{
    struct spool_envelope env;
    struct spool_rcpt rc[2];
    make_env(&env, rc, 2);
    struct spool_txn *t = spool_txn_begin(sp);
    char block[4096];
    for (size_t i = 0; i < sizeof(block); i++)
        block[i] = (char)('a' + i % 26);
    size_t left = size;
    while (left) {
        size_t n = left < sizeof(block) ? left : sizeof(block);
        assert_int_equal(spool_txn_write(t, block, n), 0);
        left -= n;
    }
    assert_int_equal(spool_txn_size(t), size);
    struct commit_result r = { 0 };
    spool_txn_commit(t, &env, on_commit, &r);
    assert_int_equal(r.calls, 0);   /* never from inside commit */
    run(f->base, &r.calls, 1);
    assert_int_equal(r.status, 0);
    assert_int_equal(strlen(r.qid), SPOOL_QID_LEN);
    if (qid_out)
        memcpy(qid_out, r.qid, SPOOL_QID_LEN + 1);
}

static void check_data(struct spool *sp, struct spool_msg *m, size_t size)
{
    char buf[5000];
    uint64_t off = 0;
    for (;;) {
        ssize_t n = spool_msg_read(sp, m, off, buf, sizeof(buf));
        assert_true(n >= 0);
        if (n == 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            assert_int_equal(buf[i], (char)('a' + ((off + (uint64_t)i) % 4096) % 26));
        off += (uint64_t)n;
    }
    assert_int_equal(off, size);
}

struct seen {
    int n;
    char qids[16][SPOOL_QID_LEN + 1];
};

static void on_msg(void *arg, struct spool_msg *m)
{
    struct seen *s = arg;
    if (s->n < 16)
        str_copy(s->qids[s->n], sizeof(s->qids[0]), spool_msg_id(m));
    s->n++;
}

static int count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (de->d_name[0] != '.' && (!suffix || str_has_suffix_ci(de->d_name, suffix)))
            n++;
    closedir(d);
    return n;
}

/* --- tests --- */

static void test_record_roundtrip(void **state)
{
    struct spool_envelope env;
    struct spool_rcpt rc[2];
    make_env(&env, rc, 2);
    rc[1].orcpt = "rfc822;bob@example.com";
    rc[1].notify = SPOOL_NOTIFY_FAILURE | SPOOL_NOTIFY_DELAY;
    rc[1].diag = "450 4.2.0 busy";
    env.envid = "ENV1";
    env.ret = SPOOL_RET_HDRS;
    env.flags = SPOOL_F_8BITMIME;
    env.size = 30;
    struct spool_extent ext[2] = { { .seg = 3, .off = 10, .len = 10 }, { .seg = 4, .off = 20, .len = 20 } };
    struct buf b;
    buf_init(&b);
    spool_env_encode(&b, &env, ext, 2);
    struct spool_envelope out;
    struct spool_extent *oe;
    size_t ne;
    assert_int_equal(spool_env_decode((const uint8_t *)b.data, b.len, &out, &oe, &ne), 0);
    assert_string_equal(out.sender, "sender@ext.test");
    assert_string_equal(out.envid, "ENV1");
    assert_int_equal(out.ret, SPOOL_RET_HDRS);
    assert_int_equal(out.n_rcpts, 2);
    assert_string_equal(out.rcpts[1].orcpt, "rfc822;bob@example.com");
    assert_string_equal(out.rcpts[1].diag, "450 4.2.0 busy");
    assert_null(out.rcpts[0].diag);
    assert_int_equal(ne, 2);
    assert_int_equal(oe[1].off, 20);
    assert_null(out.prefix);
    assert_null(out.hold);
    spool_env_clear(&out);
    free(oe);
    /* every truncation is refused */
    for (size_t cut = 0; cut < b.len; cut++)
        assert_int_equal(spool_env_decode((const uint8_t *)b.data, cut, &out, &oe, &ne), -1);

    /* screening results travel with the envelope */
    struct buf b2;
    buf_init(&b2);
    env.prefix = "Authentication-Results: mx.example.com; spf=pass\r\n";
    env.hold = "dmarc: p=quarantine";
    spool_env_encode(&b2, &env, ext, 2);
    assert_int_equal(spool_env_decode((const uint8_t *)b2.data, b2.len, &out, &oe, &ne), 0);
    assert_string_equal(out.prefix, env.prefix);
    assert_string_equal(out.hold, "dmarc: p=quarantine");
    spool_env_clear(&out);
    free(oe);
    /* a version 1 envelope (before prefix and hold) still reads: drop the two
     * absent-markers and set the version byte back */
    env.prefix = env.hold = NULL;
    buf_reset(&b2);
    spool_env_encode(&b2, &env, ext, 2);
    size_t at = 1 + 4 + strlen(env.sender) + 4 + strlen(env.client_addr) + 4 + strlen(env.helo) +
                1 + 4 + strlen(env.envid) + 1 + 4 + 8 + 8 + 1;
    assert_int_equal(b2.data[at], 0);
    assert_int_equal(b2.data[at + 1], 0);
    memmove(b2.data + at, b2.data + at + 2, b2.len - at - 2);
    b2.len -= 2;
    /* and the version 3 forwarding fields at the end: two absent-markers per recipient */
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(b2.data[b2.len - 1 - i], 0);
    b2.len -= 4;
    b2.data[0] = 1;
    assert_int_equal(spool_env_decode((const uint8_t *)b2.data, b2.len, &out, &oe, &ne), 0);
    assert_null(out.prefix);
    assert_int_equal(out.n_rcpts, 2);
    spool_env_clear(&out);
    free(oe);
    buf_free(&b2);

    /* forwarding (version 3): per-recipient forwarded-for and sender */
    rc[1].fwd_for = "alice@example.com";
    rc[1].sender = "SRS0=abcdef=aa=ext.test=sender@example.com";
    buf_reset(&b2);
    spool_env_encode(&b2, &env, ext, 2);
    assert_int_equal(spool_env_decode((const uint8_t *)b2.data, b2.len, &out, &oe, &ne), 0);
    assert_null(out.rcpts[0].fwd_for);
    assert_null(out.rcpts[0].sender);
    assert_string_equal(out.rcpts[1].fwd_for, "alice@example.com");
    assert_string_equal(out.rcpts[1].sender, rc[1].sender);
    spool_env_clear(&out);
    free(oe);
    for (size_t cut = 0; cut < b2.len; cut++)
        assert_int_equal(spool_env_decode((const uint8_t *)b2.data, cut, &out, &oe, &ne), -1);
    rc[1].fwd_for = rc[1].sender = NULL;
    buf_free(&b2);

    /* a record validates; a flipped byte or a short read does not */
    uint8_t rec[128];
    const char *qid = "0123456789ABCDEF";
    const void *parts[2] = { qid, "hello" };
    size_t lens[2] = { 16, 5 };
    spool_rec_header(rec, SPOOL_REC_DATA, parts, lens, 2);
    memcpy(rec + SPOOL_REC_HDR, qid, 16);
    memcpy(rec + SPOOL_REC_HDR + 16, "hello", 5);
    spool_rec_trailer(rec + SPOOL_REC_HDR + 21);
    size_t total;
    int type;
    const uint8_t *pl;
    uint32_t plen;
    assert_int_equal(spool_rec_check(rec, SPOOL_REC_HDR + 25, &type, &pl, &plen, &total), 1);
    assert_int_equal(type, SPOOL_REC_DATA);
    assert_int_equal(plen, 21);
    assert_int_equal(spool_rec_check(rec, SPOOL_REC_HDR + 24, &type, &pl, &plen, &total), 0);
    rec[SPOOL_REC_HDR + 18] ^= 1;
    assert_int_equal(spool_rec_check(rec, SPOOL_REC_HDR + 25, &type, &pl, &plen, &total), -1);
    buf_free(&b);

    uint64_t v;
    char q[17];
    spool_qid_format(q, 0xABCDEF0123456789ull);
    assert_string_equal(q, "ABCDEF0123456789");
    assert_int_equal(spool_qid_parse(q, &v), 0);
    assert_true(v == 0xABCDEF0123456789ull);
    assert_int_equal(spool_qid_parse("abcdef0123456789", &v), -1);
}

static void test_commit_and_read(void **state)
{
    struct fixture *f = *state;
    struct spool *sp = open_spool(f, 0);
    struct seen s = { 0 };
    spool_set_listener(sp, on_msg, &s);
    char q1[17], q2[17];
    commit_msg(f, sp, 1000, q1);
    commit_msg(f, sp, 700000, q2);   /* several data chunks */
    assert_int_equal(s.n, 2);
    assert_string_equal(s.qids[0], q1);
    assert_true(strcmp(q1, q2) < 0);
    struct spool_msg *m = spool_msg_find(sp, q2);
    assert_non_null(m);
    assert_int_equal(spool_msg_envelope(m)->size, 700000);
    assert_string_equal(spool_msg_envelope(m)->sender, "sender@ext.test");
    check_data(sp, m, 700000);
    check_data(sp, spool_msg_find(sp, q1), 1000);
    struct spool_stats st;
    spool_get_stats(sp, &st);
    assert_int_equal(st.messages, 2);
    assert_int_equal(st.recipients_pending, 4);
    assert_true(st.commits >= 1);
    spool_close(sp);
}

static void test_recovery(void **state)
{
    struct fixture *f = *state;
    struct spool *sp = open_spool(f, 0);
    char q1[17];
    commit_msg(f, sp, 300000, q1);
    /* an uncommitted transaction with a chunk on disk, and an aborted one */
    struct spool_txn *t = spool_txn_begin(sp);
    char big[SPOOL_CHUNK_MAX + 10];
    memset(big, 'x', sizeof(big));
    assert_int_equal(spool_txn_write(t, big, sizeof(big)), 0);
    struct spool_txn *t2 = spool_txn_begin(sp);
    assert_int_equal(spool_txn_write(t2, big, sizeof(big)), 0);
    spool_txn_abort(t2);
    /* t's chunk is on disk without a commit record, as after a crash mid-DATA */
    spool_txn_abort(t);
    spool_close(sp);

    sp = open_spool(f, 0);
    struct seen s = { 0 };
    spool_set_listener(sp, on_msg, &s);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.qids[0], q1);
    check_data(sp, spool_msg_find(sp, q1), 300000);
    /* new ids stay above recovered ones */
    char q2[17];
    commit_msg(f, sp, 10, q2);
    assert_true(strcmp(q2, q1) > 0);
    spool_close(sp);
}

static void corrupt_last_segment(struct fixture *f, int how)
{
    char path[128];
    int last = 0;
    DIR *d = opendir(f->dir);
    struct dirent *de;
    while ((de = readdir(d)))
        if (str_has_suffix_ci(de->d_name, ".seg") && atoi(de->d_name) > last)
            last = atoi(de->d_name);
    closedir(d);
    xsnprintf(path, sizeof(path), "%s/%010d.seg", f->dir, last);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    if (how == 0) {
        assert_int_equal(truncate(path, st.st_size - 7), 0);
    } else {
        int fd = open(path, O_RDWR);
        char c;
        assert_int_equal(pread(fd, &c, 1, st.st_size - 30), 1);
        c ^= 0x40;
        assert_int_equal(pwrite(fd, &c, 1, st.st_size - 30), 1);
        close(fd);
    }
}

static void torn_tail(void **state, int how)
{
    struct fixture *f = *state;
    struct spool *sp = open_spool(f, 0);
    char q1[17], q2[17];
    commit_msg(f, sp, 5000, q1);
    commit_msg(f, sp, 6000, q2);
    spool_close(sp);
    corrupt_last_segment(f, how);

    sp = open_spool(f, 0);
    struct seen s = { 0 };
    spool_set_listener(sp, on_msg, &s);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.qids[0], q1);
    assert_null(spool_msg_find(sp, q2));
    struct spool_stats st;
    spool_get_stats(sp, &st);
    assert_int_equal(st.torn_tails, 1);
    char cdir[128];
    xsnprintf(cdir, sizeof(cdir), "%s/corrupt", f->dir);
    assert_int_equal(count_files(cdir, NULL), 1);
    /* appending after the cut works and survives another reopen */
    char q3[17];
    commit_msg(f, sp, 100, q3);
    spool_close(sp);
    sp = open_spool(f, 0);
    spool_get_stats(sp, &st);
    assert_int_equal(st.torn_tails, 0);
    assert_int_equal(st.messages, 2);
    assert_non_null(spool_msg_find(sp, q3));
    spool_close(sp);
}

static void test_torn_truncated(void **state) { torn_tail(state, 0); }
static void test_torn_flipped(void **state) { torn_tail(state, 1); }

static void test_rcpt_done_survive(void **state)
{
    struct fixture *f = *state;
    struct spool *sp = open_spool(f, 0);
    char q1[17], q2[17];
    commit_msg(f, sp, 100, q1);
    commit_msg(f, sp, 100, q2);
    struct spool_msg *m = spool_msg_find(sp, q1);
    assert_int_equal(spool_msg_set_rcpt(sp, m, 0, SPOOL_RCPT_DELIVERED, "250 2.0.0 ok"), 0);
    assert_int_equal(spool_msg_set_rcpt(sp, m, 1, SPOOL_RCPT_PENDING, "451 4.3.0 later"), 0);
    assert_int_equal(spool_msg_set_warned(sp, m), 0);
    assert_int_equal(spool_msg_done(sp, spool_msg_find(sp, q2)), 0);
    spool_close(sp);

    sp = open_spool(f, 0);
    assert_null(spool_msg_find(sp, q2));
    m = spool_msg_find(sp, q1);
    assert_non_null(m);
    const struct spool_envelope *e = spool_msg_envelope(m);
    assert_int_equal(e->rcpts[0].state, SPOOL_RCPT_DELIVERED);
    assert_string_equal(e->rcpts[0].diag, "250 2.0.0 ok");
    assert_int_equal(e->rcpts[1].state, SPOOL_RCPT_PENDING);
    assert_string_equal(e->rcpts[1].diag, "451 4.3.0 later");
    assert_true(e->warned);
    struct spool_stats st;
    spool_get_stats(sp, &st);
    assert_int_equal(st.recipients_pending, 1);
    spool_close(sp);
}

/* issue 7: a held message stays held across reopen; a release is durable
 * (its callback only after the record is synced) and survives reopen; a
 * release record torn off the tail leaves the message held */
static void test_release(void **state)
{
    struct fixture *f = *state;
    struct spool *sp = open_spool(f, 0);
    struct spool_envelope env;
    struct spool_rcpt rc[1];
    make_env(&env, rc, 1);
    env.hold = "blocked sender (hold)";
    char q[2][SPOOL_QID_LEN + 1];
    for (int i = 0; i < 2; i++) {
        struct commit_result r = { 0 };
        static const char msg[] = "Subject: x\r\n\r\nhi\r\n";
        spool_inject(sp, &env, msg, sizeof msg - 1, on_commit, &r);
        run(f->base, &r.calls, 1);
        assert_int_equal(r.status, 0);
        memcpy(q[i], r.qid, sizeof q[i]);
    }
    spool_close(sp);

    sp = open_spool(f, 0);
    struct spool_msg *m = spool_msg_find(sp, q[0]);
    assert_non_null(m);
    assert_string_equal(spool_msg_envelope(m)->hold, "blocked sender (hold)");
    struct commit_result r = { 0 };
    spool_msg_release(sp, m, on_commit, &r);
    assert_int_equal(r.calls, 0);               /* never from inside the call */
    assert_null(spool_msg_envelope(m)->hold);
    run(f->base, &r.calls, 1);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.qid, q[0]);
    spool_close(sp);

    sp = open_spool(f, 0);
    assert_null(spool_msg_envelope(spool_msg_find(sp, q[0]))->hold);
    assert_non_null(spool_msg_envelope(spool_msg_find(sp, q[1]))->hold);
    /* release the second, then cut its RELEASE record off (a crash before
     * it reached the disk): still held, nothing else lost */
    struct commit_result r2 = { 0 };
    spool_msg_release(sp, spool_msg_find(sp, q[1]), on_commit, &r2);
    run(f->base, &r2.calls, 1);
    spool_close(sp);
    char path[128];
    xsnprintf(path, sizeof path, "%s/0000000001.seg", f->dir);
    struct stat stt;
    assert_int_equal(stat(path, &stt), 0);
    assert_int_equal(truncate(path, stt.st_size - (SPOOL_REC_OVERHEAD + SPOOL_QID_LEN)), 0);
    sp = open_spool(f, 0);
    assert_null(spool_msg_envelope(spool_msg_find(sp, q[0]))->hold);
    assert_non_null(spool_msg_envelope(spool_msg_find(sp, q[1]))->hold);
    spool_close(sp);
}

static void test_segments(void **state)
{
    struct fixture *f = *state;
    struct spool *sp = open_spool(f, 64 * 1024);
    char q[12][17];
    for (int i = 0; i < 12; i++)
        commit_msg(f, sp, 20000, q[i]);
    assert_true(count_files(f->dir, ".seg") >= 4);
    for (int i = 0; i < 12; i++)
        assert_int_equal(spool_msg_done(sp, spool_msg_find(sp, q[i])), 0);
    /* everything but the current segment is gone */
    assert_int_equal(count_files(f->dir, ".seg"), 1);
    spool_close(sp);
    sp = open_spool(f, 64 * 1024);
    struct spool_stats st;
    spool_get_stats(sp, &st);
    assert_int_equal(st.messages, 0);
    spool_close(sp);
}

static void test_compaction(void **state)
{
    struct fixture *f = *state;
    struct spool *sp = open_spool(f, 64 * 1024);
    spool_set_compact_age(sp, 0);
    char keep[17], q[10][17];
    commit_msg(f, sp, 3000, keep);
    spool_msg_set_rcpt(sp, spool_msg_find(sp, keep), 0, SPOOL_RCPT_DELIVERED, "250 ok");
    for (int i = 0; i < 10; i++)
        commit_msg(f, sp, 20000, q[i]);
    int before = count_files(f->dir, ".seg");
    assert_true(before >= 3);
    for (int i = 0; i < 10; i++)
        spool_msg_done(sp, spool_msg_find(sp, q[i]));
    /* the oldest segment pins only "keep": it is rewritten, then removed */
    for (int i = 0; i < 2000 && count_files(f->dir, ".seg") > 1; i++) {
        event_base_loop(f->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        usleep(1000);
    }
    assert_int_equal(count_files(f->dir, ".seg"), 1);
    check_data(sp, spool_msg_find(sp, keep), 3000);
    spool_close(sp);

    sp = open_spool(f, 64 * 1024);
    struct spool_msg *m = spool_msg_find(sp, keep);
    assert_non_null(m);
    check_data(sp, m, 3000);
    assert_int_equal(spool_msg_envelope(m)->rcpts[0].state, SPOOL_RCPT_DELIVERED);
    assert_int_equal(spool_msg_envelope(m)->rcpts[1].state, SPOOL_RCPT_PENDING);
    struct spool_stats st;
    spool_get_stats(sp, &st);
    assert_int_equal(st.messages, 1);
    spool_close(sp);
}

/* --- issue 8: messages wait for the archive --- */

static struct spool *open_spool_archive(struct fixture *f, uint64_t segsize)
{
    struct spool_options o = { .segment_size = segsize, .archive = true };
    struct error err = { 0 };
    struct spool *sp = spool_open(f->dir, &o, f->base, &err);
    if (!sp)
        fprintf(stderr, "spool_open: %s\n", err.msg);
    assert_non_null(sp);
    return sp;
}

struct archived_seen {
    int n;
    struct spool_msg *m[16];
    char qids[16][SPOOL_QID_LEN + 1];
};

static void on_archive(void *arg, struct spool_msg *m)
{
    struct archived_seen *s = arg;
    if (s->n < 16) {
        s->m[s->n] = m;
        str_copy(s->qids[s->n], sizeof(s->qids[0]), spool_msg_id(m));
    }
    s->n++;
}

/* done before archived: out of the live index, data kept, forgotten once archived */
static void test_archive_pinning(void **state)
{
    struct fixture *f = *state;
    struct spool *sp = open_spool_archive(f, 0);
    struct archived_seen seen = { 0 };
    spool_set_archiver(sp, on_archive, &seen);
    char q1[17];
    commit_msg(f, sp, 5000, q1);
    assert_int_equal(seen.n, 1);
    assert_string_equal(seen.qids[0], q1);
    /* a DSN Moat generated is never archived: no callback, done at once */
    struct spool_envelope env;
    struct spool_rcpt rc[1];
    make_env(&env, rc, 1);
    env.flags = SPOOL_F_BOUNCE;
    struct commit_result r = { 0 };
    spool_inject(sp, &env, "Subject: dsn\r\n\r\nx\r\n", 19, on_commit, &r);
    run(f->base, &r.calls, 1);
    assert_int_equal(seen.n, 1);
    assert_int_equal(spool_msg_done(sp, spool_msg_find(sp, r.qid)), 0);

    struct spool_msg *m = spool_msg_find(sp, q1);
    assert_ptr_equal(m, seen.m[0]);
    assert_int_equal(spool_msg_done(sp, m), 0);
    assert_null(spool_msg_find(sp, q1));
    struct spool_stats st;
    spool_get_stats(sp, &st);
    assert_int_equal(st.messages, 0);
    check_data(sp, m, 5000);          /* still readable for the archive */
    assert_int_equal(spool_msg_set_archived(sp, m), 0);
    spool_close(sp);

    sp = open_spool_archive(f, 0);
    struct archived_seen again = { 0 };
    spool_set_archiver(sp, on_archive, &again);
    assert_int_equal(again.n, 0);
    assert_null(spool_msg_find(sp, q1));
    assert_null(spool_msg_find(sp, r.qid));
    spool_close(sp);
}

/* a crash before archiving: the archiver is told again at the next start,
 * oldest first; an archived message is not */
static void test_archive_recovery(void **state)
{
    struct fixture *f = *state;
    struct spool *sp = open_spool_archive(f, 0);
    char q1[17], q2[17], q3[17];
    commit_msg(f, sp, 100, q1);
    commit_msg(f, sp, 200, q2);
    commit_msg(f, sp, 300, q3);
    struct spool_msg *m1 = spool_msg_find(sp, q1);
    spool_msg_set_rcpt(sp, m1, 0, SPOOL_RCPT_DELIVERED, "250 ok");
    spool_msg_set_rcpt(sp, m1, 1, SPOOL_RCPT_DELIVERED, "250 ok");
    assert_int_equal(spool_msg_done(sp, m1), 0);          /* done-pending */
    assert_int_equal(spool_msg_set_archived(sp, spool_msg_find(sp, q2)), 0);
    spool_close(sp);                                      /* q1, q3 never archived */

    sp = open_spool_archive(f, 0);
    struct archived_seen seen = { 0 };
    spool_set_archiver(sp, on_archive, &seen);
    assert_int_equal(seen.n, 2);
    assert_string_equal(seen.qids[0], q1);
    assert_string_equal(seen.qids[1], q3);
    /* q1 comes back live with its final recipients: the listener finishes it */
    struct spool_msg *m = spool_msg_find(sp, q1);
    assert_non_null(m);
    assert_int_equal(spool_msg_envelope(m)->rcpts[1].state, SPOOL_RCPT_DELIVERED);
    struct spool_msg *m2 = spool_msg_find(sp, q2);
    assert_non_null(m2);
    assert_true(spool_msg_envelope(m2)->flags & SPOOL_F_ARCHIVED);
    assert_int_equal(spool_msg_done(sp, m2), 0);          /* archived: forgotten at once */
    assert_int_equal(spool_msg_done(sp, m), 0);
    check_data(sp, seen.m[0], 100);
    /* the archive is detached before it gets to q1: it waits for the next start */
    spool_set_archiver(sp, NULL, NULL);
    spool_close(sp);

    sp = open_spool_archive(f, 0);
    struct archived_seen s2 = { 0 };
    spool_set_archiver(sp, on_archive, &s2);
    assert_int_equal(s2.n, 2);
    assert_string_equal(s2.qids[0], q1);
    assert_string_equal(s2.qids[1], q3);
    assert_null(spool_msg_find(sp, q2));
    assert_int_equal(spool_msg_done(sp, s2.m[0]), 0);
    assert_int_equal(spool_msg_set_archived(sp, s2.m[0]), 0);
    assert_int_equal(spool_msg_set_archived(sp, s2.m[1]), 0);
    spool_close(sp);

    sp = open_spool_archive(f, 0);
    struct archived_seen s3 = { 0 };
    spool_set_archiver(sp, on_archive, &s3);
    assert_int_equal(s3.n, 0);
    assert_null(spool_msg_find(sp, q1));
    assert_non_null(spool_msg_find(sp, q3));              /* archived, not yet delivered */
    spool_close(sp);
}

/* compaction keeps done-pending messages and the ARCHIVED flag */
static void test_archive_compaction(void **state)
{
    struct fixture *f = *state;
    struct spool *sp = open_spool_archive(f, 64 * 1024);
    spool_set_compact_age(sp, 0);
    struct archived_seen seen = { 0 };
    spool_set_archiver(sp, on_archive, &seen);
    char keep[17], pend[17], q[10][17];
    commit_msg(f, sp, 3000, keep);
    assert_int_equal(spool_msg_set_archived(sp, spool_msg_find(sp, keep)), 0);
    commit_msg(f, sp, 3000, pend);
    struct spool_msg *pm = spool_msg_find(sp, pend);
    assert_int_equal(spool_msg_done(sp, pm), 0);        /* done, not archived */
    for (int i = 0; i < 10; i++)
        commit_msg(f, sp, 20000, q[i]);
    assert_true(count_files(f->dir, ".seg") >= 3);
    for (int i = 0; i < 10; i++) {
        struct spool_msg *m = spool_msg_find(sp, q[i]);
        assert_int_equal(spool_msg_set_archived(sp, m), 0);
        assert_int_equal(spool_msg_done(sp, m), 0);
    }
    for (int i = 0; i < 2000 && count_files(f->dir, ".seg") > 1; i++) {
        event_base_loop(f->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        usleep(1000);
    }
    assert_int_equal(count_files(f->dir, ".seg"), 1);
    check_data(sp, spool_msg_find(sp, keep), 3000);
    check_data(sp, pm, 3000);
    spool_close(sp);

    sp = open_spool_archive(f, 64 * 1024);
    struct archived_seen s2 = { 0 };
    spool_set_archiver(sp, on_archive, &s2);
    assert_int_equal(s2.n, 1);
    assert_string_equal(s2.qids[0], pend);
    check_data(sp, s2.m[0], 3000);
    struct spool_msg *k = spool_msg_find(sp, keep);
    assert_non_null(k);
    assert_true(spool_msg_envelope(k)->flags & SPOOL_F_ARCHIVED);
    assert_false(spool_msg_envelope(s2.m[0])->flags & SPOOL_F_ARCHIVED);
    spool_close(sp);
}

int main(void)
{
    log_set_level(LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_roundtrip),
        cmocka_unit_test_setup_teardown(test_commit_and_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_flipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rcpt_done_survive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_segments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release, setup, teardown),
        cmocka_unit_test_setup_teardown(test_archive_pinning, setup, teardown),
        cmocka_unit_test_setup_teardown(test_archive_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_archive_compaction, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
