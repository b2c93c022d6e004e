/*
 * backup_tar.c - just enough POSIX ustar (pax "ustar" interchange format,
 * POSIX.1-1988) for moat's backups: regular files with names under 100
 * octets, written and read in order.  Any tar(1) can list and extract what
 * this writes.  Sizes of 8 GiB and more (an archive database) use the GNU
 * base-256 size field, which GNU tar, bsdtar and Python's tarfile read.
 *
 * The reader is strict: the header checksum must match, the magic must be
 * ustar, the type a regular file; anything else is an error, never skipped.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include "backup_priv.h"

/* field offsets and sizes of the ustar header (POSIX.1 pax, ustar format) */
enum {
    H_NAME = 0, H_MODE = 100, H_UID = 108, H_GID = 116, H_SIZE = 124, H_MTIME = 136,
    H_CHKSUM = 148, H_TYPE = 156, H_MAGIC = 257, H_VERSION = 263, H_UNAME = 265, H_GNAME = 297,
};
#define OCTAL_SIZE_MAX 077777777777ULL   /* 11 octal digits */

int backup_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* octal - value as width-1 octal digits and a NUL */
static void octal(char *dst, size_t width, uint64_t value)
{
    for (size_t i = width - 1; i-- > 0;) {
        dst[i] = (char)('0' + (value & 7));
        value >>= 3;
    }
    dst[width - 1] = '\0';
}

/* header_sum - the checksum: every octet, the checksum field read as spaces */
static unsigned header_sum(const unsigned char *h)
{
    unsigned sum = 0;
    for (int i = 0; i < TAR_BLOCK; i++)
        sum += (i >= H_CHKSUM && i < H_CHKSUM + 8) ? ' ' : h[i];
    return sum;
}

int tar_write_header(int fd, const char *name, uint64_t size, int64_t mtime, struct error *err)
{
    unsigned char h[TAR_BLOCK];
    size_t nlen = strlen(name);
    if (nlen == 0 || nlen > TAR_NAME_MAX) {
        error_set(err, "", "tar: member name \"%s\" too long", name);
        return -1;
    }
    memset(h, 0, sizeof h);
    memcpy(h + H_NAME, name, nlen);
    octal((char *)h + H_MODE, 8, 0600);
    octal((char *)h + H_UID, 8, 0);
    octal((char *)h + H_GID, 8, 0);
    if (size <= OCTAL_SIZE_MAX) {
        octal((char *)h + H_SIZE, 12, size);
    } else {
        /* GNU base-256: high bit of the first octet set, big-endian value */
        h[H_SIZE] = 0x80;
        for (int i = 11; i >= 1; i--, size >>= 8)
            h[H_SIZE + i] = (unsigned char)(size & 0xff);
    }
    octal((char *)h + H_MTIME, 12, mtime > 0 ? (uint64_t)mtime : 0);
    h[H_TYPE] = '0';
    memcpy(h + H_MAGIC, "ustar", 6);
    memcpy(h + H_VERSION, "00", 2);
    memcpy(h + H_UNAME, "moat", 4);
    memcpy(h + H_GNAME, "moat", 4);
    /* six octal digits, NUL, space: what tar(1) writes */
    octal((char *)h + H_CHKSUM, 7, header_sum(h));
    h[H_CHKSUM + 7] = ' ';
    if (backup_write_all(fd, h, sizeof h) < 0) {
        error_set(err, "", "tar: cannot write: %s", strerror(errno));
        return -1;
    }
    return 0;
}

int tar_write_pad(int fd, uint64_t size, struct error *err)
{
    static const char zeros[TAR_BLOCK];
    size_t pad = (TAR_BLOCK - (size % TAR_BLOCK)) % TAR_BLOCK;
    if (pad > 0 && backup_write_all(fd, zeros, pad) < 0) {
        error_set(err, "", "tar: cannot write: %s", strerror(errno));
        return -1;
    }
    return 0;
}

int tar_write_end(int fd, struct error *err)
{
    static const char zeros[2 * TAR_BLOCK];
    if (backup_write_all(fd, zeros, sizeof zeros) < 0) {
        error_set(err, "", "tar: cannot write: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* parse_octal - a NUL- or space-terminated octal field; -1 when malformed */
static int parse_octal(const unsigned char *f, size_t width, uint64_t *out)
{
    uint64_t v = 0;
    size_t i = 0;
    while (i < width && f[i] == ' ')
        i++;
    size_t digits = 0;
    for (; i < width && f[i] >= '0' && f[i] <= '7'; i++, digits++) {
        if (v > (UINT64_MAX >> 3))
            return -1;
        v = (v << 3) | (uint64_t)(f[i] - '0');
    }
    if (digits == 0)
        return -1;
    for (; i < width; i++)
        if (f[i] != ' ' && f[i] != '\0')
            return -1;
    *out = v;
    return 0;
}

/* parse_size - octal, or GNU base-256 (positive, at most 2^63) */
static int parse_size(const unsigned char *f, uint64_t *out)
{
    if ((f[0] & 0x80) == 0)
        return parse_octal(f, 12, out);
    if (f[0] != 0x80 || f[1] != 0 || f[2] != 0 || f[3] != 0 || (f[4] & 0x80))
        return -1;
    uint64_t v = 0;
    for (int i = 4; i < 12; i++)
        v = (v << 8) | f[i];
    *out = v;
    return 0;
}

static bool all_zero(const unsigned char *h)
{
    for (int i = 0; i < TAR_BLOCK; i++)
        if (h[i] != 0)
            return false;
    return true;
}

int tar_read_header(FILE *f, struct tar_member *m, struct error *err)
{
    unsigned char h[TAR_BLOCK];
    if (fread(h, 1, sizeof h, f) != sizeof h) {
        error_set(err, "", "truncated: the archive ends inside a header (no end-of-archive blocks)");
        return -1;
    }
    if (all_zero(h))
        return 0;
    uint64_t sum;
    if (parse_octal(h + H_CHKSUM, 8, &sum) < 0 || sum != header_sum(h)) {
        error_set(err, "", "not a moat backup, or damaged: a tar header's checksum does not match");
        return -1;
    }
    if (memcmp(h + H_MAGIC, "ustar", 5) != 0) {
        error_set(err, "", "not a ustar archive");
        return -1;
    }
    if (h[H_TYPE] != '0' && h[H_TYPE] != '\0') {
        error_set(err, "", "unexpected tar member of type '%c' (only regular files)", h[H_TYPE]);
        return -1;
    }
    if (memchr(h + H_NAME, '\0', 100) == NULL || h[H_NAME] == '\0') {
        error_set(err, "", "a tar member without a valid name");
        return -1;
    }
    str_copy(m->name, sizeof m->name, (const char *)h + H_NAME);
    if (parse_size(h + H_SIZE, &m->size) < 0) {
        error_set(err, "", "tar member %s: malformed size", m->name);
        return -1;
    }
    return 1;
}

int tar_skip_pad(FILE *f, uint64_t size, struct error *err)
{
    unsigned char pad[TAR_BLOCK];
    size_t n = (TAR_BLOCK - (size % TAR_BLOCK)) % TAR_BLOCK;
    if (n > 0 && fread(pad, 1, n, f) != n) {
        error_set(err, "", "truncated: the archive ends inside a member");
        return -1;
    }
    /* strict: a changed octet in the padding is damage too */
    for (size_t i = 0; i < n; i++)
        if (pad[i] != 0) {
            error_set(err, "", "damaged: the padding after a member is not zeros");
            return -1;
        }
    return 0;
}
