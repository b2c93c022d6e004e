/*
 * backup_priv.h - private to the backup module: the ustar reader and writer
 * (backup_tar.c) and the table of what a backup holds (backup.c).
 */
#ifndef MOAT_BACKUP_PRIV_H
#define MOAT_BACKUP_PRIV_H

#include <stdint.h>
#include <stdio.h>
#include "../core/core.h"

#define TAR_BLOCK 512
#define TAR_NAME_MAX 99           /* name[100] with its NUL: no prefix field needed */

struct tar_member {
    char name[TAR_NAME_MAX + 1];
    uint64_t size;
};

/* tar_write_header - a regular file's ustar header (mode 0600); 0 / -1 */
int tar_write_header(int fd, const char *name, uint64_t size, int64_t mtime, struct error *err);
/* tar_write_pad - zeros up to the next block after a member of size octets */
int tar_write_pad(int fd, uint64_t size, struct error *err);
/* tar_write_end - the two zero blocks that end an archive */
int tar_write_end(int fd, struct error *err);
/* tar_read_header - the next member's header from f: 1 a member, 0 the end,
 * -1 with err (bad checksum, not a regular file, a size out of range) */
int tar_read_header(FILE *f, struct tar_member *m, struct error *err);
/* tar_skip_pad - past the padding (zeros, else -1) after a member of size octets */
int tar_skip_pad(FILE *f, uint64_t size, struct error *err);
/* write_all - every octet of data to fd; 0 / -1 with errno */
int backup_write_all(int fd, const void *data, size_t len);

#endif
