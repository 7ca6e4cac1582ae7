/*
 * REST API server on a unix socket, built on libmicrohttpd (MHD).
 *
 * Request life cycle in MHD: the access handler is called once with the
 * headers, then once per chunk of body, then once more with no data; only
 * then do we route, parse the body and call the VM layer's handler. The
 * completion callback frees the per-request state.
 */
#include "api/api.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "util/log.h"

#define API_MAX_CONNECTIONS  32
#define API_CONN_TIMEOUT_S   30   /* drops idle keep-alive clients */
#define API_DRAIN_TIMEOUT_MS 1000 /* api_stop() waits this long for replies in flight */
#define API_ALLOW_MAX        128

struct api_server {
    struct MHD_Daemon *mhd;
    int fd;
    char *path;
    const struct api_route *routes;
    size_t nroutes;
    void *ctx;
    atomic_int inflight; /* requests seen but whose reply is not yet sent */
};

struct api_request {
    char *buf;
    size_t len;
    size_t cap;
    bool too_big;
};

/* A JSON string from any bytes: handlers' error texts may quote raw request input. */
static json_t *api_json_string(const char *s)
{
    json_t *str = json_string(s);
    char *copy;

    if (str)
        return str;
    copy = strdup(s);
    if (!copy)
        return NULL;
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    str = json_string(copy);
    free(copy);
    return str;
}

json_t *api_error(const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return json_pack("{s:o?}", "error", api_json_string(msg));
}

const struct api_route *api_route_find(const struct api_route *routes, size_t n, const char *method,
                                       const char *path, int *status)
{
    bool path_known = false;

    for (size_t i = 0; i < n; i++) {
        if (strcmp(routes[i].path, path) != 0)
            continue;
        path_known = true;
        if (strcmp(routes[i].method, method) == 0) {
            *status = 200;
            return &routes[i];
        }
    }
    *status = path_known ? 405 : 404;
    return NULL;
}

/* Builds the Allow header value for a 405: the methods routed for path. */
static void api_route_allow(const struct api_route *routes, size_t n, const char *path, char *buf,
                            size_t size)
{
    size_t len = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < n && len < size; i++) {
        if (strcmp(routes[i].path, path) != 0)
            continue;
        len += snprintf(buf + len, size - len, "%s%s", len ? ", " : "", routes[i].method);
    }
}

/* Serialises body (which it consumes), adding a newline for terminal users. */
static char *api_body_text(json_t *body, size_t *len)
{
    char *json = json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY);
    size_t n;
    char *text;

    json_decref(body);
    if (!json)
        return NULL;
    n = strlen(json);
    text = realloc(json, n + 2);
    if (!text) {
        free(json);
        return NULL;
    }
    text[n] = '\n';
    text[n + 1] = '\0';
    *len = n + 1;
    return text;
}

static struct MHD_Response *api_response_new(json_t *body)
{
    struct MHD_Response *r;
    size_t len = 0;
    char *text;

    if (!body)
        return MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    text = api_body_text(body, &len);
    if (!text)
        return NULL;
    r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!r)
        free(text);
    return r;
}

