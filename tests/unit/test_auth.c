/*
 * test_auth.c - the auth module against a real store in a temporary state
 * directory: argon2id passwords and the policy, STATE/secret.key, the RFC
 * 6238 Appendix B TOTP vectors and the enrol/confirm/sign-in/replay flow,
 * sessions (create, check, lifetime and idle expiry, revoke), API tokens
 * (create, check, revoke, last-used, scope bounded by the owner's role),
 * the sign-in rate limiter (per account, per address, window expiry),
 * audit redaction at any depth and the append-only audit table, the role
 * table (every permission with every role), and the bootstrap of the first
 * administrator.  Time moves through auth_test_clock_skew, not sleep.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>
#include <cmocka.h>
#include <sqlite3.h>
#include "auth/auth.h"
#include "auth/auth_priv.h"
#include "store/store_priv.h"

#define MAX_FAILURES 3
#define WINDOW 60
#define LIFETIME 3600
#define IDLE 600
#define GOOD_PW "correct horse battery"

struct fixture {
    char dir[64];
    char db[128];
    struct store *st;
    struct auth *a;
    int64_t admin_id;
};

static struct auth *new_auth(const char *dir, struct error *err)
{
    struct auth_config cfg = {
        .state_dir = dir,
        .session_lifetime = LIFETIME,
        .session_idle_timeout = IDLE,
        .login_max_failures = MAX_FAILURES,
        .login_failure_window = WINDOW,
    };
    return auth_create(&cfg, err);
}

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof *f);
    struct error err;
    xsnprintf(f->dir, sizeof f->dir, "/tmp/moat-test-auth-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    xsnprintf(f->db, sizeof f->db, "%s/moat.db", f->dir);
    f->st = store_open(f->db, &err);
    if (f->st == NULL) {
        fprintf(stderr, "store_open: %s\n", err.msg);
        return -1;
    }
    f->a = new_auth(f->dir, &err);
    if (f->a == NULL) {
        fprintf(stderr, "auth_create: %s\n", err.msg);
        return -1;
    }
    /* argon2id takes real time; the expected waits must not depend on it */
    auth_test_clock_freeze(f->a);
    if (auth_account_create(f->a, f->st, "alice", AUTH_ROLE_ADMIN, GOOD_PW, false, NULL,
                            &f->admin_id, &err) < 0) {
        fprintf(stderr, "account: %s\n", err.msg);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    auth_free(f->a);
    store_close(f->st);
    xsnprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

/* --- passwords --- */

static void test_password_roundtrip(void **state)
{
    struct fixture *f = *state;
    struct error err;
    struct store_account acc;

    assert_int_equal(store_account_get(f->st, f->admin_id, &acc, &err), STORE_OK);
    assert_non_null(strstr(acc.password_hash, "$argon2id$"));
    assert_null(strstr(acc.password_hash, GOOD_PW));
    store_account_clear(&acc);
    assert_int_equal(auth_password_verify(f->a, f->st, f->admin_id, GOOD_PW, &err), 0);
    assert_int_equal(auth_password_verify(f->a, f->st, f->admin_id, "correct horse batterY",
                                          &err), -1);
    assert_string_equal(err.field, "password");
    assert_int_equal(auth_password_verify(f->a, f->st, f->admin_id, "", &err), -1);
}

static void test_password_policy(void **state)
{
    struct fixture *f = *state;
    struct error err;
    char big[1100];

    assert_int_equal(auth_password_set(f->a, f->st, f->admin_id, "short", false, &err), -1);
    assert_string_equal(err.field, "password");
    /* 12 octets but 6 characters */
    assert_int_equal(auth_password_set(f->a, f->st, f->admin_id, "\xc3\xa9\xc3\xa9\xc3\xa9"
                                       "\xc3\xa9\xc3\xa9\xc3\xa9", false, &err), -1);
    assert_string_equal(err.field, "password");
    int64_t id;
    assert_int_equal(auth_account_create(f->a, f->st, "longername12", AUTH_ROLE_BASIC_ADMIN,
                                         "LongerName12", false, NULL, &id, &err), -1);
    assert_string_equal(err.field, "password");
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(auth_password_set(f->a, f->st, f->admin_id, big, false, &err), -1);
    assert_string_equal(err.field, "password");
    assert_int_equal(auth_account_create(f->a, f->st, "bad name", AUTH_ROLE_USER, GOOD_PW,
                                         false, NULL, &id, &err), -1);
    assert_string_equal(err.field, "name");
    /* names are unique without regard to case */
    assert_int_equal(auth_account_create(f->a, f->st, "ALICE", AUTH_ROLE_USER, GOOD_PW,
                                         false, NULL, &id, &err), -1);
    assert_string_equal(err.field, "name");
    /* a generated password: returned once, must be changed */
    char *gen = NULL;
    assert_int_equal(auth_account_create(f->a, f->st, "bob", AUTH_ROLE_BASIC_ADMIN, NULL, false,
                                         &gen, &id, &err), 0);
    assert_non_null(gen);
    assert_true(strlen(gen) >= 12);
    assert_int_equal(auth_password_verify(f->a, f->st, id, gen, &err), 0);
    struct store_account acc;
    assert_int_equal(store_account_get(f->st, id, &acc, &err), STORE_OK);
    assert_true(acc.must_change);
    store_account_clear(&acc);
    free(gen);
    assert_int_equal(auth_password_set(f->a, f->st, id, "a much better one", false, &err), 0);
    assert_int_equal(store_account_get(f->st, id, &acc, &err), STORE_OK);
    assert_false(acc.must_change);
    store_account_clear(&acc);
}

static void test_secret_key_file(void **state)
{
    struct fixture *f = *state;
    struct error err;
    struct stat sb;
    char path[160];

    xsnprintf(path, sizeof path, "%s/secret.key", f->dir);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(sb.st_size, 32);
    /* the same key on the next start: an existing session still checks */
    char *tok = NULL;
    struct auth_principal p;
    int64_t ra;
    assert_int_equal(auth_login(f->a, f->st, "alice", GOOD_PW, NULL, "192.0.2.1", &tok, &p,
                                &ra, &err), AUTH_LOGIN_OK);
    struct auth *b = new_auth(f->dir, &err);
    assert_non_null(b);
    assert_int_equal(auth_session_check(b, f->st, tok, &p), 0);
    auth_free(b);
    free(tok);
    /* loose modes are refused, naming the file */
    assert_int_equal(chmod(path, 0640), 0);
    assert_null(new_auth(f->dir, &err));
    assert_non_null(strstr(err.msg, path));
    assert_int_equal(chmod(path, 0600), 0);
}

/* --- TOTP --- */

/* RFC 6238 Appendix B, SHA-1 column */
static void test_totp_rfc6238_vectors(void **state)
{
    static const struct { int64_t t; const char *code; } v[] = {
        { 59, "94287082" },          { 1111111109, "07081804" }, { 1111111111, "14050471" },
        { 1234567890, "89005924" },  { 2000000000, "69279037" }, { 20000000000, "65353130" },
    };
    const unsigned char *secret = (const unsigned char *)"12345678901234567890";
    char out[16];
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        assert_int_equal(auth_totp_code(secret, 20, v[i].t, 8, out), 0);
        assert_string_equal(out, v[i].code);
    }
    /* 6 digits: the last six of the 8-digit value */
    assert_int_equal(auth_totp_code(secret, 20, 59, 6, out), 0);
    assert_string_equal(out, "287082");
    assert_int_equal(auth_totp_code(secret, 20, 59, 5, out), -1);
    assert_int_equal(auth_totp_code(secret, 20, -1, 6, out), -1);
    (void)state;
}

