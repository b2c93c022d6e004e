/*
 * store.c - the SQLite implementation of store.h: opening (WAL,
 * synchronous=FULL, busy timeout, foreign keys), numbered schema migrations,
 * the table of prepared statements, domains and their routes, and change
 * detection for the daemon's snapshot reloads.
 *
 * Entry points: store_open, store_close, store_domain_add/remove/list,
 * store_domain_add_trusted/get/set_verified/set_check/set_mx_since (domain
 * verification for Connect), store_route_set/get, store_changed,
 * domain_name_valid.  The snapshot lives
 * in store_snapshot.c; accounts, sessions, tokens and the audit log in
 * store_auth.c (with its own statement table); Connect's organisation and
 * task states in store_connect.c; runtime settings in store_settings.c.
 *
 * Migrations: store_migrations[i] takes the schema from version i to i + 1;
 * PRAGMA user_version holds the version.  Adding version 2 is adding one
 * string to the table.  All pending migrations run in one IMMEDIATE
 * transaction, so a crash leaves the old version intact and two processes
 * opening a fresh database at once do not both migrate.
 *
 * Ownership: struct store owns the connection and every prepared statement;
 * strings handed out (domain lists, routes) are owned by the caller.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sodium.h>
#include "store_priv.h"

/* the CLI and the daemon share the file: wait this long for a lock */
#define STORE_BUSY_TIMEOUT_MS 5000

