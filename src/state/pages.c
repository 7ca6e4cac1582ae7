#include "state/pages.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "codec/zero.h"
#include "util/util.h"

int page_batch_flush(struct page_batch *b, struct stream_io *io, struct page_stats *st)
{
    uint32_t hdr[2] = { b->count, 0 };
    struct iovec iov[3] = {
        { hdr, sizeof(hdr) },
        { b->entries, 8ULL * b->count },
        { b->data, (size_t)b->ndata * STREAM_PAGE_SIZE },
    };

    if (!b->count)
        return 0;
    stream_put_record_iov(io, REC_PAGES, 0, 0, 1, REC_FLAG_MANDATORY, iov, 3);
    st->bytes += 8 + 8ULL * b->count + (uint64_t)b->ndata * STREAM_PAGE_SIZE;
    b->count = b->ndata = 0;
    return io->err;
}

int page_batch_add(struct page_batch *b, struct stream_io *io, uint64_t gpa,
                   const uint8_t *hva, bool send_zero_marker, struct page_stats *st)
{
    if (zero_page_check(hva)) {
        st->zero++;
        if (!send_zero_marker)
            return 0;
        b->entries[b->count++] = gpa | PAGE_F_ZERO;
    } else {
        st->normal++;
        b->entries[b->count++] = gpa | PAGE_F_DATA;
        memcpy(b->data[b->ndata++], hva, STREAM_PAGE_SIZE);
    }
    if (b->count == STREAM_PAGES_PER_REC)
        return page_batch_flush(b, io, st);
    return 0;
}

/* Walks the allocated extents of one region; holes read as zero anyway. */
static int pages_save_region(struct guest_mem *mem, const struct mem_region *r,
                             struct page_batch *b, struct stream_io *io, struct page_stats *st)
{
    off_t pos = (off_t)r->offset, end = (off_t)(r->offset + r->size);

    while (pos < end) {
        off_t data = lseek(mem->fd, pos, SEEK_DATA), hole;
        if (data < 0 || data >= end)
            break;
        hole = lseek(mem->fd, data, SEEK_HOLE);
        hole = hole < 0 || hole > end ? end : hole;
        for (off_t off = data & ~(off_t)(STREAM_PAGE_SIZE - 1); off < hole;
             off += STREAM_PAGE_SIZE) {
            uint64_t gpa = r->gpa + (uint64_t)off - r->offset;
            if (page_batch_add(b, io, gpa, mem->hva + off, false, st) < 0)
                return io->err;
        }
        pos = hole;
    }
    return 0;
}

int pages_save_all(struct guest_mem *mem, struct stream_io *io, struct page_stats *st)
{
    static struct page_batch b;

    b.count = b.ndata = 0;
    for (unsigned i = 0; i < mem->nregions; i++)
        if (pages_save_region(mem, &mem->regions[i], &b, io, st) < 0)
            return io->err;
    return page_batch_flush(&b, io, st);
}

int pages_validate(struct guest_mem *mem, const uint8_t *payload, uint64_t len,
                   uint32_t *count, const char **why)
{
    uint32_t ndata = 0;

    if (len < 8)
        return *why = "page record too short", -EBADMSG;
    memcpy(count, payload, 4);
    if (*count == 0 || *count > STREAM_PAGES_PER_REC || len < 8 + 8ULL * *count)
        return *why = "page record has a bad page count", -EBADMSG;
    for (uint32_t i = 0; i < *count; i++) {
        uint64_t e;
        memcpy(&e, payload + 8 + 8ULL * i, 8);
        if ((e & PAGE_F_MASK) != PAGE_F_ZERO && (e & PAGE_F_MASK) != PAGE_F_DATA)
            return *why = "page entry has unknown flags", -EBADMSG;
        if (!mem_ptr(mem, e & ~PAGE_F_MASK, STREAM_PAGE_SIZE))
            return *why = "page entry outside guest RAM", -EBADMSG;
        ndata += (e & PAGE_F_DATA) != 0;
    }
    if (len != 8 + 8ULL * *count + (uint64_t)ndata * STREAM_PAGE_SIZE)
        return *why = "page record length does not match its entries", -EBADMSG;
    return 0;
}

/* Into the memory file with pwrite(): shmem does not zero a page that a
 * write fills completely, and there is no page fault per page as with a
 * memcpy through the mapping. Contiguous pages go in one call. */
int pages_write_run(struct guest_mem *mem, uint64_t gpa, const uint8_t *data,
                           uint64_t len)
{
    uint8_t *dst = mem_ptr(mem, gpa, len);
    off_t off = (off_t)(dst - mem->hva);

    if (mem->fd < 0) {
        memcpy(dst, data, len);
        return 0;
    }
    while (len) {
        ssize_t n = pwrite(mem->fd, data, len, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -errno;
        data += n;
        off += n;
        len -= (uint64_t)n;
    }
    return 0;
}

/* A zero page is a hole: it reads as zero and gives the memory back. */
void pages_zero(struct guest_mem *mem, uint64_t gpa)
{
    uint8_t *dst = mem_ptr(mem, gpa, STREAM_PAGE_SIZE);

    if (mem->fd < 0 || fallocate(mem->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                 dst - mem->hva, STREAM_PAGE_SIZE) < 0)
        memset(dst, 0, STREAM_PAGE_SIZE);
}

int pages_load(struct guest_mem *mem, const uint8_t *payload, uint64_t len, const char **why)
{
    const uint8_t *data;
    uint32_t count;
    int ret = pages_validate(mem, payload, len, &count, why);

    if (ret < 0)
        return ret;
    data = payload + 8 + 8ULL * count;
    for (uint32_t i = 0; i < count && ret == 0;) {
        uint64_t e, gpa, run = 1;
        memcpy(&e, payload + 8 + 8ULL * i, 8);
        gpa = e & ~PAGE_F_MASK;
        if (!(e & PAGE_F_DATA)) {
            pages_zero(mem, gpa);
            i++;
            continue;
        }
        while (i + run < count) {   /* extend over following pages of the same run */
            uint64_t next;
            memcpy(&next, payload + 8 + 8ULL * (i + run), 8);
            if (next != (gpa + run * STREAM_PAGE_SIZE) + PAGE_F_DATA ||
                !mem_ptr(mem, gpa, (run + 1) * STREAM_PAGE_SIZE))
                break;
            run++;
        }
        ret = pages_write_run(mem, gpa, data, run * STREAM_PAGE_SIZE);
        data += run * STREAM_PAGE_SIZE;
        i += (uint32_t)run;
    }
    if (ret < 0)
        *why = "writing guest memory failed";
    return ret;
}
