/*
 * settings.c - the settings file (moat.conf), declared once in one table.
 *
 * Entry points: settings_defaults, settings_load_file, settings_set,
 * settings_finish, settings_print (moatd --check-config),
 * settings_write_reference (docs/settings.md), settings_free; for values
 * stored in the database: settings_runtime, settings_check_runtime,
 * settings_apply_runtime, settings_reset_runtime; for the API:
 * settings_count, settings_describe.
 *
 * Every setting is one row of settings_table: name, type, where it lives in
 * struct moat_settings, its default (as text, parsed by the same code that
 * parses the file, so a default can never disagree with its own bounds),
 * minimum, maximum, flags (secret; runtime: may be changed in the store at
 * run time) and a description for administrators.  The file syntax is
 * "key = value" lines, whole-line "#" comments and blank lines.  A key may be
 * given once per file; command-line overrides (settings_set) are applied
 * after the file and replace its values.
 *
 * Runtime settings: moatd applies the values stored in the database over the
 * file's (settings_apply_runtime), except where the command line set the key:
 * default < file < store < command line.  Each row remembers its source, and
 * for a store value the text it replaced, so a reset returns to the file's
 * value or the default without reading the file again.
 *
 * Ownership: a struct moat_settings owns every string in it;
 * settings_free() releases them.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>
#include "settings.h"
#include "roff.h"
#include "cidr.h"

#define SETTINGS_MAX_LINE 4096   /* a longer line in moat.conf is an error */
#define SETTINGS_MAX_LINES 10000 /* bounds the work on a runaway file */

enum setting_type {
    SETTING_STRING,
    SETTING_PATH,       /* string; absolute path or "" */
    SETTING_INT,
    SETTING_SIZE,       /* octets, k/M/G suffixes (binary multiples) */
    SETTING_DURATION,   /* seconds, s/m/h/d suffixes */
    SETTING_BOOL,
    SETTING_ENUM,       /* one of choices, "a|b|c" */
    SETTING_HOSTPORTS,  /* comma-separated list of host:port */
    SETTING_DURATIONS,  /* comma-separated list of durations */
};

#define SETTING_SECRET 0x1u   /* value never printed; file must not be group/other readable */
/* changeable in the store at run time (PATCH /api/v1/settings): only for
 * settings the event loop reads from `settings->...` at each use, never
 * copied at start, so a new value applies to the next session, transaction,
 * connection or retry without a restart */
#define SETTING_RUNTIME 0x2u

struct setting {
    const char *name;
    enum setting_type type;
    size_t offset;          /* offsetof(struct moat_settings, field) */
    size_t count_offset;    /* lists: offsetof the int element count */
    const char *def;        /* default, in file syntax */
    int64_t min, max;       /* numbers, and each element of a duration list */
    int min_items, max_items;  /* lists */
    const char *choices;    /* enum */
    int (*check)(const char *value, char *why, size_t whysize); /* extra syntax check */
    unsigned flags;
    const char *group;      /* heading in docs/settings.md */
    const char *description;
};

#define KiB INT64_C(1024)
#define MiB (KiB * 1024)
#define GiB (MiB * 1024)
#define MINUTE INT64_C(60)
#define HOUR (60 * MINUTE)
#define DAY (24 * HOUR)

#define OFF(f) offsetof(struct moat_settings, f)

static int check_resolver(const char *value, char *why, size_t whysize);
static int check_hostname(const char *value, char *why, size_t whysize);
static int check_user(const char *value, char *why, size_t whysize);
static int check_rspamd_url(const char *value, char *why, size_t whysize);
static int check_cidr_list(const char *value, char *why, size_t whysize);

/* settings_table - every setting of moatd; rows flagged SETTING_RUNTIME may also be
 * stored in the database and changed at run time */
