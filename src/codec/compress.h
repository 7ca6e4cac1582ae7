/* Compression of page data (lz4, zstd) and the `auto` policy's decision. */
#ifndef FERRY_CODEC_COMPRESS_H
#define FERRY_CODEC_COMPRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

enum compress_algo {
    COMPRESS_NONE = 0,
    COMPRESS_LZ4 = 1,
    COMPRESS_ZSTD = 2,
    COMPRESS_AUTO = 3,   /* option value only, never on the wire */
};

/* "none|lz4|zstd|auto" -> 0, or -EINVAL. */
int compress_parse(const char *s, enum compress_algo *out);
const char *compress_name(enum compress_algo a);

/* One per thread: holds the zstd contexts. Any compressor decompresses every
 * algorithm; one made for COMPRESS_NONE never compresses. */
struct compressor;
/* level: zstd level (1 if 0); lz4 acceleration (1 if 0). NULL with errno
 * EINVAL for COMPRESS_AUTO or an unknown algorithm, ENOMEM. */
struct compressor *compressor_new(enum compress_algo a, int level);
void compressor_free(struct compressor *c);
enum compress_algo compressor_algo(const struct compressor *c);
/* Worst-case compressed size of len bytes. */
size_t compress_bound(enum compress_algo a, size_t len);
/* Returns the compressed length, or -ENOSPC if the result is not smaller than
 * len or does not fit max (send uncompressed). */
ssize_t compressor_compress(struct compressor *c, const void *src, size_t len, void *dst,
                            size_t max);
/* Exactly `expect` bytes must come out, else -EINVAL; never writes past
 * dst+expect. */
ssize_t compressor_decompress(struct compressor *c, enum compress_algo a, const void *src,
                              size_t len, void *dst, size_t expect);

/* What `auto` knows, measured while migrating. Rates in bytes per second of
 * uncompressed data, except link_bps (bytes on the wire per second). */
struct compress_model {
    double link_bps;                 /* what the link carries */
    double compress_bps_per_thread;  /* one sender thread compressing */
    double decompress_bps;           /* the destination, all its threads */
    double ratio;                    /* compressed / original bytes, (0, 1] */
    int threads;                     /* sender threads compressing in parallel */
};
/* Compress when that shortens the time to move the data: the link, not the
 * CPU, is the bottleneck, and by a margin (5%) so noise does not flip it. */
bool compress_auto_worth(const struct compress_model *m);
/* Seconds to move `bytes` of page data, compressed or not: the slowest stage
 * of the pipeline (compress, link, decompress). For the last copy in the
 * pause: compress if it is shorter. Negative if the model is invalid. */
double compress_transfer_time(const struct compress_model *m, double bytes, bool compress);

#endif
