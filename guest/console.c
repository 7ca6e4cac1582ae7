/*
 * Console at CPL3. A port access costs ~34 us here, so a line is appended whole to a
 * ring (lines never interleave) and drained a FIFO burst at a time by whichever
 * worker gets the UART lock; CPU 0 can keep its bursts short and its ticks punctual.
 */
#include "user.h"

#define CON_RING    65536
#define LINE_MAX    256

static char con_buf[CON_RING] __noinit;
static struct {
    u32 append_lock;
    u64 head;           /* bytes appended; written under append_lock */
    u64 tail;           /* bytes sent to the UART; written under serial_tx_lock */
} con;

static u32 rx_tail;     /* CPU 0 only */
static char rx_line[80];
static size_t rx_len;

/*
 * Sends up to `budget` bytes. True if this CPU should come back soon: it drained and
 * output remains. False if the ring is empty or another CPU is draining it.
 */
bool con_pump(size_t budget)
{
    u64 tail = con.tail;

    if (__atomic_load_n(&con.head, __ATOMIC_ACQUIRE) == tail || !spin_try(&serial_tx_lock))
        return false;
    tail = con.tail;
    while (budget) {
        u64 head = __atomic_load_n(&con.head, __ATOMIC_ACQUIRE);
        size_t off = tail % CON_RING;
        size_t n = MIN(MIN(head - tail, CON_RING - off), budget);
        size_t done = n ? serial_tx_burst(con_buf + off, n) : 0;

        if (!done)
            break;
        tail += done;
        budget -= done;
    }
    __atomic_store_n(&con.tail, tail, __ATOMIC_RELEASE);
    /* spin_drop's full barrier: a line appended meanwhile is seen here, or its writer
     * finds the lock free and drains it itself. */
    spin_drop(&serial_tx_lock);
    return __atomic_load_n(&con.head, __ATOMIC_ACQUIRE) != tail;
}

void con_flush(void)
{
    while (__atomic_load_n(&con.tail, __ATOMIC_ACQUIRE) !=
           __atomic_load_n(&con.head, __ATOMIC_ACQUIRE))
        if (!con_pump(CON_RING))
            cpu_relax();
}

void con_write(const char *s, size_t n)
{
    u64 head;
    size_t off, first;

    while (!spin_try(&con.append_lock))
        cpu_relax();
    head = con.head;
    while (head + n - __atomic_load_n(&con.tail, __ATOMIC_ACQUIRE) > CON_RING)
        if (!con_pump(LINE_MAX))
            cpu_relax();    /* ring full: the UART is behind */
    off = head % CON_RING;
    first = MIN(n, CON_RING - off);
    memcpy(con_buf + off, s, first);
    memcpy(con_buf, s + first, n - first);
    __atomic_store_n(&con.head, head + n, __ATOMIC_RELEASE);
    spin_drop(&con.append_lock);
}

void con_printf(const char *fmt, ...)
{
    char buf[LINE_MAX];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = fmt_vsn(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > 0)
        con_write(buf, MIN((size_t)n, sizeof(buf) - 1));
}

/* Collects serial input into lines ended by \r or \n; true when `out` holds one. */
bool con_read_line(char *out, size_t size)
{
    u32 head = serial_rx.head;

    if (head - rx_tail > RX_RING_SIZE)
        rx_tail = head - RX_RING_SIZE;      /* overrun: keep the newest bytes */
    while (rx_tail != head) {
        char c = (char)serial_rx.buf[rx_tail++ % RX_RING_SIZE];

        if (c == '\r' || c == '\n') {
            if (!rx_len)
                continue;
            rx_len = MIN(rx_len, size - 1);
            memcpy(out, rx_line, rx_len);
            out[rx_len] = 0;
            rx_len = 0;
            return true;
        }
        if (rx_len < sizeof(rx_line))
            rx_line[rx_len++] = c;
    }
    return false;
}
