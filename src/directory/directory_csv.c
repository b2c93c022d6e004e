/*
 * directory_csv.c - the CSV import of manual users (Connect's users task):
 * a streaming RFC 4180 parser, and the importer built on it.
 *
 * The parser is a byte-at-a-time state machine fed in chunks of any size,
 * so a file of any length is read in constant memory: only the record being
 * read is buffered, bounded by max_record (and max_fields).  A record that
 * breaks a rule (too long, a quote inside an unquoted field, text after a
 * closing quote, a NUL, an unclosed quote at the end) is reported with the
 * line it starts on and skipped; the parser stays in step at the next line
 * break (after an over-long record, quotes are no longer trusted: the next
 * line break ends it).  Empty lines are skipped.  A UTF-8 byte order mark
 * at the very start is ignored.
 *
 * The importer takes the header (email, name, and optionally password and
 * aliases, in any order), checks each row (addresses under internal
 * domains, a name without control characters, a password of 12 to 1024
 * characters hashed with argon2id, aliases separated by ';' or spaces),
 * and writes rows in batches: one transaction per batch, one savepoint per
 * row, so a refused row (an address with another owner) never undoes the
 * others.  Passwords are hashed before the transaction opens: argon2id is
 * slow on purpose and must not hold the database's write lock.
 */
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include "../auth/auth.h"
#include "directory_priv.h"

/* --- the parser --- */

enum csv_state { CSV_FIELD_START = 0, CSV_UNQUOTED, CSV_QUOTED, CSV_QUOTE_SEEN };

struct directory_csv {
    size_t max_record, max_fields;
    directory_csv_record_fn record;
    directory_csv_bad_fn bad;
    void *arg;
    enum csv_state state;
    struct buf rec;             /* the record's fields, each NUL-terminated */
    size_t *starts;             /* offset of each field in rec */
    size_t n_fields;
    size_t line;                /* current line, 1-based */
    size_t rec_line;            /* the line the record started on */
    bool in_record;             /* some octet of this record was seen */
    const char *why;            /* the record is refused: the reason (static text) */
    bool overflow;              /* refused for its length: end at the next line break */
    size_t bom;                 /* octets of a leading BOM matched so far */
    bool started;
};

struct directory_csv *directory_csv_new(size_t max_record, size_t max_fields,
                                        directory_csv_record_fn record, directory_csv_bad_fn bad,
                                        void *arg)
{
    struct directory_csv *c = xcalloc(1, sizeof *c);
    c->max_record = max_record ? max_record : 4096;
    c->max_fields = max_fields ? max_fields : 16;
    c->record = record;
    c->bad = bad;
    c->arg = arg;
    c->line = 1;
    c->rec_line = 1;
    buf_init(&c->rec);
    c->starts = xcalloc(c->max_fields + 1, sizeof *c->starts);
    return c;
}

void directory_csv_free(struct directory_csv *c)
{
    if (c == NULL)
        return;
    buf_free(&c->rec);
    free(c->starts);
    free(c);
}

static void csv_refuse(struct directory_csv *c, const char *why)
{
    if (c->why == NULL)
        c->why = why;
}

static void csv_put(struct directory_csv *c, char ch)
{
    if (c->why != NULL)
        return;
    if (c->rec.len + 1 >= c->max_record) {
        csv_refuse(c, "the row is longer than the limit (directory_csv_max_line)");
        c->overflow = true;
        return;
    }
    buf_append(&c->rec, &ch, 1);
}

static void csv_field_begin(struct directory_csv *c)
{
    if (c->why != NULL)
        return;
    if (c->n_fields >= c->max_fields) {
        csv_refuse(c, "the row has too many fields");
        return;
    }
    c->starts[c->n_fields++] = c->rec.len;
}

static void csv_field_end(struct directory_csv *c)
{
    if (c->why == NULL)
        buf_append(&c->rec, "", 1);
}

/* csv_record_end - a record is complete: hand it over, or report it */
static void csv_record_end(struct directory_csv *c)
{
    if (c->why != NULL) {
        if (c->bad)
            c->bad(c->arg, c->rec_line, c->why);
    } else if (c->in_record && !(c->n_fields == 1 && c->rec.data[c->starts[0]] == '\0')) {
        char *fields[c->n_fields + 1];
        for (size_t i = 0; i < c->n_fields; i++)
            fields[i] = c->rec.data + c->starts[i];
        fields[c->n_fields] = NULL;
        if (c->record)
            c->record(c->arg, c->rec_line, fields, c->n_fields);
    }
    buf_reset(&c->rec);
    c->n_fields = 0;
    c->why = NULL;
    c->overflow = false;
    c->in_record = false;
    c->state = CSV_FIELD_START;
}

