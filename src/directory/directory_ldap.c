/*
 * directory_ldap.c - the LDAP / Active Directory client: the source's
 * configuration (presets for Active Directory and OpenLDAP, attribute map
 * overrides, bounds), connecting (ldap://, ldap:// + StartTLS, ldaps://,
 * certificate verification against a configured CA, a fallback server),
 * simple bind, paged searches (RFC 2696) and the mapping of each entry to a
 * struct directory_entry.
 *
 * Entry points: directory_ldap_source_parse/json/view/clear,
 * directory_ldap_read, directory_ldap_test (directory_ldap.h).
 *
 * Why paged results, always: Active Directory answers at most MaxPageSize
 * (1000) entries to a plain search and OpenLDAP its sizelimit; a sync that
 * silently got the first N users would then remove everyone else.  Every
 * search carries the paged-results control, and a search that still ends
 * in sizeLimitExceeded (or any other error) fails the whole read: a partial
 * directory never reaches directory_sync_apply.
 *
 * TLS: every connection gets its own TLS context (LDAP_OPT_X_TLS_NEWCTX)
 * with the configured CA file and LDAP_OPT_X_TLS_DEMAND, so one source's CA
 * never leaks into another connection and a certificate that does not
 * verify (or does not name the host) stops the connection.
 *
 * Addresses: lower-cased; AD proxyAddresses give the primary ("SMTP:") and
 * aliases ("smtp:"); X500:, SIP: and other types are ignored.  Values longer
 * than DIRECTORY_LDAP_VALUE_MAX and malformed addresses are skipped and
 * reported.  Group members are DNs: they are mapped to the external ids of
 * the users and groups read in the same run; members outside the sync's
 * scope are dropped.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <ldap.h>
#include "directory_ldap.h"
#include "directory_ldap_priv.h"

#define PROBLEMS_MAX 1000        /* items kept in a problems list */
#define LDAP_PAGED_OID "1.2.840.113556.1.4.319"

/* --- configuration --- */

struct preset_defaults {
    const char *filter, *group_filter;
    const char *mail, *proxy, *alias, *upn, *name, *id, *member;
};

static const struct preset_defaults presets[] = {
    [DIRECTORY_LDAP_AD] = {
        .filter = "(&(objectCategory=person)(objectClass=user)(|(mail=*)(proxyAddresses=*)))",
        .group_filter = "(&(objectClass=group)(|(mail=*)(proxyAddresses=*)))",
        .mail = "mail", .proxy = "proxyAddresses", .alias = "", .upn = "userPrincipalName",
        .name = "displayName", .id = "objectGUID", .member = "member",
    },
    [DIRECTORY_LDAP_OPENLDAP] = {
        .filter = "(&(objectClass=inetOrgPerson)(mail=*))",
        .group_filter = "(&(objectClass=groupOfNames)(mail=*))",
        .mail = "mail", .proxy = "", .alias = "mailAlternativeAddress", .upn = "",
        .name = "cn", .id = "entryUUID", .member = "member",
    },
};

static const char *const preset_names[] = {
    [DIRECTORY_LDAP_AD] = "active_directory",
    [DIRECTORY_LDAP_OPENLDAP] = "openldap",
};

/* the attribute map's JSON names, in struct order */
static const char *const attr_keys[] = {
    "mail", "proxy_addresses", "alias", "upn", "display_name", "id", "member",
};
#define N_ATTRS (sizeof attr_keys / sizeof attr_keys[0])

static char **attr_slot(struct directory_ldap_attrs *a, size_t i)
{
    char **slots[N_ATTRS] = { &a->mail, &a->proxy, &a->alias, &a->upn, &a->name, &a->id,
                              &a->member };
    return slots[i];
}

static const char *attr_default(enum directory_ldap_preset p, size_t i)
{
    const struct preset_defaults *d = &presets[p];
    const char *v[N_ATTRS] = { d->mail, d->proxy, d->alias, d->upn, d->name, d->id, d->member };
    return v[i];
}

const char *directory_ldap_preset_name(enum directory_ldap_preset p)
{
    return preset_names[p];
}

/* the members a stored configuration may have */
static const char *const config_keys[] = {
    "url", "fallback_url", "starttls", "ca_file", "bind_dn", "base_dn", "filter",
    "group_filter", "preset", "attributes", "page_size", "timeout", "max_entries", "schedule",
    "max_remove_share", NULL,
};

/* printable - no control characters, at most max octets, valid UTF-8 */
static bool printable(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n > max || !str_valid_utf8(s, n))
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

/* get_string - member key as a string (def when absent); -1 naming key */
static int get_string(json_t *o, const char *key, const char *def, size_t max, char **out,
                      struct error *err)
{
    json_t *v = json_object_get(o, key);
    if (v == NULL || json_is_null(v)) {
        *out = xstrdup(def);
        return 0;
    }
    if (!json_is_string(v) || !printable(json_string_value(v), max)) {
        error_set(err, key, "%s must be a string of at most %zu printable characters", key, max);
        return -1;
    }
    *out = xstrdup(json_string_value(v));
    return 0;
}

