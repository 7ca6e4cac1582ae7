#include "arch/x86/boot.h"

#include <errno.h>
#include <stdbool.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "arch/x86/acpi.h"
#include "arch/x86/e820.h"
#include "arch/x86/loader.h"
#include "util/log.h"
#include "util/util.h"

#define PVH_MAGIC 0x336ec578U

struct hvm_start_info {
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;
    uint64_t rsdp_paddr;
    uint64_t memmap_paddr;
    uint32_t memmap_entries;
    uint32_t reserved;
};

struct hvm_memmap_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
    uint32_t reserved;
};

struct hvm_modlist_entry {
    uint64_t paddr;
    uint64_t size;
    uint64_t cmdline_paddr;
    uint64_t reserved;
};

/* Loaded files, held until boot data is written. */
struct boot_files {
    uint8_t *kernel;
    size_t kernel_len;
    uint8_t *initrd;
    size_t initrd_len;
    uint64_t initrd_gpa;
};

static int boot_page_tables(struct guest_mem *mem)
{
    uint64_t *pml4 = mem_ptr(mem, BOOT_PML4, PAGE_SIZE);
    uint64_t *pdpt = mem_ptr(mem, BOOT_PDPT, PAGE_SIZE);
    uint64_t *pd = mem_ptr(mem, BOOT_PD, 4 * PAGE_SIZE);

    if (!pml4 || !pdpt || !pd)
        return -EFAULT;
    memset(pml4, 0, 6 * PAGE_SIZE);
    pml4[0] = BOOT_PDPT | 3;
    for (uint64_t i = 0; i < 4; i++)
        pdpt[i] = (BOOT_PD + i * PAGE_SIZE) | 3;
    for (uint64_t i = 0; i < 4 * 512; i++)
        pd[i] = (i << 21) | 0x83;   /* present, writable, 2 MiB */
    return 0;
}

static const uint64_t boot_gdt[] = {
    0,
    0x00af9b000000ffffULL,   /* 0x08: 64-bit code */
    0x00cf93000000ffffULL,   /* 0x10: flat data */
    0x00cf9b000000ffffULL,   /* 0x18: 32-bit code */
};

static int boot_tables(struct guest_mem *mem, unsigned ncpus)
{
    uint8_t *acpi = mem_ptr(mem, ACPI_BASE, ACPI_MAX_SIZE);
    int len;

    if (!acpi)
        return -EFAULT;
    len = acpi_build(acpi, ACPI_MAX_SIZE, ACPI_BASE, ncpus);
    if (len < 0) {
        log_err("ACPI tables for %u CPUs: %s", ncpus, strerror(-len));
        return len;
    }
    if (mem_write(mem, BOOT_GDT, boot_gdt, sizeof(boot_gdt)) < 0)
        return -EFAULT;
    return boot_page_tables(mem);
}

static int boot_cmdline(struct guest_mem *mem, const char *cmdline, size_t max)
{
    size_t len = strlen(cmdline ? cmdline : "");

    if (len >= max) {
        log_err("command line is %zu bytes, the kernel takes at most %zu", len, max - 1);
        return -E2BIG;
    }
    return mem_write(mem, BOOT_CMDLINE, cmdline ? cmdline : "", len + 1);
}

static int boot_elf_segments(struct guest_mem *mem, const struct boot_files *f,
                             const struct elf_info *info, const char *path)
{
    for (unsigned i = 0; i < info->nsegs; i++) {
        const struct elf_segment *s = &info->segs[i];
        uint8_t *dst = mem_ptr(mem, s->paddr, s->memsz);

        if (!dst || s->paddr < E820_HIGH_START) {
            log_err("%s: segment at 0x%llx (+0x%llx) is outside guest RAM above 1 MiB",
                    path, (unsigned long long)s->paddr, (unsigned long long)s->memsz);
            return -ENOMEM;
        }
        memcpy(dst, f->kernel + s->offset, s->filesz);
        memset(dst + s->filesz, 0, s->memsz - s->filesz);
    }
    return 0;
}

