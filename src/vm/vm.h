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
#include "net/tap.h"
#include "state/state.h"
#include "vm/memory.h"
#include "virtio/virtio.h"
#include "virtio/virtio_blk.h"
#include "virtio/virtio_net.h"
#include "virtio/virtio_rng.h"
#include "vm/vcpu_state.h"

#define VM_MAX_VCPUS 64

enum vm_state { VM_CREATED, VM_RUNNING, VM_PAUSED, VM_SHUTDOWN, VM_INCOMING };

struct vm_config {
    uint64_t mem_bytes;
    unsigned ncpus;
    const char *kernel;
    const char *initrd;
    const char *cmdline;
    const char *api_socket;
    const char *console;      /* "stdio", "file:PATH" or "none" */
    const char *debugcon;     /* path or NULL */
    bool restore;             /* state comes from a stream: no kernel is loaded */
    bool memory_given;        /* --memory/--cpus given: a snapshot or an incoming */
    bool cpus_given;          /*   migration must match them */
    unsigned dirty_ring;      /* entries per vCPU of KVM's dirty ring; 0: bitmap log */
    unsigned ndisks;          /* --disk, in PCI order */
    struct disk_config disks[BLK_MAX_DISKS];
    bool no_rng;              /* --no-rng */
    /* --net: virtio-net devices with a tap backend, in command-line order */
    struct net_config nets[NET_MAX_DEVICES];
    unsigned nnets;
};

#define DIRTY_RING_ENTRIES 16384

/* Progress of the last snapshot, shown by GET /v1/vm. */
struct snapshot_progress {
    int state;                /* enum snapshot_state */
    uint64_t bytes;
    uint64_t started_ns;
    uint64_t duration_ns;
    char path[256];
    char error[256];
};

struct vm;
struct migration;

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
    uint64_t throttle_ns;     /* auto-converge: sleep this long before re-entry */
    uint64_t throttled_ns;    /* auto-converge: slept in all (for the report) */
    uint64_t guard_exits;     /* wake-up guard (vm.c): exits at its last look */
    uint64_t guard_kicks;
};

/* Auto-converge's state (migration/throttle.c drives it); cond uses
 * CLOCK_MONOTONIC so the thread can sleep a period and still stop at once. */
struct vm_throttle {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned pct;
    uint64_t mask;            /* vCPUs auto-converge slows down; 0: all */
    pthread_t thread;
    bool started;
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
    struct virtio_bus virtio;
    struct virtio_blk blk[BLK_MAX_DISKS];
    struct virtio_rng rng;
    struct virtio_net net[NET_MAX_DEVICES];
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

    pthread_mutex_t op_lock;  /* serialises pause/resume/snapshot requests */
    struct state_registry sections;
    struct vcpu_msr_list msr_list;
    uint32_t xsave_size;
    bool clock_follow_realtime;   /* migration: guest time advances across the gap */
    struct snapshot_progress snap;
    struct migration *mig;    /* this VMM's migration, either side */
    /* The guest's clocks stop while it is paused (as on QEMU's stop/cont):
     * captured when the vCPUs park, saved in snapshots, put back on resume. */
    bool clock_frozen;
    struct kvm_clock_data frozen_clock;
    uint64_t frozen_tsc[VM_MAX_VCPUS];
    unsigned dirty_ring;      /* entries per vCPU, 0 without the ring */
    struct vm_throttle throttle;
};

/* Fields only, no KVM: enough for the API to answer before the VM exists. */
void vm_init(struct vm *vm, const struct vm_config *cfg);
/* The kernel and initrd are readable and a kernel (before any KVM work). */
int vm_check_boot_files(const struct vm_config *cfg);
/* Every --disk opens as it will be used (a destination checks before it waits). */
int vm_check_disks(const struct vm_config *cfg);
int vm_create(struct vm *vm, const struct vm_config *cfg);
/* Starts the vCPU threads, parked at once if paused. */
int vm_start(struct vm *vm, bool paused);
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

/* vm_state.c: registers every state section in stream order. */
int vm_state_register(struct vm *vm);
/* Captures kvmclock and the TSCs as the vCPUs stop; puts kvmclock back. */
void vm_clock_freeze(struct vm *vm);
void vm_clock_thaw(struct vm *vm);

/* snapshot.c */
enum snapshot_state { SNAP_IDLE, SNAP_SAVING, SNAP_DONE, SNAP_FAILED };
struct snapshot_result {
    uint64_t bytes;
    uint64_t pages;
    uint64_t zero_pages;
    uint64_t duration_ns;
};
/* Pauses the VM (if running), writes the snapshot, resumes if asked. */
int vm_snapshot(struct vm *vm, const char *path, bool resume, struct snapshot_result *res,
                char *err, size_t errlen);
/* Reads a whole stream into a created (not started) VM. */
int vm_restore_stream(struct vm *vm, int fd, char *err, size_t errlen);
/* Applies one pages or section record to a VM being restored. */
int vm_apply_record(struct vm *vm, const struct stream_record *r, const uint8_t *payload,
                    char *err, size_t errlen);
/* Reads and checks only the header, to size the VM before creating it. */
int vm_read_header(int fd, struct stream_header *h, char *err, size_t errlen);
uint64_t vm_cpuid_fingerprint(struct vm *vm);
const char *snapshot_state_name(int state);

/* vcpu.c */
int vcpu_create(struct vm *vm, unsigned id);
int vcpu_start(struct vcpu *vcpu);
void vcpu_kick(struct vcpu *vcpu);
/* Kicks a vCPU that has not exited since the last call; main thread. */
void vcpu_guard_check(struct vcpu *vcpu, bool running);
void vcpu_destroy(struct vcpu *vcpu);
int vcpu_signals_init(void);

#endif
