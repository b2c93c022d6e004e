/*
 * deliver_dkim.h - DKIM signing of outbound mail (RFC 6376, RFC 8463) and
 * the keys and DNS records behind it.
 *
 * Two halves:
 *   deliver_dkim_key.c - pure functions, any thread: key generation (OpenSSL
 *     EVP), the DNS record to publish (and its split into <= 255-octet
 *     strings), the tag=value parser for published records, and
 *     dkim_record_matches for Connect's outbound check.
 *   deliver_dkim.c - the signing key set (loaded and decrypted by moatd's
 *     reload thread, swapped in on the loop like the routing snapshot; kept
 *     out of the snapshot so the snapshot never needs the auth key) and
 *     dkim_sign_message, which the delivery engine calls on the loop the
 *     first time a message goes to an external (MX) destination.
 */
#ifndef MOAT_DELIVER_DKIM_H
#define MOAT_DELIVER_DKIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "../core/core.h"

struct store;
struct store_snapshot;
struct auth;

/* RFC 6376 3.1: a selector is a sub-domain: dot-separated labels */
#define DKIM_SELECTOR_MAX 63
/* a published record we are willing to look at (an RSA 4096 record is ~ 750) */
#define DKIM_TXT_MAX 8192
/* tags in one record or signature (a record has 2..7 in practice) */
#define DKIM_TAGS_MAX 32
/* RFC 1035 3.3.14: one character-string of a TXT record is at most 255 octets */
#define DKIM_TXT_STRING_MAX 255
/* the sealed-secret label of a private key (auth_secret_seal associated data) */
#define DKIM_KEY_LABEL "dkim-private-key"

/* --- keys and records (deliver_dkim_key.c) --- */

/* dkim_algorithm_valid - "rsa" or "ed25519" */
bool dkim_algorithm_valid(const char *alg);
/* dkim_selector_valid - LDH labels separated by dots, 1..DKIM_SELECTOR_MAX */
bool dkim_selector_valid(const char *sel);

/* dkim_keygen - a new key: RSA 2048 or Ed25519.  *pem is the private key
 * (PKCS#8 PEM; caller wipes and frees), *p the record's base64 p= value
 * (RSA: SubjectPublicKeyInfo DER; Ed25519: the raw 32 octets, RFC 8463). */
int dkim_keygen(const char *alg, char **pem, char **p, struct error *err);

/* dkim_record_value - "v=DKIM1; k=ALG; p=P" (allocated) */
char *dkim_record_value(const char *alg, const char *p);
/* dkim_record_name - "SELECTOR._domainkey.DOMAIN" into dst; -1 when too long */
int dkim_record_name(const char *selector, const char *domain, char *dst, size_t size);
/* dkim_txt_split - value as quoted TXT character-strings of at most max
 * octets each (max 1..255), separated by sep: "\"a...\" \"b...\"".  The
 * value is plain ASCII without '"' or '\\' (a record we made).  Allocated. */
char *dkim_txt_split(const char *value, size_t max, const char *sep);
/* dkim_record_zone - the zone-file line(s) to publish (allocated):
 * NAME. IN TXT ( "..." "..." ) */
char *dkim_record_zone(const char *selector, const char *domain, const char *value);

/* one tag of a tag=value list (RFC 6376 3.2), pointing into the parsed text */
struct dkim_tag {
    const char *name;
    size_t name_len;
    const char *value;            /* may contain folding whitespace */
    size_t value_len;
};
struct dkim_tags {
    struct dkim_tag t[DKIM_TAGS_MAX];
    size_t n;
};

/* dkim_tags_parse - a tag=value list of len octets (at most DKIM_TXT_MAX);
 * tag names ALPHA *(ALPHA / DIGIT / "_"), no duplicates, values printable
 * ASCII without ';'.  0 ok, -1 with why. */
int dkim_tags_parse(const char *txt, size_t len, struct dkim_tags *out, char *why, size_t whylen);
/* dkim_tag_get - the tag named name, or NULL */
const struct dkim_tag *dkim_tag_get(const struct dkim_tags *tags, const char *name);

/* dkim_record_matches - does the published TXT value (its strings
 * concatenated) carry this key?  v=DKIM1 (if present, first), k= equal to
 * algorithm ("rsa" when absent), p= equal to expected_p after removing
 * whitespace.  1 match, 0 mismatch (why says what differs). */
int dkim_record_matches(const char *published_txt, const char *expected_p, const char *algorithm,
                        char *why, size_t whylen);

/* --- signing (deliver_dkim.c) --- */

struct dkim_keyset;

/* dkim_keyset_load - every active key, decrypted with the auth key (on the
 * reload thread: it reads the store).  A key that cannot be opened is
 * logged and left out; the rest still sign. */
struct dkim_keyset *dkim_keyset_load(struct store *st, const struct auth *a, struct error *err);
void dkim_keyset_free(struct dkim_keyset *ks);
size_t dkim_keyset_count(const struct dkim_keyset *ks);

/* dkim_sign_message - on the loop.  When the message's header From domain
 * (or else the envelope sender's) is internal in snap (itself or a
 * subdomain) and it or a parent has a key in ks, *hdr gets the complete
 * "DKIM-Signature: ...\r\n" field to send before the first header line
 * and 1 is returned.  0: nothing to sign with; -1: signing failed (logged;
 * the caller sends unsigned, never holds the mail).  read is the message
 * reader of smtp_client_msg (canonical CRLF, unstuffed). */
int dkim_sign_message(const struct dkim_keyset *ks, const struct store_snapshot *snap,
                      const char *qid, const char *env_sender,
                      ssize_t (*read)(void *arg, uint64_t off, void *buf, size_t len), void *arg,
                      char **hdr, size_t *hdr_len);

/* dkim_header_from_domain - the domain of the first address of the From
 * field in a header section (CRLF lines), lower case, into dst; -1 when
 * there is none (exposed for the unit tests) */
int dkim_header_from_domain(const char *head, size_t len, char *dst, size_t size);

#endif
