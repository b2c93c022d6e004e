/*
 * test_smtp_session.c - the SMTP server state machine end to end in one
 * process: a real event loop (on its own thread), the real spool on a
 * temporary directory, a routing snapshot from a real store, and clients
 * on socketpairs.
 *
 * Golden transcripts: tests/unit/golden/smtp/NAME.in holds client lines and
 * directives, NAME.out the expected transcript ("C: " lines sent, "S: "
 * lines received, queue ids replaced by QID).  MOAT_GOLDEN_UPDATE=1
 * rewrites the .out files.  Directives in .in files:
 *   !set key=value      a setting for this transcript's server (first lines)
 *   !nosnapshot         the routing snapshot is not loaded (NULL)
 *   !pipe ... !end      the lines in between are sent in one write
 *   !raw N TEXT         TEXT with C escapes (\r \n \0 \t \\ \xHH) sent as is; N replies expected
 *   !long N             a command line of N octets (CRLF included)
 *   !expect N           read N replies without sending
 *   !eof                the server must close the connection
 *   !# ...              comment
 * Any other line is sent with CRLF; one reply is expected per line, except
 * in message data (after a 354), where only the final "." gets one.
 *
 * Other tests drive STARTTLS with an OpenSSL client, the shutdown grace,
 * the connection limits, a disconnect while the commit is in flight, the
 * stored message and envelope, and 200 concurrent sessions.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <openssl/ssl.h>
#include "core/core.h"
#include "core/settings.h"
#include "core/track.h"
#include "smtp/smtp.h"
#include "smtp/smtp_server_private.h"
#include "spool/spool.h"
#include "store/store.h"

#ifndef MOAT_SOURCE_ROOT
#define MOAT_SOURCE_ROOT "."
#endif
#define GOLDEN_DIR MOAT_SOURCE_ROOT "/tests/unit/golden/smtp"
#define HOSTNAME "mx.test.example"

static struct event_base *base;
static pthread_t loop_thread;
static struct spool *spool;
static struct store_snapshot *snap;
static SSL_CTX *tls_ctx;
static char tmpdir[256];

/* --- running things on the loop thread --- */
struct loop_call {
    void (*fn)(void *arg);
    void *arg;
    bool done;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void loop_call_cb(evutil_socket_t fd, short what, void *arg)
{
    struct loop_call *c = arg;
    c->fn(c->arg);
    pthread_mutex_lock(&c->mu);
    c->done = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void run_on_loop(void (*fn)(void *), void *arg)
{
    struct loop_call c = { .fn = fn, .arg = arg };
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    struct timeval zero = { 0, 0 };
    assert_int_equal(event_base_once(base, -1, EV_TIMEOUT, loop_call_cb, &c, &zero), 0);
    pthread_mutex_lock(&c.mu);
    while (!c.done)
        pthread_cond_wait(&c.cv, &c.mu);
    pthread_mutex_unlock(&c.mu);
    pthread_mutex_destroy(&c.mu);
    pthread_cond_destroy(&c.cv);
}

static void *loop_main(void *arg)
{
    event_base_loop(base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

/* --- one server under test --- */
struct tserver {
    struct moat_settings set;
    const struct store_snapshot *snap_ptr;
    struct smtp_server *srv;
    bool done;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void tserver_create_cb(void *arg)
{
    struct tserver *t = arg;
    struct smtp_server_config cfg = {
        .base = base, .settings = &t->set, .tls = tls_ctx, .spool = spool,
        .snapshot = &t->snap_ptr, .hostname = HOSTNAME,
    };
    struct error err;
    t->srv = smtp_server_create(&cfg, &err);
    if (t->srv == NULL)
        fprintf(stderr, "smtp_server_create: %s\n", err.msg);
}

/* tserver_set - "key=value": int64 SMTP bounds are set directly so tests may go below
 * the production minimums; anything else goes through settings_set */
static void tserver_set(struct tserver *t, const char *kv)
{
    static const struct { const char *name; size_t off; } direct[] = {
#define D(f) { #f, offsetof(struct moat_settings, f) }
        D(smtp_max_command_line), D(smtp_max_text_line), D(message_size_limit), D(smtp_max_recipients),
        D(smtp_max_messages), D(smtp_max_errors), D(smtp_max_junk_commands), D(smtp_max_connections),
        D(smtp_max_connections_per_ip), D(smtp_max_received_headers), D(smtp_max_header_size),
        D(smtp_timeout_command), D(smtp_timeout_data_block), D(smtp_timeout_tls_handshake),
        D(smtp_timeout_shutdown),
#undef D
    };
    const char *eq = strchr(kv, '=');
    assert_non_null(eq);
    for (size_t i = 0; i < sizeof direct / sizeof direct[0]; i++)
        if (strlen(direct[i].name) == (size_t)(eq - kv) && strncmp(kv, direct[i].name, (size_t)(eq - kv)) == 0) {
            *(int64_t *)((char *)&t->set + direct[i].off) = strtoll(eq + 1, NULL, 10);
            return;
        }
    struct error err;
    if (settings_set(&t->set, kv, NULL, &err) < 0)
        fail_msg("setting %s: %s", kv, err.msg);
}

static void tserver_init(struct tserver *t)
{
    memset(t, 0, sizeof *t);
    settings_defaults(&t->set);
    for (int i = 0; i < t->set.n_smtp_listen; i++)
        free(t->set.smtp_listen[i]);
    t->set.n_smtp_listen = 0;     /* sessions come from socketpairs */
    t->snap_ptr = snap;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
}

static void tserver_start(struct tserver *t)
{
    run_on_loop(tserver_create_cb, t);
    assert_non_null(t->srv);
}

static void tserver_done_cb(void *arg)
{
    struct tserver *t = arg;
    pthread_mutex_lock(&t->mu);
    t->done = true;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void tserver_shutdown_cb(void *arg)
{
    struct tserver *t = arg;
    smtp_server_shutdown(t->srv, tserver_done_cb, t);
}

/* tserver_wait_done - wait (at most ms) for the shutdown to complete */
static bool tserver_wait_done(struct tserver *t, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&t->mu);
    while (!t->done)
        if (pthread_cond_timedwait(&t->cv, &t->mu, &ts) != 0)
            break;
    bool d = t->done;
    pthread_mutex_unlock(&t->mu);
    return d;
}

static void tserver_free_cb(void *arg)
{
    struct tserver *t = arg;
    smtp_server_free(t->srv);
    t->srv = NULL;
}

/* tserver_stop - shut down (every session must go) and free */
static void tserver_stop(struct tserver *t)
{
    run_on_loop(tserver_shutdown_cb, t);
    assert_true(tserver_wait_done(t, 10000));
    run_on_loop(tserver_free_cb, t);
    settings_free(&t->set);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
}

struct adopt {
    struct tserver *t;
    int fd;
    const char *addr;
};

static void adopt_cb(void *arg)
{
    struct adopt *a = arg;
    smtp_server_adopt_fd(a->t->srv, a->fd, a->addr);
}

/* client_connect - a socketpair; the server end is adopted as from addr */
static int client_connect(struct tserver *t, const char *addr)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct adopt a = { t, sv[1], addr };
    run_on_loop(adopt_cb, &a);
    struct timeval tv = { 10, 0 };
    setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return sv[0];
}

/* --- client I/O --- */
struct client {
    int fd;
    char in[65536];
    size_t in_len;
    bool eof;
    struct buf *log;        /* transcript, may be NULL */
};

static void client_send(struct client *c, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n <= 0)
            return;       /* the server closed: the transcript shows it */
        p += n;
        len -= (size_t)n;
    }
}

/* normalise - queue ids vary: "queued as 0123456789ABCDEF" -> "queued as QID" */
static void normalise(char *line)
{
    char *q = strstr(line, "queued as ");
    if (q == NULL)
        return;
    q += 10;
    size_t n = strspn(q, "0123456789ABCDEF");
    if (n != SPOOL_QID_LEN)
        return;
    memmove(q + 3, q + n, strlen(q + n) + 1);
    memcpy(q, "QID", 3);
}

/* client_line - next line from the server (without CRLF) into out; false on EOF/timeout */
static bool client_line(struct client *c, char *out, size_t size)
{
    for (;;) {
        char *nl = memchr(c->in, '\n', c->in_len);
        if (nl != NULL) {
            size_t n = (size_t)(nl - c->in) + 1;
            size_t l = n >= 2 && c->in[n - 2] == '\r' ? n - 2 : n - 1;
            if (l >= size)
                l = size - 1;
            memcpy(out, c->in, l);
            out[l] = '\0';
            memmove(c->in, c->in + n, c->in_len - n);
            c->in_len -= n;
            return true;
        }
        if (c->eof)
            return false;
        ssize_t r = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
        if (r <= 0) {
            c->eof = true;
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && c->log)
                buf_append_str(c->log, "S: <TIMEOUT>\n");
            return false;
        }
        c->in_len += (size_t)r;
    }
}

/* client_replies - read n complete replies; the last reply's code goes to *last */
static int client_replies(struct client *c, int n, int *last, char *last_line, size_t last_size)
{
    char line[2048];
    int got = 0;
    while (got < n) {
        if (!client_line(c, line, sizeof line))
            return got;
        normalise(line);
        if (c->log)
            buf_printf(c->log, "S: %s\n", line);
        if (strlen(line) < 4 || line[3] != '-') {
            got++;
            if (last)
                *last = atoi(line);
            if (last_line)
                (void)str_copy(last_line, last_size, line);
        }
    }
    return got;
}

/* client_expect - one reply, must start with prefix */
static void client_expect(struct client *c, const char *prefix)
{
    char line[2048] = "";
    int code = 0;
    if (client_replies(c, 1, &code, line, sizeof line) != 1)
        fail_msg("expected \"%s\", got EOF", prefix);
    if (strncmp(line, prefix, strlen(prefix)) != 0)
        fail_msg("expected \"%s\", got \"%s\"", prefix, line);
}

static void client_cmd(struct client *c, const char *cmd, const char *prefix)
{
    char line[1024];
    int n = snprintf(line, sizeof line, "%s\r\n", cmd);
    client_send(c, line, (size_t)n);
    client_expect(c, prefix);
}

/* client_wait_eof - true when the server closes (no further data) */
static bool client_wait_eof(struct client *c)
{
    char line[2048];
    while (client_line(c, line, sizeof line)) {
        normalise(line);
        if (c->log)
            buf_printf(c->log, "S: %s\n", line);
    }
    return c->eof;
}

/* --- golden transcripts --- */

static size_t unescape(const char *s, char *out, size_t size)
{
    size_t n = 0;
    while (*s && n < size) {
        if (*s != '\\') {
            out[n++] = *s++;
            continue;
        }
        s++;
        switch (*s) {
        case 'r': out[n++] = '\r'; s++; break;
        case 'n': out[n++] = '\n'; s++; break;
        case 't': out[n++] = '\t'; s++; break;
        case '0': out[n++] = '\0'; s++; break;
        case '\\': out[n++] = '\\'; s++; break;
        case 'x': {
            char hex[3] = { s[1], s[2], 0 };
            out[n++] = (char)strtol(hex, NULL, 16);
            s += 3;
            break;
        }
        default: out[n++] = '\\'; break;
        }
    }
    return n;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    struct buf b;
    buf_init(&b);
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        buf_append(&b, tmp, n);
    fclose(f);
    buf_cstr(&b);
    return b.data ? b.data : xstrdup("");
}

/* golden_run - play NAME.in, compare with NAME.out */
static void golden_run(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.in", GOLDEN_DIR, name);
    char *script = slurp(path);
    if (script == NULL)
        fail_msg("cannot read %s", path);
    struct tserver t;
    tserver_init(&t);
    /* settings first: they shape the server */
    for (char *l = script; l && *l;) {
        char *nl = strchr(l, '\n');
        size_t len = nl ? (size_t)(nl - l) : strlen(l);
        if (len > 5 && strncmp(l, "!set ", 5) == 0) {
            char kv[256];
            snprintf(kv, sizeof kv, "%.*s", (int)(len - 5), l + 5);
            tserver_set(&t, kv);
        } else if (len == 11 && strncmp(l, "!nosnapshot", 11) == 0) {
            t.snap_ptr = NULL;
        }
        l = nl ? nl + 1 : NULL;
    }
    tserver_start(&t);
    struct buf log;
    buf_init(&log);
    struct client c = { .fd = client_connect(&t, "127.0.0.1"), .log = &log };
    client_replies(&c, 1, NULL, NULL, 0);        /* greeting */
    bool data_mode = false, in_pipe = false;
    int pipe_expect = 0;
    struct buf pipe;
    buf_init(&pipe);
    int last = 0;
    char *next = script;
    while (next && *next) {
        char *l = next;
        char *nl = strchr(l, '\n');
        if (nl) {
            *nl = '\0';
            next = nl + 1;
        } else {
            next = NULL;
        }
        size_t len = strlen(l);
        if (len && l[len - 1] == '\r')
            l[--len] = '\0';
        if (strncmp(l, "!#", 2) == 0 || strncmp(l, "!set ", 5) == 0 || strcmp(l, "!nosnapshot") == 0)
            continue;
        if (strcmp(l, "!pipe") == 0) {
            in_pipe = true;
            pipe_expect = 0;
            buf_reset(&pipe);
            continue;
        }
        if (strcmp(l, "!end") == 0) {
            in_pipe = false;
            client_send(&c, pipe.data, pipe.len);
            if (client_replies(&c, pipe_expect, &last, NULL, 0) == pipe_expect && last == 354)
                data_mode = true;
            continue;
        }
        if (strncmp(l, "!raw ", 5) == 0) {
            int n = atoi(l + 5);
            const char *text = strchr(l + 5, ' ');
            char raw[8192];
            size_t rl = unescape(text ? text + 1 : "", raw, sizeof raw);
            buf_printf(&log, "C: <raw %s>\n", text ? text + 1 : "");
            client_send(&c, raw, rl);
            if (client_replies(&c, n, &last, NULL, 0) == n && n > 0)
                data_mode = last == 354;
            continue;
        }
        if (strncmp(l, "!long ", 6) == 0) {
            size_t n = (size_t)atoi(l + 6);
            char *big = xmalloc(n);
            memset(big, 'X', n - 2);
            memcpy(big, "NOOP ", 5);
            memcpy(big + n - 2, "\r\n", 2);
            buf_printf(&log, "C: <NOOP line of %zu octets>\n", n);
            client_send(&c, big, n);
            free(big);
            if (!data_mode)
                client_replies(&c, 1, &last, NULL, 0);
            continue;
        }
        if (strncmp(l, "!expect ", 8) == 0) {
            client_replies(&c, atoi(l + 8), &last, NULL, 0);
            continue;
        }
        if (strcmp(l, "!eof") == 0) {
            if (client_wait_eof(&c))
                buf_append_str(&log, "S: <EOF>\n");
            continue;
        }
        buf_printf(&log, "C: %s\n", l);
        int expect = 1;
        if (data_mode) {
            expect = strcmp(l, ".") == 0 ? 1 : 0;
            if (expect)
                data_mode = false;
        }
        if (in_pipe) {
            buf_append(&pipe, l, len);
            buf_append(&pipe, "\r\n", 2);
            pipe_expect += expect;
            continue;
        }
        client_send(&c, l, len);
        client_send(&c, "\r\n", 2);
        if (expect && client_replies(&c, 1, &last, NULL, 0) == 1 && last == 354)
            data_mode = true;
    }
    close(c.fd);
    buf_free(&pipe);
    tserver_stop(&t);
    free(script);

    snprintf(path, sizeof path, "%s/%s.out", GOLDEN_DIR, name);
    const char *got = buf_cstr(&log);
    if (getenv("MOAT_GOLDEN_UPDATE")) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(got, f);
        fclose(f);
    }
    char *want = slurp(path);
    if (want == NULL || strcmp(want, got) != 0) {
        fprintf(stderr, "--- golden %s: expected ---\n%s--- got ---\n%s---\n", name, want ? want : "(missing)", got);
        free(want);
        buf_free(&log);
        fail_msg("golden transcript %s differs", name);
    }
    free(want);
    buf_free(&log);
}

