/*
 * api_config.c - the configuration routes: health, status, settings
 * (every setting with its source; the runtime ones changed in the store and
 * applied on the loop), internal domains and their delivery routes.
 *
 * Every change goes to the store through this worker thread's handle, is
 * written to the audit log with its before and after state, and then
 * api_reload() returns once the SMTP side uses the new configuration; the
 * daemon's own change poll would catch it a second later anyway.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "api_priv.h"
#include "api_tls.h"
#include "../connect/connect.h"

#define API_DOMAIN_MAX 256

/* --- JSON of store objects --- */

static json_t *route_json(const struct store_route *r)
{
    if (r->host == NULL)
        return json_null();
    return json_pack("{s:s, s:i, s:s}", "host", r->host, "port", r->port,
                     "tls", store_tls_mode_name(r->tls));
}

/* domain_status - "verified", "trusted_unverified" (lab override) or "pending" */
static const char *domain_status(const struct store_domain *d)
{
    return d->verified ? "verified" : d->trust_unverified ? "trusted_unverified" : "pending";
}

static json_t *time_or_null(int64_t t)
{
    return t > 0 ? json_integer((json_int_t)t) : json_null();
}

static json_t *domain_json(const struct store_domain *d)
{
    json_t *o = json_pack("{s:s, s:b, s:s, s:b, s:I, s:o}", "name", d->name,
                          "verified", d->verified, "status", domain_status(d),
                          "trust_unverified", d->trust_unverified,
                          "created", (json_int_t)d->created, "route", route_json(&d->route));
    json_object_set_new(o, "verified_at", time_or_null(d->verified_at));
    json_object_set_new(o, "token", d->token ? json_string(d->token) : json_null());
    /* what to publish while the domain is not verified: the exact TXT record */
    if (!d->verified && d->token != NULL) {
        json_object_set_new(o, "txt_record", json_pack("{s:s, s:s, s:s+}", "name", d->name,
                            "type", "TXT", "value", "moat-verification=", d->token));
        json_object_set_new(o, "txt_zone_line", json_sprintf(
            "%s. 300 IN TXT \"moat-verification=%s\"", d->name, d->token));
    }
    json_object_set_new(o, "last_check", time_or_null(d->last_check));
    json_object_set_new(o, "last_result", d->last_result ? json_string(d->last_result)
                                                         : json_null());
    json_object_set_new(o, "mx_only_moat_since", time_or_null(d->mx_only_moat_since));
    return o;
}

/* --- helpers --- */

/* domain_param - the {name} path segment, normalised as the store keeps it */
static int domain_param(struct api_request *req, struct api_response *resp, char *out,
                        size_t size)
{
    const char *name = req->n_params > 0 ? req->params[0] : "";
    size_t n = strlen(name);
    if (n > 0 && name[n - 1] == '.')
        n--;
    if (n == 0 || n >= size) {
        api_error(resp, 400, "invalid_field", "name", "invalid domain name");
        return -1;
    }
    memcpy(out, name, n);
    out[n] = '\0';
    str_lower(out);
    if (!domain_name_valid(out)) {
        char shown[80];
        api_error(resp, 400, "invalid_field", "name", "invalid domain name %s",
                  log_quote(shown, sizeof shown, out));
        return -1;
    }
    return 0;
}

