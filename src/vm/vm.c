#include "vm/vm.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "devices/irq.h"
#include "util/log.h"
#include "util/util.h"

#define KVM_TSS_ADDR          0xfffbd000ULL
#define KVM_IDENTITY_MAP_ADDR 0xfffbc000ULL

const char *vm_state_name(enum vm_state s)
{
    static const char *const names[] = { "created", "running", "paused", "shutdown",
                                         "incoming" };
    return names[s];
}

static int vm_ioctl(struct vm *vm, unsigned long req, void *arg, const char *what)
{
    if (ioctl(vm->vm_fd, req, arg) < 0) {
        int err = -errno;
        log_err("%s: %s", what, strerror(errno));
        return err;
    }
    return 0;
}

static int vm_open_kvm(struct vm *vm)
{
    int run_size;

    vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (vm->kvm_fd < 0) {
        int err = -errno;
        log_err("/dev/kvm: %s (is KVM available and are you allowed to use it?)",
                strerror(errno));
        return err;
    }
    if (ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
        log_err("/dev/kvm: unsupported KVM API version");
        return -ENOTSUP;
    }
    run_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
    if (run_size <= 0 || vm->vm_fd < 0) {
        int err = -errno;
        log_err("KVM_CREATE_VM: %s", strerror(errno));
        return err;
    }
    vm->run_size = (size_t)run_size;
    return cpuid_get_supported(vm->kvm_fd, &vm->cpuid);
}

static int vm_irq_routing(struct vm *vm)
{
    struct {
        struct kvm_irq_routing hdr;
        struct kvm_irq_routing_entry e[IRQ_PC_ROUTES];
    } r = { 0 };

    r.hdr.nr = irq_routes_pc(r.e);
    return vm_ioctl(vm, KVM_SET_GSI_ROUTING, &r, "KVM_SET_GSI_ROUTING");
}

/* Migration reads the dirty log without clearing it and re-protects pages
 * chunk by chunk just before sending them (fewer faults, no huge
 * write-protect storm when logging starts). */
/* The dirty ring instead (ferry run --dirty-ring): per-vCPU rings of dirty
 * pages, enabled before any vCPU exists. It replaces the bitmap log, and
 * manual protect must stay off (with INITIALLY_SET nothing would ever be
 * write-protected). */
static int vm_setup_dirty_ring(struct vm *vm, unsigned entries)
{
    int acq = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING_ACQ_REL);
    int ring = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING);
    uint64_t bytes = (uint64_t)entries * sizeof(struct kvm_dirty_gfn);
    struct kvm_enable_cap cap = { .cap = acq > 0 ? KVM_CAP_DIRTY_LOG_RING_ACQ_REL
                                                 : KVM_CAP_DIRTY_LOG_RING, .args = { bytes } };
    int max = acq > 0 ? acq : ring;

    if (max <= 0 || bytes > (uint64_t)max) {
        log_err("KVM lacks the dirty ring (KVM_CAP_DIRTY_LOG_RING = %d, _ACQ_REL = %d, "
                "%llu bytes wanted)", ring, acq, (unsigned long long)bytes);
        return -ENOTSUP;
    }
    vm->dirty_ring = entries;
    return vm_ioctl(vm, KVM_ENABLE_CAP, &cap, "KVM_ENABLE_CAP(DIRTY_LOG_RING)");
}

static int vm_setup_dirty_log(struct vm *vm)
{
    uint64_t want = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET;
    struct kvm_enable_cap cap = { .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, .args = { want } };
    int have = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);

    if (have < 0 || ((uint64_t)have & want) != want) {
        log_err("KVM lacks manual dirty-log protection (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)");
        return -ENOTSUP;
    }
    return vm_ioctl(vm, KVM_ENABLE_CAP, &cap, "KVM_ENABLE_CAP(MANUAL_DIRTY_LOG_PROTECT2)");
}

static int vm_setup_irqchip(struct vm *vm)
{
    struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
    uint64_t idmap = KVM_IDENTITY_MAP_ADDR;
    int ret;

    ret = vm_ioctl(vm, KVM_SET_IDENTITY_MAP_ADDR, &idmap, "KVM_SET_IDENTITY_MAP_ADDR");
    if (ret == 0 && ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, KVM_TSS_ADDR) < 0)
        ret = -errno, log_err("KVM_SET_TSS_ADDR: %s", strerror(errno));
    if (ret == 0)
        ret = vm_ioctl(vm, KVM_CREATE_IRQCHIP, NULL, "KVM_CREATE_IRQCHIP");
    if (ret == 0)
        ret = vm_ioctl(vm, KVM_CREATE_PIT2, &pit, "KVM_CREATE_PIT2");
    if (ret == 0)
        ret = vm_irq_routing(vm);
    return ret;
}

