/*
 * moatd.c - the daemon: reads the settings, opens the store and the spool,
 * binds the listeners, drops privileges, and runs one libevent loop that
 * carries the SMTP server, the delivery engine and the DNS resolver; the
 * HTTP API runs on its own worker threads and reaches the loop through
 * api_loop_call().
 *
 * Order at start (why it is this order):
 *   settings -> first start (the initial administrator's one-time password
 *   goes to the terminal, so before detaching) -> state dir + lock (one
 *   daemon per spool) -> store (migrations) -> spool recovery -> TLS
 *   contexts (keys may be root-only) -> bind SMTP and HTTP -> chown the
 *   state dir and drop to run_user -> deliver (schedules recovered mail) ->
 *   accept.
 * Shutdown (SIGTERM/SIGINT): stop accepting, let sessions in flight finish
 * or tempfail them, let deliveries in flight finish, close the spool (pending
 * commits complete), exit 0.
 * SIGHUP (issue 11): the reload thread reads moat.conf and the STARTTLS
 * certificate again and reloads the store's configuration; the loop
 * applies the changed runtime settings and swaps the TLS context for new
 * sessions (moatd_hup_load, moatd_hup_swap).  Under systemd the service
 * manager hears READY=1, RELOADING=1 and STOPPING=1 (core/notify.h).
 *
 * The routing snapshot (internal domains and their routes) and the RCPT
 * index are owned here: a reload thread loads them when the store reports
 * a change (1 s) or at once when the API changes something, and the loop
 * swaps them in between events; the SMTP server and the delivery engine
 * read them through a pointer to the slot.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <jansson.h>

#include "core/core.h"
#include "core/settings.h"
#include "store/store.h"
#include "dns/dns.h"
#include "spool/spool.h"
#include "smtp/smtp.h"
#include "deliver/deliver.h"
#include "api/api.h"
#include "connect/connect.h"
#include "directory/directory.h"
#include "core/worker.h"
#include "policy/policy.h"
#include "auth/auth.h"
#include "directory/directory_ldap.h"
#include "deliver/deliver_dkim.h"
#include "core/worker.h"
#include "policy/permitted.h"
#include "policy/greylist.h"
#include "policy/screen_clock.h"
#include "archive/archive.h"
#include "track/tracking.h"
#include "core/notify.h"
#include "core/settings_reload.h"
#include "core/roff.h"
#include "core/metrics.h"

/* the configuration reload thread (see moatd_reload_main) */
struct reloader {
    pthread_t thread;
    bool running;
    pthread_mutex_t mu;
    pthread_cond_t cv;            /* wakes the thread: a request, or stop */
    pthread_cond_t swapped_cv;    /* the loop swapped a load in */
    bool stop;
    uint64_t requested;           /* requests made so far */
    uint64_t swapped;             /* requests the loop now serves */
    uint64_t pending_seq;         /* requests the pending load covers */
    struct store_snapshot *pending_snap;
    struct directory_index *pending_ix;
    struct dkim_keyset *pending_dkim;
    struct permitted_index *pending_permitted;
    struct event *ev_swap;        /* activated from the thread, runs on the loop */
    /* issue 11: SIGHUP also reads moat.conf and the TLS certificate again */
    uint64_t hup_requested;       /* SIGHUPs so far */
    uint64_t hup_pending_seq;     /* the SIGHUPs the pending results answer */
    uint64_t hup_swapped;         /* the SIGHUPs the loop answered (READY=1) */
    struct moat_settings *pending_file;   /* moat.conf as read at the SIGHUP */
    SSL_CTX *pending_tls;         /* the STARTTLS context built at the SIGHUP */
    char hup_status[200];         /* what the SIGHUP did, for STATUS= */
};

struct moatd {
    struct moat_settings settings;
    struct event_base *base;
    struct store *store;
    struct store_snapshot *snapshot;    /* current; read via &snapshot */
    struct directory_index *directory;  /* current RCPT index; read via &directory */
    int64_t directory_gen;              /* the directory generation loaded at start */
    struct policy_callforward *callforward;
    struct policy_antispoof *antispoof;  /* anti-spoofing's FCrDNS cache and candidates (issue 7) */
    struct spool *spool;
    struct dns *dns;
    SSL_CTX *tls_server;
    SSL_CTX *tls_client;
    struct smtp_server *smtp;
    struct deliver *deliver;
    struct auth *auth;
    struct api_config api_cfg;
    struct api_server *api;
    struct connect *connect;
    struct directory_sync *dsync;       /* the LDAP sync runner (its own thread) */
    struct worker_pool *workers;        /* blocking work off the loop: SMTP AUTH argon2id, MTA-STS fetches */
    struct event *ev_term, *ev_int, *ev_hup;
    struct reloader rl;
    struct dkim_keyset *dkim_keys;      /* current DKIM signing keys; read via &dkim_keys */
    char *hostname;
    int lock_fd;
    uint64_t started_ms;
    bool stopping;
    struct permitted_index *permitted;  /* current permitted senders; read via &permitted */
    struct greylist *greylist;          /* greylisting triplets, on the loop */
    unsigned char srs_key[32];          /* issue 7: SRS of forwarding (forward.h), from secret.key */
    struct archive *archive;            /* issue 8: the archive engine; NULL when archive = no */
    struct tracking *tracking;          /* issue 11: the tracking engine; NULL when tracking = no */
    /* issue 11: moat.conf as the file alone gave it (defaults + file, no
     * store, no -o), to tell at SIGHUP what changed in the file */
    struct moat_settings file_settings;
    const char *config_path;            /* argv, $MOAT_CONFIG or the default: not owned */
    bool config_required;
    char *config_real;                  /* issue 11: its real path, NULL = none (backup) */
};

/* --- routing snapshot --- */

/* --- the routing snapshot and the RCPT index ---
 *
 * Both are loaded from the store by a thread of its own, with its own store
 * handle: loading the index of 100,000 users takes about a tenth of a
 * second, which the SMTP loop must never spend.  The loop only swaps the
 * pointers (moatd_reload_swap).  The thread looks every second whether
 * anything committed a change (store_changed: the API, the Connect timer,
 * the LDAP sync), and at once when asked (API changes, SIGHUP);
 * moatd_reload_request(wait) returns once the loop uses what was loaded. */

/* moatd_config_load - a fresh snapshot, and a fresh index when the
 * directory's generation moved past *gen (else *ix = NULL) */
static int moatd_config_load(struct store *st, int64_t *gen, struct store_snapshot **snap,
                             struct directory_index **ix, struct error *err)
{
    *ix = NULL;
    *snap = store_snapshot_load(st, err);
    if (*snap == NULL)
        return -1;
    int64_t g;
    if (store_dir_generation(st, &g, err) < 0 || g != *gen) {
        *ix = directory_index_load(st, err);
        if (*ix == NULL) {
            store_snapshot_free(*snap);
            *snap = NULL;
            return -1;
        }
        *gen = g;
    }
    return 0;
}

/* moatd_settings_changed - on the loop, after runtime settings changed
 * (the API, SIGHUP): hand the tracking engine its limits (it runs on a
 * thread of its own and keeps a copy) */
static void moatd_settings_changed(void *arg)
{
    struct moatd *m = arg;
    if (m->tracking == NULL)
        return;
    tracking_set_limits(m->tracking, m->settings.tracking_retention,
                        m->settings.tracking_max_size);
    tracking_set_purge_interval(m->tracking, m->settings.tracking_purge_interval);
}

/* --- SIGHUP: moat.conf and the STARTTLS certificate (issue 11) ---
 *
 * The reload thread reads the file and builds the new TLS context (file
 * I/O and key parsing stay off the loop); the loop applies the changed
 * runtime settings and swaps the context in moatd_hup_swap.  Anything
 * broken is logged and the running configuration kept: a SIGHUP never
 * stops moatd. */

