/* The source side of a live migration: a thread that copies memory in
 * rounds while the guest runs, then pauses it, sends what is left and the
 * device state, and hands the VM over. Until the destination confirms that
 * the VM runs there, the source owns it and resumes it on any failure. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "migration/transport.h"
#include "migration/channel.h"
#include "migration/disks.h"
#include "migration/dirty.h"
#include "migration/migration.h"
#include "migration/source_internal.h"
#include "migration/throttle.h"
#include "state/pages.h"
#include "util/log.h"
#include "util/testhook.h"
#include "util/util.h"
#include "vm/vm.h"

#define SRC_CONNECT_MS     10000
#define SRC_FIXED_COST_NS  (5ULL * 1000000)   /* pause, state, apply, resume */
#define SRC_RESUME_COST_NS (3ULL * 1000000)   /* the same less the pause */
#define SRC_MASK_ROUND_NS  (20ULL * 1000000)  /* shorter rounds' per-vCPU rates are noise */
#define SRC_EXTRA_HALF_NS  (250ULL * 1000000)
#define SRC_BACKOFF_ROUND_NS (10ULL * 1000000)  /* rounds at least this long while backing off */
#define SRC_STOP_LATENCY   (1ULL * 1000000)
#define SRC_DEFAULT_BW     (100ULL << 20)
#define NS_PER_S           1000000000ULL
#define SRC_STOP_UNDONE    1   /* src_switchover() resumed the VM: copy on */

uint64_t realtime_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

bool src_cancelled(struct mig_src *s)
{
    return __atomic_load_n(&s->m->cancel, __ATOMIC_ACQUIRE);
}

void src_set_state(struct mig_src *s, enum mig_state st)
{
    pthread_mutex_lock(&s->m->lock);
    s->m->state = st;
    pthread_mutex_unlock(&s->m->lock);
}

int src_fail(struct mig_src *s, int ret, const char *fmt, const char *detail)
{
    if (!s->err[0])
        snprintf(s->err, sizeof(s->err), fmt, detail);
    return ret < 0 ? ret : -EIO;
}

/* Keeps the average rate under the cap by sleeping between batches. */
void src_rate_limit(struct mig_src *s)
{
    uint64_t cap = s->m->params.bandwidth_bps, due, elapsed;

    if (!cap)
        return;
    /* page bytes of the whole migration: they survive post-copy reconnects */
    due = (uint64_t)((unsigned __int128)(s->ps.bytes + xfer_bytes(&s->x)) * NS_PER_S / cap);
    elapsed = time_now_ns() - s->m->start_ns;
    if (due > elapsed) {
        struct timespec ts = time_ns_to_timespec(due - elapsed);
        nanosleep(&ts, NULL);
    }
}

/* Progress for the status: the main channel's counters (the data
 * connections' are added from their live stats). */
void src_publish(struct mig_src *s)
{
    __atomic_store_n(&s->m->bytes, s->out.bytes, __ATOMIC_RELAXED);
    __atomic_store_n(&s->m->pages_normal, s->ps.normal, __ATOMIC_RELAXED);
    __atomic_store_n(&s->m->pages_zero, s->ps.zero, __ATOMIC_RELAXED);
}

int src_flush_batch(struct mig_src *s)
{
    int ret = page_batch_flush(&s->batch, &s->out, &s->ps);

    src_publish(s);
    src_rate_limit(s);
    if (ret == 0 && src_cancelled(s) && !s->paused)
        ret = src_fail(s, -ECANCELED, "%.200s", "cancelled");
    return ret;
}

int src_add_page(struct mig_src *s, uint64_t gpa, const uint8_t *hva, bool zero_marker)
{
    int ret;

    if (s->xon)
        return xfer_add(&s->x, gpa, zero_marker);
    ret = page_batch_add(&s->batch, &s->out, gpa, hva, zero_marker, &s->ps);

    if (ret == 0 && s->batch.count == STREAM_PAGES_PER_REC - 1)
        ret = src_flush_batch(s);   /* before page_batch_add would flush uncounted */
    return ret;
}

/* A send error: the data connection's own story when it has one. */
static int src_xfer_fail(struct mig_src *s, int ret)
{
    char why[256];

    if (ret == -ECANCELED && src_cancelled(s))
        return src_fail(s, ret, "%.200s", "cancelled");
    if (s->xon && xfer_error(&s->x, why, sizeof(why)) < 0)
        return src_fail(s, ret, "sending memory: %.200s", why);
    return src_fail(s, ret, "sending memory: %.200s", chan_strerror(ret));
}

int src_xfer_end(struct mig_src *s)
{
    int ret;

    if (!s->xon)
        return 0;
    ret = xfer_end(&s->x);
    s->xon = false;
    return ret < 0 ? src_xfer_fail(s, ret) : 0;
}

/* What the main channel asks for: data connections, compression, delta.
 * A source asking for nothing new sends the HELLO of older versions. */
