/*
 * test_held.c - issue 7's held mail and forwarding, the pure parts: SRS
 * encode/decode with hash and age checks; forwarding rule expansion
 * (redirect, copy, loops, a rule to itself, external targets get an SRS
 * sender); blocked-sender lookup in the snapshot; the store's checks; the
 * text preview of held mail (MIME walk, quoted-printable, base64, bounds).
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
#include "deliver/held_text.h"
#include "policy/forward.h"
#include "store/store.h"

#define DAY 86400

static const unsigned char key1[SRS_KEY_LEN] = "0123456789abcdef0123456789abcdef";
static const unsigned char key2[SRS_KEY_LEN] = "fedcba9876543210fedcba9876543210";

/* --- SRS --- */

static void test_srs_roundtrip(void **state)
{
    (void)state;
    int64_t now = 1795900000;
    char a[FORWARD_ADDR_MAX], back[FORWARD_ADDR_MAX];
    assert_int_equal(srs_forward(key1, "Someone@Corp.Test", "example.com", now, a, sizeof a), 0);
    assert_true(srs_is_srs(a));
    assert_true(strncmp(a, "SRS0=", 5) == 0);
    assert_non_null(strstr(a, "=Corp.Test=Someone@example.com"));
    assert_int_equal(srs_reverse(key1, a, now, back, sizeof back), SRS_OK);
    assert_string_equal(back, "Someone@Corp.Test");
    /* case-folded on the way (hash and all): still valid */
    char low[FORWARD_ADDR_MAX];
    for (size_t i = 0; a[i]; i++)
        low[i] = (char)(a[i] >= 'A' && a[i] <= 'Z' ? a[i] + 32 : a[i]);
    low[strlen(a)] = '\0';
    assert_int_equal(srs_reverse(key1, low, now, back, sizeof back), SRS_OK);
    /* another key, a changed hash, a changed address: refused */
    assert_int_equal(srs_reverse(key2, a, now, back, sizeof back), SRS_BAD_HASH);
    char t[FORWARD_ADDR_MAX];
    strcpy(t, a);
    t[5] = t[5] == 'a' ? 'b' : 'a';
    assert_int_equal(srs_reverse(key1, t, now, back, sizeof back), SRS_BAD_HASH);
    strcpy(t, a);
    char *s = strstr(t, "Someone");
    s[0] = 'N';
    assert_int_equal(srs_reverse(key1, t, now, back, sizeof back), SRS_BAD_HASH);
    /* age: valid up to SRS_MAX_AGE_DAYS, across the 1024-day wrap too */
    assert_int_equal(srs_reverse(key1, a, now + SRS_MAX_AGE_DAYS * DAY, back, sizeof back), SRS_OK);
    assert_int_equal(srs_reverse(key1, a, now + (SRS_MAX_AGE_DAYS + 1) * DAY, back, sizeof back),
                     SRS_EXPIRED);
    int64_t wrap = (now / DAY / 1024 + 1) * 1024 * DAY - DAY;   /* day 1023 of a cycle */
    assert_int_equal(srs_forward(key1, "x@y.test", "example.com", wrap, a, sizeof a), 0);
    assert_int_equal(srs_reverse(key1, a, wrap + 3 * DAY, back, sizeof back), SRS_OK);
    /* malformed and not SRS */
    assert_int_equal(srs_reverse(key1, "alice@example.com", now, back, sizeof back), SRS_NOT_SRS);
    static const char *const bad[] = { "SRS0=@example.com", "SRS0=abcdef@example.com",
                                       "SRS0=abcdef=aa@example.com", "SRS0=abcdef=aa=dom@example.com",
                                       "SRS0=abcdef=aa==x@example.com", "SRS0=abc=aa=d=x@example.com",
                                       "SRS0=abcdef=a!=d=x@example.com" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_not_equal(srs_reverse(key1, bad[i], now, back, sizeof back), SRS_OK);
    /* no domain, or no room: no SRS address */
    assert_int_equal(srs_forward(key1, "", "example.com", now, a, sizeof a), -1);
    assert_int_equal(srs_forward(key1, "nodomain", "example.com", now, a, sizeof a), -1);
    assert_int_equal(srs_forward(key1, "x@y.test", "example.com", now, a, 20), -1);
}

/* --- store, snapshot, expansion --- */

struct db {
    char dir[64];
    struct store *st;
};

static struct store *db_open(struct db *d)
{
    str_copy(d->dir, sizeof d->dir, "/tmp/moat-test-held-XXXXXX");
    assert_non_null(mkdtemp(d->dir));
    char path[128];
    xsnprintf(path, sizeof path, "%s/moat.db", d->dir);
    struct error err = {0};
    d->st = store_open(path, &err);
    if (d->st == NULL)
        fail_msg("store_open: %s", err.msg);
    assert_int_equal(store_domain_add_trusted(d->st, "example.com", &err), 0);
    assert_int_equal(store_domain_add_trusted(d->st, "other.test", &err), 0);
    return d->st;
}

static void db_close(struct db *d)
{
    store_close(d->st);
    char cmd[128];
    xsnprintf(cmd, sizeof cmd, "rm -rf %s", d->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", d->dir);
}

static void test_store_checks(void **state)
{
    (void)state;
    struct db d;
    struct store *st = db_open(&d);
    struct error err = {0};
    assert_int_equal(store_blocked_add(st, "Bad.Test", STORE_BLOCK_REJECT, "x", NULL, &err), STORE_OK);
    assert_int_equal(store_blocked_add(st, "bad.test", STORE_BLOCK_HOLD, NULL, NULL, &err), STORE_CONFLICT);
    assert_int_equal(store_blocked_add(st, "not a domain", STORE_BLOCK_HOLD, NULL, NULL, &err), STORE_ERR);
    assert_string_equal(err.field, "address");
    assert_int_equal(store_blocked_add(st, "@x.test", STORE_BLOCK_HOLD, NULL, NULL, &err), STORE_ERR);
    assert_int_equal(store_blocked_add(st, "a@x.test", STORE_BLOCK_HOLD, "a\nb", NULL, &err), STORE_ERR);
    assert_string_equal(err.field, "comment");
    assert_int_equal(store_blocked_add(st, "spam@Ext.Test", STORE_BLOCK_HOLD, NULL, NULL, &err), STORE_OK);
    assert_int_equal(store_blocked_delete(st, "nobody@x.test", &err), STORE_NOT_FOUND);

    assert_int_equal(store_forward_add(st, "a@example.com", "A@Example.com", STORE_FORWARD_REDIRECT,
                                       NULL, NULL, &err), STORE_ERR);
    assert_string_equal(err.field, "target");     /* a rule to itself */
    assert_int_equal(store_forward_add(st, "a b@example.com", "x@y.test", STORE_FORWARD_REDIRECT,
                                       NULL, NULL, &err), STORE_ERR);
    assert_string_equal(err.field, "address");
    int64_t id = 0;
    assert_int_equal(store_forward_add(st, "a@example.com", "b@other.test", STORE_FORWARD_REDIRECT,
                                       NULL, &id, &err), STORE_OK);
    assert_int_equal(store_forward_add(st, "a@example.com", "b@other.test", STORE_FORWARD_COPY,
                                       NULL, NULL, &err), STORE_CONFLICT);
    assert_int_equal(store_forward_delete(st, id, &err), STORE_OK);
    assert_int_equal(store_forward_delete(st, id, &err), STORE_NOT_FOUND);

    /* released Message-IDs */
    assert_false(held_released_message_id(st, "<abc@ext.test>"));
    assert_int_equal(store_held_released_add(st, " <abc@ext.test>", &err), STORE_OK);
    assert_true(held_released_message_id(st, "<abc@ext.test>"));
    assert_true(held_released_message_id(st, "abc@ext.test"));
    assert_false(held_released_message_id(st, "<abd@ext.test>"));
    assert_int_equal(store_held_released_add(st, "<>", &err), STORE_ERR);

    /* the snapshot: exact address, then domain and parents */
    struct store_snapshot *snap = store_snapshot_load(st, &err);
    assert_non_null(snap);
    const struct store_blocked_sender *b = store_snapshot_blocked_sender(snap, "x@BAD.test");
    assert_non_null(b);
    assert_int_equal(b->action, STORE_BLOCK_REJECT);
    assert_non_null(store_snapshot_blocked_sender(snap, "x@deep.sub.bad.test"));
    assert_null(store_snapshot_blocked_sender(snap, "x@notbad.test"));
    assert_null(store_snapshot_blocked_sender(snap, "x@ext.test"));
    b = store_snapshot_blocked_sender(snap, "SPAM@ext.test");
    assert_non_null(b);
    assert_int_equal(b->action, STORE_BLOCK_HOLD);
    assert_null(store_snapshot_blocked_sender(snap, ""));
    assert_null(store_snapshot_blocked_sender(snap, NULL));
    store_snapshot_free(snap);
    db_close(&d);
}

static void test_expand(void **state)
{
    (void)state;
    struct db d;
    struct store *st = db_open(&d);
    struct error err = {0};
    /* redirect internal; copy + two targets (one external); a loop a <-> b */
    assert_int_equal(store_forward_add(st, "r@example.com", "r2@other.test", STORE_FORWARD_REDIRECT, NULL, NULL, &err), 0);
    assert_int_equal(store_forward_add(st, "c@example.com", "c2@other.test", STORE_FORWARD_COPY, NULL, NULL, &err), 0);
    assert_int_equal(store_forward_add(st, "c@example.com", "far@remote.example.org", STORE_FORWARD_REDIRECT, NULL, NULL, &err), 0);
    assert_int_equal(store_forward_add(st, "a@example.com", "b@example.com", STORE_FORWARD_REDIRECT, NULL, NULL, &err), 0);
    assert_int_equal(store_forward_add(st, "b@example.com", "a@example.com", STORE_FORWARD_REDIRECT, NULL, NULL, &err), 0);
    struct store_snapshot *snap = store_snapshot_load(st, &err);
    assert_non_null(snap);
    struct forward_target out[FORWARD_MAX_TARGETS];
    int64_t now = 1795900000;

    /* no rule: itself */
    assert_int_equal(forward_expand(snap, key1, "s@corp.test", "x@example.com", now, out, 8), 1);
    assert_string_equal(out[0].addr, "x@example.com");
    assert_string_equal(out[0].fwd_for, "");
    assert_string_equal(out[0].sender, "");

    /* redirect, internal target: no SRS, marked forwarded-for */
    assert_int_equal(forward_expand(snap, key1, "s@corp.test", "R@Example.com", now, out, 8), 1);
    assert_string_equal(out[0].addr, "r2@other.test");
    assert_string_equal(out[0].fwd_for, "R@Example.com");
    assert_string_equal(out[0].sender, "");

    /* copy: the original first, then each target; the external one with SRS */
    assert_int_equal(forward_expand(snap, key1, "s@corp.test", "c@example.com", now, out, 8), 3);
    assert_string_equal(out[0].addr, "c@example.com");
    assert_string_equal(out[0].fwd_for, "");
    assert_string_equal(out[1].addr, "c2@other.test");
    assert_string_equal(out[1].sender, "");
    assert_string_equal(out[2].addr, "far@remote.example.org");
    assert_string_equal(out[2].fwd_for, "c@example.com");
    char back[FORWARD_ADDR_MAX];
    assert_true(srs_is_srs(out[2].sender));
    assert_non_null(strstr(out[2].sender, "@example.com"));
    assert_int_equal(srs_reverse(key1, out[2].sender, now, back, sizeof back), SRS_OK);
    assert_string_equal(back, "s@corp.test");
    /* the null sender is never rewritten; without a key neither */
    assert_int_equal(forward_expand(snap, key1, "", "c@example.com", now, out, 8), 3);
    assert_string_equal(out[2].sender, "");
    assert_int_equal(forward_expand(snap, NULL, "s@corp.test", "c@example.com", now, out, 8), 3);
    assert_string_equal(out[2].sender, "");
    /* bounded by max */
    assert_int_equal(forward_expand(snap, key1, "s@corp.test", "c@example.com", now, out, 2), 2);

    /* a loop: one step, never more */
    assert_int_equal(forward_expand(snap, key1, "s@corp.test", "a@example.com", now, out, 8), 1);
    assert_string_equal(out[0].addr, "b@example.com");
    assert_int_equal(forward_expand(snap, key1, "s@corp.test", "b@example.com", now, out, 8), 1);
    assert_string_equal(out[0].addr, "a@example.com");

    /* an SRS bounce address: back to the original sender; a forged one stays */
    char srs[FORWARD_ADDR_MAX];
    assert_int_equal(srs_forward(key1, "orig@corp.test", "example.com", now, srs, sizeof srs), 0);
    assert_int_equal(forward_expand(snap, key1, "", srs, now, out, 8), 1);
    assert_string_equal(out[0].addr, "orig@corp.test");
    assert_string_equal(out[0].fwd_for, "");
    assert_int_equal(forward_expand(snap, key2, "", srs, now, out, 8), 1);
    assert_string_equal(out[0].addr, srs);
    store_snapshot_free(snap);
    db_close(&d);
}

/* --- the text of held mail --- */

static const char *preview(const char *msg, size_t max, struct buf *b)
{
    buf_reset(b);
    if (!held_text_preview(msg, strlen(msg), max, b))
        return NULL;
    return buf_cstr(b);
}

static void test_held_text(void **state)
{
    (void)state;
    struct buf b = { 0 };
    /* no MIME: the body */
    assert_string_equal(preview("Subject: x\r\n\r\nhello\r\n", 100, &b), "hello\r\n");
    /* quoted-printable with a soft line break */
    assert_string_equal(preview("Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                                "Gr=C3=BC=\r\n=C3=9Fe =3D ok=\r\n", 100, &b),
                        "Gr\xc3\xbc\xc3\x9f" "e = ok");
    /* multipart: the first text/plain part, base64, a folded Content-Type */
    const char *mp =
        "Content-Type: multipart/mixed;\r\n boundary=\"b1\"\r\n\r\npreamble\r\n"
        "--b1\r\nContent-Type: text/html\r\n\r\n<p>no</p>\r\n"
        "--b1\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n"
        "--b2\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: BASE64\r\n\r\n"
        "aGVsbG8g\r\nd29ybGQ=\r\n--b2--\r\n--b1--\r\n";
    assert_string_equal(preview(mp, 100, &b), "hello world");
    /* bounded output */
    assert_string_equal(preview("\r\nabcdefghij", 4, &b), "abcd");
    /* no text/plain part, a close delimiter only, a cut-off message */
    assert_null(preview("Content-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\n"
                        "Content-Type: image/png\r\n\r\nxx\r\n--z--\r\n", 100, &b));
    assert_null(preview("Content-Type: multipart/mixed; boundary=z\r\n\r\n--z--\r\n", 100, &b));
    assert_null(preview("Content-Type: multipart/mixed; boundary=z\r\n\r\n--z", 100, &b));
    assert_null(preview("Content-Type: multipart/mixed\r\n\r\n--z\r\n\r\nx\r\n", 100, &b));
    assert_null(preview("Content-Type: application/pdf\r\n\r\nx", 100, &b));
    /* nesting deeper than the bound: nothing, no recursion without end */
    struct buf deep = { 0 };
    for (int i = 0; i < 20; i++)
        buf_printf(&deep, "Content-Type: multipart/mixed; boundary=x%cy\r\n\r\n--x%cy\r\n", 'a' + i, 'a' + i);
    buf_append_str(&deep, "\r\ntext\r\n");
    assert_false(held_text_preview(deep.data, deep.len, 100, &b));
    buf_free(&deep);
    assert_int_equal(held_header_section("A: b\r\nC: d\r\n\r\nbody", 19), 14);
    assert_int_equal(held_header_section("A: b", 4), 4);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_srs_roundtrip),
        cmocka_unit_test(test_store_checks),
        cmocka_unit_test(test_expand),
        cmocka_unit_test(test_held_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
