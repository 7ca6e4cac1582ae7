/* Kernel image parsing (pure, unit-tested): ELF64 with PVH/ferry notes, and
 * Linux bzImage setup headers. Placement into guest memory is in boot.c. */
#ifndef FERRY_ARCH_X86_LOADER_H
#define FERRY_ARCH_X86_LOADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ELF_MAX_SEGMENTS 16
#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define FERRY_ELFNOTE_ENTRY64    1

struct elf_segment {
    uint64_t paddr;
    uint64_t offset;
    uint64_t filesz;
    uint64_t memsz;
};

struct elf_info {
    uint64_t entry;            /* e_entry */
    uint64_t pvh_entry;        /* 32-bit PVH entry, if has_pvh */
    uint64_t entry64;          /* ferry's 64-bit entry, if has_entry64 */
    bool has_pvh;
    bool has_entry64;
    unsigned nsegs;
    struct elf_segment segs[ELF_MAX_SEGMENTS];
};

/* Parses and validates an ELF64 x86-64 executable. -ENOEXEC if not ELF,
 * -EINVAL if malformed (bounds, counts), with the reason in *why. */
int elf_parse(const uint8_t *buf, size_t len, struct elf_info *info, const char **why);

/* Offsets into struct boot_params (Linux Documentation/arch/x86/boot.rst). */
#define BP_ACPI_RSDP     0x070
#define BP_E820_ENTRIES  0x1e8
#define BP_SETUP_SECTS   0x1f1
#define BP_HEADER        0x202
#define BP_VERSION       0x206
#define BP_LOADER_TYPE   0x210
#define BP_LOADFLAGS     0x211
#define BP_RAMDISK_IMAGE 0x218
#define BP_RAMDISK_SIZE  0x21c
#define BP_HEAP_END      0x224
#define BP_CMDLINE_PTR   0x228
#define BP_INITRD_MAX    0x22c
#define BP_XLOADFLAGS    0x236
#define BP_CMDLINE_SIZE  0x238
#define BP_E820_TABLE    0x2d0
#define BP_E820_MAX      128
#define BP_SIZE          4096

struct bzimage_info {
    uint16_t version;
    uint32_t setup_len;        /* bytes of the real-mode setup, incl. boot sector */
    uint32_t header_end;       /* end offset of the setup header in the file */
    uint32_t kernel_offset;    /* file offset of the protected-mode kernel */
    uint32_t kernel_size;
    uint32_t initrd_addr_max;
    uint32_t cmdline_size;
};

/* Parses a bzImage; requires protocol 2.12+ with a 64-bit entry point. */
int bzimage_parse(const uint8_t *buf, size_t len, struct bzimage_info *info,
                  const char **why);

#endif
