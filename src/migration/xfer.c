/* Source side of the parallel transfer engine. The migration thread walks
 * the dirty bitmap and hands page addresses to the thread of each page's
 * connection; that thread copies the pages (after the walker re-protected
 * them), finds zero pages, delta-encodes against its cache, compresses the
 * batch body when it pays and sends it. */
#include "migration/transport.h"
#include "migration/xfer.h"
#include "migration/channel.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "migration/migration.h"
#include "util/log.h"
#include "util/util.h"

enum { XJ_PAGES, XJ_ROUND, XJ_END };

#define ADD(field, v) __atomic_fetch_add(&(field), (v), __ATOMIC_RELAXED)
#define NS_PER_S 1000000000ULL
#define XFER_PROBE_EVERY 16   /* auto: compress every 16th batch anyway, to measure */

/* ---- queue (migration thread -> sender) ---- */

static bool xfer_stopping(struct xfer_worker *w)
{
    return w->err || (w->x->cancel && __atomic_load_n(w->x->cancel, __ATOMIC_ACQUIRE));
}

/* The slot at tail is the caller's to fill once the queue has room. */
static int xfer_reserve(struct xfer_worker *w)
{
    int ret = 0;

    pthread_mutex_lock(&w->lock);
    while (w->tail - w->head >= XFER_QDEPTH && !xfer_stopping(w)) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 100000000;
        if (until.tv_nsec >= 1000000000)
            until.tv_sec++, until.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&w->cond, &w->lock, &until);
    }
    if (w->err)
        ret = w->err;
    else if (xfer_stopping(w))
        ret = -ECANCELED;
    pthread_mutex_unlock(&w->lock);
    return ret;
}

