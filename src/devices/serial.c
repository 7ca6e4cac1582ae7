#include "devices/serial.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"
#include "util/util.h"
#include "state/state.h"

enum {
    UART_RBR = 0, UART_IER = 1, UART_IIR = 2, UART_LCR = 3,
    UART_MCR = 4, UART_LSR = 5, UART_MSR = 6, UART_SCR = 7,
};
#define LCR_DLAB   0x80
#define MCR_LOOP   0x10
#define LSR_DR     0x01
#define LSR_THRE   0x20
#define LSR_TEMT   0x40
#define IER_RDI    0x01
#define IER_THRI   0x02
#define IIR_NONE   0x01
#define IIR_THRI   0x02
#define IIR_RDI    0x04
#define FCR_ENABLE 0x01
#define FCR_CLR_RX 0x02

static uint8_t serial_iir(const struct serial_regs *r)
{
    uint8_t fifo = (r->fcr & FCR_ENABLE) ? 0xc0 : 0;

    if ((r->ier & IER_RDI) && r->rx_count)
        return fifo | IIR_RDI;
    if ((r->ier & IER_THRI) && r->thr_ipending)
        return fifo | IIR_THRI;
    return fifo | IIR_NONE;
}

static void serial_update_irq(struct serial *s)
{
    int level = !(serial_iir(&s->r) & IIR_NONE);

    if (level != s->irq_level) {
        s->irq_level = level;
        irq_line_set(&s->irq, level);
    }
}

static unsigned serial_rx_push(struct serial_regs *r, const uint8_t *buf, unsigned len)
{
    unsigned n = 0;

    while (n < len && r->rx_count < SERIAL_RX_SIZE) {
        r->rx[(r->rx_head + r->rx_count) % SERIAL_RX_SIZE] = buf[n++];
        r->rx_count++;
    }
    return n;
}

static uint8_t serial_rx_pop(struct serial *s)
{
    struct serial_regs *r = &s->r;
    uint8_t c;

    if (!r->rx_count)
        return 0;
    c = r->rx[r->rx_head];
    r->rx_head = (uint16_t)((r->rx_head + 1) % SERIAL_RX_SIZE);
    r->rx_count--;
    pthread_cond_signal(&s->rx_space);
    return c;
}

static void serial_tx(struct serial *s, uint8_t c)
{
    if (s->r.mcr & MCR_LOOP) {
        serial_rx_push(&s->r, &c, 1);
    } else if (s->out_fd >= 0 && fd_write_all(s->out_fd, &c, 1) < 0) {
        s->out_fd = -1;   /* a closed console must not stop the guest */
    }
    s->r.thr_ipending = 1;
}

/* In loopback the modem outputs feed the modem inputs; Linux probes this. */
static uint8_t serial_msr(const struct serial_regs *r)
{
    uint8_t m = r->mcr;

    if (!(m & MCR_LOOP))
        return r->msr;
    return (uint8_t)(((m & 0x02) << 3) | ((m & 0x01) << 5) | ((m & 0x04) << 4) |
                     ((m & 0x08) << 4));
}

uint8_t serial_reg_read(struct serial *s, unsigned reg)
{
    struct serial_regs *r = &s->r;
    bool dlab = r->lcr & LCR_DLAB;
    uint8_t v;

    switch (reg) {
    case UART_RBR: return dlab ? r->dll : serial_rx_pop(s);
    case UART_IER: return dlab ? r->dlm : r->ier;
    case UART_IIR:
        v = serial_iir(r);
        if ((v & 0x0f) == IIR_THRI)
            r->thr_ipending = 0;   /* reading IIR acknowledges THR empty */
        return v;
    case UART_LCR: return r->lcr;
    case UART_MCR: return r->mcr;
    case UART_LSR:
        v = (uint8_t)(LSR_THRE | LSR_TEMT | r->lsr_err | (r->rx_count ? LSR_DR : 0));
        r->lsr_err = 0;
        return v;
    case UART_MSR: return serial_msr(r);
    default: return r->scr;
    }
}

static void serial_write_fcr(struct serial *s, uint8_t v)
{
    s->r.fcr = v & 0xc9;
    if (v & FCR_CLR_RX) {
        s->r.rx_count = 0;
        pthread_cond_signal(&s->rx_space);
    }
}

void serial_reg_write(struct serial *s, unsigned reg, uint8_t v)
{
    struct serial_regs *r = &s->r;
    bool dlab = r->lcr & LCR_DLAB;

    switch (reg) {
    case UART_RBR:
        if (dlab)
            r->dll = v;
        else
            serial_tx(s, v);
        break;
    case UART_IER:
        if (dlab) {
            r->dlm = v;
            break;
        }
        if ((v & IER_THRI) && !(r->ier & IER_THRI))
            r->thr_ipending = 1;   /* enabling it with THR empty raises it */
        r->ier = v & 0x0f;
        break;
    case UART_IIR: serial_write_fcr(s, v); break;
    case UART_LCR: r->lcr = v; break;
    case UART_MCR: r->mcr = v & 0x1f; break;
    case UART_SCR: r->scr = v; break;
    default: break;   /* LSR and MSR are read-only */
    }
}

static void serial_pio_read(void *opaque, uint16_t off, uint8_t *data, unsigned size)
{
    struct serial *s = opaque;

    pthread_mutex_lock(&s->lock);
    pio_put(data, size, serial_reg_read(s, off));
    serial_update_irq(s);
    pthread_mutex_unlock(&s->lock);
}