/* csv_byte - one octet of input */
static void csv_byte(struct directory_csv *c, char ch)
{
    if (!c->in_record) {
        c->in_record = true;
        c->rec_line = c->line;
        csv_field_begin(c);
    }
    if (ch == '\0')
        csv_refuse(c, "the row holds a NUL octet");
    if (c->overflow) {
        /* quotes are no longer trusted: the next line break ends the record */
        if (ch == '\n') {
            csv_record_end(c);
            c->line++;
        }
        return;
    }
    switch (c->state) {
    case CSV_FIELD_START:
    case CSV_UNQUOTED:
        if (ch == '"' && c->state == CSV_FIELD_START) {
            c->state = CSV_QUOTED;
        } else if (ch == '"') {
            csv_refuse(c, "a quote inside an unquoted field (quote the whole field and "
                       "double the quote)");
        } else if (ch == ',') {
            csv_field_end(c);
            csv_field_begin(c);
            c->state = CSV_FIELD_START;
        } else if (ch == '\n') {
            csv_field_end(c);
            csv_record_end(c);
            c->line++;
        } else if (ch == '\r') {
            /* CRLF or a lone CR: dropped outside quotes */
        } else {
            csv_put(c, ch);
            c->state = CSV_UNQUOTED;
        }
        break;
    case CSV_QUOTED:
        if (ch == '"')
            c->state = CSV_QUOTE_SEEN;
        else {
            if (ch == '\n')
                c->line++;
            csv_put(c, ch);
        }
        break;
    case CSV_QUOTE_SEEN:
        if (ch == '"') {                 /* RFC 4180 2.7: "" is one quote */
            csv_put(c, '"');
            c->state = CSV_QUOTED;
        } else if (ch == ',') {
            csv_field_end(c);
            csv_field_begin(c);
            c->state = CSV_FIELD_START;
        } else if (ch == '\n') {
            csv_field_end(c);
            csv_record_end(c);
            c->line++;
        } else if (ch == '\r') {
            /* before the LF */
        } else {
            csv_refuse(c, "text after the closing quote of a field");
            c->state = CSV_UNQUOTED;
        }
        break;
    }
}

void directory_csv_feed(struct directory_csv *c, const char *data, size_t len)
{
    static const char bom[3] = { '\xef', '\xbb', '\xbf' };
    size_t i = 0;
    if (!c->started) {
        /* a leading UTF-8 BOM (spreadsheets write one); may arrive split */
        while (i < len && c->bom < 3 && data[i] == bom[c->bom]) {
            c->bom++;
            i++;
        }
        if (c->bom == 3 || i < len) {
            if (c->bom > 0 && c->bom < 3)
                for (size_t k = 0; k < c->bom; k++)
                    csv_byte(c, bom[k]);
            c->started = true;
        }
    }
    for (; i < len; i++)
        csv_byte(c, data[i]);
}

void directory_csv_finish(struct directory_csv *c)
{
    if (!c->started && c->bom > 0 && c->bom < 3)
        for (size_t k = 0; k < c->bom; k++)
            csv_byte(c, "\xef\xbb\xbf"[k]);
    c->started = true;
    if (!c->in_record)
        return;
    if (c->state == CSV_QUOTED && !c->overflow)
        csv_refuse(c, "a quoted field is not closed");
    csv_field_end(c);
    csv_record_end(c);
}

/* --- the importer --- */

#define IMPORT_BATCH 256
#define IMPORT_MAX_ALIASES 100
#define IMPORT_NAME_MAX 256

enum col { COL_EMAIL = 0, COL_NAME, COL_PASSWORD, COL_ALIASES, COL__COUNT };
static const char *const col_names[COL__COUNT] = { "email", "name", "password", "aliases" };

struct import_row {
    size_t line;
    char *email;
    char *name;
    char *password;             /* NULL = keep / none; wiped after hashing */
    char hash[AUTH_PASSWORD_HASH_MAX];
    char **aliases;
    size_t n_aliases;
};

struct directory_import {
    struct store *st;
    struct directory_domains doms;
    struct directory_import_limits lim;
    struct directory_csv *csv;
    size_t first_line;
    bool have_header;
    int col[COL__COUNT];        /* field index of each column; -1 absent */
    struct error header_err;
    bool header_bad;
    struct error store_err;
    bool store_failed;
    size_t rows, created, updated, bad;
    bool over_limit_reported;
    json_t *errors;
    struct import_row batch[IMPORT_BATCH];
    size_t n_batch;
};

