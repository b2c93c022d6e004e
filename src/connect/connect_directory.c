/*
 * connect_directory.c - Connect's directory task: "Synchronise your
 * directory".  Its check is local: a sync from the LDAP / Active Directory
 * source has been applied (the record of runs, store_ldap.c), with its
 * counts in the message.  Not configured: fail, with the command to
 * configure it; configured but never run: pending (the schedule will run
 * it; the message gives the commands to run it now); the latest attempt
 * failed (bind, TLS, the safety stop) and none ever succeeded: fail, with
 * its error.
 *
 * prepare reads the source and the runs on the calling thread; run only
 * evaluates that input on the loop (no I/O).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "connect_checks.h"
#include "connect_artefacts.h"
#include "../directory/directory_ldap.h"

json_t *connect_directory_prepare(struct store *st, struct error *err)
{
    struct store_ldap_source raw;
    if (store_ldap_source_get(st, &raw, err) < 0)
        return NULL;
    json_t *cfg = json_loads(raw.config, 0, NULL);
    struct directory_ldap_source src;
    struct error perr = {0};
    bool configured = false;
    char *url = NULL;
    if (cfg != NULL && directory_ldap_source_parse(cfg, &src, &perr) == 0) {
        configured = src.configured;
        url = xstrdup(src.url);
        directory_ldap_source_clear(&src);
    }
    json_decref(cfg);
    store_ldap_source_clear(&raw);
    json_t *in = json_pack("{s:b, s:s}", "configured", configured, "url", url ? url : "");
    free(url);
    struct store_ldap_run *last = NULL, *ok = NULL;
    int rc = store_ldap_run_last(st, "apply", NULL, &last, err);
    if (rc == STORE_OK)
        json_object_set_new(in, "last", directory_sync_run_json(last));
    store_ldap_runs_free(last, last ? 1 : 0);
    if (rc == STORE_ERR) {
        json_decref(in);
        return NULL;
    }
    rc = store_ldap_run_last(st, "apply", "ok", &ok, err);
    if (rc == STORE_OK)
        json_object_set_new(in, "last_ok", directory_sync_run_json(ok));
    store_ldap_runs_free(ok, ok ? 1 : 0);
    if (rc == STORE_ERR) {
        json_decref(in);
        return NULL;
    }
    memset(err, 0, sizeof *err);
    return in;
}

static json_int_t num(json_t *run, const char *key)
{
    return json_integer_value(json_object_get(run, key));
}

/* connect_directory_evaluate - the outcome for prepare's input */
static void connect_directory_evaluate(json_t *in, struct connect_result *r)
{
    json_t *last = json_object_get(in, "last"), *ok = json_object_get(in, "last_ok");
    if (ok != NULL) {
        char when[32];
        time_iso8601(when, sizeof when, (time_t)num(ok, "finished"));
        r->outcome = CONNECT_PASS;
        xsnprintf(r->message, sizeof r->message, "Directory synchronised at %s: %lld entries "
                  "read; %lld created, %lld updated, %lld removed, %lld unchanged; %lld "
                  "addresses under unvalidated domains not imported.", when,
                  (long long)num(ok, "entries"), (long long)num(ok, "created"),
                  (long long)num(ok, "updated"), (long long)num(ok, "removed"),
                  (long long)num(ok, "unchanged"), (long long)num(ok, "skipped_unvalidated"));
        r->details = json_pack("{s:O}", "last_applied", ok);
        if (last != NULL && num(last, "id") != num(ok, "id")) {
            json_object_set(r->details, "latest", last);
            size_t l = strlen(r->message);
            xsnprintf(r->message + l, sizeof r->message - l, " The latest sync did not "
                      "apply (%s): %s", json_string_value(json_object_get(last, "outcome")),
                      json_string_value(json_object_get(last, "message")));
        }
        return;
    }
    if (!json_is_true(json_object_get(in, "configured"))) {
        r->outcome = CONNECT_FAIL;
        xsnprintf(r->message, sizeof r->message, "No directory source yet: set it with `moat "
                  "directory set --ldap-url ldaps://HOST --base-dn DN --bind-dn DN "
                  "--password-stdin`, then run `moat directory test`, `moat directory preview` "
                  "and `moat directory sync`.");
        return;
    }
    if (last != NULL) {
        r->outcome = CONNECT_FAIL;
        xsnprintf(r->message, sizeof r->message, "No sync has been applied yet; the last one "
                  "(%s) did not: %s", json_string_value(json_object_get(last, "outcome")),
                  json_string_value(json_object_get(last, "message")));
        r->details = json_pack("{s:O}", "latest", last);
        return;
    }
    r->outcome = CONNECT_PENDING;
    xsnprintf(r->message, sizeof r->message, "The directory source %s is configured but no "
              "sync has been applied yet: run `moat directory test`, `moat directory preview`, "
              "then `moat directory sync`.", json_string_value(json_object_get(in, "url")));
}

void connect_directory_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                           void *arg)
{
    struct connect_result r = { .outcome = CONNECT_UNKNOWN };
    connect_directory_evaluate(input, &r);
    done(arg, &r);
    json_decref(r.details);   /* NULL when the engine took it */
}

json_t *connect_directory_instructions(struct store *st, struct error *err)
{
    json_t *steps = json_array(), *arts = json_array();
    json_array_append_new(steps, json_string(
        "Create a read-only account in your directory for Moat (in Active Directory an "
        "ordinary domain user is enough): Moat binds with it and reads users and groups."));
    json_array_append_new(steps, json_string(
        "Give Moat the server (ldaps://, or ldap:// with StartTLS; a second server as "
        "fallback), the CA that signed its certificate, the bind account and its password, "
        "and the base DN. The presets active_directory and openldap bring the filters and "
        "attribute maps (mail, proxyAddresses SMTP:/smtp:, userPrincipalName, displayName; "
        "mail, mailAlternativeAddress, cn; groups with their members)."));
    json_array_append_new(steps, json_string(
        "Test the connection, preview the sync (users to create, update and remove; "
        "addresses under domains that are not validated are reported, never imported), then "
        "apply it. Moat then syncs on its schedule (default 06:00, 12:00 and 18:00); a sync "
        "that would remove more than 10 % of the users stops and waits for --confirm."));
    json_array_append_new(arts, connect_artefact("shell", "Active Directory",
        "moat directory set --preset active_directory --ldap-url ldaps://dc1.example.com "
        "--fallback-url ldaps://dc2.example.com --ca-file /etc/moat/ad-ca.pem "
        "--bind-dn 'CN=moat-sync,OU=Service,DC=example,DC=com' "
        "--base-dn 'DC=example,DC=com' --password-stdin\n"
        "moat directory test\nmoat directory preview\nmoat directory sync\n"));
    json_array_append_new(arts, connect_artefact("shell", "OpenLDAP",
        "moat directory set --preset openldap --ldap-url ldap://ldap.example.com --starttls "
        "--ca-file /etc/moat/ldap-ca.pem --bind-dn 'cn=moat,ou=service,dc=example,dc=com' "
        "--base-dn 'ou=people,dc=example,dc=com' --password-stdin\n"
        "moat directory test\nmoat directory preview\nmoat directory sync\n"));
    return json_pack("{s:o, s:o}", "steps", steps, "artefacts", arts);
}
