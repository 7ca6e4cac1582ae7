#include "state/state.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *const section_names[] = {
    [SECTION_VCPU] = "vcpu", [SECTION_IRQCHIP] = "irqchip", [SECTION_PIT] = "pit",
    [SECTION_SERIAL] = "serial", [SECTION_RTC] = "rtc", [SECTION_PCI] = "pci",
    [SECTION_ACPI_PM] = "acpi_pm", [SECTION_CLOCK] = "clock",
    [SECTION_VIRTIO] = "virtio",
};

const char *state_section_name(uint32_t id)
{
    if (id < sizeof(section_names) / sizeof(section_names[0]) && section_names[id])
        return section_names[id];
    return "unknown";
}

int state_register(struct state_registry *r, const struct state_ops *ops,
                   uint32_t instance, void *obj)
{
    if (r->n >= STATE_MAX_ENTRIES)
        return -ENOSPC;
    r->e[r->n++] = (struct state_entry){ .ops = ops, .instance = instance, .obj = obj };
    return 0;
}

static int state_save_one(struct state_entry *e, struct stream_io *io, char *err, size_t len)
{
    struct state_walker w;
    int ret;

    walk_init_save(&w, e->ops->version);
    ret = e->ops->walk(&w, e->obj);
    if (ret < 0 || w.err < 0) {
        ret = ret < 0 ? ret : w.err;
        snprintf(err, len, "section %s/%u: saving %s: %s", e->ops->name, e->instance,
                 w.what ? w.what : "state", strerror(-ret));
    } else {
        ret = stream_put_record(io, REC_SECTION, e->ops->id, e->instance, e->ops->version,
                                REC_FLAG_MANDATORY, w.buf, w.len);
        if (ret < 0)
            snprintf(err, len, "section %s/%u: writing: %s", e->ops->name, e->instance,
                     strerror(-ret));
    }
    walk_free(&w);
    return ret;
}

int state_save_sections(struct state_registry *r, struct stream_io *io, char *err, size_t len)
{
    for (unsigned i = 0; i < r->n; i++) {
        int ret = state_save_one(&r->e[i], io, err, len);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static struct state_entry *state_find(struct state_registry *r, uint32_t id, uint32_t inst)
{
    for (unsigned i = 0; i < r->n; i++)
        if (r->e[i].ops->id == id && r->e[i].instance == inst)
            return &r->e[i];
    return NULL;
}

static int state_load_entry(struct state_entry *e, const struct stream_record *rec,
                            const uint8_t *payload, char *err, size_t len)
{
    struct state_walker w;
    int ret;

    walk_init_load(&w, payload, rec->length, rec->version);
    ret = e->ops->walk(&w, e->obj);
    if (ret == 0)
        ret = walk_finish(&w);
    if (ret < 0)
        snprintf(err, len, "section %s/%u (version %u): %s%s%s", e->ops->name, e->instance,
                 rec->version, w.what ? w.what : "", w.what ? ": " : "",
                 ret == -EBADMSG ? "malformed or truncated" : strerror(-ret));
    else
        e->loaded = true;
    return ret;
}

int state_load_section(struct state_registry *r, const struct stream_record *rec,
                       const uint8_t *payload, char *err, size_t len)
{
    struct state_entry *e = state_find(r, rec->section, rec->instance);

    if (!e) {
        if (!(rec->flags & REC_FLAG_MANDATORY))
            return 0;   /* optional state of a newer ferry: skip it */
        snprintf(err, len, "unknown mandatory section %s (id %u) instance %u",
                 state_section_name(rec->section), rec->section, rec->instance);
        return -EPROTO;
    }
    if (e->loaded) {
        snprintf(err, len, "section %s/%u appears twice", e->ops->name, e->instance);
        return -EBADMSG;
    }
    if (rec->version < e->ops->min_version || rec->version > e->ops->version) {
        snprintf(err, len, "section %s/%u has version %u; this ferry reads %u to %u",
                 e->ops->name, e->instance, rec->version, e->ops->min_version,
                 e->ops->version);
        return -EPROTO;
    }
    return state_load_entry(e, rec, payload, err, len);
}

int state_check_complete(struct state_registry *r, char *err, size_t len)
{
    for (unsigned i = 0; i < r->n; i++) {
        if (!r->e[i].loaded) {
            snprintf(err, len, "section %s/%u is missing from the stream",
                     r->e[i].ops->name, r->e[i].instance);
            return -EBADMSG;
        }
    }
    return 0;
}
