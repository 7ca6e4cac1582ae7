/* vCPUs: one thread each, running KVM_RUN and dispatching exits. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sandbox/sandbox.h"
#include "util/log.h"
#include "util/util.h"
#include "vm/vm.h"

#define VCPU_KICK_SIGNAL SIGUSR1

#define MSR_IA32_MISC_ENABLE 0x1a0
#define MSR_MTRR_DEF_TYPE    0x2ff
#define APIC_LVT0            0x350
#define APIC_LVT1            0x360
#define APIC_DM_EXTINT       0x700
#define APIC_DM_NMI          0x400

static __thread struct kvm_run *vcpu_current_run;

/* The kick only has to make KVM_RUN return; immediate_exit closes the window
 * between checking for requests and entering the guest. */
static void vcpu_kick_handler(int sig)
{
    (void)sig;
    if (vcpu_current_run)
        vcpu_current_run->immediate_exit = 1;
}

int vcpu_signals_init(void)
{
    struct sigaction sa = { .sa_handler = vcpu_kick_handler };

    sigemptyset(&sa.sa_mask);
    return sigaction(VCPU_KICK_SIGNAL, &sa, NULL) < 0 ? -errno : 0;
}

static int vcpu_set_msrs(struct vcpu *vcpu)
{
    struct {
        struct kvm_msrs hdr;
        struct kvm_msr_entry e[2];
    } msrs = {
        .hdr.nmsrs = 2,
        .e = { { .index = MSR_IA32_MISC_ENABLE, .data = 1 },          /* fast strings */
               { .index = MSR_MTRR_DEF_TYPE, .data = 0x800 | 6 } },   /* MTRRs on, WB */
    };
    int n = ioctl(vcpu->fd, KVM_SET_MSRS, &msrs);

    if (n < 0)
        return -errno;
    if (n != 2)
        log_debug("vcpu %u: KVM_SET_MSRS set %d of 2 boot MSRs", vcpu->id, n);
    return 0;
}

/* Virtual-wire mode as firmware leaves it: LINT0 ExtINT, LINT1 NMI. */
static int vcpu_set_lapic(struct vcpu *vcpu)
{
    struct kvm_lapic_state lapic;
    uint32_t v;

    if (ioctl(vcpu->fd, KVM_GET_LAPIC, &lapic) < 0)
        return -errno;
    v = APIC_DM_EXTINT;
    memcpy(lapic.regs + APIC_LVT0, &v, 4);
    v = APIC_DM_NMI;
    memcpy(lapic.regs + APIC_LVT1, &v, 4);
    return ioctl(vcpu->fd, KVM_SET_LAPIC, &lapic) < 0 ? -errno : 0;
}

static int vcpu_setup(struct vcpu *vcpu)
{
    struct vm *vm = vcpu->vm;
    static struct cpuid_table t;   /* large; vCPUs are created one at a time */
    int ret;

    t = vm->cpuid;
    cpuid_patch(&t, vcpu->id, vm->ncpus);
    ret = cpuid_set(vcpu->fd, &t);
    if (ret < 0)
        return log_err("vcpu %u: KVM_SET_CPUID2: %s", vcpu->id, strerror(-ret)), ret;
    ret = vcpu_set_msrs(vcpu);
    if (ret == 0)
        ret = vcpu_set_lapic(vcpu);
    if (ret == 0 && vcpu->id == 0 && !vm->cfg->restore)
        ret = boot_setup_bsp(vcpu->fd, &vm->entry);
    if (ret < 0)
        log_err("vcpu %u: setting up registers: %s", vcpu->id, strerror(-ret));
    return ret;
}

int vcpu_create(struct vm *vm, unsigned id)
{
    struct vcpu *vcpu = &vm->vcpus[id];

    vcpu->vm = vm;
    vcpu->id = id;
    vcpu->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, id);
    if (vcpu->fd < 0) {
        int err = -errno;
        log_err("vcpu %u: KVM_CREATE_VCPU: %s", id, strerror(errno));
        return err;
    }
    vcpu->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd, 0);
    if (vcpu->run == MAP_FAILED) {
        int err = -errno;
        vcpu->run = NULL;
        log_err("vcpu %u: mmap kvm_run: %s", id, strerror(errno));
        return err;
    }
    return vcpu_setup(vcpu);
}

void vcpu_destroy(struct vcpu *vcpu)
{
    if (vcpu->run)
        munmap(vcpu->run, vcpu->vm->run_size);
    if (vcpu->fd > 0)
        close(vcpu->fd);
    vcpu->run = NULL;
    vcpu->fd = -1;
}

