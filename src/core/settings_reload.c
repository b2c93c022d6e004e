/*
 * settings_reload.c - moat.conf read again at SIGHUP (settings_reload.h).
 *
 * Entry points: settings_reload_read (any thread: file I/O), and
 * settings_reload_apply (the event loop: it writes the runtime fields).
 * The comparison is on each row's value in file syntax, as
 * settings_describe writes it, so "10240" and "10k" are the same value.
 */
#include <string.h>
#include "settings_reload.h"

int settings_reload_read(struct moat_settings *fresh, const char *path, bool required,
                         struct error *err)
{
    settings_defaults(fresh);
    if (settings_load_file(fresh, path, required, err) < 0 || settings_finish(fresh, err) < 0) {
        settings_free(fresh);
        return -1;
    }
    return 0;
}

/* reload_row - row i changed from the old file to the fresh one */
static void reload_row(struct moat_settings *s, const struct settings_info *info,
                       const char *value, struct settings_reload_counts *out)
{
    char shown[256];
    struct error err = {0};

    if (!info->runtime) {
        log_warn("event=setting_needs_restart key=%s reason=\"read at start; restart moatd to "
                 "use the new value\"", info->name);
        out->needs_restart++;
        return;
    }
    int rc = settings_apply_file(s, info->name, value, info->source, &err);
    if (rc < 0) {
        /* settings_reload_read validated it: only a table bug gets here */
        log_error("event=setting_reload_failed key=%s reason=\"%s\"", info->name, err.msg);
    } else if (rc > 0) {
        log_info("event=setting_shadowed key=%s value=%s reason=\"a value stored in the "
                 "database or given with -o outranks moat.conf\"", info->name,
                 log_quote(shown, sizeof shown, value));
        out->shadowed++;
    } else {
        log_info("event=setting_reloaded key=%s value=%s", info->name,
                 log_quote(shown, sizeof shown, value));
        out->applied++;
    }
}

void settings_reload_apply(struct moat_settings *s, const struct moat_settings *old,
                           const struct moat_settings *fresh,
                           struct settings_reload_counts *out)
{
    struct buf a, b;

    memset(out, 0, sizeof *out);
    buf_init(&a);
    buf_init(&b);
    for (size_t i = 0; i < settings_count(); i++) {
        struct settings_info io, info;
        buf_reset(&a);
        buf_reset(&b);
        settings_describe(old, i, &io, &a);
        settings_describe(fresh, i, &info, &b);
        /* a secret row reads "(redacted)" in both: no secret setting is
         * runtime, so it could only ever need a restart anyway */
        if (strcmp(buf_cstr(&a), buf_cstr(&b)) == 0)
            continue;
        reload_row(s, &info, buf_cstr(&b), out);
    }
    buf_free(&a);
    buf_free(&b);
}
