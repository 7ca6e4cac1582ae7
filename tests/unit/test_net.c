/* virtio-net helpers that need no KVM: MAC parsing/formatting, the stable
 * default MAC. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "net/tap.h"

static void test_mac_parse(void **state)
{
    uint8_t mac[6] = { 0 };
    char s[18];

    (void)state;
    assert_int_equal(net_mac_parse("52:54:00:Ab:cD:ef", mac), 0);
    net_mac_format(mac, s);
    assert_string_equal(s, "52:54:00:ab:cd:ef");
    assert_int_equal(net_mac_parse("52:54:00:ab:cd", mac), -EINVAL);
    assert_int_equal(net_mac_parse("52:54:00:ab:cd:eg", mac), -EINVAL);
    assert_int_equal(net_mac_parse("52-54-00-ab-cd-ef", mac), -EINVAL);
    assert_int_equal(net_mac_parse("ff:ff:ff:ff:ff:ff", mac), -EINVAL);
    assert_int_equal(net_mac_parse("", mac), -EINVAL);
    /* A failed parse leaves the old value. */
    net_mac_format(mac, s);
    assert_string_equal(s, "52:54:00:ab:cd:ef");
}

static void test_mac_default_stable(void **state)
{
    uint8_t a[6], b[6], c[6], d[6];

    (void)state;
    net_mac_default("ftap0", 0, a);
    net_mac_default("ftap0", 0, b);
    net_mac_default("ftap0", 1, c);
    net_mac_default("ftap1", 0, d);
    assert_memory_equal(a, b, 6);
    assert_memory_not_equal(a, c, 6);
    assert_memory_not_equal(a, d, 6);
    assert_int_equal(a[0], 0x52);
    assert_int_equal(a[0] & 1, 0);   /* unicast */
}

static void test_option(void **state)
{
    struct net_config c;
    char err[128];

    (void)state;
    assert_int_equal(net_parse_option("mac=02:00:00:00:00:07,tap=x", 0, &c, err, sizeof(err)), 0);
    assert_string_equal(c.tap, "x");
    assert_int_equal(c.mac[5], 7);
    assert_int_equal(net_parse_option("tap=x,", 0, &c, err, sizeof(err)), 0);
    assert_int_equal(net_parse_option("", 0, &c, err, sizeof(err)), -EINVAL);
    assert_int_equal(net_parse_option(",,", 0, &c, err, sizeof(err)), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mac_parse),
        cmocka_unit_test(test_mac_default_stable),
        cmocka_unit_test(test_option),
    };
    return cmocka_run_group_tests_name("net", tests, NULL, NULL);
}
