/* ACPI tables: RSDP, XSDT, FADT, MADT, DSDT. Enough for SMP discovery and
 * for poweroff/reset through the fixed PM registers. */
#ifndef FERRY_ARCH_X86_ACPI_H
#define FERRY_ARCH_X86_ACPI_H

#include <stddef.h>
#include <stdint.h>

#define ACPI_BASE        0xE0000ULL   /* where the RSDP and tables are placed */
#define ACPI_MAX_SIZE    0x10000ULL
#define ACPI_PM_BASE     0x600        /* PM1a event block */
#define ACPI_PM1_CNT     (ACPI_PM_BASE + 4)
#define ACPI_PM_TMR      (ACPI_PM_BASE + 8)
#define ACPI_PM_LEN      12
#define ACPI_SCI_IRQ     9
#define ACPI_S5_SLP_TYP  5            /* the value our DSDT's \_S5 names */
#define ACPI_RESET_PORT  0xCF9
#define ACPI_RESET_VALUE 0x06
#define IOAPIC_ADDR      0xFEC00000U
#define LAPIC_ADDR       0xFEE00000U

/* Builds all tables into buf (cap bytes) as they will sit at guest address
 * base; the RSDP is at offset 0. Returns bytes used or -ENOSPC. */
int acpi_build(uint8_t *buf, size_t cap, uint64_t base, unsigned ncpus);
/* The byte that makes a table's bytes sum to zero. */
uint8_t acpi_checksum(const uint8_t *p, size_t len);

#endif
