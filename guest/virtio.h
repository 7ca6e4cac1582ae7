/*
 * Polled virtio-pci (modern, 1.x) drivers at CPL3: PCI config through ports 0xcf8/0xcfc,
 * BARs mapped uncached by a system call, split virtqueues in identity-mapped memory
 * (a pointer is its guest-physical address), completions polled. See guest/README.md.
 */
#ifndef VIRTIO_H
#define VIRTIO_H

#include "user.h"

/* ---- pci.c ---- */
#define PCI_MAX_DEVS    32
struct pci_dev {
    u8 slot, func;
    u16 vendor, device;
    u8 msix_cap;                /* config offset of the MSI-X capability, 0 = none */
};
u32 pci_read32(const struct pci_dev *d, u8 off);
void pci_write32(const struct pci_dev *d, u8 off, u32 v);
u8 pci_read8(const struct pci_dev *d, u8 off);
u16 pci_read16(const struct pci_dev *d, u8 off);
void pci_write16(const struct pci_dev *d, u8 off, u16 v);
u32 pci_scan(struct pci_dev *out, u32 max);
u64 pci_bar(const struct pci_dev *d, u32 bar);

/* ---- virtio.c: transport and split virtqueues ---- */
#define VIRTIO_DEV_NET      0x1041
#define VIRTIO_DEV_BLK      0x1042
#define VIRTIO_F_VERSION_1  32

struct vring_desc {
    u64 addr;
    u32 len;
    u16 flags;
    u16 next;
};
#define VRING_DESC_F_NEXT   1
#define VRING_DESC_F_WRITE  2

#define VQ_MAX      256
struct vq {
    u16 size, index;
    u16 avail_idx;              /* driver's next avail index */
    u16 used_seen;              /* used entries consumed */
    struct vring_desc *desc;
    volatile u16 *avail;        /* flags, idx, ring[size] */
    volatile u32 *used;         /* flags|idx, then {id, len} pairs */
    volatile u16 *notify;
};

struct virtio_dev {
    struct pci_dev pci;
    volatile u8 *common, *isr, *devcfg;
    volatile u8 *notify_base;
    u32 notify_mul;
    u64 features;               /* negotiated */
    volatile u8 *msix_table;    /* set by virtio_msix_enable() */
};

int virtio_open(struct virtio_dev *v, const struct pci_dev *p, u64 want, const char **why);
int virtio_queue(struct virtio_dev *v, struct vq *q, u16 index, u16 max, const char **why);
void virtio_ready(struct virtio_dev *v);
bool virtio_msix_enable(struct virtio_dev *v, struct vq *q, u8 vector, u32 apic);
void virtio_msix_mask(struct virtio_dev *v, struct vq *q);
void vq_push(struct vq *q, u16 head);
void vq_kick(struct vq *q);
bool vq_pop(struct vq *q, u32 *id, u32 *len);
static inline bool virtio_has(const struct virtio_dev *v, u32 bit)
{
    return (v->features >> bit) & 1;
}

/* workload.c: the virtio CPU's other duties, run while a driver waits */
extern u32 virtio_cpu;
void worker_yield(void);

static inline u64 virtio_now(void)
{
    return pvclock_ns(&pvclock[virtio_cpu], true);
}

/* vblk.c */
void vblk_probe(const struct pci_dev *p);
void vblk_start(void);
bool vblk_step(u64 now, u64 *next);

/* vnet.c */
void vnet_probe(const struct pci_dev *p);
bool vnet_step(u64 now, u64 *next);

/* virtio.c: entry from the virtio CPU's worker loop */
bool virtio_step(u64 now, u64 *next);

#endif