static void row_clear(struct import_row *r)
{
    free(r->email);
    free(r->name);
    if (r->password != NULL) {
        sodium_memzero(r->password, strlen(r->password));
        free(r->password);
    }
    sodium_memzero(r->hash, sizeof r->hash);
    for (size_t i = 0; i < r->n_aliases; i++)
        free(r->aliases[i]);
    free(r->aliases);
    memset(r, 0, sizeof *r);
}

static void import_bad(struct directory_import *im, size_t line, const char *reason)
{
    im->bad++;
    /* the reason may quote the row: keep it printable */
    char clean[600];
    size_t j = 0;
    for (const char *p = reason; *p && j + 1 < sizeof clean; p++)
        clean[j++] = ((unsigned char)*p < 0x20 || *p == 0x7f) ? '?' : *p;
    clean[j] = '\0';
    json_array_append_new(im->errors, json_pack("{s:I, s:s}", "line",
                                                (json_int_t)(line + im->first_line - 1),
                                                "reason", clean));
}

static void csv_bad_cb(void *arg, size_t line, const char *reason)
{
    struct directory_import *im = arg;
    if (!im->have_header) {
        im->have_header = true;
        im->header_bad = true;
        error_set(&im->header_err, "header", "line %zu: the header is not valid CSV: %s",
                  line + im->first_line - 1, reason);
        return;
    }
    im->rows++;
    import_bad(im, line, reason);
}