/* base32_decode - RFC 4648 6, for reading back the enrolment secret */
static size_t base32_decode(const char *in, unsigned char *out, size_t size)
{
    unsigned buffer = 0;
    int bits = 0;
    size_t n = 0;
    for (; *in && n < size; in++) {
        const char *p = strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", *in);
        assert_non_null(p);
        buffer = (buffer << 5) | (unsigned)(p - "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567");
        bits += 5;
        if (bits >= 8) {
            out[n++] = (unsigned char)(buffer >> (bits - 8));
            bits -= 8;
        }
    }
    return n;
}

static void test_totp_flow(void **state)
{
    struct fixture *f = *state;
    struct error err;
    char *secret = NULL, *uri = NULL, *tok = NULL, code[16];
    unsigned char seed[32];
    struct auth_principal p;
    int64_t ra;

    assert_int_equal(auth_totp_enroll(f->a, f->st, f->admin_id, &secret, &uri, &err), 0);
    assert_int_equal(strlen(secret), 32);
    assert_non_null(strstr(uri, "otpauth://totp/Moat:alice?secret="));
    assert_non_null(strstr(uri, secret));
    assert_non_null(strstr(uri, "issuer=Moat"));
    assert_int_equal(base32_decode(secret, seed, sizeof seed), 20);
    /* the seed is not stored in the clear */
    struct store_account acc;
    assert_int_equal(store_account_get(f->st, f->admin_id, &acc, &err), STORE_OK);
    assert_non_null(acc.totp_secret);
    assert_null(memmem(acc.totp_secret, acc.totp_secret_len, seed, 20));
    assert_false(acc.totp_active);
    store_account_clear(&acc);

    /* pending: sign-in does not need a code yet */
    assert_int_equal(auth_login(f->a, f->st, "alice", GOOD_PW, NULL, "192.0.2.1", &tok, &p,
                                &ra, &err), AUTH_LOGIN_OK);
    free(tok);
    /* a wrong code does not confirm */
    assert_int_equal(auth_totp_confirm(f->a, f->st, f->admin_id, "000000", &err), -1);
    assert_string_equal(err.field, "code");
    assert_int_equal(auth_totp_code(seed, 20, auth_now(f->a), 6, code), 0);
    if (strcmp(code, "000000") == 0)
        return;   /* one chance in a million; the rest needs a different code */
    assert_int_equal(auth_totp_confirm(f->a, f->st, f->admin_id, code, &err), 0);

    /* active: no code -> TOTP_REQUIRED; the confirming code is spent */
    assert_int_equal(auth_login(f->a, f->st, "alice", GOOD_PW, NULL, "192.0.2.1", &tok, &p,
                                &ra, &err), AUTH_LOGIN_TOTP_REQUIRED);
    assert_int_equal(auth_login(f->a, f->st, "alice", GOOD_PW, code, "192.0.2.1", &tok, &p,
                                &ra, &err), AUTH_LOGIN_BAD);
    assert_string_equal(err.field, "totp");
    /* the next step's code works once, and only once */
    auth_test_clock_skew(f->a, 30);
    assert_int_equal(auth_totp_code(seed, 20, auth_now(f->a), 6, code), 0);
    assert_int_equal(auth_login(f->a, f->st, "alice", GOOD_PW, code, "192.0.2.1", &tok, &p,
                                &ra, &err), AUTH_LOGIN_OK);
    free(tok);
    tok = NULL;
    assert_int_equal(auth_login(f->a, f->st, "alice", GOOD_PW, code, "192.0.2.2", &tok, &p,
                                &ra, &err), AUTH_LOGIN_BAD);
    /* one step of drift is accepted: the code of the next step */
    assert_int_equal(auth_totp_code(seed, 20, auth_now(f->a) + 30, 6, code), 0);
    assert_int_equal(auth_totp_verify(f->a, f->st, f->admin_id, code, &err), 0);
    /* two steps ahead is not */
    assert_int_equal(auth_totp_code(seed, 20, auth_now(f->a) + 90, 6, code), 0);
    assert_int_equal(auth_totp_verify(f->a, f->st, f->admin_id, code, &err), -1);
    /* enrolling again while active is refused; disabling clears it */
    char *s2 = NULL, *u2 = NULL;
    assert_int_equal(auth_totp_enroll(f->a, f->st, f->admin_id, &s2, &u2, &err), -1);
    assert_null(s2);
    assert_null(u2);
    assert_int_equal(auth_totp_disable(f->a, f->st, f->admin_id, &err), 0);
    assert_int_equal(auth_login(f->a, f->st, "alice", GOOD_PW, NULL, "192.0.2.1", &tok, &p,
                                &ra, &err), AUTH_LOGIN_OK);
    free(tok);
    free(secret);
    free(uri);
}

