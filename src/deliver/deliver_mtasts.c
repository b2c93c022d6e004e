/*
 * deliver_mtasts.c - MTA-STS (RFC 8461): parsers, the HTTPS fetch, and the
 * delivery-side cache (see deliver_mtasts.h).
 *
 * The cache: mtasts_get looks up TXT _mta-sts.<domain>; a memory entry with
 * the same id that has not expired answers at once (on the next loop turn's
 * DNS callback).  Otherwise the address of mta-sts.<domain> is looked up
 * and a worker thread consults the store's cache (same id, not expired: no
 * fetch), else fetches, parses and stores the policy; when the fetch fails
 * an unexpired stored policy still applies (RFC 8461 5.1).  The result
 * comes back on the loop.  Requests are owned by the cache: mtasts_cancel
 * and mtasts_free orphan them, and the worker's done callback frees an
 * orphan without calling back.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <curl/curl.h>
#include "deliver_mtasts.h"
#include "deliver_mx.h"
#include "../core/worker.h"
#include "../dns/dns.h"
#include "../store/store.h"

#define MTASTS_CACHE_MAX 1024
#define MTASTS_PATH "/.well-known/mta-sts.txt"

const char *mtasts_mode_name(enum mtasts_mode m)
{
    static const char *const names[] = { "none", "testing", "enforce" };
    return (size_t)m < 3 ? names[m] : "?";
}

/* --- parsers --- */

static bool is_wsp(char c)
{
    return c == ' ' || c == '\t';
}

/* field_set - one "key: value" of a policy; -1 with why on a bad value */
static int field_set(struct mtasts_policy *p, const char *key, size_t kl, const char *val,
                     size_t vl, unsigned *seen, char *why, size_t why_size)
{
    if (kl == 7 && memcmp(key, "version", 7) == 0) {
        if (vl != 5 || memcmp(val, "STSv1", 5) != 0) {
            xsnprintf(why, why_size, "version is not STSv1");
            return -1;
        }
        *seen |= 1;
    } else if (kl == 4 && memcmp(key, "mode", 4) == 0) {
        if (*seen & 2)
            return 0;   /* the first one counts */
        if (vl == 7 && memcmp(val, "enforce", 7) == 0)
            p->mode = MTASTS_ENFORCE;
        else if (vl == 7 && memcmp(val, "testing", 7) == 0)
            p->mode = MTASTS_TESTING;
        else if (vl == 4 && memcmp(val, "none", 4) == 0)
            p->mode = MTASTS_NONE;
        else {
            xsnprintf(why, why_size, "mode must be enforce, testing or none");
            return -1;
        }
        *seen |= 2;
    } else if (kl == 7 && memcmp(key, "max_age", 7) == 0) {
        if (*seen & 4)
            return 0;
        int64_t v = 0;
        if (vl == 0 || vl > 10) {
            xsnprintf(why, why_size, "max_age must be 1 to 10 digits");
            return -1;
        }
        for (size_t i = 0; i < vl; i++) {
            if (val[i] < '0' || val[i] > '9') {
                xsnprintf(why, why_size, "max_age must be digits");
                return -1;
            }
            v = v * 10 + (val[i] - '0');
        }
        /* RFC 8461 3.2: up to 31557600; larger values are capped */
        p->max_age = v > MTASTS_MAX_AGE ? MTASTS_MAX_AGE : v;
        *seen |= 4;
    } else if (kl == 2 && memcmp(key, "mx", 2) == 0) {
        if (vl == 0 || vl >= sizeof p->mx[0]) {
            xsnprintf(why, why_size, "an mx value is empty or too long");
            return -1;
        }
        if (p->n_mx < MTASTS_MAX_MX) {
            memcpy(p->mx[p->n_mx], val, vl);
            p->mx[p->n_mx][vl] = '\0';
            p->n_mx++;
        }
    }
    /* other keys: ignored (extensions) */
    return 0;
}

