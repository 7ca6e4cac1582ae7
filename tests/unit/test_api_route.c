/*
 * Tests for the REST API: api_route_find() on its own, then the server and the
 * CLI client end to end over a real unix socket in a temporary directory.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "api/api.h"
#include "api/routes_migration.h"
#include "cli/client.h"
#include "cli/verbs.h"
#include "vm/vm.h"

/* ------------------------------------------------------------------ routing */

static int h_dummy(void *ctx, json_t *body, json_t **resp)
{
    (void)ctx;
    (void)body;
    (void)resp;
    return 204;
}

static const struct api_route route_table[] = {
    { "GET", "/v1/vm", h_dummy },        { "PUT", "/v1/vm/pause", h_dummy },
    { "PUT", "/v1/vm/resume", h_dummy }, { "GET", "/v1/vm/config", h_dummy },
    { "PUT", "/v1/vm/config", h_dummy },
};
#define NROUTES (sizeof(route_table) / sizeof(route_table[0]))

static void test_route_exact_match(void **state)
{
    int status = -1;

    (void)state;
    assert_ptr_equal(api_route_find(route_table, NROUTES, "GET", "/v1/vm", &status),
                     &route_table[0]);
    assert_int_equal(status, 200);
    status = -1;
    assert_ptr_equal(api_route_find(route_table, NROUTES, "PUT", "/v1/vm/resume", &status),
                     &route_table[2]);
    assert_int_equal(status, 200);
    /* Same path, two methods: each finds its own entry. */
    assert_ptr_equal(api_route_find(route_table, NROUTES, "GET", "/v1/vm/config", &status),
                     &route_table[3]);
    assert_ptr_equal(api_route_find(route_table, NROUTES, "PUT", "/v1/vm/config", &status),
                     &route_table[4]);
}

static void test_route_unknown_path_404(void **state)
{
    static const char *const paths[] = { "/v1/nope",       "/",     "", "/v1", "/v1/vmx", "/v2/vm",
                                         "/v1/vm/pause/x", "/V1/VM" };
    int status;

    (void)state;
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        status = -1;
        assert_null(api_route_find(route_table, NROUTES, "GET", paths[i], &status));
        assert_int_equal(status, 404);
    }
}

static void test_route_wrong_method_405(void **state)
{
    int status = -1;

    (void)state;
    assert_null(api_route_find(route_table, NROUTES, "PUT", "/v1/vm", &status));
    assert_int_equal(status, 405);
    status = -1;
    assert_null(api_route_find(route_table, NROUTES, "GET", "/v1/vm/pause", &status));
    assert_int_equal(status, 405);
    /* Methods are case-sensitive (RFC 9110), so "get" is not GET. */
    status = -1;
    assert_null(api_route_find(route_table, NROUTES, "get", "/v1/vm", &status));
    assert_int_equal(status, 405);
}

static void test_route_trailing_slash_404(void **state)
{
    int status = -1;

    (void)state;
    /* Documented choice: paths match exactly, a trailing slash is another path. */
    assert_null(api_route_find(route_table, NROUTES, "GET", "/v1/vm/", &status));
    assert_int_equal(status, 404);
    status = -1;
    assert_null(api_route_find(route_table, NROUTES, "PUT", "/v1/vm/pause/", &status));
    assert_int_equal(status, 404);
}

static void test_route_empty_table(void **state)
{
    int status = -1;

    (void)state;
    assert_null(api_route_find(NULL, 0, "GET", "/v1/vm", &status));
    assert_int_equal(status, 404);
}

/* ------------------------------------------------------------- fake VM layer */

struct fake_vm {
    atomic_int get_calls;
    atomic_int echo_calls;
    atomic_int pause_calls;
    sem_t slow_entered;
};

static int h_get_vm(void *ctx, json_t *body, json_t **resp)
{
    struct fake_vm *vm = ctx;

    atomic_fetch_add(&vm->get_calls, 1);
    *resp = json_pack("{s:s, s:i, s:b}", "state", "running", "vcpus", 2, "had_body", body != NULL);
    return 200;
}

static int h_echo(void *ctx, json_t *body, json_t **resp)
{
    struct fake_vm *vm = ctx;

    atomic_fetch_add(&vm->echo_calls, 1);
    *resp = json_pack("{s:O?}", "echo", body);
    return 200;
}

static int h_pause(void *ctx, json_t *body, json_t **resp)
{
    struct fake_vm *vm = ctx;

    (void)body;
    (void)resp;
    atomic_fetch_add(&vm->pause_calls, 1);
    return 204;
}

static int h_conflict(void *ctx, json_t *body, json_t **resp)
{
    (void)ctx;
    (void)body;
    *resp = api_error("VM is not %s", "paused");
    return 409;
}

static int h_bare_error(void *ctx, json_t *body, json_t **resp)
{
    (void)ctx;
    (void)body;
    (void)resp;
    return 503;
}

