/*
 * dns.c - asynchronous DNS on the event loop through libunbound.
 *
 * libunbound runs its resolution in its own thread (ub_ctx_async(ctx, 1))
 * and signals results on ub_fd(), which a persistent libevent read event
 * watches; ub_process() then runs our callbacks on the loop.  Rdata arrives
 * in wire format and is parsed here, bounded by its length, into struct
 * dns_record.  A resolver failure is DNS_TEMPFAIL, never a negative answer;
 * DNSSEC failure (bogus) is checked before anything else because libunbound
 * reports it with rcode 0 and data present (PEERS.md §5).
 *
 * Entry points: dns_create, dns_query, dns_cancel, dns_free.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unbound.h>
#include <event2/event.h>
#include "dns.h"
#include "../core/metrics.h"

#define DNS_MAX_NAME 256     /* RFC 1035 2.3.4: 255 octets in wire form */
#define DNS_MAX_RECORDS 256  /* answers beyond this are ignored */
#define DNS_MAX_TXT 8192     /* concatenated TXT strings */

struct dns_query {
    struct dns *d;
    dns_cb cb;
    void *arg;
    int async_id;
    enum dns_type type;
    bool immediate;          /* failed before reaching libunbound */
    struct event *ev;        /* immediate: the deferred answer */
    char why[160];
    uint64_t t0_us;          /* monotonic, at the query: the latency metric */
    struct dns_query *prev, *next;
};

struct dns {
    struct event_base *base;
    struct ub_ctx *ctx;
    struct event *ev;
    struct dns_query *queries;   /* in flight, for dns_free */
};

const char *dns_status_name(enum dns_status s)
{
    switch (s) {
    case DNS_OK: return "ok";
    case DNS_NXDOMAIN: return "nxdomain";
    case DNS_NODATA: return "nodata";
    case DNS_TEMPFAIL: return "tempfail";
    case DNS_BOGUS: return "bogus";
    }
    return "unknown";
}

static void dns_ready_cb(evutil_socket_t fd, short what, void *arg)
{
    struct dns *d = arg;
    int rc = ub_process(d->ctx);
    if (rc != 0)
        log_error("event=dns_process_failed error=\"%s\"", ub_strerror(rc));
}

/* resolver_to_fwd - "ADDR:PORT" / "[ADDR]:PORT" / "ADDR@PORT" / "ADDR" -> "ADDR@PORT" */
static int resolver_to_fwd(const char *r, char *dst, size_t size)
{
    char host[128];
    const char *port = NULL;
    size_t hl;
    if (r[0] == '[') {
        const char *e = strchr(r, ']');
        if (!e)
            return -1;
        hl = (size_t)(e - r - 1);
        if (e[1] == ':')
            port = e + 2;
        else if (e[1] != '\0')
            return -1;
        r++;
    } else if (strchr(r, '@')) {
        const char *at = strchr(r, '@');
        hl = (size_t)(at - r);
        port = at + 1;
    } else {
        const char *c = strrchr(r, ':');
        /* one colon: host:port; several: a bare IPv6 address */
        if (c && strchr(r, ':') == c) {
            hl = (size_t)(c - r);
            port = c + 1;
        } else {
            hl = strlen(r);
        }
    }
    if (hl == 0 || hl >= sizeof(host))
        return -1;
    memcpy(host, r, hl);
    host[hl] = '\0';
    unsigned char tmp[16];
    if (inet_pton(AF_INET, host, tmp) != 1 && inet_pton(AF_INET6, host, tmp) != 1)
        return -1;   /* libunbound forwards to addresses only */
    if (port) {
        char *end;
        long p = strtol(port, &end, 10);
        if (*port == '\0' || *end != '\0' || p < 1 || p > 65535)
            return -1;
        return xsnprintf(dst, size, "%s@%ld", host, p) < 0 ? -1 : 0;
    }
    return str_copy(dst, size, host);
}

#define DNS_MAX_ANCHOR_FILE (64 * 1024)
#define DNS_MAX_ANCHOR_LINE 4096

/* add_trust_anchors - the DS/DNSKEY lines of path, one record a line (";"
 * comments), read now: libunbound would read its file only at the first
 * query, after moatd dropped its privileges, and report nothing usable */
