#include "migration/postcopy.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "migration/dirty.h"
#include "migration/migration.h"
#include "state/pages.h"
#include "util/log.h"
#include "util/util.h"

void pc_bitmap_free(struct pc_bitmap *b)
{
    for (unsigned i = 0; i < b->n; i++)
        free(b->r[i].bits);
    memset(b, 0, sizeof(*b));
}

uint64_t pc_bitmap_count(const struct pc_bitmap *b)
{
    uint64_t n = 0;

    for (unsigned i = 0; i < b->n; i++)
        n += bitmap_count(b->r[i].bits, b->r[i].pages);
    return n;
}

int pc_bitmap_encode(const struct pc_bitmap *b, uint8_t **buf, uint64_t *len)
{
    uint64_t size = 4, off = 4;
    uint32_t n = b->n;

    for (unsigned i = 0; i < b->n; i++)
        size += 16 + 8 * bitmap_words(b->r[i].pages);
    *buf = malloc(size);
    if (!*buf)
        return -ENOMEM;
    memcpy(*buf, &n, 4);
    for (unsigned i = 0; i < b->n; i++) {
        uint64_t words = bitmap_words(b->r[i].pages);
        memcpy(*buf + off, &b->r[i].gpa, 8);
        memcpy(*buf + off + 8, &b->r[i].pages, 8);
        memcpy(*buf + off + 16, b->r[i].bits, 8 * words);
        off += 16 + 8 * words;
    }
    *len = size;
    return 0;
}

int pc_bitmap_init_empty(struct pc_bitmap *b, const struct guest_mem *mem)
{
    memset(b, 0, sizeof(*b));
    for (unsigned i = 0; i < mem->nregions; i++) {
        b->r[i].gpa = mem->regions[i].gpa;
        b->r[i].pages = mem->regions[i].size / PAGE_SIZE;
        b->r[i].bits = calloc(bitmap_words(b->r[i].pages), 8);
        b->n = i + 1;
        if (!b->r[i].bits)
            return pc_bitmap_free(b), -ENOMEM;
    }
    return 0;
}

/* The regions must be exactly the destination's: same layout, same sizes. */
int pc_bitmap_decode(struct pc_bitmap *b, const struct guest_mem *mem, const uint8_t *buf,
                     uint64_t len, const char **why)
{
    uint64_t off = 4;
    uint32_t n;

    memset(b, 0, sizeof(*b));
    if (len < 4 || (memcpy(&n, buf, 4), n != mem->nregions))
        return *why = "post-copy bitmap does not match the memory layout", -EBADMSG;
    for (unsigned i = 0; i < n; i++) {
        uint64_t gpa, pages, words;
        if (len - off < 16)
            return pc_bitmap_free(b), *why = "post-copy bitmap truncated", -EBADMSG;
        memcpy(&gpa, buf + off, 8);
        memcpy(&pages, buf + off + 8, 8);
        words = bitmap_words(pages);
        if (gpa != mem->regions[i].gpa || pages != mem->regions[i].size / PAGE_SIZE ||
            (len - off - 16) / 8 < words)
            return pc_bitmap_free(b), *why = "post-copy bitmap does not match the memory layout",
                   -EBADMSG;
        b->r[i].gpa = gpa;
        b->r[i].pages = pages;
        b->r[i].bits = malloc(8 * words);
        if (!b->r[i].bits)
            return pc_bitmap_free(b), -ENOMEM;
        memcpy(b->r[i].bits, buf + off + 16, 8 * words);
        if (pages % 64)   /* bits past the end must not count */
            b->r[i].bits[words - 1] &= (1ULL << (pages % 64)) - 1;
        b->n = i + 1;
        off += 16 + 8 * words;
    }
    return off == len ? 0 : (pc_bitmap_free(b), *why = "post-copy bitmap too long", -EBADMSG);
}

bool pc_bitmap_locate(const struct pc_bitmap *b, uint64_t gpa, unsigned *region, uint64_t *page)
{
    for (unsigned i = 0; i < b->n; i++) {
        if (gpa >= b->r[i].gpa && (gpa - b->r[i].gpa) / PAGE_SIZE < b->r[i].pages) {
            *region = i;
            *page = (gpa - b->r[i].gpa) / PAGE_SIZE;
            return true;
        }
    }
    return false;
}

