/*
 * smtp_server.c - the SMTP listener: binds every settings->smtp_listen
 * address (IPv4 or IPv6) at create time (before privileges are dropped),
 * accepts once started, enforces the connection limits, and runs the
 * graceful shutdown.
 *
 * Entry points (smtp.h): smtp_server_create, smtp_server_start,
 * smtp_server_shutdown, smtp_server_free, smtp_server_get_stats.
 *
 * Connection limits (smtp_max_connections in total, per client address
 * smtp_max_connections_per_ip): a client over a limit gets
 * "421 4.7.0 ... Too many connections" written straight to its fresh socket
 * and is closed, without a session: a flood costs us one accept and one
 * write per connection.  The per-address count walks the session list;
 * the list is bounded by smtp_max_connections.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <event2/event.h>
#include <event2/listener.h>
#include "smtp_server_private.h"
#include "smtp_auth.h"
#include "../core/metrics.h"
#include "../core/track.h"

/* failed-AUTH bookkeeping: client addresses and account names tracked at once;
 * beyond this the entry touched longest ago is forgotten (bounded memory) */
#define SMTP_AUTH_LIMIT_SLOTS 4096

/* server_refuse - over a connection limit: one 421 line, then close */
static void server_refuse(struct smtp_server *srv, evutil_socket_t fd, const char *addr, const char *limit)
{
    char line[512];
    int n = xsnprintf(line, sizeof line, "421 4.7.0 %s Too many connections%s, try again later\r\n",
                      srv->hostname, strcmp(limit, "smtp_max_connections_per_ip") == 0 ? " from your address" : "");
    if (n > 0) {
        /* a fresh socket's send buffer is empty: one short write fits */
        ssize_t w = send(fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
    }
    evutil_closesocket(fd);
    log_info("client=%s event=reject stage=connect code=421 dsn=4.7.0 reason=\"too many connections\" limit=%s",
             addr, limit);
    /* tracked as a connection of its own (txn 0) under a session id of its own */
    struct track_event ev = { .kind = TRACK_CONNECT, .result = TRACK_TEMPFAILED, .client_ip = addr,
                              .stage = "connect", .check = limit, .code = 421, .dsn = "4.7.0",
                              .reason = "too many connections" };
    (void)xsnprintf(ev.session, sizeof ev.session, "%012" PRIX64, srv->next_id++);
    track_emit(&ev);
}

void smtp_server_adopt_fd(struct smtp_server *srv, evutil_socket_t fd, const char *client_addr)
{
    evutil_make_socket_nonblocking(fd);
    evutil_make_socket_closeonexec(fd);
    if (srv->shutting_down) {
        evutil_closesocket(fd);
        return;
    }
    if (srv->n_sessions >= (uint64_t)srv->set->smtp_max_connections) {
        server_refuse(srv, fd, client_addr, "smtp_max_connections");
        return;
    }
    int64_t same = 0;
    for (struct smtp_session *s = srv->sessions; s; s = smtp_session_next(s))
        if (strcmp(smtp_session_client_addr(s), client_addr) == 0)
            same++;
    if (same >= srv->set->smtp_max_connections_per_ip) {
        server_refuse(srv, fd, client_addr, "smtp_max_connections_per_ip");
        return;
    }
    smtp_session_start(srv, fd, client_addr);
    metrics_inc(M_CONNECTIONS_TOTAL, NULL);
    metrics_set(M_CONNECTIONS_CURRENT, (int64_t)srv->n_sessions);
}

/* server_accept_cb - a new connection on any listener */
static void server_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                             int salen, void *arg)
{
    struct smtp_server *srv = arg;
    char addr[INET6_ADDRSTRLEN] = "unknown";
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((struct sockaddr_in *)sa)->sin_addr, addr, sizeof addr);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
            inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], addr, sizeof addr);
        else
            inet_ntop(AF_INET6, &s6->sin6_addr, addr, sizeof addr);
    }
    smtp_server_adopt_fd(srv, fd, addr);
}

/* server_accept_error_cb - EMFILE and friends: log and keep listening */
static void server_accept_error_cb(struct evconnlistener *l, void *arg)
{
    int e = EVUTIL_SOCKET_ERROR();
    log_warn("event=accept_failed error=\"%s\"", evutil_socket_error_to_string(e));
}

