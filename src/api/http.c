/*
 * http.c - the HTTP server of api.h (libmicrohttpd): listeners, the request
 * path every route shares, and the helpers handlers use.
 *
 * Entry points: api_server_create (binds, before the privilege drop),
 * api_server_start (serves, after it), api_server_free; for handlers
 * api_query, api_error, api_error_from, api_body_check, api_page,
 * api_loop_call, api_audit; for tests api_parse_body and api_route_find.
 *
 * One request, in this order (each step answers with the one error shape):
 *   body bound (above http_max_body -> 413) -> route (404, or 405 with Allow) -> credentials (bearer
 *   token, else the moat_session cookie; 401) -> the route's permission
 *   through auth_role_allows (403 forbidden) -> a forced password change
 *   (403 password_change_required unless the route is me/password/logout)
 *   -> CSRF for cookie-authenticated changes (403 csrf) -> strict JSON body
 *   (415, 400 invalid_json / invalid_body; routes that take text/csv get
 *   such a body as text, api_route_takes_csv) -> the handler.
 * Authentication comes before the body is parsed, so an anonymous caller
 * learns nothing from the parser.
 *
 * Threads: libmicrohttpd runs a pool of http_threads workers per listener.
 * Each worker opens its own store handle on first use (a store handle
 * belongs to one thread) and closes it when the thread ends; likewise its
 * archive database handle (api_archive_store, issue 8) and its tracking
 * database handle (api_tracking_store, issue 11).  Loop-owned
 * objects are reached only through api_loop_call.
 *
 * Answers are JSON, except where a handler sets content_type (issue 8: a
 * .eml, an mbox export): then its raw octets, or its stream, which
 * libmicrohttpd pulls block by block (chunked) so that an export of many
 * messages holds one message in memory at a time.
 *
 * Ownership: struct api_server owns the listening sockets (until MHD takes
 * them over in api_server_start), the daemons and the PEM texts; struct
 * api_conn (one request) owns its body and is freed in api_on_completed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <event2/event.h>
#include <microhttpd.h>
#include <sodium.h>
#include "api_priv.h"
#include "api_auth.h"
#include "../store/store_archive.h"
#include "../store/store_tracking.h"
#include "../track/tracking.h"

#define API_SESSION_COOKIE "moat_session"
#define API_CSRF_HEADER "X-CSRF-Token"
#define API_SERVER_MAGIC 0x4d4f4154u        /* "MOAT": api_loop_call sanity check */
#define API_CONNECTION_LIMIT 256u
#define API_PER_IP_CONNECTION_LIMIT 64u
#define API_CONNECTION_TIMEOUT_S 30u
#define API_MAX_PEM (1024 * 1024)           /* a certificate chain or key file */
#define API_MAX_CURSOR 256
#define API_DEFAULT_LIMIT 100
#define API_MAX_LIMIT 1000
/* TLS 1.2 and 1.3 only (GnuTLS priority syntax: libmicrohttpd uses GnuTLS) */
#define API_TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

struct api_server {
    struct api_config cfg;            /* first: handlers get &cfg (see api_loop_call) */
    uint32_t magic;
    const struct api_config *given;   /* the caller's, copied again at start */
    int fd[SETTINGS_MAX_LISTEN];      /* bound sockets; -1 once MHD owns them */
    char *addr[SETTINGS_MAX_LISTEN];
    bool v6[SETTINGS_MAX_LISTEN];
    int n;
    struct MHD_Daemon *mhd[SETTINGS_MAX_LISTEN];
    bool https;
    char *cert_pem, *key_pem;
    pthread_key_t store_key;          /* each worker thread's store handle */
    bool have_key;
    pthread_key_t archive_key;        /* ... and archive database handle (issue 8) */
    bool have_archive_key;
    pthread_key_t tracking_key;       /* ... and tracking database handle (issue 11) */
    bool have_tracking_key;
    pthread_mutex_t lock;             /* loop calls */
    pthread_cond_t cond;
    bool stopping;
};

/* one request: libmicrohttpd's per-request pointer */
struct api_conn {
    struct buf body;
    uint64_t t0;
    bool too_big;                     /* over http_max_body: drained, then 413 */
    size_t drained;
    bool answered;                    /* a response was queued before the body */
};

/* --- small helpers --- */

static struct api_server *server_of(const struct api_config *cfg)
{
    struct api_server *s = (struct api_server *)(void *)cfg;   /* cfg is the first member */
    if (s->magic != API_SERVER_MAGIC)
        log_fatal("event=bug reason=\"api_loop_call needs req->cfg\"");
    return s;
}

static bool method_is(const char *m, const char *want)
{
    return strcmp(m, want) == 0;
}

static bool method_changes(const char *m)
{
    return method_is(m, "POST") || method_is(m, "PUT") || method_is(m, "PATCH") ||
           method_is(m, "DELETE");
}