static void take_header(struct directory_import *im, char **fields, size_t n)
{
    im->have_header = true;
    for (int k = 0; k < COL__COUNT; k++)
        im->col[k] = -1;
    for (size_t i = 0; i < n; i++) {
        char name[32];
        const char *f = fields[i];
        while (*f == ' ' || *f == '\t')
            f++;
        if (str_copy(name, sizeof name, f) < 0)
            name[0] = '\0';
        size_t l = strlen(name);
        while (l > 0 && (name[l - 1] == ' ' || name[l - 1] == '\t'))
            name[--l] = '\0';
        str_lower(name);
        int k;
        for (k = 0; k < COL__COUNT; k++)
            if (strcmp(name, col_names[k]) == 0)
                break;
        if (k == COL__COUNT) {
            im->header_bad = true;
            error_set(&im->header_err, "header", "unknown column \"%.40s\" in the header: the "
                      "columns are email, name, password (optional) and aliases (optional)",
                      fields[i]);
            for (char *p = im->header_err.msg; *p; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                    *p = '?';
            return;
        }
        if (im->col[k] >= 0) {
            im->header_bad = true;
            error_set(&im->header_err, "header", "the column %s appears twice in the header",
                      col_names[k]);
            return;
        }
        im->col[k] = (int)i;
    }
    if (im->col[COL_EMAIL] < 0 || im->col[COL_NAME] < 0) {
        im->header_bad = true;
        error_set(&im->header_err, "header", "the header must name the columns email and name "
                  "(then optionally password and aliases), e.g. email,name,password,aliases");
    }
}

static const char *field(char **fields, size_t n, int col)
{
    return col >= 0 && (size_t)col < n ? fields[col] : "";
}

/* check_address - normalise and (with a store) require an internal domain */
static int check_address(struct directory_import *im, const char *in, const char *what,
                         char *out, size_t size, struct error *err)
{
    if (im->st == NULL)
        return directory_address_normalise(in, what, out, size, err);
    return directory_address_check(&im->doms, in, what, out, size, err);
}

static void import_flush(struct directory_import *im);

static void csv_record_cb(void *arg, size_t line, char **fields, size_t n)
{
    struct directory_import *im = arg;
    char addr[DIRECTORY_ADDR_MAX + 1], why[600];
    struct error e;
    if (!im->have_header) {
        take_header(im, fields, n);
        return;
    }
    if (im->header_bad)
        return;
    im->rows++;
    if (im->rows > im->lim.max_rows) {
        if (!im->over_limit_reported) {
            im->over_limit_reported = true;
            xsnprintf(why, sizeof why, "more than %zu rows (directory_csv_max_rows): this row "
                      "and every later one were not imported", im->lim.max_rows);
            import_bad(im, line, why);
        } else {
            im->bad++;
        }
        return;
    }
    size_t ncols = 0;
    for (int k = 0; k < COL__COUNT; k++)
        if (im->col[k] >= 0)
            ncols++;
    if (n > ncols) {
        xsnprintf(why, sizeof why, "%zu fields, but the header names %zu columns", n, ncols);
        import_bad(im, line, why);
        return;
    }
    struct import_row r;
    memset(&r, 0, sizeof r);
    r.line = line;
    if (check_address(im, field(fields, n, im->col[COL_EMAIL]), "email", addr, sizeof addr,
                      &e) < 0) {
        import_bad(im, line, e.msg);
        return;
    }
    r.email = xstrdup(addr);
    const char *name = field(fields, n, im->col[COL_NAME]);
    if (strlen(name) > IMPORT_NAME_MAX || !str_valid_utf8(name, strlen(name))) {
        xsnprintf(why, sizeof why, "name: at most %d characters of UTF-8", IMPORT_NAME_MAX);
        goto bad;
    }
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            xsnprintf(why, sizeof why, "name: control characters (a line break?) are not "
                      "allowed");
            goto bad;
        }
    r.name = xstrdup(name);
    const char *pw = field(fields, n, im->col[COL_PASSWORD]);
    size_t pwl = strlen(pw);
    if (pwl > 0 && (pwl < 12 || pwl > 1024)) {
        xsnprintf(why, sizeof why, "password: 12 to 1024 characters (or empty for none)");
        goto bad;
    }
    if (pwl > 0)
        r.password = xstrdup(pw);
    /* aliases: separated by ';' or blanks */
    const char *al = field(fields, n, im->col[COL_ALIASES]);
    char *copy = xstrdup(al), *save = NULL;
    r.aliases = xcalloc(1, sizeof *r.aliases);
    for (char *tok = strtok_r(copy, "; \t", &save); tok != NULL;
         tok = strtok_r(NULL, "; \t", &save)) {
        if (check_address(im, tok, "aliases", addr, sizeof addr, &e) < 0) {
            xsnprintf(why, sizeof why, "%s", e.msg);
            free(copy);
            goto bad;
        }
        if (strcmp(addr, r.email) == 0)
            continue;
        bool dup = false;
        for (size_t i = 0; i < r.n_aliases && !dup; i++)
            dup = strcmp(r.aliases[i], addr) == 0;
        if (dup)
            continue;
        if (r.n_aliases >= IMPORT_MAX_ALIASES) {
            xsnprintf(why, sizeof why, "aliases: at most %d a user", IMPORT_MAX_ALIASES);
            free(copy);
            goto bad;
        }
        r.aliases = xreallocarray(r.aliases, r.n_aliases + 2, sizeof *r.aliases);
        r.aliases[r.n_aliases++] = xstrdup(addr);
    }
    free(copy);
    if (im->st == NULL) {
        /* parse and check only */
        im->created++;
        row_clear(&r);
        return;
    }
    im->batch[im->n_batch++] = r;
    if (im->n_batch == IMPORT_BATCH)
        import_flush(im);
    return;
bad:
    import_bad(im, line, why);
    row_clear(&r);
}

/* import_row_write - one row inside the batch's transaction */
static void import_row_write(struct directory_import *im, struct import_row *r)
{
    struct store_dir_entry old;
    struct error e;
    int64_t id;
    enum store_dir_source src;
    char why[700];
    int o = store_dir_owner(im->st, r->email, &id, &src, &e);
    if (o == STORE_ERR) {
        im->store_failed = true;
        im->store_err = e;
        return;
    }
    struct store_dir_entry ne = {
        .kind = STORE_DIR_USER,
        .source = STORE_DIR_MANUAL,
        .primary = r->email,
        .name = r->name,
        .password_hash = r->password ? r->hash : NULL,
        .aliases = r->aliases,
        .n_aliases = r->n_aliases,
    };
    if (o == STORE_NOT_FOUND) {
        int rc = store_dir_insert(im->st, &ne, NULL, &e);
        if (rc == STORE_OK) {
            im->created++;
        } else if (rc == STORE_ERR && e.field[0] == '\0') {
            im->store_failed = true;
            im->store_err = e;
        } else {
            xsnprintf(why, sizeof why, "%s: %s", e.field, e.msg);
            import_bad(im, r->line, why);
        }
        return;
    }
    if (store_dir_get(im->st, r->email, &old, &e) < 0) {
        im->store_failed = true;
        im->store_err = e;
        return;
    }
    if (src != STORE_DIR_MANUAL || old.kind != STORE_DIR_USER ||
        strcmp(old.primary, r->email) != 0) {
        xsnprintf(why, sizeof why, "email: %s already belongs to the %s %s %s", r->email,
                  store_dir_source_name(old.source), store_dir_kind_name(old.kind), old.primary);
        import_bad(im, r->line, why);
        store_dir_entry_clear(&old);
        return;
    }
    /* an existing manual user: the row replaces name and aliases; the
     * password only when the row gives one; the state stays */
    ne.disabled = old.disabled;
    if (r->password == NULL)
        ne.password_hash = old.password_hash;
    int rc = store_dir_update(im->st, old.id, &ne, &e);
    if (rc == STORE_OK) {
        im->updated++;
    } else if (rc == STORE_ERR && e.field[0] == '\0') {
        im->store_failed = true;
        im->store_err = e;
    } else {
        xsnprintf(why, sizeof why, "%s: %s", e.field, e.msg);
        import_bad(im, r->line, why);
    }
    store_dir_entry_clear(&old);
}

