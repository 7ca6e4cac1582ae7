#include "devices/debugcon.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"
#include "util/util.h"

static void debugcon_read(void *opaque, uint16_t off, uint8_t *data, unsigned size)
{
    (void)opaque;
    (void)off;
    pio_put(data, size, DEBUGCON_PORT);   /* the value QEMU's device reads back */
}

static void debugcon_write(void *opaque, uint16_t off, const uint8_t *data, unsigned size)
{
    struct debugcon *dc = opaque;

    (void)off;
    if (dc->fd >= 0 && fd_write_all(dc->fd, data, size) < 0)
        dc->fd = -1;      /* the reader went away; the guest must not notice */
}

static const struct pio_ops debugcon_ops = { .read = debugcon_read, .write = debugcon_write };

int debugcon_init(struct debugcon *dc, struct pio_bus *bus, const char *path)
{
    dc->fd = -1;
    if (!path)
        return 0;
    dc->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (dc->fd < 0) {
        int err = -errno;
        log_err("debugcon %s: %s", path, strerror(errno));
        return err;
    }
    return pio_register(bus, DEBUGCON_PORT, 1, &debugcon_ops, dc, "debugcon");
}

void debugcon_close(struct debugcon *dc)
{
    if (dc->fd >= 0)
        close(dc->fd);
    dc->fd = -1;
}
