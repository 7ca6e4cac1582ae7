/* virtio device life: registration, the per-device worker thread, pause
 * (quiesce) and resume, reset, "broken", and the state section. */
#include "virtio/virtio_internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "state/state.h"
#include "sandbox/sandbox.h"
#include "util/log.h"

#define WATCH_CTL  0xffffffffU
#define WATCH_BASE 0x10000U       /* epoll tags: queue q = q, watch i = WATCH_BASE + i */
#define GSI_FIRST  24             /* after the IOAPIC's pins */

void virtio_bus_init(struct virtio_bus *bus, int vm_fd, struct guest_mem *mem,
                     struct pci_bus *pci)
{
    memset(bus, 0, sizeof(*bus));
    bus->vm_fd = vm_fd;
    bus->mem = mem;
    bus->pci = pci;
    bus->next_gsi = GSI_FIRST;
    pthread_mutex_init(&bus->route_lock, NULL);
}

static int epoll_add_events(int epfd, int fd, uint32_t tag, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.u32 = tag };

    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static int epoll_add(int epfd, int fd, uint32_t tag)
{
    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = tag };

    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static int virtio_dev_fds(struct virtio_dev *v)
{
    v->epfd = epoll_create1(EPOLL_CLOEXEC);
    v->ctl_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (v->epfd < 0 || v->ctl_fd < 0)
        return -errno;
    for (unsigned q = 0; q < v->nqueues; q++) {
        v->kick_fd[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (v->kick_fd[q] < 0 || epoll_add(v->epfd, v->kick_fd[q], q) < 0)
            return -errno;
    }
    for (unsigned vec = 0; vec < VIRTIO_MSIX_VECTORS; vec++) {
        v->irqfd[vec] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (v->irqfd[vec] < 0)
            return -errno;
    }
    return epoll_add(v->epfd, v->ctl_fd, WATCH_CTL);
}

static void virtio_dev_init_fields(struct virtio_bus *bus, struct virtio_dev *v)
{
    v->bus = bus;
    pthread_mutex_init(&v->lock, NULL);
    pthread_cond_init(&v->cond, NULL);
    v->epfd = v->ctl_fd = -1;
    for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++) {
        v->kick_fd[q] = -1;
        v->vq[q] = (struct virtqueue){ .mem = bus->mem, .index = (uint16_t)q,
                                       .max_size = v->queue_max };
        vq_reset(&v->vq[q]);
    }
    for (unsigned vec = 0; vec < VIRTIO_MSIX_VECTORS; vec++) {
        v->irqfd[vec] = -1;
        v->msix[vec].ctrl = 1;               /* vectors start masked */
        v->gsi[vec] = bus->next_gsi++;
    }
    v->msix_config = VIRTIO_NO_VECTOR;
}

int virtio_dev_register(struct virtio_bus *bus, struct virtio_dev *v)
{
    unsigned slot = 1 + bus->n;
    int ret;

    if (bus->n >= VIRTIO_MAX_DEVICES || v->nqueues > VIRTIO_MAX_QUEUES ||
        v->queue_max > VQ_MAX_SIZE || !v->nqueues)
        return -EINVAL;
    virtio_dev_init_fields(bus, v);
    v->slot = slot;
    v->intx_gsi = 16 + (slot - 1) % 8;       /* IOAPIC pins 16..23 */
    v->bar_addr = VIRTIO_BAR_BASE + (uint64_t)bus->n * VIRTIO_BAR_SIZE;
    virtio_pci_setup(v);
    ret = virtio_dev_fds(v);
    if (ret == 0)
        ret = pci_add(bus->pci, slot, &v->pci);
    if (ret < 0) {
        log_err("%s: adding the virtio device: %s", v->name, strerror(-ret));
        return ret;
    }
    bus->dev[bus->n++] = v;
    return 0;
}

int virtio_dev_watch_fd(struct virtio_dev *v, int fd, bool edge, virtio_watch_fn fn,
                        void *arg)
{
    int ret;

    if (v->nwatch >= VIRTIO_MAX_WATCH)
        return -ENOSPC;
    ret = epoll_add_events(v->epfd, fd, WATCH_BASE + v->nwatch,
                           EPOLLIN | (edge ? EPOLLET : 0));
    if (ret == 0) {
        v->watch[v->nwatch].fd = fd;
        v->watch[v->nwatch].fn = fn;
        v->watch[v->nwatch].arg = arg;
        v->nwatch++;
    }
    return ret;
}

