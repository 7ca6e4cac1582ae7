/*
 * CLI client for the REST API: one libcurl request per invocation over the
 * VMM's unix socket.
 */
#include "cli/client.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <curl/curl.h>
#include <jansson.h>

#include "util/log.h"

/* Connecting to a local socket is instant unless the server is wedged. */
#define CLIENT_CONNECT_TIMEOUT_MS 5000L

struct client_buf {
    char *data;
    size_t len;
    size_t cap;
};

static pthread_once_t client_curl_once = PTHREAD_ONCE_INIT;
static CURLcode client_curl_init_rc;

/* curl_global_init() is not thread-safe everywhere: run it exactly once. */
static void client_curl_init(void)
{
    client_curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int client_buf_reserve(struct client_buf *b, size_t extra)
{
    size_t cap = b->cap ? b->cap : 256;
    char *data;

    while (cap < b->len + extra + 1)
        cap *= 2;
    if (cap == b->cap)
        return 0;
    data = realloc(b->data, cap);
    if (!data)
        return -ENOMEM;
    b->data = data;
    b->cap = cap;
    return 0;
}

static size_t client_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct client_buf *b = userdata;
    size_t n = size * nmemb;

    if (client_buf_reserve(b, n) < 0)
        return 0; /* curl fails the transfer with CURLE_WRITE_ERROR */
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* Maps a failed transfer to an errno, preferring the OS's own from connect(). */
static int client_errno(CURL *curl, CURLcode rc)
{
    long os_errno = 0;

    switch (rc) {
    case CURLE_COULDNT_CONNECT:
        curl_easy_getinfo(curl, CURLINFO_OS_ERRNO, &os_errno);
        return os_errno ? -(int)os_errno : -ECONNREFUSED;
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_OUT_OF_MEMORY:
    case CURLE_WRITE_ERROR: /* only our callback fails, on ENOMEM */
        return -ENOMEM;
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
        return -ECONNRESET;
    case CURLE_WEIRD_SERVER_REPLY:
        return -EPROTO;
    default:
        return -EIO;
    }
}

static char *client_url(const char *path)
{
    static const char prefix[] = "http://localhost";
    char *url = malloc(sizeof(prefix) + strlen(path));

    if (url) {
        memcpy(url, prefix, sizeof(prefix) - 1);
        strcpy(url + sizeof(prefix) - 1, path);
    }
    return url;
}

static struct curl_slist *client_headers(const char *body)
{
    struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
    struct curl_slist *h2;

    if (!h || !body)
        return h;
    h2 = curl_slist_append(h, "Content-Type: application/json");
    if (!h2)
        curl_slist_free_all(h);
    return h2;
}

static void client_setopts(CURL *curl, const char *socket_path, const char *method, const char *url,
                           const char *body, struct client_buf *buf)
{
    curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, socket_path);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L); /* no SIGALRM games in threaded callers */
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, CLIENT_CONNECT_TIMEOUT_MS);
    /* No overall timeout: later verbs (snapshot, migration) may take minutes. */
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, client_write_cb);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, buf);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    if (body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    }
}

static int client_perform(CURL *curl, const char *socket_path, const char *method, const char *path,
                          const char *body, long *status, struct client_buf *buf)
{
    char errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *headers = client_headers(body);
    char *url = client_url(path);
    CURLcode rc;
    int ret;

    if (!headers || !url) {
        ret = -ENOMEM;
        goto out;
    }
    client_setopts(curl, socket_path, method, url, body, buf);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    rc = curl_easy_perform(curl);
    ret = rc == CURLE_OK ? 0 : client_errno(curl, rc);
    if (ret < 0)
        log_debug("client: %s %s on %s: %s", method, path, socket_path,
                  errbuf[0] ? errbuf : curl_easy_strerror(rc));
    else
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
out:
    free(url);
    curl_slist_free_all(headers);
    return ret;
}

