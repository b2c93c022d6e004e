/*
 * api_dnsbl.c - /api/v1/dnsbl/zones (issue 7): the DNS blocklists queried
 * for inbound clients, over store_dnsbl.c.
 *
 * Every change is audited (dnsbl_zone.create / dnsbl_zone.delete) and
 * followed by api_reload(): the SMTP loop reads the zones from its
 * snapshot, so a change applies to the next connection.
 */
#include <stdlib.h>
#include <string.h>
#include "api_priv.h"
#include "api_dnsbl.h"

static json_t *zone_json(const struct store_dnsbl_zone *z)
{
    char created[40];
    time_iso8601(created, sizeof created, (time_t)z->created);
    return json_pack("{s:s, s:i, s:s, s:s}", "zone", z->zone, "weight", z->weight,
                     "comment", z->comment, "created", created);
}

/* zone_find - the row of zone (normalised), or NULL */
static json_t *zone_find(struct store *st, const char *zone)
{
    struct store_dnsbl_zone *z;
    size_t n;
    struct error err = {0};
    json_t *r = NULL;
    if (store_dnsbl_zone_list(st, &z, &n, &err) < 0)
        return NULL;
    for (size_t i = 0; i < n && r == NULL; i++)
        if (strcmp(z[i].zone, zone) == 0)
            r = zone_json(&z[i]);
    store_dnsbl_zones_free(z, n);
    return r;
}

void api_dnsbl_zones_list(struct api_request *req, struct api_response *resp)
{
    struct store_dnsbl_zone *z;
    size_t n;
    struct error err = {0};
    if (store_dnsbl_zone_list(req->store, &z, &n, &err) < 0) {
        api_store_fail(resp, STORE_ERR, &err);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(items, zone_json(&z[i]));
    store_dnsbl_zones_free(z, n);
    resp->body = json_pack("{s:o, s:n}", "items", items, "next_cursor");
}

void api_dnsbl_zones_create(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "zone", "weight", "comment", NULL };
    static const char *const required[] = { "zone", NULL };
    struct error err = {0};
    if (api_body_check(req, resp, allowed, required) < 0)
        return;
    json_t *jz = json_object_get(req->body, "zone");
    json_t *jw = json_object_get(req->body, "weight");
    json_t *jc = json_object_get(req->body, "comment");
    if (!json_is_string(jz)) {
        api_error(resp, 400, "invalid_field", "zone", "zone must be a string");
        return;
    }
    json_int_t weight = 1;
    if (jw != NULL && !json_is_null(jw)) {
        if (!json_is_integer(jw)) {
            api_error(resp, 400, "invalid_field", "weight", "weight must be an integer from %d to %d",
                      STORE_DNSBL_WEIGHT_MIN, STORE_DNSBL_WEIGHT_MAX);
            return;
        }
        weight = json_integer_value(jw);
        if (weight < STORE_DNSBL_WEIGHT_MIN || weight > STORE_DNSBL_WEIGHT_MAX) {
            api_error(resp, 400, "invalid_field", "weight", "weight must be an integer from %d to %d",
                      STORE_DNSBL_WEIGHT_MIN, STORE_DNSBL_WEIGHT_MAX);
            return;
        }
    }
    if (jc != NULL && !json_is_null(jc) && !json_is_string(jc)) {
        api_error(resp, 400, "invalid_field", "comment", "comment must be a string");
        return;
    }
    const char *zone = json_string_value(jz);
    int rc = store_dnsbl_zone_add(req->store, zone, (int)weight, jc ? json_string_value(jc) : NULL,
                                  &err);
    if (rc < 0) {
        api_store_fail(resp, rc, &err);
        return;
    }
    char norm[STORE_DNSBL_ZONE_MAX + 2];
    (void)str_copy(norm, sizeof norm, zone);
    (void)store_dnsbl_zone_check(norm);
    json_t *after = zone_find(req->store, norm);
    if (after == NULL)
        after = json_pack("{s:s}", "zone", norm);
    api_audit(req, "dnsbl_zone.create", norm, NULL, after);
    api_reload(req);
    resp->status = 201;
    resp->body = after;
}

void api_dnsbl_zones_delete(struct api_request *req, struct api_response *resp)
{
    struct error err = {0};
    char norm[STORE_DNSBL_ZONE_MAX + 2];
    json_t *before = NULL;
    if (str_copy(norm, sizeof norm, req->params[0]) >= 0 && store_dnsbl_zone_check(norm) == NULL)
        before = zone_find(req->store, norm);
    int rc = store_dnsbl_zone_remove(req->store, req->params[0], &err);
    if (rc < 0) {
        json_decref(before);
        api_store_fail(resp, rc, &err);
        return;
    }
    api_audit(req, "dnsbl_zone.delete", norm, before, NULL);
    json_decref(before);
    api_reload(req);
    resp->status = 204;
}