static void test_golden(void **state)
{
    DIR *d = opendir(GOLDEN_DIR);
    assert_non_null(d);
    struct dirent *e;
    char *names[128];
    size_t n = 0;
    while ((e = readdir(d)) != NULL && n < 128) {
        size_t l = strlen(e->d_name);
        if (l > 3 && strcmp(e->d_name + l - 3, ".in") == 0)
            names[n++] = xstrndup(e->d_name, l - 3);
    }
    closedir(d);
    assert_true(n > 0);
    for (size_t i = 0; i < n; i++) {
        fprintf(stderr, "[ golden ] %s\n", names[i]);
        golden_run(names[i]);
        free(names[i]);
    }
}

/* --- STARTTLS --- */

/* test_starttls - RFC 3207: commands pipelined after STARTTLS are discarded
 * unanswered, TLS comes up, the session restarts and EHLO no longer offers
 * STARTTLS; a message over TLS says ESMTPS in its Received header */
static void test_starttls(void **state)
{
    struct tserver t;
    tserver_init(&t);
    tserver_start(&t);
    struct client c = { .fd = client_connect(&t, "127.0.0.1") };
    client_expect(&c, "220 " HOSTNAME);
    client_send(&c, "EHLO client.test\r\n", 18);
    char line[1024];
    bool offered = false;
    for (;;) {
        assert_true(client_line(&c, line, sizeof line));
        if (strcmp(line + 4, "STARTTLS") == 0)
            offered = true;
        if (line[3] == ' ')
            break;
    }
    assert_true(offered);
    /* the injection: RSET and a MAIL in the same packet as STARTTLS */
    const char *inj = "STARTTLS\r\nRSET\r\nMAIL FROM:<evil@example.org>\r\n";
    client_send(&c, inj, strlen(inj));
    client_expect(&c, "220 2.0.0 ");
    assert_int_equal(c.in_len, 0);       /* no reply to the injected commands */

    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = SSL_new(cctx);
    SSL_set_fd(ssl, c.fd);
    assert_int_equal(SSL_connect(ssl), 1);
    assert_true(SSL_version(ssl) >= TLS1_2_VERSION);
    /* the first thing over TLS must be the reply to our EHLO, nothing injected */
    SSL_write(ssl, "EHLO client.test\r\n", 18);
    struct buf got;
    buf_init(&got);
    while (!(got.len >= 2 && strstr(buf_cstr(&got), "\r\n250 ") != NULL &&
             got.data[got.len - 1] == '\n')) {
        char tmp[1024];
        int n = SSL_read(ssl, tmp, sizeof tmp);
        assert_true(n > 0);
        buf_append(&got, tmp, (size_t)n);
    }
    const char *g = buf_cstr(&got);
    assert_true(strncmp(g, "250-" HOSTNAME, 4 + strlen(HOSTNAME)) == 0);
    assert_null(strstr(g, "STARTTLS"));
    assert_non_null(strstr(g, "PIPELINING"));
    /* STARTTLS again is refused */
    SSL_write(ssl, "STARTTLS\r\n", 10);
    char tmp[1024];
    int n = SSL_read(ssl, tmp, sizeof tmp - 1);
    assert_true(n > 0);
    tmp[n] = '\0';
    assert_true(strncmp(tmp, "503 5.5.1", 9) == 0);
    const char *txn = "MAIL FROM:<a@example.org>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n";
    SSL_write(ssl, txn, (int)strlen(txn));
    buf_reset(&got);
    while (strstr(buf_cstr(&got), "354 ") == NULL) {
        n = SSL_read(ssl, tmp, sizeof tmp);
        assert_true(n > 0);
        buf_append(&got, tmp, (size_t)n);
    }
    SSL_write(ssl, "Subject: tls\r\n\r\nhi\r\n.\r\nQUIT\r\n", 29);
    buf_reset(&got);
    while (strstr(buf_cstr(&got), "221 ") == NULL) {
        n = SSL_read(ssl, tmp, sizeof tmp);
        if (n <= 0)
            break;
        buf_append(&got, tmp, (size_t)n);
    }
    assert_non_null(strstr(buf_cstr(&got), "250 2.0.0 Ok: queued as "));
    buf_free(&got);
    SSL_free(ssl);
    SSL_CTX_free(cctx);
    close(c.fd);
    tserver_stop(&t);
}