/* store_migrations - schema version i -> i + 1; append, never edit a shipped entry */
const char *const store_migrations[] = {
    /* 1: domains and their delivery routes */
    "CREATE TABLE domains ("
    "  name     TEXT PRIMARY KEY NOT NULL,"
    "  verified INTEGER NOT NULL DEFAULT 0 CHECK (verified IN (0, 1)),"
    "  created  INTEGER NOT NULL"
    ");"
    /* priority 0 is the primary route; backup routes will use 1, 2, ... */
    "CREATE TABLE routes ("
    "  domain   TEXT NOT NULL REFERENCES domains(name) ON DELETE CASCADE,"
    "  priority INTEGER NOT NULL DEFAULT 0,"
    "  host     TEXT NOT NULL,"
    "  port     INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),"
    "  tls      TEXT NOT NULL CHECK (tls IN ('opportunistic', 'relaxed', 'strict')),"
    "  PRIMARY KEY (domain, priority)"
    ");",
    /* 2: accounts, sign-in sessions, API tokens and the audit log (store_auth.c).
     * Secrets are never stored in the clear: argon2id hashes, keyed BLAKE2b
     * hashes of session ids and token secrets, encrypted TOTP seeds. */
    "CREATE TABLE accounts ("
    "  id             INTEGER PRIMARY KEY,"
    "  name           TEXT NOT NULL UNIQUE COLLATE NOCASE CHECK (length(name) BETWEEN 1 AND 64),"
    "  role           TEXT NOT NULL CHECK (role IN ('admin', 'basic_admin', 'user')),"
    "  password_hash  TEXT NOT NULL,"
    "  must_change    INTEGER NOT NULL DEFAULT 0 CHECK (must_change IN (0, 1)),"
    "  disabled       INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),"
    "  totp_secret    BLOB,"
    "  totp_active    INTEGER NOT NULL DEFAULT 0 CHECK (totp_active IN (0, 1)),"
    "  totp_last_step INTEGER NOT NULL DEFAULT 0,"
    "  created        INTEGER NOT NULL,"
    "  updated        INTEGER NOT NULL"
    ");"
    "CREATE TABLE sessions ("
    "  id_hash    TEXT PRIMARY KEY NOT NULL,"
    "  account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,"
    "  csrf       TEXT NOT NULL,"
    "  created    INTEGER NOT NULL,"
    "  last_seen  INTEGER NOT NULL,"
    "  expires    INTEGER NOT NULL,"
    "  client_ip  TEXT NOT NULL DEFAULT '',"
    "  revoked    INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))"
    ");"
    "CREATE INDEX sessions_account ON sessions(account_id);"
    "CREATE TABLE tokens ("
    "  id          INTEGER PRIMARY KEY AUTOINCREMENT,"   /* ids are never reused */
    "  account_id  INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,"
    "  name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 64),"
    "  role        TEXT NOT NULL CHECK (role IN ('admin', 'basic_admin', 'user')),"
    "  secret_hash TEXT NOT NULL,"
    "  created     INTEGER NOT NULL,"
    "  last_used   INTEGER NOT NULL DEFAULT 0,"
    "  revoked     INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))"
    ");"
    "CREATE INDEX tokens_account ON tokens(account_id);"
    /* no foreign key: an entry outlives the account it names */
    "CREATE TABLE audit ("
    "  id           INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  ts           INTEGER NOT NULL,"
    "  account_id   INTEGER NOT NULL DEFAULT 0,"
    "  account_name TEXT NOT NULL DEFAULT '',"
    "  via          TEXT NOT NULL DEFAULT '',"
    "  token_id     INTEGER NOT NULL DEFAULT 0,"
    "  client_ip    TEXT NOT NULL DEFAULT '',"
    "  action       TEXT NOT NULL,"
    "  target       TEXT NOT NULL DEFAULT '',"
    "  before_json  TEXT,"
    "  after_json   TEXT"
    ");"
    "CREATE INDEX audit_ts ON audit(ts);"
    /* append-only, whatever the caller: nothing alters or deletes an entry */
    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit"
    "  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"
    "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit"
    "  BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;",
    /* 3: Connect: the organisation, domain verification, task states.
     * Domains added before this version were trusted by the skeleton and stay
     * verified; new ones start unverified with a token (store_domain_add). */
    "CREATE TABLE organisation ("
    "  id            INTEGER PRIMARY KEY CHECK (id = 1),"
    "  name          TEXT NOT NULL DEFAULT '',"
    "  environment   TEXT NOT NULL DEFAULT '' CHECK (environment IN"
    "                ('', 'microsoft365', 'exchange', 'hybrid', 'google', 'smtp')),"
    "  contact_name  TEXT NOT NULL DEFAULT '',"
    "  contact_email TEXT NOT NULL DEFAULT '',"
    "  contact_phone TEXT NOT NULL DEFAULT '',"
    "  public_hosts  TEXT NOT NULL DEFAULT '[]',"   /* JSON array: Moat's MX host names */
    "  public_ips    TEXT NOT NULL DEFAULT '[]',"   /* JSON array: Moat's public addresses */
    "  probe_source  TEXT NOT NULL DEFAULT '',"     /* lockdown probe source address */
    "  updated       INTEGER NOT NULL DEFAULT 0,"
    "  updated_by    TEXT NOT NULL DEFAULT ''"
    ");"
    "INSERT INTO organisation (id) VALUES (1);"
    "ALTER TABLE domains ADD COLUMN token TEXT;"                 /* moat-verification=<token> */
    "ALTER TABLE domains ADD COLUMN verified_at INTEGER;"
    "ALTER TABLE domains ADD COLUMN trust_unverified INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE domains ADD COLUMN last_check INTEGER;"
    "ALTER TABLE domains ADD COLUMN last_result TEXT;"           /* human text of the last check */
    "ALTER TABLE domains ADD COLUMN mx_only_moat_since INTEGER;" /* MX pointed only at Moat since */
    "CREATE TABLE connect_tasks ("
    "  id            TEXT PRIMARY KEY NOT NULL,"
    "  state         TEXT NOT NULL CHECK (state IN ('locked', 'todo', 'in_progress', 'waiting',"
    "                'done', 'skipped', 'attention')),"
    "  changed       INTEGER NOT NULL,"
    "  changed_by    TEXT NOT NULL DEFAULT '',"
    "  last_check    INTEGER,"
    "  last_outcome  TEXT,"                        /* pass, fail, unknown, pending */
    "  last_message  TEXT,"
    "  last_details  TEXT,"                        /* JSON */
    "  next_check    INTEGER,"
    "  backoff       INTEGER NOT NULL DEFAULT 0,"  /* seconds of the current re-check interval */
    "  data          TEXT NOT NULL DEFAULT '{}'"   /* JSON: task-specific inputs */
    ");",
    /* 4: runtime settings stored through the API (store_settings.c).  Values
     * are text in moat.conf syntax, validated by the settings table
     * (src/core/settings.c) before they are written and again when moatd
     * applies them at start; a key absent here means moat.conf or the default. */
    "CREATE TABLE settings ("
    "  key        TEXT PRIMARY KEY NOT NULL,"
    "  value      TEXT NOT NULL,"
    "  updated    INTEGER NOT NULL DEFAULT 0,"   /* unix seconds */
    "  updated_by TEXT NOT NULL DEFAULT ''"      /* account name */
    ");",
    /* 5: the directory (store_directory.c): users and groups, from a directory
     * source or added by hand; every address (primary or alias) in one table
     * whose primary key makes an address resolve to exactly one entry; group
     * members; per-domain recipient validation; the directory's sync status. */
    "CREATE TABLE dir_entries ("
    "  id            INTEGER PRIMARY KEY,"
    "  kind          TEXT NOT NULL CHECK (kind IN ('user', 'group')),"
    "  source        TEXT NOT NULL CHECK (source IN ('directory', 'manual')),"
    "  external_id   TEXT,"                        /* the directory's stable id; NULL = manual */
    "  primary_addr  TEXT NOT NULL,"
    "  name          TEXT NOT NULL DEFAULT '',"
    "  disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),"
    "  password_hash TEXT,"                        /* argon2id (portal sign-in, later) */
    "  fingerprint   TEXT,"                        /* digest of the source's view (sync) */
    "  created       INTEGER NOT NULL,"
    "  updated       INTEGER NOT NULL,"
    "  CHECK ((source = 'directory') = (external_id IS NOT NULL))"
    ");"
    "CREATE UNIQUE INDEX dir_entries_external ON dir_entries(external_id)"
    "  WHERE external_id IS NOT NULL;"
    "CREATE INDEX dir_entries_primary ON dir_entries(kind, primary_addr);"
    "CREATE TABLE dir_addresses ("
    "  address    TEXT PRIMARY KEY NOT NULL,"      /* lower-case; one owner per address */
    "  entry_id   INTEGER NOT NULL REFERENCES dir_entries(id) ON DELETE CASCADE,"
    "  is_primary INTEGER NOT NULL CHECK (is_primary IN (0, 1))"
    ");"
    "CREATE INDEX dir_addresses_entry ON dir_addresses(entry_id);"
    "CREATE TABLE dir_members ("
    "  group_id  INTEGER NOT NULL REFERENCES dir_entries(id) ON DELETE CASCADE,"
    "  member_id INTEGER NOT NULL REFERENCES dir_entries(id) ON DELETE CASCADE,"
    "  PRIMARY KEY (group_id, member_id)"
    ");"
    "CREATE INDEX dir_members_member ON dir_members(member_id);"
    "CREATE TABLE rv_domains ("
    "  domain      TEXT PRIMARY KEY NOT NULL REFERENCES domains(name) ON DELETE CASCADE,"
    "  mode        TEXT NOT NULL CHECK (mode IN ('directory', 'known', 'call-forward',"
    "              'accept-all')),"
    "  unreachable TEXT NOT NULL CHECK (unreachable IN ('tempfail', 'accept')),"
    "  updated     INTEGER NOT NULL"
    ");"
    "CREATE TABLE dir_status ("
    "  id        INTEGER PRIMARY KEY CHECK (id = 1),"
    "  synced_at INTEGER,"                         /* last applied directory sync; NULL = never */
    "  generation INTEGER NOT NULL DEFAULT 0"      /* moves with every directory change */
    ");"
    "INSERT INTO dir_status (id) VALUES (1);",
    /* 6: the LDAP / Active Directory source (one row; the bind password
     * encrypted by src/auth, never in the clear) and the record of every
     * sync run (store_ldap.c) */
    "CREATE TABLE ldap_source ("
    "  id         INTEGER PRIMARY KEY CHECK (id = 1),"
    "  config     TEXT NOT NULL DEFAULT '{}',"      /* JSON: url, base_dn, filter, map, ... */
    "  password   BLOB,"                            /* nonce || XChaCha20-Poly1305 ciphertext */
    "  updated    INTEGER NOT NULL DEFAULT 0,"
    "  updated_by TEXT NOT NULL DEFAULT ''"
    ");"
    "CREATE TABLE ldap_runs ("
    "  id        INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  kind      TEXT NOT NULL CHECK (kind IN ('apply', 'preview')),"
    "  trigger   TEXT NOT NULL CHECK (trigger IN ('manual', 'schedule')),"
    "  who       TEXT NOT NULL DEFAULT '',"
    "  started   INTEGER NOT NULL,"
    "  finished  INTEGER NOT NULL,"
    "  outcome   TEXT NOT NULL CHECK (outcome IN ('ok', 'error', 'refused')),"
    "  entries   INTEGER NOT NULL DEFAULT 0,"
    "  created   INTEGER NOT NULL DEFAULT 0,"
    "  updated   INTEGER NOT NULL DEFAULT 0,"
    "  removed   INTEGER NOT NULL DEFAULT 0,"
    "  unchanged INTEGER NOT NULL DEFAULT 0,"
    "  skipped_unvalidated INTEGER NOT NULL DEFAULT 0,"
    "  errors    INTEGER NOT NULL DEFAULT 0,"
    "  message   TEXT NOT NULL DEFAULT ''"
    ");"
    "CREATE INDEX ldap_runs_kind ON ldap_runs(kind, outcome, id);",
    /* 7: the outbound role (store_outbound.c): authorised outbound hosts (CIDR
     * text in canonical form), SMTP AUTH accounts (argon2id hashes, never the
     * password), and sender domains whose inbound mail must arrive under TLS */
    "CREATE TABLE outbound_hosts ("
    "  id      INTEGER PRIMARY KEY,"
    "  cidr    TEXT NOT NULL UNIQUE,"
    "  comment TEXT NOT NULL DEFAULT '',"
    "  created INTEGER NOT NULL"
    ");"
    "CREATE TABLE smtp_accounts ("
    "  id            INTEGER PRIMARY KEY,"
    "  name          TEXT NOT NULL UNIQUE,"        /* lower-case */
    "  password_hash TEXT NOT NULL,"
    "  comment       TEXT NOT NULL DEFAULT '',"
    "  created       INTEGER NOT NULL,"
    "  disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),"
    "  last_used     INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE tls_inbound_required ("
    "  domain  TEXT PRIMARY KEY NOT NULL,"         /* lower-case */
    "  comment TEXT NOT NULL DEFAULT '',"
    "  created INTEGER NOT NULL"
    ");",
    /* 8: DKIM signing keys (store_dkim.c): the private key sealed by src/auth
     * (never in the clear), the public half as the record's p= value; at most
     * one active key per domain, older ones kept until deleted so a new
     * record can be published before the switch */
    "CREATE TABLE dkim_keys ("
    "  domain      TEXT NOT NULL,"
    "  selector    TEXT NOT NULL,"
    "  algorithm   TEXT NOT NULL CHECK (algorithm IN ('rsa', 'ed25519')),"
    "  private_key BLOB NOT NULL,"                  /* nonce || XChaCha20-Poly1305 of the PEM */
    "  public_key  TEXT NOT NULL,"                  /* base64, the record's p= */
    "  active      INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1)),"
    "  created     INTEGER NOT NULL,"
    "  created_by  TEXT NOT NULL DEFAULT '',"
    "  PRIMARY KEY (domain, selector)"
    ");"
    "CREATE UNIQUE INDEX dkim_keys_active ON dkim_keys(domain) WHERE active = 1;",
    /* 9: TLS policies (issue 6): outbound TLS
     * policy per destination domain, its last probe and any override
     * (store_tls.c); the MTA-STS policy cache (deliver_mtasts.c) */
    "CREATE TABLE tls_policies ("
    "  domain      TEXT PRIMARY KEY NOT NULL,"
    "  mode        TEXT NOT NULL CHECK (mode IN ('opportunistic', 'encrypt', 'verify', 'dane', 'mta-sts')),"
    "  fallback    TEXT NOT NULL DEFAULT 'opportunistic'"
    "              CHECK (fallback IN ('opportunistic', 'encrypt', 'verify')),"
    "  enforced    INTEGER NOT NULL DEFAULT 0 CHECK (enforced IN (0, 1)),"
    "  probe_time  INTEGER NOT NULL DEFAULT 0,"
    "  probe_verdict TEXT NOT NULL DEFAULT '',"          /* strict|relaxed|unsupported|error */
    "  probe_reason TEXT NOT NULL DEFAULT '',"
    "  probe_details TEXT NOT NULL DEFAULT '{}',"        /* JSON: each MX and its class */
    "  override    INTEGER NOT NULL DEFAULT 0 CHECK (override IN (0, 1)),"
    "  override_by TEXT NOT NULL DEFAULT '',"
    "  updated     INTEGER NOT NULL,"
    "  updated_by  TEXT NOT NULL DEFAULT ''"
    ");"
    "CREATE TABLE mta_sts_cache ("
    "  domain     TEXT PRIMARY KEY NOT NULL,"
    "  id         TEXT NOT NULL,"                       /* the TXT record's id= */
    "  policy     TEXT NOT NULL,"                       /* the policy text as fetched */
    "  fetched    INTEGER NOT NULL,"
    "  expires    INTEGER NOT NULL"                     /* fetched + max_age */
    ");",
    /* 10: DNSBL zones (issue 7, store_dnsbl.c): the zones queried for each
     * inbound client and their integer weights (policy_dnsbl.c) */
    "CREATE TABLE dnsbl_zones ("
    "  zone     TEXT PRIMARY KEY NOT NULL,"
    "  weight   INTEGER NOT NULL DEFAULT 1 CHECK (weight BETWEEN 1 AND 100),"
    "  comment  TEXT NOT NULL DEFAULT '',"
    "  created  INTEGER NOT NULL"
    ");",
    /* 11: anti-spoofing bypasses (issue 7, store_antispoof.c): kind ip
     * (canonical range), host (name or "*.name", forward-confirmed reverse
     * DNS), spf (sender domain); domain '' = every internal domain */
    "CREATE TABLE antispoof_bypasses ("
    "  id      INTEGER PRIMARY KEY,"
    "  kind    TEXT NOT NULL CHECK (kind IN ('ip', 'host', 'spf')),"
    "  value   TEXT NOT NULL,"
    "  domain  TEXT NOT NULL DEFAULT '',"
    "  comment TEXT NOT NULL DEFAULT '',"
    "  created INTEGER NOT NULL,"
    "  UNIQUE (kind, value, domain)"
    ");",
    /* 12: permitted senders and greylisting (issue 7, store_permitted.c):
     * user '' = organisation-wide; per-user rows are manual or auto-allowed
     * (auto rows expire permitted_auto_lifetime after last_seen); greylist
     * triplets (key "net|sender|rcpt") survive a restart */
    "CREATE TABLE permitted_senders ("
    "  id         INTEGER PRIMARY KEY,"
    "  user       TEXT NOT NULL DEFAULT '',"           /* lower-case; '' = organisation */
    "  value      TEXT NOT NULL,"                      /* address or domain, lower-case */
    "  source     TEXT NOT NULL DEFAULT 'manual' CHECK (source IN ('manual', 'auto')),"
    "  comment    TEXT NOT NULL DEFAULT '',"
    "  created    INTEGER NOT NULL,"
    "  created_by TEXT NOT NULL DEFAULT '',"
    "  last_seen  INTEGER NOT NULL DEFAULT 0,"
    "  UNIQUE (user, value)"
    ");"
    "CREATE INDEX permitted_senders_auto ON permitted_senders(last_seen) WHERE source = 'auto';"
    /* the loop's index is reloaded only when this moves (triggers) */
    "CREATE TABLE permitted_status ("
    "  id         INTEGER PRIMARY KEY CHECK (id = 1),"
    "  generation INTEGER NOT NULL DEFAULT 0"
    ");"
    "INSERT INTO permitted_status (id, generation) VALUES (1, 0);"
    "CREATE TRIGGER permitted_senders_ins AFTER INSERT ON permitted_senders BEGIN"
    "  UPDATE permitted_status SET generation = generation + 1 WHERE id = 1; END;"
    "CREATE TRIGGER permitted_senders_upd AFTER UPDATE ON permitted_senders BEGIN"
    "  UPDATE permitted_status SET generation = generation + 1 WHERE id = 1; END;"
    "CREATE TRIGGER permitted_senders_del AFTER DELETE ON permitted_senders BEGIN"
    "  UPDATE permitted_status SET generation = generation + 1 WHERE id = 1; END;"
    "CREATE TABLE greylist ("
    "  triplet    TEXT PRIMARY KEY NOT NULL,"
    "  first_seen INTEGER NOT NULL,"
    "  last_seen  INTEGER NOT NULL,"
    "  passed     INTEGER NOT NULL DEFAULT 0 CHECK (passed IN (0, 1))"
    ");",
    /* 13 (issue 7, held mail and forwarding; store_held.c): organisation-wide
     * blocked senders (address or domain, action reject|hold), forwarding
     * rules, and the Message-IDs of released held mail */
    "CREATE TABLE blocked_senders ("
    "  id      INTEGER PRIMARY KEY,"
    "  pattern TEXT UNIQUE NOT NULL,"                     /* lower-case address or domain */
    "  action  TEXT NOT NULL CHECK (action IN ('reject','hold')),"
    "  comment TEXT NOT NULL DEFAULT '',"
    "  created INTEGER NOT NULL"
    ");"
    "CREATE TABLE forwarding ("
    "  id      INTEGER PRIMARY KEY,"
    "  address TEXT NOT NULL,"                            /* the internal address, lower case */
    "  target  TEXT NOT NULL,"
    "  mode    TEXT NOT NULL CHECK (mode IN ('redirect','copy')),"
    "  comment TEXT NOT NULL DEFAULT '',"
    "  created INTEGER NOT NULL,"
    "  UNIQUE (address, target)"
    ");"
    "CREATE TABLE held_released ("
    "  message_id TEXT PRIMARY KEY NOT NULL,"
    "  released   INTEGER NOT NULL"
    ");"
    /* the permitted-sender index holds the released ids (auto-allow never
     * learns from replies to them): a release is a change to it */
    "CREATE TRIGGER held_released_ins AFTER INSERT ON held_released BEGIN"
    "  UPDATE permitted_status SET generation = generation + 1 WHERE id = 1; END;",
    /* 14 (issue 8, journaling and legal holds; store_journal.c): the journal
     * role's singleton (address: '' = the default; the evidence of the last
     * journal message archived), the journal sources (canonical CIDR text, as
     * outbound hosts) and the addresses under legal hold */
    "CREATE TABLE journal_config ("
    "  id                    INTEGER PRIMARY KEY CHECK (id = 1),"
    "  address               TEXT NOT NULL DEFAULT '',"          /* lower-case; '' = default */
    "  undeliverable         TEXT NOT NULL DEFAULT '',"
    "  last_report           INTEGER NOT NULL DEFAULT 0,"
    "  last_report_client    TEXT NOT NULL DEFAULT '',"
    "  last_report_qid       TEXT NOT NULL DEFAULT '',"
    "  last_report_unwrapped INTEGER NOT NULL DEFAULT 0,"
    "  reports               INTEGER NOT NULL DEFAULT 0,"
    "  unwrapped             INTEGER NOT NULL DEFAULT 0,"
    "  malformed             INTEGER NOT NULL DEFAULT 0"
    ");"
    "INSERT INTO journal_config (id) VALUES (1);"
    "CREATE TABLE journal_sources ("
    "  id      INTEGER PRIMARY KEY,"
    "  cidr    TEXT NOT NULL UNIQUE,"
    "  comment TEXT NOT NULL DEFAULT '',"
    "  created INTEGER NOT NULL"
    ");"
    "CREATE TABLE legal_holds ("
    "  address    TEXT PRIMARY KEY NOT NULL,"                     /* lower-case */
    "  reason     TEXT NOT NULL DEFAULT '',"
    "  created    INTEGER NOT NULL,"
    "  created_by TEXT NOT NULL DEFAULT ''"
    ");",
    /* 15 (issue 8, Connect's journaling check): the kind of the last journal
     * message ("plain", "report", "malformed") and why a malformed one could
     * not be read, so the check can say so */
    "ALTER TABLE journal_config ADD COLUMN last_report_kind TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE journal_config ADD COLUMN last_report_error TEXT NOT NULL DEFAULT '';",
    /* 16 (issue 11, store_metrics.c): the metrics token, one row, by its keyed hash */
    "CREATE TABLE metrics_token ("
    "  id         INTEGER PRIMARY KEY CHECK (id = 1),"
    "  hash       TEXT NOT NULL,"
    "  created    INTEGER NOT NULL,"
    "  created_by TEXT NOT NULL DEFAULT ''"
    ");",
};
const int store_schema_latest = (int)(sizeof store_migrations / sizeof store_migrations[0]);