static const struct setting settings_table[] = {
    /* --- paths --- */
    { "state_dir", SETTING_PATH, OFF(state_dir), 0, "/var/lib/moat", 0, 0, 0, 0, NULL, NULL, 0,
      "Paths",
      "Directory that holds everything Moat keeps between runs: the database, the spool, "
      "the generated TLS certificate and the control socket `moatd.sock` used by the `moat` "
      "command. Must be an absolute path on a local file system that supports fsync; "
      "it must be writable by `run_user`. "
      "The `moat` command finds it through `--state-dir`, the `MOAT_STATE_DIR` environment "
      "variable, or this setting." },
    { "database", SETTING_PATH, OFF(database), 0, "", 0, 0, 0, 0, NULL, NULL, 0,
      "Paths",
      "SQLite database holding the configuration changed through the CLI, the API and the "
      "web UI (domains, routes, ...). Empty means `STATE/moat.db` (inside `state_dir`). "
      "Keep it on local storage: SQLite's WAL mode does not work on network file systems." },
    { "spool_dir", SETTING_PATH, OFF(spool_dir), 0, "", 0, 0, 0, 0, NULL, NULL, 0,
      "Paths",
      "Directory of the durable mail queue. Every message accepted with \"250\" is on stable "
      "storage here until it is delivered or bounced. Empty means `STATE/spool`. Put it on a "
      "local file system whose fsync is honest; size it for `queue_lifetime` worth of "
      "undeliverable mail. Started as root, moatd gives it (and its segments) to `run_user`, "
      "wherever it is." },
    { "tls_cert", SETTING_PATH, OFF(tls_cert), 0, "", 0, 0, 0, 0, NULL, NULL, 0,
      "Paths",
      "PEM file with the certificate chain offered with STARTTLS (server certificate first). "
      "Empty means a self-signed certificate generated at first start under `STATE/tls/`; "
      "replace it with a certificate for `hostname` from a public CA before pointing MX records "
      "at Moat. Set together with `tls_key`." },
    { "tls_key", SETTING_PATH, OFF(tls_key), 0, "", 0, 0, 0, 0, NULL, NULL, 0,
      "Paths",
      "PEM file with the private key of `tls_cert`. moatd refuses a key file that group or "
      "others can read (chmod 600). Empty means the generated key under `STATE/tls/`." },
    { "run_user", SETTING_STRING, OFF(run_user), 0, "moat", 0, 0, 0, 0, NULL, check_user, 0,
      "Paths",
      "Unprivileged user moatd switches to after binding its ports when started as root. "
      "If this user does not exist, moatd falls back to `nobody`. Ignored when moatd is not "
      "started as root." },

    /* --- network --- */
    { "smtp_listen", SETTING_HOSTPORTS, OFF(smtp_listen), OFF(n_smtp_listen), "127.0.0.1:2525",
      0, 0, 1, SETTINGS_MAX_LISTEN, NULL, NULL, 0,
      "Network",
      "Addresses the SMTP listener binds, as a comma-separated list of `ADDRESS:PORT` "
      "(IPv6 as `[ADDRESS]:PORT`), e.g. `0.0.0.0:25, [::]:25`. Production gateways listen on "
      "port 25 on their public addresses; the default only accepts local test connections. "
      "At most 8 addresses." },
    { "http_listen", SETTING_HOSTPORTS, OFF(http_listen), OFF(n_http_listen), "127.0.0.1:8025",
      0, 0, 0, SETTINGS_MAX_LISTEN, NULL, NULL, 0,
      "Network",
      "Addresses of the HTTP server (API, admin console, Connect wizard, user portal), "
      "comma-separated `ADDRESS:PORT`. Empty disables the HTTP server. Expose it only "
      "behind a TLS-terminating reverse proxy or on a management network. At most 8 addresses." },
    { "resolver", SETTING_STRING, OFF(resolver), 0, "", 0, 0, 0, 0, NULL, check_resolver, 0,
      "Network",
      "DNS resolver used for MX, A/AAAA, TXT, TLSA and PTR lookups, as an IP address with an "
      "optional port: `127.0.0.1`, `127.0.0.1:5353`, `127.0.0.1@5353` or `[::1]:53`. Empty "
      "uses the name servers of /etc/resolv.conf. A local validating resolver is recommended "
      "for DANE." },
    { "hostname", SETTING_STRING, OFF(hostname), 0, "", 0, 0, 0, 0, NULL, check_hostname, 0,
      "Network",
      "Fully qualified host name Moat uses in its SMTP banner, EHLO, Received headers and "
      "DSNs. It should match the PTR record of the public address and the name in "
      "`tls_cert`. Empty means the system host name (gethostname)." },
    { "log_level", SETTING_ENUM, OFF(log_level), 0, "info", 0, 0, 0, 0,
      "debug|info|warn|error", NULL, 0,
      "Logging",
      "Least severe log level written to stderr: `debug` (every SMTP state change, very "
      "verbose), `info` (one line per session event and message), `warn`, `error`." },

    /* --- SMTP server bounds --- */
    { "smtp_max_command_line", SETTING_INT, OFF(smtp_max_command_line), 0, "512",
      512, 65536, 0, 0, NULL, NULL, 0,
      "SMTP server limits",
      "Longest SMTP command line accepted, in octets including CRLF. RFC 5321 4.5.3.1.4 "
      "requires at least 512; longer commands are answered with 500 5.5.6 and skipped to the "
      "end of the line. Raise it only for clients that send very long MAIL FROM parameters." },
    { "smtp_max_text_line", SETTING_INT, OFF(smtp_max_text_line), 0, "1000",
      1000, 1048576, 0, 0, NULL, NULL, 0,
      "SMTP server limits",
      "Longest line of message text accepted during DATA, in octets including CRLF. "
      "RFC 5321 4.5.3.1.6 requires at least 1000. Messages with longer lines are refused "
      "with 500 5.5.6 after the data is read; some broken senders need a larger value." },
    { "message_size_limit", SETTING_SIZE, OFF(message_size_limit), 0, "35M",
      1024, 2 * GiB, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "SMTP server limits",
      "Largest message accepted, in octets (k, M and G suffixes are powers of 1024). "
      "Announced in the EHLO SIZE keyword (RFC 1870); larger messages get 552 5.3.4. "
      "Keep it at or below the limit of the mail server behind Moat (Exchange Online "
      "accepts about 35 MB after encoding)." },
    { "smtp_max_recipients", SETTING_INT, OFF(smtp_max_recipients), 0, "1000",
      100, 100000, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "SMTP server limits",
      "Recipients accepted per message; further RCPT commands get 452 4.5.3 and the client "
      "sends them in another transaction. RFC 5321 4.5.3.1.8 requires at least 100." },
    { "smtp_max_messages", SETTING_INT, OFF(smtp_max_messages), 0, "1000",
      1, 1000000, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "SMTP server limits",
      "Messages accepted in one SMTP session; after that MAIL gets 421 4.7.0 and the "
      "connection is closed, so one client cannot hold a session forever." },
    { "smtp_max_errors", SETTING_INT, OFF(smtp_max_errors), 0, "10",
      1, 1000, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "SMTP server limits",
      "Error replies (5xx) tolerated in one session before Moat answers 421 4.7.0 and "
      "closes it; limits address harvesting and broken clients." },
    { "smtp_max_junk_commands", SETTING_INT, OFF(smtp_max_junk_commands), 0, "100",
      1, 100000, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "SMTP server limits",
      "NOOP, RSET, VRFY, HELP and similar commands allowed in one session before each further "
      "one counts as an error (see `smtp_max_errors`)." },
    { "smtp_max_connections", SETTING_INT, OFF(smtp_max_connections), 0, "10000",
      1, 1000000, 0, 0, NULL, NULL, 0,
      "SMTP server limits",
      "Simultaneous SMTP connections in total; further connections get 421 4.7.0 and are "
      "closed. Keep it below the process file descriptor limit (ulimit -n) minus the "
      "descriptors needed for delivery." },
    { "smtp_max_connections_per_ip", SETTING_INT, OFF(smtp_max_connections_per_ip), 0, "100",
      1, 1000000, 0, 0, NULL, NULL, 0,
      "SMTP server limits",
      "Simultaneous SMTP connections from one client IP address (IPv6: one address). "
      "Raise it if a busy internal mail server sends through Moat with many parallel "
      "connections." },
    { "smtp_max_received_headers", SETTING_INT, OFF(smtp_max_received_headers), 0, "100",
      10, 1000, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "SMTP server limits",
      "A message with more Received headers than this is treated as a mail loop and refused "
      "with 554 5.4.6 (RFC 5321 6.3)." },
    { "smtp_max_header_size", SETTING_SIZE, OFF(smtp_max_header_size), 0, "1M",
      16 * KiB, 64 * MiB, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "SMTP server limits",
      "Largest header section of a message, in octets; larger headers are refused with "
      "552 5.3.4. Bounds the memory used to parse headers." },
    { "smtp_timeout_command", SETTING_DURATION, OFF(smtp_timeout_command), 0, "5m",
      1, HOUR, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "SMTP server limits",
      "How long the server waits for the next command before answering 421 4.4.2 and "
      "closing. RFC 5321 4.5.3.2.7 asks for at least 5 minutes." },
    { "smtp_timeout_data_block", SETTING_DURATION, OFF(smtp_timeout_data_block), 0, "3m",
      1, HOUR, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "SMTP server limits",
      "How long the server waits for more message data during DATA before giving up "
      "(RFC 5321 4.5.3.2.5 suggests 3 minutes per block on the client side)." },
    { "smtp_timeout_tls_handshake", SETTING_DURATION, OFF(smtp_timeout_tls_handshake), 0, "1m",
      1, 10 * MINUTE, 0, 0, NULL, NULL, 0,
      "SMTP server limits",
      "Time allowed for a STARTTLS handshake to complete before the connection is closed." },
    { "smtp_timeout_shutdown", SETTING_DURATION, OFF(smtp_timeout_shutdown), 0, "30s",
      0, 10 * MINUTE, 0, 0, NULL, NULL, 0,
      "SMTP server limits",
      "At SIGTERM moatd stops accepting connections and gives sessions in progress this long "
      "to finish; then it answers 421 and closes them. Messages already acknowledged are "
      "safe either way. 0 closes at once." },
    { "tls_min_version", SETTING_ENUM, OFF(tls_min_version), 0, "1.2", 0, 0, 0, 0,
      "1.2|1.3", NULL, 0,
      "SMTP server limits",
      "Oldest TLS version accepted for STARTTLS, inbound and outbound: `1.2` or `1.3`. "
      "`1.3` refuses TLS with older mail servers, which then fall back to plain text unless a "
      "TLS policy requires encryption." },

    /* --- delivery --- */
    { "delivery_concurrency_per_route", SETTING_INT, OFF(delivery_concurrency_per_route), 0, "20",
      1, 1000, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "Delivery",
      "Simultaneous outgoing connections to one destination (a domain's route, or the MX "
      "hosts of an external domain). Lower it if the mail server behind Moat throttles." },
    { "delivery_max_rcpts_per_txn", SETTING_INT, OFF(delivery_max_rcpts_per_txn), 0, "100",
      1, 1000, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "Delivery",
      "Recipients sent in one outgoing SMTP transaction; a message with more recipients for "
      "the same destination is sent in several transactions." },
    { "delivery_port", SETTING_INT, OFF(delivery_port), 0, "25",
      1, 65535, 0, 0, NULL, NULL, 0,
      "Delivery",
      "TCP port used for destinations found through MX records. Change it only in test "
      "setups; routes carry their own port." },
    { "delivery_timeout_connect", SETTING_DURATION, OFF(delivery_timeout_connect), 0, "30s",
      1, HOUR, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "Delivery",
      "Time allowed to establish an outgoing TCP connection before the next address is tried." },
    { "delivery_timeout_command", SETTING_DURATION, OFF(delivery_timeout_command), 0, "5m",
      1, HOUR, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "Delivery",
      "Time to wait for the reply to a command (greeting, EHLO, MAIL, RCPT, DATA) on an "
      "outgoing connection. RFC 5321 4.5.3.2 recommends 5 minutes." },
    { "delivery_timeout_data", SETTING_DURATION, OFF(delivery_timeout_data), 0, "10m",
      1, HOUR, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "Delivery",
      "Time to wait for the reply to the final \".\" of a message. RFC 5321 4.5.3.2.6 asks "
      "for 10 minutes: the receiver may be scanning the message." },
    { "retry_schedule", SETTING_DURATIONS, OFF(retry_schedule), OFF(n_retry_schedule),
      "1m,5m,10m,30m,1h,2h,4h", 1, DAY, 1, SETTINGS_MAX_RETRY, NULL, NULL, SETTING_RUNTIME,
      "Delivery",
      "Delays between delivery attempts after a temporary failure, comma-separated; the "
      "last delay repeats until `queue_lifetime` expires. Each delay is 1s to 1d; at most "
      "32 entries." },
    { "queue_lifetime", SETTING_DURATION, OFF(queue_lifetime), 0, "5d",
      1, 30 * DAY, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "Delivery",
      "How long a message is retried after a temporary failure before it is returned to its "
      "sender with a delivery status notification (RFC 3464)." },
    { "delay_warning_after", SETTING_DURATION, OFF(delay_warning_after), 0, "4h",
      0, 30 * DAY, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "Delivery",
      "When a message is still undelivered after this long, its sender gets one delay "
      "warning (a DSN with Action: delayed). 0 never warns." },

    /* --- HTTP API --- */
    { "http_tls_cert", SETTING_PATH, OFF(http_tls_cert), 0, "", 0, 0, 0, 0, NULL, NULL, 0,
      "HTTP API",
      "PEM file with the certificate chain of the HTTP server (API, admin console, portal), "
      "server certificate first. When set together with `http_tls_key`, moatd serves HTTPS "
      "(TLS 1.2 and 1.3) and session cookies carry the Secure attribute. Empty serves plain "
      "HTTP, which moatd allows only on loopback addresses unless `http_allow_plain` is set. "
      "The files are read at start, before moatd drops privileges." },
    { "http_tls_key", SETTING_PATH, OFF(http_tls_key), 0, "", 0, 0, 0, 0, NULL, NULL, 0,
      "HTTP API",
      "PEM file with the private key of `http_tls_cert`. moatd refuses a key file that group "
      "or others can read (chmod 600). Set together with `http_tls_cert`." },
    { "http_allow_plain", SETTING_BOOL, OFF(http_allow_plain), 0, "no", 0, 0, 0, 0, NULL, NULL, 0,
      "HTTP API",
      "Serve plain HTTP on an address that is not loopback (`http_listen` with e.g. "
      "`10.0.0.5:8025`). Only for a TLS-terminating reverse proxy on a trusted network in "
      "front of Moat: passwords, session cookies and API tokens cross the network in clear "
      "otherwise. Without it moatd refuses to start and names `http_listen`." },
    { "http_max_body", SETTING_SIZE, OFF(http_max_body), 0, "1M",
      KiB, 64 * MiB, 0, 0, NULL, NULL, 0,
      "HTTP API",
      "Largest request body the HTTP API accepts, in octets; larger requests are answered "
      "with 413 before the body is read. JSON requests are small; raise it only for imports "
      "(CSV uploads) that need more." },
    { "http_threads", SETTING_INT, OFF(http_threads), 0, "4",
      1, 256, 0, 0, NULL, NULL, 0,
      "HTTP API",
      "Worker threads of the HTTP server per listen address. A request holds its thread "
      "while it runs (a sign-in spends about 0.1 s hashing the password; later, LDAP "
      "look-ups), so raise it when many administrators or portal users work at once. Each "
      "thread keeps its own database connection." },
    { "session_lifetime", SETTING_DURATION, OFF(session_lifetime), 0, "12h",
      5 * MINUTE, 30 * DAY, 0, 0, NULL, NULL, 0,
      "HTTP API",
      "How long a sign-in session lasts at most, however active; then the user signs in "
      "again. Sessions can also be revoked at any time through the API." },
    { "session_idle_timeout", SETTING_DURATION, OFF(session_idle_timeout), 0, "30m",
      MINUTE, DAY, 0, 0, NULL, NULL, 0,
      "HTTP API",
      "A session without a request for this long expires, even before `session_lifetime`." },
    { "login_max_failures", SETTING_INT, OFF(login_max_failures), 0, "5",
      1, 1000, 0, 0, NULL, NULL, 0,
      "HTTP API",
      "Failed sign-ins allowed for one account, and separately from one client address, "
      "within `login_failure_window`; further attempts are refused with 429 and a "
      "Retry-After header until the window has passed, even with the right password." },
    { "login_failure_window", SETTING_DURATION, OFF(login_failure_window), 0, "15m",
      MINUTE, DAY, 0, 0, NULL, NULL, 0,
      "HTTP API",
      "The period over which failed sign-ins are counted for `login_max_failures`." },

    /* --- spool --- */
    { "spool_segment_size", SETTING_SIZE, OFF(spool_segment_size), 0, "64M",
      MiB, 4 * GiB, 0, 0, NULL, NULL, 0,
      "Spool",
      "Size at which the spool starts a new log segment. Smaller segments are reclaimed "
      "sooner once their messages are delivered; larger ones mean fewer files." },

    /* --- Connect --- */
    { "connect_recheck_min", SETTING_DURATION, OFF(connect_recheck_min), 0, "1m",
      1, HOUR, 0, 0, NULL, NULL, 0,
      "Connect",
      "A Connect task waiting for an external change (a DNS record that is not published "
      "yet) is checked again after this long, then after twice as long each time, up to "
      "`connect_recheck_max`. A task whose check fails after it was done is re-checked on "
      "the same schedule until it recovers." },
    { "connect_recheck_max", SETTING_DURATION, OFF(connect_recheck_max), 0, "30m",
      1, DAY, 0, 0, NULL, NULL, 0,
      "Connect",
      "The longest interval between re-checks of a waiting Connect task. Must not be "
      "shorter than `connect_recheck_min`." },
    { "connect_reverify_interval", SETTING_DURATION, OFF(connect_reverify_interval), 0, "6h",
      1, 7 * DAY, 0, 0, NULL, NULL, 0,
      "Connect",
      "How often Connect re-verifies a task that is done (the MX records still point only at "
      "Moat, the verification TXT record is still there, ...). A failing re-verification is "
      "confirmed by a second check a few seconds later and then shows the task as "
      "`attention`." },
    { "lockdown_mx_hours", SETTING_INT, OFF(lockdown_mx_hours), 0, "72",
      0, 8760, 0, 0, NULL, NULL, 0,
      "Connect",
      "Hours for which every domain's MX records must have pointed only at Moat before the "
      "lockdown task (accepting port 25 only from Moat) is unlocked, so that mail still "
      "delivered along the old MX records by caching senders is not refused. 0 unlocks it "
      "as soon as the MX task is done." },

    /* --- directory and recipient validation --- */
    { "directory_csv_max_line", SETTING_SIZE, OFF(directory_csv_max_line), 0, "64k",
      256, MiB, 0, 0, NULL, NULL, 0,
      "Directory",
      "Longest row (record) of a CSV user import, in octets; a longer row is reported with "
      "its line number and skipped, the other rows are imported." },
    { "directory_csv_max_rows", SETTING_INT, OFF(directory_csv_max_rows), 0, "1000000",
      1, 100000000, 0, 0, NULL, NULL, 0,
      "Directory",
      "Most rows one CSV user import (one API request) may hold; later rows are reported "
      "and not imported. `moat user import` sends a large file in several requests." },
    { "rv_callforward_positive_ttl", SETTING_DURATION, OFF(rv_callforward_positive_ttl), 0,
      "1h", 1, 7 * DAY, 0, 0, NULL, NULL, 0,
      "Directory",
      "Recipient validation by call-forward: how long the answer \"this recipient exists\" "
      "from the domain's mail server is remembered before it is asked again." },
    { "rv_callforward_negative_ttl", SETTING_DURATION, OFF(rv_callforward_negative_ttl), 0,
      "10m", 1, DAY, 0, 0, NULL, NULL, 0,
      "Directory",
      "Recipient validation by call-forward: how long the answer \"no such recipient\" "
      "(a 5xx reply to the probe RCPT) is remembered. Keep it short: a mailbox created "
      "meanwhile is refused until it expires." },
    { "rv_callforward_timeout", SETTING_DURATION, OFF(rv_callforward_timeout), 0, "30s",
      1, 300, 0, 0, NULL, NULL, 0,
      "Directory",
      "Recipient validation by call-forward: the longest a probe (connect, EHLO, MAIL FROM:<>, "
      "RCPT TO) may take; beyond it the domain's mail server counts as unreachable and the "
      "domain's `unreachable` behaviour (450 4.4.3, or accept) applies." },

    /* --- SMTP AUTH (the outbound role) --- */
    { "smtp_auth", SETTING_BOOL, OFF(smtp_auth), 0, "yes", 0, 0, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "SMTP AUTH",
      "Offer SMTP AUTH (PLAIN and LOGIN, RFC 4954) to clients, after STARTTLS only: an "
      "authenticated account may relay to any domain (the outbound role) with a sender under "
      "an internal domain. AUTH before TLS gets 538 5.7.11." },
    { "smtp_auth_max_line", SETTING_SIZE, OFF(smtp_auth_max_line), 0, "12288",
      512, 64 * KiB, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "SMTP AUTH",
      "Longest AUTH command or AUTH response line, in octets including CRLF (RFC 4954 4 "
      "allows 12288); a longer one gets 500 5.5.6." },
    { "smtp_auth_timeout", SETTING_DURATION, OFF(smtp_auth_timeout), 0, "1m",
      1, 10 * MINUTE, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "SMTP AUTH",
      "How long the server waits for the client's answer to an AUTH challenge (334) before "
      "answering 421 4.4.2 and closing." },
    { "smtp_auth_max_failures", SETTING_INT, OFF(smtp_auth_max_failures), 0, "5",
      1, 1000, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "SMTP AUTH",
      "Failed AUTH attempts allowed per client address, and per account name, within "
      "`smtp_auth_failure_window`; beyond it AUTH gets 454 4.7.0 without checking the password." },
    { "smtp_auth_failure_window", SETTING_DURATION, OFF(smtp_auth_failure_window), 0, "5m",
      1, DAY, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "SMTP AUTH",
      "The window in which failed AUTH attempts are counted (see `smtp_auth_max_failures`)." },
    /* --- outbound TLS policies and MTA-STS (issue 6) --- */
    { "tls_ca_file", SETTING_PATH, OFF(tls_ca_file), 0, "", 0, 0, 0, 0, NULL, NULL, 0,
      "Outbound TLS",
      "PEM file of the certificate authorities Moat trusts when it verifies a mail server "
      "(TLS policies `verify` and `mta-sts`, strict routes, probes) or an MTA-STS policy "
      "server. Empty means the system trust store." },
    { "mta_sts_port", SETTING_INT, OFF(mta_sts_port), 0, "443", 1, 65535, 0, 0, NULL, NULL, 0,
      "Outbound TLS",
      "TCP port of the HTTPS server that publishes a domain's MTA-STS policy "
      "(RFC 8461: 443). Change it only in test setups." },
    { "mta_sts_fetch_timeout", SETTING_DURATION, OFF(mta_sts_fetch_timeout), 0, "30s", 1, 300,
      0, 0, NULL, NULL, 0,
      "Outbound TLS",
      "Longest time one MTA-STS policy fetch (connect, TLS, the whole answer) may take; a "
      "fetch that fails keeps an unexpired cached policy in force (RFC 8461 5.1)." },
    { "dns_trust_anchor_file", SETTING_PATH, OFF(dns_trust_anchor_file), 0, "", 0, 0, 0, 0, NULL, NULL, 0,
      "DNSSEC",
      "DNSSEC trust anchor for Moat's own validation (libunbound): a file of DS or DNSKEY "
      "records, one per line (`;` starts a comment), e.g. `/usr/share/dns/root.key` (Debian "
      "package dns-root-data). It is read at start, before privileges are dropped; an unreadable "
      "file or a line that is not a DS/DNSKEY record stops moatd with an error. Needed for DANE "
      "(TLS policy mode `dane`): only answers validated against this anchor count as secure. "
      "Empty (the default) means no anchor: no answer is secure and DANE never applies, the "
      "policy's fallback mode is used. With `resolver` set, the resolver must pass DNSSEC "
      "records through (any recursive resolver does); Moat validates them itself." },
    /* --- DNSBL and rspamd (issue 7) --- */
    { "dnsbl_threshold", SETTING_INT, OFF(dnsbl_threshold), 0, "1", 1, 10000, 0, 0, NULL, NULL,
      SETTING_RUNTIME,
      "Screening",
      "DNSBL: inbound mail is refused (554 5.7.1, at the first RCPT) when the weights of the "
      "DNSBL zones that list the client add up to this or more. Zones are configured with "
      "`moat dnsbl add ZONE --weight N`; without zones no DNSBL is asked. Permitted senders and "
      "the outbound role are never checked. An answer in 127.255.255.0/24 (a blocklist's error "
      "code), SERVFAIL or a timeout means \"could not check\", never \"listed\"." },
    { "dnsbl_hold_threshold", SETTING_INT, OFF(dnsbl_hold_threshold), 0, "0", 0, 10000, 0, 0,
      NULL, NULL, SETTING_RUNTIME,
      "Screening",
      "DNSBL: when not 0 and below `dnsbl_threshold`, mail whose client scores this or more "
      "(but less than `dnsbl_threshold`) is accepted and held (quarantined) instead of refused. "
      "0 = no holding." },
    { "dnsbl_timeout", SETTING_DURATION, OFF(dnsbl_timeout), 0, "10s", 1, 120, 0, 0, NULL, NULL,
      SETTING_RUNTIME,
      "Screening",
      "DNSBL: the longest the first RCPT waits for the blocklists' answers (queries start when "
      "the client connects); a zone that has not answered by then counts as \"could not check\"." },
    { "rspamd_url", SETTING_STRING, OFF(rspamd_url), 0, "", 0, 0, 0, 0, NULL, check_rspamd_url,
      SETTING_RUNTIME,
      "Screening",
      "Base URL of an rspamd normal worker (e.g. `http://127.0.0.1:11333`): inbound messages "
      "are sent to its `/checkv2` at the end of DATA and its action decides (no action, add "
      "header, rewrite subject: accept with X-Spam-Status/X-Spam-Score; greylist, soft reject: "
      "451 4.7.1; reject: 550 5.7.1 or hold, see `rspamd_hold_action`). Empty = no rspamd. "
      "Permitted senders and the outbound role are not scanned." },
    { "rspamd_timeout", SETTING_DURATION, OFF(rspamd_timeout), 0, "15s", 1, 300, 0, 0, NULL, NULL,
      SETTING_RUNTIME,
      "Screening",
      "The longest one rspamd scan (connect, upload, answer) may take before rspamd counts "
      "as unreachable (see `rspamd_unreachable`)." },
    { "rspamd_unreachable", SETTING_ENUM, OFF(rspamd_unreachable), 0, "tempfail", 0, 0, 0, 0,
      "tempfail|accept", NULL, SETTING_RUNTIME,
      "Screening",
      "What happens when rspamd cannot be reached, times out, or answers an HTTP error or "
      "something that is not a scan result: `tempfail` (451 4.7.0, the sender retries) or "
      "`accept` (the message is accepted unscanned, with a warning in the log)." },
    { "rspamd_hold_action", SETTING_ENUM, OFF(rspamd_hold_action), 0, "none", 0, 0, 0, 0,
      "none|reject|add_header", NULL, SETTING_RUNTIME,
      "Screening",
      "Which rspamd actions hold (quarantine) the message instead: `none` (reject is refused "
      "with 550 5.7.1), `reject` (reject is held), `add_header` (reject, add header and "
      "rewrite subject are all held)." },
    /* --- anti-spoofing (issue 7) --- */
    { "antispoof", SETTING_BOOL, OFF(antispoof), 0, "yes", 0, 0, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "Anti-spoofing",
      "Refuse inbound mail that claims to come from one of your own domains: an envelope "
      "sender (MAIL FROM) under an internal domain gets 550 5.7.1 at the first RCPT, a header "
      "From under an internal domain gets 550 5.7.1 at the end of DATA. Mail from authorised "
      "outbound hosts and authenticated sessions is not inbound mail and is not checked. "
      "Outside services that send in your name are excepted with bypasses "
      "(`moat antispoof bypass add`: by address range, by forward-confirmed host name, or by "
      "SPF pass); refused sources are listed by `moat antispoof candidates`." },
    { "antispoof_candidates_max", SETTING_INT, OFF(antispoof_candidates_max), 0, "256", 1, 10000,
      0, 0, NULL, NULL, 0,
      "Anti-spoofing",
      "How many refused sources (client addresses) the anti-spoofing candidate list keeps in "
      "memory; when full, the source seen least recently is forgotten." },
    /* --- permitted senders and greylisting (issue 7) --- */
    { "permitted_auto_allow", SETTING_BOOL, OFF(permitted_auto_allow), 0, "yes", 0, 0, 0, 0,
      NULL, NULL, SETTING_RUNTIME,
      "Screening",
      "Auto-allow: when the outbound role relays a message from an internal sender, each "
      "external recipient becomes a permitted sender for that internal user (or is refreshed). "
      "Auto-replies (null sender, `Auto-Submitted` other than `no`, `Precedence: "
      "bulk|junk|list`, `X-Autoreply`) teach nothing." },
    { "permitted_auto_lifetime", SETTING_DURATION, OFF(permitted_auto_lifetime), 0, "120d",
      DAY, 3650 * DAY, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "Screening",
      "An auto-allowed permitted sender expires this long after the user last wrote to it." },
    { "greylisting", SETTING_BOOL, OFF(greylisting), 0, "yes", 0, 0, 0, 0, NULL, NULL,
      SETTING_RUNTIME,
      "Screening",
      "Greylist inbound mail: the first attempt of an unknown (client network, sender, "
      "recipient) triplet gets `451 4.7.1` at RCPT; a retry between `greylist_min_delay` and "
      "`greylist_max_delay` later is accepted and the triplet is remembered. Permitted senders, "
      "authorised outbound hosts and authenticated clients are never greylisted. The client "
      "network is the /24 (IPv4) or /64 (IPv6)." },
    { "greylist_min_delay", SETTING_DURATION, OFF(greylist_min_delay), 0, "5m", 0, DAY,
      0, 0, NULL, NULL, SETTING_RUNTIME,
      "Screening",
      "Greylisting: a retry earlier than this after the first attempt is greylisted again." },
    { "greylist_max_delay", SETTING_DURATION, OFF(greylist_max_delay), 0, "2d", MINUTE,
      30 * DAY, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "Screening",
      "Greylisting: a retry later than this after the first attempt starts over as a new "
      "triplet." },
    { "greylist_pass_lifetime", SETTING_DURATION, OFF(greylist_pass_lifetime), 0, "36d", HOUR,
      365 * DAY, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "Screening",
      "Greylisting: a passed triplet is accepted without delay for this long after its last "
      "use (kept in the database across restarts)." },
    { "greylist_max_entries", SETTING_INT, OFF(greylist_max_entries), 0, "200000", 100,
      10000000, 0, 0, NULL, NULL, 0,
      "Screening",
      "Greylisting: triplets kept in memory; beyond it the oldest pending triplet is "
      "forgotten first (its sender starts over), then the least recently used passed one." },
    { "test_clock_file", SETTING_PATH, OFF(test_clock_file), 0, "", 0, 0, 0, 0, NULL, NULL, 0,
      "Screening",
      "TEST ONLY, never set it in production: a file holding a number of seconds added to "
      "the clock of greylisting and permitted-sender expiry, read at each check. Empty (the "
      "default) means the real clock." },
    { "held_lifetime", SETTING_DURATION, OFF(held_lifetime), 0, "30d",
      1, 365 * DAY, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "Held mail",
      "How long a held (quarantined) message is kept for an administrator to release or "
      "delete; after that it is dropped without a bounce (logged as event=held_purged). "
      "Checked every minute, or more often for a short lifetime." },
    /* --- the content stage: SPF, DKIM, DMARC (issue 7) --- */
    { "spf_check", SETTING_BOOL, OFF(spf_check), 0, "yes", 0, 0, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "Screening",
      "Evaluate SPF (RFC 7208) for inbound mail, for the MAIL FROM domain (the HELO name for "
      "the null sender), after the end of DATA; the result goes into the Authentication-Results "
      "header and feeds DMARC. Never for the outbound role." },
    { "spf_fail_action", SETTING_ENUM, OFF(spf_fail_action), 0, "none", 0, 0, 0, 0,
      "none|reject", NULL, SETTING_RUNTIME,
      "Screening",
      "What an SPF `fail` alone does: `none` (the default: DMARC decides) or `reject` "
      "(550 5.7.23). `softfail`, `temperror` and the others never refuse." },
    { "dkim_verify", SETTING_BOOL, OFF(dkim_verify), 0, "yes", 0, 0, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "Screening",
      "Verify the DKIM signatures (RFC 6376) of inbound mail; each result goes into the "
      "Authentication-Results header and feeds DMARC." },
    { "dkim_max_signatures", SETTING_INT, OFF(dkim_max_signatures), 0, "5", 1, 16, 0, 0, NULL, NULL,
      SETTING_RUNTIME,
      "Screening",
      "Most DKIM signatures verified per message (each costs a key lookup); further signatures "
      "are ignored." },
    { "dmarc_check", SETTING_BOOL, OFF(dmarc_check), 0, "yes", 0, 0, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "Screening",
      "Apply the DMARC policy (RFC 7489) of the header From domain to inbound mail: `p=reject` "
      "refuses with 550 5.7.1, `p=quarantine` holds the message, `p=none` accepts; `pct` "
      "samples as the RFC says. A DNS error is `temperror` and never refuses." },
    { "dmarc_psl_file", SETTING_PATH, OFF(dmarc_psl_file), 0,
      "/usr/share/publicsuffix/public_suffix_list.dat", 0, 0, 0, 0, NULL, NULL, 0,
      "Screening",
      "The public suffix list DMARC uses to find organizational domains (Debian package "
      "publicsuffix). Read once, at the first DMARC check." },
    { "screen_max_size", SETTING_SIZE, OFF(screen_max_size), 0, "10M", 64 * KiB, 100 * MiB,
      0, 0, NULL, NULL, SETTING_RUNTIME,
      "Screening",
      "Largest message kept in memory for the content checks; a larger message is still "
      "accepted, but the checks that need the message (DKIM) are skipped and the "
      "X-Moat-Verdict header says so." },
    { "content_timeout", SETTING_DURATION, OFF(content_timeout), 0, "60s", 1, 10 * MINUTE,
      0, 0, NULL, NULL, SETTING_RUNTIME,
      "Screening",
      "Longest time the content checks of one message may take after the end of DATA (the "
      "client waits for its final reply); then `content_timeout_action` applies." },
    { "content_timeout_action", SETTING_ENUM, OFF(content_timeout_action), 0, "tempfail", 0, 0, 0, 0,
      "tempfail|accept", NULL, SETTING_RUNTIME,
      "Screening",
      "What happens when the content checks exceed `content_timeout`: `tempfail` (451 4.7.1, "
      "the sender retries) or `accept` (queued without their headers)." },
    { "content_dns_timeout", SETTING_DURATION, OFF(content_dns_timeout), 0, "5s", 1, 60,
      0, 0, NULL, NULL, SETTING_RUNTIME,
      "Screening",
      "Longest time one DNS lookup of a content check (SPF, DKIM key, DMARC record) may take; "
      "then the check's result is `temperror`." },
    /* --- the archive and journaling (issue 8) --- */
    { "archive", SETTING_BOOL, OFF(archive), 0, "yes", 0, 0, 0, 0, NULL, NULL, 0,
      "Archive",
      "Archive every accepted message (inbound, outbound, and journal reports from authorised "
      "journal sources): compressed, full-text indexed and searchable. A message stays in the "
      "spool until it is archived. `no` archives nothing and the spool does not wait; mail to "
      "the journal address is then refused (550 5.7.1), since nothing would keep it. Read at "
      "start." },
    { "archive_database", SETTING_PATH, OFF(archive_database), 0, "", 0, 0, 0, 0, NULL, NULL, 0,
      "Archive",
      "SQLite database of the archive (messages, their arrivals, the full-text index), "
      "separate from `database` so a long ingest never holds up configuration changes. Empty "
      "means `STATE/archive.db`. Size it for `archive_retention` worth of mail." },
    { "archive_retention", SETTING_DURATION, OFF(archive_retention), 0, "2557d",
      DAY, 36525 * DAY, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "Archive",
      "How long archived mail is kept (from its latest arrival); older messages are purged "
      "every `archive_purge_interval`, except those of addresses under legal hold. The "
      "default is 7 years." },
    { "archive_max_parse", SETTING_SIZE, OFF(archive_max_parse), 0, "10M", 64 * KiB, 1 * GiB,
      0, 0, NULL, NULL, SETTING_RUNTIME,
      "Archive",
      "Octets of a message parsed for the index (text, attachment names); the whole message "
      "is archived whatever its size, a larger one is indexed only up to here." },
    { "archive_max_text", SETTING_SIZE, OFF(archive_max_text), 0, "1M", 4 * KiB, 64 * MiB,
      0, 0, NULL, NULL, SETTING_RUNTIME,
      "Archive",
      "Octets of extracted text indexed per message." },
    { "archive_mime_max_depth", SETTING_INT, OFF(archive_mime_max_depth), 0, "16", 1, 64,
      0, 0, NULL, NULL, SETTING_RUNTIME,
      "Archive",
      "MIME nesting levels the indexer descends into (attached messages count)." },
    { "archive_mime_max_parts", SETTING_INT, OFF(archive_mime_max_parts), 0, "1000", 1, 100000,
      0, 0, NULL, NULL, SETTING_RUNTIME,
      "Archive",
      "MIME parts the indexer visits per message." },
    { "archive_purge_interval", SETTING_DURATION, OFF(archive_purge_interval), 0, "1h",
      1, DAY, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "Archive",
      "How often retention runs (messages older than `archive_retention` are purged)." },
    /* --- message tracking (issue 11) --- */
    { "tracking", SETTING_BOOL, OFF(tracking), 0, "yes", 0, 0, 0, 0, NULL, NULL, 0,
      "Tracking",
      "Keep a record of what happened to every message (connection, verdicts, queueing, each "
      "delivery attempt, release, deletion) in `tracking_database`, searchable through the "
      "API and `moat track`. Events are written in batches by a thread of their own; when "
      "the database cannot keep up, events are dropped (and counted), never the mail. Read "
      "at start." },
    { "tracking_database", SETTING_PATH, OFF(tracking_database), 0, "", 0, 0, 0, 0, NULL, NULL,
      0,
      "Tracking",
      "SQLite database of message tracking, separate from `database` so that events never "
      "hold up configuration changes; written with synchronous=NORMAL (a power cut may lose "
      "the last events, never the file). Empty means `STATE/tracking.db`." },
    { "tracking_retention", SETTING_DURATION, OFF(tracking_retention), 0, "30d",
      HOUR, 3660 * DAY, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "Tracking",
      "How long a message's record is kept after its last event; older ones are purged "
      "every `tracking_purge_interval`." },
    { "tracking_max_size", SETTING_SIZE, OFF(tracking_max_size), 0, "1G", MiB, 1024 * GiB,
      0, 0, NULL, NULL, SETTING_RUNTIME,
      "Tracking",
      "Most octets the tracking records may take in `tracking_database`; beyond it the "
      "oldest messages are purged first (at each `tracking_purge_interval`). Freed space is "
      "reused; the file does not shrink much." },
    { "tracking_purge_interval", SETTING_DURATION, OFF(tracking_purge_interval), 0, "1h",
      1, DAY, 0, 0, NULL, NULL, SETTING_RUNTIME,
      "Tracking",
      "How often tracking records beyond `tracking_retention` or `tracking_max_size` are "
      "purged." },
    /* --- metrics (issue 11) --- */
    { "metrics_allow", SETTING_STRING, OFF(metrics_allow), 0, "127.0.0.0/8,::1", 0, 0, 0, 0,
      NULL, check_cidr_list, 0,
      "Metrics",
      "Comma-separated address ranges (CIDR) whose clients may read `/metrics` on the HTTP "
      "listeners without a token. Any other client must send `Authorization: Bearer TOKEN` "
      "with the metrics token (`moat metrics token`), or gets 403. Empty: the token only. "
      "Read at start." },
};

