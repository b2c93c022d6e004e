/*
 * archive_journal.c - Microsoft Exchange envelope journal reports
 * (archive_journal.h): classify a message sent to the journal address,
 * and unwrap a report into the envelope it records and the original
 * message it carries.
 *
 * The report's own MIME structure is read here, not by GMime's parser:
 * the original must come out octet for octet as Exchange attached it
 * ("included unaltered"), and GMime would rebuild it from a parse tree.
 * Only the top level matters (multipart/mixed: a text/plain envelope block,
 * then a message/rfc822 part), so this is a boundary scan over the
 * report; GMime supplies the Content-Type parameter parser (RFC 2045 and
 * 2231), the transfer decoders and the charset conversion.
 *
 * The envelope block (MS-XJRNL; one field per line):
 *     Sender: <smtp-address>                  Subject: <text>
 *     Message-ID: <msg-id>                    On-Behalf-Of: <smtp-address>
 *     To|Cc|Bcc|Recipient: <smtp-address>[, Expanded|Forwarded: <smtp-address>]
 * Field names are case-insensitive, unknown fields are skipped, CR LF and
 * LF both end a line; addresses may be bare, <bracketed> or "Name <addr>".
 *
 * Bounds: the envelope block is read up to max_parse octets, at most
 * ARCHIVE_JOURNAL_MAX_RCPTS recipients, the first JOURNAL_MAX_PARTS parts of
 * the report.  The original is whatever size the report carried (it was
 * already bounded by the SMTP message size limit): cutting it would archive
 * a corrupt message.
 */
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <gmime/gmime.h>
#include "archive_journal.h"
#include "archive_text.h"

#define JOURNAL_MAX_PARTS 16          /* parts of the report looked at: it has two */
#define JOURNAL_SUBJECT_MAX 16384
#define JOURNAL_ADDR_MAX 320          /* RFC 5321 4.5.3.1: 64 + 1 + 255, with room */

const char *archive_journal_kind_name(enum archive_journal_kind k)
{
    switch (k) {
    case ARCHIVE_JOURNAL_PLAIN: return "plain";
    case ARCHIVE_JOURNAL_REPORT: return "report";
    case ARCHIVE_JOURNAL_MALFORMED: return "malformed";
    }
    return "plain";
}

static void rcpts_free(struct archive_journal *j)
{
    for (size_t i = 0; i < j->n_rcpts; i++) {
        free(j->rcpts[i].addr);
        free(j->rcpts[i].kind);
        free(j->rcpts[i].expanded);
        free(j->rcpts[i].forwarded);
    }
    free(j->rcpts);
    j->rcpts = NULL;
    j->n_rcpts = 0;
}

void archive_journal_clear(struct archive_journal *j)
{
    rcpts_free(j);
    free(j->sender);
    free(j->on_behalf_of);
    free(j->subject);
    free(j->message_id);
    free(j->original);
    free(j->error);
    memset(j, 0, sizeof *j);
}

/* --- MIME structure of the report --- */

struct span {
    size_t start, end;                /* offsets into the report */
};

/* a Content-Type, read with GMime's parameter parser */
struct ctype {
    bool present;
    bool multipart, mixed, text_plain, rfc822;
    char *boundary;
    char *charset;
};

static void ctype_read(const char *p, size_t header_len, struct ctype *ct)
{
    memset(ct, 0, sizeof *ct);
    char *v = archive_header_get(p, header_len, "Content-Type");
    if (v == NULL) {
        ct->text_plain = true;        /* RFC 2045 5.2: the default */
        return;
    }
    ct->present = true;
    GMimeContentType *g = g_mime_content_type_parse(NULL, v);
    free(v);
    if (g == NULL)
        return;
    ct->multipart = g_mime_content_type_is_type(g, "multipart", "*");
    ct->mixed = g_mime_content_type_is_type(g, "multipart", "mixed");
    ct->text_plain = g_mime_content_type_is_type(g, "text", "plain");
    ct->rfc822 = g_mime_content_type_is_type(g, "message", "rfc822");
    const char *b = g_mime_content_type_get_parameter(g, "boundary");
    const char *c = g_mime_content_type_get_parameter(g, "charset");
    ct->boundary = b && *b ? xstrdup(b) : NULL;
    ct->charset = c && *c ? xstrdup(c) : NULL;
    g_object_unref(g);
}