static int get_int(json_t *o, const char *key, json_int_t def, json_int_t min, json_int_t max,
                   json_int_t *out, struct error *err)
{
    json_t *v = json_object_get(o, key);
    if (v == NULL || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        error_set(err, key, "%s must be an integer from %lld to %lld", key, (long long)min,
                  (long long)max);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

/* url_check - ldap:// or ldaps:// with a host, nothing after the host part */
static int url_check(const char *key, const char *url, bool required, struct error *err)
{
    if (url[0] == '\0') {
        if (required)
            error_set(err, key, "%s is required (ldap://HOST[:PORT] or ldaps://HOST[:PORT])", key);
        return required ? -1 : 0;
    }
    LDAPURLDesc *d = NULL;
    if (ldap_url_parse(url, &d) != LDAP_URL_SUCCESS) {
        error_set(err, key, "%s is not an LDAP URL: use ldap://HOST[:PORT] or "
                  "ldaps://HOST[:PORT]", key);
        return -1;
    }
    bool ok = d->lud_scheme && (strcmp(d->lud_scheme, "ldap") == 0 ||
                                strcmp(d->lud_scheme, "ldaps") == 0) &&
              d->lud_host && d->lud_host[0] && d->lud_dn == NULL && d->lud_attrs == NULL &&
              d->lud_filter == NULL;
    ldap_free_urldesc(d);
    if (!ok) {
        error_set(err, key, "%s must be ldap://HOST[:PORT] or ldaps://HOST[:PORT] "
                  "(no ldapi://, no base DN or filter in the URL)", key);
        return -1;
    }
    return 0;
}

/* filter_check - an LDAP filter's outer shape: in parentheses, balanced */
static int filter_check(const char *key, const char *f, bool required, struct error *err)
{
    if (f[0] == '\0' && !required)
        return 0;
    int depth = 0;
    size_t n = strlen(f);
    bool ok = n >= 3 && f[0] == '(' && f[n - 1] == ')';
    for (size_t i = 0; ok && i < n; i++) {
        if (f[i] == '(')
            depth++;
        else if (f[i] == ')' && --depth < 0)
            ok = false;
        else if (f[i] == '\\' && !(i + 2 < n && isxdigit((unsigned char)f[i + 1]) &&
                                    isxdigit((unsigned char)f[i + 2])))
            ok = false;
        if (ok && depth == 0 && i + 1 < n)
            ok = false;    /* "(a=1)(b=2)": two filters */
    }
    if (!ok || depth != 0) {
        error_set(err, key, "%s is not an LDAP filter (RFC 4515): one parenthesised "
                  "expression such as (objectClass=user)", key);
        return -1;
    }
    return 0;
}

static int dn_check(const char *key, const char *dn, struct error *err)
{
    LDAPDN parsed = NULL;
    if (dn[0] == '\0')
        return 0;
    if (ldap_str2dn(dn, &parsed, LDAP_DN_FORMAT_LDAPV3) != LDAP_SUCCESS) {
        error_set(err, key, "%s is not a distinguished name (RFC 4514), e.g. "
                  "dc=example,dc=com", key);
        return -1;
    }
    ldap_dnfree(parsed);
    return 0;
}

/* attr_name_valid - an attribute description: a name or an OID, options allowed */
static bool attr_name_valid(const char *s)
{
    if (s[0] == '\0')
        return true;
    if (strlen(s) > 64 || !isalnum((unsigned char)s[0]))
        return false;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != ';')
            return false;
    return true;
}

int directory_ldap_schedule_parse(const char *s, int *secs, size_t max, size_t *n,
                                  struct error *err)
{
    *n = 0;
    const char *p = s;
    while (*p) {
        int h = -1, m = -1, sec = 0, used = 0;
        while (*p == ' ')
            p++;
        if (sscanf(p, "%2d:%2d%n", &h, &m, &used) < 2 || used != 5 || h < 0 || h > 23 ||
            m < 0 || m > 59) {
            error_set(err, "schedule", "schedule is a comma-separated list of times of day, "
                      "HH:MM (local time), e.g. %s", DIRECTORY_LDAP_SCHEDULE_DEFAULT);
            return -1;
        }
        p += used;
        if (*p == ':') {
            if (sscanf(p, ":%2d%n", &sec, &used) < 1 || used != 3 || sec < 0 || sec > 59) {
                error_set(err, "schedule", "schedule: seconds must be 00..59 (HH:MM:SS)");
                return -1;
            }
            p += used;
        }
        while (*p == ' ')
            p++;
        if (*p == ',')
            p++;
        else if (*p != '\0') {
            error_set(err, "schedule", "schedule: times are separated by commas, e.g. %s",
                      DIRECTORY_LDAP_SCHEDULE_DEFAULT);
            return -1;
        }
        if (*n >= max) {
            error_set(err, "schedule", "schedule: at most %zu times a day", max);
            return -1;
        }
        int v = h * 3600 + m * 60 + sec;
        size_t i = *n;
        while (i > 0 && secs[i - 1] > v) {
            secs[i] = secs[i - 1];
            i--;
        }
        secs[i] = v;
        (*n)++;
    }
    return 0;
}

void directory_ldap_source_clear(struct directory_ldap_source *src)
{
    free(src->url);
    free(src->fallback_url);
    free(src->ca_file);
    free(src->bind_dn);
    free(src->base_dn);
    free(src->filter);
    free(src->group_filter);
    for (size_t i = 0; i < N_ATTRS; i++)
        free(*attr_slot(&src->attrs, i));
    json_decref(src->overrides);
    free(src->schedule);
    memset(src, 0, sizeof *src);
}

int directory_ldap_source_parse(json_t *config, struct directory_ldap_source *src,
                                struct error *err)
{
    memset(src, 0, sizeof *src);
    if (!json_is_object(config)) {
        error_set(err, "", "the directory source must be a JSON object");
        return -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach(config, key, v) {
        bool known = false;
        for (const char *const *k = config_keys; *k; k++)
            known |= strcmp(*k, key) == 0;
        if (!known) {
            error_set(err, key, "unknown member %s", key);
            return -1;
        }
    }
    json_int_t page, timeout, max_entries;
    char *preset = NULL;
    if (get_string(config, "preset", "active_directory", 32, &preset, err) < 0)
        goto fail;
    if (strcmp(preset, "active_directory") == 0)
        src->preset = DIRECTORY_LDAP_AD;
    else if (strcmp(preset, "openldap") == 0)
        src->preset = DIRECTORY_LDAP_OPENLDAP;
    else {
        free(preset);
        error_set(err, "preset", "preset must be active_directory or openldap");
        goto fail;
    }
    free(preset);
    const struct preset_defaults *d = &presets[src->preset];
    if (get_string(config, "url", "", 512, &src->url, err) < 0 ||
        get_string(config, "fallback_url", "", 512, &src->fallback_url, err) < 0 ||
        get_string(config, "ca_file", "", 1024, &src->ca_file, err) < 0 ||
        get_string(config, "bind_dn", "", 1024, &src->bind_dn, err) < 0 ||
        get_string(config, "base_dn", "", 1024, &src->base_dn, err) < 0 ||
        get_string(config, "filter", d->filter, 4096, &src->filter, err) < 0 ||
        get_string(config, "group_filter", d->group_filter, 4096, &src->group_filter, err) < 0 ||
        get_string(config, "schedule", DIRECTORY_LDAP_SCHEDULE_DEFAULT, 512, &src->schedule,
                   err) < 0)
        goto fail;
    if (src->filter[0] == '\0') {
        free(src->filter);
        src->filter = xstrdup(d->filter);
    }
    json_t *tls = json_object_get(config, "starttls");
    if (tls != NULL && !json_is_null(tls) && !json_is_boolean(tls)) {
        error_set(err, "starttls", "starttls must be true or false");
        goto fail;
    }
    src->starttls = json_is_true(tls);
    if (url_check("url", src->url, false, err) < 0 ||
        url_check("fallback_url", src->fallback_url, false, err) < 0)
        goto fail;
    if (src->starttls && (strncmp(src->url, "ldaps:", 6) == 0 ||
                          strncmp(src->fallback_url, "ldaps:", 6) == 0)) {
        error_set(err, "starttls", "starttls is for ldap:// URLs; ldaps:// is TLS from the "
                  "first byte");
        goto fail;
    }
    if (src->ca_file[0] != '\0' && src->ca_file[0] != '/') {
        error_set(err, "ca_file", "ca_file must be an absolute path to a PEM file");
        goto fail;
    }
    if (dn_check("bind_dn", src->bind_dn, err) < 0 || dn_check("base_dn", src->base_dn, err) < 0 ||
        filter_check("filter", src->filter, true, err) < 0 ||
        filter_check("group_filter", src->group_filter, false, err) < 0)
        goto fail;
    json_t *attrs = json_object_get(config, "attributes");
    if (attrs != NULL && !json_is_null(attrs) && !json_is_object(attrs)) {
        error_set(err, "attributes", "attributes must be an object: {\"mail\": \"mail\", ...}");
        goto fail;
    }
    src->overrides = json_object();
    json_object_foreach(attrs, key, v) {
        size_t i;
        for (i = 0; i < N_ATTRS && strcmp(attr_keys[i], key) != 0; i++)
            ;
        if (i == N_ATTRS) {
            error_set(err, "attributes", "attributes: unknown member %s (known: mail, "
                      "proxy_addresses, alias, upn, display_name, id, member)", key);
            goto fail;
        }
        if (!json_is_string(v) || !attr_name_valid(json_string_value(v))) {
            error_set(err, "attributes", "attributes.%s must be an attribute name (\"\" = not "
                      "used)", key);
            goto fail;
        }
        json_object_set(src->overrides, key, v);
    }
    for (size_t i = 0; i < N_ATTRS; i++) {
        json_t *o = json_object_get(src->overrides, attr_keys[i]);
        *attr_slot(&src->attrs, i) = xstrdup(o ? json_string_value(o) : attr_default(src->preset, i));
    }
    if (src->attrs.mail[0] == '\0' && src->attrs.proxy[0] == '\0' && src->attrs.upn[0] == '\0') {
        error_set(err, "attributes", "attributes: one of mail, proxy_addresses and upn must "
                  "name an attribute, or no entry has an address");
        goto fail;
    }
    if (get_int(config, "page_size", DIRECTORY_LDAP_PAGE_DEFAULT, 1, DIRECTORY_LDAP_PAGE_MAX,
                &page, err) < 0 ||
        get_int(config, "timeout", DIRECTORY_LDAP_TIMEOUT_DEFAULT, 1, DIRECTORY_LDAP_TIMEOUT_MAX,
                &timeout, err) < 0 ||
        get_int(config, "max_entries", DIRECTORY_LDAP_ENTRIES_DEFAULT, 1,
                DIRECTORY_LDAP_ENTRIES_MAX, &max_entries, err) < 0)
        goto fail;
    src->page_size = (int)page;
    src->timeout = (int)timeout;
    src->max_entries = (size_t)max_entries;
    int secs[DIRECTORY_LDAP_SCHEDULE_MAX];
    size_t nsecs;
    if (directory_ldap_schedule_parse(src->schedule, secs, DIRECTORY_LDAP_SCHEDULE_MAX, &nsecs,
                                      err) < 0)
        goto fail;
    json_t *share = json_object_get(config, "max_remove_share");
    src->max_remove_share = DIRECTORY_LDAP_REMOVE_SHARE_DEFAULT;
    if (share != NULL && !json_is_null(share)) {
        if (!json_is_number(share) || json_number_value(share) < 0 ||
            json_number_value(share) > 1) {
            error_set(err, "max_remove_share", "max_remove_share is a share from 0 to 1 "
                      "(0.10 = 10 %%)");
            goto fail;
        }
        src->max_remove_share = json_number_value(share);
    }
    src->configured = src->url[0] != '\0' && src->base_dn[0] != '\0';
    return 0;
fail:
    directory_ldap_source_clear(src);
    return -1;
}

/* set_if - member key = value unless it equals the default */
static void set_str_if(json_t *o, const char *key, const char *v, const char *def)
{
    if (strcmp(v, def) != 0)
        json_object_set_new(o, key, json_string(v));
}

json_t *directory_ldap_source_json(const struct directory_ldap_source *src)
{
    const struct preset_defaults *d = &presets[src->preset];
    json_t *o = json_object();
    set_str_if(o, "url", src->url, "");
    set_str_if(o, "fallback_url", src->fallback_url, "");
    if (src->starttls)
        json_object_set_new(o, "starttls", json_true());
    set_str_if(o, "ca_file", src->ca_file, "");
    set_str_if(o, "bind_dn", src->bind_dn, "");
    set_str_if(o, "base_dn", src->base_dn, "");
    set_str_if(o, "filter", src->filter, d->filter);
    set_str_if(o, "group_filter", src->group_filter, d->group_filter);
    json_object_set_new(o, "preset", json_string(preset_names[src->preset]));
    if (json_object_size(src->overrides) > 0)
        json_object_set(o, "attributes", src->overrides);
    if (src->page_size != DIRECTORY_LDAP_PAGE_DEFAULT)
        json_object_set_new(o, "page_size", json_integer(src->page_size));
    if (src->timeout != DIRECTORY_LDAP_TIMEOUT_DEFAULT)
        json_object_set_new(o, "timeout", json_integer(src->timeout));
    if (src->max_entries != DIRECTORY_LDAP_ENTRIES_DEFAULT)
        json_object_set_new(o, "max_entries", json_integer((json_int_t)src->max_entries));
    set_str_if(o, "schedule", src->schedule, DIRECTORY_LDAP_SCHEDULE_DEFAULT);
    if (src->max_remove_share != DIRECTORY_LDAP_REMOVE_SHARE_DEFAULT)
        json_object_set_new(o, "max_remove_share", json_real(src->max_remove_share));
    return o;
}

json_t *directory_ldap_source_view(const struct directory_ldap_source *src)
{
    json_t *attrs = json_object();
    for (size_t i = 0; i < N_ATTRS; i++)
        json_object_set_new(attrs, attr_keys[i],
                            json_string(*attr_slot((struct directory_ldap_attrs *)&src->attrs, i)));
    return json_pack("{s:b, s:s, s:s, s:b, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:O, s:i, s:i,"
                     " s:I, s:s, s:f}",
                     "configured", src->configured, "url", src->url,
                     "fallback_url", src->fallback_url, "starttls", src->starttls,
                     "ca_file", src->ca_file, "bind_dn", src->bind_dn, "base_dn", src->base_dn,
                     "filter", src->filter, "group_filter", src->group_filter,
                     "preset", preset_names[src->preset], "attributes", attrs,
                     "attribute_overrides", src->overrides, "page_size", src->page_size,
                     "timeout", src->timeout, "max_entries", (json_int_t)src->max_entries,
                     "schedule", src->schedule, "max_remove_share", src->max_remove_share);
}

/* --- addresses --- */

bool directory_ldap_address_valid(const char *a)
{
    size_t n = strlen(a);
    const char *at = strrchr(a, '@');
    if (n < 3 || n > 254 || at == NULL || at == a || at - a > 64 || at[1] == '\0')
        return false;
    /* RFC 5322 3.2.3 dot-atom local part (quoted local parts are not taken) */
    if (a[0] == '.' || at[-1] == '.' || strstr(a, "..") != NULL)
        return false;
    for (const char *p = a; p < at; p++)
        if (!isalnum((unsigned char)*p) && strchr("!#$%&'*+-/=?^_`{|}~.", *p) == NULL)
            return false;
    return domain_name_valid(at + 1);
}

static void problem(json_t *problems, const char *dn, const char *value, const char *reason)
{
    if (problems == NULL || json_array_size(problems) >= PROBLEMS_MAX)
        return;
    json_t *p = json_pack("{s:s, s:s}", "entry", dn, "reason", reason);
    if (value != NULL) {
        char shown[120];
        log_quote(shown, sizeof shown, value);
        /* log_quote adds quotes: strip them for JSON */
        size_t l = strlen(shown);
        if (l >= 2 && shown[0] == '"' && shown[l - 1] == '"') {
            shown[l - 1] = '\0';
            json_object_set_new(p, "address", json_string(shown + 1));
        } else {
            json_object_set_new(p, "address", json_string(shown));
        }
    }
    json_array_append_new(problems, p);
}

/* --- the entry being built --- */

struct addr_list {
    char **v;
    size_t n;
};

static bool addr_has(const struct addr_list *l, const char *a)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], a) == 0)
            return true;
    return false;
}

