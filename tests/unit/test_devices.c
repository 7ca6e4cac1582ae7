/* Device register models without KVM: UART, RTC/CMOS, PCI config, PM timer. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "devices/acpi_pm.h"
#include "devices/pci.h"
#include "devices/rtc.h"
#include "devices/serial.h"
#include "util/util.h"
#include "vm/memory.h"

static struct serial s;
static struct pio_bus bus;
static int out[2];

static int serial_setup(void **state)
{
    (void)state;
    pio_init(&bus);
    assert_int_equal(pipe(out), 0);
    return serial_init(&s, &bus, -1, out[1], -1);
}

static int serial_teardown(void **state)
{
    (void)state;
    close(out[0]);
    close(out[1]);
    return 0;
}

static void test_serial_tx(void **state)
{
    char buf[4] = "";

    (void)state;
    assert_int_equal(serial_reg_read(&s, 5) & 0x60, 0x60);    /* THRE | TEMT */
    serial_reg_write(&s, 0, 'h');
    serial_reg_write(&s, 0, 'i');
    assert_int_equal(read(out[0], buf, 2), 2);
    assert_memory_equal(buf, "hi", 2);
    assert_int_equal(serial_reg_read(&s, 2) & 0x0f, 0x01);    /* no interrupt */
}

static void test_serial_thr_interrupt(void **state)
{
    (void)state;
    serial_reg_write(&s, 1, 0x02);                            /* enable THRE irq */
    assert_int_equal(serial_reg_read(&s, 2) & 0x0f, 0x02);
    assert_int_equal(serial_reg_read(&s, 2) & 0x0f, 0x01);    /* read acknowledged it */
    serial_reg_write(&s, 1, 0);
}

static void test_serial_rx(void **state)
{
    (void)state;
    serial_reg_write(&s, 1, 0x01);                            /* RX data irq */
    assert_int_equal(serial_receive(&s, (const uint8_t *)"ok", 2), 2);
    assert_int_equal(s.irq_level, 1);
    assert_int_equal(serial_reg_read(&s, 5) & 1, 1);
    assert_int_equal(serial_reg_read(&s, 2) & 0x0f, 0x04);
    assert_int_equal(serial_reg_read(&s, 0), 'o');
    assert_int_equal(serial_reg_read(&s, 0), 'k');
    assert_int_equal(serial_reg_read(&s, 5) & 1, 0);
    assert_int_equal(serial_reg_read(&s, 2) & 0x0f, 0x01);
    serial_reg_write(&s, 1, 0);
}

static void test_serial_rx_full(void **state)
{
    static uint8_t big[SERIAL_RX_SIZE + 10];

    (void)state;
    assert_int_equal(serial_receive(&s, big, sizeof(big)), SERIAL_RX_SIZE);
    serial_reg_write(&s, 2, 0x03);                            /* FIFO on, clear RX */
    assert_int_equal(serial_reg_read(&s, 5) & 1, 0);
    assert_int_equal(serial_reg_read(&s, 2) & 0xc0, 0xc0);    /* FIFO enabled bits */
}

static void test_serial_dlab_loopback(void **state)
{
    (void)state;
    serial_reg_write(&s, 3, 0x80);                            /* DLAB */
    serial_reg_write(&s, 0, 0x01);
    serial_reg_write(&s, 1, 0x00);
    assert_int_equal(serial_reg_read(&s, 0), 0x01);           /* divisor, not RX */
    serial_reg_write(&s, 3, 0x03);
    serial_reg_write(&s, 4, 0x10 | 0x0a);                     /* loop, RTS, OUT2 */
    assert_int_equal(serial_reg_read(&s, 6), 0x10 | 0x80);    /* CTS, DCD */
    serial_reg_write(&s, 0, 'x');                             /* loops back to RX */
    assert_int_equal(serial_reg_read(&s, 0), 'x');
    serial_reg_write(&s, 4, 0);
    assert_int_equal(serial_reg_read(&s, 6), 0xb0);
}

