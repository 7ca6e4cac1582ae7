/* `ferry run` argument parsing: defaults, each option, and bad input. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "cli/args.h"
#include "util/util.h"

#define ARGV(...) (char *[]){ "run", __VA_ARGS__, NULL }
#define ARGC(v) ((int)(sizeof(v) / sizeof(char *)) - 1)

static int parse(int argc, char **argv, struct run_args *a, char *err)
{
    return args_parse_run(argc, argv, a, err, 256);
}

static void test_defaults(void **state)
{
    struct run_args a;
    char err[256] = "";
    char **v = ARGV("--kernel", "k");

    (void)state;
    assert_int_equal(parse(3, v, &a, err), 0);
    assert_string_equal(a.vm.kernel, "k");
    assert_int_equal(a.vm.mem_bytes, ARGS_DEFAULT_MEMORY_MIB * MIB);
    assert_int_equal(a.vm.ncpus, 1);
    assert_string_equal(a.vm.console, "stdio");
    assert_null(a.vm.api_socket);
}

static void test_all_options(void **state)
{
    struct run_args a;
    char err[256] = "";
    char **v = ARGV("--kernel", "k", "--initrd", "i", "--cmdline", "a=b c", "--memory", "256",
                    "--cpus", "4", "--api-socket", "/tmp/s", "--console", "file:/tmp/c",
                    "--debugcon", "/tmp/d", "--log-level", "debug");

    (void)state;
    assert_int_equal(parse(19, v, &a, err), 0);
    assert_string_equal(a.vm.initrd, "i");
    assert_string_equal(a.vm.cmdline, "a=b c");
    assert_int_equal(a.vm.mem_bytes, 256 * MIB);
    assert_int_equal(a.vm.ncpus, 4);
    assert_string_equal(a.vm.api_socket, "/tmp/s");
    assert_string_equal(a.vm.console, "file:/tmp/c");
    assert_string_equal(a.vm.debugcon, "/tmp/d");
    assert_int_equal(a.log_level, 3);
}

static void expect_error(char **v, int argc, const char *fragment)
{
    struct run_args a;
    char err[256] = "";

    assert_int_equal(parse(argc, v, &a, err), -EINVAL);
    if (!strstr(err, fragment))
        fail_msg("error '%s' does not mention '%s'", err, fragment);
}

static void test_bad_input(void **state)
{
    (void)state;
    expect_error(ARGV("--memory", "256"), 3, "--kernel is required");
    expect_error(ARGV("--kernel", "k", "--memory", "0"), 5, "--memory");
    expect_error(ARGV("--kernel", "k", "--memory", "-5"), 5, "--memory");
    expect_error(ARGV("--kernel", "k", "--memory", "12abc"), 5, "--memory");
    expect_error(ARGV("--kernel", "k", "--memory", "99999998"), 5, "more than this host");
    expect_error(ARGV("--kernel", "k", "--cpus", "0"), 5, "--cpus");
    expect_error(ARGV("--kernel", "k", "--cpus", "1000"), 5, "--cpus");
    expect_error(ARGV("--kernel", "k", "--console", "tcp:1"), 5, "--console");
    expect_error(ARGV("--kernel", "k", "--console", "file:"), 5, "--console");
    expect_error(ARGV("--kernel", "k", "--bogus"), 4, "unknown");
    expect_error(ARGV("--kernel", "k", "extra"), 4, "unexpected argument");
    expect_error(ARGV("--kernel", "k", "--log-level", "loud"), 5, "--log-level");
    expect_error(ARGV("--kernel"), 2, "unknown or incomplete");
}

/* --incoming is parsed by the migration's own URI parser, once, here. */
static void test_incoming(void **state)
{
    struct run_args a;
    char err[256] = "";

    (void)state;
    assert_int_equal(parse(3, ARGV("--incoming", "unix:/run/m.sock"), &a, err), 0);
    assert_int_equal(a.incoming_ep.kind, MIG_EP_UNIX);
    assert_string_equal(a.incoming_ep.path, "/run/m.sock");
    assert_int_equal(parse(5, ARGV("--incoming", "tcp:[::1]:4444", "--tls-dir", "/d"), &a, err),
                     0);
    assert_string_equal(a.incoming_ep.host, "::1");
    assert_string_equal(a.tls.dir, "/d");
    expect_error(ARGV("--incoming", "udp:h:1"), 3, "--incoming: 'udp:h:1' is not");
    expect_error(ARGV("--incoming", "tcp:h:99999"), 3, "out of range");
    expect_error(ARGV("--incoming", "tcp:h:1", "--tls-authz", "a"), 5, "need a tls dir");
    expect_error(ARGV("--kernel", "k", "--tls-dir", "/d"), 5, "go with --incoming");
}