int mtasts_policy_parse(const char *text, size_t len, struct mtasts_policy *out, char *why,
                        size_t why_size)
{
    memset(out, 0, sizeof *out);
    if (len > MTASTS_MAX_POLICY) {
        xsnprintf(why, why_size, "the policy is larger than %d octets", MTASTS_MAX_POLICY);
        return -1;
    }
    unsigned seen = 0;
    size_t i = 0;
    while (i < len) {
        size_t e = i;
        while (e < len && text[e] != '\n')
            e++;
        size_t le = e;
        if (le > i && text[le - 1] == '\r')
            le--;
        /* skip an empty line (a trailing newline) */
        if (le > i) {
            const char *colon = memchr(text + i, ':', le - i);
            if (colon == NULL) {
                xsnprintf(why, why_size, "a line without \"key: value\"");
                return -1;
            }
            size_t kl = (size_t)(colon - (text + i));
            if (kl == 0 || kl > 32) {
                xsnprintf(why, why_size, "a field name is empty or too long");
                return -1;
            }
            const char *v = colon + 1;
            const char *ve = text + le;
            while (v < ve && is_wsp(*v))
                v++;
            while (ve > v && is_wsp(ve[-1]))
                ve--;
            for (const char *c = v; c < ve; c++)
                if ((unsigned char)*c < 0x20 || (unsigned char)*c == 0x7f) {
                    xsnprintf(why, why_size, "a control character in a value");
                    return -1;
                }
            if (field_set(out, text + i, kl, v, (size_t)(ve - v), &seen, why, why_size) < 0)
                return -1;
        }
        i = e + 1;
    }
    if (!(seen & 1)) {
        xsnprintf(why, why_size, "no version field");
        return -1;
    }
    if (!(seen & 2)) {
        xsnprintf(why, why_size, "no mode field");
        return -1;
    }
    if (!(seen & 4)) {
        xsnprintf(why, why_size, "no max_age field");
        return -1;
    }
    if (out->mode != MTASTS_NONE && out->n_mx == 0) {
        xsnprintf(why, why_size, "no mx field");
        return -1;
    }
    return 0;
}

int mtasts_txt_parse(const char *txt, char id[MTASTS_ID_MAX])
{
    const char *p = txt;
    bool first = true, have_id = false;
    id[0] = '\0';
    while (*p) {
        while (is_wsp(*p))
            p++;
        if (*p == '\0')
            break;
        const char *eq = strchr(p, '=');
        const char *semi = strchr(p, ';');
        if (eq == NULL || (semi != NULL && semi < eq))
            return -1;
        const char *v = eq + 1, *ve = semi ? semi : p + strlen(p);
        const char *ke = eq;
        while (ke > p && is_wsp(ke[-1]))
            ke--;
        while (ve > v && is_wsp(ve[-1]))
            ve--;
        size_t kl = (size_t)(ke - p), vl = (size_t)(ve - v);
        if (first) {
            /* RFC 8461 3.1: v=STSv1 comes first */
            if (kl != 1 || *p != 'v' || vl != 5 || memcmp(v, "STSv1", 5) != 0)
                return -1;
            first = false;
        } else if (kl == 2 && memcmp(p, "id", 2) == 0 && !have_id) {
            if (vl == 0 || vl > 32)
                return -1;
            for (size_t i = 0; i < vl; i++)
                if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'z') ||
                      (v[i] >= 'A' && v[i] <= 'Z')))
                    return -1;
            memcpy(id, v, vl);
            id[vl] = '\0';
            have_id = true;
        }
        if (semi == NULL)
            break;
        p = semi + 1;
    }
    return !first && have_id ? 0 : -1;
}

bool mtasts_mx_allowed(const struct mtasts_policy *p, const char *host)
{
    for (size_t i = 0; i < p->n_mx; i++)
        if (deliver_mx_pattern_match(p->mx[i], host))
            return true;
    return false;
}

/* --- the fetch --- */

struct body {
    struct buf b;
    bool too_big;
};

static size_t on_body(char *ptr, size_t size, size_t n, void *arg)
{
    struct body *bd = arg;
    size_t len = size * n;
    if (bd->b.len + len > MTASTS_MAX_POLICY) {
        bd->too_big = true;
        return 0;   /* abort the transfer */
    }
    buf_append(&bd->b, ptr, len);
    return len;
}

