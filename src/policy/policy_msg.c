/*
 * policy_msg.c - pure, bounded parsers of the message for the end-of-DATA
 * checks: the domain of the header From (RFC 5322 3.6.2), which anti-spoofing
 * and DMARC (RFC 7489 3.1, "RFC5322.From domain") judge.
 *
 * msg_header_from_domain reads only the header section (RFC 5322 2.1: up to
 * the first empty line) and never more than MSG_HEADER_SCAN_MAX octets.  It
 * finds the From fields (name compared case-insensitively, obsolete white
 * space before the colon allowed, RFC 5322 4.5), unfolds the one field into
 * a bounded buffer and walks its address list with a small state machine:
 * comments (nested, quoted-pairs), quoted strings, angle brackets (with an
 * obsolete route, RFC 5322 4.4), groups ("name: a@b, c@d;") and empty list
 * elements (obsolete, 4.4).  Exactly one address must result.
 *
 * RFC 7489 6.6.1: a message with zero or several From fields, or a From
 * holding several or no addresses, cannot be attributed to one author
 * domain; receivers apply the strictest treatment to it.  This parser only
 * answers false for those; the caller decides (anti-spoofing refuses
 * nothing on false by itself, DMARC rejects).
 */
#include <string.h>
#include <strings.h>
#include <sodium.h>
#include "../core/core.h"
#include "policy_msg.h"

#define MSG_ADDR_MAX 1024     /* one address inside the field, after CFWS removal */

/* --- the header section --- */

/* line_end - the end of the line starting at p (the CR of CRLF, the bare
 * LF, or end) and where the next line starts */
static const char *line_end(const char *p, const char *end, const char **next)
{
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    if (lf == NULL) {
        *next = end;
        return end;
    }
    *next = lf + 1;
    return lf > p && lf[-1] == '\r' ? lf - 1 : lf;
}

/* field_named - line [p, e) is a field called name (obsolete WSP before the
 * colon allowed); *value set to after the colon */
static bool field_named(const char *p, const char *e, const char *name, const char **value)
{
    const char *colon = memchr(p, ':', (size_t)(e - p));
    if (colon == NULL)
        return false;
    const char *n = colon;
    while (n > p && (n[-1] == ' ' || n[-1] == '\t'))
        n--;
    size_t nl = strlen(name);
    *value = colon + 1;
    return (size_t)(n - p) == nl && strncasecmp(p, name, nl) == 0;
}

/* field_line_ok - a field's first line: a non-empty printable name before a
 * colon (RFC 5322 2.2: ftext is %d33-57 / %d59-126) */
static bool field_line_ok(const char *p, const char *e)
{
    const char *colon = memchr(p, ':', (size_t)(e - p));
    if (colon == NULL || colon == p)
        return false;
    const char *n = colon;
    while (n > p && (n[-1] == ' ' || n[-1] == '\t'))
        n--;
    if (n == p)
        return false;
    for (const char *q = p; q < n; q++)
        if ((unsigned char)*q < 33 || (unsigned char)*q > 126)
            return false;
    return true;
}

/* find_from - unfold the only From field into val (NUL-terminated); false
 * when there is not exactly one, the header section is malformed or not
 * finished within the bound, or the field is too long */
static bool find_from(const char *msg, size_t len, char *val, size_t valsz)
{
    bool bounded = len > MSG_HEADER_SCAN_MAX;
    const char *p = msg, *end = msg + (bounded ? MSG_HEADER_SCAN_MAX : len);
    int n_from = 0;
    bool in_from = false, ended = false;
    size_t vlen = 0;
    while (p < end) {
        const char *next, *e = line_end(p, end, &next);
        if (next == end && e == end && bounded) {
            return false;        /* a line cut by the bound: the header section did not end */
        }
        if (e == p) {            /* the empty line: the header section ends */
            ended = true;
            break;
        }
        const char *add;
        if (*p == ' ' || *p == '\t') {
            if (p == msg)
                return false;    /* a continuation before any field */
            add = p;             /* unfolding (RFC 5322 2.2.3): drop the CRLF only */
        } else {
            if (!field_line_ok(p, e))
                return false;
            const char *v;
            in_from = field_named(p, e, "From", &v);
            if (in_from && ++n_from > 1)
                return false;
            add = in_from ? v : e;
        }
        if (in_from) {
            size_t l = (size_t)(e - add);
            if (vlen + l + 1 > valsz || memchr(add, '\0', l) != NULL)
                return false;    /* too long, or a NUL that would hide the rest */
            memcpy(val + vlen, add, l);
            vlen += l;
        }
        p = next;
    }
    if (!ended && bounded)
        return false;
    val[vlen] = '\0';
    return n_from == 1;
}

