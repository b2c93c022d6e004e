/*
 * spool.c - the durable queue: an append-only log of segment files with
 * group-committed fdatasync on a dedicated thread, an in-memory index
 * rebuilt by recovery at open, segment removal and compaction.
 *
 * Entry points: spool_open / spool_close, spool_txn_* (receiving),
 * spool_msg_* (delivery side), spool_foreach, spool_get_stats.
 *
 * Writing.  Every record is appended with write(2)/writev(2) from the loop
 * thread into the current segment (page cache).  A transaction buffers its
 * data and writes a DATA record per SPOOL_CHUNK_MAX octets; at commit the
 * last DATA record and the COMMIT record go out in one writev, so a small
 * message costs one system call.  The commit is then queued for the commit
 * thread, which fdatasyncs every segment written since its previous run (and
 * the directory after a segment was created) and hands the whole batch back
 * to the loop through a pipe; the callbacks fire there.  Commits that arrive
 * while an fdatasync runs share the next one.  A failed fsync is fatal: the
 * page cache state is unknown, and recovery at the next start rescans.
 *
 * Recovery.  Segments are scanned in order; every record is validated
 * (spool_record.h); the first invalid record ends a segment: the rest (the
 * torn tail) is copied into corrupt/ and the segment truncated.  A COMMIT
 * creates (or replaces: compaction) the message, RCPT/WARNED update it, DONE
 * drops it.  DATA records without a COMMIT are never referenced, hence
 * never delivered: nothing unacknowledged survives as a message.
 *
 * Segment removal invariant.  Every record about a message is appended at or
 * after the message's first record (its first DATA chunk, or its COMMIT).
 * Each segment counts the live messages and open transactions whose first
 * record lies in it (refs) and compactions in flight (pins).  A segment is
 * removed only when it is the oldest one, is not the current one, and its
 * refs and pins are zero.  Hence every record a live message needs is in a
 * surviving segment; records that survive for dropped messages (RCPT, DONE,
 * an older COMMIT) name queue ids recovery does not know, or are superseded
 * by a later COMMIT for the same id, and are ignored.  Removal needs no
 * fsync of the DONE record: a message whose DONE is lost and whose segment
 * is gone had only final recipients (delivered, or bounced with a durable
 * DSN), so nothing is lost; if the segment survives, it is delivered again.
 *
 * Compaction.  When the oldest segment pins only little live data (a message
 * retrying for days), those messages are rewritten (data + envelope with the
 * current recipient states) into the current segment; once that rewrite is
 * durable the old segment is released and removed.
 *
 * Archiving (spool_options.archive).  A message not yet archived outlives
 * its delivery: spool_msg_done moves it from the live list to the
 * done-pending list (it keeps its segment reference, so its data stays),
 * and only spool_msg_set_archived writes the DONE record.  The ARCHIVED
 * record sets SPOOL_F_ARCHIVED in the envelope, so a compaction rewrite
 * carries it.  Nothing records "done-pending" on disk: after a crash such
 * a message is recovered live with every recipient final, the listener
 * finishes it again, and the archiver is told of it again.
 *
 * Queue ids are 64-bit: milliseconds since the epoch << 20 | a counter, kept
 * strictly above every id seen in the log, so a restart within the same
 * millisecond (or after the clock stepped back) never repeats an id.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>
#include <event2/event.h>
#include "spool.h"
#include "spool_record.h"

#define SPOOL_DEFAULT_SEGMENT (64u * 1024 * 1024)
#define SPOOL_MIN_SEGMENT (64u * 1024)
/* compact the oldest segment when its live data is at most this fraction */
#define SPOOL_COMPACT_DIVISOR 4
/* ... and it stopped being current this long ago: messages in a fresh
 * segment are usually delivered within seconds, rewriting them is waste */
#define SPOOL_COMPACT_AGE_MS (60u * 1000)

struct spool_seg {
    uint32_t num;
    int fd;
    uint64_t size;        /* octets of good records */
    uint32_t refs;        /* live messages / open txns whose first record is here */
    uint32_t pins;        /* compactions in flight releasing this segment */
    uint64_t live_bytes;  /* data octets of the messages counted in refs */
    uint64_t closed_ms;   /* monotonic time it stopped being current; 0 = at open */
};

struct spool_msg {
    uint64_t id;
    char qid[SPOOL_QID_LEN + 1];
    struct spool_envelope env;
    struct spool_extent *ext;
    size_t n_ext;
    uint32_t first_seg;
    void *user;
    bool done_pending;                 /* done, waiting for the archive */
    struct spool_msg *hnext;           /* hash chain */
    struct spool_msg *prev, *next;     /* live list (or done-pending list), commit order */
};

struct spool_txn {
    struct spool *sp;
    uint64_t id;
    char qid[SPOOL_QID_LEN + 1];
    struct buf data;                   /* octets not yet written */
    struct spool_extent *ext;
    size_t n_ext, cap_ext;
    uint64_t size;
    uint32_t first_seg;
    bool has_seg;
    bool poisoned;
};

/* a commit waiting for the commit thread, or completed */
struct spool_citem {
    struct spool_citem *next;
    spool_commit_cb cb;
    void *arg;
    struct spool_msg *msg;             /* NULL for internal items */
    void (*internal)(struct spool *sp, void *arg);
    int status;
};

struct spool_batch {
    struct spool_citem *head, **tail;
    int *fds;                          /* dup'd descriptors to fdatasync */
    uint32_t *fd_segs;
    size_t n_fds, cap_fds;
    bool dirsync;
};

struct spool {
    char *dir;
    int dirfd;
    uint64_t segment_size;
    struct event_base *base;

    struct spool_seg *segs;            /* oldest first, consecutive numbers not required */
    size_t n_segs, cap_segs;

    struct spool_msg **buckets;
    size_t n_buckets;                  /* power of two */
    size_t n_msgs;
    struct spool_msg *head, *tail;     /* live messages, oldest first */

    uint64_t last_id;
    uint64_t recipients_pending;
    struct spool_stats stats;
    /* issue 11: n_msgs and head's receipt time for other threads (spool_gauges) */
    _Atomic uint64_t gauge_msgs;
    _Atomic int64_t gauge_oldest_ms;

    spool_listener_cb listener;
    void *listener_arg;

    bool archive;                      /* keep messages until archived */
    spool_archiver_cb archiver;
    void *archiver_arg;
    struct spool_msg *pend_head, *pend_tail;   /* done-pending, oldest first */
    size_t n_pend;

    struct buf scratch;
    bool compacting;
    uint64_t compact_age_ms;
    struct event *compact_ev;          /* timer: the next compaction check */
    struct event *kick_ev;             /* signals the thread at the end of a loop turn */
    struct event *done_ev;             /* pipe readable: completed batches */
    int pipe_rd, pipe_wr;

    /* shared with the commit thread, under mu */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct spool_batch open;           /* collecting */
    bool open_ready;                   /* kicked: the thread may take it */
    struct spool_citem *done_head, **done_tail;
    bool stop;
    uint64_t fsyncs;
};

static void spool_reap(struct spool *sp);
static void spool_schedule_compact(struct spool *sp);

/* --- segments --- */

