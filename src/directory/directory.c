/*
 * directory.c - the directory's core: addresses and internal domains, the
 * transactional replace of directory-sourced entries by a sync
 * (directory_sync_apply, called by the LDAP sync with what the source
 * delivered), and the RCPT-time index (directory_index_load / _lookup).
 *
 * The sync.  Entries are checked first (syntax, internal domains,
 * duplicates, addresses owned by manual users), a fingerprint of what the
 * source said is compared with the stored one to tell created / updated /
 * unchanged, and the entries the source no longer has are removed -- unless
 * that is more than max_remove_share of the directory users and the caller
 * did not confirm (a half-read directory must not wipe the users).  The
 * changes happen in one transaction: addresses of changed and removed
 * entries are freed first, so an address may move from one entry to
 * another within one sync.  Manual entries are never touched.
 *
 * The index.  An immutable open-addressing table of every address (lower
 * case) with its owner's kind, source and state, plus each domain's
 * validation mode, built off the loop and swapped in by moatd like the
 * routing snapshot.  A lookup is one hash and (at load factor <= 1/2) a
 * probe or two; the hash is seeded per index, so a sender cannot aim at one
 * long probe run.
 */
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include "directory_priv.h"

/* --- addresses and domains --- */

/* local_char - RFC 5322 3.2.3 atext, plus "." between atoms */
static bool local_char(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~.", c) != NULL;
}

