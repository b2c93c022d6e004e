/*
 * moat.c - the moat command-line client: global options, the command table,
 * dispatch and help.
 *
 *   moat [--url URL] [--json] NOUN [VERB] [ARGS...] [OPTIONS]
 *
 * Every command goes through moatd's HTTP API (cli_http.c): the URL and API
 * token come from --url, $MOAT_URL and $MOAT_TOKEN, or cli.conf, which
 * `moat login` writes.  Global options may appear anywhere before "--".
 *
 * Exit status: 0 success, 1 failure (with the API's message), 2 usage error.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <curl/curl.h>
#include "cli.h"

static const struct cli_option dkim_keygen_options[] = {
    { "selector", "S", "the selector (default moatYYYYMM, e.g. moat202611)" },
    { "algorithm", "ALG", "rsa (RSA 2048, the default: every receiver verifies it) or ed25519 "
      "(RFC 8463; best added beside an RSA key)" },
    { "inactive", NULL, "keep signing with the current key: publish the new record first, then "
      "run moat dkim activate DOMAIN SELECTOR" },
    { NULL, NULL, NULL },
};

static const struct cli_option dkim_record_options[] = {
    { "selector", "S", "the key with this selector (default: the active key)" },
    { NULL, NULL, NULL },
};

static const struct cli_option tls_policy_options[] = {
    { "fallback", "MODE", "dane only: opportunistic, encrypt or verify where DANE does not apply "
      "(default opportunistic)" },
    { "override", NULL, "enforce the policy even when its probe does not meet the mode "
      "(audit-logged)" },
    { NULL, NULL, NULL },
};

static const struct cli_option route_set_options[] = {
    { "tls", "MODE", "opportunistic (STARTTLS when offered), relaxed (TLS required, "
      "certificate not checked) or strict (TLS required, trusted certificate matching HOST); "
      "default: keep the current mode, opportunistic for a new route" },
    { "override", NULL, "store a relaxed or strict route even though its TLS probe does not "
      "meet the mode (audit-logged)" },
    { NULL, NULL, NULL },
};

static const struct cli_option queue_list_options[] = {
    { "limit", "N", "at most N messages (1..1000, default 100)" },
    { "cursor", "QID", "start after this queue id (the last id of the previous page)" },
    { NULL, NULL, NULL },
};

static const struct cli_option queue_retry_options[] = {
    { "all", NULL, "retry every queued message now" },
    { NULL, NULL, NULL },
};

static const struct cli_option login_options[] = {
    { "url", "URL", "the API of moatd, e.g. https://moat.example.com:8025 (default: $MOAT_URL, "
      "else the url of cli.conf, else http://127.0.0.1:8025)" },
    { "name", "NAME", "the account to sign in as (default: $MOAT_NAME, else asked)" },
    { "totp", "CODE", "the current code of the account's authenticator app, when it has one" },
    { NULL, NULL, NULL },
};

static const struct cli_option account_add_options[] = {
    { "role", "ROLE", "admin or basic_admin (default basic_admin)" },
    { "password-stdin", NULL, "read the password from standard input instead of generating "
      "a one-time password" },
    { NULL, NULL, NULL },
};

static const struct cli_option token_list_options[] = {
    { "all", NULL, "every account's tokens (needs the accounts_manage permission)" },
    { NULL, NULL, NULL },
};

static const struct cli_option token_create_options[] = {
    { "role", "ROLE", "the token's scope: admin, basic_admin or user; never above your own "
      "role (default: your role)" },
    { NULL, NULL, NULL },
};

static const struct cli_option audit_options[] = {
    { "since", "TIME", "entries from this time on: unix seconds or 2026-11-28T18:00:00Z" },
    { "action", "ACTION", "entries whose action starts with ACTION (domain, route.set, "
      "account, token, auth.login, ...)" },
    { "account", "NAME", "entries made by this account" },
    { "limit", "N", "only the newest N entries (1..1000; default: all)" },
    { NULL, NULL, NULL },
};

static const struct cli_option connect_input_options[] = {
    { "test-address", "ADDRESS", "inbound: the mailbox (under one of your domains) that "
      "receives the test message sent through Moat to your mail server" },
    { "test-recipient", "ADDRESS", "outbound: an address at another organisation that "
      "receives the test message Moat relays from an authorised address" },
    { "test-sender", "ADDRESS", "outbound: the test message's sender (default: postmaster at "
      "your first domain)" },
    { NULL, NULL, NULL },
};

static const struct cli_option org_set_options[] = {
    { "environment", "ENV", "your mail environment: microsoft365 (Exchange Online), exchange "
      "(on-premises Exchange), hybrid, google (Google Workspace) or smtp (another SMTP server)" },
    { "name", "NAME", "the organisation's name" },
    { "contact-name", "NAME", "the emergency contact: who Moat's operators reach when mail "
      "stops flowing" },
    { "contact-email", "ADDRESS", "the emergency contact's e-mail address (best outside the "
      "domains Moat protects)" },
    { "contact-phone", "PHONE", "the emergency contact's phone number" },
    { "public-host", "HOST...", "a public host name of Moat (an MX target); repeat it for each; "
      "the list replaces the current one; --public-host '' clears it" },
    { "public-ip", "ADDRESS...", "a public IP address of Moat (what your mail server and "
      "firewall accept mail from); repeat it for each; replaces the current list; "
      "--public-ip '' clears it" },
    { "probe-source", "ADDRESS", "an address of this machine that is NOT one of Moat's public "
      "addresses: the lockdown check connects from it and expects your mail server to refuse; "
      "'' turns the probe off" },
    { NULL, NULL, NULL },
};

static const struct cli_option settings_options[] = {
    { "runtime", NULL, "only the settings that can be changed at run time" },
    { NULL, NULL, NULL },
};

static const struct cli_option domain_add_options[] = {
    { "trust-unverified", NULL, "lab override: treat NAME as internal without DNS "
      "verification; audit-logged and shown as a warning on the checklist" },
    { NULL, NULL, NULL },
};

static const struct cli_option directory_set_options[] = {
    { "preset", "PRESET", "active_directory (mail, proxyAddresses SMTP:/smtp:, "
      "userPrincipalName, displayName, objectGUID, group + member) or openldap (mail, "
      "mailAlternativeAddress, cn, entryUUID, groupOfNames + member); default active_directory" },
    { "ldap-url", "URL", "the directory server: ldaps://HOST[:PORT], or ldap://HOST[:PORT] (with "
      "--starttls to encrypt)" },
    { "fallback-url", "URL", "a second server, used when the first cannot be reached; '' "
      "removes it" },
    { "starttls", NULL, "upgrade ldap:// connections with StartTLS" },
    { "no-starttls", NULL, "do not use StartTLS" },
    { "ca-file", "PATH", "the CA certificate(s) (PEM) that signed the server's certificate; "
      "'' = the system trust store. The certificate must verify and name the host" },
    { "bind-dn", "DN", "the account Moat binds as, e.g. CN=moat-sync,OU=Service,DC=example,DC=com" },
    { "password-stdin", NULL, "read the bind password from the first line of standard input "
      "(stored encrypted, never shown again)" },
    { "clear-password", NULL, "remove the stored bind password" },
    { "base-dn", "DN", "where users and groups are searched (subtree)" },
    { "filter", "FILTER", "the LDAP filter that selects users; '' = the preset's" },
    { "group-filter", "FILTER", "the LDAP filter that selects groups; '' = no groups" },
    { "attribute", "NAME=ATTR...", "override the attribute map: mail, proxy_addresses, alias, "
      "upn, display_name, id, member (e.g. --attribute alias=mailAlternateAddress); "
      "NAME= leaves it unused" },
    { "page-size", "N", "entries per page of the paged search (1..10000, default 500)" },
    { "timeout", "SECONDS", "connect, bind and per-page timeout (1..600, default 30)" },
    { "max-entries", "N", "refuse a directory with more users and groups than this "
      "(default 1000000)" },
    { "schedule", "TIMES", "times of day (local) for the automatic sync, e.g. "
      "06:00,12:00,18:00 (the default); '' = only on demand" },
    { "max-remove-share", "SHARE", "a sync that would remove more than this share of the "
      "directory's users stops and waits for --confirm (default 0.10 = 10%)" },
    { NULL, NULL, NULL },
};

static const struct cli_option directory_sync_options[] = {
    { "confirm", NULL, "apply even if more than max-remove-share of the users would be removed" },
    { "no-wait", NULL, "start the sync and return at once" },
    { "status", NULL, "do not start a sync: show the running one and the last result" },
    { NULL, NULL, NULL },
};

static const struct cli_option user_add_options[] = {
    { "name", "NAME", "the display name" },
    { "alias", "ADDRESS...", "another address of the user; repeat it for each" },
    { "password-stdin", NULL, "read a portal password (12 characters or more) from the first "
      "line of standard input; stored as an argon2id hash" },
    { "disabled", NULL, "add the user disabled (mail to it is refused as unknown)" },
    { NULL, NULL, NULL },
};

static const struct cli_option group_add_options[] = {
    { "name", "NAME", "the display name" },
    { "alias", "ADDRESS...", "another address of the group; repeat it for each" },
    { "member", "ADDRESS...", "a member (any address of a user or group); repeat it for each" },
    { NULL, NULL, NULL },
};

static const struct cli_option group_members_options[] = {
    { "add", "ADDRESS...", "add this user or group; repeat it for each" },
    { "remove", "ADDRESS...", "remove this member; repeat it for each" },
    { NULL, NULL, NULL },
};

static const struct cli_option rv_set_options[] = {
    { "mode", "MODE", "directory (synced users and groups only), known (directory and manual), "
      "call-forward (ask the domain's mail server with an RCPT probe) or accept-all" },
    { "unreachable", "WHAT", "when the source cannot answer (directory never synced, mail "
      "server down): tempfail (450 4.4.3, the default) or accept" },
    { NULL, NULL, NULL },
};

static const struct cli_option dnsbl_options[] = {
    { "weight", "N", "the zone's weight, 1 to 100 (default 1)" },
    { "comment", "TEXT", "a note kept with the zone" },
    { NULL, NULL, NULL },
};
static const struct cli_option permitted_options[] = {
    { "comment", "TEXT", "a note kept with the entry (who, what for)" },
    { NULL, NULL, NULL },
};

static const struct cli_option outbound_options[] = {
    { "comment", "TEXT", "a note kept with the entry (who, what for)" },
    { "password-file", "FILE", "account add / passwd: read the password (12 characters or more) "
      "from the first line of FILE ('-' = standard input) instead of generating one" },
    { NULL, NULL, NULL },
};

static const struct cli_option antispoof_options[] = {
    { "domain", "DOMAIN", "add: only for this internal domain (and its subdomains); default: "
      "every internal domain (--from-candidate: each domain the source was refused for)" },
    { "comment", "TEXT", "a note kept with the bypass (who sends, what for)" },
    { "from-candidate", "ADDRESS", "add: except a source listed by moat antispoof candidates" },
    { "by", "ip|host", "with --from-candidate: its address (default) or its forward-confirmed "
      "host name" },
    { NULL, NULL, NULL },
};

/* issue 8: the archive and the journal role (cli_archive.c, cli_journal.c) */
static const struct cli_option archive_search_options[] = {
    { "offset", "N", "skip the first N matches (paging; default 0)" },
    { "limit", "N", "at most N messages (1..500, default 50)" },
    { NULL, NULL, NULL },
};

