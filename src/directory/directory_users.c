/*
 * directory_users.c - users, aliases and groups added by hand (Connect's
 * users task), and the per-domain recipient validation settings, for the
 * API: create, edit and delete with validation, as JSON.
 *
 * Rules: every address is under an internal domain (verified, or trusted
 * by the lab override); an address resolves to exactly one user or group
 * (the store refuses a second owner: 409 naming the field and the owner);
 * entries synced from the directory are read-only here (they change in the
 * directory); a password is hashed with argon2id (auth.h) and never leaves
 * the store.
 */
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include "../auth/auth.h"
#include "directory_priv.h"

#define DIRECTORY_MAX_ALIASES 1000
#define DIRECTORY_MAX_MEMBERS 100000
#define DIRECTORY_NAME_MAX 256
#define DIRECTORY_PASSWORD_MIN 12      /* the accounts' policy (auth.c) */
#define DIRECTORY_PASSWORD_MAX 1024

static enum store_dir_kind kind_store(enum directory_kind k)
{
    return k == DIRECTORY_GROUP ? STORE_DIR_GROUP : STORE_DIR_USER;
}

static const char *kind_word(enum directory_kind k)
{
    return k == DIRECTORY_GROUP ? "group" : "user";
}

static int from_store(int rc)
{
    switch (rc) {
    case STORE_OK:
        return DIRECTORY_OK;
    case STORE_NOT_FOUND:
        return DIRECTORY_ENOENT;
    case STORE_CONFLICT:
        return DIRECTORY_ECONFLICT;
    default:
        return DIRECTORY_EINTERNAL;
    }
}

/* entry_json - the API's view of an entry (no password hash, no fingerprint) */
static json_t *entry_json(const struct store_dir_entry *e)
{
    json_t *aliases = json_array();
    for (size_t i = 0; i < e->n_aliases; i++)
        json_array_append_new(aliases, json_string(e->aliases[i]));
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:I, s:I}",
                          "address", e->primary, "name", e->name ? e->name : "",
                          "kind", store_dir_kind_name(e->kind),
                          "source", store_dir_source_name(e->source),
                          "state", e->disabled ? "disabled" : "active", "aliases", aliases,
                          "created", (json_int_t)e->created, "updated", (json_int_t)e->updated);
    if (e->kind == STORE_DIR_GROUP) {
        json_t *m = json_array();
        for (size_t i = 0; i < e->n_members; i++)
            json_array_append_new(m, json_string(e->members[i]));
        json_object_set_new(o, "members", m);
    } else {
        json_object_set_new(o, "has_password", json_boolean(e->password_hash != NULL));
    }
    return o;
}

json_t *directory_list_json(struct store *st, enum directory_kind kind, const char *after,
                            size_t limit, struct error *err)
{
    struct store_dir_entry *v = NULL;
    size_t n = 0;
    if (limit == 0)
        limit = 100;
    if (store_dir_list(st, kind_store(kind), after, limit, &v, &n, err) < 0)
        return NULL;
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(items, entry_json(&v[i]));
    json_t *r = json_pack("{s:o, s:o}", "items", items, "next_cursor",
                          n == limit ? json_string(v[n - 1].primary) : json_null());
    store_dir_entries_free(v, n);
    return r;
}

/* fetch - the entry of kind that has address (any of its addresses) */
static int fetch(struct store *st, enum directory_kind kind, const char *address,
                 struct store_dir_entry *e, struct error *err)
{
    char addr[DIRECTORY_ADDR_MAX + 1];
    memset(e, 0, sizeof *e);
    if (directory_address_normalise(address, "address", addr, sizeof addr, err) < 0)
        return DIRECTORY_EINVAL;
    int rc = store_dir_get(st, addr, e, err);
    if (rc < 0)
        return from_store(rc);
    if (e->kind != kind_store(kind)) {
        error_set(err, "address", "%s is a %s, not a %s", addr, store_dir_kind_name(e->kind),
                  kind_word(kind));
        store_dir_entry_clear(e);
        return DIRECTORY_ENOENT;
    }
    return DIRECTORY_OK;
}

