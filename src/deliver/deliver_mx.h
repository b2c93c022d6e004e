/*
 * deliver_mx.h - private to src/deliver: the order in which MX hosts are
 * tried, and MTA-STS "mx" pattern matching, as pure functions (unit-tested
 * in tests/unit/test_deliver_mx.c).
 */
#ifndef MOAT_DELIVER_MX_H
#define MOAT_DELIVER_MX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "../dns/dns.h"

/* deliver_mx_order - RFC 5321 5.1: lowest preference first, and hosts of
 * equal preference in random order (spreads the load the way the domain
 * asked).  uniform(n) returns a uniform value in [0, n); NULL uses libsodium */
void deliver_mx_order(struct dns_record *rr, size_t n, uint32_t (*uniform)(uint32_t n));

/* deliver_mx_pattern_match - RFC 8461 4.1: host matches an "mx" pattern of
 * an MTA-STS policy: equal (case-insensitive, trailing dots ignored), or the
 * pattern "*.example.com" matching exactly one extra left-most label */
bool deliver_mx_pattern_match(const char *pattern, const char *host);

#endif
