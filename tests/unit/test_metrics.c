/*
 * test_metrics.c - the metrics registry (metrics.c): label values and the
 * "other" slot, histogram buckets and sums, the tracking-event mapping, the
 * exposition parsed back line by line, and increments from many threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <pthread.h>
#include <netinet/in.h>
#include "core/cidr.h"
#include "core/core.h"
#include "core/metrics.h"
#include "core/track.h"

/* --- a parser of the text exposition (version 0.0.4) --- */

struct sample {
    char series[256];     /* name{labels} as rendered */
    char name[128];
    double value;
};

/* parse_name - [a-zA-Z_:][a-zA-Z0-9_:]*; length or 0 */
static size_t parse_name(const char *p)
{
    size_t i = 0;
    while ((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') || p[i] == '_' ||
           p[i] == ':' || (i > 0 && p[i] >= '0' && p[i] <= '9'))
        i++;
    return i;
}

/* parse_labels - {k="v",...}: length, or 0 when malformed */
static size_t parse_labels(const char *p)
{
    size_t i = 1;
    if (p[0] != '{')
        return 0;
    while (p[i] != '}') {
        size_t n = parse_name(p + i);
        if (n == 0 || p[i + n] != '=' || p[i + n + 1] != '"')
            return 0;
        i += n + 2;
        while (p[i] != '"') {
            if (p[i] == '\0' || p[i] == '\n')
                return 0;
            i += p[i] == '\\' ? 2 : 1;
        }
        i++;
        if (p[i] == ',')
            i++;
        else if (p[i] != '}')
            return 0;
    }
    return i + 1;
}

/* parse - every line: "# HELP n text", "# TYPE n type" (before its samples),
 * or "name{labels} value"; fails the test on anything else */
static struct sample *parse(const char *text, size_t *count)
{
    struct sample *out = NULL;
    size_t n = 0;
    char typed[128] = "";
    const char *line = text;
    while (*line != '\0') {
        const char *end = strchr(line, '\n');
        assert_non_null(end);   /* every line ends with \n */
        if (strncmp(line, "# HELP ", 7) == 0) {
            assert_true(parse_name(line + 7) > 0);
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            size_t k = parse_name(line + 7);
            assert_true(k > 0 && k < sizeof typed);
            memcpy(typed, line + 7, k);
            typed[k] = '\0';
            const char *t = line + 7 + k + 1;
            assert_true(strncmp(t, "counter\n", 8) == 0 || strncmp(t, "gauge\n", 6) == 0 ||
                        strncmp(t, "histogram\n", 10) == 0);
        } else {
            size_t k = parse_name(line);
            assert_true(k > 0);
            size_t l = line[k] == '{' ? parse_labels(line + k) : 0;
            assert_true(line[k] != '{' || l > 0);
            assert_int_equal(line[k + l], ' ');
            /* the sample belongs to the family last typed */
            assert_int_equal(strncmp(line, typed, strlen(typed)), 0);
            char *vend;
            double v = strtod(line + k + l + 1, &vend);
            assert_ptr_equal(vend, end);
            out = realloc(out, (n + 1) * sizeof *out);
            assert_non_null(out);
            assert_true(k + l < sizeof out[n].series);
            memcpy(out[n].series, line, k + l);
            out[n].series[k + l] = '\0';
            memcpy(out[n].name, line, k);
            out[n].name[k] = '\0';
            out[n].value = v;
            n++;
        }
        line = end + 1;
    }
    *count = n;
    return out;
}

/* scrape - render and parse */
static struct sample *scrape(size_t *n)
{
    struct buf b;
    buf_init(&b);
    metrics_render(&b);
    struct sample *s = parse(buf_cstr(&b), n);
    buf_free(&b);
    return s;
}

/* value - the sample named series, -1 when absent */
static double value(const char *series)
{
    size_t n;
    struct sample *s = scrape(&n);
    double v = -1;
    for (size_t i = 0; i < n; i++)
        if (strcmp(s[i].series, series) == 0)
            v = s[i].value;
    free(s);
    return v;
}

static int setup(void **state)
{
    metrics_reset();
    return 0;
}

/* --- tests --- */

static void test_zero_series_present(void **state)
{
    size_t n;
    struct sample *s = scrape(&n);
    size_t rejections = 0, other = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(s[i].name, "moat_smtp_rejections_total") == 0)
            rejections++;
        if (strstr(s[i].series, "\"other\"") != NULL)
            other++;
        if (strcmp(s[i].name, "moat_start_time_seconds") != 0)
            assert_true(s[i].value == 0);
    }
    free(s);
    /* every known stage x reason (6 x 17) from the start; "other" only once used */
    assert_int_equal(rejections, 6 * 17);
    assert_int_equal(other, 0);
    assert_true(value("moat_smtp_transactions_total{role=\"inbound\",outcome=\"accepted\"}") == 0);
    assert_true(value("moat_deliveries_total{role=\"dsn\",result=\"failed\"}") == 0);
    assert_true(value("moat_smtp_connections_total") == 0);
}

