/*
 * REST API server: HTTP/1.1 + JSON on a unix socket (see docs/API.md).
 *
 * The API knows nothing about KVM. The VM layer hands api_start() a table of
 * routes; each route calls back into the VM layer with the parsed request body.
 * New features (snapshot, migration, ...) add routes by adding table entries.
 *
 * Threading: each connection has a thread of its own, so handlers run
 * concurrently with each other and with the vCPU and main threads; the VM
 * layer makes them thread-safe. A long handler (snapshot, migration) does not
 * delay status queries. A handler must never call api_stop() (it would join
 * its own thread): it should ask the main loop to do it, e.g. for shutdown.
 */
#ifndef FERRY_API_API_H
#define FERRY_API_API_H

#include <stddef.h>
#include <sys/types.h>
#include <jansson.h>

/* Largest request body accepted; longer bodies get 413. */
#define API_BODY_MAX (64 * 1024)

struct api_server;

/*
 * A route handler gets the parsed JSON body (NULL if the request had none;
 * otherwise always a JSON object, borrowed: do not decref) and returns an HTTP
 * status. It sets *resp to a JSON value (the API takes ownership) or leaves it
 * NULL, which gives 204 No Content for a 2xx status. For errors it returns
 * 4xx/5xx and may set *resp to api_error(...); if it does not, the server
 * replies {"error": "<reason phrase>"}. A status outside 200..599 is a bug in
 * the handler and is answered with 500.
 */
typedef int (*api_handler_fn)(void *ctx, json_t *body, json_t **resp);

struct api_route {
    const char *method; /* "GET", "PUT", ...: matched case-sensitively */
    const char *path;   /* exact path, e.g. "/v1/vm": no prefix or pattern matching */
    api_handler_fn fn;
};

/*
 * Creates the unix socket at socket_path and serves routes on it, calling each
 * handler with ctx. The routes table must outlive the server. Fails with
 * -EADDRINUSE if a live server answers on socket_path, -EEXIST if socket_path
 * exists and is not a socket, -ENAMETOOLONG if it does not fit in sun_path, or
 * the errno of the failing socket call (e.g. -ENOENT for a missing directory).
 * A stale socket file (nobody listening) is replaced. The socket is mode 0600.
 */
int api_start(struct api_server **out, const char *socket_path, const struct api_route *routes,
              size_t nroutes, void *ctx);
/* Opens the socket to a group as well (0660, group gid): operators in that
 * group may drive the VM. Each state-changing request is logged with the
 * caller's pid, uid and gid (SO_PEERCRED). */
int api_allow_group(struct api_server *srv, gid_t gid);

/*
 * Stops accepting, lets requests in flight finish (bounded wait) so that e.g.
 * a shutdown reply reaches the client, joins the server thread, closes the
 * socket and unlinks its path. NULL is a no-op.
 */
void api_stop(struct api_server *srv);

/* Returns a new {"error": "<formatted message>"} object (NULL if out of memory). */
json_t *api_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Pure routing helper: finds the route for method + path by exact string match,
 * so "/v1/vm/" (trailing slash) does not match "/v1/vm" and is 404. Returns the
 * route with *status = 200, or NULL with *status = 404 (no route has this path)
 * or 405 (some route has this path, none with this method).
 */
const struct api_route *api_route_find(const struct api_route *routes, size_t n, const char *method,
                                       const char *path, int *status);

#endif /* FERRY_API_API_H */