#define N_SETTINGS (sizeof settings_table / sizeof settings_table[0])
_Static_assert(N_SETTINGS <= SETTINGS_MAX_ROWS, "raise SETTINGS_MAX_ROWS in settings.h");

static const char *const type_names[] = {
    [SETTING_STRING] = "string",
    [SETTING_PATH] = "path",
    [SETTING_INT] = "integer",
    [SETTING_SIZE] = "size",
    [SETTING_DURATION] = "duration",
    [SETTING_BOOL] = "boolean",
    [SETTING_ENUM] = "one of",
    [SETTING_HOSTPORTS] = "list of address:port",
    [SETTING_DURATIONS] = "list of durations",
};

/* --- field access --- */

static char **field_str(struct moat_settings *s, const struct setting *st)
{
    return (char **)((char *)s + st->offset);
}

static int64_t *field_int(struct moat_settings *s, const struct setting *st)
{
    return (int64_t *)((char *)s + st->offset);
}

static int *field_count(struct moat_settings *s, const struct setting *st)
{
    return (int *)((char *)s + st->count_offset);
}

static const struct setting *setting_find(const char *name)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (strcmp(settings_table[i].name, name) == 0)
            return &settings_table[i];
    return NULL;
}

/* --- number syntax --- */

/* parse_number - decimal digits with an optional one-letter suffix from units;
 * mult[] gives the multiplier of each suffix letter */
