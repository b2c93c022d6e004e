/*
 * archive.c - the archive engine (archive.h): messages from the spool into
 * the archive store, retention, and the pure helpers the API uses to read
 * (archive_body, archive_mbox_write, archive_purge_run).
 *
 * Loop side.  The spool names every durable message not yet archived
 * (archive_on_message, a spool_set_archiver callback).  Each waits in a
 * FIFO of spool_msg pointers (safe: the spool keeps an unarchived message,
 * done or not) until its octets fit in ARCHIVE_INFLIGHT_BYTES; then it is
 * read (spool_msg_read) into a job handed to the thread.  Back on the loop
 * (a pipe, like the spool's commit thread) every job whose batch committed
 * is marked archived (spool_msg_set_archived): only then may the spool
 * forget it.  A timer asks the thread to purge by retention.
 *
 * Thread side.  Batches of up to ARCHIVE_BATCH_MAX jobs: archive_prepare
 * each (unwrap journal reports, extract, compress, hash), one
 * store_archive_ingest, then store_journal_seen for journal messages.  A
 * store error is logged and the batch retried after a back-off (1 s
 * doubling to 60 s): nothing is marked archived without a durable commit,
 * and a repeated ingest is idempotent (by queue id).  The thread owns its
 * two store handles (the archive, and the configuration store for legal
 * holds, internal domains and the journal evidence).
 *
 * Ownership: a job belongs to the FIFO/thread queue/done list it is on; the
 * mutex guards the thread queue, the done list, the purge request and the
 * counters the thread updates.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <event2/event.h>
#include <sodium.h>
#include <zstd.h>
#include "../core/metrics.h"
#include "archive.h"
#include "archive_journal.h"
#include "../core/track.h"
#include "../policy/screen_clock.h"
#include "../spool/spool.h"

#define ARCHIVE_ZSTD_LEVEL 3
#define ARCHIVE_BODY_MAX (512u << 20)     /* largest message archive_body inflates */
#define ARCHIVE_BACKOFF_MIN 1             /* seconds */
#define ARCHIVE_BACKOFF_MAX 60
#define ARCHIVE_PURGE_BATCH 1000          /* messages per purge transaction */

/* one message on its way into the archive */
struct archive_job {
    struct archive_job *next;
    struct spool_msg *m;          /* loop only */
    char qid[SPOOL_QID_LEN + 1];
    int64_t received;
    bool journal;
    bool outbound;
    char *client;
    char *sender;
    char **rcpts;
    size_t n_rcpts;
    unsigned char *data;
    size_t len;
    /* set by the thread */
    bool archived;                /* committed: mark it in the spool */
    enum store_archive_outcome outcome;
    const char *kind;             /* journal: "plain", "report", "malformed" (static) */
};

/* the FIFO of messages waiting for room in flight (loop only) */
struct archive_wait {
    struct spool_msg **m;
    size_t head, n, cap;
};

struct archive {
    struct archive_config cfg;
    char *path, *database;

    /* loop side */
    struct archive_wait wait;
    uint64_t inflight_bytes;
    size_t inflight;              /* jobs handed to the thread, not yet back */
    struct event *done_ev;
    struct event *purge_ev;
    int pipe_rd, pipe_wr;
    bool attached;

    /* the thread */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct archive_job *q_head, **q_tail;     /* for the thread */
    struct archive_job *d_head, **d_tail;     /* back to the loop */
    struct archive_limits lim;                /* copied from the settings by the loop */
    bool purge_req;
    int64_t purge_now, purge_retention;
    bool stop;
    struct archive_stats stats;               /* under mu */

    /* thread only */
    struct store_archive *sa;
    struct store *st;
    char **internal;              /* internal domains, sorted */
    size_t n_internal;
    bool internal_loaded;
};

/* --- small helpers --- */

