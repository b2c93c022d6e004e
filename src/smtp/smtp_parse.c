/*
 * smtp_parse.c - pure parsers for SMTP server input: command lines, paths
 * (RFC 5321 4.1.2 with the RFC 6531 UTF-8 extension) and the MAIL/RCPT
 * parameters of SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531) and
 * DSN (RFC 3461).
 *
 * Entry points: smtp_parse_command, smtp_parse_path, smtp_parse_mail,
 * smtp_parse_rcpt, smtp_parse_helo.  Nothing here allocates or keeps state;
 * the session owns every buffer.  Inputs are (pointer, length) pairs and may
 * contain any octet: the fuzz target feeds them raw.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "../core/core.h"
#include "smtp_parse.h"

/* parse_fail - fill err and return -1 */
static int parse_fail(struct smtp_parse_error *err, int code, const char *dsn, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int parse_fail(struct smtp_parse_error *err, int code, const char *dsn, const char *fmt, ...)
{
    va_list ap;
    err->code = code;
    (void)str_copy(err->dsn, sizeof err->dsn, dsn);
    va_start(ap, fmt);
    if (vsnprintf(err->text, sizeof err->text, fmt, ap) < 0)
        err->text[0] = '\0';
    va_end(ap);
    return -1;
}

static inline bool is_alpha(unsigned char c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
static inline bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static inline bool is_alnum(unsigned char c) { return is_alpha(c) || is_digit(c); }
static inline char up(char c) { return (c >= 'a' && c <= 'z') ? (char)(c - 32) : c; }

/* ci_prefix - does [s, s+len) start with the ASCII word w, case-insensitively */
static bool ci_prefix(const char *s, size_t len, const char *w)
{
    size_t n = strlen(w);
    if (len < n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (up(s[i]) != up(w[i]))
            return false;
    return true;
}

/* ci_equal - [s, s+len) equals w, case-insensitively */
static bool ci_equal(const char *s, size_t len, const char *w)
{
    return strlen(w) == len && ci_prefix(s, len, w);
}

/* utf8_len - length of the well-formed UTF-8 sequence at s (non-ASCII lead), 0 if bad */
static size_t utf8_len(const char *s, size_t len)
{
    size_t n;
    unsigned char c = (unsigned char)s[0];
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4;
    else
        return 0;
    if (n > len || !str_valid_utf8(s, n))
        return 0;
    return n;
}

int smtp_parse_command(const char *line, size_t len, struct smtp_cmdline *out,
                       struct smtp_parse_error *err)
{
    memset(out, 0, sizeof *out);
    out->args = "";
    /* RFC 5321 2.3.8: CR and LF only as the CRLF line end; NUL never */
    for (size_t i = 0; i < len; i++) {
        char c = line[i];
        if (c == '\0' || c == '\r' || c == '\n')
            return parse_fail(err, 501, "5.5.2", "Syntax error: NUL, CR or LF inside a command line");
    }
    if (!str_valid_utf8(line, len))
        return parse_fail(err, 501, "5.5.2", "Syntax error: invalid UTF-8 in command line");
    size_t i = 0;
    while (i < len && line[i] == ' ')
        i++;
    size_t v = 0;
    while (i < len && line[i] != ' ') {
        if (!is_alpha((unsigned char)line[i]) || v >= SMTP_VERB_MAX)
            return parse_fail(err, 500, "5.5.2", "Syntax error: command unrecognized");
        out->verb[v++] = up(line[i]);
        i++;
    }
    out->verb[v] = '\0';
    if (v == 0)
        return parse_fail(err, 500, "5.5.2", "Syntax error: empty command");
    while (i < len && line[i] == ' ')
        i++;
    size_t end = len;
    while (end > i && (line[end - 1] == ' ' || line[end - 1] == '\t'))
        end--;
    out->args = line + i;
    out->args_len = end - i;
    return 0;
}

/* atext - RFC 5322 3.2.3 atext (ASCII part) */
static bool is_atext(unsigned char c)
{
    if (is_alnum(c))
        return true;
    return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* parse_local - Dot-string or Quoted-string at s; returns octets used, 0 if bad */
static size_t parse_local(const char *s, size_t len, unsigned *flags)
{
    size_t i = 0;
    if (len > 0 && s[0] == '"') {
        /* RFC 5321 4.1.2: qtextSMTP = %d32-33 / %d35-91 / %d93-126, quoted-pairSMTP = "\" %d32-126 */
        *flags |= SMTP_ADDR_QUOTED;
        i = 1;
        while (i < len) {
            unsigned char c = (unsigned char)s[i];
            if (c == '"')
                return i + 1;
            if (c == '\\') {
                if (i + 1 >= len || (unsigned char)s[i + 1] < 32 || (unsigned char)s[i + 1] > 126)
                    return 0;
                i += 2;
            } else if (c >= 32 && c <= 126) {
                i++;
            } else if (c >= 0x80) {
                size_t n = utf8_len(s + i, len - i);   /* RFC 6531 3.3: qtextSMTP =/ UTF8-non-ascii */
                if (n == 0)
                    return 0;
                *flags |= SMTP_ADDR_UTF8;
                i += n;
            } else {
                return 0;
            }
        }
        return 0;
    }
    bool atom_start = true;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (atom_start)
                return 0;    /* leading or double dot */
            atom_start = true;
            i++;
        } else if (is_atext(c)) {
            atom_start = false;
            i++;
        } else if (c >= 0x80) {
            size_t n = utf8_len(s + i, len - i);   /* RFC 6531 3.3: atext =/ UTF8-non-ascii */
            if (n == 0)
                return 0;
            *flags |= SMTP_ADDR_UTF8;
            atom_start = false;
            i += n;
        } else {
            break;
        }
    }
    if (i == 0 || atom_start)
        return 0;          /* empty, or a trailing dot */
    return i;
}

/* parse_domain - RFC 5321 Domain (U-labels allowed, RFC 6531); octets used, 0 if bad */
static size_t parse_domain(const char *s, size_t len, unsigned *flags)
{
    size_t i = 0, label = 0;
    bool hyphen_last = false;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (label == 0 || hyphen_last)
                return 0;
            label = 0;
            i++;
            continue;
        }
        if (is_alnum(c) || (c == '-' && label > 0)) {
            hyphen_last = (c == '-');
            label++;
            i++;
        } else if (c >= 0x80) {
            size_t n = utf8_len(s + i, len - i);
            if (n == 0)
                return 0;
            *flags |= SMTP_ADDR_UTF8;
            hyphen_last = false;
            label += n;
            i += n;
        } else {
            break;
        }
        if (label > 63)
            return 0;
    }
    /* RFC 5321 4.1.2: sub-domain = Let-dig [Ldh-str], so no trailing hyphen or dot */
    if (label == 0 || hyphen_last)
        return 0;
    return i;
}

