#include "migration/disks.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "vm/vm.h"

_Static_assert(MIG_DISKS_MAX == BLK_MAX_DISKS, "one entry per possible disk");

size_t mig_disks_encode(const struct mig_disk *d, uint32_t n, uint8_t *buf)
{
    uint32_t hdr[2] = { n, 0 };

    memcpy(buf, hdr, sizeof(hdr));
    memcpy(buf + MIG_DISKS_HDR, d, n * sizeof(*d));
    return MIG_DISKS_HDR + n * sizeof(*d);
}

int mig_disks_decode(const uint8_t *p, uint64_t len, struct mig_disk *d, uint32_t *n)
{
    uint32_t count;

    if (len < MIG_DISKS_HDR)
        return -EBADMSG;
    memcpy(&count, p, 4);
    if (count > MIG_DISKS_MAX || len != MIG_DISKS_HDR + count * sizeof(*d))
        return -EBADMSG;
    memcpy(d, p + MIG_DISKS_HDR, count * sizeof(*d));
    *n = count;
    return 0;
}

uint32_t mig_disks_of(const struct vm *vm, struct mig_disk *d)
{
    uint32_t n = vm->cfg ? vm->cfg->ndisks : 0;

    for (uint32_t i = 0; i < n && i < MIG_DISKS_MAX; i++)
        d[i] = (struct mig_disk){ .index = i, .sectors = vm->blk[i].capacity,
                                  .flags = vm->blk[i].readonly ? MIG_DISK_READONLY : 0 };
    return n < MIG_DISKS_MAX ? n : MIG_DISKS_MAX;
}

static const char *mig_disk_mode(uint32_t flags)
{
    return flags & MIG_DISK_READONLY ? "read-only" : "writable";
}

int mig_disks_compare(const struct mig_disk *src, uint32_t n, const struct vm *vm,
                      char *why, size_t len)
{
    struct mig_disk here[MIG_DISKS_MAX];
    uint32_t m = mig_disks_of(vm, here);

    if (n != m)
        return snprintf(why, len, "the source VM has %u disk(s), this destination %u "
                        "(--disk)", n, m), -EINVAL;
    for (uint32_t i = 0; i < n; i++) {
        if (src[i].sectors != here[i].sectors)
            return snprintf(why, len, "disk %u: %llu sectors on the source, %llu here", i,
                            (unsigned long long)src[i].sectors,
                            (unsigned long long)here[i].sectors), -EINVAL;
        if ((src[i].flags ^ here[i].flags) & MIG_DISK_READONLY)
            return snprintf(why, len, "disk %u: %s on the source, %s here", i,
                            mig_disk_mode(src[i].flags), mig_disk_mode(here[i].flags)), -EINVAL;
    }
    return 0;
}