static void seg_path(const struct spool *sp, uint32_t num, char *dst, size_t size)
{
    if (xsnprintf(dst, size, "%s/%010u.seg", sp->dir, num) < 0)
        log_fatal("event=spool_path_too_long dir=%s", sp->dir);
}

static struct spool_seg *seg_find(struct spool *sp, uint32_t num)
{
    /* segments are few: a binary search over the sorted array */
    size_t lo = 0, hi = sp->n_segs;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (sp->segs[mid].num < num)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < sp->n_segs && sp->segs[lo].num == num ? &sp->segs[lo] : NULL;
}

static struct spool_seg *seg_cur(struct spool *sp)
{
    return &sp->segs[sp->n_segs - 1];
}

/* batch_add_fd - make the open batch fdatasync segment num (mu held) */
static void batch_add_fd(struct spool *sp, struct spool_seg *s)
{
    struct spool_batch *b = &sp->open;
    for (size_t i = 0; i < b->n_fds; i++)
        if (b->fd_segs[i] == s->num)
            return;
    int fd = dup(s->fd);
    if (fd < 0)
        log_fatal("event=spool_dup_failed seg=%u error=\"%s\"", s->num, strerror(errno));
    if (b->n_fds == b->cap_fds) {
        b->cap_fds = b->cap_fds ? b->cap_fds * 2 : 4;
        b->fds = xreallocarray(b->fds, b->cap_fds, sizeof(*b->fds));
        b->fd_segs = xreallocarray(b->fd_segs, b->cap_fds, sizeof(*b->fd_segs));
    }
    b->fds[b->n_fds] = fd;
    b->fd_segs[b->n_fds++] = s->num;
}

/* seg_create - a new, empty current segment; the directory entry is made
 * durable by the next batch (dirsync) before any commit in it is answered */
static int seg_create(struct spool *sp, uint32_t num, struct error *err)
{
    char path[PATH_MAX];
    seg_path(sp, num, path, sizeof(path));
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        if (err)
            error_set(err, "spool_dir", "cannot create %s: %s", path, strerror(errno));
        log_error("event=spool_segment_create_failed path=%s error=\"%s\"", path, strerror(errno));
        return -1;
    }
    if (sp->n_segs == sp->cap_segs) {
        sp->cap_segs = sp->cap_segs ? sp->cap_segs * 2 : 8;
        sp->segs = xreallocarray(sp->segs, sp->cap_segs, sizeof(*sp->segs));
    }
    if (sp->n_segs)
        sp->segs[sp->n_segs - 1].closed_ms = time_mono_ms();
    sp->segs[sp->n_segs++] = (struct spool_seg){ .num = num, .fd = fd };
    sp->stats.segments = sp->n_segs;
    pthread_mutex_lock(&sp->mu);
    if (sp->n_segs > 1)
        batch_add_fd(sp, &sp->segs[sp->n_segs - 2]);   /* its tail writes */
    sp->open.dirsync = true;
    pthread_mutex_unlock(&sp->mu);
    log_debug("event=spool_segment_new seg=%u", num);
    return 0;
}

/* seg_prepare - roll to a new segment when total more octets would overflow */
static int seg_prepare(struct spool *sp, size_t total)
{
    struct spool_seg *c = seg_cur(sp);
    if (c->size == 0 || c->size + total <= sp->segment_size)
        return 0;
    if (seg_create(sp, c->num + 1, NULL) < 0)
        return -1;
    spool_schedule_compact(sp);
    return 0;
}

/* seg_append - write iov fully at the end of the current segment.  On error
 * the segment is cut back, so a half record never precedes good ones. */
static int seg_append(struct spool *sp, struct iovec *iov, int n, uint64_t *at)
{
    struct spool_seg *c = seg_cur(sp);
    uint64_t start = c->size;
    *at = start;
    int i = 0;
    while (i < n) {
        ssize_t w = pwritev(c->fd, iov + i, n - i, (off_t)c->size);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            log_error("event=spool_write_failed seg=%u error=\"%s\"", c->num, strerror(e));
            if (ftruncate(c->fd, (off_t)start) < 0) {
                /* leave the junk in a closed segment: recovery sets it aside */
                log_error("event=spool_truncate_failed seg=%u error=\"%s\"", c->num, strerror(errno));
                c->size = start;
                seg_create(sp, c->num + 1, NULL);   /* may move sp->segs: c is stale after */
            } else {
                c->size = start;
            }
            errno = e;
            return -1;
        }
        c->size += (uint64_t)w;
        while (i < n && (size_t)w >= iov[i].iov_len) {
            w -= (ssize_t)iov[i].iov_len;
            i++;
        }
        if (i < n) {
            iov[i].iov_base = (char *)iov[i].iov_base + w;
            iov[i].iov_len -= (size_t)w;
        }
    }
    sp->stats.bytes += c->size - start;
    return 0;
}

/* spool_append_record - one record with a qid and a payload in parts */
static int spool_append_record(struct spool *sp, enum spool_rec_type type, const char *qid,
                               const void *p1, size_t l1, const void *p2, size_t l2)
{
    uint8_t hdr[SPOOL_REC_HDR], tr[SPOOL_REC_TRAILER];
    const void *parts[3] = { qid, p1, p2 };
    size_t lens[3] = { SPOOL_QID_LEN, l1, l2 };
    spool_rec_header(hdr, type, parts, lens, 3);
    spool_rec_trailer(tr);
    struct iovec iov[5] = {
        { hdr, sizeof(hdr) }, { (void *)qid, SPOOL_QID_LEN }, { (void *)p1, l1 },
        { (void *)p2, l2 }, { tr, sizeof(tr) },
    };
    if (seg_prepare(sp, SPOOL_REC_OVERHEAD + SPOOL_QID_LEN + l1 + l2) < 0)
        return -1;
    uint64_t at;
    return seg_append(sp, iov, 5, &at);
}

/* --- the index --- */

static size_t hash_slot(const struct spool *sp, uint64_t id)
{
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & (sp->n_buckets - 1);
}

static void index_grow(struct spool *sp)
{
    size_t nb = sp->n_buckets ? sp->n_buckets * 2 : 1024;
    struct spool_msg **b = xcalloc(nb, sizeof(*b));
    struct spool_msg **old = sp->buckets;
    size_t on = sp->n_buckets;
    sp->buckets = b;
    sp->n_buckets = nb;
    for (size_t i = 0; i < on; i++) {
        struct spool_msg *m = old[i];
        while (m) {
            struct spool_msg *nx = m->hnext;
            size_t s = hash_slot(sp, m->id);
            m->hnext = b[s];
            b[s] = m;
            m = nx;
        }
    }
    free(old);
}

static struct spool_msg *index_get(struct spool *sp, uint64_t id)
{
    if (!sp->n_buckets)
        return NULL;
    for (struct spool_msg *m = sp->buckets[hash_slot(sp, id)]; m; m = m->hnext)
        if (m->id == id)
            return m;
    return NULL;
}

/* gauges_publish - the live count and the oldest receipt for spool_gauges */
static void gauges_publish(struct spool *sp)
{
    atomic_store_explicit(&sp->gauge_msgs, sp->n_msgs, memory_order_relaxed);
    atomic_store_explicit(&sp->gauge_oldest_ms, sp->head ? sp->head->env.received_ms : 0,
                          memory_order_relaxed);
}

