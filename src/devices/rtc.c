#include "devices/rtc.h"

#include <string.h>

#include "arch/x86/e820.h"
#include "util/util.h"
#include "state/state.h"

#define RTC_REG_A 0x0a
#define RTC_REG_B 0x0b
#define RTC_REG_C 0x0c
#define RTC_REG_D 0x0d
#define RTC_B_24H 0x02
#define RTC_B_BIN 0x04

static uint8_t rtc_bcd(const struct rtc *rtc, unsigned v)
{
    if (rtc->cmos[RTC_REG_B] & RTC_B_BIN)
        return (uint8_t)v;
    return (uint8_t)(((v / 10) << 4) | (v % 10));
}

static uint8_t rtc_hour(const struct rtc *rtc, unsigned h)
{
    unsigned h12;

    if (rtc->cmos[RTC_REG_B] & RTC_B_24H)
        return rtc_bcd(rtc, h);
    h12 = h % 12 ? h % 12 : 12;
    return (uint8_t)(rtc_bcd(rtc, h12) | (h >= 12 ? 0x80 : 0));
}

uint8_t rtc_read_reg(struct rtc *rtc, uint8_t reg, time_t now)
{
    time_t t = now + rtc->offset_s;
    struct tm tm;

    gmtime_r(&t, &tm);
    switch (reg) {
    case 0x00: return rtc_bcd(rtc, (unsigned)tm.tm_sec);
    case 0x02: return rtc_bcd(rtc, (unsigned)tm.tm_min);
    case 0x04: return rtc_hour(rtc, (unsigned)tm.tm_hour);
    case 0x06: return rtc_bcd(rtc, (unsigned)tm.tm_wday + 1);
    case 0x07: return rtc_bcd(rtc, (unsigned)tm.tm_mday);
    case 0x08: return rtc_bcd(rtc, (unsigned)tm.tm_mon + 1);
    case 0x09: return rtc_bcd(rtc, (unsigned)tm.tm_year % 100);
    case 0x32: return rtc_bcd(rtc, (unsigned)(tm.tm_year + 1900) / 100);
    case RTC_REG_A: return rtc->cmos[RTC_REG_A] & 0x7f;   /* never mid-update */
    case RTC_REG_C: return 0;
    default: return rtc->cmos[reg & 0x7f];
    }
}

void rtc_set_memory(uint8_t *cmos, uint64_t ram, unsigned ncpus)
{
    uint64_t low = MIN(ram, MEM_LOWMEM_MAX);
    uint64_t ext_kib = low > MIB ? MIN((low - MIB) / KIB, 0xfc00) : 0;
    uint64_t above16 = low > 16 * MIB ? MIN((low - 16 * MIB) / (64 * KIB), 0xffff) : 0;
    uint64_t high = ram > low ? (ram - low) / (64 * KIB) : 0;

    cmos[0x15] = 0x80;               /* 640 KiB base memory */
    cmos[0x16] = 0x02;
    cmos[0x17] = cmos[0x30] = (uint8_t)ext_kib;
    cmos[0x18] = cmos[0x31] = (uint8_t)(ext_kib >> 8);
    cmos[0x34] = (uint8_t)above16;
    cmos[0x35] = (uint8_t)(above16 >> 8);
    cmos[0x5b] = (uint8_t)high;
    cmos[0x5c] = (uint8_t)(high >> 8);
    cmos[0x5d] = (uint8_t)(high >> 16);
    cmos[0x5f] = (uint8_t)(ncpus - 1);
}

/* Writes to the time registers are stored but reads keep following the host
 * clock: guests here only read the time, and a migrated guest must see the
 * destination host's time of day. */
static void rtc_write_reg(struct rtc *rtc, uint8_t reg, uint8_t v)
{
    if (reg == RTC_REG_C || reg == RTC_REG_D)
        return;
    if (reg == RTC_REG_A)
        v &= 0x7f;
    rtc->cmos[reg & 0x7f] = v;
}

static void rtc_pio_read(void *opaque, uint16_t off, uint8_t *data, unsigned size)
{
    struct rtc *rtc = opaque;

    pthread_mutex_lock(&rtc->lock);
    pio_put(data, size, off == 0 ? 0xff : rtc_read_reg(rtc, rtc->index, time(NULL)));
    pthread_mutex_unlock(&rtc->lock);
}

static void rtc_pio_write(void *opaque, uint16_t off, const uint8_t *data, unsigned size)
{
    struct rtc *rtc = opaque;
    uint8_t v = (uint8_t)pio_get(data, size);

    pthread_mutex_lock(&rtc->lock);
    if (off == 0)
        rtc->index = v & 0x7f;   /* bit 7 is the NMI mask, not part of the index */
    else
        rtc_write_reg(rtc, rtc->index, v);
    pthread_mutex_unlock(&rtc->lock);
}

static const struct pio_ops rtc_ops = { .read = rtc_pio_read, .write = rtc_pio_write };

int rtc_init(struct rtc *rtc, struct pio_bus *bus, uint64_t ram_bytes, unsigned ncpus)
{
    memset(rtc, 0, sizeof(*rtc));
    pthread_mutex_init(&rtc->lock, NULL);
    rtc->cmos[RTC_REG_A] = 0x26;             /* 32.768 kHz base, 1024 Hz rate */
    rtc->cmos[RTC_REG_B] = RTC_B_24H;
    rtc->cmos[RTC_REG_D] = 0x80;             /* battery good */
    rtc_set_memory(rtc->cmos, ram_bytes, ncpus);
    return pio_register(bus, 0x70, 2, &rtc_ops, rtc, "rtc");
}

/* Version 2 added the guest clock offset; version-1 streams load with the
 * guest clock following the host's (offset 0). This is the example of an
 * older section version staying readable (docs/STREAM.md). */
static int rtc_state_walk(struct state_walker *w, void *obj)
{
    struct rtc *rtc = obj;
    uint64_t offset = (uint64_t)rtc->offset_s;

    pthread_mutex_lock(&rtc->lock);
    walk_u8(w, &rtc->index, "index");
    walk_buf(w, rtc->cmos, sizeof(rtc->cmos), "cmos");
    if (w->version >= 2)
        walk_u64(w, &offset, "offset");
    else if (walk_loading(w))
        offset = 0;
    if (walk_loading(w) && !w->err)
        rtc->offset_s = (int64_t)offset;
    pthread_mutex_unlock(&rtc->lock);
    return w->err;
}

const struct state_ops rtc_state_ops = {
    .name = "rtc", .id = SECTION_RTC, .version = 2, .min_version = 1,
    .walk = rtc_state_walk,
};
