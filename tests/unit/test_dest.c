/* The destination's receive loop on crafted streams: records whose lengths
 * do not match what they claim fail cleanly instead of reading past them. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "migration/dest_internal.h"

/* Runs dst_receive() on one record (type, payload of len bytes), its bytes
 * changed after sealing by patch(buf, n) if given (a corrupt stream), and
 * returns its result; the reason is left in d->err. */
static int receive_patched(struct mig_dst *d, struct migration *m, uint32_t type,
                           const void *payload, uint64_t len, void (*patch)(uint8_t *, size_t))
{
    uint8_t buf[256];
    struct stream_io out;
    int fds[2], ret;
    ssize_t n;

    mig_init(m);
    *d = (struct mig_dst){ .m = m, .sock = -1, .usock = -1, .lfd = -1 };
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(stream_io_init(&out, fds[1], 4096), 0);
    assert_int_equal(stream_put_record(&out, type, 0, 0, MIG_PROTO_VERSION, 0, payload, len), 0);
    assert_int_equal(stream_flush(&out), 0);
    stream_io_free(&out);
    if (patch) {
        n = read(fds[0], buf, sizeof(buf));
        assert_true(n > 0);
        patch(buf, (size_t)n);
        assert_int_equal(write(fds[1], buf, (size_t)n), n);
    }
    close(fds[1]);
    assert_int_equal(stream_io_init(&d->in, fds[0], 4096), 0);
    ret = dst_receive(d);
    stream_io_free(&d->in);
    close(fds[0]);
    return ret;
}

static int receive_one(struct mig_dst *d, struct migration *m, uint32_t type,
                       const void *payload, uint64_t len)
{
    return receive_patched(d, m, type, payload, len, NULL);
}

static void flip_payload_bit(uint8_t *buf, size_t n)
{
    buf[n - 1] ^= 0x10;
}

static void huge_length(uint8_t *buf, size_t n)
{
    uint64_t len = 1ULL << 31;

    (void)n;
    memcpy(buf + 24, &len, 8);
}

/* A corrupt record's error says which record and where it began. */
static void test_errors_name_the_record(void **state)
{
    uint8_t payload[12] = { 1, 0, 0, 0 };
    struct migration m;
    struct mig_dst d;

    (void)state;
    assert_int_equal(receive_patched(&d, &m, REC_PAGES, payload, sizeof(payload),
                                     flip_payload_bit), -EBADMSG);
    assert_string_equal(d.err, "record checksum mismatch (in the PAGES record of 12 bytes "
                               "at byte 0)");
    assert_int_equal(receive_patched(&d, &m, REC_ROUND, payload, 4, huge_length), -EBADMSG);
    assert_string_equal(d.err, "record longer than its type allows (in the ROUND record of "
                               "2147483648 bytes at byte 0)");
    assert_int_equal(receive_one(&d, &m, REC_PAGES, payload, 3), -EPROTO);
    assert_non_null(strstr(d.err, "(in the PAGES record of 3 bytes at byte 0)"));
}

/* A pages record too short for its u32 count + u32 header is refused before
 * the count is read (ASan catches the over-read otherwise). */
static void test_short_pages_record(void **state)
{
    static const uint64_t lens[] = { 0, 1, 3, 7 };
    uint8_t payload[8] = { 1, 0, 0, 0 };
    struct migration m;
    struct mig_dst d;

    (void)state;
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        assert_int_equal(receive_one(&d, &m, REC_PAGES, payload, lens[i]), -EPROTO);
        if (!strstr(d.err, "pages record"))
            fail_msg("length %llu: error \"%s\" does not name the record",
                     (unsigned long long)lens[i], d.err);
        assert_int_equal(m.pages_normal, 0);
    }
}

/* The cancel text is printed up to the record's end, NUL or not. */
static void test_cancel_text_bounded(void **state)
{
    uint8_t buf[4 + 3] = { 0xea, 0xff, 0xff, 0xff, 'a', 'b', 'c' };   /* no NUL */
    uint8_t sent[4 + 4] = { 0 };
    struct migration m;
    struct mig_dst d;

    (void)state;
    assert_int_equal(receive_one(&d, &m, REC_CANCEL, buf, sizeof(buf)), -ECANCELED);
    assert_string_equal(d.err, "the source ended the migration: abc");
    /* Only a status: no text. */
    assert_int_equal(receive_one(&d, &m, REC_CANCEL, buf, 4), -ECANCELED);
    assert_string_equal(d.err, "the source ended the migration: cancelled");
    /* What mig_send_status() sends: text with its NUL. */
    memcpy(sent + 4, "bye", 4);
    assert_int_equal(receive_one(&d, &m, REC_CANCEL, sent, sizeof(sent)), -ECANCELED);
    assert_string_equal(d.err, "the source ended the migration: bye");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_short_pages_record),
        cmocka_unit_test(test_cancel_text_bounded),
        cmocka_unit_test(test_errors_name_the_record),
    };

    return cmocka_run_group_tests_name("dest", tests, NULL, NULL);
}
