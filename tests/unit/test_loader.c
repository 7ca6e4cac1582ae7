/* ELF and bzImage parsing: valid images, the notes that pick the entry, and
 * every kind of malformed header a hostile file can carry. */
#include <elf.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "arch/x86/loader.h"

struct image {
    uint8_t buf[4096];
    size_t len;
};

static void note_put(uint8_t *p, const char *name, uint32_t namesz, uint32_t type,
                     uint64_t value, uint32_t descsz)
{
    memcpy(p, &namesz, 4);
    memcpy(p + 4, &descsz, 4);
    memcpy(p + 8, &type, 4);
    memcpy(p + 12, name, namesz);
    memcpy(p + 12 + ((namesz + 3) & ~3u), &value, descsz);
}

/* An ELF with one load segment at 1 MiB and a note segment with both notes. */
static void make_elf(struct image *im, int with_pvh, int with_ferry)
{
    Elf64_Ehdr *eh = (Elf64_Ehdr *)im->buf;
    Elf64_Phdr *ph = (Elf64_Phdr *)(im->buf + sizeof(*eh));
    uint8_t *notes = im->buf + 512;
    size_t nlen = 0;

    memset(im, 0, sizeof(*im));
    memcpy(eh->e_ident, ELFMAG, SELFMAG);
    eh->e_ident[EI_CLASS] = ELFCLASS64;
    eh->e_ident[EI_DATA] = ELFDATA2LSB;
    eh->e_type = ET_EXEC;
    eh->e_machine = EM_X86_64;
    eh->e_entry = 0x100040;
    eh->e_phoff = sizeof(*eh);
    eh->e_phentsize = sizeof(Elf64_Phdr);
    eh->e_phnum = 2;
    ph[0] = (Elf64_Phdr){ .p_type = PT_LOAD, .p_offset = 1024, .p_paddr = 0x100000,
                          .p_filesz = 256, .p_memsz = 8192 };
    if (with_pvh) {
        note_put(notes + nlen, "Xen", 4, XEN_ELFNOTE_PHYS32_ENTRY, 0x100010, 4);
        nlen += 20;
    }
    if (with_ferry) {
        note_put(notes + nlen, "FERRY", 6, FERRY_ELFNOTE_ENTRY64, 0x100040, 8);
        nlen += 28;
    }
    ph[1] = (Elf64_Phdr){ .p_type = PT_NOTE, .p_offset = 512, .p_filesz = nlen };
    im->len = 2048;
}

static void test_elf_both_notes(void **state)
{
    struct image im;
    struct elf_info info;
    const char *why = NULL;

    (void)state;
    make_elf(&im, 1, 1);
    assert_int_equal(elf_parse(im.buf, im.len, &info, &why), 0);
    assert_true(info.has_pvh);
    assert_true(info.has_entry64);
    assert_int_equal(info.pvh_entry, 0x100010);
    assert_int_equal(info.entry64, 0x100040);
    assert_int_equal(info.nsegs, 1);
    assert_int_equal(info.segs[0].paddr, 0x100000);
    assert_int_equal(info.segs[0].memsz, 8192);
}

static void test_elf_pvh_only(void **state)
{
    struct image im;
    struct elf_info info;
    const char *why = NULL;

    (void)state;
    make_elf(&im, 1, 0);
    assert_int_equal(elf_parse(im.buf, im.len, &info, &why), 0);
    assert_true(info.has_pvh);
    assert_false(info.has_entry64);
}

static void test_elf_not_elf(void **state)
{
    uint8_t junk[256] = "this is not a kernel";
    struct elf_info info;
    const char *why = NULL;

    (void)state;
    assert_int_equal(elf_parse(junk, sizeof(junk), &info, &why), -ENOEXEC);
    assert_non_null(why);
    assert_int_equal(elf_parse(junk, 10, &info, &why), -ENOEXEC);
}

static void expect_invalid(struct image *im, const char *fragment)
{
    struct elf_info info;
    const char *why = NULL;

    assert_int_equal(elf_parse(im->buf, im->len, &info, &why), -EINVAL);
    assert_non_null(why);
    assert_non_null(strstr(why, fragment));
}

