/*
 * Kernel part (CPL0). Every instruction here is emulated on PVM, so it only sets the
 * machine up, handles interrupts and a couple of system calls. Its data is
 * identity-mapped and user-readable: the workloads read boot facts straight from it.
 */
#ifndef KERNEL_H
#define KERNEL_H

#include "guest.h"

#define CMDLINE_MAX     4096
#define MEMMAP_MAX      128
#define MEMMAP_RAM      1

struct memmap_entry {
    u64 addr;
    u64 size;
    u32 type;
    u32 reserved;
};

/* Copied out of hvm_start_info at once: the loader's copy may sit in RAM we reuse. */
struct boot_info {
    u64 rsdp;
    u32 memmap_count;
    struct memmap_entry memmap[MEMMAP_MAX];
    char cmdline[CMDLINE_MAX];
};
extern struct boot_info boot;

/* TSC stamps of boot phases, for the boot.trace option. */
enum boot_mark { MARK_ENTRY, MARK_KERNEL, MARK_SMP, MARK_USER, MARK_READY, MARK_COUNT };
extern u64 boot_tsc;            /* entry.S: TSC at the very first instruction */
extern volatile u64 virtio_irqs;    /* entry.S: virtio MSI-X interrupts taken */
extern u64 boot_marks[MARK_COUNT];

u64 boot_mem_bytes(void);
__noreturn void kernel_halt(void);

/* cpu.c: descriptor tables, per-CPU state, the way down to CPL3 */
extern u8 kstacks[MAX_CPUS][KSTACK_SIZE];
extern u32 ncpus;
extern u32 cpu_apic_id[MAX_CPUS];
void idt_init(void);
void cpu_init_local(u32 cpu);
u32 cpu_index(void);
__noreturn void cpu_enter_user(u32 cpu);
__noreturn void user_enter(u64 rip, u64 rsp, u64 arg);

/* paging.c */
s64 paging_map_uc(u64 pa);

/* trap.c */
struct trap_frame {
    u64 r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
    u64 vec, err, rip, cs, rflags, rsp, ss;
};
void trap_handle(struct trap_frame *f);

/* apic.c: x2APIC, TSC-deadline timer, IOAPIC */
bool apic_detect(void);
void apic_init_local(void);
u32 apic_id(void);
void apic_eoi(void);
void apic_send_init(u32 apic);
void apic_send_sipi(u32 apic, u8 vector);
void ioapic_route_isa(u8 irq, u8 vector, u32 dest_apic);

/* kvmclock.c */
bool kvmclock_detect(void);
void kvmclock_enable(u32 cpu);
u64 kernel_now_ns(void);
void kernel_delay_ns(u64 ns);
void kernel_sleep_tsc(u64 deadline);

/* acpi.c: what boot needs from the tables (kernel) and the power-off facts (user) */
#define ACPI_MAX_IOAPICS 8
struct acpi_info {
    u64 rsdp;
    u32 ncpus;                  /* enabled CPUs in the MADT (capped at MAX_CPUS) */
    u32 cpu_apic[MAX_CPUS];
    u32 nioapics;
    struct { u64 addr; u32 gsi_base; } ioapic[ACPI_MAX_IOAPICS];
    u32 isa_gsi[16];            /* ISA IRQ -> GSI, after interrupt source overrides */
    u16 isa_flags[16];          /* MPS INTI flags from the override (0 = ISA default) */
    u64 dsdt;
    u16 pm1a_cnt;               /* 0 = none */
    u8 sleep_ctl_space;         /* hardware-reduced ACPI (QEMU microvm): 0 = memory, 1 = I/O */
    u64 sleep_ctl;              /* FADT SLEEP_CONTROL_REG address, 0 = none */
    bool have_madt;
    bool have_s5;               /* set by acpi_power_probe() */
    u8 s5_slp_typ;
};
extern struct acpi_info acpi;
void acpi_init(void);
/* Scans the DSDT for _S5_ (at CPL3, where the byte loop is native): NULL or what is missing. */
const char *acpi_power_probe(void);
void acpi_poweroff(void);       /* CPL3; returns only if the platform ignored it */

/* smp.c */
void smp_boot_aps(void);
__noreturn void ap_main(u32 cpu);

/* serial.c: COM1 */
#define COM1            0x3f8
#define RX_RING_SIZE    256
struct serial_rx {
    volatile u32 head;          /* bytes received; written only by the IRQ handler.
                                 * First member: entry.S's sleep path reads it. */
    u8 buf[RX_RING_SIZE];
};
extern struct serial_rx serial_rx;
extern u32 serial_tx_lock;      /* one writer at a time: console drain (CPL3) or kprintf */
void serial_init(void);
void serial_rx_enable(void);
void serial_irq(void);
size_t serial_tx_burst(const char *s, size_t n);
void kprintf(const char *fmt, ...) __printf(1, 2);

/* user side: workload.c */
__noreturn void workload_main(u32 cpu);

#endif
