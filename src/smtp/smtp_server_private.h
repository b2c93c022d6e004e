/*
 * smtp_server_private.h - what smtp_server.c (listener, limits, shutdown) and
 * smtp_session.c (the per-connection state machine) share.  Private to
 * src/smtp/ and its tests.
 *
 * Ownership: the server owns the list of sessions; a session unlinks and
 * frees itself (smtp_session.c, session_free) once its connection is gone
 * AND no spool commit callback is outstanding, then tells the server, which
 * completes a pending shutdown when the last one is gone.
 */
#ifndef MOAT_SMTP_SERVER_PRIVATE_H
#define MOAT_SMTP_SERVER_PRIVATE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <event2/util.h>
#include "smtp.h"

struct evconnlistener;
struct event;
struct smtp_session;

struct smtp_server {
    struct smtp_server_config cfg;
    const struct moat_settings *set;
    char *hostname;
    struct evconnlistener *lst[SETTINGS_MAX_LISTEN];
    int n_lst;
    bool started;
    struct smtp_session *sessions;      /* doubly linked, newest first */
    uint64_t n_sessions;
    uint64_t next_id;
    struct smtp_server_stats stats;
    bool shutting_down;
    bool done_called;
    void (*done)(void *arg);
    void *done_arg;
    struct smtp_auth_limiter *auth_limit; /* failed AUTH attempts, all sessions */
};

/* smtp_session_start - take over an accepted, non-blocking fd: greet the
 * client (or refuse it) and link the session into srv */
void smtp_session_start(struct smtp_server *srv, evutil_socket_t fd, const char *client_addr);
/* smtp_session_begin_shutdown - idle sessions get 421 4.3.2 now; sessions in
 * DATA get settings->smtp_timeout_shutdown; sessions in commit wait for it */
void smtp_session_begin_shutdown(struct smtp_session *s);
/* smtp_session_destroy - free at once (smtp_server_free); commits must be over */
void smtp_session_destroy(struct smtp_session *s);
/* smtp_session_next / client_addr - list walking for the server */
struct smtp_session *smtp_session_next(struct smtp_session *s);
const char *smtp_session_client_addr(const struct smtp_session *s);

/* smtp_server_session_gone - a session unlinked itself (srv->n_sessions
 * already decremented): completes a pending shutdown when none is left */
void smtp_server_session_gone(struct smtp_server *srv);

/* smtp_server_adopt_fd - serve an already connected fd (socketpair in tests);
 * the connection limits apply as for an accepted one */
void smtp_server_adopt_fd(struct smtp_server *srv, evutil_socket_t fd, const char *client_addr);

#endif
