/* Split virtqueue parser edge cases, and the virtio-pci transport with the
 * rng and blk devices driven through BAR0 on a guest memory buffer (no KVM:
 * vm_fd -1, so routes/irqfds/ioeventfds are skipped; kicks go through the
 * MMIO notify path to the worker thread). */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "state/state.h"
#include "virtio/virtio.h"
#include "virtio/virtio_blk.h"
#include "virtio/virtio_rng.h"
#include "vm/memory.h"
#include "vdriver.h"

#define MEM_SIZE (1U << 20)
#define DESC  0x1000ULL
#define AVAIL 0x2000ULL
#define USED  0x3000ULL
#define QSIZE 16

static struct guest_mem mem;
static struct virtqueue vq;
static struct vq_chain chain;


static void mem_setup_buf(void)
{
    free(mem.hva);              /* a test may start over */
    memset(&mem, 0, sizeof(mem));
    mem.hva = calloc(1, MEM_SIZE);
    mem.size = MEM_SIZE;
    mem.nregions = 1;
    mem.regions[0] = (struct mem_region){ .gpa = 0, .size = MEM_SIZE };
    mem.fd = -1;
}

static int vq_setup(void **state)
{
    (void)state;
    mem_setup_buf();
    vq = (struct virtqueue){ .mem = &mem, .max_size = 256 };
    vq_reset(&vq);
    vq.size = QSIZE;
    vq.desc_gpa = DESC, vq.avail_gpa = AVAIL, vq.used_gpa = USED;
    return 0;
}

static int vq_teardown(void **state)
{
    (void)state;
    mem_track_writes(&mem, false);
    mem_track_writes(&mem, false);   /* and the retired bitmaps */
    free(mem.hva);
    mem.hva = NULL;
    return 0;
}

static void put_desc(uint64_t table, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
                     uint16_t next)
{
    vd_put_desc(&mem, table, i, addr, len, flags, next);
}

static void make_avail(uint16_t head)
{
    vd_make_avail(&mem, AVAIL, QSIZE, head);
}

static void test_vq_simple(void **state)
{
    (void)state;
    assert_true(vq_valid(&vq));
    assert_int_equal(vq_pop(&vq, &chain), 0);            /* empty */
    put_desc(DESC, 0, 0x10000, 16, 1, 1);                 /* readable, NEXT */
    put_desc(DESC, 1, 0x20000, 512, 2, 0);                /* writable */
    make_avail(0);
    assert_int_equal(vq_pop(&vq, &chain), 1);
    assert_int_equal(chain.nout, 1);
    assert_int_equal(chain.nin, 1);
    assert_int_equal(chain.in_len, 512);
    assert_ptr_equal(chain.out[0].hva, mem.hva + 0x10000);
    mem_track_writes(&mem, true);
    assert_int_equal(vq_push(&vq, &chain, 512), 0);
    assert_int_equal(*(uint16_t *)(mem.hva + USED + 2), 1);
    assert_int_equal(*(uint32_t *)(mem.hva + USED + 8), 512);
    /* the written buffer page (0x20) and the used ring page (3) are dirty */
    assert_true(mem.written[0][0] & (1ULL << 0x20));
    assert_true(mem.written[0][0] & (1ULL << 3));
    assert_false(mem.written[0][0] & (1ULL << 0x10));
}

static void expect_bad(const char *why_part)
{
    uint16_t before = vq.last_avail;

    assert_int_equal(vq_pop(&vq, &chain), -EINVAL);
    assert_non_null(chain.error);
    assert_non_null(strstr(chain.error, why_part));
    assert_int_equal(vq.last_avail, before);
}

static void test_vq_loop(void **state)
{
    (void)state;
    put_desc(DESC, 0, 0x10000, 16, 1, 1);
    put_desc(DESC, 1, 0x10000, 16, 1, 0);                 /* 1 -> 0 -> 1 ... */
    make_avail(0);
    expect_bad("loop");
}

static void test_vq_out_of_range(void **state)
{
    (void)state;
    put_desc(DESC, 0, 0x10000, 16, 1, QSIZE);             /* next beyond the table */
    make_avail(0);
    expect_bad("out of range");
    vq_setup(state);
    make_avail(QSIZE + 3);                                /* head beyond the table */
    expect_bad("out of range");
}

