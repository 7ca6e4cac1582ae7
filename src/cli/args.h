/* Parsing of `ferry run` options into a VM configuration (pure; unit-tested). */
#ifndef FERRY_CLI_ARGS_H
#define FERRY_CLI_ARGS_H

#include <stddef.h>

#include "migration/transport.h"
#include "vm/vm.h"

#define ARGS_DEFAULT_MEMORY_MIB 512
#define ARGS_HELP 1

struct run_args {
    struct vm_config vm;
    int log_level;            /* enum log_level */
    const char *snapshot;     /* restore: the file to start from */
    const char *incoming;     /* run --incoming tcp:HOST:PORT|unix:PATH|fd:N */
    struct mig_endpoint incoming_ep;   /* ... parsed */
    struct mig_tls tls;       /* run --incoming --tls-dir/--tls-authz */
    const char *api_group;    /* --api-group: the API socket is also this group's */
    bool no_sandbox;          /* --sandbox off: no seccomp filter, capabilities kept */
    bool paused;              /* restore: start with vCPUs paused */
};

/* argv[0] is the verb ("run" or "restore"). Returns 0, ARGS_HELP, or -EINVAL
 * with a message in err. */
int args_parse_run(int argc, char **argv, struct run_args *out, char *err, size_t errlen);
void args_run_usage(void);
void args_restore_usage(void);

#endif