static int h_bad_status(void *ctx, json_t *body, json_t **resp)
{
    (void)ctx;
    (void)body;
    *resp = json_pack("{s:s}", "state", "bogus");
    return 42;
}

/* Error status with a body that is not {"error": "..."}: must be replaced. */
static int h_error_wrong_shape(void *ctx, json_t *body, json_t **resp)
{
    (void)ctx;
    (void)body;
    *resp = json_pack("{s:i}", "code", 7);
    return 400;
}

static int h_204_with_body(void *ctx, json_t *body, json_t **resp)
{
    (void)ctx;
    (void)body;
    *resp = json_pack("{s:s}", "dropped", "yes");
    return 204;
}

static int h_200_no_body(void *ctx, json_t *body, json_t **resp)
{
    (void)ctx;
    (void)body;
    (void)resp;
    return 200;
}

static int h_slow(void *ctx, json_t *body, json_t **resp)
{
    struct fake_vm *vm = ctx;
    struct timespec ts = { 0, 300 * 1000000L };

    (void)body;
    sem_post(&vm->slow_entered);
    nanosleep(&ts, NULL); /* api_stop() is called meanwhile */
    *resp = json_pack("{s:s}", "slow", "done");
    return 200;
}

static const struct api_route fake_routes[] = {
    { "GET", "/v1/vm", h_get_vm },
    { "PUT", "/v1/vm/pause", h_pause },
    { "PUT", "/v1/vm/resume", h_conflict },
    { "PUT", "/v1/vm/shutdown", h_pause },
    { "GET", "/v1/echo", h_echo },
    { "PUT", "/v1/echo", h_echo },
    { "GET", "/v1/bare-error", h_bare_error },
    { "GET", "/v1/bad-status", h_bad_status },
    { "GET", "/v1/wrong-shape", h_error_wrong_shape },
    { "GET", "/v1/204-with-body", h_204_with_body },
    { "GET", "/v1/200-no-body", h_200_no_body },
    { "PUT", "/v1/slow", h_slow },
    { "PUT", "/v1/migration/recover", h_echo },
};
#define NFAKE (sizeof(fake_routes) / sizeof(fake_routes[0]))

/* ----------------------------------------------------------------- fixture */

struct fixture {
    char dir[64];
    char sock[128];
    struct api_server *srv;
    struct fake_vm vm;
};

static int fixture_setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    if (!f)
        return -1;
    strcpy(f->dir, "/tmp/ferry-api-test-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->sock, sizeof(f->sock), "%s/api.sock", f->dir);
    sem_init(&f->vm.slow_entered, 0, 0);
    *state = f;
    return 0;
}

static int fixture_teardown(void **state)
{
    static const char *const names[] = { "api.sock", "file" };
    struct fixture *f = *state;
    char path[192];

    api_stop(f->srv);
    /* Leave nothing behind, whatever a test created in its directory. */
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", f->dir, names[i]);
        unlink(path);
    }
    rmdir(f->dir);
    sem_destroy(&f->vm.slow_entered);
    free(f);
    return 0;
}

static void fixture_start(struct fixture *f)
{
    assert_int_equal(api_start(&f->srv, f->sock, fake_routes, NFAKE, &f->vm), 0);
    assert_non_null(f->srv);
}