static void test_vq_outside_ram(void **state)
{
    (void)state;
    put_desc(DESC, 0, MEM_SIZE - 8, 16, 0, 0);            /* crosses the end of RAM */
    make_avail(0);
    expect_bad("outside RAM");
    vq_setup(state);
    put_desc(DESC, 0, 0xfffffffffffff000ULL, 0x2000, 0, 0);   /* wraps around */
    make_avail(0);
    expect_bad("outside RAM");
    vq_setup(state);
    vq.desc_gpa = MEM_SIZE - 16;                          /* rings must be RAM too */
    assert_false(vq_valid(&vq));
}

static void test_vq_indirect(void **state)
{
    (void)state;
    put_desc(0x5000, 0, 0x10000, 16, 1, 1);
    put_desc(0x5000, 1, 0x20000, 100, 3, 2);
    put_desc(0x5000, 2, 0x21000, 1, 2, 0);
    put_desc(DESC, 0, 0x5000, 3 * 16, 4, 0);
    make_avail(0);
    assert_int_equal(vq_pop(&vq, &chain), 1);
    assert_int_equal(chain.nout, 1);
    assert_int_equal(chain.nin, 2);
    assert_int_equal(chain.in_len, 101);
}

static void test_vq_indirect_nested(void **state)
{
    (void)state;
    put_desc(0x5000, 0, 0x6000, 16, 4, 0);                /* indirect inside indirect */
    put_desc(DESC, 0, 0x5000, 16, 4, 0);
    make_avail(0);
    expect_bad("indirect descriptor inside");
}

static void test_vq_indirect_loop(void **state)
{
    (void)state;
    for (unsigned i = 0; i < 4; i++)
        put_desc(0x5000, i, 0x10000, 16, 1, (uint16_t)((i + 1) % 4));
    put_desc(DESC, 0, 0x5000, 4 * 16, 4, 0);
    make_avail(0);
    expect_bad("loop");
}

static void test_vq_too_long(void **state)
{
    (void)state;
    /* an indirect table may not be larger than the parser's segment array */
    put_desc(DESC, 0, 0x5000, 16 * (VQ_MAX_SEGS + 1), 4, 0);
    make_avail(0);
    expect_bad("indirect table size");
}

static void test_vq_order_and_index(void **state)
{
    (void)state;
    put_desc(DESC, 0, 0x10000, 16, 3, 1);                 /* writable, then readable */
    put_desc(DESC, 1, 0x10000, 16, 0, 0);
    make_avail(0);
    expect_bad("readable descriptor after");
    vq_setup(state);
    ((uint16_t *)(mem.hva + AVAIL))[1] = QSIZE + 1;       /* more available than the queue */
    expect_bad("ran ahead");
}

static void test_vq_copy(void **state)
{
    uint8_t out[40];

    (void)state;
    put_desc(DESC, 0, 0x10000, 10, 3, 1);
    put_desc(DESC, 1, 0x20000, 30, 2, 0);
    make_avail(0);
    assert_int_equal(vq_pop(&vq, &chain), 1);
    memset(out, 0xab, sizeof(out));
    assert_int_equal(vq_write(&chain, 5, out, 40), 35);
    assert_int_equal(mem.hva[0x10004], 0);
    assert_int_equal(mem.hva[0x10005], 0xab);
    assert_int_equal(mem.hva[0x20000 + 29], 0xab);
    assert_int_equal(mem.hva[0x20000 + 30], 0);
}

/* ---- the transport, driven as a guest driver would */

static struct virtio_bus vbus;
static struct pci_bus pci;
static uint64_t bar;

static void mmio_w(uint64_t off, uint64_t val, unsigned len)
{
    vd_mmio_w(&(struct vdriver){ &vbus, &mem, bar }, off, val, len);
}

static uint64_t mmio_r(uint64_t off, unsigned len)
{
    return vd_mmio_r(&(struct vdriver){ &vbus, &mem, bar }, off, len);
}

static int transport_setup(void **state)
{
    vq_setup(state);
    memset(&pci, 0, sizeof(pci));
    pthread_mutex_init(&pci.lock, NULL);
    virtio_bus_init(&vbus, -1, &mem, &pci);
    return 0;
}

static int transport_teardown(void **state)
{
    virtio_bus_stop(&vbus);
    return vq_teardown(state);
}

