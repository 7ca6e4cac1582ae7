/*
 * virtio-blk, polled: blktest (checksum of the first MiB, a pattern through the second),
 * blk.loop (write and read back passes over MiB 2.. of disk 0) and blkbench.
 */
#include "virtio.h"

#define BLK_F_SIZE_MAX      1
#define BLK_F_SEG_MAX       2
#define BLK_F_RO            5
#define BLK_F_BLK_SIZE      6
#define BLK_F_FLUSH         9

#define T_IN                0
#define T_OUT               1
#define T_FLUSH             4
#define S_OK                0
#define S_IOERR             1
#define E_TIMEOUT           0x100

#define BLK_MAX             4
#define SLOTS               16
#define SECTOR              512
#define SECTORS_PER_MIB     (MIB / SECTOR)
#define IO_TIMEOUT_NS       (10 * NS_PER_SEC)
#define PATTERN_XOR         0x5a5a5a5a5a5a5a5aULL
#define LOOP_CHUNK          (64 * 1024)
#define LOOP_GAP_NS         (500 * NS_PER_US)   /* between chunks: the host has 2 cores */
#define BENCH_NS            (2 * NS_PER_SEC)
#define BENCH_SEQ_DEPTH     4

struct blk_slot {
    u32 type;
    u32 reserved;
    u64 sector;
    u8 status;
} __aligned(16);

struct vblk {
    struct virtio_dev v;
    struct vq q;
    u64 capacity;               /* sectors */
    u32 slots, descs_per_slot;
    u32 seg_bytes, req_max;     /* bytes per descriptor and per request */
    struct blk_slot slot[SLOTS];
};

static struct vblk blks[BLK_MAX] __noinit;
static u32 nblks;
static u8 iobuf[4 * MIB] __noinit __aligned(4096);
static u32 crc_table[256];
static bool blk_msix;           /* some disk's request queue interrupts during blktest */

static struct {
    u64 g, next_sector;         /* blk.loop: pass and position */
    u64 next_ns;                /* next chunk not before */
    bool active;
} lp;

/* ---- requests ---- */

/* Builds slot i's chain: header, data (split by seg_bytes), status; then pushes it. */
static void blk_submit(struct vblk *b, u32 i, u32 type, u64 sector, u8 *buf, u32 len)
{
    struct blk_slot *s = &b->slot[i];
    u16 d = (u16)(i * b->descs_per_slot), head = d;

    s->type = type;
    s->reserved = 0;
    s->sector = sector;
    s->status = 0xff;
    b->q.desc[d] = (struct vring_desc){ (u64)s, 16, VRING_DESC_F_NEXT, (u16)(d + 1) };
    for (u32 off = 0; off < len; off += b->seg_bytes) {
        d++;
        b->q.desc[d] = (struct vring_desc){ (u64)(buf + off), MIN(b->seg_bytes, len - off),
                                            (u16)(VRING_DESC_F_NEXT |
                                                  (type == T_IN ? VRING_DESC_F_WRITE : 0)),
                                            (u16)(d + 1) };
    }
    d++;
    b->q.desc[d] = (struct vring_desc){ (u64)&s->status, 1, VRING_DESC_F_WRITE, 0 };
    vq_push(&b->q, head);
}

/* A source of requests for blk_run: false when there are no more. */
struct blk_job {
    bool (*next)(struct blk_job *j, u32 slot, u32 *type, u64 *sector, u8 **buf, u32 *len);
    u64 done;                   /* requests completed */
    u64 deadline;               /* guest ns; 0 = none (next() decides) */
};

/* Runs a job with up to `depth` requests in flight. 0, a virtio status, or E_TIMEOUT. */
static int blk_run(struct vblk *b, u32 depth, struct blk_job *j)
{
    u32 inflight = 0, free_mask = (1u << MIN(depth, b->slots)) - 1;
    u64 last = virtio_now();
    bool more = true;
    int err = 0;

    for (;;) {
        u32 type, len, id, ulen;
        u64 sector;
        u8 *buf;
        bool pushed = false;

        while (more && !err && free_mask) {
            u32 i = (u32)__builtin_ctz(free_mask);

            if (j->deadline && virtio_now() >= j->deadline)
                more = false;
            else
                more = j->next(j, i, &type, &sector, &buf, &len);
            if (!more)
                break;
            blk_submit(b, i, type, sector, buf, len);
            free_mask &= ~(1u << i);
            inflight++;
            pushed = true;
        }
        if (pushed)
            vq_kick(&b->q);
        if (!inflight)
            return err;
        while (vq_pop(&b->q, &id, &ulen)) {
            u32 i = id / b->descs_per_slot;
            u8 st = __atomic_load_n(&b->slot[i].status, __ATOMIC_ACQUIRE);

            if (st != S_OK && !err)
                err = st;
            free_mask |= 1u << i;
            inflight--;
            j->done++;
            last = virtio_now();
        }
        if (virtio_now() - last > IO_TIMEOUT_NS)
            return E_TIMEOUT;
        worker_yield();
    }
}

