/*
 * archive_journal.h - Microsoft Exchange / Microsoft 365 envelope journal
 * reports.  A report is a message (carrying an X-MS-Journal-Report header)
 * whose first part is a text/plain envelope block of "Name: value" lines:
 *
 *     Sender: alice@example.com
 *     On-Behalf-Of: ...              (optional)
 *     Subject: ...
 *     Message-Id: <...>
 *     To: bob@example.com
 *     To: carol@example.com, Expanded: sales@example.com
 *     Cc: dave@example.com, Forwarded: erin@example.com
 *     Bcc: ...
 *     Recipient: ...                 (recipient of unknown type)
 *
 * and whose second part is the original message (message/rfc822).  The
 * envelope block gives the envelope the archive records; the original is
 * what is archived.  A message that is not a report (a plain BCC-style
 * journal copy) is archived as it came, with the transaction's envelope.
 * A message that claims to be a report (the header, or the multipart
 * shape with an envelope block) but cannot be read is MALFORMED: kept as
 * it came and flagged, never dropped.
 *
 * Pure (no I/O), thread-safe, bounded by the archive limits; fuzzed by
 * tests/fuzz/fuzz_journal_report.c.  The limits bound the envelope block
 * (max_parse octets); the original is never cut (that would archive a
 * corrupt message): its size is the report's, already bounded by the SMTP
 * message size limit.  "Sender: <>" (or empty) reads as the null sender "".
 */
#ifndef MOAT_ARCHIVE_JOURNAL_H
#define MOAT_ARCHIVE_JOURNAL_H

#include <stddef.h>
#include "archive_mime.h"

#define ARCHIVE_JOURNAL_MAX_RCPTS 10000   /* recipients read from one envelope block */

enum archive_journal_kind {
    ARCHIVE_JOURNAL_PLAIN = 0,      /* not a report: archive the message itself */
    ARCHIVE_JOURNAL_REPORT,         /* unwrapped: envelope below, original attached */
    ARCHIVE_JOURNAL_MALFORMED,      /* looks like a report, cannot be read: keep as is */
};

struct archive_journal_rcpt {
    char *addr;                     /* lower-case address */
    char *kind;                     /* "to", "cc", "bcc", "recipient" */
    char *expanded;                 /* the group it was expanded from, or NULL */
    char *forwarded;                /* the recipient it was forwarded from, or NULL */
};

struct archive_journal {
    enum archive_journal_kind kind;
    char *sender;                   /* REPORT: lower-case address ("" for none) */
    char *on_behalf_of;             /* or NULL */
    char *subject;                  /* or NULL */
    char *message_id;               /* without <>, or NULL */
    struct archive_journal_rcpt *rcpts;
    size_t n_rcpts;
    unsigned char *original;        /* REPORT: the attached message's octets (transfer
                                     * encoding undone), owned */
    size_t original_len;
    char *error;                    /* MALFORMED: why, one line */
};

/* archive_journal_parse - classify msg[0..len) and, for a report, unwrap it.
 * Returns 0 (out filled, clear with archive_journal_clear), -1 only when out of memory. */
int archive_journal_parse(const void *msg, size_t len, const struct archive_limits *lim,
                          struct archive_journal *out);
void archive_journal_clear(struct archive_journal *j);
const char *archive_journal_kind_name(enum archive_journal_kind k);   /* "plain", "report", "malformed" */

#endif