/* --- the stored message --- */
struct find {
    char qid[SPOOL_QID_LEN + 1];
    char data[4096];
    ssize_t len;
    char sender[128], rcpt[128], orcpt[128], envid[64];
    unsigned notify, flags;
    enum spool_ret ret;
    size_t n_rcpts;
};

static void find_cb(void *arg)
{
    struct find *f = arg;
    struct spool_msg *m = spool_msg_find(spool, f->qid);
    f->len = -1;
    if (m == NULL)
        return;
    f->len = 0;
    for (;;) {
        ssize_t n = spool_msg_read(spool, m, (uint64_t)f->len, f->data + f->len, sizeof f->data - 1 - (size_t)f->len);
        if (n <= 0)
            break;
        f->len += n;
    }
    f->data[f->len] = '\0';
    const struct spool_envelope *e = spool_msg_envelope(m);
    (void)str_copy(f->sender, sizeof f->sender, e->sender);
    f->n_rcpts = e->n_rcpts;
    (void)str_copy(f->rcpt, sizeof f->rcpt, e->rcpts[0].addr);
    (void)str_copy(f->orcpt, sizeof f->orcpt, e->rcpts[0].orcpt ? e->rcpts[0].orcpt : "");
    (void)str_copy(f->envid, sizeof f->envid, e->envid ? e->envid : "");
    f->notify = e->rcpts[0].notify;
    f->flags = e->flags;
    f->ret = e->ret;
}

