/* Thin wrappers around x86 instructions. Usable at CPL0 and, where the CPU allows it, CPL3. */
#ifndef X86_H
#define X86_H

#include "guest.h"

#define MSR_APIC_BASE           0x1b
#define MSR_TSC_DEADLINE        0x6e0
#define MSR_X2APIC_ID           0x802
#define MSR_X2APIC_TPR          0x808
#define MSR_X2APIC_EOI          0x80b
#define MSR_X2APIC_SVR          0x80f
#define MSR_X2APIC_ICR          0x830
#define MSR_X2APIC_LVT_TIMER    0x832
#define MSR_X2APIC_LVT_LINT0    0x835
#define MSR_X2APIC_LVT_ERROR    0x837
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01

static inline void outb(u16 port, u8 v) { asm volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { asm volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }

static inline void outl(u16 port, u32 v) { asm volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }

static inline u32 inl(u16 port)
{
    u32 v;

    asm volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline u8 inb(u16 port)
{
    u8 v;

    asm volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline u64 rdmsr(u32 msr)
{
    u32 lo, hi;

    asm volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return ((u64)hi << 32) | lo;
}

static inline void wrmsr(u32 msr, u64 v)
{
    asm volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)) : "memory");
}

static inline u64 rdtsc(void)
{
    u32 lo, hi;

    asm volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}

/* lfence keeps RDTSC from running ahead of the pvclock loads (user mode only: the
 * CPL0 emulator need not know lfence, and kernel timing needs no such precision). */
static inline u64 rdtsc_ordered(void)
{
    u32 lo, hi;

    asm volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi) : : "memory");
    return ((u64)hi << 32) | lo;
}

static inline void cpuid(u32 leaf, u32 sub, u32 *a, u32 *b, u32 *c, u32 *d)
{
    asm volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}

static inline void cpu_relax(void) { asm volatile("pause" : : : "memory"); }
static inline void barrier(void) { asm volatile("" : : : "memory"); }

static inline u64 read_cr2(void)
{
    u64 v;

    asm volatile("mov %%cr2, %0" : "=r"(v));
    return v;
}

static inline u64 read_rsp(void)
{
    u64 v;

    asm volatile("mov %%rsp, %0" : "=r"(v));
    return v;
}

#endif