static void vm_on_power(void *ctx, enum power_event ev)
{
    vm_request_stop(ctx, 0, ev == POWER_OFF ? "guest powered off" :
                                "guest reset (ferry does not reboot guests)");
}

static int vm_console_fd(struct vm *vm, const char *console, int *out)
{
    const char *path;

    vm->console_fd = -1;
    if (!console || strcmp(console, "stdio") == 0) {
        *out = STDOUT_FILENO;
        return 0;
    }
    if (strcmp(console, "none") == 0) {
        *out = -1;
        return 0;
    }
    path = console + 5;   /* "file:" was checked by the argument parser */
    vm->console_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (vm->console_fd < 0) {
        int err = -errno;
        log_err("console file %s: %s", path, strerror(errno));
        return err;
    }
    *out = vm->console_fd;
    return 0;
}

/* PCI slots in contract order: disks, then network devices, then rng. On an
 * incoming migration the disks are opened now but nothing touches them until
 * the VM starts at the switchover (docs/VIRTIO.md). */
static int vm_setup_virtio(struct vm *vm, const struct vm_config *cfg)
{
    int ret = 0;

    virtio_bus_init(&vm->virtio, vm->vm_fd, &vm->mem, &vm->pci);
    for (unsigned i = 0; i < cfg->ndisks && ret == 0; i++)
        ret = virtio_blk_add(&vm->virtio, &vm->blk[i], i, &cfg->disks[i]);
    for (unsigned i = 0; i < cfg->nnets && ret == 0; i++)
        ret = virtio_net_add(&vm->virtio, &vm->net[i], i, &cfg->nets[i]);
    if (ret == 0 && !cfg->no_rng)
        ret = virtio_rng_add(&vm->virtio, &vm->rng);
    return ret;
}

static int vm_setup_devices(struct vm *vm, const struct vm_config *cfg)
{
    bool no_input = cfg->console && strcmp(cfg->console, "none") == 0;
    int out_fd = -1, ret;

    pio_init(&vm->pio);
    ret = vm_console_fd(vm, cfg->console, &out_fd);
    if (ret == 0)
        ret = serial_init(&vm->serial, &vm->pio, vm->vm_fd, out_fd,
                          no_input ? -1 : STDIN_FILENO);
    if (ret == 0)
        ret = rtc_init(&vm->rtc, &vm->pio, cfg->mem_bytes, cfg->ncpus);
    if (ret == 0)
        ret = pci_init(&vm->pci, &vm->pio);
    if (ret == 0)
        ret = acpi_pm_init(&vm->pm, &vm->pio, vm_on_power, vm);
    if (ret == 0)
        ret = debugcon_init(&vm->debugcon, &vm->pio, cfg->debugcon);
    if (ret == 0)
        ret = vm_setup_virtio(vm, cfg);
    if (ret < 0)
        log_err("setting up devices: %s", strerror(-ret));
    return ret;
}

static int vm_setup_memory(struct vm *vm, uint64_t bytes)
{
    int ret = mem_create(&vm->mem, bytes);

    if (ret < 0) {
        log_err("guest memory of %llu MiB: %s", (unsigned long long)(bytes / MIB),
                strerror(-ret));
        return ret;
    }
    return mem_register(&vm->mem, vm->vm_fd);
}

static void vm_throttle_init(struct vm_throttle *t)
{
    pthread_condattr_t attr;

    pthread_mutex_init(&t->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cond, &attr);
    pthread_condattr_destroy(&attr);
}

void vm_init(struct vm *vm, const struct vm_config *cfg)
{
    memset(vm, 0, sizeof(*vm));
    vm->kvm_fd = vm->vm_fd = vm->stop_efd = vm->console_fd = -1;
    vm->mem.fd = -1;
    vm->cfg = cfg;
    vm->ncpus = cfg->ncpus;
    pthread_mutex_init(&vm->lock, NULL);
    pthread_mutex_init(&vm->op_lock, NULL);
    pthread_cond_init(&vm->cond, NULL);
    vm_throttle_init(&vm->throttle);
}

/* What the state walk needs: the XSAVE buffer size, the MSRs every vCPU
 * saves, and the registry of sections. */
