/* Adapter from the transfer engine to src/codec/: per-thread compressors
 * for both algorithms, the delta cache, and the auto model. */
#include "state/xcodec.h"

#include <errno.h>
#include <stdlib.h>

#include "codec/compress.h"
#include "codec/delta.h"
#include "codec/zero.h"

/* Not measured on the source: zstd and lz4 decode at 1 GB/s and more per
 * applier thread, so the destination is rarely the slow stage. */
#define XC_DECOMPRESS_BPS_PER_THREAD 1e9

struct xc_comp {
    struct compressor *lz4, *zstd;
};

bool xc_zero(const void *page) { return zero_page_check(page); }

/* enum xc_algo is enum compress_algo, value for value (the wire carries it). */
_Static_assert((int)XC_LZ4 == (int)COMPRESS_LZ4 && (int)XC_ZSTD == (int)COMPRESS_ZSTD &&
               (int)XC_AUTO == (int)COMPRESS_AUTO, "xc_algo and compress_algo differ");

const char *xc_algo_name(enum xc_algo a)
{
    return compress_name((enum compress_algo)a);
}

int xc_algo_parse(const char *s, enum xc_algo *a)
{
    enum compress_algo c;
    int ret = compress_parse(s, &c);

    if (ret == 0)
        *a = (enum xc_algo)c;
    return ret;
}

struct xc_comp *xc_comp_new(void)
{
    struct xc_comp *c = calloc(1, sizeof(*c));

    if (c && (!(c->lz4 = compressor_new(COMPRESS_LZ4, 1)) ||
              !(c->zstd = compressor_new(COMPRESS_ZSTD, 1)))) {
        xc_comp_free(c);
        return NULL;
    }
    return c;
}

void xc_comp_free(struct xc_comp *c)
{
    if (!c)
        return;
    compressor_free(c->lz4);
    compressor_free(c->zstd);
    free(c);
}

long xc_compress(struct xc_comp *c, enum xc_algo a, const void *in, size_t n, void *out,
                 size_t max)
{
    struct compressor *k = a == XC_LZ4 ? c->lz4 : a == XC_ZSTD ? c->zstd : NULL;
    ssize_t r = k ? compressor_compress(k, in, n, out, max) : -ENOSPC;

    return r > 0 ? (long)r : -ENOSPC;
}

int xc_decomp_init(struct xc_decomp *d)
{
    d->impl = compressor_new(COMPRESS_ZSTD, 1);
    return d->impl ? 0 : -ENOMEM;
}

void xc_decomp_free(struct xc_decomp *d)
{
    compressor_free(d->impl);
    d->impl = NULL;
}

int xc_decompress(struct xc_decomp *d, enum xc_algo a, const void *in, size_t n, void *out,
                  size_t n_out)
{
    if (a != XC_LZ4 && a != XC_ZSTD)
        return -EBADMSG;
    return compressor_decompress(d->impl, (enum compress_algo)a, in, n, out, n_out) ==
           (ssize_t)n_out ? 0 : -EBADMSG;
}

long xc_delta_encode(const void *old, const void *new_page, void *out, size_t max)
{
    ssize_t r = delta_encode(old, new_page, out, max);

    return r < 0 ? -ENOSPC : (long)r;
}

int xc_delta_decode(const void *in, size_t n, void *page)
{
    return delta_decode(in, n, page) < 0 ? -EBADMSG : 0;
}

int xc_delta_check(const void *in, size_t n)
{
    return delta_check(in, n) < 0 ? -EBADMSG : 0;
}

struct xc_cache *xc_cache_new(uint64_t bytes)
{
    return (struct xc_cache *)delta_cache_new(bytes);
}

void xc_cache_free(struct xc_cache *c)
{
    if (c)
        delta_cache_free((struct delta_cache *)c);
}

const void *xc_cache_get(struct xc_cache *c, uint64_t gfn)
{
    return delta_cache_get((struct delta_cache *)c, gfn);
}

void xc_cache_put(struct xc_cache *c, uint64_t gfn, const void *page)
{
    delta_cache_put((struct delta_cache *)c, gfn, page);
}

void xc_cache_forget(struct xc_cache *c, uint64_t gfn)
{
    delta_cache_forget((struct delta_cache *)c, gfn);
}

static struct compress_model xc_model(uint64_t link_bps, uint64_t comp_bps, unsigned threads,
                                      double ratio)
{
    return (struct compress_model){
        .link_bps = (double)link_bps, .compress_bps_per_thread = (double)comp_bps,
        .decompress_bps = XC_DECOMPRESS_BPS_PER_THREAD * (threads ? threads : 1),
        .ratio = ratio > 0 && ratio <= 1 ? ratio : 1, .threads = (int)(threads ? threads : 1),
    };
}

bool xc_auto_worth(uint64_t link_bps, uint64_t comp_bps, unsigned threads, double ratio)
{
    struct compress_model m = xc_model(link_bps, comp_bps, threads, ratio);

    return compress_auto_worth(&m);
}

uint64_t xc_transfer_ns(uint64_t n, uint64_t link_bps, uint64_t comp_bps, unsigned threads,
                        double ratio, bool compress)
{
    struct compress_model m = xc_model(link_bps, comp_bps, threads, ratio);
    double t = compress_transfer_time(&m, (double)n, compress);

    return t < 0 ? UINT64_MAX : (uint64_t)(t * 1e9);
}
