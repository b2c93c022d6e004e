/*
 * policy_forward.c - forwarding addresses and SRS (forward.h), and the
 * RCPT-stage check "srs_bounce": mail to an SRS0 address under an internal
 * domain is a bounce (or reply) to mail Moat forwarded.  A forged or
 * expired one is refused 550 5.7.1; a valid one (hash and age check out)
 * gets no opinion here, so the later checks still screen it, recipient
 * validation lets it pass (policy_rcpt.c), and the session relays it to
 * the original sender at commit.  This check runs before recipient
 * validation, which would refuse every SRS0 address as an unknown user.
 */
#include <string.h>
#include <strings.h>
#include <sodium.h>
#include "../core/core.h"
#include "forward.h"
#include "policy_priv.h"

#define SRS_HASH_CHARS 6
#define SRS_DAY 86400

static const char b32[] = "abcdefghijklmnopqrstuvwxyz234567";

static int b32_val(char c)
{
    if (c >= 'A' && c <= 'Z')
        c = (char)(c + 32);
    const char *p = c ? strchr(b32, c) : NULL;
    return p ? (int)(p - b32) : -1;
}

/* srs_hash - SRS_HASH_CHARS base32 characters of the HMAC of lower(data) */
static void srs_hash(const unsigned char key[SRS_KEY_LEN], const char *data, char out[SRS_HASH_CHARS + 1])
{
    unsigned char mac[crypto_auth_hmacsha256_BYTES];
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, SRS_KEY_LEN);
    for (const char *p = data; *p; p++) {
        unsigned char c = (unsigned char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
        crypto_auth_hmacsha256_update(&st, &c, 1);
    }
    crypto_auth_hmacsha256_final(&st, mac);
    uint64_t bits = (uint64_t)mac[0] << 32 | (uint64_t)mac[1] << 24 | (uint64_t)mac[2] << 16 |
                    (uint64_t)mac[3] << 8 | mac[4];
    for (int i = 0; i < SRS_HASH_CHARS; i++)
        out[i] = b32[(bits >> (35 - 5 * (i + 1))) & 31];
    out[SRS_HASH_CHARS] = '\0';
}

bool srs_is_srs(const char *addr)
{
    return addr != NULL && strncasecmp(addr, "SRS0=", 5) == 0;
}

int srs_forward(const unsigned char key[SRS_KEY_LEN], const char *sender, const char *domain,
                int64_t now, char *out, size_t size)
{
    const char *at = sender ? strrchr(sender, '@') : NULL;
    if (at == NULL || at == sender || at[1] == '\0' || domain == NULL || *domain == '\0')
        return -1;
    unsigned days = (unsigned)((now / SRS_DAY) % 1024);
    char tt[3] = { b32[days >> 5], b32[days & 31], '\0' };
    char data[FORWARD_ADDR_MAX];
    if (xsnprintf(data, sizeof data, "%s=%s=%.*s", tt, at + 1, (int)(at - sender), sender) < 0 ||
        strlen(data) + 1 >= sizeof data)
        return -1;
    char h[SRS_HASH_CHARS + 1];
    srs_hash(key, data, h);
    int n = snprintf(out, size, "SRS0=%s=%s@%s", h, data, domain);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

enum srs_result srs_reverse(const unsigned char key[SRS_KEY_LEN], const char *addr, int64_t now,
                            char *out, size_t size)
{
    if (!srs_is_srs(addr))
        return SRS_NOT_SRS;
    const char *at = strrchr(addr, '@');
    if (at == NULL)
        return SRS_MALFORMED;
    /* SRS0=HASH=TT=domain=local */
    const char *h = addr + 5;
    const char *e1 = memchr(h, '=', (size_t)(at - h));
    if (e1 == NULL || e1 - h != SRS_HASH_CHARS)
        return SRS_MALFORMED;
    const char *tt = e1 + 1;
    if (at - tt < 3 || tt[2] != '=')
        return SRS_MALFORMED;
    const char *dom = tt + 3;
    const char *e3 = memchr(dom, '=', (size_t)(at - dom));
    if (e3 == NULL || e3 == dom || e3 + 1 >= at)
        return SRS_MALFORMED;
    char data[FORWARD_ADDR_MAX];
    size_t dlen = (size_t)(at - tt);
    if (dlen >= sizeof data)
        return SRS_MALFORMED;
    memcpy(data, tt, dlen);
    data[dlen] = '\0';
    char want[SRS_HASH_CHARS + 1];
    srs_hash(key, data, want);
    char got[SRS_HASH_CHARS + 1];
    for (int i = 0; i < SRS_HASH_CHARS; i++)
        got[i] = (char)(h[i] >= 'A' && h[i] <= 'Z' ? h[i] + 32 : h[i]);
    got[SRS_HASH_CHARS] = '\0';
    if (sodium_memcmp(want, got, SRS_HASH_CHARS) != 0)
        return SRS_BAD_HASH;
    int t1 = b32_val(tt[0]), t2 = b32_val(tt[1]);
    if (t1 < 0 || t2 < 0)
        return SRS_MALFORMED;
    unsigned then = (unsigned)(t1 << 5 | t2);
    unsigned today = (unsigned)((now / SRS_DAY) % 1024);
    if ((today + 1024 - then) % 1024 > SRS_MAX_AGE_DAYS)
        return SRS_EXPIRED;
    /* the original sender: local@domain */
    int n = snprintf(out, size, "%.*s@%.*s", (int)(at - (e3 + 1)), e3 + 1, (int)(e3 - dom), dom);
    return n < 0 || (size_t)n >= size ? SRS_MALFORMED : SRS_OK;
}

static void target_set(struct forward_target *t, const char *addr, const char *fwd_for,
                       const char *sender)
{
    (void)str_copy(t->addr, sizeof t->addr, addr);
    (void)str_copy(t->fwd_for, sizeof t->fwd_for, fwd_for ? fwd_for : "");
    (void)str_copy(t->sender, sizeof t->sender, sender ? sender : "");
}

static bool have_target(const struct forward_target *out, size_t n, const char *addr)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(out[i].addr, addr) == 0)
            return true;
    return false;
}