static int add_trust_anchors(struct ub_ctx *ctx, const char *path, struct error *err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        error_set(err, "dns_trust_anchor_file", "cannot read trust anchor file \"%s\": %s", path, strerror(errno));
        return -1;
    }
    char line[DNS_MAX_ANCHOR_LINE];
    int n = 0, lineno = 0, rc = 0;
    size_t total = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        size_t len = strlen(line);
        total += len;
        if (total > DNS_MAX_ANCHOR_FILE || (len == sizeof(line) - 1 && line[len - 1] != '\n')) {
            error_set(err, "dns_trust_anchor_file", "%s:%d: file or line too long", path, lineno);
            rc = -1;
            break;
        }
        char *c = strchr(line, ';');
        if (c)
            *c = '\0';
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        len = strlen(p);
        while (len && (p[len - 1] == '\n' || p[len - 1] == '\r' || p[len - 1] == ' ' || p[len - 1] == '\t'))
            p[--len] = '\0';
        if (!*p)
            continue;
        if (!strcasestr(p, " DS ") && !strcasestr(p, "\tDS\t") && !strcasestr(p, " DNSKEY ") &&
            !strcasestr(p, "\tDNSKEY\t")) {
            error_set(err, "dns_trust_anchor_file", "%s:%d: not a DS or DNSKEY record on one line", path, lineno);
            rc = -1;
            break;
        }
        int urc = ub_ctx_add_ta(ctx, p);
        if (urc != 0) {
            error_set(err, "dns_trust_anchor_file", "%s:%d: %s", path, lineno, ub_strerror(urc));
            rc = -1;
            break;
        }
        n++;
    }
    fclose(f);
    if (rc == 0 && n == 0) {
        error_set(err, "dns_trust_anchor_file", "no DS or DNSKEY record in \"%s\"", path);
        rc = -1;
    }
    return rc;
}

struct dns *dns_create(struct event_base *base, const struct dns_options *opt, struct error *err)
{
    const char *resolver = opt ? opt->resolver : NULL;
    const char *anchor = opt ? opt->trust_anchor_file : NULL;
    struct dns *d = xcalloc(1, sizeof(*d));
    d->base = base;
    d->ctx = ub_ctx_create();
    if (!d->ctx) {
        error_set(err, "resolver", "cannot create the libunbound context");
        free(d);
        return NULL;
    }
    int rc;
    if (resolver && *resolver) {
        char fwd[160];
        if (resolver_to_fwd(resolver, fwd, sizeof(fwd)) < 0) {
            error_set(err, "resolver", "resolver must be ADDR, ADDR:PORT, [ADDR]:PORT or ADDR@PORT with an IP address: \"%s\"", resolver);
            goto fail;
        }
        rc = ub_ctx_set_fwd(d->ctx, fwd);
    } else {
        rc = ub_ctx_resolvconf(d->ctx, NULL);
    }
    if (rc != 0) {
        error_set(err, "resolver", "cannot use resolver \"%s\": %s", resolver ? resolver : "", ub_strerror(rc));
        goto fail;
    }
    /* a dead resolver must fail in under a second, not after ~17 s (PEERS.md §5).
     * The first-contact timeout (unknown-server-time-limit, default 376 ms)
     * must stay below that cap, else a burst of parallel first queries finds
     * the forwarder "too slow" before it ever answered and gets SERVFAIL. */
    if ((rc = ub_ctx_set_option(d->ctx, "infra-cache-max-rtt:", "300")) != 0 ||
        (rc = ub_ctx_set_option(d->ctx, "unknown-server-time-limit:", "250")) != 0 ||
        (rc = ub_ctx_set_option(d->ctx, "do-not-query-localhost:", "no")) != 0 ||
        /* reverse DNS of loopback addresses (anti-spoofing's FCrDNS, issue 7)
         * is the resolver's answer, not libunbound's built-in "localhost" */
        (rc = ub_ctx_set_option(d->ctx, "local-zone:", "127.in-addr.arpa. transparent")) != 0 ||
        (rc = ub_ctx_async(d->ctx, 1)) != 0) {
        error_set(err, "resolver", "libunbound setup: %s", ub_strerror(rc));
        goto fail;
    }
    /* with an anchor libunbound validates itself, also behind a forwarder
     * (which must pass DNSSEC records: any recursive resolver does) */
    if (anchor && *anchor && add_trust_anchors(d->ctx, anchor, err) < 0)
        goto fail;
    d->ev = event_new(base, ub_fd(d->ctx), EV_READ | EV_PERSIST, dns_ready_cb, d);
    if (!d->ev || event_add(d->ev, NULL) < 0) {
        error_set(err, "resolver", "cannot watch the libunbound descriptor");
        goto fail;
    }
    return d;
fail:
    if (d->ev)
        event_free(d->ev);
    ub_ctx_delete(d->ctx);
    free(d);
    return NULL;
}

