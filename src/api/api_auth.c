/*
 * api_auth.c - the handlers of sign-in, the caller's own account (password,
 * sessions, TOTP), accounts and roles, API tokens and the audit log
 * (api_auth.h).  The permission of each route is checked by the server
 * before a handler runs (api_routes.c); what is left here are the rules
 * that depend on the target: an account cannot change its own role, the
 * last administrator stays, other people's tokens need ACCOUNTS_MANAGE, a
 * token can mint nothing above the caller's role.
 *
 * Secrets: passwords, session ids, token values and TOTP seeds pass through
 * here but never reach a log line or the audit log; the one-time values
 * (generated password, new token, TOTP secret) are in the response body
 * once, and nowhere else.
 *
 * Ownership: every json_t built here is either handed to resp->body or
 * released before returning; strings from auth_* are wiped and freed here.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sodium.h>
#include "api_auth.h"
#include "api_priv.h"

#define SESSION_COOKIE "moat_session"

/* --- helpers --- */

static void wipe_free(char *s)
{
    if (s != NULL) {
        sodium_memzero(s, strlen(s));
        free(s);
    }
}

/* str_member - a string member of the body; NULL when absent (or resp holds a 400) */
static int str_member(const struct api_request *req, struct api_response *resp,
                      const char *name, const char **out)
{
    json_t *v = req->body ? json_object_get(req->body, name) : NULL;
    *out = NULL;
    if (v == NULL)
        return 0;
    if (!json_is_string(v)) {
        api_error(resp, 400, "invalid_field", name, "%s must be a string", name);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

/* parse_id - a positive decimal id */
static int parse_id(const char *s, int64_t *out)
{
    char *end;
    if (s == NULL || s[0] < '0' || s[0] > '9')
        return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end != '\0' || errno != 0 || v < 1)
        return -1;
    *out = v;
    return 0;
}

static int id_param(const struct api_request *req, struct api_response *resp, int64_t *id)
{
    if (req->n_params < 1 || parse_id(req->params[0], id) < 0) {
        api_error(resp, 400, "invalid_field", "id", "the id must be a positive whole number");
        return -1;
    }
    return 0;
}

/* cursor_id - the ?cursor= of an id-ordered list; 0 = from the start */
static int cursor_id(struct api_response *resp, const char *cursor, int64_t *out)
{
    *out = 0;
    if (cursor != NULL && parse_id(cursor, out) < 0) {
        api_error(resp, 400, "invalid_parameter", "cursor",
                  "cursor must be the next_cursor of the previous page");
        return -1;
    }
    return 0;
}

static json_t *page(json_t *items, bool more, int64_t last_id)
{
    char next[32];
    xsnprintf(next, sizeof next, "%lld", (long long)last_id);
    return json_pack("{s:o, s:o}", "items", items, "next_cursor",
                     more ? json_string(next) : json_null());
}

/* store_fail - map a store/auth failure to the answer */
static void store_fail(struct api_response *resp, int rc, const struct error *err)
{
    if (rc == STORE_NOT_FOUND)
        api_error_from(resp, 404, "not_found", err);
    else if (rc == STORE_CONFLICT && strcmp(err->field, "last_admin") == 0)
        api_error(resp, 409, "last_admin", NULL, "%s", err->msg);
    else if (rc == STORE_CONFLICT)
        api_error_from(resp, 409, "conflict", err);
    else if (err->field[0] != '\0')
        api_error_from(resp, 400, "invalid_field", err);
    else
        api_error_from(resp, 500, "store_error", err);
}

static json_t *account_json(const struct store_account *a)
{
    return json_pack("{s:I, s:s, s:s, s:b, s:b, s:b, s:I, s:I}", "id", (json_int_t)a->id,
                     "name", a->name, "role", a->role, "disabled", a->disabled,
                     "must_change_password", a->must_change, "totp_enabled", a->totp_active,
                     "created", (json_int_t)a->created, "updated", (json_int_t)a->updated);
}

static json_t *token_json(const struct store_token *t)
{
    return json_pack("{s:I, s:s, s:s, s:{s:I, s:s}, s:I, s:o, s:b}", "id", (json_int_t)t->id,
                     "name", t->name, "role", t->role, "account", "id",
                     (json_int_t)t->account_id, "name", t->account_name,
                     "created", (json_int_t)t->created, "last_used",
                     t->last_used ? json_integer(t->last_used) : json_null(),
                     "revoked", t->revoked);
}

/* load_account - the account, or resp holds 404/500 */
static int load_account(struct api_request *req, struct api_response *resp, int64_t id,
                        struct store_account *acc)
{
    struct error err;
    int rc = store_account_get(req->store, id, acc, &err);
    if (rc < 0) {
        store_fail(resp, rc, &err);
        return -1;
    }
    return 0;
}

/* cookie - the session cookie (RFC 6265 4.1): value "" and max_age 0 clear it */
static void cookie(const struct api_request *req, struct api_response *resp, const char *value,
                   int64_t max_age)
{
    if (xsnprintf(resp->set_cookie, sizeof resp->set_cookie,
                  SESSION_COOKIE "=%s; HttpOnly; SameSite=Strict; Path=/; Max-Age=%lld%s",
                  value, (long long)max_age, req->https ? "; Secure" : "") < 0)
        resp->set_cookie[0] = '\0';
}

static bool can_manage(const struct api_request *req)
{
    return auth_role_allows(req->who->role, AUTH_PERM_ACCOUNTS_MANAGE);
}

/* --- sign-in --- */

void api_auth_login(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "name", "password", "totp", NULL };
    static const char *const required[] = { "name", "password", NULL };
    const char *name, *password, *totp;
    struct auth_principal who;
    struct error err;
    char *token = NULL;
    int64_t retry = 0;

    if (api_body_check(req, resp, allowed, required) < 0 ||
        str_member(req, resp, "name", &name) < 0 ||
        str_member(req, resp, "password", &password) < 0 ||
        str_member(req, resp, "totp", &totp) < 0)
        return;
    enum auth_login_result r = auth_login(req->cfg->auth, req->store, name, password, totp,
                                          req->client_ip, &token, &who, &retry, &err);
    switch (r) {
    case AUTH_LOGIN_OK:
        break;
    case AUTH_LOGIN_BAD:
        /* one answer for an unknown name and a wrong password */
        api_error(resp, 401, "invalid_credentials", strcmp(err.field, "totp") == 0 ? "totp" : NULL,
                  "%s", strcmp(err.field, "totp") == 0 ? err.msg : "wrong name or password");
        return;
    case AUTH_LOGIN_TOTP_REQUIRED:
        api_error(resp, 401, "totp_required", "totp", "this account needs a TOTP code: "
                  "send it as \"totp\"");
        return;
    case AUTH_LOGIN_RATE_LIMITED:
        api_error(resp, 429, "rate_limited", NULL, "too many failed sign-ins; try again in "
                  "%lld seconds", (long long)retry);
        resp->retry_after = retry;
        return;
    case AUTH_LOGIN_DISABLED:
        api_error(resp, 403, "account_disabled", NULL, "this account is disabled");
        return;
    case AUTH_LOGIN_ERROR:
    default:
        api_error_from(resp, 500, "store_error", &err);
        return;
    }
    int64_t lifetime = req->cfg->settings ? req->cfg->settings->session_lifetime : 0;
    cookie(req, resp, token, lifetime > 0 ? lifetime : 12 * 3600);
    wipe_free(token);
    resp->body = json_pack("{s:{s:I, s:s, s:s, s:b}, s:s}", "account", "id",
                           (json_int_t)who.account_id, "name", who.name, "role",
                           auth_role_name(who.role), "must_change_password",
                           who.must_change_password, "csrf_token", who.csrf);
    resp->status = 200;
    auth_audit(req->store, &who, req->client_ip, "auth.login", who.name, NULL, NULL);
}

