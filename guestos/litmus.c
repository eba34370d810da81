/*
 * litmus [test=mp|sb|sbfence|all] [iters=N] [seed=N] [layout=split|same]
 *        [sync=N] [inject=N]
 *
 * Classic x86-TSO litmus tests between vCPU 0 (P0) and vCPU 1 (P1), in
 * ring 3, counting the outcomes of every iteration:
 *
 *   mp       P0: x=1; y=1          P1: r1=y; r2=x     r1=1,r2=0 forbidden
 *   sb       P0: x=1; r1=y         P1: y=1; r2=x      r1=0,r2=0 allowed
 *   sbfence  P0: x=1; mfence; r1=y P1: y=1; mfence; r2=x  r1=0,r2=0 forbidden
 *
 * Under hyperkernel's pooled memory the two vCPUs may run on different
 * nodes and x, y move between them as pages, so these check that the page
 * coherence protocol keeps x86-TSO. sb's reorderings are the store buffer
 * at work: counting them proves the harness can see a reordering at all.
 *
 * test= picks one test or all (the default); iters= is per test (default
 * 1000000); seed= varies a few cycles of jitter after each handshake.
 *
 * Only vCPUs 0 and 1 take part; with more vCPUs the others just wait at
 * the batch barriers (one pair keeps the outcome of each iteration a
 * property of exactly two processors; more pairs would only add traffic).
 *
 * Iteration i (from 1) stores the value i instead of 1, so nothing is
 * reset between iterations: a read "saw the store" (bit 1) iff it
 * returned i; an older value is the initial state (bit 0). Each iteration
 * starts with a two-party handshake: a vCPU publishes go[cpu] = i and
 * waits for the other's go >= i. Under TSO the go store follows the
 * previous iteration's stores, so whoever passes the handshake sees them;
 * and neither vCPU can store i + 1 before the other has finished i. Both
 * leave the handshake within a cache-line transfer of each other, which
 * is what makes sb's reordering observable; a seed-derived jitter of a
 * few cycles per side varies the alignment. Outcomes go to per-vCPU
 * arrays that vCPU 0 tallies after every batch of LITMUS_BATCH iterations.
 *
 * sync=N (default 1) does the handshake only every Nth iteration, and
 * then, as litmus7 does, every iteration of a batch uses locations of its
 * own (x[k], y[k]), since the sides no longer agree on when one iteration
 * ends. Under pooled memory a handshake is a round trip between nodes
 * (the handshake words change hands), so sync=1 pays several page
 * transfers per iteration; sync=64 runs a million iterations across nodes
 * in minutes instead of days. The price is that fewer iterations race
 * closely; how many did shows in the outcomes only a race produces: mp's
 * 01 (P1's reads fell between P0's stores) and sb's 11 (both stores came
 * before both reads).
 *
 * layout=split (default) puts x and y in different 4 KiB pages (the case
 * where pooled memory can move them independently); layout=same puts them
 * in one page, 64 bytes apart. inject=N is a test hook: every Nth
 * iteration runs a deliberately broken sequence (the reads complete before
 * the stores they race with, forced by an extra handshake), which yields
 * the forbidden outcome of mp and sbfence exactly iters/N times, so tests
 * can check the counting and the failure exit without broken hardware.
 *
 * Output, one line per test, then "litmus ok" (exit 0) or "litmus FAIL"
 * (exit 1) when mp or sbfence saw a forbidden outcome; outcomes are printed
 * as r1r2 with 1 = the read returned this iteration's store:
 *   litmus: mp iters=N forbidden=F outcomes 00=A 01=B 10=C 11=D
 *   litmus: sb iters=N reordered=R (allowed on x86-TSO) outcomes 00=A ...
 *   litmus: sbfence iters=N forbidden=F outcomes 00=A ...
 */
#include "guestos.h"

#define LITMUS_BATCH 4096 /* iterations between tallies */

static const char litmus_usage[] =
    "litmus [test=mp|sb|sbfence|all] [iters=N] [seed=N] [layout=split|same] "
    "[sync=N] [inject=N]";

/* A page each for x and y (layout=split) and for each vCPU's handshake words. */
struct litmus_page {
	volatile uint64_t w[GUESTOS_PAGE_SIZE / 8];
} __attribute__((aligned(4096)));

static struct litmus_page page_x, page_y;

/*
 * sync=N > 1: x[k] and y[k] of a batch. split: x[] fills the first half,
 * y[] the second (8 pages each); same: x[k], y[k] adjacent, in one page.
 */
#define ARRAY_PAGES (2 * LITMUS_BATCH * 8 / GUESTOS_PAGE_SIZE)
static struct litmus_page array[ARRAY_PAGES];