/* store_sql - the prepared statements, prepared once at open */
static const char *const store_sql[STMT__COUNT] = {
    [STMT_DATA_VERSION] = "PRAGMA data_version",
    [STMT_DOMAIN_INSERT] =
        "INSERT INTO domains (name, verified, created, token, verified_at, trust_unverified)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [STMT_DOMAIN_DELETE] = "DELETE FROM domains WHERE name = ?1",
    [STMT_DOMAIN_EXISTS] = "SELECT 1 FROM domains WHERE name = ?1",
    [STMT_DOMAIN_LIST] =
        "SELECT d.name, d.verified, d.created, r.host, r.port, r.tls, d.token, d.verified_at,"
        " d.trust_unverified, d.last_check, d.last_result, d.mx_only_moat_since FROM domains d"
        " LEFT JOIN routes r ON r.domain = d.name AND r.priority = 0 ORDER BY d.name",
    [STMT_DOMAIN_GET] =
        "SELECT d.name, d.verified, d.created, r.host, r.port, r.tls, d.token, d.verified_at,"
        " d.trust_unverified, d.last_check, d.last_result, d.mx_only_moat_since FROM domains d"
        " LEFT JOIN routes r ON r.domain = d.name AND r.priority = 0 WHERE d.name = ?1",
    /* a verified proper parent of ?1: "example.com" for "a.b.example.com" */
    [STMT_DOMAIN_PARENT_VERIFIED] =
        "SELECT name FROM domains WHERE verified = 1 AND length(?1) > length(name) + 1"
        " AND substr(?1, -length(name) - 1) = '.' || name ORDER BY length(name) DESC LIMIT 1",
    [STMT_DOMAIN_SET_VERIFIED] =
        "UPDATE domains SET verified = ?2, verified_at = ?3 WHERE name = ?1",
    /* subdomains of a validated domain need no proof (DESIGN.md 1) */
    [STMT_DOMAIN_VERIFY_SUBDOMAINS] =
        "UPDATE domains SET verified = 1, verified_at = ?2 WHERE verified = 0"
        " AND length(name) > length(?1) + 1 AND substr(name, -length(?1) - 1) = '.' || ?1",
    [STMT_DOMAIN_SET_CHECK] =
        "UPDATE domains SET last_check = ?2, last_result = ?3 WHERE name = ?1",
    [STMT_DOMAIN_SET_MX_SINCE] =
        "UPDATE domains SET mx_only_moat_since = ?2 WHERE name = ?1",
    [STMT_ROUTE_UPSERT] =
        "INSERT INTO routes (domain, priority, host, port, tls) VALUES (?1, 0, ?2, ?3, ?4)"
        " ON CONFLICT (domain, priority) DO UPDATE"
        " SET host = excluded.host, port = excluded.port, tls = excluded.tls",
    [STMT_ROUTE_DELETE] = "DELETE FROM routes WHERE domain = ?1 AND priority = 0",
    [STMT_ROUTE_GET] =
        "SELECT r.host, r.port, r.tls FROM domains d"
        " LEFT JOIN routes r ON r.domain = d.name AND r.priority = 0 WHERE d.name = ?1",
};

