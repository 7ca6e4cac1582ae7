/* A vCPU's complete architectural state, captured from and restored into KVM
 * through one walk (section "vcpu", one instance per vCPU). The TSC is not
 * here: it belongs to the VM-wide "clock" section, restored after all vCPUs. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "state/state.h"
#include "util/log.h"
#include "vm/vcpu_state.h"
#include "vm/vm.h"

#define MSR_MTRR_CAP          0xfe

/* MSRs KVM keeps but does not list in KVM_GET_MSR_INDEX_LIST (MTRRs). */
static const uint32_t extra_msrs[] = {
    0x2ff, 0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f,
    0x200, 0x201, 0x202, 0x203, 0x204, 0x205, 0x206, 0x207,
    0x208, 0x209, 0x20a, 0x20b, 0x20c, 0x20d, 0x20e, 0x20f,
};

/* One MSR through KVM_GET_MSRS/KVM_SET_MSRS; -EIO if KVM refuses it. */
int vcpu_msr_get(int vcpu_fd, uint32_t index, uint64_t *value)
{
    struct {
        struct kvm_msrs hdr;
        struct kvm_msr_entry e;
    } m = { .hdr.nmsrs = 1, .e.index = index };

    if (ioctl(vcpu_fd, KVM_GET_MSRS, &m) != 1)
        return -EIO;
    *value = m.e.data;
    return 0;
}

int vcpu_msr_set(int vcpu_fd, uint32_t index, uint64_t value)
{
    struct {
        struct kvm_msrs hdr;
        struct kvm_msr_entry e;
    } m = { .hdr.nmsrs = 1, .e = { .index = index, .data = value } };

    return ioctl(vcpu_fd, KVM_SET_MSRS, &m) == 1 ? 0 : -EIO;
}

static bool msr_readable(int vcpu_fd, uint32_t index)
{
    uint64_t value;

    return vcpu_msr_get(vcpu_fd, index, &value) == 0;
}

static void msr_list_add(struct vcpu_msr_list *l, int vcpu_fd, uint32_t index)
{
    if (index == MSR_IA32_TSC || index == MSR_IA32_TSC_DEADLINE)
        return;   /* TSC: clock section; deadline: appended last below */
    for (uint32_t i = 0; i < l->n; i++)
        if (l->index[i] == index)
            return;
    if (l->n < VCPU_MAX_MSRS && msr_readable(vcpu_fd, index))
        l->index[l->n++] = index;
}

/* The MSRs saved for every vCPU: what KVM lists plus the MTRRs, each probed
 * once because KVM_GET_MSRS stops at the first MSR it refuses. The TSC
 * deadline goes last: it only sticks once the LAPIC timer mode is back. */
int vcpu_msr_list_probe(struct vm *vm, int vcpu_fd, struct vcpu_msr_list *l)
{
    struct kvm_msr_list *kl = calloc(1, sizeof(*kl) + VCPU_MAX_MSRS * sizeof(uint32_t));

    if (!kl)
        return -ENOMEM;
    kl->nmsrs = VCPU_MAX_MSRS;
    l->n = 0;
    if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, kl) < 0) {
        int err = -errno;
        free(kl);
        return err;
    }
    for (uint32_t i = 0; i < kl->nmsrs; i++)
        msr_list_add(l, vcpu_fd, kl->indices[i]);
    for (size_t i = 0; i < sizeof(extra_msrs) / sizeof(extra_msrs[0]); i++)
        msr_list_add(l, vcpu_fd, extra_msrs[i]);
    if (l->n < VCPU_MAX_MSRS && msr_readable(vcpu_fd, MSR_IA32_TSC_DEADLINE))
        l->index[l->n++] = MSR_IA32_TSC_DEADLINE;
    free(kl);
    return 0;
}

static int vcpu_get_msrs(struct vcpu *vcpu, struct vcpu_state *st)
{
    const struct vcpu_msr_list *l = &vcpu->vm->msr_list;
    struct {
        struct kvm_msrs hdr;
        struct kvm_msr_entry e[VCPU_MAX_MSRS];
    } m = { .hdr.nmsrs = l->n };
    int n;

    for (uint32_t i = 0; i < l->n; i++)
        m.e[i].index = l->index[i];
    n = ioctl(vcpu->fd, KVM_GET_MSRS, &m);
    if (n != (int)l->n)
        return n < 0 ? -errno : -EIO;
    st->nmsrs = l->n;
    for (uint32_t i = 0; i < l->n; i++)
        st->msrs[i] = (struct vcpu_msr){ m.e[i].index, m.e[i].data };
    return 0;
}

static int vcpu_put_msrs(struct vcpu *vcpu, const struct vcpu_state *st)
{
    struct {
        struct kvm_msrs hdr;
        struct kvm_msr_entry e[VCPU_MAX_MSRS];
    } m = { .hdr.nmsrs = st->nmsrs };
    int n;

    for (uint32_t i = 0; i < st->nmsrs; i++)
        m.e[i] = (struct kvm_msr_entry){ .index = st->msrs[i].index, .data = st->msrs[i].value };
    n = ioctl(vcpu->fd, KVM_SET_MSRS, &m);
    if (n != (int)st->nmsrs) {
        log_err("vcpu %u: KVM_SET_MSRS stopped at MSR 0x%x", vcpu->id,
                n >= 0 && (uint32_t)n < st->nmsrs ? st->msrs[n].index : 0);
        return n < 0 ? -errno : -EINVAL;
    }
    return 0;
}

static int vcpu_ioctl(struct vcpu *vcpu, unsigned long req, void *arg)
{
    return ioctl(vcpu->fd, req, arg) < 0 ? -errno : 0;
}

