/*
 * Unexpected CPU exceptions: report one line and end the guest with exit
 * value 3. guestos expects no exception at all (no demand paging, no
 * interrupts), so any trap is a bug or a deliberate test (workload "fault").
 * Runs in ring 0 on the trapping vCPU's TSS.rsp0 stack.
 */
#include "guestos.h"

/* Layout pushed by entry.S trap_common on top of the hardware frame. */
struct trap_frame {
	uint64_t r15, r14, r13, r12, r11, r10, r9, r8;
	uint64_t rbp, rdi, rsi, rdx, rcx, rbx, rax;
	uint64_t vector, error;
	uint64_t rip, cs, rflags, rsp, ss;
};

void guestos_trap(struct trap_frame *tf)
{
	char line[192];
	uint64_t cr2;
	/* The frame sits on this vCPU's ring-0 stack, which names the vCPU. */
	uintptr_t off = (uintptr_t)tf - (uintptr_t)guestos_kstacks;
	unsigned cpu = (unsigned)(off >> GUESTOS_KSTACK_SHIFT);
	int n;

	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	n = snprintf(line, sizeof(line),
		     "guestos: exception %lu at RIP 0x%lx err 0x%lx cr2 0x%lx (vCPU %u, ring %lu, "
		     "RSP 0x%lx)\n",
		     tf->vector, tf->rip, tf->error, cr2, cpu, tf->cs & 3, tf->rsp);
	if (n > (int)sizeof(line) - 1) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	/*
	 * Unlocked: the trapping code may hold the console lock itself. A
	 * line interleaved with another vCPU's output beats a deadlock.
	 */
	console_write_unlocked(line, (size_t)n);
	host_exit(GUESTOS_EXIT_EXCEPTION);
}
