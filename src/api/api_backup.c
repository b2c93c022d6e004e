/*
 * api_backup.c - GET /api/v1/backup[?with_archive=true]: a consistent
 * backup of the running gateway as a tar (backup.h), streamed from an
 * unlinked temporary file that backup_create wrote.  Administrators only
 * (AUTH_PERM_BACKUP: the file holds secret.key and the TLS private key);
 * every download is audit-logged (backup.download) with its manifest.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include "api_priv.h"
#include "api_backup.h"
#include "../backup/backup.h"

struct backup_stream {
    int fd;
};

static long backup_read(void *arg, char *dst, size_t max)
{
    struct backup_stream *b = arg;
    for (;;) {
        ssize_t n = read(b->fd, dst, max);
        if (n < 0 && errno == EINTR)
            continue;
        return n < 0 ? -1 : (long)n;
    }
}

static void backup_stream_free(void *arg)
{
    struct backup_stream *b = arg;
    if (b == NULL)
        return;
    close(b->fd);
    free(b);
}

/* parse_with_archive - ?with_archive=true|false (default false); -1 after a 400 */
static int parse_with_archive(const struct api_request *req, struct api_response *resp, bool *out)
{
    const char *v = api_query(req, "with_archive");
    *out = false;
    if (v == NULL || strcmp(v, "false") == 0)
        return 0;
    if (strcmp(v, "true") == 0) {
        *out = true;
        return 0;
    }
    api_error(resp, 400, "invalid", "with_archive", "with_archive must be true or false");
    return -1;
}

void api_backup_get(struct api_request *req, struct api_response *resp)
{
    struct error err = {0};
    struct backup_source src = {
        .settings = req->cfg->settings,
        .config_path = req->cfg->config_path,
    };
    if (parse_with_archive(req, resp, &src.with_archive) < 0)
        return;
    json_t *manifest = NULL;
    int fd = backup_create(&src, &manifest, &err);
    if (fd < 0) {
        log_error("event=backup_failed reason=\"%s\"", err.msg);
        api_error(resp, 500, "backup_failed", NULL, "the backup failed: %s", err.msg);
        return;
    }
    json_t *names = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(manifest, "members"), i, e)
        json_array_append(names, json_object_get(e, "name"));
    log_info("event=backup members=%zu schema=%lld archive=%s by=%s", json_array_size(names),
             (long long)json_integer_value(json_object_get(manifest, "schema_version")),
             src.with_archive ? "yes" : "no", req->who->name);
    json_t *after = json_pack("{s:o, s:b}", "members", names, "with_archive", src.with_archive);
    api_audit(req, "backup.download", "backup", NULL, after);
    json_decref(after);
    json_decref(manifest);
    struct backup_stream *b = xcalloc(1, sizeof *b);
    b->fd = fd;
    resp->content_type = "application/x-tar";
    xsnprintf(resp->disposition, sizeof resp->disposition,
              "attachment; filename=\"moat-backup.tar\"");
    resp->stream = backup_read;
    resp->stream_free = backup_stream_free;
    resp->stream_arg = b;
}
