/* VM-wide state sections: the in-kernel PICs and IOAPIC, the PIT, and the
 * clocks (kvmclock and every vCPU's TSC). */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include "state/state.h"
#include "util/log.h"
#include "vm/vcpu_state.h"
#include "vm/vm.h"


static int vm_ioctl_walk(struct state_walker *w, struct vm *vm, unsigned long req,
                         void *arg, const char *what)
{
    if (!w->err && ioctl(vm->vm_fd, req, arg) < 0)
        walk_fail(w, -errno, what);
    return w->err;
}

static int irqchip_state_walk(struct state_walker *w, void *obj)
{
    struct vm *vm = obj;
    struct kvm_irqchip chips[3];

    for (uint32_t i = 0; i < 3; i++) {
        memset(&chips[i], 0, sizeof(chips[i]));
        chips[i].chip_id = i;   /* PIC master, PIC slave, IOAPIC */
        if (walk_saving(w))
            vm_ioctl_walk(w, vm, KVM_GET_IRQCHIP, &chips[i], "KVM_GET_IRQCHIP");
        walk_buf(w, &chips[i].chip, sizeof(chips[i].chip), "irqchip");
    }
    for (uint32_t i = 0; i < 3 && walk_loading(w) && w->pos == w->len; i++) {
        chips[i].chip_id = i;
        vm_ioctl_walk(w, vm, KVM_SET_IRQCHIP, &chips[i], "KVM_SET_IRQCHIP");
    }
    return w->err;
}

/* count_load_time is a host timestamp: a clock field, never byte-stable. */
static int pit_state_walk(struct state_walker *w, void *obj)
{
    struct vm *vm = obj;
    struct kvm_pit_state2 pit;

    memset(&pit, 0, sizeof(pit));
    if (walk_saving(w))
        vm_ioctl_walk(w, vm, KVM_GET_PIT2, &pit, "KVM_GET_PIT2");
    walk_buf(w, &pit, sizeof(pit), "pit");
    if (walk_loading(w) && w->pos == w->len)
        vm_ioctl_walk(w, vm, KVM_SET_PIT2, &pit, "KVM_SET_PIT2");
    return w->err;
}

/*
 * KVM arms the TSC-deadline timer from the TSC at the moment the deadline is
 * written, and the vCPU section (deadline) is loaded before this one (TSC).
 * On a host whose fresh VM starts its TSC at 0 the timer would then fire the
 * source's uptime late. Writing the deadline again once the TSC is right
 * re-arms it; KVM ignores it when the LAPIC timer is in another mode.
 */
static int tsc_set(struct vcpu *vcpu, uint64_t tsc)
{
    uint64_t deadline;

    if (vcpu_msr_set(vcpu->fd, MSR_IA32_TSC, tsc) < 0)
        return -EIO;
    if (vcpu_msr_get(vcpu->fd, MSR_IA32_TSC_DEADLINE, &deadline) < 0)
        return 0;                       /* no TSC-deadline timer */
    return vcpu_msr_set(vcpu->fd, MSR_IA32_TSC_DEADLINE, deadline);
}

void vm_clock_freeze(struct vm *vm)
{
    vm->clock_frozen = ioctl(vm->vm_fd, KVM_GET_CLOCK, &vm->frozen_clock) == 0;
    for (unsigned i = 0; i < vm->ncpus && vm->clock_frozen; i++)
        vm->clock_frozen = vcpu_msr_get(vm->vcpus[i].fd, MSR_IA32_TSC, &vm->frozen_tsc[i]) == 0;
    if (!vm->clock_frozen)
        log_warn("pause: cannot read the guest clock; guest time will run on");
}

/* The TSCs run on; kvmclock, which the guest reads its time from, resumes
 * where it stopped. */
void vm_clock_thaw(struct vm *vm)
{
    struct kvm_clock_data c = { .clock = vm->frozen_clock.clock };

    if (vm->clock_frozen && ioctl(vm->vm_fd, KVM_SET_CLOCK, &c) < 0)
        log_warn("resume: KVM_SET_CLOCK: %s", strerror(errno));
    vm->clock_frozen = false;
}

static int clock_check_tsc_khz(struct state_walker *w, struct vm *vm, uint32_t khz)
{
    int here = ioctl(vm->vcpus[0].fd, KVM_GET_TSC_KHZ, 0);

    if (here <= 0 || (uint32_t)here == khz)
        return 0;
    /* No TSC scaling here: a guest would see its clocks run at the wrong rate. */
    if (ioctl(vm->vcpus[0].fd, KVM_SET_TSC_KHZ, khz) == 0)
        return 0;
    log_err("TSC frequency differs: stream %u kHz, this host %d kHz", khz, here);
    return walk_fail(w, -EINVAL, "TSC frequency mismatch");
}