bool pc_bitmap_test(const struct pc_bitmap *b, unsigned region, uint64_t page)
{
    return b->r[region].bits[page / 64] & (1ULL << (page % 64));
}

bool pc_bitmap_test_clear(struct pc_bitmap *b, unsigned region, uint64_t page)
{
    bool was = pc_bitmap_test(b, region, page);

    b->r[region].bits[page / 64] &= ~(1ULL << (page % 64));
    return was;
}

static int u32_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

void pc_latency_percentiles(const struct pc_stats *st, uint32_t *p50, uint32_t *p99,
                            uint32_t *max)
{
    uint32_t *c;

    *p50 = *p99 = *max = 0;
    if (!st->nlat || !(c = malloc(st->nlat * sizeof(*c))))
        return;
    memcpy(c, st->lat_us, st->nlat * sizeof(*c));
    qsort(c, st->nlat, sizeof(*c), u32_cmp);
    *p50 = c[(st->nlat - 1) / 2];
    *p99 = c[(uint64_t)(st->nlat - 1) * 99 / 100];
    *max = c[st->nlat - 1];
    free(c);
}

/* ---- destination ------------------------------------------------------- */

/* One fallocate per run of needed pages: this happens inside the downtime. */
static void pc_punch_needed(struct guest_mem *mem, unsigned region, const uint64_t *bits,
                            uint64_t pages)
{
    uint64_t pg = bitmap_next(bits, pages, 0);

    while (pg < pages) {
        uint64_t end = pg + 1;
        while (end < pages && (bits[end / 64] & (1ULL << (end % 64))))
            end++;
        fallocate(mem->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  (off_t)(mem->regions[region].offset + pg * PAGE_SIZE),
                  (off_t)((end - pg) * PAGE_SIZE));
        pg = bitmap_next(bits, pages, end);
    }
}

/* Inside the downtime: only what was not dropped before the pause. */
static void pc_punch_late(struct guest_mem *mem, unsigned i, const struct pc_bitmap *b,
                          const struct pc_bitmap *early)
{
    uint64_t words = bitmap_words(b->r[i].pages), *late;

    if (i >= early->n || !early->r[i].bits) {
        pc_punch_needed(mem, i, b->r[i].bits, b->r[i].pages);
        return;
    }
    late = malloc(words * 8);
    if (!late) {
        pc_punch_needed(mem, i, b->r[i].bits, b->r[i].pages);
        return;
    }
    for (uint64_t w = 0; w < words; w++)
        late[w] = b->r[i].bits[w] & ~early->r[i].bits[w];
    pc_punch_needed(mem, i, late, b->r[i].pages);
    free(late);
}

int pc_dst_discard_early(struct guest_mem *mem, const uint8_t *bitmap, uint64_t len,
                         struct pc_bitmap *done, const char **why)
{
    int ret;

    pc_bitmap_free(done);
    ret = pc_bitmap_decode(done, mem, bitmap, len, why);
    for (unsigned i = 0; ret == 0 && i < done->n; i++)
        pc_punch_needed(mem, i, done->r[i].bits, done->r[i].pages);
    return ret;
}

/* Stale copies of the pages still needed are dropped, so touching them
 * faults instead of reading old data. */
int pc_dst_prepare(struct pc_dst *p, struct guest_mem *mem, const uint8_t *bitmap,
                   uint64_t len, const char **why)
{
    int ret;

    struct pc_bitmap early = p->discarded;   /* survives the reset below */

    memset(p, 0, sizeof(*p));
    p->discarded = early;
    p->mem = mem;
    p->uffd = p->stop_efd = -1;
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->out_lock, NULL);
    pthread_cond_init(&p->changed, NULL);
    ret = pc_bitmap_decode(&p->needed, mem, bitmap, len, why);
    if (ret < 0)
        return ret;
    p->remaining = pc_bitmap_count(&p->needed);
    p->st.lat_us = calloc(PC_MAX_LATENCIES, sizeof(uint32_t));
    for (unsigned i = 0; i < p->needed.n && p->st.lat_us; i++) {
        const struct pc_bitmap *b = &p->needed;
        p->req_ns[i] = calloc(b->r[i].pages, sizeof(uint64_t));
        if (!p->req_ns[i])
            return *why = "out of memory", -ENOMEM;
        pc_punch_late(mem, i, b, &p->discarded);
    }
    pc_bitmap_free(&p->discarded);
    return p->st.lat_us ? 0 : (*why = "out of memory", -ENOMEM);
}

