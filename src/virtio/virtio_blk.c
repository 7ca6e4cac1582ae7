/* virtio-blk over a raw file. Requests are served one at a time by the
 * device's worker thread with pread/pwrite, so a vCPU never waits for the
 * disk, and a pause (snapshot, stop-and-copy) finds no request half done. */
#include "virtio/virtio_blk.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/log.h"

#define BLK_QUEUE_SIZE 256
#define SECTOR 512ULL

#define VIRTIO_BLK_F_SEG_MAX      2
#define VIRTIO_BLK_F_RO           5
#define VIRTIO_BLK_F_BLK_SIZE     6
#define VIRTIO_BLK_F_FLUSH        9
#define VIRTIO_BLK_F_DISCARD      13
#define VIRTIO_BLK_F_WRITE_ZEROES 14
#define VIRTIO_RING_F_INDIRECT_DESC 28

enum { T_IN = 0, T_OUT = 1, T_FLUSH = 4, T_GET_ID = 8, T_DISCARD = 11, T_WRITE_ZEROES = 13 };
enum { S_OK = 0, S_IOERR = 1, S_UNSUPP = 2 };

struct blk_req_hdr {
    uint32_t type;
    uint32_t reserved;
    uint64_t sector;
};

struct blk_range {            /* discard / write zeroes segment */
    uint64_t sector;
    uint32_t num_sectors;
    uint32_t flags;
};

static int blk_check_range(struct virtio_blk *blk, uint64_t sector, uint64_t bytes)
{
    if (bytes % SECTOR || sector > blk->capacity || bytes / SECTOR > blk->capacity - sector)
        return -EINVAL;
    return 0;
}

static int blk_rw_all(int fd, uint8_t *buf, uint64_t len, uint64_t off, bool write)
{
    while (len) {
        ssize_t n = write ? pwrite(fd, buf, len, (off_t)off) : pread(fd, buf, len, (off_t)off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0) {
            if (write)
                return -EIO;
            memset(buf, 0, len);   /* past the end of a file that shrank */
            return 0;
        }
        buf += n, len -= (uint64_t)n, off += (uint64_t)n;
    }
    return 0;
}

/* Walks segments (readable ones for a write, writable ones for a read),
 * skipping the first skip bytes and doing at most len bytes of I/O. */
static int blk_io_segs(struct virtio_blk *blk, const struct vq_seg *seg, unsigned nseg,
                       uint32_t skip, uint64_t len, uint64_t off, bool write)
{
    for (unsigned i = 0; i < nseg && len; i++) {
        uint64_t n;
        int ret;

        if (skip >= seg[i].len) {
            skip -= seg[i].len;
            continue;
        }
        n = seg[i].len - skip < len ? seg[i].len - skip : len;
        ret = blk_rw_all(blk->fd, seg[i].hva + skip, n, off, write);
        if (ret < 0)
            return ret;
        off += n, len -= n, skip = 0;
    }
    return 0;
}

static uint8_t blk_read(struct virtio_blk *blk, const struct vq_chain *c, uint64_t sector)
{
    uint64_t len = c->in_len - 1;     /* the last writable byte is the status */

    if (blk_check_range(blk, sector, len) < 0)
        return S_IOERR;
    if (blk_io_segs(blk, c->in, c->nin, 0, len, sector * SECTOR, false) < 0)
        return S_IOERR;
    blk->reads++;
    blk->bytes_read += len;
    return S_OK;
}

static uint8_t blk_write(struct virtio_blk *blk, const struct vq_chain *c, uint64_t sector)
{
    uint64_t len = c->out_len - sizeof(struct blk_req_hdr);

    if (blk->readonly || blk_check_range(blk, sector, len) < 0)
        return S_IOERR;
    if (blk_io_segs(blk, c->out, c->nout, sizeof(struct blk_req_hdr), len, sector * SECTOR,
                    true) < 0)
        return S_IOERR;
    blk->writes++;
    blk->bytes_written += len;
    return S_OK;
}

static uint8_t blk_get_id(struct virtio_blk *blk, const struct vq_chain *c)
{
    char id[BLK_SERIAL_MAX];
    uint32_t n = c->in_len - 1 < BLK_SERIAL_MAX ? c->in_len - 1 : BLK_SERIAL_MAX;

    memset(id, 0, sizeof(id));
    memcpy(id, blk->serial, strnlen(blk->serial, BLK_SERIAL_MAX));
    vq_write(c, 0, id, n);
    return S_OK;
}

/* Discard punches holes (advisory: an fs without it still says OK); write
 * zeroes must really zero. */
