/* The convergence policy and the dirty-bitmap helpers: pure logic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "migration/dirty.h"
#include "migration/policy.h"

#define MS 1000000ULL
#define MIB (1ULL << 20)

static struct policy_input input(uint64_t dirty_pages, uint64_t bw)
{
    return (struct policy_input){
        .round = 2, .elapsed_ns = 1000 * MS, .dirty_pages = dirty_pages, .bandwidth_bps = bw,
        .dirty_rate_pps = 0, .fixed_cost_ns = 5 * MS, .stop_latency_ns = MS,
        .last_round_sent = 100000,
    };
}

static void test_expected_downtime(void **state)
{
    struct policy_input in = input(25600, 100 * MIB);   /* 100 MiB at 100 MiB/s */

    (void)state;
    assert_int_equal(policy_expected_downtime(&in), 1000 * MS + 5 * MS);
    in.dirty_rate_pps = 256000;                         /* +256 pages in the 1 ms stop */
    assert_int_equal(policy_expected_downtime(&in), 1010 * MS + 5 * MS);
    in.bandwidth_bps = 0;                               /* unknown link: never fits */
    assert_int_equal(policy_expected_downtime(&in), UINT64_MAX);
}

static void test_switchover_when_it_fits(void **state)
{
    struct policy_config c;
    struct policy_input in = input(2560, 100 * MIB);    /* 10 MiB: 100 ms + 5 ms */
    struct policy_decision d;

    (void)state;
    policy_defaults(&c);
    c.settle_round_ns = 0;                              /* settling tested below */
    assert_int_equal(c.downtime_limit_ns, 300 * MS);
    d = policy_decide(&c, &in);
    assert_int_equal(d.action, POLICY_SWITCHOVER);
    assert_int_equal(d.expected_downtime_ns, 105 * MS);
    c.downtime_limit_ns = 110 * MS;                     /* 105 > 99, the budget */
    assert_int_equal(policy_budget_ns(&c), 99 * MS);
    assert_int_equal(policy_decide(&c, &in).action, POLICY_CONTINUE);
    c.downtime_limit_ns = 116666667;                    /* budget 105 ms: fits exactly */
    assert_int_equal(policy_decide(&c, &in).action, POLICY_SWITCHOVER);
    in.round = 0;                                       /* never before the full copy */
    assert_int_equal(policy_decide(&c, &in).action, POLICY_CONTINUE);
}

/* It fits, but one more short round would halve a page-dominated stop. */
static void test_settle(void **state)
{
    struct policy_config c;
    struct policy_input in = input(2560, 100 * MIB);    /* 100 ms of pages + 5 ms */

    (void)state;
    policy_defaults(&c);
    in.dirty_rate_pps = 5000;                           /* 500 pages in the 100 ms round */
    assert_int_equal(policy_decide(&c, &in).action, POLICY_CONTINUE);
    in.dirty_rate_pps = 20000;                          /* 2000 next: not halved */
    assert_int_equal(policy_decide(&c, &in).action, POLICY_SWITCHOVER);
    in.dirty_rate_pps = 0;
    in.dirty_pages = 26;                                /* ~1 ms of pages < fixed/2 */
    assert_int_equal(policy_decide(&c, &in).action, POLICY_SWITCHOVER);
    in.dirty_pages = 25600;                             /* 1 s round: too long to settle */
    c.downtime_limit_ns = 2000 * MS;
    assert_int_equal(policy_decide(&c, &in).action, POLICY_SWITCHOVER);
}

/* At the pause: the exact page count and the time stopping already took. */
static void test_stop_fits(void **state)
{
    struct policy_config c;
    struct policy_input in = input(2560, 100 * MIB);    /* 100 ms of pages + 5 ms */

    (void)state;
    policy_defaults(&c);                                /* limit 300 ms */
    in.dirty_rate_pps = 1000000;                        /* ignored: nothing dirties now */
    in.stop_latency_ns = 100 * MS;
    assert_true(policy_stop_fits(&c, &in, 0));
    assert_true(policy_stop_fits(&c, &in, 195 * MS));   /* 195 + 105 = 300 */
    assert_false(policy_stop_fits(&c, &in, 196 * MS));
    assert_false(policy_stop_fits(&c, &in, 400 * MS));  /* no wrap-around */
    in.dirty_pages = 7000;                              /* 273 ms + 5 > 300 - 40 */
    assert_false(policy_stop_fits(&c, &in, 40 * MS));
    in.bandwidth_bps = 0;                               /* unknown link: never fits */
    assert_false(policy_stop_fits(&c, &in, 0));
}

