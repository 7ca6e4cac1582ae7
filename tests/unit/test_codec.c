/* The transfer codecs: zero-page detection (every implementation), delta
 * encoding (random round trips, malformed input), the delta cache, lz4/zstd
 * and the `auto` compression decision. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "codec/compress.h"
#include "codec/delta.h"
#include "codec/zero.h"

#define PG CODEC_PAGE_SIZE

static uint64_t rng_state = 0x243F6A8885A308D3ULL;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rnd();
}

/* ---- zero pages ---- */

static const char *const zero_impls[] = { "avx2", "sse2", "scalar" };

static void zero_check_impl(uint8_t *page)
{
    memset(page, 0, PG);
    assert_true(zero_page_check(page));
    for (unsigned i = 0; i < PG; i++) {
        page[i] = (uint8_t)(1u << (i % 8));
        if (zero_page_check(page))
            fail_msg("%s missed a non-zero byte at %u", zero_page_impl(), i);
        page[i] = 0;
    }
    assert_true(zero_page_check(page));
}

static void test_zero_every_impl(void **state)
{
    static uint8_t buf[PG + 64] __attribute__((aligned(64)));
    int tested = 0;

    (void)state;
    for (size_t k = 0; k < sizeof(zero_impls) / sizeof(zero_impls[0]); k++) {
        int r = zero_page_set_impl(zero_impls[k]);

        if (r == -ENOTSUP)
            continue;
        assert_int_equal(r, 0);
        assert_string_equal(zero_page_impl(), zero_impls[k]);
        tested++;
        /* aligned, and every misalignment within a cache line */
        for (unsigned off = 0; off < 64; off += (off < 8 ? 1 : 7))
            zero_check_impl(buf + off);
    }
    assert_true(tested >= 1);
#if defined(__x86_64__)
    assert_true(tested == 3 || !__builtin_cpu_supports("avx2"));
#endif
    assert_int_equal(zero_page_set_impl("avx512"), -EINVAL);
    assert_int_equal(zero_page_set_impl("scalar"), 0);
}

static void test_zero_default_impl(void **state)
{
    (void)state;
#if defined(__x86_64__)
    /* The best supported one; set_impl by name gets back to it. */
    assert_int_equal(zero_page_set_impl(__builtin_cpu_supports("avx2") ? "avx2" : "sse2"), 0);
#endif
    assert_non_null(zero_page_impl());
}

/* ---- delta ---- */

static void delta_roundtrip(const uint8_t *old, const uint8_t *new_page)
{
    static uint8_t enc[DELTA_MAX_ENCODED], page[PG];
    ssize_t n = delta_encode(old, new_page, enc, sizeof(enc));

    assert_true(n >= 0);
    if (!memcmp(old, new_page, PG)) {
        assert_int_equal(n, 0);
        return;
    }
    assert_true(n > 0 && n <= DELTA_MAX_ENCODED);
    memcpy(page, old, PG);
    assert_int_equal(delta_decode(enc, (size_t)n, page), 0);
    assert_memory_equal(page, new_page, PG);
    /* One byte less room than needed: -ENOSPC, never a partial encoding. */
    assert_int_equal(delta_encode(old, new_page, enc, (size_t)n - 1), -ENOSPC);
    assert_int_equal(delta_encode(old, new_page, enc, (size_t)n), n);
}

static void test_delta_identical(void **state)
{
    static uint8_t a[PG], enc[16];

    (void)state;
    fill_random(a, PG);
    assert_int_equal(delta_encode(a, a, enc, sizeof(enc)), 0);
    assert_int_equal(delta_encode(a, a, enc, 0), 0);
}

