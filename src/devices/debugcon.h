/* Debug console on port 0xe9 (Bochs/QEMU isa-debugcon): each byte written by
 * the guest goes straight to a file, FIFO or socket, unbuffered, so a reader
 * on the host can timestamp it (guest-visible gap measurements). */
#ifndef FERRY_DEVICES_DEBUGCON_H
#define FERRY_DEVICES_DEBUGCON_H

#include "devices/pio.h"

#define DEBUGCON_PORT 0xe9

struct debugcon {
    int fd;
};

/* path NULL: the port is not registered. Opening a FIFO waits for its reader. */
int debugcon_init(struct debugcon *dc, struct pio_bus *bus, const char *path);
void debugcon_close(struct debugcon *dc);

#endif