static void ctype_clear(struct ctype *ct)
{
    free(ct->boundary);
    free(ct->charset);
}

/* delimiter - RFC 2046 5.1.1: the line p[i..ce) is "--" boundary ["--"]
 * followed by transport padding; 1 for a delimiter, 2 for the close one */
static int delimiter(const char *p, size_t i, size_t ce, const char *bnd, size_t blen)
{
    if (ce - i < 2 + blen || p[i] != '-' || p[i + 1] != '-' || memcmp(p + i + 2, bnd, blen) != 0)
        return 0;
    size_t k = i + 2 + blen;
    int kind = 1;
    if (ce - k >= 2 && p[k] == '-' && p[k + 1] == '-') {
        kind = 2;
        k += 2;
    }
    while (k < ce && (p[k] == ' ' || p[k] == '\t'))
        k++;
    return k == ce ? kind : 0;
}

/* split_parts - the body parts of the multipart p[body..len); the line
 * break before a delimiter belongs to the delimiter (RFC 2046 5.1.1).
 * A missing close delimiter ends the last part at the end of the data. */
static size_t split_parts(const char *p, size_t len, size_t body, const char *bnd,
                          struct span *parts, size_t max)
{
    size_t blen = strlen(bnd), n = 0, i = body, start = 0;
    bool in_part = false;
    while (i < len && n < max) {
        size_t ce, next = archive_line(p, len, i, &ce);
        int d = delimiter(p, i, ce, bnd, blen);
        if (d != 0) {
            if (in_part) {
                size_t end = i;
                if (end > start && p[end - 1] == '\n')
                    end--;
                if (end > start && p[end - 1] == '\r')
                    end--;
                parts[n++] = (struct span){ start, end };
            }
            if (d == 2)
                return n;
            in_part = true;
            start = next;
        }
        i = next;
    }
    if (in_part && n < max)
        parts[n++] = (struct span){ start, len };
    return n;
}

/* part_body - a part's content with its transfer encoding undone */
static unsigned char *part_body(const char *p, struct span s, size_t *outlen)
{
    size_t he = archive_header_end(p + s.start, s.end - s.start);
    char *cte = archive_header_get(p + s.start, he, "Content-Transfer-Encoding");
    unsigned char *b = archive_transfer_decode(p + s.start + he, s.end - s.start - he, cte, outlen);
    free(cte);
    return b;
}

/* --- the envelope block --- */

/* addr_read - the address in s[0..n): "<a>", "Name <a>" or a bare a;
 * lower-case, NULL when it does not look like one.  *null_ok: "<>" and ""
 * give "" (the null reverse-path) */
static char *addr_read(const char *s, size_t n, bool null_ok)
{
    while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    const char *lt = memchr(s, '<', n);
    if (lt) {
        const char *gt = memchr(lt, '>', n - (size_t)(lt - s));
        size_t end = gt ? (size_t)(gt - s) : n;
        n = end - (size_t)(lt - s) - 1;
        s = lt + 1;
    }
    if (n == 0)
        return null_ok ? xstrdup("") : NULL;
    if (n > JOURNAL_ADDR_MAX)
        return NULL;
    const char *at = memchr(s, '@', n);
    if (at == NULL || at == s || at == s + n - 1)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c == 0x7F || c == '<' || c == '>' || c == ',' || c == ';')
            return NULL;
    }
    return str_lower(xstrndup(s, n));
}

/* next_segment - the comma-separated segment at s[*i..n), commas inside
 * quotes or angle brackets included; advances *i past the comma */
static struct span next_segment(const char *s, size_t n, size_t *i)
{
    size_t start = *i, k = *i;
    bool quoted = false, angle = false;
    for (; k < n; k++) {
        if (s[k] == '"')
            quoted = !quoted;
        else if (!quoted && s[k] == '<')
            angle = true;
        else if (!quoted && s[k] == '>')
            angle = false;
        else if (!quoted && !angle && s[k] == ',')
            break;
    }
    *i = k < n ? k + 1 : n;
    return (struct span){ start, k };
}

/* prefix - the segment s[a..b) starts with "name:" (case-insensitive,
 * spaces around): the offset of what follows, or 0 */
static size_t prefix(const char *s, size_t a, size_t b, const char *name)
{
    while (a < b && (s[a] == ' ' || s[a] == '\t'))
        a++;
    size_t k = strlen(name);
    if (b - a <= k || strncasecmp(s + a, name, k) != 0 || s[a + k] != ':')
        return 0;
    return a + k + 1;
}