int mtasts_fetch(const struct mtasts_fetch_req *r, char **text, size_t *len, char *why,
                 size_t why_size)
{
    char url[600], pin[600];
    int rc = -1;
    struct body bd = { .too_big = false };
    buf_init(&bd.b);
    *text = NULL;
    *len = 0;
    bool v6 = strchr(r->ip, ':') != NULL;
    if (xsnprintf(url, sizeof url, "https://mta-sts.%s:%d" MTASTS_PATH, r->domain, r->port) < 0 ||
        xsnprintf(pin, sizeof pin, "mta-sts.%s:%d:%s%s%s", r->domain, r->port, v6 ? "[" : "",
                  r->ip, v6 ? "]" : "") < 0) {
        xsnprintf(why, why_size, "the domain name is too long");
        return -1;
    }
    CURL *c = curl_easy_init();
    if (c == NULL) {
        xsnprintf(why, why_size, "cannot initialise libcurl");
        return -1;
    }
    /* every name is resolved by Moat's resolver: pin it, never ask the system's */
    struct curl_slist *res = curl_slist_append(NULL, pin);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_RESOLVE, res);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);      /* RFC 8461 3.3: no redirects */
    curl_easy_setopt(c, CURLOPT_PROXY, "");               /* never a proxy from the environment */
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)(r->timeout > 0 ? r->timeout : 30));
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)(r->timeout > 0 ? r->timeout : 30));
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(c, CURLOPT_SSLVERSION,
                     r->tls13 ? CURL_SSLVERSION_TLSv1_3 : CURL_SSLVERSION_TLSv1_2);
    if (r->ca_file && r->ca_file[0])
        curl_easy_setopt(c, CURLOPT_CAINFO, r->ca_file);
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)MTASTS_MAX_POLICY);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &bd);
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    char *ctype = NULL;
    if (cc != CURLE_OK) {
        xsnprintf(why, why_size, "fetching %s: %s", url,
                  bd.too_big ? "the policy is larger than 64 KiB" : curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ctype);
    if (status != 200) {
        xsnprintf(why, why_size, "fetching %s: HTTP %ld", url, status);
        goto out;
    }
    /* RFC 8461 3.2: media type text/plain */
    if (ctype == NULL || strncasecmp(ctype, "text/plain", 10) != 0) {
        xsnprintf(why, why_size, "fetching %s: media type %s, not text/plain", url,
                  ctype ? ctype : "(none)");
        goto out;
    }
    buf_append(&bd.b, "", 1);
    *len = bd.b.len - 1;
    *text = bd.b.data;
    bd.b.data = NULL;
    rc = 0;
out:
    curl_slist_free_all(res);
    curl_easy_cleanup(c);
    buf_free(&bd.b);
    return rc;
}

/* --- the delivery cache --- */

struct mem_entry {
    char domain[256];
    char id[MTASTS_ID_MAX];
    struct mtasts_policy policy;
    int64_t expires;             /* unix seconds */
};

struct mtasts {
    struct dns *dns;
    struct worker_pool *workers;
    const struct moat_settings *settings;
    struct mem_entry *mem;
    size_t n_mem, next_evict;
    struct mtasts_req *live;     /* requests not yet answered */
};

struct mtasts_req {
    struct mtasts *s;
    struct mtasts_req *next, **pprev;
    bool cancelled, in_worker;
    struct dns_query *q;
    char domain[256];
    char id[MTASTS_ID_MAX];      /* from TXT, "" when none */
    char ip[64];
    mtasts_cb cb;
    void *arg;
    /* the worker's inputs and answer */
    char *database, *ca_file;
    int port, timeout;
    bool tls13;
    bool have_policy;
    struct mtasts_policy policy;
    char why[400];
};

static int64_t now_s(void)
{
    return (int64_t)(time_wall_ms() / 1000);
}

struct mtasts *mtasts_create(struct dns *dns, struct worker_pool *workers,
                             const struct moat_settings *settings)
{
    struct mtasts *s = xcalloc(1, sizeof *s);
    s->dns = dns;
    s->workers = workers;
    s->settings = settings;
    s->mem = xcalloc(MTASTS_CACHE_MAX, sizeof *s->mem);
    return s;
}

