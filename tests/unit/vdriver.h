/* A guest driver's view of a virtio-pci device for unit tests: BAR0 reads
 * and writes through virtio_mmio(), and split-ring helpers on guest memory.
 * Included by the virtio unit tests (after cmocka.h). */
#ifndef FERRY_TESTS_VDRIVER_H
#define FERRY_TESTS_VDRIVER_H

#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "virtio/virtio.h"
#include "vm/memory.h"

struct vdriver {
    struct virtio_bus *bus;
    struct guest_mem *mem;
    uint64_t bar;
};

static inline void vd_mmio_w(const struct vdriver *d, uint64_t off, uint64_t val, unsigned len)
{
    uint8_t b[8];

    memcpy(b, &val, 8);
    assert_true(virtio_mmio(d->bus, d->bar + off, b, len, true));
}

static inline uint64_t vd_mmio_r(const struct vdriver *d, uint64_t off, unsigned len)
{
    uint8_t b[8] = { 0 };
    uint64_t v = 0;

    assert_true(virtio_mmio(d->bus, d->bar + off, b, len, false));
    memcpy(&v, b, len);
    return v;
}

static inline void vd_put_desc(struct guest_mem *m, uint64_t table, unsigned i, uint64_t addr,
                               uint32_t len, uint16_t flags, uint16_t next)
{
    struct { uint64_t addr; uint32_t len; uint16_t flags, next; } d = { addr, len, flags, next };

    memcpy(m->hva + table + 16 * i, &d, 16);
}

/* Publishes `head` in the avail ring at `avail` (ring of qsize entries). */
static inline void vd_make_avail(struct guest_mem *m, uint64_t avail, unsigned qsize,
                                 uint16_t head)
{
    uint16_t *a = (uint16_t *)(m->hva + avail);

    a[2 + a[1] % qsize] = head;
    __atomic_store_n(&a[1], (uint16_t)(a[1] + 1), __ATOMIC_RELEASE);
}

static inline uint16_t vd_used_idx(struct guest_mem *m, uint64_t used)
{
    return __atomic_load_n((uint16_t *)(m->hva + used + 2), __ATOMIC_ACQUIRE);
}

/* Waits up to 2 s for the device to bring the used index to `want`. */
static inline void vd_wait_used(struct guest_mem *m, uint64_t used, uint16_t want)
{
    for (int i = 0; i < 2000 && vd_used_idx(m, used) != want; i++)
        usleep(1000);
    assert_int_equal(vd_used_idx(m, used), want);
}

#endif