/* One contiguous transfer split into requests of at most req_max bytes. */
struct blk_seq {
    struct blk_job job;
    u32 type;
    u64 sector;
    u8 *buf;
    u64 left;
    u32 req_max;
};

static bool blk_seq_next(struct blk_job *j, u32 slot, u32 *type, u64 *sector, u8 **buf,
                         u32 *len)
{
    struct blk_seq *s = (struct blk_seq *)j;

    (void)slot;
    if (!s->left)
        return false;
    *type = s->type;
    *sector = s->sector;
    *buf = s->buf;
    *len = (u32)MIN(s->left, s->req_max);
    s->sector += *len / SECTOR;
    s->buf += *len;
    s->left -= *len;
    return true;
}

static int blk_io(struct vblk *b, u32 type, u64 sector, void *buf, u64 len)
{
    struct blk_seq s = { { blk_seq_next, 0, 0 }, type, sector, buf, len, b->req_max };

    return blk_run(b, b->slots, &s.job);
}

static int blk_flush(struct vblk *b)
{
    u32 id, len;

    if (!virtio_has(&b->v, BLK_F_FLUSH))
        return 0;
    /* A flush has no data: one request, not the split loop. */
    blk_submit(b, 0, T_FLUSH, 0, iobuf, 0);
    vq_kick(&b->q);
    for (u64 t0 = virtio_now(); !vq_pop(&b->q, &id, &len); worker_yield())
        if (virtio_now() - t0 > IO_TIMEOUT_NS)
            return E_TIMEOUT;
    return b->slot[0].status;
}

/* ---- probe ---- */

void vblk_probe(const struct pci_dev *p)
{
    struct vblk *b = &blks[nblks];
    const char *why = "";
    u64 want = (1ULL << BLK_F_SIZE_MAX) | (1ULL << BLK_F_SEG_MAX) | (1ULL << BLK_F_RO) |
               (1ULL << BLK_F_BLK_SIZE) | (1ULL << BLK_F_FLUSH);
    u32 seg_max = 0xffff, size_max;

    if (nblks == BLK_MAX)
        return;
    memset(b, 0, sizeof(*b));
    if (virtio_open(&b->v, p, want, &why) || virtio_queue(&b->v, &b->q, 0, 256, &why)) {
        con_printf("BLK FAIL %u init-%s\n", nblks, why);
        nblks++;                /* keep disk numbers in PCI order */
        b->capacity = 0;
        return;
    }
    b->capacity = *(volatile u32 *)b->v.devcfg | (u64)*(volatile u32 *)(b->v.devcfg + 4) << 32;
    if (virtio_has(&b->v, BLK_F_SEG_MAX))
        seg_max = MAX(*(volatile u32 *)(b->v.devcfg + 12), 1);
    size_max = virtio_has(&b->v, BLK_F_SIZE_MAX) ? *(volatile u32 *)(b->v.devcfg + 8) : 0;
    b->slots = MIN(SLOTS, b->q.size / 4);
    b->descs_per_slot = b->q.size / b->slots;
    b->seg_bytes = size_max >= PAGE_SIZE ? (u32)(size_max & ~(PAGE_SIZE - 1)) : MIB;
    b->req_max = (u32)MIN((u64)MIB, (u64)b->seg_bytes *
                          MIN(seg_max, b->descs_per_slot - 2));
    if (cfg.blktest || cfg.blkbench)
        blk_msix |= virtio_msix_enable(&b->v, &b->q, VEC_VIRTIO, cpu_apic_id[virtio_cpu]);
    virtio_ready(&b->v);
    nblks++;
}

/* ---- blktest ---- */

