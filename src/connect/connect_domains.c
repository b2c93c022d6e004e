/*
 * connect_domains.c - the domains task: "Validate your domains".
 *
 * Adding a domain issues a token (store_domain_add); the check looks for the
 * TXT record "moat-verification=<token>" at each pending domain's apex
 * through the resolver (dns_query, asynchronous on the loop).  Subdomains of
 * a verified domain need no proof.  Outcomes: PASS when at least one domain
 * exists and every domain is verified (trusted-unverified ones pass with a
 * warning); PENDING while a record is not there (yet): never FAIL for a
 * missing record; UNKNOWN when the resolver could not tell.
 *
 * apply records what run found: verified domains, and each domain's last
 * check time and text.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <event2/event.h>
#include "../dns/dns.h"
#include "connect_artefacts.h"
#include "connect_checks.h"

#define TXT_PREFIX "moat-verification="

json_t *connect_domains_prepare(struct store *st, struct error *err)
{
    struct store_domain *d = NULL;
    size_t n = 0;

    if (store_domain_list(st, &d, &n, err) < 0)
        return NULL;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        const char *covered = NULL;
        for (size_t j = 0; j < n && !d[i].verified; j++)
            if (j != i && d[j].verified && connect_domain_covers(d[j].name, d[i].name))
                covered = d[j].name;
        json_array_append_new(arr, json_pack("{s:s, s:s?, s:b, s:b, s:s?}", "name", d[i].name,
                                             "token", d[i].token, "verified", d[i].verified,
                                             "trust_unverified", d[i].trust_unverified,
                                             "covered_by", covered));
    }
    store_domains_free(d, n);
    return json_pack("{s:o}", "domains", arr);
}

struct dom_job {
    connect_done_cb done;
    void *arg;
    json_t *items;     /* per domain: {name, status, message, ...} */
    size_t pending;
};

struct dom_q {
    struct dom_job *job;
    json_t *item;      /* borrowed from job->items */
};

/* txt_trim - the TXT text without surrounding blanks, into dst */
static void txt_trim(char *dst, size_t size, const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    str_copy(dst, size, s);
    size_t n = strlen(dst);
    while (n > 0 && (dst[n - 1] == ' ' || dst[n - 1] == '\t'))
        dst[--n] = '\0';
}

static void dom_finish(struct dom_job *j)
{
    size_t verified = 0, trusted = 0, pending = 0, unknown = 0, total = 0;
    size_t i;
    json_t *it;
    const char *first_pending = NULL, *first_unknown = NULL, *first_trusted = NULL;

    json_array_foreach(j->items, i, it) {
        const char *st = json_string_value(json_object_get(it, "status"));
        const char *name = json_string_value(json_object_get(it, "name"));
        total++;
        if (strcmp(st, "verified") == 0 || strcmp(st, "found") == 0 || strcmp(st, "covered") == 0) {
            verified++;
        } else if (strcmp(st, "trusted_unverified") == 0) {
            trusted++;
            if (!first_trusted)
                first_trusted = name;
        } else if (strcmp(st, "pending") == 0) {
            pending++;
            if (!first_pending)
                first_pending = name;
        } else {
            unknown++;
            if (!first_unknown)
                first_unknown = name;
        }
    }
    json_t *details = json_pack("{s:O}", "domains", j->items);
    json_decref(j->items);
    connect_done_cb done = j->done;
    void *arg = j->arg;
    free(j);
    if (total == 0) {
        connect_finish(done, arg, CONNECT_PENDING, details,
                       "No domain yet: add one with `moat domain add example.com`.");
    } else if (pending > 0) {
        connect_finish(done, arg, CONNECT_PENDING, details,
                       "%zu of %zu domains verified; waiting for the TXT record of %s%s "
                       "(re-checked automatically).", verified, total, first_pending,
                       pending > 1 ? " and others" : "");
    } else if (unknown > 0) {
        connect_finish(done, arg, CONNECT_UNKNOWN, details,
                       "Could not look up the TXT record of %s: the resolver did not answer "
                       "(unknown, not failed).", first_unknown);
    } else if (trusted > 0) {
        connect_finish(done, arg, CONNECT_PASS, details,
                       "%zu domains verified; warning: %zu trusted without verification "
                       "(%s%s, lab override).", verified, trusted, first_trusted,
                       trusted > 1 ? " and others" : "");
    } else {
        connect_finish(done, arg, CONNECT_PASS, details, "All %zu domains verified.", total);
    }
}