void spool_gauges(const struct spool *sp, uint64_t *messages, int64_t *oldest_ms)
{
    struct spool *w = (struct spool *)sp;   /* atomic loads need a non-const object */
    *messages = atomic_load_explicit(&w->gauge_msgs, memory_order_relaxed);
    *oldest_ms = atomic_load_explicit(&w->gauge_oldest_ms, memory_order_relaxed);
}

static void index_add(struct spool *sp, struct spool_msg *m)
{
    if (sp->n_msgs + 1 > sp->n_buckets)
        index_grow(sp);
    size_t s = hash_slot(sp, m->id);
    m->hnext = sp->buckets[s];
    sp->buckets[s] = m;
    m->next = NULL;
    m->prev = sp->tail;
    if (sp->tail)
        sp->tail->next = m;
    else
        sp->head = m;
    sp->tail = m;
    sp->n_msgs++;
    for (size_t i = 0; i < m->env.n_rcpts; i++)
        if (m->env.rcpts[i].state == SPOOL_RCPT_PENDING)
            sp->recipients_pending++;
    gauges_publish(sp);
}

static void index_del(struct spool *sp, struct spool_msg *m)
{
    struct spool_msg **pp = &sp->buckets[hash_slot(sp, m->id)];
    while (*pp && *pp != m)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = m->hnext;
    if (m->prev)
        m->prev->next = m->next;
    else
        sp->head = m->next;
    if (m->next)
        m->next->prev = m->prev;
    else
        sp->tail = m->prev;
    sp->n_msgs--;
    for (size_t i = 0; i < m->env.n_rcpts; i++)
        if (m->env.rcpts[i].state == SPOOL_RCPT_PENDING)
            sp->recipients_pending--;
    gauges_publish(sp);
}

static void msg_free(struct spool_msg *m)
{
    if (!m)
        return;
    spool_env_clear(&m->env);
    free(m->ext);
    free(m);
}

/* msg_wants_archive - the message must reach the archive before it may go */
static bool msg_wants_archive(const struct spool *sp, const struct spool_msg *m)
{
    return sp->archive && !(m->env.flags & (SPOOL_F_ARCHIVED | SPOOL_F_BOUNCE));
}

static void pend_add(struct spool *sp, struct spool_msg *m)
{
    m->done_pending = true;
    m->hnext = NULL;
    m->next = NULL;
    m->prev = sp->pend_tail;
    if (sp->pend_tail)
        sp->pend_tail->next = m;
    else
        sp->pend_head = m;
    sp->pend_tail = m;
    sp->n_pend++;
}

static void pend_del(struct spool *sp, struct spool_msg *m)
{
    if (m->prev)
        m->prev->next = m->next;
    else
        sp->pend_head = m->next;
    if (m->next)
        m->next->prev = m->prev;
    else
        sp->pend_tail = m->prev;
    m->prev = m->next = NULL;
    m->done_pending = false;
    sp->n_pend--;
}

/* msg_first_seg - the lowest segment holding one of the message's records */
static uint32_t msg_first_seg(const struct spool_msg *m, uint32_t commit_seg)
{
    uint32_t f = commit_seg;
    for (size_t i = 0; i < m->n_ext; i++)
        if (m->ext[i].seg < f)
            f = m->ext[i].seg;
    return f;
}

static void seg_ref(struct spool *sp, uint32_t num, uint64_t bytes)
{
    struct spool_seg *s = seg_find(sp, num);
    if (s) {
        s->refs++;
        s->live_bytes += bytes;
    }
}

static void seg_unref(struct spool *sp, uint32_t num, uint64_t bytes)
{
    struct spool_seg *s = seg_find(sp, num);
    if (s) {
        s->refs--;
        s->live_bytes -= bytes < s->live_bytes ? bytes : s->live_bytes;
    }
}

static uint64_t next_id(struct spool *sp)
{
    uint64_t t = time_wall_ms() << 20;
    sp->last_id = t > sp->last_id ? t : sp->last_id + 1;
    return sp->last_id;
}

/* --- the commit thread --- */

static void batch_reset(struct spool_batch *b)
{
    b->head = NULL;
    b->tail = &b->head;
    b->n_fds = 0;
    b->dirsync = false;
}

/* commit_thread - take the collected batch, make it durable, hand it back */
static void *commit_thread(void *arg)
{
    struct spool *sp = arg;
    struct spool_batch b = { 0 };
    batch_reset(&b);
    pthread_mutex_lock(&sp->mu);
    for (;;) {
        while (!sp->open_ready && !sp->stop)
            pthread_cond_wait(&sp->cv, &sp->mu);
        if (!sp->open_ready && sp->stop)
            break;
        /* swap the open batch with our empty one */
        struct spool_batch t = sp->open;
        sp->open = b;
        batch_reset(&sp->open);
        b = t;
        if (!b.head)
            b.tail = &b.head;
        sp->open_ready = false;
        pthread_mutex_unlock(&sp->mu);

        for (size_t i = 0; i < b.n_fds; i++) {
            if (fdatasync(b.fds[i]) < 0)
                log_fatal("event=spool_fsync_failed seg=%u error=\"%s\"", b.fd_segs[i], strerror(errno));
            close(b.fds[i]);
        }
        if (b.dirsync && fsync(sp->dirfd) < 0)
            log_fatal("event=spool_dir_fsync_failed dir=%s error=\"%s\"", sp->dir, strerror(errno));

        pthread_mutex_lock(&sp->mu);
        sp->fsyncs += b.n_fds + (b.dirsync ? 1 : 0);
        if (b.head) {
            *sp->done_tail = b.head;
            sp->done_tail = b.tail;
        }
        batch_reset(&b);
        pthread_mutex_unlock(&sp->mu);
        char c = 1;
        while (write(sp->pipe_wr, &c, 1) < 0 && errno == EINTR)
            ;
        pthread_mutex_lock(&sp->mu);
    }
    pthread_mutex_unlock(&sp->mu);
    free(b.fds);
    free(b.fd_segs);
    return NULL;
}

/* kick_cb - end of the loop turn: let the thread take what was collected */
static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct spool *sp = arg;
    pthread_mutex_lock(&sp->mu);
    sp->open_ready = true;
    pthread_cond_signal(&sp->cv);
    pthread_mutex_unlock(&sp->mu);
}

/* spool_queue_commit - add an item to the open batch with the current segment */
static void spool_queue_commit(struct spool *sp, struct spool_citem *it)
{
    it->next = NULL;
    pthread_mutex_lock(&sp->mu);
    batch_add_fd(sp, seg_cur(sp));
    *sp->open.tail = it;
    sp->open.tail = &it->next;
    pthread_mutex_unlock(&sp->mu);
    event_active(sp->kick_ev, EV_TIMEOUT, 0);
}

/* spool_fail_commit - complete an item with -1 on the loop, later */
static void spool_fail_commit(struct spool *sp, struct spool_citem *it)
{
    it->status = -1;
    it->next = NULL;
    pthread_mutex_lock(&sp->mu);
    *sp->done_tail = it;
    sp->done_tail = &it->next;
    pthread_mutex_unlock(&sp->mu);
    event_active(sp->done_ev, EV_READ, 0);
}