/*
 * vCPU cpu's handshake words go and inj, in a page only it writes: with
 * page-granular coherence (pooled memory) a shared page would bounce on
 * every handshake even when the other side has nothing new to read.
 */
static struct litmus_page page_sync[2];

#define GO(cpu)	 (&page_sync[cpu].w[0])
#define INJ(cpu) (&page_sync[cpu].w[8])

/* Each vCPU's outcome bits of the current batch, in its own pages. */
static uint8_t outcome[2][LITMUS_BATCH] __attribute__((aligned(4096)));

/* What one side of a test does in iteration v; returns its read bits (r1 << 1 | r2). */
typedef unsigned (*litmus_side)(volatile uint64_t *x, volatile uint64_t *y, uint64_t v);

struct litmus_test {
	const char *name;
	litmus_side side[2];
	litmus_side broken[2]; /* inject=: a sequence that ends in `bad` every time */
	unsigned bad;	       /* the outcome (r1r2) that x86-TSO forbids, or sb counts */
	bool judged;	       /* bad is forbidden (mp, sbfence), not only counted (sb) */
};

/* Written by vCPU 0 in parse() and between barriers; read by both sides. */
static struct {
	unsigned mask; /* tests to run: bit i = tests[i] */
	uint64_t iters;
	uint64_t seed;
	uint64_t inject; /* 0: none */
	bool same_page;
	uint64_t sync; /* handshake every sync iterations */
	bool array;    /* sync > 1: iteration k of a batch uses x[k], y[k] */
	volatile uint64_t *x, *y;
} cfg;

static uint64_t counts[4]; /* vCPU 0: outcomes of the running test */

/*
 * No pause in this spin: the other side is at most a handshake away, and
 * pause makes the two sides leave the handshake far apart (QEMU's TCG
 * leaves its translated code for every pause; KVM exits after a pause loop).
 */
static inline void wait_at_least(volatile uint64_t *w, uint64_t v)
{
	while (__atomic_load_n(w, __ATOMIC_ACQUIRE) < v)
		__asm__ volatile("" ::: "memory");
}

/* ---- the tests: plain movs in inline asm, so neither gcc nor we reorder -- */

static unsigned mp_p0(volatile uint64_t *x, volatile uint64_t *y, uint64_t v)
{
	__asm__ volatile("movq %[v], %[x]\n\t"
			 "movq %[v], %[y]"
			 : [x] "=m"(*x), [y] "=m"(*y)
			 : [v] "r"(v)
			 : "memory");
	return 0;
}

static unsigned mp_p1(volatile uint64_t *x, volatile uint64_t *y, uint64_t v)
{
	uint64_t r1, r2;

	__asm__ volatile("movq %[y], %[r1]\n\t"
			 "movq %[x], %[r2]"
			 : [r1] "=&r"(r1), [r2] "=&r"(r2)
			 : [x] "m"(*x), [y] "m"(*y)
			 : "memory");
	return (r1 == v) << 1 | (r2 == v);
}

static unsigned sb_p0(volatile uint64_t *x, volatile uint64_t *y, uint64_t v)
{
	uint64_t r1;

	__asm__ volatile("movq %[v], %[x]\n\t"
			 "movq %[y], %[r1]"
			 : [r1] "=&r"(r1), [x] "=m"(*x)
			 : [v] "r"(v), [y] "m"(*y)
			 : "memory");
	return (r1 == v) << 1;
}

static unsigned sb_p1(volatile uint64_t *x, volatile uint64_t *y, uint64_t v)
{
	uint64_t r2;

	__asm__ volatile("movq %[v], %[y]\n\t"
			 "movq %[x], %[r2]"
			 : [r2] "=&r"(r2), [y] "=m"(*y)
			 : [v] "r"(v), [x] "m"(*x)
			 : "memory");
	return r2 == v;
}

static unsigned sbfence_p0(volatile uint64_t *x, volatile uint64_t *y, uint64_t v)
{
	uint64_t r1;

	__asm__ volatile("movq %[v], %[x]\n\t"
			 "mfence\n\t"
			 "movq %[y], %[r1]"
			 : [r1] "=&r"(r1), [x] "=m"(*x)
			 : [v] "r"(v), [y] "m"(*y)
			 : "memory");
	return (r1 == v) << 1;
}

static unsigned sbfence_p1(volatile uint64_t *x, volatile uint64_t *y, uint64_t v)
{
	uint64_t r2;

	__asm__ volatile("movq %[v], %[y]\n\t"
			 "mfence\n\t"
			 "movq %[x], %[r2]"
			 : [r2] "=&r"(r2), [y] "=m"(*y)
			 : [v] "r"(v), [x] "m"(*x)
			 : "memory");
	return r2 == v;
}

