/*
 * guestos.sipi=N: when QEMU (not hyperkernel) booted us, wake N-1 more
 * processors with INIT/SIPI so that multi-vCPU workloads can be tested
 * without /dev/kvm. QEMU starts only the boot processor of a PVH kernel;
 * hyperkernel starts all vCPUs itself and ignores this word's effect
 * (boot_main never calls us when the boot magic is present).
 *
 * Runs in ring 3 like everything else: the trampoline's page and the local
 * APIC's registers are both inside the user-accessible identity map. The
 * APs enter pvh_entry as hyperkernel's vCPUs would (sipi.S).
 */
#include "guestos.h"

#define LAPIC_ICR_LO	      0xfee00300ULL /* default xAPIC base; QEMU does not move it */
#define ICR_INIT_ALL_BUT_SELF 0x000c4500
#define ICR_SIPI_ALL_BUT_SELF (0x000c4600 | (SIPI_TRAMPOLINE >> 12))
#define ARRIVAL_TIMEOUT_TSC   20000000000ULL /* generous: TCG is slow */

extern const char sipi_trampoline[], sipi_trampoline_end[];
extern const char sipi_trampoline_next[], sipi_trampoline_start_info[];

static volatile uint32_t *tramp_field(const char *label)
{
	return (volatile uint32_t *)(uintptr_t)(SIPI_TRAMPOLINE + (label - sipi_trampoline));
}

static void spin_tsc(uint64_t cycles)
{
	uint64_t t0 = rdtsc();

	while (rdtsc() - t0 < cycles)
		cpu_relax();
}

int sipi_start_aps(unsigned nr, uint32_t start_info)
{
	volatile uint32_t *icr = (volatile uint32_t *)(uintptr_t)LAPIC_ICR_LO;
	volatile uint32_t *next = tramp_field(sipi_trampoline_next);
	uint64_t t0;

	memcpy((void *)(uintptr_t)SIPI_TRAMPOLINE, sipi_trampoline,
	       (size_t)(sipi_trampoline_end - sipi_trampoline));
	*tramp_field(sipi_trampoline_start_info) = start_info;
	__atomic_store_n(next, 1, __ATOMIC_RELEASE);

	/* The MP start-up sequence: INIT, then SIPI twice (Intel SDM vol. 3, 8.4.4). */
	*icr = ICR_INIT_ALL_BUT_SELF;
	spin_tsc(10000000);
	*icr = ICR_SIPI_ALL_BUT_SELF;
	spin_tsc(200000);
	*icr = ICR_SIPI_ALL_BUT_SELF;

	t0 = rdtsc();
	while (__atomic_load_n(next, __ATOMIC_ACQUIRE) < nr) {
		if (rdtsc() - t0 > ARRIVAL_TIMEOUT_TSC) {
			printk("guestos: guestos.sipi=%u but only %u processors started\n", nr,
			       __atomic_load_n(next, __ATOMIC_ACQUIRE));
			return -1;
		}
		cpu_relax();
	}
	return 0;
}