static bool is_socket(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* One request through the CLI's client; returns the parsed reply (NULL if empty). */
static json_t *request(const char *sock, const char *method, const char *path, const char *body,
                       long *status)
{
    char *resp = NULL;
    json_t *json = NULL;

    *status = -1;
    assert_int_equal(client_request(sock, method, path, body, status, &resp), 0);
    assert_non_null(resp);
    if (resp[0]) {
        json = json_loads(resp, JSON_DECODE_ANY, NULL);
        if (!json)
            fail_msg("reply is not JSON: %s", resp);
    }
    free(resp);
    return json;
}

static void assert_error_reply(json_t *json, const char *needle)
{
    const char *msg;

    assert_true(json_is_object(json));
    assert_int_equal(json_object_size(json), 1);
    msg = json_string_value(json_object_get(json, "error"));
    assert_non_null(msg);
    if (!strstr(msg, needle))
        fail_msg("error \"%s\" lacks \"%s\"", msg, needle);
    json_decref(json);
}

static void assert_status_error(const char *sock, const char *method, const char *path,
                                const char *body, long want, const char *needle)
{
    long status;
    json_t *json = request(sock, method, path, body, &status);

    assert_int_equal(status, want);
    assert_error_reply(json, needle);
}

/* ----------------------------------------------------------- end to end */

static void test_e2e_routes(void **state)
{
    struct fixture *f = *state;
    struct stat st;
    long status;
    json_t *json;

    fixture_start(f);
    assert_true(is_socket(f->sock));
    assert_int_equal(lstat(f->sock, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600); /* the API controls the VM */

    /* GET ok */
    json = request(f->sock, "GET", "/v1/vm", NULL, &status);
    assert_int_equal(status, 200);
    assert_string_equal(json_string_value(json_object_get(json, "state")), "running");
    assert_int_equal(json_integer_value(json_object_get(json, "vcpus")), 2);
    assert_true(json_is_false(json_object_get(json, "had_body")));
    json_decref(json);
    assert_int_equal(atomic_load(&f->vm.get_calls), 1);

    /* PUT with a JSON body, echoed back */
    json = request(f->sock, "PUT", "/v1/echo", "{\"a\": [1, 2], \"b\": \"x\"}", &status);
    assert_int_equal(status, 200);
    assert_string_equal(json_string_value(json_object_get(json_object_get(json, "echo"), "b")),
                        "x");
    assert_int_equal(json_array_size(json_object_get(json_object_get(json, "echo"), "a")), 2);
    json_decref(json);
    assert_int_equal(atomic_load(&f->vm.echo_calls), 1);

    /* Bad JSON: 400 with jansson's reason, and the handler is not called. */
    assert_status_error(f->sock, "PUT", "/v1/echo", "{\"a\": ", 400, "invalid JSON");
    assert_status_error(f->sock, "PUT", "/v1/echo", "{\"a\" 1}", 400, "line 1");
    assert_int_equal(atomic_load(&f->vm.echo_calls), 1);

    /* Unknown route, trailing slash, wrong method */
    assert_status_error(f->sock, "GET", "/v1/nope", NULL, 404, "Not Found");
    assert_status_error(f->sock, "GET", "/v1/vm/", NULL, 404, "Not Found");
    assert_status_error(f->sock, "DELETE", "/v1/vm", NULL, 405, "Not Allowed");
    assert_status_error(f->sock, "GET", "/v1/vm/pause", NULL, 405, "Not Allowed");
    assert_int_equal(atomic_load(&f->vm.get_calls), 1);
    assert_int_equal(atomic_load(&f->vm.pause_calls), 0);

    /* The query string is not part of the routed path. */
    json_decref(request(f->sock, "GET", "/v1/vm?verbose=1", NULL, &status));
    assert_int_equal(status, 200);
    assert_int_equal(atomic_load(&f->vm.get_calls), 2);

    api_stop(f->srv);
    f->srv = NULL;
    assert_int_equal(access(f->sock, F_OK), -1);
    assert_int_equal(errno, ENOENT);
}

static void test_e2e_bodies(void **state)
{
    struct fixture *f = *state;
    long status;
    json_t *json;
    char *big;

    fixture_start(f);
    /* A body must be an object. */
    assert_status_error(f->sock, "PUT", "/v1/echo", "[1, 2]", 400, "JSON object");
    assert_status_error(f->sock, "PUT", "/v1/echo", "\"x\"", 400, "JSON object");
    assert_status_error(f->sock, "PUT", "/v1/echo", "{} {}", 400, "invalid JSON");
    assert_int_equal(atomic_load(&f->vm.echo_calls), 0);

    /* No body: the handler gets NULL. */
    json = request(f->sock, "PUT", "/v1/echo", NULL, &status);
    assert_int_equal(status, 200);
    assert_true(json_is_null(json_object_get(json, "echo")));
    json_decref(json);

    /* 2xx with no reply object: 204 and an empty body. */
    assert_null(request(f->sock, "PUT", "/v1/vm/pause", NULL, &status));
    assert_int_equal(status, 204);
    assert_int_equal(atomic_load(&f->vm.pause_calls), 1);
    /* 204 never has a body, even if the handler made one. */
    assert_null(request(f->sock, "GET", "/v1/204-with-body", NULL, &status));
    assert_int_equal(status, 204);
    /* Any 2xx without a reply object becomes 204. */
    assert_null(request(f->sock, "GET", "/v1/200-no-body", NULL, &status));
    assert_int_equal(status, 204);

    /* Exactly API_BODY_MAX bytes is accepted, one more is 413. */
    big = malloc(API_BODY_MAX + 2);
    assert_non_null(big);
    memset(big, 'x', API_BODY_MAX + 1);
    memcpy(big, "{\"pad\": \"", 9);
    memcpy(big + API_BODY_MAX - 2, "\"}", 3);
    assert_int_equal(strlen(big), API_BODY_MAX);
    json = request(f->sock, "PUT", "/v1/echo", big, &status);
    assert_int_equal(status, 200);
    assert_int_equal(json_string_length(json_object_get(json_object_get(json, "echo"), "pad")),
                     API_BODY_MAX - 11);
    json_decref(json);
    assert_int_equal(atomic_load(&f->vm.echo_calls), 2);

    memcpy(big + API_BODY_MAX - 2, " \"}", 4);
    assert_int_equal(strlen(big), API_BODY_MAX + 1);
    assert_status_error(f->sock, "PUT", "/v1/echo", big, 413, "larger than");
    assert_int_equal(atomic_load(&f->vm.echo_calls), 2);
    free(big);

    /* The server still works after refusing a body. */
    json_decref(request(f->sock, "GET", "/v1/vm", NULL, &status));
    assert_int_equal(status, 200);
}

static void test_e2e_handler_errors(void **state)
{
    struct fixture *f = *state;

    fixture_start(f);
    /* The handler's own message, its status kept */
    assert_status_error(f->sock, "PUT", "/v1/vm/resume", NULL, 409, "VM is not paused");
    /* No body from the handler: the reason phrase */
    assert_status_error(f->sock, "GET", "/v1/bare-error", NULL, 503, "Service Unavailable");
    /* Nonsense status: 500, and its body is not leaked through */
    assert_status_error(f->sock, "GET", "/v1/bad-status", NULL, 500, "Internal Server Error");
    /* Error with a body of the wrong shape: still {"error": ...} */
    assert_status_error(f->sock, "GET", "/v1/wrong-shape", NULL, 400, "Bad Request");
}

/* Raw HTTP, to see headers and to send what curl would not. */
static char *raw_http(const char *sock, const char *req, size_t req_len)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct timeval tv = { .tv_sec = 5 };
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    ssize_t n;
    int fd;

    assert_non_null(buf);
    strcpy(sa.sun_path, sock);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    for (size_t off = 0; off < req_len; off += (size_t)n) {
        n = send(fd, req + off, req_len - off, MSG_NOSIGNAL);
        assert_true(n > 0);
    }
    while ((n = recv(fd, buf + len, cap - len - 1, 0)) > 0) {
        len += (size_t)n;
        if (cap - len < 1024)
            buf = realloc(buf, cap *= 2);
        assert_non_null(buf);
    }
    assert_int_equal(n, 0); /* EOF, not the timeout */
    close(fd);
    buf[len] = '\0';
    return buf;
}

static char *raw_simple(const char *sock, const char *method, const char *path)
{
    char req[256];
    int n =
        snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                 method, path);

    return raw_http(sock, req, (size_t)n);
}

