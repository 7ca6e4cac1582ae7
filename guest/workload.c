/*
 * The workloads, at CPL3: one worker per CPU, each looping over short slices
 * (~100 us) of dirtying and verifying its share of the test pages, then sleeping
 * until the next thing is due. CPU 0 also prints heartbeats, writes debugcon ticks
 * and serves the serial console.
 */
#include "virtio.h"

#define HB_PERIOD_NS        (100 * NS_PER_MS)
#define VERIFY_PERIOD_NS    NS_PER_SEC      /* one full pass of every share per round */
#define VERIFY_WAKE_NS      (20 * NS_PER_MS)
#define DIRTY_BATCH_NS      (5 * NS_PER_MS)     /* a wake-up costs ~80 us of emulated CPL0 */
#define SLICE_NS            (100 * NS_PER_US)
#define IDLE_SLEEP_NS       (100 * NS_PER_MS)
#define WAIT_POLL_NS        (2 * NS_PER_MS)
#define PUMP_BYTES          16              /* UART FIFO */
#define PUMP_BYTES_TICK     4               /* CPU 0 with ticks: ~170 us of port exits */
#define TICK_CATCHUP_NS     (20 * NS_PER_MS)
#define TICK_BURST          8
#define STALL_NS            NS_PER_SEC      /* every worker loops at least every 100 ms */

#define K_PAGE              0x9E3779B97F4A7C15UL
#define K_GEN               0xC2B2AE3D27D4EB4FUL
#define K_WORD              0x165667B19E3779F9UL
#define PAGE_WORDS          (PAGE_SIZE / 8)

extern u8 __image_end[];

struct worker {
    u32 cpu;
    bool owner;                 /* owns, fills, dirties and verifies a share of the pages */
    u64 first, count;           /* the share: pages [first, first + count) */
    u64 rate;                   /* pages/s; 0 = idle; RATE_MAX = flat out */
    u64 slice_ticks;            /* TSC ticks per work slice */
    u64 last_ns;                /* last guest time read: time going backwards, stalls */
    bool stalled;               /* CPU 0's note: this stall was reported */
    /* dirtier */
    u64 d_t0;                   /* rate accounting: d_done pages written since d_t0 */
    s64 d_done;
    u64 d_pos;                  /* seq pattern position */
    u64 rng;                    /* random pattern state (xorshift64) */
    /* verifier */
    u32 v_round;                /* round this worker is verifying */
    bool v_waiting;             /* pass done, waiting for the other workers */
    u64 v_start, v_pos, v_bad;
    /* read by CPU 0 for heartbeats: its own cache line */
    u64 written __aligned(64);
} __aligned(128);

static struct worker workers[MAX_CPUS] __noinit;    /* each worker clears its own */

static struct {
    u8 *pages;
    u32 *gen;                   /* expected generation per page */
    u64 npages;
    u32 nowners, first_owner;
    u32 go, filled, ready;
} wl;

/* Verify rounds: the worker that completes a round last prints its one line. */
static struct {
    u32 done;                   /* owners finished with the current round */
    u32 completed;              /* rounds printed */
    u64 pages, bad;
    u32 fail_set;
    u64 fail_page;
    u32 fail_found, fail_expected, fail_word;
} vr;

/* CPU 0's duties. */
static struct {
    u64 next_hb, hb_seq, hb_last;
    u64 tick_ns, next_tick;
    u64 prev_ns;                /* CPU 0's previous loop */
    u64 watch_after;            /* no stall checks before this (after a VM pause) */
} c0;

/* ---- guest time ---- */

static u64 worker_now(struct worker *w)
{
    u64 now = pvclock_ns(&pvclock[w->cpu], true);

    if (now < w->last_ns)
        con_printf("TIME BACKWARDS %lu\n", w->last_ns - now);
    __atomic_store_n(&w->last_ns, now, __ATOMIC_RELAXED);
    return now;
}

