/* Snapshot and restore: the VM state stream written to / read from a file.
 * Migration sends the very same records over TCP. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "state/pages.h"
#include "state/xpages.h"
#include "util/log.h"
#include "util/util.h"
#include "vm/vm.h"

#define SNAPSHOT_IOBUF (1u << 20)

const char *snapshot_state_name(int state)
{
    static const char *const names[] = { "idle", "saving", "done", "failed" };
    return names[state];
}

/* The CPU model the guest was offered: vendor, family and feature leaves. */
uint64_t vm_cpuid_fingerprint(struct vm *vm)
{
    XXH64_state_t st;
    static const uint32_t leaves[] = { 0, 1, 7, 0xd, 0x80000001, 0x40000001 };

    XXH64_reset(&st, 0);
    for (size_t i = 0; i < ARRAY_SIZE(leaves); i++) {
        struct kvm_cpuid_entry2 *e = cpuid_find(&vm->cpuid, leaves[i], 0);
        if (e) {
            uint32_t regs[5] = { e->function, e->eax, e->ebx, e->ecx, e->edx };
            if (leaves[i] == 1)
                regs[2] &= 0x0000ffffU;   /* APIC id and CPU count are per VM */
            XXH64_update(&st, regs, sizeof(regs));
        }
    }
    return XXH64_digest(&st);
}

static int snapshot_write(struct vm *vm, int fd, struct snapshot_result *res,
                          char *err, size_t len)
{
    struct stream_io io;
    struct stream_header h;
    struct page_stats ps = { 0 };
    int khz = ioctl(vm->vcpus[0].fd, KVM_GET_TSC_KHZ, 0);
    int ret = stream_io_init(&io, fd, SNAPSHOT_IOBUF);

    io.progress = &vm->snap.bytes;
    stream_header_init(&h, vm->mem.size, vm->ncpus, vm_cpuid_fingerprint(vm),
                       khz > 0 ? (uint64_t)khz : 0);
    if (ret == 0)
        ret = stream_write(&io, &h, sizeof(h));
    if (ret == 0 && (ret = pages_save_all(&vm->mem, &io, &ps)) < 0)
        snprintf(err, len, "writing guest memory: %s", strerror(-ret));
    if (ret == 0)
        ret = state_save_sections(&vm->sections, &io, err, len);
    if (ret == 0)
        ret = stream_put_record(&io, REC_END, 0, 0, 1, 0, NULL, 0);
    if (ret == 0)
        ret = stream_flush(&io);
    if (ret < 0 && !err[0])
        snprintf(err, len, "writing the snapshot: %s", strerror(-ret));
    res->bytes = io.bytes;
    res->pages = ps.normal;
    res->zero_pages = ps.zero;
    stream_io_free(&io);
    return ret;
}

/* Written under a temporary name and renamed: a failed snapshot never
 * leaves a truncated file where a good one is expected. */
static int snapshot_to_file(struct vm *vm, const char *path, struct snapshot_result *res,
                            char *err, size_t len)
{
    char tmp[PATH_MAX];
    int fd, ret;

    snprintf(tmp, sizeof(tmp), "%s.partial", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, len, "%s: %s", tmp, strerror(errno));
        return -errno;
    }
    ret = snapshot_write(vm, fd, res, err, len);
    if (ret == 0 && fsync(fd) < 0)
        ret = -errno, snprintf(err, len, "%s: fsync: %s", tmp, strerror(errno));
    close(fd);
    if (ret == 0 && rename(tmp, path) < 0)
        ret = -errno, snprintf(err, len, "%s: %s", path, strerror(errno));
    if (ret < 0)
        unlink(tmp);
    return ret;
}

static void snapshot_progress_begin(struct vm *vm, const char *path)
{
    pthread_mutex_lock(&vm->lock);
    memset(&vm->snap, 0, sizeof(vm->snap));
    vm->snap.state = SNAP_SAVING;
    vm->snap.started_ns = time_now_ns();
    snprintf(vm->snap.path, sizeof(vm->snap.path), "%s", path);
    pthread_mutex_unlock(&vm->lock);
}

static void snapshot_progress_end(struct vm *vm, int ret, const char *err)
{
    pthread_mutex_lock(&vm->lock);
    vm->snap.state = ret == 0 ? SNAP_DONE : SNAP_FAILED;
    vm->snap.duration_ns = time_now_ns() - vm->snap.started_ns;
    snprintf(vm->snap.error, sizeof(vm->snap.error), "%s", ret == 0 ? "" : err);
    pthread_mutex_unlock(&vm->lock);
}

