/*
 * smtp_parse.h - pure parsers for the SMTP server: a command line into verb
 * and arguments, RFC 5321 4.1.2 paths into local part and domain, and the
 * MAIL / RCPT parameters of the extensions Moat offers (SIZE, BODY,
 * SMTPUTF8, DSN).  No I/O, no allocation, no global state: every function
 * can be unit-tested and fuzzed on its own.
 *
 * Private to src/smtp/ (and its tests).  Errors come back as a complete SMTP
 * reply (code, enhanced status code, text) so the session only relays them.
 */
#ifndef MOAT_SMTP_PARSE_H
#define MOAT_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_VERB_MAX 16
#define SMTP_LOCAL_MAX 64      /* RFC 5321 4.5.3.1.1 */
#define SMTP_DOMAIN_MAX 255    /* RFC 5321 4.5.3.1.2 */
#define SMTP_PATH_MAX 256      /* RFC 5321 4.5.3.1.3, including "<" and ">" */
#define SMTP_ENVID_MAX 100     /* RFC 3461 4.4 */
#define SMTP_ORCPT_MAX 500     /* RFC 3461 4.2 */
#define SMTP_HELO_MAX 255

/* a parse failure, as the reply the client gets */
struct smtp_parse_error {
    int code;           /* 501, 553, 555 ... */
    char dsn[8];        /* "5.1.7" */
    char text[160];
};

/* one command line (without its CRLF) split into verb and argument string */
struct smtp_cmdline {
    char verb[SMTP_VERB_MAX + 1];   /* upper-cased ASCII letters */
    const char *args;               /* into the line; leading/trailing SP trimmed */
    size_t args_len;
};

/* smtp_parse_command - 0, or -1 with err filled:
 * 500 5.5.2 for a line that has no verb, 501 5.5.2 for NUL, CR or LF inside
 * the line or invalid UTF-8 (the line must be CRLF-delimited by the caller). */
int smtp_parse_command(const char *line, size_t len, struct smtp_cmdline *out,
                       struct smtp_parse_error *err);

/* address flags */
#define SMTP_ADDR_NULL      0x01   /* the null path <> */
#define SMTP_ADDR_UTF8      0x02   /* non-ASCII octets: needs SMTPUTF8 (RFC 6531) */
#define SMTP_ADDR_LITERAL   0x04   /* domain is an address literal [..] */
#define SMTP_ADDR_NODOMAIN  0x08   /* "postmaster" with no domain (RFC 5321 4.5.1) */
#define SMTP_ADDR_QUOTED    0x10   /* local part is a quoted string */
#define SMTP_ADDR_ROUTE     0x20   /* a source route was given (and ignored, RFC 5321 4.1.2) */

struct smtp_addr {
    char addr[SMTP_PATH_MAX + 1];      /* "local@domain" as written, "" for <> */
    char local[SMTP_LOCAL_MAX + 1];    /* as written (quotes kept) */
    char domain[SMTP_DOMAIN_MAX + 1];  /* as written; "" with NODOMAIN or NULL */
    unsigned flags;
};

/* smtp_parse_path modes */
enum smtp_path_role { SMTP_PATH_SENDER, SMTP_PATH_RCPT };

/* smtp_parse_path - parse "<...>" at s; *used gets the octets consumed.
 * Sender: <> allowed, errors are 501 5.1.7.  Recipient: <> refused,
 * <postmaster> allowed with SMTP_ADDR_NODOMAIN, errors are 501 5.1.3. */
int smtp_parse_path(const char *s, size_t len, enum smtp_path_role role,
                    struct smtp_addr *out, size_t *used, struct smtp_parse_error *err);

enum smtp_body { SMTP_BODY_NONE = 0, SMTP_BODY_7BIT, SMTP_BODY_8BITMIME };
enum smtp_dsn_ret { SMTP_RET_NONE = 0, SMTP_RET_FULL, SMTP_RET_HDRS };

/* RFC 3461 NOTIFY bits: same values as SPOOL_NOTIFY_* */
#define SMTP_NOTIFY_NEVER   0x1
#define SMTP_NOTIFY_SUCCESS 0x2
#define SMTP_NOTIFY_FAILURE 0x4
#define SMTP_NOTIFY_DELAY   0x8

struct smtp_mail_args {
    struct smtp_addr path;
    int64_t size;                    /* RFC 1870 SIZE=, -1 when absent */
    enum smtp_body body;             /* RFC 6152 BODY= */
    bool smtputf8;                   /* RFC 6531 SMTPUTF8 */
    enum smtp_dsn_ret ret;           /* RFC 3461 RET= */
    char envid[SMTP_ENVID_MAX + 1];  /* RFC 3461 ENVID=, xtext as received; "" when absent */
};

struct smtp_rcpt_args {
    struct smtp_addr path;
    unsigned notify;                 /* SMTP_NOTIFY_*, 0 when absent */
    char orcpt[SMTP_ORCPT_MAX + 1];  /* RFC 3461 ORCPT= "type;xtext" as received; "" when absent */
};

/* smtp_parse_mail - the argument of MAIL ("FROM:<path> params").
 * A non-ASCII path without SMTPUTF8 is 553 5.6.7 (RFC 6531 3.5); unknown
 * parameters 555 5.5.4 (RFC 5321 4.1.1.11); bad values 501 5.5.4.
 * The SIZE limit is the caller's business. */
int smtp_parse_mail(const char *args, size_t len, struct smtp_mail_args *out,
                    struct smtp_parse_error *err);
/* smtp_parse_rcpt - the argument of RCPT ("TO:<path> params"); smtputf8 is
 * whether the transaction's MAIL carried SMTPUTF8 */
int smtp_parse_rcpt(const char *args, size_t len, bool smtputf8, struct smtp_rcpt_args *out,
                    struct smtp_parse_error *err);

/* smtp_parse_helo - the argument of HELO/EHLO: one word, a domain or an
 * address literal, printable; 501 5.5.4 otherwise.  out gets a copy. */
int smtp_parse_helo(const char *args, size_t len, char *out, size_t outsize,
                    struct smtp_parse_error *err);

/* smtp_xtext_valid - RFC 3461 4: xtext (chars 33..126 but "+" and "=", and "+HH");
 * allow_utf8 also accepts UTF-8 (RFC 6533 unitext) */
bool smtp_xtext_valid(const char *s, size_t len, bool allow_utf8);

#endif