/* --- sessions --- */

static void test_sessions(void **state)
{
    struct fixture *f = *state;
    struct error err;
    char *tok = NULL, *tok2 = NULL;
    struct auth_principal p, q;
    int64_t ra;

    assert_int_equal(auth_login(f->a, f->st, "Alice", GOOD_PW, NULL, "192.0.2.7", &tok, &p, &ra,
                                &err), AUTH_LOGIN_OK);
    assert_int_equal(strlen(tok), 43);
    assert_int_equal(p.account_id, f->admin_id);
    assert_string_equal(p.name, "alice");
    assert_int_equal(p.role, AUTH_ROLE_ADMIN);
    assert_int_equal(strlen(p.csrf), 64);
    assert_int_equal(strlen(p.session_id_hash), 64);
    assert_false(p.via_token);

    assert_int_equal(auth_session_check(f->a, f->st, tok, &q), 0);
    assert_string_equal(q.csrf, p.csrf);
    assert_string_equal(q.session_id_hash, p.session_id_hash);
    /* the cookie value is not stored */
    struct store_session s;
    assert_int_equal(store_session_get(f->st, p.session_id_hash, &s, &err), STORE_OK);
    assert_string_equal(s.client_ip, "192.0.2.7");
    assert_null(strstr(s.id_hash, tok));
    /* garbage and near misses */
    assert_int_equal(auth_session_check(f->a, f->st, "", &q), -1);
    assert_int_equal(auth_session_check(f->a, f->st, "x", &q), -1);
    char wrong[64];
    xsnprintf(wrong, sizeof wrong, "%s", tok);
    wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
    assert_int_equal(auth_session_check(f->a, f->st, wrong, &q), -1);

    json_t *list = auth_sessions_list(f->a, f->st, f->admin_id, &err);
    assert_int_equal(json_array_size(list), 1);
    json_decref(list);

    /* idle: inside the idle timeout it lives (and is touched), beyond it not */
    auth_test_clock_skew(f->a, IDLE - 10);
    assert_int_equal(auth_session_check(f->a, f->st, tok, &q), 0);
    auth_test_clock_skew(f->a, IDLE - 10);
    assert_int_equal(auth_session_check(f->a, f->st, tok, &q), 0);
    auth_test_clock_skew(f->a, IDLE + 1);
    assert_int_equal(auth_session_check(f->a, f->st, tok, &q), -1);

    /* lifetime: absolute, however busy */
    assert_int_equal(auth_login(f->a, f->st, "alice", GOOD_PW, NULL, "192.0.2.7", &tok2, &p,
                                &ra, &err), AUTH_LOGIN_OK);
    for (int i = 0; i < LIFETIME / (IDLE / 2) - 1; i++) {
        auth_test_clock_skew(f->a, IDLE / 2);
        assert_int_equal(auth_session_check(f->a, f->st, tok2, &q), 0);
    }
    auth_test_clock_skew(f->a, IDLE / 2);
    assert_int_equal(auth_session_check(f->a, f->st, tok2, &q), -1);
    free(tok2);

    /* revoke: by its hash, only by its owner */
    assert_int_equal(auth_login(f->a, f->st, "alice", GOOD_PW, NULL, "192.0.2.7", &tok2, &p,
                                &ra, &err), AUTH_LOGIN_OK);
    assert_int_equal(auth_session_revoke(f->a, f->st, p.session_id_hash, f->admin_id + 1, &err),
                     -1);
    assert_int_equal(auth_session_check(f->a, f->st, tok2, &q), 0);
    assert_int_equal(auth_session_revoke(f->a, f->st, p.session_id_hash, f->admin_id, &err), 0);
    assert_int_equal(auth_session_check(f->a, f->st, tok2, &q), -1);
    list = auth_sessions_list(f->a, f->st, f->admin_id, &err);
    assert_int_equal(json_array_size(list), 0);
    json_decref(list);
    free(tok2);
    /* a disabled account's sessions stop working */
    int64_t bob;
    assert_int_equal(auth_account_create(f->a, f->st, "bob", AUTH_ROLE_BASIC_ADMIN, GOOD_PW,
                                         false, NULL, &bob, &err), 0);
    assert_int_equal(auth_login(f->a, f->st, "bob", GOOD_PW, NULL, "192.0.2.7", &tok2, &p,
                                &ra, &err), AUTH_LOGIN_OK);
    assert_int_equal(store_account_set_disabled(f->st, bob, true, &err), STORE_OK);
    assert_int_equal(auth_session_check(f->a, f->st, tok2, &q), -1);
    free(tok2);
    assert_int_equal(auth_login(f->a, f->st, "bob", GOOD_PW, NULL, "192.0.2.7", &tok2, &p,
                                &ra, &err), AUTH_LOGIN_DISABLED);
    assert_int_equal(store_session_purge(f->st, auth_now(f->a), auth_now(f->a) - IDLE, &err), 0);
    free(tok);
}

