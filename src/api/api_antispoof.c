/*
 * api_antispoof.c - /api/v1/antispoof/...: anti-spoofing bypasses (issue 7,
 * store_antispoof.c) and the refused sources ("candidates", kept in memory
 * on the SMTP loop by policy_antispoof.c, read through api_loop_call).
 *
 *   GET    /antispoof/bypasses                  list
 *   POST   /antispoof/bypasses                  {kind: ip|host|spf, value, domain?, comment?}
 *   DELETE /antispoof/bypasses/{id}
 *   GET    /antispoof/candidates                refused sources, most recent first
 *   POST   /antispoof/candidates/{address}/bypass   {by: ip|host, domain?, comment?}
 *          the one-step exception: a bypass for that source (its address,
 *          or its forward-confirmed host name), for the given domain, else
 *          one per domain it was refused for; the source leaves the list.
 *
 * Every change is audited (antispoof_bypass.create / .delete) and followed
 * by api_reload(): the SMTP loop's snapshot holds the bypasses.
 */
#include <stdlib.h>
#include <string.h>
#include "../core/cidr.h"
#include "../policy/policy.h"
#include "api_priv.h"
#include "api_antispoof.h"

static json_t *bypass_json(const struct store_antispoof_bypass *b)
{
    return json_pack("{s:I, s:s, s:s, s:o, s:s, s:o}", "id", (json_int_t)b->id, "kind",
                     store_antispoof_kind_name(b->kind), "value", b->value, "domain",
                     b->domain[0] ? json_string(b->domain) : json_null(), "comment", b->comment,
                     "created", api_time_json(b->created));
}

/* bypass_find - the row with this id as JSON, NULL when none */
static json_t *bypass_find(struct store *st, int64_t id)
{
    struct store_antispoof_bypass *b;
    size_t n;
    struct error err = {0};
    json_t *r = NULL;
    if (store_antispoof_bypass_list(st, &b, &n, &err) < 0)
        return NULL;
    for (size_t i = 0; i < n && r == NULL; i++)
        if (b[i].id == id)
            r = bypass_json(&b[i]);
    store_antispoof_bypasses_free(b, n);
    return r;
}

void api_antispoof_bypasses_list(struct api_request *req, struct api_response *resp)
{
    struct store_antispoof_bypass *b;
    size_t n;
    struct error err = {0};
    if (store_antispoof_bypass_list(req->store, &b, &n, &err) < 0) {
        api_store_fail(resp, STORE_ERR, &err);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(items, bypass_json(&b[i]));
    store_antispoof_bypasses_free(b, n);
    resp->body = json_pack("{s:o, s:n}", "items", items, "next_cursor");
}

/* bypass_create - add, audit; the new row as JSON, NULL after an error answer */
static json_t *bypass_create(struct api_request *req, struct api_response *resp, const char *kind,
                             const char *value, const char *domain, const char *comment)
{
    struct error err = {0};
    int64_t id = 0;
    int rc = store_antispoof_bypass_add(req->store, kind, value, domain, comment, &id, &err);
    if (rc < 0) {
        api_store_fail(resp, rc, &err);
        return NULL;
    }
    json_t *after = bypass_find(req->store, id);
    if (after == NULL)
        after = json_pack("{s:I}", "id", (json_int_t)id);
    char target[300];
    xsnprintf(target, sizeof target, "%s:%.200s", kind, value);
    api_audit(req, "antispoof_bypass.create", target, NULL, after);
    return after;
}

void api_antispoof_bypasses_create(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "kind", "value", "domain", "comment", NULL };
    static const char *const required[] = { "kind", "value", NULL };
    const char *kind, *value, *domain, *comment;
    if (api_body_check(req, resp, allowed, required) < 0 ||
        api_opt_string(req, resp, "kind", &kind) < 0 || api_opt_string(req, resp, "value", &value) < 0 ||
        api_opt_string(req, resp, "domain", &domain) < 0 ||
        api_opt_string(req, resp, "comment", &comment) < 0)
        return;
    if (kind == NULL || value == NULL) {
        api_error(resp, 400, "invalid_field", kind == NULL ? "kind" : "value",
                  "%s must be a string", kind == NULL ? "kind" : "value");
        return;
    }
    json_t *after = bypass_create(req, resp, kind, value, domain, comment);
    if (after == NULL)
        return;
    api_reload(req);
    resp->status = 201;
    resp->body = after;
}

void api_antispoof_bypasses_delete(struct api_request *req, struct api_response *resp)
{
    struct error err = {0};
    const char *key = req->params[0];
    char *end = NULL;
    long long id = strtoll(key, &end, 10);
    if (end == key || *end != '\0' || id <= 0) {
        api_error(resp, 400, "invalid_field", "id", "id must be a positive integer");
        return;
    }
    json_t *before = bypass_find(req->store, id);
    int rc = store_antispoof_bypass_remove(req->store, id, &err);
    if (rc < 0) {
        json_decref(before);
        api_store_fail(resp, rc, &err);
        return;
    }
    api_audit(req, "antispoof_bypass.delete", key, before, NULL);
    json_decref(before);
    api_reload(req);
    resp->status = 204;
}

