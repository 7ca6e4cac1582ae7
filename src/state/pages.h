/* Guest memory as page records: batches of (gpa | flags) entries followed by
 * the data of the pages that carry any. Zero pages are never sent as data. */
#ifndef FERRY_STATE_PAGES_H
#define FERRY_STATE_PAGES_H

#include <stdbool.h>
#include <stdint.h>

#include "state/stream.h"
#include "vm/memory.h"

struct page_stats {
    uint64_t normal;     /* pages sent with data */
    uint64_t zero;       /* pages sent as zero markers or skipped as zero */
    uint64_t bytes;      /* payload bytes of page records */
};

/* A batch being filled before it becomes one REC_PAGES record. Page data is
 * copied in when added: a running guest may write the page at any moment,
 * and the record's checksum must cover exactly the bytes that are sent. */
struct page_batch {
    uint32_t count;
    uint32_t ndata;
    uint64_t entries[STREAM_PAGES_PER_REC];
    uint8_t data[STREAM_PAGES_PER_REC][STREAM_PAGE_SIZE] __attribute__((aligned(64)));
};

/* Adds a page; flushes the batch as a record when it is full. */
int page_batch_add(struct page_batch *b, struct stream_io *io, uint64_t gpa,
                   const uint8_t *hva, bool send_zero_marker, struct page_stats *st);
int page_batch_flush(struct page_batch *b, struct stream_io *io, struct page_stats *st);
/* Every non-zero page of guest RAM (holes in the memfd are skipped). */
int pages_save_all(struct guest_mem *mem, struct stream_io *io, struct page_stats *st);
/* Checks a REC_PAGES payload completely (entries, bounds, length). */
int pages_validate(struct guest_mem *mem, const uint8_t *payload, uint64_t len,
                   uint32_t *count, const char **why);
/* Validates a REC_PAGES payload completely, then applies it. */
int pages_load(struct guest_mem *mem, const uint8_t *payload, uint64_t len, const char **why);
/* Contiguous pages into guest RAM (pwrite into the memory file). */
int pages_write_run(struct guest_mem *mem, uint64_t gpa, const uint8_t *data, uint64_t len);
/* Makes a page zero: a hole in the memory file (or memset). */
void pages_zero(struct guest_mem *mem, uint64_t gpa);

#endif
