/*
 * fuzz_spool_record.c - libFuzzer target for the spool record decoders
 * (src/spool/spool_record.c): recovery reads segment files that a crash,
 * a disk fault or an intruder may have damaged.  The input is scanned as a
 * segment; every valid COMMIT/RCPT payload is decoded; a decoded envelope
 * is re-encoded and must decode to the same thing.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "spool/spool_record.h"

static void check_commit(const uint8_t *p, size_t len)
{
    struct spool_envelope env;
    struct spool_extent *ext;
    size_t n_ext;
    if (spool_env_decode(p, len, &env, &ext, &n_ext) < 0)
        return;
    struct buf b;
    buf_init(&b);
    spool_env_encode(&b, &env, ext, n_ext);
    if (p[0] == SPOOL_ENV_VERSION) {
        if (b.len != len || memcmp(b.data, p, len) != 0)
            abort();   /* the encoding is canonical: what decodes, re-encodes identically */
    } else {
        /* an older version is upgraded: the upgrade decodes and then re-encodes identically */
        struct spool_envelope env2;
        struct spool_extent *ext2;
        size_t n2;
        if (spool_env_decode((const uint8_t *)b.data, b.len, &env2, &ext2, &n2) < 0)
            abort();
        struct buf b2;
        buf_init(&b2);
        spool_env_encode(&b2, &env2, ext2, n2);
        if (b2.len != b.len || memcmp(b2.data, b.data, b.len) != 0)
            abort();
        buf_free(&b2);
        spool_env_clear(&env2);
        free(ext2);
    }
    buf_free(&b);
    spool_env_clear(&env);
    free(ext);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    /* the raw input is also tried as bare payloads */
    check_commit(data, size);
    uint32_t idx;
    enum spool_rcpt_state st;
    char *diag;
    if (spool_rcpt_decode(data, size, &idx, &st, &diag) == 0)
        free(diag);
    while (off < size) {
        int type;
        const uint8_t *pl;
        uint32_t plen;
        size_t total;
        if (spool_rec_check(data + off, size - off, &type, &pl, &plen, &total) != 1)
            break;
        if (total == 0 || total > size - off || plen < SPOOL_QID_LEN ||
            type < SPOOL_REC_DATA || type > SPOOL_REC_ARCHIVED)
            abort();
        if (type == SPOOL_REC_COMMIT)
            check_commit(pl + SPOOL_QID_LEN, plen - SPOOL_QID_LEN);
        off += total;
    }
    return 0;
}
