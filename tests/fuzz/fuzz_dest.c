/* libFuzzer target for the destination's whole receive path after a valid
 * handshake: dst_receive() reads control records (ROUND, POSTCOPY_ADVISE,
 * CANCEL, END), pages (PAGES, XPAGES), post-copy bitmaps and state sections
 * from a socket, as from a hostile source. Whatever arrives, it must fail
 * cleanly and write nothing outside guest RAM. Round acks go to a socket
 * nobody reads (drained here). The fuzz build accepts bad checksums, so
 * mutations reach the parsers. Post-copy is not started for real: the link
 * wraps pc_dst_start() (userfaultfd on this process's own heap would hang
 * it), so a bitmap that decodes ends in "starting post-copy". Seeds: a few
 * crafted streams, and streams recorded from real migrations
 * (tests/fuzz/record_migration.py). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "migration/dest_internal.h"
#include "migration/postcopy.h"
#include "state/pages.h"
#include "state/state.h"
#include "vm/vm.h"
#include "fuzz_vm.h"

#define FUZZ_RAM (64ULL << 20)   /* what the recorded seeds' VM has */

static struct vm vm;
static struct pio_bus bus;
static struct migration mig;

int __wrap_pc_dst_start(struct pc_dst *p);
int __wrap_pc_dst_start(struct pc_dst *p)
{
    (void)p;
    return -ENOSYS;
}

/* Guest RAM reserved, filled only where pages land. */
static void fuzz_dest_vm(void)
{
    void *ram = mmap(NULL, FUZZ_RAM, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

    if (ram == MAP_FAILED)
        exit(1);
    fuzz_vm_setup(&vm, &bus, ram, FUZZ_RAM);
}

static void put(struct stream_io *io, uint32_t type, uint32_t flags, const void *p, uint64_t n)
{
    stream_put_record(io, type, 0, 0, MIG_PROTO_VERSION, flags, p, n);
}

/* Crafted: a round of pages, its marker, a provisional and a final bitmap,
 * the device sections, END; and a CANCEL. */
static void fuzz_write_seeds(const char *prefix)
{
    static struct page_batch b;
    static uint8_t page[4096];
    struct page_stats ps = { 0 };
    struct stream_io io;
    uint32_t round = 1;
    uint8_t bitmap[4 + 8 + 8 + 8] = { 0 };   /* u32 regions; u64 gpa, pages; words */
    uint8_t cancel[4 + 4] = { 0xea, 0xff, 0xff, 0xff, 'b', 'y', 'e', 0 };
    char path[512], err[256];
    FILE *f;

    memset(page, 0x42, sizeof(page));
    snprintf(path, sizeof(path), "%s-round", prefix);
    if (!(f = fopen(path, "wb")))
        exit(1);
    stream_io_init(&io, fileno(f), 4096);
    page_batch_add(&b, &io, 4096, page, false, &ps);
    page_batch_add(&b, &io, 8192, page, true, &ps);
    page_batch_flush(&b, &io, &ps);
    put(&io, REC_ROUND, 0, &round, sizeof(round));
    bitmap[0] = 1;                                   /* one region at 0, pages 0-63 */
    bitmap[12] = 64;
    bitmap[20] = 0x0f;
    put(&io, REC_BITMAP, REC_BITMAP_PROVISIONAL, bitmap, sizeof(bitmap));
    put(&io, REC_BITMAP, 0, bitmap, sizeof(bitmap));
    state_save_sections(&vm.sections, &io, err, sizeof(err));
    put(&io, REC_END, 0, NULL, 0);
    stream_flush(&io);
    stream_io_free(&io);
    fclose(f);
    snprintf(path, sizeof(path), "%s-cancel", prefix);
    if (!(f = fopen(path, "wb")))
        exit(1);
    stream_io_init(&io, fileno(f), 4096);
    put(&io, REC_CANCEL, 0, cancel, sizeof(cancel));
    stream_flush(&io);
    stream_io_free(&io);
    fclose(f);
    exit(0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_dest_vm();
    mig_init(&mig);
    if (getenv("FERRY_FUZZ_WRITE_SEED"))
        fuzz_write_seeds(getenv("FERRY_FUZZ_WRITE_SEED"));
    return 0;
}

/* The whole input must fit the socket buffers: one write, then EOF. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct mig_dst d;
    int in[2], out[2], big = 8 << 20;

    if (size > (size_t)big / 2 || socketpair(AF_UNIX, SOCK_STREAM, 0, in) < 0)
        return 0;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, out) < 0) {
        close(in[0]);
        close(in[1]);
        return 0;
    }
    setsockopt(in[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    setsockopt(out[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    for (unsigned i = 0; i < vm.sections.n; i++)
        vm.sections.e[i].loaded = false;
    d = (struct mig_dst){ .m = &mig, .vm = &vm, .sock = in[0], .usock = -1, .lfd = -1 };
    if (write(in[1], data, size) == (ssize_t)size) {
        shutdown(in[1], SHUT_WR);
        if (stream_io_init(&d.in, in[0], 1u << 20) == 0 &&
            stream_io_init(&d.out, out[1], 4096) == 0)
            dst_receive(&d);
    }
    stream_io_free(&d.in);
    stream_io_free(&d.out);
    if (d.pc.mem) {               /* a final bitmap was decoded */
        pc_dst_stop(&d.pc);
        free(d.pc.st.lat_us);
    }
    pc_bitmap_free(&d.pc.discarded);
    close(in[0]);
    close(in[1]);
    close(out[0]);
    close(out[1]);
    return 0;
}