/*
 * inject=: mp's P0 stores y, then waits until P1 has read both before it
 * stores x, so P1 sees the new y and the old x (outcome 10).
 */
static unsigned mp_broken_p0(volatile uint64_t *x, volatile uint64_t *y, uint64_t v)
{
	*y = v;
	wait_at_least(INJ(1), v);
	*x = v;
	return 0;
}

static unsigned mp_broken_p1(volatile uint64_t *x, volatile uint64_t *y, uint64_t v)
{
	unsigned bits;

	wait_at_least(y, v);
	bits = mp_p1(x, y, v);
	__atomic_store_n(INJ(1), v, __ATOMIC_RELEASE);
	return bits;
}

/* inject=: sb's sides each read before they store, in lock step (outcome 00). */
static unsigned sb_broken_p0(volatile uint64_t *x, volatile uint64_t *y, uint64_t v)
{
	uint64_t r1 = *y;

	__atomic_store_n(INJ(0), v, __ATOMIC_RELEASE);
	wait_at_least(INJ(1), v);
	*x = v;
	return (r1 == v) << 1;
}

static unsigned sb_broken_p1(volatile uint64_t *x, volatile uint64_t *y, uint64_t v)
{
	uint64_t r2 = *x;

	__atomic_store_n(INJ(1), v, __ATOMIC_RELEASE);
	wait_at_least(INJ(0), v);
	*y = v;
	return r2 == v;
}

static const struct litmus_test tests[] = {
    {
	.name = "mp",
	.side = {mp_p0, mp_p1},
	.broken = {mp_broken_p0, mp_broken_p1},
	.bad = 2, /* r1=1 r2=0 */
	.judged = true,
    },
    {
	.name = "sb",
	.side = {sb_p0, sb_p1},
	.broken = {sb_broken_p0, sb_broken_p1},
	.bad = 0,
	.judged = false,
    },
    {
	.name = "sbfence",
	.side = {sbfence_p0, sbfence_p1},
	.broken = {sb_broken_p0, sb_broken_p1},
	.bad = 0,
	.judged = true,
    },
};

#define NR_TESTS (sizeof(tests) / sizeof(tests[0]))

