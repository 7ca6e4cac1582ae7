/* REC_DISKS: the wire form of the guest's disks and the destination's check. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "migration/disks.h"
#include "vm/vm.h"

static struct vm vm;
static struct vm_config cfg;

/* A destination with one writable disk of 16384 sectors. */
static void one_disk(void)
{
    memset(&vm, 0, sizeof(vm));
    memset(&cfg, 0, sizeof(cfg));
    cfg.ndisks = 1;
    vm.cfg = &cfg;
    vm.blk[0].capacity = 16384;
}

static void test_round_trip(void **state)
{
    struct mig_disk in[2] = { { 0, 0, 16384 }, { 1, MIG_DISK_READONLY, 8 } }, out[MIG_DISKS_MAX];
    uint8_t buf[MIG_DISKS_MAX_LEN];
    uint32_t n = 0;
    size_t len = mig_disks_encode(in, 2, buf);

    (void)state;
    assert_int_equal(len, 8 + 2 * 16);
    assert_int_equal(mig_disks_decode(buf, len, out, &n), 0);
    assert_int_equal(n, 2);
    assert_memory_equal(in, out, sizeof(in));
}

static void test_decode_checks_lengths(void **state)
{
    struct mig_disk in[1] = { { 0, 0, 1 } }, out[MIG_DISKS_MAX];
    uint8_t buf[MIG_DISKS_MAX_LEN + 16];
    uint32_t n = 0, big = MIG_DISKS_MAX + 1;
    size_t len = mig_disks_encode(in, 1, buf);

    (void)state;
    assert_int_equal(mig_disks_decode(buf, 7, out, &n), -EBADMSG);         /* no header */
    assert_int_equal(mig_disks_decode(buf, len - 1, out, &n), -EBADMSG);   /* cut short */
    assert_int_equal(mig_disks_decode(buf, len + 1, out, &n), -EBADMSG);   /* trailing */
    memcpy(buf, &big, 4);
    assert_int_equal(mig_disks_decode(buf, sizeof(buf), out, &n), -EBADMSG);   /* count */
}

static void test_compare_says_what_differs(void **state)
{
    struct mig_disk src[2] = { { 0, 0, 16384 }, { 1, 0, 8 } };
    char why[200];

    (void)state;
    one_disk();
    assert_int_equal(mig_disks_compare(src, 1, &vm, why, sizeof(why)), 0);
    assert_int_equal(mig_disks_compare(src, 2, &vm, why, sizeof(why)), -EINVAL);
    assert_string_equal(why, "the source VM has 2 disk(s), this destination 1 (--disk)");
    src[0].sectors = 8192;
    assert_int_equal(mig_disks_compare(src, 1, &vm, why, sizeof(why)), -EINVAL);
    assert_string_equal(why, "disk 0: 8192 sectors on the source, 16384 here");
    src[0].sectors = 16384;
    vm.blk[0].readonly = true;
    assert_int_equal(mig_disks_compare(src, 1, &vm, why, sizeof(why)), -EINVAL);
    assert_string_equal(why, "disk 0: writable on the source, read-only here");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_decode_checks_lengths),
        cmocka_unit_test(test_compare_says_what_differs),
    };

    return cmocka_run_group_tests_name("disks", tests, NULL, NULL);
}