static int raw_status(const char *resp)
{
    int status = -1;

    assert_int_equal(sscanf(resp, "HTTP/1.1 %d ", &status), 1);
    return status;
}

/* Value of a header in a raw response, copied into out; false if absent. */
static bool raw_header(const char *resp, const char *name, char *out, size_t size)
{
    const char *end = strstr(resp, "\r\n\r\n");
    size_t nlen = strlen(name);

    for (const char *p = strstr(resp, "\r\n"); p && p < end; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, name, nlen) != 0 || p[2 + nlen] != ':')
            continue;
        p += 2 + nlen + 1;
        p += strspn(p, " ");
        snprintf(out, size, "%.*s", (int)strcspn(p, "\r"), p);
        return true;
    }
    return false;
}

static void assert_raw(const char *sock, const char *method, const char *path, int want_status,
                       const char *want_allow)
{
    char *resp = raw_simple(sock, method, path);
    char val[128];

    assert_int_equal(raw_status(resp), want_status);
    assert_true(raw_header(resp, "Content-Type", val, sizeof(val)));
    assert_string_equal(val, "application/json");
    if (want_allow) {
        assert_true(raw_header(resp, "Allow", val, sizeof(val)));
        assert_string_equal(val, want_allow);
    } else {
        assert_false(raw_header(resp, "Allow", val, sizeof(val)));
    }
    free(resp);
}

static void test_e2e_headers(void **state)
{
    struct fixture *f = *state;

    fixture_start(f);
    assert_raw(f->sock, "GET", "/v1/vm", 200, NULL);
    assert_raw(f->sock, "PUT", "/v1/vm/pause", 204, NULL);
    assert_raw(f->sock, "GET", "/nope", 404, NULL);
    assert_raw(f->sock, "PUT", "/v1/vm/resume", 409, NULL);
    assert_raw(f->sock, "DELETE", "/v1/echo", 405, "GET, PUT");
    assert_raw(f->sock, "POST", "/v1/vm", 405, "GET");
}

