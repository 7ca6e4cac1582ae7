#include "devices/acpi_pm.h"

#include <string.h>

#include "arch/x86/acpi.h"
#include "util/log.h"
#include "util/util.h"
#include "state/state.h"

#define PM1_SCI_EN   0x0001
#define PM1_SLP_EN   0x2000
#define PM_TIMER_HZ  3579545ULL

uint32_t acpi_pm_timer(uint64_t ns)
{
    return (uint32_t)((unsigned __int128)ns * PM_TIMER_HZ / 1000000000ULL);
}

static void acpi_pm_read(void *opaque, uint16_t off, uint8_t *data, unsigned size)
{
    struct acpi_pm *pm = opaque;
    uint32_t v = 0;

    pthread_mutex_lock(&pm->lock);
    if (off < 2)
        v = pm->pm1_sts >> (8 * off);
    else if (off < 4)
        v = pm->pm1_en >> (8 * (off - 2));
    else if (off < 6)
        v = pm->pm1_cnt >> (8 * (off - 4));
    else if (off >= 8)
        v = acpi_pm_timer(time_now_ns() - pm->timer_base_ns) >> (8 * (off - 8));
    pthread_mutex_unlock(&pm->lock);
    pio_put(data, size, v);
}

static void acpi_pm_cnt_write(struct acpi_pm *pm, uint16_t v)
{
    unsigned slp_typ = (v >> 10) & 7;

    pm->pm1_cnt = (uint16_t)((v & ~PM1_SLP_EN) | PM1_SCI_EN);
    if (!(v & PM1_SLP_EN))
        return;
    if (slp_typ == ACPI_S5_SLP_TYP)
        pm->on_power(pm->ctx, POWER_OFF);
    else
        log_warn("guest asked for ACPI sleep type %u, which ferry does not offer", slp_typ);
}

static void acpi_pm_write(void *opaque, uint16_t off, const uint8_t *data, unsigned size)
{
    struct acpi_pm *pm = opaque;
    uint32_t v = pio_get(data, size);

    pthread_mutex_lock(&pm->lock);
    if (off == 0)
        pm->pm1_sts &= (uint16_t)~v;       /* write one to clear */
    else if (off == 2)
        pm->pm1_en = (uint16_t)v;
    else if (off == 4)
        acpi_pm_cnt_write(pm, (uint16_t)v);
    pthread_mutex_unlock(&pm->lock);
}

static void reset_read(void *opaque, uint16_t off, uint8_t *data, unsigned size)
{
    (void)opaque;
    (void)off;
    pio_put(data, size, 0);
}

static void reset_cf9_write(void *opaque, uint16_t off, const uint8_t *data, unsigned size)
{
    struct acpi_pm *pm = opaque;

    if (off == 0 && (pio_get(data, size) & 0x04))
        pm->on_power(pm->ctx, POWER_RESET);
}

/* The i8042 is absent but for its "pulse reset line" command. */
static void reset_i8042_write(void *opaque, uint16_t off, const uint8_t *data, unsigned size)
{
    struct acpi_pm *pm = opaque;

    if (off == 4 && (pio_get(data, size) & 0xff) == 0xfe)
        pm->on_power(pm->ctx, POWER_RESET);
}

static const struct pio_ops acpi_pm_ops = { .read = acpi_pm_read, .write = acpi_pm_write };
static const struct pio_ops cf9_ops = { .read = reset_read, .write = reset_cf9_write };
static const struct pio_ops i8042_ops = { .read = reset_read, .write = reset_i8042_write };

int acpi_pm_init(struct acpi_pm *pm, struct pio_bus *bus,
                 void (*on_power)(void *ctx, enum power_event ev), void *ctx)
{
    int ret;

    memset(pm, 0, sizeof(*pm));
    pthread_mutex_init(&pm->lock, NULL);
    pm->pm1_cnt = PM1_SCI_EN;
    pm->timer_base_ns = time_now_ns();
    pm->on_power = on_power;
    pm->ctx = ctx;
    ret = pio_register(bus, ACPI_PM_BASE, ACPI_PM_LEN, &acpi_pm_ops, pm, "acpi-pm");
    if (ret == 0)
        ret = pio_register(bus, ACPI_RESET_PORT, 1, &cf9_ops, pm, "reset");
    if (ret == 0)
        ret = pio_register(bus, 0x60, 5, &i8042_ops, pm, "i8042");
    return ret;
}

static int acpi_pm_state_walk(struct state_walker *w, void *obj)
{
    struct acpi_pm *pm = obj;

    pthread_mutex_lock(&pm->lock);
    walk_u16(w, &pm->pm1_sts, "pm1_sts");
    walk_u16(w, &pm->pm1_en, "pm1_en");
    walk_u16(w, &pm->pm1_cnt, "pm1_cnt");
    pthread_mutex_unlock(&pm->lock);
    return w->err;
}

const struct state_ops acpi_pm_state_ops = {
    .name = "acpi_pm", .id = SECTION_ACPI_PM, .version = 1, .min_version = 1,
    .walk = acpi_pm_state_walk,
};