static char *lower_dup(const char *s)
{
    char *d = xstrdup(s ? s : "");
    str_lower(d);
    return d;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static const char *addr_domain(const char *addr)
{
    const char *at = addr ? strrchr(addr, '@') : NULL;
    return at && at[1] ? at + 1 : NULL;
}

/* --- preparing one item (any thread) --- */

/* what archive_prepared.priv owns */
struct archive_priv {
    struct archive_journal j;
    bool have_j;
    struct archive_doc doc;
    bool have_doc;
    struct store_archive_rcpt *rcpts;
    char **strs;                  /* lower-cased copies the item points to */
    size_t n_strs;
    unsigned char hash[crypto_hash_sha256_BYTES];
    void *body;
};

static const char *priv_keep(struct archive_priv *p, char *s)
{
    p->strs = xreallocarray(p->strs, p->n_strs + 1, sizeof *p->strs);
    p->strs[p->n_strs++] = s;
    return s;
}

/* journal_direction - internal sender and every recipient internal:
 * "internal"; internal sender: "outbound"; else "inbound" */
static const char *journal_direction(const char *sender, const struct store_archive_rcpt *r, size_t n,
                                     bool (*is_internal)(void *, const char *), void *arg)
{
    const char *sd = addr_domain(sender);
    bool s_int = sd && is_internal && is_internal(arg, sd);
    if (!s_int)
        return "inbound";
    for (size_t i = 0; i < n; i++) {
        const char *d = addr_domain(r[i].addr);
        if (!d || !is_internal(arg, d))
            return "outbound";
    }
    return n ? "internal" : "outbound";
}

/* header_direction - a journal copy without a report envelope: its only
 * envelope recipient is the journal address, so the header's From, To and
 * Cc tell the direction (the same rule as journal_direction) */
static const char *header_direction(const struct archive_doc *d,
                                    bool (*is_internal)(void *, const char *), void *arg)
{
    char *from = xstrdup(d->from);
    char *comma = strchr(from, ',');
    if (comma)
        *comma = '\0';
    const char *fd = addr_domain(from);
    bool s_int = fd && is_internal && is_internal(arg, fd);
    free(from);
    if (!s_int)
        return "inbound";
    bool any = false, all = true;
    const char *lists[2] = { d->to ? d->to : "", d->cc ? d->cc : "" };
    for (int l = 0; l < 2; l++) {
        char *copy = xstrdup(lists[l]), *save = NULL;
        for (char *a = strtok_r(copy, ", ", &save); a; a = strtok_r(NULL, ", ", &save)) {
            const char *dom = addr_domain(a);
            any = true;
            all = all && dom && is_internal(arg, dom);
        }
        free(copy);
    }
    return any && all ? "internal" : "outbound";
}

/* envelope_rcpts - the transaction's recipients, kind "envelope" */
static void envelope_rcpts(const struct archive_input *in, struct archive_priv *p,
                           struct store_archive_item *it)
{
    p->rcpts = xcalloc(in->n_rcpts ? in->n_rcpts : 1, sizeof *p->rcpts);
    for (size_t i = 0; i < in->n_rcpts; i++) {
        p->rcpts[i].addr = priv_keep(p, lower_dup(in->rcpts[i]));
        p->rcpts[i].kind = "envelope";
    }
    it->rcpts = p->rcpts;
    it->n_rcpts = in->n_rcpts;
    it->sender = priv_keep(p, lower_dup(in->sender));
}

/* body_hash - SHA-256 over the Message-ID, "\n" and the body after the
 * header section: the same message arriving twice (other Received lines,
 * another envelope) hashes the same */
static void body_hash(const struct archive_doc *d, const unsigned char *msg, size_t len,
                      unsigned char out[crypto_hash_sha256_BYTES])
{
    crypto_hash_sha256_state h;
    crypto_hash_sha256_init(&h);
    const char *mid = d->message_id ? d->message_id : "";
    crypto_hash_sha256_update(&h, (const unsigned char *)mid, strlen(mid));
    crypto_hash_sha256_update(&h, (const unsigned char *)"\n", 1);
    size_t off = d->header_len <= len ? d->header_len : len;
    crypto_hash_sha256_update(&h, msg + off, len - off);
    crypto_hash_sha256_final(&h, out);
}

int archive_prepare(const struct archive_input *in, const struct archive_limits *lim,
                    bool (*is_internal)(void *arg, const char *domain), void *arg,
                    struct archive_prepared *out, struct error *err)
{
    memset(out, 0, sizeof *out);
    struct archive_priv *p = xcalloc(1, sizeof *p);
    out->priv = p;
    struct store_archive_item *it = &out->item;
    it->qid = in->qid;
    it->received = in->received;
    it->client_addr = in->client_addr ? in->client_addr : "";
    it->codec = "zstd";
    const unsigned char *msg = in->data;
    size_t len = in->len;

    if (!in->journal) {
        it->source = "smtp";
        it->direction = in->direction ? in->direction : "inbound";
        envelope_rcpts(in, p, it);
    } else {
        it->source = "journal";
        if (archive_journal_parse(in->data, in->len, lim, &p->j) < 0) {
            error_set(err, "archive", "out of memory unwrapping a journal report");
            goto fail;
        }
        p->have_j = true;
        it->journal = archive_journal_kind_name(p->j.kind);
        if (p->j.kind == ARCHIVE_JOURNAL_REPORT) {
            /* the report's envelope; the attached original is what is archived */
            msg = p->j.original ? p->j.original : (const unsigned char *)"";
            len = p->j.original ? p->j.original_len : 0;
            it->sender = p->j.sender ? p->j.sender : "";
            p->rcpts = xcalloc(p->j.n_rcpts ? p->j.n_rcpts : 1, sizeof *p->rcpts);
            for (size_t i = 0; i < p->j.n_rcpts; i++) {
                const struct archive_journal_rcpt *r = &p->j.rcpts[i];
                p->rcpts[i] = (struct store_archive_rcpt){ .addr = r->addr, .kind = r->kind,
                    .expanded = r->expanded, .forwarded = r->forwarded };
            }
            it->rcpts = p->rcpts;
            it->n_rcpts = p->j.n_rcpts;
        } else {
            /* plain copy or unreadable report: as it came, with the transaction's envelope */
            envelope_rcpts(in, p, it);
            if (p->j.kind == ARCHIVE_JOURNAL_MALFORMED)
                it->journal_error = p->j.error ? p->j.error : "unreadable journal report";
        }
        it->direction = journal_direction(it->sender, it->rcpts, it->n_rcpts, is_internal, arg);
    }

    if (archive_mime_extract(msg, len, lim, &p->doc) < 0) {
        error_set(err, "archive", "out of memory extracting the text");
        goto fail;
    }
    p->have_doc = true;
    if (p->have_j && p->j.kind != ARCHIVE_JOURNAL_REPORT && p->doc.from && p->doc.from[0])
        it->direction = header_direction(&p->doc, is_internal, arg);
    it->message_id = p->doc.message_id;
    it->date = p->doc.date;
    it->from = p->doc.from ? p->doc.from : "";
    it->to = p->doc.to ? p->doc.to : "";
    it->cc = p->doc.cc ? p->doc.cc : "";
    it->from_display = p->doc.from_display ? p->doc.from_display : "";
    it->subject = p->doc.subject ? p->doc.subject : "";
    it->attachments = (const char *const *)p->doc.attachments;
    it->n_attachments = p->doc.n_attachments;
    it->text = p->doc.text ? p->doc.text : "";
    it->truncated = p->doc.truncated;
    it->size = len;

    body_hash(&p->doc, msg, len, p->hash);
    it->hash = p->hash;

    size_t bound = ZSTD_compressBound(len);
    p->body = xmalloc(bound ? bound : 1);
    size_t z = ZSTD_compress(p->body, bound, msg, len, ARCHIVE_ZSTD_LEVEL);
    if (ZSTD_isError(z)) {
        error_set(err, "archive", "compression failed: %s", ZSTD_getErrorName(z));
        goto fail;
    }
    it->body = p->body;
    it->body_len = z;
    return 0;
fail:
    archive_prepared_clear(out);
    return -1;
}

void archive_prepared_clear(struct archive_prepared *pr)
{
    struct archive_priv *p = pr->priv;
    if (p != NULL) {
        if (p->have_j)
            archive_journal_clear(&p->j);
        if (p->have_doc)
            archive_doc_clear(&p->doc);
        free(p->rcpts);
        for (size_t i = 0; i < p->n_strs; i++)
            free(p->strs[i]);
        free(p->strs);
        free(p->body);
        free(p);
    }
    memset(pr, 0, sizeof *pr);
}

/* --- reading (the API) --- */

int archive_body(const struct store_archive_message *m, unsigned char **out, size_t *len,
                 struct error *err)
{
    *out = NULL;
    *len = 0;
    if (m->body == NULL) {
        error_set(err, "body", "the message was read without its body");
        return -1;
    }
    if (m->codec && strcmp(m->codec, "zstd") != 0) {
        error_set(err, "codec", "unknown codec %.32s", m->codec);
        return -1;
    }
    unsigned long long size = ZSTD_getFrameContentSize(m->body, m->body_len);
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN) {
        error_set(err, "body", "the archived body is damaged (no zstd frame size)");
        return -1;
    }
    if (size > ARCHIVE_BODY_MAX) {
        error_set(err, "body", "the archived body is larger than %u octets", ARCHIVE_BODY_MAX);
        return -1;
    }
    unsigned char *b = xmalloc(size ? (size_t)size : 1);
    size_t n = ZSTD_decompress(b, (size_t)size, m->body, m->body_len);
    if (ZSTD_isError(n) || n != (size_t)size) {
        free(b);
        error_set(err, "body", "the archived body is damaged: %s",
                  ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short");
        return -1;
    }
    *out = b;
    *len = n;
    return 0;
}

/* mbox_from_quoted - mboxrd: a line of '>'* then "From " gets one more '>' */
static bool mbox_from_quoted(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n && p[i] == '>')
        i++;
    return n - i >= 5 && memcmp(p + i, "From ", 5) == 0;
}

