#include "api/routes_vm.h"

#include <errno.h>
#include <jansson.h>

#include "util/util.h"
#include "vm/vm.h"

static json_t *vcpu_json(struct vcpu *v)
{
    return json_pack("{s:i, s:s, s:I, s:I}", "id", (int)v->id,
                     "state", __atomic_load_n(&v->paused, __ATOMIC_RELAXED) ? "paused" : "running",
                     "exits", (json_int_t)__atomic_load_n(&v->exits, __ATOMIC_RELAXED),
                     "io_exits", (json_int_t)__atomic_load_n(&v->io_exits, __ATOMIC_RELAXED));
}

static int route_vm_get(void *ctx, json_t *body, json_t **resp)
{
    struct vm *vm = ctx;
    json_t *vcpus = json_array();

    (void)body;
    for (unsigned i = 0; i < vm->ncpus; i++)
        json_array_append_new(vcpus, vcpu_json(&vm->vcpus[i]));
    *resp = json_pack("{s:s, s:i, s:I, s:I, s:s, s:s?, s:o}",
                      "state", vm_state_name(vm->state),
                      "vcpus", (int)vm->ncpus,
                      "memory_mib", (json_int_t)(vm->mem.size / MIB),
                      "uptime_ms", (json_int_t)(vm_uptime_ns(vm) / 1000000),
                      "kernel", vm->cfg->kernel,
                      "cmdline", vm->cfg->cmdline,
                      "vcpu_states", vcpus);
    return 200;
}

static int route_vm_state_change(int ret, const char *want, json_t **resp)
{
    if (ret == 0)
        return 204;
    *resp = api_error("the VM is not %s", want);
    return 409;
}

static int route_vm_pause(void *ctx, json_t *body, json_t **resp)
{
    (void)body;
    return route_vm_state_change(vm_pause(ctx), "running", resp);
}

static int route_vm_resume(void *ctx, json_t *body, json_t **resp)
{
    (void)body;
    return route_vm_state_change(vm_resume(ctx), "paused", resp);
}

static int route_vm_shutdown(void *ctx, json_t *body, json_t **resp)
{
    (void)body;
    (void)resp;
    vm_request_stop(ctx, 0, "shut down through the API");
    return 204;
}

const struct api_route vm_routes[] = {
    { "GET", "/v1/vm", route_vm_get },
    { "PUT", "/v1/vm/pause", route_vm_pause },
    { "PUT", "/v1/vm/resume", route_vm_resume },
    { "PUT", "/v1/vm/shutdown", route_vm_shutdown },
};
const size_t vm_routes_count = ARRAY_SIZE(vm_routes);
