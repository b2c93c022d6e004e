/*
 * store_held.c - issue 7's held-mail configuration in SQLite (migration 10,
 * store.c): organisation-wide blocked senders (the trigger that holds or
 * rejects mail by sender), forwarding rules, and the Message-IDs of
 * released held mail.  Its interface is the section "held mail, blocked
 * senders, forwarding" of store.h; callers are the API (api_held.c) and
 * the snapshot loader (store_snapshot.c).
 *
 * Statements live in this file's own table (held_sql[]), prepared at
 * store_open and kept in st->held_stmt.  Input is checked here, so every
 * caller gets the same errors with the same field names.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "store_priv.h"

#define HELD_MESSAGE_ID_MAX 998      /* one header line (RFC 5322 2.1.1) */

enum held_stmt {
    H_BLOCK_ADD,
    H_BLOCK_DEL,
    H_BLOCK_LIST,
    H_FWD_ADD,
    H_FWD_DEL,
    H_FWD_LIST,
    H_REL_ADD,
    H_REL_GET,
    H_REL_EACH,
    H__COUNT
};

static const char *const held_sql[H__COUNT] = {
    [H_BLOCK_ADD] =
        "INSERT INTO blocked_senders (pattern, action, comment, created) VALUES (?1, ?2, ?3, ?4)",
    [H_BLOCK_DEL] = "DELETE FROM blocked_senders WHERE pattern = ?1",
    [H_BLOCK_LIST] = "SELECT id, pattern, action, comment, created FROM blocked_senders ORDER BY pattern",
    [H_FWD_ADD] = "INSERT INTO forwarding (address, target, mode, comment, created) "
                  "VALUES (?1, ?2, ?3, ?4, ?5)",
    [H_FWD_DEL] = "DELETE FROM forwarding WHERE id = ?1",
    [H_FWD_LIST] = "SELECT id, address, target, mode, comment, created FROM forwarding "
                   "ORDER BY address, id",
    [H_REL_ADD] = "INSERT OR REPLACE INTO held_released (message_id, released) VALUES (?1, ?2)",
    [H_REL_GET] = "SELECT 1 FROM held_released WHERE message_id = ?1",
    [H_REL_EACH] = "SELECT message_id FROM held_released WHERE released >= ?1 "
                   "ORDER BY released DESC LIMIT ?2",
};

int store_held_prepare(struct store *st, const char *path, struct error *err)
{
    return store_stmts_prepare(st, path, "held", held_sql, H__COUNT, &st->held_stmt, err);
}

void store_held_finalize(struct store *st)
{
    store_stmts_finalize(&st->held_stmt, H__COUNT);
}

static sqlite3_stmt *stmt(struct store *st, enum held_stmt id)
{
    return store_stmt_reset(st->held_stmt[id]);
}

/* comment_check - bounded, one line, UTF-8 */
static int comment_check(const char *comment, struct error *err)
{
    if (comment == NULL)
        return 0;
    size_t len = strnlen(comment, STORE_COMMENT_MAX + 1);
    if (len > STORE_COMMENT_MAX) {
        error_set(err, "comment", "comment is longer than %d octets", STORE_COMMENT_MAX);
        return -1;
    }
    for (const char *p = comment; *p; p++)
        if ((unsigned char)*p < 32 || *p == 127) {
            error_set(err, "comment", "comment must be one line without control characters");
            return -1;
        }
    if (!str_valid_utf8(comment, len)) {
        error_set(err, "comment", "comment is not valid UTF-8");
        return -1;
    }
    return 0;
}

