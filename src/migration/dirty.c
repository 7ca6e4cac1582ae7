#include "migration/dirty.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

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

/* ---- dirty ring ---- */

/* Takes every entry KVM has published, marks it harvested, and lets KVM
 * re-protect those pages: writes from now on show up again. */
static uint64_t dirty_ring_harvest(struct dirty_log *d)
{
    uint64_t n = 0;

    for (unsigned v = 0; v < d->nrings; v++) {
        for (;;) {
            struct kvm_dirty_gfn *e = &d->rings[v][d->ring_next[v] & (d->ring_entries - 1)];
            uint32_t slot;
            if (!(__atomic_load_n(&e->flags, __ATOMIC_ACQUIRE) & KVM_DIRTY_GFN_F_DIRTY))
                break;
            slot = e->slot & 0xffff;
            if (slot < d->nslots && e->offset < d->slots[slot].pages)
                __atomic_fetch_or(&d->slots[slot].ring[e->offset / 64],
                                  1ULL << (e->offset % 64), __ATOMIC_RELAXED);
            __atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
            d->ring_next[v]++;
            __atomic_fetch_add(&d->vcpu_pages[v], 1, __ATOMIC_RELAXED);
            n++;
        }
    }
    if (n && ioctl(d->vm_fd, KVM_RESET_DIRTY_RINGS, 0) < 0)
        log_warn("KVM_RESET_DIRTY_RINGS: %s", strerror(errno));
    return n;
}

static void dirty_ring_collect(struct dirty_log *d)
{
    pthread_mutex_lock(&d->ring_lock);
    dirty_ring_harvest(d);
    pthread_mutex_unlock(&d->ring_lock);
}

/* Every 2 ms: a ring of 16384 entries then holds up to 8 M pages/s per vCPU
 * before its vCPU has to wait (KVM_EXIT_DIRTY_RING_FULL). */
static void *dirty_collector(void *arg)
{
    struct dirty_log *d = arg;
    struct timespec ts = { 0, 2000000 };

    pthread_setname_np(pthread_self(), "dirty-ring");
    while (!__atomic_load_n(&d->stop, __ATOMIC_ACQUIRE)) {
        dirty_ring_collect(d);
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void dirty_ring_unmap(struct dirty_log *d)
{
    if (d->collector_started) {
        __atomic_store_n(&d->stop, true, __ATOMIC_RELEASE);
        pthread_join(d->collector, NULL);
        d->collector_started = false;
    }
    for (unsigned v = 0; v < d->nrings; v++)
        if (d->rings[v])
            munmap(d->rings[v], (size_t)d->ring_entries * sizeof(struct kvm_dirty_gfn));
    for (unsigned i = 0; i < d->nslots; i++) {
        free(d->slots[i].ring);
        d->slots[i].ring = NULL;
    }
    d->nrings = 0;
}

int dirty_start_ring(struct dirty_log *d, int vm_fd, struct guest_mem *mem,
                     const int *vcpu_fds, unsigned nvcpus, unsigned entries)
{
    size_t bytes = (size_t)entries * sizeof(struct kvm_dirty_gfn);
    int ret = dirty_start(d, vm_fd, mem);

    if (ret < 0)
        return ret;
    pthread_mutex_init(&d->ring_lock, NULL);
    d->ring_entries = entries;
    d->nrings = MIN(nvcpus, DIRTY_MAX_RINGS);
    for (unsigned v = 0; v < d->nrings && ret == 0; v++) {
        void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fds[v],
                       (off_t)KVM_DIRTY_LOG_PAGE_OFFSET * getpagesize());
        d->rings[v] = p == MAP_FAILED ? NULL : p;
        if (!d->rings[v])
            ret = -errno;
    }
    for (unsigned i = 0; i < d->nslots && ret == 0; i++)
        if (!(d->slots[i].ring = calloc(bitmap_words(d->slots[i].pages), 8)))
            ret = -ENOMEM;
    if (ret == 0)
        dirty_ring_harvest(d);   /* entries left from before logging started */
    if (ret == 0 && pthread_create(&d->collector, NULL, dirty_collector, d) == 0)
        d->collector_started = true;
    else if (ret == 0)
        ret = -EAGAIN;
    if (ret < 0) {
        log_err("dirty ring: %s", strerror(-ret));
        dirty_stop(d);
    }
    return ret;
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
    if (d->nrings) {
        __atomic_store_n(&d->stop, true, __ATOMIC_RELEASE);
        if (d->collector_started)
            pthread_join(d->collector, NULL);
        d->collector_started = false;
        dirty_ring_harvest(d);   /* no vCPU may stay waiting on a full ring */
        dirty_ring_unmap(d);
    }
    for (unsigned i = 0; i < d->nslots; i++) {
        free(d->slots[i].bitmap);
        free(d->slots[i].scratch);
        d->slots[i].bitmap = d->slots[i].scratch = NULL;
    }
    d->enabled = false;
}

/* Ring mode: harvest what is left, then take the collector's pages. */
static int64_t dirty_sync_ring(struct dirty_log *d)
{
    int64_t total = 0;

    dirty_ring_collect(d);
    for (unsigned i = 0; i < d->nslots; i++) {
        struct dirty_slot *s = &d->slots[i];
        for (uint64_t w = 0; w < bitmap_words(s->pages); w++)
            s->bitmap[w] |= __atomic_exchange_n(&s->ring[w], 0, __ATOMIC_RELAXED);
        mem_collect_writes(d->mem, i, s->bitmap);
        total += (int64_t)bitmap_count(s->bitmap, s->pages);
    }
    return total;
}

int64_t dirty_sync(struct dirty_log *d)
{
    int64_t total = 0;

    if (d->nrings)
        return dirty_sync_ring(d);

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

static int dirty_clear_chunk_log(struct dirty_log *d, unsigned slot, uint64_t first)
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

int dirty_clear_chunk(struct dirty_log *d, unsigned slot, uint64_t first)
{
    if (d->nrings)   /* the ring re-protected what it harvested already */
        return 0;
    return dirty_clear_chunk_log(d, slot, first);
}

int dirty_clear_all(struct dirty_log *d)
{
    if (d->nrings) {   /* logging started write-protected everything; forget so far */
        dirty_ring_collect(d);
        for (unsigned i = 0; i < d->nslots; i++)
            for (uint64_t w = 0; w < bitmap_words(d->slots[i].pages); w++)
                __atomic_store_n(&d->slots[i].ring[w], 0, __ATOMIC_RELAXED);
        return 0;
    }
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
