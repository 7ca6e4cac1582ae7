/* The parallel transfer engine (docs/MIGRATION.md "Parallel connections"):
 * pre-copy pages go out in batches over N data connections, one sender
 * thread each, with zero-page markers, delta encoding against a per-thread
 * cache of what was last sent, and per-batch compression. The destination
 * has one applier thread per connection. */
#ifndef FERRY_MIGRATION_XFER_H
#define FERRY_MIGRATION_XFER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "state/stream.h"
#include "state/xcodec.h"
#include "state/xpages.h"
#include "vm/memory.h"

#define XFER_MAX_CONNS 16
#define XFER_QDEPTH    4

/* Counters, updated atomically by the threads (either side). */
struct xfer_stats {
    uint64_t pages_data;         /* full pages sent/applied */
    uint64_t pages_zero;         /* zero pages (markers, or skipped in round 1) */
    uint64_t pages_delta;
    uint64_t bytes_raw;          /* 4 KiB per page handled */
    uint64_t bytes_wire;         /* record bytes on the data connections */
    uint64_t zero_bytes_saved;
    uint64_t delta_bytes_saved;
    uint64_t delta_hits, delta_misses;
    uint64_t comp_in, comp_out;  /* bodies that were compressed: before, after */
    uint64_t comp_batches, batches;
    uint64_t cpu_ns[XFER_MAX_CONNS];
};

struct xfer_params {
    unsigned conns;
    enum xc_algo algo;
    uint64_t delta_bytes;        /* cache size in total (split over the threads); 0: off */
    uint64_t cap_bps;            /* --bandwidth, 0: none */
    uint64_t start_ns;           /* for the bandwidth cap */
};

struct xfer_job {
    uint32_t kind;               /* XJ_PAGES, XJ_ROUND, XJ_END */
    uint32_t n;
    uint32_t round;
    uint64_t gpa[STREAM_PAGES_PER_REC];   /* | 1: send a zero marker if zero */
};

struct xfer;

struct xfer_worker {
    struct xfer *x;
    unsigned idx;
    int sock;
    struct stream_io out;
    pthread_t thread;
    bool started;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct xfer_job jobs[XFER_QDEPTH];
    uint64_t head, tail;         /* jobs [head, tail) queued; jobs[tail] is being filled */
    bool filling;
    int err;                     /* the thread stopped on this error */
    bool stop;                   /* xfer_stop(): leave now */
    /* sender state */
    struct xc_comp *comp;
    struct xc_cache *cache;
    uint64_t entries[STREAM_PAGES_PER_REC];
    uint8_t *raw, *zbody, *dtmp;
    uint64_t send_ns, send_bytes;   /* link estimate */
    uint64_t comp_ns, comp_bytes;   /* compression speed */
    double ratio;                /* recent compressed/raw */
};

struct xfer {
    struct xfer_params p;
    struct guest_mem *mem;
    struct xfer_worker *w;
    struct xfer_stats st;
    uint32_t round;
    bool final;                  /* the VM is paused: the last copy */
    const bool *cancel;
};

/* Takes ownership of conns connected sockets (handshake done). */
int xfer_start(struct xfer *x, const struct xfer_params *p, struct guest_mem *mem,
               const int *socks, const bool *cancel);
/* Queues a page (read and encoded later by its connection's thread, after
 * the caller re-protected it). */
int xfer_add(struct xfer *x, uint64_t gpa, bool zero_marker);
/* Ends round `round` on every connection (a ROUND marker after its pages). */
int xfer_round_end(struct xfer *x, uint32_t round);
/* The last pages are queued: END on every connection, threads finish. */
int xfer_end(struct xfer *x);
/* Stops everything (shutdown, join, free); the stats stay readable. */
void xfer_stop(struct xfer *x);
/* The first error a thread met, or 0. */
int xfer_error(struct xfer *x, char *why, size_t len);
uint64_t xfer_bytes(const struct xfer *x);

/* Destination: one applier per connection. */
struct xfer_dst_worker {
    struct xfer_dst *x;
    unsigned idx;
    int sock;
    struct stream_io in;
    pthread_t thread;
    bool started;
    struct xpages_ctx ctx;
    uint32_t round;              /* last ROUND marker seen */
    bool done;                   /* END seen */
};

struct xfer_dst {
    struct guest_mem *mem;
    unsigned n;
    struct xfer_dst_worker w[XFER_MAX_CONNS];
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int err;
    char why[200];
    struct xfer_stats st;
};

int xfer_dst_start(struct xfer_dst *x, struct guest_mem *mem, const int *socks, unsigned n);
/* Waits until every connection has applied everything up to ROUND round
 * (UINT32_MAX: until every connection has ended); error text in why. */
int xfer_dst_wait(struct xfer_dst *x, uint32_t round, unsigned timeout_s, char *why,
                  size_t len);
void xfer_dst_stop(struct xfer_dst *x);

#endif
