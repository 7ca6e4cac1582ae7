/* The source's wait for a round's acknowledgement, against a peer on a
 * socketpair: a silent destination fails the migration instead of hanging
 * it, one still taking data-connection traffic is waited for. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "migration/channel.h"
#include "migration/source_internal.h"

struct peer {
    struct migration m;
    struct mig_src s;
    int sv[2];
    int ret;
    bool done;
};

static void peer_init(struct peer *p)
{
    mig_init(&p->m);
    p->s.m = &p->m;
    p->s.sock = -1;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p->sv), 0);
    chan_set_timeouts(p->sv[0], 1);   /* SRC_TIMEOUT_S in the product */
    assert_int_equal(stream_io_init(&p->s.in, p->sv[0], 4096), 0);
}

static void peer_free(struct peer *p)
{
    stream_io_free(&p->s.in);
    close(p->sv[0]);
    close(p->sv[1]);
}

static void *wait_thread(void *arg)
{
    struct peer *p = arg;

    p->ret = src_wait_round_ack(&p->s);
    __atomic_store_n(&p->done, true, __ATOMIC_RELEASE);
    return NULL;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

/* Whether the wait ended within ms; if not it is cancelled, so that the
 * test ends either way. */
static bool wait_ended_within(struct peer *p, pthread_t t, long ms)
{
    bool done = false;

    for (long waited = 0; waited < ms && !done; waited += 50) {
        sleep_ms(50);
        done = __atomic_load_n(&p->done, __ATOMIC_ACQUIRE);
    }
    if (!done)
        __atomic_store_n(&p->m.cancel, true, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    return done;
}

static void test_round_ack_silent_peer_times_out(void **state)
{
    struct peer p = { 0 };
    pthread_t t;
    bool ended;

    (void)state;
    peer_init(&p);
    assert_int_equal(pthread_create(&t, NULL, wait_thread, &p), 0);
    ended = wait_ended_within(&p, t, 4000);
    peer_free(&p);
    if (!ended)
        fail_msg("still waiting after 4 s on a peer silent for longer than its 1 s timeout");
    assert_int_equal(p.ret, -ETIMEDOUT);
    assert_non_null(strstr(p.s.err, "waiting for the destination: the peer did not answer"));
}

/* Silent on the main channel, but the data connections still move (slow
 * under a low --bandwidth): the ack that comes after 1.5 s is taken. */
static void test_round_ack_waits_while_data_moves(void **state)
{
    uint8_t ack[5] = { 7 };
    struct stream_io out;
    struct peer p = { 0 };
    pthread_t t;
    bool ended;

    (void)state;
    peer_init(&p);
    assert_int_equal(pthread_create(&t, NULL, wait_thread, &p), 0);
    for (int i = 0; i < 15; i++) {
        sleep_ms(100);
        __atomic_fetch_add(&p.s.x.st.bytes_wire, 4096, __ATOMIC_RELAXED);
    }
    assert_int_equal(stream_io_init(&out, p.sv[1], 4096), 0);
    assert_int_equal(mig_send_ctrl(&out, REC_ROUND_ACK, ack, sizeof(ack)), 0);
    stream_io_free(&out);
    ended = wait_ended_within(&p, t, 3000);
    peer_free(&p);
    assert_true(ended);
    assert_int_equal(p.ret, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_ack_silent_peer_times_out),
        cmocka_unit_test(test_round_ack_waits_while_data_moves),
    };

    return cmocka_run_group_tests_name("source", tests, NULL, NULL);
}
