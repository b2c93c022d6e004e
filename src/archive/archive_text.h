/*
 * archive_text.h - private to the archive's MIME readers (archive_mime.c,
 * archive_journal.c): turning the octets of a part into bounded, valid UTF-8
 * text (charset conversion, transfer decoding), and small header helpers.
 * Implemented in archive_text.c; the HTML reader is archive_html.c.
 */
#ifndef MOAT_ARCHIVE_TEXT_H
#define MOAT_ARCHIVE_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include "../core/core.h"

/* archive_utf8_seq - length of the well-formed UTF-8 sequence at s[0..n),
 * 0 when s does not start with one (RFC 3629: no overlongs, surrogates) */
size_t archive_utf8_seq(const unsigned char *s, size_t n);

/* archive_utf8_cut - the largest character boundary <= max in s[0..len) */
size_t archive_utf8_cut(const char *s, size_t len, size_t max);

/* archive_text_append - append p[0..n), text in charset (NULL: undeclared),
 * to out as UTF-8 without NULs or CRs, so that out->len stays <= max.
 * Never fails: an unknown charset is read as Latin-1, bytes invalid in
 * UTF-8 are read as Latin-1 when the charset was undeclared (or US-ASCII)
 * and dropped otherwise.  False when max cut the text short. */
bool archive_text_append(struct buf *out, const char *p, size_t n, const char *charset,
                         size_t max);

/* archive_text_utf8 - a new NUL-terminated UTF-8 string of at most max
 * octets from p[0..n) in charset (see archive_text_append) */
char *archive_text_utf8(const char *p, size_t n, const char *charset, size_t max);

/* archive_transfer_decode - p[0..n) with its Content-Transfer-Encoding
 * (cte: the header value, NULL when absent) undone: base64,
 * quoted-printable and x-uuencode are decoded, anything else is taken as
 * it is.  Returns a new buffer (NUL-terminated, not counted in *outlen). */
unsigned char *archive_transfer_decode(const char *p, size_t n, const char *cte,
                                       size_t *outlen);

/* archive_header_end - offset of the body after the header section of
 * p[0..n) (the empty line included); n when there is no empty line */
size_t archive_header_end(const char *p, size_t n);

/* archive_line - the line at p[i..n): *content_end is where its CR LF or LF
 * starts (or n), the return value where the next line starts (or n) */
size_t archive_line(const char *p, size_t n, size_t i, size_t *content_end);

/* archive_header_get - the unfolded value of the first header field name
 * (case-insensitive) in the header section p[0..n), leading and trailing
 * white space removed; NULL when absent.  Caller frees. */
char *archive_header_get(const char *p, size_t n, const char *name);

#endif