static int pc_send_request(struct pc_dst *p, uint64_t gpa)
{
    int ret = -ENOTCONN;

    pthread_mutex_lock(&p->out_lock);
    if (p->urgent_out && p->urgent_out->err == 0)
        ret = mig_send_ctrl(p->urgent_out, REC_PAGE_REQ, &gpa, sizeof(gpa));
    pthread_mutex_unlock(&p->out_lock);
    return ret;
}

/* Fills a page the source never sent (it was zero there) without a round trip. */
static void pc_zero_fill(struct pc_dst *p, uint64_t hva)
{
    struct uffdio_zeropage z = { .range = { .start = hva & ~(PAGE_SIZE - 1), .len = PAGE_SIZE } };

    if (ioctl(p->uffd, UFFDIO_ZEROPAGE, &z) < 0 && errno != EEXIST)
        log_warn("post-copy: UFFDIO_ZEROPAGE at 0x%llx: %s", (unsigned long long)hva,
                 strerror(errno));
}

static bool pc_hva_to_gpa(const struct guest_mem *mem, uint64_t hva, uint64_t *gpa)
{
    uint64_t off = hva - (uint64_t)(uintptr_t)mem->hva;

    for (unsigned i = 0; i < mem->nregions; i++) {
        const struct mem_region *r = &mem->regions[i];
        if (off >= r->offset && off - r->offset < r->size) {
            *gpa = r->gpa + ((off - r->offset) & ~(PAGE_SIZE - 1));
            return true;
        }
    }
    return false;
}

static void pc_handle_fault(struct pc_dst *p, uint64_t hva)
{
    uint64_t gpa, page;
    unsigned region;
    bool ask = false;

    if (!pc_hva_to_gpa(p->mem, hva, &gpa) || !pc_bitmap_locate(&p->needed, gpa, &region, &page))
        return;
    pthread_mutex_lock(&p->lock);
    if (!pc_bitmap_test(&p->needed, region, page)) {
        pthread_mutex_unlock(&p->lock);
        pc_zero_fill(p, hva);   /* or it has just arrived: EEXIST, harmless */
        __atomic_fetch_add(&p->st.zero_faults, 1, __ATOMIC_RELAXED);
        return;
    }
    if (!p->req_ns[region][page]) {
        p->req_ns[region][page] = time_now_ns();
        p->st.faults++;
        ask = true;
    }
    pthread_mutex_unlock(&p->lock);
    if (ask)
        pc_send_request(p, gpa);   /* if the channel is down, recovery asks again */
}

static void *pc_fault_thread(void *arg)
{
    struct pc_dst *p = arg;
    struct pollfd pfd[2] = { { .fd = p->uffd, .events = POLLIN },
                             { .fd = p->stop_efd, .events = POLLIN } };
    struct uffd_msg msg;

    pthread_setname_np(pthread_self(), "postcopy-fault");
    while (poll(pfd, 2, -1) >= 0 || errno == EINTR) {
        if (pfd[1].revents)
            break;
        if (!(pfd[0].revents & POLLIN))
            continue;
        if (read(p->uffd, &msg, sizeof(msg)) != sizeof(msg))
            continue;   /* EAGAIN: another reader or a spurious wakeup */
        if (msg.event == UFFD_EVENT_PAGEFAULT)
            pc_handle_fault(p, msg.arg.pagefault.address);
    }
    return NULL;
}

