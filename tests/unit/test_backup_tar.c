/*
 * test_backup_tar.c - the ustar writer and reader of moat backups
 * (src/backup/backup_tar.c): sizes around the block boundary and past the
 * octal limit (GNU base-256), the end of the archive, and the damage the
 * reader must refuse (a changed header octet, non-zero padding, a truncated
 * header).  Table-driven, through a real temporary file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "backup/backup_priv.h"

static const struct {
    const char *name;
    uint64_t size;
} sizes[] = {
    { "empty", 0 }, { "one", 1 }, { "tls/block-1", 511 }, { "tls/block", 512 },
    { "block+1", 513 }, { "octal-max", 077777777777ULL }, { "base256", 9ULL << 30 },
};

/* header_file - a temporary file holding one header for (name, size) */
static FILE *header_file(const char *name, uint64_t size)
{
    FILE *f = tmpfile();
    struct error err = {0};
    assert_non_null(f);
    assert_int_equal(tar_write_header(fileno(f), name, size, 1700000000, &err), 0);
    rewind(f);
    return f;
}

static void test_header_round_trip(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        FILE *f = header_file(sizes[i].name, sizes[i].size);
        struct tar_member m;
        struct error err = {0};
        assert_int_equal(tar_read_header(f, &m, &err), 1);
        assert_string_equal(m.name, sizes[i].name);
        assert_true(m.size == sizes[i].size);
        fclose(f);
    }
}

static void test_member_and_end(void **state)
{
    (void)state;
    FILE *f = tmpfile();
    struct error err = {0};
    struct tar_member m;
    char data[700];
    memset(data, 'x', sizeof data);
    assert_int_equal(tar_write_header(fileno(f), "moat.db", sizeof data, 0, &err), 0);
    assert_int_equal(backup_write_all(fileno(f), data, sizeof data), 0);
    assert_int_equal(tar_write_pad(fileno(f), sizeof data, &err), 0);
    assert_int_equal(tar_write_end(fileno(f), &err), 0);
    assert_int_equal(ftell(f), 512 + 1024 + 1024);
    rewind(f);
    assert_int_equal(tar_read_header(f, &m, &err), 1);
    assert_int_equal(fread(data, 1, sizeof data, f), sizeof data);
    assert_int_equal(tar_skip_pad(f, m.size, &err), 0);
    assert_int_equal(tar_read_header(f, &m, &err), 0);      /* the end */
    fclose(f);
}

/* test_damaged_header - each octet of a header changed in turn is refused
 * (the checksum covers every octet, the owner fields the reader ignores too) */
static void test_damaged_header(void **state)
{
    (void)state;
    unsigned char h[TAR_BLOCK];
    FILE *f = header_file("secret.key", 32);
    assert_int_equal(fread(h, 1, sizeof h, f), sizeof h);
    fclose(f);
    for (int i = 0; i < TAR_BLOCK; i++) {
        unsigned char d[TAR_BLOCK];
        memcpy(d, h, sizeof d);
        d[i] ^= 0x01;
        FILE *g = tmpfile();
        struct tar_member m;
        struct error err = {0};
        assert_int_equal(fwrite(d, 1, sizeof d, g), sizeof d);
        rewind(g);
        assert_int_equal(tar_read_header(g, &m, &err), -1);
        assert_true(err.msg[0] != '\0');
        fclose(g);
    }
}

static void test_bad_padding_and_truncation(void **state)
{
    (void)state;
    struct error err = {0};
    struct tar_member m;
    FILE *f = tmpfile();
    char pad[TAR_BLOCK - 10];
    memset(pad, 0, sizeof pad);
    pad[100] = 1;
    assert_int_equal(fwrite(pad, 1, sizeof pad, f), sizeof pad);
    rewind(f);
    assert_int_equal(tar_skip_pad(f, 10, &err), -1);
    assert_non_null(strstr(err.msg, "padding"));
    rewind(f);
    assert_int_equal(tar_read_header(f, &m, &err), -1);     /* shorter than a block */
    assert_non_null(strstr(err.msg, "truncated"));
    fclose(f);
    assert_int_equal(tar_write_header(1, "", 0, 0, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_round_trip),
        cmocka_unit_test(test_member_and_end),
        cmocka_unit_test(test_damaged_header),
        cmocka_unit_test(test_bad_padding_and_truncation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
