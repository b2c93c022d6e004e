/*
 * store_backup.h - a consistent copy of a SQLite database file while moatd
 * uses it (the configuration store, the archive, the tracking database), for
 * `moat backup` (src/backup/).  Kept apart from store.h: only the backup
 * module needs it, and nothing here leaks sqlite3 types.
 */
#ifndef MOAT_STORE_BACKUP_H
#define MOAT_STORE_BACKUP_H

#include "../core/core.h"

/* store_backup_file - copy the database at src into a new file dst (mode
 * 0600, fsynced) with SQLite's online backup, in one step so the copy is one
 * snapshot: writers that commit meanwhile are not in it, and are not blocked
 * (WAL).  *schema gets the copy's PRAGMA user_version.  0, or -1 with err */
int store_backup_file(const char *src, const char *dst, int *schema, struct error *err);
/* store_backup_schema_latest - the configuration store's newest schema
 * version this program knows (a restore refuses a newer backup) */
int store_backup_schema_latest(void);

#endif
