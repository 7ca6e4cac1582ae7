#include "arch/x86/cpuid.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/ioctl.h>

#include "util/log.h"

int cpuid_get_supported(int kvm_fd, struct cpuid_table *out)
{
    memset(out, 0, sizeof(*out));
    out->hdr.nent = CPUID_MAX_ENTRIES;
    if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, out) < 0) {
        int err = -errno;
        log_err("KVM_GET_SUPPORTED_CPUID: %s", strerror(errno));
        return err;
    }
    return 0;
}

struct kvm_cpuid_entry2 *cpuid_find(struct cpuid_table *t, uint32_t fn, uint32_t index)
{
    for (uint32_t i = 0; i < t->hdr.nent; i++) {
        struct kvm_cpuid_entry2 *e = &t->entries[i];
        bool indexed = e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
        if (e->function == fn && (!indexed || e->index == index))
            return e;
    }
    return NULL;
}

static unsigned bits_for(unsigned n)
{
    unsigned b = 0;

    while ((1u << b) < n)
        b++;
    return b;
}

/* Leaf 0xB: an SMT level of one thread, then a core level of ncpus. */
static void cpuid_patch_topology(struct kvm_cpuid_entry2 *e, unsigned id, unsigned ncpus)
{
    e->edx = id;
    switch (e->index) {
    case 0:
        e->eax = 0;
        e->ebx = 1;
        e->ecx = (1u << 8) | 0;
        break;
    case 1:
        e->eax = bits_for(ncpus);
        e->ebx = ncpus;
        e->ecx = (2u << 8) | 1;
        break;
    default:
        e->eax = e->ebx = 0;
        e->ecx = e->index;
        break;
    }
}

static void cpuid_patch_one(struct kvm_cpuid_entry2 *e, unsigned id, unsigned ncpus)
{
    switch (e->function) {
    case 1:
        e->ebx = (e->ebx & 0x0000ffffU) | (id << 24) | ((ncpus & 0xff) << 16);
        e->ecx |= 1u << 31;                          /* running under a hypervisor */
        e->edx = ncpus > 1 ? e->edx | (1u << 28) : e->edx & ~(1u << 28);
        break;
    case 4:
        if (e->eax & 0x1f)                           /* Intel: cores per package */
            e->eax = (e->eax & 0x03ffffffU) | ((ncpus - 1) << 26);
        break;
    case 0xb:
        cpuid_patch_topology(e, id, ncpus);
        break;
    case 0x80000008:                                 /* AMD: cores per package */
        e->ecx = (e->ecx & ~0xf0ffU) | (ncpus - 1) | (bits_for(ncpus) << 12);
        break;
    case 0x8000001e:
        e->eax = id;
        e->ebx = (e->ebx & ~0xffU) | id;
        e->ecx = 0;
        break;
    default:
        break;
    }
}

/* KVM reports only subleaf 0 of leaf 0xB; the core level must be there too
 * or guests see one CPU per package. */
static void cpuid_add_topology(struct cpuid_table *t)
{
    struct kvm_cpuid_entry2 *base = cpuid_find(t, 0xb, 0);

    if (!base)
        return;
    for (uint32_t sub = 1; sub <= 2 && t->hdr.nent < CPUID_MAX_ENTRIES; sub++) {
        if (cpuid_find(t, 0xb, sub))
            continue;
        t->entries[t->hdr.nent] = *base;
        t->entries[t->hdr.nent].index = sub;
        t->hdr.nent++;
    }
}

void cpuid_patch(struct cpuid_table *t, unsigned id, unsigned ncpus)
{
    cpuid_add_topology(t);
    for (uint32_t i = 0; i < t->hdr.nent; i++)
        cpuid_patch_one(&t->entries[i], id, ncpus);
}

int cpuid_set(int vcpu_fd, const struct cpuid_table *t)
{
    if (ioctl(vcpu_fd, KVM_SET_CPUID2, t) < 0)
        return -errno;
    return 0;
}
