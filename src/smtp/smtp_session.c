/*
 * smtp_session.c - one inbound SMTP connection: the state machine, the
 * command table, ESMTP PIPELINING, STARTTLS, and DATA streamed to the spool.
 *
 * Entry points (smtp_server_private.h): smtp_session_start,
 * smtp_session_begin_shutdown, smtp_session_destroy.
 *
 * Shape (CONVENTIONS.md, after Postfix smtpd.c and OpenSMTPD smtp_session.c):
 * - commands are one table: verb, states allowed, flags, handler;
 * - states are an enum, every transition goes through session_enter_state,
 *   which logs "old -> new" at debug level;
 * - policy decisions are asked of policy_evaluate(); this file only speaks
 *   the protocol.
 *
 * PIPELINING (RFC 2920): every complete command line already in the input
 * buffer is processed in one pass; replies are collected in s->replies and
 * handed to the socket together when the input is exhausted or a command
 * that must end a group (EHLO, HELO, DATA, VRFY, NOOP, QUIT, STARTTLS) was
 * answered, so the client receives a group's replies in order and at once.
 *
 * Asynchronous RCPT policy (call-forward, policy.h): when the verdict for a
 * RCPT is POLICY_PENDING, the session parks the parsed RCPT and stops
 * processing input (s->rcpt_pending): later pipelined commands stay in the
 * input buffer, unread, so their replies cannot overtake the RCPT's.  The
 * replies queued so far are flushed (they precede it anyway).  When the
 * verdict arrives (session_rcpt_ready, from the loop) the RCPT is finished
 * as if synchronously and processing resumes.  A transaction reset (RSET
 * cannot arrive meanwhile; timeouts, shutdown and the end of the session
 * can) cancels the pending evaluation.
 *
 * Enhanced status codes (RFC 2034 3): every reply carries one except the
 * 220 greeting, the 250 replies to HELO/EHLO and the 354 intermediate reply
 * (RFC 3463 has no class 3).
 *
 * Bounds (all from struct moat_settings): command line length (500 5.5.6,
 * the over-long line is skipped to its CRLF so the session stays in step),
 * recipients (452 4.5.3), messages per session (421 4.7.0 at the MAIL
 * beyond the limit, then close: the client reconnects and continues),
 * errors (421 4.7.0 at the next command once smtp_max_errors 5xx replies
 * were given), junk commands (beyond smtp_max_junk_commands each counts as
 * an error), timeouts (421 4.4.2), and the DATA bounds in smtp_data.h.
 *
 * SMTP AUTH (RFC 4954; PLAIN RFC 4616, LOGIN): offered after STARTTLS only.
 * The continuation lines of an exchange (s->auth_step) are read by
 * session_process instead of commands, bounded by smtp_auth_max_line and
 * timed by smtp_auth_timeout.  The argon2id check runs on the worker pool
 * with a copy of the hash (the snapshot may be swapped meanwhile); an
 * unknown name costs one argon2id too, so timing does not tell names apart.
 * While it runs (s->auth_job) no input is read, like a pending RCPT; a
 * session freed meanwhile orphans the job, whose done callback then only
 * frees it.  Failures are counted per client address and per name in the
 * server's fixed-size table (smtp_auth.h); over smtp_auth_max_failures in
 * smtp_auth_failure_window, AUTH gets 454 4.7.0 without a check.
 *
 * The content stage (issue 7, policy_content.h): an inbound transaction
 * (not an outbound host, not authenticated) keeps a copy of its message up
 * to screen_max_size; after the final "." one job runs the content checks
 * (SPF, DKIM, DMARC) on the worker pool with copies of what they read,
 * while no input is read (s->content_job), bounded by content_timeout
 * (content_timeout_action).  A refusal is the reply to the "."; otherwise
 * its header lines go into t->prefix and the commit proceeds.  While the
 * header section streams, an Authentication-Results field claiming our
 * host name as authserv-id is renamed (RFC 8601 5).
 *
 * The journal role (issue 8, policy_journal.c): when the RCPT pipeline's
 * journal check accepts the journal address, the transaction becomes a
 * journal transaction (t->journal): no end-of-DATA or content checks, no
 * forwarding, no auto-allow; it is spooled with SPOOL_F_JOURNAL (archived,
 * never relayed).  The outbound role's mail is spooled with
 * SPOOL_F_OUTBOUND (the archive's direction).
 *
 * Tracking (issue 11, core/track.h): each MAIL opens a tracking transaction
 * (s->n_txn) and emits the session's CONNECT (with the connect time) and
 * MAIL's verdict; then each RCPT's verdict with the deciding check, the end
 * of data (DATA: refused by the reader, the end-of-DATA checks or the
 * content stage, or accepted, with the Subject and Message-ID read once from
 * t->head), FORWARDED per rewritten recipient, and QUEUED (+ HELD) from the
 * commit callback.  A connection refused at connect is a CONNECT of its own
 * (txn 0).
 *
 * Lifetime: a session is freed in one place, session_free, only when its
 * connection is gone and no spool commit callback is outstanding: a client
 * that disconnects right after the final "." still gets its message stored
 * (or aborted) through the callback, which then frees the session.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sodium.h>
#include "../core/cidr.h"
#include "../core/metrics.h"
#include "../core/track.h"
#include "../core/worker.h"
#include "../policy/policy_content.h"
#include "../policy/policy.h"
#include "../policy/policy_msg.h"
#include "../policy/permitted.h"
#include "../policy/screen_clock.h"
#include "../policy/forward.h"
#include "../spool/spool.h"
#include "smtp_auth.h"
#include "smtp_data.h"
#include "smtp_parse.h"
#include "smtp_server_private.h"

/* RFC 1870 6, RFC 3461 4, RFC 6152, RFC 6531 3.4: each offered MAIL/RCPT
 * parameter lengthens the command line beyond RFC 5321's 512 octets
 * (SIZE 26, BODY 14, SMTPUTF8 9, ENVID+RET 100, NOTIFY+ORCPT 500) */
#define SMTP_PARAM_ALLOWANCE 650
#define SMTP_OUTPUT_HIGH (64 * 1024)      /* stop reading while replies pile up */
#define SMTP_SPOOL_CHUNK (64 * 1024)      /* canonical data handed to the spool at once */
#define SMTP_INPUT_MIN_HIGH (64 * 1024)
#define AUTH_HASH_COPY_MAX 128            /* crypto_pwhash_STRBYTES */
#define TRACK_SUBJECT_MAX 256             /* octets of the Subject a tracking event keeps */
#define TRACK_MSGID_MAX 256

enum smtp_state {
    SMTP_STATE_INIT = 0,   /* greeted, no HELO/EHLO yet (also right after TLS) */
    SMTP_STATE_READY,      /* HELO/EHLO done, no transaction */
    SMTP_STATE_MAIL,       /* MAIL accepted */
    SMTP_STATE_RCPT,       /* at least one RCPT accepted */
    SMTP_STATE_DATA,       /* reading message data */
    SMTP_STATE_COMMIT,     /* waiting for the spool commit callback */
    SMTP_STATE_TLS,        /* TLS handshake in progress */
    SMTP_STATE_CLOSING,    /* last reply queued; close once it is written */
};

static const char *const smtp_state_names[] = {
    "init", "ready", "mail", "rcpt", "data", "commit", "tls", "closing",
};

struct smtp_rcpt {
    char *addr;
    char *orcpt;          /* NULL when absent */
    unsigned notify;
};

/* the message octets kept for the end-of-DATA checks (t->head) */
#define SMTP_HEAD_MAX MSG_HEADER_SCAN_MAX

struct smtp_txn {
    struct smtp_mail_args mail;
    struct smtp_rcpt *rcpts;
    size_t n_rcpts;
    size_t cap_rcpts;
    struct spool_txn *spool;      /* from DATA until commit/abort */
    char qid[SPOOL_QID_LEN + 1];
    struct smtp_data reader;
    struct buf out;               /* canonical data not yet handed to the spool */
    bool write_failed;
    /* screening: the first HOLD verdict's reason (the message is committed
     * held, see spool.h), and header lines for the delivery engine to add
     * before the message (Authentication-Results, X-Moat-Verdict) */
    char *hold;
    struct buf prefix;
    /* the message's first SMTP_HEAD_MAX octets as it streams (dot-unstuffed,
     * without our Received), for the end-of-DATA checks (header From) */
    struct buf head;
    /* anti-spoofing let the mail through on an SPF bypass: the content stage
     * refuses it unless SPF passes for this domain (policy.h) */
    char *antispoof_spf_domain;
    /* permitted senders (policy/permitted.h): every accepted recipient
     * has the envelope sender as a permitted sender (false with none) */
    bool all_permitted;
    /* the content stage (policy_content.h): the message kept in memory for
     * it, up to screen_max_size; screen_over: it was larger */
    bool screen;                  /* an inbound transaction: the stage runs */
    bool screen_over;
    bool screened;                /* the stage answered: commit now */
    struct buf msg;
    bool hdr_done;                /* the header section has been scanned */
    size_t hdr_scanned;           /* t->out before this: complete lines already scanned */
    /* issue 8: the journal address from a journal source was accepted (a
     * journal transaction: no screening, no forwarding, SPOOL_F_JOURNAL) */
    bool journal;
    /* issue 11 (core/track.h): the check that held the message, and the
     * Subject and Message-ID read once at the end of data for the DATA and
     * QUEUED events */
    const char *hold_check;
    char subject[TRACK_SUBJECT_MAX];
    char message_id[TRACK_MSGID_MAX];
};

/* where an SMTP AUTH exchange stands */
enum smtp_auth_step {
    SMTP_AUTH_NONE = 0,
    SMTP_AUTH_PLAIN_WAIT,     /* "334 " sent, waiting for the PLAIN response */
    SMTP_AUTH_LOGIN_USER,     /* "334 VXNlcm5hbWU6" sent */
    SMTP_AUTH_LOGIN_PASS,     /* "334 UGFzc3dvcmQ6" sent */
};

struct smtp_auth_job;
struct smtp_content_job;

struct smtp_session {
    struct smtp_server *srv;
    const struct moat_settings *set;
    struct smtp_session *prev, *next;
    char id[24];
    char addr[64];                /* "127.0.0.1", "::1" */
    struct bufferevent *bev;      /* NULL once the connection is gone */
    enum smtp_state state;
    bool esmtp;
    bool tls;
    bool tls_required;            /* commands without SMTP_CMD_BEFORE_TLS get 530 */
    bool skip_line;               /* discarding the rest of an over-long command line */
    bool out_blocked;             /* reading paused until replies are written */
    bool shutdown_pending;        /* the server is stopping: close after this step */
    bool commit_pending;          /* a spool commit callback will arrive */
    char helo[SMTP_HELO_MAX + 1];
    struct buf replies;           /* replies of the current pipelined group */
    uint64_t n_errors, n_junk, n_messages, n_commands;
    struct smtp_txn txn;
    struct policy_pending *rcpt_pending; /* an asynchronous RCPT verdict is awaited */
    struct smtp_rcpt_args rcpt_wait;     /* the RCPT it is for */
    struct event *grace_timer;    /* shutdown grace for a session in DATA */
    struct event *finish_ev;      /* deferred close */
    uint64_t close_deadline_ms;   /* give up writing the last replies after this */
    struct sockaddr_storage sa;   /* the client's address, for the outbound ranges */
    enum smtp_auth_step auth_step;
    char auth_login_user[SMTP_AUTH_FIELD_MAX + 1]; /* AUTH LOGIN: the name, between steps */
    struct smtp_auth_job *auth_job; /* an argon2id check is running on the pool */
    struct smtp_content_job *content_job; /* the content stage is running on the pool */
    struct event *content_timer;  /* content_timeout */
    char auth_user[STORE_SMTP_ACCOUNT_NAME_MAX + 1]; /* "" = not authenticated */
    struct policy_dnsbl *dnsbl;   /* DNSBL lookups started at connect (issue 7) */
    const char *reject_check;     /* the policy check being logged (session_policy_refused) */
    uint32_t n_txn;               /* MAIL commands so far: the tracking transaction */
    int64_t connect_us;           /* wall clock at connect, the CONNECT event's time */
};

/* an argon2id verification on the worker pool; owned by the session until
 * it is orphaned, then by the done callback */
struct smtp_auth_job {
    struct smtp_session *s;       /* NULL once orphaned */
    char name[STORE_SMTP_ACCOUNT_NAME_MAX + 1];
    char hash[AUTH_HASH_COPY_MAX];   /* "" = unknown or disabled account */
    char password[SMTP_AUTH_FIELD_MAX + 1];
    const char *mech;
    bool ok;
};

/* --- the command table --- */
#define SMTP_CMD_BEFORE_TLS 0x1   /* allowed when TLS is required but not active */
#define SMTP_CMD_GROUP_END  0x2   /* must end a pipelined group (RFC 2920 3.1) */
#define SMTP_CMD_JUNK       0x4   /* counts toward smtp_max_junk_commands */
#define SMTP_CMD_NOT_IMPL   0x8   /* known verb we do not implement: 502 5.5.1 */
#define SMTP_CMD_PARAMS     0x10  /* MAIL/RCPT: line may use SMTP_PARAM_ALLOWANCE */
#define SMTP_CMD_AUTH_LINE  0x20  /* AUTH: line may be smtp_auth_max_line long */

#define ST(x) (1u << (x))
#define ST_CMD (ST(SMTP_STATE_INIT) | ST(SMTP_STATE_READY) | ST(SMTP_STATE_MAIL) | ST(SMTP_STATE_RCPT))

