/*
 * connect_permitted.c - Connect's permitted_senders task (issue 7).
 *
 * prepare counts the organisation-wide permitted senders and the
 * auto-allowed ones, and picks one entry to show the bypass with: an
 * organisation-wide entry (recipient: a user under an internal domain) or
 * else an auto-allowed one (recipient: its user).  run asks Moat's own SMTP
 * listener, as the world would, from a loopback source that is not the
 * listener's own address (127.0.0.77 for an IPv4 loopback listener): MAIL
 * FROM the permitted sender, RCPT TO the recipient, which must get 250 at
 * once (not greylisted); then MAIL FROM a random unknown sender to the same
 * recipient, which gets 451 4.7.1 when greylisting is on.  Both are
 * recipient probes (no DATA, nothing is queued).
 *
 * No entry at all: pending, with the instructions (the CSV format, what a
 * permitted sender skips and what it never skips).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sodium.h>
#include "../smtp/smtp_client.h"
#include "connect_artefacts.h"
#include "connect_checks.h"

#define PROBE_SOURCE4 "127.0.0.77"
#define AUTO_LIFETIME_DEFAULT (120 * 86400)

/* --- prepare (calling thread) --- */

struct pick {
    char user[STORE_PERMITTED_VALUE_MAX + 1];
    char value[STORE_PERMITTED_VALUE_MAX + 1];
    bool org;
};

/* pick_entry - the first organisation-wide entry, else the first auto one */
static int pick_entry(void *arg, const struct store_permitted *e)
{
    struct pick *p = arg;
    if (e->user[0] == '\0') {
        p->org = true;
        (void)str_copy(p->user, sizeof p->user, "");
        (void)str_copy(p->value, sizeof p->value, e->value);
        return 1;
    }
    if (p->value[0] == '\0' && strcmp(e->source, "auto") == 0) {
        (void)str_copy(p->user, sizeof p->user, e->user);
        (void)str_copy(p->value, sizeof p->value, e->value);
    }
    return 0;
}

/* sample_recipient - a user under an internal domain, else postmaster there */
static int sample_recipient(struct store *st, char *out, size_t size, struct error *err)
{
    struct store_domain *d = NULL;
    size_t n = 0;
    if (store_domain_list(st, &d, &n, err) < 0)
        return -1;
    out[0] = '\0';
    for (size_t i = 0; i < n && out[0] == '\0'; i++) {
        if (!store_domain_internal(&d[i]))
            continue;
        struct error e2 = {0};
        if (store_dir_sample(st, d[i].name, -1, out, size, &e2) != STORE_OK)
            xsnprintf(out, size, "postmaster@%s", d[i].name);
    }
    store_domains_free(d, n);
    return 0;
}

json_t *connect_permitted_prepare(struct store *st, struct error *err)
{
    int64_t expired_before = (int64_t)time(NULL) - AUTO_LIFETIME_DEFAULT;
    int64_t org = 0, autos = 0;
    if (store_permitted_count(st, expired_before, &org, &autos, err) < 0)
        return NULL;
    struct pick p = {0};
    if (store_permitted_each(st, expired_before, pick_entry, &p, err) < 0)
        return NULL;
    json_t *in = json_pack("{s:I, s:I}", "org", (json_int_t)org, "auto", (json_int_t)autos);
    if (p.value[0] == '\0')
        return in;
    char rcpt[321] = "";
    if (p.org) {
        if (sample_recipient(st, rcpt, sizeof rcpt, err) < 0) {
            json_decref(in);
            return NULL;
        }
    } else {
        (void)str_copy(rcpt, sizeof rcpt, p.user);
    }
    /* a domain entry: an address under it */
    char sender[STORE_PERMITTED_VALUE_MAX + 32];
    if (strchr(p.value, '@') != NULL)
        (void)str_copy(sender, sizeof sender, p.value);
    else
        xsnprintf(sender, sizeof sender, "moat-probe@%s", p.value);
    unsigned char raw[8];
    char hex[17], unknown[64];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
    xsnprintf(unknown, sizeof unknown, "moat-probe-%s@unknown-sender.invalid", hex);
    if (rcpt[0] != '\0')
        json_object_set_new(in, "probe", json_pack("{s:s, s:s, s:s, s:s}", "entry", p.value,
                                                   "sender", sender, "unknown", unknown,
                                                   "rcpt", rcpt));
    memset(err, 0, sizeof *err);
    return in;
}

