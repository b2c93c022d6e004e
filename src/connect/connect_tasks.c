/*
 * connect_tasks.c - THE task table of Connect: the sixteen tasks of
 * DESIGN.md section 1, in its order, with their titles, whether they are
 * optional, their prerequisites ("a|b": either), and the functions that
 * check them and generate their instructions.
 *
 * The dependency graph is this data and nothing else; the engine
 * (connect.c) derives every task's state from it.  Tasks whose checks come
 * with later issues have no prepare/run and say what brings them
 * (later_issue); they still appear with their prerequisites.  The one rule
 * that is not a plain prerequisite -- lockdown also needs every mandatory
 * task done and MX pointing only at Moat for lockdown_mx_hours -- is in
 * connect_derive (connect.c), since it is about the whole table.
 *
 * tests/unit/test_connect.c checks that this table is a DAG, that every
 * prerequisite names a task, and that it matches DESIGN.md exactly.
 */
#include <string.h>
#include "connect_priv.h"
#include "connect_checks.h"

#define PREREQS(...) ((const char *const[]){ __VA_ARGS__, NULL })
#define NO_PREREQS ((const char *const[]){ NULL })

const struct connect_task connect_tasks[] = {
    { .id = "organisation", .title = "Describe your organisation",
      .prereqs = NO_PREREQS,
      .prepare = connect_org_prepare, .run = connect_org_run,
      .instructions = connect_org_instructions },
    { .id = "domains", .title = "Validate your domains",
      .prereqs = PREREQS("organisation"),
      .prepare = connect_domains_prepare, .run = connect_domains_run,
      .instructions = connect_domains_instructions, .apply = connect_domains_apply },
    { .id = "directory", .title = "Synchronise your directory",
      .prereqs = PREREQS("domains"),
      .prepare = connect_directory_prepare, .run = connect_directory_run,
      .instructions = connect_directory_instructions },
    { .id = "users", .title = "Add users manually",
      .prereqs = PREREQS("domains"),
      .prepare = connect_users_prepare, .run = connect_users_run,
      .instructions = connect_users_instructions },
    { .id = "authentication", .title = "Set up user authentication",
      .prereqs = PREREQS("domains"),
      .later_issue = "user authentication for the portal (password, LDAP pass-through), a later issue" },
    { .id = "inbound", .title = "Prepare for inbound email",
      .prereqs = PREREQS("domains"),
      .prepare = connect_inbound_prepare, .run = connect_inbound_run,
      .instructions = connect_inbound_instructions, .input_check = connect_inbound_input_check },
    { .id = "outbound", .title = "Set up your outbound email",
      .prereqs = PREREQS("domains"),
      .prepare = connect_outbound_prepare, .run = connect_outbound_run,
      .instructions = connect_outbound_instructions, .input_check = connect_outbound_input_check },
    { .id = "permitted_senders", .title = "Import permitted senders",
      .prereqs = PREREQS("domains"),
      .prepare = connect_permitted_prepare, .run = connect_permitted_run,
      .instructions = connect_permitted_instructions },
    { .id = "recipient_validation", .title = "Set up recipient validation",
      .prereqs = PREREQS("directory|users"),
      .prepare = connect_rv_prepare, .run = connect_rv_run,
      .instructions = connect_rv_instructions },
    { .id = "mx", .title = "Modify your MX record",
      .prereqs = PREREQS("inbound", "recipient_validation"),
      .prepare = connect_mx_prepare, .run = connect_mx_run,
      .instructions = connect_mx_instructions, .apply = connect_mx_apply },
    { .id = "antispoof_bypass", .title = "Bypass anti-spoofing", .optional = true,
      .prereqs = PREREQS("mx"),
      .prepare = connect_antispoof_prepare, .run = connect_antispoof_run,
      .instructions = connect_antispoof_instructions },
    { .id = "tls_policies", .title = "Set up your TLS policies", .optional = true,
      .prereqs = PREREQS("inbound"),
      .prepare = connect_tls_prepare, .run = connect_tls_run,
      .instructions = connect_tls_instructions },
    { .id = "journaling", .title = "Set up journaling",
      .prereqs = PREREQS("domains", "inbound"),
      .prepare = connect_journaling_prepare, .run = connect_journaling_run,
      .instructions = connect_journaling_instructions },
    { .id = "admins", .title = "Manage basic administrators", .optional = true,
      .prereqs = PREREQS("directory|users"),
      .later_issue = "basic administrators chosen among the users, a later issue" },
    { .id = "forwarding", .title = "Manage forwarding addresses", .optional = true,
      .prereqs = PREREQS("domains"),
      .prepare = connect_forwarding_prepare, .run = connect_forwarding_run,
      .instructions = connect_forwarding_instructions },
    { .id = "lockdown", .title = "Secure your inbound email (firewall lockdown)",
      .prereqs = PREREQS("mx"),
      .prepare = connect_lockdown_prepare, .run = connect_lockdown_run,
      .instructions = connect_lockdown_instructions },
};

const size_t connect_tasks_count = sizeof connect_tasks / sizeof connect_tasks[0];

/* the todo sentence of each task, in the table's order */
static const struct {
    const char *id;
    const char *hint;
} task_hints[] = {
    { "organisation", "Choose your mail environment, name an emergency contact, and enter "
      "Moat's public host names and IP addresses: `moat org set ...`." },
    { "domains", "Add each domain you receive mail for (`moat domain add example.com`) and "
      "publish the TXT record Moat shows for it." },
    { "directory", "Connect your LDAP or Active Directory so Moat knows your users." },
    { "users", "Add the users, aliases and groups that are not in your directory." },
    { "authentication", "Choose how users sign in to the portal." },
    { "inbound", "Set each domain's route to your mail server (`moat route set DOMAIN HOST`) "
      "and let it accept mail from Moat; then run the check." },
    { "outbound", "Authorise your mail server to send through Moat and publish the SPF record." },
    { "permitted_senders", "Import the sender addresses and domains you always want to receive." },
    { "recipient_validation", "Choose how Moat tells known recipients from unknown ones." },
    { "mx", "Publish the MX records Moat shows and remove every other MX record." },
    { "antispoof_bypass", "Allow the outside services that send mail in your domain's name." },
    { "tls_policies", "Choose where TLS is required, inbound and outbound." },
    { "journaling", "Add your mail server as a journal source (`moat journal source add ADDRESS`) "
      "and create the journal rule Moat shows; then run the check." },
    { "admins", "Give users the basic-administrator role, or skip this task." },
    { "forwarding", "Redirect or copy mail for internal addresses, or skip this task." },
    { "lockdown", "Let your mail server accept port 25 only from Moat (connector, firewall)." },
};

int connect_task_index(const char *id)
{
    if (id == NULL)
        return -1;
    for (size_t i = 0; i < connect_tasks_count; i++)
        if (strcmp(connect_tasks[i].id, id) == 0)
            return (int)i;
    return -1;
}

const struct connect_task *connect_task_find(const char *id)
{
    int i = connect_task_index(id);
    return i < 0 ? NULL : &connect_tasks[i];
}

const char *connect_task_hint(const char *id)
{
    for (size_t i = 0; i < sizeof task_hints / sizeof task_hints[0]; i++)
        if (strcmp(task_hints[i].id, id) == 0)
            return task_hints[i].hint;
    return "";
}
