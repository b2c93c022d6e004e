/*
 * settings.h - moatd's settings: the settings file (moat.conf), `-o`
 * overrides, and the few settings that may also be changed at run time in
 * the store.  Every setting is declared once, in the table in settings.c
 * (name, type, default, min, max, runtime flag, description); that table
 * parses the file and `-o key=value` overrides, validates values stored
 * through the API, answers `moatd --check-config`, and writes
 * docs/settings.md.
 *
 * Precedence, lowest first: built-in default < moat.conf < a value stored in
 * the database (runtime settings only: PATCH /api/v1/settings, `moat
 * settings set`) < `moatd -o` on the command line (tests, emergencies).
 *
 * A struct moat_settings is filled at start; it travels in context structs,
 * never in a global.  After start only the runtime settings change, and only
 * on the event loop (settings_apply_runtime / settings_reset_runtime, called
 * by moatd at start and by the API through api_loop_call), which is also the
 * only thread that reads them; every other field is read-only.
 */
#ifndef MOAT_SETTINGS_H
#define MOAT_SETTINGS_H

#include <stdint.h>
#include <stdio.h>
#include "core.h"

#define SETTINGS_MAX_LISTEN 8
#define SETTINGS_MAX_RETRY 32
#define EXIT_CONFIG 78   /* sysexits.h EX_CONFIG */
#define SETTINGS_MAX_ROWS 160  /* rows of the settings table (settings.c asserts it) */
#define SETTINGS_MAX_METRICS_ALLOW 32  /* address ranges in metrics_allow */

/* where a setting's effective value comes from */
enum settings_source {
    SETTINGS_SOURCE_DEFAULT = 0,
    SETTINGS_SOURCE_FILE,            /* moat.conf */
    SETTINGS_SOURCE_STORE,           /* the database (runtime settings only) */
    SETTINGS_SOURCE_COMMAND_LINE,    /* moatd -o / --state-dir / ... */
};

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

    /* settings.c's bookkeeping, by table row; not for other modules */
    unsigned char src_[SETTINGS_MAX_ROWS];   /* enum settings_source below the store */
    bool from_store_[SETTINGS_MAX_ROWS];     /* the value came from the store */
    char *below_store_[SETTINGS_MAX_ROWS];   /* what the store value replaced (file
                                              * syntax), restored by a reset */
    /* directory and recipient validation (issue 5) */
    int64_t directory_csv_max_line;    /* octets of one CSV row */
    int64_t directory_csv_max_rows;    /* rows of one CSV import */
    int64_t rv_callforward_positive_ttl; /* seconds a "recipient exists" probe answer is kept */
    int64_t rv_callforward_negative_ttl; /* seconds a "no such recipient" answer is kept */
    int64_t rv_callforward_timeout;    /* seconds for a whole call-forward probe */
    /* SMTP AUTH for the outbound role (issue 6) */
    bool smtp_auth;                    /* offer AUTH PLAIN/LOGIN after STARTTLS */
    int64_t smtp_auth_max_line;        /* octets of an AUTH command or response line */
    int64_t smtp_auth_timeout;         /* seconds to wait for an AUTH continuation */
    int64_t smtp_auth_max_failures;    /* per client address and per account in the window */
    int64_t smtp_auth_failure_window;  /* seconds */
    /* outbound TLS policies and MTA-STS (issue 6) */
    char *tls_ca_file;                 /* "" = the system trust store */
    int64_t mta_sts_port;              /* 443 */
    int64_t mta_sts_fetch_timeout;     /* seconds */
    /* DANE (issue 6) */
    char *dns_trust_anchor_file;       /* DNSSEC anchor for libunbound; "" = none */
    /* DNSBL and rspamd (issue 7) */
    int64_t dnsbl_threshold;           /* reject at or above this sum of weights */
    int64_t dnsbl_hold_threshold;      /* hold at or above this (below reject); 0 = never */
    int64_t dnsbl_timeout;             /* seconds the first RCPT waits for answers */
    char *rspamd_url;                  /* "" = no rspamd */
    int64_t rspamd_timeout;            /* seconds per scan */
    char *rspamd_unreachable;          /* "tempfail" or "accept" */
    char *rspamd_hold_action;          /* "none", "reject", "add_header" */
    /* anti-spoofing (issue 7) */
    bool antispoof;                    /* refuse inbound mail in an internal domain's name */
    int64_t antispoof_candidates_max;  /* refused sources remembered */
    /* permitted senders and greylisting (issue 7) */
    bool permitted_auto_allow;         /* learn recipients of outbound mail */
    int64_t permitted_auto_lifetime;   /* seconds an auto entry lives after its last use */
    bool greylisting;                  /* greylist unknown triplets at RCPT */
    int64_t greylist_min_delay;        /* seconds before a retry is accepted */
    int64_t greylist_max_delay;        /* seconds after which a retry starts over */
    int64_t greylist_pass_lifetime;    /* seconds a passed triplet is kept after its last use */
    int64_t greylist_max_entries;      /* triplets kept in memory */
    char *test_clock_file;             /* TEST ONLY: file holding a clock offset in seconds */
    /* held mail (issue 7) */
    int64_t held_lifetime;             /* seconds a held message is kept before it is purged */
    /* the content stage: SPF, DKIM verification, DMARC (issue 7) */
    bool spf_check;                    /* evaluate SPF for inbound mail */
    char *spf_fail_action;             /* "none" (DMARC decides) or "reject" */
    bool dkim_verify;                  /* verify DKIM signatures of inbound mail */
    int64_t dkim_max_signatures;       /* signatures verified per message */
    bool dmarc_check;                  /* apply the author domain's DMARC policy */
    char *dmarc_psl_file;              /* public suffix list */
    int64_t screen_max_size;           /* octets kept in memory for the content checks */
    int64_t content_timeout;           /* seconds for the whole content stage */
    char *content_timeout_action;      /* "tempfail" or "accept" */
    int64_t content_dns_timeout;       /* seconds per lookup of a content check */
    /* the archive (issue 8) */
    bool archive;                      /* archive every accepted message (start-up only) */
    char *archive_database;            /* default STATE/archive.db */
    int64_t archive_retention;         /* seconds archived mail is kept */
    int64_t archive_max_parse;         /* octets of a message parsed for the index */
    int64_t archive_max_text;          /* octets of extracted text indexed */
    int64_t archive_mime_max_depth;    /* MIME nesting levels */
    int64_t archive_mime_max_parts;    /* MIME parts visited */
    int64_t archive_purge_interval;    /* seconds between retention runs */
    /* message tracking (issue 11) */
    bool tracking;                     /* keep tracking events (start-up only) */
    char *tracking_database;           /* default STATE/tracking.db */
    int64_t tracking_retention;        /* seconds a message's record is kept */
    int64_t tracking_max_size;         /* octets the records may take */
    int64_t tracking_purge_interval;   /* seconds between purges */
    /* metrics (issue 11) */
    char *metrics_allow;               /* CIDR list that may scrape /metrics without a token */
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

