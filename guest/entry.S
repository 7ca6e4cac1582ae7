/*
 * Boot entries, descriptor tables and the CPL0 <-> CPL3 glue.
 *
 * Two ways in, both ending at entry64_common with %rbx = hvm_start_info:
 *  - PVH (QEMU -kernel): 32-bit protected mode, paging off, %ebx = start info.
 *  - ferry: 64-bit, paging on (identity map of >= 1 GiB), %rbx = %rsi = start info,
 *    no stack. Announced by the "FERRY" note; e_entry points here too.
 */
#include "guest.h"

/* ---- ELF notes: kept in the text segment and in their own PT_NOTE headers ---- */
    .section .note.xen, "a"
    .balign 4
    .long 4                         /* namesz: "Xen\0" */
    .long 4                         /* descsz */
    .long 18                        /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long pvh_entry32

    .section .note.ferry, "a"
    .balign 4
    .long 6                         /* namesz: "FERRY\0" */
    .long 8                         /* descsz */
    .long 1                         /* ferry: 64-bit entry address */
    .asciz "FERRY"
    .balign 4
    .quad ferry_entry64

/* ---- 32-bit entry (PVH) ---- */
    .section .text.entry, "ax"
    .code32
    .globl pvh_entry32
pvh_entry32:
    cli
    cld
    mov %ebx, %esi                  /* start info survives the mode switch in %esi */
    rdtsc
    mov %eax, boot_tsc
    mov %edx, boot_tsc + 4
    mov $entry64_pvh, %edi
    /* fall through */

/*
 * Flat 32-bit protected mode, paging off -> long mode on the static identity map,
 * then jump to the 64-bit address in %edi. Shared with the AP trampoline, which
 * must have loaded flat data segments first (lgdt below reads through %ds).
 */
    .globl mode_enter_long
mode_enter_long:
    lgdt gdt_ptr
    mov $SEL_KDATA, %eax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov %cr4, %eax
    or $0x20, %eax                  /* PAE */
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx           /* EFER.LME */
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax            /* PG | PE */
    mov %eax, %cr0
    ljmp $SEL_KCODE, $1f
    .code64
1:  mov %edi, %edi                  /* upper halves are undefined after the switch */
    jmp *%rdi

entry64_pvh:
    mov %esi, %ebx
    jmp entry64_common

/* ---- 64-bit entry (ferry) ---- */
    .globl ferry_entry64
ferry_entry64:
    cli
    cld
    rdtsc                           /* %rbx (start info) is kept for entry64_common */
    shl $32, %rdx
    or %rdx, %rax
    mov %rax, boot_tsc
    mov $(kstacks + KSTACK_SIZE), %rsp  /* no stack is given; lretq below needs one */
    mov $boot_pml4, %eax            /* leave the VMM's temporary tables at once */
    mov %rax, %cr3
    lgdt gdt_ptr
    pushq $SEL_KCODE
    pushq $entry64_common
    lretq

entry64_common:
    mov $SEL_KDATA, %eax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov $(kstacks + KSTACK_SIZE), %rsp
    /* .bss holds only small state; big buffers are in .noinit and stay dirty. */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    shr $3, %ecx
    xor %eax, %eax
    rep stosq
    mov %rbx, %rdi
    call kernel_main
2:  cli
    hlt
    jmp 2b

/* APs arrive here from the trampoline; ap_boot_index says which CPU slot they take. */
    .globl ap_entry64
ap_entry64:
    mov ap_boot_index, %edi
    lea 1(%rdi), %rax
    imul $KSTACK_SIZE, %rax
    add $kstacks, %rax
    mov %rax, %rsp
    call ap_main
    jmp 2b

/* ---- CPL3 entry: user_enter(rip, rsp, arg) ---- */
    .globl user_enter
user_enter:
    mov $SEL_UDATA, %eax
    mov %ax, %ds
    mov %ax, %es
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    pushq $SEL_UDATA
    pushq %rsi
    pushq $USER_RFLAGS
    pushq $SEL_UCODE
    pushq %rdi
    mov %rdx, %rdi
    iretq

/* ---- interrupt and exception entry ---- */
.macro TRAP_NOERR vec
trap_stub_\vec:
    pushq $0
    pushq $\vec
    jmp trap_common
.endm

.macro TRAP_ERR vec
trap_stub_\vec:
    pushq $\vec
    jmp trap_common
