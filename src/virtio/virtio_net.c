#include "virtio/virtio_net.h"

#include <errno.h>
#include <jansson.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "state/walk.h"
#include "util/log.h"
#include "util/util.h"

#define NET_RXQ 0
#define NET_TXQ 1
#define NET_QUEUE_SIZE 256
#define NET_NOTIFY_BATCH 32
#define NET_BUDGET 256          /* packets per turn, so rx and tx take turns */
#define NET_STATE_VERSION 1

static void net_count(uint64_t *c, uint64_t n)
{
    __atomic_add_fetch(c, n, __ATOMIC_RELAXED);
}

/* One packet from the tap into one rx chain (no mergeable buffers: the driver
 * gives chains big enough for what it negotiated). */
/* Out of budget with work left: come back after the other queue's turn (a
 * write to our own notify eventfd, as the guest's kick would do). With the
 * edge-triggered tap nothing else would wake us for packets already queued. */
static void net_requeue(struct virtio_net *n, unsigned q)
{
    uint64_t one = 1;

    if (write(n->vdev.kick_fd[q], &one, sizeof(one)) < 0)
        log_warn("%s: re-kicking queue %u: %s", n->vdev.name, q, strerror(errno));
}

/* One frame into one chain (no mergeable buffers: the driver gives chains
 * big enough for what it negotiated). */
static int net_rx_single(struct virtio_net *n, struct virtqueue *vq)
{
    uint32_t len = n->pending_len;
    int ret = vq_pop(vq, &n->chain);

    if (ret <= 0)
        return ret;
    n->rxbuf[10] = 1, n->rxbuf[11] = 0;   /* num_buffers = 1 (VERSION_1) */
    if (n->chain.in_len < len) {
        net_count(&n->st.rx_dropped, 1);   /* too small a buffer: it goes back empty */
        len = 0;
    } else {
        vq_write(&n->chain, 0, n->rxbuf, len);
        net_count(&n->st.rx_packets, 1);
        net_count(&n->st.rx_bytes, len - VIRTIO_NET_HDR_LEN);
    }
    ret = vq_push(vq, &n->chain, len);
    return ret < 0 ? ret : 1;
}

static void net_mark_in(struct virtqueue *vq, const struct vq_chain *c, uint32_t written)
{
    for (unsigned i = 0; i < c->nin && written; i++) {
        uint32_t k = MIN(c->in[i].len, written);

        mem_mark_written(vq->mem, c->in[i].gpa, k);
        written -= k;
    }
}

/* Used entries of one mergeable frame become visible together: a driver
 * that sees the first (with num_buffers) takes the others at once, so they
 * cannot be published one by one as vq_push() does. Same layout and dirty
 * marking as vq_push(). */
static int net_publish(struct virtqueue *vq, const struct net_used *u, uint16_t nb)
{
    uint8_t *used = mem_ptr(vq->mem, vq->used_gpa, 4 + 8ULL * vq->size);

    if (!used || vq->size == 0)
        return -EINVAL;
    for (uint16_t i = 0; i < nb; i++) {
        uint64_t off = 4 + 8ULL * ((uint16_t)(vq->used_idx + i) % vq->size);
        uint32_t elem[2] = { u[i].head, u[i].len };

        memcpy(used + off, elem, sizeof(elem));
        mem_mark_written(vq->mem, vq->used_gpa + off, sizeof(elem));
    }
    vq->used_idx = (uint16_t)(vq->used_idx + nb);
    __atomic_store_n((uint16_t *)(used + 2), vq->used_idx, __ATOMIC_RELEASE);
    mem_mark_written(vq->mem, vq->used_gpa + 2, 2);
    return 0;
}

/* Not enough buffers yet: give the chains back (nothing was published) and
 * wait; a frame that cannot fit even in a full ring is dropped. */
static int net_rx_unpop(struct virtio_net *n, struct virtqueue *vq, uint16_t nb)
{
    vq->last_avail = (uint16_t)(vq->last_avail - nb);
    if (nb < MIN(vq->size, VQ_MAX_SIZE))
        return 0;
    net_count(&n->st.rx_dropped, 1);
    return 1;
}