static void xfer_submit(struct xfer_worker *w)
{
    pthread_mutex_lock(&w->lock);
    w->tail++;
    w->filling = false;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static int xfer_push(struct xfer_worker *w, uint32_t kind, uint32_t round)
{
    struct xfer_job *j;
    int ret;

    if (w->filling)
        xfer_submit(w);
    ret = xfer_reserve(w);
    if (ret < 0)
        return ret;
    j = &w->jobs[w->tail % XFER_QDEPTH];
    j->kind = kind;
    j->round = round;
    j->n = 0;
    if (kind != XJ_PAGES)
        xfer_submit(w);
    else
        w->filling = true;
    return 0;
}

int xfer_add(struct xfer *x, uint64_t gpa, bool zero_marker)
{
    struct xfer_worker *w = &x->w[xfer_conn_of(gpa >> 12, x->p.conns)];
    struct xfer_job *j;
    int ret;

    if (!w->filling && (ret = xfer_push(w, XJ_PAGES, x->round)) < 0)
        return ret;
    j = &w->jobs[w->tail % XFER_QDEPTH];
    j->gpa[j->n++] = gpa | (zero_marker ? 1 : 0);
    if (j->n == STREAM_PAGES_PER_REC)
        xfer_submit(w);
    return 0;
}

int xfer_round_end(struct xfer *x, uint32_t round)
{
    int ret = 0;

    for (unsigned i = 0; i < x->p.conns && ret == 0; i++)
        ret = xfer_push(&x->w[i], XJ_ROUND, round);
    x->round = round + 1;
    return ret;
}

int xfer_end(struct xfer *x)
{
    int ret = 0;

    for (unsigned i = 0; i < x->p.conns && ret == 0; i++)
        ret = xfer_push(&x->w[i], XJ_END, x->round);
    for (unsigned i = 0; i < x->p.conns; i++) {
        if (x->w[i].started)
            pthread_join(x->w[i].thread, NULL);
        x->w[i].started = false;
        if (ret == 0 && x->w[i].err)
            ret = x->w[i].err;
    }
    return ret;
}

/* ---- sender thread ---- */

/* Keeps the average rate of all connections under the cap. */
static void xfer_rate_limit(struct xfer *x)
{
    uint64_t due, elapsed;

    if (!x->p.cap_bps)
        return;
    due = (uint64_t)((unsigned __int128)__atomic_load_n(&x->st.bytes_wire, __ATOMIC_RELAXED) *
                     NS_PER_S / x->p.cap_bps);
    elapsed = time_now_ns() - x->p.start_ns;
    if (due > elapsed) {
        struct timespec ts = time_ns_to_timespec(due - elapsed);
        nanosleep(&ts, NULL);
    }
}

/* Delta against what this connection last sent of the page, when smaller. */
static long xfer_delta(struct xfer_worker *w, uint64_t gfn, uint8_t *slot)
{
    const void *old = xc_cache_get(w->cache, gfn);
    long n = -ENOSPC;
    uint32_t n32;

    if (old) {
        ADD(w->x->st.delta_hits, 1);
        n = xc_delta_encode(old, slot, w->dtmp, w->x->p.algo == XC_NONE ?
                            XPAGES_MAX_DELTA : XPAGES_MAX_DELTA_COMPRESSED);
    } else {
        ADD(w->x->st.delta_misses, 1);
    }
    xc_cache_put(w->cache, gfn, slot);
    if (n < 0)
        return n;
    n32 = (uint32_t)n;
    memcpy(slot, &n32, 4);
    memcpy(slot + 4, w->dtmp, (size_t)n);
    return n;
}

/* One page into the batch: returns the body bytes it took (0: none). */
static uint64_t xfer_page(struct xfer_worker *w, uint64_t ent, uint32_t *count, uint64_t pos)
{
    struct xfer *x = w->x;
    uint64_t gpa = ent & ~1ULL;
    uint8_t *slot = w->raw + pos;
    long n;

    memcpy(slot, mem_ptr(x->mem, gpa, STREAM_PAGE_SIZE), STREAM_PAGE_SIZE);
    ADD(x->st.bytes_raw, STREAM_PAGE_SIZE);
    if (xc_zero(slot)) {
        ADD(x->st.pages_zero, 1);
        ADD(x->st.zero_bytes_saved, STREAM_PAGE_SIZE);
        if (w->cache)
            xc_cache_forget(w->cache, gpa >> 12);
        if (ent & 1)
            w->entries[(*count)++] = gpa | XPAGE_ZERO;
        return 0;
    }
    if (w->cache && (n = xfer_delta(w, gpa >> 12, slot)) >= 0) {
        ADD(x->st.pages_delta, 1);
        ADD(x->st.delta_bytes_saved, STREAM_PAGE_SIZE - 4 - (uint64_t)n);
        w->entries[(*count)++] = gpa | XPAGE_DELTA;
        return 4 + (uint64_t)n;
    }
    ADD(x->st.pages_data, 1);
    w->entries[(*count)++] = gpa | XPAGE_DATA;
    return STREAM_PAGE_SIZE;
}

/* The link as this connection sees it (times the connections), capped. */
static uint64_t xfer_link_bps(struct xfer_worker *w)
{
    uint64_t bps = w->send_ns ? w->send_bytes * NS_PER_S / w->send_ns * w->x->p.conns : 0;

    if (w->x->p.cap_bps && (!bps || bps > w->x->p.cap_bps))
        bps = w->x->p.cap_bps;
    return bps;
}

/* auto: compress when the link, not the CPU, is the bottleneck; probe now
 * and then to keep the ratio and the speed measured. In the pause (last
 * copy) compress whenever that makes the copy shorter. */
static enum xc_algo xfer_choose(struct xfer_worker *w, uint64_t batches)
{
    struct xfer *x = w->x;
    uint64_t comp_bps, link;

    if (x->p.algo != XC_AUTO)
        return x->p.algo;
    comp_bps = w->comp_ns ? w->comp_bytes * NS_PER_S / w->comp_ns : 0;
    link = xfer_link_bps(w);
    if (!comp_bps || !link || batches % XFER_PROBE_EVERY == 0)
        return XC_ZSTD;
    if (x->final)
        return xc_transfer_ns(1u << 20, link, comp_bps, x->p.conns, w->ratio, true) <
               xc_transfer_ns(1u << 20, link, comp_bps, x->p.conns, w->ratio, false)
               ? XC_ZSTD : XC_NONE;
    return xc_auto_worth(link, comp_bps, x->p.conns, w->ratio) ? XC_ZSTD : XC_NONE;
}

/* Compresses the body in place of sending it raw when smaller. */
static const uint8_t *xfer_compress(struct xfer_worker *w, struct xpages_hdr *h,
                                    uint64_t batches)
{
    enum xc_algo a = h->raw_len ? xfer_choose(w, batches) : XC_NONE;
    uint64_t t0;
    long n;

    if (a == XC_NONE)
        return w->raw;
    t0 = time_now_ns();
    n = xc_compress(w->comp, a, w->raw, h->raw_len, w->zbody, h->raw_len - 1);
    w->comp_ns += time_now_ns() - t0;
    w->comp_bytes += h->raw_len;
    w->ratio = 0.75 * w->ratio + 0.25 * (n > 0 ? (double)n / h->raw_len : 1.0);
    if (n <= 0)
        return w->raw;
    h->algo = a;
    h->body_len = (uint32_t)n;
    ADD(w->x->st.comp_in, h->raw_len);
    ADD(w->x->st.comp_out, (uint64_t)n);
    ADD(w->x->st.comp_batches, 1);
    return w->zbody;
}

static int xfer_send_batch(struct xfer_worker *w, const struct xfer_job *j)
{
    struct xpages_hdr h = { .round = j->round };
    uint64_t pos = 0, t0, bytes0 = w->out.bytes, batches = ADD(w->x->st.batches, 1);
    const uint8_t *body;
    struct iovec iov[3];

    for (uint32_t i = 0; i < j->n; i++)
        pos += xfer_page(w, j->gpa[i], &h.count, pos);
    if (!h.count)
        return 0;
    h.raw_len = h.body_len = (uint32_t)pos;
    body = xfer_compress(w, &h, batches);
    iov[0] = (struct iovec){ &h, sizeof(h) };
    iov[1] = (struct iovec){ w->entries, 8ULL * h.count };
    iov[2] = (struct iovec){ (void *)body, h.body_len };
    t0 = time_now_ns();
    stream_put_record_iov(&w->out, REC_XPAGES, 0, 0, 1, REC_FLAG_MANDATORY, iov, 3);
    stream_flush(&w->out);
    w->send_ns += time_now_ns() - t0;
    w->send_bytes += w->out.bytes - bytes0;
    ADD(w->x->st.bytes_wire, w->out.bytes - bytes0);
    xfer_rate_limit(w->x);
    return w->out.err;
}

static int xfer_do(struct xfer_worker *w, const struct xfer_job *j)
{
    uint64_t b0 = w->out.bytes;
    int ret;

    switch (j->kind) {
    case XJ_PAGES:
        return xfer_send_batch(w, j);
    case XJ_ROUND:
        ret = stream_put_record(&w->out, REC_ROUND, 0, 0, 1, 0, &j->round, 4);
        break;
    default:
        ret = stream_put_record(&w->out, REC_END, 0, 0, 1, 0, NULL, 0);
        break;
    }
    if (ret == 0)
        ret = stream_flush(&w->out);
    ADD(w->x->st.bytes_wire, w->out.bytes - b0);
    return ret;
}

static void *xfer_thread(void *arg)
{
    struct xfer_worker *w = arg;
    char name[16];
    bool end = false;

    snprintf(name, sizeof(name), "xfer-send%u", w->idx);
    pthread_setname_np(pthread_self(), name);
    while (!end) {
        struct xfer_job *j;
        bool stop;
        int ret;
        pthread_mutex_lock(&w->lock);
        while (w->head == w->tail && !w->stop)
            pthread_cond_wait(&w->cond, &w->lock);
        stop = w->stop;
        pthread_mutex_unlock(&w->lock);
        if (stop)
            break;
        j = &w->jobs[w->head % XFER_QDEPTH];
        end = j->kind == XJ_END;
        ret = xfer_do(w, j);
        w->x->st.cpu_ns[w->idx] = thread_cpu_ns();
        pthread_mutex_lock(&w->lock);
        w->head++;
        if (ret < 0 || w->stop)
            w->err = ret < 0 ? ret : -ECANCELED, end = true;
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->lock);
    }
    return NULL;
}

