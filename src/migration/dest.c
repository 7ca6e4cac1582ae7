/* The destination side: `ferry run --incoming tcp:HOST:PORT` waits for one
 * migration, creates the VM the source describes, fills it, and starts it
 * only once every record has been received and checked. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "migration/transport.h"
#include "migration/channel.h"
#include "migration/disks.h"
#include "migration/dest_internal.h"
#include "migration/migration.h"
#include "migration/postcopy.h"
#include "state/stream.h"
#include "util/log.h"
#include "util/testhook.h"
#include "util/util.h"
#include "vm/vm.h"

#define DST_TIMEOUT_S 60
#define DST_IOBUF     (1u << 20)
#define DST_ACCEPT_BACKOFF_US 100000

static struct mig_dst *dst_current;   /* the one incoming migration of this process */

static uint64_t realtime_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void dst_set_state(struct mig_dst *d, enum mig_state st)
{
    pthread_mutex_lock(&d->m->lock);
    d->m->state = st;
    pthread_mutex_unlock(&d->m->lock);
}

static int dst_refuse(struct mig_dst *d, int ret, const char *why)
{
    snprintf(d->err, sizeof(d->err), "%s", why);
    mig_send_status(&d->out, REC_ACK, ret, why);
    return ret;
}

/* A feature this destination was told not to offer (a test knob standing
 * in for an older or differently built ferry): FERRY_TEST_INCOMING_DISABLE
 * is a comma-separated list of lz4, zstd, delta, connections. */
static bool dst_disabled(const char *what)
{
    const char *env = test_hook("FERRY_TEST_INCOMING_DISABLE"), *p = env;
    size_t n = strlen(what);

    while (p && (p = strstr(p, what)) != NULL) {
        if ((p == env || p[-1] == ',') && (p[n] == '\0' || p[n] == ','))
            return true;
        p += n;
    }
    return false;
}

/* What the source asks for (MIG_FLAG_XFER) must all be offered here. */
static int dst_check_caps(struct mig_dst *d, const struct stream_header *h, char *msg,
                          size_t len)
{
    uint32_t conns = 0, feat = 0;

    if (h->proto_flags & MIG_FLAG_XFER) {
        memcpy(&conns, h->reserved, 4);
        memcpy(&feat, h->reserved + 4, 4);
    }
    if (conns > MIG_MAX_CONNS || (feat & ~MIG_CAP_ALL))
        return snprintf(msg, len, "unknown migration capabilities asked for"), -EPROTO;
    if (conns && dst_disabled("connections"))
        return snprintf(msg, len, "destination does not support parallel connections "
                        "(asked for %u)", conns), -EPROTO;
    if ((feat & MIG_CAP_LZ4) && dst_disabled("lz4"))
        return snprintf(msg, len, "destination does not support lz4 compression"), -EPROTO;
    if ((feat & MIG_CAP_ZSTD) && dst_disabled("zstd"))
        return snprintf(msg, len, "destination does not support zstd compression"), -EPROTO;
    if ((feat & MIG_CAP_DELTA) && dst_disabled("delta"))
        return snprintf(msg, len, "destination does not support delta encoding"), -EPROTO;
    if (feat && !conns)
        return snprintf(msg, len, "compression and delta need data connections"), -EPROTO;
    d->nconns = conns;
    return 0;
}

/* Everything about the VM is checked before any memory is allocated. */
static int dst_check_hello(struct mig_dst *d, const struct stream_header *h)
{
    const char *why = "";
    char msg[256];
    int ret = stream_header_check(h, &why);

    if (ret < 0)
        return dst_refuse(d, ret, why);
    if (h->proto_version != MIG_PROTO_VERSION) {
        snprintf(msg, sizeof(msg), "migration protocol version %u is not supported "
                 "(this ferry speaks version %u)", h->proto_version, MIG_PROTO_VERSION);
        return dst_refuse(d, -EPROTO, msg);
    }
    if (h->proto_flags & ~MIG_FLAG_XFER)
        return dst_refuse(d, -EPROTO, "expected a new migration, got a recovery or a channel");
    if ((ret = dst_check_caps(d, h, msg, sizeof(msg))) < 0)
        return dst_refuse(d, ret, msg);
    if (d->cfg->memory_given && d->cfg->mem_bytes != h->mem_size) {
        snprintf(msg, sizeof(msg), "memory size mismatch: the source VM has %llu MiB, "
                 "the destination was started with --memory %llu",
                 (unsigned long long)(h->mem_size >> 20),
                 (unsigned long long)(d->cfg->mem_bytes >> 20));
        return dst_refuse(d, -EINVAL, msg);
    }
    if (d->cfg->cpus_given && d->cfg->ncpus != h->ncpus) {
        snprintf(msg, sizeof(msg), "vCPU count mismatch: the source VM has %u, the "
                 "destination was started with --cpus %u", h->ncpus, d->cfg->ncpus);
        return dst_refuse(d, -EINVAL, msg);
    }
    if (h->ncpus > VM_MAX_VCPUS || mem_check_size(h->mem_size, mem_host_total()) < 0)
        return dst_refuse(d, -E2BIG, "the source VM does not fit on this host");
    return 0;
}