/* domain_ok - a host name: letters, digits, '-', '.', at least one dot, no empty label */
static bool domain_ok(const char *d)
{
    size_t len = strlen(d);
    if (len == 0 || len > 253 || d[0] == '.' || d[len - 1] == '.' || strstr(d, "..") ||
        strchr(d, '.') == NULL)
        return false;
    return strspn(d, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") == len;
}

/* address_ok - local@domain with a printable, unquoted local part */
static bool address_ok(const char *a)
{
    const char *at = strrchr(a, '@');
    if (at == NULL || at == a || at - a > 64)
        return false;
    for (const char *p = a; p < at; p++)
        if ((unsigned char)*p <= 32 || *p == 127 || strchr("<>()[]\\,;:\"", *p))
            return false;
    return domain_ok(at + 1);
}

/* canon - copy s lower-cased into dst; -1 when too long */
static int canon(char *dst, size_t size, const char *s)
{
    if (s == NULL || str_copy(dst, size, s) < 0)
        return -1;
    str_lower(dst);
    return 0;
}

/* --- blocked senders --- */

static const char *const block_actions[] = { [STORE_BLOCK_REJECT] = "reject", [STORE_BLOCK_HOLD] = "hold" };

const char *store_block_action_name(enum store_block_action a)
{
    return (unsigned)a < sizeof block_actions / sizeof *block_actions ? block_actions[a] : "?";
}

int store_block_action_parse(const char *s, enum store_block_action *out)
{
    for (size_t i = 0; s != NULL && i < sizeof block_actions / sizeof *block_actions; i++)
        if (strcmp(s, block_actions[i]) == 0) {
            *out = (enum store_block_action)i;
            return 0;
        }
    return -1;
}

/* blocked_pattern - the canonical pattern, or -1 with err on "address" */
static int blocked_pattern(const char *pattern, char *dst, size_t size, struct error *err)
{
    if (canon(dst, size, pattern) < 0 || (strchr(dst, '@') ? !address_ok(dst) : !domain_ok(dst))) {
        error_set(err, "address", "%.80s is neither an address (user@example.com) nor a "
                  "domain (example.com)", pattern ? pattern : "(null)");
        return -1;
    }
    return 0;
}

int store_blocked_add(struct store *st, const char *pattern, enum store_block_action action,
                      const char *comment, int64_t *id_out, struct error *err)
{
    char pat[STORE_BLOCKED_PATTERN_MAX + 1];
    if (blocked_pattern(pattern, pat, sizeof pat, err) < 0 || comment_check(comment, err) < 0)
        return STORE_ERR;
    if (action != STORE_BLOCK_REJECT && action != STORE_BLOCK_HOLD) {
        error_set(err, "action", "action must be reject or hold");
        return STORE_ERR;
    }
    sqlite3_stmt *s = stmt(st, H_BLOCK_ADD);
    sqlite3_bind_text(s, 1, pat, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, store_block_action_name(action), -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, comment ? comment : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 4, (int64_t)time(NULL));
    int rc = store_step_change(st, s, "blocked sender", "address", pat, err);
    if (rc == STORE_OK && id_out != NULL)
        *id_out = sqlite3_last_insert_rowid(st->db);
    return rc;
}

int store_blocked_delete(struct store *st, const char *pattern, struct error *err)
{
    char pat[STORE_BLOCKED_PATTERN_MAX + 1];
    if (blocked_pattern(pattern, pat, sizeof pat, err) < 0)
        return STORE_ERR;
    sqlite3_stmt *s = stmt(st, H_BLOCK_DEL);
    sqlite3_bind_text(s, 1, pat, -1, SQLITE_TRANSIENT);
    return store_step_change(st, s, "blocked sender", "address", pat, err);
}

int store_blocked_list(struct store *st, struct store_blocked_sender **out, size_t *n,
                       struct error *err)
{
    sqlite3_stmt *s = stmt(st, H_BLOCK_LIST);
    size_t cap = 0;
    int rc;
    *out = NULL;
    *n = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = xreallocarray(*out, cap, sizeof **out);
        }
        struct store_blocked_sender *b = &(*out)[(*n)++];
        b->id = sqlite3_column_int64(s, 0);
        b->pattern = store_col_strdup(s, 1);
        const char *a = (const char *)sqlite3_column_text(s, 2);
        b->action = a && strcmp(a, "hold") == 0 ? STORE_BLOCK_HOLD : STORE_BLOCK_REJECT;
        b->comment = store_col_strdup(s, 3);
        b->created = sqlite3_column_int64(s, 4);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "blocked senders");
        store_blocked_free(*out, *n);
        *out = NULL;
        *n = 0;
        return STORE_ERR;
    }
    return STORE_OK;
}

void store_blocked_free(struct store_blocked_sender *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(b[i].pattern);
        free(b[i].comment);
    }
    free(b);
}

/* --- forwarding rules --- */

static const char *const fwd_modes[] = { [STORE_FORWARD_REDIRECT] = "redirect", [STORE_FORWARD_COPY] = "copy" };

const char *store_forward_mode_name(enum store_forward_mode m)
{
    return (unsigned)m < sizeof fwd_modes / sizeof *fwd_modes ? fwd_modes[m] : "?";
}

int store_forward_mode_parse(const char *s, enum store_forward_mode *out)
{
    for (size_t i = 0; s != NULL && i < sizeof fwd_modes / sizeof *fwd_modes; i++)
        if (strcmp(s, fwd_modes[i]) == 0) {
            *out = (enum store_forward_mode)i;
            return 0;
        }
    return -1;
}

