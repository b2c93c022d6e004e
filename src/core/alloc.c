/*
 * alloc.c - allocation wrappers.  They never return NULL: running out of
 * memory, or a size computation that would overflow, aborts with a message
 * rather than letting a caller continue with a short buffer.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core.h"

/* alloc_die - report and abort; no allocation may happen here */
static _Noreturn void alloc_die(const char *what, size_t n, size_t size)
{
    fprintf(stderr, "level=fatal event=out_of_memory op=%s n=%zu size=%zu\n", what, n, size);
    abort();
}

void *xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL)
        alloc_die("malloc", 1, size);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        alloc_die("calloc-overflow", n, size);
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        alloc_die("calloc", n, size);
    return p;
}

void *xreallocarray(void *old, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        alloc_die("realloc-overflow", n, size);
    size_t total = n * size;
    void *p = realloc(old, total ? total : 1);
    if (p == NULL)
        alloc_die("realloc", n, size);
    return p;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    if (len == SIZE_MAX)
        alloc_die("strndup-overflow", 1, len);
    char *p = xmalloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *xasprintf(const char *fmt, ...)
{
    if (fmt == NULL)   /* also tells the compiler, quieting a UBSan-build false warning */
        alloc_die("asprintf-null", 0, 0);
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        alloc_die("asprintf-format", 1, 0);
    char *p = xmalloc((size_t)n + 1);
    vsnprintf(p, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return p;
}

int xsnprintf(char *dst, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst, size, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size)
        return -1;
    return n;
}
