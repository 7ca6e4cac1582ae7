/* Local x2APIC (MSR interface, TSC-deadline timer) and the IOAPIC (MMIO). */
#include "kernel.h"
#include "x86.h"

#define APIC_BASE_EXTD      (1ULL << 10)
#define APIC_BASE_EN        (1ULL << 11)
#define LVT_MASKED          (1u << 16)
#define LVT_TSC_DEADLINE    (2u << 17)
#define ICR_INIT            0x4500      /* INIT, level assert */
#define ICR_SIPI            0x4600      /* start-up, level assert */

#define IOAPIC_REGSEL       0x00
#define IOAPIC_WIN          0x10
#define IOAPIC_VER          0x01
#define IOAPIC_REDTBL(n)    (0x10 + 2 * (n))

/* CPUID.1:ECX bit 21 = x2APIC, bit 24 = TSC-deadline timer. */
bool apic_detect(void)
{
    u32 a, b, c, d;

    cpuid(1, 0, &a, &b, &c, &d);
    return (c & (1u << 21)) && (c & (1u << 24));
}

void apic_init_local(void)
{
    u64 base = rdmsr(MSR_APIC_BASE);

    /* xAPIC first, then x2APIC: the SDM's legal order of transitions. */
    if (!(base & APIC_BASE_EN))
        wrmsr(MSR_APIC_BASE, base |= APIC_BASE_EN);
    if (!(base & APIC_BASE_EXTD))
        wrmsr(MSR_APIC_BASE, base | APIC_BASE_EXTD);
    wrmsr(MSR_X2APIC_TPR, 0);
    wrmsr(MSR_X2APIC_SVR, 0x100 | VEC_SPURIOUS);
    wrmsr(MSR_X2APIC_LVT_LINT0, LVT_MASKED);    /* 8259s are masked; no ExtINT */
    wrmsr(MSR_X2APIC_LVT_ERROR, LVT_MASKED);
    /* The mode must be set before IA32_TSC_DEADLINE writes are honoured. */
    wrmsr(MSR_X2APIC_LVT_TIMER, VEC_TIMER | LVT_TSC_DEADLINE);
}

u32 apic_id(void)
{
    return (u32)rdmsr(MSR_X2APIC_ID);
}

void apic_eoi(void)
{
    wrmsr(MSR_X2APIC_EOI, 0);
}

/* x2APIC ICR is one MSR write with the destination in the high half; no busy bit. */
void apic_send_init(u32 apic)
{
    wrmsr(MSR_X2APIC_ICR, ((u64)apic << 32) | ICR_INIT);
}

void apic_send_sipi(u32 apic, u8 vector)
{
    wrmsr(MSR_X2APIC_ICR, ((u64)apic << 32) | ICR_SIPI | vector);
}

static u32 ioapic_read(u64 base, u32 reg)
{
    *(volatile u32 *)(base + IOAPIC_REGSEL) = reg;
    return *(volatile u32 *)(base + IOAPIC_WIN);
}

static void ioapic_write(u64 base, u32 reg, u32 val)
{
    *(volatile u32 *)(base + IOAPIC_REGSEL) = reg;
    *(volatile u32 *)(base + IOAPIC_WIN) = val;
}

/* Edge/high unless an interrupt source override says otherwise (MPS INTI flags). */
static u32 ioapic_rte_low(u8 vector, u16 flags)
{
    u32 low = vector;

    if ((flags & 3) == 3)
        low |= 1u << 13;        /* active low */
    if (((flags >> 2) & 3) == 3)
        low |= 1u << 15;        /* level triggered */
    return low;
}

/* Routes ISA IRQ `irq` (through its override, if any) to `vector` on `dest_apic`. */
void ioapic_route_isa(u8 irq, u8 vector, u32 dest_apic)
{
    u32 gsi = acpi.isa_gsi[irq];

    for (u32 i = 0; i < acpi.nioapics; i++) {
        u64 base = acpi.ioapic[i].addr;
        u32 first = acpi.ioapic[i].gsi_base;
        u32 count = ((ioapic_read(base, IOAPIC_VER) >> 16) & 0xff) + 1;

        if (gsi < first || gsi >= first + count)
            continue;
        ioapic_write(base, IOAPIC_REDTBL(gsi - first) + 1, dest_apic << 24);
        ioapic_write(base, IOAPIC_REDTBL(gsi - first), ioapic_rte_low(vector, acpi.isa_flags[irq]));
        return;
    }
    kprintf("WARN no IOAPIC for GSI %u (IRQ %u): serial input disabled\n", gsi, irq);
}
