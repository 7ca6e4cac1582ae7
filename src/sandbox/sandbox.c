#include "sandbox/sandbox.h"

#include <cap-ng.h>
#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <ucontext.h>
#include <unistd.h>

#include "util/log.h"
#include "util/testhook.h"
#include "util/util.h"

/* What a VMM does after it starts: memory and threads, files (disks,
 * snapshots, the console), KVM ioctls, sockets (API, migration), eventfds and
 * polling, userfaultfd (post-copy), io_uring (virtio-blk). Not here: exec,
 * ptrace, mount, module and key calls, bpf, perf, namespaces, raw sockets. */
static const char *const sandbox_calls[] = {
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
    "preadv2", "pwritev2", "close", "close_range", "fstat", "newfstatat", "statx", "lseek",
    "mmap", "munmap", "mprotect", "mremap", "madvise", "brk", "msync", "mincore",
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigtimedwait", "sigaltstack",
    "ioctl", "fcntl", "dup", "dup2", "dup3", "pipe2", "poll", "ppoll", "select", "pselect6",
    "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "eventfd2", "signalfd4",
    "timerfd_create", "timerfd_settime", "nanosleep", "clock_nanosleep", "clock_gettime",
    "clock_getres", "gettimeofday", "futex", "set_robust_list", "rseq", "sched_yield",
    "sched_getaffinity", "getpid", "gettid", "getuid", "geteuid", "getgid", "getegid",
    "getppid", "tgkill", "tkill", "exit", "exit_group", "set_tid_address", "prctl",
    "openat", "unlink", "unlinkat", "rename", "renameat", "renameat2", "fsync",
    "fdatasync", "fallocate", "ftruncate", "getdents", "getdents64", "readlink", "readlinkat",
    "access", "faccessat", "faccessat2", "getcwd", "umask", "fchmod", "fchown", "chmod",
    "chown", "uname", "getrandom", "memfd_create", "userfaultfd", "sysinfo", "getrlimit",
    "prlimit64", "getrusage", "socketpair", "bind", "listen", "accept", "accept4",
    "connect", "getsockname", "getpeername", "setsockopt", "getsockopt", "sendto",
    "recvfrom", "sendmsg", "recvmsg", "shutdown", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "restart_syscall", "statfs", "fstatfs", "mlock", "munlock",
    "membarrier", "get_mempolicy", "sched_getparam", "sched_getscheduler",
    "getpriority", "times", "flock", "lstat", "stat", "open", "sendfile", "splice",
    "copy_file_range", "mkdir", "mkdirat",
    "seccomp",   /* a thread adding a stricter filter of its own (filters only stack) */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_UNDEFINED__)
    /* the leak checker stops the threads at exit from a traced child */
    "ptrace", "wait4", "clone", "sched_setaffinity", "kill", "process_vm_readv",
#endif
};

/* Thread classes with a filter of their own, on top of the process's.
 * A vCPU thread runs guest exits: device registers (KVM ioctls, eventfds,
 * the console and disk files it already has open), sleeps and signals. It
 * opens nothing, makes no socket and starts no thread. */
static const char *const sandbox_vcpu_calls[] = {
    "ioctl", "futex", "rt_sigprocmask", "rt_sigreturn", "rt_sigaction", "rt_sigtimedwait",
    "sigaltstack", "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv",
    "pwritev", "preadv2", "pwritev2", "fsync", "fdatasync", "fallocate", "io_uring_enter",
    "clock_gettime", "clock_nanosleep", "nanosleep", "gettimeofday", "mmap", "munmap",
    "mremap", "mprotect", "madvise", "brk", "exit", "exit_group", "gettid", "getpid",
    "tgkill", "tkill", "sched_yield", "poll", "ppoll", "epoll_ctl", "eventfd2", "close",
    "fstat", "newfstatat", "lseek", "getrandom", "restart_syscall", "rseq",
    "set_robust_list",
};

