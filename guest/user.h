/* User part (CPL3, IOPL 3): runs natively on PVM; kernel data is readable directly. */
#ifndef USER_H
#define USER_H

#include "kernel.h"
#include "pvclock.h"

#define DEBUGCON_PORT   0xe9

static inline u64 sys_call1(u64 nr, u64 a0)
{
    u64 ret;

    asm volatile("int $0x80" : "=a"(ret) : "a"(nr), "D"(a0) : "memory");
    return ret;
}

/* sleep_until(guest ns): the ns -> TSC conversion runs here, natively, not at CPL0.
 * `cpu` is the caller's CPU (whose pvclock applies). */
static inline void sleep_until(u32 cpu, u64 ns)
{
    sys_call1(SYS_SLEEP_TSC, pvclock_ns_to_tsc(&pvclock[cpu], ns));
}

static inline __noreturn void sys_halt(void)
{
    sys_call1(SYS_HALT, 0);
    __builtin_unreachable();
}

/* console.c: whole lines into a ring, drained to COM1 by whichever CPU is free */
void con_write(const char *s, size_t n);
void con_printf(const char *fmt, ...) __printf(1, 2);
bool con_pump(size_t budget);
void con_flush(void);
bool con_read_line(char *out, size_t size);

/* cmdline.c */
#define RATE_MAX        (~0ULL)     /* dirtier.rate=-1 */
enum pattern { PATTERN_SEQ, PATTERN_RANDOM };
struct config {
    u64 dirtier_mib;
    u64 dirtier_rate;           /* pages/s for the whole guest, or RATE_MAX */
    u32 dirtier_cpus;
    enum pattern pattern;
    u64 tick_us;
    bool boot_trace;
    /* virtio drivers (virtio.h) */
    bool blktest, blk_loop, blkbench, net;
    u64 blk_mib, blk_bench_mib;
    u32 net_ip;                 /* host order: A.B.C.D = A << 24 | ... */
    u16 net_udp;
};
extern struct config cfg;
void config_parse(const char *cmdline, u32 cpus);

#endif