/* addr_add - a normalised copy of the value, unless bad (reported) or a duplicate */
static void addr_add(struct addr_list *l, const struct berval *bv, const char *dn,
                     json_t *problems, size_t *bad)
{
    if (bv->bv_len > DIRECTORY_LDAP_VALUE_MAX || memchr(bv->bv_val, '\0', bv->bv_len)) {
        problem(problems, dn, NULL, "an address value is too long or not text; skipped");
        (*bad)++;
        return;
    }
    char *a = xstrndup(bv->bv_val, bv->bv_len);
    str_lower(a);
    if (!directory_ldap_address_valid(a)) {
        problem(problems, dn, a, "not an e-mail address; skipped");
        (*bad)++;
        free(a);
        return;
    }
    if (addr_has(l, a) || l->n >= DIRECTORY_LDAP_VALUES_MAX) {
        free(a);
        return;
    }
    l->v = xreallocarray(l->v, l->n + 1, sizeof *l->v);
    l->v[l->n++] = a;
}

static void addr_list_free(struct addr_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* directory_ldap_guid_text - AD objectGUID (16 octets, the first three
 * fields little-endian) in its usual text form */
char *directory_ldap_guid_text(const struct berval *bv)
{
    const unsigned char *g = (const unsigned char *)bv->bv_val;
    return xasprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                     g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8], g[9], g[10], g[11],
                     g[12], g[13], g[14], g[15]);
}