static void test_elf_malformed(void **state)
{
    struct image im;
    Elf64_Ehdr *eh = (Elf64_Ehdr *)im.buf;
    Elf64_Phdr *ph = (Elf64_Phdr *)(im.buf + sizeof(*eh));

    (void)state;
    make_elf(&im, 1, 1);
    eh->e_machine = EM_386;
    expect_invalid(&im, "x86-64");
    make_elf(&im, 1, 1);
    eh->e_phoff = 0xfffffffffffff000ULL;
    expect_invalid(&im, "program headers");
    make_elf(&im, 1, 1);
    ph[0].p_offset = 4000;                 /* file data beyond the end */
    expect_invalid(&im, "out of bounds");
    make_elf(&im, 1, 1);
    ph[0].p_filesz = ph[0].p_memsz + 1;
    expect_invalid(&im, "out of bounds");
    make_elf(&im, 1, 1);
    ph[0].p_paddr = 0xfffffffffffff000ULL;
    expect_invalid(&im, "wraps");
    make_elf(&im, 1, 1);
    ph[0].p_type = PT_NULL;
    expect_invalid(&im, "no load segments");
    make_elf(&im, 1, 1);
    eh->e_type = ET_DYN;
    expect_invalid(&im, "executable");
}

/* A truncated note must not be read past its segment. */
static void test_elf_bad_note(void **state)
{
    struct image im;
    Elf64_Phdr *ph = (Elf64_Phdr *)(im.buf + sizeof(Elf64_Ehdr));
    struct elf_info info;
    const char *why = NULL;
    uint32_t huge = 0xffffff00;

    (void)state;
    make_elf(&im, 1, 0);
    memcpy(im.buf + 512 + 4, &huge, 4);    /* descsz far beyond the segment */
    assert_int_equal(elf_parse(im.buf, im.len, &info, &why), 0);
    assert_false(info.has_pvh);
    ph[1].p_filesz = 8;                    /* shorter than a note header */
    assert_int_equal(elf_parse(im.buf, im.len, &info, &why), 0);
}

static void make_bzimage(struct image *im)
{
    uint16_t version = 0x20f;
    uint32_t initrd_max = 0x7fffffff, cmdline_size = 2047;

    memset(im, 0, sizeof(*im));
    im->buf[BP_SETUP_SECTS] = 3;
    im->buf[0x201] = 0x6a;                 /* header length from 0x202 */
    memcpy(im->buf + BP_HEADER, "HdrS", 4);
    memcpy(im->buf + BP_VERSION, &version, 2);
    memcpy(im->buf + BP_INITRD_MAX, &initrd_max, 4);
    memcpy(im->buf + BP_CMDLINE_SIZE, &cmdline_size, 4);
    im->buf[BP_XLOADFLAGS] = 1;
    im->len = sizeof(im->buf);
}

static void test_bzimage_ok(void **state)
{
    struct image im;
    struct bzimage_info bz;
    const char *why = NULL;

    (void)state;
    make_bzimage(&im);
    assert_int_equal(bzimage_parse(im.buf, im.len, &bz, &why), 0);
    assert_int_equal(bz.version, 0x20f);
    assert_int_equal(bz.kernel_offset, 4 * 512);
    assert_int_equal(bz.kernel_size, im.len - 4 * 512);
    assert_int_equal(bz.header_end, 0x202 + 0x6a);
    assert_int_equal(bz.cmdline_size, 2047);
}

static void test_bzimage_bad(void **state)
{
    struct image im;
    struct bzimage_info bz;
    const char *why = NULL;

    (void)state;
    make_bzimage(&im);
    im.buf[BP_HEADER] = 'X';
    assert_int_equal(bzimage_parse(im.buf, im.len, &bz, &why), -ENOEXEC);
    make_bzimage(&im);
    im.buf[BP_VERSION] = 0x00;             /* protocol 2.00 */
    assert_int_equal(bzimage_parse(im.buf, im.len, &bz, &why), -EINVAL);
    make_bzimage(&im);
    im.buf[BP_XLOADFLAGS] = 0;
    assert_int_equal(bzimage_parse(im.buf, im.len, &bz, &why), -EINVAL);
    assert_non_null(strstr(why, "64-bit"));
    make_bzimage(&im);
    im.buf[BP_SETUP_SECTS] = 200;          /* setup larger than the file */
    assert_int_equal(bzimage_parse(im.buf, im.len, &bz, &why), -EINVAL);
    assert_int_equal(bzimage_parse(im.buf, 100, &bz, &why), -ENOEXEC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_elf_both_notes),
        cmocka_unit_test(test_elf_pvh_only),
        cmocka_unit_test(test_elf_not_elf),
        cmocka_unit_test(test_elf_malformed),
        cmocka_unit_test(test_elf_bad_note),
        cmocka_unit_test(test_bzimage_ok),
        cmocka_unit_test(test_bzimage_bad),
    };
    return cmocka_run_group_tests_name("loader", tests, NULL, NULL);
}
