#include "cli/verbs.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/client.h"
#include "cli/watch.h"

static void snapshot_usage(void)
{
    fprintf(stderr, "usage: ferry snapshot --api-socket PATH FILE [--resume]\n"
                    "  pauses the VM and writes its snapshot to FILE; the VM stays\n"
                    "  paused unless --resume is given\n");
}

/* The VMM may run in another directory: send it an absolute path. */
static int snapshot_abs_path(const char *file, char *out, size_t len)
{
    char dir[PATH_MAX], base[PATH_MAX], real[PATH_MAX];

    snprintf(dir, sizeof(dir), "%s", file);
    snprintf(base, sizeof(base), "%s", file);
    if (!realpath(dirname(dir), real))
        return -errno;
    if ((size_t)snprintf(out, len, "%s/%s", real, basename(base)) >= len)
        return -ENAMETOOLONG;
    return 0;
}

static int snapshot_request(const char *sock, const char *file, bool resume)
{
    char path[PATH_MAX];
    json_t *body;
    char *text;
    int ret = snapshot_abs_path(file, path, sizeof(path));

    if (ret < 0) {
        fprintf(stderr, "ferry snapshot: %s: %s\n", file, strerror(-ret));
        return CLIENT_EXIT_USAGE;
    }
    body = json_pack("{s:s, s:b}", "path", path, "resume", resume);
    text = json_dumps(body, JSON_COMPACT);
    ret = client_verb_request("snapshot", sock, "PUT", "/v1/vm/snapshot", text);
    free(text);
    json_decref(body);
    return ret;
}

int verb_snapshot_main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "api-socket", required_argument, NULL, 's' },
        { "resume", no_argument, NULL, 'r' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *sock = NULL;
    bool resume = false;
    int opt;

    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (opt == 's')
            sock = optarg;
        else if (opt == 'r')
            resume = true;
        else
            return snapshot_usage(), opt == 'h' ? 0 : CLIENT_EXIT_USAGE;
    }
    if (!sock || optind != argc - 1) {
        snapshot_usage();
        return CLIENT_EXIT_USAGE;
    }
    return snapshot_request(sock, argv[optind], resume);
}

static void migrate_usage(void)
{
    fprintf(stderr,
        "usage: ferry migrate --api-socket PATH tcp:HOST:PORT|unix:PATH [options]\n"
        "  --downtime-ms N        downtime limit (default 300)\n"
        "  --bandwidth MiB/s      cap the transfer rate (default: no cap)\n"
        "  --max-time S           give up after S seconds of pre-copy ...\n"
        "  --on-timeout fail|force  ... or switch over anyway (default fail)\n"
        "  --auto-converge        throttle vCPUs when memory is dirtied too fast\n"
        "  --mode precopy|postcopy|hybrid   (default precopy)\n"
        "  --postcopy-after-rounds N        hybrid: switch to post-copy after N rounds\n"
        "  --connections N        data connections (default: one per core, up to 4;\n"
        "                         0: pages on the main channel)\n"
        "  --compress none|lz4|zstd|auto    per-batch compression (default none)\n"
        "  --delta                delta-encode pages sent again (64 MiB cache)\n"
        "  --delta-cache MiB      ... with this cache size (0: off)\n"
        "  --dirty-track bitmap|ring|auto   dirty tracking (default auto: ring on a VM\n"
        "                         run with --dirty-ring, else bitmap)\n"
        "  --tls-dir DIR          mutual TLS on every connection: DIR/ca-cert.pem,\n"
        "                         client-cert.pem, client-key.pem (make certs)\n"
        "  --tls-hostname NAME    name the destination's certificate must carry\n"
        "                         (default: the URI's host)\n"
        "  --wait                 show progress (stderr), end with a summary; Ctrl-C\n"
        "                         cancels the migration (before post-copy)\n"
        "  --json                 with --wait: print the whole report as JSON instead\n");
}

struct migrate_opts {
    const char *sock;
    const char *uri;
    long long downtime_ms, bandwidth, max_time, pc_after, connections, delta_mib;
    const char *on_timeout;
    const char *mode;
    const char *compress, *dirty_track;
    const char *tls_dir, *tls_hostname;
    char tls_path[4096];
    bool auto_converge, wait, json;
};

static int migrate_number(const char *s, long long *out, const char *name)
{
    char *end;

    errno = 0;
    *out = strtoll(s, &end, 10);
    if (errno || *end || !*s || *out < 0) {
        fprintf(stderr, "ferry migrate: %s: '%s' is not a number\n", name, s);
        return -EINVAL;
    }
    return 0;
}

/* The VMM reads the files: it gets an absolute path (its cwd is not ours). */
static int migrate_tls_dir(const char *dir, struct migrate_opts *o)
{
    if (!realpath(dir, o->tls_path)) {
        fprintf(stderr, "ferry migrate: --tls-dir %s: %s\n", dir, strerror(errno));
        return -EINVAL;
    }
    o->tls_dir = o->tls_path;
    return 0;
}

