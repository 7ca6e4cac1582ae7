/* Migration bookkeeping shared by both sides: lifecycle calls and the
 * status/report JSON. */
#include "migration/migration.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "util/util.h"
#include "vm/vm.h"

void mig_init(struct migration *m)
{
    memset(m, 0, sizeof(*m));
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->done, NULL);
    m->sock = -1;
}

const char *mig_state_name(enum mig_state s)
{
    static const char *const names[] = {
        "none", "setup", "precopy", "switchover", "completed", "failed", "cancelled",
        "waiting", "receiving", "applying", "running",
        "postcopy", "postcopy-paused", "aborted",
    };
    return names[s];
}

const char *mig_record_name(uint32_t type)
{
    static const char *const names[] = {
        [REC_SECTION] = "SECTION", [REC_PAGES] = "PAGES", [REC_END] = "END",
        [REC_BITMAP] = "BITMAP", [REC_XPAGES] = "XPAGES", [REC_ACK] = "ACK",
        [REC_ROUND] = "ROUND", [REC_RUNNING] = "RUNNING", [REC_CANCEL] = "CANCEL",
        [REC_POSTCOPY_ADVISE] = "POSTCOPY_ADVISE", [REC_PAGE_REQ] = "PAGE_REQ",
        [REC_POSTCOPY_DONE] = "POSTCOPY_DONE", [REC_ROUND_ACK] = "ROUND_ACK",
        [REC_DISKS] = "DISKS",
    };

    return type < sizeof(names) / sizeof(names[0]) && names[type] ? names[type] : NULL;
}

static bool mig_active_locked(const struct migration *m)
{
    return m->state == MIG_SETUP || m->state == MIG_PRECOPY || m->state == MIG_SWITCHOVER ||
           (m->source && (m->state == MIG_POSTCOPY || m->state == MIG_POSTCOPY_PAUSED));
}

bool mig_active(struct migration *m)
{
    bool active;

    pthread_mutex_lock(&m->lock);
    active = mig_active_locked(m);
    pthread_mutex_unlock(&m->lock);
    return active;
}

/* Either side: guest memory is incomplete here until post-copy is done. */
bool mig_memory_incomplete(struct migration *m)
{
    enum mig_state st = __atomic_load_n(&m->state, __ATOMIC_ACQUIRE);

    return !m->source && (st == MIG_POSTCOPY || st == MIG_POSTCOPY_PAUSED);
}

void mig_wait(struct migration *m)
{
    pthread_mutex_lock(&m->lock);
    while (mig_active_locked(m))
        pthread_cond_wait(&m->done, &m->lock);
    pthread_mutex_unlock(&m->lock);
}

int mig_postcopy_now(struct migration *m)
{
    int ret = 0;

    pthread_mutex_lock(&m->lock);
    if (m->source && (m->state == MIG_SETUP || m->state == MIG_PRECOPY))
        __atomic_store_n(&m->postcopy_req, true, __ATOMIC_RELEASE);
    else
        ret = -ENOENT;
    pthread_mutex_unlock(&m->lock);
    return ret;
}

int mig_recover(struct migration *m, const struct mig_endpoint *ep)
{
    int ret = 0;

    pthread_mutex_lock(&m->lock);
    if (m->source && m->state == MIG_POSTCOPY_PAUSED) {
        m->recover_ep_set = ep != NULL;
        if (ep)
            m->recover_ep = *ep;
        m->recover_req = true;
    } else {
        ret = m->state == MIG_POSTCOPY ? -EALREADY : -ENOENT;
    }
    pthread_mutex_unlock(&m->lock);
    return ret;
}

/* Giving the VM up: only meaningful once post-copy has split it. On the
 * destination it is the way out when the source can no longer say so. */
int mig_abort(struct migration *m)
{
    int ret = 0;

    if (!m->source)
        return mig_incoming_abort(m);
    pthread_mutex_lock(&m->lock);
    if (m->source && (m->state == MIG_POSTCOPY || m->state == MIG_POSTCOPY_PAUSED)) {
        /* The thread sees the flag within a batch or a poll interval and
         * tells the destination before it lets go. */
        __atomic_store_n(&m->abort_req, true, __ATOMIC_RELEASE);
    } else {
        ret = -ENOENT;
    }
    pthread_mutex_unlock(&m->lock);
    return ret;
}

