/* The source's half of post-copy: it stops the VM, sends the state and the
 * list of pages the destination still lacks, and once the VM runs there it
 * serves faults on the urgent channel while pushing everything else. From
 * that moment neither side alone holds the VM: a broken connection is
 * recovered (automatically, with backoff, or by migrate-recover), and only
 * migrate-abort gives the VM up. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "migration/transport.h"
#include "migration/channel.h"
#include "migration/source_internal.h"
#include "util/log.h"
#include "util/util.h"

#define PC_BACKOFF_MIN_MS 200
#define PC_BACKOFF_MAX_MS 5000

static void pc_sleep_ms(unsigned ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };

    nanosleep(&ts, NULL);
}

static bool pc_aborted(struct mig_src *s)
{
    return __atomic_load_n(&s->m->abort_req, __ATOMIC_ACQUIRE);
}

/* The final dirty set is what the destination lacks. */
static int pc_take_needed(struct mig_src *s)
{
    struct pc_bitmap *b = &s->needed;

    b->n = s->dirty.nslots;
    for (unsigned i = 0; i < b->n; i++) {
        b->r[i].gpa = s->dirty.slots[i].gpa;
        b->r[i].pages = s->dirty.slots[i].pages;
        b->r[i].bits = s->dirty.slots[i].bitmap;
        s->dirty.slots[i].bitmap = NULL;   /* ownership moves to the bitmap */
    }
    return 0;
}

static int pc_send_bitmap(struct mig_src *s)
{
    uint8_t *buf;
    uint64_t len;
    int ret = pc_bitmap_encode(&s->needed, &buf, &len);

    if (ret == 0) {
        ret = stream_put_record(&s->out, REC_BITMAP, 0, 0, 1, REC_FLAG_MANDATORY, buf, len);
        free(buf);
    }
    return ret;
}

static int pc_start_urgent(struct mig_src *s);

static int pc_open_urgent(struct mig_src *s, uint32_t flags)
{
    return src_open_channel(s, MIG_FLAG_URGENT | flags, &s->usock, &s->uout, &s->uin);
}

/* Before the pause: the pages dirty so far will be needed whatever happens
 * next (dirty bits only accumulate now), so the destination drops its stale
 * copies of them while the guest still runs here, and only the few pages
 * dirtied in the last moments are left for the downtime. */
static int pc_send_provisional(struct mig_src *s)
{
    struct pc_bitmap now = { .n = s->dirty.nslots };
    uint8_t *buf;
    uint64_t len;
    uint32_t round = 0;
    int ret = dirty_sync(&s->dirty) < 0 ? -EIO : 0;

    for (unsigned i = 0; i < now.n; i++) {
        now.r[i].gpa = s->dirty.slots[i].gpa;
        now.r[i].pages = s->dirty.slots[i].pages;
        now.r[i].bits = s->dirty.slots[i].bitmap;   /* borrowed, not freed here */
    }
    if (ret == 0 && (ret = pc_bitmap_encode(&now, &buf, &len)) == 0) {
        ret = stream_put_record(&s->out, REC_BITMAP, 0, 0, 1,
                                REC_FLAG_MANDATORY | REC_BITMAP_PROVISIONAL, buf, len);
        free(buf);
    }
    if (ret == 0)
        ret = mig_send_ctrl(&s->out, REC_ROUND, &round, sizeof(round));
    if (ret == 0)
        ret = src_wait_round_ack(s);
    return ret < 0 ? src_fail(s, ret, "preparing post-copy: %.200s", strerror(-ret)) : 0;
}

/* Pause, then: needed bitmap, vCPU/device state, END(post-copy). The
 * downtime ends when the destination says RUNNING. */