static uint8_t blk_ranges(struct virtio_blk *blk, const struct vq_chain *c, bool zero)
{
    uint32_t n = (c->out_len - sizeof(struct blk_req_hdr)) / sizeof(struct blk_range);

    if (blk->readonly || n == 0 || n > 16)
        return S_IOERR;
    for (uint32_t i = 0; i < n; i++) {
        struct blk_range r;
        int mode = FALLOC_FL_KEEP_SIZE | (zero ? FALLOC_FL_ZERO_RANGE : FALLOC_FL_PUNCH_HOLE);

        vq_read(c, sizeof(struct blk_req_hdr) + i * sizeof(r), &r, sizeof(r));
        if (blk_check_range(blk, r.sector, r.num_sectors * SECTOR) < 0)
            return S_IOERR;
        if (fallocate(blk->fd, mode, (off_t)(r.sector * SECTOR),
                      (off_t)(r.num_sectors * SECTOR)) < 0 && (zero || errno != EOPNOTSUPP))
            return S_IOERR;
    }
    blk->discards++;
    return S_OK;
}

static uint8_t blk_do(struct virtio_blk *blk, const struct vq_chain *c,
                      const struct blk_req_hdr *h)
{
    switch (h->type) {
    case T_IN: return blk_read(blk, c, h->sector);
    case T_OUT: return blk_write(blk, c, h->sector);
    case T_FLUSH:
        blk->flushes++;
        return fdatasync(blk->fd) < 0 ? S_IOERR : S_OK;
    case T_GET_ID: return blk_get_id(blk, c);
    case T_DISCARD: return blk_ranges(blk, c, false);
    case T_WRITE_ZEROES: return blk_ranges(blk, c, true);
    default: return S_UNSUPP;
    }
}

/* A request without a header or a status byte cannot even be answered. */
static int blk_request(struct virtio_blk *blk, struct virtqueue *vq, const struct vq_chain *c)
{
    struct blk_req_hdr h;
    uint8_t status;

    if (c->out_len < sizeof(h) || c->in_len < 1)
        return -EINVAL;
    vq_read(c, 0, &h, sizeof(h));
    status = blk_do(blk, c, &h);
    if (status != S_OK)
        blk->errors++;
    vq_write(c, c->in_len - 1, &status, 1);
    /* The whole writable part is reported (and so marked dirty for
     * migration): the status byte is its last byte. */
    return vq_push(vq, c, c->in_len);
}

static void blk_queue_notify(struct virtio_dev *vdev, unsigned q)
{
    struct virtio_blk *blk = vdev->priv;
    struct virtqueue *vq = &vdev->vq[q];
    unsigned done = 0;
    int r;

    while (!virtio_dev_should_stop(vdev) && (r = vq_pop(vq, blk->chain)) != 0) {
        if (r < 0) {
            virtio_dev_broken(vdev, blk->chain->error);
            break;
        }
        if (blk_request(blk, vq, blk->chain) < 0) {
            virtio_dev_broken(vdev, "request without header or status byte");
            break;
        }
        if (++done % 32 == 0)
            virtio_dev_notify(vdev, q);
    }
    if (done % 32)
        virtio_dev_notify(vdev, q);
}

static void blk_describe(struct virtio_dev *vdev, void *json_obj)
{
    struct virtio_blk *blk = vdev->priv;

    json_object_set_new(json_obj, "path", json_string(blk->path));
    json_object_set_new(json_obj, "readonly", json_boolean(blk->readonly));
    json_object_set_new(json_obj, "serial", json_string(blk->serial));
    json_object_set_new(json_obj, "capacity_sectors", json_integer((json_int_t)blk->capacity));
    json_object_set_new(json_obj, "reads", json_integer((json_int_t)blk->reads));
    json_object_set_new(json_obj, "writes", json_integer((json_int_t)blk->writes));
    json_object_set_new(json_obj, "flushes", json_integer((json_int_t)blk->flushes));
    json_object_set_new(json_obj, "errors", json_integer((json_int_t)blk->errors));
}

/* The disk as the guest knows it: a destination whose disk is of another
 * size or writability refuses the stream (the VM stays on the source) rather
 * than show the guest a disk that changed under it. Virtio section v2+. */
static int blk_walk(struct state_walker *w, struct virtio_dev *vdev)
{
    struct virtio_blk *blk = vdev->priv;
    uint64_t capacity = blk->capacity;
    bool readonly = blk->readonly;
    static __thread char why[160];   /* outlives the walk: the error quotes it */

    if (w->version < 2)
        return 0;
    walk_u64(w, &capacity, "blk.capacity");
    walk_bool(w, &readonly, "blk.readonly");
    if (w->err || !walk_loading(w))
        return w->err;
    if (capacity != blk->capacity)
        snprintf(why, sizeof(why), "disk %.64s: %llu sectors here, %llu on the source", blk->path,
                 (unsigned long long)blk->capacity, (unsigned long long)capacity);
    else if (readonly != blk->readonly)
        snprintf(why, sizeof(why), "disk %.64s: %s here, %s on the source", blk->path,
                 blk->readonly ? "read-only" : "writable", readonly ? "read-only" : "writable");
    else
        return 0;
    return walk_fail(w, -EINVAL, why);
}

