/* Migration connections: endpoints, connect/listen/accept, and GnuTLS on top
 * when certificates are configured. A TLS session is kept by its socket fd,
 * so everything above handles an int as before and only asks for its
 * streams here. GnuTLS allows one thread sending and another receiving on a
 * session, which is how ferry uses a connection. */
#include "migration/transport.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "migration/migration.h"
#include "state/stream.h"
#include "util/log.h"
#include "util/sockio.h"
#include "util/util.h"

#define TP_MAX_FD       4096
#define TP_HANDSHAKE_MS 15000
#define TP_LISTEN_BACKLOG (MIG_MAX_CONNS + 2)   /* data connections, main, urgent */
/* TLS 1.3 only; AES-128-GCM first: the fastest with AES-NI, and as strong
 * as a migration needs. */
#define TP_PRIORITY "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:" \
                    "+AES-256-GCM:+CHACHA20-POLY1305"

struct tp_creds {
    gnutls_certificate_credentials_t x509;
    gnutls_priority_t prio;
    bool server;
    char hostname[256];
    char authz[512];
};

struct tp_session {
    gnutls_session_t s;
    int fd;
    int send_err, recv_err;   /* errno of the socket under the last failure */
};

static pthread_mutex_t tp_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tp_session *tp_sessions[TP_MAX_FD];

static int tp_uri_error(const char *uri, char *err, size_t errlen)
{
    snprintf(err, errlen, "'%s' is not tcp:HOST:PORT, unix:PATH or fd:N", uri);
    return -EINVAL;
}

static int tp_parse_tcp(const char *uri, struct mig_endpoint *ep, char *err, size_t errlen)
{
    const char *h = uri + 4, *colon = strrchr(h, ':');
    size_t n;

    if (!colon || colon == h || !colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1))
        return tp_uri_error(uri, err, errlen);
    n = (size_t)(colon - h);
    if (h[0] == '[' && colon[-1] == ']')   /* [v6 address] */
        h++, n -= 2;
    if (n >= sizeof(ep->host) || strlen(colon + 1) >= sizeof(ep->port) ||
        atoi(colon + 1) > 65535) {
        snprintf(err, errlen, "'%s': host or port out of range", uri);
        return -EINVAL;
    }
    memcpy(ep->host, h, n);
    ep->host[n] = '\0';
    snprintf(ep->port, sizeof(ep->port), "%s", colon + 1);
    ep->kind = MIG_EP_TCP;
    return 0;
}

int mig_parse_uri(const char *uri, struct mig_endpoint *ep, char *err, size_t errlen)
{
    uint64_t fd;

    memset(ep, 0, sizeof(*ep));
    ep->fd = -1;
    if (!uri)
        return tp_uri_error("", err, errlen);
    if (strncmp(uri, "tcp:", 4) == 0)
        return tp_parse_tcp(uri, ep, err, errlen);
    if (strncmp(uri, "unix:", 5) == 0) {
        if (!uri[5] || strlen(uri + 5) >= sizeof(ep->path))
            return snprintf(err, errlen, "'%s': the path must be 1..%zu bytes", uri,
                            sizeof(ep->path) - 1), -EINVAL;
        snprintf(ep->path, sizeof(ep->path), "%s", uri + 5);
        ep->kind = MIG_EP_UNIX;
        return 0;
    }
    if (strncmp(uri, "fd:", 3) == 0) {
        if (parse_u64(uri + 3, &fd) < 0 || fd > INT32_MAX)
            return tp_uri_error(uri, err, errlen);
        ep->fd = (int)fd;
        ep->kind = MIG_EP_FD;
        return 0;
    }
    return tp_uri_error(uri, err, errlen);
}

const char *mig_endpoint_str(const struct mig_endpoint *ep, char *buf, size_t len)
{
    if (ep->kind == MIG_EP_UNIX)
        snprintf(buf, len, "unix:%s", ep->path);
    else if (ep->kind == MIG_EP_FD)
        snprintf(buf, len, "fd:%d", ep->fd);
    else
        snprintf(buf, len, strchr(ep->host, ':') ? "tcp:[%s]:%s" : "tcp:%s:%s", ep->host,
                 ep->port);
    return buf;
}

/* Bounded blocking: a peer that stops reading or answering fails the
 * migration instead of hanging it forever. */
