/*
 * cli_domain.c - `moat domain ...` and `moat route ...`: internal domains and
 * their delivery routes, read and written through the store directly so they
 * work whether or not moatd runs; a running moatd is then asked to reload.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include "store/store.h"
#include "cli.h"

/* open_store - the store of the state directory, or NULL after printing why */
static struct store *open_store(struct cli_ctx *ctx)
{
    struct error err;
    struct stat sb;
    const char *dir = ctx->settings.state_dir;

    if (stat(dir, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
        cli_fail(ctx, "state directory %s %s; give the right one with --state-dir or "
                 "MOAT_STATE_DIR", dir, errno == ENOENT ? "does not exist" : "is not usable");
        return NULL;
    }
    struct store *st = store_open(ctx->settings.database, &err);
    if (st == NULL)
        cli_fail(ctx, "%s", err.msg);
    return st;
}

/* display_domain - the name as the store keeps it: lower case, no trailing dot */
static char *display_domain(const char *name)
{
    char *d = cli_safe(name);
    str_lower(d);
    size_t n = strlen(d);
    if (n > 1 && d[n - 1] == '.')
        d[n - 1] = '\0';
    return d;
}

static json_t *route_json(const struct store_route *r)
{
    if (r->host == NULL)
        return json_null();
    return json_pack("{s:s, s:i, s:s}", "host", r->host, "port", r->port,
                     "tls", store_tls_mode_name(r->tls));
}

static json_t *domain_json(const struct store_domain *d)
{
    return json_pack("{s:s, s:b, s:I, s:o}", "name", d->name, "verified", d->verified,
                     "created", (json_int_t)d->created, "route", route_json(&d->route));
}

int cli_domain_add(struct cli_ctx *ctx)
{
    struct error err;
    struct store *st = open_store(ctx);
    if (st == NULL)
        return CLI_FAIL;
    int rc = store_domain_add(st, ctx->args[0], &err);
    if (rc < 0) {
        store_close(st);
        return cli_fail(ctx, "%s", err.msg);
    }
    /* read back what was stored: the name is normalised */
    struct store_domain *d = NULL;
    size_t n = 0;
    char *norm = display_domain(ctx->args[0]);
    if (store_domain_list(st, &d, &n, &err) == 0) {
        for (size_t i = 0; i < n; i++) {
            if (strcmp(d[i].name, norm) != 0)
                continue;
            if (ctx->json)
                cli_print_json(domain_json(&d[i]));
            else
                printf("added domain %s; set where its mail goes with: moat route set %s HOST\n",
                       d[i].name, d[i].name);
        }
        store_domains_free(d, n);
    }
    free(norm);
    store_close(st);
    cli_notify_reload(ctx);
    return CLI_OK;
}

int cli_domain_remove(struct cli_ctx *ctx)
{
    struct error err;
    struct store *st = open_store(ctx);
    if (st == NULL)
        return CLI_FAIL;
    int rc = store_domain_remove(st, ctx->args[0], &err);
    store_close(st);
    if (rc < 0)
        return cli_fail(ctx, "%s", err.msg);
    char *name = display_domain(ctx->args[0]);
    if (ctx->json)
        cli_print_json(json_pack("{s:s, s:b}", "name", name, "removed", 1));
    else
        printf("removed domain %s\n", name);
    free(name);
    cli_notify_reload(ctx);
    return CLI_OK;
}

int cli_domain_list(struct cli_ctx *ctx)
{
    struct error err;
    struct store_domain *d = NULL;
    size_t n = 0;
    struct store *st = open_store(ctx);
    if (st == NULL)
        return CLI_FAIL;
    int rc = store_domain_list(st, &d, &n, &err);
    store_close(st);
    if (rc < 0)
        return cli_fail(ctx, "%s", err.msg);
    if (ctx->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(arr, domain_json(&d[i]));
        cli_print_json(arr);
    } else if (n == 0) {
        printf("no domains; add one with: moat domain add example.com\n");
    } else {
        static const char *const hdr[] = { "DOMAIN", "STATUS", "ROUTE", "TLS", "ADDED" };
        struct cli_table *t = cli_table_new(5, hdr);
        for (size_t i = 0; i < n; i++) {
            char route[300], added[32];
            cli_format_hostport(route, sizeof route, d[i].route.host, d[i].route.port);
            cli_format_time(added, sizeof added, d[i].created);
            const char *row[] = { d[i].name, d[i].verified ? "verified" : "pending", route,
                                  d[i].route.host ? store_tls_mode_name(d[i].route.tls) : "-",
                                  added };
            cli_table_add(t, row);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    store_domains_free(d, n);
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
    struct error err;
    struct store_route r = { 0 }, old = { 0 };
    const char *why = NULL;
    const char *tls = cli_opt(ctx, "tls");

    if (parse_host_port(ctx->args[1], &r.host, &r.port, &why) < 0) {
        char *safe = cli_safe(ctx->args[1]);
        int rc = cli_usage_error(ctx, "\"%s\": %s", safe, why);
        free(safe);
        return rc;
    }
    if (tls != NULL && store_tls_mode_parse(tls, &r.tls) < 0) {
        free(r.host);
        return cli_usage_error(ctx, "--tls must be opportunistic, relaxed or strict");
    }
    struct store *st = open_store(ctx);
    if (st == NULL) {
        free(r.host);
        return CLI_FAIL;
    }
    /* changing the host must not silently weaken a strict route */
    if (tls == NULL) {
        if (store_route_get(st, ctx->args[0], &old, &err) == 0 && old.host != NULL)
            r.tls = old.tls;
        store_route_clear(&old);
    }
    int rc = store_route_set(st, ctx->args[0], &r, &err);
    if (rc == 0)
        rc = store_route_get(st, ctx->args[0], &old, &err);
    store_close(st);
    free(r.host);
    if (rc < 0) {
        store_route_clear(&old);
        return cli_fail(ctx, "%s", err.msg);
    }
    char *dom = display_domain(ctx->args[0]);
    if (ctx->json) {
        cli_print_json(json_pack("{s:s, s:o}", "domain", dom, "route", route_json(&old)));
    } else {
        char hp[300];
        cli_format_hostport(hp, sizeof hp, old.host, old.port);
        printf("mail for %s is delivered to %s (tls %s)\n", dom, hp,
               store_tls_mode_name(old.tls));
    }
    free(dom);
    store_route_clear(&old);
    cli_notify_reload(ctx);
    return CLI_OK;
}

int cli_route_show(struct cli_ctx *ctx)
{
    struct error err;
    struct store_domain *d = NULL;
    size_t n = 0;
    struct store *st = open_store(ctx);
    if (st == NULL)
        return CLI_FAIL;

    if (ctx->n_args == 1) {
        struct store_route r;
        int rc = store_route_get(st, ctx->args[0], &r, &err);
        store_close(st);
        if (rc < 0)
            return cli_fail(ctx, "%s", err.msg);
        char *dom = display_domain(ctx->args[0]);
        if (ctx->json) {
            cli_print_json(json_pack("{s:s, s:o}", "domain", dom, "route", route_json(&r)));
        } else if (r.host == NULL) {
            printf("%s has no route; set one with: moat route set %s HOST\n", dom, dom);
        } else {
            char hp[300];
            cli_format_hostport(hp, sizeof hp, r.host, r.port);
            printf("%s -> %s (tls %s)\n", dom, hp, store_tls_mode_name(r.tls));
        }
        free(dom);
        store_route_clear(&r);
        return CLI_OK;
    }
    int rc = store_domain_list(st, &d, &n, &err);
    store_close(st);
    if (rc < 0)
        return cli_fail(ctx, "%s", err.msg);
    if (ctx->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(arr, json_pack("{s:s, s:o}", "domain", d[i].name,
                                                 "route", route_json(&d[i].route)));
        cli_print_json(arr);
    } else if (n == 0) {
        printf("no domains; add one with: moat domain add example.com\n");
    } else {
        static const char *const hdr[] = { "DOMAIN", "ROUTE", "TLS" };
        struct cli_table *t = cli_table_new(3, hdr);
        for (size_t i = 0; i < n; i++) {
            char hp[300];
            cli_format_hostport(hp, sizeof hp, d[i].route.host, d[i].route.port);
            const char *row[] = { d[i].name, d[i].route.host ? hp : "(none)",
                                  d[i].route.host ? store_tls_mode_name(d[i].route.tls) : "-" };
            cli_table_add(t, row);
        }
        cli_table_print(t, stdout);
        cli_table_free(t);
    }
    store_domains_free(d, n);
    return CLI_OK;
}