int client_request(const char *socket_path, const char *method, const char *path, const char *body,
                   long *status, char **resp)
{
    struct client_buf buf = { 0 };
    CURL *curl;
    int ret;

    /* curl would report a too-long path as an unresolvable host. */
    if (strlen(socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return -ENAMETOOLONG;
    pthread_once(&client_curl_once, client_curl_init);
    if (client_curl_init_rc != CURLE_OK)
        return -ENOMEM;
    curl = curl_easy_init();
    if (!curl)
        return -ENOMEM;
    ret = client_perform(curl, socket_path, method, path, body, status, &buf);
    curl_easy_cleanup(curl);
    if (ret == 0)
        ret = client_buf_reserve(&buf, 0); /* an empty body is still a string */
    if (ret < 0) {
        free(buf.data);
        return ret;
    }
    buf.data[buf.len] = '\0';
    *resp = buf.data;
    return 0;
}

/* Failures after the connection was made are not "cannot connect". */
static bool client_err_connecting(int err)
{
    return err != -ECONNRESET && err != -EPROTO && err != -ENOMEM && err != -EIO;
}

int client_report_transport(const char *verb, const char *socket_path, int err)
{
    if (client_err_connecting(err))
        fprintf(stderr, "ferry %s: cannot connect to %s: %s\n", verb, socket_path, strerror(-err));
    else
        fprintf(stderr, "ferry %s: request to %s failed: %s\n", verb, socket_path, strerror(-err));
    return CLIENT_EXIT_CONNECT;
}

static int client_report_api_error(const char *verb, long status, const char *resp)
{
    json_t *json = json_loads(resp, 0, NULL);
    const char *msg = json_string_value(json_object_get(json, "error"));

    if (msg)
        fprintf(stderr, "ferry %s: %s\n", verb, msg);
    else
        fprintf(stderr, "ferry %s: HTTP %ld%s%s\n", verb, status, resp[0] ? ": " : "", resp);
    json_decref(json);
    return CLIENT_EXIT_API;
}

/* JSON is printed indented; anything else as it came. */
static void client_print_body(const char *resp)
{
    json_t *json;

    if (!resp[0])
        return;
    json = json_loads(resp, JSON_DECODE_ANY, NULL);
    if (json) {
        json_dumpf(json, stdout, JSON_INDENT(2) | JSON_ENCODE_ANY);
        fputc('\n', stdout);
        json_decref(json);
        return;
    }
    fputs(resp, stdout);
    if (resp[strlen(resp) - 1] != '\n')
        fputc('\n', stdout);
}

int client_verb_request(const char *verb, const char *socket_path, const char *method,
                        const char *path, const char *body)
{
    char *resp = NULL;
    long status = 0;
    int ret;

    ret = client_request(socket_path, method, path, body, &status, &resp);
    if (ret < 0)
        return client_report_transport(verb, socket_path, ret);
    if (status >= 300)
        ret = client_report_api_error(verb, status, resp);
    else
        client_print_body(resp);
    free(resp);
    fflush(stdout);
    return ret;
}

static const char *const client_simple_verbs[] = { "status", "pause", "resume", "shutdown" };

static bool client_verb_known(const char *verb)
{
    for (size_t i = 0; i < sizeof(client_simple_verbs) / sizeof(client_simple_verbs[0]); i++)
        if (strcmp(verb, client_simple_verbs[i]) == 0)
            return true;
    return false;
}

static void client_usage(FILE *f, const char *verb)
{
    fprintf(f,
            "usage: ferry %s --api-socket PATH\n"
            "\n"
            "Controls a running ferry through its API socket.\n"
            "  status    print the VM's state as JSON\n"
            "  pause     pause all vCPUs\n"
            "  resume    resume paused vCPUs\n"
            "  shutdown  stop the VM; the VMM then exits\n"
            "\n"
            "options:\n"
            "  --api-socket PATH  the running ferry's API socket (required)\n"
            "  -h, --help         show this help\n"
            "\n"
            "exit status: 0 ok, 1 the API refused, 2 usage error, 3 cannot connect\n",
            verb ? verb : "{status|pause|resume|shutdown}");
}

static int __attribute__((format(printf, 2, 3)))
client_usage_error(const char *verb, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "ferry %s: ", verb);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    client_usage(stderr, verb);
    return CLIENT_EXIT_USAGE;
}

/* getopt's '?': a short option is only in optopt (it may sit in a cluster). */
static int client_bad_option(char **argv)
{
    if (optopt)
        return client_usage_error(argv[0], "unknown option '-%c'", optopt);
    return client_usage_error(argv[0], "unknown option '%s'", argv[optind - 1]);
}

/* Returns -1 to go on with *socket_path set, else the exit code to return. */
static int client_parse(int argc, char **argv, const char **socket_path)
{
    static const struct option longopts[] = {
        { "api-socket", required_argument, NULL, 'S' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;

    optind = 0; /* full rescan: getopt keeps state across calls otherwise */
    opterr = 0; /* we word the errors ourselves, naming the verb */
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (c == 'h') {
            client_usage(stdout, argv[0]);
            return CLIENT_EXIT_OK;
        }
        if (c == 'S' && optarg[0])
            *socket_path = optarg;
        else if (c == ':' || c == 'S')
            return client_usage_error(argv[0], "option '%s' needs a path", argv[optind - 1]);
        else
            return client_bad_option(argv);
    }
    if (optind < argc)
        return client_usage_error(argv[0], "unexpected argument '%s'", argv[optind]);
    if (!*socket_path)
        return client_usage_error(argv[0], "--api-socket is required");
    return -1;
}

int client_verb_main(int argc, char **argv)
{
    const char *socket_path = NULL;
    char path[32];
    int ret;

    if (argc < 1 || !client_verb_known(argv[0])) {
        fprintf(stderr, "ferry: unknown verb '%s'\n", argc < 1 ? "" : argv[0]);
        client_usage(stderr, NULL);
        return CLIENT_EXIT_USAGE;
    }
    ret = client_parse(argc, argv, &socket_path);
    if (ret >= 0)
        return ret;
    if (strcmp(argv[0], "status") == 0)
        return client_verb_request(argv[0], socket_path, "GET", "/v1/vm", NULL);
    snprintf(path, sizeof(path), "/v1/vm/%s", argv[0]);
    return client_verb_request(argv[0], socket_path, "PUT", path, NULL);
}