/* --- the address list --- */

struct addr_walk {
    char addr[MSG_ADDR_MAX];   /* the address of the current element (angle or bare) */
    size_t alen;
    char bare[MSG_ADDR_MAX];   /* text outside angle brackets, without CFWS */
    size_t blen;
    bool in_angle, had_angle, in_group;
    bool space;                /* white space or a comment since the last character */
    bool phrase;               /* two words side by side: a display name, no addr-spec */
    bool angle_phrase;         /* ... inside the angle brackets: malformed */
    int n_addrs;
    char found[MSG_ADDR_MAX];  /* the (last) address found */
};

/* word_char - a character of an atom or a quoted string's stand-in */
static bool word_char(char c)
{
    return c != '.' && c != '@' && c != '\0';
}

static bool push(struct addr_walk *w, char *dst, size_t *len, char c)
{
    if (*len + 1 >= MSG_ADDR_MAX)
        return false;
    /* "john doe" (two words apart) is a phrase; "john . doe @ x" (obsolete
     * CFWS around the dots and the "@") is still one address */
    if (w->space && *len > 0 && word_char(dst[*len - 1]) && word_char(c))
        w->phrase = true;
    w->space = false;
    dst[(*len)++] = c;
    dst[*len] = '\0';
    return true;
}

/* skip_comment - p at '('; the position after the matching ')', NULL when
 * unterminated */
static const char *skip_comment(const char *p)
{
    int depth = 0;
    for (; *p; p++) {
        if (*p == '\\') {
            if (p[1] == '\0')
                return NULL;
            p++;
        } else if (*p == '(') {
            depth++;
        } else if (*p == ')') {
            if (--depth == 0)
                return p + 1;
        }
    }
    return NULL;
}

/* skip_quoted - p at '"'; after the closing quote, NULL when unterminated */
static const char *skip_quoted(const char *p)
{
    for (p++; *p; p++) {
        if (*p == '\\') {
            if (p[1] == '\0')
                return NULL;
            p++;
        } else if (*p == '"') {
            return p + 1;
        }
    }
    return NULL;
}

/* element_end - one list element is complete: count its address */
static void element_end(struct addr_walk *w)
{
    const char *a = NULL;
    if (w->had_angle)
        a = w->angle_phrase ? "" : w->addr;   /* "<>" counts: an address without a domain */
    else if (w->blen > 0)
        a = w->phrase ? "" : w->bare;         /* "a@exa mple.com": no address */
    if (a != NULL) {
        w->n_addrs++;
        (void)str_copy(w->found, sizeof w->found, a);
    }
    w->phrase = w->angle_phrase = w->space = false;
    w->alen = w->blen = 0;
    w->addr[0] = w->bare[0] = '\0';
    w->had_angle = false;
}

/* walk_list - the address list in v: exactly one address into w->found */
static bool walk_list(const char *v, struct addr_walk *w)
{
    memset(w, 0, sizeof *w);
    for (const char *p = v; *p;) {
        char c = *p;
        if (c == '(') {
            if ((p = skip_comment(p)) == NULL)
                return false;
            w->space = true;
            continue;
        }
        if (c == '"') {
            const char *q = skip_quoted(p);
            if (q == NULL)
                return false;
            /* a quoted local part or display name: stands for one word; an
             * "@" inside it is not the domain separator */
            if (!push(w, w->in_angle ? w->addr : w->bare, w->in_angle ? &w->alen : &w->blen, 'q'))
                return false;
            p = q;
            continue;
        }
        p++;
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            w->space = true;
            continue;
        }
        if (w->in_angle) {
            if (c == '>') {
                w->in_angle = false;
                w->had_angle = true;
                w->angle_phrase = w->phrase;
            } else if (c == '<') {
                return false;
            } else if (c == ':') {
                w->alen = 0;           /* obsolete route "@a,@b:" ends here */
                w->addr[0] = '\0';
            } else if (!push(w, w->addr, &w->alen, c)) {
                return false;
            }
            continue;
        }
        switch (c) {
        case '<':
            if (w->had_angle)
                return false;
            w->in_angle = true;
            w->blen = 0;               /* what came before was the display name */
            w->bare[0] = '\0';
            w->phrase = w->space = false;
            break;
        case '>':
            return false;
        case ',':
            element_end(w);
            break;
        case ':':
            if (w->in_group || w->had_angle)
                return false;
            w->in_group = true;        /* the group's display name is not an address */
            w->blen = 0;
            w->bare[0] = '\0';
            w->phrase = w->space = false;
            break;
        case ';':
            if (!w->in_group)
                return false;
            element_end(w);
            w->in_group = false;
            break;
        default:
            if (w->had_angle)
                return false;          /* text after "<addr>" */
            if (!push(w, w->bare, &w->blen, c))
                return false;
        }
    }
    if (w->in_angle || w->in_group)
        return false;
    element_end(w);
    return w->n_addrs == 1;
}