/* literal_valid - the inside of an address literal "[...]" (RFC 5321 4.1.3) */
static bool literal_valid(const char *s, size_t len)
{
    char tmp[64];
    unsigned char bin[16];
    if (len == 0 || len >= sizeof tmp)
        return false;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    if (ci_prefix(tmp, len, "IPv6:"))
        return inet_pton(AF_INET6, tmp + 5, bin) == 1;
    if (is_digit((unsigned char)tmp[0])) {
        /* inet_pton(AF_INET) takes exactly the dotted quad, no shortcuts */
        return inet_pton(AF_INET, tmp, bin) == 1;
    }
    /* General-address-literal = Standardized-tag ":" 1*dcontent */
    size_t i = 0;
    while (i < len && (is_alnum((unsigned char)s[i]) || s[i] == '-'))
        i++;
    if (i == 0 || i >= len || s[i] != ':' || i + 1 >= len)
        return false;
    for (i++; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 33 && c <= 90) || (c >= 94 && c <= 126)))
            return false;
    }
    return true;
}

int smtp_parse_path(const char *s, size_t len, enum smtp_path_role role,
                    struct smtp_addr *out, size_t *used, struct smtp_parse_error *err)
{
    const char *dsn = role == SMTP_PATH_SENDER ? "5.1.7" : "5.1.3";
    const char *what = role == SMTP_PATH_SENDER ? "sender" : "recipient";
    memset(out, 0, sizeof *out);
    *used = 0;
    if (len == 0 || s[0] != '<')
        return parse_fail(err, 501, dsn, "Bad %s address syntax: expected <address>", what);
    size_t i = 1;
    if (i < len && s[i] == '>') {
        if (role != SMTP_PATH_SENDER)
            return parse_fail(err, 501, dsn, "Bad recipient address syntax: null path <> not allowed");
        out->flags |= SMTP_ADDR_NULL;
        *used = 2;
        return 0;
    }
    /* RFC 5321 4.1.2 / C: A-d-l source routes are accepted and ignored */
    if (i < len && s[i] == '@') {
        unsigned f = 0;
        for (;;) {
            if (i >= len || s[i] != '@')
                return parse_fail(err, 501, dsn, "Bad %s address syntax: bad source route", what);
            i++;
            size_t n = parse_domain(s + i, len - i, &f);
            if (n == 0)
                return parse_fail(err, 501, dsn, "Bad %s address syntax: bad source route", what);
            i += n;
            if (i < len && s[i] == ',') {
                i++;
                continue;
            }
            if (i < len && s[i] == ':') {
                i++;
                break;
            }
            return parse_fail(err, 501, dsn, "Bad %s address syntax: bad source route", what);
        }
        out->flags |= SMTP_ADDR_ROUTE;
    }
    size_t lstart = i;
    size_t n = parse_local(s + i, len - i, &out->flags);
    if (n == 0)
        return parse_fail(err, 501, dsn, "Bad %s address syntax: bad local part", what);
    if (n > SMTP_LOCAL_MAX)
        return parse_fail(err, 501, dsn, "Bad %s address syntax: local part longer than %d octets",
                          what, SMTP_LOCAL_MAX);
    memcpy(out->local, s + lstart, n);
    out->local[n] = '\0';
    i += n;
    if (i < len && s[i] == '>') {
        /* RFC 5321 4.5.1: "postmaster" with no domain must be accepted for RCPT */
        if (role == SMTP_PATH_RCPT && str_ieq(out->local, "postmaster")) {
            out->flags |= SMTP_ADDR_NODOMAIN;
            (void)str_copy(out->addr, sizeof out->addr, out->local);
            *used = i + 1;
            return 0;
        }
        return parse_fail(err, 501, dsn, "Bad %s address syntax: domain missing", what);
    }
    if (i >= len || s[i] != '@')
        return parse_fail(err, 501, dsn, "Bad %s address syntax", what);
    i++;
    size_t dstart = i;
    if (i < len && s[i] == '[') {
        const char *close = memchr(s + i, ']', len - i);
        if (close == NULL || !literal_valid(s + i + 1, (size_t)(close - (s + i + 1))))
            return parse_fail(err, 501, dsn, "Bad %s address syntax: bad address literal", what);
        out->flags |= SMTP_ADDR_LITERAL;
        i = (size_t)(close - s) + 1;
    } else {
        n = parse_domain(s + i, len - i, &out->flags);
        if (n == 0)
            return parse_fail(err, 501, dsn, "Bad %s address syntax: bad domain", what);
        i += n;
    }
    size_t dlen = i - dstart;
    if (dlen > SMTP_DOMAIN_MAX)
        return parse_fail(err, 501, dsn, "Bad %s address syntax: domain longer than %d octets",
                          what, SMTP_DOMAIN_MAX);
    if (i >= len || s[i] != '>')
        return parse_fail(err, 501, dsn, "Bad %s address syntax: expected \">\"", what);
    i++;
    if (i > SMTP_PATH_MAX)
        return parse_fail(err, 501, dsn, "Bad %s address syntax: path longer than %d octets",
                          what, SMTP_PATH_MAX);
    memcpy(out->domain, s + dstart, dlen);
    out->domain[dlen] = '\0';
    size_t alen = (size_t)(s + dstart + dlen - (s + lstart));
    if (alen >= sizeof out->addr)
        return parse_fail(err, 501, dsn, "Bad %s address syntax: path too long", what);
    memcpy(out->addr, s + lstart, alen);
    out->addr[alen] = '\0';
    *used = i;
    return 0;
}

