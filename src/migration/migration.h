/* Live migration: the source engine (a thread in the source VMM), the
 * destination (ferry run --incoming), their wire protocol (docs/MIGRATION.md)
 * and the per-migration report. */
#ifndef FERRY_MIGRATION_MIGRATION_H
#define FERRY_MIGRATION_MIGRATION_H

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "migration/policy.h"
#include "migration/transport.h"
#include "migration/xfer.h"

/* 2: REC_DISKS follows the main channel's HELLO; 3: REC_SESSION follows the
 * ACK, and later connections show its token in their HELLO's reserved bytes */
#define MIG_PROTO_VERSION 3
#define MIG_MAX_ROUNDS    1024
#define MIG_CTRL_MAX      512      /* bytes of a control record payload */

/* Control records, beside the stream's section/pages/end records. */
enum mig_rec_type {
    REC_ACK = 16,       /* dst -> src: handshake answer {i32 status, text} */
    REC_ROUND = 17,     /* src -> dst: a pre-copy round ended {u32 round} */
    REC_RUNNING = 18,   /* dst -> src: VM runs {i32 status, u64 resume_rt_ns, u64 apply_ns, text} */
    REC_CANCEL = 19,    /* src -> dst: migration cancelled {text} */
    REC_POSTCOPY_ADVISE = 20,  /* src -> dst: about to open the urgent channel */
    REC_PAGE_REQ = 21,  /* dst -> src, urgent channel: {u64 gpa} a vCPU faulted on */
    REC_POSTCOPY_DONE = 22,    /* dst -> src: every page has arrived */
    REC_ROUND_ACK = 23, /* dst -> src: everything up to that ROUND is applied {u32 round} */
    REC_DISKS = 24,     /* src -> dst, after the HELLO: the guest's disks (disks.h) */
    REC_SESSION = 25,   /* dst -> src, after the ACK: the session token (session.h) */
};

/* proto_flags of a connection's HELLO. */
#define MIG_FLAG_URGENT  1u     /* this connection is the post-copy urgent channel */
#define MIG_FLAG_RECOVER 2u     /* reconnecting to resume a broken post-copy */
#define MIG_FLAG_XFER    4u     /* main channel asking for the capabilities below */
#define MIG_FLAG_DATA    8u     /* a data connection of the parallel engine */

/* Capabilities a main channel's HELLO asks for (MIG_FLAG_XFER), in the
 * header's reserved bytes: u32 connections, u32 features, u64 delta cache. */
#define MIG_CAP_LZ4      1u
#define MIG_CAP_ZSTD     2u
#define MIG_CAP_DELTA    4u
#define MIG_CAP_ALL      7u
#define MIG_MAX_CONNS    16

/* Flag of a REC_BITMAP: pages certainly needed, sent before the pause so the
 * destination can drop its stale copies early; the final bitmap follows. */
#define REC_BITMAP_PROVISIONAL 8u

/* Flag of the REC_END record: the destination runs in post-copy. */
#define REC_END_POSTCOPY 4u

enum mig_mode { MIG_MODE_PRECOPY, MIG_MODE_POSTCOPY, MIG_MODE_HYBRID };

/* Flag of the REC_END record: the VM was paused on the source. */
#define REC_END_PAUSED 2u

enum mig_state {
    MIG_NONE, MIG_SETUP, MIG_PRECOPY, MIG_SWITCHOVER, MIG_COMPLETED, MIG_FAILED,
    MIG_CANCELLED,
    /* destination side */
    MIG_WAITING, MIG_RECEIVING, MIG_APPLYING, MIG_RUNNING,
    /* both sides, once the VM runs on the destination with pages missing */
    MIG_POSTCOPY, MIG_POSTCOPY_PAUSED, MIG_ABORTED,
};

struct mig_params {
    struct mig_endpoint ep;      /* where the destination listens */
    struct mig_tls tls;
    struct policy_config policy;
    uint64_t bandwidth_bps;      /* 0: no cap */
    enum mig_mode mode;
    unsigned postcopy_after_rounds;   /* hybrid: 0 = when pre-copy stalls */
    unsigned connections;        /* data connections; 0: pages on the main channel */
    unsigned compress;           /* enum xc_algo */
    uint64_t delta_cache_bytes;  /* 0: no delta encoding */
    unsigned dirty_track;        /* enum mig_dirty_track */
};

enum mig_dirty_track { MIG_DIRTY_BITMAP, MIG_DIRTY_RING, MIG_DIRTY_AUTO };
#define MIG_ROUND_VCPUS 8            /* per-vCPU rates kept per round */

/* Connections when not asked for: one per core, 1..4. */
unsigned mig_default_connections(void);

struct mig_round {
    unsigned round;
    uint64_t pages;              /* with data */
    uint64_t zero;
    uint64_t bytes;
    uint64_t duration_ns;
    uint64_t dirty_pages;        /* found dirty at the end of the round */
    uint64_t dirty_rate_pps;
    unsigned throttle;
    uint64_t expected_downtime_ns;
    unsigned nvcpus;             /* dirty ring: per-vCPU dirty rates below */
    uint64_t vcpu_pps[MIG_ROUND_VCPUS];
};

