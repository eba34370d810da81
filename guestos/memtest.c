/*
 * memtest [size=SIZE] [seed=N] [passes=N] [shares=N] [corrupt=OFF]
 *
 * Fills RAM above the kernel image with a pattern, verifies it, and prints
 * a checksum of what it read back. The tested bytes are the first SIZE
 * bytes (default: all) of usable RAM, concatenated in address order across
 * memory-map ranges (e.g. below 3 GiB and above 4 GiB) into one "logical"
 * range. Byte offsets in that logical range, not physical addresses, feed
 * the pattern and the checksum, so the checksum depends on (size, seed)
 * only: not on the vCPU count, the guest's RAM size, the 3-4 GiB hole or
 * the kernel image's size.
 *
 * The logical range is cut into 4 KiB-aligned shares, by default one per
 * vCPU. shares=N cuts it into N shares instead, dealt round-robin to the
 * vCPUs: with one vCPU (QEMU) this still exercises the split arithmetic and
 * proves the checksum independent of the split. corrupt=OFF flips a bit of
 * the word at logical byte offset OFF after round 0's fill, so tests can
 * see the failure path (exit value 1) without broken hardware.
 *
 * Round 0 is the first touch of every page (on hyperkernel: the page
 * faults); rounds 1..passes repeat fill+verify with a different pattern over
 * memory that is now resident. Each round: barrier, fill own shares,
 * barrier, verify own shares, barrier; vCPU 0 times it with rdtsc.
 */
#include "guestos.h"

#define MAX_SHARES (1u << 20)

static const char memtest_usage[] =
    "memtest [size=SIZE] [seed=N] [passes=N] [shares=N] [corrupt=OFF]";

/* Written by vCPU 0 in parse(); read-only once the workload is published. */
static struct {
	uint64_t size; /* bytes, a multiple of 4 KiB */
	uint64_t seed;
	uint64_t passes;
	uint64_t shares;  /* 0: one per vCPU */
	uint64_t corrupt; /* logical offset + 1 of the word to damage; 0: none */
	unsigned nr_ranges;
	struct mem_range ranges[BOOTINFO_MAX_RANGES];
} cfg;

/* One vCPU's outcome of a round; a cache line each so vCPUs don't share lines. */
struct memtest_result {
	uint64_t csum;
	bool failed;
	uint64_t fail_off; /* logical offset of the first bad word */
	uint64_t fail_addr;
	uint64_t expected;
	uint64_t got;
} CACHELINE_ALIGNED;

static struct memtest_result results[GUESTOS_MAX_VCPUS];
static bool stop; /* set by vCPU 0 between barriers */