/* moatd_hup_load - on the reload thread: moat.conf and the certificate
 * afresh; what failed stays NULL, and status says what happened */
static void moatd_hup_load(struct moatd *m, struct moat_settings **file, SSL_CTX **tls,
                           char *status, size_t size)
{
    struct error err = {0};
    char why[160];
    const char *file_state = "settings reloaded", *tls_state = "certificate reloaded";

    *file = xcalloc(1, sizeof **file);
    if (settings_reload_read(*file, m->config_path, m->config_required, &err) < 0) {
        log_error("event=settings_reload_failed path=%s field=%s reason=%s action=kept_running",
                  m->config_path, err.field[0] ? err.field : "-", log_quote(why, sizeof why, err.msg));
        free(*file);
        *file = NULL;
        file_state = "settings file broken, kept the running settings";
    }
    /* the paths are start-up settings: the running ones, the files' contents anew */
    *tls = smtp_tls_server_ctx(&m->settings, m->hostname, &err);
    if (*tls == NULL) {
        log_error("event=tls_reload_failed field=%s reason=%s action=kept_old_certificate",
                  err.field[0] ? err.field : "-", log_quote(why, sizeof why, err.msg));
        tls_state = "certificate broken, kept the old one";
    }
    (void)xsnprintf(status, size, "%s; %s", file_state, tls_state);
}

/* moatd_hup_swap - on the loop: use what moatd_hup_load read (either may be NULL) */
static void moatd_hup_swap(struct moatd *m, struct moat_settings *file, SSL_CTX *tls)
{
    if (file != NULL) {
        struct settings_reload_counts c;
        settings_reload_apply(&m->settings, &m->file_settings, file, &c);
        settings_free(&m->file_settings);
        m->file_settings = *file;
        free(file);
        log_info("event=settings_reloaded path=%s applied=%d shadowed=%d needs_restart=%d",
                 m->config_path, c.applied, c.shadowed, c.needs_restart);
        moatd_settings_changed(m);
    }
    if (tls != NULL) {
        /* sessions already in TLS hold a reference to the old context */
        smtp_server_set_tls(m->smtp, tls);
        SSL_CTX_free(m->tls_server);
        m->tls_server = tls;
        log_info("event=tls_reloaded cert=%s", m->settings.tls_cert[0] ? m->settings.tls_cert
                                                                       : "STATE/tls/cert.pem");
    }
}

/* moatd_reload_swap - on the loop: use what the reload thread loaded */
static void moatd_reload_swap(evutil_socket_t fd, short what, void *arg)
{
    struct moatd *m = arg;
    struct reloader *rl = &m->rl;
    pthread_mutex_lock(&rl->mu);
    struct store_snapshot *snap = rl->pending_snap;
    struct directory_index *ix = rl->pending_ix;
    uint64_t seq = rl->pending_seq;
    rl->pending_snap = NULL;
    rl->pending_ix = NULL;
    struct dkim_keyset *dkim = rl->pending_dkim;
    rl->pending_dkim = NULL;
    struct permitted_index *pix = rl->pending_permitted;
    rl->pending_permitted = NULL;
    struct moat_settings *file = rl->pending_file;
    SSL_CTX *tls = rl->pending_tls;
    uint64_t hup_seq = rl->hup_pending_seq;
    char hup_status[sizeof rl->hup_status];
    str_copy(hup_status, sizeof hup_status, rl->hup_status);
    rl->pending_file = NULL;
    rl->pending_tls = NULL;
    pthread_mutex_unlock(&rl->mu);
    moatd_hup_swap(m, file, tls);
    if (pix != NULL) {
        /* nobody keeps the old index across events (smtp_session.c) */
        permitted_index_free(m->permitted);
        m->permitted = pix;
    }
    if (dkim != NULL) {
        /* nobody keeps the old key set across events (deliver_dkim.c) */
        dkim_keyset_free(m->dkim_keys);
        m->dkim_keys = dkim;
    }
    if (snap != NULL) {
        /* nobody keeps the old snapshot across events (smtp.h, deliver.h) */
        store_snapshot_free(m->snapshot);
        m->snapshot = snap;
        log_info("event=config_loaded domains=%zu", store_snapshot_count(snap));
    }
    if (ix != NULL) {
        directory_index_free(m->directory);
        m->directory = ix;
        /* a mode or route may have changed: ask the routes afresh */
        policy_callforward_forget(m->callforward);
        log_info("event=directory_loaded");
    }
    pthread_mutex_lock(&rl->mu);
    if (seq > rl->swapped)
        rl->swapped = seq;
    bool hup_answered = hup_seq > rl->hup_swapped;
    if (hup_answered)
        rl->hup_swapped = hup_seq;
    pthread_cond_broadcast(&rl->swapped_cv);
    pthread_mutex_unlock(&rl->mu);
    if (hup_answered) {
        /* the reloaded configuration is in use (sd_notify(3): READY=1 ends RELOADING=1) */
        log_info("event=reload_done status=\"%s\"", hup_status);
        notify_sendf("READY=1\nSTATUS=%s", hup_status);
    }
}

/* moatd_permitted_load - the permitted-sender index at the screening clock */
/* moatd_released_known - on the loop: the permitted index knows the
 * Message-IDs of held mail released lately (permitted_learn's hook) */
static bool moatd_released_known(void *arg, const char *msgid)
{
    struct moatd *m = arg;
    return permitted_index_released(m->permitted, msgid);
}

static struct permitted_index *moatd_permitted_load(struct moatd *m, struct store *st,
                                                    struct error *err)
{
    return permitted_index_load(st, screen_clock_now(&m->settings),
                                m->settings.permitted_auto_lifetime, err);
}

/* moatd_reload_main - the reload thread */
static void *moatd_reload_main(void *arg)
{
    struct moatd *m = arg;
    struct reloader *rl = &m->rl;
    struct error err = {0};
    struct store *st = store_open(m->settings.database, &err);
    if (st == NULL)
        log_error("event=config_reload_failed reason=\"%s\"", err.msg);
    int64_t gen = m->directory_gen;
    int64_t pgen = -1;          /* the permitted-sender generation loaded (-1: load) */
    uint64_t handled = 0;
    uint64_t hup_handled = 0;
    pthread_mutex_lock(&rl->mu);
    while (!rl->stop) {
        uint64_t want = rl->requested;
        uint64_t hup_want = rl->hup_requested;
        pthread_mutex_unlock(&rl->mu);
        if (hup_want > hup_handled) {
            struct moat_settings *file;
            SSL_CTX *tls;
            char status[sizeof rl->hup_status];
            moatd_hup_load(m, &file, &tls, status, sizeof status);
            pthread_mutex_lock(&rl->mu);
            if (rl->pending_file != NULL) {
                settings_free(rl->pending_file);
                free(rl->pending_file);
            }
            rl->pending_file = file;
            SSL_CTX_free(rl->pending_tls);
            rl->pending_tls = tls;
            rl->hup_pending_seq = hup_want;
            str_copy(rl->hup_status, sizeof rl->hup_status, status);
            pthread_mutex_unlock(&rl->mu);
            hup_handled = hup_want;
            if (st == NULL)   /* else the store load below wakes the loop once, after both */
                event_active(rl->ev_swap, EV_TIMEOUT, 0);
        }
        if (st != NULL && (want > handled || store_changed(st))) {
            struct store_snapshot *snap;
            struct directory_index *ix;
            if (moatd_config_load(st, &gen, &snap, &ix, &err) < 0)
                log_warn("event=config_reload_failed reason=\"%s\"", err.msg);
            /* DKIM keys: decrypted here, never on the loop, never in the snapshot */
            struct dkim_keyset *dkim = dkim_keyset_load(st, m->auth, &err);
            if (dkim == NULL)
                log_warn("event=dkim_reload_failed reason=\"%s\"", err.msg);
            /* permitted senders (issue 7), when they changed; expired auto
             * entries are dropped at each load (a lookup ignores them anyway) */
            struct permitted_index *pix = NULL;
            int64_t pg = -1;
            if (store_permitted_generation(st, &pg, &err) < 0 || pg != pgen) {
                pix = moatd_permitted_load(m, st, &err);
                if (pix == NULL)
                    log_warn("event=permitted_reload_failed reason=\"%s\"", err.msg);
                else if (store_permitted_generation(st, &pgen, &err) < 0)
                    pgen = -1;
            }
            pthread_mutex_lock(&rl->mu);
            if (pix != NULL) {
                permitted_index_free(rl->pending_permitted);
                rl->pending_permitted = pix;
            }
            if (dkim != NULL) {
                dkim_keyset_free(rl->pending_dkim);
                rl->pending_dkim = dkim;
            }
            if (snap != NULL) {
                store_snapshot_free(rl->pending_snap);
                rl->pending_snap = snap;
            }
            if (ix != NULL) {
                directory_index_free(rl->pending_ix);
                rl->pending_ix = ix;
            }
            rl->pending_seq = want;   /* a failed load still answers its waiters */
            pthread_mutex_unlock(&rl->mu);
            event_active(rl->ev_swap, EV_TIMEOUT, 0);
            handled = want;
        }
        pthread_mutex_lock(&rl->mu);
        if (!rl->stop && rl->requested == handled) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += 1;
            pthread_cond_timedwait(&rl->cv, &rl->mu, &until);
        }
    }
    pthread_mutex_unlock(&rl->mu);
    store_close(st);
    return NULL;
}

