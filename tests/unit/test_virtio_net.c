/* virtio-net through the real transport and worker thread, with a
 * SOCK_SEQPACKET socket standing in for the tap (one datagram per frame, the
 * 12-byte vnet header first): rx into guest buffers, tx out of them, a guest
 * without buffers, a buffer too small, the MAC in the config space. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "virtio/virtio.h"
#include "virtio/virtio_net.h"
#include "vm/memory.h"
#include "vdriver.h"

#define MEM_SIZE (1U << 20)
#define QSIZE 16
#define RXQ_BASE 0x1000ULL        /* desc, avail, used at +0, +0x1000, +0x2000 */
#define TXQ_BASE 0x4000ULL
#define RXBUF 0x10000ULL          /* 2 KiB guest buffers */
#define TXBUF 0x40000ULL

static struct guest_mem mem;
static struct virtio_bus vbus;
static struct pci_bus pci;
static struct virtio_net net;
static uint64_t bar;
static int host_fd;
static uint32_t features_lo = 1U << VIRTIO_NET_F_MAC | 1U << VIRTIO_NET_F_STATUS;

static void mmio_w(uint64_t off, uint64_t val, unsigned len)
{
    vd_mmio_w(&(struct vdriver){ &vbus, &mem, bar }, off, val, len);
}

static uint64_t mmio_r(uint64_t off, unsigned len)
{
    return vd_mmio_r(&(struct vdriver){ &vbus, &mem, bar }, off, len);
}

static void put_desc(uint64_t q, unsigned i, uint64_t addr, uint32_t len, uint16_t flags)
{
    vd_put_desc(&mem, q, i, addr, len, flags, 0);
}

static void make_avail(uint64_t q, uint16_t head)
{
    vd_make_avail(&mem, q + 0x1000, QSIZE, head);
}

static uint16_t used_idx(uint64_t q)
{
    return vd_used_idx(&mem, q + 0x2000);
}

static uint32_t used_len(uint64_t q, unsigned slot)
{
    return *(uint32_t *)(mem.hva + q + 0x2000 + 4 + 8 * slot + 4);
}

static void wait_used(uint64_t q, uint16_t want)
{
    vd_wait_used(&mem, q + 0x2000, want);
}

static void queue_init(unsigned q, uint64_t base)
{
    mmio_w(0x16, q, 2);
    mmio_w(0x18, QSIZE, 2);
    mmio_w(0x20, base, 8);
    mmio_w(0x28, base + 0x1000, 8);
    mmio_w(0x30, base + 0x2000, 8);
    mmio_w(0x1c, 1, 2);
}

static void driver_init(void)
{
    bar = net.vdev.bar_addr;
    mmio_w(0x14, 0, 1);
    mmio_w(0x14, 3, 1);
    mmio_w(0x00, 0, 4);
    assert_true(mmio_r(0x04, 4) & (1U << VIRTIO_NET_F_MAC));
    mmio_w(0x08, 0, 4);
    mmio_w(0x0c, features_lo, 4);
    mmio_w(0x08, 1, 4);
    mmio_w(0x0c, 1, 4);                                   /* VERSION_1 */
    mmio_w(0x14, 3 | 8, 1);
    assert_int_equal(mmio_r(0x14, 1), 3 | 8);
    queue_init(0, RXQ_BASE);
    queue_init(1, TXQ_BASE);
    mmio_w(0x14, 3 | 8 | 4, 1);
}

static int setup(void **state)
{
    static const uint8_t mac[6] = { 0x02, 0x11, 0x22, 0x33, 0x44, 0x55 };
    int sv[2];

    (void)state;
    memset(&mem, 0, sizeof(mem));
    mem.hva = calloc(1, MEM_SIZE);
    mem.size = MEM_SIZE;
    mem.nregions = 1;
    mem.regions[0] = (struct mem_region){ .gpa = 0, .size = MEM_SIZE };
    mem.fd = -1;
    memset(&pci, 0, sizeof(pci));
    pthread_mutex_init(&pci.lock, NULL);
    virtio_bus_init(&vbus, -1, &mem, &pci);
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, sv), 0);
    memset(&net, 0, sizeof(net));
    net.tap = (struct tap){ .fd = sv[0], .name = "test", .attached = true };
    host_fd = sv[1];
    assert_int_equal(virtio_net_register(&vbus, &net, 0, mac), 0);
    assert_int_equal(virtio_bus_start(&vbus, false), 0);
    driver_init();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    virtio_bus_stop(&vbus);
    virtio_net_close(&net);
    close(host_fd);
    free(mem.hva);
    return 0;
}

static int setup_mrg(void **state)
{
    features_lo = 1U << VIRTIO_NET_F_MAC | 1U << VIRTIO_NET_F_MRG_RXBUF;
    return setup(state);
}

static int teardown_mrg(void **state)
{
    features_lo = 1U << VIRTIO_NET_F_MAC | 1U << VIRTIO_NET_F_STATUS;
    return teardown(state);
}

static void host_send(const char *payload)
{
    uint8_t f[256] = { 0 };
    size_t n = strlen(payload);

    memcpy(f + VIRTIO_NET_HDR_LEN + 14, payload, n);
    assert_int_equal(send(host_fd, f, VIRTIO_NET_HDR_LEN + 14 + n, 0),
                     (ssize_t)(VIRTIO_NET_HDR_LEN + 14 + n));
}

