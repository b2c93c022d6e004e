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

/* is_from_name - the field name of line [p, e) is "From" (obsolete WSP
 * before the colon allowed); *value set to after the colon */
static bool is_from_name(const char *p, const char *e, const char **value)
{
    const char *colon = memchr(p, ':', (size_t)(e - p));
    if (colon == NULL)
        return false;
    const char *n = colon;
    while (n > p && (n[-1] == ' ' || n[-1] == '\t'))
        n--;
    *value = colon + 1;
    return n - p == 4 && (p[0] | 0x20) == 'f' && (p[1] | 0x20) == 'r' && (p[2] | 0x20) == 'o' &&
           (p[3] | 0x20) == 'm';
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
            in_from = is_from_name(p, e, &v);
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
        if (*p != ' ' && *p != '\t' && is_from_name(p, e, &v) && n < 1000)
            n++;
        p = next;
    }
    return n;
}