static void query_unlink(struct dns *d, struct dns_query *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        d->queries = q->next;
    if (q->next)
        q->next->prev = q->prev;
}

/* dns_shutdown - answer every query in flight now with DNS_TEMPFAIL, so
 * that each caller releases what it keeps for its answer while it still
 * exists (moatd calls this right after the loop stops, before freeing the
 * modules that query).  Callbacks run here, on the loop's thread. */
void dns_shutdown(struct dns *d)
{
    if (!d)
        return;
    while (d->queries) {
        struct dns_query *q = d->queries;
        query_unlink(d, q);
        q->prev = q->next = NULL;
        dns_cb cb = q->cb;
        void *cbarg = q->arg;
        q->cb = NULL;
        if (!q->immediate)
            ub_cancel(d->ctx, q->async_id);
        else
            event_free(q->ev);   /* its deferred answer is given here instead */
        free(q);
        if (cb) {
            struct dns_result r = { .status = DNS_TEMPFAIL };
            str_copy(r.why, sizeof(r.why), "the resolver is shutting down");
            cb(cbarg, &r);
        }
    }
}

void dns_free(struct dns *d)
{
    if (!d)
        return;
    struct dns_query *q = d->queries;
    while (q) {
        struct dns_query *nx = q->next;
        if (!q->immediate)
            ub_cancel(d->ctx, q->async_id);
        else
            event_free(q->ev);
        free(q);
        q = nx;
    }
    d->queries = NULL;
    event_free(d->ev);
    ub_ctx_delete(d->ctx);
    free(d);
}

/* --- rdata parsing --- */

/* wire_name - uncompressed wire-format name at p[0..len) to text without the
 * trailing dot; returns octets consumed or -1 */
static int wire_name(const uint8_t *p, size_t len, char *out, size_t outsz)
{
    size_t i = 0, o = 0;
    for (;;) {
        if (i >= len)
            return -1;
        uint8_t l = p[i++];
        if (l == 0)
            break;
        if (l > 63 || i + l > len)
            return -1;   /* compression pointers never appear in unbound's rdata */
        if (o && o + 1 < outsz)
            out[o++] = '.';
        for (uint8_t k = 0; k < l; k++) {
            unsigned char c = p[i + k];
            if (o + 5 >= outsz)
                return -1;
            if (c <= ' ' || c >= 0x7f || c == '.' || c == '\\') {
                int w = xsnprintf(out + o, outsz - o, "\\%03u", c);
                if (w < 0)
                    return -1;
                o += (size_t)w;
            } else {
                out[o++] = (char)c;
            }
        }
        i += l;
    }
    out[o] = '\0';
    return (int)i;
}

/* parse_rdata - one record into text; -1 when malformed */
static int parse_rdata(enum dns_type type, const uint8_t *p, size_t len, struct dns_record *rr)
{
    char tmp[DNS_MAX_TXT + 1];
    rr->pref = 0;
    switch (type) {
    case DNS_T_A:
        if (len != 4 || !inet_ntop(AF_INET, p, tmp, sizeof(tmp)))
            return -1;
        break;
    case DNS_T_AAAA:
        if (len != 16 || !inet_ntop(AF_INET6, p, tmp, sizeof(tmp)))
            return -1;
        break;
    case DNS_T_MX:
        if (len < 3)
            return -1;
        rr->pref = p[0] << 8 | p[1];
        if (wire_name(p + 2, len - 2, tmp, DNS_MAX_NAME * 4) < 0)
            return -1;
        break;
    case DNS_T_PTR:
        if (wire_name(p, len, tmp, DNS_MAX_NAME * 4) < 0)
            return -1;
        break;
    case DNS_T_TXT: {
        /* RFC 7208 3.3: the strings of one record are concatenated */
        size_t i = 0, o = 0;
        while (i < len) {
            size_t l = p[i++];
            if (i + l > len || o + l > DNS_MAX_TXT)
                return -1;
            memcpy(tmp + o, p + i, l);
            o += l;
            i += l;
        }
        if (memchr(tmp, '\0', o))
            return -1;
        tmp[o] = '\0';
        break;
    }
    case DNS_T_TLSA:
        return dns_tlsa_parse(p, len, rr);
    default:
        return -1;
    }
    rr->text = xstrdup(tmp);
    return 0;
}

