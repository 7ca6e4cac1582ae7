/* ferry: a KVM VMM built for live migration. Verb dispatch. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "api/api.h"
#include "api/routes_vm.h"
#include "cli/args.h"
#include "cli/client.h"
#include "util/log.h"
#include "version.h"
#include "vm/vm.h"

static struct termios saved_tty;
static int tty_saved;

/* Typed console input reaches the guest a key at a time; ^C still ends ferry. */
static void tty_raw(void)
{
    struct termios t;

    if (!isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_tty) < 0)
        return;
    t = saved_tty;
    t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
    t.c_iflag &= ~(tcflag_t)ICRNL;
    if (tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0)
        tty_saved = 1;
}

static void tty_restore(void)
{
    if (tty_saved)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved_tty);
}

/* Stop signals are taken by the main thread through a signalfd only. */
static void signals_block(void)
{
    sigset_t set;

    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static int run_vm(struct vm *vm, const struct run_args *a)
{
    struct api_server *api = NULL;
    int code;

    if (vm_create(vm, &a->vm) < 0)
        return 1;
    if (a->vm.api_socket &&
        api_start(&api, a->vm.api_socket, vm_routes, vm_routes_count, vm) < 0)
        return 1;
    if (a->vm.console && strcmp(a->vm.console, "stdio") == 0)
        tty_raw();
    vm_start(vm);
    code = vm_wait(vm);
    if (api)
        api_stop(api);
    tty_restore();
    return code;
}

static int run_main(int argc, char **argv)
{
    static struct vm vm;   /* large: vCPU array and CPUID table */
    struct run_args a;
    char err[256] = "";
    int ret = args_parse_run(argc, argv, &a, err, sizeof(err));

    if (ret == ARGS_HELP) {
        args_run_usage();
        return 0;
    }
    if (ret < 0) {
        fprintf(stderr, "ferry run: %s\n", err);
        return 2;
    }
    log_set_level((enum log_level)a.log_level);
    signals_block();
    ret = run_vm(&vm, &a);
    vm_destroy(&vm);
    return ret;
}

static void usage(void)
{
    fprintf(stderr,
        "usage: ferry <verb> [options]\n"
        "verbs:\n"
        "  run        start a VM (ferry run --help)\n"
        "  status     show a running VM (--api-socket PATH)\n"
        "  pause      pause a VM's vCPUs\n"
        "  resume     resume a paused VM\n"
        "  shutdown   stop a VM and its ferry process\n"
        "  version    print the version\n");
}

int main(int argc, char **argv)
{
    const char *verb = argc > 1 ? argv[1] : NULL;

    if (!verb || strcmp(verb, "help") == 0 || strcmp(verb, "--help") == 0 ||
        strcmp(verb, "-h") == 0) {
        usage();
        return verb ? 0 : 2;
    }
    if (strcmp(verb, "version") == 0 || strcmp(verb, "--version") == 0) {
        printf("ferry %s\n", FERRY_VERSION);
        return 0;
    }
    if (strcmp(verb, "run") == 0)
        return run_main(argc - 1, argv + 1);
    if (strcmp(verb, "status") == 0 || strcmp(verb, "pause") == 0 ||
        strcmp(verb, "resume") == 0 || strcmp(verb, "shutdown") == 0)
        return client_verb_main(argc - 1, argv + 1);
    fprintf(stderr, "ferry: unknown verb '%s'\n", verb);
    usage();
    return 2;
}
