/* virtio-pci transport (virtio 1.x modern only). Contract with the guest
 * drivers: /work/notes/virtio-contract.md and docs/VIRTIO.md.
 *
 * How a device plugs in (see virtio_rng.c for the smallest example):
 *   1. embed a struct virtio_dev; fill ops, type, class_code, nqueues,
 *      queue_max, features (device bits; VIRTIO_F_VERSION_1 is added by the
 *      transport), config/config_len (device config space, read by the
 *      transport under vdev->lock), name, priv;
 *   2. call virtio_dev_register(&vm->virtio, vdev) while the VM is created
 *      (vm_setup_devices, in contract order: disks, nets, rng);
 *   3. the transport gives it a PCI slot, BAR0, MSI-X, an ioeventfd per
 *      queue and ONE worker thread per device. All ops except cfg_write run
 *      on that worker thread, which is the only one that pops/pushes queues;
 *      blocking there (disk I/O) never stalls a vCPU;
 *   4. after pushing used buffers, call virtio_dev_notify(vdev, q) to
 *      interrupt the guest (MSI-X through irqfd, or ISR + INTx);
 *   5. on a malformed request call virtio_dev_broken(vdev, why): the device
 *      stops and the guest sees DEVICE_NEEDS_RESET.
 * Extra fds (a tap) are watched by the same worker: virtio_dev_watch_fd().
 *
 * State: the transport writes ONE section per device (SECTION_VIRTIO,
 * instance = PCI slot) holding the transport state and then whatever
 * ops->walk adds. vm_pause() quiesces every device (the worker finishes the
 * request in hand and parks; nothing is taken from the rings while parked),
 * so a saved state has no request in flight; vm_resume() (or the first
 * start after a restore) rebuilds routes/irqfds/ioeventfds and kicks every
 * enabled queue once. */
#ifndef FERRY_VIRTIO_VIRTIO_H
#define FERRY_VIRTIO_VIRTIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "devices/pci.h"
#include "state/walk.h"
#include "virtio/virtqueue.h"
#include "vm/memory.h"

#define VIRTIO_MAX_DEVICES 16
#define VIRTIO_MAX_QUEUES  8
#define VIRTIO_MSIX_VECTORS 8
#define VIRTIO_MAX_WATCH   4
#define VIRTIO_NO_VECTOR   0xffff

/* Device types (virtio spec 5.x); PCI device id = 0x1040 + type. */
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLK 2
#define VIRTIO_ID_RNG 4

/* device_status bits */
#define VIRTIO_STATUS_ACK          0x01
#define VIRTIO_STATUS_DRIVER       0x02
#define VIRTIO_STATUS_DRIVER_OK    0x04
#define VIRTIO_STATUS_FEATURES_OK  0x08
#define VIRTIO_STATUS_NEEDS_RESET  0x40
#define VIRTIO_STATUS_FAILED       0x80

#define VIRTIO_F_VERSION_1 32

/* BAR0 layout (the guest finds it through the capability list). */
#define VIRTIO_BAR_SIZE        0x4000
#define VIRTIO_BAR_COMMON      0x0000
#define VIRTIO_BAR_ISR         0x1000
#define VIRTIO_BAR_DEVCFG      0x2000
#define VIRTIO_BAR_NOTIFY      0x3000
#define VIRTIO_BAR_MSIX_TABLE  0x3800
#define VIRTIO_BAR_MSIX_PBA    0x3c00
#define VIRTIO_NOTIFY_MULT     4
#define VIRTIO_BAR_BASE        0xc0000000ULL   /* PCI hole: above RAM, below the IOAPIC */

struct virtio_dev;

struct virtio_dev_ops {
    /* A queue was notified (or kicked after resume/restore). Worker thread. */
    void (*queue_notify)(struct virtio_dev *vdev, unsigned q);
    /* Optional: the driver set DRIVER_OK (also after a restore of a running
     * device); vdev->driver_features is final. Worker thread. */
    int (*activate)(struct virtio_dev *vdev);
    /* Optional: the guest reset the device; queues are already reset and the
     * worker is parked. Drop any device-side state. */
    void (*reset)(struct virtio_dev *vdev);
    /* Optional: the guest wrote device config bytes; vCPU thread, vdev->lock held. */
    void (*cfg_write)(struct virtio_dev *vdev, uint32_t off, const void *data, unsigned len);
    /* Optional: device-specific state appended to the transport's section. */
    int (*walk)(struct state_walker *w, struct virtio_dev *vdev);
    /* Optional: fields for GET /v1/vm's device entry (a json_t object). */
    void (*describe)(struct virtio_dev *vdev, void *json_obj);
    /* Optional: the VM stops (worker parked) / is about to run (before the
     * queues are kicked): a device leaves or joins its outside world, e.g.
     * a tap shared with a migration peer on the same host. */
    void (*pause)(struct virtio_dev *vdev);
    void (*resume)(struct virtio_dev *vdev);
};

