/* COM1 16550: set-up, burst output (used by both modes) and interrupt-driven input. */
#include "kernel.h"
#include "x86.h"

#define UART_RBR    0   /* DLAB=0 */
#define UART_THR    0
#define UART_DLL    0   /* DLAB=1 */
#define UART_IER    1
#define UART_DLM    1
#define UART_FCR    2
#define UART_LCR    3
#define UART_MCR    4
#define UART_LSR    5
#define LSR_DR      0x01
#define LSR_THRE    0x20
#define UART_FIFO   16

#define KPRINTF_LOCK_TICKS (1ULL << 27)     /* ~50 ms: the holder may be this very CPU */

struct serial_rx serial_rx;
u32 serial_tx_lock;
static char serial_last = '\n';             /* last byte sent: are we at a line start? */

void serial_init(void)
{
    outb(COM1 + UART_IER, 0);
    outb(COM1 + UART_LCR, 0x80);        /* DLAB: 115200 baud */
    outb(COM1 + UART_DLL, 1);
    outb(COM1 + UART_DLM, 0);
    outb(COM1 + UART_LCR, 0x03);        /* 8N1 */
    outb(COM1 + UART_FCR, 0x07);        /* FIFOs on and cleared, RX trigger at 1 byte */
    outb(COM1 + UART_MCR, 0x0b);        /* DTR, RTS, OUT2 (gates the IRQ line) */
}

/*
 * One LSR read, then up to a FIFO's worth of bytes if the transmitter is empty:
 * each port access is a VM exit, so never poll per byte. Returns bytes written.
 */
size_t serial_tx_burst(const char *s, size_t n)
{
    if (!(inb(COM1 + UART_LSR) & LSR_THRE))
        return 0;
    n = MIN(n, UART_FIFO);
    for (size_t i = 0; i < n; i++)
        outb(COM1 + UART_THR, (u8)s[i]);
    serial_last = s[n - 1];
    return n;
}

static void serial_write(const char *s, size_t n)
{
    while (n) {
        size_t done = serial_tx_burst(s, n);

        s += done;
        n -= done;
    }
}

/*
 * Kernel output: boot lines and panics only; the workloads go through console.c. A
 * panic can strike while another CPU drains the console a burst at a time, so take
 * the UART (or give up waiting) and start on a fresh line.
 */
void kprintf(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    u64 end = rdtsc() + KPRINTF_LOCK_TICKS;
    bool locked;
    int n;

    va_start(ap, fmt);
    n = fmt_vsn(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    while (!(locked = spin_try(&serial_tx_lock)) && rdtsc() < end)
        cpu_relax();
    if (serial_last != '\n')
        serial_write("\n", 1);
    if (n > 0)
        serial_write(buf, MIN((size_t)n, sizeof(buf) - 1));
    if (locked)
        spin_drop(&serial_tx_lock);
}

/* IRQ 4 to the BSP through the IOAPIC; the 8259s stay masked for good. */
void serial_rx_enable(void)
{
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    ioapic_route_isa(4, VEC_SERIAL, cpu_apic_id[0]);
    while (inb(COM1 + UART_LSR) & LSR_DR)
        (void)inb(COM1 + UART_RBR);
    outb(COM1 + UART_IER, 0x01);        /* received data available */
}

/* Drains the RX FIFO into the ring; the reader (CPU 0's worker) polls head. */
void serial_irq(void)
{
    u32 head = serial_rx.head;

    while (inb(COM1 + UART_LSR) & LSR_DR)
        serial_rx.buf[head++ % RX_RING_SIZE] = inb(COM1 + UART_RBR);
    barrier();
    serial_rx.head = head;
}