int store_forward_add(struct store *st, const char *address, const char *target,
                      enum store_forward_mode mode, const char *comment, int64_t *id_out,
                      struct error *err)
{
    char a[STORE_BLOCKED_PATTERN_MAX + 1], t[STORE_BLOCKED_PATTERN_MAX + 1];
    if (canon(a, sizeof a, address) < 0 || !address_ok(a)) {
        error_set(err, "address", "%.80s is not an address (user@example.com)",
                  address ? address : "(null)");
        return STORE_ERR;
    }
    if (canon(t, sizeof t, target) < 0 || !address_ok(t)) {
        error_set(err, "target", "%.80s is not an address (user@example.com)",
                  target ? target : "(null)");
        return STORE_ERR;
    }
    if (strcmp(a, t) == 0) {
        error_set(err, "target", "a rule cannot forward %s to itself", a);
        return STORE_ERR;
    }
    if (mode != STORE_FORWARD_REDIRECT && mode != STORE_FORWARD_COPY) {
        error_set(err, "mode", "mode must be redirect or copy");
        return STORE_ERR;
    }
    if (comment_check(comment, err) < 0)
        return STORE_ERR;
    sqlite3_stmt *s = stmt(st, H_FWD_ADD);
    sqlite3_bind_text(s, 1, a, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, t, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 3, store_forward_mode_name(mode), -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, comment ? comment : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 5, (int64_t)time(NULL));
    char key[2 * STORE_BLOCKED_PATTERN_MAX + 8];
    xsnprintf(key, sizeof key, "%s -> %s", a, t);
    int rc = store_step_change(st, s, "forwarding rule", "target", key, err);
    if (rc == STORE_OK && id_out != NULL)
        *id_out = sqlite3_last_insert_rowid(st->db);
    return rc;
}

int store_forward_delete(struct store *st, int64_t id, struct error *err)
{
    char key[24];
    xsnprintf(key, sizeof key, "%lld", (long long)id);
    sqlite3_stmt *s = stmt(st, H_FWD_DEL);
    sqlite3_bind_int64(s, 1, id);
    return store_step_change(st, s, "forwarding rule", "id", key, err);
}

int store_forward_list(struct store *st, struct store_forward **out, size_t *n, struct error *err)
{
    sqlite3_stmt *s = stmt(st, H_FWD_LIST);
    size_t cap = 0;
    int rc;
    *out = NULL;
    *n = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = xreallocarray(*out, cap, sizeof **out);
        }
        struct store_forward *f = &(*out)[(*n)++];
        f->id = sqlite3_column_int64(s, 0);
        f->address = store_col_strdup(s, 1);
        f->target = store_col_strdup(s, 2);
        const char *m = (const char *)sqlite3_column_text(s, 3);
        f->mode = m && strcmp(m, "copy") == 0 ? STORE_FORWARD_COPY : STORE_FORWARD_REDIRECT;
        f->comment = store_col_strdup(s, 4);
        f->created = sqlite3_column_int64(s, 5);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "forwarding rules");
        store_forwards_free(*out, *n);
        *out = NULL;
        *n = 0;
        return STORE_ERR;
    }
    return STORE_OK;
}

void store_forwards_free(struct store_forward *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(f[i].address);
        free(f[i].target);
        free(f[i].comment);
    }
    free(f);
}

/* --- released Message-IDs --- */

/* store_message_id_key - the Message-ID without angle brackets or surrounding blanks */
int store_message_id_key(const char *id, char *dst, size_t size)
{
    if (id == NULL)
        return -1;
    while (*id == ' ' || *id == '\t' || *id == '<')
        id++;
    size_t len = strcspn(id, ">\r\n");
    while (len > 0 && (id[len - 1] == ' ' || id[len - 1] == '\t'))
        len--;
    if (len == 0 || len >= size)
        return -1;
    memcpy(dst, id, len);
    dst[len] = '\0';
    return 0;
}

int store_held_released_add(struct store *st, const char *message_id, struct error *err)
{
    char key[HELD_MESSAGE_ID_MAX + 1];
    if (store_message_id_key(message_id, key, sizeof key) < 0) {
        error_set(err, "message_id", "not a Message-ID");
        return STORE_ERR;
    }
    sqlite3_stmt *s = stmt(st, H_REL_ADD);
    sqlite3_bind_text(s, 1, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, (int64_t)time(NULL));
    return store_step_change(st, s, "released message", "message_id", key, err);
}

bool held_released_message_id(struct store *st, const char *message_id)
{
    char key[HELD_MESSAGE_ID_MAX + 1];
    if (store_message_id_key(message_id, key, sizeof key) < 0)
        return false;
    sqlite3_stmt *s = stmt(st, H_REL_GET);
    sqlite3_bind_text(s, 1, key, -1, SQLITE_TRANSIENT);
    bool hit = sqlite3_step(s) == SQLITE_ROW;
    sqlite3_reset(s);
    return hit;
}

int store_held_released_each(struct store *st, int64_t since, size_t max,
                             int (*fn)(void *arg, const char *key), void *arg, struct error *err)
{
    sqlite3_stmt *s = stmt(st, H_REL_EACH);
    sqlite3_bind_int64(s, 1, since);
    sqlite3_bind_int64(s, 2, (int64_t)max);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(s, 0);
        if (k != NULL && fn(arg, k) != 0)
            break;
    }
    bool bad = rc != SQLITE_ROW && rc != SQLITE_DONE;
    if (bad)
        error_set(err, "", "released messages: %s", sqlite3_errmsg(st->db));
    sqlite3_reset(s);
    return bad ? STORE_ERR : STORE_OK;
}

/* store_address_ok - local@domain, as forwarding targets are checked (store_priv.h) */
bool store_address_ok(const char *a)
{
    return a != NULL && address_ok(a);
}
