#include "migration/policy.h"

#define PAGE_BYTES 4096ULL
#define NS_PER_S   1000000000ULL

void policy_defaults(struct policy_config *c)
{
    *c = (struct policy_config){
        .downtime_limit_ns = 300ULL * 1000000,
        .on_timeout = ON_TIMEOUT_FAIL,
        .throttle_initial = 20,
        .throttle_step = 10,
        .throttle_max = 99,
        .settle_round_ns = 100ULL * 1000000,
    };
}

/* Pages dirtied between the decision and the pause are sent too. */
uint64_t policy_expected_downtime(const struct policy_input *in)
{
    unsigned __int128 pages = in->dirty_pages +
        (unsigned __int128)in->dirty_rate_pps * in->stop_latency_ns / NS_PER_S;
    unsigned __int128 transfer;

    if (!pages)
        return in->fixed_cost_ns;
    if (!in->bandwidth_bps)
        return UINT64_MAX;
    transfer = pages * PAGE_BYTES * NS_PER_S / in->bandwidth_bps;
    if (transfer > UINT64_MAX - in->fixed_cost_ns)
        return UINT64_MAX;
    return (uint64_t)transfer + in->fixed_cost_ns;
}

uint64_t policy_budget_ns(const struct policy_config *c)
{
    return c->downtime_limit_ns - c->downtime_limit_ns / 100 * POLICY_HEADROOM_PCT;
}

bool policy_stop_fits(const struct policy_config *c, const struct policy_input *in,
                      uint64_t stopped_ns)
{
    struct policy_input now = *in;
    uint64_t limit = c->downtime_limit_ns, rest;

    now.stop_latency_ns = 0;
    rest = policy_expected_downtime(&now);
    return stopped_ns <= limit && rest <= limit - stopped_ns;
}

/* Not converging: this round dirtied at least half of what it sent, so the
 * next one will not be much smaller. (A round that had nothing to send says
 * nothing: it only follows a stop that was undone.) */
static bool policy_stalled(const struct policy_input *in)
{
    return in->round >= 2 && in->last_round_sent && in->dirty_pages * 2 >= in->last_round_sent;
}

static unsigned policy_next_throttle(const struct policy_config *c, unsigned now)
{
    unsigned next = now ? now + c->throttle_step : c->throttle_initial;

    return next > c->throttle_max ? c->throttle_max : next;
}

/* The limit is met, but the pages still dominate the stop and one more short
 * round would at least halve them: worth a little total time for a shorter
 * pause (an idle or lightly written guest then stops for the fixed cost
 * alone). */
static bool policy_settle(const struct policy_config *c, const struct policy_input *in)
{
    uint64_t round_ns, pages_ns, next_pages;

    if (!in->bandwidth_bps || !in->dirty_pages)
        return false;
    round_ns = (uint64_t)((unsigned __int128)in->dirty_pages * PAGE_BYTES * NS_PER_S /
                          in->bandwidth_bps);
    pages_ns = policy_expected_downtime(in) - in->fixed_cost_ns;
    next_pages = (uint64_t)((unsigned __int128)in->dirty_rate_pps * round_ns / NS_PER_S);
    return round_ns <= c->settle_round_ns && pages_ns > in->fixed_cost_ns / 2 &&
           next_pages * 2 <= in->dirty_pages;
}

struct policy_decision policy_decide(const struct policy_config *c,
                                     const struct policy_input *in)
{
    struct policy_decision d = { POLICY_CONTINUE, in->throttle, policy_expected_downtime(in) };

    if (in->round >= 1 && d.expected_downtime_ns <= policy_budget_ns(c))
        d.action = policy_settle(c, in) ? POLICY_CONTINUE : POLICY_SWITCHOVER;
    else if (c->max_time_ns && in->elapsed_ns >= c->max_time_ns)
        d.action = c->on_timeout == ON_TIMEOUT_FORCE ? POLICY_FORCE : POLICY_FAIL;
    else if (c->auto_converge && policy_stalled(in) && in->throttle < c->throttle_max) {
        d.action = POLICY_THROTTLE;
        d.throttle = policy_next_throttle(c, in->throttle);
    }
    return d;
}

const char *policy_action_name(enum policy_action a)
{
    static const char *const names[] = { "continue", "switchover", "throttle", "force", "fail" };
    return names[a];
}

uint64_t policy_throttle_mask(const uint64_t *rates, unsigned n)
{
    uint64_t total = 0, mask = 0;

    if (!rates || n == 0 || n > 64)
        return 0;
    for (unsigned i = 0; i < n; i++)
        total += rates[i];
    if (!total)
        return 0;
    for (unsigned i = 0; i < n; i++)
        if (rates[i] >= POLICY_VCPU_MIN_PPS && rates[i] * 2 * n >= total)
            mask |= 1ULL << i;
    return mask;
}
