/* The state stream codec: walker, header, records, section registry (with
 * an older section version), and page records. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <cmocka.h>

#include "codec/zero.h"
#include "devices/rtc.h"
#include "state/pages.h"
#include "state/state.h"
#include "util/sockio.h"
#include "util/util.h"

struct demo {
    uint32_t a;
    uint64_t b;
    bool c;
    uint8_t blob[5];
};

static int demo_walk(struct state_walker *w, void *obj)
{
    struct demo *d = obj;

    walk_u32(w, &d->a, "a");
    walk_u64(w, &d->b, "b");
    walk_bool(w, &d->c, "c");
    return walk_buf(w, d->blob, sizeof(d->blob), "blob");
}

static void test_walk_roundtrip(void **state)
{
    struct demo in = { 7, 0x1122334455667788ULL, true, "abcd" }, out = { 0 };
    struct state_walker w, r;

    (void)state;
    walk_init_save(&w, 1);
    assert_int_equal(demo_walk(&w, &in), 0);
    assert_int_equal(w.len, 4 + 8 + 1 + 5);
    walk_init_load(&r, w.buf, w.len, 1);
    assert_int_equal(demo_walk(&r, &out), 0);
    assert_int_equal(walk_finish(&r), 0);
    assert_int_equal(out.a, in.a);
    assert_int_equal(out.b, in.b);
    assert_true(out.c);
    assert_memory_equal(out.blob, in.blob, sizeof(in.blob));
    /* Truncated: the walk fails and names the field. */
    walk_init_load(&r, w.buf, 10, 1);
    assert_int_equal(demo_walk(&r, &out), -EBADMSG);
    assert_string_equal(r.what, "b");
    /* Trailing bytes are an error too. */
    walk_init_load(&r, w.buf, w.len, 1);
    demo_walk(&r, &out);
    r.len++;
    assert_int_equal(walk_finish(&r), -EBADMSG);
    walk_free(&w);
}

static void test_walk_bad_values(void **state)
{
    uint8_t two = 2;
    uint32_t big = 1000, n;
    bool b;
    struct state_walker r;

    (void)state;
    walk_init_load(&r, &two, 1, 1);
    assert_int_equal(walk_bool(&r, &b, "flag"), -EBADMSG);
    walk_init_load(&r, (uint8_t *)&big, 4, 1);
    assert_int_equal(walk_count(&r, &n, 999, "n"), -EBADMSG);
    walk_init_load(&r, (uint8_t *)&big, 4, 1);
    assert_int_equal(walk_count(&r, &n, 1000, "n"), 0);
}

static void test_header(void **state)
{
    struct stream_header h;
    const char *why = NULL;

    (void)state;
    stream_header_init(&h, 512ULL << 20, 2, 0xabc, 2600000);
    assert_int_equal(stream_header_check(&h, &why), 0);
    h.ncpus = 3;                                   /* checksum no longer matches */
    assert_int_equal(stream_header_check(&h, &why), -EBADMSG);
    assert_non_null(strstr(why, "checksum"));
    stream_header_init(&h, 512ULL << 20, 2, 0xabc, 0);
    h.format_version = 2;
    assert_int_equal(stream_header_check(&h, &why), -EPROTO);
    stream_header_init(&h, 512ULL << 20, 2, 0xabc, 0);
    h.magic[0] = 'X';
    assert_int_equal(stream_header_check(&h, &why), -EBADMSG);
    stream_header_init(&h, 12345, 2, 0, 0);        /* not a whole number of pages */
    assert_int_equal(stream_header_check(&h, &why), -EBADMSG);
}