static int dst_accept_data(struct mig_dst *d);

/* REC_DISKS follows the HELLO: the guest's disks must be these. */
static int dst_check_disks(struct mig_dst *d)
{
    struct mig_disk disks[MIG_DISKS_MAX];
    struct stream_record r;
    const char *why = "";
    char msg[200];
    uint32_t n = 0;
    uint8_t *p;
    int ret = stream_get_record(&d->in, &r, &p, &why);

    if (ret < 0)
        return dst_refuse(d, ret, why);
    if (r.type != REC_DISKS || mig_disks_decode(p, r.length, disks, &n) < 0)
        ret = dst_refuse(d, -EPROTO, "expected the source's disks after its handshake");
    else if (mig_disks_compare(disks, n, d->vm, msg, sizeof(msg)) < 0)
        ret = dst_refuse(d, -EINVAL, msg);
    free(p);
    return ret;
}

static int dst_send_session(struct mig_dst *d)
{
    uint8_t buf[sizeof(struct mig_session)];
    int ret = mig_session_new(&d->session);

    if (ret < 0) {
        snprintf(d->err, sizeof(d->err), "no random session token: %s", strerror(-ret));
        return ret;
    }
    if (d->creds && tp_peer_id(d->sock, d->peer_id) < 0) {
        snprintf(d->err, sizeof(d->err), "the source's certificate cannot be read");
        return -EACCES;
    }
    mig_session_encode(&d->session, buf);
    return mig_send_ctrl(&d->out, REC_SESSION, buf, sizeof(buf));
}

static int dst_handshake(struct mig_dst *d)
{
    struct stream_header h;
    int ret = stream_read(&d->in, &h, sizeof(h));


    if (ret < 0) {
        snprintf(d->err, sizeof(d->err), "no handshake from the peer: %s",
                 ret == -EPIPE ? "connection closed" : strerror(-ret));
        return ret;
    }
    ret = dst_check_hello(d, &h);
    if (ret < 0)
        return ret;
    d->cfg->mem_bytes = h.mem_size;
    d->cfg->ncpus = h.ncpus;
    d->cfg->restore = true;
    if (vm_create(d->vm, d->cfg) < 0)
        return dst_refuse(d, -EIO, "could not create the VM on the destination");
    if (h.cpuid_fingerprint != vm_cpuid_fingerprint(d->vm))
        return dst_refuse(d, -EINVAL, "this host does not offer the source VM's CPU model");
    if ((ret = dst_check_disks(d)) < 0)
        return ret;
    d->vm->clock_follow_realtime = true;
    ret = mig_send_status(&d->out, REC_ACK, 0, "ok");
    if (ret == 0)
        ret = dst_send_session(d);
    return ret < 0 ? ret : dst_accept_data(d);
}

/* The session's token, and with TLS the certificate the main channel's
 * peer showed: a stranger who knows the VM's sizes cannot join. */
static bool dst_same_session(const struct mig_dst *d, int sock, const struct stream_header *h)
{
    uint8_t id[32];

    if (!mig_token_equal(h->reserved, d->session.token))
        return false;
    return !d->creds || (tp_peer_id(sock, id) == 0 && memcmp(id, d->peer_id, sizeof(id)) == 0);
}

/* A second connection of the same migration (urgent channel, recovery):
 * same VM, same protocol, the flags we expect. */
static int dst_accept_channel(struct mig_dst *d, uint32_t flags, int *sock,
                              struct stream_io *in, struct stream_io *out)
{
    struct stream_header h;
    const char *why = "";
    char err[256];
    int ret;

    *sock = tp_accept(d->creds, d->lfd, DST_TIMEOUT_S, err, sizeof(err));
    if (*sock < 0) {
        log_warn("refused a connection: %s", err);
        return *sock;
    }
    stream_io_free(in);
    stream_io_free(out);
    if (tp_stream_init(in, *sock, DST_IOBUF) < 0 || tp_stream_init(out, *sock, 1u << 16) < 0)
        return -ENOMEM;
    ret = stream_read(in, &h, sizeof(h));
    if (ret == 0 && (ret = stream_header_check(&h, &why)) < 0)
        mig_send_status(out, REC_ACK, ret, why);
    else if (ret == 0 && (h.proto_version != MIG_PROTO_VERSION || h.proto_flags != flags ||
                          h.mem_size != d->vm->mem.size || h.ncpus != d->vm->ncpus ||
                          h.cpuid_fingerprint != vm_cpuid_fingerprint(d->vm) ||
                          !dst_same_session(d, *sock, &h)))
        ret = -EPROTO, mig_send_status(out, REC_ACK, ret, "not a channel of this migration");
    else if (ret == 0)
        ret = mig_send_status(out, REC_ACK, 0, "ok");
    if (ret < 0) {
        tp_close(*sock);
        *sock = -1;
    }
    return ret;
}

