/*
 * cli.h - private to the moat command-line client: the command table row,
 * the per-invocation context handed to every handler, the HTTP API client
 * (cli_http.c) and the output helpers (aligned tables, terminal-safe
 * strings, errors with the command's name).
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

#define CLI_MAX_OPTIONS 24
#define CLI_MAX_ARGS 16

/* exit statuses */
#define CLI_OK 0
#define CLI_FAIL 1      /* the command failed */
#define CLI_USAGE 2     /* the command line was wrong */

struct cli_ctx;

#define CLI_MAX_REPEAT 16   /* values of one repeatable option */

struct cli_option {
    const char *name;        /* without the leading "--" */
    const char *arg;         /* NULL for a flag, else the value's name for help;
                              * ending in "..." (HOST...): may be given several
                              * times (cli_opt_all) */
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
    const char *opt_values[CLI_MAX_OPTIONS][CLI_MAX_REPEAT];   /* every value, in order */
    int opt_count[CLI_MAX_OPTIONS];
    bool json;                                /* --json: machine output */
    char *url;                                /* API base, "http://127.0.0.1:8025" */
    char *token;                              /* API token, NULL when none */
    char *config_path;                        /* ~/.config/moat/cli.conf */
};

/* cli_opt - the value of option name (NULL if absent); cli_flag - was it given */
const char *cli_opt(const struct cli_ctx *ctx, const char *name);
bool cli_flag(const struct cli_ctx *ctx, const char *name);
/* cli_opt_all - every value of a repeatable option, in order; the count */
int cli_opt_all(const struct cli_ctx *ctx, const char *name, const char *const **values);

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

/* --- the HTTP API (cli_http.c) --- */

/* a sign-in session, for `moat login` (cookie + CSRF instead of a token) */
struct cli_session {
    char cookie[300];        /* "moat_session=..." */
    char csrf[80];
};

/* cli_api - one request to the API: body (consumed, may be NULL) as JSON;
 * the answer (json null for 204), or NULL after printing the API's message.
 * *status gets the HTTP status when not NULL.  session NULL: the token. */
json_t *cli_api(struct cli_ctx *ctx, const char *method, const char *path, json_t *body,
                const struct cli_session *session, long *status);
/* cli_api_text - the same with a body that is not JSON (data, len of content_type) */
json_t *cli_api_text(struct cli_ctx *ctx, const char *method, const char *path,
                     const char *content_type, const char *data, size_t len, long *status);
/* cli_api_download - GET path; a 2xx body is written to out as it comes
 * (no size bound: an .eml, an mbox export); 0, or -1 after printing the
 * API's error */
int cli_api_download(struct cli_ctx *ctx, const char *path, FILE *out, long *status);
/* cli_api_login - POST /api/v1/auth/login; fills session from Set-Cookie and csrf_token */
json_t *cli_api_login(struct cli_ctx *ctx, json_t *body, struct cli_session *session);
/* cli_escape - a path segment or query value, percent-encoded (caller frees) */
char *cli_escape(const char *s);
/* cli_item_path - "BASE/SEG[SUFFIX]" with SEG escaped (caller frees) */
char *cli_item_path(const char *base, const char *seg, const char *suffix);
/* cli_jstr - the string member key of o, "" when missing or not a string */
const char *cli_jstr(json_t *o, const char *key);
/* cli_list_table - every item of the paged list at path: --json prints the
 * array; an empty list prints `none` (when not NULL); else a table whose
 * column i is headed hdr[i] and shows member keys[i] (a string, or an
 * integer in decimal) */
int cli_list_table(struct cli_ctx *ctx, const char *path, const char *none, int ncols,
                   const char *const *hdr, const char *const *keys);
/* cli_delete_item - DELETE base/SEG (seg escaped), then print
 * {json_key: shown, "removed": true} with --json, else done_fmt with shown
 * for its %s (made safe for a terminal) */
int cli_delete_item(struct cli_ctx *ctx, const char *base, const char *seg, const char *shown,
                    const char *json_key, const char *done_fmt);
/* the address-range resources (cli_range.c): outbound hosts and journal
 * sources; base is the collection's API path.  list prints `none` when
 * empty; add prints "WHAT RANGE (id N): MEANING"; remove takes an id or a
 * range as typed (ctx->args[1]) */
int cli_range_list(struct cli_ctx *ctx, const char *base, const char *none);
int cli_range_add(struct cli_ctx *ctx, const char *base, const char *what, const char *meaning);
int cli_range_remove(struct cli_ctx *ctx, const char *base, const char *what);
/* cli_api_all - every item of a paged list (following next_cursor), or NULL */
json_t *cli_api_all(struct cli_ctx *ctx, const char *path);
/* cli_config_load - url and token: --url, then MOAT_URL/MOAT_TOKEN, then cli.conf */
int cli_config_load(struct cli_ctx *ctx, const char *url_opt);
/* cli_config_write - write url and token to cli.conf (0600) */
int cli_config_write(struct cli_ctx *ctx, const char *url, const char *token);

