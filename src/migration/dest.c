/* The destination side: `ferry run --incoming tcp:HOST:PORT` waits for one
 * migration, creates the VM the source describes, fills it, and starts it
 * only once every record has been received and checked. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cli/args.h"
#include "migration/channel.h"
#include "migration/migration.h"
#include "state/stream.h"
#include "util/log.h"
#include "util/util.h"
#include "vm/vm.h"

#define DST_TIMEOUT_S 60
#define DST_IOBUF     (1u << 20)

struct mig_dst {
    struct migration *m;
    struct vm *vm;
    struct run_args *a;
    int sock;
    struct stream_io in, out;
    bool start_paused;
    char err[256];
};

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
    if (d->a->memory_given && d->a->vm.mem_bytes != h->mem_size) {
        snprintf(msg, sizeof(msg), "memory size mismatch: the source VM has %llu MiB, "
                 "the destination was started with --memory %llu",
                 (unsigned long long)(h->mem_size >> 20),
                 (unsigned long long)(d->a->vm.mem_bytes >> 20));
        return dst_refuse(d, -EINVAL, msg);
    }
    if (d->a->cpus_given && d->a->vm.ncpus != h->ncpus) {
        snprintf(msg, sizeof(msg), "vCPU count mismatch: the source VM has %u, the "
                 "destination was started with --cpus %u", h->ncpus, d->a->vm.ncpus);
        return dst_refuse(d, -EINVAL, msg);
    }
    if (h->ncpus > VM_MAX_VCPUS || mem_check_size(h->mem_size, mem_host_total()) < 0)
        return dst_refuse(d, -E2BIG, "the source VM does not fit on this host");
    return 0;
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
    d->a->vm.mem_bytes = h.mem_size;
    d->a->vm.ncpus = h.ncpus;
    d->a->vm.restore = true;
    if (vm_create(d->vm, &d->a->vm) < 0)
        return dst_refuse(d, -EIO, "could not create the VM on the destination");
    if (h.cpuid_fingerprint != vm_cpuid_fingerprint(d->vm))
        return dst_refuse(d, -EINVAL, "this host does not offer the source VM's CPU model");
    d->vm->clock_follow_realtime = true;
    return mig_send_status(&d->out, REC_ACK, 0, "ok");
}

static void dst_account(struct mig_dst *d, const struct stream_record *r, const uint8_t *p)
{
    uint32_t round;

    __atomic_store_n(&d->m->bytes, d->in.bytes, __ATOMIC_RELAXED);
    if (r->type == REC_ROUND && r->length >= 4) {
        memcpy(&round, p, 4);
        pthread_mutex_lock(&d->m->lock);
        d->m->round = round;
        pthread_mutex_unlock(&d->m->lock);
    } else if (r->type == REC_PAGES) {
        uint32_t count;
        memcpy(&count, p, 4);
        __atomic_fetch_add(&d->m->pages_normal, count, __ATOMIC_RELAXED);
    }
}

/* Pages and state until the end marker. Nothing runs before it. */
static int dst_receive(struct mig_dst *d)
{
    struct stream_record r;
    uint8_t *p;
    const char *why = "";
    int ret;

    for (;;) {
        ret = stream_get_record(&d->in, &r, &p, &why);
        if (ret < 0) {
            snprintf(d->err, sizeof(d->err), "%s", ret == -EPIPE || ret == -ECONNRESET ?
                     "the source closed the connection before the migration finished" : why);
            return ret;
        }
        if (r.type == REC_END)
            d->start_paused = r.flags & REC_END_PAUSED;
        if (r.type == REC_END || r.type == REC_CANCEL) {
            if (r.type == REC_CANCEL)
                snprintf(d->err, sizeof(d->err), "the source ended the migration: %s",
                         r.length > 4 ? (const char *)p + 4 : "cancelled");
            free(p);
            return r.type == REC_END ? 0 : -ECANCELED;
        }
        dst_account(d, &r, p);
        ret = r.type == REC_ROUND ? 0 : vm_apply_record(d->vm, &r, p, d->err, sizeof(d->err));
        free(p);
        if (ret < 0)
            return ret;
    }
}

static int dst_start_vm(struct mig_dst *d)
{
    uint8_t buf[4 + 16 + 1] = { 0 };
    uint64_t t0 = time_now_ns(), rt, apply;
    int ret = state_check_complete(&d->vm->sections, d->err, sizeof(d->err));

    if (ret < 0) {
        mig_send_status(&d->out, REC_RUNNING, ret, d->err);
        return ret;
    }
    ret = vm_start(d->vm, d->start_paused);
    rt = realtime_ns();
    apply = time_now_ns() - t0;
    memcpy(buf + 4, &rt, 8);
    memcpy(buf + 12, &apply, 8);
    d->m->downtime.dest_apply_ns = apply;
    mig_send_ctrl(&d->out, REC_RUNNING, buf, sizeof(buf));
    return ret;
}

static int dst_accept(struct mig_dst *d, int lfd)
{
    d->sock = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    close(lfd);
    if (d->sock < 0) {
        snprintf(d->err, sizeof(d->err), "accept: %s", strerror(errno));
        return -errno;
    }
    chan_set_timeouts(d->sock, DST_TIMEOUT_S);
    if (stream_io_init(&d->in, d->sock, DST_IOBUF) < 0 || stream_io_init(&d->out, d->sock, 4096) < 0)
        return -ENOMEM;
    d->m->start_ns = time_now_ns();
    dst_set_state(d, MIG_RECEIVING);
    return 0;
}

int mig_incoming(struct migration *m, struct vm *vm, struct run_args *a,
                 const char *host, const char *port)
{
    struct mig_dst d = { .m = m, .vm = vm, .a = a, .sock = -1 };
    int lfd = chan_listen(host, port), ret;

    if (lfd < 0)
        return lfd;
    m->state = MIG_WAITING;
    log_info("waiting for a migration on %s:%s", host, port);
    ret = dst_accept(&d, lfd);
    if (ret == 0)
        ret = dst_handshake(&d);
    if (ret == 0)
        ret = dst_receive(&d);
    if (ret == 0) {
        dst_set_state(&d, MIG_APPLYING);
        ret = dst_start_vm(&d);
    }
    pthread_mutex_lock(&m->lock);
    m->state = ret == 0 ? MIG_RUNNING : MIG_FAILED;
    m->total_ns = time_now_ns() - m->start_ns;
    snprintf(m->error, sizeof(m->error), "%s", d.err);
    pthread_mutex_unlock(&m->lock);
    if (ret < 0)
        log_err("incoming migration failed: %s", d.err[0] ? d.err : strerror(-ret));
    else
        log_info("incoming migration complete: the VM runs here");
    if (d.sock >= 0)
        close(d.sock);
    stream_io_free(&d.in);
    stream_io_free(&d.out);
    return ret;
}