/* Queues the reply; body (may be NULL) is consumed. allow is for 405 only. */
static enum MHD_Result api_respond(struct MHD_Connection *conn, int status, json_t *body,
                                   const char *allow)
{
    struct MHD_Response *r = api_response_new(body);
    enum MHD_Result ret;

    if (!r) {
        log_err("api: cannot build a %d response", status);
        return MHD_NO; /* MHD closes the connection */
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    ret = MHD_queue_response(conn, (unsigned int)status, r);
    MHD_destroy_response(r);
    return ret;
}

static bool api_is_error_body(json_t *body)
{
    return json_is_object(body) && json_is_string(json_object_get(body, "error"));
}

/* Enforces the handler contract: errors are {"error": ...}, 2xx without a body is 204. */
static int api_normalize(int status, json_t **resp)
{
    if (status < 200 || status > 599) {
        log_err("api: handler returned invalid status %d", status);
        status = 500;
        json_decref(*resp);
        *resp = NULL;
    }
    if (status >= 300 && !api_is_error_body(*resp)) {
        json_decref(*resp);
        *resp = api_error("%s", MHD_get_reason_phrase_for((unsigned int)status));
    }
    if (status < 300 && !*resp)
        status = 204;
    if (status == 204) {
        json_decref(*resp);
        *resp = NULL;
    }
    return status;
}

/* Parses the request body: NULL if empty, else must be a JSON object. */
static int api_parse_body(const struct api_request *req, json_t **body, json_t **err)
{
    json_error_t jerr;

    *body = NULL;
    if (req->len == 0)
        return 0;
    /* DECODE_ANY so that a valid non-object gets the clearer error below. */
    *body = json_loadb(req->buf, req->len, JSON_DECODE_ANY, &jerr);
    if (!*body) {
        *err =
            api_error("invalid JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
        return 400;
    }
    if (!json_is_object(*body)) {
        json_decref(*body);
        *body = NULL;
        *err = api_error("request body must be a JSON object");
        return 400;
    }
    return 0;
}

static int api_call(struct api_server *srv, const struct api_route *route,
                    const struct api_request *req, json_t **resp)
{
    json_t *body;
    int status;

    status = api_parse_body(req, &body, resp);
    if (status)
        return status;
    status = route->fn(srv->ctx, body, resp);
    json_decref(body);
    return status;
}

static json_t *api_too_big(void)
{
    return api_error("request body larger than %d bytes", API_BODY_MAX);
}

/* Picks the route, or else sets the status (404, 405, 413) that answers instead. */
static const struct api_route *api_select(struct api_server *srv, const char *method,
                                          const char *url, const struct api_request *req,
                                          int *status, json_t **resp)
{
    if (!req->too_big)
        return api_route_find(srv->routes, srv->nroutes, method, url, status);
    /* An oversized body is refused whatever the route, as in api_request_begin(). */
    *status = 413;
    *resp = api_too_big();
    return NULL;
}

/* Who asked, for the log of state-changing requests (the socket's mode and
 * group decide who can; this says who did). */
static void api_log_caller(struct MHD_Connection *conn, const char *method, const char *url,
                           int status)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    struct ucred cred = { .pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1 };
    socklen_t len = sizeof(cred);

    if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)
        return;
    if (ci)
        getsockopt(ci->connect_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len);
    log_info("api: %s %s from pid %d uid %d gid %d -> %d", method, url, (int)cred.pid,
             (int)cred.uid, (int)cred.gid, status);
}

static enum MHD_Result api_dispatch(struct api_server *srv, struct MHD_Connection *conn,
                                    const char *method, const char *url,
                                    const struct api_request *req)
{
    const struct api_route *route;
    char allow[API_ALLOW_MAX];
    json_t *resp = NULL;
    int status;

    route = api_select(srv, method, url, req, &status, &resp);
    if (route)
        status = api_call(srv, route, req, &resp);
    status = api_normalize(status, &resp);
    log_debug("api: %s %s -> %d", method, url, status);
    api_log_caller(conn, method, url, status);
    if (status != 405)
        return api_respond(conn, status, resp, NULL);
    api_route_allow(srv->routes, srv->nroutes, url, allow, sizeof(allow));
    return api_respond(conn, status, resp, allow);
}

/* Keeps up to API_BODY_MAX bytes; past that, notes it and discards the rest. */
static int api_body_append(struct api_request *req, const char *data, size_t size)
{
    size_t cap = req->cap ? req->cap : 1024;
    char *buf;

    if (req->too_big || size > API_BODY_MAX - req->len) {
        req->too_big = true;
        return 0;
    }
    while (cap < req->len + size)
        cap *= 2;
    if (cap != req->cap) {
        buf = realloc(req->buf, cap);
        if (!buf)
            return -ENOMEM;
        req->buf = buf;
        req->cap = cap;
    }
    memcpy(req->buf + req->len, data, size);
    req->len += size;
    return 0;
}

