/* Zero-page detection: one implementation for every sender (snapshot, pre-copy,
 * post-copy). Vectorised (AVX2 or SSE2), chosen once at run time. */
#ifndef FERRY_CODEC_ZERO_H
#define FERRY_CODEC_ZERO_H

#include <stdbool.h>

#define CODEC_PAGE_SIZE 4096

/* True if the 4096 bytes at page (any alignment) are all zero. */
bool zero_page_check(const void *page);
/* The implementation in use: "avx2", "sse2" or "scalar". */
const char *zero_page_impl(void);
/* Picks an implementation by name (tests, benchmarks): 0, -EINVAL if the name
 * is unknown, -ENOTSUP if this CPU lacks it. */
int zero_page_set_impl(const char *name);

#endif