void vcpu_kick(struct vcpu *vcpu)
{
    if (vcpu->thread_started)
        pthread_kill(vcpu->thread, VCPU_KICK_SIGNAL);
}

/* The wake-up guard (vm.c). KVM_RUN enters again after the kick, and entering
 * makes KVM look at the vCPU's interrupts afresh: this host's KVM has been
 * seen to leave a halted vCPU asleep with a timer vector pending in its LAPIC
 * for good (docs/BENCHMARKS.md, 2026-11-24), and the guest with it. */
void vcpu_guard_check(struct vcpu *vcpu, bool running)
{
    uint64_t exits = __atomic_load_n(&vcpu->exits, __ATOMIC_RELAXED);

    if (running && vcpu->thread_started && exits == vcpu->guard_exits) {
        __atomic_fetch_add(&vcpu->guard_kicks, 1, __ATOMIC_RELAXED);
        vcpu_kick(vcpu);
    }
    vcpu->guard_exits = exits;
}

static void vcpu_io(struct vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    bool write = run->io.direction == KVM_EXIT_IO_OUT;

    vcpu->io_exits++;
    for (uint32_t i = 0; i < run->io.count; i++)
        pio_dispatch(&vcpu->vm->pio, run->io.port, data + i * run->io.size,
                     run->io.size, write);
}

/* virtio BARs; elsewhere reads float high and writes vanish, as on real buses. */
static void vcpu_mmio(struct vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    static int logged;

    if (run->mmio.len <= 8 && virtio_mmio(&vcpu->vm->virtio, run->mmio.phys_addr,
                                          run->mmio.data, run->mmio.len, run->mmio.is_write))
        return;
    if (!run->mmio.is_write)
        memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
    if (!__atomic_exchange_n(&logged, 1, __ATOMIC_RELAXED))
        log_warn("vcpu %u: unhandled MMIO %s 0x%llx (ignored; reported once)", vcpu->id,
                 run->mmio.is_write ? "write to" : "read from",
                 (unsigned long long)run->mmio.phys_addr);
}

static int vcpu_fail(struct vcpu *vcpu, int code, const char *what)
{
    struct kvm_regs regs = { 0 };
    char reason[128];

    ioctl(vcpu->fd, KVM_GET_REGS, &regs);
    snprintf(reason, sizeof(reason), "vcpu %u: %s at rip 0x%llx", vcpu->id, what,
             (unsigned long long)regs.rip);
    vm_request_stop(vcpu->vm, code, reason);
    return -1;
}

static int vcpu_system_event(struct vcpu *vcpu)
{
    switch (vcpu->run->system_event.type) {
    case KVM_SYSTEM_EVENT_SHUTDOWN:
        vm_request_stop(vcpu->vm, 0, "guest powered off");
        return -1;
    case KVM_SYSTEM_EVENT_RESET:
        vm_request_stop(vcpu->vm, 0, "guest reset (ferry does not reboot guests)");
        return -1;
    default:
        return vcpu_fail(vcpu, 3, "guest crash system event");
    }
}

/* An emulation failure names the instruction, which is what a user needs
 * (on PVM hosts it is usually an instruction the emulator lacks). */
static int vcpu_internal_error(struct vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    char what[112];
    int n;

    if (run->internal.suberror != KVM_INTERNAL_ERROR_EMULATION)
        snprintf(what, sizeof(what), "KVM internal error (suberror %u)", run->internal.suberror);
    else {
        n = snprintf(what, sizeof(what), "KVM could not emulate an instruction");
        if (run->emulation_failure.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) {
            n += snprintf(what + n, sizeof(what) - (size_t)n, " (bytes");
            for (unsigned i = 0; i < MIN(run->emulation_failure.insn_size, 8u); i++)
                n += snprintf(what + n, sizeof(what) - (size_t)n, " %02x",
                              run->emulation_failure.insn_bytes[i]);
            snprintf(what + n, sizeof(what) - (size_t)n, ")");
        }
    }
    return vcpu_fail(vcpu, 3, what);
}

