/*
 * archive_dump_tool.c - test helper for tests/e2e/test_journal.py: every
 * message of an archive database (through the archive store's own
 * interface, store_archive.h, so the tests do not depend on its schema) as
 * one JSON array on stdout: the indexed fields, the arrivals with their
 * envelopes (journal kind, recipients with expanded/forwarded) and the
 * decompressed body (archive_body).
 *
 *     archive_dump_tool STATE/archive.db
 */
#include <stdio.h>
#include <stdlib.h>
#include <jansson.h>
#include "archive/archive.h"

struct ids { int64_t *v; size_t n; };

static int collect(void *arg, int64_t id)
{
    struct ids *ids = arg;
    ids->v = xreallocarray(ids->v, ids->n + 1, sizeof *ids->v);
    ids->v[ids->n++] = id;
    return 0;
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *arrival_json(const struct store_archive_arrival *a)
{
    json_t *rc = json_array();
    for (size_t i = 0; i < a->n_rcpts; i++)
        json_array_append_new(rc, json_pack("{s:o, s:o, s:o, s:o}",
            "addr", str_or_null(a->rcpts[i].addr), "kind", str_or_null(a->rcpts[i].kind),
            "expanded", str_or_null(a->rcpts[i].expanded),
            "forwarded", str_or_null(a->rcpts[i].forwarded)));
    return json_pack("{s:o, s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
        "qid", str_or_null(a->qid), "received", (json_int_t)a->received,
        "direction", str_or_null(a->direction), "source", str_or_null(a->source),
        "client_addr", str_or_null(a->client_addr), "sender", str_or_null(a->sender),
        "journal", str_or_null(a->journal), "journal_error", str_or_null(a->journal_error),
        "rcpts", rc);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: archive_dump_tool ARCHIVE.db\n");
        return 2;
    }
    struct error err = { 0 };
    struct store_archive *sa = store_archive_open(argv[1], &err);
    if (sa == NULL) {
        fprintf(stderr, "archive_dump_tool: %s\n", err.msg);
        return 1;
    }
    struct store_archive_query q = { .after = 1 };   /* every message (received >= 1970) */
    struct store_archive_scope scope = { 0 };
    struct ids ids = { 0 };
    if (store_archive_each(sa, &q, &scope, 100000, collect, &ids, &err) < 0) {
        fprintf(stderr, "archive_dump_tool: %s\n", err.msg);
        return 1;
    }
    json_t *out = json_array();
    for (size_t i = 0; i < ids.n; i++) {
        struct store_archive_message m;
        if (store_archive_get(sa, ids.v[i], &scope, true, &m, &err) != STORE_OK) {
            fprintf(stderr, "archive_dump_tool: message %lld: %s\n", (long long)ids.v[i], err.msg);
            return 1;
        }
        json_t *arr = json_array();
        for (size_t k = 0; k < m.n_arrivals; k++)
            json_array_append_new(arr, arrival_json(&m.arrivals[k]));
        unsigned char *body = NULL;
        size_t len = 0;
        json_t *jb = json_null();
        if (archive_body(&m, &body, &len, &err) == 0) {
            json_t *s = json_stringn((const char *)body, len);
            if (s)
                jb = s;
        }
        free(body);
        json_array_append_new(out, json_pack("{s:I, s:o, s:o, s:o, s:o, s:I, s:b, s:o, s:o}",
            "id", (json_int_t)m.id, "message_id", str_or_null(m.message_id),
            "subject", str_or_null(m.subject), "from", str_or_null(m.from),
            "to", str_or_null(m.to), "size", (json_int_t)m.size, "truncated", m.truncated,
            "arrivals", arr, "body", jb));
        store_archive_message_clear(&m);
    }
    free(ids.v);
    char *s = json_dumps(out, JSON_INDENT(1));
    puts(s);
    free(s);
    json_decref(out);
    store_archive_close(sa);
    return 0;
}
