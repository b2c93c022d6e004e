/*
 * archive_bench.c - the archive benchmark's in-process part (bench/archive.sh):
 * generate a corpus of N realistic messages, ingest them the way the
 * archive thread does (archive_prepare: extraction, compression, hash; then
 * store_archive_ingest in batches of ARCHIVE_BATCH_MAX, one transaction
 * each), then time a fixed set of searches.
 *
 * usage: archive_bench DB N [QUERIES_PER_TYPE] [SEED]
 *
 * The corpus is deterministic for a seed: RFC 5322 headers (From with a
 * display name, To, Cc, Subject, Date, Message-ID, MIME-Version), a few
 * hundred words of text drawn from a Zipf-distributed vocabulary of
 * pseudo-words, 30% multipart/alternative with an HTML part, 15%
 * multipart/mixed with a base64 attachment (1-16 KiB), senders and
 * recipients from 20,000 external users on 400 domains and 2,000 internal
 * users of corp.example (and eu.corp.example), received times spread over
 * four years, 1% duplicates (the same message arriving again under another
 * queue id).  A few "rare" words occur in about one message in 10,000.
 *
 * Output (stdout): the ingest figures, one line per query type with median
 * and p99 latency and the average match count, the plan of each query type,
 * and the database size; the script formats them.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include "archive/archive.h"
#include "archive/archive_query.h"
#include "store/store_archive.h"
#include "store/store_priv.h"

#define VOCAB 30000
#define EXT_USERS 20000
#define EXT_DOMAINS 400
#define INT_USERS 2000
#define RARE_WORDS 50
#define RARE_EVERY 10007
#define START 1640995200          /* 2022-01-01T00:00:00Z */
#define SPAN (4 * 365 * 86400LL)

static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double unif(void)
{
    return (double)(rnd() >> 11) / 9007199254740992.0;
}

static unsigned below(unsigned n)
{
    return (unsigned)(rnd() % n);
}

static const char *const syl[64] = {
    "ba", "be", "bi", "bo", "ca", "ce", "co", "da", "de", "di", "do", "fa", "fe", "ga", "ge", "go",
    "ha", "he", "hi", "ka", "ke", "ko", "la", "le", "li", "lo", "ma", "me", "mi", "mo", "na", "ne",
    "ni", "no", "pa", "pe", "pi", "po", "ra", "re", "ri", "ro", "sa", "se", "si", "so", "ta", "te",
    "ti", "to", "va", "ve", "vi", "vo", "wa", "we", "xa", "ya", "yo", "za", "ze", "zi", "zo", "lu",
};

static char vocab[VOCAB][12];

static void vocab_init(void)
{
    for (unsigned k = 0; k < VOCAB; k++) {
        unsigned a = k % 64, b = (k / 64) % 64, c = k / 4096;
        if (k < 64)
            snprintf(vocab[k], sizeof vocab[k], "%s%s", syl[a], syl[(a * 7 + 3) % 64]);
        else if (c == 0)
            snprintf(vocab[k], sizeof vocab[k], "%s%s%s", syl[a], syl[b], "n");
        else
            snprintf(vocab[k], sizeof vocab[k], "%s%s%s", syl[a], syl[b], syl[c]);
    }
}

/* zipf - a vocabulary index, P(k) roughly proportional to 1/(k+1) */
static unsigned zipf(void)
{
    unsigned k = (unsigned)(exp(unif() * log((double)VOCAB + 1)) - 1);
    return k < VOCAB ? k : VOCAB - 1;
}

static void ext_user(char *dst, size_t size, unsigned u)
{
    snprintf(dst, size, "user%u@d%u.example.net", u, u % EXT_DOMAINS);
}

static void int_user(char *dst, size_t size, unsigned u)
{
    snprintf(dst, size, "staff%u@%scorp.example", u, u % 4 == 0 ? "eu." : "");
}

/* one generated message and its envelope */
struct msg {
    struct buf raw;
    char sender[96];
    char rcpt[3][96];
    const char *rcpts[3];
    size_t n_rcpts;
    const char *direction;
    int64_t received;
};

