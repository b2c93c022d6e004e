/*
 * archive_html.c - archive_html_to_text: the visible text of an HTML part,
 * for the archive's full-text index.  One pass, no tree: tags are dropped,
 * <script> and <style> lose their content, comments vanish, character
 * references are decoded, block elements break the line and white space
 * runs collapse (HTML 4.01 9.1: inter-word space is any run of white space).
 * Bounded by the caller's max; the input is UTF-8 (the MIME reader converts
 * it first) and invalid sequences in it are dropped.
 */
#include <string.h>
#include <strings.h>
#include "archive_mime.h"
#include "archive_text.h"

struct html_out {
    struct buf b;
    size_t max;
    unsigned pending_nl;        /* line breaks owed before the next character */
    bool pending_space;
    bool full;
};

/* html_put - one character (k octets), after the separator it is owed */
static void html_put(struct html_out *o, const char *s, size_t k)
{
    if (o->full)
        return;
    const char *sep = "";
    if (o->b.len > 0)
        sep = o->pending_nl >= 2 ? "\n\n" : o->pending_nl == 1 ? "\n" : o->pending_space ? " " : "";
    size_t sl = strlen(sep);
    if (o->b.len + sl + k > o->max) {
        o->full = true;
        return;
    }
    buf_append(&o->b, sep, sl);
    buf_append(&o->b, s, k);
    o->pending_nl = 0;
    o->pending_space = false;
}

/* html_put_cp - a code point as UTF-8; U+FFFD for what is not a character */
static void html_put_cp(struct html_out *o, unsigned long cp)
{
    unsigned char u[4];
    size_t k;
    if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        cp = 0xFFFD;
    if (cp < 0x80) {
        u[0] = (unsigned char)cp;
        k = 1;
    } else if (cp < 0x800) {
        u[0] = (unsigned char)(0xC0 | (cp >> 6));
        u[1] = (unsigned char)(0x80 | (cp & 0x3F));
        k = 2;
    } else if (cp < 0x10000) {
        u[0] = (unsigned char)(0xE0 | (cp >> 12));
        u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (unsigned char)(0x80 | (cp & 0x3F));
        k = 3;
    } else {
        u[0] = (unsigned char)(0xF0 | (cp >> 18));
        u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (unsigned char)(0x80 | (cp & 0x3F));
        k = 4;
    }
    html_put(o, (const char *)u, k);
}

/* the named character references mail actually uses; 0x20 stands for any
 * space-like character (collapsed with the white space around it), 0 for
 * the invisible ones */
