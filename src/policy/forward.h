/*
 * forward.h - forwarding addresses and the Sender Rewriting Scheme
 * (policy_forward.c), issue 7.
 *
 * Forwarding is applied after acceptance, at commit: the recipients the
 * session accepted (validated as themselves) become the targets of their
 * rules.  A target outside the organisation's domains gets the message with
 * an SRS envelope sender under the original recipient's domain, so SPF
 * passes at the destination; a bounce to that address is accepted only
 * when its hash and age check out (policy check "srs_bounce") and goes back
 * to the original sender.
 *
 * SRS0 address: SRS0=HHHHHH=TT=orig-domain=orig-local@forwarding-domain,
 * HHHHHH = the first 30 bits of HMAC-SHA256(key, lower("TT=orig-domain=orig-local"))
 * in base32, TT = days since the epoch mod 1024 in base32.  The key is a
 * subkey of STATE/secret.key (auth_derive_key).  Pure functions, no globals.
 */
#ifndef MOAT_FORWARD_H
#define MOAT_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "../store/store.h"

#define SRS_KEY_LEN 32
#define SRS_MAX_AGE_DAYS 21        /* a bounce later than this is refused */
#define FORWARD_ADDR_MAX 600       /* an SRS address of a 64 + 255 octet sender fits */
#define FORWARD_MAX_TARGETS 32     /* rules applied per recipient */

/* srs_forward - the SRS0 address for sender, at domain (the original
 * recipient's), at unix time now; -1 when sender has no domain or the
 * result does not fit */
int srs_forward(const unsigned char key[SRS_KEY_LEN], const char *sender, const char *domain,
                int64_t now, char *out, size_t size);

enum srs_result { SRS_OK = 0, SRS_NOT_SRS, SRS_MALFORMED, SRS_BAD_HASH, SRS_EXPIRED };
/* srs_reverse - the original sender of an SRS0 address (out), checking the
 * hash and that it is at most SRS_MAX_AGE_DAYS old */
enum srs_result srs_reverse(const unsigned char key[SRS_KEY_LEN], const char *addr, int64_t now,
                            char *out, size_t size);
/* srs_is_srs - the address's local part starts with SRS0= (case-insensitive) */
bool srs_is_srs(const char *addr);

struct forward_target {
    char addr[FORWARD_ADDR_MAX];
    char fwd_for[FORWARD_ADDR_MAX];   /* "" = delivered as itself */
    char sender[FORWARD_ADDR_MAX];    /* "" = the message's envelope sender */
};

/* forward_expand - where mail accepted for rcpt goes: the reversed sender
 * of a valid SRS0 bounce address; else the targets of rcpt's rules (and
 * rcpt itself for copy rules), each marked with fwd_for = rcpt and, when
 * the target is outside the snapshot's domains and key is not NULL, an SRS
 * sender; else rcpt itself.  Rules apply once: a target is not expanded
 * again, so no rule set can loop.  Returns the count written to out (>= 1). */
size_t forward_expand(const struct store_snapshot *snap, const unsigned char *key,
                      const char *sender, const char *rcpt, int64_t now,
                      struct forward_target *out, size_t max);

#endif
