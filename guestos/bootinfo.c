/*
 * What the loader tells us through PVH start_info: the command line and the
 * memory map. Read once by vCPU 0 in ring 3 before any workload runs, and
 * copied, because memtest may overwrite RAM where a loader put them.
 * Every address comes from outside the guest image and is checked against
 * what the boot page tables map before it is dereferenced.
 */
#include "guestos.h"

#define HVM_START_MAGIC 0x336ec578
#define E820_RAM	1
#define CMDLINE_MAX	4096 /* docs/boot-abi.md: at most 4095 bytes + NUL */

/* struct hvm_start_info, PVH ABI (Xen public header start_info.h), version 1. */
struct hvm_start_info {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t nr_modules;
	uint64_t modlist_paddr;
	uint64_t cmdline_paddr;
	uint64_t rsdp_paddr;
	uint64_t memmap_paddr; /* version >= 1 */
	uint32_t memmap_entries;
	uint32_t reserved;
};

struct hvm_memmap_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
	uint32_t reserved;
};

struct bootinfo guestos_bootinfo;
static char cmdline_copy[CMDLINE_MAX];

/* Non-zero and inside what boot.S maps (QEMU does use page 0). */
static bool paddr_ok(uint64_t paddr, uint64_t len)
{
	return paddr != 0 && paddr < GUESTOS_MAPPED_LIMIT && len <= GUESTOS_MAPPED_LIMIT - paddr;
}

static void copy_cmdline(struct bootinfo *bi, uint64_t paddr)
{
	size_t i = 0;

	if (paddr && paddr_ok(paddr, 1)) {
		const volatile char *src = (const volatile char *)(uintptr_t)paddr;

		while (i < CMDLINE_MAX - 1 && paddr + i < GUESTOS_MAPPED_LIMIT && src[i]) {
			cmdline_copy[i] = src[i];
			i++;
		}
	}
	cmdline_copy[i] = '\0';
	bi->cmdline = cmdline_copy;
}

/* Keeps usable[] sorted by base and free of overlaps whatever the map's order. */
static void add_usable(struct bootinfo *bi, uint64_t base, uint64_t end)
{
	unsigned i, n = bi->nr_usable;

	if (n == BOOTINFO_MAX_RANGES)
		return;
	for (i = n; i > 0 && bi->usable[i - 1].base > base; i--)
		bi->usable[i] = bi->usable[i - 1];
	bi->usable[i] = (struct mem_range){.base = base, .len = end - base};
	bi->nr_usable = n + 1;
}

static void trim_overlaps(struct bootinfo *bi)
{
	unsigned i, out = 0;
	uint64_t prev_end = 0;

	for (i = 0; i < bi->nr_usable; i++) {
		uint64_t base = bi->usable[i].base, end = base + bi->usable[i].len;

		if (base < prev_end)
			base = prev_end;
		if (base >= end)
			continue;
		bi->usable[out++] = (struct mem_range){.base = base, .len = end - base};
		prev_end = end;
	}
	bi->nr_usable = out;
}

static void read_memmap(struct bootinfo *bi, const struct hvm_start_info *si)
{
	/* RAM below the end of our image holds us, our page tables and stacks. */
	uint64_t floor = (uint64_t)(uintptr_t)__guestos_end;
	uint64_t bytes = (uint64_t)si->memmap_entries * sizeof(struct hvm_memmap_entry);
	const struct hvm_memmap_entry *e;

	if (si->version < 1 || !si->memmap_entries || !paddr_ok(si->memmap_paddr, bytes))
		return;
	bi->has_memmap = true;
	e = (const struct hvm_memmap_entry *)(uintptr_t)si->memmap_paddr;
	for (uint32_t i = 0; i < si->memmap_entries; i++) {
		uint64_t base = e[i].addr, end = e[i].addr + e[i].size;

		if (e[i].type != E820_RAM || end < base)
			continue;
		bi->ram_bytes += e[i].size;
		if (base < floor)
			base = floor;
		if (end > GUESTOS_MAPPED_LIMIT)
			end = GUESTOS_MAPPED_LIMIT;
		base = (base + GUESTOS_PAGE_SIZE - 1) & ~(GUESTOS_PAGE_SIZE - 1);
		end &= ~(GUESTOS_PAGE_SIZE - 1);
		if (base < end)
			add_usable(bi, base, end);
	}
	trim_overlaps(bi);
}

int bootinfo_read(struct bootinfo *bi, uint32_t start_info_paddr)
{
	const struct hvm_start_info *si;

	bi->cmdline = "";
	if (!paddr_ok(start_info_paddr, sizeof(*si))) {
		printk("guestos: start_info address 0x%x is not usable\n", start_info_paddr);
		return -1;
	}
	si = (const struct hvm_start_info *)(uintptr_t)start_info_paddr;
	if (si->magic != HVM_START_MAGIC) {
		printk("guestos: no PVH start_info at 0x%x (magic 0x%x)\n", start_info_paddr,
		       si->magic);
		return -1;
	}
	copy_cmdline(bi, si->cmdline_paddr);
	read_memmap(bi, si);
	return 0;
}
