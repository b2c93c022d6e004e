/*
 * test_api_routes.c - the route table of the HTTP API (api_routes.c):
 * every route is well formed and names a permission, only the known public
 * routes are public, docs/openapi.yaml describes exactly the routes in the
 * table with the same permissions, and the request path's pure parts (route
 * matching, strict body parsing, api_body_check, the error shape) behave.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "api/api_priv.h"

#ifndef MOAT_SOURCE_ROOT
#define MOAT_SOURCE_ROOT "."
#endif

static const char *const methods[] = { "GET", "POST", "PUT", "PATCH", "DELETE", NULL };

/* the only routes anyone may call without signing in */
static const char *const public_routes[] = {
    "GET /api/v1/health",
    "POST /api/v1/auth/login",
    /* issue 11: the scrape; api_metrics.c checks metrics_allow or the metrics token */
    "GET /metrics",
    NULL,
};

static void test_every_route_is_well_formed(void **state)
{
    assert_true(api_routes_count > 0);
    for (size_t i = 0; i < api_routes_count; i++) {
        const struct api_route *r = &api_routes[i];
        bool known = false;
        for (const char *const *m = methods; *m; m++)
            known |= strcmp(*m, r->method) == 0;
        if (!known)
            fail_msg("route %zu: unknown method %s", i, r->method);
        if (strncmp(r->pattern, "/api/v1/", 8) != 0 && strcmp(r->pattern, "/metrics") != 0)
            fail_msg("route %s %s: not under /api/v1/", r->method, r->pattern);
        if (r->handler == NULL)
            fail_msg("route %s %s: no handler", r->method, r->pattern);
        if ((unsigned)r->perm >= AUTH_PERM__COUNT)
            fail_msg("route %s %s: no valid permission", r->method, r->pattern);
        /* a change must be audited; a read never writes the audit log */
        bool changes = strcmp(r->method, "GET") != 0;
        if (changes != r->audited)
            fail_msg("route %s %s: audited is %d but the method %s", r->method, r->pattern,
                     r->audited, changes ? "changes something" : "only reads");
        for (size_t j = 0; j < i; j++)
            if (strcmp(api_routes[j].method, r->method) == 0 &&
                strcmp(api_routes[j].pattern, r->pattern) == 0)
                fail_msg("route %s %s is listed twice", r->method, r->pattern);
    }
}

/* a route gets PUBLIC (the enum's zero) only when it is on the list above,
 * so a row whose permission was forgotten fails here */
static void test_only_known_routes_are_public(void **state)
{
    for (size_t i = 0; i < api_routes_count; i++) {
        const struct api_route *r = &api_routes[i];
        char key[256];
        snprintf(key, sizeof key, "%s %s", r->method, r->pattern);
        bool listed = false;
        for (const char *const *p = public_routes; *p; p++)
            listed |= strcmp(*p, key) == 0;
        if ((r->perm == AUTH_PERM_PUBLIC) != listed)
            fail_msg("%s: permission %s, but it is %s the public list", key,
                     auth_perm_name(r->perm), listed ? "on" : "not on");
    }
}

/* the permission of a protected action is never held by a basic administrator */
static void test_protected_routes(void **state)
{
    for (size_t i = 0; i < api_routes_count; i++) {
        const struct api_route *r = &api_routes[i];
        if (strncmp(r->pattern, "/api/v1/accounts", 16) == 0)
            assert_int_equal(r->perm, AUTH_PERM_ACCOUNTS_MANAGE);
        if (r->perm != AUTH_PERM_PUBLIC)
            assert_false(auth_role_allows(AUTH_ROLE_NONE, r->perm));
        assert_true(auth_role_allows(AUTH_ROLE_ADMIN, r->perm));
    }
    assert_false(auth_role_allows(AUTH_ROLE_BASIC_ADMIN, AUTH_PERM_ACCOUNTS_MANAGE));
    assert_false(auth_role_allows(AUTH_ROLE_BASIC_ADMIN, AUTH_PERM_MESSAGE_CONTENT));
}

/* --- docs/openapi.yaml --- */

struct doc_op {
    char method[8];
    char path[128];
    char perm[32];
};

/* read_openapi - the operations under "paths:" (2-space path keys, 4-space
 * method keys, "x-permission:" inside); a deliberately simple reader of the
 * layout the file keeps */
