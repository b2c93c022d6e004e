/*
 * test_directory_ldap.c - the LDAP source's configuration (presets,
 * overrides, every bad member named), the schedule parser, the address
 * shape check, and the bind password sealed at rest (auth_secret_*).
 * The client itself is tested against a real slapd (tests/e2e/test_ldap_sync.py).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "directory/directory_ldap.h"

static void test_schedule(void **state)
{
    int s[DIRECTORY_LDAP_SCHEDULE_MAX];
    size_t n;
    struct error err = {0};
    assert_int_equal(directory_ldap_schedule_parse("18:00, 06:00,12:00:30", s, 24, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_int_equal(s[0], 6 * 3600);
    assert_int_equal(s[1], 12 * 3600 + 30);
    assert_int_equal(s[2], 18 * 3600);
    assert_int_equal(directory_ldap_schedule_parse("", s, 24, &n, &err), 0);
    assert_int_equal(n, 0);
    static const char *const bad[] = { "24:00", "6:00", "06:60", "06:00;07:00", "06:00:61",
                                       "noon", "06:00,", NULL };
    for (const char *const *b = bad; *b; b++) {
        memset(&err, 0, sizeof err);
        int rc = directory_ldap_schedule_parse(*b, s, 24, &n, &err);
        if (strcmp(*b, "06:00,") == 0) {      /* a trailing comma is tolerated */
            assert_int_equal(rc, 0);
            continue;
        }
        assert_int_equal(rc, -1);
        assert_string_equal(err.field, "schedule");
    }
    assert_int_equal(directory_ldap_schedule_parse("01:00,02:00,03:00", s, 2, &n, &err), -1);
}

static void test_source_defaults_and_overrides(void **state)
{
    struct directory_ldap_source src;
    struct error err = {0};
    json_t *c = json_pack("{s:s, s:s, s:{s:s, s:s}}", "url", "ldaps://dc1.example.com",
                          "base_dn", "DC=example,DC=com", "attributes", "upn", "",
                          "alias", "otherMailbox");
    assert_int_equal(directory_ldap_source_parse(c, &src, &err), 0);
    assert_true(src.configured);
    assert_int_equal(src.preset, DIRECTORY_LDAP_AD);
    assert_string_equal(src.attrs.proxy, "proxyAddresses");
    assert_string_equal(src.attrs.upn, "");
    assert_string_equal(src.attrs.alias, "otherMailbox");
    assert_string_equal(src.attrs.id, "objectGUID");
    assert_int_equal(src.page_size, DIRECTORY_LDAP_PAGE_DEFAULT);
    assert_string_equal(src.schedule, "06:00,12:00,18:00");
    assert_true(src.max_remove_share > 0.099 && src.max_remove_share < 0.101);
    /* what is stored: only what differs from the defaults */
    json_t *stored = directory_ldap_source_json(&src);
    assert_null(json_object_get(stored, "filter"));
    assert_null(json_object_get(stored, "schedule"));
    assert_string_equal(json_string_value(json_object_get(json_object_get(stored, "attributes"),
                                                          "alias")), "otherMailbox");
    struct directory_ldap_source again;
    assert_int_equal(directory_ldap_source_parse(stored, &again, &err), 0);
    assert_string_equal(again.attrs.alias, "otherMailbox");
    assert_string_equal(again.filter, src.filter);
    directory_ldap_source_clear(&again);
    json_decref(stored);
    directory_ldap_source_clear(&src);
    json_decref(c);

    c = json_pack("{s:s}", "preset", "openldap");
    assert_int_equal(directory_ldap_source_parse(c, &src, &err), 0);
    assert_false(src.configured);
    assert_string_equal(src.attrs.alias, "mailAlternativeAddress");
    assert_string_equal(src.attrs.name, "cn");
    assert_string_equal(src.group_filter, "(&(objectClass=groupOfNames)(mail=*))");
    directory_ldap_source_clear(&src);
    json_decref(c);
}