/* domain_find - the domain named norm as JSON, NULL when unknown (-1: store error in resp) */
static int domain_find(struct api_request *req, struct api_response *resp, const char *norm,
                       json_t **out)
{
    struct store_domain *d = NULL;
    size_t n = 0;
    struct error err = {0};

    *out = NULL;
    if (store_domain_list(req->store, &d, &n, &err) < 0) {
        api_error_from(resp, 500, "store_error", &err);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (strcmp(d[i].name, norm) == 0)
            *out = domain_json(&d[i]);
    store_domains_free(d, n);
    return 0;
}

static void not_found_domain(struct api_response *resp, const char *norm)
{
    api_error(resp, 404, "not_found", "name", "no such domain %s", norm);
}

/* store_failure - a store error: its field makes it the caller's fault */
static void store_failure(struct api_response *resp, const struct error *err)
{
    if (err->field[0] != '\0')
        api_error_from(resp, 400, "invalid_field", err);
    else
        api_error_from(resp, 500, "store_error", err);
}

/* --- health, status, settings --- */

void api_health(struct api_request *req, struct api_response *resp)
{
    resp->body = json_pack("{s:s, s:s}", "status", "ok", "version", MOAT_VERSION);
}

struct status_job {
    const struct api_config *cfg;
    json_t *result;
    bool done;
};

static void status_on_loop(void *arg)
{
    struct status_job *j = arg;
    j->result = j->cfg->status_json(j->cfg->status_arg);
    j->done = true;
}

void api_status(struct api_request *req, struct api_response *resp)
{
    struct status_job j = { .cfg = req->cfg };
    if (req->cfg->status_json == NULL) {
        resp->body = json_pack("{s:s}", "version", MOAT_VERSION);
        return;
    }
    api_loop_call(req->cfg, status_on_loop, &j);
    if (!j.done || j.result == NULL) {
        json_decref(j.result);
        api_error(resp, 503, "unavailable", NULL, "moatd is shutting down");
        return;
    }
    resp->body = j.result;
}

/* --- settings --- */

/*
 * GET lists every setting with its effective value and where it comes from;
 * PATCH stores runtime settings (settings.h) and applies them; DELETE drops
 * a stored value.  The loop reads the runtime fields of struct moat_settings
 * at each use, so they are read and written here only inside api_loop_call:
 * the loop is the only thread that touches them.  The store is written
 * first, on this worker's handle: if the loop is gone (shutting down) the
 * value still applies at the next start.
 */

#define API_SETTINGS_MAX_PATCH 64   /* keys in one PATCH; the table has fewer rows */

/* setting_index - the table row of name, or -1 */
static long setting_index(const struct moat_settings *s, const char *name)
{
    struct settings_info info;
    struct buf b;
    long found = -1;

    buf_init(&b);
    for (size_t i = 0; i < settings_count() && found < 0; i++) {
        buf_reset(&b);
        settings_describe(s, i, &info, &b);
        if (strcmp(info.name, name) == 0)
            found = (long)i;
    }
    buf_free(&b);
    return found;
}

/* setting_json - row i: {value, default, source, runtime, group, description} */
static json_t *setting_json(const struct moat_settings *s, size_t i)
{
    struct settings_info info;
    struct buf b;

    buf_init(&b);
    settings_describe(s, i, &info, &b);
    json_t *o = json_pack("{s:s, s:s, s:s, s:b, s:s, s:s}", "value", buf_cstr(&b),
                          "default", info.secret ? "(redacted)" : info.def,
                          "source", settings_source_name(info.source), "runtime", info.runtime,
                          "group", info.group, "description", info.description);
    buf_free(&b);
    if (o == NULL)   /* a value that is not UTF-8 (a path): never a runtime setting */
        o = json_pack("{s:s, s:s, s:b}", "value", "(not UTF-8)", "source",
                      settings_source_name(info.source), "runtime", info.runtime);
    return o;
}

/* value_of - {"value", "source"} of one row, for the audit log */
static json_t *value_of(const struct moat_settings *s, long i)
{
    json_t *full = setting_json(s, (size_t)i);
    json_t *o = json_pack("{s:O, s:O}", "value", json_object_get(full, "value"),
                          "source", json_object_get(full, "source"));
    json_decref(full);
    return o;
}

struct settings_job {
    const struct api_config *cfg;
    struct moat_settings *set;
    const char **keys;              /* PATCH: keys and canonical values; reset: one key */
    const char **values;            /* NULL: reset */
    size_t n;
    json_t *before, *after;         /* {key: {value, source}} */
    json_t *settings;               /* {key: setting_json} of the keys, or of every row */
    int rc;
    struct error err;
    bool done;
};

/* settings_list_on_loop - every row (GET) */
static void settings_list_on_loop(void *arg)
{
    struct settings_job *j = arg;
    j->settings = json_object();
    for (size_t i = 0; i < settings_count(); i++) {
        struct settings_info info;
        struct buf b;
        buf_init(&b);
        settings_describe(j->set, i, &info, &b);
        buf_free(&b);
        json_object_set_new(j->settings, info.name, setting_json(j->set, i));
    }
    j->done = true;
}

/* settings_change_on_loop - apply (or reset) the job's keys; before and after */
static void settings_change_on_loop(void *arg)
{
    struct settings_job *j = arg;
    j->before = json_object();
    j->after = json_object();
    j->settings = json_object();
    for (size_t k = 0; k < j->n; k++) {
        long i = setting_index(j->set, j->keys[k]);
        if (i < 0)
            continue;   /* checked on the worker */
        json_object_set_new(j->before, j->keys[k], value_of(j->set, i));
        int rc = j->values != NULL
                     ? settings_apply_runtime(j->set, j->keys[k], j->values[k], &j->err)
                     : settings_reset_runtime(j->set, j->keys[k], &j->err);
        if (rc < 0)
            j->rc = -1;   /* validated before: only a bug gets here */
        json_object_set_new(j->after, j->keys[k], value_of(j->set, i));
        json_object_set_new(j->settings, j->keys[k], setting_json(j->set, (size_t)i));
    }
    if (j->cfg->settings_changed != NULL)
        j->cfg->settings_changed(j->cfg->settings_changed_arg);
    j->done = true;
}

/* key_check - a key that may be changed at run time, else a 400 naming it */
static int key_check(struct api_response *resp, const char *key, int unknown_status)
{
    char shown[80];
    switch (settings_runtime(key)) {
    case 1:
        return 0;
    case 0:
        api_error(resp, 400, "not_runtime", key, "%s is not changeable at run time: moatd "
                  "reads it at start; set it in moat.conf and restart moatd", key);
        return -1;
    default:
        api_error(resp, unknown_status, unknown_status == 404 ? "not_found" : "unknown_field",
                  key, "%s: unknown setting", log_quote(shown, sizeof shown, key));
        return -1;
    }
}

/* api_settings_get - every setting: value, default, source, runtime, description;
 * "stored" when the database holds a value (under a -o it waits) */
void api_settings_get(struct api_request *req, struct api_response *resp)
{
    struct settings_job j = { .set = req->cfg->settings };
    struct store_setting *st = NULL;
    size_t n = 0;
    struct error err = {0};

    if (store_settings_list(req->store, &st, &n, &err) < 0) {
        api_error_from(resp, 500, "store_error", &err);
        return;
    }
    api_loop_call(req->cfg, settings_list_on_loop, &j);
    if (!j.done) {
        store_settings_free(st, n);
        json_decref(j.settings);
        api_error(resp, 503, "unavailable", NULL, "moatd is shutting down");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_object_get(j.settings, st[i].key);
        if (o != NULL)
            json_object_set_new(o, "stored", json_pack("{s:s, s:I, s:s}", "value", st[i].value,
                                "updated", (json_int_t)st[i].updated,
                                "updated_by", st[i].updated_by));
    }
    store_settings_free(st, n);
    resp->body = json_pack("{s:o}", "settings", j.settings);
}

/* api_settings_update - PATCH {"key": "value", ...}: every key known and
 * runtime, every value valid (all checked before anything is written), then
 * stored in one transaction, applied on the loop, and audited */
void api_settings_update(struct api_request *req, struct api_response *resp)
{
    const char *keys[API_SETTINGS_MAX_PATCH];
    char *values[API_SETTINGS_MAX_PATCH];
    size_t n = 0;
    struct error err = {0};
    const char *key;
    json_t *v;

    if (req->body == NULL || json_object_size(req->body) == 0) {
        api_error(resp, 400, "invalid_body", NULL,
                  "expected {\"setting\": \"value\", ...} with at least one setting");
        return;
    }
    if (json_object_size(req->body) > API_SETTINGS_MAX_PATCH) {
        api_error(resp, 400, "invalid_body", NULL, "more than %d settings in one request",
                  API_SETTINGS_MAX_PATCH);
        return;
    }
    json_object_foreach(req->body, key, v) {
        char num[32];
        const char *text;
        if (key_check(resp, key, 400) < 0)
            goto out;
        if (json_is_string(v)) {
            text = json_string_value(v);
        } else if (json_is_integer(v)) {
            xsnprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
            text = num;
        } else {
            api_error(resp, 400, "invalid_field", key, "%s: the value must be a string, "
                      "in moat.conf syntax", key);
            goto out;
        }
        /* the same check and message as moat.conf and -o (moatd --check-config) */
        if (settings_check_runtime(key, text, &values[n], &err) < 0) {
            api_error_from(resp, 400, "invalid_field", &err);
            goto out;
        }
        keys[n++] = key;
    }
    if (store_settings_set(req->store, keys, (const char *const *)values, n, req->who->name,
                           &err) < 0) {
        api_error_from(resp, 500, "store_error", &err);
        goto out;
    }
    struct settings_job j = { .cfg = req->cfg, .set = req->cfg->settings, .keys = keys,
                              .values = (const char **)values, .n = n };
    api_loop_call(req->cfg, settings_change_on_loop, &j);
    if (!j.done) {
        api_error(resp, 503, "unavailable", NULL,
                  "moatd is shutting down; the new values are stored and apply at the next start");
        goto out;
    }
    struct buf target;
    buf_init(&target);
    for (size_t i = 0; i < n; i++)
        buf_printf(&target, "%s%s", i ? "," : "", keys[i]);
    api_audit(req, "settings.update", buf_cstr(&target), j.before, j.after);
    buf_free(&target);
    for (size_t i = 0; i < n; i++)
        log_info("event=setting_changed key=%s value=\"%s\" by=%s", keys[i], values[i],
                 req->who->name);
    json_decref(j.before);
    json_decref(j.after);
    if (j.rc < 0)
        log_error("event=setting_apply_failed reason=\"%s\"", j.err.msg);
    resp->body = json_pack("{s:o}", "settings", j.settings);
out:
    for (size_t i = 0; i < n; i++)
        free(values[i]);
}

/* api_settings_reset - DELETE /settings/{name}: drop the stored value; the
 * setting is back to moat.conf's value or the default */
void api_settings_reset(struct api_request *req, struct api_response *resp)
{
    const char *key = req->n_params > 0 ? req->params[0] : "";
    struct error err = {0};

    if (key_check(resp, key, 404) < 0)
        return;
    int rc = store_setting_delete(req->store, key, &err);
    if (rc == STORE_NOT_FOUND) {
        api_error(resp, 404, "not_found", "name", "%s has no stored value (it comes from "
                  "moat.conf, the command line or the default)", key);
        return;
    }
    if (rc < 0) {
        api_error_from(resp, 500, "store_error", &err);
        return;
    }
    const char *keys[1] = { key };
    struct settings_job j = { .cfg = req->cfg, .set = req->cfg->settings, .keys = keys, .n = 1 };
    api_loop_call(req->cfg, settings_change_on_loop, &j);
    if (!j.done) {
        api_error(resp, 503, "unavailable", NULL,
                  "moatd is shutting down; the stored value is gone from the next start");
        return;
    }
    api_audit(req, "settings.reset", key, j.before, j.after);
    log_info("event=setting_reset key=%s by=%s", key, req->who->name);
    json_decref(j.before);
    json_decref(j.after);
    resp->body = json_pack("{s:o}", "settings", j.settings);
}

/* --- domains --- */

void api_domains_list(struct api_request *req, struct api_response *resp)
{
    size_t limit;
    const char *cursor;
    struct store_domain *d = NULL;
    size_t n = 0;
    struct error err = {0};

    if (api_page(req, resp, &limit, &cursor) < 0)
        return;
    if (store_domain_list(req->store, &d, &n, &err) < 0) {
        api_error_from(resp, 500, "store_error", &err);
        return;
    }
    json_t *items = json_array();
    const char *last = NULL;
    bool more = false;
    /* the store lists by name; the cursor is the last name of the previous page */
    for (size_t i = 0; i < n; i++) {
        if (cursor != NULL && strcmp(d[i].name, cursor) <= 0)
            continue;
        if (json_array_size(items) == limit) {
            more = true;
            break;
        }
        json_array_append_new(items, domain_json(&d[i]));
        last = d[i].name;
    }
    resp->body = json_pack("{s:o, s:o}", "items", items, "next_cursor",
                           more && last ? json_string(last) : json_null());
    store_domains_free(d, n);
}

void api_domains_create(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "name", "trust_unverified", NULL };
    static const char *const required[] = { "name", NULL };
    struct error err = {0};
    json_t *after = NULL;

    if (api_body_check(req, resp, allowed, required) < 0)
        return;
    const char *name = json_string_value(json_object_get(req->body, "name"));
    if (name == NULL) {
        api_error(resp, 400, "invalid_field", "name", "name must be a string");
        return;
    }
    json_t *jt = json_object_get(req->body, "trust_unverified");
    if (jt != NULL && !json_is_boolean(jt)) {
        api_error(resp, 400, "invalid_field", "trust_unverified",
                  "trust_unverified must be true or false");
        return;
    }
    /* the lab override: internal without proof; audited under its own action */
    bool trusted = json_is_true(jt);
    if ((trusted ? store_domain_add_trusted(req->store, name, &err)
                 : store_domain_add(req->store, name, &err)) < 0) {
        if (strstr(err.msg, "already exists") != NULL)
            api_error_from(resp, 409, "conflict", &err);
        else
            store_failure(resp, &err);
        return;
    }
    char norm[API_DOMAIN_MAX];
    struct api_request r2 = *req;
    const char *p[1] = { name };
    memcpy(r2.params, p, sizeof p);
    r2.n_params = 1;
    if (domain_param(&r2, resp, norm, sizeof norm) < 0 || domain_find(req, resp, norm, &after) < 0)
        return;
    api_audit(req, trusted ? "domain.add_trusted_unverified" : "domain.create", norm, NULL, after);
    if (trusted)
        log_warn("event=domain_trusted_unverified domain=%s reason=\"lab override: internal "
                 "without DNS verification\"", norm);
    api_reload(req);
    resp->status = 201;
    resp->body = after ? after : json_pack("{s:s}", "name", norm);
}

