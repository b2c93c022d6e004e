/*
 * test_directory.c - the directory: the CSV parser against golden
 * transcripts (tests/unit/golden/csv: X.csv parsed -> X.out; fed whole and
 * one octet at a time, which must agree), the importer's row checks, the
 * sync (created / updated / removed / unchanged, the safety stop, addresses
 * under unvalidated domains reported, manual entries untouched, an address
 * moving between entries, group members), and the RCPT index in every mode.
 *
 * MOAT_UPDATE_GOLDEN=1 rewrites the .out files from the parser.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "directory/directory.h"
#include "store/store.h"

/* --- CSV golden transcripts --- */

static void rec_cb(void *arg, size_t line, char **fields, size_t n)
{
    struct buf *out = arg;
    buf_printf(out, "line %zu:", line);
    for (size_t i = 0; i < n; i++) {
        buf_append_str(out, " [");
        for (const char *p = fields[i]; *p; p++) {
            if (*p == '\n')
                buf_append_str(out, "\\n");
            else if (*p == '\r')
                buf_append_str(out, "\\r");
            else
                buf_append(out, p, 1);
        }
        buf_append_str(out, "]");
    }
    buf_append_str(out, "\n");
}

static void bad_cb(void *arg, size_t line, const char *reason)
{
    buf_printf(arg, "line %zu: BAD %s\n", line, reason);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    struct buf b;
    buf_init(&b);
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        buf_append(&b, tmp, n);
    fclose(f);
    *len = b.len;
    buf_cstr(&b);
    return b.data;
}

static void parse(const char *data, size_t len, size_t chunk, struct buf *out)
{
    struct directory_csv *c = directory_csv_new(128, 8, rec_cb, bad_cb, out);
    for (size_t i = 0; i < len; i += chunk)
        directory_csv_feed(c, data + i, len - i < chunk ? len - i : chunk);
    directory_csv_finish(c);
    directory_csv_free(c);
}

static void test_csv_golden(void **state)
{
    static const char *const cases[] = { "quoting", "crlf_bom", "bad_rows", NULL };
    for (const char *const *k = cases; *k; k++) {
        char in_path[512], out_path[512];
        xsnprintf(in_path, sizeof in_path, "%s/tests/unit/golden/csv/%s.csv", MOAT_SOURCE_ROOT, *k);
        xsnprintf(out_path, sizeof out_path, "%s/tests/unit/golden/csv/%s.out", MOAT_SOURCE_ROOT, *k);
        size_t len, elen;
        char *in = slurp(in_path, &len);
        assert_non_null(in);
        struct buf whole, bytes;
        buf_init(&whole);
        buf_init(&bytes);
        parse(in, len, len ? len : 1, &whole);
        parse(in, len, 1, &bytes);
        assert_string_equal(buf_cstr(&whole), buf_cstr(&bytes));
        if (getenv("MOAT_UPDATE_GOLDEN") != NULL) {
            FILE *f = fopen(out_path, "wb");
            assert_non_null(f);
            fwrite(whole.data, 1, whole.len, f);
            fclose(f);
        }
        char *expect = slurp(out_path, &elen);
        assert_non_null(expect);
        if (strcmp(expect, buf_cstr(&whole)) != 0)
            fail_msg("%s: parser output differs from %s:\n%s", *k, out_path, buf_cstr(&whole));
        free(expect);
        free(in);
        buf_free(&whole);
        buf_free(&bytes);
    }
}

/* over-long records are refused and the parser stays in step */
static void test_csv_bounds(void **state)
{
    struct buf out;
    buf_init(&out);
    struct buf in;
    buf_init(&in);
    buf_append_str(&in, "a,b\n\"");
    for (int i = 0; i < 200; i++)
        buf_append_str(&in, "x");
    buf_append_str(&in, "\nc,d\n1,2,3,4,5,6,7,8,9\ne,f\n");
    parse(in.data, in.len, 7, &out);
    assert_string_equal(buf_cstr(&out),
        "line 1: [a] [b]\n"
        "line 2: BAD the row is longer than the limit (directory_csv_max_line)\n"
        "line 3: [c] [d]\n"
        "line 4: BAD the row has too many fields\n"
        "line 5: [e] [f]\n");
    buf_free(&in);
    buf_free(&out);
}

