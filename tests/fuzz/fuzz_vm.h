/* The fuzz targets' VM: guest RAM the caller provides and the devices that
 * need no KVM (serial, RTC, PCI host bridge), with their state sections. */
#ifndef FERRY_TESTS_FUZZ_VM_H
#define FERRY_TESTS_FUZZ_VM_H

#include "state/state.h"
#include "vm/vm.h"

static inline void fuzz_vm_setup(struct vm *vm, struct pio_bus *bus, void *ram, uint64_t size)
{
    vm->mem = (struct guest_mem){ .fd = -1, .hva = ram, .size = size, .nregions = 1,
                                  .regions = { { 0, size, 0 } } };
    pio_init(bus);
    serial_init(&vm->serial, bus, -1, -1, -1);
    rtc_init(&vm->rtc, bus, size, 1);
    pci_init(&vm->pci, bus);
    vm->sections.n = 0;
    state_register(&vm->sections, &serial_state_ops, 0, &vm->serial);
    state_register(&vm->sections, &rtc_state_ops, 0, &vm->rtc);
    state_register(&vm->sections, &pci_state_ops, 0, &vm->pci.host_bridge);
}

#endif
