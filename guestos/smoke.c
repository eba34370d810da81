/*
 * Two tiny workloads for boot tests:
 *   hello            every vCPU prints "hello from vCPU i" from ring 3, in
 *                    index order (so the output is deterministic), then
 *                    the guest exits 0. Proves SMP bring-up end to end.
 *   fault [addr=A]   ring 3 reads address A on vCPU 0 (default 64 GiB,
 *                    the first address boot.S leaves unmapped): exercises
 *                    the exception path, which must report the fault and
 *                    exit with value 3.
 */
#include "guestos.h"

static uint32_t hello_turn; /* the vCPU whose turn it is to print */
static uint64_t fault_addr;

static int no_args(const struct cmdline *cl, const char *usage)
{
	if (cl->argc > 1) {
		printk("%s: bad argument '%s' (usage: %s)\n", cl->argv[0], cl->argv[1], usage);
		return -1;
	}
	return 0;
}

static int hello_parse(const struct cmdline *cl)
{
	return no_args(cl, workload_hello.usage);
}

static enum guestos_exit hello_run(unsigned cpu, unsigned nr)
{
	while (__atomic_load_n(&hello_turn, __ATOMIC_ACQUIRE) != cpu)
		cpu_relax();
	printk("hello from vCPU %u\n", cpu);
	__atomic_store_n(&hello_turn, cpu + 1, __ATOMIC_RELEASE);
	smp_barrier();
	return GUESTOS_EXIT_OK;
}

const struct workload workload_hello = {
    .name = "hello",
    .usage = "hello",
    .parse = hello_parse,
    .run = hello_run,
};

static int fault_parse(const struct cmdline *cl)
{
	const char *v;

	fault_addr = GUESTOS_MAPPED_LIMIT;
	if (cl->argc > 2 || (cl->argc == 2 && (!(v = cmdline_value(cl->argv[1], "addr")) ||
					       parse_u64(v, &fault_addr) < 0))) {
		printk("fault: bad argument '%s' (usage: %s)\n", cl->argv[cl->argc - 1],
		       workload_fault.usage);
		return -1;
	}
	return 0;
}

static enum guestos_exit fault_run(unsigned cpu, unsigned nr)
{
	if (cpu == 0) {
		volatile uint64_t *p = (volatile uint64_t *)(uintptr_t)fault_addr;

		printk("fault: reading 0x%lx from ring 3\n", fault_addr);
		(void)*p;
		printk("fault: no exception at 0x%lx\n", fault_addr);
		return GUESTOS_EXIT_WORKLOAD;
	}
	return GUESTOS_EXIT_OK;
}

const struct workload workload_fault = {
    .name = "fault",
    .usage = "fault [addr=A]",
    .parse = fault_parse,
    .run = fault_run,
};
