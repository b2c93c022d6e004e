/*
 * archive_mime.h - what the archive indexes of one message, extracted with
 * GMime 3: the decoded subject and addresses, the text of every text part
 * (base64 and quoted-printable decoded, charsets converted to UTF-8, HTML
 * turned into text) and the attachment names.
 *
 * Bounded work: a hostile message cannot stall ingestion.  Parsing stops at
 * lim->max_parse octets of the message, lim->max_depth levels of MIME
 * nesting and lim->max_parts parts; the text kept is at most lim->max_text
 * octets.  A limit reached sets doc->truncated; what was extracted up to it
 * is kept.  Attached messages (message/rfc822) are descended into: their
 * text and attachment names count as the message's own.
 *
 * Pure functions of their input (no I/O, no globals besides GMime's own
 * initialisation), safe to call from several threads at once on different
 * messages.  Fuzzed by tests/fuzz/fuzz_mime_text.c.
 */
#ifndef MOAT_ARCHIVE_MIME_H
#define MOAT_ARCHIVE_MIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct archive_limits {
    size_t max_parse;       /* octets of the message parsed (default 10 MiB) */
    size_t max_text;        /* octets of extracted text kept (default 1 MiB) */
    unsigned max_depth;     /* MIME nesting levels (default 16) */
    unsigned max_parts;     /* MIME parts visited (default 1000) */
};
#define ARCHIVE_LIMITS_DEFAULT { 10u << 20, 1u << 20, 16, 1000 }

struct archive_doc {
    char *message_id;       /* Message-ID without <>, or NULL when absent */
    char *subject;          /* decoded (RFC 2047) UTF-8; "" when absent */
    char *from;             /* header From addresses, lower-case, ", "-separated; "" when none */
    char *to;               /* header To, likewise */
    char *cc;               /* header Cc, likewise */
    char *from_display;     /* the From header decoded for display ("Alice <a@x>"), "" when none */
    int64_t date;           /* the Date header, unix seconds; 0 when absent or unparsable */
    char *text;             /* decoded text of the text parts, UTF-8, parts separated by
                             * "\n\n"; at most max_text octets, cut at a character boundary */
    char **attachments;     /* file names (UTF-8); "" for an attachment with no name */
    size_t n_attachments;
    size_t header_len;      /* octets of the header section incl. the blank line (0: none) */
    bool truncated;         /* a limit cut the work short */
};

/* archive_mime_init - g_mime_init(); once, before any thread uses GMime */
void archive_mime_init(void);
/* archive_mime_shutdown - g_mime_shutdown(); once, after every thread is done */
void archive_mime_shutdown(void);

/* archive_mime_extract - fill *out from the message msg[0..len) (CRLF or LF
 * line ends).  Never fails on malformed input (what can be read is read);
 * returns 0, or -1 only when out of memory.  Clear with archive_doc_clear. */
int archive_mime_extract(const void *msg, size_t len, const struct archive_limits *lim,
                         struct archive_doc *out);
void archive_doc_clear(struct archive_doc *d);

/* archive_html_to_text - visible text of an HTML fragment: tags removed,
 * <script>/<style> content dropped, entities decoded (named common ones and
 * numeric), block elements (p, div, br, li, tr, h1-h6) become line breaks,
 * runs of white space collapsed; at most max octets.  Caller frees. */
char *archive_html_to_text(const char *html, size_t len, size_t max);

#endif