static void words(struct buf *b, unsigned n, unsigned per_line, uint64_t i)
{
    for (unsigned w = 0; w < n; w++) {
        buf_append_str(b, vocab[zipf()]);
        buf_append_str(b, (w + 1) % per_line == 0 ? "\r\n" : " ");
    }
    if (i % RARE_EVERY < RARE_WORDS)
        buf_printf(b, " rare%03uqx", (unsigned)(i % RARE_EVERY));
    buf_append_str(b, "\r\n");
}

static void base64(struct buf *b, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 57) {
        for (size_t j = i; j < n && j < i + 57; j += 3) {
            uint32_t v = (uint32_t)rnd() & 0xffffff;
            char o[4] = { tab[v >> 18], tab[(v >> 12) & 63], tab[(v >> 6) & 63], tab[v & 63] };
            buf_append(b, o, 4);
        }
        buf_append_str(b, "\r\n");
    }
}

/* gen - message i: the same i (and seed) always gives the same octets */
static void gen(struct msg *m, uint64_t i, uint64_t n_total, uint64_t seed)
{
    rng_state = seed * 1000003 + i;
    buf_reset(&m->raw);
    unsigned kind = below(10);
    bool outbound = kind >= 6 && kind < 9, internal = kind == 9;
    m->direction = internal ? "internal" : outbound ? "outbound" : "inbound";
    char from_name[64];
    if (outbound || internal) {
        unsigned u = below(INT_USERS);
        int_user(m->sender, sizeof m->sender, u);
        snprintf(from_name, sizeof from_name, "Staff Member %u", u);
    } else {
        unsigned u = (unsigned)(pow(unif(), 2) * EXT_USERS);     /* some senders write a lot */
        ext_user(m->sender, sizeof m->sender, u);
        snprintf(from_name, sizeof from_name, "External Person %u", u);
    }
    m->n_rcpts = 1 + below(3);
    for (size_t r = 0; r < m->n_rcpts; r++) {
        if (outbound)
            ext_user(m->rcpt[r], sizeof m->rcpt[r], below(EXT_USERS));
        else
            int_user(m->rcpt[r], sizeof m->rcpt[r], below(INT_USERS));
        m->rcpts[r] = m->rcpt[r];
    }
    m->received = START + (int64_t)((double)SPAN * (double)i / (double)n_total) + below(60);
    char date[64];
    time_rfc5322(date, sizeof date, (time_t)(m->received - below(300)));
    struct buf *b = &m->raw;
    buf_printf(b, "Received: from mx.example.net (mx.example.net [192.0.2.%u]) by moat.corp.example"
               "\r\n\twith ESMTPS id Q%llu; %s\r\n", below(250) + 1, (unsigned long long)i, date);
    buf_printf(b, "From: \"%s\" <%s>\r\n", from_name, m->sender);
    buf_printf(b, "To: %s", m->rcpt[0]);
    for (size_t r = 1; r < m->n_rcpts; r++)
        buf_printf(b, ", %s", m->rcpt[r]);
    buf_append_str(b, "\r\n");
    if (below(4) == 0) {
        char cc[96];
        int_user(cc, sizeof cc, below(INT_USERS));
        buf_printf(b, "Cc: %s\r\n", cc);
    }
    buf_printf(b, "Subject: %s", below(3) == 0 ? "Re: " : "");
    for (unsigned w = 0, n = 3 + below(5); w < n; w++)
        buf_printf(b, "%s%s", w ? " " : "", vocab[zipf()]);
    buf_printf(b, "\r\nDate: %s\r\nMessage-ID: <%llu.%llx@%s>\r\nMIME-Version: 1.0\r\n", date,
               (unsigned long long)i, (unsigned long long)rnd(), strchr(m->sender, '@') + 1);
    unsigned n_words = 100 + below(300), shape = below(100);
    if (shape < 30) {
        buf_append_str(b, "Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n"
                          "--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n");
        size_t mark = b->len;
        words(b, n_words, 12, i);
        char *text = xstrndup(b->data + mark, b->len - mark);
        buf_append_str(b, "--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
                          "<html><body><p>");
        for (char *p = text; *p; p++)
            if (*p == '\r')
                buf_append_str(b, "<br>");
            else if (*p != '\n')
                buf_append(b, p, 1);
        free(text);
        buf_append_str(b, "</p></body></html>\r\n--alt--\r\n");
    } else if (shape < 45) {
        static const char *const ext[] = { "pdf", "jpg", "xlsx", "docx" };
        buf_append_str(b, "Content-Type: multipart/mixed; boundary=\"mix\"\r\n\r\n"
                          "--mix\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n");
        words(b, n_words, 12, i);
        buf_printf(b, "--mix\r\nContent-Type: application/octet-stream\r\n"
                   "Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; "
                   "filename=\"%s-%u.%s\"\r\n\r\n", vocab[zipf()], below(1000), ext[below(4)]);
        base64(b, 1024 + below(15 * 1024));
        buf_append_str(b, "--mix--\r\n");
    } else {
        buf_append_str(b, "Content-Type: text/plain; charset=utf-8\r\n\r\n");
        words(b, n_words, 12, i);
    }
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* --- queries --- */

struct qtype {
    const char *name;
    void (*make)(char *q, size_t size, char *owner, size_t osize);
};

static void month(char *dst, size_t size, int64_t t)
{
    struct tm tm;
    time_t tt = (time_t)t;
    gmtime_r(&tt, &tm);
    strftime(dst, size, "%Y-%m-01", &tm);
}

static int64_t any_time(void) { return START + (int64_t)(unif() * (double)SPAN); }

static void q_from_addr(char *q, size_t n, char *o, size_t on)
{
    (void)o; (void)on;
    char a[96];
    ext_user(a, sizeof a, (unsigned)(pow(unif(), 2) * EXT_USERS));
    snprintf(q, n, "from:%s", a);
}
static void q_from_domain(char *q, size_t n, char *o, size_t on)
{
    (void)o; (void)on;
    snprintf(q, n, "from:d%u.example.net", below(EXT_DOMAINS));
}
static void q_to_addr(char *q, size_t n, char *o, size_t on)
{
    (void)o; (void)on;
    char a[96];
    int_user(a, sizeof a, below(INT_USERS));
    snprintf(q, n, "to:%s", a);
}
static void q_subject(char *q, size_t n, char *o, size_t on)
{
    (void)o; (void)on;
    snprintf(q, n, "subject:%s", vocab[20 + below(200)]);
}
static void q_rare(char *q, size_t n, char *o, size_t on)
{
    (void)o; (void)on;
    snprintf(q, n, "rare%03uqx", below(RARE_WORDS));
}
static void q_common(char *q, size_t n, char *o, size_t on)
{
    (void)o; (void)on;
    snprintf(q, n, "%s", vocab[below(10)]);
}
static void q_two_words(char *q, size_t n, char *o, size_t on)
{
    (void)o; (void)on;
    snprintf(q, n, "%s %s", vocab[100 + below(400)], vocab[100 + below(400)]);
}
static void q_dates(char *q, size_t n, char *o, size_t on)
{
    (void)o; (void)on;
    char a[16], b[16];
    int64_t t = any_time();
    month(a, sizeof a, t);
    month(b, sizeof b, t + 31 * 86400);
    snprintf(q, n, "after:%s before:%s", a, b);
}
static void q_combo(char *q, size_t n, char *o, size_t on)
{
    (void)o; (void)on;
    char a[16];
    month(a, sizeof a, any_time());
    snprintf(q, n, "from:d%u.example.net %s after:%s", below(EXT_DOMAINS), vocab[below(50)], a);
}
static void q_owner(char *q, size_t n, char *o, size_t on)
{
    int_user(o, on, below(INT_USERS));
    snprintf(q, n, "%s", vocab[below(50)]);
}
static void q_attach(char *q, size_t n, char *o, size_t on)
{
    (void)o; (void)on;
    char a[16], b[16];
    int64_t t = any_time();
    month(a, sizeof a, t);
    month(b, sizeof b, t + 31 * 86400);
    snprintf(q, n, "has:attachment after:%s before:%s", a, b);
}

static void q_own_domain(char *q, size_t n, char *o, size_t on)
{
    (void)o; (void)on;
    snprintf(q, n, "to:corp.example");      /* most messages: dense */
}
static void q_owner_all(char *q, size_t n, char *o, size_t on)
{
    int_user(o, on, below(INT_USERS));
    snprintf(q, n, "%s", "");               /* an end user's own mail, newest first */
}

static const struct qtype qtypes[] = {
    { "from:address", q_from_addr },
    { "from:domain", q_from_domain },
    { "to:address", q_to_addr },
    { "subject:word", q_subject },
    { "text rare", q_rare },
    { "text common", q_common },
    { "text two words", q_two_words },
    { "after:+before: (month)", q_dates },
    { "from:dom word after:", q_combo },
    { "owner + word", q_owner },
    { "has:attachment month", q_attach },
    { "to:own domain", q_own_domain },
    { "owner, no words", q_owner_all },
};

static long long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: archive_bench DB N [QUERIES_PER_TYPE] [SEED]\n");
        return 2;
    }
    const char *path = argv[1];
    uint64_t n = strtoull(argv[2], NULL, 10);
    unsigned reps = argc > 3 ? (unsigned)atoi(argv[3]) : 50;
    uint64_t seed = argc > 4 ? strtoull(argv[4], NULL, 10) : 1;
    log_set_level(LOG_WARN);
    vocab_init();
    archive_mime_init();

    struct error err = {0};
    struct store_archive *sa = store_archive_open(path, &err);
    if (sa == NULL) {
        fprintf(stderr, "archive_bench: %s\n", err.msg);
        return 1;
    }
    struct archive_limits lim = ARCHIVE_LIMITS_DEFAULT;
    struct msg *m = xcalloc(ARCHIVE_BATCH_MAX, sizeof *m);
    struct archive_prepared *prep = xcalloc(ARCHIVE_BATCH_MAX, sizeof *prep);
    struct store_archive_item *items = xcalloc(ARCHIVE_BATCH_MAX, sizeof *items);
    char (*qids)[24] = xcalloc(ARCHIVE_BATCH_MAX, sizeof *qids);
    for (size_t k = 0; k < ARCHIVE_BATCH_MAX; k++)
        buf_init(&m[k].raw);
    double t_gen = 0, t_prep = 0, t_store = 0;
    uint64_t octets = 0, dups = 0, done = 0;
    double report = now_s();
    /* N = 0: only the queries, against what DB already holds */
    for (uint64_t i = 0; i < n; i += ARCHIVE_BATCH_MAX) {
        size_t bn = n - i < ARCHIVE_BATCH_MAX ? (size_t)(n - i) : ARCHIVE_BATCH_MAX;
        double t0 = now_s();
        for (size_t k = 0; k < bn; k++) {
            uint64_t idx = i + k;
            /* 1%: an earlier message arrives again (journal copy, second recipient) */
            uint64_t src = idx > 1000 && idx % 100 == 7 ? idx - 1 - idx % 997 : idx;
            gen(&m[k], src, n, seed);
            if (src != idx)
                m[k].received = START + (int64_t)((double)SPAN * (double)idx / (double)n);
            snprintf(qids[k], sizeof qids[k], "B%010llu", (unsigned long long)idx);
            octets += m[k].raw.len;
        }
        double t1 = now_s();
        for (size_t k = 0; k < bn; k++) {
            struct archive_input in = {
                .qid = qids[k], .received = m[k].received, .direction = m[k].direction,
                .client_addr = "192.0.2.1", .sender = m[k].sender, .rcpts = m[k].rcpts,
                .n_rcpts = m[k].n_rcpts, .data = m[k].raw.data, .len = m[k].raw.len,
            };
            if (archive_prepare(&in, &lim, NULL, NULL, &prep[k], &err) < 0) {
                fprintf(stderr, "archive_bench: archive_prepare: %s\n", err.msg);
                return 1;
            }
            items[k] = prep[k].item;
        }
        double t2 = now_s();
        enum store_archive_outcome out[ARCHIVE_BATCH_MAX];
        if (store_archive_ingest(sa, items, bn, out, NULL, &err) != STORE_OK) {
            fprintf(stderr, "archive_bench: ingest: %s\n", err.msg);
            return 1;
        }
        double t3 = now_s();
        for (size_t k = 0; k < bn; k++) {
            dups += out[k] == STORE_ARCHIVE_DUPLICATE;
            archive_prepared_clear(&prep[k]);
        }
        t_gen += t1 - t0;
        t_prep += t2 - t1;
        t_store += t3 - t2;
        done += bn;
        if (t3 - report > 30) {
            fprintf(stderr, "archive_bench: %llu of %llu ingested, %.0f msg/s\n",
                    (unsigned long long)done, (unsigned long long)n,
                    (double)done / (t_prep + t_store));
            report = t3;
        }
    }
    double t_ingest = t_prep + t_store;
    if (n > 0) {
    printf("ingest messages %llu\n", (unsigned long long)n);
    printf("ingest duplicates %llu\n", (unsigned long long)dups);
    printf("ingest octets %llu\n", (unsigned long long)octets);
    printf("ingest seconds %.2f (prepare %.2f, store %.2f; generating the corpus %.2f, not counted)\n",
           t_ingest, t_prep, t_store, t_gen);
    printf("ingest msg/s %.0f\n", (double)n / t_ingest);
    printf("ingest MB/s %.2f\n", (double)octets / 1e6 / t_ingest);
    printf("store msg/s %.0f\n", (double)n / t_store);
    }
    for (size_t k = 0; k < ARCHIVE_BATCH_MAX; k++)
        buf_free(&m[k].raw);
    free(m);
    free(prep);
    free(items);
    free(qids);

    /* queries: each type reps times with varied parameters, after one warm-up */
    rng_state = seed * 7919;
    double *lat = xcalloc(reps, sizeof *lat);
    for (size_t t = 0; t < sizeof qtypes / sizeof *qtypes; t++) {
        double hits = 0;
        char q[256], owner[96], example[400] = "";
        for (unsigned r = 0; r <= reps; r++) {
            owner[0] = '\0';
            qtypes[t].make(q, sizeof q, owner, sizeof owner);
            struct store_archive_query sq;
            if (archive_query_parse(q, &sq, &err) < 0) {
                fprintf(stderr, "archive_bench: \"%s\": %s\n", q, err.msg);
                return 1;
            }
            struct store_archive_scope scope = { .owner = owner[0] ? owner : NULL,
                                                 .snippets = sq.n_text > 0 };
            struct store_archive_hit *h;
            size_t nh, total;
            double a = now_s();
            if (store_archive_search(sa, &sq, &scope, 0, 50, 10000, &h, &nh, &total, &err) !=
                STORE_OK) {
                fprintf(stderr, "archive_bench: search \"%s\": %s\n", q, err.msg);
                return 1;
            }
            double b = now_s();
            store_archive_hits_free(h, nh);
            if (r == 0) {       /* warm-up; its plan is printed */
                char *plan;
                if (store_archive_explain(sa, &sq, &scope, &plan, &err) == STORE_OK) {
                    for (char *p = strtok(plan, "\n"); p; p = strtok(NULL, "\n"))
                        printf("plan %s | %s\n", qtypes[t].name, p);
                    free(plan);
                }
                snprintf(example, sizeof example, "%s%s%s", q, owner[0] ? " owner=" : "", owner);
            } else {
                lat[r - 1] = (b - a) * 1000;
                hits += (double)total;
            }
            archive_query_clear(&sq);
        }
        qsort(lat, reps, sizeof *lat, cmp_double);
        size_t p99 = (size_t)ceil(0.99 * reps) - 1;
        printf("query %s|%.2f|%.2f|%.0f|%s\n", qtypes[t].name, lat[reps / 2], lat[p99],
               hits / reps, example);
    }
    free(lat);
    struct store_archive_stats st;
    double s0 = now_s();
    if (store_archive_stats(sa, &st, &err) == STORE_OK)
        printf("stats messages %llu arrivals %llu bytes %llu stored %llu (store_archive_stats "
               "%.0f ms)\n", (unsigned long long)st.messages, (unsigned long long)st.arrivals,
               (unsigned long long)st.bytes, (unsigned long long)st.stored_bytes,
               (now_s() - s0) * 1000);
    store_archive_close(sa);
    char wal[4096];
    snprintf(wal, sizeof wal, "%s-wal", path);
    printf("db bytes %lld\n", file_size(path) + file_size(wal));
    archive_mime_shutdown();
    return 0;
}