bool virtio_dev_has_feature(const struct virtio_dev *v, unsigned bit)
{
    return bit < 64 && (v->driver_features & (1ULL << bit));
}

bool virtio_dev_should_stop(struct virtio_dev *v)
{
    return __atomic_load_n(&v->pause_req, __ATOMIC_ACQUIRE) ||
           __atomic_load_n(&v->broken, __ATOMIC_ACQUIRE);
}

/* ---- broken devices */

void virtio_broken_locked(struct virtio_dev *v, const char *why)
{
    if (v->broken)
        return;
    __atomic_store_n(&v->broken, true, __ATOMIC_RELEASE);
    v->status |= VIRTIO_STATUS_NEEDS_RESET;
    log_warn("%s: guest error, device needs reset: %s", v->name, why);
    v->config_generation++;
    virtio_signal(v, v->msix_config, 2);
}

void virtio_dev_broken(struct virtio_dev *v, const char *why)
{
    pthread_mutex_lock(&v->lock);
    virtio_broken_locked(v, why);
    pthread_mutex_unlock(&v->lock);
}

/* ---- the worker thread */

static void ctl_signal(struct virtio_dev *v)
{
    uint64_t one = 1;

    if (v->ctl_fd >= 0 && write(v->ctl_fd, &one, sizeof(one)) < 0)
        log_warn("%s: waking the worker: %s", v->name, strerror(errno));
}

/* Caller holds v->lock. */
void virtio_worker_wake(struct virtio_dev *v, bool activate)
{
    if (activate)
        v->activate_pending = true;
    v->kick_all = true;
    ctl_signal(v);
}

static bool queue_runnable(struct virtio_dev *v, unsigned q)
{
    bool ok;

    pthread_mutex_lock(&v->lock);
    ok = (v->status & VIRTIO_STATUS_DRIVER_OK) && !v->broken && !v->pause_req &&
         v->vq[q].enabled;
    pthread_mutex_unlock(&v->lock);
    return ok;
}

static void queue_run(struct virtio_dev *v, unsigned q)
{
    if (q < v->nqueues && queue_runnable(v, q)) {
        v->notifies++;
        v->ops->queue_notify(v, q);
    }
}

static void drain(int fd)
{
    uint64_t n;

    while (read(fd, &n, sizeof(n)) == sizeof(n))
        ;
}

/* Parks while paused; returns false when the worker must exit. Runs the
 * activation and the kick-every-queue that pause/restore/DRIVER_OK ask for. */
static bool worker_checkpoint(struct virtio_dev *v)
{
    bool act, kick;

    pthread_mutex_lock(&v->lock);
    while (v->pause_req && !v->stop_req) {
        v->parked = true;
        pthread_cond_broadcast(&v->cond);
        pthread_cond_wait(&v->cond, &v->lock);
    }
    v->parked = false;
    act = v->activate_pending && (v->status & VIRTIO_STATUS_DRIVER_OK) && !v->broken;
    v->activate_pending = false;
    kick = v->kick_all;
    v->kick_all = false;
    pthread_mutex_unlock(&v->lock);
    if (v->stop_req)
        return false;
    if (act && v->ops->activate && v->ops->activate(v) < 0)
        virtio_dev_broken(v, "device activation failed");
    for (unsigned q = 0; kick && q < v->nqueues; q++)
        queue_run(v, q);
    return true;
}

static void worker_event(struct virtio_dev *v, uint32_t tag)
{
    if (tag == WATCH_CTL) {
        drain(v->ctl_fd);
    } else if (tag < VIRTIO_MAX_QUEUES) {
        drain(v->kick_fd[tag]);
        queue_run(v, tag);
    } else if (tag - WATCH_BASE < v->nwatch) {
        unsigned i = tag - WATCH_BASE;
        v->watch[i].fn(v, v->watch[i].fd, v->watch[i].arg);
    }
}

static void *virtio_worker(void *arg)
{
    struct virtio_dev *v = arg;
    struct epoll_event ev[8];

    pthread_setname_np(pthread_self(), "virtio");
    if (sandbox_thread(SANDBOX_DEVICE) < 0)
        log_warn("virtio worker: no thread sandbox of its own");
    while (worker_checkpoint(v)) {
        int n = epoll_wait(v->epfd, ev, 8, -1);

        /* Events skipped by a pause come back: epoll is level-triggered,
         * and the unpark kicks every queue. */
        for (int i = 0; i < n && !virtio_dev_should_stop(v); i++)
            worker_event(v, ev[i].data.u32);
    }
    return NULL;
}

