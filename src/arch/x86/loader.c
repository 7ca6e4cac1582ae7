#include "arch/x86/loader.h"

#include <elf.h>
#include <errno.h>
#include <string.h>

#define FAIL(msg) do { *why = (msg); return -EINVAL; } while (0)

static bool range_ok(size_t len, uint64_t off, uint64_t size)
{
    return off <= len && size <= len - off;
}

static int elf_check_header(const uint8_t *buf, size_t len, const char **why)
{
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)buf;

    if (len < sizeof(*eh) || memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0) {
        *why = "not an ELF file";
        return -ENOEXEC;
    }
    if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != ELFDATA2LSB ||
        eh->e_machine != EM_X86_64)
        FAIL("not a little-endian ELF64 x86-64 file");
    if (eh->e_type != ET_EXEC)
        FAIL("ELF is not an executable");
    if (eh->e_phentsize != sizeof(Elf64_Phdr) || eh->e_phnum == 0 ||
        !range_ok(len, eh->e_phoff, (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr)))
        FAIL("ELF program headers out of bounds");
    return 0;
}

static uint64_t note_value(const uint8_t *desc, uint32_t descsz)
{
    uint64_t v = 0;

    memcpy(&v, desc, descsz >= 8 ? 8 : 4);
    return v;
}

static void elf_note_one(struct elf_info *info, const char *name, uint32_t namesz,
                         uint32_t type, const uint8_t *desc, uint32_t descsz)
{
    if (descsz != 4 && descsz != 8)
        return;
    if (namesz == 4 && memcmp(name, "Xen", 4) == 0 && type == XEN_ELFNOTE_PHYS32_ENTRY) {
        info->pvh_entry = note_value(desc, descsz);
        info->has_pvh = true;
    } else if (namesz == 6 && memcmp(name, "FERRY", 6) == 0 &&
               type == FERRY_ELFNOTE_ENTRY64 && descsz == 8) {
        info->entry64 = note_value(desc, descsz);
        info->has_entry64 = true;
    }
}

/* Walks one PT_NOTE segment; malformed notes end the walk, as they do in Linux. */
static void elf_notes(struct elf_info *info, const uint8_t *p, uint64_t size)
{
    while (size >= 12) {
        uint32_t namesz, descsz, type;
        uint64_t nlen, dlen;

        memcpy(&namesz, p, 4);
        memcpy(&descsz, p + 4, 4);
        memcpy(&type, p + 8, 4);
        nlen = ((uint64_t)namesz + 3) & ~3ULL;
        dlen = ((uint64_t)descsz + 3) & ~3ULL;
        if (12 + nlen + dlen > size)
            return;
        elf_note_one(info, (const char *)p + 12, namesz, type, p + 12 + nlen, descsz);
        p += 12 + nlen + dlen;
        size -= 12 + nlen + dlen;
    }
}

static int elf_segment_add(struct elf_info *info, const Elf64_Phdr *ph, size_t len,
                           const char **why)
{
    if (info->nsegs >= ELF_MAX_SEGMENTS)
        FAIL("too many ELF load segments");
    if (ph->p_filesz > ph->p_memsz || !range_ok(len, ph->p_offset, ph->p_filesz))
        FAIL("ELF load segment out of bounds");
    if (ph->p_paddr + ph->p_memsz < ph->p_paddr)
        FAIL("ELF load segment wraps around");
    info->segs[info->nsegs++] = (struct elf_segment){
        .paddr = ph->p_paddr, .offset = ph->p_offset,
        .filesz = ph->p_filesz, .memsz = ph->p_memsz,
    };
    return 0;
}

int elf_parse(const uint8_t *buf, size_t len, struct elf_info *info, const char **why)
{
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)buf;
    int ret = elf_check_header(buf, len, why);

    if (ret < 0)
        return ret;
    memset(info, 0, sizeof(*info));
    info->entry = eh->e_entry;
    for (unsigned i = 0; i < eh->e_phnum; i++) {
        const Elf64_Phdr *ph = (const Elf64_Phdr *)(buf + eh->e_phoff) + i;
        if (ph->p_type == PT_LOAD && ph->p_memsz) {
            ret = elf_segment_add(info, ph, len, why);
            if (ret < 0)
                return ret;
        } else if (ph->p_type == PT_NOTE && range_ok(len, ph->p_offset, ph->p_filesz)) {
            elf_notes(info, buf + ph->p_offset, ph->p_filesz);
        }
    }
    if (info->nsegs == 0)
        FAIL("ELF has no load segments");
    return 0;
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;

    memcpy(&v, p, 4);
    return v;
}

int bzimage_parse(const uint8_t *buf, size_t len, struct bzimage_info *info,
                  const char **why)
{
    uint32_t sects;

    if (len < 0x1000 || memcmp(buf + BP_HEADER, "HdrS", 4) != 0) {
        *why = "not a bzImage (no HdrS signature)";
        return -ENOEXEC;
    }
    memset(info, 0, sizeof(*info));
    memcpy(&info->version, buf + BP_VERSION, 2);
    if (info->version < 0x20c)
        FAIL("boot protocol older than 2.12 (no 64-bit entry)");
    if (!(buf[BP_XLOADFLAGS] & 1))
        FAIL("kernel has no 64-bit entry point (XLF_KERNEL_64)");
    sects = buf[BP_SETUP_SECTS] ? buf[BP_SETUP_SECTS] : 4;
    info->setup_len = (sects + 1) * 512;
    info->header_end = 0x202 + buf[0x201];
    if (info->setup_len >= len || info->header_end > info->setup_len)
        FAIL("bzImage setup header out of bounds");
    info->kernel_offset = info->setup_len;
    info->kernel_size = (uint32_t)(len - info->setup_len);
    info->initrd_addr_max = get32(buf + BP_INITRD_MAX);
    info->cmdline_size = get32(buf + BP_CMDLINE_SIZE);
    return 0;
}
