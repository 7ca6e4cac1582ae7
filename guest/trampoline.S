/*
 * AP start-up code, copied to TRAMP_BASE (0x8000) and entered by SIPI vector 0x08
 * in real mode with CS = 0x0800, IP = 0. Goes to flat protected mode and hands over
 * to mode_enter_long, which the PVH entry uses too. Every address inside is
 * TRAMP_BASE-relative because this copy is not where it was linked.
 */
#include "guest.h"

#define TADDR(x) (TRAMP_BASE + (x) - tramp_start)

    .section .rodata.tramp, "a"
    .code16
    .globl tramp_start, tramp_end
tramp_start:
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (tramp_gdt_ptr - tramp_start)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $SEL_KCODE32, $TADDR(tramp32)

    .code32
tramp32:
    mov $SEL_KDATA, %eax            /* flat %ds before mode_enter_long's lgdt */
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $ap_entry64, %edi
    mov $mode_enter_long, %eax
    jmp *%eax

    .balign 8
tramp_gdt_ptr:
    .word GDT_ENTRIES * 8 - 1
    .long gdt
tramp_end:

    .section .note.GNU-stack, "", @progbits