struct smtp_command {
    const char *verb;
    unsigned states;
    unsigned flags;
    void (*handler)(struct smtp_session *s, const struct smtp_cmdline *cmd);
};

static void cmd_helo(struct smtp_session *s, const struct smtp_cmdline *cmd);
static void cmd_ehlo(struct smtp_session *s, const struct smtp_cmdline *cmd);
static void cmd_starttls(struct smtp_session *s, const struct smtp_cmdline *cmd);
static void cmd_mail(struct smtp_session *s, const struct smtp_cmdline *cmd);
static void cmd_rcpt(struct smtp_session *s, const struct smtp_cmdline *cmd);
static void cmd_data(struct smtp_session *s, const struct smtp_cmdline *cmd);
static void cmd_rset(struct smtp_session *s, const struct smtp_cmdline *cmd);
static void cmd_noop(struct smtp_session *s, const struct smtp_cmdline *cmd);
static void cmd_quit(struct smtp_session *s, const struct smtp_cmdline *cmd);
static void cmd_vrfy(struct smtp_session *s, const struct smtp_cmdline *cmd);
static void cmd_help(struct smtp_session *s, const struct smtp_cmdline *cmd);
static void cmd_auth(struct smtp_session *s, const struct smtp_cmdline *cmd);

static const struct smtp_command smtp_commands[] = {
    { "HELO",     ST_CMD, SMTP_CMD_BEFORE_TLS | SMTP_CMD_GROUP_END, cmd_helo },
    { "EHLO",     ST_CMD, SMTP_CMD_BEFORE_TLS | SMTP_CMD_GROUP_END, cmd_ehlo },
    { "STARTTLS", ST(SMTP_STATE_READY), SMTP_CMD_BEFORE_TLS | SMTP_CMD_GROUP_END, cmd_starttls },
    { "MAIL",     ST(SMTP_STATE_READY), SMTP_CMD_PARAMS, cmd_mail },
    { "RCPT",     ST(SMTP_STATE_MAIL) | ST(SMTP_STATE_RCPT), SMTP_CMD_PARAMS, cmd_rcpt },
    { "DATA",     ST(SMTP_STATE_RCPT), SMTP_CMD_GROUP_END, cmd_data },
    { "RSET",     ST_CMD, SMTP_CMD_BEFORE_TLS | SMTP_CMD_JUNK, cmd_rset },
    { "NOOP",     ST_CMD, SMTP_CMD_BEFORE_TLS | SMTP_CMD_JUNK | SMTP_CMD_GROUP_END, cmd_noop },
    { "QUIT",     ST_CMD, SMTP_CMD_BEFORE_TLS | SMTP_CMD_GROUP_END, cmd_quit },
    { "VRFY",     ST_CMD, SMTP_CMD_JUNK | SMTP_CMD_GROUP_END, cmd_vrfy },
    { "HELP",     ST_CMD, SMTP_CMD_BEFORE_TLS | SMTP_CMD_JUNK, cmd_help },
    /* known to RFC 5321 and its extensions, not offered here */
    { "EXPN",     ST_CMD, SMTP_CMD_JUNK | SMTP_CMD_GROUP_END | SMTP_CMD_NOT_IMPL, NULL },
    { "TURN",     ST_CMD, SMTP_CMD_GROUP_END | SMTP_CMD_NOT_IMPL, NULL },
    { "ETRN",     ST_CMD, SMTP_CMD_JUNK | SMTP_CMD_NOT_IMPL, NULL },
    { "ATRN",     ST_CMD, SMTP_CMD_GROUP_END | SMTP_CMD_NOT_IMPL, NULL },
    { "AUTH",     ST_CMD, SMTP_CMD_GROUP_END | SMTP_CMD_AUTH_LINE, cmd_auth },
    { "BDAT",     ST_CMD, SMTP_CMD_NOT_IMPL, NULL },
    { "SEND",     ST_CMD, SMTP_CMD_NOT_IMPL, NULL },
    { "SOML",     ST_CMD, SMTP_CMD_NOT_IMPL, NULL },
    { "SAML",     ST_CMD, SMTP_CMD_NOT_IMPL, NULL },
};

static void session_process(struct smtp_session *s);
static bool session_output_pending(struct smtp_session *s);
static void session_close(struct smtp_session *s);
static void session_lost(struct smtp_session *s);
static void session_content_cancel(struct smtp_session *s);
static bool session_content_start(struct smtp_session *s);
static bool session_screening(struct smtp_session *s);
static void session_commit(struct smtp_session *s);
static void session_spool_put(struct smtp_session *s, size_t n);
static void session_read_cb(struct bufferevent *bev, void *arg);
static void session_write_cb(struct bufferevent *bev, void *arg);
static void session_event_cb(struct bufferevent *bev, short what, void *arg);

/* session_enter_state - the one place state changes (logged at debug) */
static void session_enter_state(struct smtp_session *s, enum smtp_state st)
{
    if (s->state == st)
        return;
    log_debug("session=%s event=state old=%s new=%s", s->id, smtp_state_names[s->state],
              smtp_state_names[st]);
    s->state = st;
}

/* session_set_timeouts - RFC 5321 4.5.3.2: command or data-block timeout
 * for reads; writes get the command timeout so a client that stops reading
 * cannot hold the session forever */
static void session_set_timeouts(struct smtp_session *s, int64_t read_sec)
{
    if (s->bev == NULL)
        return;
    struct timeval rd = { (time_t)read_sec, 0 };
    struct timeval wr = { (time_t)s->set->smtp_timeout_command, 0 };
    bufferevent_set_timeouts(s->bev, &rd, &wr);
}

/* session_replyv - queue one reply line (or the last line of a multi-line reply) */
static void session_reply_raw(struct smtp_session *s, int code, char sep, const char *dsn,
                              const char *fmt, va_list ap)
{
    char text[512];
    if (vsnprintf(text, sizeof text, fmt, ap) < 0)
        text[0] = '\0';
    /* a reply is one line: nothing the client sent may break it */
    for (char *p = text; *p; p++)
        if ((unsigned char)*p < 32 || *p == 127)
            *p = ' ';
    if (dsn && dsn[0])
        buf_printf(&s->replies, "%03d%c%s %s\r\n", code, sep, dsn, text);
    else
        buf_printf(&s->replies, "%03d%c%s\r\n", code, sep, text);
}

/* session_reply - queue a reply; 5xx replies count as client errors
 * (smtp_max_errors).  4xx are our own temporary conditions: not counted. */
