/* Post-copy bookkeeping without KVM: the needed-pages bitmap on the wire and
 * the fault latency percentiles. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "migration/postcopy.h"

static struct guest_mem two_regions(void)
{
    struct guest_mem m = { .fd = -1, .nregions = 2, .size = 200 * 4096 };

    m.regions[0] = (struct mem_region){ 0, 130 * 4096, 0 };
    m.regions[1] = (struct mem_region){ 1ULL << 32, 70 * 4096, 130 * 4096 };
    return m;
}

static void fill(struct pc_bitmap *b, const struct guest_mem *m)
{
    b->n = m->nregions;
    for (unsigned i = 0; i < b->n; i++) {
        b->r[i].gpa = m->regions[i].gpa;
        b->r[i].pages = m->regions[i].size / 4096;
        b->r[i].bits = calloc((b->r[i].pages + 63) / 64, 8);
    }
}

static void test_bitmap_roundtrip(void **state)
{
    struct guest_mem m = two_regions();
    struct pc_bitmap a = { 0 }, b = { 0 };
    const char *why = NULL;
    uint8_t *buf;
    uint64_t len, page;
    unsigned region;

    (void)state;
    fill(&a, &m);
    a.r[0].bits[0] = 0x5;          /* pages 0 and 2 */
    a.r[0].bits[2] = 1ULL << 1;    /* page 129 */
    a.r[1].bits[1] = 1ULL << 5;    /* page 69 of region 1 */
    assert_int_equal(pc_bitmap_count(&a), 4);
    assert_int_equal(pc_bitmap_encode(&a, &buf, &len), 0);
    assert_int_equal(pc_bitmap_decode(&b, &m, buf, len, &why), 0);
    assert_int_equal(pc_bitmap_count(&b), 4);
    assert_true(pc_bitmap_locate(&b, (1ULL << 32) + 69 * 4096, &region, &page));
    assert_int_equal(region, 1);
    assert_int_equal(page, 69);
    assert_true(pc_bitmap_test(&b, 1, 69));
    assert_true(pc_bitmap_test_clear(&b, 1, 69));
    assert_false(pc_bitmap_test_clear(&b, 1, 69));
    assert_int_equal(pc_bitmap_count(&b), 3);
    assert_false(pc_bitmap_locate(&b, 130 * 4096, &region, &page));   /* in the hole */
    pc_bitmap_free(&b);
    /* Truncated, too long, or another layout: refused, nothing leaked. */
    assert_int_equal(pc_bitmap_decode(&b, &m, buf, len - 1, &why), -EBADMSG);
    {
        uint8_t *longer = malloc(len + 8);
        memcpy(longer, buf, len);
        memset(longer + len, 0, 8);
        assert_int_equal(pc_bitmap_decode(&b, &m, longer, len + 8, &why), -EBADMSG);
        free(longer);
    }
    m.regions[1].size -= 4096;
    assert_int_equal(pc_bitmap_decode(&b, &m, buf, len, &why), -EBADMSG);
    assert_non_null(strstr(why, "layout"));
    free(buf);
    pc_bitmap_free(&a);
}

/* Bits past a region's last page never count, whatever the sender says. */
static void test_bitmap_tail_bits(void **state)
{
    struct guest_mem m = two_regions();
    struct pc_bitmap a = { 0 }, b = { 0 };
    const char *why = NULL;
    uint8_t *buf;
    uint64_t len;

    (void)state;
    fill(&a, &m);
    a.r[1].bits[1] = ~0ULL;        /* pages 64..127, of which only 64..69 exist */
    assert_int_equal(pc_bitmap_encode(&a, &buf, &len), 0);
    assert_int_equal(pc_bitmap_decode(&b, &m, buf, len, &why), 0);
    assert_int_equal(pc_bitmap_count(&b), 6);
    free(buf);
    pc_bitmap_free(&a);
    pc_bitmap_free(&b);
}

static void test_latency_percentiles(void **state)
{
    uint32_t lat[200];
    struct pc_stats st = { .nlat = 200, .lat_us = lat };
    uint32_t p50, p99, max;

    (void)state;
    for (uint32_t i = 0; i < 200; i++)
        lat[i] = 200 - i;          /* 200 .. 1, unsorted */
    pc_latency_percentiles(&st, &p50, &p99, &max);
    assert_int_equal(p50, 100);
    assert_int_equal(p99, 198);
    assert_int_equal(max, 200);
    assert_int_equal(lat[0], 200);  /* the caller's array is left alone */
    st.nlat = 0;
    pc_latency_percentiles(&st, &p50, &p99, &max);
    assert_int_equal(max, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bitmap_roundtrip),
        cmocka_unit_test(test_bitmap_tail_bits),
        cmocka_unit_test(test_latency_percentiles),
    };
    return cmocka_run_group_tests_name("postcopy", tests, NULL, NULL);
}
