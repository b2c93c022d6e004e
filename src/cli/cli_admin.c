/*
 * cli_admin.c - `moat login`, `moat account ...`, `moat token ...` and
 * `moat audit`: signing the CLI in, administrator accounts, API tokens and
 * the audit log, all through the API.
 *
 * `moat login` signs in with a password (from $MOAT_PASSWORD, else the
 * terminal without echo), changes it when the account must (new one from
 * $MOAT_NEW_PASSWORD, else the terminal), creates an API token for this
 * machine through the API, signs the session out again, and writes the URL
 * and the token to cli.conf (mode 0600).  Passwords and tokens are wiped
 * from memory after use and never printed, except a generated password or a
 * new token, which the API shows once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <sodium.h>
#include "cli.h"

#define CLI_MAX_SECRET 1024

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static void wipe_free(char *s)
{
    if (s != NULL) {
        sodium_memzero(s, strlen(s));
        free(s);
    }
}

/* read_tty - one line from the terminal; echo off for secrets */
static char *read_tty(const char *prompt, bool secret)
{
    int fd = open("/dev/tty", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct termios old, quiet;
    bool restore = false;
    if (secret && tcgetattr(fd, &old) == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        restore = tcsetattr(fd, TCSAFLUSH, &quiet) == 0;
    }
    if (write(fd, prompt, strlen(prompt)) < 0) {
        /* the prompt is a courtesy */
    }
    char buf[CLI_MAX_SECRET];
    size_t n = 0;
    char c;
    while (n + 1 < sizeof buf && read(fd, &c, 1) == 1 && c != '\n')
        buf[n++] = c;
    buf[n] = '\0';
    if (restore) {
        tcsetattr(fd, TCSAFLUSH, &old);
        if (write(fd, "\n", 1) < 0) {
            /* nothing to do */
        }
    }
    close(fd);
    char *out = xstrdup(buf);
    sodium_memzero(buf, sizeof buf);
    return out;
}

/* secret_from - $env, else the terminal; NULL after printing why */
static char *secret_from(struct cli_ctx *ctx, const char *env, const char *prompt)
{
    const char *v = getenv(env);
    if (v != NULL && v[0] != '\0')
        return xstrdup(v);
    char *s = read_tty(prompt, true);
    if (s == NULL || s[0] == '\0') {
        wipe_free(s);
        cli_fail(ctx, "no password: set %s or run moat on a terminal", env);
        return NULL;
    }
    return s;
}

int cli_login(struct cli_ctx *ctx)
{
    struct cli_session session;
    const char *url = cli_opt(ctx, "url");
    const char *name = cli_opt(ctx, "name");
    char *asked = NULL, *password = NULL, *newpw = NULL;
    int rc = CLI_FAIL;

    if (url != NULL) {
        free(ctx->url);
        ctx->url = xstrdup(url);
        size_t n = strlen(ctx->url);
        while (n > 0 && ctx->url[n - 1] == '/')
            ctx->url[--n] = '\0';
    }
    if (name == NULL && (name = getenv("MOAT_NAME")) == NULL) {
        asked = read_tty("name: ", false);
        if (asked == NULL || asked[0] == '\0') {
            free(asked);
            return cli_usage_error(ctx, "give the account with --name NAME");
        }
        name = asked;
    }
    password = secret_from(ctx, "MOAT_PASSWORD", "password: ");
    if (password == NULL)
        goto out;
    json_t *body = json_pack("{s:s, s:s}", "name", name, "password", password);
    if (cli_opt(ctx, "totp") != NULL)
        json_object_set_new(body, "totp", json_string(cli_opt(ctx, "totp")));
    json_t *me = cli_api_login(ctx, body, &session);
    if (me == NULL)
        goto out;
    bool must_change = json_is_true(json_object_get(json_object_get(me, "account"),
                                                    "must_change_password"));
    json_decref(me);
    if (must_change) {
        fprintf(stderr, "moat: the password of %s must be changed now\n", name);
        newpw = secret_from(ctx, "MOAT_NEW_PASSWORD", "new password (at least 12 characters): ");
        if (newpw == NULL)
            goto logout;
        if (getenv("MOAT_NEW_PASSWORD") == NULL) {
            char *again = read_tty("new password again: ", true);
            bool same = again != NULL && strcmp(again, newpw) == 0;
            wipe_free(again);
            if (!same) {
                cli_fail(ctx, "the two new passwords differ");
                goto logout;
            }
        }
        json_t *r = cli_api(ctx, "POST", "/api/v1/auth/password",
                            json_pack("{s:s, s:s}", "current", password, "new", newpw),
                            &session, NULL);
        if (r == NULL)
            goto logout;
        json_decref(r);
    }
    char host[256] = "localhost";
    gethostname(host, sizeof host);
    host[sizeof host - 1] = '\0';
    char *tname = xasprintf("moat CLI on %s", host);
    json_t *t = cli_api(ctx, "POST", "/api/v1/tokens", json_pack("{s:s}", "name", tname),
                        &session, NULL);
    free(tname);
    if (t == NULL)
        goto logout;
    const char *token = jstr(t, "token");
    if (token == NULL) {
        cli_fail(ctx, "moatd created no token");
        json_decref(t);
        goto logout;
    }
    rc = cli_config_write(ctx, ctx->url, token);
    json_decref(t);
    if (rc == CLI_OK) {
        char *n = cli_safe(name);
        printf("signed in to %s as %s; the CLI's token is in %s\n", ctx->url, n,
               ctx->config_path);
        free(n);
    }
logout:
    /* the token is what the CLI keeps; the session is not needed any more */
    json_decref(cli_api(ctx, "POST", "/api/v1/auth/logout", NULL, &session, NULL));
    sodium_memzero(&session, sizeof session);
out:
    wipe_free(password);
    wipe_free(newpw);
    free(asked);
    return rc;
}

/* --- accounts --- */

/* account_id - an account given by name or number, as its id; -1 after printing why */
static long long account_id(struct cli_ctx *ctx, const char *who)
{
    char *end;
    errno = 0;
    long long id = strtoll(who, &end, 10);
    if (who[0] >= '0' && who[0] <= '9' && *end == '\0' && errno == 0)
        return id;
    json_t *all = cli_api_all(ctx, "/api/v1/accounts");
    if (all == NULL)
        return -1;
    size_t i;
    json_t *a;
    long long found = -1;
    json_array_foreach(all, i, a)
        if (jstr(a, "name") != NULL && strcmp(jstr(a, "name"), who) == 0)
            found = json_integer_value(json_object_get(a, "id"));
    json_decref(all);
    if (found < 0) {
        char *w = cli_safe(who);
        cli_fail(ctx, "no account %s", w);
        free(w);
    }
    return found;
}

static void account_row(struct cli_table *t, json_t *a)
{
    char id[32], created[32];
    xsnprintf(id, sizeof id, "%lld", (long long)json_integer_value(json_object_get(a, "id")));
    cli_format_time(created, sizeof created, json_integer_value(json_object_get(a, "created")));
    const char *state = json_is_true(json_object_get(a, "disabled")) ? "disabled"
                        : json_is_true(json_object_get(a, "must_change_password"))
                        ? "must change password" : "active";
    const char *row[] = { id, jstr(a, "name"), jstr(a, "role"), state,
                          json_is_true(json_object_get(a, "totp_enabled")) ? "yes" : "no",
                          created };
    cli_table_add(t, row);
}

int cli_account_list(struct cli_ctx *ctx)
{
    json_t *all = cli_api_all(ctx, "/api/v1/accounts");
    if (all == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(all);
        return CLI_OK;
    }
    static const char *const hdr[] = { "ID", "NAME", "ROLE", "STATE", "TOTP", "CREATED" };
    struct cli_table *t = cli_table_new(6, hdr);
    size_t i;
    json_t *a;
    json_array_foreach(all, i, a)
        account_row(t, a);
    cli_table_print(t, stdout);
    cli_table_free(t);
    json_decref(all);
    return CLI_OK;
}

int cli_account_add(struct cli_ctx *ctx)
{
    const char *role = cli_opt(ctx, "role") ? cli_opt(ctx, "role") : "basic_admin";
    json_t *body = json_pack("{s:s, s:s}", "name", ctx->args[0], "role", role);
    if (cli_flag(ctx, "password-stdin")) {
        char buf[CLI_MAX_SECRET];
        if (fgets(buf, sizeof buf, stdin) == NULL) {
            json_decref(body);
            return cli_fail(ctx, "no password on standard input");
        }
        buf[strcspn(buf, "\r\n")] = '\0';
        json_object_set_new(body, "password", json_string(buf));
        sodium_memzero(buf, sizeof buf);
    }
    json_t *r = cli_api(ctx, "POST", "/api/v1/accounts", body, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    json_t *a = json_object_get(r, "account");
    char *n = cli_safe(jstr(a, "name")), *ro = cli_safe(jstr(a, "role"));
    printf("added account %s (%s)\n", n, ro);
    const char *pw = jstr(r, "password");
    if (pw != NULL) {
        char *p = cli_safe(pw);
        printf("one-time password: %s\n(shown once; it must be changed at the first sign-in)\n", p);
        wipe_free(p);
    }
    free(n);
    free(ro);
    json_decref(r);
    return CLI_OK;
}

int cli_account_remove(struct cli_ctx *ctx)
{
    long long id = account_id(ctx, ctx->args[0]);
    if (id < 0)
        return CLI_FAIL;
    char *path = xasprintf("/api/v1/accounts/%lld", id);
    json_t *r = cli_api(ctx, "DELETE", path, NULL, NULL, NULL);
    free(path);
    if (r == NULL)
        return CLI_FAIL;
    json_decref(r);
    char *w = cli_safe(ctx->args[0]);
    if (ctx->json)
        cli_print_json(json_pack("{s:I, s:b}", "id", (json_int_t)id, "removed", 1));
    else
        printf("removed account %s; its sessions and tokens no longer work\n", w);
    free(w);
    return CLI_OK;
}

int cli_account_role(struct cli_ctx *ctx)
{
    long long id = account_id(ctx, ctx->args[0]);
    if (id < 0)
        return CLI_FAIL;
    char *path = xasprintf("/api/v1/accounts/%lld", id);
    json_t *r = cli_api(ctx, "PATCH", path, json_pack("{s:s}", "role", ctx->args[1]), NULL, NULL);
    free(path);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    json_t *a = json_object_get(r, "account");
    char *n = cli_safe(jstr(a, "name")), *ro = cli_safe(jstr(a, "role"));
    printf("%s is now %s\n", n, ro);
    free(n);
    free(ro);
    json_decref(r);
    return CLI_OK;
}

/* --- tokens --- */

int cli_token_list(struct cli_ctx *ctx)
{
    json_t *all = cli_api_all(ctx, cli_flag(ctx, "all") ? "/api/v1/tokens?account=all"
                                                        : "/api/v1/tokens");
    if (all == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(all);
        return CLI_OK;
    }
    static const char *const hdr[] = { "ID", "NAME", "ACCOUNT", "ROLE", "CREATED", "LAST USED",
                                       "STATE" };
    struct cli_table *t = cli_table_new(7, hdr);
    size_t i;
    json_t *k;
    json_array_foreach(all, i, k) {
        char id[32], created[32], used[32];
        xsnprintf(id, sizeof id, "%lld", (long long)json_integer_value(json_object_get(k, "id")));
        cli_format_time(created, sizeof created, json_integer_value(json_object_get(k, "created")));
        cli_format_time(used, sizeof used, json_integer_value(json_object_get(k, "last_used")));
        const char *row[] = { id, jstr(k, "name"), jstr(json_object_get(k, "account"), "name"),
                              jstr(k, "role"), created, used,
                              json_is_true(json_object_get(k, "revoked")) ? "revoked" : "active" };
        cli_table_add(t, row);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    json_decref(all);
    return CLI_OK;
}

int cli_token_create(struct cli_ctx *ctx)
{
    json_t *body = json_pack("{s:s}", "name", ctx->args[0]);
    if (cli_opt(ctx, "role") != NULL)
        json_object_set_new(body, "role", json_string(cli_opt(ctx, "role")));
    json_t *r = cli_api(ctx, "POST", "/api/v1/tokens", body, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    char *tok = cli_safe(jstr(r, "token")), *ro = cli_safe(jstr(r, "role"));
    printf("token %lld (%s): %s\n(shown once: store it now)\n",
           (long long)json_integer_value(json_object_get(r, "id")), ro, tok);
    wipe_free(tok);
    free(ro);
    json_decref(r);
    return CLI_OK;
}

int cli_token_revoke(struct cli_ctx *ctx)
{
    char *e = cli_escape(ctx->args[0]);
    char *path = xasprintf("/api/v1/tokens/%s", e);
    free(e);
    json_t *r = cli_api(ctx, "DELETE", path, NULL, NULL, NULL);
    free(path);
    if (r == NULL)
        return CLI_FAIL;
    json_decref(r);
    char *id = cli_safe(ctx->args[0]);
    if (ctx->json)
        cli_print_json(json_pack("{s:s, s:b}", "id", id, "revoked", 1));
    else
        printf("revoked token %s\n", id);
    free(id);
    return CLI_OK;
}

/* --- audit --- */

int cli_audit(struct cli_ctx *ctx)
{
    static const char *const filters[] = { "since", "action", "account", NULL };
    struct buf path;
    buf_init(&path);
    buf_append_str(&path, "/api/v1/audit");
    char sep = '?';
    for (const char *const *f = filters; *f; f++) {
        const char *v = cli_opt(ctx, *f);
        if (v == NULL)
            continue;
        char *e = cli_escape(v);
        buf_printf(&path, "%c%s=%s", sep, *f, e);
        free(e);
        sep = '&';
    }
    json_t *items;
    const char *lim = cli_opt(ctx, "limit");
    if (lim != NULL) {
        char *e = cli_escape(lim);
        buf_printf(&path, "%climit=%s", sep, e);
        free(e);
        json_t *page = cli_api(ctx, "GET", buf_cstr(&path), NULL, NULL, NULL);
        items = page ? json_incref(json_object_get(page, "items")) : NULL;
        json_decref(page);
    } else {
        items = cli_api_all(ctx, buf_cstr(&path));
    }
    buf_free(&path);
    if (items == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(items);
        return CLI_OK;
    }
    if (json_array_size(items) == 0) {
        printf("no audit entries\n");
        json_decref(items);
        return CLI_OK;
    }
    static const char *const hdr[] = { "TIME", "ACCOUNT", "CLIENT", "ACTION", "TARGET", "CHANGE" };
    struct cli_table *t = cli_table_new(6, hdr);
    size_t i;
    json_t *e;
    json_array_foreach(items, i, e) {
        char when[32], change[160];
        cli_format_time(when, sizeof when, json_integer_value(json_object_get(e, "ts")));
        char *after = json_dumps(json_object_get(e, "after"), JSON_COMPACT | JSON_ENCODE_ANY);
        char *before = json_dumps(json_object_get(e, "before"), JSON_COMPACT | JSON_ENCODE_ANY);
        const char *shown = after && strcmp(after, "null") != 0 ? after : before ? before : "";
        xsnprintf(change, sizeof change, "%.150s%s", shown, strlen(shown) > 150 ? "..." : "");
        const char *row[] = { when, jstr(json_object_get(e, "account"), "name"),
                              jstr(e, "client_ip"), jstr(e, "action"), jstr(e, "target"), change };
        cli_table_add(t, row);
        free(after);
        free(before);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    json_decref(items);
    return CLI_OK;
}

/* cli_metrics_token - issue 11: a new token for /metrics, printed once */
int cli_metrics_token(struct cli_ctx *ctx)
{
    json_t *r = cli_api(ctx, "POST", "/api/v1/metrics/token", NULL, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    char *tok = cli_safe(jstr(r, "token"));
    printf("metrics token: %s\n(shown once: store it now; the previous metrics token no longer "
           "works)\n", tok);
    wipe_free(tok);
    json_decref(r);
    return CLI_OK;
}