static const struct virtio_dev_ops blk_ops = {
    .queue_notify = blk_queue_notify,
    .describe = blk_describe,
    .walk = blk_walk,
};

static void blk_config(struct virtio_blk *blk)
{
    uint32_t seg_max = BLK_QUEUE_SIZE - 2, blk_size = 512, max_sec = 0x3fffff, one = 16;

    memset(blk->config, 0, sizeof(blk->config));
    memcpy(blk->config + 0, &blk->capacity, 8);
    memcpy(blk->config + 12, &seg_max, 4);
    memcpy(blk->config + 20, &blk_size, 4);
    memcpy(blk->config + 36, &max_sec, 4);     /* max_discard_sectors */
    memcpy(blk->config + 40, &one, 4);         /* max_discard_seg */
    memcpy(blk->config + 44, &(uint32_t){ 8 }, 4);
    memcpy(blk->config + 48, &max_sec, 4);     /* max_write_zeroes_sectors */
    memcpy(blk->config + 52, &one, 4);
}

static uint64_t blk_features(const struct virtio_blk *blk)
{
    uint64_t f = (1ULL << VIRTIO_BLK_F_SEG_MAX) | (1ULL << VIRTIO_BLK_F_BLK_SIZE) |
                 (1ULL << VIRTIO_BLK_F_FLUSH) | (1ULL << VIRTIO_RING_F_INDIRECT_DESC);

    if (blk->readonly)
        return f | (1ULL << VIRTIO_BLK_F_RO);
    return f | (1ULL << VIRTIO_BLK_F_DISCARD) | (1ULL << VIRTIO_BLK_F_WRITE_ZEROES);
}

static int blk_open(struct virtio_blk *blk, const struct disk_config *cfg)
{
    struct stat st;

    blk->fd = open(cfg->path, (cfg->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (blk->fd < 0 || fstat(blk->fd, &st) < 0) {
        int err = -errno;
        log_err("disk %s: %s", cfg->path, strerror(errno));
        return err;
    }
    if (!S_ISREG(st.st_mode) || st.st_size < (off_t)SECTOR) {
        log_err("disk %s: not a raw image file of at least 512 bytes", cfg->path);
        return -EINVAL;
    }
    blk->capacity = (uint64_t)st.st_size / SECTOR;
    return 0;
}

int virtio_blk_check(const struct disk_config *cfg)
{
    static struct virtio_blk probe;   /* large; called from the main thread only */
    int ret = blk_open(&probe, cfg);

    if (probe.fd >= 0)
        close(probe.fd);
    return ret;
}

int virtio_blk_add(struct virtio_bus *bus, struct virtio_blk *blk, unsigned index,
                   const struct disk_config *cfg)
{
    static char names[VIRTIO_MAX_DEVICES][16];
    int ret;

    memset(blk, 0, sizeof(*blk));
    blk->readonly = cfg->readonly;
    snprintf(blk->path, sizeof(blk->path), "%s", cfg->path);
    snprintf(blk->serial, sizeof(blk->serial), "%s", cfg->serial);
    ret = blk_open(blk, cfg);
    blk->chain = ret == 0 ? malloc(sizeof(*blk->chain)) : NULL;
    if (ret == 0 && !blk->chain)
        ret = -ENOMEM;
    if (ret < 0) {
        virtio_blk_close(blk);
        return ret;
    }
    blk_config(blk);
    snprintf(names[index % VIRTIO_MAX_DEVICES], sizeof(names[0]), "blk%u", index);
    blk->vdev = (struct virtio_dev){
        .ops = &blk_ops, .type = VIRTIO_ID_BLK, .class_code = 0x018000, .nqueues = 1,
        .queue_max = BLK_QUEUE_SIZE, .features = blk_features(blk), .config = blk->config,
        .config_len = 60, .name = names[index % VIRTIO_MAX_DEVICES], .priv = blk,
    };
    return virtio_dev_register(bus, &blk->vdev);
}

void virtio_blk_close(struct virtio_blk *blk)
{
    if (blk->fd > 0)
        close(blk->fd);
    blk->fd = -1;
    free(blk->chain);
    blk->chain = NULL;
}