int archive_mbox_write(struct buf *b, const struct store_archive_message *m, struct error *err)
{
    unsigned char *body;
    size_t len;
    if (archive_body(m, &body, &len, err) < 0)
        return -1;
    const char *sender = m->n_arrivals && m->arrivals[0].sender && m->arrivals[0].sender[0]
                             ? m->arrivals[0].sender : "MAILER-DAEMON";
    time_t t = (time_t)m->received;
    struct tm tm;
    char date[64];
    if (gmtime_r(&t, &tm) == NULL || strftime(date, sizeof date, "%a %b %e %H:%M:%S %Y", &tm) == 0)
        str_copy(date, sizeof date, "Thu Jan  1 00:00:00 1970");
    /* the From line is one line: a sender with white space would split it */
    buf_append_str(b, "From ");
    for (const char *p = sender; *p; p++)
        buf_append(b, (unsigned char)*p <= ' ' ? "_" : p, 1);
    buf_printf(b, " %s\n", date);
    size_t off = 0;
    while (off < len) {
        const unsigned char *nl = memchr(body + off, '\n', len - off);
        size_t end = nl ? (size_t)(nl - body) : len;
        size_t n = end - off;
        if (n > 0 && body[off + n - 1] == '\r')
            n--;
        if (mbox_from_quoted(body + off, n))
            buf_append(b, ">", 1);
        buf_append(b, body + off, n);
        buf_append(b, "\n", 1);
        off = nl ? end + 1 : len;
    }
    buf_append(b, "\n", 1);
    free(body);
    return 0;
}