static void test_delta_shapes(void **state)
{
    static uint8_t old[PG], cur[PG], enc[DELTA_MAX_ENCODED];
    ssize_t n;

    (void)state;
    fill_random(old, PG);
    /* one changed word: 2 varint bytes + at most 8 XOR bytes */
    memcpy(cur, old, PG);
    cur[800] ^= 0x11;
    cur[807] ^= 0x22;
    n = delta_encode(old, cur, enc, sizeof(enc));
    assert_int_equal(n, 2 + 1 + 8);   /* skip 800 takes 2 bytes, length 8 one */
    delta_roundtrip(old, cur);
    /* first and last byte of the page */
    memcpy(cur, old, PG);
    cur[0] ^= 1;
    cur[PG - 1] ^= 0x80;
    delta_roundtrip(old, cur);
    /* every byte: dense, bigger than the page */
    for (unsigned i = 0; i < PG; i++)
        cur[i] = (uint8_t)~old[i];
    n = delta_encode(old, cur, enc, sizeof(enc));
    assert_int_equal(n, 1 + 2 + PG);
    assert_int_equal(delta_encode(old, cur, enc, PG), -ENOSPC);
    delta_roundtrip(old, cur);
}

/* Thousands of random pairs: sparse single bytes, clustered runs, dense. */
static void test_delta_random(void **state)
{
    static uint8_t old[PG], cur[PG];

    (void)state;
    for (int iter = 0; iter < 4000; iter++) {
        int kind = iter % 4, changes = 1 + (int)(rnd() % 64);

        fill_random(old, PG);
        if (iter % 7 == 0)
            memset(old, 0, PG);
        memcpy(cur, old, PG);
        for (int c = 0; c < changes; c++) {
            size_t pos = rnd() % PG;
            size_t len = kind == 0 ? 1 : kind == 1 ? 1 + rnd() % 64 : kind == 2 ? 1 + rnd() % 16
                                                                      : 1 + rnd() % PG;

            if (len > PG - pos)
                len = PG - pos;
            for (size_t k = 0; k < len; k++)
                cur[pos + k] = (uint8_t)rnd();
        }
        if (kind == 3 && iter % 8 == 3)
            memcpy(cur, old, PG);   /* identical */
        delta_roundtrip(old, cur);
    }
}

static void test_delta_tiny_max(void **state)
{
    static uint8_t old[PG], cur[PG], enc[8];

    (void)state;
    memcpy(cur, old, PG);
    cur[9] = 1;
    assert_int_equal(delta_encode(old, cur, enc, 0), -ENOSPC);
    assert_int_equal(delta_encode(old, cur, enc, 2), -ENOSPC);
    assert_int_equal(delta_encode(old, cur, enc, 3), 3);
    assert_memory_equal(enc, ((uint8_t[]){ 9, 1, 1 }), 3);
}

static int decode_buf(const uint8_t *in, size_t len)
{
    static uint8_t page[PG];

    memset(page, 0x5a, PG);
    return delta_decode(in, len, page);
}

static void test_delta_malformed(void **state)
{
    static uint8_t big[2 + 2 + PG + 8];
    (void)state;
    /* valid: skip 3, 2 bytes; skip 1, 1 byte */
    assert_int_equal(decode_buf((const uint8_t[]){ 3, 2, 0xaa, 0xbb, 1, 1, 0xcc }, 7), 0);
    /* empty */
    assert_int_equal(decode_buf((const uint8_t[]){ 0 }, 0), -EINVAL);
    /* truncated: data short, missing length, varint cut */
    assert_int_equal(decode_buf((const uint8_t[]){ 3, 2, 0xaa }, 3), -EINVAL);
    assert_int_equal(decode_buf((const uint8_t[]){ 3 }, 1), -EINVAL);
    assert_int_equal(decode_buf((const uint8_t[]){ 0x80 | 3 }, 1), -EINVAL);
    assert_int_equal(decode_buf((const uint8_t[]){ 3, 0x81 }, 2), -EINVAL);
    /* zero-length run, zero skip after the first run */
    assert_int_equal(decode_buf((const uint8_t[]){ 3, 0 }, 2), -EINVAL);
    assert_int_equal(decode_buf((const uint8_t[]){ 3, 1, 0xaa, 0, 1, 0xbb }, 6), -EINVAL);
    /* varints: 3 bytes, non-minimal 2-byte */
    assert_int_equal(decode_buf((const uint8_t[]){ 0x81, 0x80, 0x01, 1, 0 }, 5), -EINVAL);
    assert_int_equal(decode_buf((const uint8_t[]){ 0x81, 0x00, 1, 0 }, 4), -EINVAL);
    /* skip past the page end: 4096 = 0x80 0x20; 4097 */
    assert_int_equal(decode_buf((const uint8_t[]){ 0x80, 0x20, 1, 0 }, 4), -EINVAL);
    assert_int_equal(decode_buf((const uint8_t[]){ 0x81, 0x20, 1, 0 }, 4), -EINVAL);
    /* run that ends exactly at the page end is fine; one further is not */
    assert_int_equal(decode_buf((const uint8_t[]){ 0xff, 0x1f, 1, 7 }, 4), 0);
    assert_int_equal(decode_buf((const uint8_t[]){ 0xff, 0x1f, 2, 7, 7 }, 5), -EINVAL);
    /* overlong run: 4097 bytes claimed from position 0 */
    memset(big, 1, sizeof(big));
    big[0] = 0;
    big[1] = 0x81;
    big[2] = 0x20;
    assert_int_equal(decode_buf(big, sizeof(big)), -EINVAL);
    big[1] = 0x80;   /* exactly 4096: fine, with trailing garbage: not */
    assert_int_equal(decode_buf(big, 3 + PG), 0);
    assert_int_equal(decode_buf(big, 3 + PG + 1), -EINVAL);
    /* two runs overlapping the page end */
    assert_int_equal(decode_buf((const uint8_t[]){ 0xfe, 0x1f, 1, 7, 1, 1, 7 }, 7), -EINVAL);
}

