/*
 * smtp_auth.h - private to src/smtp: the pure parts of SMTP AUTH (RFC 4954)
 * that read network input, kept apart for the unit tests and the fuzz
 * target, and the failed-attempt limiter the server keeps for all sessions.
 *
 * The protocol steps (334 challenges, the worker-pool verification) are in
 * smtp_session.c.
 */
#ifndef MOAT_SMTP_AUTH_H
#define MOAT_SMTP_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SMTP_AUTH_FIELD_MAX 1024   /* one decoded PLAIN/LOGIN field, bytes */

enum smtp_auth_decode {
    SMTP_AUTH_OK = 0,
    SMTP_AUTH_CANCEL,              /* "*": RFC 4954 4, 501 5.0.0 */
    SMTP_AUTH_BAD_BASE64,          /* 501 5.5.2 */
    SMTP_AUTH_BAD_FORMAT,          /* decoded, but not the mechanism's shape: 501 5.5.2 */
};

/* smtp_auth_b64_decode - RFC 4648 4 base64 (padding required, no spaces);
 * "=" is the empty response (RFC 4954 4).  out gets len bytes plus a NUL;
 * decoded data containing NUL is allowed (PLAIN uses it). */
enum smtp_auth_decode smtp_auth_b64_decode(const char *in, size_t in_len, char *out,
                                           size_t out_size, size_t *out_len);

struct smtp_auth_plain {
    char authzid[SMTP_AUTH_FIELD_MAX + 1];
    char authcid[SMTP_AUTH_FIELD_MAX + 1];
    char passwd[SMTP_AUTH_FIELD_MAX + 1];
};
/* smtp_auth_plain_decode - RFC 4616 2: base64 of [authzid] NUL authcid NUL
 * passwd; authcid and passwd non-empty, no NUL inside, each within
 * SMTP_AUTH_FIELD_MAX.  The caller wipes out afterwards. */
enum smtp_auth_decode smtp_auth_plain_decode(const char *in, size_t in_len,
                                             struct smtp_auth_plain *out);
/* smtp_auth_login_decode - one LOGIN field (user name or password):
 * base64 of a non-empty string without NUL */
enum smtp_auth_decode smtp_auth_login_decode(const char *in, size_t in_len, char *out,
                                             size_t out_size);

/* --- the failed-attempt limiter: a fixed table, the oldest entry evicted --- */
struct smtp_auth_limiter;
struct smtp_auth_limiter *smtp_auth_limiter_new(size_t slots);
void smtp_auth_limiter_free(struct smtp_auth_limiter *l);
/* smtp_auth_limited - key ("ip:...", "user:...") has max or more failures in window */
bool smtp_auth_limited(struct smtp_auth_limiter *l, const char *key, uint64_t now_ms,
                       uint64_t window_ms, int64_t max);
/* smtp_auth_failed - count a failure for key */
void smtp_auth_failed(struct smtp_auth_limiter *l, const char *key, uint64_t now_ms,
                      uint64_t window_ms);

#endif
