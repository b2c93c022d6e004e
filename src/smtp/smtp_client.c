/*
 * smtp_client.c - the delivery-side SMTP client (see smtp_client.h).
 *
 * One struct smtp_conn per outbound connection, on a libevent bufferevent
 * (an OpenSSL filter bufferevent is stacked on it after STARTTLS).  Replies
 * are collected in a bounded buffer and cut by smtp_reply_parse(); every
 * reply is matched against a queue of expected replies, so PIPELINING
 * (RFC 2920) and the one-command-at-a-time dialogue share one code path:
 * with PIPELINING the whole MAIL/RCPT.../DATA group is written at once,
 * without it the next command is written when the previous reply arrived.
 *
 * The message is streamed from the spool in blocks when the output buffer
 * drains (write low-watermark), with dot-stuffing (RFC 5321 4.5.2) applied
 * on the fly: the spool holds the unstuffed canonical form.
 *
 * Callbacks into the caller may free or reuse the connection; a depth
 * counter defers the real free until our own frames have returned.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include "smtp_client.h"
#include "../deliver/deliver_dane.h"

#define SMTP_CLIENT_BLOCK (64 * 1024)       /* read from the spool per step */
#define SMTP_CLIENT_OUT_HIGH (256 * 1024)   /* stop filling the output beyond */
#define SMTP_CLIENT_QUIT_TIMEOUT 5          /* seconds to wait for QUIT's reply */

/* --- reply parsing --- */

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* parse_enh - RFC 3463 "class.subject.detail" at the start of s, class as code */
static void parse_enh(const char *s, size_t len, int code, char *dst, size_t size)
{
    size_t i = 0;
    dst[0] = '\0';
    if (len < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[0] - '0' != code / 100 || s[1] != '.')
        return;
    i = 2;
    for (int part = 0; part < 2; part++) {
        size_t d = 0;
        while (i < len && is_digit(s[i]) && d < 3) {
            i++;
            d++;
        }
        if (d == 0)
            return;
        if (part == 0) {
            if (i >= len || s[i] != '.')
                return;
            i++;
        }
    }
    if (i < len && s[i] != ' ')
        return;
    if (i < size) {
        memcpy(dst, s, i);
        dst[i] = '\0';
    }
}

int smtp_reply_parse(const char *p, size_t len, struct smtp_reply *r, size_t *used)
{
    size_t pos = 0, tlen = 0;
    r->code = 0;
    r->enh[0] = '\0';
    r->text[0] = '\0';
    r->n_lines = 0;
    *used = 0;
    for (;;) {
        const char *nl = memchr(p + pos, '\n', len - pos);
        if (!nl)
            return len - pos > SMTP_REPLY_MAX_LINE ? -1 : 0;
        size_t llen = (size_t)(nl - (p + pos));   /* without LF */
        if (llen + 1 > SMTP_REPLY_MAX_LINE)
            return -1;
        if (llen && p[pos + llen - 1] == '\r')
            llen--;
        const char *l = p + pos;
        /* RFC 5321 4.2: Reply-code [ SP / "-" textstring ] */
        if (llen < 3 || !is_digit(l[0]) || !is_digit(l[1]) || !is_digit(l[2]) || l[0] < '2' || l[0] > '5')
            return -1;
        if (llen > 3 && l[3] != ' ' && l[3] != '-')
            return -1;
        int code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
        if (r->n_lines == 0)
            r->code = code;
        else if (code != r->code)
            return -1;
        if (++r->n_lines > SMTP_REPLY_MAX_LINES)
            return -1;
        const char *text = llen > 4 ? l + 4 : "";
        size_t tl = llen > 4 ? llen - 4 : 0;
        if (r->n_lines == 1)
            parse_enh(text, tl, code, r->enh, sizeof(r->enh));
        if (r->n_lines > 1 && tlen + 1 < sizeof(r->text))
            r->text[tlen++] = '\n';
        for (size_t i = 0; i < tl && tlen + 1 < sizeof(r->text); i++) {
            unsigned char c = (unsigned char)text[i];
            r->text[tlen++] = c < ' ' || c == 0x7f ? '?' : (char)c;
        }
        r->text[tlen] = '\0';
        pos = (size_t)(nl - p) + 1;
        if (llen == 3 || l[3] == ' ') {
            *used = pos;
            return 1;
        }
    }
}

void smtp_reply_diag(const struct smtp_reply *r, char *dst, size_t size)
{
    const char *t = r->text;
    size_t tl = strcspn(t, "\n");
    if (r->enh[0] && strncmp(t, r->enh, strlen(r->enh)) == 0) {
        t += strlen(r->enh);
        tl -= strlen(r->enh);
        while (*t == ' ' && tl) {
            t++;
            tl--;
        }
    }
    if (xsnprintf(dst, size, "%d%s%s%s%.*s", r->code, r->enh[0] ? " " : "", r->enh, tl ? " " : "", (int)tl, t) < 0 &&
        size)
        dst[size - 1] = '\0';
}

/* --- the connection --- */

enum smtp_conn_state {
    CS_CONNECTING, CS_GREETING, CS_EHLO, CS_HELO, CS_STARTTLS, CS_HANDSHAKE, CS_EHLO2,
    CS_READY, CS_TXN, CS_QUIT, CS_DEAD,
};

enum smtp_expect { EX_RSET, EX_MAIL, EX_RCPT, EX_DATA, EX_DOT, EX_DOT_DISCARD };

struct smtp_cmd {
    enum smtp_expect type;
    size_t idx;
};