/* --- run (the loop) --- */

struct perm_job {
    const struct connect_env *env;
    struct smtp_client_config ccfg;
    json_t *input;
    connect_done_cb done;
    void *arg;
    struct sockaddr_storage sa, src;
    socklen_t salen;
    char target[96];
    int step;                          /* 0: the permitted sender, 1: an unknown one */
    char replies[2][SMTP_DIAG_MAX];
    int codes[2];
    bool conn_failed;
    struct smtp_client_rcpt rcpt;
    struct smtp_client_msg msg;
};

static void perm_next(struct perm_job *j);

static void perm_finish(struct perm_job *j)
{
    struct connect_result r = { .outcome = CONNECT_PASS };
    json_t *probe = json_object_get(j->input, "probe");
    bool grey = j->env->settings->greylisting;
    bool perm_ok = j->codes[0] >= 200 && j->codes[0] < 300;
    bool unknown_grey = j->codes[1] == 451 && strstr(j->replies[1], "4.7.1") != NULL;
    json_int_t org = json_integer_value(json_object_get(j->input, "org"));
    json_int_t autos = json_integer_value(json_object_get(j->input, "auto"));
    if (j->conn_failed) {
        r.outcome = CONNECT_UNKNOWN;
        xsnprintf(r.message, sizeof r.message, "Moat's own SMTP listener %s could not be "
                  "probed; try again.", j->target);
    } else if (!perm_ok) {
        r.outcome = CONNECT_FAIL;
        xsnprintf(r.message, sizeof r.message, "The permitted sender %s was not accepted at "
                  "once (%s): see the details.",
                  json_string_value(json_object_get(probe, "sender")), j->replies[0]);
    } else if (grey && !unknown_grey) {
        r.outcome = CONNECT_FAIL;
        xsnprintf(r.message, sizeof r.message, "Greylisting is on, but an unknown sender was "
                  "not greylisted (%s): is the probe's source an authorised outbound host?",
                  j->replies[1]);
    } else {
        xsnprintf(r.message, sizeof r.message, "%lld organisation-wide and %lld auto-allowed "
                  "permitted sender%s; a permitted sender is accepted at once%s.",
                  (long long)org, (long long)autos, org + autos == 1 ? "" : "s",
                  grey ? ", an unknown one is greylisted (451 4.7.1)"
                       : " (greylisting is off)");
    }
    r.details = json_pack("{s:I, s:I, s:s, s:b, s:O, s:s, s:s}", "org", org, "auto", autos,
                          "listener", j->target, "greylisting", grey, "probe", probe,
                          "permitted_reply", j->replies[0], "unknown_reply", j->replies[1]);
    j->done(j->arg, &r);
    json_decref(r.details);
    json_decref(j->input);
    free(j);
}

static void perm_sent(void *arg, struct smtp_conn *c, const struct smtp_send_result *res)
{
    struct perm_job *j = arg;
    if (c != NULL)
        smtp_conn_quit(c);
    j->codes[j->step] = res->codes[0];
    (void)str_copy(j->replies[j->step], sizeof j->replies[j->step], res->diags[0]);
    j->step++;
    perm_next(j);
}

static void perm_ready(void *arg, struct smtp_conn *c, enum smtp_conn_error e, int code,
                       const char *diag)
{
    struct perm_job *j = arg;
    if (e != SMTP_CONN_OK) {
        j->conn_failed = true;
        (void)str_copy(j->replies[j->step], sizeof j->replies[j->step], diag ? diag : "");
        perm_finish(j);
        return;
    }
    json_t *probe = json_object_get(j->input, "probe");
    j->rcpt.addr = json_string_value(json_object_get(probe, "rcpt"));
    memset(&j->msg, 0, sizeof j->msg);
    j->msg.qid = "NOQUEUE";
    j->msg.sender = json_string_value(json_object_get(probe, j->step == 0 ? "sender" : "unknown"));
    j->msg.rcpts = &j->rcpt;
    j->msg.n_rcpts = 1;
    j->msg.flags = SMTP_MSG_PROBE;
    smtp_conn_send(c, &j->msg, perm_sent, j);
}