static int pc_switchover(struct mig_src *s)
{
    struct mig_downtime *dt = &s->m->downtime;
    uint64_t t0, rt0, t1, t2, resume_rt = 0;
    char err[256] = "";
    int ret;

    src_set_state(s, MIG_SWITCHOVER);
    ret = mig_send_ctrl(&s->out, REC_POSTCOPY_ADVISE, "", 1);
    if (ret == 0)
        ret = pc_open_urgent(s, 0);
    if (ret < 0)
        return src_fail(s, ret, "opening the post-copy channel: %.200s", strerror(-ret));
    ret = pc_send_provisional(s);
    if (ret < 0)
        return ret;
    t0 = time_now_ns();   /* the downtime starts here, with the pause */
    rt0 = realtime_ns();
    ret = src_stop_vm(s);
    if (ret < 0)
        return ret;
    t1 = time_now_ns();
    ret = dirty_sync(&s->dirty) < 0 ? -EIO : pc_take_needed(s);
    /* Faults are served from now on: applying the state on the destination
     * (kvmclock, PV pages) may already touch missing pages. */
    if (ret == 0)
        ret = pc_start_urgent(s);
    if (ret == 0)
        ret = pc_send_bitmap(s);
    if (ret == 0 && (ret = state_save_sections(&s->vm->sections, &s->out, err, sizeof(err))) < 0)
        src_fail(s, ret, "saving the VM state: %.200s", err);
    if (ret == 0)
        ret = stream_put_record(&s->out, REC_END, 0, 0, 1,
                                REC_END_POSTCOPY | (s->was_paused ? REC_END_PAUSED : 0), NULL, 0);
    if (ret == 0)
        ret = stream_flush(&s->out);
    t2 = time_now_ns();
    if (ret == 0)
        ret = src_wait_running(s, &resume_rt, &dt->dest_apply_ns);
    dt->pause_ns = t1 - t0;
    dt->state_ns = t2 - t1;
    dt->total_ns = ret == 0 && resume_rt > rt0 ? resume_rt - rt0 : 0;
    return ret < 0 ? src_fail(s, ret, "switching to post-copy: %.200s", strerror(-ret)) : 0;
}

/* Takes the still-needed pages among the n pages from first (test and
 * clear); never looks further, so a sparse bitmap costs no more to walk. */
static unsigned pc_take(struct mig_src *s, unsigned region, uint64_t first, unsigned n,
                        uint64_t *gpas)
{
    struct pc_bitmap *b = &s->needed;
    uint64_t end = MIN(first + n, b->r[region].pages);
    unsigned got = 0;

    for (uint64_t pg = first; pg < end; pg++)
        if (pc_bitmap_test_clear(b, region, pg))
            gpas[got++] = b->r[region].gpa + pg * PAGE_SIZE;
    return got;
}

static int pc_send_pages(struct mig_src *s, struct stream_io *io, struct page_batch *b,
                         const uint64_t *gpas, unsigned n, bool flush)
{
    for (unsigned i = 0; i < n; i++) {
        int ret = page_batch_add(b, io, gpas[i], mem_ptr(&s->vm->mem, gpas[i], PAGE_SIZE),
                                 true, &s->ps);
        if (ret < 0)
            return ret;
    }
    if (flush && page_batch_flush(b, io, &s->ps) == 0)
        stream_flush(io);
    return io->err;
}

/* A fault: that page (even if already on its way) and the next still-needed
 * pages around it, at once, on the urgent channel. */
static int pc_serve_request(struct mig_src *s, uint64_t gpa)
{
    uint64_t gpas[1 + PC_PREPAGE], page;
    unsigned region, n = 1;

    if (!pc_bitmap_locate(&s->needed, gpa & ~(PAGE_SIZE - 1), &region, &page))
        return 0;   /* not RAM: a confused peer, not worth dying for */
    gpas[0] = gpa & ~(PAGE_SIZE - 1);
    pthread_mutex_lock(&s->pc_lock);
    pc_bitmap_test_clear(&s->needed, region, page);
    n += pc_take(s, region, page + 1, PC_PREPAGE, gpas + 1);
    pthread_mutex_unlock(&s->pc_lock);
    __atomic_fetch_add(&s->m->pc_demanded, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&s->m->pc_pushed, n - 1, __ATOMIC_RELAXED);
    return pc_send_pages(s, &s->uout, s->ubatch, gpas, n, true);
}

static void *pc_urgent_thread(void *arg)
{
    struct mig_src *s = arg;

    pthread_setname_np(pthread_self(), "postcopy-urgent");
    for (;;) {
        struct stream_record r;
        uint8_t *p;
        const char *why;
        uint64_t gpa;

        if (stream_get_record(&s->uin, &r, &p, &why) < 0)
            break;
        if (r.type == REC_PAGE_REQ && r.length == 8) {
            memcpy(&gpa, p, 8);
            if (pc_serve_request(s, gpa) < 0) {
                free(p);
                break;
            }
        }
        free(p);
    }
    __atomic_store_n(&s->urgent_broken, true, __ATOMIC_RELEASE);
    return NULL;
}

static int pc_start_urgent(struct mig_src *s)
{
    int ret;

    s->urgent_broken = false;
    ret = pthread_create(&s->uthread, NULL, pc_urgent_thread, s);
    s->uthread_started = ret == 0;
    return -ret;
}