struct smtp_conn {
    struct event_base *base;
    SSL_CTX *tls_ctx;
    char *helo_name;
    int t_connect, t_command, t_data;
    struct bufferevent *bev;
    struct event *timer;
    char peer[300];
    char *peer_name;
    enum smtp_client_tls tls;
    bool tls_on;
    bool tls_verified;            /* trusted chain and name match (checked in every mode) */
    char tls_verify_why[128];     /* why not, "" when verified */
    char tls_ver[24];
    char tls_cipher[64];         /* issue 11: the tracking event's TLS */
    struct dane_tlsa *tlsa;      /* SMTP_CLIENT_TLS_DANE: the records (copies) */
    char *dane_base;             /* the TLSA base domain, NULL = peer_name */
    size_t n_tlsa;
    char dane_match[64];         /* which record matched, "" before */
    enum smtp_conn_state st;
    struct buf in;
    int depth;
    bool doomed;
    unsigned uses;

    /* EHLO keywords (RFC 5321 4.1.1.1) */
    bool ext_pipelining, ext_8bitmime, ext_smtputf8, ext_dsn, ext_starttls, ext_size;
    uint64_t size_max;

    smtp_conn_ready_cb ready_cb;
    void *ready_arg;

    /* the transaction */
    const struct smtp_client_msg *msg;
    smtp_send_cb send_cb;
    void *send_arg;
    int *codes;
    char (*diags)[SMTP_DIAG_MAX];
    struct smtp_cmd *cmds;   /* what is to be sent, in order */
    size_t n_cmds, sent, answered;
    size_t accepted;
    bool mail_failed;
    bool need_rset;
    bool streaming;
    uint64_t data_off;
    bool at_bol;
    char last2[2];
    char *block;
};

static void conn_lost(struct smtp_conn *c, const char *why);
static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);

static void conn_destroy(struct smtp_conn *c)
{
    if (c->bev)
        bufferevent_free(c->bev);
    if (c->timer)
        event_free(c->timer);
    buf_free(&c->in);
    free(c->codes);
    free(c->diags);
    free(c->cmds);
    free(c->block);
    free(c->helo_name);
    free(c->peer_name);
    for (size_t i = 0; i < c->n_tlsa; i++)
        free(c->tlsa[i].data);
    free(c->tlsa);
    free(c->dane_base);
    free(c);
}

/* conn_release - free now, or when the outermost frame returns */
static void conn_release(struct smtp_conn *c)
{
    c->st = CS_DEAD;
    if (c->bev)
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    if (c->timer)
        event_del(c->timer);
    if (c->depth > 0)
        c->doomed = true;
    else
        conn_destroy(c);
}

static void conn_enter(struct smtp_conn *c)
{
    c->depth++;
}

/* conn_leave - returns true when c is gone */
static bool conn_leave(struct smtp_conn *c)
{
    if (--c->depth == 0 && c->doomed) {
        conn_destroy(c);
        return true;
    }
    return false;
}

static void set_read_timeout(struct smtp_conn *c, int secs)
{
    struct timeval rt = { .tv_sec = secs }, wt = { .tv_sec = c->t_command };
    bufferevent_set_timeouts(c->bev, &rt, &wt);
}