static void src_hello_caps(struct mig_src *s, struct stream_header *h)
{
    const struct mig_params *p = &s->m->params;
    uint32_t feat = 0;

    if (p->compress == XC_LZ4)
        feat |= MIG_CAP_LZ4;
    else if (p->compress == XC_ZSTD || p->compress == XC_AUTO)
        feat |= MIG_CAP_ZSTD;
    if (p->delta_cache_bytes)
        feat |= MIG_CAP_DELTA;
    if (!p->connections && !feat)
        return;
    h->proto_flags |= MIG_FLAG_XFER;
    memcpy(h->reserved, &p->connections, 4);
    memcpy(h->reserved + 4, &feat, 4);
    memcpy(h->reserved + 8, &p->delta_cache_bytes, 8);
}

/* The main channel's HELLO is followed by the guest's disks: the destination
 * answers the two together, so a disk that differs there is refused before
 * any page moves. */
static int src_put_disks(struct mig_src *s, struct stream_io *out)
{
    struct mig_disk d[MIG_DISKS_MAX];
    uint8_t buf[MIG_DISKS_MAX_LEN];
    size_t len = mig_disks_encode(d, mig_disks_of(s->vm, d), buf);

    return stream_put_record(out, REC_DISKS, 0, 0, MIG_PROTO_VERSION, REC_FLAG_MANDATORY, buf,
                             len);
}

/* The main channel is published before its handshake: a cancel shuts down
 * the connection of a peer that accepted and never answers. */
static void src_publish_sock(struct mig_src *s, int sock)
{
    pthread_mutex_lock(&s->m->lock);
    s->m->sock = sock;
    pthread_mutex_unlock(&s->m->lock);
}

static int src_read_session(struct mig_src *s, struct stream_io *in)
{
    uint8_t buf[MIG_CTRL_MAX];
    char why[256];
    uint32_t len;
    int ret = chan_read_ctrl(in, REC_SESSION, buf, &len, why, sizeof(why));

    if (ret < 0)
        return src_fail(s, ret, "handshake: %.200s", why);
    if (mig_session_decode(buf, len, &s->session) < 0)
        return src_fail(s, -EPROTO, "handshake: %.200s", "a malformed SESSION record");
    return 0;
}

/* A connection to the destination: HELLO with flags, then its ACK (and on
 * the main channel, the disks before it and the session after). */
int src_open_channel(struct mig_src *s, uint32_t flags, int *sock, struct stream_io *out,
                     struct stream_io *in)
{
    struct mig_params *p = &s->m->params;
    struct stream_header h;
    uint8_t buf[MIG_CTRL_MAX];
    char why[256];
    uint32_t len;
    int32_t status;
    /* The VM-wide value: a vCPU ioctl waits until a halted vCPU 0 leaves
     * KVM_RUN (up to its next timer, ~100 ms here, per connection). */
    int khz = ioctl(s->vm->vm_fd, KVM_GET_TSC_KHZ, 0);
    int ret;

    *sock = tp_connect(s->m->creds, &p->ep, SRC_CONNECT_MS, SRC_TIMEOUT_S, why, sizeof(why));
    if (*sock < 0)
        return src_fail(s, *sock, "connecting to the destination: %.200s", why);
    if (flags == 0)
        src_publish_sock(s, *sock);
    if (tp_stream_init(out, *sock, flags & MIG_FLAG_URGENT ? 1u << 16 : SRC_IOBUF) < 0 ||
        tp_stream_init(in, *sock, 4096) < 0)
        return src_fail(s, -ENOMEM, "%.200s", "out of memory");
    stream_header_init(&h, s->vm->mem.size, s->vm->ncpus, vm_cpuid_fingerprint(s->vm),
                       khz > 0 ? (uint64_t)khz : 0);
    h.proto_version = MIG_PROTO_VERSION;
    h.proto_flags = flags;
    if (flags == 0)
        src_hello_caps(s, &h);
    else
        memcpy(h.reserved, s->session.token, MIG_TOKEN_LEN);
    if (khz <= 0)
        h.tsc_khz = (uint64_t)MAX(ioctl(s->vm->vcpus[0].fd, KVM_GET_TSC_KHZ, 0), 0);
    h.checksum = stream_header_seal(&h);
    ret = stream_write(out, &h, sizeof(h));
    if (ret == 0 && flags == 0)
        ret = src_put_disks(s, out);
    if (ret == 0)
        ret = stream_flush(out);
    if (ret < 0)
        return src_fail(s, ret, "sending the handshake: %.200s", chan_strerror(ret));
    ret = chan_read_ctrl(in, REC_ACK, buf, &len, why, sizeof(why));
    if (ret < 0)
        return src_fail(s, ret, "handshake: %.200s", why);
    memcpy(&status, buf, 4);
    if (status != 0)
        return src_fail(s, -EPROTO, "the destination refused the migration: %.200s",
                        (const char *)buf + 4);
    return flags == 0 ? src_read_session(s, in) : 0;
}

/* Round 1: every page the guest ever touched (holes of the memory file are
 * zero on both sides and skipped), after write-protecting everything. */