/*
 * Refuse an oversized body up front only if the client waits for "100 Continue"
 * before sending it (curl does for big bodies): MHD then answers 413 at once
 * and closes. A client already sending could see its write fail before it
 * reads the 413, so for it the body is read and discarded (api_body_append()).
 */
static bool api_refuse_early(struct MHD_Connection *conn)
{
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *expect = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);

    return cl && expect && strcasecmp(expect, "100-continue") == 0 &&
           strtoull(cl, NULL, 10) > API_BODY_MAX;
}

static enum MHD_Result api_request_begin(struct api_server *srv, struct MHD_Connection *conn,
                                         const char *method, const char *url, void **con_cls)
{
    struct api_request *req = calloc(1, sizeof(*req));

    if (!req)
        return MHD_NO;
    *con_cls = req;
    atomic_fetch_add(&srv->inflight, 1);
    if (!api_refuse_early(conn))
        return MHD_YES;
    log_debug("api: %s %s -> 413 (before the body)", method, url);
    return api_respond(conn, 413, api_too_big(), NULL);
}

static enum MHD_Result api_access(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct api_request *req = *con_cls;

    (void)version;
    if (!req)
        return api_request_begin(cls, conn, method, url, con_cls);
    if (*upload_data_size) {
        if (api_body_append(req, upload_data, *upload_data_size) < 0)
            return MHD_NO;
        *upload_data_size = 0;
        return MHD_YES;
    }
    return api_dispatch(cls, conn, method, url, req);
}

static void api_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                          enum MHD_RequestTerminationCode toe)
{
    struct api_server *srv = cls;
    struct api_request *req = *con_cls;

    (void)conn;
    (void)toe;
    if (!req)
        return;
    free(req->buf);
    free(req);
    *con_cls = NULL;
    atomic_fetch_sub(&srv->inflight, 1);
}

static void api_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[256];
    size_t len;

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    len = strlen(msg);
    if (len && msg[len - 1] == '\n')
        msg[len - 1] = '\0';
    log_warn("api: %s", msg);
}

static int api_sockaddr(struct sockaddr_un *sa, const char *path)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path))
        return -ENAMETOOLONG;
    strcpy(sa->sun_path, path);
    return 0;
}

/*
 * Is a server answering at the socket? 1 yes, 0 no (stale), else -errno.
 * Non-blocking, so a live server with a full backlog (EAGAIN) cannot hang us.
 */
static int api_socket_live(const struct sockaddr_un *sa)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int ret = 1;

    if (fd < 0)
        return -errno;
    if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0 && errno != EAGAIN)
        ret = errno == ECONNREFUSED || errno == ENOENT ? 0 : -errno;
    close(fd);
    return ret;
}

/* Makes path free for bind(): fine if absent, replaced if a stale socket. */
static int api_socket_reclaim(const struct sockaddr_un *sa)
{
    const char *path = sa->sun_path;
    struct stat st;
    int live;

    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode)) {
        log_err("api: %s exists and is not a socket", path);
        return -EEXIST;
    }
    live = api_socket_live(sa);
    if (live > 0) {
        log_err("api: %s: another server is already listening", path);
        return -EADDRINUSE;
    }
    if (live < 0) {
        log_err("api: cannot probe existing socket %s: %s", path, strerror(-live));
        return live;
    }
    log_info("api: removing stale socket %s", path);
    if (unlink(path) < 0 && errno != ENOENT)
        return -errno;
    return 0;
}

/* Binds and listens; 0600 because the API controls the VM. */
static int api_socket_listen(const struct sockaddr_un *sa, int *out)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int ret = 0;

    if (fd < 0)
        return -errno;
    if (bind(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0) {
        ret = -errno;
        close(fd);
        return ret;
    }
    /* Not listening yet, so nobody can connect before the chmod. */
    if (chmod(sa->sun_path, 0600) < 0 || listen(fd, 16) < 0) {
        ret = -errno;
        close(fd);
        unlink(sa->sun_path);
        return ret;
    }
    *out = fd;
    return 0;
}

