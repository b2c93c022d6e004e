/*
 * smtp_client.h - the delivery-side SMTP client (private to src/deliver):
 * one outbound connection on the event loop.  smtp_conn_open connects,
 * reads the greeting, EHLO (HELO on 5xx), STARTTLS per the TLS mode, EHLO
 * again, then reports ready; smtp_conn_send runs one mail transaction
 * (PIPELINING when offered) streaming the message with dot-stuffing applied
 * on the fly, and reports per-recipient results; the connection can then
 * carry the next transaction, or smtp_conn_quit ends it.
 *
 * smtp_reply_parse is a pure function (fuzzed by tests/fuzz/fuzz_smtp_reply.c).
 */
#ifndef MOAT_SMTP_CLIENT_H
#define MOAT_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <openssl/ssl.h>
#include "../core/core.h"

struct event_base;
struct smtp_conn;

/* RFC 5321 4.5.3.1.5: a reply line is at most 512 octets incl. CRLF; real
 * servers exceed it, so we accept up to 2048 and bound the line count */
#define SMTP_REPLY_MAX_LINE 2048
#define SMTP_REPLY_MAX_LINES 128
#define SMTP_REPLY_MAX_TEXT 4096
#define SMTP_DIAG_MAX 512

struct smtp_reply {
    int code;                         /* 200..599 */
    char enh[16];                     /* RFC 3463 "5.1.1", "" when absent */
    char text[SMTP_REPLY_MAX_TEXT];   /* line texts joined with '\n' (truncated) */
    size_t n_lines;
};

/* smtp_reply_parse - one complete reply at the start of [p, p+len).
 * 1: complete, *used octets consumed; 0: need more input; -1: malformed
 * (a bad code, mixed codes, an over-long line, too many lines). */
int smtp_reply_parse(const char *p, size_t len, struct smtp_reply *r, size_t *used);
/* smtp_reply_diag - "550 5.1.1 first line of text" into dst */
void smtp_reply_diag(const struct smtp_reply *r, char *dst, size_t size);

enum smtp_client_tls {
    SMTP_CLIENT_TLS_MAY = 0,      /* STARTTLS when offered */
    SMTP_CLIENT_TLS_NONE,         /* never (fallback after a failed handshake) */
    SMTP_CLIENT_TLS_ENCRYPT,      /* required, certificate not checked */
    SMTP_CLIENT_TLS_VERIFY,       /* required, trusted chain, name matches */
    SMTP_CLIENT_TLS_DANE,         /* required, authenticated by TLSA records
                                   * (RFC 7672): only through smtp_conn_open_dane */
};

struct smtp_client_config {
    struct event_base *base;
    SSL_CTX *tls_ctx;             /* may be NULL: no STARTTLS then */
    const char *helo_name;
    int timeout_connect;          /* seconds */
    int timeout_command;          /* seconds, RFC 5321 4.5.3.2 */
    int timeout_data;             /* seconds for the reply to "." (4.5.3.2.6: 10 min) */
    /* source address to bind before connecting (port 0), or NULL: the
     * kernel's choice; same family as the destination */
    const struct sockaddr *source;
    socklen_t source_len;
};

/* why a connection could not be used */
enum smtp_conn_error {
    SMTP_CONN_OK = 0,
    SMTP_CONN_NETWORK,            /* connect failed, timeout, lost */
    SMTP_CONN_GREETING,           /* 4xx/5xx greeting or HELO refused */
    SMTP_CONN_TLS,                /* STARTTLS or the handshake failed */
    SMTP_CONN_TLS_REQUIRED,       /* TLS required, not offered */
};

/* ready: err SMTP_CONN_OK and c usable, else c is already freed; diag says why */
typedef void (*smtp_conn_ready_cb)(void *arg, struct smtp_conn *c, enum smtp_conn_error err,
                                   int code, const char *diag);

/* smtp_conn_open - start connecting to sa; peer_name is the host name used
 * for logs, SNI and (VERIFY) certificate name checks.  NULL (and no
 * callback) when it cannot even start: out of memory, or cfg->source cannot
 * be bound (logged). */
struct smtp_conn *smtp_conn_open(const struct smtp_client_config *cfg,
                                 const struct sockaddr *sa, socklen_t salen,
                                 const char *peer_name, enum smtp_client_tls tls,
                                 smtp_conn_ready_cb cb, void *arg);

