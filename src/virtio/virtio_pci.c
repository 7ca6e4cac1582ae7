/* virtio-pci transport: PCI config space with the virtio capabilities and
 * MSI-X, the BAR0 registers (common config, ISR, device config, notify,
 * MSI-X table and PBA), interrupts (MSI-X via GSI routes + irqfd, or INTx),
 * queue notifications via ioeventfd. The worker thread, pause/resume and
 * the state walk are in virtio_dev.c. */
#include "virtio/virtio_internal.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stddef.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "devices/irq.h"
#include "util/log.h"

#define PCI_VENDOR_VIRTIO 0x1af4
#define CAP_VIRTIO        0x09
#define CAP_MSIX          0x11
#define CAP_COMMON        0x40
#define CAP_NOTIFY        0x50
#define CAP_ISR           0x64
#define CAP_DEVICE        0x74
#define CAP_MSIX_OFF      0x84
#define MSIX_CTRL         (CAP_MSIX_OFF + 2)
#define MSIX_ENABLE       0x8000
#define MSIX_FMASK        0x4000
#define COMMON_LEN        0x38

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

static void cap_virtio(uint8_t *cfg, unsigned at, unsigned next, uint8_t type,
                       uint32_t off, uint32_t len, uint8_t caplen)
{
    cfg[at] = CAP_VIRTIO;
    cfg[at + 1] = (uint8_t)next;
    cfg[at + 2] = caplen;
    cfg[at + 3] = type;
    cfg[at + 4] = 0;                 /* BAR0 */
    put32(cfg + at + 8, off);
    put32(cfg + at + 12, len);
}

/* IDs, class, the 64-bit BAR0, the capability chain and MSI-X. */
static void virtio_pci_config(struct virtio_dev *v)
{
    struct pci_device *d = &v->pci;
    uint8_t *c = d->cfg;
    uint64_t bar = v->bar_addr | 0x4;       /* 64-bit memory, not prefetchable */

    pci_dev_init(d, PCI_VENDOR_VIRTIO, (uint16_t)(0x1040 + v->type), v->class_code, v->name);
    put16(c + 0x04, 0x0006);                 /* memory decoding + bus master on */
    put16(c + 0x06, 0x0010);                 /* capability list */
    put16(c + 0x2c, PCI_VENDOR_VIRTIO);
    put16(c + 0x2e, 0x40);
    memcpy(c + 0x10, &bar, 8);
    put32(d->wmask + 0x10, ~(uint32_t)(VIRTIO_BAR_SIZE - 1) & ~0xfU);
    put32(d->wmask + 0x14, 0xffffffffU);
    c[0x34] = CAP_COMMON;
    c[0x3c] = (uint8_t)v->intx_gsi;
    c[0x3d] = 1;                             /* INTA# */
    cap_virtio(c, CAP_COMMON, CAP_NOTIFY, 1, VIRTIO_BAR_COMMON, COMMON_LEN, 16);
    cap_virtio(c, CAP_NOTIFY, CAP_ISR, 2, VIRTIO_BAR_NOTIFY,
               VIRTIO_NOTIFY_MULT * VIRTIO_MAX_QUEUES, 20);
    put32(c + CAP_NOTIFY + 16, VIRTIO_NOTIFY_MULT);
    cap_virtio(c, CAP_ISR, CAP_DEVICE, 3, VIRTIO_BAR_ISR, 1, 16);
    cap_virtio(c, CAP_DEVICE, CAP_MSIX_OFF, 4, VIRTIO_BAR_DEVCFG, 0x1000, 16);
    c[CAP_MSIX_OFF] = CAP_MSIX;
    put16(c + MSIX_CTRL, VIRTIO_MSIX_VECTORS - 1);
    put32(c + CAP_MSIX_OFF + 4, VIRTIO_BAR_MSIX_TABLE);
    put32(c + CAP_MSIX_OFF + 8, VIRTIO_BAR_MSIX_PBA);
    d->wmask[MSIX_CTRL + 1] = 0xc0;          /* enable, function mask */
}

static uint16_t msix_ctrl(const struct virtio_dev *v)
{
    uint16_t ctrl;

    memcpy(&ctrl, v->pci.cfg + MSIX_CTRL, 2);
    return ctrl;
}

bool virtio_msix_enabled(const struct virtio_dev *v)
{
    return msix_ctrl(v) & MSIX_ENABLE;
}

