/*
 * backup.c - making a backup (moatd, for GET /api/v1/backup) and restoring
 * one (the moat CLI, locally).  See backup.h for the format.
 *
 *   backup_create   copies every member into a private directory under the
 *                   state directory (databases with SQLite's online backup,
 *                   store_backup.c; files as they are), hashes the copies,
 *                   and writes the tar into an unlinked temporary file that
 *                   the API streams.
 *   backup_restore  pass 1 reads the whole file and verifies the manifest's
 *                   own checksum, every member's size and SHA-256, and that
 *                   nothing is missing or extra; pass 2 writes every member
 *                   to a temporary name beside its destination (hashing it
 *                   again: the file may not change between the passes), and
 *                   only when all are written and synced renames them.
 *
 * members[] is the one table of what a backup holds and where each member
 * comes from and goes: a restore maps names to destinations through it,
 * never through the names in the file.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <sodium.h>
#include "backup.h"
#include "backup_priv.h"
#include "../store/store_backup.h"

#define MANIFEST_NAME "manifest.json"
#define MANIFEST_SUM_NAME "manifest.sha256"
#define MANIFEST_MAX (1024 * 1024)
#define SETTINGS_FILE_MAX (1024 * 1024)
#define COPY_CHUNK 65536

enum member_kind {
    MEMBER_DATABASE,     /* a SQLite file: online backup; stale -wal/-shm removed on restore */
    MEMBER_FILE,         /* a key or certificate: copied as is */
    MEMBER_SETTINGS,     /* the settings file: restored at --config, paths rewritten */
};

struct member {
    const char *name;        /* in the tar, and relative to STATE on restore */
    enum member_kind kind;
    const char *setting;     /* the setting that may name its file; NULL = fixed place */
    bool archive;            /* only with --with-archive */
};

/* members - everything a backup can hold, in tar order */
static const struct member members[] = {
    { "moat.db", MEMBER_DATABASE, "database", false },
    { "secret.key", MEMBER_FILE, NULL, false },
    { "tls/cert.pem", MEMBER_FILE, "tls_cert", false },
    { "tls/key.pem", MEMBER_FILE, "tls_key", false },
    { "tls/http-cert.pem", MEMBER_FILE, "http_tls_cert", false },
    { "tls/http-key.pem", MEMBER_FILE, "http_tls_key", false },
    { "moat.conf", MEMBER_SETTINGS, NULL, false },
    { "archive.db", MEMBER_DATABASE, "archive_database", true },
    { "tracking.db", MEMBER_DATABASE, "tracking_database", true },
};
#define N_MEMBERS (sizeof members / sizeof members[0])

/* settings that name places a restore does not carry over (the spool starts
 * empty: queued mail is not in a backup) */
static const char *const dropped_settings[] = { "spool_dir", NULL };

static const struct member *member_find(const char *name)
{
    for (size_t i = 0; i < N_MEMBERS; i++)
        if (strcmp(members[i].name, name) == 0)
            return &members[i];
    return NULL;
}

static void hex_digest(char out[65], const unsigned char d[crypto_hash_sha256_BYTES])
{
    sodium_bin2hex(out, 65, d, crypto_hash_sha256_BYTES);
}

/* --- making a backup --- */

