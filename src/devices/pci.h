/* PCI bus 0 behind configuration mechanism 1 (ports 0xcf8/0xcfc), with the
 * host bridge at 00:00.0. Devices (virtio-pci later) plug into slots. */
#ifndef FERRY_DEVICES_PCI_H
#define FERRY_DEVICES_PCI_H

#include <pthread.h>
#include <stdint.h>

#include "devices/pio.h"

#define PCI_CONFIG_ADDR 0xcf8
#define PCI_CONFIG_DATA 0xcfc
#define PCI_SLOTS       32
#define PCI_CFG_SIZE    256

struct pci_device {
    uint8_t cfg[PCI_CFG_SIZE];
    uint8_t wmask[PCI_CFG_SIZE];   /* bits the guest may change */
    const char *name;
    /* Optional: called after a guest config write, with the bus lock held
     * (virtio-pci follows BAR moves and MSI-X enable/mask here). */
    void (*on_write)(struct pci_device *dev, unsigned reg, unsigned size);
};

struct pci_bus {
    pthread_mutex_t lock;
    uint32_t addr;                 /* last value written to 0xcf8 */
    struct pci_device *slots[PCI_SLOTS];
    struct pci_device host_bridge;
};

int pci_init(struct pci_bus *pci, struct pio_bus *bus);
int pci_add(struct pci_bus *pci, unsigned slot, struct pci_device *dev);
/* Config space access by bus/device/function/register (pure; unit-tested). */
uint32_t pci_cfg_read(struct pci_bus *pci, uint32_t addr, unsigned off, unsigned size);
void pci_cfg_write(struct pci_bus *pci, uint32_t addr, unsigned off, unsigned size,
                   uint32_t value);
void pci_dev_init(struct pci_device *dev, uint16_t vendor, uint16_t device,
                  uint32_t class_code, const char *name);

struct state_ops;
extern const struct state_ops pci_state_ops;

#endif