static bool msix_masked(const struct virtio_dev *v, unsigned vec)
{
    return (msix_ctrl(v) & MSIX_FMASK) || (v->msix[vec].ctrl & 1);
}

/* ---- GSI routes: the PC's fixed ones plus one MSI route per programmed vector */

int virtio_routes_update(struct virtio_bus *bus)
{
    enum { MAX = IRQ_PC_ROUTES + VIRTIO_MAX_DEVICES * VIRTIO_MSIX_VECTORS };
    static struct {
        struct kvm_irq_routing hdr;
        struct kvm_irq_routing_entry e[MAX];
    } r;
    int ret = 0;

    if (bus->vm_fd < 0)
        return 0;
    pthread_mutex_lock(&bus->route_lock);
    memset(&r, 0, sizeof(r));
    r.hdr.nr = irq_routes_pc(r.e);
    for (unsigned i = 0; i < bus->n; i++)
        for (unsigned vec = 0; vec < VIRTIO_MSIX_VECTORS; vec++) {
            const struct msix_entry *m = &bus->dev[i]->msix[vec];
            struct kvm_irq_routing_entry *e = &r.e[r.hdr.nr];

            if (!m->addr)
                continue;
            *e = (struct kvm_irq_routing_entry){ .gsi = bus->dev[i]->gsi[vec],
                                                 .type = KVM_IRQ_ROUTING_MSI };
            e->u.msi.address_lo = (uint32_t)m->addr;
            e->u.msi.address_hi = (uint32_t)(m->addr >> 32);
            e->u.msi.data = m->data;
            r.hdr.nr++;
        }
    if (ioctl(bus->vm_fd, KVM_SET_GSI_ROUTING, &r) < 0) {
        ret = -errno;
        log_err("virtio: KVM_SET_GSI_ROUTING: %s", strerror(errno));
    }
    pthread_mutex_unlock(&bus->route_lock);
    return ret;
}

int virtio_irqfds_assign(struct virtio_dev *v)
{
    for (unsigned vec = 0; vec < VIRTIO_MSIX_VECTORS; vec++) {
        struct kvm_irqfd irqfd = { .fd = (uint32_t)v->irqfd[vec], .gsi = v->gsi[vec] };

        if (v->bus->vm_fd < 0 || v->irqfd_on[vec])
            continue;
        if (ioctl(v->bus->vm_fd, KVM_IRQFD, &irqfd) < 0) {
            log_err("%s: KVM_IRQFD gsi %u: %s", v->name, v->gsi[vec], strerror(errno));
            return -errno;
        }
        v->irqfd_on[vec] = true;
    }
    return 0;
}

/* ---- interrupts */

static void msix_fire(struct virtio_dev *v, unsigned vec)
{
    uint64_t one = 1;

    v->interrupts++;
    if (v->irqfd[vec] >= 0 && write(v->irqfd[vec], &one, sizeof(one)) < 0)
        log_warn("%s: irqfd write: %s", v->name, strerror(errno));
}

static void intx_update(struct virtio_dev *v)
{
    struct irq_line line = { v->bus->vm_fd, v->intx_gsi };

    irq_line_set(&line, v->isr ? 1 : 0);
}

/* Caller holds v->lock. */
void virtio_signal(struct virtio_dev *v, uint16_t vec, uint8_t isr_bit)
{
    if (!virtio_msix_enabled(v)) {
        v->isr |= isr_bit;
        v->interrupts++;
        intx_update(v);
        return;
    }
    if (vec >= VIRTIO_MSIX_VECTORS)
        return;
    if (msix_masked(v, vec))
        v->msix_pending |= 1ULL << vec;
    else
        msix_fire(v, vec);
}

/* Vectors that became unmasked deliver what they held back. */
static void msix_flush_pending(struct virtio_dev *v)
{
    for (unsigned vec = 0; vec < VIRTIO_MSIX_VECTORS && virtio_msix_enabled(v); vec++)
        if ((v->msix_pending & (1ULL << vec)) && !msix_masked(v, vec)) {
            v->msix_pending &= ~(1ULL << vec);
            msix_fire(v, vec);
        }
}

