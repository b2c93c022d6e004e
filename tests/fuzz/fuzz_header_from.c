/*
 * fuzz_header_from.c - libFuzzer target for the header From parser
 * (msg_header_from_domain in src/policy/policy_msg.c), which reads message
 * text from the network at the end of DATA.  Invariants: an answer of true
 * comes with a non-empty, NUL-terminated, lower-case domain inside its
 * buffer; false leaves it empty; a too-small buffer is never overrun.
 * Issue 11: also the Subject as tracking keeps it (msg_header_value, then
 * msg_decode_words): within its buffer, valid UTF-8, no control characters.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "core/core.h"
#include "policy/policy_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char dom[256], small[8];
    const char *p = (const char *)data;
    if (msg_header_from_domain(p, size, dom, sizeof dom)) {
        size_t n = strnlen(dom, sizeof dom);
        if (n == 0 || n >= sizeof dom)
            abort();
        for (size_t i = 0; i < n; i++)
            if (dom[i] >= 'A' && dom[i] <= 'Z')
                abort();
    } else if (dom[0] != '\0') {
        abort();
    }
    if (msg_header_from_domain(p, size, small, sizeof small) && strnlen(small, sizeof small) >= sizeof small)
        abort();
    char subj[256];
    size_t n = msg_header_value(p, size, "Subject", subj, sizeof subj);
    if (n >= sizeof subj || strlen(subj) != n)
        abort();
    n = msg_decode_words(subj, sizeof subj);
    if (n >= sizeof subj || strlen(subj) != n || !str_valid_utf8(subj, n))
        abort();
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)subj[i] < 32 || subj[i] == 127)
            abort();
    return 0;
}