static int src_round_full(struct mig_src *s)
{
    struct guest_mem *mem = &s->vm->mem;
    int ret = dirty_clear_all(&s->dirty);

    for (unsigned i = 0; i < mem->nregions && ret == 0; i++) {
        const struct mem_region *r = &mem->regions[i];
        off_t pos = (off_t)r->offset, end = (off_t)(r->offset + r->size);

        while (pos < end && ret == 0 && !src_cancelled(s)) {
            off_t data = lseek(mem->fd, pos, SEEK_DATA), hole;
            if (data < 0 || data >= end)
                break;
            hole = lseek(mem->fd, data, SEEK_HOLE);
            hole = hole < 0 || hole > end ? end : hole;
            for (off_t off = data & ~(off_t)4095; off < hole && ret == 0; off += 4096)
                ret = src_add_page(s, r->gpa + (uint64_t)off - r->offset, mem->hva + off, false);
            pos = hole;
        }
    }
    if (ret == 0)
        ret = src_flush_batch(s);
    return ret < 0 ? src_xfer_fail(s, ret) : 0;
}

/* Sends the pages of one 64-page word of a slot's dirty bitmap. While the
 * guest runs, the chunk is re-protected first, so a write that lands while
 * (or after) we read the page marks it dirty again for the next round. */
static int src_send_word(struct mig_src *s, unsigned slot, uint64_t w, bool live)
{
    struct dirty_slot *sl = &s->dirty.slots[slot];
    uint64_t bits = sl->bitmap[w];
    int ret = live ? dirty_clear_chunk(&s->dirty, slot, w * 64) : 0;

    sl->bitmap[w] = 0;   /* sent: the next sync ORs in what is dirtied again */
    while (bits && ret == 0) {
        uint64_t gpa = sl->gpa + (w * 64 + (uint64_t)__builtin_ctzll(bits)) * PAGE_SIZE;
        ret = src_add_page(s, gpa, mem_ptr(&s->vm->mem, gpa, PAGE_SIZE), true);
        bits &= bits - 1;
    }
    return ret;
}

static int src_send_dirty(struct mig_src *s, bool live)
{
    int ret = 0;

    for (unsigned i = 0; i < s->dirty.nslots && ret == 0; i++) {
        struct dirty_slot *sl = &s->dirty.slots[i];
        for (uint64_t w = 0; w < bitmap_words(sl->pages) && ret == 0; w++) {
            if (!sl->bitmap[w])
                continue;
            ret = src_send_word(s, i, w, live);
            if (live && src_cancelled(s))
                return src_fail(s, -ECANCELED, "%.200s", "cancelled");
        }
    }
    if (ret == 0)
        ret = src_flush_batch(s);
    return ret < 0 ? src_xfer_fail(s, ret) : 0;
}

static void src_record_round(struct mig_src *s, const struct mig_round *r)
{
    struct migration *m = s->m;

    pthread_mutex_lock(&m->lock);
    if (m->nrounds < MIG_MAX_ROUNDS)
        m->rounds[m->nrounds++] = *r;
    m->round = r->round;
    m->pages_remaining = r->dirty_pages;
    m->dirty_rate_pps = r->dirty_rate_pps;
    m->bandwidth_bps = s->bw_bps;
    m->expected_downtime_ns = r->expected_downtime_ns;
    pthread_mutex_unlock(&m->lock);
    log_info("migration round %u: %llu pages (%llu zero) in %llu ms, %llu dirty, "
             "%llu pages/s, expected downtime %llu ms, throttle %u%%", r->round,
             (unsigned long long)r->pages, (unsigned long long)r->zero,
             (unsigned long long)(r->duration_ns / 1000000), (unsigned long long)r->dirty_pages,
             (unsigned long long)r->dirty_rate_pps,
             (unsigned long long)(r->expected_downtime_ns / 1000000), r->throttle);
}

/* The link estimate: the best rate a round of real size achieved, capped. */
static void src_update_bandwidth(struct mig_src *s, uint64_t bytes, uint64_t ns,
                                 uint64_t wire)
{
    uint64_t cap = s->m->params.bandwidth_bps, bw;

    /* with compression or delta (bytes != wire) the cap holds for wire
     * bytes: page bytes go faster by the round's saving */
    if (cap && wire && bytes > wire)
        cap = (uint64_t)((unsigned __int128)cap * bytes / wire);
    if (bytes >= (4u << 20) && ns) {
        bw = (uint64_t)((unsigned __int128)bytes * NS_PER_S / ns);
        s->bw_bps = MAX(s->bw_bps, bw);
    }
    if (!s->bw_bps)
        s->bw_bps = SRC_DEFAULT_BW;
    if (cap && s->bw_bps > cap)
        s->bw_bps = cap;
}

/* Waits until the destination has applied everything sent so far, so that
 * nothing is still queued in socket buffers when the VM is paused (it would
 * have to drain inside the downtime) and the round's rate is end to end.
 * A destination silent for the socket's timeout (SRC_TIMEOUT_S) has failed,
 * unless the data connections moved meanwhile: it is still applying what
 * they carry (slow under a low --bandwidth). A timeout inside a record is
 * never retried: the stream would be out of step. */
