/*
 * test_control.c - the control socket: a server on an event loop in a second
 * thread, driven with control_call and with raw sockets: dispatch, unknown
 * commands, handler errors with their field, malformed and over-long
 * requests, several requests on one connection, socket mode, refusing to
 * replace a live socket, replacing a stale one, and "not running".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>
#include <event2/event.h>
#include <event2/thread.h>
#include "api/control.h"

struct server {
    char dir[64];
    char path[128];
    struct event_base *base;
    struct control *ctl;
    struct event *stop;
    pthread_t thread;
    int reloads;
};

static json_t *h_status(void *arg, json_t *req, struct error *err)
{
    return json_pack("{s:i, s:s}", "uptime", 42, "version", "test");
}

static json_t *h_reload(void *arg, json_t *req, struct error *err)
{
    ((struct server *)arg)->reloads++;
    return json_object();
}

static json_t *h_show(void *arg, json_t *req, struct error *err)
{
    const char *id = json_string_value(json_object_get(req, "id"));
    if (id == NULL) {
        error_set(err, "id", "missing queue id");
        return NULL;
    }
    if (strcmp(id, "Q1") != 0) {
        error_set(err, "", "no queued message %s", id);
        return NULL;
    }
    return json_pack("{s:s}", "id", id);
}

static const struct control_command commands[] = {
    { "status", h_status },
    { "config.reload", h_reload },
    { "queue.show", h_show },
    { NULL, NULL },
};

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    event_base_loopbreak(arg);
}

static void *loop_thread(void *arg)
{
    struct server *s = arg;
    event_base_dispatch(s->base);
    return NULL;
}

static int setup(void **state)
{
    struct server *s = xcalloc(1, sizeof *s);
    struct error err;

    xsnprintf(s->dir, sizeof s->dir, "/tmp/moat-test-ctl-XXXXXX");
    if (mkdtemp(s->dir) == NULL)
        return -1;
    xsnprintf(s->path, sizeof s->path, "%s/moatd.sock", s->dir);
    s->base = event_base_new();
    struct control_config cfg = { s->base, s->path, commands, s };
    s->ctl = control_create(&cfg, &err);
    if (s->ctl == NULL) {
        fprintf(stderr, "control_create: %s\n", err.msg);
        return -1;
    }
    /* a persistent timer keeps the loop alive and lets teardown stop it */
    s->stop = event_new(s->base, -1, EV_PERSIST, on_stop, s->base);
    struct timeval tv = { 3600, 0 };
    event_add(s->stop, &tv);
    pthread_create(&s->thread, NULL, loop_thread, s);
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    struct server *s = *state;
    event_active(s->stop, EV_TIMEOUT, 0);
    pthread_join(s->thread, NULL);
    control_free(s->ctl);
    event_free(s->stop);
    event_base_free(s->base);
    unlink(s->path);
    rmdir(s->dir);
    free(s);
    return 0;
}

static json_t *call(struct server *s, json_t *req)
{
    struct error err;
    json_t *a = control_call(s->path, req, 5000, &err);
    json_decref(req);
    if (a == NULL)
        fail_msg("control_call: %s", err.msg);
    return a;
}

static const char *err_code(json_t *a)
{
    return json_string_value(json_object_get(json_object_get(a, "error"), "code"));
}

static void test_dispatch(void **state)
{
    struct server *s = *state;

    json_t *a = call(s, json_pack("{s:s}", "cmd", "status"));
    assert_true(json_is_true(json_object_get(a, "ok")));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(a, "result"), "uptime")),
                     42);
    json_decref(a);

    a = call(s, json_pack("{s:s}", "cmd", "queue.shred"));
    assert_true(json_is_false(json_object_get(a, "ok")));
    assert_string_equal(err_code(a), "unknown_command");
    json_decref(a);

    a = call(s, json_pack("{s:s}", "cmd", "queue.show"));
    assert_string_equal(err_code(a), "invalid_argument");
    json_t *e = json_object_get(a, "error");
    assert_string_equal(json_string_value(json_object_get(e, "field")), "id");
    assert_string_equal(json_string_value(json_object_get(e, "message")), "missing queue id");
    json_decref(a);

    a = call(s, json_pack("{s:s, s:s}", "cmd", "queue.show", "id", "Q9"));
    assert_string_equal(err_code(a), "failed");
    assert_null(json_object_get(json_object_get(a, "error"), "field"));
    json_decref(a);

    a = call(s, json_pack("{s:i}", "command", 1));
    assert_string_equal(err_code(a), "bad_request");
    json_decref(a);

    a = call(s, json_pack("{s:s}", "cmd", "config.reload"));
    assert_true(json_is_true(json_object_get(a, "ok")));
    json_decref(a);
    assert_int_equal(s->reloads, 1);
}

