/* The migration transport: endpoint URIs, unix and inherited listeners,
 * a plain connection's streams, and the session token's wire struct. (TLS
 * itself runs in the integration tests, with certificates from certtool.) */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "migration/session.h"
#include "migration/transport.h"
#include "state/stream.h"

static void test_uri_parse(void **state)
{
    struct mig_endpoint ep;
    char err[256], buf[400];

    (void)state;
    assert_int_equal(mig_parse_uri("tcp:10.0.0.1:4444", &ep, err, sizeof(err)), 0);
    assert_int_equal(ep.kind, MIG_EP_TCP);
    assert_string_equal(ep.host, "10.0.0.1");
    assert_string_equal(ep.port, "4444");
    assert_int_equal(mig_parse_uri("tcp:[::1]:9", &ep, err, sizeof(err)), 0);
    assert_string_equal(ep.host, "::1");
    assert_string_equal(mig_endpoint_str(&ep, buf, sizeof(buf)), "tcp:[::1]:9");
    assert_int_equal(mig_parse_uri("unix:/run/ferry/m.sock", &ep, err, sizeof(err)), 0);
    assert_int_equal(ep.kind, MIG_EP_UNIX);
    assert_string_equal(ep.path, "/run/ferry/m.sock");
    assert_int_equal(mig_parse_uri("fd:7", &ep, err, sizeof(err)), 0);
    assert_int_equal(ep.kind, MIG_EP_FD);
    assert_int_equal(ep.fd, 7);
    assert_string_equal(mig_endpoint_str(&ep, buf, sizeof(buf)), "fd:7");
}

static void test_uri_refusals(void **state)
{
    static const char *const bad[] = {
        "", "tcp:", "tcp:host", "tcp::4444", "tcp:h:", "tcp:h:12x", "tcp:h:70000",
        "unix:", "fd:", "fd:-1", "fd:x", "fd:99999999999", "udp:h:1", "host:1",
    };
    char longpath[200], err[256];
    struct mig_endpoint ep;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        assert_int_equal(mig_parse_uri(bad[i], &ep, err, sizeof(err)), -EINVAL);
        assert_true(err[0] != '\0');
    }
    assert_int_equal(mig_parse_uri(NULL, &ep, err, sizeof(err)), -EINVAL);
    memset(longpath, 'a', sizeof(longpath));
    memcpy(longpath, "unix:", 5);
    longpath[sizeof(longpath) - 1] = '\0';
    assert_int_equal(mig_parse_uri(longpath, &ep, err, sizeof(err)), -EINVAL);
}

static void test_tls_check(void **state)
{
    struct mig_tls tls = { 0 };
    struct tp_creds *c = (struct tp_creds *)&tls;
    char err[256];

    (void)state;
    assert_int_equal(tp_tls_check(&tls, err, sizeof(err)), 0);
    assert_int_equal(tp_creds_load(&tls, true, &c, err, sizeof(err)), 0);
    assert_null(c);                                  /* no dir: plain text */
    snprintf(tls.authz, sizeof(tls.authz), "hosta");
    assert_int_equal(tp_tls_check(&tls, err, sizeof(err)), -EINVAL);
    snprintf(tls.dir, sizeof(tls.dir), "/nonexistent");
    assert_int_equal(tp_creds_load(&tls, true, &c, err, sizeof(err)), -EINVAL);
    assert_null(c);
    assert_non_null(strstr(err, "ca-cert.pem"));
}

/* unix: a listener, a connection, a record each way, and the socket file
 * gone after. A stale socket file is replaced; a regular file is not. */
