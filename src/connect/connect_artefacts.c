/*
 * connect_artefacts.c - the artefacts Connect asks an administrator to apply
 * outside Moat, generated for the organisation's environment and filled with
 * its real values (connect_artefacts.h).  Also loads the organisation for
 * the checks (connect_org_load).
 *
 * Kinds: "dns" (zone-file lines), "powershell" (Exchange Online or the
 * Exchange Management Shell, or Windows Firewall), "nftables", "postfix",
 * "settings" (Google Workspace admin console).  The texts are deterministic:
 * the golden tests in tests/unit/test_connect_artefacts.c diff them.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <event2/event.h>
#include "connect_artefacts.h"

#define MOAT_CONNECTOR "From Moat"

/* --- the organisation --- */

static void strings_from_json(json_t *a, char (*dst)[256], size_t cap, size_t *n)
{
    size_t i;
    json_t *v;
    *n = 0;
    json_array_foreach(a, i, v) {
        const char *s = json_string_value(v);
        if (s == NULL || *s == '\0' || *n == cap)
            continue;
        str_copy(dst[*n], 256, s);
        size_t len = strlen(dst[*n]);
        if (len > 1 && dst[*n][len - 1] == '.')   /* "mx1.example.net." */
            dst[*n][len - 1] = '\0';
        str_lower(dst[*n]);
        (*n)++;
    }
}

void connect_org_from_json(json_t *o, struct connect_org *org)
{
    char tmp[CONNECT_ORG_MAX][256];
    size_t n;

    memset(org, 0, sizeof *org);
    const char *s;
    if ((s = json_string_value(json_object_get(o, "name"))) != NULL)
        str_copy(org->name, sizeof org->name, s);
    if ((s = json_string_value(json_object_get(o, "environment"))) != NULL)
        str_copy(org->environment, sizeof org->environment, s);
    if ((s = json_string_value(json_object_get(o, "probe_source"))) != NULL)
        str_copy(org->probe_source, sizeof org->probe_source, s);
    strings_from_json(json_object_get(o, "public_hosts"), org->hosts, CONNECT_ORG_MAX,
                      &org->n_hosts);
    strings_from_json(json_object_get(o, "public_ips"), tmp, CONNECT_ORG_MAX, &n);
    for (size_t i = 0; i < n; i++)
        str_copy(org->ips[org->n_ips++], sizeof org->ips[0], tmp[i]);
}

json_t *connect_org_to_json(const struct connect_org *org)
{
    json_t *hosts = json_array(), *ips = json_array();
    for (size_t i = 0; i < org->n_hosts; i++)
        json_array_append_new(hosts, json_string(org->hosts[i]));
    for (size_t i = 0; i < org->n_ips; i++)
        json_array_append_new(ips, json_string(org->ips[i]));
    return json_pack("{s:s, s:s, s:o, s:o, s:s}", "name", org->name, "environment",
                     org->environment, "public_hosts", hosts, "public_ips", ips,
                     "probe_source", org->probe_source);
}

int connect_org_load(struct store *st, struct connect_org *org, struct error *err)
{
    struct store_organisation row;

    if (store_organisation_get(st, &row, err) < 0)
        return -1;
    json_t *hosts = json_array(), *ips = json_array();
    for (size_t i = 0; i < row.n_public_hosts; i++)
        json_array_append_new(hosts, json_string(row.public_hosts[i]));
    for (size_t i = 0; i < row.n_public_ips; i++)
        json_array_append_new(ips, json_string(row.public_ips[i]));
    json_t *o = json_pack("{s:s?, s:s?, s:o, s:o, s:s?}", "name", row.name, "environment",
                          row.environment, "public_hosts", hosts, "public_ips", ips,
                          "probe_source", row.probe_source);
    connect_org_from_json(o, org);
    json_decref(o);
    store_organisation_clear(&row);
    return 0;
}

const char *connect_env_title(const char *e)
{
    if (strcmp(e, "microsoft365") == 0) return "Microsoft 365";
    if (strcmp(e, "exchange") == 0) return "on-premises Exchange";
    if (strcmp(e, "hybrid") == 0) return "hybrid Exchange";
    if (strcmp(e, "google") == 0) return "Google Workspace";
    if (strcmp(e, "smtp") == 0) return "another SMTP server";
    return "not chosen yet";
}