struct smtp_server *smtp_server_create(const struct smtp_server_config *cfg, struct error *err)
{
    struct smtp_server *srv = xcalloc(1, sizeof *srv);
    srv->cfg = *cfg;
    srv->auth_limit = smtp_auth_limiter_new(SMTP_AUTH_LIMIT_SLOTS);
    srv->set = cfg->settings;
    srv->hostname = xstrdup(cfg->hostname && cfg->hostname[0] ? cfg->hostname : "localhost");
    srv->next_id = time_wall_ms() << 12;    /* distinct ids across restarts, for log grepping */
    for (int i = 0; i < srv->set->n_smtp_listen; i++) {
        const char *spec = srv->set->smtp_listen[i];
        char *host = NULL;
        int port = 0;
        if (settings_parse_hostport(spec, &host, &port) < 0) {
            error_set(err, "smtp_listen", "bad listen address \"%s\" (want ADDR:PORT or [ADDR]:PORT)", spec);
            free(host);
            goto fail;
        }
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
        struct addrinfo *res = NULL;
        char portstr[16];
        (void)xsnprintf(portstr, sizeof portstr, "%d", port);
        int gai = getaddrinfo(host && host[0] ? host : NULL, portstr, &hints, &res);
        free(host);
        if (gai != 0 || res == NULL) {
            error_set(err, "smtp_listen", "cannot resolve listen address \"%s\": %s", spec, gai_strerror(gai));
            goto fail;
        }
        unsigned flags = LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_DISABLED;
        if (res->ai_family == AF_INET6)
            flags |= LEV_OPT_BIND_IPV6ONLY;    /* "[::]:25" and "0.0.0.0:25" can both be listed */
        struct evconnlistener *l = evconnlistener_new_bind(cfg->base, server_accept_cb, srv, flags, 511,
                                                           res->ai_addr, (int)res->ai_addrlen);
        int e = errno;
        freeaddrinfo(res);
        if (l == NULL) {
            error_set(err, "smtp_listen", "cannot listen on %s: %s", spec, strerror(e));
            goto fail;
        }
        evconnlistener_set_error_cb(l, server_accept_error_cb);
        srv->lst[srv->n_lst++] = l;
        log_info("event=listen proto=smtp addr=%s", spec);
    }
    return srv;
fail:
    smtp_server_free(srv);
    return NULL;
}

int smtp_server_start(struct smtp_server *srv)
{
    for (int i = 0; i < srv->n_lst; i++)
        if (evconnlistener_enable(srv->lst[i]) < 0)
            return -1;
    srv->started = true;
    return 0;
}

/* server_done_cb - run done() from the loop, never from inside a session */
static void server_done_cb(evutil_socket_t fd, short what, void *arg)
{
    struct smtp_server *srv = arg;
    if (srv->done)
        srv->done(srv->done_arg);
}

static void server_maybe_done(struct smtp_server *srv)
{
    if (!srv->shutting_down || srv->done_called || srv->n_sessions > 0)
        return;
    srv->done_called = true;
    log_info("event=smtp_shutdown_complete");
    struct timeval zero = { 0, 0 };
    if (event_base_once(srv->cfg.base, -1, EV_TIMEOUT, server_done_cb, srv, &zero) < 0 && srv->done)
        srv->done(srv->done_arg);
}

void smtp_server_session_gone(struct smtp_server *srv)
{
    metrics_set(M_CONNECTIONS_CURRENT, (int64_t)srv->n_sessions);
    server_maybe_done(srv);
}

void smtp_server_shutdown(struct smtp_server *srv, void (*done)(void *arg), void *arg)
{
    srv->done = done;
    srv->done_arg = arg;
    if (srv->shutting_down)
        return;
    srv->shutting_down = true;
    for (int i = 0; i < srv->n_lst; i++)
        evconnlistener_disable(srv->lst[i]);
    log_info("event=smtp_shutdown sessions=%" PRIu64, srv->n_sessions);
    /* begin_shutdown never frees synchronously, so walking the list is safe */
    for (struct smtp_session *s = srv->sessions; s; s = smtp_session_next(s))
        smtp_session_begin_shutdown(s);
    server_maybe_done(srv);
}

void smtp_server_free(struct smtp_server *srv)
{
    if (srv == NULL)
        return;
    for (int i = 0; i < srv->n_lst; i++)
        evconnlistener_free(srv->lst[i]);
    srv->n_lst = 0;
    srv->done = NULL;
    srv->done_called = true;      /* no callback after free */
    while (srv->sessions) {
        struct smtp_session *s = srv->sessions;
        uint64_t before = srv->n_sessions;
        smtp_session_destroy(s);
        if (srv->n_sessions == before) {
            /* a commit is in flight and its callback will find srv: keep it */
            log_error("event=smtp_free_with_sessions sessions=%" PRIu64, srv->n_sessions);
            return;
        }
    }
    free(srv->hostname);
    smtp_auth_limiter_free(srv->auth_limit);
    free(srv);
}

void smtp_server_get_stats(const struct smtp_server *srv, struct smtp_server_stats *out)
{
    *out = srv->stats;
}

/* smtp_server_set_tls - issue 11: a reloaded certificate for the STARTTLS
 * sessions to come.  SSL_new takes a reference on its context, so a
 * session that already did STARTTLS keeps the old one until it ends. */
void smtp_server_set_tls(struct smtp_server *srv, SSL_CTX *tls)
{
    srv->cfg.tls = tls;
}