/* The data connections come right after the main channel's ACK, in order. */
static int dst_accept_data(struct mig_dst *d)
{
    int socks[MIG_MAX_CONNS];
    struct stream_io in = { 0 }, out = { 0 };
    unsigned n = 0;
    int ret = 0;

    while (n < d->nconns && ret == 0) {
        ret = dst_accept_channel(d, MIG_FLAG_DATA, &socks[n], &in, &out);
        n += ret == 0;
    }
    stream_io_free(&in);
    stream_io_free(&out);
    if (ret == 0)
        ret = xfer_dst_start(&d->xd, &d->vm->mem, socks, n);
    else
        while (n)
            tp_close(socks[--n]);
    if (ret < 0)
        snprintf(d->err, sizeof(d->err), "data connections: %s", strerror(-ret));
    pthread_mutex_lock(&d->m->lock);
    d->m->xconns = d->nconns;
    d->m->xlive = ret == 0 && d->nconns ? &d->xd.st : NULL;
    pthread_mutex_unlock(&d->m->lock);
    return ret;
}

/* Everything sent on the data connections up to ROUND round (UINT32_MAX:
 * all of it) is applied. */
static int dst_wait_data(struct mig_dst *d, uint32_t round)
{
    int ret;

    if (!d->nconns)
        return 0;
    ret = xfer_dst_wait(&d->xd, round, DST_TIMEOUT_S, d->err, sizeof(d->err));
    return ret;
}

/* Progress for the status; a pages record too short for its header (u32
 * count, u32 reserved) is refused before its count is read. */
static int dst_account(struct mig_dst *d, const struct stream_record *r, const uint8_t *p)
{
    uint32_t round, count;

    __atomic_store_n(&d->m->bytes, d->in.bytes, __ATOMIC_RELAXED);
    if (r->type == REC_ROUND && r->length >= 4) {
        memcpy(&round, p, 4);
        pthread_mutex_lock(&d->m->lock);
        d->m->round = round;
        pthread_mutex_unlock(&d->m->lock);
    } else if (r->type == REC_PAGES) {
        if (r->length < 8) {
            snprintf(d->err, sizeof(d->err), "pages record of %llu bytes is shorter than "
                     "its 8-byte header", (unsigned long long)r->length);
            return -EPROTO;
        }
        memcpy(&count, p, 4);
        __atomic_fetch_add(&d->m->pages_normal, count, __ATOMIC_RELAXED);
    }
    return 0;
}

static int dst_start_postcopy(struct mig_dst *d);
static void dst_pc_aborted(struct mig_dst *d, const char *why);

static int dst_record(struct mig_dst *d, const struct stream_record *r, const uint8_t *p)
{
    const char *why = "";
    uint8_t ack[5];
    uint32_t round;
    int ret;

    switch (r->type) {
    case REC_ROUND:
        /* Everything before it is applied, on every connection: the source
         * decides on an empty pipe. */
        memset(ack, 0, sizeof(ack));
        memcpy(ack, p, MIN(r->length, 4));
        memcpy(&round, ack, 4);
        if ((ret = dst_wait_data(d, round)) < 0)
            return ret;
        return mig_send_ctrl(&d->out, REC_ROUND_ACK, ack, sizeof(ack));
    case REC_POSTCOPY_ADVISE:
        if ((ret = dst_wait_data(d, UINT32_MAX)) < 0)   /* post-copy uses the main channel */
            return ret;
        ret = dst_accept_channel(d, MIG_FLAG_URGENT, &d->usock, &d->uin, &d->uout);
        if (ret < 0)
            snprintf(d->err, sizeof(d->err), "post-copy channel: %s", strerror(-ret));
        return ret;
    case REC_BITMAP:
        if (r->flags & REC_BITMAP_PROVISIONAL) {
            ret = pc_dst_discard_early(&d->vm->mem, p, r->length, &d->pc.discarded, &why);
            if (ret < 0)
                snprintf(d->err, sizeof(d->err), "post-copy: %s", why);
            return ret;
        }
        /* Faults are caught before any state is applied: restoring vCPUs
         * makes KVM touch guest pages (kvmclock, PV areas) that may be
         * among the missing ones. */
        ret = pc_dst_prepare(&d->pc, &d->vm->mem, p, r->length, &why);
        if (ret < 0)
            snprintf(d->err, sizeof(d->err), "post-copy: %s", why);
        return ret < 0 ? ret : dst_start_postcopy(d);
    default:
        return vm_apply_record(d->vm, r, p, d->err, sizeof(d->err));
    }
}

