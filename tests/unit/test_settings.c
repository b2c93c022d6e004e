/*
 * test_settings.c - the settings table: defaults, every value type and its
 * bounds, file syntax with line numbers in errors, unknown and repeated keys,
 * command-line overrides, derived paths, the effective-value printout,
 * runtime settings (stored values: validation, precedence, reset), and
 * docs/settings.md being exactly what the table generates.
 *
 * MOAT_UPDATE_DOCS=1 rewrites docs/settings.md from the table instead of
 * comparing (then review the diff): MOAT_UPDATE_DOCS=1 meson test -C BUILD settings
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "core/settings.h"
#include "conf_file.h"

#ifndef MOAT_SOURCE_ROOT
#error "MOAT_SOURCE_ROOT must name the source tree (tests/unit/meson.build sets it)"
#endif

/* load - defaults + text; returns the load result, err filled */
static int load(struct moat_settings *s, const char *text, struct error *err)
{
    settings_defaults(s);
    const char *path = write_conf(text);
    int rc = settings_load_file(s, path, true, err);
    unlink(path);
    return rc;
}

static void test_defaults(void **state)
{
    struct moat_settings s;
    struct error err;

    settings_defaults(&s);
    assert_string_equal(s.state_dir, "/var/lib/moat");
    assert_string_equal(s.database, "");
    assert_string_equal(s.run_user, "moat");
    assert_int_equal(s.n_smtp_listen, 1);
    assert_string_equal(s.smtp_listen[0], "127.0.0.1:2525");
    assert_int_equal(s.n_http_listen, 1);
    assert_string_equal(s.http_listen[0], "127.0.0.1:8025");
    assert_string_equal(s.log_level, "info");
    assert_int_equal(s.smtp_max_command_line, 512);
    assert_int_equal(s.smtp_max_text_line, 1000);
    assert_int_equal(s.message_size_limit, 36700160);
    assert_int_equal(s.smtp_max_recipients, 1000);
    assert_int_equal(s.smtp_max_header_size, 1024 * 1024);
    assert_int_equal(s.smtp_timeout_command, 300);
    assert_int_equal(s.smtp_timeout_data_block, 180);
    assert_int_equal(s.smtp_timeout_tls_handshake, 60);
    assert_int_equal(s.smtp_timeout_shutdown, 30);
    assert_string_equal(s.tls_min_version, "1.2");
    assert_int_equal(s.delivery_port, 25);
    assert_int_equal(s.delivery_timeout_data, 600);
    assert_int_equal(s.n_retry_schedule, 7);
    static const int64_t retry[] = { 60, 300, 600, 1800, 3600, 7200, 14400 };
    for (int i = 0; i < 7; i++)
        assert_int_equal(s.retry_schedule[i], retry[i]);
    assert_int_equal(s.queue_lifetime, 5 * 86400);
    assert_int_equal(s.delay_warning_after, 4 * 3600);
    assert_int_equal(s.spool_segment_size, 64 * 1024 * 1024);

    assert_int_equal(settings_finish(&s, &err), 0);
    assert_string_equal(s.database, "/var/lib/moat/moat.db");
    assert_string_equal(s.spool_dir, "/var/lib/moat/spool");
    assert_true(s.hostname != NULL && s.hostname[0] != '\0');
    settings_free(&s);
}

static void test_parse_units(void **state)
{
    static const struct { const char *in; int64_t out; } durations[] = {
        { "0", 0 }, { "30", 30 }, { "30s", 30 }, { "5m", 300 }, { "4h", 14400 },
        { "5d", 432000 },
    };
    static const struct { const char *in; int64_t out; } sizes[] = {
        { "1000", 1000 }, { "10k", 10240 }, { "10K", 10240 }, { "35M", 36700160 },
        { "1G", 1073741824 }, { "4G", INT64_C(4294967296) },
    };
    static const char *const bad[] = { "", "-1", "5x", "5 m", "m", "1.5h", "5mm",
                                       "99999999999999999999", "9223372036854775807d" };
    int64_t v;

    for (size_t i = 0; i < sizeof durations / sizeof durations[0]; i++) {
        assert_int_equal(settings_parse_duration(durations[i].in, &v), 0);
        assert_int_equal(v, durations[i].out);
    }
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        assert_int_equal(settings_parse_size(sizes[i].in, &v), 0);
        assert_int_equal(v, sizes[i].out);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(settings_parse_duration(bad[i], &v), -1);
        assert_int_equal(settings_parse_size(bad[i], &v), -1);
    }
}

