/*
 * control.c - the local control socket (STATE/moatd.sock) of control.h: the
 * server side on the daemon's event loop, and control_call, the blocking
 * client the moat CLI uses.
 *
 * Protocol: one JSON object a line each way.  A request line is bounded
 * (CONTROL_MAX_LINE); so is the number of clients (CONTROL_MAX_CLIENTS) and
 * how long a client may sit idle.  Requests on one connection are answered in
 * order; the handlers (supplied by moatd) run synchronously on the loop, so
 * they must be quick.
 *
 * Security: the socket is mode 0600 inside the state directory; whoever can
 * connect is the administrator (same uid as moatd, or root).
 *
 * Ownership: struct control owns the listener and every client; a client
 * owns its bufferevent and is freed in exactly one place (client_free).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include "control.h"

#define CONTROL_MAX_LINE (64 * 1024)            /* a request line, bytes */
#define CONTROL_MAX_CLIENTS 16
#define CONTROL_IDLE_TIMEOUT_S 60
#define CONTROL_MAX_REPLY (64 * 1024 * 1024)    /* control_call: an answer line */

struct control_client {
    struct control *ctl;
    struct bufferevent *bev;
    bool closing;                 /* free once the output has drained */
    struct control_client *next;
};

struct control {
    struct event_base *base;
    char *socket_path;
    const struct control_command *commands;
    void *arg;
    struct evconnlistener *listener;
    struct control_client *clients;
    int n_clients;
};

/* --- answers --- */

static json_t *answer_error(const char *code, const char *message, const char *field)
{
    json_t *e = json_pack("{s:s, s:s}", "code", code, "message", message);
    if (field != NULL && field[0] != '\0')
        json_object_set_new(e, "field", json_string(field));
    return json_pack("{s:b, s:o}", "ok", 0, "error", e);
}

/* dispatch - one request line to one answer object */
static json_t *dispatch(struct control *c, const char *line, size_t len)
{
    json_error_t jerr;
    struct error err;

    json_t *req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (req == NULL) {
        char msg[300];
        xsnprintf(msg, sizeof msg, "invalid JSON at column %d: %s", jerr.column, jerr.text);
        return answer_error("bad_request", msg, NULL);
    }
    if (!json_is_object(req)) {
        json_decref(req);
        return answer_error("bad_request", "the request must be a JSON object", NULL);
    }
    const char *cmd = json_string_value(json_object_get(req, "cmd"));
    if (cmd == NULL) {
        json_decref(req);
        return answer_error("bad_request", "missing \"cmd\" string", "cmd");
    }
    const struct control_command *cc = c->commands;
    while (cc != NULL && cc->name != NULL && strcmp(cc->name, cmd) != 0)
        cc++;
    if (cc == NULL || cc->name == NULL) {
        char msg[200], q[120];
        xsnprintf(msg, sizeof msg, "unknown command %s", log_quote(q, sizeof q, cmd));
        log_info("event=control_request cmd=%s result=unknown_command", q);
        json_decref(req);
        return answer_error("unknown_command", msg, "cmd");
    }
    memset(&err, 0, sizeof err);
    json_t *result = cc->fn(c->arg, req, &err);
    json_decref(req);
    if (result == NULL) {
        /* a handler error that names a field is about the request itself */
        const char *code = err.field[0] ? "invalid_argument" : "failed";
        char q[600];
        log_info("event=control_request cmd=%s result=%s error=%s", cc->name, code,
                 log_quote(q, sizeof q, err.msg[0] ? err.msg : "internal error"));
        return answer_error(code, err.msg[0] ? err.msg : "internal error", err.field);
    }
    log_debug("event=control_request cmd=%s result=ok", cc->name);
    return json_pack("{s:b, s:o}", "ok", 1, "result", result);
}

/* --- clients --- */

static void client_free(struct control_client *cl)
{
    struct control *c = cl->ctl;
    for (struct control_client **pp = &c->clients; *pp; pp = &(*pp)->next) {
        if (*pp == cl) {
            *pp = cl->next;
            break;
        }
    }
    c->n_clients--;
    bufferevent_free(cl->bev);
    free(cl);
}

static void client_send(struct control_client *cl, json_t *answer)
{
    char *text = json_dumps(answer, JSON_COMPACT);
    json_decref(answer);
    if (text == NULL) {
        /* only on allocation failure or a non-UTF-8 string from a handler */
        text = xstrdup("{\"ok\":false,\"error\":{\"code\":\"failed\","
                       "\"message\":\"cannot encode the answer\"}}");
    }
    struct evbuffer *out = bufferevent_get_output(cl->bev);
    evbuffer_add(out, text, strlen(text));
    evbuffer_add(out, "\n", 1);
    free(text);
}