void virtio_dev_notify(struct virtio_dev *v, unsigned q)
{
    if (q >= v->nqueues || !vq_want_interrupt(&v->vq[q]))
        return;
    pthread_mutex_lock(&v->lock);
    virtio_signal(v, v->vq[q].msix_vector, 1);
    pthread_mutex_unlock(&v->lock);
}

void virtio_dev_config_changed(struct virtio_dev *v)
{
    pthread_mutex_lock(&v->lock);
    v->config_generation++;
    virtio_signal(v, v->msix_config, 2);
    pthread_mutex_unlock(&v->lock);
}

/* ---- notify ioeventfds follow BAR0 */

static int ioeventfd_set(struct virtio_dev *v, unsigned q, uint64_t base, bool on)
{
    struct kvm_ioeventfd io = {
        .addr = base + VIRTIO_BAR_NOTIFY + VIRTIO_NOTIFY_MULT * q,
        .len = 2,
        .fd = v->kick_fd[q],
        .flags = on ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN,
    };

    if (v->bus->vm_fd < 0)
        return 0;
    return ioctl(v->bus->vm_fd, KVM_IOEVENTFD, &io) < 0 ? -errno : 0;
}

static uint64_t bar_decoded(const struct virtio_dev *v)
{
    uint64_t bar;
    uint16_t cmd;

    memcpy(&bar, v->pci.cfg + 0x10, 8);
    memcpy(&cmd, v->pci.cfg + 0x04, 2);
    bar &= ~0xfULL;
    /* Sizing writes all ones; such an address is not a mapping. */
    if (!(cmd & 2) || bar == 0 || bar >= (1ULL << 46))
        return 0;
    return bar;
}

/* Moves the notify ioeventfds to where the guest put BAR0 (or removes them). */
void virtio_bar_remap(struct virtio_dev *v)
{
    uint64_t now = bar_decoded(v), old = __atomic_load_n(&v->bar_addr, __ATOMIC_ACQUIRE);

    if (now == old && (!now || v->ioeventfd_on[0] || !v->nqueues))
        return;
    for (unsigned q = 0; q < v->nqueues; q++)
        if (v->ioeventfd_on[q]) {
            ioeventfd_set(v, q, old, false);
            v->ioeventfd_on[q] = false;
        }
    __atomic_store_n(&v->bar_addr, now, __ATOMIC_RELEASE);
    for (unsigned q = 0; q < v->nqueues && now; q++) {
        int ret = ioeventfd_set(v, q, now, true);
        v->ioeventfd_on[q] = ret == 0;
        if (ret < 0)   /* the MMIO exit path still delivers the kick */
            log_warn("%s: KVM_IOEVENTFD queue %u: %s", v->name, q, strerror(-ret));
    }
}

static void virtio_pci_on_write(struct pci_device *d, unsigned reg, unsigned size)
{
    struct virtio_dev *v = (struct virtio_dev *)((char *)d - offsetof(struct virtio_dev, pci));

    pthread_mutex_lock(&v->lock);
    if (reg < 0x18 && reg + size > 0x04)
        virtio_bar_remap(v);
    if (reg < MSIX_CTRL + 2 && reg + size > MSIX_CTRL) {
        virtio_routes_update(v->bus);
        msix_flush_pending(v);
    }
    pthread_mutex_unlock(&v->lock);
}

/* ---- BAR0: common configuration */

static void common_image(struct virtio_dev *v, uint8_t *img)
{
    uint64_t feat = v->features | (1ULL << VIRTIO_F_VERSION_1);
    unsigned qs = v->queue_select;
    struct virtqueue *vq = qs < v->nqueues ? &v->vq[qs] : NULL;

    memset(img, 0, COMMON_LEN);
    put32(img + 0x00, v->dfselect);
    put32(img + 0x04, v->dfselect < 2 ? (uint32_t)(feat >> (32 * v->dfselect)) : 0);
    put32(img + 0x08, v->gfselect);
    put32(img + 0x0c, v->gfselect < 2 ? (uint32_t)(v->driver_features >> (32 * v->gfselect)) : 0);
    put16(img + 0x10, v->msix_config);
    put16(img + 0x12, (uint16_t)v->nqueues);
    img[0x14] = v->status;
    img[0x15] = v->config_generation;
    put16(img + 0x16, v->queue_select);
    if (!vq)
        return;                      /* a queue that does not exist has size 0 */
    put16(img + 0x18, vq->size);
    put16(img + 0x1a, vq->msix_vector);
    put16(img + 0x1c, vq->enabled);
    put16(img + 0x1e, (uint16_t)qs);
    memcpy(img + 0x20, &vq->desc_gpa, 8);
    memcpy(img + 0x28, &vq->avail_gpa, 8);
    memcpy(img + 0x30, &vq->used_gpa, 8);
}

