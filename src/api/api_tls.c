/*
 * api_tls.c - the outbound TLS policy routes (/api/v1/tls/policies...) and
 * the "tested before enforced" rule (issue 6, item 4).
 *
 * Adding or changing a policy probes the destination first (the probe runs
 * on the event loop through connect_run; this HTTP worker thread waits).
 * A probe that meets the mode stores the policy enforced (201).  One that
 * does not stores it NOT enforced (report only) and answers 409
 * probe_failed with the probe, unless the body says "override": true; then
 * it is enforced anyway and the override is audit-logged
 * ("tls_policy.override", with the probe).  The same rule applies to routes
 * with tls relaxed or strict (api_tls_route_probe, called by api_route_put).
 *
 * Every change is audit-logged and followed by api_reload, since the
 * delivery loop reads the policies from the routing snapshot.
 */
#include <stdlib.h>
#include <string.h>
#include "api_priv.h"
#include "api_tls.h"
#include "../connect/connect.h"
#include "../connect/connect_checks.h"
#include "../deliver/deliver_mtasts.h"

#define API_DOMAIN_MAX 256

static int64_t now_s(void)
{
    return (int64_t)(time_wall_ms() / 1000);
}

/* norm_domain - lower-case, no trailing dot, a valid name; else a 400 naming field */
static int norm_domain(struct api_response *resp, const char *field, const char *in, char *out,
                       size_t size)
{
    size_t n = in ? strlen(in) : 0;
    if (n > 0 && in[n - 1] == '.')
        n--;
    if (n == 0 || n >= size) {
        api_error(resp, 400, "invalid_field", field, "%s must be a domain name", field);
        return -1;
    }
    memcpy(out, in, n);
    out[n] = '\0';
    str_lower(out);
    if (!domain_name_valid(out)) {
        char shown[80];
        api_error(resp, 400, "invalid_field", field, "invalid domain name %s",
                  log_quote(shown, sizeof shown, out));
        return -1;
    }
    return 0;
}

static json_t *policy_json(const struct store_tls_policy *p)
{
    json_t *probe = json_loads(p->probe_details && *p->probe_details ? p->probe_details : "{}", 0,
                               NULL);
    if (probe == NULL)
        probe = json_object();
    json_t *o = json_pack("{s:s, s:s, s:b, s:b, s:s, s:I, s:s}", "domain", p->domain, "mode",
                          store_tls_policy_mode_name(p->mode), "enforced", p->enforced, "override",
                          p->override, "override_by", p->override_by ? p->override_by : "",
                          "updated", (json_int_t)p->updated, "updated_by",
                          p->updated_by ? p->updated_by : "");
    if (p->mode == STORE_TLSP_DANE)
        json_object_set_new(o, "fallback", json_string(store_tls_policy_mode_name(p->fallback)));
    json_object_set_new(o, "probe", json_pack("{s:I, s:s, s:s, s:o}", "time",
                        (json_int_t)p->probe_time, "verdict", p->probe_verdict ? p->probe_verdict : "",
                        "reason", p->probe_reason ? p->probe_reason : "", "details", probe));
    return o;
}

static bool have_engine(struct api_request *req, struct api_response *resp)
{
    if (req->cfg->connect != NULL)
        return true;
    api_error(resp, 503, "unavailable", NULL, "probes need the Connect engine, which is not "
              "running in this moatd");
    return false;
}

/* probe_failed - 409 in the one error shape, plus the probe */
static void probe_failed(struct api_response *resp, const char *field, json_t *probe,
                         json_t *stored, const char *msg)
{
    api_error(resp, 409, "probe_failed", field, "%s Send \"override\": true to enforce it anyway "
              "(audit-logged).", msg);
    json_object_set(resp->body, "probe", probe);
    if (stored)
        json_object_set_new(resp->body, "policy", stored);
}

/* mtasts_probe_policy - mode mta-sts: the TXT record and the address
 * through Moat's resolver (on the loop), then the policy fetched here (an
 * HTTP worker thread may block); *sts = {id, mode, max_age, mx: [...]}, or
 * -1 with res filled (outcome FAIL/UNKNOWN, message) */