static void rcpt_add(struct archive_journal *j, size_t *cap, char *addr, const char *kind)
{
    if (j->n_rcpts == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        j->rcpts = xreallocarray(j->rcpts, *cap, sizeof *j->rcpts);
    }
    j->rcpts[j->n_rcpts++] = (struct archive_journal_rcpt){ .addr = addr, .kind = xstrdup(kind) };
}

/* rcpt_line - "To: a[, Expanded: g | Forwarded: f]": the recipient and
 * where it came from; more bare addresses on the line are recipients too */
static void rcpt_line(struct archive_journal *j, size_t *cap, const char *v, size_t n,
                      const char *kind)
{
    size_t i = 0;
    struct archive_journal_rcpt *last = NULL;
    while (i < n && j->n_rcpts < ARCHIVE_JOURNAL_MAX_RCPTS) {
        struct span s = next_segment(v, n, &i);
        size_t off;
        if (last && (off = prefix(v, s.start, s.end, "Expanded")) != 0) {
            if (last->expanded == NULL)
                last->expanded = addr_read(v + off, s.end - off, false);
        } else if (last && (off = prefix(v, s.start, s.end, "Forwarded")) != 0) {
            if (last->forwarded == NULL)
                last->forwarded = addr_read(v + off, s.end - off, false);
        } else {
            char *a = addr_read(v + s.start, s.end - s.start, false);
            if (a) {
                rcpt_add(j, cap, a, kind);
                last = &j->rcpts[j->n_rcpts - 1];
            }
        }
    }
}

/* the fields of the envelope block; the recipient kinds are store_archive_rcpt kinds */
enum env_field { ENV_SENDER, ENV_OBO, ENV_SUBJECT, ENV_MSGID, ENV_RCPT };
static const struct {
    const char *name;
    enum env_field field;
    const char *kind;
} env_fields[] = {
    { "Sender", ENV_SENDER, NULL },
    { "On-Behalf-Of", ENV_OBO, NULL },
    { "Subject", ENV_SUBJECT, NULL },
    { "Message-Id", ENV_MSGID, NULL },
    { "To", ENV_RCPT, "to" },
    { "Cc", ENV_RCPT, "cc" },
    { "Bcc", ENV_RCPT, "bcc" },
    { "Recipient", ENV_RCPT, "recipient" },
};