/* VIRTIO_NET_F_MRG_RXBUF: one frame over as many chains as it needs. */
static int net_rx_mrg(struct virtio_net *n, struct virtqueue *vq)
{
    uint32_t len = n->pending_len, off = 0, k;
    uint16_t nb = 0, le;
    int ret;

    while (off < len) {
        struct vq_chain *c = nb ? &n->chain : &n->chain0;

        if (nb >= MIN(vq->size, VQ_MAX_SIZE))   /* a guest adding buffers behind us */
            return net_rx_unpop(n, vq, nb);
        ret = vq_pop(vq, c);
        if (ret <= 0)
            return ret < 0 ? ret : net_rx_unpop(n, vq, nb);
        if (nb == 0 && c->in_len < VIRTIO_NET_HDR_LEN) {
            c->error = "mergeable rx buffer smaller than the header";
            return -EINVAL;
        }
        k = vq_write(c, 0, n->rxbuf + off, len - off);
        net_mark_in(vq, c, k);
        n->used[nb].head = c->head;
        n->used[nb].len = k;
        nb++, off += k;
    }
    le = nb;                                  /* num_buffers, little-endian (x86) */
    vq_write(&n->chain0, 10, &le, sizeof(le));
    net_count(&n->st.rx_packets, 1);
    net_count(&n->st.rx_bytes, len - VIRTIO_NET_HDR_LEN);
    ret = net_publish(vq, n->used, nb);
    return ret < 0 ? ret : 1;
}

/* Reads a frame (unless one waits from last time) and hands it to the guest.
 * 1: delivered or dropped; 0: tap empty or no buffers (the frame waits). */
static int net_rx_one(struct virtio_net *n, struct virtqueue *vq)
{
    ssize_t len;
    int ret;

    if (!n->pending_len) {
        len = read(n->tap.fd, n->rxbuf, sizeof(n->rxbuf));
        if (len < 0)
            return errno == EAGAIN || errno == EINTR || errno == EBADFD ? 0 : -errno;
        if (len < VIRTIO_NET_HDR_LEN)
            return 1;
        if (!virtio_dev_has_feature(&n->vdev, VIRTIO_NET_F_GUEST_CSUM))
            n->rxbuf[0] = 0;              /* no DATA_VALID for a driver that did not ask */
        n->pending_len = (uint32_t)len;
    }
    ret = virtio_dev_has_feature(&n->vdev, VIRTIO_NET_F_MRG_RXBUF) ?
          net_rx_mrg(n, vq) : net_rx_single(n, vq);
    if (ret != 0)
        n->pending_len = 0;
    return ret;
}

/* Reads only while the guest has buffers: the rest waits in the tap's queue
 * (and the host drops beyond it) until the rx queue is notified. */
static void net_rx(struct virtio_net *n)
{
    struct virtqueue *vq = &n->vdev.vq[NET_RXQ];
    unsigned pushed = 0;
    int ret = 1;

    if (!vq->enabled || !n->tap.attached)
        return;
    while (vq_has_work(vq) && !virtio_dev_should_stop(&n->vdev) && pushed < NET_BUDGET &&
           (ret = net_rx_one(n, vq)) > 0)
        if (++pushed % NET_NOTIFY_BATCH == 0)
            virtio_dev_notify(&n->vdev, NET_RXQ);
    if (pushed % NET_NOTIFY_BATCH)
        virtio_dev_notify(&n->vdev, NET_RXQ);
    if (pushed == NET_BUDGET && ret > 0)
        net_requeue(n, NET_RXQ);
    if (ret < 0)
        virtio_dev_broken(&n->vdev, n->chain.error ? n->chain.error : "rx queue");
}

static int net_tx_one(struct virtio_net *n, struct virtqueue *vq)
{
    struct iovec iov[VQ_MAX_SEGS];
    struct vq_chain *c = &n->chain;
    int ret = vq_pop(vq, c);

    if (ret <= 0)
        return ret;
    for (unsigned i = 0; i < c->nout; i++)
        iov[i] = (struct iovec){ c->out[i].hva, c->out[i].len };
    if (c->out_len <= VIRTIO_NET_HDR_LEN || writev(n->tap.fd, iov, (int)c->nout) < 0) {
        net_count(&n->st.tx_dropped, 1);
    } else {
        net_count(&n->st.tx_packets, 1);
        net_count(&n->st.tx_bytes, c->out_len - VIRTIO_NET_HDR_LEN);
    }
    ret = vq_push(vq, c, 0);
    return ret < 0 ? ret : 1;
}

static void net_tx(struct virtio_net *n)
{
    struct virtqueue *vq = &n->vdev.vq[NET_TXQ];
    unsigned done = 0;
    int ret = 1;

    if (!vq->enabled)
        return;
    while (!virtio_dev_should_stop(&n->vdev) && done < NET_BUDGET &&
           (ret = net_tx_one(n, vq)) > 0)
        done++;
    if (done)
        virtio_dev_notify(&n->vdev, NET_TXQ);
    if (done == NET_BUDGET && ret > 0)
        net_requeue(n, NET_TXQ);
    if (ret < 0)
        virtio_dev_broken(&n->vdev, n->chain.error ? n->chain.error : "tx queue");
}

static void net_queue_notify(struct virtio_dev *vdev, unsigned q)
{
    struct virtio_net *n = vdev->priv;

    if (q == NET_TXQ)
        net_tx(n);
    else if (q == NET_RXQ)
        net_rx(n);
}

