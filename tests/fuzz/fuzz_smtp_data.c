/*
 * fuzz_smtp_data.c - libFuzzer target for the DATA reader
 * (src/smtp/smtp_data.c).  The first octet picks a chunk size; the rest is
 * fed in chunks of that size and, separately, all at once; both runs must
 * agree (output, events, consumed octets), the output must never hold a
 * bare CR or LF, and the end of data must be a real CRLF "." CRLF.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "smtp/smtp_data.h"

static size_t run(const char *in, size_t len, size_t step, struct buf *out, unsigned *events)
{
    static const struct smtp_data_limits lim = {
        .max_line = 80, .max_size = 4096, .max_header = 512, .max_received = 3,
    };
    struct smtp_data d;
    smtp_data_init(&d, &lim);
    size_t used = 0;
    while (used < len && !smtp_data_done(&d)) {
        size_t n = len - used < step ? len - used : step;
        size_t k = smtp_data_feed(&d, in + used, n, out);
        if (k > n)
            abort();
        used += k;
        if (k < n && !smtp_data_done(&d))
            abort();
    }
    *events = smtp_data_events(&d);
    int code;
    const char *dsn, *text;
    if (smtp_data_done(&d) && smtp_data_verdict(&d, &code, &dsn, &text) < 0 && (code < 500 || !dsn[0]))
        abort();
    return used;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = (size_t)data[0] % 17 + 1;
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    struct buf a, b;
    unsigned ea, eb;
    buf_init(&a);
    buf_init(&b);
    size_t ua = run(in, len, step, &a, &ea);
    size_t ub = run(in, len, len ? len : 1, &b, &eb);
    if (ua != ub || ea != eb)
        abort();
    /* the output of a refused message is never stored: only compare good ones */
    if (!(ea & SMTP_DATA_REFUSE) && (a.len != b.len || (a.len && memcmp(a.data, b.data, a.len) != 0)))
        abort();
    if (ea & SMTP_DATA_END) {
        /* the consumed input ends with CRLF . CRLF, at a line start */
        if (ua < 3 || memcmp(in + ua - 3, ".\r\n", 3) != 0 || (ua > 3 && memcmp(in + ua - 5, "\r\n", 2) != 0))
            abort();
    }
    if (!(ea & (SMTP_DATA_BARE_CR | SMTP_DATA_BARE_LF))) {
        for (size_t i = 0; i < a.len; i++) {
            if (a.data[i] == '\n' && (i == 0 || a.data[i - 1] != '\r'))
                abort();
            if (a.data[i] == '\r' && (i + 1 >= a.len || a.data[i + 1] != '\n'))
                abort();
        }
    }
    buf_free(&a);
    buf_free(&b);
    return 0;
}
