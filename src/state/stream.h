/* The VM state stream (docs/STREAM.md): a header, then records (state
 * sections and memory pages), then an end marker. Snapshots write it to a
 * file; migration sends the same records over TCP. */
#ifndef FERRY_STATE_STREAM_H
#define FERRY_STATE_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define STREAM_MAGIC          "FERRY\0VM"
#define STREAM_FORMAT_VERSION 1
#define STREAM_PAGE_SIZE      4096
#define STREAM_MAX_SECTION    (16u << 20)   /* no section payload is larger */
#define STREAM_PAGES_PER_REC  512
#define STREAM_MAX_BITMAP     (64u << 20)   /* 2 TiB of guest RAM */

enum stream_rec_type {
    REC_SECTION = 1,
    REC_PAGES = 2,
    REC_END = 3,
    REC_BITMAP = 4,     /* post-copy: which pages a side still needs */
    REC_XPAGES = 5,     /* parallel connections: zero/full/delta pages, maybe compressed */
};

/* Migration control records (src/migration/migration.h) use these types. */
#define REC_FIRST_CTRL 16
#define REC_LAST_CTRL  31
#define STREAM_MAX_CTRL 512

#define REC_FLAG_MANDATORY 1u   /* a reader that does not know it must fail */

/* Wire layout, little-endian, 112 bytes. */
struct stream_header {
    char magic[8];
    uint32_t format_version;
    uint32_t header_size;
    char ferry_version[16];
    uint64_t mem_size;
    uint32_t ncpus;
    uint32_t flags;
    uint64_t cpuid_fingerprint;
    uint64_t tsc_khz;
    uint32_t proto_version;   /* migration protocol; 0 in snapshot files */
    uint32_t proto_flags;     /* migration capabilities asked for */
    uint8_t reserved[32];
    uint64_t checksum;        /* XXH3-64 of the bytes above */
};

/* Wire layout, 40 bytes; payload follows. */
struct stream_record {
    uint32_t type;
    uint32_t section;
    uint32_t instance;
    uint32_t version;
    uint32_t flags;
    uint32_t reserved;
    uint64_t length;
    uint64_t checksum;        /* XXH3-64 of the header fields above and the payload */
};

/* A page entry in a REC_PAGES payload: gpa | PAGE_F_*; data follows for
 * PAGE_F_DATA entries, in order after all entries. */
#define PAGE_F_ZERO 0x1ULL
#define PAGE_F_DATA 0x2ULL
#define PAGE_F_MASK 0xfffULL

void stream_header_init(struct stream_header *h, uint64_t mem_size, uint32_t ncpus,
                        uint64_t cpuid_fp, uint64_t tsc_khz);
/* The checksum a header's fields call for (after changing a field). */
uint64_t stream_header_seal(const struct stream_header *h);
/* Validates magic, version, size and checksum; why says what is wrong. */
int stream_header_check(const struct stream_header *h, const char **why);

void stream_record_seal(struct stream_record *r, const void *payload);
int stream_record_check_header(const struct stream_record *r, const char **why);
bool stream_record_check_payload(const struct stream_record *r, const void *payload);

/* A layer under the stream (TLS): when set, bytes go through it instead of
 * read()/write() on fd. recv: bytes, 0 at the end, -errno; send_all: 0 or
 * -errno. One thread may send while another receives. */
struct stream_ops {
    ssize_t (*recv)(void *ctx, void *buf, size_t n);
    int (*send_all)(void *ctx, const void *buf, size_t n);
};

/* Buffered I/O over a file descriptor (file or socket). */
struct stream_io {
    int fd;
    uint8_t *buf;
    size_t cap, len, pos;
    uint64_t bytes;           /* total moved through this stream */
    uint64_t *progress;       /* optional: updated with bytes as they move */
    bool sock;                /* writes notice a peer that stopped reading */
    const struct stream_ops *ops;   /* optional layer (TLS) and its context */
    void *ctx;
    bool authenticated;       /* the layer authenticates every byte (TLS's AEAD):
                                 records carry checksum 0 and none is checked */
    int err;
};

int stream_io_init(struct stream_io *io, int fd, size_t bufsize);
void stream_io_set_ops(struct stream_io *io, const struct stream_ops *ops, void *ctx,
                       bool authenticated);
void stream_io_free(struct stream_io *io);
int stream_write(struct stream_io *io, const void *p, size_t n);
int stream_flush(struct stream_io *io);
/* Reads exactly n bytes; -EPIPE if the stream ends first. */
int stream_read(struct stream_io *io, void *p, size_t n);

/* Writes a record (header + payload). */
int stream_put_record(struct stream_io *io, uint32_t type, uint32_t section,
                      uint32_t instance, uint32_t version, uint32_t flags,
                      const void *payload, uint64_t len);
struct iovec;
/* The same, with the payload in pieces (no copy into one buffer). */
int stream_put_record_iov(struct stream_io *io, uint32_t type, uint32_t section,
                          uint32_t instance, uint32_t version, uint32_t flags,
                          const struct iovec *iov, unsigned niov);
/* Reads and validates a record header and its payload into *payload
 * (malloc'd; caller frees). */
int stream_get_record(struct stream_io *io, struct stream_record *r, uint8_t **payload,
                      const char **why);

#endif