/* directory_ldap_text_value - the first value as text (bounded), or NULL */
char *directory_ldap_text_value(struct berval **vals)
{
    char *out = NULL;
    if (vals != NULL && vals[0] != NULL && vals[0]->bv_len > 0 &&
        vals[0]->bv_len <= DIRECTORY_LDAP_VALUE_MAX &&
        memchr(vals[0]->bv_val, '\0', vals[0]->bv_len) == NULL) {
        out = xstrndup(vals[0]->bv_val, vals[0]->bv_len);
        if (!str_valid_utf8(out, strlen(out))) {
            free(out);
            out = NULL;
        }
    }
    return out;
}

/* text_value - the first value of attr as text (bounded), or NULL */
static char *text_value(LDAP *ld, LDAPMessage *e, const char *attr)
{
    if (attr[0] == '\0')
        return NULL;
    struct berval **vals = ldap_get_values_len(ld, e, attr);
    char *out = directory_ldap_text_value(vals);
    ldap_value_free_len(vals);
    return out;
}

/* directory_ldap_id_value - objectGUID (binary) as text, or the first value
 * as bounded text, or NULL */
char *directory_ldap_id_value(const char *attr, struct berval **vals)
{
    if (vals == NULL || vals[0] == NULL)
        return NULL;
    if (strcasecmp(attr, "objectGUID") == 0 && vals[0]->bv_len == 16)
        return directory_ldap_guid_text(vals[0]);
    if (vals[0]->bv_len > 0 && vals[0]->bv_len <= 256 &&
        memchr(vals[0]->bv_val, '\0', vals[0]->bv_len) == NULL)
        return xstrndup(vals[0]->bv_val, vals[0]->bv_len);
    return NULL;
}

/* entry_id - the stable id: the configured attribute (objectGUID is binary),
 * then entryUUID, then the DN */
static char *entry_id(LDAP *ld, LDAPMessage *e, const struct directory_ldap_attrs *a,
                      const char *dn)
{
    if (a->id[0] != '\0') {
        struct berval **vals = ldap_get_values_len(ld, e, a->id);
        char *out = directory_ldap_id_value(a->id, vals);
        ldap_value_free_len(vals);
        if (out != NULL)
            return out;
    }
    char *u = text_value(ld, e, "entryUUID");
    if (u != NULL)
        return u;
    return xasprintf("dn:%s", dn);
}

/* --- DN -> external id, for group members --- */

