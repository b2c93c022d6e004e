/*
 * cli_backup.c - `moat backup FILE [--with-archive]` (GET /api/v1/backup,
 * so it works from any machine that reaches the API) and `moat restore
 * FILE --state-dir DIR [--config PATH] [--force]` (local, with moatd
 * stopped: src/backup/backup.c does the work).  See docs/backup.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"
#include "backup/backup.h"

/* print_manifest - one line a member, for both commands */
static void print_members(json_t *manifest)
{
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(manifest, "members"), i, e)
        printf("  %-18s %12lld octets  sha256 %.16s...\n", cli_jstr(e, "name"),
               (long long)json_integer_value(json_object_get(e, "size")), cli_jstr(e, "sha256"));
}

int cli_backup(struct cli_ctx *ctx)
{
    const char *file = ctx->args[0];
    /* the file holds every secret: 0600 from the start, never over another file */
    int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return cli_fail(ctx, "cannot create %s: %s", file,
                        errno == EEXIST ? "it exists (choose another name)" : strerror(errno));
    FILE *out = fdopen(fd, "w");
    if (out == NULL) {
        close(fd);
        unlink(file);
        return cli_fail(ctx, "cannot write %s: %s", file, strerror(errno));
    }
    const char *path = cli_flag(ctx, "with-archive") ? "/api/v1/backup?with_archive=true"
                                                     : "/api/v1/backup";
    int rc = cli_api_download(ctx, path, out, NULL);
    if ((fflush(out) != 0 || fsync(fileno(out)) != 0) && rc == 0) {
        cli_fail(ctx, "cannot write %s: %s", file, strerror(errno));
        rc = -1;
    }
    fclose(out);
    /* read it back: what is on disk must be a complete, intact backup */
    json_t *manifest = NULL;
    struct error err;
    if (rc == 0 && backup_verify(file, &manifest, &err) < 0) {
        cli_fail(ctx, "the backup written to %s does not verify: %s", file, err.msg);
        rc = -1;
    }
    if (rc < 0) {
        unlink(file);
        return CLI_FAIL;
    }
    if (ctx->json) {
        cli_print_json(json_pack("{s:s, s:o}", "file", file, "manifest", manifest));
        return CLI_OK;
    }
    printf("backup of %s written to %s (created %s, schema version %lld, verified):\n",
           cli_jstr(manifest, "hostname"), file, cli_jstr(manifest, "created"),
           (long long)json_integer_value(json_object_get(manifest, "schema_version")));
    print_members(manifest);
    json_decref(manifest);
    return CLI_OK;
}

/* absolute - path made absolute against the working directory (caller frees) */
static char *absolute(const char *path)
{
    char cwd[PATH_MAX];
    if (path[0] == '/' || getcwd(cwd, sizeof cwd) == NULL)
        return xstrdup(path);
    return xasprintf("%s/%s", cwd, path);
}

int cli_restore(struct cli_ctx *ctx)
{
    const char *state = cli_opt(ctx, "state-dir");
    const char *config = cli_opt(ctx, "config");
    if (state == NULL || state[0] == '\0')
        return cli_usage_error(ctx, "--state-dir DIR names the state directory to restore into");
    if (config != NULL && config[0] == '\0')
        return cli_usage_error(ctx, "--config needs a path");
    char *state_abs = absolute(state);
    char *config_abs = config ? absolute(config) : NULL;
    struct backup_target t = { .state_dir = state_abs, .config_path = config_abs,
                               .force = cli_flag(ctx, "force") };
    json_t *report = NULL;
    struct error err;
    int rc = backup_restore(ctx->args[0], &t, &report, &err);
    free(state_abs);
    free(config_abs);
    if (rc < 0)
        return cli_fail(ctx, "%s; nothing was restored", err.msg);
    if (ctx->json) {
        cli_print_json(report);
        return CLI_OK;
    }
    json_t *mf = json_object_get(report, "manifest");
    printf("restored the backup of %s made %s (moat %s, schema version %lld):\n",
           cli_jstr(mf, "hostname"), cli_jstr(mf, "created"), cli_jstr(mf, "moat_version"),
           (long long)json_integer_value(json_object_get(mf, "schema_version")));
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(report, "files"), i, e)
        printf("  %-18s -> %s\n", cli_jstr(e, "member"), cli_jstr(e, "path"));
    if (json_is_true(json_object_get(report, "settings_in_backup")) &&
        !json_is_string(json_object_get(report, "settings")))
        printf("the backup holds a settings file (moat.conf): not restored; give --config PATH "
               "to restore it\n");
    printf("start moatd with --state-dir %s%s (queued mail is not part of a backup)\n",
           state, json_is_string(json_object_get(report, "settings")) ? " or its --config" : "");
    json_decref(report);
    return CLI_OK;
}
