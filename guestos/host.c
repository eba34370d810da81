/*
 * How guestos reaches whatever runs it: console output, the exit value,
 * and parking a vCPU that has nothing left to do.  Two backends:
 *
 * - service page (hyperkernel): MMIO stores to the page of
 *   proto/hk_service_page.h, from either ring.  An MMIO store exits to
 *   the hyper-kernel on every x86 hypervisor, so this needs nothing from
 *   the CPU beyond paging; 8 console bytes travel per exit.
 * - ports (QEMU, or any loader without the page): the 16550 at COM1 and
 *   isa-debug-exit, driven from ring 0 only.  Ring-3 code gets there
 *   through `syscall` (host_syscall in entry.S), never by port I/O of its
 *   own nor a software interrupt: tasks run with IOPL=0, so either would
 *   fault on any CPU, as both do on kvm_pvm whatever IOPL says.
 *
 * vCPU 0 picks the backend in ring 0 before any other vCPU leaves its
 * boot path; the choice never changes afterwards.
 */
#include "guestos.h"
#include "hk_service_page.h"

#define COM1		0x3f8
#define UART_THR	0
#define UART_LSR	5
#define LSR_THRE	0x20
#define DEBUG_EXIT_PORT 0x501

/* MSRs for syscall/sysret (AMD64 APM vol. 2, 6.1.1). */
#define MSR_EFER    0xc0000080
#define MSR_STAR    0xc0000081
#define MSR_LSTAR   0xc0000082
#define MSR_FMASK   0xc0000084
#define EFER_SCE    0x1
#define RFLAGS_SAFE 0x47700 /* TF DF IF IOPL NT AC: cleared on entry */

struct host_ops {
	const char *name;
	void (*console)(const char *s, size_t n);
	void (*exit)(unsigned v);
	NORETURN void (*park)(void);
};

static const struct host_ops *host; /* set by vCPU 0 in ring 0, then read-only */

static unsigned cpl(void)
{
	uint16_t cs;

	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	return cs & 3;
}

/* ---- service page -------------------------------------------------------- */

static volatile uint64_t *service_reg(unsigned off)
{
	return (volatile uint64_t *)(uintptr_t)(HK_SERVICE_PAGE_GPA + off);
}

static void service_console(const char *s, size_t n)
{
	while (n) {
		uint64_t chunk = 0;
		unsigned k = 0;

		/* A NUL would end the chunk early: it is not text, drop it. */
		for (; n && k < 8; s++, n--)
			if (*s)
				chunk |= (uint64_t)(uint8_t)*s << (8 * k++);
		if (k)
			*service_reg(HK_SERVICE_CONSOLE) = chunk;
	}
}

static void service_exit(unsigned v)
{
	*service_reg(HK_SERVICE_EXIT) = v;
}

static NORETURN void service_park(void)
{
	for (;;)
		*service_reg(HK_SERVICE_PARK) = 1;
}

static const struct host_ops service_ops = {
    .name = "service page",
    .console = service_console,
    .exit = service_exit,
    .park = service_park,
};

/* ---- ports, ring 0 ------------------------------------------------------- */

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port));
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static void ports_console0(const char *s, size_t n)
{
	/* QEMU's UART can back-pressure a slow chardev: wait for THR empty. */
	for (size_t i = 0; i < n; i++) {
		while (!(inb(COM1 + UART_LSR) & LSR_THRE))
			cpu_relax();
		outb(COM1 + UART_THR, (uint8_t)s[i]);
	}
}

static NORETURN void ports_park0(void)
{
	for (;;)
		__asm__ volatile("cli; hlt" ::: "memory");
}

/* Called by entry.S's syscall entry, in ring 0 on the caller's stack. */
void guestos_syscall(uint64_t op, uint64_t a, uint64_t b);
void guestos_syscall(uint64_t op, uint64_t a, uint64_t b)
{
	switch (op) {
	case GUESTOS_SYS_CONSOLE:
		ports_console0((const char *)(uintptr_t)a, (size_t)b);
		break;
	case GUESTOS_SYS_EXIT:
		outb(DEBUG_EXIT_PORT, (uint8_t)a);
		break;
	case GUESTOS_SYS_PARK:
		ports_park0();
	}
}

static void ports_console(const char *s, size_t n)
{
	if (cpl() == 0)
		ports_console0(s, n);
	else
		host_syscall(GUESTOS_SYS_CONSOLE, (uint64_t)(uintptr_t)s, n);
}

static void ports_exit(unsigned v)
{
	if (cpl() == 0)
		outb(DEBUG_EXIT_PORT, (uint8_t)v);
	else
		host_syscall(GUESTOS_SYS_EXIT, v, 0);
}

static NORETURN void ports_park(void)
{
	if (cpl() == 0)
		ports_park0();
	for (;;)
		host_syscall(GUESTOS_SYS_PARK, 0, 0);
}

static const struct host_ops ports_ops = {
    .name = "ports",
    .console = ports_console,
    .exit = ports_exit,
    .park = ports_park,
};

/* ---- set-up (ring 0) ----------------------------------------------------- */

static uint64_t rdmsr(uint32_t msr)
{
	uint32_t lo, hi;

	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((uint64_t)hi << 32) | lo;
}

static void wrmsr(uint32_t msr, uint64_t v)
{
	__asm__ volatile("wrmsr" ::"c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

void host_init(bool hyperkernel)
{
	/* One ring-0 MMIO read (one exit) proves the page is there. */
	if (hyperkernel && *(volatile uint32_t *)(uintptr_t)(HK_SERVICE_PAGE_GPA + HK_SERVICE_ID) ==
			       HK_SERVICE_MAGIC)
		host = &service_ops;
	else
		host = &ports_ops;
}

void host_init_cpu(void)
{
	if (host != &ports_ops)
		return; /* the service page needs no per-CPU state */
	/* syscall: CS=0x08/SS=0x10; sysret (64-bit): SS=0x18|3, CS=0x20|3. */
	wrmsr(MSR_STAR, ((uint64_t)(SEL_UDATA - 8) << 48) | ((uint64_t)SEL_KCODE << 32));
	wrmsr(MSR_LSTAR, (uint64_t)(uintptr_t)guestos_syscall_entry);
	wrmsr(MSR_FMASK, RFLAGS_SAFE);
	wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SCE);
}

const char *host_name(void)
{
	return host->name;
}

void host_console_write(const char *s, size_t n)
{
	host->console(s, n);
}

NORETURN void host_exit(unsigned v)
{
	host->exit(v);
	/* Nothing ended us (no debug-exit device): stop here. */
	host->park();
}

NORETURN void host_park(void)
{
	host->park();
}