static void test_stored_message(void **state)
{
    struct tserver t;
    tserver_init(&t);
    tserver_start(&t);
    struct client c = { .fd = client_connect(&t, "127.0.0.1") };
    client_expect(&c, "220 ");
    client_send(&c, "EHLO client.test\r\n", 18);
    client_replies(&c, 1, NULL, NULL, 0);
    client_cmd(&c, "MAIL FROM:<sender@example.org> BODY=8BITMIME RET=HDRS ENVID=env+2B1 SIZE=100", "250 2.1.0");
    client_cmd(&c, "RCPT TO:<Alice@Sub.Example.COM> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice+40x", "250 2.1.5");
    client_cmd(&c, "DATA", "354 ");
    const char *msg = "Subject: stored\r\n\r\nline 1\r\n..dotted\r\n.\r\n";
    client_send(&c, msg, strlen(msg));
    char line[256] = "";
    assert_true(client_line(&c, line, sizeof line));     /* raw: the queue id is kept */
    assert_true(strncmp(line, "250 2.0.0 Ok: queued as ", 24) == 0);
    const char *q = strstr(line, "queued as ");
    assert_non_null(q);
    struct find f;
    memset(&f, 0, sizeof f);
    (void)str_copy(f.qid, sizeof f.qid, q + 10);
    run_on_loop(find_cb, &f);
    assert_true(f.len > 0);
    /* RFC 5321 4.4 Received first, then the data with the dot-stuffing removed */
    assert_true(strncmp(f.data, "Received: from client.test ([127.0.0.1])\r\n\tby " HOSTNAME " (Moat) with ESMTP id ",
                        strlen("Received: from client.test ([127.0.0.1])\r\n\tby " HOSTNAME " (Moat) with ESMTP id ")) == 0);
    assert_non_null(strstr(f.data, f.qid));
    assert_non_null(strstr(f.data, "\r\n\tfor <Alice@Sub.Example.COM>; "));
    assert_non_null(strstr(f.data, "\r\nSubject: stored\r\n\r\nline 1\r\n.dotted\r\n"));
    assert_null(strstr(f.data, "\r\n.\r\n"));
    assert_string_equal(f.sender, "sender@example.org");
    assert_string_equal(f.rcpt, "Alice@Sub.Example.COM");
    assert_string_equal(f.orcpt, "rfc822;alice+40x");
    assert_string_equal(f.envid, "env+2B1");
    assert_int_equal(f.notify, SPOOL_NOTIFY_SUCCESS | SPOOL_NOTIFY_FAILURE);
    assert_int_equal(f.ret, SPOOL_RET_HDRS);
    assert_true(f.flags & SPOOL_F_8BITMIME);
    client_cmd(&c, "QUIT", "221 2.0.0");
    close(c.fd);
    tserver_stop(&t);
}

