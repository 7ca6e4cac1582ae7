/* Adapter from the engine to src/codec/. Until the codecs are in the tree
 * this file offers only what needs no codec (zero check, no compression, no
 * delta); the handshake then refuses to use what is missing. */
#include "state/xcodec.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "state/pages.h"

const char *xc_algo_name(enum xc_algo a)
{
    static const char *const names[] = { "none", "lz4", "zstd", "auto" };
    return a <= XC_AUTO ? names[a] : "?";
}

int xc_algo_parse(const char *s, enum xc_algo *a)
{
    for (int i = XC_NONE; i <= XC_AUTO; i++)
        if (s && strcmp(s, xc_algo_name(i)) == 0)
            return *a = i, 0;
    return -EINVAL;
}

/* Link-bound when one batch compresses (on all threads) faster than its
 * saved bytes would take to cross the link. */
bool xc_auto_worth(uint64_t link_bps, uint64_t comp_bps, unsigned threads, double ratio)
{
    if (!link_bps || !comp_bps || ratio >= 0.95)
        return false;
    return xc_transfer_ns(1u << 20, link_bps, comp_bps, threads, ratio, true) <
           xc_transfer_ns(1u << 20, link_bps, comp_bps, threads, ratio, false);
}

uint64_t xc_transfer_ns(uint64_t n, uint64_t link_bps, uint64_t comp_bps, unsigned threads,
                        double ratio, bool compress)
{
    double link_ns, cpu_ns;

    if (!link_bps)
        return UINT64_MAX;
    link_ns = (double)n * 1e9 / (double)link_bps;
    if (!compress)
        return (uint64_t)link_ns;
    if (!comp_bps)
        return UINT64_MAX;
    cpu_ns = (double)n * 1e9 / ((double)comp_bps * (threads ? threads : 1));
    /* compression and sending overlap across batches: the slower one sets the pace */
    return (uint64_t)(cpu_ns > link_ns * ratio ? cpu_ns : link_ns * ratio);
}

#if __has_include("codec/compress.h")
#include "state/xcodec_real.h"
#else

bool xc_zero(const void *page) { return page_is_zero(page); }
bool xc_algo_built(enum xc_algo a) { return a == XC_NONE; }
bool xc_delta_built(void) { return false; }
struct xc_comp *xc_comp_new(void) { return calloc(1, 1); }
void xc_comp_free(struct xc_comp *c) { free(c); }

long xc_compress(struct xc_comp *c, enum xc_algo a, const void *in, size_t n, void *out,
                 size_t max)
{
    return -ENOSPC;
}

int xc_decomp_init(struct xc_decomp *d) { d->impl = NULL; return 0; }
void xc_decomp_free(struct xc_decomp *d) { d->impl = NULL; }

int xc_decompress(struct xc_decomp *d, enum xc_algo a, const void *in, size_t n, void *out,
                  size_t n_out)
{
    return -EBADMSG;
}

long xc_delta_encode(const void *old, const void *new_page, void *out, size_t max)
{
    return -ENOSPC;
}

int xc_delta_decode(const void *in, size_t n, void *page) { return -EBADMSG; }
struct xc_cache *xc_cache_new(uint64_t bytes) { return NULL; }
void xc_cache_free(struct xc_cache *c) { }
const void *xc_cache_get(struct xc_cache *c, uint64_t gfn) { return NULL; }
void xc_cache_put(struct xc_cache *c, uint64_t gfn, const void *page) { }
void xc_cache_forget(struct xc_cache *c, uint64_t gfn) { }
#endif
