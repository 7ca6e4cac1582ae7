/*
 * virtio-pci modern transport and split virtqueues (polled), and the virtio CPU's
 * entry point: one PCI scan, then the blk test and the net responder.
 */
#include "virtio.h"

#define CAP_VENDOR      0x09
#define CFG_COMMON      1
#define CFG_NOTIFY      2
#define CFG_ISR         3
#define CFG_DEVICE      4

/* common configuration offsets */
#define C_DFSELECT      0x00
#define C_DF            0x04
#define C_GFSELECT      0x08
#define C_GF            0x0c
#define C_STATUS        0x14
#define C_QSELECT       0x16
#define C_QSIZE         0x18
#define C_QMSIX         0x1a
#define C_QENABLE       0x1c
#define C_QNOTIFY       0x1e
#define C_QDESC         0x20
#define C_QDRIVER       0x28
#define C_QDEVICE       0x30

#define S_ACK           1
#define S_DRIVER        2
#define S_DRIVER_OK     4
#define S_FEATURES_OK   8
#define S_FAILED        0x80

#define PAGE_2M         (2 * MIB)
#define MAX_MAPPED      16
#define VQ_POOL         8

struct vq_mem {
    struct vring_desc desc[VQ_MAX];
    u16 avail[3 + VQ_MAX];
    u32 used[2 + 2 * VQ_MAX] __aligned(8);
} __aligned(4096);

static struct vq_mem vq_pool[VQ_POOL] __noinit;
static u32 vq_pool_used;
static u64 mapped[MAX_MAPPED];
static u32 nmapped;

static inline u8 r8(volatile u8 *b, u32 o) { return *(volatile u8 *)(b + o); }
static inline u16 r16(volatile u8 *b, u32 o) { return *(volatile u16 *)(b + o); }
static inline u32 r32(volatile u8 *b, u32 o) { return *(volatile u32 *)(b + o); }
static inline void w8(volatile u8 *b, u32 o, u8 v) { *(volatile u8 *)(b + o) = v; }
static inline void w16(volatile u8 *b, u32 o, u16 v) { *(volatile u16 *)(b + o) = v; }
static inline void w32(volatile u8 *b, u32 o, u32 v) { *(volatile u32 *)(b + o) = v; }

static void w64(volatile u8 *b, u32 o, u64 v)
{
    w32(b, o, (u32)v);
    w32(b, o + 4, (u32)(v >> 32));
}

/* Maps [pa, pa + len) uncached for CPL3, one 2 MiB page at a time, each once. */
static bool mmio_map(u64 pa, u64 len)
{
    for (u64 p = pa & ~(PAGE_2M - 1); p < pa + len; p += PAGE_2M) {
        bool done = false;

        for (u32 i = 0; i < nmapped; i++)
            done |= mapped[i] == p;
        if (done)
            continue;
        if (nmapped == MAX_MAPPED || sys_call1(SYS_MAP_UC, p) != 0)
            return false;
        mapped[nmapped++] = p;
    }
    return true;
}

/* One virtio capability: the address of its structure (BAR + offset), mapped. */
static volatile u8 *virtio_cap_map(const struct pci_dev *p, u8 cap, u64 *bars)
{
    u8 bar = pci_read8(p, cap + 4);
    u32 off = pci_read32(p, cap + 8), len = pci_read32(p, cap + 12);

    if (bar > 5)
        return NULL;
    if (!bars[bar]) {
        bars[bar] = pci_bar(p, bar);
        if (cfg.boot_trace)
            con_printf("TRACE virtio 00:%02x.%x bar%u=0x%lx\n", p->slot, p->func, bar, bars[bar]);
    }
    if (!bars[bar] || !mmio_map(bars[bar] + off, MAX(len, 1)))
        return NULL;
    return (volatile u8 *)(bars[bar] + off);
}

