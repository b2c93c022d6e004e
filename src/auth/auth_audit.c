/*
 * auth_audit.c - the audit log writer: who (account, and whether through a
 * session or which API token), when, from which address, what (action and
 * target), and the before and after states as JSON with secrets redacted.
 *
 * Entry point: auth_audit.  Redaction works on a deep copy, so the caller's
 * objects are untouched, and at any depth (objects inside arrays inside
 * objects).  Rows are append-only in the store (no update or delete
 * statement exists; triggers refuse them).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "auth_priv.h"

#define REDACTED "[redacted]"

static bool has_suffix(const char *s, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);
    return len >= n && strcasecmp(s + len - n, suffix) == 0;
}

/* secret_member - names whose values are secrets: password, secret, token,
 * csrf, totp*, *_hash, and the compound forms new_password, csrf_token,
 * client_secret, api_token */
static bool secret_member(const char *name)
{
    size_t len = strlen(name);
    return strcasecmp(name, "password") == 0 || strcasecmp(name, "secret") == 0 ||
           strcasecmp(name, "token") == 0 || strncasecmp(name, "csrf", 4) == 0 ||
           strncasecmp(name, "totp", 4) == 0 || has_suffix(name, len, "_hash") ||
           has_suffix(name, len, "_password") || has_suffix(name, len, "_secret") ||
           has_suffix(name, len, "_token");
}

/* redact - in place, on our own deep copy */
static void redact(json_t *v, int depth)
{
    const char *key;
    json_t *member;
    size_t i;

    if (depth > 64)      /* jansson's parser bounds depth too; this is belt and braces */
        return;
    if (json_is_object(v)) {
        json_object_foreach(v, key, member) {
            if (secret_member(key))
                json_object_set_new(v, key, json_string(REDACTED));
            else
                redact(member, depth + 1);
        }
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, member)
            redact(member, depth + 1);
    }
}

/* redacted_text - compact JSON of a redacted copy, or NULL */
static char *redacted_text(json_t *v)
{
    if (v == NULL)
        return NULL;
    json_t *copy = json_deep_copy(v);
    if (copy == NULL)
        return NULL;
    redact(copy, 0);
    char *text = json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    json_decref(copy);
    return text;
}

int auth_audit(struct store *st, const struct auth_principal *who, const char *client_ip,
               const char *action, const char *target, json_t *before, json_t *after)
{
    struct error err;
    char *b = redacted_text(before), *a = redacted_text(after);
    struct store_audit_entry e = {
        .ts = (int64_t)(time_wall_ms() / 1000),
        .account_id = who ? who->account_id : 0,
        .account_name = who ? who->name : "",
        .via = who == NULL ? "" : who->via_token ? "token"
             : who->session_id_hash[0] ? "session" : "local",
        .token_id = who && who->via_token ? who->token_id : 0,
        .client_ip = client_ip ? client_ip : "",
        .action = action,
        .target = target ? target : "",
        .before_json = b,
        .after_json = a,
    };
    int rc = store_audit_append(st, &e, &err);
    free(b);
    free(a);
    if (rc < 0) {
        log_error("event=audit_append_failed action=%s error=\"%s\"", action ? action : "",
                  err.msg);
        return -1;
    }
    return 0;
}
