/*
 * api_dkim.c - the DKIM signing key routes:
 *   GET    /api/v1/dkim/keys                               list (?domain=)
 *   POST   /api/v1/dkim/keys                               keygen {domain, selector,
 *                                                          algorithm, activate}
 *   DELETE /api/v1/dkim/keys/{domain}/{selector}           remove
 *   POST   /api/v1/dkim/keys/{domain}/{selector}/activate  sign with this key
 *
 * The key is generated here, on the API worker thread (OpenSSL EVP; RSA
 * 2048 takes a few tens of milliseconds, never on the loop), its private
 * half sealed with auth_secret_seal before it reaches the store, and never
 * returned, listed or logged.  Every answer carries the DNS record to
 * publish.  Every change is audited and followed by api_reload(), which
 * returns once the delivery side signs with the new key set.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/crypto.h>
#include "api_dkim.h"
#include "../deliver/deliver_dkim.h"

#define API_DKIM_DOMAIN_MAX 256

/* key_json - what the API shows of a key: never the private half */
static json_t *key_json(const struct store_dkim_key *k)
{
    char name[API_DKIM_DOMAIN_MAX + DKIM_SELECTOR_MAX + 16];
    char *value = dkim_record_value(k->algorithm, k->public_key);
    char *zone = dkim_record_zone(k->selector, k->domain, value);
    json_t *strings = json_array();
    for (size_t off = 0, n = strlen(value); off < n; off += DKIM_TXT_STRING_MAX)
        json_array_append_new(strings, json_stringn(value + off, n - off < DKIM_TXT_STRING_MAX
                                                                     ? n - off
                                                                     : DKIM_TXT_STRING_MAX));
    dkim_record_name(k->selector, k->domain, name, sizeof name);
    json_t *o = json_pack("{s:s, s:s, s:s, s:b, s:I, s:s, s:{s:s, s:s, s:s, s:o, s:s}}",
                          "domain", k->domain, "selector", k->selector,
                          "algorithm", k->algorithm, "active", k->active,
                          "created", (json_int_t)k->created, "created_by", k->created_by,
                          "dns_record", "name", name, "type", "TXT", "value", value,
                          "strings", strings, "zone", zone);
    free(value);
    free(zone);
    return o;
}

static void store_failure(struct api_response *resp, int rc, const struct error *err)
{
    if (rc == STORE_NOT_FOUND)
        api_error_from(resp, 404, "not_found", err);
    else if (rc == STORE_CONFLICT)
        api_error_from(resp, 409, "conflict", err);
    else
        api_error_from(resp, 500, "store_error", err);
}