/* A device worker (virtio) serves its queues: the same, and it waits on its
 * epoll set. */
static const char *const sandbox_device_calls[] = { "epoll_wait", "epoll_pwait" };

static bool sandbox_enabled;

static const int sandbox_families[] = { AF_UNIX, AF_INET, AF_INET6 };

static void sandbox_say(int nr)
{
    char msg[64] = "ferry sandbox: blocked system call ";
    size_t n = strlen(msg);
    char digits[12];
    int d = 0;

    do
        digits[d++] = (char)('0' + nr % 10);
    while ((nr /= 10) > 0 && d < (int)sizeof(digits));
    while (d)
        msg[n++] = digits[--d];
    msg[n++] = '\n';
    if (write(STDERR_FILENO, msg, n) < 0)
        return;
}

/* The call is not made: it returns -EPERM to its caller, and says so. */
static void sandbox_sigsys(int sig, siginfo_t *si, void *ctx)
{
    ucontext_t *uc = ctx;
    int saved = errno;

    (void)sig;
    sandbox_say(si->si_syscall);
    uc->uc_mcontext.gregs[REG_RAX] = -EPERM;
    errno = saved;
}

static int sandbox_allow(scmp_filter_ctx f, const char *const *calls, size_t n)
{
    int ret = 0;

    for (size_t i = 0; i < n && ret == 0; i++) {
        int nr = seccomp_syscall_resolve_name(calls[i]);
        if (nr != __NR_SCMP_ERROR)
            ret = seccomp_rule_add(f, SCMP_ACT_ALLOW, nr, 0);
    }
    return ret;
}

/* A call allowed when its first argument compares as asked (written out:
 * the SCMP_A0 macro leaves fields to the compiler, which -Wextra refuses). */
static int sandbox_allow_arg0(scmp_filter_ctx f, int nr, enum scmp_compare op,
                              scmp_datum_t a, scmp_datum_t b)
{
    struct scmp_arg_cmp cmp = { .arg = 0, .op = op, .datum_a = a, .datum_b = b };

    return seccomp_rule_add_array(f, SCMP_ACT_ALLOW, nr, 1, &cmp);
}

static int sandbox_rules(scmp_filter_ctx f)
{
    int ret = sandbox_allow(f, sandbox_calls, ARRAY_SIZE(sandbox_calls));

    for (size_t i = 0; i < ARRAY_SIZE(sandbox_families) && !ret; i++)
        ret = sandbox_allow_arg0(f, SCMP_SYS(socket), SCMP_CMP_EQ,
                                 (scmp_datum_t)sandbox_families[i], 0);
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_UNDEFINED__)
    /* threads only: no fork, so nothing can run outside the filter's reach */
    if (ret == 0)
        ret = sandbox_allow_arg0(f, SCMP_SYS(clone), SCMP_CMP_MASKED_EQ, CLONE_THREAD,
                                 CLONE_THREAD);
#endif
    /* clone3's flags are behind a pointer a filter cannot read: glibc falls
     * back to clone on ENOSYS */
    if (ret == 0)
        ret = seccomp_rule_add(f, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    return ret;
}

static int sandbox_filter(char *err, size_t errlen)
{
    struct sigaction sa = { .sa_sigaction = sandbox_sigsys, .sa_flags = SA_SIGINFO };
    scmp_filter_ctx f = seccomp_init(SCMP_ACT_TRAP);
    int ret;

    if (!f)
        return snprintf(err, errlen, "seccomp: cannot allocate a filter"), -ENOMEM;
    sigemptyset(&sa.sa_mask);
    ret = sigaction(SIGSYS, &sa, NULL) < 0 ? -errno : sandbox_rules(f);
    if (ret == 0)
        ret = seccomp_attr_set(f, SCMP_FLTATR_CTL_TSYNC, 1);
    if (ret == 0)
        ret = seccomp_load(f);
    seccomp_release(f);
    if (ret < 0)
        snprintf(err, errlen, "seccomp: %s", strerror(-ret));
    return ret;
}