static u64 ns_to_ticks(u32 cpu, u64 ns)
{
    const volatile struct pvclock *pv = &pvclock[cpu];

    return pvclock_ns_to_ticks(ns, pv->tsc_to_system_mul, pv->tsc_shift);
}

/* ---- pages ---- */

static inline u64 *page_ptr(u64 p)
{
    return (u64 *)(wl.pages + p * PAGE_SIZE);
}

static inline u64 page_mix_base(u64 p, u32 g)
{
    return (p * K_PAGE) ^ ((u64)g * K_GEN);
}

/* word[0] = p, word[1] = g, word[j] = mix(p, g, j); then the expected generation. */
static void page_write(u64 p, u32 g)
{
    u64 *w = page_ptr(p);
    u64 base = page_mix_base(p, g), jk = 2 * K_WORD;

    w[0] = p;
    w[1] = g;
    for (u64 j = 2; j < PAGE_WORDS; j++, jk += K_WORD)
        w[j] = base ^ jk;
    wl.gen[p] = g;
}

/* -1 if page p holds generation gen[p], else the first bad word; *found = its word[1]. */
static int page_check(u64 p, u32 *found)
{
    const u64 *w = page_ptr(p);
    u32 g = wl.gen[p];
    u64 base = page_mix_base(p, g), jk = 2 * K_WORD, diff = 0;

    *found = (u32)w[1];
    if (w[0] != p)
        return 0;
    if (w[1] != g)
        return 1;
    for (u64 j = 2; j < PAGE_WORDS; j++, jk += K_WORD)
        diff |= w[j] ^ (base ^ jk);
    if (!diff)
        return -1;
    jk = 2 * K_WORD;
    for (u64 j = 2; j < PAGE_WORDS; j++, jk += K_WORD)
        if (w[j] != (base ^ jk))
            return (int)j;
    return -1;
}

/* ---- dirtier ---- */

static u64 dirtier_next_page(struct worker *w)
{
    u64 p;

    if (cfg.pattern == PATTERN_RANDOM) {
        w->rng ^= w->rng << 13;
        w->rng ^= w->rng >> 7;
        w->rng ^= w->rng << 17;
        return w->first + w->rng % w->count;
    }
    p = w->first + w->d_pos;
    if (++w->d_pos == w->count)
        w->d_pos = 0;
    return p;
}

static void dirtier_write(struct worker *w)
{
    u64 p = dirtier_next_page(w);

    page_write(p, wl.gen[p] + 1);
    __atomic_store_n(&w->written, w->written + 1, __ATOMIC_RELAXED);
}

/* Pages owed at `now` at the worker's rate; forgets backlogs over 100 ms (pauses). */
static s64 dirtier_due(struct worker *w, u64 now)
{
    s64 due, cap = (s64)(w->rate / 10) + 1;

    if (now < w->d_t0 || now - w->d_t0 > 10 * NS_PER_SEC) {
        w->d_t0 = now;
        w->d_done = 0;
    }
    while (now - w->d_t0 >= NS_PER_SEC) {     /* rebase: keeps rate * elapsed small */
        w->d_t0 += NS_PER_SEC;
        w->d_done -= (s64)w->rate;
    }
    due = (s64)(w->rate * (now - w->d_t0) / NS_PER_SEC) - w->d_done;
    if (due > cap) {
        w->d_done += due - cap;
        due = cap;
    }
    return due;
}

/* One slice of writes. True if more are due at once; else *next = when they are. */
static bool dirtier_step(struct worker *w, u64 now, u64 *next)
{
    u64 end = rdtsc() + w->slice_ticks;
    s64 due;

    if (!w->count || !w->rate)
        return false;
    if (w->rate == RATE_MAX) {
        do
            dirtier_write(w);
        while (rdtsc() < end);
        return true;
    }
    due = dirtier_due(w, now);
    for (; due > 0 && rdtsc() < end; due--, w->d_done++)
        dirtier_write(w);
    if (due > 0)
        return true;
    /* Next page's time, but batch: at least DIRTY_BATCH_NS between wake-ups. */
    *next = MIN(*next, MAX(w->d_t0 + (u64)(w->d_done + 1) * NS_PER_SEC / w->rate,
                           now + DIRTY_BATCH_NS));
    return false;
}

