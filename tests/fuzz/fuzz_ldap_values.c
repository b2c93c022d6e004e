/*
 * fuzz_ldap_values.c - libFuzzer target for the LDAP attribute values a
 * directory server sends (directory_ldap.c through directory_ldap_priv.h):
 * proxyAddresses / mail / alias / userPrincipalName into a primary address
 * and aliases, the id attribute (objectGUID binary -> text, entryUUID), the
 * display name, and member DNs, without a server.
 *
 * Input: one octet of flags, then records [tag][len][len octets]: tag % 6
 * picks the attribute (proxy, mail, alias, upn, id, name/member), len is one
 * octet (two when the tag's high bit is set, so values above
 * DIRECTORY_LDAP_VALUE_MAX are reached).  Each value gets a buffer of
 * exactly its length, not NUL-terminated (a struct berval promises neither),
 * so ASan sees any read past bv_len.
 *
 * Checked: every address out is valid and lower-case, the primary is not an
 * alias, aliases are distinct, no more than DIRECTORY_LDAP_VALUES_MAX;
 * each refused value is one problem; the GUID text is 36 characters that
 * give the 16 octets back; ids and names are bounded, NUL-free text.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "directory/directory_ldap.h"
#include "directory/directory_ldap_priv.h"

#define FUZZ_VALUES_MAX 64   /* values per attribute kept from one input */

struct attr {
    struct berval *bv[FUZZ_VALUES_MAX];
    struct berval *list[FUZZ_VALUES_MAX + 1];
    size_t n;
};

static void attr_push(struct attr *a, const uint8_t *p, size_t len)
{
    if (a->n >= FUZZ_VALUES_MAX)
        return;
    struct berval *bv = malloc(sizeof *bv);
    bv->bv_len = len;
    bv->bv_val = malloc(len ? len : 1);   /* exactly len octets: no terminator */
    memcpy(bv->bv_val, p, len);
    a->bv[a->n] = bv;
    a->list[a->n++] = bv;
    a->list[a->n] = NULL;
}

static struct berval **attr_vals(struct attr *a, bool mapped)
{
    return mapped && a->n > 0 ? a->list : NULL;
}

static void attr_free(struct attr *a)
{
    for (size_t i = 0; i < a->n; i++) {
        free(a->bv[i]->bv_val);
        free(a->bv[i]);
    }
}

static void check_address(const char *a)
{
    if (!directory_ldap_address_valid(a))
        abort();
    for (const char *p = a; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            abort();    /* addresses are lower-cased */
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    abort();   /* lower-case hex only */
}

/* check_guid - the text form gives the 16 octets back (first three fields
 * little-endian on the wire) */
static void check_guid(const char *t, const struct berval *bv)
{
    static const int order[16] = { 3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15 };
    if (strlen(t) != 36 || t[8] != '-' || t[13] != '-' || t[18] != '-' || t[23] != '-')
        abort();
    const unsigned char *g = (const unsigned char *)bv->bv_val;
    size_t k = 0;
    for (size_t i = 0; i < 36; i += 2) {
        if (t[i] == '-')
            i++;
        int b = hexval(t[i]) << 4 | hexval(t[i + 1]);
        if (b != g[order[k++]])
            abort();
    }
    if (k != 16)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    uint8_t flags = data[0];
    struct attr at[6];
    memset(at, 0, sizeof at);
    for (size_t i = 1; i < size;) {
        uint8_t tag = data[i++];
        size_t len;
        if (tag & 0x80) {
            if (i + 2 > size)
                break;
            len = (size_t)data[i] << 8 | data[i + 1];
            i += 2;
        } else {
            if (i + 1 > size)
                break;
            len = data[i++];
        }
        if (len > size - i)
            len = size - i;
        attr_push(&at[(tag & 0x7f) % 6], data + i, len);
        i += len;
    }

    /* addresses: flags bits 0-3 say which attributes the map names */
    struct directory_ldap_values v = {
        .proxy = attr_vals(&at[0], flags & 1),
        .mail = attr_vals(&at[1], flags & 2),
        .alias = attr_vals(&at[2], flags & 4),
        .upn = attr_vals(&at[3], flags & 8),
    };
    json_t *problems = json_array();
    size_t bad = 0;
    char *primary = NULL, **aliases = NULL;
    size_t n_aliases = 0;
    int rc = directory_ldap_entry_addresses(&v, "cn=fuzz,dc=example,dc=com", problems, &bad,
                                            &primary, &aliases, &n_aliases);
    if (json_array_size(problems) != bad)
        abort();   /* each refused value is reported once */
    if (rc == 0) {
        check_address(primary);
        if (n_aliases > DIRECTORY_LDAP_VALUES_MAX)
            abort();
        for (size_t i = 0; i < n_aliases; i++) {
            check_address(aliases[i]);
            if (strcmp(aliases[i], primary) == 0)
                abort();
            for (size_t j = 0; j < i; j++)
                if (strcmp(aliases[i], aliases[j]) == 0)
                    abort();
        }
        for (size_t i = 0; i < n_aliases; i++)
            free(aliases[i]);
        free(aliases);
        free(primary);
    } else if (rc != -1 || primary != NULL || aliases != NULL || n_aliases != 0) {
        abort();
    }
    json_decref(problems);

    /* the id: objectGUID or a text attribute (flags bit 4) */
    const char *id_attr = flags & 16 ? "objectGUID" : "entryUUID";
    char *id = directory_ldap_id_value(id_attr, attr_vals(&at[4], true));
    if (id != NULL) {
        const struct berval *first = at[4].bv[0];
        if ((flags & 16) && first->bv_len == 16)
            check_guid(id, first);
        else if (strlen(id) != first->bv_len || first->bv_len > 256)
            abort();
        free(id);
    }
    for (size_t i = 0; i < at[4].n; i++) {
        if (at[4].bv[i]->bv_len != 16)
            continue;
        char *g = directory_ldap_guid_text(at[4].bv[i]);
        check_guid(g, at[4].bv[i]);
        free(g);
    }

    /* the display name, and member DNs as read_entry takes them */
    char *name = directory_ldap_text_value(attr_vals(&at[5], true));
    if (name != NULL) {
        if (strlen(name) != at[5].bv[0]->bv_len || strlen(name) > DIRECTORY_LDAP_VALUE_MAX)
            abort();
        free(name);
    }
    for (size_t i = 0; i < at[5].n && i < 8; i++) {
        const struct berval *bv = at[5].bv[i];
        if (bv->bv_len == 0 || bv->bv_len > DIRECTORY_LDAP_VALUE_MAX ||
            memchr(bv->bv_val, '\0', bv->bv_len))
            continue;
        char *raw = strndup(bv->bv_val, bv->bv_len);
        char *dn = directory_ldap_dn_norm(raw);
        for (const char *p = dn; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                abort();
        free(dn);
        free(raw);
    }

    for (size_t k = 0; k < 6; k++)
        attr_free(&at[k]);
    return 0;
}
