/*
 * archive_mime.c - what the archive indexes of one message (archive_mime.h):
 * GMime 3 parses the message; archive_mime_extract walks the part tree,
 * collecting the decoded header fields, the text of the text parts and the
 * attachment names.
 *
 * Every bound is checked here, not left to GMime: the input is cut at
 * max_parse before GMime sees it, and before the part headers beyond
 * max_parts; the walk stops at max_depth and max_parts, the text at
 * max_text.  GMime's own nesting cap (1024 levels) keeps its recursive
 * parser off the end of the stack on the rest.  All GMime objects
 * are made and released within one call, so several threads may extract at
 * once; GLib types never leave this file and archive_text.c.
 *
 * Entry points: archive_mime_init/shutdown, archive_mime_extract,
 * archive_doc_clear.  The HTML reader is archive_html.c.
 */
#include <string.h>
#include <strings.h>
#include <gmime/gmime.h>
#include "archive_mime.h"
#include "archive_text.h"

#define ATTACHMENT_NAME_MAX 1024      /* octets of one attachment name kept */
#define HEADER_VALUE_MAX 16384        /* octets of a decoded subject or address list */

void archive_mime_init(void)
{
    g_mime_init();
}

void archive_mime_shutdown(void)
{
    g_mime_shutdown();
}

void archive_doc_clear(struct archive_doc *d)
{
    free(d->message_id);
    free(d->subject);
    free(d->from);
    free(d->to);
    free(d->cc);
    free(d->from_display);
    free(d->text);
    for (size_t i = 0; i < d->n_attachments; i++)
        free(d->attachments[i]);
    free(d->attachments);
    memset(d, 0, sizeof *d);
}

/* the state of one walk over a message's parts */
struct walk {
    const struct archive_limits *lim;
    struct archive_doc *doc;
    struct buf text;
    size_t cap_attachments;
    unsigned parts;
};

/* --- header fields --- */

/* utf8_dup - a bounded, valid UTF-8 copy of what GMime decoded (it may pass
 * raw 8-bit octets of a header through) */
static char *utf8_dup(const char *s, size_t max)
{
    return archive_text_utf8(s ? s : "", s ? strlen(s) : 0, NULL, max);
}

/* addr_collect - the mailboxes of list (group members included), lower-case */
static void addr_collect(InternetAddressList *list, struct buf *out, int depth)
{
    int n = list ? internet_address_list_length(list) : 0;
    for (int i = 0; i < n && out->len < HEADER_VALUE_MAX; i++) {
        InternetAddress *ia = internet_address_list_get_address(list, i);
        if (INTERNET_ADDRESS_IS_GROUP(ia)) {
            if (depth == 0)          /* RFC 5322 3.4: groups do not nest */
                addr_collect(internet_address_group_get_members((InternetAddressGroup *)ia),
                             out, depth + 1);
            continue;
        }
        if (!INTERNET_ADDRESS_IS_MAILBOX(ia))
            continue;
        const char *a = internet_address_mailbox_get_addr((InternetAddressMailbox *)ia);
        if (a == NULL || *a == '\0')
            continue;
        if (out->len > 0)
            buf_append(out, ", ", 2);
        (void)archive_text_append(out, a, strlen(a), NULL, HEADER_VALUE_MAX);
    }
}

static char *addr_list(InternetAddressList *list)
{
    struct buf b;
    buf_init(&b);
    addr_collect(list, &b, 0);
    char *s = str_lower(xstrndup(b.data ? b.data : "", b.len));
    buf_free(&b);
    return s;
}

/* message_id - the Message-ID without its angle brackets */
static char *message_id(GMimeMessage *m)
{
    const char *id = g_mime_message_get_message_id(m);
    if (id == NULL)
        return NULL;
    size_t n = strlen(id);
    while (n > 0 && (*id == '<' || *id == ' ' || *id == '\t')) {
        id++;
        n--;
    }
    while (n > 0 && (id[n - 1] == '>' || id[n - 1] == ' ' || id[n - 1] == '\t'))
        n--;
    if (n == 0)
        return NULL;
    return archive_text_utf8(id, n, NULL, 998);   /* RFC 5322 2.1.1: a line's limit */
}

static void extract_headers(GMimeMessage *m, struct archive_doc *d)
{
    d->message_id = message_id(m);
    d->subject = utf8_dup(g_mime_message_get_subject(m), HEADER_VALUE_MAX);
    InternetAddressList *from = g_mime_message_get_from(m);
    d->from = addr_list(from);
    d->to = addr_list(g_mime_message_get_to(m));
    d->cc = addr_list(g_mime_message_get_cc(m));
    char *disp = from && internet_address_list_length(from) > 0
               ? internet_address_list_to_string(from, NULL, FALSE) : NULL;
    d->from_display = utf8_dup(disp, HEADER_VALUE_MAX);
    g_free(disp);
    GDateTime *date = g_mime_message_get_date(m);
    d->date = date ? (int64_t)g_date_time_to_unix(date) : 0;
}

