/*
 * connect_journaling.c - Connect's journaling task (issue 8): the journal
 * address (default journal@journal.<primary domain>), the journal sources
 * (the mail servers whose reports Moat accepts), the address for
 * undeliverable journal reports, and the journal-rule instructions for the
 * organisation's environment.
 *
 * The check reads the evidence the archive records (store_journal_get):
 *   no journal source             FAIL    (mail to the journal address is
 *                                          refused from everywhere)
 *   no journal message yet        PENDING (waiting for a report)
 *   last one unwrapped            PASS    (when and from where)
 *   last one malformed            FAIL    (why it could not be read; a task
 *                                          that was done goes to attention)
 *   last one a plain copy         PASS for Google Workspace and other SMTP
 *                                 servers (BCC journaling is what they
 *                                 offer), FAIL for Exchange (its journal
 *                                 rule sends envelope reports)
 * prepare reads the store; run only evaluates (connect_journaling_verdict,
 * pure, table-tested); the instructions are a pure generator
 * (connect_art_journaling, golden-tested).
 */
#include <stdlib.h>
#include <string.h>
#include "connect_artefacts.h"
#include "connect_checks.h"

#define JOURNAL_CONTACT "Moat journal"     /* the mail contact a journal rule names */

/* --- the check --- */

json_t *connect_journaling_prepare(struct store *st, struct error *err)
{
    struct store_journal j;
    struct store_journal_source *s = NULL;
    size_t n = 0;
    struct connect_org org;

    memset(&j, 0, sizeof j);
    if (connect_org_load(st, &org, err) < 0 || store_journal_get(st, &j, err) < 0)
        return NULL;
    if (store_journal_source_list(st, &s, &n, err) < 0) {
        store_journal_clear(&j);
        return NULL;
    }
    json_t *src = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(src, json_string(s[i].cidr));
    store_journal_sources_free(s, n);
    json_t *in = json_pack("{s:s, s:s, s:o, s:s, s:I, s:s, s:s, s:b, s:I, s:I, s:I, s:s, s:s}",
                           "environment", org.environment,
                           "address", j.address ? j.address : "",
                           "sources", src,
                           "undeliverable", j.undeliverable ? j.undeliverable : "",
                           "last_report", (json_int_t)j.last_report,
                           "last_report_client", j.last_report_client ? j.last_report_client : "",
                           "last_report_qid", j.last_report_qid ? j.last_report_qid : "",
                           "last_report_unwrapped", j.last_report_unwrapped,
                           "reports", (json_int_t)j.reports,
                           "unwrapped", (json_int_t)j.unwrapped,
                           "malformed", (json_int_t)j.malformed,
                           "last_report_kind", j.last_report_kind ? j.last_report_kind : "",
                           "last_report_error", j.last_report_error ? j.last_report_error : "");
    store_journal_clear(&j);
    memset(err, 0, sizeof *err);
    return in;
}

