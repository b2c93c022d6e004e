/*
 * fuzz_rspamd_response - libFuzzer target for rspamd's /checkv2 answer
 * (src/policy/policy_rspamd.c rspamd_parse_response), read from the
 * network.  Invariants: a parsed answer has a known action and its mapping
 * gives a complete verdict with bounded header lines; a refusal says why.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "policy/policy_rspamd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rspamd_result r;
    char why[200];
    why[0] = '\0';
    if (rspamd_parse_response((const char *)data, size, &r, why, sizeof why) == 0) {
        if ((unsigned)r.action > RSPAMD_REJECT)
            abort();
        struct rspamd_policy pol = { .unreachable_accept = false, .hold = (enum rspamd_hold)(size % 3) };
        struct policy_verdict v;
        struct buf h;
        buf_init(&h);
        rspamd_decide(0, &r, why, &pol, &v, &h);
        if (v.action != POLICY_DUNNO && v.action != POLICY_HOLD && v.action != POLICY_TEMPFAIL &&
            v.action != POLICY_REJECT)
            abort();
        if (h.len > 512 || strnlen(v.reason, sizeof v.reason) >= sizeof v.reason)
            abort();
        buf_free(&h);
    } else if (why[0] == '\0' || strnlen(why, sizeof why) >= sizeof why) {
        abort();
    }
    return 0;
}
