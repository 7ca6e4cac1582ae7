/* ACPI fixed hardware (PM1 event/control, PM timer) and the reset ports
 * (0xcf9, i8042 command 0xfe): how a guest powers off or reboots. */
#ifndef FERRY_DEVICES_ACPI_PM_H
#define FERRY_DEVICES_ACPI_PM_H

#include <pthread.h>
#include <stdint.h>

#include "devices/pio.h"

enum power_event { POWER_OFF, POWER_RESET };

struct acpi_pm {
    pthread_mutex_t lock;
    uint16_t pm1_sts, pm1_en, pm1_cnt;
    uint64_t timer_base_ns;
    void (*on_power)(void *ctx, enum power_event ev);
    void *ctx;
};

int acpi_pm_init(struct acpi_pm *pm, struct pio_bus *bus,
                 void (*on_power)(void *ctx, enum power_event ev), void *ctx);
/* PM timer value (3.579545 MHz, 24 bits used by old guests, 32 here) (pure). */
uint32_t acpi_pm_timer(uint64_t ns);

struct state_ops;
extern const struct state_ops acpi_pm_state_ops;

#endif
