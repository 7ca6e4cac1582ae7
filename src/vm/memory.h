/* Guest RAM: one memfd, mapped once, cut into KVM slots around the PCI hole.
 * Every user of guest memory (loaders, devices, dirty tracking, snapshot,
 * post-copy) goes through this region table. */
#ifndef FERRY_VM_MEMORY_H
#define FERRY_VM_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MEM_LOWMEM_MAX   0xC0000000ULL   /* RAM below 4 GiB stops here; PCI hole above */
#define MEM_HIGHMEM_BASE 0x100000000ULL
#define MEM_MAX_REGIONS  2
#define MEM_MIN_SIZE     (32ULL << 20)

struct mem_region {
    uint64_t gpa;
    uint64_t size;
    uint64_t offset;   /* into the memfd and the host mapping */
};

struct guest_mem {
    int fd;                 /* memfd: shared so post-copy and upgrade can reuse it */
    uint8_t *hva;           /* whole memfd mapped here */
    uint64_t size;          /* RAM bytes */
    unsigned nregions;
    struct mem_region regions[MEM_MAX_REGIONS];
    /* Pages ferry itself wrote while migration tracks writes (one bitmap
     * per region, NULL when not tracking); merged into KVM's dirty log. */
    uint64_t *written[MEM_MAX_REGIONS];
    /* Bitmaps of the last tracking period, freed only at the next start or
     * at destroy: a device worker may still be setting a bit in one when a
     * cancelled migration stops tracking with the VM running. */
    uint64_t *retired[MEM_MAX_REGIONS];
};

/* Splits ram bytes into regions (pure; unit-tested). Returns the count. */
unsigned mem_layout(uint64_t ram, struct mem_region *out);
/* Checks a requested RAM size against limits and the host; -EINVAL / -E2BIG. */
int mem_check_size(uint64_t ram, uint64_t host_ram);
int mem_create(struct guest_mem *mem, uint64_t ram);
void mem_destroy(struct guest_mem *mem);
int mem_register(struct guest_mem *mem, int vm_fd);
/* Host pointer for [gpa, gpa+len) if it lies inside one region, else NULL. */
void *mem_ptr(const struct guest_mem *mem, uint64_t gpa, uint64_t len);
/* Copies into guest memory; -EFAULT if the range is not RAM. */
int mem_write(struct guest_mem *mem, uint64_t gpa, const void *src, size_t len);
/* Marks [gpa, gpa+len) as written by ferry (no-op unless tracking). */
void mem_mark_written(struct guest_mem *mem, uint64_t gpa, uint64_t len);
void mem_track_writes(struct guest_mem *mem, bool on);
/* ORs the pages ferry wrote in region i into bitmap and forgets them. */
void mem_collect_writes(struct guest_mem *mem, unsigned i, uint64_t *bitmap);
/* The host's RAM in bytes, from /proc/meminfo (0 if unknown). */
uint64_t mem_host_total(void);

#endif