/* log_value - a log value as is when it is plain, quoted otherwise */
static const char *log_value(char *dst, size_t size, const char *s)
{
    if (s == NULL || *s == '\0')
        return "-";
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("._/@:{}%+-", c) != NULL))
            return log_quote(dst, size, s);
    }
    if (str_copy(dst, size, s) < 0)
        return log_quote(dst, size, s);
    return dst;
}

void api_response_reset(struct api_response *resp)
{
    json_decref(resp->body);
    free(resp->raw);
    if (resp->stream_free != NULL)
        resp->stream_free(resp->stream_arg);
    memset(resp, 0, sizeof *resp);
}

/* --- the helpers of api.h --- */

const char *api_query(const struct api_request *req, const char *name)
{
    if (req->conn == NULL)
        return NULL;
    return MHD_lookup_connection_value((struct MHD_Connection *)req->conn,
                                       MHD_GET_ARGUMENT_KIND, name);
}

void api_error(struct api_response *resp, int status, const char *code, const char *field,
               const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_decref(resp->body);
    json_t *e = json_pack("{s:s, s:s}", "code", code, "message", msg);
    if (e == NULL)   /* msg was not UTF-8: never let an error path fail */
        e = json_pack("{s:s, s:s}", "code", code, "message", "invalid request");
    if (field != NULL && field[0] != '\0') {
        json_t *f = json_string(field);
        json_object_set_new(e, "field", f ? f : json_string("?"));
    }
    resp->body = json_pack("{s:o}", "error", e);
    resp->status = status;
}

void api_error_from(struct api_response *resp, int status, const char *code,
                    const struct error *err)
{
    if (status == 0)
        status = err->field[0] ? 400 : 500;
    api_error(resp, status, code, err->field[0] ? err->field : NULL, "%s", err->msg);
}

void api_store_fail(struct api_response *resp, int rc, const struct error *err)
{
    if (rc == STORE_NOT_FOUND)
        api_error_from(resp, 404, "not_found", err);
    else if (rc == STORE_CONFLICT)
        api_error_from(resp, 409, "conflict", err);
    else if (err->field[0] != '\0')
        api_error_from(resp, 400, "invalid_field", err);
    else
        api_error_from(resp, 500, "store_error", err);
}

int api_opt_string(struct api_request *req, struct api_response *resp, const char *name,
                   const char **out)
{
    json_t *v = req->body ? json_object_get(req->body, name) : NULL;
    *out = NULL;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v)) {
        api_error(resp, 400, "invalid_field", name, "%s must be a string", name);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

json_t *api_time_json(int64_t t)
{
    char buf[40];
    if (t <= 0)
        return json_null();
    time_iso8601(buf, sizeof buf, (time_t)t);
    return json_string(buf);
}

int api_body_check(const struct api_request *req, struct api_response *resp,
                   const char *const *allowed, const char *const *required)
{
    const char *key;
    json_t *v;

    if (req->body != NULL) {
        json_object_foreach(req->body, key, v) {
            bool ok = false;
            for (const char *const *a = allowed; a && *a && !ok; a++)
                ok = strcmp(*a, key) == 0;
            if (!ok) {
                char shown[80];
                api_error(resp, 400, "unknown_field", key, "unknown field %s",
                          log_quote(shown, sizeof shown, key));
                return -1;
            }
        }
    }
    for (const char *const *r = required; r && *r; r++) {
        if (req->body == NULL || json_object_get(req->body, *r) == NULL) {
            api_error(resp, 400, "missing_field", *r, "the field %s is required", *r);
            return -1;
        }
    }
    return 0;
}

int api_page(const struct api_request *req, struct api_response *resp, size_t *limit,
             const char **cursor)
{
    const char *l = api_query(req, "limit");
    const char *c = api_query(req, "cursor");

    *limit = API_DEFAULT_LIMIT;
    if (l != NULL) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(l, &end, 10);
        if (l[0] < '0' || l[0] > '9' || *end != '\0' || errno != 0 || v < 1 ||
            v > API_MAX_LIMIT) {
            api_error(resp, 400, "invalid_parameter", "limit",
                      "limit must be a whole number from 1 to %d", API_MAX_LIMIT);
            return -1;
        }
        *limit = (size_t)v;
    }
    *cursor = NULL;
    if (c != NULL && c[0] != '\0') {
        if (strlen(c) > API_MAX_CURSOR || !str_valid_utf8(c, strlen(c))) {
            api_error(resp, 400, "invalid_parameter", "cursor",
                      "cursor must be the next_cursor of the previous page");
            return -1;
        }
        *cursor = c;
    }
    return 0;
}

/* --- loop calls --- */

struct api_loop_job {
    struct api_server *s;
    void (*fn)(void *arg);
    void *arg;
    bool running, done, abandoned;
};