/* --- disconnect while the commit is in flight --- */
struct stats_call {
    struct spool_stats sp;
};

static void stats_cb(void *arg)
{
    struct stats_call *s = arg;
    spool_get_stats(spool, &s->sp);
}

static void test_disconnect_after_dot(void **state)
{
    struct tserver t;
    tserver_init(&t);
    tserver_start(&t);
    struct stats_call before, after;
    run_on_loop(stats_cb, &before);
    for (int i = 0; i < 5; i++) {
        struct client c = { .fd = client_connect(&t, "127.0.0.1") };
        client_expect(&c, "220 ");
        const char *all = "EHLO c.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n";
        client_send(&c, all, strlen(all));
        client_replies(&c, 4, NULL, NULL, 0);
        client_send(&c, "x\r\n.\r\n", 6);
        close(c.fd);        /* gone before the 250 */
    }
    /* every message still becomes durable; the sessions wait for their callbacks */
    for (int i = 0; i < 200; i++) {
        run_on_loop(stats_cb, &after);
        if (after.sp.committed_msgs >= before.sp.committed_msgs + 5)
            break;
        usleep(10000);
    }
    assert_true(after.sp.committed_msgs >= before.sp.committed_msgs + 5);
    tserver_stop(&t);
}

/* --- shutdown --- */
static void test_shutdown_grace(void **state)
{
    struct tserver t;
    tserver_init(&t);
    tserver_set(&t, "smtp_timeout_shutdown=5");
    tserver_start(&t);
    struct client idle = { .fd = client_connect(&t, "127.0.0.1") };
    struct client busy = { .fd = client_connect(&t, "127.0.0.1") };
    client_expect(&idle, "220 ");
    client_expect(&busy, "220 ");
    client_cmd(&idle, "EHLO c.test", "250");
    const char *all = "EHLO c.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n";
    client_send(&busy, all, strlen(all));
    client_replies(&busy, 4, NULL, NULL, 0);
    client_send(&busy, "Subject: x\r\n\r\n", 14);
    run_on_loop(tserver_shutdown_cb, &t);
    client_expect(&idle, "421 4.3.2");
    assert_true(client_wait_eof(&idle));
    assert_false(t.done);
    /* the session in DATA may finish: 250, then 421 */
    client_send(&busy, "body\r\n.\r\n", 9);
    client_expect(&busy, "250 2.0.0 Ok: queued as ");
    client_expect(&busy, "421 4.3.2");
    assert_true(client_wait_eof(&busy));
    assert_true(tserver_wait_done(&t, 5000));
    close(idle.fd);
    close(busy.fd);
    run_on_loop(tserver_free_cb, &t);
    settings_free(&t.set);
}