void api_auth_logout(struct api_request *req, struct api_response *resp)
{
    struct error err;

    if (api_body_check(req, resp, NULL, NULL) < 0)
        return;
    if (req->who->session_id_hash[0] != '\0') {
        auth_session_revoke(req->cfg->auth, req->store, req->who->session_id_hash,
                            req->who->account_id, &err);
        cookie(req, resp, "", 0);
    }
    api_audit(req, "auth.logout", req->who->name, NULL, NULL);
    resp->status = 204;
}

void api_auth_me(struct api_request *req, struct api_response *resp)
{
    struct store_account acc;

    if (load_account(req, resp, req->who->account_id, &acc) < 0)
        return;
    json_t *a = account_json(&acc);
    store_account_clear(&acc);
    /* the effective role: a token's scope may be below the account's */
    json_object_set_new(a, "effective_role", json_string(auth_role_name(req->who->role)));
    json_t *body = json_pack("{s:o, s:s}", "account", a, "via",
                             req->who->via_token ? "token" : "session");
    if (req->who->via_token)
        json_object_set_new(body, "token_id", json_integer(req->who->token_id));
    else
        json_object_set_new(body, "csrf_token", json_string(req->who->csrf));
    resp->body = body;
    resp->status = 200;
}

void api_auth_password(struct api_request *req, struct api_response *resp)
{
    static const char *const fields[] = { "current", "new", NULL };
    const char *current, *new_pw;
    struct error err;
    const struct auth_principal *who = req->who;

    if (api_body_check(req, resp, fields, fields) < 0 ||
        str_member(req, resp, "current", &current) < 0 ||
        str_member(req, resp, "new", &new_pw) < 0)
        return;
    if (auth_password_verify(req->cfg->auth, req->store, who->account_id, current, &err) < 0) {
        if (strcmp(err.field, "password") == 0)
            api_error(resp, 403, "invalid_credentials", "current",
                      "the current password is not right");
        else
            store_fail(resp, STORE_ERR, &err);
        return;
    }
    if (strcmp(current, new_pw) == 0) {
        api_error(resp, 400, "invalid_field", "new", "the new password must differ from the "
                  "current one");
        return;
    }
    if (auth_password_set(req->cfg->auth, req->store, who->account_id, new_pw, false, &err) < 0) {
        if (strcmp(err.field, "password") == 0)
            api_error(resp, 400, "invalid_field", "new", "%s", err.msg);
        else
            store_fail(resp, STORE_ERR, &err);
        return;
    }
    /* everyone else signed in as this account is out: keep only this session */
    store_session_revoke_others(req->store, who->account_id,
                                who->session_id_hash[0] ? who->session_id_hash : NULL, &err);
    json_t *after = json_pack("{s:b, s:b}", "must_change_password", 0,
                              "other_sessions_revoked", 1);
    api_audit(req, "account.password", who->name, NULL, after);
    json_decref(after);
    resp->status = 204;
}