/* ---- verifier ---- */

static void verify_page(struct worker *w, u64 p)
{
    u32 found;
    int j = page_check(p, &found);

    if (j < 0)
        return;
    w->v_bad++;
    if (!__atomic_exchange_n(&vr.fail_set, 1, __ATOMIC_ACQ_REL)) {
        vr.fail_page = p;
        vr.fail_found = found;
        vr.fail_expected = wl.gen[p];
        vr.fail_word = (u32)j;
    }
}

static void verify_report(void)
{
    if (vr.bad)
        con_printf("VERIFY FAIL %lu gen=%u expected=%u word=%u bad=%lu\n", vr.fail_page,
                   vr.fail_found, vr.fail_expected, vr.fail_word, vr.bad);
    else
        con_printf("VERIFY ok %lu\n", vr.pages);
}

static void verify_finish(struct worker *w)
{
    __atomic_add_fetch(&vr.pages, w->count, __ATOMIC_RELAXED);
    __atomic_add_fetch(&vr.bad, w->v_bad, __ATOMIC_RELAXED);
    w->v_bad = 0;
    w->v_waiting = true;
    if (__atomic_add_fetch(&vr.done, 1, __ATOMIC_ACQ_REL) != wl.nowners)
        return;
    verify_report();
    vr.pages = vr.bad = 0;
    vr.fail_set = 0;
    vr.done = 0;
    __atomic_store_n(&vr.completed, vr.completed + 1, __ATOMIC_RELEASE);
}

/* Checks the pages due by `now` (pass paced over VERIFY_PERIOD_NS) within a slice. */
static bool verify_step(struct worker *w, u64 now, u64 *next)
{
    u64 end = rdtsc() + w->slice_ticks, elapsed, due;

    if (w->v_waiting) {
        if (__atomic_load_n(&vr.completed, __ATOMIC_ACQUIRE) <= w->v_round) {
            *next = MIN(*next, now + VERIFY_WAKE_NS);
            return false;
        }
        w->v_round++;
        w->v_waiting = false;
        w->v_start = now;
        w->v_pos = 0;
    }
    elapsed = now > w->v_start ? now - w->v_start : 0;
    due = elapsed >= VERIFY_PERIOD_NS ? w->count : w->count * elapsed / VERIFY_PERIOD_NS;
    while (w->v_pos < due && rdtsc() < end)
        verify_page(w, w->first + w->v_pos++);
    if (w->v_pos == w->count) {
        verify_finish(w);
    } else if (w->v_pos < due) {
        return true;
    }
    *next = MIN(*next, now + VERIFY_WAKE_NS);
    return false;
}

/* ---- CPU 0: heartbeat, ticks, console commands ---- */

static u64 pages_written(void)
{
    u64 sum = 0;

    for (u32 i = wl.first_owner; i < ncpus; i++)
        sum += __atomic_load_n(&workers[i].written, __ATOMIC_RELAXED);
    return sum;
}

static void c0_heartbeat(u64 now, u64 *next)
{
    if (now >= c0.next_hb) {
        con_printf("HB %lu %lu %lu\n", c0.hb_seq, now, pages_written());
        c0.hb_last = c0.hb_seq++;
        /* Fixed schedule; after a stall, restart it from now rather than print a burst. */
        c0.next_hb += HB_PERIOD_NS;
        if (c0.next_hb <= now)
            c0.next_hb = now + HB_PERIOD_NS;
    }
    *next = MIN(*next, c0.next_hb);
}

