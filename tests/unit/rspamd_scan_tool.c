/*
 * rspamd_scan_tool.c - test helper for tests/e2e/test_dnsbl_rspamd.py: one
 * rspamd scan through the real code path (rspamd_scan, then rspamd_decide),
 * printed as one JSON object on stdout.  Until the content stage drives it
 * inside moatd, this is how the HTTP protocol is tested against a real rspamd.
 *
 * usage: rspamd_scan_tool URL TIMEOUT UNREACHABLE HOLD_ACTION MSGFILE IP FROM RCPT...
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../src/policy/policy_rspamd.h"

static const char *const action_words[] = {
    [POLICY_DUNNO] = "accept", [POLICY_ACCEPT] = "accept", [POLICY_REJECT] = "reject",
    [POLICY_TEMPFAIL] = "tempfail", [POLICY_HOLD] = "hold", [POLICY_PENDING] = "pending",
};

int main(int argc, char **argv)
{
    if (argc < 9) {
        fprintf(stderr, "usage: %s URL TIMEOUT UNREACHABLE HOLD_ACTION MSGFILE IP FROM RCPT...\n",
                argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[5], "rb");
    if (f == NULL) {
        perror(argv[5]);
        return 2;
    }
    struct buf msg;
    buf_init(&msg);
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_append(&msg, chunk, n);
    fclose(f);
    struct rspamd_request rq = {
        .url = argv[1], .timeout = strtoll(argv[2], NULL, 10), .ip = argv[6], .helo = "client.ext.example",
        .from = argv[7], .rcpts = (const char *const *)&argv[8], .n_rcpts = (size_t)(argc - 8),
        .queue_id = "TESTQID", .msg = (const char *)msg.data, .msg_len = msg.len,
    };
    struct rspamd_result r;
    char why[256] = "";
    int rc = rspamd_scan(&rq, &r, why, sizeof why);
    struct rspamd_policy pol;
    rspamd_policy_from_settings(argv[3], argv[4], &pol);
    struct policy_verdict v;
    struct buf hdr;
    buf_init(&hdr);
    rspamd_decide(rc, &r, why, &pol, &v, &hdr);
    json_t *o = json_pack("{s:i, s:s, s:s, s:f, s:s, s:i, s:s, s:s, s:s, s:s%}",
                          "rc", rc, "why", why, "rspamd_action", rc == 0 ? rspamd_action_name(r.action) : "",
                          "score", r.score, "verdict", action_words[v.action], "code", v.code,
                          "dsn", v.dsn, "text", v.text, "reason", v.reason,
                          "headers", hdr.len ? (const char *)hdr.data : "", hdr.len);
    char *s = json_dumps(o, JSON_COMPACT);
    puts(s);
    free(s);
    json_decref(o);
    buf_free(&hdr);
    buf_free(&msg);
    return 0;
}
