/*
 * directory_ldap_priv.h - private to src/directory (and its fuzz target):
 * the pure parts of mapping one LDAP entry's attribute values to addresses
 * and ids, split out of directory_ldap.c's read_entry / entry_id /
 * text_value so that tests/fuzz/fuzz_ldap_values.c can feed them the values
 * a server sends without a server.  No LDAP handle, no store: values in
 * (struct berval arrays as ldap_get_values_len returns them, NULL-terminated;
 * NULL = attribute absent or not mapped), allocated strings out.
 */
#ifndef MOAT_DIRECTORY_LDAP_PRIV_H
#define MOAT_DIRECTORY_LDAP_PRIV_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>
#include <lber.h>

/* the address-bearing values of one entry */
struct directory_ldap_values {
    struct berval **proxy;   /* AD proxyAddresses: "SMTP:" primary, "smtp:" aliases */
    struct berval **mail;    /* first value primary (unless proxy gave one), others aliases */
    struct berval **alias;   /* aliases (mailAlternativeAddress) */
    struct berval **upn;     /* userPrincipalName: primary when nothing else gave one */
};

/* directory_ldap_entry_addresses - the entry's primary address and aliases
 * (lower-cased, valid, de-duplicated, the primary not among the aliases, at
 * most DIRECTORY_LDAP_VALUES_MAX each); bad values are listed in problems
 * (may be NULL) under dn and counted in *bad.  0 with *primary (and
 * *aliases, *n_aliases: free each and the array) set; -1 when the entry has
 * no usable address (nothing allocated; the caller reports it) */
int directory_ldap_entry_addresses(const struct directory_ldap_values *v, const char *dn,
                                   json_t *problems, size_t *bad, char **primary,
                                   char ***aliases, size_t *n_aliases);

/* directory_ldap_guid_text - AD objectGUID (exactly 16 octets: the caller
 * checks) in its usual text form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx */
char *directory_ldap_guid_text(const struct berval *bv);

/* directory_ldap_id_value - the stable id from the values of the configured
 * id attribute attr: objectGUID as text when 16 octets, otherwise the first
 * value as text when 1..256 octets without NUL; NULL when unusable */
char *directory_ldap_id_value(const char *attr, struct berval **vals);

/* directory_ldap_text_value - the first value as UTF-8 text (1..
 * DIRECTORY_LDAP_VALUE_MAX octets, no NUL), or NULL */
char *directory_ldap_text_value(struct berval **vals);

/* directory_ldap_dn_norm - a DN (member value or entry DN) in one
 * lower-case form, so that member values match entry DNs */
char *directory_ldap_dn_norm(const char *dn);

#endif