static void test_parse_hostport(void **state)
{
    static const struct { const char *in; const char *host; int port; } good[] = {
        { "127.0.0.1:25", "127.0.0.1", 25 },
        { "[::1]:2525", "::1", 2525 },
        { "[2001:db8::1]:65535", "2001:db8::1", 65535 },
        { "mx.example.com:1", "mx.example.com", 1 },
        { "0.0.0.0:25", "0.0.0.0", 25 },
    };
    static const char *const bad[] = {
        "127.0.0.1", "::1:25", "[::1]", "[::1]25", "[nothost]:25", "host:0", "host:65536",
        "host:", ":25", "ho_st:25", "-host:25", "host:25x", "[]:25", "a..b:25",
    };
    char *host;
    int port;

    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        assert_int_equal(settings_parse_hostport(good[i].in, &host, &port), 0);
        assert_string_equal(host, good[i].host);
        assert_int_equal(port, good[i].port);
        free(host);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (settings_parse_hostport(bad[i], &host, &port) == 0)
            fail_msg("accepted bad host:port \"%s\"", bad[i]);
    }
}

static void test_file_all_types(void **state)
{
    struct moat_settings s;
    struct error err;

    int rc = load(&s,
        "# a comment\n"
        "\n"
        "   # indented comment\n"
        "state_dir = /srv/moat/\n"
        "smtp_listen = 0.0.0.0:25, [::]:25\n"
        "http_listen =\n"
        "resolver = 127.0.0.1@5353\n"
        "hostname = mx1.example.net\n"
        "log_level=debug\n"
        "smtp_max_command_line = 2048\r\n"
        "message_size_limit = 50M\n"
        "smtp_timeout_command = 10m\n"
        "tls_min_version = 1.3\n"
        "retry_schedule = 30s, 2m ,1h\n"
        "delay_warning_after = 0\n"
        "\ttls_cert = /etc/moat/cert.pem\n"
        "tls_key = /etc/moat/key.pem\n", &err);
    if (rc != 0)
        fail_msg("load failed: %s", err.msg);
    assert_string_equal(s.state_dir, "/srv/moat/");
    assert_int_equal(s.n_smtp_listen, 2);
    assert_string_equal(s.smtp_listen[0], "0.0.0.0:25");
    assert_string_equal(s.smtp_listen[1], "[::]:25");
    assert_int_equal(s.n_http_listen, 0);
    assert_string_equal(s.resolver, "127.0.0.1@5353");
    assert_string_equal(s.hostname, "mx1.example.net");
    assert_string_equal(s.log_level, "debug");
    assert_int_equal(s.smtp_max_command_line, 2048);
    assert_int_equal(s.message_size_limit, 50 * 1024 * 1024);
    assert_int_equal(s.smtp_timeout_command, 600);
    assert_string_equal(s.tls_min_version, "1.3");
    assert_int_equal(s.n_retry_schedule, 3);
    assert_int_equal(s.retry_schedule[0], 30);
    assert_int_equal(s.retry_schedule[1], 120);
    assert_int_equal(s.retry_schedule[2], 3600);
    assert_int_equal(s.delay_warning_after, 0);

    assert_int_equal(settings_finish(&s, &err), 0);
    /* a trailing slash on state_dir does not double up */
    assert_string_equal(s.database, "/srv/moat/moat.db");
    assert_string_equal(s.spool_dir, "/srv/moat/spool");
    assert_string_equal(s.hostname, "mx1.example.net");
    settings_free(&s);
}