json_t *connect_artefact(const char *kind, const char *title, const char *content)
{
    return json_pack("{s:s, s:s, s:s}", "kind", kind, "title", title, "content", content);
}

/* --- DNS --- */

char *connect_art_txt_record(const char *domain, const char *token)
{
    /* TTL 300: a short TTL lets a corrected record take effect soon */
    return xasprintf("%s. 300 IN TXT \"moat-verification=%s\"", domain, token);
}

char *connect_art_mx_records(const char *domain, const struct connect_org *org)
{
    struct buf b;
    buf_init(&b);
    for (size_t i = 0; i < org->n_hosts; i++)
        buf_printf(&b, "%s. 3600 IN MX %zu %s.\n", domain, (i + 1) * 10, org->hosts[i]);
    char *s = xstrdup(buf_cstr(&b));
    buf_free(&b);
    return s;
}

/* --- address lists --- */

static bool is_v6(const char *ip)
{
    return strchr(ip, ':') != NULL;
}

/* join - the addresses (v4, v6 or both) joined by sep; "" when none */
static void join_ips(struct buf *b, const struct connect_org *org, int family, const char *sep,
                     const char *suffix4, const char *suffix6)
{
    bool first = true;
    for (size_t i = 0; i < org->n_ips; i++) {
        bool v6 = is_v6(org->ips[i]);
        if ((family == AF_INET && v6) || (family == AF_INET6 && !v6))
            continue;
        buf_printf(b, "%s%s%s", first ? "" : sep, org->ips[i], v6 ? suffix6 : suffix4);
        first = false;
    }
}

static size_t count_family(const struct connect_org *org, int family)
{
    size_t n = 0;
    for (size_t i = 0; i < org->n_ips; i++)
        n += (family == AF_INET6) == is_v6(org->ips[i]);
    return n;
}

/* addr - an address as big-endian bytes (4 or 16), for range arithmetic */
struct addr {
    unsigned char b[16];
};

static int cmp_addr16(const void *x, const void *y)
{
    return memcmp(x, y, 16);
}

/* step - a += d (d = +1 or -1) over len bytes; false on wrap-around */
static bool step(unsigned char *a, size_t len, int d)
{
    for (size_t i = len; i-- > 0;) {
        if (d > 0) {
            if (++a[i] != 0)
                return true;
        } else {
            if (a[i]-- != 0)
                return true;
        }
    }
    return false;
}

/* complement_ranges - every address of the family but org's, as "A-B" ranges
 * (Windows Firewall -RemoteAddress accepts ranges): block these on port 25 */
static void complement_ranges(struct buf *b, const struct connect_org *org, int family,
                              bool *first)
{
    struct addr a[CONNECT_ORG_MAX];
    size_t n = 0, len = family == AF_INET ? 4 : 16;
    for (size_t i = 0; i < org->n_ips; i++) {
        memset(&a[n], 0, sizeof a[n]);
        if (inet_pton(family, org->ips[i], a[n].b) == 1)
            n++;
    }
    if (n == 0)
        return;
    qsort(a, n, sizeof a[0], cmp_addr16);
    unsigned char lo[16] = {0}, hi[16];
    bool have_lo = true;
    char t1[INET6_ADDRSTRLEN], t2[INET6_ADDRSTRLEN];
    for (size_t i = 0; i <= n; i++) {
        if (i < n && i > 0 && memcmp(a[i].b, a[i - 1].b, len) == 0)
            continue;   /* duplicate */
        if (i < n) {
            memcpy(hi, a[i].b, len);
            bool gap = have_lo && memcmp(hi, lo, len) > 0;
            if (gap && step(hi, len, -1)) {
                inet_ntop(family, lo, t1, sizeof t1);
                inet_ntop(family, hi, t2, sizeof t2);
                buf_printf(b, "%s%s-%s", *first ? "" : ",", t1, t2);
                *first = false;
            }
            memcpy(lo, a[i].b, len);
            have_lo = step(lo, len, +1);
        } else if (have_lo) {
            memset(hi, 0xff, len);
            inet_ntop(family, lo, t1, sizeof t1);
            inet_ntop(family, hi, t2, sizeof t2);
            buf_printf(b, "%s%s-%s", *first ? "" : ",", t1, t2);
            *first = false;
        }
    }
}

