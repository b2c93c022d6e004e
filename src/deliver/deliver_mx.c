/*
 * deliver_mx.c - MX ordering (RFC 5321 5.1) and MTA-STS MX pattern matching
 * (RFC 8461 4.1); see deliver_mx.h.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sodium.h>
#include "deliver_mx.h"

static uint32_t sodium_uniform(uint32_t n)
{
    return randombytes_uniform(n);
}

/* deliver_mx_order - insertion sort (stable, n <= a few dozen), then a
 * Fisher-Yates shuffle inside each run of equal preference */
void deliver_mx_order(struct dns_record *rr, size_t n, uint32_t (*uniform)(uint32_t n))
{
    if (uniform == NULL)
        uniform = sodium_uniform;
    for (size_t i = 1; i < n; i++) {
        struct dns_record t = rr[i];
        size_t j = i;
        for (; j > 0 && rr[j - 1].pref > t.pref; j--)
            rr[j] = rr[j - 1];
        rr[j] = t;
    }
    for (size_t a = 0; a < n;) {
        size_t b = a + 1;
        while (b < n && rr[b].pref == rr[a].pref)
            b++;
        for (size_t k = b - a; k > 1; k--) {
            size_t r = a + uniform((uint32_t)k);
            struct dns_record t = rr[a + k - 1];
            rr[a + k - 1] = rr[r];
            rr[r] = t;
        }
        a = b;
    }
}

/* name_len - length without a trailing dot */
static size_t name_len(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && s[n - 1] == '.' ? n - 1 : n;
}

bool deliver_mx_pattern_match(const char *pattern, const char *host)
{
    size_t pl = name_len(pattern), hl = name_len(host);
    if (pl == 0 || hl == 0)
        return false;
    if (pl > 2 && pattern[0] == '*' && pattern[1] == '.') {
        /* the wildcard stands for exactly one label: "*.example.com" matches
         * "mx.example.com", not "example.com" nor "a.b.example.com" */
        const char *dot = memchr(host, '.', hl);
        if (dot == NULL || dot == host)
            return false;
        size_t rest = hl - (size_t)(dot - host);   /* ".example.com" */
        return rest == pl - 1 && strncasecmp(dot, pattern + 1, rest) == 0;
    }
    return pl == hl && strncasecmp(pattern, host, hl) == 0;
}