/* each bad file gives this message and line number, with field = key */
static void test_file_errors(void **state)
{
    static const struct { const char *text; int line; const char *field; const char *msg; } cases[] = {
        { "# one\n\nsmtp_max_command_line = 100\n", 3, "smtp_max_command_line",
          "smtp_max_command_line: 100 is below the minimum 512" },
        { "smtp_max_command_line = 65537\n", 1, "smtp_max_command_line",
          "smtp_max_command_line: 65537 is above the maximum 65536" },
        { "smtp_max_text_line = 999\n", 1, "smtp_max_text_line",
          "smtp_max_text_line: 999 is below the minimum 1000" },
        { "smtp_max_recipients = 99\n", 1, "smtp_max_recipients",
          "smtp_max_recipients: 99 is below the minimum 100" },
        { "message_size_limit = 3G\n", 1, "message_size_limit",
          "message_size_limit: 3G is above the maximum 2G" },
        { "smtp_max_header_size = 8k\n", 1, "smtp_max_header_size",
          "smtp_max_header_size: 8k is below the minimum 16k" },
        { "smtp_timeout_command = 0\n", 1, "smtp_timeout_command",
          "smtp_timeout_command: 0 is below the minimum 1s" },
        { "smtp_timeout_tls_handshake = 11m\n", 1, "smtp_timeout_tls_handshake",
          "smtp_timeout_tls_handshake: 11m is above the maximum 10m" },
        { "queue_lifetime = 31d\n", 1, "queue_lifetime",
          "queue_lifetime: 31d is above the maximum 30d" },
        { "spool_segment_size = 512k\n", 1, "spool_segment_size",
          "spool_segment_size: 512k is below the minimum 1M" },
        { "delivery_port = 0\n", 1, "delivery_port", "delivery_port: 0 is below the minimum 1" },
        { "smtp_max_errors = ten\n", 1, "smtp_max_errors", "expected a whole number" },
        { "smtp_max_errors = 10 # default\n", 1, "smtp_max_errors", "expected a whole number" },
        { "smtp_timeout_command = 5 minutes\n", 1, "smtp_timeout_command", "expected a duration" },
        { "message_size_limit = 35MB\n", 1, "message_size_limit", "expected a size" },
        { "tls_min_version = 1.1\n", 1, "tls_min_version", "\"1.1\" is not one of 1.2,1.3" },
        { "log_level = verbose\n", 1, "log_level", "is not one of debug,info,warn,error" },
        { "\n\nsmtp_listn = 127.0.0.1:25\n", 3, "smtp_listn", "smtp_listn: unknown setting" },
        { "smtp_listen = 127.0.0.1\n", 1, "smtp_listen", "is not ADDRESS:PORT" },
        { "smtp_listen = ::1:25\n", 1, "smtp_listen", "is not ADDRESS:PORT" },
        { "smtp_listen =\n", 1, "smtp_listen", "needs at least 1 element" },
        { "smtp_listen = a:1,,b:2\n", 1, "smtp_listen", "empty element" },
        { "smtp_listen = a:1,b:2,c:3,d:4,e:5,f:6,g:7,h:8,i:9\n", 1, "smtp_listen",
          "more than 8 elements" },
        { "retry_schedule = 1m,2d\n", 1, "retry_schedule", "retry_schedule: 2d is above the maximum 1d" },
        { "retry_schedule = 0\n", 1, "retry_schedule", "retry_schedule: 0 is below the minimum 1s" },
        { "retry_schedule =\n", 1, "retry_schedule", "needs at least 1 element" },
        { "state_dir = var/lib/moat\n", 1, "state_dir", "is not an absolute path" },
        { "resolver = dns.example.com\n", 1, "resolver", "expected an IP address" },
        { "resolver = 127.0.0.1:99999\n", 1, "resolver", "expected an IP address" },
        { "hostname = mx_1.example.com\n", 1, "hostname", "expected a host name" },
        { "run_user = \n", 1, "run_user", "expected a user name" },
        { "smtp_max_errors = 5\nsmtp_max_errors = 6\n", 2, "smtp_max_errors",
          "smtp_max_errors: already set on line 1" },
        { "just words\n", 1, "", "expected \"key = value\"" },
        { "hostname = a\x01b\n", 1, "hostname", "control characters" },
    };
    struct moat_settings s;
    struct error err;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = load(&s, cases[i].text, &err);
        if (rc == 0)
            fail_msg("case %zu accepted: %s", i, cases[i].text);
        if (err.line != cases[i].line)
            fail_msg("case %zu: line %d, want %d (%s)", i, err.line, cases[i].line, err.msg);
        assert_string_equal(err.field, cases[i].field);
        if (strstr(err.msg, cases[i].msg) == NULL)
            fail_msg("case %zu: message \"%s\" lacks \"%s\"", i, err.msg, cases[i].msg);
        /* the message starts with path:line: so an editor can jump there */
        char where[32];
        xsnprintf(where, sizeof where, ":%d: ", cases[i].line);
        assert_non_null(strstr(err.msg, where));
        settings_free(&s);
    }
}

