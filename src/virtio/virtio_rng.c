#include "virtio/virtio_rng.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/random.h>

#include "util/log.h"

#define RNG_QUEUE_SIZE 64
#define VIRTIO_RING_F_INDIRECT_DESC 28

/* Each writable segment is filled from getrandom(); at most 64 KiB per
 * request, so one greedy guest cannot hold the worker long. */
static uint32_t rng_fill(const struct vq_chain *c)
{
    uint32_t done = 0;

    for (unsigned i = 0; i < c->nin && done < 65536; i++) {
        uint32_t want = c->in[i].len < 65536 - done ? c->in[i].len : 65536 - done;
        ssize_t n = getrandom(c->in[i].hva, want, GRND_NONBLOCK);

        if (n <= 0)
            break;
        done += (uint32_t)n;
        if ((uint32_t)n < want)
            break;
    }
    return done;
}

static void rng_queue_notify(struct virtio_dev *vdev, unsigned q)
{
    struct virtio_rng *rng = vdev->priv;
    struct virtqueue *vq = &vdev->vq[q];
    struct vq_chain *rng_chain = rng->chain;
    bool pushed = false;
    int r;

    while (!virtio_dev_should_stop(vdev) && (r = vq_pop(vq, rng_chain)) != 0) {
        uint32_t n;

        if (r < 0 || vq_push(vq, rng_chain, n = rng_fill(rng_chain)) < 0) {
            virtio_dev_broken(vdev, r < 0 ? rng_chain->error : "used ring outside RAM");
            break;
        }
        rng->bytes += n;
        pushed = true;
    }
    if (pushed)
        virtio_dev_notify(vdev, q);
}

static const struct virtio_dev_ops rng_ops = { .queue_notify = rng_queue_notify };

int virtio_rng_add(struct virtio_bus *bus, struct virtio_rng *rng)
{
    rng->chain = malloc(sizeof(*rng->chain));
    if (!rng->chain)
        return -ENOMEM;
    rng->vdev = (struct virtio_dev){
        .ops = &rng_ops, .type = VIRTIO_ID_RNG, .class_code = 0x00ff00, .nqueues = 1,
        .queue_max = RNG_QUEUE_SIZE, .features = 1ULL << VIRTIO_RING_F_INDIRECT_DESC,
        .name = "rng", .priv = rng,
    };
    return virtio_dev_register(bus, &rng->vdev);
}