static const struct cli_option archive_show_options[] = {
    { "eml", NULL, "write the message as it was archived (RFC 5322, with Moat's Received "
      "line) to standard output instead" },
    { NULL, NULL, NULL },
};

static const struct cli_option archive_export_options[] = {
    { "output", "FILE", "the mbox file to write (-o FILE; must not exist yet)" },
    { NULL, NULL, NULL },
};

static const struct cli_option archive_hold_options[] = {
    { "reason", "TEXT", "why the hold was placed (a case number)" },
    { NULL, NULL, NULL },
};

static const struct cli_option journal_set_options[] = {
    { "address", "A", "the journal address (\"\" = back to the default "
      "journal@journal.<primary domain>)" },
    { "undeliverable", "U", "where Exchange sends journal reports it cannot deliver: a mailbox "
      "outside Exchange Online (\"\" = unset)" },
    { NULL, NULL, NULL },
};

static const struct cli_option journal_source_options[] = {
    { "comment", "C", "a note (which mail server this is)" },
    { NULL, NULL, NULL },
};

/* issue 7: held mail, blocked senders, forwarding (cli_held.c) */
static const struct cli_option blocked_add_options[] = {
    { "action", "ACTION", "hold (accept into quarantine for an administrator) or reject "
      "(550 5.7.1 at RCPT TO)" },
    { "comment", "TEXT", "a note kept with the entry" },
    { NULL, NULL, NULL },
};
static const struct cli_option forward_add_options[] = {
    { "copy", NULL, "deliver to the address too (default: redirect, only to TARGET)" },
    { "comment", "TEXT", "a note kept with the rule" },
    { NULL, NULL, NULL },
};

/* issue 11: backup and restore (cli_backup.c) */
static const struct cli_option backup_options[] = {
    { "with-archive", NULL, "also the archive and the message-tracking databases (they can "
      "be large)" },
    { NULL, NULL, NULL },
};

static const struct cli_option restore_options[] = {
    { "state-dir", "DIR", "the state directory to restore into (created; must be empty "
      "unless --force)" },
    { "config", "PATH", "write the backup's settings file here, its paths pointing into DIR" },
    { "force", NULL, "replace the files of a non-empty state directory and an existing "
      "settings file" },
    { NULL, NULL, NULL },
};

