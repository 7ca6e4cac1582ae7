#include "state/xpages.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "state/pages.h"

int xpages_ctx_init(struct xpages_ctx *c)
{
    memset(c, 0, sizeof(*c));
    c->raw = malloc(XPAGES_MAX_RAW);
    if (!c->raw || xc_decomp_init(&c->dc) < 0) {
        free(c->raw);
        return -ENOMEM;
    }
    return 0;
}

void xpages_ctx_free(struct xpages_ctx *c)
{
    xc_decomp_free(&c->dc);
    free(c->raw);
    c->raw = NULL;
}

static uint64_t xpages_entry(const uint8_t *p, uint32_t i)
{
    uint64_t e;

    memcpy(&e, p + XPAGES_HDR + 8ULL * i, 8);
    return e;
}

int xpages_parse(const uint8_t *p, uint64_t len, struct xpages_hdr *h, const char **why)
{
    if (len < XPAGES_HDR)
        return *why = "page batch too short", -EBADMSG;
    memcpy(h, p, sizeof(*h));
    if (h->count == 0 || h->count > STREAM_PAGES_PER_REC)
        return *why = "page batch has a bad page count", -EBADMSG;
    if (h->algo != XC_NONE && h->algo != XC_LZ4 && h->algo != XC_ZSTD)
        return *why = "page batch has an unknown compression", -EBADMSG;
    if (h->raw_len > XPAGES_MAX_RAW || (h->algo == XC_NONE && h->body_len != h->raw_len) ||
        h->body_len > h->raw_len)
        return *why = "page batch has bad body lengths", -EBADMSG;
    if (len != XPAGES_HDR + 8ULL * h->count + h->body_len)
        return *why = "page batch length does not match its header", -EBADMSG;
    for (uint32_t i = 0; i < h->count; i++) {
        uint64_t k = xpages_entry(p, i) & PAGE_F_MASK;
        if (k != XPAGE_ZERO && k != XPAGE_DATA && k != XPAGE_DELTA)
            return *why = "page batch entry has unknown flags", -EBADMSG;
    }
    return 0;
}

/* Every entry inside RAM and the body consumed exactly, before any write. */
static int xpages_check(struct guest_mem *mem, const uint8_t *p, const struct xpages_hdr *h,
                        const uint8_t *body, const char **why)
{
    uint64_t pos = 0;

    for (uint32_t i = 0; i < h->count; i++) {
        uint64_t e = xpages_entry(p, i), k = e & PAGE_F_MASK;
        uint32_t n;
        if (!mem_ptr(mem, e & ~PAGE_F_MASK, STREAM_PAGE_SIZE))
            return *why = "page batch entry outside guest RAM", -EBADMSG;
        if (k == XPAGE_DATA) {
            pos += STREAM_PAGE_SIZE;
        } else if (k == XPAGE_DELTA) {
            if (pos + 4 > h->raw_len)
                return *why = "page batch body too short", -EBADMSG;
            memcpy(&n, body + pos, 4);
            if (n > XPAGES_MAX_DELTA_COMPRESSED)
                return *why = "page delta too long", -EBADMSG;
            if (n && pos + 4 + n <= h->raw_len && xc_delta_check(body + pos + 4, n) < 0)
                return *why = "page delta does not decode", -EBADMSG;
            pos += 4 + (uint64_t)n;
        }
        if (pos > h->raw_len)
            return *why = "page batch body too short", -EBADMSG;
    }
    return pos == h->raw_len ? 0 : (*why = "page batch body has trailing bytes", -EBADMSG);
}

/* Runs of full pages go in one pwrite; zero pages become holes; deltas
 * apply onto the copy this side already holds, which equals what the
 * sender's cache holds: a page always travels on one connection, in order. */
static int xpages_write(struct guest_mem *mem, const uint8_t *p, const struct xpages_hdr *h,
                        const uint8_t *body, struct xpages_ctx *c, const char **why)
{
    for (uint32_t i = 0; i < h->count;) {
        uint64_t e = xpages_entry(p, i), gpa = e & ~PAGE_F_MASK, run = 1;
        uint32_t n;
        if ((e & PAGE_F_MASK) == XPAGE_ZERO) {
            pages_zero(mem, gpa);
            c->zero++, i++;
            continue;
        }
        if ((e & PAGE_F_MASK) == XPAGE_DELTA) {
            memcpy(&n, body, 4);
            /* n == 0: dirtied but unchanged, nothing to apply */
            if (n && xc_delta_decode(body + 4, n, mem_ptr(mem, gpa, STREAM_PAGE_SIZE)) < 0)
                return *why = "page delta does not decode", -EBADMSG;
            body += 4 + n;
            c->delta++, i++;
            continue;
        }
        while (i + run < h->count && xpages_entry(p, i + (uint32_t)run) ==
               ((gpa + run * STREAM_PAGE_SIZE) | XPAGE_DATA) &&
               mem_ptr(mem, gpa, (run + 1) * STREAM_PAGE_SIZE))
            run++;
        if (pages_write_run(mem, gpa, body, run * STREAM_PAGE_SIZE) < 0)
            return *why = "writing guest memory failed", -EIO;
        body += run * STREAM_PAGE_SIZE;
        c->data += run;
        i += (uint32_t)run;
    }
    return 0;
}

int xpages_apply(struct guest_mem *mem, const uint8_t *p, uint64_t len,
                 struct xpages_ctx *c, const char **why)
{
    struct xpages_hdr h;
    const uint8_t *body;
    int ret = xpages_parse(p, len, &h, why);

    if (ret < 0)
        return ret;
    if (!xfer_round_ok(c->last_round, h.round))
        return *why = "page batch of an older round (stale copy)", -EBADMSG;
    body = p + XPAGES_HDR + 8ULL * h.count;
    if (h.algo != XC_NONE) {
        if (xc_decompress(&c->dc, h.algo, body, h.body_len, c->raw, h.raw_len) < 0)
            return *why = "page batch does not decompress", -EBADMSG;
        body = c->raw;
    }
    ret = xpages_check(mem, p, &h, body, why);
    if (ret == 0)
        ret = xpages_write(mem, p, &h, body, c, why);
    if (ret == 0)
        c->last_round = h.round;
    return ret;
}