static int vm_setup_state(struct vm *vm)
{
    int xsave2 = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
    int ret;

    vm->xsave_size = (uint32_t)(xsave2 > (int)sizeof(struct kvm_xsave) ?
                                xsave2 : (int)sizeof(struct kvm_xsave));
    ret = vcpu_msr_list_probe(vm, vm->vcpus[0].fd, &vm->msr_list);
    if (ret < 0) {
        log_err("listing the MSRs to save: %s", strerror(-ret));
        return ret;
    }
    return vm_state_register(vm);
}

static struct boot_config vm_boot_config(const struct vm_config *cfg)
{
    return (struct boot_config){ cfg->kernel, cfg->initrd, cfg->cmdline, cfg->ncpus };
}

int vm_check_boot_files(const struct vm_config *cfg)
{
    struct boot_config boot = vm_boot_config(cfg);

    return boot_probe(&boot);
}

int vm_check_disks(const struct vm_config *cfg)
{
    int ret = 0;

    for (unsigned i = 0; i < cfg->ndisks && ret == 0; i++)
        ret = virtio_blk_check(&cfg->disks[i]);
    return ret;
}

int vm_create(struct vm *vm, const struct vm_config *cfg)
{
    struct boot_config boot = vm_boot_config(cfg);
    int ret;

    vm->cfg = cfg;
    vm->ncpus = cfg->ncpus;
    vm->stop_efd = eventfd(0, EFD_CLOEXEC);
    ret = vm->stop_efd < 0 ? -errno : vm_open_kvm(vm);
    if (ret == 0)
        ret = cfg->dirty_ring ? vm_setup_dirty_ring(vm, cfg->dirty_ring) : vm_setup_dirty_log(vm);
    if (ret == 0)
        ret = vm_setup_irqchip(vm);
    if (ret == 0)
        ret = vm_setup_memory(vm, cfg->mem_bytes);
    if (ret == 0)
        ret = vm_setup_devices(vm, cfg);
    if (ret == 0 && !cfg->restore)
        ret = boot_load(&vm->mem, &boot, &vm->entry);
    for (unsigned i = 0; ret == 0 && i < vm->ncpus; i++)
        ret = vcpu_create(vm, i);
    if (ret == 0)
        ret = vm_setup_state(vm);
    return ret;
}

int vm_start(struct vm *vm, bool paused)
{
    int ret = vcpu_signals_init();

    if (vm->stop_req)
        return -ESHUTDOWN;

    vm->start_ns = time_now_ns();
    vm->state = paused ? VM_PAUSED : VM_RUNNING;
    vm->pause_req = paused;
    vm->paused_since_ns = vm->start_ns;
    if (ret == 0)
        ret = virtio_bus_start(&vm->virtio, paused);
    for (unsigned i = 0; ret == 0 && i < vm->ncpus; i++)
        ret = vcpu_start(&vm->vcpus[i]);
    if (ret == 0)
        ret = serial_start_input(&vm->serial);
    if (ret < 0)
        vm_request_stop(vm, 1, "could not start the VM's threads");
    return ret;
}

void vm_request_stop(struct vm *vm, int code, const char *reason)
{
    uint64_t one = 1;
    bool first;

    pthread_mutex_lock(&vm->lock);
    first = !vm->stop_req;
    if (first) {
        __atomic_store_n(&vm->stop_req, true, __ATOMIC_RELEASE);
        vm->exit_code = code;
        snprintf(vm->exit_reason, sizeof(vm->exit_reason), "%s", reason);
    }
    pthread_cond_broadcast(&vm->cond);
    pthread_mutex_unlock(&vm->lock);
    if (!first)
        return;
    for (unsigned i = 0; i < vm->ncpus; i++)
        vcpu_kick(&vm->vcpus[i]);
    if (write(vm->stop_efd, &one, sizeof(one)) < 0)
        log_err("waking the main thread: %s", strerror(errno));
}

/* Every period, a vCPU that has not left KVM_RUN since the last look is kicked
 * so that KVM looks at its interrupts again (vcpu.c says why). An idle vCPU
 * pays a few exits a second; a lost wake-up costs the guest one period. */
#define VM_WAKE_GUARD_MS 250

static void vm_wake_guard(struct vm *vm)
{
    bool running;

    pthread_mutex_lock(&vm->lock);
    running = vm->state == VM_RUNNING && !vm->pause_req;
    pthread_mutex_unlock(&vm->lock);
    for (unsigned i = 0; i < vm->ncpus; i++)
        vcpu_guard_check(&vm->vcpus[i], running);
}