int archive_purge_run(struct store_archive *sa, struct store *st, int64_t now, int64_t retention,
                      size_t *purged, struct error *err)
{
    *purged = 0;
    struct store_legal_hold *h;
    size_t n;
    if (store_legal_hold_list(st, &h, &n, err) < 0)
        return -1;
    const char **held = xcalloc(n ? n : 1, sizeof *held);
    for (size_t i = 0; i < n; i++)
        held[i] = h[i].address;
    int rc = 0;
    for (;;) {
        size_t p = 0;
        if (store_archive_purge(sa, now - retention, held, n, ARCHIVE_PURGE_BATCH, &p, err) < 0) {
            rc = -1;
            break;
        }
        *purged += p;
        if (p < ARCHIVE_PURGE_BATCH)
            break;
    }
    free(held);
    store_legal_holds_free(h, n);
    return rc;
}

/* --- the thread --- */

/* thread_internal - is_internal for archive_prepare: the domain or a parent
 * is an internal domain of the configuration store */
static bool thread_internal(void *arg, const char *domain)
{
    struct archive *a = arg;
    char name[256];
    if (domain == NULL || str_copy(name, sizeof name, domain) < 0)
        return false;
    str_lower(name);
    for (const char *p = name; p && *p;) {
        const char *key = p;
        if (bsearch(&key, a->internal, a->n_internal, sizeof *a->internal, cmp_str))
            return true;
        p = strchr(p, '.');
        if (p)
            p++;
    }
    return false;
}

static void thread_load_internal(struct archive *a)
{
    if (a->internal_loaded && !store_changed(a->st))
        return;
    struct store_domain *d;
    size_t n;
    struct error err = { 0 };
    if (store_domain_list(a->st, &d, &n, &err) < 0) {
        log_warn("event=archive_domains_failed reason=\"%s\"", err.msg);
        return;
    }
    for (size_t i = 0; i < a->n_internal; i++)
        free(a->internal[i]);
    free(a->internal);
    a->internal = xcalloc(n ? n : 1, sizeof *a->internal);
    a->n_internal = 0;
    for (size_t i = 0; i < n; i++)
        if (store_domain_internal(&d[i]))
            a->internal[a->n_internal++] = lower_dup(d[i].name);
    qsort(a->internal, a->n_internal, sizeof *a->internal, cmp_str);
    store_domains_free(d, n);
    a->internal_loaded = true;
}