static void test_e2e_oversized_raw(void **state)
{
    struct fixture *f = *state;
    const size_t chunk = 8192, nchunks = 10; /* 80 KiB, over the limit */
    size_t cap = 256 + nchunks * (chunk + 16), len;
    char *req = malloc(cap), *resp;

    fixture_start(f);
    assert_non_null(req);

    /* Chunked: no length up front, so the server reads and discards, then 413. */
    len = (size_t)sprintf(req, "PUT /v1/echo HTTP/1.1\r\nHost: localhost\r\n"
                               "Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (size_t i = 0; i < nchunks; i++) {
        len += (size_t)sprintf(req + len, "%zx\r\n", chunk);
        memset(req + len, ' ', chunk);
        len += chunk;
        len += (size_t)sprintf(req + len, "\r\n");
    }
    len += (size_t)sprintf(req + len, "0\r\n\r\n");
    resp = raw_http(f->sock, req, len);
    assert_int_equal(raw_status(resp), 413);
    assert_non_null(strstr(resp, "{\"error\":"));
    free(resp);

    /* Declared too big, body sent at once: read, discarded, then 413. */
    len = (size_t)sprintf(req,
                          "PUT /v1/echo HTTP/1.1\r\nHost: localhost\r\n"
                          "Connection: close\r\nContent-Length: %zu\r\n\r\n",
                          nchunks * chunk);
    memset(req + len, ' ', nchunks * chunk);
    resp = raw_http(f->sock, req, len + nchunks * chunk);
    assert_int_equal(raw_status(resp), 413);
    assert_non_null(strstr(resp, "{\"error\":"));
    free(resp);

    /* Declared too big with Expect: refused before any body is sent. */
    len = (size_t)sprintf(req, "PUT /v1/echo HTTP/1.1\r\nHost: localhost\r\n"
                               "Content-Length: 100000\r\nExpect: 100-continue\r\n\r\n");
    resp = raw_http(f->sock, req, len);
    assert_int_equal(raw_status(resp), 413);
    assert_null(strstr(resp, "100 Continue"));
    assert_non_null(strstr(resp, "{\"error\":"));
    free(resp);
    free(req);
    assert_int_equal(atomic_load(&f->vm.echo_calls), 0);
}

static void test_e2e_invalid_utf8(void **state)
{
    struct fixture *f = *state;
    long status;
    json_t *json;

    fixture_start(f);
    /* Bad bytes in the body: still a 400 with a valid JSON error object. */
    json = request(f->sock, "PUT", "/v1/echo", "{\"a\": \"\xff\xfe\"}", &status);
    assert_int_equal(status, 400);
    assert_error_reply(json, "invalid JSON");
    json = request(f->sock, "PUT", "/v1/echo", "\xff", &status);
    assert_int_equal(status, 400);
    assert_error_reply(json, "invalid JSON");
}

static void test_api_error_object(void **state)
{
    json_t *err;

    (void)state;
    err = api_error("VM is %s (%d vCPUs)", "running", 4);
    assert_non_null(err);
    assert_int_equal(json_object_size(err), 1);
    assert_string_equal(json_string_value(json_object_get(err, "error")),
                        "VM is running (4 vCPUs)");
    json_decref(err);
    /* Not UTF-8: still an error object, bad bytes replaced. */
    err = api_error("bad name '%s'", "a\xff"
                                     "b");
    assert_non_null(err);
    assert_string_equal(json_string_value(json_object_get(err, "error")), "bad name 'a?b'");
    json_decref(err);
}

/* PUT /v1/migration with one integer option; the VM is never started, so a
 * request that parses ends in 409 ("the VM is created"). */
static int migration_start(const char *key, json_int_t value, char *err, size_t len)
{
    const struct api_route *r;
    struct vm *vm = calloc(1, sizeof(*vm));
    json_t *body = json_pack("{s:s, s:I}", "uri", "tcp:127.0.0.1:1", key, value);
    json_t *resp = NULL;
    int status;

    assert_non_null(vm);
    r = api_route_find(migration_routes, migration_routes_count, "PUT", "/v1/migration",
                       &status);
    assert_non_null(r);
    status = r->fn(vm, body, &resp);
    snprintf(err, len, "%s", resp ? json_string_value(json_object_get(resp, "error")) : "");
    json_decref(resp);
    json_decref(body);
    free(vm);
    return status;
}

/* MiB/s to bytes/s and s to ns must not wrap: the largest values that fit
 * still parse, one more is a 400 that says the limit. */
static void test_migration_limits_overflow(void **state)
{
    const json_int_t bw_max = (json_int_t)(UINT64_MAX >> 20);
    const json_int_t time_max = (json_int_t)(UINT64_MAX / 1000000000ULL);
    char err[256];

    (void)state;
    assert_int_equal(migration_start("bandwidth_mibs", 100, err, sizeof(err)), 409);
    assert_int_equal(migration_start("bandwidth_mibs", bw_max, err, sizeof(err)), 409);
    assert_int_equal(migration_start("bandwidth_mibs", bw_max + 1, err, sizeof(err)), 400);
    assert_non_null(strstr(err, "bandwidth_mibs must be at most 17592186044415"));
    assert_int_equal(migration_start("bandwidth_mibs", INT64_MAX, err, sizeof(err)), 400);
    assert_int_equal(migration_start("max_time_s", 60, err, sizeof(err)), 409);
    assert_int_equal(migration_start("max_time_s", time_max, err, sizeof(err)), 409);
    assert_int_equal(migration_start("max_time_s", time_max + 1, err, sizeof(err)), 400);
    assert_non_null(strstr(err, "max_time_s must be at most 18446744073"));
    assert_int_equal(migration_start("max_time_s", INT64_MAX, err, sizeof(err)), 400);
    /* Negative values keep their old answer. */
    assert_int_equal(migration_start("bandwidth_mibs", -1, err, sizeof(err)), 400);
}

