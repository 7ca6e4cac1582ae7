/* 8250/16550 UART on COM1: console output to a file descriptor, input from
 * another, interrupts on IRQ 4. */
#ifndef FERRY_DEVICES_SERIAL_H
#define FERRY_DEVICES_SERIAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "devices/irq.h"
#include "devices/pio.h"

#define SERIAL_COM1_BASE 0x3f8
#define SERIAL_COM1_IRQ  4
#define SERIAL_RX_SIZE   4096

/* Guest-visible register state: exactly what a snapshot must carry. */
struct serial_regs {
    uint8_t ier, lcr, mcr, lsr_err, msr, scr, dll, dlm, fcr;
    uint8_t thr_ipending;   /* THR-empty interrupt not yet acknowledged */
    uint16_t rx_head, rx_count;
    uint8_t rx[SERIAL_RX_SIZE];
};

struct serial {
    pthread_mutex_t lock;
    pthread_cond_t rx_space;
    struct serial_regs r;
    struct irq_line irq;
    int irq_level;
    int out_fd;
    int in_fd;              /* -1: no input */
    bool stopping;
    pthread_t in_thread;
    bool in_thread_started;
};

int serial_init(struct serial *s, struct pio_bus *bus, int vm_fd, int out_fd, int in_fd);
/* Starts reading input in a thread of its own. */
int serial_start_input(struct serial *s);
void serial_stop(struct serial *s);
/* Feeds bytes to the receiver; returns how many fit (pure state change). */
unsigned serial_receive(struct serial *s, const uint8_t *buf, unsigned len);
/* Register access, exported for unit tests. */
uint8_t serial_reg_read(struct serial *s, unsigned reg);
void serial_reg_write(struct serial *s, unsigned reg, uint8_t value);

struct state_ops;
extern const struct state_ops serial_state_ops;

#endif