/* domain_of - the lower-cased domain of addr-spec a; false for a missing
 * local part or domain, a domain literal or characters no domain has */
static bool domain_of(const char *a, char *dom, size_t domlen)
{
    const char *at = strrchr(a, '@');
    if (at == NULL || at == a || at[1] == '\0' || at[1] == '[')
        return false;
    const char *d = at + 1;
    size_t n = strlen(d);
    if (n >= domlen || n > 253 || d[0] == '.' || d[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)d[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_' || c >= 0x80 || (c == '.' && d[i + 1] != '.');
        if (!ok)
            return false;
    }
    if (!str_valid_utf8(d, n))
        return false;
    memcpy(dom, d, n + 1);
    str_lower(dom);
    return true;
}

bool msg_header_from_domain(const char *msg, size_t len, char *dom, size_t domlen)
{
    static _Thread_local char val[MSG_FROM_FIELD_MAX + 1];
    static _Thread_local struct addr_walk w;
    if (dom == NULL || domlen == 0)
        return false;
    dom[0] = '\0';
    if (msg == NULL || !find_from(msg, len, val, sizeof val))
        return false;
    if (!walk_list(val, &w))
        return false;
    if (!domain_of(w.found, dom, domlen)) {
        dom[0] = '\0';
        return false;
    }
    return true;
}

int msg_header_from_count(const char *msg, size_t len)
{
    const char *p = msg, *end = msg + (len > MSG_HEADER_SCAN_MAX ? MSG_HEADER_SCAN_MAX : len);
    int n = 0;
    if (msg == NULL)
        return 0;
    while (p < end) {
        const char *next, *e = line_end(p, end, &next), *v;
        if (e == p)
            break;
        if (*p != ' ' && *p != '\t' && field_named(p, e, "From", &v) && n < 1000)
            n++;
        p = next;
    }
    return n;
}

/* --- any one header field, for the tracking events (core/track.h) --- */


/* utf8_cut - the longest prefix of s[0..n) that does not end inside a
 * UTF-8 sequence */
static size_t utf8_cut(const char *s, size_t n)
{
    size_t i = n;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80 && n - i < 3)
        i--;
    if (i > 0 && (unsigned char)s[i - 1] >= 0xC0) {
        unsigned char c = (unsigned char)s[i - 1];
        size_t want = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        if (n - (i - 1) < want)
            return i - 1;
    }
    return n;
}

size_t msg_header_value(const char *msg, size_t len, const char *name, char *out, size_t size)
{
    if (size == 0)
        return 0;
    out[0] = '\0';
    if (msg == NULL)
        return 0;
    const char *p = msg, *end = msg + (len > MSG_HEADER_SCAN_MAX ? MSG_HEADER_SCAN_MAX : len);
    size_t o = 0;
    bool in = false, found = false, full = false;
    while (p < end) {
        const char *next, *e = line_end(p, end, &next), *v = NULL;
        if (e == p)
            break;                       /* the empty line ends the header section */
        if (*p == ' ' || *p == '\t') {
            v = in ? p : NULL;           /* unfolding: drop the CRLF only */
        } else if (found) {
            break;                       /* the first field of that name only */
        } else {
            in = field_named(p, e, name, &v);
            found = in;
            if (!in)
                v = NULL;
        }
        if (v != NULL && o + 1 + (size_t)(e - v) >= size)
            full = true;                 /* cut: never inside a UTF-8 sequence */
        for (; v != NULL && v < e && o + 1 < size; v++) {
            unsigned char c = (unsigned char)*v;
            if (o == 0 && (c == ' ' || c == '\t'))
                continue;                /* leading white space */
            out[o++] = c < 32 || c == 127 ? ' ' : (char)c;
        }
        p = next;
    }
    if (full)
        o = utf8_cut(out, o);
    while (o > 0 && out[o - 1] == ' ')
        o--;
    out[o] = '\0';
    if (!str_valid_utf8(out, o))
        for (size_t i = 0; i < o; i++)
            if ((unsigned char)out[i] >= 0x80)
                out[i] = '?';    /* raw 8-bit in a header: not text we can show */
    return o;
}

/* --- RFC 2047 encoded words, for the Subject a tracking event shows --- */