/* issue 11: message tracking (cli_track.c) */
static const struct cli_option track_options[] = {
    { "from", "S", "sender contains S (case-insensitive; @example.com for a domain)" },
    { "to", "R", "a recipient contains R" },
    { "subject", "T", "the subject contains T" },
    { "message-id", "M", "the Message-ID is M (with or without <>)" },
    { "qid", "Q", "the queue id is Q" },
    { "ip", "A", "the client address is A, or in the range A (192.0.2.0/24)" },
    { "after", "T", "first seen at or after T (unix seconds or ISO 8601, e.g. 2026-11-28T18:00Z)" },
    { "before", "T", "first seen before T" },
    { "outcome", "O", "rejected, tempfailed, queued, deferred, held, delivered, bounced, partial, "
      "deleted, archived or open" },
    { "limit", "N", "at most N messages, newest first (1..1000, default 50)" },
    { NULL, NULL, NULL },
};

/* cli_commands - every command; later issues add rows here */
static const struct cli_command cli_commands[] = {
    { "domain", "add", "NAME", 1, 1, domain_add_options, cli_domain_add,
      "add an internal domain",
      "Adds NAME (e.g. example.com) as an internal domain and prints the TXT record "
      "(moat-verification=TOKEN) to publish at its apex: Moat accepts mail for NAME and its "
      "subdomains once the record is found (`moat domain verify NAME`, or the automatic "
      "re-check). A subdomain of a verified domain needs no record. Names are "
      "stored in lower case; internationalised names must be given in A-label form (xn--...)." },
    { "domain", "list", "", 0, 0, NULL, cli_domain_list,
      "list internal domains and their routes",
      "Lists every internal domain with its status, its delivery route and when it was added." },
    { "domain", "verify", "NAME", 1, 1, NULL, cli_domain_verify,
      "look for a domain's verification TXT record now",
      "Runs the domains check now: looks up the TXT record moat-verification=TOKEN at the apex "
      "of NAME (and of every other pending domain) through Moat's resolver, and prints whether "
      "NAME is verified. A missing record is pending, a resolver error unknown." },
    { "domain", "remove", "NAME", 1, 1, NULL, cli_domain_remove,
      "remove an internal domain and its route",
      "Removes NAME and its route. Mail for it is refused from then on (relay denied); "
      "messages already queued for it stay queued." },
    { "route", "set", "DOMAIN HOST[:PORT]", 2, 2, route_set_options, cli_route_set,
      "set the delivery route of a domain",
      "Mail accepted for DOMAIN (and its subdomains) is delivered to HOST, the organisation's "
      "own mail server, on PORT (default 25). HOST is a host name, an IPv4 address or an IPv6 "
      "address in brackets: [2001:db8::25]:25." },
    { "route", "show", "[DOMAIN]", 0, 1, NULL, cli_route_show,
      "show the route of one domain, or of all",
      "Shows where mail for DOMAIN is delivered; without DOMAIN, the routes of every domain." },
    { "queue", "list", "", 0, 0, queue_list_options, cli_queue_list,
      "list queued messages",
      "Lists the messages waiting for delivery, oldest first, a page at a time. The last line "
      "tells how to fetch the next page." },
    { "queue", "show", "QID", 1, 1, NULL, cli_queue_show,
      "show one queued message",
      "Shows the envelope, the state of each recipient, the delivery attempts and the header "
      "section of a queued message." },
    { "queue", "retry", "[QID]", 0, 1, queue_retry_options, cli_queue_retry,
      "retry a queued message now, or all with --all",
      "Schedules QID (or every message, with --all) for an immediate delivery attempt, "
      "e.g. after a route or a destination was fixed." },
    { "queue", "delete", "QID", 1, 1, NULL, cli_queue_delete,
      "delete a queued message without notice",
      "Removes QID from the queue. No delivery status notification is sent: the sender is "
      "not told. Use it for spam floods or test messages." },
    { "status", NULL, "", 0, 0, NULL, cli_status,
      "show whether moatd runs, and its counters",
      "Asks the running moatd for its uptime, connections and queue size. Exits with status 1 "
      "when moatd is not running." },
    { "login", NULL, "", 0, 0, login_options, cli_login,
      "sign in and store an API token for the CLI",
      "Signs in to moatd's API with a password ($MOAT_PASSWORD, else asked without echo), "
      "changes it first when the account must ($MOAT_NEW_PASSWORD, else asked), creates an "
      "API token for this machine and writes the URL and the token to "
      "~/.config/moat/cli.conf (mode 0600). Later commands use it; $MOAT_URL and $MOAT_TOKEN "
      "override it." },
    { "account", "list", "", 0, 0, NULL, cli_account_list,
      "list administrator accounts",
      "Lists every account with its role, state and whether it has a second factor." },
    { "account", "add", "NAME", 1, 1, account_add_options, cli_account_add,
      "add an administrator account",
      "Adds NAME with --role (admin or basic_admin). Without --password-stdin a one-time "
      "password is generated and printed once; it must be changed at the first sign-in." },
    { "account", "remove", "NAME|ID", 1, 1, NULL, cli_account_remove,
      "remove an account",
      "Removes the account; its sessions and API tokens stop working at once. The last "
      "administrator cannot be removed." },
    { "account", "role", "NAME|ID ROLE", 2, 2, NULL, cli_account_role,
      "change the role of an account",
      "Gives the account ROLE: admin (everything) or basic_admin (everything except "
      "managing accounts and roles and reading message content)." },
    { "token", "list", "", 0, 0, token_list_options, cli_token_list,
      "list API tokens",
      "Lists your API tokens (with --all, everyone's) with their scope and when they were "
      "last used. The secrets are never shown again." },
    { "token", "create", "NAME", 1, 1, token_create_options, cli_token_create,
      "create an API token for automation",
      "Creates a token named NAME and prints it once. Use it as MOAT_TOKEN or in an "
      "Authorization: Bearer header." },
    { "token", "revoke", "ID", 1, 1, NULL, cli_token_revoke,
      "revoke an API token",
      "The token stops working at once." },
    { "connect", "show", "TASK", 1, 1, NULL, cli_connect_show,
      "show one Connect task: what blocks it, its instructions and artefacts",
      "Shows TASK (organisation, domains, inbound, mx, lockdown, ...): its state, the "
      "prerequisites that block it, the steps to take and the exact artefacts to apply (DNS "
      "records, PowerShell, nftables rules, ...) filled with your organisation's values, and "
      "the result of its last check." },
    { "connect", "check", "TASK", 1, 1, NULL, cli_connect_check,
      "run a Connect task's check now",
      "Verifies TASK against reality (DNS, SMTP) now and records the result: pass makes it "
      "done; pending (e.g. a DNS record not visible yet) makes it waiting, and Moat re-checks "
      "it on its own; fail says what is wrong; unknown (a resolver error) changes nothing." },
    { "connect", "skip", "TASK", 1, 1, NULL, cli_connect_skip,
      "skip an optional Connect task",
      "Marks an optional TASK (antispoof_bypass, tls_policies, admins, forwarding; lockdown "
      "for a hybrid environment) as skipped. Mandatory tasks cannot be skipped." },
    { "connect", "input", "TASK", 1, 1, connect_input_options, cli_connect_input,
      "give a Connect task what its check needs",
      "Records the input a task's check needs from you; for inbound, the mailbox that "
      "receives the test message: moat connect input inbound --test-address postmaster@example.com; "
      "for outbound, an address at another organisation: moat connect input outbound "
      "--test-recipient someone@example.org" },
    { "connect", "status", "", 0, 0, NULL, cli_connect_list,
      "the Connect checklist (same as `moat connect`)",
      "Prints the Connect checklist: every onboarding task in order with its state, what "
      "blocks it and the next step." },
    { "connect", NULL, "", 0, 0, NULL, cli_connect_list,
      "the onboarding checklist: every task, its state and the next step",
      "Prints the Connect checklist: every onboarding task of DESIGN.md in order, with a state "
      "marker ([x] done, [-] skipped, [~] waiting, [!] attention, [>] in progress, [ ] to do, "
      "[#] locked), its title, and what blocks it or the next step. Warnings (domains trusted "
      "without proof) come first. `moat connect show TASK` shows one task in full." },
    { "org", "show", "", 0, 0, NULL, cli_org_show,
      "show the organisation",
      "Shows the organisation as Connect and every generated artefact use it: environment, "
      "emergency contact, Moat's public host names and addresses, the lockdown probe source." },
    { "org", "set", "", 0, 0, org_set_options, cli_org_set,
      "describe the organisation (environment, contact, public names and addresses)",
      "Changes the given fields of the organisation and re-checks the organisation task. "
      "Example: moat org set --environment microsoft365 --contact-name 'Ann Admin' "
      "--contact-email ann@example.net --public-host mx1.example.com --public-ip 192.0.2.25" },
    /* the verbs first: a row without a verb matches any (find_command) */
    { "settings", "set", "KEY VALUE", 2, 2, NULL, cli_settings_set,
      "change a runtime setting now, without a restart",
      "Stores VALUE for KEY in the database; moatd checks it as it would in moat.conf and "
      "applies it at once (the next SMTP session, transaction, outgoing connection or retry "
      "uses it), keeps it across restarts and records the change in the audit log. Only the "
      "settings marked changeable at run time in docs/settings.md (see `moat settings "
      "--runtime`); the others belong in moat.conf. Example: moat settings set "
      "message_size_limit 20M" },
    { "settings", "reset", "KEY", 1, 1, NULL, cli_settings_reset,
      "drop a stored setting: back to moat.conf's value or the default",
      "Removes the value stored for KEY with `moat settings set`; moatd uses the value of "
      "moat.conf, or the default, at once. Audit-logged." },
    { "settings", NULL, "", 0, 0, settings_options, cli_settings_list,
      "show every setting, its value and where it comes from",
      "Prints each setting's effective value and its source: default, file (moat.conf), "
      "store (set with `moat settings set`) or command-line (moatd -o, which outranks a "
      "stored value). With --runtime, only the settings that can be changed at run time." },
    { "directory", "show", "", 0, 0, NULL, cli_directory_show,
      "show the LDAP / Active Directory source",
      "Shows the directory source: server, TLS, bind account (the password only as set or not "
      "set), base DN, filters, the effective attribute map, page size, schedule and the "
      "safety limit on removals." },
    { "directory", "set", "", 0, 0, directory_set_options, cli_directory_set,
      "configure the LDAP / Active Directory source",
      "Changes the given settings of the directory source; the others keep their value. "
      "Example: echo \"$PW\" | moat directory set --preset active_directory --ldap-url "
      "ldaps://dc1.example.com --ca-file /etc/moat/ad-ca.pem --bind-dn "
      "'CN=moat-sync,OU=Service,DC=example,DC=com' --base-dn 'DC=example,DC=com' "
      "--password-stdin" },
    { "directory", "test", "", 0, 0, NULL, cli_directory_test,
      "test the connection to the directory",
      "Connects (with TLS as configured), binds, checks the base DN, samples a few users and "
      "groups with the filters, and tells whether the server supports paged results. "
      "Exits 1 when something fails, with the server's error." },
    { "directory", "preview", "", 0, 0, NULL, cli_directory_preview,
      "show what a sync would create, update and remove",
      "Reads the whole directory and counts what a sync would do without changing anything; "
      "lists addresses under domains that are not validated (never imported) and entries "
      "that would be skipped, and warns when the safety stop would refuse the sync." },
    { "directory", "sync", "", 0, 0, directory_sync_options, cli_directory_sync,
      "synchronise the directory now",
      "Reads the directory and applies it: users and groups are created, updated and "
      "removed so Moat's directory matches it (manual users are never touched). Shows a "
      "progress bar on a terminal. A sync that would remove more than max-remove-share of "
      "the users is refused until run with --confirm. Exits 1 when the sync failed or was "
      "refused; the previous directory then stays as it was." },
    { "user", "list", "", 0, 0, NULL, cli_user_list,
      "list the users (synchronised and manual)",
      "Lists every user with its display name, source (directory or manual), state and "
      "aliases." },
    { "user", "show", "ADDRESS", 1, 1, NULL, cli_user_show,
      "show one user",
      "Shows the user that has ADDRESS (its primary address or an alias)." },
    { "user", "add", "ADDRESS", 1, 1, user_add_options, cli_user_add,
      "add a user by hand",
      "Adds a manual user. Every address must be under an internal domain and belong to "
      "nobody else. Example: moat user add ann@example.com --name 'Ann Admin' "
      "--alias a.admin@example.com" },
    { "user", "remove", "ADDRESS", 1, 1, NULL, cli_user_remove,
      "remove a manual user",
      "Removes the manual user that has ADDRESS, with its aliases. Users synchronised from "
      "the directory are removed there." },
    { "user", "import", "FILE", 1, 1, NULL, cli_user_import,
      "import users from a CSV file",
      "Imports manual users from FILE ('-' = standard input): a header line naming the "
      "columns email and name, optionally password and aliases (aliases separated by ';' or "
      "spaces), then one user a line; quote a field holding commas with \"...\". A row whose "
      "email is a manual user's updates it. Every refused row is printed with its line "
      "number and reason; the others are imported. Exits 1 when a row was refused." },
    { "group", "list", "", 0, 0, NULL, cli_group_list,
      "list the groups",
      "Lists every group with its display name, source, number of members and aliases." },
    { "group", "add", "ADDRESS", 1, 1, group_add_options, cli_group_add,
      "add a group by hand",
      "Adds a manual group. Example: moat group add sales@example.com --member "
      "ann@example.com --member bob@example.com" },
    { "group", "remove", "ADDRESS", 1, 1, NULL, cli_group_remove,
      "remove a manual group",
      "Removes the manual group that has ADDRESS (its members stay)." },
    { "group", "members", "ADDRESS", 1, 1, group_members_options, cli_group_members,
      "show or change a group's members",
      "Prints the members of the group; with --add and --remove, changes them first." },
    { "rv", "show", "[DOMAIN]", 0, 1, NULL, cli_rv_show,
      "show recipient validation per domain",
      "Shows each domain's recipient validation mode and what happens when its source cannot "
      "answer." },
    { "rv", "set", "DOMAIN", 1, 1, rv_set_options, cli_rv_set,
      "set a domain's recipient validation",
      "Sets how Moat tells known recipients of DOMAIN from unknown ones at RCPT time; "
      "unknown ones get 550 5.1.1. Example: moat rv set example.com --mode known" },
    { "audit", NULL, "", 0, 0, audit_options, cli_audit,
      "show the audit log",
      "Shows who changed what, when and from where, newest first; secrets are never "
      "recorded. Nothing can alter or delete the log." },
    { "dkim", "keygen", "DOMAIN", 1, 1, dkim_keygen_options, cli_dkim_keygen,
      "create a DKIM signing key and print its DNS record",
      "Creates a key pair in moatd for DOMAIN (an internal domain or a subdomain of one), keeps "
      "the private key encrypted, and prints the TXT record to publish: SELECTOR._domainkey."
      "DOMAIN, split into strings of at most 255 octets for a zone file, and unsplit for web "
      "forms. Outbound mail whose From is under DOMAIN is signed with it. Example: moat dkim "
      "keygen example.com --algorithm ed25519" },
    { "dkim", "list", "[DOMAIN]", 0, 1, NULL, cli_dkim_list,
      "list DKIM keys",
      "Lists every DKIM key (or DOMAIN's) with its selector, algorithm, creation time and "
      "whether it signs; the private keys never leave moatd." },
    { "dkim", "record", "DOMAIN", 1, 1, dkim_record_options, cli_dkim_record,
      "print the DNS record of a domain's DKIM key",
      "Prints the TXT record to publish for DOMAIN's active key (or the key --selector names)." },
    { "dkim", "activate", "DOMAIN SELECTOR", 2, 2, NULL, cli_dkim_activate,
      "sign a domain's mail with another of its keys",
      "From now on, mail of DOMAIN is signed with the key SELECTOR (publish its record first); "
      "the previously active key is kept until removed." },
    { "dkim", "remove", "DOMAIN SELECTOR", 2, 2, NULL, cli_dkim_remove,
      "delete a DKIM key",
      "Deletes the key; if it was the active one, DOMAIN's mail is sent unsigned until "
      "another key is activated. Remove its DNS record afterwards." },
    { "outbound", "host", "add CIDR | list | remove CIDR|ID", 1, 2, outbound_options,
      cli_outbound_host, "authorised outbound hosts (may relay to any domain)",
      "add CIDR authorises an address or range (192.0.2.10, 192.0.2.0/24, 2001:db8::/32) to "
      "send mail to any domain through Moat; list shows them; remove takes the range or its id." },
    { "outbound", "account", "add NAME | list | remove NAME | passwd NAME", 1, 2, outbound_options,
      cli_outbound_account, "SMTP AUTH accounts (relay from dynamic addresses)",
      "add NAME creates an SMTP AUTH account (e.g. scanner@example.com); without "
      "--password-file a password is generated and printed once. passwd NAME sets a new one "
      "the same way. Authenticated clients may relay to any domain, with a sender under an "
      "internal domain, after STARTTLS." },
    { "tls", "inbound", "add DOMAIN | list | remove DOMAIN", 1, 2, outbound_options,
      cli_tls_inbound, "sender domains whose mail must arrive under TLS",
      "add DOMAIN makes Moat refuse mail from DOMAIN (and its subdomains) sent in clear, "
      "with 530 5.7.0 at MAIL FROM; list shows them; remove stops it." },
    { "tls", "policy", "add|list|show|remove|probe [DOMAIN [MODE]]", 1, 3, tls_policy_options,
      cli_tls_policy,
      "outbound TLS policies per destination domain (tested before enforced)",
      "moat tls policy add DOMAIN MODE [--fallback M] [--override]: MODE is opportunistic, "
      "encrypt (TLS required), verify (TLS required, trusted certificate naming the MX host), "
      "dane (TLSA records decide; --fallback opportunistic|encrypt|verify where DANE does not "
      "apply) or mta-sts (the domain's published policy). The MX hosts are probed first; the "
      "policy is enforced only when the probe meets the mode, else it is stored report-only and "
      "the command fails unless --override (audit-logged). moat tls policy list | show DOMAIN | "
      "remove DOMAIN | probe DOMAIN (probe again; enforces on success)." },
    { "dnsbl", "add", "ZONE", 1, 1, dnsbl_options, cli_dnsbl_add,
      "query a DNS blocklist for inbound clients",
      "Adds ZONE (e.g. zen.spamhaus.org) with --weight N (1 to 100, default 1). At the first "
      "RCPT of inbound mail, the weights of the zones listing the client are added: at "
      "dnsbl_threshold or more the mail is refused with 554 5.7.1, at dnsbl_hold_threshold or "
      "more it is held. An error answer (127.255.255.x, SERVFAIL, timeout) never lists." },
    { "dnsbl", "list", "", 0, 0, NULL, cli_dnsbl_list,
      "list the DNS blocklists",
      "Lists the DNSBL zones with their weights." },
    { "dnsbl", "remove", "ZONE", 1, 1, NULL, cli_dnsbl_remove,
      "stop querying a DNS blocklist",
      "Removes ZONE; from the next connection on it is no longer asked." },
    { "antispoof", "bypass", "add KIND VALUE | add --from-candidate ADDRESS | list | remove ID", 1, 3,
      antispoof_options, cli_antispoof_bypass,
      "except a sender from anti-spoofing (mail in your domains' name from outside)",
      "Anti-spoofing refuses inbound mail whose envelope sender or header From is under an "
      "internal domain (550 5.7.1). add ip ADDRESS|CIDR, add host NAME|*.NAME (the client's "
      "forward-confirmed reverse DNS), or add spf DOMAIN (the envelope sender's domain; SPF must "
      "pass) excepts an outside service that sends in your name; add --from-candidate ADDRESS "
      "[--by ip|host] excepts a source listed by moat antispoof candidates in one step. list "
      "shows them; remove ID deletes one." },
    { "antispoof", "candidates", "", 0, 0, NULL, cli_antispoof_candidates,
      "sources refused by anti-spoofing (to review and except)",
      "Lists the client addresses whose mail anti-spoofing refused since moatd started: host "
      "name, count, the domains they used, last time; except a legitimate one with moat "
      "antispoof bypass add --from-candidate ADDRESS." },
    /* issue 7: permitted senders (cli_permitted.c) */
    { "permitted", "add", "ADDRESS|DOMAIN", 1, 1, permitted_options, cli_permitted_add,
      "add an organisation-wide permitted sender",
      "Mail from ADDRESS, or from DOMAIN and its subdomains, to any user skips greylisting, "
      "DNSBL and spam scoring; it never skips anti-spoofing, DMARC or size limits." },
    { "permitted", "list", "", 0, 0, NULL, cli_permitted_list,
      "list the organisation-wide permitted senders", "Lists every entry with its id and comment." },
    { "permitted", "remove", "ADDRESS|DOMAIN|ID", 1, 1, NULL, cli_permitted_remove,
      "remove an organisation-wide permitted sender", "Removes the entry by its value or id." },
    { "permitted", "import", "FILE", 1, 1, NULL, cli_permitted_import,
      "import organisation-wide permitted senders from CSV",
      "FILE ('-' = standard input) holds one entry a line: address_or_domain[,comment]; an "
      "optional header line is skipped. Refused rows are listed with their line numbers (exit "
      "1); the good rows are imported; entries already listed are left alone." },
    { "permitted", "user", "ADDRESS add VALUE | ADDRESS list | ADDRESS remove VALUE|ID", 2, 3,
      permitted_options, cli_permitted_user,
      "one user's permitted senders (manual and auto-allowed)",
      "add VALUE permits an address or domain for mail to the user ADDRESS only; list shows "
      "the user's entries, with auto-allowed ones (learned from the user's outbound mail, "
      "expiring after permitted_auto_lifetime without use); remove takes the value or id." },
    { "held", "list", "", 0, 0, NULL, cli_held_list,
      "list held (quarantined) messages",
      "Lists the messages Moat accepted but holds for an administrator (a blocked sender "
      "with action hold, a failed check): id, received, size, sender, recipients, reason. "
      "They are never delivered until released, and dropped after held_lifetime." },
    { "held", "show", "ID", 1, 1, NULL, cli_held_show,
      "show a held message: envelope, headers and its text",
      "Prints the envelope, why it is held, the header section and the first text/plain "
      "part, decoded (at most 32 KiB)." },
    { "held", "release", "ID", 1, 1, NULL, cli_held_release,
      "deliver a held message",
      "Lifts the hold (durably: a crash never delivers it twice nor loses it) and delivers "
      "the message to its recipients. Audit-logged." },
    { "held", "delete", "ID", 1, 1, NULL, cli_held_delete,
      "drop a held message",
      "Deletes the message without notifying its sender. Audit-logged." },
    { "blocked", "add", "ADDRESS_OR_DOMAIN", 1, 1, blocked_add_options, cli_blocked_add,
      "block a sender address or domain (hold or reject its mail)",
      "moat blocked add user@example.com --action reject refuses its mail with 550 5.7.1 "
      "(sender blocked by policy); --action hold accepts it into the held list instead. A "
      "domain covers its subdomains. Applies to inbound mail only." },
    { "blocked", "list", "", 0, 0, NULL, cli_blocked_list,
      "list blocked senders", "Lists every blocked address and domain with its action." },
    { "blocked", "remove", "ADDRESS_OR_DOMAIN", 1, 1, NULL, cli_blocked_remove,
      "unblock a sender", "Removes the entry; mail from the sender is screened as usual again." },
    { "forward", "add", "ADDRESS TARGET", 2, 2, forward_add_options, cli_forward_add,
      "forward an internal address's mail to another address",
      "Mail accepted for ADDRESS (under an internal domain) is redirected to TARGET, or with "
      "--copy delivered to both. An external TARGET gets the mail with an SRS sender so SPF "
      "passes there." },
    { "forward", "list", "", 0, 0, NULL, cli_forward_list,
      "list forwarding rules", "Lists every forwarding rule with its id and mode." },
    { "forward", "remove", "ID", 1, 1, NULL, cli_forward_remove,
      "remove a forwarding rule", "Removes the rule with that id (moat forward list)." },
    /* issue 8: the archive (cli_archive.c) */
    { "archive", "search", "QUERY...", 0, CLI_MAX_ARGS, archive_search_options, cli_archive_search,
      "search the archive",
      "The words of QUERY are one query; every term must hold: from:ADDRESS|DOMAIN, "
      "to:ADDRESS|DOMAIN, subject:WORD, subject:\"a phrase\", after:YYYY-MM-DD (inclusive), "
      "before:YYYY-MM-DD (exclusive; also YYYY-MM-DDTHH:MM:SSZ), has:attachment, a word or a "
      "\"phrase\" anywhere in the message. Quote phrases for the shell: moat archive search "
      "from:example.com 'subject:\"quarterly report\"'. Newest first. A basic administrator "
      "may search metadata only (no free words); a user only their own mail. Audit-logged." },
    { "archive", "show", "ID", 1, 1, archive_show_options, cli_archive_show,
      "show an archived message: arrivals, headers, attachments, text",
      "Prints every envelope that brought the message (SMTP, or an unwrapped journal report "
      "with its expanded and forwarded recipients), the header section, the attachment names "
      "and the decoded text. --eml writes the message itself to standard output. "
      "Audit-logged." },
    { "archive", "export", "QUERY...", 0, CLI_MAX_ARGS, archive_export_options, cli_archive_export,
      "export the messages of a search to an mbox file",
      "Writes every message matching QUERY (at most 100000, newest first) to FILE in mboxrd "
      "format, which mail clients and Python's mailbox module read. Administrators only; "
      "audit-logged." },
    { "archive", "stats", "", 0, 0, NULL, cli_archive_stats,
      "the archive's figures",
      "Messages, arrivals, sizes, journal reports, the oldest message, the retention period "
      "(setting archive_retention) and the legal holds." },
    { "archive", "purge", "", 0, 0, NULL, cli_archive_purge,
      "purge what the retention period allows, now",
      "Deletes the messages whose latest arrival is older than archive_retention, except those "
      "of addresses under legal hold. moatd also does this every archive_purge_interval. "
      "Administrators only; audit-logged." },
    { "archive", "hold", "add ADDRESS | list | remove ADDRESS", 1, 2, archive_hold_options,
      cli_archive_hold, "legal holds: addresses whose mail retention never purges",
      "add ADDRESS [--reason TEXT] suspends purging of every message that ADDRESS sent or "
      "received (envelope, From, To or Cc); list shows the holds; remove ADDRESS lifts one. "
      "Administrators only; audit-logged." },
    /* issue 8: the journal role (cli_journal.c) */
    { "journal", "show", "", 0, 0, NULL, cli_journal_show,
      "the journal address, its sources and the last journal report",
      "Shows the journal address (mail to it from a journal source is archived, never "
      "relayed), the address for undeliverable journal reports, the journal sources and when "
      "the last report was archived." },
    { "journal", "set", "", 0, 0, journal_set_options, cli_journal_set,
      "set the journal address or the undeliverable-reports address",
      "moat journal set --address journal@journal.example.com --undeliverable "
      "journal-ndr@example.net. Exchange Online needs the undeliverable-reports address outside "
      "itself (Set-TransportConfig -JournalingReportNdrTo)." },
    { "journal", "source", "add CIDR | list | remove CIDR|ID", 1, 2, journal_source_options,
      cli_journal_source, "journal sources: the mail servers that send journal reports",
      "add CIDR authorises an address or range (your Exchange servers, Exchange Online's "
      "outbound ranges) to send journal reports to the journal address; mail to it from "
      "anywhere else is refused. list shows them; remove takes the range or its id." },
    /* issue 11: backup and restore (cli_backup.c) */
    { "backup", NULL, "FILE", 1, 1, backup_options, cli_backup,
      "save a consistent backup of the gateway to FILE",
      "moatd copies its configuration database with SQLite's online backup while mail "
      "flows, adds secret.key (which seals stored passwords and DKIM keys), the TLS "
      "certificates and keys and its settings file, and sends them as one tar with a manifest "
      "of SHA-256 checksums; FILE is created 0600 and verified once written. Queued mail is "
      "not included. Administrators only; audit-logged. Keep FILE as safe as the keys in it." },
    { "restore", NULL, "FILE", 1, 1, restore_options, cli_restore,
      "restore a backup into a state directory (moatd stopped)",
      "Runs on the machine that will run moatd, as root or the moat user, with moatd "
      "stopped (refused while it holds DIR/moatd.lock). Every checksum is verified before "
      "anything is written; a damaged file is refused and nothing changes. Files are "
      "written 0600, directories 0700, owned by the owner of an existing DIR (as root), "
      "and moatd gives them to run_user when it starts as root." },
    /* issue 11: the token of /metrics (cli_admin.c) */
    { "metrics", "token", "", 0, 0, NULL, cli_metrics_token,
      "make a new token for scraping /metrics",
      "Prints a new bearer token for GET /metrics from addresses outside metrics_allow "
      "(Prometheus: authorization: credentials). It replaces the previous token and is shown "
      "once; only its hash is kept. Audit-logged." },
    /* issue 11: message tracking (cli_track.c); "show" before the verb-less row */
    { "track", "show", "ID|QID", 1, 1, NULL, cli_track_show,
      "one tracked message's timeline",
      "Prints every event of one message, by tracking id or queue id: its connection, MAIL, "
      "each RCPT with its verdict and the deciding check, the end of data, queueing, each "
      "delivery attempt (server, reply, TLS, result, latency), bounces, notifications, release "
      "or deletion, archiving." },
    { "track", NULL, "", 0, 0, track_options, cli_track,
      "search message tracking: what happened to a message",
      "Lists the messages that match every option given (all messages without options), newest "
      "first: time, queue id (NOQUEUE when it was never queued), sender, recipients, outcome, "
      "subject. Mail refused at MAIL or RCPT is found too (by sender or client address). When "
      "exactly one message matches, its timeline is printed as by moat track show." },
};