static int mtasts_probe_policy(struct api_request *req, const char *domain, json_t **sts,
                               struct connect_result *res)
{
    json_t *in = json_pack("{s:s}", "domain", domain);
    struct connect_result r = {0};
    connect_run(req->cfg->connect, "mta_sts_resolve", connect_mtasts_resolve_run, in, &r);
    json_decref(in);
    const char *ip = json_string_value(json_object_get(r.details, "ip"));
    const char *id = json_string_value(json_object_get(r.details, "id"));
    if (r.outcome != CONNECT_PASS || ip == NULL || id == NULL) {
        res->outcome = r.outcome == CONNECT_PASS ? CONNECT_FAIL : r.outcome;
        xsnprintf(res->message, sizeof res->message, "MTA-STS: %s", r.message);
        json_decref(r.details);
        return -1;
    }
    const struct moat_settings *set = req->cfg->settings;
    struct mtasts_fetch_req fr = {
        .domain = domain, .ip = ip,
        .port = set->mta_sts_port > 0 ? (int)set->mta_sts_port : 443,
        .ca_file = set->tls_ca_file ? set->tls_ca_file : "",
        .timeout = set->mta_sts_fetch_timeout > 0 ? (int)set->mta_sts_fetch_timeout : 30,
        .tls13 = set->tls_min_version && strcmp(set->tls_min_version, "1.3") == 0,
    };
    char *text = NULL, why[400];
    size_t len = 0;
    struct mtasts_policy pol;
    if (mtasts_fetch(&fr, &text, &len, why, sizeof why) < 0 ||
        mtasts_policy_parse(text, len, &pol, why, sizeof why) < 0) {
        res->outcome = CONNECT_FAIL;
        xsnprintf(res->message, sizeof res->message, "MTA-STS policy of %s: %s", domain, why);
        free(text);
        json_decref(r.details);
        return -1;
    }
    free(text);
    json_t *mx = json_array();
    for (size_t i = 0; i < pol.n_mx; i++)
        json_array_append_new(mx, json_string(pol.mx[i]));
    *sts = json_pack("{s:s, s:s, s:I, s:o}", "id", id, "mode", mtasts_mode_name(pol.mode),
                     "max_age", (json_int_t)pol.max_age, "mx", mx);
    json_decref(r.details);
    return 0;
}

/* probe_and_store - probe p->domain for p->mode, then store p: enforced when
 * the probe met the mode or override; answers the request (201/200, 409) */
static void probe_and_store(struct api_request *req, struct api_response *resp,
                            struct store_tls_policy *p, bool override, bool existed,
                            json_t *before)
{
    struct error err = {0};
    json_t *input = json_pack("{s:s, s:s, s:s}", "domain", p->domain, "mode",
                              store_tls_policy_mode_name(p->mode), "fallback",
                              store_tls_policy_mode_name(p->fallback));
    struct connect_result res = {0};
    json_t *sts = NULL;
    if (p->mode == STORE_TLSP_MTA_STS && mtasts_probe_policy(req, p->domain, &sts, &res) < 0) {
        /* no policy to probe against: the probe fails with the reason */
        json_decref(input);
        input = NULL;
    } else if (sts != NULL) {
        json_object_set(input, "mx_patterns", json_object_get(sts, "mx"));
    }
    if (input != NULL) {
        connect_run(req->cfg->connect, "tls_probe", connect_tls_probe_run, input, &res);
        json_decref(input);
    }
    json_t *probe = res.details ? res.details : json_pack("{s:s, s:s, s:s, s:b, s:[]}", "verdict",
                                                          "error", "reason", res.message, "mode",
                                                          store_tls_policy_mode_name(p->mode),
                                                          "meets", false, "mx");
    if (sts != NULL)
        json_object_set_new(probe, "mta_sts", sts);
    /* opportunistic refuses nothing: the probe is information only */
    bool meets = res.outcome == CONNECT_PASS || p->mode == STORE_TLSP_OPPORTUNISTIC;
    const char *verdict = json_string_value(json_object_get(probe, "verdict"));
    const char *reason = json_string_value(json_object_get(probe, "reason"));
    char *details = json_dumps(probe, JSON_COMPACT);
    p->probe_time = now_s();
    p->probe_verdict = (char *)(verdict ? verdict : "error");
    p->probe_reason = (char *)(reason ? reason : res.message);
    p->probe_details = details;
    p->enforced = meets || override;
    p->override = !meets && override;
    p->override_by = (char *)(p->override ? req->who->name : "");
    p->updated = now_s();
    p->updated_by = (char *)req->who->name;
    int rc = store_tls_policy_put(req->store, p, &err);
    free(details);
    if (rc < 0) {
        json_decref(probe);
        api_error_from(resp, err.field[0] ? 400 : 500, err.field[0] ? "invalid_field" : "internal",
                       &err);
        return;
    }
    struct store_tls_policy now = {0};
    if (store_tls_policy_get(req->store, p->domain, &now, &err) < 0) {
        json_decref(probe);
        api_error_from(resp, 500, "internal", &err);
        return;
    }
    json_t *after = policy_json(&now);
    store_tls_policy_clear(&now);
    api_audit(req, existed ? "tls_policy.update" : "tls_policy.create", p->domain, before, after);
    if (!meets && override) {
        json_t *ov = json_pack("{s:s, s:O}", "mode", store_tls_policy_mode_name(p->mode), "probe", probe);
        api_audit(req, "tls_policy.override", p->domain, NULL, ov);
        json_decref(ov);
    }
    api_reload(req);
    if (!meets && !override) {
        char msg[700];
        xsnprintf(msg, sizeof msg, "The probe of %s does not meet mode %s: %s. The policy is "
                  "stored report-only (not enforced).", p->domain,
                  store_tls_policy_mode_name(p->mode), res.message);
        probe_failed(resp, "mode", probe, after, msg);
        json_decref(probe);
        return;
    }
    json_decref(probe);
    resp->status = existed ? 200 : 201;
    resp->body = after;
}