/* A KVM_RUN with immediate_exit completes an in-flight I/O instruction
 * without entering the guest, so the registers we read are final. */
static void vcpu_flush_pending_io(struct vcpu *vcpu)
{
    vcpu->run->immediate_exit = 1;
    ioctl(vcpu->fd, KVM_RUN, 0);
    vcpu->run->immediate_exit = 0;
}

int vcpu_state_get(struct vcpu *vcpu, struct vcpu_state *st)
{
    int ret;

    vcpu_flush_pending_io(vcpu);
    st->xsave_size = vcpu->vm->xsave_size;
    st->cpuid.hdr.nent = CPUID_MAX_ENTRIES;
    ret = vcpu_ioctl(vcpu, KVM_GET_REGS, &st->regs);
    if (!ret) ret = vcpu_ioctl(vcpu, KVM_GET_SREGS, &st->sregs);
    if (!ret) ret = vcpu_ioctl(vcpu, KVM_GET_XSAVE2, st->xsave);
    if (!ret) ret = vcpu_ioctl(vcpu, KVM_GET_XCRS, &st->xcrs);
    if (!ret) ret = vcpu_get_msrs(vcpu, st);
    if (!ret) ret = vcpu_ioctl(vcpu, KVM_GET_LAPIC, &st->lapic);
    if (!ret) ret = vcpu_ioctl(vcpu, KVM_GET_VCPU_EVENTS, &st->events);
    if (!ret) ret = vcpu_ioctl(vcpu, KVM_GET_MP_STATE, &st->mp);
    if (!ret) ret = vcpu_ioctl(vcpu, KVM_GET_DEBUGREGS, &st->dregs);
    if (!ret) ret = vcpu_ioctl(vcpu, KVM_GET_CPUID2, &st->cpuid);
    return ret;
}

/* Order matters: CPUID before anything, sregs (EFER, APIC base) before the
 * LAPIC, the LAPIC before the MSRs (TSC deadline), events after registers. */
int vcpu_state_put(struct vcpu *vcpu, struct vcpu_state *st)
{
    int ret = cpuid_set(vcpu->fd, &st->cpuid);

    if (!ret) ret = vcpu_ioctl(vcpu, KVM_SET_REGS, &st->regs);
    if (!ret) ret = vcpu_ioctl(vcpu, KVM_SET_XSAVE, st->xsave);
    if (!ret) ret = vcpu_ioctl(vcpu, KVM_SET_XCRS, &st->xcrs);
    if (!ret) ret = vcpu_ioctl(vcpu, KVM_SET_SREGS, &st->sregs);
    if (!ret) ret = vcpu_ioctl(vcpu, KVM_SET_LAPIC, &st->lapic);
    if (!ret) ret = vcpu_put_msrs(vcpu, st);
    if (!ret) ret = vcpu_ioctl(vcpu, KVM_SET_VCPU_EVENTS, &st->events);
    if (!ret) ret = vcpu_ioctl(vcpu, KVM_SET_MP_STATE, &st->mp);
    if (!ret) ret = vcpu_ioctl(vcpu, KVM_SET_DEBUGREGS, &st->dregs);
    return ret;
}

static int walk_msrs(struct state_walker *w, struct vcpu_state *st)
{
    walk_count(w, &st->nmsrs, VCPU_MAX_MSRS, "msr count");
    for (uint32_t i = 0; i < st->nmsrs && !w->err; i++) {
        walk_u32(w, &st->msrs[i].index, "msr index");
        walk_u64(w, &st->msrs[i].value, "msr value");
    }
    return w->err;
}

static int walk_cpuid(struct state_walker *w, struct cpuid_table *t)
{
    walk_count(w, &t->hdr.nent, CPUID_MAX_ENTRIES, "cpuid count");
    return walk_buf(w, t->entries, t->hdr.nent * sizeof(t->entries[0]), "cpuid entries");
}

static int walk_vcpu_fields(struct state_walker *w, struct vcpu_state *st, uint32_t xsave_max)
{
    WALK_FIELD(w, &st->regs);
    WALK_FIELD(w, &st->sregs);
    walk_count(w, &st->xsave_size, xsave_max, "xsave size");
    walk_buf(w, st->xsave, st->xsave_size, "xsave");
    WALK_FIELD(w, &st->xcrs);
    walk_msrs(w, st);
    WALK_FIELD(w, &st->lapic);
    WALK_FIELD(w, &st->events);
    WALK_FIELD(w, &st->mp);
    WALK_FIELD(w, &st->dregs);
    return walk_cpuid(w, &st->cpuid);
}

static int vcpu_state_walk(struct state_walker *w, void *obj)
{
    struct vcpu *vcpu = obj;
    struct vcpu_state *st = vcpu_state_alloc(vcpu->vm->xsave_size);
    int ret = st ? 0 : -ENOMEM;

    if (!ret && walk_saving(w))
        ret = vcpu_state_get(vcpu, st);
    if (ret < 0)
        walk_fail(w, ret, "reading vCPU state from KVM");
    walk_vcpu_fields(w, st, vcpu->vm->xsave_size);
    if (!w->err && walk_loading(w) && w->pos == w->len) {
        ret = vcpu_state_put(vcpu, st);
        if (ret < 0)
            walk_fail(w, ret, "loading vCPU state into KVM");
    }
    free(st);
    return w->err;
}

struct vcpu_state *vcpu_state_alloc(uint32_t xsave_size)
{
    struct vcpu_state *st = calloc(1, sizeof(*st) + xsave_size);

    if (st)
        st->xsave_size = xsave_size;
    return st;
}

const struct state_ops vcpu_state_ops = {
    .name = "vcpu", .id = SECTION_VCPU, .version = 1, .min_version = 1,
    .walk = vcpu_state_walk,
};