/* handlers */
int cli_domain_add(struct cli_ctx *ctx);
int cli_domain_list(struct cli_ctx *ctx);
int cli_domain_verify(struct cli_ctx *ctx);
int cli_domain_remove(struct cli_ctx *ctx);
int cli_route_set(struct cli_ctx *ctx);
/* cli_tls.c: moat tls policy add|list|show|remove|probe */
int cli_tls_policy(struct cli_ctx *ctx);
int cli_route_show(struct cli_ctx *ctx);
int cli_queue_list(struct cli_ctx *ctx);
int cli_queue_show(struct cli_ctx *ctx);
int cli_queue_retry(struct cli_ctx *ctx);
int cli_queue_delete(struct cli_ctx *ctx);
int cli_status(struct cli_ctx *ctx);
int cli_login(struct cli_ctx *ctx);
int cli_account_list(struct cli_ctx *ctx);
int cli_account_add(struct cli_ctx *ctx);
int cli_account_remove(struct cli_ctx *ctx);
int cli_account_role(struct cli_ctx *ctx);
int cli_token_list(struct cli_ctx *ctx);
int cli_token_create(struct cli_ctx *ctx);
int cli_token_revoke(struct cli_ctx *ctx);
int cli_audit(struct cli_ctx *ctx);
int cli_connect_list(struct cli_ctx *ctx);
int cli_connect_show(struct cli_ctx *ctx);
int cli_connect_check(struct cli_ctx *ctx);
int cli_connect_skip(struct cli_ctx *ctx);
int cli_connect_input(struct cli_ctx *ctx);
int cli_org_show(struct cli_ctx *ctx);
int cli_org_set(struct cli_ctx *ctx);
int cli_settings_list(struct cli_ctx *ctx);
int cli_settings_set(struct cli_ctx *ctx);
int cli_settings_reset(struct cli_ctx *ctx);
int cli_directory_show(struct cli_ctx *ctx);
int cli_directory_set(struct cli_ctx *ctx);
int cli_directory_test(struct cli_ctx *ctx);
int cli_directory_preview(struct cli_ctx *ctx);
int cli_directory_sync(struct cli_ctx *ctx);
int cli_user_list(struct cli_ctx *ctx);
int cli_user_show(struct cli_ctx *ctx);
int cli_user_add(struct cli_ctx *ctx);
int cli_user_remove(struct cli_ctx *ctx);
int cli_user_import(struct cli_ctx *ctx);
int cli_group_list(struct cli_ctx *ctx);
int cli_group_add(struct cli_ctx *ctx);
int cli_group_remove(struct cli_ctx *ctx);
int cli_group_members(struct cli_ctx *ctx);
int cli_rv_show(struct cli_ctx *ctx);
int cli_rv_set(struct cli_ctx *ctx);
int cli_dkim_keygen(struct cli_ctx *ctx);
int cli_dkim_list(struct cli_ctx *ctx);
int cli_dkim_record(struct cli_ctx *ctx);
int cli_dkim_activate(struct cli_ctx *ctx);
int cli_dkim_remove(struct cli_ctx *ctx);
int cli_outbound_host(struct cli_ctx *ctx);
int cli_outbound_account(struct cli_ctx *ctx);
int cli_tls_inbound(struct cli_ctx *ctx);
int cli_antispoof_bypass(struct cli_ctx *ctx);
int cli_antispoof_candidates(struct cli_ctx *ctx);

/* cli_dnsbl.c (issue 7) */
int cli_dnsbl_add(struct cli_ctx *ctx);
int cli_dnsbl_list(struct cli_ctx *ctx);
int cli_dnsbl_remove(struct cli_ctx *ctx);
/* cli_permitted.c: moat permitted add|list|remove|import, moat permitted user ADDRESS ... */
int cli_permitted_add(struct cli_ctx *ctx);
int cli_permitted_list(struct cli_ctx *ctx);
int cli_permitted_remove(struct cli_ctx *ctx);
int cli_permitted_import(struct cli_ctx *ctx);
int cli_permitted_user(struct cli_ctx *ctx);
/* issue 7: held mail, blocked senders, forwarding (cli_held.c) */
int cli_held_list(struct cli_ctx *ctx);
int cli_held_show(struct cli_ctx *ctx);
int cli_held_release(struct cli_ctx *ctx);
int cli_held_delete(struct cli_ctx *ctx);
int cli_blocked_add(struct cli_ctx *ctx);
int cli_blocked_list(struct cli_ctx *ctx);
int cli_blocked_remove(struct cli_ctx *ctx);
int cli_forward_add(struct cli_ctx *ctx);
int cli_forward_list(struct cli_ctx *ctx);
int cli_forward_remove(struct cli_ctx *ctx);
/* issue 8: the archive and the journal role (cli_archive.c, cli_journal.c) */
int cli_archive_search(struct cli_ctx *ctx);
int cli_archive_show(struct cli_ctx *ctx);
int cli_archive_export(struct cli_ctx *ctx);
int cli_archive_stats(struct cli_ctx *ctx);
int cli_archive_purge(struct cli_ctx *ctx);
int cli_archive_hold(struct cli_ctx *ctx);
int cli_journal_show(struct cli_ctx *ctx);
int cli_journal_set(struct cli_ctx *ctx);
int cli_journal_source(struct cli_ctx *ctx);
/* issue 11: backup and restore (cli_backup.c) */
int cli_backup(struct cli_ctx *ctx);
int cli_restore(struct cli_ctx *ctx);
/* issue 11: message tracking (cli_track.c) */
int cli_track(struct cli_ctx *ctx);
int cli_track_show(struct cli_ctx *ctx);

/* cli_write_man - the moat(1) manual page (roff) from the command table
 * and the global options (cli_man.c); -1 when a command or an option has
 * no help text (each named on stderr) */
int cli_write_man(FILE *out, const struct cli_command *cmds, size_t n,
                  const struct cli_option *globals);

/* issue 11 (cli_admin.c) */
int cli_metrics_token(struct cli_ctx *ctx);

#endif
