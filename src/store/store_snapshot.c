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
};

static int cmp_domain(const void *a, const void *b)
{
    return strcmp(((const struct store_domain *)a)->name, ((const struct store_domain *)b)->name);
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
    return snap;
}

void store_snapshot_free(struct store_snapshot *snap)
{
    if (snap == NULL)
        return;
    store_domains_free(snap->domains, snap->n);
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
