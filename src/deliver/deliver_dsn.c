/*
 * deliver_dsn.c - builds delivery status notifications: RFC 3464
 * multipart/report (RFC 6522) with a human-readable part, a
 * message/delivery-status part and the returned message or its headers
 * (RFC 3461 4.3 RET).  From is MAILER-DAEMON at our host name; the message is
 * marked Auto-Submitted (RFC 3834 5) so responders stay quiet.
 *
 * Everything variable (date, boundary, Message-ID) comes from the caller,
 * which keeps this a pure function for golden-file tests.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "deliver_dsn.h"

/* header values never carry CR/LF or other controls, and stay well below 998 octets */
#define DSN_MAX_FIELD 800

static void put_clean(struct buf *b, const char *s)
{
    size_t n = 0;
    for (; s && *s && n < DSN_MAX_FIELD; s++, n++) {
        unsigned char c = (unsigned char)*s;
        buf_append(b, c < ' ' || c == 0x7f ? " " : s, 1);
    }
}

static void put_date(struct buf *b, int64_t ms)
{
    char d[64];
    time_rfc5322(d, sizeof(d), (time_t)(ms / 1000));
    buf_append_str(b, d);
}

static bool has_8bit(const char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s >= 0x80)
            return true;
    return false;
}

void deliver_xtext_decode(const char *s, char *dst, size_t size)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    if (!size)
        return;
    while (*s && o + 1 < size) {
        if (s[0] == '+' && s[1] && s[2] && strchr(hex, s[1]) && strchr(hex, s[2])) {
            unsigned v = (unsigned)((strchr(hex, s[1]) - hex) * 16 + (strchr(hex, s[2]) - hex));
            dst[o++] = (char)v;
            s += 3;
        } else {
            dst[o++] = *s++;
        }
    }
    dst[o] = '\0';
}