static void send_line(struct smtp_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void send_line(struct smtp_conn *c, const char *fmt, ...)
{
    va_list ap;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    va_start(ap, fmt);
    evbuffer_add_vprintf(out, fmt, ap);
    va_end(ap);
    evbuffer_add(out, "\r\n", 2);
}

/* ready_fail - report a failed setup and free */
static void ready_fail(struct smtp_conn *c, enum smtp_conn_error err, int code, const char *diag)
{
    smtp_conn_ready_cb cb = c->ready_cb;
    c->ready_cb = NULL;
    log_debug("event=smtp_client_setup_failed peer=%s error=%d diag=\"%s\"", c->peer, err, diag);
    if (c->st >= CS_GREETING && c->st != CS_HANDSHAKE && c->st != CS_STARTTLS && c->bev)
        send_line(c, "QUIT");   /* courtesy; the close follows */
    conn_release(c);
    if (cb)
        cb(c->ready_arg, NULL, err, code, diag);
}

static void conn_ready(struct smtp_conn *c)
{
    c->st = CS_READY;
    set_read_timeout(c, c->t_command);
    smtp_conn_ready_cb cb = c->ready_cb;
    c->ready_cb = NULL;
    if (cb)
        cb(c->ready_arg, c, SMTP_CONN_OK, 0, "");
}

static void parse_ehlo(struct smtp_conn *c, const struct smtp_reply *r)
{
    c->ext_pipelining = c->ext_8bitmime = c->ext_smtputf8 = c->ext_dsn = false;
    c->ext_starttls = c->ext_size = false;
    c->size_max = 0;
    const char *l = r->text;
    bool first = true;
    while (*l) {
        size_t n = strcspn(l, "\n");
        if (!first) {
            char kw[64];
            size_t k = strcspn(l, " \n");
            if (k < sizeof(kw)) {
                memcpy(kw, l, k);
                kw[k] = '\0';
                if (str_ieq(kw, "PIPELINING"))
                    c->ext_pipelining = true;
                else if (str_ieq(kw, "8BITMIME"))
                    c->ext_8bitmime = true;
                else if (str_ieq(kw, "SMTPUTF8"))
                    c->ext_smtputf8 = true;
                else if (str_ieq(kw, "DSN"))
                    c->ext_dsn = true;
                else if (str_ieq(kw, "STARTTLS"))
                    c->ext_starttls = true;
                else if (str_ieq(kw, "SIZE")) {
                    c->ext_size = true;
                    if (l[k] == ' ')
                        c->size_max = strtoull(l + k + 1, NULL, 10);   /* RFC 1870: 0 = no limit */
                }
            }
        }
        first = false;
        l += n;
        if (*l == '\n')
            l++;
    }
}

static bool is_ip_literal(const char *s)
{
    unsigned char tmp[16];
    return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

/* dane_setup - RFC 7672 3: the TLSA records are the only trust anchors.
 * Verification runs during the handshake but does not abort it
 * (SSL_VERIFY_NONE): dane_check then names the failure, "TLSA mismatch",
 * before a single SMTP command is sent over the channel. */
static int dane_setup(struct smtp_conn *c, SSL *ssl, char *why, size_t size)
{
    const char *base = c->dane_base ? c->dane_base : c->peer_name;
    /* RFC 7672 8.1: SNI names the TLSA base domain; a DANE-TA(2) chain may
     * name it or the MX host (3.2.2) */
    SSL_set_tlsext_host_name(ssl, base);
    if (SSL_dane_enable(ssl, base) <= 0 ||
        (strcasecmp(base, c->peer_name) != 0 && SSL_add1_host(ssl, c->peer_name) != 1)) {
        xsnprintf(why, size, "4.7.5 cannot enable DANE for %s", c->peer);
        return -1;
    }
    /* RFC 7672 3.1.1: DANE-EE(3) binds the key itself; no name, no expiry */
    SSL_dane_set_flags(ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
    int usable = 0;
    for (size_t i = 0; i < c->n_tlsa; i++) {
        const struct dane_tlsa *t = &c->tlsa[i];
        if (SSL_dane_tlsa_add(ssl, t->usage, t->selector, t->mtype, t->data, t->len) > 0)
            usable++;
    }
    if (usable == 0) {
        xsnprintf(why, size, "4.7.5 TLSA mismatch at %s: no usable TLSA record", c->peer);
        return -1;
    }
    SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    return 0;
}

/* dane_check - after the handshake: did a TLSA record authenticate the peer? */
static int dane_check(struct smtp_conn *c, SSL *ssl, char *why, size_t size)
{
    long vr = SSL_get_verify_result(ssl);
    uint8_t usage, selector, mtype;
    int depth = SSL_get0_dane_tlsa(ssl, &usage, &selector, &mtype, NULL, NULL);
    if (vr != X509_V_OK || depth < 0) {
        xsnprintf(why, size, "4.7.5 TLSA mismatch at %s: %s", c->peer,
                  vr != X509_V_OK ? X509_verify_cert_error_string(vr) : "no TLSA record matched");
        return -1;
    }
    xsnprintf(c->dane_match, sizeof(c->dane_match), "%s(%u) %u %u depth=%d",
              usage == DANE_USAGE_DANE_EE ? "DANE-EE" : usage == DANE_USAGE_DANE_TA ? "DANE-TA" : "PKIX",
              usage, selector, mtype, depth);
    return 0;
}

/* start_tls - RFC 3207: after 220 to STARTTLS, handshake on the same socket */
static void start_tls(struct smtp_conn *c)
{
    /* anything the server sent after its 220 was injected before TLS: refuse it */
    if (c->in.len || evbuffer_get_length(bufferevent_get_input(c->bev))) {
        ready_fail(c, SMTP_CONN_TLS, 0, "4.7.0 data after the STARTTLS reply (possible injection)");
        return;
    }
    SSL *ssl = SSL_new(c->tls_ctx);
    if (!ssl) {
        ready_fail(c, SMTP_CONN_TLS, 0, "4.7.0 cannot create a TLS session");
        return;
    }
    bool ip = is_ip_literal(c->peer_name);
    if (!ip)
        SSL_set_tlsext_host_name(ssl, c->peer_name);
    if (c->tls == SMTP_CLIENT_TLS_DANE) {
        char why[SMTP_DIAG_MAX];
        if (dane_setup(c, ssl, why, sizeof(why)) < 0) {
            SSL_free(ssl);
            ready_fail(c, SMTP_CONN_TLS, 0, why);
            return;
        }
    } else {
        /* the name is checked in every other mode: VERIFY enforces it, the
         * others only report it (smtp_conn_tls_verified: a TLS policy in
         * testing logs it); DANE checks names its own way (RFC 7672 3.2.2) */
        if (ip)
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), c->peer_name);
        else
            SSL_set1_host(ssl, c->peer_name);
    }
    if (c->tls == SMTP_CLIENT_TLS_VERIFY) {
        SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
    } else {
        /* opportunistic and "encrypt": RFC 7435, no authentication */
        SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    }
    struct bufferevent *tb = bufferevent_openssl_filter_new(c->base, c->bev, ssl,
        BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
    if (!tb) {
        SSL_free(ssl);
        ready_fail(c, SMTP_CONN_TLS, 0, "4.7.0 cannot start TLS");
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(tb, 1);
    c->bev = tb;
    c->st = CS_HANDSHAKE;
    bufferevent_setcb(tb, conn_read_cb, NULL, conn_event_cb, c);
    set_read_timeout(c, c->t_command);
    bufferevent_enable(tb, EV_READ | EV_WRITE);
}

static void after_ehlo(struct smtp_conn *c)
{
    bool required = c->tls == SMTP_CLIENT_TLS_ENCRYPT || c->tls == SMTP_CLIENT_TLS_VERIFY ||
                    c->tls == SMTP_CLIENT_TLS_DANE;
    if (!c->tls_on && c->tls != SMTP_CLIENT_TLS_NONE && c->ext_starttls && c->tls_ctx) {
        send_line(c, "STARTTLS");
        c->st = CS_STARTTLS;
        return;
    }
    if (!c->tls_on && required) {
        ready_fail(c, SMTP_CONN_TLS_REQUIRED, 0,
                   c->tls_ctx ? "4.7.4 TLS is required but the server does not offer STARTTLS"
                              : "4.7.4 TLS is required but no TLS client context is configured");
        return;
    }
    conn_ready(c);
}

/* --- the transaction --- */

/* xtext_ok - values we pass through must stay one protocol token */
static bool token_ok(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f)
            return false;
    return true;
}

static bool addr_ok(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < ' ' || *s == 0x7f || *s == '<' || *s == '>')
            return false;
    return true;
}

static void send_cmd(struct smtp_conn *c, const struct smtp_cmd *cmd)
{
    const struct smtp_client_msg *m = c->msg;
    switch (cmd->type) {
    case EX_RSET:
        send_line(c, "RSET");
        break;
    case EX_MAIL: {
        char params[400];
        int o = 0;
        params[0] = '\0';
        if (c->ext_size)
            o += xsnprintf(params + o, sizeof(params) - (size_t)o, " SIZE=%llu", (unsigned long long)m->size);
        if ((m->flags & SMTP_MSG_8BIT) && c->ext_8bitmime)
            o += xsnprintf(params + o, sizeof(params) - (size_t)o, " BODY=8BITMIME");
        if (m->flags & SMTP_MSG_SMTPUTF8)
            o += xsnprintf(params + o, sizeof(params) - (size_t)o, " SMTPUTF8");
        if (c->ext_dsn && m->ret)
            o += xsnprintf(params + o, sizeof(params) - (size_t)o, " RET=%s", m->ret == 2 ? "HDRS" : "FULL");
        if (c->ext_dsn && m->envid && *m->envid && token_ok(m->envid) && strlen(m->envid) <= 100)
            o += xsnprintf(params + o, sizeof(params) - (size_t)o, " ENVID=%s", m->envid);
        send_line(c, "MAIL FROM:<%s>%s", m->sender, params);
        break;
    }
    case EX_RCPT: {
        const struct smtp_client_rcpt *r = &m->rcpts[cmd->idx];
        char params[700];
        int o = 0;
        params[0] = '\0';
        if (c->ext_dsn && r->notify) {
            /* RFC 3461 4.1 */
            if (r->notify & 0x1)
                o += xsnprintf(params + o, sizeof(params) - (size_t)o, " NOTIFY=NEVER");
            else
                o += xsnprintf(params + o, sizeof(params) - (size_t)o, " NOTIFY=%s%s%s%s%s",
                               r->notify & 0x2 ? "SUCCESS" : "",
                               (r->notify & 0x2) && (r->notify & 0xc) ? "," : "",
                               r->notify & 0x4 ? "FAILURE" : "",
                               (r->notify & 0x4) && (r->notify & 0x8) ? "," : "",
                               r->notify & 0x8 ? "DELAY" : "");
        }
        if (c->ext_dsn && r->orcpt && token_ok(r->orcpt) && strlen(r->orcpt) <= 500)
            xsnprintf(params + o, sizeof(params) - (size_t)(o > 0 ? o : 0), " ORCPT=%s", r->orcpt);
        send_line(c, "RCPT TO:<%s>%s", r->addr, params);
        break;
    }
    case EX_DATA:
        send_line(c, "DATA");
        break;
    case EX_DOT:
    case EX_DOT_DISCARD:
        break;
    }
}

static void txn_set(struct smtp_conn *c, size_t i, int code, const char *diag)
{
    if (c->codes[i] == 0) {
        c->codes[i] = code;
        str_copy(c->diags[i], SMTP_DIAG_MAX, diag);
    }
}

/* txn_finish - every recipient has a result: report, return to READY */
static void txn_finish(struct smtp_conn *c, bool usable)
{
    for (size_t i = 0; i < c->msg->n_rcpts; i++)
        txn_set(c, i, 451, "451 4.4.0 transaction not completed");
    c->streaming = false;
    bufferevent_setcb(c->bev, conn_read_cb, NULL, conn_event_cb, c);
    if (usable) {
        c->st = CS_READY;
        set_read_timeout(c, c->t_command);
    }
    struct smtp_send_result res = { .codes = c->codes, .diags = c->diags, .usable = usable };
    smtp_send_cb cb = c->send_cb;
    void *arg = c->send_arg;
    int *codes = c->codes;
    char (*diags)[SMTP_DIAG_MAX] = c->diags;
    c->codes = NULL;
    c->diags = NULL;
    free(c->cmds);
    c->cmds = NULL;
    c->msg = NULL;
    c->send_cb = NULL;
    conn_enter(c);
    if (!usable)
        conn_release(c);
    cb(arg, usable ? c : NULL, &res);
    free(codes);
    free(diags);
    conn_leave(c);
}

static void data_pump(struct smtp_conn *c);

static void data_write_cb(struct bufferevent *bev, void *arg)
{
    struct smtp_conn *c = arg;
    conn_enter(c);
    if (c->streaming && c->st == CS_TXN)
        data_pump(c);
    conn_leave(c);
}

/* data_pump - fill the output with stuffed message data up to the high mark */
static void data_pump(struct smtp_conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    const struct smtp_client_msg *m = c->msg;
    while (c->streaming && evbuffer_get_length(out) < SMTP_CLIENT_OUT_HIGH) {
        ssize_t n = m->read(m->read_arg, c->data_off, c->block, SMTP_CLIENT_BLOCK);
        if (n < 0) {
            /* cannot finish DATA cleanly: dropping the connection aborts it */
            for (size_t i = 0; i < m->n_rcpts; i++)
                txn_set(c, i, 451, "451 4.3.0 local error reading the queued message");
            txn_finish(c, false);
            return;
        }
        if (n == 0) {
            /* RFC 5321 4.1.1.4: the data ends with CRLF "." CRLF */
            if (c->data_off > 0 && !(c->last2[0] == '\r' && c->last2[1] == '\n'))
                evbuffer_add(out, "\r\n", 2);
            evbuffer_add(out, ".\r\n", 3);
            c->streaming = false;
            c->cmds[c->sent++] = (struct smtp_cmd){ .type = EX_DOT };
            c->n_cmds = c->sent;
            set_read_timeout(c, c->t_data);
            bufferevent_setcb(c->bev, conn_read_cb, NULL, conn_event_cb, c);
            return;
        }
        const char *p = c->block, *end = c->block + n;
        while (p < end) {
            if (c->at_bol && *p == '.')
                evbuffer_add(out, ".", 1);   /* RFC 5321 4.5.2 transparency */
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            const char *stop = nl ? nl + 1 : end;
            evbuffer_add(out, p, (size_t)(stop - p));
            c->at_bol = nl != NULL;
            p = stop;
        }
        if (n >= 2) {
            c->last2[0] = end[-2];
            c->last2[1] = end[-1];
        } else {
            c->last2[0] = c->last2[1];
            c->last2[1] = end[-1];
        }
        c->data_off += (uint64_t)n;
    }
}

static void data_start(struct smtp_conn *c)
{
    c->streaming = true;
    c->data_off = 0;
    c->at_bol = true;
    c->last2[0] = c->last2[1] = 0;
    if (!c->block)
        c->block = xmalloc(SMTP_CLIENT_BLOCK);
    bufferevent_setwatermark(c->bev, EV_WRITE, SMTP_CLIENT_OUT_HIGH / 2, 0);
    /* no reply is due while the data flows: only the write side may time
     * out (RFC 5321 4.5.3.2.5, a data block); the "." reply gets t_data */
    struct timeval wt = { .tv_sec = c->t_command };
    bufferevent_set_timeouts(c->bev, NULL, &wt);
    bufferevent_setcb(c->bev, conn_read_cb, data_write_cb, conn_event_cb, c);
    data_pump(c);
}

/* txn_send_next - without PIPELINING, write the next command */
static void txn_send_next(struct smtp_conn *c)
{
    if (c->sent < c->n_cmds)
        send_cmd(c, &c->cmds[c->sent++]);
}

static void txn_reply(struct smtp_conn *c, const struct smtp_reply *r)
{
    if (c->answered >= c->sent) {
        conn_lost(c, "unexpected reply");
        return;
    }
    struct smtp_cmd cmd = c->cmds[c->answered++];
    const struct smtp_client_msg *m = c->msg;
    char diag[SMTP_DIAG_MAX];
    smtp_reply_diag(r, diag, sizeof(diag));
    bool ok = r->code >= 200 && r->code < 300;
    int code = r->code >= 400 ? r->code : 451;   /* a 2xx/3xx where none belongs: try later */
    bool last_sent = c->answered == c->sent;
    switch (cmd.type) {
    case EX_RSET:
        if (!ok) {
            conn_lost(c, "RSET refused");
            return;
        }
        break;
    case EX_MAIL:
        if (!ok) {
            c->mail_failed = true;
            for (size_t i = 0; i < m->n_rcpts; i++)
                txn_set(c, i, code, diag);
            if (!c->ext_pipelining) {
                c->need_rset = true;
                txn_finish(c, true);
                return;
            }
        }
        break;
    case EX_RCPT:
        if (ok && !c->mail_failed)
            c->accepted++;
        else
            txn_set(c, cmd.idx, code, diag);
        if (m->flags & SMTP_MSG_PROBE) {
            /* a probe ends at its last RCPT reply: the accepted get theirs */
            if (ok && !c->mail_failed)
                txn_set(c, cmd.idx, r->code, diag);
            if (c->answered == c->n_cmds) {
                c->need_rset = true;
                txn_finish(c, true);
                return;
            }
            break;
        }
        /* without PIPELINING, DATA is sent only when someone was accepted */
        if (!c->ext_pipelining && c->answered < c->n_cmds && c->cmds[c->answered].type == EX_DATA &&
            c->accepted == 0) {
            c->need_rset = true;
            txn_finish(c, true);
            return;
        }
        break;
    case EX_DATA:
        if (r->code == 354) {
            if (c->accepted == 0 || c->mail_failed) {
                /* RFC 2920 3.1: nobody to deliver to, end the empty data */
                send_line(c, ".");
                c->cmds[c->sent++] = (struct smtp_cmd){ .type = EX_DOT_DISCARD };
                c->n_cmds = c->sent;
                return;
            }
            data_start(c);
            return;
        }
        for (size_t i = 0; i < m->n_rcpts; i++)
            txn_set(c, i, r->code >= 400 ? r->code : 451, diag);
        c->need_rset = true;
        txn_finish(c, true);
        return;
    case EX_DOT:
        for (size_t i = 0; i < m->n_rcpts; i++)
            txn_set(c, i, ok ? r->code : code, diag);
        c->need_rset = false;
        txn_finish(c, true);
        return;
    case EX_DOT_DISCARD:
        c->need_rset = true;
        txn_finish(c, true);
        return;
    }
    if (!c->ext_pipelining && last_sent)
        txn_send_next(c);
}

void smtp_conn_send(struct smtp_conn *c, const struct smtp_client_msg *msg, smtp_send_cb cb, void *arg)
{
    c->msg = msg;
    c->send_cb = cb;
    c->send_arg = arg;
    c->uses++;
    c->codes = xcalloc(msg->n_rcpts ? msg->n_rcpts : 1, sizeof(*c->codes));
    c->diags = xcalloc(msg->n_rcpts ? msg->n_rcpts : 1, sizeof(*c->diags));
    c->cmds = xcalloc(msg->n_rcpts + 5, sizeof(*c->cmds));
    c->n_cmds = c->sent = c->answered = c->accepted = 0;
    c->mail_failed = false;
    c->st = CS_TXN;

    /* refusals decided before talking: they keep the connection usable */
    const char *refuse = NULL;
    int rcode = 0;
    char why[SMTP_DIAG_MAX];
    if (c->ext_size && c->size_max && msg->size > c->size_max) {
        xsnprintf(why, sizeof(why), "552 5.3.4 message size %llu exceeds the limit %llu of %s",
                  (unsigned long long)msg->size, (unsigned long long)c->size_max, c->peer);
        refuse = why;
        rcode = 552;
    } else if ((msg->flags & SMTP_MSG_SMTPUTF8) && !c->ext_smtputf8) {
        /* RFC 6531 3.4: no downgrade */
        xsnprintf(why, sizeof(why), "550 5.6.7 %s does not support SMTPUTF8", c->peer);
        refuse = why;
        rcode = 550;
    } else if (!addr_ok(msg->sender)) {
        xsnprintf(why, sizeof(why), "553 5.1.7 invalid sender address");
        refuse = why;
        rcode = 553;
    }
    if (refuse) {
        for (size_t i = 0; i < msg->n_rcpts; i++)
            txn_set(c, i, rcode, refuse);
        conn_enter(c);
        txn_finish(c, true);
        conn_leave(c);
        return;
    }
    if (c->need_rset)
        c->cmds[c->n_cmds++] = (struct smtp_cmd){ .type = EX_RSET };
    c->need_rset = false;
    c->cmds[c->n_cmds++] = (struct smtp_cmd){ .type = EX_MAIL };
    size_t n_ok = 0;
    for (size_t i = 0; i < msg->n_rcpts; i++) {
        if (!addr_ok(msg->rcpts[i].addr) || !msg->rcpts[i].addr[0]) {
            txn_set(c, i, 553, "553 5.1.3 invalid recipient address");
            continue;
        }
        c->cmds[c->n_cmds++] = (struct smtp_cmd){ .type = EX_RCPT, .idx = i };
        n_ok++;
    }
    if (n_ok == 0) {
        conn_enter(c);
        txn_finish(c, true);
        conn_leave(c);
        return;
    }
    if (!(msg->flags & SMTP_MSG_PROBE))
        c->cmds[c->n_cmds++] = (struct smtp_cmd){ .type = EX_DATA };
    if (c->ext_pipelining) {
        /* RFC 2920 3.1: MAIL, RCPT and DATA may go in one group */
        while (c->sent < c->n_cmds)
            send_cmd(c, &c->cmds[c->sent++]);
    } else {
        txn_send_next(c);
    }
}

/* --- replies and events --- */

static void handle_reply(struct smtp_conn *c, const struct smtp_reply *r)
{
    char diag[SMTP_DIAG_MAX];
    switch (c->st) {
    case CS_GREETING:
        if (r->code / 100 != 2) {
            smtp_reply_diag(r, diag, sizeof(diag));
            ready_fail(c, SMTP_CONN_GREETING, r->code, diag);
            return;
        }
        send_line(c, "EHLO %s", c->helo_name);
        c->st = CS_EHLO;
        break;
    case CS_EHLO:
    case CS_EHLO2:
        if (r->code / 100 == 2) {
            parse_ehlo(c, r);
            if (c->st == CS_EHLO2)
                conn_ready(c);
            else
                after_ehlo(c);
        } else if (r->code / 100 == 5 && c->st == CS_EHLO) {
            send_line(c, "HELO %s", c->helo_name);   /* RFC 5321 3.2 */
            c->st = CS_HELO;
        } else {
            smtp_reply_diag(r, diag, sizeof(diag));
            ready_fail(c, SMTP_CONN_GREETING, r->code, diag);
        }
        break;
    case CS_HELO:
        if (r->code / 100 != 2) {
            smtp_reply_diag(r, diag, sizeof(diag));
            ready_fail(c, SMTP_CONN_GREETING, r->code, diag);
            return;
        }
        after_ehlo(c);
        break;
    case CS_STARTTLS:
        if (r->code == 220) {
            start_tls(c);
        } else if (c->tls == SMTP_CLIENT_TLS_MAY) {
            conn_ready(c);   /* carry on in clear, as before STARTTLS */
        } else {
            smtp_reply_diag(r, diag, sizeof(diag));
            ready_fail(c, SMTP_CONN_TLS, r->code, diag);
        }
        break;
    case CS_TXN:
        txn_reply(c, r);
        break;
    case CS_QUIT:
        conn_release(c);
        break;
    case CS_READY:
        /* e.g. "421 idle timeout": the connection is over */
        conn_lost(c, "unsolicited reply");
        break;
    default:
        break;
    }
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    struct smtp_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    conn_enter(c);
    while (!c->doomed && c->st != CS_DEAD && c->st != CS_HANDSHAKE) {
        size_t n = evbuffer_get_length(in);
        if (n) {
            if (c->in.len + n > (size_t)SMTP_REPLY_MAX_LINE * SMTP_REPLY_MAX_LINES) {
                conn_lost(c, "reply too long");
                break;
            }
            buf_reserve(&c->in, n);
            evbuffer_remove(in, c->in.data + c->in.len, n);
            c->in.len += n;
        }
        struct smtp_reply r;
        size_t used;
        int rc = smtp_reply_parse(c->in.data, c->in.len, &r, &used);
        if (rc == 0)
            break;
        if (rc < 0) {
            conn_lost(c, "malformed reply");
            break;
        }
        buf_consume(&c->in, used);
        /* the STARTTLS injection check needs to see what is left */
        handle_reply(c, &r);
    }
    conn_leave(c);
}

static void connect_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct smtp_conn *c = arg;
    conn_enter(c);
    conn_lost(c, "connection timed out");
    conn_leave(c);
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct smtp_conn *c = arg;
    conn_enter(c);
    if (what & BEV_EVENT_CONNECTED) {
        if (c->st == CS_CONNECTING) {
            event_del(c->timer);
            c->st = CS_GREETING;
            set_read_timeout(c, c->t_command);
        } else if (c->st == CS_HANDSHAKE) {
            SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
            char ddiag[SMTP_DIAG_MAX];
            if (c->tls == SMTP_CLIENT_TLS_DANE && dane_check(c, ssl, ddiag, sizeof(ddiag)) < 0) {
                ready_fail(c, SMTP_CONN_TLS, 0, ddiag);
            } else if (c->tls == SMTP_CLIENT_TLS_VERIFY && SSL_get_verify_result(ssl) != X509_V_OK) {
                char diag[SMTP_DIAG_MAX];
                xsnprintf(diag, sizeof(diag), "4.7.5 certificate verification failed for %s: %s", c->peer,
                          X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
                ready_fail(c, SMTP_CONN_TLS, 0, diag);
            } else {
                c->tls_on = true;
                long vr = SSL_get_verify_result(ssl);
                c->tls_verified = vr == X509_V_OK;
                str_copy(c->tls_verify_why, sizeof(c->tls_verify_why),
                         vr == X509_V_OK ? "" : X509_verify_cert_error_string(vr));
                str_copy(c->tls_ver, sizeof(c->tls_ver), SSL_get_version(ssl));
                str_copy(c->tls_cipher, sizeof(c->tls_cipher), SSL_get_cipher_name(ssl));
                send_line(c, "EHLO %s", c->helo_name);   /* RFC 3207 4.2: forget the old EHLO */
                c->st = CS_EHLO2;
            }
        }
    } else if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF | BEV_EVENT_TIMEOUT)) {
        char why[300];
        if (what & BEV_EVENT_TIMEOUT) {
            xsnprintf(why, sizeof(why), "timed out");
        } else if (what & BEV_EVENT_EOF) {
            xsnprintf(why, sizeof(why), "connection closed by the server");
        } else {
            unsigned long e = bufferevent_get_openssl_error(bev);
            int se = EVUTIL_SOCKET_ERROR();
            if (e) {
                char tmp[256];
                ERR_error_string_n(e, tmp, sizeof(tmp));
                SSL *ssl = c->st == CS_HANDSHAKE ? bufferevent_openssl_get_ssl(bev) : NULL;
                long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
                if (vr != X509_V_OK)
                    xsnprintf(why, sizeof(why), "TLS error: certificate verification failed: %s",
                              X509_verify_cert_error_string(vr));
                else
                    xsnprintf(why, sizeof(why), "TLS error: %s", tmp);
            } else if (se) {
                xsnprintf(why, sizeof(why), "%s", evutil_socket_error_to_string(se));
            } else {
                xsnprintf(why, sizeof(why), "connection error");
            }
        }
        conn_lost(c, why);
    }
    conn_leave(c);
}

