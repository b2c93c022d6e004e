/*
 * core.h - the small toolkit every module uses: allocation wrappers that never
 * return NULL, a length-carrying byte buffer for network data, checked string
 * formatting, key=value logging and time helpers.
 *
 * Ownership: a struct buf owns its storage; buf_free() releases it.  Loggers
 * are thread-safe: each line is written with a single write(2).
 */
#ifndef MOAT_CORE_H
#define MOAT_CORE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <time.h>

#define MOAT_VERSION "0.1.0"

/* --- allocation: abort with a message on failure or size overflow --- */
void *xmalloc(size_t size);
void *xcalloc(size_t n, size_t size);
void *xreallocarray(void *p, size_t n, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* xsnprintf - snprintf that returns -1 on truncation or error, else the length */
int xsnprintf(char *dst, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* strlcpy-like copy: returns -1 (and copies nothing useful) on truncation */
int str_copy(char *dst, size_t size, const char *src);
/* ASCII lower-case in place; returns s */
char *str_lower(char *s);
bool str_ieq(const char *a, const char *b);
bool str_has_suffix_ci(const char *s, const char *suffix);
/* str_valid_utf8 - true when [s, s+len) is well-formed UTF-8 (no overlongs, no surrogates) */
bool str_valid_utf8(const char *s, size_t len);

/* --- buffers --- */
struct buf {
    char *data;
    size_t len;
    size_t cap;
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);
void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *data, size_t len);
void buf_append_str(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* buf_consume - drop n bytes from the front */
void buf_consume(struct buf *b, size_t n);
/* buf_cstr - NUL-terminate (not counted in len) and return data */
const char *buf_cstr(struct buf *b);

/* --- errors for callers that need a reason --- */
struct error {
    char msg[512];
    char field[64];   /* the offending key / field, "" if none */
    int line;         /* line number for file errors, 0 if none */
};
void error_set(struct error *e, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* --- logging: one event a line, key=value --- */
enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_FATAL };

void log_set_level(enum log_level min);
enum log_level log_get_level(void);
int log_parse_level(const char *s, enum log_level *out);
/* log_msg - "ts=… level=… " prefix, then the caller's key=value text.
 * Control characters are replaced so one event stays one line. */
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(enum log_level lvl, const char *fmt, va_list ap);
_Noreturn void log_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define log_debug(...) do { if (log_get_level() <= LOG_DEBUG) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

/* log_quote - copy s into dst as a log value: quotes, escapes '"' and '\', drops controls */
const char *log_quote(char *dst, size_t size, const char *s);

/* --- time --- */
uint64_t time_mono_ms(void);      /* monotonic clock */
uint64_t time_wall_ms(void);      /* CLOCK_REALTIME */
/* time_rfc5322 - "Sat, 28 Nov 2026 18:39:50 +0000" into dst (>= 40 bytes) */
void time_rfc5322(char *dst, size_t size, time_t t);
/* time_iso8601 - "2026-11-28T18:39:50Z" into dst (>= 32 bytes) */
void time_iso8601(char *dst, size_t size, time_t t);

/* --- checksums --- */
uint32_t crc32c(uint32_t crc, const void *data, size_t len);

#endif
