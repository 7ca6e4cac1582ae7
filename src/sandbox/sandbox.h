/* The VMM's sandbox: capabilities dropped to what the process still needs,
 * and a seccomp filter that allows only the system calls a VMM makes. Both
 * are applied once, early in `ferry run`/`restore`, before any thread exists,
 * so every thread (vCPUs, devices, API, migration) inherits them. */
#ifndef FERRY_SANDBOX_SANDBOX_H
#define FERRY_SANDBOX_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>

struct sandbox_opts {
    bool net_admin;   /* keep CAP_NET_ADMIN: a tap is opened later (--incoming --net) */
    bool uffd;        /* keep CAP_SYS_PTRACE: a post-copy destination's userfaultfd
                         must see KVM's own faults (vm.unprivileged_userfaultfd=0) */
    bool chown;       /* keep CAP_CHOWN: --api-group gives the API socket (made
                         later, with the server's threads) to another group */
};

/* Drops capabilities, then installs the filter. A call outside the list
 * fails with EPERM and is reported once per call site on stderr ("sandbox:
 * blocked system call N"), never executed. Returns 0 or -errno with err. */
int sandbox_apply(const struct sandbox_opts *o, char *err, size_t errlen);
/* The thread classes that serve the guest directly: vCPUs (guest exits) and
 * device workers (virtqueues). */
enum sandbox_class { SANDBOX_VCPU, SANDBOX_DEVICE };
/* Called by such a thread as it starts: a stricter filter of its own on top
 * of the process's. No-op when the sandbox is off. */
int sandbox_thread(enum sandbox_class c);

#endif
