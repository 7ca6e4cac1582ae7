#include "codec/compress.h"

#include <errno.h>
#include <lz4.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include <zstd_errors.h>

struct compressor {
    enum compress_algo algo;
    int level;
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;   /* made on the first zstd decompression */
};

static const char *const compress_names[] = {
    [COMPRESS_NONE] = "none",
    [COMPRESS_LZ4] = "lz4",
    [COMPRESS_ZSTD] = "zstd",
    [COMPRESS_AUTO] = "auto",
};

int compress_parse(const char *s, enum compress_algo *out)
{
    for (int a = COMPRESS_NONE; a <= COMPRESS_AUTO; a++) {
        if (s && !strcmp(s, compress_names[a])) {
            *out = (enum compress_algo)a;
            return 0;
        }
    }
    return -EINVAL;
}

const char *compress_name(enum compress_algo a)
{
    if ((unsigned)a > COMPRESS_AUTO)
        return "unknown";
    return compress_names[a];
}

struct compressor *compressor_new(enum compress_algo a, int level)
{
    struct compressor *c;

    if (a != COMPRESS_NONE && a != COMPRESS_LZ4 && a != COMPRESS_ZSTD) {
        errno = EINVAL;
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->algo = a;
    c->level = level ? level : 1;
    if (a == COMPRESS_ZSTD) {
        c->cctx = ZSTD_createCCtx();
        if (!c->cctx || ZSTD_isError(ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_compressionLevel,
                                                             c->level))) {
            compressor_free(c);
            errno = ENOMEM;
            return NULL;
        }
    }
    return c;
}

void compressor_free(struct compressor *c)
{
    if (!c)
        return;
    ZSTD_freeCCtx(c->cctx);
    ZSTD_freeDCtx(c->dctx);
    free(c);
}

enum compress_algo compressor_algo(const struct compressor *c)
{
    return c->algo;
}

size_t compress_bound(enum compress_algo a, size_t len)
{
    switch (a) {
    case COMPRESS_LZ4:
        return len > LZ4_MAX_INPUT_SIZE ? 0 : (size_t)LZ4_compressBound((int)len);
    case COMPRESS_ZSTD:
        return ZSTD_compressBound(len);
    default:
        return len;
    }
}

ssize_t compressor_compress(struct compressor *c, const void *src, size_t len, void *dst,
                            size_t max)
{
    /* Only a result smaller than the input is worth sending. */
    size_t cap = len ? (max < len - 1 ? max : len - 1) : 0;
    size_t n;
    int r;

    if (!cap)
        return -ENOSPC;
    switch (c->algo) {
    case COMPRESS_LZ4:
        if (len > LZ4_MAX_INPUT_SIZE)
            return -EINVAL;
        r = LZ4_compress_fast(src, dst, (int)len, (int)(cap > INT32_MAX ? INT32_MAX : cap),
                              c->level);
        return r > 0 ? r : -ENOSPC;
    case COMPRESS_ZSTD:
        n = ZSTD_compress2(c->cctx, dst, cap, src, len);
        if (ZSTD_isError(n))
            return ZSTD_getErrorCode(n) == ZSTD_error_dstSize_tooSmall ? -ENOSPC : -EIO;
        return (ssize_t)n;
    default:
        return -ENOSPC;
    }
}

static ssize_t decompress_zstd(struct compressor *c, const void *src, size_t len, void *dst,
                               size_t expect)
{
    size_t n;

    if (!c->dctx) {
        c->dctx = ZSTD_createDCtx();
        if (!c->dctx)
            return -ENOMEM;
    }
    n = ZSTD_decompressDCtx(c->dctx, dst, expect, src, len);
    if (ZSTD_isError(n) || n != expect)
        return -EINVAL;
    return (ssize_t)n;
}

ssize_t compressor_decompress(struct compressor *c, enum compress_algo a, const void *src,
                              size_t len, void *dst, size_t expect)
{
    int r;

    switch (a) {
    case COMPRESS_NONE:
        if (len != expect)
            return -EINVAL;
        memcpy(dst, src, len);
        return (ssize_t)len;
    case COMPRESS_LZ4:
        if (len > INT32_MAX || expect > INT32_MAX)
            return -EINVAL;
        r = LZ4_decompress_safe(src, dst, (int)len, (int)expect);
        return r >= 0 && (size_t)r == expect ? r : -EINVAL;
    case COMPRESS_ZSTD:
        return decompress_zstd(c, src, len, dst, expect);
    default:
        return -EINVAL;
    }
}

/* ---- auto ---- */

static bool model_valid(const struct compress_model *m)
{
    return m->link_bps > 0 && m->compress_bps_per_thread > 0 && m->decompress_bps > 0 &&
           m->ratio > 0 && m->threads > 0 && isfinite(m->link_bps) &&
           isfinite(m->compress_bps_per_thread) && isfinite(m->decompress_bps) &&
           isfinite(m->ratio);
}

double compress_transfer_time(const struct compress_model *m, double bytes, bool compress)
{
    double t;

    if (!model_valid(m) || !(bytes >= 0))
        return -1;
    if (!compress)
        return bytes / m->link_bps;
    /* Compression, the link and decompression overlap (batches in flight),
     * so the slowest stage sets the pace. */
    t = bytes / (m->compress_bps_per_thread * m->threads);
    t = fmax(t, bytes * m->ratio / m->link_bps);
    return fmax(t, bytes / m->decompress_bps);
}

bool compress_auto_worth(const struct compress_model *m)
{
    double plain = compress_transfer_time(m, 1.0, false);
    double packed = compress_transfer_time(m, 1.0, true);

    return plain > 0 && packed > 0 && packed < 0.95 * plain;
}
