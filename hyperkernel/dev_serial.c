/*
 * A 16550 UART at COM1 (0x3f8), output only.  Enough of the register file
 * is modelled that a probing driver (Linux's 8250, guestos) finds a UART
 * whose transmitter is always empty; received data never arrives and no
 * interrupts are raised.
 */
#include "hk_internal.h"

#define UART_RBR_THR 0
#define UART_IER     1
#define UART_IIR_FCR 2
#define UART_LCR     3
#define UART_MCR     4
#define UART_LSR     5
#define UART_MSR     6
#define UART_SCR     7

#define LCR_DLAB     0x80
#define LSR_THRE     0x20
#define LSR_TEMT     0x40
#define IIR_NO_INT   0x01
#define MSR_IDLE     0xb0 /* DCD | DSR | CTS */
#define MCR_LOOP     0x10

static uint32_t serial_read(struct hk_vm *vm, void *dev, uint16_t off, unsigned width)
{
	struct hk_serial *s = dev;
	uint32_t v = 0;

	pthread_mutex_lock(&s->lock);
	switch (off) {
	case UART_RBR_THR:
		v = (s->lcr & LCR_DLAB) ? s->dll : 0;
		break;
	case UART_IER:
		v = (s->lcr & LCR_DLAB) ? s->dlm : s->ier;
		break;
	case UART_IIR_FCR:
		v = IIR_NO_INT;
		break;
	case UART_LCR:
		v = s->lcr;
		break;
	case UART_MCR:
		v = s->mcr;
		break;
	case UART_LSR:
		v = LSR_THRE | LSR_TEMT;
		break;
	case UART_MSR:
		/* In loopback mode the modem lines echo MCR, which is how
		 * drivers detect that a UART is present. */
		v = (s->mcr & MCR_LOOP) ? (uint32_t)((s->mcr & 0x0f) << 4) : MSR_IDLE;
		break;
	case UART_SCR:
		v = s->scr;
		break;
	}
	pthread_mutex_unlock(&s->lock);
	return v;
}

static void serial_write(struct hk_vm *vm, void *dev, uint16_t off, unsigned width, uint32_t val)
{
	struct hk_serial *s = dev;
	char c = (char)val;

	pthread_mutex_lock(&s->lock);
	switch (off) {
	case UART_RBR_THR:
		if (s->lcr & LCR_DLAB) {
			s->dll = (uint8_t)val;
		} else if (!(s->mcr & MCR_LOOP) && vm->console) {
			/* Under the lock: bytes from several vCPUs stay in order. */
			vm->console(vm->console_ctx, &c, 1);
		}
		break;
	case UART_IER:
		if (s->lcr & LCR_DLAB)
			s->dlm = (uint8_t)val;
		else
			s->ier = val & 0x0f;
		break;
	case UART_LCR:
		s->lcr = (uint8_t)val;
		break;
	case UART_MCR:
		s->mcr = val & 0x1f;
		break;
	case UART_SCR:
		s->scr = (uint8_t)val;
		break;
	}
	pthread_mutex_unlock(&s->lock);
}

const struct hk_pio_ops hk_serial_ops = {
	.size = sizeof(struct hk_pio_ops),
	.name = "serial-16550",
	.base = 0x3f8,
	.len = 8,
	.read = serial_read,
	.write = serial_write,
};