/* moatd_reload_request - load now; with wait, return once the loop uses it */
static int moatd_reload_request(struct moatd *m, bool wait, struct error *err)
{
    struct reloader *rl = &m->rl;
    pthread_mutex_lock(&rl->mu);
    uint64_t me = ++rl->requested;
    pthread_cond_signal(&rl->cv);
    if (wait) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += 10;
        while (rl->swapped < me && !rl->stop)
            if (pthread_cond_timedwait(&rl->swapped_cv, &rl->mu, &until) == ETIMEDOUT)
                break;
    }
    bool ok = !wait || rl->swapped >= me;
    pthread_mutex_unlock(&rl->mu);
    if (!ok) {
        error_set(err, NULL, "the new configuration was not in use within 10 s");
        return -1;
    }
    return 0;
}

/* moatd_reload_start - the thread, after the privilege drop */
static int moatd_reload_start(struct moatd *m, struct error *err)
{
    struct reloader *rl = &m->rl;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&rl->mu, NULL);
    pthread_cond_init(&rl->cv, &ca);
    pthread_cond_init(&rl->swapped_cv, &ca);
    pthread_condattr_destroy(&ca);
    rl->ev_swap = event_new(m->base, -1, 0, moatd_reload_swap, m);
    if (rl->ev_swap == NULL || pthread_create(&rl->thread, NULL, moatd_reload_main, m) != 0) {
        error_set(err, NULL, "cannot start the configuration reload thread");
        return -1;
    }
    rl->running = true;
    return 0;
}

/* moatd_reload_stop - after the loop: waiters give up, the thread ends */
static void moatd_reload_stop(struct moatd *m)
{
    struct reloader *rl = &m->rl;
    if (!rl->running)
        return;
    pthread_mutex_lock(&rl->mu);
    rl->stop = true;
    pthread_cond_broadcast(&rl->cv);
    pthread_cond_broadcast(&rl->swapped_cv);
    pthread_mutex_unlock(&rl->mu);
    pthread_join(rl->thread, NULL);
    rl->running = false;
    store_snapshot_free(rl->pending_snap);
    directory_index_free(rl->pending_ix);
    dkim_keyset_free(rl->pending_dkim);
    permitted_index_free(rl->pending_permitted);
    rl->pending_permitted = NULL;
    if (rl->pending_file != NULL) {
        settings_free(rl->pending_file);
        free(rl->pending_file);
        rl->pending_file = NULL;
    }
    SSL_CTX_free(rl->pending_tls);
    rl->pending_tls = NULL;
    rl->pending_snap = NULL;
    rl->pending_ix = NULL;
    rl->pending_dkim = NULL;
    event_free(rl->ev_swap);
    pthread_cond_destroy(&rl->cv);
    pthread_cond_destroy(&rl->swapped_cv);
    pthread_mutex_destroy(&rl->mu);
}

/* --- status, for GET /api/v1/status --- */

/* moatd_status - the daemon's figures; runs on the loop */
static json_t *moatd_status(struct moatd *m)
{
    struct smtp_server_stats ss;
    struct deliver_stats ds;
    struct spool_stats ps;
    smtp_server_get_stats(m->smtp, &ss);
    deliver_get_stats(m->deliver, &ds);
    spool_get_stats(m->spool, &ps);
    json_t *st = json_pack("{s:s, s:i, s:I, s:s, s:i, s:{s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:I, s:I, s:I},"
                     " s:{s:I, s:I, s:I, s:I, s:I, s:I}}",
        "version", MOAT_VERSION, "pid", (int)getpid(),
        "uptime", (json_int_t)((time_wall_ms() - m->started_ms) / 1000),
        "hostname", m->hostname,
        "domains", (int)(m->snapshot ? store_snapshot_count(m->snapshot) : 0),
        "smtp", "connections_now", (json_int_t)ss.connections_now,
                "connections_total", (json_int_t)ss.connections_total,
                "messages_accepted", (json_int_t)ss.messages_accepted,
                "messages_rejected", (json_int_t)ss.messages_rejected,
        "delivery", "delivered", (json_int_t)ds.delivered, "deferred", (json_int_t)ds.deferred,
                    "bounced", (json_int_t)ds.bounced, "dsn_sent", (json_int_t)ds.dsn_sent,
                    "active", (json_int_t)ds.active,
        "queue", "messages", (json_int_t)ps.messages,
                 "recipients_pending", (json_int_t)ps.recipients_pending,
                 "segments", (json_int_t)ps.segments, "bytes", (json_int_t)ps.bytes,
                 "commits", (json_int_t)ps.commits, "committed_messages", (json_int_t)ps.committed_msgs);
    if (st != NULL && m->archive != NULL) {
        /* issue 8: the archive engine since start */
        struct archive_stats as;
        archive_get_stats(m->archive, &as);
        json_object_set_new(st, "archive", json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
            "ingested", (json_int_t)as.ingested, "duplicates", (json_int_t)as.duplicates,
            "journal_reports", (json_int_t)as.journal_reports,
            "journal_malformed", (json_int_t)as.journal_malformed,
            "failed", (json_int_t)as.failed, "pending", (json_int_t)as.pending,
            "purged", (json_int_t)as.purged));
    }
    return st;
}


/* --- runtime settings stored through the API --- */

/* moatd_apply_stored_settings - the runtime settings stored in the database
 * over those of moat.conf (precedence in settings.h: default < moat.conf <
 * store < -o).  Runs once the store is open and before the SMTP server and
 * the delivery engine exist; later changes arrive through the API, on the
 * loop.  A stored value this version refuses is logged and skipped, not
 * fatal: moatd must start so that the API can fix it. */
