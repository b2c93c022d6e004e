/*
 * store_antispoof.c - anti-spoofing bypasses in SQLite (issue 7; table
 * antispoof_bypasses, store.c migrations) and their part of the routing
 * snapshot.  Its interface is the section "anti-spoofing" of store.h;
 * callers are the API (api_antispoof.c), Connect's antispoof_bypass task and
 * the snapshot loader (store_snapshot.c).
 *
 * A bypass excepts a source from anti-spoofing for one internal domain (or
 * all, domain ""):
 *   ip    an address or range (core/cidr.h), stored canonical;
 *   host  a host name, exact or "*.example.net" (any name below it), that
 *         the client's forward-confirmed reverse DNS must match;
 *   spf   a sender domain whose SPF must pass (evaluated at end of DATA).
 * Input is checked here so every caller gets the same errors and fields.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include "../core/cidr.h"
#include "store_priv.h"

enum antispoof_stmt { A_ADD, A_DEL, A_LIST, A__COUNT };

static const char *const antispoof_sql[A__COUNT] = {
    [A_ADD] = "INSERT INTO antispoof_bypasses (kind, value, domain, comment, created)"
              " VALUES (?1, ?2, ?3, ?4, ?5)",
    [A_DEL] = "DELETE FROM antispoof_bypasses WHERE id = ?1",
    [A_LIST] = "SELECT id, kind, value, domain, comment, created FROM antispoof_bypasses ORDER BY id",
};

static const char *const kind_names[] = {
    [STORE_ANTISPOOF_IP] = "ip", [STORE_ANTISPOOF_HOST] = "host", [STORE_ANTISPOOF_SPF] = "spf",
};

int store_antispoof_prepare(struct store *st, const char *path, struct error *err)
{
    return store_stmts_prepare(st, path, "antispoof", antispoof_sql, A__COUNT, &st->antispoof_stmt,
                               err);
}

void store_antispoof_finalize(struct store *st)
{
    store_stmts_finalize(&st->antispoof_stmt, A__COUNT);
}

const char *store_antispoof_kind_name(enum store_antispoof_kind k)
{
    return (unsigned)k < sizeof kind_names / sizeof kind_names[0] ? kind_names[k] : "?";
}

int store_antispoof_kind_parse(const char *s, enum store_antispoof_kind *out)
{
    for (size_t i = 0; s != NULL && i < sizeof kind_names / sizeof kind_names[0]; i++)
        if (strcmp(s, kind_names[i]) == 0) {
            *out = (enum store_antispoof_kind)i;
            return 0;
        }
    return -1;
}

/* name_canon - a domain or host name: lower-case, no trailing dot, valid */
static int name_canon(const char *in, char dst[256], const char *field, struct error *err)
{
    if (in == NULL || in[0] == '\0' || str_copy(dst, 256, in) < 0) {
        error_set(err, field, "%s must be a domain name of at most 253 characters", field);
        return -1;
    }
    size_t len = strlen(dst);
    if (len > 0 && dst[len - 1] == '.')
        dst[--len] = '\0';
    str_lower(dst);
    if (!domain_name_valid(dst)) {
        error_set(err, field, "not a domain name: \"%.100s\"", in);
        return -1;
    }
    return 0;
}

/* value_canon - the bypass value checked for its kind, canonical in dst */
static int value_canon(enum store_antispoof_kind kind, const char *value, char dst[256],
                       struct error *err)
{
    if (value == NULL || value[0] == '\0') {
        error_set(err, "value", "value is required");
        return -1;
    }
    if (kind == STORE_ANTISPOOF_IP) {
        struct cidr c;
        struct error e2 = {0};
        if (cidr_parse(value, &c, &e2) < 0 || cidr_format(&c, dst, 256) < 0) {
            error_set(err, "value", "not an address or range: %s", e2.msg);
            return -1;
        }
        return 0;
    }
    if (kind == STORE_ANTISPOOF_HOST && strncmp(value, "*.", 2) == 0) {
        char base[256];
        if (name_canon(value + 2, base, "value", err) < 0)
            return -1;
        if (xsnprintf(dst, 256, "*.%s", base) < 0) {
            error_set(err, "value", "the host pattern is longer than 253 characters");
            return -1;
        }
        return 0;
    }
    return name_canon(value, dst, "value", err);
}

