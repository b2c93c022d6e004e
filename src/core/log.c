/*
 * log.c - one event a line, key=value, to stderr (journald or a terminal).
 * Each line is assembled in a stack buffer and written with a single
 * write(2), so lines from the commit thread and the loop never interleave.
 * Control characters in the caller's text are replaced: a CR or LF taken
 * from the network must never split one event into two.
 *
 * Under systemd, when stderr is the journal ($JOURNAL_STREAM names its
 * device and inode, systemd.exec(5)), each line starts with the syslog
 * priority "<N>" (sd-daemon(3)): journald strips it and files the line at
 * that priority, so `journalctl -p warning -u moatd` works.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "core.h"

#define LOG_LINE_MAX 4096

static const char *const level_names[] = { "debug", "info", "warn", "error", "fatal" };

/* syslog priorities of the levels: debug, info, warning, err, crit */
static const char *const journal_prefix[] = { "<7>", "<6>", "<4>", "<3>", "<2>" };

/* set once at start (before any thread exists), then only read */
static enum log_level log_min = LOG_INFO;
static bool log_journal;    /* stderr is the journal: priority prefixes */

/* log_stderr_is_journal - $JOURNAL_STREAM ("DEV:INODE") is our stderr */
static bool log_stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_set_level(enum log_level min)
{
    log_min = min;
    log_journal = log_stderr_is_journal();
}

enum log_level log_get_level(void)
{
    return log_min;
}

int log_parse_level(const char *s, enum log_level *out)
{
    for (int i = 0; i <= LOG_FATAL; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_vmsg(enum log_level lvl, const char *fmt, va_list ap)
{
    if (lvl < log_min)
        return;
    char line[LOG_LINE_MAX];
    char ts[40];
    uint64_t now = time_wall_ms();
    time_t secs = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    int n = snprintf(line, sizeof line, "%sts=%s.%03uZ level=%s ",
                     log_journal ? journal_prefix[lvl] : "", ts,
                     (unsigned)(now % 1000), level_names[lvl]);
    if (n < 0)
        return;
    size_t off = (size_t)n;
    int m = vsnprintf(line + off, sizeof line - off - 1, fmt, ap);
    if (m < 0)
        return;
    size_t end = off + (size_t)m;
    if (end > sizeof line - 2) {
        end = sizeof line - 2;
        memcpy(line + end - 3, "...", 3);
    }
    for (size_t i = off; i < end; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c < 0x20 || c == 0x7f)
            line[i] = '?';
    }
    line[end++] = '\n';
    /* one write: atomic for lines below PIPE_BUF on pipes, and never torn by us */
    ssize_t w = write(STDERR_FILENO, line, end);
    (void)w;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(lvl, fmt, ap);
    va_end(ap);
}

void log_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(LOG_FATAL, fmt, ap);
    va_end(ap);
    _exit(75);   /* EX_TEMPFAIL: a supervisor restarts us; recovery rescans */
}

const char *log_quote(char *dst, size_t size, const char *s)
{
    size_t o = 0;
    if (size < 3) {
        if (size)
            dst[0] = '\0';
        return dst;
    }
    dst[o++] = '"';
    for (; *s && o + 3 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f)
            continue;
        if (c == '"' || c == '\\') {
            if (o + 4 >= size)
                break;
            dst[o++] = '\\';
        }
        dst[o++] = (char)c;
    }
    dst[o++] = '"';
    dst[o] = '\0';
    return dst;
}

void error_set(struct error *e, const char *field, const char *fmt, ...)
{
    if (e == NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    snprintf(e->field, sizeof e->field, "%s", field ? field : "");
}
