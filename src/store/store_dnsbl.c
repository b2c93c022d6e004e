/*
 * store_dnsbl.c - the DNSBL zones (issue 7) in SQLite: zone name, integer
 * weight, comment.  Interface: the section "DNSBL zones" of store.h; callers
 * are the API (api_dnsbl.c) and the snapshot loader (store_snapshot.c),
 * which hands the zones to the SMTP loop (policy_dnsbl.c).
 *
 * Statements live in dnsbl_sql[], prepared at store_open into st->dnsbl_stmt.
 * Input is checked here so every caller gets the same errors and fields
 * ("zone", "weight", "comment").  Strings in returned arrays belong to the
 * caller: store_dnsbl_zones_free.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "store_priv.h"

enum dnsbl_stmt { D_ADD, D_DEL, D_LIST, D__COUNT };

static const char *const dnsbl_sql[D__COUNT] = {
    [D_ADD] = "INSERT INTO dnsbl_zones (zone, weight, comment, created) VALUES (?1, ?2, ?3, ?4)",
    [D_DEL] = "DELETE FROM dnsbl_zones WHERE zone = ?1",
    [D_LIST] = "SELECT zone, weight, comment, created FROM dnsbl_zones ORDER BY zone",
};

int store_dnsbl_prepare(struct store *st, const char *path, struct error *err)
{
    return store_stmts_prepare(st, path, "dnsbl", dnsbl_sql, D__COUNT, &st->dnsbl_stmt, err);
}

void store_dnsbl_finalize(struct store *st)
{
    store_stmts_finalize(&st->dnsbl_stmt, D__COUNT);
}

/* store_dnsbl_zone_check - a DNS name of LDH (and "_") labels of 1..63
 * octets, at most STORE_DNSBL_ZONE_MAX octets so the query name (64 octets
 * of IPv6 nibbles before it) stays within RFC 1035's 253; NULL or why.
 * Normalises in place: lower case, no trailing dot. */
const char *store_dnsbl_zone_check(char *zone)
{
    if (zone == NULL || zone[0] == '\0')
        return "a zone is required (e.g. zen.spamhaus.org)";
    size_t len = strnlen(zone, STORE_DNSBL_ZONE_MAX + 2);
    if (len > 0 && zone[len - 1] == '.')
        zone[--len] = '\0';
    if (len == 0 || len > STORE_DNSBL_ZONE_MAX)
        return "zone must be a DNS name of 1 to 180 octets";
    size_t label = 0, labels = 0;
    for (char *p = zone; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '.') {
            if (label == 0)
                return "zone has an empty label";
            label = 0;
            continue;
        }
        if (label == 0)
            labels++;
        if (++label > 63)
            return "zone has a label longer than 63 octets";
        if (c >= 'A' && c <= 'Z')
            *p = (char)(c - 'A' + 'a');
        else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return "zone may contain only letters, digits, '-', '_' and dots";
    }
    if (labels < 2)
        return "zone needs at least two labels (e.g. bl.example.org)";
    return NULL;
}

/* comment_check - bounded, one line, UTF-8 */
static int comment_check(const char *comment, struct error *err)
{
    if (comment == NULL)
        return 0;
    size_t len = strnlen(comment, STORE_COMMENT_MAX + 1);
    if (len > STORE_COMMENT_MAX) {
        error_set(err, "comment", "comment is longer than %d octets", STORE_COMMENT_MAX);
        return -1;
    }
    for (const char *p = comment; *p; p++)
        if ((unsigned char)*p < 32 || *p == 127) {
            error_set(err, "comment", "comment must be one line without control characters");
            return -1;
        }
    if (!str_valid_utf8(comment, len)) {
        error_set(err, "comment", "comment is not valid UTF-8");
        return -1;
    }
    return 0;
}

int store_dnsbl_zone_add(struct store *st, const char *zone, int weight, const char *comment,
                         struct error *err)
{
    char z[STORE_DNSBL_ZONE_MAX + 2];
    if (zone == NULL || str_copy(z, sizeof z, zone) < 0) {
        error_set(err, "zone", zone ? "zone is longer than %d octets" : "a zone is required",
                  STORE_DNSBL_ZONE_MAX);
        return STORE_ERR;
    }
    const char *why = store_dnsbl_zone_check(z);
    if (why != NULL) {
        error_set(err, "zone", "%s", why);
        return STORE_ERR;
    }
    if (weight < STORE_DNSBL_WEIGHT_MIN || weight > STORE_DNSBL_WEIGHT_MAX) {
        error_set(err, "weight", "weight must be an integer from %d to %d", STORE_DNSBL_WEIGHT_MIN,
                  STORE_DNSBL_WEIGHT_MAX);
        return STORE_ERR;
    }
    if (comment_check(comment, err) < 0)
        return STORE_ERR;
    sqlite3_stmt *s = store_stmt_reset(st->dnsbl_stmt[D_ADD]);
    sqlite3_bind_text(s, 1, z, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(s, 2, weight);
    sqlite3_bind_text(s, 3, comment ? comment : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(s, 4, (int64_t)time(NULL));
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if ((rc & 0xff) == SQLITE_CONSTRAINT) {
        error_set(err, "zone", "DNSBL zone %s already exists", z);
        return STORE_CONFLICT;
    }
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "dnsbl zones");
        return STORE_ERR;
    }
    st->own_commits++;
    return STORE_OK;
}

int store_dnsbl_zone_remove(struct store *st, const char *zone, struct error *err)
{
    char z[STORE_DNSBL_ZONE_MAX + 2];
    if (zone == NULL || str_copy(z, sizeof z, zone) < 0 || store_dnsbl_zone_check(z) != NULL) {
        error_set(err, "zone", "not a valid DNSBL zone name");
        return STORE_ERR;
    }
    sqlite3_stmt *s = store_stmt_reset(st->dnsbl_stmt[D_DEL]);
    sqlite3_bind_text(s, 1, z, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "dnsbl zones");
        return STORE_ERR;
    }
    if (sqlite3_changes(st->db) == 0) {
        error_set(err, "zone", "no such DNSBL zone: %s", z);
        return STORE_NOT_FOUND;
    }
    st->own_commits++;
    return STORE_OK;
}

int store_dnsbl_zone_list(struct store *st, struct store_dnsbl_zone **out, size_t *n,
                          struct error *err)
{
    sqlite3_stmt *s = store_stmt_reset(st->dnsbl_stmt[D_LIST]);
    size_t cap = 0;
    int rc;
    *out = NULL;
    *n = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            *out = xreallocarray(*out, cap, sizeof **out);
        }
        struct store_dnsbl_zone *z = &(*out)[(*n)++];
        z->zone = store_col_strdup(s, 0);
        z->weight = sqlite3_column_int(s, 1);
        z->comment = store_col_strdup(s, 2);
        z->created = sqlite3_column_int64(s, 3);
    }
    sqlite3_reset(s);
    if (rc != SQLITE_DONE) {
        store_db_error(st, err, "dnsbl zones");
        store_dnsbl_zones_free(*out, *n);
        *out = NULL;
        *n = 0;
        return STORE_ERR;
    }
    return STORE_OK;
}

void store_dnsbl_zones_free(struct store_dnsbl_zone *z, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(z[i].zone);
        free(z[i].comment);
    }
    free(z);
}
