/*
 * dns_sync.c - blocking, bounded DNS lookups for worker threads.
 *
 * One libunbound context per thread (thread-local), configured by
 * dns_ub_setup like the loop's resolver.  A lookup is ub_resolve_async
 * followed by poll() on ub_fd() until the answer or the deadline, so a
 * resolver that never answers cannot hold a worker longer than timeout_ms;
 * on timeout the query is cancelled.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unbound.h>
#include "dns_sync.h"

static _Thread_local struct ub_ctx *tl_ctx;
static pthread_key_t tl_key_exit;            /* deletes the context at thread exit */
static pthread_once_t tl_once = PTHREAD_ONCE_INIT;

static void ctx_exit(void *ctx)
{
    ub_ctx_delete(ctx);
}

static void key_init(void)
{
    (void)pthread_key_create(&tl_key_exit, ctx_exit);
}
static _Thread_local char tl_key[512];   /* resolver + anchor the context was made for */

struct sync_wait {
    bool done;
    int err;
    struct ub_result *ub;
};

static void sync_cb(void *arg, int err, struct ub_result *ub)
{
    struct sync_wait *w = arg;
    w->done = true;
    w->err = err;
    w->ub = ub;
}

/* thread_ctx - this thread's context for opt, made on first use */
static struct ub_ctx *thread_ctx(const struct dns_options *opt, char *why, size_t whylen)
{
    char key[512];
    xsnprintf(key, sizeof key, "%s|%s", opt && opt->resolver ? opt->resolver : "",
              opt && opt->trust_anchor_file ? opt->trust_anchor_file : "");
    if (tl_ctx != NULL && strcmp(key, tl_key) == 0)
        return tl_ctx;
    dns_sync_thread_end();
    struct ub_ctx *ctx = ub_ctx_create();
    if (ctx == NULL) {
        str_copy(why, whylen, "cannot create the libunbound context");
        return NULL;
    }
    struct error err = { 0 };
    if (dns_ub_setup(ctx, opt, &err) < 0) {
        str_copy(why, whylen, err.msg);
        ub_ctx_delete(ctx);
        return NULL;
    }
    tl_ctx = ctx;
    str_copy(tl_key, sizeof tl_key, key);
    pthread_once(&tl_once, key_init);
    (void)pthread_setspecific(tl_key_exit, ctx);
    return ctx;
}

void dns_sync_thread_end(void)
{
    if (tl_ctx != NULL) {
        (void)pthread_setspecific(tl_key_exit, NULL);
        ub_ctx_delete(tl_ctx);
    }
    tl_ctx = NULL;
    tl_key[0] = '\0';
}

/* fill - ub's answer into r, the same mapping as the loop resolver */
static void fill(enum dns_type type, int err, struct ub_result *ub, struct dns_result *r)
{
    if (err != 0) {
        xsnprintf(r->why, sizeof r->why, "resolver error: %s", ub_strerror(err));
    } else if (ub->bogus) {
        r->status = DNS_BOGUS;
        xsnprintf(r->why, sizeof r->why, "DNSSEC validation failed");
    } else if (ub->nxdomain || ub->rcode == 3) {
        r->status = DNS_NXDOMAIN;
    } else if (ub->rcode != 0) {
        xsnprintf(r->why, sizeof r->why, "resolver answered rcode %d", ub->rcode);
    } else if (!ub->havedata) {
        r->status = DNS_NODATA;
    } else {
        size_t n = 0;
        while (ub->data[n] && n < DNS_SYNC_MAX_ANSWERS)
            n++;
        r->rr = xcalloc(n ? n : 1, sizeof *r->rr);
        for (size_t i = 0; i < n; i++)
            if (dns_rdata_parse(type, (const uint8_t *)ub->data[i], (size_t)ub->len[i], &r->rr[r->n]) == 0)
                r->n++;
        if (r->n)
            r->status = DNS_OK;
        else if (type == DNS_T_TXT)
            r->status = DNS_NODATA;   /* only malformed TXT: treat as absent */
        else
            xsnprintf(r->why, sizeof r->why, "malformed answer");
    }
    if (r->status == DNS_OK || r->status == DNS_NXDOMAIN || r->status == DNS_NODATA)
        r->secure = ub->secure;
}

void dns_sync_lookup(const struct dns_options *opt, const char *name, enum dns_type type,
                     int timeout_ms, struct dns_result *r)
{
    memset(r, 0, sizeof *r);
    r->status = DNS_TEMPFAIL;
    struct ub_ctx *ctx = thread_ctx(opt, r->why, sizeof r->why);
    if (ctx == NULL)
        return;
    if (name == NULL || strlen(name) > 253) {
        str_copy(r->why, sizeof r->why, "name too long");
        r->status = DNS_NXDOMAIN;
        return;
    }
    struct sync_wait w = { 0 };
    int id = 0;
    int rc = ub_resolve_async(ctx, name, (int)type, 1 /* IN */, &w, sync_cb, &id);
    if (rc != 0) {
        xsnprintf(r->why, sizeof r->why, "resolver error: %s", ub_strerror(rc));
        return;
    }
    uint64_t deadline = time_mono_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 1);
    while (!w.done) {
        uint64_t now = time_mono_ms();
        if (now >= deadline)
            break;
        struct pollfd pfd = { .fd = ub_fd(ctx), .events = POLLIN };
        int pr = poll(&pfd, 1, (int)(deadline - now));
        if (pr < 0 && errno != EINTR)
            break;
        if (pr > 0)
            ub_process(ctx);
    }
    if (!w.done) {
        ub_cancel(ctx, id);
        xsnprintf(r->why, sizeof r->why, "timeout after %d ms", timeout_ms);
        return;
    }
    fill(type, w.err, w.ub, r);
    if (w.ub)
        ub_resolve_free(w.ub);
}

void dns_sync_result_free(struct dns_result *r)
{
    for (size_t i = 0; i < r->n; i++)
        dns_record_clear(&r->rr[i]);
    free(r->rr);
    r->rr = NULL;
    r->n = 0;
}
