/*
 * spool.h - the durable queue.  The spool is the only source of truth for
 * accepted mail: "250" after DATA is sent only from the commit callback,
 * which runs once the message's records are on stable storage.
 *
 * Layout: an append-only log of segment files (STATE/spool/NNNNNNNNNN.seg).
 * Every record is self-validating (magic, type, length, CRC-32C, end marker),
 * so a torn tail is detected at start and moved aside.  Sessions that reach
 * end-of-data in the same loop turn share one fdatasync (group commit, on the
 * spool's own commit thread); the loop is never blocked by an fsync.
 *
 * Threads: every function here is called from the event loop thread that
 * opened the spool, except where noted.  Callbacks run on that loop.
 *
 * Message data is stored in canonical form: CRLF line ends, the SMTP
 * dot-stuffing removed, the Received header already prepended.
 */
#ifndef MOAT_SPOOL_H
#define MOAT_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <stdint.h>
#include "../core/core.h"

struct event_base;
struct spool;
struct spool_txn;
struct spool_msg;

#define SPOOL_QID_LEN 16   /* queue ids are 16 upper-case hex digits */

enum spool_rcpt_state {
    SPOOL_RCPT_PENDING = 0,
    SPOOL_RCPT_DELIVERED,
    SPOOL_RCPT_FAILED,       /* permanently failed; a DSN was queued if asked */
};

/* RFC 3461 NOTIFY bits; 0 means "not given" (default: FAILURE and DELAY) */
#define SPOOL_NOTIFY_NEVER   0x1
#define SPOOL_NOTIFY_SUCCESS 0x2
#define SPOOL_NOTIFY_FAILURE 0x4
#define SPOOL_NOTIFY_DELAY   0x8

#define SPOOL_F_8BITMIME  0x1
#define SPOOL_F_SMTPUTF8  0x2
#define SPOOL_F_BOUNCE    0x4   /* a DSN Moat generated: never bounce it */
#define SPOOL_F_TLS       0x8   /* received over TLS */
/* issue 8: the archive */
#define SPOOL_F_OUTBOUND  0x10  /* the outbound role (authorised host or account) */
#define SPOOL_F_JOURNAL   0x20  /* a journal message: archived, never relayed */
#define SPOOL_F_ARCHIVED  0x40  /* in the archive (spool-maintained: an ARCHIVED record) */

enum spool_ret { SPOOL_RET_DEFAULT = 0, SPOOL_RET_FULL, SPOOL_RET_HDRS };

struct spool_rcpt {
    char *addr;                 /* without <> */
    char *orcpt;                /* RFC 3461 ORCPT value or NULL */
    unsigned notify;
    enum spool_rcpt_state state;
    char *diag;                 /* last delivery diagnostic ("550 5.1.1 ...") or NULL */
    /* forwarding (issue 7): the internal address this recipient was
     * forwarded for (delivered with an X-Moat-Forwarded-For header, in its
     * own transaction), and the envelope sender for this recipient (the SRS
     * address for an external target); NULL: not forwarded / env->sender */
    char *fwd_for;
    char *sender;
};

struct spool_envelope {
    char *sender;               /* "" for the null reverse-path */
    struct spool_rcpt *rcpts;
    size_t n_rcpts;
    char *client_addr;          /* "127.0.0.1" */
    char *helo;
    char *envid;                /* RFC 3461 ENVID or NULL */
    enum spool_ret ret;
    unsigned flags;             /* SPOOL_F_* */
    int64_t received_ms;        /* wall clock, ms */
    uint64_t size;              /* octets of message data (filled by the spool) */
    bool warned;                /* a delay warning was sent (spool-maintained) */
    /* screening results: header lines (each ending CRLF) the delivery
     * engine sends before the message's first line (Authentication-Results,
     * X-Moat-Verdict), or NULL; and why the message is held (quarantined:
     * never delivered until released), or NULL */
    char *prefix;
    char *hold;
};

struct spool_options {
    uint64_t segment_size;      /* roll to a new segment beyond this */
    bool archive;               /* issue 8: keep messages until archived (see below) */
};

struct spool_stats {
    uint64_t messages;          /* live messages */
    uint64_t recipients_pending;
    uint64_t segments;
    uint64_t bytes;             /* segment bytes on disk */
    uint64_t commits;           /* fdatasync calls so far */
    uint64_t committed_msgs;    /* messages made durable so far */
    uint64_t torn_tails;        /* tails set aside at start */
};

/* spool_open - open or create the spool in dir, recover it (scan every
 * segment, set torn tails aside into dir/corrupt/), start the commit thread.
 * Recovered messages are reported to the listener once it is set. */
struct spool *spool_open(const char *dir, const struct spool_options *opt,
                         struct event_base *base, struct error *err);
/* spool_close - flush, stop the commit thread, free.  Pending commits complete first. */
void spool_close(struct spool *sp);

/* --- receiving a message --- */
/* spool_txn_begin - start a message; assigns its queue id */
struct spool_txn *spool_txn_begin(struct spool *sp);
const char *spool_txn_id(const struct spool_txn *t);
/* spool_txn_write - append canonical message data; data may be buffered.
 * -1 on a write error (ENOSPC...): the txn is then poisoned, commit fails. */
