/* The parallel transfer engine without KVM: connection assignment, the
 * stale-copy rule, the REC_XPAGES parser and applier, and a whole transfer
 * over socket pairs (senders -> appliers) with zero pages, deltas and
 * compression, checked page by page. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "migration/xfer.h"
#include "state/xpages.h"

#define PAGES 2048          /* 8 MiB: four 2 MiB runs */
#define PG    STREAM_PAGE_SIZE

static struct guest_mem mem_of(uint8_t *ram)
{
    return (struct guest_mem){ .fd = -1, .hva = ram, .size = (uint64_t)PAGES * PG,
                               .nregions = 1, .regions = { { 0, (uint64_t)PAGES * PG, 0 } } };
}

static void test_conn_of(void **state)
{
    unsigned seen[4] = { 0 };

    (void)state;
    assert_int_equal(xfer_conn_of(12345, 0), 0);
    assert_int_equal(xfer_conn_of(12345, 1), 0);
    for (uint64_t gfn = 0; gfn < 512; gfn++)   /* a 2 MiB run stays on one connection */
        assert_int_equal(xfer_conn_of(gfn, 4), xfer_conn_of(0, 4));
    for (uint64_t gfn = 0; gfn < 4 * 512; gfn += 512)
        seen[xfer_conn_of(gfn, 4)]++;
    for (unsigned i = 0; i < 4; i++)   /* consecutive runs spread over all connections */
        assert_int_equal(seen[i], 1);
}

static void test_round_rule(void **state)
{
    (void)state;
    assert_true(xfer_round_ok(0, 1));
    assert_true(xfer_round_ok(3, 3));
    assert_true(xfer_round_ok(3, 4));
    assert_false(xfer_round_ok(4, 3));   /* an older copy never overwrites a newer one */
}

/* A batch: header, entries, raw body. */
static __attribute__((noinline)) size_t batch(uint8_t *out, uint32_t round, const uint64_t *ent, uint32_t n,
                    const uint8_t *body, uint32_t blen)
{
    struct xpages_hdr h = { .count = n, .round = round, .body_len = blen, .raw_len = blen };

    memcpy(out, &h, sizeof(h));
    for (uint32_t i = 0; i < n; i++)   /* (memcpy here trips a GCC bounds false positive) */
        memcpy(out + XPAGES_HDR + 8ULL * i, &ent[i], 8);
    memcpy(out + XPAGES_HDR + 8ULL * n, body, blen);
    return XPAGES_HDR + 8ULL * n + blen;
}

static void test_parse_checks(void **state)
{
    static uint8_t buf[XPAGES_HDR + 64 + 2 * PG], page[PG];
    uint64_t ent[2] = { 0 | XPAGE_DATA, PG | XPAGE_ZERO };
    struct xpages_hdr h;
    const char *why = "";
    size_t n;

    (void)state;
    memset(page, 7, PG);
    n = batch(buf, 1, ent, 2, page, PG);
    assert_int_equal(xpages_parse(buf, n, &h, &why), 0);
    assert_int_equal(h.count, 2);
    assert_int_equal(xpages_parse(buf, n - 1, &h, &why), -EBADMSG);      /* length */
    assert_int_equal(xpages_parse(buf, 10, &h, &why), -EBADMSG);         /* too short */
    ((struct xpages_hdr *)buf)->algo = 9;
    assert_int_equal(xpages_parse(buf, n, &h, &why), -EBADMSG);          /* algorithm */
    ((struct xpages_hdr *)buf)->algo = XC_NONE;
    ((struct xpages_hdr *)buf)->count = 0;
    assert_int_equal(xpages_parse(buf, n, &h, &why), -EBADMSG);          /* count */
    ent[1] = PG | 0x8;
    n = batch(buf, 1, ent, 2, page, PG);
    assert_int_equal(xpages_parse(buf, n, &h, &why), -EBADMSG);          /* flags */
    assert_string_equal(why, "page batch entry has unknown flags");
}