/* Writes records into a pipe and reads them back through stream_io. */
static void test_records_roundtrip(void **state)
{
    int fds[2];
    struct stream_io out, in;
    struct stream_record r;
    uint8_t *payload;
    const char *why = NULL;

    (void)state;
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(stream_io_init(&out, fds[1], 64), 0);
    assert_int_equal(stream_put_record(&out, REC_SECTION, 4, 0, 1, REC_FLAG_MANDATORY,
                                       "hello", 5), 0);
    assert_int_equal(stream_put_record(&out, REC_END, 0, 0, 1, 0, NULL, 0), 0);
    assert_int_equal(stream_flush(&out), 0);
    close(fds[1]);
    assert_int_equal(stream_io_init(&in, fds[0], 16), 0);
    assert_int_equal(stream_get_record(&in, &r, &payload, &why), 0);
    assert_int_equal(r.section, 4);
    assert_memory_equal(payload, "hello", 5);
    free(payload);
    assert_int_equal(stream_get_record(&in, &r, &payload, &why), 0);
    assert_int_equal(r.type, REC_END);
    free(payload);
    assert_int_equal(stream_get_record(&in, &r, &payload, &why), -EPIPE);
    stream_io_free(&in);
    stream_io_free(&out);
    close(fds[0]);
}

static void test_record_checks(void **state)
{
    struct stream_record r = { .type = REC_SECTION, .length = 3 };
    const char *why = NULL;

    (void)state;
    stream_record_seal(&r, "abc");
    assert_true(stream_record_check_payload(&r, "abc"));
    assert_false(stream_record_check_payload(&r, "abd"));
    r.type = 9;
    assert_int_equal(stream_record_check_header(&r, &why), -EBADMSG);
    r.type = REC_SECTION;
    r.length = STREAM_MAX_SECTION + 1;
    assert_int_equal(stream_record_check_header(&r, &why), -EBADMSG);
    r.type = REC_END;
    r.length = 1;
    assert_int_equal(stream_record_check_header(&r, &why), -EBADMSG);
}

static const struct state_ops demo_ops = {
    .name = "demo", .id = 200, .version = 1, .min_version = 1, .walk = demo_walk,
};

static void test_registry(void **state)
{
    struct state_registry reg = { 0 };
    struct demo d = { 1, 2, false, "xyz" };
    struct stream_record rec = { .type = REC_SECTION, .section = 200, .instance = 0,
                                 .version = 1, .flags = REC_FLAG_MANDATORY };
    struct state_walker w;
    char err[256] = "";

    (void)state;
    assert_int_equal(state_register(&reg, &demo_ops, 0, &d), 0);
    assert_int_equal(state_check_complete(&reg, err, sizeof(err)), -EBADMSG);
    assert_non_null(strstr(err, "demo/0 is missing"));
    walk_init_save(&w, 1);
    demo_walk(&w, &d);
    rec.length = w.len;
    rec.version = 2;                               /* newer than this reader */
    assert_int_equal(state_load_section(&reg, &rec, w.buf, err, sizeof(err)), -EPROTO);
    assert_non_null(strstr(err, "version 2"));
    rec.version = 1;
    assert_int_equal(state_load_section(&reg, &rec, w.buf, err, sizeof(err)), 0);
    assert_int_equal(state_load_section(&reg, &rec, w.buf, err, sizeof(err)), -EBADMSG);
    assert_non_null(strstr(err, "twice"));
    assert_int_equal(state_check_complete(&reg, err, sizeof(err)), 0);
    rec.section = 201;                             /* unknown */
    assert_int_equal(state_load_section(&reg, &rec, w.buf, err, sizeof(err)), -EPROTO);
    rec.flags = 0;                                 /* unknown but optional: skipped */
    assert_int_equal(state_load_section(&reg, &rec, w.buf, err, sizeof(err)), 0);
    walk_free(&w);
}

/* The RTC section went from version 1 (index + CMOS) to 2 (+ clock offset):
 * a version-1 payload still loads. */
static void test_rtc_old_version(void **state)
{
    struct state_registry reg = { 0 };
    struct pio_bus bus;
    struct rtc rtc;
    uint8_t v1[1 + 128];
    struct stream_record rec = { .type = REC_SECTION, .section = SECTION_RTC,
                                 .version = 1, .flags = REC_FLAG_MANDATORY,
                                 .length = sizeof(v1) };
    char err[256] = "";

    (void)state;
    pio_init(&bus);
    rtc_init(&rtc, &bus, 256 << 20, 1);
    rtc.offset_s = 99;
    memset(v1, 0x11, sizeof(v1));
    v1[0] = 0x0b;
    state_register(&reg, &rtc_state_ops, 0, &rtc);
    assert_int_equal(state_load_section(&reg, &rec, v1, err, sizeof(err)), 0);
    assert_int_equal(rtc.index, 0x0b);
    assert_int_equal(rtc.cmos[5], 0x11);
    assert_int_equal(rtc.offset_s, 0);
    rec.length = sizeof(v1) - 1;                   /* v1 payload one byte short */
    reg.e[0].loaded = false;
    assert_int_equal(state_load_section(&reg, &rec, v1, err, sizeof(err)), -EBADMSG);
}

