/*
 * cli_http.c - the moat client's way to moatd: HTTP requests to the API
 * (libcurl), and where the URL and token come from.
 *
 * URL and token: --url, else $MOAT_URL / $MOAT_TOKEN, else cli.conf
 * ($XDG_CONFIG_HOME/moat/cli.conf, else ~/.config/moat/cli.conf: "url = ..."
 * and "token = ..." lines, written by `moat login` with mode 0600; a file
 * others can read is refused, it holds a secret), else
 * http://127.0.0.1:8025 without a token.  $MOAT_CACERT names a CA file for
 * an HTTPS API with a private certificate.
 *
 * Errors: the API's message (and the field it names) is printed as
 * "moat: NOUN VERB: message (field: F)"; the caller exits non-zero.  The
 * token never appears in an error message.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <curl/curl.h>
#include <sodium.h>
#include "cli.h"

#define CLI_DEFAULT_URL "http://127.0.0.1:8025"
#define CLI_HTTP_TIMEOUT_S 60L
#define CLI_MAX_ANSWER (64L * 1024 * 1024)
#define CLI_MAX_CONFIG_LINE 4096

struct answer {
    struct buf body;
    struct cli_session *session;    /* login: where Set-Cookie goes */
    bool too_big;
    FILE *sink;                     /* a download: a 2xx body goes here, unbounded */
    CURL *curl;
    bool sink_failed;
};

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct answer *a = arg;
    if (a->sink != NULL) {
        long status = 0;
        curl_easy_getinfo(a->curl, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200 && status < 300) {
            if (fwrite(data, size, n, a->sink) != n) {
                a->sink_failed = true;
                return 0;
            }
            return size * n;
        }
    }
    if (a->body.len + size * n > (size_t)CLI_MAX_ANSWER) {
        a->too_big = true;
        return 0;
    }
    buf_append(&a->body, data, size * n);
    return size * n;
}

/* on_header - keep "moat_session=VALUE" of a Set-Cookie header */
static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
    struct answer *a = arg;
    size_t len = size * n;
    static const char name[] = "set-cookie:";
    if (a->session == NULL || len < sizeof name || strncasecmp(data, name, sizeof name - 1) != 0)
        return len;
    const char *p = data + sizeof name - 1;
    const char *end = data + len;
    while (p < end && *p == ' ')
        p++;
    if ((size_t)(end - p) > 13 && strncmp(p, "moat_session=", 13) == 0) {
        size_t vl = 0;
        while (p + vl < end && p[vl] != ';' && p[vl] != '\r' && p[vl] != '\n')
            vl++;
        if (vl < sizeof a->session->cookie)
            xsnprintf(a->session->cookie, sizeof a->session->cookie, "%.*s", (int)vl, p);
    }
    return len;
}

char *cli_escape(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    if (e == NULL)
        log_fatal("event=oom where=curl_easy_escape");
    char *out = xstrdup(e);
    curl_free(e);
    return out;
}

/* print_api_error - the error shape's message and field, terminal-safe */
static void print_api_error(struct cli_ctx *ctx, long status, json_t *answer)
{
    json_t *e = json_object_get(answer, "error");
    const char *msg = json_string_value(json_object_get(e, "message"));
    const char *field = json_string_value(json_object_get(e, "field"));
    char *m = cli_safe(msg ? msg : "the request failed");
    if (field != NULL) {
        char *f = cli_safe(field);
        cli_fail(ctx, "%s (field: %s; HTTP %ld)", m, f, status);
        free(f);
    } else {
        cli_fail(ctx, "%s (HTTP %ld)", m, status);
    }
    free(m);
    if (status == 401)
        fprintf(stderr, "moat: sign in with `moat login`, or set MOAT_URL and MOAT_TOKEN\n");
}

/* raw_body - a body that is not JSON (the CSV import) */
struct raw_body {
    const char *type;        /* "Content-Type: text/csv" */
    const char *data;
    size_t len;
};

