/*
 * cli_directory.c - `moat user ...`, `moat group ...` and `moat rv ...`:
 * manual users, aliases and groups, the CSV import of users, and each
 * domain's recipient validation, through the API (/api/v1/users,
 * /api/v1/groups, /api/v1/recipient-validation).
 *
 * The import reads the file record by record (a quoted field may span
 * lines) and sends it in parts below CLI_IMPORT_PART octets, each with the
 * header line and ?first_line= so the daemon reports the file's own line
 * numbers: a file of any size, in constant memory, within http_max_body.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli.h"

#define CLI_IMPORT_PART (512 * 1024)   /* below the default http_max_body (1M) */
#define CLI_IMPORT_MAX_RECORD (1024 * 1024)

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static char *entry_path(const char *kind, const char *addr)
{
    char *e = cli_escape(addr);
    char *p = xasprintf("/api/v1/%s/%s", kind, e);
    free(e);
    return p;
}

/* join - the strings of a JSON array, comma separated ("-" when empty) */
static char *join(json_t *a)
{
    struct buf b;
    size_t i;
    json_t *v;
    buf_init(&b);
    json_array_foreach(a, i, v) {
        if (b.len > 0)
            buf_append_str(&b, ", ");
        buf_append_str(&b, json_string_value(v) ? json_string_value(v) : "");
    }
    char *s = xstrdup(b.len ? buf_cstr(&b) : "-");
    buf_free(&b);
    return s;
}

