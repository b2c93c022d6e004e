/*
 * directory_priv.h - private to src/directory: the internal-domain set the
 * sync, the manual users and the CSV import check addresses against, and a
 * small string-keyed hash map (sync bookkeeping).
 */
#ifndef MOAT_DIRECTORY_PRIV_H
#define MOAT_DIRECTORY_PRIV_H

#include "directory.h"

#define DIRECTORY_ADDR_MAX 320   /* RFC 5321 4.5.3.1: 64 local + @ + 255 domain */

/* the internal domains (verified or trusted): an address is internal when its
 * domain is one of them or a subdomain of one */
struct directory_domains {
    char **names;
    size_t n;
};
int directory_domains_load(struct store *st, struct directory_domains *d, struct error *err);
void directory_domains_free(struct directory_domains *d);
/* directory_domain_internal - addr_domain (lower-case) is under an internal domain */
bool directory_domain_internal(const struct directory_domains *d, const char *addr_domain);
/* directory_address_check - normalise in (err naming field) and require an
 * internal domain: -1 bad syntax, -2 domain not internal (err says which) */
int directory_address_check(const struct directory_domains *d, const char *in, const char *field,
                            char *out, size_t size, struct error *err);

/* string -> size_t map, open addressing; keys are borrowed */
struct strmap {
    const char **keys;
    size_t *vals;
    size_t mask;
    size_t n;
};
void strmap_init(struct strmap *m, size_t expect);
void strmap_free(struct strmap *m);
/* strmap_put - false when key is already there (*old gets its value) */
bool strmap_put(struct strmap *m, const char *key, size_t val, size_t *old);
bool strmap_get(const struct strmap *m, const char *key, size_t *val);
uint64_t directory_hash(uint64_t seed, const char *s, size_t len);

#endif
