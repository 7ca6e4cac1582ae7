#include "cli/args.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdbool.h>
#include <string.h>

#include "util/log.h"
#include "util/util.h"

enum { OPT_KERNEL = 256, OPT_INITRD, OPT_CMDLINE, OPT_MEMORY, OPT_CPUS,
       OPT_API, OPT_CONSOLE, OPT_DEBUGCON, OPT_LOG, OPT_SNAPSHOT, OPT_PAUSED, OPT_INCOMING,
       OPT_DIRTY_RING, OPT_DISK, OPT_NO_RNG, OPT_NET, OPT_TLS_DIR, OPT_TLS_AUTHZ,
       OPT_API_GROUP, OPT_SANDBOX };

static const struct option run_options[] = {
    { "kernel", required_argument, NULL, OPT_KERNEL },
    { "initrd", required_argument, NULL, OPT_INITRD },
    { "cmdline", required_argument, NULL, OPT_CMDLINE },
    { "memory", required_argument, NULL, OPT_MEMORY },
    { "cpus", required_argument, NULL, OPT_CPUS },
    { "api-socket", required_argument, NULL, OPT_API },
    { "console", required_argument, NULL, OPT_CONSOLE },
    { "debugcon", required_argument, NULL, OPT_DEBUGCON },
    { "log-level", required_argument, NULL, OPT_LOG },
    { "snapshot", required_argument, NULL, OPT_SNAPSHOT },
    { "paused", no_argument, NULL, OPT_PAUSED },
    { "incoming", required_argument, NULL, OPT_INCOMING },
    { "dirty-ring", no_argument, NULL, OPT_DIRTY_RING },
    { "disk", required_argument, NULL, OPT_DISK },
    { "no-rng", no_argument, NULL, OPT_NO_RNG },
    { "net", required_argument, NULL, OPT_NET },
    { "tls-dir", required_argument, NULL, OPT_TLS_DIR },
    { "api-group", required_argument, NULL, OPT_API_GROUP },
    { "sandbox", required_argument, NULL, OPT_SANDBOX },
    { "tls-authz", required_argument, NULL, OPT_TLS_AUTHZ },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
};

void args_run_usage(void)
{
    fprintf(stderr,
        "usage: ferry run --kernel PATH [options]\n"
        "       ferry run --incoming tcp:HOST:PORT|unix:PATH|fd:N [options]\n"
        "                                        (wait for a migration; fd: an inherited\n"
        "                                        listening socket)\n"
        "  --kernel PATH         test guest ELF, Linux bzImage or PVH vmlinux\n"
        "  --initrd PATH         initial ramdisk\n"
        "  --cmdline STR         kernel command line\n"
        "  --memory MiB          guest RAM (default %d; multiple of 2)\n"
        "  --cpus N              vCPUs (default 1, at most %d)\n"
        "  --api-socket PATH     serve the REST API on this unix socket (mode 0600)\n"
        "  --api-group NAME|GID  ... open to this group too (0660); state-changing\n"
        "                        requests are logged with the caller's pid/uid/gid\n"
        "  --console stdio|file:PATH|none   serial console (default stdio)\n"
        "  --debugcon PATH       port 0xe9 output to this file or FIFO\n"
        "  --dirty-ring          track dirty pages with KVM's per-vCPU dirty ring\n"
        "                        (migrations then give per-vCPU dirty rates)\n"
        "  --disk path=FILE[,readonly=on][,serial=ID]   virtio-blk on a raw file (repeatable)\n"
        "  --no-rng              no virtio-rng device\n"
        "  --net tap=NAME[,mac=MAC]  virtio-net on a tap (up to %d; MAC default\n"
        "                        52:54:00 + hash of NAME; migration keeps the source's)\n"
        "  --tls-dir DIR         --incoming over mutual TLS: DIR/ca-cert.pem,\n"
        "                        server-cert.pem, server-key.pem (make certs)\n"
        "  --tls-authz NAMES     comma-separated names a source's certificate must\n"
        "                        carry (default: any certificate the CA signed)\n"
        "  --sandbox on|off      seccomp filter and capabilities dropped (default on;\n"
        "                        off for debugging: docs/SECURITY.md)\n"
        "  --log-level error|warning|info|debug, -v for debug\n",
        ARGS_DEFAULT_MEMORY_MIB, VM_MAX_VCPUS, NET_MAX_DEVICES);
}

void args_restore_usage(void)
{
    fprintf(stderr,
        "usage: ferry restore --snapshot FILE [options]\n"
        "  --snapshot FILE       snapshot written by `ferry snapshot`\n"
        "  --paused              start with the vCPUs paused\n"
        "  --memory MiB, --cpus N  optional: must match the snapshot\n"
        "  --api-socket PATH, --console stdio|file:PATH|none, --debugcon PATH,\n"
        "  --disk ..., --no-rng, --net ..., --log-level LEVEL, -v   as for ferry run\n"
        "  (the devices must be the same as when the snapshot was taken; the MACs\n"
        "  come from the snapshot)\n");
}

