/*
 * greylist.c - the greylisting triplet table (greylist.h).
 *
 * A chained hash table (FNV-1a over the key) of entries, each also on one
 * of two lists: pending triplets in order of their first attempt, passed
 * triplets in order of last use.  Eviction at greylist_max_entries takes
 * the head of the pending list, else of the passed list: O(1).
 *
 * Persistence: each change appends a copy (key, first_seen, last_seen,
 * passed) to g->dirty; a one-second timer (or a full batch) hands the batch
 * to a worker-pool job that opens its own store handle, writes it in one
 * transaction and closes; the loop never touches the store.  Jobs own their
 * batch, so the table may be freed while one runs.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <event2/event.h>
#include "../core/worker.h"
#include "../store/store.h"
#include "greylist.h"

#define GREYLIST_BUCKETS_MIN 1024
#define GREYLIST_BATCH_MAX 1000          /* changes written by one job */
#define GREYLIST_REFRESH 3600            /* seconds between store updates of a passed triplet */

struct grey_entry {
    struct grey_entry *hnext;            /* hash chain */
    struct grey_entry *prev, *next;      /* pending or passed list */
    int64_t first_seen, last_seen;
    bool passed;
    char key[];
};

struct grey_list {
    struct grey_entry *head, *tail;      /* head = oldest */
};

struct greylist {
    const struct moat_settings *set;
    struct event_base *base;
    struct worker_pool *workers;
    char *db_path;
    struct grey_entry **buckets;
    size_t n_buckets, n_entries;
    struct grey_list pending, passed;
    struct store_greylist *dirty;
    size_t n_dirty, cap_dirty;
    struct event *flush_ev;
    bool flush_armed;
};

const char *greylist_result_name(enum greylist_result r)
{
    static const char *const names[] = {
        [GREYLIST_NEW] = "new", [GREYLIST_EARLY] = "early",
        [GREYLIST_PASSED] = "passed", [GREYLIST_EXPIRED] = "expired",
    };
    return (unsigned)r < sizeof names / sizeof names[0] ? names[r] : "?";
}

/* --- the triplet key --- */

