/* Control records on a migration connection (connections: transport.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migration/channel.h"
#include "migration/migration.h"
#include "state/stream.h"
#include "util/log.h"

int mig_send_ctrl(struct stream_io *io, uint32_t type, const void *payload, uint32_t len)
{
    if (stream_put_record(io, type, 0, 0, MIG_PROTO_VERSION, 0, payload, len) == 0)
        stream_flush(io);
    return io->err;
}

int mig_send_status(struct stream_io *io, uint32_t type, int32_t status, const char *text)
{
    uint8_t buf[MIG_CTRL_MAX];
    size_t n = strnlen(text ? text : "", sizeof(buf) - 5);

    memcpy(buf, &status, 4);
    memcpy(buf + 4, text ? text : "", n);
    buf[4 + n] = '\0';
    return mig_send_ctrl(io, type, buf, (uint32_t)(5 + n));
}

const char *chan_strerror(int err)
{
    if (err == -EAGAIN || err == -EWOULDBLOCK || err == -ETIMEDOUT)
        return "timed out (the peer stopped reading or answering)";
    return strerror(-err);
}

/* Reads a control record of the wanted type; a REC_CANCEL or unexpected
 * type is an error with the peer's text in err. */
int chan_read_ctrl(struct stream_io *io, uint32_t want, uint8_t *buf, uint32_t *len,
                   char *err, size_t errlen)
{
    struct stream_record r;
    uint8_t *p;
    const char *why = "";
    int ret = stream_get_record(io, &r, &p, &why);

    if (ret < 0) {
        snprintf(err, errlen, "%s", ret == -EPIPE || ret == -ECONNRESET ?
                 "the peer closed the connection" :
                 ret == -EAGAIN ? "the peer did not answer in time" : why);
        return ret;
    }
    if (r.type != want || r.length < 5 || r.length > MIG_CTRL_MAX) {
        snprintf(err, errlen, "unexpected record type %u from the peer", r.type);
        free(p);
        return -EPROTO;
    }
    memcpy(buf, p, r.length);
    buf[r.length - 1] = '\0';
    *len = (uint32_t)r.length;
    free(p);
    return 0;
}
