/*
 * archive_query.c - the archive's search language (archive_query.h) into a
 * struct store_archive_query.
 *
 * One pass over the string: a term is an optional operator ("from:",
 * "to:", "subject:", "before:", "after:", "has:"; letters then a colon)
 * and a value, either a run of non-blank characters or a "quoted phrase".
 * Operators are a table (term_ops[]): name and the function that takes the
 * value.  Words keep letters, digits, non-ASCII characters and those of
 * addresses; anything else (FTS syntax: * ^ ( ) { } : - ...) becomes a
 * space, which splits it the way the full-text tokenizer would anyway, so
 * the store receives plain words and phrases only.  Errors name the term,
 * shown with its non-printable octets as '?'.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "archive_query.h"

#define TERM_SHOWN_MAX 64

/* shown - a term fit for an error message: at most TERM_SHOWN_MAX octets,
 * control characters and quotes as '?' */
static const char *shown(char *dst, size_t size, const char *s, size_t len)
{
    size_t j = 0;
    for (size_t i = 0; i < len && j + 4 < size; i++) {
        if (i == TERM_SHOWN_MAX) {
            memcpy(dst + j, "...", 3);
            j += 3;
            break;
        }
        unsigned char c = (unsigned char)s[i];
        dst[j++] = c < 32 || c == 127 || c == '"' || c == '\\' ? '?' : (char)c;
    }
    dst[j] = '\0';
    return dst;
}

static void push(char ***v, size_t *n, char *s)
{
    *v = xreallocarray(*v, *n + 1, sizeof **v);
    (*v)[(*n)++] = s;
}

static bool word_char(unsigned char c)
{
    return c >= 0x80 || isalnum(c) || strchr(".@-_+'", c) != NULL;
}

/* words - the value with every character that is not a word character
 * replaced by a space, runs of spaces collapsed, trimmed; NULL when
 * nothing is left */
static char *words(const char *v, size_t len)
{
    char *out = xmalloc(len + 1);
    size_t j = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        if (word_char(c))
            out[j++] = (char)c;
        else if (j > 0 && out[j - 1] != ' ')
            out[j++] = ' ';
    }
    while (j > 0 && out[j - 1] == ' ')
        j--;
    out[j] = '\0';
    /* only punctuation of addresses ("-", "..."): nothing the index holds */
    bool any = false;
    for (size_t i = 0; i < j; i++)
        if ((unsigned char)out[i] >= 0x80 || isalnum((unsigned char)out[i]))
            any = true;
    if (!any) {
        free(out);
        return NULL;
    }
    return out;
}

/* --- values --- */

struct term {
    const char *op;         /* "from", ... ; NULL for a plain word */
    size_t op_len;
    const char *val;        /* unquoted */
    size_t val_len;
    const char *raw;        /* the whole term, for errors */
    size_t raw_len;
};

static void term_error(struct error *err, const struct term *t, const char *what)
{
    char s[TERM_SHOWN_MAX + 8];
    error_set(err, "q", "%s \"%s\"", what, shown(s, sizeof s, t->raw, t->raw_len));
}

static bool label_ok(const char *l, size_t n)
{
    if (n == 0 || n > 63 || l[0] == '-' || l[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)l[i]) && l[i] != '-' && l[i] != '_')
            return false;
    return true;
}

/* domain_ok - LDH labels separated by dots, two labels at least */
static bool domain_ok(const char *d, size_t n)
{
    if (n == 0 || n > 253 || memchr(d, '.', n) == NULL)
        return false;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++)
        if (i == n || d[i] == '.') {
            if (!label_ok(d + start, i - start))
                return false;
            start = i + 1;
        }
    return true;
}

/* addr_ok - local@domain (printable local part of at most 64 octets), or a domain */
static bool addr_ok(const char *a, size_t n)
{
    const char *at = memchr(a, '@', n);
    if (at == NULL)
        return domain_ok(a, n);
    size_t local = (size_t)(at - a);
    if (local == 0 || local > 64 || memchr(at + 1, '@', n - local - 1) != NULL)
        return false;
    for (size_t i = 0; i < local; i++) {
        unsigned char c = (unsigned char)a[i];
        if (c <= 32 || c >= 127 || strchr("<>()[]\\,;:\"", c) != NULL)
            return false;
    }
    return domain_ok(at + 1, n - local - 1);
}

