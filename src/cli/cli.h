/*
 * cli.h - private to the moat command-line client: the command table row,
 * the per-invocation context handed to every handler, and the output helpers
 * (aligned tables, terminal-safe strings, errors with the command's name).
 *
 * Adding a command: write a handler in the file of its noun and add one row
 * to cli_commands[] in moat.c.
 */
#ifndef MOAT_CLI_H
#define MOAT_CLI_H

#include <stdbool.h>
#include <stdio.h>
#include <jansson.h>
#include "core/core.h"
#include "core/settings.h"

#define CLI_MAX_OPTIONS 8
#define CLI_MAX_ARGS 16

/* exit statuses */
#define CLI_OK 0
#define CLI_FAIL 1      /* the command failed */
#define CLI_USAGE 2     /* the command line was wrong */

struct cli_ctx;

struct cli_option {
    const char *name;        /* without the leading "--" */
    const char *arg;         /* NULL for a flag, else the value's name for help */
    const char *help;
};

struct cli_command {
    const char *noun;        /* "domain" */
    const char *verb;        /* "add", or NULL for a one-word command ("status") */
    const char *args;        /* synopsis of the positional arguments, "" if none */
    int min_args, max_args;
    const struct cli_option *options;   /* terminated by { NULL } or NULL */
    int (*fn)(struct cli_ctx *ctx);
    const char *summary;     /* one line for the command list */
    const char *help;        /* paragraph for `moat NOUN VERB --help` */
};

struct cli_ctx {
    const struct cli_command *cmd;
    char *args[CLI_MAX_ARGS];
    int n_args;
    const char *opt_value[CLI_MAX_OPTIONS];   /* by index into cmd->options */
    bool opt_set[CLI_MAX_OPTIONS];
    bool json;                                /* --json: machine output */
    struct moat_settings settings;            /* finished: paths derived */
    char *socket_path;                        /* STATE/moatd.sock */
};

/* cli_opt - the value of option name (NULL if absent); cli_flag - was it given */
const char *cli_opt(const struct cli_ctx *ctx, const char *name);
bool cli_flag(const struct cli_ctx *ctx, const char *name);

/* cli_fail - "moat: NOUN VERB: message" on stderr; returns CLI_FAIL */
int cli_fail(const struct cli_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* cli_usage_error - the message and the command's usage line; returns CLI_USAGE */
int cli_usage_error(const struct cli_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* cli_warn - "moat: warning: message" on stderr */
void cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* cli_print_json - the value, indented, on stdout; consumes the reference */
void cli_print_json(json_t *v);
/* cli_safe - copy of s fit for a terminal: control characters become '?'; NULL -> "-" */
char *cli_safe(const char *s);
/* cli_format_time - local "YYYY-MM-DD HH:MM:SS" of unix seconds (or ms when huge) */
void cli_format_time(char *dst, size_t size, int64_t t);
/* cli_format_duration - "3d 4h", "5m 10s" */
void cli_format_duration(char *dst, size_t size, int64_t seconds);
/* cli_format_hostport - "host:port", "[v6]:port" */
void cli_format_hostport(char *dst, size_t size, const char *host, int port);

/* aligned text tables; cells are copied and made terminal-safe; headers may be NULL */
struct cli_table;
struct cli_table *cli_table_new(int ncols, const char *const *headers);
void cli_table_add(struct cli_table *t, const char *const *cells);
void cli_table_print(struct cli_table *t, FILE *out);
void cli_table_free(struct cli_table *t);

/* control socket: the answer's result, or NULL with the message printed */
json_t *cli_control(struct cli_ctx *ctx, json_t *req);
/* cli_notify_reload - tell a running moatd to reload its configuration */
void cli_notify_reload(struct cli_ctx *ctx);

/* handlers */
int cli_domain_add(struct cli_ctx *ctx);
int cli_domain_list(struct cli_ctx *ctx);
int cli_domain_remove(struct cli_ctx *ctx);
int cli_route_set(struct cli_ctx *ctx);
int cli_route_show(struct cli_ctx *ctx);
int cli_queue_list(struct cli_ctx *ctx);
int cli_queue_show(struct cli_ctx *ctx);
int cli_queue_retry(struct cli_ctx *ctx);
int cli_queue_delete(struct cli_ctx *ctx);
int cli_status(struct cli_ctx *ctx);

#endif