static void api_loop_run(evutil_socket_t fd, short what, void *p)
{
    struct api_loop_job *job = p;
    struct api_server *s = job->s;

    pthread_mutex_lock(&s->lock);
    if (job->abandoned) {
        pthread_mutex_unlock(&s->lock);
        free(job);
        return;
    }
    job->running = true;
    pthread_mutex_unlock(&s->lock);
    job->fn(job->arg);
    pthread_mutex_lock(&s->lock);
    job->done = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

/* api_loop_call - run fn(arg) on the loop and wait.  When the server stops
 * (the loop may already be gone) a call that has not started is abandoned:
 * fn then never runs, so callers keep a "done" flag of their own. */
void api_loop_call(const struct api_config *cfg, void (*fn)(void *arg), void *arg)
{
    struct api_server *s = server_of(cfg);
    struct api_loop_job *job = xcalloc(1, sizeof *job);
    static const struct timeval now = { 0, 0 };

    job->s = s;
    job->fn = fn;
    job->arg = arg;
    pthread_mutex_lock(&s->lock);
    bool stopping = s->stopping;
    pthread_mutex_unlock(&s->lock);
    if (stopping || event_base_once(cfg->base, -1, EV_TIMEOUT, api_loop_run, job, &now) < 0) {
        free(job);
        return;
    }
    pthread_mutex_lock(&s->lock);
    while (!job->done && !(s->stopping && !job->running))
        pthread_cond_wait(&s->cond, &s->lock);
    if (job->done) {
        pthread_mutex_unlock(&s->lock);
        free(job);
        return;
    }
    job->abandoned = true;   /* api_loop_run frees it if the loop ever runs it */
    pthread_mutex_unlock(&s->lock);
}

void api_reload(const struct api_request *req)
{
    struct error err = {0};
    if (req->cfg->reload_config == NULL)
        return;
    if (req->cfg->reload_config(req->cfg->reload_arg, &err) < 0)
        log_warn("event=config_reload_after_api_failed reason=\"%s\"", err.msg);
}

void api_audit(const struct api_request *req, const char *action, const char *target,
               json_t *before, json_t *after)
{
    if (req->store == NULL || req->who == NULL)
        return;
    if (auth_audit(req->store, req->who, req->client_ip, action, target, before, after) < 0)
        log_error("event=audit_failed action=%s", action);
}

/* --- body parsing --- */

/* content_type_json - "application/json", optionally "; charset=utf-8" */
static bool content_type_json(const char *ct)
{
    static const char want[] = "application/json";
    if (ct == NULL || strncasecmp(ct, want, sizeof want - 1) != 0)
        return false;
    const char *p = ct + sizeof want - 1;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '\0')
        return true;
    if (*p != ';')
        return false;
    p++;
    while (*p == ' ' || *p == '\t')
        p++;
    /* JSON is UTF-8 (RFC 8259 8.1): no other charset */
    return strncasecmp(p, "charset=utf-8", 13) == 0 && p[13 + strspn(p + 13, " \t")] == '\0';
}

/* content_type_csv - "text/csv", with parameters (charset, header) or not */
static bool content_type_csv(const char *ct)
{
    static const char want[] = "text/csv";
    if (ct == NULL || strncasecmp(ct, want, sizeof want - 1) != 0)
        return false;
    const char *p = ct + sizeof want - 1;
    while (*p == ' ' || *p == '\t')
        p++;
    return *p == '\0' || *p == ';';
}

int api_parse_body(const char *data, size_t len, const char *content_type, json_t **out,
                   struct api_response *resp)
{
    json_error_t jerr;

    *out = NULL;
    if (len == 0)
        return 0;
    if (!content_type_json(content_type)) {
        api_error(resp, 415, "unsupported_media_type", "Content-Type",
                  "a request body must be application/json");
        return -1;
    }
    json_t *v = json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (v == NULL) {
        char text[JSON_ERROR_TEXT_LENGTH + 2];
        /* the parser's text may quote the input: keep it printable */
        size_t i = 0;
        for (const char *p = jerr.text; *p && i + 1 < sizeof text; p++)
            text[i++] = ((unsigned char)*p < 0x20 || *p == 0x7f) ? '?' : *p;
        text[i] = '\0';
        api_error(resp, 400, "invalid_json", "body",
                  "invalid JSON at line %d, column %d (octet %d): %s", jerr.line, jerr.column,
                  jerr.position, text);
        return -1;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        api_error(resp, 400, "invalid_body", "body", "the request body must be a JSON object");
        return -1;
    }
    *out = v;
    return 0;
}

/* --- route matching --- */

