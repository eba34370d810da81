/*
 * psort [n=COUNT] [seed=N] [chunk=COUNT] [corrupt=I]
 *
 * A parallel merge sort whose vCPUs share real data: one spinlock-protected
 * work queue hands out tasks to whichever vCPU asks first, and the array
 * pages one vCPU wrote are read by others in the next phase. Under
 * hyperkernel's pooled memory that makes the lock's cache line and the
 * array's pages move between nodes, unlike memtest's private shares.
 *
 * Phases, each a queue of tasks between two barriers:
 *   1. chunks: task c generates keys [c * chunk, (c + 1) * chunk) from
 *      (index, seed) and sorts them (insertion-sorted runs, then merges);
 *   2. merge passes: runs of width w, 2w, ... are merged pairwise into the
 *      other buffer. Task s writes output [s * chunk, (s + 1) * chunk) of
 *      its pair's merge, finding where its inputs start by a binary search
 *      along the merge path, so every pass is as parallel as the first;
 *   3. verify: task s checks that its segment is sorted (and follows the
 *      one before it) and sums it.
 * Keys are in [0, n), so there are ties; the merge is stable. The sorted
 * array is unique, hence its checksum depends on (n, seed) only, not on
 * the vCPU count, the chunk size or which vCPU took which task.
 * A second, order-free sum of the keys taken at generation and at
 * verification catches keys lost or duplicated.
 *
 * The keys and a scratch buffer of the same size (2 * 8 * n bytes) live in
 * RAM at the lowest 2 MiB boundary >= 64 MiB. corrupt=I flips a bit of key
 * I after sorting: the failure path for tests.
 *
 * Output: a description line, timing lines, then
 *   psort checksum 0x<16 hex digits>
 *   psort ok                     (exit 0) or "psort FAIL: ..." (exit 1)
 */
#include "guestos.h"

#define INSERTION_RUN 16
#define MAX_CHUNK     (1ULL << 24)
#define MAX_KEYS      (1ULL << 32)

static const char psort_usage[] = "psort [n=COUNT] [seed=N] [chunk=COUNT] [corrupt=I]";

/* Written by vCPU 0 in parse(); read-only once the workload is published. */
static struct {
	uint64_t n;
	uint64_t seed;
	uint64_t chunk;
	uint64_t corrupt; /* index + 1 of the key to damage; 0: none */
	uint64_t *buf[2]; /* keys, scratch */
} cfg;

/*
 * The shared work queue and the totals the tasks report, all behind one
 * test-and-test-and-set spinlock (xchg): the point is vCPUs contending
 * for the same line, so no per-vCPU sharding.
 */
static struct {
	uint32_t lock;
	uint64_t head;	 /* next task to hand out */
	uint64_t ntasks; /* tasks of the current phase */
	void (*fn)(uint64_t task);
	uint64_t in_sum;    /* order-free sum of generated keys */
	uint64_t out_sum;   /* the same over the sorted array */
	uint64_t csum;	    /* position-dependent checksum of the sorted array */
	uint64_t first_bad; /* lowest index i with a[i - 1] > a[i]; n: none */
} queue __attribute__((aligned(4096)));

/* Tasks each vCPU took over the whole run (its own line: no sharing). */
static struct {
	uint64_t n;
} CACHELINE_ALIGNED taken[GUESTOS_MAX_VCPUS];

/* Where merge pass input and output are; vCPU 0 sets them between barriers. */
static struct {
	const uint64_t *src;
	uint64_t *dst;
	uint64_t width; /* of the runs being merged */
} pass;

static inline void spin_lock(uint32_t *l)
{
	while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE))
		while (__atomic_load_n(l, __ATOMIC_RELAXED))
			cpu_relax();
}

static inline void spin_unlock(uint32_t *l)
{
	__atomic_store_n(l, 0, __ATOMIC_RELEASE);
}

static bool queue_take(uint64_t *task)
{
	bool got;

	spin_lock(&queue.lock);
	got = queue.head < queue.ntasks;
	if (got)
		*task = queue.head++;
	spin_unlock(&queue.lock);
	return got;
}

