/* kvmclock (pvclock) reading, shared by the kernel and the workloads. */
#ifndef PVCLOCK_H
#define PVCLOCK_H

#include "x86.h"

/* Filled by the hypervisor once MSR_KVM_SYSTEM_TIME_NEW points at it. */
struct pvclock {
    u32 version;
    u32 pad0;
    u64 tsc_timestamp;
    u64 system_time;
    u32 tsc_to_system_mul;
    s8 tsc_shift;
    u8 flags;
    u8 pad[2];
};

/* One per CPU, in memory user mode reads directly. */
extern volatile struct pvclock pvclock[MAX_CPUS];

struct pvclock_snap {
    u64 tsc;            /* TSC read inside the consistent window */
    u64 tsc_timestamp;
    u64 system_time;
    u32 mul;
    s8 shift;
};

/* Version protocol: odd = update in progress, changed = retry. */
static inline void pvclock_snapshot(const volatile struct pvclock *pv, struct pvclock_snap *s,
                                    bool ordered)
{
    u32 v;

    do {
        v = pv->version;
        barrier();
        s->tsc = ordered ? rdtsc_ordered() : rdtsc();
        s->tsc_timestamp = pv->tsc_timestamp;
        s->system_time = pv->system_time;
        s->mul = pv->tsc_to_system_mul;
        s->shift = pv->tsc_shift;
        barrier();
    } while ((v & 1) || v != pv->version);
}

static inline u64 pvclock_scale(u64 delta, u32 mul, s8 shift)
{
    delta = shift < 0 ? delta >> -shift : delta << shift;
    return (u64)(((unsigned __int128)delta * mul) >> 32);
}

static inline u64 pvclock_ns_at(const struct pvclock_snap *s, u64 tsc)
{
    return s->system_time + pvclock_scale(tsc - s->tsc_timestamp, s->mul, s->shift);
}

/* Guest time in ns; ordered = fence RDTSC (user mode, where it is native). */
static inline u64 pvclock_ns(const volatile struct pvclock *pv, bool ordered)
{
    struct pvclock_snap s;

    pvclock_snapshot(pv, &s, ordered);
    return pvclock_ns_at(&s, s.tsc);
}

/* Inverse of the scale: TSC ticks covering delta_ns (clamped to ~18 min so the
 * 128/64 division cannot overflow). */
static inline u64 pvclock_ns_to_ticks(u64 delta_ns, u32 mul, s8 shift)
{
    u64 q;

    delta_ns = MIN(delta_ns, 1ULL << 40);
    q = div128(delta_ns >> 32, delta_ns << 32, mul) + 1;
    return shift < 0 ? q << -shift : q >> shift;
}

/* TSC value at which the guest clock reaches ns (for the TSC-deadline timer). */
static inline u64 pvclock_ns_to_tsc(const volatile struct pvclock *pv, u64 ns)
{
    struct pvclock_snap s;

    pvclock_snapshot(pv, &s, false);
    if (ns <= s.system_time)
        return s.tsc_timestamp;
    return s.tsc_timestamp + pvclock_ns_to_ticks(ns - s.system_time, s.mul, s.shift);
}

#endif
