/* vCPU architectural state as captured from KVM. */
#ifndef FERRY_VM_VCPU_STATE_H
#define FERRY_VM_VCPU_STATE_H

#include <linux/kvm.h>
#include <stdint.h>

#include "arch/x86/cpuid.h"

#define VCPU_MAX_MSRS 128

#define MSR_IA32_TSC          0x10
#define MSR_IA32_TSC_DEADLINE 0x6e0

struct vm;
struct vcpu;

struct vcpu_msr_list {
    uint32_t n;
    uint32_t index[VCPU_MAX_MSRS];
};

struct vcpu_msr {
    uint32_t index;
    uint64_t value;
};

struct vcpu_state {
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_xcrs xcrs;
    struct kvm_lapic_state lapic;
    struct kvm_vcpu_events events;
    struct kvm_mp_state mp;
    struct kvm_debugregs dregs;
    struct cpuid_table cpuid;
    uint32_t nmsrs;
    struct vcpu_msr msrs[VCPU_MAX_MSRS];
    uint32_t xsave_size;
    uint8_t xsave[] __attribute__((aligned(64)));
};

extern const struct state_ops vcpu_state_ops;

int vcpu_msr_get(int vcpu_fd, uint32_t index, uint64_t *value);
int vcpu_msr_set(int vcpu_fd, uint32_t index, uint64_t value);
int vcpu_msr_list_probe(struct vm *vm, int vcpu_fd, struct vcpu_msr_list *l);
struct vcpu_state *vcpu_state_alloc(uint32_t xsave_size);
int vcpu_state_get(struct vcpu *vcpu, struct vcpu_state *st);
int vcpu_state_put(struct vcpu *vcpu, struct vcpu_state *st);

#endif