static int parse_number(const char *s, const char *units, const int64_t *mult,
                        int64_t bare_mult, int64_t *out)
{
    const char *p = s;
    int64_t v = 0;

    if (!isdigit((unsigned char)*p))
        return -1;
    for (; isdigit((unsigned char)*p); p++) {
        int d = *p - '0';
        if (v > (INT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    int64_t m = bare_mult;
    if (*p != '\0') {
        const char *u = strchr(units, *p);
        if (u == NULL || p[1] != '\0')
            return -1;
        m = mult[u - units];
    }
    if (v != 0 && v > INT64_MAX / m)
        return -1;
    *out = v * m;
    return 0;
}

/* settings_parse_duration - "30", "30s", "5m", "4h", "5d" -> seconds */
int settings_parse_duration(const char *s, int64_t *out)
{
    static const int64_t mult[] = { 1, MINUTE, HOUR, DAY };
    return parse_number(s, "smhd", mult, 1, out);
}

/* settings_parse_size - "1000", "10k", "35M", "1G" -> octets (binary multiples) */
int settings_parse_size(const char *s, int64_t *out)
{
    static const int64_t mult[] = { KiB, KiB, MiB, MiB, GiB, GiB };
    return parse_number(s, "kKmMgG", mult, 1, out);
}

/* format_duration - the largest unit that divides v exactly ("90s", "5m", "4h") */
static void format_duration(char *dst, size_t size, int64_t v)
{
    if (v != 0 && v % DAY == 0)
        xsnprintf(dst, size, "%" PRId64 "d", v / DAY);
    else if (v != 0 && v % HOUR == 0)
        xsnprintf(dst, size, "%" PRId64 "h", v / HOUR);
    else if (v != 0 && v % MINUTE == 0)
        xsnprintf(dst, size, "%" PRId64 "m", v / MINUTE);
    else
        xsnprintf(dst, size, "%" PRId64 "s", v);
}

/* format_size - the largest binary unit that divides v exactly ("35M", "16k") */
static void format_size(char *dst, size_t size, int64_t v)
{
    if (v != 0 && v % GiB == 0)
        xsnprintf(dst, size, "%" PRId64 "G", v / GiB);
    else if (v != 0 && v % MiB == 0)
        xsnprintf(dst, size, "%" PRId64 "M", v / MiB);
    else if (v != 0 && v % KiB == 0)
        xsnprintf(dst, size, "%" PRId64 "k", v / KiB);
    else
        xsnprintf(dst, size, "%" PRId64, v);
}

static void format_value(const struct setting *st, char *dst, size_t size, int64_t v)
{
    if (st->type == SETTING_SIZE)
        format_size(dst, size, v);
    else if (st->type == SETTING_DURATION || st->type == SETTING_DURATIONS)
        format_duration(dst, size, v);
    else
        xsnprintf(dst, size, "%" PRId64, v);
}

/* --- host:port syntax --- */

static bool host_name_syntax(const char *h, size_t len)
{
    size_t label = 0;

    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)h[i];
        if (c == '.') {
            if (label == 0 || h[i - 1] == '-')
                return false;
            label = 0;
        } else if (isalnum(c) || c == '-') {
            if (label == 0 && c == '-')
                return false;
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return label > 0 && h[len - 1] != '-';
}

static int parse_port(const char *p, int *port)
{
    int64_t v;
    static const int64_t none[] = { 0 };
    if (parse_number(p, "", none, 1, &v) < 0 || v < 1 || v > 65535)
        return -1;
    *port = (int)v;
    return 0;
}

/* settings_parse_hostport - "127.0.0.1:25", "[::1]:25", "host:25"; host malloc'd.
 * IPv6 needs brackets: "::1:25" is itself an address, so it would be ambiguous. */
int settings_parse_hostport(const char *s, char **host, int *port)
{
    const char *h, *colon;
    size_t hlen;
    char tmp[INET6_ADDRSTRLEN + 8];

    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return -1;
        h = s + 1;
        hlen = (size_t)(close - h);
        if (hlen == 0 || hlen >= sizeof tmp)
            return -1;
        memcpy(tmp, h, hlen);
        tmp[hlen] = '\0';
        struct in6_addr a6;
        if (inet_pton(AF_INET6, tmp, &a6) != 1)
            return -1;
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL)
            return -1;
        h = s;
        hlen = (size_t)(colon - s);
        if (hlen == 0)
            return -1;
        /* a name or a dotted quad: both are LDH-and-dots syntax */
        if (!host_name_syntax(h, hlen))
            return -1;
    }
    if (parse_port(colon + 1, port) < 0)
        return -1;
    *host = xstrndup(h, hlen);
    return 0;
}

/* --- extra checks for string settings --- */

/* check_rspamd_url - empty, or http(s)://HOST[:PORT][/PATH] without spaces or controls */
static int check_rspamd_url(const char *value, char *why, size_t whysize)
{
    if (*value == '\0')
        return 0;
    const char *rest = NULL;
    if (strncmp(value, "http://", 7) == 0)
        rest = value + 7;
    else if (strncmp(value, "https://", 8) == 0)
        rest = value + 8;
    if (rest == NULL || *rest == '\0' || *rest == '/' || strlen(value) > 512) {
        snprintf(why, whysize, "expected http://HOST:PORT (at most 512 characters), e.g. "
                 "http://127.0.0.1:11333");
        return -1;
    }
    for (const char *p = value; *p; p++)
        if ((unsigned char)*p <= 32 || (unsigned char)*p >= 127) {
            snprintf(why, whysize, "the URL contains a space or a control character");
            return -1;
        }
    return 0;
}

/* check_resolver - an IP literal, optionally with a port (":53", "@53", "[v6]:53") */
static int check_resolver(const char *value, char *why, size_t whysize)
{
    char addr[INET6_ADDRSTRLEN + 8];
    struct in_addr a4;
    struct in6_addr a6;
    const char *port = NULL;

    if (*value == '\0')
        return 0;
    if (value[0] == '[') {
        const char *close = strchr(value, ']');
        if (close == NULL || (close[1] != '\0' && close[1] != ':' && close[1] != '@'))
            goto bad;
        if (str_copy(addr, sizeof addr, value + 1) < 0)
            goto bad;
        addr[close - value - 1] = '\0';
        if (inet_pton(AF_INET6, addr, &a6) != 1)
            goto bad;
        port = close[1] ? close + 2 : NULL;
    } else {
        if (str_copy(addr, sizeof addr, value) < 0)
            goto bad;
        char *at = strchr(addr, '@');
        if (at == NULL && inet_pton(AF_INET6, addr, &a6) == 1)
            return 0;   /* bare IPv6 address, no port */
        if (at == NULL)
            at = strchr(addr, ':');
        if (at != NULL) {
            *at = '\0';
            port = value + (at - addr) + 1;
        }
        if (inet_pton(AF_INET, addr, &a4) != 1 && inet_pton(AF_INET6, addr, &a6) != 1)
            goto bad;
    }
    int p;
    if (port != NULL && parse_port(port, &p) < 0)
        goto bad;
    return 0;
bad:
    xsnprintf(why, whysize, "expected an IP address with an optional port "
              "(127.0.0.1, 127.0.0.1:53, 127.0.0.1@53, [::1]:53)");
    return -1;
}

/* check_hostname - empty (use gethostname) or a DNS name */
static int check_hostname(const char *value, char *why, size_t whysize)
{
    if (*value == '\0' || host_name_syntax(value, strlen(value)))
        return 0;
    xsnprintf(why, whysize, "expected a host name made of letters, digits, hyphens and dots");
    return -1;
}

/* check_user - a plausible POSIX user name */
static int check_user(const char *value, char *why, size_t whysize)
{
    size_t n = strlen(value);
    bool ok = n > 0 && n <= 32 && value[0] != '-';
    for (size_t i = 0; ok && i < n; i++) {
        unsigned char c = (unsigned char)value[i];
        ok = isalnum(c) || c == '_' || c == '-' || c == '.';
    }
    if (ok)
        return 0;
    xsnprintf(why, whysize, "expected a user name (letters, digits, '_', '-', '.')");
    return -1;
}

/* --- applying one value --- */

/* trim - strip ASCII white space at both ends, in place */
static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        s[--n] = '\0';
    return s;
}