struct sandbox_kept {
    bool net, ptrace, chown;
};

static void sandbox_keep(bool keep, unsigned cap)
{
    if (keep)
        capng_update(CAPNG_ADD, CAPNG_EFFECTIVE | CAPNG_PERMITTED, cap);
}

/* Only the capabilities named stay, and only if the process had them (an
 * unprivileged ferry has none to drop). */
static int sandbox_caps(const struct sandbox_opts *o, struct sandbox_kept *k, char *err,
                        size_t errlen)
{
    capng_select_t sel;
    int ret;

    capng_get_caps_process();
    sel = capng_have_capability(CAPNG_EFFECTIVE, CAP_SETPCAP) ? CAPNG_SELECT_ALL
                                                                : CAPNG_SELECT_BOTH;
    /* asked before the clear: capng_have_capability reads libcap-ng's copy */
    k->net = o->net_admin && capng_have_capability(CAPNG_PERMITTED, CAP_NET_ADMIN);
    k->ptrace = o->uffd && capng_have_capability(CAPNG_PERMITTED, CAP_SYS_PTRACE);
    k->chown = o->chown && capng_have_capability(CAPNG_PERMITTED, CAP_CHOWN);
    capng_clear(sel);
    sandbox_keep(k->net, CAP_NET_ADMIN);
    sandbox_keep(k->ptrace, CAP_SYS_PTRACE);
    sandbox_keep(k->chown, CAP_CHOWN);
    ret = capng_apply(sel);
    if (ret < 0)
        snprintf(err, errlen, "capabilities: cannot drop them (libcap-ng %d)", ret);
    return ret < 0 ? -EPERM : 0;
}

/* Test builds: shows that the filter holds by trying what it forbids. */
static void sandbox_probe(void)
{
    char *const argv[] = { "/bin/true", NULL };
    int ret = execve(argv[0], argv, argv + 1);

    log_info("sandbox probe: execve -> %s", ret < 0 ? strerror(errno) : "ran");
    ret = socket(AF_PACKET, SOCK_RAW, 0);
    log_info("sandbox probe: raw packet socket -> %s", ret < 0 ? strerror(errno) : "made");
    if (ret >= 0)
        close(ret);
}

int sandbox_thread(enum sandbox_class c)
{
    scmp_filter_ctx f;
    int ret;

    if (!__atomic_load_n(&sandbox_enabled, __ATOMIC_ACQUIRE))
        return 0;
    f = seccomp_init(SCMP_ACT_TRAP);
    if (!f)
        return -ENOMEM;
    ret = sandbox_allow(f, sandbox_vcpu_calls, ARRAY_SIZE(sandbox_vcpu_calls));
    if (ret == 0 && c == SANDBOX_DEVICE)
        ret = sandbox_allow(f, sandbox_device_calls, ARRAY_SIZE(sandbox_device_calls));
    if (ret == 0)
        ret = seccomp_load(f);   /* this thread only: filters stack on the process's */
    seccomp_release(f);
    return ret;
}

int sandbox_apply(const struct sandbox_opts *o, char *err, size_t errlen)
{
    struct sandbox_kept k = { 0 };
    int ret = sandbox_caps(o, &k, err, errlen);

    if (ret == 0)
        ret = sandbox_filter(err, errlen);
    if (ret == 0)
        __atomic_store_n(&sandbox_enabled, true, __ATOMIC_RELEASE);
    if (ret == 0)
        log_info("sandbox: seccomp filter on; capabilities%s%s%s%s",
                 k.net || k.ptrace || k.chown ? " kept:" : " all dropped",
                 k.net ? " net_admin" : "", k.ptrace ? " sys_ptrace" : "",
                 k.chown ? " chown" : "");
    if (ret == 0 && test_hook("FERRY_TEST_SANDBOX_PROBE"))
        sandbox_probe();
    return ret;
}
