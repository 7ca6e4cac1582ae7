/* Dirty page tracking for migration: KVM's dirty log with manual protect
 * (initially set, cleared chunk by chunk just before a chunk is sent), merged
 * with pages ferry itself wrote into guest memory. */
#ifndef FERRY_MIGRATION_DIRTY_H
#define FERRY_MIGRATION_DIRTY_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vm/memory.h"

struct dirty_slot {
    uint64_t gpa;
    uint64_t pages;
    uint64_t *bitmap;       /* one bit per page, 64-bit words */
    uint64_t *scratch;      /* KVM's log lands here, then is OR-ed in */
    uint64_t *ring;         /* dirty ring: the collector ORs harvested pages in here */
};

#define DIRTY_MAX_RINGS 64

struct dirty_log {
    int vm_fd;
    struct guest_mem *mem;
    unsigned nslots;
    struct dirty_slot slots[MEM_MAX_REGIONS];
    bool enabled;
    /* dirty ring mode (ferry run --dirty-ring): one ring per vCPU */
    unsigned nrings;                 /* 0: bitmap log */
    unsigned ring_entries;
    struct kvm_dirty_gfn *rings[DIRTY_MAX_RINGS];
    uint32_t ring_next[DIRTY_MAX_RINGS];
    uint64_t vcpu_pages[DIRTY_MAX_RINGS];   /* harvested per vCPU since the start */
    pthread_mutex_t ring_lock;
    pthread_t collector;
    bool collector_started, stop;
};

/* Pure bitmap helpers (unit-tested). */
uint64_t bitmap_count(const uint64_t *bm, uint64_t bits);
/* Finds the next set bit at or after from; returns bits if none. */
uint64_t bitmap_next(const uint64_t *bm, uint64_t bits, uint64_t from);
void bitmap_or(uint64_t *dst, const uint64_t *src, uint64_t bits);
static inline uint64_t bitmap_words(uint64_t bits) { return (bits + 63) / 64; }

int dirty_start(struct dirty_log *d, int vm_fd, struct guest_mem *mem);
/* The same with KVM's dirty ring (enabled at VM creation): a collector
 * thread harvests every vCPU's ring often enough that it never stays full,
 * and counts the pages each vCPU dirtied. */
int dirty_start_ring(struct dirty_log *d, int vm_fd, struct guest_mem *mem,
                     const int *vcpu_fds, unsigned nvcpus, unsigned entries);
void dirty_stop(struct dirty_log *d);
/* ORs KVM's log and ferry's own writes into the bitmaps (the sender clears
 * the words it has sent); returns the number of dirty pages. Does not
 * re-protect. */
int64_t dirty_sync(struct dirty_log *d);
/* Re-protects (clears) 64 pages from first (a multiple of 64) in a slot, so
 * writes from now on are caught for the next round. */
int dirty_clear_chunk(struct dirty_log *d, unsigned slot, uint64_t first);
/* Clears the whole log of every slot (start of round 1). */
int dirty_clear_all(struct dirty_log *d);

#endif