/* domain_norm - src lower-cased, without a final dot, and a valid name */
static int domain_norm(struct api_response *resp, const char *src, char *dst, size_t size)
{
    size_t n = src ? strlen(src) : 0;
    if (n > 0 && src[n - 1] == '.')
        n--;
    if (n == 0 || n >= size) {
        api_error(resp, 400, "invalid_field", "domain", "domain must be a domain name");
        return -1;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
    str_lower(dst);
    if (!domain_name_valid(dst)) {
        char shown[80];
        api_error(resp, 400, "invalid_field", "domain", "invalid domain name %s",
                  log_quote(shown, sizeof shown, dst));
        return -1;
    }
    return 0;
}

/* internal_check - the domain is internal (itself or a subdomain of one) */
static int internal_check(struct api_request *req, struct api_response *resp, const char *dom)
{
    struct store_domain *d = NULL;
    size_t n = 0;
    struct error err = {0};
    if (store_domain_list(req->store, &d, &n, &err) < 0) {
        api_error_from(resp, 500, "store_error", &err);
        return -1;
    }
    bool ok = false;
    size_t dl = strlen(dom);
    for (size_t i = 0; i < n && !ok; i++) {
        size_t l = strlen(d[i].name);
        if (!store_domain_internal(&d[i]))
            continue;
        ok = strcmp(dom, d[i].name) == 0 ||
             (dl > l && dom[dl - l - 1] == '.' && strcmp(dom + dl - l, d[i].name) == 0);
    }
    store_domains_free(d, n);
    if (!ok) {
        api_error(resp, 400, "invalid_field", "domain", "%s is not an internal domain (nor a "
                  "subdomain of one): Moat signs only mail of the organisation's own verified "
                  "domains; add it with moat domain add", dom);
        return -1;
    }
    return 0;
}

/* key_get - one key as JSON, NULL when there is none (-1 store error in resp) */
static int key_get(struct api_request *req, struct api_response *resp, const char *domain,
                   const char *selector, json_t **out)
{
    struct store_dkim_key *k = NULL;
    size_t n = 0;
    struct error err = {0};
    *out = NULL;
    if (store_dkim_key_list(req->store, domain, false, &k, &n, &err) < 0) {
        api_error_from(resp, 500, "store_error", &err);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (strcmp(k[i].selector, selector) == 0)
            *out = key_json(&k[i]);
    store_dkim_keys_free(k, n);
    return 0;
}

/* selector_default - "moat" + yyyymm, with a letter after it when taken */
static int selector_default(struct api_request *req, struct api_response *resp,
                            const char *domain, char *dst, size_t size)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    for (int i = 0; i <= 26; i++) {
        if (i == 0)
            xsnprintf(dst, size, "moat%04d%02d", tm.tm_year + 1900, tm.tm_mon + 1);
        else   /* a second key in the same month: moat202611a, ... */
            xsnprintf(dst, size, "moat%04d%02d%c", tm.tm_year + 1900, tm.tm_mon + 1,
                      'a' + i - 1);
        json_t *k;
        if (key_get(req, resp, domain, dst, &k) < 0)
            return -1;
        if (k == NULL)
            return 0;
        json_decref(k);
    }
    api_error(resp, 409, "conflict", "selector", "every default selector of this month is "
              "taken for %s; give one with selector", domain);
    return -1;
}

void api_dkim_keys_list(struct api_request *req, struct api_response *resp)
{
    char dom[API_DKIM_DOMAIN_MAX];
    const char *q = api_query(req, "domain");
    struct store_dkim_key *k = NULL;
    size_t n = 0;
    struct error err = {0};
    if (q != NULL && domain_norm(resp, q, dom, sizeof dom) < 0)
        return;
    if (store_dkim_key_list(req->store, q ? dom : NULL, false, &k, &n, &err) < 0) {
        api_error_from(resp, 500, "store_error", &err);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(items, key_json(&k[i]));
    store_dkim_keys_free(k, n);
    resp->body = json_pack("{s:o, s:n}", "items", items, "next_cursor");
}

void api_dkim_keys_create(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "domain", "selector", "algorithm", "activate", NULL };
    static const char *const required[] = { "domain", NULL };
    char dom[API_DKIM_DOMAIN_MAX], sel[DKIM_SELECTOR_MAX + 1];
    struct error err = {0};

    if (api_body_check(req, resp, allowed, required) < 0)
        return;
    json_t *jd = json_object_get(req->body, "domain");
    json_t *js = json_object_get(req->body, "selector");
    json_t *ja = json_object_get(req->body, "algorithm");
    json_t *jact = json_object_get(req->body, "activate");
    if (!json_is_string(jd)) {
        api_error(resp, 400, "invalid_field", "domain", "domain must be a string");
        return;
    }
    if (domain_norm(resp, json_string_value(jd), dom, sizeof dom) < 0)
        return;
    const char *alg = "rsa";
    if (ja != NULL && !json_is_null(ja)) {
        if (!json_is_string(ja) || !dkim_algorithm_valid(json_string_value(ja))) {
            api_error(resp, 400, "invalid_field", "algorithm", "algorithm must be rsa (RSA 2048, "
                      "the default) or ed25519");
            return;
        }
        alg = json_string_value(ja);
    }
    if (jact != NULL && !json_is_boolean(jact)) {
        api_error(resp, 400, "invalid_field", "activate", "activate must be true or false");
        return;
    }
    if (js != NULL && !json_is_null(js)) {
        if (!json_is_string(js) || !dkim_selector_valid(json_string_value(js))) {
            api_error(resp, 400, "invalid_field", "selector", "selector must be letters, digits "
                      "and hyphens (dot-separated labels), at most %d characters",
                      DKIM_SELECTOR_MAX);
            return;
        }
        str_copy(sel, sizeof sel, json_string_value(js));
        str_lower(sel);
    }
    if (internal_check(req, resp, dom) < 0)
        return;
    if ((js == NULL || json_is_null(js)) && selector_default(req, resp, dom, sel, sizeof sel) < 0)
        return;
    char *pem = NULL, *p = NULL;
    if (dkim_keygen(alg, &pem, &p, &err) < 0) {
        api_error_from(resp, 500, "internal", &err);
        return;
    }
    struct store_dkim_key k = {
        .domain = dom, .selector = sel, .algorithm = (char *)alg, .public_key = p,
        .created = (int64_t)time(NULL), .created_by = (char *)(req->who ? req->who->name : ""),
    };
    int rc = auth_secret_seal(req->cfg->auth, DKIM_KEY_LABEL, pem, &k.private_key,
                              &k.private_key_len, &err);
    OPENSSL_cleanse(pem, strlen(pem));
    free(pem);
    if (rc < 0) {
        free(p);
        api_error_from(resp, 500, "internal", &err);
        return;
    }
    bool activate = jact == NULL || json_is_true(jact);
    rc = store_dkim_key_add(req->store, &k, activate, &err);
    free(k.private_key);
    free(p);
    if (rc < 0) {
        store_failure(resp, rc, &err);
        return;
    }
    json_t *after;
    if (key_get(req, resp, dom, sel, &after) < 0)
        return;
    char target[API_DKIM_DOMAIN_MAX + DKIM_SELECTOR_MAX + 2];
    xsnprintf(target, sizeof target, "%s/%s", dom, sel);
    api_audit(req, "dkim.keygen", target, NULL, after);
    log_info("event=dkim_key_created domain=%s selector=%s algorithm=%s active=%s by=%s", dom,
             sel, alg, activate ? "yes" : "no", req->who ? req->who->name : "");
    api_reload(req);
    resp->status = 201;
    resp->body = after;
}

/* key_params - {domain}/{selector} of the path, normalised */
static int key_params(struct api_request *req, struct api_response *resp, char *dom,
                      size_t dsize, char *sel, size_t ssize)
{
    if (req->n_params < 2 || domain_norm(resp, req->params[0], dom, dsize) < 0)
        return -1;
    if (!dkim_selector_valid(req->params[1])) {
        api_error(resp, 400, "invalid_field", "selector", "invalid selector");
        return -1;
    }
    str_copy(sel, ssize, req->params[1]);
    str_lower(sel);
    return 0;
}

void api_dkim_keys_delete(struct api_request *req, struct api_response *resp)
{
    char dom[API_DKIM_DOMAIN_MAX], sel[DKIM_SELECTOR_MAX + 1];
    struct error err = {0};
    json_t *before;
    if (key_params(req, resp, dom, sizeof dom, sel, sizeof sel) < 0 ||
        key_get(req, resp, dom, sel, &before) < 0)
        return;
    int rc = store_dkim_key_delete(req->store, dom, sel, &err);
    if (rc < 0) {
        json_decref(before);
        store_failure(resp, rc, &err);
        return;
    }
    char target[API_DKIM_DOMAIN_MAX + DKIM_SELECTOR_MAX + 2];
    xsnprintf(target, sizeof target, "%s/%s", dom, sel);
    api_audit(req, "dkim.delete", target, before, NULL);
    json_decref(before);
    api_reload(req);
    resp->status = 204;
}

void api_dkim_keys_activate(struct api_request *req, struct api_response *resp)
{
    static const char *const none[] = { NULL };
    char dom[API_DKIM_DOMAIN_MAX], sel[DKIM_SELECTOR_MAX + 1];
    struct error err = {0};
    json_t *before, *after;
    if (api_body_check(req, resp, none, none) < 0 ||
        key_params(req, resp, dom, sizeof dom, sel, sizeof sel) < 0 ||
        key_get(req, resp, dom, sel, &before) < 0)
        return;
    int rc = store_dkim_key_activate(req->store, dom, sel, &err);
    if (rc < 0) {
        json_decref(before);
        store_failure(resp, rc, &err);
        return;
    }
    if (key_get(req, resp, dom, sel, &after) < 0) {
        json_decref(before);
        return;
    }
    char target[API_DKIM_DOMAIN_MAX + DKIM_SELECTOR_MAX + 2];
    xsnprintf(target, sizeof target, "%s/%s", dom, sel);
    api_audit(req, "dkim.activate", target, before, after);
    json_decref(before);
    api_reload(req);
    resp->body = after;
}