/* the exact message format an administrator sees */
static void test_error_format(void **state)
{
    struct moat_settings s;
    struct error err;
    char expect[600];

    settings_defaults(&s);
    const char *path = write_conf("# x\n\n\n\n\n\n\n\n\n\n\nsmtp_max_command_line = 100\n");
    assert_int_equal(settings_load_file(&s, path, true, &err), -1);
    xsnprintf(expect, sizeof expect,
              "%s:12: smtp_max_command_line: 100 is below the minimum 512", path);
    assert_string_equal(err.msg, expect);
    assert_int_equal(err.line, 12);
    assert_string_equal(err.field, "smtp_max_command_line");
    unlink(path);
    settings_free(&s);
}

static void test_file_long_line(void **state)
{
    struct moat_settings s;
    struct error err;
    size_t n = 5000;
    char *text = xmalloc(n + 32);
    memcpy(text, "hostname = ", 11);
    memset(text + 11, 'a', n);
    memcpy(text + 11 + n, "\n", 2);
    assert_int_equal(load(&s, text, &err), -1);
    assert_int_equal(err.line, 1);
    assert_non_null(strstr(err.msg, "line longer than"));
    free(text);
    settings_free(&s);

    /* a NUL octet would silently cut the line: refused */
    settings_defaults(&s);
    const char *path = write_conf("smtp_max_errors = 5\n");
    FILE *fp = fopen(path, "a");
    fwrite("hostname = a\0b\n", 1, 15, fp);
    fclose(fp);
    assert_int_equal(settings_load_file(&s, path, true, &err), -1);
    assert_int_equal(err.line, 2);
    assert_non_null(strstr(err.msg, "NUL"));
    unlink(path);
    settings_free(&s);
}

