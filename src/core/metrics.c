/*
 * metrics.c - the metrics registry of metrics.h: one table of every metric
 * (name, type, help, label names, the fixed set of values of each label),
 * lock-free cells, the Prometheus text exposition, and the mapping from
 * tracking events to message counters (metrics_track).
 *
 * Cells.  Each metric owns a row of METRICS_MAX_CELLS relaxed atomic
 * 64-bit cells.  A labelled counter has one cell per combination of label
 * values; each label's values are its table's set plus a last "other" that
 * takes any value outside it, so a typo or a new check name cannot grow the
 * series without bound.  A gauge keeps its int64 value bit-cast in cell 0.
 * A histogram keeps one (non-cumulative) count per bucket, then +Inf, then
 * the sum in fixed point (microseconds for seconds, octets for sizes):
 * integer adds stay lock-free without a CAS loop on a double.
 *
 * Transactions (moat_transactions_total) are counted once each, where the
 * gateway decides the fate of the whole transaction: "accepted" at QUEUED
 * (the 250 after DATA), "rejected" / "tempfailed" when the MAIL command or
 * the end of DATA (stages data and content) is refused with 5xx / 4xx.  A
 * refused recipient does not end a transaction (others may follow), so RCPT
 * refusals are counted in moat_rejections_total only.
 *
 * Threads: any thread may update; metrics_render runs on an HTTP worker
 * and reads the cells with relaxed loads (a scrape is a snapshot of
 * independent counters, not a consistent cut).  Gauge providers are set by
 * moatd before the HTTP server starts.
 */
#include <inttypes.h>
#include <stdatomic.h>
#include <string.h>
#include "metrics.h"

#define METRICS_MAX_CELLS 160
#define METRICS_MAX_LABELS 2

enum metrics_type { MT_COUNTER, MT_GAUGE, MT_HISTOGRAM };

/* label value sets; "other" is implied after the last */
/* "unknown": an event from before the role was decided (a refused MAIL) */
static const char *const v_role[] = { "inbound", "outbound", "journal", "dsn", "unknown", NULL };
static const char *const v_outcome[] = { "accepted", "rejected", "tempfailed", NULL };
static const char *const v_stage[] = { "connect", "helo", "mail", "rcpt", "data", "content",
                                       NULL };
/* the policy checks (policy.c, policy_content.c, smtp_session.c) and
 * "protocol" for a refusal no check made (syntax, limits, storage) */
static const char *const v_check[] = {
    "protocol", "journal", "relay_control", "antispoof", "srs_bounce", "recipient_validation",
    "tls_inbound", "outbound_sender", "dnsbl", "greylisting", "blocked_sender", "spf", "dkim",
    "dmarc", "antispoof_spf", "rspamd", "content_timeout", NULL,
};
static const char *const v_delivery[] = { "delivered", "deferred", "failed", NULL };
static const char *const v_tls_version[] = { "TLSv1.2", "TLSv1.3", NULL };
static const char *const v_tls_out[] = { "tls", "plain", NULL };
/* dns.c: libunbound answers a timeout with SERVFAIL, so "timeout" is servfail */
static const char *const v_dns[] = { "ok", "nxdomain", "nodata", "servfail", "bogus", "error",
                                     NULL };
static const char *const v_sync[] = { "ok", "failed", NULL };

struct metrics_buckets {
    const double *le;       /* upper bounds, ascending */
    int n;
    double unit;            /* sum cell units per observed unit (1e6: microseconds) */
};

static const double le_latency[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                                     30, 60, 120, 300, 600 };
static const double le_size[] = { 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                                  16777216, 67108864 };
static const double le_dns[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                 2.5, 5, 10 };
#define BUCKETS(a, u) { a, (int)(sizeof a / sizeof a[0]), u }
static const struct metrics_buckets b_latency = BUCKETS(le_latency, 1e6);
static const struct metrics_buckets b_size = BUCKETS(le_size, 1);
static const struct metrics_buckets b_dns = BUCKETS(le_dns, 1e6);

