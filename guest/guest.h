/* Definitions shared by the kernel part (CPL0) and the workloads (CPL3), C and assembly. */
#ifndef GUEST_H
#define GUEST_H

#define MAX_CPUS        64
#define KSTACK_SIZE     8192        /* per CPU: boot, interrupts, system calls */
#define USTACK_SIZE     16384       /* per CPU: the worker */
#define TSS_SIZE        104

/* GDT layout; TSS descriptors (16 bytes each) follow the fixed entries. */
#define SEL_KCODE       0x08
#define SEL_KDATA       0x10
#define SEL_KCODE32     0x18        /* AP trampoline's protected-mode step */
#define SEL_UDATA       0x23
#define SEL_UCODE       0x2b
#define SEL_TSS0        0x30
#define GDT_ENTRIES     (6 + 2 * MAX_CPUS)

#define VEC_TIMER       0x20
#define VEC_SERIAL      0x24
#define VEC_VIRTIO      0x30        /* MSI-X of the virtio-blk request queues (blktest) */
#define VEC_SYSCALL     0x80
#define VEC_SPURIOUS    0xff

#define TRAMP_BASE      0x8000      /* SIPI vector 0x08 */
#define PT_SPARE        6           /* page-table pages for MMIO mappings above 64 GiB */

#define SYS_SLEEP_TSC   0           /* rdi = TSC deadline; user code converts from guest ns */
#define SYS_HALT        1
#define SYS_MAP_UC      2           /* rdi = physical address: map its 2 MiB uncached, U=1 */

#define USER_RFLAGS     0x3202      /* IF | IOPL=3 | reserved bit 1 */

#ifndef __ASSEMBLER__

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int8_t s8;
typedef int32_t s32;
typedef int64_t s64;

#define NS_PER_US       1000UL
#define NS_PER_MS       1000000UL
#define NS_PER_SEC      1000000000UL
#define PAGE_SIZE       4096UL
#define MIB             (1024UL * 1024)

#define ARRAY_SIZE(a)   (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b)       ((a) < (b) ? (a) : (b))
#define MAX(a, b)       ((a) > (b) ? (a) : (b))
#define ALIGN_UP(x, a)  (((x) + (a) - 1) & ~((u64)(a) - 1))

/* Big buffers that need no zeroing live here: not in the file, not cleared at boot. */
#define __noinit        __attribute__((section(".noinit")))
#define __aligned(n)    __attribute__((aligned(n)))
#define __noreturn      __attribute__((noreturn))
#define __packed        __attribute__((packed))
#define __printf(a, b)  __attribute__((format(printf, a, b)))

/* Spinlocks shared by CPL0 and CPL3 code (all memory is mapped to both). A locked
 * exchange to release, not a plain store: it also orders the release before the
 * caller's next load (console.c relies on that). */
static inline bool spin_try(u32 *l)
{
    return !__atomic_load_n(l, __ATOMIC_RELAXED) && !__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE);
}

static inline void spin_drop(u32 *l)
{
    __atomic_exchange_n(l, 0, __ATOMIC_SEQ_CST);
}

/* lib.c */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int fmt_vsn(char *buf, size_t size, const char *fmt, va_list ap);
int fmt_sn(char *buf, size_t size, const char *fmt, ...) __printf(3, 4);
bool parse_u64(const char *s, size_t n, u64 *out);
u64 div128(u64 hi, u64 lo, u64 d);

#endif /* __ASSEMBLER__ */
#endif
