/* The CPUID table each vCPU sees: KVM's supported set, patched for our
 * topology (APIC ids, core counts) and for what the VMM emulates. */
#ifndef FERRY_ARCH_X86_CPUID_H
#define FERRY_ARCH_X86_CPUID_H

#include <linux/kvm.h>
#include <stdint.h>

#define CPUID_MAX_ENTRIES 256

struct cpuid_table {
    struct kvm_cpuid2 hdr;
    struct kvm_cpuid_entry2 entries[CPUID_MAX_ENTRIES];
};

int cpuid_get_supported(int kvm_fd, struct cpuid_table *out);
/* Patches a copy of the supported table for vCPU id of ncpus (pure). */
void cpuid_patch(struct cpuid_table *t, unsigned id, unsigned ncpus);
int cpuid_set(int vcpu_fd, const struct cpuid_table *t);
struct kvm_cpuid_entry2 *cpuid_find(struct cpuid_table *t, uint32_t fn, uint32_t index);

#endif
