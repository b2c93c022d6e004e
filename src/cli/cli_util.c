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

int cli_list_table(struct cli_ctx *ctx, const char *path, const char *none, int ncols,
                   const char *const *hdr, const char *const *keys)
{
    json_t *all = cli_api_all(ctx, path);
    if (all == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(all);
        return CLI_OK;
    }
    if (json_array_size(all) == 0 && none != NULL) {
        printf("%s\n", none);
        json_decref(all);
        return CLI_OK;
    }
    struct cli_table *t = cli_table_new(ncols, hdr);
    const char **row = xcalloc((size_t)ncols, sizeof *row);
    char (*num)[32] = xcalloc((size_t)ncols, sizeof *num);
    size_t i;
    json_t *item;
    json_array_foreach(all, i, item) {
        for (int c = 0; c < ncols; c++) {
            json_t *v = json_object_get(item, keys[c]);
            if (json_is_integer(v)) {
                xsnprintf(num[c], sizeof num[c], "%lld", (long long)json_integer_value(v));
                row[c] = num[c];
            } else {
                row[c] = cli_jstr(item, keys[c]);
            }
        }
        cli_table_add(t, row);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    free(num);
    free(row);
    json_decref(all);
    return CLI_OK;
}

char *cli_item_path(const char *base, const char *seg, const char *suffix)
{
    char *e = cli_escape(seg);
    char *p = xasprintf("%s/%s%s", base, e, suffix ? suffix : "");
    free(e);
    return p;
}

int cli_delete_item(struct cli_ctx *ctx, const char *base, const char *seg, const char *shown,
                    const char *json_key, const char *done_fmt)
{
    char *p = cli_item_path(base, seg, NULL);
    json_t *r = cli_api(ctx, "DELETE", p, NULL, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    json_decref(r);
    char *k = cli_safe(shown);
    if (ctx->json)
        cli_print_json(json_pack("{s:s, s:b}", json_key, k, "removed", 1));
    else
        printf(done_fmt, k);
    free(k);
    return CLI_OK;
}