int src_wait_round_ack(struct mig_src *s)
{
    uint8_t buf[MIG_CTRL_MAX];
    char why[256];
    uint64_t got, sent;
    uint32_t len;
    int ret;

    do {
        got = s->in.bytes;
        sent = xfer_bytes(&s->x);
        ret = chan_read_ctrl(&s->in, REC_ROUND_ACK, buf, &len, why, sizeof(why));
    } while (ret == -EAGAIN && s->in.bytes == got && xfer_bytes(&s->x) != sent &&
             !src_cancelled(s) && (s->in.err = 0) == 0);
    if (ret == -EAGAIN)
        ret = -ETIMEDOUT;
    return ret < 0 ? src_fail(s, ret, "waiting for the destination: %.200s", why) : 0;
}

/* Dirty ring: what each vCPU dirtied during the round, per second. */
static void src_vcpu_rates(struct mig_src *s, struct mig_round *r)
{
    struct migration *m = s->m;
    unsigned n = s->dirty.nrings;

    pthread_mutex_lock(&m->lock);
    m->nvcpu_pps = n;
    for (unsigned v = 0; v < n; v++) {
        uint64_t now = __atomic_load_n(&s->dirty.vcpu_pages[v], __ATOMIC_RELAXED);
        m->vcpu_pps[v] = r->duration_ns ? (now - s->vcpu_pages0[v]) * NS_PER_S / r->duration_ns
                                        : 0;
        s->vcpu_pages0[v] = now;
        if (v < MIG_ROUND_VCPUS)
            r->vcpu_pps[v] = m->vcpu_pps[v];
    }
    r->nvcpus = MIN(n, MIG_ROUND_VCPUS);
    pthread_mutex_unlock(&m->lock);
}

/* Pages and bytes of both the main channel and the data connections. */
static void src_totals(struct mig_src *s, uint64_t *normal, uint64_t *zero, uint64_t *bytes)
{
    const struct xfer_stats *x = &s->x.st;

    *normal = s->ps.normal + __atomic_load_n(&x->pages_data, __ATOMIC_RELAXED) +
              __atomic_load_n(&x->pages_delta, __ATOMIC_RELAXED);
    *zero = s->ps.zero + __atomic_load_n(&x->pages_zero, __ATOMIC_RELAXED);
    *bytes = s->out.bytes + xfer_bytes(&s->x);
}

/* Compression and delta make a round move more pages than its wire bytes
 * say: the policy needs pages per second, so the link is measured in page
 * bytes then (and the cap on wire bytes scaled by the round's saving). */
static uint64_t src_round_link_bytes(struct mig_src *s, uint64_t normal, uint64_t wire)
{
    if (s->xon && (s->x.p.algo != XC_NONE || s->x.p.delta_bytes))
        return normal * PAGE_SIZE;
    return wire;
}

/* What a stop that did not fit overshot its estimate, added to the fixed
 * cost of later decisions: halved every SRC_EXTRA_HALF_NS, so a one-off slow
 * pause is forgotten and a lasting one is tried again only now and then
 * (each undone stop costs the guest a pause; doubled when one follows). */
static uint64_t src_stop_extra(const struct mig_src *s)
{
    uint64_t halvings = s->stop_extra_ns ? (time_now_ns() - s->undone_ns) / SRC_EXTRA_HALF_NS : 0;

    return halvings >= 64 ? 0 : s->stop_extra_ns >> halvings;
}

/* After an undone stop the next one waits for src_stop_extra() to decay;
 * rounds with next to nothing to send would spin meanwhile. */
static void src_backoff(struct mig_src *s)
{
    if (s->last_round_ns < SRC_BACKOFF_ROUND_NS && src_stop_extra(s))
        usleep((useconds_t)((SRC_BACKOFF_ROUND_NS - s->last_round_ns) / 1000));
}

/* One round: copy (round 1: all; later: the dirty set), then sync the log
 * and ask the policy. Returns the policy's action. */
static int src_round(struct mig_src *s, unsigned round, struct policy_decision *d)
{
    uint64_t n0, z0, bytes0, n1, z1, bytes1;
    uint64_t t0 = time_now_ns();
    struct mig_round r = { .round = round, .throttle = s->m->throttle };
    struct policy_input in;
    int64_t dirty;
    int ret;

    src_backoff(s);   /* inside the round: its dirty rate stays true */
    src_totals(s, &n0, &z0, &bytes0);
    ret = round == 1 ? src_round_full(s) : src_send_dirty(s, true);
    if (ret == 0 && s->xon && (ret = xfer_round_end(&s->x, round)) < 0)
        src_xfer_fail(s, ret);
    if (ret == 0)
        ret = mig_send_ctrl(&s->out, REC_ROUND, &round, sizeof(round));
    if (ret == 0)
        ret = src_wait_round_ack(s);
    dirty = ret == 0 ? dirty_sync(&s->dirty) : ret;
    if (dirty < 0)
        return src_fail(s, (int)dirty, "%.200s", s->err[0] ? s->err : "dirty log sync failed");
    r.duration_ns = time_now_ns() - t0;
    s->last_round_ns = r.duration_ns;
    src_totals(s, &n1, &z1, &bytes1);
    r.pages = n1 - n0;
    r.zero = z1 - z0;
    r.bytes = bytes1 - bytes0;
    r.dirty_pages = (uint64_t)dirty;
    r.dirty_rate_pps = r.duration_ns ? (uint64_t)dirty * NS_PER_S / r.duration_ns : 0;
    src_publish(s);
    src_vcpu_rates(s, &r);
    src_update_bandwidth(s, src_round_link_bytes(s, r.pages, r.bytes), r.duration_ns, r.bytes);
    in = (struct policy_input){
        .round = round, .elapsed_ns = time_now_ns() - s->m->start_ns,
        .dirty_pages = r.dirty_pages, .bandwidth_bps = s->bw_bps,
        .dirty_rate_pps = r.dirty_rate_pps,
        .fixed_cost_ns = SRC_FIXED_COST_NS + src_stop_extra(s),
        .stop_latency_ns = SRC_STOP_LATENCY, .last_round_sent = r.pages + r.zero,
        .throttle = s->m->throttle,
    };
    *d = policy_decide(&s->m->params.policy, &in);
    r.expected_downtime_ns = d->expected_downtime_ns;
    src_record_round(s, &r);
    return 0;
}