static void net_tap_readable(struct virtio_dev *vdev, int fd, void *arg)
{
    net_rx(arg);
}

/* The guest's receive offloads become the tap's: the host may then hand us
 * packets with partial checksums or GSO, which the guest said it takes. */
static unsigned net_tap_offloads(struct virtio_dev *vdev)
{
    unsigned f = 0;

    if (virtio_dev_has_feature(vdev, VIRTIO_NET_F_GUEST_CSUM)) {
        f |= TUN_F_CSUM;
        f |= virtio_dev_has_feature(vdev, VIRTIO_NET_F_GUEST_TSO4) ? TUN_F_TSO4 : 0;
        f |= virtio_dev_has_feature(vdev, VIRTIO_NET_F_GUEST_TSO6) ? TUN_F_TSO6 : 0;
        f |= virtio_dev_has_feature(vdev, VIRTIO_NET_F_GUEST_ECN) ? TUN_F_TSO_ECN : 0;
    }
    return f;
}

static int net_activate(struct virtio_dev *vdev)
{
    struct virtio_net *n = vdev->priv;

    tap_set_offload(&n->tap, net_tap_offloads(vdev));
    net_rx(n);
    return 0;
}

static void net_reset(struct virtio_dev *vdev)
{
    struct virtio_net *n = vdev->priv;

    n->pending_len = 0;
    tap_set_offload(&n->tap, 0);
}

/* Device part of the virtio section: the MAC travels with the VM (the
 * destination's --net gives only the tap), and the host's drop count at the
 * pause lets the destination count what the switchover lost. */
static int net_walk(struct state_walker *w, struct virtio_dev *vdev)
{
    struct virtio_net *n = vdev->priv;
    uint32_t version = NET_STATE_VERSION;
    uint8_t mac[NET_MAC_LEN];

    memcpy(mac, n->mac, sizeof(mac));
    walk_u32(w, &version, "net.version");
    if (walk_loading(w) && w->err == 0 && version != NET_STATE_VERSION)
        return walk_fail(w, -EINVAL, "net.version");
    walk_buf(w, mac, sizeof(mac), "net.mac");
    walk_bool(w, &n->drops_valid, "net.drops_valid");
    walk_u64(w, &n->drops_at_pause, "net.drops_at_pause");
    walk_u64(w, &n->queued_at_pause, "net.queued_at_pause");
    if (w->err || !walk_loading(w))
        return w->err;
    if (mac[0] & 1)
        return walk_fail(w, -EINVAL, "net.mac");
    memcpy(n->mac, mac, sizeof(mac));
    memcpy(n->config, mac, sizeof(mac));
    n->announce = true;
    return 0;
}

static void net_describe(struct virtio_dev *vdev, void *obj)
{
    struct virtio_net *n = vdev->priv;
    char mac[18];

    net_mac_format(n->mac, mac);
    json_object_set_new(obj, "mac", json_string(mac));
    json_object_set_new(obj, "tap", json_string(n->tap.name));
#define NET_STAT(f) json_object_set_new(obj, #f, \
        json_integer((json_int_t)__atomic_load_n(&n->st.f, __ATOMIC_RELAXED)))
    NET_STAT(rx_packets); NET_STAT(rx_bytes); NET_STAT(rx_dropped);
    NET_STAT(tx_packets); NET_STAT(tx_bytes); NET_STAT(tx_dropped);
    NET_STAT(switchover_dropped);
#undef NET_STAT
}

static void net_pause(struct virtio_dev *vdev);
static void net_resume(struct virtio_dev *vdev);

static const struct virtio_dev_ops net_ops = {
    .queue_notify = net_queue_notify,
    .activate = net_activate,
    .reset = net_reset,
    .walk = net_walk,
    .describe = net_describe,
    .pause = net_pause,
    .resume = net_resume,
};

static uint64_t net_features(const struct tap *t)
{
    uint64_t f = 1ULL << VIRTIO_NET_F_MAC | 1ULL << VIRTIO_NET_F_STATUS |
                 1ULL << VIRTIO_NET_F_MRG_RXBUF;

    if (t->offloads & TUN_F_CSUM)
        f |= 1ULL << VIRTIO_NET_F_CSUM | 1ULL << VIRTIO_NET_F_GUEST_CSUM;
    if (t->offloads & TUN_F_TSO4)
        f |= 1ULL << VIRTIO_NET_F_HOST_TSO4 | 1ULL << VIRTIO_NET_F_GUEST_TSO4;
    if (t->offloads & TUN_F_TSO6)
        f |= 1ULL << VIRTIO_NET_F_HOST_TSO6 | 1ULL << VIRTIO_NET_F_GUEST_TSO6;
    if (t->offloads & TUN_F_TSO_ECN)
        f |= 1ULL << VIRTIO_NET_F_HOST_ECN | 1ULL << VIRTIO_NET_F_GUEST_ECN;
    return f;
}