static void test_page_zero(void **state)
{
    static uint8_t page[4096];

    (void)state;
    memset(page, 0, sizeof(page));
    assert_true(zero_page_check(page));
    for (unsigned i = 0; i < sizeof(page); i += 511) {
        page[i] = 1;
        assert_false(zero_page_check(page));
        page[i] = 0;
    }
    page[4095] = 0x80;
    assert_false(zero_page_check(page));
}

static void test_pages_load_checks(void **state)
{
    static uint8_t ram[64 * 4096];
    struct guest_mem mem = { .fd = -1, .hva = ram, .size = sizeof(ram), .nregions = 1,
                             .regions = { { 0, sizeof(ram), 0 } } };
    uint8_t rec[8 + 2 * 8 + 4096];
    uint32_t count = 2;
    uint64_t e[2] = { 4096 | PAGE_F_DATA, 8192 | PAGE_F_ZERO };
    const char *why = NULL;

    (void)state;
    memset(ram, 0xee, sizeof(ram));
    memset(rec, 0, sizeof(rec));
    memcpy(rec, &count, 4);
    memcpy(rec + 8, e, sizeof(e));
    memset(rec + 24, 0x5a, 4096);
    assert_int_equal(pages_load(&mem, rec, sizeof(rec), &why), 0);
    assert_int_equal(ram[4096], 0x5a);
    assert_int_equal(ram[8192], 0);
    assert_int_equal(ram[0], 0xee);
    assert_int_equal(pages_load(&mem, rec, sizeof(rec) - 1, &why), -EBADMSG);
    e[0] = (64 * 4096) | PAGE_F_DATA;              /* beyond RAM */
    memcpy(rec + 8, e, sizeof(e));
    assert_int_equal(pages_load(&mem, rec, sizeof(rec), &why), -EBADMSG);
    assert_non_null(strstr(why, "outside"));
    e[0] = 4096 | 0x4;                             /* unknown flag */
    memcpy(rec + 8, e, sizeof(e));
    assert_int_equal(pages_load(&mem, rec, sizeof(rec), &why), -EBADMSG);
    count = 0;
    memcpy(rec, &count, 4);
    assert_int_equal(pages_load(&mem, rec, sizeof(rec), &why), -EBADMSG);
}

/* A loopback TCP pair: *w the writer (1 s send timeout), *r a reader that
 * shuts its read side and never reads, as the fault proxy does when the
 * destination it forwarded to has gone. */