struct metrics_def {
    const char *name;
    enum metrics_type type;
    const char *help;
    const char *label[METRICS_MAX_LABELS];        /* NULL: no more labels */
    const char *const *values[METRICS_MAX_LABELS];
    const struct metrics_buckets *buckets;        /* histograms */
};

#define L1(a, va) { a, NULL }, { va, NULL }
#define L2(a, va, b, vb) { a, b }, { va, vb }
#define L0 { NULL, NULL }, { NULL, NULL }

/* the registry: one row per enum metrics_id, in its order */
static const struct metrics_def defs[M_ID_COUNT] = {
    [M_CONNECTIONS_TOTAL] = { "moat_smtp_connections_total", MT_COUNTER,
        "SMTP connections accepted (given a session).", L0, NULL },
    [M_CONNECTIONS_REFUSED_TOTAL] = { "moat_smtp_connections_refused_total", MT_COUNTER,
        "SMTP connections refused at connect (connection limits).", L0, NULL },
    [M_CONNECTIONS_CURRENT] = { "moat_smtp_connections", MT_GAUGE,
        "SMTP sessions open now.", L0, NULL },
    [M_TRANSACTIONS_TOTAL] = { "moat_smtp_transactions_total", MT_COUNTER,
        "SMTP transactions by role and outcome, each counted once: accepted when queued "
        "(the 250 after DATA); rejected or tempfailed when MAIL or the end of DATA is refused "
        "(5xx or 4xx). Refused recipients alone count in moat_smtp_rejections_total.",
        L2("role", v_role, "outcome", v_outcome), NULL },
    [M_REJECTIONS_TOTAL] = { "moat_smtp_rejections_total", MT_COUNTER,
        "Refused SMTP commands (5xx and 4xx) by stage and the check that decided "
        "(protocol: syntax, limits, storage).",
        L2("stage", v_stage, "reason", v_check), NULL },
    [M_HELD_TOTAL] = { "moat_held_total", MT_COUNTER,
        "Messages kept in held mail, by the check that held them.", L1("check", v_check), NULL },
    [M_RELEASED_TOTAL] = { "moat_released_total", MT_COUNTER,
        "Held messages released.", L0, NULL },
    [M_DELIVERIES_TOTAL] = { "moat_deliveries_total", MT_COUNTER,
        "Delivery attempts per recipient by role and result.",
        L2("role", v_role, "result", v_delivery), NULL },
    [M_BOUNCES_TOTAL] = { "moat_bounces_total", MT_COUNTER,
        "Recipients given up (permanent failure or expiry).", L0, NULL },
    [M_DELIVERY_LATENCY_SECONDS] = { "moat_delivery_latency_seconds", MT_HISTOGRAM,
        "Time from queueing to the route's 250, per delivered recipient.", L0, &b_latency },
    [M_MESSAGE_SIZE_BYTES] = { "moat_message_size_bytes", MT_HISTOGRAM,
        "Size of accepted (queued) messages.", L0, &b_size },
    [M_TLS_INBOUND_TOTAL] = { "moat_tls_inbound_total", MT_COUNTER,
        "STARTTLS handshakes completed as server, by protocol version.",
        L1("version", v_tls_version), NULL },
    [M_TLS_OUTBOUND_TOTAL] = { "moat_tls_outbound_total", MT_COUNTER,
        "Delivery attempts that reached a server, by whether the session used TLS.",
        L1("result", v_tls_out), NULL },
    [M_DNS_QUERIES_TOTAL] = { "moat_dns_queries_total", MT_COUNTER,
        "DNS queries of the asynchronous resolver by result.", L1("result", v_dns), NULL },
    [M_DNS_LATENCY_SECONDS] = { "moat_dns_latency_seconds", MT_HISTOGRAM,
        "Time to a DNS answer (or failure).", L0, &b_dns },
    [M_DIRECTORY_SYNCS_TOTAL] = { "moat_directory_syncs_total", MT_COUNTER,
        "Directory (LDAP) synchronisations by result.", L1("result", v_sync), NULL },
    [M_DIRECTORY_USERS] = { "moat_directory_users", MT_GAUGE,
        "Directory entries (users and groups) kept by the last successful synchronisation.", L0, NULL },
    [M_ARCHIVE_INGESTED_TOTAL] = { "moat_archive_ingested_total", MT_COUNTER,
        "Messages written to the archive.", L0, NULL },
    [M_ARCHIVE_FAILED_TOTAL] = { "moat_archive_failed_total", MT_COUNTER,
        "Archive ingest failures, per message and attempt (each is retried; the spool keeps the message).", L0, NULL },
    [M_ARCHIVE_PENDING] = { "moat_archive_pending", MT_GAUGE,
        "Messages waiting for the archive.", L0, NULL },
    [M_QUEUE_MESSAGES] = { "moat_queue_messages", MT_GAUGE,
        "Messages in the spool (queued for delivery).", L0, NULL },
    [M_QUEUE_OLDEST_SECONDS] = { "moat_queue_oldest_seconds", MT_GAUGE,
        "Age of the oldest message in the spool (0 when empty).", L0, NULL },
    [M_TRACKING_DROPPED_TOTAL] = { "moat_tracking_dropped_total", MT_COUNTER,
        "Tracking events the tracking engine could not keep.", L0, NULL },
    [M_START_TIME_SECONDS] = { "moat_start_time_seconds", MT_GAUGE,
        "Start time of moatd, seconds since the epoch.", L0, NULL },
};