/* ports - the distinct route ports, ascending ("25" or "25, 2525") */
static void route_ports(const struct connect_art_route *r, size_t n, int *ports, size_t *np)
{
    *np = 0;
    for (size_t i = 0; i < n; i++) {
        bool seen = false;
        for (size_t j = 0; j < *np; j++)
            seen |= ports[j] == r[i].port;
        if (!seen && *np < 16)
            ports[(*np)++] = r[i].port;
    }
    if (*np == 0)
        ports[(*np)++] = 25;
    for (size_t i = 1; i < *np; i++)   /* insertion sort: a handful of ports */
        for (size_t j = i; j > 0 && ports[j - 1] > ports[j]; j--) {
            int t = ports[j];
            ports[j] = ports[j - 1];
            ports[j - 1] = t;
        }
}

static void hosts_list(struct buf *b, const struct connect_org *org, const char *sep)
{
    for (size_t i = 0; i < org->n_hosts; i++)
        buf_printf(b, "%s%s", i ? sep : "", org->hosts[i]);
}

static void domains_list(struct buf *b, const struct connect_art_route *r, size_t n)
{
    for (size_t i = 0; i < n; i++)
        buf_printf(b, "%s%s", i ? ", " : "", r[i].domain);
}

static json_t *take(struct buf *b, const char *kind, const char *title)
{
    json_t *a = connect_artefact(kind, title, buf_cstr(b));
    buf_free(b);
    buf_init(b);
    return a;
}

static bool env_is(const struct connect_org *org, const char *e)
{
    return strcmp(org->environment, e) == 0;
}

/* missing - the steps to take first when the organisation lacks a value */
static json_t *missing(const struct connect_org *org)
{
    if (org->n_ips == 0)
        return json_pack("{s:[s], s:[]}", "steps",
                         "Fill in Moat's public IP addresses in the organisation task first: "
                         "every rule below is generated from them.", "artefacts");
    if (org->environment[0] == '\0')
        return json_pack("{s:[s], s:[]}", "steps",
                         "Choose your mail environment in the organisation task first.",
                         "artefacts");
    return NULL;
}

/* --- the inbound task --- */

static void exo_header(struct buf *b, const struct connect_org *org)
{
    buf_printf(b, "# Exchange Online PowerShell: run Connect-ExchangeOnline first.\n");
    buf_printf(b, "# Moat (");
    hosts_list(b, org, ", ");
    buf_printf(b, ") delivers your inbound mail from ");
    join_ips(b, org, 0, ", ", "", "");
    buf_printf(b, ".\n");
}