static void test_apply_rules(void **state)
{
    uint8_t *ram = calloc(PAGES, PG), *buf = malloc(XPAGES_MAX_LEN), page[PG];
    struct guest_mem mem = mem_of(ram);
    struct xpages_ctx c;
    uint64_t ent[3];
    const char *why = "";
    size_t n;

    (void)state;
    assert_int_equal(xpages_ctx_init(&c), 0);
    memset(page, 0x5a, PG);
    memset(ram + 3 * PG, 0xee, PG);               /* an older copy, now zero at the source */
    ent[0] = 2 * PG | XPAGE_DATA;
    ent[1] = 3 * PG | XPAGE_ZERO;
    n = batch(buf, 2, ent, 2, page, PG);
    assert_int_equal(xpages_apply(&mem, buf, n, &c, &why), 0);
    assert_memory_equal(ram + 2 * PG, page, PG);
    assert_int_equal(ram[3 * PG], 0);
    assert_int_equal(ram[4 * PG - 1], 0);
    assert_int_equal(c.data, 1);
    assert_int_equal(c.zero, 1);
    /* a batch of an older round is refused and changes nothing */
    memset(page, 0x11, PG);
    n = batch(buf, 1, ent, 1, page, PG);
    assert_int_equal(xpages_apply(&mem, buf, n, &c, &why), -EBADMSG);
    assert_int_equal(ram[2 * PG], 0x5a);
    /* one entry outside RAM: nothing of the batch is written */
    ent[0] = 5 * PG | XPAGE_DATA;
    ent[1] = (uint64_t)PAGES * PG | XPAGE_ZERO;
    n = batch(buf, 3, ent, 2, page, PG);
    assert_int_equal(xpages_apply(&mem, buf, n, &c, &why), -EBADMSG);
    assert_int_equal(ram[5 * PG], 0);
    /* body and entries must agree: a data entry without its page */
    n = batch(buf, 3, ent, 1, page, PG - 8);
    assert_int_equal(xpages_apply(&mem, buf, n, &c, &why), -EBADMSG);
    /* a delta longer than a delta may be */
    {
        uint8_t body[8] = { 0 };
        uint32_t len = PG;
        memcpy(body, &len, 4);
        ent[0] = 6 * PG | XPAGE_DELTA;
        n = batch(buf, 3, ent, 1, body, 8);
        assert_int_equal(xpages_apply(&mem, buf, n, &c, &why), -EBADMSG);
    }
    /* a full page, then a delta that does not decode: the page is not written
     * either (every delta is checked before the first write) */
    {
        static uint8_t body[PG + 4 + 2];
        uint32_t len = 2;
        memcpy(body, page, PG);
        memcpy(body + PG, &len, 4);
        body[PG + 4] = 0;                         /* skip 0, run 0: not an encoding */
        body[PG + 5] = 0;
        ent[0] = 7 * PG | XPAGE_DATA;
        ent[1] = 6 * PG | XPAGE_DELTA;
        n = batch(buf, 3, ent, 2, body, sizeof(body));
        assert_int_equal(xpages_apply(&mem, buf, n, &c, &why), -EBADMSG);
        assert_string_equal(why, "page delta does not decode");
        assert_int_equal(ram[7 * PG], 0);
    }
    xpages_ctx_free(&c);
    free(ram);
    free(buf);
}

/* A guest's worth of pages: random, text-like (compressible) and zero. */
static void fill(uint8_t *ram, unsigned seed)
{
    srand(seed);
    for (unsigned p = 0; p < PAGES; p++) {
        uint8_t *pg = ram + (uint64_t)p * PG;
        if (p % 7 == 0)
            memset(pg, 0, PG);
        else if (p % 3 == 0)
            for (unsigned i = 0; i < PG; i++)
                pg[i] = (uint8_t)rand();
        else
            for (unsigned i = 0; i < PG; i++)
                pg[i] = (uint8_t)("ferry moves pages "[i % 18] + (p & 3));
    }
}

/* Round 2 rewrites whole pages the way the test guest's dirtier does: every
 * 64-bit word but the first (the page's own index there) XORed with one
 * value, so the page itself is no shorter but its XOR against the old copy
 * is one word repeated. */
static bool round2_every_word;

static void change_page(uint8_t *pg, unsigned idx)
{
    uint64_t w, k = 0x9e3779b97f4a7c15ULL * (idx + 1);

    if (!round2_every_word) {
        pg[idx % PG] ^= 0xff;
        return;
    }
    for (unsigned i = 8; i < PG; i += 8) {
        memcpy(&w, pg + i, 8);
        w ^= k;
        memcpy(pg + i, &w, 8);
    }
}

/* Sends round 1 (all), round 2 (a few bytes changed in some pages, some
 * pages zeroed), then the final copy; the destination must equal the source. */