void chan_set_timeouts(int fd, unsigned seconds)
{
    struct timeval tv = { .tv_sec = seconds };
    int one = 1;

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));   /* fails on unix: fine */
}

static int tp_connect_one(const struct sockaddr *sa, socklen_t salen, int timeout_ms)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct pollfd pfd = { .fd = fd, .events = POLLOUT };
    int err = 0;
    socklen_t len = sizeof(err);

    if (fd < 0)
        return -errno;
    if (connect(fd, sa, salen) < 0 && errno != EINPROGRESS)
        err = errno;
    else if (poll(&pfd, 1, timeout_ms) <= 0)
        err = ETIMEDOUT;
    else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err) {
        close(fd);
        return -err;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

static int tp_unix_addr(const struct mig_endpoint *ep, struct sockaddr_un *sun)
{
    *sun = (struct sockaddr_un){ .sun_family = AF_UNIX };
    memcpy(sun->sun_path, ep->path, strlen(ep->path) + 1);
    return (int)(offsetof(struct sockaddr_un, sun_path) + strlen(ep->path) + 1);
}

static int tp_connect_socket(const struct mig_endpoint *ep, int timeout_ms)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
    struct sockaddr_un sun;
    int fd = -EHOSTUNREACH;

    if (ep->kind == MIG_EP_FD)
        return -EINVAL;
    if (ep->kind == MIG_EP_UNIX)
        return tp_connect_one((struct sockaddr *)&sun, (socklen_t)tp_unix_addr(ep, &sun),
                              timeout_ms);
    if (getaddrinfo(ep->host, ep->port, &hints, &res))
        return -EHOSTUNREACH;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = tp_connect_one(ai->ai_addr, ai->ai_addrlen, timeout_ms);
        if (fd >= 0)
            break;
    }
    freeaddrinfo(res);
    return fd;
}

static int tp_listen_tcp(const struct mig_endpoint *ep, char *err, size_t errlen)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res;
    int one = 1, fd, rc = getaddrinfo(ep->host[0] ? ep->host : NULL, ep->port, &hints, &res);

    if (rc) {
        snprintf(err, errlen, "%s:%s: %s", ep->host, ep->port, gai_strerror(rc));
        return -EINVAL;
    }
    fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, TP_LISTEN_BACKLOG) < 0) {
            int e = -errno;
            close(fd);
            fd = e;
        }
    } else {
        fd = -errno;
    }
    freeaddrinfo(res);
    if (fd < 0)
        snprintf(err, errlen, "%s:%s: %s", ep->host, ep->port, strerror(-fd));
    return fd;
}

/* A stale socket file of an earlier run is replaced; any other file is not. */
static int tp_listen_unix(const struct mig_endpoint *ep, char *err, size_t errlen)
{
    struct sockaddr_un sun;
    socklen_t len = (socklen_t)tp_unix_addr(ep, &sun);
    struct stat st;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd >= 0 && lstat(ep->path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(ep->path);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sun, len) < 0 ||
        listen(fd, TP_LISTEN_BACKLOG) < 0) {
        int e = -errno;
        snprintf(err, errlen, "%s: %s", ep->path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return e;
    }
    return fd;
}

/* An inherited socket must already listen: ferry accepts several
 * connections (data, urgent, recovery) on it. */
static int tp_listen_fd(const struct mig_endpoint *ep, char *err, size_t errlen)
{
    int on = 0;
    socklen_t len = sizeof(on);

    if (getsockopt(ep->fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) < 0 || !on) {
        snprintf(err, errlen, "fd:%d is not a listening socket", ep->fd);
        return -EINVAL;
    }
    fcntl(ep->fd, F_SETFD, FD_CLOEXEC);
    return ep->fd;
}

int tp_listen(const struct mig_endpoint *ep, char *err, size_t errlen)
{
    if (ep->kind == MIG_EP_UNIX)
        return tp_listen_unix(ep, err, errlen);
    if (ep->kind == MIG_EP_FD)
        return tp_listen_fd(ep, err, errlen);
    return tp_listen_tcp(ep, err, errlen);
}

void tp_unlisten(const struct mig_endpoint *ep, int lfd)
{
    if (lfd >= 0)
        close(lfd);
    if (ep->kind == MIG_EP_UNIX)
        unlink(ep->path);
}

