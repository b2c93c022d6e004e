/*
 * spool_record.h - private to src/spool: the on-disk record format and the
 * pure encode/decode functions (no I/O), shared by spool.c, the unit tests
 * and the fuzz target.
 *
 * A record is
 *     magic   u32  SPOOL_REC_MAGIC
 *     type    u8   enum spool_rec_type
 *     flags   u8   0
 *     rsv     u16  0
 *     len     u32  payload octets (<= SPOOL_REC_MAX)
 *     crc     u32  CRC-32C over bytes 4..11 of the header and the payload
 *     payload len octets; always starts with the 16-digit queue id
 *     end     u32  SPOOL_REC_END
 * All integers little-endian.  A reader trusts a record only when every one
 * of these checks passes; the first record that fails ends the good part of
 * a segment (the torn tail).
 */
#ifndef MOAT_SPOOL_RECORD_H
#define MOAT_SPOOL_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "spool.h"

#define SPOOL_REC_MAGIC 0x52534f4du   /* "MOSR" */
#define SPOOL_REC_END   0x444e4552u   /* "REND" */
#define SPOOL_REC_HDR   16
#define SPOOL_REC_TRAILER 4
#define SPOOL_REC_OVERHEAD (SPOOL_REC_HDR + SPOOL_REC_TRAILER)
/* bound on one record's payload: a data chunk is at most SPOOL_CHUNK_MAX;
 * a commit record carries the envelope (bounded by the SMTP limits) */
#define SPOOL_REC_MAX (64u * 1024 * 1024)
#define SPOOL_CHUNK_MAX (256u * 1024)
/* bounds applied when decoding an envelope from disk */
#define SPOOL_MAX_RCPTS 100000u
#define SPOOL_MAX_EXTENTS 1000000u
#define SPOOL_MAX_STR (64u * 1024)
/* the envelope encoding written now; 1 (no prefix, hold) and 2 (no
 * forwarding) are still read, and re-encoded as this version */
#define SPOOL_ENV_VERSION 3

enum spool_rec_type {
    SPOOL_REC_DATA = 1,     /* qid, message octets */
    SPOOL_REC_COMMIT = 2,   /* qid, envelope, extents: the message exists */
    SPOOL_REC_RCPT = 3,     /* qid, index, state, diag */
    SPOOL_REC_WARNED = 4,   /* qid */
    SPOOL_REC_DONE = 5,     /* qid: forget the message */
    SPOOL_REC_RELEASE = 6,  /* qid: the hold is lifted (an administrator released it) */
    SPOOL_REC_ARCHIVED = 7, /* qid: the message is in the archive (sets SPOOL_F_ARCHIVED) */
};

/* where a piece of message data lives: payload octets of a DATA record */
struct spool_extent {
    uint32_t seg;
    uint32_t len;
    uint64_t off;
};

/* spool_rec_header - fill hdr[SPOOL_REC_HDR] for a payload given in parts */
void spool_rec_header(uint8_t *hdr, enum spool_rec_type type,
                      const void *const *parts, const size_t *lens, size_t n);
void spool_rec_trailer(uint8_t *tr);

/* spool_rec_check - validate the record at p (avail octets available).
 * Returns 1 and sets *type, *payload, *plen, *total when valid; 0 when more
 * octets are needed to decide (*total then holds the size needed, or 0 when
 * the header is incomplete); -1 when invalid. */
int spool_rec_check(const uint8_t *p, size_t avail, int *type,
                    const uint8_t **payload, uint32_t *plen, size_t *total);

/* spool_qid_parse - 16 upper-case hex digits -> value; -1 if malformed */
int spool_qid_parse(const char *s, uint64_t *out);
void spool_qid_format(char *dst, uint64_t v);   /* dst >= SPOOL_QID_LEN + 1 */

/* spool_env_encode - append the COMMIT payload (after the qid) to b */
void spool_env_encode(struct buf *b, const struct spool_envelope *env,
                      const struct spool_extent *ext, size_t n_ext);
/* spool_env_decode - parse a COMMIT payload (after the qid) into a freshly
 * allocated envelope and extent array; -1 when malformed (nothing allocated) */
int spool_env_decode(const uint8_t *p, size_t len, struct spool_envelope *env,
                     struct spool_extent **ext, size_t *n_ext);
void spool_env_clear(struct spool_envelope *env);
/* spool_env_copy - deep copy */
void spool_env_copy(struct spool_envelope *dst, const struct spool_envelope *src);

/* RCPT record payload after the qid */
void spool_rcpt_encode(struct buf *b, uint32_t idx, enum spool_rcpt_state st, const char *diag);
int spool_rcpt_decode(const uint8_t *p, size_t len, uint32_t *idx,
                      enum spool_rcpt_state *st, char **diag);

/* spool_set_compact_age - tests: how long a segment must have been closed
 * before compaction may rewrite its messages (default 60 s) */
void spool_set_compact_age(struct spool *sp, uint64_t ms);

#endif
