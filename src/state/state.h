/* Section registry: components register their one walk function with an
 * object; saving walks them all into records, loading routes each record
 * back to its component. */
#ifndef FERRY_STATE_STATE_H
#define FERRY_STATE_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "state/stream.h"
#include "state/walk.h"

#define STATE_MAX_ENTRIES 128

/* Section ids on the wire: never reuse a number. */
enum state_section_id {
    SECTION_VCPU = 1,
    SECTION_IRQCHIP = 2,
    SECTION_PIT = 3,
    SECTION_SERIAL = 4,
    SECTION_RTC = 5,
    SECTION_PCI = 6,
    SECTION_ACPI_PM = 7,
    SECTION_CLOCK = 8,
    SECTION_VIRTIO = 16,     /* one per virtio-pci device, instance = PCI slot */
};

struct state_ops {
    const char *name;
    uint32_t id;
    uint32_t version;        /* written by this ferry */
    uint32_t min_version;    /* oldest version this ferry still reads */
    int (*walk)(struct state_walker *w, void *obj);
};

struct state_entry {
    const struct state_ops *ops;
    uint32_t instance;
    void *obj;
    bool loaded;
};

struct state_registry {
    unsigned n;
    struct state_entry e[STATE_MAX_ENTRIES];
};

int state_register(struct state_registry *r, const struct state_ops *ops,
                   uint32_t instance, void *obj);
/* Writes every registered section as a record. */
int state_save_sections(struct state_registry *r, struct stream_io *io,
                        char *err, size_t errlen);
/* Applies one section record; err names the section on failure. */
int state_load_section(struct state_registry *r, const struct stream_record *rec,
                       const uint8_t *payload, char *err, size_t errlen);
/* After the end marker: every registered section must have been loaded. */
int state_check_complete(struct state_registry *r, char *err, size_t errlen);
const char *state_section_name(uint32_t id);

#endif