/* thread_wait - sleep up to secs unless stopping; false when stopping */
static bool thread_wait(struct archive *a, int secs)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += secs;
    pthread_mutex_lock(&a->mu);
    while (!a->stop) {
        if (pthread_cond_timedwait(&a->cv, &a->mu, &ts) == ETIMEDOUT)
            break;
    }
    bool go = !a->stop;
    pthread_mutex_unlock(&a->mu);
    return go;
}

/* thread_batch - prepare and ingest jobs[0..n); true when committed */
static bool thread_batch(struct archive *a, struct archive_job **jobs, size_t n,
                         const struct archive_limits *lim)
{
    struct archive_prepared *prep = xcalloc(n, sizeof *prep);
    struct store_archive_item *items = xcalloc(n, sizeof *items);
    enum store_archive_outcome *outcome = xcalloc(n, sizeof *outcome);
    bool *ok = xcalloc(n, sizeof *ok);
    size_t n_items = 0;
    size_t *idx = xcalloc(n, sizeof *idx);
    thread_load_internal(a);
    for (size_t i = 0; i < n; i++) {
        struct archive_job *j = jobs[i];
        struct archive_input in = {
            .qid = j->qid, .received = j->received,
            .direction = j->outbound ? "outbound" : "inbound",
            .journal = j->journal, .client_addr = j->client, .sender = j->sender,
            .rcpts = (const char *const *)j->rcpts, .n_rcpts = j->n_rcpts,
            .data = j->data, .len = j->len,
        };
        struct error err = { 0 };
        if (archive_prepare(&in, lim, thread_internal, a, &prep[i], &err) < 0) {
            /* not archived: the spool keeps it, the next start tries again */
            log_error("qid=%s event=archive_prepare_failed reason=\"%s\"", j->qid, err.msg);
            metrics_inc(M_ARCHIVE_FAILED_TOTAL, NULL);
            continue;
        }
        ok[i] = true;
        idx[n_items] = i;
        items[n_items++] = prep[i].item;
    }
    bool committed = n_items == 0;
    int backoff = ARCHIVE_BACKOFF_MIN;
    while (n_items > 0) {
        struct error err = { 0 };
        if (store_archive_ingest(a->sa, items, n_items, outcome, NULL, &err) == STORE_OK) {
            committed = true;
            break;
        }
        log_error("event=archive_ingest_failed items=%zu retry_in=%ds reason=\"%s\"", n_items,
                  backoff, err.msg);
        pthread_mutex_lock(&a->mu);
        a->stats.failed++;
        pthread_mutex_unlock(&a->mu);
        metrics_add(M_ARCHIVE_FAILED_TOTAL, NULL, n_items);
        if (!thread_wait(a, backoff))
            break;       /* stopping: the spool keeps the batch for the next start */
        backoff = backoff * 2 > ARCHIVE_BACKOFF_MAX ? ARCHIVE_BACKOFF_MAX : backoff * 2;
    }
    if (committed) {
        uint64_t dup = 0, rep = 0, mal = 0, got = 0;
        for (size_t k = 0; k < n_items; k++) {
            struct archive_job *j = jobs[idx[k]];
            j->archived = true;
            j->outcome = outcome[k];
            if (outcome[k] == STORE_ARCHIVE_ALREADY)
                continue;
            got++;
            dup += outcome[k] == STORE_ARCHIVE_DUPLICATE;
            if (j->journal) {
                j->kind = items[k].journal ? items[k].journal : "plain";
                rep += strcmp(j->kind, "report") == 0;
                mal += strcmp(j->kind, "malformed") == 0;
                struct error err = { 0 };
                if (store_journal_seen(a->st, j->received, j->client, j->qid, j->kind,
                                       items[k].journal_error, &err) < 0)
                    log_warn("qid=%s event=journal_evidence_failed reason=\"%s\"", j->qid, err.msg);
            }
            log_info("qid=%s event=archived outcome=%s source=%s direction=%s%s%s", j->qid,
                     outcome[k] == STORE_ARCHIVE_DUPLICATE ? "duplicate" : "new", items[k].source,
                     items[k].direction, j->journal ? " journal=" : "", j->journal ? j->kind : "");
            struct track_event ev = {
                .kind = TRACK_ARCHIVED, .detail = outcome[k] == STORE_ARCHIVE_DUPLICATE ? "duplicate" : "new",
                .role = j->journal ? TRACK_ROLE_JOURNAL : j->outbound ? TRACK_ROLE_OUTBOUND : TRACK_ROLE_INBOUND,
            };
            str_copy(ev.qid, sizeof ev.qid, j->qid);
            track_emit(&ev);
        }
        pthread_mutex_lock(&a->mu);
        a->stats.ingested += got;
        metrics_add(M_ARCHIVE_INGESTED_TOTAL, NULL, got);
        a->stats.duplicates += dup;
        a->stats.journal_reports += rep;
        a->stats.journal_malformed += mal;
        pthread_mutex_unlock(&a->mu);
    }
    for (size_t i = 0; i < n; i++)
        if (ok[i])
            archive_prepared_clear(&prep[i]);
    free(prep);
    free(items);
    free(outcome);
    free(ok);
    free(idx);
    return committed;
}