/* ----------------------------------------------------- start/stop and socket */

static void test_start_path_errors(void **state)
{
    struct fixture *f = *state;
    struct api_server *srv = NULL;
    char path[256];

    const size_t sun_max = sizeof(((struct sockaddr_un *)0)->sun_path);
    int n;

    /* A path in a missing directory, padded to the given length. */
    n = snprintf(path, sizeof(path), "%s/no/such/dir/", f->dir);
    memset(path + n, 'a', sizeof(path) - (size_t)n - 1);
    path[sizeof(path) - 1] = '\0';
    assert_int_equal(api_start(&srv, path, fake_routes, NFAKE, NULL), -ENAMETOOLONG);
    path[sun_max] = '\0'; /* no room left for the NUL */
    assert_int_equal(api_start(&srv, path, fake_routes, NFAKE, NULL), -ENAMETOOLONG);
    path[sun_max - 1] = '\0'; /* the longest that fits: gets as far as bind() */
    assert_int_equal(api_start(&srv, path, fake_routes, NFAKE, NULL), -ENOENT);

    snprintf(path, sizeof(path), "%s/no/such/dir/api.sock", f->dir);
    assert_int_equal(api_start(&srv, path, fake_routes, NFAKE, NULL), -ENOENT);
    assert_null(srv);
}

static void test_start_refuses_live_server(void **state)
{
    struct fixture *f = *state;
    struct api_server *srv = NULL;
    long status;

    fixture_start(f);
    assert_int_equal(api_start(&srv, f->sock, fake_routes, NFAKE, NULL), -EADDRINUSE);
    assert_null(srv);
    /* The first server is untouched and still answers. */
    assert_true(is_socket(f->sock));
    json_decref(request(f->sock, "GET", "/v1/vm", NULL, &status));
    assert_int_equal(status, 200);
}

static void test_start_refuses_non_socket(void **state)
{
    struct fixture *f = *state;
    struct api_server *srv = NULL;
    char path[192];
    struct stat st;
    int fd;

    snprintf(path, sizeof(path), "%s/file", f->dir);
    fd = open(path, O_CREAT | O_WRONLY, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "keep", 4), 4);
    close(fd);
    assert_int_equal(api_start(&srv, path, fake_routes, NFAKE, NULL), -EEXIST);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_size, 4);
}

/* A socket file nobody listens on, as a crashed ferry leaves behind. */
static void make_stale_socket(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    strcpy(sa.sun_path, path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
    assert_true(is_socket(path));
}

static void test_start_replaces_stale_socket(void **state)
{
    struct fixture *f = *state;
    long status;

    make_stale_socket(f->sock);
    fixture_start(f);
    json_decref(request(f->sock, "GET", "/v1/vm", NULL, &status));
    assert_int_equal(status, 200);
}

struct slow_call {
    const char *sock;
    long status;
    char *resp;
    int ret;
};

static void *slow_call_thread(void *arg)
{
    struct slow_call *c = arg;

    c->ret = client_request(c->sock, "PUT", "/v1/slow", NULL, &c->status, &c->resp);
    return NULL;
}

/* The shutdown case: the VMM stops the API right after a handler answered. */
static void test_stop_lets_reply_finish(void **state)
{
    struct fixture *f = *state;
    struct slow_call c = { .sock = f->sock, .ret = 1 };
    pthread_t t;

    fixture_start(f);
    assert_int_equal(pthread_create(&t, NULL, slow_call_thread, &c), 0);
    assert_int_equal(sem_wait(&f->vm.slow_entered), 0);
    api_stop(f->srv); /* while h_slow still sleeps */
    f->srv = NULL;
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(c.ret, 0);
    assert_int_equal(c.status, 200);
    assert_non_null(strstr(c.resp, "\"slow\":\"done\""));
    free(c.resp);
    assert_false(is_socket(f->sock));
}

/* ------------------------------------------------------------------- client */

static void test_client_transport_errors(void **state)
{
    struct fixture *f = *state;
    char *resp = (char *)"untouched";
    char path[192];
    long status = -1;

    assert_int_equal(client_request(f->sock, "GET", "/v1/vm", NULL, &status, &resp), -ENOENT);
    make_stale_socket(f->sock);
    assert_int_equal(client_request(f->sock, "GET", "/v1/vm", NULL, &status, &resp), -ECONNREFUSED);
    memset(path, 'a', sizeof(path) - 1);
    path[sizeof(path) - 1] = '\0';
    assert_int_equal(client_request(path, "GET", "/v1/vm", NULL, &status, &resp), -ENAMETOOLONG);
    assert_string_equal(resp, "untouched");
    assert_int_equal(status, -1);
}

/*
 * The server logs to stderr in this same process: drop its log lines (all of
 * them name the subsystem, "...: api: ..." or "...: client: ...") to keep the
 * CLI's own output.
 */
static char *client_lines(char *err)
{
    char *out = calloc(1, strlen(err) + 1);
    char *save = NULL;

    assert_non_null(out);
    for (char *line = strtok_r(err, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strstr(line, ": api: ") || strstr(line, ": client: "))
            continue;
        strcat(out, line);
        strcat(out, "\n");
    }
    free(err);
    return out;
}

/* Runs fn with stdout and stderr captured into out/err (malloc'd). */
static int capture(int (*fn)(int, char **), int argc, char **argv, char **out, char **err)
{
    char path[2][64] = { "/tmp/ferry-cap-out-XXXXXX", "/tmp/ferry-cap-err-XXXXXX" };
    char **dst[2] = { out, err };
    int saved[2], fds[2], ret;

    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < 2; i++) {
        fds[i] = mkstemp(path[i]);
        assert_true(fds[i] >= 0);
        unlink(path[i]);
        saved[i] = dup(i + 1);
        dup2(fds[i], i + 1);
    }
    ret = fn(argc, argv);
    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < 2; i++) {
        off_t len = lseek(fds[i], 0, SEEK_END);

        dup2(saved[i], i + 1);
        close(saved[i]);
        *dst[i] = calloc(1, (size_t)len + 1);
        assert_int_equal(pread(fds[i], *dst[i], (size_t)len, 0), len);
        close(fds[i]);
    }
    *err = client_lines(*err);
    return ret;
}