void api_domains_get(struct api_request *req, struct api_response *resp)
{
    char norm[API_DOMAIN_MAX];
    json_t *d;

    if (domain_param(req, resp, norm, sizeof norm) < 0 || domain_find(req, resp, norm, &d) < 0)
        return;
    if (d == NULL) {
        not_found_domain(resp, norm);
        return;
    }
    resp->body = d;
}

void api_domains_delete(struct api_request *req, struct api_response *resp)
{
    char norm[API_DOMAIN_MAX];
    struct error err = {0};
    json_t *before;

    if (domain_param(req, resp, norm, sizeof norm) < 0 ||
        domain_find(req, resp, norm, &before) < 0)
        return;
    if (before == NULL) {
        not_found_domain(resp, norm);
        return;
    }
    if (store_domain_remove(req->store, norm, &err) < 0) {
        json_decref(before);
        if (strstr(err.msg, "no such domain") != NULL)
            not_found_domain(resp, norm);
        else
            store_failure(resp, &err);
        return;
    }
    api_audit(req, "domain.delete", norm, before, NULL);
    json_decref(before);
    api_reload(req);
    resp->status = 204;
}

/* --- routes --- */

void api_route_get(struct api_request *req, struct api_response *resp)
{
    char norm[API_DOMAIN_MAX];
    struct store_route r;
    struct error err = {0};

    if (domain_param(req, resp, norm, sizeof norm) < 0)
        return;
    if (store_route_get(req->store, norm, &r, &err) < 0) {
        if (strstr(err.msg, "no such domain") != NULL)
            not_found_domain(resp, norm);
        else
            store_failure(resp, &err);
        return;
    }
    if (r.host == NULL) {
        api_error(resp, 404, "no_route", "route", "%s has no route", norm);
        return;
    }
    resp->body = route_json(&r);
    store_route_clear(&r);
}