static void client_read(struct bufferevent *bev, void *arg)
{
    struct control_client *cl = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    while (!cl->closing) {
        size_t len;
        char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF);
        if (line == NULL) {
            if (evbuffer_get_length(in) >= CONTROL_MAX_LINE) {
                client_send(cl, answer_error("line_too_long",
                            "request line longer than 65536 bytes", NULL));
                cl->closing = true;
            }
            break;
        }
        if (len > CONTROL_MAX_LINE) {
            client_send(cl, answer_error("line_too_long",
                        "request line longer than 65536 bytes", NULL));
            cl->closing = true;
        } else if (len > 0 && !(len == 1 && line[0] == '\r')) {
            client_send(cl, dispatch(cl->ctl, line, len));
        }
        free(line);
    }
    if (cl->closing) {
        bufferevent_disable(bev, EV_READ);
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            client_free(cl);
    }
}

static void client_write(struct bufferevent *bev, void *arg)
{
    struct control_client *cl = arg;
    if (cl->closing)
        client_free(cl);
}

static void client_event(struct bufferevent *bev, short what, void *arg)
{
    struct control_client *cl = arg;
    /* a client that half-closed after its request still gets its answers */
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) &&
        evbuffer_get_length(bufferevent_get_output(bev)) > 0) {
        cl->closing = true;
        bufferevent_disable(bev, EV_READ);
        return;
    }
    /* EOF, error or idle timeout: the client is gone or stuck */
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        client_free(cl);
}

