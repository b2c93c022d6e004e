/*
 * fuzz_mime_text.c - libFuzzer target for the archive's text extraction
 * (src/archive/archive_mime.c with GMime, archive_text.c, archive_html.c):
 * any message, with small limits so the bounds are reached often.
 * Invariants: extraction never fails; every string is valid UTF-8 and the
 * text within max_text; the header section lies within the input; the
 * HTML reader's output is within its bound and valid UTF-8 whatever the
 * input.  GMime is initialised once (LLVMFuzzerInitialize): GLib's type
 * system is global.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "archive/archive_mime.h"
#include "core/core.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    archive_mime_init();
    return 0;
}

static void check_utf8(const char *s)
{
    if (s == NULL || !str_valid_utf8(s, strlen(s)))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct archive_limits lim = { 64 * 1024, 4096, 8, 64 };
    struct archive_doc d;
    if (archive_mime_extract(data, size, &lim, &d) != 0)
        abort();
    check_utf8(d.subject);
    check_utf8(d.from);
    check_utf8(d.to);
    check_utf8(d.cc);
    check_utf8(d.from_display);
    check_utf8(d.text);
    if (d.message_id)
        check_utf8(d.message_id);
    if (strlen(d.text) > lim.max_text || d.header_len > size || d.n_attachments > lim.max_parts)
        abort();
    for (size_t i = 0; i < d.n_attachments; i++)
        check_utf8(d.attachments[i]);
    archive_doc_clear(&d);

    char *t = archive_html_to_text((const char *)data, size, 1024);
    check_utf8(t);
    if (strlen(t) > 1024)
        abort();
    free(t);
    return 0;
}