static void crc_init(void)
{
    for (u32 i = 0; i < 256; i++) {
        u32 c = i;

        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static u32 crc32(const u8 *p, u64 n)
{
    u32 c = 0xffffffffu;

    while (n--)
        c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
    return ~c;
}

/* Sector s of the second MiB: words (s << 32 | w) ^ PATTERN_XOR. */
static void pattern_fill(u64 *w)
{
    for (u64 s = 0; s < SECTORS_PER_MIB; s++)
        for (u64 i = 0; i < SECTOR / 8; i++)
            w[s * (SECTOR / 8) + i] = ((s << 32) | i) ^ PATTERN_XOR;
}

static const char *blk_err(int e)
{
    return e == S_IOERR ? "ioerr" : e == E_TIMEOUT ? "timeout" : e == 2 ? "unsupp" : "status";
}

static void blktest_one(u32 n)
{
    struct vblk *b = &blks[n];
    u64 first = MIN(MIB, b->capacity * SECTOR);
    u8 *pat = iobuf + MIB, *back = iobuf + 2 * MIB;
    int e;

    if (!b->slots)
        return;         /* init failed, already reported */
    if ((e = blk_io(b, T_IN, 0, iobuf, first))) {
        con_printf("BLK FAIL %u read-%s\n", n, blk_err(e));
        return;
    }
    con_printf("BLK %u %lu %08x\n", n, b->capacity, crc32(iobuf, first));
    if (b->capacity < 2 * SECTORS_PER_MIB) {
        con_printf("BLK FAIL %u too-small\n", n);
        return;
    }
    pattern_fill((u64 *)pat);
    e = blk_io(b, T_OUT, SECTORS_PER_MIB, pat, MIB);
    if (e == S_IOERR && virtio_has(&b->v, BLK_F_RO)) {
        con_printf("BLK ro %u\n", n);
        return;
    }
    if (e || (e = blk_flush(b))) {
        con_printf("BLK FAIL %u write-%s\n", n, blk_err(e));
        return;
    }
    if (virtio_has(&b->v, BLK_F_RO)) {
        con_printf("BLK FAIL %u ro-write-accepted\n", n);
        return;
    }
    memset(back, 0, MIB);
    if ((e = blk_io(b, T_IN, SECTORS_PER_MIB, back, MIB))) {
        con_printf("BLK FAIL %u readback-%s\n", n, blk_err(e));
        return;
    }
    for (u64 s = 0; s < SECTORS_PER_MIB; s++)
        if (memcmp(pat + s * SECTOR, back + s * SECTOR, SECTOR)) {
            con_printf("BLK FAIL %u mismatch-sector-%lu\n", n, SECTORS_PER_MIB + s);
            return;
        }
    con_printf("BLK ok %u\n", n);
}

/* ---- blkbench ---- */

struct blk_bench {
    struct blk_job job;
    u32 type, len;
    u64 first, count;           /* region in sectors */
    u64 pos;                    /* sequential: next sector offset */
    u64 rng;                    /* random: xorshift64 */
};

static bool bench_next(struct blk_job *j, u32 slot, u32 *type, u64 *sector, u8 **buf,
                       u32 *len)
{
    struct blk_bench *b = (struct blk_bench *)j;
    u64 n = b->len / SECTOR;

    *type = b->type;
    *len = b->len;
    *buf = iobuf + (u64)slot * b->len % sizeof(iobuf);
    if (b->rng) {
        b->rng ^= b->rng << 13;
        b->rng ^= b->rng >> 7;
        b->rng ^= b->rng << 17;
        *sector = b->first + b->rng % (b->count / n) * n;
    } else {
        if (b->pos + n > b->count)
            b->pos = 0;
        *sector = b->first + b->pos;
        b->pos += n;
    }
    return true;
}

/* Ops per second over BENCH_NS (0 on error). */
static u64 bench_run(struct vblk *d, u32 type, u32 len, u32 depth, bool random, u64 first,
                     u64 count)
{
    struct blk_bench b = { { bench_next, 0, 0 }, type, len, first, count, 0,
                           random ? 0x9E3779B97F4A7C15ULL : 0 };
    u64 t0 = virtio_now(), t1;
    int e;

    b.job.deadline = t0 + BENCH_NS;
    e = blk_run(d, depth, &b.job);
    t1 = virtio_now();
    if (e) {
        con_printf("WARN blkbench %s\n", blk_err(e));
        return 0;
    }
    return b.job.done * NS_PER_SEC / MAX(t1 - t0, 1);
}

static void blkbench(void)
{
    struct vblk *d = &blks[0];
    u64 first = 2 * SECTORS_PER_MIB, count, wr, rd, q1, q16;
    u32 len = (u32)MIN((u64)MIB, d->req_max);

    if (!nblks || !d->slots || d->capacity < first + 2 * SECTORS_PER_MIB) {
        con_printf("WARN blkbench: no usable disk 0\n");
        return;
    }
    count = MIN(d->capacity - first, cfg.blk_bench_mib * SECTORS_PER_MIB);
    wr = bench_run(d, T_OUT, len, BENCH_SEQ_DEPTH, false, first, count);
    blk_flush(d);
    rd = bench_run(d, T_IN, len, BENCH_SEQ_DEPTH, false, first, count);
    q1 = bench_run(d, T_IN, PAGE_SIZE, 1, true, first, count);
    q16 = bench_run(d, T_IN, PAGE_SIZE, 16, true, first, count);
    con_printf("BLKBENCH seqread MBps=%lu seqwrite MBps=%lu randread4k_qd1 iops=%lu "
               "randread4k_qd16 iops=%lu\n", rd * len / 1000000, wr * len / 1000000, q1, q16);
}

/* ---- entry points ---- */

void vblk_start(void)
{
    crc_init();
    if (cfg.blktest || cfg.blkbench)
        for (u32 n = 0; n < nblks; n++)
            blktest_one(n);
    if (blk_msix) {
        con_printf("VIRTIO irqs %lu\n", virtio_irqs);
        for (u32 n = 0; n < nblks; n++)
            virtio_msix_mask(&blks[n].v, &blks[n].q);
    }
    if (cfg.blkbench)
        blkbench();
    lp.active = cfg.blk_loop && nblks && blks[0].slots &&
                blks[0].capacity >= (2 + cfg.blk_mib) * SECTORS_PER_MIB;
    if (cfg.blk_loop && !lp.active)
        con_printf("WARN blk.loop: disk 0 missing or smaller than %lu MiB\n", 2 + cfg.blk_mib);
    lp.g = 1;
    lp.next_sector = 2 * SECTORS_PER_MIB;
}

/* Words of sector s in pass g: g << 48 | s << 16 | w. */
static void loop_fill(u64 *w, u64 g, u64 s0, u64 sectors)
{
    for (u64 s = 0; s < sectors; s++)
        for (u64 i = 0; i < SECTOR / 8; i++)
            w[s * (SECTOR / 8) + i] = (g << 48) | ((s0 + s) << 16) | i;
}

/* blk.loop: one chunk written and read back per call, then a short rest. */
bool vblk_step(u64 now, u64 *next)
{
    struct vblk *b = &blks[0];
    u64 end = (2 + cfg.blk_mib) * SECTORS_PER_MIB, s0 = lp.next_sector;
    u64 n = MIN(LOOP_CHUNK / SECTOR, end - s0);
    u8 *wbuf = iobuf, *rbuf = iobuf + MIB;
    int e;

    if (!lp.active)
        return false;
    if (now < lp.next_ns) {
        *next = MIN(*next, lp.next_ns);
        return false;
    }
    loop_fill((u64 *)wbuf, lp.g, s0, n);
    e = blk_io(b, T_OUT, s0, wbuf, n * SECTOR);
    if (!e)
        e = blk_io(b, T_IN, s0, rbuf, n * SECTOR);
    if (e || memcmp(wbuf, rbuf, n * SECTOR)) {
        u64 bad = s0;

        while (!e && bad < s0 + n &&
               !memcmp(wbuf + (bad - s0) * SECTOR, rbuf + (bad - s0) * SECTOR, SECTOR))
            bad++;
        con_printf("BLKW %lu FAIL %lu\n", lp.g, bad);
        lp.g++;
        lp.next_sector = 2 * SECTORS_PER_MIB;
        return true;
    }
    lp.next_ns = virtio_now() + LOOP_GAP_NS;
    *next = MIN(*next, lp.next_ns);
    lp.next_sector += n;
    if (lp.next_sector >= end) {
        con_printf("BLKW %lu ok\n", lp.g);
        lp.g++;
        lp.next_sector = 2 * SECTORS_PER_MIB;
    }
    return false;
}
