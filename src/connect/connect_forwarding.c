/*
 * connect_forwarding.c - Connect's forwarding task (issue 7; optional):
 * the forwarding rules, and for each the rewrite Moat would apply to a
 * message for its address, computed by the session's own functions
 * (forward.h): forward_expand for the recipients (prepare, with the
 * snapshot loaded from the store), srs_forward with moatd's SRS key for the
 * envelope sender an external target gets (run).  No mail is sent.
 *
 * The task passes once at least one rule exists and every rule's address is
 * under an internal domain; with no rule it waits (skip it if nothing is
 * forwarded).
 */
#include <stdlib.h>
#include <string.h>
#include "../policy/forward.h"
#include "connect_artefacts.h"
#include "connect_checks.h"

#define PROBE_SENDER "sender@example.net"   /* the original sender shown in the probe */

json_t *connect_forwarding_prepare(struct store *st, struct error *err)
{
    struct store_forward *f = NULL;
    size_t n = 0;
    if (store_forward_list(st, &f, &n, err) < 0)
        return NULL;
    struct store_snapshot *snap = store_snapshot_load(st, err);
    if (snap == NULL) {
        store_forwards_free(f, n);
        return NULL;
    }
    json_t *rules = json_array();
    struct forward_target *ft = xcalloc(FORWARD_MAX_TARGETS, sizeof *ft);
    int64_t now = (int64_t)time_wall_ms() / 1000;
    for (size_t i = 0; i < n; i++) {
        /* one entry per address: its rules together, as the session applies them */
        bool seen = false;
        for (size_t k = 0; k < i && !seen; k++)
            seen = strcmp(f[k].address, f[i].address) == 0;
        if (seen)
            continue;
        const char *at = strrchr(f[i].address, '@');
        bool internal = at != NULL && store_snapshot_find(snap, at + 1) != NULL;
        size_t nt = forward_expand(snap, NULL, PROBE_SENDER, f[i].address, now, ft,
                                   FORWARD_MAX_TARGETS);
        json_t *rc = json_array();
        for (size_t k = 0; k < nt; k++) {
            const char *tat = strrchr(ft[k].addr, '@');
            bool ext = tat == NULL || store_snapshot_find(snap, tat + 1) == NULL;
            json_array_append_new(rc, json_pack("{s:s, s:b, s:b}", "address", ft[k].addr,
                                                 "forwarded", ft[k].fwd_for[0] != '\0',
                                                 "external", ext));
        }
        json_array_append_new(rules, json_pack("{s:s, s:b, s:o}", "address", f[i].address,
                                               "internal", internal, "recipients", rc));
    }
    free(ft);
    store_snapshot_free(snap);
    store_forwards_free(f, n);
    memset(err, 0, sizeof *err);
    return json_pack("{s:o, s:I}", "rules", rules, "now", (json_int_t)now);
}

void connect_forwarding_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                            void *arg)
{
    struct connect_result r = { .outcome = CONNECT_PENDING };
    json_t *rules = json_object_get(input, "rules");
    int64_t now = json_integer_value(json_object_get(input, "now"));
    size_t i, bad = 0;
    json_t *rule;
    json_array_foreach(rules, i, rule) {
        const char *addr = json_string_value(json_object_get(rule, "address"));
        const char *at = addr ? strrchr(addr, '@') : NULL;
        if (!json_is_true(json_object_get(rule, "internal")))
            bad++;
        size_t k;
        json_t *t;
        json_array_foreach(json_object_get(rule, "recipients"), k, t) {
            char srs[FORWARD_ADDR_MAX];
            const char *sender = PROBE_SENDER;
            if (json_is_true(json_object_get(t, "forwarded")) &&
                json_is_true(json_object_get(t, "external")) && env->srs_key != NULL && at != NULL &&
                srs_forward(env->srs_key, PROBE_SENDER, at + 1, now, srs, sizeof srs) == 0)
                sender = srs;
            json_object_set_new(t, "mail_from", json_string(sender));
        }
    }
    size_t n = json_array_size(rules);
    if (n == 0) {
        xsnprintf(r.message, sizeof r.message, "No forwarding rule yet: add one with `moat "
                  "forward add ADDRESS TARGET [--copy]`, or skip this task.");
    } else if (bad > 0) {
        r.outcome = CONNECT_FAIL;
        xsnprintf(r.message, sizeof r.message, "%zu forwarded address%s not under one of your "
                  "domains any more: mail for it never reaches Moat; remove the rule.", bad,
                  bad == 1 ? " is" : "es are");
    } else {
        r.outcome = CONNECT_PASS;
        xsnprintf(r.message, sizeof r.message, "%zu address%s forwarded; the details show where "
                  "a message goes and the envelope sender each target gets (SRS for targets "
                  "outside your domains).", n, n == 1 ? " is" : "es are");
    }
    r.details = json_pack("{s:O, s:s}", "rules", rules, "example_sender", PROBE_SENDER);
    done(arg, &r);
    json_decref(r.details);
}

json_t *connect_forwarding_instructions(struct store *st, struct error *err)
{
    (void)st;
    (void)err;
    json_t *steps = json_array(), *arts = json_array();
    json_array_append_new(steps, json_string(
        "Forward mail for an internal address to another address: redirect (only the target "
        "gets it) or copy (both do). Forwarding happens after Moat accepted and screened the "
        "message; the original recipient is kept (ORCPT, and an X-Moat-Forwarded-For header)."));
    json_array_append_new(steps, json_string(
        "A target outside your domains receives the message with an SRS envelope sender under "
        "the original recipient's domain, so SPF passes there; bounces to it come back through "
        "Moat to the original sender."));
    json_array_append_new(arts, connect_artefact("shell", "Forwarding rules",
        "moat forward add alice@example.com alice.private@example.org\n"
        "moat forward add sales@example.com archive@example.com --copy\n"
        "moat forward list\n"));
    return json_pack("{s:o, s:o}", "steps", steps, "artefacts", arts);
}
