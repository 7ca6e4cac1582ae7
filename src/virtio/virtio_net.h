/* virtio-net on a tap: one rx and one tx queue, MAC and link status in the
 * config space, checksum/TSO offloads where the tap takes them. The device's
 * worker thread reads the tap (watched fd) and drains the tx queue on its
 * notification, so packets never stall a vCPU. */
#ifndef FERRY_VIRTIO_VIRTIO_NET_H
#define FERRY_VIRTIO_VIRTIO_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "net/tap.h"
#include "virtio/virtio.h"

#define VIRTIO_NET_F_CSUM       0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_MAC        5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_GUEST_ECN  9
#define VIRTIO_NET_F_HOST_TSO4  11
#define VIRTIO_NET_F_HOST_TSO6  12
#define VIRTIO_NET_F_HOST_ECN   13
#define VIRTIO_NET_F_MRG_RXBUF  15
#define VIRTIO_NET_F_STATUS     16

#define VIRTIO_NET_HDR_LEN  12      /* struct virtio_net_hdr_v1 */
#define VIRTIO_NET_S_LINK_UP 1
#define VIRTIO_NET_RXBUF    (65536 + VIRTIO_NET_HDR_LEN)

struct virtio_net_stats {
    uint64_t rx_packets, rx_bytes, rx_dropped;
    uint64_t tx_packets, tx_bytes, tx_dropped;
    uint64_t switchover_dropped;   /* host drops while no ferry held the tap (migration) */
};

struct net_used {
    uint32_t head, len;
};

struct virtio_net {
    struct virtio_dev vdev;
    struct tap tap;
    unsigned index;
    uint8_t mac[NET_MAC_LEN];
    uint8_t config[10];            /* mac[6], le16 status, le16 max_virtqueue_pairs */
    bool announce;                 /* restored from a stream: announce the MAC on start */
    bool drops_valid;              /* drops_at_pause was taken at the last pause */
    uint64_t drops_at_pause;       /* tap_host_drops() when the queue was detached */
    uint64_t queued_at_pause;      /* packets left in our tap queue then (dropped) */
    struct virtio_net_stats st;
    /* Worker thread only. */
    struct vq_chain chain;
    struct vq_chain chain0;        /* mergeable rx: the frame's first chain (header) */
    struct net_used used[VQ_MAX_SIZE];
    uint32_t pending_len;          /* a frame read from the tap, waiting for buffers */
    uint8_t rxbuf[VIRTIO_NET_RXBUF];
};

/* Opens the tap (detached until the VM runs) and registers the device. */
int virtio_net_add(struct virtio_bus *bus, struct virtio_net *net, unsigned index,
                   const struct net_config *cfg);
/* The device part alone, on an already open backend in net->tap (unit tests
 * use a SOCK_SEQPACKET socket: one datagram per frame, vnet header first). */
int virtio_net_register(struct virtio_bus *bus, struct virtio_net *net, unsigned index,
                        const uint8_t mac[NET_MAC_LEN]);
/* The VM stops/starts running: leave/join the tap's traffic, so a second ferry on this
 * host (a migration destination) can take it over. */
void virtio_net_close(struct virtio_net *net);

#endif