/* Random garbage: never crashes (ASan watches), sometimes even decodes. */
static void test_delta_garbage(void **state)
{
    static uint8_t in[64];

    (void)state;
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = rnd() % sizeof(in);
        int r;

        fill_random(in, len);
        r = decode_buf(in, len);
        assert_true(r == 0 || r == -EINVAL);
    }
}

/* ---- delta cache ---- */

static void page_pattern(uint8_t *p, uint64_t gfn)
{
    memset(p, (int)(gfn * 7 + 1), PG);
    memcpy(p, &gfn, sizeof(gfn));
}

static void test_cache_basic(void **state)
{
    static uint8_t p[PG];
    struct delta_cache *c = delta_cache_new(8 * PG);
    struct delta_cache_stats s;

    (void)state;
    assert_non_null(c);
    assert_int_equal(delta_cache_capacity(c), 8);
    assert_null(delta_cache_get(c, 5));
    page_pattern(p, 5);
    assert_int_equal(delta_cache_put(c, 5, p), 0);
    assert_memory_equal(delta_cache_get(c, 5), p, PG);
    p[100] ^= 1;   /* replace */
    assert_int_equal(delta_cache_put(c, 5, p), 0);
    assert_memory_equal(delta_cache_get(c, 5), p, PG);
    delta_cache_stats(c, &s);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.hits, 2);
    assert_int_equal(s.misses, 1);
    delta_cache_forget(c, 5);
    delta_cache_forget(c, 6);   /* absent: no-op */
    assert_null(delta_cache_get(c, 5));
    delta_cache_stats(c, &s);
    assert_int_equal(s.entries, 0);
    assert_int_equal(s.evictions, 0);
    delta_cache_free(c);
    delta_cache_free(NULL);
    errno = 0;
    assert_null(delta_cache_new(PG - 1));
    assert_int_equal(errno, EINVAL);
}

/* More pages than fit: bounded, evictions counted, whatever it returns is right. */
static void test_cache_bounded(void **state)
{
    static uint8_t p[PG];
    struct delta_cache *c = delta_cache_new(64 * PG + 100);
    struct delta_cache_stats s;
    unsigned present = 0;

    (void)state;
    assert_int_equal(delta_cache_capacity(c), 64);
    for (uint64_t g = 0; g < 1000; g++) {
        page_pattern(p, g * 4096 + 3);
        delta_cache_put(c, g * 4096 + 3, p);
        delta_cache_stats(c, &s);
        assert_true(s.entries <= 64);
        if (g % 3 == 0)   /* re-reference some */
            delta_cache_get(c, (g / 2) * 4096 + 3);
    }
    delta_cache_stats(c, &s);
    assert_int_equal(s.entries, 64);
    assert_int_equal(s.evictions, 1000 - 64);
    for (uint64_t g = 0; g < 1000; g++) {
        const uint8_t *q = delta_cache_get(c, g * 4096 + 3);

        if (!q)
            continue;
        page_pattern(p, g * 4096 + 3);
        assert_memory_equal(q, p, PG);
        present++;
    }
    assert_int_equal(present, 64);
    /* the most recent page survived */
    assert_non_null(delta_cache_get(c, 999 * 4096 + 3));
    delta_cache_free(c);
}

