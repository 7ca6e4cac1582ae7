/*
 * Identity map of 0..64 GiB with 2 MiB pages, writable and user-accessible, built by
 * the assembler: the loader copies it in, so the CPL0 emulator never runs the fill
 * loop (32768 entries). Spare zeroed tables follow for MMIO above 64 GiB (paging.c).
 */
#include "guest.h"

#define PTE_P   0x1
#define PTE_W   0x2
#define PTE_U   0x4
#define PTE_PS  0x80
#define MAP_GIB 64

    .section .data.pagetables, "aw"
    .balign 4096
    .globl boot_pml4
boot_pml4:
    .quad boot_pdpt + (PTE_P | PTE_W | PTE_U)
    .fill 511, 8, 0

boot_pdpt:
    i = 0
    .rept MAP_GIB
    .quad boot_pd + i * 4096 + (PTE_P | PTE_W | PTE_U)
    i = i + 1
    .endr
    .fill 512 - MAP_GIB, 8, 0

boot_pd:
    i = 0
    .rept MAP_GIB * 512
    .quad (i << 21) | (PTE_P | PTE_W | PTE_U | PTE_PS)
    i = i + 1
    .endr

    .globl pt_spare
pt_spare:
    .fill PT_SPARE * 512, 8, 0

    .section .note.GNU-stack, "", @progbits