static uint64_t boot_kernel_end(const struct elf_info *info)
{
    uint64_t end = 0;

    for (unsigned i = 0; i < info->nsegs; i++)
        end = MAX(end, info->segs[i].paddr + info->segs[i].memsz);
    return end;
}

/* Initrd goes as high as allowed in low RAM, page aligned, above the kernel. */
static int boot_initrd(struct guest_mem *mem, struct boot_files *f, uint64_t limit,
                       uint64_t kernel_end, const char *path)
{
    uint64_t top = MIN(mem->regions[0].size, limit);
    uint64_t gpa;

    if (!f->initrd)
        return 0;
    gpa = (top - f->initrd_len) & ~(PAGE_SIZE - 1);
    if (f->initrd_len > top || gpa < ALIGN_UP(kernel_end, PAGE_SIZE)) {
        log_err("%s: initrd of %zu bytes does not fit in guest RAM", path, f->initrd_len);
        return -ENOMEM;
    }
    f->initrd_gpa = gpa;
    return mem_write(mem, gpa, f->initrd, f->initrd_len);
}

static int boot_memmap(struct guest_mem *mem, struct e820_entry *map)
{
    int n = e820_build(mem->regions, mem->nregions, map, E820_MAX);

    if (n < 0)
        log_err("e820 map: too many entries");
    return n;
}

static int boot_start_info(struct guest_mem *mem, const struct boot_files *f)
{
    struct e820_entry map[E820_MAX];
    struct hvm_memmap_entry mm[E820_MAX];
    struct hvm_modlist_entry mod = { .paddr = f->initrd_gpa, .size = f->initrd_len };
    struct hvm_start_info si = {
        .magic = PVH_MAGIC, .version = 1, .cmdline_paddr = BOOT_CMDLINE,
        .rsdp_paddr = ACPI_BASE, .memmap_paddr = BOOT_MEMMAP,
    };
    int n = boot_memmap(mem, map);

    if (n < 0)
        return n;
    for (int i = 0; i < n; i++)
        mm[i] = (struct hvm_memmap_entry){ map[i].addr, map[i].size, map[i].type, 0 };
    si.memmap_entries = (uint32_t)n;
    if (f->initrd) {
        si.nr_modules = 1;
        si.modlist_paddr = BOOT_MODLIST;
        if (mem_write(mem, BOOT_MODLIST, &mod, sizeof(mod)) < 0)
            return -EFAULT;
    }
    if (mem_write(mem, BOOT_MEMMAP, mm, sizeof(mm[0]) * (size_t)n) < 0)
        return -EFAULT;
    return mem_write(mem, BOOT_START_INFO, &si, sizeof(si));
}

static int boot_elf(struct guest_mem *mem, struct boot_files *f,
                    const struct boot_config *cfg, struct boot_entry *e)
{
    struct elf_info info;
    const char *why = "";
    int ret = elf_parse(f->kernel, f->kernel_len, &info, &why);

    if (ret < 0 || (!info.has_entry64 && !info.has_pvh)) {
        log_err("%s: %s", cfg->kernel,
                ret < 0 ? why : "ELF kernel has neither a PVH nor a ferry entry note");
        return ret < 0 ? ret : -ENOEXEC;
    }
    ret = boot_elf_segments(mem, f, &info, cfg->kernel);
    if (ret == 0)
        ret = boot_initrd(mem, f, MEM_LOWMEM_MAX, boot_kernel_end(&info), cfg->initrd);
    if (ret == 0)
        ret = boot_cmdline(mem, cfg->cmdline, BOOT_CMDLINE_MAX);
    if (ret == 0)
        ret = boot_start_info(mem, f);
    e->kind = info.has_entry64 ? KERNEL_ELF64 : KERNEL_PVH;
    e->mode = info.has_entry64 ? BOOT_LONG64 : BOOT_PVH32;
    e->rip = info.has_entry64 ? info.entry64 : info.pvh_entry;
    e->rbx = e->rsi = BOOT_START_INFO;
    return ret;
}