static int run_verb(const char *verb, const char *sock, char **out, char **err)
{
    char *argv[] = { (char *)verb, (char *)"--api-socket", (char *)sock, NULL };

    return capture(client_verb_main, 3, argv, out, err);
}

static void test_cli_verbs(void **state)
{
    struct fixture *f = *state;
    char *out, *err;
    json_t *json;

    fixture_start(f);
    /* status: pretty JSON on stdout */
    assert_int_equal(run_verb("status", f->sock, &out, &err), CLIENT_EXIT_OK);
    json = json_loads(out, 0, NULL);
    assert_non_null(json);
    assert_string_equal(json_string_value(json_object_get(json, "state")), "running");
    json_decref(json);
    assert_non_null(strstr(out, "\n  \"state\": \"running\"")); /* indented */
    assert_string_equal(err, "");
    free(out);
    free(err);
    assert_int_equal(atomic_load(&f->vm.get_calls), 1);

    /* pause: 204, prints nothing */
    assert_int_equal(run_verb("pause", f->sock, &out, &err), CLIENT_EXIT_OK);
    assert_string_equal(out, "");
    assert_string_equal(err, "");
    free(out);
    free(err);
    assert_int_equal(atomic_load(&f->vm.pause_calls), 1);

    /* resume: the API says 409 */
    assert_int_equal(run_verb("resume", f->sock, &out, &err), CLIENT_EXIT_API);
    assert_string_equal(out, "");
    assert_string_equal(err, "ferry resume: VM is not paused\n");
    free(out);
    free(err);

    assert_int_equal(run_verb("shutdown", f->sock, &out, &err), CLIENT_EXIT_OK);
    free(out);
    free(err);
    assert_int_equal(atomic_load(&f->vm.pause_calls), 2); /* fake shutdown shares h_pause */

    api_stop(f->srv);
    f->srv = NULL;
    assert_int_equal(run_verb("status", f->sock, &out, &err), CLIENT_EXIT_CONNECT);
    assert_string_equal(out, "");
    assert_non_null(strstr(err, "ferry status: cannot connect to "));
    assert_non_null(strstr(err, f->sock));
    assert_non_null(strstr(err, strerror(ENOENT)));
    free(out);
    free(err);
}

/* capture() takes an argv-style function: argv = verb, socket, method, path, body. */
static int generic_request(int argc, char **argv)
{
    assert_int_equal(argc, 5);
    return client_verb_request(argv[0], argv[1], argv[2], argv[3], argv[4]);
}

static void test_cli_generic_request(void **state)
{
    struct fixture *f = *state;
    char *argv[] = { (char *)"echo",         f->sock, (char *)"PUT", (char *)"/v1/echo",
                     (char *)"{\"k\": [1]}", NULL };
    char *out, *err;

    fixture_start(f);
    assert_int_equal(capture(generic_request, 5, argv, &out, &err), CLIENT_EXIT_OK);
    assert_string_equal(out, "{\n  \"echo\": {\n    \"k\": [\n      1\n    ]\n  }\n}\n");
    assert_string_equal(err, "");
    free(out);
    free(err);
    assert_int_equal(atomic_load(&f->vm.echo_calls), 1);

    argv[4] = (char *)"nope";
    assert_int_equal(capture(generic_request, 5, argv, &out, &err), CLIENT_EXIT_API);
    assert_string_equal(out, "");
    assert_non_null(strstr(err, "ferry echo: invalid JSON: "));
    free(out);
    free(err);
    assert_int_equal(atomic_load(&f->vm.echo_calls), 1);

    /* 405 from the generic path: exit 1 with the server's message. */
    argv[2] = (char *)"DELETE";
    assert_int_equal(capture(generic_request, 5, argv, &out, &err), CLIENT_EXIT_API);
    assert_string_equal(err, "ferry echo: Method Not Allowed\n");
    free(out);
    free(err);
}

