#include "codec/delta.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* ---- encoding ----
 * A sequence of runs: varint skip (unchanged bytes before the run; 0 only for
 * the first run), varint n (>= 1), then n bytes of old XOR new. Bytes after
 * the last run are unchanged. Varints are LEB128, at most 2 bytes, minimal. */

#define PAGE_WORDS (CODEC_PAGE_SIZE / 8)

/* Byte positions come from ctz/clz of little-endian words. */
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "delta.c assumes a little-endian host"
#endif

static inline uint64_t delta_word(const uint8_t *old, const uint8_t *new_page, size_t w)
{
    uint64_t a, b;

    memcpy(&a, old + 8 * w, 8);
    memcpy(&b, new_page + 8 * w, 8);
    return a ^ b;
}

/* dst = a ^ b, 8 bytes at a time; dst may be a. */
static inline void xor_bytes(uint8_t *dst, const uint8_t *a, const uint8_t *b, size_t n)
{
    size_t k = 0;

    for (; k + 8 <= n; k += 8) {
        uint64_t x, y;

        memcpy(&x, a + k, 8);
        memcpy(&y, b + k, 8);
        x ^= y;
        memcpy(dst + k, &x, 8);
    }
    for (; k < n; k++)
        dst[k] = a[k] ^ b[k];
}

static inline size_t varint_len(size_t v)
{
    return v < 128 ? 1 : 2;
}

static inline size_t varint_put(uint8_t *out, size_t v)
{
    if (v < 128) {
        out[0] = (uint8_t)v;
        return 1;
    }
    out[0] = (uint8_t)(v | 0x80);
    out[1] = (uint8_t)(v >> 7);
    return 2;
}

/* Word-level runs: a run starts at the first differing byte of a differing
 * word and ends at the last differing byte before the next equal word. So
 * runs are at least 8 equal bytes apart, and a run carries at most a few
 * equal bytes inside it, which is cheaper than the 2+ bytes of a new run. */
ssize_t delta_encode(const uint8_t *old, const uint8_t *new_page, uint8_t *out, size_t max)
{
    size_t o = 0, prev_end = 0, w = 0;

    for (;;) {
        uint64_t x = 0;
        size_t start, end, n;

        while (w < PAGE_WORDS && !(x = delta_word(old, new_page, w)))
            w++;
        if (w == PAGE_WORDS)
            break;
        start = 8 * w + (size_t)__builtin_ctzll(x) / 8;
        while (w + 1 < PAGE_WORDS && (x = delta_word(old, new_page, w + 1))) {
            w++;
            /* Two varint bytes and at least the bytes up to word w: give up
             * early on a dense page rather than scanning it to the end. */
            if (o + 2 + 8 * w + 1 - start > max)
                return -ENOSPC;
        }
        x = delta_word(old, new_page, w);
        end = 8 * w + 8 - (size_t)__builtin_clzll(x) / 8;
        n = end - start;
        if (o + varint_len(start - prev_end) + varint_len(n) + n > max)
            return -ENOSPC;
        o += varint_put(out + o, start - prev_end);
        o += varint_put(out + o, n);
        xor_bytes(out + o, old + start, new_page + start, n);
        o += n;
        prev_end = end;
        w++;
    }
    return (ssize_t)o;
}

/* Reads a minimal varint of at most 2 bytes; -EINVAL otherwise. */
static int varint_get(const uint8_t *in, size_t len, size_t *i, size_t *v)
{
    if (*i >= len)
        return -EINVAL;
    if (!(in[*i] & 0x80)) {
        *v = in[(*i)++];
        return 0;
    }
    if (len - *i < 2 || (in[*i + 1] & 0x80) || !in[*i + 1])
        return -EINVAL;
    *v = (size_t)(in[*i] & 0x7f) | ((size_t)in[*i + 1] << 7);
    *i += 2;
    return 0;
}

/* Checks an encoding and, given a page, applies it: one walk for both, so a
 * reader can check every delta of a batch before it writes any. */
static int delta_walk(const uint8_t *in, size_t len, uint8_t *page)
{
    size_t i = 0, pos = 0;

    if (!len)
        return -EINVAL;   /* an unchanged page is never sent as a delta */
    while (i < len) {
        size_t skip, n;

        if (varint_get(in, len, &i, &skip) || varint_get(in, len, &i, &n))
            return -EINVAL;
        if ((pos && !skip) || !n || skip > CODEC_PAGE_SIZE - pos)
            return -EINVAL;
        pos += skip;
        if (n > CODEC_PAGE_SIZE - pos || n > len - i)
            return -EINVAL;
        if (page)
            xor_bytes(page + pos, page + pos, in + i, n);
        pos += n;
        i += n;
    }
    return 0;
}

int delta_check(const uint8_t *in, size_t len)
{
    return delta_walk(in, len, NULL);
}

int delta_decode(const uint8_t *in, size_t len, uint8_t *page)
{
    return delta_walk(in, len, page);
}

/* ---- cache ----
 * Page copies live in slots; an open-addressing table (linear probing,
 * backward-shift deletion) maps gfn -> slot; CLOCK picks the victim. */

#define SLOT_NONE UINT32_MAX

struct delta_slot {
    uint64_t gfn;
    bool used;
    bool ref;
};