static void control_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                           int socklen, void *arg)
{
    struct control *c = arg;

    if (c->n_clients >= CONTROL_MAX_CLIENTS) {
        static const char busy[] = "{\"ok\":false,\"error\":{\"code\":\"busy\","
                                   "\"message\":\"too many control clients\"}}\n";
        /* best effort on a fresh socket whose buffer is empty */
        ssize_t w = send(fd, busy, sizeof busy - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)w;
        close(fd);
        log_warn("event=control_refused reason=\"too many clients\" max=%d",
                 CONTROL_MAX_CLIENTS);
        return;
    }
    struct bufferevent *bev = bufferevent_socket_new(c->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL) {
        close(fd);
        return;
    }
    struct control_client *cl = xcalloc(1, sizeof *cl);
    cl->ctl = c;
    cl->bev = bev;
    cl->next = c->clients;
    c->clients = cl;
    c->n_clients++;
    struct timeval idle = { CONTROL_IDLE_TIMEOUT_S, 0 };
    bufferevent_set_timeouts(bev, &idle, &idle);
    /* stop reading once a full line's worth is buffered: bounded memory */
    bufferevent_setwatermark(bev, EV_READ, 0, CONTROL_MAX_LINE + 2);
    bufferevent_setcb(bev, client_read, client_write, client_event, cl);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

/* --- the socket --- */

static int fill_sockaddr(const char *path, struct sockaddr_un *sun, struct error *err)
{
    memset(sun, 0, sizeof *sun);
    sun->sun_family = AF_UNIX;
    if (str_copy(sun->sun_path, sizeof sun->sun_path, path) < 0) {
        error_set(err, "socket_path", "%s: control socket path longer than %zu bytes",
                  path, sizeof sun->sun_path - 1);
        return -1;
    }
    return 0;
}

/* remove_stale - unlink a socket left by a dead moatd; refuse when one answers */
static int remove_stale(const char *path, const struct sockaddr_un *sun, struct error *err)
{
    struct stat sb;

    if (lstat(path, &sb) < 0)
        return errno == ENOENT ? 0 : (error_set(err, "socket_path", "%s: %s", path,
                                                strerror(errno)), -1);
    if (!S_ISSOCK(sb.st_mode)) {
        error_set(err, "socket_path", "%s exists and is not a socket; remove it", path);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        int r = connect(fd, (const struct sockaddr *)sun, sizeof *sun);
        close(fd);
        if (r == 0) {
            error_set(err, "socket_path", "%s: another moatd is running (its control socket "
                      "answers)", path);
            return -1;
        }
    }
    if (unlink(path) < 0 && errno != ENOENT) {
        error_set(err, "socket_path", "%s: cannot remove stale socket: %s", path,
                  strerror(errno));
        return -1;
    }
    return 0;
}

struct control *control_create(const struct control_config *cfg, struct error *err)
{
    struct sockaddr_un sun;

    memset(err, 0, sizeof *err);
    if (fill_sockaddr(cfg->socket_path, &sun, err) < 0 ||
        remove_stale(cfg->socket_path, &sun, err) < 0)
        return NULL;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        error_set(err, "", "control socket: %s", strerror(errno));
        return NULL;
    }
    /* the umask closes the window between bind and chmod in which the socket
     * would be connectable by others */
    mode_t old = umask(0077);
    int r = bind(fd, (struct sockaddr *)&sun, sizeof sun);
    int bind_errno = errno;
    umask(old);
    if (r < 0) {
        error_set(err, "socket_path", "%s: bind: %s", cfg->socket_path, strerror(bind_errno));
        close(fd);
        return NULL;
    }
    if (chmod(cfg->socket_path, 0600) < 0 || listen(fd, 16) < 0) {
        error_set(err, "socket_path", "%s: %s", cfg->socket_path, strerror(errno));
        close(fd);
        unlink(cfg->socket_path);
        return NULL;
    }
    struct control *c = xcalloc(1, sizeof *c);
    c->base = cfg->base;
    c->socket_path = xstrdup(cfg->socket_path);
    c->commands = cfg->commands;
    c->arg = cfg->arg;
    c->listener = evconnlistener_new(cfg->base, control_accept, c,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
    if (c->listener == NULL) {
        error_set(err, "", "%s: cannot listen on the event loop", cfg->socket_path);
        close(fd);
        unlink(cfg->socket_path);
        free(c->socket_path);
        free(c);
        return NULL;
    }
    log_info("event=control_listening path=%s", c->socket_path);
    return c;
}

void control_free(struct control *c)
{
    if (c == NULL)
        return;
    while (c->clients != NULL)
        client_free(c->clients);
    evconnlistener_free(c->listener);
    unlink(c->socket_path);
    free(c->socket_path);
    free(c);
}

/* --- client side --- */

static int remaining_ms(uint64_t deadline)
{
    uint64_t now = time_mono_ms();
    return now >= deadline ? 0 : (int)(deadline - now);
}

static int wait_fd(int fd, short events, uint64_t deadline)
{
    struct pollfd p = { .fd = fd, .events = events };
    for (;;) {
        int r = poll(&p, 1, remaining_ms(deadline));
        if (r > 0)
            return 0;
        if (r == 0)
            return -1;
        if (errno != EINTR)
            return -1;
    }
}

/* control_call - connect, send one request line, read one answer line.  The
 * answer object is returned whether "ok" is true or false; NULL (with err)
 * only when the daemon could not be reached or answered garbage. */
json_t *control_call(const char *socket_path, json_t *req, int timeout_ms, struct error *err)
{
    struct sockaddr_un sun;
    uint64_t deadline = time_mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 1);
    json_t *answer = NULL;
    struct buf in;
    char *text = NULL;

    memset(err, 0, sizeof *err);
    buf_init(&in);
    if (fill_sockaddr(socket_path, &sun, err) < 0)
        return NULL;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        error_set(err, "", "socket: %s", strerror(errno));
        return NULL;
    }
    if (connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        if (errno == ENOENT || errno == ECONNREFUSED) {
            error_set(err, "", "moatd is not running (%s: %s)", socket_path,
                      errno == ENOENT ? "no control socket" : "connection refused");
            goto out;
        }
        if (errno != EAGAIN && errno != EINPROGRESS) {
            error_set(err, "", "%s: connect: %s", socket_path, strerror(errno));
            goto out;
        }
        /* the listen backlog is full: wait for room */
        if (wait_fd(fd, POLLOUT, deadline) < 0) {
            error_set(err, "", "%s: timed out connecting to moatd", socket_path);
            goto out;
        }
    }
    char *body = json_dumps(req, JSON_COMPACT);
    if (body == NULL) {
        error_set(err, "", "cannot encode the request");
        goto out;
    }
    text = xasprintf("%s\n", body);
    free(body);
    size_t tlen = strlen(text), off = 0;
    while (off < tlen) {
        ssize_t w = send(fd, text + off, tlen - off, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (wait_fd(fd, POLLOUT, deadline) < 0) {
                error_set(err, "", "%s: timed out sending to moatd", socket_path);
                goto out;
            }
            continue;
        }
        if (w < 0) {
            error_set(err, "", "%s: send: %s", socket_path, strerror(errno));
            goto out;
        }
        off += (size_t)w;
    }
    for (;;) {
        char chunk[16384];
        char *nl = in.len ? memchr(in.data, '\n', in.len) : NULL;
        if (nl != NULL) {
            json_error_t jerr;
            answer = json_loadb(in.data, (size_t)(nl - in.data), 0, &jerr);
            if (answer == NULL || !json_is_object(answer)) {
                error_set(err, "", "moatd sent an invalid answer: %s",
                          answer ? "not an object" : jerr.text);
                json_decref(answer);
                answer = NULL;
            }
            break;
        }
        if (in.len > CONTROL_MAX_REPLY) {
            error_set(err, "", "moatd's answer is longer than %d bytes", CONTROL_MAX_REPLY);
            break;
        }
        ssize_t r = recv(fd, chunk, sizeof chunk, 0);
        if (r > 0) {
            buf_append(&in, chunk, (size_t)r);
            continue;
        }
        if (r == 0) {
            error_set(err, "", "moatd closed the control connection without answering");
            break;
        }
        if (errno == EAGAIN || errno == EINTR) {
            if (wait_fd(fd, POLLIN, deadline) < 0) {
                error_set(err, "", "timed out after %d ms waiting for moatd", timeout_ms);
                break;
            }
            continue;
        }
        error_set(err, "", "%s: recv: %s", socket_path, strerror(errno));
        break;
    }
out:
    free(text);
    buf_free(&in);
    close(fd);
    return answer;
}
