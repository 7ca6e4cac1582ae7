/* The one way migration connections are made: endpoints (tcp:, unix:, an
 * inherited fd:), connect/listen/accept, and mutual TLS on every connection
 * when certificates are configured. Above it, a connection is a socket fd
 * whose streams come from tp_stream_init(); TLS lives behind that. */
#ifndef FERRY_MIGRATION_TRANSPORT_H
#define FERRY_MIGRATION_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct stream_io;

enum mig_ep_kind { MIG_EP_TCP, MIG_EP_UNIX, MIG_EP_FD };

/* tcp:HOST:PORT (HOST may be [v6]), unix:PATH, or fd:N (incoming only: an
 * inherited listening socket). */
struct mig_endpoint {
    enum mig_ep_kind kind;
    char host[256];
    char port[16];
    char path[108];
    int fd;
};

/* Mutual TLS. dir holds QEMU's layout: ca-cert.pem, server-cert.pem and
 * server-key.pem (destination), client-cert.pem and client-key.pem (source).
 * "" everywhere: plain text. */
struct mig_tls {
    char dir[256];
    char hostname[256];   /* name the destination's certificate must carry
                             (default: the URI's host) */
    char authz[512];      /* destination: comma-separated names a source's
                             certificate may carry ("" = any the CA signed) */
};

/* Loaded credentials of one side; NULL means plain text. */
struct tp_creds;

int mig_parse_uri(const char *uri, struct mig_endpoint *ep, char *err, size_t errlen);
/* The endpoint as a URI, for reports and logs. */
const char *mig_endpoint_str(const struct mig_endpoint *ep, char *buf, size_t len);

/* Checks a TLS configuration's values (lengths, names) without reading files. */
int tp_tls_check(const struct mig_tls *tls, char *err, size_t errlen);
int tp_creds_load(const struct mig_tls *tls, bool server, struct tp_creds **out, char *err,
                  size_t errlen);
void tp_creds_free(struct tp_creds *c);

/* Connects (and shakes hands), with io_timeout_s on each later read and
 * write. Returns the fd or -errno with the reason in err. */
int tp_connect(const struct tp_creds *c, const struct mig_endpoint *ep, int timeout_ms,
               unsigned io_timeout_s, char *err, size_t errlen);
int tp_listen(const struct mig_endpoint *ep, char *err, size_t errlen);
/* Accepts one connection and shakes hands; -errno and err on failure (the
 * connection is closed, the listener stays). */
int tp_accept(const struct tp_creds *c, int lfd, unsigned io_timeout_s, char *err,
              size_t errlen);
/* A stream over a connection made here (through TLS if it has it). */
int tp_stream_init(struct stream_io *io, int fd, size_t bufsize);
/* SHA-256 of the certificate the peer of a TLS connection showed; -ENOENT
 * without TLS. */
int tp_peer_id(int fd, uint8_t id[32]);
/* Ends a connection made here: its TLS session, then the socket. */
void tp_close(int fd);
/* Removes a unix listener's socket file. */
void tp_unlisten(const struct mig_endpoint *ep, int lfd);

void chan_set_timeouts(int fd, unsigned seconds);

#endif
