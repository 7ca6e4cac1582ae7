/* Test-only knobs: fault injection the integration tests set through
 * FERRY_TEST_* environment variables. Compiled in only with -Dtest_hooks=true
 * (the test build), so a release ferry never reads them. */
#ifndef FERRY_UTIL_TESTHOOK_H
#define FERRY_UTIL_TESTHOOK_H

#include <stdlib.h>

#ifdef FERRY_TEST_HOOKS
static inline const char *test_hook(const char *name)
{
    return getenv(name);
}
#else
static inline const char *test_hook(const char *name)
{
    (void)name;
    return NULL;
}
#endif

#endif