/*
 * Debugcon ticks on a fixed schedule. Up to TICK_CATCHUP_NS late (the host preempting
 * the vCPU: ~13 ms seen with 2 busy vCPUs on 2 cores), missed bytes are sent in
 * bursts of at most TICK_BURST, so the rate holds; later than that (a pause, a
 * migration stop), the schedule restarts from now and the gap stays visible. Periods
 * shorter than a port exit (~34 us here) just run late and restart.
 */
static void c0_tick(u64 now, u64 *next)
{
    u32 burst = 0;

    if (!c0.tick_ns)
        return;
    if (now >= c0.next_tick && now - c0.next_tick >= TICK_CATCHUP_NS)
        c0.next_tick = now;
    while (now >= c0.next_tick && burst++ < TICK_BURST) {
        outb(DEBUGCON_PORT, '.');
        c0.next_tick += c0.tick_ns;
    }
    *next = MIN(*next, c0.next_tick);
}

static void c0_poweroff(struct worker *w)
{
    con_printf("POWEROFF\n");
    con_flush();
    acpi_poweroff();
    sleep_until(w->cpu, worker_now(w) + NS_PER_SEC);  /* the VMM ends us meanwhile */
    con_printf("ERR poweroff failed\n");
}

static void c0_command(struct worker *w, char *line)
{
    char *cmd = line, *end;

    while (*cmd == ' ' || *cmd == '\t')
        cmd++;
    for (end = cmd; *end && *end != ' ' && *end != '\t'; end++)
        ;
    *end = 0;
    if (!*cmd)
        return;
    if (!memcmp(cmd, "stat", 5))
        con_printf("STAT cpus=%u mem=%lu pages=%lu written=%lu hb=%lu rounds=%u ns=%lu\n",
                   ncpus, (boot_mem_bytes() + MIB / 2) / MIB, wl.npages, pages_written(),
                   c0.hb_last, __atomic_load_n(&vr.completed, __ATOMIC_ACQUIRE), worker_now(w));
    else if (!memcmp(cmd, "poweroff", 9))
        c0_poweroff(w);
    else
        con_printf("ERR unknown command %s\n", cmd);
}

/*
 * A worker that has not looped for STALL_NS is stuck: typically a timer interrupt that
 * never came (a VMM losing TSC-deadline or LAPIC state). Say so once per episode.
 * When CPU 0 itself was away that long, the whole VM was paused: give the others
 * STALL_NS to run again before judging them.
 */
static void c0_watch(u64 now)
{
    if (now - c0.prev_ns > STALL_NS / 2)
        c0.watch_after = now + STALL_NS;
    c0.prev_ns = now;
    if (now < c0.watch_after)
        return;
    for (u32 i = 1; i < ncpus; i++) {
        struct worker *o = &workers[i];
        u64 last = __atomic_load_n(&o->last_ns, __ATOMIC_RELAXED);

        if (now > last + STALL_NS && !o->stalled)
            con_printf("STALL cpu=%u ms=%lu\n", i, (now - last) / NS_PER_MS);
        o->stalled = now > last + STALL_NS;
    }
}

static void c0_step(struct worker *w, u64 now, u64 *next)
{
    char line[80];

    c0_tick(now, next);
    while (con_read_line(line, sizeof(line)))
        c0_command(w, line);
    c0_heartbeat(now, next);
    c0_watch(now);
}

/* ---- the virtio CPU's duties while a driver waits (virtio.h) ---- */

u32 virtio_cpu;
static struct worker *virtio_worker;
static u64 yield_next;          /* guest ns when its own duties are next due */

/* Runs what the virtio CPU's worker loop would (heartbeats on a single CPU, its dirtier
 * and verifier share), but only when due, so a polling driver keeps most of the time. */
