/* REST routes for live migration: start, status/report, cancel. */
#include "api/routes_migration.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "migration/migration.h"
#include "state/xcodec.h"
#include "util/util.h"
#include "vm/vm.h"

/* The largest values that still fit once made bytes/s and ns. */
#define MIG_MAX_BANDWIDTH_MIBS (UINT64_MAX >> 20)
#define MIG_MAX_TIME_S         (UINT64_MAX / 1000000000ULL)

/* The transfer engine's options: connections (-1: one per core, up to 4),
 * compression, delta cache, dirty tracking. */
static int mig_xfer_params(struct mig_params *p, json_int_t conns, const char *compress,
                           json_int_t delta, const char *dirty_track, char *err, size_t len)
{
    enum xc_algo a;

    if (conns < -1 || conns > MIG_MAX_CONNS)
        return snprintf(err, len, "connections must be 0..%d", MIG_MAX_CONNS), -EINVAL;
    if (xc_algo_parse(compress, &a) < 0)
        return snprintf(err, len, "compress must be none, lz4, zstd or auto"), -EINVAL;
    if (delta < 0 || delta > 65536)
        return snprintf(err, len, "delta_cache_mib must be 0..65536"), -EINVAL;
    p->dirty_track = strcmp(dirty_track, "ring") == 0 ? MIG_DIRTY_RING :
                     strcmp(dirty_track, "bitmap") == 0 ? MIG_DIRTY_BITMAP : MIG_DIRTY_AUTO;
    if (p->dirty_track == MIG_DIRTY_AUTO && strcmp(dirty_track, "auto") != 0)
        return snprintf(err, len, "dirty_track must be ring, bitmap or auto"), -EINVAL;
    p->connections = conns < 0 ? mig_default_connections() : (unsigned)conns;
    p->compress = a;
    p->delta_cache_bytes = (uint64_t)delta << 20;
    if (!p->connections && (a != XC_NONE || delta))
        return snprintf(err, len, "compression and delta encoding need connections >= 1"),
               -EINVAL;
    return 0;
}

static int mig_tls_from_json(struct mig_tls *t, const char *dir, const char *hostname,
                             char *err, size_t len)
{
    if (strlen(dir) >= sizeof(t->dir) || strlen(hostname) >= sizeof(t->hostname))
        return snprintf(err, len, "tls_dir and tls_hostname must be shorter than %zu "
                        "characters", sizeof(t->hostname)), -EINVAL;
    snprintf(t->dir, sizeof(t->dir), "%s", dir);
    snprintf(t->hostname, sizeof(t->hostname), "%s", hostname);
    return tp_tls_check(t, err, len);
}

