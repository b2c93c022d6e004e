/*
 * connect_checks.h - the checks and instruction generators of the domains,
 * inbound, mx and lockdown tasks (DESIGN.md 1), for the task table in
 * connect_tasks.c.  Each task has prepare (calling thread, reads the store
 * into a JSON input), run (the event loop, asynchronous DNS and SMTP),
 * instructions (calling thread) and, where the task records per-item
 * findings, apply (calling thread, after run: see struct connect_task).
 *
 * run borrows input for the duration of the call only (it copies what it
 * needs); the caller keeps and frees its reference.  The result's details
 * are handed to done's receiver.
 */
#ifndef MOAT_CONNECT_CHECKS_H
#define MOAT_CONNECT_CHECKS_H

#include "connect.h"

/* domains: TXT moat-verification=<token> at each pending domain's apex */
json_t *connect_domains_prepare(struct store *st, struct error *err);
void connect_domains_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                         void *arg);
json_t *connect_domains_instructions(struct store *st, struct error *err);
int connect_domains_apply(struct store *st, const struct connect_result *r, struct error *err);

/* inbound: each delivery route's STARTTLS (strict/relaxed/unsupported) and a test message */
json_t *connect_inbound_prepare(struct store *st, struct error *err);
void connect_inbound_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                         void *arg);
json_t *connect_inbound_instructions(struct store *st, struct error *err);
/* connect_inbound_input_check - validate a PUT .../inbound/input body
 * ({"test_address": "user@domain"}); -1 with err naming the field */
int connect_inbound_input_check(json_t *body, struct error *err);

/* mx: every internal domain's MX set points only at Moat's public hosts */
json_t *connect_mx_prepare(struct store *st, struct error *err);
void connect_mx_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                    void *arg);
json_t *connect_mx_instructions(struct store *st, struct error *err);
int connect_mx_apply(struct store *st, const struct connect_result *r, struct error *err);

/* lockdown: from the probe source, the mail server must refuse */
json_t *connect_lockdown_prepare(struct store *st, struct error *err);
void connect_lockdown_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                          void *arg);
json_t *connect_lockdown_instructions(struct store *st, struct error *err);

/* directory: a sync from the LDAP / Active Directory source has been applied (issue 5) */
json_t *connect_directory_prepare(struct store *st, struct error *err);
void connect_directory_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                           void *arg);
json_t *connect_directory_instructions(struct store *st, struct error *err);

/* users: at least one user under an internal domain (issue 5; connect_users.c) */
json_t *connect_users_prepare(struct store *st, struct error *err);
void connect_users_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                       void *arg);
json_t *connect_users_instructions(struct store *st, struct error *err);
/* recipient_validation: Moat's own listener refuses a random unknown address
 * of each validating domain with 550 5.1.1 and accepts a known one */
json_t *connect_rv_prepare(struct store *st, struct error *err);
void connect_rv_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                    void *arg);
json_t *connect_rv_instructions(struct store *st, struct error *err);

/* outbound: relaying refused to a stranger and accepted from an authorised
 * address (a test message to the task's test recipient), SPF authorising
 * Moat's addresses, DKIM records published (connect_outbound.c) */
json_t *connect_outbound_prepare(struct store *st, struct error *err);
void connect_outbound_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                          void *arg);
json_t *connect_outbound_instructions(struct store *st, struct error *err);
/* connect_outbound_input_check - {"test_recipient", "test_sender"?} */
int connect_outbound_input_check(json_t *body, struct error *err);
/* SPF, pure: the record authorises ip with an ip4:/ip6: pass term; the record
 * to publish (current, or NULL for none, with the missing ips added before
 * its all term); caller frees */
bool connect_spf_covers(const char *record, const char *ip);
char *connect_spf_merge(const char *current, const char *const *ips, size_t n);
/* tls_policies (issue 6, connect_tls.c): every route's TLS probe against its
 * mode, every outbound policy's last probe */
json_t *connect_tls_prepare(struct store *st, struct error *err);
void connect_tls_run(const struct connect_env *env, json_t *input, connect_done_cb done, void *arg);
json_t *connect_tls_instructions(struct store *st, struct error *err);
/* the probes the API runs with connect_run ("tested before enforced") */
void connect_tls_probe_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                           void *arg);
void connect_route_probe_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                             void *arg);
/* mode mta-sts: TXT _mta-sts.<domain> and the address of mta-sts.<domain>
 * (the policy itself is fetched by the caller's thread: deliver_mtasts.h) */
void connect_mtasts_resolve_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                                void *arg);

/* antispoof_bypass (issue 7, connect_antispoof.c): a stranger sending in an
 * internal domain's name is refused at RCPT, each address bypass Moat can
 * speak from gets through */
json_t *connect_antispoof_prepare(struct store *st, struct error *err);
void connect_antispoof_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                           void *arg);
json_t *connect_antispoof_instructions(struct store *st, struct error *err);
/* permitted_senders (issue 7, connect_permitted.c): how many are listed, and
 * a probe of Moat's own listener: a permitted sender is accepted at once,
 * an unknown one greylisted (451 4.7.1) when greylisting is on */
json_t *connect_permitted_prepare(struct store *st, struct error *err);
void connect_permitted_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                           void *arg);
json_t *connect_permitted_instructions(struct store *st, struct error *err);
/* forwarding (issue 7, connect_forwarding.c): the rules and the rewrite
 * each gets (recipients, SRS sender), computed by the session's functions */
json_t *connect_forwarding_prepare(struct store *st, struct error *err);
void connect_forwarding_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                            void *arg);
json_t *connect_forwarding_instructions(struct store *st, struct error *err);
/* journaling (issue 8, connect_journaling.c): journal sources configured and
 * the last journal report archived with its envelope unwrapped */
json_t *connect_journaling_prepare(struct store *st, struct error *err);
void connect_journaling_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                            void *arg);
json_t *connect_journaling_instructions(struct store *st, struct error *err);
/* the pure parts, for the unit tests: the verdict of a prepared input (msg
 * gets the sentence), and the instructions for an organisation */
enum connect_outcome connect_journaling_verdict(json_t *input, char *msg, size_t size);
struct connect_org;
json_t *connect_art_journaling(const struct connect_org *org, const char *address,
                               const char *undeliverable, const char *const *sources,
                               size_t n_sources);

#endif