static void moatd_apply_stored_settings(struct moatd *m)
{
    struct store_setting *v = NULL;
    size_t n = 0;
    struct error err = {0};
    if (store_settings_list(m->store, &v, &n, &err) < 0) {
        log_error("event=settings_load_failed reason=\"%s\"", err.msg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        int rc = settings_apply_runtime(&m->settings, v[i].key, v[i].value, &err);
        if (rc < 0)
            log_error("event=stored_setting_ignored key=%s reason=\"%s\"", v[i].key, err.msg);
        else if (rc > 0)
            log_warn("event=stored_setting_shadowed key=%s reason=\"set on the command line\"",
                     v[i].key);
        else
            log_info("event=stored_setting key=%s value=\"%s\"", v[i].key, v[i].value);
    }
    store_settings_free(v, n);
}

/* --- HTTP API (api.h): moatd supplies the loop-side callbacks --- */

/* moatd_outbound_seen - on the loop: Connect's outbound check asks what the
 * SMTP server has relayed for the outbound role */
static void moatd_outbound_seen(void *arg, struct connect_outbound_seen *out)
{
    struct moatd *m = arg;
    struct smtp_server_stats st;
    if (m->smtp == NULL)
        return;
    smtp_server_get_stats(m->smtp, &st);
    out->relayed = st.outbound_relayed;
    out->last = st.outbound_last;
    str_copy(out->last_client, sizeof out->last_client, st.outbound_last_client);
}

/* moatd_api_reload - on an API worker thread, after a change */
static int moatd_api_reload(void *arg, struct error *err)
{
    return moatd_reload_request(arg, true, err);
}

static json_t *moatd_api_status(void *arg)
{
    return moatd_status(arg);
}

/* moatd_auth_config - the auth module's settings */
static struct auth_config moatd_auth_config(const struct moatd *m)
{
    return (struct auth_config){
        .state_dir = m->settings.state_dir,
        .session_lifetime = m->settings.session_lifetime,
        .session_idle_timeout = m->settings.session_idle_timeout,
        .login_max_failures = (int)m->settings.login_max_failures,
        .login_failure_window = m->settings.login_failure_window,
    };
}

/* moatd_init_admin - --init-admin NAME --token-file FILE: the first
 * administrator and an admin API token in FILE (0600), then exit */
static int moatd_init_admin(struct moatd *m, const char *name, const char *token_file)
{
    struct error err = {0};
    struct auth_config acfg = moatd_auth_config(m);
    struct store *st = store_open(m->settings.database, &err);
    if (st == NULL) {
        fprintf(stderr, "moatd: %s\n", err.msg);
        return 1;
    }
    struct auth *a = auth_create(&acfg, &err);
    int rc = 1;
    if (a == NULL)
        fprintf(stderr, "moatd: %s\n", err.msg);
    else if (auth_init_admin(a, st, name, token_file, &err) < 0)
        fprintf(stderr, "moatd: --init-admin: %s\n", err.msg);
    else
        rc = 0;
    auth_free(a);
    store_close(st);
    return rc;
}

/* moatd_first_start - on a store without accounts, create "admin" with a
 * one-time password printed to the terminal and written to
 * STATE/initial-admin-password (0600).  Runs before moatd detaches, so the
 * password never lands in the log file. */
static int moatd_first_start(struct moatd *m)
{
    struct error err = {0};
    struct auth_config acfg = moatd_auth_config(m);
    struct store *st = store_open(m->settings.database, &err);
    if (st == NULL) {
        fprintf(stderr, "moatd: %s\n", err.msg);
        return -1;
    }
    struct auth *a = auth_create(&acfg, &err);
    int rc = -1;
    if (a == NULL)
        fprintf(stderr, "moatd: %s\n", err.msg);
    else if (auth_first_start(a, st, m->settings.state_dir, &err) < 0)
        fprintf(stderr, "moatd: first start: %s\n", err.msg);
    else
        rc = 0;
    auth_free(a);
    store_close(st);
    return rc;
}

static void moatd_list_routes(void)
{
    for (size_t i = 0; i < api_routes_count; i++)
        printf("%s %s %s\n", api_routes[i].method, api_routes[i].pattern,
               auth_perm_name(api_routes[i].perm));
}

/* --- signals and shutdown --- */

static void moatd_on_deliver_stopped(void *arg)
{
    struct moatd *m = arg;
    log_info("event=delivery_stopped");
    event_base_loopexit(m->base, NULL);
}

static void moatd_on_smtp_stopped(void *arg)
{
    struct moatd *m = arg;
    log_info("event=smtp_stopped");
    deliver_shutdown(m->deliver, moatd_on_deliver_stopped, m);
}

static void moatd_on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct moatd *m = arg;
    if (sig == SIGHUP) {
        struct error err = {0};
        log_info("event=sighup");
        notify_reloading("reloading moat.conf, the certificate and the configuration");
        pthread_mutex_lock(&m->rl.mu);
        m->rl.hup_requested++;    /* moatd_reload_main reads the file and the certificate */
        pthread_mutex_unlock(&m->rl.mu);
        moatd_reload_request(m, false, &err);
        return;
    }
    if (m->stopping) {
        log_warn("event=signal sig=%d reason=\"already stopping\"", (int)sig);
        return;
    }
    m->stopping = true;
    log_info("event=stopping signal=%d", (int)sig);
    notify_send("STOPPING=1\nSTATUS=stopping: finishing sessions and deliveries");
    smtp_server_shutdown(m->smtp, moatd_on_smtp_stopped, m);
}

/* --- state directory, lock, privileges --- */

/* mkdir_p - create dir and missing parents with mode */
static int mkdir_p(const char *path, mode_t mode)
{
    char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0755) < 0 && errno != EEXIST) {
            free(p);
            return -1;
        }
        *s = '/';
    }
    int r = mkdir(p, mode);
    free(p);
    return (r < 0 && errno != EEXIST) ? -1 : 0;
}

/* chown_tree - give the state directory to the service user (depth-bounded) */
static void chown_tree(const char *path, uid_t uid, gid_t gid, int depth)
{
    struct stat st;
    if (lstat(path, &st) < 0 || S_ISLNK(st.st_mode))
        return;
    if (lchown(path, uid, gid) < 0)
        log_warn("event=chown_failed path=%s reason=\"%s\"", path, strerror(errno));
    if (!S_ISDIR(st.st_mode) || depth > 4)
        return;
    char cmd[4096];
    /* opendir without another dependency */
    DIR *d = opendir(path);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (xsnprintf(cmd, sizeof cmd, "%s/%s", path, e->d_name) < 0)
            continue;
        chown_tree(cmd, uid, gid, depth + 1);
    }
    closedir(d);
}

