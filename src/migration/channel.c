/* TCP for migration: URI parsing, connect with a timeout, listen/accept, and
 * control records. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migration/channel.h"
#include "migration/migration.h"
#include "state/stream.h"
#include "util/log.h"

int mig_parse_uri(const char *uri, char *host, size_t hlen, char *port, size_t plen,
                  char *err, size_t errlen)
{
    const char *h, *colon;
    size_t n;

    if (!uri || strncmp(uri, "tcp:", 4) != 0) {
        snprintf(err, errlen, "'%s' is not tcp:HOST:PORT", uri ? uri : "");
        return -EINVAL;
    }
    h = uri + 4;
    colon = strrchr(h, ':');
    if (!colon || colon == h || !colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1)) {
        snprintf(err, errlen, "'%s' is not tcp:HOST:PORT", uri);
        return -EINVAL;
    }
    n = (size_t)(colon - h);
    if (h[0] == '[' && colon[-1] == ']')   /* [v6 address] */
        h++, n -= 2;
    if (n >= hlen || strlen(colon + 1) >= plen || atoi(colon + 1) > 65535) {
        snprintf(err, errlen, "'%s': host or port out of range", uri);
        return -EINVAL;
    }
    memcpy(host, h, n);
    host[n] = '\0';
    snprintf(port, plen, "%s", colon + 1);
    return 0;
}

/* Bounded blocking: a peer that stops reading or answering fails the
 * migration instead of hanging it forever. */
void chan_set_timeouts(int fd, unsigned seconds)
{
    struct timeval tv = { .tv_sec = seconds };
    int one = 1;

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int chan_connect_one(const struct addrinfo *ai, int timeout_ms)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct pollfd pfd = { .fd = fd, .events = POLLOUT };
    int err = 0;
    socklen_t len = sizeof(err);

    if (fd < 0)
        return -errno;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS)
        err = errno;
    else if (poll(&pfd, 1, timeout_ms) <= 0)
        err = ETIMEDOUT;
    else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err) {
        close(fd);
        return -err;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

int chan_connect(const char *host, const char *port, int timeout_ms)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
    int fd = -EHOSTUNREACH, rc = getaddrinfo(host, port, &hints, &res);

    if (rc)
        return -EHOSTUNREACH;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = chan_connect_one(ai, timeout_ms);
        if (fd >= 0)
            break;
    }
    freeaddrinfo(res);
    return fd;
}

int chan_listen(const char *host, const char *port)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res;
    int one = 1, fd, rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);

    if (rc) {
        log_err("incoming %s:%s: %s", host, port, gai_strerror(rc));
        return -EINVAL;
    }
    fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, MIG_MAX_CONNS + 2) < 0) {
            int err = -errno;
            close(fd);
            fd = err;
        }
    } else {
        fd = -errno;
    }
    freeaddrinfo(res);
    if (fd < 0)
        log_err("incoming %s:%s: %s", host, port, strerror(-fd));
    return fd;
}

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