static const char *const tls_mode_names[] = {
    [STORE_TLS_OPPORTUNISTIC] = "opportunistic",
    [STORE_TLS_RELAXED] = "relaxed",
    [STORE_TLS_STRICT] = "strict",
};

/* --- small helpers --- */

/* shown - a bounded, printable rendering of untrusted input for messages */
static const char *shown(char *dst, size_t size, const char *s)
{
    size_t j = 0;
    for (size_t i = 0; s[i] != '\0' && j + 4 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        dst[j++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
        if (i >= 100) {
            memcpy(dst + j, "...", 3);
            j += 3;
            break;
        }
    }
    dst[j] = '\0';
    return dst;
}

void store_db_error(struct store *st, struct error *err, const char *what)
{
    int code = sqlite3_extended_errcode(st->db);
    if ((code & 0xff) == SQLITE_BUSY || (code & 0xff) == SQLITE_LOCKED)
        error_set(err, "", "%s: the database is busy (another process holds a lock "
                  "for more than %d s)", what, STORE_BUSY_TIMEOUT_MS / 1000);
    else
        error_set(err, "", "%s: database error: %s", what, sqlite3_errmsg(st->db));
}

sqlite3_stmt *store_stmt(struct store *st, enum store_stmt id)
{
    return store_stmt_reset(st->stmt[id]);
}

/* --- shared by the store's modules (store_auth.c, store_connect.c, ...),
 * each of which keeps its own statement table (CONVENTIONS.md) --- */

int store_stmts_prepare(struct store *st, const char *path, const char *module,
                        const char *const *sql, int n, sqlite3_stmt ***out, struct error *err)
{
    *out = xcalloc((size_t)n, sizeof **out);
    for (int i = 0; i < n; i++) {
        if (sql[i] == NULL)
            log_fatal("event=store_bug reason=\"%s statement %d has no SQL\"", module, i);
        if (sqlite3_prepare_v3(st->db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &(*out)[i],
                               NULL) != SQLITE_OK) {
            error_set(err, "", "%s: cannot prepare %s statement %d: %s", path, module, i,
                      sqlite3_errmsg(st->db));
            return -1;
        }
    }
    return 0;
}

void store_stmts_finalize(sqlite3_stmt ***stmts, int n)
{
    if (*stmts == NULL)
        return;
    for (int i = 0; i < n; i++)
        sqlite3_finalize((*stmts)[i]);
    free(*stmts);
    *stmts = NULL;
}

sqlite3_stmt *store_stmt_reset(sqlite3_stmt *s)
{
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return s;
}

void store_bind_text(sqlite3_stmt *s, int i, const char *v)
{
    if (v == NULL)
        sqlite3_bind_null(s, i);
    else
        sqlite3_bind_text(s, i, v, -1, SQLITE_TRANSIENT);
}

char *store_col_strdup(sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    return xstrdup(t != NULL ? (const char *)t : "");
}

static int exec_sql(sqlite3 *db, const char *sql, struct error *err, const char *what)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        error_set(err, "", "%s: %s", what, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int pragma_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *s;
    int rc = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
        return -1;
    if (sqlite3_step(s) == SQLITE_ROW) {
        *out = sqlite3_column_int64(s, 0);
        rc = 0;
    }
    sqlite3_finalize(s);
    return rc;
}

/* precreate - create the file mode 0600 (it will hold secrets: bind passwords,
 * password hashes); when root creates it, give it to the owner of its directory
 * so moatd still owns it after dropping privileges.  SQLite gives the -wal and
 * -shm files the mode and owner of the database file. */
static int precreate(const char *path, struct error *err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        if (errno == EEXIST)
            return 0;
        error_set(err, "", "%s: cannot create: %s", path, strerror(errno));
        return -1;
    }
    if (geteuid() == 0) {
        char *copy = xstrdup(path);
        struct stat dir;
        if (stat(dirname(copy), &dir) == 0 && fchown(fd, dir.st_uid, dir.st_gid) < 0) {
            error_set(err, "", "%s: chown: %s", path, strerror(errno));
            free(copy);
            close(fd);
            return -1;
        }
        free(copy);
    }
    close(fd);
    return 0;
}

