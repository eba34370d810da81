/*
 * Console lines: printk formats into one buffer and hands the line to the
 * host (host.c) in one call, so a line costs a few exits on hyperkernel
 * (8 bytes per service-page store) and one syscall under QEMU. Lines are
 * written under a spinlock so vCPUs do not interleave them.
 */
#include "guestos.h"

static uint32_t console_lock;
static char line[4608]; /* protected by console_lock; fits a 4095-byte cmdline */

void console_write_unlocked(const char *s, size_t n)
{
	host_console_write(s, n);
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
