/* The port I/O bus: devices claim port ranges; vCPU exits are dispatched here. */
#ifndef FERRY_DEVICES_PIO_H
#define FERRY_DEVICES_PIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define PIO_MAX_RANGES 32

struct pio_ops {
    void (*read)(void *opaque, uint16_t offset, uint8_t *data, unsigned size);
    void (*write)(void *opaque, uint16_t offset, const uint8_t *data, unsigned size);
};

struct pio_range {
    uint16_t base;
    uint16_t len;
    const struct pio_ops *ops;
    void *opaque;
    const char *name;
};

struct pio_bus {
    unsigned n;
    struct pio_range ranges[PIO_MAX_RANGES];
    pthread_mutex_t log_lock;
    uint64_t logged[65536 / 64];   /* unknown ports already reported */
};

void pio_init(struct pio_bus *bus);
int pio_register(struct pio_bus *bus, uint16_t base, uint16_t len,
                 const struct pio_ops *ops, void *opaque, const char *name);
/* Unknown reads return all ones and unknown writes are dropped, as on a PC. */
void pio_dispatch(struct pio_bus *bus, uint16_t port, uint8_t *data, unsigned size,
                  bool write);
const struct pio_range *pio_find(const struct pio_bus *bus, uint16_t port);

/* Little-endian helpers for device register access of 1, 2 or 4 bytes. */
uint32_t pio_get(const uint8_t *data, unsigned size);
void pio_put(uint8_t *data, unsigned size, uint32_t value);

#endif