/* migrate - bring the schema to version target inside one IMMEDIATE
 * transaction; migrations[v] takes it from v to v + 1, latest is their count */
static int migrate(sqlite3 *db, const char *path, const char *const *migrations, int latest,
                   int target, struct error *err)
{
    int64_t version;
    char sql[64];

    if (exec_sql(db, "BEGIN IMMEDIATE", err, path) < 0)
        return -1;
    /* read inside the transaction: another process may have just migrated */
    if (pragma_int(db, "PRAGMA user_version", &version) < 0) {
        error_set(err, "", "%s: cannot read the schema version: %s", path, sqlite3_errmsg(db));
        goto fail;
    }
    if (version > latest) {
        error_set(err, "", "%s: schema version %lld is newer than this program knows (%d); "
                  "upgrade moat", path, (long long)version, latest);
        goto fail;
    }
    if (version < 0) {
        error_set(err, "", "%s: invalid schema version %lld", path, (long long)version);
        goto fail;
    }
    for (int v = (int)version; v < target; v++) {
        char what[PATH_MAX + 64];
        xsnprintf(what, sizeof what, "%s: migration to schema version %d", path, v + 1);
        if (exec_sql(db, migrations[v], err, what) < 0)
            goto fail;
    }
    if (version < target) {
        xsnprintf(sql, sizeof sql, "PRAGMA user_version = %d", target);
        if (exec_sql(db, sql, err, path) < 0)
            goto fail;
        log_info("event=store_migrated path=%s from=%lld to=%d", path, (long long)version, target);
    }
    if (exec_sql(db, "COMMIT", err, path) < 0)
        goto fail;
    return 0;
fail:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* store_sqlite_open - connection with Moat's pragmas and the schema at
 * version target of the given migrations (store_priv.h: the archive's
 * database, store_archive.c, opens through it too) */
sqlite3 *store_sqlite_open(const char *path, const char *const *migrations, int latest,
                           int target, struct error *err)
{
    sqlite3 *db = NULL;
    char journal[32] = "";

    memset(err, 0, sizeof *err);
    if (strcmp(path, ":memory:") != 0 && precreate(path, err) < 0)
        return NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                             SQLITE_OPEN_NOFOLLOW, NULL);
    if (rc != SQLITE_OK) {
        error_set(err, "", "%s: cannot open database: %s", path,
                  db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, STORE_BUSY_TIMEOUT_MS);

    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &s, NULL) == SQLITE_OK) {
        if (sqlite3_step(s) == SQLITE_ROW)
            str_copy(journal, sizeof journal, (const char *)sqlite3_column_text(s, 0));
        sqlite3_finalize(s);
    }
    if (strcmp(journal, "wal") != 0 && strcmp(journal, "memory") != 0) {
        error_set(err, "", "%s: cannot switch to WAL mode (journal_mode is \"%s\"): %s; "
                  "put the database on a local file system", path, journal,
                  sqlite3_errmsg(db));
        sqlite3_close(db);
        return NULL;
    }
    /* CONVENTIONS.md: synchronous=FULL for anything that backs a reply */
    if (exec_sql(db, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;", err, path) < 0 ||
        migrate(db, path, migrations, latest, target, err) < 0) {
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

/* open_db - the configuration store's connection at version target */
static struct store *open_db(const char *path, int target, struct error *err)
{
    sqlite3 *db = store_sqlite_open(path, store_migrations, store_schema_latest, target, err);
    if (db == NULL)
        return NULL;
    struct store *st = xcalloc(1, sizeof *st);
    st->db = db;
    return st;
}

struct store *store_open_at_version(const char *path, int version, struct error *err)
{
    if (version < 0 || version > store_schema_latest) {
        error_set(err, "", "no schema version %d", version);
        return NULL;
    }
    return open_db(path, version, err);
}

/* store_open - open (creating) the database at path and apply migrations */
struct store *store_open(const char *path, struct error *err)
{
    struct store *st = open_db(path, store_schema_latest, err);
    if (st == NULL)
        return NULL;
    for (int i = 0; i < STMT__COUNT; i++) {
        if (store_sql[i] == NULL)
            log_fatal("event=store_bug reason=\"statement %d has no SQL\"", i);
        if (sqlite3_prepare_v3(st->db, store_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                               &st->stmt[i], NULL) != SQLITE_OK) {
            error_set(err, "", "%s: cannot prepare statement %d: %s", path, i,
                      sqlite3_errmsg(st->db));
            store_close(st);
            return NULL;
        }
    }
    if (store_auth_prepare(st, path, err) < 0) {
        store_close(st);
        return NULL;
    }
    if (store_connect_prepare(st, path, err) < 0) {
        store_close(st);
        return NULL;
    }
    if (store_settings_prepare(st, path, err) < 0) {
        store_close(st);
        return NULL;
    }
    if (store_directory_prepare(st, path, err) < 0) {
        store_close(st);
        return NULL;
    }
    if (store_ldap_prepare(st, path, err) < 0) {
        store_close(st);
        return NULL;
    }
    if (store_outbound_prepare(st, path, err) < 0 || store_dkim_prepare(st, path, err) < 0 ||
        store_tls_prepare(st, path, err) < 0 || store_antispoof_prepare(st, path, err) < 0) {
        store_close(st);
        return NULL;
    }
    if (store_dnsbl_prepare(st, path, err) < 0 || store_permitted_prepare(st, path, err) < 0) {
        store_close(st);
        return NULL;
    }
    if (store_held_prepare(st, path, err) < 0) {
        store_close(st);
        return NULL;
    }
    if (store_journal_prepare(st, path, err) < 0) {
        store_close(st);
        return NULL;
    }
    if (store_metrics_prepare(st, path, err) < 0) {
        store_close(st);
        return NULL;
    }
    int64_t dv = 0;
    pragma_int(st->db, "PRAGMA data_version", &dv);
    st->data_version = dv;
    return st;
}

void store_close(struct store *st)
{
    if (st == NULL)
        return;
    for (int i = 0; i < STMT__COUNT; i++)
        sqlite3_finalize(st->stmt[i]);
    store_auth_finalize(st);
    store_connect_finalize(st);
    store_settings_finalize(st);
    store_directory_finalize(st);
    store_ldap_finalize(st);
    store_outbound_finalize(st);
    store_dkim_finalize(st);
    store_tls_finalize(st);
    store_dnsbl_finalize(st);
    store_antispoof_finalize(st);
    store_permitted_finalize(st);
    store_held_finalize(st);
    store_journal_finalize(st);
    store_metrics_finalize(st);
    /* close_v2 would leave a zombie handle if something were still open; we
     * finalized everything, so plain close must succeed */
    if (sqlite3_close(st->db) != SQLITE_OK)
        log_error("event=store_close error=\"%s\"", sqlite3_errmsg(st->db));
    free(st);
}

int store_schema_version(struct store *st)
{
    int64_t v = -1;
    if (pragma_int(st->db, "PRAGMA user_version", &v) < 0)
        return -1;
    return (int)v;
}

/* --- names --- */

/* name_check - DNS name syntax (RFC 1035 2.3.1 LDH, RFC 1123 2.1 leading digits);
 * min_labels 2 for mail domains, 1 for route hosts; NULL or the reason */
static const char *name_check(const char *name, int min_labels)
{
    size_t len = strnlen(name, 256), label = 0;
    int labels = 0;
    bool digits_only = true;

    if (len == 0)
        return "empty name";
    if (len > 253)
        return "longer than 253 characters";
    for (size_t i = 0; i <= len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '.' || c == '\0') {
            if (label == 0)
                return "empty label (two dots in a row, or a leading or trailing dot)";
            if (name[i - 1] == '-')
                return "a label ends with a hyphen";
            labels++;
            if (c == '\0')
                break;
            label = 0;
            digits_only = true;
            continue;
        }
        if (c >= 0x80)
            return "non-ASCII character: write internationalised names in A-label "
                   "form (xn--...)";
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-'))
            return "invalid character: use letters, digits, hyphens and dots";
        if (label == 0 && c == '-')
            return "a label starts with a hyphen";
        if (!(c >= '0' && c <= '9'))
            digits_only = false;
        if (++label > 63)
            return "a label is longer than 63 characters";
    }
    if (labels < min_labels)
        return "needs at least two labels, like example.com";
    /* RFC 3696 2: a top-level domain is never all-numeric; this also keeps
     * IPv4 literals out of domain names */
    if (digits_only)
        return "the last label is all-numeric";
    return NULL;
}

/* domain_name_valid - a mail domain: LDH labels of 1..63, total <= 253, and at
 * least two labels (a gateway has no business with single-label domains) */
bool domain_name_valid(const char *name)
{
    return name_check(name, 2) == NULL;
}

/* normalise_domain - lower-case copy without one trailing dot, or -1 with err */
static int normalise_domain(const char *name, const char *field, char *out, size_t size,
                            struct error *err)
{
    char tmp[128];
    size_t len = strnlen(name, 300);

    if (len > 0 && len < size && name[len - 1] == '.')
        len--;
    if (len >= size) {
        error_set(err, field, "invalid domain name \"%s\": longer than 253 characters",
                  shown(tmp, sizeof tmp, name));
        return -1;
    }
    memcpy(out, name, len);
    out[len] = '\0';
    str_lower(out);
    const char *why = name_check(out, 2);
    if (why != NULL) {
        error_set(err, field, "invalid domain name \"%s\": %s", shown(tmp, sizeof tmp, name), why);
        return -1;
    }
    return 0;
}

/* --- domains --- */

/* new_token - 16 random bytes as 32 lower-case hex digits (libsodium) */
static void new_token(char out[33])
{
    unsigned char raw[16];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(out, 33, raw, sizeof raw);
    sodium_memzero(raw, sizeof raw);
}

/* verified_parent - 1 when a proper parent of norm is verified (its name in
 * parent), 0 when none, -1 on a store error */
static int verified_parent(struct store *st, const char *norm, char *parent, size_t size,
                           struct error *err)
{
    sqlite3_stmt *s = store_stmt(st, STMT_DOMAIN_PARENT_VERIFIED);
    sqlite3_bind_text(s, 1, norm, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        str_copy(parent, size, (const char *)sqlite3_column_text(s, 0));
    sqlite3_reset(s);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    store_db_error(st, err, "domain parent lookup");
    return -1;
}

/* domain_insert - one new row; trusted: the lab override */
static int domain_insert(struct store *st, const char *name, bool trusted, struct error *err)
{
    char norm[256], token[33], parent[256] = "";

    memset(err, 0, sizeof *err);
    if (normalise_domain(name, "name", norm, sizeof norm, err) < 0)
        return -1;
    int vp = verified_parent(st, norm, parent, sizeof parent, err);
    if (vp < 0)
        return -1;
    int64_t now = (int64_t)time(NULL);
    new_token(token);
    sqlite3_stmt *s = store_stmt(st, STMT_DOMAIN_INSERT);
    sqlite3_bind_text(s, 1, norm, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(s, 2, vp == 1);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)now);
    sqlite3_bind_text(s, 4, token, -1, SQLITE_TRANSIENT);
    if (vp == 1)
        sqlite3_bind_int64(s, 5, (sqlite3_int64)now);
    else
        sqlite3_bind_null(s, 5);
    sqlite3_bind_int(s, 6, trusted && vp != 1);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_DONE) {
        st->own_commits++;
        if (vp == 1)
            log_info("event=domain_added domain=%s verified=1 reason=\"subdomain of verified %s\"",
                     norm, parent);
        else
            log_info("event=domain_added domain=%s verified=0 trust_unverified=%d", norm,
                     trusted ? 1 : 0);
        return 0;
    }
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY || rc == SQLITE_CONSTRAINT_UNIQUE)
        error_set(err, "name", "domain %s already exists", norm);
    else
        store_db_error(st, err, "domain add");
    return -1;
}

