/*
 * api_outbound.c - /api/v1/outbound/hosts, /api/v1/outbound/accounts and
 * /api/v1/tls/inbound: the outbound role (issue 6) over store_outbound.c.
 *
 * Every change is audited (outbound_host.*, smtp_account.*, tls_inbound.*;
 * never a password or its hash) and followed by api_reload(): the SMTP
 * loop's snapshot holds these lists, so a change applies to the next
 * command.  A generated SMTP password is returned once, in the answer to
 * the request that made it; only its argon2id hash is kept.
 */
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include "../core/cidr.h"
#include "api_priv.h"
#include "api_outbound.h"

#define SMTP_PASSWORD_MIN 12       /* as the accounts' policy (auth.c) */
#define SMTP_PASSWORD_MAX 1024     /* SMTP_AUTH_FIELD_MAX: longer could never authenticate */

/* --- outbound hosts --- */

static json_t *host_json(const struct store_outbound_host *h)
{
    return json_pack("{s:I, s:s, s:s, s:o}", "id", (json_int_t)h->id, "cidr", h->cidr,
                     "comment", h->comment, "created", api_time_json(h->created));
}

/* host_find - the host row by id or cidr text; NULL when none */
static json_t *host_find(struct store *st, int64_t id, const char *cidr)
{
    struct store_outbound_host *h;
    size_t n;
    struct error err = {0};
    json_t *r = NULL;
    if (store_outbound_host_list(st, &h, &n, &err) < 0)
        return NULL;
    for (size_t i = 0; i < n && r == NULL; i++)
        if ((id > 0 && h[i].id == id) || (cidr != NULL && strcmp(h[i].cidr, cidr) == 0))
            r = host_json(&h[i]);
    store_outbound_hosts_free(h, n);
    return r;
}

void api_outbound_hosts_list(struct api_request *req, struct api_response *resp)
{
    struct store_outbound_host *h;
    size_t n;
    struct error err = {0};
    if (store_outbound_host_list(req->store, &h, &n, &err) < 0) {
        api_store_fail(resp, STORE_ERR, &err);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(items, host_json(&h[i]));
    store_outbound_hosts_free(h, n);
    resp->body = json_pack("{s:o, s:n}", "items", items, "next_cursor");
}

void api_outbound_hosts_create(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "cidr", "comment", NULL };
    static const char *const required[] = { "cidr", NULL };
    struct error err = {0};
    const char *cidr, *comment;
    int64_t id = 0;
    if (api_body_check(req, resp, allowed, required) < 0 ||
        api_opt_string(req, resp, "cidr", &cidr) < 0 || api_opt_string(req, resp, "comment", &comment) < 0)
        return;
    if (cidr == NULL) {
        api_error(resp, 400, "invalid_field", "cidr", "cidr must be a string");
        return;
    }
    int rc = store_outbound_host_add(req->store, cidr, comment, &id, &err);
    if (rc < 0) {
        api_store_fail(resp, rc, &err);
        return;
    }
    json_t *after = host_find(req->store, id, NULL);
    if (after == NULL)
        after = json_pack("{s:I}", "id", (json_int_t)id);
    const char *canon = json_string_value(json_object_get(after, "cidr"));
    api_audit(req, "outbound_host.create", canon ? canon : cidr, NULL, after);
    api_reload(req);
    resp->status = 201;
    resp->body = after;
}

void api_outbound_hosts_delete(struct api_request *req, struct api_response *resp)
{
    struct error err = {0};
    const char *key = req->params[0];
    /* the row as it was, for the audit log: by id, or by the canonical range */
    json_t *before = NULL;
    char *end = NULL;
    long long id = strtoll(key, &end, 10);
    if (end != key && *end == '\0' && id > 0) {
        before = host_find(req->store, id, NULL);
    } else {
        struct cidr c;
        char canon[CIDR_TEXT_MAX];
        struct error e2 = {0};
        if (cidr_parse(key, &c, &e2) == 0 && cidr_format(&c, canon, sizeof canon) == 0)
            before = host_find(req->store, 0, canon);
    }
    int rc = store_outbound_host_remove(req->store, key, &err);
    if (rc < 0) {
        json_decref(before);
        api_store_fail(resp, rc, &err);
        return;
    }
    api_audit(req, "outbound_host.delete", key, before, NULL);
    json_decref(before);
    api_reload(req);
    resp->status = 204;
}