int directory_get_json(struct store *st, enum directory_kind kind, const char *address,
                       json_t **out, struct error *err)
{
    struct store_dir_entry e;
    int rc = fetch(st, kind, address, &e, err);
    if (rc < 0)
        return rc;
    *out = entry_json(&e);
    store_dir_entry_clear(&e);
    return DIRECTORY_OK;
}

/* --- input --- */

struct entry_input {
    char address[DIRECTORY_ADDR_MAX + 1];
    bool has_address;
    char *name;
    bool has_name;
    char **aliases;
    size_t n_aliases;
    bool has_aliases;
    char **members;
    size_t n_members;
    bool has_members;
    char hash[AUTH_PASSWORD_HASH_MAX];
    bool has_password;       /* password given: hash holds it, or "" to remove */
    bool clear_password;
    bool disabled;
    bool has_state;
};

static void input_free(struct entry_input *in)
{
    free(in->name);
    for (size_t i = 0; i < in->n_aliases; i++)
        free(in->aliases[i]);
    free(in->aliases);
    for (size_t i = 0; i < in->n_members; i++)
        free(in->members[i]);
    free(in->members);
    sodium_memzero(in->hash, sizeof in->hash);
}

/* address_list - a JSON array of addresses, each normalised (internal: under
 * an internal domain required), without duplicates */
static int address_list(const struct directory_domains *doms, json_t *v, const char *field,
                        size_t max, bool internal, char ***out, size_t *n, struct error *err)
{
    char addr[DIRECTORY_ADDR_MAX + 1];
    if (!json_is_array(v)) {
        error_set(err, field, "%s must be an array of addresses", field);
        return -1;
    }
    if (json_array_size(v) > max) {
        error_set(err, field, "at most %zu %s", max, field);
        return -1;
    }
    *out = xcalloc(json_array_size(v) + 1, sizeof **out);
    *n = 0;
    size_t i;
    json_t *a;
    json_array_foreach(v, i, a) {
        if (!json_is_string(a)) {
            error_set(err, field, "%s must be an array of addresses", field);
            return -1;
        }
        int c = internal ? directory_address_check(doms, json_string_value(a), field, addr,
                                                   sizeof addr, err)
                         : directory_address_normalise(json_string_value(a), field, addr,
                                                       sizeof addr, err);
        if (c < 0)
            return -1;
        bool dup = false;
        for (size_t j = 0; j < *n && !dup; j++)
            dup = strcmp((*out)[j], addr) == 0;
        if (!dup)
            (*out)[(*n)++] = xstrdup(addr);
    }
    return 0;
}

/* parse_input - a create or update body; create: address required */
static int parse_input(struct store *st, enum directory_kind kind, json_t *body, bool create,
                       struct entry_input *in, struct error *err)
{
    static const char *const user_keys[] = { "address", "name", "aliases", "password", "state",
                                             NULL };
    static const char *const group_keys[] = { "address", "name", "aliases", "members", "state",
                                              NULL };
    struct directory_domains doms;
    const char *const *keys = kind == DIRECTORY_GROUP ? group_keys : user_keys;
    const char *key;
    json_t *v;
    int rc = DIRECTORY_EINVAL;