/* moatd_drop_privileges - when root: give the state to run_user, then become it */
static int moatd_drop_privileges(struct moatd *m, struct error *err)
{
    if (geteuid() != 0)
        return 0;
    const char *user = m->settings.run_user;
    struct passwd *pw = getpwnam(user);
    if (pw != NULL && pw->pw_uid == 0) {
        /* an explicit choice (containers, test rigs); say it loudly */
        log_warn("event=privileges_kept user=%s reason=\"run_user is root\"", user);
        return 0;
    }
    if (pw == NULL && strcmp(user, "moat") == 0) {
        log_warn("event=run_user_missing user=moat fallback=nobody");
        pw = getpwnam("nobody");
    }
    if (pw == NULL) {
        error_set(err, "run_user", "no such user: %s", user);
        return -1;
    }
    chown_tree(m->settings.state_dir, pw->pw_uid, pw->pw_gid, 0);
    /* a spool_dir outside the state dir too: the spool creates and removes
     * segments there after the drop (depth 3: the directory, its segments,
     * corrupt/ and what is in it; never further, whatever it points at) */
    chown_tree(m->settings.spool_dir, pw->pw_uid, pw->pw_gid, 3);
    const char *suffixes[] = { "", "-wal", "-shm" };
    /* issue 11: the tracking database, open since before the drop, too */
    const char *dbs[] = { m->settings.database, m->tracking ? tracking_path(m->tracking) : NULL };
    for (size_t d = 0; d < 2 && dbs[d] != NULL; d++) {
        for (size_t i = 0; i < 3; i++) {
            char path[4096];
            if (xsnprintf(path, sizeof path, "%s%s", dbs[d], suffixes[i]) >= 0)
                if (lchown(path, pw->pw_uid, pw->pw_gid) < 0 && errno != ENOENT)
                    log_warn("event=chown_failed path=%s reason=\"%s\"", path, strerror(errno));
        }
    }
    if (setgroups(1, &pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
        error_set(err, "run_user", "cannot switch to %s: %s", pw->pw_name, strerror(errno));
        return -1;
    }
    if (setuid(0) == 0) {
        error_set(err, "run_user", "privileges could be regained after dropping them");
        return -1;
    }
    log_info("event=privileges_dropped user=%s uid=%d", pw->pw_name, (int)pw->pw_uid);
    return 0;
}

/* moatd_lock_state - one daemon per state directory: two would share a spool */
static int moatd_lock_state(struct moatd *m, struct error *err)
{
    char *path = xasprintf("%s/moatd.lock", m->settings.state_dir);
    m->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (m->lock_fd < 0 || flock(m->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        error_set(err, "state_dir", "cannot lock %s: %s (is another moatd running on this state directory?)",
                  path, strerror(errno));
        free(path);
        return -1;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(m->lock_fd, 0) == 0 && write(m->lock_fd, pid, (size_t)n) != n)
        log_warn("event=pidfile_write_failed path=%s", path);
    free(path);
    return 0;
}

/* --- command line --- */

enum { O_CONFIG = 256, O_STATE, O_SMTP, O_HTTP, O_RESOLVER, O_FG, O_CHECK, O_VERSION, O_REF, O_HELP,
       O_INIT_ADMIN, O_TOKEN_FILE, O_LIST_ROUTES, O_MAN };

/* moatd's options: getopt's table, `moatd --help` and moatd(8) come from
 * this one table (issue 11), so none can go undocumented */
static const struct moatd_option {
    const char *name;       /* long name; "o" is the one short option, -o */
    const char *arg;        /* the value's name, NULL for a flag */
    int code;
    const char *help;
} moatd_options[] = {
    { "config", "FILE", O_CONFIG, "The settings file, moat.conf(5). Without it, $MOAT_CONFIG, "
      "else /etc/moat/moat.conf if it exists, else the built-in defaults." },
    { "state-dir", "DIR", O_STATE, "The state directory (database, spool, TLS keys); the "
      "setting `state_dir`." },
    { "smtp-listen", "ADDR:PORT", O_SMTP, "An SMTP listener, repeatable (`[::1]:2525` for "
      "IPv6); replaces the file's `smtp_listen`." },
    { "http-listen", "ADDR:PORT", O_HTTP, "The HTTP API listener, repeatable; replaces the "
      "file's `http_listen`." },
    { "resolver", "ADDR:PORT", O_RESOLVER, "The DNS resolver to forward to; the setting "
      "`resolver`." },
    { "o", "KEY=VALUE", 'o', "Set any setting of moat.conf(5), over the file and over a value "
      "stored in the database (repeatable; for tests and emergencies)." },
    { "foreground", NULL, O_FG, "Stay in the foreground and log to stderr (under systemd, "
      "where the journal keeps the log). Without it moatd detaches and logs to "
      "STATE/moatd.log." },
    { "check-config", NULL, O_CHECK, "Validate the settings file and the command line, print "
      "every effective setting, and exit: 0 when valid, 78 when a setting is wrong (the "
      "message names the file, the line and the key)." },
    { "settings-reference", NULL, O_REF, "Print the settings reference (Markdown, "
      "docs/settings.md) and exit." },
    { "version", NULL, O_VERSION, "Print the version and exit." },
    { "help", NULL, O_HELP, "Print the options and exit." },
    { "init-admin", "NAME", O_INIT_ADMIN, "With `--token-file`: create the first "
      "administrator NAME, write an admin API token to FILE (mode 0600), print the one-time "
      "password, and exit." },
    { "token-file", "FILE", O_TOKEN_FILE, "Where `--init-admin` writes the API token." },
    { "list-routes", NULL, O_LIST_ROUTES, "Print every API route (METHOD PATTERN PERMISSION) "
      "and exit." },
    { "man", "SECTION", O_MAN, "Print a manual page and exit: 8 for moatd(8), 5 for "
      "moat.conf(5); exit 1 when something in its table has no description." },
};
#define N_MOATD_OPTIONS (sizeof moatd_options / sizeof moatd_options[0])

/* option_left - "--name ARG" or "-o ARG" */
static void option_left(char *dst, size_t size, const struct moatd_option *o)
{
    (void)xsnprintf(dst, size, "%s%s%s%s", o->name[1] ? "--" : "-", o->name, o->arg ? " " : "",
                    o->arg ? o->arg : "");
}

static void usage(FILE *out)
{
    fputs("usage: moatd [options]\n", out);
    for (size_t i = 0; i < N_MOATD_OPTIONS; i++) {
        char left[64];
        option_left(left, sizeof left, &moatd_options[i]);
        fprintf(out, "  %s\n", left);
        /* the help without its `code` marks, wrapped */
        int col = 0;
        for (const char *h = moatd_options[i].help; *h;) {
            size_t word = strcspn(h, " ");
            if (col == 0 || col + 1 + (int)word > 78) {
                fprintf(out, "%s      ", col ? "\n" : "");
                col = 6;
            } else {
                fputc(' ', out);
                col++;
            }
            for (size_t k = 0; k < word; k++)
                if (h[k] != '`')
                    fputc(h[k], out);
            col += (int)word;
            h += word;
            h += strspn(h, " ");
        }
        fputc('\n', out);
    }
}

/* moatd_write_man - moatd(8); -1 when an option has no help (named on stderr) */
static int moatd_write_man(FILE *out)
{
    int missing = 0;
    roff_header(out, "MOATD", 8, MOAT_VERSION, "moatd --man 8 from moatd's option table in "
                "src/moatd.c", "moatd", "the Moat secure email gateway daemon");
    fputs(".SH SYNOPSIS\n.B moatd\n[\\fIoptions\\fR]\n.SH DESCRIPTION\n", out);
    roff_text(out,
        "`moatd` is the daemon of Moat, a secure email gateway: one SMTP listener for inbound "
        "mail, outbound relay and journal reports, a durable spool, the delivery engine, the "
        "screening policies, the archive, and the HTTP API used by `moat`(1) and the web "
        "console. It reads moat.conf(5), opens its database and spool in `state_dir`, binds "
        "its listeners, drops to `run_user` when started as root, and accepts mail.\n\n"
        "Logs are one line per event of `key=value` pairs (`ts=... level=info event=...`), on "
        "stderr in the foreground; an administrator follows a message through them by its "
        "queue id. When stderr is the systemd journal, each line carries its syslog priority, "
        "so `journalctl -u moatd -p warning` shows warnings and errors only.");
    fputs(".SH OPTIONS\n", out);
    for (size_t i = 0; i < N_MOATD_OPTIONS; i++) {
        const struct moatd_option *o = &moatd_options[i];
        if (o->help == NULL || o->help[0] == '\0') {
            fprintf(stderr, "moatd: option %s has no help text\n", o->name);
            missing++;
            continue;
        }
        char left[64];
        option_left(left, sizeof left, o);
        fputs(".TP\n", out);
        roff_bold(out, left);
        fputc('\n', out);
        roff_text(out, o->help);
    }
    fputs(".SH SIGNALS\n.TP\n.B SIGHUP\n", out);
    roff_text(out,
        "Reload: moat.conf(5) is read again (changed runtime settings apply at once, a changed "
        "start-up setting is logged `event=setting_needs_restart` and waits for a restart, a "
        "file with an error is logged and ignored); the STARTTLS certificate and key "
        "(`tls_cert`, `tls_key`) are read again for new sessions, while sessions in progress "
        "keep theirs (a broken certificate is logged and the old one kept); the configuration "
        "in the database is loaded again. The HTTP API's certificate (`http_tls_cert`) is read at "
        "start only. A SIGHUP never stops moatd.");
    fputs(".TP\n.B SIGTERM, SIGINT\n", out);
    roff_text(out,
        "Stop: no new connections; sessions in flight get `smtp_timeout_shutdown` to finish, "
        "deliveries in flight complete; then moatd exits 0. Accepted mail stays in the spool.");
    fputs(".SH SERVICE MANAGER\n", out);
    roff_text(out,
        "With $NOTIFY_SOCKET set (systemd, `Type=notify`), moatd reports READY=1 once its "
        "listeners are bound, its store is open and privileges are dropped; RELOADING=1 at "
        "SIGHUP and READY=1 when the reloaded configuration is in use; STOPPING=1 at "
        "shutdown; and a STATUS= line at each step. The unit file moatd.service runs "
        "`moatd --foreground --config /etc/moat/moat.conf` as the user moat with the one "
        "capability CAP_NET_BIND_SERVICE.");
    fputs(".SH EXIT STATUS\n.TP\n0\nstopped cleanly; or the settings are valid "
          "(\\fB\\-\\-check\\-config\\fR)\n.TP\n1\ncould not start (the log line "
          "\\fBevent=start_failed\\fR names the stage and the setting)\n.TP\n2\nwrong "
          "command line\n.TP\n78\nan error in the settings (file, line and key in the "
          "message; also for \\fB\\-\\-check\\-config\\fR)\n", out);
    fputs(".SH ENVIRONMENT\n.TP\n.B MOAT_CONFIG\nthe settings file when "
          "\\fB\\-\\-config\\fR is not given\n.TP\n.B NOTIFY_SOCKET\nthe service "
          "manager's notification socket (a path, or @name for an abstract socket)\n", out);
    fputs(".SH FILES\n.TP\n/etc/moat/moat.conf\nthe settings file\n.TP\n"
          "/var/lib/moat\nthe default state directory: moat.db, the spool, tls/, "
          "moatd.lock, initial\\-admin\\-password\n"
          ".SH SEE ALSO\n\\fBmoat\\fR(1), \\fBmoat.conf\\fR(5)\n", out);
    return missing ? -1 : 0;
}

/* moatd_man - --man SECTION */
static _Noreturn void moatd_man(const char *section)
{
    int rc;
    if (strcmp(section, "8") == 0)
        rc = moatd_write_man(stdout);
    else if (strcmp(section, "5") == 0)
        rc = settings_write_man(stdout);
    else {
        fprintf(stderr, "moatd: --man %s: the pages are 8 (moatd) and 5 (moat.conf)\n", section);
        exit(2);
    }
    exit(rc < 0 || fflush(stdout) != 0 ? 1 : 0);
}

/* moatd_parse_args - settings file first, then command-line overrides in order */
static int moatd_parse_args(struct moatd *m, int argc, char **argv, bool *foreground, bool *check,
                            const char **init_admin, const char **token_file)
{
    static struct option opts[N_MOATD_OPTIONS + 1];
    size_t n = 0;
    for (size_t i = 0; i < N_MOATD_OPTIONS; i++)
        if (moatd_options[i].name[1] != '\0')   /* -o is in the short option string */
            opts[n++] = (struct option){ moatd_options[i].name,
                                         moatd_options[i].arg ? required_argument : no_argument,
                                         NULL, moatd_options[i].code };
    opts[n] = (struct option){ NULL, 0, NULL, 0 };
    struct error err = {0};
    const char *config = NULL;
    int c;
    /* pass 1: the settings file, so that command-line values override it */
    opterr = 0;
    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        if (c == O_CONFIG)
            config = optarg;
        /* what documents moatd needs no settings file (a broken one included) */
        if (c == O_MAN)
            moatd_man(optarg);
        if (c == O_VERSION) {
            printf("moatd %s\n", MOAT_VERSION);
            exit(0);
        }
    }
    settings_defaults(&m->settings);
    /* the same lookup as the CLI: --config, $MOAT_CONFIG, then the system file if present */
    bool required = true;
    if (config == NULL && (config = getenv("MOAT_CONFIG")) == NULL) {
        config = "/etc/moat/moat.conf";
        required = false;
    }
    if (settings_load_file(&m->settings, config, required, &err) < 0) {
        fprintf(stderr, "moatd: %s\n", err.msg);
        exit(EXIT_CONFIG);
    }
    m->config_path = config;   /* read again at SIGHUP */
    m->config_required = required;
    /* pass 2: everything else */
    optind = 1;
    opterr = 1;
    struct buf smtp, http;
    buf_init(&smtp);
    buf_init(&http);
    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        const char *key = NULL, *val = optarg;
        char *kv = NULL;
        switch (c) {
        case O_CONFIG: continue;
        case O_STATE:
            key = "state_dir";
            if (optarg[0] != '/') {
                /* settings take absolute paths: the daemon may chdir, scripts pass ./state */
                char cwd[4096];
                if (getcwd(cwd, sizeof cwd) == NULL) {
                    fprintf(stderr, "moatd: --state-dir: cannot resolve %s: %s\n", optarg, strerror(errno));
                    exit(EXIT_CONFIG);
                }
                kv = xasprintf("%s/%s", cwd, optarg);
                val = kv;
            }
            break;
        case O_SMTP:
            /* repeated --smtp-listen options make one list, replacing the file's */
            buf_printf(&smtp, "%s%s", smtp.len ? "," : "", optarg);
            continue;
        case O_HTTP:
            buf_printf(&http, "%s%s", http.len ? "," : "", optarg);
            continue;
        case O_RESOLVER: key = "resolver"; break;
        case O_FG: *foreground = true; continue;
        case O_CHECK: *check = true; continue;
        case O_VERSION: printf("moatd %s\n", MOAT_VERSION); exit(0);
        case O_REF: settings_write_reference(stdout); exit(0);
        case O_HELP: usage(stdout); exit(0);
        case O_INIT_ADMIN: *init_admin = optarg; continue;
        case O_TOKEN_FILE: *token_file = optarg; continue;
        case O_LIST_ROUTES: moatd_list_routes(); exit(0);
        case O_MAN: moatd_man(optarg);
        case 'o': {
            const char *eq = strchr(optarg, '=');
            if (eq == NULL) {
                fprintf(stderr, "moatd: -o %s: expected KEY=VALUE\n", optarg);
                exit(EXIT_CONFIG);
            }
            kv = xstrndup(optarg, (size_t)(eq - optarg));
            key = kv;
            val = eq + 1;
            break;
        }
        default:
            usage(stderr);
            exit(2);
        }
        if (settings_set(&m->settings, key, val, &err) < 0) {
            fprintf(stderr, "moatd: %s\n", err.msg);
            exit(EXIT_CONFIG);
        }
        free(kv);
    }
    if ((smtp.len && settings_set(&m->settings, "smtp_listen", buf_cstr(&smtp), &err) < 0) ||
        (http.len && settings_set(&m->settings, "http_listen", buf_cstr(&http), &err) < 0)) {
        fprintf(stderr, "moatd: %s\n", err.msg);
        exit(EXIT_CONFIG);
    }
    buf_free(&smtp);
    buf_free(&http);
    if (optind < argc) {
        fprintf(stderr, "moatd: unexpected argument: %s\n", argv[optind]);
        usage(stderr);
        exit(2);
    }
    if (settings_finish(&m->settings, &err) < 0) {
        fprintf(stderr, "moatd: %s\n", err.msg);
        exit(EXIT_CONFIG);
    }
    return 0;
}