static void test_max_time(void **state)
{
    struct policy_config c;
    struct policy_input in = input(1000000, 100 * MIB);

    (void)state;
    policy_defaults(&c);
    c.max_time_ns = 2000 * MS;
    assert_int_equal(policy_decide(&c, &in).action, POLICY_CONTINUE);
    in.elapsed_ns = 2000 * MS;
    assert_int_equal(policy_decide(&c, &in).action, POLICY_FAIL);
    c.on_timeout = ON_TIMEOUT_FORCE;
    assert_int_equal(policy_decide(&c, &in).action, POLICY_FORCE);
    in.dirty_pages = 10;                                /* fits: switchover wins */
    assert_int_equal(policy_decide(&c, &in).action, POLICY_SWITCHOVER);
}

static void test_auto_converge_steps(void **state)
{
    struct policy_config c;
    struct policy_input in = input(80000, 100 * MIB);  /* dirtied 80% of what it sent */
    struct policy_decision d;

    (void)state;
    policy_defaults(&c);
    assert_int_equal(policy_decide(&c, &in).action, POLICY_CONTINUE);   /* off */
    c.auto_converge = true;
    d = policy_decide(&c, &in);
    assert_int_equal(d.action, POLICY_THROTTLE);
    assert_int_equal(d.throttle, 20);
    in.throttle = 20;
    assert_int_equal(policy_decide(&c, &in).throttle, 30);
    in.throttle = 95;
    assert_int_equal(policy_decide(&c, &in).throttle, 99);
    in.throttle = 99;                                   /* at the ceiling */
    assert_int_equal(policy_decide(&c, &in).action, POLICY_CONTINUE);
    in.throttle = 20;
    in.dirty_pages = 30000;                             /* converging: no more throttle */
    assert_int_equal(policy_decide(&c, &in).action, POLICY_CONTINUE);
    in.dirty_pages = 80000;
    in.last_round_sent = 0;                             /* an empty round is no stall */
    assert_int_equal(policy_decide(&c, &in).action, POLICY_CONTINUE);
}

static void test_bitmap(void **state)
{
    uint64_t bm[3] = { 0 };

    (void)state;
    assert_int_equal(bitmap_count(bm, 150), 0);
    assert_int_equal(bitmap_next(bm, 150, 0), 150);
    bm[0] = 1ULL << 5;
    bm[1] = 1ULL << 63;
    bm[2] = ~0ULL;                                      /* bits past the end ignored */
    assert_int_equal(bitmap_count(bm, 150), 2 + 22);
    assert_int_equal(bitmap_next(bm, 150, 0), 5);
    assert_int_equal(bitmap_next(bm, 150, 6), 127);
    assert_int_equal(bitmap_next(bm, 150, 128), 128);
    assert_int_equal(bitmap_next(bm, 150, 149), 149);
    assert_int_equal(bitmap_words(150), 3);
    assert_int_equal(bitmap_words(64), 1);
    {
        uint64_t a[2] = { 1, 0 }, b[2] = { 2, 4 };
        bitmap_or(a, b, 128);
        assert_int_equal(a[0], 3);
        assert_int_equal(a[1], 4);
    }
}

static void test_throttle_mask(void **state)
{
    uint64_t one_dirtier[2] = { 40, 250000 };      /* vCPU 0 heartbeats, vCPU 1 dirties */
    uint64_t even[4] = { 9000, 11000, 10000, 10000 };
    uint64_t skewed[4] = { 0, 3000, 100000, 1000 };
    uint64_t none[3] = { 0, 0, 0 };
    uint64_t slow[2] = { 300, 900 };                /* both under 1000 pages/s */

    (void)state;
    assert_int_equal(policy_throttle_mask(one_dirtier, 2), 0x2);
    assert_int_equal(policy_throttle_mask(even, 4), 0xf);
    assert_int_equal(policy_throttle_mask(skewed, 4), 0x4);
    assert_int_equal(policy_throttle_mask(none, 3), 0);    /* nothing known: no choice */
    assert_int_equal(policy_throttle_mask(slow, 2), 0);
    assert_int_equal(policy_throttle_mask(NULL, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expected_downtime),
        cmocka_unit_test(test_stop_fits),
        cmocka_unit_test(test_switchover_when_it_fits),
        cmocka_unit_test(test_settle),
        cmocka_unit_test(test_max_time),
        cmocka_unit_test(test_auto_converge_steps),
        cmocka_unit_test(test_bitmap),
        cmocka_unit_test(test_throttle_mask),
    };
    return cmocka_run_group_tests_name("policy", tests, NULL, NULL);
}