/* CANCEL is {i32 status, text}: the text is not trusted to end in a NUL,
 * so at most the rest of the payload is printed. */
static void dst_cancelled(struct mig_dst *d, const struct stream_record *r, const uint8_t *p)
{
    const char *text = "cancelled";
    uint64_t n = strlen(text);

    if (r->length > 4) {
        text = (const char *)p + 4;
        n = MIN(r->length - 4, sizeof(d->err));
    }
    snprintf(d->err, sizeof(d->err), "the source ended the migration: %.*s", (int)n, text);
}

/* Says which record failed and where: "..., in the PAGES record at byte N". */
static void dst_name_record(struct mig_dst *d, const struct stream_record *r, uint64_t at)
{
    const char *name = mig_record_name(r->type);
    size_t n = strlen(d->err);
    char type[24];

    snprintf(type, sizeof(type), "type %u", r->type);
    snprintf(d->err + n, sizeof(d->err) - n, " (in the %s record of %llu bytes at byte %llu)",
             name ? name : type, (unsigned long long)r->length, (unsigned long long)at);
}

static int dst_read_failed(struct mig_dst *d, int ret, const struct stream_record *r,
                           uint64_t at, const char *why)
{
    bool header = d->in.bytes - at >= sizeof(*r);   /* else r holds no record */

    snprintf(d->err, sizeof(d->err), "%s", ret == -EPIPE || ret == -ECONNRESET ?
             "the source closed the connection before the migration finished" : why);
    if (header)
        dst_name_record(d, r, at);
    else
        snprintf(d->err + strlen(d->err), sizeof(d->err) - strlen(d->err), " (at byte %llu)",
                 (unsigned long long)at);
    return ret;
}

/* Pages and state until the end marker. Nothing runs before it. */
int dst_receive(struct mig_dst *d)
{
    struct stream_record r;
    uint8_t *p;
    const char *why = "";
    uint64_t at;
    int ret;

    for (;;) {
        at = d->in.bytes;
        ret = stream_get_record(&d->in, &r, &p, &why);
        if (ret < 0)
            return dst_read_failed(d, ret, &r, at, why);
        if (r.type == REC_END) {
            d->start_paused = r.flags & REC_END_PAUSED;
            d->postcopy = r.flags & REC_END_POSTCOPY;
            if (d->postcopy && !d->pc.mem) {
                snprintf(d->err, sizeof(d->err), "post-copy without its page bitmap");
                free(p);
                return -EPROTO;
            }
        }
        if (r.type == REC_END && (ret = dst_wait_data(d, UINT32_MAX)) < 0) {
            free(p);
            return ret;
        }
        if (r.type == REC_END || r.type == REC_CANCEL) {
            if (r.type == REC_CANCEL)
                dst_cancelled(d, &r, p);
            free(p);
            return r.type == REC_END ? 0 : -ECANCELED;
        }
        ret = dst_account(d, &r, p);
        if (ret == 0)
            ret = dst_record(d, &r, p);
        free(p);
        if (ret < 0 && ret != -ECANCELED)
            dst_name_record(d, &r, at);
        if (ret < 0)
            return ret;
    }
}

static int dst_send_running(struct mig_dst *d, uint64_t t0)
{
    uint8_t buf[4 + 16 + 1] = { 0 };
    uint64_t rt = realtime_ns(), apply = time_now_ns() - t0;

    memcpy(buf + 4, &rt, 8);
    memcpy(buf + 12, &apply, 8);
    d->m->downtime.dest_apply_ns = apply;
    return mig_send_ctrl(&d->out, REC_RUNNING, buf, sizeof(buf));
}

/* ---- post-copy ---- */

static void dst_pc_publish(struct mig_dst *d)
{
    struct migration *m = d->m;
    struct pc_stats *st = &d->pc.st;

    pthread_mutex_lock(&d->pc.lock);
    m->pc_remaining = d->pc.remaining;
    m->pc_faults = st->faults;
    m->pc_zero_faults = __atomic_load_n(&st->zero_faults, __ATOMIC_RELAXED);
    m->pc_pushed = st->pushed;
    m->pc_demanded = st->demanded;
    m->pc_blocked_ns = st->blocked_ns;
    pc_latency_percentiles(st, &m->pc_p50_us, &m->pc_p99_us, &m->pc_max_us);
    pthread_mutex_unlock(&d->pc.lock);
}