struct dn_map {
    char **dn;        /* normalised, lower-case */
    size_t *idx;      /* index into the entries */
    size_t cap, n;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* directory_ldap_dn_norm - a DN in one form so that member values match entry DNs */
char *directory_ldap_dn_norm(const char *dn)
{
    char *out = NULL;
    if (ldap_dn_normalize(dn, LDAP_DN_FORMAT_LDAPV3, &out, LDAP_DN_FORMAT_LDAPV3) !=
        LDAP_SUCCESS || out == NULL) {
        char *c = xstrdup(dn);
        return str_lower(c);
    }
    char *c = xstrdup(out);
    ldap_memfree(out);
    return str_lower(c);
}

static void dn_map_put(struct dn_map *m, char *dn, size_t idx)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 1024;
        char **nd = xcalloc(cap, sizeof *nd);
        size_t *ni = xcalloc(cap, sizeof *ni);
        for (size_t i = 0; i < m->cap; i++) {
            if (m->dn[i] == NULL)
                continue;
            size_t j = hash_str(m->dn[i]) & (cap - 1);
            while (nd[j] != NULL)
                j = (j + 1) & (cap - 1);
            nd[j] = m->dn[i];
            ni[j] = m->idx[i];
        }
        free(m->dn);
        free(m->idx);
        m->dn = nd;
        m->idx = ni;
        m->cap = cap;
    }
    size_t j = hash_str(dn) & (m->cap - 1);
    while (m->dn[j] != NULL) {
        if (strcmp(m->dn[j], dn) == 0) {
            free(dn);
            return;
        }
        j = (j + 1) & (m->cap - 1);
    }
    m->dn[j] = dn;
    m->idx[j] = idx;
    m->n++;
}

static bool dn_map_get(const struct dn_map *m, const char *dn, size_t *idx)
{
    if (m->cap == 0)
        return false;
    size_t j = hash_str(dn) & (m->cap - 1);
    while (m->dn[j] != NULL) {
        if (strcmp(m->dn[j], dn) == 0) {
            *idx = m->idx[j];
            return true;
        }
        j = (j + 1) & (m->cap - 1);
    }
    return false;
}

static void dn_map_free(struct dn_map *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->dn[i]);
    free(m->dn);
    free(m->idx);
    memset(m, 0, sizeof *m);
}

/* --- connecting --- */

/* ld_error - "text (code)" with the server's diagnostic message when it gave one */
static void ld_error(LDAP *ld, int rc, const char *what, struct error *err, const char *field)
{
    char *diag = NULL;
    if (ld != NULL)
        ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag);
    char shown[200] = "";
    if (diag != NULL && diag[0] != '\0')
        log_quote(shown, sizeof shown, diag);
    error_set(err, field, "%s: %s (%d)%s%s", what, ldap_err2string(rc), rc,
              shown[0] ? ": " : "", shown);
    ldap_memfree(diag);
}

/* connect_one - a bound connection to url, or NULL with err */
static LDAP *connect_one(const struct directory_ldap_source *src, const char *url,
                         const char *password, bool *unreachable, struct error *err)
{
    LDAP *ld = NULL;
    int rc;
    *unreachable = false;
    if ((rc = ldap_initialize(&ld, url)) != LDAP_SUCCESS) {
        error_set(err, "url", "%s: %s", url, ldap_err2string(rc));
        return NULL;
    }
    int v3 = LDAP_VERSION3;
    struct timeval tv = { src->timeout, 0 };
    ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
    ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
    ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &tv);
    ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tv);
    bool ldaps = strncmp(url, "ldaps:", 6) == 0;
    if (ldaps || src->starttls) {
        int demand = LDAP_OPT_X_TLS_DEMAND, is_server = 0;
        ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &demand);
        if (src->ca_file[0] != '\0') {
            if (access(src->ca_file, R_OK) != 0) {
                error_set(err, "ca_file", "ca_file %s cannot be read", src->ca_file);
                ldap_unbind_ext_s(ld, NULL, NULL);
                return NULL;
            }
            ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, src->ca_file);
        }
        /* a context of this connection's own, with the options above */
        if ((rc = ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &is_server)) != LDAP_OPT_SUCCESS) {
            error_set(err, "ca_file", "cannot set up TLS with ca_file %s (is it a PEM file?)",
                      src->ca_file[0] ? src->ca_file : "(system trust store)");
            ldap_unbind_ext_s(ld, NULL, NULL);
            return NULL;
        }
    }
    if (src->starttls && !ldaps) {
        rc = ldap_start_tls_s(ld, NULL, NULL);
        if (rc != LDAP_SUCCESS) {
            *unreachable = rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR ||
                           rc == LDAP_TIMEOUT;
            char what[600];
            xsnprintf(what, sizeof what, "%s: StartTLS failed (is the CA right, and does the "
                      "certificate name the host?)", url);
            ld_error(ld, rc, what, err, "starttls");
            ldap_unbind_ext_s(ld, NULL, NULL);
            return NULL;
        }
    }
    struct berval cred = { password ? strlen(password) : 0, (char *)(password ? password : "") };
    rc = ldap_sasl_bind_s(ld, src->bind_dn[0] ? src->bind_dn : NULL, LDAP_SASL_SIMPLE, &cred,
                          NULL, NULL, NULL);
    if (rc != LDAP_SUCCESS) {
        *unreachable = rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR || rc == LDAP_TIMEOUT;
        char what[1200];
        if (*unreachable)
            xsnprintf(what, sizeof what, "%s: cannot connect%s", url,
                      ldaps || src->starttls ? " (or the TLS handshake failed: check the CA "
                      "and that the certificate names the host)" : "");
        else
            xsnprintf(what, sizeof what, "%s: bind as %s failed", url,
                      src->bind_dn[0] ? src->bind_dn : "anonymous");
        ld_error(ld, rc, what, err, rc == LDAP_INVALID_CREDENTIALS ? "password" :
                 *unreachable ? "url" : "bind_dn");
        ldap_unbind_ext_s(ld, NULL, NULL);
        return NULL;
    }
    return ld;
}

/* connect_source - the URL, then the fallback when the first is unreachable */
static LDAP *connect_source(const struct directory_ldap_source *src, const char *password,
                            const char **used, struct error *err)
{
    bool unreachable;
    LDAP *ld = connect_one(src, src->url, password, &unreachable, err);
    *used = src->url;
    if (ld != NULL || !unreachable || src->fallback_url[0] == '\0')
        return ld;
    struct error first = *err;
    ld = connect_one(src, src->fallback_url, password, &unreachable, err);
    *used = src->fallback_url;
    if (ld == NULL) {
        struct error second = *err;
        error_set(err, second.field, "%s; fallback: %s", first.msg, second.msg);
    } else {
        log_warn("event=ldap_fallback url=%s fallback=%s reason=\"%s\"", src->url,
                 src->fallback_url, first.msg);
    }
    return ld;
}

/* --- paged search --- */

typedef int (*entry_fn)(void *arg, LDAP *ld, LDAPMessage *e, struct error *err);