static void perm_next(struct perm_job *j)
{
    if (j->step >= 2) {
        perm_finish(j);
        return;
    }
    if (smtp_conn_open(&j->ccfg, (struct sockaddr *)&j->sa, j->salen, "moat",
                       SMTP_CLIENT_TLS_NONE, perm_ready, j) == NULL) {
        j->conn_failed = true;
        perm_finish(j);
    }
}

void connect_permitted_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                           void *arg)
{
    json_t *probe = json_object_get(input, "probe");
    if (probe == NULL) {
        struct connect_result r = { .outcome = CONNECT_PENDING };
        if (json_integer_value(json_object_get(input, "org")) +
            json_integer_value(json_object_get(input, "auto")) == 0)
            xsnprintf(r.message, sizeof r.message, "No permitted sender yet: import the "
                      "addresses and domains you always want to receive "
                      "(`moat permitted import FILE`).");
        else
            xsnprintf(r.message, sizeof r.message, "Permitted senders are listed, but no "
                      "internal domain has a recipient to show the bypass with.");
        r.details = json_pack("{s:O, s:O}", "org", json_object_get(input, "org"),
                              "auto", json_object_get(input, "auto"));
        done(arg, &r);
        json_decref(r.details);
        return;
    }
    struct perm_job *j = xcalloc(1, sizeof *j);
    j->env = env;
    j->done = done;
    j->arg = arg;
    j->input = json_incref(input);
    j->ccfg.base = env->base;
    j->ccfg.helo_name = env->hostname;
    j->ccfg.timeout_connect = 10;
    j->ccfg.timeout_command = 30;
    j->ccfg.timeout_data = 30;
    if (connect_listener_target(env->settings, &j->sa, &j->salen, j->target,
                                sizeof j->target) < 0) {
        struct connect_result r = { .outcome = CONNECT_FAIL };
        xsnprintf(r.message, sizeof r.message, "Moat's SMTP listener address (smtp_listen) "
                  "cannot be probed: it is not an IP address and port.");
        json_decref(j->input);
        free(j);
        done(arg, &r);
        return;
    }
    /* an IPv4 loopback listener: probe from another loopback address, as a stranger */
    struct sockaddr_in *sin = (struct sockaddr_in *)&j->sa;
    if (j->sa.ss_family == AF_INET && (ntohl(sin->sin_addr.s_addr) >> 24) == 127) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&j->src;
        s4->sin_family = AF_INET;
        inet_pton(AF_INET, PROBE_SOURCE4, &s4->sin_addr);
        j->ccfg.source = (struct sockaddr *)&j->src;
        j->ccfg.source_len = sizeof *s4;
    }
    perm_next(j);
}

json_t *connect_permitted_instructions(struct store *st, struct error *err)
{
    json_t *steps = json_array(), *arts = json_array();
    json_array_append_new(steps, json_string(
        "List the senders you always want to receive from, one a line: an address "
        "(auditor@partner.example) or a domain (partner.example, which covers its "
        "subdomains), optionally followed by a comma and a comment. Import the file with "
        "`moat permitted import FILE`: each refused line is reported with its number, the "
        "good ones are imported."));
    json_array_append_new(steps, json_string(
        "Permitted senders skip greylisting, DNSBL checks and spam scoring. They never skip "
        "anti-spoofing, DMARC or the size limits."));
    json_array_append_new(steps, json_string(
        "Moat also learns by itself: when a user writes to someone outside (through an "
        "authorised host or SMTP AUTH), that address becomes a permitted sender for that "
        "user for 120 days after the last message (permitted_auto_lifetime). Automatic "
        "replies teach nothing. A single user's list: `moat permitted user ADDRESS list`."));
    json_array_append_new(arts, connect_artefact("csv", "permitted.csv",
        "address_or_domain,comment\n"
        "auditor@partner.example,our external auditor\n"
        "supplier.example,\"orders, invoices\"\n"));
    json_array_append_new(arts, connect_artefact("shell", "Import and check",
        "moat permitted import permitted.csv\n"
        "moat permitted list\n"
        "moat connect check permitted_senders\n"));
    (void)st;
    memset(err, 0, sizeof *err);
    return json_pack("{s:o, s:o}", "steps", steps, "artefacts", arts);
}
