/*
 * fuzz_smtp_reply.c - libFuzzer target for the delivery client's reply
 * parser (smtp_reply_parse in src/smtp/smtp_client.c), which reads what a
 * remote server sends.  The input is consumed reply by reply as the client
 * does; invariants: progress on every complete reply, codes in 200..599,
 * text NUL-terminated within its bound, the diagnostic line bounded.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "smtp/smtp_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    size_t left = size;
    static struct smtp_reply r;
    for (int guard = 0; guard < 10000; guard++) {
        size_t used = 0;
        int rc = smtp_reply_parse(p, left, &r, &used);
        if (rc <= 0)
            break;
        if (used == 0 || used > left)
            abort();
        if (r.code < 200 || r.code > 599 || r.n_lines == 0 || r.n_lines > SMTP_REPLY_MAX_LINES)
            abort();
        if (strlen(r.text) >= sizeof(r.text) || strlen(r.enh) >= sizeof(r.enh))
            abort();
        char diag[SMTP_DIAG_MAX];
        smtp_reply_diag(&r, diag, sizeof(diag));
        if (strlen(diag) >= sizeof(diag) || strchr(diag, '\n'))
            abort();
        p += used;
        left -= used;
    }
    return 0;
}