/* paged_search - every entry under base matching filter, page by page */
static int paged_search(LDAP *ld, const struct directory_ldap_source *src, const char *filter,
                        char **attrs, entry_fn fn, void *arg, size_t *estimate,
                        struct error *err)
{
    struct berval cookie = { 0, NULL };
    struct timeval tv = { src->timeout, 0 };
    int rc = 0;
    for (;;) {
        LDAPControl *pc = NULL, *ctrls[2] = { NULL, NULL };
        /* not critical: a server without paging still answers small directories;
         * one that stops at its size limit fails below */
        rc = ldap_create_page_control(ld, src->page_size, cookie.bv_val ? &cookie : NULL, 0, &pc);
        if (rc != LDAP_SUCCESS) {
            ld_error(ld, rc, "cannot create the paged-results control", err, "");
            break;
        }
        ctrls[0] = pc;
        LDAPMessage *res = NULL;
        rc = ldap_search_ext_s(ld, src->base_dn, LDAP_SCOPE_SUBTREE, filter, attrs, 0, ctrls,
                               NULL, &tv, LDAP_NO_LIMIT, &res);
        ldap_control_free(pc);
        if (rc != LDAP_SUCCESS) {
            char what[1200];
            if (rc == LDAP_SIZELIMIT_EXCEEDED)
                xsnprintf(what, sizeof what, "search %s under %s stopped at the server's size "
                          "limit; nothing was changed (the bind account needs paged results "
                          "beyond the limit, e.g. OpenLDAP size.prtotal=unlimited)", filter,
                          src->base_dn);
            else
                xsnprintf(what, sizeof what, "search %s under %s failed", filter, src->base_dn);
            ld_error(ld, rc, what, err, rc == LDAP_NO_SUCH_OBJECT ? "base_dn" :
                     rc == LDAP_FILTER_ERROR ? "filter" : "");
            ldap_msgfree(res);
            break;
        }
        for (LDAPMessage *e = ldap_first_entry(ld, res); e != NULL; e = ldap_next_entry(ld, e))
            if ((rc = fn(arg, ld, e, err)) != 0)
                break;
        if (rc != 0) {
            ldap_msgfree(res);
            break;
        }
        LDAPControl **sctrls = NULL;
        int result = LDAP_SUCCESS;
        rc = ldap_parse_result(ld, res, &result, NULL, NULL, NULL, &sctrls, 1);
        if (rc != LDAP_SUCCESS || result != LDAP_SUCCESS) {
            ld_error(ld, rc != LDAP_SUCCESS ? rc : result, "search result", err, "");
            ldap_controls_free(sctrls);
            rc = -1;
            break;
        }
        LDAPControl *resp = ldap_control_find(LDAP_CONTROL_PAGEDRESULTS, sctrls, NULL);
        if (cookie.bv_val)
            ber_memfree(cookie.bv_val);
        cookie.bv_val = NULL;
        cookie.bv_len = 0;
        ber_int_t count = 0;
        if (resp != NULL)
            ldap_parse_pageresponse_control(ld, resp, &count, &cookie);
        ldap_controls_free(sctrls);
        if (estimate != NULL && count > 0)
            *estimate = (size_t)count;
        if (cookie.bv_val == NULL || cookie.bv_len == 0)
            break;    /* RFC 2696 3: an empty cookie ends the search */
    }
    if (cookie.bv_val)
        ber_memfree(cookie.bv_val);
    return rc == LDAP_SUCCESS ? 0 : -1;
}

/* directory_ldap_entry_addresses - proxyAddresses (SMTP: primary, smtp:
 * aliases, other types ignored), then mail and alias values, then the UPN
 * when nothing gave a primary; aliases only: the first becomes primary */
int directory_ldap_entry_addresses(const struct directory_ldap_values *vals, const char *dn,
                                   json_t *problems, size_t *bad, char **primary_out,
                                   char ***aliases, size_t *n_aliases)
{
    struct addr_list primary = {0}, rest = {0};
    struct berval **v;
    if ((v = vals->proxy) != NULL) {
        for (size_t i = 0; v[i] != NULL; i++) {
            if (v[i]->bv_len <= 5 || strncasecmp(v[i]->bv_val, "smtp:", 5) != 0)
                continue;
            struct berval addr = { v[i]->bv_len - 5, v[i]->bv_val + 5 };
            bool is_primary = strncmp(v[i]->bv_val, "SMTP:", 5) == 0 && primary.n == 0;
            addr_add(is_primary ? &primary : &rest, &addr, dn, problems, bad);
        }
    }
    struct berval **plain[] = { vals->mail, vals->alias };
    for (size_t k = 0; k < 2; k++) {
        if ((v = plain[k]) == NULL)
            continue;
        for (size_t i = 0; v[i] != NULL; i++)
            addr_add(primary.n == 0 && k == 0 && i == 0 ? &primary : &rest, v[i], dn,
                     problems, bad);
    }
    if (primary.n == 0 && vals->upn != NULL && vals->upn[0] != NULL)
        addr_add(&primary, vals->upn[0], dn, problems, bad);
    if (primary.n == 0 && rest.n > 0) {    /* aliases only: the first becomes primary */
        primary.v = xreallocarray(NULL, 1, sizeof *primary.v);
        primary.v[0] = rest.v[0];
        primary.n = 1;
        memmove(rest.v, rest.v + 1, (rest.n - 1) * sizeof *rest.v);
        rest.n--;
    }
    if (primary.n == 0) {
        addr_list_free(&rest);
        return -1;
    }
    *primary_out = primary.v[0];
    free(primary.v);
    /* aliases: everything but the primary */
    size_t k = 0;
    for (size_t i = 0; i < rest.n; i++) {
        if (strcmp(rest.v[i], *primary_out) == 0)
            free(rest.v[i]);
        else
            rest.v[k++] = rest.v[i];
    }
    *aliases = rest.v;
    *n_aliases = k;
    return 0;
}

/* --- reading --- */

struct reader {
    const struct directory_ldap_source *src;
    struct directory_entry *e;
    size_t n, cap;
    char **dns;                   /* the DN of each entry (normalised), for members */
    char ***member_dns;           /* groups: member DNs until resolved */
    size_t *n_member_dns;
    json_t *problems;
    size_t bad_values, no_address;
    enum directory_kind kind;
    directory_ldap_progress_fn progress;
    void *arg;
    size_t estimate;
};