/* splitmix64's output function: a cheap bijection with good avalanche. */
static inline uint64_t mix64(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ULL;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t round_key(uint64_t round)
{
	return mix64(cfg.seed ^ mix64(round));
}

static inline uint64_t pattern(uint64_t off, uint64_t key)
{
	return mix64(off ^ key);
}

/*
 * A word's contribution to the checksum. Summing (mod 2^64) makes the total
 * independent of the order and grouping in which words are visited, hence
 * of the split into shares and vCPUs; the position-dependent rotation makes
 * swapped words change the sum.
 */
static inline uint64_t csum_word(uint64_t off, uint64_t v)
{
	unsigned r = (off >> 3) & 63;

	return (r ? (v << r) | (v >> (64 - r)) : v) ^ off;
}

/* Physical memory behind logical bytes [off, off + len) of one range. */
struct span {
	uint64_t *p;
	uint64_t off;
	uint64_t words;
};

/* Splits logical [lo, hi) into at most cfg.nr_ranges physical spans. */
static unsigned spans_of(uint64_t lo, uint64_t hi, struct span *out)
{
	uint64_t start = 0;
	unsigned n = 0;

	for (unsigned i = 0; i < cfg.nr_ranges && lo < hi; i++) {
		uint64_t end = start + cfg.ranges[i].len;

		if (lo < end) {
			uint64_t e = hi < end ? hi : end;

			out[n++] = (struct span){
			    .p = (uint64_t *)(uintptr_t)(cfg.ranges[i].base + (lo - start)),
			    .off = lo,
			    .words = (e - lo) / 8,
			};
			lo = e;
		}
		start = end;
	}
	return n;
}

static void share_bounds(uint64_t share, uint64_t nshares, uint64_t *lo, uint64_t *hi)
{
	uint64_t pages = cfg.size / GUESTOS_PAGE_SIZE;

	/* pages < 2^24 and nshares <= 2^20: no overflow */
	*lo = pages * share / nshares * GUESTOS_PAGE_SIZE;
	*hi = pages * (share + 1) / nshares * GUESTOS_PAGE_SIZE;
}

static void fill_span(const struct span *s, uint64_t key)
{
	uint64_t *p = s->p, off = s->off;

	for (uint64_t n = s->words; n; n--, p++, off += 8)
		*p = pattern(off, key);
}

/* Returns false at the first bad word, recorded in r. */
static bool verify_span(const struct span *s, uint64_t key, struct memtest_result *r)
{
	const volatile uint64_t *p = s->p;
	uint64_t off = s->off, csum = r->csum;

	for (uint64_t n = s->words; n; n--, p++, off += 8) {
		uint64_t want = pattern(off, key), got = *p;

		if (got != want) {
			r->failed = true;
			r->fail_off = off;
			r->fail_addr = (uint64_t)(uintptr_t)p;
			r->expected = want;
			r->got = got;
			return false;
		}
		csum += csum_word(off, got);
	}
	r->csum = csum;
	return true;
}

/* Test hook: damage one word of our own share, between fill and verify. */
static void corrupt_word(uint64_t lo, uint64_t hi)
{
	uint64_t off = cfg.corrupt - 1;
	struct span sp;

	if (off >= lo && off < hi && spans_of(off, off + 8, &sp) == 1)
		*sp.p ^= 1;
}

/* Fill, barrier, verify over this vCPU's shares. */
static void round_run(unsigned cpu, unsigned nr, uint64_t round)
{
	uint64_t key = round_key(round);
	struct memtest_result *r = &results[cpu];
	uint64_t nshares = cfg.shares ? cfg.shares : nr;
	struct span spans[BOOTINFO_MAX_RANGES];
	uint64_t lo, hi;
	unsigned n;

	r->csum = 0;
	r->failed = false;
	for (uint64_t s = cpu; s < nshares; s += nr) {
		share_bounds(s, nshares, &lo, &hi);
		n = spans_of(lo, hi, spans);
		for (unsigned i = 0; i < n; i++)
			fill_span(&spans[i], key);
		if (cfg.corrupt && round == 0)
			corrupt_word(lo, hi);
	}
	smp_barrier();
	for (uint64_t s = cpu; s < nshares && !r->failed; s += nr) {
		share_bounds(s, nshares, &lo, &hi);
		n = spans_of(lo, hi, spans);
		for (unsigned i = 0; i < n && verify_span(&spans[i], key, r); i++)
			;
	}
}

/* vCPU 0, after the round's last barrier: the lowest bad word, or NULL. */
static const struct memtest_result *round_failure(unsigned nr, uint64_t *csum)
{
	const struct memtest_result *bad = NULL;

	*csum = 0;
	for (unsigned i = 0; i < nr; i++) {
		*csum += results[i].csum;
		if (results[i].failed && (!bad || results[i].fail_off < bad->fail_off))
			bad = &results[i];
	}
	return bad;
}

static enum guestos_exit memtest_run(unsigned cpu, unsigned nr)
{
	uint64_t first_csum = 0, t0 = 0;

	if (cpu == 0) {
		bool mib = cfg.size % (1 << 20) == 0;
		char ranges[24] = "", shares[24] = "";

		if (cfg.nr_ranges > 1)
			snprintf(ranges, sizeof(ranges), " in %u ranges", cfg.nr_ranges);
		if (cfg.shares)
			snprintf(shares, sizeof(shares), ", %lu share%s", cfg.shares,
				 cfg.shares == 1 ? "" : "s");
		printk("memtest: %lu %s at 0x%lx seed %lu on %u vCPU%s%s%s\n",
		       mib ? cfg.size >> 20 : cfg.size >> 10, mib ? "MiB" : "KiB",
		       cfg.ranges[0].base, cfg.seed, nr, nr == 1 ? "" : "s", ranges, shares);
	}
	for (uint64_t round = 0; round <= cfg.passes; round++) {
		smp_barrier();
		if (cpu == 0)
			t0 = rdtsc();
		round_run(cpu, nr, round);
		smp_barrier();
		if (cpu == 0) {
			uint64_t cycles = rdtsc() - t0, csum;
			const struct memtest_result *bad = round_failure(nr, &csum);

			if (bad) {
				printk("memtest FAIL at 0x%lx expected 0x%016lx got 0x%016lx "
				       "(round %lu)\n",
				       bad->fail_addr, bad->expected, bad->got, round);
				stop = true;
			} else if (round == 0) {
				first_csum = csum;
				printk("memtest: first-touch fill+verify %lu tsc cycles\n", cycles);
			} else {
				printk("memtest: pass %lu fill+verify %lu bytes %lu tsc cycles\n",
				       round, cfg.size, cycles);
			}
		}
		smp_barrier();
		if (stop)
			return GUESTOS_EXIT_WORKLOAD;
	}
	if (cpu == 0) {
		/* Round 0's sum: depends on (size, seed) only, not on passes=. */
		printk("memtest checksum 0x%016lx\n", first_csum);
		printk("memtest ok\n");
	}
	return GUESTOS_EXIT_OK;
}

static int bad_arg(const char *arg)
{
	printk("memtest: bad argument '%s' (usage: %s)\n", arg, memtest_usage);
	return -1;
}

static int memtest_parse(const struct cmdline *cl)
{
	const struct bootinfo *bi = &guestos_bootinfo;
	uint64_t avail = 0, want, left;
	const char *size_arg = NULL;

	cfg.seed = 1;
	for (unsigned i = 1; i < cl->argc; i++) {
		const char *a = cl->argv[i], *v;

		if ((v = cmdline_value(a, "size"))) {
			if (parse_size(v, &cfg.size) < 0)
				return bad_arg(a);
			size_arg = a;
		} else if ((v = cmdline_value(a, "seed"))) {
			if (parse_u64(v, &cfg.seed) < 0)
				return bad_arg(a);
		} else if ((v = cmdline_value(a, "passes"))) {
			if (parse_u64(v, &cfg.passes) < 0)
				return bad_arg(a);
		} else if ((v = cmdline_value(a, "shares"))) {
			if (parse_u64(v, &cfg.shares) < 0 || !cfg.shares || cfg.shares > MAX_SHARES)
				return bad_arg(a);
		} else if ((v = cmdline_value(a, "corrupt"))) {
			if (parse_u64(v, &cfg.corrupt) < 0 || cfg.corrupt == UINT64_MAX)
				return bad_arg(a);
			cfg.corrupt = (cfg.corrupt & ~7ULL) + 1;
		} else {
			return bad_arg(a);
		}
	}

	if (!bi->has_memmap) {
		printk("memtest: start_info has no memory map\n");
		return -1;
	}
	for (unsigned i = 0; i < bi->nr_usable; i++)
		avail += bi->usable[i].len;
	if (!size_arg) {
		want = avail;
	} else {
		want = cfg.size & ~(GUESTOS_PAGE_SIZE - 1);
		if (want == 0) {
			printk("memtest: %s is less than 4 KiB\n", size_arg);
			return -1;
		}
		if (want > avail) {
			printk("memtest: %s is more than the %lu KiB of RAM above the kernel\n",
			       size_arg, avail >> 10);
			return -1;
		}
	}
	if (want == 0) {
		printk("memtest: no usable RAM above the kernel\n");
		return -1;
	}

	if (cfg.corrupt > want) {
		printk("memtest: corrupt= offset is beyond the %lu tested bytes\n", want);
		return -1;
	}
	cfg.size = want;
	left = want;
	for (unsigned i = 0; i < bi->nr_usable && left; i++) {
		uint64_t len = bi->usable[i].len < left ? bi->usable[i].len : left;

		cfg.ranges[cfg.nr_ranges++] =
		    (struct mem_range){.base = bi->usable[i].base, .len = len};
		left -= len;
	}
	return 0;
}

const struct workload workload_memtest = {
    .name = "memtest",
    .usage = memtest_usage,
    .parse = memtest_parse,
    .run = memtest_run,
};