static int hex_digit(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10
         : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* charsets decoded: UTF-8 (and its subset US-ASCII) as they are, ISO-8859-1
 * by widening each octet; any other charset leaves the word as it came */
enum word_cs { CS_NONE, CS_UTF8, CS_LATIN1 };

static enum word_cs word_charset(const char *cs, size_t n)
{
    static const struct { const char *name; enum word_cs cs; } known[] = {
        { "utf-8", CS_UTF8 }, { "utf8", CS_UTF8 }, { "us-ascii", CS_UTF8 },
        { "iso-8859-1", CS_LATIN1 }, { "latin1", CS_LATIN1 },
    };
    const char *star = memchr(cs, '*', n);     /* RFC 2231 5: a language suffix */
    if (star != NULL)
        n = (size_t)(star - cs);
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strlen(known[i].name) == n && strncasecmp(cs, known[i].name, n) == 0)
            return known[i].cs;
    return CS_NONE;
}

/* put_octet - one decoded octet into out[*o], widened from Latin-1 when asked */
static bool put_octet(char *out, size_t size, size_t *o, unsigned char c, enum word_cs cs)
{
    if (cs == CS_LATIN1 && c >= 0x80) {
        if (*o + 2 >= size)
            return false;
        out[(*o)++] = (char)(0xC0 | (c >> 6));
        out[(*o)++] = (char)(0x80 | (c & 0x3F));
        return true;
    }
    if (*o + 1 >= size)
        return false;
    out[(*o)++] = (char)c;
    return true;
}

/* decode_word - the encoded word at p (RFC 2047 2: =?charset?B|Q?text?=)
 * appended to out; its length in p, 0 when it is not one we decode (out
 * unchanged) */
static size_t decode_word(const char *p, char *out, size_t size, size_t *o)
{
    if (p[0] != '=' || p[1] != '?')
        return 0;
    const char *cs = p + 2, *q1 = strchr(cs, '?');
    if (q1 == NULL || q1[1] == '\0' || q1[2] != '?')
        return 0;
    const char *text = q1 + 3, *end = strstr(text, "?=");
    enum word_cs c = word_charset(cs, (size_t)(q1 - cs));
    char enc = (char)(q1[1] | 0x20);
    if (end == NULL || c == CS_NONE || (enc != 'b' && enc != 'q') || memchr(text, ' ', (size_t)(end - text)))
        return 0;
    size_t start = *o, n = (size_t)(end - text);
    if (enc == 'b') {
        unsigned char bin[MSG_FROM_FIELD_MAX];
        size_t bl = 0;
        if (sodium_base642bin(bin, sizeof bin, text, n, NULL, &bl, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0)
            return 0;
        for (size_t i = 0; i < bl; i++)
            if (!put_octet(out, size, o, bin[i], c))
                break;
    } else {
        for (size_t i = 0; i < n; i++) {
            int hi, lo;
            unsigned char v = (unsigned char)text[i];
            if (v == '_')
                v = ' ';       /* RFC 2047 4.2 (2) */
            else if (v == '=' && i + 2 < n && (hi = hex_digit(text[i + 1])) >= 0 &&
                     (lo = hex_digit(text[i + 2])) >= 0) {
                v = (unsigned char)(hi * 16 + lo);
                i += 2;
            }
            if (!put_octet(out, size, o, v, c))
                break;
        }
    }
    for (size_t i = start; i < *o; i++)
        if ((unsigned char)out[i] < 32 || out[i] == 127)
            out[i] = ' ';
    return (size_t)(end + 2 - p);
}

size_t msg_decode_words(char *s, size_t size)
{
    char *out = xmalloc(size);
    size_t o = 0, ws = 0;     /* ws: white space copied since the last encoded word */
    bool after_word = false;
    const char *p = s;
    while (*p != '\0' && o + 1 < size) {
        size_t before = o, used = decode_word(p, out, size, &o);
        if (used > 0) {
            if (after_word && ws > 0) {
                /* RFC 2047 6.2: white space between encoded words is dropped */
                memmove(out + before - ws, out + before, o - before);
                o -= ws;
            }
            after_word = true;
            ws = 0;
            p += used;
            continue;
        }
        if (*p == ' ' || *p == '\t')
            ws++;
        else
            after_word = false, ws = 0;
        out[o++] = *p++;
    }
    if (*p != '\0' || o + 2 >= size)
        o = utf8_cut(out, o);    /* cut by the bound: never inside a UTF-8 sequence */
    if (!str_valid_utf8(out, o))
        for (size_t i = 0; i < o; i++)
            if ((unsigned char)out[i] >= 0x80)
                out[i] = '?';
    memcpy(s, out, o);
    s[o] = '\0';
    free(out);
    return o;
}
