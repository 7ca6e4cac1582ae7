/*
 * ACPI: RSDP -> XSDT/RSDT -> MADT (CPUs, IOAPICs, overrides) and FADT (PM1a control,
 * DSDT) at boot; the DSDT's \_S5 package later, at CPL3, because scanning thousands
 * of AML bytes is a long byte loop that the CPL0 emulator would crawl through.
 */
#include "kernel.h"
#include "x86.h"

#define RSDP_SIG 0x2052545020445352ULL   /* "RSD PTR " */

struct sdt_hdr {
    char sig[4];
    u32 length;
    u8 revision;
    u8 checksum;
    char oem[6];
    char oem_table[8];
    u32 oem_rev;
    u32 creator;
    u32 creator_rev;
} __packed;

struct acpi_info acpi;

static u16 rd16(const u8 *p) { return ((const struct __packed { u16 v; } *)p)->v; }
static u32 rd32(const u8 *p) { return ((const struct __packed { u32 v; } *)p)->v; }
static u64 rd64(const u8 *p) { return ((const struct __packed { u64 v; } *)p)->v; }

static bool acpi_checksum_ok(const void *p, size_t n)
{
    const u8 *b = p;
    u8 sum = 0;

    for (size_t i = 0; i < n; i++)
        sum += b[i];
    return sum == 0;
}

static bool acpi_sig_is(const struct sdt_hdr *h, const char *sig)
{
    return memcmp(h->sig, sig, 4) == 0;
}

/* A table at pa with a valid checksum, or NULL (with a line saying why if it is bad). */
static const struct sdt_hdr *acpi_table(u64 pa)
{
    const struct sdt_hdr *h = (const struct sdt_hdr *)pa;

    if (!pa || h->length < sizeof(*h))
        return NULL;
    if (!acpi_checksum_ok(h, h->length)) {
        kprintf("WARN acpi: bad checksum in %c%c%c%c at 0x%lx\n",
                h->sig[0], h->sig[1], h->sig[2], h->sig[3], pa);
        return NULL;
    }
    return h;
}

/* The start info's RSDP, else the BIOS area scan (QEMU's PVH path may pass 0). */
static u64 acpi_find_rsdp(void)
{
    if (boot.rsdp)
        return boot.rsdp;
    for (u64 a = 0xe0000; a < 0x100000; a += 16)
        if (*(const u64 *)a == RSDP_SIG && acpi_checksum_ok((const void *)a, 20))
            return a;
    return 0;
}

static void acpi_add_cpu(u32 apic)
{
    for (u32 i = 0; i < acpi.ncpus; i++)
        if (acpi.cpu_apic[i] == apic)
            return;     /* listed as both type 0 and type 9 */
    if (acpi.ncpus == MAX_CPUS) {
        kprintf("WARN acpi: more than %u CPUs, ignoring APIC ID %u\n", MAX_CPUS, apic);
        return;
    }
    acpi.cpu_apic[acpi.ncpus++] = apic;
}

static void acpi_parse_madt_entry(const u8 *e)
{
    switch (e[0]) {
    case 0:     /* processor local APIC */
        if (e[1] >= 8 && (rd32(e + 4) & 1))
            acpi_add_cpu(e[3]);
        break;
    case 9:     /* processor local x2APIC */
        if (e[1] >= 16 && (rd32(e + 8) & 1))
            acpi_add_cpu(rd32(e + 4));
        break;
    case 1:     /* IOAPIC */
        if (e[1] >= 12 && acpi.nioapics < ACPI_MAX_IOAPICS) {
            acpi.ioapic[acpi.nioapics].addr = rd32(e + 4);
            acpi.ioapic[acpi.nioapics++].gsi_base = rd32(e + 8);
        }
        break;
    case 2:     /* interrupt source override, ISA bus */
        if (e[1] >= 10 && e[2] == 0 && e[3] < 16) {
            acpi.isa_gsi[e[3]] = rd32(e + 4);
            acpi.isa_flags[e[3]] = rd16(e + 8);
        }
        break;
    }
}

static void acpi_parse_madt(const struct sdt_hdr *h)
{
    const u8 *p = (const u8 *)h + 44, *end = (const u8 *)h + h->length;

    acpi.have_madt = true;
    while (p + 2 <= end && p[1] >= 2 && p + p[1] <= end) {
        acpi_parse_madt_entry(p);
        p += p[1];
    }
}

