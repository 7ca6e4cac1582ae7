#include "migration/throttle.h"

#include <pthread.h>
#include <time.h>

#include "util/log.h"
#include "vm/vm.h"

#define THROTTLE_SLICE_NS 10000000ULL

/* Every slice each vCPU is told to sleep pct/(100-pct) of a slice and
 * kicked out of the guest, so it runs (100-pct)% of the time. */
static void *throttle_thread(void *arg)
{
    struct vm *vm = arg;
    struct timespec slice = { 0, (long)THROTTLE_SLICE_NS };
    unsigned pct;

    while ((pct = __atomic_load_n(&vm->throttle_pct, __ATOMIC_ACQUIRE)) != 0) {
        uint64_t sleep_ns = THROTTLE_SLICE_NS * pct / (100 - pct);
        uint64_t mask = __atomic_load_n(&vm->throttle_mask, __ATOMIC_ACQUIRE);
        for (unsigned i = 0; i < vm->ncpus; i++) {
            if (mask && i < 64 && !(mask & (1ULL << i)))
                continue;   /* this vCPU hardly dirties memory: leave it alone */
            __atomic_store_n(&vm->vcpus[i].throttle_ns, sleep_ns, __ATOMIC_RELEASE);
            vcpu_kick(&vm->vcpus[i]);
        }
        nanosleep(&slice, NULL);
    }
    return NULL;
}

void throttle_set_mask(struct vm *vm, uint64_t mask)
{
    __atomic_store_n(&vm->throttle_mask, mask, __ATOMIC_RELEASE);
}

void throttle_set(struct vm *vm, unsigned percent)
{
    unsigned old = __atomic_exchange_n(&vm->throttle_pct, percent > 99 ? 99 : percent,
                                       __ATOMIC_ACQ_REL);

    if (old == 0 && percent) {
        if (vm->throttle_thread_started)
            pthread_join(vm->throttle_thread, NULL);
        vm->throttle_thread_started =
            pthread_create(&vm->throttle_thread, NULL, throttle_thread, vm) == 0;
        if (!vm->throttle_thread_started)
            log_warn("auto-converge: cannot start the throttle thread");
    } else if (percent == 0 && vm->throttle_thread_started) {
        pthread_join(vm->throttle_thread, NULL);
        vm->throttle_thread_started = false;
    }
}
