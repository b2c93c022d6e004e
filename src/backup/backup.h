/*
 * backup.h - `moat backup` and `moat restore`: what moatd needs to come back
 * on another machine, as one tar file.
 *
 * Design (docs/backup.md): moatd makes the backup, the CLI fetches it with
 * GET /api/v1/backup (administrators only), so it works remotely and needs
 * no access to the state directory; the store is copied with SQLite's
 * online backup, so the copy is consistent while mail flows.  Restore runs
 * on the target machine with moatd stopped (it takes moatd's lock), reading
 * the file twice: every checksum is verified before anything is written.
 *
 * The tar holds, in order: manifest.json (format, versions, creation time,
 * the store's schema version, and every member's size and SHA-256), the
 * members (moat.db, secret.key, tls/..., moat.conf, and with the archive
 * archive.db and tracking.db), then manifest.sha256 (the manifest's own
 * SHA-256), so a changed octet anywhere is found.
 */
#ifndef MOAT_BACKUP_H
#define MOAT_BACKUP_H

#include <stdbool.h>
#include <jansson.h>
#include "../core/core.h"
#include "../core/settings.h"

#define BACKUP_FORMAT_VERSION 1

struct backup_source {
    const struct moat_settings *settings;   /* the running daemon's */
    const char *config_path;   /* the settings file moatd read; NULL or absent = none */
    bool with_archive;         /* also the archive and tracking databases */
};

/* backup_create - the backup as a tar in an unlinked temporary file under
 * the state directory; the file descriptor (at offset 0), or -1 with err.
 * *manifest (when not NULL) gets the manifest (caller decrefs) */
int backup_create(const struct backup_source *src, json_t **manifest, struct error *err);

/* backup_verify - pass 1 of a restore alone: every checksum of the backup
 * at file; 0 with *manifest (caller decrefs), or -1 with err */
int backup_verify(const char *file, json_t **manifest, struct error *err);

struct backup_target {
    const char *state_dir;     /* absolute */
    const char *config_path;   /* where the settings file goes; NULL = not restored */
    bool force;                /* replace files in a non-empty state directory */
};

/* backup_restore - verify every checksum of the backup at file, then write
 * its members under t->state_dir (files 0600, directories 0700) and the
 * settings file at t->config_path with its paths pointing at them.  Refuses
 * while moatd holds the state directory's lock, and a non-empty state
 * directory (or an existing settings file) without force.  *report gets
 * {"manifest": ..., "files": [{"member", "path", "size"}], "settings":
 * PATH|null}.  0, or -1 with err and nothing written */
int backup_restore(const char *file, const struct backup_target *t, json_t **report,
                   struct error *err);

#endif
