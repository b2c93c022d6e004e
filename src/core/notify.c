/*
 * notify.c - the sd_notify protocol without libsystemd (notify.h).
 *
 * The protocol (sd_notify(3)): $NOTIFY_SOCKET is a path of an AF_UNIX
 * datagram socket, or an abstract socket name written with a leading '@'
 * (the '@' becomes a NUL octet in sun_path).  Each notification is one
 * datagram of newline-separated KEY=VALUE assignments.  A socket is opened
 * per call: notifications are a handful per process lifetime, and this way
 * no descriptor is inherited by anything moatd starts.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include "core.h"
#include "notify.h"

/* notify_address - $NOTIFY_SOCKET into sa; 0 ok, -1 unusable */
static int notify_address(const char *path, struct sockaddr_un *sa, socklen_t *len)
{
    size_t n = strlen(path);
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if ((path[0] != '/' && path[0] != '@') || n < 2 || n >= sizeof sa->sun_path)
        return -1;
    memcpy(sa->sun_path, path, n);
    if (path[0] == '@')
        sa->sun_path[0] = '\0';   /* abstract namespace: no trailing NUL counts */
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '/' ? 1 : 0));
    return 0;
}

int notify_send(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || path[0] == '\0')
        return 0;
    struct sockaddr_un sa;
    socklen_t len;
    if (notify_address(path, &sa, &len) < 0) {
        log_warn("event=notify_failed reason=\"NOTIFY_SOCKET is not a socket path\"");
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        log_warn("event=notify_failed reason=\"socket: %s\"", strerror(errno));
        return -1;
    }
    ssize_t w = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, len);
    int e = errno;
    close(fd);
    if (w < 0) {
        log_warn("event=notify_failed reason=\"sendto: %s\"", strerror(e));
        return -1;
    }
    log_debug("event=notify state=\"%.40s\"", state);
    return 1;
}

int notify_sendf(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf) {
        log_warn("event=notify_failed reason=\"state too long\"");
        return -1;
    }
    return notify_send(buf);
}

int notify_reloading(const char *status)
{
    /* systemd 253 (Type=notify-reload) wants the monotonic time of the
     * reload start, to tell this reload from an earlier one */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    unsigned long long usec = (unsigned long long)ts.tv_sec * 1000000ull +
                              (unsigned long long)ts.tv_nsec / 1000ull;
    return notify_sendf("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=%s", usec, status);
}