static void test_source_bad_members(void **state)
{
    static const struct { const char *json, *field; } bad[] = {
        { "{\"url\": \"http://x\"}", "url" },
        { "{\"url\": \"ldap://h/dc=x\"}", "url" },
        { "{\"fallback_url\": \"ldapi:///\"}", "fallback_url" },
        { "{\"url\": \"ldaps://h\", \"starttls\": true}", "starttls" },
        { "{\"starttls\": \"yes\"}", "starttls" },
        { "{\"base_dn\": \"no dn\"}", "base_dn" },
        { "{\"bind_dn\": \"=x\"}", "bind_dn" },
        { "{\"filter\": \"uid=x\"}", "filter" },
        { "{\"filter\": \"(a=1)(b=2)\"}", "filter" },
        { "{\"group_filter\": \"(cn=x\"}", "group_filter" },
        { "{\"page_size\": 0}", "page_size" },
        { "{\"page_size\": 10001}", "page_size" },
        { "{\"timeout\": \"5\"}", "timeout" },
        { "{\"max_entries\": 0}", "max_entries" },
        { "{\"max_remove_share\": 1.5}", "max_remove_share" },
        { "{\"preset\": \"edirectory\"}", "preset" },
        { "{\"ca_file\": \"ca.pem\"}", "ca_file" },
        { "{\"attributes\": {\"mail\": \"bad name\"}}", "attributes" },
        { "{\"attributes\": {\"mail\": \"\", \"proxy_addresses\": \"\", \"upn\": \"\"}}",
          "attributes" },
        { "{\"schedule\": \"25:00\"}", "schedule" },
        { "{\"url\": \"ldap://h\\u0001\"}", "url" },
        { "{\"colour\": 1}", "colour" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct directory_ldap_source src;
        struct error err = {0};
        json_t *c = json_loads(bad[i].json, 0, NULL);
        assert_non_null(c);
        if (directory_ldap_source_parse(c, &src, &err) != -1)
            fail_msg("%s: accepted", bad[i].json);
        if (strcmp(err.field, bad[i].field) != 0)
            fail_msg("%s: field %s, want %s (%s)", bad[i].json, err.field, bad[i].field, err.msg);
        json_decref(c);
    }
}

static void test_address_shape(void **state)
{
    assert_true(directory_ldap_address_valid("user1@example.com"));
    assert_true(directory_ldap_address_valid("first.last+tag@sub.example.com"));
    static const char *const bad[] = { "", "user", "@example.com", "user@", "a b@example.com",
                                       "a@b@example.com", "user@-bad-.com", "u<x>@example.com",
                                       "x500:/o=org@example.com", NULL };
    for (const char *const *b = bad; *b; b++)
        if (directory_ldap_address_valid(*b))
            fail_msg("%s accepted", *b);
}

static void test_secret_sealed(void **state)
{
    char dir[] = "/tmp/i5f-unit-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct auth_config cfg = { .state_dir = dir };
    struct error err = {0};
    struct auth *a = auth_create(&cfg, &err);
    assert_non_null(a);
    unsigned char *blob = NULL;
    size_t len = 0;
    assert_int_equal(auth_secret_seal(a, DIRECTORY_LDAP_PASSWORD_LABEL, "s3cret!", &blob, &len,
                                      &err), 0);
    assert_null(memmem(blob, len, "s3cret!", 7));
    char *plain = NULL;
    assert_int_equal(auth_secret_open(a, DIRECTORY_LDAP_PASSWORD_LABEL, blob, len, &plain,
                                      &err), 0);
    assert_string_equal(plain, "s3cret!");
    free(plain);
    /* another label, or a flipped bit: refused */
    assert_int_equal(auth_secret_open(a, "other", blob, len, &plain, &err), -1);
    assert_string_equal(err.field, "password");
    blob[len - 1] ^= 1;
    assert_int_equal(auth_secret_open(a, DIRECTORY_LDAP_PASSWORD_LABEL, blob, len, &plain,
                                      &err), -1);
    free(blob);
    auth_free(a);
    char path[64];
    snprintf(path, sizeof path, "%s/secret.key", dir);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_source_defaults_and_overrides),
        cmocka_unit_test(test_source_bad_members),
        cmocka_unit_test(test_address_shape),
        cmocka_unit_test(test_secret_sealed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
