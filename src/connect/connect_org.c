/*
 * connect_org.c - the organisation task ("Describe your organisation") and
 * the organisation itself as the API reads and changes it.
 *
 * The organisation is what every generated artefact and several checks
 * read: the mail environment (Microsoft 365, on-premises Exchange, hybrid,
 * Google Workspace, another SMTP server), an emergency contact, Moat's
 * public host names (the MX targets) and addresses (what the mail server
 * and its firewall must allow), and the lockdown probe's source address.
 *
 * Entry points: connect_org_get / connect_org_update (the API's GET and
 * PATCH /api/v1/organisation: strict members, each validated with the
 * field named), and the task's prepare / run / instructions.  The check is
 * local ("filled in"), so run answers at once; it lives on the loop only
 * because every check does.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <string.h>
#include "connect_priv.h"

#define ORG_MAX_TEXT 128      /* name, contact name */
#define ORG_MAX_PHONE 40
#define ORG_MAX_EMAIL 254     /* RFC 5321 4.5.3.1.3 path limit less the brackets */
#define ORG_MAX_LIST 16       /* host names / addresses (connect_artefacts.h CONNECT_ORG_MAX) */

static const char *const environments[] = { "microsoft365", "exchange", "hybrid", "google",
                                            "smtp", NULL };

static json_t *strings_json(char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static json_t *org_json(const struct store_organisation *o)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:s, s:I, s:s}",
                     "name", o->name, "environment", o->environment,
                     "contact_name", o->contact_name, "contact_email", o->contact_email,
                     "contact_phone", o->contact_phone,
                     "public_hosts", strings_json(o->public_hosts, o->n_public_hosts),
                     "public_ips", strings_json(o->public_ips, o->n_public_ips),
                     "probe_source", o->probe_source, "updated", (json_int_t)o->updated,
                     "updated_by", o->updated_by);
}

json_t *connect_org_get(struct store *st, struct error *err)
{
    struct store_organisation o;
    if (store_organisation_get(st, &o, err) < 0)
        return NULL;
    json_t *j = org_json(&o);
    store_organisation_clear(&o);
    return j;
}

/* --- validation --- */

static bool has_control(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return true;
    return false;
}

/* text_member - an optional string member, at most max bytes, no control characters */
static int text_member(json_t *patch, const char *key, size_t max, char **dst, struct error *err)
{
    json_t *v = json_object_get(patch, key);
    if (v == NULL)
        return 0;
    if (!json_is_string(v)) {
        error_set(err, key, "%s must be a string", key);
        return -1;
    }
    const char *s = json_string_value(v);
    if (strlen(s) > max || has_control(s)) {
        error_set(err, key, "%s must be at most %zu characters, without control characters",
                  key, max);
        return -1;
    }
    free(*dst);
    *dst = xstrdup(s);
    return 0;
}

/* email_valid - a plain addr-spec: dot-atom local part, a DNS domain with a dot */
static bool email_valid(const char *s)
{
    const char *at = strrchr(s, '@');
    if (at == NULL || at == s || strlen(s) > ORG_MAX_EMAIL)
        return false;
    for (const char *p = s; p < at; p++) {
        unsigned char c = (unsigned char)*p;
        if (!(isalnum(c) || strchr("!#$%&'*+-/=?^_`{|}~.", c) != NULL))
            return false;
        if (c == '.' && (p == s || p + 1 == at || p[1] == '.'))
            return false;
    }
    char dom[256];
    if (str_copy(dom, sizeof dom, at + 1) < 0)
        return false;
    str_lower(dom);
    return strchr(dom, '.') != NULL && domain_name_valid(dom);
}

static bool phone_valid(const char *s)
{
    int digits = 0;
    for (const char *p = s; *p; p++) {
        if (isdigit((unsigned char)*p))
            digits++;
        else if (strchr("+ ()-./", *p) == NULL)
            return false;
    }
    return digits >= 3;
}

/* ip_normalise - an IPv4 or IPv6 address in its canonical text form; -1 if not one */
static int ip_normalise(const char *s, char *out, size_t size)
{
    unsigned char buf[sizeof(struct in6_addr)];
    if (inet_pton(AF_INET, s, buf) == 1)
        return inet_ntop(AF_INET, buf, out, (socklen_t)size) ? 0 : -1;
    if (inet_pton(AF_INET6, s, buf) == 1)
        return inet_ntop(AF_INET6, buf, out, (socklen_t)size) ? 0 : -1;
    return -1;
}

/* host_normalise - a fully qualified host name, lower case, without a final dot */
static int host_normalise(const char *s, char *out, size_t size)
{
    size_t n = strlen(s);
    if (n > 0 && s[n - 1] == '.')
        n--;
    if (n == 0 || n >= size)
        return -1;
    memcpy(out, s, n);
    out[n] = '\0';
    str_lower(out);
    if (strchr(out, '.') == NULL || !domain_name_valid(out))
        return -1;
    return 0;
}