static void pc_close_channels(struct mig_src *s)
{
    if (s->usock >= 0)
        shutdown(s->usock, SHUT_RDWR);   /* frees the urgent thread */
    if (s->uthread_started)
        pthread_join(s->uthread, NULL);
    s->uthread_started = false;
    if (s->usock >= 0)
        tp_close(s->usock);
    if (s->sock >= 0)
        tp_close(s->sock);
    s->usock = s->sock = -1;
    pthread_mutex_lock(&s->m->lock);
    s->m->sock = -1;
    pthread_mutex_unlock(&s->m->lock);
    stream_io_free(&s->out);
    stream_io_free(&s->in);
    stream_io_free(&s->uout);
    stream_io_free(&s->uin);
}

static void pc_update_progress(struct mig_src *s)
{
    uint64_t left;

    pthread_mutex_lock(&s->pc_lock);
    left = pc_bitmap_count(&s->needed);
    pthread_mutex_unlock(&s->pc_lock);
    __atomic_store_n(&s->m->pc_remaining, left, __ATOMIC_RELAXED);
    __atomic_store_n(&s->m->bytes, s->out.bytes + s->uout.bytes, __ATOMIC_RELAXED);
}

/* Background push: every still-needed page in address order. */
static int pc_push_all(struct mig_src *s)
{
    struct pc_bitmap *b = &s->needed;
    uint64_t gpas[64];

    for (unsigned i = 0; i < b->n; i++) {
        for (uint64_t pg = 0; pg < b->r[i].pages; pg += 64) {
            unsigned n;
            pthread_mutex_lock(&s->pc_lock);
            pg = bitmap_next(b->r[i].bits, b->r[i].pages, pg) & ~63ULL;   /* skip empty words */
            n = pg < b->r[i].pages ? pc_take(s, i, pg, 64, gpas) : 0;
            pthread_mutex_unlock(&s->pc_lock);
            if (n && pc_send_pages(s, &s->out, &s->batch, gpas, n, false) < 0)
                return s->out.err;
            __atomic_fetch_add(&s->m->pc_pushed, n, __ATOMIC_RELAXED);
            if (n) {
                pc_update_progress(s);
                src_rate_limit(s);
            }
            if (pc_aborted(s))
                return -ECONNABORTED;
            if (__atomic_load_n(&s->urgent_broken, __ATOMIC_ACQUIRE))
                return 0;   /* DONE may be waiting, else pc_wait_done sees the break */
        }
    }
    if (page_batch_flush(&s->batch, &s->out, &s->ps) == 0)
        stream_flush(&s->out);
    return s->out.err;
}

/* The fault statistics only the destination sees, sent with DONE. */
static void pc_take_stats(struct migration *m, const uint8_t *p)
{
    uint64_t v[7];

    memcpy(v, p, sizeof(v));
    pthread_mutex_lock(&m->lock);
    m->pc_faults = v[0];
    m->pc_zero_faults = v[1];
    m->pc_blocked_ns = v[4];
    m->pc_p50_us = (uint32_t)v[5];
    m->pc_p99_us = (uint32_t)(v[5] >> 32);
    m->pc_max_us = (uint32_t)v[6];
    pthread_mutex_unlock(&m->lock);
}

/* Waits for DONE on the main channel (the destination has every page). */
static int pc_wait_done(struct mig_src *s)
{
    uint8_t buf[MIG_CTRL_MAX];
    char why[256];
    uint32_t len;

    uint64_t broken_since = 0;

    for (;;) {
        struct pollfd pfd = { .fd = s->sock, .events = POLLIN };
        int ret;

        /* A DONE already here wins over an abort that came too late. */
        if (s->in.pos == s->in.len && poll(&pfd, 1, 200) == 0) {
            if (pc_aborted(s))
                return -ECONNABORTED;
            /* A quiet destination is still placing pages; a dead urgent
             * channel without DONE for long is a broken link. */
            if (!__atomic_load_n(&s->urgent_broken, __ATOMIC_ACQUIRE))
                continue;
            if (!broken_since)
                broken_since = time_now_ns();
            if (time_now_ns() - broken_since > 2000000000ULL)
                return -ECONNRESET;
            continue;
        }
        ret = chan_read_ctrl(&s->in, REC_POSTCOPY_DONE, buf, &len, why, sizeof(why));
        if (ret == 0 && len >= 4 + 56)
            pc_take_stats(s->m, buf + 4);
        return ret;
    }
}

/* Reconnects with RECOVER: the destination answers with the pages it still
 * lacks (pages in flight when the link broke may be lost), which replaces
 * our bitmap; then the urgent channel comes back and its requests again. */