static const char *state_doing(enum smtp_conn_state st)
{
    switch (st) {
    case CS_CONNECTING: return "connecting";
    case CS_GREETING: return "waiting for the greeting";
    case CS_EHLO: case CS_EHLO2: case CS_HELO: return "sending EHLO/HELO";
    case CS_STARTTLS: return "sending STARTTLS";
    case CS_HANDSHAKE: return "during the TLS handshake";
    case CS_TXN: return "during the mail transaction";
    default: return "idle";
    }
}

/* conn_lost - the connection is unusable; tell whoever waits */
static void conn_lost(struct smtp_conn *c, const char *why)
{
    char diag[SMTP_DIAG_MAX];
    xsnprintf(diag, sizeof(diag), "4.4.2 %s %s: %s", c->peer, state_doing(c->st), why);
    switch (c->st) {
    case CS_CONNECTING:
    case CS_GREETING:
    case CS_EHLO:
    case CS_EHLO2:
    case CS_HELO:
    case CS_STARTTLS:
        if (c->st == CS_CONNECTING)
            xsnprintf(diag, sizeof(diag), "4.4.1 connect to %s: %s", c->peer, why);
        ready_fail(c, c->st == CS_EHLO2 ? SMTP_CONN_TLS : SMTP_CONN_NETWORK, 0, diag);
        break;
    case CS_HANDSHAKE:
        ready_fail(c, SMTP_CONN_TLS, 0, diag);
        break;
    case CS_TXN: {
        char d2[SMTP_DIAG_MAX];
        xsnprintf(d2, sizeof(d2), "451 %s", diag);
        for (size_t i = 0; i < c->msg->n_rcpts; i++)
            txn_set(c, i, 451, d2);
        txn_finish(c, false);
        break;
    }
    default:
        conn_release(c);
        break;
    }
}