static const char *jget(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* sources_text - "a, b, c" of the input's sources */
static void sources_text(json_t *in, char *dst, size_t size)
{
    struct buf b;
    buf_init(&b);
    size_t i;
    json_t *s;
    json_array_foreach(json_object_get(in, "sources"), i, s)
        buf_printf(&b, "%s%s", i ? ", " : "", json_string_value(s));
    if (str_copy(dst, size, buf_cstr(&b)) < 0 && size > 4)
        memcpy(dst + size - 4, "...", 4);
    buf_free(&b);
}

enum connect_outcome connect_journaling_verdict(json_t *in, char *msg, size_t size)
{
    const char *addr = jget(in, "address");
    const char *env = jget(in, "environment");
    char src[256], when[40];
    json_int_t last = json_integer_value(json_object_get(in, "last_report"));
    json_int_t reports = json_integer_value(json_object_get(in, "reports"));
    json_int_t unwrapped = json_integer_value(json_object_get(in, "unwrapped"));
    json_int_t malformed = json_integer_value(json_object_get(in, "malformed"));
    const char *client = jget(in, "last_report_client");
    const char *qid = jget(in, "last_report_qid");

    if (addr[0] == '\0') {
        snprintf(msg, size, "No journal address: validate a domain first (the default is "
                 "journal@journal.<primary domain>), or set one with `moat journal set "
                 "--address ADDRESS`.");
        return CONNECT_FAIL;
    }
    if (json_array_size(json_object_get(in, "sources")) == 0) {
        snprintf(msg, size, "No journal source yet: add your mail server's address as a "
                 "journal source (`moat journal source add ADDRESS`); until then Moat refuses "
                 "mail to %s from everywhere.", addr);
        return CONNECT_FAIL;
    }
    sources_text(in, src, sizeof src);
    if (last <= 0) {
        snprintf(msg, size, "Waiting for a journal report from %s to %s: create the journal "
                 "rule below; the check passes once Moat has archived a report.", src, addr);
        return CONNECT_PENDING;
    }
    time_iso8601(when, sizeof when, (time_t)last);
    if (json_is_true(json_object_get(in, "last_report_unwrapped"))) {
        snprintf(msg, size, "The last journal report arrived from %s at %s (queue id %s) and "
                 "was archived with its envelope unwrapped (%lld reports unwrapped so far).",
                 client, when, qid, (long long)unwrapped);
        return CONNECT_PASS;
    }
    /* not unwrapped: a malformed report, or a plain copy.  The store says
     * which (last_report_kind); without it the counts tell when only one
     * kind was ever seen */
    const char *kind = jget(in, "last_report_kind");
    json_int_t plain = reports - unwrapped - malformed;
    if (strcmp(kind, "plain") == 0) {
        plain = plain > 0 ? plain : 1;
        malformed = 0;
    }
    bool was_malformed = strcmp(kind, "malformed") == 0 ||
                         (kind[0] == '\0' && malformed > 0 && plain <= 0);
    const char *why = jget(in, "last_report_error");
    if (was_malformed) {
        snprintf(msg, size, "The last journal message, from %s at %s (queue id %s), was not a "
                 "readable journal report%s%s: Moat kept it as it came, flagged (moat archive "
                 "show). Check the journal rule sends standard envelope reports.", client, when,
                 qid, why[0] ? ": " : " (its envelope block or the attached original could "
                 "not be read)", why);
        return CONNECT_FAIL;
    }
    bool bcc_env = strcmp(env, "google") == 0 || strcmp(env, "smtp") == 0;
    if (plain > 0 && malformed == 0 && bcc_env) {
        snprintf(msg, size, "The last journal message arrived from %s at %s (queue id %s): a "
                 "plain copy (BCC journaling), archived with its SMTP envelope.", client, when,
                 qid);
        return CONNECT_PASS;
    }
    snprintf(msg, size, "The last journal message, from %s at %s (queue id %s), was %s, not an "
             "envelope journal report: it was archived as it came. Exchange sends envelope "
             "reports for a journal rule (New-JournalRule); check that the rule, not a "
             "transport rule or a forwarding, sends the copies.", client, when, qid,
             malformed > 0 ? "a plain copy or a malformed report" : "a plain copy");
    return CONNECT_FAIL;
}

static json_t *time_json(json_int_t t)
{
    char buf[40];
    if (t <= 0)
        return json_null();
    time_iso8601(buf, sizeof buf, (time_t)t);
    return json_string(buf);
}

void connect_journaling_run(const struct connect_env *env, json_t *input, connect_done_cb done,
                            void *arg)
{
    char msg[512];
    enum connect_outcome o = connect_journaling_verdict(input, msg, sizeof msg);
    json_t *details = json_pack("{s:s, s:O, s:s, s:o, s:s, s:s, s:b, s:s, s:s, s:I, s:I, s:I}",
        "address", jget(input, "address"),
        "sources", json_object_get(input, "sources"),
        "undeliverable", jget(input, "undeliverable"),
        "last_report", time_json(json_integer_value(json_object_get(input, "last_report"))),
        "last_report_client", jget(input, "last_report_client"),
        "last_report_qid", jget(input, "last_report_qid"),
        "last_report_unwrapped", json_is_true(json_object_get(input, "last_report_unwrapped")),
        "last_report_kind", jget(input, "last_report_kind"),
        "last_report_error", jget(input, "last_report_error"),
        "reports", json_integer_value(json_object_get(input, "reports")),
        "unwrapped", json_integer_value(json_object_get(input, "unwrapped")),
        "malformed", json_integer_value(json_object_get(input, "malformed")));
    connect_finish_later(env, done, arg, o, details, "%s", msg);
}

/* --- the instructions --- */

static json_t *take(struct buf *b, const char *kind, const char *title)
{
    json_t *a = connect_artefact(kind, title, buf_cstr(b));
    buf_free(b);
    buf_init(b);
    return a;
}

static void step(json_t *steps, const char *text)
{
    json_array_append_new(steps, json_string(text));
}

/* smart_hosts - Moat's host names (else its addresses), quoted, comma-separated */
static void smart_hosts(struct buf *b, const struct connect_org *org)
{
    size_t n = org->n_hosts ? org->n_hosts : org->n_ips;
    for (size_t i = 0; i < n; i++)
        buf_printf(b, "%s\"%s\"", i ? "," : "", org->n_hosts ? org->hosts[i] : org->ips[i]);
}

/* tls_of - the TLS options naming Moat's first host name, or encryption only */
static void tls_of(struct buf *b, const struct connect_org *org, bool exo)
{
    if (org->n_hosts > 0)
        buf_printf(b, exo ? " -TlsSettings DomainValidation -TlsDomain \"%s\""
                          : " -RequireTLS $true -TlsAuthLevel DomainValidation -TlsDomain \"%s\"",
                   org->hosts[0]);
    else
        buf_printf(b, exo ? " -TlsSettings EncryptionOnly" : " -RequireTLS $true");
}

static void rule_lines(struct buf *b, const char *addr)
{
    buf_printf(b, "# The journal address as a mail contact, so that a journal rule can name it.\n"
                  "New-MailContact -Name \"%s\" -ExternalEmailAddress \"%s\"\n"
                  "# Journal every message, internal and external, to Moat.\n"
                  "New-JournalRule -Name \"Moat archive\" -JournalEmailAddress \"%s\" "
                  "-Scope Global -Enabled $true\n", JOURNAL_CONTACT, addr, JOURNAL_CONTACT);
}

static void exchange_online(const struct connect_org *org, const char *addr, const char *domain,
                            const char *ndr, json_t *steps, json_t *arts)
{
    struct buf b;
    buf_init(&b);
    if (ndr[0] == '\0')
        step(steps, "Exchange Online sends the journal reports it cannot deliver to an address "
             "that must be outside Exchange Online. Choose one and record it with `moat journal "
             "set --undeliverable ADDRESS`: the Set-TransportConfig command then appears here.");
    buf_printf(&b, "# Exchange Online PowerShell: run Connect-ExchangeOnline first.\n");
    if (ndr[0] != '\0')
        buf_printf(&b, "# Undeliverable journal reports go to a mailbox outside Exchange Online.\n"
                       "Set-TransportConfig -JournalingReportNdrTo \"%s\"\n", ndr);
    rule_lines(&b, addr);
    json_array_append_new(arts, take(&b, "powershell",
                                      "Exchange Online: the journal contact and rule"));
    buf_printf(&b, "# Mail for %s leaves Exchange Online through Moat, under TLS.\n"
                   "New-OutboundConnector -Name \"Journal to Moat\" -ConnectorType Partner "
                   "-RecipientDomains \"%s\" -UseMXRecord $false -SmartHosts ", domain, domain);
    smart_hosts(&b, org);
    tls_of(&b, org, true);
    buf_printf(&b, "\n");
    json_array_append_new(arts, take(&b, "powershell",
                                      "Exchange Online: outbound connector for the journal domain"));
    step(steps, "In Exchange Online PowerShell, create the mail contact, the journal rule and the "
         "outbound connector below: Exchange Online then sends an envelope journal report of "
         "every message to Moat.");
    step(steps, "Authorise the addresses Exchange Online sends from as journal sources (Microsoft "
         "publishes them as the Exchange Online Protection ranges): `moat journal source add "
         "RANGE` for each.");
}

static void exchange_onprem(const struct connect_org *org, const char *addr, const char *domain,
                            const char *ndr, json_t *steps, json_t *arts)
{
    struct buf b;
    buf_init(&b);
    buf_printf(&b, "# Exchange Management Shell: mail for %s goes to Moat, under TLS.\n"
                   "New-SendConnector -Name \"Journal to Moat\" -Usage Custom -AddressSpaces "
                   "\"SMTP:%s;1\" -DNSRoutingEnabled $false -SmartHosts ", domain, domain);
    smart_hosts(&b, org);
    buf_printf(&b, " -SmartHostAuthMechanism None");
    tls_of(&b, org, false);
    buf_printf(&b, " -SourceTransportServers $env:COMPUTERNAME\n");
    json_array_append_new(arts, take(&b, "powershell",
                                      "Exchange Management Shell: send connector for the journal "
                                      "domain"));
    buf_printf(&b, "# Exchange Management Shell.\n");
    if (ndr[0] != '\0')
        buf_printf(&b, "# Undeliverable journal reports go to this mailbox.\n"
                       "Set-TransportConfig -JournalingReportNdrTo \"%s\"\n", ndr);
    rule_lines(&b, addr);
    json_array_append_new(arts, take(&b, "powershell",
                                      "Exchange Management Shell: the journal contact and rule"));
    step(steps, "In the Exchange Management Shell, create the send connector for the journal "
         "domain, the mail contact and the journal rule below (a Standard CAL journals per "
         "database; a global rule needs Enterprise CALs).");
    step(steps, "Authorise your Exchange servers' addresses as journal sources: `moat journal "
         "source add ADDRESS` for each server that delivers mail.");
}

json_t *connect_art_journaling(const struct connect_org *org, const char *address,
                               const char *undeliverable, const char *const *sources,
                               size_t n_sources)
{
    json_t *steps = json_array(), *arts = json_array();
    const char *env = org->environment;
    const char *ndr = undeliverable ? undeliverable : "";
    struct buf b;
    buf_init(&b);

    if (address == NULL || address[0] == '\0') {
        step(steps, "Validate a domain first: the journal address is journal@journal.<your "
             "primary domain> unless you set another with `moat journal set --address`.");
        return json_pack("{s:o, s:o}", "steps", steps, "artefacts", arts);
    }
    const char *domain = strchr(address, '@') ? strchr(address, '@') + 1 : address;
    char first[300];
    xsnprintf(first, sizeof first, "Journal reports are sent to %s. Moat archives them (the "
              "envelope of each report gives the sender and every recipient, including those "
              "expanded from groups or forwarded) and never relays them; only the journal "
              "sources may send to it.", address);
    step(steps, first);
    if (env[0] == '\0' || (org->n_hosts == 0 && org->n_ips == 0)) {
        step(steps, env[0] == '\0' ? "Choose your mail environment in the organisation task "
             "first: the journal-rule instructions are generated for it."
             : "Fill in Moat's public host names or IP addresses in the organisation task "
             "first: the connectors below are generated from them.");
        return json_pack("{s:o, s:o}", "steps", steps, "artefacts", arts);
    }
    if (strcmp(env, "microsoft365") == 0 || strcmp(env, "hybrid") == 0)
        exchange_online(org, address, domain, ndr, steps, arts);
    if (strcmp(env, "exchange") == 0 || strcmp(env, "hybrid") == 0)
        exchange_onprem(org, address, domain, ndr, steps, arts);
    if (strcmp(env, "google") == 0) {
        buf_printf(&b, "Google Admin console > Apps > Google Workspace > Gmail > Compliance >\n"
                       "Content compliance: add a setting for inbound, outbound, internal-sending\n"
                       "and internal-receiving messages:\n"
                       "  If ALL of the following match the message: (no expression: every message)\n"
                       "  Also deliver to: %s\n"
                       "Gmail > Hosts: add the mail route \"Moat\" to %s, port 25, require TLS,\n"
                       "and route the additional recipient through it.\n", address,
                   org->n_hosts ? org->hosts[0] : org->ips[0]);
        json_array_append_new(arts, take(&b, "settings", "Google Workspace: journal copies to Moat"));
        step(steps, "Google Workspace has no envelope journal reports: it sends a copy of every "
             "message (BCC journaling), which Moat archives with its SMTP envelope. Authorise "
             "Google's outbound ranges as journal sources.");
    }
    if (strcmp(env, "smtp") == 0) {
        buf_printf(&b, "# /etc/postfix/main.cf: a copy of every message to Moat's archive.\n"
                       "always_bcc = %s\n"
                       "transport_maps = hash:/etc/postfix/transport\n"
                       "# /etc/postfix/transport (then postmap /etc/postfix/transport):\n"
                       "%s  smtp:[%s]:25\n", address, domain,
                   org->n_hosts ? org->hosts[0] : org->ips[0]);
        json_array_append_new(arts, take(&b, "postfix", "Postfix: journal copies to Moat"));
        step(steps, "Postfix sends a copy of every message it handles to the journal address "
             "(BCC journaling), which Moat archives with its SMTP envelope. Authorise the "
             "server's address as a journal source.");
    }
    if (n_sources > 0) {
        buf_printf(&b, "# Journal sources authorised now:\n");
        for (size_t i = 0; i < n_sources; i++)
            buf_printf(&b, "#   %s\n", sources[i]);
        buf_printf(&b, "moat journal source list\n");
        json_array_append_new(arts, take(&b, "shell", "Moat: the journal sources"));
    }
    buf_free(&b);
    return json_pack("{s:o, s:o}", "steps", steps, "artefacts", arts);
}

json_t *connect_journaling_instructions(struct store *st, struct error *err)
{
    struct connect_org org;
    struct store_journal j;
    struct store_journal_source *s = NULL;
    size_t n = 0;

    memset(&j, 0, sizeof j);
    if (connect_org_load(st, &org, err) < 0 || store_journal_get(st, &j, err) < 0)
        return NULL;
    if (store_journal_source_list(st, &s, &n, err) < 0) {
        store_journal_clear(&j);
        return NULL;
    }
    const char **src = xcalloc(n + 1, sizeof *src);
    for (size_t i = 0; i < n; i++)
        src[i] = s[i].cidr;
    json_t *r = connect_art_journaling(&org, j.address, j.undeliverable, src, n);
    free(src);
    store_journal_sources_free(s, n);
    store_journal_clear(&j);
    return r;
}