static bool virtio_caps(struct virtio_dev *v, const struct pci_dev *p)
{
    u64 bars[6] = { 0 };
    u8 off = pci_read8(p, 0x34) & 0xfc;

    for (u32 n = 0; off && n < 48; n++) {
        u32 hdr = pci_read32(p, off);
        u8 type = (u8)(hdr >> 24);
        volatile u8 **slot = type == CFG_COMMON ? &v->common : type == CFG_NOTIFY ?
                             &v->notify_base : type == CFG_ISR ? &v->isr :
                             type == CFG_DEVICE ? &v->devcfg : NULL;

        if ((hdr & 0xff) == CAP_VENDOR && slot && !*slot) {
            *slot = virtio_cap_map(p, off, bars);
            if (type == CFG_NOTIFY)
                v->notify_mul = pci_read32(p, off + 16);
        }
        off = (hdr >> 8) & 0xfc;
    }
    return v->common && v->notify_base && v->devcfg;
}

/* Reset, acknowledge, negotiate (VERSION_1 required). 0, or -1 with *why set. */
int virtio_open(struct virtio_dev *v, const struct pci_dev *p, u64 want, const char **why)
{
    u64 offered;

    memset(v, 0, sizeof(*v));
    v->pci = *p;
    pci_write16(p, 0x04, pci_read16(p, 0x04) | 0x6);     /* memory space, bus master */
    if (!virtio_caps(v, p)) {
        *why = "caps";
        return -1;
    }
    w8(v->common, C_STATUS, 0);
    for (u32 i = 0; r8(v->common, C_STATUS); i++) {
        if (i == 1000) {
            *why = "reset";
            return -1;
        }
        cpu_relax();
    }
    w8(v->common, C_STATUS, S_ACK | S_DRIVER);
    w32(v->common, C_DFSELECT, 0);
    offered = r32(v->common, C_DF);
    w32(v->common, C_DFSELECT, 1);
    offered |= (u64)r32(v->common, C_DF) << 32;
    v->features = offered & (want | (1ULL << VIRTIO_F_VERSION_1));
    if (!virtio_has(v, VIRTIO_F_VERSION_1)) {
        *why = "no-version-1";
        goto fail;
    }
    w32(v->common, C_GFSELECT, 0);
    w32(v->common, C_GF, (u32)v->features);
    w32(v->common, C_GFSELECT, 1);
    w32(v->common, C_GF, (u32)(v->features >> 32));
    w8(v->common, C_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK);
    if (!(r8(v->common, C_STATUS) & S_FEATURES_OK)) {
        *why = "features";
        goto fail;
    }
    return 0;
fail:
    w8(v->common, C_STATUS, S_FAILED);
    return -1;
}

/* Sets up queue `index` with up to `max` entries (a power of two). */
int virtio_queue(struct virtio_dev *v, struct vq *q, u16 index, u16 max, const char **why)
{
    struct vq_mem *m;
    u16 size;

    w16(v->common, C_QSELECT, index);
    size = MIN(r16(v->common, C_QSIZE), MIN(max, VQ_MAX));
    while (size & (size - 1))
        size &= (u16)(size - 1);
    if (!size || vq_pool_used == VQ_POOL) {
        *why = "queue";
        return -1;
    }
    m = &vq_pool[vq_pool_used++];
    memset(m, 0, sizeof(*m));
    *q = (struct vq){ .size = size, .index = index, .desc = m->desc, .avail = m->avail,
                      .used = m->used };
    q->avail[0] = 1;            /* VRING_AVAIL_F_NO_INTERRUPT: we poll */
    w16(v->common, C_QSIZE, size);
    w16(v->common, C_QMSIX, 0xffff);
    w64(v->common, C_QDESC, (u64)m->desc);
    w64(v->common, C_QDRIVER, (u64)m->avail);
    w64(v->common, C_QDEVICE, (u64)m->used);
    q->notify = (volatile u16 *)(v->notify_base + r16(v->common, C_QNOTIFY) * v->notify_mul);
    w16(v->common, C_QENABLE, 1);
    return 0;
}