static int mig_params_from_json(json_t *body, struct mig_params *p, int *wait, char *err,
                                size_t len)
{
    const char *uri = NULL, *on_timeout = "fail", *mode = "precopy", *compress = "none";
    const char *dirty_track = "auto", *tls_dir = "", *tls_hostname = "";
    json_int_t downtime = 300, bw = 0, max_time = 0, pc_after = 0, conns = -1, delta = 0;
    int auto_converge = 0;
    json_error_t jerr;

    memset(p, 0, sizeof(*p));
    if (!body || json_unpack_ex(body, &jerr, JSON_STRICT,
                                "{s:s, s?I, s?I, s?I, s?s, s?b, s?b, s?s, s?I, s?I, s?s, s?I, "
                                "s?s, s?s, s?s}",
                                "uri", &uri, "downtime_ms", &downtime, "bandwidth_mibs", &bw,
                                "max_time_s", &max_time, "on_timeout", &on_timeout,
                                "auto_converge", &auto_converge, "wait", wait, "mode", &mode,
                                "postcopy_after_rounds", &pc_after, "connections", &conns,
                                "compress", &compress, "delta_cache_mib", &delta,
                                "dirty_track", &dirty_track, "tls_dir", &tls_dir,
                                "tls_hostname", &tls_hostname) < 0) {
        snprintf(err, len, "bad migration request: %s", body ? jerr.text : "no body");
        return -EINVAL;
    }
    if (downtime < 1 || downtime > 3600000 || bw < 0 || max_time < 0 || pc_after < 0 ||
        pc_after > 100000 ||
        (strcmp(on_timeout, "fail") != 0 && strcmp(on_timeout, "force") != 0) ||
        (strcmp(mode, "precopy") != 0 && strcmp(mode, "postcopy") != 0 &&
         strcmp(mode, "hybrid") != 0)) {
        snprintf(err, len, "downtime_ms must be 1..3600000, bandwidth_mibs, max_time_s and "
                 "postcopy_after_rounds not negative, on_timeout fail or force, mode "
                 "precopy, postcopy or hybrid");
        return -EINVAL;
    }
    if ((uint64_t)bw > MIG_MAX_BANDWIDTH_MIBS)
        return snprintf(err, len, "bandwidth_mibs must be at most %llu MiB/s",
                        (unsigned long long)MIG_MAX_BANDWIDTH_MIBS), -EINVAL;
    if ((uint64_t)max_time > MIG_MAX_TIME_S)
        return snprintf(err, len, "max_time_s must be at most %llu s",
                        (unsigned long long)MIG_MAX_TIME_S), -EINVAL;
    if (mig_xfer_params(p, conns, compress, delta, dirty_track, err, len) < 0)
        return -EINVAL;
    p->mode = mode[0] == 'h' ? MIG_MODE_HYBRID : mode[4] == 'c' ? MIG_MODE_POSTCOPY
                                                                  : MIG_MODE_PRECOPY;
    p->postcopy_after_rounds = (unsigned)pc_after;
    policy_defaults(&p->policy);
    p->policy.downtime_limit_ns = (uint64_t)downtime * 1000000;
    p->policy.max_time_ns = (uint64_t)max_time * 1000000000ULL;
    p->policy.on_timeout = on_timeout[1] == 'o' ? ON_TIMEOUT_FORCE : ON_TIMEOUT_FAIL;
    p->policy.auto_converge = auto_converge;
    p->bandwidth_bps = (uint64_t)bw << 20;
    if (mig_tls_from_json(&p->tls, tls_dir, tls_hostname, err, len) < 0)
        return -EINVAL;
    if (mig_parse_uri(uri, &p->ep, err, len) < 0)
        return -EINVAL;
    if (p->ep.kind == MIG_EP_FD)
        return snprintf(err, len, "fd: is for --incoming only (a migration opens several "
                        "connections)"), -EINVAL;
    return 0;
}

/* The ring is a property of the VM (ferry run --dirty-ring): it replaces
 * the bitmap log, so each VM offers exactly one of them. */
static int mig_dirty_track_check(const struct vm *vm, struct mig_params *p, char *err,
                                 size_t len)
{
    if (p->dirty_track == MIG_DIRTY_AUTO)
        p->dirty_track = vm->dirty_ring ? MIG_DIRTY_RING : MIG_DIRTY_BITMAP;
    if (p->dirty_track == MIG_DIRTY_RING && !vm->dirty_ring)
        return snprintf(err, len, "dirty_track ring needs a VM started with --dirty-ring "
                        "(KVM's dirty ring is enabled before the vCPUs exist)"), -EINVAL;
    if (p->dirty_track == MIG_DIRTY_BITMAP && vm->dirty_ring)
        return snprintf(err, len, "this VM was started with --dirty-ring: its dirty pages "
                        "come from the ring, not the bitmap"), -EINVAL;
    return 0;
}

