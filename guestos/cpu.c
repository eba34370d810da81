/*
 * Ring-0 CPU tables: one TSS per vCPU (only rsp0 matters: the stack a trap
 * from ring 3 lands on) and the IDT shared by all vCPUs. This is the only C
 * code besides guestos_kmain that runs in ring 0, so it is a handful of
 * stores per vCPU; the IDT is written once, by vCPU 0.
 */
#include "guestos.h"

/* 64-bit TSS, hardware layout (Intel SDM vol. 3, 8.7). */
struct tss64 {
	uint32_t reserved0;
	uint64_t rsp[3];
	uint64_t reserved1;
	uint64_t ist[7];
	uint64_t reserved2;
	uint16_t reserved3;
	uint16_t iomap_base;
} __attribute__((packed));

_Static_assert(sizeof(struct tss64) == 104, "TSS layout");

/* Written by each vCPU for itself only; zeroed by the loader (.bss). */
static struct tss64 tss[GUESTOS_MAX_VCPUS] __attribute__((aligned(128)));

/* 256 gates of 16 bytes; absent gates turn a stray vector into #NP (11). */
static uint64_t idt[256 * 2] __attribute__((aligned(4096)));

struct __attribute__((packed)) desc_ptr {
	uint16_t limit;
	uint64_t base;
};

void cpu_load_tss(unsigned cpu)
{
	struct tss64 *t = &tss[cpu];
	uint64_t base = (uint64_t)(uintptr_t)t;
	uint64_t limit = sizeof(*t) - 1;
	unsigned slot = GDT_TSS0_INDEX + 2 * cpu;

	t->rsp[0] = (uint64_t)(uintptr_t)&guestos_kstacks[cpu + 1][0];
	/* I/O bitmap offset past the limit: no bitmap, so with IOPL=0 ring 3
	 * may touch no port at all (ring-3 port I/O faults on kvm_pvm anyway:
	 * we make every CPU agree). */
	t->iomap_base = sizeof(*t);

	/* Available 64-bit TSS (type 9), present, DPL 0. */
	guestos_gdt[slot] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ULL << 40) |
			    (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
	guestos_gdt[slot + 1] = base >> 32;

	__asm__ volatile("ltr %w0" ::"r"(SEL_TSS0 + 16 * cpu) : "memory");
}

static void idt_set(unsigned vec, uint64_t handler, unsigned dpl)
{
	/* Interrupt gate (type 0xe): IF stays clear inside the handler. */
	idt[2 * vec] = (handler & 0xffff) | ((uint64_t)SEL_KCODE << 16) |
		       ((uint64_t)(0x8e | (dpl << 5)) << 40) | (((handler >> 16) & 0xffff) << 48);
	idt[2 * vec + 1] = handler >> 32;
}

void idt_init(void)
{
	/* Every gate DPL 0: a ring-3 `int $n` faults (#GP) on any CPU, as it
	 * does on kvm_pvm (#UD there); ring 3 enters ring 0 by syscall only. */
	for (unsigned v = 0; v < NR_EXCEPTIONS; v++)
		idt_set(v, guestos_trap_stubs[v], 0);
}

void idt_load(void)
{
	struct desc_ptr p = {.limit = sizeof(idt) - 1, .base = (uint64_t)(uintptr_t)idt};

	__asm__ volatile("lidt %0" ::"m"(p) : "memory");
}
