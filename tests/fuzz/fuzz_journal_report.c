/*
 * fuzz_journal_report.c - libFuzzer target for Exchange journal report
 * unwrapping (src/archive/archive_journal.c): any message sent to the
 * journal address.  Invariants: parsing never fails; a REPORT has a
 * sender, 1..ARCHIVE_JOURNAL_MAX_RCPTS lower-case recipients of a known
 * kind and a non-empty original no longer than the report (transfer
 * decoding only shrinks); a MALFORMED one has a one-line error and nothing
 * else; a PLAIN one carries nothing.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "archive/archive_journal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    archive_mime_init();
    return 0;
}

static void check_lower(const char *s)
{
    for (; s && *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            abort();
}

static void check_report(const struct archive_journal *j, size_t size)
{
    static const char *const kinds[] = { "to", "cc", "bcc", "recipient" };
    if (j->sender == NULL || j->n_rcpts == 0 || j->n_rcpts > ARCHIVE_JOURNAL_MAX_RCPTS ||
        j->original == NULL || j->original_len == 0 || j->original_len > size || j->error)
        abort();
    check_lower(j->sender);
    for (size_t i = 0; i < j->n_rcpts; i++) {
        const struct archive_journal_rcpt *r = &j->rcpts[i];
        bool known = false;
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
            known = known || strcmp(r->kind, kinds[k]) == 0;
        if (!known || r->addr == NULL || strchr(r->addr, '@') == NULL)
            abort();
        check_lower(r->addr);
        check_lower(r->expanded);
        check_lower(r->forwarded);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct archive_limits lim = { 64 * 1024, 4096, 8, 64 };
    struct archive_journal j;
    if (archive_journal_parse(data, size, &lim, &j) != 0)
        abort();
    switch (j.kind) {
    case ARCHIVE_JOURNAL_REPORT:
        check_report(&j, size);
        break;
    case ARCHIVE_JOURNAL_MALFORMED:
        if (j.error == NULL || strchr(j.error, '\n') || j.original || j.n_rcpts || j.sender)
            abort();
        break;
    case ARCHIVE_JOURNAL_PLAIN:
        if (j.error || j.original || j.n_rcpts || j.sender)
            abort();
        break;
    default:
        abort();
    }
    archive_journal_clear(&j);
    return 0;
}
