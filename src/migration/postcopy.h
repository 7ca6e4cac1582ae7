/* Post-copy: the VM runs on the destination before all of its memory has
 * arrived. Missing pages are caught with userfaultfd and requested over an
 * urgent channel of their own; the source pushes the rest meanwhile and
 * pre-pages around every fault. */
#ifndef FERRY_MIGRATION_POSTCOPY_H
#define FERRY_MIGRATION_POSTCOPY_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "state/stream.h"
#include "vm/memory.h"

#define PC_PREPAGE      16        /* pages sent around a faulting page */
#define PC_MAX_LATENCIES (1u << 20)

/* The pages the destination does not have yet, per memory region. */
struct pc_bitmap {
    unsigned n;
    struct {
        uint64_t gpa;
        uint64_t pages;
        uint64_t *bits;
    } r[MEM_MAX_REGIONS];
};

void pc_bitmap_free(struct pc_bitmap *b);
/* mem's layout, no page needed. */
int pc_bitmap_init_empty(struct pc_bitmap *b, const struct guest_mem *mem);
/* Wire form: u32 nregions, then per region u64 gpa, u64 pages, bit words. */
int pc_bitmap_encode(const struct pc_bitmap *b, uint8_t **buf, uint64_t *len);
int pc_bitmap_decode(struct pc_bitmap *b, const struct guest_mem *mem, const uint8_t *buf,
                     uint64_t len, const char **why);
uint64_t pc_bitmap_count(const struct pc_bitmap *b);
/* Region and page index of gpa; false if gpa is not RAM. */
bool pc_bitmap_locate(const struct pc_bitmap *b, uint64_t gpa, unsigned *region, uint64_t *page);
bool pc_bitmap_test(const struct pc_bitmap *b, unsigned region, uint64_t page);
/* Clears the bit; returns whether it was set. */
bool pc_bitmap_test_clear(struct pc_bitmap *b, unsigned region, uint64_t page);

struct pc_stats {
    uint64_t faults;             /* remote faults (distinct pages requested) */
    uint64_t zero_faults;        /* faults on pages never sent: filled locally */
    uint64_t pushed;             /* pages that arrived unrequested */
    uint64_t demanded;           /* pages that arrived because they were requested */
    uint64_t blocked_ns;         /* sum over remote faults of request -> arrival */
    uint32_t nlat;
    uint32_t *lat_us;            /* fault latencies, for percentiles */
};

/* Destination side. */
struct pc_dst {
    struct guest_mem *mem;
    int uffd;
    pthread_mutex_t lock;
    struct pc_bitmap needed;
    uint64_t *req_ns[MEM_MAX_REGIONS];   /* request time per page, 0 = not requested */
    uint64_t remaining;
    struct pc_bitmap discarded;  /* holes already punched before the pause */
    struct pc_stats st;
    pthread_t fault_thread;
    bool fault_thread_started;
    int stop_efd;
    /* where requests go: the urgent channel, NULL while it is down */
    pthread_mutex_t out_lock;
    struct stream_io *urgent_out;
    pthread_cond_t changed;      /* remaining or the channel changed */
};

int pc_dst_prepare(struct pc_dst *p, struct guest_mem *mem, const uint8_t *bitmap,
                   uint64_t len, const char **why);
/* Before the pause: drops the stale copies of pages certainly needed. */
int pc_dst_discard_early(struct guest_mem *mem, const uint8_t *bitmap, uint64_t len,
                         struct pc_bitmap *done, const char **why);
/* Registers guest memory with userfaultfd and starts the fault thread. */
int pc_dst_start(struct pc_dst *p);
/* Places a REC_PAGES payload with UFFDIO_COPY; demand = came on the urgent channel. */
int pc_dst_place(struct pc_dst *p, const uint8_t *payload, uint64_t len, bool demand,
                 const char **why);
/* A new urgent channel (or NULL): outstanding requests are sent again on it. */
void pc_dst_set_urgent(struct pc_dst *p, struct stream_io *out);
void pc_dst_stop(struct pc_dst *p);
uint64_t pc_dst_remaining(struct pc_dst *p);

/* Percentiles of the latencies in microseconds (sorts a copy). */
void pc_latency_percentiles(const struct pc_stats *st, uint32_t *p50, uint32_t *p99,
                            uint32_t *max);

#endif