static void session_reply(struct smtp_session *s, int code, const char *dsn, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void session_reply(struct smtp_session *s, int code, const char *dsn, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    session_reply_raw(s, code, ' ', dsn, fmt, ap);
    va_end(ap);
    if (code >= 500)
        s->n_errors++;
}

/* session_reply_cont - a continuation line "ddd-..." of a multi-line reply */
static void session_reply_cont(struct smtp_session *s, int code, const char *dsn, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void session_reply_cont(struct smtp_session *s, int code, const char *dsn, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    session_reply_raw(s, code, '-', dsn, fmt, ap);
    va_end(ap);
}

/* session_flush - hand the group's replies to the connection (RFC 2920 3.2) */
static void session_flush(struct smtp_session *s)
{
    if (s->replies.len == 0)
        return;
    if (s->bev != NULL)
        bufferevent_write(s->bev, s->replies.data, s->replies.len);
    buf_reset(&s->replies);
}

/* session_log_reject - one key=value line per refusal */
static void session_log_reject(struct smtp_session *s, const char *stage, int code, const char *dsn,
                               const char *reason, const char *rcpt)
{
    char r[300], from[300], to[300];
    const char *qid = s->txn.qid[0] ? s->txn.qid : "NOQUEUE";
    log_info("qid=%s session=%s client=%s event=reject stage=%s%s%s code=%d dsn=%s reason=%s from=%s to=%s%s%s",
             qid, s->id, s->addr, stage, s->reject_check ? " check=" : "",
             s->reject_check ? s->reject_check : "", code, dsn, log_quote(r, sizeof r, reason),
             log_quote(from, sizeof from, s->state >= SMTP_STATE_MAIL ? s->txn.mail.path.addr : ""),
             log_quote(to, sizeof to, rcpt ? rcpt : ""), s->auth_user[0] ? " auth=" : "",
             s->auth_user);
}

/* --- message tracking (core/track.h) ---
 * A transaction's events carry (session id, s->n_txn); MAIL opens the
 * transaction and first emits the session's CONNECT with the connect time,
 * so every message's timeline starts at its connection.  Events are filled
 * on the stack with borrowed strings: track_emit copies what it keeps. */

static unsigned session_role_flags(struct smtp_session *s);

/* session_track_role - the transaction's role as the spool will know it */
static enum track_role session_track_role(struct smtp_session *s)
{
    unsigned flags = session_role_flags(s);
    return flags & SPOOL_F_JOURNAL ? TRACK_ROLE_JOURNAL
         : flags & SPOOL_F_OUTBOUND ? TRACK_ROLE_OUTBOUND : TRACK_ROLE_INBOUND;
}

/* track_init - an event of the session's current transaction */
static void track_init(struct smtp_session *s, struct track_event *ev, enum track_kind kind)
{
    memset(ev, 0, sizeof *ev);
    ev->kind = kind;
    ev->role = session_track_role(s);
    (void)str_copy(ev->session, sizeof ev->session, s->id);
    ev->txn = s->n_txn;
    ev->client_ip = s->addr;
}

/* track_result_of - the reply code given as a verdict */
static enum track_result track_result_of(int code)
{
    return code >= 500 ? TRACK_REJECTED : code >= 400 ? TRACK_TEMPFAILED : TRACK_ACCEPTED;
}

/* session_tls_text - "TLSv1.3 TLS_AES_256_GCM_SHA384" or "none" */
static const char *session_tls_text(struct smtp_session *s, char *dst, size_t size)
{
    SSL *ssl = s->tls && s->bev != NULL ? bufferevent_openssl_get_ssl(s->bev) : NULL;
    if (ssl == NULL || xsnprintf(dst, size, "%s %s", SSL_get_version(ssl), SSL_get_cipher_name(ssl)) < 0)
        return "none";
    return dst;
}

/* session_track_connect - the connection as an event: at each MAIL for its
 * transaction (txn > 0), or alone when it is refused at connect (txn 0) */
static void session_track_connect(struct smtp_session *s, int code, const char *dsn,
                                  const char *check, const char *reason)
{
    struct track_event ev;
    char tls[128];
    track_init(s, &ev, TRACK_CONNECT);
    ev.ts_us = s->connect_us;
    ev.helo = s->helo[0] ? s->helo : NULL;
    ev.tls = session_tls_text(s, tls, sizeof tls);
    ev.stage = "connect";
    if (code != 0) {
        ev.result = track_result_of(code);
        ev.code = code;
        ev.dsn = dsn;
        ev.check = check;
        ev.reason = reason;
    }
    track_emit(&ev);
}

/* session_track_mail - MAIL's verdict; opens transaction s->n_txn + 1 */
static void session_track_mail(struct smtp_session *s, const struct smtp_mail_args *m, int code,
                               const char *dsn, const char *check, const char *reason)
{
    s->n_txn++;
    session_track_connect(s, 0, NULL, NULL, NULL);
    struct track_event ev;
    track_init(s, &ev, TRACK_MAIL);
    ev.result = track_result_of(code);
    ev.stage = "mail";
    ev.sender = m ? m->path.addr : NULL;
    ev.size = m && m->size > 0 ? (uint64_t)m->size : 0;
    ev.code = code;
    ev.dsn = dsn;
    ev.check = check;
    ev.reason = reason;
    track_emit(&ev);
}

/* session_track_verdict - a RCPT's or the message's (DATA) verdict */
static void session_track_verdict(struct smtp_session *s, enum track_kind kind, const char *stage,
                                  const char *rcpt, int code, const char *dsn, const char *check,
                                  const char *reason)
{
    struct track_event ev;
    track_init(s, &ev, kind);
    ev.result = track_result_of(code);
    ev.stage = stage;
    ev.rcpt = rcpt;
    ev.code = code;
    ev.dsn = dsn;
    ev.check = check;
    ev.reason = reason;
    if (kind == TRACK_DATA) {
        ev.size = s->txn.reader.size;
        ev.subject = s->txn.subject[0] ? s->txn.subject : NULL;
        ev.message_id = s->txn.message_id[0] ? s->txn.message_id : NULL;
    }
    track_emit(&ev);
}

/* session_track_policy - a verdict refusing at stage, as session_policy_refused replies it */
static void session_track_policy(struct smtp_session *s, enum track_kind kind, const char *stage,
                                 const struct policy_verdict *v, const char *rcpt)
{
    session_track_verdict(s, kind, stage, rcpt, v->code, v->dsn, v->check,
                          v->reason[0] ? v->reason : v->text);
}

/* session_track_queued - the message is durable: QUEUED links the
 * transaction to its queue id; a held message is HELD at once */
static void session_track_queued(struct smtp_session *s, const char *qid)
{
    struct smtp_txn *t = &s->txn;
    struct track_event ev;
    track_init(s, &ev, TRACK_QUEUED);
    (void)str_copy(ev.qid, sizeof ev.qid, qid);
    ev.sender = t->mail.path.addr;
    ev.nrcpt = (uint32_t)t->n_rcpts;
    ev.size = t->reader.size;
    ev.subject = t->subject[0] ? t->subject : NULL;
    ev.message_id = t->message_id[0] ? t->message_id : NULL;
    track_emit(&ev);
    if (t->hold == NULL)
        return;
    track_init(s, &ev, TRACK_HELD);
    (void)str_copy(ev.qid, sizeof ev.qid, qid);
    ev.check = t->hold_check;
    ev.reason = t->hold;
    track_emit(&ev);
}

/* session_message_id - the Message-ID without its angle brackets */
static void session_message_id(struct smtp_txn *t)
{
    char *m = t->message_id;
    size_t n = msg_header_value(t->head.data, t->head.len, "Message-ID", m, sizeof t->message_id);
    if (n >= 2 && m[0] == '<' && m[n - 1] == '>') {
        memmove(m, m + 1, n - 2);
        m[n - 2] = '\0';
    }
}

/* --- transactions --- */

/* txn_reset - forget the transaction (RSET, HELO, after the end of data);
 * a spool txn still open is aborted: the client was never told 250 */
static void txn_reset(struct smtp_session *s)
{
    struct smtp_txn *t = &s->txn;
    if (s->rcpt_pending != NULL) {
        policy_pending_cancel(s->rcpt_pending);
        s->rcpt_pending = NULL;
    }
    if (t->spool != NULL) {
        spool_txn_abort(t->spool);
        t->spool = NULL;
    }
    for (size_t i = 0; i < t->n_rcpts; i++) {
        free(t->rcpts[i].addr);
        free(t->rcpts[i].orcpt);
    }
    t->n_rcpts = 0;
    memset(&t->mail, 0, sizeof t->mail);
    t->qid[0] = '\0';
    t->write_failed = false;
    buf_reset(&t->out);
    free(t->hold);
    t->hold = NULL;
    buf_reset(&t->prefix);
    buf_reset(&t->head);
    free(t->antispoof_spf_domain);
    t->antispoof_spf_domain = NULL;
    t->all_permitted = false;
    session_content_cancel(s);
    t->screen = t->screen_over = t->screened = false;
    buf_free(&t->msg);
    t->hdr_done = false;
    t->hdr_scanned = 0;
    t->journal = false;
    t->hold_check = NULL;
    t->subject[0] = t->message_id[0] = '\0';
}

static void session_rcpt_ready(void *arg);

/* session_permitted - the envelope sender is a permitted sender of rcpt
 * (policy/permitted.h; the index is swapped in by moatd like the snapshot) */
static bool session_permitted(struct smtp_session *s, const char *rcpt)
{
    const struct permitted_index *ix = s->srv->cfg.permitted ? *s->srv->cfg.permitted : NULL;
    if (ix == NULL || rcpt == NULL)
        return false;
    return permitted_check(ix, s->txn.mail.path.addr, rcpt, screen_clock_now(s->set));
}

/* session_policy - ask the pipeline; fills v (RCPT: may be POLICY_PENDING) */
static void session_policy(struct smtp_session *s, enum policy_stage stage, const char *rcpt,
                           struct policy_verdict *v)
{
    struct policy_request req = {
        .stage = stage,
        .client_addr = s->addr,
        .helo = s->helo,
        .tls = s->tls,
        .sender = s->txn.mail.path.addr,
        .rcpt = rcpt,
        .n_rcpts = s->txn.n_rcpts,
        .snapshot = s->srv->cfg.snapshot ? *s->srv->cfg.snapshot : NULL,
        .directory = s->srv->cfg.directory ? *s->srv->cfg.directory : NULL,
        .callforward = s->srv->cfg.callforward,
        .auth_user = s->auth_user[0] ? s->auth_user : NULL,
        .dnsbl = s->dnsbl,
        .antispoof = s->srv->cfg.antispoof,
        .greylist = s->srv->cfg.greylist,
        .srs_key = s->srv->cfg.srs_key,
    };
    req.outbound_host = store_snapshot_outbound_host(req.snapshot, (const struct sockaddr *)&s->sa);
    req.journal_source = store_snapshot_journal_source(req.snapshot, (const struct sockaddr *)&s->sa);
    req.journal_txn = s->txn.journal;
    req.archive_off = !s->set->archive;
    char spf_out[256] = "";
    req.antispoof_spf_out = spf_out;
    req.antispoof_spf_domain = s->txn.antispoof_spf_domain;
    char from[256];
    if (stage == POLICY_DATA_END) {
        req.head = s->txn.head.data;
        req.head_len = s->txn.head.len;
        if (msg_header_from_domain(req.head, req.head_len, from, sizeof from))
            req.header_from = from;
        req.header_from_fields = msg_header_from_count(req.head, req.head_len);
    }
    if (stage == POLICY_RCPT)
        req.permitted = session_permitted(s, rcpt);
    else if (stage == POLICY_DATA)
        req.permitted = s->txn.all_permitted;
    if (stage == POLICY_RCPT)
        policy_evaluate_async(&req, v, session_rcpt_ready, s, &s->rcpt_pending);
    else
        policy_evaluate(&req, v);
    /* anti-spoofing let the sender through on an SPF bypass (whatever a later
     * check says of this recipient): the content stage must see SPF pass */
    if (spf_out[0] != '\0' && s->txn.antispoof_spf_domain == NULL)
        s->txn.antispoof_spf_domain = xstrdup(spf_out);
}

/* session_policy_refused - reply and log a REJECT/TEMPFAIL verdict; true if refused */
static bool session_policy_refused(struct smtp_session *s, const char *stage,
                                   const struct policy_verdict *v, const char *rcpt)
{
    if (v->action == POLICY_HOLD && s->txn.hold == NULL) {
        /* accepted, but quarantined: the whole message is held (first reason wins) */
        s->txn.hold = xstrdup(v->reason[0] ? v->reason : v->text);
        s->txn.hold_check = v->check;
        log_info("session=%s client=%s event=hold stage=%s check=%s reason=\"%s\"", s->id, s->addr,
                 stage, v->check ? v->check : "-", s->txn.hold);
    }
    if (v->action != POLICY_REJECT && v->action != POLICY_TEMPFAIL)
        return false;
    session_reply(s, v->code, v->dsn, "%s", v->text);
    s->reject_check = v->check;   /* session_log_reject names the deciding check */
    session_log_reject(s, stage, v->code, v->dsn, v->reason[0] ? v->reason : v->text, rcpt);
    s->reject_check = NULL;
    return true;
}

/* --- SMTP AUTH (RFC 4954) --- */

/* session_line_max - the longest input line read at once: commands with
 * parameters, or an AUTH line when AUTH is on */
static size_t session_line_max(const struct smtp_session *s)
{
    size_t hard = (size_t)s->set->smtp_max_command_line + SMTP_PARAM_ALLOWANCE;
    if (s->set->smtp_auth && (size_t)s->set->smtp_auth_max_line > hard)
        hard = (size_t)s->set->smtp_auth_max_line;
    return hard;
}

/* session_set_sockaddr - the client's address as a socket address (the
 * listener hands us text); unknown forms stay AF_UNSPEC and match no range */
static void session_set_sockaddr(struct smtp_session *s)
{
    int family;
    unsigned char a[16];
    memset(&s->sa, 0, sizeof s->sa);
    if (cidr_addr_from_text(s->addr, &family, a) < 0)
        return;
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&s->sa;
        sin->sin_family = AF_INET;
        memcpy(&sin->sin_addr, a, 4);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&s->sa;
        sin6->sin6_family = AF_INET6;
        memcpy(&sin6->sin6_addr, a, 16);
    }
}

/* session_auth_offered - AUTH is on and can be verified off the loop */
static bool session_auth_offered(const struct smtp_session *s)
{
    return s->set->smtp_auth && s->srv->cfg.workers != NULL;
}

/* session_auth_end - leave a challenge exchange (done, cancelled, refused) */
static void session_auth_end(struct smtp_session *s)
{
    if (s->auth_step == SMTP_AUTH_NONE)
        return;
    s->auth_step = SMTP_AUTH_NONE;
    sodium_memzero(s->auth_login_user, sizeof s->auth_login_user);
    session_set_timeouts(s, s->set->smtp_timeout_command);
}

/* session_auth_challenge - a 334 reply (no enhanced code: RFC 4954 4) and wait */
static void session_auth_challenge(struct smtp_session *s, enum smtp_auth_step step,
                                   const char *b64)
{
    s->auth_step = step;
    buf_printf(&s->replies, "334 %s\r\n", b64);
    session_set_timeouts(s, s->set->smtp_auth_timeout);
}

static void session_auth_log(struct smtp_session *s, const char *mech, const char *name,
                             const char *result, const char *reason)
{
    char n[300], r[200];
    log_info("session=%s client=%s event=auth mech=%s auth=%s result=%s reason=%s", s->id, s->addr,
             mech, log_quote(n, sizeof n, name ? name : ""), result,
             log_quote(r, sizeof r, reason ? reason : ""));
}

/* session_auth_decode_failed - reply to a response that cannot be used */
static void session_auth_decode_failed(struct smtp_session *s, const char *mech,
                                       enum smtp_auth_decode rc)
{
    session_auth_end(s);
    if (rc == SMTP_AUTH_CANCEL) {
        session_reply(s, 501, "5.0.0", "Authentication cancelled");
        session_auth_log(s, mech, NULL, "cancelled", "client sent *");
    } else {
        session_reply(s, 501, "5.5.2", "Invalid base64 data or malformed %s response", mech);
        session_auth_log(s, mech, NULL, "malformed", "bad base64 or format");
    }
}

/* the limiter's keys */
static void auth_key_ip(const struct smtp_session *s, char *dst, size_t size)
{
    (void)xsnprintf(dst, size, "ip:%s", s->addr);
}

static void auth_key_user(const char *name, char *dst, size_t size)
{
    if (xsnprintf(dst, size, "user:%s", name) < 0)
        dst[0] = '\0';
    str_lower(dst);
}

/* session_auth_limited - over smtp_auth_max_failures for this address (or name) */
static bool session_auth_limited(struct smtp_session *s, const char *name)
{
    char key[200];
    uint64_t now = time_mono_ms(), win = (uint64_t)s->set->smtp_auth_failure_window * 1000;
    auth_key_ip(s, key, sizeof key);
    if (smtp_auth_limited(s->srv->auth_limit, key, now, win, s->set->smtp_auth_max_failures))
        return true;
    if (name == NULL)
        return false;
    auth_key_user(name, key, sizeof key);
    return key[0] && smtp_auth_limited(s->srv->auth_limit, key, now, win,
                                       s->set->smtp_auth_max_failures);
}

static void session_auth_refuse_limited(struct smtp_session *s, const char *mech, const char *name)
{
    session_auth_end(s);
    session_reply(s, 454, "4.7.0", "too many failed authentication attempts, try later");
    session_auth_log(s, mech, name, "limited", "smtp_auth_max_failures reached");
}

/* auth_job_work - on a pool thread: argon2id; an unknown name hashes the
 * password once, about the cost of a verification */
static void auth_job_work(void *arg)
{
    struct smtp_auth_job *j = arg;
    if (j->hash[0] != '\0') {
        j->ok = crypto_pwhash_str_verify(j->hash, j->password, strlen(j->password)) == 0;
    } else {
        char dummy[crypto_pwhash_STRBYTES];
        if (crypto_pwhash_str(dummy, j->password, strlen(j->password),
                              crypto_pwhash_OPSLIMIT_INTERACTIVE,
                              crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
            dummy[0] = '\0';    /* out of memory: refused all the same */
        j->ok = false;
    }
    sodium_memzero(j->password, sizeof j->password);
}

static void auth_job_free(struct smtp_auth_job *j)
{
    sodium_memzero(j, sizeof *j);
    free(j);
}

/* auth_job_done - on the loop: answer the client, go on with its input */
static void auth_job_done(void *arg)
{
    struct smtp_auth_job *j = arg;
    struct smtp_session *s = j->s;
    if (s == NULL) {                  /* the session went away meanwhile */
        auth_job_free(j);
        return;
    }
    s->auth_job = NULL;
    if (s->state == SMTP_STATE_CLOSING || s->bev == NULL) {
        auth_job_free(j);
        return;
    }
    if (j->ok) {
        (void)str_copy(s->auth_user, sizeof s->auth_user, j->name);
        str_lower(s->auth_user);
        session_reply(s, 235, "2.7.0", "Authentication successful");
        session_auth_log(s, j->mech, j->name, "ok", "");
    } else {
        char key[200];
        uint64_t now = time_mono_ms(), win = (uint64_t)s->set->smtp_auth_failure_window * 1000;
        auth_key_ip(s, key, sizeof key);
        smtp_auth_failed(s->srv->auth_limit, key, now, win);
        auth_key_user(j->name, key, sizeof key);
        if (key[0])
            smtp_auth_failed(s->srv->auth_limit, key, now, win);
        session_reply(s, 535, "5.7.8", "Authentication credentials invalid");
        session_auth_log(s, j->mech, j->name, "failed",
                         j->hash[0] ? "wrong password" : "unknown or disabled account");
    }
    auth_job_free(j);
    session_flush(s);
    session_process(s);
}

/* session_auth_verify - name and password are known: check them off the loop */
static void session_auth_verify(struct smtp_session *s, const char *mech, const char *authzid,
                                const char *name, const char *password)
{
    session_auth_end(s);
    if (session_auth_limited(s, name)) {
        session_auth_refuse_limited(s, mech, name);
        return;
    }
    struct smtp_auth_job *j = xcalloc(1, sizeof *j);
    j->s = s;
    j->mech = mech;
    (void)str_copy(j->name, sizeof j->name, name);
    /* RFC 4616 2: we do not act on behalf of another identity */
    bool proxy = authzid != NULL && authzid[0] != '\0' && !str_ieq(authzid, name);
    const char *hash = NULL;
    if (!proxy && strlen(name) <= STORE_SMTP_ACCOUNT_NAME_MAX)
        hash = store_snapshot_smtp_account_hash(s->srv->cfg.snapshot ? *s->srv->cfg.snapshot : NULL,
                                                name);
    if (hash == NULL || str_copy(j->hash, sizeof j->hash, hash) < 0)
        j->hash[0] = '\0';
    (void)str_copy(j->password, sizeof j->password, password);
    s->auth_job = j;
    worker_submit(s->srv->cfg.workers, auth_job_work, auth_job_done, j);
}

static void session_auth_plain(struct smtp_session *s, const char *b64, size_t len)
{
    struct smtp_auth_plain p;
    enum smtp_auth_decode rc = smtp_auth_plain_decode(b64, len, &p);
    if (rc != SMTP_AUTH_OK) {
        session_auth_decode_failed(s, "PLAIN", rc);
        return;
    }
    session_auth_verify(s, "PLAIN", p.authzid, p.authcid, p.passwd);
    sodium_memzero(&p, sizeof p);
}

/* session_auth_continue - one response line of a challenge exchange */
static void session_auth_continue(struct smtp_session *s, const char *line, size_t len)
{
    s->n_commands++;
    if (len + 2 > (size_t)s->set->smtp_auth_max_line) {
        session_auth_end(s);
        session_reply(s, 500, "5.5.6", "Error: AUTH response too long");
        return;
    }
    switch (s->auth_step) {
    case SMTP_AUTH_PLAIN_WAIT:
        session_auth_plain(s, line, len);
        return;
    case SMTP_AUTH_LOGIN_USER: {
        enum smtp_auth_decode rc = smtp_auth_login_decode(line, len, s->auth_login_user,
                                                          sizeof s->auth_login_user);
        if (rc != SMTP_AUTH_OK) {
            session_auth_decode_failed(s, "LOGIN", rc);
            return;
        }
        session_auth_challenge(s, SMTP_AUTH_LOGIN_PASS, "UGFzc3dvcmQ6");   /* "Password:" */
        return;
    }
    case SMTP_AUTH_LOGIN_PASS: {
        char pw[SMTP_AUTH_FIELD_MAX + 1];
        enum smtp_auth_decode rc = smtp_auth_login_decode(line, len, pw, sizeof pw);
        if (rc != SMTP_AUTH_OK) {
            session_auth_decode_failed(s, "LOGIN", rc);
            return;
        }
        char name[SMTP_AUTH_FIELD_MAX + 1];
        memcpy(name, s->auth_login_user, sizeof name);
        session_auth_verify(s, "LOGIN", NULL, name, pw);
        sodium_memzero(pw, sizeof pw);
        sodium_memzero(name, sizeof name);
        return;
    }
    case SMTP_AUTH_NONE:
        return;
    }
}

/* cmd_auth - RFC 4954 4: AUTH mechanism [initial-response] */
static void cmd_auth(struct smtp_session *s, const struct smtp_cmdline *cmd)
{
    if (!session_auth_offered(s)) {
        session_reply(s, 502, "5.5.1", "Error: command not implemented");
        return;
    }
    if (s->state == SMTP_STATE_INIT) {
        session_reply(s, 503, "5.5.1", "Error: send EHLO first");
        return;
    }
    if (!s->tls) {
        /* RFC 4954 6 */
        session_reply(s, 538, "5.7.11", "Encryption required for requested authentication mechanism");
        session_auth_log(s, "-", NULL, "refused", "AUTH before STARTTLS");
        return;
    }
    if (s->auth_user[0] != '\0') {
        session_reply(s, 503, "5.5.1", "Error: already authenticated");
        return;
    }
    if (s->state != SMTP_STATE_READY) {
        session_reply(s, 503, "5.5.1", "Error: AUTH not allowed during a mail transaction");
        return;
    }
    char mech[32];
    const char *sp = memchr(cmd->args, ' ', cmd->args_len);
    size_t mlen = sp ? (size_t)(sp - cmd->args) : cmd->args_len;
    if (mlen == 0 || mlen >= sizeof mech) {
        session_reply(s, 501, "5.5.4", "Syntax: AUTH mechanism [initial-response]");
        return;
    }
    memcpy(mech, cmd->args, mlen);
    mech[mlen] = '\0';
    const char *ir = sp ? sp + 1 : NULL;
    size_t ir_len = sp ? cmd->args_len - mlen - 1 : 0;
    bool plain = str_ieq(mech, "PLAIN"), login = str_ieq(mech, "LOGIN");
    if (!plain && !login) {
        session_reply(s, 504, "5.5.4", "Unrecognized authentication type");
        return;
    }
    if (session_auth_limited(s, NULL)) {
        session_auth_refuse_limited(s, plain ? "PLAIN" : "LOGIN", NULL);
        return;
    }
    if (plain) {
        if (ir == NULL)
            session_auth_challenge(s, SMTP_AUTH_PLAIN_WAIT, "");
        else
            session_auth_plain(s, ir, ir_len);
        return;
    }
    if (ir == NULL) {
        session_auth_challenge(s, SMTP_AUTH_LOGIN_USER, "VXNlcm5hbWU6");       /* "Username:" */
        return;
    }
    enum smtp_auth_decode rc = smtp_auth_login_decode(ir, ir_len, s->auth_login_user,
                                                      sizeof s->auth_login_user);
    if (rc != SMTP_AUTH_OK) {
        session_auth_decode_failed(s, "LOGIN", rc);
        return;
    }
    session_auth_challenge(s, SMTP_AUTH_LOGIN_PASS, "UGFzc3dvcmQ6");
}

/* --- command handlers --- */

/* helo_common - HELO and EHLO: RFC 5321 4.1.4, a new HELO/EHLO resets the transaction */
static bool helo_common(struct smtp_session *s, const struct smtp_cmdline *cmd)
{
    struct smtp_parse_error err;
    char helo[SMTP_HELO_MAX + 1];
    if (smtp_parse_helo(cmd->args, cmd->args_len, helo, sizeof helo, &err) < 0) {
        session_reply(s, err.code, err.dsn, "Syntax: %s hostname", cmd->verb);
        return false;
    }
    txn_reset(s);
    (void)str_copy(s->helo, sizeof s->helo, helo);
    struct policy_verdict v;
    session_policy(s, POLICY_HELO, NULL, &v);
    if (session_policy_refused(s, "helo", &v, NULL)) {
        s->helo[0] = '\0';
        session_enter_state(s, SMTP_STATE_INIT);
        return false;
    }
    session_enter_state(s, SMTP_STATE_READY);
    char h[300];
    log_info("session=%s client=%s event=%s helo=%s tls=%s", s->id, s->addr,
             cmd->verb[0] == 'E' ? "ehlo" : "helo", log_quote(h, sizeof h, helo), s->tls ? "yes" : "no");
    return true;
}

static void cmd_helo(struct smtp_session *s, const struct smtp_cmdline *cmd)
{
    if (!helo_common(s, cmd))
        return;
    s->esmtp = false;
    session_reply(s, 250, NULL, "%s", s->srv->hostname);
}

static void cmd_ehlo(struct smtp_session *s, const struct smtp_cmdline *cmd)
{
    if (!helo_common(s, cmd))
        return;
    s->esmtp = true;
    /* RFC 5321 4.1.1.1 ehlo-greet, then one keyword a line */
    const char *ext[12];
    char size[40];
    size_t n = 0;
    (void)xsnprintf(size, sizeof size, "SIZE %" PRId64, s->set->message_size_limit);
    ext[n++] = "PIPELINING";                 /* RFC 2920 */
    ext[n++] = size;                         /* RFC 1870 */
    /* RFC 3207 4.2: not offered again once TLS is active */
    if (!s->tls && s->srv->cfg.tls != NULL)
        ext[n++] = "STARTTLS";
    /* RFC 4954 4 / RFC 3207 6: no plain-text passwords over a clear channel */
    if (s->tls && session_auth_offered(s))
        ext[n++] = "AUTH PLAIN LOGIN";
    ext[n++] = "ENHANCEDSTATUSCODES";        /* RFC 2034 */
    ext[n++] = "8BITMIME";                   /* RFC 6152 */
    ext[n++] = "DSN";                        /* RFC 3461 */
    ext[n++] = "SMTPUTF8";                   /* RFC 6531 */
    ext[n++] = "HELP";
    session_reply_cont(s, 250, NULL, "%s", s->srv->hostname);
    for (size_t i = 0; i + 1 < n; i++)
        session_reply_cont(s, 250, NULL, "%s", ext[i]);
    session_reply(s, 250, NULL, "%s", ext[n - 1]);
}

/* cmd_starttls - RFC 3207 4.2: after "220 Ready", the TLS handshake
 * starts on the same connection; the filter bufferevent replaces ours */
static void cmd_starttls(struct smtp_session *s, const struct smtp_cmdline *cmd)
{
    if (cmd->args_len != 0) {
        session_reply(s, 501, "5.5.4", "Syntax: STARTTLS");
        return;
    }
    if (s->tls) {
        session_reply(s, 503, "5.5.1", "TLS already active");
        return;
    }
    if (s->srv->cfg.tls == NULL) {
        session_reply(s, 454, "4.7.0", "TLS not available");
        return;
    }
    SSL *ssl = SSL_new(s->srv->cfg.tls);
    if (ssl == NULL) {
        ERR_clear_error();
        session_reply(s, 454, "4.7.0", "TLS not available due to a temporary reason");
        return;
    }
    /* CVE-2011-0411 class: whatever the client sent after STARTTLS in clear
     * text must never be read as if it came over TLS.  It is discarded
     * unanswered before the handshake starts. */
    struct evbuffer *in = bufferevent_get_input(s->bev);
    size_t junk = evbuffer_get_length(in);
    if (junk > 0) {
        evbuffer_drain(in, junk);
        log_warn("session=%s client=%s event=starttls_pipelining discarded=%zu", s->id, s->addr, junk);
    }
    session_reply(s, 220, "2.0.0", "Ready to start TLS");
    session_flush(s);
    struct bufferevent *tls = bufferevent_openssl_filter_new(bufferevent_get_base(s->bev), s->bev, ssl,
                                                             BUFFEREVENT_SSL_ACCEPTING,
                                                             BEV_OPT_CLOSE_ON_FREE);
    if (tls == NULL) {
        SSL_free(ssl);
        log_warn("session=%s client=%s event=tls_failed error=\"filter setup failed\"", s->id, s->addr);
        session_close(s);
        return;
    }
    s->bev = tls;
    bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
    bufferevent_setcb(tls, session_read_cb, session_write_cb, session_event_cb, s);
    size_t high = session_line_max(s);
    bufferevent_setwatermark(tls, EV_READ, 0, high * 2 > SMTP_INPUT_MIN_HIGH ? high * 2 : SMTP_INPUT_MIN_HIGH);
    struct timeval hs = { (time_t)s->set->smtp_timeout_tls_handshake, 0 };
    bufferevent_set_timeouts(tls, &hs, &hs);
    bufferevent_enable(tls, EV_READ | EV_WRITE);
    session_enter_state(s, SMTP_STATE_TLS);
}

/* session_tls_done - handshake complete: RFC 3207 4.2, forget everything
 * learnt before TLS; the client must EHLO again */
static void session_tls_done(struct smtp_session *s)
{
    SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
    s->tls = true;
    s->esmtp = false;
    s->helo[0] = '\0';
    txn_reset(s);
    session_enter_state(s, SMTP_STATE_INIT);
    session_set_timeouts(s, s->set->smtp_timeout_command);
    log_info("session=%s client=%s event=tls version=%s cipher=%s", s->id, s->addr,
             ssl ? SSL_get_version(ssl) : "?", ssl ? SSL_get_cipher_name(ssl) : "?");
    metrics_inc(M_TLS_INBOUND_TOTAL, (const char *[]){ ssl ? SSL_get_version(ssl) : NULL });
}

static void cmd_mail(struct smtp_session *s, const struct smtp_cmdline *cmd)
{
    struct smtp_parse_error err;
    struct smtp_mail_args m;
    if (s->n_messages >= (uint64_t)s->set->smtp_max_messages) {
        session_reply(s, 421, "4.7.0", "%s Too many messages in this session, reconnect to send more",
                      s->srv->hostname);
        log_info("session=%s client=%s event=limit limit=smtp_max_messages", s->id, s->addr);
        session_close(s);
        return;
    }
    if (smtp_parse_mail(cmd->args, cmd->args_len, &m, &err) < 0) {
        session_reply(s, err.code, err.dsn, "%s", err.text);
        session_log_reject(s, "mail", err.code, err.dsn, err.text, NULL);
        session_track_mail(s, NULL, err.code, err.dsn, NULL, err.text);
        return;
    }
    /* RFC 5321 4.1.1.11 / RFC 1869: parameters only after EHLO */
    if (!s->esmtp && (m.size >= 0 || m.body || m.smtputf8 || m.ret || m.envid[0])) {
        session_reply(s, 555, "5.5.4", "MAIL parameters are not recognized after HELO, use EHLO");
        session_track_mail(s, &m, 555, "5.5.4", NULL, "MAIL parameters after HELO");
        return;
    }
    /* RFC 1870 6.1 */
    if (m.size > s->set->message_size_limit) {
        session_reply(s, 552, "5.3.4", "Message size exceeds fixed maximum message size");
        session_log_reject(s, "mail", 552, "5.3.4", "declared SIZE above message_size_limit", NULL);
        session_track_mail(s, &m, 552, "5.3.4", "message_size_limit",
                           "declared SIZE above message_size_limit");
        return;
    }
    s->txn.mail = m;
    struct policy_verdict v;
    session_policy(s, POLICY_MAIL, NULL, &v);
    if (session_policy_refused(s, "mail", &v, NULL)) {
        session_track_mail(s, &m, v.code, v.dsn, v.check, v.reason[0] ? v.reason : v.text);
        memset(&s->txn.mail, 0, sizeof s->txn.mail);
        return;
    }
    session_enter_state(s, SMTP_STATE_MAIL);
    session_reply(s, 250, "2.1.0", "Ok");
    session_track_mail(s, &m, 250, "2.1.0", v.check, NULL);
}

static void session_rcpt_finish(struct smtp_session *s, const struct smtp_rcpt_args *r,
                                const struct policy_verdict *v);

static void cmd_rcpt(struct smtp_session *s, const struct smtp_cmdline *cmd)
{
    struct smtp_parse_error err;
    struct smtp_rcpt_args r;
    struct smtp_txn *t = &s->txn;
    if (t->n_rcpts >= (size_t)s->set->smtp_max_recipients) {
        /* RFC 5321 4.5.3.1.10: 452, the client sends the rest in another transaction */
        session_reply(s, 452, "4.5.3", "Too many recipients");
        return;
    }
    if (smtp_parse_rcpt(cmd->args, cmd->args_len, t->mail.smtputf8, &r, &err) < 0) {
        session_reply(s, err.code, err.dsn, "%s", err.text);
        session_log_reject(s, "rcpt", err.code, err.dsn, err.text, NULL);
        session_track_verdict(s, TRACK_RCPT, "rcpt", NULL, err.code, err.dsn, NULL, err.text);
        s->srv->stats.rcpts_rejected++;
        return;
    }
    if ((r.notify || r.orcpt[0]) && !s->esmtp) {
        session_reply(s, 555, "5.5.4", "RCPT parameters are not recognized after HELO, use EHLO");
        return;
    }
    struct policy_verdict v;
    session_policy(s, POLICY_RCPT, r.path.addr, &v);
    if (v.action == POLICY_PENDING) {
        /* wait for the verdict; session_process reads nothing meanwhile */
        s->rcpt_wait = r;
        return;
    }
    session_rcpt_finish(s, &r, &v);
}

/* session_rcpt_finish - the RCPT's verdict is known: refuse, or add it */
static void session_rcpt_finish(struct smtp_session *s, const struct smtp_rcpt_args *r,
                                const struct policy_verdict *v)
{
    struct smtp_txn *t = &s->txn;
    if (session_policy_refused(s, "rcpt", v, r->path.addr)) {
        session_track_policy(s, TRACK_RCPT, "rcpt", v, r->path.addr);
        s->srv->stats.rcpts_rejected++;
        return;
    }
    if (t->n_rcpts == t->cap_rcpts) {
        t->cap_rcpts = t->cap_rcpts ? t->cap_rcpts * 2 : 8;
        t->rcpts = xreallocarray(t->rcpts, t->cap_rcpts, sizeof *t->rcpts);
    }
    if (v->action == POLICY_ACCEPT && v->check == policy_journal_check_name && !t->journal) {
        t->journal = true;
        log_info("session=%s client=%s event=journal_rcpt role=journal rcpt=<%s>", s->id, s->addr,
                 r->path.addr);
    }
    struct smtp_rcpt *rc = &t->rcpts[t->n_rcpts++];
    rc->addr = xstrdup(r->path.addr);
    rc->orcpt = r->orcpt[0] ? xstrdup(r->orcpt) : NULL;
    rc->notify = r->notify;
    bool permitted = session_permitted(s, r->path.addr);
    t->all_permitted = t->n_rcpts == 1 ? permitted : t->all_permitted && permitted;
    session_enter_state(s, SMTP_STATE_RCPT);
    session_reply(s, 250, "2.1.5", "Ok");
    session_track_verdict(s, TRACK_RCPT, "rcpt", r->path.addr, 250, "2.1.5", v->check, NULL);
}

/* session_rcpt_ready - an asynchronous RCPT verdict arrived (from the loop):
 * finish that RCPT with a fresh request (the snapshot may have changed),
 * then go on with the commands the client pipelined meanwhile */
static void session_rcpt_ready(void *arg)
{
    struct smtp_session *s = arg;
    struct policy_verdict v;
    session_policy(s, POLICY_RCPT, s->rcpt_wait.path.addr, &v);
    if (v.action == POLICY_PENDING)
        return;      /* a later check is asynchronous too: wait again */
    session_rcpt_finish(s, &s->rcpt_wait, &v);
    session_process(s);
}

/* session_received - RFC 5321 4.4 trace header, prepended to the data */
static void session_received(struct smtp_session *s)
{
    struct smtp_txn *t = &s->txn;
    char date[64];
    time_rfc5322(date, sizeof date, time(NULL));
    /* RFC 3848 / RFC 6531 3.7.3 "with" protocol names */
    const char *with;
    bool a = s->auth_user[0] != '\0';
    if (t->mail.smtputf8)
        with = a ? "UTF8SMTPSA" : s->tls ? "UTF8SMTPS" : "UTF8SMTP";
    else if (s->esmtp)
        with = a ? "ESMTPSA" : s->tls ? "ESMTPS" : "ESMTP";
    else
        with = s->tls ? "SMTPS" : "SMTP";
    bool v6 = strchr(s->addr, ':') != NULL;
    buf_printf(&t->out, "Received: from %s ([%s%s])\r\n\tby %s (Moat) with %s id %s",
               s->helo, v6 ? "IPv6:" : "", s->addr, s->srv->hostname, with, t->qid);
    if (s->tls) {
        SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
        if (ssl != NULL)
            buf_printf(&t->out, "\r\n\t(using %s with cipher %s)", SSL_get_version(ssl),
                       SSL_get_cipher_name(ssl));
    }
    /* one recipient only: naming several would disclose Bcc recipients */
    if (t->n_rcpts == 1)
        buf_printf(&t->out, "\r\n\tfor <%s>", t->rcpts[0].addr);
    buf_printf(&t->out, "; %s\r\n", date);
}

static void cmd_data(struct smtp_session *s, const struct smtp_cmdline *cmd)
{
    struct smtp_txn *t = &s->txn;
    if (cmd->args_len != 0) {
        session_reply(s, 501, "5.5.4", "Syntax: DATA");
        return;
    }
    struct policy_verdict v;
    session_policy(s, POLICY_DATA, NULL, &v);
    if (session_policy_refused(s, "data", &v, NULL)) {
        session_track_policy(s, TRACK_DATA, "data", &v, NULL);
        return;
    }
    t->spool = spool_txn_begin(s->srv->cfg.spool);
    (void)str_copy(t->qid, sizeof t->qid, spool_txn_id(t->spool));
    struct smtp_data_limits lim = {
        .max_line = (size_t)s->set->smtp_max_text_line,
        .max_size = (uint64_t)s->set->message_size_limit,
        .max_header = (size_t)s->set->smtp_max_header_size,
        .max_received = (unsigned)s->set->smtp_max_received_headers,
    };
    smtp_data_init(&t->reader, &lim);
    buf_reset(&t->out);
    t->screen = !t->journal && session_screening(s);
    session_received(s);
    char from[300];
    log_info("qid=%s session=%s client=%s event=data from=%s nrcpt=%zu auth=%s", t->qid, s->id,
             s->addr, log_quote(from, sizeof from, t->mail.path.addr), t->n_rcpts,
             s->auth_user[0] ? s->auth_user : "-");
    session_enter_state(s, SMTP_STATE_DATA);
    session_set_timeouts(s, s->set->smtp_timeout_data_block);
    /* RFC 5321 4.2.2: 354 is intermediate, it has no enhanced code (RFC 3463 has no class 3) */
    session_reply(s, 354, NULL, "End data with <CR><LF>.<CR><LF>");
}

static void cmd_rset(struct smtp_session *s, const struct smtp_cmdline *cmd)
{
    if (cmd->args_len != 0) {
        session_reply(s, 501, "5.5.4", "Syntax: RSET");
        return;
    }
    txn_reset(s);
    if (s->state != SMTP_STATE_INIT)
        session_enter_state(s, SMTP_STATE_READY);
    session_reply(s, 250, "2.0.0", "Ok");
}

static void cmd_noop(struct smtp_session *s, const struct smtp_cmdline *cmd)
{
    /* RFC 5321 4.1.1.9: a string argument is allowed and ignored */
    session_reply(s, 250, "2.0.0", "Ok");
}

static void cmd_quit(struct smtp_session *s, const struct smtp_cmdline *cmd)
{
    if (cmd->args_len != 0) {
        session_reply(s, 501, "5.5.4", "Syntax: QUIT");
        return;
    }
    session_reply(s, 221, "2.0.0", "%s Bye", s->srv->hostname);
    session_close(s);
}

static void cmd_vrfy(struct smtp_session *s, const struct smtp_cmdline *cmd)
{
    if (cmd->args_len == 0) {
        session_reply(s, 501, "5.5.4", "Syntax: VRFY address");
        return;
    }
    /* RFC 5321 3.5.3 / 7.3: no address harvesting */
    session_reply(s, 252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery");
}

static void cmd_help(struct smtp_session *s, const struct smtp_cmdline *cmd)
{
    session_reply_cont(s, 214, "2.0.0", "Moat SMTP server; RFC 5321 with ESMTP extensions");
    session_reply(s, 214, "2.0.0", "Commands: HELO EHLO STARTTLS MAIL RCPT DATA RSET NOOP QUIT VRFY HELP");
}

/* session_sequence_error - the precise reply for a command out of order (RFC 5321 4.1.4) */
static void session_sequence_error(struct smtp_session *s, const struct smtp_command *c)
{
    const char *v = c->verb;
    if (s->state == SMTP_STATE_INIT && (strcmp(v, "MAIL") == 0 || strcmp(v, "STARTTLS") == 0))
        session_reply(s, 503, "5.5.1", "Error: send EHLO first");
    else if (strcmp(v, "MAIL") == 0)
        session_reply(s, 503, "5.5.1", "Error: nested MAIL command");
    else if (strcmp(v, "RCPT") == 0)
        session_reply(s, 503, "5.5.1", "Error: need MAIL command");
    else if (strcmp(v, "DATA") == 0 && s->state == SMTP_STATE_MAIL)
        session_reply(s, 554, "5.5.1", "Error: no valid recipients");   /* RFC 5321 3.3 */
    else if (strcmp(v, "DATA") == 0)
        session_reply(s, 503, "5.5.1", "Error: need RCPT command");
    else if (strcmp(v, "STARTTLS") == 0)
        session_reply(s, 503, "5.5.1", "Error: STARTTLS is not allowed inside a mail transaction");
    else
        session_reply(s, 503, "5.5.1", "Error: bad sequence of commands");
}

/* session_dispatch - one complete command line (without CRLF) */
static void session_dispatch(struct smtp_session *s, const char *line, size_t len)
{
    const struct moat_settings *set = s->set;
    struct smtp_parse_error err;
    struct smtp_cmdline cmd;
    s->n_commands++;
    /* Postfix smtpd_hard_error_limit: the command after the limit gets 421 */
    if (s->n_errors >= (uint64_t)set->smtp_max_errors) {
        session_reply(s, 421, "4.7.0", "%s Too many errors, closing connection", s->srv->hostname);
        log_info("session=%s client=%s event=limit limit=smtp_max_errors errors=%" PRIu64,
                 s->id, s->addr, s->n_errors);
        session_close(s);
        return;
    }
    if (smtp_parse_command(line, len, &cmd, &err) < 0) {
        session_reply(s, err.code, err.dsn, "%s", err.text);
        return;
    }
    const struct smtp_command *c = NULL;
    for (size_t i = 0; i < sizeof smtp_commands / sizeof smtp_commands[0]; i++)
        if (strcmp(smtp_commands[i].verb, cmd.verb) == 0) {
            c = &smtp_commands[i];
            break;
        }
    if (c == NULL) {
        session_reply(s, 500, "5.5.2", "Error: command not recognized");
        return;
    }
    /* RFC 5321 4.5.3.1.4: 512 octets incl. CRLF, extended for MAIL/RCPT parameters */
    size_t limit = (size_t)set->smtp_max_command_line + ((c->flags & SMTP_CMD_PARAMS) ? SMTP_PARAM_ALLOWANCE : 0);
    if ((c->flags & SMTP_CMD_AUTH_LINE) && (size_t)set->smtp_auth_max_line > limit)
        limit = (size_t)set->smtp_auth_max_line;   /* RFC 4954 4: 12288 octets */
    if (len + 2 > limit) {
        session_reply(s, 500, "5.5.6", "Error: line too long");
        return;
    }
    if (c->flags & SMTP_CMD_JUNK) {
        /* Postfix smtpd_junk_command_limit: beyond it, each one is an error */
        if (++s->n_junk > (uint64_t)set->smtp_max_junk_commands)
            s->n_errors++;
    }
    if (c->flags & SMTP_CMD_NOT_IMPL) {
        session_reply(s, 502, "5.5.1", "Error: command not implemented");
        return;
    }
    if (s->tls_required && !s->tls && !(c->flags & SMTP_CMD_BEFORE_TLS)) {
        session_reply(s, 530, "5.7.0", "Must issue a STARTTLS command first");
        return;
    }
    if (!(c->states & ST(s->state))) {
        session_sequence_error(s, c);
        return;
    }
    c->handler(s, &cmd);
    if (c->flags & SMTP_CMD_GROUP_END)
        session_flush(s);
}

/* --- DATA --- */

/* RFC 8601 5: an Authentication-Results field that claims our authserv-id
 * did not come from us; it is renamed in place (same length, so nothing
 * moves) and never trusted.  A field whose authserv-id is not on its first
 * line is renamed too. */
#define AR_NAME "Authentication-Results"
#define AR_RENAMED "X-Untrusted-AuthResult"
_Static_assert(sizeof AR_NAME == sizeof AR_RENAMED, "renamed in place");

static void session_header_rename(struct smtp_session *s, char *line, size_t len)
{
    size_t n = sizeof AR_NAME - 1;
    if (len <= n || strncasecmp(line, AR_NAME, n) != 0)
        return;
    size_t i = n;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    if (i >= len || line[i] != ':')
        return;
    i++;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    size_t id = i;
    while (i < len && line[i] != ';' && line[i] != ' ' && line[i] != '\t' && line[i] != '\r' &&
           line[i] != '\n' && line[i] != '(')
        i++;
    const char *host = s->srv->hostname;
    if (i > id && (i - id != strlen(host) || strncasecmp(line + id, host, i - id) != 0))
        return;      /* another server's results: kept as they are */
    memcpy(line, AR_RENAMED, n);
    log_info("qid=%s session=%s client=%s event=header_renamed field=" AR_NAME " reason=\"claims our authserv-id\"",
             s->txn.qid, s->id, s->addr);
}

/* session_header_scan - scan the complete header lines of t->out; the
 * length of t->out that may be written (a partial header line waits) */
static size_t session_header_scan(struct smtp_session *s)
{
    struct smtp_txn *t = &s->txn;
    size_t i = t->hdr_scanned;
    while (!t->hdr_done && i < t->out.len) {
        char *line = t->out.data + i;
        char *nl = memchr(line, '\n', t->out.len - i);
        if (nl == NULL)
            break;
        size_t len = (size_t)(nl - line) + 1;
        if (len <= 2 && (line[0] == '\r' || line[0] == '\n'))
            t->hdr_done = true;        /* the empty line ends the header section */
        else
            session_header_rename(s, line, len);
        i += len;
    }
    t->hdr_scanned = i;
    return t->hdr_done ? t->out.len : i;
}

/* session_spool_write - hand buffered canonical data to the spool; while
 * the header section of a screened transaction streams, only complete
 * lines (session_header_scan) */
static void session_spool_write(struct smtp_session *s)
{
    struct smtp_txn *t = &s->txn;
    if (t->out.len == 0)
        return;
    if (t->screen && !t->hdr_done && !smtp_data_done(&t->reader)) {
        size_t n = session_header_scan(s);
        if (n < t->out.len) {
            session_spool_put(s, n);
            return;
        }
    } else if (t->screen && !t->hdr_done) {
        (void)session_header_scan(s);    /* the end: everything goes */
    }
    session_spool_put(s, t->out.len);
}

/* session_spool_put - the first n bytes of t->out to the spool (and the
 * in-memory copy for the content stage) */
static void session_spool_put(struct smtp_session *s, size_t n)
{
    struct smtp_txn *t = &s->txn;
    if (n == 0)
        return;
    if (t->screen && !t->screen_over) {
        if (t->msg.len + n > (uint64_t)s->set->screen_max_size) {
            t->screen_over = true;
            buf_free(&t->msg);
        } else {
            buf_append(&t->msg, t->out.data, n);
        }
    }
    if (!t->write_failed && spool_txn_write(t->spool, t->out.data, n) < 0) {
        t->write_failed = true;
        log_error("qid=%s session=%s event=spool_write_failed", t->qid, s->id);
    }
    if (n == t->out.len)
        buf_reset(&t->out);
    else
        buf_consume(&t->out, n);
    t->hdr_scanned -= t->hdr_scanned >= n ? n : t->hdr_scanned;
}

/* session_count_outbound - an accepted relay to the internet from the
 * outbound role: Connect's outbound check counts on seeing one */
static void session_count_outbound(struct smtp_session *s)
{
    const struct store_snapshot *snap = s->srv->cfg.snapshot ? *s->srv->cfg.snapshot : NULL;
    bool host = store_snapshot_outbound_host(snap, (const struct sockaddr *)&s->sa);
    if (!host && s->auth_user[0] == '\0')
        return;
    struct smtp_txn *t = &s->txn;
    for (size_t i = 0; i < t->n_rcpts; i++) {
        const char *at = strrchr(t->rcpts[i].addr, '@');
        if (at != NULL && store_snapshot_find(snap, at + 1) == NULL) {
            struct smtp_server_stats *st = &s->srv->stats;
            st->outbound_relayed++;
            st->outbound_last = (int64_t)time(NULL);
            if (s->auth_user[0] != '\0')
                xsnprintf(st->outbound_last_client, sizeof st->outbound_last_client, "auth=%s",
                          s->auth_user);
            else
                str_copy(st->outbound_last_client, sizeof st->outbound_last_client, s->addr);
            return;
        }
    }
}

/* session_auto_allow - permitted.h: an accepted message from the outbound
 * role with an internal sender teaches that each external recipient is a
 * permitted sender of the sender (not from auto-replies, nor replies to
 * released held mail); the store write goes to the worker pool */
static void session_auto_allow(struct smtp_session *s, const char *qid)
{
    struct smtp_txn *t = &s->txn;
    const struct store_snapshot *snap = s->srv->cfg.snapshot ? *s->srv->cfg.snapshot : NULL;
    const char *sender = t->mail.path.addr;
    const char *sat = strrchr(sender, '@');
    if (!s->set->permitted_auto_allow || s->srv->cfg.workers == NULL || sat == NULL ||
        store_snapshot_find(snap, sat + 1) == NULL)
        return;   /* off, the null sender, or not an internal sender */
    if (s->auth_user[0] == '\0' && !store_snapshot_outbound_host(snap, (const struct sockaddr *)&s->sa))
        return;   /* inbound mail teaches nothing */
    char from[300];
    const char *why = NULL;
    if (!permitted_learn_autoreply(t->head.data, t->head.len, &why) &&
        permitted_learn_released_reply(t->head.data, t->head.len))
        why = "reply to released held mail";
    if (why != NULL) {
        log_info("qid=%s session=%s event=auto_allow result=skipped from=%s reason=\"%s\"", qid, s->id,
                 log_quote(from, sizeof from, sender), why);
        return;
    }
    char **ext = xcalloc(t->n_rcpts ? t->n_rcpts : 1, sizeof *ext);
    size_t n = 0;
    for (size_t i = 0; i < t->n_rcpts; i++) {
        const char *at = strrchr(t->rcpts[i].addr, '@');
        if (at != NULL && store_snapshot_find(snap, at + 1) == NULL)
            ext[n++] = t->rcpts[i].addr;
    }
    if (n > 0) {
        log_info("qid=%s session=%s event=auto_allow result=learned from=%s senders=%zu", qid, s->id,
                 log_quote(from, sizeof from, sender), n);
        permitted_learn_submit(s->srv->cfg.workers, s->set->database, sender, ext, n,
                               screen_clock_now(s->set));
    }
    free(ext);
}

/* session_commit_cb - the spool's answer: only now may the client hear 250 */
static void session_commit_cb(void *arg, const char *qid, int status)
{
    struct smtp_session *s = arg;
    struct smtp_txn *t = &s->txn;
    char from[300];
    s->commit_pending = false;
    if (status == 0) {
        s->srv->stats.messages_accepted++;
        if (!t->journal) {
            session_count_outbound(s);
            session_auto_allow(s, qid);
        }
        s->n_messages++;
        s->n_junk = 0;
        log_info("qid=%s session=%s client=%s event=queued from=%s nrcpt=%zu size=%" PRIu64 "%s", qid,
                 s->id, s->addr, log_quote(from, sizeof from, t->mail.path.addr), t->n_rcpts,
                 t->reader.size, t->journal ? " role=journal" : "");
        if (s->bev != NULL)
            session_reply(s, 250, "2.0.0", "Ok: queued as %s", qid);
        session_track_queued(s, qid);
    } else {
        log_error("qid=%s session=%s client=%s event=commit_failed", qid, s->id, s->addr);
        session_track_verdict(s, TRACK_DATA, "data", NULL, 452, "4.3.1", NULL, "spool commit failed");
        if (s->bev != NULL)
            session_reply(s, 452, "4.3.1", "Insufficient system storage");
    }
    t->spool = NULL;     /* consumed by spool_txn_commit */
    txn_reset(s);
    if (s->bev == NULL) {
        session_lost(s);
        return;
    }
    session_enter_state(s, SMTP_STATE_READY);
    session_set_timeouts(s, s->set->smtp_timeout_command);
    if (s->shutdown_pending) {
        session_reply(s, 421, "4.3.2", "%s Service shutting down", s->srv->hostname);
        session_close(s);
        return;
    }
    bufferevent_enable(s->bev, EV_READ);
    session_process(s);     /* commands pipelined after the final "." */
}


/* orcpt_xtext - "rfc822;" + addr in RFC 3461 xtext ('+', '=' and
 * non-printables as +HH) */
static char *orcpt_xtext(const char *addr)
{
    struct buf b = { 0 };
    buf_append_str(&b, "rfc822;");
    for (const unsigned char *p = (const unsigned char *)addr; *p; p++) {
        if (*p < 33 || *p > 126 || *p == '+' || *p == '=')
            buf_printf(&b, "+%02X", *p);
        else
            buf_append(&b, p, 1);
    }
    char *r = xstrdup(buf_cstr(&b));
    buf_free(&b);
    return r;
}

/* session_spool_rcpts - the spool's recipients: each accepted recipient
 * through forwarding (forward.h: its rules, or a valid SRS bounce address
 * back to the original sender).  A recipient that became another address
 * keeps the original in ORCPT (the client's, else rfc822;original); an
 * address already in the list is not added twice.  Free with
 * session_spool_rcpts_free. */
static struct spool_rcpt *session_spool_rcpts(struct smtp_session *s, size_t *n_out)
{
    struct smtp_txn *t = &s->txn;
    const struct store_snapshot *snap = s->srv->cfg.snapshot ? *s->srv->cfg.snapshot : NULL;
    struct forward_target *ft = xcalloc(FORWARD_MAX_TARGETS, sizeof *ft);
    size_t n = 0, cap = t->n_rcpts ? t->n_rcpts : 1;
    struct spool_rcpt *rc = xcalloc(cap, sizeof *rc);
    int64_t now = (int64_t)time_wall_ms() / 1000;
    for (size_t i = 0; i < t->n_rcpts; i++) {
        const struct smtp_rcpt *orig = &t->rcpts[i];
        size_t nt;
        if (t->journal) {
            /* the journal address is never forwarded */
            memset(&ft[0], 0, sizeof ft[0]);
            (void)str_copy(ft[0].addr, sizeof ft[0].addr, orig->addr);
            nt = 1;
        } else {
            nt = forward_expand(snap, s->srv->cfg.srs_key, t->mail.path.addr, orig->addr, now,
                                ft, FORWARD_MAX_TARGETS);
        }
        for (size_t k = 0; k < nt; k++) {
            bool dup = false;
            for (size_t x = 0; x < n && !dup; x++)
                dup = str_ieq(rc[x].addr, ft[k].addr);
            if (dup)
                continue;
            if (n == cap) {
                cap *= 2;
                rc = xreallocarray(rc, cap, sizeof *rc);
            }
            struct spool_rcpt *r = &rc[n++];
            memset(r, 0, sizeof *r);
            bool changed = strcmp(ft[k].addr, orig->addr) != 0;
            r->addr = xstrdup(ft[k].addr);
            r->orcpt = orig->orcpt ? xstrdup(orig->orcpt) : changed ? orcpt_xtext(orig->addr) : NULL;
            r->notify = orig->notify;
            r->state = SPOOL_RCPT_PENDING;
            r->fwd_for = ft[k].fwd_for[0] ? xstrdup(ft[k].fwd_for) : NULL;
            r->sender = ft[k].sender[0] ? xstrdup(ft[k].sender) : NULL;
            if (changed) {
                log_info("qid=%s session=%s event=forwarded rcpt=<%s> to=<%s> kind=%s sender=<%s>",
                         t->qid, s->id, orig->addr, ft[k].addr, r->fwd_for ? "rule" : "srs_bounce",
                         r->sender ? r->sender : t->mail.path.addr);
                struct track_event ev;
                track_init(s, &ev, TRACK_FORWARDED);
                ev.rcpt = orig->addr;
                ev.detail = ft[k].addr;
                ev.check = r->fwd_for ? "forwarding" : "srs_bounce";
                track_emit(&ev);
            }
        }
    }
    free(ft);
    *n_out = n;
    return rc;
}

static void session_spool_rcpts_free(struct spool_rcpt *rc, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(rc[i].addr);
        free(rc[i].orcpt);
        free(rc[i].fwd_for);
        free(rc[i].sender);
    }
    free(rc);
}

/* --- the content stage (policy_content.h) --- */

/* a content stage run on the worker pool; owned by the session until it is
 * orphaned (client gone, timeout, RSET by teardown), then by the done callback */
struct smtp_content_job {
    struct smtp_session *s;       /* NULL once orphaned */
    struct content_request *rq;
    struct content_state st;
    struct policy_verdict v;
};

/* session_screening - an inbound transaction with a content check on:
 * never the outbound role (authorised host or authenticated client) */
static bool session_screening(struct smtp_session *s)
{
    const struct moat_settings *set = s->set;
    if (s->srv->cfg.workers == NULL || s->auth_user[0] != '\0')
        return false;
    const struct store_snapshot *snap = s->srv->cfg.snapshot ? *s->srv->cfg.snapshot : NULL;
    if (store_snapshot_outbound_host(snap, (const struct sockaddr *)&s->sa))
        return false;
    return set->spf_check || set->dkim_verify || set->dmarc_check ||
           (set->rspamd_url && set->rspamd_url[0]) || s->txn.antispoof_spf_domain != NULL;
}

/* content_request_fill - copies of everything the checks read */
static struct content_request *content_request_fill(struct smtp_session *s)
{
    struct smtp_txn *t = &s->txn;
    const struct moat_settings *set = s->set;
    struct content_request *rq = content_request_new();
    rq->session_id = xstrdup(s->id);
    rq->client_addr = xstrdup(s->addr);
    rq->helo = xstrdup(s->helo);
    rq->sender = xstrdup(t->mail.path.addr);
    rq->rcpts = xcalloc(t->n_rcpts ? t->n_rcpts : 1, sizeof *rq->rcpts);
    for (size_t i = 0; i < t->n_rcpts; i++)
        rq->rcpts[rq->n_rcpts++] = xstrdup(t->rcpts[i].addr);
    rq->hostname = xstrdup(s->srv->hostname);
    rq->msg_size = t->reader.size;
    if (!t->screen_over) {
        rq->msg_len = t->msg.len;
        rq->msg = xmalloc(t->msg.len + 1);
        memcpy(rq->msg, t->msg.data, t->msg.len);
        rq->msg[t->msg.len] = '\0';
    }
    char dom[256];
    if (msg_header_from_domain(t->head.data, t->head.len, dom, sizeof dom))
        rq->header_from = xstrdup(dom);
    rq->all_permitted = t->all_permitted;
    rq->antispoof_spf_domain = t->antispoof_spf_domain ? xstrdup(t->antispoof_spf_domain) : NULL;
    rq->rspamd_url = xstrdup(set->rspamd_url ? set->rspamd_url : "");
    rq->rspamd_timeout = set->rspamd_timeout;
    rq->rspamd_unreachable = xstrdup(set->rspamd_unreachable ? set->rspamd_unreachable : "tempfail");
    rq->rspamd_hold_action = xstrdup(set->rspamd_hold_action ? set->rspamd_hold_action : "none");
    rq->queue_id = xstrdup(t->qid);
    rq->resolver = xstrdup(set->resolver ? set->resolver : "");
    rq->trust_anchor_file = xstrdup(set->dns_trust_anchor_file ? set->dns_trust_anchor_file : "");
    rq->spf_enabled = set->spf_check;
    rq->dkim_enabled = set->dkim_verify;
    rq->dmarc_enabled = set->dmarc_check;
    rq->spf_fail_action = strcmp(set->spf_fail_action, "reject") == 0 ? CONTENT_ACT_REJECT : CONTENT_ACT_NONE;
    rq->dkim_max_signatures = set->dkim_max_signatures;
    rq->content_dns_timeout_ms = set->content_dns_timeout * 1000;
    rq->dmarc_psl_file = xstrdup(set->dmarc_psl_file ? set->dmarc_psl_file : "");
    rq->held = t->hold ? xstrdup(t->hold) : NULL;
    return rq;
}

static void content_job_free(struct smtp_content_job *j)
{
    content_request_free(j->rq);
    content_state_free(&j->st);
    free(j);
}

/* content_job_work - on a pool thread: every content check */
static void content_job_work(void *arg)
{
    struct smtp_content_job *j = arg;
    content_run(j->rq, &j->st, &j->v);
}

/* session_content_resume - after the stage: refuse, or commit */
static void session_content_resume(struct smtp_session *s, const struct policy_verdict *v,
                                   const struct buf *headers)
{
    struct smtp_txn *t = &s->txn;
    t->screened = true;
    if (v != NULL && session_policy_refused(s, "content", v, NULL)) {
        session_track_policy(s, TRACK_DATA, "content", v, NULL);
        s->srv->stats.messages_rejected++;
        txn_reset(s);
        session_enter_state(s, SMTP_STATE_READY);
        if (s->shutdown_pending) {
            session_reply(s, 421, "4.3.2", "%s Service shutting down", s->srv->hostname);
            session_close(s);
            return;
        }
        bufferevent_enable(s->bev, EV_READ);
        session_process(s);
        return;
    }
    if (headers != NULL && headers->len > 0) {
        if (t->prefix.len + headers->len < 16 * 1024)   /* spool.h: prefix under 16 KiB */
            buf_append(&t->prefix, headers->data, headers->len);
        else
            log_error("qid=%s session=%s event=content_headers_dropped size=%zu", t->qid, s->id,
                      headers->len);
    }
    session_commit(s);
}

/* content_job_done - on the loop: the stage's verdict */
static void content_job_done(void *arg)
{
    struct smtp_content_job *j = arg;
    struct smtp_session *s = j->s;
    if (s == NULL) {
        content_job_free(j);
        return;
    }
    s->content_job = NULL;
    event_del(s->content_timer);
    session_content_resume(s, &j->v, &j->st.headers);
    content_job_free(j);
}

/* session_content_timeout - content_timeout passed: the configured answer */
static void session_content_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct smtp_session *s = arg;
    if (s->content_job == NULL)
        return;
    s->content_job->s = NULL;     /* the done callback frees it */
    s->content_job = NULL;
    bool accept = strcmp(s->set->content_timeout_action, "accept") == 0;
    log_info("qid=%s session=%s client=%s event=content_timeout action=%s", s->txn.qid, s->id, s->addr,
             accept ? "accept" : "tempfail");
    if (accept) {
        session_content_resume(s, NULL, NULL);
        return;
    }
    struct policy_verdict v = { 0 };
    policy_verdict_set(&v, POLICY_TEMPFAIL, 451, "4.7.1", "Content checks timed out, try again later");
    v.check = "content_timeout";
    session_content_resume(s, &v, NULL);
}

/* session_content_start - submit the stage; false: not started, commit now */
static bool session_content_start(struct smtp_session *s)
{
    if (s->srv->cfg.workers == NULL)
        return false;
    if (s->content_timer == NULL)
        s->content_timer = evtimer_new(s->srv->cfg.base, session_content_timeout, s);
    struct smtp_content_job *j = xcalloc(1, sizeof *j);
    j->s = s;
    j->rq = content_request_fill(s);
    content_state_init(&j->st);
    s->content_job = j;
    session_enter_state(s, SMTP_STATE_COMMIT);
    bufferevent_disable(s->bev, EV_READ);
    struct timeval tv = { (time_t)s->set->content_timeout, 0 };
    evtimer_add(s->content_timer, &tv);
    worker_submit(s->srv->cfg.workers, content_job_work, content_job_done, j);
    return true;
}

/* session_content_cancel - orphan a running stage (its done only frees it) */
static void session_content_cancel(struct smtp_session *s)
{
    if (s->content_job == NULL)
        return;
    s->content_job->s = NULL;
    s->content_job = NULL;
    if (s->content_timer)
        event_del(s->content_timer);
}

/* session_data_end - CRLF.CRLF seen: refuse, or commit and wait */
static void session_data_end(struct smtp_session *s)
{
    struct smtp_txn *t = &s->txn;
    int code;
    const char *dsn, *text;
    session_set_timeouts(s, s->set->smtp_timeout_command);
    /* what tracking shows of the message, read once (bounded header scan) */
    (void)msg_header_value(t->head.data, t->head.len, "Subject", t->subject, sizeof t->subject);
    (void)msg_decode_words(t->subject, sizeof t->subject);
    session_message_id(t);
    if (smtp_data_verdict(&t->reader, &code, &dsn, &text) < 0 || t->write_failed) {
        if (t->write_failed && code == 0) {
            code = 452;
            dsn = "4.3.1";
            text = "Insufficient system storage";
        }
        session_reply(s, code, dsn, "%s", text);
        session_log_reject(s, "data", code, dsn, text, NULL);
        session_track_verdict(s, TRACK_DATA, "data", NULL, code, dsn, NULL, text);
        s->srv->stats.messages_rejected++;
        txn_reset(s);        /* aborts the spool txn */
        session_enter_state(s, SMTP_STATE_READY);
        if (s->shutdown_pending) {
            session_reply(s, 421, "4.3.2", "%s Service shutting down", s->srv->hostname);
            session_close(s);
        }
        return;
    }
    session_spool_write(s);
    if (t->write_failed) {
        session_reply(s, 452, "4.3.1", "Insufficient system storage");
        session_track_verdict(s, TRACK_DATA, "data", NULL, 452, "4.3.1", NULL,
                              "Insufficient system storage");
        txn_reset(s);
        session_enter_state(s, SMTP_STATE_READY);
        return;
    }
    /* the message is complete: the synchronous end-of-DATA checks (header
     * From; issue 7), before anything is committed */
    struct policy_verdict pv = { .action = POLICY_DUNNO };
    if (!t->journal)      /* a journal report is archived as it came: no screening */
        session_policy(s, POLICY_DATA_END, NULL, &pv);
    if (session_policy_refused(s, "data", &pv, NULL)) {
        session_track_policy(s, TRACK_DATA, "data", &pv, NULL);
        s->srv->stats.messages_rejected++;
        txn_reset(s);        /* aborts the spool txn: nothing was accepted */
        session_enter_state(s, SMTP_STATE_READY);
        if (s->shutdown_pending) {
            session_reply(s, 421, "4.3.2", "%s Service shutting down", s->srv->hostname);
            session_close(s);
        }
        return;
    }
    if (t->screen && !t->screened && session_content_start(s))
        return;      /* session_content_done commits or refuses */
    session_commit(s);
}

/* session_role_flags - issue 8: the archive's direction and the journal role */
static unsigned session_role_flags(struct smtp_session *s)
{
    if (s->txn.journal)
        return SPOOL_F_JOURNAL;
    const struct store_snapshot *snap = s->srv->cfg.snapshot ? *s->srv->cfg.snapshot : NULL;
    if (s->auth_user[0] != '\0' || store_snapshot_outbound_host(snap, (const struct sockaddr *)&s->sa))
        return SPOOL_F_OUTBOUND;
    return 0;
}

/* session_commit - hand the envelope to the spool and wait for its answer */
static void session_commit(struct smtp_session *s)
{
    struct smtp_txn *t = &s->txn;
    session_track_verdict(s, TRACK_DATA, t->screened ? "content" : "data", NULL, 0, NULL, NULL, NULL);
    size_t n_rc = 0;
    struct spool_rcpt *rc = session_spool_rcpts(s, &n_rc);
    struct spool_envelope env = {
        .sender = t->mail.path.addr,
        .rcpts = rc,
        .n_rcpts = n_rc,
        .client_addr = s->addr,
        .helo = s->helo,
        .envid = t->mail.envid[0] ? t->mail.envid : NULL,
        .ret = t->mail.ret == SMTP_RET_FULL ? SPOOL_RET_FULL
             : t->mail.ret == SMTP_RET_HDRS ? SPOOL_RET_HDRS : SPOOL_RET_DEFAULT,
        .flags = (t->mail.body == SMTP_BODY_8BITMIME ? SPOOL_F_8BITMIME : 0) |
                 (t->mail.smtputf8 ? SPOOL_F_SMTPUTF8 : 0) | (s->tls ? SPOOL_F_TLS : 0) |
                 session_role_flags(s),
        .received_ms = (int64_t)time_wall_ms(),
        .prefix = t->prefix.len ? (char *)buf_cstr(&t->prefix) : NULL,
        .hold = t->hold,
    };
    struct spool_txn *st = t->spool;
    t->spool = NULL;
    s->commit_pending = true;
    session_enter_state(s, SMTP_STATE_COMMIT);
    bufferevent_disable(s->bev, EV_READ);
    spool_txn_commit(st, &env, session_commit_cb, s);   /* env is copied */
    session_spool_rcpts_free(rc, n_rc);
}

/* session_data_read - feed buffered input to the DATA reader; true when the end was reached */
static bool session_data_read(struct smtp_session *s, struct evbuffer *in)
{
    struct smtp_txn *t = &s->txn;
    while (evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v[8];
        int n = evbuffer_peek(in, -1, NULL, v, 8);
        if (n > 8)
            n = 8;
        size_t used = 0;
        bool done = false;
        for (int i = 0; i < n && !done; i++) {
            size_t before = t->out.len;
            used += smtp_data_feed(&t->reader, v[i].iov_base, v[i].iov_len, &t->out);
            done = smtp_data_done(&t->reader);
            /* keep the message's first octets for the end-of-DATA checks */
            if (t->head.len < SMTP_HEAD_MAX && t->out.len > before) {
                size_t take = t->out.len - before;
                if (take > SMTP_HEAD_MAX - t->head.len)
                    take = SMTP_HEAD_MAX - t->head.len;
                buf_append(&t->head, t->out.data + before, take);
            }
        }
        evbuffer_drain(in, used);
        if (t->out.len >= SMTP_SPOOL_CHUNK)
            session_spool_write(s);
        if (done)
            return true;
    }
    return false;
}

/* --- the input loop --- */

/* session_process - everything that can be done with the buffered input */
static void session_process(struct smtp_session *s)
{
    size_t hard = session_line_max(s);
    char *line = NULL;
    while (s->bev != NULL) {
        struct evbuffer *in = bufferevent_get_input(s->bev);
        if (s->rcpt_pending != NULL || s->auth_job != NULL || s->content_job != NULL)
            break;   /* RFC 2920 3.1: replies in order; the RCPT's / AUTH's verdict comes first */
        if (s->state == SMTP_STATE_DATA) {
            if (!session_data_read(s, in))
                break;
            session_data_end(s);
            continue;
        }
        if (s->state != SMTP_STATE_INIT && s->state != SMTP_STATE_READY &&
            s->state != SMTP_STATE_MAIL && s->state != SMTP_STATE_RCPT)
            break;       /* COMMIT, TLS, CLOSING: input waits */
        if (evbuffer_get_length(bufferevent_get_output(s->bev)) > SMTP_OUTPUT_HIGH) {
            /* the client does not read its replies: stop reading its commands */
            s->out_blocked = true;
            bufferevent_disable(s->bev, EV_READ);
            break;
        }
        size_t eol_len = 0;
        struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF_STRICT);
        if (p.pos < 0) {
            size_t have = evbuffer_get_length(in);
            if (s->skip_line || have >= hard) {
                /* over-long line: drop what we have, keep a trailing CR (half of a CRLF) */
                size_t drop = have;
                if (drop > 0) {
                    unsigned char last;
                    struct evbuffer_ptr lp;
                    evbuffer_ptr_set(in, &lp, drop - 1, EVBUFFER_PTR_SET);
                    if (evbuffer_copyout_from(in, &lp, &last, 1) == 1 && last == '\r')
                        drop--;
                }
                evbuffer_drain(in, drop);
                s->skip_line = true;
            }
            break;
        }
        size_t len = (size_t)p.pos;
        if (s->skip_line || len + 2 > hard) {
            evbuffer_drain(in, len + 2);
            s->skip_line = false;
            s->n_commands++;
            session_auth_end(s);
            session_reply(s, 500, "5.5.6", "Error: line too long");
            continue;
        }
        if (line == NULL)
            line = xmalloc(hard);
        evbuffer_remove(in, line, len + 2);
        if (s->auth_step != SMTP_AUTH_NONE) {
            line[len] = '\0';
            session_auth_continue(s, line, len);
            sodium_memzero(line, len);
            session_flush(s);
            continue;
        }
        session_dispatch(s, line, len);
    }
    free(line);
    session_flush(s);
}

static void session_read_cb(struct bufferevent *bev, void *arg)
{
    session_process(arg);
}

static void session_write_cb(struct bufferevent *bev, void *arg)
{
    struct smtp_session *s = arg;
    if (s->state == SMTP_STATE_CLOSING) {
        if (session_output_pending(s)) {
            struct timeval tv = { 0, 20000 };
            event_add(s->finish_ev, &tv);
        } else {
            session_lost(s);
        }
        return;
    }
    if (s->out_blocked) {
        s->out_blocked = false;
        bufferevent_enable(bev, EV_READ);
        session_process(s);
    }
}

static void session_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct smtp_session *s = arg;
    if (what & BEV_EVENT_CONNECTED) {
        /* the TLS handshake finished */
        session_tls_done(s);
        session_process(s);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        if (s->state == SMTP_STATE_TLS || s->state == SMTP_STATE_CLOSING || (what & BEV_EVENT_WRITING)) {
            log_info("session=%s client=%s event=timeout state=%s", s->id, s->addr, smtp_state_names[s->state]);
            session_lost(s);
            return;
        }
        /* RFC 5321 4.5.3.2: the server may close after its timeout, with 421 */
        bool in_data = s->state == SMTP_STATE_DATA;
        log_info("%s%s%ssession=%s client=%s event=timeout state=%s", in_data ? "qid=" : "",
                 in_data ? s->txn.qid : "", in_data ? " " : "", s->id, s->addr, smtp_state_names[s->state]);
        txn_reset(s);
        session_reply(s, 421, "4.4.2", "%s Error: timeout exceeded", s->srv->hostname);
        session_close(s);
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        unsigned long e = s->bev ? bufferevent_get_openssl_error(s->bev) : 0;
        char buf[256] = "";
        if (e)
            ERR_error_string_n(e, buf, sizeof buf);
        ERR_clear_error();
        log_info("session=%s client=%s event=%s state=%s error=\"%s\"", s->id, s->addr,
                 s->state == SMTP_STATE_TLS ? "tls_failed" : "io_error", smtp_state_names[s->state],
                 e ? buf : "connection error");
    }
    session_lost(s);
}