static int args_memory(const char *s, uint64_t *bytes, char *err, size_t len)
{
    uint64_t mib;
    int ret;

    if (parse_u64(s, &mib) < 0 || mib == 0 || mib > (1ULL << 30)) {
        snprintf(err, len, "--memory: '%s' is not a size in MiB (1 or more)", s);
        return -EINVAL;
    }
    ret = mem_check_size(mib * MIB, mem_host_total());
    if (ret == -E2BIG)
        snprintf(err, len, "--memory: %s MiB is more than this host's %llu MiB", s,
                 (unsigned long long)(mem_host_total() / MIB));
    else if (ret < 0)
        snprintf(err, len, "--memory: %s MiB must be at least %llu and a multiple of 2", s,
                 MEM_MIN_SIZE / MIB);
    *bytes = mib * MIB;
    return ret < 0 ? -EINVAL : 0;
}

static int args_cpus(const char *s, unsigned *cpus, char *err, size_t len)
{
    uint64_t n;

    if (parse_u64(s, &n) < 0 || n == 0 || n > VM_MAX_VCPUS) {
        snprintf(err, len, "--cpus: '%s' is not a vCPU count from 1 to %d", s, VM_MAX_VCPUS);
        return -EINVAL;
    }
    *cpus = (unsigned)n;
    return 0;
}

static int args_console(const char *s, char *err, size_t len)
{
    if (strcmp(s, "stdio") == 0 || strcmp(s, "none") == 0 ||
        (strncmp(s, "file:", 5) == 0 && s[5]))
        return 0;
    snprintf(err, len, "--console: '%s' is not stdio, none or file:PATH", s);
    return -EINVAL;
}

static int args_log_level(const char *s, int *level, char *err, size_t len)
{
    static const char *const names[] = { "error", "warning", "info", "debug" };

    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return *level = i, 0;
    snprintf(err, len, "--log-level: '%s' is not error, warning, info or debug", s);
    return -EINVAL;
}

static int args_disk_key(struct disk_config *d, const char *key, const char *val,
                         char *err, size_t len)
{
    if (strcmp(key, "path") == 0 && *val && strlen(val) < sizeof(d->path)) {
        snprintf(d->path, sizeof(d->path), "%s", val);
    } else if (strcmp(key, "readonly") == 0 && (!strcmp(val, "on") || !strcmp(val, "off"))) {
        d->readonly = strcmp(val, "on") == 0;
    } else if (strcmp(key, "serial") == 0 && strlen(val) <= BLK_SERIAL_MAX) {
        snprintf(d->serial, sizeof(d->serial), "%s", val);
    } else {
        snprintf(err, len, "--disk: bad %s=%s (path=FILE, readonly=on|off, serial=ID of "
                 "at most %d characters)", key, val, BLK_SERIAL_MAX);
        return -EINVAL;
    }
    return 0;
}

/* path=FILE[,readonly=on|off][,serial=ID]; a path cannot contain a comma. */
static int args_disk(const char *s, struct vm_config *c, char *err, size_t len)
{
    struct disk_config d = { .readonly = false };
    char buf[512], *save = NULL;

    if (c->ndisks >= BLK_MAX_DISKS || strlen(s) >= sizeof(buf)) {
        snprintf(err, len, "--disk: at most %d disks, each option under 512 characters",
                 BLK_MAX_DISKS);
        return -EINVAL;
    }
    snprintf(buf, sizeof(buf), "%s", s);
    for (char *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) {
            snprintf(err, len, "--disk: '%s' is not key=value", kv);
            return -EINVAL;
        }
        *eq = 0;
        if (args_disk_key(&d, kv, eq + 1, err, len) < 0)
            return -EINVAL;
    }
    if (!d.path[0]) {
        snprintf(err, len, "--disk needs path=FILE");
        return -EINVAL;
    }
    c->disks[c->ndisks++] = d;
    return 0;
}

static int args_net(const char *s, struct vm_config *c, char *err, size_t len)
{
    if (c->nnets >= NET_MAX_DEVICES) {
        snprintf(err, len, "--net: at most %d network devices", NET_MAX_DEVICES);
        return -EINVAL;
    }
    if (net_parse_option(s, c->nnets, &c->nets[c->nnets], err, len) < 0)
        return -EINVAL;
    c->nnets++;
    return 0;
}

/* An option copied into a fixed buffer: too long is an error, not a cut. */
static int args_copy(char *dst, size_t size, const char *val, const char *opt, char *err,
                     size_t len)
{
    if (!val[0] || strlen(val) >= size)
        return snprintf(err, len, "%s takes 1..%zu characters", opt, size - 1), -EINVAL;
    memcpy(dst, val, strlen(val) + 1);
    return 0;
}

