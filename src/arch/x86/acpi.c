#include "arch/x86/acpi.h"

#include <errno.h>
#include <string.h>

struct acpi_buf {
    uint8_t *p;
    size_t cap;
    size_t len;
    uint64_t base;
};

uint8_t acpi_checksum(const uint8_t *p, size_t len)
{
    uint8_t sum = 0;

    for (size_t i = 0; i < len; i++)
        sum = (uint8_t)(sum + p[i]);
    return (uint8_t)(0 - sum);
}

static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* Reserves len bytes (16-byte aligned start) and returns their offset. */
static long acpi_alloc(struct acpi_buf *b, size_t len)
{
    size_t off = (b->len + 15) & ~(size_t)15;

    if (off + len > b->cap)
        return -ENOSPC;
    memset(b->p + off, 0, len);
    b->len = off + len;
    return (long)off;
}

static void acpi_header(uint8_t *t, const char *sig, uint32_t len, uint8_t rev)
{
    memcpy(t, sig, 4);
    put32(t + 4, len);
    t[8] = rev;
    memcpy(t + 10, "FERRY ", 6);
    memcpy(t + 16, "FERRYVM ", 8);
    put32(t + 24, 1);
    memcpy(t + 28, "FRRY", 4);
    put32(t + 32, 1);
}

static void acpi_seal(uint8_t *t, uint32_t len)
{
    t[9] = 0;
    t[9] = acpi_checksum(t, len);
}

/* \_S5 = Package { 5, 5, 0, 0 }: the SLP_TYP the guest writes to power off. */
static const uint8_t dsdt_aml[] = {
    0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x04,
    0x0A, ACPI_S5_SLP_TYP, 0x0A, ACPI_S5_SLP_TYP, 0x00, 0x00,
};

static long acpi_dsdt(struct acpi_buf *b)
{
    uint32_t len = 36 + sizeof(dsdt_aml);
    long off = acpi_alloc(b, len);

    if (off < 0)
        return off;
    acpi_header(b->p + off, "DSDT", len, 2);
    memcpy(b->p + off + 36, dsdt_aml, sizeof(dsdt_aml));
    acpi_seal(b->p + off, len);
    return off;
}

/* Generic address structure for an I/O port register. */
static void acpi_gas_io(uint8_t *p, uint8_t bits, uint16_t port)
{
    p[0] = 1;        /* system I/O */
    p[1] = bits;
    p[3] = bits == 8 ? 1 : bits == 16 ? 2 : 3;
    put64(p + 4, port);
}

static void fadt_pm_blocks(uint8_t *t)
{
    put32(t + 56, ACPI_PM_BASE);
    put32(t + 64, ACPI_PM1_CNT);
    put32(t + 76, ACPI_PM_TMR);
    t[88] = 4;       /* PM1 event block: status + enable */
    t[89] = 2;
    t[91] = 4;
    acpi_gas_io(t + 148, 32, ACPI_PM_BASE);
    acpi_gas_io(t + 172, 16, ACPI_PM1_CNT);
    acpi_gas_io(t + 208, 32, ACPI_PM_TMR);
}

static long acpi_fadt(struct acpi_buf *b, uint64_t dsdt)
{
    const uint32_t len = 276;
    long off = acpi_alloc(b, len);
    uint8_t *t;

    if (off < 0)
        return off;
    t = b->p + off;
    acpi_header(t, "FACP", len, 6);
    put32(t + 40, (uint32_t)dsdt);
    put16(t + 46, ACPI_SCI_IRQ);
    /* SMI_CMD stays 0: no SMM, ACPI is always enabled. */
    fadt_pm_blocks(t);
    /* WBINVD, C1 supported, sleep button absent, 32-bit PM timer, reset register. */
    put32(t + 112, (1u << 0) | (1u << 2) | (1u << 5) | (1u << 8) | (1u << 10));
    acpi_gas_io(t + 116, 8, ACPI_RESET_PORT);
    t[128] = ACPI_RESET_VALUE;
    t[131] = 1;      /* FADT minor version 6.1 */
    put64(t + 140, dsdt);
    acpi_seal(t, len);
    return off;
}

