/* MC146818 RTC and CMOS RAM at ports 0x70/0x71; time comes from the host. */
#ifndef FERRY_DEVICES_RTC_H
#define FERRY_DEVICES_RTC_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "devices/pio.h"

struct rtc {
    pthread_mutex_t lock;
    uint8_t index;
    uint8_t cmos[128];
    int64_t offset_s;       /* guest clock minus host clock (0: follows the host) */
};

int rtc_init(struct rtc *rtc, struct pio_bus *bus, uint64_t ram_bytes, unsigned ncpus);
/* Register read with the time of day taken from now + offset (pure). */
uint8_t rtc_read_reg(struct rtc *rtc, uint8_t reg, time_t now);
/* Fills the CMOS memory-size fields as PC firmware does (pure). */
void rtc_set_memory(uint8_t *cmos, uint64_t ram_bytes, unsigned ncpus);

struct state_ops;
extern const struct state_ops rtc_state_ops;

#endif