size_t forward_expand(const struct store_snapshot *snap, const unsigned char *key,
                      const char *sender, const char *rcpt, int64_t now,
                      struct forward_target *out, size_t max)
{
    if (max == 0)
        return 0;
    char orig[FORWARD_ADDR_MAX];
    if (key != NULL && srs_is_srs(rcpt) && srs_reverse(key, rcpt, now, orig, sizeof orig) == SRS_OK) {
        target_set(&out[0], orig, NULL, NULL);
        return 1;
    }
    const struct store_forward *rules;
    size_t nr = store_snapshot_forwards(snap, rcpt, &rules);
    if (nr == 0) {
        target_set(&out[0], rcpt, NULL, NULL);
        return 1;
    }
    size_t n = 0;
    bool copy = false;
    for (size_t i = 0; i < nr; i++)
        copy |= rules[i].mode == STORE_FORWARD_COPY;
    if (copy)
        target_set(&out[n++], rcpt, NULL, NULL);
    const char *rat = strrchr(rcpt, '@');
    char srs[FORWARD_ADDR_MAX];
    for (size_t i = 0; i < nr && n < max && n < FORWARD_MAX_TARGETS; i++) {
        const char *t = rules[i].target;
        if (have_target(out, n, t))
            continue;
        const char *tat = strrchr(t, '@');
        bool external = tat == NULL || store_snapshot_find(snap, tat + 1) == NULL;
        const char *s = NULL;
        if (external && key != NULL && sender != NULL && sender[0] != '\0' && rat != NULL &&
            srs_forward(key, sender, rat + 1, now, srs, sizeof srs) == 0)
            s = srs;
        target_set(&out[n++], t, rcpt, s);
    }
    return n;
}

/* policy_check_srs_bounce - RCPT stage, before recipient validation */
void policy_check_srs_bounce(const struct policy_request *req, struct policy_verdict *out)
{
    const char *rcpt = req->rcpt ? req->rcpt : "";
    if (!srs_is_srs(rcpt) || req->outbound_host || req->auth_user != NULL)
        return;
    char orig[FORWARD_ADDR_MAX];
    enum srs_result r = req->srs_key != NULL
                            ? srs_reverse(req->srs_key, rcpt, (int64_t)time_wall_ms() / 1000, orig, sizeof orig)
                            : SRS_BAD_HASH;
    if (r == SRS_OK) {
        log_info("event=srs_bounce check=srs_bounce rcpt=<%.200s> to=<%.200s>", rcpt, orig);
        return;
    }
    static const char *const why[] = { [SRS_OK] = "ok", [SRS_NOT_SRS] = "not srs",
                                       [SRS_MALFORMED] = "malformed", [SRS_BAD_HASH] = "bad hash",
                                       [SRS_EXPIRED] = "expired" };
    policy_verdict_set(out, POLICY_REJECT, 550, "5.7.1",
                       "<%.200s>: invalid or expired forwarding (SRS) address", rcpt);
    xsnprintf(out->reason, sizeof out->reason, "srs address %s", why[r]);
}