json_t *connect_art_inbound(const struct connect_org *org, const struct connect_art_route *r,
                            size_t n)
{
    json_t *m = missing(org);
    if (m != NULL)
        return m;
    json_t *steps = json_array(), *arts = json_array();
    struct buf b;
    buf_init(&b);

    if (env_is(org, "microsoft365") || env_is(org, "hybrid")) {
        exo_header(&b, org);
        buf_printf(&b, "# Enhanced Filtering skips Moat's addresses, so Exchange Online Protection\n"
                       "# sees the original sender's address for SPF, DMARC and reputation.\n");
        buf_printf(&b, "New-InboundConnector -Name \"%s\" -ConnectorType Partner -SenderDomains \"*\" "
                       "-SenderIPAddresses ", MOAT_CONNECTOR);
        join_ips(&b, org, 0, ",", "", "");
        buf_printf(&b, " -RequireTls $false -RestrictDomainsToIPAddresses $false "
                       "-EFSkipLastIP $false -EFSkipIPs ");
        join_ips(&b, org, 0, ",", "", "");
        buf_printf(&b, " -Comment \"Moat secure email gateway%s%s\"\n",
                   org->name[0] ? " for " : "", org->name);
        json_array_append_new(arts, take(&b, "powershell",
            "Exchange Online: inbound connector from Moat, with Enhanced Filtering"));
        json_array_append_new(steps, json_string(
            "In Exchange Online PowerShell, create the inbound connector below: it identifies "
            "mail from Moat and turns on Enhanced Filtering for Connectors."));
    }
    if (env_is(org, "exchange") || env_is(org, "hybrid")) {
        buf_printf(&b, "# Exchange Management Shell, on each Exchange server that receives mail from Moat.\n");
        buf_printf(&b, "New-ReceiveConnector -Name \"%s\" -Server $env:COMPUTERNAME "
                       "-TransportRole FrontendTransport -Usage Custom -Bindings ", MOAT_CONNECTOR);
        int ports[16];
        size_t np;
        route_ports(r, n, ports, &np);
        for (size_t i = 0; i < np; i++)
            buf_printf(&b, "%s0.0.0.0:%d", i ? "," : "", ports[i]);
        buf_printf(&b, " -RemoteIPRanges ");
        join_ips(&b, org, 0, ",", "", "");
        buf_printf(&b, " -PermissionGroups AnonymousUsers -AuthMechanism Tls\n");
        json_array_append_new(arts, take(&b, "powershell",
            "Exchange Management Shell: receive connector limited to Moat's addresses"));
        json_array_append_new(steps, json_string(
            "In the Exchange Management Shell, create a receive connector that accepts mail "
            "only from Moat's addresses."));
    }
    if (env_is(org, "google")) {
        buf_printf(&b, "Google Admin console > Apps > Google Workspace > Gmail > Spam, phishing and malware > Inbound gateway\n");
        buf_printf(&b, "  Gateway IPs: ");
        join_ips(&b, org, 0, ", ", "", "");
        buf_printf(&b, "\n  Automatically detect external IP (recommended): on\n");
        buf_printf(&b, "  Message is considered spam if the following header regexp matches: off\n");
        json_array_append_new(arts, take(&b, "settings", "Google Workspace: inbound gateway"));
        json_array_append_new(steps, json_string(
            "In the Google Admin console, add Moat's addresses as an inbound gateway."));
    }
    if (env_is(org, "smtp")) {
        buf_printf(&b, "# /etc/postfix/moat_clients.cidr: Moat (");
        hosts_list(&b, org, ", ");
        buf_printf(&b, ")\n");
        join_ips(&b, org, 0, " permit\n", "/32", "/128");
        buf_printf(&b, " permit\n\n# /etc/postfix/main.cf: Moat has already screened this mail,\n"
                       "# so postscreen and client checks let it through.\n"
                       "postscreen_access_list = permit_mynetworks, cidr:/etc/postfix/moat_clients.cidr\n"
                       "smtpd_client_restrictions = permit_mynetworks, check_client_access cidr:/etc/postfix/moat_clients.cidr\n"
                       "# then: postfix reload\n");
        json_array_append_new(arts, take(&b, "postfix", "Postfix: accept mail from Moat"));
        json_array_append_new(steps, json_string(
            "On your mail server, let Moat's addresses through (the Postfix snippet below; "
            "other servers: allow these addresses without greylisting or blocklist checks)."));
    }
    char *list = NULL;
    if (n > 0) {
        domains_list(&b, r, n);
        list = xstrdup(buf_cstr(&b));
        buf_free(&b);
        buf_init(&b);
    }
    char *step_s = xasprintf("Set the delivery route of %s (moat route set DOMAIN HOST[:PORT]), "
                             "name a mailbox for the test message, then run the check.",
                             list ? list : "each domain");
    json_array_append_new(steps, json_string(step_s));
    free(step_s);
    free(list);
    buf_free(&b);
    return json_pack("{s:o, s:o}", "steps", steps, "artefacts", arts);
}

/* --- the lockdown task --- */