/* Pages the source sends because a vCPU asked for them. */
static void *dst_urgent_thread(void *arg)
{
    struct mig_dst *d = arg;
    struct stream_record r;
    const char *why;
    uint8_t *p;

    pthread_setname_np(pthread_self(), "postcopy-urgent");
    while (stream_get_record(&d->uin, &r, &p, &why) == 0) {
        if (r.type == REC_PAGES)
            pc_dst_place(&d->pc, p, r.length, true, &why);
        free(p);
    }
    return NULL;
}

static int dst_start_urgent(struct mig_dst *d)
{
    int ret = pthread_create(&d->uthread, NULL, dst_urgent_thread, d);

    d->uthread_started = ret == 0;
    if (ret == 0)
        pc_dst_set_urgent(&d->pc, &d->uout);
    return -ret;
}

static void dst_stop_urgent(struct mig_dst *d)
{
    pc_dst_set_urgent(&d->pc, NULL);
    if (d->usock >= 0)
        shutdown(d->usock, SHUT_RDWR);
    if (d->uthread_started)
        pthread_join(d->uthread, NULL);
    d->uthread_started = false;
    if (d->usock >= 0)
        tp_close(d->usock);
    d->usock = -1;
}

/* After a recovery handshake the source either opens the urgent channel or,
 * giving the VM up, says CANCEL on the main one. */
static int dst_wait_urgent_or_cancel(struct mig_dst *d)
{
    struct pollfd pfd[2] = { { .fd = d->lfd, .events = POLLIN },
                             { .fd = d->sock, .events = POLLIN } };
    struct stream_record r;
    const char *why;
    uint8_t *p;

    if (poll(pfd, 2, DST_TIMEOUT_S * 1000) <= 0 || pfd[0].revents & POLLIN)
        return 0;
    if (stream_get_record(&d->in, &r, &p, &why) == 0 && r.type == REC_CANCEL) {
        dst_pc_aborted(d, "by the source");
        free(p);
        return -ECANCELED;
    }
    free(p);
    return 0;
}

/* A refused or failed accept (out of descriptors, a stranger's handshake)
 * waits a moment before the next: failing again at once would spin a core,
 * and a peer that keeps knocking is slowed down. Said once per wait. */
static void dst_accept_backoff(struct mig_dst *d, int err)
{
    if (!d->recover_warned)
        log_warn("post-copy: a recovery connection failed (%s); still waiting", strerror(-err));
    d->recover_warned = true;
    usleep(DST_ACCEPT_BACKOFF_US);
}

/* Waits for the source to come back (it retries by itself, or the operator
 * runs migrate-recover), tells it which pages are still missing, and takes
 * the urgent channel back. The VM keeps running; vCPUs that fault wait.
 * 1: none was missing any more (no urgent channel; DONE follows). */
static int dst_pc_recover(struct mig_dst *d)
{
    uint8_t *bm;
    uint64_t len, left = 1;
    int ret;

    dst_stop_urgent(d);
    if (d->sock >= 0)
        tp_close(d->sock);
    d->sock = -1;
    dst_set_state(d, MIG_POSTCOPY_PAUSED);
    d->recover_warned = false;
    log_warn("post-copy: connection to the source lost; waiting for it to reconnect");
    for (;;) {
        if (__atomic_load_n(&d->stop, __ATOMIC_ACQUIRE))
            return -ECANCELED;
        ret = dst_accept_channel(d, MIG_FLAG_RECOVER, &d->sock, &d->in, &d->out);
        if (ret < 0) {
            dst_accept_backoff(d, ret);
            continue;
        }
        pthread_mutex_lock(&d->pc.lock);
        ret = pc_bitmap_encode(&d->pc.needed, &bm, &len);
        left = pc_bitmap_count(&d->pc.needed);
        pthread_mutex_unlock(&d->pc.lock);
        if (ret == 0) {
            stream_put_record(&d->out, REC_BITMAP, 0, 0, 1, REC_FLAG_MANDATORY, bm, len);
            free(bm);
            ret = stream_flush(&d->out);
        }
        /* Nothing left to ask for: the source opens no urgent channel, it only
         * waits for DONE, which follows on this connection. */
        if (ret == 0 && !left)
            break;
        if (ret == 0 && dst_wait_urgent_or_cancel(d) < 0)
            return -ECANCELED;
        if (ret == 0)
            ret = dst_accept_channel(d, MIG_FLAG_URGENT | MIG_FLAG_RECOVER, &d->usock, &d->uin,
                                     &d->uout);
        if (ret == 0 && dst_start_urgent(d) == 0)
            break;
    }
    d->m->pc_recoveries++;
    dst_set_state(d, MIG_POSTCOPY);
    log_info("post-copy: the source is back; %llu pages still missing",
             (unsigned long long)left);
    return left ? 0 : 1;
}

