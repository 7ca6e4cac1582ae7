/* The single state walk: each component has ONE function that visits its
 * state field by field; the walker either saves (copies fields out) or
 * restores (copies fields in), so save and restore cannot drift apart. */
#ifndef FERRY_STATE_WALK_H
#define FERRY_STATE_WALK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum walk_dir { WALK_SAVE, WALK_LOAD };

struct state_walker {
    enum walk_dir dir;
    uint8_t *buf;          /* save: grows; load: the section payload */
    size_t len;            /* bytes in buf */
    size_t cap;            /* save only */
    size_t pos;            /* load only */
    uint32_t version;      /* version of the section being loaded (or saved) */
    int err;               /* sticky: first error wins */
    const char *what;      /* field that failed, for the error message */
};

void walk_init_save(struct state_walker *w, uint32_t version);
void walk_init_load(struct state_walker *w, const uint8_t *buf, size_t len, uint32_t version);
void walk_free(struct state_walker *w);
static inline bool walk_saving(const struct state_walker *w) { return w->dir == WALK_SAVE; }
static inline bool walk_loading(const struct state_walker *w) { return w->dir == WALK_LOAD; }

/* Each returns the sticky error (0 while all is well). Integers are
 * little-endian on the wire. */
int walk_buf(struct state_walker *w, void *p, size_t n, const char *what);
int walk_u8(struct state_walker *w, uint8_t *v, const char *what);
int walk_u16(struct state_walker *w, uint16_t *v, const char *what);
int walk_u32(struct state_walker *w, uint32_t *v, const char *what);
int walk_u64(struct state_walker *w, uint64_t *v, const char *what);
int walk_bool(struct state_walker *w, bool *v, const char *what);
/* A count that bounds an array on load: rejects values above max. */
int walk_count(struct state_walker *w, uint32_t *n, uint32_t max, const char *what);
/* On load: fails unless every payload byte was consumed. */
int walk_finish(struct state_walker *w);
/* Marks the walk failed (e.g. a value out of range); returns the error. */
int walk_fail(struct state_walker *w, int err, const char *what);

#define WALK_FIELD(w, p) walk_buf((w), (p), sizeof(*(p)), #p)

#endif
