#include "virtio/virtqueue.h"

#include <errno.h>
#include <string.h>

#define VRING_DESC_F_NEXT     1
#define VRING_DESC_F_WRITE    2
#define VRING_DESC_F_INDIRECT 4
#define VRING_AVAIL_F_NO_INTERRUPT 1

struct vring_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

void vq_reset(struct virtqueue *vq)
{
    vq->size = vq->max_size;
    vq->enabled = false;
    vq->msix_vector = 0xffff;
    vq->desc_gpa = vq->avail_gpa = vq->used_gpa = 0;
    vq->last_avail = vq->used_idx = 0;
}

static uint64_t vq_avail_bytes(uint16_t size) { return 6 + 2ULL * size; }
static uint64_t vq_used_bytes(uint16_t size) { return 6 + 8ULL * size; }

bool vq_valid(const struct virtqueue *vq)
{
    uint16_t n = vq->size;

    if (n == 0 || n > vq->max_size || (n & (n - 1)))
        return false;
    if ((vq->desc_gpa & 15) || (vq->avail_gpa & 1) || (vq->used_gpa & 3))
        return false;
    return mem_ptr(vq->mem, vq->desc_gpa, 16ULL * n) &&
           mem_ptr(vq->mem, vq->avail_gpa, vq_avail_bytes(n)) &&
           mem_ptr(vq->mem, vq->used_gpa, vq_used_bytes(n));
}

/* Ring pointers are looked up on every use: the ring must still be RAM. */
static uint16_t *vq_avail(const struct virtqueue *vq)
{
    return mem_ptr(vq->mem, vq->avail_gpa, vq_avail_bytes(vq->size));
}

static uint8_t *vq_used(const struct virtqueue *vq)
{
    return mem_ptr(vq->mem, vq->used_gpa, vq_used_bytes(vq->size));
}

bool vq_has_work(const struct virtqueue *vq)
{
    uint16_t *avail = vq_avail(vq);

    return avail && __atomic_load_n(&avail[1], __ATOMIC_ACQUIRE) != vq->last_avail;
}

bool vq_want_interrupt(const struct virtqueue *vq)
{
    uint16_t *avail = vq_avail(vq);

    __atomic_thread_fence(__ATOMIC_SEQ_CST);   /* used idx visible before we look */
    return !avail || !(__atomic_load_n(&avail[0], __ATOMIC_RELAXED) & VRING_AVAIL_F_NO_INTERRUPT);
}

static int vq_bad(struct vq_chain *c, const char *why)
{
    c->error = why;
    return -EINVAL;
}

/* One descriptor copied out of guest memory first: the guest may change it
 * under us, and every check must apply to the value we then use. */
static int vq_read_desc(struct guest_mem *mem, uint64_t table, uint32_t n, uint32_t i,
                        struct vring_desc *d, struct vq_chain *c)
{
    const uint8_t *p;

    if (i >= n)
        return vq_bad(c, "descriptor index out of range");
    p = mem_ptr(mem, table + 16ULL * i, 16);
    if (!p)
        return vq_bad(c, "descriptor table outside RAM");
    memcpy(d, p, sizeof(*d));
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    return 0;
}

static int vq_add_seg(struct guest_mem *mem, const struct vring_desc *d, struct vq_chain *c)
{
    bool write = d->flags & VRING_DESC_F_WRITE;
    struct vq_seg *s;
    uint32_t *total = write ? &c->in_len : &c->out_len;

    if (!write && c->nin)
        return vq_bad(c, "readable descriptor after a writable one");
    if ((uint32_t)c->nout + c->nin >= VQ_MAX_SEGS)
        return vq_bad(c, "chain longer than the queue");
    if (*total + (uint64_t)d->len > UINT32_MAX)
        return vq_bad(c, "chain larger than 4 GiB");
    s = write ? &c->in[c->nin++] : &c->out[c->nout++];
    s->gpa = d->addr;
    s->len = d->len;
    s->hva = mem_ptr(mem, d->addr, d->len);
    if (!s->hva)
        return vq_bad(c, "buffer outside RAM");
    *total += d->len;
    return 0;
}

/* Walks one table (the ring's, or an indirect one) from index i. At most n
 * descriptors are visited, so a loop ends as "chain longer than the queue". */