void worker_yield(void)
{
    struct worker *w = virtio_worker;
    u64 now = worker_now(w), next = now + IDLE_SLEEP_NS;
    bool busy = false;

    if (now < yield_next)
        return;
    if (w->cpu == 0)
        c0_step(w, now, &next);
    if (w->owner) {
        busy |= dirtier_step(w, now, &next);
        busy |= verify_step(w, now, &next);
    }
    if (w->cpu == 0)
        busy |= con_pump(PUMP_BYTES_TICK);
    yield_next = busy ? now + SLICE_NS : next;
}

/* ---- set-up ---- */

/* The largest RAM range above the image (and inside the 64 GiB identity map). */
static void layout_best_range(u64 *start, u64 *len)
{
    u64 lo = ALIGN_UP((u64)__image_end, PAGE_SIZE), map_end = 64ULL << 30;

    *start = *len = 0;
    for (u32 i = 0; i < boot.memmap_count; i++) {
        const struct memmap_entry *e = &boot.memmap[i];
        u64 s = MAX(ALIGN_UP(e->addr, PAGE_SIZE), lo);
        u64 end = MIN((e->addr + e->size) & ~(PAGE_SIZE - 1), map_end);

        if (e->type == MEMMAP_RAM && end > s && end - s > *len) {
            *start = s;
            *len = end - s;
        }
    }
}

/* gen[] first, then the pages, contiguous in one RAM range. */
static void layout_init(void)
{
    u64 start, len, fit, want = cfg.dirtier_mib * (MIB / PAGE_SIZE);

    layout_best_range(&start, &len);
    fit = len > PAGE_SIZE ? (len - PAGE_SIZE) / (PAGE_SIZE + sizeof(u32)) : 0;
    if (want > fit) {
        u64 mib = fit / (MIB / PAGE_SIZE);

        con_printf("WARN dirtier.mib=%lu does not fit in RAM, using %lu\n", cfg.dirtier_mib, mib);
        want = mib * (MIB / PAGE_SIZE);
    }
    wl.gen = (u32 *)start;
    wl.pages = (u8 *)(start + ALIGN_UP(want * sizeof(u32), PAGE_SIZE));
    wl.npages = want;
}

static void workload_setup(void)
{
    const char *why;

    config_parse(boot.cmdline, ncpus);
    why = acpi_power_probe();
    if (why)
        con_printf("WARN acpi: %s; no poweroff\n", why);
    layout_init();
    /* Owners are the last K CPUs, so CPU 0 keeps free time for ticks when K < ncpus. */
    wl.nowners = cfg.dirtier_cpus;
    wl.first_owner = ncpus - cfg.dirtier_cpus;
    c0.tick_ns = cfg.tick_us * NS_PER_US;
    virtio_cpu = ncpus - 1;     /* like the dirtier: CPU 0 keeps its time for heartbeats */
}

static void worker_init(struct worker *w, u32 cpu)
{
    u32 k = wl.nowners, i = cpu - wl.first_owner;
    u64 slice = cpu == 0 && c0.tick_ns ? MIN(SLICE_NS, c0.tick_ns / 8) : SLICE_NS;

    memset(w, 0, sizeof(*w));
    w->cpu = cpu;
    w->last_ns = pvclock_ns(&pvclock[cpu], true);
    w->slice_ticks = ns_to_ticks(cpu, slice);
    w->rng = K_PAGE ^ ((u64)(cpu + 1) * K_GEN);
    w->owner = cpu >= wl.first_owner;
    if (!w->owner)
        return;
    w->first = wl.npages * i / k;
    w->count = wl.npages * (i + 1) / k - w->first;
    if (cfg.dirtier_rate == RATE_MAX)
        w->rate = RATE_MAX;
    else
        w->rate = cfg.dirtier_rate / k + (i < cfg.dirtier_rate % k);
}

/* Waits for a flag set by another CPU, helping with console output meanwhile. */
static void wait_for(u32 *flag, u32 value, u32 cpu)
{
    while (__atomic_load_n(flag, __ATOMIC_ACQUIRE) < value)
        if (!con_pump(PUMP_BYTES))
            sleep_until(cpu, pvclock_ns(&pvclock[cpu], true) + WAIT_POLL_NS);
}