static void strings_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* list_member - an optional array of host names (hosts true) or IP addresses,
 * normalised, without duplicates, at most ORG_MAX_LIST */
static int list_member(json_t *patch, const char *key, bool hosts, char ***dst, size_t *n,
                       struct error *err)
{
    json_t *v = json_object_get(patch, key);
    if (v == NULL)
        return 0;
    if (!json_is_array(v)) {
        error_set(err, key, "%s must be an array of %s", key,
                  hosts ? "host names" : "IP addresses");
        return -1;
    }
    if (json_array_size(v) > ORG_MAX_LIST) {
        error_set(err, key, "%s: at most %d entries", key, ORG_MAX_LIST);
        return -1;
    }
    char **out = xcalloc(json_array_size(v) + 1, sizeof *out);
    size_t k = 0, i;
    json_t *e;
    json_array_foreach(v, i, e) {
        char norm[256], shown[80];
        const char *s = json_string_value(e);
        int rc = s == NULL ? -1 : hosts ? host_normalise(s, norm, sizeof norm)
                                        : ip_normalise(s, norm, sizeof norm);
        if (rc < 0) {
            error_set(err, key, "%s[%zu]: %s is not %s", key, i,
                      s ? log_quote(shown, sizeof shown, s) : "(not a string)",
                      hosts ? "a fully qualified host name (mx1.example.com)"
                            : "an IPv4 or IPv6 address");
            strings_free(out, k);
            return -1;
        }
        for (size_t j = 0; j < k; j++) {
            if (strcmp(out[j], norm) == 0) {
                error_set(err, key, "%s: %s is listed twice", key, norm);
                strings_free(out, k);
                return -1;
            }
        }
        out[k++] = xstrdup(norm);
    }
    strings_free(*dst, *n);
    *dst = out;
    *n = k;
    return 0;
}

int connect_org_update(struct store *st, json_t *patch, const char *who, json_t **before,
                       json_t **after, struct error *err)
{
    struct store_organisation o;
    if (before)
        *before = NULL;
    if (after)
        *after = NULL;
    if (!json_is_object(patch)) {
        error_set(err, "body", "the body must be a JSON object");
        return -1;
    }
    if (store_organisation_get(st, &o, err) < 0)
        return -1;
    json_t *old = org_json(&o);
    int rc = -1;

    if (text_member(patch, "name", ORG_MAX_TEXT, &o.name, err) < 0 ||
        text_member(patch, "environment", 32, &o.environment, err) < 0)
        goto out;
    if (o.environment[0] != '\0') {
        bool ok = false;
        for (const char *const *e = environments; *e; e++)
            ok = ok || strcmp(*e, o.environment) == 0;
        if (!ok) {
            error_set(err, "environment", "environment must be microsoft365, exchange, hybrid, "
                      "google or smtp");
            goto out;
        }
    }
    if (text_member(patch, "contact_name", ORG_MAX_TEXT, &o.contact_name, err) < 0 ||
        text_member(patch, "contact_email", ORG_MAX_EMAIL, &o.contact_email, err) < 0 ||
        text_member(patch, "contact_phone", ORG_MAX_PHONE, &o.contact_phone, err) < 0 ||
        text_member(patch, "probe_source", 64, &o.probe_source, err) < 0)
        goto out;
    if (json_object_get(patch, "contact_email") != NULL && o.contact_email[0] != '\0' &&
        !email_valid(o.contact_email)) {
        error_set(err, "contact_email", "contact_email must be an e-mail address "
                  "(name@example.com)");
        goto out;
    }
    if (json_object_get(patch, "contact_phone") != NULL && o.contact_phone[0] != '\0' &&
        !phone_valid(o.contact_phone)) {
        error_set(err, "contact_phone", "contact_phone may hold digits, spaces and + ( ) - . /");
        goto out;
    }
    if (json_object_get(patch, "probe_source") != NULL && o.probe_source[0] != '\0') {
        char norm[64];
        if (ip_normalise(o.probe_source, norm, sizeof norm) < 0) {
            error_set(err, "probe_source", "probe_source must be an IPv4 or IPv6 address of "
                      "this machine (or empty)");
            goto out;
        }
        free(o.probe_source);
        o.probe_source = xstrdup(norm);
    }
    if (list_member(patch, "public_hosts", true, &o.public_hosts, &o.n_public_hosts, err) < 0 ||
        list_member(patch, "public_ips", false, &o.public_ips, &o.n_public_ips, err) < 0)
        goto out;
    if (store_organisation_set(st, &o, who, err) < 0)
        goto out;
    rc = 0;
    if (before) {
        *before = old;
        old = NULL;
    }
    if (after) {
        store_organisation_clear(&o);
        if (store_organisation_get(st, &o, err) == 0)
            *after = org_json(&o);
    }
out:
    json_decref(old);
    store_organisation_clear(&o);
    return rc;
}

/* --- the task --- */

json_t *connect_org_prepare(struct store *st, struct error *err)
{
    return connect_org_get(st, err);
}