/* Hybrid: post-copy once pre-copy has had its chance and still does not fit
 * (after N rounds if asked, else as soon as a round stops shrinking). */
static bool src_want_postcopy(struct mig_src *s, unsigned round, const struct policy_decision *d)
{
    const struct mig_params *p = &s->m->params;
    const struct mig_round *r = s->m->nrounds ? &s->m->rounds[s->m->nrounds - 1] : NULL;

    if (__atomic_load_n(&s->m->postcopy_req, __ATOMIC_ACQUIRE))
        return true;
    if (p->mode == MIG_MODE_POSTCOPY)
        return true;
    if (p->mode != MIG_MODE_HYBRID || d->action == POLICY_SWITCHOVER)
        return false;
    if (p->postcopy_after_rounds)
        return round >= p->postcopy_after_rounds;
    return round >= 2 && r && r->dirty_pages * 2 >= r->pages + r->zero;
}

/* Dirty ring: only the vCPUs that dirty memory are throttled. A throttled
 * vCPU's rate is scaled back up by its throttle, or the others' small rates
 * would look like a fair share once it is slowed down; a very short round's
 * rates are noise, and then the last choice stands. */
static void src_choose_throttled(struct mig_src *s)
{
    struct migration *m = s->m;
    uint64_t rates[DIRTY_MAX_RINGS], mask = 0;
    unsigned n = MIN(s->dirty.nrings, DIRTY_MAX_RINGS);

    for (unsigned v = 0; v < n; v++) {
        bool slowed = m->throttle && (!m->throttle_mask || (m->throttle_mask >> v & 1));
        rates[v] = slowed ? m->vcpu_pps[v] * 100 / (100 - m->throttle) : m->vcpu_pps[v];
    }
    if (s->last_round_ns >= SRC_MASK_ROUND_NS)
        mask = policy_throttle_mask(rates, n);
    if (mask)
        m->throttle_mask = mask;
    throttle_set_mask(s->vm, m->throttle_mask);
}

static int src_precopy(struct mig_src *s, bool *forced, bool *postcopy)
{
    struct policy_decision d = { 0 };

    for (;;) {
        unsigned round = ++s->round;
        int ret = src_round(s, round, &d);
        if (ret < 0)
            return ret;
        if (src_cancelled(s))
            return src_fail(s, -ECANCELED, "%.200s", "cancelled");
        if (src_want_postcopy(s, round, &d) ||
            (s->m->params.mode == MIG_MODE_HYBRID && d.action == POLICY_FORCE)) {
            *postcopy = true;
            return 0;
        }
        switch (d.action) {
        case POLICY_SWITCHOVER: return 0;
        case POLICY_FORCE: *forced = true; return 0;
        case POLICY_FAIL:
            return src_fail(s, -ETIMEDOUT, "%.200s", "did not converge within --max-time");
        case POLICY_THROTTLE:
            if (s->dirty.nrings)
                src_choose_throttled(s);
            s->m->throttle = d.throttle;
            s->m->throttle_max = MAX(s->m->throttle_max, d.throttle);
            throttle_set(s->vm, d.throttle);
            break;
        case POLICY_CONTINUE: break;
        }
    }
}

int src_wait_running(struct mig_src *s, uint64_t *resume_rt, uint64_t *apply_ns)
{
    uint8_t buf[MIG_CTRL_MAX];
    uint32_t len;
    int32_t status;
    char why[256];
    int ret = chan_read_ctrl(&s->in, REC_RUNNING, buf, &len, why, sizeof(why));

    if (ret < 0)
        return src_fail(s, ret, "waiting for the destination to run the VM: %.200s", why);
    memcpy(&status, buf, 4);
    if (status != 0 || len < 4 + 16 + 1)
        return src_fail(s, -EPROTO, "the destination could not start the VM: %.200s",
                        (const char *)buf + (len >= 21 ? 20 : 4));
    memcpy(resume_rt, buf + 4, 8);
    memcpy(apply_ns, buf + 12, 8);
    return 0;
}