static void thread_purge(struct archive *a, int64_t now, int64_t retention)
{
    size_t purged = 0;
    struct error err = { 0 };
    if (archive_purge_run(a->sa, a->st, now, retention, &purged, &err) < 0) {
        log_error("event=archive_purge_failed reason=\"%s\"", err.msg);
        return;
    }
    if (purged)
        log_info("event=archive_purged messages=%zu cutoff=%lld", purged, (long long)(now - retention));
    pthread_mutex_lock(&a->mu);
    a->stats.purged += purged;
    pthread_mutex_unlock(&a->mu);
}

static void thread_notify(struct archive *a)
{
    char c = 1;
    while (write(a->pipe_wr, &c, 1) < 0 && errno == EINTR)
        ;
}

static void *archive_thread(void *arg)
{
    struct archive *a = arg;
    struct archive_job *jobs[ARCHIVE_BATCH_MAX];
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->stop && a->q_head == NULL && !a->purge_req)
            pthread_cond_wait(&a->cv, &a->mu);
        if (a->stop)
            break;
        if (a->purge_req) {
            int64_t now = a->purge_now, ret = a->purge_retention;
            a->purge_req = false;
            pthread_mutex_unlock(&a->mu);
            thread_purge(a, now, ret);
            pthread_mutex_lock(&a->mu);
            continue;
        }
        size_t n = 0;
        while (a->q_head && n < ARCHIVE_BATCH_MAX) {
            jobs[n++] = a->q_head;
            a->q_head = a->q_head->next;
        }
        if (a->q_head == NULL)
            a->q_tail = &a->q_head;
        struct archive_limits lim = a->lim;
        pthread_mutex_unlock(&a->mu);

        thread_batch(a, jobs, n, &lim);

        pthread_mutex_lock(&a->mu);
        for (size_t i = 0; i < n; i++) {
            jobs[i]->next = NULL;
            *a->d_tail = jobs[i];
            a->d_tail = &jobs[i]->next;
        }
        pthread_mutex_unlock(&a->mu);
        thread_notify(a);
        pthread_mutex_lock(&a->mu);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* --- the loop side --- */

static void job_free(struct archive_job *j)
{
    if (!j)
        return;
    free(j->client);
    free(j->sender);
    for (size_t i = 0; i < j->n_rcpts; i++)
        free(j->rcpts[i]);
    free(j->rcpts);
    free(j->data);
    free(j);
}

/* job_read - the message's octets and envelope into a new job; NULL on a read error */
static struct archive_job *job_read(struct archive *a, struct spool_msg *m)
{
    const struct spool_envelope *env = spool_msg_envelope(m);
    struct archive_job *j = xcalloc(1, sizeof *j);
    j->m = m;
    str_copy(j->qid, sizeof j->qid, spool_msg_id(m));
    j->received = env->received_ms / 1000;
    j->journal = (env->flags & SPOOL_F_JOURNAL) != 0;
    j->outbound = (env->flags & SPOOL_F_OUTBOUND) != 0;
    j->client = xstrdup(env->client_addr ? env->client_addr : "");
    j->sender = xstrdup(env->sender ? env->sender : "");
    j->rcpts = xcalloc(env->n_rcpts ? env->n_rcpts : 1, sizeof *j->rcpts);
    for (size_t i = 0; i < env->n_rcpts; i++) {
        /* the address the client gave: the original of a forwarded recipient */
        const struct spool_rcpt *r = &env->rcpts[i];
        const char *addr = r->fwd_for ? r->fwd_for : r->addr;
        bool dup = false;
        for (size_t k = 0; k < j->n_rcpts && !dup; k++)
            dup = str_ieq(j->rcpts[k], addr);
        if (!dup)
            j->rcpts[j->n_rcpts++] = xstrdup(addr);
    }
    j->len = (size_t)env->size;
    j->data = xmalloc(j->len ? j->len : 1);
    size_t off = 0;
    while (off < j->len) {
        ssize_t r = spool_msg_read(a->cfg.spool, m, off, j->data + off, j->len - off);
        if (r <= 0) {
            log_error("qid=%s event=archive_read_failed error=\"%s\"", j->qid,
                      r < 0 ? strerror(errno) : "short message");
            job_free(j);
            return NULL;
        }
        off += (size_t)r;
    }
    return j;
}