/* Every page is here: say so (with the fault statistics, which only this
 * side sees) and stop catching faults. */
static int dst_pc_send_done(struct mig_dst *d, struct stream_io *out)
{
    struct migration *m = d->m;
    uint8_t buf[4 + 7 * 8 + 1] = { 0 };
    uint64_t v[7];

    v[0] = m->pc_faults;
    v[1] = m->pc_zero_faults;
    v[2] = m->pc_demanded;
    v[3] = m->pc_pushed;
    v[4] = m->pc_blocked_ns;
    v[5] = ((uint64_t)m->pc_p99_us << 32) | m->pc_p50_us;
    v[6] = m->pc_max_us;
    memcpy(buf + 4, v, sizeof(v));
    return mig_send_ctrl(out, REC_POSTCOPY_DONE, buf, sizeof(buf));
}

static void dst_stop_data(struct mig_dst *d);

static void dst_pc_finish(struct mig_dst *d)
{
    struct migration *m = d->m;

    dst_pc_publish(d);
    dst_pc_send_done(d, &d->out);
    dst_stop_urgent(d);
    pc_dst_stop(&d->pc);
    dst_stop_data(d);   /* hybrid: the pre-copy data connections, idle since the switch */
    pthread_mutex_lock(&m->lock);
    m->state = MIG_RUNNING;
    m->total_ns = time_now_ns() - m->start_ns;
    pthread_mutex_unlock(&m->lock);
    log_info("post-copy complete: %llu remote faults, p99 %u us, %llu pages pushed",
             (unsigned long long)m->pc_faults, m->pc_p99_us, (unsigned long long)m->pc_pushed);
}

/* The source gave the VM up: nothing can bring the missing pages back. */
static void dst_pc_aborted(struct mig_dst *d, const char *why)
{
    static int once;
    char msg[256];

    if (__atomic_exchange_n(&once, 1, __ATOMIC_ACQ_REL))
        return;
    snprintf(msg, sizeof(msg), "post-copy aborted (%s): %llu pages never "
             "arrived; the VM cannot continue and is stopped", why,
             (unsigned long long)pc_dst_remaining(&d->pc));
    log_err("%s", msg);
    dst_stop_urgent(d);
    pc_dst_stop(&d->pc);   /* releases vCPUs blocked on missing pages */
    pthread_mutex_lock(&d->m->lock);
    d->m->state = MIG_ABORTED;
    snprintf(d->m->error, sizeof(d->m->error), "%s", msg);
    pthread_mutex_unlock(&d->m->lock);
    vm_request_stop(d->vm, 1, "post-copy aborted: the VM is lost");
}

/* One record from the main channel, or 1 when nothing came for a while.
 * A record that fails says so: the connection is dropped and recovered. */
static int dst_pc_next(struct mig_dst *d, struct stream_record *r, uint8_t **p)
{
    struct pollfd pfd[2] = { { .fd = d->sock, .events = POLLIN },
                             { .fd = d->lfd, .events = POLLIN } };
    const char *why = "";
    uint64_t at = d->in.bytes;
    int ret;

    if (d->in.pos == d->in.len && poll(pfd, 2, 200) == 0)
        return 1;
    if (d->in.pos == d->in.len && !(pfd[0].revents & POLLIN) && (pfd[1].revents & POLLIN)) {
        /* A silent link and a new connection waiting: the source gave this
         * one up (a stalled path) and is reconnecting. Take it. */
        snprintf(d->err, sizeof(d->err), "the source connected again while this connection "
                 "was silent");
        log_warn("post-copy: %s", d->err);
        return -ECONNRESET;
    }
    ret = stream_get_record(&d->in, r, p, &why);
    if (ret < 0) {
        dst_read_failed(d, ret, r, at, why);
        log_warn("post-copy: %s", d->err);
    }
    return ret;
}

/* Every page is here, but DONE may not have reached the source (the link
 * stalled as it went): a source that reconnects is told "no page needed"
 * and DONE again, until this process ends. */
static void dst_pc_linger(struct mig_dst *d)
{
    struct stream_io in = { 0 }, out = { 0 };
    struct pc_bitmap none;
    uint8_t *bm = NULL;
    uint64_t len = 0;
    int sock = -1;

    if (pc_bitmap_init_empty(&none, &d->vm->mem) < 0 || pc_bitmap_encode(&none, &bm, &len) < 0)
        bm = NULL;
    pc_bitmap_free(&none);
    while (bm && !__atomic_load_n(&d->stop, __ATOMIC_ACQUIRE)) {
        if (dst_accept_channel(d, MIG_FLAG_RECOVER, &sock, &in, &out) < 0) {
            usleep(DST_ACCEPT_BACKOFF_US);
            continue;
        }
        log_info("post-copy: the source reconnected after the end; telling it again");
        stream_put_record(&out, REC_BITMAP, 0, 0, 1, REC_FLAG_MANDATORY, bm, len);
        dst_pc_send_done(d, &out);
        tp_close(sock);
    }
    stream_io_free(&in);
    stream_io_free(&out);
    free(bm);
}