static size_t read_openapi(struct doc_op *ops, size_t max)
{
    FILE *f = fopen(MOAT_SOURCE_ROOT "/docs/openapi.yaml", "r");
    char line[512], path[128] = "";
    size_t n = 0;
    bool in_paths = false;

    if (f == NULL)
        fail_msg("cannot open %s/docs/openapi.yaml", MOAT_SOURCE_ROOT);
    while (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] != ' ' && line[0] != '\0' && line[0] != '#') {
            in_paths = strcmp(line, "paths:") == 0;
            continue;
        }
        if (!in_paths)
            continue;
        size_t ind = strspn(line, " ");
        const char *t = line + ind;
        size_t tl = strlen(t);
        if (ind == 2 && t[0] == '/' && tl > 1 && t[tl - 1] == ':') {
            snprintf(path, sizeof path, "%.*s", (int)(tl - 1), t);
        } else if (ind == 4 && tl > 1 && t[tl - 1] == ':') {
            for (const char *const *m = methods; *m; m++) {
                char want[16];
                snprintf(want, sizeof want, "%s:", *m);
                if (strcasecmp(t, want) != 0)
                    continue;
                assert_true(n < max);
                snprintf(ops[n].method, sizeof ops[n].method, "%s", *m);
                snprintf(ops[n].path, sizeof ops[n].path, "%s", path);
                ops[n].perm[0] = '\0';
                n++;
            }
        } else if (ind == 6 && strncmp(t, "x-permission:", 13) == 0 && n > 0) {
            const char *v = t + 13;
            v += strspn(v, " ");
            snprintf(ops[n - 1].perm, sizeof ops[n - 1].perm, "%s", v);
        }
    }
    fclose(f);
    return n;
}

static void test_openapi_lists_exactly_the_routes(void **state)
{
    struct doc_op ops[256];
    size_t n = read_openapi(ops, 256);

    for (size_t i = 0; i < api_routes_count; i++) {
        const struct api_route *r = &api_routes[i];
        size_t k;
        for (k = 0; k < n; k++)
            if (strcmp(ops[k].method, r->method) == 0 && strcmp(ops[k].path, r->pattern) == 0)
                break;
        if (k == n)
            fail_msg("route %s %s is missing from docs/openapi.yaml", r->method, r->pattern);
        if (strcmp(ops[k].perm, auth_perm_name(r->perm)) != 0)
            fail_msg("docs/openapi.yaml: %s %s has x-permission \"%s\", the table says %s",
                     r->method, r->pattern, ops[k].perm, auth_perm_name(r->perm));
    }
    for (size_t k = 0; k < n; k++) {
        bool found = false;
        for (size_t i = 0; i < api_routes_count && !found; i++)
            found = strcmp(ops[k].method, api_routes[i].method) == 0 &&
                    strcmp(ops[k].path, api_routes[i].pattern) == 0;
        if (!found)
            fail_msg("docs/openapi.yaml describes %s %s, which is not in the route table",
                     ops[k].method, ops[k].path);
    }
    assert_int_equal(n, api_routes_count);
}

/* --- route matching --- */

static const struct api_route *find(const char *method, const char *path, const char **params,
                                    int *np, bool *known, char *allow)
{
    static char scratch[512];
    return api_route_find(method, path, scratch, params, np, known, allow, 64);
}

static void test_route_matching(void **state)
{
    const char *params[API_MAX_PATH_PARAMS];
    int np;
    bool known;
    char allow[64];
    const struct api_route *r;

    r = find("GET", "/api/v1/domains", params, &np, &known, allow);
    assert_non_null(r);
    assert_string_equal(r->pattern, "/api/v1/domains");
    assert_int_equal(np, 0);

    r = find("PUT", "/api/v1/domains/example.com/route", params, &np, &known, allow);
    assert_non_null(r);
    assert_string_equal(r->pattern, "/api/v1/domains/{name}/route");
    assert_int_equal(np, 1);
    assert_string_equal(params[0], "example.com");

    /* the literal row wins over {id} */
    r = find("POST", "/api/v1/queue/retry", params, &np, &known, allow);
    assert_non_null(r);
    assert_string_equal(r->pattern, "/api/v1/queue/retry");
    r = find("POST", "/api/v1/queue/0123456789ABCDEF/retry", params, &np, &known, allow);
    assert_non_null(r);
    assert_string_equal(params[0], "0123456789ABCDEF");

    /* 405 with the methods that exist */
    r = find("PATCH", "/api/v1/domains", params, &np, &known, allow);
    assert_null(r);
    assert_true(known);
    assert_string_equal(allow, "GET, POST");

    /* 404s */
    static const char *const unknown[] = {
        "/api/v1/domains/", "/api/v1/domain", "/api/v1/domains/a/b/c", "/api/v1//domains",
        "/api/v1/domains//route", "/", "", "/api/v1/health/x", "/api/v2/health",
        "api/v1/health", "/api/v1/healthz", NULL,
    };
    for (const char *const *u = unknown; *u; u++) {
        r = find("GET", *u, params, &np, &known, allow);
        if (r != NULL || known)
            fail_msg("%s matched %s", *u, r ? r->pattern : "(another method)");
    }
}

/* --- bodies --- */