static bool has_controls(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* check_range - value against the row's min and max, message in the row's units */
static int check_range(const struct setting *st, const char *where, const char *shown,
                       int64_t v, struct error *err)
{
    char lim[64];

    if (v < st->min) {
        format_value(st, lim, sizeof lim, st->min);
        error_set(err, st->name, "%s%s: %s is below the minimum %s", where, st->name, shown, lim);
        return -1;
    }
    if (v > st->max) {
        format_value(st, lim, sizeof lim, st->max);
        error_set(err, st->name, "%s%s: %s is above the maximum %s", where, st->name, shown, lim);
        return -1;
    }
    return 0;
}

static const char *type_hint(enum setting_type t)
{
    switch (t) {
    case SETTING_INT: return "expected a whole number";
    case SETTING_SIZE: return "expected a size in octets, optionally with a k, M or G suffix";
    case SETTING_DURATION: return "expected a duration: a number with an s, m, h or d suffix";
    case SETTING_BOOL: return "expected yes or no";
    default: return "invalid value";
    }
}

static void free_list(struct moat_settings *s, const struct setting *st)
{
    if (st->type == SETTING_HOSTPORTS) {
        char **arr = field_str(s, st);
        for (int i = 0; i < *field_count(s, st); i++) {
            free(arr[i]);
            arr[i] = NULL;
        }
    }
    *field_count(s, st) = 0;
}

/* apply_list - a comma-separated list; all-or-nothing */
static int apply_list(struct moat_settings *s, const struct setting *st, const char *value,
                      const char *where, struct error *err)
{
    char *copy = xstrdup(value);
    char *items[SETTINGS_MAX_RETRY > SETTINGS_MAX_LISTEN ? SETTINGS_MAX_RETRY : SETTINGS_MAX_LISTEN];
    int64_t nums[sizeof items / sizeof items[0]];
    int n = 0, rc = -1;

    if (*trim(copy) != '\0') {
        /* strtok_r would merge ",,"; an empty element is a mistake worth reporting */
        char *p = copy;
        for (;;) {
            char *comma = strchr(p, ',');
            if (comma)
                *comma = '\0';
            char *item = trim(p);
            if (*item == '\0') {
                error_set(err, st->name, "%s%s: empty element in the list", where, st->name);
                goto out;
            }
            if (n >= st->max_items) {
                error_set(err, st->name, "%s%s: more than %d elements", where, st->name,
                          st->max_items);
                goto out;
            }
            items[n++] = item;
            if (!comma)
                break;
            p = comma + 1;
        }
    }
    if (n < st->min_items) {
        error_set(err, st->name, "%s%s: needs at least %d element%s", where, st->name,
                  st->min_items, st->min_items == 1 ? "" : "s");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        if (st->type == SETTING_HOSTPORTS) {
            char *host;
            int port;
            if (settings_parse_hostport(items[i], &host, &port) < 0) {
                error_set(err, st->name, "%s%s: \"%s\" is not ADDRESS:PORT "
                          "(IPv6 as [ADDRESS]:PORT, port 1..65535)", where, st->name, items[i]);
                goto out;
            }
            free(host);
        } else {
            if (settings_parse_duration(items[i], &nums[i]) < 0) {
                error_set(err, st->name, "%s%s: \"%s\": %s", where, st->name, items[i],
                          type_hint(SETTING_DURATION));
                goto out;
            }
            if (check_range(st, where, items[i], nums[i], err) < 0)
                goto out;
        }
    }
    free_list(s, st);
    for (int i = 0; i < n; i++) {
        if (st->type == SETTING_HOSTPORTS)
            field_str(s, st)[i] = xstrdup(items[i]);
        else
            field_int(s, st)[i] = nums[i];
    }
    *field_count(s, st) = n;
    rc = 0;
out:
    free(copy);
    return rc;
}

/* apply - parse value for st and store it; where prefixes messages ("moat.conf:12: ") */
static int apply(struct moat_settings *s, const struct setting *st, const char *value,
                 const char *where, struct error *err)
{
    char why[256];
    int64_t v;

    if (has_controls(value)) {
        error_set(err, st->name, "%s%s: the value contains control characters", where, st->name);
        return -1;
    }
    switch (st->type) {
    case SETTING_PATH:
        if (*value != '\0' && *value != '/') {
            error_set(err, st->name, "%s%s: \"%s\" is not an absolute path", where, st->name,
                      value);
            return -1;
        }
        if (strlen(value) >= PATH_MAX) {
            error_set(err, st->name, "%s%s: the path is longer than %d octets", where, st->name,
                      PATH_MAX - 1);
            return -1;
        }
        /* fall through */
    case SETTING_STRING:
        if (st->check && st->check(value, why, sizeof why) < 0) {
            error_set(err, st->name, "%s%s: \"%s\": %s", where, st->name, value, why);
            return -1;
        }
        free(*field_str(s, st));
        *field_str(s, st) = xstrdup(value);
        return 0;
    case SETTING_ENUM: {
        size_t n = strlen(value);
        const char *c = st->choices;
        while (c) {
            const char *bar = strchr(c, '|');
            size_t len = bar ? (size_t)(bar - c) : strlen(c);
            if (len == n && strncmp(c, value, n) == 0) {
                free(*field_str(s, st));
                *field_str(s, st) = xstrdup(value);
                return 0;
            }
            c = bar ? bar + 1 : NULL;
        }
        char list[128];
        str_copy(list, sizeof list, st->choices);
        for (char *p = list; *p; p++)
            if (*p == '|')
                *p = ',';
        error_set(err, st->name, "%s%s: \"%s\" is not one of %s", where, st->name, value, list);
        return -1;
    }
    case SETTING_BOOL: {
        bool b;
        if (str_ieq(value, "yes") || str_ieq(value, "true") || str_ieq(value, "on") ||
            strcmp(value, "1") == 0)
            b = true;
        else if (str_ieq(value, "no") || str_ieq(value, "false") || str_ieq(value, "off") ||
                 strcmp(value, "0") == 0)
            b = false;
        else {
            error_set(err, st->name, "%s%s: \"%s\": %s", where, st->name, value,
                      type_hint(st->type));
            return -1;
        }
        *(bool *)((char *)s + st->offset) = b;
        return 0;
    }
    case SETTING_INT:
    case SETTING_SIZE:
    case SETTING_DURATION: {
        int r;
        if (st->type == SETTING_INT) {
            static const int64_t none[] = { 0 };
            r = parse_number(value, "", none, 1, &v);
        } else if (st->type == SETTING_SIZE) {
            r = settings_parse_size(value, &v);
        } else {
            r = settings_parse_duration(value, &v);
        }
        if (r < 0) {
            error_set(err, st->name, "%s%s: \"%s\": %s", where, st->name, value,
                      type_hint(st->type));
            return -1;
        }
        if (check_range(st, where, value, v, err) < 0)
            return -1;
        *field_int(s, st) = v;
        return 0;
    }
    case SETTING_HOSTPORTS:
    case SETTING_DURATIONS:
        return apply_list(s, st, value, where, err);
    }
    return -1;
}

/* forget_store - row idx no longer holds a store value (the caller sets the field) */
static void forget_store(struct moat_settings *s, size_t idx)
{
    free(s->below_store_[idx]);
    s->below_store_[idx] = NULL;
    s->from_store_[idx] = false;
}

/* settings_defaults - fill s with every default (paths derived from state_dir later) */
void settings_defaults(struct moat_settings *s)
{
    struct error err;

    memset(s, 0, sizeof *s);
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (apply(s, &settings_table[i], settings_table[i].def, "default: ", &err) < 0)
            log_fatal("event=settings_table_bug error=\"%s\"", err.msg);
}

/* settings_set - one "key=value" or key + value (command-line override) */
int settings_set(struct moat_settings *s, const char *key, const char *value, struct error *err)
{
    char name[64];
    const char *val = value;

    memset(err, 0, sizeof *err);
    if (value == NULL) {
        const char *eq = strchr(key, '=');
        if (eq == NULL) {
            error_set(err, "", "\"%s\": expected key=value", key);
            return -1;
        }
        size_t n = (size_t)(eq - key);
        while (n > 0 && (key[n - 1] == ' ' || key[n - 1] == '\t'))
            n--;
        if (n >= sizeof name) {
            error_set(err, "", "\"%.*s\": unknown setting", (int)(n > 64 ? 64 : n), key);
            return -1;
        }
        memcpy(name, key, n);
        name[n] = '\0';
        val = eq + 1;
        while (*val == ' ' || *val == '\t')
            val++;
    } else if (str_copy(name, sizeof name, key) < 0) {
        error_set(err, "", "\"%.64s\": unknown setting", key);
        return -1;
    }
    const struct setting *st = setting_find(name);
    if (st == NULL) {
        error_set(err, name, "%s: unknown setting", name);
        return -1;
    }
    char *copy = xstrdup(val);
    int rc = apply(s, st, trim(copy), "", err);
    free(copy);
    if (rc == 0) {
        size_t idx = (size_t)(st - settings_table);
        forget_store(s, idx);
        s->src_[idx] = SETTINGS_SOURCE_COMMAND_LINE;
    }
    return rc;
}

/* read_line - one line without its LF into buf: 1 read, 0 end of file,
 * -1 longer than the buffer, -2 a NUL octet (would silently cut the line) */
static int read_line(FILE *f, char *buf, size_t size)
{
    size_t n = 0;
    int c;

    while ((c = getc(f)) != EOF && c != '\n') {
        if (c == '\0')
            return -2;
        if (n + 1 >= size)
            return -1;
        buf[n++] = (char)c;
    }
    if (c == EOF && n == 0)
        return 0;
    buf[n] = '\0';
    return 1;
}

/* settings_load_file - parse path; missing file is an error only if required */
int settings_load_file(struct moat_settings *s, const char *path, bool required,
                       struct error *err)
{
    char line[SETTINGS_MAX_LINE + 1];
    char where[PATH_MAX + 32];
    int seen_line[N_SETTINGS];
    bool has_secret = false;
    int lineno = 0, rc = -1;

    memset(err, 0, sizeof *err);
    memset(seen_line, 0, sizeof seen_line);
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        if (errno == ENOENT && !required)
            return 0;
        error_set(err, "", "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) < 0 || !S_ISREG(sb.st_mode)) {
        error_set(err, "", "%s: not a regular file", path);
        goto out;
    }
    for (;;) {
        int r = read_line(f, line, sizeof line);
        if (r == 0)
            break;
        lineno++;
        if (r == -1) {
            error_set(err, "", "%s:%d: line longer than %d octets", path, lineno,
                      SETTINGS_MAX_LINE);
            err->line = lineno;
            goto out;
        }
        if (r == -2) {
            error_set(err, "", "%s:%d: NUL character in the line", path, lineno);
            err->line = lineno;
            goto out;
        }
        if (lineno > SETTINGS_MAX_LINES) {
            error_set(err, "", "%s:%d: more than %d lines", path, lineno, SETTINGS_MAX_LINES);
            err->line = lineno;
            goto out;
        }
        char *p = trim(line);
        if (*p == '\0' || *p == '#')
            continue;
        char *eq = strchr(p, '=');
        if (eq == NULL) {
            error_set(err, "", "%s:%d: expected \"key = value\"", path, lineno);
            err->line = lineno;
            goto out;
        }
        *eq = '\0';
        char *key = trim(p);
        char *value = trim(eq + 1);
        xsnprintf(where, sizeof where, "%s:%d: ", path, lineno);
        const struct setting *st = setting_find(key);
        if (st == NULL) {
            error_set(err, key, "%s%s: unknown setting", where, key);
            err->line = lineno;
            goto out;
        }
        size_t idx = (size_t)(st - settings_table);
        if (seen_line[idx] != 0) {
            error_set(err, key, "%s%s: already set on line %d", where, key, seen_line[idx]);
            err->line = lineno;
            goto out;
        }
        seen_line[idx] = lineno;
        if (apply(s, st, value, where, err) < 0) {
            err->line = lineno;
            goto out;
        }
        s->src_[idx] = SETTINGS_SOURCE_FILE;
        if (st->flags & SETTING_SECRET)
            has_secret = true;
    }
    if (ferror(f)) {
        error_set(err, "", "%s: read error: %s", path, strerror(errno));
        goto out;
    }
    /* CONVENTIONS.md: a file holding secrets that others can read is refused */
    if (has_secret && (sb.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        error_set(err, "", "%s: holds secrets but is accessible by group or others "
                  "(mode %04o); chmod 600 it", path, (unsigned)(sb.st_mode & 07777));
        goto out;
    }
    rc = 0;
out:
    fclose(f);
    return rc;
}

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    return xasprintf("%.*s/%s", (int)n, dir, name);
}

/* settings_finish - derive dependent paths (database, spool_dir) from state_dir, validate */
int settings_finish(struct moat_settings *s, struct error *err)
{
    memset(err, 0, sizeof *err);
    if (s->state_dir == NULL || s->state_dir[0] == '\0') {
        error_set(err, "state_dir", "state_dir: must not be empty");
        return -1;
    }
    if (s->database == NULL || s->database[0] == '\0') {
        free(s->database);
        s->database = path_join(s->state_dir, "moat.db");
    }
    if (s->spool_dir == NULL || s->spool_dir[0] == '\0') {
        free(s->spool_dir);
        s->spool_dir = path_join(s->state_dir, "spool");
    }
    if (s->archive_database == NULL || s->archive_database[0] == '\0') {
        free(s->archive_database);
        s->archive_database = path_join(s->state_dir, "archive.db");
    }
    if (s->tracking_database == NULL || s->tracking_database[0] == '\0') {
        free(s->tracking_database);
        s->tracking_database = path_join(s->state_dir, "tracking.db");
    }
    bool cert = s->tls_cert && s->tls_cert[0], key = s->tls_key && s->tls_key[0];
    if (cert != key) {
        error_set(err, cert ? "tls_key" : "tls_cert",
                  "tls_cert and tls_key must be set together (%s is empty)",
                  cert ? "tls_key" : "tls_cert");
        return -1;
    }
    cert = s->http_tls_cert && s->http_tls_cert[0];
    key = s->http_tls_key && s->http_tls_key[0];
    if (cert != key) {
        error_set(err, cert ? "http_tls_key" : "http_tls_cert",
                  "http_tls_cert and http_tls_key must be set together (%s is empty)",
                  cert ? "http_tls_key" : "http_tls_cert");
        return -1;
    }
    if (s->connect_recheck_max < s->connect_recheck_min) {
        error_set(err, "connect_recheck_max", "connect_recheck_max: must not be shorter than "
                  "connect_recheck_min");
        return -1;
    }
    enum log_level lvl;
    if (log_parse_level(s->log_level, &lvl) < 0) {
        error_set(err, "log_level", "log_level: \"%s\" is not a log level", s->log_level);
        return -1;
    }
    if (s->hostname == NULL || s->hostname[0] == '\0') {
        char host[256];
        if (gethostname(host, sizeof host) < 0) {
            error_set(err, "hostname", "hostname: gethostname failed (%s); set hostname",
                      strerror(errno));
            return -1;
        }
        host[sizeof host - 1] = '\0';
        if (!host_name_syntax(host, strlen(host))) {
            error_set(err, "hostname", "hostname: the system host name \"%.200s\" is not a valid "
                      "DNS name; set hostname in moat.conf", host);
            return -1;
        }
        free(s->hostname);
        s->hostname = xstrdup(host);
    }
    return 0;
}

/* settings_free - release every string; s is left zeroed */
void settings_free(struct moat_settings *s)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const struct setting *st = &settings_table[i];
        switch (st->type) {
        case SETTING_STRING:
        case SETTING_PATH:
        case SETTING_ENUM:
            free(*field_str(s, st));
            *field_str(s, st) = NULL;
            break;
        case SETTING_HOSTPORTS:
        case SETTING_DURATIONS:
            free_list(s, st);
            break;
        default:
            break;
        }
        free(s->below_store_[i]);
    }
    memset(s, 0, sizeof *s);
}