int dns_tlsa_parse(const uint8_t *p, size_t len, struct dns_record *rr)
{
    /* RFC 6698 2.1: usage, selector, matching type, at least one octet of data */
    if (len < 4 || len - 3 > DNS_TLSA_MAX_DATA)
        return -1;
    memset(rr, 0, sizeof(*rr));
    rr->usage = p[0];
    rr->selector = p[1];
    rr->mtype = p[2];
    rr->data_len = (uint16_t)(len - 3);
    rr->data = xmalloc(rr->data_len);
    memcpy(rr->data, p + 3, rr->data_len);
    /* presentation form (RFC 6698 2.2) for logs, the data cut at 64 octets */
    char tmp[16 + 2 * 64 + 4];
    int o = xsnprintf(tmp, sizeof(tmp), "%u %u %u ", p[0], p[1], p[2]);
    for (size_t i = 0; i < rr->data_len && i < 64 && o >= 0; i++)
        o += xsnprintf(tmp + o, sizeof(tmp) - (size_t)o, "%02x", rr->data[i]);
    if (rr->data_len > 64 && o >= 0)
        xsnprintf(tmp + o, sizeof(tmp) - (size_t)o, "...");
    rr->text = xstrdup(tmp);
    return 0;
}

void dns_record_clear(struct dns_record *rr)
{
    free(rr->text);
    free(rr->data);
    rr->text = NULL;
    rr->data = NULL;
}

static void result_free(struct dns_result *r)
{
    for (size_t i = 0; i < r->n; i++)
        dns_record_clear(&r->rr[i]);
    free(r->rr);
}

/* canon_of - the answer's final CNAME target when it differs from the query
 * name (without the trailing dot), else "" */
static void canon_of(const struct ub_result *ub, char *dst, size_t size)
{
    dst[0] = '\0';
    if (!ub->canonname || !ub->qname)
        return;
    size_t cl = strlen(ub->canonname), ql = strlen(ub->qname);
    if (cl && ub->canonname[cl - 1] == '.')
        cl--;
    if (ql && ub->qname[ql - 1] == '.')
        ql--;
    if (cl == 0 || cl >= size || (cl == ql && strncasecmp(ub->canonname, ub->qname, cl) == 0))
        return;
    memcpy(dst, ub->canonname, cl);
    dst[cl] = '\0';
}