/* ---- setup ---- */

static int xfer_worker_init(struct xfer *x, unsigned i, int sock)
{
    struct xfer_worker *w = &x->w[i];
    uint64_t cache = x->p.delta_bytes / x->p.conns;

    w->x = x;
    w->idx = i;
    w->sock = sock;
    w->ratio = 0.5;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    if (tp_stream_init(&w->out, sock, 1u << 16) < 0)
        return -ENOMEM;
    w->raw = malloc(XPAGES_MAX_RAW);
    w->zbody = malloc(XPAGES_MAX_RAW);
    w->dtmp = malloc(STREAM_PAGE_SIZE * 2);
    w->comp = xc_comp_new();
    if (!w->raw || !w->zbody || !w->dtmp || !w->comp)
        return -ENOMEM;
    if (cache && !(w->cache = xc_cache_new(cache)))
        return -ENOMEM;
    if (pthread_create(&w->thread, NULL, xfer_thread, w) != 0)
        return -EAGAIN;
    w->started = true;
    return 0;
}

int xfer_start(struct xfer *x, const struct xfer_params *p, struct guest_mem *mem,
               const int *socks, const bool *cancel)
{
    int ret = 0;

    memset(x, 0, sizeof(*x));
    x->p = *p;
    x->mem = mem;
    x->cancel = cancel;
    x->round = 1;
    x->w = calloc(p->conns, sizeof(*x->w));
    if (!x->w) {
        for (unsigned i = 0; i < p->conns; i++)
            tp_close(socks[i]);
        x->p.conns = 0;
        return -ENOMEM;
    }
    for (unsigned i = 0; i < p->conns; i++)
        x->w[i].sock = socks[i];
    for (unsigned i = 0; i < p->conns && ret == 0; i++)
        ret = xfer_worker_init(x, i, socks[i]);
    return ret;
}