static void test_shutdown_expire(void **state)
{
    struct tserver t;
    tserver_init(&t);
    tserver_set(&t, "smtp_timeout_shutdown=1");
    tserver_start(&t);
    struct client busy = { .fd = client_connect(&t, "127.0.0.1") };
    client_expect(&busy, "220 ");
    const char *all = "EHLO c.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n";
    client_send(&busy, all, strlen(all));
    client_replies(&busy, 4, NULL, NULL, 0);
    client_send(&busy, "Subject: x\r\n", 12);
    run_on_loop(tserver_shutdown_cb, &t);
    /* never finishes: 421 after the grace, the txn is aborted, never acknowledged */
    client_expect(&busy, "421 4.3.2");
    assert_true(client_wait_eof(&busy));
    assert_true(tserver_wait_done(&t, 5000));
    close(busy.fd);
    run_on_loop(tserver_free_cb, &t);
    settings_free(&t.set);
}

/* --- connection limits --- */
static void test_connection_limits(void **state)
{
    struct tserver t;
    tserver_init(&t);
    tserver_set(&t, "smtp_max_connections_per_ip=2");
    tserver_set(&t, "smtp_max_connections=3");
    tserver_start(&t);
    struct client a = { .fd = client_connect(&t, "192.0.2.1") };
    struct client b = { .fd = client_connect(&t, "192.0.2.1") };
    struct client c = { .fd = client_connect(&t, "192.0.2.1") };
    client_expect(&a, "220 ");
    client_expect(&b, "220 ");
    client_expect(&c, "421 4.7.0 " HOSTNAME " Too many connections from your address");
    assert_true(client_wait_eof(&c));
    struct client d = { .fd = client_connect(&t, "2001:db8::1") };
    client_expect(&d, "220 ");
    struct client e = { .fd = client_connect(&t, "2001:db8::2") };
    client_expect(&e, "421 4.7.0 " HOSTNAME " Too many connections");
    assert_true(client_wait_eof(&e));
    close(a.fd);
    close(b.fd);
    close(c.fd);
    close(d.fd);
    close(e.fd);
    tserver_stop(&t);
}

