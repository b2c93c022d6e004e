/*
 * api_journal.c - /api/v1/journal and /api/v1/journal/sources: the journal
 * role (issue 8) over store_journal.c.  The journal address (configured, or
 * journal@journal.<primary domain> by default), the address for
 * undeliverable journal reports, the evidence Connect's journaling check
 * reads (the last report archived), and the journal sources: the address
 * ranges whose mail to the journal address is a journal report.
 *
 * The SMTP loop reads the address and the sources from its snapshot, so
 * every change is audited (journal.update, journal_source.create /
 * .delete) and followed by api_reload().  A source is removed by id or by
 * its range; the CLI looks a range up to its id, so no "/" has to travel
 * inside a path segment (as for outbound hosts).
 */
#include <stdlib.h>
#include <string.h>
#include "../core/cidr.h"
#include "api_priv.h"
#include "api_archive.h"

/* --- the journal address --- */

static json_t *journal_json(const struct store_journal *j)
{
    json_t *ev = json_pack("{s:o, s:s, s:s, s:b, s:s, s:s, s:I, s:I, s:I}",
                           "last_report", api_time_json(j->last_report),
                           "last_report_client", j->last_report_client ? j->last_report_client : "",
                           "last_report_qid", j->last_report_qid ? j->last_report_qid : "",
                           "last_report_unwrapped", j->last_report_unwrapped,
                           "last_report_kind", j->last_report_kind ? j->last_report_kind : "",
                           "last_report_error", j->last_report_error ? j->last_report_error : "",
                           "reports", (json_int_t)j->reports,
                           "unwrapped", (json_int_t)j->unwrapped,
                           "malformed", (json_int_t)j->malformed);
    return json_pack("{s:s, s:b, s:s, s:o}", "address", j->address ? j->address : "",
                     "address_is_default", j->address_is_default, "undeliverable_address",
                     j->undeliverable ? j->undeliverable : "", "evidence", ev);
}

/* journal_read - the current state as JSON; NULL after an answer */
static json_t *journal_read(struct api_request *req, struct api_response *resp)
{
    struct store_journal j;
    struct error err = {0};
    memset(&j, 0, sizeof j);
    int rc = store_journal_get(req->store, &j, &err);
    if (rc < 0) {
        api_store_fail(resp, rc, &err);
        return NULL;
    }
    json_t *r = journal_json(&j);
    store_journal_clear(&j);
    return r;
}

void api_journal_get(struct api_request *req, struct api_response *resp)
{
    json_t *r = journal_read(req, resp);
    if (r != NULL)
        resp->body = r;
}

void api_journal_put(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "address", "undeliverable_address", NULL };
    static const char *const none[] = { NULL };
    const char *address, *undeliverable;
    struct error err = {0};

    if (api_body_check(req, resp, allowed, none) < 0 ||
        api_opt_string(req, resp, "address", &address) < 0 ||
        api_opt_string(req, resp, "undeliverable_address", &undeliverable) < 0)
        return;
    json_t *before = journal_read(req, resp);
    if (before == NULL)
        return;
    /* an absent address keeps the configured one: only "" or null goes back
     * to the default */
    char *keep = NULL;
    if (json_object_get(req->body, "address") == NULL &&
        !json_is_true(json_object_get(before, "address_is_default")))
        keep = xstrdup(json_string_value(json_object_get(before, "address")));
    else if (address == NULL)
        address = "";
    int rc = store_journal_set(req->store, keep ? keep : address, undeliverable, &err);
    free(keep);
    if (strcmp(err.field, "undeliverable") == 0)   /* the body's name for it */
        str_copy(err.field, sizeof err.field, "undeliverable_address");
    if (rc < 0) {
        json_decref(before);
        api_store_fail(resp, rc, &err);
        return;
    }
    json_t *after = journal_read(req, resp);
    if (after == NULL) {
        json_decref(before);
        return;
    }
    json_t *b = json_deep_copy(before), *a = json_deep_copy(after);
    json_object_del(b, "evidence");
    json_object_del(a, "evidence");
    api_audit(req, "journal.update", "journal", b, a);
    json_decref(b);
    json_decref(a);
    json_decref(before);
    api_reload(req);
    resp->body = after;
}