static void test_help_and_reparse(void **state)
{
    struct run_args a;
    char err[256] = "";

    (void)state;
    assert_int_equal(parse(2, ARGV("--help"), &a, err), ARGS_HELP);
    /* getopt state is reset: a second parse sees all options again. */
    assert_int_equal(parse(5, ARGV("--kernel", "x", "--cpus", "2"), &a, err), 0);
    assert_int_equal(a.vm.ncpus, 2);
}
static void test_disks(void **state)
{
    struct run_args a;
    char err[256] = "";
    char **v = ARGV("--kernel", "k", "--disk", "path=/a.img", "--disk",
                    "path=/b.img,readonly=on,serial=S-1", "--no-rng");
    const char *bad[] = { "readonly=on", "path=/x,readonly=yes", "path=/x,serial=123456789012345678901",
                          "path=/x,bogus=1", "path=/x,noequals", "path=" };

    (void)state;
    assert_int_equal(parse(8, v, &a, err), 0);
    assert_int_equal(a.vm.ndisks, 2);
    assert_string_equal(a.vm.disks[0].path, "/a.img");
    assert_false(a.vm.disks[0].readonly);
    assert_string_equal(a.vm.disks[0].serial, "");
    assert_string_equal(a.vm.disks[1].path, "/b.img");
    assert_true(a.vm.disks[1].readonly);
    assert_string_equal(a.vm.disks[1].serial, "S-1");
    assert_true(a.vm.no_rng);
    for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = 0;
        assert_int_equal(parse(5, ARGV("--kernel", "k", "--disk", (char *)bad[i]), &a, err),
                         -EINVAL);
        assert_non_null(strstr(err, "--disk"));
    }
    /* at most BLK_MAX_DISKS */
    {
        char *many[3 + 2 * (BLK_MAX_DISKS + 1)] = { "run", "--kernel", "k" };
        for (int i = 0; i <= BLK_MAX_DISKS; i++) {
            many[3 + 2 * i] = "--disk";
            many[4 + 2 * i] = "path=/d";
        }
        assert_int_equal(parse(3 + 2 * (BLK_MAX_DISKS + 1), many, &a, err), -EINVAL);
    }
}

/* --net: tap name, optional MAC, stable default MAC, limits and bad input. */
static void test_net_option(void **state)
{
    struct run_args a;
    char err[256] = "";
    char mac[18];

    (void)state;
    assert_int_equal(parse(7, ARGV("--kernel", "k", "--net", "tap=ftap0,mac=02:11:22:33:44:5A",
                                   "--net", "tap=t1"), &a, err), 0);
    assert_int_equal(a.vm.nnets, 2);
    assert_string_equal(a.vm.nets[0].tap, "ftap0");
    net_mac_format(a.vm.nets[0].mac, mac);
    assert_string_equal(mac, "02:11:22:33:44:5a");
    assert_true(a.vm.nets[0].mac_given);
    assert_false(a.vm.nets[1].mac_given);
    net_mac_format(a.vm.nets[1].mac, mac);
    assert_memory_equal(mac, "52:54:00:", 9);
    expect_error(ARGV("--kernel", "k", "--net", "mac=02:00:00:00:00:01"), 5, "tap=NAME");
    expect_error(ARGV("--kernel", "k", "--net", "tap=a,mac=01:00:00:00:00:01"), 5, "unicast");
    expect_error(ARGV("--kernel", "k", "--net", "tap=a,mac=02:00:00:00:00"), 5, "unicast");
    expect_error(ARGV("--kernel", "k", "--net", "tap=a,speed=1"), 5, "unknown");
    expect_error(ARGV("--kernel", "k", "--net", "tap=abcdefghijklmnopq"), 5, "longer");
    expect_error(ARGV("--kernel", "k", "--net", "tap="), 5, "unknown or empty");
    expect_error(ARGV("--kernel", "k", "--net", "tap=a", "--net", "tap=b", "--net", "tap=c",
                      "--net", "tap=d", "--net", "tap=e"), 13, "at most");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_all_options),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_help_and_reparse),
        cmocka_unit_test(test_incoming),
        cmocka_unit_test(test_disks),
        cmocka_unit_test(test_net_option),
    };
    return cmocka_run_group_tests_name("args", tests, NULL, NULL);
}