/* POST /api/v1/tls/policies {"domain", "mode", "fallback"?, "override"?} */
void api_tls_policy_put(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "domain", "mode", "fallback", "override", NULL };
    static const char *const required[] = { "domain", "mode", NULL };
    char dom[API_DOMAIN_MAX];
    struct error err = {0};

    if (api_body_check(req, resp, allowed, required) < 0)
        return;
    json_t *jd = json_object_get(req->body, "domain"), *jm = json_object_get(req->body, "mode");
    json_t *jf = json_object_get(req->body, "fallback"), *jo = json_object_get(req->body, "override");
    if (!json_is_string(jd)) {
        api_error(resp, 400, "invalid_field", "domain", "domain must be a domain name");
        return;
    }
    if (norm_domain(resp, "domain", json_string_value(jd), dom, sizeof dom) < 0)
        return;
    struct store_tls_policy p = { .domain = dom };
    if (!json_is_string(jm) || store_tls_policy_mode_parse(json_string_value(jm), &p.mode) < 0) {
        api_error(resp, 400, "invalid_field", "mode",
                  "mode must be opportunistic, encrypt, verify, dane or mta-sts");
        return;
    }
    p.fallback = STORE_TLSP_OPPORTUNISTIC;
    if (jf != NULL && !json_is_null(jf)) {
        if (p.mode != STORE_TLSP_DANE) {
            api_error(resp, 400, "invalid_field", "fallback", "fallback applies to mode dane only");
            return;
        }
        if (!json_is_string(jf) || store_tls_policy_mode_parse(json_string_value(jf), &p.fallback) < 0 ||
            p.fallback > STORE_TLSP_VERIFY) {
            api_error(resp, 400, "invalid_field", "fallback",
                      "fallback must be opportunistic, encrypt or verify");
            return;
        }
    }
    if (jo != NULL && !json_is_boolean(jo)) {
        api_error(resp, 400, "invalid_field", "override", "override must be true or false");
        return;
    }
    if (!have_engine(req, resp))
        return;
    struct store_tls_policy old = {0};
    int rc = store_tls_policy_get(req->store, dom, &old, &err);
    if (rc == STORE_ERR) {
        api_error_from(resp, 500, "internal", &err);
        return;
    }
    json_t *before = rc == STORE_OK ? policy_json(&old) : NULL;
    store_tls_policy_clear(&old);
    probe_and_store(req, resp, &p, json_is_true(jo), rc == STORE_OK, before);
    json_decref(before);
}