static int pc_reconnect(struct mig_src *s)
{
    struct stream_record r;
    struct pc_bitmap fresh;
    const char *why = "";
    uint8_t *p;
    int ret = src_open_channel(s, MIG_FLAG_RECOVER, &s->sock, &s->out, &s->in);

    if (ret == 0 && (ret = stream_get_record(&s->in, &r, &p, &why)) == 0) {
        ret = r.type == REC_BITMAP ? pc_bitmap_decode(&fresh, &s->vm->mem, p, r.length, &why)
                                   : -EPROTO;
        free(p);
    }
    if (ret < 0)
        return ret;
    pthread_mutex_lock(&s->pc_lock);
    pc_bitmap_free(&s->needed);
    s->needed = fresh;
    pthread_mutex_unlock(&s->pc_lock);
    if (!pc_bitmap_count(&s->needed))
        return 0;   /* it has every page: only its DONE is left to read */
    ret = pc_open_urgent(s, MIG_FLAG_RECOVER);
    return ret == 0 ? pc_start_urgent(s) : ret;
}

static bool pc_recover_requested(struct mig_src *s)
{
    struct migration *m = s->m;
    bool req;

    pthread_mutex_lock(&m->lock);
    req = m->recover_req;
    if (req) {
        m->recover_req = false;
        if (m->recover_ep_set)
            m->params.ep = m->recover_ep;
    }
    pthread_mutex_unlock(&m->lock);
    return req;
}

/* An abort while the link is down still reaches the destination: one
 * recovery connection that says CANCEL instead of resuming. */
static void pc_deliver_abort(struct mig_src *s)
{
    pc_close_channels(s);
    if (src_open_channel(s, MIG_FLAG_RECOVER, &s->sock, &s->out, &s->in) == 0)
        mig_send_status(&s->out, REC_CANCEL, -ECONNABORTED, "migrate-abort");
}

/* Waits (backing off) and reconnects until it works or the VM is given up. */
static int pc_recover(struct mig_src *s)
{
    unsigned backoff = PC_BACKOFF_MIN_MS;

    src_set_state(s, MIG_POSTCOPY_PAUSED);
    log_warn("post-copy: connection to the destination lost; recovering "
             "(migrate-recover to point elsewhere, migrate-abort to give the VM up)");
    for (;;) {
        pc_close_channels(s);
        for (unsigned waited = 0; waited < backoff && !pc_aborted(s); waited += 50)
            if (pc_recover_requested(s))
                break;
            else
                pc_sleep_ms(50);
        if (pc_aborted(s)) {
            pc_deliver_abort(s);
            return -ECONNABORTED;
        }
        s->err[0] = '\0';
        if (pc_reconnect(s) == 0)
            break;
        backoff = MIN(backoff * 2, PC_BACKOFF_MAX_MS);
    }
    s->m->pc_recoveries++;
    src_set_state(s, MIG_POSTCOPY);
    log_info("post-copy: reconnected; %llu pages still to send",
             (unsigned long long)pc_bitmap_count(&s->needed));
    return 0;
}

int src_postcopy(struct mig_src *s)
{
    int ret;

    pthread_mutex_init(&s->pc_lock, NULL);
    s->ubatch = calloc(1, sizeof(*s->ubatch));
    if (!s->ubatch)
        return src_fail(s, -ENOMEM, "%.200s", "out of memory");
    ret = src_xfer_end(s);   /* post-copy pages travel on the main channel */
    if (ret == 0)
        ret = pc_switchover(s);
    if (ret < 0)
        return ret;   /* the destination never ran the VM: it is still ours */
    dirty_stop(&s->dirty);
    s->m->pc_start_ns = time_now_ns();
    s->m->pc_total_pages = pc_bitmap_count(&s->needed);
    src_set_state(s, MIG_POSTCOPY);
    log_info("post-copy: the VM runs on the destination; %llu pages to follow",
             (unsigned long long)s->m->pc_total_pages);
    for (;;) {
        if (ret == 0)
            ret = pc_push_all(s);
        if (ret == 0)
            ret = pc_wait_done(s);
        if (ret == 0 || pc_aborted(s))
            break;
        ret = pc_recover(s);
        if (ret < 0)
            break;
    }
    pc_update_progress(s);
    return ret < 0 ? src_fail(s, ret, "%.200s", pc_aborted(s) ?
                              "post-copy aborted: the VM is lost (see docs/MIGRATION.md)" :
                              "post-copy failed") : 0;
}

void src_postcopy_cleanup(struct mig_src *s)
{
    pc_close_channels(s);
    pc_bitmap_free(&s->needed);
    free(s->ubatch);
    s->ubatch = NULL;
}
