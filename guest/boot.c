/* BSP start-up: start-info parsing and the order in which the machine is set up. */
#include "kernel.h"
#include "x86.h"

#define START_INFO_MAGIC 0x336ec578

/* Xen public/arch-x86/hvm/start_info.h */
struct hvm_start_info {
    u32 magic;
    u32 version;
    u32 flags;
    u32 nr_modules;
    u64 modlist_paddr;
    u64 cmdline_paddr;
    u64 rsdp_paddr;
    u64 memmap_paddr;           /* version >= 1 */
    u32 memmap_entries;
    u32 reserved;
};

struct boot_info boot __noinit;     /* every field is set by boot_copy_start_info() */
u64 boot_marks[MARK_COUNT];

__noreturn void kernel_halt(void)
{
    for (;;)
        asm volatile("cli; hlt");
}

static void boot_copy_cmdline(u64 pa)
{
    const char *s = (const char *)pa;
    size_t n = 0;

    if (pa)
        while (n < CMDLINE_MAX - 1 && s[n])
            n++;
    memcpy(boot.cmdline, s, n);
    boot.cmdline[n] = 0;
}

static bool boot_copy_start_info(u64 pa)
{
    const struct hvm_start_info *si = (const struct hvm_start_info *)pa;

    if (!pa || si->magic != START_INFO_MAGIC)
        return false;
    boot_copy_cmdline(si->cmdline_paddr);
    boot.rsdp = si->rsdp_paddr;
    boot.memmap_count = 0;
    if (si->version >= 1 && si->memmap_paddr) {
        boot.memmap_count = MIN(si->memmap_entries, MEMMAP_MAX);
        memcpy(boot.memmap, (const void *)si->memmap_paddr,
               boot.memmap_count * sizeof(boot.memmap[0]));
    }
    return true;
}

u64 boot_mem_bytes(void)
{
    u64 sum = 0;

    for (u32 i = 0; i < boot.memmap_count; i++)
        if (boot.memmap[i].type == MEMMAP_RAM)
            sum += boot.memmap[i].size;
    return sum;
}

void kernel_main(u64 start_info)
{
    bool ok;

    boot_marks[MARK_ENTRY] = boot_tsc;
    boot_marks[MARK_KERNEL] = rdtsc();
    idt_init();
    cpu_init_local(0);
    serial_init();
    ok = boot_copy_start_info(start_info);
    kprintf("ferry-testguest 1\n");
    if (!ok) {
        kprintf("ERROR bad hvm_start_info at 0x%lx\n", start_info);
        kernel_halt();
    }
    kprintf("CMDLINE %s\n", boot.cmdline);
    if (boot.memmap_count == 0)
        kprintf("WARN no memory map in start info\n");
    if (!kvmclock_detect()) {
        kprintf("ERROR no kvmclock\n");
        kernel_halt();
    }
    if (!apic_detect()) {
        kprintf("ERROR no x2APIC with TSC-deadline timer\n");
        kernel_halt();
    }
    apic_init_local();
    kvmclock_enable(0);
    acpi_init();
    boot_marks[MARK_SMP] = rdtsc();
    smp_boot_aps();
    serial_rx_enable();
    kprintf("CPUS %u MEM %lu\n", ncpus, (boot_mem_bytes() + MIB / 2) / MIB);
    boot_marks[MARK_USER] = rdtsc();
    cpu_enter_user(0);
}
