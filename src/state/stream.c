#include "state/stream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "state/xpages.h"
#include "util/sockio.h"
#include "util/util.h"
#include "version.h"

/* The fuzz build lets bad checksums through so that mutated inputs reach the
 * parsers behind them; it is never a product build. */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define STREAM_FUZZING 1
#else
#define STREAM_FUZZING 0
#endif

_Static_assert(sizeof(struct stream_header) == 112, "stream header wire size");
_Static_assert(sizeof(struct stream_record) == 40, "stream record wire size");

void stream_header_init(struct stream_header *h, uint64_t mem_size, uint32_t ncpus,
                        uint64_t cpuid_fp, uint64_t tsc_khz)
{
    memset(h, 0, sizeof(*h));
    memcpy(h->magic, STREAM_MAGIC, 8);
    h->format_version = STREAM_FORMAT_VERSION;
    h->header_size = sizeof(*h);
    snprintf(h->ferry_version, sizeof(h->ferry_version), "%s", FERRY_VERSION);
    h->mem_size = mem_size;
    h->ncpus = ncpus;
    h->cpuid_fingerprint = cpuid_fp;
    h->tsc_khz = tsc_khz;
    h->checksum = stream_header_seal(h);
}

uint64_t stream_header_seal(const struct stream_header *h)
{
    return XXH3_64bits(h, offsetof(struct stream_header, checksum));
}

int stream_header_check(const struct stream_header *h, const char **why)
{
    if (memcmp(h->magic, STREAM_MAGIC, 8) != 0)
        return *why = "not a ferry state stream (bad magic)", -EBADMSG;
    if (h->format_version != STREAM_FORMAT_VERSION)
        return *why = "unsupported stream format version", -EPROTO;
    if (h->header_size != sizeof(*h))
        return *why = "unexpected stream header size", -EBADMSG;
    if (h->checksum != stream_header_seal(h) &&
        !STREAM_FUZZING)
        return *why = "stream header checksum mismatch", -EBADMSG;
    if (h->ncpus == 0 || h->mem_size == 0 || h->mem_size % STREAM_PAGE_SIZE)
        return *why = "stream header describes an impossible VM", -EBADMSG;
    return 0;
}

static uint64_t record_hash_iov(const struct stream_record *r, const struct iovec *iov,
                                unsigned niov)
{
    XXH3_state_t st;

    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, r, offsetof(struct stream_record, checksum));
    for (unsigned i = 0; i < niov; i++)
        XXH3_64bits_update(&st, iov[i].iov_base, iov[i].iov_len);
    return XXH3_64bits_digest(&st);
}

static uint64_t record_hash(const struct stream_record *r, const void *payload)
{
    struct iovec v = { .iov_base = (void *)payload, .iov_len = r->length };

    return record_hash_iov(r, &v, r->length ? 1 : 0);
}

void stream_record_seal(struct stream_record *r, const void *payload)
{
    r->checksum = record_hash(r, payload);
}

bool stream_record_check_payload(const struct stream_record *r, const void *payload)
{
    return r->checksum == record_hash(r, payload) || STREAM_FUZZING;
}

static uint64_t record_max_len(uint32_t type)
{
    switch (type) {
    case REC_SECTION: return STREAM_MAX_SECTION;
    case REC_PAGES: return 8 + STREAM_PAGES_PER_REC * (8 + STREAM_PAGE_SIZE);
    case REC_END: return 0;
    case REC_BITMAP: return STREAM_MAX_BITMAP;
    case REC_XPAGES: return XPAGES_MAX_LEN;
    default: return STREAM_MAX_CTRL;   /* migration control records */
    }
}

int stream_record_check_header(const struct stream_record *r, const char **why)
{
    if ((r->type < REC_SECTION || r->type > REC_XPAGES) &&
        (r->type < REC_FIRST_CTRL || r->type > REC_LAST_CTRL))
        return *why = "unknown record type", -EBADMSG;
    if (r->length > record_max_len(r->type))
        return *why = "record longer than its type allows", -EBADMSG;
    return 0;
}

int stream_io_init(struct stream_io *io, int fd, size_t bufsize)
{
    memset(io, 0, sizeof(*io));
    io->fd = fd;
    io->sock = fd_is_socket(fd);
    io->buf = malloc(bufsize);
    io->cap = bufsize;
    return io->buf ? 0 : -ENOMEM;
}

void stream_io_set_ops(struct stream_io *io, const struct stream_ops *ops, void *ctx,
                       bool authenticated)
{
    io->ops = ops;
    io->ctx = ctx;
    io->authenticated = authenticated;
}

void stream_io_free(struct stream_io *io)
{
    free(io->buf);
    io->buf = NULL;
}

static int stream_write_fd(struct stream_io *io, const void *p, size_t n)
{
    if (io->ops)
        return io->ops->send_all(io->ctx, p, n);
    return io->sock ? sock_write_all(io->fd, p, n) : fd_write_all(io->fd, p, n);
}

