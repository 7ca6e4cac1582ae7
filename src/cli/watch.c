/* `ferry migrate --wait`: starts the migration, shows its progress, turns a
 * Ctrl-C into a cancel (as `virsh migrate` does) and ends with a summary. */
#include "cli/watch.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/client.h"

#define WATCH_TICK_US      250000
#define WATCH_LINE_TICKS   4          /* not a terminal: one line a second */
#define WATCH_RESUME_TICKS 120        /* after a cancel: 30 s for the VM to run */
#define WATCH_EXIT_INTERRUPTED 130

static volatile sig_atomic_t watch_interrupts;

static void watch_on_signal(int sig)
{
    (void)sig;
    watch_interrupts++;
}

struct watch_put {
    const char *sock;
    const char *body;
    long status;
    char *resp;
    int ret;
    bool done;
};

/* Ctrl-C is the main thread's: the request here must not see EINTR. */
static void *watch_put_thread(void *arg)
{
    struct watch_put *p = arg;
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    p->ret = client_request(p->sock, "PUT", "/v1/migration", p->body, &p->status, &p->resp);
    __atomic_store_n(&p->done, true, __ATOMIC_RELEASE);
    return NULL;
}

/* GET path as JSON; NULL if the API does not answer 200 with JSON. */
static json_t *watch_get(const char *sock, const char *path)
{
    long status = 0;
    char *resp = NULL;
    json_t *j = NULL;

    if (client_request(sock, "GET", path, NULL, &status, &resp) == 0 && status == 200)
        j = json_loads(resp, 0, NULL);
    free(resp);
    return j;
}

static json_int_t watch_int(json_t *j, const char *key)
{
    return json_integer_value(json_object_get(j, key));
}

/* One line: redrawn in place on a terminal, a new line otherwise. */
static void watch_progress(const char *sock, bool tty)
{
    json_t *j = watch_get(sock, "/v1/migration");
    json_int_t done, left;

    if (!j)
        return;
    done = watch_int(j, "pages_normal") + watch_int(j, "pages_zero");
    left = watch_int(j, "pages_remaining");
    fprintf(stderr, "%s%-10s round %-3d %5.1f%%  %6lld MiB sent  %6lld MiB/s  dirty %lld p/s"
            "  expected downtime %.0f ms%s", tty ? "\r" : "",
            json_string_value(json_object_get(j, "state")), (int)watch_int(j, "round"),
            done + left ? 100.0 * (double)done / (double)(done + left) : 0.0,
            (long long)(watch_int(j, "bytes") >> 20), (long long)watch_int(j, "bandwidth_mibs"),
            (long long)watch_int(j, "dirty_rate_pps"),
            json_real_value(json_object_get(j, "expected_downtime_ms")), tty ? "   " : "\n");
    json_decref(j);
}

/* The first Ctrl-C asks the VMM to cancel; it answers 409 once post-copy
 * runs, when only the destination has the VM's newest state. */
static void watch_cancel(const char *sock)
{
    long status = 0;
    char *resp = NULL;
    int ret = client_request(sock, "PUT", "/v1/migration/cancel", NULL, &status, &resp);

    if (ret == 0 && status / 100 == 2)
        fprintf(stderr, "\nferry migrate: interrupted: cancelling the migration\n");
    else
        fprintf(stderr, "\nferry migrate: interrupted, but the migration cannot be cancelled "
                "now (%s); it goes on (Ctrl-C again to stop watching)\n",
                ret < 0 ? strerror(-ret) : resp ? resp : "refused");
    free(resp);
}

/* After a cancel: the migration has ended; wait for the VM to run here. */
static int watch_source_running(const char *sock)
{
    for (int i = 0; i < WATCH_RESUME_TICKS; i++) {
        json_t *j = watch_get(sock, "/v1/vm");
        const char *st = j ? json_string_value(json_object_get(j, "state")) : NULL;
        bool running = st && strcmp(st, "running") == 0;

        json_decref(j);
        if (running) {
            fprintf(stderr, "ferry migrate: cancelled; the VM runs on the source\n");
            return WATCH_EXIT_INTERRUPTED;
        }
        usleep(WATCH_TICK_US);
    }
    fprintf(stderr, "ferry migrate: cancelled, but the VM is not running on the source\n");
    return CLIENT_EXIT_API;
}

/* completed in 1534 ms (precopy): downtime 12.3 ms (limit 300 ms), 130.2 MiB, 3 rounds */
static void watch_summary(json_t *r)
{
    json_t *d = json_object_get(r, "downtime"), *p = json_object_get(r, "params");
    const char *state = json_string_value(json_object_get(r, "state"));
    const char *err = json_string_value(json_object_get(r, "error"));

    printf("%s in %lld ms (%s)", state ? state : "ended", (long long)watch_int(r, "total_ms"),
           json_string_value(json_object_get(p, "mode")) ?: "?");
    if (d)
        printf(": downtime %.1f ms (limit %lld ms)",
               json_number_value(json_object_get(d, "total_ms")),
               (long long)watch_int(p, "downtime_limit_ms"));
    printf(", %.1f MiB, %zu rounds\n", (double)watch_int(r, "bytes") / (1 << 20),
           json_array_size(json_object_get(r, "rounds")));
    if (err && *err)
        printf("error: %s\n", err);
}

static void watch_report(const char *resp, bool json)
{
    json_t *r = resp ? json_loads(resp, 0, NULL) : NULL;

    if (json || !r)
        printf("%s\n", resp ? resp : "");
    else
        watch_summary(r);
    json_decref(r);
}

static void watch_signals(void)
{
    struct sigaction sa = { .sa_handler = watch_on_signal };

    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* Waits for the PUT to return, drawing progress and handling Ctrl-C;
 * -EINTR if the user asked twice and stopped watching. */
static int watch_loop(struct watch_put *p, bool *cancelled)
{
    bool tty = isatty(STDERR_FILENO);
    int seen = 0;

    for (unsigned tick = 1; !__atomic_load_n(&p->done, __ATOMIC_ACQUIRE); tick++) {
        if (watch_interrupts > seen && seen++ == 0) {
            watch_cancel(p->sock);
            *cancelled = true;
        } else if (watch_interrupts > 1) {
            fprintf(stderr, "\nferry migrate: stopped watching; the migration goes on "
                    "(ferry migrate-status)\n");
            return -EINTR;
        }
        if (tty || tick % WATCH_LINE_TICKS == 0)
            watch_progress(p->sock, tty);
        usleep(WATCH_TICK_US);
    }
    if (tty)
        fprintf(stderr, "\n");
    return 0;
}

int migrate_watch(const char *sock, const char *body, bool json)
{
    struct watch_put p = { .sock = sock, .body = body };
    bool cancelled = false;
    pthread_t t;
    int ret;

    watch_signals();
    if (pthread_create(&t, NULL, watch_put_thread, &p) != 0)
        return CLIENT_EXIT_API;
    if (watch_loop(&p, &cancelled) < 0)
        return WATCH_EXIT_INTERRUPTED;     /* the PUT thread ends with the process */
    pthread_join(t, NULL);
    if (p.ret < 0)
        return client_report_transport("migrate", sock, p.ret);
    watch_report(p.resp, json);
    ret = p.status == 200 ? CLIENT_EXIT_OK : CLIENT_EXIT_API;
    if (ret && cancelled)
        ret = watch_source_running(sock);
    else if (ret)
        fprintf(stderr, "ferry migrate: the migration did not complete (HTTP %ld)\n", p.status);
    free(p.resp);
    return ret;
}