/* spool_complete - run the callbacks of completed batches, in commit order */
static void spool_complete(struct spool *sp, bool notify)
{
    pthread_mutex_lock(&sp->mu);
    struct spool_citem *it = sp->done_head;
    sp->done_head = NULL;
    sp->done_tail = &sp->done_head;
    sp->stats.commits = sp->fsyncs;
    pthread_mutex_unlock(&sp->mu);
    while (it) {
        struct spool_citem *nx = it->next;
        if (it->internal) {
            it->internal(sp, it->arg);
        } else if (it->status == 0) {
            struct spool_msg *m = it->msg;
            index_add(sp, m);
            sp->stats.committed_msgs++;
            log_debug("qid=%s event=spool_committed size=%llu rcpts=%zu", m->qid,
                      (unsigned long long)m->env.size, m->env.n_rcpts);
            if (it->cb)
                it->cb(it->arg, m->qid, 0);
            /* the archiver first: the listener may finish m at once */
            if (notify && sp->archiver && msg_wants_archive(sp, m))
                sp->archiver(sp->archiver_arg, m);
            if (notify && sp->listener)
                sp->listener(sp->listener_arg, m);
        } else {
            struct spool_msg *m = it->msg;
            char qid[SPOOL_QID_LEN + 1];
            memcpy(qid, m->qid, sizeof(qid));
            seg_unref(sp, m->first_seg, m->env.size);
            msg_free(m);
            if (it->cb)
                it->cb(it->arg, qid, -1);
        }
        free(it);
        it = nx;
    }
    spool_reap(sp);
}

static void done_cb(evutil_socket_t fd, short what, void *arg)
{
    struct spool *sp = arg;
    char tmp[256];
    while (read(sp->pipe_rd, tmp, sizeof(tmp)) > 0)
        ;
    spool_complete(sp, true);
}

/* --- segment removal and compaction --- */

/* spool_reap - remove the oldest segments that nothing needs (see the header) */
static void spool_reap(struct spool *sp)
{
    while (sp->n_segs > 1 && sp->segs[0].refs == 0 && sp->segs[0].pins == 0) {
        struct spool_seg *s = &sp->segs[0];
        char path[PATH_MAX];
        seg_path(sp, s->num, path, sizeof(path));
        if (unlink(path) < 0 && errno != ENOENT) {
            log_error("event=spool_unlink_failed path=%s error=\"%s\"", path, strerror(errno));
            return;
        }
        log_debug("event=spool_segment_removed seg=%u", s->num);
        sp->stats.bytes -= s->size < sp->stats.bytes ? s->size : sp->stats.bytes;
        close(s->fd);
        memmove(&sp->segs[0], &sp->segs[1], (sp->n_segs - 1) * sizeof(*sp->segs));
        sp->n_segs--;
    }
    sp->stats.segments = sp->n_segs;
}

struct compact_done {
    uint32_t seg;
    size_t n;
};

static void compact_done_cb(struct spool *sp, void *arg)
{
    struct compact_done *cd = arg;
    struct spool_seg *s = seg_find(sp, cd->seg);
    if (s)
        s->pins--;
    log_info("event=spool_compacted seg=%u messages=%zu", cd->seg, cd->n);
    free(cd);
    sp->compacting = false;
    spool_reap(sp);
    spool_schedule_compact(sp);
}

/* msg_rewrite - copy a message's data and current envelope to the current segment */
static int msg_rewrite(struct spool *sp, struct spool_msg *m)
{
    size_t cap = 4, n = 0;
    struct spool_extent *ext = xcalloc(cap, sizeof(*ext));
    char *chunk = xmalloc(SPOOL_CHUNK_MAX);
    uint64_t off = 0;
    int rc = 0;
    while (off < m->env.size) {
        size_t want = m->env.size - off < SPOOL_CHUNK_MAX ? (size_t)(m->env.size - off) : SPOOL_CHUNK_MAX;
        size_t got = 0;
        while (got < want) {
            ssize_t r = spool_msg_read(sp, m, off + got, chunk + got, want - got);
            if (r <= 0) {
                rc = -1;
                goto out;
            }
            got += (size_t)r;
        }
        if (spool_append_record(sp, SPOOL_REC_DATA, m->qid, chunk, want, NULL, 0) < 0) {
            rc = -1;
            goto out;
        }
        struct spool_seg *c = seg_cur(sp);
        if (n == cap) {
            cap *= 2;
            ext = xreallocarray(ext, cap, sizeof(*ext));
        }
        ext[n++] = (struct spool_extent){ .seg = c->num, .len = (uint32_t)want,
            .off = c->size - SPOOL_REC_TRAILER - want };
        off += want;
    }
    buf_reset(&sp->scratch);
    spool_env_encode(&sp->scratch, &m->env, ext, n);
    if (spool_append_record(sp, SPOOL_REC_COMMIT, m->qid, sp->scratch.data, sp->scratch.len, NULL, 0) < 0) {
        rc = -1;
        goto out;
    }
    uint32_t first = n ? ext[0].seg : seg_cur(sp)->num;
    seg_unref(sp, m->first_seg, m->env.size);
    seg_ref(sp, first, m->env.size);
    m->first_seg = first;
    free(m->ext);
    m->ext = ext;
    m->n_ext = n;
    ext = NULL;
out:
    free(ext);
    free(chunk);
    return rc;
}

/* compact_cb - rewrite the live messages of the oldest segment */
static void compact_cb(evutil_socket_t fd, short what, void *arg)
{
    struct spool *sp = arg;
    if (sp->compacting || sp->n_segs < 2)
        return;
    struct spool_seg *old = &sp->segs[0];
    if (old->refs == 0 || old->pins || old->live_bytes > sp->segment_size / SPOOL_COMPACT_DIVISOR)
        return;
    if (old->closed_ms && old->closed_ms + sp->compact_age_ms > time_mono_ms()) {
        spool_schedule_compact(sp);
        return;
    }
    uint32_t num = old->num;
    /* an open transaction with data there cannot be moved: try again later */
    size_t n_live = 0;
    for (struct spool_msg *m = sp->head; m; m = m->next)
        if (m->first_seg == num)
            n_live++;
    for (struct spool_msg *m = sp->pend_head; m; m = m->next)
        if (m->first_seg == num)
            n_live++;   /* done, but their data is still the archive's to read */
    if (n_live < old->refs)
        return;
    old->pins++;
    sp->compacting = true;
    size_t n = 0;
    struct spool_msg *lists[2] = { sp->head, sp->pend_head };
    for (int l = 0; l < 2; l++) {
        for (struct spool_msg *m = lists[l]; m; m = m->next) {
            if (m->first_seg != num)
                continue;
            if (msg_rewrite(sp, m) < 0) {
                log_warn("qid=%s event=spool_compaction_failed seg=%u", m->qid, num);
                l = 2;
                break;
            }
            n++;
        }
    }
    struct compact_done *cd = xmalloc(sizeof(*cd));
    cd->seg = num;
    cd->n = n;
    struct spool_citem *it = xcalloc(1, sizeof(*it));
    it->internal = compact_done_cb;
    it->arg = cd;
    spool_queue_commit(sp, it);
}

/* spool_schedule_compact - arm the compaction timer when the oldest segment
 * pins little live data; the check itself runs from the loop, later */
