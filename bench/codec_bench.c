/* Micro benchmark of the transfer codecs (not part of make test):
 *   ninja -C build codec_bench && build/codec_bench
 * Prints zero-page check GB/s per implementation, delta encode/decode MB/s
 * for typical changes, and lz4/zstd MB/s and ratios on test-guest pages and
 * text. Rates are in uncompressed page bytes per second of one thread. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/compress.h"
#include "codec/delta.h"
#include "codec/zero.h"

#define PG CODEC_PAGE_SIZE
#define BENCH_NS 300000000ULL   /* per measurement */
#define WINDOW_NS 20000000ULL   /* rates are the best 20 ms window: the host is shared */

static uint64_t rng = 0x9E3779B97F4A7C15ULL;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static volatile uint64_t sink;

/* Runs round(ctx) (which returns the bytes it processed) for BENCH_NS and
 * returns the best rate over WINDOW_NS windows, in bytes per ns (GB/s). */
static double bench_run(uint64_t (*round)(void *), void *ctx)
{
    uint64_t start = now_ns(), w0 = start, wbytes = 0, t;
    double best = 0;

    do {
        wbytes += round(ctx);
        t = now_ns();
        if (t - w0 >= WINDOW_NS) {
            double r = (double)wbytes / (double)(t - w0);

            best = r > best ? r : best;
            w0 = t;
            wbytes = 0;
        }
    } while (t - start < BENCH_NS);
    return best;
}

/* ---- zero ---- */

struct zero_ctx {
    const uint8_t *buf;
    size_t npages;
};

static uint64_t zero_round(void *p)
{
    struct zero_ctx *z = p;

    for (size_t i = 0; i < z->npages; i++)
        sink += zero_page_check(z->buf + i * PG);
    return z->npages * PG;
}

static void bench_zero(const char *impl, const uint8_t *buf, size_t npages, const char *what)
{
    struct zero_ctx z = { buf, npages };

    if (zero_page_set_impl(impl)) {
        printf("zero %-6s %-22s unsupported\n", impl, what);
        return;
    }
    printf("zero %-6s %-22s %6.1f GB/s\n", impl, what, bench_run(zero_round, &z));
}

/* ---- test guest pages (guest/workload.c page_write) ---- */

static void guest_page(uint8_t *page, uint64_t p, uint32_t g)
{
    uint64_t w[PG / 8], base = (p * 0x9E3779B97F4A7C15UL) ^ ((uint64_t)g * 0xC2B2AE3D27D4EB4FUL);

    w[0] = p;
    w[1] = g;
    for (uint64_t j = 2; j < PG / 8; j++)
        w[j] = base ^ (j * 0x165667B19E3779F9UL);
    memcpy(page, w, PG);
}

static void fill_text(uint8_t *p, size_t n)
{
    static const char *const words[] = {
        "the ", "migration ", "of ", "a ", "page ", "is ", "dirty ", "when ", "guest ", "writes ",
        "it; ", "copy ", "again\n", "kernel ", "memory ", "0x7f3a ", "struct ", "int ", "= ", "{ ",
    };
    size_t o = 0;

    while (o < n) {
        const char *w = words[rnd() % 20];
        size_t l = strlen(w);

        memcpy(p + o, w, l > n - o ? n - o : l);
        o += l;
    }
}

/* ---- delta ---- */

typedef void (*mutate_fn)(uint8_t *page);

static void mut_word(uint8_t *p) { p[8 * (rnd() % 512)] ^= 1; }
static void mut_64(uint8_t *p) { memset(p + 64 * (rnd() % 64), (int)rnd() | 1, 64); }
static void mut_16words(uint8_t *p)
{
    for (int i = 0; i < 16; i++)
        p[8 * (rnd() % 512) + rnd() % 8] ^= 0x40;
}
static void mut_random(uint8_t *p)
{
    for (size_t i = 0; i < PG; i += 8) {
        uint64_t x = rnd();

        memcpy(p + i, &x, 8);
    }
}
static void mut_guest_gen(uint8_t *p)
{
    uint32_t g;

    memcpy(&g, p + 8, 4);
    guest_page(p, 7, g + 1);
}

#define NPAIRS 256

static uint8_t d_old[NPAIRS][PG], d_cur[NPAIRS][PG], d_enc[NPAIRS][DELTA_MAX_ENCODED];
static ssize_t d_len[NPAIRS];

static uint64_t delta_enc_round(void *p)
{
    for (int i = 0; i < NPAIRS; i++)
        sink += (uint64_t)delta_encode(d_old[i], d_cur[i], d_enc[i], PG);
    return (uint64_t)NPAIRS * PG;
}

/* The receiver's copy of the old page is counted in: it has to make one. */
static uint64_t delta_dec_round(void *p)
{
    static uint8_t work[PG];
    uint64_t n = 0;

    for (int i = 0; i < NPAIRS; i++) {
        if (d_len[i] <= 0)
            continue;
        memcpy(work, d_old[i], PG);
        sink += (uint64_t)delta_decode(d_enc[i], (size_t)d_len[i], work);
        n += PG;
    }
    return n;
}

