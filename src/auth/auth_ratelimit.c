/*
 * auth_ratelimit.c - failed sign-ins counted per key (an account name or a
 * client address) in a sliding window: once a key has login_max_failures
 * failures inside login_failure_window seconds, it is refused until the
 * oldest of them leaves the window (that wait is the Retry-After).
 *
 * Entry points: auth_rl_init/free, auth_rl_check, auth_rl_fail, auth_rl_clear.
 *
 * Memory is bounded: at most AUTH_RL_MAX_KEYS keys, each with a ring of at
 * most max failure times.  When the table is full, a key whose failures
 * have all left the window is reused, else the key with the oldest newest
 * failure is evicted (an attacker spraying addresses can only push out the
 * quietest keys).  A linear scan is fine: every sign-in also runs argon2id,
 * which costs far more than scanning a few thousand entries.
 *
 * Threads: one mutex guards everything; it is never held across I/O.
 */
#include <stdlib.h>
#include <string.h>
#include "auth_priv.h"

void auth_rl_init(struct auth_ratelimit *rl, int max, int64_t window)
{
    memset(rl, 0, sizeof *rl);
    pthread_mutex_init(&rl->lock, NULL);
    rl->max = max < 1 ? 1 : max > AUTH_RL_MAX_FAILURES ? AUTH_RL_MAX_FAILURES : max;
    rl->window = window < 1 ? 1 : window;
}

void auth_rl_free(struct auth_ratelimit *rl)
{
    for (size_t i = 0; i < rl->n; i++)
        free(rl->e[i].fails);
    free(rl->e);
    pthread_mutex_destroy(&rl->lock);
    memset(rl, 0, sizeof *rl);
}

/* prune - drop the failures that left the window */
static void prune(const struct auth_ratelimit *rl, struct auth_rl_entry *e, int64_t now)
{
    while (e->n > 0 && e->fails[e->head] <= now - rl->window) {
        e->head = (e->head + 1) % rl->max;
        e->n--;
    }
}

/* trunc_key - keys are compared as stored: over-long ones (they cannot come
 * from a valid name or address) are cut to the entry's size */
static const char *trunc_key(char k[sizeof ((struct auth_rl_entry *)0)->key], const char *key)
{
    size_t n = strnlen(key, sizeof ((struct auth_rl_entry *)0)->key - 1);
    memcpy(k, key, n);
    k[n] = '\0';
    return k;
}

static struct auth_rl_entry *find(struct auth_ratelimit *rl, const char *key)
{
    for (size_t i = 0; i < rl->n; i++)
        if (strcmp(rl->e[i].key, key) == 0)
            return &rl->e[i];
    return NULL;
}

int64_t auth_rl_check(struct auth_ratelimit *rl, const char *key, int64_t now)
{
    int64_t wait = 0;
    char k[sizeof rl->e->key];
    key = trunc_key(k, key);
    pthread_mutex_lock(&rl->lock);
    struct auth_rl_entry *e = find(rl, key);
    if (e != NULL) {
        prune(rl, e, now);
        if (e->n >= rl->max) {
            wait = e->fails[e->head] + rl->window - now;
            if (wait < 1)
                wait = 1;
        }
    }
    pthread_mutex_unlock(&rl->lock);
    return wait;
}

/* slot - a free or reusable entry for a new key */
static struct auth_rl_entry *slot(struct auth_ratelimit *rl, int64_t now)
{
    if (rl->n < rl->cap || rl->n < AUTH_RL_MAX_KEYS) {
        if (rl->n == rl->cap) {
            rl->cap = rl->cap ? rl->cap * 2 : 64;
            if (rl->cap > AUTH_RL_MAX_KEYS)
                rl->cap = AUTH_RL_MAX_KEYS;
            rl->e = xreallocarray(rl->e, rl->cap, sizeof *rl->e);
        }
        struct auth_rl_entry *e = &rl->e[rl->n++];
        memset(e, 0, sizeof *e);
        e->fails = xcalloc((size_t)rl->max, sizeof *e->fails);
        return e;
    }
    struct auth_rl_entry *victim = &rl->e[0];
    for (size_t i = 0; i < rl->n; i++) {
        prune(rl, &rl->e[i], now);
        if (rl->e[i].n == 0) {
            victim = &rl->e[i];
            break;
        }
        if (rl->e[i].last < victim->last)
            victim = &rl->e[i];
    }
    victim->n = victim->head = 0;
    victim->last = 0;
    return victim;
}

void auth_rl_fail(struct auth_ratelimit *rl, const char *key, int64_t now)
{
    char k[sizeof rl->e->key];
    key = trunc_key(k, key);
    pthread_mutex_lock(&rl->lock);
    struct auth_rl_entry *e = find(rl, key);
    if (e == NULL) {
        e = slot(rl, now);
        str_copy(e->key, sizeof e->key, key);
    }
    prune(rl, e, now);
    if (e->n == rl->max) {          /* full: the oldest gives way */
        e->head = (e->head + 1) % rl->max;
        e->n--;
    }
    e->fails[(e->head + e->n) % rl->max] = now;
    e->n++;
    e->last = now;
    pthread_mutex_unlock(&rl->lock);
}

void auth_rl_clear(struct auth_ratelimit *rl, const char *key)
{
    char k[sizeof rl->e->key];
    key = trunc_key(k, key);
    pthread_mutex_lock(&rl->lock);
    struct auth_rl_entry *e = find(rl, key);
    if (e != NULL)
        e->n = e->head = 0;
    pthread_mutex_unlock(&rl->lock);
}
