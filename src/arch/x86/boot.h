/* Placing a kernel in guest memory and describing how the BSP enters it. */
#ifndef FERRY_ARCH_X86_BOOT_H
#define FERRY_ARCH_X86_BOOT_H

#include <stdint.h>

#include "vm/memory.h"

/* Fixed low-memory layout used at boot (all below the guest's 0x8000 trampoline
 * page except the page tables, which the guest replaces at once). */
#define BOOT_GDT         0x0500ULL
#define BOOT_START_INFO  0x1000ULL
#define BOOT_MEMMAP      0x1040ULL
#define BOOT_MODLIST     0x1400ULL
#define BOOT_CMDLINE     0x2000ULL
#define BOOT_CMDLINE_MAX 4096
#define BOOT_ZERO_PAGE   0x7000ULL
#define BOOT_PML4        0x9000ULL
#define BOOT_PDPT        0xA000ULL
#define BOOT_PD          0xB000ULL   /* four pages: identity map of 0-4 GiB */
#define BOOT_KERNEL_ADDR 0x100000ULL

#define BOOT_SEL_CODE64  0x08
#define BOOT_SEL_DATA    0x10
#define BOOT_SEL_CODE32  0x18

enum boot_mode {
    BOOT_LONG64,   /* 64-bit, paging on: test guest and bzImage */
    BOOT_PVH32,    /* 32-bit protected mode, paging off: PVH */
};

enum kernel_kind { KERNEL_ELF64, KERNEL_PVH, KERNEL_BZIMAGE };

struct boot_entry {
    enum boot_mode mode;
    enum kernel_kind kind;
    uint64_t rip;
    uint64_t rsi;
    uint64_t rbx;
};

struct boot_config {
    const char *kernel;
    const char *initrd;
    const char *cmdline;
    unsigned ncpus;
};

/* Checks, before any VM exists, that the kernel file is readable and an
 * ELF or bzImage and that the initrd is readable (errors logged here):
 * a failure is the user's input, not the host's. */
int boot_probe(const struct boot_config *cfg);
/* Loads kernel (and initrd), writes boot data, ACPI tables and boot page
 * tables. Errors are logged here with the file name. */
int boot_load(struct guest_mem *mem, const struct boot_config *cfg,
              struct boot_entry *entry);
/* Sets the BSP's registers for the entry. */
int boot_setup_bsp(int vcpu_fd, const struct boot_entry *entry);

#endif
