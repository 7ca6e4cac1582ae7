/* Control records on a migration connection. */
#ifndef FERRY_MIGRATION_CHANNEL_H
#define FERRY_MIGRATION_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

struct stream_io;

int chan_read_ctrl(struct stream_io *io, uint32_t want, uint8_t *buf, uint32_t *len,
                   char *err, size_t errlen);

/* strerror(-err), but a socket timeout says so ("Resource temporarily
 * unavailable" is what SO_SNDTIMEO gives). */
const char *chan_strerror(int err);

#endif
