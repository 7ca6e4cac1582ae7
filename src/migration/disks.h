/* The guest's disks as a migration checks them: the source describes them
 * right after its HELLO (REC_DISKS), and a destination whose disks differ in
 * number, size or writability refuses in its ACK, before any page moves. */
#ifndef FERRY_MIGRATION_DISKS_H
#define FERRY_MIGRATION_DISKS_H

#include <stddef.h>
#include <stdint.h>

struct vm;

#define MIG_DISK_READONLY 1u
#define MIG_DISKS_MAX     8     /* BLK_MAX_DISKS */
#define MIG_DISKS_HDR     8     /* u32 count, u32 reserved */

/* Wire layout, little-endian, 16 bytes each after the header. */
struct mig_disk {
    uint32_t index;             /* --disk order */
    uint32_t flags;             /* MIG_DISK_READONLY */
    uint64_t sectors;           /* 512-byte sectors */
};
_Static_assert(sizeof(struct mig_disk) == 16, "struct mig_disk is 16 bytes on the wire");

#define MIG_DISKS_MAX_LEN (MIG_DISKS_HDR + MIG_DISKS_MAX * sizeof(struct mig_disk))

/* Encodes n disks into buf (MIG_DISKS_MAX_LEN); returns the length. */
size_t mig_disks_encode(const struct mig_disk *d, uint32_t n, uint8_t *buf);
/* Decodes a REC_DISKS payload; -EBADMSG if its length or count is wrong. */
int mig_disks_decode(const uint8_t *p, uint64_t len, struct mig_disk *d, uint32_t *n);
/* This VM's disks. Returns how many. */
uint32_t mig_disks_of(const struct vm *vm, struct mig_disk *d);
/* 0 if the source's disks (src, n) are this VM's; else -EINVAL and why. */
int mig_disks_compare(const struct mig_disk *src, uint32_t n, const struct vm *vm,
                      char *why, size_t len);

#endif