/* connect_org_evaluate - "filled in": environment, emergency contact name and a
 * valid e-mail address, at least one public host name and one public address */
void connect_org_evaluate(json_t *input, struct connect_result *r)
{
    const char *missing[6];
    size_t n = 0;
    const char *env = json_string_value(json_object_get(input, "environment"));
    const char *cname = json_string_value(json_object_get(input, "contact_name"));
    const char *cmail = json_string_value(json_object_get(input, "contact_email"));
    json_t *hosts = json_object_get(input, "public_hosts");
    json_t *ips = json_object_get(input, "public_ips");

    if (env == NULL || env[0] == '\0')
        missing[n++] = "the mail environment (--environment)";
    if (cname == NULL || cname[0] == '\0')
        missing[n++] = "the emergency contact's name (--contact-name)";
    if (cmail == NULL || !email_valid(cmail))
        missing[n++] = "the emergency contact's e-mail address (--contact-email)";
    if (json_array_size(hosts) == 0)
        missing[n++] = "at least one public host name of Moat (--public-host)";
    if (json_array_size(ips) == 0)
        missing[n++] = "at least one public IP address of Moat (--public-ip)";

    json_t *miss = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(miss, json_string(missing[i]));
    if (n > 0)
        r->details = json_pack("{s:o}", "missing", miss);
    else
        json_decref(miss);
    if (n == 0) {
        r->outcome = CONNECT_PASS;
        xsnprintf(r->message, sizeof r->message, "The organisation is described: %s, emergency "
                  "contact %s, %zu public host name%s and %zu public address%s.",
                  env, cname, json_array_size(hosts), json_array_size(hosts) == 1 ? "" : "s",
                  json_array_size(ips), json_array_size(ips) == 1 ? "" : "es");
        return;
    }
    struct buf b;
    buf_init(&b);
    buf_append_str(&b, "Still missing: ");
    for (size_t i = 0; i < n; i++)
        buf_printf(&b, "%s%s", i == 0 ? "" : i + 1 == n ? " and " : ", ", missing[i]);
    buf_append_str(&b, ".");
    r->outcome = CONNECT_FAIL;
    /* the longest list fits; truncation would only shorten the sentence */
    snprintf(r->message, sizeof r->message, "%s", buf_cstr(&b));
    buf_free(&b);
}

void connect_org_run(const struct connect_env *env, json_t *input, connect_done_cb done, void *arg)
{
    struct connect_result r = { .outcome = CONNECT_UNKNOWN };
    connect_org_evaluate(input, &r);
    done(arg, &r);
    json_decref(r.details);   /* NULL when the engine took it */
}

json_t *connect_org_instructions(struct store *st, struct error *err)
{
    struct store_organisation o;
    if (store_organisation_get(st, &o, err) < 0)
        return NULL;
    json_t *steps = json_array();
    json_array_append_new(steps, json_string(
        "Choose the environment of your mail server: microsoft365 (Exchange Online), exchange "
        "(on-premises Exchange), hybrid, google (Google Workspace) or smtp (another SMTP "
        "server such as Postfix). Every instruction Connect generates is written for it."));
    json_array_append_new(steps, json_string(
        "Name an emergency contact: the person Moat's operators reach when mail stops "
        "flowing."));
    json_array_append_new(steps, json_string(
        "Enter Moat's public host names (the names your MX records will point at; each must "
        "resolve to Moat) and Moat's public IP addresses (the addresses your mail server and "
        "firewall will accept mail from)."));
    json_array_append_new(steps, json_string(
        "Optionally, a probe source address: an address of this machine that is not one of "
        "Moat's public addresses, used by the lockdown check to confirm your mail server "
        "refuses everyone but Moat."));

    /* the command that completes what is missing, with the values already set */
    struct buf b;
    buf_init(&b);
    buf_append_str(&b, "moat org set");
    if (o.environment[0])
        buf_printf(&b, " --environment %s", o.environment);
    else
        buf_append_str(&b, " --environment microsoft365|exchange|hybrid|google|smtp");
    buf_printf(&b, " --contact-name '%s'", o.contact_name[0] ? o.contact_name : "NAME");
    buf_printf(&b, " --contact-email %s", o.contact_email[0] ? o.contact_email : "EMAIL");
    for (size_t i = 0; i < o.n_public_hosts; i++)
        buf_printf(&b, " --public-host %s", o.public_hosts[i]);
    if (o.n_public_hosts == 0)
        buf_append_str(&b, " --public-host HOSTNAME");
    for (size_t i = 0; i < o.n_public_ips; i++)
        buf_printf(&b, " --public-ip %s", o.public_ips[i]);
    if (o.n_public_ips == 0)
        buf_append_str(&b, " --public-ip ADDRESS");
    json_array_append_new(steps, json_pack("s+", "On the command line: ", buf_cstr(&b)));
    buf_free(&b);
    store_organisation_clear(&o);
    return json_pack("{s:o, s:[]}", "steps", steps, "artefacts");
}
