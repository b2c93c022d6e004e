/*
 * smtp_data.h - the DATA reader: a pure state machine that takes the octets
 * a client sends after "354" and produces the canonical message (CRLF line
 * ends, dot-stuffing removed, RFC 5321 4.5.2) plus events: end of data,
 * bare CR or LF seen, over-long line, size exceeded, end of the header
 * section, header section too large, Received header count.
 *
 * No I/O and no allocation besides appending to the caller's struct buf, so
 * it is unit-tested and fuzzed without a network (tests/unit/test_smtp_data.c,
 * tests/fuzz/fuzz_smtp_data.c).
 *
 * Protocol safety (SMTP smuggling): the end of data is recognised ONLY as
 * CR LF "." CR LF, where the first CR LF ends the previous line (or the data
 * starts there).  "\n.\n", "\r.\r", "\r\n.\n" and their mixes are not an
 * end of data; a bare CR or a bare LF anywhere makes the whole message
 * refused (smtp_data_verdict), so no reading of the stream by another MTA
 * can find a second message in it.
 *
 * Replies chosen (smtp_data_verdict, in this order of precedence):
 *   bare CR or LF         550 5.6.11 (RFC 5321 2.3.8 forbids them; X.6.x is
 *                                     RFC 3463's media class, and 5.6.11 is the
 *                                     code Exchange Online uses for bare LF)
 *   text line too long    500 5.5.6  (RFC 5321 4.5.3.1.6 and its "500 Line too long")
 *   message too big       552 5.3.4  (RFC 5321 4.5.3.1.10 "552 Too much mail data")
 *   header section too big 552 5.3.4
 *   too many Received     554 5.4.6  (RFC 5321 6.3 mail loop; RFC 3463 X.4.6 routing loop)
 */
#ifndef MOAT_SMTP_DATA_H
#define MOAT_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "../core/core.h"

/* events (a bit set; each is sticky once seen) */
#define SMTP_DATA_END           0x001   /* CRLF.CRLF consumed */
#define SMTP_DATA_BARE_LF       0x002
#define SMTP_DATA_BARE_CR       0x004
#define SMTP_DATA_LINE_TOO_LONG 0x008
#define SMTP_DATA_TOO_BIG       0x010   /* message_size_limit exceeded */
#define SMTP_DATA_HEADER_END    0x020   /* the header section is over */
#define SMTP_DATA_HEADER_TOO_BIG 0x040
#define SMTP_DATA_LOOP          0x080   /* more Received headers than allowed */
#define SMTP_DATA_8BIT          0x100   /* an octet >= 0x80 was seen */

#define SMTP_DATA_REFUSE (SMTP_DATA_BARE_LF | SMTP_DATA_BARE_CR | SMTP_DATA_LINE_TOO_LONG | \
                          SMTP_DATA_TOO_BIG | SMTP_DATA_HEADER_TOO_BIG | SMTP_DATA_LOOP)

struct smtp_data_limits {
    size_t max_line;          /* octets incl. CRLF, as sent (RFC 5321 4.5.3.1.6: 1000) */
    uint64_t max_size;        /* canonical octets */
    size_t max_header;        /* canonical octets of the header section */
    unsigned max_received;    /* Received header fields allowed */
};

enum smtp_data_state {
    SMTP_DS_SOL = 0,      /* at the start of a line */
    SMTP_DS_SOL_DOT,      /* "." at the start of a line */
    SMTP_DS_SOL_DOT_CR,   /* ".\r" at the start of a line */
    SMTP_DS_TEXT,         /* inside a line */
    SMTP_DS_CR,           /* "\r" inside a line */
    SMTP_DS_END,          /* the end of data was consumed */
};

enum smtp_data_hstate {
    SMTP_DH_NAME = 0,     /* reading a field name at the start of a header line */
    SMTP_DH_NAME_WSP,     /* white space after a field name, before ":" */
    SMTP_DH_VALUE,        /* past the ":" (or a continuation line) */
    SMTP_DH_BODY,         /* the header section is over */
};

struct smtp_data {
    struct smtp_data_limits lim;
    enum smtp_data_state st;
    enum smtp_data_hstate hst;
    unsigned events;
    size_t line_len;          /* wire octets of the current line */
    size_t line_content;      /* canonical octets of the current line before CRLF */
    uint64_t size;            /* canonical octets (counted even when not stored) */
    uint64_t header_size;
    unsigned received;        /* Received: fields in the header section */
    char name[16];            /* start of the current field name, lower-cased */
    size_t name_len;          /* octets of the name seen (may exceed sizeof name) */
};

/* smtp_data_init - start reading a message */
void smtp_data_init(struct smtp_data *d, const struct smtp_data_limits *lim);
/* smtp_data_feed - consume input, append canonical data to out (nothing is
 * appended once a refusal event is set: the message will not be stored).
 * Returns the octets consumed: all of len, or fewer when the end of data was
 * reached (what follows belongs to the next command, RFC 2920). */
size_t smtp_data_feed(struct smtp_data *d, const char *in, size_t len, struct buf *out);
static inline bool smtp_data_done(const struct smtp_data *d) { return d->st == SMTP_DS_END; }
static inline unsigned smtp_data_events(const struct smtp_data *d) { return d->events; }

/* smtp_data_verdict - after the end: 0 when the message may be stored, else
 * -1 with the reply (code, dsn, text) for the most serious problem */
int smtp_data_verdict(const struct smtp_data *d, int *code, const char **dsn, const char **text);

#endif
