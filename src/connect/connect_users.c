/*
 * connect_users.c - Connect's users and recipient_validation tasks.
 *
 * users: at least one user (synced or manual) under an internal domain.
 * The check is local: prepare counts users per internal domain; run only
 * evaluates.  A domain trusted without DNS proof (the lab override) counts,
 * and the details say so.
 *
 * recipient_validation: for every internal domain with a validating mode
 * (directory, known, call-forward), Moat's own SMTP listener (the first
 * smtp_listen address; a wildcard address is reached on loopback) is asked,
 * as the world would ask it: MAIL FROM:<>, RCPT TO a random address that
 * nobody has, which must get 550 5.1.1, and RCPT TO a known user's
 * address, which must get 250.  The probe uses the SMTP client's recipient
 * probe (no DATA, nothing is queued).  Domains are probed one after the
 * other; any other reply fails the check with the replies in the details.
 */
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sodium.h>
#include "../directory/directory.h"
#include "../smtp/smtp_client.h"
#include "connect_artefacts.h"
#include "connect_checks.h"

/* --- users --- */

json_t *connect_users_prepare(struct store *st, struct error *err)
{
    struct store_domain *d = NULL;
    size_t n = 0;
    if (store_domain_list(st, &d, &n, err) < 0)
        return NULL;
    json_t *doms = json_array();
    for (size_t i = 0; i < n; i++) {
        if (!store_domain_internal(&d[i]))
            continue;
        int64_t all = 0, manual = 0;
        if (store_dir_count(st, STORE_DIR_USER, -1, d[i].name, &all, err) < 0 ||
            store_dir_count(st, STORE_DIR_USER, STORE_DIR_MANUAL, d[i].name, &manual, err) < 0) {
            store_domains_free(d, n);
            json_decref(doms);
            return NULL;
        }
        json_array_append_new(doms, json_pack("{s:s, s:I, s:I, s:b}", "domain", d[i].name,
                                              "users", (json_int_t)all, "manual",
                                              (json_int_t)manual, "trusted_unverified",
                                              !d[i].verified));
    }
    store_domains_free(d, n);
    memset(err, 0, sizeof *err);
    return json_pack("{s:o}", "domains", doms);
}

void connect_users_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                       void *arg)
{
    struct connect_result r = { .outcome = CONNECT_PENDING };
    json_int_t users = 0, manual = 0;
    size_t i, n_doms = 0;
    json_t *d;
    json_array_foreach(json_object_get(input, "domains"), i, d) {
        json_int_t u = json_integer_value(json_object_get(d, "users"));
        users += u;
        manual += json_integer_value(json_object_get(d, "manual"));
        if (u > 0)
            n_doms++;
    }
    if (json_array_size(json_object_get(input, "domains")) == 0) {
        xsnprintf(r.message, sizeof r.message, "No validated domain yet: users live under "
                  "your validated domains (the domains task).");
    } else if (users == 0) {
        xsnprintf(r.message, sizeof r.message, "No user under a validated domain yet: add "
                  "them with `moat user add ADDRESS --name NAME`, or import a CSV file with "
                  "`moat user import FILE` (header email,name[,password][,aliases]).");
    } else {
        r.outcome = CONNECT_PASS;
        xsnprintf(r.message, sizeof r.message, "%lld users under %zu validated domain%s "
                  "(%lld added by hand, %lld synchronised from the directory).",
                  (long long)users, n_doms, n_doms == 1 ? "" : "s", (long long)manual,
                  (long long)(users - manual));
    }
    r.details = json_pack("{s:O}", "domains", json_object_get(input, "domains"));
    done(arg, &r);
    json_decref(r.details);
}

json_t *connect_users_instructions(struct store *st, struct error *err)
{
    json_t *steps = json_array(), *arts = json_array();
    json_array_append_new(steps, json_string(
        "Add the users, aliases and groups that are not in your directory (or all of them, "
        "without a directory): every address must be under one of your validated domains "
        "and belongs to exactly one user or group."));
    json_array_append_new(steps, json_string(
        "For many users, import a CSV file: a header line email,name (then optionally "
        "password and aliases), one user a line; aliases separated by ';' or spaces. Every "
        "refused row is reported with its line number; the others are imported."));
    json_array_append_new(arts, connect_artefact("shell", "Add users and a group",
        "moat user add ann@example.com --name 'Ann Admin' --alias a.admin@example.com\n"
        "moat group add sales@example.com --member ann@example.com\n"));
    json_array_append_new(arts, connect_artefact("csv", "users.csv (moat user import users.csv)",
        "email,name,password,aliases\n"
        "ann@example.com,Ann Admin,,a.admin@example.com;ann.admin@example.com\n"
        "bob@example.com,\"Builder, Bob\",,\n"));
    return json_pack("{s:o, s:o}", "steps", steps, "artefacts", arts);
}

