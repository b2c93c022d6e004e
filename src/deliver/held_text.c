/*
 * held_text.c - the readable text of a held message for an administrator
 * (deliver_held_show): the first text/plain part, found by walking the MIME
 * structure (RFC 2045/2046) of the message's first octets, and decoded from
 * quoted-printable or base64.  Pure functions on a bounded buffer: no I/O,
 * fuzzed by tests/fuzz/fuzz_held_text.c.
 *
 * Bounds: the input is whatever prefix of the message the caller read (at
 * most a few hundred KiB); multipart nesting at most HELD_MAX_DEPTH; the
 * output at most max octets.  A message that is cut off, or malformed MIME,
 * gives what could be found (possibly nothing); never an error.  The
 * charset is not converted: the caller shows octets that are not UTF-8 as '?'.
 */
#include <string.h>
#include <strings.h>
#include "held_text.h"

#define HELD_MAX_DEPTH 5
#define HELD_MAX_FIELD 1024      /* octets of one unfolded header field kept */
#define HELD_MAX_BOUNDARY 70     /* RFC 2046 5.1.1 */

struct part_info {
    char type[128];              /* "text/plain", lower case; "" = not given */
    char boundary[HELD_MAX_BOUNDARY + 1];
    char cte[32];                /* transfer encoding, lower case */
};

/* header_end - offset of the body after the header section of [p, p+len) */
static size_t header_end(const char *p, size_t len)
{
    if (len >= 2 && p[0] == '\r' && p[1] == '\n')
        return 2;
    if (len >= 1 && p[0] == '\n')
        return 1;
    for (size_t i = 0; i + 1 < len; i++) {
        if (p[i] == '\n' && p[i + 1] == '\n')
            return i + 2;
        if (p[i] == '\n' && p[i + 1] == '\r' && i + 2 < len && p[i + 2] == '\n')
            return i + 3;
    }
    return len;
}

/* field_value - the unfolded value of header field name in [p, p+len), into dst */
static bool field_value(const char *p, size_t len, const char *name, char *dst, size_t size)
{
    size_t nlen = strlen(name);
    size_t i = 0;
    while (i < len) {
        size_t eol = i;
        while (eol < len && p[eol] != '\n')
            eol++;
        if (eol - i > nlen && strncasecmp(p + i, name, nlen) == 0 && p[i + nlen] == ':') {
            size_t o = 0, j = i + nlen + 1;
            for (;;) {
                for (; j < eol && o + 1 < size; j++)
                    if (p[j] != '\r')
                        dst[o++] = p[j] == '\t' ? ' ' : p[j];
                /* continuation lines start with a blank */
                if (eol + 1 < len && (p[eol + 1] == ' ' || p[eol + 1] == '\t')) {
                    j = eol + 1;
                    eol = j;
                    while (eol < len && p[eol] != '\n')
                        eol++;
                    continue;
                }
                break;
            }
            dst[o] = '\0';
            return true;
        }
        i = eol + 1;
    }
    return false;
}

static void lower_copy(char *dst, size_t size, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < size; i++)
        dst[o++] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 32) : s[i];
    dst[o] = '\0';
}