struct usage_case {
    int argc;
    const char *argv[6];
    int want;
    const char *want_err; /* substring of stderr, or NULL for stderr empty */
};

static void test_cli_usage(void **state)
{
    struct fixture *f = *state;
    const struct usage_case cases[] = {
        { 1, { "status" }, CLIENT_EXIT_USAGE, "--api-socket is required" },
        { 2, { "pause", "--bogus" }, CLIENT_EXIT_USAGE, "unknown option '--bogus'" },
        { 2, { "pause", "-x" }, CLIENT_EXIT_USAGE, "unknown option '-x'" },
        { 2, { "pause", "--api-socket" }, CLIENT_EXIT_USAGE, "needs a path" },
        { 2, { "pause", "--api-socket=" }, CLIENT_EXIT_USAGE, "needs a path" },
        { 4,
          { "resume", "--api-socket", f->sock, "extra" },
          CLIENT_EXIT_USAGE,
          "unexpected argument 'extra'" },
        { 3, { "reboot", "--api-socket", f->sock }, CLIENT_EXIT_USAGE, "unknown verb 'reboot'" },
        { 0, { NULL }, CLIENT_EXIT_USAGE, "unknown verb" },
        { 2, { "status", "-h" }, CLIENT_EXIT_OK, NULL },
        { 3, { "shutdown", "--help", "--bogus" }, CLIENT_EXIT_OK, NULL },
    };
    char *argv[6], *out, *err;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memcpy(argv, cases[i].argv, sizeof(argv));
        assert_int_equal(capture(client_verb_main, cases[i].argc, argv, &out, &err), cases[i].want);
        if (cases[i].want_err) {
            if (!strstr(err, cases[i].want_err))
                fail_msg("case %zu: stderr \"%s\" lacks \"%s\"", i, err, cases[i].want_err);
            assert_non_null(strstr(err, "usage: ferry"));
            assert_string_equal(out, "");
        } else {
            assert_non_null(strstr(out, "usage: ferry"));
            assert_string_equal(err, "");
        }
        free(out);
        free(err);
    }
    /* No server was started, so no request can have been made. */
    assert_false(is_socket(f->sock));
}

/* getopt state must not leak from one call into the next (optind reset). */
static void test_cli_repeated_parse(void **state)
{
    struct fixture *f = *state;
    char *out, *err;

    fixture_start(f);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(run_verb("status", f->sock, &out, &err), CLIENT_EXIT_OK);
        free(out);
        free(err);
    }
    assert_int_equal(atomic_load(&f->vm.get_calls), 3);
}

/* migrate-recover sends its URI as JSON: quotes and backslashes escaped. */
static void test_cli_recover_uri_escaped(void **state)
{
    static const char uri[] = "tcp:a\"b\\c:1";
    struct fixture *f = *state;
    char *argv[] = { (char *)"migrate-recover", (char *)"--api-socket", f->sock, (char *)uri,
                     NULL };
    char *out, *err;
    json_t *json;

    fixture_start(f);
    assert_int_equal(capture(verb_migrate_simple_main, 4, argv, &out, &err), CLIENT_EXIT_OK);
    assert_string_equal(err, "");
    json = json_loads(out, 0, NULL);
    assert_non_null(json);
    assert_string_equal(json_string_value(json_object_get(json_object_get(json, "echo"), "uri")),
                        uri);
    json_decref(json);
    free(out);
    free(err);
    assert_int_equal(atomic_load(&f->vm.echo_calls), 1);
}

#define E2E(fn) cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_exact_match),
        cmocka_unit_test(test_route_unknown_path_404),
        cmocka_unit_test(test_route_wrong_method_405),
        cmocka_unit_test(test_route_trailing_slash_404),
        cmocka_unit_test(test_route_empty_table),
        cmocka_unit_test(test_api_error_object),
        cmocka_unit_test(test_migration_limits_overflow),
        E2E(test_e2e_routes),
        E2E(test_e2e_bodies),
        E2E(test_e2e_handler_errors),
        E2E(test_e2e_headers),
        E2E(test_e2e_oversized_raw),
        E2E(test_e2e_invalid_utf8),
        E2E(test_start_path_errors),
        E2E(test_start_refuses_live_server),
        E2E(test_start_refuses_non_socket),
        E2E(test_start_replaces_stale_socket),
        E2E(test_stop_lets_reply_finish),
        E2E(test_client_transport_errors),
        E2E(test_cli_verbs),
        E2E(test_cli_generic_request),
        E2E(test_cli_usage),
        E2E(test_cli_repeated_parse),
        E2E(test_cli_recover_uri_escaped),
    };

    return cmocka_run_group_tests_name("api", tests, NULL, NULL);
}