static int pc_uffd_open(struct pc_dst *p)
{
    struct uffdio_api api = { .api = UFFD_API };
    struct uffdio_register reg = {
        .range = { .start = (uint64_t)(uintptr_t)p->mem->hva, .len = p->mem->size },
        .mode = UFFDIO_REGISTER_MODE_MISSING,
    };

    p->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (p->uffd < 0)
        return -errno;
    if (ioctl(p->uffd, UFFDIO_API, &api) < 0 || ioctl(p->uffd, UFFDIO_REGISTER, &reg) < 0)
        return -errno;
    if (!(reg.ioctls & (1ULL << _UFFDIO_COPY)) || !(reg.ioctls & (1ULL << _UFFDIO_ZEROPAGE)))
        return -ENOTSUP;
    return 0;
}

int pc_dst_start(struct pc_dst *p)
{
    int ret = pc_uffd_open(p);

    if (ret < 0) {
        log_err("post-copy: userfaultfd on guest memory: %s", strerror(-ret));
        return ret;
    }
    p->stop_efd = eventfd(0, EFD_CLOEXEC);
    if (p->stop_efd < 0)
        return -errno;
    ret = -pthread_create(&p->fault_thread, NULL, pc_fault_thread, p);
    p->fault_thread_started = ret == 0;
    return ret;
}

/* Bookkeeping for n pages from gpa that have just been installed. */
static void pc_account(struct pc_dst *p, uint64_t gpa, uint64_t n, bool demand)
{
    uint64_t now = time_now_ns(), page;
    unsigned region;

    pthread_mutex_lock(&p->lock);
    for (uint64_t i = 0; i < n; i++) {
        if (!pc_bitmap_locate(&p->needed, gpa + i * PAGE_SIZE, &region, &page) ||
            !pc_bitmap_test_clear(&p->needed, region, page))
            continue;
        p->remaining--;
        if (p->req_ns[region][page]) {
            uint64_t lat = now - p->req_ns[region][page];
            p->st.blocked_ns += lat;
            if (p->st.nlat < PC_MAX_LATENCIES)
                p->st.lat_us[p->st.nlat++] = (uint32_t)MIN(lat / 1000, UINT32_MAX);
        }
        demand ? p->st.demanded++ : p->st.pushed++;
    }
    if (!p->remaining)
        pthread_cond_broadcast(&p->changed);
    pthread_mutex_unlock(&p->lock);
}

static bool pc_needed(struct pc_dst *p, uint64_t gpa)
{
    uint64_t page;
    unsigned region;
    bool needed;

    pthread_mutex_lock(&p->lock);
    needed = pc_bitmap_locate(&p->needed, gpa, &region, &page) &&
             pc_bitmap_test(&p->needed, region, page);
    pthread_mutex_unlock(&p->lock);
    return needed;
}

/* Installs n contiguous pages with as few UFFDIO_COPY calls as it can. A
 * page that is already there ends a call with EEXIST and is stepped over,
 * never overwritten: it was placed by the other channel (the same page can
 * be pushed and demanded at once), and the guest may have written it since. */
static void pc_copy_run(struct pc_dst *p, uint64_t gpa, const uint8_t *data, uint64_t n,
                        bool demand)
{
    uint64_t hva = (uint64_t)(uintptr_t)mem_ptr(p->mem, gpa, n * PAGE_SIZE), done = 0;

    while (done < n) {
        struct uffdio_copy c = { .dst = hva + done * PAGE_SIZE,
                                 .src = (uint64_t)(uintptr_t)(data + done * PAGE_SIZE),
                                 .len = (n - done) * PAGE_SIZE };
        uint64_t copied;

        if (ioctl(p->uffd, UFFDIO_COPY, &c) == 0)
            copied = n - done;
        else if (errno == EEXIST || errno == EAGAIN)
            copied = c.copy > 0 ? (uint64_t)c.copy / PAGE_SIZE : 0;
        else {
            log_warn("post-copy: UFFDIO_COPY at gpa 0x%llx: %s",
                     (unsigned long long)(gpa + done * PAGE_SIZE), strerror(errno));
            copied = 0;
        }
        pc_account(p, gpa + done * PAGE_SIZE, copied, demand);
        done += copied;
        if (done < n && copied == 0 && errno != EAGAIN) {
            pc_account(p, gpa + done * PAGE_SIZE, 1, demand);
            done++;
        }
    }
}