static int api_socket_open(const char *path, int *fd)
{
    struct sockaddr_un sa;
    int ret;

    ret = api_sockaddr(&sa, path);
    if (ret < 0) {
        log_err("api: socket path too long (max %zu bytes): %s", sizeof(sa.sun_path) - 1, path);
        return ret;
    }
    ret = api_socket_reclaim(&sa);
    if (ret < 0)
        return ret;
    ret = api_socket_listen(&sa, fd);
    if (ret < 0)
        log_err("api: cannot listen on %s: %s", path, strerror(-ret));
    return ret;
}

static struct MHD_Daemon *api_mhd_start(struct api_server *srv)
{
    /* A thread per connection: a long request (snapshot, migration) must not
     * stop status queries. ITC lets api_stop() quiesce the daemon. */
    unsigned int flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                         MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;

    return MHD_start_daemon(
        flags, 0, NULL, NULL, api_access, srv, MHD_OPTION_EXTERNAL_LOGGER, api_mhd_log, NULL,
        MHD_OPTION_LISTEN_SOCKET, srv->fd, MHD_OPTION_NOTIFY_COMPLETED, api_completed, srv,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)API_MAX_CONNECTIONS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)API_CONN_TIMEOUT_S, MHD_OPTION_END);
}

int api_start(struct api_server **out, const char *socket_path, const struct api_route *routes,
              size_t nroutes, void *ctx)
{
    struct api_server *srv = calloc(1, sizeof(*srv));
    int ret = -ENOMEM;

    if (!srv || !(srv->path = strdup(socket_path)))
        goto fail;
    srv->routes = routes;
    srv->nroutes = nroutes;
    srv->ctx = ctx;
    ret = api_socket_open(socket_path, &srv->fd);
    if (ret < 0)
        goto fail;
    srv->mhd = api_mhd_start(srv);
    if (!srv->mhd) {
        /* MHD closes the fd on most of its failure paths: leak rather than double close. */
        log_err("api: cannot start HTTP server on %s", socket_path);
        unlink(socket_path);
        ret = -EIO;
        goto fail;
    }
    log_info("api: listening on %s", socket_path);
    *out = srv;
    return 0;
fail:
    if (srv)
        free(srv->path);
    free(srv);
    return ret;
}

int api_allow_group(struct api_server *srv, gid_t gid)
{
    if (chown(srv->path, (uid_t)-1, gid) < 0 || chmod(srv->path, 0660) < 0) {
        int ret = -errno;
        log_err("api: cannot give group %d access to %s: %s", (int)gid, srv->path,
                strerror(errno));
        return ret;
    }
    log_info("api: %s is open to group %d", srv->path, (int)gid);
    return 0;
}

static void api_sleep_ms(long ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Waits until every request seen has had its reply sent, or the timeout. */
static void api_drain(struct api_server *srv)
{
    for (int waited = 0; atomic_load(&srv->inflight) > 0; waited += 10) {
        if (waited >= API_DRAIN_TIMEOUT_MS) {
            log_warn("api: stopping with %d request(s) unanswered", atomic_load(&srv->inflight));
            return;
        }
        api_sleep_ms(10);
    }
}

void api_stop(struct api_server *srv)
{
    int fd;

    if (!srv)
        return;
    /* Unlink first so new clients get ENOENT rather than a dead socket. */
    unlink(srv->path);
    fd = MHD_quiesce_daemon(srv->mhd);
    api_drain(srv);
    MHD_stop_daemon(srv->mhd);
    /* After a quiesce the listening socket is ours to close, not MHD's. */
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    log_info("api: stopped listening on %s", srv->path);
    free(srv->path);
    free(srv);
}