static void req_unlink(struct mtasts_req *q)
{
    if (q->pprev) {
        *q->pprev = q->next;
        if (q->next)
            q->next->pprev = q->pprev;
        q->pprev = NULL;
        q->next = NULL;
    }
}

static void req_free(struct mtasts_req *q)
{
    req_unlink(q);
    free(q->database);
    free(q->ca_file);
    free(q);
}

void mtasts_cancel(struct mtasts_req *q)
{
    if (q == NULL)
        return;
    if (q->q && q->s) {
        dns_cancel(q->s->dns, q->q);
        q->q = NULL;
    }
    req_unlink(q);
    q->cancelled = true;
    q->s = NULL;
    if (!q->in_worker)
        req_free(q);
    /* else: the worker's done callback frees it */
}

void mtasts_free(struct mtasts *s)
{
    if (s == NULL)
        return;
    while (s->live)
        mtasts_cancel(s->live);
    free(s->mem);
    free(s);
}

static struct mem_entry *mem_find(struct mtasts *s, const char *domain)
{
    for (size_t i = 0; i < s->n_mem; i++)
        if (strcmp(s->mem[i].domain, domain) == 0)
            return &s->mem[i];
    return NULL;
}

static void mem_put(struct mtasts *s, const char *domain, const char *id,
                    const struct mtasts_policy *p)
{
    struct mem_entry *e = mem_find(s, domain);
    if (e == NULL) {
        if (s->n_mem < MTASTS_CACHE_MAX)
            e = &s->mem[s->n_mem++];
        else
            e = &s->mem[s->next_evict++ % MTASTS_CACHE_MAX];
    }
    str_copy(e->domain, sizeof e->domain, domain);
    str_copy(e->id, sizeof e->id, id);
    e->policy = *p;
    e->expires = now_s() + p->max_age;
}

/* answer - call back once and free */
static void answer(struct mtasts_req *q, const struct mtasts_policy *p, const char *why)
{
    mtasts_cb cb = q->cb;
    void *arg = q->arg;
    char w[400];
    str_copy(w, sizeof w, why ? why : "");
    struct mtasts_policy copy;
    if (p)
        copy = *p;
    req_free(q);
    cb(arg, p ? &copy : NULL, w);
}

/* work - on a worker thread: the store's cache, else fetch and store */
static void work(void *arg)
{
    struct mtasts_req *q = arg;
    struct error err = {0};
    struct store *st = store_open(q->database, &err);
    struct store_mta_sts cached = {0};
    bool have_cached = false;
    struct mtasts_policy cp;
    char why[300];
    int64_t now = now_s();
    if (st && store_mta_sts_get(st, q->domain, &cached, &err) == STORE_OK && cached.expires > now &&
        mtasts_policy_parse(cached.policy, strlen(cached.policy), &cp, why, sizeof why) == 0)
        have_cached = true;
    if (have_cached && (q->id[0] == '\0' || strcmp(q->id, cached.id) == 0)) {
        /* RFC 8461 5.1: the same id (or no TXT now): the cached policy stands */
        q->policy = cp;
        q->have_policy = true;
        xsnprintf(q->why, sizeof q->why, "cached policy id %s", cached.id);
        goto out;
    }
    if (q->id[0] == '\0' || q->ip[0] == '\0') {
        xsnprintf(q->why, sizeof q->why, "%s", q->id[0] ? "mta-sts host has no address"
                                                        : "no MTA-STS TXT record");
        goto out;
    }
    char *text = NULL;
    size_t len = 0;
    struct mtasts_fetch_req fr = { q->domain, q->ip, q->port, q->ca_file, q->timeout, q->tls13 };
    if (mtasts_fetch(&fr, &text, &len, why, sizeof why) == 0 &&
        mtasts_policy_parse(text, len, &q->policy, why, sizeof why) == 0) {
        q->have_policy = true;
        xsnprintf(q->why, sizeof q->why, "fetched policy id %s", q->id);
        struct store_mta_sts e = { q->domain, q->id, text, now, now + q->policy.max_age };
        if (st && store_mta_sts_put(st, &e, &err) < 0)
            log_warn("event=mta_sts_cache_write domain=%s error=\"%s\"", q->domain, err.msg);
    } else if (have_cached) {
        q->policy = cp;
        q->have_policy = true;
        xsnprintf(q->why, sizeof q->why, "%s; the cached policy id %s applies until it expires",
                  why, cached.id);
    } else {
        xsnprintf(q->why, sizeof q->why, "%s", why);
    }
    free(text);
out:
    store_mta_sts_clear(&cached);
    store_close(st);
}