int store_domain_add(struct store *st, const char *name, struct error *err)
{
    return domain_insert(st, name, false, err);
}

int store_domain_add_trusted(struct store *st, const char *name, struct error *err)
{
    return domain_insert(st, name, true, err);
}

/* domain_update - run one UPDATE keyed by ?1 = the normalised name */
static int domain_update(struct store *st, sqlite3_stmt *s, const char *norm, const char *what,
                         struct error *err)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, what);
        return -1;
    }
    if (sqlite3_changes(st->db) == 0) {
        error_set(err, "name", "no such domain %s", norm);
        return -1;
    }
    st->own_commits++;
    return 0;
}

int store_domain_set_verified(struct store *st, const char *name, bool verified, int64_t when,
                              struct error *err)
{
    char norm[256];

    memset(err, 0, sizeof *err);
    if (normalise_domain(name, "name", norm, sizeof norm, err) < 0)
        return -1;
    sqlite3_stmt *s = store_stmt(st, STMT_DOMAIN_SET_VERIFIED);
    sqlite3_bind_text(s, 1, norm, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(s, 2, verified ? 1 : 0);
    if (verified)
        sqlite3_bind_int64(s, 3, (sqlite3_int64)when);
    else
        sqlite3_bind_null(s, 3);
    if (domain_update(st, s, norm, "domain set verified", err) < 0)
        return -1;
    log_info("event=domain_verified domain=%s verified=%d", norm, verified ? 1 : 0);
    if (!verified)
        return 0;
    s = store_stmt(st, STMT_DOMAIN_VERIFY_SUBDOMAINS);
    sqlite3_bind_text(s, 1, norm, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)when);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "subdomain verification");
        return -1;
    }
    if (sqlite3_changes(st->db) > 0)
        log_info("event=subdomains_verified parent=%s count=%d", norm, sqlite3_changes(st->db));
    return 0;
}

