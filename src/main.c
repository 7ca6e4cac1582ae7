/* ferry: a KVM VMM built for live migration. Verb dispatch. */
#include <errno.h>
#include <grp.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "api/api.h"
#include "api/routes_migration.h"
#include "api/routes_vm.h"
#include "migration/migration.h"
#include "sandbox/sandbox.h"
#include "cli/args.h"
#include "cli/client.h"
#include "cli/verbs.h"
#include "util/log.h"
#include "util/util.h"
#include "version.h"
#include "vm/vm.h"

static struct termios saved_tty;
static int tty_saved;

/* Typed console input reaches the guest a key at a time; ^C still ends ferry. */
static void tty_raw(void)
{
    struct termios t;

    if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_tty) < 0)
        return;
    t = saved_tty;
    t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
    t.c_iflag &= ~(tcflag_t)ICRNL;
    if (tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0)
        tty_saved = 1;
}

static void tty_restore(void)
{
    if (tty_saved)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved_tty);
}

/* Stop signals are taken by the main thread through a signalfd only. */
static void signals_block(void)
{
    sigset_t set;

    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

/* The snapshot must describe the VM the options (if any) ask for, and a CPU
 * this host offers. */
static int restore_check(struct vm *vm, const struct run_args *a,
                         const struct stream_header *h, char *err, size_t len)
{
    if (a->vm.memory_given && a->vm.mem_bytes != h->mem_size)
        snprintf(err, len, "snapshot is of a %llu MiB VM, --memory asks for %llu MiB",
                 (unsigned long long)(h->mem_size >> 20),
                 (unsigned long long)(a->vm.mem_bytes >> 20));
    else if (a->vm.cpus_given && a->vm.ncpus != h->ncpus)
        snprintf(err, len, "snapshot is of a %u-vCPU VM, --cpus asks for %u", h->ncpus,
                 a->vm.ncpus);
    else if (vm && h->cpuid_fingerprint != vm_cpuid_fingerprint(vm))
        snprintf(err, len, "snapshot was taken on a CPU model this host does not offer");
    else
        return 0;
    return -EINVAL;
}

static int restore_open(struct run_args *a, struct stream_header *h, int *fd)
{
    char err[256] = "";
    int ret;

    *fd = open(a->snapshot, O_RDONLY | O_CLOEXEC);
    if (*fd < 0) {
        log_err("snapshot %s: %s", a->snapshot, strerror(errno));
        return -errno;
    }
    ret = vm_read_header(*fd, h, err, sizeof(err));
    if (ret == 0)
        ret = restore_check(NULL, a, h, err, sizeof(err));
    if (ret == 0 && (h->ncpus > VM_MAX_VCPUS || mem_check_size(h->mem_size, mem_host_total())))
        ret = -EINVAL, snprintf(err, sizeof(err), "snapshot's VM (%u vCPUs, %llu MiB) cannot "
                                "run on this host", h->ncpus,
                                (unsigned long long)(h->mem_size >> 20));
    if (ret < 0)
        log_err("snapshot %s: %s", a->snapshot, err);
    a->vm.mem_bytes = h->mem_size;
    a->vm.ncpus = h->ncpus;
    return ret;
}

static int restore_load(struct vm *vm, const struct run_args *a,
                        const struct stream_header *h, int fd)
{
    char err[256] = "";
    uint64_t t0 = time_now_ns();
    int ret = restore_check(vm, a, h, err, sizeof(err));

    if (ret == 0)
        ret = vm_restore_stream(vm, fd, err, sizeof(err));
    if (ret < 0) {
        log_err("snapshot %s: %s; nothing was restored", a->snapshot, err);
        return ret;
    }
    log_info("restored %s in %llu ms", a->snapshot,
             (unsigned long long)((time_now_ns() - t0) / 1000000));
    return 0;
}

/* One table for the API: the VM's routes, then migration's. */
static const struct api_route *all_routes(size_t *n)
{
    static struct api_route table[32];

    *n = vm_routes_count + migration_routes_count;
    memcpy(table, vm_routes, vm_routes_count * sizeof(table[0]));
    memcpy(table + vm_routes_count, migration_routes,
           migration_routes_count * sizeof(table[0]));
    return table;
}

/* --api-group: a group name, or a numeric gid. */
static int api_open_group(struct api_server *api, const char *name)
{
    struct group grp, *g = NULL;
    char buf[4096];
    uint64_t gid;

    if (parse_u64(name, &gid) == 0 && gid < UINT32_MAX)
        return api_allow_group(api, (gid_t)gid) < 0 ? -1 : 0;
    if (getgrnam_r(name, &grp, buf, sizeof(buf), &g) != 0 || !g) {
        log_err("--api-group: no group named '%s'", name);
        return -1;
    }
    return api_allow_group(api, g->gr_gid) < 0 ? -1 : 0;
}

static int api_open(struct api_server **api, struct vm *vm, const struct run_args *a)
{
    const struct api_route *routes;
    size_t n;

    *api = NULL;
    if (!a->vm.api_socket)
        return 0;
    routes = all_routes(&n);
    if (api_start(api, a->vm.api_socket, routes, n, vm) < 0)
        return -1;
    return a->api_group ? api_open_group(*api, a->api_group) : 0;
}

/* Exit codes of a run that ends before its guest runs. */
#define RUN_FAILED    1   /* the VM cannot be created here */
#define RUN_BAD_INPUT 2   /* what the user named is unusable: nothing was created */

static int run_incoming(struct vm *vm, struct run_args *a, struct api_server **api)
{
    int ret;

    if (vm_check_disks(&a->vm) < 0)
        return RUN_BAD_INPUT;
    vm->state = VM_INCOMING;
    if (api_open(api, vm, a) < 0)
        return RUN_BAD_INPUT;
    ret = mig_incoming(vm->mig, vm, &a->vm, &a->incoming_ep, &a->tls);
    return ret == -EINVAL || ret == -ENOENT ? RUN_BAD_INPUT : ret < 0 ? RUN_FAILED : 0;
}

/* Creates the VM: booted from a kernel, loaded from a snapshot, or (with
 * --incoming) received from a migration source, which also starts it.
 * Returns 0 or the exit code. The files and the API socket the user named
 * are checked first, so that bad input exits 2. */
static int run_create(struct vm *vm, struct run_args *a, struct api_server **api)
{
    struct stream_header h;
    int fd = -1, ret;

    if (a->incoming)
        return run_incoming(vm, a, api);
    if (a->vm.restore ? restore_open(a, &h, &fd) < 0 : vm_check_boot_files(&a->vm) < 0) {
        if (fd >= 0)
            close(fd);
        return RUN_BAD_INPUT;
    }
    ret = vm_create(vm, &a->vm);
    if (ret == 0 && a->vm.restore)
        ret = restore_load(vm, a, &h, fd);
    if (fd >= 0)
        close(fd);
    if (ret == 0 && api_open(api, vm, a) < 0)
        return RUN_BAD_INPUT;
    if (ret == 0)
        ret = vm_start(vm, a->paused);
    return ret < 0 ? RUN_FAILED : 0;
}

/* Before any thread exists, so that all of them inherit it. */
static int run_sandbox(const struct run_args *a)
{
    struct sandbox_opts o = { .net_admin = a->vm.nnets > 0, .uffd = a->incoming != NULL,
                              .chown = a->api_group != NULL };
    char err[256];

    if (a->no_sandbox) {
        log_warn("sandbox off: no seccomp filter, every capability kept");
        return 0;
    }
    if (sandbox_apply(&o, err, sizeof(err)) < 0)
        return log_err("sandbox: %s", err), -1;
    return 0;
}

static int run_vm(struct vm *vm, struct run_args *a)
{
    static struct migration mig;
    struct api_server *api = NULL;
    int code;

    if (run_sandbox(a) < 0)
        return RUN_FAILED;
    mig_init(&mig);
    vm_init(vm, &a->vm);
    vm->mig = &mig;
    if (a->vm.console && strcmp(a->vm.console, "stdio") == 0)
        tty_raw();
    code = run_create(vm, a, &api);
    if (code == 0)
        code = vm_wait(vm);
    if (a->incoming)
        mig_incoming_stop(&mig);
    if (mig.thread_started)
        pthread_join(mig.thread, NULL);
    if (api)
        api_stop(api);
    tty_restore();
    return code;
}

static int run_main(int argc, char **argv)
{
    static struct vm vm;   /* large: vCPU array and CPUID table */
    struct run_args a;
    char err[256] = "";
    int ret = args_parse_run(argc, argv, &a, err, sizeof(err));

    if (ret == ARGS_HELP) {
        strcmp(argv[0], "restore") == 0 ? args_restore_usage() : args_run_usage();
        return 0;
    }
    if (ret < 0) {
        fprintf(stderr, "ferry %s: %s\n", argv[0], err);
        return 2;
    }
    log_set_level((enum log_level)a.log_level);
    signals_block();
    ret = run_vm(&vm, &a);
    vm_destroy(&vm);
    return ret;
}

static void usage(void)
{
    fprintf(stderr,
        "usage: ferry <verb> [options]\n"
        "verbs:\n"
        "  run        start a VM (ferry run --help)\n"
        "  restore    start a VM from a snapshot (ferry restore --help)\n"
        "  snapshot   pause a VM and write its snapshot (--api-socket PATH FILE [--resume])\n"
        "  migrate    live-migrate a VM (ferry migrate --help)\n"
        "  migrate-status, migrate-cancel   a migration's progress and report; cancel it\n"
        "  migrate-postcopy   switch a running migration to post-copy now\n"
        "  migrate-recover    reconnect a broken post-copy [tcp:HOST:PORT]\n"
        "  migrate-abort      give up a post-copy migration (the VM is lost)\n"
        "  status     show a running VM (--api-socket PATH)\n"
        "  pause      pause a VM's vCPUs\n"
        "  resume     resume a paused VM\n"
        "  shutdown   stop a VM and its ferry process\n"
        "  version    print the version\n");
}

int main(int argc, char **argv)
{
    const char *verb = argc > 1 ? argv[1] : NULL;

    if (!verb || strcmp(verb, "help") == 0 || strcmp(verb, "--help") == 0 ||
        strcmp(verb, "-h") == 0) {
        usage();
        return verb ? 0 : 2;
    }
    if (strcmp(verb, "version") == 0 || strcmp(verb, "--version") == 0) {
        printf("ferry %s\n", FERRY_VERSION);
        return 0;
    }
    if (strcmp(verb, "run") == 0 || strcmp(verb, "restore") == 0)
        return run_main(argc - 1, argv + 1);
    if (strcmp(verb, "snapshot") == 0)
        return verb_snapshot_main(argc - 1, argv + 1);
    if (strcmp(verb, "migrate") == 0)
        return verb_migrate_main(argc - 1, argv + 1);
    if (strcmp(verb, "migrate-status") == 0 || strcmp(verb, "migrate-cancel") == 0 ||
        strcmp(verb, "migrate-postcopy") == 0 || strcmp(verb, "migrate-recover") == 0 ||
        strcmp(verb, "migrate-abort") == 0)
        return verb_migrate_simple_main(argc - 1, argv + 1);
    if (strcmp(verb, "status") == 0 || strcmp(verb, "pause") == 0 ||
        strcmp(verb, "resume") == 0 || strcmp(verb, "shutdown") == 0)
        return client_verb_main(argc - 1, argv + 1);
    fprintf(stderr, "ferry: unknown verb '%s'\n", verb);
    usage();
    return 2;
}