static _Atomic uint64_t cells[M_ID_COUNT][METRICS_MAX_CELLS];

struct gauge_provider {
    _Atomic(metrics_gauge_fn) fn;
    void *_Atomic arg;
};
static struct gauge_provider providers[M_ID_COUNT];

/* --- layout --- */

/* n_values - values of a label's set, plus "other" */
static int n_values(const char *const *set)
{
    int n = 0;
    while (set[n] != NULL)
        n++;
    return n + 1;
}

static int n_labels(const struct metrics_def *d)
{
    int n = 0;
    while (n < METRICS_MAX_LABELS && d->label[n] != NULL)
        n++;
    return n;
}

/* value_index - position of v in set, or the "other" slot */
static int value_index(const char *const *set, const char *v)
{
    int i = 0;
    for (; set[i] != NULL; i++)
        if (v != NULL && strcmp(set[i], v) == 0)
            return i;
    return i;
}

/* series_cell - the cell of the given label values (the metric's count of them) */
static int series_cell(const struct metrics_def *d, const char *const *labels)
{
    int cell = 0;
    for (int i = 0; i < n_labels(d); i++)
        cell = cell * n_values(d->values[i]) + value_index(d->values[i], labels ? labels[i] : NULL);
    return cell;
}

static int series_count(const struct metrics_def *d)
{
    int n = 1;
    for (int i = 0; i < n_labels(d); i++)
        n *= n_values(d->values[i]);
    return n;
}

/* --- updates --- */

void metrics_add(enum metrics_id id, const char *const *labels, uint64_t n)
{
    if ((unsigned)id >= M_ID_COUNT || defs[id].type == MT_HISTOGRAM)
        return;
    int cell = series_cell(&defs[id], labels);
    if (cell < METRICS_MAX_CELLS)
        atomic_fetch_add_explicit(&cells[id][cell], n, memory_order_relaxed);
}

void metrics_set(enum metrics_id id, int64_t v)
{
    if ((unsigned)id >= M_ID_COUNT || defs[id].type != MT_GAUGE)
        return;
    atomic_store_explicit(&cells[id][0], (uint64_t)v, memory_order_relaxed);
}

void metrics_observe(enum metrics_id id, double v)
{
    if ((unsigned)id >= M_ID_COUNT || defs[id].type != MT_HISTOGRAM || !(v >= 0))
        return;   /* also refuses NaN */
    const struct metrics_buckets *b = defs[id].buckets;
    int i = 0;
    while (i < b->n && v > b->le[i])
        i++;   /* le is inclusive (Prometheus: bucket counts v <= le) */
    atomic_fetch_add_explicit(&cells[id][i], 1, memory_order_relaxed);
    double scaled = v * b->unit + 0.5;
    uint64_t add = scaled >= 1.8e19 ? UINT64_C(1) << 63 : (uint64_t)scaled;
    atomic_fetch_add_explicit(&cells[id][b->n + 1], add, memory_order_relaxed);
}

