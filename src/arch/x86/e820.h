/* The guest physical memory map: e820 for Linux, the PVH memmap for the rest. */
#ifndef FERRY_ARCH_X86_E820_H
#define FERRY_ARCH_X86_E820_H

#include <stdint.h>

#include "vm/memory.h"

#define E820_RAM      1
#define E820_RESERVED 2
#define E820_ACPI     3
#define E820_MAX      16

/* Fixed holes the layout keeps free of RAM below 1 MiB. */
#define E820_EBDA_START  0x9FC00ULL
#define E820_BIOS_START  0xE0000ULL   /* ACPI tables and the RSDP live here */
#define E820_HIGH_START  0x100000ULL

struct e820_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
};

/* Builds the map from the RAM regions (pure). Returns the entry count or -E2BIG. */
int e820_build(const struct mem_region *regions, unsigned nregions,
               struct e820_entry *out, unsigned max);
/* Sum of RAM bytes in a map. */
uint64_t e820_ram_bytes(const struct e820_entry *map, unsigned n);

#endif
