/*
 * archive_query.h - the archive's search language: terms separated by
 * white space, all of which must hold (AND):
 *
 *     from:ADDR|DOMAIN   to:ADDR|DOMAIN   subject:WORD   subject:"a phrase"
 *     before:DATE   after:DATE   has:attachment   WORD   "a phrase"
 *
 * DATE is YYYY-MM-DD (midnight UTC) or YYYY-MM-DDTHH:MM:SSZ; after: is
 * inclusive (received >= DATE), before: exclusive (received < DATE).
 * Operators are case-insensitive; a term with an unknown operator, an
 * unterminated quote, a bad date or address, or more than
 * ARCHIVE_QUERY_MAX_TERMS terms is an error naming the term.  Words keep
 * letters, digits and the characters of addresses; FTS5 syntax in them is
 * never passed through (every word is quoted when the store builds the
 * MATCH expression).
 *
 * Pure; fuzzed by tests/fuzz/fuzz_archive_query.c.
 */
#ifndef MOAT_ARCHIVE_QUERY_H
#define MOAT_ARCHIVE_QUERY_H

#include "../core/core.h"
#include "../store/store_archive.h"

#define ARCHIVE_QUERY_MAX_LEN 2048
#define ARCHIVE_QUERY_MAX_TERMS 32

/* archive_query_parse - q ("" matches everything) into *out (clear with
 * archive_query_clear); -1 with err (field "q", message naming the term) */
int archive_query_parse(const char *q, struct store_archive_query *out, struct error *err);
void archive_query_clear(struct store_archive_query *q);

#endif