static struct smtp_conn *conn_open(const struct smtp_client_config *cfg,
                                   const struct sockaddr *sa, socklen_t salen,
                                   const char *peer_name, enum smtp_client_tls tls,
                                   const char *base, const struct dane_tlsa *t, size_t n,
                                   smtp_conn_ready_cb cb, void *arg)
{
    struct smtp_conn *c = xcalloc(1, sizeof(*c));
    if (base && *base)
        c->dane_base = xstrdup(base);
    if (n) {
        c->tlsa = xcalloc(n, sizeof(*c->tlsa));
        for (size_t i = 0; i < n; i++) {
            c->tlsa[i] = t[i];
            c->tlsa[i].data = xmalloc(t[i].len ? t[i].len : 1);
            memcpy(c->tlsa[i].data, t[i].data, t[i].len);
        }
        c->n_tlsa = n;
    }
    c->base = cfg->base;
    c->tls_ctx = cfg->tls_ctx;
    c->helo_name = xstrdup(cfg->helo_name && *cfg->helo_name ? cfg->helo_name : "localhost");
    c->t_connect = cfg->timeout_connect > 0 ? cfg->timeout_connect : 30;
    c->t_command = cfg->timeout_command > 0 ? cfg->timeout_command : 300;
    c->t_data = cfg->timeout_data > 0 ? cfg->timeout_data : 600;
    c->peer_name = xstrdup(peer_name ? peer_name : "");
    c->tls = tls;
    c->ready_cb = cb;
    c->ready_arg = arg;
    buf_init(&c->in);
    char addr[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, addr, sizeof(addr));
        port = ntohs(s4->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, addr, sizeof(addr));
        port = ntohs(s6->sin6_port);
    }
    xsnprintf(c->peer, sizeof(c->peer), "%.200s[%s]:%d", c->peer_name, addr, port);
    c->st = CS_CONNECTING;
    evutil_socket_t fd = -1;
    if (cfg->source != NULL) {
        /* a chosen source address: Connect's probes speak as an authorised
         * (or a deliberately unauthorised) host */
        fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0 || cfg->source->sa_family != sa->sa_family ||
            bind(fd, cfg->source, cfg->source_len) < 0) {
            log_warn("event=smtp_client_bind_failed peer=%s error=%s", c->peer,
                     fd < 0 ? strerror(errno) : cfg->source->sa_family != sa->sa_family
                     ? "address family differs" : strerror(errno));
            if (fd >= 0)
                close(fd);
            conn_destroy(c);
            return NULL;
        }
    }
    c->bev = bufferevent_socket_new(c->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->timer = evtimer_new(c->base, connect_timeout_cb, c);
    if (!c->bev || !c->timer) {
        log_error("event=smtp_client_alloc_failed peer=%s", c->peer);
        conn_destroy(c);
        return NULL;
    }
    bufferevent_setcb(c->bev, conn_read_cb, NULL, conn_event_cb, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    struct timeval tv = { .tv_sec = c->t_connect };
    evtimer_add(c->timer, &tv);
    conn_enter(c);
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)sa, (int)salen) < 0) {
        /* reported through the event callback on most errors; else here, later */
        if (c->st == CS_CONNECTING) {
            struct timeval now = { 0, 0 };
            event_del(c->timer);
            evtimer_add(c->timer, &now);
        }
    }
    if (conn_leave(c))
        return NULL;
    return c;
}