static void bp_put32(uint8_t *bp, unsigned off, uint32_t v) { memcpy(bp + off, &v, 4); }

static int boot_params_e820(struct guest_mem *mem, uint8_t *bp)
{
    struct e820_entry map[E820_MAX];
    int n = boot_memmap(mem, map);

    if (n < 0)
        return n;
    bp[BP_E820_ENTRIES] = (uint8_t)n;
    for (int i = 0; i < n; i++) {
        uint8_t *e = bp + BP_E820_TABLE + 20 * i;
        memcpy(e, &map[i].addr, 8);
        memcpy(e + 8, &map[i].size, 8);
        memcpy(e + 16, &map[i].type, 4);
    }
    return 0;
}

static int boot_params_fill(struct guest_mem *mem, const struct boot_files *f,
                            const struct bzimage_info *bz, uint8_t *bp)
{
    uint64_t rsdp = ACPI_BASE;

    memcpy(bp + BP_SETUP_SECTS, f->kernel + BP_SETUP_SECTS, bz->header_end - BP_SETUP_SECTS);
    bp[BP_LOADER_TYPE] = 0xff;
    bp[BP_LOADFLAGS] |= 0x80 | 0x01;   /* CAN_USE_HEAP, LOADED_HIGH */
    bp[BP_HEAP_END] = 0x00;
    bp[BP_HEAP_END + 1] = 0xfe;
    bp_put32(bp, BP_CMDLINE_PTR, BOOT_CMDLINE);
    bp_put32(bp, BP_RAMDISK_IMAGE, (uint32_t)f->initrd_gpa);
    bp_put32(bp, BP_RAMDISK_SIZE, (uint32_t)f->initrd_len);
    memcpy(bp + BP_ACPI_RSDP, &rsdp, 8);
    return boot_params_e820(mem, bp);
}

static int boot_bzimage(struct guest_mem *mem, struct boot_files *f,
                        const struct boot_config *cfg, struct boot_entry *e)
{
    struct bzimage_info bz;
    const char *why = "";
    uint8_t *bp = mem_ptr(mem, BOOT_ZERO_PAGE, BP_SIZE);
    int ret = bzimage_parse(f->kernel, f->kernel_len, &bz, &why);

    if (ret < 0) {
        log_err("%s: %s", cfg->kernel, why);
        return ret;
    }
    ret = mem_write(mem, BOOT_KERNEL_ADDR, f->kernel + bz.kernel_offset, bz.kernel_size);
    if (ret < 0 || !bp) {
        log_err("%s: kernel of %u bytes does not fit in guest RAM", cfg->kernel, bz.kernel_size);
        return -ENOMEM;
    }
    ret = boot_initrd(mem, f, bz.initrd_addr_max, BOOT_KERNEL_ADDR + bz.kernel_size, cfg->initrd);
    if (ret == 0)
        ret = boot_cmdline(mem, cfg->cmdline, MIN(bz.cmdline_size + 1, BOOT_CMDLINE_MAX));
    if (ret == 0) {
        memset(bp, 0, BP_SIZE);
        ret = boot_params_fill(mem, f, &bz, bp);
    }
    e->kind = KERNEL_BZIMAGE;
    e->mode = BOOT_LONG64;
    e->rip = BOOT_KERNEL_ADDR + 0x200;   /* startup_64 */
    e->rsi = BOOT_ZERO_PAGE;
    e->rbx = 0;
    return ret;
}

static int boot_read(const char *path, const char *what, uint8_t **buf, size_t *len)
{
    int ret = file_read_all(path, buf, len);

    if (ret < 0)
        log_err("%s %s: %s", what, path, strerror(-ret));
    else if (*len == 0) {
        log_err("%s %s: file is empty", what, path);
        free(*buf);
        *buf = NULL;
        ret = -ENOEXEC;
    }
    return ret;
}

/* The part of a kernel file that tells what it is: an ELF header, or a
 * bzImage's setup (at most 255 sectors and the boot sector). */
#define BOOT_PROBE_BYTES (256 * 512)