/* Blocks until the worker sits parked (it finishes the request in hand). */
static void virtio_dev_park(struct virtio_dev *v)
{
    pthread_mutex_lock(&v->lock);
    __atomic_store_n(&v->pause_req, v->pause_req + 1, __ATOMIC_RELEASE);
    ctl_signal(v);
    while (v->thread_started && !v->parked && !v->stop_req)
        pthread_cond_wait(&v->cond, &v->lock);
    pthread_mutex_unlock(&v->lock);
}

static void virtio_dev_unpark(struct virtio_dev *v)
{
    pthread_mutex_lock(&v->lock);
    if (v->pause_req)
        __atomic_store_n(&v->pause_req, v->pause_req - 1, __ATOMIC_RELEASE);
    if (!v->pause_req) {
        v->kick_all = true;      /* notifications may have come while parked */
        pthread_cond_broadcast(&v->cond);
    }
    pthread_mutex_unlock(&v->lock);
}

/* ---- reset */

static void virtio_reset_locked(struct virtio_dev *v)
{
    for (unsigned q = 0; q < v->nqueues; q++)
        vq_reset(&v->vq[q]);
    v->status = 0;
    v->broken = false;
    v->driver_features = 0;
    v->dfselect = v->gfselect = 0;
    v->queue_select = 0;
    v->msix_config = VIRTIO_NO_VECTOR;
    v->msix_pending = 0;
    v->isr = 0;
    v->activate_pending = false;
}

void virtio_dev_reset(struct virtio_dev *v)
{
    virtio_dev_park(v);
    pthread_mutex_lock(&v->lock);
    virtio_reset_locked(v);
    virtio_signal(v, VIRTIO_NO_VECTOR, 0);   /* drops INTx with the ISR */
    pthread_mutex_unlock(&v->lock);
    if (v->ops->reset)
        v->ops->reset(v);
    virtio_dev_unpark(v);
}

/* ---- the bus: start, pause, resume, stop */

/* Interrupt routes, irqfds and ioeventfds follow the current (possibly just
 * restored) state. */
static int virtio_dev_arm(struct virtio_dev *v)
{
    int ret;

    pthread_mutex_lock(&v->lock);
    v->bar_addr = 0;
    v->ioeventfd_on[0] = false;
    virtio_bar_remap(v);
    ret = virtio_irqfds_assign(v);
    if (!virtio_msix_enabled(v))
        virtio_signal(v, VIRTIO_NO_VECTOR, 0);   /* INTx level follows a restored ISR */
    if (v->status & VIRTIO_STATUS_DRIVER_OK)
        v->activate_pending = true;
    v->kick_all = true;
    pthread_mutex_unlock(&v->lock);
    return ret;
}

int virtio_bus_start(struct virtio_bus *bus, bool paused)
{
    int ret = virtio_routes_update(bus);

    bus->paused = paused;
    for (unsigned i = 0; i < bus->n && ret == 0; i++) {
        struct virtio_dev *v = bus->dev[i];

        if (!paused && v->ops->resume)
            v->ops->resume(v);
        ret = virtio_dev_arm(v);
        v->pause_req = paused ? 1 : 0;
        if (ret == 0)
            ret = -pthread_create(&v->thread, NULL, virtio_worker, v);
        v->thread_started = ret == 0;
    }
    if (ret < 0)
        log_err("starting virtio devices: %s", strerror(-ret));
    return ret;
}

void virtio_bus_pause(struct virtio_bus *bus)
{
    if (bus->paused)
        return;
    bus->paused = true;
    for (unsigned i = 0; i < bus->n; i++) {
        struct virtio_dev *v = bus->dev[i];

        virtio_dev_park(v);
        if (v->ops->pause)
            v->ops->pause(v);
    }
}

void virtio_bus_resume(struct virtio_bus *bus)
{
    if (!bus->paused)
        return;
    bus->paused = false;
    for (unsigned i = 0; i < bus->n; i++) {
        struct virtio_dev *v = bus->dev[i];

        if (v->ops->resume)
            v->ops->resume(v);
        virtio_dev_unpark(v);
    }
}

void virtio_bus_stop(struct virtio_bus *bus)
{
    for (unsigned i = 0; i < bus->n; i++) {
        struct virtio_dev *v = bus->dev[i];

        pthread_mutex_lock(&v->lock);
        v->stop_req = true;
        pthread_cond_broadcast(&v->cond);
        ctl_signal(v);
        pthread_mutex_unlock(&v->lock);
        if (v->thread_started)
            pthread_join(v->thread, NULL);
        v->thread_started = false;
    }
}