static int route_migration_start(void *ctx, json_t *body, json_t **resp)
{
    struct vm *vm = ctx;
    struct mig_params p;
    int wait = 0, ret;
    char err[256] = "";

    if (mig_params_from_json(body, &p, &wait, err, sizeof(err)) < 0) {
        *resp = api_error("%s", err);
        return 400;
    }
    if (mig_dirty_track_check(vm, &p, err, sizeof(err)) < 0) {
        *resp = api_error("%s", err);
        return 400;
    }
    if (vm->state != VM_RUNNING && vm->state != VM_PAUSED) {
        *resp = api_error("the VM is %s", vm_state_name(vm->state));
        return 409;
    }
    ret = mig_start(vm->mig, vm, &p, err, sizeof(err));
    if (ret < 0) {
        *resp = api_error("%s", err);
        return ret == -EBUSY ? 409 : ret == -EINVAL ? 400 : 500;
    }
    if (!wait) {
        *resp = mig_status_json(vm->mig);
        return 202;
    }
    mig_wait(vm->mig);
    *resp = mig_status_json(vm->mig);
    return vm->mig->state == MIG_COMPLETED ? 200 : 500;
}

static int route_migration_get(void *ctx, json_t *body, json_t **resp)
{
    struct vm *vm = ctx;

    (void)body;
    *resp = mig_status_json(vm->mig);
    return 200;
}

static int route_migration_cancel(void *ctx, json_t *body, json_t **resp)
{
    struct vm *vm = ctx;
    bool source = vm->mig->source;
    int ret = source ? mig_cancel(vm->mig) : mig_incoming_cancel(vm->mig);

    (void)body;
    if (ret == 0)
        return 204;
    *resp = api_error("%s", ret != -EINPROGRESS ? "no migration is in progress" : source ?
                      "the switchover or post-copy has started; it can no longer be cancelled "
                      "(in post-copy: migrate-recover, or migrate-abort to give the VM up)" :
                      "the VM's state is being applied or runs here; too late to cancel");
    return 409;
}

static int route_conflict(int ret, const char *what, json_t **resp)
{
    if (ret == 0)
        return 204;
    *resp = api_error("%s", what);
    return 409;
}

static int route_migration_postcopy(void *ctx, json_t *body, json_t **resp)
{
    struct vm *vm = ctx;

    (void)body;
    return route_conflict(mig_postcopy_now(vm->mig), "no pre-copy migration is running", resp);
}

/* {"uri": "tcp:HOST:PORT"} optional: where the destination listens now. */
static int route_migration_recover(void *ctx, json_t *body, json_t **resp)
{
    struct vm *vm = ctx;
    const char *uri = NULL;
    struct mig_endpoint ep;
    char err[256];
    int ret;

    if (body && (json_unpack(body, "{s?s}", "uri", &uri) < 0 ||
                 (uri && mig_parse_uri(uri, &ep, err, sizeof(err)) < 0))) {
        *resp = api_error("bad recover request: %s", uri ? err : "body must be {\"uri\": ...}");
        return 400;
    }
    if (uri && ep.kind == MIG_EP_FD) {
        *resp = api_error("bad recover request: fd: is for --incoming only");
        return 400;
    }
    ret = mig_recover(vm->mig, uri ? &ep : NULL);
    return route_conflict(ret, ret == -EALREADY ? "post-copy is not broken: nothing to recover"
                                                : "no post-copy migration is paused", resp);
}

static int route_migration_abort(void *ctx, json_t *body, json_t **resp)
{
    struct vm *vm = ctx;

    (void)body;
    return route_conflict(mig_abort(vm->mig), "no post-copy migration to abort "
                          "(before post-copy, use cancel: the VM stays here)", resp);
}

const struct api_route migration_routes[] = {
    { "PUT", "/v1/migration", route_migration_start },
    { "GET", "/v1/migration", route_migration_get },
    { "PUT", "/v1/migration/cancel", route_migration_cancel },
    { "PUT", "/v1/migration/postcopy", route_migration_postcopy },
    { "PUT", "/v1/migration/recover", route_migration_recover },
    { "PUT", "/v1/migration/abort", route_migration_abort },
};
const size_t migration_routes_count = ARRAY_SIZE(migration_routes);
