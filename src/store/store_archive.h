/*
 * store_archive.h - the archive's database: one row per distinct message
 * (deduplicated by Message-ID and content hash), one row per arrival (the
 * envelope that brought it: an SMTP transaction or an unwrapped journal
 * report), the addresses of both, the zstd-compressed message octets, and a
 * SQLite FTS5 index (subject, addresses, text, attachment names).
 *
 * A separate database file from the configuration store (STATE/archive.db
 * by default, setting archive_database), so a long ingest transaction never
 * holds up configuration changes.  Same rules as store.h: SQL only here, a
 * handle is used by one thread at a time, each thread opens its own (the
 * archive thread writes, HTTP workers read; WAL lets them run together).
 * Results are enum store_status values (store.h); err->field names the bad
 * input.
 *
 * The store treats message bodies as opaque blobs: the archive module
 * compresses before ingest and decompresses after get.
 */
#ifndef MOAT_STORE_ARCHIVE_H
#define MOAT_STORE_ARCHIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "store.h"

struct store_archive;

/* store_archive_open - open (creating) the archive database at path: WAL,
 * synchronous=FULL (a committed ingest is on stable storage), migrations */
struct store_archive *store_archive_open(const char *path, struct error *err);
void store_archive_close(struct store_archive *sa);

/* --- ingest --- */

struct store_archive_rcpt {
    const char *addr;               /* lower-case */
    const char *kind;               /* "envelope" (SMTP), or from a journal report:
                                     * "to", "cc", "bcc", "recipient" */
    const char *expanded;           /* journal: the group it was expanded from, or NULL */
    const char *forwarded;          /* journal: the recipient it was forwarded from, or NULL */
};

/* one arrival of one message */
struct store_archive_item {
    /* the envelope */
    const char *qid;                /* the spool queue id: UNIQUE; an item whose qid is
                                     * already archived is skipped (ingest is idempotent) */
    int64_t received;               /* unix seconds */
    const char *direction;          /* "inbound", "outbound", "internal" */
    const char *source;             /* "smtp" or "journal" */
    const char *client_addr;
    const char *sender;             /* envelope sender, "" for the null sender */
    const struct store_archive_rcpt *rcpts;
    size_t n_rcpts;
    const char *journal;            /* NULL (not journal mail), "plain", "report", "malformed" */
    const char *journal_error;      /* malformed: why */
    /* the message (what is archived: for a report, the attached original) */
    const unsigned char *hash;      /* 32 octets: SHA-256 over Message-ID and the body
                                     * (the dedup key with message_id) */
    const char *message_id;         /* NULL when absent */
    int64_t date;                   /* Date header (0: unknown) */
    const char *from;               /* header addresses, ", "-separated, lower-case */
    const char *to;
    const char *cc;
    const char *from_display;
    const char *subject;
    uint64_t size;                  /* octets before compression */
    const char *const *attachments; /* names */
    size_t n_attachments;
    const char *text;               /* indexed text */
    bool truncated;                 /* the extraction hit a limit */
    const void *body;               /* compressed octets */
    size_t body_len;
    const char *codec;              /* "zstd" */
};

/* per item, what ingest did */
enum store_archive_outcome {
    STORE_ARCHIVE_NEW = 0,          /* a new message and its arrival */
    STORE_ARCHIVE_DUPLICATE,        /* message known (same Message-ID and hash): arrival added */
    STORE_ARCHIVE_ALREADY,          /* this qid was archived before: nothing done */
};

/* store_archive_ingest - every item in one transaction, durable when this
 * returns STORE_OK; outcome[i] and id[i] (the message's id) per item, either may be NULL */
int store_archive_ingest(struct store_archive *sa, const struct store_archive_item *items, size_t n,
                         enum store_archive_outcome *outcome, int64_t *id, struct error *err);

/* --- search --- */

/* a parsed query (archive_query.h fills it); every condition is ANDed.
 * Address conditions match an address exactly ("a@x.example") or, without
 * an @, a domain and its subdomains ("example.com"). */
