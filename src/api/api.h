/*
 * api.h - the HTTP API under /api/v1 (libmicrohttpd, jansson).
 *
 * One route table (api_routes.c) lists every route: method, path pattern,
 * the permission it needs (auth.h), and its handler.  The server checks the
 * permission in one place before any handler runs, so a route cannot exist
 * without one; a test walks the table with every role.
 *
 * Handlers run on the HTTP server's worker threads and may block (store,
 * later LDAP).  Anything owned by the event loop (the queue, the routing
 * snapshot) is reached through api_loop_call(), which runs a function on
 * the loop and waits for it.
 *
 * Errors have one shape: {"error": {"code": "...", "message": "...",
 * "field": "..."}}.  Lists take ?limit= (1..1000, default 100) and ?cursor=
 * and answer {"items": [...], "next_cursor": "..." | null}.
 */
#ifndef MOAT_API_H
#define MOAT_API_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>
#include "../core/core.h"
#include "../core/settings.h"
#include "../store/store.h"
#include "../auth/auth.h"

struct event_base;
struct api_server;
struct deliver;
struct spool;
struct connect;
struct directory_sync;
struct policy_antispoof;
struct archive;
struct store_archive;
struct tracking;

/* what moatd hands the API */
struct api_config {
    struct event_base *base;          /* the loop, for api_loop_call */
    /* read-only on the worker threads, except the runtime settings
     * (settings.h): the loop reads those, so they are read and written only
     * inside api_loop_call (GET and PATCH /api/v1/settings) */
    struct moat_settings *settings;
    struct auth *auth;
    struct deliver *deliver;          /* loop-owned: only inside api_loop_call */
    struct spool *spool;              /* loop-owned: only inside api_loop_call */
    /* load the changed configuration (routing snapshot, RCPT index) and
     * return once the SMTP side uses it; called on an API worker thread,
     * never on the loop (moatd supplies it) */
    int (*reload_config)(void *arg, struct error *err);
    void *reload_arg;
    /* the daemon's counters as JSON (GET /api/v1/status); runs on the loop */
    json_t *(*status_json)(void *arg);
    void *status_arg;
    /* Connect (thread-safe; called on the worker threads); NULL answers 503 */
    struct connect *connect;
    /* the directory's LDAP sync runner (thread-safe); NULL answers 503 */
    struct directory_sync *directory_sync;
    /* anti-spoofing's loop state (candidates): only inside api_loop_call; NULL = none */
    struct policy_antispoof *antispoof;
    /* issue 8: the archive engine (its counters, GET /api/v1/archive/stats):
     * only inside api_loop_call; NULL = archiving off or not started */
    struct archive *archive;
    /* issue 11: the tracking engine (thread-safe): tracking_path() for the
     * readers' own store handles, tracking_flush(); NULL = tracking off */
    struct tracking *tracking;
    /* issue 11: the settings file moatd read (GET /api/v1/backup); NULL = none */
    const char *config_path;
    /* issue 11: called on the loop after runtime settings changed through the
     * API, so moatd hands them to threads that keep their own copy (the
     * tracking engine); NULL = none */
    void (*settings_changed)(void *arg);
    void *settings_changed_arg;
};

#define API_MAX_PATH_PARAMS 4

struct api_request {
    const char *method;               /* "GET", "POST", "PUT", "PATCH", "DELETE" */
    const char *path;
    const char *params[API_MAX_PATH_PARAMS];   /* {name} segments, in order, decoded */
    int n_params;
    json_t *body;                     /* parsed JSON object, or NULL when no body */
    const char *text;                 /* a text/csv body (routes that take one, see
                                       * api_route_takes_csv), else NULL; not NUL-terminated */
    size_t text_len;
    const struct auth_principal *who;
    const char *client_ip;
    bool https;                       /* the connection is TLS: cookies get Secure */
    struct store *store;              /* this worker thread's handle */
    const struct api_config *cfg;
    void *conn;                       /* private: the MHD connection (query arguments) */
};