/* --- sessions --- */

void api_auth_sessions_list(struct api_request *req, struct api_response *resp)
{
    size_t limit;
    const char *cursor;
    int64_t offset = 0;
    struct error err;

    if (api_page(req, resp, &limit, &cursor) < 0)
        return;
    /* a short list (bounded by the store): the cursor is an offset */
    if (cursor != NULL && (parse_id(cursor, &offset) < 0)) {
        api_error(resp, 400, "invalid_parameter", "cursor",
                  "cursor must be the next_cursor of the previous page");
        return;
    }
    json_t *all = auth_sessions_list(req->cfg->auth, req->store, req->who->account_id, &err);
    if (all == NULL) {
        api_error_from(resp, 500, "store_error", &err);
        return;
    }
    json_t *items = json_array();
    size_t n = json_array_size(all);
    for (size_t i = (size_t)offset; i < n && i < (size_t)offset + limit; i++) {
        json_t *s = json_array_get(all, i);
        const char *id = json_string_value(json_object_get(s, "id"));
        json_object_set_new(s, "current", json_boolean(id != NULL &&
                            strcmp(id, req->who->session_id_hash) == 0));
        json_array_append(items, s);
    }
    bool more = (size_t)offset + limit < n;
    json_decref(all);
    resp->body = page(items, more, offset + (int64_t)limit);
    resp->status = 200;
}