int store_domain_set_check(struct store *st, const char *name, int64_t when, const char *result,
                           struct error *err)
{
    char norm[256];

    memset(err, 0, sizeof *err);
    if (normalise_domain(name, "name", norm, sizeof norm, err) < 0)
        return -1;
    sqlite3_stmt *s = store_stmt(st, STMT_DOMAIN_SET_CHECK);
    sqlite3_bind_text(s, 1, norm, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)when);
    sqlite3_bind_text(s, 3, result ? result : "", -1, SQLITE_TRANSIENT);
    return domain_update(st, s, norm, "domain set check", err);
}

int store_domain_set_mx_since(struct store *st, const char *name, int64_t since,
                              struct error *err)
{
    char norm[256];

    memset(err, 0, sizeof *err);
    if (normalise_domain(name, "name", norm, sizeof norm, err) < 0)
        return -1;
    sqlite3_stmt *s = store_stmt(st, STMT_DOMAIN_SET_MX_SINCE);
    sqlite3_bind_text(s, 1, norm, -1, SQLITE_TRANSIENT);
    if (since > 0)
        sqlite3_bind_int64(s, 2, (sqlite3_int64)since);
    else
        sqlite3_bind_null(s, 2);
    return domain_update(st, s, norm, "domain set mx_only_moat_since", err);
}

int store_domain_remove(struct store *st, const char *name, struct error *err)
{
    char norm[256];

    memset(err, 0, sizeof *err);
    if (normalise_domain(name, "name", norm, sizeof norm, err) < 0)
        return -1;
    sqlite3_stmt *s = store_stmt(st, STMT_DOMAIN_DELETE);
    sqlite3_bind_text(s, 1, norm, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "domain remove");
        return -1;
    }
    if (sqlite3_changes(st->db) == 0) {
        error_set(err, "name", "no such domain %s", norm);
        return -1;
    }
    st->own_commits++;
    log_info("event=domain_removed domain=%s", norm);
    return 0;
}

static void route_from_row(sqlite3_stmt *s, int col, struct store_route *r)
{
    memset(r, 0, sizeof *r);
    r->port = 25;
    if (sqlite3_column_type(s, col) == SQLITE_NULL)
        return;
    r->host = xstrdup((const char *)sqlite3_column_text(s, col));
    r->port = sqlite3_column_int(s, col + 1);
    enum store_tls_mode m = STORE_TLS_OPPORTUNISTIC;
    const char *t = (const char *)sqlite3_column_text(s, col + 2);
    if (t != NULL && store_tls_mode_parse(t, &m) < 0)
        log_warn("event=store_bad_tls_mode host=%s tls=%s", r->host, t);
    r->tls = m;
}

static char *column_strdup(sqlite3_stmt *s, int col)
{
    const unsigned char *t = sqlite3_column_text(s, col);
    return t ? xstrdup((const char *)t) : NULL;
}

/* domain_from_row - a row of STMT_DOMAIN_LIST / STMT_DOMAIN_GET */
static void domain_from_row(sqlite3_stmt *s, struct store_domain *e)
{
    memset(e, 0, sizeof *e);
    e->name = xstrdup((const char *)sqlite3_column_text(s, 0));
    e->verified = sqlite3_column_int(s, 1) != 0;
    e->created = sqlite3_column_int64(s, 2);
    route_from_row(s, 3, &e->route);
    e->token = column_strdup(s, 6);
    e->verified_at = sqlite3_column_int64(s, 7);
    e->trust_unverified = sqlite3_column_int(s, 8) != 0;
    e->last_check = sqlite3_column_int64(s, 9);
    e->last_result = column_strdup(s, 10);
    e->mx_only_moat_since = sqlite3_column_int64(s, 11);
}

int store_domain_get(struct store *st, const char *name, struct store_domain *out,
                     struct error *err)
{
    char norm[256];

    memset(err, 0, sizeof *err);
    memset(out, 0, sizeof *out);
    if (normalise_domain(name, "name", norm, sizeof norm, err) < 0)
        return -1;
    sqlite3_stmt *s = store_stmt(st, STMT_DOMAIN_GET);
    sqlite3_bind_text(s, 1, norm, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        domain_from_row(s, out);
    sqlite3_reset(s);
    if (rc == SQLITE_DONE) {
        error_set(err, "name", "no such domain %s", norm);
        return -1;
    }
    if (rc != SQLITE_ROW) {
        store_db_error(st, err, "domain get");
        return -1;
    }
    return 0;
}

void store_domain_clear(struct store_domain *d)
{
    free(d->name);
    free(d->token);
    free(d->last_result);
    store_route_clear(&d->route);
    memset(d, 0, sizeof *d);
}

int store_domain_list(struct store *st, struct store_domain **out, size_t *n, struct error *err)
{
    struct store_domain *d = NULL;
    size_t count = 0, cap = 0;
    int rc;

    memset(err, 0, sizeof *err);
    sqlite3_stmt *s = store_stmt(st, STMT_DOMAIN_LIST);
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (count == cap) {
            cap = cap ? cap * 2 : 16;
            d = xreallocarray(d, cap, sizeof *d);
        }
        domain_from_row(s, &d[count++]);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "domain list");
        store_domains_free(d, count);
        return -1;
    }
    *out = d;
    *n = count;
    return 0;
}

