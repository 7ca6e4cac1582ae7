#include "migration/throttle.h"

#include <pthread.h>
#include <time.h>

#include "util/log.h"
#include "util/util.h"
#include "vm/vm.h"

#define THROTTLE_RUN_NS 10000000ULL

/* As QEMU's cpu throttle: each period a vCPU runs THROTTLE_RUN_NS and
 * sleeps pct/(100-pct) of that, so it runs (100-pct)% of the time. The
 * period is run + sleep: a kick every run slice alone would hand a new sleep
 * to a vCPU still sleeping the last one and stop it outright from 50 % on. */
static uint64_t throttle_period_ns(unsigned pct)
{
    return THROTTLE_RUN_NS * 100 / (100 - pct);
}

static void throttle_kick(struct vm *vm, uint64_t sleep_ns, uint64_t mask)
{
    for (unsigned i = 0; i < vm->ncpus; i++) {
        if (mask && i < 64 && !(mask & (1ULL << i)))
            continue;   /* this vCPU hardly dirties memory: leave it alone */
        __atomic_store_n(&vm->vcpus[i].throttle_ns, sleep_ns, __ATOMIC_RELEASE);
        vcpu_kick(&vm->vcpus[i]);
    }
}

/* Sleeps until `until` (CLOCK_MONOTONIC) or until throttling stops. */
static void throttle_wait(struct vm_throttle *t, uint64_t until)
{
    struct timespec ts = time_ns_to_timespec(until);

    while (t->pct && time_now_ns() < until)
        pthread_cond_timedwait(&t->cond, &t->lock, &ts);
}

static void *throttle_thread(void *arg)
{
    struct vm *vm = arg;
    struct vm_throttle *t = &vm->throttle;

    pthread_mutex_lock(&t->lock);
    while (t->pct) {
        uint64_t period = throttle_period_ns(t->pct);

        throttle_kick(vm, period - THROTTLE_RUN_NS, t->mask);
        throttle_wait(t, time_now_ns() + period);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

void throttle_set_mask(struct vm *vm, uint64_t mask)
{
    pthread_mutex_lock(&vm->throttle.lock);
    vm->throttle.mask = mask;
    pthread_mutex_unlock(&vm->throttle.lock);
}

/* A new percentage takes effect with the next period; 0 stops the thread
 * at once (it is called inside the switchover's pause). */
void throttle_set(struct vm *vm, unsigned percent)
{
    struct vm_throttle *t = &vm->throttle;
    unsigned old;

    pthread_mutex_lock(&t->lock);
    old = t->pct;
    t->pct = percent > 99 ? 99 : percent;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    if (old == 0 && percent) {
        if (t->started)
            pthread_join(t->thread, NULL);
        t->started = pthread_create(&t->thread, NULL, throttle_thread, vm) == 0;
        if (!t->started)
            log_warn("auto-converge: cannot start the throttle thread");
    } else if (percent == 0 && t->started) {
        pthread_join(t->thread, NULL);
        t->started = false;
    }
}