void metrics_set_gauge_fn(enum metrics_id id, metrics_gauge_fn fn, void *arg)
{
    if ((unsigned)id >= M_ID_COUNT)
        return;
    atomic_store_explicit(&providers[id].arg, arg, memory_order_relaxed);
    atomic_store_explicit(&providers[id].fn, fn, memory_order_release);
}

void metrics_reset(void)
{
    for (int id = 0; id < M_ID_COUNT; id++)
        for (int c = 0; c < METRICS_MAX_CELLS; c++)
            atomic_store_explicit(&cells[id][c], 0, memory_order_relaxed);
}

/* --- tracking events --- */

/* role_label - the role's label value; TRACK_ROLE_UNKNOWN is "unknown" */
static const char *role_label(enum track_role r)
{
    return r == TRACK_ROLE_UNKNOWN ? "unknown" : track_role_name(r);
}

static bool refused(enum track_result r)
{
    return r == TRACK_REJECTED || r == TRACK_TEMPFAILED;
}

/* track_verdict - MAIL, RCPT, DATA: refusals by stage and check; a refused
 * MAIL or end of DATA ends the transaction (file comment) */
static void track_verdict(const struct track_event *ev)
{
    if (!refused(ev->result))
        return;
    const char *stage = ev->stage != NULL && ev->stage[0] != '\0' ? ev->stage
                                                                  : track_kind_name(ev->kind);
    const char *check = ev->check != NULL && ev->check[0] != '\0' ? ev->check : "protocol";
    metrics_inc(M_REJECTIONS_TOTAL, (const char *[]){ stage, check });
    if (ev->kind != TRACK_RCPT)
        metrics_inc(M_TRANSACTIONS_TOTAL,
                    (const char *[]){ role_label(ev->role), track_result_name(ev->result) });
}

/* track_attempt - one delivery attempt of one recipient */
static void track_attempt(const struct track_event *ev)
{
    metrics_inc(M_DELIVERIES_TOTAL,
                (const char *[]){ role_label(ev->role), track_result_name(ev->result) });
    if (ev->result == TRACK_DELIVERED)
        metrics_observe(M_DELIVERY_LATENCY_SECONDS, ev->latency_ms / 1000.0);
    if (ev->remote != NULL && ev->remote[0] != '\0') {
        bool tls = ev->tls != NULL && ev->tls[0] != '\0' && strcmp(ev->tls, "none") != 0;
        metrics_inc(M_TLS_OUTBOUND_TOTAL, (const char *[]){ tls ? "tls" : "plain" });
    }
}

void metrics_track(const struct track_event *ev)
{
    switch (ev->kind) {
    case TRACK_CONNECT:
        if (ev->txn == 0 && refused(ev->result))
            metrics_inc(M_CONNECTIONS_REFUSED_TOTAL, NULL);
        break;
    case TRACK_MAIL:
    case TRACK_RCPT:
    case TRACK_DATA:
        track_verdict(ev);
        break;
    case TRACK_QUEUED:
        metrics_inc(M_TRANSACTIONS_TOTAL, (const char *[]){ role_label(ev->role), "accepted" });
        metrics_observe(M_MESSAGE_SIZE_BYTES, (double)ev->size);
        break;
    case TRACK_HELD:
        metrics_inc(M_HELD_TOTAL, (const char *[]){ ev->check });
        break;
    case TRACK_RELEASED:
        metrics_inc(M_RELEASED_TOTAL, NULL);
        break;
    case TRACK_ATTEMPT:
        track_attempt(ev);
        break;
    case TRACK_BOUNCED:
        metrics_inc(M_BOUNCES_TOTAL, NULL);
        break;
    default:
        break;
    }
}

