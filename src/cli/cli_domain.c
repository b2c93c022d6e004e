/*
 * cli_domain.c - `moat domain ...` and `moat route ...`: internal domains
 * (add prints the TXT record that proves ownership; verify looks for it
 * now; list shows verified / pending / trusted) and their delivery routes,
 * through the API (/api/v1/domains, .../verify, .../route).  The
 * daemon applies a change at once and records it in the audit log.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include "cli.h"

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* domain_path - "/api/v1/domains/NAME[suffix]" with NAME escaped */
static char *domain_path(const char *name, const char *suffix)
{
    return cli_item_path("/api/v1/domains", name, suffix);
}

static void print_route_line(const char *dom, json_t *route)
{
    char hp[300];
    json_t *port = json_object_get(route, "port");
    cli_format_hostport(hp, sizeof hp, jstr(route, "host"),
                        json_is_integer(port) ? (int)json_integer_value(port) : 25);
    char *d = cli_safe(dom), *t = cli_safe(jstr(route, "tls"));
    printf("%s -> %s (tls %s)\n", d, hp, t);
    free(d);
    free(t);
}

/* print_txt - the record to publish for a pending domain */
static void print_txt(json_t *d)
{
    json_t *rec = json_object_get(d, "txt_record");
    if (!json_is_object(rec))
        return;
    char *n = cli_safe(jstr(rec, "name")), *v = cli_safe(jstr(rec, "value"));
    printf("publish this TXT record at the apex of %s:\n\n"
           "    %s.  TXT  \"%s\"\n\n", n, n, v);
    printf("then run: moat domain verify %s (Moat also re-checks it automatically)\n", n);
    free(n);
    free(v);
}