/* --- API tokens --- */

static void test_tokens(void **state)
{
    struct fixture *f = *state;
    struct error err;
    char *tok = NULL;
    int64_t id, basic;
    struct auth_principal p;
    struct store_token t;

    assert_int_equal(auth_token_create(f->a, f->st, f->admin_id, "ci", AUTH_ROLE_BASIC_ADMIN,
                                       &tok, &id, &err), 0);
    char prefix[32];
    xsnprintf(prefix, sizeof prefix, "moat_%lld_", (long long)id);
    assert_int_equal(strncmp(tok, prefix, strlen(prefix)), 0);
    assert_int_equal(strlen(tok), strlen(prefix) + 43);

    assert_int_equal(store_token_get(f->st, id, &t, &err), STORE_OK);
    assert_int_equal(t.last_used, 0);
    assert_null(strstr(tok, t.secret_hash));
    store_token_clear(&t);

    assert_int_equal(auth_token_check(f->a, f->st, tok, &p), 0);
    assert_true(p.via_token);
    assert_int_equal(p.token_id, id);
    assert_int_equal(p.account_id, f->admin_id);
    assert_int_equal(p.role, AUTH_ROLE_BASIC_ADMIN);   /* the scope, not the owner's role */
    assert_false(p.must_change_password);

    /* last_used: written at the first use, then at most once a minute */
    assert_int_equal(store_token_get(f->st, id, &t, &err), STORE_OK);
    int64_t first = t.last_used;
    assert_true(first > 0);
    store_token_clear(&t);
    auth_test_clock_skew(f->a, 30);
    assert_int_equal(auth_token_check(f->a, f->st, tok, &p), 0);
    assert_int_equal(store_token_get(f->st, id, &t, &err), STORE_OK);
    assert_int_equal(t.last_used, first);
    store_token_clear(&t);
    auth_test_clock_skew(f->a, 31);
    assert_int_equal(auth_token_check(f->a, f->st, tok, &p), 0);
    assert_int_equal(store_token_get(f->st, id, &t, &err), STORE_OK);
    assert_int_equal(t.last_used, first + 61);
    store_token_clear(&t);

    /* tampered values */
    char bad[128];
    xsnprintf(bad, sizeof bad, "%s", tok);
    bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == 'A' ? 'B' : 'A';
    assert_int_equal(auth_token_check(f->a, f->st, bad, &p), -1);
    xsnprintf(bad, sizeof bad, "moat_%lld_%s", (long long)id + 1, tok + strlen(prefix));
    assert_int_equal(auth_token_check(f->a, f->st, bad, &p), -1);
    assert_int_equal(auth_token_check(f->a, f->st, "moat_", &p), -1);
    assert_int_equal(auth_token_check(f->a, f->st, "Bearer x", &p), -1);

    /* revoke */
    assert_int_equal(auth_token_revoke(f->a, f->st, id, &err), 0);
    assert_int_equal(auth_token_check(f->a, f->st, tok, &p), -1);
    assert_int_equal(auth_token_revoke(f->a, f->st, id, &err), -1);
    free(tok);

    /* a scope above the owner's role is refused, naming "role" */
    assert_int_equal(auth_account_create(f->a, f->st, "basic", AUTH_ROLE_BASIC_ADMIN, GOOD_PW,
                                         false, NULL, &basic, &err), 0);
    assert_int_equal(auth_token_create(f->a, f->st, basic, "x", AUTH_ROLE_ADMIN, &tok, &id,
                                       &err), -1);
    assert_string_equal(err.field, "role");
    assert_int_equal(auth_token_create(f->a, f->st, basic, "", AUTH_ROLE_USER, &tok, &id, &err),
                     -1);
    assert_string_equal(err.field, "name");
    /* demoting the owner caps the tokens already issued */
    assert_int_equal(auth_token_create(f->a, f->st, basic, "x", AUTH_ROLE_BASIC_ADMIN, &tok, &id,
                                       &err), 0);
    assert_int_equal(store_account_set_role(f->st, basic, "user", &err), STORE_OK);
    assert_int_equal(auth_token_check(f->a, f->st, tok, &p), 0);
    assert_int_equal(p.role, AUTH_ROLE_USER);
    /* and a deleted owner takes the tokens along */
    assert_int_equal(store_account_delete(f->st, basic, &err), STORE_OK);
    assert_int_equal(auth_token_check(f->a, f->st, tok, &p), -1);
    free(tok);
}