/* Random put/get/forget against a shadow map: the table never loses or
 * confuses an entry, across evictions and backward-shift deletions. */
static void test_cache_random_ops(void **state)
{
    enum { NG = 300, CAP = 40 };
    static uint8_t p[PG];
    static bool shadow_in[NG];
    struct delta_cache *c = delta_cache_new(CAP * PG);
    struct delta_cache_stats s;

    (void)state;
    for (int iter = 0; iter < 30000; iter++) {
        uint64_t g = rnd() % NG, op = rnd() % 8;
        const uint8_t *q;

        if (op < 4) {
            page_pattern(p, g);
            delta_cache_put(c, g, p);
            shadow_in[g] = true;
        } else if (op < 6) {
            delta_cache_forget(c, g);
            shadow_in[g] = false;
        } else {
            q = delta_cache_get(c, g);
            if (!shadow_in[g]) {
                assert_null(q);
            } else if (q) {
                page_pattern(p, g);
                assert_memory_equal(q, p, PG);
            } else {
                shadow_in[g] = false;   /* evicted */
            }
        }
        delta_cache_stats(c, &s);
        assert_true(s.entries <= CAP);
    }
    delta_cache_free(c);
}

/* ---- compression ---- */

/* Text-like: words from a small vocabulary. */
static void fill_text(uint8_t *p, size_t n)
{
    static const char *const words[] = { "migration ", "page ", "dirty ", "the ", "guest ",
                                         "memory ", "copy ", "of ", "and ", "KVM\n" };
    size_t o = 0;

    while (o < n) {
        const char *w = words[rnd() % 10];
        size_t l = strlen(w);

        memcpy(p + o, w, l > n - o ? n - o : l);
        o += l;
    }
}

static void compress_roundtrip(enum compress_algo a, int level)
{
    static uint8_t src[16 * PG], dst[32 * PG], back[16 * PG];
    struct compressor *c = compressor_new(a, level);
    ssize_t n;

    assert_non_null(c);
    assert_int_equal(compressor_algo(c), a);
    fill_text(src, sizeof(src));
    for (size_t len = 1; len <= sizeof(src); len = len * 3 + 1) {
        n = compressor_compress(c, src, len, dst, sizeof(dst));
        if (n == -ENOSPC)
            continue;   /* short inputs do not shrink */
        assert_true(n > 0 && (size_t)n < len);
        memset(back, 0, sizeof(back));
        assert_int_equal(compressor_decompress(c, a, dst, (size_t)n, back, len), (ssize_t)len);
        assert_memory_equal(back, src, len);
        /* wrong expectations */
        assert_int_equal(compressor_decompress(c, a, dst, (size_t)n, back, len - 1), -EINVAL);
        assert_int_equal(compressor_decompress(c, a, dst, (size_t)n, back, len + 1), -EINVAL);
        /* truncated */
        assert_true(compressor_decompress(c, a, dst, (size_t)n - 1, back, len) < 0);
        assert_true(compressor_decompress(c, a, dst, (size_t)n / 2, back, len) < 0);
    }
    /* a text page compresses well */
    n = compressor_compress(c, src, PG, dst, sizeof(dst));
    assert_true(n > 0 && n < PG / 2);
    /* max too small for the result */
    assert_int_equal(compressor_compress(c, src, PG, dst, (size_t)n / 2), -ENOSPC);
    /* random data does not shrink */
    fill_random(src, PG);
    assert_int_equal(compressor_compress(c, src, PG, dst, sizeof(dst)), -ENOSPC);
    /* zero page: tiny */
    memset(src, 0, PG);
    n = compressor_compress(c, src, PG, dst, sizeof(dst));
    assert_true(n > 0 && n < 64);
    assert_int_equal(compressor_decompress(c, a, dst, (size_t)n, back, PG), PG);
    assert_memory_equal(back, src, PG);
    compressor_free(c);
}

