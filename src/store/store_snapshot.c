/*
 * store_snapshot.c - an immutable in-memory copy of the routing configuration
 * (domains and their primary routes) for the SMTP loop, which never touches
 * the database.  Loaded on another thread with store_snapshot_load, swapped
 * in by the daemon, read without locks, freed when no longer referenced.
 *
 * Lookup: the domains sorted by name (strcmp order of lower-case names);
 * store_snapshot_find tries the domain, then each parent ("a.b.example.com",
 * "b.example.com", "example.com"), with a binary search each: O(labels log n).
 */
#include <stdlib.h>
#include <string.h>
#include "store_priv.h"

struct store_snapshot {
    struct store_domain *domains;   /* sorted by name */
    size_t n;
    struct store_tls_policy *tls;   /* outbound TLS policies, sorted by domain */
    size_t n_tls;
};

static int cmp_domain(const void *a, const void *b)
{
    return strcmp(((const struct store_domain *)a)->name, ((const struct store_domain *)b)->name);
}

static int cmp_tls(const void *a, const void *b)
{
    return strcmp(((const struct store_tls_policy *)a)->domain,
                  ((const struct store_tls_policy *)b)->domain);
}

struct store_snapshot *store_snapshot_load(struct store *st, struct error *err)
{
    struct store_snapshot *snap = xcalloc(1, sizeof *snap);

    if (store_domain_list(st, &snap->domains, &snap->n, err) < 0) {
        free(snap);
        return NULL;
    }
    /* one SELECT is one consistent read; sort here rather than trust the
     * collation of ORDER BY to match strcmp */
    if (snap->n > 1)
        qsort(snap->domains, snap->n, sizeof *snap->domains, cmp_domain);
    if (store_tls_policy_list(st, &snap->tls, &snap->n_tls, err) < 0) {
        store_snapshot_free(snap);
        return NULL;
    }
    if (snap->n_tls > 1)
        qsort(snap->tls, snap->n_tls, sizeof *snap->tls, cmp_tls);
    return snap;
}

void store_snapshot_free(struct store_snapshot *snap)
{
    if (snap == NULL)
        return;
    store_domains_free(snap->domains, snap->n);
    store_tls_policies_free(snap->tls, snap->n_tls);
    free(snap);
}

size_t store_snapshot_count(const struct store_snapshot *snap)
{
    return snap ? snap->n : 0;
}

/* store_snapshot_find - the internal domain (verified or trusted-unverified)
 * covering addr_domain, or NULL.  A pending entry does not hide an internal
 * parent: sub.example.com pending verification is still covered by a
 * verified example.com. */
const struct store_domain *store_snapshot_find(const struct store_snapshot *snap,
                                               const char *addr_domain)
{
    char name[256];

    if (snap == NULL || snap->n == 0 || addr_domain == NULL)
        return NULL;
    size_t len = strnlen(addr_domain, sizeof name);
    if (len >= sizeof name)
        return NULL;
    memcpy(name, addr_domain, len + 1);
    if (len > 0 && name[len - 1] == '.')
        name[--len] = '\0';
    str_lower(name);

    const char *p = name;
    while (*p != '\0') {
        struct store_domain key = { .name = (char *)p };
        const struct store_domain *d =
            bsearch(&key, snap->domains, snap->n, sizeof *snap->domains, cmp_domain);
        if (d != NULL && store_domain_internal(d))
            return d;
        p = strchr(p, '.');
        if (p == NULL)
            break;
        p++;
    }
    return NULL;
}

/* store_snapshot_tls_policy - exact domain first, then each parent domain */
const struct store_tls_policy *store_snapshot_tls_policy(const struct store_snapshot *snap,
                                                         const char *domain)
{
    char name[256];

    if (snap == NULL || snap->n_tls == 0 || domain == NULL)
        return NULL;
    size_t len = strnlen(domain, sizeof name);
    if (len >= sizeof name)
        return NULL;
    memcpy(name, domain, len + 1);
    if (len > 0 && name[len - 1] == '.')
        name[--len] = '\0';
    str_lower(name);
    for (const char *p = name; p != NULL && *p != '\0';) {
        struct store_tls_policy key = { .domain = (char *)p };
        const struct store_tls_policy *t =
            bsearch(&key, snap->tls, snap->n_tls, sizeof *snap->tls, cmp_tls);
        if (t != NULL)
            return t;
        p = strchr(p, '.');
        if (p != NULL)
            p++;
    }
    return NULL;
}