/* --- closing and freeing --- */

/* session_free - the one place a session is released */
static void session_free(struct smtp_session *s)
{
    struct smtp_server *srv = s->srv;
    log_info("session=%s client=%s event=disconnect commands=%" PRIu64 " messages=%" PRIu64
             " errors=%" PRIu64, s->id, s->addr, s->n_commands, s->n_messages, s->n_errors);
    txn_reset(s);
    if (s->auth_job != NULL) {
        s->auth_job->s = NULL;      /* the done callback frees it */
        s->auth_job = NULL;
    }
    sodium_memzero(s->auth_login_user, sizeof s->auth_login_user);
    policy_dnsbl_free(s->dnsbl);   /* after txn_reset: a waiting RCPT is cancelled */
    s->dnsbl = NULL;
    free(s->txn.rcpts);
    buf_free(&s->txn.out);
    buf_free(&s->txn.prefix);
    buf_free(&s->txn.head);
    free(s->txn.antispoof_spf_domain);
    buf_free(&s->txn.msg);
    if (s->content_timer)
        event_free(s->content_timer);
    buf_free(&s->replies);
    if (s->grace_timer)
        event_free(s->grace_timer);
    if (s->finish_ev)
        event_free(s->finish_ev);
    if (s->prev)
        s->prev->next = s->next;
    else
        srv->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    srv->n_sessions--;
    srv->stats.connections_now--;
    free(s);
    smtp_server_session_gone(srv);
}

