/*
 * archive_text.c - the octets of a MIME part made into text the archive can
 * index: transfer encodings undone (GMime's decoders), charsets converted to
 * UTF-8 (GMime's iconv wrappers, which know the MIME charset aliases), and
 * the result kept valid UTF-8 without NULs, bounded, cut only between
 * characters.  A hostile or broken part never makes these fail: an unknown
 * charset reads as Latin-1 and undecodable bytes are dropped.
 *
 * Also the two header helpers the journal reader needs before (or without)
 * GMime: where the header section ends, and one field's unfolded value.
 */
#include <errno.h>
#include <iconv.h>
#include <string.h>
#include <strings.h>
#include <gmime/gmime.h>
#include "archive_text.h"

size_t archive_utf8_seq(const unsigned char *s, size_t n)
{
    if (n == 0)
        return 0;
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t k;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        k = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        k = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;           /* no UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        k = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;           /* nothing above U+10FFFF */
    } else
        return 0;
    if (n <= k || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i <= k; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return k + 1;
}

size_t archive_utf8_cut(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    size_t k = max;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
        k--;
    return k;
}

/* room - make space for up to want more octets in out without passing max;
 * returns the space available (0 when out is full) */
static size_t room(struct buf *out, size_t want, size_t max)
{
    size_t left = out->len < max ? max - out->len : 0;
    if (want > left)
        want = left;
    buf_reserve(out, want + 1);
    return left;
}

/* put_utf8 - append the UTF-8 in p[0..n): NUL and CR dropped, invalid
 * sequences read as Latin-1 (latin1_fallback) or dropped; false when max
 * stopped it */
static bool put_utf8(struct buf *out, const char *p, size_t n, size_t max, bool latin1_fallback)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t left = room(out, latin1_fallback ? n * 2 : n, max);
    size_t i = 0;
    while (i < n) {
        size_t k = archive_utf8_seq(s + i, n - i);
        unsigned char enc[2];
        const unsigned char *src = s + i;
        size_t take = k;
        if (k == 1 && (s[i] == '\0' || s[i] == '\r')) {
            i++;
            continue;
        }
        if (k == 0) {
            if (!latin1_fallback) {
                i++;
                continue;
            }
            enc[0] = (unsigned char)(0xC0 | (s[i] >> 6));
            enc[1] = (unsigned char)(0x80 | (s[i] & 0x3F));
            src = enc;
            take = 2;
            k = 1;
        }
        if (take > left)
            return false;
        memcpy(out->data + out->len, src, take);
        out->len += take;
        left -= take;
        i += k;
    }
    return true;
}

/* utf8_family - charsets read without iconv (UTF-8 and its ASCII subset) */
static bool utf8_family(const char *cs, bool *declared_utf8)
{
    static const char *const ascii[] = { "us-ascii", "ascii", "ansi_x3.4-1968", "iso646-us",
                                         "us", "7bit", "8bit", "unknown-8bit", "x-unknown" };
    *declared_utf8 = false;
    if (cs == NULL || *cs == '\0')
        return true;
    if (strcasecmp(cs, "utf-8") == 0 || strcasecmp(cs, "utf8") == 0) {
        *declared_utf8 = true;
        return true;
    }
    for (size_t i = 0; i < sizeof ascii / sizeof ascii[0]; i++)
        if (strcasecmp(cs, ascii[i]) == 0)
            return true;
    return false;
}

/* put_iconv - convert with an open descriptor; undecodable bytes skipped */
static bool put_iconv(struct buf *out, iconv_t cd, const char *p, size_t n, size_t max)
{
    char tmp[4096];
    char *in = (char *)p;
    size_t inleft = n;
    while (inleft > 0) {
        char *o = tmp;
        size_t oleft = sizeof tmp;
        size_t r = iconv(cd, &in, &inleft, &o, &oleft);
        int e = errno;
        if (!put_utf8(out, tmp, (size_t)(o - tmp), max, false))
            return false;
        if (r != (size_t)-1 || e == E2BIG)
            continue;
        if (e == EILSEQ && inleft > 0) {
            in++;                        /* RFC says nothing; we skip what cannot be read */
            inleft--;
            continue;
        }
        break;                           /* EINVAL: a character cut at the end */
    }
    char *o = tmp;
    size_t oleft = sizeof tmp;
    (void)iconv(cd, NULL, NULL, &o, &oleft);
    return put_utf8(out, tmp, (size_t)(o - tmp), max, false);
}