static void limits_from_settings(const struct moat_settings *s, struct archive_limits *lim)
{
    lim->max_parse = (size_t)s->archive_max_parse;
    lim->max_text = (size_t)s->archive_max_text;
    lim->max_depth = (unsigned)s->archive_mime_max_depth;
    lim->max_parts = (unsigned)s->archive_mime_max_parts;
}

/* archive_pump - read waiting messages while they fit in flight */
static void archive_pump(struct archive *a)
{
    struct archive_job *head = NULL, **tail = &head;
    while (a->wait.n > 0) {
        struct spool_msg *m = a->wait.m[a->wait.head];
        uint64_t size = spool_msg_envelope(m)->size;
        if (a->inflight > 0 && a->inflight_bytes + size > ARCHIVE_INFLIGHT_BYTES)
            break;
        a->wait.head = (a->wait.head + 1) % a->wait.cap;
        a->wait.n--;
        struct archive_job *j = job_read(a, m);
        if (j == NULL)
            continue;     /* stays in the spool: tried again at the next start */
        a->inflight++;
        a->inflight_bytes += j->len;
        *tail = j;
        tail = &j->next;
    }
    if (head == NULL)
        return;
    pthread_mutex_lock(&a->mu);
    limits_from_settings(a->cfg.settings, &a->lim);
    *a->q_tail = head;
    a->q_tail = tail;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

/* publish_pending - issue 11: moat_archive_pending, from the loop's counts */
static void publish_pending(const struct archive *a)
{
    metrics_set(M_ARCHIVE_PENDING, (int64_t)(a->wait.n + a->inflight));
}

/* archive_on_message - the spool's archiver callback: queue m */
static void archive_on_message(void *arg, struct spool_msg *m)
{
    struct archive *a = arg;
    struct archive_wait *w = &a->wait;
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        struct spool_msg **nm = xcalloc(cap, sizeof *nm);
        for (size_t i = 0; i < w->n; i++)
            nm[i] = w->m[(w->head + i) % w->cap];
        free(w->m);
        w->m = nm;
        w->cap = cap;
        w->head = 0;
    }
    w->m[(w->head + w->n) % w->cap] = m;
    w->n++;
    archive_pump(a);
    publish_pending(a);
}

/* archive_complete - jobs back from the thread: mark the committed ones */
static void archive_complete(struct archive *a)
{
    pthread_mutex_lock(&a->mu);
    struct archive_job *j = a->d_head;
    a->d_head = NULL;
    a->d_tail = &a->d_head;
    pthread_mutex_unlock(&a->mu);
    while (j) {
        struct archive_job *nx = j->next;
        a->inflight--;
        a->inflight_bytes -= j->len < a->inflight_bytes ? j->len : a->inflight_bytes;
        if (j->archived && spool_msg_set_archived(a->cfg.spool, j->m) < 0)
            log_error("qid=%s event=archive_mark_failed", j->qid);
        job_free(j);
        j = nx;
    }
}

static void done_cb(evutil_socket_t fd, short what, void *arg)
{
    struct archive *a = arg;
    char tmp[256];
    (void)fd;
    (void)what;
    while (read(a->pipe_rd, tmp, sizeof tmp) > 0)
        ;
    archive_complete(a);
    archive_pump(a);
    publish_pending(a);
}

static void purge_schedule(struct archive *a)
{
    int64_t secs = a->cfg.settings->archive_purge_interval;
    struct timeval tv = { .tv_sec = (time_t)(secs > 0 ? secs : 3600) };
    evtimer_add(a->purge_ev, &tv);
}

