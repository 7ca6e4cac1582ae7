/* libFuzzer target for the split-virtqueue parser: the input is a guest
 * memory image (descriptor table at 0, available ring at 0x1000, used ring
 * at 0x2000) plus a queue size and start index in its first bytes. Whatever
 * the guest wrote, vq_pop() must either return a chain whose every segment
 * lies inside guest RAM or refuse it; nothing may touch memory outside the
 * image (ASan watches the exact-size buffer). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "virtio/virtqueue.h"

#define FUZZ_MEM 0x10000

static struct vq_chain chain;
static uint8_t scratch[FUZZ_MEM];

static void check_segs(const struct vq_seg *s, unsigned n, const uint8_t *ram)
{
    for (unsigned i = 0; i < n; i++)
        if (s[i].hva < ram || s[i].hva + s[i].len > ram + FUZZ_MEM ||
            s[i].gpa + s[i].len > FUZZ_MEM)
            abort();
}

static void fuzz_write_seed(const char *path)
{
    static uint8_t img[0x3000];
    FILE *f = fopen(path, "wb");
    uint64_t addr = 0x4000;

    if (!f)
        exit(1);
    img[0] = 4;                                   /* queue size 16 */
    /* desc 0: readable 16 bytes -> desc 1: writable 512 bytes */
    memcpy(img + 16, &addr, 8);
    img[16 + 8] = 16, img[16 + 12] = 1, img[16 + 14] = 2;
    addr = 0x5000;
    memcpy(img + 32, &addr, 8);
    img[32 + 9] = 2, img[32 + 12] = 2;
    img[0x1002] = 1;                              /* avail idx 1, ring[0] = 1 */
    img[0x1004] = 1;
    fwrite(img, 1, sizeof(img), f);
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *ram = malloc(FUZZ_MEM);
    struct guest_mem mem = { .fd = -1, .hva = ram, .size = FUZZ_MEM, .nregions = 1,
                             .regions = { { 0, FUZZ_MEM, 0 } } };
    struct virtqueue vq = { .mem = &mem, .max_size = VQ_MAX_SIZE };

    if (size < 4) {
        free(ram);
        return 0;
    }
    memset(ram, 0, FUZZ_MEM);
    memcpy(ram, data, size < FUZZ_MEM ? size : FUZZ_MEM);
    vq_reset(&vq);
    vq.size = (uint16_t)(1u << (data[0] % 10));   /* 1..512: above max is refused */
    memcpy(&vq.last_avail, data + 2, 2);
    vq.used_idx = vq.last_avail;
    vq.desc_gpa = (uint64_t)(data[1] & 0x0f) << 4;  /* a table not at 0 too */
    vq.avail_gpa = 0x1000, vq.used_gpa = 0x2000;
    if (!vq_valid(&vq)) {
        free(ram);
        return 0;
    }
    for (int i = 0; i < 64; i++) {
        int r = vq_pop(&vq, &chain);

        if (r <= 0)
            break;
        check_segs(chain.out, chain.nout, ram);
        check_segs(chain.in, chain.nin, ram);
        vq_read(&chain, 0, scratch, chain.out_len < FUZZ_MEM ? chain.out_len : FUZZ_MEM);
        vq_write(&chain, 0, scratch, chain.in_len < FUZZ_MEM ? chain.in_len : FUZZ_MEM);
        vq_push(&vq, &chain, chain.in_len);
    }
    free(ram);
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *seed = getenv("FERRY_FUZZ_WRITE_SEED");

    (void)argc, (void)argv;
    if (seed) {
        fuzz_write_seed(seed);
        exit(0);
    }
    return 0;
}