void api_auth_session_delete(struct api_request *req, struct api_response *resp)
{
    struct error err;
    const char *id = req->n_params > 0 ? req->params[0] : "";

    if (strlen(id) != 64 || strspn(id, "0123456789abcdef") != 64) {
        api_error(resp, 400, "invalid_field", "id", "a session id is 64 hex digits");
        return;
    }
    /* only the caller's own sessions: account_id restricts the revocation */
    if (auth_session_revoke(req->cfg->auth, req->store, id, req->who->account_id, &err) < 0) {
        if (strcmp(err.field, "id") == 0)
            api_error(resp, 404, "not_found", "id", "no such session");
        else
            api_error_from(resp, 500, "store_error", &err);
        return;
    }
    if (strcmp(id, req->who->session_id_hash) == 0)
        cookie(req, resp, "", 0);
    char target[24];
    xsnprintf(target, sizeof target, "session:%.12s", id);
    api_audit(req, "session.revoke", target, NULL, NULL);
    resp->status = 204;
}

/* --- TOTP --- */

void api_auth_totp_enroll(struct api_request *req, struct api_response *resp)
{
    char *secret = NULL, *uri = NULL;
    struct error err;

    if (api_body_check(req, resp, NULL, NULL) < 0)
        return;
    if (auth_totp_enroll(req->cfg->auth, req->store, req->who->account_id, &secret, &uri,
                         &err) < 0) {
        if (strcmp(err.field, "totp") == 0)
            api_error(resp, 409, "totp_active", "totp", "%s", err.msg);
        else
            store_fail(resp, STORE_ERR, &err);
        return;
    }
    resp->body = json_pack("{s:s, s:s}", "secret", secret, "uri", uri);
    resp->status = 201;
    wipe_free(secret);
    wipe_free(uri);
    api_audit(req, "account.totp_enroll", req->who->name, NULL, NULL);
}

void api_auth_totp_confirm(struct api_request *req, struct api_response *resp)
{
    static const char *const fields[] = { "code", NULL };
    const char *code;
    struct error err;

    if (api_body_check(req, resp, fields, fields) < 0 ||
        str_member(req, resp, "code", &code) < 0)
        return;
    if (auth_totp_confirm(req->cfg->auth, req->store, req->who->account_id, code, &err) < 0) {
        store_fail(resp, STORE_ERR, &err);
        return;
    }
    json_t *after = json_pack("{s:b}", "totp_enabled", 1);
    api_audit(req, "account.totp_enable", req->who->name, NULL, after);
    json_decref(after);
    resp->status = 204;
}

