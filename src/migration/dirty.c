#include "migration/dirty.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "util/log.h"
#include "util/util.h"

#define DIRTY_CLEAR_PIECE (16384ULL)   /* pages: 64 MiB */

uint64_t bitmap_count(const uint64_t *bm, uint64_t bits)
{
    uint64_t n = 0, words = bitmap_words(bits);

    for (uint64_t i = 0; i < words; i++) {
        uint64_t w = bm[i];
        if (i == words - 1 && bits % 64)
            w &= (1ULL << (bits % 64)) - 1;
        n += (uint64_t)__builtin_popcountll(w);
    }
    return n;
}

uint64_t bitmap_next(const uint64_t *bm, uint64_t bits, uint64_t from)
{
    for (uint64_t i = from / 64; i < bitmap_words(bits); i++) {
        uint64_t w = bm[i];
        if (i == from / 64)
            w &= ~0ULL << (from % 64);
        if (w) {
            uint64_t bit = i * 64 + (uint64_t)__builtin_ctzll(w);
            return bit < bits ? bit : bits;
        }
    }
    return bits;
}

void bitmap_or(uint64_t *dst, const uint64_t *src, uint64_t bits)
{
    for (uint64_t i = 0; i < bitmap_words(bits); i++)
        dst[i] |= src[i];
}

static int dirty_set_logging(struct dirty_log *d, bool on)
{
    for (unsigned i = 0; i < d->mem->nregions; i++) {
        const struct mem_region *r = &d->mem->regions[i];
        struct kvm_userspace_memory_region kr = {
            .slot = i, .flags = on ? KVM_MEM_LOG_DIRTY_PAGES : 0,
            .guest_phys_addr = r->gpa, .memory_size = r->size,
            .userspace_addr = (uint64_t)(uintptr_t)(d->mem->hva + r->offset),
        };
        if (ioctl(d->vm_fd, KVM_SET_USER_MEMORY_REGION, &kr) < 0) {
            int err = -errno;
            log_err("memory slot %u: %s dirty logging: %s", i, on ? "enabling" : "disabling",
                    strerror(errno));
            return err;
        }
    }
    return 0;
}

int dirty_start(struct dirty_log *d, int vm_fd, struct guest_mem *mem)
{
    memset(d, 0, sizeof(*d));
    d->vm_fd = vm_fd;
    d->mem = mem;
    d->nslots = mem->nregions;
    for (unsigned i = 0; i < d->nslots; i++) {
        d->slots[i].gpa = mem->regions[i].gpa;
        d->slots[i].pages = mem->regions[i].size / PAGE_SIZE;
        d->slots[i].bitmap = calloc(bitmap_words(d->slots[i].pages), 8);
        d->slots[i].scratch = calloc(bitmap_words(d->slots[i].pages), 8);
        if (!d->slots[i].bitmap || !d->slots[i].scratch) {
            dirty_stop(d);
            return -ENOMEM;
        }
    }
    d->enabled = dirty_set_logging(d, true) == 0;
    if (!d->enabled) {
        dirty_stop(d);
        return -EIO;
    }
    mem_track_writes(mem, true);
    return 0;
}

void dirty_stop(struct dirty_log *d)
{
    if (d->enabled) {
        mem_track_writes(d->mem, false);
        dirty_set_logging(d, false);
    }
    for (unsigned i = 0; i < d->nslots; i++) {
        free(d->slots[i].bitmap);
        free(d->slots[i].scratch);
        d->slots[i].bitmap = d->slots[i].scratch = NULL;
    }
    d->enabled = false;
}

int64_t dirty_sync(struct dirty_log *d)
{
    int64_t total = 0;

    for (unsigned i = 0; i < d->nslots; i++) {
        struct dirty_slot *s = &d->slots[i];
        struct kvm_dirty_log log = { .slot = i, .dirty_bitmap = s->scratch };

        if (ioctl(d->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0) {
            int err = -errno;
            log_err("memory slot %u: KVM_GET_DIRTY_LOG: %s", i, strerror(errno));
            return err;
        }
        bitmap_or(s->bitmap, s->scratch, s->pages);
        mem_collect_writes(d->mem, i, s->bitmap);
        total += (int64_t)bitmap_count(s->bitmap, s->pages);
    }
    return total;
}

int dirty_clear_chunk(struct dirty_log *d, unsigned slot, uint64_t first)
{
    struct dirty_slot *s = &d->slots[slot];
    uint64_t n = MIN(64, s->pages - first);
    uint64_t word = s->bitmap[first / 64];
    struct kvm_clear_dirty_log c = {
        .slot = slot, .first_page = first, .num_pages = (uint32_t)n, .dirty_bitmap = &word,
    };

    if (ioctl(d->vm_fd, KVM_CLEAR_DIRTY_LOG, &c) < 0) {
        int err = -errno;
        log_err("memory slot %u: KVM_CLEAR_DIRTY_LOG at page %llu: %s", slot,
                (unsigned long long)first, strerror(errno));
        return err;
    }
    return 0;
}

int dirty_clear_all(struct dirty_log *d)
{
    for (unsigned i = 0; i < d->nslots; i++) {
        struct dirty_slot *s = &d->slots[i];
        struct kvm_clear_dirty_log c = { .slot = i, .first_page = 0 };
        int ret = 0;

        memset(s->bitmap, 0xff, bitmap_words(s->pages) * 8);
        /* In 64 MiB pieces: write-protecting all of RAM in one call holds
         * KVM's MMU lock long enough for the guest to notice (4-8 ms here). */
        for (uint64_t first = 0; first < s->pages && ret == 0; first += DIRTY_CLEAR_PIECE) {
            c.first_page = first;
            c.num_pages = (uint32_t)MIN(DIRTY_CLEAR_PIECE, s->pages - first);
            c.dirty_bitmap = s->bitmap + first / 64;
            if (ioctl(d->vm_fd, KVM_CLEAR_DIRTY_LOG, &c) < 0)
                ret = -errno;
        }
        if (ret < 0) {
            log_err("memory slot %u: KVM_CLEAR_DIRTY_LOG: %s", i, strerror(-ret));
            return ret;
        }
        memset(s->bitmap, 0, bitmap_words(s->pages) * 8);
    }
    return 0;
}
