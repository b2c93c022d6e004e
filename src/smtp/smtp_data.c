/*
 * smtp_data.c - the DATA reader state machine (see smtp_data.h for the
 * contract and the replies it chooses).
 *
 * Entry points: smtp_data_init, smtp_data_feed, smtp_data_verdict.
 *
 * The machine works on the wire octets, one state per position class
 * (start of line, "." at start of line, ".\r" at start of line, inside a
 * line, "\r" inside a line).  Runs of ordinary octets are copied in bulk.
 * Header tracking runs on the canonical octets: a header line is a field
 * name (printable ASCII, RFC 5322 2.2) then ":" (white space before the
 * colon tolerated, RFC 5322 4.5), or a continuation line starting with
 * white space; the first line that is neither (normally the empty line)
 * ends the header section.
 */
#include <string.h>
#include "smtp_data.h"

void smtp_data_init(struct smtp_data *d, const struct smtp_data_limits *lim)
{
    memset(d, 0, sizeof *d);
    d->lim = *lim;
    d->st = SMTP_DS_SOL;
    d->hst = SMTP_DH_NAME;
}

/* data_wire - account n wire octets to the current line (RFC 5321 4.5.3.1.6) */
static inline void data_wire(struct smtp_data *d, size_t n)
{
    d->line_len += n;
    if (d->line_len > d->lim.max_line)
        d->events |= SMTP_DATA_LINE_TOO_LONG;
}

/* data_header_end - the header section is over */
static void data_header_end(struct smtp_data *d)
{
    d->hst = SMTP_DH_BODY;
    d->events |= SMTP_DATA_HEADER_END;
}

/* data_field_found - a ":" closed a field name: count Received fields (RFC 5321 6.3) */
static void data_field_found(struct smtp_data *d)
{
    d->hst = SMTP_DH_VALUE;
    if (d->name_len == 8 && memcmp(d->name, "received", 8) == 0) {
        d->received++;
        if (d->received > d->lim.max_received)
            d->events |= SMTP_DATA_LOOP;
    }
}

/* data_header_byte - feed one canonical content octet to the header tracker */
static void data_header_byte(struct smtp_data *d, unsigned char c, bool line_start)
{
    if (d->hst == SMTP_DH_NAME) {
        if (line_start && (c == ' ' || c == '\t')) {
            /* RFC 5322 2.2.3: folded continuation of the previous field */
            if (d->header_size == 0)
                data_header_end(d);      /* nothing to continue: not a header section */
            else
                d->hst = SMTP_DH_VALUE;
            return;
        }
        if (c == ':') {
            if (d->name_len == 0)
                data_header_end(d);
            else
                data_field_found(d);
        } else if (c > 32 && c < 127) {
            if (d->name_len < sizeof d->name)
                d->name[d->name_len] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
            d->name_len++;
        } else if ((c == ' ' || c == '\t') && d->name_len > 0) {
            d->hst = SMTP_DH_NAME_WSP;
        } else {
            data_header_end(d);
        }
    } else if (d->hst == SMTP_DH_NAME_WSP) {
        if (c == ':')
            data_field_found(d);
        else if (c != ' ' && c != '\t')
            data_header_end(d);
    }
}

/* data_content - n canonical octets inside a line (no CR, no LF) */
static void data_content(struct smtp_data *d, const char *p, size_t n, struct buf *out)
{
    bool was_header = d->hst != SMTP_DH_BODY;
    size_t k = 0;
    for (; k < n && (d->hst == SMTP_DH_NAME || d->hst == SMTP_DH_NAME_WSP); k++)
        data_header_byte(d, (unsigned char)p[k], d->line_content + k == 0);
    /* count exactly the octets read while in the header section, so the
     * result does not depend on how the input was split */
    if (was_header) {
        d->header_size += d->hst != SMTP_DH_BODY ? n : k;
        if (d->header_size > d->lim.max_header)
            d->events |= SMTP_DATA_HEADER_TOO_BIG;
    }
    if (!(d->events & SMTP_DATA_8BIT)) {
        for (size_t j = 0; j < n; j++)
            if ((unsigned char)p[j] >= 0x80) {
                d->events |= SMTP_DATA_8BIT;
                break;
            }
    }
    d->line_content += n;
    d->size += n;
    if (d->size > d->lim.max_size)
        d->events |= SMTP_DATA_TOO_BIG;
    /* a refused message is read to its end but never stored */
    if (!(d->events & SMTP_DATA_REFUSE))
        buf_append(out, p, n);
}