/* --- the parts --- */

static void walk_object(struct walk *w, GMimeObject *obj, unsigned depth, bool want_text);

static void add_attachment(struct walk *w, const char *name)
{
    struct archive_doc *d = w->doc;
    if (d->n_attachments == w->cap_attachments) {
        w->cap_attachments = w->cap_attachments ? w->cap_attachments * 2 : 8;
        d->attachments = xreallocarray(d->attachments, w->cap_attachments, sizeof *d->attachments);
    }
    d->attachments[d->n_attachments++] = utf8_dup(name, ATTACHMENT_NAME_MAX);
}

/* text_room - octets of text still allowed, separator included; 0 when full */
static size_t text_room(struct walk *w)
{
    size_t sep = w->text.len > 0 ? 2 : 0;
    size_t used = w->text.len + sep;
    return used < w->lim->max_text ? w->lim->max_text - used : 0;
}

/* add_text - one part's text, after the "\n\n" between parts */
static void add_text(struct walk *w, const char *s, size_t n)
{
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    size_t lead = 0;
    while (lead < n && (s[lead] == '\n' || s[lead] == ' ' || s[lead] == '\t'))
        lead++;
    s += lead;
    n -= lead;
    if (n == 0)
        return;
    size_t room = text_room(w);
    size_t k = archive_utf8_cut(s, n, room);
    if (k < n)
        w->doc->truncated = true;
    if (k == 0)
        return;
    if (w->text.len > 0)
        buf_append(&w->text, "\n\n", 2);
    buf_append(&w->text, s, k);
}

/* leaf_text - a text part's content, transfer encoding undone, in UTF-8 */
static void leaf_text(struct walk *w, GMimePart *part, GMimeContentType *ct, bool html)
{
    size_t room = text_room(w);
    if (room == 0) {
        w->doc->truncated = true;
        return;
    }
    GMimeDataWrapper *content = g_mime_part_get_content(part);
    if (content == NULL)
        return;
    GMimeStream *mem = g_mime_stream_mem_new();
    (void)g_mime_data_wrapper_write_to_stream(content, mem);
    GByteArray *raw = g_mime_stream_mem_get_byte_array((GMimeStreamMem *)mem);
    const char *charset = ct ? g_mime_content_type_get_parameter(ct, "charset") : NULL;
    struct buf u;
    buf_init(&u);
    /* HTML loses most of its octets to markup: convert it all (it is
     * bounded by max_parse), then keep room octets of its text */
    size_t limit = html ? raw->len * 2 + 16 : room + 1;
    if (!archive_text_append(&u, (const char *)raw->data, raw->len, charset, limit) && !html)
        w->doc->truncated = true;
    if (html) {
        char *t = archive_html_to_text(u.data ? u.data : "", u.len, room + 1);
        add_text(w, t, strlen(t));
        free(t);
    } else {
        add_text(w, u.data ? u.data : "", u.len);
    }
    buf_free(&u);
    g_object_unref(mem);
}

static void walk_leaf(struct walk *w, GMimePart *part, bool want_text)
{
    GMimeObject *obj = (GMimeObject *)part;
    GMimeContentType *ct = g_mime_object_get_content_type(obj);
    GMimeContentDisposition *disp = g_mime_object_get_content_disposition(obj);
    bool plain = ct == NULL || g_mime_content_type_is_type(ct, "text", "plain");
    bool html = ct != NULL && g_mime_content_type_is_type(ct, "text", "html");
    bool is_text = ct == NULL || g_mime_content_type_is_type(ct, "text", "*");
    const char *name = g_mime_part_get_filename(part);
    bool attachment = (disp && g_mime_content_disposition_is_attachment(disp)) ||
                      (!is_text && name != NULL);
    if (attachment) {
        add_attachment(w, name);
        return;
    }
    if (want_text && (plain || html))
        leaf_text(w, part, ct, html);
}

/* alternative_choice - RFC 2046 5.1.4: the text/plain version if there is
 * one, else the HTML one, else the last (the richest) */
static int alternative_choice(GMimeMultipart *mp, int n)
{
    int html = -1;
    for (int i = 0; i < n; i++) {
        GMimeObject *c = g_mime_multipart_get_part(mp, i);
        GMimeContentType *ct = g_mime_object_get_content_type(c);
        if (!GMIME_IS_PART(c) || ct == NULL)
            continue;
        if (g_mime_content_type_is_type(ct, "text", "plain"))
            return i;
        if (html < 0 && g_mime_content_type_is_type(ct, "text", "html"))
            html = i;
    }
    return html >= 0 ? html : n - 1;
}

