/*
 * api_routes.c - THE route table of the HTTP API: every route, the one
 * permission it needs (auth.h), its handler, and whether it changes
 * something (then its handler writes an audit entry).
 *
 * The server checks the permission before any handler runs (http.c), the
 * unit test checks that docs/openapi.yaml lists exactly these routes, and
 * `moatd --list-routes` prints them for the end-to-end role matrix.  Adding
 * a route: one row here, one path in docs/openapi.yaml.
 *
 * Order matters only where a literal segment and a {parameter} could both
 * match: the first matching row wins, so "/queue/retry" precedes
 * "/queue/{id}".
 */
#include "api_priv.h"
#include "api_auth.h"
#include "api_connect.h"
#include "api_directory.h"
#include "api_ldap.h"
#include "api_dkim.h"
#include "api_outbound.h"
#include "api_dnsbl.h"
#include "api_tls.h"
#include "api_antispoof.h"
#include "api_permitted.h"
#include "api_held.h"
#include "api_archive.h"
#include "api_backup.h"
#include "api_metrics.h"
#include "api_tracking.h"

const struct api_route api_routes[] = {
    /* --- public --- */
    { "GET",    "/api/v1/health",                  AUTH_PERM_PUBLIC,          api_health,              false },
    { "POST",   "/api/v1/auth/login",              AUTH_PERM_PUBLIC,          api_auth_login,          true },

    /* --- the caller's own account --- */
    { "POST",   "/api/v1/auth/logout",             AUTH_PERM_SELF,            api_auth_logout,         true },
    { "GET",    "/api/v1/auth/me",                 AUTH_PERM_SELF,            api_auth_me,             false },
    { "POST",   "/api/v1/auth/password",           AUTH_PERM_SELF,            api_auth_password,       true },
    { "GET",    "/api/v1/auth/sessions",           AUTH_PERM_SELF,            api_auth_sessions_list,  false },
    { "DELETE", "/api/v1/auth/sessions/{id}",      AUTH_PERM_SELF,            api_auth_session_delete, true },
    { "POST",   "/api/v1/auth/totp",               AUTH_PERM_SELF,            api_auth_totp_enroll,    true },
    { "POST",   "/api/v1/auth/totp/confirm",       AUTH_PERM_SELF,            api_auth_totp_confirm,   true },
    { "POST",   "/api/v1/auth/totp/disable",       AUTH_PERM_SELF,            api_auth_totp_disable,   true },
    { "GET",    "/api/v1/tokens",                  AUTH_PERM_SELF,            api_tokens_list,         false },
    { "POST",   "/api/v1/tokens",                  AUTH_PERM_SELF,            api_token_create,        true },
    { "DELETE", "/api/v1/tokens/{id}",             AUTH_PERM_SELF,            api_token_delete,        true },

    /* --- accounts and roles (protected) --- */
    { "GET",    "/api/v1/accounts",                AUTH_PERM_ACCOUNTS_MANAGE, api_accounts_list,       false },
    { "POST",   "/api/v1/accounts",                AUTH_PERM_ACCOUNTS_MANAGE, api_account_create,      true },
    { "GET",    "/api/v1/accounts/{id}",           AUTH_PERM_ACCOUNTS_MANAGE, api_account_get,         false },
    { "PATCH",  "/api/v1/accounts/{id}",           AUTH_PERM_ACCOUNTS_MANAGE, api_account_update,      true },
    { "DELETE", "/api/v1/accounts/{id}",           AUTH_PERM_ACCOUNTS_MANAGE, api_account_delete,      true },

    /* --- the audit log (read only) --- */
    { "GET",    "/api/v1/audit",                   AUTH_PERM_AUDIT_READ,      api_audit_list,          false },

    /* --- configuration --- */
    { "GET",    "/api/v1/status",                  AUTH_PERM_CONFIG_READ,     api_status,              false },
    { "GET",    "/api/v1/settings",                AUTH_PERM_CONFIG_READ,     api_settings_get,        false },
    { "PATCH",  "/api/v1/settings",                AUTH_PERM_CONFIG_WRITE,    api_settings_update,     true },
    { "DELETE", "/api/v1/settings/{name}",         AUTH_PERM_CONFIG_WRITE,    api_settings_reset,      true },
    { "GET",    "/api/v1/domains",                 AUTH_PERM_CONFIG_READ,     api_domains_list,        false },
    { "POST",   "/api/v1/domains",                 AUTH_PERM_CONFIG_WRITE,    api_domains_create,      true },
    { "GET",    "/api/v1/domains/{name}",          AUTH_PERM_CONFIG_READ,     api_domains_get,         false },
    { "DELETE", "/api/v1/domains/{name}",          AUTH_PERM_CONFIG_WRITE,    api_domains_delete,      true },
    { "GET",    "/api/v1/domains/{name}/route",    AUTH_PERM_CONFIG_READ,     api_route_get,           false },
    { "PUT",    "/api/v1/domains/{name}/route",    AUTH_PERM_CONFIG_WRITE,    api_route_put,           true },
    { "DELETE", "/api/v1/domains/{name}/route",    AUTH_PERM_CONFIG_WRITE,    api_route_delete,        true },
    /* domain verification (Connect's domains task): run the TXT check now */
    { "POST",   "/api/v1/domains/{name}/verify",   AUTH_PERM_CONFIG_WRITE,    api_domains_verify,      true },

    /* --- Connect: the onboarding checklist, and the organisation it describes --- */
    { "GET",    "/api/v1/connect",                 AUTH_PERM_CONFIG_READ,     api_connect_overview,    false },
    { "GET",    "/api/v1/connect/{task}",          AUTH_PERM_CONFIG_READ,     api_connect_detail,      false },
    { "POST",   "/api/v1/connect/{task}/check",    AUTH_PERM_CONFIG_WRITE,    api_connect_check,       true },
    { "POST",   "/api/v1/connect/{task}/skip",     AUTH_PERM_CONFIG_WRITE,    api_connect_skip,        true },
    { "PUT",    "/api/v1/connect/{task}/input",    AUTH_PERM_CONFIG_WRITE,    api_connect_input,       true },
    { "GET",    "/api/v1/organisation",            AUTH_PERM_CONFIG_READ,     api_organisation_get,    false },
    { "PATCH",  "/api/v1/organisation",            AUTH_PERM_CONFIG_WRITE,    api_organisation_update, true },

    /* --- directory: LDAP sync (the source, test connection, preview, apply, progress) --- */
    { "GET",    "/api/v1/directory/source",        AUTH_PERM_CONFIG_READ,     api_directory_source_get,  false },
    { "PUT",    "/api/v1/directory/source",        AUTH_PERM_CONFIG_WRITE,    api_directory_source_put,  true },
    { "POST",   "/api/v1/directory/test",          AUTH_PERM_CONFIG_WRITE,    api_directory_test,        true },
    { "POST",   "/api/v1/directory/preview",       AUTH_PERM_CONFIG_WRITE,    api_directory_preview,     true },
    { "POST",   "/api/v1/directory/sync",          AUTH_PERM_CONFIG_WRITE,    api_directory_sync_start,  true },
    { "GET",    "/api/v1/directory/sync",          AUTH_PERM_CONFIG_READ,     api_directory_sync_status, false },

    /* --- directory: users, groups, recipient validation --- */
    { "GET",    "/api/v1/users",                   AUTH_PERM_CONFIG_READ,     api_users_list,          false },
    { "POST",   "/api/v1/users",                   AUTH_PERM_CONFIG_WRITE,    api_users_create,        true },
    /* text/csv body (api_route_takes_csv); before {address} */
    { "POST",   "/api/v1/users/import",            AUTH_PERM_CONFIG_WRITE,    api_users_import,        true },
    { "GET",    "/api/v1/users/{address}",         AUTH_PERM_CONFIG_READ,     api_users_get,           false },
    { "PATCH",  "/api/v1/users/{address}",         AUTH_PERM_CONFIG_WRITE,    api_users_update,        true },
    { "DELETE", "/api/v1/users/{address}",         AUTH_PERM_CONFIG_WRITE,    api_users_delete,        true },
    { "GET",    "/api/v1/groups",                  AUTH_PERM_CONFIG_READ,     api_groups_list,         false },
    { "POST",   "/api/v1/groups",                  AUTH_PERM_CONFIG_WRITE,    api_groups_create,       true },
    { "GET",    "/api/v1/groups/{address}",        AUTH_PERM_CONFIG_READ,     api_groups_get,          false },
    { "PATCH",  "/api/v1/groups/{address}",        AUTH_PERM_CONFIG_WRITE,    api_groups_update,       true },
    { "DELETE", "/api/v1/groups/{address}",        AUTH_PERM_CONFIG_WRITE,    api_groups_delete,       true },
    { "GET",    "/api/v1/recipient-validation",    AUTH_PERM_CONFIG_READ,     api_rv_list,             false },
    { "PUT",    "/api/v1/recipient-validation/{domain}", AUTH_PERM_CONFIG_WRITE, api_rv_set,           true },

    /* --- the queue: envelopes are configuration; header sections are content --- */
    { "GET",    "/api/v1/queue",                   AUTH_PERM_CONFIG_READ,     api_queue_list,          false },
    { "POST",   "/api/v1/queue/retry",             AUTH_PERM_QUEUE_WRITE,     api_queue_retry_all,     true },
    { "GET",    "/api/v1/queue/{id}",              AUTH_PERM_CONFIG_READ,     api_queue_show,          false },
    { "POST",   "/api/v1/queue/{id}/retry",        AUTH_PERM_QUEUE_WRITE,     api_queue_retry,         true },
    { "DELETE", "/api/v1/queue/{id}",              AUTH_PERM_QUEUE_WRITE,     api_queue_delete,        true },

    /* --- DKIM signing keys of outbound mail (the private half never leaves moatd) --- */
    { "GET",    "/api/v1/dkim/keys",               AUTH_PERM_CONFIG_READ,     api_dkim_keys_list,      false },
    { "POST",   "/api/v1/dkim/keys",               AUTH_PERM_CONFIG_WRITE,    api_dkim_keys_create,    true },
    { "DELETE", "/api/v1/dkim/keys/{domain}/{selector}", AUTH_PERM_CONFIG_WRITE, api_dkim_keys_delete, true },
    { "POST",   "/api/v1/dkim/keys/{domain}/{selector}/activate", AUTH_PERM_CONFIG_WRITE, api_dkim_keys_activate, true },
    /* --- the outbound role: authorised hosts, SMTP AUTH accounts; inbound TLS requirement --- */
    { "GET",    "/api/v1/outbound/hosts",          AUTH_PERM_CONFIG_READ,     api_outbound_hosts_list,     false },
    { "POST",   "/api/v1/outbound/hosts",          AUTH_PERM_CONFIG_WRITE,    api_outbound_hosts_create,   true },
    { "DELETE", "/api/v1/outbound/hosts/{id}",     AUTH_PERM_CONFIG_WRITE,    api_outbound_hosts_delete,   true },
    { "GET",    "/api/v1/outbound/accounts",       AUTH_PERM_CONFIG_READ,     api_outbound_accounts_list,  false },
    { "POST",   "/api/v1/outbound/accounts",       AUTH_PERM_CONFIG_WRITE,    api_outbound_accounts_create, true },
    { "DELETE", "/api/v1/outbound/accounts/{name}", AUTH_PERM_CONFIG_WRITE,   api_outbound_accounts_delete, true },
    { "POST",   "/api/v1/outbound/accounts/{name}/password", AUTH_PERM_CONFIG_WRITE, api_outbound_accounts_password, true },
    { "GET",    "/api/v1/tls/inbound",             AUTH_PERM_CONFIG_READ,     api_tls_inbound_list,        false },
    { "POST",   "/api/v1/tls/inbound",             AUTH_PERM_CONFIG_WRITE,    api_tls_inbound_create,      true },
    { "DELETE", "/api/v1/tls/inbound/{domain}",    AUTH_PERM_CONFIG_WRITE,    api_tls_inbound_delete,      true },
    /* --- outbound TLS policies: probed before they are enforced (api_tls.c) --- */
    { "GET",    "/api/v1/tls/policies",            AUTH_PERM_CONFIG_READ,     api_tls_policies_list,   false },
    { "POST",   "/api/v1/tls/policies",            AUTH_PERM_CONFIG_WRITE,    api_tls_policy_put,      true },
    { "GET",    "/api/v1/tls/policies/{domain}",   AUTH_PERM_CONFIG_READ,     api_tls_policy_get,      false },
    { "DELETE", "/api/v1/tls/policies/{domain}",   AUTH_PERM_CONFIG_WRITE,    api_tls_policy_delete,   true },
    { "POST",   "/api/v1/tls/policies/{domain}/probe", AUTH_PERM_CONFIG_WRITE, api_tls_policy_probe,   true },
    /* --- DNSBL zones of inbound screening (issue 7, api_dnsbl.c) --- */
    { "GET",    "/api/v1/dnsbl/zones",             AUTH_PERM_CONFIG_READ,     api_dnsbl_zones_list,    false },
    { "POST",   "/api/v1/dnsbl/zones",             AUTH_PERM_CONFIG_WRITE,    api_dnsbl_zones_create,  true },
    { "DELETE", "/api/v1/dnsbl/zones/{zone}",      AUTH_PERM_CONFIG_WRITE,    api_dnsbl_zones_delete,  true },
    /* --- anti-spoofing: bypasses and refused sources (api_antispoof.c, issue 7) --- */
    { "GET",    "/api/v1/antispoof/bypasses",      AUTH_PERM_CONFIG_READ,     api_antispoof_bypasses_list,   false },
    { "POST",   "/api/v1/antispoof/bypasses",      AUTH_PERM_CONFIG_WRITE,    api_antispoof_bypasses_create, true },
    { "DELETE", "/api/v1/antispoof/bypasses/{id}", AUTH_PERM_CONFIG_WRITE,    api_antispoof_bypasses_delete, true },
    { "GET",    "/api/v1/antispoof/candidates",    AUTH_PERM_CONFIG_READ,     api_antispoof_candidates_list, false },
    { "POST",   "/api/v1/antispoof/candidates/{address}/bypass", AUTH_PERM_CONFIG_WRITE, api_antispoof_candidates_bypass, true },
    /* --- permitted senders (issue 7, api_permitted.c): the import precedes {id} --- */
    { "GET",    "/api/v1/permitted-senders",       AUTH_PERM_CONFIG_READ,     api_permitted_list,      false },
    { "POST",   "/api/v1/permitted-senders",       AUTH_PERM_CONFIG_WRITE,    api_permitted_create,    true },
    { "POST",   "/api/v1/permitted-senders/import", AUTH_PERM_CONFIG_WRITE,   api_permitted_import,    true },
    { "DELETE", "/api/v1/permitted-senders/{id}",  AUTH_PERM_CONFIG_WRITE,    api_permitted_delete,    true },
    { "GET",    "/api/v1/users/{address}/permitted-senders", AUTH_PERM_CONFIG_READ, api_user_permitted_list, false },
    { "POST",   "/api/v1/users/{address}/permitted-senders", AUTH_PERM_CONFIG_WRITE, api_user_permitted_create, true },
    { "DELETE", "/api/v1/users/{address}/permitted-senders/{id}", AUTH_PERM_CONFIG_WRITE, api_user_permitted_delete, true },
    /* --- issue 7: held mail (viewable by basic administrators: DESIGN.md protects
     * content other than held mail), blocked senders, forwarding (api_held.c) --- */
    { "GET",    "/api/v1/held",                    AUTH_PERM_CONFIG_READ,     api_held_list,           false },
    { "GET",    "/api/v1/held/{id}",               AUTH_PERM_CONFIG_READ,     api_held_show,           false },
    { "DELETE", "/api/v1/held/{id}",               AUTH_PERM_QUEUE_WRITE,     api_held_delete,         true },
    { "POST",   "/api/v1/held/{id}/release",       AUTH_PERM_QUEUE_WRITE,     api_held_release,        true },
    { "GET",    "/api/v1/blocked-senders",         AUTH_PERM_CONFIG_READ,     api_blocked_list,        false },
    { "POST",   "/api/v1/blocked-senders",         AUTH_PERM_CONFIG_WRITE,    api_blocked_create,      true },
    { "DELETE", "/api/v1/blocked-senders/{address}", AUTH_PERM_CONFIG_WRITE,  api_blocked_delete,      true },
    { "GET",    "/api/v1/forwarding",              AUTH_PERM_CONFIG_READ,     api_forwarding_list,     false },
    { "POST",   "/api/v1/forwarding",              AUTH_PERM_CONFIG_WRITE,    api_forwarding_create,   true },
    { "DELETE", "/api/v1/forwarding/{id}",         AUTH_PERM_CONFIG_WRITE,    api_forwarding_delete,   true },
    /* --- issue 8: the archive (api_archive.c).  ARCHIVE_SEARCH is held by every
     * role and scoped inside the handlers: a user sees their own mail, a basic
     * administrator metadata only.  They change nothing, yet every search, view,
     * download and export writes an audit entry (api_archive.c). --- */
    { "GET",    "/api/v1/archive/messages",        AUTH_PERM_ARCHIVE_SEARCH,  api_archive_search,      false },
    { "GET",    "/api/v1/archive/messages/{id}",   AUTH_PERM_ARCHIVE_SEARCH,  api_archive_get,         false },
    { "GET",    "/api/v1/archive/messages/{id}/eml", AUTH_PERM_ARCHIVE_SEARCH, api_archive_eml,        false },
    { "GET",    "/api/v1/archive/export",          AUTH_PERM_ARCHIVE_EXPORT,  api_archive_export,      false },
    { "GET",    "/api/v1/archive/stats",           AUTH_PERM_CONFIG_READ,     api_archive_stats,       false },
    { "POST",   "/api/v1/archive/purge",           AUTH_PERM_ARCHIVE_ADMIN,   api_archive_purge,       true },
    { "GET",    "/api/v1/archive/legal-holds",     AUTH_PERM_ARCHIVE_ADMIN,   api_legal_holds_list,    false },
    { "POST",   "/api/v1/archive/legal-holds",     AUTH_PERM_ARCHIVE_ADMIN,   api_legal_holds_create,  true },
    { "DELETE", "/api/v1/archive/legal-holds/{address}", AUTH_PERM_ARCHIVE_ADMIN, api_legal_holds_delete, true },
    /* --- issue 8: the journal role (api_journal.c); the SMTP snapshot holds it --- */
    { "GET",    "/api/v1/journal",                 AUTH_PERM_CONFIG_READ,     api_journal_get,         false },
    { "PUT",    "/api/v1/journal",                 AUTH_PERM_CONFIG_WRITE,    api_journal_put,         true },
    { "GET",    "/api/v1/journal/sources",         AUTH_PERM_CONFIG_READ,     api_journal_sources_list, false },
    { "POST",   "/api/v1/journal/sources",         AUTH_PERM_CONFIG_WRITE,    api_journal_sources_create, true },
    { "DELETE", "/api/v1/journal/sources/{id}",    AUTH_PERM_CONFIG_WRITE,    api_journal_sources_delete, true },
    /* --- issue 11: backup (api_backup.c); it changes nothing, yet every download
     * writes an audit entry --- */
    { "GET",    "/api/v1/backup",                  AUTH_PERM_BACKUP,          api_backup_get,          false },
    /* --- issue 11: metrics (api_metrics.c).  /metrics is public in this table and
     * checks metrics_allow or the metrics token itself: a scraper has no account --- */
    { "GET",    "/metrics",                        AUTH_PERM_PUBLIC,          api_metrics,             false },
    { "POST",   "/api/v1/metrics/token",           AUTH_PERM_CONFIG_WRITE,    api_metrics_token_create, true },
    /* --- issue 11: message tracking (api_tracking.c): envelopes, subjects and
     * replies, never content; administrators and basic administrators --- */
    { "GET",    "/api/v1/tracking",                AUTH_PERM_CONFIG_READ,     api_tracking_search,     false },
    { "GET",    "/api/v1/tracking/{id}",           AUTH_PERM_CONFIG_READ,     api_tracking_get,        false },
};

const size_t api_routes_count = sizeof api_routes / sizeof api_routes[0];

bool api_route_takes_csv(const struct api_route *r)
{
    return r->handler == api_users_import || r->handler == api_permitted_import;
}
