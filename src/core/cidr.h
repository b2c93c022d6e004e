/*
 * cidr.h - IPv4 / IPv6 address ranges ("192.0.2.0/24", "2001:db8::/32", or a
 * single address), shared by the store, the API, the SMTP loop and Connect.
 *
 * cidr_parse accepts "addr" (a /32 or /128) or "addr/len"; an IPv4-mapped
 * IPv6 address (::ffff:192.0.2.1) is read as the IPv4 address it maps, so
 * one range matches a client whichever socket family it arrived on.  Host
 * bits set beyond the prefix are refused (the text would not say what the
 * administrator meant).  cidr_format writes the canonical text.
 */
#ifndef MOAT_CIDR_H
#define MOAT_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include "core.h"

struct sockaddr;

#define CIDR_TEXT_MAX 64     /* INET6_ADDRSTRLEN + "/128" */

struct cidr {
    int family;              /* AF_INET or AF_INET6 */
    unsigned char addr[16];  /* network order; 4 octets used for AF_INET */
    int prefix;              /* 0..32 or 0..128 */
};

/* cidr_parse - text into out; -1 with err (field "cidr") on bad input */
int cidr_parse(const char *text, struct cidr *out, struct error *err);
/* cidr_format - canonical text ("192.0.2.0/24", "2001:db8::/32"); -1 if dst is short */
int cidr_format(const struct cidr *c, char *dst, size_t size);
/* cidr_contains_addr - addr (family's octets, network order) is inside c;
 * an IPv4-mapped IPv6 address counts as IPv4 */
bool cidr_contains_addr(const struct cidr *c, int family, const unsigned char *addr);
/* cidr_contains - the same for a socket address (AF_INET / AF_INET6) */
bool cidr_contains(const struct cidr *c, const struct sockaddr *sa);
/* cidr_addr_from_text - a literal address ("127.0.0.1", "::1") into family/addr;
 * a mapped IPv6 address becomes IPv4.  -1 when it is not an address */
int cidr_addr_from_text(const char *text, int *family, unsigned char addr[16]);
/* cidr_list_parse - "a/len, b, ..." (comma-separated, blanks around items
 * ignored; "" is the empty list) into out[0..*n); -1 with err (field
 * "cidr") on a bad item or more than max items (issue 11: metrics_allow) */
int cidr_list_parse(const char *text, struct cidr *out, size_t max, size_t *n,
                    struct error *err);

#endif