static void acpi_parse_fadt(const struct sdt_hdr *h)
{
    const u8 *f = (const u8 *)h;

    if (h->length >= 68)
        acpi.pm1a_cnt = (u16)rd32(f + 64);
    if (!acpi.pm1a_cnt && h->length >= 184 && f[172] == 1)     /* X_PM1a_CNT_BLK, I/O space */
        acpi.pm1a_cnt = (u16)rd64(f + 176);
    if (h->length >= 256 && f[244] <= 1) {                      /* SLEEP_CONTROL_REG */
        acpi.sleep_ctl_space = f[244];
        acpi.sleep_ctl = rd64(f + 248);
    }
    acpi.dsdt = h->length >= 148 && rd64(f + 140) ? rd64(f + 140) : rd32(f + 40);
}

/* XSDT when the RSDP (revision >= 2, valid extended checksum) offers one, else RSDT. */
static const struct sdt_hdr *acpi_root(const u8 *rsdp, u32 *entry_size)
{
    if (rsdp[15] >= 2 && rd64(rsdp + 24) && acpi_checksum_ok(rsdp, rd32(rsdp + 20))) {
        *entry_size = 8;
        return acpi_table(rd64(rsdp + 24));
    }
    *entry_size = 4;
    return acpi_table(rd32(rsdp + 16));
}

void acpi_init(void)
{
    const struct sdt_hdr *root;
    u32 esize;

    for (u32 i = 0; i < 16; i++)
        acpi.isa_gsi[i] = i;    /* identity unless overridden */
    acpi.rsdp = acpi_find_rsdp();
    if (!acpi.rsdp) {
        kprintf("WARN acpi: no RSDP; 1 CPU, no serial input, no poweroff\n");
        return;
    }
    root = acpi_root((const u8 *)acpi.rsdp, &esize);
    if (!root) {
        kprintf("WARN acpi: no valid XSDT/RSDT; 1 CPU, no serial input, no poweroff\n");
        return;
    }
    for (u32 off = sizeof(*root); off + esize <= root->length; off += esize) {
        const u8 *p = (const u8 *)root + off;
        const struct sdt_hdr *t = acpi_table(esize == 8 ? rd64(p) : rd32(p));

        if (t && acpi_sig_is(t, "APIC"))
            acpi_parse_madt(t);
        else if (t && acpi_sig_is(t, "FACP"))
            acpi_parse_fadt(t);
    }
    if (!acpi.have_madt)
        kprintf("WARN acpi: no MADT; 1 CPU, no serial input\n");
}

/* First element of the package after "_S5_": BytePrefix n, ZeroOp or OneOp. */
static bool acpi_s5_value(const u8 *q, const u8 *end, u8 *out)
{
    q += ((*q >> 6) & 3) + 1;   /* PkgLength */
    q++;                        /* NumElements */
    if (q + 1 >= end)
        return false;
    switch (q[0]) {
    case 0x0a: *out = q[1]; return true;
    case 0x00: *out = 0; return true;
    case 0x01: *out = 1; return true;
    }
    return false;
}

/* Finds SLP_TYPa for S5 in the DSDT. Runs at CPL3. Returns NULL or what is missing. */
const char *acpi_power_probe(void)
{
    const struct sdt_hdr *d = (const struct sdt_hdr *)acpi.dsdt;
    const u8 *p, *end;

    if (!acpi.pm1a_cnt && !acpi.sleep_ctl)
        return "no PM1a control block or sleep control register in the FADT";
    if (!d || !acpi_sig_is(d, "DSDT") || d->length < sizeof(*d))
        return "no DSDT";
    if (!acpi_checksum_ok(d, d->length))
        return "bad DSDT checksum";
    end = (const u8 *)d + d->length;
    for (p = (const u8 *)(d + 1); p + 6 < end; p++) {
        if (p[0] == '_' && p[1] == 'S' && p[2] == '5' && p[3] == '_' && p[4] == 0x12 &&
            acpi_s5_value(p + 5, end, &acpi.s5_slp_typ)) {
            acpi.have_s5 = true;
            return NULL;
        }
    }
    return "no _S5_ package in DSDT";
}

/* S5: SLP_TYP | SLP_EN into PM1a_CNT, or, on hardware-reduced platforms, the sleep
 * control register's SLP_TYP (bits 2-4) | SLP_EN (bit 5). */
void acpi_poweroff(void)
{
    u8 ctl = (u8)((acpi.s5_slp_typ & 7) << 2 | 1 << 5);

    if (!acpi.have_s5)
        return;
    if (acpi.pm1a_cnt)
        outw(acpi.pm1a_cnt, (u16)((acpi.s5_slp_typ & 7) << 10 | 1 << 13));
    else if (acpi.sleep_ctl_space == 1)
        outb((u16)acpi.sleep_ctl, ctl);
    else
        *(volatile u8 *)acpi.sleep_ctl = ctl;
}
