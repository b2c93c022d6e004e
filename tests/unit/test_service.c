/*
 * test_service.c - issue 11: the sd_notify sender (notify.c) against a
 * real AF_UNIX datagram socket, path and abstract; and moat.conf re-read at
 * SIGHUP (settings_reload.c): runtime settings apply under the same
 * precedence as at start (a store value or -o still wins, a store value
 * then resets to the new file value), start-up settings only count as
 * needing a restart, a key that left the file returns to its default, and
 * a broken file is refused whole.  And log lines carry a syslog priority
 * prefix only when stderr is the journal ($JOURNAL_STREAM); and the roff
 * escapes of the generated manual pages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>
#include "core/notify.h"
#include "core/settings_reload.h"
#include "core/roff.h"
#include "conf_file.h"

/* receiver - a datagram socket bound to name ("@x": abstract) */
static int receiver(const char *name)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    size_t n = strlen(name);
    memcpy(sa.sun_path, name, n);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    if (name[0] == '@')
        sa.sun_path[0] = '\0';
    else
        len++;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, len), 0);
    return fd;
}

static void expect_datagram(int fd, const char *want)
{
    char buf[512];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_string_equal(buf, want);
}

static void test_notify(void **state)
{
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(notify_send("READY=1"), 0);   /* not under a service manager */

    char path[] = "/tmp/moat-test-notify-XXXXXX";
    int tfd = mkstemp(path);
    assert_true(tfd >= 0);
    close(tfd);
    unlink(path);
    int fd = receiver(path);
    setenv("NOTIFY_SOCKET", path, 1);
    assert_int_equal(notify_send("READY=1\nSTATUS=up"), 1);
    expect_datagram(fd, "READY=1\nSTATUS=up");
    assert_int_equal(notify_sendf("STATUS=%d sessions", 3), 1);
    expect_datagram(fd, "STATUS=3 sessions");
    assert_int_equal(notify_reloading("x"), 1);
    char buf[256];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    assert_true(n > 0);
    buf[n] = '\0';
    unsigned long long usec = 0;
    assert_int_equal(sscanf(buf, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=x", &usec), 1);
    assert_true(usec > 0);
    close(fd);
    unlink(path);

    char abstract[64];
    xsnprintf(abstract, sizeof abstract, "@moat-test-notify-%d", (int)getpid());
    fd = receiver(abstract);
    setenv("NOTIFY_SOCKET", abstract, 1);
    assert_int_equal(notify_send("STOPPING=1"), 1);
    expect_datagram(fd, "STOPPING=1");
    close(fd);

    setenv("NOTIFY_SOCKET", "relative/path", 1);
    assert_int_equal(notify_send("READY=1"), -1);
    setenv("NOTIFY_SOCKET", "/nonexistent/moat-notify", 1);
    assert_int_equal(notify_send("READY=1"), -1);
    unsetenv("NOTIFY_SOCKET");
}

static void read_file(struct moat_settings *s, const char *text)
{
    struct error err;
    const char *p = write_conf(text);
    assert_int_equal(settings_reload_read(s, p, true, &err), 0);
    unlink(p);
}

/* value - the effective value of key in file syntax, and its source */
static const char *value(const struct moat_settings *s, const char *key, const char **source)
{
    static char out[128];
    for (size_t i = 0; i < settings_count(); i++) {
        struct settings_info info;
        struct buf b;
        buf_init(&b);
        settings_describe(s, i, &info, &b);
        if (strcmp(info.name, key) == 0) {
            str_copy(out, sizeof out, buf_cstr(&b));
            buf_free(&b);
            *source = settings_source_name(info.source);
            return out;
        }
        buf_free(&b);
    }
    fail_msg("no setting %s", key);
    return NULL;
}

static void test_reload(void **state)
{
    const char *old_text = "state_dir = /tmp/moat-test-state\nsmtp_max_recipients = 200\n"
                           "smtp_max_errors = 20\ndnsbl_threshold = 3\nhttp_threads = 4\n";
    struct moat_settings s, old, fresh;
    struct settings_reload_counts c;
    struct error err;
    const char *src;

    /* running: the file, a store value over smtp_max_errors, -o over dnsbl_threshold */
    read_file(&s, old_text);
    read_file(&old, old_text);
    assert_int_equal(settings_apply_runtime(&s, "smtp_max_errors", "30", &err), 0);
    assert_int_equal(settings_set(&s, "dnsbl_threshold", "5", &err), 0);

    read_file(&fresh, "state_dir = /tmp/moat-test-state\nsmtp_max_recipients = 150\n"
                      "smtp_max_errors = 25\ndnsbl_threshold = 7\nhttp_threads = 8\n"
                      "spool_segment_size = 32M\n");
    settings_reload_apply(&s, &old, &fresh, &c);
    assert_int_equal(c.applied, 1);
    assert_int_equal(c.shadowed, 2);
    assert_int_equal(c.needs_restart, 2);   /* http_threads, spool_segment_size */
    assert_string_equal(value(&s, "smtp_max_recipients", &src), "150");
    assert_string_equal(src, "file");
    assert_string_equal(value(&s, "smtp_max_errors", &src), "30");   /* the store still wins */
    assert_string_equal(src, "store");
    assert_string_equal(value(&s, "dnsbl_threshold", &src), "5");    /* and -o */
    assert_string_equal(src, "command-line");
    assert_string_equal(value(&s, "http_threads", &src), "4");       /* start-up: unchanged */
    assert_string_equal(value(&s, "spool_segment_size", &src), "64M");
    /* dropping the store value returns to the new file value, not the old */
    assert_int_equal(settings_reset_runtime(&s, "smtp_max_errors", &err), 0);
    assert_string_equal(value(&s, "smtp_max_errors", &src), "25");
    assert_string_equal(src, "file");

    /* the key leaves the file: its default again */
    settings_free(&old);
    old = fresh;
    read_file(&fresh, "state_dir = /tmp/moat-test-state\nsmtp_max_errors = 25\n"
                      "dnsbl_threshold = 7\nhttp_threads = 8\nspool_segment_size = 32M\n");
    settings_reload_apply(&s, &old, &fresh, &c);
    assert_int_equal(c.applied, 1);
    assert_int_equal(c.needs_restart, 0);
    assert_string_equal(value(&s, "smtp_max_recipients", &src), "1000");
    assert_string_equal(src, "default");

    /* a broken file is refused whole, with the key named */
    const char *p = write_conf("smtp_max_recipients = 150\nsmtp_max_errors = banana\n");
    struct moat_settings broken;
    assert_int_equal(settings_reload_read(&broken, p, true, &err), -1);
    assert_string_equal(err.field, "smtp_max_errors");
    unlink(p);
    assert_int_equal(settings_reload_read(&broken, "/nonexistent/moat.conf", true, &err), -1);
    assert_int_equal(settings_reload_read(&broken, "/nonexistent/moat.conf", false, &err), 0);
    settings_free(&broken);

    settings_free(&s);
    settings_free(&old);
    settings_free(&fresh);
}

/* logged - log_info and log_warn with stderr on a file; what the file got */
static char *logged(bool journal_env)
{
    static char got[1024];
    char path[] = "/tmp/moat-test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    char js[64];
    xsnprintf(js, sizeof js, "%llu:%llu", (unsigned long long)st.st_dev,
              (unsigned long long)st.st_ino + (journal_env ? 0 : 1));   /* +1: another file */
    setenv("JOURNAL_STREAM", js, 1);
    log_set_level(LOG_INFO);
    log_info("event=one");
    log_warn("event=two");
    dup2(saved, STDERR_FILENO);
    close(saved);
    unsetenv("JOURNAL_STREAM");
    log_set_level(LOG_INFO);
    ssize_t n = pread(fd, got, sizeof got - 1, 0);
    assert_true(n > 0);
    got[n] = '\0';
    close(fd);
    unlink(path);
    return got;
}

static void test_journal_priority(void **state)
{
    const char *j = logged(true);
    assert_true(strncmp(j, "<6>ts=", 6) == 0);
    assert_non_null(strstr(j, "\n<4>ts="));
    assert_non_null(strstr(j, "level=warn event=two"));
    const char *f = logged(false);
    assert_true(strncmp(f, "ts=", 3) == 0);
    assert_null(strchr(f, '<'));
}

/* roff - what roff_text (or roff_bold) writes for in */
static char *roff(const char *in, bool bold)
{
    static char got[512];
    FILE *f = fmemopen(got, sizeof got, "w");
    assert_non_null(f);
    if (bold)
        roff_bold(f, in);
    else
        roff_text(f, in);
    assert_int_equal(fclose(f), 0);
    return got;
}

static void test_roff(void **state)
{
    static const struct { const char *in, *out; } cases[] = {
        /* a leading control character would be a request */
        { ".conf files", "\\&.conf files\n" },
        { "'quoted'", "\\&'quoted'\n" },
        { "a\\b", "a\\eb\n" },
        /* `code` in bold, its '-' copyable; prose hyphens stay */
        { "set `smtp-listen` for built-in", "set \\fBsmtp\\-listen\\fR for built-in\n" },
        /* a new sentence on a new line (and a '.' there protected) */
        { "One. Two", "One.\nTwo\n" },
        { "a\n\nb", "a\n.sp\nb\n" },
        { "x\n.y", "x\n\\&.y\n" },
        { "`open", "\\fBopen\\fR\n" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_string_equal(roff(cases[i].in, false), cases[i].out);
    assert_string_equal(roff("--x\\y", true), "\\fB\\-\\-x\\ey\\fR");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roff),
        cmocka_unit_test(test_journal_priority),
        cmocka_unit_test(test_notify),
        cmocka_unit_test(test_reload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