static void set_addr_half(uint64_t *a, unsigned half, uint32_t val)
{
    *a = half ? ((*a & 0xffffffffULL) | ((uint64_t)val << 32))
              : ((*a & ~0xffffffffULL) | val);
}

static void queue_enable(struct virtio_dev *v, struct virtqueue *vq)
{
    if (vq->enabled)
        return;
    if (!vq_valid(vq)) {
        virtio_broken_locked(v, "queue enabled with a bad size or rings outside RAM");
        return;
    }
    vq->enabled = true;
}

static void queue_write(struct virtio_dev *v, unsigned off, uint32_t val)
{
    struct virtqueue *vq = v->queue_select < v->nqueues ? &v->vq[v->queue_select] : NULL;

    if (!vq)
        return;
    if (off == 0x1a) {
        vq->msix_vector = (uint16_t)val;
        return;
    }
    if (vq->enabled)
        return;      /* an enabled queue's size and rings are read-only */
    if (off == 0x18)
        vq->size = (uint16_t)val;
    else if (off == 0x1c && val == 1)
        queue_enable(v, vq);
    else if (off >= 0x20 && off < 0x38)
        set_addr_half(off < 0x28 ? &vq->desc_gpa : off < 0x30 ? &vq->avail_gpa : &vq->used_gpa,
                      (off / 4) & 1, val);
}

static void features_write(struct virtio_dev *v, uint32_t val)
{
    if (v->gfselect >= 2 || (v->status & VIRTIO_STATUS_FEATURES_OK))
        return;
    set_addr_half(&v->driver_features, v->gfselect, val);
}

/* FEATURES_OK sticks only for a subset of what was offered, with VERSION_1. */
static void status_write(struct virtio_dev *v, uint8_t val)
{
    uint64_t offered = v->features | (1ULL << VIRTIO_F_VERSION_1);
    uint8_t old = v->status;

    if ((val & VIRTIO_STATUS_FEATURES_OK) && !(old & VIRTIO_STATUS_FEATURES_OK) &&
        ((v->driver_features & ~offered) ||
         !(v->driver_features & (1ULL << VIRTIO_F_VERSION_1))))
        val &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK;
    v->status = (uint8_t)(val | (old & VIRTIO_STATUS_NEEDS_RESET));
    if ((val & VIRTIO_STATUS_DRIVER_OK) && !(old & VIRTIO_STATUS_DRIVER_OK))
        virtio_worker_wake(v, true);
}

static void common_write(struct virtio_dev *v, unsigned off, unsigned len, uint32_t val)
{
    switch (off) {
    case 0x00: v->dfselect = val; break;
    case 0x08: v->gfselect = val; break;
    case 0x0c: features_write(v, val); break;
    case 0x10: v->msix_config = (uint16_t)val; break;
    case 0x14: status_write(v, (uint8_t)val); break;
    case 0x16: v->queue_select = (uint16_t)val; break;
    default: queue_write(v, off, val); break;
    }
}

/* ---- BAR0: MSI-X table and PBA */

static void msix_table_write(struct virtio_dev *v, unsigned off, uint32_t val)
{
    unsigned vec = off / 16, field = off % 16;
    struct msix_entry *m = &v->msix[vec];
    bool was_masked = msix_masked(v, vec);

    if (field == 0)
        m->addr = (m->addr & ~0xffffffffULL) | val;
    else if (field == 4)
        m->addr = (m->addr & 0xffffffffULL) | ((uint64_t)val << 32);
    else if (field == 8)
        m->data = val;
    else
        m->ctrl = val & 1;
    if (field < 12 ? !was_masked : (was_masked && !msix_masked(v, vec)))
        virtio_routes_update(v->bus);
    msix_flush_pending(v);
}

static uint32_t msix_table_read(struct virtio_dev *v, unsigned off)
{
    const struct msix_entry *m = &v->msix[off / 16];

    switch (off % 16) {
    case 0: return (uint32_t)m->addr;
    case 4: return (uint32_t)(m->addr >> 32);
    case 8: return m->data;
    default: return m->ctrl;
    }
}