static void test_labels_and_other(void **state)
{
    metrics_inc(M_DNS_QUERIES_TOTAL, (const char *[]){ "nxdomain" });
    metrics_add(M_DNS_QUERIES_TOTAL, (const char *[]){ "nxdomain" }, 4);
    metrics_inc(M_DNS_QUERIES_TOTAL, (const char *[]){ "refused-by-martians" });
    metrics_inc(M_DNS_QUERIES_TOTAL, (const char *[]){ NULL });
    metrics_inc(M_REJECTIONS_TOTAL, (const char *[]){ "rcpt", "no_such_check" });
    metrics_inc(M_REJECTIONS_TOTAL, (const char *[]){ "rcpt", "recipient_validation" });
    assert_true(value("moat_dns_queries_total{result=\"nxdomain\"}") == 5);
    assert_true(value("moat_dns_queries_total{result=\"other\"}") == 2);
    assert_true(value("moat_dns_queries_total{result=\"ok\"}") == 0);
    assert_true(value("moat_smtp_rejections_total{stage=\"rcpt\",reason=\"other\"}") == 1);
    assert_true(value("moat_smtp_rejections_total{stage=\"rcpt\",reason=\"recipient_validation\"}") == 1);
    assert_true(value("moat_smtp_rejections_total{stage=\"mail\",reason=\"recipient_validation\"}") == 0);
    /* a gauge: set, and a provider wins over the cell */
    metrics_set(M_DIRECTORY_USERS, 42);
    assert_true(value("moat_directory_users") == 42);
    metrics_set(M_DIRECTORY_USERS, -3);
    assert_true(value("moat_directory_users") == -3);
}

static int64_t seven(void *arg)
{
    return *(int64_t *)arg;
}

static void test_gauge_provider(void **state)
{
    int64_t v = 7;
    metrics_set_gauge_fn(M_QUEUE_MESSAGES, seven, &v);
    assert_true(value("moat_queue_messages") == 7);
    v = 9;
    assert_true(value("moat_queue_messages") == 9);
    metrics_set_gauge_fn(M_QUEUE_MESSAGES, NULL, NULL);
    assert_true(value("moat_queue_messages") == 0);
}

static void test_histogram(void **state)
{
    /* le is inclusive: 0.005 lands in the first bucket, 0.0051 in the next */
    metrics_observe(M_DELIVERY_LATENCY_SECONDS, 0.005);
    metrics_observe(M_DELIVERY_LATENCY_SECONDS, 0.0051);
    metrics_observe(M_DELIVERY_LATENCY_SECONDS, 2);
    metrics_observe(M_DELIVERY_LATENCY_SECONDS, 3600);   /* beyond 600: +Inf only */
    metrics_observe(M_DELIVERY_LATENCY_SECONDS, -1);     /* ignored */
    assert_true(value("moat_delivery_latency_seconds_bucket{le=\"0.005\"}") == 1);
    assert_true(value("moat_delivery_latency_seconds_bucket{le=\"0.01\"}") == 2);
    assert_true(value("moat_delivery_latency_seconds_bucket{le=\"1\"}") == 2);
    assert_true(value("moat_delivery_latency_seconds_bucket{le=\"2.5\"}") == 3);
    assert_true(value("moat_delivery_latency_seconds_bucket{le=\"600\"}") == 3);
    assert_true(value("moat_delivery_latency_seconds_bucket{le=\"+Inf\"}") == 4);
    assert_true(value("moat_delivery_latency_seconds_count") == 4);
    double sum = value("moat_delivery_latency_seconds_sum");
    assert_true(sum > 3602.0100 && sum < 3602.0102);
    /* sizes: integer bounds, no exponent */
    metrics_observe(M_MESSAGE_SIZE_BYTES, 1024);
    metrics_observe(M_MESSAGE_SIZE_BYTES, 1048577);
    assert_true(value("moat_message_size_bytes_bucket{le=\"1024\"}") == 1);
    assert_true(value("moat_message_size_bytes_bucket{le=\"1048576\"}") == 1);
    assert_true(value("moat_message_size_bytes_bucket{le=\"4194304\"}") == 2);
    assert_true(value("moat_message_size_bytes_bucket{le=\"67108864\"}") == 2);
    assert_true(value("moat_message_size_bytes_sum") == 1049601);
    assert_true(value("moat_dns_latency_seconds_bucket{le=\"0.001\"}") == 0);
}