/* ACK, DRIVER, features, FEATURES_OK, queue 0 at DESC/AVAIL/USED, DRIVER_OK. */
static void driver_init(struct virtio_dev *v)
{
    bar = v->bar_addr;
    assert_int_equal(pci_cfg_read(&pci, 0x80000000U | (v->slot << 11), 0, 2), 0x1af4);
    mmio_w(0x14, 0, 1);
    mmio_w(0x14, 3, 1);
    mmio_w(0x08, 1, 4);
    mmio_w(0x0c, 1, 4);                                   /* VERSION_1 */
    mmio_w(0x14, 3 | 8, 1);
    assert_int_equal(mmio_r(0x14, 1), 3 | 8);
    mmio_w(0x16, 0, 2);
    assert_int_equal(mmio_r(0x18, 2), v->queue_max);
    mmio_w(0x18, QSIZE, 2);
    mmio_w(0x20, DESC, 8);
    mmio_w(0x28, AVAIL, 4);
    mmio_w(0x30, USED, 4);
    mmio_w(0x1c, 1, 2);
    mmio_w(0x14, 3 | 8 | 4, 1);
}

static uint16_t used_idx(void)
{
    return vd_used_idx(&mem, USED);
}

static void wait_used(uint16_t want)
{
    vd_wait_used(&mem, USED, want);
}

static void wait_status(struct virtio_dev *v, uint8_t bit)
{
    for (int i = 0; i < 2000 && !(mmio_r(0x14, 1) & bit); i++)
        usleep(1000);
    assert_true(mmio_r(0x14, 1) & bit);
}

/* The device publishes the used index before it raises the interrupt, as
 * a guest expects: a test that saw the index waits for the ISR bit too. */
static uint8_t wait_isr(void)
{
    uint8_t isr = 0;

    for (int i = 0; i < 2000 && !(isr = (uint8_t)mmio_r(VIRTIO_BAR_ISR, 1)); i++)
        usleep(1000);
    return isr;
}

static void test_rng(void **state)
{
    static struct virtio_rng rng;
    uint8_t zero[64] = { 0 };

    (void)state;
    assert_int_equal(virtio_rng_add(&vbus, &rng), 0);
    assert_int_equal(virtio_bus_start(&vbus, false), 0);
    driver_init(&rng.vdev);
    put_desc(DESC, 0, 0x10000, 64, 2, 0);
    make_avail(0);
    mmio_w(VIRTIO_BAR_NOTIFY, 0, 2);
    wait_used(1);
    assert_int_equal(*(uint32_t *)(mem.hva + USED + 8), 64);
    assert_memory_not_equal(mem.hva + 0x10000, zero, 64);
    assert_int_equal(wait_isr(), 1);                      /* INTx path: ISR bit 0 */
    assert_int_equal(mmio_r(VIRTIO_BAR_ISR, 1), 0);       /* read clears */

    /* a loop in the next chain: the device is marked broken, not ferry */
    put_desc(DESC, 1, 0x10000, 16, 3, 2);
    put_desc(DESC, 2, 0x10000, 16, 3, 1);
    make_avail(1);
    mmio_w(VIRTIO_BAR_NOTIFY, 0, 2);
    wait_status(&rng.vdev, VIRTIO_STATUS_NEEDS_RESET);
    assert_true(rng.vdev.broken);
    /* reset brings it back */
    mmio_w(0x14, 0, 1);
    assert_int_equal(mmio_r(0x14, 1), 0);
    assert_false(rng.vdev.broken);
    virtio_bus_stop(&vbus);
    free(rng.chain);
}

static void test_pause_quiesce(void **state)
{
    static struct virtio_rng rng;

    (void)state;
    assert_int_equal(virtio_rng_add(&vbus, &rng), 0);
    assert_int_equal(virtio_bus_start(&vbus, false), 0);
    driver_init(&rng.vdev);
    virtio_bus_pause(&vbus);
    put_desc(DESC, 0, 0x10000, 64, 2, 0);
    make_avail(0);
    mmio_w(VIRTIO_BAR_NOTIFY, 0, 2);
    usleep(50000);
    assert_int_equal(used_idx(), 0);                      /* nothing taken while paused */
    virtio_bus_resume(&vbus);
    wait_used(1);
    virtio_bus_stop(&vbus);
    free(rng.chain);
}

