/* Interrupt lines into KVM's in-kernel PIC/IOAPIC. */
#ifndef FERRY_DEVICES_IRQ_H
#define FERRY_DEVICES_IRQ_H

struct irq_line {
    int vm_fd;
    unsigned gsi;
};

/* Drives the line to level (0/1); -errno on failure (logged once). */
int irq_line_set(const struct irq_line *line, int level);

#endif