json_t *connect_art_lockdown(const struct connect_org *org, const struct connect_art_route *r,
                             size_t n)
{
    json_t *m = missing(org);
    if (m != NULL)
        return m;
    json_t *steps = json_array(), *arts = json_array();
    struct buf b;
    buf_init(&b);
    int ports[16];
    size_t np;
    route_ports(r, n, ports, &np);
    bool onprem = env_is(org, "exchange") || env_is(org, "hybrid") || env_is(org, "smtp");

    if (env_is(org, "microsoft365") || env_is(org, "hybrid")) {
        exo_header(&b, org);
        buf_printf(&b, "# This replaces the connector of the inbound task: mail that does not come\n"
                       "# from Moat's addresses over TLS with Moat's certificate is refused.\n");
        buf_printf(&b, "Remove-InboundConnector -Identity \"%s\" -Confirm:$false\n", MOAT_CONNECTOR);
        buf_printf(&b, "New-InboundConnector -Name \"%s\" -ConnectorType Partner -SenderDomains \"*\" "
                       "-SenderIPAddresses ", MOAT_CONNECTOR);
        join_ips(&b, org, 0, ",", "", "");
        buf_printf(&b, " -RestrictDomainsToIPAddresses $true -RequireTls $true");
        if (org->n_hosts > 0)
            buf_printf(&b, " -TlsSenderCertificateName %s", org->hosts[0]);
        buf_printf(&b, " -EFSkipLastIP $false -EFSkipIPs ");
        join_ips(&b, org, 0, ",", "", "");
        buf_printf(&b, " -Comment \"Moat secure email gateway%s%s: locked down\"\n",
                   org->name[0] ? " for " : "", org->name);
        json_array_append_new(arts, take(&b, "powershell",
            "Exchange Online: accept mail only from Moat, over TLS"));
        json_array_append_new(steps, json_string(
            "In Exchange Online PowerShell, restrict the inbound connector to Moat's addresses "
            "with TLS required and Moat's certificate name."));
    }
    if (env_is(org, "exchange") || env_is(org, "hybrid")) {
        buf_printf(&b, "# Exchange Management Shell, on each Exchange server that receives mail from the internet.\n"
                       "# The default frontend connector then accepts anonymous mail only from Moat;\n"
                       "# add the addresses of internal devices that send through it, if any.\n");
        buf_printf(&b, "Set-ReceiveConnector -Identity \"$env:COMPUTERNAME\\Default Frontend $env:COMPUTERNAME\" "
                       "-RemoteIPRanges ");
        join_ips(&b, org, 0, ",", "", "");
        buf_printf(&b, "\n");
        json_array_append_new(arts, take(&b, "powershell",
            "Exchange Management Shell: receive connector remote IP ranges"));
    }
    if (onprem) {
        /* nftables: a table of its own, so it neither depends on nor disturbs
         * the host's ruleset; reject (not drop) so a probe sees a refusal */
        buf_printf(&b, "#!/usr/sbin/nft -f\n# Accept SMTP on this mail server only from Moat (");
        hosts_list(&b, org, ", ");
        buf_printf(&b, ").\n# Save as /etc/nftables.d/moat-lockdown.nft and load with: nft -f FILE\n");
        buf_printf(&b, "table inet moat_lockdown\ndelete table inet moat_lockdown\n");
        buf_printf(&b, "table inet moat_lockdown {\n");
        if (count_family(org, AF_INET)) {
            buf_printf(&b, "    set moat_v4 {\n        type ipv4_addr\n        elements = { ");
            join_ips(&b, org, AF_INET, ", ", "", "");
            buf_printf(&b, " }\n    }\n");
        }
        if (count_family(org, AF_INET6)) {
            buf_printf(&b, "    set moat_v6 {\n        type ipv6_addr\n        elements = { ");
            join_ips(&b, org, AF_INET6, ", ", "", "");
            buf_printf(&b, " }\n    }\n");
        }
        char portset[128];
        int o = 0;
        portset[0] = '\0';
        if (np == 1) {
            xsnprintf(portset, sizeof portset, "%d", ports[0]);
        } else {
            o += xsnprintf(portset, sizeof portset, "{ ");
            for (size_t i = 0; i < np && o < (int)sizeof portset - 16; i++)
                o += xsnprintf(portset + o, sizeof portset - (size_t)o, "%s%d", i ? ", " : "", ports[i]);
            xsnprintf(portset + o, sizeof portset - (size_t)o, " }");
        }
        buf_printf(&b, "    chain input {\n        type filter hook input priority filter - 1; policy accept;\n");
        buf_printf(&b, "        iif \"lo\" tcp dport %s accept\n", portset);
        if (count_family(org, AF_INET))
            buf_printf(&b, "        ip saddr @moat_v4 tcp dport %s accept\n", portset);
        if (count_family(org, AF_INET6))
            buf_printf(&b, "        ip6 saddr @moat_v6 tcp dport %s accept\n", portset);
        buf_printf(&b, "        tcp dport %s reject with tcp reset\n    }\n}\n", portset);
        json_array_append_new(arts, take(&b, "nftables", "nftables: port 25 only from Moat"));

        /* Windows Firewall: block rules win over allow rules (Exchange installs
         * its own allow rules), so block every address but Moat's */
        buf_printf(&b, "# Windows PowerShell (as Administrator) on the mail server: refuse SMTP from\n"
                       "# every address except Moat's (");
        join_ips(&b, org, 0, ", ", "", "");
        buf_printf(&b, ").\nNew-NetFirewallRule -DisplayName \"SMTP only from Moat\" -Direction Inbound "
                       "-Protocol TCP -LocalPort ");
        for (size_t i = 0; i < np; i++)
            buf_printf(&b, "%s%d", i ? "," : "", ports[i]);
        buf_printf(&b, " -Action Block -Profile Any -RemoteAddress ");
        bool first = true;
        complement_ranges(&b, org, AF_INET, &first);
        complement_ranges(&b, org, AF_INET6, &first);
        buf_printf(&b, "\n");
        json_array_append_new(arts, take(&b, "powershell", "Windows Firewall: port 25 only from Moat"));
        json_array_append_new(steps, json_string(
            "On the mail server's firewall, allow port 25 only from Moat: nftables on Linux, "
            "Windows Firewall on Windows."));
    }
    if (env_is(org, "smtp")) {
        buf_printf(&b, "# /etc/postfix/moat_clients.cidr: Moat (");
        hosts_list(&b, org, ", ");
        buf_printf(&b, ")\n");
        join_ips(&b, org, 0, " permit\n", "/32", "/128");
        buf_printf(&b, " permit\n\n# /etc/postfix/main.cf: refuse every other client at the greeting.\n"
                       "smtpd_delay_reject = no\n"
                       "smtpd_client_restrictions = permit_mynetworks, check_client_access cidr:/etc/postfix/moat_clients.cidr, reject\n"
                       "# then: postfix reload\n");
        json_array_append_new(arts, take(&b, "postfix", "Postfix: refuse clients other than Moat"));
    }
    if (env_is(org, "google")) {
        buf_printf(&b, "Google Admin console > Apps > Google Workspace > Gmail > Spam, phishing and malware > Inbound gateway\n");
        buf_printf(&b, "  Gateway IPs: ");
        join_ips(&b, org, 0, ", ", "", "");
        buf_printf(&b, "\n  Reject all mail not from gateway IPs: on\n"
                       "  Require TLS for connections from the email gateways listed above: on\n");
        json_array_append_new(arts, take(&b, "settings", "Google Workspace: reject mail not from Moat"));
        json_array_append_new(steps, json_string(
            "In the Google Admin console, reject mail that does not come through Moat."));
    }
    if (org->probe_source[0] != '\0') {
        char *s = xasprintf("Moat checks the lockdown by connecting from %s to your mail server: "
                            "the connection (or the test recipient) must be refused.",
                            org->probe_source);
        json_array_append_new(steps, json_string(s));
        free(s);
    } else {
        json_array_append_new(steps, json_string(
            "Without a probe source address (organisation task) Moat records the lockdown "
            "but cannot test it from outside."));
    }
    buf_free(&b);
    return json_pack("{s:o, s:o}", "steps", steps, "artefacts", arts);
}

