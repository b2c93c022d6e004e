/*
 * connect_mx.c - the mx task: "Modify your MX record".
 *
 * Every internal domain's MX set, resolved live, must point only at Moat's
 * public host names (the organisation task), with at least one record.
 * Outcomes: PASS when every domain does; PENDING ("waiting for the MX
 * change", found versus expected in the details) when one does not; UNKNOWN
 * when the resolver could not tell: a resolver error is never read as
 * "wrong".  apply records since when each domain's MX has pointed only at
 * Moat (mx_only_moat_since, which unlocks the lockdown task after 72 h) and
 * clears it when the MX points elsewhere again; unknown leaves it alone.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <event2/event.h>
#include "../dns/dns.h"
#include "connect_artefacts.h"
#include "connect_checks.h"

json_t *connect_mx_prepare(struct store *st, struct error *err)
{
    struct connect_org org;
    struct store_domain *d = NULL;
    size_t n = 0;

    if (connect_org_load(st, &org, err) < 0 || store_domain_list(st, &d, &n, err) < 0)
        return NULL;
    json_t *domains = json_array(), *expected = json_array();
    for (size_t i = 0; i < n; i++)
        if (store_domain_internal(&d[i]))
            json_array_append_new(domains, json_string(d[i].name));
    for (size_t i = 0; i < org.n_hosts; i++)
        json_array_append_new(expected, json_string(org.hosts[i]));
    store_domains_free(d, n);
    return json_pack("{s:o, s:o}", "domains", domains, "expected", expected);
}

struct mx_job {
    connect_done_cb done;
    void *arg;
    json_t *expected;   /* array of host names */
    json_t *items;
    size_t pending;
};

struct mx_q {
    struct mx_job *job;
    json_t *item;
};

static bool expected_has(json_t *expected, const char *host)
{
    size_t i;
    json_t *v;
    json_array_foreach(expected, i, v)
        if (strcasecmp(json_string_value(v), host) == 0)
            return true;
    return false;
}

static void mx_finish(struct mx_job *j)
{
    size_t ok = 0, wrong = 0, unknown = 0, i;
    json_t *it;
    const char *first_wrong = NULL, *first_unknown = NULL;

    json_array_foreach(j->items, i, it) {
        const char *st = json_string_value(json_object_get(it, "status"));
        const char *name = json_string_value(json_object_get(it, "name"));
        if (strcmp(st, "ok") == 0) {
            ok++;
        } else if (strcmp(st, "wrong") == 0) {
            wrong++;
            if (!first_wrong)
                first_wrong = name;
        } else {
            unknown++;
            if (!first_unknown)
                first_unknown = name;
        }
    }
    size_t total = json_array_size(j->items), n_expected = json_array_size(j->expected);
    json_t *details = json_pack("{s:O, s:O}", "domains", j->items, "expected", j->expected);
    json_decref(j->items);
    json_decref(j->expected);
    connect_done_cb done = j->done;
    void *arg = j->arg;
    free(j);
    if (n_expected == 0)
        connect_finish(done, arg, CONNECT_FAIL, details,
                       "Moat's public host names are not set: fill them in the organisation task.");
    else if (total == 0)
        connect_finish(done, arg, CONNECT_PENDING, details,
                       "No verified domain yet: finish the domains task first.");
    else if (wrong > 0)
        connect_finish(done, arg, CONNECT_PENDING, details,
                       "Waiting for the MX change: %s%s does not point only at Moat yet "
                       "(%zu of %zu domains do).", first_wrong, wrong > 1 ? " and others" : "",
                       ok, total);
    else if (unknown > 0)
        connect_finish(done, arg, CONNECT_UNKNOWN, details,
                       "Could not look up the MX records of %s: the resolver did not answer "
                       "(unknown, not wrong).", first_unknown);
    else
        connect_finish(done, arg, CONNECT_PASS, details,
                       "The MX records of all %zu domains point only at Moat.", total);
}

static void mx_finish_cb(evutil_socket_t fd, short what, void *arg)
{
    mx_finish(arg);
}

static void mx_answer(void *arg, const struct dns_result *r)
{
    struct mx_q *q = arg;
    struct mx_job *j = q->job;
    json_t *it = q->item;
    const char *name = json_string_value(json_object_get(it, "name"));
    char msg[512];
    free(q);

    json_t *found = json_array(), *extra = json_array(), *missing = json_array();
    const char *status;
    if (r->status == DNS_OK || r->status == DNS_NODATA || r->status == DNS_NXDOMAIN) {
        size_t moat = 0;
        for (size_t i = 0; r->status == DNS_OK && i < r->n; i++) {
            const char *h = r->rr[i].text ? r->rr[i].text : "";
            json_array_append_new(found, json_pack("{s:i, s:s}", "preference", r->rr[i].pref,
                                                   "host", h[0] ? h : "."));
            if (h[0] != '\0' && expected_has(j->expected, h))
                moat++;
            else
                json_array_append_new(extra, json_string(h[0] ? h : ". (null MX)"));
        }
        size_t k;
        json_t *e;
        json_array_foreach(j->expected, k, e) {
            bool seen = false;
            for (size_t i = 0; r->status == DNS_OK && i < r->n; i++)
                seen |= r->rr[i].text && strcasecmp(r->rr[i].text, json_string_value(e)) == 0;
            if (!seen)
                json_array_append(missing, e);
        }
        if (moat > 0 && json_array_size(extra) == 0) {
            status = "ok";
            xsnprintf(msg, sizeof msg, "%s: MX points only at Moat.", name);
        } else {
            status = "wrong";
            if (r->status == DNS_NXDOMAIN)
                xsnprintf(msg, sizeof msg, "%s does not exist in DNS (NXDOMAIN).", name);
            else if (json_array_size(found) == 0)
                xsnprintf(msg, sizeof msg, "%s has no MX record yet.", name);
            else if (json_array_size(extra) > 0)
                xsnprintf(msg, sizeof msg, "%s: MX still points at %s; remove every MX record "
                          "that is not Moat's.", name,
                          json_string_value(json_array_get(extra, 0)));
            else
                xsnprintf(msg, sizeof msg, "%s: no MX record points at Moat.", name);
        }
    } else {
        status = "unknown";
        xsnprintf(msg, sizeof msg, "The resolver could not tell for %s: %s.", name,
                  r->why[0] ? r->why : dns_status_name(r->status));
    }
    json_object_set_new(it, "status", json_string(status));
    json_object_set_new(it, "message", json_string(msg));
    json_object_set_new(it, "found", found);
    json_object_set_new(it, "not_moat", extra);
    json_object_set_new(it, "missing", missing);
    if (--j->pending == 0)
        mx_finish(j);
}