struct store_archive_query {
    char **from;  size_t n_from;    /* envelope sender or header From */
    char **to;    size_t n_to;      /* envelope recipients (incl. journal ones), header To or Cc */
    char **subject; size_t n_subject;   /* words/phrases in the subject */
    char **text;  size_t n_text;    /* words/phrases anywhere indexed (subject, addresses,
                                     * text, attachment names) */
    int64_t after;                  /* received >= after (unix seconds); 0 = none */
    int64_t before;                 /* received < before; 0 = none */
    bool has_attachment;
};

/* who is asking: scopes what a search or get may see */
struct store_archive_scope {
    const char *owner;              /* NULL: everything; else only messages where this
                                     * address is the envelope sender, an envelope or
                                     * journal recipient, or in From/To/Cc */
    bool snippets;                  /* include a text snippet per hit (content!) */
};

struct store_archive_hit {
    int64_t id;
    int64_t received;               /* first arrival */
    char *direction;                /* of the first arrival */
    char *message_id;               /* or NULL */
    char *sender;                   /* envelope sender of the first arrival */
    char *from;                     /* header From (display form) */
    char *to;
    char *subject;
    uint64_t size;
    size_t n_attachments;
    char *snippet;                  /* NULL unless scope->snippets and text matched */
};

/* store_archive_search - newest first (received, then id), offset/limit
 * paging; *total is the number of matches, counted up to count_cap (then
 * *total == count_cap and the caller says "at least"; count_cap 0: no cap;
 * total may be NULL: not counted) */
int store_archive_search(struct store_archive *sa, const struct store_archive_query *q,
                         const struct store_archive_scope *scope, size_t offset, size_t limit,
                         size_t count_cap, struct store_archive_hit **out, size_t *n,
                         size_t *total, struct error *err);
void store_archive_hits_free(struct store_archive_hit *h, size_t n);

/* store_archive_each - ids of every match, newest first, at most max; for
 * export.  cb returns non-zero to stop. */
int store_archive_each(struct store_archive *sa, const struct store_archive_query *q,
                       const struct store_archive_scope *scope, size_t max,
                       int (*cb)(void *arg, int64_t id), void *arg, struct error *err);

/* --- one message --- */

struct store_archive_arrival {
    char *qid;
    int64_t received;
    char *direction;
    char *source;
    char *client_addr;
    char *sender;
    struct store_archive_rcpt_row {
        char *addr, *kind, *expanded, *forwarded;
    } *rcpts;
    size_t n_rcpts;
    char *journal;                  /* NULL, "plain", "report", "malformed" */
    char *journal_error;
};

struct store_archive_message {
    int64_t id;
    char *message_id;
    int64_t date;
    int64_t received;               /* first arrival */
    char *from, *to, *cc, *from_display, *subject;
    uint64_t size;
    char **attachments;
    size_t n_attachments;
    bool truncated;
    struct store_archive_arrival *arrivals;   /* oldest first */
    size_t n_arrivals;
    void *body;                     /* compressed (NULL unless with_body) */
    size_t body_len;
    char *codec;
};

/* store_archive_get - STORE_NOT_FOUND also when the scope's owner may not see it */
int store_archive_get(struct store_archive *sa, int64_t id, const struct store_archive_scope *scope,
                      bool with_body, struct store_archive_message *out, struct error *err);
void store_archive_message_clear(struct store_archive_message *m);

/* --- retention --- */

/* store_archive_purge - delete (with their arrivals, addresses and index rows)
 * at most max messages whose latest arrival is older than cutoff (unix
 * seconds) and none of whose addresses (envelope sender and recipients,
 * From/To/Cc) is in held[0..n_held) (legal hold; lower-case addresses);
 * *purged gets the count.  Call again while *purged == max. */
int store_archive_purge(struct store_archive *sa, int64_t cutoff, const char *const *held,
                        size_t n_held, size_t max, size_t *purged, struct error *err);

struct store_archive_stats {
    uint64_t messages;
    uint64_t arrivals;
    uint64_t bytes;                 /* original octets of the messages */
    uint64_t stored_bytes;          /* compressed octets */
    uint64_t journal_reports;       /* arrivals unwrapped from a report */
    uint64_t journal_malformed;
    int64_t oldest;                 /* received of the oldest message; 0 = empty */
};
int store_archive_stats(struct store_archive *sa, struct store_archive_stats *out, struct error *err);

#endif
