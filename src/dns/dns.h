/*
 * dns.h - asynchronous DNS on the event loop (libunbound, forwarding to the
 * configured resolver).  Queries never block the loop: libunbound's fd is
 * watched by libevent and results are delivered by callback.
 *
 * A resolver error or timeout is DNS_TEMPFAIL ("unknown"), never a negative
 * answer: callers must not treat it as "the record is not there".
 */
#ifndef MOAT_DNS_H
#define MOAT_DNS_H

#include <stdbool.h>
#include <stdint.h>
#include "../core/core.h"

struct event_base;
struct dns;
struct dns_query;

enum dns_type { DNS_T_A = 1, DNS_T_MX = 15, DNS_T_TXT = 16, DNS_T_AAAA = 28, DNS_T_TLSA = 52, DNS_T_PTR = 12 };

enum dns_status {
    DNS_OK = 0,        /* answer with data */
    DNS_NXDOMAIN,      /* the name does not exist */
    DNS_NODATA,        /* the name exists, no record of this type */
    DNS_TEMPFAIL,      /* SERVFAIL, timeout, resolver unreachable: unknown */
    DNS_BOGUS,         /* DNSSEC validation failed */
};

/* RFC 6698 2.1: bounds on TLSA association data (SHA-256 32 octets,
 * SHA-512 64, a full certificate or key at most this) */
#define DNS_TLSA_MAX_DATA 4096

struct dns_record {
    int pref;          /* MX preference; 0 otherwise */
    char *text;        /* A/AAAA: address text; MX/PTR: host name without
                        * the trailing dot; TXT: the strings concatenated;
                        * TLSA: "usage selector mtype hex" (hex cut at 64 octets) */
    /* TLSA only (RFC 6698 2.1): the fields and the association data */
    uint8_t usage, selector, mtype;
    uint16_t data_len;
    unsigned char *data;
};

struct dns_result {
    enum dns_status status;
    bool secure;       /* DNSSEC-validated */
    size_t n;
    struct dns_record *rr;
    char why[160];     /* human reason for TEMPFAIL/BOGUS */
    /* DNS_OK reached through a CNAME chain: its final target (no trailing
     * dot), valid during the callback only; NULL otherwise */
    const char *canon;
};

typedef void (*dns_cb)(void *arg, const struct dns_result *r);

struct dns_options {
    const char *resolver;          /* "ADDR:PORT", "ADDR@PORT", "ADDR" or "" (system resolv.conf) */
    /* DNSSEC trust anchor file (DS or DNSKEY lines, e.g. /usr/share/dns/root.key)
     * for libunbound's own validation; NULL or "" = no anchor: no answer is
     * `secure`, so DANE never applies */
    const char *trust_anchor_file;
};

/* dns_create - a resolver on base with the options above */
struct dns *dns_create(struct event_base *base, const struct dns_options *opt, struct error *err);
/* dns_shutdown - answer every pending query now with DNS_TEMPFAIL ("the
 * resolver is shutting down"), on the calling (loop) thread: for teardown,
 * while the modules that asked still exist */
void dns_shutdown(struct dns *d);
void dns_free(struct dns *d);   /* cancels pending queries without calling back */
/* dns_query - cb is always called later from the loop, never inside dns_query */
struct dns_query *dns_query(struct dns *d, const char *name, enum dns_type type, dns_cb cb, void *arg);
void dns_cancel(struct dns *d, struct dns_query *q);
/* dns_event_base - the loop the resolver answers on (for callers that must
 * answer later without a query) */
struct event_base *dns_event_base(const struct dns *d);
const char *dns_status_name(enum dns_status s);
/* dns_tlsa_parse - TLSA rdata (RFC 6698 2.1) at p[0..len) into rr (usage,
 * selector, mtype, data, text); 0, or -1 when shorter than 4 octets or the
 * data is longer than DNS_TLSA_MAX_DATA.  Pure (fuzzed by fuzz_dns_tlsa). */
int dns_tlsa_parse(const uint8_t *p, size_t len, struct dns_record *rr);
/* dns_record_clear - free what one parsed record owns */
void dns_record_clear(struct dns_record *rr);

/* for dns_sync.c: configure a libunbound context like dns_create does
 * (forwarder, short timeouts, trust anchors); parse one rdata */
struct ub_ctx;
int dns_ub_setup(struct ub_ctx *ctx, const struct dns_options *opt, struct error *err);
int dns_rdata_parse(enum dns_type type, const uint8_t *p, size_t len, struct dns_record *rr);

#endif