bool archive_text_append(struct buf *out, const char *p, size_t n, const char *charset,
                         size_t max)
{
    bool utf8;
    if (utf8_family(charset, &utf8))
        return put_utf8(out, p, n, max, !utf8);
    iconv_t cd = g_mime_iconv_open("UTF-8", charset);
    if (cd == (iconv_t)-1)
        return put_utf8(out, p, n, max, true);   /* unknown charset: Latin-1 */
    bool ok = put_iconv(out, cd, p, n, max);
    g_mime_iconv_close(cd);
    return ok;
}

char *archive_text_utf8(const char *p, size_t n, const char *charset, size_t max)
{
    struct buf b;
    buf_init(&b);
    (void)archive_text_append(&b, p, n, charset, max);
    char *s = xstrndup(b.data ? b.data : "", b.len);
    buf_free(&b);
    return s;
}

unsigned char *archive_transfer_decode(const char *p, size_t n, const char *cte, size_t *outlen)
{
    GMimeContentEncoding enc = cte ? g_mime_content_encoding_from_string(cte)
                                   : GMIME_CONTENT_ENCODING_DEFAULT;
    if (enc != GMIME_CONTENT_ENCODING_BASE64 && enc != GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE &&
        enc != GMIME_CONTENT_ENCODING_UUENCODE) {
        unsigned char *copy = xmalloc(n + 1);
        if (n > 0)
            memcpy(copy, p, n);
        copy[n] = '\0';
        *outlen = n;
        return copy;
    }
    GMimeEncoding st;
    g_mime_encoding_init_decode(&st, enc);
    size_t cap = g_mime_encoding_outlen(&st, n);
    if (cap < n + 16)
        cap = n + 16;                    /* decoders never grow their input by more */
    unsigned char *o = xmalloc(cap + 1);
    size_t len = g_mime_encoding_flush(&st, p, n, (char *)o);
    o[len] = '\0';
    *outlen = len;
    return o;
}

size_t archive_header_end(const char *p, size_t n)
{
    if (n >= 2 && p[0] == '\r' && p[1] == '\n')
        return 2;
    if (n >= 1 && p[0] == '\n')
        return 1;
    for (size_t i = 0; i + 1 < n; i++) {
        if (p[i] != '\n')
            continue;
        if (p[i + 1] == '\n')
            return i + 2;
        if (p[i + 1] == '\r' && i + 2 < n && p[i + 2] == '\n')
            return i + 3;
    }
    return n;
}

size_t archive_line(const char *p, size_t n, size_t i, size_t *content_end)
{
    const char *nl = memchr(p + i, '\n', n - i);
    size_t eol = nl ? (size_t)(nl - p) : n;
    size_t ce = eol;
    if (ce > i && p[ce - 1] == '\r')
        ce--;
    *content_end = ce;
    return nl ? eol + 1 : n;
}

/* field_match - the header line p[i..ce) is field name: the offset of its value, or 0 */
static size_t field_match(const char *p, size_t i, size_t ce, const char *name)
{
    size_t nlen = strlen(name);
    if (ce - i <= nlen || strncasecmp(p + i, name, nlen) != 0)
        return 0;
    size_t k = i + nlen;
    while (k < ce && (p[k] == ' ' || p[k] == '\t'))   /* RFC 5322 4.5.3: obsolete WSP before ':' */
        k++;
    return k < ce && p[k] == ':' ? k + 1 : 0;
}

char *archive_header_get(const char *p, size_t n, const char *name)
{
    size_t i = 0;
    while (i < n) {
        size_t ce, next = archive_line(p, n, i, &ce);
        if (ce == i)
            break;                       /* the empty line: end of the header section */
        size_t v = p[i] == ' ' || p[i] == '\t' ? 0 : field_match(p, i, ce, name);
        if (v == 0) {
            i = next;
            continue;
        }
        /* RFC 5322 2.2.3: unfolding removes the line breaks, keeps the WSP */
        struct buf b;
        buf_init(&b);
        buf_append(&b, p + v, ce - v);
        i = next;
        while (i < n && (p[i] == ' ' || p[i] == '\t')) {
            next = archive_line(p, n, i, &ce);
            buf_append(&b, p + i, ce - i);
            i = next;
        }
        size_t s = 0, e = b.len;
        while (s < e && (b.data[s] == ' ' || b.data[s] == '\t'))
            s++;
        while (e > s && (b.data[e - 1] == ' ' || b.data[e - 1] == '\t'))
            e--;
        char *out = xstrndup(b.data ? b.data + s : "", e - s);
        buf_free(&b);
        return out;
    }
    return NULL;
}
