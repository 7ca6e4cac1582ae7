/* Exceptions, device interrupts and system calls. */
#include "kernel.h"
#include "x86.h"

/* PVM delivers a CPL3 "int $0x80" as #UD (checked in entry.S) or #GP with RIP still
 * on the instruction. */
static bool trap_is_int80(const struct trap_frame *f)
{
    const u8 *ip = (const u8 *)f->rip;

    return (f->cs & 3) == 3 && ip[0] == 0xcd && ip[1] == 0x80;
}

static void syscall_handle(struct trap_frame *f)
{
    switch (f->rax) {
    case SYS_SLEEP_TSC:         /* normally served in entry.S; here via #GP */
        kernel_sleep_tsc(f->rdi);
        f->rax = 0;
        break;
    case SYS_HALT:
        kernel_halt();
    case SYS_MAP_UC:
        f->rax = (u64)paging_map_uc(f->rdi);
        break;
    default:
        f->rax = (u64)-1;
    }
}

static __noreturn void trap_panic(const struct trap_frame *f)
{
    kprintf("PANIC vec=%lu err=0x%lx rip=0x%lx cr2=0x%lx cpu=%u\n",
            f->vec, f->err, f->rip, read_cr2(), cpu_index());
    kernel_halt();
}

void trap_handle(struct trap_frame *f)
{
    switch (f->vec) {
    case VEC_SYSCALL:
        syscall_handle(f);
        return;
    case VEC_SERIAL:
        serial_irq();
        apic_eoi();
        return;
    case 13:    /* #GP (#UD's system calls are taken in entry.S) */
        if (trap_is_int80(f)) {
            f->rip += 2;
            syscall_handle(f);
            return;
        }
        break;
    }
    trap_panic(f);
}
