#include "state/walk.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void walk_init_save(struct state_walker *w, uint32_t version)
{
    memset(w, 0, sizeof(*w));
    w->dir = WALK_SAVE;
    w->version = version;
}

void walk_init_load(struct state_walker *w, const uint8_t *buf, size_t len, uint32_t version)
{
    memset(w, 0, sizeof(*w));
    w->dir = WALK_LOAD;
    w->buf = (uint8_t *)buf;   /* never written while loading */
    w->len = len;
    w->version = version;
}

void walk_free(struct state_walker *w)
{
    if (w->dir == WALK_SAVE)
        free(w->buf);
    w->buf = NULL;
}

int walk_fail(struct state_walker *w, int err, const char *what)
{
    if (!w->err) {
        w->err = err;
        w->what = what;
    }
    return w->err;
}

static int walk_grow(struct state_walker *w, size_t n)
{
    size_t cap = w->cap ? w->cap : 256;
    uint8_t *p;

    while (cap - w->len < n)
        cap *= 2;
    if (cap == w->cap)
        return 0;
    p = realloc(w->buf, cap);
    if (!p)
        return -ENOMEM;
    w->buf = p;
    w->cap = cap;
    return 0;
}

int walk_buf(struct state_walker *w, void *p, size_t n, const char *what)
{
    if (w->err)
        return w->err;
    if (w->dir == WALK_SAVE) {
        if (walk_grow(w, n) < 0)
            return walk_fail(w, -ENOMEM, what);
        memcpy(w->buf + w->len, p, n);
        w->len += n;
        return 0;
    }
    if (n > w->len - w->pos)
        return walk_fail(w, -EBADMSG, what);   /* truncated section */
    memcpy(p, w->buf + w->pos, n);
    w->pos += n;
    return 0;
}

/* x86 is little-endian, so the in-memory bytes are the wire bytes. */
int walk_u8(struct state_walker *w, uint8_t *v, const char *what)
{
    return walk_buf(w, v, 1, what);
}

int walk_u16(struct state_walker *w, uint16_t *v, const char *what)
{
    return walk_buf(w, v, 2, what);
}

int walk_u32(struct state_walker *w, uint32_t *v, const char *what)
{
    return walk_buf(w, v, 4, what);
}

int walk_u64(struct state_walker *w, uint64_t *v, const char *what)
{
    return walk_buf(w, v, 8, what);
}

int walk_bool(struct state_walker *w, bool *v, const char *what)
{
    uint8_t b = *v;

    walk_u8(w, &b, what);
    if (w->err)
        return w->err;
    if (b > 1)
        return walk_fail(w, -EBADMSG, what);
    *v = b;
    return 0;
}

int walk_count(struct state_walker *w, uint32_t *n, uint32_t max, const char *what)
{
    if (walk_u32(w, n, what))
        return w->err;
    if (*n > max)
        return walk_fail(w, -EBADMSG, what);
    return 0;
}

int walk_finish(struct state_walker *w)
{
    if (!w->err && w->dir == WALK_LOAD && w->pos != w->len)
        walk_fail(w, -EBADMSG, "trailing bytes");
    return w->err;
}