void connect_mx_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                    void *arg)
{
    struct mx_job *j = xcalloc(1, sizeof *j);
    j->done = done;
    j->arg = arg;
    j->items = json_array();
    j->expected = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(input, "expected"), i, v)
        if (json_is_string(v))
            json_array_append_new(j->expected, json_string(json_string_value(v)));
    json_array_foreach(json_object_get(input, "domains"), i, v)
        if (json_is_string(v))
            json_array_append_new(j->items, json_pack("{s:s, s:s}", "name", json_string_value(v),
                                                      "status", "unknown"));
    j->pending = json_array_size(j->expected) ? json_array_size(j->items) : 0;
    if (j->pending == 0) {
        struct timeval now = { 0, 0 };
        if (event_base_once(env->base, -1, EV_TIMEOUT, mx_finish_cb, j, &now) != 0)
            log_fatal("event=connect_bug reason=\"event_base_once failed\"");
        return;
    }
    json_array_foreach(j->items, i, v) {
        struct mx_q *q = xcalloc(1, sizeof *q);
        q->job = j;
        q->item = v;
        dns_query(env->dns, json_string_value(json_object_get(v, "name")), DNS_T_MX, mx_answer, q);
    }
}

/* connect_mx_apply - mx_only_moat_since: set when first seen, cleared when wrong */
int connect_mx_apply(struct store *st, const struct connect_result *r, struct error *err)
{
    int64_t now = (int64_t)time(NULL);
    size_t i;
    json_t *it;

    json_array_foreach(json_object_get(r->details, "domains"), i, it) {
        const char *name = json_string_value(json_object_get(it, "name"));
        const char *status = json_string_value(json_object_get(it, "status"));
        struct store_domain d;
        struct error e2;
        if (name == NULL || status == NULL || strcmp(status, "unknown") == 0)
            continue;
        if (store_domain_get(st, name, &d, &e2) < 0) {
            if (strstr(e2.msg, "no such domain") != NULL)
                continue;   /* removed while the check ran */
            *err = e2;
            return -1;
        }
        int64_t since = d.mx_only_moat_since;
        store_domain_clear(&d);
        int64_t want = strcmp(status, "ok") == 0 ? (since ? since : now) : 0;
        if (want != since && store_domain_set_mx_since(st, name, want, &e2) < 0 &&
            strstr(e2.msg, "no such domain") == NULL) {
            *err = e2;
            return -1;
        }
    }
    return 0;
}

json_t *connect_mx_instructions(struct store *st, struct error *err)
{
    struct connect_org org;
    struct store_domain *d = NULL;
    size_t n = 0;

    if (connect_org_load(st, &org, err) < 0 || store_domain_list(st, &d, &n, err) < 0)
        return NULL;
    json_t *steps = json_array(), *arts = json_array();
    if (org.n_hosts == 0) {
        json_array_append_new(steps, json_string(
            "Fill in Moat's public host names in the organisation task first: the MX records "
            "are generated from them."));
    } else {
        struct buf b;
        buf_init(&b);
        size_t count = 0;
        for (size_t i = 0; i < n; i++) {
            if (!store_domain_internal(&d[i]))
                continue;
            char *rec = connect_art_mx_records(d[i].name, &org);
            buf_append_str(&b, rec);
            free(rec);
            count++;
        }
        if (count > 0) {
            json_array_append_new(steps, json_string(
                "At your DNS provider, publish these MX records for each domain and remove all "
                "other MX records: mail must reach only Moat."));
            json_array_append_new(steps, json_string(
                "Moat re-checks the MX records automatically; lockdown unlocks once they have "
                "pointed only at Moat for the configured time (72 hours by default)."));
            json_array_append_new(arts, connect_artefact("dns", "MX records to publish (remove all others)",
                                                         buf_cstr(&b)));
        } else {
            json_array_append_new(steps, json_string("Verify a domain first (domains task)."));
        }
        buf_free(&b);
    }
    store_domains_free(d, n);
    return json_pack("{s:o, s:o}", "steps", steps, "artefacts", arts);
}
