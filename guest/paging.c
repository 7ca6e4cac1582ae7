/*
 * MMIO mappings for the CPL3 drivers (system call SYS_MAP_UC). The static identity map
 * covers 0..64 GiB write-back; a BAR gets its 2 MiB page remapped uncached, and a BAR
 * above 64 GiB (QEMU may put 64-bit BARs high) gets new tables from a small spare pool.
 */
#include "kernel.h"

#define PTE_P       0x1ULL
#define PTE_W       0x2ULL
#define PTE_U       0x4ULL
#define PTE_PWT     0x8ULL
#define PTE_PCD     0x10ULL
#define PTE_PS      0x80ULL
#define PTE_ADDR    0x000ffffffffff000ULL
#define PA_LIMIT    (1ULL << 52)
#define PAGE_2M     (2 * MIB)

extern u64 boot_pml4[512];
extern u64 pt_spare[PT_SPARE][512];     /* pagetables.S: zeros from the file */
static u32 pt_spare_used;

/* The table an entry points to, taking a spare one if it is not present yet. */
static u64 *paging_next(u64 *entry)
{
    if (!(*entry & PTE_P)) {
        if (pt_spare_used == PT_SPARE)
            return NULL;
        *entry = (u64)pt_spare[pt_spare_used++] | PTE_P | PTE_W | PTE_U;
    }
    if (*entry & PTE_PS)
        return NULL;
    return (u64 *)(*entry & PTE_ADDR);
}

/* Identity-maps pa's 2 MiB page uncached (PCD|PWT, PAT index 3) for CPL3. 0 or -1. */
s64 paging_map_uc(u64 pa)
{
    u64 *pdpt, *pd;

    if (pa >= PA_LIMIT)
        return -1;
    pdpt = paging_next(&boot_pml4[(pa >> 39) & 511]);
    pd = pdpt ? paging_next(&pdpt[(pa >> 30) & 511]) : NULL;
    if (!pd)
        return -1;
    pd[(pa >> 21) & 511] = (pa & ~(PAGE_2M - 1)) | PTE_P | PTE_W | PTE_U | PTE_PS | PTE_PCD |
                           PTE_PWT;
    asm volatile("mov %%cr3, %%rax; mov %%rax, %%cr3" : : : "rax", "memory");
    return 0;
}
