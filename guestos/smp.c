/*
 * Bring-up of every vCPU and the hand-off of one workload to all of them.
 *
 * Ring 0 (guestos_kmain, reached from boot.S on each vCPU with its own
 * stack): load this vCPU's TSS; vCPU 0 also picks how to reach the host
 * (host.c), fills the IDT and publishes idt_ready, which the other vCPUs
 * wait for before lidt, so no vCPU can take a trap through a half-written
 * IDT. Then iretq to task_main in ring 3.
 *
 * Ring 3 (task_main): vCPU 0 reads start_info and the command line, prints
 * the banner, validates the workload's arguments and publishes `work`. The
 * other vCPUs spin (pause) until `work` is published, run the workload if
 * their index is below hk.vcpus, and park. vCPU 0 ends the guest with the
 * workload's exit value once run() returns (workloads end with a barrier).
 *
 * Under hyperkernel all vCPUs enter pvh_entry by themselves, possibly
 * before or after vCPU 0 got here; nothing depends on the order because
 * each waits on a flag the one before it publishes. Under QEMU only vCPU 0
 * enters, unless guestos.sipi=N asks it to wake N-1 more (sipi.c), which
 * then enter pvh_entry exactly as hyperkernel's vCPUs would.
 */
#include "guestos.h"

/* Per-vCPU stacks; boot.S computes the ring-0 stack top from the index. */
uint8_t guestos_kstacks[GUESTOS_MAX_VCPUS][GUESTOS_KSTACK_SIZE] __attribute__((aligned(4096)));
static uint8_t ustacks[GUESTOS_MAX_VCPUS][GUESTOS_USTACK_SIZE] __attribute__((aligned(4096)));

/* Set once by vCPU 0 in ring 0, read in ring 3 (global by necessity). */
uint32_t guestos_start_info_paddr;
unsigned guestos_hyperkernel;

static uint32_t idt_ready;

/*
 * The one workload of this boot; written by vCPU 0 before `published`.
 * Alone on its page, as is the barrier: under hyperkernel the vCPUs that
 * spin on them may be on other nodes, and a write to anything else on the
 * same page would take the page away from all of them (page-granular
 * coherence), again and again while they spin.
 */
static struct {
	const struct workload *wl;
	unsigned nr; /* vCPUs taking part: hk.vcpus, or 1 */
	uint32_t published;
	uint8_t pad[4096 - 16];
} work PAGE_ALONE;
_Static_assert(sizeof(work) == 4096, "work fills its page");

/* Sense-reversing barrier over work.nr vCPUs (ring 3: atomics and pause). */
static struct {
	uint32_t count;
	uint32_t gen;
	uint8_t pad[4096 - 8];
} barrier PAGE_ALONE;
_Static_assert(sizeof(barrier) == 4096, "the barrier fills its page");

static const struct workload *const workloads[] = {
    &workload_memtest,
    &workload_hello,
    &workload_fault,
    &workload_kvdb,
    &workload_blkstress,
    &workload_blkbad,
    &workload_blkbench,
    &workload_litmus,
    &workload_psort,
};

#define NR_WORKLOADS (sizeof(workloads) / sizeof(workloads[0]))

void guestos_kmain(unsigned cpu, unsigned hyperkernel, uint32_t start_info)
{
	cpu_load_tss(cpu);
	if (cpu == 0) {
		guestos_hyperkernel = hyperkernel;
		guestos_start_info_paddr = start_info;
		host_init(hyperkernel);
		idt_init();
		__atomic_store_n(&idt_ready, 1, __ATOMIC_RELEASE);
	} else {
		while (!__atomic_load_n(&idt_ready, __ATOMIC_ACQUIRE))
			cpu_relax();
	}
	host_init_cpu();
	idt_load();
	enter_user(task_main, (uint64_t)(uintptr_t)&ustacks[cpu + 1][0], cpu);
}

