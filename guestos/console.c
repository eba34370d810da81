/*
 * Console on the COM1 16550 and the isa-debug-exit port, both driven from
 * ring 3 (tasks run with IOPL=3). Under hyperkernel every port access is an
 * exit (~25 us on kvm_pvm), so a byte costs exactly one THR write there:
 * its UART is always ready and LSR is not polled. QEMU's UART can
 * back-pressure a slow chardev, so there we poll LSR.THRE before each byte.
 * Lines are written under a spinlock so vCPUs do not interleave them.
 */
#include "guestos.h"

#define COM1		0x3f8
#define UART_THR	0
#define UART_LSR	5
#define LSR_THRE	0x20
#define DEBUG_EXIT_PORT 0x501

static bool poll_lsr;
static uint32_t console_lock;
static char line[4608]; /* protected by console_lock; fits a 4095-byte cmdline */

void console_init(bool poll)
{
	poll_lsr = poll;
}

void console_write_unlocked(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (poll_lsr)
			while (!(inb(COM1 + UART_LSR) & LSR_THRE))
				cpu_relax();
		outb(COM1 + UART_THR, (uint8_t)s[i]);
	}
}

static void lock(void)
{
	while (__atomic_exchange_n(&console_lock, 1, __ATOMIC_ACQUIRE))
		while (__atomic_load_n(&console_lock, __ATOMIC_RELAXED))
			cpu_relax();
}

static void unlock(void)
{
	__atomic_store_n(&console_lock, 0, __ATOMIC_RELEASE);
}

void console_write(const char *s, size_t n)
{
	lock();
	console_write_unlocked(s, n);
	unlock();
}

int printk(const char *fmt, ...)
{
	va_list ap;
	int n;

	lock();
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 1)
		n = sizeof(line) - 1;
	console_write_unlocked(line, (size_t)n);
	unlock();
	return n;
}

/* QEMU and hkd end the guest with status (v << 1) | 1; one byte suffices. */
void debug_exit(enum guestos_exit v)
{
	outb(DEBUG_EXIT_PORT, (uint8_t)v);
	/* No debug-exit device: nothing else will stop us, so stop here. */
	park();
}