typedef void (*virtio_watch_fn)(struct virtio_dev *vdev, int fd, void *arg);

struct msix_entry {
    uint64_t addr;
    uint32_t data;
    uint32_t ctrl;                 /* bit 0: masked */
};

struct virtio_bus;

struct virtio_dev {
    /* Filled by the device before virtio_dev_register(). */
    const struct virtio_dev_ops *ops;
    uint16_t type;                 /* VIRTIO_ID_* */
    uint32_t class_code;
    unsigned nqueues;
    uint16_t queue_max;
    uint64_t features;             /* device feature bits offered */
    void *config;                  /* device config space (little-endian) */
    uint32_t config_len;
    const char *name;              /* "blk0", "net0", "rng" */
    void *priv;

    /* Owned by the transport. */
    struct virtio_bus *bus;
    struct pci_device pci;
    unsigned slot;
    pthread_mutex_t lock;
    uint8_t status;
    uint8_t isr;
    uint8_t config_generation;
    bool broken;
    uint32_t dfselect, gfselect;
    uint64_t driver_features;
    uint16_t queue_select;
    uint16_t msix_config;
    struct virtqueue vq[VIRTIO_MAX_QUEUES];
    struct msix_entry msix[VIRTIO_MSIX_VECTORS];
    uint64_t msix_pending;         /* PBA bits */
    uint64_t bar_addr;             /* where BAR0 is mapped now (0: not decoding) */
    uint32_t gsi[VIRTIO_MSIX_VECTORS];
    int irqfd[VIRTIO_MSIX_VECTORS];
    bool irqfd_on[VIRTIO_MSIX_VECTORS];
    int kick_fd[VIRTIO_MAX_QUEUES];
    bool ioeventfd_on[VIRTIO_MAX_QUEUES];
    unsigned intx_gsi;
    /* Worker thread. */
    pthread_t thread;
    bool thread_started;
    int epfd, ctl_fd;
    pthread_cond_t cond;
    unsigned pause_req;            /* park requests (VM pause, reset) */
    bool parked, stop_req, kick_all, activate_pending;
    unsigned nwatch;
    struct { int fd; virtio_watch_fn fn; void *arg; } watch[VIRTIO_MAX_WATCH];
    uint64_t notifies, interrupts;
};

/* All virtio devices of one VM (embedded in struct vm). */
struct virtio_bus {
    int vm_fd;                     /* -1 in unit tests: no KVM calls */
    struct guest_mem *mem;
    struct pci_bus *pci;
    unsigned n;
    struct virtio_dev *dev[VIRTIO_MAX_DEVICES];
    pthread_mutex_t route_lock;    /* the GSI routing table is VM-wide */
    uint32_t next_gsi;
    bool paused;
};

void virtio_bus_init(struct virtio_bus *bus, int vm_fd, struct guest_mem *mem,
                     struct pci_bus *pci);
/* Plugs vdev into the next free PCI slot with its BAR0 assigned. */
int virtio_dev_register(struct virtio_bus *bus, struct virtio_dev *vdev);
/* Starts every device's worker (parked if the VM starts paused). */
int virtio_bus_start(struct virtio_bus *bus, bool paused);
/* Quiesces every device: workers finish the request in hand and park. */
void virtio_bus_pause(struct virtio_bus *bus);
/* Re-arms interrupts/notifications from the current state and kicks queues. */
void virtio_bus_resume(struct virtio_bus *bus);
void virtio_bus_stop(struct virtio_bus *bus);
/* KVM_EXIT_MMIO: true if the address belonged to a virtio BAR. */
bool virtio_mmio(struct virtio_bus *bus, uint64_t addr, uint8_t *data, unsigned len,
                 bool write);

/* Device side helpers. */
void virtio_dev_notify(struct virtio_dev *vdev, unsigned q);
void virtio_dev_config_changed(struct virtio_dev *vdev);
void virtio_dev_broken(struct virtio_dev *vdev, const char *why);
bool virtio_dev_has_feature(const struct virtio_dev *vdev, unsigned bit);
/* edge: fn runs once per new readiness (EPOLLET), for a device that stops
 * reading while the guest has no buffers and resumes on a queue notify. */
int virtio_dev_watch_fd(struct virtio_dev *vdev, int fd, bool edge, virtio_watch_fn fn,
                        void *arg);
/* True when the worker should stop taking requests (pause or broken):
 * device loops check it between requests so a pause never waits long. */
bool virtio_dev_should_stop(struct virtio_dev *vdev);

/* Fills a json_t object for GET /v1/vm: type, pci, name, status, then the
 * device's own fields (ops->describe). */
void virtio_dev_describe(struct virtio_dev *vdev, void *json_obj);

/* The state section (one per device, instance = PCI slot). */
struct state_ops;
extern const struct state_ops virtio_state_ops;

#endif