/* --- rate limiting --- */

static enum auth_login_result try_login(struct fixture *f, const char *name, const char *pw,
                                        const char *ip, int64_t *ra)
{
    struct error err;
    struct auth_principal p;
    char *tok = NULL;
    enum auth_login_result r = auth_login(f->a, f->st, name, pw, NULL, ip, &tok, &p, ra, &err);
    free(tok);
    return r;
}

static void test_rate_limit_account(void **state)
{
    struct fixture *f = *state;
    int64_t ra;

    /* the failures come from different addresses: the account's counter trips */
    for (int i = 0; i < MAX_FAILURES; i++) {
        char ip[32];
        xsnprintf(ip, sizeof ip, "198.51.100.%d", i + 1);
        assert_int_equal(try_login(f, "alice", "wrong password!", ip, &ra), AUTH_LOGIN_BAD);
        auth_test_clock_skew(f->a, 5);
    }
    /* even the right password is refused now, with the wait */
    assert_int_equal(try_login(f, "alice", GOOD_PW, "198.51.100.99", &ra),
                     AUTH_LOGIN_RATE_LIMITED);
    /* the oldest failure was 15 s ago: it leaves the window in 45 s */
    assert_int_equal(ra, WINDOW - 5 * MAX_FAILURES);
    /* names are counted without regard to case */
    assert_int_equal(try_login(f, "ALICE", GOOD_PW, "198.51.100.99", &ra),
                     AUTH_LOGIN_RATE_LIMITED);
    /* once the oldest failure leaves the window, one try is allowed again */
    auth_test_clock_skew(f->a, ra);
    assert_int_equal(try_login(f, "alice", GOOD_PW, "198.51.100.99", &ra), AUTH_LOGIN_OK);
    /* the success cleared the account's counter */
    assert_int_equal(try_login(f, "alice", "wrong password!", "198.51.100.98", &ra),
                     AUTH_LOGIN_BAD);
    assert_int_equal(try_login(f, "alice", GOOD_PW, "198.51.100.97", &ra), AUTH_LOGIN_OK);
}