struct api_response {
    int status;                       /* 200 when left 0 and body set */
    json_t *body;                     /* owned by the response */
    char set_cookie[512];             /* "" = none */
    int64_t retry_after;              /* seconds; 0 = no header */
    /* issue 8: a body that is not JSON (a .eml, an mbox export).  With
     * content_type set the body is raw[0..raw_len) (owned, freed with the
     * response), or, when stream is set, what stream(stream_arg, dst, max)
     * writes each time it is called (> 0 octets written, 0 at the end, -1
     * to abort the connection), on this worker thread; stream_free(arg)
     * runs once the response is done, on any thread */
    const char *content_type;         /* static text, e.g. "message/rfc822" */
    char disposition[256];            /* Content-Disposition; "" = none */
    char *raw;
    size_t raw_len;
    long (*stream)(void *arg, char *dst, size_t max);
    void (*stream_free)(void *arg);
    void *stream_arg;
};

typedef void (*api_handler)(struct api_request *req, struct api_response *resp);

/* api_query - a query-string argument, or NULL */
const char *api_query(const struct api_request *req, const char *name);
/* api_error - fill resp with the one error shape; field may be NULL */
void api_error(struct api_response *resp, int status, const char *code, const char *field,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* api_error_from - 400/404/409/500 from a struct error (field -> 400 unless told) */
void api_error_from(struct api_response *resp, int status, const char *code, const struct error *err);
/* api_store_fail - a store status as the one error shape: STORE_NOT_FOUND
 * 404, STORE_CONFLICT 409, bad input (err->field set) 400, else 500 */
void api_store_fail(struct api_response *resp, int rc, const struct error *err);
/* api_opt_string - body member name as a string (NULL when absent or
 * null); -1 after answering 400 when it is not a string */
int api_opt_string(struct api_request *req, struct api_response *resp, const char *name,
                   const char **out);
/* api_time_json - unix seconds as ISO 8601 text; null for 0 (never) */
json_t *api_time_json(int64_t t);
/* api_body_check - strict bodies: every member must be in allowed (NULL-terminated)
 * and those in required present; otherwise a 400 naming the field.  0 = ok */
int api_body_check(const struct api_request *req, struct api_response *resp,
                   const char *const *allowed, const char *const *required);
/* api_page - parse ?limit= and ?cursor=; 0 = ok, else resp holds a 400 */
int api_page(const struct api_request *req, struct api_response *resp, size_t *limit,
             const char **cursor);
/* api_loop_call - run fn(arg) on the event loop and wait for it to return */
void api_loop_call(const struct api_config *cfg, void (*fn)(void *arg), void *arg);
/* api_reload - after a change: the SMTP side uses it when this returns; a
 * failure is logged, the change stays */
void api_reload(const struct api_request *req);
/* api_archive_store - this worker thread's handle of the archive database
 * (settings archive_database, "" = STATE/archive.db), opened on first use;
 * NULL with err when it cannot be opened */
struct store_archive *api_archive_store(const struct api_request *req, struct error *err);
/* api_tracking_store - this worker thread's handle of the tracking database
 * (tracking_path of cfg->tracking), opened on first use; NULL with err when
 * tracking is off or the file cannot be opened (issue 11) */
struct store_tracking;
struct store_tracking *api_tracking_store(const struct api_request *req, struct error *err);
/* api_audit - shortcut: auth_audit with the request's principal and address */
void api_audit(const struct api_request *req, const char *action, const char *target,
               json_t *before, json_t *after);

/* the server: create binds every settings->http_listen address (before the
 * privilege drop; refuses plain HTTP on a non-loopback address unless
 * http_allow_plain is set); start begins serving (after it).  cfg must stay
 * valid until api_server_start, which copies it again (so deliver and spool,
 * created after the drop, may be filled in between). */
struct api_server *api_server_create(const struct api_config *cfg, struct error *err);
int api_server_start(struct api_server *s, struct error *err);
void api_server_free(struct api_server *s);

/* the route table, for the server, the OpenAPI test and --list-routes */
struct api_route {
    const char *method;
    const char *pattern;              /* "/api/v1/domains/{name}" */
    enum auth_perm perm;
    api_handler handler;
    bool audited;                     /* a change: the handler writes an audit entry */
};
extern const struct api_route api_routes[];
extern const size_t api_routes_count;
/* api_route_takes_csv - the route accepts a text/csv body (the CSV import) */
bool api_route_takes_csv(const struct api_route *r);

#endif