#define N_COMMANDS (sizeof cli_commands / sizeof cli_commands[0])

/* the global options: `moat --help` and moat(1) (issue 11) */
static const struct cli_option cli_global_options[] = {
    { "url", "URL", "moatd's API (default: $MOAT_URL, else the url of ~/.config/moat/cli.conf, "
      "else http://127.0.0.1:8025)" },
    { "json", NULL, "machine-readable JSON output" },
    { "help", NULL, "this help; `moat COMMAND --help` for one command" },
    { "man", NULL, "print the manual page moat(1) (roff) and exit" },
    { NULL, NULL, NULL },
};

static void print_synopsis(FILE *out, const struct cli_command *c)
{
    fprintf(out, "moat %s%s%s%s%s", c->noun, c->verb ? " " : "", c->verb ? c->verb : "",
            c->args[0] ? " " : "", c->args);
    for (const struct cli_option *o = c->options; o && o->name; o++)
        fprintf(out, " [--%s%s%s]", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
}

static void print_wrapped(FILE *out, const char *text, int indent, int width);

static void print_usage(FILE *out, const char *noun)
{
    fprintf(out, "usage: moat [--url URL] [--json] COMMAND ...\n\n");
    fprintf(out, "commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++) {
        const struct cli_command *c = &cli_commands[i];
        if (noun != NULL && strcmp(noun, c->noun) != 0)
            continue;
        char left[128];
        xsnprintf(left, sizeof left, "%s%s%s%s%s", c->noun, c->verb ? " " : "",
                  c->verb ? c->verb : "", c->args[0] ? " " : "", c->args);
        fprintf(out, "  %-32s %s\n", left, c->summary);
    }
    fprintf(out, "\nglobal options:\n");
    for (const struct cli_option *o = cli_global_options; o->name; o++) {
        char left[64];
        xsnprintf(left, sizeof left, "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        fprintf(out, "  %s\n", left);
        print_wrapped(out, o->help, 6, 78);
    }
    fprintf(out, "\nThe API token comes from $MOAT_TOKEN, else cli.conf (see `moat login`).\n");
}

/* print_wrapped - text word-wrapped at width columns, each line indented */
static void print_wrapped(FILE *out, const char *text, int indent, int width)
{
    int col = 0;
    while (*text != '\0') {
        size_t word = strcspn(text, " ");
        if (col > indent && col + 1 + (int)word > width) {
            fputc('\n', out);
            col = 0;
        }
        if (col == 0) {
            fprintf(out, "%*s", indent, "");
            col = indent;
        } else {
            fputc(' ', out);
            col++;
        }
        fwrite(text, 1, word, out);
        col += (int)word;
        text += word;
        while (*text == ' ')
            text++;
    }
    fputc('\n', out);
}

static void print_command_help(FILE *out, const struct cli_command *c)
{
    fputs("usage: ", out);
    print_synopsis(out, c);
    fputs("\n\n", out);
    print_wrapped(out, c->help, 0, 78);
    if (c->options && c->options[0].name) {
        fputs("\noptions:\n", out);
        for (const struct cli_option *o = c->options; o->name; o++) {
            char left[64];
            xsnprintf(left, sizeof left, "--%s%s%s", o->name, o->arg ? " " : "",
                      o->arg ? o->arg : "");
            fprintf(out, "  %s\n", left);
            print_wrapped(out, o->help, 6, 78);
        }
    }
    fputs("\nSee `moat --help` for the global options.\n", out);
}

/* --- context helpers --- */

static int option_index(const struct cli_command *c, const char *name, size_t len)
{
    int i = 0;
    for (const struct cli_option *o = c->options; o && o->name; o++, i++)
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
            return i;
    return -1;
}

const char *cli_opt(const struct cli_ctx *ctx, const char *name)
{
    int i = option_index(ctx->cmd, name, strlen(name));
    return i >= 0 && ctx->opt_set[i] ? ctx->opt_value[i] : NULL;
}

bool cli_flag(const struct cli_ctx *ctx, const char *name)
{
    int i = option_index(ctx->cmd, name, strlen(name));
    return i >= 0 && ctx->opt_set[i];
}

int cli_opt_all(const struct cli_ctx *ctx, const char *name, const char *const **values)
{
    int i = option_index(ctx->cmd, name, strlen(name));
    if (i < 0 || !ctx->opt_set[i]) {
        *values = NULL;
        return 0;
    }
    *values = ctx->opt_values[i];
    return ctx->opt_count[i];
}

static void vprefix(const struct cli_ctx *ctx)
{
    if (ctx != NULL && ctx->cmd != NULL)
        fprintf(stderr, "moat: %s%s%s: ", ctx->cmd->noun, ctx->cmd->verb ? " " : "",
                ctx->cmd->verb ? ctx->cmd->verb : "");
    else
        fputs("moat: ", stderr);
}

int cli_fail(const struct cli_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    vprefix(ctx);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return CLI_FAIL;
}

int cli_usage_error(const struct cli_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    vprefix(ctx);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (ctx != NULL && ctx->cmd != NULL) {
        fputs("usage: ", stderr);
        print_synopsis(stderr, ctx->cmd);
        fputc('\n', stderr);
    } else {
        fputs("try `moat --help`\n", stderr);
    }
    return CLI_USAGE;
}

void cli_warn(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("moat: warning: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* --- argument parsing --- */

static const struct cli_command *find_command(const char *noun, const char *verb)
{
    for (size_t i = 0; i < N_COMMANDS; i++) {
        const struct cli_command *c = &cli_commands[i];
        if (strcmp(c->noun, noun) != 0)
            continue;
        if (c->verb == NULL || (verb != NULL && strcmp(c->verb, verb) == 0))
            return c;
    }
    return NULL;
}

static bool noun_exists(const char *noun)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(cli_commands[i].noun, noun) == 0)
            return true;
    return false;
}

/* take_value - "--name=value" or "--name value"; advances *i for the latter */
static const char *take_value(int argc, char **argv, int *i, const char *eq)
{
    if (eq != NULL)
        return eq + 1;
    if (*i + 1 >= argc)
        return NULL;
    return argv[++*i];
}

int main(int argc, char **argv)
{
    struct cli_ctx ctx;
    const char *url = NULL;
    char *words[CLI_MAX_ARGS * 2];
    bool literal[CLI_MAX_ARGS * 2];   /* after "--": never an option */
    int n_words = 0;
    bool help = false, dashdash = false;

    memset(&ctx, 0, sizeof ctx);
    log_set_level(LOG_WARN);   /* the store logs its changes at info: not for a terminal */

    /* pass 1: global options anywhere; everything else in order */
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (n_words >= (int)(sizeof words / sizeof words[0]))
            return cli_usage_error(NULL, "too many arguments");
        if (dashdash || a[0] != '-' || a[1] == '\0') {
            literal[n_words] = dashdash;
            words[n_words++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            dashdash = true;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            help = true;
        } else if (strcmp(a, "--json") == 0) {
            ctx.json = true;
        } else if (strcmp(a, "--man") == 0 && n_words == 0) {
            /* issue 11: moat(1) from the command table; 1 when something lacks help */
            int rc = cli_write_man(stdout, cli_commands, N_COMMANDS, cli_global_options);
            return rc < 0 || fflush(stdout) != 0 ? CLI_FAIL : CLI_OK;
        } else if (nlen == 5 && strncmp(a, "--url", nlen) == 0 && !(n_words > 0 &&
                   strcmp(words[0], "login") == 0)) {
            if ((url = take_value(argc, argv, &i, eq)) == NULL || !url[0])
                return cli_usage_error(NULL, "--url needs a URL");
        } else {
            /* a command option: it and its value are read in pass 2 */
            literal[n_words] = false;
            words[n_words++] = a;
        }
    }

    if (n_words == 0 || strcmp(words[0], "help") == 0) {
        if (n_words <= 1) {
            print_usage(help || n_words == 1 ? stdout : stderr, NULL);
            return help || n_words == 1 ? CLI_OK : CLI_USAGE;
        }
        /* "moat help domain add" == "moat domain add --help" */
        memmove(words, words + 1, (size_t)(n_words - 1) * sizeof words[0]);
        memmove(literal, literal + 1, (size_t)(n_words - 1) * sizeof literal[0]);
        n_words--;
        help = true;
    }
    if (words[0][0] == '-' && !literal[0])
        return cli_usage_error(NULL, "unknown option %s", words[0]);
    if (!noun_exists(words[0]))
        return cli_usage_error(NULL, "unknown command \"%s\"", words[0]);
    const char *verb = n_words > 1 && (words[1][0] != '-' || literal[1]) ? words[1] : NULL;
    const struct cli_command *cmd = find_command(words[0], verb);
    if (cmd == NULL) {
        if (help || verb == NULL) {
            print_usage(help ? stdout : stderr, words[0]);
            return help ? CLI_OK : CLI_USAGE;
        }
        fprintf(stderr, "moat: %s: unknown subcommand \"%s\"\n\n", words[0], verb);
        print_usage(stderr, words[0]);
        return CLI_USAGE;
    }
    ctx.cmd = cmd;
    if (help) {
        print_command_help(stdout, cmd);
        return CLI_OK;
    }

    /* pass 2: the command's own options and positional arguments */
    for (int w = cmd->verb ? 2 : 1; w < n_words; w++) {
        char *a = words[w];
        if (a[0] != '-' || a[1] == '\0' || literal[w]) {
            if (ctx.n_args >= CLI_MAX_ARGS || ctx.n_args >= cmd->max_args)
                return cli_usage_error(&ctx, "unexpected argument \"%s\"", a);
            ctx.args[ctx.n_args++] = a;
            continue;
        }
        /* short spellings: "-o FILE" is --output */
        if (strcmp(a, "-o") == 0 && option_index(cmd, "output", 6) >= 0)
            a = "--output";
        const char *name = a[1] == '-' ? a + 2 : a + 1;
        const char *eq = strchr(name, '=');
        int oi = option_index(cmd, name, eq ? (size_t)(eq - name) : strlen(name));
        if (a[1] != '-' || oi < 0)
            return cli_usage_error(&ctx, "unknown option %s", a);
        const struct cli_option *o = &cmd->options[oi];
        if (o->arg == NULL) {
            if (eq != NULL)
                return cli_usage_error(&ctx, "--%s takes no value", o->name);
            ctx.opt_value[oi] = "";
        } else if (eq != NULL) {
            ctx.opt_value[oi] = eq + 1;
        } else {
            if (w + 1 >= n_words)
                return cli_usage_error(&ctx, "--%s needs a value (%s)", o->name, o->arg);
            ctx.opt_value[oi] = words[++w];
        }
        bool repeat = o->arg != NULL && strlen(o->arg) > 3 &&
                      strcmp(o->arg + strlen(o->arg) - 3, "...") == 0;
        if (ctx.opt_set[oi] && !repeat)
            return cli_usage_error(&ctx, "--%s given twice", o->name);
        if (ctx.opt_count[oi] >= CLI_MAX_REPEAT)
            return cli_usage_error(&ctx, "--%s given more than %d times", o->name, CLI_MAX_REPEAT);
        ctx.opt_values[oi][ctx.opt_count[oi]++] = ctx.opt_value[oi];
        ctx.opt_set[oi] = true;
    }
    if (ctx.n_args < cmd->min_args)
        return cli_usage_error(&ctx, "missing argument%s %s", cmd->max_args > 1 ? "s" : "",
                               cmd->args);

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
        return cli_fail(&ctx, "cannot initialise libcurl");
    int rc = cli_config_load(&ctx, url);
    if (rc == CLI_OK)
        rc = cmd->fn(&ctx);
    curl_global_cleanup();
    if (ctx.token != NULL)
        memset(ctx.token, 0, strlen(ctx.token));
    free(ctx.token);
    free(ctx.url);
    free(ctx.config_path);
    if (fflush(stdout) != 0 && rc == CLI_OK) {
        fprintf(stderr, "moat: cannot write the output: %s\n", strerror(errno));
        rc = CLI_FAIL;
    }
    return rc;
}