static void purge_cb(evutil_socket_t fd, short what, void *arg)
{
    struct archive *a = arg;
    (void)fd;
    (void)what;
    pthread_mutex_lock(&a->mu);
    a->purge_req = true;
    a->purge_now = screen_clock_now(a->cfg.settings);
    a->purge_retention = a->cfg.settings->archive_retention;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    purge_schedule(a);
}

/* --- public --- */

struct archive *archive_create(const struct archive_config *cfg, struct error *err)
{
    if (!cfg->base || !cfg->spool || !cfg->settings || !cfg->path || !cfg->database) {
        error_set(err, "archive", "archive_create needs a loop, a spool, settings and two databases");
        return NULL;
    }
    struct archive *a = xcalloc(1, sizeof *a);
    a->cfg = *cfg;
    a->path = xstrdup(cfg->path);
    a->database = xstrdup(cfg->database);
    a->cfg.path = a->path;
    a->cfg.database = a->database;
    a->pipe_rd = a->pipe_wr = -1;
    a->q_tail = &a->q_head;
    a->d_tail = &a->d_head;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    limits_from_settings(cfg->settings, &a->lim);
    return a;
}

int archive_start(struct archive *a, struct error *err)
{
    a->sa = store_archive_open(a->path, err);
    if (a->sa == NULL)
        return -1;
    a->st = store_open(a->database, err);
    if (a->st == NULL)
        return -1;
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        error_set(err, "archive", "pipe: %s", strerror(errno));
        return -1;
    }
    a->pipe_rd = fds[0];
    a->pipe_wr = fds[1];
    a->done_ev = event_new(a->cfg.base, a->pipe_rd, EV_READ | EV_PERSIST, done_cb, a);
    a->purge_ev = evtimer_new(a->cfg.base, purge_cb, a);
    if (!a->done_ev || !a->purge_ev || event_add(a->done_ev, NULL) < 0) {
        error_set(err, "archive", "cannot create the archive's events");
        return -1;
    }
    if (pthread_create(&a->thread, NULL, archive_thread, a) != 0) {
        error_set(err, "archive", "cannot start the archive thread");
        return -1;
    }
    a->thread_started = true;
    purge_schedule(a);
    log_info("event=archive_start path=%s", a->path);
    a->attached = true;
    spool_set_archiver(a->cfg.spool, archive_on_message, a);   /* recovered ones now */
    return 0;
}

void archive_stop(struct archive *a)
{
    if (a == NULL)
        return;
    if (a->attached) {
        spool_set_archiver(a->cfg.spool, NULL, NULL);
        a->attached = false;
    }
    if (a->purge_ev)
        evtimer_del(a->purge_ev);
    if (a->thread_started) {
        pthread_mutex_lock(&a->mu);
        a->stop = true;
        pthread_cond_broadcast(&a->cv);
        pthread_mutex_unlock(&a->mu);
        pthread_join(a->thread, NULL);
        a->thread_started = false;
        archive_complete(a);    /* the batch that finished: mark it */
    }
    /* what the thread never took stays in the spool for the next start */
    struct archive_job *j = a->q_head;
    while (j) {
        struct archive_job *nx = j->next;
        a->inflight--;
        job_free(j);
        j = nx;
    }
    a->q_head = NULL;
    a->q_tail = &a->q_head;
    a->wait.n = 0;
    a->inflight_bytes = 0;
}

void archive_free(struct archive *a)
{
    if (a == NULL)
        return;
    archive_stop(a);
    if (a->done_ev)
        event_free(a->done_ev);
    if (a->purge_ev)
        event_free(a->purge_ev);
    if (a->pipe_rd >= 0)
        close(a->pipe_rd);
    if (a->pipe_wr >= 0)
        close(a->pipe_wr);
    if (a->sa != NULL)
        store_archive_close(a->sa);
    store_close(a->st);
    for (size_t i = 0; i < a->n_internal; i++)
        free(a->internal[i]);
    free(a->internal);
    free(a->wait.m);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a->path);
    free(a->database);
    free(a);
}

void archive_get_stats(const struct archive *a, struct archive_stats *out)
{
    struct archive *w = (struct archive *)a;   /* the mutex, not the state, changes */
    pthread_mutex_lock(&w->mu);
    *out = a->stats;
    pthread_mutex_unlock(&w->mu);
    out->pending = a->wait.n + a->inflight;
}