static void test_parse_body(void **state)
{
    struct api_response resp;
    json_t *v;

    memset(&resp, 0, sizeof resp);
    assert_int_equal(api_parse_body("", 0, NULL, &v, &resp), 0);
    assert_null(v);

    static const char ok[] = "{\"name\": \"example.com\"}";
    static const char *const good_types[] = { "application/json", "Application/JSON",
        "application/json; charset=utf-8", "application/json;charset=UTF-8", NULL };
    for (const char *const *t = good_types; *t; t++) {
        assert_int_equal(api_parse_body(ok, strlen(ok), *t, &v, &resp), 0);
        assert_non_null(v);
        json_decref(v);
    }

    static const char *const bad_types[] = { NULL, "", "text/plain", "application/jsonx",
        "application/json; charset=latin1", "application/x-www-form-urlencoded", NULL };
    for (size_t i = 0; i < sizeof bad_types / sizeof bad_types[0] - 1; i++) {
        assert_int_equal(api_parse_body(ok, strlen(ok), bad_types[i], &v, &resp), -1);
        assert_int_equal(resp.status, 415);
        api_response_reset(&resp);
    }

    struct { const char *body; int status; const char *code; } cases[] = {
        { "{", 400, "invalid_json" },
        { "{\"a\":1,\"a\":2}", 400, "invalid_json" },      /* duplicate key */
        { "{\"a\":\"\xff\"}", 400, "invalid_json" },       /* not UTF-8 */
        { "{\"a\":\"\\u0000\"}", 400, "invalid_json" },    /* NUL in a string */
        { "{} {}", 400, "invalid_json" },                 /* trailing data */
        { "[1,2]", 400, "invalid_body" },
        { "\"text\"", 400, "invalid_body" },
        { "42", 400, "invalid_body" },
        { "null", 400, "invalid_body" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int r = api_parse_body(cases[i].body, strlen(cases[i].body), "application/json", &v,
                               &resp);
        if (r != -1 || resp.status != cases[i].status)
            fail_msg("body %s: rc %d status %d", cases[i].body, r, resp.status);
        json_t *e = json_object_get(resp.body, "error");
        assert_string_equal(json_string_value(json_object_get(e, "code")), cases[i].code);
        assert_string_equal(json_string_value(json_object_get(e, "field")), "body");
        assert_non_null(json_string_value(json_object_get(e, "message")));
        api_response_reset(&resp);
    }
}

static void test_body_check(void **state)
{
    static const char *const allowed[] = { "host", "port", "tls", NULL };
    static const char *const required[] = { "host", NULL };
    struct api_request req;
    struct api_response resp;

    memset(&req, 0, sizeof req);
    memset(&resp, 0, sizeof resp);
    req.body = json_pack("{s:s, s:i}", "host", "mx", "port", 25);
    assert_int_equal(api_body_check(&req, &resp, allowed, required), 0);
    json_decref(req.body);

    req.body = json_pack("{s:s, s:b}", "host", "mx", "tsl", 1);
    assert_int_equal(api_body_check(&req, &resp, allowed, required), -1);
    assert_int_equal(resp.status, 400);
    json_t *e = json_object_get(resp.body, "error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "unknown_field");
    assert_string_equal(json_string_value(json_object_get(e, "field")), "tsl");
    api_response_reset(&resp);
    json_decref(req.body);

    req.body = json_pack("{s:i}", "port", 25);
    assert_int_equal(api_body_check(&req, &resp, allowed, required), -1);
    e = json_object_get(resp.body, "error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "missing_field");
    assert_string_equal(json_string_value(json_object_get(e, "field")), "host");
    api_response_reset(&resp);
    json_decref(req.body);

    req.body = NULL;   /* no body at all */
    assert_int_equal(api_body_check(&req, &resp, allowed, required), -1);
    api_response_reset(&resp);
    static const char *const none[] = { NULL };
    assert_int_equal(api_body_check(&req, &resp, none, none), 0);
}

static void test_error_shape(void **state)
{
    struct api_response resp;
    struct error err;

    memset(&resp, 0, sizeof resp);
    api_error(&resp, 404, "not_found", NULL, "no such domain %s", "x.example");
    assert_int_equal(resp.status, 404);
    json_t *e = json_object_get(resp.body, "error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "not_found");
    assert_string_equal(json_string_value(json_object_get(e, "message")), "no such domain x.example");
    assert_null(json_object_get(e, "field"));
    assert_int_equal(json_object_size(resp.body), 1);
    api_response_reset(&resp);

    /* a message that is not UTF-8 still gives the shape */
    api_error(&resp, 400, "invalid_field", "name", "bad %s", "\xff\xfe");
    e = json_object_get(resp.body, "error");
    assert_non_null(json_string_value(json_object_get(e, "message")));
    assert_string_equal(json_string_value(json_object_get(e, "field")), "name");
    api_response_reset(&resp);

    memset(&err, 0, sizeof err);
    error_set(&err, "port", "invalid port %d", 0);
    api_error_from(&resp, 0, "invalid_field", &err);
    assert_int_equal(resp.status, 400);
    api_response_reset(&resp);
    memset(&err, 0, sizeof err);
    error_set(&err, "", "disk on fire");
    api_error_from(&resp, 0, "store_error", &err);
    assert_int_equal(resp.status, 500);
    api_response_reset(&resp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_route_is_well_formed),
        cmocka_unit_test(test_only_known_routes_are_public),
        cmocka_unit_test(test_protected_routes),
        cmocka_unit_test(test_openapi_lists_exactly_the_routes),
        cmocka_unit_test(test_route_matching),
        cmocka_unit_test(test_parse_body),
        cmocka_unit_test(test_body_check),
        cmocka_unit_test(test_error_shape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