/* file_exists - a regular file at path */
static bool file_exists(const char *path)
{
    struct stat st;
    return path != NULL && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* setting_value - the text of setting name in s ("" when unset or unknown) */
static const char *setting_value(const struct moat_settings *s, const char *name)
{
    if (strcmp(name, "database") == 0)
        return s->database;
    if (strcmp(name, "archive_database") == 0)
        return s->archive_database;
    if (strcmp(name, "tracking_database") == 0)
        return s->tracking_database;
    if (strcmp(name, "tls_cert") == 0)
        return s->tls_cert;
    if (strcmp(name, "tls_key") == 0)
        return s->tls_key;
    if (strcmp(name, "http_tls_cert") == 0)
        return s->http_tls_cert;
    if (strcmp(name, "http_tls_key") == 0)
        return s->http_tls_key;
    return "";
}

/* source_path - where member m lives on this machine (caller frees), NULL
 * when the daemon has none (no HTTPS, no settings file, no archive yet) */
static char *source_path(const struct member *m, const struct backup_source *src)
{
    const struct moat_settings *s = src->settings;
    char *p;
    if (m->archive && !src->with_archive)
        return NULL;
    if (m->kind == MEMBER_SETTINGS)
        p = src->config_path != NULL ? xstrdup(src->config_path) : NULL;
    else if (m->setting != NULL && setting_value(s, m->setting) != NULL &&
             setting_value(s, m->setting)[0] != '\0')
        p = xstrdup(setting_value(s, m->setting));
    else if (strncmp(m->name, "tls/http-", 9) == 0)
        p = NULL;                    /* HTTPS has no generated default */
    else
        p = xasprintf("%s/%s", s->state_dir, m->name);
    if (p != NULL && !file_exists(p)) {
        free(p);
        return NULL;
    }
    return p;
}

/* copy_file - src to a new file dst (0600); 0 / -1 with err */
static int copy_file(const char *src, const char *dst, struct error *err)
{
    char chunk[COPY_CHUNK];
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        error_set(err, "", "%s: cannot open: %s", src, strerror(errno));
        return -1;
    }
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (out < 0) {
        error_set(err, "", "%s: cannot create: %s", dst, strerror(errno));
        close(in);
        return -1;
    }
    ssize_t n;
    int rc = 0;
    while ((n = read(in, chunk, sizeof chunk)) > 0)
        if (backup_write_all(out, chunk, (size_t)n) < 0) {
            rc = -1;
            break;
        }
    if (n < 0 || rc < 0) {
        error_set(err, "", "cannot copy %s: %s", src, strerror(errno));
        rc = -1;
    }
    close(in);
    close(out);
    return rc;
}

