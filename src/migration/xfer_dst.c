/* Destination side of the parallel transfer engine: one applier thread per
 * data connection. Batches of different connections apply in any order (a
 * page always travels on the same connection, so its copies arrive in
 * order); ROUND markers let the main channel answer a round only once
 * every connection has applied it, and END marks a connection's last page. */
#include "migration/transport.h"
#include "migration/xfer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "migration/migration.h"
#include "util/util.h"

#define XD_IOBUF (1u << 20)

static void xd_fail(struct xfer_dst_worker *w, int err, const char *why)
{
    struct xfer_dst *x = w->x;

    pthread_mutex_lock(&x->lock);
    if (!x->err) {
        x->err = err;
        snprintf(x->why, sizeof(x->why), "data connection %u: %s", w->idx, why);
    }
    w->done = true;
    pthread_cond_broadcast(&x->cond);
    pthread_mutex_unlock(&x->lock);
}

static void xd_mark(struct xfer_dst_worker *w, uint32_t round, bool end)
{
    pthread_mutex_lock(&w->x->lock);
    if (end)
        w->done = true;
    else
        w->round = round;
    pthread_cond_broadcast(&w->x->cond);
    pthread_mutex_unlock(&w->x->lock);
}

static void xd_count(struct xfer_dst_worker *w, uint64_t z0, uint64_t d0, uint64_t x0,
                     uint64_t wire)
{
    struct xfer_stats *st = &w->x->st;

    __atomic_fetch_add(&st->pages_zero, w->ctx.zero - z0, __ATOMIC_RELAXED);
    __atomic_fetch_add(&st->pages_data, w->ctx.data - d0, __ATOMIC_RELAXED);
    __atomic_fetch_add(&st->pages_delta, w->ctx.delta - x0, __ATOMIC_RELAXED);
    __atomic_fetch_add(&st->bytes_wire, wire, __ATOMIC_RELAXED);
    __atomic_fetch_add(&st->batches, 1, __ATOMIC_RELAXED);
    st->cpu_ns[w->idx] = thread_cpu_ns();
}

/* One record: 1 when the connection has ended, <0 on error. */
static int xd_record(struct xfer_dst_worker *w)
{
    struct stream_record r;
    const char *why = "";
    uint8_t *p;
    uint64_t b0 = w->in.bytes, z0 = w->ctx.zero, d0 = w->ctx.data, x0 = w->ctx.delta;
    uint32_t round = 0;
    int ret = stream_get_record(&w->in, &r, &p, &why);

    if (ret < 0) {
        xd_fail(w, ret, ret == -EPIPE ? "closed before its end marker" : why);
        return ret;
    }
    if (r.type == REC_XPAGES) {
        ret = xpages_apply(w->x->mem, p, r.length, &w->ctx, &why);
    } else if (r.type == REC_ROUND && r.length == 4) {
        memcpy(&round, p, 4);
        xd_mark(w, round, false);
    } else if (r.type == REC_END) {
        ret = 1;
    } else {
        ret = -EPROTO, why = "unexpected record on a data connection";
    }
    free(p);
    xd_count(w, z0, d0, x0, w->in.bytes - b0);
    if (ret < 0)
        xd_fail(w, ret, why);
    return ret;
}

static void *xd_thread(void *arg)
{
    struct xfer_dst_worker *w = arg;
    char name[16];
    int ret;

    snprintf(name, sizeof(name), "xfer-apply%u", w->idx);
    pthread_setname_np(pthread_self(), name);
    while ((ret = xd_record(w)) == 0)
        ;
    if (ret > 0)
        xd_mark(w, 0, true);
    return NULL;
}

int xfer_dst_start(struct xfer_dst *x, struct guest_mem *mem, const int *socks, unsigned n)
{
    memset(x, 0, sizeof(*x));
    x->mem = mem;
    x->n = n;
    pthread_mutex_init(&x->lock, NULL);
    pthread_cond_init(&x->cond, NULL);
    for (unsigned i = 0; i < n; i++)
        x->w[i] = (struct xfer_dst_worker){ .x = x, .idx = i, .sock = socks[i] };
    for (unsigned i = 0; i < n; i++) {
        struct xfer_dst_worker *w = &x->w[i];
        struct timeval none = { 0 };
        /* a connection may carry nothing for long (its pages are all holes);
         * the main channel's timeout covers a dead source */
        setsockopt(w->sock, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
        if (tp_stream_init(&w->in, w->sock, XD_IOBUF) < 0 || xpages_ctx_init(&w->ctx) < 0)
            return -ENOMEM;
        if (pthread_create(&w->thread, NULL, xd_thread, w) != 0)
            return -EAGAIN;
        w->started = true;
    }
    return 0;
}

static bool xd_reached(const struct xfer_dst *x, uint32_t round)
{
    for (unsigned i = 0; i < x->n; i++)
        if (!x->w[i].done && (round == UINT32_MAX || x->w[i].round < round))
            return false;
    return true;
}

int xfer_dst_wait(struct xfer_dst *x, uint32_t round, unsigned timeout_s, char *why,
                  size_t len)
{
    struct timespec until;
    int ret = 0;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_s;
    pthread_mutex_lock(&x->lock);
    while (!x->err && !xd_reached(x, round) && ret == 0)
        ret = pthread_cond_timedwait(&x->cond, &x->lock, &until);
    if (x->err)
        snprintf(why, len, "%s", x->why);
    else if (ret)
        snprintf(why, len, "the data connections did not deliver in time");
    ret = x->err ? x->err : ret ? -ETIMEDOUT : 0;
    pthread_mutex_unlock(&x->lock);
    return ret;
}

void xfer_dst_stop(struct xfer_dst *x)
{
    for (unsigned i = 0; i < x->n; i++) {
        struct xfer_dst_worker *w = &x->w[i];
        if (w->sock >= 0)
            shutdown(w->sock, SHUT_RDWR);
        if (w->started)
            pthread_join(w->thread, NULL);
        w->started = false;
        if (w->sock >= 0)
            tp_close(w->sock);
        w->sock = -1;
        stream_io_free(&w->in);
        xpages_ctx_free(&w->ctx);
    }
    x->n = 0;
}