/* session_lost - the connection is over (or must be dropped now); the
 * session itself lives on while a commit callback is outstanding */
static void session_lost(struct smtp_session *s)
{
    if (s->bev != NULL) {
        bufferevent_free(s->bev);
        s->bev = NULL;
    }
    if (s->state == SMTP_STATE_DATA)
        log_info("qid=%s session=%s client=%s event=abort reason=\"connection lost during DATA\"",
                 s->txn.qid, s->id, s->addr);
    if (s->commit_pending)
        return;           /* session_commit_cb finishes the job */
    session_free(s);
}

/* session_output_pending - replies not yet handed to the kernel; with TLS the
 * filter's output drains into the socket bufferevent's, which must drain too */
static bool session_output_pending(struct smtp_session *s)
{
    if (s->bev == NULL)
        return false;
    if (evbuffer_get_length(bufferevent_get_output(s->bev)) > 0)
        return true;
    struct bufferevent *under = bufferevent_get_underlying(s->bev);
    return under != NULL && evbuffer_get_length(bufferevent_get_output(under)) > 0;
}

/* session_finish_cb - close once the last reply left; polled while a TLS
 * connection still drains (bounded by the command timeout) */
static void session_finish_cb(evutil_socket_t fd, short what, void *arg)
{
    struct smtp_session *s = arg;
    if (session_output_pending(s) && time_mono_ms() < s->close_deadline_ms) {
        struct timeval tv = { 0, 20000 };
        event_add(s->finish_ev, &tv);
        return;
    }
    session_lost(s);
}

