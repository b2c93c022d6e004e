/*
 * permitted.c - the loop's index of permitted senders (permitted.h).
 *
 * Built by the reload thread from the store, then read-only: two sorted
 * arrays, searched with bsearch.  The organisation's list holds values
 * ("bob@partner.example", "partner.example"); the users' lists hold keys
 * "user\tvalue" ("\t" is never in a normalised value) with the entry's
 * source and last use, so an auto entry that expires while the index is in
 * use stops matching without a reload.
 *
 * A lookup tries the sender address, then its domain and each parent domain
 * ("a@x.b.example": "a@x.b.example", "x.b.example", "b.example",
 * "example"), in both lists: O(labels * log n).
 */
#include <stdlib.h>
#include <string.h>
#include "../store/store.h"
#include "permitted.h"

#define KEY_MAX (2 * STORE_PERMITTED_VALUE_MAX + 2)

struct permitted_user_entry {
    char *key;                  /* "user\tvalue" */
    bool is_auto;
    int64_t last_seen;
};

struct permitted_index {
    char **org;                 /* sorted values */
    size_t n_org, cap_org;
    struct permitted_user_entry *users;   /* sorted by key */
    size_t n_users, cap_users;
    size_t n_auto;
    int64_t auto_lifetime;
    char **released;            /* sorted keys of released held messages (store_message_id_key) */
    size_t n_released, cap_released;
};

#define PERMITTED_RELEASED_MAX 100000   /* released ids kept: the newest, within auto_lifetime */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_user(const void *a, const void *b)
{
    return strcmp(((const struct permitted_user_entry *)a)->key,
                  ((const struct permitted_user_entry *)b)->key);
}

/* index_add - store_permitted_each's callback on the reload thread */
static int index_add(void *arg, const struct store_permitted *e)
{
    struct permitted_index *ix = arg;
    if (e->user[0] == '\0') {
        if (ix->n_org == ix->cap_org) {
            ix->cap_org = ix->cap_org ? ix->cap_org * 2 : 64;
            ix->org = xreallocarray(ix->org, ix->cap_org, sizeof *ix->org);
        }
        ix->org[ix->n_org++] = xstrdup(e->value);
        return 0;
    }
    if (ix->n_users == ix->cap_users) {
        ix->cap_users = ix->cap_users ? ix->cap_users * 2 : 64;
        ix->users = xreallocarray(ix->users, ix->cap_users, sizeof *ix->users);
    }
    struct permitted_user_entry *u = &ix->users[ix->n_users++];
    u->key = xasprintf("%s\t%s", e->user, e->value);
    u->is_auto = strcmp(e->source, "auto") == 0;
    u->last_seen = e->last_seen;
    if (u->is_auto)
        ix->n_auto++;
    return 0;
}

static int released_add(void *arg, const char *key)
{
    struct permitted_index *ix = arg;
    if (ix->n_released == ix->cap_released) {
        ix->cap_released = ix->cap_released ? ix->cap_released * 2 : 64;
        ix->released = xreallocarray(ix->released, ix->cap_released, sizeof *ix->released);
    }
    ix->released[ix->n_released++] = xstrdup(key);
    return 0;
}

struct permitted_index *permitted_index_load(struct store *st, int64_t now, int64_t auto_lifetime,
                                             struct error *err)
{
    struct permitted_index *ix = xcalloc(1, sizeof *ix);
    ix->auto_lifetime = auto_lifetime;
    if (store_permitted_each(st, now - auto_lifetime, index_add, ix, err) < 0 ||
        store_held_released_each(st, now - auto_lifetime, PERMITTED_RELEASED_MAX, released_add, ix,
                                 err) < 0) {
        permitted_index_free(ix);
        return NULL;
    }
    if (ix->n_released > 1)
        qsort(ix->released, ix->n_released, sizeof *ix->released, cmp_str);
    if (ix->n_org > 1)
        qsort(ix->org, ix->n_org, sizeof *ix->org, cmp_str);
    if (ix->n_users > 1)
        qsort(ix->users, ix->n_users, sizeof *ix->users, cmp_user);
    return ix;
}

void permitted_index_free(struct permitted_index *ix)
{
    if (ix == NULL)
        return;
    for (size_t i = 0; i < ix->n_org; i++)
        free(ix->org[i]);
    for (size_t i = 0; i < ix->n_users; i++)
        free(ix->users[i].key);
    for (size_t i = 0; i < ix->n_released; i++)
        free(ix->released[i]);
    free(ix->org);
    free(ix->users);
    free(ix->released);
    free(ix);
}

bool permitted_index_released(const struct permitted_index *ix, const char *message_id)
{
    char key[1024];
    if (ix == NULL || ix->n_released == 0 || store_message_id_key(message_id, key, sizeof key) < 0)
        return false;
    const char *k = key;
    return bsearch(&k, ix->released, ix->n_released, sizeof *ix->released, cmp_str) != NULL;
}

/* lower_copy - ASCII lower-case copy; false when it does not fit */
static bool lower_copy(char *dst, size_t cap, const char *src)
{
    if (str_copy(dst, cap, src) < 0)
        return false;
    str_lower(dst);
    return true;
}

/* match_one - candidate (an address or a domain) in the org list or rcpt's list */
static bool match_one(const struct permitted_index *ix, const char *candidate, const char *rcpt,
                      int64_t now)
{
    const char *c = candidate;
    if (ix->n_org > 0 && bsearch(&c, ix->org, ix->n_org, sizeof *ix->org, cmp_str) != NULL)
        return true;
    if (ix->n_users == 0)
        return false;
    char key[KEY_MAX + 1];
    if (xsnprintf(key, sizeof key, "%s\t%s", rcpt, candidate) < 0)
        return false;
    struct permitted_user_entry probe = { .key = key };
    const struct permitted_user_entry *u =
        bsearch(&probe, ix->users, ix->n_users, sizeof *ix->users, cmp_user);
    if (u == NULL)
        return false;
    return !u->is_auto || u->last_seen + ix->auto_lifetime >= now;
}

bool permitted_check(const struct permitted_index *ix, const char *sender, const char *rcpt,
                     int64_t now)
{
    if (ix == NULL || sender == NULL || sender[0] == '\0' || rcpt == NULL)
        return false;
    char s[STORE_PERMITTED_VALUE_MAX + 1], r[STORE_PERMITTED_VALUE_MAX + 1];
    if (!lower_copy(s, sizeof s, sender) || !lower_copy(r, sizeof r, rcpt))
        return false;
    const char *at = strrchr(s, '@');
    if (at == NULL || at[1] == '\0')
        return false;
    if (match_one(ix, s, r, now))
        return true;
    /* the domain and each parent domain */
    for (const char *d = at + 1; d != NULL && *d; ) {
        if (match_one(ix, d, r, now))
            return true;
        d = strchr(d, '.');
        if (d != NULL)
            d++;
    }
    return false;
}

size_t permitted_index_count_org(const struct permitted_index *ix)
{
    return ix ? ix->n_org : 0;
}

size_t permitted_index_count_auto(const struct permitted_index *ix)
{
    return ix ? ix->n_auto : 0;
}