/* The thread notices the flag between batches; shutting the socket down
 * also frees it from a send or receive that would otherwise block. Once the
 * switchover has started, cancelling is refused: the VM may already run on
 * the destination. */
int mig_cancel(struct migration *m)
{
    struct timespec until;
    int ret = 0;

    pthread_mutex_lock(&m->lock);
    if (m->state == MIG_SETUP || m->state == MIG_PRECOPY) {
        __atomic_store_n(&m->cancel, true, __ATOMIC_RELEASE);
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 2;
        while (mig_active_locked(m) && pthread_cond_timedwait(&m->done, &m->lock, &until) == 0)
            ;
        if (mig_active_locked(m) && m->sock >= 0)
            shutdown(m->sock, SHUT_RDWR);   /* blocked on a peer that stopped reading */
    } else {
        ret = m->state == MIG_SWITCHOVER || m->state == MIG_POSTCOPY ||
              m->state == MIG_POSTCOPY_PAUSED ? -EINPROGRESS : -ENOENT;
    }
    pthread_mutex_unlock(&m->lock);
    return ret;
}

static json_t *u64_array(const uint64_t *v, unsigned n)
{
    json_t *a = json_array();

    for (unsigned i = 0; i < n; i++)
        json_array_append_new(a, json_integer((json_int_t)v[i]));
    return a;
}

static json_t *round_json(const struct mig_round *r)
{
    json_t *j = json_pack("{s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:I}",
                     "round", (int)r->round, "pages", (json_int_t)r->pages,
                     "zero_pages", (json_int_t)r->zero, "bytes", (json_int_t)r->bytes,
                     "duration_ms", (json_int_t)(r->duration_ns / 1000000),
                     "dirty_pages", (json_int_t)r->dirty_pages,
                     "dirty_rate_pps", (json_int_t)r->dirty_rate_pps,
                     "throttle_pct", (int)r->throttle,
                     "expected_downtime_ms", (json_int_t)(r->expected_downtime_ns / 1000000));

    if (r->nvcpus)
        json_object_set_new(j, "vcpu_dirty_pps", u64_array(r->vcpu_pps, r->nvcpus));
    return j;
}

static json_t *downtime_json(const struct mig_downtime *d)
{
    return json_pack("{s:f, s:f, s:f, s:f, s:f, s:I, s:I}",
                     "total_ms", d->total_ns / 1e6, "pause_ms", d->pause_ns / 1e6,
                     "final_pages_ms", d->final_pages_ns / 1e6, "state_ms", d->state_ns / 1e6,
                     "dest_apply_ms", d->dest_apply_ns / 1e6,
                     "final_pages", (json_int_t)d->final_pages,
                     "state_bytes", (json_int_t)d->state_bytes);
}

static json_t *params_xfer(json_t *j, const struct mig_params *p)
{
    static const char *const algos[] = { "none", "lz4", "zstd", "auto" };

    json_object_set_new(j, "connections", json_integer(p->connections));
    json_object_set_new(j, "compress", json_string(algos[p->compress & 3]));
    json_object_set_new(j, "delta_cache_mib", json_integer((json_int_t)(p->delta_cache_bytes >> 20)));
    json_object_set_new(j, "dirty_track", json_string(p->dirty_track == MIG_DIRTY_RING ?
                                                       "ring" : "bitmap"));
    return j;
}

static json_t *params_json(const struct mig_params *p)
{
    static const char *const modes[] = { "precopy", "postcopy", "hybrid" };
    char uri[400];

    return params_xfer(json_pack("{s:s, s:b, s:s, s:i, s:I, s:I, s:I, s:s, s:b}",
                     "uri", mig_endpoint_str(&p->ep, uri, sizeof(uri)),
                     "tls", p->tls.dir[0] != 0, "mode", modes[p->mode],
                     "postcopy_after_rounds", (int)p->postcopy_after_rounds,
                     "downtime_limit_ms", (json_int_t)(p->policy.downtime_limit_ns / 1000000),
                     "bandwidth_mibs", (json_int_t)(p->bandwidth_bps >> 20),
                     "max_time_s", (json_int_t)(p->policy.max_time_ns / 1000000000ULL),
                     "on_timeout", p->policy.on_timeout == ON_TIMEOUT_FORCE ? "force" : "fail",
                     "auto_converge", p->policy.auto_converge), p);
}