static int policy_param(struct api_request *req, struct api_response *resp, char *dom, size_t size,
                        struct store_tls_policy *out)
{
    struct error err = {0};
    if (norm_domain(resp, "domain", req->n_params > 0 ? req->params[0] : "", dom, size) < 0)
        return -1;
    int rc = store_tls_policy_get(req->store, dom, out, &err);
    if (rc == STORE_NOT_FOUND) {
        api_error(resp, 404, "not_found", "domain", "%s has no TLS policy", dom);
        return -1;
    }
    if (rc < 0) {
        api_error_from(resp, 500, "internal", &err);
        return -1;
    }
    return 0;
}

void api_tls_policies_list(struct api_request *req, struct api_response *resp)
{
    struct store_tls_policy *p = NULL;
    size_t n = 0;
    struct error err = {0};
    if (store_tls_policy_list(req->store, &p, &n, &err) < 0) {
        api_error_from(resp, 500, "internal", &err);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(items, policy_json(&p[i]));
    store_tls_policies_free(p, n);
    resp->body = json_pack("{s:o, s:n}", "items", items, "next_cursor");
}

void api_tls_policy_get(struct api_request *req, struct api_response *resp)
{
    char dom[API_DOMAIN_MAX];
    struct store_tls_policy p = {0};
    if (policy_param(req, resp, dom, sizeof dom, &p) < 0)
        return;
    resp->body = policy_json(&p);
    store_tls_policy_clear(&p);
}

void api_tls_policy_delete(struct api_request *req, struct api_response *resp)
{
    char dom[API_DOMAIN_MAX];
    struct store_tls_policy p = {0};
    struct error err = {0};
    if (policy_param(req, resp, dom, sizeof dom, &p) < 0)
        return;
    json_t *before = policy_json(&p);
    store_tls_policy_clear(&p);
    if (store_tls_policy_delete(req->store, dom, &err) < 0) {
        json_decref(before);
        api_error_from(resp, 500, "internal", &err);
        return;
    }
    api_audit(req, "tls_policy.delete", dom, before, NULL);
    json_decref(before);
    api_reload(req);
    resp->status = 204;
}

/* POST /api/v1/tls/policies/{domain}/probe {"override"?}: probe again; a
 * probe that meets the mode enforces the policy */
void api_tls_policy_probe(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "override", NULL };
    static const char *const required[] = { NULL };
    char dom[API_DOMAIN_MAX];
    struct store_tls_policy p = {0};
    if (req->body != NULL && api_body_check(req, resp, allowed, required) < 0)
        return;
    json_t *jo = req->body ? json_object_get(req->body, "override") : NULL;
    if (jo != NULL && !json_is_boolean(jo)) {
        api_error(resp, 400, "invalid_field", "override", "override must be true or false");
        return;
    }
    if (!have_engine(req, resp) || policy_param(req, resp, dom, sizeof dom, &p) < 0)
        return;
    json_t *before = policy_json(&p);
    /* an earlier override stays unless this probe passes */
    bool override = json_is_true(jo) || p.override;
    struct store_tls_policy q = { .domain = dom, .mode = p.mode, .fallback = p.fallback };
    store_tls_policy_clear(&p);
    probe_and_store(req, resp, &q, override, true, before);
    json_decref(before);
}

/* api_tls_route_probe - the route rule of "tested before enforced" */
int api_tls_route_probe(struct api_request *req, struct api_response *resp, const char *domain,
                        const char *host, int port, enum store_tls_mode tls, bool override)
{
    if (tls == STORE_TLS_OPPORTUNISTIC)
        return 0;
    if (!have_engine(req, resp))
        return -1;
    json_t *input = json_pack("{s:s, s:i, s:s}", "host", host, "port", port, "tls",
                              store_tls_mode_name(tls));
    struct connect_result res = {0};
    connect_run(req->cfg->connect, "route_probe", connect_route_probe_run, input, &res);
    json_decref(input);
    json_t *probe = res.details ? res.details : json_pack("{s:s, s:s, s:b}", "verdict", "error",
                                                          "reason", res.message, "meets", false);
    if (res.outcome == CONNECT_PASS) {
        json_decref(probe);
        return 0;
    }
    if (override) {
        json_t *ov = json_pack("{s:s, s:s, s:i, s:O}", "tls", store_tls_mode_name(tls), "host",
                               host, "port", port, "probe", probe);
        api_audit(req, "route.tls_override", domain, NULL, ov);
        json_decref(ov);
        json_decref(probe);
        return 0;
    }
    probe_failed(resp, "tls", probe, NULL, res.message);
    json_decref(probe);
    return -1;
}