void api_auth_totp_disable(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "code", "password", NULL };
    const char *code, *password;
    struct error err;
    struct store_account acc;

    if (api_body_check(req, resp, allowed, NULL) < 0 ||
        str_member(req, resp, "code", &code) < 0 ||
        str_member(req, resp, "password", &password) < 0)
        return;
    /* a POST with a body: neither a code nor a password ever travels in a
     * query string, which proxies and logs keep */
    if (code == NULL && password == NULL) {
        api_error(resp, 400, "missing_field", "code", "send the current TOTP \"code\" or "
                  "the account's \"password\"");
        return;
    }
    if (load_account(req, resp, req->who->account_id, &acc) < 0)
        return;
    bool enrolled = acc.totp_secret != NULL;
    store_account_clear(&acc);
    if (!enrolled) {
        api_error(resp, 409, "totp_not_enrolled", NULL, "TOTP is not set up for this account");
        return;
    }
    int rc = code != NULL
        ? auth_totp_verify(req->cfg->auth, req->store, req->who->account_id, code, &err)
        : auth_password_verify(req->cfg->auth, req->store, req->who->account_id, password, &err);
    if (rc < 0) {
        if (err.field[0] != '\0')
            api_error(resp, 403, "invalid_credentials", code != NULL ? "code" : "password",
                      "%s", err.msg);
        else
            api_error_from(resp, 500, "store_error", &err);
        return;
    }
    if (auth_totp_disable(req->cfg->auth, req->store, req->who->account_id, &err) < 0) {
        store_fail(resp, STORE_ERR, &err);
        return;
    }
    json_t *after = json_pack("{s:b}", "totp_enabled", 0);
    api_audit(req, "account.totp_disable", req->who->name, NULL, after);
    json_decref(after);
    resp->status = 204;
}

/* --- accounts --- */

void api_accounts_list(struct api_request *req, struct api_response *resp)
{
    size_t limit, n;
    const char *cursor;
    int64_t after;
    struct store_account *a;
    struct error err;

    if (api_page(req, resp, &limit, &cursor) < 0 || cursor_id(resp, cursor, &after) < 0)
        return;
    int rc = store_account_list(req->store, after, limit + 1, &a, &n, &err);
    if (rc < 0) {
        store_fail(resp, rc, &err);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < n && i < limit; i++)
        json_array_append_new(items, account_json(&a[i]));
    resp->body = page(items, n > limit, n > limit ? a[limit - 1].id : 0);
    resp->status = 200;
    store_accounts_free(a, n);
}

void api_account_create(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "name", "role", "password", NULL };
    static const char *const required[] = { "name", "role", NULL };
    const char *name, *role_s, *password;
    enum auth_role role;
    char *generated = NULL;
    int64_t id;
    struct error err;
    struct store_account acc;

    if (api_body_check(req, resp, allowed, required) < 0 ||
        str_member(req, resp, "name", &name) < 0 ||
        str_member(req, resp, "role", &role_s) < 0 ||
        str_member(req, resp, "password", &password) < 0)
        return;
    if (auth_role_parse(role_s, &role) < 0) {
        api_error(resp, 400, "invalid_field", "role", "role must be admin, basic_admin or user");
        return;
    }
    /* no password given: a generated one, shown once, changed at first sign-in */
    if (auth_account_create(req->cfg->auth, req->store, name, role, password, false,
                            password == NULL ? &generated : NULL, &id, &err) < 0) {
        if (strcmp(err.field, "name") == 0 && strstr(err.msg, "already exists") != NULL)
            api_error(resp, 409, "conflict", "name", "%s", err.msg);
        else
            store_fail(resp, STORE_ERR, &err);
        return;
    }
    if (load_account(req, resp, id, &acc) < 0) {
        wipe_free(generated);
        return;
    }
    json_t *aj = account_json(&acc);
    store_account_clear(&acc);
    api_audit(req, "account.create", name, NULL, aj);
    resp->body = json_pack("{s:O}", "account", aj);
    json_decref(aj);
    if (generated != NULL)
        json_object_set_new(resp->body, "password", json_string(generated));
    wipe_free(generated);
    resp->status = 201;
}

void api_account_get(struct api_request *req, struct api_response *resp)
{
    int64_t id;
    struct store_account acc;

    if (id_param(req, resp, &id) < 0 || load_account(req, resp, id, &acc) < 0)
        return;
    resp->body = json_pack("{s:o}", "account", account_json(&acc));
    resp->status = 200;
    store_account_clear(&acc);
}