/* ---- BAR0 dispatch */

static void bar_read(struct virtio_dev *v, unsigned off, uint8_t *data, unsigned len)
{
    uint8_t img[COMMON_LEN];
    uint32_t val;

    memset(data, 0, len);
    if (off < COMMON_LEN && off + len <= COMMON_LEN) {
        common_image(v, img);
        memcpy(data, img + off, len);
    } else if (off == VIRTIO_BAR_ISR) {
        data[0] = v->isr;            /* reading ISR acknowledges it */
        v->isr = 0;
        intx_update(v);
    } else if (off >= VIRTIO_BAR_DEVCFG && off - VIRTIO_BAR_DEVCFG + len <= v->config_len) {
        memcpy(data, (uint8_t *)v->config + off - VIRTIO_BAR_DEVCFG, len);
    } else if (off >= VIRTIO_BAR_MSIX_TABLE && off + len <= VIRTIO_BAR_MSIX_TABLE +
               16 * VIRTIO_MSIX_VECTORS && len == 4 && !(off & 3)) {
        val = msix_table_read(v, off - VIRTIO_BAR_MSIX_TABLE);
        memcpy(data, &val, 4);
    } else if (off >= VIRTIO_BAR_MSIX_PBA && off + len <= VIRTIO_BAR_MSIX_PBA + 8) {
        memcpy(data, (uint8_t *)&v->msix_pending + (off - VIRTIO_BAR_MSIX_PBA), len);
    }
}

static void bar_write(struct virtio_dev *v, unsigned off, const uint8_t *data, unsigned len)
{
    uint32_t val = 0;

    if (len == 8 && !(off & 7) && off < VIRTIO_BAR_DEVCFG) {
        bar_write(v, off, data, 4);      /* 64-bit registers as two halves */
        bar_write(v, off + 4, data + 4, 4);
        return;
    }
    if (len > 4)
        return;
    memcpy(&val, data, len);
    if (off < COMMON_LEN)
        common_write(v, off, len, val);
    else if (off >= VIRTIO_BAR_DEVCFG && off - VIRTIO_BAR_DEVCFG + len <= v->config_len &&
             v->ops->cfg_write)
        v->ops->cfg_write(v, off - VIRTIO_BAR_DEVCFG, data, len);
    else if (off >= VIRTIO_BAR_MSIX_TABLE && off < VIRTIO_BAR_MSIX_TABLE +
             16 * VIRTIO_MSIX_VECTORS && len == 4 && !(off & 3))
        msix_table_write(v, off - VIRTIO_BAR_MSIX_TABLE, val);
}

static void notify_write(struct virtio_dev *v, unsigned off)
{
    unsigned q = (off - VIRTIO_BAR_NOTIFY) / VIRTIO_NOTIFY_MULT;
    uint64_t one = 1;

    if (q < v->nqueues && write(v->kick_fd[q], &one, sizeof(one)) < 0)
        log_warn("%s: kick eventfd: %s", v->name, strerror(errno));
}

bool virtio_mmio(struct virtio_bus *bus, uint64_t addr, uint8_t *data, unsigned len,
                 bool write)
{
    for (unsigned i = 0; i < bus->n; i++) {
        struct virtio_dev *v = bus->dev[i];
        uint64_t base = __atomic_load_n(&v->bar_addr, __ATOMIC_ACQUIRE);
        unsigned off = (unsigned)(addr - base);

        if (!base || addr < base || addr - base >= VIRTIO_BAR_SIZE)
            continue;
        if (write && off >= VIRTIO_BAR_NOTIFY && off < VIRTIO_BAR_MSIX_TABLE) {
            notify_write(v, off);    /* no lock: as the ioeventfd path */
            return true;
        }
        if (write && off == 0x14 && len == 1 && data[0] == 0) {
            virtio_dev_reset(v);
            return true;
        }
        pthread_mutex_lock(&v->lock);
        if (write)
            bar_write(v, off, data, len);
        else
            bar_read(v, off, data, len);
        pthread_mutex_unlock(&v->lock);
        return true;
    }
    return false;
}

void virtio_pci_setup(struct virtio_dev *v)
{
    virtio_pci_config(v);
    v->pci.on_write = virtio_pci_on_write;
}
