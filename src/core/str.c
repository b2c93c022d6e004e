/*
 * str.c - small string helpers: bounded copy, ASCII case handling (mail
 * domains and SMTP verbs are ASCII-case-insensitive; locale must not
 * matter) and a strict UTF-8 validator for SMTPUTF8 input.
 */
#include <string.h>
#include "core.h"

int str_copy(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (size == 0)
        return -1;
    if (n >= size) {
        dst[0] = '\0';
        return -1;
    }
    memcpy(dst, src, n + 1);
    return (int)n;
}

static inline char ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
}

char *str_lower(char *s)
{
    for (char *p = s; *p; p++)
        *p = ascii_lower(*p);
    return s;
}

bool str_ieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (ascii_lower(*a) != ascii_lower(*b))
            return false;
    return *a == *b;
}

bool str_has_suffix_ci(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    if (m > n)
        return false;
    return str_ieq(s + n - m, suffix);
}

/* str_valid_utf8 - RFC 3629: rejects overlong forms, surrogates, > U+10FFFF */
bool str_valid_utf8(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            n = 1;
        else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            if (c == 0xE0) lo = 0xA0;
            if (c == 0xED) hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            if (c == 0xF0) lo = 0x90;
            if (c == 0xF4) hi = 0x8F;
        } else
            return false;
        if (len - i <= n)   /* the n continuation bytes must all be there */
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k <= n; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return false;
        i += n + 1;
    }
    return true;
}
