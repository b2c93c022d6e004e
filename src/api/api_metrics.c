/*
 * api_metrics.c - /metrics and its token (issue 11).
 *
 * GET /metrics is a public route of the table: a scraper has no account.
 * Its own access control runs here instead: the client address inside one
 * of the metrics_allow ranges (a start-up setting, so reading it on a
 * worker thread is safe), else "Authorization: Bearer" with the metrics token
 * (auth_metrics_token_check; only its keyed hash is stored).  Anyone else
 * gets 403 with the one error shape, so a scraper's operator reads why.
 * The body is metrics_render's exposition, text format 0.0.4.
 *
 * POST /api/v1/metrics/token makes a new token (replacing the old one) and
 * shows it once; `moat metrics token` calls it.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <microhttpd.h>
#include <sodium.h>
#include "api_metrics.h"
#include "../core/cidr.h"
#include "../core/metrics.h"

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* client_allowed - req's address is inside a metrics_allow range */
static bool client_allowed(const struct api_request *req)
{
    struct cidr ranges[SETTINGS_MAX_METRICS_ALLOW];
    size_t n = 0;
    struct error err;
    int family;
    unsigned char addr[16];
    const char *allow = req->cfg->settings->metrics_allow;
    if (allow == NULL || cidr_list_parse(allow, ranges, SETTINGS_MAX_METRICS_ALLOW, &n, &err) < 0)
        return false;   /* checked at start; never reached with a bad value */
    if (cidr_addr_from_text(req->client_ip, &family, addr) < 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (cidr_contains_addr(&ranges[i], family, addr))
            return true;
    return false;
}

/* bearer - the token of "Authorization: Bearer TOKEN", or NULL */
static const char *bearer(const struct api_request *req)
{
    const char *h = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_AUTHORIZATION);
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    return h;
}

void api_metrics(struct api_request *req, struct api_response *resp)
{
    /* an allowed address needs nothing more, whatever Authorization says (a
     * console or CLI that sends its API token everywhere still reads it) */
    const char *token = bearer(req);
    bool ok = client_allowed(req) ||
              (token != NULL && auth_metrics_token_check(req->cfg->auth, req->store, token));
    if (!ok) {
        api_error(resp, 403, "forbidden", "Authorization", token != NULL
                  ? "the metrics token is not valid (make a new one: moat metrics token)"
                  : "this address is not in metrics_allow: send Authorization: Bearer "
                    "with the metrics token (moat metrics token)");
        return;
    }
    struct buf b;
    buf_init(&b);
    metrics_render(&b);
    resp->content_type = METRICS_CONTENT_TYPE;
    resp->raw = b.data;      /* the response owns it now */
    resp->raw_len = b.len;
    resp->status = 200;
}

void api_metrics_token_create(struct api_request *req, struct api_response *resp)
{
    static const char *const none[] = { NULL };
    char *token = NULL;
    struct error err;
    if (api_body_check(req, resp, none, none) < 0)
        return;
    if (auth_metrics_token_create(req->cfg->auth, req->store, req->who->name, &token, &err) < 0) {
        api_store_fail(resp, STORE_ERR, &err);
        return;
    }
    api_audit(req, "metrics.token.create", "metrics", NULL, NULL);
    /* shown once: only its keyed hash is kept */
    resp->body = json_pack("{s:s}", "token", token);
    sodium_memzero(token, strlen(token));
    free(token);
    resp->status = 201;
}