static int read_entry(void *arg, LDAP *ld, LDAPMessage *msg, struct error *err)
{
    struct reader *r = arg;
    const struct directory_ldap_attrs *a = &r->src->attrs;
    if (r->n >= r->src->max_entries) {
        error_set(err, "max_entries", "the directory has more than max_entries (%zu) users and "
                  "groups under %s; nothing was changed (raise max_entries or narrow the "
                  "filter)", r->src->max_entries, r->src->base_dn);
        return -1;
    }
    char *dn = ldap_get_dn(ld, msg);
    if (dn == NULL)
        return 0;
    struct berval **v;
    /* the address-bearing attributes; NULL when not mapped or absent */
    struct directory_ldap_values vals = {
        .proxy = a->proxy[0] ? ldap_get_values_len(ld, msg, a->proxy) : NULL,
        .mail = a->mail[0] ? ldap_get_values_len(ld, msg, a->mail) : NULL,
        .alias = a->alias[0] ? ldap_get_values_len(ld, msg, a->alias) : NULL,
        .upn = a->upn[0] ? ldap_get_values_len(ld, msg, a->upn) : NULL,
    };
    char *primary = NULL, **aliases = NULL;
    size_t n_aliases = 0;
    int rc = directory_ldap_entry_addresses(&vals, dn, r->problems, &r->bad_values, &primary,
                                            &aliases, &n_aliases);
    ldap_value_free_len(vals.proxy);
    ldap_value_free_len(vals.mail);
    ldap_value_free_len(vals.alias);
    ldap_value_free_len(vals.upn);
    if (rc < 0) {
        problem(r->problems, dn, NULL, "no e-mail address; skipped");
        r->no_address++;
        ldap_memfree(dn);
        return 0;
    }
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 1024;
        r->e = xreallocarray(r->e, r->cap, sizeof *r->e);
        r->dns = xreallocarray(r->dns, r->cap, sizeof *r->dns);
        r->member_dns = xreallocarray(r->member_dns, r->cap, sizeof *r->member_dns);
        r->n_member_dns = xreallocarray(r->n_member_dns, r->cap, sizeof *r->n_member_dns);
    }
    struct directory_entry *e = &r->e[r->n];
    memset(e, 0, sizeof *e);
    e->kind = r->kind;
    e->external_id = entry_id(ld, msg, a, dn);
    e->primary = primary;
    e->aliases = aliases;
    e->n_aliases = n_aliases;
    e->name = text_value(ld, msg, a->name);
    if (e->name == NULL)
        e->name = text_value(ld, msg, "cn");
    if (e->name == NULL)
        e->name = xstrdup("");
    r->member_dns[r->n] = NULL;
    r->n_member_dns[r->n] = 0;
    if (r->kind == DIRECTORY_GROUP && a->member[0] &&
        (v = ldap_get_values_len(ld, msg, a->member)) != NULL) {
        size_t cnt = 0;
        while (v[cnt] != NULL)
            cnt++;
        char **m = xcalloc(cnt ? cnt : 1, sizeof *m);
        size_t j = 0;
        for (size_t i = 0; i < cnt && j < r->src->max_entries; i++) {
            if (v[i]->bv_len == 0 || v[i]->bv_len > DIRECTORY_LDAP_VALUE_MAX ||
                memchr(v[i]->bv_val, '\0', v[i]->bv_len))
                continue;
            char *raw = xstrndup(v[i]->bv_val, v[i]->bv_len);
            m[j++] = directory_ldap_dn_norm(raw);
            free(raw);
        }
        ldap_value_free_len(v);
        r->member_dns[r->n] = m;
        r->n_member_dns[r->n] = j;
    }
    r->dns[r->n] = directory_ldap_dn_norm(dn);
    ldap_memfree(dn);
    r->n++;
    if (r->progress != NULL && (r->n % 100) == 0 && !r->progress(r->arg, r->n, r->estimate)) {
        error_set(err, "", "the read was stopped (moatd is shutting down); nothing was changed");
        return -1;
    }
    return 0;
}

/* resolve_members - group member DNs to the external ids read in this run */
static void resolve_members(struct reader *r)
{
    struct dn_map map = {0};
    for (size_t i = 0; i < r->n; i++)
        dn_map_put(&map, xstrdup(r->dns[i]), i);
    for (size_t i = 0; i < r->n; i++) {
        if (r->member_dns[i] == NULL)
            continue;
        struct directory_entry *e = &r->e[i];
        e->members = xcalloc(r->n_member_dns[i] ? r->n_member_dns[i] : 1, sizeof *e->members);
        for (size_t j = 0; j < r->n_member_dns[i]; j++) {
            size_t idx;
            if (dn_map_get(&map, r->member_dns[i][j], &idx) && idx != i)
                e->members[e->n_members++] = xstrdup(r->e[idx].external_id);
            free(r->member_dns[i][j]);
        }
        free(r->member_dns[i]);
        r->member_dns[i] = NULL;
    }
    dn_map_free(&map);
}

static void reader_free_scratch(struct reader *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->dns[i]);
        if (r->member_dns[i] != NULL) {
            for (size_t j = 0; j < r->n_member_dns[i]; j++)
                free(r->member_dns[i][j]);
            free(r->member_dns[i]);
        }
    }
    free(r->dns);
    free(r->member_dns);
    free(r->n_member_dns);
}

void directory_ldap_entries_free(struct directory_entry *e, size_t n)
{
    for (size_t i = 0; e && i < n; i++)
        directory_entry_clear(&e[i]);
    free(e);
}

/* search_attrs - the attributes to ask for: the map's, entryUUID and cn */
static void search_attrs(const struct directory_ldap_attrs *a, char **out, bool group)
{
    size_t n = 0;
    const char *want[] = { a->mail, a->proxy, a->alias, a->upn, a->name, a->id, "entryUUID",
                           "cn", group ? a->member : "" };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (want[i][0] != '\0')
            out[n++] = (char *)want[i];
    out[n] = NULL;
}

int directory_ldap_read(const struct directory_ldap_source *src, const char *password,
                        struct directory_entry **out, size_t *n, json_t *problems,
                        directory_ldap_progress_fn progress, void *arg, struct error *err)
{
    *out = NULL;
    *n = 0;
    if (!src->configured) {
        error_set(err, src->url[0] ? "base_dn" : "url", "the directory source is not "
                  "configured: set at least url and base_dn");
        return -1;
    }
    const char *used;
    LDAP *ld = connect_source(src, password, &used, err);
    if (ld == NULL)
        return -1;
    struct reader r = { .src = src, .problems = problems, .progress = progress, .arg = arg };
    char *attrs[12];
    int rc;
    r.kind = DIRECTORY_USER;
    search_attrs(&src->attrs, attrs, false);
    rc = paged_search(ld, src, src->filter, attrs, read_entry, &r, &r.estimate, err);
    if (rc == 0 && src->group_filter[0] != '\0') {
        r.kind = DIRECTORY_GROUP;
        search_attrs(&src->attrs, attrs, true);
        rc = paged_search(ld, src, src->group_filter, attrs, read_entry, &r, NULL, err);
    }
    ldap_unbind_ext_s(ld, NULL, NULL);
    if (rc == 0)
        resolve_members(&r);
    reader_free_scratch(&r);
    if (rc != 0) {
        directory_ldap_entries_free(r.e, r.n);
        return -1;
    }
    if (progress != NULL)
        progress(arg, r.n, r.n);
    log_info("event=ldap_read url=%s entries=%zu no_address=%zu bad_values=%zu", used, r.n,
             r.no_address, r.bad_values);
    *out = r.e;
    *n = r.n;
    return 0;
}