static int raw_connect(struct server *s)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    str_copy(sun.sun_path, sizeof sun.sun_path, s->path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof sun), 0);
    struct timeval tv = { 5, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* read_all - until EOF or n bytes */
static size_t read_all(int fd, char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    buf[got < n ? got : n - 1] = '\0';
    return got;
}

static void test_raw_protocol(void **state)
{
    struct server *s = *state;
    char buf[4096];

    /* three requests in one write, the connection half-closed: three answers in order */
    int fd = raw_connect(s);
    const char *req = "{\"cmd\":\"status\"}\nnot json\n[1,2]\n";
    assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
    shutdown(fd, SHUT_WR);
    read_all(fd, buf, sizeof buf);
    close(fd);
    char *l1 = buf, *l2 = strchr(l1, '\n');
    assert_non_null(l2);
    *l2++ = '\0';
    char *l3 = strchr(l2, '\n');
    assert_non_null(l3);
    *l3++ = '\0';
    assert_non_null(strstr(l1, "\"ok\":true"));
    assert_non_null(strstr(l2, "bad_request"));
    assert_non_null(strstr(l2, "invalid JSON"));
    assert_non_null(strstr(l3, "must be a JSON object"));

    /* an over-long line is refused and the connection closed */
    fd = raw_connect(s);
    size_t big = 70 * 1024;
    char *junk = xmalloc(big);
    memset(junk, 'x', big);
    size_t off = 0;
    while (off < big) {
        ssize_t w = send(fd, junk + off, big - off, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    free(junk);
    read_all(fd, buf, sizeof buf);
    close(fd);
    assert_non_null(strstr(buf, "line_too_long"));

    /* the server still serves */
    json_t *a = call(s, json_pack("{s:s}", "cmd", "status"));
    assert_true(json_is_true(json_object_get(a, "ok")));
    json_decref(a);
}

static void test_socket_files(void **state)
{
    struct server *s = *state;
    struct stat sb;
    struct error err;

    assert_int_equal(lstat(s->path, &sb), 0);
    assert_true(S_ISSOCK(sb.st_mode));
    assert_int_equal(sb.st_mode & 0777, 0600);

    /* a live socket is not replaced by a second daemon */
    struct event_base *b2 = event_base_new();
    struct control_config cfg = { b2, s->path, commands, NULL };
    assert_null(control_create(&cfg, &err));
    assert_non_null(strstr(err.msg, "another moatd is running"));

    /* a stale socket (nobody listening) is replaced */
    char stale[160];
    xsnprintf(stale, sizeof stale, "%s/stale.sock", s->dir);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    str_copy(sun.sun_path, sizeof sun.sun_path, stale);
    assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
    close(fd);
    cfg.socket_path = stale;
    struct control *c2 = control_create(&cfg, &err);
    if (c2 == NULL)
        fail_msg("stale socket not replaced: %s", err.msg);
    control_free(c2);
    assert_int_equal(lstat(stale, &sb), -1);

    /* a regular file in the way is not removed */
    FILE *f = fopen(stale, "w");
    fclose(f);
    assert_null(control_create(&cfg, &err));
    assert_non_null(strstr(err.msg, "not a socket"));
    unlink(stale);
    event_base_free(b2);

    /* no socket: "not running" */
    json_t *req = json_pack("{s:s}", "cmd", "status");
    assert_null(control_call(stale, req, 1000, &err));
    json_decref(req);
    assert_non_null(strstr(err.msg, "moatd is not running"));
}

int main(void)
{
    log_set_level(LOG_ERROR);
    /* teardown stops the loop from the test thread */
    evthread_use_pthreads();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dispatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_protocol, setup, teardown),
        cmocka_unit_test_setup_teardown(test_socket_files, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