static void dom_finish_cb(evutil_socket_t fd, short what, void *arg)
{
    dom_finish(arg);
}

static void dom_answer(void *arg, const struct dns_result *r)
{
    struct dom_q *q = arg;
    struct dom_job *j = q->job;
    json_t *it = q->item;
    const char *name = json_string_value(json_object_get(it, "name"));
    const char *token = json_string_value(json_object_get(it, "token"));
    char expect[128], text[512], msg[512];
    free(q);

    xsnprintf(expect, sizeof expect, TXT_PREFIX "%s", token ? token : "");
    const char *status = "pending";
    json_t *seen = json_array();
    switch (r->status) {
    case DNS_OK: {
        bool found = false;
        for (size_t i = 0; i < r->n; i++) {
            txt_trim(text, sizeof text, r->rr[i].text ? r->rr[i].text : "");
            if (strncasecmp(text, TXT_PREFIX, strlen(TXT_PREFIX)) == 0) {
                json_array_append_new(seen, json_string(text));
                if (strcasecmp(text, expect) == 0)
                    found = true;
            }
        }
        if (found) {
            status = "found";
            xsnprintf(msg, sizeof msg, "TXT record found: %s is verified.", name);
        } else if (json_array_size(seen) > 0) {
            xsnprintf(msg, sizeof msg, "%s has a moat-verification record with another token "
                      "(%s); publish %s.", name, json_string_value(json_array_get(seen, 0)),
                      expect);
        } else {
            xsnprintf(msg, sizeof msg, "No moat-verification TXT record at %s yet.", name);
        }
        break;
    }
    case DNS_NODATA:
        xsnprintf(msg, sizeof msg, "No TXT record at %s yet.", name);
        break;
    case DNS_NXDOMAIN:
        xsnprintf(msg, sizeof msg, "%s does not exist in DNS (NXDOMAIN).", name);
        break;
    case DNS_BOGUS:
        status = "unknown";
        xsnprintf(msg, sizeof msg, "DNSSEC validation failed for %s: %s.", name, r->why);
        break;
    default:
        status = "unknown";
        xsnprintf(msg, sizeof msg, "The resolver could not tell for %s: %s.", name,
                  r->why[0] ? r->why : dns_status_name(r->status));
        break;
    }
    if (json_is_true(json_object_get(it, "trusted")) && strcmp(status, "found") != 0) {
        /* the lab override stands until the record proves the domain */
        status = "trusted_unverified";
        str_copy(msg + strlen(msg), sizeof msg - strlen(msg),
                 " Trusted without verification (lab override).");
    }
    json_object_set_new(it, "status", json_string(status));
    json_object_set_new(it, "message", json_string(msg));
    json_object_set_new(it, "found", seen);
    if (--j->pending == 0)
        dom_finish(j);
}

void connect_domains_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                         void *arg)
{
    struct dom_job *j = xcalloc(1, sizeof *j);
    j->done = done;
    j->arg = arg;
    j->items = json_array();

    size_t i;
    json_t *d;
    json_t *to_query = json_array();
    json_array_foreach(json_object_get(input, "domains"), i, d) {
        const char *name = json_string_value(json_object_get(d, "name"));
        const char *token = json_string_value(json_object_get(d, "token"));
        const char *covered = json_string_value(json_object_get(d, "covered_by"));
        if (name == NULL)
            continue;
        json_t *it = json_pack("{s:s}", "name", name);
        char msg[400];
        if (json_is_true(json_object_get(d, "verified"))) {
            json_object_set_new(it, "status", json_string("verified"));
            json_object_set_new(it, "message", json_string("verified"));
        } else if (covered != NULL) {
            xsnprintf(msg, sizeof msg, "Subdomain of verified %s: no proof needed.", covered);
            json_object_set_new(it, "status", json_string("covered"));
            json_object_set_new(it, "message", json_string(msg));
        } else if (token == NULL) {
            json_object_set_new(it, "status", json_string("pending"));
            json_object_set_new(it, "message",
                                json_string("No verification token: remove and add the domain again."));
        } else {
            json_object_set_new(it, "token", json_string(token));
            char *rec = connect_art_txt_record(name, token);
            json_object_set_new(it, "record", json_string(rec));
            free(rec);
            if (json_is_true(json_object_get(d, "trust_unverified"))) {
                /* still looked up: publishing the record turns the override into proof */
                json_object_set_new(it, "trusted", json_true());
            }
            json_array_append(to_query, it);
        }
        if (json_object_get(it, "status") == NULL)
            json_object_set_new(it, "status", json_string("pending"));
        json_array_append_new(j->items, it);
    }
    j->pending = json_array_size(to_query);
    if (j->pending == 0) {
        /* nothing to look up: summarise on the next loop turn (never inside run) */
        json_decref(to_query);
        struct timeval now = { 0, 0 };
        if (event_base_once(env->base, -1, EV_TIMEOUT, dom_finish_cb, j, &now) != 0)
            log_fatal("event=connect_bug reason=\"event_base_once failed\"");
        return;
    }
    json_array_foreach(to_query, i, d) {
        struct dom_q *q = xcalloc(1, sizeof *q);
        q->job = j;
        q->item = d;   /* the same object as in j->items */
        dns_query(env->dns, json_string_value(json_object_get(d, "name")), DNS_T_TXT,
                  dom_answer, q);
    }
    json_decref(to_query);
}

