/*
 * fuzz_api_json.c - libFuzzer target for the HTTP API's request body path:
 * api_parse_body (Content-Type, strict JSON: no duplicate keys, UTF-8, an
 * object) followed by api_body_check (unknown and missing members), and
 * route matching of a path taken from the same input.  Every outcome must
 * be either a parsed object or the one error shape with a 4xx status.
 *
 * Input: byte 0 picks the Content-Type, byte 1 the length of a path that
 * follows; the rest is the body.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "api/api_priv.h"

static const char *const content_types[] = {
    "application/json", "application/json; charset=utf-8", "text/plain", NULL,
};

static void check_error(const struct api_response *resp)
{
    json_t *e = json_object_get(resp->body, "error");
    if (resp->status < 400 || resp->status > 499 || !json_is_string(json_object_get(e, "code")) ||
        !json_is_string(json_object_get(e, "message")))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const allowed[] = { "name", "host", "port", "tls", "password", NULL };
    static const char *const required[] = { "name", NULL };
    struct api_response resp;
    struct api_request req;
    json_t *body = NULL;

    if (size < 2)
        return 0;
    const char *ct = content_types[data[0] % 4];
    size_t plen = data[1];
    if (plen > size - 2)
        plen = size - 2;
    const char *path = (const char *)data + 2;
    const char *text = path + plen;
    size_t tlen = size - 2 - plen;

    /* the route matcher sees a NUL-terminated path, as libmicrohttpd gives it */
    char *p = malloc(plen + 1), *scratch = malloc(plen + 1);
    memcpy(p, path, plen);
    p[plen] = '\0';
    const char *params[API_MAX_PATH_PARAMS];
    int np;
    bool known;
    char allow[64];
    const struct api_route *r = api_route_find("GET", p, scratch, params, &np, &known, allow,
                                               sizeof allow);
    if (r != NULL && np > API_MAX_PATH_PARAMS)
        abort();
    free(p);
    free(scratch);

    memset(&resp, 0, sizeof resp);
    if (api_parse_body(text, tlen, ct, &body, &resp) < 0) {
        check_error(&resp);
        api_response_reset(&resp);
        return 0;
    }
    if (body != NULL && !json_is_object(body))
        abort();
    memset(&req, 0, sizeof req);
    req.body = body;
    if (api_body_check(&req, &resp, allowed, required) < 0)
        check_error(&resp);
    api_response_reset(&resp);
    json_decref(body);
    return 0;
}