void api_route_put(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "host", "port", "tls", "override", NULL };
    static const char *const required[] = { "host", NULL };
    char norm[API_DOMAIN_MAX];
    struct store_route old = {0}, r = {0};
    struct error err = {0};

    if (domain_param(req, resp, norm, sizeof norm) < 0 ||
        api_body_check(req, resp, allowed, required) < 0)
        return;
    json_t *jh = json_object_get(req->body, "host");
    json_t *jp = json_object_get(req->body, "port");
    json_t *jt = json_object_get(req->body, "tls");
    if (!json_is_string(jh) || json_string_length(jh) == 0) {
        api_error(resp, 400, "invalid_field", "host", "host must be a host name or an IP address");
        return;
    }
    r.port = 25;
    if (jp != NULL && !json_is_null(jp)) {
        if (!json_is_integer(jp) || json_integer_value(jp) < 1 || json_integer_value(jp) > 65535) {
            api_error(resp, 400, "invalid_field", "port", "port must be a whole number from 1 to 65535");
            return;
        }
        r.port = (int)json_integer_value(jp);
    }
    if (store_route_get(req->store, norm, &old, &err) < 0) {
        if (strstr(err.msg, "no such domain") != NULL)
            not_found_domain(resp, norm);
        else
            store_failure(resp, &err);
        return;
    }
    /* changing the host must not silently weaken a strict route */
    r.tls = old.host != NULL ? old.tls : STORE_TLS_OPPORTUNISTIC;
    if (jt != NULL && !json_is_null(jt)) {
        if (!json_is_string(jt) || store_tls_mode_parse(json_string_value(jt), &r.tls) < 0) {
            store_route_clear(&old);
            api_error(resp, 400, "invalid_field", "tls",
                      "tls must be opportunistic, relaxed or strict");
            return;
        }
    }
    r.host = (char *)json_string_value(jh);
    /* tested before enforced (issue 6): relaxed and strict routes are probed */
    json_t *jo = json_object_get(req->body, "override");
    if (jo != NULL && !json_is_boolean(jo)) {
        store_route_clear(&old);
        api_error(resp, 400, "invalid_field", "override", "override must be true or false");
        return;
    }
    if (api_tls_route_probe(req, resp, norm, r.host, r.port, r.tls, json_is_true(jo)) < 0) {
        store_route_clear(&old);
        return;
    }
    if (store_route_set(req->store, norm, &r, &err) < 0) {
        store_route_clear(&old);
        store_failure(resp, &err);
        return;
    }
    json_t *before = route_json(&old);
    store_route_clear(&old);
    struct store_route now = {0};
    if (store_route_get(req->store, norm, &now, &err) < 0) {
        json_decref(before);
        store_failure(resp, &err);
        return;
    }
    json_t *after = route_json(&now);
    store_route_clear(&now);
    api_audit(req, "route.set", norm, before, after);
    json_decref(before);
    api_reload(req);
    resp->body = after;
}