static json_t *strings_array(struct cli_ctx *ctx, const char *opt)
{
    const char *const *v;
    int n = cli_opt_all(ctx, opt, &v);
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static void print_entry(json_t *e)
{
    char *a = cli_safe(jstr(e, "address")), *n = cli_safe(jstr(e, "name"));
    char *al = join(json_object_get(e, "aliases"));
    char *sal = cli_safe(al);
    printf("address:  %s\nname:     %s\nkind:     %s\nsource:   %s\nstate:    %s\naliases:  %s\n",
           a, n[0] ? n : "-", jstr(e, "kind") ? jstr(e, "kind") : "-",
           jstr(e, "source") ? jstr(e, "source") : "-", jstr(e, "state") ? jstr(e, "state") : "-",
           sal);
    if (json_object_get(e, "members") != NULL) {
        char *m = join(json_object_get(e, "members")), *sm = cli_safe(m);
        printf("members:  %s\n", sm);
        free(m);
        free(sm);
    } else {
        printf("password: %s\n", json_is_true(json_object_get(e, "has_password")) ? "set" : "none");
    }
    free(a);
    free(n);
    free(al);
    free(sal);
}

static int list(struct cli_ctx *ctx, const char *kind)
{
    char path[64];
    xsnprintf(path, sizeof path, "/api/v1/%s", kind);
    json_t *items = cli_api_all(ctx, path);
    if (items == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(items);
        return CLI_OK;
    }
    bool groups = strcmp(kind, "groups") == 0;
    static const char *const uh[] = { "ADDRESS", "NAME", "SOURCE", "STATE", "ALIASES" };
    static const char *const gh[] = { "ADDRESS", "NAME", "SOURCE", "MEMBERS", "ALIASES" };
    struct cli_table *t = cli_table_new(5, groups ? gh : uh);
    size_t i;
    json_t *e;
    json_array_foreach(items, i, e) {
        char *al = join(json_object_get(e, "aliases"));
        char count[32];
        xsnprintf(count, sizeof count, "%zu", json_array_size(json_object_get(e, "members")));
        const char *cells[5] = { jstr(e, "address"), jstr(e, "name"), jstr(e, "source"),
                                 groups ? count : jstr(e, "state"), al };
        cli_table_add(t, cells);
        free(al);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    if (json_array_size(items) == 0)
        printf("no %s\n", kind);
    json_decref(items);
    return CLI_OK;
}

static int show(struct cli_ctx *ctx, const char *kind)
{
    char *p = entry_path(kind, ctx->args[0]);
    json_t *r = cli_api(ctx, "GET", p, NULL, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    print_entry(r);
    json_decref(r);
    return CLI_OK;
}

static int remove_entry(struct cli_ctx *ctx, const char *kind)
{
    char *p = entry_path(kind, ctx->args[0]);
    json_t *r = cli_api(ctx, "DELETE", p, NULL, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    json_decref(r);
    char *a = cli_safe(ctx->args[0]);
    printf("removed %s %s\n", strcmp(kind, "groups") == 0 ? "group" : "user", a);
    free(a);
    return CLI_OK;
}

/* read_password - the first line of standard input, without its line break */
static char *read_password(struct cli_ctx *ctx)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n <= 0) {
        free(line);
        cli_fail(ctx, "no password on standard input");
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    return line;
}

/* --- users --- */

int cli_user_list(struct cli_ctx *ctx)
{
    return list(ctx, "users");
}

int cli_user_show(struct cli_ctx *ctx)
{
    return show(ctx, "users");
}

int cli_user_remove(struct cli_ctx *ctx)
{
    return remove_entry(ctx, "users");
}

int cli_user_add(struct cli_ctx *ctx)
{
    json_t *body = json_pack("{s:s, s:o}", "address", ctx->args[0], "aliases",
                             strings_array(ctx, "alias"));
    if (cli_opt(ctx, "name") != NULL)
        json_object_set_new(body, "name", json_string(cli_opt(ctx, "name")));
    if (cli_flag(ctx, "disabled"))
        json_object_set_new(body, "state", json_string("disabled"));
    if (cli_flag(ctx, "password-stdin")) {
        char *pw = read_password(ctx);
        if (pw == NULL) {
            json_decref(body);
            return CLI_FAIL;
        }
        json_object_set_new(body, "password", json_string(pw));
        explicit_bzero(pw, strlen(pw));
        free(pw);
    }
    json_t *r = cli_api(ctx, "POST", "/api/v1/users", body, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    char *a = cli_safe(jstr(r, "address"));
    printf("added user %s (%zu alias%s)\n", a, json_array_size(json_object_get(r, "aliases")),
           json_array_size(json_object_get(r, "aliases")) == 1 ? "" : "es");
    free(a);
    json_decref(r);
    return CLI_OK;
}

/* --- the import --- */

struct import_totals {
    json_int_t rows, created, updated, bad;
    json_t *errors;
};

/* send_part - one request: header + records; adds its report to totals */
static int send_part(struct cli_ctx *ctx, const struct buf *part, size_t first_line,
                     struct import_totals *tot)
{
    char path[80];
    xsnprintf(path, sizeof path, "/api/v1/users/import?first_line=%zu", first_line);
    json_t *r = cli_api_text(ctx, "POST", path, "text/csv", part->data, part->len, NULL);
    if (r == NULL)
        return -1;
    tot->rows += json_integer_value(json_object_get(r, "rows"));
    tot->created += json_integer_value(json_object_get(r, "created"));
    tot->updated += json_integer_value(json_object_get(r, "updated"));
    tot->bad += json_integer_value(json_object_get(r, "bad"));
    json_array_extend(tot->errors, json_object_get(r, "errors"));
    json_decref(r);
    return 0;
}

/* quotes_open - after this line, is a quoted field still open (given it was before)? */
static bool quotes_open(const char *line, size_t len, bool open)
{
    for (size_t i = 0; i < len; i++)
        if (line[i] == '"')
            open = !open;
    return open;
}

int cli_user_import(struct cli_ctx *ctx)
{
    const char *file = ctx->args[0];
    FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
    if (f == NULL)
        return cli_fail(ctx, "%s: %s", file, strerror(errno));
    struct buf header, part, rec;
    struct import_totals tot = { .errors = json_array() };
    char *line = NULL;
    size_t cap = 0, lineno = 0, rec_start = 0, part_first = 0;
    bool open = false, have_header = false, failed = false;
    ssize_t n;
    buf_init(&header);
    buf_init(&part);
    buf_init(&rec);
    while ((n = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (rec.len == 0)
            rec_start = lineno;
        buf_append(&rec, line, (size_t)n);
        open = quotes_open(line, (size_t)n, open);
        if (open && rec.len < CLI_IMPORT_MAX_RECORD)
            continue;    /* a quoted field goes on on the next line */
        open = false;    /* an over-long record: the daemon refuses it, we stay in step */
        if (!have_header) {
            buf_append(&header, rec.data, rec.len);
            if (header.data[header.len - 1] != '\n')
                buf_append_str(&header, "\n");
            have_header = true;
            buf_reset(&rec);
            continue;
        }
        if (part.len > 0 && part.len + rec.len > CLI_IMPORT_PART) {
            if (send_part(ctx, &part, part_first, &tot) < 0) {
                failed = true;
                break;
            }
            buf_reset(&part);
        }
        if (part.len == 0) {
            buf_append(&part, header.data, header.len);
            part_first = rec_start - 1;   /* the part's header stands for the line before */
        }
        buf_append(&part, rec.data, rec.len);
        buf_reset(&rec);
    }
    if (!failed && ferror(f)) {
        cli_fail(ctx, "%s: %s", file, strerror(errno));
        failed = true;
    }
    if (!failed && rec.len > 0 && have_header) {
        if (part.len == 0) {
            buf_append(&part, header.data, header.len);
            part_first = rec_start - 1;
        }
        buf_append(&part, rec.data, rec.len);
    }
    if (!failed && !have_header) {
        cli_fail(ctx, "%s is empty: it needs a header line (email,name[,password][,aliases])",
                 file);
        failed = true;
    }
    if (!failed && part.len == 0)
        buf_append(&part, header.data, header.len);   /* only a header: let the daemon say so */
    if (!failed && part.len > 0 && send_part(ctx, &part, part_first ? part_first : 1, &tot) < 0)
        failed = true;
    free(line);
    buf_free(&header);
    buf_free(&part);
    buf_free(&rec);
    if (f != stdin)
        fclose(f);
    if (failed) {
        json_decref(tot.errors);
        return CLI_FAIL;
    }
    if (ctx->json) {
        cli_print_json(json_pack("{s:I, s:I, s:I, s:I, s:o}", "rows", tot.rows, "created",
                                 tot.created, "updated", tot.updated, "bad", tot.bad, "errors",
                                 tot.errors));
        return tot.bad > 0 ? CLI_FAIL : CLI_OK;
    }
    printf("%lld rows: %lld created, %lld updated, %lld refused\n", (long long)tot.rows,
           (long long)tot.created, (long long)tot.updated, (long long)tot.bad);
    size_t i;
    json_t *e;
    json_array_foreach(tot.errors, i, e) {
        char *why = cli_safe(jstr(e, "reason"));
        printf("line %lld: %s\n", (long long)json_integer_value(json_object_get(e, "line")), why);
        free(why);
    }
    json_decref(tot.errors);
    return tot.bad > 0 ? CLI_FAIL : CLI_OK;
}

/* --- groups --- */

int cli_group_list(struct cli_ctx *ctx)
{
    return list(ctx, "groups");
}

int cli_group_remove(struct cli_ctx *ctx)
{
    return remove_entry(ctx, "groups");
}

int cli_group_add(struct cli_ctx *ctx)
{
    json_t *body = json_pack("{s:s, s:o, s:o}", "address", ctx->args[0], "aliases",
                             strings_array(ctx, "alias"), "members",
                             strings_array(ctx, "member"));
    if (cli_opt(ctx, "name") != NULL)
        json_object_set_new(body, "name", json_string(cli_opt(ctx, "name")));
    json_t *r = cli_api(ctx, "POST", "/api/v1/groups", body, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    char *a = cli_safe(jstr(r, "address"));
    printf("added group %s (%zu members)\n", a, json_array_size(json_object_get(r, "members")));
    free(a);
    json_decref(r);
    return CLI_OK;
}

/* cli_group_members - show, or change with --add / --remove */
int cli_group_members(struct cli_ctx *ctx)
{
    char *p = entry_path("groups", ctx->args[0]);
    json_t *g = cli_api(ctx, "GET", p, NULL, NULL, NULL);
    if (g == NULL) {
        free(p);
        return CLI_FAIL;
    }
    const char *const *add, *const *del;
    int na = cli_opt_all(ctx, "add", &add), nd = cli_opt_all(ctx, "remove", &del);
    if (na + nd > 0) {
        json_t *members = json_array();
        size_t i;
        json_t *m;
        json_array_foreach(json_object_get(g, "members"), i, m) {
            bool drop = false;
            for (int k = 0; k < nd && !drop; k++)
                drop = str_ieq(json_string_value(m), del[k]);
            if (!drop)
                json_array_append(members, m);
        }
        for (int k = 0; k < na; k++)
            json_array_append_new(members, json_string(add[k]));
        json_decref(g);
        g = cli_api(ctx, "PATCH", p, json_pack("{s:o}", "members", members), NULL, NULL);
        if (g == NULL) {
            free(p);
            return CLI_FAIL;
        }
    }
    free(p);
    if (ctx->json) {
        cli_print_json(json_incref(json_object_get(g, "members")));
        json_decref(g);
        return CLI_OK;
    }
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(g, "members"), i, m) {
        char *s = cli_safe(json_string_value(m));
        printf("%s\n", s);
        free(s);
    }
    if (json_array_size(json_object_get(g, "members")) == 0)
        printf("no members\n");
    json_decref(g);
    return CLI_OK;
}

/* --- recipient validation --- */

int cli_rv_show(struct cli_ctx *ctx)
{
    json_t *r = cli_api(ctx, "GET", "/api/v1/recipient-validation", NULL, NULL, NULL);
    if (r == NULL)
        return CLI_FAIL;
    json_t *items = json_incref(json_object_get(r, "items"));
    json_decref(r);
    if (ctx->n_args > 0) {
        json_t *one = json_array();
        size_t i;
        json_t *e;
        json_array_foreach(items, i, e)
            if (str_ieq(jstr(e, "domain"), ctx->args[0]))
                json_array_append(one, e);
        json_decref(items);
        items = one;
        if (json_array_size(items) == 0) {
            json_decref(items);
            return cli_fail(ctx, "no such domain %s", ctx->args[0]);
        }
    }
    if (ctx->json) {
        cli_print_json(items);
        return CLI_OK;
    }
    static const char *const h[] = { "DOMAIN", "MODE", "UNREACHABLE" };
    struct cli_table *t = cli_table_new(3, h);
    size_t i;
    json_t *e;
    json_array_foreach(items, i, e) {
        bool set = json_is_true(json_object_get(e, "set"));
        const char *cells[3] = { jstr(e, "domain"), set ? jstr(e, "mode") : "accept-all (not set)",
                                 jstr(e, "unreachable") };
        cli_table_add(t, cells);
    }
    cli_table_print(t, stdout);
    cli_table_free(t);
    json_decref(items);
    return CLI_OK;
}

int cli_rv_set(struct cli_ctx *ctx)
{
    const char *mode = cli_opt(ctx, "mode");
    if (mode == NULL)
        return cli_usage_error(ctx, "--mode is required (directory, known, call-forward or "
                               "accept-all)");
    json_t *body = json_pack("{s:s}", "mode", mode);
    if (cli_opt(ctx, "unreachable") != NULL)
        json_object_set_new(body, "unreachable", json_string(cli_opt(ctx, "unreachable")));
    char *e = cli_escape(ctx->args[0]);
    char *p = xasprintf("/api/v1/recipient-validation/%s", e);
    free(e);
    json_t *r = cli_api(ctx, "PUT", p, body, NULL, NULL);
    free(p);
    if (r == NULL)
        return CLI_FAIL;
    if (ctx->json) {
        cli_print_json(r);
        return CLI_OK;
    }
    char *d = cli_safe(jstr(r, "domain"));
    printf("%s: recipient validation %s, when the source cannot answer: %s\n", d,
           jstr(r, "mode"), strcmp(jstr(r, "unreachable") ? jstr(r, "unreachable") : "", "accept")
           == 0 ? "accept" : "450 4.4.3 (try again later)");
    free(d);
    json_decref(r);
    return CLI_OK;
}