const struct api_route *api_route_find(const char *method, const char *path, char *scratch,
                                       const char *params[API_MAX_PATH_PARAMS], int *n_params,
                                       bool *path_known, char *allow, size_t allow_size)
{
    const struct api_route *found = NULL;
    size_t plen = strlen(path);

    *path_known = false;
    *n_params = 0;
    if (allow_size)
        allow[0] = '\0';
    for (size_t i = 0; i < api_routes_count; i++) {
        const struct api_route *r = &api_routes[i];
        const char *pp = r->pattern, *up = path;
        char *sp = scratch;
        const char *got[API_MAX_PATH_PARAMS];
        int ng = 0;
        bool ok = true;

        /* segment by segment; "{x}" matches one non-empty segment */
        while (ok && *pp && *up) {
            if (*pp != '/' || *up != '/') {
                ok = false;
                break;
            }
            pp++;
            up++;
            size_t ul = strcspn(up, "/"), pl = strcspn(pp, "/");
            if (pp[0] == '{') {
                if (ul == 0 || ng == API_MAX_PATH_PARAMS) {
                    ok = false;
                    break;
                }
                if (!found) {   /* params are taken from the route that wins */
                    memcpy(sp, up, ul);
                    sp[ul] = '\0';
                    got[ng] = sp;
                    sp += ul + 1;
                }
                ng++;
            } else if (ul != pl || memcmp(pp, up, ul) != 0) {
                ok = false;
                break;
            }
            pp += pl;
            up += ul;
        }
        if (!ok || *pp || *up)
            continue;
        *path_known = true;
        if (allow_size && strstr(allow, r->method) == NULL) {
            size_t al = strlen(allow);
            xsnprintf(allow + al, allow_size - al, "%s%s", al ? ", " : "", r->method);
        }
        if (!found && strcmp(r->method, method) == 0) {
            found = r;
            for (int k = 0; k < ng; k++)
                params[k] = got[k];
            *n_params = ng;
        }
    }
    (void)plen;
    return found;
}

/* --- the per-thread store --- */

static void store_key_destroy(void *p)
{
    store_close(p);
}

static struct store *thread_store(struct api_server *s)
{
    struct store *st = pthread_getspecific(s->store_key);
    if (st != NULL)
        return st;
    struct error err = {0};
    st = store_open(s->cfg.settings->database, &err);
    if (st == NULL) {
        log_error("event=http_store_open_failed reason=\"%s\"", err.msg);
        return NULL;
    }
    pthread_setspecific(s->store_key, st);
    return st;
}

/* --- the per-thread archive database (issue 8) --- */

static void archive_key_destroy(void *p)
{
    store_archive_close(p);
}

struct store_archive *api_archive_store(const struct api_request *req, struct error *err)
{
    struct api_server *s = server_of(req->cfg);
    const struct moat_settings *set = s->cfg.settings;
    struct store_archive *sa = pthread_getspecific(s->archive_key);
    if (sa != NULL)
        return sa;
    char *path = set->archive_database != NULL && set->archive_database[0] != '\0'
                     ? xstrdup(set->archive_database)
                     : xasprintf("%s/archive.db", set->state_dir);
    sa = store_archive_open(path, err);
    if (sa == NULL)
        log_error("event=http_archive_open_failed path=%s reason=\"%s\"", path, err->msg);
    else
        pthread_setspecific(s->archive_key, sa);
    free(path);
    return sa;
}

/* --- the per-thread tracking database (issue 11) --- */

static void tracking_key_destroy(void *p)
{
    store_tracking_close(p);
}

struct store_tracking *api_tracking_store(const struct api_request *req, struct error *err)
{
    struct api_server *s = server_of(req->cfg);
    struct store_tracking *st = pthread_getspecific(s->tracking_key);
    if (st != NULL)
        return st;
    if (req->cfg->tracking == NULL) {
        error_set(err, "tracking", "message tracking is off (setting tracking = no)");
        return NULL;
    }
    const char *path = tracking_path(req->cfg->tracking);
    st = store_tracking_open(path, err);
    if (st == NULL)
        log_error("event=http_tracking_open_failed path=%s reason=\"%s\"", path, err->msg);
    else
        pthread_setspecific(s->tracking_key, st);
    return st;
}

/* --- answering --- */

/* stream_read - libmicrohttpd's reader over a handler's stream */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct api_response *r = cls;
    (void)pos;
    long n = r->stream(r->stream_arg, buf, max);
    if (n > 0)
        return (ssize_t)n;
    return n == 0 ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void stream_done(void *cls)
{
    struct api_response *r = cls;
    if (r->stream_free != NULL)
        r->stream_free(r->stream_arg);
    free(r);
}

/* raw_response - a body that is not JSON: the octets, or the stream (handed
 * over to libmicrohttpd: resp no longer owns them) */
static struct MHD_Response *raw_response(struct api_response *resp)
{
    struct MHD_Response *r;
    if (resp->stream != NULL) {
        struct api_response *keep = xcalloc(1, sizeof *keep);
        keep->stream = resp->stream;
        keep->stream_free = resp->stream_free;
        keep->stream_arg = resp->stream_arg;
        resp->stream_free = NULL;
        resp->stream_arg = NULL;
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, stream_read, keep,
                                              stream_done);
        if (r == NULL)
            stream_done(keep);
        return r;
    }
    if (resp->raw_len == 0)
        return MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    r = MHD_create_response_from_buffer(resp->raw_len, resp->raw, MHD_RESPMEM_MUST_FREE);
    if (r != NULL)
        resp->raw = NULL;   /* MHD frees it */
    return r;
}