static void vm_wait_stop(struct vm *vm)
{
    sigset_t set;
    struct signalfd_siginfo si;
    struct pollfd pfd[2];
    char reason[64];

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pfd[0] = (struct pollfd){ .fd = vm->stop_efd, .events = POLLIN };
    pfd[1] = (struct pollfd){ .fd = signalfd(-1, &set, SFD_CLOEXEC), .events = POLLIN };
    while (!__atomic_load_n(&vm->stop_req, __ATOMIC_ACQUIRE)) {
        int n = poll(pfd, 2, VM_WAKE_GUARD_MS);

        if (n < 0 && errno != EINTR)
            break;
        if (n == 0)
            vm_wake_guard(vm);
        if ((pfd[1].revents & POLLIN) && read(pfd[1].fd, &si, sizeof(si)) == sizeof(si)) {
            snprintf(reason, sizeof(reason), "stopped by signal %s", strsignal((int)si.ssi_signo));
            vm_request_stop(vm, 128 + (int)si.ssi_signo, reason);
        }
    }
    if (pfd[1].fd >= 0)
        close(pfd[1].fd);
}

int vm_wait(struct vm *vm)
{
    vm_wait_stop(vm);
    for (unsigned i = 0; i < vm->ncpus; i++)
        if (vm->vcpus[i].thread_started)
            pthread_join(vm->vcpus[i].thread, NULL);
    serial_stop(&vm->serial);
    virtio_bus_stop(&vm->virtio);
    pthread_mutex_lock(&vm->lock);
    vm->state = VM_SHUTDOWN;
    pthread_mutex_unlock(&vm->lock);
    if (vm->exit_code == 0)
        log_info("%s", vm->exit_reason);
    else
        log_err("%s", vm->exit_reason);
    return vm->exit_code;
}

void vm_destroy(struct vm *vm)
{
    for (unsigned i = 0; i < vm->ncpus; i++)
        if (vm->vcpus[i].vm)
            vcpu_destroy(&vm->vcpus[i]);
    debugcon_close(&vm->debugcon);
    virtio_bus_stop(&vm->virtio);
    for (unsigned i = 0; i < BLK_MAX_DISKS; i++)
        if (vm->blk[i].chain)
            virtio_blk_close(&vm->blk[i]);
    free(vm->rng.chain);
    for (unsigned i = 0; i < NET_MAX_DEVICES; i++)
        if (vm->net[i].vdev.ops)
            virtio_net_close(&vm->net[i]);
    mem_destroy(&vm->mem);
    if (vm->console_fd >= 0)
        close(vm->console_fd);
    if (vm->vm_fd >= 0)
        close(vm->vm_fd);
    if (vm->kvm_fd >= 0)
        close(vm->kvm_fd);
    if (vm->stop_efd >= 0)
        close(vm->stop_efd);
}

static void vm_kick_all(struct vm *vm)
{
    for (unsigned i = 0; i < vm->ncpus; i++)
        vcpu_kick(&vm->vcpus[i]);
}

int vm_pause(struct vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    if (vm->state != VM_RUNNING || vm->stop_req) {
        pthread_mutex_unlock(&vm->lock);
        return -EBUSY;
    }
    __atomic_store_n(&vm->pause_req, true, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&vm->lock);
    vm_kick_all(vm);
    pthread_mutex_lock(&vm->lock);
    while (vm->npaused < vm->ncpus && !vm->stop_req)
        pthread_cond_wait(&vm->cond, &vm->lock);
    vm->state = vm->stop_req ? vm->state : VM_PAUSED;
    vm->paused_since_ns = time_now_ns();
    if (!vm->stop_req)
        vm_clock_freeze(vm);
    pthread_mutex_unlock(&vm->lock);
    if (!vm->stop_req)
        virtio_bus_pause(&vm->virtio);   /* in-flight device requests finish first */
    return vm->stop_req ? -ESHUTDOWN : 0;
}

int vm_resume(struct vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    if (vm->state != VM_PAUSED || vm->stop_req) {
        pthread_mutex_unlock(&vm->lock);
        return -EBUSY;
    }
    vm_clock_thaw(vm);
    virtio_bus_resume(&vm->virtio);
    __atomic_store_n(&vm->pause_req, false, __ATOMIC_RELEASE);
    vm->state = VM_RUNNING;
    vm->paused_total_ns += time_now_ns() - vm->paused_since_ns;
    pthread_cond_broadcast(&vm->cond);
    pthread_mutex_unlock(&vm->lock);
    return 0;
}

uint64_t vm_uptime_ns(struct vm *vm)
{
    return vm->start_ns ? time_now_ns() - vm->start_ns : 0;
}