/* ---- GET /v1/vm */

void virtio_dev_describe(struct virtio_dev *v, void *json_obj)
{
    static const char *const types[] = { [VIRTIO_ID_NET] = "virtio-net",
                                         [VIRTIO_ID_BLK] = "virtio-blk",
                                         [VIRTIO_ID_RNG] = "virtio-rng" };
    json_t *o = json_obj;
    char bdf[16];

    snprintf(bdf, sizeof(bdf), "00:%02x.0", v->slot);
    pthread_mutex_lock(&v->lock);
    json_object_set_new(o, "type", json_string(v->type < 5 && types[v->type] ?
                                                types[v->type] : "virtio"));
    json_object_set_new(o, "name", json_string(v->name));
    json_object_set_new(o, "pci", json_string(bdf));
    json_object_set_new(o, "status", json_integer(v->status));
    json_object_set_new(o, "broken", json_boolean(v->broken));
    json_object_set_new(o, "msix", json_boolean(virtio_msix_enabled(v)));
    json_object_set_new(o, "notifies", json_integer((json_int_t)v->notifies));
    json_object_set_new(o, "interrupts", json_integer((json_int_t)v->interrupts));
    pthread_mutex_unlock(&v->lock);
    if (v->ops->describe)
        v->ops->describe(v, o);
}

/* ---- state: one section per device */

static int walk_queue(struct state_walker *w, struct virtqueue *vq)
{
    walk_u16(w, &vq->size, "queue size");
    walk_bool(w, &vq->enabled, "queue enabled");
    walk_u16(w, &vq->msix_vector, "queue msix vector");
    walk_u64(w, &vq->desc_gpa, "queue desc");
    walk_u64(w, &vq->avail_gpa, "queue avail");
    walk_u64(w, &vq->used_gpa, "queue used");
    walk_u16(w, &vq->last_avail, "queue last_avail");
    walk_u16(w, &vq->used_idx, "queue used_idx");
    if (walk_loading(w) && !w->err && vq->enabled && !vq_valid(vq))
        return walk_fail(w, -EINVAL, "enabled queue with bad size or rings");
    return w->err;
}

static int walk_msix(struct state_walker *w, struct virtio_dev *v)
{
    for (unsigned i = 0; i < VIRTIO_MSIX_VECTORS; i++) {
        walk_u64(w, &v->msix[i].addr, "msix addr");
        walk_u32(w, &v->msix[i].data, "msix data");
        walk_u32(w, &v->msix[i].ctrl, "msix ctrl");
    }
    return walk_u64(w, &v->msix_pending, "msix pending");
}

/* Saved with the worker parked (the VM is paused): no request is in flight,
 * and chains not yet taken stay in the ring for the destination. */
static int virtio_state_walk(struct state_walker *w, void *obj)
{
    struct virtio_dev *v = obj;
    uint16_t type = v->type;
    uint32_t nq = v->nqueues;

    pthread_mutex_lock(&v->lock);
    walk_u16(w, &type, "device type");
    walk_count(w, &nq, VIRTIO_MAX_QUEUES, "queue count");
    if (walk_loading(w) && !w->err && (type != v->type || nq != v->nqueues))
        walk_fail(w, -EINVAL, "a different virtio device in this slot");
    walk_u8(w, &v->status, "status");
    walk_u8(w, &v->isr, "isr");
    walk_u8(w, &v->config_generation, "config generation");
    walk_bool(w, &v->broken, "broken");
    walk_u32(w, &v->dfselect, "device feature select");
    walk_u32(w, &v->gfselect, "driver feature select");
    walk_u64(w, &v->driver_features, "driver features");
    walk_u16(w, &v->queue_select, "queue select");
    walk_u16(w, &v->msix_config, "msix config vector");
    for (unsigned q = 0; q < v->nqueues && !w->err; q++)
        walk_queue(w, &v->vq[q]);
    walk_msix(w, v);
    pthread_mutex_unlock(&v->lock);
    if (!w->err && v->ops->walk)
        v->ops->walk(w, v);
    return w->err;
}

const struct state_ops virtio_state_ops = {
    .name = "virtio", .id = SECTION_VIRTIO, .version = 2, .min_version = 1,   /* 2: blk size */
    .walk = virtio_state_walk,
};