    memset(in, 0, sizeof *in);
    if (!json_is_object(body)) {
        error_set(err, "body", "the body must be a JSON object");
        return DIRECTORY_EINVAL;
    }
    json_object_foreach(body, key, v) {
        bool known = false;
        for (const char *const *k = keys; *k && !known; k++)
            known = strcmp(*k, key) == 0;
        if (!known) {
            error_set(err, key, "unknown member \"%.60s\" for a %s", key, kind_word(kind));
            return DIRECTORY_EINVAL;
        }
    }
    if (directory_domains_load(st, &doms, err) < 0)
        return DIRECTORY_EINTERNAL;
    if ((v = json_object_get(body, "address")) != NULL) {
        if (!json_is_string(v)) {
            error_set(err, "address", "address must be a string");
            goto out;
        }
        if (directory_address_check(&doms, json_string_value(v), "address", in->address,
                                    sizeof in->address, err) < 0)
            goto out;
        in->has_address = true;
    } else if (create) {
        error_set(err, "address", "address is required");
        goto out;
    }
    if ((v = json_object_get(body, "name")) != NULL) {
        if (!json_is_string(v) || json_string_length(v) > DIRECTORY_NAME_MAX ||
            !str_valid_utf8(json_string_value(v), json_string_length(v))) {
            error_set(err, "name", "name must be a string of at most %d characters",
                      DIRECTORY_NAME_MAX);
            goto out;
        }
        for (const char *p = json_string_value(v); *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f) {
                error_set(err, "name", "name must not contain control characters");
                goto out;
            }
        in->name = xstrdup(json_string_value(v));
        in->has_name = true;
    }
    if ((v = json_object_get(body, "aliases")) != NULL) {
        if (address_list(&doms, v, "aliases", DIRECTORY_MAX_ALIASES, true, &in->aliases,
                         &in->n_aliases, err) < 0)
            goto out;
        in->has_aliases = true;
    }
    if ((v = json_object_get(body, "members")) != NULL) {
        if (address_list(&doms, v, "members", DIRECTORY_MAX_MEMBERS, false, &in->members,
                         &in->n_members, err) < 0)
            goto out;
        in->has_members = true;
    }
    if ((v = json_object_get(body, "state")) != NULL) {
        const char *s = json_string_value(v);
        if (s == NULL || (strcmp(s, "active") != 0 && strcmp(s, "disabled") != 0)) {
            error_set(err, "state", "state must be \"active\" or \"disabled\"");
            goto out;
        }
        in->disabled = strcmp(s, "disabled") == 0;
        in->has_state = true;
    }
    if ((v = json_object_get(body, "password")) != NULL) {
        if (json_is_null(v)) {
            in->has_password = true;
            in->clear_password = true;
        } else if (!json_is_string(v) || json_string_length(v) < DIRECTORY_PASSWORD_MIN ||
                   json_string_length(v) > DIRECTORY_PASSWORD_MAX) {
            error_set(err, "password", "password must be %d to %d characters (null removes it)",
                      DIRECTORY_PASSWORD_MIN, DIRECTORY_PASSWORD_MAX);
            goto out;
        } else {
            if (auth_password_hash(json_string_value(v), in->hash, err) < 0) {
                rc = DIRECTORY_EINTERNAL;
                goto out;
            }
            in->has_password = true;
        }
    }
    rc = DIRECTORY_OK;
out:
    directory_domains_free(&doms);
    return rc;
}

/* write_members - a group's members (strict: each must be a user or group) */
static int write_members(struct store *st, int64_t id, const struct entry_input *in,
                         struct error *err)
{
    if (!in->has_members)
        return DIRECTORY_OK;
    return from_store(store_dir_members_set(st, id, in->members, in->n_members, true, NULL, err));
}