static void tcp_pair(int *w, int *r, bool stop_reading)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    struct timeval tv = { .tv_sec = 1 };
    socklen_t len = sizeof(a);
    int l = socket(AF_INET, SOCK_STREAM, 0);

    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &len), 0);
    *w = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(*w, (struct sockaddr *)&a, sizeof(a)), 0);
    *r = accept(l, NULL, NULL);
    assert_true(*r >= 0);
    close(l);
    if (stop_reading)
        shutdown(*r, SHUT_RD);
    setsockopt(*w, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* A peer that stops reading fails the write instead of hanging it: the
 * kernel may keep taking short writes into a growing send buffer, so the
 * stall is known by the peer acknowledging nothing for a whole timeout. */
static void test_sock_write_stalled_peer(void **state)
{
    size_t len = 256u << 20;
    uint8_t *buf = calloc(1, len);
    struct stream_io io;
    int w, r, ret;

    (void)state;
    assert_non_null(buf);
    tcp_pair(&w, &r, true);
    assert_true(fd_is_socket(w));
    ret = sock_write_all(w, buf, len);
    assert_true(ret == -ETIMEDOUT || ret == -EAGAIN);
    assert_int_equal(stream_io_init(&io, w, 1u << 16), 0);
    assert_true(io.sock);
    ret = stream_write(&io, buf, len);
    assert_true(ret == -ETIMEDOUT || ret == -EAGAIN);
    stream_io_free(&io);
    close(w);
    close(r);
    free(buf);
}

static void *slow_reader(void *arg)
{
    static uint8_t sink[65536];
    int fd = *(int *)arg;
    size_t got = 0;
    ssize_t n;

    while ((n = read(fd, sink, sizeof(sink))) > 0) {
        got += (size_t)n;
        usleep(10000);
    }
    return (void *)got;
}

/* A slow reader (~6 MiB/s against a 1 s send timeout) makes the writes
 * block whole timeouts and come back short: that is progress, not a stall. */
static void test_sock_write_slow_reader(void **state)
{
    size_t len = 16u << 20;
    uint8_t *buf = calloc(1, len);
    pthread_t t;
    void *got;
    int w, r;

    (void)state;
    assert_non_null(buf);
    tcp_pair(&w, &r, false);
    assert_int_equal(pthread_create(&t, NULL, slow_reader, &r), 0);
    assert_int_equal(sock_write_all(w, buf, len), 0);
    shutdown(w, SHUT_WR);
    pthread_join(t, &got);
    assert_int_equal((size_t)got, len);
    assert_false(fd_is_socket(-1));
    close(w);
    close(r);
    free(buf);
}

static ssize_t pass_recv(void *ctx, void *buf, size_t n)
{
    ssize_t got = read(*(int *)ctx, buf, n);

    return got < 0 ? -errno : got;
}

static int pass_send(void *ctx, const void *buf, size_t n)
{
    return fd_write_all(*(int *)ctx, buf, n);
}

/* Under a layer that authenticates every byte (TLS), records carry no
 * checksum and none is checked; without one, a checksum of 0 is refused. */
static void test_authenticated_layer(void **state)
{
    static const struct stream_ops pass = { .recv = pass_recv, .send_all = pass_send };
    struct stream_io out, in, plain;
    struct stream_record r;
    const char *why = "";
    uint8_t *p = NULL;
    int sv[2];

    (void)state;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(stream_io_init(&out, sv[0], 4096), 0);
    assert_int_equal(stream_io_init(&in, sv[1], 4096), 0);
    stream_io_set_ops(&out, &pass, &sv[0], true);
    stream_io_set_ops(&in, &pass, &sv[1], true);
    assert_int_equal(stream_put_record(&out, REC_SECTION, 1, 0, 1, 0, "abc", 3), 0);
    assert_int_equal(stream_flush(&out), 0);
    assert_int_equal(stream_get_record(&in, &r, &p, &why), 0);
    assert_int_equal(r.checksum, 0);
    assert_memory_equal(p, "abc", 3);
    free(p);
    assert_int_equal(stream_io_init(&plain, sv[1], 4096), 0);   /* no layer: checked */
    assert_int_equal(stream_put_record(&out, REC_SECTION, 1, 0, 1, 0, "abc", 3), 0);
    assert_int_equal(stream_flush(&out), 0);
    assert_int_equal(stream_get_record(&plain, &r, &p, &why), -EBADMSG);
    assert_null(p);
    assert_string_equal(why, "record checksum mismatch");
    stream_io_free(&out);
    stream_io_free(&in);
    stream_io_free(&plain);
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_walk_roundtrip),
        cmocka_unit_test(test_walk_bad_values),
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_records_roundtrip),
        cmocka_unit_test(test_record_checks),
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_rtc_old_version),
        cmocka_unit_test(test_page_zero),
        cmocka_unit_test(test_pages_load_checks),
        cmocka_unit_test(test_sock_write_stalled_peer),
        cmocka_unit_test(test_sock_write_slow_reader),
        cmocka_unit_test(test_authenticated_layer),
    };
    return cmocka_run_group_tests_name("stream", tests, NULL, NULL);
}