/* --- test connection --- */

struct sampler {
    size_t n;
    json_t *sample;
    const struct directory_ldap_attrs *a;
};

static int sample_entry(void *arg, LDAP *ld, LDAPMessage *e, struct error *err)
{
    struct sampler *s = arg;
    s->n++;
    if (json_array_size(s->sample) < 5) {
        char *dn = ldap_get_dn(ld, e);
        json_array_append_new(s->sample, json_string(dn ? dn : ""));
        ldap_memfree(dn);
    }
    return 0;
}

/* sample_search - at most a few entries (a client-side size limit) */
static json_t *sample_search(LDAP *ld, const struct directory_ldap_source *src,
                             const char *filter)
{
    struct sampler s = { .sample = json_array(), .a = &src->attrs };
    struct timeval tv = { src->timeout, 0 };
    LDAPMessage *res = NULL;
    char *attrs[] = { LDAP_NO_ATTRS, NULL };
    int rc = ldap_search_ext_s(ld, src->base_dn, LDAP_SCOPE_SUBTREE, filter, attrs, 0, NULL,
                               NULL, &tv, 5, &res);
    struct error err = {0};
    if (res != NULL)
        for (LDAPMessage *e = ldap_first_entry(ld, res); e; e = ldap_next_entry(ld, e))
            sample_entry(&s, ld, e, &err);
    ldap_msgfree(res);
    if (rc != LDAP_SUCCESS && rc != LDAP_SIZELIMIT_EXCEEDED) {
        ld_error(ld, rc, "search failed", &err, "");
        json_decref(s.sample);
        return json_pack("{s:b, s:s, s:i}", "ok", 0, "error", err.msg, "sampled", 0);
    }
    return json_pack("{s:b, s:i, s:o}", "ok", 1, "sampled", (int)s.n, "sample", s.sample);
}

json_t *directory_ldap_test(const struct directory_ldap_source *src, const char *password)
{
    struct error err = {0};
    const char *tls = strncmp(src->url, "ldaps:", 6) == 0 ? "ldaps" :
                      src->starttls ? "starttls" : "none";
    json_t *o = json_pack("{s:b, s:s, s:s}", "ok", 0, "server", src->url, "tls", tls);
    if (!src->configured) {
        json_object_set_new(o, "bind", json_pack("{s:b, s:s}", "ok", 0, "error",
                            "the directory source is not configured: set at least url and "
                            "base_dn"));
        return o;
    }
    const char *used;
    LDAP *ld = connect_source(src, password, &used, &err);
    if (ld == NULL) {
        json_object_set_new(o, "bind", json_pack("{s:b, s:s, s:s}", "ok", 0, "error", err.msg,
                                                 "field", err.field));
        return o;
    }
    json_object_set_new(o, "server", json_string(used));
    json_object_set_new(o, "bind", json_pack("{s:b, s:s}", "ok", 1, "as",
                                             src->bind_dn[0] ? src->bind_dn : "anonymous"));
    /* the root DSE: does the server offer paged results? */
    struct timeval tv = { src->timeout, 0 };
    LDAPMessage *res = NULL;
    char *rootattrs[] = { "supportedControl", NULL };
    bool paging = false;
    if (ldap_search_ext_s(ld, "", LDAP_SCOPE_BASE, "(objectClass=*)", rootattrs, 0, NULL, NULL,
                          &tv, 1, &res) == LDAP_SUCCESS) {
        LDAPMessage *e = ldap_first_entry(ld, res);
        struct berval **v = e ? ldap_get_values_len(ld, e, "supportedControl") : NULL;
        for (size_t i = 0; v && v[i]; i++)
            paging |= v[i]->bv_len == strlen(LDAP_PAGED_OID) &&
                      memcmp(v[i]->bv_val, LDAP_PAGED_OID, v[i]->bv_len) == 0;
        ldap_value_free_len(v);
    }
    ldap_msgfree(res);
    json_object_set_new(o, "paging", json_pack("{s:b}", "supported", paging));
    /* the base DN */
    res = NULL;
    char *noattrs[] = { LDAP_NO_ATTRS, NULL };
    int rc = ldap_search_ext_s(ld, src->base_dn, LDAP_SCOPE_BASE, "(objectClass=*)", noattrs, 0,
                               NULL, NULL, &tv, 1, &res);
    ldap_msgfree(res);
    if (rc != LDAP_SUCCESS) {
        ld_error(ld, rc, "base_dn", &err, "base_dn");
        json_object_set_new(o, "base_dn", json_pack("{s:b, s:s}", "ok", 0, "error", err.msg));
    } else {
        json_object_set_new(o, "base_dn", json_pack("{s:b}", "ok", 1));
    }
    json_t *users = sample_search(ld, src, src->filter);
    json_t *groups = src->group_filter[0] ? sample_search(ld, src, src->group_filter) : NULL;
    ldap_unbind_ext_s(ld, NULL, NULL);
    bool ok = rc == LDAP_SUCCESS && json_is_true(json_object_get(users, "ok")) &&
              (groups == NULL || json_is_true(json_object_get(groups, "ok")));
    json_t *search = json_pack("{s:b, s:O, s:O?, s:O?}", "ok", ok,
                               "users_sampled", json_object_get(users, "sampled"),
                               "groups_sampled", groups ? json_object_get(groups, "sampled") : NULL,
                               "sample", json_object_get(users, "sample"));
    json_t *uerr = json_object_get(users, "error");
    json_t *gerr = groups ? json_object_get(groups, "error") : NULL;
    if (uerr || gerr)
        json_object_set(search, "error", uerr ? uerr : gerr);
    json_object_set_new(o, "search", search);
    json_decref(users);
    json_decref(groups);
    json_object_set_new(o, "ok", json_boolean(ok));
    if (!paging)
        json_object_set_new(o, "warning", json_string(
            "the server does not announce paged results (RFC 2696): a directory larger than "
            "its size limit cannot be synchronised"));
    return o;
}
