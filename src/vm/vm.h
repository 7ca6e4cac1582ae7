/* VM lifecycle: create, run, pause, resume, stop. Owns the KVM VM, guest
 * memory, vCPUs and devices. */
#ifndef FERRY_VM_VM_H
#define FERRY_VM_VM_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "arch/x86/boot.h"
#include "arch/x86/cpuid.h"
#include "devices/acpi_pm.h"
#include "devices/debugcon.h"
#include "devices/pci.h"
#include "devices/pio.h"
#include "devices/rtc.h"
#include "devices/serial.h"
#include "vm/memory.h"

#define VM_MAX_VCPUS 64

enum vm_state { VM_CREATED, VM_RUNNING, VM_PAUSED, VM_SHUTDOWN };

struct vm_config {
    uint64_t mem_bytes;
    unsigned ncpus;
    const char *kernel;
    const char *initrd;
    const char *cmdline;
    const char *api_socket;
    const char *console;      /* "stdio", "file:PATH" or "none" */
    const char *debugcon;     /* path or NULL */
};

struct vm;

struct vcpu {
    struct vm *vm;
    unsigned id;
    int fd;
    struct kvm_run *run;
    pthread_t thread;
    bool thread_started;
    bool paused;              /* parked in vcpu_park(), under vm->lock */
    uint64_t exits;
    uint64_t io_exits;
};

struct vm {
    int kvm_fd;
    int vm_fd;
    size_t run_size;
    struct guest_mem mem;
    struct cpuid_table cpuid;  /* supported set, unpatched */
    unsigned ncpus;
    struct vcpu vcpus[VM_MAX_VCPUS];
    struct boot_entry entry;

    struct pio_bus pio;
    struct serial serial;
    struct rtc rtc;
    struct pci_bus pci;
    struct acpi_pm pm;
    struct debugcon debugcon;
    int console_fd;           /* owned output fd, -1 for stdout or none */

    pthread_mutex_t lock;
    pthread_cond_t cond;
    enum vm_state state;
    bool pause_req;
    bool stop_req;
    unsigned npaused;
    int exit_code;
    char exit_reason[128];
    int stop_efd;             /* eventfd: wakes the main thread to stop */
    uint64_t start_ns;
    uint64_t paused_total_ns;
    uint64_t paused_since_ns;
    const struct vm_config *cfg;
};

int vm_create(struct vm *vm, const struct vm_config *cfg);
int vm_start(struct vm *vm);
/* Blocks until the VM stops (guest poweroff, API, signal, error); returns the
 * process exit code. */
int vm_wait(struct vm *vm);
void vm_destroy(struct vm *vm);
int vm_pause(struct vm *vm);
int vm_resume(struct vm *vm);
/* Asks the VM to stop with an exit code; safe from any thread. */
void vm_request_stop(struct vm *vm, int code, const char *reason);
const char *vm_state_name(enum vm_state s);
uint64_t vm_uptime_ns(struct vm *vm);

/* vcpu.c */
int vcpu_create(struct vm *vm, unsigned id);
int vcpu_start(struct vcpu *vcpu);
void vcpu_kick(struct vcpu *vcpu);
void vcpu_destroy(struct vcpu *vcpu);
int vcpu_signals_init(void);

#endif
