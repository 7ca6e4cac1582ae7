/* AP bring-up: INIT-SIPI-SIPI through the x2APIC ICR into the 0x8000 trampoline. */
#include "kernel.h"
#include "x86.h"

#define AP_INIT_DELAY_NS    (10 * NS_PER_MS)
#define AP_SIPI_DELAY_NS    (200 * NS_PER_US)
#define AP_TIMEOUT_NS       (2 * NS_PER_SEC)   /* the AP's path is emulated: be patient */

enum ap_state { AP_OFF, AP_BOOTING, AP_UP, AP_ABANDONED };

extern const u8 tramp_start[], tramp_end[];

/* Read by ap_entry64: the slot (and so the stack) of the AP starting now. */
volatile u32 ap_boot_index;
static volatile u32 ap_state[MAX_CPUS];

static bool smp_wait_up(u32 cpu, u64 ns)
{
    u64 end = kernel_now_ns() + ns;

    while (ap_state[cpu] != AP_UP) {
        if (kernel_now_ns() >= end)
            return false;
        cpu_relax();
    }
    return true;
}

/* One AP at a time, so the single ap_boot_index hand-over needs no locking. */
static bool smp_start_ap(u32 cpu, u32 apic)
{
    ap_boot_index = cpu;
    cpu_apic_id[cpu] = apic;
    ap_state[cpu] = AP_BOOTING;
    apic_send_sipi(apic, TRAMP_BASE >> 12);
    if (smp_wait_up(cpu, AP_SIPI_DELAY_NS))
        return true;
    apic_send_sipi(apic, TRAMP_BASE >> 12);     /* ignored if the first one took */
    if (smp_wait_up(cpu, AP_TIMEOUT_NS))
        return true;
    ap_state[cpu] = AP_ABANDONED;
    return false;
}

void smp_boot_aps(void)
{
    u32 bsp = apic_id();

    ncpus = 1;
    cpu_apic_id[0] = bsp;
    if (acpi.ncpus <= 1)
        return;
    memcpy((void *)TRAMP_BASE, tramp_start, (size_t)(tramp_end - tramp_start));
    /* INIT everyone, wait once, then SIPI one by one. */
    for (u32 i = 0; i < acpi.ncpus; i++)
        if (acpi.cpu_apic[i] != bsp)
            apic_send_init(acpi.cpu_apic[i]);
    kernel_delay_ns(AP_INIT_DELAY_NS);
    for (u32 i = 0; i < acpi.ncpus; i++) {
        if (acpi.cpu_apic[i] == bsp)
            continue;
        if (!smp_start_ap(ncpus, acpi.cpu_apic[i])) {
            /* A late riser would take the next slot's stack: stop here instead. */
            kprintf("WARN cpu with APIC ID %u did not start; no more CPUs started\n",
                    acpi.cpu_apic[i]);
            break;
        }
        ncpus++;
    }
}

__noreturn void ap_main(u32 cpu)
{
    if (ap_state[cpu] != AP_BOOTING)
        kernel_halt();      /* came up after the BSP gave up on it */
    cpu_init_local(cpu);
    apic_init_local();
    kvmclock_enable(cpu);
    ap_state[cpu] = AP_UP;
    cpu_enter_user(cpu);
}