void smp_barrier(void)
{
	/* Read the generation before arriving, or a fast release could be missed. */
	uint32_t gen = __atomic_load_n(&barrier.gen, __ATOMIC_ACQUIRE);

	if (__atomic_add_fetch(&barrier.count, 1, __ATOMIC_ACQ_REL) == work.nr) {
		__atomic_store_n(&barrier.count, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&barrier.gen, gen + 1, __ATOMIC_RELEASE);
		return;
	}
	while (__atomic_load_n(&barrier.gen, __ATOMIC_ACQUIRE) == gen)
		cpu_relax();
}

unsigned smp_nr_vcpus(const struct cmdline *cl)
{
	/*
	 * hk.vcpus counts the vCPUs hyperkernel started. Without the boot
	 * magic nobody else enters unless we wake them (guestos.sipi).
	 */
	if (guestos_hyperkernel)
		return cl->vcpus ? cl->vcpus : 1;
	return cl->sipi ? cl->sipi : 1;
}

/* "memtest, hello, fault": for one-line errors. */
static const char *workload_names(void)
{
	static char names[128];
	size_t len = 0;

	for (unsigned i = 0; i < NR_WORKLOADS && len < sizeof(names); i++)
		len += (size_t)snprintf(names + len, sizeof(names) - len, "%s%s", i ? ", " : "",
					workloads[i]->name);
	return names;
}

static const struct workload *workload_find(const char *name)
{
	for (unsigned i = 0; i < NR_WORKLOADS; i++)
		if (strcmp(workloads[i]->name, name) == 0)
			return workloads[i];
	return NULL;
}

static NORETURN void boot_main(void)
{
	static struct cmdline cl;
	struct bootinfo *bi = &guestos_bootinfo;
	const struct workload *wl;
	unsigned nr;

	if (bootinfo_read(bi, guestos_start_info_paddr) < 0)
		host_exit(GUESTOS_EXIT_CMDLINE);
	if (cmdline_parse(&cl, bi->cmdline) < 0)
		host_exit(GUESTOS_EXIT_CMDLINE);
	nr = smp_nr_vcpus(&cl);
	printk("guestos: %u vCPU%s, %lu MiB RAM, host via %s, cmdline \"%s\"\n", nr,
	       nr == 1 ? "" : "s", bi->ram_bytes >> 20, host_name(), bi->cmdline);
	if (!guestos_hyperkernel && cl.vcpus)
		printk("guestos: hk.vcpus=%u ignored: not started by hyperkernel\n", cl.vcpus);
	if (guestos_hyperkernel && cl.sipi)
		printk("guestos: guestos.sipi=%u ignored: hyperkernel starts the vCPUs\n", cl.sipi);
	if (cl.argc == 0) {
		printk("guestos: no workload on the command line (workloads: %s)\n",
		       workload_names());
		host_exit(GUESTOS_EXIT_CMDLINE);
	}
	wl = workload_find(cl.argv[0]);
	if (!wl) {
		printk("guestos: unknown workload '%s' (workloads: %s)\n", cl.argv[0],
		       workload_names());
		host_exit(GUESTOS_EXIT_CMDLINE);
	}
	if (wl->parse(&cl) < 0)
		host_exit(GUESTOS_EXIT_CMDLINE);
	if (!guestos_hyperkernel && nr > 1 && sipi_start_aps(nr, guestos_start_info_paddr) < 0)
		host_exit(GUESTOS_EXIT_WORKLOAD);

	work.wl = wl;
	work.nr = nr;
	__atomic_store_n(&work.published, 1, __ATOMIC_RELEASE);
	host_exit(wl->run(0, nr));
}

static NORETURN void ap_main(unsigned cpu)
{
	while (!__atomic_load_n(&work.published, __ATOMIC_ACQUIRE))
		cpu_relax();
	if (cpu < work.nr)
		work.wl->run(cpu, work.nr);
	host_park();
}

void task_main(unsigned cpu)
{
	if (cpu == 0)
		boot_main();
	ap_main(cpu);
}