int store_antispoof_bypass_add(struct store *st, const char *kind, const char *value,
                               const char *domain, const char *comment, int64_t *id_out,
                               struct error *err)
{
    enum store_antispoof_kind k;
    char v[256], d[256] = "";
    if (store_antispoof_kind_parse(kind, &k) < 0) {
        error_set(err, "kind", "kind must be ip, host or spf");
        return STORE_ERR;
    }
    if (value_canon(k, value, v, err) < 0)
        return STORE_ERR;
    if (domain != NULL && domain[0] != '\0' && name_canon(domain, d, "domain", err) < 0)
        return STORE_ERR;
    if (comment != NULL) {
        size_t len = strnlen(comment, STORE_COMMENT_MAX + 1);
        bool bad = len > STORE_COMMENT_MAX || !str_valid_utf8(comment, len);
        for (const char *p = comment; !bad && *p; p++)
            bad = (unsigned char)*p < 32 || *p == 127;
        if (bad) {
            error_set(err, "comment", "comment must be one line of at most %d octets of UTF-8",
                      STORE_COMMENT_MAX);
            return STORE_ERR;
        }
    }
    sqlite3_stmt *s = store_stmt_reset(st->antispoof_stmt[A_ADD]);
    sqlite3_bind_text(s, 1, kind_names[k], -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, v, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, d, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 4, comment ? comment : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 5, (int64_t)time(NULL));
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if ((rc & 0xff) == SQLITE_CONSTRAINT) {
        error_set(err, "value", "the bypass %s %s%s%s exists already", kind_names[k], v,
                  d[0] ? " for " : "", d);
        return STORE_CONFLICT;
    }
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "antispoof bypass");
        return STORE_ERR;
    }
    st->own_commits++;
    if (id_out != NULL)
        *id_out = sqlite3_last_insert_rowid(st->db);
    return STORE_OK;
}

int store_antispoof_bypass_remove(struct store *st, int64_t id, struct error *err)
{
    sqlite3_stmt *s = store_stmt_reset(st->antispoof_stmt[A_DEL]);
    sqlite3_bind_int64(s, 1, id);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "antispoof bypass");
        return STORE_ERR;
    }
    if (sqlite3_changes(st->db) == 0) {
        error_set(err, "id", "no such bypass: %lld", (long long)id);
        return STORE_NOT_FOUND;
    }
    st->own_commits++;
    return STORE_OK;
}

int store_antispoof_bypass_list(struct store *st, struct store_antispoof_bypass **out, size_t *n,
                                struct error *err)
{
    sqlite3_stmt *s = store_stmt_reset(st->antispoof_stmt[A_LIST]);
    size_t cap = 0;
    int rc;
    *out = NULL;
    *n = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        enum store_antispoof_kind k;
        if (store_antispoof_kind_parse((const char *)sqlite3_column_text(s, 1), &k) < 0)
            continue;   /* the CHECK constraint keeps this from happening */
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = xreallocarray(*out, cap, sizeof **out);
        }
        struct store_antispoof_bypass *b = &(*out)[(*n)++];
        memset(b, 0, sizeof *b);
        b->id = sqlite3_column_int64(s, 0);
        b->kind = k;
        b->value = store_col_strdup(s, 2);
        b->domain = store_col_strdup(s, 3);
        b->comment = store_col_strdup(s, 4);
        b->created = sqlite3_column_int64(s, 5);
        if (k == STORE_ANTISPOOF_IP) {
            struct error e2;
            if (cidr_parse(b->value, &b->cidr, &e2) < 0)
                b->cidr.family = 0;   /* matches nothing */
        }
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "antispoof bypasses");
        store_antispoof_bypasses_free(*out, *n);
        *out = NULL;
        *n = 0;
        return STORE_ERR;
    }
    return STORE_OK;
}

void store_antispoof_bypasses_free(struct store_antispoof_bypass *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(b[i].value);
        free(b[i].domain);
        free(b[i].comment);
    }
    free(b);
}

/* --- matching, pure (the snapshot and unit tests) --- */

/* domain_applies - a bypass for bypass_domain ("" = all) covers the internal
 * domain spoofed (the same name, or a subdomain of it) */
bool store_antispoof_domain_applies(const char *bypass_domain, const char *spoofed)
{
    if (bypass_domain == NULL || bypass_domain[0] == '\0')
        return true;
    if (spoofed == NULL)
        return false;
    if (str_ieq(bypass_domain, spoofed))
        return true;
    size_t bl = strlen(bypass_domain), sl = strlen(spoofed);
    return sl > bl + 1 && spoofed[sl - bl - 1] == '.' && str_ieq(spoofed + sl - bl, bypass_domain);
}

bool store_antispoof_host_matches(const char *pattern, const char *host)
{
    if (pattern == NULL || host == NULL || host[0] == '\0')
        return false;
    char h[256];
    if (str_copy(h, sizeof h, host) < 0)
        return false;
    size_t len = strlen(h);
    if (len > 0 && h[len - 1] == '.')
        h[--len] = '\0';
    if (strncmp(pattern, "*.", 2) == 0) {
        const char *base = pattern + 2;
        size_t bl = strlen(base);
        return len > bl + 1 && h[len - bl - 1] == '.' && str_ieq(h + len - bl, base);
    }
    return str_ieq(pattern, h);
}
