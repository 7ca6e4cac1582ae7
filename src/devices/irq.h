/* Interrupt lines into KVM's in-kernel PIC/IOAPIC. */
#ifndef FERRY_DEVICES_IRQ_H
#define FERRY_DEVICES_IRQ_H

struct irq_line {
    int vm_fd;
    unsigned gsi;
};

/* Drives the line to level (0/1); -errno on failure (logged once). */
int irq_line_set(const struct irq_line *line, int level);

/* The PC's fixed routes (ISA IRQs to PIC and IOAPIC, IOAPIC pins 16..23);
 * KVM_SET_GSI_ROUTING replaces the whole table, so MSI routes are appended
 * to these. Fills e (IRQ_PC_ROUTES entries max) and returns the count. */
#define IRQ_PC_ROUTES 48
struct kvm_irq_routing_entry;
unsigned irq_routes_pc(struct kvm_irq_routing_entry *e);

#endif