static void test_file_missing(void **state)
{
    struct moat_settings s;
    struct error err;

    settings_defaults(&s);
    assert_int_equal(settings_load_file(&s, "/nonexistent/moat.conf", false, &err), 0);
    assert_int_equal(settings_load_file(&s, "/nonexistent/moat.conf", true, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/moat.conf"));
    assert_int_equal(settings_load_file(&s, "/tmp", true, &err), -1);
    settings_free(&s);
}

static void test_overrides(void **state)
{
    struct moat_settings s;
    struct error err;

    settings_defaults(&s);
    assert_int_equal(settings_set(&s, "smtp_max_errors=20", NULL, &err), 0);
    assert_int_equal(s.smtp_max_errors, 20);
    assert_int_equal(settings_set(&s, "smtp_max_errors", "30", &err), 0);
    assert_int_equal(s.smtp_max_errors, 30);
    assert_int_equal(settings_set(&s, "smtp_listen = [::1]:2526 ", NULL, &err), 0);
    assert_int_equal(s.n_smtp_listen, 1);
    assert_string_equal(s.smtp_listen[0], "[::1]:2526");
    assert_int_equal(settings_set(&s, "state_dir", "/tmp/x", &err), 0);

    assert_int_equal(settings_set(&s, "smtp_max_errors=0", NULL, &err), -1);
    assert_string_equal(err.field, "smtp_max_errors");
    assert_int_equal(err.line, 0);
    assert_string_equal(err.msg, "smtp_max_errors: 0 is below the minimum 1");
    /* a failed override leaves the previous value */
    assert_int_equal(s.smtp_max_errors, 30);
    assert_int_equal(settings_set(&s, "smtp_listen", "x:1,y", &err), -1);
    assert_int_equal(s.n_smtp_listen, 1);
    assert_string_equal(s.smtp_listen[0], "[::1]:2526");

    assert_int_equal(settings_set(&s, "nope=1", NULL, &err), -1);
    assert_string_equal(err.field, "nope");
    assert_string_equal(err.msg, "nope: unknown setting");
    assert_int_equal(settings_set(&s, "smtp_max_errors", NULL, &err), -1);
    assert_non_null(strstr(err.msg, "expected key=value"));

    /* overrides apply after the file */
    settings_free(&s);
    assert_int_equal(load(&s, "smtp_max_errors = 7\n", &err), 0);
    assert_int_equal(settings_set(&s, "smtp_max_errors", "8", &err), 0);
    assert_int_equal(s.smtp_max_errors, 8);
    settings_free(&s);
}

static void test_finish(void **state)
{
    struct moat_settings s;
    struct error err;

    settings_defaults(&s);
    assert_int_equal(settings_set(&s, "state_dir", "/tmp/st", &err), 0);
    assert_int_equal(settings_set(&s, "database", "/data/moat.sqlite", &err), 0);
    assert_int_equal(settings_finish(&s, &err), 0);
    assert_string_equal(s.database, "/data/moat.sqlite");
    assert_string_equal(s.spool_dir, "/tmp/st/spool");
    settings_free(&s);

    settings_defaults(&s);
    assert_int_equal(settings_set(&s, "tls_cert", "/etc/moat/cert.pem", &err), 0);
    assert_int_equal(settings_finish(&s, &err), -1);
    assert_string_equal(err.field, "tls_key");
    settings_free(&s);
}

static void test_print(void **state)
{
    struct moat_settings s;
    struct error err;
    char *text = NULL;
    size_t len = 0;

    settings_defaults(&s);
    assert_int_equal(settings_set(&s, "message_size_limit", "1025", &err), 0);
    assert_int_equal(settings_finish(&s, &err), 0);
    FILE *f = open_memstream(&text, &len);
    settings_print(&s, f);
    fclose(f);
    assert_non_null(strstr(text, "state_dir = /var/lib/moat\n"));
    assert_non_null(strstr(text, "database = /var/lib/moat/moat.db\n"));
    assert_non_null(strstr(text, "smtp_listen = 127.0.0.1:2525\n"));
    assert_non_null(strstr(text, "message_size_limit = 1025\n"));
    assert_non_null(strstr(text, "smtp_max_header_size = 1M\n"));
    assert_non_null(strstr(text, "smtp_timeout_command = 5m\n"));
    assert_non_null(strstr(text, "retry_schedule = 1m,5m,10m,30m,1h,2h,4h\n"));
    assert_non_null(strstr(text, "queue_lifetime = 5d\n"));

    /* the printout is itself a valid settings file with the same values */
    struct moat_settings t;
    if (load(&t, text, &err) != 0)
        fail_msg("the printout does not load: %s", err.msg);
    assert_int_equal(t.message_size_limit, 1025);
    assert_string_equal(t.database, "/var/lib/moat/moat.db");
    free(text);
    settings_free(&t);
    settings_free(&s);
}

/* source_of - the source settings_describe reports for name */
static enum settings_source source_of(const struct moat_settings *s, const char *name)
{
    struct settings_info info;
    struct buf b;
    buf_init(&b);
    for (size_t i = 0; i < settings_count(); i++) {
        buf_reset(&b);
        settings_describe(s, i, &info, &b);
        if (strcmp(info.name, name) == 0) {
            buf_free(&b);
            return info.source;
        }
    }
    buf_free(&b);
    fail_msg("no setting %s", name);
    return SETTINGS_SOURCE_DEFAULT;
}

/* runtime settings: which keys, validation with the table's own messages,
 * precedence default < file < store < command line, and reset */
static void test_runtime(void **state)
{
    struct moat_settings s;
    struct error err;
    char *canon;

    /* the flag: the event loop's per-use settings yes, start-only ones no */
    static const char *const runtime[] = {
        "message_size_limit", "retry_schedule", "queue_lifetime", "delay_warning_after",
        "delivery_timeout_connect", "smtp_max_recipients", "smtp_timeout_data_block", NULL,
    };
    static const char *const start_only[] = {
        "state_dir", "smtp_listen", "http_listen", "hostname", "tls_min_version",
        "smtp_max_connections", "smtp_max_command_line", "http_max_body", "delivery_port", NULL,
    };
    for (const char *const *k = runtime; *k; k++)
        if (settings_runtime(*k) != 1)
            fail_msg("%s should be changeable at run time", *k);
    for (const char *const *k = start_only; *k; k++)
        if (settings_runtime(*k) != 0)
            fail_msg("%s should not be changeable at run time", *k);
    assert_int_equal(settings_runtime("nope"), -1);

    /* check: canonical form; errors worded like moat.conf and -o */
    assert_int_equal(settings_check_runtime("message_size_limit", " 10240 ", &canon, &err), 0);
    assert_string_equal(canon, "10k");
    free(canon);
    assert_int_equal(settings_check_runtime("retry_schedule", "60, 5m,1h", &canon, &err), 0);
    assert_string_equal(canon, "1m,5m,1h");
    free(canon);
    assert_int_equal(settings_check_runtime("message_size_limit", "12", &canon, &err), -1);
    assert_null(canon);
    assert_string_equal(err.field, "message_size_limit");
    assert_string_equal(err.msg, "message_size_limit: 12 is below the minimum 1k");
    struct moat_settings o;
    struct error oerr;
    settings_defaults(&o);
    assert_int_equal(settings_set(&o, "message_size_limit", "12", &oerr), -1);
    assert_string_equal(err.msg, oerr.msg);   /* the --check-config message */
    settings_free(&o);

    /* default < file < store */
    assert_int_equal(load(&s, "message_size_limit = 20M\n", &err), 0);
    assert_int_equal(source_of(&s, "message_size_limit"), SETTINGS_SOURCE_FILE);
    assert_int_equal(source_of(&s, "smtp_max_recipients"), SETTINGS_SOURCE_DEFAULT);
    assert_int_equal(settings_apply_runtime(&s, "message_size_limit", "10k", &err), 0);
    assert_int_equal(s.message_size_limit, 10240);
    assert_int_equal(source_of(&s, "message_size_limit"), SETTINGS_SOURCE_STORE);
    /* a second store value replaces the first; the reset still returns to the file */
    assert_int_equal(settings_apply_runtime(&s, "message_size_limit", "2M", &err), 0);
    assert_int_equal(s.message_size_limit, 2 * 1024 * 1024);
    assert_int_equal(settings_apply_runtime(&s, "retry_schedule", "1s,2s", &err), 0);
    assert_int_equal(s.n_retry_schedule, 2);
    assert_int_equal(s.retry_schedule[1], 2);

    /* refused: unknown, not runtime, invalid; nothing changes */
    assert_int_equal(settings_apply_runtime(&s, "nope", "1", &err), -1);
    assert_string_equal(err.field, "nope");
    assert_string_equal(err.msg, "nope: unknown setting");
    assert_int_equal(settings_apply_runtime(&s, "smtp_listen", "127.0.0.1:25", &err), -1);
    assert_string_equal(err.field, "smtp_listen");
    assert_non_null(strstr(err.msg, "moat.conf"));
    assert_string_equal(s.smtp_listen[0], "127.0.0.1:2525");
    assert_int_equal(settings_apply_runtime(&s, "retry_schedule", "1s,,2s", &err), -1);
    assert_string_equal(err.field, "retry_schedule");
    assert_int_equal(s.n_retry_schedule, 2);
    assert_int_equal(settings_apply_runtime(&s, "queue_lifetime", "5 parsecs", &err), -1);
    assert_int_equal(s.queue_lifetime, 5 * 86400);

    /* reset: back to the file's value, or the default */
    assert_int_equal(settings_reset_runtime(&s, "message_size_limit", &err), 0);
    assert_int_equal(s.message_size_limit, 20 * 1024 * 1024);
    assert_int_equal(source_of(&s, "message_size_limit"), SETTINGS_SOURCE_FILE);
    assert_int_equal(settings_reset_runtime(&s, "retry_schedule", &err), 0);
    assert_int_equal(s.n_retry_schedule, 7);
    assert_int_equal(source_of(&s, "retry_schedule"), SETTINGS_SOURCE_DEFAULT);
    assert_int_equal(settings_reset_runtime(&s, "retry_schedule", &err), 0);   /* nothing stored */
    assert_int_equal(settings_reset_runtime(&s, "state_dir", &err), -1);
    assert_string_equal(err.field, "state_dir");

    /* the command line outranks the store: valid, kept aside, not applied */
    assert_int_equal(settings_set(&s, "smtp_max_errors", "20", &err), 0);
    assert_int_equal(settings_apply_runtime(&s, "smtp_max_errors", "5", &err), 1);
    assert_int_equal(s.smtp_max_errors, 20);
    assert_int_equal(source_of(&s, "smtp_max_errors"), SETTINGS_SOURCE_COMMAND_LINE);
    assert_int_equal(settings_apply_runtime(&s, "smtp_max_errors", "0", &err), -1);

    /* a store value survives settings_free without a leak (ASan run) */
    assert_int_equal(settings_apply_runtime(&s, "delay_warning_after", "0", &err), 0);
    assert_int_equal(s.delay_warning_after, 0);
    settings_free(&s);
}

/* the reference says which settings are changeable at run time */
static void test_reference_marks_runtime(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    settings_write_reference(f);
    fclose(f);
    const char *p = strstr(text, "### `message_size_limit`");
    assert_non_null(p);
    const char *next = strstr(p + 1, "### `");
    const char *mark = strstr(p, "Changeable at run time: yes");
    assert_true(mark != NULL && (next == NULL || mark < next));
    p = strstr(text, "### `smtp_listen`");
    next = strstr(p + 1, "### `");
    mark = strstr(p, "Changeable at run time: yes");
    assert_true(mark == NULL || mark > next);
    free(text);
}

/* every setting documented, and docs/settings.md is what the table generates */
static void test_reference_in_sync(void **state)
{
    char *gen = NULL;
    size_t gen_len = 0;
    FILE *f = open_memstream(&gen, &gen_len);
    settings_write_reference(f);
    fclose(f);

    struct moat_settings s;
    char *printed = NULL;
    size_t plen = 0;
    settings_defaults(&s);
    f = open_memstream(&printed, &plen);
    settings_print(&s, f);
    fclose(f);
    settings_free(&s);
    /* each printed key has its own section in the reference */
    for (char *line = strtok(printed, "\n"); line; line = strtok(NULL, "\n")) {
        char heading[128];
        char *sp = strchr(line, ' ');
        assert_non_null(sp);
        xsnprintf(heading, sizeof heading, "\n### `%.*s`\n", (int)(sp - line), line);
        if (strstr(gen, heading) == NULL)
            fail_msg("setting %.*s is not in the reference", (int)(sp - line), line);
    }
    free(printed);

    const char *path = MOAT_SOURCE_ROOT "/docs/settings.md";
    const char *update = getenv("MOAT_UPDATE_DOCS");
    if (update != NULL && strcmp(update, "1") == 0) {
        FILE *out = fopen(path, "w");
        assert_non_null(out);
        fwrite(gen, 1, gen_len, out);
        assert_int_equal(fclose(out), 0);
        free(gen);
        return;
    }
    FILE *in = fopen(path, "r");
    if (in == NULL)
        fail_msg("%s is missing; run MOAT_UPDATE_DOCS=1 on this test to generate it", path);
    char *doc = xmalloc(gen_len + 2);
    size_t doc_len = fread(doc, 1, gen_len + 1, in);
    fclose(in);
    bool same = doc_len == gen_len && memcmp(doc, gen, gen_len) == 0;
    free(doc);
    free(gen);
    if (!same)
        fail_msg("%s differs from the settings table in src/core/settings.c; regenerate it "
                 "with MOAT_UPDATE_DOCS=1 meson test -C BUILD settings, and commit it", path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_parse_units),
        cmocka_unit_test(test_parse_hostport),
        cmocka_unit_test(test_file_all_types),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_error_format),
        cmocka_unit_test(test_file_long_line),
        cmocka_unit_test(test_file_missing),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_finish),
        cmocka_unit_test(test_print),
        cmocka_unit_test(test_runtime),
        cmocka_unit_test(test_reference_marks_runtime),
        cmocka_unit_test(test_reference_in_sync),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
