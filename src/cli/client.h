/*
 * CLI side of the REST API (docs/API.md): talks HTTP to a running ferry's
 * unix socket with libcurl.
 */
#ifndef FERRY_CLI_CLIENT_H
#define FERRY_CLI_CLIENT_H

/* Process exit codes of the client verbs. */
enum client_exit {
    CLIENT_EXIT_OK = 0,
    CLIENT_EXIT_API = 1,     /* the API answered with an error (or garbage) */
    CLIENT_EXIT_USAGE = 2,   /* bad command line */
    CLIENT_EXIT_CONNECT = 3, /* could not reach the API (or lost it mid-request) */
};

/*
 * Sends one request to the API socket (URL http://localhost<path>). body may be
 * NULL; if not, it is sent as application/json. On success returns 0 and sets
 * *status and *resp (malloc'd, NUL-terminated, may be empty; caller frees).
 * Otherwise returns a negative errno: -ENOENT (no socket file), -ECONNREFUSED
 * (nobody listening), -EACCES, -ENAMETOOLONG (path too long for a unix socket),
 * -ETIMEDOUT (connect timed out), -ECONNRESET (connection lost before a full
 * reply), -EPROTO (the reply is not HTTP), -ENOMEM, -EIO (other).
 * Thread-safe.
 */
int client_request(const char *socket_path, const char *method, const char *path, const char *body,
                   long *status, char **resp);

/*
 * The simple verbs; argv[0] is the verb: "status", "pause", "resume" or
 * "shutdown". Options: --api-socket PATH (required), -h/--help.
 * status -> GET /v1/vm, printed as indented JSON; the others -> PUT /v1/vm/<verb>.
 * Returns an exit code (enum client_exit); errors go to stderr as
 * "ferry <verb>: ...".
 */
/* "ferry VERB: cannot connect to PATH: ..." (or "request to PATH failed" once
 * connected); returns CLIENT_EXIT_CONNECT. */
int client_report_transport(const char *verb, const char *socket_path, int err);
int client_verb_main(int argc, char **argv);

/*
 * Generic request for later verbs: sends it, prints the response body (indented
 * if it is JSON) to stdout on success, or "ferry <verb>: <error>" to stderr.
 * Returns an exit code (enum client_exit).
 */
int client_verb_request(const char *verb, const char *socket_path, const char *method,
                        const char *path, const char *body);

#endif /* FERRY_CLI_CLIENT_H */