static int args_one(int opt, struct run_args *a, char *err, size_t len)
{
    struct vm_config *c = &a->vm;

    switch (opt) {
    case OPT_KERNEL: c->kernel = optarg; return 0;
    case OPT_INITRD: c->initrd = optarg; return 0;
    case OPT_CMDLINE: c->cmdline = optarg; return 0;
    case OPT_MEMORY:
        c->memory_given = true;
        return args_memory(optarg, &c->mem_bytes, err, len);
    case OPT_CPUS:
        c->cpus_given = true;
        return args_cpus(optarg, &c->ncpus, err, len);
    case OPT_SNAPSHOT: a->snapshot = optarg; return 0;
    case OPT_PAUSED: a->paused = true; return 0;
    case OPT_INCOMING: a->incoming = optarg; return 0;
    case OPT_API_GROUP: a->api_group = optarg; return 0;
    case OPT_SANDBOX:
        a->no_sandbox = strcmp(optarg, "off") == 0;
        if (!a->no_sandbox && strcmp(optarg, "on") != 0)
            return snprintf(err, len, "--sandbox takes on or off"), -EINVAL;
        return 0;
    case OPT_TLS_DIR: return args_copy(a->tls.dir, sizeof(a->tls.dir), optarg, "--tls-dir",
                                       err, len);
    case OPT_TLS_AUTHZ: return args_copy(a->tls.authz, sizeof(a->tls.authz), optarg,
                                         "--tls-authz", err, len);
    case OPT_DIRTY_RING: c->dirty_ring = DIRTY_RING_ENTRIES; return 0;
    case OPT_API: c->api_socket = optarg; return 0;
    case OPT_CONSOLE: c->console = optarg; return args_console(optarg, err, len);
    case OPT_DEBUGCON: c->debugcon = optarg; return 0;
    case OPT_DISK: return args_disk(optarg, c, err, len);
    case OPT_NO_RNG: c->no_rng = true; return 0;
    case OPT_NET: return args_net(optarg, c, err, len);
    case OPT_LOG: return args_log_level(optarg, &a->log_level, err, len);
    case 'v': a->log_level = LOG_DEBUG; return 0;
    case 'h': return ARGS_HELP;
    default:
        snprintf(err, len, "unknown or incomplete option (see ferry run --help)");
        return -EINVAL;
    }
}

/* --incoming's URI and TLS options, by the parser the migration uses. */
static int args_check_incoming(struct run_args *a, char *err, size_t len)
{
    char why[256];

    if (mig_parse_uri(a->incoming, &a->incoming_ep, why, sizeof(why)) < 0)
        return snprintf(err, len, "--incoming: %s", why), -EINVAL;
    return tp_tls_check(&a->tls, err, len);
}

/* run needs a kernel; restore takes everything from its snapshot. */
static int args_check_verb(struct run_args *a, bool restore, char *err, size_t len)
{
    const char *bad = NULL;

    if (restore) {
        bad = !a->snapshot ? "--snapshot is required" :
              a->vm.kernel || a->vm.initrd || a->vm.cmdline ?
              "--kernel, --initrd and --cmdline come from the snapshot" : NULL;
        a->vm.restore = true;
    } else if (a->incoming) {
        bad = a->vm.kernel || a->vm.initrd || a->vm.cmdline ?
              "--kernel, --initrd and --cmdline come from the migration source" :
              a->snapshot || a->paused ? "--snapshot and --paused belong to ferry restore" : NULL;
        a->vm.restore = true;
        if (!bad)
            return args_check_incoming(a, err, len);
    } else {
        bad = !a->vm.kernel ? "--kernel is required" :
              a->tls.dir[0] || a->tls.authz[0] ? "--tls-dir and --tls-authz go with --incoming" :
              a->snapshot || a->paused ? "--snapshot and --paused belong to ferry restore" :
              NULL;
    }
    if (bad)
        snprintf(err, len, "%s", bad);
    return bad ? -EINVAL : 0;
}

int args_parse_run(int argc, char **argv, struct run_args *out, char *err, size_t errlen)
{
    int opt, ret;

    memset(out, 0, sizeof(*out));
    out->vm.mem_bytes = ARGS_DEFAULT_MEMORY_MIB * MIB;
    out->vm.ncpus = 1;
    out->vm.console = "stdio";
    out->log_level = LOG_INFO;
    optind = 0;   /* full getopt reset: callers may parse several times */
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "vh", run_options, NULL)) != -1) {
        ret = args_one(opt, out, err, errlen);
        if (ret)
            return ret;
    }
    if (optind < argc) {
        snprintf(err, errlen, "unexpected argument '%s'", argv[optind]);
        return -EINVAL;
    }
    return args_check_verb(out, strcmp(argv[0], "restore") == 0, err, errlen);
}