int cli_domain_add(struct cli_ctx *ctx)
{
    bool trusted = cli_flag(ctx, "trust-unverified");
    json_t *body = json_pack("{s:s}", "name", ctx->args[0]);
    if (trusted)
        json_object_set_new(body, "trust_unverified", json_true());
    json_t *r = cli_api(ctx, "POST", "/api/v1/domains", body, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    char *n = cli_safe(jstr(r, "name"));
    const char *status = jstr(r, "status");
    if (status && strcmp(status, "verified") == 0) {
        printf("added domain %s: verified (a subdomain of a verified domain)\n", n);
    } else if (trusted) {
        printf("added domain %s: WARNING: trusted without verification (lab override, "
               "audit-logged)\n", n);
        print_txt(r);
    } else {
        printf("added domain %s: pending verification\n", n);
        print_txt(r);
    }
    printf("set where its mail goes with: moat route set %s HOST\n", n);
    free(n);
    json_decref(r);
    return CLI_OK;
}

int cli_domain_verify(struct cli_ctx *ctx)
{
    char *p = domain_path(ctx->args[0], "/verify");
    json_t *r = cli_api(ctx, "POST", p, NULL, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    char *n = cli_safe(jstr(r, "name"));
    json_t *check = json_object_get(r, "check");
    char *msg = cli_safe(jstr(check, "message") ? jstr(check, "message") : "");
    const char *status = jstr(r, "status");
    if (status && strcmp(status, "verified") == 0)
        printf("%s: verified\n", n);
    else if (status && strcmp(status, "trusted_unverified") == 0)
        printf("%s: WARNING: not verified, trusted by the lab override\n", n);
    else
        printf("%s: pending\n", n);
    if (*msg)
        printf("%s\n", msg);
    if (!(status && strcmp(status, "verified") == 0))
        print_txt(r);
    free(n);
    free(msg);
    int rc = status && strcmp(status, "verified") == 0 ? CLI_OK : CLI_FAIL;
    json_decref(r);
    return rc;
}

int cli_domain_remove(struct cli_ctx *ctx)
{
    char *p = domain_path(ctx->args[0], "");
    json_t *r = cli_api(ctx, "DELETE", p, NULL, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    json_decref(r);
    char *name = cli_safe(ctx->args[0]);
    str_lower(name);
    if (ctx->json)
        cli_print_json(json_pack("{s:s, s:b}", "name", name, "removed", 1));
    else
        printf("removed domain %s\n", name);
    free(name);
    return CLI_OK;
}

int cli_domain_list(struct cli_ctx *ctx)
{
    json_t *all = cli_api_all(ctx, "/api/v1/domains");
    if (all == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(all);
        return CLI_OK;
    }
    if (json_array_size(all) == 0) {
        printf("no domains; add one with: moat domain add example.com\n");
        json_decref(all);
        return CLI_OK;
    }
    static const char *const hdr[] = { "DOMAIN", "STATUS", "ROUTE", "TLS", "ADDED" };
    struct cli_table *t = cli_table_new(5, hdr);
    size_t i;
    json_t *d;
    json_array_foreach(all, i, d) {
        char route[300], added[32];
        json_t *r = json_object_get(d, "route");
        json_t *port = json_object_get(r, "port");
        cli_format_hostport(route, sizeof route, jstr(r, "host"),
                            json_is_integer(port) ? (int)json_integer_value(port) : 25);
        cli_format_time(added, sizeof added, json_integer_value(json_object_get(d, "created")));
        const char *st = jstr(d, "status");
        const char *row[] = { jstr(d, "name"),
                              st == NULL ? (json_is_true(json_object_get(d, "verified")) ? "verified" : "pending")
                              : strcmp(st, "trusted_unverified") == 0 ? "UNVERIFIED (trusted)" : st,
                              route, jstr(r, "host") ? jstr(r, "tls") : "-", added };
        cli_table_add(t, row);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    json_decref(all);
    return CLI_OK;
}

/* parse_host_port - "mx.example.com", "mx:2525", "10.0.0.5:25", "[2001:db8::5]:25",
 * or a bare IPv6 address; host malloc'd; -1 with a message in why */
static int parse_host_port(const char *s, char **host, int *port, const char **why)
{
    struct in6_addr a6;
    const char *colon;

    *port = 25;
    if (inet_pton(AF_INET6, s, &a6) == 1) {
        *host = xstrdup(s);
        return 0;
    }
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL) {
            *why = "missing ']' after the IPv6 address";
            return -1;
        }
        if (close[1] != '\0' && close[1] != ':') {
            *why = "expected :PORT after ']'";
            return -1;
        }
        *host = xstrndup(s + 1, (size_t)(close - s - 1));
        colon = close[1] == ':' ? close + 1 : NULL;
    } else {
        colon = strchr(s, ':');
        if (colon != NULL && strchr(colon + 1, ':') != NULL) {
            *why = "write an IPv6 address in brackets: [2001:db8::1]:25";
            return -1;
        }
        *host = colon ? xstrndup(s, (size_t)(colon - s)) : xstrdup(s);
    }
    if (colon != NULL) {
        char *end;
        errno = 0;
        long p = strtol(colon + 1, &end, 10);
        if (colon[1] == '\0' || *end != '\0' || errno != 0 || p < 1 || p > 65535 ||
            !(colon[1] >= '0' && colon[1] <= '9')) {
            free(*host);
            *host = NULL;
            *why = "the port must be a number from 1 to 65535";
            return -1;
        }
        *port = (int)p;
    }
    return 0;
}

int cli_route_set(struct cli_ctx *ctx)
{
    char *host = NULL;
    int port;
    const char *why = NULL;
    const char *tls = cli_opt(ctx, "tls");

    if (parse_host_port(ctx->args[1], &host, &port, &why) < 0) {
        char *safe = cli_safe(ctx->args[1]);
        int rc = cli_usage_error(ctx, "\"%s\": %s", safe, why);
        free(safe);
        return rc;
    }
    json_t *body = json_pack("{s:s, s:i}", "host", host, "port", port);
    free(host);
    if (tls != NULL)
        json_object_set_new(body, "tls", json_string(tls));
    if (cli_flag(ctx, "override"))
        json_object_set_new(body, "override", json_true());
    char *p = domain_path(ctx->args[0], "/route");
    json_t *r = cli_api(ctx, "PUT", p, body, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    char *dom = cli_safe(ctx->args[0]);
    str_lower(dom);
    if (ctx->json) {
        cli_print_json(json_pack("{s:s, s:o}", "domain", dom, "route", r));
    } else {
        char hp[300];
        cli_format_hostport(hp, sizeof hp, jstr(r, "host"),
                            (int)json_integer_value(json_object_get(r, "port")));
        char *t = cli_safe(jstr(r, "tls"));
        printf("mail for %s is delivered to %s (tls %s)\n", dom, hp, t);
        free(t);
        json_decref(r);
    }
    free(dom);
    return CLI_OK;
}

int cli_route_show(struct cli_ctx *ctx)
{
    if (ctx->n_args == 1) {
        char *p = domain_path(ctx->args[0], "");
        json_t *d = cli_api(ctx, "GET", p, NULL, NULL, NULL);
        free(p);
        if (d == NULL)
            return CLI_FAIL;
        json_t *route = json_object_get(d, "route");
        const char *name = jstr(d, "name") ? jstr(d, "name") : ctx->args[0];
        if (ctx->json) {
            cli_print_json(json_pack("{s:s, s:O}", "domain", name, "route", route));
        } else if (!json_is_object(route)) {
            char *n = cli_safe(name);
            printf("%s has no route; set one with: moat route set %s HOST\n", n, n);
            free(n);
        } else {
            print_route_line(name, route);
        }
        json_decref(d);
        return CLI_OK;
    }
    json_t *all = cli_api_all(ctx, "/api/v1/domains");
    if (all == NULL)
        return CLI_FAIL;
    size_t i;
    json_t *d;
    if (ctx->json) {
        json_t *arr = json_array();
        json_array_foreach(all, i, d)
            json_array_append_new(arr, json_pack("{s:s?, s:O}", "domain", jstr(d, "name"),
                                                 "route", json_object_get(d, "route")));
        json_decref(all);
        cli_print_json(arr);
        return CLI_OK;
    }
    if (json_array_size(all) == 0) {
        printf("no domains; add one with: moat domain add example.com\n");
        json_decref(all);
        return CLI_OK;
    }
    static const char *const hdr[] = { "DOMAIN", "ROUTE", "TLS" };
    struct cli_table *t = cli_table_new(3, hdr);
    json_array_foreach(all, i, d) {
        char hp[300];
        json_t *r = json_object_get(d, "route");
        json_t *port = json_object_get(r, "port");
        cli_format_hostport(hp, sizeof hp, jstr(r, "host"),
                            json_is_integer(port) ? (int)json_integer_value(port) : 25);
        const char *row[] = { jstr(d, "name"), jstr(r, "host") ? hp : "(none)",
                              jstr(r, "host") ? jstr(r, "tls") : "-" };
        cli_table_add(t, row);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    json_decref(all);
    return CLI_OK;
}
