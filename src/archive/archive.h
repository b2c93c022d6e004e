/*
 * archive.h - the archive: every accepted message (inbound, outbound, and
 * journal reports from authorised sources) kept once, compressed,
 * full-text indexed and searchable.
 *
 * Ingestion.  The spool tells the archive of every durable message not yet
 * archived (spool_set_archiver, spool.h), at start for recovered ones too.
 * On the loop the archive reads the message's octets (bounded: at most
 * ARCHIVE_INFLIGHT_BYTES in flight, the rest waits in the spool) and hands
 * them to its own thread, which unwraps journal reports
 * (archive_journal.h), extracts the indexed text (archive_mime.h),
 * compresses (zstd), hashes, and writes batches in one transaction of the
 * archive store (store_archive.h).  Once that commit is durable, back on
 * the loop, each message is marked archived in the spool
 * (spool_msg_set_archived): only then may the spool forget it.  A crash in
 * between repeats the ingest, which the store makes idempotent (by queue
 * id).  Journal mail (SPOOL_F_JOURNAL) is never relayed: the delivery
 * engine finishes it at once and the spool keeps it until archived.
 *
 * Retention.  A timer on the loop asks the thread to purge messages older
 * than archive_retention (by the screening clock, screen_clock.h), except
 * those of addresses under legal hold (store.h).  The API may purge at once
 * (archive_purge_run) from its own thread.
 */
#ifndef MOAT_ARCHIVE_H
#define MOAT_ARCHIVE_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>
#include "../core/core.h"
#include "../core/settings.h"
#include "../store/store.h"
#include "../store/store_archive.h"
#include "archive_mime.h"

struct event_base;
struct spool;
struct archive;

#define ARCHIVE_INFLIGHT_BYTES (64u << 20)
#define ARCHIVE_BATCH_MAX 128            /* items per store transaction */

struct archive_config {
    struct event_base *base;
    struct spool *spool;
    const struct moat_settings *settings;   /* read on the loop only */
    const char *path;                       /* the archive database */
    const char *database;                   /* the configuration store (legal holds,
                                             * internal domains, journal evidence) */
};

struct archive_stats {
    uint64_t ingested;          /* arrivals archived since start */
    uint64_t duplicates;        /* of which the message was already archived */
    uint64_t journal_reports;   /* unwrapped */
    uint64_t journal_malformed;
    uint64_t failed;            /* store errors (retried) */
    uint64_t pending;           /* waiting or in flight */
    uint64_t purged;            /* by retention since start */
};

struct archive *archive_create(const struct archive_config *cfg, struct error *err);
/* archive_start - after the privilege drop: open the stores, start the
 * thread, attach to the spool */
int archive_start(struct archive *a, struct error *err);
/* archive_stop - on the loop: detach from the spool, finish the batch in
 * flight, join the thread.  Before spool_close. */
void archive_stop(struct archive *a);
void archive_free(struct archive *a);
void archive_get_stats(const struct archive *a, struct archive_stats *out);

/* --- the pipeline without the loop (the archive thread, benchmarks, tests) --- */

/* what the spool (or a benchmark) knows of one arrival */
struct archive_input {
    const char *qid;
    int64_t received;           /* unix seconds */
    const char *direction;      /* "inbound", "outbound"; ignored for journal mail */
    bool journal;               /* sent to the journal address by a journal source */
    const char *client_addr;
    const char *sender;
    const char *const *rcpts;   /* envelope recipients */
    size_t n_rcpts;
    const void *data;           /* the message as spooled */
    size_t len;
};

/* an item ready for store_archive_ingest, owning everything it points to */
struct archive_prepared {
    struct store_archive_item item;
    void *priv;
};

/* archive_prepare - unwrap, extract, compress, hash.  is_internal(arg,
 * domain) says whether a domain is internal (direction of journal mail:
 * internal sender and recipients -> "internal", internal sender ->
 * "outbound", else "inbound"); NULL counts nothing internal.  0, or -1
 * with err (out of memory, compression failure). */
int archive_prepare(const struct archive_input *in, const struct archive_limits *lim,
                    bool (*is_internal)(void *arg, const char *domain), void *arg,
                    struct archive_prepared *out, struct error *err);
void archive_prepared_clear(struct archive_prepared *p);

/* --- reading, for the API (any thread, with that thread's handles) --- */

/* archive_body - decompress a message got with_body; caller frees *out */
int archive_body(const struct store_archive_message *m, unsigned char **out, size_t *len,
                 struct error *err);
/* archive_purge_run - purge what retention allows now (now: unix seconds by
 * the screening clock; retention: seconds), sparing legal holds read from st;
 * *purged gets the count */
int archive_purge_run(struct store_archive *sa, struct store *st, int64_t now, int64_t retention,
                      size_t *purged, struct error *err);
/* archive_mbox_write - append m's octets to b as one mboxrd entry ("From "
 * line with the envelope sender and date, ">From " quoting, blank line) */
struct buf;
int archive_mbox_write(struct buf *b, const struct store_archive_message *m, struct error *err);

#endif
