/*
 * control.h - the local control socket (STATE/moatd.sock, mode 0600) through
 * which the moat CLI reaches the running daemon until the HTTP API exists.
 *
 * Protocol: one JSON object a line each way.  Request {"cmd": "...", ...};
 * answer {"ok": true, "result": ...} or {"ok": false, "error": {"code":
 * "...", "message": "...", "field": "..."}}.  Commands: status, queue.list
 * {limit, cursor}, queue.show {id}, queue.retry {id | all:true},
 * queue.delete {id}, config.reload.  Requests are bounded (64 KiB a line).
 */
#ifndef MOAT_CONTROL_H
#define MOAT_CONTROL_H

#include <jansson.h>
#include "../core/core.h"

struct event_base;
struct control;

/* a command handler answers a request with a result (ok) or sets err */
typedef json_t *(*control_handler)(void *arg, json_t *req, struct error *err);

struct control_command {
    const char *name;
    control_handler fn;
};

struct control_config {
    struct event_base *base;
    const char *socket_path;
    const struct control_command *commands;   /* terminated by {NULL, NULL} */
    void *arg;                                /* passed to every handler */
};

struct control *control_create(const struct control_config *cfg, struct error *err);
void control_free(struct control *c);

/* client side, for the CLI: send one request, wait for one answer (timeout ms) */
json_t *control_call(const char *socket_path, json_t *req, int timeout_ms, struct error *err);

#endif