static json_t *request(struct cli_ctx *ctx, const char *method, const char *path, json_t *body,
                       const struct cli_session *session, struct cli_session *login,
                       long *status_out, const struct raw_body *raw, FILE *sink)
{
    struct answer a;
    struct curl_slist *h = NULL;
    char *text = NULL, *url = xasprintf("%s%s", ctx->url, path);
    json_t *result = NULL;
    long status = 0;
    char auth[1200] = "";

    memset(&a, 0, sizeof a);
    buf_init(&a.body);
    a.session = login;
    a.sink = sink;
    CURL *c = curl_easy_init();
    if (c == NULL) {
        cli_fail(ctx, "cannot initialise libcurl");
        goto out;
    }
    a.curl = c;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_TIMEOUT, CLI_HTTP_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &a);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &a);
    const char *ca = getenv("MOAT_CACERT");
    if (ca != NULL && ca[0] != '\0')
        curl_easy_setopt(c, CURLOPT_CAINFO, ca);
    h = curl_slist_append(h, sink ? "Accept: */*" : "Accept: application/json");
    if (sink != NULL) {
        /* a download (an mbox export) may take long: no overall limit, but a
         * stalled one (under 1 octet/s for the usual timeout) is given up */
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 0L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, CLI_HTTP_TIMEOUT_S);
    }
    h = curl_slist_append(h, "Expect:");   /* no 100-continue round trip */
    if (session != NULL) {
        curl_easy_setopt(c, CURLOPT_COOKIE, session->cookie);
        xsnprintf(auth, sizeof auth, "X-CSRF-Token: %s", session->csrf);
        h = curl_slist_append(h, auth);
    } else if (ctx->token != NULL && ctx->token[0] != '\0') {
        if (xsnprintf(auth, sizeof auth, "Authorization: Bearer %s", ctx->token) < 0) {
            cli_fail(ctx, "the API token is too long");
            goto out;
        }
        h = curl_slist_append(h, auth);
    }
    if (raw != NULL) {
        h = curl_slist_append(h, raw->type);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)raw->len);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, raw->data);
    } else if (body != NULL) {
        text = json_dumps(body, JSON_COMPACT);
        h = curl_slist_append(h, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, text ? text : "{}");
    }
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        if (a.sink_failed)
            cli_fail(ctx, "cannot write the download: %s", strerror(errno));
        else if (a.too_big)
            cli_fail(ctx, "the answer from %s is too large", ctx->url);
        else
            cli_fail(ctx, "cannot reach moatd at %s: %s (is it running? set MOAT_URL)", ctx->url,
                     curl_easy_strerror(rc));
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    json_t *j = NULL;
    if (sink != NULL && status >= 200 && status < 300) {
        result = json_null();
        goto out;
    }
    if (a.body.len > 0) {
        json_error_t jerr;
        j = json_loadb(a.body.data, a.body.len, 0, &jerr);
        if (j == NULL) {
            cli_fail(ctx, "HTTP %ld from %s with an answer that is not JSON", status, ctx->url);
            goto out;
        }
    }
    if (status >= 400) {
        print_api_error(ctx, status, j);
        json_decref(j);
        goto out;
    }
    result = j ? j : json_null();
out:
    if (status_out != NULL)
        *status_out = status;
    sodium_memzero(auth, sizeof auth);
    curl_slist_free_all(h);
    if (c != NULL)
        curl_easy_cleanup(c);
    free(text);
    free(url);
    buf_free(&a.body);
    json_decref(body);
    return result;
}

json_t *cli_api(struct cli_ctx *ctx, const char *method, const char *path, json_t *body,
                const struct cli_session *session, long *status)
{
    return request(ctx, method, path, body, session, NULL, status, NULL, NULL);
}

int cli_api_download(struct cli_ctx *ctx, const char *path, FILE *out, long *status)
{
    json_t *r = request(ctx, "GET", path, NULL, NULL, NULL, status, NULL, out);
    if (r == NULL)
        return -1;
    json_decref(r);
    return 0;
}

json_t *cli_api_text(struct cli_ctx *ctx, const char *method, const char *path,
                     const char *content_type, const char *data, size_t len, long *status)
{
    char type[128];
    if (xsnprintf(type, sizeof type, "Content-Type: %s", content_type) < 0)
        return NULL;
    struct raw_body raw = { .type = type, .data = data, .len = len };
    return request(ctx, method, path, NULL, NULL, NULL, status, &raw, NULL);
}

json_t *cli_api_login(struct cli_ctx *ctx, json_t *body, struct cli_session *session)
{
    memset(session, 0, sizeof *session);
    json_t *r = request(ctx, "POST", "/api/v1/auth/login", body, NULL, session, NULL, NULL, NULL);
    if (r == NULL)
        return NULL;
    const char *csrf = json_string_value(json_object_get(r, "csrf_token"));
    if (session->cookie[0] == '\0' || csrf == NULL ||
        str_copy(session->csrf, sizeof session->csrf, csrf) < 0) {
        json_decref(r);
        cli_fail(ctx, "moatd signed in without a session cookie or CSRF token");
        return NULL;
    }
    return r;
}

json_t *cli_api_all(struct cli_ctx *ctx, const char *path)
{
    json_t *all = json_array();
    char *cursor = NULL;
    const char *sep = strchr(path, '?') ? "&" : "?";
    for (int pages = 0; pages < 10000; pages++) {
        char *p;
        if (cursor != NULL) {
            char *e = cli_escape(cursor);
            p = xasprintf("%s%slimit=1000&cursor=%s", path, sep, e);
            free(e);
        } else {
            p = xasprintf("%s%slimit=1000", path, sep);
        }
        json_t *r = cli_api(ctx, "GET", p, NULL, NULL, NULL);
        free(p);
        free(cursor);
        cursor = NULL;
        if (r == NULL) {
            json_decref(all);
            return NULL;
        }
        json_array_extend(all, json_object_get(r, "items"));
        const char *next = json_string_value(json_object_get(r, "next_cursor"));
        if (next != NULL)
            cursor = xstrdup(next);
        json_decref(r);
        if (cursor == NULL)
            break;
    }
    free(cursor);
    return all;
}