static void test_unix_roundtrip(void **state)
{
    char path[] = "/tmp/ferry-tp-XXXXXX", uri[64], err[256];
    struct mig_endpoint ep;
    struct stream_io out, in;
    uint8_t got[32];
    int lfd, c, a;

    (void)state;
    assert_non_null(mkdtemp(path));
    snprintf(uri, sizeof(uri), "unix:%s/m.sock", path);
    assert_int_equal(mig_parse_uri(uri, &ep, err, sizeof(err)), 0);
    lfd = tp_listen(&ep, err, sizeof(err));
    assert_true(lfd >= 0);
    close(lfd);                                      /* leaves a stale socket file */
    lfd = tp_listen(&ep, err, sizeof(err));
    assert_true(lfd >= 0);
    c = tp_connect(NULL, &ep, 1000, 5, err, sizeof(err));
    assert_true(c >= 0);
    a = tp_accept(NULL, lfd, 5, err, sizeof(err));
    assert_true(a >= 0);
    assert_int_equal(tp_stream_init(&out, c, 4096), 0);
    assert_int_equal(tp_stream_init(&in, a, 4096), 0);
    assert_null(out.ops);                            /* plain text */
    assert_int_equal(stream_write(&out, "hello", 5), 0);
    assert_int_equal(stream_flush(&out), 0);
    assert_int_equal(stream_read(&in, got, 5), 0);
    assert_memory_equal(got, "hello", 5);
    assert_int_equal(tp_peer_id(a, got), -ENOENT);   /* no TLS, no certificate */
    stream_io_free(&out);
    stream_io_free(&in);
    tp_close(c);
    tp_close(a);
    tp_unlisten(&ep, lfd);
    assert_int_equal(access(ep.path, F_OK), -1);
    close(open(ep.path, O_CREAT | O_WRONLY, 0600));  /* not a socket: kept, refused */
    assert_true(tp_listen(&ep, err, sizeof(err)) < 0);
    assert_int_equal(access(ep.path, F_OK), 0);
    unlink(ep.path);
    rmdir(path);
}

static void test_fd_endpoint(void **state)
{
    struct mig_endpoint ep = { .kind = MIG_EP_FD };
    char err[256];
    int sv[2];

    (void)state;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ep.fd = sv[0];                                   /* connected, not listening */
    assert_int_equal(tp_listen(&ep, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "not a listening socket"));
    assert_int_equal(tp_connect(NULL, &ep, 100, 1, err, sizeof(err)), -EINVAL);
    close(sv[0]);
    close(sv[1]);
    ep.fd = socket(AF_INET, SOCK_STREAM, 0);        /* listen() binds it to a free port */
    assert_int_equal(listen(ep.fd, 1), 0);
    assert_int_equal(tp_listen(&ep, err, sizeof(err)), ep.fd);
    assert_true(fcntl(ep.fd, F_GETFD) & FD_CLOEXEC);
    close(ep.fd);
}

static void test_session_wire(void **state)
{
    struct mig_session a, b;
    uint8_t buf[sizeof(struct mig_session)];

    (void)state;
    assert_int_equal(mig_session_new(&a), 0);
    assert_int_equal(mig_session_new(&b), 0);
    assert_false(mig_token_equal(a.token, b.token));  /* 2^-256 */
    mig_session_encode(&a, buf);
    assert_int_equal(mig_session_decode(buf, sizeof(buf), &b), 0);
    assert_true(mig_token_equal(a.token, b.token));
    assert_int_equal(mig_session_decode(buf, sizeof(buf) - 1, &b), -EBADMSG);
    assert_int_equal(mig_session_decode(buf, sizeof(buf) + 1, &b), -EBADMSG);
    buf[sizeof(buf) - 2] = 1;                         /* reserved must be zero */
    assert_int_equal(mig_session_decode(buf, sizeof(buf), &b), -EBADMSG);
    b.token[31] ^= 1;
    assert_false(mig_token_equal(a.token, b.token));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uri_parse),
        cmocka_unit_test(test_uri_refusals),
        cmocka_unit_test(test_tls_check),
        cmocka_unit_test(test_unix_roundtrip),
        cmocka_unit_test(test_fd_endpoint),
        cmocka_unit_test(test_session_wire),
    };
    return cmocka_run_group_tests_name("transport", tests, NULL, NULL);
}