static void test_config_mac(void **state)
{
    (void)state;
    assert_int_equal(mmio_r(VIRTIO_BAR_DEVCFG + 0, 1), 0x02);
    assert_int_equal(mmio_r(VIRTIO_BAR_DEVCFG + 5, 1), 0x55);
    assert_int_equal(mmio_r(VIRTIO_BAR_DEVCFG + 6, 2), VIRTIO_NET_S_LINK_UP);
}

/* Frames wait in the backend until the guest gives buffers, then arrive
 * whole, with num_buffers = 1. */
static void test_rx(void **state)
{
    (void)state;
    host_send("first");
    host_send("second");
    usleep(20000);
    assert_int_equal(used_idx(RXQ_BASE), 0);
    for (unsigned i = 0; i < 2; i++)
        put_desc(RXQ_BASE, i, RXBUF + 2048 * i, 2048, 2);
    make_avail(RXQ_BASE, 0);
    make_avail(RXQ_BASE, 1);
    mmio_w(VIRTIO_BAR_NOTIFY + 0, 0, 2);
    wait_used(RXQ_BASE, 2);
    assert_int_equal(used_len(RXQ_BASE, 0), VIRTIO_NET_HDR_LEN + 14 + 5);
    assert_int_equal(mem.hva[RXBUF + 10], 1);
    assert_memory_equal(mem.hva + RXBUF + VIRTIO_NET_HDR_LEN + 14, "first", 5);
    assert_memory_equal(mem.hva + RXBUF + 2048 + VIRTIO_NET_HDR_LEN + 14, "second", 6);
    /* a buffer too small for the frame goes back empty; the drop is counted */
    put_desc(RXQ_BASE, 2, RXBUF, 20, 2);
    make_avail(RXQ_BASE, 2);
    mmio_w(VIRTIO_BAR_NOTIFY + 0, 0, 2);
    host_send("does not fit");
    wait_used(RXQ_BASE, 3);
    assert_int_equal(used_len(RXQ_BASE, 2), 0);
    assert_int_equal(net.st.rx_dropped, 1);
    assert_int_equal(net.st.rx_packets, 2);
}

static void test_tx(void **state)
{
    uint8_t got[256];
    const char *frame = "0123456789abcdefghij";   /* 20 bytes after the header */

    (void)state;
    memset(mem.hva + TXBUF, 0, VIRTIO_NET_HDR_LEN);
    memcpy(mem.hva + TXBUF + VIRTIO_NET_HDR_LEN, frame, 20);
    put_desc(TXQ_BASE, 0, TXBUF, VIRTIO_NET_HDR_LEN + 20, 0);
    make_avail(TXQ_BASE, 0);
    mmio_w(VIRTIO_BAR_NOTIFY + 4, 1, 2);
    wait_used(TXQ_BASE, 1);
    assert_int_equal(recv(host_fd, got, sizeof(got), 0), VIRTIO_NET_HDR_LEN + 20);
    assert_memory_equal(got + VIRTIO_NET_HDR_LEN, frame, 20);
    assert_int_equal(net.st.tx_packets, 1);
    assert_int_equal(net.st.tx_bytes, 20);
}

/* Mergeable buffers: a frame spans several small chains whose used entries
 * appear together, num_buffers in the first; too few buffers: it waits. */
static void test_rx_mergeable(void **state)
{
    char payload[101];
    uint8_t want[VIRTIO_NET_HDR_LEN + 14 + 100] = { 0 };

    (void)state;
    assert_true(net.vdev.features & (1ULL << VIRTIO_NET_F_MRG_RXBUF));
    memset(payload, 'm', 100);
    payload[100] = 0;
    memcpy(want + VIRTIO_NET_HDR_LEN + 14, payload, 100);
    want[10] = 2;
    /* 126 bytes, one 64-byte buffer: not enough, nothing published */
    put_desc(RXQ_BASE, 0, RXBUF, 64, 2);
    make_avail(RXQ_BASE, 0);
    mmio_w(VIRTIO_BAR_NOTIFY + 0, 0, 2);
    host_send(payload);
    usleep(30000);
    assert_int_equal(used_idx(RXQ_BASE), 0);
    /* a second buffer: both entries at once, num_buffers = 2 */
    put_desc(RXQ_BASE, 1, RXBUF + 64, 64, 2);
    make_avail(RXQ_BASE, 1);
    mmio_w(VIRTIO_BAR_NOTIFY + 0, 0, 2);
    wait_used(RXQ_BASE, 2);
    assert_int_equal(used_len(RXQ_BASE, 0), 64);
    assert_int_equal(used_len(RXQ_BASE, 1), sizeof(want) - 64);
    assert_memory_equal(mem.hva + RXBUF, want, sizeof(want));
    assert_int_equal(net.st.rx_packets, 1);
    assert_int_equal(net.st.rx_dropped, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_config_mac, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rx_mergeable, setup_mrg, teardown_mrg),
    };
    return cmocka_run_group_tests_name("virtio_net", tests, NULL, NULL);
}