/* moatd_daemonize - detach; stderr goes to STATE/moatd.log */
static void moatd_daemonize(struct moatd *m)
{
    char *logpath = xasprintf("%s/moatd.log", m->settings.state_dir);
    int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) {
        fprintf(stderr, "moatd: cannot open %s: %s\n", logpath, strerror(errno));
        exit(1);
    }
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "moatd: fork: %s\n", strerror(errno));
        exit(1);
    }
    if (pid > 0) {
        printf("moatd: started, pid %d, log %s\n", (int)pid, logpath);
        exit(0);
    }
    setsid();
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
        close(null);
    }
    dup2(fd, STDERR_FILENO);
    close(fd);
    free(logpath);
    log_set_level(log_get_level());   /* stderr is no longer the journal, if it was */
}

/* --- issue 11: the gauges /metrics reads at scrape time (on an HTTP worker:
 * spool_gauges is thread-safe) --- */

static int64_t moatd_gauge_queue_messages(void *arg)
{
    uint64_t n;
    int64_t oldest_ms;
    spool_gauges(arg, &n, &oldest_ms);
    return (int64_t)n;
}

static int64_t moatd_gauge_queue_oldest(void *arg)
{
    uint64_t n;
    int64_t oldest_ms;
    spool_gauges(arg, &n, &oldest_ms);
    int64_t now_ms = (int64_t)time_wall_ms();
    return oldest_ms > 0 && now_ms > oldest_ms ? (now_ms - oldest_ms) / 1000 : 0;
}

