/*
 * deliver_dane.h - DANE for SMTP (RFC 7672): the per-MX-host decision.
 *
 * For a destination whose TLS policy is "dane", the delivery engine asks
 * dane_lookup() before connecting to each MX host.  The answer says how to
 * open the connection:
 *
 *   DANE_REQUIRED        secure TLSA RRset with usable records (DANE-TA(2),
 *                        DANE-EE(3)): TLS required, authenticated by the
 *                        records in a->tlsa (pass them to smtp_conn_open_dane);
 *                        a mismatch means no delivery to this MX host.
 *   DANE_ENCRYPT_ONLY    secure TLSA RRset, every record unusable (PKIX-TA(0),
 *                        PKIX-EE(1), unknown selector/matching type, bad
 *                        length): TLS required, certificate not checked
 *                        (RFC 7672 2.2).
 *   DANE_NOT_APPLICABLE  the MX RRset, the host's address records or the TLSA
 *                        RRset are not DNSSEC-secure, or the TLSA RRset is
 *                        securely denied (NXDOMAIN/NODATA): use the policy's
 *                        fallback mode.
 *   DANE_TEMPFAIL        the lookup failed (SERVFAIL, timeout): defer this MX.
 *   DANE_BOGUS           DNSSEC validation failed: defer this MX; never fall
 *                        back to clear text.
 *
 * Everything runs on the event loop; the DNS queries go through src/dns.
 */
#ifndef MOAT_DELIVER_DANE_H
#define MOAT_DELIVER_DANE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "../smtp/smtp_client.h"

struct dns;
struct dns_result;
struct dane_lookup;

enum dane_state { DANE_REQUIRED, DANE_ENCRYPT_ONLY, DANE_NOT_APPLICABLE, DANE_TEMPFAIL, DANE_BOGUS };

/* RFC 6698 2.1 certificate usages, selectors, matching types */
enum { DANE_USAGE_PKIX_TA = 0, DANE_USAGE_PKIX_EE = 1, DANE_USAGE_DANE_TA = 2, DANE_USAGE_DANE_EE = 3 };
enum { DANE_SELECTOR_CERT = 0, DANE_SELECTOR_SPKI = 1 };
enum { DANE_MTYPE_FULL = 0, DANE_MTYPE_SHA256 = 1, DANE_MTYPE_SHA512 = 2 };

/* bounds on the association data: SHA-256 32, SHA-512 64, full data at most */
#define DANE_TLSA_MAX_DATA 4096
/* at most this many records of one TLSA RRset are used */
#define DANE_TLSA_MAX_RECORDS 32

struct dane_tlsa { uint8_t usage, selector, mtype; uint16_t len; unsigned char *data; };

struct dane_answer {
    enum dane_state state;
    struct dane_tlsa *tlsa;   /* DANE_REQUIRED: the usable records only; else NULL */
    size_t n;
    char why[160];            /* human reason, e.g. "TLSA secure, 2 usable" */
    /* the TLSA base domain: the MX host name, or its CNAME target when the
     * records were found there (RFC 7672 2.2.2); a DANE-TA(2) certificate
     * may name either */
    char base[256];
};

typedef void (*dane_cb)(void *arg, const struct dane_answer *a);   /* a is valid during cb only */

/* dane_lookup - TLSA for one MX host at _<port>._tcp.<mx_host> (and at its
 * CNAME target, and the host's address records' DNSSEC status; see
 * deliver_dane.c); mx_secure is the MX answer's
 * `secure` flag (for a destination routed to a host without MX lookup, pass
 * true when the host name itself came from configuration).  cb is called
 * later on the loop, never inside; never NULL returned. */
struct dane_lookup *dane_lookup(struct dns *dns, const char *mx_host, int port, bool mx_secure,
                                dane_cb cb, void *arg);
/* dane_lookup_cancel - the callback will not be called; frees l */
void dane_lookup_cancel(struct dane_lookup *l);

const char *dane_state_name(enum dane_state s);   /* "required", "encrypt-only", ... */

/* dane_tlsa_usable - a record we can authenticate with: usage 2 or 3,
 * selector 0/1, matching type 0/1/2 with the right data length */
bool dane_tlsa_usable(const struct dane_tlsa *t);

/* dane_decide - the RFC 7672 decision as a pure function (unit-tested):
 * mx_secure, the address lookup's result (status + secure) and the TLSA
 * lookup's result -> state; why filled.  tlsa may be NULL when the TLSA
 * lookup was not made.  Records: the TLSA result's parsed records. */
enum dane_state dane_decide(bool mx_secure, const struct dns_result *addr,
                            const struct dns_result *tlsa, char *why, size_t why_size);

/* deliver_dane_level - the connection level for a state: REQUIRED ->
 * SMTP_CLIENT_TLS_DANE (smtp_conn_open_dane with the answer's records),
 * ENCRYPT_ONLY -> ENCRYPT, NOT_APPLICABLE -> fallback (the policy's
 * --fallback level); 0.  TEMPFAIL/BOGUS: -1, this MX host must not be used now */
int deliver_dane_level(enum dane_state st, enum smtp_client_tls fallback, enum smtp_client_tls *out);
/* deliver_dane_diag - a TLS failure under the dane policy as the delivery
 * diag: "4.7.5 TLS policy \"dane\" for DOMAIN: TLSA mismatch at MX[ip]:port:
 * reason" (a 4.7.x code of conn_diag is kept, any other becomes 4.7.5) */
void deliver_dane_diag(const char *domain, const char *conn_diag, char *dst, size_t size);

/* deliver_dane_probe - for the TLS policy probe (mode dane): for each MX
 * host of domain (MX preference order), the DANE state and, where DANE
 * applies, a test connection (STARTTLS authenticated by TLSA, EHLO, QUIT; no
 * mail) to the host's first IPv4 address.  cb gets a JSON array text, one
 * object per MX host: {"mx", "state" (dane_state_name), "result", "detail"}
 * with result one of "TLSA match", "TLSA mismatch" (detail: the 4.7.5
 * reason), "encrypt only", "insecure: fallback", "tempfail", "bogus",
 * "unreachable".  ok false when the domain has no MX host to test (MX lookup
 * failed, bogus, NXDOMAIN): the array then holds one object with result
 * "no MX host" and the reason in detail.
 * cc is copied; the strings and the SSL_CTX it points to must outlive the
 * probe.  cb is called later on the loop, once, then the probe is freed. */
struct deliver_dane_probe;
typedef void (*deliver_dane_probe_cb)(void *arg, bool ok, const char *json_text);
struct deliver_dane_probe *deliver_dane_probe(struct dns *dns, const struct smtp_client_config *cc,
                                              const char *domain, int port,
                                              deliver_dane_probe_cb cb, void *arg);
void deliver_dane_probe_cancel(struct deliver_dane_probe *p);

#endif