/* --- SMTP AUTH accounts --- */

/* generate_password - 144 random bits as 24 base64url characters */
static char *generate_password(void)
{
    unsigned char raw[18];
    char out[sodium_base64_ENCODED_LEN(18, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(out, sizeof out, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    char *p = xstrdup(out);
    sodium_memzero(out, sizeof out);
    return p;
}

/* password_hash - the body's password (checked) or a generated one (*generated),
 * hashed; -1 after an error answer */
static int password_hash(struct api_request *req, struct api_response *resp,
                         char hash[AUTH_PASSWORD_HASH_MAX], char **generated)
{
    const char *pw;
    struct error err = {0};
    *generated = NULL;
    if (api_opt_string(req, resp, "password", &pw) < 0)
        return -1;
    if (pw != NULL) {
        size_t len = strlen(pw);
        if (len < SMTP_PASSWORD_MIN || len > SMTP_PASSWORD_MAX) {
            api_error(resp, 400, "invalid_field", "password",
                      "password must be %d to %d characters", SMTP_PASSWORD_MIN, SMTP_PASSWORD_MAX);
            return -1;
        }
    } else {
        *generated = generate_password();
        pw = *generated;
    }
    if (auth_password_hash(pw, hash, &err) < 0) {
        api_error(resp, 500, "internal", NULL, "%s", err.msg);
        free(*generated);
        *generated = NULL;
        return -1;
    }
    return 0;
}

static json_t *account_json(const struct store_smtp_account *a)
{
    return json_pack("{s:I, s:s, s:s, s:o, s:o, s:b}", "id", (json_int_t)a->id, "name", a->name,
                     "comment", a->comment, "created", api_time_json(a->created),
                     "last_used", api_time_json(a->last_used), "disabled", a->disabled);
}

static json_t *account_find(struct store *st, const char *name)
{
    struct store_smtp_account *a;
    size_t n;
    struct error err = {0};
    json_t *r = NULL;
    if (store_smtp_account_list(st, &a, &n, &err) < 0)
        return NULL;
    for (size_t i = 0; i < n && r == NULL; i++)
        if (str_ieq(a[i].name, name))
            r = account_json(&a[i]);
    store_smtp_accounts_free(a, n);
    return r;
}

void api_outbound_accounts_list(struct api_request *req, struct api_response *resp)
{
    struct store_smtp_account *a;
    size_t n;
    struct error err = {0};
    if (store_smtp_account_list(req->store, &a, &n, &err) < 0) {
        api_store_fail(resp, STORE_ERR, &err);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(items, account_json(&a[i]));
    store_smtp_accounts_free(a, n);
    resp->body = json_pack("{s:o, s:n}", "items", items, "next_cursor");
}

void api_outbound_accounts_create(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "name", "password", "comment", NULL };
    static const char *const required[] = { "name", NULL };
    struct error err = {0};
    const char *name, *comment;
    char hash[AUTH_PASSWORD_HASH_MAX];
    char *generated;
    if (api_body_check(req, resp, allowed, required) < 0 ||
        api_opt_string(req, resp, "name", &name) < 0 || api_opt_string(req, resp, "comment", &comment) < 0)
        return;
    const char *why = store_smtp_account_name_check(name);
    if (why != NULL) {
        api_error(resp, 400, "invalid_field", "name", "%s", why);
        return;
    }
    if (password_hash(req, resp, hash, &generated) < 0)
        return;
    int rc = store_smtp_account_add(req->store, name, hash, comment, &err);
    sodium_memzero(hash, sizeof hash);
    if (rc < 0) {
        if (generated) {
            sodium_memzero(generated, strlen(generated));
            free(generated);
        }
        api_store_fail(resp, rc, &err);
        return;
    }
    json_t *after = account_find(req->store, name);
    if (after == NULL)
        after = json_pack("{s:s}", "name", name);
    api_audit(req, "smtp_account.create", json_string_value(json_object_get(after, "name")),
              NULL, after);
    api_reload(req);
    if (generated) {
        json_object_set_new(after, "password", json_string(generated));
        sodium_memzero(generated, strlen(generated));
        free(generated);
    }
    resp->status = 201;
    resp->body = after;
}

void api_outbound_accounts_delete(struct api_request *req, struct api_response *resp)
{
    struct error err = {0};
    json_t *before = account_find(req->store, req->params[0]);
    int rc = store_smtp_account_remove(req->store, req->params[0], &err);
    if (rc < 0) {
        json_decref(before);
        api_store_fail(resp, rc, &err);
        return;
    }
    api_audit(req, "smtp_account.delete", req->params[0], before, NULL);
    json_decref(before);
    api_reload(req);
    resp->status = 204;
}

void api_outbound_accounts_password(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "password", NULL };
    static const char *const required[] = { NULL };
    struct error err = {0};
    char hash[AUTH_PASSWORD_HASH_MAX];
    char *generated;
    if (req->body != NULL && api_body_check(req, resp, allowed, required) < 0)
        return;
    const char *why = store_smtp_account_name_check(req->params[0]);
    if (why != NULL) {
        api_error(resp, 400, "invalid_field", "name", "%s", why);
        return;
    }
    if (password_hash(req, resp, hash, &generated) < 0)
        return;
    int rc = store_smtp_account_set_hash(req->store, req->params[0], hash, &err);
    sodium_memzero(hash, sizeof hash);
    if (rc < 0) {
        if (generated) {
            sodium_memzero(generated, strlen(generated));
            free(generated);
        }
        api_store_fail(resp, rc, &err);
        return;
    }
    json_t *after = account_find(req->store, req->params[0]);
    if (after == NULL)
        after = json_pack("{s:s}", "name", req->params[0]);
    json_t *what = json_pack("{s:b}", "generated", generated != NULL);
    api_audit(req, "smtp_account.password", req->params[0], NULL, what);
    json_decref(what);
    api_reload(req);
    if (generated) {
        json_object_set_new(after, "password", json_string(generated));
        sodium_memzero(generated, strlen(generated));
        free(generated);
    }
    resp->body = after;
}

/* --- inbound TLS requirement --- */

void api_tls_inbound_list(struct api_request *req, struct api_response *resp)
{
    char **d;
    size_t n;
    struct error err = {0};
    if (store_tls_required_list(req->store, &d, &n, &err) < 0) {
        api_store_fail(resp, STORE_ERR, &err);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(items, json_pack("{s:s}", "domain", d[i]));
        free(d[i]);
    }
    free(d);
    resp->body = json_pack("{s:o, s:n}", "items", items, "next_cursor");
}

void api_tls_inbound_create(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "domain", "comment", NULL };
    static const char *const required[] = { "domain", NULL };
    struct error err = {0};
    const char *domain, *comment;
    if (api_body_check(req, resp, allowed, required) < 0 ||
        api_opt_string(req, resp, "domain", &domain) < 0 || api_opt_string(req, resp, "comment", &comment) < 0)
        return;
    if (domain == NULL) {
        api_error(resp, 400, "invalid_field", "domain", "domain must be a string");
        return;
    }
    int rc = store_tls_required_add(req->store, domain, comment, &err);
    if (rc < 0) {
        api_store_fail(resp, rc, &err);
        return;
    }
    char norm[256];
    (void)str_copy(norm, sizeof norm, domain);
    str_lower(norm);
    size_t len = strlen(norm);
    if (len > 0 && norm[len - 1] == '.')
        norm[len - 1] = '\0';
    json_t *after = json_pack("{s:s, s:s}", "domain", norm, "comment", comment ? comment : "");
    api_audit(req, "tls_inbound.create", norm, NULL, after);
    api_reload(req);
    resp->status = 201;
    resp->body = after;
}

void api_tls_inbound_delete(struct api_request *req, struct api_response *resp)
{
    struct error err = {0};
    int rc = store_tls_required_remove(req->store, req->params[0], &err);
    if (rc < 0) {
        api_store_fail(resp, rc, &err);
        return;
    }
    json_t *before = json_pack("{s:s}", "domain", req->params[0]);
    api_audit(req, "tls_inbound.delete", req->params[0], before, NULL);
    json_decref(before);
    api_reload(req);
    resp->status = 204;
}