static void spool_schedule_compact(struct spool *sp)
{
    if (!sp->compact_ev || sp->compacting || sp->n_segs < 2 || sp->segs[0].refs == 0 ||
        sp->segs[0].live_bytes > sp->segment_size / SPOOL_COMPACT_DIVISOR)
        return;
    uint64_t now = time_mono_ms(), due = sp->segs[0].closed_ms + sp->compact_age_ms;
    if (sp->segs[0].closed_ms == 0)
        due = now;
    uint64_t delay = due > now ? due - now : 0;
    struct timeval tv = { .tv_sec = (time_t)(delay / 1000), .tv_usec = (suseconds_t)(delay % 1000) * 1000 };
    if (!evtimer_pending(sp->compact_ev, NULL) || delay == 0)
        evtimer_add(sp->compact_ev, &tv);
}

void spool_set_compact_age(struct spool *sp, uint64_t ms)
{
    sp->compact_age_ms = ms;
}

/* --- recovery --- */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* set_aside - copy a torn tail into corrupt/ and cut the segment there */
static void set_aside(struct spool *sp, struct spool_seg *s, const uint8_t *map, uint64_t good, uint64_t size)
{
    char path[PATH_MAX];
    if (xsnprintf(path, sizeof(path), "%s/corrupt/%010u.seg.%llu.%llu", sp->dir, s->num,
                  (unsigned long long)good, (unsigned long long)time_wall_ms()) < 0)
        log_fatal("event=spool_path_too_long dir=%s", sp->dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        log_fatal("event=spool_corrupt_copy_failed path=%s error=\"%s\"", path, strerror(errno));
    uint64_t off = good;
    while (off < size) {
        ssize_t w = write(fd, map + off, size - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            log_fatal("event=spool_corrupt_copy_failed path=%s error=\"%s\"", path, strerror(errno));
        }
        off += (uint64_t)w;
    }
    /* the copy must be durable before the original is cut */
    if (fsync(fd) < 0)
        log_fatal("event=spool_fsync_failed path=%s error=\"%s\"", path, strerror(errno));
    close(fd);
    if (ftruncate(s->fd, (off_t)good) < 0 || fsync(s->fd) < 0)
        log_fatal("event=spool_truncate_failed seg=%u error=\"%s\"", s->num, strerror(errno));
    log_warn("event=spool_torn_tail seg=%u offset=%llu octets=%llu copy=%s", s->num,
             (unsigned long long)good, (unsigned long long)(size - good), path);
    sp->stats.torn_tails++;
}

/* recover_record - apply one valid record to the index being rebuilt */
static void recover_record(struct spool *sp, struct spool_seg *s, int type,
                           const uint8_t *p, uint32_t len, uint64_t payload_off)
{
    uint64_t id;
    char qid[SPOOL_QID_LEN + 1];
    memcpy(qid, p, SPOOL_QID_LEN);
    qid[SPOOL_QID_LEN] = '\0';
    if (spool_qid_parse(qid, &id) < 0) {
        log_warn("event=spool_bad_qid seg=%u offset=%llu", s->num, (unsigned long long)payload_off);
        return;
    }
    if (id > sp->last_id)
        sp->last_id = id;
    const uint8_t *body = p + SPOOL_QID_LEN;
    size_t blen = len - SPOOL_QID_LEN;
    struct spool_msg *m = index_get(sp, id);
    switch (type) {
    case SPOOL_REC_DATA:
        break;   /* referenced by its COMMIT, if any */
    case SPOOL_REC_COMMIT: {
        struct spool_envelope env;
        struct spool_extent *ext;
        size_t n_ext;
        if (spool_env_decode(body, blen, &env, &ext, &n_ext) < 0) {
            log_error("qid=%s event=spool_bad_envelope seg=%u", qid, s->num);
            return;
        }
        if (m) {
            /* a compaction rewrite supersedes the earlier copy */
            index_del(sp, m);
            msg_free(m);
        }
        m = xcalloc(1, sizeof(*m));
        m->id = id;
        memcpy(m->qid, qid, sizeof(m->qid));
        m->env = env;
        m->ext = ext;
        m->n_ext = n_ext;
        m->first_seg = msg_first_seg(m, s->num);
        index_add(sp, m);
        break;
    }
    case SPOOL_REC_RCPT: {
        uint32_t idx;
        enum spool_rcpt_state st;
        char *diag;
        if (spool_rcpt_decode(body, blen, &idx, &st, &diag) < 0) {
            log_warn("qid=%s event=spool_bad_rcpt_record seg=%u", qid, s->num);
            return;
        }
        if (m && idx < m->env.n_rcpts) {
            struct spool_rcpt *r = &m->env.rcpts[idx];
            if (r->state == SPOOL_RCPT_PENDING && st != SPOOL_RCPT_PENDING)
                sp->recipients_pending--;
            else if (r->state != SPOOL_RCPT_PENDING && st == SPOOL_RCPT_PENDING)
                sp->recipients_pending++;
            r->state = st;
            free(r->diag);
            r->diag = diag;
        } else {
            free(diag);
        }
        break;
    }
    case SPOOL_REC_WARNED:
        if (m)
            m->env.warned = true;
        break;
    case SPOOL_REC_RELEASE:
        if (m) {
            free(m->env.hold);
            m->env.hold = NULL;
        }
        break;
    case SPOOL_REC_ARCHIVED:
        if (m)
            m->env.flags |= SPOOL_F_ARCHIVED;
        break;
    case SPOOL_REC_DONE:
        if (m) {
            index_del(sp, m);
            msg_free(m);
        }
        break;
    }
}

/* recover_segment - scan one segment; returns -1 on an I/O error */
static int recover_segment(struct spool *sp, struct spool_seg *s, struct error *err)
{
    struct stat st;
    if (fstat(s->fd, &st) < 0) {
        error_set(err, "spool_dir", "stat segment %u: %s", s->num, strerror(errno));
        return -1;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size == 0)
        return 0;
    uint8_t *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, s->fd, 0);
    if (map == MAP_FAILED) {
        error_set(err, "spool_dir", "mmap segment %u: %s", s->num, strerror(errno));
        return -1;
    }
    uint64_t off = 0;
    while (off < size) {
        int type;
        const uint8_t *payload;
        uint32_t plen;
        size_t total;
        int r = spool_rec_check(map + off, size - off, &type, &payload, &plen, &total);
        if (r != 1)
            break;
        recover_record(sp, s, type, payload, plen, off + SPOOL_REC_HDR);
        off += total;
    }
    if (off < size)
        set_aside(sp, s, map, off, size);
    s->size = off;
    munmap(map, size);
    return 0;
}

/* recover_check - drop messages whose data is not all there (should not happen) */
static void recover_check(struct spool *sp)
{
    struct spool_msg *m = sp->head;
    while (m) {
        struct spool_msg *nx = m->next;
        bool ok = true;
        for (size_t i = 0; i < m->n_ext && ok; i++) {
            struct spool_seg *s = seg_find(sp, m->ext[i].seg);
            ok = s && m->ext[i].off + m->ext[i].len <= s->size;
        }
        if (!ok) {
            log_error("qid=%s event=spool_message_lost reason=\"data extent missing\"", m->qid);
            index_del(sp, m);
            msg_free(m);
        } else {
            seg_ref(sp, m->first_seg, m->env.size);
        }
        m = nx;
    }
}