/* BAR sizing (all ones, read back, restore) and moving BAR0: the registers
 * follow the BAR; while it reads all ones nothing decodes. */
static void test_bar_sizing(void **state)
{
    static struct virtio_rng rng;
    uint32_t cfg_addr;

    (void)state;
    assert_int_equal(virtio_rng_add(&vbus, &rng), 0);
    cfg_addr = 0x80000000U | (rng.vdev.slot << 11);
    bar = rng.vdev.bar_addr;
    assert_int_equal(bar, VIRTIO_BAR_BASE);
    assert_int_equal(pci_cfg_read(&pci, cfg_addr | 0x10, 0, 4), (uint32_t)bar | 4);
    assert_int_equal(pci_cfg_read(&pci, cfg_addr | 0x34, 0, 1), 0x40);   /* caps */
    assert_int_equal(pci_cfg_read(&pci, cfg_addr | 0x04, 2, 2) & 0x10, 0x10);
    pci_cfg_write(&pci, cfg_addr | 0x10, 0, 4, 0xffffffffU);
    pci_cfg_write(&pci, cfg_addr | 0x14, 0, 4, 0xffffffffU);
    assert_int_equal(pci_cfg_read(&pci, cfg_addr | 0x10, 0, 4), 0xffffc004U);
    assert_int_equal(pci_cfg_read(&pci, cfg_addr | 0x14, 0, 4), 0xffffffffU);
    assert_int_equal(rng.vdev.bar_addr, 0);
    assert_false(virtio_mmio(&vbus, VIRTIO_BAR_BASE, (uint8_t[8]){ 0 }, 4, false));
    pci_cfg_write(&pci, cfg_addr | 0x10, 0, 4, 0xd0000000U);
    pci_cfg_write(&pci, cfg_addr | 0x14, 0, 4, 0);
    assert_int_equal(rng.vdev.bar_addr, 0xd0000000U);
    bar = 0xd0000000U;
    assert_int_equal(mmio_r(0x12, 2), 1);                 /* num_queues */
    pci_cfg_write(&pci, cfg_addr | 0x04, 0, 2, 0);         /* memory decoding off */
    assert_false(virtio_mmio(&vbus, bar + 0x12, (uint8_t[8]){ 0 }, 2, false));
    free(rng.chain);
}

static uint64_t irqfd_count(struct virtio_dev *v, unsigned vec)
{
    uint64_t n = 0;

    if (read(v->irqfd[vec], &n, sizeof(n)) != sizeof(n))
        return 0;
    return n;
}

static void rng_request(uint16_t head)
{
    put_desc(DESC, head, 0x10000, 64, 2, 0);
    make_avail(head);
    mmio_w(VIRTIO_BAR_NOTIFY, 0, 2);
    wait_used((uint16_t)(head + 1));
}

/* MSI-X: an unmasked vector fires its irqfd; a masked one sets its PBA bit
 * and fires on unmask; ISR stays clear. */
static void test_msix(void **state)
{
    static struct virtio_rng rng;
    struct virtio_dev *v = &rng.vdev;
    uint32_t cfg_addr;

    (void)state;
    assert_int_equal(virtio_rng_add(&vbus, &rng), 0);
    assert_int_equal(virtio_bus_start(&vbus, false), 0);
    cfg_addr = 0x80000000U | (v->slot << 11);
    pci_cfg_write(&pci, cfg_addr | 0x84, 2, 2, 0x8000);   /* MSI-X enable */
    driver_init(v);
    mmio_w(VIRTIO_BAR_MSIX_TABLE + 0, 0xfee00000U, 4);
    mmio_w(VIRTIO_BAR_MSIX_TABLE + 8, 0x41, 4);
    mmio_w(VIRTIO_BAR_MSIX_TABLE + 12, 0, 4);              /* unmask vector 0 */
    mmio_w(0x1a, 0, 2);                                    /* queue 0 -> vector 0 */
    assert_int_equal(mmio_r(0x1a, 2), 0);
    rng_request(0);
    usleep(20000);
    assert_int_equal(irqfd_count(v, 0), 1);
    assert_int_equal(mmio_r(VIRTIO_BAR_ISR, 1), 0);
    mmio_w(VIRTIO_BAR_MSIX_TABLE + 12, 1, 4);              /* mask */
    rng_request(1);
    usleep(20000);
    assert_int_equal(irqfd_count(v, 0), 0);
    assert_int_equal(mmio_r(VIRTIO_BAR_MSIX_PBA, 4) & 1, 1);
    mmio_w(VIRTIO_BAR_MSIX_TABLE + 12, 0, 4);              /* unmask: delivered */
    assert_int_equal(irqfd_count(v, 0), 1);
    assert_int_equal(mmio_r(VIRTIO_BAR_MSIX_PBA, 4) & 1, 0);
    virtio_bus_stop(&vbus);
    free(rng.chain);
}