static void serial_pio_write(void *opaque, uint16_t off, const uint8_t *data, unsigned size)
{
    struct serial *s = opaque;

    pthread_mutex_lock(&s->lock);
    serial_reg_write(s, off, (uint8_t)pio_get(data, size));
    serial_update_irq(s);
    pthread_mutex_unlock(&s->lock);
}

static const struct pio_ops serial_ops = {
    .read = serial_pio_read,
    .write = serial_pio_write,
};

int serial_init(struct serial *s, struct pio_bus *bus, int vm_fd, int out_fd, int in_fd)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->rx_space, NULL);
    s->irq = (struct irq_line){ .vm_fd = vm_fd, .gsi = SERIAL_COM1_IRQ };
    s->out_fd = out_fd;
    s->in_fd = in_fd;
    s->r.msr = 0xb0;   /* DCD, DSR, CTS: a terminal is attached */
    s->r.dll = 0x0c;   /* 9600 baud, as firmware leaves it */
    return pio_register(bus, SERIAL_COM1_BASE, 8, &serial_ops, s, "serial");
}

unsigned serial_receive(struct serial *s, const uint8_t *buf, unsigned len)
{
    unsigned n;

    pthread_mutex_lock(&s->lock);
    n = serial_rx_push(&s->r, buf, len);
    serial_update_irq(s);
    pthread_mutex_unlock(&s->lock);
    return n;
}

/* Blocks while the receive buffer is full, so typed input is never dropped. */
static void serial_feed(struct serial *s, const uint8_t *buf, unsigned len)
{
    while (len) {
        unsigned n = serial_receive(s, buf, len);
        buf += n;
        len -= n;
        pthread_mutex_lock(&s->lock);
        while (len && s->r.rx_count == SERIAL_RX_SIZE && !s->stopping)
            pthread_cond_wait(&s->rx_space, &s->lock);
        pthread_mutex_unlock(&s->lock);
        if (s->stopping)
            return;
    }
}

static void *serial_input_thread(void *arg)
{
    struct serial *s = arg;
    uint8_t buf[256];

    for (;;) {
        struct pollfd pfd = { .fd = s->in_fd, .events = POLLIN };
        ssize_t n;

        if (poll(&pfd, 1, 200) < 0 && errno != EINTR)
            break;
        if (__atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE))
            break;
        if (!(pfd.revents & (POLLIN | POLLHUP)))
            continue;
        n = read(s->in_fd, buf, sizeof(buf));
        if (n <= 0 && !(n < 0 && errno == EINTR))
            break;     /* end of input: the guest keeps running without it */
        if (n > 0)
            serial_feed(s, buf, (unsigned)n);
    }
    return NULL;
}

int serial_start_input(struct serial *s)
{
    int ret;

    if (s->in_fd < 0)
        return 0;
    ret = -pthread_create(&s->in_thread, NULL, serial_input_thread, s);
    s->in_thread_started = ret == 0;
    return ret;
}

void serial_stop(struct serial *s)
{
    pthread_mutex_lock(&s->lock);
    __atomic_store_n(&s->stopping, true, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&s->rx_space);
    pthread_mutex_unlock(&s->lock);
    if (s->in_thread_started)
        pthread_join(s->in_thread, NULL);
    s->in_thread_started = false;
}

/* The receive buffer is walked as count + bytes in order, so two saves of
 * the same state are byte-identical whatever the ring position. */
static int serial_walk_rx(struct state_walker *w, struct serial_regs *r)
{
    uint8_t bytes[SERIAL_RX_SIZE];
    uint32_t count = r->rx_count;

    for (uint32_t i = 0; walk_saving(w) && i < count; i++)
        bytes[i] = r->rx[(r->rx_head + i) % SERIAL_RX_SIZE];
    walk_count(w, &count, SERIAL_RX_SIZE, "rx count");
    walk_buf(w, bytes, count, "rx bytes");
    if (walk_loading(w) && !w->err) {
        memcpy(r->rx, bytes, count);
        r->rx_head = 0;
        r->rx_count = (uint16_t)count;
    }
    return w->err;
}

static int serial_state_walk(struct state_walker *w, void *obj)
{
    struct serial *s = obj;
    struct serial_regs *r = &s->r;

    pthread_mutex_lock(&s->lock);
    walk_u8(w, &r->ier, "ier");
    walk_u8(w, &r->lcr, "lcr");
    walk_u8(w, &r->mcr, "mcr");
    walk_u8(w, &r->lsr_err, "lsr");
    walk_u8(w, &r->msr, "msr");
    walk_u8(w, &r->scr, "scr");
    walk_u8(w, &r->dll, "dll");
    walk_u8(w, &r->dlm, "dlm");
    walk_u8(w, &r->fcr, "fcr");
    walk_u8(w, &r->thr_ipending, "thr_ipending");
    serial_walk_rx(w, r);
    if (walk_loading(w) && !w->err) {
        s->irq_level = -1;   /* force the line to be driven anew */
        serial_update_irq(s);
    }
    pthread_mutex_unlock(&s->lock);
    return w->err;
}

const struct state_ops serial_state_ops = {
    .name = "serial", .id = SECTION_SERIAL, .version = 1, .min_version = 1,
    .walk = serial_state_walk,
};