/* boot.trace=1: boot phase times since the first instruction, what a system call and a
 * port-read exit cost on this VMM (useful when comparing VMMs), where the pages are. */
static void boot_trace_print(struct worker *w)
{
    const volatile struct pvclock *pv = &pvclock[0];
    u64 us[MARK_COUNT], t0, t1, t2, t3;

    for (u32 i = 0; i < MARK_COUNT; i++)
        us[i] = pvclock_scale(boot_marks[i] - boot_marks[MARK_ENTRY], pv->tsc_to_system_mul,
                              pv->tsc_shift) / NS_PER_US;
    con_printf("TRACE boot_us kernel=%lu smp=%lu user=%lu ready=%lu\n",
               us[MARK_KERNEL], us[MARK_SMP], us[MARK_USER], us[MARK_READY]);
    t0 = worker_now(w);
    for (int i = 0; i < 100; i++)
        sys_call1(SYS_SLEEP_TSC, 0);        /* deadline passed: returns at once */
    t1 = worker_now(w);
    for (int i = 0; i < 100; i++)
        sleep_until(w->cpu, worker_now(w) + 100 * NS_PER_US);
    t2 = worker_now(w);
    for (int i = 0; i < 100; i++)
        (void)inb(COM1 + 5);
    t3 = worker_now(w);
    con_printf("TRACE cost_ns syscall=%lu sleep_100us=%lu port_in=%lu\n",
               (t1 - t0) / 100, (t2 - t1) / 100, (t3 - t2) / 100);
    con_printf("TRACE layout gen=0x%lx pages=0x%lx npages=%lu\n",
               (u64)wl.gen, (u64)wl.pages, wl.npages);
}

static void workload_start(struct worker *w)
{
    u32 cpu = w->cpu;

    if (w->owner)
        for (u64 p = w->first; p < w->first + w->count; p++)
            page_write(p, 1);
    __atomic_add_fetch(&wl.filled, 1, __ATOMIC_ACQ_REL);
    if (cpu != 0) {
        wait_for(&wl.ready, 1, cpu);
        return;
    }
    wait_for(&wl.filled, ncpus, cpu);
    boot_marks[MARK_READY] = rdtsc();
    con_printf("READY pages=%lu\n", wl.npages);
    if (cfg.boot_trace)
        boot_trace_print(w);
    c0.next_hb = c0.next_tick = c0.prev_ns = worker_now(w);
    c0.watch_after = c0.prev_ns + STALL_NS;     /* the others' last loop predates the fill */
    __atomic_store_n(&wl.ready, 1, __ATOMIC_RELEASE);
}

static __noreturn void worker_loop(struct worker *w)
{
    size_t pump = w->cpu == 0 && c0.tick_ns ? PUMP_BYTES_TICK : PUMP_BYTES;

    for (;;) {
        u64 now = worker_now(w), next = now + IDLE_SLEEP_NS;
        bool busy = false;

        if (w->cpu == 0)
            c0_step(w, now, &next);
        if (w->owner) {
            busy |= dirtier_step(w, now, &next);
            busy |= verify_step(w, now, &next);
        }
        if (w->cpu == virtio_cpu)
            busy |= virtio_step(now, &next);
        busy |= con_pump(pump);
        if (!busy)
            sleep_until(w->cpu, next);
    }
}

__noreturn void workload_main(u32 cpu)
{
    struct worker *w = &workers[cpu];

    if (cpu == 0) {
        workload_setup();
        __atomic_store_n(&wl.go, 1, __ATOMIC_RELEASE);
    } else {
        wait_for(&wl.go, 1, cpu);
    }
    worker_init(w, cpu);
    if (cpu == virtio_cpu)
        virtio_worker = w;
    workload_start(w);
    worker_loop(w);
}
