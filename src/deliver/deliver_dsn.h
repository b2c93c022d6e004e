/*
 * deliver_dsn.h - private to src/deliver: the RFC 3464 delivery status
 * notification builder.  A pure function (no clock, no randomness: the
 * caller passes the date, boundary and Message-ID), so tests compare its
 * output with golden files.
 */
#ifndef MOAT_DELIVER_DSN_H
#define MOAT_DELIVER_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "../core/core.h"

enum dsn_action { DSN_ACTION_FAILED, DSN_ACTION_DELAYED, DSN_ACTION_DELIVERED };

struct dsn_rcpt {
    const char *addr;            /* final recipient, without <> */
    const char *orcpt;           /* RFC 3461 ORCPT "type;xtext" as received, or NULL */
    enum dsn_action action;
    const char *status;          /* RFC 3463 "5.1.1" */
    const char *remote_mta;      /* host name of the server that answered, or NULL */
    const char *diag;            /* "550 5.1.1 text" (an SMTP reply) or a local reason, or NULL */
    int64_t last_attempt_ms;     /* 0 = none */
};

struct dsn_input {
    const char *reporting_mta;   /* our host name */
    const char *qid;             /* the original message's queue id */
    const char *envid;           /* RFC 3461 ENVID, xtext as received, or NULL */
    const char *sender;          /* the original envelope sender: the DSN's To */
    int64_t arrival_ms;
    int64_t now_ms;              /* Date: */
    int64_t retry_until_ms;      /* delayed recipients: Will-Retry-Until; 0 = omit */
    const char *boundary;
    const char *message_id;      /* "<...>" */
    const struct dsn_rcpt *rcpts;
    size_t n_rcpts;
    const char *orig;            /* the returned content (CRLF lines) or NULL */
    size_t orig_len;
    bool orig_full;              /* message/rfc822, else text/rfc822-headers */
    bool orig_8bit;
};

/* deliver_dsn_build - append the whole DSN message (CRLF line ends) to out */
void deliver_dsn_build(const struct dsn_input *in, struct buf *out);
/* deliver_dsn_status - RFC 3463 status for a diagnostic: its enhanced code,
 * else derived from the reply code (5xx -> 5.0.0, 4xx -> 4.0.0) */
void deliver_dsn_status(const char *diag, int code, char *dst, size_t size);
/* deliver_xtext_decode - RFC 3461 4: "+HH" -> octet; invalid input copied as is */
void deliver_xtext_decode(const char *s, char *dst, size_t size);

#endif