void store_domains_free(struct store_domain *d, size_t n)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        store_domain_clear(&d[i]);
    free(d);
}

/* --- routes --- */

/* route_host_normalise - a host name (single label allowed: "localhost"), an
 * IPv4 literal, or an IPv6 literal with or without brackets (stored without) */
static int route_host_normalise(const char *host, char *out, size_t size, struct error *err)
{
    char tmp[128], v6[INET6_ADDRSTRLEN + 2];
    struct in6_addr a6;
    struct in_addr a4;
    size_t len = strnlen(host, 300);

    const char *h = host;
    if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
        h = host + 1;
        len -= 2;
    }
    if (len > 0 && len < sizeof v6) {
        memcpy(v6, h, len);
        v6[len] = '\0';
        if (inet_pton(AF_INET6, v6, &a6) == 1) {
            inet_ntop(AF_INET6, &a6, out, (socklen_t)size);   /* canonical form */
            return 0;
        }
        if (h == host && inet_pton(AF_INET, v6, &a4) == 1) {
            inet_ntop(AF_INET, &a4, out, (socklen_t)size);
            return 0;
        }
    }
    if (h != host) {
        error_set(err, "host", "invalid route host \"%s\": not an IPv6 address",
                  shown(tmp, sizeof tmp, host));
        return -1;
    }
    if (len > 0 && host[len - 1] == '.')
        len--;
    if (len >= size) {
        error_set(err, "host", "invalid route host \"%s\": longer than 253 characters",
                  shown(tmp, sizeof tmp, host));
        return -1;
    }
    memcpy(out, host, len);
    out[len] = '\0';
    str_lower(out);
    const char *why = name_check(out, 1);
    if (why != NULL) {
        error_set(err, "host", "invalid route host \"%s\": %s", shown(tmp, sizeof tmp, host),
                  why);
        return -1;
    }
    return 0;
}

static int domain_exists(struct store *st, const char *norm, struct error *err)
{
    sqlite3_stmt *s = store_stmt(st, STMT_DOMAIN_EXISTS);
    sqlite3_bind_text(s, 1, norm, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    store_db_error(st, err, "domain lookup");
    return -1;
}

/* store_route_set - set the primary route of a domain; r->host NULL removes it */
int store_route_set(struct store *st, const char *domain, const struct store_route *r,
                    struct error *err)
{
    char norm[256], host[256];
    int rc;

    memset(err, 0, sizeof *err);
    if (normalise_domain(domain, "domain", norm, sizeof norm, err) < 0)
        return -1;
    if (r->host == NULL) {
        int e = domain_exists(st, norm, err);
        if (e <= 0) {
            if (e == 0)
                error_set(err, "domain", "no such domain %s", norm);
            return -1;
        }
        sqlite3_stmt *s = store_stmt(st, STMT_ROUTE_DELETE);
        sqlite3_bind_text(s, 1, norm, -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(s);
        sqlite3_reset(s);
        if (rc != SQLITE_DONE) {
            store_db_error(st, err, "route delete");
            return -1;
        }
        st->own_commits++;
        log_info("event=route_removed domain=%s", norm);
        return 0;
    }
    if (r->port < 1 || r->port > 65535) {
        error_set(err, "port", "invalid port %d: must be 1..65535", r->port);
        return -1;
    }
    if ((unsigned)r->tls > STORE_TLS_STRICT) {
        error_set(err, "tls", "invalid TLS mode %d", (int)r->tls);
        return -1;
    }
    if (route_host_normalise(r->host, host, sizeof host, err) < 0)
        return -1;
    sqlite3_stmt *s = store_stmt(st, STMT_ROUTE_UPSERT);
    sqlite3_bind_text(s, 1, norm, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(s, 2, host, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(s, 3, r->port);
    sqlite3_bind_text(s, 4, tls_mode_names[r->tls], -1, SQLITE_STATIC);
    rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc == SQLITE_CONSTRAINT_FOREIGNKEY) {
        error_set(err, "domain", "no such domain %s", norm);
        return -1;
    }
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "route set");
        return -1;
    }
    st->own_commits++;
    log_info("event=route_set domain=%s host=%s port=%d tls=%s", norm, host, r->port,
             tls_mode_names[r->tls]);
    return 0;
}

/* store_route_get - the primary route; out->host NULL when the domain has none */
int store_route_get(struct store *st, const char *domain, struct store_route *out,
                    struct error *err)
{
    char norm[256];

    memset(err, 0, sizeof *err);
    memset(out, 0, sizeof *out);
    if (normalise_domain(domain, "domain", norm, sizeof norm, err) < 0)
        return -1;
    sqlite3_stmt *s = store_stmt(st, STMT_ROUTE_GET);
    sqlite3_bind_text(s, 1, norm, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        route_from_row(s, 0, out);
    sqlite3_reset(s);
    if (rc == SQLITE_DONE) {
        error_set(err, "domain", "no such domain %s", norm);
        return -1;
    }
    if (rc != SQLITE_ROW) {
        store_db_error(st, err, "route get");
        return -1;
    }
    return 0;
}

void store_route_clear(struct store_route *r)
{
    free(r->host);
    r->host = NULL;
}

const char *store_tls_mode_name(enum store_tls_mode m)
{
    if ((unsigned)m > STORE_TLS_STRICT)
        return "unknown";
    return tls_mode_names[m];
}

int store_tls_mode_parse(const char *s, enum store_tls_mode *out)
{
    for (size_t i = 0; i < sizeof tls_mode_names / sizeof tls_mode_names[0]; i++) {
        if (strcmp(s, tls_mode_names[i]) == 0) {
            *out = (enum store_tls_mode)i;
            return 0;
        }
    }
    return -1;
}

/* store_changed - PRAGMA data_version moves when another connection commits;
 * our own commits are counted because data_version ignores them */
int store_step_change(struct store *st, sqlite3_stmt *s, const char *what, const char *field,
                      const char *key, struct error *err)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if ((rc & 0xff) == SQLITE_CONSTRAINT) {
        error_set(err, field, "%s %s already exists", what, key);
        return STORE_CONFLICT;
    }
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, what);
        return STORE_ERR;
    }
    if (sqlite3_changes(st->db) == 0) {
        error_set(err, field, "no such %s: %s", what, key);
        return STORE_NOT_FOUND;
    }
    st->own_commits++;
    return STORE_OK;
}

bool store_changed(struct store *st)
{
    bool changed = false;
    sqlite3_stmt *s = store_stmt(st, STMT_DATA_VERSION);
    if (sqlite3_step(s) == SQLITE_ROW) {
        int64_t dv = sqlite3_column_int64(s, 0);
        if (dv != st->data_version) {
            st->data_version = dv;
            changed = true;
        }
    }
    sqlite3_reset(s);
    if (st->own_commits != st->seen_commits) {
        st->seen_commits = st->own_commits;
        changed = true;
    }
    return changed;
}