bool smtp_xtext_valid(const char *s, size_t len, bool allow_utf8)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        if (c == '+') {
            /* RFC 3461 4: hexchar = "+" 2(%x30-39 / %x41-46), upper case only */
            if (i + 2 >= len || s[i + 1] == '\0' || s[i + 2] == '\0' ||
                !strchr(hex, s[i + 1]) || !strchr(hex, s[i + 2]))
                return false;
            i += 3;
        } else if (c >= 33 && c <= 126 && c != '=') {
            i++;
        } else if (c >= 0x80 && allow_utf8) {
            size_t n = utf8_len(s + i, len - i);
            if (n == 0)
                return false;
            i += n;
        } else {
            return false;
        }
    }
    return true;
}

/* param - one "KEYWORD[=value]" of a MAIL or RCPT command */
struct param {
    const char *key;
    size_t key_len;
    const char *val;     /* NULL when no "=" */
    size_t val_len;
};

/* next_param - split the next space-separated parameter (RFC 5321 4.1.2
 * esmtp-param); returns 1 for one, 0 at the end, -1 on bad syntax */
static int next_param(const char *s, size_t len, size_t *pos, struct param *p)
{
    size_t i = *pos;
    while (i < len && s[i] == ' ')
        i++;
    if (i >= len) {
        *pos = i;
        return 0;
    }
    size_t start = i;
    /* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
    if (!is_alnum((unsigned char)s[i]))
        return -1;
    while (i < len && (is_alnum((unsigned char)s[i]) || s[i] == '-'))
        i++;
    p->key = s + start;
    p->key_len = i - start;
    p->val = NULL;
    p->val_len = 0;
    if (i < len && s[i] == '=') {
        i++;
        size_t vstart = i;
        /* esmtp-value = 1*(%d33-60 / %d62-126), UTF-8 too under RFC 6531 */
        while (i < len && s[i] != ' ') {
            unsigned char c = (unsigned char)s[i];
            if (c < 33 || c == '=' || c == 127)
                return -1;
            i++;
        }
        if (i == vstart)
            return -1;
        p->val = s + vstart;
        p->val_len = i - vstart;
    }
    if (i < len && s[i] != ' ')
        return -1;
    *pos = i;
    return 1;
}