static char *msgid_read(const char *v, size_t n)
{
    while (n > 0 && (*v == '<' || *v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    while (n > 0 && (v[n - 1] == '>' || v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    return n > 0 ? archive_text_utf8(v, n, NULL, 998) : NULL;
}

/* env_line - one "Name: value" line of the block */
static void env_line(struct archive_journal *j, size_t *cap, bool *sender_seen, const char *l,
                     size_t n)
{
    const char *colon = memchr(l, ':', n);
    if (colon == NULL)
        return;
    size_t nl = (size_t)(colon - l);
    while (nl > 0 && (l[nl - 1] == ' ' || l[nl - 1] == '\t'))
        nl--;
    const char *v = colon + 1;
    size_t vn = n - (size_t)(v - l);
    while (vn > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        vn--;
    }
    while (vn > 0 && (v[vn - 1] == ' ' || v[vn - 1] == '\t'))
        vn--;
    for (size_t f = 0; f < sizeof env_fields / sizeof env_fields[0]; f++) {
        if (strlen(env_fields[f].name) != nl || strncasecmp(l, env_fields[f].name, nl) != 0)
            continue;
        switch (env_fields[f].field) {
        case ENV_SENDER:
            if (!*sender_seen) {
                *sender_seen = true;
                j->sender = addr_read(v, vn, true);
            }
            break;
        case ENV_OBO:
            if (j->on_behalf_of == NULL)
                j->on_behalf_of = addr_read(v, vn, false);
            break;
        case ENV_SUBJECT:
            if (j->subject == NULL)
                j->subject = archive_text_utf8(v, archive_utf8_cut(v, vn, JOURNAL_SUBJECT_MAX),
                                               NULL, JOURNAL_SUBJECT_MAX);
            break;
        case ENV_MSGID:
            if (j->message_id == NULL)
                j->message_id = msgid_read(v, vn);
            break;
        case ENV_RCPT:
            rcpt_line(j, cap, v, vn, env_fields[f].kind);
            break;
        }
        return;
    }
}

/* envelope_text - the first part as UTF-8 text, when it is text/plain;
 * at most max octets of it are read (the block is a few lines a recipient) */
static char *envelope_text(const char *p, struct span s, size_t max)
{
    if (s.end - s.start > max)
        s.end = s.start + max;
    size_t he = archive_header_end(p + s.start, s.end - s.start);
    struct ctype ct;
    ctype_read(p + s.start, he, &ct);
    char *text = NULL;
    if (ct.text_plain) {
        size_t n;
        unsigned char *raw = part_body(p, s, &n);
        text = archive_text_utf8((const char *)raw, n, ct.charset, max);
        free(raw);
    }
    ctype_clear(&ct);
    return text;
}

/* starts_with_sender - the block opens with a Sender: line (blank lines allowed) */
static bool starts_with_sender(const char *t)
{
    while (*t == '\n' || *t == ' ' || *t == '\t')
        t++;
    return strncasecmp(t, "Sender:", 7) == 0;
}

/* envelope_parse - the fields of the block; NULL, or why it cannot be read */
static const char *envelope_parse(struct archive_journal *j, const char *t)
{
    size_t cap = 0, n = strlen(t), i = 0;
    bool sender_seen = false;
    while (i < n) {
        const char *nl = memchr(t + i, '\n', n - i);
        size_t e = nl ? (size_t)(nl - t) : n;
        env_line(j, &cap, &sender_seen, t + i, e - i);
        i = nl ? e + 1 : n;
    }
    if (!sender_seen)
        return "the envelope block has no Sender line";
    if (j->sender == NULL)
        return "the Sender of the envelope block is not an address";
    if (j->n_rcpts == 0)
        return "the envelope block names no recipient";
    return NULL;
}

/* --- classification --- */

static int malformed(struct archive_journal *j, const char *why)
{
    archive_journal_clear(j);
    j->kind = ARCHIVE_JOURNAL_MALFORMED;
    j->error = xstrdup(why);
    return 0;
}

/* find_original - the first message/rfc822 part after the envelope block */
static ssize_t find_original(const char *p, const struct span *parts, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        size_t he = archive_header_end(p + parts[i].start, parts[i].end - parts[i].start);
        struct ctype ct;
        ctype_read(p + parts[i].start, he, &ct);
        bool rfc822 = ct.rfc822;
        ctype_clear(&ct);
        if (rfc822)
            return (ssize_t)i;
    }
    return -1;
}

int archive_journal_parse(const void *msg, size_t len, const struct archive_limits *lim,
                          struct archive_journal *out)
{
    memset(out, 0, sizeof *out);
    out->kind = ARCHIVE_JOURNAL_PLAIN;
    const char *p = msg;
    if (len == 0)
        return 0;
    size_t he = archive_header_end(p, len);
    char *xms = archive_header_get(p, he, "X-MS-Journal-Report");
    bool claims = xms != NULL;
    free(xms);
    struct ctype ct;
    ctype_read(p, he, &ct);
    struct span parts[JOURNAL_MAX_PARTS];
    size_t n = ct.multipart && ct.boundary
             ? split_parts(p, len, he, ct.boundary, parts, JOURNAL_MAX_PARTS) : 0;
    bool mixed = ct.mixed;
    ctype_clear(&ct);

    char *env = n > 0 ? envelope_text(p, parts[0], lim->max_parse) : NULL;
    ssize_t orig = find_original(p, parts, n);
    bool shaped = mixed && env && starts_with_sender(env) && orig > 0;
    if (!claims && !shaped) {
        free(env);
        return 0;                     /* an ordinary message: archived as it came */
    }
    const char *why = NULL;
    if (n == 0)
        why = "the journal report is not a multipart message with parts";
    else if (env == NULL)
        why = "the first part of the journal report is not a text/plain envelope block";
    else
        why = envelope_parse(out, env);
    if (why == NULL && orig < 0)
        why = "the journal report carries no message/rfc822 original";
    free(env);
    if (why)
        return malformed(out, why);
    out->original = part_body(p, parts[orig], &out->original_len);
    if (out->original_len == 0)
        return malformed(out, "the original message in the journal report is empty");
    out->kind = ARCHIVE_JOURNAL_REPORT;
    return 0;
}