void api_route_delete(struct api_request *req, struct api_response *resp)
{
    char norm[API_DOMAIN_MAX];
    struct store_route old = {0}, none = {0};
    struct error err = {0};

    if (domain_param(req, resp, norm, sizeof norm) < 0)
        return;
    if (store_route_get(req->store, norm, &old, &err) < 0) {
        if (strstr(err.msg, "no such domain") != NULL)
            not_found_domain(resp, norm);
        else
            store_failure(resp, &err);
        return;
    }
    if (old.host == NULL) {
        api_error(resp, 404, "no_route", "route", "%s has no route", norm);
        return;
    }
    if (store_route_set(req->store, norm, &none, &err) < 0) {
        store_route_clear(&old);
        store_failure(resp, &err);
        return;
    }
    json_t *before = route_json(&old);
    store_route_clear(&old);
    api_audit(req, "route.delete", norm, before, NULL);
    json_decref(before);
    api_reload(req);
    resp->status = 204;
}

/* api_domains_verify - POST /api/v1/domains/{name}/verify: run the domains
 * check now (it looks up every pending domain's TXT record) and answer this
 * domain's state with the check's outcome */
void api_domains_verify(struct api_request *req, struct api_response *resp)
{
    char norm[API_DOMAIN_MAX];
    struct error err = {0};
    json_t *before, *after;

    if (domain_param(req, resp, norm, sizeof norm) < 0 ||
        domain_find(req, resp, norm, &before) < 0)
        return;
    if (before == NULL) {
        not_found_domain(resp, norm);
        return;
    }
    if (req->cfg->connect == NULL) {
        json_decref(before);
        api_error(resp, 503, "unavailable", NULL, "Connect is not running");
        return;
    }
    json_t *d = connect_task_check(req->cfg->connect, req->store, "domains", req->who, &err);
    if (d == NULL) {
        json_decref(before);
        api_error_from(resp, err.field[0] ? 400 : 500, err.field[0] ? "invalid_field" : "internal",
                       &err);
        return;
    }
    if (domain_find(req, resp, norm, &after) < 0) {
        json_decref(before);
        json_decref(d);
        return;
    }
    if (after == NULL) {
        json_decref(before);
        json_decref(d);
        not_found_domain(resp, norm);
        return;
    }
    json_t *result = json_object_get(d, "result");
    json_t *mine = NULL;
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(json_object_get(result, "details"), "domains"), i, it)
        if (json_is_string(json_object_get(it, "name")) &&
            strcmp(json_string_value(json_object_get(it, "name")), norm) == 0)
            mine = it;
    json_object_set_new(after, "check", json_pack("{s:O?, s:O?, s:O?}",
                        "outcome", json_object_get(result, "outcome"),
                        "message", mine ? json_object_get(mine, "message")
                                        : json_object_get(result, "message"),
                        "task_state", json_object_get(d, "state")));
    if (json_is_true(json_object_get(after, "verified")) &&
        !json_is_true(json_object_get(before, "verified"))) {
        api_audit(req, "domain.verified", norm, before, after);
        api_reload(req);
    }
    json_decref(before);
    json_decref(d);
    resp->body = after;
}
