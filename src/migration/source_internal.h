/* Internals shared by the source's pre-copy (source.c) and post-copy
 * (source_postcopy.c) halves. */
#ifndef FERRY_MIGRATION_SOURCE_INTERNAL_H
#define FERRY_MIGRATION_SOURCE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "migration/dirty.h"
#include "migration/migration.h"
#include "migration/session.h"
#include "migration/postcopy.h"
#include "migration/xfer.h"
#include "state/pages.h"
#include "vm/vm.h"

#define SRC_IOBUF          (1u << 20)
#define SRC_TIMEOUT_S      30

struct mig_src {
    struct migration *m;
    struct vm *vm;
    int sock;
    struct stream_io out, in;
    struct mig_session session;  /* from the destination: later connections show it */
    struct dirty_log dirty;
    struct page_batch batch;
    struct page_stats ps;       /* whole migration, main channel */
    struct xfer x;              /* data connections (params.connections > 0) */
    uint64_t vcpu_pages0[DIRTY_MAX_RINGS];   /* dirty ring: counts at the round's start */
    uint64_t throttled0[64];    /* each vCPU's throttled time before this migration */
    bool xon;
    uint64_t bw_bps;            /* best estimate of the link */
    unsigned round;             /* pre-copy rounds done */
    uint64_t last_round_ns;
    uint64_t stop_extra_ns;     /* learnt from stops that did not fit: src_stop_extra() */
    uint64_t undone_ns;         /* when the last one was undone */
    bool paused;                /* by this migration */
    bool was_paused;            /* by the user, before the switchover */
    bool op_locked;
    char err[256];
    /* post-copy */
    pthread_mutex_t pc_lock;     /* guards needed */
    struct pc_bitmap needed;     /* pages the destination still lacks */
    int usock;                   /* urgent channel */
    struct stream_io uout, uin;
    struct page_batch *ubatch;
    pthread_t uthread;
    bool uthread_started;
    bool urgent_broken;
};


uint64_t realtime_ns(void);
bool src_cancelled(struct mig_src *s);
void src_set_state(struct mig_src *s, enum mig_state st);
int src_fail(struct mig_src *s, int ret, const char *fmt, const char *detail);
int src_flush_batch(struct mig_src *s);
void src_publish(struct mig_src *s);
/* Sleeps as long as it takes to keep the page rate under --bandwidth. */
void src_rate_limit(struct mig_src *s);
int src_stop_vm(struct mig_src *s);
int src_wait_round_ack(struct mig_src *s);
int src_wait_running(struct mig_src *s, uint64_t *resume_rt, uint64_t *apply_ns);
int src_add_page(struct mig_src *s, uint64_t gpa, const uint8_t *hva, bool zero_marker);
/* Opens a connection to the destination and sends a handshake with flags. */
int src_open_channel(struct mig_src *s, uint32_t flags, int *sock, struct stream_io *out,
                     struct stream_io *in);
/* The parallel engine's last pages are queued: END on every connection. */
int src_xfer_end(struct mig_src *s);
/* Pauses and sends the state for post-copy; then serves pages until done. */
int src_postcopy(struct mig_src *s);
void src_postcopy_cleanup(struct mig_src *s);

#endif