int directory_address_normalise(const char *in, const char *field, char *out, size_t size,
                                struct error *err)
{
    size_t len = in != NULL ? strnlen(in, DIRECTORY_ADDR_MAX + 2) : 0;
    if (len == 0) {
        error_set(err, field, "an address is required");
        return -1;
    }
    if (len > 254 || len >= size) {
        error_set(err, field, "the address %.80s... is longer than 254 characters", in);
        return -1;
    }
    const char *at = strrchr(in, '@');
    if (at == NULL || at == in || at[1] == '\0') {
        error_set(err, field, "\"%.200s\" is not an address: write local@domain", in);
        return -1;
    }
    size_t local = (size_t)(at - in);
    if (local > 64) {
        error_set(err, field, "the local part of %.200s is longer than 64 characters", in);
        return -1;
    }
    for (size_t i = 0; i < local; i++) {
        unsigned char c = (unsigned char)in[i];
        if (!local_char(c)) {
            error_set(err, field, "\"%.200s\" is not an address: the local part may hold letters, "
                      "digits, dots and !#$%%&'*+-/=?^_`{|}~", in);
            for (char *p = err->msg; *p; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                    *p = '?';
            return -1;
        }
        if (c == '.' && (i == 0 || i + 1 == local || in[i + 1] == '.')) {
            error_set(err, field, "\"%.200s\" is not an address: a dot may not start or end the "
                      "local part or follow another", in);
            return -1;
        }
    }
    memcpy(out, in, len);
    out[len] = '\0';
    str_lower(out);
    if (!domain_name_valid(out + local + 1)) {
        error_set(err, field, "\"%.200s\" is not an address: %.200s is not a domain name", in,
                  at + 1);
        for (char *p = err->msg; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = '?';
        return -1;
    }
    return 0;
}

int directory_domains_load(struct store *st, struct directory_domains *d, struct error *err)
{
    struct store_domain *doms = NULL;
    size_t n = 0;
    memset(d, 0, sizeof *d);
    if (store_domain_list(st, &doms, &n, err) < 0)
        return -1;
    d->names = xcalloc(n + 1, sizeof *d->names);
    for (size_t i = 0; i < n; i++)
        if (store_domain_internal(&doms[i]))
            d->names[d->n++] = xstrdup(doms[i].name);
    store_domains_free(doms, n);
    return 0;
}

void directory_domains_free(struct directory_domains *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->names[i]);
    free(d->names);
    memset(d, 0, sizeof *d);
}

bool directory_domain_internal(const struct directory_domains *d, const char *addr_domain)
{
    size_t len = strlen(addr_domain);
    for (size_t i = 0; i < d->n; i++) {
        size_t l = strlen(d->names[i]);
        if (l == len && strcmp(d->names[i], addr_domain) == 0)
            return true;
        /* subdomains of an internal domain are internal (DESIGN.md 1) */
        if (len > l + 1 && addr_domain[len - l - 1] == '.' &&
            strcmp(addr_domain + len - l, d->names[i]) == 0)
            return true;
    }
    return false;
}

int directory_address_check(const struct directory_domains *d, const char *in, const char *field,
                            char *out, size_t size, struct error *err)
{
    if (directory_address_normalise(in, field, out, size, err) < 0)
        return -1;
    const char *dom = strrchr(out, '@') + 1;
    if (!directory_domain_internal(d, dom)) {
        error_set(err, field, "%s is not under an internal domain: add and validate %s first", out,
                  dom);
        return -2;
    }
    return 0;
}

/* --- hashing and the string map --- */

/* directory_hash - FNV-1a 64 over len octets, mixed with seed and finalised
 * (splitmix64) so nearby keys spread over the table */
uint64_t directory_hash(uint64_t seed, const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ seed;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}

static size_t table_size(size_t expect)
{
    size_t cap = 16;
    while (cap < expect * 2 + 1)
        cap *= 2;
    return cap;
}

void strmap_init(struct strmap *m, size_t expect)
{
    size_t cap = table_size(expect);
    m->keys = xcalloc(cap, sizeof *m->keys);
    m->vals = xcalloc(cap, sizeof *m->vals);
    m->mask = cap - 1;
    m->n = 0;
}

void strmap_free(struct strmap *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static void strmap_grow(struct strmap *m)
{
    struct strmap g;
    strmap_init(&g, (m->mask + 1));
    for (size_t i = 0; i <= m->mask; i++)
        if (m->keys[i] != NULL)
            (void)strmap_put(&g, m->keys[i], m->vals[i], NULL);
    strmap_free(m);
    *m = g;
}

bool strmap_put(struct strmap *m, const char *key, size_t val, size_t *old)
{
    if ((m->n + 1) * 2 > m->mask + 1)
        strmap_grow(m);
    size_t i = (size_t)directory_hash(0, key, strlen(key)) & m->mask;
    while (m->keys[i] != NULL) {
        if (strcmp(m->keys[i], key) == 0) {
            if (old != NULL)
                *old = m->vals[i];
            return false;
        }
        i = (i + 1) & m->mask;
    }
    m->keys[i] = key;
    m->vals[i] = val;
    m->n++;
    return true;
}

bool strmap_get(const struct strmap *m, const char *key, size_t *val)
{
    if (m->keys == NULL)
        return false;
    size_t i = (size_t)directory_hash(0, key, strlen(key)) & m->mask;
    while (m->keys[i] != NULL) {
        if (strcmp(m->keys[i], key) == 0) {
            if (val != NULL)
                *val = m->vals[i];
            return true;
        }
        i = (i + 1) & m->mask;
    }
    return false;
}

/* --- entries --- */

void directory_entry_clear(struct directory_entry *e)
{
    if (e == NULL)
        return;
    free(e->external_id);
    free(e->primary);
    free(e->name);
    for (size_t i = 0; i < e->n_aliases; i++)
        free(e->aliases[i]);
    free(e->aliases);
    for (size_t i = 0; i < e->n_members; i++)
        free(e->members[i]);
    free(e->members);
    memset(e, 0, sizeof *e);
}

/* --- the sync --- */

enum sync_fate { FATE_SKIP = 0, FATE_CREATE, FATE_UPDATE, FATE_SAME };

struct sync_item {
    const struct directory_entry *src;
    enum sync_fate fate;
    char *primary;             /* normalised */
    char **aliases;            /* normalised, kept */
    size_t n_aliases;
    char fp[33];
    size_t ref;                /* index into refs when it exists */
    int64_t id;
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* fingerprint - BLAKE2b-128 of everything the sync stores for an entry, in
 * a canonical order (sorted aliases and members), as hex */
static void fingerprint(const struct directory_entry *e, const char *primary, char **aliases,
                        size_t n_aliases, char out[33])
{
    crypto_generichash_state h;
    unsigned char d[16];
    char **m = NULL;
    crypto_generichash_init(&h, NULL, 0, sizeof d);
    const char *kind = e->kind == DIRECTORY_GROUP ? "group" : "user";
    crypto_generichash_update(&h, (const unsigned char *)kind, strlen(kind) + 1);
    crypto_generichash_update(&h, (const unsigned char *)primary, strlen(primary) + 1);
    const char *name = e->name ? e->name : "";
    crypto_generichash_update(&h, (const unsigned char *)name, strlen(name) + 1);
    qsort(aliases, n_aliases, sizeof *aliases, cmp_str);
    for (size_t i = 0; i < n_aliases; i++)
        crypto_generichash_update(&h, (const unsigned char *)aliases[i], strlen(aliases[i]) + 1);
    crypto_generichash_update(&h, (const unsigned char *)"|", 2);
    if (e->n_members > 0) {
        m = xcalloc(e->n_members, sizeof *m);
        for (size_t i = 0; i < e->n_members; i++)
            m[i] = e->members[i] ? e->members[i] : (char *)"";
        qsort(m, e->n_members, sizeof *m, cmp_str);
        for (size_t i = 0; i < e->n_members; i++)
            crypto_generichash_update(&h, (const unsigned char *)m[i], strlen(m[i]) + 1);
        free(m);
    }
    crypto_generichash_final(&h, d, sizeof d);
    sodium_bin2hex(out, 33, d, sizeof d);
}

static void report_add(json_t *report, const char *address, const char *reason)
{
    json_array_append_new(report, json_pack("{s:s, s:s}", "address", address ? address : "",
                                            "reason", reason));
}

static void items_free(struct sync_item *it, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(it[i].primary);
        for (size_t j = 0; j < it[i].n_aliases; j++)
            free(it[i].aliases[j]);
        free(it[i].aliases);
    }
    free(it);
}

/* sync_check - decide each entry's fate; fills counts and report */
static int sync_check(struct store *st, const struct directory_domains *doms,
                      const struct directory_entry *entries, size_t n, struct sync_item *it,
                      const struct store_dir_ref *refs, const struct strmap *by_ext,
                      struct strmap *taken, struct strmap *ext_seen,
                      struct directory_sync_counts *out, json_t *report, struct error *err)
{
    char addr[DIRECTORY_ADDR_MAX + 1];
    struct error e2;
    for (size_t i = 0; i < n; i++) {
        const struct directory_entry *e = &entries[i];
        struct sync_item *x = &it[i];
        x->src = e;
        x->fate = FATE_SKIP;
        if (e->external_id == NULL || e->external_id[0] == '\0') {
            out->errors++;
            report_add(report, e->primary, "the entry has no stable id (external_id)");
            continue;
        }
        int c = directory_address_check(doms, e->primary, "address", addr, sizeof addr, &e2);
        if (c == -2) {
            out->skipped_unvalidated++;
            report_add(report, addr, e2.msg);
            continue;
        }
        if (c < 0) {
            out->errors++;
            report_add(report, e->primary, e2.msg);
            continue;
        }
        if (!strmap_put(ext_seen, e->external_id, i, NULL)) {
            out->errors++;
            report_add(report, addr, "another entry of the source has the same external id");
            continue;
        }
        x->primary = xstrdup(addr);
        if (strmap_get(taken, x->primary, NULL)) {
            out->errors++;
            report_add(report, addr, "another entry of the source has this address");
            free(x->primary);
            x->primary = NULL;
            continue;
        }
        int64_t owner;
        enum store_dir_source src;
        int o = store_dir_owner(st, x->primary, &owner, &src, &e2);
        if (o == STORE_ERR) {
            *err = e2;
            return -1;
        }
        if (o == STORE_OK && src == STORE_DIR_MANUAL) {
            out->errors++;
            report_add(report, addr, "a manual user or group has this address: remove it there "
                       "first");
            free(x->primary);
            x->primary = NULL;
            continue;
        }
        (void)strmap_put(taken, x->primary, i, NULL);
        x->aliases = xcalloc(e->n_aliases + 1, sizeof *x->aliases);
        for (size_t j = 0; j < e->n_aliases; j++) {
            c = directory_address_check(doms, e->aliases[j], "aliases", addr, sizeof addr, &e2);
            if (c == -2) {
                out->skipped_unvalidated++;
                report_add(report, addr, e2.msg);
                continue;
            }
            if (c < 0) {
                out->errors++;
                report_add(report, e->aliases[j], e2.msg);
                continue;
            }
            size_t who;
            if (strmap_get(taken, addr, &who)) {
                if (who != i) {
                    out->errors++;
                    report_add(report, addr, "another entry of the source has this address");
                }
                continue;   /* its own primary or an alias given twice: once is enough */
            }
            o = store_dir_owner(st, addr, &owner, &src, &e2);
            if (o == STORE_ERR) {
                *err = e2;
                return -1;
            }
            if (o == STORE_OK && src == STORE_DIR_MANUAL) {
                out->errors++;
                report_add(report, addr, "a manual user or group has this address: remove it "
                           "there first");
                continue;
            }
            x->aliases[x->n_aliases] = xstrdup(addr);
            (void)strmap_put(taken, x->aliases[x->n_aliases], i, NULL);
            x->n_aliases++;
        }
        fingerprint(e, x->primary, x->aliases, x->n_aliases, x->fp);
        size_t r;
        if (strmap_get(by_ext, e->external_id, &r)) {
            x->ref = r;
            x->id = refs[r].id;
            bool same = refs[r].fingerprint != NULL && strcmp(refs[r].fingerprint, x->fp) == 0 &&
                        refs[r].kind == (e->kind == DIRECTORY_GROUP ? STORE_DIR_GROUP
                                                                    : STORE_DIR_USER);
            x->fate = same ? FATE_SAME : FATE_UPDATE;
            if (same)
                out->unchanged++;
            else
                out->updated++;
        } else {
            x->fate = FATE_CREATE;
            out->created++;
        }
    }
    return 0;
}

/* sync_write - apply the decided fates inside the open transaction */
static int sync_write(struct store *st, struct sync_item *it, size_t n,
                      const struct store_dir_ref *refs, size_t n_refs, const bool *kept,
                      const struct strmap *ext_seen, struct error *err)
{
    /* free the addresses of whatever changes or goes, so they can move */
    for (size_t r = 0; r < n_refs; r++)
        if (!kept[r] && store_dir_delete(st, refs[r].id, err) < 0)
            return -1;
    for (size_t i = 0; i < n; i++)
        if (it[i].fate == FATE_UPDATE && store_dir_addresses_clear(st, it[i].id, err) < 0)
            return -1;
    for (size_t i = 0; i < n; i++) {
        struct sync_item *x = &it[i];
        if (x->fate != FATE_CREATE && x->fate != FATE_UPDATE)
            continue;
        struct store_dir_entry e = {
            .kind = x->src->kind == DIRECTORY_GROUP ? STORE_DIR_GROUP : STORE_DIR_USER,
            .source = STORE_DIR_DIRECTORY,
            .external_id = x->src->external_id,
            .primary = x->primary,
            .name = x->src->name ? x->src->name : (char *)"",
            .fingerprint = x->fp,
            .aliases = x->aliases,
            .n_aliases = x->n_aliases,
        };
        int rc = x->fate == FATE_CREATE ? store_dir_insert(st, &e, &x->id, err)
                                        : store_dir_update(st, x->id, &e, err);
        if (rc < 0)
            return -1;
    }
    /* members: by external id (or by address) of entries kept in this sync;
     * every group is re-resolved, since its members may have come or gone */
    for (size_t i = 0; i < n; i++) {
        struct sync_item *x = &it[i];
        if (x->fate == FATE_SKIP || x->src->kind != DIRECTORY_GROUP)
            continue;
        char **addrs = xcalloc(x->src->n_members + 1, sizeof *addrs);
        size_t na = 0;
        for (size_t j = 0; j < x->src->n_members; j++) {
            const char *m = x->src->members[j];
            size_t k;
            if (m == NULL)
                continue;
            if (strmap_get(ext_seen, m, &k) && it[k].fate != FATE_SKIP)
                addrs[na++] = it[k].primary;
            else if (strchr(m, '@') != NULL)
                addrs[na++] = (char *)m;
        }
        char **low = xcalloc(na + 1, sizeof *low);
        for (size_t j = 0; j < na; j++)
            low[j] = str_lower(xstrdup(addrs[j]));
        int rc = store_dir_members_set(st, x->id, low, na, false, NULL, err);
        for (size_t j = 0; j < na; j++)
            free(low[j]);
        free(low);
        free(addrs);
        if (rc < 0)
            return -1;
    }
    return 0;
}

int directory_sync_apply(struct store *st, const struct directory_entry *entries, size_t n,
                         bool dry_run, double max_remove_share, bool confirm,
                         struct directory_sync_counts *out, json_t **report, struct error *err)
{
    struct directory_domains doms;
    struct store_dir_ref *refs = NULL;
    size_t n_refs = 0;
    struct strmap by_ext, taken, ext_seen;
    struct sync_item *it = NULL;
    bool *kept = NULL;
    int rc = -1;

    memset(out, 0, sizeof *out);
    memset(err, 0, sizeof *err);
    *report = json_array();
    if (max_remove_share < 0 || max_remove_share > 1) {
        error_set(err, "max_remove_share", "the share of users a sync may remove must be "
                  "between 0 and 1");
        return -1;
    }
    if (directory_domains_load(st, &doms, err) < 0)
        return -1;
    memset(&by_ext, 0, sizeof by_ext);
    strmap_init(&taken, n * 2);
    strmap_init(&ext_seen, n);
    if (store_dir_begin(st, !dry_run, err) < 0)
        goto out;
    if (store_dir_refs(st, &refs, &n_refs, err) < 0)
        goto fail;
    strmap_init(&by_ext, n_refs);
    for (size_t r = 0; r < n_refs; r++)
        (void)strmap_put(&by_ext, refs[r].external_id, r, NULL);
    it = xcalloc(n + 1, sizeof *it);
    if (sync_check(st, &doms, entries, n, it, refs, &by_ext, &taken, &ext_seen, out, *report,
                   err) < 0)
        goto fail;
    kept = xcalloc(n_refs + 1, sizeof *kept);
    for (size_t i = 0; i < n; i++)
        if (it[i].fate == FATE_UPDATE || it[i].fate == FATE_SAME)
            kept[it[i].ref] = true;
    size_t users = 0, users_removed = 0;
    for (size_t r = 0; r < n_refs; r++) {
        if (refs[r].kind == STORE_DIR_USER)
            users++;
        if (!kept[r]) {
            out->removed++;
            if (refs[r].kind == STORE_DIR_USER)
                users_removed++;
        }
    }
    /* the safety stop: a source that answered with a fraction of itself (a
     * wrong base DN, a size limit) must not remove the users it left out */
    if (users > 0 && (double)users_removed > max_remove_share * (double)users && !confirm) {
        error_set(err, "confirm", "the sync would remove %zu of %zu directory users (more than "
                  "%.0f %%); nothing was changed: check the source, or confirm the removal",
                  users_removed, users, max_remove_share * 100.0);
        goto fail;
    }
    if (dry_run) {
        store_dir_rollback(st);
        rc = 0;
        goto out;
    }
    if (sync_write(st, it, n, refs, n_refs, kept, &ext_seen, err) < 0 ||
        store_dir_synced_set(st, (int64_t)(time_wall_ms() / 1000), err) < 0)
        goto fail;
    if (store_dir_commit(st, err) < 0)
        goto out;
    log_info("event=directory_sync_applied created=%zu updated=%zu removed=%zu unchanged=%zu "
             "skipped_unvalidated=%zu errors=%zu", out->created, out->updated, out->removed,
             out->unchanged, out->skipped_unvalidated, out->errors);
    rc = 0;
    goto out;
fail:
    store_dir_rollback(st);
out:
    strmap_free(&by_ext);
    strmap_free(&taken);
    strmap_free(&ext_seen);
    items_free(it, it ? n : 0);
    free(kept);
    store_dir_refs_free(refs, n_refs);
    directory_domains_free(&doms);
    return rc;
}

/* --- the RCPT index --- */

#define IX_USED      0x1
#define IX_DIRECTORY 0x2    /* synced from the directory (else manual) */
#define IX_DISABLED  0x4

struct ix_slot {
    uint64_t hash;
    uint32_t off;           /* into strings */
    uint32_t flags;
};

struct ix_domain {
    char *name;
    enum directory_rv_mode mode;
    enum directory_rv_unreachable unreachable;
};

struct directory_index {
    uint64_t seed;
    struct ix_slot *slots;
    size_t mask;
    size_t count;
    struct buf strings;
    struct ix_domain *domains;   /* sorted by name */
    size_t n_domains;
    bool synced;                 /* a directory sync was applied at least once */
    int64_t generation;          /* store_dir_generation when loaded */
};

struct ix_build {
    struct directory_index *ix;
    size_t cap_hint;
};

static void ix_insert(struct directory_index *ix, const char *addr, uint32_t flags)
{
    size_t len = strlen(addr);
    uint64_t h = directory_hash(ix->seed, addr, len);
    size_t i = (size_t)h & ix->mask;
    while (ix->slots[i].flags & IX_USED) {
        if (ix->slots[i].hash == h && strcmp(ix->strings.data + ix->slots[i].off, addr) == 0)
            return;   /* the store's primary key makes this impossible */
        i = (i + 1) & ix->mask;
    }
    ix->slots[i].hash = h;
    ix->slots[i].off = (uint32_t)ix->strings.len;
    ix->slots[i].flags = flags | IX_USED;
    buf_append(&ix->strings, addr, len + 1);
    ix->count++;
}

static void ix_grow(struct directory_index *ix)
{
    struct ix_slot *old = ix->slots;
    size_t old_cap = ix->mask + 1;
    size_t cap = old_cap * 2;
    ix->slots = xcalloc(cap, sizeof *ix->slots);
    ix->mask = cap - 1;
    for (size_t i = 0; i < old_cap; i++) {
        if (!(old[i].flags & IX_USED))
            continue;
        size_t j = (size_t)old[i].hash & ix->mask;
        while (ix->slots[j].flags & IX_USED)
            j = (j + 1) & ix->mask;
        ix->slots[j] = old[i];
    }
    free(old);
}

static int ix_add_cb(void *arg, const char *address, enum store_dir_kind kind,
                     enum store_dir_source source, bool disabled)
{
    struct directory_index *ix = arg;
    if (ix->strings.len + strlen(address) + 1 > UINT32_MAX)
        return -1;
    if ((ix->count + 1) * 2 > ix->mask + 1)
        ix_grow(ix);
    ix_insert(ix, address, (source == STORE_DIR_DIRECTORY ? IX_DIRECTORY : 0) |
                           (disabled ? IX_DISABLED : 0));
    (void)kind;
    return 0;
}

static int cmp_domain(const void *a, const void *b)
{
    return strcmp(((const struct ix_domain *)a)->name, ((const struct ix_domain *)b)->name);
}

struct directory_index *directory_index_load(struct store *st, struct error *err)
{
    struct directory_index *ix = xcalloc(1, sizeof *ix);
    struct store_rv_domain *rv = NULL;
    size_t n_rv = 0;
    int64_t synced = 0;

    randombytes_buf(&ix->seed, sizeof ix->seed);
    buf_init(&ix->strings);
    ix->slots = xcalloc(1024, sizeof *ix->slots);
    ix->mask = 1023;
    /* one read transaction: addresses, settings and status agree */
    if (store_dir_begin(st, false, err) < 0)
        goto fail;
    if (store_dir_generation(st, &ix->generation, err) < 0 ||
        store_dir_addresses_each(st, ix_add_cb, ix, err) < 0 ||
        store_rv_list(st, &rv, &n_rv, err) < 0 || store_dir_synced_get(st, &synced, err) < 0) {
        store_dir_rollback(st);
        goto fail;
    }
    store_dir_rollback(st);   /* read only: nothing to commit */
    ix->synced = synced > 0;
    ix->domains = xcalloc(n_rv + 1, sizeof *ix->domains);
    for (size_t i = 0; i < n_rv; i++) {
        struct ix_domain *d = &ix->domains[ix->n_domains];
        if (directory_rv_mode_parse(rv[i].mode, &d->mode) < 0)
            continue;
        d->name = xstrdup(rv[i].domain);
        d->unreachable = rv[i].unreachable != NULL && strcmp(rv[i].unreachable, "accept") == 0
                             ? DIRECTORY_RV_ACCEPT : DIRECTORY_RV_TEMPFAIL;
        ix->n_domains++;
    }
    qsort(ix->domains, ix->n_domains, sizeof *ix->domains, cmp_domain);
    store_rv_free(rv, n_rv);
    log_info("event=directory_index_loaded addresses=%zu domains=%zu synced=%s", ix->count,
             ix->n_domains, ix->synced ? "yes" : "never");
    return ix;
fail:
    store_rv_free(rv, n_rv);
    directory_index_free(ix);
    return NULL;
}

bool directory_index_stale(const struct directory_index *ix, struct store *st)
{
    int64_t gen;
    struct error err;
    if (ix == NULL)
        return true;
    if (store_dir_generation(st, &gen, &err) < 0)
        return false;    /* keep the index we have; the next poll tries again */
    return gen != ix->generation;
}

void directory_index_free(struct directory_index *ix)
{
    if (ix == NULL)
        return;
    free(ix->slots);
    buf_free(&ix->strings);
    for (size_t i = 0; i < ix->n_domains; i++)
        free(ix->domains[i].name);
    free(ix->domains);
    free(ix);
}

/* ix_domain_find - the setting of domain, else of its closest parent */
static const struct ix_domain *ix_domain_find(const struct directory_index *ix, const char *domain)
{
    for (const char *d = domain; d != NULL && *d != '\0';) {
        struct ix_domain key = { .name = (char *)d };
        const struct ix_domain *f = bsearch(&key, ix->domains, ix->n_domains,
                                            sizeof *ix->domains, cmp_domain);
        if (f != NULL)
            return f;
        d = strchr(d, '.');
        if (d != NULL)
            d++;
    }
    return NULL;
}

enum directory_lookup directory_index_lookup(const struct directory_index *ix, const char *addr,
                                             enum directory_rv_mode *mode,
                                             enum directory_rv_unreachable *unreachable)
{
    char low[DIRECTORY_ADDR_MAX + 1];
    *mode = DIRECTORY_RV_ACCEPT_ALL;
    *unreachable = DIRECTORY_RV_TEMPFAIL;
    size_t len = addr != NULL ? strnlen(addr, sizeof low) : 0;
    if (ix == NULL || len == 0 || len >= sizeof low)
        return DIRECTORY_NOT_VALIDATED;
    memcpy(low, addr, len + 1);
    str_lower(low);
    const char *at = strrchr(low, '@');
    if (at == NULL)
        return DIRECTORY_NOT_VALIDATED;
    const struct ix_domain *d = ix_domain_find(ix, at + 1);
    if (d == NULL)
        return DIRECTORY_NOT_VALIDATED;
    *mode = d->mode;
    *unreachable = d->unreachable;
    switch (d->mode) {
    case DIRECTORY_RV_ACCEPT_ALL:
        return DIRECTORY_NOT_VALIDATED;
    case DIRECTORY_RV_CALL_FORWARD:
        return DIRECTORY_CALL_FORWARD;
    case DIRECTORY_RV_DIRECTORY:
        if (!ix->synced)
            return DIRECTORY_UNAVAILABLE;
        break;
    case DIRECTORY_RV_KNOWN:
        break;
    }
    uint64_t h = directory_hash(ix->seed, low, len);
    for (size_t i = (size_t)h & ix->mask; ix->slots[i].flags & IX_USED; i = (i + 1) & ix->mask) {
        const struct ix_slot *s = &ix->slots[i];
        if (s->hash != h || strcmp(ix->strings.data + s->off, low) != 0)
            continue;
        if (s->flags & IX_DISABLED)
            return DIRECTORY_NOT_FOUND;
        if (d->mode == DIRECTORY_RV_DIRECTORY && !(s->flags & IX_DIRECTORY))
            return DIRECTORY_NOT_FOUND;
        return DIRECTORY_FOUND;
    }
    return DIRECTORY_NOT_FOUND;
}

/* --- validation mode names --- */

static const char *const rv_mode_names[] = {
    [DIRECTORY_RV_DIRECTORY] = "directory",
    [DIRECTORY_RV_KNOWN] = "known",
    [DIRECTORY_RV_CALL_FORWARD] = "call-forward",
    [DIRECTORY_RV_ACCEPT_ALL] = "accept-all",
};

const char *directory_rv_mode_name(enum directory_rv_mode m)
{
    return (unsigned)m <= DIRECTORY_RV_ACCEPT_ALL ? rv_mode_names[m] : "unknown";
}

int directory_rv_mode_parse(const char *s, enum directory_rv_mode *out)
{
    for (size_t i = 0; s != NULL && i < sizeof rv_mode_names / sizeof rv_mode_names[0]; i++) {
        if (strcmp(s, rv_mode_names[i]) == 0) {
            *out = (enum directory_rv_mode)i;
            return 0;
        }
    }
    return -1;
}
