/* Per-CPU descriptor tables (GDT entries, TSS, IDT) and the drop to CPL3. */
#include "kernel.h"
#include "x86.h"

struct tss {
    u32 reserved0;
    u64 rsp0, rsp1, rsp2;
    u64 reserved1;
    u64 ist[7];
    u64 reserved2;
    u16 reserved3;
    u16 iomap_base;
} __packed;

struct idt_gate {
    u16 off0;
    u16 sel;
    u8 ist;
    u8 type;
    u16 off1;
    u32 off2;
    u32 reserved;
} __packed;

/* entry.S */
extern u64 gdt[GDT_ENTRIES];
extern struct tss tss_area[MAX_CPUS];
extern u8 io_bitmap[];
extern void (*const trap_stub_table[32])(void);
extern void irq_timer(void), irq_spurious(void), trap_serial(void), trap_syscall(void);
extern void irq_virtio(void);

u8 kstacks[MAX_CPUS][KSTACK_SIZE] __noinit __aligned(4096);
static u8 ustacks[MAX_CPUS][USTACK_SIZE] __noinit __aligned(4096);

u32 ncpus;
u32 cpu_apic_id[MAX_CPUS];

/* Zeros from the file (.data): not-present gates without a clearing loop at CPL0. */
static struct idt_gate idt[256] __attribute__((section(".data"))) __aligned(16);

static const struct __packed {
    u16 limit;
    u64 base;
} idt_ptr = { sizeof(idt) - 1, (u64)idt };

static void idt_set(u8 vec, void (*fn)(void), u8 dpl)
{
    u64 a = (u64)fn;

    idt[vec] = (struct idt_gate){
        .off0 = (u16)a, .sel = SEL_KCODE, .type = (u8)(0x8e | (dpl << 5)),
        .off1 = (u16)(a >> 16), .off2 = (u32)(a >> 32),
    };
}

void idt_init(void)
{
    for (u8 v = 0; v < 32; v++)
        idt_set(v, trap_stub_table[v], 0);
    idt_set(VEC_TIMER, irq_timer, 0);
    idt_set(VEC_SERIAL, trap_serial, 0);
    idt_set(VEC_VIRTIO, irq_virtio, 0);
    idt_set(VEC_SYSCALL, trap_syscall, 3);
    idt_set(VEC_SPURIOUS, irq_spurious, 0);
}

/* Kernel stacks are one array, so the stack pointer says which CPU we are on. */
u32 cpu_index(void)
{
    return (u32)((read_rsp() - (u64)kstacks) / KSTACK_SIZE);
}

/* TSS (rsp0, shared I/O bitmap) and its GDT descriptor, then load TR and the IDT. */
void cpu_init_local(u32 cpu)
{
    struct tss *t = &tss_area[cpu];
    u64 base = (u64)t;
    u64 limit;

    t->rsp0 = (u64)kstacks[cpu] + KSTACK_SIZE;
    t->iomap_base = (u16)(io_bitmap - (u8 *)t);
    limit = t->iomap_base + 8192;           /* includes the 0xff terminator byte */
    gdt[6 + 2 * cpu] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ULL << 40) |
                       (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
    gdt[7 + 2 * cpu] = base >> 32;
    asm volatile("ltr %w0" : : "r"(SEL_TSS0 + 16 * cpu));
    asm volatile("lidt %0" : : "m"(idt_ptr));
}

__noreturn void cpu_enter_user(u32 cpu)
{
    u64 top = (u64)ustacks[cpu] + USTACK_SIZE - 8;  /* as if called: rsp+8 is 16-aligned */

    user_enter((u64)workload_main, top, cpu);
}
