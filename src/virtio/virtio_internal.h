/* Shared between the transport's two files (virtio_pci.c, virtio_dev.c). */
#ifndef FERRY_VIRTIO_VIRTIO_INTERNAL_H
#define FERRY_VIRTIO_VIRTIO_INTERNAL_H

#include "virtio/virtio.h"

void virtio_pci_setup(struct virtio_dev *v);
bool virtio_msix_enabled(const struct virtio_dev *v);
int virtio_routes_update(struct virtio_bus *bus);
int virtio_irqfds_assign(struct virtio_dev *v);
void virtio_bar_remap(struct virtio_dev *v);
/* Caller holds v->lock for these. */
void virtio_signal(struct virtio_dev *v, uint16_t vec, uint8_t isr_bit);
void virtio_broken_locked(struct virtio_dev *v, const char *why);
void virtio_worker_wake(struct virtio_dev *v, bool activate);
/* Guest wrote 0 to device_status; parks the worker around the reset. */
void virtio_dev_reset(struct virtio_dev *v);

#endif