void xfer_stop(struct xfer *x)
{
    if (!x->w)
        return;
    for (unsigned i = 0; i < x->p.conns; i++) {
        struct xfer_worker *w = &x->w[i];
        if (w->sock >= 0)
            shutdown(w->sock, SHUT_RDWR);
        if (w->started) {
            pthread_mutex_lock(&w->lock);
            w->stop = true;
            pthread_cond_broadcast(&w->cond);
            pthread_mutex_unlock(&w->lock);
            pthread_join(w->thread, NULL);
        }
        if (w->sock >= 0)
            tp_close(w->sock);
        stream_io_free(&w->out);
        free(w->raw);
        free(w->zbody);
        free(w->dtmp);
        xc_comp_free(w->comp);
        xc_cache_free(w->cache);
    }
    free(x->w);
    x->w = NULL;
}

int xfer_error(struct xfer *x, char *why, size_t len)
{
    for (unsigned i = 0; x->w && i < x->p.conns; i++)
        if (x->w[i].err) {
            snprintf(why, len, "data connection %u: %s", i, chan_strerror(x->w[i].err));
            return x->w[i].err;
        }
    return 0;
}

uint64_t xfer_bytes(const struct xfer *x)
{
    return __atomic_load_n(&x->st.bytes_wire, __ATOMIC_RELAXED);
}
