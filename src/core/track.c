/*
 * track.c - track_emit(): every tracking event goes to the metrics and to
 * the one sink moatd installed (the tracking engine).  See track.h.
 */
#include <stdatomic.h>
#include <string.h>
#include "track.h"
#include "core.h"
#include "metrics.h"

struct track_sink {
    track_sink_fn fn;
    void *arg;
};

/* the sink is set before the emitting threads start and cleared after they
 * stopped (track.h), so a pointer to a static pair read with acquire suffices */
static struct track_sink sink_slot;
static _Atomic(struct track_sink *) sink;

void track_set_sink(track_sink_fn fn, void *arg)
{
    if (fn == NULL) {
        atomic_store_explicit(&sink, NULL, memory_order_release);
        return;
    }
    sink_slot.fn = fn;
    sink_slot.arg = arg;
    atomic_store_explicit(&sink, &sink_slot, memory_order_release);
}

void track_emit(const struct track_event *ev)
{
    struct track_event e = *ev;
    if (e.ts_us == 0)
        e.ts_us = (int64_t)time_wall_ms() * 1000;
    metrics_track(&e);
    struct track_sink *s = atomic_load_explicit(&sink, memory_order_acquire);
    if (s != NULL)
        s->fn(&e, s->arg);
}

static const char *const kind_names[TRACK_KIND_COUNT] = {
    [TRACK_CONNECT] = "connect",   [TRACK_MAIL] = "mail",         [TRACK_RCPT] = "rcpt",
    [TRACK_DATA] = "data",         [TRACK_QUEUED] = "queued",     [TRACK_FORWARDED] = "forwarded",
    [TRACK_HELD] = "held",         [TRACK_RELEASED] = "released", [TRACK_DELETED] = "deleted",
    [TRACK_ATTEMPT] = "attempt",   [TRACK_BOUNCED] = "bounced",   [TRACK_DSN] = "dsn",
    [TRACK_ARCHIVED] = "archived",
};

static const char *const result_names[TRACK_RESULT_COUNT] = {
    [TRACK_NONE] = "",           [TRACK_ACCEPTED] = "accepted", [TRACK_REJECTED] = "rejected",
    [TRACK_TEMPFAILED] = "tempfailed", [TRACK_DELIVERED] = "delivered",
    [TRACK_DEFERRED] = "deferred", [TRACK_FAILED] = "failed",
};

static const char *const role_names[TRACK_ROLE_COUNT] = {
    [TRACK_ROLE_UNKNOWN] = "", [TRACK_ROLE_INBOUND] = "inbound", [TRACK_ROLE_OUTBOUND] = "outbound",
    [TRACK_ROLE_JOURNAL] = "journal", [TRACK_ROLE_DSN] = "dsn",
};

const char *track_kind_name(enum track_kind k)
{
    return (unsigned)k < TRACK_KIND_COUNT ? kind_names[k] : "unknown";
}

const char *track_result_name(enum track_result r)
{
    return (unsigned)r < TRACK_RESULT_COUNT ? result_names[r] : "unknown";
}

const char *track_role_name(enum track_role r)
{
    return (unsigned)r < TRACK_ROLE_COUNT ? role_names[r] : "unknown";
}

/* name_index - position of s in names[0..n), -1 when absent or empty */
static int name_index(const char *const *names, int n, const char *s)
{
    if (s == NULL || *s == '\0')
        return -1;
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}

int track_kind_parse(const char *s)
{
    return name_index(kind_names, TRACK_KIND_COUNT, s);
}

int track_result_parse(const char *s)
{
    return name_index(result_names, TRACK_RESULT_COUNT, s);
}
