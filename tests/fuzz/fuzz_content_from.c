/*
 * fuzz_content_from.c - libFuzzer target for the header From parser of the
 * content stage (content_header_from in src/policy/policy_content.c), which
 * reads the message a client sent.  Invariants: never reads past size (the
 * input is copied to an exact-size buffer), an accepted domain is non-empty,
 * lower case, within the buffer, and free of separators.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "policy/policy_content.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *msg = malloc(size ? size : 1);
    if (msg == NULL)
        return 0;
    memcpy(msg, data, size);
    char dom[64];
    bool ok = content_header_from(msg, size, dom, sizeof dom);
    size_t n = strnlen(dom, sizeof dom);
    if (n == sizeof dom || (ok && n == 0) || (!ok && n != 0))
        abort();
    for (size_t i = 0; ok && i < n; i++)
        if ((dom[i] >= 'A' && dom[i] <= 'Z') || strchr(" \t>;,()\"", dom[i]) != NULL)
            abort();
    free(msg);
    return 0;
}