int directory_create(struct store *st, enum directory_kind kind, json_t *body, json_t **out,
                     struct error *err)
{
    struct entry_input in;
    memset(err, 0, sizeof *err);
    int rc = parse_input(st, kind, body, true, &in, err);
    if (rc < 0) {
        input_free(&in);
        return rc;
    }
    struct store_dir_entry e = {
        .kind = kind_store(kind),
        .source = STORE_DIR_MANUAL,
        .primary = in.address,
        .name = in.name ? in.name : (char *)"",
        .disabled = in.disabled,
        .password_hash = in.has_password && !in.clear_password ? in.hash : NULL,
        .aliases = in.aliases,
        .n_aliases = in.n_aliases,
    };
    int64_t id = 0;
    if (store_dir_begin(st, true, err) < 0) {
        input_free(&in);
        return DIRECTORY_EINTERNAL;
    }
    rc = from_store(store_dir_insert(st, &e, &id, err));
    if (rc == DIRECTORY_OK)
        rc = write_members(st, id, &in, err);
    if (rc == DIRECTORY_OK && store_dir_commit(st, err) < 0)
        rc = DIRECTORY_EINTERNAL;
    if (rc != DIRECTORY_OK)
        store_dir_rollback(st);
    if (rc == DIRECTORY_OK) {
        log_info("event=directory_created kind=%s address=%s aliases=%zu", kind_word(kind),
                 in.address, in.n_aliases);
        rc = directory_get_json(st, kind, in.address, out, err);
    }
    input_free(&in);
    return rc;
}

int directory_update(struct store *st, enum directory_kind kind, const char *address,
                     json_t *patch, json_t **before, json_t **after, struct error *err)
{
    struct store_dir_entry e;
    struct entry_input in;
    memset(err, 0, sizeof *err);
    int rc = fetch(st, kind, address, &e, err);
    if (rc < 0)
        return rc;
    if (e.source != STORE_DIR_MANUAL) {
        error_set(err, "address", "%s is synchronised from the directory: change it there",
                  e.primary);
        store_dir_entry_clear(&e);
        return DIRECTORY_ECONFLICT;
    }
    rc = parse_input(st, kind, patch, false, &in, err);
    if (rc < 0) {
        input_free(&in);
        store_dir_entry_clear(&e);
        return rc;
    }
    *before = entry_json(&e);
    struct store_dir_entry ne = e;
    if (in.has_address)
        ne.primary = in.address;
    if (in.has_name)
        ne.name = in.name;
    if (in.has_state)
        ne.disabled = in.disabled;
    if (in.has_password)
        ne.password_hash = in.clear_password ? NULL : in.hash;
    if (in.has_aliases) {
        ne.aliases = in.aliases;
        ne.n_aliases = in.n_aliases;
    }
    const char *primary = ne.primary;
    if (store_dir_begin(st, true, err) < 0) {
        rc = DIRECTORY_EINTERNAL;
        goto out;
    }
    rc = from_store(store_dir_update(st, e.id, &ne, err));
    if (rc == DIRECTORY_OK)
        rc = write_members(st, e.id, &in, err);
    if (rc == DIRECTORY_OK && store_dir_commit(st, err) < 0)
        rc = DIRECTORY_EINTERNAL;
    if (rc != DIRECTORY_OK) {
        store_dir_rollback(st);
        goto out;
    }
    log_info("event=directory_updated kind=%s address=%s", kind_word(kind), primary);
    rc = directory_get_json(st, kind, primary, after, err);
out:
    if (rc != DIRECTORY_OK) {
        json_decref(*before);
        *before = NULL;
    }
    input_free(&in);
    store_dir_entry_clear(&e);
    return rc;
}

int directory_delete(struct store *st, enum directory_kind kind, const char *address,
                     json_t **before, struct error *err)
{
    struct store_dir_entry e;
    memset(err, 0, sizeof *err);
    int rc = fetch(st, kind, address, &e, err);
    if (rc < 0)
        return rc;
    if (e.source != STORE_DIR_MANUAL) {
        error_set(err, "address", "%s is synchronised from the directory: remove it there",
                  e.primary);
        store_dir_entry_clear(&e);
        return DIRECTORY_ECONFLICT;
    }
    rc = from_store(store_dir_delete(st, e.id, err));
    if (rc == DIRECTORY_OK) {
        log_info("event=directory_deleted kind=%s address=%s", kind_word(kind), e.primary);
        *before = entry_json(&e);
    }
    store_dir_entry_clear(&e);
    return rc;
}