void api_account_update(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "role", "disabled", "password", NULL };
    const char *role_s, *password;
    enum auth_role role = AUTH_ROLE_NONE;
    int64_t id;
    struct error err;
    struct store_account acc;

    if (id_param(req, resp, &id) < 0 || api_body_check(req, resp, allowed, NULL) < 0 ||
        str_member(req, resp, "role", &role_s) < 0 ||
        str_member(req, resp, "password", &password) < 0)
        return;
    json_t *jd = req->body ? json_object_get(req->body, "disabled") : NULL;
    if (jd != NULL && !json_is_boolean(jd)) {
        api_error(resp, 400, "invalid_field", "disabled", "disabled must be true or false");
        return;
    }
    if (role_s != NULL && auth_role_parse(role_s, &role) < 0) {
        api_error(resp, 400, "invalid_field", "role", "role must be admin, basic_admin or user");
        return;
    }
    if (load_account(req, resp, id, &acc) < 0)
        return;
    json_t *before = account_json(&acc);
    bool self = id == req->who->account_id;
    bool role_change = role_s != NULL && strcmp(role_s, acc.role) != 0;
    store_account_clear(&acc);
    if (self && role_change) {
        api_error(resp, 403, "forbidden", "role", "an account cannot change its own role");
        goto out;
    }
    if (self && jd != NULL && json_is_true(jd)) {
        api_error(resp, 403, "forbidden", "disabled", "an account cannot disable itself");
        goto out;
    }
    int rc;
    if (role_change && (rc = store_account_set_role(req->store, id, role_s, &err)) < 0) {
        store_fail(resp, rc, &err);
        goto out;
    }
    if (jd != NULL && (rc = store_account_set_disabled(req->store, id, json_is_true(jd),
                                                       &err)) < 0) {
        store_fail(resp, rc, &err);
        goto out;
    }
    if (password != NULL) {
        /* an administrator's reset: the owner chooses a new one at the next sign-in */
        if (auth_password_set(req->cfg->auth, req->store, id, password, true, &err) < 0) {
            store_fail(resp, STORE_ERR, &err);
            goto out;
        }
    }
    /* a disabled account or a reset password ends every session of the account */
    if (password != NULL || (jd != NULL && json_is_true(jd)))
        store_session_revoke_others(req->store, id, NULL, &err);
    if (load_account(req, resp, id, &acc) < 0)
        goto out;
    json_t *after = account_json(&acc);
    if (password != NULL)
        json_object_set_new(after, "password_changed", json_true());
    api_audit(req, "account.update", acc.name, before, after);
    store_account_clear(&acc);
    json_object_del(after, "password_changed");
    resp->body = json_pack("{s:o}", "account", after);
    resp->status = 200;
out:
    json_decref(before);
}

void api_account_delete(struct api_request *req, struct api_response *resp)
{
    int64_t id;
    struct error err;
    struct store_account acc;

    if (id_param(req, resp, &id) < 0 || load_account(req, resp, id, &acc) < 0)
        return;
    json_t *before = account_json(&acc);
    char *name = xstrdup(acc.name);
    store_account_clear(&acc);
    int rc = store_account_delete(req->store, id, &err);
    if (rc < 0) {
        store_fail(resp, rc, &err);
    } else {
        api_audit(req, "account.delete", name, before, NULL);
        resp->status = 204;
    }
    json_decref(before);
    free(name);
}

/* --- API tokens --- */

