/* Small helpers shared by every subsystem. */
#ifndef FERRY_UTIL_UTIL_H
#define FERRY_UTIL_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define KIB (1024ULL)
#define MIB (1024ULL * 1024)
#define GIB (1024ULL * 1024 * 1024)
#define PAGE_SIZE 4096ULL
#define ALIGN_UP(x, a) (((x) + (a) - 1) & ~((uint64_t)(a) - 1))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* Monotonic time in nanoseconds. */
uint64_t time_now_ns(void);
/* A duration or a CLOCK_MONOTONIC instant in nanoseconds as a timespec. */
struct timespec time_ns_to_timespec(uint64_t ns);
/* CPU time the calling thread has used, in nanoseconds. */
uint64_t thread_cpu_ns(void);
/* Reads a whole file into a malloc'd buffer; returns -errno. */
int file_read_all(const char *path, uint8_t **buf, size_t *len);
/* Reads at most cap bytes from the start of a file; returns -errno. */
int file_read_head(const char *path, uint8_t *buf, size_t cap, size_t *len);
/* Writes all of buf to fd, retrying short writes; returns -errno. */
int fd_write_all(int fd, const void *buf, size_t len);
/* Parses a decimal unsigned integer that must fill the whole string. */
int parse_u64(const char *s, uint64_t *out);

#endif