/* moatd_metrics_start - providers and the start time, before the HTTP server serves */
static void moatd_metrics_start(struct spool *sp)
{
    metrics_set(M_START_TIME_SECONDS, (int64_t)time(NULL));
    metrics_set_gauge_fn(M_QUEUE_MESSAGES, moatd_gauge_queue_messages, sp);
    metrics_set_gauge_fn(M_QUEUE_OLDEST_SECONDS, moatd_gauge_queue_oldest, sp);
}

static _Noreturn void die(const char *what, const struct error *err)
{
    log_msg(LOG_ERROR, "event=start_failed stage=%s field=%s reason=\"%s\"", what,
            err->field[0] ? err->field : "-", err->msg);
    exit(1);
}

int main(int argc, char **argv)
{
    struct moatd m;
    memset(&m, 0, sizeof m);
    m.lock_fd = -1;
    bool foreground = false, check = false;
    const char *init_admin = NULL, *token_file = NULL;
    moatd_parse_args(&m, argc, argv, &foreground, &check, &init_admin, &token_file);
    enum log_level lvl;
    if (log_parse_level(m.settings.log_level, &lvl) == 0)
        log_set_level(lvl);
    if (check) {
        settings_print(&m.settings, stdout);
        settings_free(&m.settings);
        return 0;
    }
    struct error err = {0};
    umask(027);
    if (mkdir_p(m.settings.state_dir, 0750) < 0) {
        fprintf(stderr, "moatd: cannot create state directory %s: %s\n", m.settings.state_dir,
                strerror(errno));
        return 1;
    }
    if (init_admin != NULL || token_file != NULL) {
        if (init_admin == NULL || token_file == NULL) {
            fprintf(stderr, "moatd: --init-admin and --token-file go together\n");
            return 2;
        }
        int rc = moatd_init_admin(&m, init_admin, token_file);
        settings_free(&m.settings);
        return rc;
    }
    if (moatd_first_start(&m) < 0)
        return 1;
    /* issue 11: the file alone, to compare with at SIGHUP */
    if (settings_reload_read(&m.file_settings, m.config_path, m.config_required, &err) < 0)
        log_warn("event=settings_baseline_failed reason=\"%s\"", err.msg);
    if (!foreground)
        moatd_daemonize(&m);
    signal(SIGPIPE, SIG_IGN);
    m.started_ms = time_wall_ms();
    archive_mime_init();   /* issue 8: GMime, before any thread */
    m.hostname = xstrdup(m.settings.hostname);
    log_info("event=starting version=%s state_dir=%s hostname=%s", MOAT_VERSION,
             m.settings.state_dir, m.hostname);
    if (moatd_lock_state(&m, &err) < 0)
        die("lock", &err);

    if (evthread_use_pthreads() < 0) {
        error_set(&err, NULL, "libevent has no pthreads support");
        die("libevent", &err);
    }
    m.base = event_base_new();
    if (m.base == NULL) {
        error_set(&err, NULL, "event_base_new failed");
        die("libevent", &err);
    }
    m.store = store_open(m.settings.database, &err);
    if (m.store == NULL)
        die("store", &err);
    log_info("event=store_open path=%s schema=%d", m.settings.database, store_schema_version(m.store));
    moatd_apply_stored_settings(&m);   /* before anything reads the runtime settings */
    if (m.settings.tracking) {
        /* issue 11: before the spool and the SMTP side, whose events it keeps */
        struct tracking_config tcfg = {
            .path = m.settings.tracking_database, .retention_s = m.settings.tracking_retention,
            .max_bytes = m.settings.tracking_max_size,
            .purge_interval_s = m.settings.tracking_purge_interval,
        };
        m.tracking = tracking_start(&tcfg, &err);
        if (m.tracking == NULL)
            die("tracking", &err);
    }
    m.directory_gen = -1;
    if (moatd_config_load(m.store, &m.directory_gen, &m.snapshot, &m.directory, &err) < 0)
        die("store", &err);
    log_info("event=config_loaded domains=%zu", store_snapshot_count(m.snapshot));
    m.permitted = moatd_permitted_load(&m, m.store, &err);
    if (m.permitted == NULL)
        die("store", &err);
    /* auto-allow never learns from replies to released held mail */
    permitted_learn_set_released_hook(moatd_released_known, &m);
    struct spool_options sopt = { .segment_size = (uint64_t)m.settings.spool_segment_size,
                                  .archive = m.settings.archive };
    m.spool = spool_open(m.settings.spool_dir, &sopt, m.base, &err);
    if (m.spool == NULL)
        die("spool", &err);
    struct dns_options dopt = { .resolver = m.settings.resolver,
                                .trust_anchor_file = m.settings.dns_trust_anchor_file };
    m.dns = dns_create(m.base, &dopt, &err);
    if (m.dns == NULL)
        die("dns", &err);
    m.tls_server = smtp_tls_server_ctx(&m.settings, m.hostname, &err);
    if (m.tls_server == NULL)
        die("tls", &err);
    m.tls_client = smtp_tls_client_ctx(&m.settings, &err);
    if (m.tls_client == NULL)
        die("tls", &err);

    const struct store_snapshot *const *snap = (const struct store_snapshot *const *)&m.snapshot;
    struct policy_callforward_config cfcfg = {
        .base = m.base, .dns = m.dns, .tls_client = m.tls_client, .settings = &m.settings,
        .hostname = m.hostname,
    };
    m.callforward = policy_callforward_create(&cfcfg);
    m.antispoof = policy_antispoof_create(m.base, m.dns, &m.settings);
    /* two threads: argon2id takes 64 MiB and a core each (auth.c); MTA-STS
     * fetches open their own store handle (the same user after the drop) */
    m.workers = worker_pool_create(m.base, 2, &err);
    if (m.workers == NULL)
        die("workers", &err);
    /* greylisting: triplets from the store now, changes written by the pool */
    m.greylist = greylist_create(m.base, m.workers, m.settings.database, &m.settings);
    if (greylist_load(m.greylist, m.store, screen_clock_now(&m.settings), &err) < 0)
        log_warn("event=greylist_load_failed reason=\"%s\"", err.msg);
    struct smtp_server_config scfg = {
        .base = m.base, .settings = &m.settings, .tls = m.tls_server, .spool = m.spool,
        .snapshot = snap, .hostname = m.hostname,
        .directory = (const struct directory_index *const *)&m.directory,
        .callforward = m.callforward,
        .workers = m.workers,
        .dns = m.dns,
        .antispoof = m.antispoof,
        .permitted = (const struct permitted_index *const *)&m.permitted,
        .greylist = m.greylist,
        .srs_key = m.srs_key,           /* filled below, once auth has the secret key */
    };
    m.smtp = smtp_server_create(&scfg, &err);
    if (m.smtp == NULL)
        die("smtp_listen", &err);
    struct auth_config acfg = moatd_auth_config(&m);
    m.auth = auth_create(&acfg, &err);
    if (m.auth == NULL)
        die("auth", &err);
    if (auth_derive_key(m.auth, "moat-srs-v1", m.srs_key, sizeof m.srs_key) != 0) {
        error_set(&err, "auth", "cannot derive the SRS key from secret.key");
        die("auth", &err);
    }
    m.dkim_keys = dkim_keyset_load(m.store, m.auth, &err);
    if (m.dkim_keys == NULL)
        log_warn("event=dkim_load_failed reason=\"%s\" action=send_unsigned", err.msg);
    else
        log_info("event=dkim_keys_loaded keys=%zu", dkim_keyset_count(m.dkim_keys));
    /* first start: the initial administrator's one-time password (stderr and
     * STATE/initial-admin-password) */
    m.api_cfg = (struct api_config){
        .base = m.base, .settings = &m.settings, .auth = m.auth, .spool = m.spool,
        .reload_config = moatd_api_reload, .reload_arg = &m,
        .status_json = moatd_api_status, .status_arg = &m,
        .antispoof = m.antispoof,
    };
    m.api_cfg.tracking = m.tracking;   /* issue 11: its path and tracking_flush */
    m.api_cfg.settings_changed = moatd_settings_changed;
    m.api_cfg.settings_changed_arg = &m;
    struct connect_config ccfg = {
        .env = { .base = m.base, .dns = m.dns, .tls_client = m.tls_client,
                 .settings = &m.settings, .spool = m.spool, .hostname = m.hostname,
                 .outbound_seen = moatd_outbound_seen, .outbound_seen_arg = &m,
                 .srs_key = m.srs_key },
        .database = m.settings.database,
        .recheck_min = m.settings.connect_recheck_min,
        .recheck_max = m.settings.connect_recheck_max,
        .reverify_interval = m.settings.connect_reverify_interval,
        .lockdown_mx_hours = m.settings.lockdown_mx_hours,
    };
    m.connect = connect_create(&ccfg, &err);
    if (m.connect == NULL)
        die("connect", &err);
    m.api_cfg.connect = m.connect;
    if (access(m.config_path, R_OK) == 0)
        m.config_real = realpath(m.config_path, NULL);   /* issue 11: moat backup carries it */
    m.api_cfg.config_path = m.config_real;
    struct directory_sync_config dscfg = { .database = m.settings.database, .auth = m.auth };
    m.dsync = directory_sync_create(&dscfg, &err);
    if (m.dsync == NULL)
        die("directory", &err);
    m.api_cfg.directory_sync = m.dsync;
    if (m.settings.n_http_listen > 0) {
        m.api = api_server_create(&m.api_cfg, &err);   /* binds before the drop */
        if (m.api == NULL)
            die("http_listen", &err);
    }
    if (moatd_drop_privileges(&m, &err) < 0)
        die("privileges", &err);

    struct deliver_config dcfg = {
        .base = m.base, .settings = &m.settings, .spool = m.spool, .dns = m.dns,
        .tls_client = m.tls_client, .snapshot = snap, .hostname = m.hostname,
        .dkim_keys = (const struct dkim_keyset *const *)&m.dkim_keys,
        .workers = m.workers,
    };
    m.deliver = deliver_create(&dcfg, &err);
    if (m.deliver == NULL)
        die("deliver", &err);
    if (m.settings.archive) {
        /* issue 8: after the drop (its own store handles), before delivery:
         * recovered messages reach the archive before delivery finishes them */
        struct archive_config arcfg = {
            .base = m.base, .spool = m.spool, .settings = &m.settings,
            .path = m.settings.archive_database, .database = m.settings.database,
        };
        m.archive = archive_create(&arcfg, &err);
        if (m.archive == NULL || archive_start(m.archive, &err) < 0)
            die("archive", &err);
    }
    deliver_start(m.deliver);
    if (connect_start(m.connect, &err) < 0)   /* after the drop: its own store handle */
        die("connect", &err);
    if (directory_sync_start(m.dsync, &err) < 0)   /* after the drop: its own store handle */
        die("directory", &err);
    m.api_cfg.deliver = m.deliver;
    m.api_cfg.archive = m.archive;   /* issue 8: its counters for GET /api/v1/archive/stats */
    moatd_metrics_start(m.spool);   /* issue 11: before /metrics can be scraped */
    if (m.api != NULL && api_server_start(m.api, &err) < 0)
        die("http_listen", &err);

    m.ev_term = evsignal_new(m.base, SIGTERM, moatd_on_signal, &m);
    m.ev_int = evsignal_new(m.base, SIGINT, moatd_on_signal, &m);
    m.ev_hup = evsignal_new(m.base, SIGHUP, moatd_on_signal, &m);
    evsignal_add(m.ev_term, NULL);
    evsignal_add(m.ev_int, NULL);
    evsignal_add(m.ev_hup, NULL);
    if (moatd_reload_start(&m, &err) < 0)
        die("reload", &err);

    if (smtp_server_start(m.smtp) < 0) {
        error_set(&err, "smtp_listen", "cannot start accepting");
        die("smtp_listen", &err);
    }
    char listen[1024] = "";
    for (int i = 0; i < m.settings.n_smtp_listen; i++) {
        size_t l = strlen(listen);
        snprintf(listen + l, sizeof listen - l, "%s%s", i ? "," : "", m.settings.smtp_listen[i]);
    }
    log_info("event=ready smtp=%s http=%s pid=%d", listen,
             m.settings.n_http_listen ? m.settings.http_listen[0] : "-", (int)getpid());
    /* issue 11: listeners bound, store open, privileges dropped */
    notify_sendf("READY=1\nSTATUS=accepting mail on %s", listen);

    event_base_dispatch(m.base);

    /* Answers still owed by the resolver are given now (TEMPFAIL), while
     * every module that asked (Connect checks, delivery) still exists to
     * release what it kept for them. */
    dns_shutdown(m.dns);
    moatd_reload_stop(&m);   /* API workers waiting for a reload give up */

    /* orderly teardown: every module releases what it owns */
    event_free(m.ev_term);
    event_free(m.ev_int);
    event_free(m.ev_hup);
    connect_stop(m.connect);  /* checks waiting for the stopped loop give up */
    directory_sync_stop(m.dsync);   /* API workers waiting for a sync return */
    api_server_free(m.api);   /* before deliver: handlers reach it through the loop */
    directory_sync_free(m.dsync);
    connect_free(m.connect);
    auth_free(m.auth);
    deliver_free(m.deliver);
    smtp_server_free(m.smtp);
    policy_callforward_free(m.callforward);   /* after the sessions: nobody waits any more */
    policy_antispoof_free(m.antispoof);       /* likewise; before dns_free (it cancels queries) */
    /* after the sessions, before the pool: its last changes become a pool job */
    greylist_free(m.greylist);
    /* after deliver and the sessions: their jobs are orphaned, done frees them */
    worker_pool_free(m.workers);
    permitted_index_free(m.permitted);
    directory_index_free(m.directory);
    archive_free(m.archive);   /* issue 8: its batch in flight is marked, then the spool closes */
    /* issue 11: after everything that emits (SMTP, delivery, API, archive):
     * their last events are written */
    tracking_stop(m.tracking);
    spool_close(m.spool);
    dns_free(m.dns);
    SSL_CTX_free(m.tls_server);
    SSL_CTX_free(m.tls_client);
    store_snapshot_free(m.snapshot);
    dkim_keyset_free(m.dkim_keys);
    store_close(m.store);
    event_base_free(m.base);
    libevent_global_shutdown();
    log_info("event=stopped");
    free(m.hostname);
    free(m.config_real);
    settings_free(&m.settings);
    settings_free(&m.file_settings);
    close(m.lock_fd);
    archive_mime_shutdown();   /* after every thread is done (GLib's globals) */
    return 0;
}