/* --- recipient validation --- */

json_t *connect_rv_prepare(struct store *st, struct error *err)
{
    struct store_rv_domain *rv = NULL;
    size_t n = 0;
    if (store_rv_list(st, &rv, &n, err) < 0)
        return NULL;
    json_t *doms = json_array();
    for (size_t i = 0; i < n; i++) {
        struct store_domain d;
        if (strcmp(rv[i].mode, "accept-all") == 0 || store_domain_get(st, rv[i].domain, &d, err) < 0)
            continue;
        bool internal = store_domain_internal(&d);
        store_domain_clear(&d);
        if (!internal)
            continue;
        char known[321] = "";
        int src = strcmp(rv[i].mode, "directory") == 0 ? STORE_DIR_DIRECTORY : -1;
        struct error e2;
        int rc = store_dir_sample(st, rv[i].domain, src, known, sizeof known, &e2);
        if (rc == STORE_ERR) {
            *err = e2;
            store_rv_free(rv, n);
            json_decref(doms);
            return NULL;
        }
        /* a name nobody has: random, so no cache or real mailbox answers for it */
        unsigned char raw[8];
        char hex[17], unknown[300];
        randombytes_buf(raw, sizeof raw);
        sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
        xsnprintf(unknown, sizeof unknown, "moat-probe-%s@%s", hex, rv[i].domain);
        json_t *o = json_pack("{s:s, s:s, s:s}", "domain", rv[i].domain, "mode", rv[i].mode,
                              "unknown", unknown);
        if (rc == STORE_OK)
            json_object_set_new(o, "known", json_string(known));
        json_array_append_new(doms, o);
    }
    store_rv_free(rv, n);
    memset(err, 0, sizeof *err);
    return json_pack("{s:o}", "domains", doms);
}

struct rv_job {
    const struct connect_env *env;
    struct smtp_client_config ccfg;
    json_t *domains;              /* the input's, referenced */
    size_t next;
    json_t *results;
    bool failed, unknown_outcome;
    connect_done_cb done;
    void *arg;
    struct sockaddr_storage sa;
    socklen_t salen;
    char target[96];
    struct smtp_client_rcpt rcpts[2];
    struct smtp_client_msg msg;
};

static void rv_next(struct rv_job *j);

static void rv_finish(struct rv_job *j)
{
    struct connect_result r = { .outcome = CONNECT_PASS };
    size_t n = json_array_size(j->results);
    if (j->failed) {
        r.outcome = CONNECT_FAIL;
        xsnprintf(r.message, sizeof r.message, "Recipient validation does not work as set for "
                  "every domain: see the replies in the details (an unknown address must get "
                  "550 5.1.1, a known one 250).");
    } else if (j->unknown_outcome) {
        r.outcome = CONNECT_UNKNOWN;
        xsnprintf(r.message, sizeof r.message, "Moat's own SMTP listener %s could not be "
                  "probed; try again.", j->target);
    } else {
        xsnprintf(r.message, sizeof r.message, "Recipient validation works for %zu domain%s: "
                  "an unknown address gets 550 5.1.1 at RCPT time, a known one is accepted.",
                  n, n == 1 ? "" : "s");
    }
    r.details = json_pack("{s:s, s:O}", "listener", j->target, "domains", j->results);
    j->done(j->arg, &r);
    json_decref(r.details);
    json_decref(j->results);
    json_decref(j->domains);
    free(j);
}

static void rv_sent(void *arg, struct smtp_conn *c, const struct smtp_send_result *res)
{
    struct rv_job *j = arg;
    json_t *d = json_array_get(j->domains, j->next);
    bool has_known = j->msg.n_rcpts == 2;
    if (c != NULL)
        smtp_conn_quit(c);
    int uc = res->codes[0];
    const char *udiag = res->diags[0];
    bool unknown_ok = uc == 550 && strstr(udiag, "5.1.1") != NULL;
    bool known_ok = !has_known || (res->codes[1] >= 200 && res->codes[1] < 300);
    json_t *o = json_pack("{s:O, s:O, s:O, s:s, s:b}", "domain", json_object_get(d, "domain"),
                          "mode", json_object_get(d, "mode"), "unknown",
                          json_object_get(d, "unknown"), "unknown_reply", udiag,
                          "ok", unknown_ok && known_ok);
    if (has_known) {
        json_object_set(o, "known", json_object_get(d, "known"));
        json_object_set_new(o, "known_reply", json_string(res->diags[1]));
    } else {
        json_object_set_new(o, "known_reply", json_string("not probed: no user under this "
                                                          "domain yet"));
    }
    if (!(unknown_ok && known_ok))
        j->failed = true;
    json_array_append_new(j->results, o);
    j->next++;
    rv_next(j);
}

