/* virtio-rng: one request queue filled from getrandom(). */
#ifndef FERRY_VIRTIO_VIRTIO_RNG_H
#define FERRY_VIRTIO_VIRTIO_RNG_H

#include "virtio/virtio.h"

struct virtio_rng {
    struct virtio_dev vdev;
    struct vq_chain *chain;   /* the worker's one request */
    uint64_t bytes;
};

int virtio_rng_add(struct virtio_bus *bus, struct virtio_rng *rng);

#endif
