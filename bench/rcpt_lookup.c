/*
 * rcpt_lookup.c - the in-process half of bench/rcpt-lookup.sh: loads the
 * RCPT-time address index (directory_index_load) from a Moat database that
 * the script filled through moatd (CSV import, `moat rv set`), then times
 * directory_index_lookup on known and unknown addresses in random order.
 *
 *   rcpt_lookup DATABASE USERS [LOOKUPS]
 *
 * The addresses are the script's: userI@example.com (primary) and
 * aliasI@example.com (alias) for I in 0..USERS-1 are known,
 * nobodyI@example.com are not.  The queries are half known (primaries and
 * aliases alike), half unknown.  Prints one line of key=value figures; exits
 * 1 when a lookup answers wrongly (a known address not found, an unknown one
 * found) or the database cannot be read.  Built only with -Dbench=true.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "directory/directory.h"
#include "store/store.h"

#define ADDR_MAX 64

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* xorshift64 - a repeatable pseudo-random order, not a secret */
static uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s DATABASE USERS [LOOKUPS]\n", argv[0]);
        return 2;
    }
    long users = strtol(argv[2], NULL, 10);
    long lookups = argc == 4 ? strtol(argv[3], NULL, 10) : 2000000;
    if (users < 1 || lookups < 1) {
        fprintf(stderr, "rcpt_lookup: USERS and LOOKUPS must be positive\n");
        return 2;
    }
    struct error err = {0};
    struct store *st = store_open(argv[1], &err);
    if (st == NULL) {
        fprintf(stderr, "rcpt_lookup: %s: %s\n", argv[1], err.msg);
        return 1;
    }
    double t0 = now_s();
    struct directory_index *ix = directory_index_load(st, &err);
    double t1 = now_s();
    if (ix == NULL) {
        fprintf(stderr, "rcpt_lookup: directory_index_load: %s\n", err.msg);
        store_close(st);
        return 1;
    }

    /* the queries, built before the clock starts: 1/4 primaries, 1/4
     * aliases, 1/2 unknown, users picked at random */
    size_t nq = (size_t)lookups;
    char *text = malloc(nq * ADDR_MAX);
    const char **q = malloc(nq * sizeof *q);
    bool *known = malloc(nq * sizeof *known);
    if (text == NULL || q == NULL || known == NULL) {
        fprintf(stderr, "rcpt_lookup: out of memory\n");
        return 1;
    }
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    size_t want_found = 0;
    for (size_t i = 0; i < nq; i++) {
        long u = (long)(xorshift64(&seed) % (uint64_t)users);
        static const char *const fmt[4] = { "user%ld@example.com", "alias%ld@example.com",
                                            "nobody%ld@example.com", "nobody%ld@example.com" };
        char *a = text + i * ADDR_MAX;
        snprintf(a, ADDR_MAX, fmt[i % 4], u);
        q[i] = a;
        known[i] = i % 4 < 2;
        want_found += known[i];
    }

    enum directory_rv_mode mode;
    enum directory_rv_unreachable unreachable;
    size_t found = 0, not_found = 0, other = 0, wrong = 0;
    double t2 = now_s();
    for (size_t i = 0; i < nq; i++) {
        enum directory_lookup r = directory_index_lookup(ix, q[i], &mode, &unreachable);
        if (r == DIRECTORY_FOUND)
            found++;
        else if (r == DIRECTORY_NOT_FOUND)
            not_found++;
        else
            other++;
        wrong += (r == DIRECTORY_FOUND) != known[i];
    }
    double t3 = now_s();

    double secs = t3 - t2;
    printf("users=%ld index_load_ms=%.1f lookups=%zu seconds=%.3f lookups_per_s=%.0f "
           "ns_per_lookup=%.1f found=%zu not_found=%zu other=%zu expected_found=%zu "
           "wrong=%zu mode=%s\n",
           users, (t1 - t0) * 1000, nq, secs, secs > 0 ? (double)nq / secs : 0,
           secs * 1e9 / (double)nq, found, not_found, other, want_found, wrong,
           directory_rv_mode_name(mode));
    directory_index_free(ix);
    store_close(st);
    free(text);
    free(q);
    free(known);
    return wrong == 0 && other == 0 ? 0 : 1;
}