struct smtp_conn *smtp_conn_open(const struct smtp_client_config *cfg,
                                 const struct sockaddr *sa, socklen_t salen,
                                 const char *peer_name, enum smtp_client_tls tls,
                                 smtp_conn_ready_cb cb, void *arg)
{
    if (tls == SMTP_CLIENT_TLS_DANE)
        tls = SMTP_CLIENT_TLS_ENCRYPT;   /* without records: at least never in clear */
    return conn_open(cfg, sa, salen, peer_name, tls, NULL, NULL, 0, cb, arg);
}

struct smtp_conn *smtp_conn_open_dane(const struct smtp_client_config *cfg,
                                      const struct sockaddr *sa, socklen_t salen,
                                      const char *peer_name, const char *base,
                                      const struct dane_tlsa *t, size_t n,
                                      smtp_conn_ready_cb cb, void *arg)
{
    /* smtp_tls_client_ctx enabled DANE on moatd's context; a no-op then,
     * else (another caller's context) done here, once */
    if (cfg->tls_ctx && SSL_CTX_dane_enable(cfg->tls_ctx) <= 0)
        log_error("event=dane_enable_failed");
    return conn_open(cfg, sa, salen, peer_name, SMTP_CLIENT_TLS_DANE, base, t, n, cb, arg);
}