void deliver_dsn_status(const char *diag, int code, char *dst, size_t size)
{
    /* "550 5.1.1 ..." or "4.4.1 connect to ..." */
    const char *p = diag ? diag : "";
    if (p[0] >= '2' && p[0] <= '5' && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' && p[2] <= '9' && p[3] == ' ')
        p += 4;
    size_t n = 0;
    int dots = 0;
    if ((p[0] == '2' || p[0] == '4' || p[0] == '5') && p[1] == '.') {
        n = 1;
        while (p[n] && p[n] != ' ') {
            if (p[n] == '.')
                dots++;
            else if (p[n] < '0' || p[n] > '9')
                break;
            n++;
        }
        if ((p[n] == ' ' || p[n] == '\0') && dots == 2 && p[n - 1] != '.' && n < size) {
            memcpy(dst, p, n);
            dst[n] = '\0';
            return;
        }
    }
    xsnprintf(dst, size, "%d.0.0", code >= 500 ? 5 : code >= 400 || code == 0 ? 4 : 2);
}

static const char *action_name(enum dsn_action a)
{
    switch (a) {
    case DSN_ACTION_FAILED: return "failed";
    case DSN_ACTION_DELAYED: return "delayed";
    case DSN_ACTION_DELIVERED: return "delivered";
    }
    return "failed";
}

/* put_address_field - RFC 3464 2.3.2 / RFC 6533: address-type; address */
static void put_address_field(struct buf *b, const char *name, const char *addr)
{
    buf_printf(b, "%s: %s; ", name, has_8bit(addr) ? "utf-8" : "rfc822");
    put_clean(b, addr);
    buf_append_str(b, "\r\n");
}

void deliver_dsn_build(const struct dsn_input *in, struct buf *b)
{
    size_t n_failed = 0, n_delayed = 0, n_delivered = 0;
    for (size_t i = 0; i < in->n_rcpts; i++) {
        if (in->rcpts[i].action == DSN_ACTION_FAILED)
            n_failed++;
        else if (in->rcpts[i].action == DSN_ACTION_DELAYED)
            n_delayed++;
        else
            n_delivered++;
    }
    const char *subject = n_failed ? "Undelivered Mail Returned to Sender"
                          : n_delayed ? "Delayed Mail (still being retried)"
                                      : "Successful Mail Delivery Report";

    /* --- the header section --- */
    buf_append_str(b, "From: Mail Delivery System <MAILER-DAEMON@");
    put_clean(b, in->reporting_mta);
    buf_append_str(b, ">\r\nTo: <");
    put_clean(b, in->sender);
    buf_printf(b, ">\r\nSubject: %s\r\nDate: ", subject);
    put_date(b, in->now_ms);
    buf_append_str(b, "\r\nMessage-ID: ");
    put_clean(b, in->message_id);
    buf_append_str(b, "\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
                      "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"");
    put_clean(b, in->boundary);
    buf_append_str(b, "\"\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n");

    /* --- 1: the human-readable part --- */
    buf_printf(b, "--%s\r\nContent-Description: Notification\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\n\r\n", in->boundary);
    buf_append_str(b, "This is the mail system at host ");
    put_clean(b, in->reporting_mta);
    buf_append_str(b, ".\r\n\r\n");
    if (n_failed)
        buf_append_str(b, "I'm sorry to have to inform you that your message could not\r\n"
                          "be delivered to one or more recipients. The problem is described\r\n"
                          "below for each recipient.\r\n\r\n");
    if (n_delayed) {
        char until[64] = "";
        if (in->retry_until_ms)
            time_rfc5322(until, sizeof(until), (time_t)(in->retry_until_ms / 1000));
        buf_append_str(b, "Your message could not be delivered yet to the recipients listed\r\n"
                          "below. The mail system will keep trying");
        if (until[0])
            buf_printf(b, " until\r\n%s", until);
        buf_append_str(b, "; you do not need to send it again.\r\n\r\n");
    }
    if (n_delivered)
        buf_append_str(b, "Your message was delivered to the recipients listed below, as\r\n"
                          "you asked to be notified.\r\n\r\n");
    for (size_t i = 0; i < in->n_rcpts; i++) {
        const struct dsn_rcpt *r = &in->rcpts[i];
        buf_append_str(b, "<");
        put_clean(b, r->addr);
        buf_printf(b, ">: %s", action_name(r->action));
        if (r->diag && *r->diag) {
            buf_append_str(b, r->remote_mta ? ": host " : ": ");
            if (r->remote_mta) {
                put_clean(b, r->remote_mta);
                buf_append_str(b, " said: ");
            }
            put_clean(b, r->diag);
        }
        buf_append_str(b, "\r\n");
    }
    buf_append_str(b, "\r\n");

    /* --- 2: message/delivery-status (RFC 3464 2.1) --- */
    buf_printf(b, "--%s\r\nContent-Description: Delivery report\r\n"
                  "Content-Type: message/delivery-status\r\n\r\n", in->boundary);
    buf_append_str(b, "Reporting-MTA: dns; ");
    put_clean(b, in->reporting_mta);
    buf_append_str(b, "\r\nX-Moat-Queue-ID: ");
    put_clean(b, in->qid);
    buf_append_str(b, "\r\n");
    if (in->envid && *in->envid) {
        char env[256];
        deliver_xtext_decode(in->envid, env, sizeof(env));
        buf_append_str(b, "Original-Envelope-Id: ");
        put_clean(b, env);
        buf_append_str(b, "\r\n");
    }
    buf_append_str(b, "Arrival-Date: ");
    put_date(b, in->arrival_ms);
    buf_append_str(b, "\r\n");
    for (size_t i = 0; i < in->n_rcpts; i++) {
        const struct dsn_rcpt *r = &in->rcpts[i];
        buf_append_str(b, "\r\n");
        put_address_field(b, "Final-Recipient", r->addr);
        if (r->orcpt && strchr(r->orcpt, ';')) {
            /* RFC 3461 4.2: "type;xtext"; the report carries the decoded address */
            char dec[600];
            const char *semi = strchr(r->orcpt, ';');
            deliver_xtext_decode(semi + 1, dec, sizeof(dec));
            buf_append_str(b, "Original-Recipient: ");
            buf_append(b, r->orcpt, (size_t)(semi - r->orcpt) < 32 ? (size_t)(semi - r->orcpt) : 32);
            buf_append_str(b, "; ");
            put_clean(b, dec);
            buf_append_str(b, "\r\n");
        }
        buf_printf(b, "Action: %s\r\nStatus: ", action_name(r->action));
        put_clean(b, r->status);
        buf_append_str(b, "\r\n");
        if (r->remote_mta && *r->remote_mta) {
            buf_append_str(b, "Remote-MTA: dns; ");
            put_clean(b, r->remote_mta);
            buf_append_str(b, "\r\n");
        }
        if (r->diag && *r->diag) {
            /* an SMTP reply is "smtp"; our own reasons get an X- type (RFC 3464 2.3.6) */
            bool smtp = r->diag[0] >= '2' && r->diag[0] <= '5' && r->diag[1] >= '0' && r->diag[1] <= '9' &&
                        r->diag[2] >= '0' && r->diag[2] <= '9' && r->diag[3] == ' ';
            buf_append_str(b, smtp ? "Diagnostic-Code: smtp; " : "Diagnostic-Code: X-Moat; ");
            put_clean(b, r->diag);
            buf_append_str(b, "\r\n");
        }
        if (r->last_attempt_ms) {
            buf_append_str(b, "Last-Attempt-Date: ");
            put_date(b, r->last_attempt_ms);
            buf_append_str(b, "\r\n");
        }
        if (r->action == DSN_ACTION_DELAYED && in->retry_until_ms) {
            buf_append_str(b, "Will-Retry-Until: ");
            put_date(b, in->retry_until_ms);
            buf_append_str(b, "\r\n");
        }
    }
    buf_append_str(b, "\r\n");

    /* --- 3: the returned content --- */
    if (in->orig && in->orig_len) {
        buf_printf(b, "--%s\r\nContent-Description: %s\r\nContent-Type: %s\r\n", in->boundary,
                   in->orig_full ? (n_failed ? "Undelivered Message" : "Message") : "Message Headers",
                   in->orig_full ? "message/rfc822" : "text/rfc822-headers");
        if (in->orig_8bit)
            buf_append_str(b, "Content-Transfer-Encoding: 8bit\r\n");
        buf_append_str(b, "\r\n");
        buf_append(b, in->orig, in->orig_len);
        if (in->orig_len < 2 || memcmp(in->orig + in->orig_len - 2, "\r\n", 2) != 0)
            buf_append_str(b, "\r\n");
        buf_append_str(b, "\r\n");
    }
    buf_printf(b, "--%s--\r\n", in->boundary);
}