static int vq_walk_table(struct virtqueue *vq, uint64_t table, uint32_t n, uint32_t i,
                         bool indirect, struct vq_chain *c)
{
    struct vring_desc d;

    for (uint32_t visited = 0;; visited++) {
        if (visited >= n)
            return vq_bad(c, "descriptor loop or chain longer than its table");
        if (vq_read_desc(vq->mem, table, n, i, &d, c) < 0)
            return -EINVAL;
        if (d.flags & VRING_DESC_F_INDIRECT) {
            if (indirect)
                return vq_bad(c, "indirect descriptor inside an indirect table");
            if (d.flags & VRING_DESC_F_NEXT)
                return vq_bad(c, "indirect descriptor with NEXT");
            if (d.len == 0 || d.len % 16 || d.len / 16 > VQ_MAX_SEGS || (d.addr & 15))
                return vq_bad(c, "bad indirect table size");
            return vq_walk_table(vq, d.addr, d.len / 16, 0, true, c);
        }
        if (vq_add_seg(vq->mem, &d, c) < 0)
            return -EINVAL;
        if (!(d.flags & VRING_DESC_F_NEXT))
            return 0;
        i = d.next;
    }
}

int vq_pop(struct virtqueue *vq, struct vq_chain *c)
{
    uint16_t *avail = vq_avail(vq), idx, head;

    c->nout = c->nin = 0;
    c->out_len = c->in_len = 0;
    c->error = NULL;
    if (vq->size == 0 || !avail || !vq_used(vq))
        return vq_bad(c, "rings outside RAM");
    idx = __atomic_load_n(&avail[1], __ATOMIC_ACQUIRE);
    if (idx == vq->last_avail)
        return 0;
    if ((uint16_t)(idx - vq->last_avail) > vq->size)
        return vq_bad(c, "available index ran ahead of the queue");
    head = __atomic_load_n(&avail[2 + vq->last_avail % vq->size], __ATOMIC_RELAXED);
    c->head = head;
    if (vq_walk_table(vq, vq->desc_gpa, vq->size, head, false, c) < 0)
        return -EINVAL;
    vq->last_avail++;
    return 1;
}

static void vq_mark_in(struct virtqueue *vq, const struct vq_chain *c, uint32_t written)
{
    for (unsigned i = 0; i < c->nin && written; i++) {
        uint32_t n = c->in[i].len < written ? c->in[i].len : written;
        if (n)
            mem_mark_written(vq->mem, c->in[i].gpa, n);
        written -= n;
    }
}

int vq_push(struct virtqueue *vq, const struct vq_chain *c, uint32_t written)
{
    uint8_t *used = vq->size ? vq_used(vq) : NULL;
    uint32_t elem[2] = { c->head, written };
    uint64_t off = 4 + 8ULL * (vq->size ? vq->used_idx % vq->size : 0);
    uint16_t idx = (uint16_t)(vq->used_idx + 1);

    if (vq->size == 0 || !used)
        return -EINVAL;
    vq_mark_in(vq, c, written < c->in_len ? written : c->in_len);
    memcpy(used + off, elem, sizeof(elem));
    __atomic_store_n((uint16_t *)(used + 2), idx, __ATOMIC_RELEASE);
    mem_mark_written(vq->mem, vq->used_gpa + off, sizeof(elem));
    mem_mark_written(vq->mem, vq->used_gpa + 2, 2);
    vq->used_idx = idx;
    return 0;
}

uint32_t vq_read(const struct vq_chain *c, uint32_t off, void *dst, uint32_t len)
{
    uint32_t done = 0;

    for (unsigned i = 0; i < c->nout && done < len; i++) {
        const struct vq_seg *s = &c->out[i];
        uint32_t n;

        if (off >= s->len) {
            off -= s->len;
            continue;
        }
        n = s->len - off < len - done ? s->len - off : len - done;
        memcpy((uint8_t *)dst + done, s->hva + off, n);
        done += n;
        off = 0;
    }
    return done;
}

uint32_t vq_write(const struct vq_chain *c, uint32_t off, const void *src, uint32_t len)
{
    uint32_t done = 0;

    for (unsigned i = 0; i < c->nin && done < len; i++) {
        const struct vq_seg *s = &c->in[i];
        uint32_t n;

        if (off >= s->len) {
            off -= s->len;
            continue;
        }
        n = s->len - off < len - done ? s->len - off : len - done;
        memcpy(s->hva + off, (const uint8_t *)src + done, n);
        done += n;
        off = 0;
    }
    return done;
}