struct mig_downtime {
    uint64_t total_ns;           /* source pause -> destination resume */
    uint64_t pause_ns;           /* stopping the vCPUs */
    uint64_t final_pages_ns;     /* sync + last dirty pages */
    uint64_t state_ns;           /* vCPU/device state saved and sent */
    uint64_t dest_apply_ns;      /* destination: end marker -> vCPUs started */
    uint64_t final_pages;
    uint64_t state_bytes;
};

struct migration {
    pthread_mutex_t lock;
    pthread_cond_t done;         /* broadcast when the thread has finished */
    struct vm *vm;
    bool source;
    enum mig_state state;
    struct mig_params params;
    struct tp_creds *creds;      /* source: params.tls loaded; NULL = plain text */
    pthread_t thread;
    bool thread_started;
    bool cancel;
    int sock;
    char error[256];
    /* progress */
    unsigned round;
    uint64_t bytes;
    uint64_t pages_normal;
    uint64_t pages_zero;
    uint64_t pages_remaining;
    uint64_t dirty_rate_pps;
    uint64_t bandwidth_bps;
    uint64_t expected_downtime_ns;
    unsigned throttle;
    unsigned throttle_max;
    uint64_t start_ns;
    uint64_t total_ns;
    struct mig_downtime downtime;
    unsigned stop_retries;       /* pauses undone because the rest would not fit */
    uint64_t stop_retry_ns;      /* what those pauses cost the guest in all */
    /* post-copy */
    bool postcopy_req;           /* migrate-postcopy: switch at the next chance */
    bool abort_req;              /* migrate-abort in post-copy: give the VM up */
    bool recover_req;            /* migrate-recover: reconnect now (maybe elsewhere) */
    bool recover_ep_set;         /* recover_ep replaces params.ep */
    struct mig_endpoint recover_ep;
    uint64_t pc_start_ns;
    uint64_t pc_total_pages;
    uint64_t pc_remaining;
    uint64_t pc_pushed, pc_demanded, pc_faults, pc_zero_faults, pc_blocked_ns;
    uint32_t pc_p50_us, pc_p99_us, pc_max_us;
    unsigned pc_recoveries;
    /* dirty ring: per-vCPU dirty rates of the last round, throttled vCPUs */
    unsigned nvcpu_pps;
    uint64_t vcpu_pps[64];
    uint64_t throttle_mask;
    uint64_t vcpu_throttled_ns[64];  /* auto-converge: time each vCPU slept */
    /* parallel engine: live counters while running, then a copy */
    const struct xfer_stats *xlive;
    struct xfer_stats xs;
    unsigned xconns;
    unsigned nrounds;
    struct mig_round rounds[MIG_MAX_ROUNDS];
};

void mig_init(struct migration *m);


/* Source side: starts the migration thread. */
int mig_start(struct migration *m, struct vm *vm, const struct mig_params *p,
              char *err, size_t errlen);
/* Blocks until the migration thread has finished. */
void mig_wait(struct migration *m);
int mig_cancel(struct migration *m);
/* Post-copy controls (source): switch now; reconnect (NULL uri: same place);
 * give the VM up. */
int mig_postcopy_now(struct migration *m);
int mig_recover(struct migration *m, const struct mig_endpoint *ep);
int mig_abort(struct migration *m);
bool mig_active(struct migration *m);
/* True on a destination whose post-copy has not finished: some pages are
 * still missing, so nothing may read all of guest memory. */
bool mig_memory_incomplete(struct migration *m);
/* Status / report as JSON (either side). */
json_t *mig_status_json(struct migration *m);
const char *mig_state_name(enum mig_state s);
/* "PAGES", "ROUND", ...; NULL for a type no record has. */
const char *mig_record_name(uint32_t type);

/* Destination side: waits for one migration on ep into vm (created here
 * from the source's handshake) and starts it; every connection over mutual
 * TLS when tls names certificates. */
struct vm_config;
int mig_incoming(struct migration *m, struct vm *vm, struct vm_config *cfg,
                 const struct mig_endpoint *ep, const struct mig_tls *tls);

/* Stops a destination's post-copy threads at exit. */
void mig_incoming_stop(struct migration *m);
/* Destination: give a post-copy up (the VM stops, exit 1); -ENOENT otherwise. */
int mig_incoming_abort(struct migration *m);
/* Before the VM runs here: gives the incoming migration up (the source keeps
 * its VM). -EINPROGRESS once the state is applied, -ENOENT if none. */
int mig_incoming_cancel(struct migration *m);

/* Control records. */
struct stream_io;
int mig_send_ctrl(struct stream_io *io, uint32_t type, const void *payload, uint32_t len);
int mig_send_status(struct stream_io *io, uint32_t type, int32_t status, const char *text);

#endif