static int spool_recover(struct spool *sp, struct error *err)
{
    DIR *d = opendir(sp->dir);
    if (!d) {
        error_set(err, "spool_dir", "cannot open %s: %s", sp->dir, strerror(errno));
        return -1;
    }
    uint32_t *nums = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l != 14 || strcmp(de->d_name + 10, ".seg") != 0)
            continue;
        char *end;
        unsigned long v = strtoul(de->d_name, &end, 10);
        if (end != de->d_name + 10 || v > UINT32_MAX - 1)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            nums = xreallocarray(nums, cap, sizeof(*nums));
        }
        nums[n++] = (uint32_t)v;
    }
    closedir(d);
    if (n)
        qsort(nums, n, sizeof(*nums), cmp_u32);
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX];
        seg_path(sp, nums[i], path, sizeof(path));
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            error_set(err, "spool_dir", "cannot open %s: %s", path, strerror(errno));
            free(nums);
            return -1;
        }
        if (sp->n_segs == sp->cap_segs) {
            sp->cap_segs = sp->cap_segs ? sp->cap_segs * 2 : 8;
            sp->segs = xreallocarray(sp->segs, sp->cap_segs, sizeof(*sp->segs));
        }
        sp->segs[sp->n_segs++] = (struct spool_seg){ .num = nums[i], .fd = fd };
        if (recover_segment(sp, &sp->segs[sp->n_segs - 1], err) < 0) {
            free(nums);
            return -1;
        }
        sp->stats.bytes += sp->segs[sp->n_segs - 1].size;
    }
    free(nums);
    recover_check(sp);
    return 0;
}

/* --- open / close --- */

static int mkdir_p(const char *path, struct error *err)
{
    if (mkdir(path, 0700) == 0 || errno == EEXIST)
        return 0;
    error_set(err, "spool_dir", "cannot create %s: %s", path, strerror(errno));
    return -1;
}

struct spool *spool_open(const char *dir, const struct spool_options *opt,
                         struct event_base *base, struct error *err)
{
    struct spool *sp = xcalloc(1, sizeof(*sp));
    sp->dir = xstrdup(dir);
    sp->dirfd = -1;
    sp->pipe_rd = sp->pipe_wr = -1;
    sp->base = base;
    sp->segment_size = opt && opt->segment_size ? opt->segment_size : SPOOL_DEFAULT_SEGMENT;
    if (sp->segment_size < SPOOL_MIN_SEGMENT)
        sp->segment_size = SPOOL_MIN_SEGMENT;
    sp->compact_age_ms = SPOOL_COMPACT_AGE_MS;
    sp->archive = opt && opt->archive;
    buf_init(&sp->scratch);
    pthread_mutex_init(&sp->mu, NULL);
    pthread_cond_init(&sp->cv, NULL);
    batch_reset(&sp->open);
    sp->done_tail = &sp->done_head;

    char corrupt[PATH_MAX];
    if (xsnprintf(corrupt, sizeof(corrupt), "%s/corrupt", dir) < 0) {
        error_set(err, "spool_dir", "path too long: %s", dir);
        goto fail;
    }
    if (mkdir_p(dir, err) < 0 || mkdir_p(corrupt, err) < 0)
        goto fail;
    sp->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (sp->dirfd < 0) {
        error_set(err, "spool_dir", "cannot open %s: %s", dir, strerror(errno));
        goto fail;
    }
    if (spool_recover(sp, err) < 0)
        goto fail;
    uint64_t now_id = time_wall_ms() << 20;
    if (sp->last_id < now_id)
        sp->last_id = now_id;
    if (sp->n_segs == 0 || seg_cur(sp)->size >= sp->segment_size) {
        if (seg_create(sp, sp->n_segs ? seg_cur(sp)->num + 1 : 1, err) < 0)
            goto fail;
        /* recovery happens before the loop runs: make the entry durable now */
        if (fsync(sp->dirfd) < 0)
            log_fatal("event=spool_dir_fsync_failed dir=%s error=\"%s\"", dir, strerror(errno));
    }
    spool_reap(sp);

    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        error_set(err, "spool_dir", "pipe: %s", strerror(errno));
        goto fail;
    }
    sp->pipe_rd = fds[0];
    sp->pipe_wr = fds[1];
    sp->done_ev = event_new(base, sp->pipe_rd, EV_READ | EV_PERSIST, done_cb, sp);
    sp->kick_ev = event_new(base, -1, 0, kick_cb, sp);
    sp->compact_ev = evtimer_new(base, compact_cb, sp);
    if (!sp->done_ev || !sp->kick_ev || !sp->compact_ev || event_add(sp->done_ev, NULL) < 0) {
        error_set(err, "spool_dir", "cannot create spool events");
        goto fail;
    }
    if (pthread_create(&sp->thread, NULL, commit_thread, sp) != 0) {
        error_set(err, "spool_dir", "cannot start the commit thread");
        goto fail;
    }
    sp->thread_started = true;
    sp->stats.messages = sp->n_msgs;
    log_info("event=spool_open dir=%s segments=%zu messages=%zu recipients_pending=%llu torn_tails=%llu",
             dir, sp->n_segs, sp->n_msgs, (unsigned long long)sp->recipients_pending,
             (unsigned long long)sp->stats.torn_tails);
    spool_schedule_compact(sp);
    return sp;
fail:
    spool_close(sp);
    return NULL;
}

void spool_close(struct spool *sp)
{
    if (!sp)
        return;
    if (sp->thread_started) {
        pthread_mutex_lock(&sp->mu);
        sp->open_ready = true;
        sp->stop = true;
        pthread_cond_signal(&sp->cv);
        pthread_mutex_unlock(&sp->mu);
        pthread_join(sp->thread, NULL);
        spool_complete(sp, false);
        /* RCPT/DONE records written since the last batch */
        if (sp->n_segs && fdatasync(seg_cur(sp)->fd) < 0)
            log_fatal("event=spool_fsync_failed seg=%u error=\"%s\"", seg_cur(sp)->num, strerror(errno));
    }
    for (size_t i = 0; i < sp->open.n_fds; i++)
        close(sp->open.fds[i]);
    free(sp->open.fds);
    free(sp->open.fd_segs);
    struct spool_citem *it = sp->open.head;
    while (it) {
        struct spool_citem *nx = it->next;
        msg_free(it->msg);
        free(it);
        it = nx;
    }
    if (sp->done_ev)
        event_free(sp->done_ev);
    if (sp->kick_ev)
        event_free(sp->kick_ev);
    if (sp->compact_ev)
        event_free(sp->compact_ev);
    if (sp->pipe_rd >= 0)
        close(sp->pipe_rd);
    if (sp->pipe_wr >= 0)
        close(sp->pipe_wr);
    struct spool_msg *m = sp->head;
    while (m) {
        struct spool_msg *nx = m->next;
        msg_free(m);
        m = nx;
    }
    for (m = sp->pend_head; m;) {
        struct spool_msg *nx = m->next;
        msg_free(m);
        m = nx;
    }
    free(sp->buckets);
    for (size_t i = 0; i < sp->n_segs; i++)
        close(sp->segs[i].fd);
    free(sp->segs);
    if (sp->dirfd >= 0)
        close(sp->dirfd);
    pthread_mutex_destroy(&sp->mu);
    pthread_cond_destroy(&sp->cv);
    buf_free(&sp->scratch);
    free(sp->dir);
    free(sp);
}