static void emit(enum track_kind k, enum track_result r, enum track_role role, const char *stage,
                 const char *check)
{
    struct track_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = k;
    ev.result = r;
    ev.role = role;
    ev.stage = stage;
    ev.check = check;
    ev.txn = 1;
    track_emit(&ev);
}

static void test_track_mapping(void **state)
{
    /* one accepted message: MAIL, two RCPT (one refused), DATA, QUEUED */
    emit(TRACK_MAIL, TRACK_ACCEPTED, TRACK_ROLE_INBOUND, "mail", NULL);
    emit(TRACK_RCPT, TRACK_REJECTED, TRACK_ROLE_INBOUND, "rcpt", "recipient_validation");
    emit(TRACK_RCPT, TRACK_ACCEPTED, TRACK_ROLE_INBOUND, "rcpt", NULL);
    emit(TRACK_DATA, TRACK_ACCEPTED, TRACK_ROLE_INBOUND, "content", NULL);
    struct track_event q;
    memset(&q, 0, sizeof q);
    q.kind = TRACK_QUEUED;
    q.role = TRACK_ROLE_INBOUND;
    q.size = 2000;
    track_emit(&q);
    /* one refused at the content stage, one at MAIL (protocol, role unknown) */
    emit(TRACK_DATA, TRACK_REJECTED, TRACK_ROLE_INBOUND, "content", "dmarc");
    emit(TRACK_MAIL, TRACK_TEMPFAILED, TRACK_ROLE_UNKNOWN, NULL, NULL);
    assert_true(value("moat_smtp_transactions_total{role=\"inbound\",outcome=\"accepted\"}") == 1);
    assert_true(value("moat_smtp_transactions_total{role=\"inbound\",outcome=\"rejected\"}") == 1);
    assert_true(value("moat_smtp_transactions_total{role=\"unknown\",outcome=\"tempfailed\"}") == 1);
    assert_true(value("moat_smtp_rejections_total{stage=\"rcpt\",reason=\"recipient_validation\"}") == 1);
    assert_true(value("moat_smtp_rejections_total{stage=\"content\",reason=\"dmarc\"}") == 1);
    assert_true(value("moat_smtp_rejections_total{stage=\"mail\",reason=\"protocol\"}") == 1);
    assert_true(value("moat_message_size_bytes_bucket{le=\"4096\"}") == 1);

    /* a refused connection (txn 0) */
    struct track_event c;
    memset(&c, 0, sizeof c);
    c.kind = TRACK_CONNECT;
    c.result = TRACK_TEMPFAILED;
    track_emit(&c);
    c.txn = 3;   /* the CONNECT of a transaction is not a refusal of the connection */
    track_emit(&c);
    assert_true(value("moat_smtp_connections_refused_total") == 1);

    /* delivery: delivered over TLS after 1.5 s, deferred without a connection, failed plain */
    struct track_event a;
    memset(&a, 0, sizeof a);
    a.kind = TRACK_ATTEMPT;
    a.role = TRACK_ROLE_INBOUND;
    a.result = TRACK_DELIVERED;
    a.remote = "mx[127.0.0.1]:25";
    a.tls = "TLSv1.3 TLS_AES_256_GCM_SHA384 verified";
    a.latency_ms = 1500;
    track_emit(&a);
    a.result = TRACK_DEFERRED;
    a.remote = "";
    a.tls = NULL;
    track_emit(&a);
    a.result = TRACK_FAILED;
    a.role = TRACK_ROLE_DSN;
    a.remote = "mx[127.0.0.1]:25";
    a.tls = "none";
    track_emit(&a);
    a.kind = TRACK_BOUNCED;
    track_emit(&a);
    assert_true(value("moat_deliveries_total{role=\"inbound\",result=\"delivered\"}") == 1);
    assert_true(value("moat_deliveries_total{role=\"inbound\",result=\"deferred\"}") == 1);
    assert_true(value("moat_deliveries_total{role=\"dsn\",result=\"failed\"}") == 1);
    assert_true(value("moat_tls_outbound_total{result=\"tls\"}") == 1);
    assert_true(value("moat_tls_outbound_total{result=\"plain\"}") == 1);
    assert_true(value("moat_delivery_latency_seconds_bucket{le=\"1\"}") == 0);
    assert_true(value("moat_delivery_latency_seconds_bucket{le=\"2.5\"}") == 1);
    assert_true(value("moat_bounces_total") == 1);

    emit(TRACK_HELD, TRACK_NONE, TRACK_ROLE_INBOUND, "content", "rspamd");
    emit(TRACK_RELEASED, TRACK_NONE, TRACK_ROLE_INBOUND, NULL, NULL);
    assert_true(value("moat_held_total{check=\"rspamd\"}") == 1);
    assert_true(value("moat_released_total") == 1);
}