/* --- cli.conf --- */

static char *config_path(void)
{
    const char *x = getenv("XDG_CONFIG_HOME");
    if (x != NULL && x[0] == '/')
        return xasprintf("%s/moat/cli.conf", x);
    const char *home = getenv("HOME");
    if (home == NULL || home[0] == '\0')
        return NULL;
    return xasprintf("%s/.config/moat/cli.conf", home);
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

/* read_config - url and token from cli.conf when it exists */
static int read_config(struct cli_ctx *ctx, char **url, char **token)
{
    if (ctx->config_path == NULL)
        return 0;
    FILE *f = fopen(ctx->config_path, "re");
    if (f == NULL)
        return errno == ENOENT ? 0 : cli_fail(NULL, "%s: %s", ctx->config_path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) < 0 || (sb.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        fclose(f);
        return cli_fail(NULL, "%s holds an API token but group or others can read it; "
                        "chmod 600 it", ctx->config_path);
    }
    char line[CLI_MAX_CONFIG_LINE];
    int lineno = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        lineno++;
        char *p = trim(line);
        if (*p == '\0' || *p == '#')
            continue;
        char *eq = strchr(p, '=');
        if (eq == NULL) {
            fclose(f);
            return cli_fail(NULL, "%s:%d: expected \"key = value\"", ctx->config_path, lineno);
        }
        *eq = '\0';
        char *k = trim(p), *v = trim(eq + 1);
        if (strcmp(k, "url") == 0) {
            free(*url);
            *url = xstrdup(v);
        } else if (strcmp(k, "token") == 0) {
            free(*token);
            *token = xstrdup(v);
        } else {
            fclose(f);
            return cli_fail(NULL, "%s:%d: unknown key %s (url, token)", ctx->config_path,
                            lineno, k);
        }
    }
    fclose(f);
    return CLI_OK;
}

int cli_config_load(struct cli_ctx *ctx, const char *url_opt)
{
    char *url = NULL, *token = NULL;
    ctx->config_path = config_path();
    if (read_config(ctx, &url, &token) != CLI_OK) {
        free(url);
        free(token);
        return CLI_FAIL;
    }
    const char *eu = getenv("MOAT_URL"), *et = getenv("MOAT_TOKEN");
    if (eu != NULL && eu[0] != '\0') {
        free(url);
        url = xstrdup(eu);
    }
    if (et != NULL && et[0] != '\0') {
        free(token);
        token = xstrdup(et);
    }
    if (url_opt != NULL) {
        free(url);
        url = xstrdup(url_opt);
    }
    if (url == NULL)
        url = xstrdup(CLI_DEFAULT_URL);
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        url[--n] = '\0';
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        char *u = cli_safe(url);
        cli_fail(NULL, "the API URL must start with http:// or https:// (got %s)", u);
        free(u);
        free(url);
        free(token);
        return CLI_FAIL;
    }
    ctx->url = url;
    ctx->token = token;
    return CLI_OK;
}

/* mkdir_parents - the directories above path, mode 0700 for the last one */
static int mkdir_parents(const char *path)
{
    char *p = xstrdup(path);
    char *slash = strrchr(p, '/');
    if (slash != NULL && slash != p) {
        *slash = '\0';
        for (char *s = p + 1; *s; s++) {
            if (*s != '/')
                continue;
            *s = '\0';
            if (mkdir(p, 0755) < 0 && errno != EEXIST) {
                free(p);
                return -1;
            }
            *s = '/';
        }
        if (mkdir(p, 0700) < 0 && errno != EEXIST) {
            free(p);
            return -1;
        }
    }
    free(p);
    return 0;
}

int cli_config_write(struct cli_ctx *ctx, const char *url, const char *token)
{
    if (ctx->config_path == NULL)
        return cli_fail(ctx, "no home directory: set HOME, or use MOAT_URL and MOAT_TOKEN");
    if (mkdir_parents(ctx->config_path) < 0)
        return cli_fail(ctx, "cannot create the directory of %s: %s", ctx->config_path,
                        strerror(errno));
    char *tmp = xasprintf("%s.tmp", ctx->config_path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 || fchmod(fd, 0600) < 0) {
        int rc = cli_fail(ctx, "%s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        free(tmp);
        return rc;
    }
    char *text = xasprintf("# written by `moat login`; holds an API token: keep it private\n"
                           "url = %s\ntoken = %s\n", url, token);
    size_t len = strlen(text);
    bool ok = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    sodium_memzero(text, len);
    free(text);
    if (close(fd) < 0)
        ok = false;
    if (!ok || rename(tmp, ctx->config_path) < 0) {
        int rc = cli_fail(ctx, "cannot write %s: %s", ctx->config_path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return rc;
    }
    free(tmp);
    return CLI_OK;
}
