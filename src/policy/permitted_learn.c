/*
 * permitted_learn.c - auto-allow (permitted.h): what an outbound message
 * teaches, and the store write on the worker pool.
 *
 * A message teaches unless it is automatic (RFC 3834 5: Auto-Submitted
 * other than "no"; the de-facto Precedence bulk/junk/list and X-Autoreply
 * markers) or a reply to released held mail (a hook for the held-mail
 * module).  Headers are read from the transaction's first octets (bounded
 * by the caller), unfolded line by line; nothing beyond the header block's
 * empty line is looked at.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "../core/worker.h"
#include "../store/store.h"
#include "permitted.h"

#define HEADER_VALUE_MAX 998          /* RFC 5322 2.1.1 line limit; longer values are cut */

/* header_each - call fn(name, value) for each header field of the block;
 * stops at the empty line, at len, or when fn returns true (returns true) */
static bool header_each(const char *head, size_t len,
                        bool (*fn)(void *arg, const char *name, size_t nlen, const char *value),
                        void *arg)
{
    size_t i = 0;
    char value[HEADER_VALUE_MAX + 1];
    while (i < len) {
        const char *line = head + i;
        const char *eol = memchr(line, '\n', len - i);
        size_t llen = eol ? (size_t)(eol - line) : len - i;
        if (llen == 0 || (llen == 1 && line[0] == '\r'))
            return false;                       /* the end of the header block */
        i += llen + (eol ? 1 : 0);
        const char *colon = memchr(line, ':', llen);
        if (line[0] == ' ' || line[0] == '\t' || colon == NULL)
            continue;                           /* continuation of a field we skip, or junk */
        size_t nlen = (size_t)(colon - line);
        /* the value with its continuation lines, unfolded, bounded */
        size_t vlen = 0;
        const char *v = colon + 1;
        size_t vl = llen - nlen - 1;
        for (;;) {
            for (size_t k = 0; k < vl && vlen < HEADER_VALUE_MAX; k++)
                if (v[k] != '\r')
                    value[vlen++] = v[k] == '\t' ? ' ' : v[k];
            if (i >= len || (head[i] != ' ' && head[i] != '\t'))
                break;
            const char *next = head + i;
            const char *e2 = memchr(next, '\n', len - i);
            vl = e2 ? (size_t)(e2 - next) : len - i;
            v = next;
            i += vl + (e2 ? 1 : 0);
        }
        value[vlen] = '\0';
        if (fn(arg, line, nlen, value))
            return true;
    }
    return false;
}

static bool name_is(const char *name, size_t nlen, const char *want)
{
    return strlen(want) == nlen && strncasecmp(name, want, nlen) == 0;
}

/* first_token - the value's first word, lower-cased (up to ';', space or '(') */
static void first_token(const char *value, char *out, size_t cap)
{
    while (*value == ' ')
        value++;
    size_t n = 0;
    while (*value && *value != ';' && *value != ' ' && *value != '(' && n + 1 < cap)
        out[n++] = (char)tolower((unsigned char)*value++);
    out[n] = '\0';
}

struct auto_ctx {
    const char *why;
};

static bool auto_field(void *arg, const char *name, size_t nlen, const char *value)
{
    struct auto_ctx *c = arg;
    char tok[32];
    first_token(value, tok, sizeof tok);
    if (name_is(name, nlen, "Auto-Submitted")) {
        if (strcmp(tok, "no") != 0) {
            c->why = "Auto-Submitted";
            return true;
        }
    } else if (name_is(name, nlen, "Precedence")) {
        if (strcmp(tok, "bulk") == 0 || strcmp(tok, "junk") == 0 || strcmp(tok, "list") == 0) {
            c->why = "Precedence";
            return true;
        }
    } else if (name_is(name, nlen, "X-Autoreply") || name_is(name, nlen, "X-Autorespond")) {
        c->why = "X-Autoreply";
        return true;
    }
    return false;
}

bool permitted_learn_autoreply(const char *head, size_t len, const char **why)
{
    struct auto_ctx c = { NULL };
    bool r = head != NULL && header_each(head, len, auto_field, &c);
    if (why)
        *why = c.why;
    return r;
}

/* --- the held-mail hook --- */

static bool (*released_known)(void *arg, const char *msgid);
static void *released_arg;

void permitted_learn_set_released_hook(bool (*known)(void *arg, const char *msgid), void *arg)
{
    released_known = known;
    released_arg = arg;
}

/* reply_field - each <msg-id> of In-Reply-To / References, asked of the hook */
static bool reply_field(void *arg, const char *name, size_t nlen, const char *value)
{
    if (!name_is(name, nlen, "In-Reply-To") && !name_is(name, nlen, "References"))
        return false;
    const char *p = value;
    while ((p = strchr(p, '<')) != NULL) {
        const char *end = strchr(p, '>');
        if (end == NULL)
            break;
        char id[HEADER_VALUE_MAX + 1];
        size_t n = (size_t)(end - p + 1);
        memcpy(id, p, n);
        id[n] = '\0';
        if (released_known(released_arg, id))
            return true;
        p = end + 1;
    }
    return false;
}

bool permitted_learn_released_reply(const char *head, size_t len)
{
    if (released_known == NULL || head == NULL)
        return false;
    return header_each(head, len, reply_field, NULL);
}

/* --- the write, off the loop --- */

struct learn_job {
    char *db_path;
    char *user;
    char **values;
    size_t n;
    int64_t now;
    size_t written;
    char why[256];
};

static void learn_work(void *arg)
{
    struct learn_job *j = arg;
    struct error err = {0};
    struct store *st = store_open(j->db_path, &err);
    if (st == NULL) {
        (void)str_copy(j->why, sizeof j->why, err.msg);
        return;
    }
    for (size_t i = 0; i < j->n; i++) {
        if (store_permitted_auto_touch(st, j->user, j->values[i], j->now, &err) == STORE_OK)
            j->written++;
        else
            (void)str_copy(j->why, sizeof j->why, err.msg);
    }
    store_close(st);
}

static void learn_done(void *arg)
{
    struct learn_job *j = arg;
    char u[300];
    if (j->written < j->n)
        log_warn("event=auto_allow_failed user=%s written=%zu of=%zu reason=\"%s\"",
                 log_quote(u, sizeof u, j->user), j->written, j->n, j->why);
    else
        log_info("event=auto_allow_saved user=%s senders=%zu", log_quote(u, sizeof u, j->user),
                 j->written);
    for (size_t i = 0; i < j->n; i++)
        free(j->values[i]);
    free(j->values);
    free(j->user);
    free(j->db_path);
    free(j);
}

void permitted_learn_submit(struct worker_pool *workers, const char *db_path, const char *user,
                            char *const *values, size_t n, int64_t now)
{
    if (workers == NULL || db_path == NULL || n == 0)
        return;
    struct learn_job *j = xcalloc(1, sizeof *j);
    j->db_path = xstrdup(db_path);
    j->user = xstrdup(user);
    j->values = xcalloc(n, sizeof *j->values);
    for (size_t i = 0; i < n; i++)
        j->values[i] = xstrdup(values[i]);
    j->n = n;
    j->now = now;
    worker_submit(workers, learn_work, learn_done, j);
}
