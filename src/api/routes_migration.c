/* REST routes for live migration: start, status/report, cancel. */
#include "api/routes_migration.h"

#include <errno.h>
#include <jansson.h>
#include <string.h>

#include "migration/migration.h"
#include "util/util.h"
#include "vm/vm.h"

static int mig_params_from_json(json_t *body, struct mig_params *p, int *wait, char *err,
                                size_t len)
{
    const char *uri = NULL, *on_timeout = "fail";
    json_int_t downtime = 300, bw = 0, max_time = 0;
    int auto_converge = 0;
    json_error_t jerr;

    if (!body || json_unpack_ex(body, &jerr, JSON_STRICT, "{s:s, s?I, s?I, s?I, s?s, s?b, s?b}",
                                "uri", &uri, "downtime_ms", &downtime, "bandwidth_mibs", &bw,
                                "max_time_s", &max_time, "on_timeout", &on_timeout,
                                "auto_converge", &auto_converge, "wait", wait) < 0) {
        snprintf(err, len, "bad migration request: %s", body ? jerr.text : "no body");
        return -EINVAL;
    }
    if (downtime < 1 || downtime > 3600000 || bw < 0 || max_time < 0 ||
        (strcmp(on_timeout, "fail") != 0 && strcmp(on_timeout, "force") != 0)) {
        snprintf(err, len, "downtime_ms must be 1..3600000, bandwidth_mibs and max_time_s "
                 "not negative, on_timeout fail or force");
        return -EINVAL;
    }
    policy_defaults(&p->policy);
    p->policy.downtime_limit_ns = (uint64_t)downtime * 1000000;
    p->policy.max_time_ns = (uint64_t)max_time * 1000000000ULL;
    p->policy.on_timeout = on_timeout[1] == 'o' ? ON_TIMEOUT_FORCE : ON_TIMEOUT_FAIL;
    p->policy.auto_converge = auto_converge;
    p->bandwidth_bps = (uint64_t)bw << 20;
    return mig_parse_uri(uri, p->host, sizeof(p->host), p->port, sizeof(p->port), err, len);
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
    if (vm->state != VM_RUNNING && vm->state != VM_PAUSED) {
        *resp = api_error("the VM is %s", vm_state_name(vm->state));
        return 409;
    }
    ret = mig_start(vm->mig, vm, &p, err, sizeof(err));
    if (ret < 0) {
        *resp = api_error("%s", err);
        return ret == -EBUSY ? 409 : 500;
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
    int ret = vm->mig->source ? mig_cancel(vm->mig) : -ENOENT;

    (void)body;
    if (ret == 0)
        return 204;
    *resp = api_error("%s", ret == -EINPROGRESS ?
                      "the switchover has started; it can no longer be cancelled" :
                      "no migration is in progress");
    return 409;
}

const struct api_route migration_routes[] = {
    { "PUT", "/v1/migration", route_migration_start },
    { "GET", "/v1/migration", route_migration_get },
    { "PUT", "/v1/migration/cancel", route_migration_cancel },
};
const size_t migration_routes_count = ARRAY_SIZE(migration_routes);