static int boot_probe_kernel(const char *path)
{
    struct bzimage_info bz;
    const char *why = "out of memory";
    uint8_t *buf = malloc(BOOT_PROBE_BYTES);
    size_t n = 0;
    int ret = buf ? file_read_head(path, buf, BOOT_PROBE_BYTES, &n) : -ENOMEM;

    if (ret < 0)
        log_err("kernel %s: %s", path, strerror(-ret));
    else if (n == 0)
        ret = -ENOEXEC, log_err("kernel %s: file is empty", path);
    else if ((n < 4 || memcmp(buf, "\177ELF", 4) != 0) &&
             (ret = bzimage_parse(buf, n, &bz, &why)) < 0)
        log_err("%s: %s", path, why);
    free(buf);
    return ret;
}

int boot_probe(const struct boot_config *cfg)
{
    int ret = boot_probe_kernel(cfg->kernel);

    if (ret == 0 && cfg->initrd && access(cfg->initrd, R_OK) < 0) {
        ret = -errno;
        log_err("initrd %s: %s", cfg->initrd, strerror(errno));
    }
    return ret;
}

int boot_load(struct guest_mem *mem, const struct boot_config *cfg, struct boot_entry *entry)
{
    struct boot_files f = { 0 };
    int ret = boot_read(cfg->kernel, "kernel", &f.kernel, &f.kernel_len);

    if (ret == 0 && cfg->initrd)
        ret = boot_read(cfg->initrd, "initrd", &f.initrd, &f.initrd_len);
    if (ret == 0)
        ret = boot_tables(mem, cfg->ncpus);
    if (ret == 0 && f.kernel_len >= 4 && memcmp(f.kernel, "\177ELF", 4) == 0)
        ret = boot_elf(mem, &f, cfg, entry);
    else if (ret == 0)
        ret = boot_bzimage(mem, &f, cfg, entry);
    free(f.kernel);
    free(f.initrd);
    return ret;
}

static void seg_set(struct kvm_segment *s, uint16_t sel, uint8_t type, bool l, bool db)
{
    *s = (struct kvm_segment){
        .base = 0, .limit = 0xffffffff, .selector = sel, .type = type,
        .present = 1, .dpl = 0, .db = db, .s = 1, .l = l, .g = 1,
    };
}

static void boot_sregs(struct kvm_sregs *sr, const struct boot_entry *e)
{
    bool lm = e->mode == BOOT_LONG64;

    seg_set(&sr->cs, lm ? BOOT_SEL_CODE64 : BOOT_SEL_CODE32, 0xb, lm, !lm);
    seg_set(&sr->ds, BOOT_SEL_DATA, 0x3, false, true);
    sr->es = sr->fs = sr->gs = sr->ss = sr->ds;
    sr->tr.type = 0xb;       /* busy TSS: VMX entry checks insist on one */
    sr->tr.present = 1;
    sr->tr.limit = 0x67;
    sr->gdt.base = BOOT_GDT;
    sr->gdt.limit = sizeof(boot_gdt) - 1;
    sr->cr0 = 0x11;          /* PE, ET */
    sr->cr4 = 0;
    sr->efer = 0;
    if (lm) {
        sr->cr0 |= 0x80000000U | 0x20;   /* PG, NE */
        sr->cr3 = BOOT_PML4;
        sr->cr4 = 0x20;                  /* PAE */
        sr->efer = 0x500;                /* LME, LMA */
    }
}

int boot_setup_bsp(int vcpu_fd, const struct boot_entry *e)
{
    struct kvm_sregs sr;
    struct kvm_regs regs = { .rflags = 2, .rip = e->rip, .rsi = e->rsi, .rbx = e->rbx };

    if (ioctl(vcpu_fd, KVM_GET_SREGS, &sr) < 0)
        return -errno;
    boot_sregs(&sr, e);
    if (ioctl(vcpu_fd, KVM_SET_SREGS, &sr) < 0 || ioctl(vcpu_fd, KVM_SET_REGS, &regs) < 0)
        return -errno;
    return 0;
}