void api_tokens_list(struct api_request *req, struct api_response *resp)
{
    size_t limit, n;
    const char *cursor, *account = api_query(req, "account");
    int64_t after, account_id = req->who->account_id;
    struct store_token *t;
    struct error err;

    if (api_page(req, resp, &limit, &cursor) < 0 || cursor_id(resp, cursor, &after) < 0)
        return;
    if (account != NULL) {
        if (!can_manage(req)) {
            api_error(resp, 403, "forbidden", "account", "listing other accounts' tokens needs "
                      "the accounts_manage permission");
            return;
        }
        if (strcmp(account, "all") == 0 || strcmp(account, "*") == 0) {
            account_id = 0;
        } else if (parse_id(account, &account_id) < 0) {
            struct store_account acc;
            int rc = store_account_get_by_name(req->store, account, &acc, &err);
            if (rc < 0) {
                if (rc == STORE_NOT_FOUND)
                    api_error(resp, 404, "not_found", "account", "no such account");
                else
                    store_fail(resp, rc, &err);
                return;
            }
            account_id = acc.id;
            store_account_clear(&acc);
        }
    }
    int rc = store_token_list(req->store, account_id, after, limit + 1, &t, &n, &err);
    if (rc < 0) {
        store_fail(resp, rc, &err);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < n && i < limit; i++)
        json_array_append_new(items, token_json(&t[i]));
    resp->body = page(items, n > limit, n > limit ? t[limit - 1].id : 0);
    resp->status = 200;
    store_tokens_free(t, n);
}

void api_token_create(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "name", "role", NULL };
    static const char *const required[] = { "name", NULL };
    const char *name, *role_s;
    enum auth_role role = req->who->role;
    char *token = NULL;
    int64_t id;
    struct error err;

    if (api_body_check(req, resp, allowed, required) < 0 ||
        str_member(req, resp, "name", &name) < 0 ||
        str_member(req, resp, "role", &role_s) < 0)
        return;
    if (role_s != NULL && auth_role_parse(role_s, &role) < 0) {
        api_error(resp, 400, "invalid_field", "role", "role must be admin, basic_admin or user");
        return;
    }
    /* a token cannot mint a stronger one: the caller's effective role bounds it
     * (auth_token_create bounds it by the owner's role as well) */
    if (role > req->who->role) {
        api_error(resp, 403, "forbidden", "role", "a token cannot hold more than your "
                  "current role (%s)", auth_role_name(req->who->role));
        return;
    }
    if (auth_token_create(req->cfg->auth, req->store, req->who->account_id, name, role, &token,
                          &id, &err) < 0) {
        store_fail(resp, STORE_ERR, &err);
        return;
    }
    json_t *after = json_pack("{s:I, s:s, s:s}", "id", (json_int_t)id, "name", name, "role",
                              auth_role_name(role));
    char target[32];
    xsnprintf(target, sizeof target, "token:%lld", (long long)id);
    api_audit(req, "token.create", target, NULL, after);
    /* shown once: only its keyed hash is kept */
    json_object_set_new(after, "token", json_string(token));
    wipe_free(token);
    resp->body = after;
    resp->status = 201;
}

void api_token_delete(struct api_request *req, struct api_response *resp)
{
    int64_t id;
    struct store_token t;
    struct error err;

    if (id_param(req, resp, &id) < 0)
        return;
    int rc = store_token_get(req->store, id, &t, &err);
    /* someone else's token is "not found" to a caller who may not manage it */
    if (rc == STORE_NOT_FOUND || (rc == STORE_OK && t.account_id != req->who->account_id &&
                                  !can_manage(req))) {
        if (rc == STORE_OK)
            store_token_clear(&t);
        api_error(resp, 404, "not_found", "id", "no such token %lld", (long long)id);
        return;
    }
    if (rc < 0) {
        store_fail(resp, rc, &err);
        return;
    }
    json_t *before = token_json(&t);
    store_token_clear(&t);
    if (auth_token_revoke(req->cfg->auth, req->store, id, &err) < 0) {
        if (strcmp(err.field, "id") == 0)
            api_error(resp, 409, "already_revoked", "id", "token %lld is already revoked",
                      (long long)id);
        else
            store_fail(resp, STORE_ERR, &err);
        json_decref(before);
        return;
    }
    json_t *after = json_deep_copy(before);
    json_object_set_new(after, "revoked", json_true());
    char target[32];
    xsnprintf(target, sizeof target, "token:%lld", (long long)id);
    api_audit(req, "token.revoke", target, before, after);
    json_decref(before);
    json_decref(after);
    resp->status = 204;
}