static void test_rate_limit_address(void **state)
{
    struct fixture *f = *state;
    int64_t ra;

    /* unknown names and wrong passwords look the same, and both count */
    assert_int_equal(try_login(f, "nobody", "whatever12345", "203.0.113.5", &ra), AUTH_LOGIN_BAD);
    assert_int_equal(try_login(f, "someone", "whatever12345", "203.0.113.5", &ra),
                     AUTH_LOGIN_BAD);
    assert_int_equal(try_login(f, "alice", "whatever12345", "203.0.113.5", &ra), AUTH_LOGIN_BAD);
    /* the address is limited, for every name */
    assert_int_equal(try_login(f, "carol", "whatever12345", "203.0.113.5", &ra),
                     AUTH_LOGIN_RATE_LIMITED);
    assert_int_equal(ra, WINDOW);
    assert_int_equal(try_login(f, "alice", GOOD_PW, "203.0.113.5", &ra),
                     AUTH_LOGIN_RATE_LIMITED);
    /* another address signs in (alice has 1 failure: under the limit) */
    assert_int_equal(try_login(f, "alice", GOOD_PW, "203.0.113.6", &ra), AUTH_LOGIN_OK);
    /* a success does not clear the address */
    assert_int_equal(try_login(f, "alice", GOOD_PW, "203.0.113.5", &ra),
                     AUTH_LOGIN_RATE_LIMITED);
    auth_test_clock_skew(f->a, WINDOW);
    assert_int_equal(try_login(f, "alice", GOOD_PW, "203.0.113.5", &ra), AUTH_LOGIN_OK);
}

/* the table is bounded: many addresses evict the quietest, never grow it */
static void test_rate_limit_bounded(void **state)
{
    struct auth_ratelimit rl;
    char key[32];
    auth_rl_init(&rl, 2, 100);
    for (int i = 0; i < AUTH_RL_MAX_KEYS + 500; i++) {
        xsnprintf(key, sizeof key, "i:10.0.%d.%d", i / 256, i % 256);
        auth_rl_fail(&rl, key, 1000 + i / 100);
    }
    assert_true(rl.n <= AUTH_RL_MAX_KEYS);
    /* the newest keys are still tracked */
    auth_rl_fail(&rl, key, 1100);
    assert_true(auth_rl_check(&rl, key, 1100) > 0);
    auth_rl_clear(&rl, key);
    assert_int_equal(auth_rl_check(&rl, key, 1100), 0);
    auth_rl_free(&rl);
    (void)state;
}

/* --- audit --- */