/* The start of every switchover: the vCPUs stop (unless the user had paused
 * them) and op_lock is held until the end, so no pause, resume or snapshot
 * request interleaves. */
int src_stop_vm(struct mig_src *s)
{
    int ret;

    pthread_mutex_lock(&s->vm->op_lock);
    s->op_locked = true;
    s->was_paused = s->vm->state == VM_PAUSED;
    ret = s->was_paused ? 0 : vm_pause(s->vm);
    if (ret < 0)
        return src_fail(s, ret, "pausing the VM: %.200s", strerror(-ret));
    s->paused = !s->was_paused;
    throttle_set(s->vm, 0);
    return 0;
}

/* Once paused, with the exact page count: if the rest of the stop would
 * not fit, resume and go on copying, so the limit holds although the pause
 * and dirtying estimates behind the decision can be off (src_stop_extra). */
static bool src_stop_fits(struct mig_src *s, int64_t pages, uint64_t stopped_ns)
{
    struct policy_input in = { .dirty_pages = (uint64_t)pages, .bandwidth_bps = s->bw_bps,
                               .fixed_cost_ns = SRC_RESUME_COST_NS };
    uint64_t projected = stopped_ns + policy_expected_downtime(&in), extra;

    if (policy_stop_fits(&s->m->params.policy, &in, stopped_ns))
        return true;
    extra = src_stop_extra(s);   /* already in the estimate that was overshot */
    s->stop_extra_ns = MAX(2 * extra, extra + (projected > s->m->expected_downtime_ns ?
                                               projected - s->m->expected_downtime_ns : 0));
    s->undone_ns = time_now_ns();
    log_info("migration: %lld pages left at the pause would stop the VM ~%llu ms "
             "(limit %llu ms): resuming and copying on", (long long)pages,
             (unsigned long long)(projected / 1000000),
             (unsigned long long)(s->m->params.policy.downtime_limit_ns / 1000000));
    return false;
}

/* Fault injection for the tests: FERRY_TEST_SLOW_STOP_MS makes the first
 * pause that long, as a host whose CPUs are all busy can (34 ms was seen). */
static void src_test_slow_stop(struct mig_src *s)
{
    const char *env = test_hook("FERRY_TEST_SLOW_STOP_MS");

    if (env && s->m->stop_retries == 0)
        usleep((useconds_t)strtoul(env, NULL, 10) * 1000);
}

/* Undoes src_stop_vm(): the VM runs (throttled as before) and copying goes on. */
static int src_stop_retry(struct mig_src *s, uint64_t stopped_ns)
{
    if (s->paused)
        vm_resume(s->vm);
    s->paused = false;
    throttle_set(s->vm, s->m->throttle);
    s->op_locked = false;
    pthread_mutex_unlock(&s->vm->op_lock);
    pthread_mutex_lock(&s->m->lock);
    s->m->stop_retries++;
    s->m->stop_retry_ns += stopped_ns;
    s->m->state = MIG_PRECOPY;
    pthread_mutex_unlock(&s->m->lock);
    return SRC_STOP_UNDONE;
}

/* Stop-and-copy: everything after vm_pause() counts as downtime. Returns
 * SRC_STOP_UNDONE when the stop was undone (src_stop_fits). */
static int src_switchover(struct mig_src *s, bool forced)
{
    struct mig_downtime *dt = &s->m->downtime;
    uint64_t t_pause = time_now_ns(), rt_pause = realtime_ns(), t1, t2, t3, resume_rt = 0;
    uint64_t normal0, zero0, bytes0, normal1, zero1, bytes1;
    char err[256] = "";
    int64_t pages;
    int ret;

    src_set_state(s, MIG_SWITCHOVER);
    ret = src_stop_vm(s);
    if (ret < 0)
        return ret;
    src_test_slow_stop(s);
    t1 = time_now_ns();
    src_totals(s, &normal0, &zero0, &bytes0);
    pages = dirty_sync(&s->dirty);
    if (pages >= 0 && !forced && !s->was_paused &&
        !src_stop_fits(s, pages, time_now_ns() - t_pause))
        return src_stop_retry(s, time_now_ns() - t_pause);
    s->x.final = true;
    ret = pages < 0 ? -EIO : src_send_dirty(s, false);
    if (ret == 0)   /* the state goes on the main channel while the last pages drain */
        ret = src_xfer_end(s);
    t2 = time_now_ns();
    src_totals(s, &normal1, &zero1, &bytes1);
    bytes0 = s->out.bytes;
    if (ret == 0 && (ret = state_save_sections(&s->vm->sections, &s->out, err, sizeof(err))) < 0)
        src_fail(s, ret, "saving the VM state: %.200s", err);
    if (ret == 0)   /* a VM the user had paused stays paused on the destination */
        ret = stream_put_record(&s->out, REC_END, 0, 0, 1, s->was_paused ? REC_END_PAUSED : 0,
                                NULL, 0);
    if (ret == 0 && (ret = stream_flush(&s->out)) < 0)
        src_fail(s, ret, "sending the VM state: %.200s", chan_strerror(ret));
    t3 = time_now_ns();
    if (ret == 0)
        ret = src_wait_running(s, &resume_rt, &dt->dest_apply_ns);
    dt->pause_ns = t1 - t_pause;
    dt->final_pages_ns = t2 - t1;
    dt->state_ns = t3 - t2;
    dt->final_pages = normal1 + zero1 - normal0 - zero0;
    dt->state_bytes = s->out.bytes - bytes0;
    dt->total_ns = ret == 0 && resume_rt > rt_pause ? resume_rt - rt_pause : 0;
    return ret;
}

