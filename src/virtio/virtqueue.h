/* Split virtqueues (virtio 1.x, section 2.7): the guest's descriptor table,
 * available ring and used ring, parsed with strict checks. Every guest
 * address goes through mem_ptr(); a malformed chain (index out of range,
 * loop, chain longer than the queue, nested indirect table, buffer outside
 * RAM) makes vq_pop() fail with -EINVAL and the transport marks the device
 * broken (DEVICE_NEEDS_RESET). The parser is pure (no KVM, no threads), so
 * tests/unit and tests/fuzz drive it on a plain buffer. */
#ifndef FERRY_VIRTIO_VIRTQUEUE_H
#define FERRY_VIRTIO_VIRTQUEUE_H

#include <stdbool.h>
#include <stdint.h>

#include "vm/memory.h"

#define VQ_MAX_SIZE   256          /* largest queue a ferry device offers */
#define VQ_MAX_SEGS   VQ_MAX_SIZE  /* a chain never has more descriptors than the queue */

/* One descriptor's buffer, already translated to a host pointer. */
struct vq_seg {
    uint8_t *hva;
    uint64_t gpa;
    uint32_t len;
};

/* One popped request: device-readable segments first (out[0..nout)), then
 * device-writable ones (in[0..nin)), as the spec requires of drivers. */
struct vq_chain {
    uint16_t head;                 /* handed back to the guest by vq_push() */
    uint16_t nout, nin;
    uint32_t out_len, in_len;      /* total bytes readable / writable */
    struct vq_seg out[VQ_MAX_SEGS];
    struct vq_seg in[VQ_MAX_SEGS];
    const char *error;             /* why vq_pop() refused the chain */
};

struct virtqueue {
    struct guest_mem *mem;
    uint16_t index;
    uint16_t max_size;             /* offered to the guest (queue_size reads this first) */
    /* Guest-programmed through the common config; all in the state walk. */
    uint16_t size;
    bool enabled;
    uint16_t msix_vector;
    uint64_t desc_gpa, avail_gpa, used_gpa;
    /* Device progress; both in the state walk. */
    uint16_t last_avail;           /* next available-ring slot the device takes */
    uint16_t used_idx;             /* next used-ring slot the device fills */
};

/* Resets the guest-programmed fields and the indexes (device reset). */
void vq_reset(struct virtqueue *vq);
/* True if the ring addresses/size are usable (checked when the queue is enabled). */
bool vq_valid(const struct virtqueue *vq);
/* Takes the next available chain. 1: got one in c; 0: ring empty;
 * -EINVAL: malformed (c->error says why; the queue must not be used again). */
int vq_pop(struct virtqueue *vq, struct vq_chain *c);
/* Returns a chain to the guest with written bytes in its writable segments;
 * marks those bytes and the used ring dirty for migration. -EINVAL if the
 * used ring is no longer in RAM. */
int vq_push(struct virtqueue *vq, const struct vq_chain *c, uint32_t written);
/* True if the guest made chains available that the device has not taken. */
bool vq_has_work(const struct virtqueue *vq);
/* False if the guest asked for no interrupts (VRING_AVAIL_F_NO_INTERRUPT). */
bool vq_want_interrupt(const struct virtqueue *vq);
/* Copies between a chain's segments and a flat buffer, starting at byte off
 * of the readable (vq_read) or writable (vq_write) part. Returns bytes copied. */
uint32_t vq_read(const struct vq_chain *c, uint32_t off, void *dst, uint32_t len);
uint32_t vq_write(const struct vq_chain *c, uint32_t off, const void *src, uint32_t len);

#endif