/* splitmix64's output function, as memtest. */
static inline uint64_t mix64(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ULL;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static inline uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* Stable merge of a[0..na) and b[0..nb) into out; a wins ties. */
static void merge(const uint64_t *a, uint64_t na, const uint64_t *b, uint64_t nb, uint64_t *out,
		  uint64_t nout)
{
	uint64_t i = 0, j = 0;

	for (uint64_t k = 0; k < nout; k++)
		out[k] = (j >= nb || (i < na && a[i] <= b[j])) ? a[i++] : b[j++];
}

/* ---- phase 1: generate and sort one chunk ------------------------------ */

static void chunk_task(uint64_t c)
{
	uint64_t lo = c * cfg.chunk, len = min_u64(cfg.chunk, cfg.n - lo), sum = 0;
	uint64_t *a = cfg.buf[0] + lo, *t = cfg.buf[1] + lo, *swap, key = mix64(cfg.seed);

	for (uint64_t i = 0; i < len; i++) {
		a[i] = mix64(key ^ (lo + i)) % cfg.n;
		sum += mix64(a[i]);
	}
	for (uint64_t r = 0; r < len; r += INSERTION_RUN) {
		uint64_t end = min_u64(r + INSERTION_RUN, len);

		for (uint64_t i = r + 1; i < end; i++) {
			uint64_t v = a[i], j = i;

			for (; j > r && a[j - 1] > v; j--)
				a[j] = a[j - 1];
			a[j] = v;
		}
	}
	for (uint64_t w = INSERTION_RUN; w < len; w *= 2) {
		for (uint64_t r = 0; r < len; r += 2 * w) {
			uint64_t na = min_u64(w, len - r), nb = min_u64(w, len - r - na);

			merge(a + r, na, a + r + na, nb, t + r, na + nb);
		}
		swap = a;
		a = t;
		t = swap;
	}
	if (a != cfg.buf[0] + lo)
		memcpy(t, a, len * 8);

	spin_lock(&queue.lock);
	queue.in_sum += sum;
	spin_unlock(&queue.lock);
}

/* ---- phase 2: one output segment of one pairwise merge ------------------ */

/*
 * How many of a's elements are among the first k outputs of the stable
 * merge of a and b: the largest i with a[i - 1] <= b[k - i] (monotone in i).
 */
static uint64_t merge_path(const uint64_t *a, uint64_t na, const uint64_t *b, uint64_t nb,
			   uint64_t k)
{
	uint64_t lo = k > nb ? k - nb : 0, hi = min_u64(k, na);

	while (lo < hi) {
		uint64_t mid = lo + (hi - lo + 1) / 2;

		if (a[mid - 1] <= b[k - mid])
			lo = mid;
		else
			hi = mid - 1;
	}
	return lo;
}

static void merge_task(uint64_t s)
{
	uint64_t out_lo = s * cfg.chunk, out_hi = min_u64(out_lo + cfg.chunk, cfg.n);
	uint64_t m = out_lo / (2 * pass.width) * (2 * pass.width);
	uint64_t na = min_u64(pass.width, cfg.n - m), nb = min_u64(pass.width, cfg.n - m - na);
	const uint64_t *a = pass.src + m, *b = a + na;
	uint64_t k = out_lo - m, i = merge_path(a, na, b, nb, k);

	merge(a + i, na - i, b + (k - i), nb - (k - i), pass.dst + out_lo, out_hi - out_lo);
}

/* ---- phase 3: verify one segment of the result -------------------------- */

static void verify_task(uint64_t s)
{
	uint64_t lo = s * cfg.chunk, hi = min_u64(lo + cfg.chunk, cfg.n), bad = cfg.n;
	uint64_t sum = 0, csum = 0;
	const uint64_t *a = pass.src;

	for (uint64_t i = lo; i < hi; i++) {
		if (i > 0 && a[i - 1] > a[i] && bad == cfg.n)
			bad = i;
		sum += mix64(a[i]);
		csum += mix64(a[i] ^ mix64(i));
	}
	spin_lock(&queue.lock);
	queue.out_sum += sum;
	queue.csum += csum;
	if (bad < queue.first_bad)
		queue.first_bad = bad;
	spin_unlock(&queue.lock);
}

/* Every vCPU takes tasks of fn until the queue is empty; vCPU 0 times it. */
static uint64_t phase_run(unsigned cpu, void (*fn)(uint64_t), uint64_t ntasks)
{
	uint64_t task, t0 = 0;

	if (cpu == 0) {
		queue.head = 0;
		queue.ntasks = ntasks;
		queue.fn = fn;
		t0 = rdtsc();
	}
	smp_barrier();
	while (queue_take(&task)) {
		queue.fn(task);
		taken[cpu].n++;
	}
	smp_barrier();
	return rdtsc() - t0;
}

static void report(unsigned nr, uint64_t nchunks, unsigned passes, uint64_t t_sort,
		   uint64_t t_merge)
{
	uint64_t lo = UINT64_MAX, hi = 0, total = 0;

	for (unsigned c = 0; c < nr; c++) {
		lo = min_u64(lo, taken[c].n);
		hi = taken[c].n > hi ? taken[c].n : hi;
		total += taken[c].n;
	}
	printk("psort: sorted %lu chunk%s in %lu tsc cycles, %u merge pass%s in %lu\n", nchunks,
	       nchunks == 1 ? "" : "s", t_sort, passes, passes == 1 ? "" : "es", t_merge);
	printk("psort: %lu tasks, per vCPU min %lu max %lu\n", total, lo, hi);
}

static enum guestos_exit psort_run(unsigned cpu, unsigned nr)
{
	uint64_t nseg = (cfg.n + cfg.chunk - 1) / cfg.chunk, t_sort, t_merge = 0;
	unsigned passes = 0, cur = 0;

	if (cpu == 0) {
		printk("psort: %lu keys (%lu KiB) at 0x%lx, chunk %lu, seed %lu on %u vCPU%s\n",
		       cfg.n, cfg.n * 8 >> 10, (uint64_t)(uintptr_t)cfg.buf[0], cfg.chunk, cfg.seed,
		       nr, nr == 1 ? "" : "s");
		queue.in_sum = queue.out_sum = queue.csum = 0;
		queue.first_bad = cfg.n;
	}
	t_sort = phase_run(cpu, chunk_task, nseg);
	for (uint64_t w = cfg.chunk; w < cfg.n; w *= 2, passes++) {
		if (cpu == 0) {
			pass.src = cfg.buf[cur];
			pass.dst = cfg.buf[cur ^ 1];
			pass.width = w;
		}
		t_merge += phase_run(cpu, merge_task, nseg);
		cur ^= 1;
	}
	if (cpu == 0) {
		pass.src = cfg.buf[cur];
		if (cfg.corrupt)
			cfg.buf[cur][cfg.corrupt - 1] ^= 1;
	}
	phase_run(cpu, verify_task, nseg);
	if (cpu != 0)
		return GUESTOS_EXIT_OK;

	report(nr, nseg, passes, t_sort, t_merge);
	printk("psort checksum 0x%016lx\n", queue.csum);
	if (queue.first_bad < cfg.n) {
		printk("psort FAIL: not sorted at index %lu (0x%lx > 0x%lx)\n", queue.first_bad,
		       pass.src[queue.first_bad - 1], pass.src[queue.first_bad]);
		return GUESTOS_EXIT_WORKLOAD;
	}
	if (queue.in_sum != queue.out_sum) {
		printk("psort FAIL: keys lost or duplicated (sum 0x%016lx generated, 0x%016lx "
		       "sorted)\n",
		       queue.in_sum, queue.out_sum);
		return GUESTOS_EXIT_WORKLOAD;
	}
	printk("psort ok\n");
	return GUESTOS_EXIT_OK;
}

static int bad_arg(const char *arg)
{
	printk("psort: bad argument '%s' (usage: %s)\n", arg, psort_usage);
	return -1;
}

static int psort_parse(const struct cmdline *cl)
{
	const char *corrupt_arg = NULL;

	cfg.n = 1ULL << 20;
	cfg.seed = 1;
	cfg.chunk = 1ULL << 14;
	cfg.corrupt = 0;
	for (unsigned i = 1; i < cl->argc; i++) {
		const char *a = cl->argv[i], *v;

		if ((v = cmdline_value(a, "n"))) {
			if (parse_size(v, &cfg.n) < 0 || cfg.n == 0 || cfg.n > MAX_KEYS)
				return bad_arg(a);
		} else if ((v = cmdline_value(a, "seed"))) {
			if (parse_u64(v, &cfg.seed) < 0)
				return bad_arg(a);
		} else if ((v = cmdline_value(a, "chunk"))) {
			if (parse_size(v, &cfg.chunk) < 0 || cfg.chunk < INSERTION_RUN ||
			    cfg.chunk > MAX_CHUNK)
				return bad_arg(a);
		} else if ((v = cmdline_value(a, "corrupt"))) {
			if (parse_u64(v, &cfg.corrupt) < 0 || cfg.corrupt == UINT64_MAX)
				return bad_arg(a);
			cfg.corrupt++;
			corrupt_arg = a;
		} else {
			return bad_arg(a);
		}
	}
	if (cfg.corrupt > cfg.n) {
		printk("psort: %s is beyond the %lu keys\n", corrupt_arg, cfg.n);
		return -1;
	}
	cfg.buf[0] = blk_ram_place(2 * 8 * cfg.n);
	if (!cfg.buf[0]) {
		printk("psort: n=%lu needs %lu MiB of contiguous RAM above 64 MiB\n", cfg.n,
		       (2 * 8 * cfg.n + (1 << 20) - 1) >> 20);
		return -1;
	}
	cfg.buf[1] = cfg.buf[0] + cfg.n;
	return 0;
}

const struct workload workload_psort = {
    .name = "psort",
    .usage = psort_usage,
    .parse = psort_parse,
    .run = psort_run,
};
