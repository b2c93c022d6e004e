/*
 * policy_msg.h - pure, bounded parsers of the message itself (not the
 * envelope) for the end-of-DATA checks: today the header From domain.
 *
 * The parser, and what the anti-spoofing check and the content stage
 * (policy_content.h) rely on:
 *   msg_header_from_domain scans only the header section of msg (up to the
 *   first empty line, never past len, never past MSG_HEADER_SCAN_MAX bytes),
 *   unfolds continuation lines, skips comments, display names (atoms and
 *   quoted strings), angle brackets and group syntax ("list: a@b;"), and
 *   finds the domain of the one author address.  It answers true with the
 *   lower-cased domain in dom (NUL-terminated) only when there is exactly
 *   one From header field holding exactly one address with a non-empty
 *   domain that fits domlen; otherwise false (dom = "").
 *
 *   A false answer means "no single author domain": zero or several From
 *   fields, several addresses (a mailbox-list), an empty group, a missing
 *   or malformed domain, an unterminated header section within the bound.
 *   RFC 7489 section 6.6.1 says such messages get the strictest treatment
 *   a receiver applies (DMARC: reject rather than evaluate); the callers
 *   (anti-spoofing, DMARC) treat false accordingly, never as "nothing to
 *   check".
 *
 *   Session side (smtp_session.c):
 *     struct smtp_txn: struct buf head   - the first up to 64 KiB of the
 *                                          message as it streams (dot-
 *                                          unstuffed), filled in
 *                                          session_data_read;
 *                      char *antispoof_spf_domain - set at RCPT when the
 *                                          only bypass that could apply
 *                                          is kind "spf" for that domain.
 *     struct policy_request: const char *header_from  - the domain found
 *                                          by msg_header_from_domain, NULL
 *                                          when it answered false;
 *                      int header_from_fields - msg_header_from_count
 *                                          (0 = no From at all);
 *                      const char *head, size_t head_len - t->head;
 *                      const char *antispoof_spf_domain - t's value.
 *     enum policy_stage: POLICY_DATA_END (synchronous, evaluated in
 *                                          session_data_end before commit,
 *                                          the asynchronous content stage runs
 *                                          right after it).
 */
#ifndef MOAT_POLICY_MSG_H
#define MOAT_POLICY_MSG_H

#include <stdbool.h>
#include <stddef.h>

/* the header section is never scanned beyond this many bytes */
#define MSG_HEADER_SCAN_MAX (64 * 1024)
/* a longer From field (after unfolding) is refused as malformed */
#define MSG_FROM_FIELD_MAX 4096

bool msg_header_from_domain(const char *msg, size_t len, char *dom, size_t domlen);
/* msg_header_from_count - how many From fields the header section has (same
 * bounds; lines that are not fields are skipped): 0 tells "no author named"
 * from "not exactly one author" when msg_header_from_domain is false */
int msg_header_from_count(const char *msg, size_t len);
/* msg_header_value - the first field called name (case-insensitive) in the
 * header section (same bounds), unfolded, control characters as spaces,
 * white space trimmed, at most size-1 octets cut at a UTF-8 boundary; raw
 * 8-bit that is not UTF-8 becomes '?'.  Its length; "" (0) when absent.
 * (Tracking: Subject and Message-ID, core/track.h.) */
size_t msg_header_value(const char *msg, size_t len, const char *name, char *out, size_t size);
/* msg_decode_words - decode the RFC 2047 encoded words of the NUL-terminated
 * s in place (B and Q; UTF-8, US-ASCII and ISO-8859-1; words in another
 * charset stay as they are), the result bounded by size and UTF-8 (else
 * '?' for 8-bit octets); its length */
size_t msg_decode_words(char *s, size_t size);

#endif
