/* The transfer engine's view of the page codecs (src/codec/: zero-page
 * check, XOR+RLE delta with its bounded cache, lz4/zstd): one place that
 * adapts their calls to what the engine needs. */
#ifndef FERRY_STATE_XCODEC_H
#define FERRY_STATE_XCODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum xc_algo { XC_NONE = 0, XC_LZ4 = 1, XC_ZSTD = 2, XC_AUTO = 3 };

struct xc_comp;      /* per sender thread */
struct xc_decomp;    /* per applier thread */
struct xc_cache;     /* per sender thread: what was last sent, by gfn */

bool xc_zero(const void *page);
const char *xc_algo_name(enum xc_algo a);
/* "none", "lz4", "zstd", "auto"; -EINVAL otherwise. */
int xc_algo_parse(const char *s, enum xc_algo *a);

struct xc_comp *xc_comp_new(void);
void xc_comp_free(struct xc_comp *c);
/* Bytes of out, or -ENOSPC when the result would not be smaller. */
long xc_compress(struct xc_comp *c, enum xc_algo a, const void *in, size_t n, void *out,
                 size_t max);

struct xc_decomp {
    void *impl;
};
int xc_decomp_init(struct xc_decomp *d);
void xc_decomp_free(struct xc_decomp *d);
/* Exactly n_out bytes or -EBADMSG. */
int xc_decompress(struct xc_decomp *d, enum xc_algo a, const void *in, size_t n, void *out,
                  size_t n_out);

/* Bytes of out (0: identical), or -ENOSPC when larger than max. */
long xc_delta_encode(const void *old, const void *new_page, void *out, size_t max);
/* Applies a delta onto page in place; -EBADMSG on a malformed delta. */
int xc_delta_decode(const void *in, size_t n, void *page);
int xc_delta_check(const void *in, size_t n);

struct xc_cache *xc_cache_new(uint64_t bytes);
void xc_cache_free(struct xc_cache *c);
const void *xc_cache_get(struct xc_cache *c, uint64_t gfn);
void xc_cache_put(struct xc_cache *c, uint64_t gfn, const void *page);
void xc_cache_forget(struct xc_cache *c, uint64_t gfn);

/* auto: compress when the link, not the CPU, limits (rates in bytes/s;
 * ratio = out/in of recent batches). */
bool xc_auto_worth(uint64_t link_bps, uint64_t comp_bps, unsigned threads, double ratio);
/* Time to move n bytes over the link, compressing at comp_bps with ratio. */
uint64_t xc_transfer_ns(uint64_t n, uint64_t link_bps, uint64_t comp_bps, unsigned threads,
                        double ratio, bool compress);

#endif