/* The data connections, one HELLO(DATA) each, then their threads. */
static int src_connect_data(struct mig_src *s)
{
    const struct mig_params *p = &s->m->params;
    struct xfer_params xp = { .conns = p->connections, .algo = p->compress,
                              .delta_bytes = p->delta_cache_bytes,
                              .cap_bps = p->bandwidth_bps, .start_ns = s->m->start_ns };
    int socks[MIG_MAX_CONNS];
    unsigned n = 0;
    int ret = 0;

    while (n < p->connections && ret == 0) {
        struct stream_io out, in;
        ret = src_open_channel(s, MIG_FLAG_DATA, &socks[n], &out, &in);
        stream_io_free(&out);
        stream_io_free(&in);
        if (socks[n] >= 0 && ret == 0)
            n++;
        else if (socks[n] >= 0)
            tp_close(socks[n]);
    }
    if (ret < 0) {
        while (n)
            tp_close(socks[--n]);
        return ret;
    }
    ret = xfer_start(&s->x, &xp, &s->vm->mem, socks, &s->m->cancel);
    s->xon = true;
    pthread_mutex_lock(&s->m->lock);
    s->m->xlive = &s->x.st;
    s->m->xconns = p->connections;
    pthread_mutex_unlock(&s->m->lock);
    return ret < 0 ? src_fail(s, ret, "starting the data connections: %.200s",
                              strerror(-ret)) : 0;
}

static int src_connect(struct mig_src *s)
{
    int ret = src_open_channel(s, 0, &s->sock, &s->out, &s->in);

    if (ret == 0 && s->m->params.connections)
        ret = src_connect_data(s);
    return ret;
}

static int src_dirty_start(struct mig_src *s)
{
    struct vm *vm = s->vm;
    int fds[VM_MAX_VCPUS];

    if (s->m->params.dirty_track != MIG_DIRTY_RING)
        return dirty_start(&s->dirty, vm->vm_fd, &vm->mem);
    for (unsigned i = 0; i < vm->ncpus; i++)
        fds[i] = vm->vcpus[i].fd;
    return dirty_start_ring(&s->dirty, vm->vm_fd, &vm->mem, fds, vm->ncpus, vm->dirty_ring);
}

static int src_run(struct mig_src *s)
{
    bool forced = false, postcopy = false;
    int ret = src_connect(s);

    for (unsigned i = 0; i < s->vm->ncpus && i < 64; i++)
        s->throttled0[i] = __atomic_load_n(&s->vm->vcpus[i].throttled_ns, __ATOMIC_RELAXED);
    if (ret == 0 && (ret = src_dirty_start(s)) < 0)
        src_fail(s, ret, "starting dirty logging: %.200s", strerror(-ret));
    if (ret == 0) {
        src_set_state(s, MIG_PRECOPY);
        do {
            ret = src_precopy(s, &forced, &postcopy);
            if (ret == 0)
                ret = postcopy ? src_postcopy(s) : src_switchover(s, forced);
        } while (ret == SRC_STOP_UNDONE);
    }
    return ret;
}

/* Once post-copy has started the VM is no longer ours to resume. */
static bool src_in_postcopy(const struct migration *m)
{
    return m->state == MIG_POSTCOPY || m->state == MIG_POSTCOPY_PAUSED;
}

/* On failure before the destination confirmed: the VM stays here. */
static void src_cleanup(struct mig_src *s, int ret)
{
    struct migration *m = s->m;

    bool postcopy = src_in_postcopy(m);

    xfer_stop(&s->x);
    s->xon = false;
    throttle_set(s->vm, 0);
    throttle_set_mask(s->vm, 0);
    for (unsigned i = 0; i < s->vm->ncpus && i < 64; i++)
        m->vcpu_throttled_ns[i] = __atomic_load_n(&s->vm->vcpus[i].throttled_ns,
                                                  __ATOMIC_RELAXED) - s->throttled0[i];
    if (s->dirty.enabled)
        dirty_stop(&s->dirty);
    if (ret < 0 && s->sock >= 0 && s->out.err == 0)
        mig_send_status(&s->out, REC_CANCEL, ret, s->err);
    if (ret < 0 && s->paused && !postcopy)
        vm_resume(s->vm);
    if (s->op_locked)
        pthread_mutex_unlock(&s->vm->op_lock);
    src_postcopy_cleanup(s);
    pthread_mutex_lock(&m->lock);
    m->state = ret == 0 ? MIG_COMPLETED : postcopy ? MIG_ABORTED :
               m->cancel ? MIG_CANCELLED : MIG_FAILED;
    m->total_ns = time_now_ns() - m->start_ns;
    snprintf(m->error, sizeof(m->error), "%s", ret == 0 ? "" : s->err);
    m->sock = -1;
    m->xs = s->x.st;
    m->xlive = NULL;
    pthread_mutex_unlock(&m->lock);
    tp_close(s->sock);
    s->sock = -1;
    stream_io_free(&s->out);
    stream_io_free(&s->in);
}

