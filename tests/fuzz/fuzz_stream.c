/* libFuzzer target for the state stream reader: whatever bytes arrive (a
 * corrupt snapshot, a hostile migration peer), the reader must reject them
 * cleanly and never touch memory outside guest RAM. The fuzz build accepts
 * bad checksums (FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION) so that mutations
 * reach the section and page parsers behind them. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "state/pages.h"
#include "state/state.h"
#include "state/xpages.h"
#include "vm/vm.h"
#include "fuzz_vm.h"

#define FUZZ_RAM (64 * 4096)

static struct vm vm;
static uint8_t ram[FUZZ_RAM];
static struct pio_bus bus;

/* A parallel-engine batch too: a full page, a zero page, an empty delta. */
static void fuzz_seed_xpages(struct stream_io *io)
{
    static uint8_t rec[XPAGES_HDR + 3 * 8 + STREAM_PAGE_SIZE + 4];
    struct xpages_hdr h = { .count = 3, .round = 1, .body_len = STREAM_PAGE_SIZE + 4,
                            .raw_len = STREAM_PAGE_SIZE + 4 };
    uint64_t ent[3] = { 3 * 4096 | XPAGE_DATA, 4 * 4096 | XPAGE_ZERO, 5 * 4096 | XPAGE_DELTA };

    memcpy(rec, &h, sizeof(h));
    memcpy(rec + XPAGES_HDR, ent, sizeof(ent));
    memset(rec + XPAGES_HDR + sizeof(ent), 0x5a, STREAM_PAGE_SIZE);
    stream_put_record(io, REC_XPAGES, 0, 0, 1, REC_FLAG_MANDATORY, rec, sizeof(rec));
}

static void fuzz_write_seed(const char *path)
{
    FILE *f = fopen(path, "wb");
    static struct page_batch b;
    struct stream_header h;
    struct stream_io io;
    struct page_stats ps = { 0 };
    char err[256];

    if (!f)
        exit(1);
    memset(ram + 4096, 0x42, 4096);
    stream_io_init(&io, fileno(f), 4096);
    stream_header_init(&h, FUZZ_RAM, 1, 0, 0);
    stream_write(&io, &h, sizeof(h));
    page_batch_add(&b, &io, 4096, ram + 4096, false, &ps);
    page_batch_add(&b, &io, 8192, ram + 8192, true, &ps);
    page_batch_flush(&b, &io, &ps);
    fuzz_seed_xpages(&io);
    state_save_sections(&vm.sections, &io, err, sizeof(err));
    stream_put_record(&io, REC_END, 0, 0, 1, 0, NULL, 0);
    stream_flush(&io);
    stream_io_free(&io);
    fclose(f);
    exit(0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_vm_setup(&vm, &bus, ram, FUZZ_RAM);
    if (getenv("FERRY_FUZZ_WRITE_SEED"))
        fuzz_write_seed(getenv("FERRY_FUZZ_WRITE_SEED"));
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz", MFD_CLOEXEC);
    struct stream_header h;
    char err[256];

    if (fd < 0 || write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    lseek(fd, 0, SEEK_SET);
    for (unsigned i = 0; i < vm.sections.n; i++)
        vm.sections.e[i].loaded = false;
    if (vm_read_header(fd, &h, err, sizeof(err)) == 0)
        vm_restore_stream(&vm, fd, err, sizeof(err));
    close(fd);
    return 0;
}
