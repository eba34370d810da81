/*
 * Two tiny workloads for boot tests:
 *   hello            every vCPU prints "hello from vCPU i" from ring 3, in
 *                    index order (so the output is deterministic), then
 *                    the guest exits 0. Proves SMP bring-up end to end;
 *                    with the service page, each vCPU also checks that
 *                    the page names it (HK_SERVICE_VCPU).
 *   fault [kind=K] [addr=A]
 *                    vCPU 0 does something ring 3 must not get away with:
 *                    kind=read (default) reads address A (default 64 GiB,
 *                    the first address boot.S leaves unmapped), kind=port
 *                    writes port 0x80, kind=int runs `int $0x81`. Each must
 *                    raise an exception on any CPU (IOPL=0, DPL-0 gates:
 *                    what kvm_pvm enforces anyway), which is reported, and
 *                    the guest exits with value 3.
 */
#include "guestos.h"
#include "hk_service_page.h"

static uint32_t hello_turn; /* the vCPU whose turn it is to print */
static uint64_t fault_addr;
static const char *fault_kind;

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
	enum guestos_exit ret = GUESTOS_EXIT_OK;

	while (__atomic_load_n(&hello_turn, __ATOMIC_ACQUIRE) != cpu)
		cpu_relax();
	printk("hello from vCPU %u\n", cpu);
	if (strcmp(host_name(), "service page") == 0) {
		uint32_t named =
		    *(volatile uint32_t *)(uintptr_t)(HK_SERVICE_PAGE_GPA + HK_SERVICE_VCPU);

		if (named != cpu) {
			printk("hello: the service page names vCPU %u as %u\n", cpu, named);
			ret = GUESTOS_EXIT_WORKLOAD;
		}
	}
	__atomic_store_n(&hello_turn, cpu + 1, __ATOMIC_RELEASE);
	smp_barrier();
	return ret;
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
	fault_kind = "read";
	for (unsigned i = 1; i < cl->argc; i++) {
		if ((v = cmdline_value(cl->argv[i], "addr")) && parse_u64(v, &fault_addr) == 0)
			continue;
		if ((v = cmdline_value(cl->argv[i], "kind")) &&
		    (!strcmp(v, "read") || !strcmp(v, "port") || !strcmp(v, "int"))) {
			fault_kind = v;
			continue;
		}
		printk("fault: bad argument '%s' (usage: %s)\n", cl->argv[i], workload_fault.usage);
		return -1;
	}
	return 0;
}

static enum guestos_exit fault_run(unsigned cpu, unsigned nr)
{
	volatile uint64_t *p = (volatile uint64_t *)(uintptr_t)fault_addr;

	if (cpu != 0)
		return GUESTOS_EXIT_OK;
	if (!strcmp(fault_kind, "port")) {
		printk("fault: writing port 0x80 from ring 3\n");
		__asm__ volatile("outb %%al, $0x80" ::"a"(0) : "memory");
	} else if (!strcmp(fault_kind, "int")) {
		printk("fault: int $0x81 from ring 3\n");
		__asm__ volatile("int $0x81" ::: "memory");
	} else {
		printk("fault: reading 0x%lx from ring 3\n", fault_addr);
		(void)*p;
	}
	printk("fault: no exception (kind=%s)\n", fault_kind);
	return GUESTOS_EXIT_WORKLOAD;
}

const struct workload workload_fault = {
    .name = "fault",
    .usage = "fault [kind=read|port|int] [addr=A]",
    .parse = fault_parse,
    .run = fault_run,
};