static int clock_walk_tscs(struct state_walker *w, struct vm *vm, uint64_t *tsc)
{
    uint32_t n = vm->ncpus;

    for (uint32_t i = 0; i < n && walk_saving(w) && !w->err; i++)
        if (vm->clock_frozen)
            tsc[i] = vm->frozen_tsc[i];   /* as they were when the VM paused */
        else if (vcpu_msr_get(vm->vcpus[i].fd, MSR_IA32_TSC, &tsc[i]) < 0)
            walk_fail(w, -EIO, "reading a vCPU TSC");
    walk_count(w, &n, VM_MAX_VCPUS, "vcpu count");
    if (!w->err && n != vm->ncpus)
        return walk_fail(w, -EINVAL, "vcpu count");
    return walk_buf(w, tsc, 8ULL * n, "tsc");
}

/* Loaded last: TSCs first, then kvmclock, so the guest's clock continues
 * where it stopped (snapshot) or advances by the real time elapsed
 * (migration, vm->clock_follow_realtime). */
static int clock_state_walk(struct state_walker *w, void *obj)
{
    struct vm *vm = obj;
    struct kvm_clock_data clock;
    uint64_t tsc[VM_MAX_VCPUS];
    uint32_t khz = (uint32_t)ioctl(vm->vcpus[0].fd, KVM_GET_TSC_KHZ, 0);

    memset(&clock, 0, sizeof(clock));
    if (walk_saving(w) && vm->clock_frozen)
        clock = vm->frozen_clock;         /* the moment the guest stopped */
    else if (walk_saving(w))
        vm_ioctl_walk(w, vm, KVM_GET_CLOCK, &clock, "KVM_GET_CLOCK");
    WALK_FIELD(w, &clock.clock);
    walk_u32(w, &clock.flags, "kvmclock flags");
    WALK_FIELD(w, &clock.realtime);
    walk_u32(w, &khz, "tsc khz");
    clock_walk_tscs(w, vm, tsc);
    if (!walk_loading(w) || w->err || w->pos != w->len)
        return w->err;
    clock_check_tsc_khz(w, vm, khz);
    for (uint32_t i = 0; i < vm->ncpus && !w->err; i++)
        if (tsc_set(&vm->vcpus[i], tsc[i]) < 0)
            walk_fail(w, -EIO, "writing a vCPU TSC");
    clock.flags &= vm->clock_follow_realtime ? KVM_CLOCK_REALTIME : 0;
    clock.host_tsc = 0;
    return vm_ioctl_walk(w, vm, KVM_SET_CLOCK, &clock, "KVM_SET_CLOCK");
}

static const struct state_ops irqchip_state_ops = {
    .name = "irqchip", .id = SECTION_IRQCHIP, .version = 1, .min_version = 1,
    .walk = irqchip_state_walk,
};
static const struct state_ops pit_state_ops = {
    .name = "pit", .id = SECTION_PIT, .version = 1, .min_version = 1,
    .walk = pit_state_walk,
};
static const struct state_ops clock_state_ops = {
    .name = "clock", .id = SECTION_CLOCK, .version = 1, .min_version = 1,
    .walk = clock_state_walk,
};

/* The order here is the order of the stream and of restore. */
int vm_state_register(struct vm *vm)
{
    struct state_registry *r = &vm->sections;
    int ret = 0;

    r->n = 0;
    for (unsigned i = 0; i < vm->ncpus && !ret; i++)
        ret = state_register(r, &vcpu_state_ops, i, &vm->vcpus[i]);
    if (!ret) ret = state_register(r, &irqchip_state_ops, 0, vm);
    if (!ret) ret = state_register(r, &pit_state_ops, 0, vm);
    if (!ret) ret = state_register(r, &serial_state_ops, 0, &vm->serial);
    if (!ret) ret = state_register(r, &rtc_state_ops, 0, &vm->rtc);
    if (!ret) ret = state_register(r, &acpi_pm_state_ops, 0, &vm->pm);
    for (unsigned s = 0; s < PCI_SLOTS && !ret; s++)
        if (vm->pci.slots[s])
            ret = state_register(r, &pci_state_ops, s, vm->pci.slots[s]);
    for (unsigned i = 0; i < vm->virtio.n && !ret; i++)
        ret = state_register(r, &virtio_state_ops, vm->virtio.dev[i]->slot, vm->virtio.dev[i]);
    if (!ret) ret = state_register(r, &clock_state_ops, 0, vm);
    return ret;
}
