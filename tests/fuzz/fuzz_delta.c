/* libFuzzer target for the page delta decoder: whatever a hostile peer sends,
 * delta_decode() stays inside the input and the 4096-byte page. Input: 8
 * bytes that seed the old page, then the encoding. When a decode succeeds,
 * encoding the result against the old page must decode to the same page. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/delta.h"

#define PG CODEC_PAGE_SIZE

/* The old page from its seed: zero, a byte pattern, or pseudo-random. */
static void fuzz_old_page(uint8_t *page, uint64_t seed)
{
    uint64_t x = seed | 1;

    if ((seed & 3) == 0) {
        memset(page, 0, PG);
        return;
    }
    if ((seed & 3) == 1) {
        memset(page, (int)(seed >> 8), PG);
        return;
    }
    for (size_t i = 0; i < PG; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(page + i, &x, 8);
    }
}

static void fuzz_write_seed(const char *path)
{
    static uint8_t old[PG], cur[PG], buf[8 + DELTA_MAX_ENCODED];
    uint64_t seed = 2;
    FILE *f = fopen(path, "wb");
    ssize_t n;

    if (!f)
        exit(1);
    fuzz_old_page(old, seed);
    memcpy(cur, old, PG);
    cur[10] ^= 0x5a;
    memset(cur + 1000, 0x77, 64);
    cur[PG - 1] ^= 1;
    memcpy(buf, &seed, 8);
    n = delta_encode(old, cur, buf + 8, DELTA_MAX_ENCODED);
    if (n <= 0 || fwrite(buf, 1, 8 + (size_t)n, f) != 8 + (size_t)n)
        exit(1);
    fclose(f);
    exit(0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (getenv("FERRY_FUZZ_WRITE_SEED"))
        fuzz_write_seed(getenv("FERRY_FUZZ_WRITE_SEED"));
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t old[PG], enc[DELTA_MAX_ENCODED], again[PG];
    uint8_t *page, *in;
    uint64_t seed;
    size_t len;
    ssize_t n;

    if (size < 8)
        return 0;
    memcpy(&seed, data, 8);
    len = size - 8;
    /* Exact-size heap copies: ASan flags any byte read or written outside. */
    in = malloc(len ? len : 1);
    page = malloc(PG);
    if (!in || !page)
        abort();
    memcpy(in, data + 8, len);
    fuzz_old_page(old, seed);
    memcpy(page, old, PG);
    if (delta_decode(in, len, page) == 0) {
        n = delta_encode(old, page, enc, sizeof(enc));
        if (n < 0 || (n == 0) != !memcmp(old, page, PG))
            abort();
        memcpy(again, old, PG);
        if (n > 0 && (delta_decode(enc, (size_t)n, again) || memcmp(again, page, PG)))
            abort();
    }
    free(in);
    free(page);
    return 0;
}