static int take_addr(struct term *t, char ***v, size_t *n, struct error *err)
{
    const char *a = t->val;
    size_t len = t->val_len;
    if (len > 0 && a[0] == '@') {        /* "@example.com" means the domain */
        a++;
        len--;
    }
    if (!addr_ok(a, len)) {
        char s[TERM_SHOWN_MAX + 8], what[32];
        xsnprintf(what, sizeof what, "%.*s:", (int)t->op_len, t->op);
        str_lower(what);
        error_set(err, "q", "bad address \"%s\" in %s", shown(s, sizeof s, t->val, t->val_len),
                  what);
        return -1;
    }
    char *lc = xstrndup(a, len);
    push(v, n, str_lower(lc));
    return 0;
}

static int op_from(struct term *t, struct store_archive_query *q, struct error *err)
{
    return take_addr(t, &q->from, &q->n_from, err);
}

static int op_to(struct term *t, struct store_archive_query *q, struct error *err)
{
    return take_addr(t, &q->to, &q->n_to, err);
}

static int op_subject(struct term *t, struct store_archive_query *q, struct error *err)
{
    (void)err;
    char *w = words(t->val, t->val_len);
    if (w != NULL)
        push(&q->subject, &q->n_subject, w);
    return 0;
}

static int digits(const char *s, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* parse_date - YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, UTC, into unix seconds */
static int parse_date(const char *s, size_t n, int64_t *out)
{
    int y, mo, d, h = 0, mi = 0, sec = 0;
    if ((n != 10 && n != 20) || s[4] != '-' || s[7] != '-' || digits(s, 4, &y) < 0 ||
        digits(s + 5, 2, &mo) < 0 || digits(s + 8, 2, &d) < 0)
        return -1;
    if (n == 20 && ((s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':' ||
                    (s[19] != 'Z' && s[19] != 'z') || digits(s + 11, 2, &h) < 0 ||
                    digits(s + 14, 2, &mi) < 0 || digits(s + 17, 2, &sec) < 0))
        return -1;
    static const int mdays[12] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] ||
        (mo == 2 && d == 29 && !leap) || h > 23 || mi > 59 || sec > 59)
        return -1;
    struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
                     .tm_hour = h, .tm_min = mi, .tm_sec = sec };
    *out = (int64_t)timegm(&tm);
    return 0;
}

static int take_date(struct term *t, const char *op, int64_t *out, struct error *err)
{
    if (parse_date(t->val, t->val_len, out) < 0) {
        char s[TERM_SHOWN_MAX + 8];
        error_set(err, "q", "bad date \"%s\" in %s: (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)",
                  shown(s, sizeof s, t->val, t->val_len), op);
        return -1;
    }
    return 0;
}

static int op_before(struct term *t, struct store_archive_query *q, struct error *err)
{
    int64_t v;
    if (take_date(t, "before", &v, err) < 0)
        return -1;
    if (q->before == 0 || v < q->before)    /* every condition holds: the earliest */
        q->before = v;
    return 0;
}

static int op_after(struct term *t, struct store_archive_query *q, struct error *err)
{
    int64_t v;
    if (take_date(t, "after", &v, err) < 0)
        return -1;
    if (v > q->after)
        q->after = v;
    return 0;
}

static int op_has(struct term *t, struct store_archive_query *q, struct error *err)
{
    if (t->val_len != strlen("attachment") || strncasecmp(t->val, "attachment", t->val_len) != 0) {
        char s[TERM_SHOWN_MAX + 8];
        error_set(err, "q", "unknown value \"%s\" in has: (has:attachment)",
                  shown(s, sizeof s, t->val, t->val_len));
        return -1;
    }
    q->has_attachment = true;
    return 0;
}

