/* Convergence policy: a pure function of measured numbers, so it is unit
 * tested without KVM. The engine asks it after every dirty-log sync. */
#ifndef FERRY_MIGRATION_POLICY_H
#define FERRY_MIGRATION_POLICY_H

#include <stdbool.h>
#include <stdint.h>

enum on_timeout { ON_TIMEOUT_FAIL, ON_TIMEOUT_FORCE };

struct policy_config {
    uint64_t downtime_limit_ns;   /* default 300 ms */
    uint64_t max_time_ns;         /* 0: no limit */
    enum on_timeout on_timeout;
    bool auto_converge;
    unsigned throttle_initial;    /* percent, as QEMU: 20 */
    unsigned throttle_step;       /* percent, as QEMU: 10 */
    unsigned throttle_max;        /* percent: 99 */
    uint64_t settle_round_ns;     /* fits, but another round this short still pays: 100 ms */
};

struct policy_input {
    unsigned round;               /* rounds completed (1 after the full copy) */
    uint64_t elapsed_ns;
    uint64_t dirty_pages;         /* pages to send if we stopped now */
    uint64_t bandwidth_bps;       /* measured bytes/s, 0 if unknown */
    uint64_t dirty_rate_pps;      /* pages/s dirtied during the last round */
    uint64_t fixed_cost_ns;       /* stop cost beyond pages: state, apply, resume */
    uint64_t stop_latency_ns;     /* decision to paused vCPUs */
    uint64_t last_round_sent;     /* pages sent in the last round */
    unsigned throttle;            /* percent now */
};

enum policy_action {
    POLICY_CONTINUE,      /* another round */
    POLICY_SWITCHOVER,    /* pause and send the rest: fits the limit */
    POLICY_THROTTLE,      /* another round, with .throttle raised */
    POLICY_FORCE,         /* max time reached, on_timeout=force: switch over anyway */
    POLICY_FAIL,          /* max time reached, on_timeout=fail: give up, source runs on */
};

struct policy_decision {
    enum policy_action action;
    unsigned throttle;           /* percent to apply */
    uint64_t expected_downtime_ns;
};

void policy_defaults(struct policy_config *c);
uint64_t policy_expected_downtime(const struct policy_input *in);
/* What the policy aims at: the limit less POLICY_HEADROOM_PCT, because the
 * link rate and the stop's fixed cost are estimates. */
#define POLICY_HEADROOM_PCT 10
uint64_t policy_budget_ns(const struct policy_config *c);
/* Checked once the vCPUs are paused and the dirty log synced, so with the
 * exact number of pages (in->dirty_pages; nothing more gets dirtied) and
 * in->fixed_cost_ns what is left after the pause (state, apply, resume):
 * does the stop still fit the limit after the stopped_ns it has already
 * taken? The decision had the budget's headroom for its estimates; this
 * catches what it could not see (a slow pause, a burst of writes). If not,
 * the source resumes the VM and goes on. */
bool policy_stop_fits(const struct policy_config *c, const struct policy_input *in,
                      uint64_t stopped_ns);
struct policy_decision policy_decide(const struct policy_config *c,
                                     const struct policy_input *in);
const char *policy_action_name(enum policy_action a);
/* Which vCPUs auto-converge slows down, from per-vCPU dirty rates (pages/s;
 * the dirty ring gives them): those dirtying at least half of an even share
 * of the total, and at least POLICY_VCPU_MIN_PPS. 0 means no choice can be
 * made (no rates, too little dirtied, > 64 vCPUs): the caller keeps its
 * previous choice, or slows all of them. */
uint64_t policy_throttle_mask(const uint64_t *rates, unsigned n);
#define POLICY_VCPU_MIN_PPS 1000   /* 4 MiB/s: a vCPU dirtying less is left alone */

#endif