int spool_txn_write(struct spool_txn *t, const void *data, size_t len);
uint64_t spool_txn_size(const struct spool_txn *t);

/* status 0: on stable storage, reply 250.  -1: not stored (disk full), reply 452 4.3.1.
 * Called on the loop, never from inside spool_txn_commit itself. */
typedef void (*spool_commit_cb)(void *arg, const char *qid, int status);
/* spool_txn_commit - consume t: write the envelope record and request a
 * group-committed fdatasync; cb runs once it is done.  env is copied. */
void spool_txn_commit(struct spool_txn *t, const struct spool_envelope *env,
                      spool_commit_cb cb, void *arg);
/* spool_txn_abort - consume t; nothing of it will ever be delivered */
void spool_txn_abort(struct spool_txn *t);

/* spool_inject - a whole message at once (DSNs, test messages): begin, write, commit */
void spool_inject(struct spool *sp, const struct spool_envelope *env,
                  const void *data, size_t len, spool_commit_cb cb, void *arg);

/* --- the delivery side --- */
/* The listener is told of every message that becomes durable, and at
 * spool_set_listener() time of every message recovered at start. */
typedef void (*spool_listener_cb)(void *arg, struct spool_msg *m);
void spool_set_listener(struct spool *sp, spool_listener_cb cb, void *arg);

const char *spool_msg_id(const struct spool_msg *m);
/* the envelope, with current recipient states; owned by the spool */
const struct spool_envelope *spool_msg_envelope(const struct spool_msg *m);
/* spool_msg_read - pread message data at off; returns bytes read, 0 at end, -1 on error */
ssize_t spool_msg_read(struct spool *sp, struct spool_msg *m, uint64_t off, void *buf, size_t len);
/* a slot for the scheduler's own per-message state */
void spool_msg_set_user(struct spool_msg *m, void *user);
void *spool_msg_user(const struct spool_msg *m);
/* spool_msg_set_rcpt - record a recipient's outcome (appended, not fsynced by
 * itself: a crash may repeat a delivery, never lose one) */
int spool_msg_set_rcpt(struct spool *sp, struct spool_msg *m, size_t idx,
                       enum spool_rcpt_state st, const char *diag);
/* spool_msg_set_warned - record that the delay warning went out */
int spool_msg_set_warned(struct spool *sp, struct spool_msg *m);
/* spool_msg_done - every recipient is final (or the message was deleted by
 * an administrator): append the done record, free m.  m is invalid after. */
int spool_msg_done(struct spool *sp, struct spool_msg *m);
/* spool_msg_release - lift the hold of a held message durably: a RELEASE
 * record is appended and cb(arg, qid, 0) runs on the loop once it is on
 * stable storage (-1: not written, the message stays held).  The envelope's
 * hold is cleared at once; the caller schedules delivery only from cb, so
 * a crash before the record is durable leaves the message held, never
 * delivered twice nor lost. */
void spool_msg_release(struct spool *sp, struct spool_msg *m, spool_commit_cb cb, void *arg);
/* spool_msg_find - by queue id, NULL if not live */
struct spool_msg *spool_msg_find(struct spool *sp, const char *qid);
/* spool_foreach - every live message, oldest first; stop when cb returns non-zero */
void spool_foreach(struct spool *sp, int (*cb)(void *arg, struct spool_msg *m), void *arg);

/* --- the archive (issue 8) ---
 * With spool_options.archive, a message is kept until it is archived as
 * well as done, whether or not an archiver is attached yet: spool_msg_done
 * on a message not yet archived only marks it (it leaves spool_foreach,
 * spool_msg_find and the stats' live count), and the DONE record is written
 * when spool_msg_set_archived follows.  DSNs Moat generated
 * (SPOOL_F_BOUNCE) are never archived.  Without the option (archiving
 * disabled) nothing waits. */
typedef void (*spool_archiver_cb)(void *arg, struct spool_msg *m);
/* spool_set_archiver - cb learns of every durable message not yet archived;
 * at set time of each recovered one, oldest first.  NULL detaches (messages
 * marked done then wait for the next start). */
void spool_set_archiver(struct spool *sp, spool_archiver_cb cb, void *arg);
/* spool_msg_set_archived - append the ARCHIVED record (not fsynced by itself:
 * the archive's own commit is durable first, so a crash repeats the ingest,
 * which is idempotent); a message already done is forgotten now.  m is
 * invalid after when it was done. */
int spool_msg_set_archived(struct spool *sp, struct spool_msg *m);

void spool_get_stats(struct spool *sp, struct spool_stats *out);

/* spool_gauges - issue 11: live messages and the receipt time (wall ms, 0
 * when empty) of the oldest; safe from any thread (atomics the loop keeps
 * current), for the /metrics gauges rendered on an HTTP worker */
void spool_gauges(const struct spool *sp, uint64_t *messages, int64_t *oldest_ms);

#endif