int virtio_net_register(struct virtio_bus *bus, struct virtio_net *n, unsigned index,
                        const uint8_t mac[NET_MAC_LEN])
{
    static const char *const names[NET_MAX_DEVICES] = { "net0", "net1", "net2", "net3" };
    int ret;

    n->index = index;
    memcpy(n->mac, mac, NET_MAC_LEN);
    memcpy(n->config, mac, NET_MAC_LEN);
    n->config[6] = VIRTIO_NET_S_LINK_UP;
    n->config[8] = 1;                     /* max_virtqueue_pairs (no MQ feature) */
    n->vdev = (struct virtio_dev){
        .ops = &net_ops, .type = VIRTIO_ID_NET, .class_code = 0x020000, .nqueues = 2,
        .queue_max = NET_QUEUE_SIZE, .features = net_features(&n->tap),
        .config = n->config, .config_len = sizeof(n->config),
        .name = names[index % NET_MAX_DEVICES], .priv = n,
    };
    ret = virtio_dev_register(bus, &n->vdev);
    /* Edge-triggered: rx stops reading while the guest has no buffers and
     * resumes on the rx queue's notify; a level watch would spin meanwhile. */
    if (ret == 0)
        ret = virtio_dev_watch_fd(&n->vdev, n->tap.fd, true, net_tap_readable, n);
    return ret;
}

int virtio_net_add(struct virtio_bus *bus, struct virtio_net *n, unsigned index,
                   const struct net_config *cfg)
{
    int ret = tap_open(&n->tap, cfg->tap, false);

    if (ret == 0)
        ret = virtio_net_register(bus, n, index, cfg->mac);
    /* Frames for a VM already on the tap (a migration's source) that the
     * open took: lost to it, so counted with the handover's drops. */
    if (ret == 0 && n->tap.open_dropped) {
        net_count(&n->st.switchover_dropped, n->tap.open_dropped);
        log_info("%s: %llu packets dropped while joining tap %s", n->vdev.name,
                 (unsigned long long)n->tap.open_dropped, cfg->tap);
    }
    if (ret < 0)
        tap_close(&n->tap);
    return ret;
}

/* The tap takes part in traffic only while the VM runs (docs/MIGRATION.md). */
static void net_pause(struct virtio_dev *vdev)
{
    struct virtio_net *n = vdev->priv;
    uint64_t left = 0;

    if (!n->tap.attached)
        return;
    /* The host's count is read first: every drop from the detach on counts.
     * Packets still queued for this process die with it (or with the pause):
     * counted too. */
    n->drops_at_pause = tap_host_drops(&n->tap);
    left = n->pending_len != 0;            /* a frame that waited for buffers */
    n->pending_len = 0;
    left += tap_drain(&n->tap);
    tap_attach(&n->tap, false);
    n->queued_at_pause = left;
    n->drops_valid = true;
}

/* RARP from the guest's MAC, as a switch would need after a move. */
static void net_announce(struct virtio_net *n)
{
    uint8_t f[60] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };

    memcpy(f + 6, n->mac, NET_MAC_LEN);
    f[12] = 0x80, f[13] = 0x35;                     /* RARP */
    f[14] = 0, f[15] = 1, f[16] = 0x08, f[17] = 0;  /* Ethernet, IPv4 */
    f[18] = 6, f[19] = 4, f[20] = 0, f[21] = 3;     /* request reverse */
    memcpy(f + 22, n->mac, NET_MAC_LEN);
    memcpy(f + 32, n->mac, NET_MAC_LEN);
    if (tap_send(&n->tap, f, sizeof(f)) < 0)
        log_warn("%s: announcing %02x:..:%02x failed", n->vdev.name, n->mac[0], n->mac[5]);
}

static void net_resume(struct virtio_dev *vdev)
{
    struct virtio_net *n = vdev->priv;
    uint64_t drops;

    if (n->tap.attached || tap_attach(&n->tap, true) < 0)
        return;
    tap_set_offload(&n->tap, (n->vdev.status & VIRTIO_STATUS_DRIVER_OK) ?
                    net_tap_offloads(&n->vdev) : 0);
    if (n->drops_valid) {
        drops = tap_host_drops(&n->tap);
        drops = (drops > n->drops_at_pause ? drops - n->drops_at_pause : 0) + n->queued_at_pause;
        if (drops) {
            net_count(&n->st.switchover_dropped, drops);
            log_info("%s: %llu packets dropped while the VM was stopped", n->vdev.name,
                     (unsigned long long)drops);
        }
        n->drops_valid = false;
    }
    if (n->announce)
        net_announce(n);
    n->announce = false;
}

void virtio_net_close(struct virtio_net *n)
{
    tap_close(&n->tap);
}