/* format_setting - the value of st in s, in file syntax */
static void format_setting(const struct moat_settings *s, const struct setting *st,
                           struct buf *out)
{
    struct moat_settings *m = (struct moat_settings *)s;   /* read-only use */
    char tmp[64];

    switch (st->type) {
    case SETTING_STRING:
    case SETTING_PATH:
    case SETTING_ENUM: {
        const char *v = *field_str(m, st);
        buf_append_str(out, v ? v : "");
        break;
    }
    case SETTING_BOOL:
        buf_append_str(out, *(bool *)((char *)m + st->offset) ? "yes" : "no");
        break;
    case SETTING_INT:
    case SETTING_SIZE:
    case SETTING_DURATION:
        format_value(st, tmp, sizeof tmp, *field_int(m, st));
        buf_append_str(out, tmp);
        break;
    case SETTING_HOSTPORTS:
        for (int i = 0; i < *field_count(m, st); i++) {
            if (i > 0)
                buf_append_str(out, ", ");
            buf_append_str(out, field_str(m, st)[i]);
        }
        break;
    case SETTING_DURATIONS:
        for (int i = 0; i < *field_count(m, st); i++) {
            format_value(st, tmp, sizeof tmp, field_int(m, st)[i]);
            if (i > 0)
                buf_append_str(out, ",");
            buf_append_str(out, tmp);
        }
        break;
    }
}