/* The state section round-trips queue progress and MSI-X, and refuses a
 * section written for another device type. */
static void test_state_walk(void **state)
{
    static struct virtio_rng a, b;
    struct state_walker w, l;

    (void)state;
    assert_int_equal(virtio_rng_add(&vbus, &a), 0);
    assert_int_equal(virtio_rng_add(&vbus, &b), 0);
    a.vdev.status = 15;
    a.vdev.vq[0] = (struct virtqueue){ .mem = &mem, .max_size = 64, .size = QSIZE,
                                       .enabled = true, .msix_vector = 1, .desc_gpa = DESC,
                                       .avail_gpa = AVAIL, .used_gpa = USED,
                                       .last_avail = 7, .used_idx = 6 };
    a.vdev.msix[1] = (struct msix_entry){ 0xfee00000U, 0x42, 0 };
    walk_init_save(&w, 1);
    assert_int_equal(virtio_state_ops.walk(&w, &a.vdev), 0);
    walk_init_load(&l, w.buf, w.len, 1);
    assert_int_equal(virtio_state_ops.walk(&l, &b.vdev), 0);
    assert_int_equal(walk_finish(&l), 0);
    assert_int_equal(b.vdev.status, 15);
    assert_int_equal(b.vdev.vq[0].last_avail, 7);
    assert_int_equal(b.vdev.vq[0].used_idx, 6);
    assert_true(b.vdev.vq[0].enabled);
    assert_int_equal(b.vdev.msix[1].data, 0x42);
    b.vdev.type = VIRTIO_ID_BLK;                           /* another device */
    walk_init_load(&l, w.buf, w.len, 1);
    assert_int_not_equal(virtio_state_ops.walk(&l, &b.vdev), 0);
    a.vdev.vq[0].used_gpa = MEM_SIZE;                      /* rings outside RAM */
    b.vdev.type = VIRTIO_ID_RNG;
    walk_free(&w);
    walk_init_save(&w, 1);
    virtio_state_ops.walk(&w, &a.vdev);
    walk_init_load(&l, w.buf, w.len, 1);
    assert_int_not_equal(virtio_state_ops.walk(&l, &b.vdev), 0);
    walk_free(&w);
    free(a.chain);
    free(b.chain);
}

static char disk_path[64];

static void blk_req(uint16_t head, uint32_t type, uint64_t sector, uint64_t data,
                    uint32_t len, bool dev_writes)
{
    uint8_t hdr[16] = { 0 };
    unsigned base = head * 3;

    memcpy(hdr, &type, 4);
    memcpy(hdr + 8, &sector, 8);
    memcpy(mem.hva + 0x8000 + 16 * head, hdr, 16);
    put_desc(DESC, base, 0x8000 + 16 * head, 16, 1, (uint16_t)(base + 1));
    put_desc(DESC, base + 1, data, len, (uint16_t)(1 | (dev_writes ? 2 : 0)),
             (uint16_t)(base + 2));
    put_desc(DESC, base + 2, 0x9000 + head, 1, 2, 0);
    mem.hva[0x9000 + head] = 0xee;
    make_avail((uint16_t)base);
}

static void run_blk(bool readonly, struct virtio_blk *blk)
{
    struct disk_config cfg = { .readonly = readonly };
    int fd;

    snprintf(disk_path, sizeof(disk_path), "/tmp/ferry-test-blk-XXXXXX");
    fd = mkstemp(disk_path);
    assert_true(fd >= 0);
    for (unsigned i = 0; i < 8192; i++) {
        uint8_t b = (uint8_t)(i * 7);
        assert_int_equal(pwrite(fd, &b, 1, i), 1);
    }
    close(fd);
    snprintf(cfg.path, sizeof(cfg.path), "%s", disk_path);
    snprintf(cfg.serial, sizeof(cfg.serial), "SER1");
    assert_int_equal(virtio_blk_add(&vbus, blk, 0, &cfg), 0);
    assert_int_equal(blk->capacity, 16);
    assert_int_equal(virtio_bus_start(&vbus, false), 0);
    driver_init(&blk->vdev);
}