/* ---- TLS ---- */

int tp_tls_check(const struct mig_tls *tls, char *err, size_t errlen)
{
    if ((tls->hostname[0] || tls->authz[0]) && !tls->dir[0])
        return snprintf(err, errlen, "tls hostname and authz need a tls dir"), -EINVAL;
    return 0;
}

static int tp_gnutls_error(int ret, const char *what, char *err, size_t errlen)
{
    snprintf(err, errlen, "%s: %s", what, gnutls_strerror(ret));
    return -EINVAL;
}

static int tp_creds_files(struct tp_creds *c, const struct mig_tls *tls, char *err,
                          size_t errlen)
{
    const char *side = c->server ? "server" : "client";
    char ca[300], cert[300], key[300];
    int ret;

    snprintf(ca, sizeof(ca), "%s/ca-cert.pem", tls->dir);
    snprintf(cert, sizeof(cert), "%s/%s-cert.pem", tls->dir, side);
    snprintf(key, sizeof(key), "%s/%s-key.pem", tls->dir, side);
    ret = gnutls_certificate_set_x509_trust_file(c->x509, ca, GNUTLS_X509_FMT_PEM);
    if (ret <= 0)
        return tp_gnutls_error(ret ? ret : GNUTLS_E_NO_CERTIFICATE_FOUND, ca, err, errlen);
    ret = gnutls_certificate_set_x509_key_file(c->x509, cert, key, GNUTLS_X509_FMT_PEM);
    if (ret < 0)
        return tp_gnutls_error(ret, cert, err, errlen);
    return 0;
}

int tp_creds_load(const struct mig_tls *tls, bool server, struct tp_creds **out, char *err,
                  size_t errlen)
{
    struct tp_creds *c;
    int ret;

    *out = NULL;
    if (!tls->dir[0])
        return tp_tls_check(tls, err, errlen);
    c = calloc(1, sizeof(*c));
    if (!c)
        return snprintf(err, errlen, "out of memory"), -ENOMEM;
    c->server = server;
    snprintf(c->hostname, sizeof(c->hostname), "%s", tls->hostname);
    snprintf(c->authz, sizeof(c->authz), "%s", tls->authz);
    ret = gnutls_certificate_allocate_credentials(&c->x509);
    if (ret < 0)
        ret = tp_gnutls_error(ret, "tls", err, errlen);
    else
        ret = tp_creds_files(c, tls, err, errlen);
    if (ret == 0 && (ret = gnutls_priority_init(&c->prio, TP_PRIORITY, NULL)) < 0)
        ret = tp_gnutls_error(ret, "tls priority", err, errlen);
    if (ret < 0) {
        tp_creds_free(c);
        return ret;
    }
    *out = c;
    return 0;
}

void tp_creds_free(struct tp_creds *c)
{
    if (!c)
        return;
    if (c->prio)
        gnutls_priority_deinit(c->prio);
    if (c->x509)
        gnutls_certificate_free_credentials(c->x509);
    free(c);
}

static ssize_t tp_push(gnutls_transport_ptr_t ptr, const void *buf, size_t len)
{
    struct tp_session *t = ptr;
    int ret = sock_write_all(t->fd, buf, len);

    if (ret < 0) {
        t->send_err = -ret;
        errno = -ret;
        return -1;
    }
    return (ssize_t)len;
}

static ssize_t tp_pull(gnutls_transport_ptr_t ptr, void *buf, size_t len)
{
    struct tp_session *t = ptr;
    ssize_t n = recv(t->fd, buf, len, 0);

    if (n < 0)
        t->recv_err = errno;
    return n;
}

static int tp_pull_timeout(gnutls_transport_ptr_t ptr, unsigned int ms)
{
    struct tp_session *t = ptr;
    struct pollfd pfd = { .fd = t->fd, .events = POLLIN };

    return poll(&pfd, 1, ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : (int)ms);
}

/* -errno for a GnuTLS failure: the socket's own error when there was one. */
static int tp_errno(ssize_t ret, int sock_err)
{
    if (ret == GNUTLS_E_AGAIN || ret == GNUTLS_E_TIMEDOUT)
        return -ETIMEDOUT;
    if (ret == GNUTLS_E_PULL_ERROR || ret == GNUTLS_E_PUSH_ERROR)
        return sock_err ? -sock_err : -ECONNRESET;
    return -EBADMSG;
}