int vm_snapshot(struct vm *vm, const char *path, bool resume, struct snapshot_result *res,
                char *err, size_t len)
{
    int ret = 0;

    memset(res, 0, sizeof(*res));
    pthread_mutex_lock(&vm->op_lock);
    if (vm->state == VM_RUNNING)
        ret = vm_pause(vm);
    if (ret == 0 && vm->state != VM_PAUSED)
        ret = -EBUSY;
    if (ret < 0) {
        snprintf(err, len, "the VM is %s", vm_state_name(vm->state));
        pthread_mutex_unlock(&vm->op_lock);
        return ret;
    }
    snapshot_progress_begin(vm, path);
    ret = snapshot_to_file(vm, path, res, err, len);
    snapshot_progress_end(vm, ret, err);
    res->duration_ns = vm->snap.duration_ns;
    if (resume)
        vm_resume(vm);   /* after a failure too: a failed snapshot must not stop the VM */
    pthread_mutex_unlock(&vm->op_lock);
    if (ret == 0)
        log_info("snapshot %s: %llu bytes, %llu pages in %llu ms", path,
                 (unsigned long long)res->bytes, (unsigned long long)res->pages,
                 (unsigned long long)(res->duration_ns / 1000000));
    return ret;
}

int vm_read_header(int fd, struct stream_header *h, char *err, size_t len)
{
    const char *why = "";
    ssize_t n;
    int ret;

    n = read(fd, h, sizeof(*h));
    if (n != (ssize_t)sizeof(*h)) {
        snprintf(err, len, "stream header: %s", n < 0 ? strerror(errno) : "file too short");
        return n < 0 ? -errno : -EBADMSG;
    }
    ret = stream_header_check(h, &why);
    if (ret < 0)
        snprintf(err, len, "stream header: %s", why);
    return ret;
}

/* Parallel-engine batches met in one stream (a fuzzer, a future writer):
 * applied like on a connection, with a context of their own. */
static int vm_apply_xpages(struct vm *vm, const struct stream_record *r, const uint8_t *p,
                           char *err, size_t len)
{
    static struct xpages_ctx ctx;
    const char *why = "";
    int ret = ctx.raw ? 0 : xpages_ctx_init(&ctx);

    ctx.last_round = 0;   /* one ordered stream: rounds only matter per connection */
    if (ret == 0)
        ret = xpages_apply(&vm->mem, p, r->length, &ctx, &why);
    else
        why = "out of memory";
    if (ret < 0)
        snprintf(err, len, "memory pages: %s", why);
    return ret;
}

int vm_apply_record(struct vm *vm, const struct stream_record *r, const uint8_t *p,
                          char *err, size_t len)
{
    const char *why = "";
    int ret;

    if (r->type == REC_PAGES) {
        ret = pages_load(&vm->mem, p, r->length, &why);
        if (ret < 0)
            snprintf(err, len, "memory pages: %s", why);
        return ret;
    }
    if (r->type == REC_XPAGES)
        return vm_apply_xpages(vm, r, p, err, len);
    if (r->type != REC_SECTION) {
        snprintf(err, len, "unexpected record type %u in a state stream", r->type);
        return -EBADMSG;
    }
    return state_load_section(&vm->sections, r, p, err, len);
}

/* Reads records after the header until the end marker. Sections are applied
 * as they come; on any error the VM is never started. */
int vm_restore_stream(struct vm *vm, int fd, char *err, size_t len)
{
    struct stream_io io;
    struct stream_record r;
    const char *why = "";
    uint8_t *payload;
    int ret = stream_io_init(&io, fd, SNAPSHOT_IOBUF);

    while (ret == 0) {
        ret = stream_get_record(&io, &r, &payload, &why);
        if (ret < 0) {
            snprintf(err, len, "%s (after %llu bytes)", why, (unsigned long long)io.bytes);
            break;
        }
        if (r.type == REC_END) {
            free(payload);
            ret = state_check_complete(&vm->sections, err, len);
            break;
        }
        ret = vm_apply_record(vm, &r, payload, err, len);
        free(payload);
    }
    stream_io_free(&io);
    return ret;
}