static void test_rtc_time(void **state)
{
    struct rtc rtc;
    time_t t = 1700000000;   /* 2023-11-14 22:13:20 UTC, a Tuesday */

    (void)state;
    pio_init(&bus);
    assert_int_equal(rtc_init(&rtc, &bus, 8 * GIB, 2), 0);
    assert_int_equal(rtc_read_reg(&rtc, 0x00, t), 0x20);
    assert_int_equal(rtc_read_reg(&rtc, 0x02, t), 0x13);
    assert_int_equal(rtc_read_reg(&rtc, 0x04, t), 0x22);
    assert_int_equal(rtc_read_reg(&rtc, 0x07, t), 0x14);
    assert_int_equal(rtc_read_reg(&rtc, 0x08, t), 0x11);
    assert_int_equal(rtc_read_reg(&rtc, 0x09, t), 0x23);
    assert_int_equal(rtc_read_reg(&rtc, 0x32, t), 0x20);
    rtc.cmos[0x0b] = 0x04;                                    /* binary, 12-hour */
    assert_int_equal(rtc_read_reg(&rtc, 0x04, t), 0x80 | 10);
    assert_int_equal(rtc_read_reg(&rtc, 0x00, t), 20);
    assert_int_equal(rtc_read_reg(&rtc, 0x0a, t) & 0x80, 0);  /* never mid-update */
}

static void test_rtc_memory(void **state)
{
    uint8_t cmos[128] = { 0 };
    uint64_t high;

    (void)state;
    rtc_set_memory(cmos, 8 * GIB, 4);
    high = cmos[0x5b] | (cmos[0x5c] << 8) | ((uint64_t)cmos[0x5d] << 16);
    assert_int_equal(high * 64 * KIB, 8 * GIB - MEM_LOWMEM_MAX);
    assert_int_equal(cmos[0x5f], 3);
    assert_int_equal(cmos[0x34] | (cmos[0x35] << 8), (MEM_LOWMEM_MAX - 16 * MIB) / (64 * KIB));
}

static void test_pci_config(void **state)
{
    struct pci_bus pci;
    uint32_t bridge = 0x80000000U, absent = 0x80000000U | (5u << 11);

    (void)state;
    pio_init(&bus);
    assert_int_equal(pci_init(&pci, &bus), 0);
    assert_int_equal(pci_cfg_read(&pci, bridge, 0, 4), 0x0d578086);
    assert_int_equal(pci_cfg_read(&pci, bridge | 8, 3, 1), 0x06);  /* bridge class */
    assert_int_equal(pci_cfg_read(&pci, absent, 0, 4), 0xffffffffU);
    assert_int_equal(pci_cfg_read(&pci, absent, 0, 2), 0xffff);
    assert_int_equal(pci_cfg_read(&pci, bridge & ~0x80000000U, 0, 4), 0xffffffffU);
    pci_cfg_write(&pci, bridge, 0, 4, 0);                     /* IDs are read-only */
    assert_int_equal(pci_cfg_read(&pci, bridge, 0, 2), 0x8086);
    pci_cfg_write(&pci, bridge | 4, 0, 2, 0xffff);            /* command: masked */
    assert_int_equal(pci_cfg_read(&pci, bridge | 4, 0, 2), 0x0407);
    assert_int_equal(pci_add(&pci, 0, &pci.host_bridge), -EBUSY);
}

static void test_pio_bus(void **state)
{
    uint8_t data[4];

    (void)state;
    pio_init(&bus);
    assert_int_equal(serial_init(&s, &bus, -1, -1, -1), 0);
    assert_int_equal(serial_init(&s, &bus, -1, -1, -1), -EBUSY);   /* overlap */
    pio_dispatch(&bus, 0x1234, data, 2, false);
    assert_int_equal(data[0], 0xff);
    assert_int_equal(data[1], 0xff);
    pio_dispatch(&bus, SERIAL_COM1_BASE + 5, data, 1, false);
    assert_int_equal(data[0] & 0x60, 0x60);
}

static void test_pm_timer(void **state)
{
    (void)state;
    assert_int_equal(acpi_pm_timer(1000000000ULL), 3579545);
    assert_int_equal(acpi_pm_timer(0), 0);
}

int main(void)
{
    const struct CMUnitTest serial_tests[] = {
        cmocka_unit_test(test_serial_tx),
        cmocka_unit_test(test_serial_thr_interrupt),
        cmocka_unit_test(test_serial_rx),
        cmocka_unit_test(test_serial_rx_full),
        cmocka_unit_test(test_serial_dlab_loopback),
    };
    const struct CMUnitTest other_tests[] = {
        cmocka_unit_test(test_rtc_time),
        cmocka_unit_test(test_rtc_memory),
        cmocka_unit_test(test_pci_config),
        cmocka_unit_test(test_pio_bus),
        cmocka_unit_test(test_pm_timer),
    };
    int fails = cmocka_run_group_tests_name("serial", serial_tests, serial_setup, serial_teardown);

    return fails + cmocka_run_group_tests_name("devices", other_tests, NULL, NULL);
}
