/*
 * dane_probe_tool.c - drives deliver_dane_probe (the TLS policy probe's DANE
 * part) from the command line for tests/e2e/test_dane.py, with the same
 * resolver code moatd uses:
 *   dane_probe RESOLVER ANCHOR_FILE PORT DOMAIN
 * prints the probe's JSON array on stdout; exit 0 (probe ran), 1 (no MX
 * host), 2 (usage or setup error).  A test helper, not installed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include "core/core.h"
#include "dns/dns.h"
#include "deliver/deliver_dane.h"

struct run {
    struct event_base *base;
    int status;
};

static void on_report(void *arg, bool ok, const char *json_text)
{
    struct run *r = arg;
    printf("%s\n", json_text);
    fflush(stdout);
    r->status = ok ? 0 : 1;
    /* let a test connection's QUIT finish before the loop ends */
    static const struct timeval grace = { 0, 300 * 1000 };
    event_base_loopexit(r->base, &grace);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: dane_probe RESOLVER ANCHOR_FILE PORT DOMAIN\n");
        return 2;
    }
    struct run r = { .base = event_base_new(), .status = 2 };
    struct error err = { 0 };
    struct dns_options opt = { .resolver = argv[1], .trust_anchor_file = argv[2] };
    struct dns *dns = dns_create(r.base, &opt, &err);
    if (!dns) {
        fprintf(stderr, "dane_probe: %s: %s\n", err.field, err.msg);
        return 2;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    struct smtp_client_config cc = { .base = r.base, .tls_ctx = ctx, .helo_name = "probe.moat.test",
                                     .timeout_connect = 10, .timeout_command = 10, .timeout_data = 10 };
    deliver_dane_probe(dns, &cc, argv[4], atoi(argv[3]), on_report, &r);
    event_base_dispatch(r.base);
    dns_free(dns);
    SSL_CTX_free(ctx);
    event_base_free(r.base);
    return r.status;
}
