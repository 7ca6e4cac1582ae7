#include "devices/irq.h"

#include <errno.h>
#include <stdint.h>
#include <linux/kvm.h>
#include <string.h>
#include <sys/ioctl.h>

#include "util/log.h"

int irq_line_set(const struct irq_line *line, int level)
{
    struct kvm_irq_level irq = { .irq = line->gsi, .level = (uint32_t)level };
    static int warned;

    if (line->vm_fd < 0)
        return 0;   /* not wired to KVM (unit tests) */
    if (ioctl(line->vm_fd, KVM_IRQ_LINE, &irq) < 0) {
        if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
            log_err("KVM_IRQ_LINE gsi %u level %d: %s", line->gsi, level, strerror(errno));
        return -errno;
    }
    return 0;
}

static void route_irqchip(struct kvm_irq_routing_entry *e, uint32_t gsi, uint32_t chip,
                          uint32_t pin)
{
    *e = (struct kvm_irq_routing_entry){ .gsi = gsi, .type = KVM_IRQ_ROUTING_IRQCHIP };
    e->u.irqchip.irqchip = chip;
    e->u.irqchip.pin = pin;
}

/* As on a PC: ISA IRQ n goes to PIC pin n and IOAPIC pin n, except the PIT
 * (GSI 0), which the MADT override sends to IOAPIC pin 2. */
unsigned irq_routes_pc(struct kvm_irq_routing_entry *e)
{
    unsigned n = 0;

    for (uint32_t gsi = 0; gsi < 24; gsi++) {
        if (gsi < 16 && gsi != 2)
            route_irqchip(&e[n++], gsi, KVM_IRQCHIP_PIC_MASTER + (gsi >= 8), gsi % 8);
        if (gsi != 2)
            route_irqchip(&e[n++], gsi, KVM_IRQCHIP_IOAPIC, gsi == 0 ? 2 : gsi);
    }
    return n;
}