/* --- receiving --- */

struct spool_txn *spool_txn_begin(struct spool *sp)
{
    struct spool_txn *t = xcalloc(1, sizeof(*t));
    t->sp = sp;
    t->id = next_id(sp);
    spool_qid_format(t->qid, t->id);
    buf_init(&t->data);
    return t;
}

const char *spool_txn_id(const struct spool_txn *t)
{
    return t->qid;
}

uint64_t spool_txn_size(const struct spool_txn *t)
{
    return t->size;
}

static void txn_add_extent(struct spool_txn *t, uint32_t seg, uint64_t off, size_t len)
{
    if (t->n_ext == t->cap_ext) {
        t->cap_ext = t->cap_ext ? t->cap_ext * 2 : 4;
        t->ext = xreallocarray(t->ext, t->cap_ext, sizeof(*t->ext));
    }
    t->ext[t->n_ext++] = (struct spool_extent){ .seg = seg, .off = off, .len = (uint32_t)len };
    if (!t->has_seg) {
        /* the open transaction pins the segment its first chunk is in */
        t->first_seg = seg;
        t->has_seg = true;
        seg_ref(t->sp, seg, 0);
    }
}

/* txn_flush - write the buffered data as one DATA record */
static int txn_flush(struct spool_txn *t)
{
    struct spool *sp = t->sp;
    size_t len = t->data.len;
    if (seg_prepare(sp, SPOOL_REC_OVERHEAD + SPOOL_QID_LEN + len) < 0)
        return -1;
    if (spool_append_record(sp, SPOOL_REC_DATA, t->qid, t->data.data, len, NULL, 0) < 0)
        return -1;
    struct spool_seg *c = seg_cur(sp);
    txn_add_extent(t, c->num, c->size - SPOOL_REC_TRAILER - len, len);
    buf_reset(&t->data);
    return 0;
}

int spool_txn_write(struct spool_txn *t, const void *data, size_t len)
{
    if (t->poisoned)
        return -1;
    const char *p = data;
    while (len) {
        size_t room = SPOOL_CHUNK_MAX - t->data.len;
        size_t n = len < room ? len : room;
        buf_append(&t->data, p, n);
        t->size += n;
        p += n;
        len -= n;
        if (t->data.len == SPOOL_CHUNK_MAX && txn_flush(t) < 0) {
            t->poisoned = true;
            return -1;
        }
    }
    return 0;
}

static void txn_free(struct spool_txn *t)
{
    buf_free(&t->data);
    free(t->ext);
    free(t);
}

void spool_txn_commit(struct spool_txn *t, const struct spool_envelope *env,
                      spool_commit_cb cb, void *arg)
{
    struct spool *sp = t->sp;
    struct spool_msg *m = xcalloc(1, sizeof(*m));
    m->id = t->id;
    memcpy(m->qid, t->qid, sizeof(m->qid));
    spool_env_copy(&m->env, env);
    m->env.size = t->size;
    m->env.warned = false;
    struct spool_citem *it = xcalloc(1, sizeof(*it));
    it->cb = cb;
    it->arg = arg;
    it->msg = m;

    int rc = t->poisoned ? -1 : 0;
    size_t dlen = t->data.len;
    uint8_t dhdr[SPOOL_REC_HDR], dtr[SPOOL_REC_TRAILER], chdr[SPOOL_REC_HDR], ctr[SPOOL_REC_TRAILER];
    if (rc == 0) {
        /* room for both records: the final chunk and the commit share a write */
        size_t est_env = 256 + env->n_rcpts * 64;
        if (seg_prepare(sp, (dlen ? SPOOL_REC_OVERHEAD + SPOOL_QID_LEN + dlen : 0) +
                        SPOOL_REC_OVERHEAD + SPOOL_QID_LEN + est_env) < 0)
            rc = -1;
    }
    if (rc == 0) {
        struct spool_seg *c = seg_cur(sp);
        if (dlen)
            txn_add_extent(t, c->num, c->size + SPOOL_REC_HDR + SPOOL_QID_LEN, dlen);
        buf_reset(&sp->scratch);
        spool_env_encode(&sp->scratch, &m->env, t->ext, t->n_ext);
        struct iovec iov[8];
        int n = 0;
        if (dlen) {
            const void *parts[2] = { t->qid, t->data.data };
            size_t lens[2] = { SPOOL_QID_LEN, dlen };
            spool_rec_header(dhdr, SPOOL_REC_DATA, parts, lens, 2);
            spool_rec_trailer(dtr);
            iov[n++] = (struct iovec){ dhdr, sizeof(dhdr) };
            iov[n++] = (struct iovec){ t->qid, SPOOL_QID_LEN };
            iov[n++] = (struct iovec){ t->data.data, dlen };
            iov[n++] = (struct iovec){ dtr, sizeof(dtr) };
        }
        const void *cparts[2] = { t->qid, sp->scratch.data };
        size_t clens[2] = { SPOOL_QID_LEN, sp->scratch.len };
        spool_rec_header(chdr, SPOOL_REC_COMMIT, cparts, clens, 2);
        spool_rec_trailer(ctr);
        iov[n++] = (struct iovec){ chdr, sizeof(chdr) };
        iov[n++] = (struct iovec){ t->qid, SPOOL_QID_LEN };
        iov[n++] = (struct iovec){ sp->scratch.data, sp->scratch.len };
        iov[n++] = (struct iovec){ ctr, sizeof(ctr) };
        uint64_t at;
        if (seg_append(sp, iov, n, &at) < 0)
            rc = -1;
    }
    /* the message takes over the transaction's pin on its first segment */
    uint32_t commit_seg = seg_cur(sp)->num;
    if (t->has_seg)
        seg_unref(sp, t->first_seg, 0);
    if (rc == 0) {
        m->ext = t->ext;
        m->n_ext = t->n_ext;
        t->ext = NULL;
        m->first_seg = msg_first_seg(m, commit_seg);
        seg_ref(sp, m->first_seg, m->env.size);
        txn_free(t);
        spool_queue_commit(sp, it);
    } else {
        log_error("qid=%s event=spool_commit_failed error=\"%s\"", m->qid, strerror(errno));
        m->first_seg = commit_seg;
        seg_ref(sp, commit_seg, m->env.size);   /* released by the failure path */
        txn_free(t);
        spool_fail_commit(sp, it);
    }
}

void spool_txn_abort(struct spool_txn *t)
{
    if (t->has_seg)
        seg_unref(t->sp, t->first_seg, 0);
    struct spool *sp = t->sp;
    txn_free(t);
    spool_reap(sp);
}

void spool_inject(struct spool *sp, const struct spool_envelope *env,
                  const void *data, size_t len, spool_commit_cb cb, void *arg)
{
    struct spool_txn *t = spool_txn_begin(sp);
    spool_txn_write(t, data, len);
    spool_txn_commit(t, env, cb, arg);
}

/* --- the delivery side --- */