/* --- shared by the checks --- */

void connect_finish(connect_done_cb done, void *arg, enum connect_outcome o, json_t *details,
                    const char *fmt, ...)
{
    struct connect_result r = { .outcome = o, .details = details };
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r.message, sizeof r.message, fmt, ap);
    va_end(ap);
    done(arg, &r);
}

struct later {
    connect_done_cb done;
    void *arg;
    struct connect_result r;
};

static void later_cb(evutil_socket_t fd, short what, void *p)
{
    struct later *l = p;
    l->done(l->arg, &l->r);
    free(l);
}

void connect_finish_later(const struct connect_env *env, connect_done_cb done, void *arg,
                          enum connect_outcome o, json_t *details, const char *fmt, ...)
{
    struct later *l = xcalloc(1, sizeof *l);
    l->done = done;
    l->arg = arg;
    l->r.outcome = o;
    l->r.details = details;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->r.message, sizeof l->r.message, fmt, ap);
    va_end(ap);
    struct timeval now = { 0, 0 };
    if (event_base_once(env->base, -1, EV_TIMEOUT, later_cb, l, &now) != 0)
        log_fatal("event=connect_bug reason=\"event_base_once failed\"");
}

bool connect_domain_covers(const char *parent, const char *name)
{
    size_t lp = strlen(parent), ln = strlen(name);
    if (lp == ln)
        return strcmp(parent, name) == 0;
    return ln > lp + 1 && name[ln - lp - 1] == '.' && strcmp(name + ln - lp, parent) == 0;
}