/* connect_domains_apply - record verified domains and each domain's last check */
int connect_domains_apply(struct store *st, const struct connect_result *r, struct error *err)
{
    int64_t now = (int64_t)time(NULL);
    size_t i;
    json_t *it;
    struct error e2;

    json_array_foreach(json_object_get(r->details, "domains"), i, it) {
        const char *name = json_string_value(json_object_get(it, "name"));
        const char *status = json_string_value(json_object_get(it, "status"));
        const char *msg = json_string_value(json_object_get(it, "message"));
        if (name == NULL || status == NULL || strcmp(status, "verified") == 0)
            continue;
        /* a domain removed while the check ran is no error: skip it */
        if ((strcmp(status, "found") == 0 || strcmp(status, "covered") == 0) &&
            store_domain_set_verified(st, name, true, now, &e2) < 0) {
            if (strstr(e2.msg, "no such domain") != NULL)
                continue;
            *err = e2;
            return -1;
        }
        if (store_domain_set_check(st, name, now, msg, &e2) < 0 &&
            strstr(e2.msg, "no such domain") == NULL) {
            *err = e2;
            return -1;
        }
    }
    return 0;
}

json_t *connect_domains_instructions(struct store *st, struct error *err)
{
    struct store_domain *d = NULL;
    size_t n = 0;

    if (store_domain_list(st, &d, &n, err) < 0)
        return NULL;
    json_t *steps = json_array(), *arts = json_array();
    struct buf b;
    buf_init(&b);
    size_t pending = 0;
    for (size_t i = 0; i < n; i++) {
        bool covered = false;
        for (size_t j = 0; j < n; j++)
            covered |= j != i && d[j].verified && connect_domain_covers(d[j].name, d[i].name);
        if (d[i].verified || covered || d[i].token == NULL)
            continue;
        char *rec = connect_art_txt_record(d[i].name, d[i].token);
        buf_printf(&b, "%s\n", rec);
        free(rec);
        pending++;
    }
    if (n == 0)
        json_array_append_new(steps, json_string(
            "Add each domain you receive mail for: moat domain add example.com "
            "(subdomains of a verified domain need no proof)."));
    if (pending > 0) {
        json_array_append_new(steps, json_string(
            "Publish these TXT records at your DNS provider, at the apex of each domain; Moat "
            "re-checks them automatically (or run: moat domain verify DOMAIN)."));
        json_array_append_new(arts, connect_artefact("dns", "TXT records proving you own the domains",
                                                     buf_cstr(&b)));
    }
    for (size_t i = 0; i < n; i++) {
        if (!d[i].trust_unverified || d[i].verified)
            continue;
        char *s = xasprintf("Warning: %s is trusted without verification (lab override); "
                            "publish its TXT record to verify it.", d[i].name);
        json_array_append_new(steps, json_string(s));
        free(s);
    }
    buf_free(&b);
    store_domains_free(d, n);
    return json_pack("{s:o, s:o}", "steps", steps, "artefacts", arts);
}