.endm

    .irp v, 0,1,2,3,4,5,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
    TRAP_NOERR \v
    .endr
    .irp v, 8,10,11,12,13,14,17,21,29,30
    TRAP_ERR \v
    .endr

/*
 * #UD: on PVM a CPL3 "int $0x80" arrives here with RIP on the CD 80 bytes. Step over
 * them and take the system call path; anything else is a real #UD for trap_handle.
 * (#GP gets the same check in C: it is not the usual way PVM reports it.)
 */
trap_stub_6:
    testb $3, 8(%rsp)               /* frame: rip, cs, rflags, rsp, ss */
    jz 1f
    push %rcx
    mov 8(%rsp), %rcx
    cmpw $0x80cd, (%rcx)
    pop %rcx
    jne 1f
    addq $2, (%rsp)
    jmp trap_syscall
1:  pushq $0
    pushq $6
    jmp trap_common

/*
 * System calls: %rax = number, %rdi = argument, result in %rax, all else preserved.
 * The sleep call is the hot one (every wake-up of every worker), so it is done here
 * in a couple of dozen instructions: at CPL0 each one is emulated.
 */
    .globl trap_serial, trap_syscall
trap_syscall:
    cmp $SYS_SLEEP_TSC, %rax
    jne 3f
    push %rcx
    push %rdx
    push %rsi
    mov serial_rx, %esi             /* serial_rx.head: input also ends the sleep */
    mov $0x6e0, %ecx                /* IA32_TSC_DEADLINE */
    mov %edi, %eax
    mov %rdi, %rdx
    shr $32, %rdx
    wrmsr
1:  rdtsc
    shl $32, %rdx
    or %rdx, %rax
    cmp %rdi, %rax
    jae 2f
    cmp serial_rx, %esi
    jne 2f
    sti                             /* interrupt shadow: no wake-up slips in before hlt */
    hlt
    cli
    jmp 1b
2:  pop %rsi
    pop %rdx
    pop %rcx
    xor %eax, %eax
    iretq
3:  pushq $0
    pushq $VEC_SYSCALL
    jmp trap_common

trap_serial:
    pushq $0
    pushq $VEC_SERIAL
    /* fall through */

/* Saves every GPR (system calls return only %rax) and calls trap_handle(frame). */
trap_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    call trap_handle
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    iretq

/* virtio MSI-X (blktest): count it, EOI. Only the virtio CPU takes it; CPL3 reads the count. */
    .globl irq_virtio
irq_virtio:
    incq virtio_irqs
    /* fall through */

/* The timer only has to wake hlt: EOI and return, a dozen emulated instructions. */
    .globl irq_timer, irq_spurious
irq_timer:
    push %rax
    push %rcx
    push %rdx
    mov $0x80b, %ecx
    xor %eax, %eax
    xor %edx, %edx
    wrmsr
    pop %rdx
    pop %rcx
    pop %rax
irq_spurious:
    iretq

    .section .rodata
    .balign 8
    .globl trap_stub_table
trap_stub_table:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad trap_stub_\v
    .endr

/* ---- descriptor tables; explicit data, so the loader's copy is all the set-up they need ---- */
    .data
    .balign 8
    .globl boot_tsc
boot_tsc:
    .quad 0
    .globl virtio_irqs
virtio_irqs:
    .quad 0

    .balign 16
    .globl gdt, gdt_ptr
gdt:
    .quad 0
    .quad 0x00af9a000000ffff        /* 0x08 kernel code, 64-bit */
    .quad 0x00cf92000000ffff        /* 0x10 kernel data */
    .quad 0x00cf9a000000ffff        /* 0x18 kernel code, 32-bit (trampoline) */
    .quad 0x00cff2000000ffff        /* 0x20 user data */
    .quad 0x00affa000000ffff        /* 0x28 user code, 64-bit */
    .fill 2 * MAX_CPUS, 8, 0        /* 0x30 TSS descriptors, one per CPU */
    .balign 8
gdt_ptr:
    .word GDT_ENTRIES * 8 - 1
    .quad gdt

/*
 * All TSSs back to back, then one shared I/O permission bitmap of zeros (every port
 * allowed at CPL3: PVM honours this but not IOPL) and its 0xff terminator. Each TSS
 * points at the bitmap with its own iomap_base offset.
 */
    .balign 64
    .globl tss_area, io_bitmap
tss_area:
    .fill MAX_CPUS * TSS_SIZE, 1, 0
io_bitmap:
    .fill 8192, 1, 0
    .byte 0xff

    .section .note.GNU-stack, "", @progbits