/* --- candidates (on the loop) --- */

struct cand_job {
    const struct api_config *cfg;
    const char *forget;            /* forget this address instead of listing */
    struct policy_antispoof_candidate *c;
    size_t n;
    bool done;
};

static void cand_on_loop(void *arg)
{
    struct cand_job *j = arg;
    if (j->forget != NULL)
        (void)policy_antispoof_candidate_forget(j->cfg->antispoof, j->forget);
    else
        j->n = policy_antispoof_candidates(j->cfg->antispoof, &j->c);
    j->done = true;
}

static json_t *cand_json(const struct policy_antispoof_candidate *c)
{
    json_t *doms = json_array();
    for (size_t i = 0; i < c->n_domains; i++)
        json_array_append_new(doms, json_string(c->domains[i]));
    return json_pack("{s:s, s:o, s:b, s:I, s:o, s:o, s:o}", "address", c->addr, "host",
                     c->host[0] ? json_string(c->host) : json_null(), "host_confirmed",
                     c->host_confirmed, "count", (json_int_t)c->count, "first_seen",
                     api_time_json(c->first_seen), "last_seen", api_time_json(c->last_seen),
                     "domains", doms);
}

/* cand_list - the candidates from the loop; -1 after a 503 */
static int cand_list(struct api_request *req, struct api_response *resp, struct cand_job *j)
{
    memset(j, 0, sizeof *j);
    j->cfg = req->cfg;
    if (req->cfg->antispoof == NULL) {
        j->done = true;
        return 0;
    }
    api_loop_call(req->cfg, cand_on_loop, j);
    if (!j->done) {
        free(j->c);
        api_error(resp, 503, "unavailable", NULL, "moatd is shutting down");
        return -1;
    }
    return 0;
}

void api_antispoof_candidates_list(struct api_request *req, struct api_response *resp)
{
    struct cand_job j;
    if (cand_list(req, resp, &j) < 0)
        return;
    json_t *items = json_array();
    for (size_t i = 0; i < j.n; i++)
        json_array_append_new(items, cand_json(&j.c[i]));
    free(j.c);
    resp->body = json_pack("{s:o, s:n}", "items", items, "next_cursor");
}

void api_antispoof_candidates_bypass(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "by", "domain", "comment", NULL };
    static const char *const required[] = { NULL };
    const char *addr = req->params[0], *by = NULL, *domain = NULL, *comment = NULL;
    if (req->body != NULL &&
        (api_body_check(req, resp, allowed, required) < 0 || api_opt_string(req, resp, "by", &by) < 0 ||
         api_opt_string(req, resp, "domain", &domain) < 0 ||
         api_opt_string(req, resp, "comment", &comment) < 0))
        return;
    if (by == NULL)
        by = "ip";
    if (strcmp(by, "ip") != 0 && strcmp(by, "host") != 0) {
        api_error(resp, 400, "invalid_field", "by", "by must be ip or host");
        return;
    }
    int fam;
    unsigned char bin[16];
    if (cidr_addr_from_text(addr, &fam, bin) < 0) {
        api_error(resp, 400, "invalid_field", "address", "not an IP address: %.100s", addr);
        return;
    }
    struct cand_job j;
    if (cand_list(req, resp, &j) < 0)
        return;
    const struct policy_antispoof_candidate *c = NULL;
    for (size_t i = 0; i < j.n && c == NULL; i++)
        if (strcmp(j.c[i].addr, addr) == 0)
            c = &j.c[i];
    if (c == NULL) {
        free(j.c);
        api_error(resp, 404, "not_found", "address",
                  "%.100s is not an anti-spoofing candidate (see GET /api/v1/antispoof/candidates)",
                  addr);
        return;
    }
    if (strcmp(by, "host") == 0 && !c->host_confirmed) {
        api_error(resp, 409, "conflict", "by",
                  "%.100s has no forward-confirmed host name%s%.200s%s; except it by address "
                  "(by: ip)", addr, c->host[0] ? " (PTR " : "", c->host, c->host[0] ? " does not "
                  "resolve back to it)" : "");
        free(j.c);
        return;
    }
    const char *value = strcmp(by, "host") == 0 ? c->host : c->addr;
    json_t *created = json_array();
    if (domain != NULL || c->n_domains == 0) {
        json_t *b = bypass_create(req, resp, by, value, domain, comment);
        if (b != NULL)
            json_array_append_new(created, b);
    } else {
        for (size_t i = 0; i < c->n_domains; i++) {
            json_t *b = bypass_create(req, resp, by, value, c->domains[i], comment);
            if (b == NULL)
                break;
            json_array_append_new(created, b);
        }
    }
    free(j.c);
    if (json_array_size(created) == 0) {
        json_decref(created);
        return;            /* resp holds the error */
    }
    api_reload(req);
    /* the source is excepted now: it leaves the list */
    struct cand_job f = { .cfg = req->cfg, .forget = addr };
    if (req->cfg->antispoof != NULL)
        api_loop_call(req->cfg, cand_on_loop, &f);
    json_decref(resp->body);       /* an error of a later domain, if any */
    resp->body = json_pack("{s:o}", "items", created);
    resp->status = 201;
}
