#include "devices/pio.h"

#include <errno.h>
#include <string.h>

#include "util/log.h"

void pio_init(struct pio_bus *bus)
{
    memset(bus, 0, sizeof(*bus));
    pthread_mutex_init(&bus->log_lock, NULL);
}

const struct pio_range *pio_find(const struct pio_bus *bus, uint16_t port)
{
    for (unsigned i = 0; i < bus->n; i++) {
        const struct pio_range *r = &bus->ranges[i];
        if (port >= r->base && port - r->base < r->len)
            return r;
    }
    return NULL;
}

int pio_register(struct pio_bus *bus, uint16_t base, uint16_t len,
                 const struct pio_ops *ops, void *opaque, const char *name)
{
    if (bus->n >= PIO_MAX_RANGES || len == 0 || (uint32_t)base + len > 0x10000)
        return -EINVAL;
    for (uint32_t p = base; p < (uint32_t)base + len; p++)
        if (pio_find(bus, (uint16_t)p))
            return -EBUSY;
    bus->ranges[bus->n++] = (struct pio_range){ base, len, ops, opaque, name };
    return 0;
}

/* Logged once per port: a guest probing hardware must not flood the log. */
static void pio_unknown(struct pio_bus *bus, uint16_t port, unsigned size, bool write)
{
    uint64_t bit = 1ULL << (port % 64);
    bool first;

    pthread_mutex_lock(&bus->log_lock);
    first = !(bus->logged[port / 64] & bit);
    bus->logged[port / 64] |= bit;
    pthread_mutex_unlock(&bus->log_lock);
    if (first)
        log_debug("unhandled port I/O %s 0x%x size %u (ignored)",
                  write ? "write to" : "read from", port, size);
}

void pio_dispatch(struct pio_bus *bus, uint16_t port, uint8_t *data, unsigned size,
                  bool write)
{
    const struct pio_range *r = pio_find(bus, port);

    if (!r) {
        pio_unknown(bus, port, size, write);
        if (!write)
            memset(data, 0xff, size);
        return;
    }
    if (write)
        r->ops->write(r->opaque, (uint16_t)(port - r->base), data, size);
    else
        r->ops->read(r->opaque, (uint16_t)(port - r->base), data, size);
}

uint32_t pio_get(const uint8_t *data, unsigned size)
{
    uint32_t v = 0;

    memcpy(&v, data, size > 4 ? 4 : size);
    return v;
}

void pio_put(uint8_t *data, unsigned size, uint32_t value)
{
    memcpy(data, &value, size > 4 ? 4 : size);
}