int stream_flush(struct stream_io *io)
{
    int ret;

    if (io->err || !io->len)
        return io->err;
    ret = stream_write_fd(io, io->buf, io->len);
    io->len = 0;
    return ret < 0 ? (io->err = ret) : 0;
}

int stream_write(struct stream_io *io, const void *p, size_t n)
{
    if (io->err)
        return io->err;
    io->bytes += n;
    if (io->progress)
        __atomic_store_n(io->progress, io->bytes, __ATOMIC_RELAXED);
    if (n >= io->cap) {   /* large payloads bypass the buffer */
        if (stream_flush(io) < 0)
            return io->err;
        int ret = stream_write_fd(io, p, n);
        return ret < 0 ? (io->err = ret) : 0;
    }
    if (io->cap - io->len < n && stream_flush(io) < 0)
        return io->err;
    memcpy(io->buf + io->len, p, n);
    io->len += n;
    return 0;
}

/* Bytes read, 0 at the end of the stream, or -errno. */
static ssize_t stream_read_fd(struct stream_io *io, void *p, size_t n)
{
    ssize_t got;

    if (io->ops)
        return io->ops->recv(io->ctx, p, n);
    do
        got = read(io->fd, p, n);
    while (got < 0 && errno == EINTR);
    return got < 0 ? -errno : got;
}

static int stream_fill(struct stream_io *io)
{
    ssize_t n;

    n = stream_read_fd(io, io->buf, io->cap);
    if (n < 0)
        return io->err = (int)n;
    if (n == 0)
        return io->err = -EPIPE;
    io->pos = 0;
    io->len = (size_t)n;
    return 0;
}

/* Large reads with an empty buffer go straight to the caller: one copy less. */
static ssize_t stream_read_direct(struct stream_io *io, uint8_t *dst, size_t n)
{
    ssize_t got;

    got = stream_read_fd(io, dst, n);
    if (got < 0)
        io->err = (int)got;
    else if (got == 0)
        io->err = -EPIPE;
    return io->err ? -1 : got;
}

int stream_read(struct stream_io *io, void *p, size_t n)
{
    uint8_t *dst = p;

    while (n && !io->err) {
        size_t chunk;
        if (io->pos == io->len && n >= io->cap / 2) {
            ssize_t got = stream_read_direct(io, dst, n);
            if (got < 0)
                break;
            io->bytes += (uint64_t)got;
            dst += got;
            n -= (size_t)got;
            continue;
        }
        if (io->pos == io->len && stream_fill(io) < 0)
            break;
        chunk = MIN(n, io->len - io->pos);
        memcpy(dst, io->buf + io->pos, chunk);
        io->pos += chunk;
        io->bytes += chunk;
        dst += chunk;
        n -= chunk;
    }
    return io->err;
}

int stream_put_record(struct stream_io *io, uint32_t type, uint32_t section,
                      uint32_t instance, uint32_t version, uint32_t flags,
                      const void *payload, uint64_t len)
{
    struct stream_record r = {
        .type = type, .section = section, .instance = instance,
        .version = version, .flags = flags, .length = len,
    };

    if (!io->authenticated)
        stream_record_seal(&r, payload);
    if (stream_write(io, &r, sizeof(r)) == 0 && len)
        stream_write(io, payload, len);
    return io->err;
}

int stream_put_record_iov(struct stream_io *io, uint32_t type, uint32_t section,
                          uint32_t instance, uint32_t version, uint32_t flags,
                          const struct iovec *iov, unsigned niov)
{
    struct stream_record r = {
        .type = type, .section = section, .instance = instance,
        .version = version, .flags = flags,
    };
    for (unsigned i = 0; i < niov; i++)
        r.length += iov[i].iov_len;
    if (!io->authenticated)
        r.checksum = record_hash_iov(&r, iov, niov);
    stream_write(io, &r, sizeof(r));
    for (unsigned i = 0; i < niov && !io->err; i++)
        stream_write(io, iov[i].iov_base, iov[i].iov_len);
    return io->err;
}

int stream_get_record(struct stream_io *io, struct stream_record *r, uint8_t **payload,
                      const char **why)
{
    int ret;

    *payload = NULL;
    if (stream_read(io, r, sizeof(*r)) < 0)
        return *why = "stream ended inside a record header", io->err;
    ret = stream_record_check_header(r, why);
    if (ret < 0)
        return ret;
    *payload = malloc(r->length ? r->length : 1);
    if (!*payload)
        return *why = "out of memory", -ENOMEM;
    if (stream_read(io, *payload, r->length) < 0)
        ret = io->err, *why = "stream ended inside a record (truncated)";
    else if (!io->authenticated && !stream_record_check_payload(r, *payload))
        ret = -EBADMSG, *why = "record checksum mismatch";
    if (ret < 0) {
        free(*payload);
        *payload = NULL;
    }
    return ret;
}