static void *dst_pc_thread(void *arg)
{
    struct mig_dst *d = arg;
    struct stream_record r;
    const char *why;
    uint8_t *p;

    pthread_setname_np(pthread_self(), "postcopy");
    while (pc_dst_remaining(&d->pc) && !__atomic_load_n(&d->stop, __ATOMIC_ACQUIRE)) {
        int ret = dst_pc_next(d, &r, &p);
        if (ret > 0) {
            dst_pc_publish(d);
            continue;
        }
        if (ret < 0) {
            ret = dst_pc_recover(d);
            if (ret < 0)
                return NULL;
            if (ret > 0)
                break;          /* every page was here: DONE is what is left */
            continue;
        }
        if (r.type == REC_PAGES)
            pc_dst_place(&d->pc, p, r.length, false, &why);
        else if (r.type == REC_CANCEL) {
            dst_pc_aborted(d, "by the source");
            free(p);
            return NULL;
        }
        free(p);
    }
    if (!__atomic_load_n(&d->stop, __ATOMIC_ACQUIRE)) {
        dst_pc_finish(d);
        dst_pc_linger(d);
    }
    return NULL;
}

/* The data connections are done (or the migration failed): keep the stats. */
static void dst_stop_data(struct mig_dst *d)
{
    if (!d->nconns)
        return;
    xfer_dst_stop(&d->xd);
    pthread_mutex_lock(&d->m->lock);
    d->m->xs = d->xd.st;
    d->m->xlive = NULL;
    pthread_mutex_unlock(&d->m->lock);
    d->nconns = 0;
}

static int dst_start_postcopy(struct mig_dst *d)
{
    int ret = pc_dst_start(&d->pc);

    if (ret == 0)
        ret = dst_start_urgent(d);
    if (ret < 0)
        snprintf(d->err, sizeof(d->err), "starting post-copy: %s", strerror(-ret));
    return ret;
}

static int dst_start_vm(struct mig_dst *d)
{
    uint64_t t0 = time_now_ns();
    int ret = state_check_complete(&d->vm->sections, d->err, sizeof(d->err));

    if (ret < 0) {
        mig_send_status(&d->out, REC_RUNNING, ret, d->err);
        return ret;
    }
    ret = vm_start(d->vm, d->start_paused);
    dst_send_running(d, t0);
    if (ret == 0 && d->postcopy) {
        d->m->pc_start_ns = time_now_ns();
        d->m->pc_total_pages = pc_dst_remaining(&d->pc);
        dst_set_state(d, MIG_POSTCOPY);
        ret = -pthread_create(&d->thread, NULL, dst_pc_thread, d);
        d->thread_started = ret == 0;
    }
    return ret;
}

int mig_incoming_abort(struct migration *m)
{
    struct mig_dst *d = dst_current;
    enum mig_state st = __atomic_load_n(&m->state, __ATOMIC_ACQUIRE);

    if (!d || (st != MIG_POSTCOPY && st != MIG_POSTCOPY_PAUSED))
        return -ENOENT;
    __atomic_store_n(&d->stop, true, __ATOMIC_RELEASE);
    dst_pc_aborted(d, "migrate-abort on the destination");
    return 0;
}

/* Cancel on the destination, before it runs the VM: the connection is shut
 * down under the receive loop, which then fails; the source sees the link go
 * and keeps its VM. Too late once the state is being applied. */
int mig_incoming_cancel(struct migration *m)
{
    struct mig_dst *d = dst_current;
    enum mig_state st = __atomic_load_n(&m->state, __ATOMIC_ACQUIRE);

    if (!d || (st != MIG_WAITING && st != MIG_RECEIVING))
        return d && st != MIG_FAILED ? -EINPROGRESS : -ENOENT;
    __atomic_store_n(&d->cancelled, true, __ATOMIC_RELEASE);
    if (d->sock >= 0)
        shutdown(d->sock, SHUT_RDWR);
    else
        shutdown(d->lfd, SHUT_RDWR);
    return 0;
}