static void test_compress_lz4(void **state)
{
    (void)state;
    compress_roundtrip(COMPRESS_LZ4, 0);
    compress_roundtrip(COMPRESS_LZ4, 8);
}

static void test_compress_zstd(void **state)
{
    (void)state;
    compress_roundtrip(COMPRESS_ZSTD, 0);
    compress_roundtrip(COMPRESS_ZSTD, 3);
}

/* Bit flips and garbage into both decoders: an error or the right size, and
 * never a write past dst+expect (the guard bytes after it stay intact). */
static void test_compress_corrupt(void **state)
{
    static uint8_t src[PG], enc[2 * PG], bad[2 * PG], out[PG + 64];
    enum compress_algo algos[] = { COMPRESS_LZ4, COMPRESS_ZSTD };

    (void)state;
    fill_text(src, PG);
    for (size_t k = 0; k < 2; k++) {
        struct compressor *c = compressor_new(algos[k], 0);
        ssize_t n = compressor_compress(c, src, PG, enc, sizeof(enc)), r;

        assert_true(n > 0);
        for (int iter = 0; iter < 3000; iter++) {
            size_t len = (size_t)n;

            memcpy(bad, enc, len);
            for (int f = 0; f < 1 + iter % 4; f++)
                bad[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
            if (iter % 5 == 0)
                len = rnd() % (len + 1);
            if (iter % 11 == 0)
                fill_random(bad, len);
            memset(out + PG, 0xee, 64);
            r = compressor_decompress(c, algos[k], bad, len, out, PG);
            assert_true(r == PG || r == -EINVAL);
            for (int g = 0; g < 64; g++)
                assert_int_equal(out[PG + g], 0xee);
        }
        compressor_free(c);
    }
}

static void test_compress_none_and_errors(void **state)
{
    static uint8_t src[PG], dst[2 * PG];
    struct compressor *c = compressor_new(COMPRESS_NONE, 0), *z;
    ssize_t n;

    (void)state;
    assert_non_null(c);
    fill_text(src, PG);
    assert_int_equal(compressor_compress(c, src, PG, dst, sizeof(dst)), -ENOSPC);
    assert_int_equal(compressor_decompress(c, COMPRESS_NONE, src, PG, dst, PG), PG);
    assert_int_equal(compressor_decompress(c, COMPRESS_NONE, src, PG, dst, PG - 1), -EINVAL);
    assert_int_equal(compressor_decompress(c, COMPRESS_AUTO, src, PG, dst, PG), -EINVAL);
    /* a `none` compressor still decompresses zstd (the destination side) */
    z = compressor_new(COMPRESS_ZSTD, 0);
    n = compressor_compress(z, src, PG, dst, sizeof(dst));
    assert_true(n > 0);
    assert_int_equal(compressor_decompress(c, COMPRESS_ZSTD, dst, (size_t)n, dst + PG, PG), PG);
    assert_memory_equal(dst + PG, src, PG);
    compressor_free(z);
    compressor_free(c);
    compressor_free(NULL);
    errno = 0;
    assert_null(compressor_new(COMPRESS_AUTO, 0));
    assert_int_equal(errno, EINVAL);
    assert_null(compressor_new((enum compress_algo)9, 0));
    assert_true(compress_bound(COMPRESS_LZ4, PG) > PG);
    assert_true(compress_bound(COMPRESS_ZSTD, PG) > PG);
    assert_int_equal(compress_bound(COMPRESS_NONE, PG), PG);
}

static void test_compress_parse(void **state)
{
    enum compress_algo a = COMPRESS_NONE;

    (void)state;
    assert_int_equal(compress_parse("lz4", &a), 0);
    assert_int_equal(a, COMPRESS_LZ4);
    assert_int_equal(compress_parse("zstd", &a), 0);
    assert_int_equal(a, COMPRESS_ZSTD);
    assert_int_equal(compress_parse("auto", &a), 0);
    assert_int_equal(a, COMPRESS_AUTO);
    assert_int_equal(compress_parse("none", &a), 0);
    assert_int_equal(a, COMPRESS_NONE);
    assert_int_equal(compress_parse("LZ4", &a), -EINVAL);
    assert_int_equal(compress_parse("", &a), -EINVAL);
    assert_int_equal(compress_parse("zstd ", &a), -EINVAL);
    assert_int_equal(compress_parse(NULL, &a), -EINVAL);
    assert_int_equal(a, COMPRESS_NONE);
    assert_string_equal(compress_name(COMPRESS_ZSTD), "zstd");
    assert_string_equal(compress_name(COMPRESS_AUTO), "auto");
    assert_string_equal(compress_name((enum compress_algo)42), "unknown");
}

/* ---- auto ---- */

static void test_auto_decision(void **state)
{
    /* 1 Gbit/s link, 500 MB/s per compressing thread, ratio 0.4 */
    struct compress_model slow_link = { 125e6, 500e6, 2e9, 0.4, 2 };
    /* 25 Gbit/s link, the same CPU: compression would be the bottleneck */
    struct compress_model fast_link = { 3.1e9, 500e6, 2e9, 0.4, 2 };
    struct compress_model no_gain = { 125e6, 500e6, 2e9, 0.99, 2 };
    struct compress_model slow_dest = { 125e6, 500e6, 100e6, 0.4, 2 };
    struct compress_model bad = { 0, 500e6, 2e9, 0.4, 2 };
    double t0, t1;

    (void)state;
    assert_true(compress_auto_worth(&slow_link));
    assert_false(compress_auto_worth(&fast_link));
    assert_false(compress_auto_worth(&no_gain));
    assert_false(compress_auto_worth(&slow_dest));   /* destination CPU-bound */
    assert_false(compress_auto_worth(&bad));
    bad = slow_link;
    bad.threads = 0;
    assert_false(compress_auto_worth(&bad));
    bad.threads = 2;
    bad.ratio = 0.0 / 0.0;
    assert_false(compress_auto_worth(&bad));
    /* slow link: 100 MB take 0.8 s plain, 0.32 s compressed (link-bound) */
    t0 = compress_transfer_time(&slow_link, 100e6, false);
    t1 = compress_transfer_time(&slow_link, 100e6, true);
    assert_true(t0 > 0.79 && t0 < 0.81);
    assert_true(t1 > 0.31 && t1 < 0.33);
    /* fast link: compression bound, 0.1 s vs 0.032 s plain */
    t1 = compress_transfer_time(&fast_link, 100e6, true);
    assert_true(t1 > 0.099 && t1 < 0.101);
    assert_true(compress_transfer_time(&fast_link, 100e6, false) < t1);
    /* more threads turn the fast case around */
    fast_link.threads = 16;
    assert_true(compress_auto_worth(&fast_link) ==
                (compress_transfer_time(&fast_link, 1, true) <
                 0.95 * compress_transfer_time(&fast_link, 1, false)));
    assert_true(compress_transfer_time(&bad, 1, true) < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zero_every_impl),
        cmocka_unit_test(test_zero_default_impl),
        cmocka_unit_test(test_delta_identical),
        cmocka_unit_test(test_delta_shapes),
        cmocka_unit_test(test_delta_random),
        cmocka_unit_test(test_delta_tiny_max),
        cmocka_unit_test(test_delta_malformed),
        cmocka_unit_test(test_delta_garbage),
        cmocka_unit_test(test_cache_basic),
        cmocka_unit_test(test_cache_bounded),
        cmocka_unit_test(test_cache_random_ops),
        cmocka_unit_test(test_compress_lz4),
        cmocka_unit_test(test_compress_zstd),
        cmocka_unit_test(test_compress_corrupt),
        cmocka_unit_test(test_compress_none_and_errors),
        cmocka_unit_test(test_compress_parse),
        cmocka_unit_test(test_auto_decision),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