/* --- recipient validation settings --- */

json_t *directory_rv_list_json(struct store *st, struct error *err)
{
    struct store_domain *doms = NULL;
    struct store_rv_domain *rv = NULL;
    size_t nd = 0, nr = 0;
    if (store_domain_list(st, &doms, &nd, err) < 0)
        return NULL;
    if (store_rv_list(st, &rv, &nr, err) < 0) {
        store_domains_free(doms, nd);
        return NULL;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < nd; i++) {
        const struct store_rv_domain *r = NULL;
        for (size_t j = 0; j < nr && r == NULL; j++)
            if (strcmp(rv[j].domain, doms[i].name) == 0)
                r = &rv[j];
        json_array_append_new(items, json_pack("{s:s, s:s, s:s, s:b, s:b, s:I}",
            "domain", doms[i].name, "mode", r ? r->mode : "accept-all",
            "unreachable", r ? r->unreachable : "tempfail", "set", r != NULL,
            "internal", store_domain_internal(&doms[i]), "updated",
            (json_int_t)(r ? r->updated : 0)));
    }
    store_domains_free(doms, nd);
    store_rv_free(rv, nr);
    return json_pack("{s:o}", "items", items);
}

int directory_rv_set(struct store *st, const char *domain, const char *mode,
                     const char *unreachable, json_t **before, json_t **after,
                     struct error *err)
{
    enum directory_rv_mode m;
    char dom[256];
    memset(err, 0, sizeof *err);
    if (domain == NULL || str_copy(dom, sizeof dom, domain) < 0 || !domain_name_valid(dom)) {
        error_set(err, "domain", "invalid domain name");
        return DIRECTORY_EINVAL;
    }
    str_lower(dom);
    if (directory_rv_mode_parse(mode, &m) < 0) {
        error_set(err, "mode", "mode must be directory, known, call-forward or accept-all");
        return DIRECTORY_EINVAL;
    }
    if (unreachable != NULL && strcmp(unreachable, "tempfail") != 0 &&
        strcmp(unreachable, "accept") != 0) {
        error_set(err, "unreachable", "unreachable must be tempfail (450 4.4.3) or accept");
        return DIRECTORY_EINVAL;
    }
    struct store_domain d;
    int rc = store_domain_get(st, dom, &d, err);
    if (rc < 0) {
        error_set(err, "domain", "no such domain %s", dom);
        return DIRECTORY_ENOENT;
    }
    bool internal = store_domain_internal(&d);
    store_domain_clear(&d);
    if (!internal) {
        error_set(err, "domain", "%s is not validated yet: recipient validation applies to "
                  "internal domains", dom);
        return DIRECTORY_ECONFLICT;
    }
    json_t *list = directory_rv_list_json(st, err);
    if (list == NULL)
        return DIRECTORY_EINTERNAL;
    size_t i;
    json_t *item;
    const char *old_unreach = NULL;
    json_array_foreach(json_object_get(list, "items"), i, item) {
        if (strcmp(json_string_value(json_object_get(item, "domain")), dom) == 0) {
            *before = json_incref(item);
            if (json_is_true(json_object_get(item, "set")))
                old_unreach = json_string_value(json_object_get(item, "unreachable"));
        }
    }
    const char *u = unreachable ? unreachable : old_unreach ? old_unreach : "tempfail";
    char ubuf[16];
    (void)str_copy(ubuf, sizeof ubuf, u);
    json_decref(list);
    rc = store_rv_set(st, dom, directory_rv_mode_name(m), ubuf, err);
    if (rc < 0) {
        json_decref(*before);
        *before = NULL;
        return from_store(rc);
    }
    *after = json_pack("{s:s, s:s, s:s}", "domain", dom, "mode", directory_rv_mode_name(m),
                       "unreachable", ubuf);
    return DIRECTORY_OK;
}