/* Failed before anything started: nothing to undo, but `migrate --wait` and
 * GET /v1/migration must see it end. */
static void src_fail_setup(struct migration *m, const char *why)
{
    log_err("migration failed: %s; the VM keeps running here", why);
    pthread_mutex_lock(&m->lock);
    m->state = MIG_FAILED;
    m->total_ns = time_now_ns() - m->start_ns;
    snprintf(m->error, sizeof(m->error), "%s", why);
    pthread_cond_broadcast(&m->done);
    pthread_mutex_unlock(&m->lock);
}

/* The migration's TLS credentials go with its thread (or its failed start). */
static void src_drop_creds(struct migration *m)
{
    tp_creds_free(m->creds);
    m->creds = NULL;
}

static void *src_thread(void *arg)
{
    struct migration *m = arg;
    struct mig_src *s = test_hook("FERRY_TEST_FAIL_ALLOC") ? NULL : calloc(1, sizeof(*s));
    int ret;

    pthread_setname_np(pthread_self(), "migration");
    if (!s) {
        src_drop_creds(m);   /* before the state is final: then a new start may come */
        src_fail_setup(m, "out of memory for the migration's state");
        return NULL;
    }
    *s = (struct mig_src){ .m = m, .vm = m->vm, .sock = -1, .usock = -1 };
    ret = src_run(s);
    src_cleanup(s, ret);
    if (ret == 0) {
        log_info("migration completed: downtime %llu ms, %llu rounds, %llu bytes",
                 (unsigned long long)(m->downtime.total_ns / 1000000), m->nrounds ? 
                 (unsigned long long)m->nrounds : 0ULL,
                 (unsigned long long)(m->bytes + m->xs.bytes_wire));
        vm_request_stop(m->vm, 0, "migrated: the VM runs on the destination now");
    } else if (m->state == MIG_ABORTED) {
        log_err("%s", s->err);
        vm_request_stop(m->vm, 1, "post-copy aborted: the VM is lost");
    } else {
        log_err("migration failed: %s; the VM keeps running here", s->err);
    }
    pthread_mutex_lock(&m->lock);
    src_drop_creds(m);
    pthread_cond_broadcast(&m->done);
    pthread_mutex_unlock(&m->lock);
    free(s);
    return NULL;
}

static bool mig_busy(const struct migration *m)
{
    return m->state == MIG_SETUP || m->state == MIG_PRECOPY || m->state == MIG_SWITCHOVER ||
           m->state == MIG_POSTCOPY || m->state == MIG_POSTCOPY_PAUSED;
}

/* The last migration's thread ends on its own once its state is final; it
 * is joined without m->lock, which its last steps take. */
static int mig_start_prepare(struct migration *m, char *err, size_t errlen)
{
    bool busy, joinable;

    pthread_mutex_lock(&m->lock);
    busy = mig_busy(m);
    joinable = !busy && m->thread_started;
    m->thread_started = m->thread_started && !joinable;
    pthread_mutex_unlock(&m->lock);
    if (busy)
        return snprintf(err, errlen, "a migration is already running"), -EBUSY;
    if (joinable)
        pthread_join(m->thread, NULL);
    return 0;
}

int mig_start(struct migration *m, struct vm *vm, const struct mig_params *p,
              char *err, size_t errlen)
{
    static pthread_mutex_t start_lock = PTHREAD_MUTEX_INITIALIZER;   /* one start at a time */
    struct tp_creds *creds = NULL;
    int ret;

    if (mig_memory_incomplete(m)) {
        snprintf(err, errlen, "this VM is still receiving its memory (post-copy)");
        return -EBUSY;
    }
    pthread_mutex_lock(&start_lock);
    ret = mig_start_prepare(m, err, errlen);
    if (ret == 0)
        ret = tp_creds_load(&p->tls, false, &creds, err, errlen);
    if (ret < 0) {
        pthread_mutex_unlock(&start_lock);
        return ret;
    }
    pthread_mutex_lock(&m->lock);
    memset((char *)m + offsetof(struct migration, vm), 0,
           sizeof(*m) - offsetof(struct migration, vm));
    m->vm = vm;
    m->source = true;
    m->params = *p;
    m->creds = creds;
    m->state = MIG_SETUP;
    m->sock = -1;
    m->start_ns = time_now_ns();
    ret = pthread_create(&m->thread, NULL, src_thread, m);
    m->thread_started = ret == 0;
    if (ret) {
        m->state = MIG_FAILED;
        src_drop_creds(m);
        snprintf(err, errlen, "cannot start the migration thread: %s", strerror(ret));
    }
    pthread_mutex_unlock(&m->lock);
    pthread_mutex_unlock(&start_lock);
    return -ret;
}
