#include "arch/x86/e820.h"

#include <errno.h>

static int e820_add(struct e820_entry *out, unsigned *n, unsigned max,
                    uint64_t addr, uint64_t end, uint32_t type)
{
    if (end <= addr)
        return 0;
    if (*n >= max)
        return -E2BIG;
    out[(*n)++] = (struct e820_entry){ .addr = addr, .size = end - addr, .type = type };
    return 0;
}

/* Region 0 starts at 0 and holds the legacy area: RAM to the EBDA, the EBDA
 * and BIOS/ACPI area reserved, VGA hole absent, then RAM from 1 MiB. */
static int e820_low(const struct mem_region *r, struct e820_entry *out, unsigned *n,
                    unsigned max)
{
    uint64_t end = r->gpa + r->size;
    int ret = 0;

    ret |= e820_add(out, n, max, 0, E820_EBDA_START, E820_RAM);
    ret |= e820_add(out, n, max, E820_EBDA_START, 0xA0000, E820_RESERVED);
    ret |= e820_add(out, n, max, E820_BIOS_START, E820_HIGH_START, E820_RESERVED);
    ret |= e820_add(out, n, max, E820_HIGH_START, end, E820_RAM);
    return ret ? -E2BIG : 0;
}

int e820_build(const struct mem_region *regions, unsigned nregions,
               struct e820_entry *out, unsigned max)
{
    unsigned n = 0;
    int ret;

    for (unsigned i = 0; i < nregions; i++) {
        const struct mem_region *r = &regions[i];
        if (r->gpa == 0)
            ret = e820_low(r, out, &n, max);
        else
            ret = e820_add(out, &n, max, r->gpa, r->gpa + r->size, E820_RAM);
        if (ret < 0)
            return ret;
    }
    return (int)n;
}

uint64_t e820_ram_bytes(const struct e820_entry *map, unsigned n)
{
    uint64_t total = 0;

    for (unsigned i = 0; i < n; i++)
        if (map[i].type == E820_RAM)
            total += map[i].size;
    return total;
}