/* --- tracking events (core/track.h): what one session emits --- */
struct rec_event {
    enum track_kind kind;
    enum track_result result;
    enum track_role role;
    char session[TRACK_SESSION_MAX], qid[TRACK_QID_MAX];
    uint32_t txn, nrcpt;
    int code;
    char rcpt[64], sender[64], subject[64], message_id[64], check[32], client_ip[64];
    int64_t ts_us;
};
static struct {
    pthread_mutex_t mu;
    struct rec_event ev[32];
    size_t n;
} rec = { .mu = PTHREAD_MUTEX_INITIALIZER };

static void rec_sink(const struct track_event *ev, void *arg)
{
    (void)arg;
    pthread_mutex_lock(&rec.mu);
    if (rec.n < sizeof rec.ev / sizeof rec.ev[0]) {
        struct rec_event *r = &rec.ev[rec.n++];
        memset(r, 0, sizeof *r);
        r->kind = ev->kind;
        r->result = ev->result;
        r->role = ev->role;
        r->txn = ev->txn;
        r->nrcpt = ev->nrcpt;
        r->code = ev->code;
        r->ts_us = ev->ts_us;
        memcpy(r->session, ev->session, sizeof r->session);
        memcpy(r->qid, ev->qid, sizeof r->qid);
#define CP(f) (void)str_copy(r->f, sizeof r->f, ev->f ? ev->f : "")
        CP(rcpt); CP(sender); CP(subject); CP(message_id); CP(check); CP(client_ip);
#undef CP
    }
    pthread_mutex_unlock(&rec.mu);
}

static void test_tracking_events(void **state)
{
    struct tserver t;
    tserver_init(&t);
    tserver_set(&t, "smtp_max_connections_per_ip=1");
    tserver_start(&t);
    rec.n = 0;
    track_set_sink(rec_sink, NULL);
    struct client c = { .fd = client_connect(&t, "192.0.2.7") };
    client_expect(&c, "220 ");
    client_send(&c, "EHLO client.test\r\n", 18);
    client_replies(&c, 1, NULL, NULL, 0);
    client_cmd(&c, "MAIL FROM:<sender@example.org> SIZE=100", "250 2.1.0");
    client_cmd(&c, "RCPT TO:<someone@elsewhere.test>", "5");
    client_cmd(&c, "RCPT TO:<bob@example.com>", "250 2.1.5");
    client_cmd(&c, "DATA", "354 ");
    const char *msg = "Subject: tracked\r\nMessage-ID: <m1@example.org>\r\n\r\nbody\r\n.\r\n";
    client_send(&c, msg, strlen(msg));
    client_expect(&c, "250 2.0.0 Ok: queued as ");
    client_cmd(&c, "MAIL FROM:<>", "250 2.1.0");
    /* over smtp_max_connections_per_ip: refused before any session */
    struct client d = { .fd = client_connect(&t, "192.0.2.7") };
    client_expect(&d, "421 4.7.0 ");
    assert_true(client_wait_eof(&d));
    client_cmd(&c, "QUIT", "221 2.0.0");
    close(c.fd);
    close(d.fd);
    tserver_stop(&t);
    track_set_sink(NULL, NULL);

    static const struct { enum track_kind kind; enum track_result result; uint32_t txn; } want[] = {
        { TRACK_CONNECT, TRACK_NONE, 1 },     { TRACK_MAIL, TRACK_ACCEPTED, 1 },
        { TRACK_RCPT, TRACK_REJECTED, 1 },    { TRACK_RCPT, TRACK_ACCEPTED, 1 },
        { TRACK_DATA, TRACK_ACCEPTED, 1 },    { TRACK_QUEUED, TRACK_NONE, 1 },
        { TRACK_CONNECT, TRACK_NONE, 2 },     { TRACK_MAIL, TRACK_ACCEPTED, 2 },
        { TRACK_CONNECT, TRACK_TEMPFAILED, 0 },
    };
    pthread_mutex_lock(&rec.mu);
    assert_int_equal(rec.n, sizeof want / sizeof want[0]);
    for (size_t i = 0; i < rec.n; i++) {
        struct rec_event *r = &rec.ev[i];
        if (r->kind != want[i].kind || r->result != want[i].result || r->txn != want[i].txn)
            fail_msg("event %zu: %s/%s txn %u, want %s/%s txn %u", i, track_kind_name(r->kind),
                     track_result_name(r->result), r->txn, track_kind_name(want[i].kind),
                     track_result_name(want[i].result), want[i].txn);
        assert_string_equal(r->client_ip, "192.0.2.7");
        assert_true(r->session[0] != '\0');
        if (i < 8)
            assert_string_equal(r->session, rec.ev[0].session);
    }
    assert_string_not_equal(rec.ev[8].session, rec.ev[0].session);   /* a session id of its own */
    assert_string_equal(rec.ev[1].sender, "sender@example.org");
    assert_string_equal(rec.ev[2].rcpt, "someone@elsewhere.test");
    assert_true(rec.ev[2].code >= 500 && rec.ev[2].check[0] != '\0');   /* the deciding check */
    assert_string_equal(rec.ev[3].rcpt, "bob@example.com");
    assert_string_equal(rec.ev[4].subject, "tracked");
    assert_string_equal(rec.ev[5].message_id, "m1@example.org");
    assert_int_equal(rec.ev[5].nrcpt, 1);
    assert_int_equal(rec.ev[5].role, TRACK_ROLE_INBOUND);
    assert_int_equal(strlen(rec.ev[5].qid), SPOOL_QID_LEN);
    assert_true(rec.ev[0].ts_us == rec.ev[6].ts_us);    /* both: the connect time */
    assert_string_equal(rec.ev[7].sender, "");
    pthread_mutex_unlock(&rec.mu);
}

