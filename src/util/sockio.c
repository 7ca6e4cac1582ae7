#include "util/sockio.h"

#include <errno.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <linux/tcp.h>

#include "util/util.h"

#define NO_ACKS UINT64_MAX

bool fd_is_socket(int fd)
{
    struct stat st;

    return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* Bytes the TCP peer has acknowledged; NO_ACKS for other sockets. */
static uint64_t sock_acked(int fd)
{
    struct tcp_info ti = { 0 };
    socklen_t len = sizeof(ti);

    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 ||
        len < offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof(ti.tcpi_bytes_acked))
        return NO_ACKS;
    return ti.tcpi_bytes_acked;
}

static uint64_t sock_send_timeout_ns(int fd)
{
    struct timeval tv = { 0 };
    socklen_t len = sizeof(tv);

    if (getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &len) < 0)
        return 0;
    return (uint64_t)tv.tv_sec * 1000000000ULL + (uint64_t)tv.tv_usec * 1000;
}

/* A short write is normally progress, but the kernel grows a TCP send buffer
 * while the writer waits, so a peer that stopped reading (window closed) can
 * still take a few hundred KiB per send timeout, forever: the timeout never
 * fires. What counts is whether the peer acknowledged anything. */
static bool sock_write_stalled(int fd, uint64_t t0, uint64_t *acked)
{
    uint64_t timeout = sock_send_timeout_ns(fd), now;

    /* timer slack: a write cut by the timeout returns a little early */
    if (!timeout || time_now_ns() - t0 < timeout - timeout / 10)
        return false;
    now = sock_acked(fd);
    if (now != NO_ACKS && now == *acked)
        return true;
    *acked = now;
    return false;
}

int sock_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    uint64_t acked = sock_acked(fd);

    while (len) {
        uint64_t t0 = time_now_ns();
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if ((size_t)n < len && sock_write_stalled(fd, t0, &acked))
            return -ETIMEDOUT;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}
