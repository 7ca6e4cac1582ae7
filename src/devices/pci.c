#include "devices/pci.h"

#include <errno.h>
#include <string.h>
#include "state/state.h"

#define PCI_ENABLE   0x80000000U

void pci_dev_init(struct pci_device *dev, uint16_t vendor, uint16_t device,
                  uint32_t class_code, const char *name)
{
    memset(dev, 0, sizeof(*dev));
    memcpy(dev->cfg + 0x00, &vendor, 2);
    memcpy(dev->cfg + 0x02, &device, 2);
    dev->cfg[0x08] = 0x01;                       /* revision */
    dev->cfg[0x09] = (uint8_t)class_code;
    dev->cfg[0x0a] = (uint8_t)(class_code >> 8);
    dev->cfg[0x0b] = (uint8_t)(class_code >> 16);
    dev->wmask[0x04] = 0x07;                     /* command: I/O, memory, bus master */
    dev->wmask[0x05] = 0x04;                     /* command: INTx disable */
    dev->wmask[0x0c] = 0xff;                     /* cache line size */
    dev->wmask[0x0d] = 0xff;                     /* latency timer */
    dev->wmask[0x3c] = 0xff;                     /* interrupt line */
    dev->name = name;
}

/* Only bus 0, function 0 exists; everything else reads as absent. */
static struct pci_device *pci_lookup(struct pci_bus *pci, uint32_t addr)
{
    unsigned bus = (addr >> 16) & 0xff, slot = (addr >> 11) & 0x1f, fn = (addr >> 8) & 7;

    if (!(addr & PCI_ENABLE) || bus != 0 || fn != 0)
        return NULL;
    return pci->slots[slot];
}

uint32_t pci_cfg_read(struct pci_bus *pci, uint32_t addr, unsigned off, unsigned size)
{
    struct pci_device *dev = pci_lookup(pci, addr);
    unsigned reg = (addr & 0xfc) + off;
    uint32_t v = 0;

    if (!dev || reg + size > PCI_CFG_SIZE)
        return 0xffffffffU >> (32 - 8 * size);
    memcpy(&v, dev->cfg + reg, size);
    return v;
}

void pci_cfg_write(struct pci_bus *pci, uint32_t addr, unsigned off, unsigned size,
                   uint32_t value)
{
    struct pci_device *dev = pci_lookup(pci, addr);
    unsigned reg = (addr & 0xfc) + off;

    if (!dev || reg + size > PCI_CFG_SIZE)
        return;
    for (unsigned i = 0; i < size; i++) {
        uint8_t m = dev->wmask[reg + i], b = (uint8_t)(value >> (8 * i));
        dev->cfg[reg + i] = (uint8_t)((dev->cfg[reg + i] & ~m) | (b & m));
    }
    if (dev->on_write)
        dev->on_write(dev, reg, size);
}

/* 0xcf8 is claimed one byte wide: dword accesses start there, and byte
 * accesses to 0xcf9 belong to the reset control register. */
static void pci_addr_read(void *opaque, uint16_t off, uint8_t *data, unsigned size)
{
    struct pci_bus *pci = opaque;

    pthread_mutex_lock(&pci->lock);
    pio_put(data, size, size == 4 ? pci->addr : 0xffffffffU);
    pthread_mutex_unlock(&pci->lock);
}

static void pci_addr_write(void *opaque, uint16_t off, const uint8_t *data, unsigned size)
{
    struct pci_bus *pci = opaque;

    if (size != 4)
        return;
    pthread_mutex_lock(&pci->lock);
    pci->addr = pio_get(data, 4) & 0x80fffffcU;
    pthread_mutex_unlock(&pci->lock);
}

static void pci_data_read(void *opaque, uint16_t off, uint8_t *data, unsigned size)
{
    struct pci_bus *pci = opaque;

    pthread_mutex_lock(&pci->lock);
    pio_put(data, size, pci_cfg_read(pci, pci->addr, off, size));
    pthread_mutex_unlock(&pci->lock);
}

static void pci_data_write(void *opaque, uint16_t off, const uint8_t *data, unsigned size)
{
    struct pci_bus *pci = opaque;

    pthread_mutex_lock(&pci->lock);
    pci_cfg_write(pci, pci->addr, off, size, pio_get(data, size));
    pthread_mutex_unlock(&pci->lock);
}

static const struct pio_ops pci_addr_ops = { .read = pci_addr_read, .write = pci_addr_write };
static const struct pio_ops pci_data_ops = { .read = pci_data_read, .write = pci_data_write };

int pci_add(struct pci_bus *pci, unsigned slot, struct pci_device *dev)
{
    if (slot >= PCI_SLOTS || pci->slots[slot])
        return -EBUSY;
    pci->slots[slot] = dev;
    return 0;
}

int pci_init(struct pci_bus *pci, struct pio_bus *bus)
{
    memset(pci, 0, sizeof(*pci));
    pthread_mutex_init(&pci->lock, NULL);
    /* Intel's ID for a generic host bridge, as Cloud Hypervisor uses: no quirks. */
    pci_dev_init(&pci->host_bridge, 0x8086, 0x0d57, 0x060000, "host-bridge");
    pci_add(pci, 0, &pci->host_bridge);
    if (pio_register(bus, PCI_CONFIG_ADDR, 1, &pci_addr_ops, pci, "pci-addr") < 0)
        return -EBUSY;
    return pio_register(bus, PCI_CONFIG_DATA, 4, &pci_data_ops, pci, "pci-data");
}

/* Only the bytes the guest can change travel; read-only bytes (IDs, class)
 * must already match or the device is not the same device. */
static int pci_state_walk(struct state_walker *w, void *obj)
{
    struct pci_device *dev = obj;
    uint8_t cfg[PCI_CFG_SIZE];

    memcpy(cfg, dev->cfg, sizeof(cfg));
    walk_buf(w, cfg, sizeof(cfg), "config space");
    if (walk_loading(w) && !w->err) {
        for (unsigned i = 0; i < PCI_CFG_SIZE; i++)
            if ((cfg[i] ^ dev->cfg[i]) & ~dev->wmask[i])
                return walk_fail(w, -EINVAL, "read-only config bytes differ");
        memcpy(dev->cfg, cfg, sizeof(cfg));
    }
    return w->err;
}

const struct state_ops pci_state_ops = {
    .name = "pci", .id = SECTION_PCI, .version = 1, .min_version = 1,
    .walk = pci_state_walk,
};
