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

#include "cli/client.h"

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
