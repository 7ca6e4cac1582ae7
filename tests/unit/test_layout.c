/* Guest physical layout: RAM regions, the e820 map, and the ACPI tables. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "arch/x86/acpi.h"
#include "arch/x86/e820.h"
#include "util/util.h"
#include "vm/memory.h"

static void test_mem_layout_small(void **state)
{
    struct mem_region r[MEM_MAX_REGIONS];

    (void)state;
    assert_int_equal(mem_layout(128 * MIB, r), 1);
    assert_int_equal(r[0].gpa, 0);
    assert_int_equal(r[0].size, 128 * MIB);
    assert_int_equal(mem_layout(3 * GIB, r), 1);
}

static void test_mem_layout_hole(void **state)
{
    struct mem_region r[MEM_MAX_REGIONS];

    (void)state;
    assert_int_equal(mem_layout(8 * GIB, r), 2);
    assert_int_equal(r[0].size, MEM_LOWMEM_MAX);
    assert_int_equal(r[1].gpa, 4 * GIB);
    assert_int_equal(r[1].size, 8 * GIB - MEM_LOWMEM_MAX);
    assert_int_equal(r[1].offset, MEM_LOWMEM_MAX);   /* contiguous in the memfd */
}

static void test_mem_check_size(void **state)
{
    (void)state;
    assert_int_equal(mem_check_size(0, 16 * GIB), -EINVAL);
    assert_int_equal(mem_check_size(MIB, 16 * GIB), -EINVAL);
    assert_int_equal(mem_check_size(129 * MIB, 16 * GIB), -EINVAL);  /* odd MiB */
    assert_int_equal(mem_check_size(128 * MIB, 16 * GIB), 0);
    assert_int_equal(mem_check_size(32 * GIB, 16 * GIB), -E2BIG);
}

static void test_e820_small(void **state)
{
    struct mem_region r[MEM_MAX_REGIONS];
    struct e820_entry map[E820_MAX];
    int n;

    (void)state;
    n = e820_build(r, mem_layout(128 * MIB, r), map, E820_MAX);
    assert_int_equal(n, 4);
    assert_int_equal(map[0].addr, 0);
    assert_int_equal(map[0].type, E820_RAM);
    assert_int_equal(map[0].addr + map[0].size, E820_EBDA_START);
    assert_int_equal(map[2].addr, E820_BIOS_START);
    assert_int_equal(map[2].type, E820_RESERVED);
    assert_int_equal(map[3].addr, MIB);
    assert_int_equal(map[3].addr + map[3].size, 128 * MIB);
    /* Nothing overlaps and the map is sorted. */
    for (int i = 1; i < n; i++)
        assert_true(map[i].addr >= map[i - 1].addr + map[i - 1].size);
}

static void test_e820_high(void **state)
{
    struct mem_region r[MEM_MAX_REGIONS];
    struct e820_entry map[E820_MAX];
    int n;

    (void)state;
    n = e820_build(r, mem_layout(8 * GIB, r), map, E820_MAX);
    assert_int_equal(n, 5);
    assert_int_equal(map[3].addr + map[3].size, MEM_LOWMEM_MAX);   /* PCI hole */
    assert_int_equal(map[4].addr, 4 * GIB);
    /* RAM = all memory less the 640K-1M hole. */
    assert_int_equal(e820_ram_bytes(map, (unsigned)n), 8 * GIB - (MIB - E820_EBDA_START));
    assert_int_equal(e820_build(r, 2, map, 3), -E2BIG);
}

static uint8_t sum(const uint8_t *p, size_t n)
{
    uint8_t s = 0;

    for (size_t i = 0; i < n; i++)
        s = (uint8_t)(s + p[i]);
    return s;
}

static const uint8_t *table_at(const uint8_t *buf, uint64_t gpa)
{
    return buf + (gpa - ACPI_BASE);
}

static const uint8_t *xsdt_find(const uint8_t *buf, const uint8_t *xsdt, const char *sig)
{
    uint32_t len;

    memcpy(&len, xsdt + 4, 4);
    for (uint32_t off = 36; off < len; off += 8) {
        uint64_t addr;
        memcpy(&addr, xsdt + off, 8);
        if (memcmp(table_at(buf, addr), sig, 4) == 0)
            return table_at(buf, addr);
    }
    return NULL;
}

static void check_table(const uint8_t *t, const char *sig)
{
    uint32_t len;

    assert_non_null(t);
    assert_memory_equal(t, sig, 4);
    memcpy(&len, t + 4, 4);
    assert_int_equal(sum(t, len), 0);
}

static void test_acpi_tables(void **state)
{
    static uint8_t buf[ACPI_MAX_SIZE];
    const uint8_t *xsdt, *madt, *fadt, *dsdt;
    uint64_t addr;
    uint32_t len, dsdt32;

    (void)state;
    assert_true(acpi_build(buf, sizeof(buf), ACPI_BASE, 4) > 0);
    assert_memory_equal(buf, "RSD PTR ", 8);
    assert_int_equal(sum(buf, 20), 0);
    assert_int_equal(sum(buf, 36), 0);
    memcpy(&addr, buf + 24, 8);
    xsdt = table_at(buf, addr);
    check_table(xsdt, "XSDT");
    madt = xsdt_find(buf, xsdt, "APIC");
    check_table(madt, "APIC");
    memcpy(&len, madt + 4, 4);
    /* Four enabled local APICs with ids 0..3, then the I/O APIC. */
    for (int i = 0; i < 4; i++) {
        assert_int_equal(madt[44 + 8 * i], 0);
        assert_int_equal(madt[44 + 8 * i + 3], i);
        assert_int_equal(madt[44 + 8 * i + 4], 1);
    }
    assert_int_equal(madt[44 + 32], 1);
    fadt = xsdt_find(buf, xsdt, "FACP");
    check_table(fadt, "FACP");
    memcpy(&dsdt32, fadt + 40, 4);
    dsdt = table_at(buf, dsdt32);
    check_table(dsdt, "DSDT");
    assert_non_null(memmem(dsdt, 60, "_S5_", 4));
}

static void test_acpi_limits(void **state)
{
    static uint8_t buf[ACPI_MAX_SIZE];

    (void)state;
    assert_int_equal(acpi_build(buf, 64, ACPI_BASE, 2), -ENOSPC);
    assert_int_equal(acpi_build(buf, sizeof(buf), ACPI_BASE, 0), -EINVAL);
    assert_int_equal(acpi_checksum((const uint8_t *)"\x01\x02", 2), 0xfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mem_layout_small),
        cmocka_unit_test(test_mem_layout_hole),
        cmocka_unit_test(test_mem_check_size),
        cmocka_unit_test(test_e820_small),
        cmocka_unit_test(test_e820_high),
        cmocka_unit_test(test_acpi_tables),
        cmocka_unit_test(test_acpi_limits),
    };
    return cmocka_run_group_tests_name("layout", tests, NULL, NULL);
}