static void client_ip(struct MHD_Connection *conn, char *dst, size_t size)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    str_copy(dst, size, "-");
    if (ci == NULL || ci->client_addr == NULL)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, dst,
                  (socklen_t)size);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, dst,
                  (socklen_t)size);
}

/* api_send - queue resp with the common headers and log the request */
static enum MHD_Result api_send(struct MHD_Connection *conn, struct api_response *resp,
                                const char *method, const char *url, const char *account,
                                const char *ip, uint64_t t0, const char *allow)
{
    struct buf b;
    buf_init(&b);
    bool raw = resp->content_type != NULL && resp->body == NULL;
    if (resp->status == 0)
        resp->status = resp->body || raw ? 200 : 204;
    if (resp->body != NULL && resp->status != 204) {
        char *text = json_dumps(resp->body, JSON_COMPACT);
        if (text != NULL) {
            buf_append_str(&b, text);
            buf_append_str(&b, "\n");
            free(text);
        }
    }
    struct MHD_Response *r;
    if (raw) {
        r = raw_response(resp);
    } else if (b.len > 0) {
        r = MHD_create_response_from_buffer(b.len, b.data, MHD_RESPMEM_MUST_FREE);
        b.data = NULL;   /* MHD frees it */
    } else {
        r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    }
    buf_free(&b);
    if (r == NULL) {
        api_response_reset(resp);
        return MHD_NO;
    }
    if (resp->body != NULL && resp->status != 204)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (raw) {
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, resp->content_type);
        if (resp->disposition[0] != '\0')
            MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_DISPOSITION, resp->disposition);
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    if (resp->set_cookie[0] != '\0')
        MHD_add_response_header(r, MHD_HTTP_HEADER_SET_COOKIE, resp->set_cookie);
    if (resp->retry_after > 0) {
        char ra[32];
        xsnprintf(ra, sizeof ra, "%" PRId64, resp->retry_after);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (resp->status == 405 && allow != NULL && allow[0] != '\0')
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    if (resp->status == 401)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"moat\"");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)resp->status, r);
    MHD_destroy_response(r);

    char mv[32], pv[300], av[160];
    log_info("event=http method=%s path=%s status=%d account=%s client=%s ms=%" PRIu64,
             log_value(mv, sizeof mv, method), log_value(pv, sizeof pv, url), resp->status,
             log_value(av, sizeof av, account), ip, time_mono_ms() - t0);
    api_response_reset(resp);
    return ret;
}

/* authenticate - bearer token, else session cookie: 1 signed in, 0 no
 * credentials, -1 credentials presented but not valid */
static int authenticate(struct api_server *s, struct MHD_Connection *conn, struct store *st,
                        struct auth_principal *who)
{
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_AUTHORIZATION);
    if (h != NULL) {
        if (strncasecmp(h, "Bearer ", 7) != 0)
            return -1;
        h += 7;
        while (*h == ' ')
            h++;
        if (s->cfg.auth == NULL || st == NULL || auth_token_check(s->cfg.auth, st, h, who) < 0)
            return -1;
        who->via_token = true;
        return 1;
    }
    const char *c = MHD_lookup_connection_value(conn, MHD_COOKIE_KIND, API_SESSION_COOKIE);
    if (c != NULL && c[0] != '\0') {
        if (s->cfg.auth == NULL || st == NULL || auth_session_check(s->cfg.auth, st, c, who) < 0)
            return -1;
        who->via_token = false;
        return 1;
    }
    return 0;
}

/* password_change_route - what a principal who must change its password may call */
static bool password_change_route(const struct api_route *r)
{
    return r->perm == AUTH_PERM_PUBLIC || r->handler == api_auth_me ||
           r->handler == api_auth_password || r->handler == api_auth_logout;
}

static bool csrf_ok(struct MHD_Connection *conn, const struct auth_principal *who)
{
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, API_CSRF_HEADER);
    size_t n = strlen(who->csrf);
    if (h == NULL || n == 0 || strlen(h) != n)
        return false;
    return sodium_memcmp(h, who->csrf, n) == 0;
}

