/* kvmclock: per-CPU pvclock areas, kernel-side delays and the sleep system call. */
#include "kernel.h"
#include "pvclock.h"

#define KVM_FEATURE_CLOCKSOURCE2 (1u << 3)

/* Written by the hypervisor before the vCPU runs again after the MSR write. */
volatile struct pvclock pvclock[MAX_CPUS] __noinit __aligned(4096);

bool kvmclock_detect(void)
{
    u32 a, b, c, d;

    cpuid(0x40000000, 0, &a, &b, &c, &d);
    if (b != 0x4b4d564b || c != 0x564b4d56 || d != 0x4d || a < 0x40000001)
        return false;   /* not "KVMKVMKVM\0\0\0" */
    cpuid(0x40000001, 0, &a, &b, &c, &d);
    return a & KVM_FEATURE_CLOCKSOURCE2;
}

void kvmclock_enable(u32 cpu)
{
    wrmsr(MSR_KVM_SYSTEM_TIME_NEW, (u64)&pvclock[cpu] | 1);
}

u64 kernel_now_ns(void)
{
    return pvclock_ns(&pvclock[cpu_index()], false);
}

void kernel_delay_ns(u64 ns)
{
    u64 end = kernel_now_ns() + ns;

    while (kernel_now_ns() < end)
        cpu_relax();
}

/*
 * Sleeps until the TSC reaches `deadline` (TSC-deadline timer). Also returns when
 * serial input arrived (on the CPU that takes IRQ 4), so the console stays responsive.
 * The same as entry.S's fast path, for system calls that arrive as #GP.
 */
void kernel_sleep_tsc(u64 deadline)
{
    u32 rx = serial_rx.head;

    wrmsr(MSR_TSC_DEADLINE, deadline);
    while (rdtsc() < deadline && rx == serial_rx.head)
        asm volatile("sti; hlt; cli" : : : "memory");
}