static void test_audit_redaction(void **state)
{
    struct fixture *f = *state;
    struct error err;
    struct auth_principal who = { .account_id = f->admin_id, .role = AUTH_ROLE_ADMIN,
                                  .via_token = true, .token_id = 7 };
    str_copy(who.name, sizeof who.name, "alice");

    json_t *before = json_pack("{s:s, s:s}", "name", "x", "password", "hunter2-secret-1");
    json_t *after = json_pack(
        "{s:s, s:{s:s, s:[{s:s, s:s, s:i}]}, s:s, s:s, s:s, s:s, s:i}",
        "name", "x",
        "nested", "token", "tok-secret-2",
        "list", "totp_secret", "seed-secret-3", "password_hash", "hash-secret-4", "ok", 1,
        "csrf_token", "csrf-secret-5", "new_password", "pw-secret-6", "Secret", "sec-7",
        "api_token", "tok-8", "token_id", 12);
    assert_int_equal(auth_audit(f->st, &who, "192.0.2.9", "domain.add", "example.com", before,
                                after), 0);
    /* the caller's objects are untouched */
    assert_string_equal(json_string_value(json_object_get(before, "password")),
                        "hunter2-secret-1");

    struct store_audit_filter flt = { .limit = 10 };
    struct store_audit_entry *e;
    size_t n;
    assert_int_equal(store_audit_list(f->st, &flt, &e, &n, &err), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(e[0].action, "domain.add");
    assert_string_equal(e[0].account_name, "alice");
    assert_string_equal(e[0].via, "token");
    assert_int_equal(e[0].token_id, 7);
    assert_string_equal(e[0].client_ip, "192.0.2.9");
    static const char *const secrets[] = { "hunter2", "tok-secret", "seed-secret",
                                           "hash-secret", "csrf-secret", "pw-secret", "sec-7",
                                           "tok-8" };
    for (size_t i = 0; i < sizeof secrets / sizeof secrets[0]; i++) {
        assert_null(strstr(e[0].before_json, secrets[i]));
        assert_null(strstr(e[0].after_json, secrets[i]));
    }
    assert_non_null(strstr(e[0].after_json, "\"ok\":1"));
    assert_non_null(strstr(e[0].after_json, "\"token_id\":12"));
    assert_non_null(strstr(e[0].after_json, "[redacted]"));
    store_audit_free(e, n);
    json_decref(before);
    json_decref(after);

    /* filters: action prefix, account, time, cursor */
    who.via_token = false;
    str_copy(who.session_id_hash, sizeof who.session_id_hash, "ab");
    assert_int_equal(auth_audit(f->st, &who, "192.0.2.9", "account.create", "bob", NULL, NULL),
                     0);
    str_copy(who.name, sizeof who.name, "Bob");
    assert_int_equal(auth_audit(f->st, &who, "192.0.2.9", "account.delete", "carl", NULL, NULL),
                     0);
    flt.action_prefix = "account.";
    assert_int_equal(store_audit_list(f->st, &flt, &e, &n, &err), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(e[0].action, "account.delete");   /* newest first */
    assert_string_equal(e[1].via, "session");
    int64_t newest = e[0].id;
    store_audit_free(e, n);
    flt.account = "bob";
    assert_int_equal(store_audit_list(f->st, &flt, &e, &n, &err), STORE_OK);
    assert_int_equal(n, 1);
    store_audit_free(e, n);
    flt.account = NULL;
    flt.action_prefix = NULL;
    flt.before_id = newest;
    assert_int_equal(store_audit_list(f->st, &flt, &e, &n, &err), STORE_OK);
    assert_int_equal(n, 2);
    store_audit_free(e, n);
    flt.before_id = 0;
    flt.since = (int64_t)time(NULL) + 3600;
    assert_int_equal(store_audit_list(f->st, &flt, &e, &n, &err), STORE_OK);
    assert_int_equal(n, 0);
    store_audit_free(e, n);

    /* append-only, whoever asks */
    assert_int_not_equal(sqlite3_exec(f->st->db, "UPDATE audit SET action = 'x'", NULL, NULL,
                                      NULL), SQLITE_OK);
    assert_int_not_equal(sqlite3_exec(f->st->db, "DELETE FROM audit", NULL, NULL, NULL),
                         SQLITE_OK);
    flt = (struct store_audit_filter){ .limit = 10 };
    assert_int_equal(store_audit_list(f->st, &flt, &e, &n, &err), STORE_OK);
    assert_int_equal(n, 3);
    store_audit_free(e, n);
}

/* --- the role table --- */

static void test_role_table(void **state)
{
    /* expected[role][perm]: the whole matrix, so a new permission must be added here */
    static const bool expected[4][AUTH_PERM__COUNT] = {
        /*                 PUBLIC SELF  CFG_R CFG_W QUEUE CONTENT ACCOUNTS AUDIT EXPORT
         *                 ARCHIVE_SEARCH ARCHIVE_ADMIN BACKUP */
        [AUTH_ROLE_NONE] =        { 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 },
        [AUTH_ROLE_USER] =        { 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0 },
        [AUTH_ROLE_BASIC_ADMIN] = { 1, 1, 1, 1, 1, 0, 0, 1, 0, 1, 0, 0 },
        [AUTH_ROLE_ADMIN] =       { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 },
    };
    assert_int_equal(AUTH_PERM__COUNT, 12);
    for (int r = AUTH_ROLE_NONE; r <= AUTH_ROLE_ADMIN; r++)
        for (int p = 0; p < AUTH_PERM__COUNT; p++) {
            if (auth_role_allows((enum auth_role)r, (enum auth_perm)p) != expected[r][p])
                fail_msg("role %s perm %s: expected %d", auth_role_name((enum auth_role)r),
                         auth_perm_name((enum auth_perm)p), expected[r][p]);
            assert_string_not_equal(auth_perm_name((enum auth_perm)p), "unknown");
        }
    /* the protected actions are the administrator's alone */
    static const enum auth_perm protected_perms[] = {
        AUTH_PERM_MESSAGE_CONTENT, AUTH_PERM_ACCOUNTS_MANAGE, AUTH_PERM_ARCHIVE_EXPORT,
        AUTH_PERM_ARCHIVE_ADMIN };
    for (size_t i = 0; i < 4; i++) {
        assert_false(auth_role_allows(AUTH_ROLE_BASIC_ADMIN, protected_perms[i]));
        assert_true(auth_role_allows(AUTH_ROLE_ADMIN, protected_perms[i]));
    }
    assert_false(auth_role_allows((enum auth_role)99, AUTH_PERM_PUBLIC));
    assert_false(auth_role_allows(AUTH_ROLE_ADMIN, AUTH_PERM__COUNT));
    enum auth_role r;
    assert_int_equal(auth_role_parse("basic_admin", &r), 0);
    assert_int_equal(r, AUTH_ROLE_BASIC_ADMIN);
    assert_int_equal(auth_role_parse("none", &r), -1);
    assert_int_equal(auth_role_parse("Admin", &r), -1);
    (void)state;
}

/* --- bootstrap --- */

static void test_init_admin(void **state)
{
    struct fixture *f = *state;
    struct error err;
    char db[160], file[160], tok[256];
    struct stat sb;
    struct auth_principal p;

    xsnprintf(db, sizeof db, "%s/fresh.db", f->dir);
    xsnprintf(file, sizeof file, "%s/admin.token", f->dir);
    struct store *st = store_open(db, &err);
    assert_non_null(st);
    assert_int_equal(auth_init_admin(f->a, st, "root", file, &err), 0);
    assert_int_equal(stat(file, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    FILE *fp = fopen(file, "r");
    assert_non_null(fp);
    assert_non_null(fgets(tok, sizeof tok, fp));
    fclose(fp);
    tok[strcspn(tok, "\n")] = '\0';
    assert_int_equal(auth_token_check(f->a, st, tok, &p), 0);
    assert_int_equal(p.role, AUTH_ROLE_ADMIN);
    assert_string_equal(p.name, "root");
    struct store_account acc;
    assert_int_equal(store_account_get_by_name(st, "root", &acc, &err), STORE_OK);
    assert_true(acc.must_change);
    store_account_clear(&acc);
    /* refused once accounts exist, and the file is not overwritten */
    unlink(file);
    assert_int_equal(auth_init_admin(f->a, st, "root2", file, &err), -1);
    assert_int_not_equal(access(file, F_OK), 0);
    /* first start does nothing when accounts exist */
    assert_int_equal(auth_first_start(f->a, st, f->dir, &err), 0);
    store_close(st);
}

static void test_first_start(void **state)
{
    struct fixture *f = *state;
    struct error err;
    char db[160], file[160], pw[128];
    struct stat sb;

    xsnprintf(db, sizeof db, "%s/first.db", f->dir);
    xsnprintf(file, sizeof file, "%s/initial-admin-password", f->dir);
    struct store *st = store_open(db, &err);
    assert_non_null(st);
    /* stderr carries the password by design; keep it out of the test output */
    fflush(stderr);
    int saved = dup(2), null = open("/dev/null", O_WRONLY);
    dup2(null, 2);
    int rc = auth_first_start(f->a, st, f->dir, &err);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(null);
    assert_int_equal(rc, 0);
    assert_int_equal(stat(file, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    FILE *fp = fopen(file, "r");
    assert_non_null(fp);
    assert_non_null(fgets(pw, sizeof pw, fp));
    fclose(fp);
    pw[strcspn(pw, "\n")] = '\0';
    char *tok = NULL;
    struct auth_principal p;
    int64_t ra;
    assert_int_equal(auth_login(f->a, st, "admin", pw, NULL, "127.0.0.1", &tok, &p, &ra, &err),
                     AUTH_LOGIN_OK);
    assert_true(p.must_change_password);
    free(tok);
    /* second start: nothing to do */
    assert_int_equal(auth_first_start(f->a, st, f->dir, &err), 0);
    int64_t count;
    assert_int_equal(store_account_count(st, NULL, &count, &err), STORE_OK);
    assert_int_equal(count, 1);
    store_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_password_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_password_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_key_file, setup, teardown),
        cmocka_unit_test(test_totp_rfc6238_vectors),
        cmocka_unit_test_setup_teardown(test_totp_flow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sessions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rate_limit_account, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rate_limit_address, setup, teardown),
        cmocka_unit_test(test_rate_limit_bounded),
        cmocka_unit_test_setup_teardown(test_audit_redaction, setup, teardown),
        cmocka_unit_test(test_role_table),
        cmocka_unit_test_setup_teardown(test_init_admin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_first_start, setup, teardown),
    };
    log_set_level(LOG_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
