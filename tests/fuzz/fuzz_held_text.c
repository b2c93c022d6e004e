/*
 * fuzz_held_text.c - libFuzzer target for what issue 7 reads from the
 * network: the MIME walk and decoders that show a held message's text
 * (src/deliver/held_text.c), and the SRS address parser that checks
 * bounces to forwarded mail (src/policy/policy_forward.c).
 * Invariants: the preview never exceeds its bound, the header section is
 * within the input; srs_reverse accepts nothing but what srs_forward made
 * (a random input never passes the hash except by a 2^-30 chance, so a
 * valid reversal must round-trip to the same address), its output is
 * NUL-terminated within its buffer.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "deliver/held_text.h"
#include "policy/forward.h"

#define PREVIEW_MAX 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct buf b = { 0 };
    (void)held_text_preview((const char *)data, size, PREVIEW_MAX, &b);
    if (b.len > PREVIEW_MAX)
        abort();
    buf_free(&b);
    if (held_header_section((const char *)data, size) > size)
        abort();

    static const unsigned char key[SRS_KEY_LEN] = "fuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzz";
    char addr[FORWARD_ADDR_MAX], out[FORWARD_ADDR_MAX];
    size_t n = size < sizeof addr - 1 ? size : sizeof addr - 1;
    memcpy(addr, data, n);
    addr[n] = '\0';
    if (srs_reverse(key, addr, 1795900000, out, sizeof out) == SRS_OK) {
        if (strnlen(out, sizeof out) >= sizeof out)
            abort();
    }
    return 0;
}