/* --- the audit log --- */

/* api_parse_time - unix seconds, or ISO 8601: 2026-11-28, 2026-11-28T18:39,
 * 2026-11-28T18:39:50Z, 2026-11-28T18:39:50+01:00 (no zone = UTC) */
int api_parse_time(const char *s, int64_t *out)
{
    struct tm tm;
    int y, mo, d, h = 0, mi = 0, sec = 0, n = 0;
    char *end;

    if (s[0] >= '0' && s[0] <= '9' && strspn(s, "0123456789") == strlen(s)) {
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno != 0 || strlen(s) > 12)
            return -1;
        *out = v;
        return 0;
    }
    if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || n != 10)
        return -1;
    const char *p = s + n;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        int m = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &h, &mi, &m) != 2 || m != 5)
            return -1;
        p += 1 + m;
        if (*p == ':') {
            if (sscanf(p + 1, "%2d%n", &sec, &m) != 1 || m != 2)
                return -1;
            p += 1 + m;
        }
    }
    int64_t offset = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om, m = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &m) != 2 || m != 5 || oh > 23 || om > 59)
            return -1;
        offset = (oh * 3600 + om * 60) * (*p == '-' ? -1 : 1);
        p += 1 + m;
    }
    if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return -1;
    memset(&tm, 0, sizeof tm);
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    *out = (int64_t)timegm(&tm) - offset;
    return 0;
}

static json_t *json_or_null(const char *text)
{
    if (text == NULL)
        return json_null();
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);
    return v ? v : json_string(text);
}

void api_audit_list(struct api_request *req, struct api_response *resp)
{
    static const char *const time_params[] = { "since", "until" };
    struct store_audit_filter f = {0};
    struct store_audit_entry *e;
    size_t limit, n;
    const char *cursor;
    struct error err;

    if (api_page(req, resp, &limit, &cursor) < 0 || cursor_id(resp, cursor, &f.before_id) < 0)
        return;
    for (int i = 0; i < 2; i++) {
        const char *v = api_query(req, time_params[i]);
        int64_t t = 0;
        if (v != NULL && (api_parse_time(v, &t) < 0 || t < 0)) {
            api_error(resp, 400, "invalid_parameter", time_params[i], "%s must be unix seconds "
                      "or an ISO 8601 time like 2026-11-28T18:39:50Z", time_params[i]);
            return;
        }
        if (i == 0)
            f.since = t;
        else
            f.until = t;
    }
    f.account = api_query(req, "account");
    f.action_prefix = api_query(req, "action");
    f.limit = limit + 1;
    int rc = store_audit_list(req->store, &f, &e, &n, &err);
    if (rc < 0) {
        store_fail(resp, rc, &err);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < n && i < limit; i++) {
        json_t *o = json_pack("{s:I, s:I, s:{s:I, s:s}, s:s, s:s, s:s, s:s, s:o, s:o}",
                              "id", (json_int_t)e[i].id, "ts", (json_int_t)e[i].ts,
                              "account", "id", (json_int_t)e[i].account_id,
                              "name", e[i].account_name, "via", e[i].via,
                              "client_ip", e[i].client_ip, "action", e[i].action,
                              "target", e[i].target, "before", json_or_null(e[i].before_json),
                              "after", json_or_null(e[i].after_json));
        if (o != NULL && e[i].token_id != 0)
            json_object_set_new(o, "token_id", json_integer(e[i].token_id));
        if (o != NULL)
            json_array_append_new(items, o);
    }
    resp->body = page(items, n > limit, n > limit ? e[limit - 1].id : 0);
    resp->status = 200;
    store_audit_free(e, n);
}