static const struct {
    const char *name;
    unsigned long cp;
} html_entities[] = {
    { "amp", '&' }, { "lt", '<' }, { "gt", '>' }, { "quot", '"' }, { "apos", '\'' },
    { "nbsp", 0x20 }, { "ensp", 0x20 }, { "emsp", 0x20 }, { "thinsp", 0x20 },
    { "shy", 0 }, { "zwnj", 0 }, { "zwj", 0 }, { "lrm", 0 }, { "rlm", 0 },
    { "copy", 0xA9 }, { "reg", 0xAE }, { "trade", 0x2122 }, { "hellip", 0x2026 },
    { "mdash", 0x2014 }, { "ndash", 0x2013 }, { "lsquo", 0x2018 }, { "rsquo", 0x2019 },
    { "sbquo", 0x201A }, { "ldquo", 0x201C }, { "rdquo", 0x201D }, { "bdquo", 0x201E },
    { "laquo", 0xAB }, { "raquo", 0xBB }, { "euro", 0x20AC }, { "pound", 0xA3 },
    { "yen", 0xA5 }, { "cent", 0xA2 }, { "sect", 0xA7 }, { "para", 0xB6 }, { "deg", 0xB0 },
    { "plusmn", 0xB1 }, { "times", 0xD7 }, { "divide", 0xF7 }, { "middot", 0xB7 },
    { "bull", 0x2022 }, { "iexcl", 0xA1 }, { "iquest", 0xBF }, { "micro", 0xB5 },
    { "frac12", 0xBD }, { "frac14", 0xBC }, { "frac34", 0xBE },
    { "Agrave", 0xC0 }, { "Aacute", 0xC1 }, { "Acirc", 0xC2 }, { "Atilde", 0xC3 },
    { "Auml", 0xC4 }, { "Aring", 0xC5 }, { "AElig", 0xC6 }, { "Ccedil", 0xC7 },
    { "Egrave", 0xC8 }, { "Eacute", 0xC9 }, { "Ecirc", 0xCA }, { "Euml", 0xCB },
    { "Igrave", 0xCC }, { "Iacute", 0xCD }, { "Icirc", 0xCE }, { "Iuml", 0xCF },
    { "Ntilde", 0xD1 }, { "Ograve", 0xD2 }, { "Oacute", 0xD3 }, { "Ocirc", 0xD4 },
    { "Otilde", 0xD5 }, { "Ouml", 0xD6 }, { "Oslash", 0xD8 }, { "Ugrave", 0xD9 },
    { "Uacute", 0xDA }, { "Ucirc", 0xDB }, { "Uuml", 0xDC }, { "Yacute", 0xDD },
    { "szlig", 0xDF }, { "agrave", 0xE0 }, { "aacute", 0xE1 }, { "acirc", 0xE2 },
    { "atilde", 0xE3 }, { "auml", 0xE4 }, { "aring", 0xE5 }, { "aelig", 0xE6 },
    { "ccedil", 0xE7 }, { "egrave", 0xE8 }, { "eacute", 0xE9 }, { "ecirc", 0xEA },
    { "euml", 0xEB }, { "igrave", 0xEC }, { "iacute", 0xED }, { "icirc", 0xEE },
    { "iuml", 0xEF }, { "ntilde", 0xF1 }, { "ograve", 0xF2 }, { "oacute", 0xF3 },
    { "ocirc", 0xF4 }, { "otilde", 0xF5 }, { "ouml", 0xF6 }, { "oslash", 0xF8 },
    { "ugrave", 0xF9 }, { "uacute", 0xFA }, { "ucirc", 0xFB }, { "uuml", 0xFC },
    { "yacute", 0xFD }, { "yuml", 0xFF }, { "OElig", 0x152 }, { "oelig", 0x153 },
    { "Scaron", 0x160 }, { "scaron", 0x161 }, { "Zcaron", 0x17D }, { "zcaron", 0x17E },
};

/* html_cp - a decoded reference: space-like ones collapse, invisible ones vanish */
static void html_cp(struct html_out *o, unsigned long cp)
{
    if (cp == 0x20 || cp == 0x09 || cp == 0x0A || cp == 0x0D || cp == 0x0C || cp == 0xA0)
        o->pending_space = true;
    else if (cp != 0)
        html_put_cp(o, cp);
}

/* html_entity - the character reference at h[i] == '&'; returns where to go on */
static size_t html_entity(struct html_out *o, const char *h, size_t n, size_t i)
{
    size_t j = i + 1;
    if (j < n && h[j] == '#') {
        bool hex = j + 1 < n && (h[j + 1] == 'x' || h[j + 1] == 'X');
        j += hex ? 2 : 1;
        size_t start = j;
        unsigned long cp = 0;
        for (; j < n && j - start < 8; j++) {
            char c = h[j];
            int d = c >= '0' && c <= '9' ? c - '0'
                  : hex && c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : hex && c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (d < 0)
                break;
            cp = cp * (hex ? 16 : 10) + (unsigned long)d;
        }
        if (j == start) {
            html_put(o, "&", 1);
            return i + 1;
        }
        html_cp(o, cp == 0 ? 0xFFFD : cp);
        return j < n && h[j] == ';' ? j + 1 : j;
    }
    while (j < n && j - i <= 10 && ((h[j] >= 'a' && h[j] <= 'z') || (h[j] >= 'A' && h[j] <= 'Z') ||
                                    (h[j] >= '0' && h[j] <= '9')))
        j++;
    if (j < n && h[j] == ';') {
        size_t len = j - i - 1;
        for (size_t k = 0; k < sizeof html_entities / sizeof html_entities[0]; k++) {
            if (strlen(html_entities[k].name) == len &&
                memcmp(html_entities[k].name, h + i + 1, len) == 0) {
                html_cp(o, html_entities[k].cp);
                return j + 1;
            }
        }
    }
    html_put(o, "&", 1);             /* not a reference we know: the text as written */
    return i + 1;
}