/* --- journal sources --- */

static json_t *source_json(const struct store_journal_source *s)
{
    return json_pack("{s:I, s:s, s:s, s:o}", "id", (json_int_t)s->id, "cidr", s->cidr,
                     "comment", s->comment ? s->comment : "", "created", api_time_json(s->created));
}

/* source_find - the row by id or canonical range; NULL when none */
static json_t *source_find(struct store *st, int64_t id, const char *cidr)
{
    struct store_journal_source *s = NULL;
    size_t n = 0;
    struct error err = {0};
    json_t *r = NULL;
    if (store_journal_source_list(st, &s, &n, &err) < 0)
        return NULL;
    for (size_t i = 0; i < n && r == NULL; i++)
        if ((id > 0 && s[i].id == id) || (cidr != NULL && strcmp(s[i].cidr, cidr) == 0))
            r = source_json(&s[i]);
    store_journal_sources_free(s, n);
    return r;
}

/* canonical - the range's canonical text into out; false when it is not one */
static bool canonical(const char *text, char *out, size_t size)
{
    struct cidr c;
    struct error err = {0};
    return cidr_parse(text, &c, &err) == 0 && cidr_format(&c, out, size) == 0;
}

void api_journal_sources_list(struct api_request *req, struct api_response *resp)
{
    struct store_journal_source *s = NULL;
    size_t n = 0;
    struct error err = {0};
    if (store_journal_source_list(req->store, &s, &n, &err) < 0) {
        api_store_fail(resp, STORE_ERR, &err);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(items, source_json(&s[i]));
    store_journal_sources_free(s, n);
    resp->body = json_pack("{s:o, s:n}", "items", items, "next_cursor");
}

void api_journal_sources_create(struct api_request *req, struct api_response *resp)
{
    static const char *const allowed[] = { "cidr", "comment", NULL };
    static const char *const required[] = { "cidr", NULL };
    const char *cidr, *comment;
    struct error err = {0};

    if (api_body_check(req, resp, allowed, required) < 0 ||
        api_opt_string(req, resp, "cidr", &cidr) < 0 ||
        api_opt_string(req, resp, "comment", &comment) < 0)
        return;
    if (cidr == NULL) {
        api_error(resp, 400, "invalid_field", "cidr", "cidr must be an address or a range");
        return;
    }
    int rc = store_journal_source_add(req->store, cidr, comment ? comment : "", &err);
    if (rc < 0) {
        api_store_fail(resp, rc, &err);
        return;
    }
    char canon[CIDR_TEXT_MAX];
    json_t *after = canonical(cidr, canon, sizeof canon) ? source_find(req->store, 0, canon) : NULL;
    if (after == NULL)
        after = json_pack("{s:s}", "cidr", cidr);
    const char *c = json_string_value(json_object_get(after, "cidr"));
    api_audit(req, "journal_source.create", c ? c : cidr, NULL, after);
    api_reload(req);
    resp->status = 201;
    resp->body = after;
}

void api_journal_sources_delete(struct api_request *req, struct api_response *resp)
{
    struct error err = {0};
    const char *key = req->params[0];
    json_t *before = NULL;
    char *end = NULL;
    long long id = strtoll(key, &end, 10);
    char canon[CIDR_TEXT_MAX];
    if (end != key && *end == '\0' && id > 0)
        before = source_find(req->store, id, NULL);
    else if (canonical(key, canon, sizeof canon))
        before = source_find(req->store, 0, canon);
    int rc = store_journal_source_remove(req->store, key, &err);
    if (rc < 0) {
        json_decref(before);
        api_store_fail(resp, rc, &err);
        return;
    }
    api_audit(req, "journal_source.delete", key, before, NULL);
    json_decref(before);
    api_reload(req);
    resp->status = 204;
}
