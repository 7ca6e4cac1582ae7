/*
 * virtio-net responder, polled: answers ARP for net.ip, ICMP echo, and echoes UDP
 * datagrams sent to port net.udp. Replies are built in place of a copy of the request.
 */
#include "virtio.h"

#define NET_F_MAC       5
#define NET_F_STATUS    16
#define HDR_LEN         12      /* virtio_net_hdr_v1 (VERSION_1: num_buffers included) */
#define BUF_LEN         2048
#define RING            256
#define BUSY_NS         (200 * NS_PER_MS)   /* poll flat out this long after a frame */
#define IDLE_POLL_NS    NS_PER_MS
#define STAT_NS         NS_PER_SEC

#define ETH_ARP         0x0806
#define ETH_IP          0x0800

static u8 rxbufs[RING][BUF_LEN] __noinit __aligned(4096);
static u8 txbufs[RING][BUF_LEN] __noinit __aligned(4096);

static struct {
    struct virtio_dev v;
    struct vq rx, tx;
    bool up;
    u8 mac[6];
    u8 ip[4];
    u16 tx_free[RING];
    u32 ntx_free;
    u64 rx_n, tx_n, drop_n;
    u64 last_frame, next_stat;
} net;

static u16 be16(const u8 *p) { return (u16)(p[0] << 8 | p[1]); }

static void put_be16(u8 *p, u16 v)
{
    p[0] = (u8)(v >> 8);
    p[1] = (u8)v;
}

static void swap_bytes(u8 *a, u8 *b, u32 n)
{
    for (u32 i = 0; i < n; i++) {
        u8 t = a[i];

        a[i] = b[i];
        b[i] = t;
    }
}

static u16 ip_csum(const u8 *p, u32 n)
{
    u32 sum = 0;

    for (u32 i = 0; i + 1 < n; i += 2)
        sum += be16(p + i);
    if (n & 1)
        sum += (u32)p[n - 1] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (u16)~sum;
}

/* ARP request for our address -> reply, in place. Length of the reply or 0. */
static u32 net_arp(u8 *f, u32 len)
{
    u8 *a = f + 14;

    if (len < 42 || be16(a) != 1 || be16(a + 2) != ETH_IP || be16(a + 6) != 1 ||
        memcmp(a + 24, net.ip, 4))
        return 0;
    put_be16(a + 6, 2);
    memcpy(a + 18, a + 8, 10);          /* target = the requester */
    memcpy(a + 8, net.mac, 6);
    memcpy(a + 14, net.ip, 4);
    return 42;
}

/* ICMP echo request or UDP to our port -> the reply, in place. Length or 0. */
static u32 net_ip(u8 *f, u32 len)
{
    u8 *ip = f + 14, *l4;
    u32 ihl, total;

    if (len < 34 || (ip[0] >> 4) != 4 || memcmp(ip + 16, net.ip, 4))
        return 0;
    ihl = (ip[0] & 15) * 4u;
    total = be16(ip + 2);
    if (ihl < 20 || total < ihl + 8 || 14 + total > len || (be16(ip + 6) & 0x3fff))
        return 0;                       /* short, or a fragment */
    l4 = ip + ihl;
    if (ip[9] == 1 && l4[0] == 8) {
        l4[0] = 0;
        put_be16(l4 + 2, 0);
        put_be16(l4 + 2, ip_csum(l4, total - ihl));
    } else if (ip[9] == 17 && be16(l4 + 2) == cfg.net_udp) {
        swap_bytes(l4, l4 + 2, 2);      /* the UDP checksum is unchanged by the swaps */
    } else {
        return 0;
    }
    swap_bytes(ip + 12, ip + 16, 4);    /* so is the IP header checksum */
    return 14 + total;
}

/* Builds the answer to one received frame in a TX buffer and queues it. */
static bool net_answer(const u8 *frame, u32 len)
{
    u16 id;
    u8 *f;
    u32 out = 0;

    if (len < 14 || len > BUF_LEN - HDR_LEN || !net.ntx_free)
        return false;
    id = net.tx_free[--net.ntx_free];
    f = txbufs[id] + HDR_LEN;
    memset(txbufs[id], 0, HDR_LEN);
    memcpy(f, frame, len);
    if (be16(f + 12) == ETH_ARP)
        out = net_arp(f, len);
    else if (be16(f + 12) == ETH_IP)
        out = net_ip(f, len);
    if (!out) {
        net.tx_free[net.ntx_free++] = id;
        return false;
    }
    memcpy(f, f + 6, 6);
    memcpy(f + 6, net.mac, 6);
    net.tx.desc[id] = (struct vring_desc){ (u64)txbufs[id], HDR_LEN + out, 0, 0 };
    vq_push(&net.tx, id);
    return true;
}

void vnet_probe(const struct pci_dev *p)
{
    const char *why = "";
    u64 cip = cfg.net_ip;

    if (net.up)
        return;                         /* the first device only */
    if (virtio_open(&net.v, p, (1ULL << NET_F_MAC) | (1ULL << NET_F_STATUS), &why) ||
        virtio_queue(&net.v, &net.rx, 0, RING, &why) ||
        virtio_queue(&net.v, &net.tx, 1, RING, &why)) {
        con_printf("NET FAIL init-%s\n", why);
        return;
    }
    for (int i = 0; i < 6; i++)
        net.mac[i] = virtio_has(&net.v, NET_F_MAC) ? net.v.devcfg[i] :
                     (u8[]){ 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 }[i];
    for (int i = 0; i < 4; i++)
        net.ip[i] = (u8)(cip >> (24 - 8 * i));
    for (u16 i = 0; i < net.rx.size; i++) {
        net.rx.desc[i] = (struct vring_desc){ (u64)rxbufs[i], BUF_LEN, VRING_DESC_F_WRITE, 0 };
        vq_push(&net.rx, i);
    }
    net.ntx_free = 0;
    for (u16 i = 0; i < net.tx.size; i++)
        net.tx_free[net.ntx_free++] = (u16)(net.tx.size - 1 - i);
    virtio_ready(&net.v);
    vq_kick(&net.rx);
    net.up = true;
    con_printf("NET ready %02x:%02x:%02x:%02x:%02x:%02x\n", net.mac[0], net.mac[1],
               net.mac[2], net.mac[3], net.mac[4], net.mac[5]);
}

/* TX buffers the device is done with go back to the free list. */
static void net_reclaim(void)
{
    u32 id, len;

    while (vq_pop(&net.tx, &id, &len))
        if (id < RING)
            net.tx_free[net.ntx_free++] = (u16)id;
}

bool vnet_step(u64 now, u64 *next)
{
    u32 id, len, n = 0, sent = 0;

    if (!net.up)
        return false;
    net_reclaim();
    while (n < net.rx.size && vq_pop(&net.rx, &id, &len)) {
        n++;
        net.rx_n++;
        if (id < RING && len > HDR_LEN && net_answer(rxbufs[id] + HDR_LEN, len - HDR_LEN))
            sent++;
        else
            net.drop_n++;
        vq_push(&net.rx, (u16)id);
    }
    if (sent) {
        net.tx_n += sent;
        vq_kick(&net.tx);
    }
    if (n) {
        vq_kick(&net.rx);
        net.last_frame = now;
    }
    if (now >= net.next_stat) {
        if (net.next_stat)
            con_printf("NET rx=%lu tx=%lu drop=%lu\n", net.rx_n, net.tx_n, net.drop_n);
        net.next_stat = now + STAT_NS;
    }
    if (now - net.last_frame < BUSY_NS)
        return true;
    *next = MIN(*next, now + IDLE_POLL_NS);
    return false;
}