/* --- runtime settings (stored in the database, changed through the API) --- */

/* settings_runtime - 1: key may be changed in the store at run time; 0: it
 * belongs in moat.conf (read before the store opens, or copied at start);
 * -1: no such setting */
int settings_runtime(const char *key);
/* settings_check_runtime - validate key = value exactly as
 * settings_apply_runtime would, without applying it.  *canonical (when not
 * NULL) gets the value in file syntax ("10240" -> "10k"; caller frees).
 * Errors name the key in err->field, with --check-config's wording. */
int settings_check_runtime(const char *key, const char *value, char **canonical,
                           struct error *err);
/* settings_apply_runtime - a value from the store over s.  Refuses unknown
 * and non-runtime keys and invalid values (-1, err).  0: applied.  1: valid
 * but not applied, because the command line (-o) set the key and outranks
 * the store.  Only the event loop may call it on moatd's settings. */
int settings_apply_runtime(struct moat_settings *s, const char *key, const char *value,
                           struct error *err);
/* settings_reset_runtime - forget the store value of key: back to the
 * value of moat.conf, or the default.  0 (also when there was none), -1 */
int settings_reset_runtime(struct moat_settings *s, const char *key, struct error *err);

/* settings_info - one row of the table, for the API and the CLI */
struct settings_info {
    const char *name;
    const char *group;
    const char *description;
    const char *def;                 /* default, file syntax ("" = empty) */
    bool runtime;
    bool secret;
    enum settings_source source;
};
/* settings_count - rows of the table; settings_describe - row i: its info,
 * and its effective value in file syntax appended to value ("(redacted)"
 * for secrets) */
size_t settings_count(void);
void settings_describe(const struct moat_settings *s, size_t i, struct settings_info *info,
                       struct buf *value);
/* settings_source_name - "default", "file", "store", "command-line" */
const char *settings_source_name(enum settings_source src);

/* settings_parse_duration - "30", "30s", "5m", "4h", "5d" -> seconds */
int settings_parse_duration(const char *s, int64_t *out);
/* settings_parse_size - "1000", "10k", "35M", "1G" -> octets */
int settings_parse_size(const char *s, int64_t *out);
/* settings_parse_hostport - "127.0.0.1:25", "[::1]:25", "host:25"; host malloc'd */
int settings_parse_hostport(const char *s, char **host, int *port);

/* settings_apply_file - the new moat.conf value of a runtime setting, when
 * moatd re-reads the file at SIGHUP (src is SETTINGS_SOURCE_FILE, or
 * SETTINGS_SOURCE_DEFAULT when the key left the file).  0: applied.  1:
 * valid, but a store value or the command line outranks it (a store value
 * now resets to it).  -1: invalid, or not a runtime setting.  Only the
 * event loop may call it on moatd's settings. */
int settings_apply_file(struct moat_settings *s, const char *key, const char *value,
                        enum settings_source src, struct error *err);

/* settings_write_man - the moat.conf(5) manual page (roff) from the table;
 * -1 when a setting has no description (named on stderr) */
int settings_write_man(FILE *out);

#endif