/* --- exposition --- */

static uint64_t cell_get(enum metrics_id id, int c)
{
    return atomic_load_explicit(&cells[id][c], memory_order_relaxed);
}

/* render_le - a bucket bound: integers without a fraction or exponent */
static void render_le(struct buf *out, double le)
{
    if (le == (double)(int64_t)le)
        buf_printf(out, "%.0f", le);
    else
        buf_printf(out, "%g", le);
}

/* render_labels - {a="x",b="y"} of the series at cell; values come from the
 * fixed sets, which need no escaping */
static void render_labels(struct buf *out, const struct metrics_def *d, int cell)
{
    int nl = n_labels(d);
    if (nl == 0)
        return;
    int idx[METRICS_MAX_LABELS];
    for (int i = nl - 1; i >= 0; i--) {
        int nv = n_values(d->values[i]);
        idx[i] = cell % nv;
        cell /= nv;
    }
    buf_append_str(out, "{");
    for (int i = 0; i < nl; i++) {
        const char *v = idx[i] == n_values(d->values[i]) - 1 ? "other" : d->values[i][idx[i]];
        buf_printf(out, "%s%s=\"%s\"", i ? "," : "", d->label[i], v);
    }
    buf_append_str(out, "}");
}

/* is_other - the series has an "other" value: shown only once it counted */
static bool is_other(const struct metrics_def *d, int cell)
{
    for (int i = n_labels(d) - 1; i >= 0; i--) {
        int nv = n_values(d->values[i]);
        if (cell % nv == nv - 1)
            return true;
        cell /= nv;
    }
    return false;
}

static void render_histogram(struct buf *out, enum metrics_id id)
{
    const struct metrics_def *d = &defs[id];
    const struct metrics_buckets *b = d->buckets;
    uint64_t cum = 0;
    for (int i = 0; i <= b->n; i++) {
        cum += cell_get(id, i);
        buf_printf(out, "%s_bucket{le=\"", d->name);
        if (i < b->n)
            render_le(out, b->le[i]);
        else
            buf_append_str(out, "+Inf");
        buf_printf(out, "\"} %" PRIu64 "\n", cum);
    }
    uint64_t sum = cell_get(id, b->n + 1);
    if (b->unit == 1)
        buf_printf(out, "%s_sum %" PRIu64 "\n", d->name, sum);
    else
        buf_printf(out, "%s_sum %.6f\n", d->name, (double)sum / b->unit);
    buf_printf(out, "%s_count %" PRIu64 "\n", d->name, cum);
}

static void render_metric(struct buf *out, enum metrics_id id)
{
    static const char *const type_names[] = { "counter", "gauge", "histogram" };
    const struct metrics_def *d = &defs[id];
    buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", d->name, d->help, d->name,
               type_names[d->type]);
    if (d->type == MT_HISTOGRAM) {
        render_histogram(out, id);
        return;
    }
    metrics_gauge_fn fn = atomic_load_explicit(&providers[id].fn, memory_order_acquire);
    if (d->type == MT_GAUGE) {
        int64_t v = fn != NULL ? fn(atomic_load_explicit(&providers[id].arg, memory_order_relaxed))
                               : (int64_t)cell_get(id, 0);
        buf_printf(out, "%s %" PRId64 "\n", d->name, v);
        return;
    }
    int n = series_count(d);
    if (n > METRICS_MAX_CELLS)   /* a table bug: every test that renders finds it */
        log_fatal("event=metrics_bug metric=%s series=%d max=%d", d->name, n, METRICS_MAX_CELLS);
    for (int c = 0; c < n; c++) {
        uint64_t v = cell_get(id, c);
        if (v == 0 && is_other(d, c))
            continue;
        buf_append_str(out, d->name);
        render_labels(out, d, c);
        buf_printf(out, " %" PRIu64 "\n", v);
    }
}

void metrics_render(struct buf *out)
{
    for (int id = 0; id < M_ID_COUNT; id++)
        render_metric(out, (enum metrics_id)id);
}
