/*
 * store_backup.c - online backup of a SQLite database (store_backup.h).
 *
 * sqlite3_backup_step(-1) copies every page under one read transaction, so
 * the copy is the database as of one commit; in WAL mode the daemon's
 * writers go on meanwhile.  The copy is written to a fresh file, closed,
 * then fsynced: a backup that returned 0 is on stable storage.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sqlite3.h>
#include "store_backup.h"
#include "store_priv.h"

/* how long a step may wait on a lock held by the daemon (checkpoint) */
#define BACKUP_BUSY_MS 10000

/* open_src - the source, read-write without create: a reader of a WAL
 * database needs its -shm file, which read-only opens may not create */
static sqlite3 *open_src(const char *src, struct error *err)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(src, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW, NULL);
    if (rc != SQLITE_OK) {
        error_set(err, "", "%s: cannot open database: %s", src,
                  db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, BACKUP_BUSY_MS);
    return db;
}

/* user_version - PRAGMA user_version of db, -1 when unreadable */
static int user_version(sqlite3 *db)
{
    sqlite3_stmt *s;
    int v = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, NULL) != SQLITE_OK)
        return -1;
    if (sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
    return v;
}

/* copy_pages - the online backup proper; 0 or -1 with err */
static int copy_pages(sqlite3 *from, sqlite3 *to, const char *src, struct error *err)
{
    sqlite3_backup *b = sqlite3_backup_init(to, "main", from, "main");
    if (b == NULL) {
        error_set(err, "", "%s: cannot start the backup: %s", src, sqlite3_errmsg(to));
        return -1;
    }
    int rc;
    int waited = 0;
    while ((rc = sqlite3_backup_step(b, -1)) == SQLITE_BUSY || rc == SQLITE_LOCKED) {
        if (waited >= BACKUP_BUSY_MS)
            break;
        sqlite3_sleep(50);
        waited += 50;
    }
    sqlite3_backup_finish(b);
    if (rc != SQLITE_DONE) {
        error_set(err, "", "%s: backup failed: %s", src, sqlite3_errstr(rc));
        return -1;
    }
    return 0;
}

/* sync_file - fsync path (after SQLite closed it) */
static int sync_file(const char *path, struct error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0) {
        error_set(err, "", "%s: cannot sync: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

int store_backup_file(const char *src, const char *dst, int *schema, struct error *err)
{
    memset(err, 0, sizeof *err);
    sqlite3 *from = open_src(src, err);
    if (from == NULL)
        return -1;
    /* a fresh file of mode 0600 before SQLite opens it (it would use 0644) */
    int fd = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        error_set(err, "", "%s: cannot create: %s", dst, strerror(errno));
        sqlite3_close(from);
        return -1;
    }
    close(fd);
    sqlite3 *to = NULL;
    int rc = sqlite3_open_v2(dst, &to, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOFOLLOW, NULL);
    if (rc != SQLITE_OK) {
        error_set(err, "", "%s: cannot open: %s", dst, to ? sqlite3_errmsg(to) : sqlite3_errstr(rc));
        sqlite3_close(to);
        sqlite3_close(from);
        return -1;
    }
    rc = copy_pages(from, to, src, err);
    sqlite3_close(from);
    if (rc == 0) {
        /* a self-contained file: no -wal beside it to carry along */
        sqlite3_exec(to, "PRAGMA journal_mode = DELETE", NULL, NULL, NULL);
        *schema = user_version(to);
    }
    sqlite3_close(to);
    if (rc < 0)
        return -1;
    return sync_file(dst, err);
}

int store_backup_schema_latest(void)
{
    return store_schema_latest;
}