static void rv_ready(void *arg, struct smtp_conn *c, enum smtp_conn_error e, int code,
                     const char *diag)
{
    struct rv_job *j = arg;
    if (e != SMTP_CONN_OK) {
        json_t *d = json_array_get(j->domains, j->next);
        json_array_append_new(j->results, json_pack("{s:O, s:s, s:b}", "domain",
                              json_object_get(d, "domain"), "error", diag ? diag : "",
                              "ok", 0));
        j->unknown_outcome = true;
        rv_finish(j);
        return;
    }
    json_t *d = json_array_get(j->domains, j->next);
    j->rcpts[0].addr = json_string_value(json_object_get(d, "unknown"));
    j->rcpts[1].addr = json_string_value(json_object_get(d, "known"));
    memset(&j->msg, 0, sizeof j->msg);
    j->msg.qid = "NOQUEUE";
    j->msg.sender = "";
    j->msg.rcpts = j->rcpts;
    j->msg.n_rcpts = j->rcpts[1].addr != NULL ? 2 : 1;
    j->msg.flags = SMTP_MSG_PROBE;
    smtp_conn_send(c, &j->msg, rv_sent, j);
}

static void rv_next(struct rv_job *j)
{
    if (j->next >= json_array_size(j->domains)) {
        rv_finish(j);
        return;
    }
    smtp_conn_open(&j->ccfg, (struct sockaddr *)&j->sa, j->salen, "moat",
                   SMTP_CLIENT_TLS_NONE, rv_ready, j);
}

void connect_rv_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                    void *arg)
{
    json_t *doms = json_object_get(input, "domains");
    if (json_array_size(doms) == 0) {
        struct connect_result r = { .outcome = CONNECT_PENDING };
        xsnprintf(r.message, sizeof r.message, "No domain validates its recipients yet: choose "
                  "a mode per domain, e.g. `moat rv set example.com --mode known` (directory, "
                  "known, call-forward).");
        done(arg, &r);
        return;
    }
    struct rv_job *j = xcalloc(1, sizeof *j);
    j->env = env;
    j->done = done;
    j->arg = arg;
    j->domains = json_incref(doms);
    j->results = json_array();
    j->ccfg.base = env->base;
    j->ccfg.helo_name = env->hostname;
    /* call-forward domains make Moat ask their route: leave it its timeout */
    int64_t t = env->settings->rv_callforward_timeout + 10;
    j->ccfg.timeout_connect = 10;
    j->ccfg.timeout_command = (int)t;
    j->ccfg.timeout_data = (int)t;
    if (connect_listener_target(env->settings, &j->sa, &j->salen, j->target,
                                sizeof j->target) < 0) {
        struct connect_result r = { .outcome = CONNECT_FAIL };
        xsnprintf(r.message, sizeof r.message, "Moat's SMTP listener address (smtp_listen) "
                  "cannot be probed: it is not an IP address and port.");
        json_decref(j->results);
        json_decref(j->domains);
        free(j);
        done(arg, &r);
        return;
    }
    rv_next(j);
}

json_t *connect_rv_instructions(struct store *st, struct error *err)
{
    json_t *steps = json_array(), *arts = json_array();
    json_array_append_new(steps, json_string(
        "Choose, per domain, how Moat tells known recipients from unknown ones: directory "
        "(users and groups synchronised from your directory), known (those and the ones "
        "added by hand), call-forward (Moat asks your mail server with an RCPT probe and "
        "remembers the answer) or accept-all (no validation)."));
    json_array_append_new(steps, json_string(
        "Choose what happens when the source cannot answer (the directory was never "
        "synchronised, your mail server is down): tempfail (450 4.4.3, senders retry) or "
        "accept. Unknown recipients get 550 5.1.1 at RCPT time, and each refusal is logged "
        "with its reason."));
    json_array_append_new(arts, connect_artefact("shell", "Recipient validation",
        "moat rv set example.com --mode known --unreachable tempfail\n"
        "moat rv show\n"));
    return json_pack("{s:o, s:o}", "steps", steps, "artefacts", arts);
}