static void import_flush(struct directory_import *im)
{
    struct error e;
    if (im->n_batch == 0)
        return;
    if (!im->store_failed) {
        for (size_t i = 0; i < im->n_batch; i++) {
            struct import_row *r = &im->batch[i];
            if (r->password == NULL)
                continue;
            if (auth_password_hash(r->password, r->hash, &e) < 0) {
                im->store_failed = true;
                im->store_err = e;
                break;
            }
        }
    }
    if (!im->store_failed && store_dir_begin(im->st, true, &e) < 0) {
        im->store_failed = true;
        im->store_err = e;
    }
    for (size_t i = 0; i < im->n_batch && !im->store_failed; i++)
        import_row_write(im, &im->batch[i]);
    if (!im->store_failed) {
        if (store_dir_commit(im->st, &e) < 0) {
            im->store_failed = true;
            im->store_err = e;
        }
    } else {
        store_dir_rollback(im->st);
    }
    for (size_t i = 0; i < im->n_batch; i++)
        row_clear(&im->batch[i]);
    im->n_batch = 0;
}

struct directory_import *directory_import_new(struct store *st,
                                              const struct directory_import_limits *lim,
                                              size_t first_line, struct error *err)
{
    struct directory_import *im = xcalloc(1, sizeof *im);
    im->st = st;
    im->lim = *lim;
    if (im->lim.max_line == 0)
        im->lim.max_line = 65536;
    if (im->lim.max_rows == 0)
        im->lim.max_rows = 1000000;
    im->first_line = first_line ? first_line : 1;
    im->errors = json_array();
    if (st != NULL && directory_domains_load(st, &im->doms, err) < 0) {
        directory_import_free(im);
        return NULL;
    }
    im->csv = directory_csv_new(im->lim.max_line, 16, csv_record_cb, csv_bad_cb, im);
    return im;
}

void directory_import_feed(struct directory_import *im, const char *data, size_t len)
{
    if (im->header_bad || im->store_failed)
        return;
    directory_csv_feed(im->csv, data, len);
}

json_t *directory_import_finish(struct directory_import *im, struct error *err)
{
    if (!im->header_bad && !im->store_failed)
        directory_csv_finish(im->csv);
    if (!im->header_bad && im->st != NULL)
        import_flush(im);
    if (im->store_failed) {
        *err = im->store_err;
        err->field[0] = '\0';
        return NULL;
    }
    if (!im->have_header) {
        error_set(err, "header", "the CSV is empty: it needs a header line (email,name"
                  "[,password][,aliases]) and one user a line");
        return NULL;
    }
    if (im->header_bad) {
        *err = im->header_err;
        return NULL;
    }
    if (im->st != NULL)
        log_info("event=directory_import rows=%zu created=%zu updated=%zu bad=%zu", im->rows,
                 im->created, im->updated, im->bad);
    return json_pack("{s:I, s:I, s:I, s:I, s:O}", "rows", (json_int_t)im->rows,
                     "created", (json_int_t)im->created, "updated", (json_int_t)im->updated,
                     "bad", (json_int_t)im->bad, "errors", im->errors);
}

void directory_import_free(struct directory_import *im)
{
    if (im == NULL)
        return;
    for (size_t i = 0; i < im->n_batch; i++)
        row_clear(&im->batch[i]);
    directory_csv_free(im->csv);
    json_decref(im->errors);
    if (im->st != NULL)
        directory_domains_free(&im->doms);
    free(im);
}