/* --- 200 concurrent sessions --- */
static void test_concurrent(void **state)
{
    enum { N = 200 };
    struct tserver t;
    tserver_init(&t);
    tserver_set(&t, "smtp_max_connections_per_ip=1000");
    tserver_start(&t);
    static struct client cl[N];
    for (int i = 0; i < N; i++) {
        memset(&cl[i], 0, sizeof cl[i]);
        cl[i].fd = client_connect(&t, "127.0.0.1");
    }
    for (int i = 0; i < N; i++)
        client_expect(&cl[i], "220 ");
    const char *txn = "EHLO c.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n";
    for (int i = 0; i < N; i++)
        client_send(&cl[i], txn, strlen(txn));
    for (int i = 0; i < N; i++) {
        int code = 0;
        assert_int_equal(client_replies(&cl[i], 4, &code, NULL, 0), 4);
        assert_int_equal(code, 354);
    }
    for (int i = 0; i < N; i++) {
        char msg[128];
        int n = snprintf(msg, sizeof msg, "Subject: %d\r\n\r\nhello\r\n.\r\nQUIT\r\n", i);
        client_send(&cl[i], msg, (size_t)n);
    }
    for (int i = 0; i < N; i++) {
        client_expect(&cl[i], "250 2.0.0 Ok: queued as ");
        client_expect(&cl[i], "221 2.0.0");
        close(cl[i].fd);
    }
    tserver_stop(&t);
}

/* --- setup --- */
static void snapshot_cb(void *arg)
{
    struct error err;
    struct store *st = store_open(arg, &err);
    if (st == NULL)
        log_fatal("store_open: %s", err.msg);
    if (store_domain_add(st, "example.com", &err) < 0 ||
        store_domain_set_verified(st, "example.com", true, 1700000000, &err) < 0)
        log_fatal("store_domain_add: %s", err.msg);
    snap = store_snapshot_load(st, &err);
    if (snap == NULL)
        log_fatal("store_snapshot_load: %s", err.msg);
    store_close(st);
}

static int setup(void **state)
{
    evthread_use_pthreads();
    signal(SIGPIPE, SIG_IGN);     /* as moatd does: libevent writes with writev(2) */
    log_set_level(getenv("MOAT_TEST_DEBUG") ? LOG_DEBUG : LOG_WARN);
    (void)str_copy(tmpdir, sizeof tmpdir, "/tmp/moat-smtp-test-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    base = event_base_new();
    struct error err;
    char path[512];
    snprintf(path, sizeof path, "%s/spool", tmpdir);
    struct spool_options opt = { .segment_size = 64 * 1024 * 1024 };
    spool = spool_open(path, &opt, base, &err);
    if (spool == NULL) {
        fprintf(stderr, "spool_open: %s\n", err.msg);
        return -1;
    }
    snprintf(path, sizeof path, "%s/moat.db", tmpdir);
    snapshot_cb(path);
    struct moat_settings s;
    settings_defaults(&s);
    free(s.state_dir);
    s.state_dir = xstrdup(tmpdir);
    tls_ctx = smtp_tls_server_ctx(&s, HOSTNAME, &err);
    settings_free(&s);
    if (tls_ctx == NULL) {
        fprintf(stderr, "smtp_tls_server_ctx: %s\n", err.msg);
        return -1;
    }
    /* the generated key is private */
    struct stat st;
    snprintf(path, sizeof path, "%s/tls/key.pem", tmpdir);
    if (stat(path, &st) < 0 || (st.st_mode & 077) != 0)
        return -1;
    pthread_create(&loop_thread, NULL, loop_main, NULL);
    return 0;
}

static void loopbreak_cb(void *arg)
{
    event_base_loopbreak(base);
}

static int teardown(void **state)
{
    run_on_loop(loopbreak_cb, NULL);
    pthread_join(loop_thread, NULL);
    spool_close(spool);
    store_snapshot_free(snap);
    SSL_CTX_free(tls_ctx);
    event_base_free(base);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", tmpdir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_starttls),
        cmocka_unit_test(test_stored_message),
        cmocka_unit_test(test_disconnect_after_dot),
        cmocka_unit_test(test_shutdown_grace),
        cmocka_unit_test(test_shutdown_expire),
        cmocka_unit_test(test_connection_limits),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_tracking_events),
    };
    if (getenv("MOAT_TEST_FILTER"))
        cmocka_set_test_filter(getenv("MOAT_TEST_FILTER"));
    return cmocka_run_group_tests(tests, setup, teardown);
}