/* the importer without a store: row checks and line numbers */
static void test_import_checks(void **state)
{
    struct error err = {0};
    struct directory_import_limits lim = { .max_line = 1024, .max_rows = 5 };
    struct directory_import *im = directory_import_new(NULL, &lim, 10, &err);
    assert_non_null(im);
    const char *csv =
        "Email , NAME,aliases\n"                      /* 10 */
        "ann@example.com,Ann,a@example.com b@x.org\n" /* 11 ok */
        "nope,No,\n"                                  /* 12 email */
        "c@example.com,C,bad alias\n"                 /* 13 alias */
        "d@example.com,\"D\nE\",\n"                    /* 14 name with line break */
        "e@example.com,E,,extra\n"                    /* 16 fields */
        "f@example.com,F,\n"                          /* 17 ok (row 6: over max_rows) */
        "g@example.com,G,\n";                         /* 18 */
    directory_import_feed(im, csv, strlen(csv));
    json_t *r = directory_import_finish(im, &err);
    assert_non_null(r);
    assert_int_equal(json_integer_value(json_object_get(r, "rows")), 7);
    assert_int_equal(json_integer_value(json_object_get(r, "created")), 1);
    json_t *errors = json_object_get(r, "errors");
    static const int lines[] = { 12, 13, 14, 16, 17 };
    assert_int_equal(json_array_size(errors), 5);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(json_integer_value(json_object_get(json_array_get(errors, i), "line")),
                         lines[i]);
    assert_int_equal(json_integer_value(json_object_get(r, "bad")), 6);
    json_decref(r);
    directory_import_free(im);

    /* headers */
    static const char *const bad_headers[] = { "email\n", "email,name,colour\n",
                                               "email,name,email\n", "", NULL };
    for (const char *const *h = bad_headers; *h; h++) {
        im = directory_import_new(NULL, &lim, 1, &err);
        directory_import_feed(im, *h, strlen(*h));
        assert_null(directory_import_finish(im, &err));
        assert_string_equal(err.field, "header");
        directory_import_free(im);
    }
}

/* --- the store-backed half --- */

struct fixture {
    char path[256];
    struct store *st;
};

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof *f);
    struct error err;
    xsnprintf(f->path, sizeof f->path, "/tmp/i5e-test-directory-%d.db", (int)getpid());
    unlink(f->path);
    f->st = store_open(f->path, &err);
    if (f->st == NULL)
        fail_msg("store_open: %s", err.msg);
    assert_int_equal(store_domain_add_trusted(f->st, "example.com", &err), 0);
    assert_int_equal(store_domain_add(f->st, "pending.org", &err), 0);   /* not internal */
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char p[300];
    store_close(f->st);
    unlink(f->path);
    xsnprintf(p, sizeof p, "%s-wal", f->path);
    unlink(p);
    xsnprintf(p, sizeof p, "%s-shm", f->path);
    unlink(p);
    free(f);
    return 0;
}

static struct directory_entry user(const char *id, const char *primary, const char *name,
                                   const char *alias)
{
    struct directory_entry e = { .kind = DIRECTORY_USER };
    e.external_id = xstrdup(id);
    e.primary = xstrdup(primary);
    e.name = xstrdup(name);
    if (alias != NULL) {
        e.aliases = xcalloc(1, sizeof *e.aliases);
        e.aliases[0] = xstrdup(alias);
        e.n_aliases = 1;
    }
    return e;
}

static void entries_free(struct directory_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        directory_entry_clear(&e[i]);
}

static enum directory_lookup look(struct directory_index *ix, const char *addr)
{
    enum directory_rv_mode m;
    enum directory_rv_unreachable u;
    return directory_index_lookup(ix, addr, &m, &u);
}

static struct directory_index *reload(struct store *st, struct directory_index *old)
{
    struct error err;
    directory_index_free(old);
    struct directory_index *ix = directory_index_load(st, &err);
    if (ix == NULL)
        fail_msg("directory_index_load: %s", err.msg);
    return ix;
}

