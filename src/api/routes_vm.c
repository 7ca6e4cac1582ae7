#include "api/routes_vm.h"

#include <errno.h>
#include <jansson.h>

#include "migration/migration.h"
#include "util/util.h"
#include "vm/vm.h"

static json_t *vcpu_json(struct vcpu *v)
{
    return json_pack("{s:i, s:s, s:I, s:I, s:I}", "id", (int)v->id,
                     "state", __atomic_load_n(&v->paused, __ATOMIC_RELAXED) ? "paused" : "running",
                     "exits", (json_int_t)__atomic_load_n(&v->exits, __ATOMIC_RELAXED),
                     "io_exits", (json_int_t)__atomic_load_n(&v->io_exits, __ATOMIC_RELAXED),
                     "guard_kicks", (json_int_t)__atomic_load_n(&v->guard_kicks, __ATOMIC_RELAXED));
}

static json_t *snapshot_json(struct vm *vm)
{
    struct snapshot_progress p;
    uint64_t ns;

    pthread_mutex_lock(&vm->lock);
    p = vm->snap;
    pthread_mutex_unlock(&vm->lock);
    p.bytes = __atomic_load_n(&vm->snap.bytes, __ATOMIC_RELAXED);
    ns = p.state == SNAP_SAVING ? time_now_ns() - p.started_ns : p.duration_ns;
    return json_pack("{s:s, s:s, s:I, s:I, s:s?}", "state", snapshot_state_name(p.state),
                     "path", p.path, "bytes_written", (json_int_t)p.bytes,
                     "elapsed_ms", (json_int_t)(ns / 1000000),
                     "error", p.state == SNAP_FAILED ? p.error : NULL);
}

static json_t *devices_json(struct vm *vm)
{
    json_t *a = json_array();

    for (unsigned i = 0; i < vm->virtio.n; i++) {
        json_t *o = json_object();
        virtio_dev_describe(vm->virtio.dev[i], o);
        json_array_append_new(a, o);
    }
    return a;
}

static int route_vm_get(void *ctx, json_t *body, json_t **resp)
{
    struct vm *vm = ctx;
    json_t *vcpus = json_array();

    (void)body;
    for (unsigned i = 0; i < vm->ncpus; i++)
        json_array_append_new(vcpus, vcpu_json(&vm->vcpus[i]));
    *resp = json_pack("{s:s, s:i, s:I, s:I, s:s?, s:s?, s:o, s:o, s:o}",
                      "state", vm_state_name(vm->state),
                      "vcpus", (int)vm->ncpus,
                      "memory_mib", (json_int_t)(vm->mem.size / MIB),
                      "uptime_ms", (json_int_t)(vm_uptime_ns(vm) / 1000000),
                      "kernel", vm->cfg->kernel,
                      "cmdline", vm->cfg->cmdline,
                      "vcpu_states", vcpus,
                      "snapshot", snapshot_json(vm),
                      "devices", devices_json(vm));
    return 200;
}

/* Pause and resume share this: serialised with snapshots and migration. */
static int route_vm_transition(struct vm *vm, int (*fn)(struct vm *), const char *want,
                               json_t **resp)
{
    int ret;

    pthread_mutex_lock(&vm->op_lock);
    ret = fn(vm);
    pthread_mutex_unlock(&vm->op_lock);
    if (ret == 0)
        return 204;
    *resp = api_error("the VM is not %s", want);
    return 409;
}

static int route_vm_pause(void *ctx, json_t *body, json_t **resp)
{
    (void)body;
    return route_vm_transition(ctx, vm_pause, "running", resp);
}

static int route_vm_resume(void *ctx, json_t *body, json_t **resp)
{
    (void)body;
    return route_vm_transition(ctx, vm_resume, "paused", resp);
}

/* PUT /v1/vm/snapshot {"path": "/abs/file", "resume": false}: answers when
 * the file is complete; GET /v1/vm shows progress meanwhile. */
static int route_vm_snapshot(void *ctx, json_t *body, json_t **resp)
{
    struct vm *vm = ctx;
    struct snapshot_result r;
    const char *path = NULL;
    int resume = 0, ret;
    char err[256] = "";
    json_error_t jerr;

    if (!body || json_unpack_ex(body, &jerr, JSON_STRICT, "{s:s, s?b}", "path", &path,
                                "resume", &resume) < 0) {
        *resp = api_error("body must be {\"path\": string, \"resume\": bool}");
        return 400;
    }
    if (path[0] != '/') {
        *resp = api_error("path must be absolute: %s", path);
        return 400;
    }
    /* The VM layer knows nothing of migrations: asked here, where both meet. */
    if (vm->mig && (mig_active(vm->mig) || mig_memory_incomplete(vm->mig))) {
        *resp = api_error("snapshot failed: a migration is running");
        return 409;
    }
    ret = vm_snapshot(vm, path, resume, &r, err, sizeof(err));
    if (ret < 0) {
        *resp = api_error("snapshot failed: %s", err);
        return ret == -EBUSY ? 409 :
               ret == -ENOENT || ret == -ENOTDIR || ret == -EACCES || ret == -EISDIR ? 400 : 500;
    }
    *resp = json_pack("{s:s, s:I, s:I, s:I, s:I, s:s}", "path", path,
                      "bytes", (json_int_t)r.bytes, "pages", (json_int_t)r.pages,
                      "zero_pages", (json_int_t)r.zero_pages,
                      "duration_ms", (json_int_t)(r.duration_ns / 1000000),
                      "state", vm_state_name(vm->state));
    return 200;
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
    { "PUT", "/v1/vm/snapshot", route_vm_snapshot },
};
const size_t vm_routes_count = ARRAY_SIZE(vm_routes);