static int migrate_parse(int argc, char **argv, struct migrate_opts *o)
{
    static const struct option opts[] = {
        { "api-socket", required_argument, NULL, 's' },
        { "downtime-ms", required_argument, NULL, 'd' },
        { "bandwidth", required_argument, NULL, 'b' },
        { "max-time", required_argument, NULL, 't' },
        { "on-timeout", required_argument, NULL, 'o' },
        { "auto-converge", no_argument, NULL, 'a' },
        { "wait", no_argument, NULL, 'w' },
        { "json", no_argument, NULL, 'j' },
        { "mode", required_argument, NULL, 'm' },
        { "postcopy-after-rounds", required_argument, NULL, 'p' },
        { "connections", required_argument, NULL, 'c' },
        { "compress", required_argument, NULL, 'z' },
        { "delta", no_argument, NULL, 'D' },
        { "delta-cache", required_argument, NULL, 'C' },
        { "dirty-track", required_argument, NULL, 'T' },
        { "tls-dir", required_argument, NULL, 'L' },
        { "tls-hostname", required_argument, NULL, 'H' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int opt, ret = 0;

    *o = (struct migrate_opts){ .downtime_ms = 300, .on_timeout = "fail", .mode = "precopy",
                                .connections = -1, .compress = "none",
                                .dirty_track = "auto" };
    optind = 0;
    opterr = 0;
    while (ret == 0 && (opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 's': o->sock = optarg; break;
        case 'd': ret = migrate_number(optarg, &o->downtime_ms, "--downtime-ms"); break;
        case 'b': ret = migrate_number(optarg, &o->bandwidth, "--bandwidth"); break;
        case 't': ret = migrate_number(optarg, &o->max_time, "--max-time"); break;
        case 'o': o->on_timeout = optarg; break;
        case 'a': o->auto_converge = true; break;
        case 'w': o->wait = true; break;
        case 'j': o->json = true; break;
        case 'm': o->mode = optarg; break;
        case 'p': ret = migrate_number(optarg, &o->pc_after, "--postcopy-after-rounds"); break;
        case 'c': ret = migrate_number(optarg, &o->connections, "--connections"); break;
        case 'z': o->compress = optarg; break;
        case 'D': o->delta_mib = 64; break;
        case 'C': ret = migrate_number(optarg, &o->delta_mib, "--delta-cache"); break;
        case 'T': o->dirty_track = optarg; break;
        case 'L': ret = migrate_tls_dir(optarg, o); break;
        case 'H': o->tls_hostname = optarg; break;
        case 'h': return 1;
        default: fprintf(stderr, "ferry migrate: unknown option %s\n", argv[optind - 1]); return -EINVAL;
        }
    }
    if (ret == 0 && (!o->sock || optind != argc - 1))
        return -EINVAL;
    o->uri = ret == 0 ? argv[optind] : NULL;
    return ret;
}

int verb_migrate_main(int argc, char **argv)
{
    struct migrate_opts o;
    json_t *body;
    char *text;
    int ret = migrate_parse(argc, argv, &o);

    if (ret) {
        migrate_usage();
        return ret > 0 ? 0 : CLIENT_EXIT_USAGE;
    }
    body = json_pack("{s:s, s:I, s:I, s:I, s:s, s:b, s:b, s:s, s:I}", "uri", o.uri,
                     "downtime_ms", (json_int_t)o.downtime_ms, "bandwidth_mibs",
                     (json_int_t)o.bandwidth, "max_time_s", (json_int_t)o.max_time,
                     "on_timeout", o.on_timeout, "auto_converge", o.auto_converge,
                     "wait", o.wait, "mode", o.mode, "postcopy_after_rounds",
                     (json_int_t)o.pc_after);
    json_object_set_new(body, "compress", json_string(o.compress));
    json_object_set_new(body, "delta_cache_mib", json_integer(o.delta_mib));
    json_object_set_new(body, "dirty_track", json_string(o.dirty_track));
    if (o.connections >= 0)
        json_object_set_new(body, "connections", json_integer(o.connections));
    if (o.tls_dir)
        json_object_set_new(body, "tls_dir", json_string(o.tls_dir));
    if (o.tls_hostname)
        json_object_set_new(body, "tls_hostname", json_string(o.tls_hostname));
    text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    ret = o.wait ? migrate_watch(o.sock, text, o.json)
                 : client_verb_request("migrate", o.sock, "PUT", "/v1/migration", text);
    free(text);
    return ret;
}

/* {"uri": URI}, built by jansson: it escapes quotes and backslashes.
 * NULL if URI is not UTF-8 (or out of memory). */
static char *verb_uri_body(const char *uri)
{
    json_t *json = json_pack("{s:s}", "uri", uri);
    char *body = json ? json_dumps(json, JSON_COMPACT) : NULL;

    json_decref(json);
    return body;
}

/* migrate-status (GET), migrate-cancel, migrate-postcopy, migrate-abort, and
 * migrate-recover [tcp:HOST:PORT] (PUT /v1/migration/<action>). */
int verb_migrate_simple_main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "api-socket", required_argument, NULL, 's' },
        { NULL, 0, NULL, 0 },
    };
    const char *sock = NULL, *action = argv[0] + strlen("migrate-");
    bool takes_uri = strcmp(action, "recover") == 0;
    char path[64], *body = NULL;
    int opt, ret;

    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt != 's')
            goto usage;
        sock = optarg;
    }
    if (!sock || argc - optind > (takes_uri ? 1 : 0))
        goto usage;
    if (strcmp(action, "status") == 0)
        return client_verb_request(argv[0], sock, "GET", "/v1/migration", NULL);
    snprintf(path, sizeof(path), "/v1/migration/%s", action);
    if (optind < argc && !(body = verb_uri_body(argv[optind]))) {
        fprintf(stderr, "ferry %s: the URI is not valid UTF-8\n", argv[0]);
        return CLIENT_EXIT_USAGE;
    }
    ret = client_verb_request(argv[0], sock, "PUT", path, body);
    free(body);
    return ret;
usage:
    fprintf(stderr, "usage: ferry %s --api-socket PATH%s\n", argv[0],
            takes_uri ? " [tcp:HOST:PORT]" : "");
    return CLIENT_EXIT_USAGE;
}
