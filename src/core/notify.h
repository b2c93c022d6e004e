/*
 * notify.h - service manager readiness notification (the sd_notify
 * protocol of systemd, without libsystemd): one datagram of "KEY=VALUE"
 * lines to the AF_UNIX socket named by $NOTIFY_SOCKET.
 *
 * moatd sends READY=1 once the listeners are bound, the store is open and
 * privileges are dropped; RELOADING=1 (with MONOTONIC_USEC) at SIGHUP and
 * READY=1 when the reloaded configuration is in use; STOPPING=1 at
 * shutdown; STATUS= lines for `systemctl status`.  Without $NOTIFY_SOCKET
 * every call does nothing.  Never blocks: the socket is non-blocking and a
 * datagram that cannot be sent at once is dropped (with a debug log line).
 */
#ifndef MOAT_NOTIFY_H
#define MOAT_NOTIFY_H

/* notify_send - send state (lines separated by '\n') to the service
 * manager; 1 sent, 0 no $NOTIFY_SOCKET, -1 failed (logged) */
int notify_send(const char *state);
/* notify_sendf - notify_send of a formatted state */
int notify_sendf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* notify_reloading - "RELOADING=1", MONOTONIC_USEC=now and a STATUS line */
int notify_reloading(const char *status);

#endif