static void walk_multipart(struct walk *w, GMimeMultipart *mp, unsigned depth, bool want_text)
{
    GMimeContentType *ct = g_mime_object_get_content_type((GMimeObject *)mp);
    int n = g_mime_multipart_get_count(mp);
    int choice = -1;
    if (ct && g_mime_content_type_is_type(ct, "multipart", "alternative") && n > 0)
        choice = alternative_choice(mp, n);
    /* the versions not chosen still count for their attachments */
    for (int i = 0; i < n && w->parts <= w->lim->max_parts; i++)
        walk_object(w, g_mime_multipart_get_part(mp, i), depth + 1,
                    want_text && (choice < 0 || choice == i));
}

static void walk_object(struct walk *w, GMimeObject *obj, unsigned depth, bool want_text)
{
    if (obj == NULL)
        return;
    if (++w->parts > w->lim->max_parts || depth > w->lim->max_depth) {
        w->doc->truncated = true;
        return;
    }
    if (GMIME_IS_MULTIPART(obj)) {
        walk_multipart(w, (GMimeMultipart *)obj, depth, want_text);
    } else if (GMIME_IS_MESSAGE_PART(obj)) {
        GMimeContentDisposition *disp = g_mime_object_get_content_disposition(obj);
        if (disp && g_mime_content_disposition_is_attachment(disp))
            add_attachment(w, g_mime_content_disposition_get_parameter(disp, "filename"));
        GMimeMessage *inner = g_mime_message_part_get_message((GMimeMessagePart *)obj);
        if (inner)
            walk_object(w, g_mime_message_get_mime_part(inner), depth + 1, want_text);
    } else if (GMIME_IS_PART(obj)) {
        walk_leaf(w, (GMimePart *)obj, want_text);
    }
}

/* raw_text - what a message GMime cannot read as one still says */
static void raw_text(struct walk *w, const char *msg, size_t len)
{
    struct buf u;
    buf_init(&u);
    if (!archive_text_append(&u, msg, len, NULL, w->lim->max_text + 1))
        w->doc->truncated = true;
    add_text(w, u.data ? u.data : "", u.len);
    buf_free(&u);
}

/* parts_cut - where the (max_parts + 2)-th Content-Type field starts in
 * msg[0..n) (the message's own and max_parts more), or n.  The walk visits
 * no more parts than that, and GMime need not parse what follows: a
 * nesting bomb costs GMime time in proportion to its depth for every line,
 * so without the cut 10 MiB of nesting would take it seconds. */
static size_t parts_cut(const char *msg, size_t n, unsigned max_parts)
{
    static const char ct[] = "content-type:";
    size_t seen = 0, i = 0;
    while (i + sizeof ct - 1 <= n) {
        if (strncasecmp(msg + i, ct, sizeof ct - 1) == 0 && ++seen > (size_t)max_parts + 1)
            return i;
        const char *nl = memchr(msg + i, '\n', n - i);
        if (nl == NULL)
            break;
        i = (size_t)(nl - msg) + 1;
    }
    return n;
}

int archive_mime_extract(const void *msg, size_t len, const struct archive_limits *lim,
                         struct archive_doc *out)
{
    memset(out, 0, sizeof *out);
    struct walk w = { .lim = lim, .doc = out };
    buf_init(&w.text);
    out->header_len = len > 0 ? archive_header_end(msg, len) : 0;
    size_t n = len;
    if (n > lim->max_parse) {
        n = lim->max_parse;
        out->truncated = true;
    }
    size_t cut = parts_cut(msg, n, lim->max_parts);
    if (cut < n) {
        n = cut;
        out->truncated = true;
    }
    GMimeStream *st = g_mime_stream_mem_new_with_buffer(n > 0 ? msg : "", n);
    GMimeParser *parser = g_mime_parser_new_with_stream(st);
    GMimeParserOptions *opt = g_mime_parser_options_new();
    /* undeclared 8-bit header text: UTF-8 if it is, else the usual Western guess */
    const char *fallback[] = { "UTF-8", "windows-1252", NULL };
    g_mime_parser_options_set_fallback_charsets(opt, fallback);
    GMimeMessage *m = g_mime_parser_construct_message(parser, opt);
    if (m) {
        extract_headers(m, out);
        walk_object(&w, g_mime_message_get_mime_part(m), 0, true);
        g_object_unref(m);
    } else {
        raw_text(&w, msg, n);
    }
    g_mime_parser_options_free(opt);
    g_object_unref(parser);
    g_object_unref(st);
    if (out->subject == NULL)
        out->subject = xstrdup("");
    if (out->from == NULL)
        out->from = xstrdup("");
    if (out->to == NULL)
        out->to = xstrdup("");
    if (out->cc == NULL)
        out->cc = xstrdup("");
    if (out->from_display == NULL)
        out->from_display = xstrdup("");
    out->text = xstrndup(w.text.data ? w.text.data : "", w.text.len);
    buf_free(&w.text);
    return 0;
}