/* mono_us - monotonic microseconds (DNS answers take about a millisecond on a LAN) */
static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* count_query - issue 11: one answered query, by result (metrics.c's set) */
static void count_query(const struct dns_query *q, const char *result)
{
    metrics_inc(M_DNS_QUERIES_TOTAL, (const char *[]){ result });
    metrics_observe(M_DNS_LATENCY_SECONDS, (double)(mono_us() - q->t0_us) / 1e6);
}

static void dns_ub_cb(void *arg, int err, struct ub_result *ub)
{
    struct dns_query *q = arg;
    struct dns *d = q->d;
    struct dns_result r = { .status = DNS_TEMPFAIL };
    char canon[DNS_MAX_NAME];
    const char *counted = "error";
    if (err != 0) {
        xsnprintf(r.why, sizeof(r.why), "resolver error: %s", ub_strerror(err));
    } else if (ub->bogus) {
        r.status = DNS_BOGUS;
        counted = "bogus";
        xsnprintf(r.why, sizeof(r.why), "DNSSEC validation failed: %s", ub->why_bogus ? ub->why_bogus : "bogus");
    } else if (ub->nxdomain || ub->rcode == 3) {
        r.status = DNS_NXDOMAIN;
        r.secure = ub->secure;
        counted = "nxdomain";
    } else if (ub->rcode != 0) {
        if (ub->rcode == 2)
            counted = "servfail";   /* also libunbound's answer to a timeout */
        static const char *const names[] = { "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED" };
        xsnprintf(r.why, sizeof(r.why), "resolver answered %s",
                  ub->rcode >= 0 && ub->rcode <= 5 ? names[ub->rcode] : "an error");
    } else if (!ub->havedata) {
        r.status = DNS_NODATA;
        r.secure = ub->secure;
        counted = "nodata";
    } else {
        size_t n = 0;
        while (ub->data[n] && n < DNS_MAX_RECORDS)
            n++;
        r.rr = xcalloc(n ? n : 1, sizeof(*r.rr));
        for (size_t i = 0; i < n; i++)
            if (parse_rdata(q->type, (const uint8_t *)ub->data[i], (size_t)ub->len[i], &r.rr[r.n]) == 0)
                r.n++;
        r.secure = ub->secure;
        if (r.n) {
            r.status = DNS_OK;
            counted = "ok";
            canon_of(ub, canon, sizeof(canon));
            if (canon[0])
                r.canon = canon;
        } else {
            xsnprintf(r.why, sizeof(r.why), "malformed answer");
        }
    }
    if (ub)
        ub_resolve_free(ub);
    count_query(q, counted);
    query_unlink(d, q);
    dns_cb cb = q->cb;
    void *cbarg = q->arg;
    free(q);
    if (cb)
        cb(cbarg, &r);
    result_free(&r);
}

/* dns_fail_later - a query that failed before libunbound: answer on the loop */
static void dns_fail_later(evutil_socket_t fd, short what, void *arg)
{
    struct dns_query *q = arg;
    event_free(q->ev);
    query_unlink(q->d, q);
    count_query(q, "error");
    if (q->cb) {
        struct dns_result r = { .status = DNS_TEMPFAIL };
        str_copy(r.why, sizeof(r.why), q->why);
        q->cb(q->arg, &r);
    }
    free(q);
}

struct dns_query *dns_query(struct dns *d, const char *name, enum dns_type type, dns_cb cb, void *arg)
{
    struct dns_query *q = xcalloc(1, sizeof(*q));
    q->d = d;
    q->cb = cb;
    q->arg = arg;
    q->type = type;
    q->t0_us = mono_us();
    q->next = d->queries;
    if (d->queries)
        d->queries->prev = q;
    d->queries = q;
    int rc = -1;
    if (name && *name && strlen(name) < DNS_MAX_NAME)
        rc = ub_resolve_async(d->ctx, name, (int)type, 1 /* IN */, q, dns_ub_cb, &q->async_id);
    else
        str_copy(q->why, sizeof(q->why), "invalid query name");
    if (rc != 0) {
        if (rc > 0 || rc < -1 || !q->why[0])
            xsnprintf(q->why, sizeof(q->why), "resolver error: %s", ub_strerror(rc));
        q->immediate = true;
        static const struct timeval now = { 0, 0 };
        q->ev = evtimer_new(d->base, dns_fail_later, q);
        if (q->ev == NULL || evtimer_add(q->ev, &now) < 0)
            log_fatal("event=dns_defer_failed");
    }
    return q;
}

void dns_cancel(struct dns *d, struct dns_query *q)
{
    if (!q)
        return;
    if (q->immediate)
        event_free(q->ev);   /* its deferred answer never comes */
    else
        ub_cancel(d->ctx, q->async_id);
    query_unlink(d, q);
    free(q);
}

struct event_base *dns_event_base(const struct dns *d)
{
    return d->base;
}

/* --- for dns_sync.c (issue 7): the same context setup and rdata parsing --- */

int dns_rdata_parse(enum dns_type type, const uint8_t *p, size_t len, struct dns_record *rr)
{
    return parse_rdata(type, p, len, rr);
}

int dns_ub_setup(struct ub_ctx *ctx, const struct dns_options *opt, struct error *err)
{
    const char *resolver = opt ? opt->resolver : NULL;
    const char *anchor = opt ? opt->trust_anchor_file : NULL;
    int rc;
    if (resolver && *resolver) {
        char fwd[160];
        if (resolver_to_fwd(resolver, fwd, sizeof(fwd)) < 0) {
            error_set(err, "resolver", "resolver must be ADDR, ADDR:PORT, [ADDR]:PORT or ADDR@PORT with an IP address: \"%s\"", resolver);
            return -1;
        }
        rc = ub_ctx_set_fwd(ctx, fwd);
    } else {
        rc = ub_ctx_resolvconf(ctx, NULL);
    }
    if (rc != 0) {
        error_set(err, "resolver", "cannot use resolver \"%s\": %s", resolver ? resolver : "", ub_strerror(rc));
        return -1;
    }
    if ((rc = ub_ctx_set_option(ctx, "infra-cache-max-rtt:", "300")) != 0 ||
        (rc = ub_ctx_set_option(ctx, "unknown-server-time-limit:", "250")) != 0 ||
        (rc = ub_ctx_set_option(ctx, "do-not-query-localhost:", "no")) != 0 ||
        (rc = ub_ctx_async(ctx, 1)) != 0) {
        error_set(err, "resolver", "libunbound setup: %s", ub_strerror(rc));
        return -1;
    }
    if (anchor && *anchor && add_trust_anchors(ctx, anchor, err) < 0)
        return -1;
    return 0;
}
