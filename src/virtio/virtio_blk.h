/* virtio-blk on a raw file: several disks, read-only, serial (GET_ID),
 * flush, discard (punch hole), write zeroes. The device's worker thread
 * does the file I/O, so a slow disk never stalls a vCPU. */
#ifndef FERRY_VIRTIO_VIRTIO_BLK_H
#define FERRY_VIRTIO_VIRTIO_BLK_H

#include <stdbool.h>
#include <stdint.h>

#include "virtio/virtio.h"

#define BLK_SERIAL_MAX 20   /* VIRTIO_BLK_ID_BYTES */

#define BLK_MAX_DISKS 8

struct disk_config {
    char path[256];
    bool readonly;
    char serial[BLK_SERIAL_MAX + 1];   /* "" : none */
};

struct virtio_blk {
    struct virtio_dev vdev;
    int fd;
    char path[256];
    bool readonly;
    char serial[BLK_SERIAL_MAX + 1];
    uint64_t capacity;      /* 512-byte sectors */
    struct vq_chain *chain;   /* the worker's one request in hand */
    uint8_t config[64];     /* struct virtio_blk_config, little-endian */
    uint64_t reads, writes, flushes, discards, errors;
    uint64_t bytes_read, bytes_written;
};

/* Opens the file (read-only if asked, or while an incoming migration has not
 * switched over: see docs/VIRTIO.md) and registers the device. */
/* Opens the disk as virtio_blk_add() would, and closes it again: a bad
 * --disk is reported before anything waits on it (an incoming migration). */
int virtio_blk_check(const struct disk_config *cfg);
int virtio_blk_add(struct virtio_bus *bus, struct virtio_blk *blk, unsigned index,
                   const struct disk_config *cfg);
void virtio_blk_close(struct virtio_blk *blk);

#endif