/* api_serve - the request path of the file comment, once the body is in */
static enum MHD_Result api_serve(struct api_server *s, struct MHD_Connection *conn,
                                 const char *url, const char *method, struct api_conn *c)
{
    struct api_request req;
    struct api_response resp;
    struct auth_principal who;
    char ip[INET6_ADDRSTRLEN + 1], allow[64];
    const char *account = NULL;
    bool known;

    memset(&req, 0, sizeof req);
    memset(&resp, 0, sizeof resp);
    memset(&who, 0, sizeof who);
    client_ip(conn, ip, sizeof ip);
    const char *match = method_is(method, "HEAD") ? "GET" : method;
    char *scratch = xmalloc(strlen(url) + 1);
    const struct api_route *route = api_route_find(match, url, scratch, req.params,
                                                   &req.n_params, &known, allow, sizeof allow);
    if (route == NULL) {
        if (known)
            api_error(&resp, 405, "method_not_allowed", NULL, "%s is not allowed here; allowed: %s",
                      method, allow);
        else
            api_error(&resp, 404, "not_found", NULL, "no such resource");
        goto send;
    }
    if (c->too_big) {
        api_error(&resp, 413, "body_too_large", "body", "the request body is larger than %" PRId64
                  " octets (http_max_body)", s->cfg.settings->http_max_body);
        goto send;
    }
    req.method = method;
    req.path = url;
    req.client_ip = ip;
    req.https = s->https;
    req.cfg = &s->cfg;
    req.conn = conn;
    req.store = thread_store(s);
    if (req.store == NULL) {
        api_error(&resp, 503, "store_unavailable", NULL, "the database cannot be opened");
        goto send;
    }
    int a = authenticate(s, conn, req.store, &who);
    if (a > 0)
        account = who.name;
    if (route->perm != AUTH_PERM_PUBLIC) {
        if (a <= 0) {
            api_error(&resp, 401, "unauthorized", NULL, a < 0
                      ? "the credentials are not valid (expired, revoked or unknown); sign in again"
                      : "sign in first: a session cookie or an Authorization: Bearer token");
            goto send;
        }
        if (!auth_role_allows(who.role, route->perm)) {
            api_error(&resp, 403, "forbidden", NULL, "the role %s may not do this (needs %s)",
                      auth_role_name(who.role), auth_perm_name(route->perm));
            goto send;
        }
        if (who.must_change_password && !password_change_route(route)) {
            api_error(&resp, 403, "password_change_required", "password",
                      "change your password first (POST /api/v1/auth/password)");
            goto send;
        }
        if (!who.via_token && method_changes(method) && !csrf_ok(conn, &who)) {
            api_error(&resp, 403, "csrf", API_CSRF_HEADER,
                      "a change made with a session cookie needs the X-CSRF-Token header "
                      "of the session");
            goto send;
        }
        req.who = &who;
    } else {
        /* public routes see a valid principal (logout-less re-login) but never need one */
        req.who = a > 0 ? &who : NULL;
    }
    if (c->body.len > 0) {
        if (method_is(method, "GET") || method_is(method, "HEAD") || method_is(method, "DELETE")) {
            api_error(&resp, 400, "invalid_body", "body", "a %s request takes no body", method);
            goto send;
        }
        const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_TYPE);
        if (api_route_takes_csv(route) && content_type_csv(ct)) {
            /* the CSV import: the handler parses the text itself */
            req.text = c->body.data;
            req.text_len = c->body.len;
        } else if (api_parse_body(c->body.data, c->body.len, ct, &req.body, &resp) < 0) {
            goto send;
        }
    }
    route->handler(&req, &resp);
    /* a handler may have signed the caller in or out: log who it is now */
    if (req.who != NULL && req.who->name[0] != '\0')
        account = req.who->name;
send:;
    enum MHD_Result ret = api_send(conn, &resp, method, url, account, ip, c->t0, allow);
    json_decref(req.body);
    sodium_memzero(&who, sizeof who);
    free(scratch);
    return ret;
}

/* drain_cap - how much of an oversized body is read and dropped before the
 * 413 (see api_on_request); beyond it the connection is closed */
static size_t drain_cap(size_t max)
{
    size_t cap = 8u * 1024 * 1024;
    return max > cap / 4 ? max * 4 : cap;
}

/* early_answer - an error before the body is read (413) */
static enum MHD_Result early_answer(struct MHD_Connection *conn, struct api_conn *c,
                                    const char *method, const char *url, int status,
                                    const char *code, const char *msg)
{
    struct api_response resp;
    char ip[INET6_ADDRSTRLEN + 1];

    memset(&resp, 0, sizeof resp);
    client_ip(conn, ip, sizeof ip);
    api_error(&resp, status, code, "body", "%s", msg);
    c->answered = true;
    return api_send(conn, &resp, method, url, NULL, ip, c->t0, NULL);
}