/* session_close - flush the last replies, close once they are written */
static void session_close(struct smtp_session *s)
{
    session_enter_state(s, SMTP_STATE_CLOSING);
    if (s->bev == NULL)
        return;
    s->close_deadline_ms = time_mono_ms() + (uint64_t)s->set->smtp_timeout_command * 1000;
    bufferevent_disable(s->bev, EV_READ);
    session_flush(s);
    if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0) {
        /* nothing left to write: finish from the loop, never from inside a handler */
        struct timeval zero = { 0, 0 };
        event_add(s->finish_ev, &zero);
    }
}

static void session_grace_cb(evutil_socket_t fd, short what, void *arg)
{
    struct smtp_session *s = arg;
    if (s->state != SMTP_STATE_DATA)
        return;
    log_info("qid=%s session=%s client=%s event=abort reason=\"shutdown grace expired during DATA\"",
             s->txn.qid, s->id, s->addr);
    txn_reset(s);
    session_reply(s, 421, "4.3.2", "%s Service shutting down", s->srv->hostname);
    session_close(s);
}

void smtp_session_begin_shutdown(struct smtp_session *s)
{
    if (s->shutdown_pending)
        return;
    s->shutdown_pending = true;
    switch (s->state) {
    case SMTP_STATE_INIT:
    case SMTP_STATE_READY:
    case SMTP_STATE_MAIL:
    case SMTP_STATE_RCPT:
        txn_reset(s);
        session_reply(s, 421, "4.3.2", "%s Service shutting down", s->srv->hostname);
        session_close(s);
        break;
    case SMTP_STATE_DATA: {
        struct timeval tv = { (time_t)s->set->smtp_timeout_shutdown, 0 };
        evtimer_add(s->grace_timer, &tv);
        break;
    }
    case SMTP_STATE_TLS: {
        struct timeval zero = { 0, 0 };
        session_enter_state(s, SMTP_STATE_CLOSING);
        event_add(s->finish_ev, &zero);
        break;
    }
    case SMTP_STATE_COMMIT:      /* session_commit_cb replies, then closes */
    case SMTP_STATE_CLOSING:
        break;
    }
}