/* Length of the run of data entries from i with consecutive addresses. */
static uint32_t pc_run_length(const uint8_t *payload, uint32_t i, uint32_t count)
{
    uint64_t first, e;
    uint32_t n = 1;

    memcpy(&first, payload + 8 + 8ULL * i, 8);
    while (i + n < count) {
        memcpy(&e, payload + 8 + 8ULL * (i + n), 8);
        if (e != first + n * PAGE_SIZE)
            break;
        n++;
    }
    return n;
}

int pc_dst_place(struct pc_dst *p, const uint8_t *payload, uint64_t len, bool demand,
                 const char **why)
{
    uint32_t count;
    const uint8_t *data;
    int ret = pages_validate(p->mem, payload, len, &count, why);

    if (ret < 0)
        return ret;
    data = payload + 8 + 8ULL * count;
    for (uint32_t i = 0; i < count;) {
        uint64_t e, gpa;
        uint32_t n = 1;
        memcpy(&e, payload + 8 + 8ULL * i, 8);
        gpa = e & ~PAGE_F_MASK;
        if (!(e & PAGE_F_DATA)) {
            if (pc_needed(p, gpa)) {
                pc_zero_fill(p, (uint64_t)(uintptr_t)mem_ptr(p->mem, gpa, PAGE_SIZE));
                pc_account(p, gpa, 1, demand);
            }
        } else {
            n = pc_run_length(payload, i, count);
            if (!mem_ptr(p->mem, gpa, (uint64_t)n * PAGE_SIZE))
                n = 1;   /* a run across regions: page by page */
            pc_copy_run(p, gpa, data, n, demand);
            data += (uint64_t)n * PAGE_SIZE;
        }
        i += n;
    }
    return 0;
}

/* Every page requested and not yet here is asked for again on the new channel. */
void pc_dst_set_urgent(struct pc_dst *p, struct stream_io *out)
{
    pthread_mutex_lock(&p->out_lock);
    p->urgent_out = out;
    pthread_mutex_unlock(&p->out_lock);
    if (!out)
        return;
    pthread_mutex_lock(&p->lock);
    for (unsigned i = 0; i < p->needed.n; i++) {
        const struct pc_bitmap *b = &p->needed;
        for (uint64_t pg = bitmap_next(b->r[i].bits, b->r[i].pages, 0); pg < b->r[i].pages;
             pg = bitmap_next(b->r[i].bits, b->r[i].pages, pg + 1)) {
            uint64_t gpa = b->r[i].gpa + pg * PAGE_SIZE;
            if (!p->req_ns[i][pg])
                continue;
            pthread_mutex_unlock(&p->lock);
            pc_send_request(p, gpa);
            pthread_mutex_lock(&p->lock);
        }
    }
    pthread_mutex_unlock(&p->lock);
}

uint64_t pc_dst_remaining(struct pc_dst *p)
{
    uint64_t n;

    pthread_mutex_lock(&p->lock);
    n = p->remaining;
    pthread_mutex_unlock(&p->lock);
    return n;
}

void pc_dst_stop(struct pc_dst *p)
{
    uint64_t one = 1;

    if (p->fault_thread_started) {
        if (write(p->stop_efd, &one, sizeof(one)) < 0)
            log_warn("post-copy: stopping the fault thread: %s", strerror(errno));
        pthread_join(p->fault_thread, NULL);
        p->fault_thread_started = false;
    }
    if (p->uffd >= 0)
        close(p->uffd);   /* unregisters: later faults are ordinary again */
    if (p->stop_efd >= 0)
        close(p->stop_efd);
    p->uffd = p->stop_efd = -1;
    for (unsigned i = 0; i < MEM_MAX_REGIONS; i++) {
        free(p->req_ns[i]);
        p->req_ns[i] = NULL;
    }
    pc_bitmap_free(&p->needed);
}