/* hash_file - SHA-256 and size of the file at path */
static int hash_file(const char *path, char hex[65], uint64_t *size, struct error *err)
{
    char chunk[COPY_CHUNK];
    crypto_hash_sha256_state h;
    unsigned char d[crypto_hash_sha256_BYTES];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        error_set(err, "", "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    crypto_hash_sha256_init(&h);
    *size = 0;
    ssize_t n;
    while ((n = read(fd, chunk, sizeof chunk)) > 0) {
        crypto_hash_sha256_update(&h, (const unsigned char *)chunk, (unsigned long long)n);
        *size += (uint64_t)n;
    }
    close(fd);
    if (n < 0) {
        error_set(err, "", "%s: cannot read: %s", path, strerror(errno));
        return -1;
    }
    crypto_hash_sha256_final(&h, d);
    hex_digest(hex, d);
    return 0;
}

/* tmp_name - the flat name of member m's copy in the private directory */
static char *tmp_name(const char *dir, const struct member *m)
{
    char *p = xasprintf("%s/%s", dir, m->name);
    for (char *s = p + strlen(dir) + 1; *s; s++)
        if (*s == '/')
            *s = '-';
    return p;
}

/* collect - copy every member into dir; their manifest entries into list */
static int collect(const struct backup_source *src, const char *dir, json_t *list, int *schema,
                   struct error *err)
{
    for (size_t i = 0; i < N_MEMBERS; i++) {
        const struct member *m = &members[i];
        char *from = source_path(m, src);
        if (from == NULL)
            continue;
        char *to = tmp_name(dir, m);
        int version = -1, rc;
        if (m->kind == MEMBER_DATABASE)
            rc = store_backup_file(from, to, &version, err);
        else
            rc = copy_file(from, to, err);
        char hex[65];
        uint64_t size = 0;
        if (rc == 0)
            rc = hash_file(to, hex, &size, err);
        free(to);
        if (rc < 0) {
            free(from);
            return -1;
        }
        if (i == 0)
            *schema = version;
        json_array_append_new(list, json_pack("{s:s, s:I, s:s, s:s}", "name", m->name,
                                              "size", (json_int_t)size, "sha256", hex,
                                              "source", from));
        free(from);
    }
    if (*schema < 0) {
        error_set(err, "", "the configuration database is missing from the backup");
        return -1;
    }
    return 0;
}

/* write_buffer_member - a member whose content is in memory */
static int write_buffer_member(int fd, const char *name, const char *data, size_t len,
                               int64_t now, struct error *err)
{
    if (tar_write_header(fd, name, len, now, err) < 0)
        return -1;
    if (backup_write_all(fd, data, len) < 0) {
        error_set(err, "", "cannot write the backup: %s", strerror(errno));
        return -1;
    }
    return tar_write_pad(fd, len, err);
}

/* write_file_member - a member copied from the file at path */
static int write_file_member(int fd, const char *name, const char *path, uint64_t size,
                             int64_t now, struct error *err)
{
    char chunk[COPY_CHUNK];
    int in = open(path, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        error_set(err, "", "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    int rc = tar_write_header(fd, name, size, now, err);
    uint64_t left = size;
    while (rc == 0 && left > 0) {
        ssize_t n = read(in, chunk, left < sizeof chunk ? (size_t)left : sizeof chunk);
        if (n <= 0 || backup_write_all(fd, chunk, (size_t)n) < 0) {
            error_set(err, "", "cannot copy %s into the backup: %s", path,
                      n == 0 ? "it shrank" : strerror(errno));
            rc = -1;
            break;
        }
        left -= (uint64_t)n;
    }
    close(in);
    return rc < 0 ? -1 : tar_write_pad(fd, size, err);
}

/* write_tar - manifest, members (from their copies in dir), manifest sum */
static int write_tar(int fd, json_t *manifest, const char *dir, struct error *err)
{
    int64_t now = (int64_t)time(NULL);
    char *text = json_dumps(manifest, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    unsigned char d[crypto_hash_sha256_BYTES];
    char sum[80];
    crypto_hash_sha256(d, (const unsigned char *)text, strlen(text));
    hex_digest(sum, d);
    str_copy(sum + 64, sizeof sum - 64, "  " MANIFEST_NAME "\n");   /* sha256sum(1) style */
    int rc = write_buffer_member(fd, MANIFEST_NAME, text, strlen(text), now, err);
    free(text);
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(manifest, "members"), i, e) {
        if (rc < 0)
            break;
        const struct member *m = member_find(json_string_value(json_object_get(e, "name")));
        char *path = tmp_name(dir, m);
        rc = write_file_member(fd, m->name, path,
                               (uint64_t)json_integer_value(json_object_get(e, "size")), now, err);
        free(path);
    }
    if (rc == 0)
        rc = write_buffer_member(fd, MANIFEST_SUM_NAME, sum, strlen(sum), now, err);
    if (rc == 0)
        rc = tar_write_end(fd, err);
    return rc;
}

/* remove_dir - the private directory and the copies in it */
static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d != NULL) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            char *p = xasprintf("%s/%s", dir, e->d_name);
            unlink(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

int backup_create(const struct backup_source *src, json_t **manifest_out, struct error *err)
{
    memset(err, 0, sizeof *err);
    char *dir = xasprintf("%s/.backup-XXXXXX", src->settings->state_dir);
    if (mkdtemp(dir) == NULL) {
        error_set(err, "", "cannot create a directory for the backup in %s: %s",
                  src->settings->state_dir, strerror(errno));
        free(dir);
        return -1;
    }
    char created[32], host[256] = "";
    time_iso8601(created, sizeof created, time(NULL));
    gethostname(host, sizeof host - 1);
    json_t *list = json_array();
    json_t *manifest = json_pack("{s:s, s:i, s:s, s:s, s:s, s:b}", "format", "moat-backup",
                                 "format_version", BACKUP_FORMAT_VERSION, "moat_version",
                                 MOAT_VERSION, "created", created, "hostname", host,
                                 "with_archive", src->with_archive);
    int schema = -1, fd = -1;
    if (collect(src, dir, list, &schema, err) == 0) {
        json_object_set_new(manifest, "schema_version", json_integer(schema));
        json_object_set(manifest, "members", list);
        char *tar = xasprintf("%s/backup.tar", dir);
        fd = open(tar, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
            error_set(err, "", "%s: cannot create: %s", tar, strerror(errno));
        free(tar);
        if (fd >= 0 && (write_tar(fd, manifest, dir, err) < 0 || lseek(fd, 0, SEEK_SET) < 0)) {
            close(fd);
            fd = -1;
        }
    }
    json_decref(list);
    remove_dir(dir);        /* the open tar lives on, unlinked, until its reader closes it */
    free(dir);
    if (fd >= 0 && manifest_out != NULL)
        *manifest_out = json_incref(manifest);
    json_decref(manifest);
    return fd;
}

/* --- restoring --- */

/* one member as the manifest describes it */
struct expect {
    const struct member *m;
    uint64_t size;
    char sha256[65];
    bool seen;
    char *tmp;               /* pass 2: the temporary file beside its destination */
    char *dest;
};

struct restore {
    const struct backup_target *t;
    FILE *f;
    json_t *manifest;
    struct expect exp[N_MEMBERS];
    size_t n_exp;
    char manifest_sum[65];
    int lock_fd;
    /* the owner of an existing state directory (the packaged /var/lib/moat is
     * moat's): a restore run as root gives the files to it, so a moatd that
     * never runs as root can read them */
    bool chown_files;
    uid_t uid;
    gid_t gid;
};

/* read_small - size octets of f into memory (NUL-terminated), hashed */
static char *read_small(FILE *f, uint64_t size, size_t max, const char *what,
                        char hex[65], struct error *err)
{
    if (size > max) {
        error_set(err, "", "%s is too large (%llu octets)", what, (unsigned long long)size);
        return NULL;
    }
    char *buf = xmalloc((size_t)size + 1);
    if (fread(buf, 1, (size_t)size, f) != (size_t)size) {
        error_set(err, "", "truncated: the file ends inside %s", what);
        free(buf);
        return NULL;
    }
    buf[size] = '\0';
    unsigned char d[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(d, (const unsigned char *)buf, size);
    hex_digest(hex, d);
    return buf;
}

/* jstr - member key of o as a string, "" when missing */
static const char *jstr(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s != NULL ? s : "";
}

/* parse_manifest - the expected members from the manifest's text */
static int parse_manifest(struct restore *r, const char *text, struct error *err)
{
    json_error_t je;
    r->manifest = json_loads(text, 0, &je);
    json_t *mf = r->manifest;
    if (mf == NULL || !json_is_object(mf) ||
        strcmp(jstr(mf, "format"), "moat-backup") != 0) {
        error_set(err, "", "not a moat backup: its manifest is not valid");
        return -1;
    }
    json_int_t fv = json_integer_value(json_object_get(mf, "format_version"));
    if (fv != BACKUP_FORMAT_VERSION) {
        error_set(err, "", "backup format version %lld: this moat reads version %d",
                  (long long)fv, BACKUP_FORMAT_VERSION);
        return -1;
    }
    json_int_t schema = json_integer_value(json_object_get(mf, "schema_version"));
    if (schema <= 0 || schema > store_backup_schema_latest()) {
        error_set(err, "", "the backup's database schema version is %lld; this moat knows up "
                  "to %d: restore with the moat version that made it (%s) or newer",
                  (long long)schema, store_backup_schema_latest(),
                  jstr(mf, "moat_version"));
        return -1;
    }
    size_t i;
    json_t *e;
    json_t *list = json_object_get(mf, "members");
    if (!json_is_array(list) || json_array_size(list) > N_MEMBERS) {
        error_set(err, "", "not a moat backup: its manifest has no member list");
        return -1;
    }
    json_array_foreach(list, i, e) {
        struct expect *x = &r->exp[r->n_exp];
        const char *name = json_string_value(json_object_get(e, "name"));
        const char *sum = json_string_value(json_object_get(e, "sha256"));
        json_t *size = json_object_get(e, "size");
        x->m = name ? member_find(name) : NULL;
        if (x->m == NULL || sum == NULL || strlen(sum) != 64 || !json_is_integer(size) ||
            json_integer_value(size) < 0) {
            error_set(err, "", "the manifest lists an unknown or malformed member \"%s\" "
                      "(made by a newer moat?)", name ? name : "?");
            return -1;
        }
        for (size_t j = 0; j < r->n_exp; j++)
            if (r->exp[j].m == x->m) {
                error_set(err, "", "the manifest lists %s twice", name);
                return -1;
            }
        x->size = (uint64_t)json_integer_value(size);
        str_copy(x->sha256, sizeof x->sha256, sum);
        r->n_exp++;
    }
    if (r->n_exp == 0 || r->exp[0].m != &members[0]) {
        error_set(err, "", "the backup holds no configuration database");
        return -1;
    }
    return 0;
}

static struct expect *expect_find(struct restore *r, const char *name)
{
    for (size_t i = 0; i < r->n_exp; i++)
        if (strcmp(r->exp[i].m->name, name) == 0)
            return &r->exp[i];
    return NULL;
}

/* copy_member - size octets of f through SHA-256, to out when out >= 0;
 * whether the digest is expected */
static int copy_member(FILE *f, const struct expect *x, int out, struct error *err)
{
    char chunk[COPY_CHUNK];
    crypto_hash_sha256_state h;
    unsigned char d[crypto_hash_sha256_BYTES];
    char hex[65];
    uint64_t left = x->size;
    crypto_hash_sha256_init(&h);
    while (left > 0) {
        size_t want = left < sizeof chunk ? (size_t)left : sizeof chunk;
        if (fread(chunk, 1, want, f) != want) {
            error_set(err, "", "truncated: the file ends inside %s", x->m->name);
            return -1;
        }
        crypto_hash_sha256_update(&h, (const unsigned char *)chunk, want);
        if (out >= 0 && backup_write_all(out, chunk, want) < 0) {
            error_set(err, "", "cannot write %s: %s", x->m->name, strerror(errno));
            return -1;
        }
        left -= want;
    }
    if (tar_skip_pad(f, x->size, err) < 0)
        return -1;
    crypto_hash_sha256_final(&h, d);
    hex_digest(hex, d);
    if (sodium_memcmp(hex, x->sha256, 64) != 0) {
        error_set(err, "", "%s is damaged: its SHA-256 does not match the manifest", x->m->name);
        return -1;
    }
    return 0;
}

/* read_trailer - after the end blocks: only zeros (a tar(1) record's padding) */
static int read_trailer(FILE *f, struct error *err)
{
    int c;
    struct tar_member m;
    if (tar_read_header(f, &m, err) != 0) {      /* the second end block */
        if (err->msg[0] == '\0')
            error_set(err, "", "damaged: data after the end of the archive");
        return -1;
    }
    while ((c = fgetc(f)) != EOF)
        if (c != 0) {
            error_set(err, "", "damaged: data after the end of the archive");
            return -1;
        }
    return 0;
}

/* walk - read the archive once: out_fd(x) says where each member's octets
 * go (-1: only verify); every size and checksum is checked */
static int walk(struct restore *r, int (*open_out)(struct restore *, struct expect *,
                                                   struct error *), struct error *err)
{
    struct tar_member m;
    char hex[65];
    rewind(r->f);
    for (size_t i = 0; i < r->n_exp; i++)
        r->exp[i].seen = false;
    if (tar_read_header(r->f, &m, err) != 1 || strcmp(m.name, MANIFEST_NAME) != 0) {
        if (err->msg[0] == '\0')
            error_set(err, "", "not a moat backup: it does not start with %s", MANIFEST_NAME);
        return -1;
    }
    char *text = read_small(r->f, m.size, MANIFEST_MAX, MANIFEST_NAME, hex, err);
    if (text == NULL || tar_skip_pad(r->f, m.size, err) < 0) {
        free(text);
        return -1;
    }
    int rc = r->manifest == NULL ? parse_manifest(r, text, err) : 0;
    free(text);
    if (rc < 0)
        return -1;
    str_copy(r->manifest_sum, sizeof r->manifest_sum, hex);
    for (;;) {
        if (tar_read_header(r->f, &m, err) != 1) {
            if (err->msg[0] == '\0')
                error_set(err, "", "damaged: %s is missing", MANIFEST_SUM_NAME);
            return -1;
        }
        if (strcmp(m.name, MANIFEST_SUM_NAME) == 0)
            break;
        struct expect *x = expect_find(r, m.name);
        if (x == NULL || x->seen) {
            error_set(err, "", "damaged: member %s is %s", m.name,
                      x ? "there twice" : "not in the manifest");
            return -1;
        }
        if (m.size != x->size) {
            error_set(err, "", "%s is damaged: %llu octets, the manifest says %llu", m.name,
                      (unsigned long long)m.size, (unsigned long long)x->size);
            return -1;
        }
        int out = open_out != NULL ? open_out(r, x, err) : -1;
        if (open_out != NULL && out < 0)
            return -1;
        rc = copy_member(r->f, x, out, err);
        if (out >= 0 && rc == 0 && fsync(out) < 0) {
            error_set(err, "", "%s: cannot sync: %s", x->tmp, strerror(errno));
            rc = -1;
        }
        if (out >= 0)
            close(out);
        if (rc < 0)
            return -1;
        x->seen = true;
    }
    char *sum = read_small(r->f, m.size, 256, MANIFEST_SUM_NAME, hex, err);
    if (sum == NULL || tar_skip_pad(r->f, m.size, err) < 0) {
        free(sum);
        return -1;
    }
    rc = strlen(sum) >= 64 && sodium_memcmp(sum, r->manifest_sum, 64) == 0 ? 0 : -1;
    free(sum);
    if (rc < 0) {
        error_set(err, "", "%s is damaged: its SHA-256 does not match %s", MANIFEST_NAME,
                  MANIFEST_SUM_NAME);
        return -1;
    }
    for (size_t i = 0; i < r->n_exp; i++)
        if (!r->exp[i].seen) {
            error_set(err, "", "damaged: %s is listed in the manifest but missing",
                      r->exp[i].m->name);
            return -1;
        }
    return read_trailer(r->f, err);
}

/* check_target - moatd is not running there; empty unless forced */
static int check_target(struct restore *r, struct error *err)
{
    const struct backup_target *t = r->t;
    if (t->state_dir[0] != '/') {
        error_set(err, "state_dir", "--state-dir must be an absolute path");
        return -1;
    }
    char *lock = xasprintf("%s/moatd.lock", t->state_dir);
    r->lock_fd = open(lock, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    free(lock);
    if (r->lock_fd >= 0 && flock(r->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        error_set(err, "state_dir", "moatd is running on %s (it holds moatd.lock): stop it "
                  "first", t->state_dir);
        return -1;
    }
    DIR *d = opendir(t->state_dir);
    if (d == NULL && errno != ENOENT) {
        error_set(err, "state_dir", "%s: %s", t->state_dir, strerror(errno));
        return -1;
    }
    bool empty = true;
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
            strcmp(e->d_name, "moatd.lock") != 0)
            empty = false;
    if (d != NULL)
        closedir(d);
    if (!empty && !t->force) {
        error_set(err, "state_dir", "%s is not empty: restore into a new state directory, or "
                  "give --force to replace its configuration", t->state_dir);
        return -1;
    }
    struct stat st;
    if (t->config_path != NULL && lstat(t->config_path, &st) == 0 && !t->force) {
        error_set(err, "config", "%s exists: give --force to replace it", t->config_path);
        return -1;
    }
    return 0;
}

/* open_dest - pass 2: the temporary file for member x (settings: in memory) */
static int open_dest(struct restore *r, struct expect *x, struct error *err)
{
    if (x->m->kind == MEMBER_SETTINGS) {
        /* beside its destination: a rename does not cross file systems */
        x->dest = r->t->config_path ? xstrdup(r->t->config_path) : NULL;
        x->tmp = x->dest ? xasprintf("%s.restore-tmp", x->dest)
                         : xasprintf("%s/.restore-moat.conf", r->t->state_dir);
    } else {
        x->dest = xasprintf("%s/%s", r->t->state_dir, x->m->name);
        x->tmp = xasprintf("%s.restore-tmp", x->dest);
    }
    unlink(x->tmp);
    int fd = open(x->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        error_set(err, "", "%s: cannot create: %s", x->tmp, strerror(errno));
    else if (r->chown_files && fchown(fd, r->uid, r->gid) < 0) {
        error_set(err, "", "cannot give %s to uid %u: %s", x->tmp, (unsigned)r->uid,
                  strerror(errno));
        close(fd);
        fd = -1;
    }
    return fd;
}

/* line_key - the setting a settings-file line sets, into key; false for
 * comments and blank lines */
static bool line_key(const char *line, size_t len, char *key, size_t size)
{
    size_t i = 0, k = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    if (i == len || line[i] == '#')
        return false;
    while (i < len && line[i] != '=' && line[i] != ' ' && line[i] != '\t' && k + 1 < size)
        key[k++] = line[i++];
    key[k] = '\0';
    return k > 0;
}

/* restored_path - the new value of a path setting: the member's place under
 * the new state directory, NULL when the line is to be commented out */
static char *restored_path(struct restore *r, const char *key)
{
    if (strcmp(key, "state_dir") == 0)
        return xstrdup(r->t->state_dir);
    for (size_t i = 0; i < r->n_exp; i++)
        if (r->exp[i].m->setting != NULL && strcmp(r->exp[i].m->setting, key) == 0)
            return xasprintf("%s/%s", r->t->state_dir, r->exp[i].m->name);
    return NULL;
}

static bool is_path_setting(const char *key)
{
    if (strcmp(key, "state_dir") == 0)
        return true;
    for (size_t i = 0; dropped_settings[i] != NULL; i++)
        if (strcmp(dropped_settings[i], key) == 0)
            return true;
    for (size_t i = 0; i < N_MEMBERS; i++)
        if (members[i].setting != NULL && strcmp(members[i].setting, key) == 0)
            return true;
    return false;
}

/* rewrite_settings - the settings file with its paths moved to the new state
 * directory: each path line is kept as a comment and followed by its new value */
static int rewrite_settings(struct restore *r, struct expect *x, struct error *err)
{
    char hex[65];
    FILE *f = fopen(x->tmp, "re");
    if (f == NULL) {
        error_set(err, "", "%s: %s", x->tmp, strerror(errno));
        return -1;
    }
    char *text = read_small(f, x->size, SETTINGS_FILE_MAX, "the settings file", hex, err);
    fclose(f);
    if (text == NULL)
        return -1;
    struct buf out;
    buf_init(&out);
    bool state_set = false;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char key[64];
        if (line_key(p, len, key, sizeof key) && is_path_setting(key)) {
            char *value = restored_path(r, key);
            buf_printf(&out, "# moat restore: %.*s\n", (int)len, p);
            if (value != NULL)
                buf_printf(&out, "%s = %s\n", key, value);
            state_set |= strcmp(key, "state_dir") == 0;
            free(value);
        } else {
            buf_printf(&out, "%.*s\n", (int)len, p);
        }
        p += len + (nl ? 1 : 0);
    }
    if (!state_set)
        buf_printf(&out, "# moat restore: the restored state directory\nstate_dir = %s\n",
                   r->t->state_dir);
    free(text);
    int fd = open(x->tmp, O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW);
    int rc = fd >= 0 && backup_write_all(fd, out.data, out.len) == 0 && fsync(fd) == 0 ? 0 : -1;
    if (rc < 0)
        error_set(err, "", "%s: cannot write: %s", x->tmp, strerror(errno));
    if (fd >= 0)
        close(fd);
    buf_free(&out);
    return rc;
}

/* sync_dir - make the renames in dir durable */
static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* put_in_place - rename every temporary file to its destination */
static int put_in_place(struct restore *r, json_t *files, struct error *err)
{
    for (size_t i = 0; i < r->n_exp; i++) {
        struct expect *x = &r->exp[i];
        if (x->dest == NULL) {
            unlink(x->tmp);          /* the settings file, not asked for */
            continue;
        }
        if (x->m->kind == MEMBER_DATABASE) {
            /* a -wal left by an older database would be replayed into the restored one */
            const char *sfx[] = { "-wal", "-shm", "-journal" };
            for (size_t j = 0; j < 3; j++) {
                char *p = xasprintf("%s%s", x->dest, sfx[j]);
                unlink(p);
                free(p);
            }
        }
        if (rename(x->tmp, x->dest) < 0) {
            error_set(err, "", "cannot put %s in place: %s", x->dest, strerror(errno));
            return -1;
        }
        json_array_append_new(files, json_pack("{s:s, s:s, s:I}", "member", x->m->name, "path",
                                               x->dest, "size", (json_int_t)x->size));
    }
    char *tls = xasprintf("%s/tls", r->t->state_dir);
    sync_dir(tls);
    free(tls);
    sync_dir(r->t->state_dir);
    return 0;
}

/* make_dirs - the state directory and its tls/ (0700), and the lock */
static int make_dirs(struct restore *r, struct error *err)
{
    char *tls = xasprintf("%s/tls", r->t->state_dir);
    struct stat st;
    int rc = 0;
    if (stat(r->t->state_dir, &st) == 0 && geteuid() == 0 && st.st_uid != 0) {
        r->chown_files = true;
        r->uid = st.st_uid;
        r->gid = st.st_gid;
    }
    if (mkdir(r->t->state_dir, 0700) < 0 && errno != EEXIST) {
        error_set(err, "state_dir", "cannot create %s: %s", r->t->state_dir, strerror(errno));
        rc = -1;
    } else if (mkdir(tls, 0700) < 0 && errno != EEXIST) {
        error_set(err, "state_dir", "cannot create %s: %s", tls, strerror(errno));
        rc = -1;
    } else if (r->chown_files && chown(tls, r->uid, r->gid) < 0) {
        error_set(err, "state_dir", "cannot give %s to uid %u: %s", tls, (unsigned)r->uid,
                  strerror(errno));
        rc = -1;
    }
    free(tls);
    if (rc == 0 && r->lock_fd < 0) {
        /* hold moatd's lock while writing: it cannot start on a half-restored directory */
        char *lock = xasprintf("%s/moatd.lock", r->t->state_dir);
        r->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        free(lock);
        if (r->lock_fd < 0 || flock(r->lock_fd, LOCK_EX | LOCK_NB) < 0) {
            error_set(err, "state_dir", "moatd started on %s meanwhile", r->t->state_dir);
            rc = -1;
        }
    }
    /* moatd opens its lock read-write: it must be the owner's too */
    if (rc == 0 && r->chown_files && fchown(r->lock_fd, r->uid, r->gid) < 0) {
        error_set(err, "state_dir", "cannot give moatd.lock to uid %u: %s", (unsigned)r->uid,
                  strerror(errno));
        rc = -1;
    }
    return rc;
}

static void restore_free(struct restore *r, bool keep)
{
    for (size_t i = 0; i < r->n_exp; i++) {
        if (r->exp[i].tmp != NULL && !keep)
            unlink(r->exp[i].tmp);
        free(r->exp[i].tmp);
        free(r->exp[i].dest);
    }
    if (r->lock_fd >= 0)
        close(r->lock_fd);
    if (r->f != NULL)
        fclose(r->f);
    json_decref(r->manifest);
}

int backup_restore(const char *file, const struct backup_target *t, json_t **report,
                   struct error *err)
{
    struct restore r = { .t = t, .lock_fd = -1 };
    memset(err, 0, sizeof *err);
    *report = NULL;
    r.f = fopen(file, "rbe");
    if (r.f == NULL) {
        error_set(err, "file", "%s: %s", file, strerror(errno));
        return -1;
    }
    int rc = check_target(&r, err);
    /* pass 1: verify everything, write nothing */
    if (rc == 0)
        rc = walk(&r, NULL, err);
    /* pass 2: write beside the destinations, then rename */
    if (rc == 0)
        rc = make_dirs(&r, err);
    if (rc == 0)
        rc = walk(&r, open_dest, err);
    struct expect *conf = expect_find(&r, "moat.conf");
    if (rc == 0 && conf != NULL && conf->dest != NULL)
        rc = rewrite_settings(&r, conf, err);
    json_t *files = json_array();
    if (rc == 0)
        rc = put_in_place(&r, files, err);
    if (rc == 0)
        *report = json_pack("{s:O, s:o, s:s?, s:b}", "manifest", r.manifest, "files", files,
                            "settings", conf && conf->dest ? conf->dest : NULL,
                            "settings_in_backup", conf != NULL);
    else
        json_decref(files);
    restore_free(&r, false);
    return rc;
}

int backup_verify(const char *file, json_t **manifest, struct error *err)
{
    struct restore r = { .lock_fd = -1 };
    memset(err, 0, sizeof *err);
    *manifest = NULL;
    r.f = fopen(file, "rbe");
    if (r.f == NULL) {
        error_set(err, "file", "%s: %s", file, strerror(errno));
        return -1;
    }
    int rc = walk(&r, NULL, err);
    if (rc == 0)
        *manifest = json_incref(r.manifest);
    restore_free(&r, false);
    return rc;
}