static enum MHD_Result api_on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_size,
                                      void **state)
{
    struct api_server *s = cls;
    struct api_conn *c = *state;
    size_t max = (size_t)s->cfg.settings->http_max_body;

    if (c == NULL) {
        c = xcalloc(1, sizeof *c);
        buf_init(&c->body);
        c->t0 = time_mono_ms();
        *state = c;
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        const char *ex = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_EXPECT);
        if (cl != NULL) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(cl, &end, 10);
            if (errno != 0 || *end != '\0' || v > max) {
                /* a client that waits for "100 Continue", or one that would send
                 * more than we care to drain, gets the answer now (and the
                 * connection closes); others are drained first, so that a
                 * client that writes its whole body before reading sees the 413
                 * rather than a reset connection */
                if (ex != NULL || errno != 0 || *end != '\0' || v > drain_cap(max)) {
                    char msg[128];
                    xsnprintf(msg, sizeof msg, "the request body is larger than %zu octets "
                              "(http_max_body)", max);
                    return early_answer(conn, c, method, url, 413, "body_too_large", msg);
                }
                c->too_big = true;
            }
        }
        return MHD_YES;
    }
    if (*upload_size > 0) {
        if (!c->answered) {
            if (!c->too_big && c->body.len + *upload_size > max) {
                c->too_big = true;
                c->drained = c->body.len;
                buf_free(&c->body);
            }
            if (c->too_big) {
                c->drained += *upload_size;
                if (c->drained > drain_cap(max))
                    return MHD_NO;   /* a chunked body without end: close */
            } else {
                buf_append(&c->body, upload_data, *upload_size);
            }
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (c->answered)
        return MHD_YES;
    return api_serve(s, conn, url, method, c);
}

static void api_on_completed(void *cls, struct MHD_Connection *conn, void **state,
                             enum MHD_RequestTerminationCode toe)
{
    struct api_conn *c = *state;
    if (c == NULL)
        return;
    buf_free(&c->body);
    free(c);
    *state = NULL;
}

static void api_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512], q[540];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_warn("event=http_server_error reason=%s", log_quote(q, sizeof q, msg));
}

/* --- listeners --- */

/* read_pem - a PEM file into a string; the key must be private to its owner */
static char *read_pem(const char *path, const char *field, bool secret, struct error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0) {
        error_set(err, field, "%s: %s: %s", field, path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    if (!S_ISREG(sb.st_mode) || sb.st_size <= 0 || sb.st_size > API_MAX_PEM) {
        error_set(err, field, "%s: %s is not a PEM file of at most %d octets", field, path,
                  API_MAX_PEM);
        close(fd);
        return NULL;
    }
    if (secret && (sb.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        error_set(err, field, "%s: %s is accessible by group or others (mode %04o); chmod 600 it",
                  field, path, (unsigned)(sb.st_mode & 07777));
        close(fd);
        return NULL;
    }
    char *text = xmalloc((size_t)sb.st_size + 1);
    size_t got = 0;
    while (got < (size_t)sb.st_size) {
        ssize_t r = read(fd, text + got, (size_t)sb.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    text[got] = '\0';
    if (got != (size_t)sb.st_size || strstr(text, "-----BEGIN ") == NULL) {
        error_set(err, field, "%s: %s is not a PEM file", field, path);
        sodium_memzero(text, got);
        free(text);
        return NULL;
    }
    return text;
}

static bool is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)ss;
        return (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
    }
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)ss;
    return IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr);
}

/* bind_one - a listening socket for "ADDR:PORT" (an IP literal) */
static int bind_one(struct api_server *s, const char *spec, struct error *err)
{
    char *host = NULL;
    int port = 0;
    struct sockaddr_storage ss;
    socklen_t sl;

    memset(&ss, 0, sizeof ss);
    if (settings_parse_hostport(spec, &host, &port) < 0) {
        error_set(err, "http_listen", "http_listen: \"%s\" is not ADDRESS:PORT", spec);
        return -1;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)(void *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)(void *)&ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        sl = sizeof *s4;
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        sl = sizeof *s6;
    } else {
        error_set(err, "http_listen", "http_listen: \"%s\" is not an IP address", host);
        free(host);
        return -1;
    }
    free(host);
    /* plain HTTP carries passwords and session cookies: only on loopback,
     * unless a TLS-terminating proxy in front is declared */
    if (!s->https && !s->cfg.settings->http_allow_plain && !is_loopback(&ss)) {
        error_set(err, "http_listen", "http_listen: %s is not a loopback address and no "
                  "certificate is configured; set http_tls_cert and http_tls_key, or "
                  "http_allow_plain = yes behind a TLS-terminating reverse proxy", spec);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        error_set(err, "http_listen", "http_listen: %s: socket: %s", spec, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 128) < 0) {
        error_set(err, "http_listen", "http_listen: cannot listen on %s: %s", spec,
                  strerror(errno));
        close(fd);
        return -1;
    }
    s->fd[s->n] = fd;
    s->addr[s->n] = xstrdup(spec);
    s->v6[s->n] = ss.ss_family == AF_INET6;
    s->n++;
    return 0;
}

struct api_server *api_server_create(const struct api_config *cfg, struct error *err)
{
    const struct moat_settings *set = cfg->settings;
    struct api_server *s = xcalloc(1, sizeof *s);

