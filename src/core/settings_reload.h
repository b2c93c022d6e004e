/*
 * settings_reload.h - moat.conf read again at SIGHUP.
 *
 * moatd keeps the settings as the file alone gave them at start (defaults
 * + moat.conf, no store, no -o) next to its effective settings.  At
 * SIGHUP a thread reads the file afresh (settings_reload_read; a broken
 * file leaves everything as it is), and the loop compares it row by row
 * with the previous file (settings_reload_apply): a changed runtime
 * setting is applied the way the API applies one (settings_apply_file,
 * under the same precedence: a store value or -o still wins); a changed
 * start-up setting is logged `event=setting_needs_restart` and ignored.
 */
#ifndef MOAT_SETTINGS_RELOAD_H
#define MOAT_SETTINGS_RELOAD_H

#include "settings.h"

struct settings_reload_counts {
    int applied;          /* runtime settings now in effect */
    int shadowed;         /* runtime settings under a store value or -o */
    int needs_restart;    /* start-up settings that changed, ignored */
};

/* settings_reload_read - defaults + the file at path + settings_finish into
 * *fresh (a missing file is an error only if required); -1 with err, and
 * *fresh holds nothing to free */
int settings_reload_read(struct moat_settings *fresh, const char *path, bool required,
                         struct error *err);
/* settings_reload_apply - on the loop: apply to s what changed from old to
 * fresh (both from settings_reload_read), log each change, count them */
void settings_reload_apply(struct moat_settings *s, const struct moat_settings *old,
                           const struct moat_settings *fresh,
                           struct settings_reload_counts *out);

#endif