unsigned mig_default_connections(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    return n < 1 ? 1 : n > 4 ? 4 : (unsigned)n;
}

static json_int_t xs_get(const uint64_t *v)
{
    return (json_int_t)__atomic_load_n(v, __ATOMIC_RELAXED);
}

/* The parallel engine: what each technique saved and what it cost. The
 * source reports its sender threads, the destination its appliers. */
static json_t *transfer_json(const struct migration *m)
{
    const struct xfer_stats *x = m->xlive ? m->xlive : &m->xs;
    static const char *const algos[] = { "none", "lz4", "zstd", "auto" };
    json_t *cpu = json_array(), *j;

    for (unsigned i = 0; i < m->xconns && i < XFER_MAX_CONNS; i++)
        json_array_append_new(cpu, json_real(__atomic_load_n(&x->cpu_ns[i],
                                                             __ATOMIC_RELAXED) / 1e6));
    j = json_pack("{s:i, s:s, s:I, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
                  "s:I, s:I}",
                  "connections", (int)m->xconns,
                  "compress", m->source ? algos[m->params.compress & 3] : "per batch",
                  "delta_cache_mib", (json_int_t)(m->params.delta_cache_bytes >> 20),
                  "dirty_track", m->params.dirty_track == MIG_DIRTY_RING ? "ring" : "bitmap",
                  "bytes_raw", xs_get(&x->bytes_raw), "bytes_wire", xs_get(&x->bytes_wire),
                  "pages_data", xs_get(&x->pages_data),
                  "zero_pages", xs_get(&x->pages_zero),
                  "zero_bytes_saved", xs_get(&x->zero_bytes_saved),
                  "delta_pages", xs_get(&x->pages_delta),
                  "delta_bytes_saved", xs_get(&x->delta_bytes_saved),
                  "delta_cache_hits", xs_get(&x->delta_hits),
                  "delta_cache_misses", xs_get(&x->delta_misses),
                  "compress_bytes_in", xs_get(&x->comp_in),
                  "compress_bytes_out", xs_get(&x->comp_out),
                  "batches", xs_get(&x->batches));
    json_object_set_new(j, m->source ? "sender_cpu_ms" : "applier_cpu_ms", cpu);
    return j;
}

static json_t *postcopy_json(const struct migration *m)
{
    uint64_t now = time_now_ns();

    return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:i, s:i, s:i, s:i, s:I}",
                     "pages_total", (json_int_t)m->pc_total_pages,
                     "pages_remaining", (json_int_t)__atomic_load_n(&m->pc_remaining,
                                                                    __ATOMIC_RELAXED),
                     "pages_pushed", (json_int_t)m->pc_pushed,
                     "pages_demanded", (json_int_t)m->pc_demanded,
                     "remote_faults", (json_int_t)m->pc_faults,
                     "zero_faults", (json_int_t)m->pc_zero_faults,
                     "vcpu_blocked_ms", m->pc_blocked_ns / 1e6,
                     "fault_latency_p50_us", (int)m->pc_p50_us,
                     "fault_latency_p99_us", (int)m->pc_p99_us,
                     "fault_latency_max_us", (int)m->pc_max_us,
                     "recoveries", (int)m->pc_recoveries,
                     "duration_ms", (json_int_t)(m->pc_start_ns ?
                         ((m->total_ns ? m->start_ns + m->total_ns : now) - m->pc_start_ns)
                         / 1000000 : 0));
}

static uint64_t mig_elapsed(const struct migration *m)
{
    if (!m->start_ns)
        return 0;
    return m->total_ns ? m->total_ns : time_now_ns() - m->start_ns;
}

/* Destination: packets the host dropped on the taps between the source's
 * pause and this side's start (docs/MIGRATION.md). */