static void bench_delta(const char *what, mutate_fn mut)
{
    uint64_t encbytes = 0, nospc = 0;

    for (int i = 0; i < NPAIRS; i++) {
        fill_text(d_old[i], PG);
        if (mut == mut_guest_gen)
            guest_page(d_old[i], 7, 1);
        memcpy(d_cur[i], d_old[i], PG);
        mut(d_cur[i]);
        d_len[i] = delta_encode(d_old[i], d_cur[i], d_enc[i], PG);
        if (d_len[i] > 0)
            encbytes += (uint64_t)d_len[i];
        else
            nospc++;
    }
    printf("delta %-28s encode %7.0f MB/s", what, 1e3 * bench_run(delta_enc_round, NULL));
    if (nospc == NPAIRS) {
        printf("  (every page -ENOSPC: sent in full)\n");
        return;
    }
    printf("  decode %7.0f MB/s  size %6.1f B/page (%.2f%%)\n",
           1e3 * bench_run(delta_dec_round, NULL), (double)encbytes / (double)(NPAIRS - nospc),
           100.0 * (double)encbytes / (double)(NPAIRS - nospc) / PG);
}

static struct delta_cache *cache;

static uint64_t cache_round(void *p)
{
    static uint8_t page[PG];

    for (int i = 0; i < 4096; i++) {
        uint64_t g = rnd() % 65536;

        if (!delta_cache_get(cache, g))
            delta_cache_put(cache, g, page);
    }
    return 4096;
}

static void bench_cache(void)
{
    cache = delta_cache_new(64ULL << 20);
    printf("delta cache 64 MiB, 256 MiB working set: %.2f M get(+put on miss)/s\n",
           1e3 * bench_run(cache_round, NULL));
    delta_cache_free(cache);
}

/* ---- compression ---- */

struct comp_ctx {
    struct compressor *c;
    enum compress_algo a;
    const uint8_t *src;
    uint8_t *dst, *back;
    ssize_t *len;
    size_t nchunks, chunk, cap;
};

static uint64_t comp_round(void *p)
{
    struct comp_ctx *x = p;

    for (size_t i = 0; i < x->nchunks; i++)
        sink += (uint64_t)compressor_compress(x->c, x->src + i * x->chunk, x->chunk,
                                              x->dst + i * x->cap, x->cap);
    return x->nchunks * x->chunk;
}

static uint64_t decomp_round(void *p)
{
    struct comp_ctx *x = p;

    for (size_t i = 0; i < x->nchunks; i++)
        if (x->len[i] > 0)
            sink += (uint64_t)compressor_decompress(x->c, x->a, x->dst + i * x->cap,
                                                    (size_t)x->len[i], x->back, x->chunk);
    return x->nchunks * x->chunk;
}

static void bench_compress(enum compress_algo a, int level, const char *what, const uint8_t *src,
                           size_t total, size_t chunk)
{
    struct comp_ctx x = { compressor_new(a, level), a, src, NULL, malloc(chunk), NULL,
                          total / chunk, chunk, compress_bound(a, chunk) };
    uint64_t out = 0;

    x.dst = malloc(x.nchunks * x.cap);
    x.len = calloc(x.nchunks, sizeof(*x.len));
    for (size_t i = 0; i < x.nchunks; i++) {
        x.len[i] = compressor_compress(x.c, src + i * chunk, chunk, x.dst + i * x.cap, x.cap);
        out += x.len[i] > 0 ? (uint64_t)x.len[i] : chunk;
    }
    printf("%-4s-%d %-10s %3zu KiB: ratio %.3f  compress %5.0f MB/s", compress_name(a), level,
           what, chunk / 1024, (double)out / (double)total, 1e3 * bench_run(comp_round, &x));
    if (out == total)
        printf("  (incompressible: sent plain)\n");
    else
        printf("  decompress %5.0f MB/s\n", 1e3 * bench_run(decomp_round, &x));
    compressor_free(x.c);
    free(x.dst);
    free(x.back);
    free(x.len);
}

int main(void)
{
    const char *impls[] = { "avx2", "sse2", "scalar" };
    size_t big = 64ULL << 20, corp = 4ULL << 20;
    uint8_t *zeros = calloc(1, big), *guest = malloc(corp), *text = malloc(corp);
    enum compress_algo algos[] = { COMPRESS_LZ4, COMPRESS_ZSTD, COMPRESS_ZSTD };
    int levels[] = { 1, 1, 3 };
    char *best;

    if (!zeros || !guest || !text)
        return 1;
    /* Touch every page (a value the compiler cannot see is zero), or they all
     * map the kernel's one zero page and the check runs from cache. */
    memset(zeros, (int)sink, big);
    best = strdup(zero_page_impl());
    for (size_t i = 0; i < 3; i++) {
        bench_zero(impls[i], zeros, 256, "zero pages, 1 MiB");
        bench_zero(impls[i], zeros, big / PG, "zero pages, 64 MiB");
    }
    zero_page_set_impl(best);
    printf("zero: default implementation here: %s\n", best);
    free(best);
    for (size_t i = 0; i < corp / PG; i++)
        guest_page(guest + i * PG, i, 1 + (uint32_t)(i % 5));
    fill_text(text, corp);

    bench_delta("1 word (1 byte flipped)", mut_word);
    bench_delta("64 bytes", mut_64);
    bench_delta("16 scattered bytes", mut_16words);
    bench_delta("whole page random", mut_random);
    bench_delta("test guest next generation", mut_guest_gen);
    bench_cache();

    for (size_t k = 0; k < 3; k++) {
        bench_compress(algos[k], levels[k], "test-guest", guest, corp, PG);
        bench_compress(algos[k], levels[k], "test-guest", guest, corp, 64 * 1024);
        bench_compress(algos[k], levels[k], "text", text, corp, PG);
        bench_compress(algos[k], levels[k], "text", text, corp, 64 * 1024);
    }
    free(zeros);
    free(guest);
    free(text);
    return 0;
}
