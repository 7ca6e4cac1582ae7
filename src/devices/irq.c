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
