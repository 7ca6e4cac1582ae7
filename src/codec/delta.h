/* Delta encoding of pages sent again (XOR + run-length, in the spirit of
 * QEMU's XBZRLE; format in docs/STREAM.md "Page encodings"), and the bounded
 * cache of what was last sent that the sender encodes against. */
#ifndef FERRY_CODEC_DELTA_H
#define FERRY_CODEC_DELTA_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "codec/zero.h"

/* Longest encoding delta_encode() can produce for one page (every byte changed). */
#define DELTA_MAX_ENCODED (CODEC_PAGE_SIZE + 4)

/* XOR of new against old, run-length encoded. Returns the encoded length
 * (> 0), 0 if the pages are identical (nothing to send), or -ENOSPC if the
 * encoding would exceed max (the caller sends the full page instead). */
ssize_t delta_encode(const uint8_t *old, const uint8_t *new_page, uint8_t *out, size_t max);
/* Applies an encoding to page (holding the old content) in place. -EINVAL on
 * malformed input; never reads past in+len nor writes outside page[0..4095].
 * A failed decode may leave page partly modified (the caller discards it). */
int delta_decode(const uint8_t *in, size_t len, uint8_t *page);
/* What delta_decode() would refuse, without a page: 0 or -EINVAL. */
int delta_check(const uint8_t *in, size_t len);

/* Copies of the pages last sent, by guest frame number. NOT thread-safe: one
 * per sender worker.
 * Sender use: zero page -> marker (and forget); else if get() has a copy and
 * delta_encode(copy, page, out, limit) > 0 -> send the delta; else the full
 * page. Then put() the exact bytes sent (the batch's copy, not guest RAM that
 * may have changed since), so the cache always equals the destination's page.
 * A limit well under 4096 (e.g. 2048) skips deltas that barely save bytes;
 * dense changes give up early. Forget pages whose send failed. */
struct delta_cache;
/* Holds about `bytes` of page copies (+ a small index); NULL on ENOMEM, or
 * with errno EINVAL if bytes is less than one page. */
struct delta_cache *delta_cache_new(size_t bytes);
void delta_cache_free(struct delta_cache *c);
/* The last stored copy of gfn, or NULL; valid until the next put/forget. */
const uint8_t *delta_cache_get(struct delta_cache *c, uint64_t gfn);
/* Stores or replaces gfn's copy; evicts (CLOCK) when full. Returns 0. */
int delta_cache_put(struct delta_cache *c, uint64_t gfn, const uint8_t *page);
void delta_cache_forget(struct delta_cache *c, uint64_t gfn);

struct delta_cache_stats {
    uint64_t hits, misses, evictions, entries;
};
void delta_cache_stats(const struct delta_cache *c, struct delta_cache_stats *s);
/* Pages the cache holds at most. */
size_t delta_cache_capacity(const struct delta_cache *c);

#endif