void spool_set_listener(struct spool *sp, spool_listener_cb cb, void *arg)
{
    sp->listener = cb;
    sp->listener_arg = arg;
    if (!cb)
        return;
    for (struct spool_msg *m = sp->head; m;) {
        struct spool_msg *nx = m->next;   /* the listener may finish m */
        cb(arg, m);
        m = nx;
    }
}

const char *spool_msg_id(const struct spool_msg *m)
{
    return m->qid;
}

const struct spool_envelope *spool_msg_envelope(const struct spool_msg *m)
{
    return &m->env;
}

ssize_t spool_msg_read(struct spool *sp, struct spool_msg *m, uint64_t off, void *buf, size_t len)
{
    uint64_t base = 0;
    for (size_t i = 0; i < m->n_ext; i++) {
        const struct spool_extent *e = &m->ext[i];
        if (off < base + e->len) {
            uint64_t in = off - base;
            size_t n = e->len - in < len ? (size_t)(e->len - in) : len;
            struct spool_seg *s = seg_find(sp, e->seg);
            if (!s) {
                errno = ENOENT;
                return -1;
            }
            for (;;) {
                ssize_t r = pread(s->fd, buf, n, (off_t)(e->off + in));
                if (r < 0 && errno == EINTR)
                    continue;
                if (r < 0)
                    log_error("qid=%s event=spool_read_failed seg=%u error=\"%s\"", m->qid, e->seg,
                              strerror(errno));
                else if (r == 0) {
                    errno = EIO;
                    return -1;
                }
                return r;
            }
        }
        base += e->len;
    }
    return 0;
}

void spool_msg_set_user(struct spool_msg *m, void *user)
{
    m->user = user;
}

void *spool_msg_user(const struct spool_msg *m)
{
    return m->user;
}

int spool_msg_set_rcpt(struct spool *sp, struct spool_msg *m, size_t idx,
                       enum spool_rcpt_state st, const char *diag)
{
    if (idx >= m->env.n_rcpts)
        return -1;
    struct spool_rcpt *r = &m->env.rcpts[idx];
    if (r->state == SPOOL_RCPT_PENDING && st != SPOOL_RCPT_PENDING)
        sp->recipients_pending--;
    else if (r->state != SPOOL_RCPT_PENDING && st == SPOOL_RCPT_PENDING)
        sp->recipients_pending++;
    r->state = st;
    if (diag != r->diag) {
        free(r->diag);
        r->diag = diag ? xstrdup(diag) : NULL;
    }
    buf_reset(&sp->scratch);
    spool_rcpt_encode(&sp->scratch, (uint32_t)idx, st, r->diag);
    return spool_append_record(sp, SPOOL_REC_RCPT, m->qid, sp->scratch.data, sp->scratch.len, NULL, 0);
}

int spool_msg_set_warned(struct spool *sp, struct spool_msg *m)
{
    m->env.warned = true;
    return spool_append_record(sp, SPOOL_REC_WARNED, m->qid, NULL, 0, NULL, 0);
}

/* msg_forget - the DONE record; m leaves the spool */
static int msg_forget(struct spool *sp, struct spool_msg *m)
{
    int rc = spool_append_record(sp, SPOOL_REC_DONE, m->qid, NULL, 0, NULL, 0);
    log_debug("qid=%s event=spool_done", m->qid);
    if (m->done_pending)
        pend_del(sp, m);
    else
        index_del(sp, m);
    seg_unref(sp, m->first_seg, m->env.size);
    msg_free(m);
    spool_reap(sp);
    spool_schedule_compact(sp);
    return rc;
}

int spool_msg_done(struct spool *sp, struct spool_msg *m)
{
    if (m->done_pending)
        return 0;
    if (msg_wants_archive(sp, m)) {
        /* the archive still needs its data: out of the live index, kept */
        log_debug("qid=%s event=spool_done_pending", m->qid);
        index_del(sp, m);
        pend_add(sp, m);
        return 0;
    }
    return msg_forget(sp, m);
}

void spool_set_archiver(struct spool *sp, spool_archiver_cb cb, void *arg)
{
    sp->archiver = cb;
    sp->archiver_arg = arg;
    if (!cb || !sp->archive)
        return;
    /* live and done-pending messages merged by id: oldest first.  cb may
     * not finish messages (it only queues them), so the lists are stable. */
    struct spool_msg *a = sp->head, *b = sp->pend_head;
    while (a || b) {
        struct spool_msg *m;
        if (a && (!b || a->id < b->id)) {
            m = a;
            a = a->next;
        } else {
            m = b;
            b = b->next;
        }
        if (msg_wants_archive(sp, m))
            cb(arg, m);
    }
}

int spool_msg_set_archived(struct spool *sp, struct spool_msg *m)
{
    int rc = spool_append_record(sp, SPOOL_REC_ARCHIVED, m->qid, NULL, 0, NULL, 0);
    if (rc < 0)
        log_error("qid=%s event=spool_archived_record_failed error=\"%s\"", m->qid, strerror(errno));
    m->env.flags |= SPOOL_F_ARCHIVED;
    log_debug("qid=%s event=spool_archived", m->qid);
    if (m->done_pending)
        return msg_forget(sp, m) < 0 ? -1 : rc;
    return rc;
}

/* a release waiting for its record to be durable (an internal commit item) */
struct spool_release {
    char qid[SPOOL_QID_LEN + 1];
    spool_commit_cb cb;
    void *arg;
    int status;
};

static void release_done(struct spool *sp, void *arg)
{
    struct spool_release *r = arg;
    (void)sp;
    if (r->cb)
        r->cb(r->arg, r->qid, r->status);
    free(r);
}

void spool_msg_release(struct spool *sp, struct spool_msg *m, spool_commit_cb cb, void *arg)
{
    struct spool_release *r = xcalloc(1, sizeof *r);
    memcpy(r->qid, m->qid, sizeof r->qid);
    r->cb = cb;
    r->arg = arg;
    struct spool_citem *it = xcalloc(1, sizeof *it);
    it->internal = release_done;
    it->arg = r;
    if (spool_append_record(sp, SPOOL_REC_RELEASE, m->qid, NULL, 0, NULL, 0) < 0) {
        log_error("qid=%s event=spool_release_failed error=\"%s\"", m->qid, strerror(errno));
        r->status = -1;
        spool_fail_commit(sp, it);
        return;
    }
    free(m->env.hold);
    m->env.hold = NULL;
    spool_queue_commit(sp, it);
}

struct spool_msg *spool_msg_find(struct spool *sp, const char *qid)
{
    uint64_t id;
    if (!qid || strlen(qid) != SPOOL_QID_LEN || spool_qid_parse(qid, &id) < 0)
        return NULL;
    return index_get(sp, id);
}

void spool_foreach(struct spool *sp, int (*cb)(void *arg, struct spool_msg *m), void *arg)
{
    for (struct spool_msg *m = sp->head; m;) {
        struct spool_msg *nx = m->next;
        if (cb(arg, m))
            break;
        m = nx;
    }
}

void spool_get_stats(struct spool *sp, struct spool_stats *out)
{
    pthread_mutex_lock(&sp->mu);
    sp->stats.commits = sp->fsyncs;
    pthread_mutex_unlock(&sp->mu);
    sp->stats.messages = sp->n_msgs;
    sp->stats.recipients_pending = sp->recipients_pending;
    sp->stats.segments = sp->n_segs;
    *out = sp->stats;
}