void smtp_session_destroy(struct smtp_session *s)
{
    if (s->bev != NULL) {
        bufferevent_free(s->bev);
        s->bev = NULL;
    }
    if (s->commit_pending) {
        /* the spool still holds s as its callback argument: leaking is the only safe choice */
        log_error("session=%s event=destroy_with_commit_pending", s->id);
        return;
    }
    session_free(s);
}

struct smtp_session *smtp_session_next(struct smtp_session *s)
{
    return s->next;
}

const char *smtp_session_client_addr(const struct smtp_session *s)
{
    return s->addr;
}

void smtp_session_start(struct smtp_server *srv, evutil_socket_t fd, const char *client_addr)
{
    struct smtp_session *s = xcalloc(1, sizeof *s);
    struct event_base *base = srv->cfg.base;
    s->srv = srv;
    s->set = srv->set;
    (void)xsnprintf(s->id, sizeof s->id, "%012" PRIX64, srv->next_id++);
    (void)str_copy(s->addr, sizeof s->addr, client_addr);
    s->connect_us = (int64_t)time_wall_ms() * 1000;
    session_set_sockaddr(s);
    buf_init(&s->replies);
    buf_init(&s->txn.out);
    buf_init(&s->txn.prefix);
    buf_init(&s->txn.head);
    s->state = SMTP_STATE_INIT;
    s->grace_timer = evtimer_new(base, session_grace_cb, s);
    s->finish_ev = evtimer_new(base, session_finish_cb, s);
    s->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (s->grace_timer == NULL || s->finish_ev == NULL || s->bev == NULL)
        log_fatal("event=alloc_failed what=\"smtp session\"");
    s->next = srv->sessions;
    if (srv->sessions)
        srv->sessions->prev = s;
    srv->sessions = s;
    srv->n_sessions++;
    srv->stats.connections_now++;
    srv->stats.connections_total++;

    bufferevent_setcb(s->bev, session_read_cb, session_write_cb, session_event_cb, s);
    /* bounded input: at most this much is buffered before reading pauses */
    size_t high = session_line_max(s);
    bufferevent_setwatermark(s->bev, EV_READ, 0, high * 2 > SMTP_INPUT_MIN_HIGH ? high * 2 : SMTP_INPUT_MIN_HIGH);
    session_set_timeouts(s, s->set->smtp_timeout_command);
    log_info("session=%s client=%s event=connect", s->id, s->addr);

    struct policy_verdict v;
    session_policy(s, POLICY_CONNECT, NULL, &v);
    if (v.action == POLICY_REJECT || v.action == POLICY_TEMPFAIL) {
        session_reply(s, v.code, v.dsn, "%s", v.text);
        session_log_reject(s, "connect", v.code, v.dsn, v.text, NULL);
        session_track_connect(s, v.code, v.dsn, v.check, v.reason[0] ? v.reason : v.text);
        bufferevent_enable(s->bev, EV_WRITE);
        session_close(s);
        return;
    }
    /* DNSBL answers are gathered from now on, judged at the first RCPT
     * (an authorised outbound host is never looked up) */
    const struct store_snapshot *snap = srv->cfg.snapshot ? *srv->cfg.snapshot : NULL;
    if (!store_snapshot_outbound_host(snap, (const struct sockaddr *)&s->sa))
        s->dnsbl = policy_dnsbl_start(srv->cfg.dns, snap, s->set, s->id, s->addr);
    /* RFC 5321 4.2 / 3.1: the greeting carries no enhanced code (RFC 2034 3) */
    session_reply(s, 220, NULL, "%s ESMTP Moat", srv->hostname);
    session_flush(s);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}
