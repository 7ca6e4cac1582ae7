/* Auto-converge: vCPUs are made to sleep a share of every 10 ms slice. */
#ifndef FERRY_MIGRATION_THROTTLE_H
#define FERRY_MIGRATION_THROTTLE_H

struct vm;

/* percent 0 stops throttling (and the thread). */
void throttle_set(struct vm *vm, unsigned percent);

#endif
