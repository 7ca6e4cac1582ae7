/* The destination's state, shared with the unit tests that feed
 * dst_receive() crafted streams. */
#ifndef FERRY_MIGRATION_DEST_INTERNAL_H
#define FERRY_MIGRATION_DEST_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>

#include "migration/migration.h"
#include "migration/session.h"
#include "migration/postcopy.h"
#include "migration/xfer.h"
#include "state/stream.h"

struct mig_dst {
    struct migration *m;
    struct vm *vm;
    struct vm_config *cfg;      /* the destination's options; sized from the HELLO */
    int lfd;                    /* kept open: urgent channel and recovery */
    struct mig_endpoint ep;
    struct tp_creds *creds;     /* NULL: plain text */
    struct mig_session session; /* later connections must show its token */
    uint8_t peer_id[32];        /* TLS: the source's certificate, as the main channel saw it */
    int sock;
    struct stream_io in, out;
    bool start_paused;
    bool postcopy;
    char err[256];
    /* post-copy */
    struct pc_dst pc;
    int usock;
    struct stream_io uin, uout;
    pthread_t uthread, thread;
    bool uthread_started, thread_started, stop;
    bool recover_warned;        /* a failed recovery accept was logged */
    bool cancelled;             /* by the destination's API */
    /* parallel engine */
    unsigned nconns;
    struct xfer_dst xd;
};

/* Pages and state until the end marker; the reason of a failure in d->err. */
int dst_receive(struct mig_dst *d);

#endif