static void transfer(unsigned conns, enum xc_algo algo, uint64_t delta, struct xfer_stats *out)
{
    uint8_t *src = malloc((size_t)PAGES * PG), *dst = malloc((size_t)PAGES * PG);
    struct guest_mem smem = mem_of(src), dmem = mem_of(dst);
    struct xfer_params p = { .conns = conns, .algo = algo, .delta_bytes = delta };
    static struct xfer x;
    static struct xfer_dst xd;
    int ssock[XFER_MAX_CONNS], dsock[XFER_MAX_CONNS], sv[2];
    bool cancel = false;
    char why[200];

    fill(src, 1);
    memset(dst, 0xcc, (size_t)PAGES * PG);        /* stale garbage everywhere */
    for (unsigned i = 0; i < conns; i++) {
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        ssock[i] = sv[0];
        dsock[i] = sv[1];
    }
    assert_int_equal(xfer_dst_start(&xd, &dmem, dsock, conns), 0);
    assert_int_equal(xfer_start(&x, &p, &smem, ssock, &cancel), 0);
    for (unsigned pg = 0; pg < PAGES; pg++)
        assert_int_equal(xfer_add(&x, (uint64_t)pg * PG, true), 0);
    assert_int_equal(xfer_round_end(&x, 1), 0);
    if (xfer_dst_wait(&xd, 1, 10, why, sizeof(why)) < 0)
        fail_msg("%s", why);
    for (unsigned pg = 0; pg < PAGES; pg += 5) {  /* round 2: small changes */
        change_page(src + (uint64_t)pg * PG, pg);
        if (pg % 50 == 0)
            memset(src + (uint64_t)pg * PG, 0, PG);
        assert_int_equal(xfer_add(&x, (uint64_t)pg * PG, true), 0);
    }
    assert_int_equal(xfer_round_end(&x, 2), 0);
    x.final = true;
    for (unsigned pg = 1; pg < PAGES; pg += 97) {  /* the last copy */
        src[(uint64_t)pg * PG + 1] ^= 0x55;
        assert_int_equal(xfer_add(&x, (uint64_t)pg * PG, true), 0);
    }
    assert_int_equal(xfer_end(&x), 0);
    if (xfer_dst_wait(&xd, UINT32_MAX, 10, why, sizeof(why)) < 0)
        fail_msg("%s", why);
    for (unsigned pg = 0; pg < PAGES; pg++)
        assert_memory_equal(dst + (uint64_t)pg * PG, src + (uint64_t)pg * PG, PG);
    *out = x.st;
    assert_int_equal(xd.st.pages_delta, x.st.pages_delta);
    assert_int_equal(xd.st.bytes_wire, x.st.bytes_wire);
    xfer_stop(&x);
    xfer_dst_stop(&xd);
    free(src);
    free(dst);
}

static void test_transfer_plain(void **state)
{
    struct xfer_stats st;

    (void)state;
    transfer(3, XC_NONE, 0, &st);
    assert_true(st.pages_zero > 0);
    assert_int_equal(st.pages_delta, 0);
    assert_int_equal(st.comp_batches, 0);
    assert_true(st.bytes_wire > st.pages_data * PG);
}

static void test_transfer_delta(void **state)
{
    struct xfer_stats st;

    (void)state;
    transfer(2, XC_NONE, 4u << 20, &st);
    assert_true(st.pages_delta > 100);
    assert_true(st.delta_bytes_saved > st.pages_delta * 2048);
    assert_true(st.delta_hits > 0 && st.delta_misses > 0);
}

static void test_transfer_compressed(void **state)
{
    struct xfer_stats st;

    (void)state;
    transfer(2, XC_LZ4, 0, &st);
    assert_true(st.comp_batches > 0 && st.comp_out < st.comp_in);
    transfer(4, XC_ZSTD, 1u << 20, &st);         /* small cache: evictions, still exact */
    assert_true(st.comp_out < st.comp_in);
    transfer(1, XC_AUTO, 8u << 20, &st);
}

/* Pages whose every word changed: delta alone cannot shrink them (they go as
 * data), but with compression the XOR goes as a delta and compresses. */
static void test_transfer_xor_compressed(void **state)
{
    struct xfer_stats plain, zd;

    (void)state;
    round2_every_word = true;
    transfer(2, XC_NONE, 16u << 20, &plain);         /* the cache holds every page */
    transfer(2, XC_ZSTD, 16u << 20, &zd);
    round2_every_word = false;
    /* round 2 (PAGES / 5 pages) goes as data without compression, as deltas with */
    assert_true(zd.pages_delta >= plain.pages_delta + PAGES / 10);
    assert_true(zd.bytes_wire * 10 < plain.bytes_wire * 8);
}

static void test_auto_decision(void **state)
{
    const uint64_t MB = 1000000;

    (void)state;
    /* a 50 MB/s link, 300 MB/s per thread, data halves: the link limits */
    assert_true(xc_auto_worth(50 * MB, 300 * MB, 2, 0.5));
    /* loopback-fast link: the CPU would be the bottleneck */
    assert_false(xc_auto_worth(5000 * MB, 300 * MB, 2, 0.5));
    /* barely compressible data is not worth it */
    assert_false(xc_auto_worth(50 * MB, 300 * MB, 2, 0.97));
    /* the last copy: compressing shortens it only on the slow link */
    assert_true(xc_transfer_ns(64 * MB, 50 * MB, 300 * MB, 4, 0.4, true) <
                xc_transfer_ns(64 * MB, 50 * MB, 300 * MB, 4, 0.4, false));
    assert_true(xc_transfer_ns(64 * MB, 5000 * MB, 300 * MB, 4, 0.4, true) >
                xc_transfer_ns(64 * MB, 5000 * MB, 300 * MB, 4, 0.4, false));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conn_of),
        cmocka_unit_test(test_round_rule),
        cmocka_unit_test(test_parse_checks),
        cmocka_unit_test(test_apply_rules),
        cmocka_unit_test(test_transfer_plain),
        cmocka_unit_test(test_transfer_delta),
        cmocka_unit_test(test_transfer_compressed),
        cmocka_unit_test(test_transfer_xor_compressed),
        cmocka_unit_test(test_auto_decision),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
