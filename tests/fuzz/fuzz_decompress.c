/* libFuzzer target for the lz4 and zstd decoders as ferry calls them: a
 * hostile peer's compressed data must give exactly `expect` bytes or an error,
 * and nothing may be written past dst+expect. Input: byte 0 picks the
 * algorithm, byte 1 the expected size, the rest is the compressed data. The
 * libraries are not instrumented, so guard bytes after dst catch overruns. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/compress.h"

#define GUARD 256

static const size_t fuzz_sizes[] = { 4096, 0, 1, 100, 4095, 4097, 8192, 65536 };
static struct compressor *fuzz_c;

static void fuzz_write_seed(const char *path)
{
    static uint8_t page[4096], buf[2 + 8192];
    struct compressor *c = compressor_new(COMPRESS_ZSTD, 0);
    struct compressor *l = compressor_new(COMPRESS_LZ4, 0);
    char name[4096];

    for (size_t i = 0; i < sizeof(page); i++)
        page[i] = (uint8_t)("ferry migrates pages\n"[i % 21] + (i % 512 == 0));
    for (int a = 0; a < 2; a++) {
        ssize_t n = compressor_compress(a ? c : l, page, sizeof(page), buf + 2, sizeof(buf) - 2);
        FILE *f;

        buf[0] = (uint8_t)a;
        buf[1] = 0;
        snprintf(name, sizeof(name), "%s%s", path, a ? "-zstd" : "-lz4");
        f = fopen(name, "wb");
        if (n <= 0 || !f || fwrite(buf, 1, 2 + (size_t)n, f) != 2 + (size_t)n)
            exit(1);
        fclose(f);
    }
    exit(0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (getenv("FERRY_FUZZ_WRITE_SEED"))
        fuzz_write_seed(getenv("FERRY_FUZZ_WRITE_SEED"));
    fuzz_c = compressor_new(COMPRESS_NONE, 0);
    return fuzz_c ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    enum compress_algo a;
    size_t expect, len;
    uint8_t *dst, *in;
    ssize_t r;

    if (size < 2)
        return 0;
    a = (data[0] & 1) ? COMPRESS_ZSTD : COMPRESS_LZ4;
    expect = fuzz_sizes[data[1] % (sizeof(fuzz_sizes) / sizeof(fuzz_sizes[0]))];
    len = size - 2;
    in = malloc(len ? len : 1);
    dst = malloc(expect + GUARD);
    if (!in || !dst)
        abort();
    memcpy(in, data + 2, len);
    memset(dst + expect, 0xa5, GUARD);
    r = compressor_decompress(fuzz_c, a, in, len, dst, expect);
    if (r != (ssize_t)expect && r >= 0)
        abort();
    for (size_t i = 0; i < GUARD; i++)
        if (dst[expect + i] != 0xa5)
            abort();
    free(in);
    free(dst);
    return 0;
}
