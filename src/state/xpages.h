/* Pages of the parallel transfer engine (docs/STREAM.md, REC_XPAGES): a
 * batch of entries (zero marker, full page, or XOR delta against the copy
 * the destination already holds) whose body may be compressed as a whole.
 * Parsing and applying are here; the sender is src/migration/xfer.c. */
#ifndef FERRY_STATE_XPAGES_H
#define FERRY_STATE_XPAGES_H

#include <stdbool.h>
#include <stdint.h>

#include "state/xcodec.h"
#include "state/stream.h"
#include "vm/memory.h"

#define XPAGE_ZERO  0x1ULL   /* the page is zero (the destination may hold an old copy) */
#define XPAGE_DATA  0x2ULL   /* 4096 bytes in the body */
#define XPAGE_DELTA 0x4ULL   /* u32 n, then n bytes of XOR + run-length delta */

#define XPAGES_HDR      24
#define XPAGES_MAX_RAW  (STREAM_PAGES_PER_REC * (STREAM_PAGE_SIZE + 4))
#define XPAGES_MAX_LEN  (XPAGES_HDR + 8 * STREAM_PAGES_PER_REC + XPAGES_MAX_RAW)
#define XPAGES_MAX_DELTA (STREAM_PAGE_SIZE - 256)   /* bigger deltas go as full pages */
/* With a compressed body a delta may be as long as the page itself: the XOR
 * of a page whose every word changed the same way is not shorter, but it
 * compresses where the page does not. The receiver accepts up to this. */
#define XPAGES_MAX_DELTA_COMPRESSED (STREAM_PAGE_SIZE - 4)

/* Wire layout, little-endian, 24 bytes; entries (u64 gpa | kind) and the
 * body follow. */
struct xpages_hdr {
    uint32_t count;       /* 1..512 entries */
    uint32_t round;       /* pre-copy round (the final copy: the round after the last) */
    uint32_t algo;        /* enum xc_algo of the body: none, lz4, zstd */
    uint32_t body_len;    /* body bytes on the wire */
    uint32_t raw_len;     /* body bytes once decompressed (== body_len if none) */
    uint32_t reserved;
};

/* Per applier: decompression context and a body buffer. */
struct xpages_ctx {
    struct xc_decomp dc;
    uint8_t *raw;         /* XPAGES_MAX_RAW bytes */
    uint32_t last_round;  /* per connection: a batch of an older round is refused */
    uint64_t zero, data, delta;
};

int xpages_ctx_init(struct xpages_ctx *c);
void xpages_ctx_free(struct xpages_ctx *c);

/* Which of n connections carries page gfn: runs of 512 pages (2 MiB) stay
 * together, and a page always travels on the same connection, so TCP keeps
 * its copies in order. */
static inline unsigned xfer_conn_of(uint64_t gfn, unsigned n)
{
    return n ? (unsigned)((gfn >> 9) % n) : 0;
}

/* A connection's batches come in round order; an older one is stale. */
static inline bool xfer_round_ok(uint32_t last, uint32_t round)
{
    return round >= last;
}

/* Header, count, kinds, lengths; not the bounds (xpages_apply does them). */
int xpages_parse(const uint8_t *p, uint64_t len, struct xpages_hdr *h, const char **why);
/* Checks the whole record (every entry inside RAM, the body exactly
 * consumed), then writes it into guest memory. */
int xpages_apply(struct guest_mem *mem, const uint8_t *p, uint64_t len,
                 struct xpages_ctx *c, const char **why);

#endif
