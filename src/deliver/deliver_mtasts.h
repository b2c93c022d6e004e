/*
 * deliver_mtasts.h - MTA-STS (RFC 8461) for outbound delivery.
 *
 * Three layers:
 *   the parsers      pure functions: the TXT record at _mta-sts.<domain>
 *                    ("v=STSv1; id=...") and the policy text; fuzzed by
 *                    tests/fuzz/fuzz_mtasts.c, unit-tested;
 *   the fetch        blocking libcurl GET of
 *                    https://mta-sts.<domain>/.well-known/mta-sts.txt, the
 *                    address given by the caller (resolved through Moat's
 *                    own resolver, pinned with CURLOPT_RESOLVE), certificate
 *                    verified, no redirects, 64 KiB, bounded time; for a
 *                    worker thread (src/core/worker.h) or an HTTP worker;
 *   the cache        on the event loop for delivery: TXT and A lookups through
 *                    src/dns, the fetch on the worker pool, a per-domain
 *                    memory cache and the store's cache (mta_sts_cache,
 *                    refreshed when the TXT id changes or max_age expires;
 *                    a fetch that fails keeps an unexpired cached policy,
 *                    RFC 8461 5.1).
 */
#ifndef MOAT_DELIVER_MTASTS_H
#define MOAT_DELIVER_MTASTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "../core/core.h"
#include "../core/settings.h"

#define MTASTS_MAX_POLICY (64 * 1024)     /* octets of a policy document */
#define MTASTS_MAX_MX 32                  /* mx lines kept */
#define MTASTS_MAX_AGE 31557600           /* RFC 8461 3.2: at most one year */
#define MTASTS_ID_MAX 33                  /* 1..32 alphanumerics + NUL */

enum mtasts_mode { MTASTS_NONE = 0, MTASTS_TESTING, MTASTS_ENFORCE };

struct mtasts_policy {
    enum mtasts_mode mode;
    int64_t max_age;                      /* seconds */
    char mx[MTASTS_MAX_MX][256];          /* patterns: "mx.example.com", "*.example.com" */
    size_t n_mx;
};

const char *mtasts_mode_name(enum mtasts_mode m);

/* mtasts_policy_parse - RFC 8461 3.2: "key: value" lines (CRLF or LF);
 * version STSv1, mode, max_age and (unless mode none) at least one mx are
 * required; unknown keys are ignored.  0 ok, -1 with why. */
int mtasts_policy_parse(const char *text, size_t len, struct mtasts_policy *out, char *why,
                        size_t why_size);

/* mtasts_txt_parse - RFC 8461 3.1: "v=STSv1; id=<1..32 alphanumerics>;
 * ..." -> id; -1 when the text is not a valid STSv1 record */
int mtasts_txt_parse(const char *txt, char id[MTASTS_ID_MAX]);

/* mtasts_mx_allowed - host matches one of the policy's mx patterns (4.1) */
bool mtasts_mx_allowed(const struct mtasts_policy *p, const char *host);

/* mtasts_fetch - GET the policy of domain from ip:port (blocking); *text
 * (NUL-terminated, caller frees) and *len; -1 with why */
struct mtasts_fetch_req {
    const char *domain;
    const char *ip;                       /* the address of mta-sts.<domain> */
    int port;                             /* mta_sts_port */
    const char *ca_file;                  /* tls_ca_file, "" = the system store */
    int timeout;                          /* seconds for the whole fetch */
    bool tls13;                           /* tls_min_version 1.3 */
};
int mtasts_fetch(const struct mtasts_fetch_req *r, char **text, size_t *len, char *why,
                 size_t why_size);

/* --- the delivery cache (event loop) --- */
struct event_base;
struct dns;
struct worker_pool;
struct mtasts;
struct mtasts_req;

/* p NULL: the domain has no usable MTA-STS policy (why says why); valid
 * during the callback only */
typedef void (*mtasts_cb)(void *arg, const struct mtasts_policy *p, const char *why);

struct mtasts *mtasts_create(struct dns *dns, struct worker_pool *workers,
                             const struct moat_settings *settings);
/* mtasts_free - pending requests are cancelled (their callbacks never run) */
void mtasts_free(struct mtasts *s);
/* mtasts_get - the policy of domain; cb later on the loop, never inside */
struct mtasts_req *mtasts_get(struct mtasts *s, const char *domain, mtasts_cb cb, void *arg);
/* mtasts_cancel - cb will not be called */
void mtasts_cancel(struct mtasts_req *q);

#endif
