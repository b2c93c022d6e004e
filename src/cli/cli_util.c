/*
 * cli_util.c - output helpers of the moat client: aligned tables, terminal-safe
 * strings (text from the daemon or the store can hold anything a remote SMTP
 * client sent, so control characters never reach the terminal), time and
 * duration formats, JSON output.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cli.h"

struct cli_table {
    int ncols;
    char **cells;      /* row-major; row 0 is the header */
    size_t nrows, cap;
};

void cli_print_json(json_t *v)
{
    char *text = json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY);
    json_decref(v);
    if (text != NULL) {
        fputs(text, stdout);
        fputc('\n', stdout);
        free(text);
    }
}

char *cli_safe(const char *s)
{
    if (s == NULL)
        return xstrdup("-");
    char *out = xstrdup(s);
    for (unsigned char *p = (unsigned char *)out; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            *p = '?';
    return out;
}

void cli_format_time(char *dst, size_t size, int64_t t)
{
    struct tm tm;
    /* a time stamp past the year 5138 in seconds is a time stamp in milliseconds */
    if (t > INT64_C(100000000000))
        t /= 1000;
    time_t tt = (time_t)t;
    if (t <= 0 || localtime_r(&tt, &tm) == NULL ||
        strftime(dst, size, "%Y-%m-%d %H:%M:%S", &tm) == 0)
        xsnprintf(dst, size, "-");
}

void cli_format_duration(char *dst, size_t size, int64_t s)
{
    if (s < 0)
        s = 0;
    if (s >= 86400)
        xsnprintf(dst, size, "%lldd %lldh", (long long)(s / 86400), (long long)(s % 86400 / 3600));
    else if (s >= 3600)
        xsnprintf(dst, size, "%lldh %lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
    else if (s >= 60)
        xsnprintf(dst, size, "%lldm %llds", (long long)(s / 60), (long long)(s % 60));
    else
        xsnprintf(dst, size, "%llds", (long long)s);
}

void cli_format_hostport(char *dst, size_t size, const char *host, int port)
{
    if (host == NULL)
        xsnprintf(dst, size, "-");
    else if (strchr(host, ':') != NULL)
        xsnprintf(dst, size, "[%s]:%d", host, port);
    else
        xsnprintf(dst, size, "%s:%d", host, port);
}

struct cli_table *cli_table_new(int ncols, const char *const *headers)
{
    struct cli_table *t = xcalloc(1, sizeof *t);
    t->ncols = ncols;
    if (headers != NULL)
        cli_table_add(t, headers);
    return t;
}

void cli_table_add(struct cli_table *t, const char *const *cells)
{
    if (t->nrows == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->cells = xreallocarray(t->cells, t->cap * (size_t)t->ncols, sizeof *t->cells);
    }
    for (int c = 0; c < t->ncols; c++)
        t->cells[t->nrows * (size_t)t->ncols + (size_t)c] = cli_safe(cells[c]);
    t->nrows++;
}

/* width - display columns of UTF-8 text, counting code points (not bytes) */
static size_t width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xc0) != 0x80)
            w++;
    return w;
}

void cli_table_print(struct cli_table *t, FILE *out)
{
    size_t *w = xcalloc((size_t)t->ncols, sizeof *w);
    for (size_t r = 0; r < t->nrows; r++)
        for (int c = 0; c < t->ncols; c++) {
            size_t cw = width(t->cells[r * (size_t)t->ncols + (size_t)c]);
            if (cw > w[c])
                w[c] = cw;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        for (int c = 0; c < t->ncols; c++) {
            const char *cell = t->cells[r * (size_t)t->ncols + (size_t)c];
            fputs(cell, out);
            if (c + 1 < t->ncols)
                fprintf(out, "%*s", (int)(w[c] - width(cell) + 2), "");
        }
        fputc('\n', out);
    }
    free(w);
}

void cli_table_free(struct cli_table *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->nrows * (size_t)t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}

const char *cli_jstr(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}