/* splitmix64's output function (as memtest): jitter derived from (seed, v, cpu). */
static inline uint64_t mix64(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ULL;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Where iteration k of a batch keeps x and y under sync=N > 1. */
static volatile uint64_t *array_word(unsigned k, bool is_y)
{
	volatile uint64_t *w = &array[0].w[0];

	if (cfg.same_page)
		return &w[2 * k + is_y];
	return &w[k + (is_y ? LITMUS_BATCH : 0)];
}

/* Iterations [first, first + n) on one side (cpu 0 or 1). */
static void batch_run(const struct litmus_test *t, unsigned cpu, uint64_t first, unsigned n)
{
	volatile uint64_t *x = cfg.x, *y = cfg.y, *mine = GO(cpu), *other = GO(cpu ^ 1);
	uint64_t key = mix64(cfg.seed ^ mix64(cpu + 1));
	uint8_t *out = outcome[cpu];

	for (unsigned k = 0; k < n; k++) {
		uint64_t v = first + k;
		bool broken = cfg.inject && v % cfg.inject == 0;

		if (cfg.array) {
			x = array_word(k, false);
			y = array_word(k, true);
		}
		if (v % cfg.sync == 0 || cfg.sync == 1) {
			/* handshake: a plain store, then wait (see the top of the file) */
			__atomic_store_n(mine, v, __ATOMIC_RELEASE);
			wait_at_least(other, v);
		}
		for (unsigned d = mix64(key ^ v) & 15; d; d--)
			__asm__ volatile("" ::: "memory");
		out[k] = (uint8_t)(broken ? t->broken[cpu] : t->side[cpu])(x, y, v);
	}
}

static void tally(unsigned n)
{
	for (unsigned k = 0; k < n; k++)
		counts[(outcome[0][k] | outcome[1][k]) & 3]++;
}

/* Runs one test on every vCPU; vCPU 0 returns whether it passed. */
static bool test_run(const struct litmus_test *t, unsigned cpu)
{
	char verdict[64];
	uint64_t bad;

	if (cpu == 0) {
		/* x, y, go, inj back to 0 so iteration 1 starts from the initial state */
		*cfg.x = 0;
		*cfg.y = 0;
		memset((void *)array, 0, sizeof(array));
		for (unsigned c = 0; c < 2; c++)
			*GO(c) = *INJ(c) = 0;
		memset(counts, 0, sizeof(counts));
	}
	smp_barrier();
	for (uint64_t first = 1; first <= cfg.iters; first += LITMUS_BATCH) {
		uint64_t left = cfg.iters - first + 1;
		unsigned n = left < LITMUS_BATCH ? (unsigned)left : LITMUS_BATCH;

		if (cpu < 2)
			batch_run(t, cpu, first, n);
		smp_barrier();
		if (cpu == 0)
			tally(n);
		smp_barrier(); /* outcome[] is free again */
	}
	if (cpu != 0)
		return true;
	bad = counts[t->bad];
	if (t->judged)
		snprintf(verdict, sizeof(verdict), "forbidden=%lu", bad);
	else
		snprintf(verdict, sizeof(verdict), "reordered=%lu (allowed on x86-TSO)", bad);
	printk("litmus: %s iters=%lu %s outcomes 00=%lu 01=%lu 10=%lu 11=%lu\n", t->name, cfg.iters,
	       verdict, counts[0], counts[1], counts[2], counts[3]);
	return !t->judged || bad == 0;
}

static enum guestos_exit litmus_run(unsigned cpu, unsigned nr)
{
	bool ok = true;

	if (cpu == 0)
		printk("litmus: vCPUs 0 and 1 of %u, x at 0x%lx y at 0x%lx (%s), sync=%lu, seed "
		       "%lu%s\n",
		       nr, (uint64_t)(uintptr_t)(cfg.array ? array_word(0, false) : cfg.x),
		       (uint64_t)(uintptr_t)(cfg.array ? array_word(0, true) : cfg.y),
		       cfg.same_page ? "same page" : "different pages",
		       cfg.sync, cfg.seed,
		       cfg.inject ? ", injecting broken iterations" : "");
	for (unsigned i = 0; i < NR_TESTS; i++)
		if (cfg.mask & (1u << i))
			ok &= test_run(&tests[i], cpu);
	if (cpu == 0)
		printk(ok ? "litmus ok\n" : "litmus FAIL: forbidden outcomes observed\n");
	smp_barrier();
	return ok ? GUESTOS_EXIT_OK : GUESTOS_EXIT_WORKLOAD;
}

static int bad_arg(const char *arg)
{
	printk("litmus: bad argument '%s' (usage: %s)\n", arg, litmus_usage);
	return -1;
}

static int test_mask(const char *v)
{
	if (strcmp(v, "all") == 0)
		return (1 << NR_TESTS) - 1;
	for (unsigned i = 0; i < NR_TESTS; i++)
		if (strcmp(v, tests[i].name) == 0)
			return 1 << i;
	return -1;
}

static int litmus_parse(const struct cmdline *cl)
{
	unsigned nr = smp_nr_vcpus(cl);
	int mask;

	cfg.mask = (1u << NR_TESTS) - 1;
	cfg.iters = 1000000;
	cfg.seed = 1;
	cfg.inject = 0;
	cfg.same_page = false;
	cfg.sync = 1;
	for (unsigned i = 1; i < cl->argc; i++) {
		const char *a = cl->argv[i], *v;

		if ((v = cmdline_value(a, "test"))) {
			if ((mask = test_mask(v)) < 0)
				return bad_arg(a);
			cfg.mask = (unsigned)mask;
		} else if ((v = cmdline_value(a, "iters"))) {
			if (parse_u64(v, &cfg.iters) < 0 || cfg.iters == 0 ||
			    cfg.iters > (1ULL << 62))
				return bad_arg(a);
		} else if ((v = cmdline_value(a, "seed"))) {
			if (parse_u64(v, &cfg.seed) < 0)
				return bad_arg(a);
		} else if ((v = cmdline_value(a, "inject"))) {
			if (parse_u64(v, &cfg.inject) < 0 || cfg.inject == 0)
				return bad_arg(a);
		} else if ((v = cmdline_value(a, "layout"))) {
			if (strcmp(v, "split") == 0)
				cfg.same_page = false;
			else if (strcmp(v, "same") == 0)
				cfg.same_page = true;
			else
				return bad_arg(a);
		} else if ((v = cmdline_value(a, "sync"))) {
			if (parse_u64(v, &cfg.sync) < 0 || cfg.sync == 0 ||
			    cfg.sync > LITMUS_BATCH)
				return bad_arg(a);
		} else {
			return bad_arg(a);
		}
	}
	if (nr < 2) {
		printk("litmus: needs at least 2 vCPUs, has %u (hk.vcpus=N, or guestos.sipi=N "
		       "under QEMU)\n",
		       nr);
		return -1;
	}
	cfg.array = cfg.sync > 1;
	cfg.x = &page_x.w[0];
	cfg.y = cfg.same_page ? &page_x.w[8] : &page_y.w[0];
	return 0;
}

const struct workload workload_litmus = {
    .name = "litmus",
    .usage = litmus_usage,
    .parse = litmus_parse,
    .run = litmus_run,
};