static void test_sync_and_index(void **state)
{
    struct fixture *f = *state;
    struct error err;
    struct directory_sync_counts c;
    json_t *report = NULL;

    /* a manual user exists before any sync */
    json_t *body = json_pack("{s:s, s:[s]}", "address", "manual@example.com", "aliases",
                             "m@example.com");
    json_t *out = NULL;
    assert_int_equal(directory_create(f->st, DIRECTORY_USER, body, &out, &err), 0);
    json_decref(body);
    json_decref(out);
    assert_int_equal(directory_rv_set(f->st, "example.com", "directory", NULL, &body, &out,
                                      &err), 0);
    json_decref(body);
    json_decref(out);
    struct directory_index *ix = reload(f->st, NULL);
    assert_false(directory_index_stale(ix, f->st));
    assert_int_equal(look(ix, "manual@example.com"), DIRECTORY_UNAVAILABLE);   /* never synced */
    assert_int_equal(look(ix, "x@elsewhere.net"), DIRECTORY_NOT_VALIDATED);

    struct directory_entry e[6];
    e[0] = user("u1", "Ann@Example.com", "Ann", "ann.a@example.com");
    e[1] = user("u2", "bob@example.com", "Bob", "bob@pending.org");   /* alias not validated */
    e[2] = user("u3", "carol@pending.org", "Carol", NULL);           /* not validated at all */
    e[3] = user("u4", "dave@example.com", "Dave", "m@example.com");   /* alias is manual's */
    e[4] = user("u5", "erin@sub.example.com", "Erin", NULL);          /* subdomain: internal */
    e[5] = (struct directory_entry){ .kind = DIRECTORY_GROUP, .external_id = xstrdup("g1"),
                                     .primary = xstrdup("team@example.com"),
                                     .name = xstrdup("Team") };
    e[5].members = xcalloc(3, sizeof *e[5].members);
    e[5].members[0] = xstrdup("u1");
    e[5].members[1] = xstrdup("bob@example.com");
    e[5].members[2] = xstrdup("u3");          /* skipped entry: dropped */
    e[5].n_members = 3;

    /* preview first: counts, nothing written */
    assert_int_equal(directory_sync_apply(f->st, e, 6, true, 0.1, false, &c, &report, &err), 0);
    assert_int_equal(c.created, 5);
    assert_int_equal(c.skipped_unvalidated, 2);
    assert_int_equal(c.errors, 1);
    json_decref(report);
    assert_false(directory_index_stale(ix, f->st));

    assert_int_equal(directory_sync_apply(f->st, e, 6, false, 0.1, false, &c, &report, &err), 0);
    assert_int_equal(c.created, 5);
    assert_int_equal(c.removed, 0);
    assert_int_equal(json_array_size(report), 3);
    bool saw_unvalidated = false;
    size_t i;
    json_t *r;
    json_array_foreach(report, i, r)
        if (strcmp(json_string_value(json_object_get(r, "address")), "carol@pending.org") == 0)
            saw_unvalidated = strstr(json_string_value(json_object_get(r, "reason")),
                                     "not under an internal domain") != NULL;
    assert_true(saw_unvalidated);
    json_decref(report);
    assert_true(directory_index_stale(ix, f->st));
    ix = reload(f->st, ix);

    /* directory mode: synced only */
    assert_int_equal(look(ix, "ann@example.com"), DIRECTORY_FOUND);
    assert_int_equal(look(ix, "ANN.A@EXAMPLE.COM"), DIRECTORY_FOUND);
    assert_int_equal(look(ix, "team@example.com"), DIRECTORY_FOUND);
    assert_int_equal(look(ix, "erin@sub.example.com"), DIRECTORY_FOUND);
    assert_int_equal(look(ix, "manual@example.com"), DIRECTORY_NOT_FOUND);
    assert_int_equal(look(ix, "nobody@example.com"), DIRECTORY_NOT_FOUND);
    assert_int_equal(look(ix, "nobody@sub.example.com"), DIRECTORY_NOT_FOUND);   /* parent's mode */
    assert_int_equal(look(ix, "bob@pending.org"), DIRECTORY_NOT_VALIDATED);
    /* the group's members resolved by id and by address */
    assert_int_equal(directory_get_json(f->st, DIRECTORY_GROUP, "team@example.com", &out, &err), 0);
    json_t *members = json_object_get(out, "members");
    assert_int_equal(json_array_size(members), 2);
    assert_string_equal(json_string_value(json_array_get(members, 0)), "ann@example.com");
    json_decref(out);
    /* synced entries are read-only through the manual path */
    assert_int_equal(directory_delete(f->st, DIRECTORY_USER, "ann@example.com", &out, &err),
                     DIRECTORY_ECONFLICT);

    /* known: manual users too */
    assert_int_equal(directory_rv_set(f->st, "example.com", "known", "accept", &body, &out,
                                      &err), 0);
    json_decref(body);
    json_decref(out);
    ix = reload(f->st, ix);
    assert_int_equal(look(ix, "m@example.com"), DIRECTORY_FOUND);
    enum directory_rv_mode mode;
    enum directory_rv_unreachable u;
    assert_int_equal(directory_index_lookup(ix, "zz@example.com", &mode, &u), DIRECTORY_NOT_FOUND);
    assert_int_equal(mode, DIRECTORY_RV_KNOWN);
    assert_int_equal(u, DIRECTORY_RV_ACCEPT);
    assert_int_equal(directory_rv_set(f->st, "example.com", "call-forward", NULL, &body, &out,
                                      &err), 0);
    json_decref(body);
    json_decref(out);
    ix = reload(f->st, ix);
    assert_int_equal(look(ix, "ann@example.com"), DIRECTORY_CALL_FORWARD);
    assert_int_equal(directory_rv_set(f->st, "example.com", "accept-all", NULL, &body, &out,
                                      &err), 0);
    json_decref(body);
    json_decref(out);
    ix = reload(f->st, ix);
    assert_int_equal(look(ix, "nobody@example.com"), DIRECTORY_NOT_VALIDATED);
    assert_int_equal(directory_rv_set(f->st, "pending.org", "known", NULL, &body, &out, &err),
                     DIRECTORY_ECONFLICT);
    assert_int_equal(directory_rv_set(f->st, "example.com", "all", NULL, &body, &out, &err),
                     DIRECTORY_EINVAL);
    assert_string_equal(err.field, "mode");

    /* second sync: the same entries -> unchanged; an address moves from
     * Ann to Bob; Erin (1 of 4 users = 25 %) leaves: the safety stop */
    free(e[0].aliases[0]);
    e[0].aliases[0] = xstrdup("ann.b@example.com");
    free(e[1].aliases[0]);
    e[1].aliases[0] = xstrdup("ann.a@example.com");
    assert_int_equal(directory_sync_apply(f->st, e, 4, false, 0.1, false, &c, &report, &err), -1);
    assert_string_equal(err.field, "confirm");
    assert_int_equal(c.removed, 2);          /* Erin and the group */
    json_decref(report);
    assert_false(directory_index_stale(ix, f->st));   /* nothing changed */
    assert_int_equal(directory_sync_apply(f->st, e, 4, false, 0.1, true, &c, &report, &err), 0);
    assert_int_equal(c.updated, 2);
    assert_int_equal(c.unchanged, 1);        /* Dave */
    assert_int_equal(c.removed, 2);
    json_decref(report);
    struct store_dir_entry se;
    assert_int_equal(store_dir_get(f->st, "ann.a@example.com", &se, &err), 0);
    assert_string_equal(se.primary, "bob@example.com");
    store_dir_entry_clear(&se);
    assert_int_equal(store_dir_get(f->st, "erin@sub.example.com", &se, &err), STORE_NOT_FOUND);
    /* manual entries are never touched */
    assert_int_equal(store_dir_get(f->st, "manual@example.com", &se, &err), 0);
    assert_int_equal(se.source, STORE_DIR_MANUAL);
    store_dir_entry_clear(&se);
    /* an empty answer would remove everyone: stopped */
    assert_int_equal(directory_sync_apply(f->st, NULL, 0, false, 0.1, false, &c, &report, &err),
                     -1);
    json_decref(report);
    entries_free(e, 6);
    directory_index_free(ix);
}