    memset(err, 0, sizeof *err);
    s->cfg = *cfg;
    s->given = cfg;
    s->magic = API_SERVER_MAGIC;
    for (int i = 0; i < SETTINGS_MAX_LISTEN; i++)
        s->fd[i] = -1;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    if (pthread_key_create(&s->store_key, store_key_destroy) != 0) {
        error_set(err, "", "pthread_key_create failed");
        goto fail;
    }
    s->have_key = true;
    if (pthread_key_create(&s->archive_key, archive_key_destroy) != 0) {
        error_set(err, "", "pthread_key_create failed");
        goto fail;
    }
    s->have_archive_key = true;
    if (pthread_key_create(&s->tracking_key, tracking_key_destroy) != 0) {
        error_set(err, "", "pthread_key_create failed");
        goto fail;
    }
    s->have_tracking_key = true;
    bool cert = set->http_tls_cert && set->http_tls_cert[0];
    bool key = set->http_tls_key && set->http_tls_key[0];
    if (cert != key) {
        error_set(err, cert ? "http_tls_key" : "http_tls_cert",
                  "http_tls_cert and http_tls_key must be set together");
        goto fail;
    }
    if (cert) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            error_set(err, "http_tls_cert", "http_tls_cert: this libmicrohttpd has no TLS support");
            goto fail;
        }
        /* read now: the key may be readable by root only, and we drop root next */
        if ((s->cert_pem = read_pem(set->http_tls_cert, "http_tls_cert", false, err)) == NULL ||
            (s->key_pem = read_pem(set->http_tls_key, "http_tls_key", true, err)) == NULL)
            goto fail;
        s->https = true;
    }
    for (int i = 0; i < set->n_http_listen; i++)
        if (bind_one(s, set->http_listen[i], err) < 0)
            goto fail;
    return s;
fail:
    api_server_free(s);
    return NULL;
}

int api_server_start(struct api_server *s, struct error *err)
{
    /* moatd creates the delivery engine after the privilege drop, so between
     * create and start it fills in cfg->deliver: take the final values now */
    s->cfg = *s->given;
    const struct moat_settings *set = s->cfg.settings;

    memset(err, 0, sizeof *err);
    for (int i = 0; i < s->n; i++) {
        unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
        if (s->v6[i])
            flags |= MHD_USE_IPv6;
        if (s->https)
            flags |= MHD_USE_TLS;
        struct MHD_OptionItem tls[] = {
            { MHD_OPTION_HTTPS_MEM_CERT, 0, s->cert_pem },
            { MHD_OPTION_HTTPS_MEM_KEY, 0, s->key_pem },
            { MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)API_TLS_PRIORITIES },
            { MHD_OPTION_END, 0, NULL },
        };
        struct MHD_OptionItem none[] = { { MHD_OPTION_END, 0, NULL } };
        s->mhd[i] = MHD_start_daemon(flags, 0, NULL, NULL, api_on_request, s,
            MHD_OPTION_LISTEN_SOCKET, (MHD_socket)s->fd[i],
            MHD_OPTION_THREAD_POOL_SIZE, (unsigned)set->http_threads,
            MHD_OPTION_CONNECTION_LIMIT, API_CONNECTION_LIMIT,
            MHD_OPTION_PER_IP_CONNECTION_LIMIT, API_PER_IP_CONNECTION_LIMIT,
            MHD_OPTION_CONNECTION_TIMEOUT, API_CONNECTION_TIMEOUT_S,
            MHD_OPTION_NOTIFY_COMPLETED, api_on_completed, s,
            MHD_OPTION_EXTERNAL_LOGGER, api_mhd_log, s,
            MHD_OPTION_ARRAY, s->https ? tls : none,
            MHD_OPTION_END);
        if (s->mhd[i] == NULL) {
            error_set(err, "http_listen", "http_listen: cannot start the HTTP server on %s",
                      s->addr[i]);
            return -1;
        }
        s->fd[i] = -1;   /* MHD owns and closes it now */
        log_info("event=http_listening addr=%s tls=%s threads=%" PRId64, s->addr[i],
                 s->https ? "yes" : "no", set->http_threads);
    }
    return 0;
}

void api_server_free(struct api_server *s)
{
    if (s == NULL)
        return;
    /* release workers waiting on a loop that may be gone */
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    for (int i = 0; i < s->n; i++) {
        if (s->mhd[i] != NULL)
            MHD_stop_daemon(s->mhd[i]);
        if (s->fd[i] >= 0)
            close(s->fd[i]);
        free(s->addr[i]);
    }
    if (s->have_key)
        pthread_key_delete(s->store_key);
    if (s->have_archive_key)
        pthread_key_delete(s->archive_key);
    if (s->have_tracking_key)
        pthread_key_delete(s->tracking_key);
    if (s->key_pem != NULL) {
        sodium_memzero(s->key_pem, strlen(s->key_pem));
        free(s->key_pem);
    }
    free(s->cert_pem);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