static size_t madt_cpus(uint8_t *e, unsigned ncpus)
{
    for (unsigned i = 0; i < ncpus; i++, e += 8) {
        e[0] = 0;            /* processor local APIC */
        e[1] = 8;
        e[2] = (uint8_t)i;   /* ACPI processor id */
        e[3] = (uint8_t)i;   /* APIC id, as CPUID reports it */
        put32(e + 4, 1);     /* enabled */
    }
    return 8 * (size_t)ncpus;
}

static void madt_iso(uint8_t *e, uint8_t irq, uint32_t gsi, uint16_t flags)
{
    e[0] = 2;
    e[1] = 10;
    e[3] = irq;
    put32(e + 4, gsi);
    put16(e + 8, flags);
}

static size_t madt_io(uint8_t *e)
{
    e[0] = 1;                /* I/O APIC */
    e[1] = 12;
    e[2] = 0;
    put32(e + 4, IOAPIC_ADDR);
    madt_iso(e + 12, 0, 2, 0);                    /* PIT on pin 2, as on PCs */
    madt_iso(e + 22, ACPI_SCI_IRQ, ACPI_SCI_IRQ, 0x000D); /* level, active high */
    e[32] = 4;               /* local APIC NMI on LINT1 of every CPU */
    e[33] = 6;
    e[34] = 0xFF;
    e[37] = 1;
    return 38;
}

static long acpi_madt(struct acpi_buf *b, unsigned ncpus)
{
    uint32_t len = 44 + 8 * ncpus + 38;
    long off = acpi_alloc(b, len);
    uint8_t *t;

    if (off < 0)
        return off;
    t = b->p + off;
    acpi_header(t, "APIC", len, 5);
    put32(t + 36, LAPIC_ADDR);
    put32(t + 40, 1);        /* PCAT_COMPAT: 8259 PICs are present */
    madt_io(t + 44 + madt_cpus(t + 44, ncpus));
    acpi_seal(t, len);
    return off;
}

static long acpi_xsdt(struct acpi_buf *b, const uint64_t *tables, unsigned n)
{
    uint32_t len = 36 + 8 * n;
    long off = acpi_alloc(b, len);

    if (off < 0)
        return off;
    acpi_header(b->p + off, "XSDT", len, 1);
    for (unsigned i = 0; i < n; i++)
        put64(b->p + off + 36 + 8 * i, tables[i]);
    acpi_seal(b->p + off, len);
    return off;
}

static void acpi_rsdp(uint8_t *r, uint64_t xsdt)
{
    memcpy(r, "RSD PTR ", 8);
    memcpy(r + 9, "FERRY ", 6);
    r[15] = 2;               /* ACPI 2.0+: XSDT */
    put32(r + 20, 36);
    put64(r + 24, xsdt);
    r[8] = acpi_checksum(r, 20);
    r[32] = acpi_checksum(r, 36);
}

int acpi_build(uint8_t *buf, size_t cap, uint64_t base, unsigned ncpus)
{
    struct acpi_buf b = { .p = buf, .cap = cap, .base = base };
    long rsdp = acpi_alloc(&b, 36);
    long dsdt = rsdp < 0 ? rsdp : acpi_dsdt(&b);
    long fadt = dsdt < 0 ? dsdt : acpi_fadt(&b, base + (uint64_t)dsdt);
    long madt = fadt < 0 ? fadt : acpi_madt(&b, ncpus);
    uint64_t tables[2] = { base + (uint64_t)fadt, base + (uint64_t)madt };
    long xsdt = madt < 0 ? madt : acpi_xsdt(&b, tables, 2);

    if (xsdt < 0 || ncpus == 0 || ncpus > 255)
        return xsdt < 0 ? (int)xsdt : -EINVAL;
    acpi_rsdp(buf + rsdp, base + (uint64_t)xsdt);
    return (int)b.len;
}
