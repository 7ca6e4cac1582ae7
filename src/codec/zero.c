#include "codec/zero.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ZERO_X86 1
#endif

typedef bool (*zero_fn)(const void *page);

/* Plain 64-bit words; memcpy keeps unaligned loads defined. Exits early per
 * 256 bytes: a non-zero page is usually non-zero near its start. */
static bool zero_check_scalar(const void *page)
{
    const uint8_t *p = page;

    for (unsigned off = 0; off < CODEC_PAGE_SIZE; off += 256) {
        uint64_t acc = 0, w;

        for (unsigned i = 0; i < 256; i += 8) {
            memcpy(&w, p + off + i, 8);
            acc |= w;
        }
        if (acc)
            return false;
    }
    return true;
}

#ifdef ZERO_X86
__attribute__((target("sse2"))) static bool zero_check_sse2(const void *page)
{
    const __m128i *p = page;

    for (unsigned i = 0; i < CODEC_PAGE_SIZE / 16; i += 16) {
        __m128i a = _mm_or_si128(_mm_loadu_si128(p + i), _mm_loadu_si128(p + i + 1));
        __m128i b = _mm_or_si128(_mm_loadu_si128(p + i + 2), _mm_loadu_si128(p + i + 3));

        for (unsigned j = 4; j < 16; j += 2) {
            a = _mm_or_si128(a, _mm_loadu_si128(p + i + j));
            b = _mm_or_si128(b, _mm_loadu_si128(p + i + j + 1));
        }
        a = _mm_or_si128(a, b);
        if (_mm_movemask_epi8(_mm_cmpeq_epi8(a, _mm_setzero_si128())) != 0xffff)
            return false;
    }
    return true;
}

__attribute__((target("avx2"))) static bool zero_check_avx2(const void *page)
{
    const __m256i *p = page;

    for (unsigned i = 0; i < CODEC_PAGE_SIZE / 32; i += 8) {
        __m256i a = _mm256_or_si256(_mm256_loadu_si256(p + i), _mm256_loadu_si256(p + i + 1));
        __m256i b = _mm256_or_si256(_mm256_loadu_si256(p + i + 2), _mm256_loadu_si256(p + i + 3));

        a = _mm256_or_si256(a, _mm256_loadu_si256(p + i + 4));
        b = _mm256_or_si256(b, _mm256_loadu_si256(p + i + 5));
        a = _mm256_or_si256(a, _mm256_loadu_si256(p + i + 6));
        b = _mm256_or_si256(b, _mm256_loadu_si256(p + i + 7));
        a = _mm256_or_si256(a, b);
        if (!_mm256_testz_si256(a, a))
            return false;
    }
    return true;
}
#endif

struct zero_impl {
    const char *name;
    zero_fn fn;
};

static const struct zero_impl zero_impls[] = {
#ifdef ZERO_X86
    { "avx2", zero_check_avx2 },
    { "sse2", zero_check_sse2 },
#endif
    { "scalar", zero_check_scalar },
};

static bool zero_impl_supported(const struct zero_impl *z)
{
#ifdef ZERO_X86
    if (z->fn == zero_check_avx2)
        return __builtin_cpu_supports("avx2");
    if (z->fn == zero_check_sse2)
        return __builtin_cpu_supports("sse2");
#endif
    return true;
}

/* NULL until the first call picks the best supported one; a racing first call
 * from two threads picks the same one, so a plain atomic pointer suffices. */
static const struct zero_impl *zero_cur;

static const struct zero_impl *zero_pick(void)
{
    const struct zero_impl *z = __atomic_load_n(&zero_cur, __ATOMIC_ACQUIRE);

    if (z)
        return z;
    z = &zero_impls[sizeof(zero_impls) / sizeof(zero_impls[0]) - 1];
    for (size_t i = 0; i < sizeof(zero_impls) / sizeof(zero_impls[0]); i++) {
        if (zero_impl_supported(&zero_impls[i])) {
            z = &zero_impls[i];
            break;
        }
    }
    __atomic_store_n(&zero_cur, z, __ATOMIC_RELEASE);
    return z;
}

bool zero_page_check(const void *page)
{
    return zero_pick()->fn(page);
}

const char *zero_page_impl(void)
{
    return zero_pick()->name;
}

int zero_page_set_impl(const char *name)
{
    for (size_t i = 0; i < sizeof(zero_impls) / sizeof(zero_impls[0]); i++) {
        if (strcmp(zero_impls[i].name, name))
            continue;
        if (!zero_impl_supported(&zero_impls[i]))
            return -ENOTSUP;
        __atomic_store_n(&zero_cur, &zero_impls[i], __ATOMIC_RELEASE);
        return 0;
    }
    if (!strcmp(name, "avx2") || !strcmp(name, "sse2"))
        return -ENOTSUP;   /* not built for this architecture */
    return -EINVAL;
}