static ssize_t tp_recv(void *ctx, void *buf, size_t n)
{
    struct tp_session *t = ctx;
    ssize_t r;

    do
        r = gnutls_record_recv(t->s, buf, n);
    while (r == GNUTLS_E_INTERRUPTED);
    if (r >= 0)
        return r;
    if (r == GNUTLS_E_PREMATURE_TERMINATION)   /* closed without a TLS goodbye */
        return 0;
    if (r == GNUTLS_E_AGAIN)
        return -EAGAIN;   /* the read timeout: the caller may wait again */
    log_warn("migration tls: %s", gnutls_strerror((int)r));
    return tp_errno(r, t->recv_err);
}

static int tp_send_all(void *ctx, const void *buf, size_t n)
{
    struct tp_session *t = ctx;
    const uint8_t *p = buf;

    while (n) {
        ssize_t r = gnutls_record_send(t->s, p, n);
        if (r == GNUTLS_E_INTERRUPTED)
            continue;
        if (r < 0)
            return tp_errno(r, t->send_err);
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static const struct stream_ops tp_ops = { .recv = tp_recv, .send_all = tp_send_all };

/* Server: the source's certificate must carry one of the authorised names. */
static int tp_authorize(gnutls_session_t s, const char *authz, char *err, size_t errlen)
{
    unsigned int n = 0;
    const gnutls_datum_t *der = gnutls_certificate_get_peers(s, &n);
    gnutls_x509_crt_t crt;
    char names[512], *save = NULL;
    bool ok = false;

    if (!authz[0])
        return 0;
    if (!der || !n || gnutls_x509_crt_init(&crt) < 0)
        return snprintf(err, errlen, "the peer sent no certificate"), -EACCES;
    if (gnutls_x509_crt_import(crt, der, GNUTLS_X509_FMT_DER) == 0) {
        snprintf(names, sizeof(names), "%s", authz);
        for (char *name = strtok_r(names, ",", &save); name && !ok;
             name = strtok_r(NULL, ",", &save))
            ok = gnutls_x509_crt_check_hostname2(crt, name, 0) != 0;
    }
    gnutls_x509_crt_deinit(crt);
    if (!ok)
        snprintf(err, errlen, "the peer's certificate names none of --tls-authz %.200s", authz);
    return ok ? 0 : -EACCES;
}

static void tp_handshake_error(gnutls_session_t s, int ret, char *err, size_t errlen)
{
    gnutls_datum_t out = { 0 };
    unsigned status = gnutls_session_get_verify_cert_status(s);

    if (ret == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR &&
        gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) == 0) {
        snprintf(err, errlen, "tls handshake: %.200s", out.data);
        gnutls_free(out.data);
        return;
    }
    snprintf(err, errlen, "tls handshake: %s", gnutls_strerror(ret));
}

static int tp_session_setup(const struct tp_creds *c, struct tp_session *t, const char *host)
{
    const char *name = c->hostname[0] ? c->hostname : host;
    int ret = gnutls_init(&t->s, (c->server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NO_SIGNAL);

    if (ret < 0)
        return ret;
    gnutls_priority_set(t->s, c->prio);
    gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, c->x509);
    gnutls_transport_set_ptr(t->s, t);
    gnutls_transport_set_push_function(t->s, tp_push);
    gnutls_transport_set_pull_function(t->s, tp_pull);
    gnutls_transport_set_pull_timeout_function(t->s, tp_pull_timeout);
    gnutls_handshake_set_timeout(t->s, TP_HANDSHAKE_MS);
    if (c->server) {
        gnutls_certificate_server_set_request(t->s, GNUTLS_CERT_REQUIRE);
        gnutls_session_set_verify_cert(t->s, NULL, 0);
    } else {
        gnutls_session_set_verify_cert(t->s, name && name[0] ? name : NULL, 0);
    }
    return 0;
}

static void tp_session_free(struct tp_session *t)
{
    if (!t)
        return;
    if (t->s)
        gnutls_deinit(t->s);
    free(t);
}

static int tp_register(struct tp_session *t, char *err, size_t errlen)
{
    struct tp_session *old;

    if (t->fd >= TP_MAX_FD)
        return snprintf(err, errlen, "tls: too many open files"), -EMFILE;
    pthread_mutex_lock(&tp_lock);
    old = tp_sessions[t->fd];   /* a session its fd outlived (closed elsewhere) */
    tp_sessions[t->fd] = t;
    pthread_mutex_unlock(&tp_lock);
    tp_session_free(old);
    return 0;
}

/* TLS over a fresh connection, both sides; on failure nothing stays. */
static int tp_handshake(const struct tp_creds *c, int fd, const char *host, char *err,
                        size_t errlen)
{
    struct tp_session *t = calloc(1, sizeof(*t));
    int ret;

    if (!t)
        return snprintf(err, errlen, "out of memory"), -ENOMEM;
    t->fd = fd;
    ret = tp_session_setup(c, t, host);
    if (ret == 0) {
        do
            ret = gnutls_handshake(t->s);
        while (ret == GNUTLS_E_INTERRUPTED);
        if (ret < 0)
            tp_handshake_error(t->s, ret, err, errlen);
    }
    ret = ret < 0 ? -EPROTO : c->server ? tp_authorize(t->s, c->authz, err, errlen) : 0;
    if (ret == 0)
        ret = tp_register(t, err, errlen);
    if (ret < 0)
        tp_session_free(t);
    return ret;
}

/* A fresh connection, either side: its timeouts, then TLS if configured.
 * Returns fd, or -errno with the connection closed. */
static int tp_secure(const struct tp_creds *c, int fd, const char *host, unsigned io_timeout_s,
                     char *err, size_t errlen)
{
    int ret;

    chan_set_timeouts(fd, io_timeout_s);
    if (c && (ret = tp_handshake(c, fd, host, err, errlen)) < 0) {
        close(fd);
        return ret;
    }
    return fd;
}

int tp_connect(const struct tp_creds *c, const struct mig_endpoint *ep, int timeout_ms,
               unsigned io_timeout_s, char *err, size_t errlen)
{
    int fd = tp_connect_socket(ep, timeout_ms);

    if (fd < 0) {
        snprintf(err, errlen, "%s", ep->kind == MIG_EP_FD ? "fd: is for --incoming only"
                                                          : strerror(-fd));
        return fd;
    }
    return tp_secure(c, fd, ep->kind == MIG_EP_TCP ? ep->host : NULL, io_timeout_s, err,
                     errlen);
}

int tp_accept(const struct tp_creds *c, int lfd, unsigned io_timeout_s, char *err,
              size_t errlen)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

    if (fd < 0) {
        fd = -errno;
        snprintf(err, errlen, "accept: %s", strerror(-fd));
        return fd;
    }
    return tp_secure(c, fd, NULL, io_timeout_s, err, errlen);
}

