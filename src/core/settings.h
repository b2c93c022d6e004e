/*
 * settings.h - the settings file (moat.conf): only what moatd must know before
 * the store opens.  Every setting is declared once, in the table in
 * settings.c (name, type, default, min, max, description); that table parses
 * the file and `-o key=value` overrides, answers `moatd --check-config`, and
 * writes docs/settings.md.
 *
 * A struct moat_settings is filled once at start and then read-only; it
 * travels in context structs, never in a global.
 */
#ifndef MOAT_SETTINGS_H
#define MOAT_SETTINGS_H

#include <stdint.h>
#include <stdio.h>
#include "core.h"

#define SETTINGS_MAX_LISTEN 8
#define SETTINGS_MAX_RETRY 32
#define EXIT_CONFIG 78   /* sysexits.h EX_CONFIG */

struct moat_settings {
    /* paths */
    char *state_dir;            /* default /var/lib/moat */
    char *database;             /* default STATE/moat.db */
    char *spool_dir;            /* default STATE/spool */
    char *tls_cert;             /* default "" = STATE/tls/cert.pem, generated */
    char *tls_key;              /* default "" = STATE/tls/key.pem, generated */
    char *run_user;             /* unprivileged user when started as root */

    /* listeners: "ADDR:PORT" / "[ADDR]:PORT", comma separated in the file */
    char *smtp_listen[SETTINGS_MAX_LISTEN];
    int n_smtp_listen;
    char *http_listen[SETTINGS_MAX_LISTEN];
    int n_http_listen;

    char *resolver;             /* "ADDR:PORT" (or "ADDR@PORT"); "" = /etc/resolv.conf */
    char *hostname;             /* banner / Received / EHLO name; "" = gethostname() */
    char *log_level;

    /* SMTP server bounds (CONVENTIONS.md: every input has a named bound) */
    int64_t smtp_max_command_line;     /* octets incl. CRLF, RFC 5321 4.5.3.1.4: >= 512 */
    int64_t smtp_max_text_line;        /* octets incl. CRLF, RFC 5321 4.5.3.1.6: >= 1000 */
    int64_t message_size_limit;        /* octets; 552 5.3.4 above it */
    int64_t smtp_max_recipients;       /* per message; 452 4.5.3 above it */
    int64_t smtp_max_messages;         /* per session */
    int64_t smtp_max_errors;           /* then 421 4.7.0 and close */
    int64_t smtp_max_junk_commands;    /* NOOP/RSET/VRFY/HELP... beyond this count as errors */
    int64_t smtp_max_connections;      /* in total */
    int64_t smtp_max_connections_per_ip;
    int64_t smtp_max_received_headers; /* loop detection: 554 5.4.6 */
    int64_t smtp_max_header_size;      /* octets of the header section */
    int64_t smtp_timeout_command;      /* seconds, RFC 5321 4.5.3.2.7: 5 min */
    int64_t smtp_timeout_data_block;   /* seconds between DATA chunks */
    int64_t smtp_timeout_tls_handshake;
    int64_t smtp_timeout_shutdown;     /* grace for sessions in flight at SIGTERM */
    char *tls_min_version;             /* "1.2" or "1.3" */

    /* delivery */
    int64_t delivery_concurrency_per_route;
    int64_t delivery_max_rcpts_per_txn;
    int64_t delivery_port;             /* port for MX-resolved destinations (25) */
    int64_t delivery_timeout_connect;  /* seconds */
    int64_t delivery_timeout_command;  /* seconds, RFC 5321 4.5.3.2 client side: 5 min */
    int64_t delivery_timeout_data;     /* seconds for the final "." reply: 10 min */
    int64_t retry_schedule[SETTINGS_MAX_RETRY]; /* seconds between attempts; last repeats */
    int n_retry_schedule;
    int64_t queue_lifetime;            /* seconds: bounce after this */
    int64_t delay_warning_after;       /* seconds: warn the sender once; 0 = never */

    /* HTTP API */
    char *http_tls_cert;               /* "" = plain HTTP (loopback only unless http_allow_plain) */
    char *http_tls_key;
    bool http_allow_plain;             /* plain HTTP on a non-loopback address (behind a proxy) */
    int64_t http_max_body;             /* octets of a request body */
    int64_t http_threads;              /* worker threads */
    int64_t session_lifetime;          /* seconds, absolute */
    int64_t session_idle_timeout;      /* seconds */
    int64_t login_max_failures;        /* per account and per client IP in the window */
    int64_t login_failure_window;      /* seconds */

    /* spool */
    int64_t spool_segment_size;        /* octets before a new log segment */

    /* Connect */
    int64_t connect_recheck_min;       /* seconds: first re-check of a waiting task */
    int64_t connect_recheck_max;       /* seconds: the re-check backoff stops doubling here */
    int64_t connect_reverify_interval; /* seconds: done tasks are re-verified this often */
    int64_t lockdown_mx_hours;         /* MX only at Moat this long unlocks the lockdown task */

    /* directory and recipient validation (issue 5) */
    int64_t directory_csv_max_line;    /* octets of one CSV row */
    int64_t directory_csv_max_rows;    /* rows of one CSV import */
    int64_t rv_callforward_positive_ttl; /* seconds a "recipient exists" probe answer is kept */
    int64_t rv_callforward_negative_ttl; /* seconds a "no such recipient" answer is kept */
    int64_t rv_callforward_timeout;    /* seconds for a whole call-forward probe */
};

/* settings_defaults - fill s with every default (paths derived from state_dir later) */
void settings_defaults(struct moat_settings *s);
/* settings_load_file - parse path; missing file is an error only if required */
int settings_load_file(struct moat_settings *s, const char *path, bool required, struct error *err);
/* settings_set - one "key=value" or key + value (command-line override) */
int settings_set(struct moat_settings *s, const char *key, const char *value, struct error *err);
/* settings_finish - derive dependent paths (database, spool_dir) from state_dir, validate */
int settings_finish(struct moat_settings *s, struct error *err);
void settings_free(struct moat_settings *s);
/* settings_print - every setting with its effective value (secrets redacted) */
void settings_print(const struct moat_settings *s, FILE *out);
/* settings_write_reference - the Markdown settings reference (docs/settings.md) */
void settings_write_reference(FILE *out);
/* settings_parse_duration - "30", "30s", "5m", "4h", "5d" -> seconds */
int settings_parse_duration(const char *s, int64_t *out);
/* settings_parse_size - "1000", "10k", "35M", "1G" -> octets */
int settings_parse_size(const char *s, int64_t *out);
/* settings_parse_hostport - "127.0.0.1:25", "[::1]:25", "host:25"; host malloc'd */
int settings_parse_hostport(const char *s, char **host, int *port);

#endif