/* elements that end a line of text, and those that separate cells */
static const char *const html_block[] = {
    "p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol",
    "dl", "dt", "dd", "blockquote", "pre", "hr", "title", "section", "article", "header",
    "footer", "address", "form", "center", "tbody", "thead", "tfoot", "caption",
};
static const char *const html_cell[] = { "td", "th" };

static bool in_list(const char *name, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(name, list[i]) == 0)
            return true;
    return false;
}

/* find_ci - offset of the ASCII needle in h[from..n), case-insensitive, or n */
static size_t find_ci(const char *h, size_t n, size_t from, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = from; i + k <= n; i++)
        if (strncasecmp(h + i, needle, k) == 0)
            return i;
    return n;
}

/* tag_end - past the '>' closing the tag that starts at h[i], quotes respected */
static size_t tag_end(const char *h, size_t n, size_t i)
{
    char quote = 0;
    for (; i < n; i++) {
        if (quote) {
            if (h[i] == quote)
                quote = 0;
        } else if (h[i] == '"' || h[i] == '\'') {
            quote = h[i];
        } else if (h[i] == '>') {
            return i + 1;
        }
    }
    return n;
}

/* html_tag - the markup at h[i] == '<'; returns where to go on */
static size_t html_tag(struct html_out *o, const char *h, size_t n, size_t i)
{
    if (i + 3 < n && memcmp(h + i, "<!--", 4) == 0) {
        size_t e = find_ci(h, n, i + 4, "-->");
        return e < n ? e + 3 : n;
    }
    if (i + 1 < n && (h[i + 1] == '!' || h[i + 1] == '?'))
        return tag_end(h, n, i + 1);
    bool closing = i + 1 < n && h[i + 1] == '/';
    size_t j = i + (closing ? 2 : 1);
    char name[16];
    size_t k = 0;
    while (j < n && ((h[j] >= 'a' && h[j] <= 'z') || (h[j] >= 'A' && h[j] <= 'Z') ||
                     (k > 0 && h[j] >= '0' && h[j] <= '9'))) {
        if (k < sizeof name - 1)
            name[k++] = (char)(h[j] >= 'A' && h[j] <= 'Z' ? h[j] + 32 : h[j]);
        j++;
    }
    name[k] = '\0';
    if (k == 0 && !closing) {
        html_put(o, "<", 1);         /* "a < b": not markup */
        return i + 1;
    }
    size_t after = tag_end(h, n, j);
    if (!closing && (strcmp(name, "script") == 0 || strcmp(name, "style") == 0)) {
        char end[16];
        (void)xsnprintf(end, sizeof end, "</%s", name);
        size_t e = find_ci(h, n, after, end);
        return e < n ? tag_end(h, n, e) : n;
    }
    if (strcmp(name, "br") == 0) {
        if (o->pending_nl < 2)
            o->pending_nl++;
    } else if (in_list(name, html_block, sizeof html_block / sizeof html_block[0])) {
        if (o->pending_nl == 0)
            o->pending_nl = 1;
    } else if (in_list(name, html_cell, sizeof html_cell / sizeof html_cell[0])) {
        o->pending_space = true;
    }
    return after;
}

char *archive_html_to_text(const char *html, size_t len, size_t max)
{
    struct html_out o = { .max = max };
    buf_init(&o.b);
    size_t i = 0;
    while (i < len && !o.full) {
        unsigned char c = (unsigned char)html[i];
        if (c == '<') {
            i = html_tag(&o, html, len, i);
        } else if (c == '&') {
            i = html_entity(&o, html, len, i);
        } else if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f') {
            o.pending_space = true;
            i++;
        } else {
            size_t k = archive_utf8_seq((const unsigned char *)html + i, len - i);
            if (k == 0 || c == '\0' || (c < 0x20)) {
                i += 1;              /* invalid UTF-8 and control characters are dropped */
                continue;
            }
            html_put(&o, html + i, k);
            i += k;
        }
    }
    char *s = xstrndup(o.b.data ? o.b.data : "", o.b.len);
    buf_free(&o.b);
    return s;
}
