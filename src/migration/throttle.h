/* Auto-converge: vCPUs run 10 ms, then sleep pct/(100-pct) of that. */
#ifndef FERRY_MIGRATION_THROTTLE_H
#define FERRY_MIGRATION_THROTTLE_H

#include <stdint.h>

struct vm;

/* percent 0 stops throttling (and the thread). */
void throttle_set(struct vm *vm, unsigned percent);
/* Only these vCPUs (bit i: vCPU i) are slowed down; 0: all. */
void throttle_set_mask(struct vm *vm, uint64_t mask);

#endif