struct dane_tlsa;   /* src/deliver/deliver_dane.h */
/* smtp_conn_open_dane - as smtp_conn_open with TLS required and the
 * handshake authenticated by the TLSA records t[0..n) (RFC 7672 3, through
 * OpenSSL's DANE support): DANE-EE(3) matches the server's certificate or
 * key with no name or expiry check; DANE-TA(2) matches an issuer in the
 * chain and the certificate must name the TLSA base domain (base: the MX
 * host's CNAME target where the records came from there; NULL = peer_name)
 * or peer_name (the MX host).  SNI is the base domain (RFC 7672 8.1).  The
 * records are copied.  No usable record, or no match: cb gets
 * SMTP_CONN_TLS with a diag "4.7.5 TLSA mismatch at PEER: reason" (a
 * server without STARTTLS: SMTP_CONN_TLS_REQUIRED, "4.7.4"). */
struct smtp_conn *smtp_conn_open_dane(const struct smtp_client_config *cfg,
                                      const struct sockaddr *sa, socklen_t salen,
                                      const char *peer_name, const char *base,
                                      const struct dane_tlsa *t, size_t n,
                                      smtp_conn_ready_cb cb, void *arg);

#define SMTP_MSG_8BIT     0x1     /* body has 8-bit octets: BODY=8BITMIME */
#define SMTP_MSG_SMTPUTF8 0x2     /* needs SMTPUTF8 */
/* SMTP_MSG_PROBE - a recipient probe (call-forward, Connect's checks): MAIL
 * and RCPT only, no DATA; each recipient's result is the reply to its RCPT
 * (2xx: exists) and the transaction is left for an RSET or QUIT; read unused */
#define SMTP_MSG_PROBE    0x4

struct smtp_client_rcpt {
    const char *addr;
    const char *orcpt;            /* xtext as received, or NULL */
    unsigned notify;              /* SPOOL_NOTIFY_* bits, 0 = not given */
};

struct smtp_client_msg {
    const char *qid;              /* for logs */
    const char *sender;           /* "" = null reverse-path */
    const struct smtp_client_rcpt *rcpts;
    size_t n_rcpts;
    const char *envid;            /* xtext or NULL */
    int ret;                      /* 0 none, 1 FULL, 2 HDRS (enum spool_ret) */
    unsigned flags;               /* SMTP_MSG_* */
    uint64_t size;
    /* the canonical message (CRLF, unstuffed): returns octets, 0 at end, -1 on error */
    ssize_t (*read)(void *arg, uint64_t off, void *buf, size_t len);
    void *read_arg;
};

struct smtp_send_result {
    int *codes;                   /* per recipient: 2xx delivered, 4xx temp, 5xx perm */
    char (*diags)[SMTP_DIAG_MAX]; /* per recipient "550 5.1.1 ..." or a local reason */
    bool usable;                  /* the connection can carry another transaction */
};

typedef void (*smtp_send_cb)(void *arg, struct smtp_conn *c, const struct smtp_send_result *res);

/* smtp_conn_send - one transaction; msg and its arrays must live until cb */
void smtp_conn_send(struct smtp_conn *c, const struct smtp_client_msg *msg, smtp_send_cb cb, void *arg);
/* smtp_conn_quit - QUIT politely (bounded) and free; no callback */
void smtp_conn_quit(struct smtp_conn *c);
/* smtp_conn_free - drop at once */
void smtp_conn_free(struct smtp_conn *c);

/* "mx.example.com[192.0.2.1]:25" */
const char *smtp_conn_peer(const struct smtp_conn *c);
/* "TLSv1.3" or NULL when in clear */
const char *smtp_conn_tls_version(const struct smtp_conn *c);
/* "TLS_AES_256_GCM_SHA384" or NULL when in clear */
const char *smtp_conn_tls_cipher(const struct smtp_conn *c);
/* smtp_conn_tls_verified - TLS is on with a trusted chain whose name
 * matches peer_name (checked in every mode, enforced only by VERIFY);
 * *why (may be NULL) gets the reason when not */
bool smtp_conn_tls_verified(const struct smtp_conn *c, const char **why);
/* the TLSA record that authenticated the server ("DANE-EE(3) 1 1 depth=0"),
 * or NULL when the connection is not DANE-authenticated */
const char *smtp_conn_dane(const struct smtp_conn *c);
/* number of transactions started on this connection */
unsigned smtp_conn_uses(const struct smtp_conn *c);

#endif
