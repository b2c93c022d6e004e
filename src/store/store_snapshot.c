/*
 * store_snapshot.c - an immutable in-memory copy of the routing configuration
 * (domains and their primary routes) for the SMTP loop, which never touches
 * the database.  Loaded on another thread with store_snapshot_load, swapped
 * in by the daemon, read without locks, freed when no longer referenced.
 *
 * Lookup: the domains sorted by name (strcmp order of lower-case names);
 * store_snapshot_find tries the domain, then each parent ("a.b.example.com",
 * "b.example.com", "example.com"), with a binary search each: O(labels log n).
 *
 * The outbound role (issue 6): the authorised outbound ranges (parsed, a
 * linear scan: a handful of ranges per organisation), the enabled SMTP AUTH
 * accounts (name -> argon2id hash, sorted, binary search) and the sender
 * domains that must use TLS (sorted, parent walk like the domains).
 */
#include <stdlib.h>
#include <sodium.h>
#include <string.h>
#include <sys/socket.h>
#include "../core/cidr.h"
#include "store_priv.h"

struct store_snapshot {
    struct store_domain *domains;   /* sorted by name */
    size_t n;
    struct cidr *hosts;             /* authorised outbound ranges */
    size_t n_hosts;
    char **acct_names;              /* enabled SMTP AUTH accounts, sorted */
    char **acct_hashes;             /* acct_hashes[i] belongs to acct_names[i] */
    size_t n_accts;
    char **tls_domains;             /* sender domains that must use TLS, sorted */
    size_t n_tls;
    struct store_tls_policy *tls_policies;   /* outbound TLS policies, sorted by domain */
    size_t n_tls_policies;
    struct store_dnsbl_zone *dnsbl;          /* DNSBL zones (issue 7), sorted by zone */
    size_t n_dnsbl;
    struct store_antispoof_bypass *antispoof;   /* anti-spoofing bypasses (issue 7) */
    size_t n_antispoof;
    /* issue 7 (store_held.c): blocked senders sorted by pattern, forwarding
     * rules sorted by address */
    struct store_blocked_sender *blocked;
    size_t n_blocked;
    struct store_forward *forwards;
    size_t n_forwards;
    /* issue 8 (store_journal.c): the effective journal address and the
     * authorised journal sources (parsed, a linear scan like the outbound hosts) */
    char *journal_address;
    struct cidr *journal_sources;
    size_t n_journal_sources;
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* snapshot_load_outbound - the outbound role's part of the snapshot */
static int snapshot_load_outbound(struct store *st, struct store_snapshot *snap, struct error *err)
{
    struct store_outbound_host *h;
    size_t n;
    if (store_outbound_host_list(st, &h, &n, err) < 0)
        return -1;
    snap->hosts = xcalloc(n ? n : 1, sizeof *snap->hosts);
    for (size_t i = 0; i < n; i++) {
        struct error e2;
        if (cidr_parse(h[i].cidr, &snap->hosts[snap->n_hosts], &e2) == 0)
            snap->n_hosts++;
        else
            log_error("event=config_bad_row table=outbound_hosts cidr=\"%.64s\"", h[i].cidr);
    }
    store_outbound_hosts_free(h, n);
    if (store_smtp_account_hashes(st, &snap->acct_names, &snap->acct_hashes, &snap->n_accts, err) < 0)
        return -1;
    /* sort names and hashes together: sort an index of pairs */
    if (snap->n_accts > 1) {
        char **pairs = xcalloc(snap->n_accts * 2, sizeof *pairs);
        for (size_t i = 0; i < snap->n_accts; i++) {
            pairs[2 * i] = snap->acct_names[i];
            pairs[2 * i + 1] = snap->acct_hashes[i];
        }
        qsort(pairs, snap->n_accts, 2 * sizeof *pairs, cmp_str);
        for (size_t i = 0; i < snap->n_accts; i++) {
            snap->acct_names[i] = pairs[2 * i];
            snap->acct_hashes[i] = pairs[2 * i + 1];
        }
        free(pairs);
    }
    if (store_tls_required_list(st, &snap->tls_domains, &snap->n_tls, err) < 0)
        return -1;
    if (snap->n_tls > 1)
        qsort(snap->tls_domains, snap->n_tls, sizeof *snap->tls_domains, cmp_str);
    return 0;
}

static int cmp_domain(const void *a, const void *b)
{
    return strcmp(((const struct store_domain *)a)->name, ((const struct store_domain *)b)->name);
}

static int cmp_tls(const void *a, const void *b)
{
    return strcmp(((const struct store_tls_policy *)a)->domain,
                  ((const struct store_tls_policy *)b)->domain);
}

static int cmp_blocked(const void *a, const void *b)
{
    return strcmp(((const struct store_blocked_sender *)a)->pattern,
                  ((const struct store_blocked_sender *)b)->pattern);
}

static int cmp_forward(const void *a, const void *b)
{
    const struct store_forward *x = a, *y = b;
    int c = strcmp(x->address, y->address);
    return c ? c : (x->id > y->id) - (x->id < y->id);
}

/* snapshot_load_held - issue 7: blocked senders and forwarding rules */
static int snapshot_load_held(struct store *st, struct store_snapshot *snap, struct error *err)
{
    if (store_blocked_list(st, &snap->blocked, &snap->n_blocked, err) < 0)
        return -1;
    if (snap->n_blocked > 1)
        qsort(snap->blocked, snap->n_blocked, sizeof *snap->blocked, cmp_blocked);
    if (store_forward_list(st, &snap->forwards, &snap->n_forwards, err) < 0)
        return -1;
    if (snap->n_forwards > 1)
        qsort(snap->forwards, snap->n_forwards, sizeof *snap->forwards, cmp_forward);
    return 0;
}

/* snapshot_load_journal - issue 8: the journal role */
static int snapshot_load_journal(struct store *st, struct store_snapshot *snap, struct error *err)
{
    struct store_journal j;
    if (store_journal_get(st, &j, err) < 0)
        return -1;
    snap->journal_address = xstrdup(j.address);
    store_journal_clear(&j);
    struct store_journal_source *src;
    size_t n;
    if (store_journal_source_list(st, &src, &n, err) < 0)
        return -1;
    snap->journal_sources = xcalloc(n ? n : 1, sizeof *snap->journal_sources);
    for (size_t i = 0; i < n; i++) {
        struct error e2;
        if (cidr_parse(src[i].cidr, &snap->journal_sources[snap->n_journal_sources], &e2) == 0)
            snap->n_journal_sources++;
        else
            log_error("event=config_bad_row table=journal_sources cidr=\"%.64s\"", src[i].cidr);
    }
    store_journal_sources_free(src, n);
    return 0;
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
    if (snapshot_load_outbound(st, snap, err) < 0) {
        store_snapshot_free(snap);
        return NULL;
    }
    if (store_tls_policy_list(st, &snap->tls_policies, &snap->n_tls_policies, err) < 0) {
        store_snapshot_free(snap);
        return NULL;
    }
    if (snap->n_tls_policies > 1)
        qsort(snap->tls_policies, snap->n_tls_policies, sizeof *snap->tls_policies, cmp_tls);
    if (store_dnsbl_zone_list(st, &snap->dnsbl, &snap->n_dnsbl, err) < 0 ||
        store_antispoof_bypass_list(st, &snap->antispoof, &snap->n_antispoof, err) < 0 ||
        snapshot_load_held(st, snap, err) < 0) {
        store_snapshot_free(snap);
        return NULL;
    }
    if (snapshot_load_journal(st, snap, err) < 0) {
        store_snapshot_free(snap);
        return NULL;
    }
    return snap;
}

void store_snapshot_free(struct store_snapshot *snap)
{
    if (snap == NULL)
        return;
    store_domains_free(snap->domains, snap->n);
    free(snap->hosts);
    for (size_t i = 0; i < snap->n_accts; i++) {
        free(snap->acct_names[i]);
        sodium_memzero(snap->acct_hashes[i], strlen(snap->acct_hashes[i]));
        free(snap->acct_hashes[i]);
    }
    free(snap->acct_names);
    free(snap->acct_hashes);
    for (size_t i = 0; i < snap->n_tls; i++)
        free(snap->tls_domains[i]);
    free(snap->tls_domains);
    store_tls_policies_free(snap->tls_policies, snap->n_tls_policies);
    store_dnsbl_zones_free(snap->dnsbl, snap->n_dnsbl);
    store_antispoof_bypasses_free(snap->antispoof, snap->n_antispoof);
    store_blocked_free(snap->blocked, snap->n_blocked);
    store_forwards_free(snap->forwards, snap->n_forwards);
    free(snap->journal_address);
    free(snap->journal_sources);
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

/* --- the outbound role --- */

bool store_snapshot_outbound_host(const struct store_snapshot *snap, const struct sockaddr *sa)
{
    if (snap == NULL)
        return false;
    for (size_t i = 0; i < snap->n_hosts; i++)
        if (cidr_contains(&snap->hosts[i], sa))
            return true;
    return false;
}

const char *store_snapshot_smtp_account_hash(const struct store_snapshot *snap, const char *name)
{
    char key[STORE_SMTP_ACCOUNT_NAME_MAX + 1];
    if (snap == NULL || snap->n_accts == 0 || name == NULL ||
        str_copy(key, sizeof key, name) < 0)
        return NULL;
    str_lower(key);
    const char *k = key;
    char *const *hit = bsearch(&k, snap->acct_names, snap->n_accts, sizeof *snap->acct_names,
                               cmp_str);
    return hit ? snap->acct_hashes[hit - snap->acct_names] : NULL;
}

bool store_snapshot_tls_required(const struct store_snapshot *snap, const char *sender_domain)
{
    char name[256];
    if (snap == NULL || snap->n_tls == 0 || sender_domain == NULL ||
        str_copy(name, sizeof name, sender_domain) < 0)
        return false;
    size_t len = strlen(name);
    if (len > 0 && name[len - 1] == '.')
        name[--len] = '\0';
    str_lower(name);
    for (const char *p = name; p != NULL && *p != '\0';) {
        const char *k = p;
        if (bsearch(&k, snap->tls_domains, snap->n_tls, sizeof *snap->tls_domains, cmp_str))
            return true;
        p = strchr(p, '.');
        if (p != NULL)
            p++;
    }
    return false;
}

/* store_snapshot_tls_policy - exact domain first, then each parent domain */
const struct store_tls_policy *store_snapshot_tls_policy(const struct store_snapshot *snap,
                                                         const char *domain)
{
    char name[256];

    if (snap == NULL || snap->n_tls_policies == 0 || domain == NULL)
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
        const struct store_tls_policy *t = bsearch(&key, snap->tls_policies, snap->n_tls_policies,
                                                   sizeof *snap->tls_policies, cmp_tls);
        if (t != NULL)
            return t;
        p = strchr(p, '.');
        if (p != NULL)
            p++;
    }
    return NULL;
}

/* --- DNSBL zones (issue 7) --- */

const struct store_dnsbl_zone *store_snapshot_dnsbl_zones(const struct store_snapshot *snap, size_t *n)
{
    *n = snap ? snap->n_dnsbl : 0;
    return snap ? snap->dnsbl : NULL;
}

/* --- anti-spoofing bypasses (issue 7) --- */

const struct store_antispoof_bypass *store_snapshot_antispoof(const struct store_snapshot *snap,
                                                              size_t *n)
{
    *n = snap ? snap->n_antispoof : 0;
    return snap ? snap->antispoof : NULL;
}

/* --- issue 7: blocked senders and forwarding rules --- */

static const struct store_blocked_sender *blocked_find(const struct store_snapshot *snap,
                                                      const char *pattern)
{
    struct store_blocked_sender key = { .pattern = (char *)pattern };
    return bsearch(&key, snap->blocked, snap->n_blocked, sizeof *snap->blocked, cmp_blocked);
}

/* store_snapshot_blocked_sender - the address, then its domain and each parent */
const struct store_blocked_sender *store_snapshot_blocked_sender(const struct store_snapshot *snap,
                                                                 const char *sender)
{
    char name[STORE_BLOCKED_PATTERN_MAX + 1];
    if (snap == NULL || snap->n_blocked == 0 || sender == NULL || sender[0] == '\0' ||
        str_copy(name, sizeof name, sender) < 0)
        return NULL;
    str_lower(name);
    const struct store_blocked_sender *b = blocked_find(snap, name);
    if (b != NULL)
        return b;
    const char *p = strrchr(name, '@');
    for (p = p ? p + 1 : name; p != NULL && *p != '\0';) {
        b = blocked_find(snap, p);
        if (b != NULL)
            return b;
        p = strchr(p, '.');
        if (p != NULL)
            p++;
    }
    return NULL;
}

size_t store_snapshot_forwards(const struct store_snapshot *snap, const char *address,
                               const struct store_forward **out)
{
    char name[STORE_BLOCKED_PATTERN_MAX + 1];
    *out = NULL;
    if (snap == NULL || snap->n_forwards == 0 || address == NULL ||
        str_copy(name, sizeof name, address) < 0)
        return 0;
    str_lower(name);
    /* lower bound of the address in the sorted rules */
    size_t lo = 0, hi = snap->n_forwards;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(snap->forwards[mid].address, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t n = 0;
    while (lo + n < snap->n_forwards && strcmp(snap->forwards[lo + n].address, name) == 0)
        n++;
    if (n > 0)
        *out = &snap->forwards[lo];
    return n;
}

/* --- the journal role (issue 8) --- */

const char *store_snapshot_journal_address(const struct store_snapshot *snap)
{
    return snap != NULL && snap->journal_address != NULL ? snap->journal_address : "";
}

bool store_snapshot_journal_source(const struct store_snapshot *snap, const struct sockaddr *sa)
{
    if (snap == NULL || sa == NULL)
        return false;
    for (size_t i = 0; i < snap->n_journal_sources; i++)
        if (cidr_contains(&snap->journal_sources[i], sa))
            return true;
    return false;
}