/* At exit: a post-copy still running is stopped (the VM is going away). */
void mig_incoming_stop(struct migration *m)
{
    struct mig_dst *d = dst_current;

    (void)m;
    if (!d)
        return;
    __atomic_store_n(&d->stop, true, __ATOMIC_RELEASE);
    if (d->sock >= 0)
        shutdown(d->sock, SHUT_RDWR);
    if (d->lfd >= 0)
        shutdown(d->lfd, SHUT_RDWR);
    if (d->thread_started)
        pthread_join(d->thread, NULL);
    dst_stop_data(d);
    dst_stop_urgent(d);
    if (d->pc.uffd >= 0 && d->pc.mem)
        pc_dst_stop(&d->pc);
    if (d->ep.kind == MIG_EP_UNIX)
        unlink(d->ep.path);
}

/* A connection that fails its TLS handshake (a plain-text or unknown peer)
 * is refused and the wait goes on: a stranger can neither feed nor end it. */
static int dst_accept(struct mig_dst *d)
{
    char err[256];

    while ((d->sock = tp_accept(d->creds, d->lfd, DST_TIMEOUT_S, err, sizeof(err))) < 0) {
        if (d->sock != -EPROTO && d->sock != -EACCES && d->sock != -ETIMEDOUT) {
            snprintf(d->err, sizeof(d->err), "%s", err);
            return d->sock;
        }
        log_warn("refused a migration connection: %s", err);
        if (__atomic_load_n(&d->cancelled, __ATOMIC_ACQUIRE))
            return -ECANCELED;
    }
    if (tp_stream_init(&d->in, d->sock, DST_IOBUF) < 0 || tp_stream_init(&d->out, d->sock, 4096) < 0)
        return -ENOMEM;
    d->m->start_ns = time_now_ns();
    dst_set_state(d, MIG_RECEIVING);
    return 0;
}

/* Credentials, then the listener; the reason is logged here. */
static int dst_listen(struct mig_dst *d, const struct mig_tls *tls)
{
    char err[256], uri[400];
    int ret = tp_creds_load(tls, true, &d->creds, err, sizeof(err));

    if (ret == 0 && (d->lfd = tp_listen(&d->ep, err, sizeof(err))) < 0)
        ret = d->lfd;
    if (ret < 0) {
        log_err("incoming: %s", err);
        tp_creds_free(d->creds);
        d->creds = NULL;
        return ret;
    }
    mig_endpoint_str(&d->ep, uri, sizeof(uri));
    if (d->creds)
        log_info("waiting for a migration on %s (mutual TLS)", uri);
    else
        log_warn("waiting for a migration on %s: unauthenticated and unencrypted, anyone "
                 "who reaches it can send a VM here (use --tls-dir)", uri);
    return 0;
}

int mig_incoming(struct migration *m, struct vm *vm, struct vm_config *cfg,
                 const struct mig_endpoint *ep, const struct mig_tls *tls)
{
    static struct mig_dst dst;
    struct mig_dst *d = &dst;
    int ret;

    *d = (struct mig_dst){ .m = m, .vm = vm, .cfg = cfg, .sock = -1, .usock = -1, .ep = *ep };
    m->vm = vm;   /* the report shows the devices' switchover counters */
    d->pc.uffd = -1;
    ret = dst_listen(d, tls);
    if (ret < 0)
        return ret;
    dst_current = d;
    m->state = MIG_WAITING;
    ret = dst_accept(d);
    if (ret == 0)
        ret = dst_handshake(d);
    if (ret == 0)
        ret = dst_receive(d);
    if (ret == 0) {
        dst_set_state(d, MIG_APPLYING);
        ret = dst_start_vm(d);
    }
    if (ret < 0 || !d->postcopy)
        dst_stop_data(d);
    if (ret < 0 && __atomic_load_n(&d->cancelled, __ATOMIC_ACQUIRE))
        snprintf(d->err, sizeof(d->err), "cancelled on the destination");
    pthread_mutex_lock(&m->lock);
    if (!d->postcopy || ret < 0) {
        m->state = ret == 0 ? MIG_RUNNING : d->cancelled ? MIG_CANCELLED : MIG_FAILED;
        m->total_ns = time_now_ns() - m->start_ns;
    }
    snprintf(m->error, sizeof(m->error), "%.250s", d->err);
    pthread_mutex_unlock(&m->lock);
    if (ret < 0)
        log_err("incoming migration failed: %s", d->err[0] ? d->err : strerror(-ret));
    else
        log_info(d->postcopy ? "incoming migration: the VM runs here in post-copy"
                             : "incoming migration complete: the VM runs here");
    if (!d->postcopy || ret < 0) {
        mig_incoming_stop(m);
        tp_close(d->sock);
        tp_unlisten(&d->ep, d->lfd);
        tp_creds_free(d->creds);
        d->creds = NULL;
        d->sock = d->lfd = -1;
        dst_current = NULL;
    }
    return ret;
}
