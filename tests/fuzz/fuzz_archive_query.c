/*
 * fuzz_archive_query.c - libFuzzer target for the archive's search
 * language (src/archive/archive_query.c, the q of GET /api/archive) and
 * the SQL and FTS5 MATCH expression the archive store builds from it
 * (src/store/store_archive.c), run against an in-memory archive holding
 * one message.
 * Invariants: nothing is read beyond the input; a refused query has the
 * field "q", a message, and leaves the query empty; an accepted one has at
 * most ARCHIVE_QUERY_MAX_TERMS terms, lower-case addresses, words free of
 * FTS5 syntax (no quote, star, parenthesis, brace, caret or colon), and
 * never makes the store fail (no SQL or FTS5 syntax error).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "archive/archive_query.h"
#include "store/store_archive.h"

static struct store_archive *sa;

static void archive_once(void)
{
    if (sa != NULL)
        return;
    struct error err = {0};
    log_set_level(LOG_ERROR);
    sa = store_archive_open(":memory:", &err);
    if (sa == NULL)
        abort();
    static const unsigned char hash[32] = { 1 };
    const char *att[] = { "report.pdf" };
    struct store_archive_rcpt r = { .addr = "bob@corp.example", .kind = "envelope" };
    struct store_archive_item it = {
        .qid = "Q1", .received = 1767225600, .direction = "inbound", .source = "smtp",
        .client_addr = "127.0.0.1", .sender = "alice@example.com", .rcpts = &r, .n_rcpts = 1,
        .hash = hash, .message_id = "m1@example.com", .date = 1767225600,
        .from = "alice@example.com", .to = "bob@corp.example", .cc = "",
        .from_display = "Alice <alice@example.com>", .subject = "quarterly budget",
        .size = 100, .attachments = att, .n_attachments = 1,
        .text = "near the quick brown fox and or not", .body = "x", .body_len = 1,
        .codec = "zstd",
    };
    if (store_archive_ingest(sa, &it, 1, NULL, NULL, &err) != STORE_OK)
        abort();
}

static void check_words(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (v[i][0] == '\0' || strpbrk(v[i], "\"*(){}^:") != NULL)
            abort();
}

static void check_addrs(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (const char *p = v[i]; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    archive_once();
    char *q = malloc(size + 1);
    if (q == NULL)
        return 0;
    memcpy(q, data, size);
    q[size] = '\0';
    struct store_archive_query sq;
    struct error err = {0};
    if (archive_query_parse(q, &sq, &err) < 0) {
        if (strcmp(err.field, "q") != 0 || err.msg[0] == '\0' ||
            sq.n_from + sq.n_to + sq.n_subject + sq.n_text != 0)
            abort();
        free(q);
        return 0;
    }
    if (sq.n_from + sq.n_to + sq.n_subject + sq.n_text > ARCHIVE_QUERY_MAX_TERMS)
        abort();
    check_words(sq.text, sq.n_text);
    check_words(sq.subject, sq.n_subject);
    check_addrs(sq.from, sq.n_from);
    check_addrs(sq.to, sq.n_to);
    struct store_archive_scope scope = { .owner = size % 2 ? "bob@corp.example" : NULL,
                                         .snippets = true };
    struct store_archive_hit *h;
    size_t n, total;
    if (store_archive_search(sa, &sq, &scope, 0, 5, 10, &h, &n, &total, &err) != STORE_OK)
        abort();
    if (n > 1 || total > 1)
        abort();
    store_archive_hits_free(h, n);
    archive_query_clear(&sq);
    free(q);
    return 0;
}
