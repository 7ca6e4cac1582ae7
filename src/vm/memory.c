#include "vm/memory.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "util/log.h"
#include "util/util.h"

unsigned mem_layout(uint64_t ram, struct mem_region *out)
{
    uint64_t low = MIN(ram, MEM_LOWMEM_MAX);

    out[0] = (struct mem_region){ .gpa = 0, .size = low, .offset = 0 };
    if (ram == low)
        return 1;
    out[1] = (struct mem_region){ .gpa = MEM_HIGHMEM_BASE, .size = ram - low, .offset = low };
    return 2;
}

int mem_check_size(uint64_t ram, uint64_t host_ram)
{
    if (ram < MEM_MIN_SIZE || ram % (2 * MIB))
        return -EINVAL;
    if (host_ram && ram > host_ram)
        return -E2BIG;
    return 0;
}

uint64_t mem_host_total(void)
{
    unsigned long long kib = 0;
    char line[256];
    FILE *f = fopen("/proc/meminfo", "r");

    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "MemTotal: %llu kB", &kib) == 1)
            break;
    fclose(f);
    return kib * KIB;
}

int mem_create(struct guest_mem *mem, uint64_t ram)
{
    memset(mem, 0, sizeof(*mem));
    mem->fd = memfd_create("ferry-guest-ram", MFD_CLOEXEC);
    if (mem->fd < 0)
        return -errno;
    if (ftruncate(mem->fd, (off_t)ram) < 0)
        goto fail;
    mem->hva = mmap(NULL, ram, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                    mem->fd, 0);
    if (mem->hva == MAP_FAILED)
        goto fail;
    /* Guest RAM must not end up in a core dump of ferry or be merged by THP
     * splitting decisions we did not ask for; it is the guest's, not ours. */
    madvise(mem->hva, ram, MADV_DONTDUMP);
    mem->size = ram;
    mem->nregions = mem_layout(ram, mem->regions);
    return 0;
fail:
    {
        int err = -errno;
        close(mem->fd);
        mem->fd = -1;
        mem->hva = NULL;
        return err;
    }
}

void mem_destroy(struct guest_mem *mem)
{
    mem_track_writes(mem, false);
    mem_track_writes(mem, false);   /* twice: frees the retired bitmaps too */
    if (mem->hva)
        munmap(mem->hva, mem->size);
    if (mem->fd >= 0)
        close(mem->fd);
    mem->hva = NULL;
    mem->fd = -1;
}

int mem_register(struct guest_mem *mem, int vm_fd)
{
    for (unsigned i = 0; i < mem->nregions; i++) {
        struct mem_region *r = &mem->regions[i];
        struct kvm_userspace_memory_region kr = {
            .slot = i,
            .guest_phys_addr = r->gpa,
            .memory_size = r->size,
            .userspace_addr = (uint64_t)(uintptr_t)(mem->hva + r->offset),
        };
        if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &kr) < 0) {
            int err = -errno;
            log_err("memory slot %u at 0x%llx: KVM_SET_USER_MEMORY_REGION: %s", i,
                    (unsigned long long)r->gpa, strerror(errno));
            return err;
        }
    }
    return 0;
}

void *mem_ptr(const struct guest_mem *mem, uint64_t gpa, uint64_t len)
{
    for (unsigned i = 0; i < mem->nregions; i++) {
        const struct mem_region *r = &mem->regions[i];
        if (gpa >= r->gpa && len <= r->size && gpa - r->gpa <= r->size - len)
            return mem->hva + r->offset + (gpa - r->gpa);
    }
    return NULL;
}

int mem_write(struct guest_mem *mem, uint64_t gpa, const void *src, size_t len)
{
    void *dst = mem_ptr(mem, gpa, len);

    if (!dst)
        return -EFAULT;
    memcpy(dst, src, len);
    mem_mark_written(mem, gpa, len);
    return 0;
}

void mem_mark_written(struct guest_mem *mem, uint64_t gpa, uint64_t len)
{
    for (unsigned i = 0; i < mem->nregions && len; i++) {
        const struct mem_region *r = &mem->regions[i];
        uint64_t *bm = __atomic_load_n(&mem->written[i], __ATOMIC_ACQUIRE);

        if (!bm || gpa < r->gpa || gpa - r->gpa >= r->size)
            continue;
        for (uint64_t p = (gpa - r->gpa) / PAGE_SIZE;
             p <= (gpa - r->gpa + len - 1) / PAGE_SIZE && p < r->size / PAGE_SIZE; p++)
            __atomic_fetch_or(&bm[p / 64], 1ULL << (p % 64), __ATOMIC_RELAXED);
    }
}

void mem_track_writes(struct guest_mem *mem, bool on)
{
    for (unsigned i = 0; i < mem->nregions; i++) {
        uint64_t *old, *bm = on ? calloc((mem->regions[i].size / PAGE_SIZE + 63) / 64, 8) : NULL;

        old = __atomic_exchange_n(&mem->written[i], bm, __ATOMIC_ACQ_REL);
        free(mem->retired[i]);
        mem->retired[i] = old;
    }
}

void mem_collect_writes(struct guest_mem *mem, unsigned i, uint64_t *bitmap)
{
    uint64_t *bm = __atomic_load_n(&mem->written[i], __ATOMIC_ACQUIRE);
    uint64_t words = (mem->regions[i].size / PAGE_SIZE + 63) / 64;

    for (uint64_t w = 0; bm && w < words; w++)
        bitmap[w] |= __atomic_exchange_n(&bm[w], 0, __ATOMIC_RELAXED);
}