/* settings_print - every setting with its effective value (secrets redacted) */
void settings_print(const struct moat_settings *s, FILE *out)
{
    struct buf b;

    buf_init(&b);
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const struct setting *st = &settings_table[i];
        buf_reset(&b);
        if (st->flags & SETTING_SECRET)
            buf_append_str(&b, "(redacted)");
        else
            format_setting(s, st, &b);
        fprintf(out, "%s = %s\n", st->name, buf_cstr(&b));
    }
    buf_free(&b);
}

/* --- runtime settings --- */

/* runtime_row - the row of a runtime setting, or NULL with err naming why not */
static const struct setting *runtime_row(const char *key, struct error *err)
{
    const struct setting *st = setting_find(key);
    if (st == NULL) {
        error_set(err, key, "%.64s: unknown setting", key);
        return NULL;
    }
    if (!(st->flags & SETTING_RUNTIME)) {
        error_set(err, key, "%s: not changeable at run time: moatd reads it at start; set it "
                  "in moat.conf and restart moatd", key);
        return NULL;
    }
    return st;
}

/* settings_runtime - 1 runtime, 0 moat.conf only, -1 unknown */
int settings_runtime(const char *key)
{
    const struct setting *st = setting_find(key);
    if (st == NULL)
        return -1;
    return (st->flags & SETTING_RUNTIME) ? 1 : 0;
}

/* settings_check_runtime - validate on a scratch copy, so nothing is half-applied */
int settings_check_runtime(const char *key, const char *value, char **canonical,
                           struct error *err)
{
    struct moat_settings tmp;

    memset(err, 0, sizeof *err);
    if (canonical != NULL)
        *canonical = NULL;
    const struct setting *st = runtime_row(key, err);
    if (st == NULL)
        return -1;
    settings_defaults(&tmp);
    char *copy = xstrdup(value);
    int rc = apply(&tmp, st, trim(copy), "", err);
    free(copy);
    if (rc == 0 && canonical != NULL) {
        struct buf b;
        buf_init(&b);
        format_setting(&tmp, st, &b);
        *canonical = xstrdup(buf_cstr(&b));
        buf_free(&b);
    }
    settings_free(&tmp);
    return rc;
}

/* settings_apply_runtime - a store value over s; the command line outranks it */
int settings_apply_runtime(struct moat_settings *s, const char *key, const char *value,
                           struct error *err)
{
    if (settings_check_runtime(key, value, NULL, err) < 0)
        return -1;
    const struct setting *st = setting_find(key);
    size_t idx = (size_t)(st - settings_table);
    if (s->src_[idx] == SETTINGS_SOURCE_COMMAND_LINE)
        return 1;
    char *below = NULL;
    if (!s->from_store_[idx]) {
        struct buf b;
        buf_init(&b);
        format_setting(s, st, &b);
        below = xstrdup(buf_cstr(&b));
        buf_free(&b);
    }
    char *copy = xstrdup(value);
    int rc = apply(s, st, trim(copy), "", err);   /* checked above: cannot fail */
    free(copy);
    if (rc < 0) {
        free(below);
        return -1;
    }
    if (below != NULL) {
        s->below_store_[idx] = below;
        s->from_store_[idx] = true;
    }
    return 0;
}

/* settings_reset_runtime - back to what the store value replaced */
int settings_reset_runtime(struct moat_settings *s, const char *key, struct error *err)
{
    memset(err, 0, sizeof *err);
    const struct setting *st = runtime_row(key, err);
    if (st == NULL)
        return -1;
    size_t idx = (size_t)(st - settings_table);
    if (!s->from_store_[idx])
        return 0;
    /* the text was formatted from a valid value of this row: it parses back */
    if (apply(s, st, s->below_store_[idx], "", err) < 0)
        return -1;
    forget_store(s, idx);
    return 0;
}

size_t settings_count(void)
{
    return N_SETTINGS;
}

/* settings_describe - row i for the API: info and the effective value */
void settings_describe(const struct moat_settings *s, size_t i, struct settings_info *info,
                       struct buf *value)
{
    const struct setting *st = &settings_table[i];