void virtio_ready(struct virtio_dev *v)
{
    w8(v->common, C_STATUS, S_ACK | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK);
}

/*
 * MSI-X table entry 0 -> `vector` on `apic`, used by queue q (before virtio_ready); the
 * queue then asks for interrupts. False if the device has no MSI-X or refuses the vector.
 */
bool virtio_msix_enable(struct virtio_dev *v, struct vq *q, u8 vector, u32 apic)
{
    u8 cap = v->pci.msix_cap;
    u32 table;
    u64 bar;

    if (!cap)
        return false;
    table = pci_read32(&v->pci, cap + 4);
    bar = pci_bar(&v->pci, table & 7);
    if (!bar || !mmio_map(bar + (table & ~7u), 16))
        return false;
    v->msix_table = (volatile u8 *)(bar + (table & ~7u));
    w32(v->msix_table, 0, 0xfee00000u | (apic << 12));
    w32(v->msix_table, 4, 0);
    w32(v->msix_table, 8, vector);
    w32(v->msix_table, 12, 0);                              /* unmasked */
    pci_write16(&v->pci, cap + 2, (u16)((pci_read16(&v->pci, cap + 2) | 0x8000) & ~0x4000));
    w16(v->common, C_QSELECT, q->index);
    w16(v->common, C_QMSIX, 0);
    if (r16(v->common, C_QMSIX) != 0)
        return false;
    q->avail[0] = 0;
    return true;
}

/* Back to pure polling: no interrupts asked for, the vector masked. */
void virtio_msix_mask(struct virtio_dev *v, struct vq *q)
{
    q->avail[0] = 1;
    if (v->msix_table)
        w32(v->msix_table, 12, 1);
}

/* Makes the chain at `head` available (published by vq_kick). */
void vq_push(struct vq *q, u16 head)
{
    q->avail[2 + (q->avail_idx & (q->size - 1))] = head;
    q->avail_idx++;
}

/* Publishes pushed chains and notifies the device unless it asked not to be. */
void vq_kick(struct vq *q)
{
    __atomic_store_n(&q->avail[1], q->avail_idx, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);    /* idx store before the flags load */
    if (!(q->used[0] & 1))                      /* VRING_USED_F_NO_NOTIFY */
        *q->notify = q->index;
}

bool vq_pop(struct vq *q, u32 *id, u32 *len)
{
    u16 idx = (u16)(__atomic_load_n(&q->used[0], __ATOMIC_ACQUIRE) >> 16);
    u32 slot;

    if (idx == q->used_seen)
        return false;
    slot = q->used_seen++ & (q->size - 1);
    *id = q->used[1 + 2 * slot];         /* flags and idx take the first word */
    *len = q->used[2 + 2 * slot];
    return true;
}

/* ---- the virtio CPU ---- */

static bool virtio_started;

static void virtio_scan(void)
{
    static struct pci_dev devs[PCI_MAX_DEVS];
    u32 n = pci_scan(devs, PCI_MAX_DEVS);

    for (u32 i = 0; i < n; i++) {
        const struct pci_dev *d = &devs[i];

        if (d->vendor != 0x1af4 || d->device < 0x1040 || d->device > 0x107f)
            continue;
        con_printf("VIRTIO 00:%02x.%x %x msix=%u\n", d->slot, d->func, d->device,
                   d->msix_cap ? 1 : 0);
        if (d->device == VIRTIO_DEV_BLK)
            vblk_probe(d);
        else if (d->device == VIRTIO_DEV_NET && cfg.net)
            vnet_probe(d);
    }
}

/* True if there is more to do at once; else *next may be lowered. */
bool virtio_step(u64 now, u64 *next)
{
    bool busy = false;

    if (!virtio_started) {
        virtio_started = true;
        virtio_scan();
        vblk_start();
        return true;
    }
    busy |= vnet_step(now, next);
    busy |= vblk_step(now, next);
    return busy;
}