/* data_eol - a CRLF ended the current line */
static void data_eol(struct smtp_data *d, struct buf *out)
{
    if (d->hst != SMTP_DH_BODY) {
        if (d->line_content == 0 || d->hst == SMTP_DH_NAME || d->hst == SMTP_DH_NAME_WSP) {
            /* the empty line, or a line that is not a header field */
            if (d->line_content == 0)
                d->header_size += 2;
            data_header_end(d);
        } else {
            d->header_size += 2;
            d->hst = SMTP_DH_NAME;
        }
        if (d->header_size > d->lim.max_header)
            d->events |= SMTP_DATA_HEADER_TOO_BIG;
    }
    d->name_len = 0;
    d->line_content = 0;
    d->line_len = 0;
    d->size += 2;
    if (d->size > d->lim.max_size)
        d->events |= SMTP_DATA_TOO_BIG;
    if (!(d->events & SMTP_DATA_REFUSE))
        buf_append(out, "\r\n", 2);
}

size_t smtp_data_feed(struct smtp_data *d, const char *in, size_t len, struct buf *out)
{
    size_t i = 0;
    while (i < len && d->st != SMTP_DS_END) {
        char c = in[i];
        switch (d->st) {
        case SMTP_DS_SOL:
            if (c == '.') {
                data_wire(d, 1);
                d->st = SMTP_DS_SOL_DOT;
                i++;
            } else {
                d->st = SMTP_DS_TEXT;   /* c is read in TEXT */
            }
            break;
        case SMTP_DS_SOL_DOT:
            if (c == '\r') {
                data_wire(d, 1);
                d->st = SMTP_DS_SOL_DOT_CR;
                i++;
            } else {
                /* RFC 5321 4.5.2: the leading "." of a line is removed; c is read in TEXT */
                d->st = SMTP_DS_TEXT;
            }
            break;
        case SMTP_DS_SOL_DOT_CR:
            if (c == '\n') {
                /* CRLF "." CRLF: the only end of data (RFC 5321 4.1.1.4) */
                data_wire(d, 1);
                d->st = SMTP_DS_END;
                d->events |= SMTP_DATA_END;
                i++;
            } else {
                d->events |= SMTP_DATA_BARE_CR;
                d->st = SMTP_DS_TEXT;
            }
            break;
        case SMTP_DS_TEXT: {
            size_t j = i;
            while (j < len && in[j] != '\r' && in[j] != '\n')
                j++;
            if (j > i) {
                data_wire(d, j - i);
                data_content(d, in + i, j - i, out);
                i = j;
                if (i >= len)
                    break;
            }
            data_wire(d, 1);
            if (in[i] == '\r') {
                d->st = SMTP_DS_CR;
            } else {
                /* a bare LF is not a line end (RFC 5321 2.3.8): "\n.\n" cannot end the data */
                d->events |= SMTP_DATA_BARE_LF;
            }
            i++;
            break;
        }
        case SMTP_DS_CR:
            if (c == '\n') {
                data_wire(d, 1);
                i++;
                data_eol(d, out);
                d->st = SMTP_DS_SOL;
            } else {
                /* a bare CR; c (maybe another CR) is read in TEXT */
                d->events |= SMTP_DATA_BARE_CR;
                d->st = SMTP_DS_TEXT;
            }
            break;
        case SMTP_DS_END:
            break;
        }
    }
    return i;
}

int smtp_data_verdict(const struct smtp_data *d, int *code, const char **dsn, const char **text)
{
    unsigned ev = d->events;
    if (ev & (SMTP_DATA_BARE_LF | SMTP_DATA_BARE_CR)) {
        *code = 550;
        *dsn = "5.6.11";
        *text = (ev & SMTP_DATA_BARE_LF) ? "Message refused: bare LF in message data (RFC 5321 2.3.8)"
                                         : "Message refused: bare CR in message data (RFC 5321 2.3.8)";
        return -1;
    }
    if (ev & SMTP_DATA_LINE_TOO_LONG) {
        *code = 500;
        *dsn = "5.5.6";
        *text = "Message refused: line too long (RFC 5321 4.5.3.1.6)";
        return -1;
    }
    if (ev & SMTP_DATA_TOO_BIG) {
        *code = 552;
        *dsn = "5.3.4";
        *text = "Message size exceeds fixed maximum message size";
        return -1;
    }
    if (ev & SMTP_DATA_HEADER_TOO_BIG) {
        *code = 552;
        *dsn = "5.3.4";
        *text = "Message header section exceeds the maximum header size";
        return -1;
    }
    if (ev & SMTP_DATA_LOOP) {
        *code = 554;
        *dsn = "5.4.6";
        *text = "Too many Received headers: mail loop detected";
        return -1;
    }
    *code = 0;
    *dsn = "";
    *text = "";
    return 0;
}