/* manual users: one owner per address, 409 naming the field */
static void test_manual_conflicts(void **state)
{
    struct fixture *f = *state;
    struct error err;
    json_t *out = NULL, *before = NULL, *after = NULL;
    json_t *b = json_pack("{s:s, s:[s]}", "address", "ann@example.com", "aliases",
                          "a@example.com");
    assert_int_equal(directory_create(f->st, DIRECTORY_USER, b, &out, &err), 0);
    json_decref(b);
    json_decref(out);
    b = json_pack("{s:s}", "address", "A@example.com");
    assert_int_equal(directory_create(f->st, DIRECTORY_GROUP, b, &out, &err), DIRECTORY_ECONFLICT);
    assert_string_equal(err.field, "address");
    json_decref(b);
    b = json_pack("{s:s, s:[s]}", "address", "bob@example.com", "aliases", "ann@example.com");
    assert_int_equal(directory_create(f->st, DIRECTORY_USER, b, &out, &err), DIRECTORY_ECONFLICT);
    assert_string_equal(err.field, "aliases");
    json_decref(b);
    b = json_pack("{s:s}", "address", "x@pending.org");
    assert_int_equal(directory_create(f->st, DIRECTORY_USER, b, &out, &err), DIRECTORY_EINVAL);
    json_decref(b);
    b = json_pack("{s:[s]}", "aliases", "ann2@example.com");
    assert_int_equal(directory_update(f->st, DIRECTORY_USER, "a@example.com", b, &before, &after,
                                      &err), 0);
    assert_string_equal(json_string_value(json_array_get(json_object_get(after, "aliases"), 0)),
                        "ann2@example.com");
    json_decref(b);
    json_decref(before);
    json_decref(after);
    /* a@ is free again */
    b = json_pack("{s:s}", "address", "a@example.com");
    assert_int_equal(directory_create(f->st, DIRECTORY_USER, b, &out, &err), 0);
    json_decref(b);
    json_decref(out);
    assert_int_equal(directory_delete(f->st, DIRECTORY_USER, "nobody@example.com", &before, &err),
                     DIRECTORY_ENOENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv_golden),
        cmocka_unit_test(test_csv_bounds),
        cmocka_unit_test(test_import_checks),
        cmocka_unit_test_setup_teardown(test_sync_and_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_manual_conflicts, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