/* connect_listener_target - Moat's own SMTP listener as a client reaches it:
 * the first smtp_listen address; a wildcard is reached on loopback */
int connect_listener_target(const struct moat_settings *s, struct sockaddr_storage *sa,
                            socklen_t *salen, char *text, size_t textlen)
{
    char *host = NULL;
    int port = 0;
    if (s->n_smtp_listen < 1 || settings_parse_hostport(s->smtp_listen[0], &host, &port) < 0)
        return -1;
    const char *h = host;
    if (strcmp(h, "0.0.0.0") == 0 || h[0] == '\0' || strcmp(h, "*") == 0)
        h = "127.0.0.1";
    else if (strcmp(h, "::") == 0)
        h = "::1";
    struct sockaddr_in *s4 = (struct sockaddr_in *)sa;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)sa;
    memset(sa, 0, sizeof *sa);
    int rc = 0;
    if (inet_pton(AF_INET, h, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        *salen = sizeof *s4;
        xsnprintf(text, textlen, "%s:%d", h, port);
    } else if (inet_pton(AF_INET6, h, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *salen = sizeof *s6;
        xsnprintf(text, textlen, "[%s]:%d", h, port);
    } else {
        rc = -1;
    }
    free(host);
    return rc;
}

/* connect_address_valid - a plain mail address "local@domain" (ASCII, no
 * quoting, RFC 5321 lengths), as the checks' test addresses must be */
bool connect_address_valid(const char *a)
{
    const char *at = strrchr(a, '@');
    size_t len = strlen(a);
    bool ok = at != NULL && at != a && len <= 254 && (size_t)(at - a) <= 64;
    for (const char *p = a; ok && *p; p++)
        ok = (unsigned char)*p > ' ' && (unsigned char)*p < 0x7f && *p != '<' && *p != '>' &&
             *p != '"' && *p != '\\';
    char dom[256];
    if (ok) {
        str_copy(dom, sizeof dom, at + 1);
        ok = domain_name_valid(dom);
    }
    return ok;
}

/* --- the outbound task --- */

/* smart_host - the name the mail server sends to: Moat's first public host
 * name, else its first address */
static const char *smart_host(const struct connect_org *org)
{
    return org->n_hosts > 0 ? org->hosts[0] : org->ips[0];
}

json_t *connect_art_outbound(const struct connect_org *org)
{
    json_t *m = missing(org);
    if (m != NULL)
        return m;
    json_t *steps = json_array(), *arts = json_array();
    const char *sh = smart_host(org);
    struct buf b;
    buf_init(&b);

    if (env_is(org, "microsoft365") || env_is(org, "hybrid")) {
        buf_printf(&b, "# Exchange Online PowerShell: run Connect-ExchangeOnline first.\n"
                       "# Every message to the internet leaves through Moat (");
        hosts_list(&b, org, ", ");
        buf_printf(&b, "), under TLS.\n");
        buf_printf(&b, "New-OutboundConnector -Name \"To Moat\" -ConnectorType Partner "
                       "-RecipientDomains \"*\" -UseMXRecord $false -SmartHosts ");
        for (size_t i = 0; i < (org->n_hosts ? org->n_hosts : org->n_ips); i++)
            buf_printf(&b, "%s\"%s\"", i ? "," : "", org->n_hosts ? org->hosts[i] : org->ips[i]);
        buf_printf(&b, " -TlsSettings %s%s%s -Comment \"Moat secure email gateway%s%s\"\n",
                   org->n_hosts ? "DomainValidation -TlsDomain \"" : "EncryptionOnly",
                   org->n_hosts ? sh : "", org->n_hosts ? "\"" : "", org->name[0] ? " for " : "",
                   org->name);
        json_array_append_new(arts, take(&b, "powershell",
            "Exchange Online: outbound connector to Moat"));
        json_array_append_new(steps, json_string(
            "In Exchange Online PowerShell, create the outbound connector below. Exchange Online "
            "sends from Microsoft's shared outbound ranges (published by Microsoft as \"Exchange "
            "Online Protection\" addresses): authorise those ranges in Moat."));
    }
    if (env_is(org, "exchange") || env_is(org, "hybrid")) {
        buf_printf(&b, "# Exchange Management Shell: mail to the internet goes to Moat, under TLS.\n");
        buf_printf(&b, "New-SendConnector -Name \"To Moat\" -Usage Custom -AddressSpaces \"SMTP:*;1\" "
                       "-DNSRoutingEnabled $false -SmartHosts ");
        for (size_t i = 0; i < (org->n_hosts ? org->n_hosts : org->n_ips); i++)
            buf_printf(&b, "%s\"%s\"", i ? "," : "", org->n_hosts ? org->hosts[i] : org->ips[i]);
        buf_printf(&b, " -SmartHostAuthMechanism None -RequireTLS $true%s%s%s "
                       "-SourceTransportServers $env:COMPUTERNAME\n",
                   org->n_hosts ? " -TlsAuthLevel DomainValidation -TlsDomain \"" : "",
                   org->n_hosts ? sh : "", org->n_hosts ? "\"" : "");
        json_array_append_new(arts, take(&b, "powershell",
            "Exchange Management Shell: send connector to Moat"));
        json_array_append_new(steps, json_string(
            "In the Exchange Management Shell, create the send connector below and authorise "
            "the sending Exchange servers' addresses in Moat."));
    }
    if (env_is(org, "google")) {
        buf_printf(&b, "Google Admin console > Apps > Google Workspace > Gmail > Routing > Outbound gateway\n"
                       "  Outbound gateway: %s\n", sh);
        json_array_append_new(arts, take(&b, "settings", "Google Workspace: outbound gateway"));
        json_array_append_new(steps, json_string(
            "In the Google Admin console, set Moat as the outbound gateway and authorise "
            "Google's outbound ranges in Moat."));
    }
    if (env_is(org, "smtp")) {
        buf_printf(&b, "# /etc/postfix/main.cf: mail to the internet goes to Moat, encrypted.\n"
                       "relayhost = [%s]:25\n"
                       "smtp_tls_security_level = encrypt\n"
                       "# Either authorise this server's address in Moat (moat outbound host add),\n"
                       "# or sign in with an SMTP AUTH account (moat outbound account add):\n"
                       "#   smtp_sasl_auth_enable = yes\n"
                       "#   smtp_sasl_security_options = noanonymous\n"
                       "#   smtp_sasl_password_maps = texthash:/etc/postfix/moat_passwd\n"
                       "#   /etc/postfix/moat_passwd holds one line: [%s]:25, a space, then\n"
                       "#   the account's name, a colon and its password (chmod 600)\n"
                       "# then: postfix reload\n", sh, sh);
        json_array_append_new(arts, take(&b, "postfix", "Postfix: send through Moat"));
        json_array_append_new(steps, json_string(
            "On your mail server, send mail for other domains through Moat (the Postfix snippet "
            "below; other servers: a smart host or relay host setting)."));
    }
    buf_printf(&b, "; SPF: Moat's addresses in each domain's record, before its all term;\n"
                   "; the check shows the exact record for each domain, merged with the current one.\n");
    for (size_t i = 0; i < org->n_ips; i++)
        buf_printf(&b, "%s%s:%s", i ? " " : "", strchr(org->ips[i], ':') ? "ip6" : "ip4",
                   org->ips[i]);
    buf_printf(&b, "\n");
    json_array_append_new(arts, take(&b, "dns", "SPF: the terms that authorise Moat"));
    buf_free(&b);
    return json_pack("{s:o, s:o}", "steps", steps, "artefacts", arts);
}