struct delta_cache {
    uint8_t *data;              /* capacity pages */
    struct delta_slot *slots;
    uint32_t *table;            /* slot index or SLOT_NONE */
    uint32_t *free_list;        /* stack of unused slots */
    uint32_t nfree;
    uint32_t capacity;
    uint32_t hand;              /* CLOCK hand */
    size_t mask;                /* table size - 1 */
    struct delta_cache_stats st;
};

static inline size_t cache_hash(const struct delta_cache *c, uint64_t gfn)
{
    return (size_t)((gfn * 0x9E3779B97F4A7C15ULL) >> 17) & c->mask;
}

struct delta_cache *delta_cache_new(size_t bytes)
{
    struct delta_cache *c;
    size_t cap = bytes / CODEC_PAGE_SIZE, tsize = 4;

    if (!cap || cap >= SLOT_NONE / 2) {
        errno = EINVAL;
        return NULL;
    }
    while (tsize < 2 * cap)
        tsize *= 2;
    c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->capacity = (uint32_t)cap;
    c->mask = tsize - 1;
    c->data = aligned_alloc(64, cap * CODEC_PAGE_SIZE);
    c->slots = calloc(cap, sizeof(*c->slots));
    c->table = malloc(tsize * sizeof(*c->table));
    c->free_list = malloc(cap * sizeof(*c->free_list));
    if (!c->data || !c->slots || !c->table || !c->free_list) {
        delta_cache_free(c);
        errno = ENOMEM;
        return NULL;
    }
    memset(c->table, 0xff, tsize * sizeof(*c->table));
    for (uint32_t i = 0; i < cap; i++)
        c->free_list[i] = (uint32_t)cap - 1 - i;
    c->nfree = (uint32_t)cap;
    return c;
}

void delta_cache_free(struct delta_cache *c)
{
    if (!c)
        return;
    free(c->data);
    free(c->slots);
    free(c->table);
    free(c->free_list);
    free(c);
}

/* Table index of gfn, or of the empty bucket where it would go. */
static size_t cache_find(const struct delta_cache *c, uint64_t gfn)
{
    size_t i = cache_hash(c, gfn);

    while (c->table[i] != SLOT_NONE && c->slots[c->table[i]].gfn != gfn)
        i = (i + 1) & c->mask;
    return i;
}

/* Empties bucket i and shifts later members of its cluster back, so lookups
 * never need tombstones. */
static void cache_unlink(struct delta_cache *c, size_t i)
{
    size_t j = i;

    c->table[i] = SLOT_NONE;
    for (;;) {
        size_t home;

        j = (j + 1) & c->mask;
        if (c->table[j] == SLOT_NONE)
            return;
        home = cache_hash(c, c->slots[c->table[j]].gfn);
        /* Move j into the hole at i unless its home lies cyclically in (i, j]. */
        if (((j - home) & c->mask) >= ((j - i) & c->mask)) {
            c->table[i] = c->table[j];
            c->table[j] = SLOT_NONE;
            i = j;
        }
    }
}

static void cache_release(struct delta_cache *c, uint32_t slot)
{
    cache_unlink(c, cache_find(c, c->slots[slot].gfn));
    c->slots[slot].used = false;
    c->st.entries--;
}

static uint32_t cache_victim(struct delta_cache *c)
{
    for (;;) {
        struct delta_slot *s = &c->slots[c->hand];
        uint32_t v = c->hand;

        c->hand = (c->hand + 1) % c->capacity;
        if (s->used && s->ref) {
            s->ref = false;
            continue;
        }
        return v;
    }
}

static uint32_t cache_take_slot(struct delta_cache *c)
{
    uint32_t slot;

    if (c->nfree)
        return c->free_list[--c->nfree];
    slot = cache_victim(c);
    cache_release(c, slot);
    c->st.evictions++;
    return slot;
}

const uint8_t *delta_cache_get(struct delta_cache *c, uint64_t gfn)
{
    uint32_t slot = c->table[cache_find(c, gfn)];

    if (slot == SLOT_NONE) {
        c->st.misses++;
        return NULL;
    }
    c->st.hits++;
    c->slots[slot].ref = true;
    return c->data + (size_t)slot * CODEC_PAGE_SIZE;
}

int delta_cache_put(struct delta_cache *c, uint64_t gfn, const uint8_t *page)
{
    size_t i = cache_find(c, gfn);
    uint32_t slot = c->table[i];

    if (slot == SLOT_NONE) {
        slot = cache_take_slot(c);
        i = cache_find(c, gfn);   /* eviction may have moved the table */
        c->table[i] = slot;
        c->slots[slot].gfn = gfn;
        c->slots[slot].used = true;
        c->st.entries++;
    }
    c->slots[slot].ref = true;
    memcpy(c->data + (size_t)slot * CODEC_PAGE_SIZE, page, CODEC_PAGE_SIZE);
    return 0;
}

void delta_cache_forget(struct delta_cache *c, uint64_t gfn)
{
    uint32_t slot = c->table[cache_find(c, gfn)];

    if (slot == SLOT_NONE)
        return;
    cache_release(c, slot);
    c->free_list[c->nfree++] = slot;
}

void delta_cache_stats(const struct delta_cache *c, struct delta_cache_stats *s)
{
    *s = c->st;
}

size_t delta_cache_capacity(const struct delta_cache *c)
{
    return c->capacity;
}