    *info = (struct settings_info){
        .name = st->name, .group = st->group, .description = st->description,
        .def = st->def, .runtime = (st->flags & SETTING_RUNTIME) != 0,
        .secret = (st->flags & SETTING_SECRET) != 0,
        .source = s->from_store_[i] ? SETTINGS_SOURCE_STORE : (enum settings_source)s->src_[i],
    };
    if (info->secret)
        buf_append_str(value, "(redacted)");
    else
        format_setting(s, st, value);
}

const char *settings_source_name(enum settings_source src)
{
    switch (src) {
    case SETTINGS_SOURCE_DEFAULT: return "default";
    case SETTINGS_SOURCE_FILE: return "file";
    case SETTINGS_SOURCE_STORE: return "store";
    case SETTINGS_SOURCE_COMMAND_LINE: return "command-line";
    }
    return "default";
}

/* settings_write_reference - the Markdown settings reference (docs/settings.md) */
void settings_write_reference(FILE *out)
{
    const char *group = NULL;
    char lo[64], hi[64];

    fputs("# Settings reference (moat.conf)\n"
          "\n"
          "<!-- Generated from the settings table in src/core/settings.c; do not edit.\n"
          "     Regenerate with: MOAT_UPDATE_DOCS=1 meson test -C BUILD settings -->\n"
          "\n"
          "`moat.conf` holds only what `moatd` must know before its database opens: paths,\n"
          "listen addresses, the resolver, TLS files and resource limits. Everything else\n"
          "(domains, routes, policies, users) lives in the database and is changed with the\n"
          "`moat` command, the API or the web console.\n"
          "\n"
          "Syntax: one `key = value` per line; lines starting with `#` are comments; blank\n"
          "lines are ignored. Each key may appear once. Lists are comma-separated. Sizes are\n"
          "octets with an optional `k`, `M` or `G` suffix (powers of 1024). Durations are\n"
          "seconds with an optional `s`, `m`, `h` or `d` suffix. `moatd -o key=value`\n"
          "overrides the file; `moatd --check-config` prints every effective value of the\n"
          "file and the command line and exits with status 78 when the file has an error.\n"
          "\n"
          "## Changing settings at run time\n"
          "\n"
          "The settings marked *Changeable at run time* below are read by moatd each time\n"
          "they are used. They may also be stored in the database with\n"
          "`moat settings set KEY VALUE` (or `PATCH /api/v1/settings`): moatd validates the\n"
          "value as it would in the file, applies it at once without a restart (to the next\n"
          "SMTP session, transaction, outgoing connection or retry), keeps it across\n"
          "restarts, and records who changed what in the audit log.\n"
          "`moat settings reset KEY` drops the stored value. Every other setting belongs in\n"
          "`moat.conf` and takes effect when moatd restarts.\n"
          "\n"
          "Precedence, lowest first: the built-in default, `moat.conf`, a value stored in the\n"
          "database, `moatd -o` on the command line. `-o` is meant for tests and\n"
          "emergencies: while a key is given with `-o`, a value stored for it is kept but\n"
          "waits until moatd runs without that `-o`. `moat settings` shows each value with\n"
          "its source; `moatd --check-config` does not open the database, so it shows the\n"
          "file and command-line values only.\n", out);
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const struct setting *st = &settings_table[i];
        if (group == NULL || strcmp(group, st->group) != 0) {
            group = st->group;
            fprintf(out, "\n## %s\n", group);
        }
        fprintf(out, "\n### `%s`\n\n", st->name);
        fprintf(out, "- Type: %s", type_names[st->type]);
        if (st->type == SETTING_ENUM) {
            const char *c = st->choices;
            while (c) {
                const char *bar = strchr(c, '|');
                size_t len = bar ? (size_t)(bar - c) : strlen(c);
                fprintf(out, " `%.*s`%s", (int)len, c, bar ? "," : "");
                c = bar ? bar + 1 : NULL;
            }
        }
        fputc('\n', out);
        if (st->def[0] == '\0')
            fputs("- Default: empty\n", out);
        else
            fprintf(out, "- Default: `%s`\n", st->def);
        switch (st->type) {
        case SETTING_INT:
        case SETTING_SIZE:
        case SETTING_DURATION:
            format_value(st, lo, sizeof lo, st->min);
            format_value(st, hi, sizeof hi, st->max);
            fprintf(out, "- Range: `%s` to `%s`\n", lo, hi);
            break;
        case SETTING_DURATIONS:
            format_value(st, lo, sizeof lo, st->min);
            format_value(st, hi, sizeof hi, st->max);
            fprintf(out, "- Each element: `%s` to `%s`; %d to %d elements\n", lo, hi,
                    st->min_items, st->max_items);
            break;
        case SETTING_HOSTPORTS:
            fprintf(out, "- Elements: %d to %d\n", st->min_items, st->max_items);
            break;
        default:
            break;
        }
        if (st->flags & SETTING_RUNTIME)
            fputs("- Changeable at run time: yes (`moat settings set`)\n", out);
        fprintf(out, "\n%s\n", st->description);
    }
}

/* settings_apply_file - a runtime setting's new moat.conf value (SIGHUP,
 * settings_reload.c): below a store value it becomes what a reset returns
 * to; below the command line it waits */
int settings_apply_file(struct moat_settings *s, const char *key, const char *value,
                        enum settings_source src, struct error *err)
{
    char *canonical = NULL;
    if (settings_check_runtime(key, value, &canonical, err) < 0)
        return -1;
    size_t idx = (size_t)(setting_find(key) - settings_table);
    if (s->src_[idx] == SETTINGS_SOURCE_COMMAND_LINE) {
        free(canonical);
        return 1;
    }
    s->src_[idx] = (unsigned char)src;
    if (s->from_store_[idx]) {
        free(s->below_store_[idx]);
        s->below_store_[idx] = canonical;
        return 1;
    }
    int rc = apply(s, &settings_table[idx], canonical, "", err);   /* checked: cannot fail */
    free(canonical);
    return rc;
}

/* settings_write_man - the moat.conf(5) manual page from the table (issue
 * 11); -1 when a row has no description or group (each named on stderr):
 * the page is then incomplete and the man test fails */
int settings_write_man(FILE *out)
{
    const char *group = NULL;
    char lo[64], hi[64];
    int missing = 0;

    roff_header(out, "MOAT.CONF", 5, MOAT_VERSION, "moatd --man 5 from the settings table "
                "in src/core/settings.c", "moat.conf", "settings file of the Moat mail gateway");
    fputs(".SH SYNOPSIS\n/etc/moat/moat.conf\n"
          ".SH DESCRIPTION\n", out);
    roff_text(out,
        "`moat.conf` holds only what `moatd` must know before its database opens: paths, "
        "listen addresses, the resolver, TLS files and resource limits. Everything else "
        "(domains, routes, policies, users) lives in the database and is changed with "
        "`moat`(1), the API or the web console.\n\n"
        "One `key = value` per line; lines starting with `#` are comments; blank lines are "
        "ignored. Each key may appear once. Lists are comma-separated. Sizes are octets with "
        "an optional `k`, `M` or `G` suffix (powers of 1024). Durations are seconds with an "
        "optional `s`, `m`, `h` or `d` suffix. A file holding a secret must not be readable "
        "by group or others.\n\n"
        "Precedence, lowest first: the built-in default, `moat.conf`, a value stored in the "
        "database (settings changeable at run time only: `moat settings set`), `moatd -o` on "
        "the command line. `moatd --check-config` validates the file and prints every "
        "effective value.");
    fputs(".SS Reloading\n", out);
    roff_text(out,
        "On SIGHUP (`systemctl reload moatd`) moatd reads the file again. A changed setting "
        "marked \"changeable at run time\" below applies at once (to the next session, "
        "transaction, connection or retry), unless a value stored in the database or given "
        "with `-o` outranks it. Any other changed setting is logged as "
        "`event=setting_needs_restart` and takes effect at the next start. A file with an "
        "error is logged (`event=settings_reload_failed`) and the running settings are kept.");
    fputs(".SH SETTINGS\n", out);
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const struct setting *st = &settings_table[i];
        if (st->description == NULL || st->description[0] == '\0' || st->group == NULL ||
            st->group[0] == '\0') {
            fprintf(stderr, "moatd: setting %s has no %s\n", st->name,
                    st->group == NULL || st->group[0] == '\0' ? "group" : "description");
            missing++;
            continue;
        }
        if (group == NULL || strcmp(group, st->group) != 0) {
            group = st->group;
            fputs(".SS ", out);
            roff_text(out, group);
        }
        fputs(".TP\n", out);
        roff_bold(out, st->name);
        fprintf(out, " (%s", type_names[st->type]);
        if (st->type == SETTING_ENUM) {
            for (const char *c = st->choices; c;) {
                const char *bar = strchr(c, '|');
                size_t len = bar ? (size_t)(bar - c) : strlen(c);
                char one[64];
                xsnprintf(one, sizeof one, "%.*s", (int)len, c);
                fputc(' ', out);
                roff_bold(out, one);
                c = bar ? bar + 1 : NULL;
            }
        }
        fputs(")\n", out);
        roff_text(out, st->description);
        fputs(".br\nDefault: ", out);
        if (st->def[0] == '\0')
            fputs("empty", out);
        else
            roff_bold(out, st->def);
        switch (st->type) {
        case SETTING_INT:
        case SETTING_SIZE:
        case SETTING_DURATION:
        case SETTING_DURATIONS:
            format_value(st, lo, sizeof lo, st->min);
            format_value(st, hi, sizeof hi, st->max);
            fputs("; range ", out);
            roff_bold(out, lo);
            fputs(" to ", out);
            roff_bold(out, hi);
            break;
        default:
            break;
        }
        fputs(st->flags & SETTING_RUNTIME ? "; changeable at run time.\n" : ".\n", out);
    }
    fputs(".SH FILES\n.TP\n/etc/moat/moat.conf\nthe settings file (or \\fB\\-\\-config\\fR, "
          "or \\fBMOAT_CONFIG\\fR)\n.TP\n/var/lib/moat\nthe default \\fBstate_dir\\fR\n"
          ".SH SEE ALSO\n\\fBmoatd\\fR(8), \\fBmoat\\fR(1)\n", out);
    return missing ? -1 : 0;
}

/* check_cidr_list - metrics_allow: every item an address range (cidr.h) */
static int check_cidr_list(const char *value, char *why, size_t whysize)
{
    struct cidr c[SETTINGS_MAX_METRICS_ALLOW];
    size_t n;
    struct error err;
    if (cidr_list_parse(value, c, SETTINGS_MAX_METRICS_ALLOW, &n, &err) < 0) {
        xsnprintf(why, whysize, "%s", err.msg);
        return -1;
    }
    return 0;
}