/* part_parse - Content-Type (type/subtype, boundary) and Content-Transfer-Encoding */
static void part_parse(const char *hdr, size_t len, struct part_info *pi)
{
    char v[HELD_MAX_FIELD];
    memset(pi, 0, sizeof *pi);
    if (field_value(hdr, len, "Content-Type", v, sizeof v)) {
        const char *s = v + strspn(v, " ");
        size_t n = strcspn(s, "; ");
        lower_copy(pi->type, sizeof pi->type, s, n);
        for (const char *b = v; (b = strchr(b, ';')) != NULL;) {
            b++;
            b += strspn(b, " ");
            if (strncasecmp(b, "boundary=", 9) == 0) {
                b += 9;
                size_t bl;
                if (*b == '"') {
                    b++;
                    bl = strcspn(b, "\"");
                } else {
                    bl = strcspn(b, "; ");
                }
                if (bl > 0 && bl <= HELD_MAX_BOUNDARY) {
                    memcpy(pi->boundary, b, bl);
                    pi->boundary[bl] = '\0';
                }
            }
        }
    }
    if (field_value(hdr, len, "Content-Transfer-Encoding", v, sizeof v)) {
        const char *s = v + strspn(v, " ");
        lower_copy(pi->cte, sizeof pi->cte, s, strcspn(s, " ;"));
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static void out_put(struct buf *out, size_t max, const char *p, size_t n)
{
    if (out->len >= max)
        return;
    if (n > max - out->len)
        n = max - out->len;
    buf_append(out, p, n);
}

/* decode_qp - RFC 2045 6.7: "=XX" octets, "=" at the end of a line joins lines */
static void decode_qp(const char *p, size_t len, struct buf *out, size_t max)
{
    for (size_t i = 0; i < len && out->len < max; i++) {
        if (p[i] != '=') {
            out_put(out, max, p + i, 1);
            continue;
        }
        if (i + 2 < len && hexval(p[i + 1]) >= 0 && hexval(p[i + 2]) >= 0) {
            char c = (char)(hexval(p[i + 1]) * 16 + hexval(p[i + 2]));
            out_put(out, max, &c, 1);
            i += 2;
        } else if (i + 1 < len && (p[i + 1] == '\r' || p[i + 1] == '\n')) {
            i++;                                   /* soft line break */
            if (p[i] == '\r' && i + 1 < len && p[i + 1] == '\n')
                i++;
        } else {
            out_put(out, max, p + i, 1);           /* a stray '=' stays */
        }
    }
}

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* decode_b64 - RFC 2045 6.8; characters outside the alphabet are skipped */
static void decode_b64(const char *p, size_t len, struct buf *out, size_t max)
{
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len && out->len < max; i++) {
        if (p[i] == '=')
            break;
        int v = b64val(p[i]);
        if (v < 0)
            continue;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            char c = (char)((acc >> bits) & 0xff);
            out_put(out, max, &c, 1);
        }
    }
}

static void decode_body(const struct part_info *pi, const char *p, size_t len, struct buf *out,
                        size_t max)
{
    if (strcmp(pi->cte, "quoted-printable") == 0)
        decode_qp(p, len, out, max);
    else if (strcmp(pi->cte, "base64") == 0)
        decode_b64(p, len, out, max);
    else
        out_put(out, max, p, len);
}

/* find_delim - the next line "--boundary" at or after from (at a line start);
 * returns its offset or len */
static size_t find_delim(const char *p, size_t len, size_t from, const char *b)
{
    size_t bl = strlen(b);
    for (size_t i = from; i + 2 + bl <= len; i++) {
        if ((i == 0 || p[i - 1] == '\n') && p[i] == '-' && p[i + 1] == '-' &&
            memcmp(p + i + 2, b, bl) == 0)
            return i;
    }
    return len;
}

/* walk - the entity [p, p+len) (header section and body); true when text was found */
static bool walk(const char *p, size_t len, struct buf *out, size_t max, int depth, bool top)
{
    size_t he = header_end(p, len);
    struct part_info pi;
    part_parse(p, he, &pi);
    const char *body = p + he;
    size_t blen = len - he;

    /* RFC 2045 5.2: no Content-Type means text/plain; a top-level entity
     * without MIME headers is plain text too */
    if (pi.type[0] == '\0' || strcmp(pi.type, "text/plain") == 0) {
        decode_body(&pi, body, blen, out, max);
        return true;
    }
    if (strncmp(pi.type, "multipart/", 10) != 0 || pi.boundary[0] == '\0' ||
        depth >= HELD_MAX_DEPTH)
        return false;
    (void)top;
    size_t bl = strlen(pi.boundary);
    size_t at = find_delim(body, blen, 0, pi.boundary);
    while (at < blen) {
        size_t start = at + 2 + bl;
        if (start + 1 < blen && body[start] == '-' && body[start + 1] == '-')
            break;                                 /* the close delimiter */
        while (start < blen && body[start] != '\n')
            start++;                               /* transport padding */
        start++;
        if (start >= blen)
            break;
        size_t next = find_delim(body, blen, start, pi.boundary);
        size_t end = next;
        /* the CRLF before the delimiter belongs to it (RFC 2046 5.1.1) */
        if (end > start && body[end - 1] == '\n')
            end--;
        if (end > start && body[end - 1] == '\r')
            end--;
        if (walk(body + start, end - start, out, max, depth + 1, false))
            return true;
        at = next;
    }
    return false;
}

bool held_text_preview(const char *msg, size_t len, size_t max, struct buf *out)
{
    if (msg == NULL || max == 0)
        return false;
    return walk(msg, len, out, max, 0, true);
}

size_t held_header_section(const char *msg, size_t len)
{
    return header_end(msg, len);
}