static struct tp_session *tp_lookup(int fd)
{
    struct tp_session *t = NULL;

    if (fd < 0 || fd >= TP_MAX_FD)
        return NULL;
    pthread_mutex_lock(&tp_lock);
    t = tp_sessions[fd];
    pthread_mutex_unlock(&tp_lock);
    return t;
}

int tp_stream_init(struct stream_io *io, int fd, size_t bufsize)
{
    struct tp_session *t = tp_lookup(fd);
    int ret = stream_io_init(io, fd, bufsize);

    if (ret < 0)
        return ret;
    if (t)
        stream_io_set_ops(io, &tp_ops, t, true);   /* AES-GCM authenticates each record */
    return 0;
}

int tp_peer_id(int fd, uint8_t id[32])
{
    struct tp_session *t = tp_lookup(fd);
    const gnutls_datum_t *der;
    unsigned int n = 0;

    if (!t || !(der = gnutls_certificate_get_peers(t->s, &n)) || !n)
        return -ENOENT;
    return gnutls_hash_fast(GNUTLS_DIG_SHA256, der[0].data, der[0].size, id) < 0 ? -EIO : 0;
}

void tp_close(int fd)
{
    struct tp_session *t = NULL;

    if (fd < 0)
        return;
    if (fd < TP_MAX_FD) {
        pthread_mutex_lock(&tp_lock);
        t = tp_sessions[fd];
        tp_sessions[fd] = NULL;
        pthread_mutex_unlock(&tp_lock);
    }
    tp_session_free(t);
    close(fd);
}