static const struct term_op {
    const char *name;
    int (*take)(struct term *t, struct store_archive_query *q, struct error *err);
} term_ops[] = {
    { "from", op_from },
    { "to", op_to },
    { "subject", op_subject },
    { "before", op_before },
    { "after", op_after },
    { "has", op_has },
};

/* --- the parser --- */

static bool blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* next_term - split the term at *p into t; *p moves past it; -1 on an
 * unterminated quote */
static int next_term(const char **p, struct term *t, struct error *err)
{
    const char *s = *p;
    memset(t, 0, sizeof *t);
    t->raw = s;
    size_t i = 0;
    while (isalpha((unsigned char)s[i]))
        i++;
    if (i > 0 && s[i] == ':') {
        t->op = s;
        t->op_len = i;
        s += i + 1;
    }
    if (*s == '"') {
        const char *end = strchr(s + 1, '"');
        if (end == NULL) {
            t->raw_len = strlen(t->raw);
            term_error(err, t, "unterminated quote in");
            return -1;
        }
        t->val = s + 1;
        t->val_len = (size_t)(end - s - 1);
        s = end + 1;
        /* what sticks to the closing quote belongs to the term */
        while (*s && !blank(*s))
            s++;
    } else {
        t->val = s;
        while (*s && !blank(*s))
            s++;
        t->val_len = (size_t)(s - t->val);
    }
    t->raw_len = (size_t)(s - t->raw);
    *p = s;
    return 0;
}

static int take_term(struct term *t, struct store_archive_query *q, struct error *err)
{
    if (t->op == NULL) {
        char *w = words(t->val, t->val_len);
        if (w != NULL)
            push(&q->text, &q->n_text, w);
        return 0;
    }
    for (size_t i = 0; i < sizeof term_ops / sizeof *term_ops; i++) {
        const struct term_op *op = &term_ops[i];
        if (strlen(op->name) == t->op_len && strncasecmp(op->name, t->op, t->op_len) == 0) {
            if (t->val_len == 0) {
                char what[32];
                xsnprintf(what, sizeof what, "empty %s: in", op->name);
                term_error(err, t, what);
                return -1;
            }
            return op->take(t, q, err);
        }
    }
    char s[TERM_SHOWN_MAX + 8];
    char *lc = xstrndup(t->op, t->op_len);
    error_set(err, "q", "unknown operator \"%s:\" (from: to: subject: before: after: has:)",
              shown(s, sizeof s, str_lower(lc), t->op_len));
    free(lc);
    return -1;
}

int archive_query_parse(const char *q, struct store_archive_query *out, struct error *err)
{
    memset(out, 0, sizeof *out);
    if (q == NULL)
        return 0;
    size_t len = strnlen(q, ARCHIVE_QUERY_MAX_LEN + 1);
    if (len > ARCHIVE_QUERY_MAX_LEN) {
        error_set(err, "q", "the query is longer than %d octets", ARCHIVE_QUERY_MAX_LEN);
        return -1;
    }
    if (!str_valid_utf8(q, len)) {
        error_set(err, "q", "the query is not valid UTF-8");
        return -1;
    }
    const char *p = q;
    int terms = 0;
    for (;;) {
        while (blank(*p))
            p++;
        if (*p == '\0')
            return 0;
        struct term t;
        if (next_term(&p, &t, err) < 0)
            goto fail;
        if (++terms > ARCHIVE_QUERY_MAX_TERMS) {
            char what[64];
            xsnprintf(what, sizeof what, "more than %d terms at", ARCHIVE_QUERY_MAX_TERMS);
            term_error(err, &t, what);
            goto fail;
        }
        if (take_term(&t, out, err) < 0)
            goto fail;
    }
fail:
    archive_query_clear(out);
    return -1;
}

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void archive_query_clear(struct store_archive_query *q)
{
    free_list(q->from, q->n_from);
    free_list(q->to, q->n_to);
    free_list(q->subject, q->n_subject);
    free_list(q->text, q->n_text);
    memset(q, 0, sizeof *q);
}