/* client_network - the /24 or /64 of addr as text */
static int client_network(const char *addr, char *out, size_t cap)
{
    unsigned char a[16];
    char text[INET6_ADDRSTRLEN];
    if (inet_pton(AF_INET, addr, a) == 1) {
        a[3] = 0;
        if (inet_ntop(AF_INET, a, text, sizeof text) == NULL)
            return -1;
        return xsnprintf(out, cap, "%s/24", text) < 0 ? -1 : 0;
    }
    if (inet_pton(AF_INET6, addr, a) == 1) {
        if (memcmp(a, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0) {
            /* an IPv4-mapped address is its IPv4 /24 */
            a[15] = 0;
            if (inet_ntop(AF_INET, a + 12, text, sizeof text) == NULL)
                return -1;
            return xsnprintf(out, cap, "%s/24", text) < 0 ? -1 : 0;
        }
        memset(a + 8, 0, 8);
        if (inet_ntop(AF_INET6, a, text, sizeof text) == NULL)
            return -1;
        return xsnprintf(out, cap, "%s/64", text) < 0 ? -1 : 0;
    }
    return -1;
}

int greylist_triplet_key(const char *client_addr, const char *sender, const char *rcpt, char *out,
                         size_t cap)
{
    char net[INET6_ADDRSTRLEN + 8];
    if (client_addr == NULL || client_network(client_addr, net, sizeof net) < 0)
        return -1;
    if (xsnprintf(out, cap, "%s|%s|%s", net, sender ? sender : "", rcpt ? rcpt : "") < 0)
        return -1;
    str_lower(out);
    return 0;
}

/* --- the table --- */

static uint64_t key_hash(const char *k)
{
    uint64_t h = UINT64_C(1469598103934665603);
    for (; *k; k++) {
        h ^= (unsigned char)*k;
        h *= UINT64_C(1099511628211);
    }
    return h;
}

static void list_unlink(struct grey_list *l, struct grey_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        l->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        l->tail = e->prev;
    e->prev = e->next = NULL;
}

static void list_append(struct grey_list *l, struct grey_entry *e)
{
    e->next = NULL;
    e->prev = l->tail;
    if (l->tail)
        l->tail->next = e;
    else
        l->head = e;
    l->tail = e;
}

static struct grey_entry **bucket_of(struct greylist *g, const char *key)
{
    return &g->buckets[key_hash(key) & (g->n_buckets - 1)];
}

static struct grey_entry *table_find(struct greylist *g, const char *key)
{
    for (struct grey_entry *e = *bucket_of(g, key); e != NULL; e = e->hnext)
        if (strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

static void table_remove(struct greylist *g, struct grey_entry *e)
{
    struct grey_entry **pp = bucket_of(g, e->key);
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    list_unlink(e->passed ? &g->passed : &g->pending, e);
    g->n_entries--;
    free(e);
}

/* table_grow - double the buckets when the load passes 1 */
static void table_grow(struct greylist *g)
{
    size_t n = g->n_buckets * 2;
    struct grey_entry **b = xcalloc(n, sizeof *b);
    for (size_t i = 0; i < g->n_buckets; i++) {
        struct grey_entry *e = g->buckets[i];
        while (e != NULL) {
            struct grey_entry *next = e->hnext;
            size_t j = key_hash(e->key) & (n - 1);
            e->hnext = b[j];
            b[j] = e;
            e = next;
        }
    }
    free(g->buckets);
    g->buckets = b;
    g->n_buckets = n;
}

/* table_evict - make room: the oldest pending triplet, else the least
 * recently used passed one */
static void table_evict(struct greylist *g)
{
    size_t max = (size_t)g->set->greylist_max_entries;
    while (g->n_entries >= max && g->n_entries > 0) {
        struct grey_entry *e = g->pending.head ? g->pending.head : g->passed.head;
        table_remove(g, e);
    }
}

static struct grey_entry *table_insert(struct greylist *g, const char *key, int64_t first,
                                       int64_t last, bool passed)
{
    table_evict(g);
    if (g->n_entries >= g->n_buckets)
        table_grow(g);
    size_t len = strlen(key);
    struct grey_entry *e = xcalloc(1, sizeof *e + len + 1);
    memcpy(e->key, key, len + 1);
    e->first_seen = first;
    e->last_seen = last;
    e->passed = passed;
    struct grey_entry **b = bucket_of(g, key);
    e->hnext = *b;
    *b = e;
    list_append(passed ? &g->passed : &g->pending, e);
    g->n_entries++;
    return e;
}

/* --- persistence --- */

struct grey_job {
    char *db_path;
    struct store_greylist *v;
    size_t n;
    bool ok;
    char why[256];
};

static void grey_job_work(void *arg)
{
    struct grey_job *j = arg;
    struct error err = {0};
    struct store *st = store_open(j->db_path, &err);
    j->ok = st != NULL && store_greylist_put(st, j->v, j->n, &err) == STORE_OK;
    if (!j->ok)
        (void)str_copy(j->why, sizeof j->why, err.msg);
    store_close(st);
}

static void grey_job_done(void *arg)
{
    struct grey_job *j = arg;
    if (!j->ok)
        log_warn("event=greylist_save_failed triplets=%zu reason=\"%s\"", j->n, j->why);
    for (size_t i = 0; i < j->n; i++)
        free(j->v[i].triplet);
    free(j->v);
    free(j->db_path);
    free(j);
}

void greylist_flush(struct greylist *g)
{
    if (g->n_dirty == 0)
        return;
    if (g->workers == NULL || g->db_path == NULL) {
        for (size_t i = 0; i < g->n_dirty; i++)
            free(g->dirty[i].triplet);
        g->n_dirty = 0;
        return;
    }
    struct grey_job *j = xcalloc(1, sizeof *j);
    j->db_path = xstrdup(g->db_path);
    j->v = g->dirty;
    j->n = g->n_dirty;
    g->dirty = NULL;
    g->n_dirty = g->cap_dirty = 0;
    worker_submit(g->workers, grey_job_work, grey_job_done, j);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct greylist *g = arg;
    g->flush_armed = false;
    greylist_flush(g);
}

/* mark_dirty - queue e's state for the store */
static void mark_dirty(struct greylist *g, const struct grey_entry *e)
{
    if (g->workers == NULL || g->db_path == NULL)
        return;
    if (g->n_dirty == g->cap_dirty) {
        g->cap_dirty = g->cap_dirty ? g->cap_dirty * 2 : 64;
        g->dirty = xreallocarray(g->dirty, g->cap_dirty, sizeof *g->dirty);
    }
    g->dirty[g->n_dirty++] = (struct store_greylist){
        .triplet = xstrdup(e->key), .first_seen = e->first_seen,
        .last_seen = e->last_seen, .passed = e->passed,
    };
    if (g->n_dirty >= GREYLIST_BATCH_MAX) {
        greylist_flush(g);
        return;
    }
    if (!g->flush_armed && g->flush_ev != NULL) {
        struct timeval one = { 1, 0 };
        event_add(g->flush_ev, &one);
        g->flush_armed = true;
    }
}

/* --- the interface --- */

struct greylist *greylist_create(struct event_base *base, struct worker_pool *workers,
                                 const char *db_path, const struct moat_settings *set)
{
    struct greylist *g = xcalloc(1, sizeof *g);
    g->set = set;
    g->base = base;
    g->workers = workers;
    g->db_path = db_path ? xstrdup(db_path) : NULL;
    g->n_buckets = GREYLIST_BUCKETS_MIN;
    g->buckets = xcalloc(g->n_buckets, sizeof *g->buckets);
    if (base != NULL)
        g->flush_ev = evtimer_new(base, flush_cb, g);
    return g;
}

void greylist_free(struct greylist *g)
{
    if (g == NULL)
        return;
    greylist_flush(g);
    if (g->flush_ev)
        event_free(g->flush_ev);
    for (size_t i = 0; i < g->n_buckets; i++) {
        struct grey_entry *e = g->buckets[i];
        while (e != NULL) {
            struct grey_entry *next = e->hnext;
            free(e);
            e = next;
        }
    }
    free(g->buckets);
    free(g->dirty);
    free(g->db_path);
    free(g);
}

struct load_ctx {
    struct greylist *g;
    int64_t now;
};

static int load_one(void *arg, const struct store_greylist *r)
{
    struct load_ctx *c = arg;
    const struct moat_settings *set = c->g->set;
    /* a pending triplet past its window or a passed one past its lifetime is gone */
    if (r->passed ? r->last_seen + set->greylist_pass_lifetime < c->now
                  : r->first_seen + set->greylist_max_delay < c->now)
        return 0;
    if (strlen(r->triplet) >= GREYLIST_KEY_MAX || table_find(c->g, r->triplet) != NULL)
        return 0;
    table_insert(c->g, r->triplet, r->first_seen, r->last_seen, r->passed);
    return 0;
}

int greylist_load(struct greylist *g, struct store *st, int64_t now, struct error *err)
{
    struct load_ctx c = { g, now };
    int64_t keep = g->set->greylist_pass_lifetime > g->set->greylist_max_delay
                       ? g->set->greylist_pass_lifetime : g->set->greylist_max_delay;
    if (store_greylist_each(st, now - keep, load_one, &c, err) < 0)
        return -1;
    log_info("event=greylist_loaded triplets=%zu", g->n_entries);
    return 0;
}

/* restart - the triplet starts over at now (pending) */
static void restart(struct greylist *g, struct grey_entry *e, int64_t now)
{
    list_unlink(e->passed ? &g->passed : &g->pending, e);
    e->passed = false;
    e->first_seen = e->last_seen = now;
    list_append(&g->pending, e);
}

enum greylist_result greylist_check(struct greylist *g, const char *key, int64_t now)
{
    const struct moat_settings *set = g->set;
    struct grey_entry *e = table_find(g, key);
    enum greylist_result r;
    if (e == NULL) {
        e = table_insert(g, key, now, now, false);
        r = GREYLIST_NEW;
    } else if (e->passed) {
        if (now - e->last_seen > set->greylist_pass_lifetime) {
            restart(g, e, now);
            r = GREYLIST_EXPIRED;
        } else {
            /* the store's copy is refreshed at most hourly: a busy sender
             * must not mean a write per message (its lifetime is days) */
            bool stale = now - e->last_seen >= GREYLIST_REFRESH;
            e->last_seen = now;
            list_unlink(&g->passed, e);
            list_append(&g->passed, e);
            if (stale)
                mark_dirty(g, e);
            return GREYLIST_PASSED;
        }
    } else if (now - e->first_seen < set->greylist_min_delay) {
        return GREYLIST_EARLY;     /* nothing changes: the window counts from the first */
    } else if (now - e->first_seen > set->greylist_max_delay) {
        restart(g, e, now);
        r = GREYLIST_EXPIRED;
    } else {
        list_unlink(&g->pending, e);
        e->passed = true;
        e->last_seen = now;
        list_append(&g->passed, e);
        r = GREYLIST_PASSED;
    }
    mark_dirty(g, e);
    return r;
}

size_t greylist_size(const struct greylist *g)
{
    return g ? g->n_entries : 0;
}

const struct moat_settings *greylist_settings(const struct greylist *g)
{
    return g->set;
}
