/*
 * held_text.h - the readable text of a held message (held_text.c): pure,
 * bounded, fuzzed.
 */
#ifndef MOAT_HELD_TEXT_H
#define MOAT_HELD_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include "../core/core.h"

/* held_text_preview - append to out at most max octets of the first
 * text/plain part of the message [msg, msg+len) (a prefix of it is fine),
 * decoded from quoted-printable/base64; false when none was found */
bool held_text_preview(const char *msg, size_t len, size_t max, struct buf *out);
/* held_header_section - octets of the header section including the empty line */
size_t held_header_section(const char *msg, size_t len);

#endif
