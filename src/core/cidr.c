/*
 * cidr.c - address ranges: parse, format, membership (cidr.h).
 *
 * inet_pton does the address syntax; this file adds the prefix length, the
 * IPv4-mapped IPv6 rule (RFC 4291 2.5.5.2: ::ffff:a.b.c.d is an IPv4 host)
 * and the host-bits check.
 */
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include "cidr.h"

static const unsigned char v4_mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

/* unmap - an IPv4-mapped IPv6 address becomes IPv4 in place */
static void unmap(int *family, unsigned char addr[16])
{
    if (*family == AF_INET6 && memcmp(addr, v4_mapped_prefix, 12) == 0) {
        memmove(addr, addr + 12, 4);
        memset(addr + 4, 0, 12);
        *family = AF_INET;
    }
}

int cidr_addr_from_text(const char *text, int *family, unsigned char addr[16])
{
    memset(addr, 0, 16);
    if (strchr(text, ':') != NULL) {
        if (inet_pton(AF_INET6, text, addr) != 1)
            return -1;
        *family = AF_INET6;
    } else {
        if (inet_pton(AF_INET, text, addr) != 1)
            return -1;
        *family = AF_INET;
    }
    unmap(family, addr);
    return 0;
}

/* parse_prefix - decimal 0..max without sign or leading zeros; -1 bad */
static int parse_prefix(const char *s, int max)
{
    if (*s == '\0' || strlen(s) > 3 || (s[0] == '0' && s[1] != '\0'))
        return -1;
    int v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v <= max ? v : -1;
}

int cidr_parse(const char *text, struct cidr *out, struct error *err)
{
    char buf[CIDR_TEXT_MAX];
    memset(out, 0, sizeof *out);
    if (text == NULL || text[0] == '\0') {
        error_set(err, "cidr", "an address or address/prefix is required");
        return -1;
    }
    if (str_copy(buf, sizeof buf, text) < 0) {
        error_set(err, "cidr", "not an address range: too long");
        return -1;
    }
    char *slash = strchr(buf, '/');
    if (slash != NULL)
        *slash = '\0';
    bool mapped = strchr(buf, ':') != NULL && strchr(buf, '.') != NULL;
    if (cidr_addr_from_text(buf, &out->family, out->addr) < 0) {
        error_set(err, "cidr", "not an IPv4 or IPv6 address: \"%.64s\"", buf);
        return -1;
    }
    int max = out->family == AF_INET ? 32 : 128;
    if (slash == NULL) {
        out->prefix = max;
    } else {
        /* a mapped address was written in IPv6 terms: its prefix counts 96 more */
        int p = parse_prefix(slash + 1, mapped && out->family == AF_INET ? 128 : max);
        if (p < 0) {
            error_set(err, "cidr", "prefix length must be 0..%d: \"%.16s\"", max, slash + 1);
            return -1;
        }
        if (mapped && out->family == AF_INET) {
            if (p < 96) {
                error_set(err, "cidr", "an IPv4-mapped range needs a prefix of 96..128");
                return -1;
            }
            p -= 96;
        }
        out->prefix = p;
    }
    size_t octets = out->family == AF_INET ? 4 : 16;
    for (size_t i = 0; i < octets; i++) {
        int bits = out->prefix - (int)i * 8;
        unsigned char mask = bits >= 8 ? 0xff : bits <= 0 ? 0 : (unsigned char)(0xff << (8 - bits));
        if (out->addr[i] & (unsigned char)~mask) {
            error_set(err, "cidr", "\"%.64s\" has host bits set beyond /%d", text, out->prefix);
            return -1;
        }
    }
    return 0;
}

int cidr_format(const struct cidr *c, char *dst, size_t size)
{
    char a[INET6_ADDRSTRLEN];
    if (inet_ntop(c->family, c->addr, a, sizeof a) == NULL)
        return -1;
    return xsnprintf(dst, size, "%s/%d", a, c->prefix) < 0 ? -1 : 0;
}

bool cidr_contains_addr(const struct cidr *c, int family, const unsigned char *addr)
{
    unsigned char a[16] = {0};
    memcpy(a, addr, family == AF_INET ? 4 : 16);
    unmap(&family, a);
    if (family != c->family)
        return false;
    int full = c->prefix / 8, rest = c->prefix % 8;
    if (memcmp(a, c->addr, (size_t)full) != 0)
        return false;
    if (rest == 0)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[full] & mask) == c->addr[full];
}

bool cidr_contains(const struct cidr *c, const struct sockaddr *sa)
{
    if (sa == NULL)
        return false;
    if (sa->sa_family == AF_INET)
        return cidr_contains_addr(c, AF_INET,
                                  (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr);
    if (sa->sa_family == AF_INET6)
        return cidr_contains_addr(c, AF_INET6,
                                  (const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return false;
}

int cidr_list_parse(const char *text, struct cidr *out, size_t max, size_t *n,
                    struct error *err)
{
    *n = 0;
    const char *p = text + strspn(text, " \t");
    if (*p == '\0')
        return 0;   /* the empty list */
    for (;;) {
        p += strspn(p, " \t");
        size_t len = strcspn(p, ",");
        size_t trimmed = len;
        while (trimmed > 0 && (p[trimmed - 1] == ' ' || p[trimmed - 1] == '\t'))
            trimmed--;
        char item[CIDR_TEXT_MAX];
        if (trimmed == 0) {
            error_set(err, "cidr", "an empty item in the list of address ranges");
            return -1;
        }
        if (*n >= max) {
            error_set(err, "cidr", "at most %zu address ranges", max);
            return -1;
        }
        if (trimmed >= sizeof item) {
            error_set(err, "cidr", "\"%.20s...\" is not an address range", p);
            return -1;
        }
        memcpy(item, p, trimmed);
        item[trimmed] = '\0';
        if (cidr_parse(item, &out[*n], err) < 0)
            return -1;
        (*n)++;
        if (p[len] == '\0')
            return 0;
        p += len + 1;
    }
}