static void work_done(void *arg)
{
    struct mtasts_req *q = arg;
    q->in_worker = false;
    if (q->cancelled) {
        req_free(q);
        return;
    }
    log_info("event=mta_sts domain=%s policy=%s mode=%s reason=\"%s\"", q->domain,
             q->have_policy ? "yes" : "no", q->have_policy ? mtasts_mode_name(q->policy.mode) : "-",
             q->why);
    if (q->have_policy) {
        mem_put(q->s, q->domain, q->id, &q->policy);
        answer(q, &q->policy, q->why);
    } else {
        answer(q, NULL, q->why);
    }
}

static void to_worker(struct mtasts_req *q)
{
    const struct moat_settings *set = q->s->settings;
    q->database = xstrdup(set->database ? set->database : "");
    q->ca_file = xstrdup(set->tls_ca_file ? set->tls_ca_file : "");
    q->port = set->mta_sts_port > 0 ? (int)set->mta_sts_port : 443;
    q->timeout = set->mta_sts_fetch_timeout > 0 ? (int)set->mta_sts_fetch_timeout : 30;
    q->tls13 = set->tls_min_version && strcmp(set->tls_min_version, "1.3") == 0;
    q->in_worker = true;
    worker_submit(q->s->workers, work, work_done, q);
}

static void addr_cb(void *arg, const struct dns_result *r)
{
    struct mtasts_req *q = arg;
    q->q = NULL;
    if (r->status == DNS_OK && r->n > 0)
        str_copy(q->ip, sizeof q->ip, r->rr[0].text);
    to_worker(q);
}

static void txt_cb(void *arg, const struct dns_result *r)
{
    struct mtasts_req *q = arg;
    q->q = NULL;
    size_t valid = 0;
    char id[MTASTS_ID_MAX];
    for (size_t i = 0; r->status == DNS_OK && i < r->n; i++)
        if (mtasts_txt_parse(r->rr[i].text, id) == 0 && valid++ == 0)
            str_copy(q->id, sizeof q->id, id);
    if (valid != 1)   /* RFC 8461 3.1: none, or several: no (new) policy */
        q->id[0] = '\0';
    struct mem_entry *e = mem_find(q->s, q->domain);
    if (e && e->expires > now_s() && (q->id[0] == '\0' || strcmp(e->id, q->id) == 0)) {
        answer(q, &e->policy, "cached policy");
        return;
    }
    if (q->id[0] == '\0') {
        to_worker(q);   /* a stored policy may still be valid (a restart) */
        return;
    }
    char host[300];
    xsnprintf(host, sizeof host, "mta-sts.%s", q->domain);
    q->q = dns_query(q->s->dns, host, DNS_T_A, addr_cb, q);
}

struct mtasts_req *mtasts_get(struct mtasts *s, const char *domain, mtasts_cb cb, void *arg)
{
    struct mtasts_req *q = xcalloc(1, sizeof *q);
    q->s = s;
    q->cb = cb;
    q->arg = arg;
    str_copy(q->domain, sizeof q->domain, domain);
    str_lower(q->domain);
    q->next = s->live;
    if (s->live)
        s->live->pprev = &q->next;
    s->live = q;
    q->pprev = &s->live;
    char name[300];
    xsnprintf(name, sizeof name, "_mta-sts.%s", q->domain);
    q->q = dns_query(s->dns, name, DNS_T_TXT, txt_cb, q);
    return q;
}