const char *smtp_conn_dane(const struct smtp_conn *c)
{
    return c->tls_on && c->dane_match[0] ? c->dane_match : NULL;
}

void smtp_conn_quit(struct smtp_conn *c)
{
    if (!c)
        return;
    if (c->st != CS_READY || !c->bev) {
        conn_release(c);
        return;
    }
    send_line(c, "QUIT");
    c->st = CS_QUIT;
    set_read_timeout(c, SMTP_CLIENT_QUIT_TIMEOUT);
}

void smtp_conn_free(struct smtp_conn *c)
{
    if (c)
        conn_release(c);
}

const char *smtp_conn_peer(const struct smtp_conn *c)
{
    return c->peer;
}

const char *smtp_conn_tls_version(const struct smtp_conn *c)
{
    return c->tls_on ? c->tls_ver : NULL;
}

const char *smtp_conn_tls_cipher(const struct smtp_conn *c)
{
    return c->tls_on ? c->tls_cipher : NULL;
}

unsigned smtp_conn_uses(const struct smtp_conn *c)
{
    return c->uses;
}

bool smtp_conn_tls_verified(const struct smtp_conn *c, const char **why)
{
    if (why != NULL)
        *why = !c->tls_on ? "not encrypted" : c->tls_verify_why;
    return c->tls_on && c->tls_verified;
}