/* parse_keyword_arg - expect "FROM:" / "TO:" then an optional space (a common
 * client liberty), then the path */
static int parse_head(const char *args, size_t len, const char *word, size_t *pos)
{
    if (!ci_prefix(args, len, word))
        return -1;
    size_t i = strlen(word);
    while (i < len && args[i] == ' ')
        i++;
    *pos = i;
    return 0;
}

int smtp_parse_mail(const char *args, size_t len, struct smtp_mail_args *out,
                    struct smtp_parse_error *err)
{
    memset(out, 0, sizeof *out);
    out->size = -1;
    size_t pos, used;
    if (parse_head(args, len, "FROM:", &pos) < 0)
        return parse_fail(err, 501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]");
    if (smtp_parse_path(args + pos, len - pos, SMTP_PATH_SENDER, &out->path, &used, err) < 0)
        return -1;
    pos += used;
    if (pos < len && args[pos] != ' ')
        return parse_fail(err, 501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]");
    bool seen_size = false, seen_body = false, seen_ret = false, seen_envid = false;
    struct param p;
    int r;
    while ((r = next_param(args, len, &pos, &p)) == 1) {
        if (ci_equal(p.key, p.key_len, "SIZE")) {
            /* RFC 1870 6: size-value = 1*20DIGIT */
            if (seen_size || p.val == NULL || p.val_len > 20)
                return parse_fail(err, 501, "5.5.4", "Bad SIZE parameter");
            int64_t v = 0;
            for (size_t k = 0; k < p.val_len; k++) {
                if (!is_digit((unsigned char)p.val[k]))
                    return parse_fail(err, 501, "5.5.4", "Bad SIZE parameter");
                if (v > (INT64_MAX - 9) / 10)
                    v = INT64_MAX;     /* saturate: it is over any limit anyway */
                else
                    v = v * 10 + (p.val[k] - '0');
            }
            out->size = v;
            seen_size = true;
        } else if (ci_equal(p.key, p.key_len, "BODY")) {
            if (seen_body || p.val == NULL)
                return parse_fail(err, 501, "5.5.4", "Bad BODY parameter");
            if (ci_equal(p.val, p.val_len, "7BIT"))
                out->body = SMTP_BODY_7BIT;
            else if (ci_equal(p.val, p.val_len, "8BITMIME"))
                out->body = SMTP_BODY_8BITMIME;
            else     /* BINARYMIME needs CHUNKING, which is not offered (RFC 3030) */
                return parse_fail(err, 555, "5.5.4", "Unsupported BODY type");
            seen_body = true;
        } else if (ci_equal(p.key, p.key_len, "SMTPUTF8")) {
            if (out->smtputf8 || p.val != NULL)
                return parse_fail(err, 501, "5.5.4", "Bad SMTPUTF8 parameter");
            out->smtputf8 = true;
        } else if (ci_equal(p.key, p.key_len, "RET")) {
            if (seen_ret || p.val == NULL)
                return parse_fail(err, 501, "5.5.4", "Bad RET parameter");
            if (ci_equal(p.val, p.val_len, "FULL"))
                out->ret = SMTP_RET_FULL;
            else if (ci_equal(p.val, p.val_len, "HDRS"))
                out->ret = SMTP_RET_HDRS;
            else
                return parse_fail(err, 501, "5.5.4", "Bad RET parameter: FULL or HDRS");
            seen_ret = true;
        } else if (ci_equal(p.key, p.key_len, "ENVID")) {
            /* RFC 3461 4.4: xtext, at most 100 characters */
            if (seen_envid || p.val == NULL || p.val_len > SMTP_ENVID_MAX ||
                !smtp_xtext_valid(p.val, p.val_len, false))
                return parse_fail(err, 501, "5.5.4", "Bad ENVID parameter");
            memcpy(out->envid, p.val, p.val_len);
            out->envid[p.val_len] = '\0';
            seen_envid = true;
        } else {
            return parse_fail(err, 555, "5.5.4", "Unsupported MAIL parameter");
        }
    }
    if (r < 0)
        return parse_fail(err, 501, "5.5.4", "Syntax error in MAIL parameters");
    /* RFC 6531 3.5: a non-ASCII path needs the SMTPUTF8 parameter */
    if ((out->path.flags & SMTP_ADDR_UTF8) && !out->smtputf8)
        return parse_fail(err, 553, "5.6.7", "Non-ASCII sender address requires SMTPUTF8");
    return 0;
}