/* Returns 0 to keep running, -1 when this vCPU must stop. */
static int vcpu_handle_exit(struct vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    char what[96];

    vcpu->exits++;
    switch (run->exit_reason) {
    case KVM_EXIT_IO: vcpu_io(vcpu); return 0;
    case KVM_EXIT_MMIO: vcpu_mmio(vcpu); return 0;
    case KVM_EXIT_INTR: return 0;
    case KVM_EXIT_DIRTY_RING_FULL: usleep(1000); return 0;   /* the collector drains it */
    case KVM_EXIT_HLT: return 0;   /* only without an in-kernel LAPIC */
    case KVM_EXIT_SHUTDOWN: return vcpu_fail(vcpu, 2, "triple fault (KVM_EXIT_SHUTDOWN)");
    case KVM_EXIT_SYSTEM_EVENT: return vcpu_system_event(vcpu);
    case KVM_EXIT_INTERNAL_ERROR: return vcpu_internal_error(vcpu);
    case KVM_EXIT_FAIL_ENTRY:
        snprintf(what, sizeof(what), "VM entry failed (reason 0x%llx)",
                 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        return vcpu_fail(vcpu, 3, what);
    default:
        snprintf(what, sizeof(what), "unexpected exit reason %u", run->exit_reason);
        return vcpu_fail(vcpu, 3, what);
    }
}

/* Parks the vCPU while a pause is requested; returns false when it must exit. */
static bool vcpu_park(struct vcpu *vcpu)
{
    struct vm *vm = vcpu->vm;
    bool keep;

    pthread_mutex_lock(&vm->lock);
    while (vm->pause_req && !vm->stop_req) {
        if (!vcpu->paused) {
            vcpu->paused = true;
            vm->npaused++;
            pthread_cond_broadcast(&vm->cond);
        }
        pthread_cond_wait(&vm->cond, &vm->lock);
    }
    if (vcpu->paused) {
        vcpu->paused = false;
        vm->npaused--;
        pthread_cond_broadcast(&vm->cond);
    }
    keep = !vm->stop_req;
    pthread_mutex_unlock(&vm->lock);
    return keep;
}

static bool vcpu_requests_pending(struct vm *vm)
{
    return __atomic_load_n(&vm->pause_req, __ATOMIC_ACQUIRE) ||
           __atomic_load_n(&vm->stop_req, __ATOMIC_ACQUIRE);
}

/* Auto-converge: the whole share, although a signal (a kick for a pause)
 * may interrupt the sleep; a pause or stop request ends it. */
static void vcpu_sleep(struct vcpu *vcpu, uint64_t ns)
{
    uint64_t start = time_now_ns(), until = start + ns;   /* CLOCK_MONOTONIC */
    struct timespec end = time_ns_to_timespec(until);

    while (!vcpu_requests_pending(vcpu->vm) &&
           clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &end, NULL) == EINTR)
        ;
    /* the kicks that came meanwhile must not make the next entry exit at once;
     * a pause request is checked after this */
    vcpu->run->immediate_exit = 0;
    __atomic_fetch_add(&vcpu->throttled_ns, time_now_ns() - start, __ATOMIC_RELAXED);
}

static void *vcpu_thread(void *arg)
{
    struct vcpu *vcpu = arg;
    char name[16];

    snprintf(name, sizeof(name), "vcpu%u", vcpu->id);
    pthread_setname_np(pthread_self(), name);
    if (sandbox_thread(SANDBOX_VCPU) < 0)
        log_warn("vcpu %u: no thread sandbox of its own", vcpu->id);
    vcpu_current_run = vcpu->run;
    for (;;) {
        uint64_t throttle = __atomic_exchange_n(&vcpu->throttle_ns, 0, __ATOMIC_ACQ_REL);

        if (throttle)
            vcpu_sleep(vcpu, throttle);
        if (vcpu_requests_pending(vcpu->vm) && !vcpu_park(vcpu))
            break;
        if (ioctl(vcpu->fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                vcpu->run->immediate_exit = 0;
                continue;
            }
            vcpu_fail(vcpu, 3, strerror(errno));
            break;
        }
        if (vcpu_handle_exit(vcpu) < 0)
            break;
    }
    vcpu_current_run = NULL;
    return NULL;
}

int vcpu_start(struct vcpu *vcpu)
{
    sigset_t set;
    int ret;

    /* Created with the kick signal unblocked whatever the caller masks. */
    sigemptyset(&set);
    sigaddset(&set, VCPU_KICK_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    ret = pthread_create(&vcpu->thread, NULL, vcpu_thread, vcpu);
    if (ret) {
        log_err("vcpu %u: pthread_create: %s", vcpu->id, strerror(ret));
        return -ret;
    }
    vcpu->thread_started = true;
    return 0;
}