#define LIST_MAX 4

/* metrics_allow's syntax (cidr_list_parse) and what a parsed list contains */
static void test_metrics_allow_list(void **state)
{
    static const struct { const char *in; int n; } cases[] = {
        { "127.0.0.0/8,::1", 2 },
        { " 10.0.0.0/8 , 2001:db8::/32 ,192.0.2.7 ", 3 },
        { "", 0 },
        { "127.0.0.0/8,", -1 },          /* an empty item */
        { ",127.0.0.0/8", -1 },
        { "127.0.0.0/8,,::1", -1 },
        { "10.0.0.1/33", -1 },
        { "10.0.0.1/8", -1 },             /* host bits beyond the prefix */
        { "localhost", -1 },
    };
    struct cidr c[LIST_MAX];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = 99;
        struct error err;
        memset(&err, 0, sizeof err);
        int rc = cidr_list_parse(cases[i].in, c, LIST_MAX, &n, &err);
        if (cases[i].n < 0) {
            assert_int_equal(rc, -1);
            assert_string_equal(err.field, "cidr");
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(n, (size_t)cases[i].n);
        }
    }
    size_t n;
    struct error err;
    assert_int_equal(cidr_list_parse("127.0.0.0/8,::1", c, LIST_MAX, &n, &err), 0);
    int fam;
    unsigned char a[16];
    assert_int_equal(cidr_addr_from_text("127.0.0.2", &fam, a), 0);
    assert_true(cidr_contains_addr(&c[0], fam, a));
    assert_int_equal(cidr_addr_from_text("::1", &fam, a), 0);
    assert_false(cidr_contains_addr(&c[0], fam, a));
    assert_true(cidr_contains_addr(&c[1], fam, a));
    /* more items than room */
    assert_int_equal(cidr_list_parse("10.0.0.0/8,::1", c, 1, &n, &err), -1);
}

#define THREADS 8
#define PER_THREAD 100000

static void *hammer(void *arg)
{
    for (int i = 0; i < PER_THREAD; i++) {
        metrics_inc(M_DELIVERIES_TOTAL, (const char *[]){ "outbound", "delivered" });
        metrics_observe(M_DNS_LATENCY_SECONDS, 0.002);
    }
    return arg;
}

static void test_threads(void **state)
{
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, NULL), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    assert_true(value("moat_deliveries_total{role=\"outbound\",result=\"delivered\"}") ==
                THREADS * PER_THREAD);
    assert_true(value("moat_dns_latency_seconds_count") == THREADS * PER_THREAD);
    assert_true(value("moat_dns_latency_seconds_bucket{le=\"0.001\"}") == 0);
    assert_true(value("moat_dns_latency_seconds_bucket{le=\"0.0025\"}") == THREADS * PER_THREAD);
    double sum = value("moat_dns_latency_seconds_sum");
    assert_true(sum > 1599.999 && sum < 1600.001);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_zero_series_present, setup),
        cmocka_unit_test_setup(test_labels_and_other, setup),
        cmocka_unit_test_setup(test_gauge_provider, setup),
        cmocka_unit_test_setup(test_histogram, setup),
        cmocka_unit_test_setup(test_track_mapping, setup),
        cmocka_unit_test_setup(test_threads, setup),
        cmocka_unit_test(test_metrics_allow_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