/* parse_notify - RFC 3461 4.1: "NEVER" or a list of SUCCESS, FAILURE, DELAY */
static int parse_notify(const char *v, size_t len, unsigned *out)
{
    unsigned bits = 0;
    size_t i = 0;
    while (i <= len) {
        const char *c = memchr(v + i, ',', len - i);
        size_t end = c ? (size_t)(c - v) : len;
        const char *w = v + i;
        size_t wl = end - i;
        unsigned b;
        if (ci_equal(w, wl, "NEVER"))
            b = SMTP_NOTIFY_NEVER;
        else if (ci_equal(w, wl, "SUCCESS"))
            b = SMTP_NOTIFY_SUCCESS;
        else if (ci_equal(w, wl, "FAILURE"))
            b = SMTP_NOTIFY_FAILURE;
        else if (ci_equal(w, wl, "DELAY"))
            b = SMTP_NOTIFY_DELAY;
        else
            return -1;
        if (bits & b)
            return -1;
        bits |= b;
        if (c == NULL)
            break;
        i = end + 1;
    }
    if ((bits & SMTP_NOTIFY_NEVER) && bits != SMTP_NOTIFY_NEVER)
        return -1;
    *out = bits;
    return 0;
}

int smtp_parse_rcpt(const char *args, size_t len, bool smtputf8, struct smtp_rcpt_args *out,
                    struct smtp_parse_error *err)
{
    memset(out, 0, sizeof *out);
    size_t pos, used;
    if (parse_head(args, len, "TO:", &pos) < 0)
        return parse_fail(err, 501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]");
    if (smtp_parse_path(args + pos, len - pos, SMTP_PATH_RCPT, &out->path, &used, err) < 0)
        return -1;
    pos += used;
    if (pos < len && args[pos] != ' ')
        return parse_fail(err, 501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]");
    bool seen_notify = false, seen_orcpt = false;
    struct param p;
    int r;
    while ((r = next_param(args, len, &pos, &p)) == 1) {
        if (ci_equal(p.key, p.key_len, "NOTIFY")) {
            if (seen_notify || p.val == NULL || parse_notify(p.val, p.val_len, &out->notify) < 0)
                return parse_fail(err, 501, "5.5.4", "Bad NOTIFY parameter");
            seen_notify = true;
        } else if (ci_equal(p.key, p.key_len, "ORCPT")) {
            /* RFC 3461 4.2: addr-type ";" xtext, at most 500 characters */
            const char *semi = p.val ? memchr(p.val, ';', p.val_len) : NULL;
            if (seen_orcpt || p.val == NULL || p.val_len > SMTP_ORCPT_MAX || semi == NULL || semi == p.val)
                return parse_fail(err, 501, "5.5.4", "Bad ORCPT parameter");
            for (const char *t = p.val; t < semi; t++)
                if (!is_alnum((unsigned char)*t) && *t != '-')
                    return parse_fail(err, 501, "5.5.4", "Bad ORCPT parameter");
            size_t rest = p.val_len - (size_t)(semi + 1 - p.val);
            if (rest == 0 || !smtp_xtext_valid(semi + 1, rest, smtputf8))
                return parse_fail(err, 501, "5.5.4", "Bad ORCPT parameter");
            memcpy(out->orcpt, p.val, p.val_len);
            out->orcpt[p.val_len] = '\0';
            seen_orcpt = true;
        } else {
            return parse_fail(err, 555, "5.5.4", "Unsupported RCPT parameter");
        }
    }
    if (r < 0)
        return parse_fail(err, 501, "5.5.4", "Syntax error in RCPT parameters");
    if ((out->path.flags & SMTP_ADDR_UTF8) && !smtputf8)
        return parse_fail(err, 553, "5.6.7", "Non-ASCII recipient address requires SMTPUTF8");
    return 0;
}

int smtp_parse_helo(const char *args, size_t len, char *out, size_t outsize,
                    struct smtp_parse_error *err)
{
    if (len == 0)
        return parse_fail(err, 501, "5.5.4", "Syntax: EHLO hostname");
    if (len > SMTP_HELO_MAX || len >= outsize)
        return parse_fail(err, 501, "5.5.4", "Syntax: hostname longer than %d octets", SMTP_HELO_MAX);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)args[i];
        /* one word: a domain or an address literal (RFC 5321 4.1.1.1); U-labels allowed */
        if (c <= 32 || c == 127)
            return parse_fail(err, 501, "5.5.4", "Syntax: EHLO hostname");
    }
    if (!str_valid_utf8(args, len))
        return parse_fail(err, 501, "5.5.2", "Syntax error: invalid UTF-8");
    memcpy(out, args, len);
    out[len] = '\0';
    return 0;
}