static void test_blk_rw(void **state)
{
    static struct virtio_blk blk;
    uint8_t buf[1024];
    int fd;

    (void)state;
    run_blk(false, &blk);
    blk_req(0, 0, 1, 0x10000, 1024, true);               /* read sectors 1..2 */
    mmio_w(VIRTIO_BAR_NOTIFY, 0, 2);
    wait_used(1);
    assert_int_equal(mem.hva[0x9000], 0);
    for (unsigned i = 0; i < 1024; i++)
        assert_int_equal(mem.hva[0x10000 + i], (uint8_t)((512 + i) * 7));
    memset(mem.hva + 0x20000, 0x5a, 512);
    blk_req(1, 1, 3, 0x20000, 512, false);               /* write sector 3 */
    blk_req(2, 8, 0, 0x30000, 20, true);                 /* GET_ID */
    blk_req(3, 0, 15, 0x10000, 1024, true);              /* read past the end */
    mmio_w(VIRTIO_BAR_NOTIFY, 0, 2);
    wait_used(4);
    assert_int_equal(mem.hva[0x9001], 0);
    assert_string_equal((char *)mem.hva + 0x30000, "SER1");
    assert_int_equal(mem.hva[0x9003], 1);                /* IOERR */
    fd = open(disk_path, O_RDONLY);
    assert_int_equal(pread(fd, buf, 512, 3 * 512), 512);
    close(fd);
    for (unsigned i = 0; i < 512; i++)
        assert_int_equal(buf[i], 0x5a);
    virtio_bus_stop(&vbus);
    virtio_blk_close(&blk);
    unlink(disk_path);
}

static void test_blk_readonly(void **state)
{
    static struct virtio_blk blk;

    (void)state;
    run_blk(true, &blk);
    assert_true(blk.vdev.features & (1ULL << 5));        /* VIRTIO_BLK_F_RO */
    memset(mem.hva + 0x20000, 0x5a, 512);
    blk_req(0, 1, 3, 0x20000, 512, false);
    mmio_w(VIRTIO_BAR_NOTIFY, 0, 2);
    wait_used(1);
    assert_int_equal(mem.hva[0x9000], 1);                /* IOERR */
    virtio_bus_stop(&vbus);
    virtio_blk_close(&blk);
    unlink(disk_path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_vq_simple, vq_setup, vq_teardown),
        cmocka_unit_test_setup_teardown(test_vq_loop, vq_setup, vq_teardown),
        cmocka_unit_test_setup_teardown(test_vq_out_of_range, vq_setup, vq_teardown),
        cmocka_unit_test_setup_teardown(test_vq_outside_ram, vq_setup, vq_teardown),
        cmocka_unit_test_setup_teardown(test_vq_indirect, vq_setup, vq_teardown),
        cmocka_unit_test_setup_teardown(test_vq_indirect_nested, vq_setup, vq_teardown),
        cmocka_unit_test_setup_teardown(test_vq_indirect_loop, vq_setup, vq_teardown),
        cmocka_unit_test_setup_teardown(test_vq_too_long, vq_setup, vq_teardown),
        cmocka_unit_test_setup_teardown(test_vq_order_and_index, vq_setup, vq_teardown),
        cmocka_unit_test_setup_teardown(test_vq_copy, vq_setup, vq_teardown),
        cmocka_unit_test_setup_teardown(test_rng, transport_setup, transport_teardown),
        cmocka_unit_test_setup_teardown(test_pause_quiesce, transport_setup, transport_teardown),
        cmocka_unit_test_setup_teardown(test_bar_sizing, transport_setup, transport_teardown),
        cmocka_unit_test_setup_teardown(test_msix, transport_setup, transport_teardown),
        cmocka_unit_test_setup_teardown(test_state_walk, transport_setup, transport_teardown),
        cmocka_unit_test_setup_teardown(test_blk_rw, transport_setup, transport_teardown),
        cmocka_unit_test_setup_teardown(test_blk_readonly, transport_setup, transport_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