static uint64_t mig_net_dropped(struct vm *vm)
{
    uint64_t n = 0;

    for (unsigned i = 0; i < NET_MAX_DEVICES; i++)
        if (vm->net[i].vdev.ops)
            n += __atomic_load_n(&vm->net[i].st.switchover_dropped, __ATOMIC_RELAXED);
    return n;
}

json_t *mig_status_json(struct migration *m)
{
    json_t *rounds = json_array(), *j;

    pthread_mutex_lock(&m->lock);
    for (unsigned i = 0; i < m->nrounds; i++)
        json_array_append_new(rounds, round_json(&m->rounds[i]));
    j = json_pack("{s:s, s:s, s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:i, s:i, s:I, s:o, s:o}",
                  "role", m->source ? "source" : "destination",
                  "state", mig_state_name(m->state), "round", (int)m->round,
                  "bytes", (json_int_t)__atomic_load_n(&m->bytes, __ATOMIC_RELAXED),
                  "pages_normal", (json_int_t)__atomic_load_n(&m->pages_normal, __ATOMIC_RELAXED),
                  "pages_zero", (json_int_t)__atomic_load_n(&m->pages_zero, __ATOMIC_RELAXED),
                  "pages_remaining", (json_int_t)m->pages_remaining,
                  "dirty_rate_pps", (json_int_t)m->dirty_rate_pps,
                  "bandwidth_mibs", (json_int_t)(m->bandwidth_bps >> 20),
                  "expected_downtime_ms", m->expected_downtime_ns / 1e6,
                  "throttle_pct", (int)m->throttle, "throttle_max_pct", (int)m->throttle_max,
                  "total_ms", (json_int_t)(mig_elapsed(m) / 1000000),
                  "downtime", downtime_json(&m->downtime), "rounds", rounds);
    json_object_set_new(j, "stop_retries", json_integer(m->stop_retries));
    json_object_set_new(j, "stop_retry_ms", json_real(m->stop_retry_ns / 1e6));
    if (m->xconns) {
        const struct xfer_stats *x = m->xlive ? m->xlive : &m->xs;
        json_object_set_new(j, "bytes", json_integer(
            (json_int_t)__atomic_load_n(&m->bytes, __ATOMIC_RELAXED) + xs_get(&x->bytes_wire)));
        json_object_set_new(j, "pages_normal", json_integer(
            (json_int_t)__atomic_load_n(&m->pages_normal, __ATOMIC_RELAXED) +
            xs_get(&x->pages_data) + xs_get(&x->pages_delta)));
        json_object_set_new(j, "pages_zero", json_integer(
            (json_int_t)__atomic_load_n(&m->pages_zero, __ATOMIC_RELAXED) +
            xs_get(&x->pages_zero)));
    }
    json_object_set_new(j, "transfer", transfer_json(m));
    if (m->source && m->throttle_max && m->total_ns) {
        json_t *t = json_array();
        for (unsigned i = 0; m->vm && i < m->vm->ncpus && i < 64; i++)
            json_array_append_new(t, json_real(m->vcpu_throttled_ns[i] / 1e6));
        json_object_set_new(j, "vcpu_throttled_ms", t);
    }
    if (m->nvcpu_pps) {
        json_t *t = json_array();
        for (unsigned i = 0; i < m->nvcpu_pps && i < 64; i++)
            if (!m->throttle_mask || (m->throttle_mask & (1ULL << i)))
                json_array_append_new(t, json_integer(i));
        json_object_set_new(j, "vcpu_dirty_rate_pps", u64_array(m->vcpu_pps, m->nvcpu_pps));
        json_object_set_new(j, "throttled_vcpus", m->throttle_max ? t : json_array());
        if (!m->throttle_max)
            json_decref(t);
    }
    if (m->source)
        json_object_set_new(j, "params", params_json(&m->params));
    if (m->pc_start_ns)
        json_object_set_new(j, "postcopy", postcopy_json(m));
    if (m->error[0])
        json_object_set_new(j, "error", json_string(m->error));
    if (!m->source && m->vm)
        json_object_set_new(j, "net_switchover_dropped",
                            json_integer((json_int_t)mig_net_dropped(m->vm)));
    pthread_mutex_unlock(&m->lock);
    return j;
}
