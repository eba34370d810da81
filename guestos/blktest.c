/*
 * Disk test workloads, ring 3, on the virtio-blk driver (virtio_blk.c):
 *
 * blkstress [disk=N] [ops=N] [seed=S] [pages=P] [blocks=B] [trace=OP]
 *
 *   A randomized end-to-end check of everything between a guest page and a
 *   disk block, aimed at the host's storage-replica table (a page the host
 *   believes equals a block serves later reads of that block). The guest
 *   keeps a model, per 512-byte sector, of what each of B disk blocks
 *   (disk bytes 0 .. B * 4 KiB) and each of P guest pages (one 4 KiB-aligned
 *   area) holds: every sector's content is generated from a tag (seed,
 *   block it was made for, version) and may carry one modified byte. Random
 *   seeded operations:
 *     fill       fresh patterns into 1-4 pages (guest writes);
 *     write      pages -> blocks (OUT); the model's blocks take the pages';
 *     read       blocks -> pages (IN), then EVERY sector read is compared
 *                with the model; a host that served a stale replica shows
 *                up as "blkstress: stale data in block B: got version X
 *                want Y" and exit value 1;
 *     reread     blocks a page was just read from or written to, into the
 *                same pages (where a host that kept a stale entry would
 *                answer "already there"), into other pages, or other
 *                blocks into those pages;
 *     modify     one byte of a page just read or written (the host must
 *                drop its entry on the guest's write);
 *     double     the same blocks into two page ranges, both in flight;
 *     helper     (2+ vCPUs, first quarter of the ops) vCPU 1 modifies
 *                bytes of such pages while vCPU 0 reads their blocks
 *                elsewhere, racing the host's write-protect fault against
 *                its replica lookups; then vCPU 1 parks (a spinning vCPU
 *                halves the speed of a one-CPU nested VM);
 *     flush      now and then.
 *   Shapes: one page <-> one block, 2-16 contiguous pages <-> contiguous
 *   blocks, 2-4 scattered page runs <-> contiguous blocks, and sector-
 *   granular transfers (512, 1536 bytes, ..., at odd sectors of the disk
 *   and/or of memory, possibly crossing a block or page boundary, or on the
 *   grid with a length that is not, scattered too), which must never
 *   become replicas. Requests are batched: several in flight, one notify;
 *   two requests in flight never touch the same sector of the disk or of
 *   memory unless both only read it, so every outcome is determined. The
 *   end reads all B blocks back and checks them.
 *
 *   With one vCPU a seed always gives the same sequence of operations:
 *   trace=OP prints every request, fill and byte write from op OP on (and
 *   each completion), to find what a failure at a later op came from.
 *   With the helper, the sequence depends on its timing.
 *
 * blkbad [disk=N]
 *
 *   Malformed requests a guest could send; each must complete with
 *   VIRTIO_BLK_S_IOERR (or UNSUPP for an unknown type), the device must
 *   answer a normal read afterwards, and known blocks on the disk must be
 *   unchanged (and buffers of refused reads untouched). One line per case.
 *   A device that goes to NEEDS_RESET instead of answering is a failure;
 *   blkbad resets it (status 0, then the usual set-up) and goes on.
 *
 * Both exit with value 0 when every check passed, 1 otherwise, 2 for a bad
 * command line.
 */
#include "guestos.h"

#define SECT	 512u
#define PAGE	 4096u
#define SPP	 8u /* sectors per page (and per block) */
#define MIN_BASE (64ULL << 20)
#define ALIGN_2M (2ULL << 20)

/* ---- shared helpers (blktest.c, blkbench.c) ----------------------------- */

uint64_t blk_mix64(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ULL;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

void blk_target_init(struct blk_target *t, const struct cmdline *cl)
{
	t->disk = 0;
	t->nr_windows = cl->nr_virtio;
	for (unsigned i = 0; i < cl->nr_virtio; i++)
		t->windows[i] = cl->virtio[i];
}

struct vblk *blk_target_open(const struct blk_target *t, const char *who)
{
	const struct vblk_info *in;
	struct vblk *d;

	if (t->nr_windows == 0) {
		printk("%s: no disk: the command line has no virtio_mmio.device=\n", who);
		return NULL;
	}
	d = vblk_open(t->windows, t->nr_windows, (unsigned)t->disk);
	if (!d)
		return NULL;
	in = vblk_info(d);
	printk("%s: disk %lu: virtio-blk at 0x%lx, %lu KiB, block %u, %u requests of up to %u "
	       "KiB%s\n",
	       who, t->disk, in->base, in->capacity >> 10, in->blk_size, in->slots,
	       in->max_request >> 10, in->flush ? ", flush" : "");
	return d;
}

void *blk_ram_place(uint64_t bytes)
{
	const struct bootinfo *bi = &guestos_bootinfo;

	for (unsigned i = 0; i < bi->nr_usable; i++) {
		uint64_t lo = bi->usable[i].base, end = lo + bi->usable[i].len;
		uint64_t b = ((lo > MIN_BASE ? lo : MIN_BASE) + ALIGN_2M - 1) & ~(ALIGN_2M - 1);

		if (b < end && end - b >= bytes)
			return (void *)(uintptr_t)b;
	}
	return NULL;
}

static int bad_arg(const char *who, const char *usage, const char *arg)
{
	printk("%s: bad argument '%s' (usage: %s)\n", who, arg, usage);
	return -1;
}

/* ======================================================================== */
/* blkstress                                                                 */
/* ======================================================================== */

static const char stress_usage[] =
    "blkstress [disk=N] [ops=N] [seed=S] [pages=P] [blocks=B] [trace=OP]";

#define MAXSEG	     4
#define MAX_MULTI    16 /* pages of a contiguous request */
#define MAX_PAGES    4096
#define MAX_BLOCKS   (1u << 20)
#define RECENT	     16
#define WORD1_MAGIC  0x5354524553530000ULL /* "STRESS" in the top bytes */
#define HELPER_PAGES 3

/* One 512-byte sector's content: generated from tag and sub, one byte maybe changed. */
struct sdesc {
	uint64_t tag;	/* 0: unknown */
	uint16_t mod;	/* 0, or 1 + offset of the one modified byte */
	uint8_t modval; /* its value */
	uint8_t sub;	/* sector of the page the pattern was made for */
	uint32_t pad;
};

enum shape { SH_PAGE, SH_MULTI, SH_SCATTER, SH_PARTIAL, SH_MIXED, SH_FINAL };

/* A request in flight; indexed by its cookie. */
struct sreq {
	bool busy;
	uint8_t type; /* VBLK_T_IN, VBLK_T_OUT, VBLK_T_FLUSH */
	uint8_t shape;
	uint8_t nseg;
	uint64_t ds;	     /* first disk sector */
	uint32_t ms[MAXSEG]; /* first memory sector of each buffer */
	uint32_t k[MAXSEG];  /* its sectors; disk sectors follow on from ds */
	uint64_t op;
};

static struct {
	struct blk_target t;
	uint64_t ops, seed, pages, blocks;
	uint64_t trace; /* print every op from this one on; 0: none */
} scfg;

static struct {
	struct vblk *dev;
	uint8_t *area;		/* pages */
	struct sdesc *msec;	/* pages * 8 */
	struct sdesc *dsec;	/* blocks * 8 */
	uint8_t *mem_r, *mem_w; /* per memory sector: requests in flight reading/writing it */
	uint8_t *disk_r, *disk_w;
	uint32_t nms, nds; /* memory and disk sectors */
	uint64_t rng;
	uint32_t version;
	uint64_t op;
	unsigned pending; /* submitted, not kicked */
	unsigned batch;	  /* kick when pending reaches it */
	unsigned inflight, max_inflight;
	bool failed;
	struct {
		uint32_t p, b, n;
	} recent[RECENT];
	unsigned nrecent, recent_next;
	bool helper;	       /* a second vCPU takes byte writes */
	uint64_t helper_until; /* ops; then vCPU 1 parks (its spinning costs nested VMs dearly) */
	bool helper_busy;
	uint32_t hpage[HELPER_PAGES], hsec[HELPER_PAGES];
	uint16_t hoff[HELPER_PAGES];
	uint8_t hval[HELPER_PAGES];
	unsigned hn;
	struct {
		uint64_t reads, writes, flushes, fills, mods, helper_mods, partial, multi, scatter,
		    rereads, doubles, sectors_checked, waits;
	} n;
} st;

static struct sreq sreqs[VIRTQ_MAX_SIZE];

/* vCPU 0 -> vCPU 1: byte writes to do. */
static struct {
	uint32_t seq;
	uint32_t done;
	uint32_t quit;
	uint32_t gone; /* vCPU 1 left for good */
	uint32_t n;
	uint32_t delay;
	uint64_t addr[HELPER_PAGES];
	uint8_t val[HELPER_PAGES];
} mbox CACHELINE_ALIGNED;

static uint64_t rnd(void)
{
	st.rng ^= st.rng >> 12;
	st.rng ^= st.rng << 25;
	st.rng ^= st.rng >> 27;
	return st.rng * 0x2545f4914f6cdd1dULL;
}

static uint32_t rnd_below(uint64_t n)
{
	return (uint32_t)(((rnd() >> 32) * n) >> 32);
}

static uint64_t make_tag(uint32_t block)
{
	return ((scfg.seed & 0xff) << 56) | ((uint64_t)(block & 0xffffff) << 32) | ++st.version;
}

static uint64_t sector_word(const struct sdesc *s, unsigned i)
{
	if (i == 0)
		return s->tag;
	if (i == 1)
		return WORD1_MAGIC | s->sub;
	return blk_mix64(s->tag ^ (((uint64_t)s->sub << 8 | i) * 0x9e3779b97f4a7c15ULL));
}

static uint8_t sector_byte(const struct sdesc *s, unsigned off)
{
	if (s->mod && s->mod - 1u == off)
		return s->modval;
	return (uint8_t)(sector_word(s, off / 8) >> (8 * (off % 8)));
}

static uint8_t *msec_addr(uint32_t m)
{
	return st.area + (uint64_t)m * SECT;
}

static void fill_sector(uint32_t m)
{
	const struct sdesc *s = &st.msec[m];
	uint64_t *w = (uint64_t *)msec_addr(m);

	for (unsigned i = 0; i < SECT / 8; i++)
		w[i] = sector_word(s, i);
	if (s->mod)
		msec_addr(m)[s->mod - 1] = s->modval;
}

static uint32_t tag_version(uint64_t tag)
{
	return (uint32_t)tag;
}

static bool tracing(void)
{
	return scfg.trace && st.op >= scfg.trace;
}

/* Checks memory sector m against the model; ds: the disk sector it was read from. */
static bool check_sector(uint32_t m, uint64_t ds, const struct sreq *r)
{
	const struct sdesc *s = &st.msec[m];
	const uint64_t *w = (const uint64_t *)msec_addr(m);
	static const char *const shapes[] = {"page",	"multi-page", "scattered",
					     "partial", "mixed",      "final"};

	st.n.sectors_checked++;
	for (unsigned i = 0; i < SECT / 8; i++) {
		uint64_t want = sector_word(s, i);

		if (s->mod && (s->mod - 1u) / 8 == i) {
			unsigned sh = 8 * ((s->mod - 1u) % 8);

			want = (want & ~(0xffULL << sh)) | ((uint64_t)s->modval << sh);
		}
		if (w[i] == want)
			continue;
		for (unsigned b = 0; b < 8; b++) {
			uint8_t got = (uint8_t)(w[i] >> (8 * b)), exp = (uint8_t)(want >> (8 * b));

			if (got == exp)
				continue;
			printk("blkstress: stale data in block %lu: got version %u want %u\n",
			       ds / SPP, tag_version(w[0]), tag_version(s->tag));
			printk("blkstress: op %lu, %s %s of %u sectors at disk sector %lu: disk "
			       "sector %lu (block %lu + %lu) in page %u + %u, byte %u: got 0x%02x "
			       "want 0x%02x; got tag 0x%016lx sector %d, want tag 0x%016lx sector "
			       "%u%s\n",
			       r->op, shapes[r->shape], r->type == VBLK_T_IN ? "read" : "write",
			       r->k[0], r->ds, ds, ds / SPP, ds % SPP, m / SPP, m % SPP, i * 8 + b,
			       got, exp, w[0],
			       (w[1] & ~0xffULL) == WORD1_MAGIC ? (int)(w[1] & 0xff) : -1, s->tag,
			       s->sub, s->mod ? " with a modified byte" : "");
			return false;
		}
	}
	return true;
}

/* ---- conflicts: which sectors requests in flight (and vCPU 1) use ---------- */

static bool range_busy(const uint8_t *a, const uint8_t *b, uint64_t lo, uint64_t n)
{
	for (uint64_t i = lo; i < lo + n; i++)
		if (a[i] || (b && b[i]))
			return true;
	return false;
}

static bool req_conflicts(const struct sreq *r)
{
	uint64_t d = r->ds;

	if (r->type == VBLK_T_FLUSH)
		return false;
	for (unsigned j = 0; j < r->nseg; j++) {
		if (r->type == VBLK_T_IN) {
			/* The device writes the memory, reads the disk. */
			if (range_busy(st.mem_r, st.mem_w, r->ms[j], r->k[j]) ||
			    range_busy(st.disk_w, NULL, d, r->k[j]))
				return true;
		} else if (range_busy(st.mem_w, NULL, r->ms[j], r->k[j]) ||
			   range_busy(st.disk_r, st.disk_w, d, r->k[j])) {
			return true;
		}
		d += r->k[j];
	}
	return false;
}

static void req_mark(const struct sreq *r, int delta)
{
	uint64_t d = r->ds;

	if (r->type == VBLK_T_FLUSH)
		return;
	for (unsigned j = 0; j < r->nseg; j++) {
		uint8_t *mem = r->type == VBLK_T_IN ? st.mem_w : st.mem_r;
		uint8_t *disk = r->type == VBLK_T_IN ? st.disk_r : st.disk_w;

		for (uint32_t i = 0; i < r->k[j]; i++) {
			mem[r->ms[j] + i] = (uint8_t)(mem[r->ms[j] + i] + delta);
			disk[d + i] = (uint8_t)(disk[d + i] + delta);
		}
		d += r->k[j];
	}
}

/* ---- completions ------------------------------------------------------------ */

static void helper_check(void)
{
	if (!st.helper_busy || __atomic_load_n(&mbox.done, __ATOMIC_ACQUIRE) != mbox.seq)
		return;
	for (unsigned j = 0; j < st.hn; j++) {
		struct sdesc *s = &st.msec[st.hpage[j] * SPP + st.hsec[j]];

		s->mod = (uint16_t)(st.hoff[j] + 1);
		s->modval = st.hval[j];
		for (unsigned i = 0; i < SPP; i++)
			st.mem_w[st.hpage[j] * SPP + i]--;
	}
	st.n.helper_mods += st.hn;
	st.helper_busy = false;
}

static void complete(const struct vblk_done *d)
{
	struct sreq *r = &sreqs[d->cookie];
	uint64_t ds = r->ds;

	st.inflight--;
	r->busy = false;
	req_mark(r, -1);
	if (tracing())
		printk("blkstress: trace done op %lu (disk sector %lu)\n", r->op, r->ds);
	if (d->status != VBLK_S_OK) {
		printk("blkstress: op %lu: %s at disk sector %lu failed: %s (status %u)\n", r->op,
		       r->type == VBLK_T_IN    ? "read"
		       : r->type == VBLK_T_OUT ? "write"
					       : "flush",
		       r->ds, vblk_status_name(d->status), d->status);
		st.failed = true;
		return;
	}
	if (r->type != VBLK_T_IN)
		return;
	for (unsigned j = 0; j < r->nseg && !st.failed; j++) {
		for (uint32_t i = 0; i < r->k[j]; i++)
			if (!check_sector(r->ms[j] + i, ds + i, r)) {
				st.failed = true;
				break;
			}
		ds += r->k[j];
	}
}

static void kick(void)
{
	if (st.pending) {
		vblk_kick(st.dev);
		st.pending = 0;
	}
}

/* Takes completions; with wait, until at least one (or nothing is outstanding). */
static void harvest(bool wait)
{
	struct vblk_done done[32];

	if (wait) {
		kick();
		st.n.waits++;
	}
	for (;;) {
		int n = vblk_poll(st.dev, done, 32);

		if (n < 0) {
			st.failed = true;
			return;
		}
		for (int i = 0; i < n; i++)
			complete(&done[i]);
		helper_check();
		if (n > 0 || !wait || st.failed || (!st.inflight && !st.helper_busy))
			return;
		cpu_relax();
	}
}

/* Waits for something outstanding to finish; a wait for nothing is our bug. */
static void wait_some(const char *what)
{
	if (!st.inflight && !st.helper_busy) {
		printk("blkstress: op %lu: internal error: %s with nothing in flight\n", st.op,
		       what);
		st.failed = true;
		return;
	}
	harvest(true);
}

static void drain(void)
{
	while (!st.failed && (st.inflight || st.helper_busy))
		harvest(true);
}

/* ---- submitting ----------------------------------------------------------- */

static bool aligned_simple(const struct sreq *r)
{
	return r->nseg == 1 && !(r->ds % SPP) && !(r->ms[0] % SPP) && !(r->k[0] % SPP);
}

static void note_recent(uint32_t p, uint32_t b, uint32_t n)
{
	st.recent[st.recent_next] = (typeof(st.recent[0])){p, b, n};
	st.recent_next = (st.recent_next + 1) % RECENT;
	if (st.nrecent < RECENT)
		st.nrecent++;
}

/* Queues r (kicked later); waits first for whatever it conflicts with. */
static void submit(struct sreq *r)
{
	unsigned cookie;
	uint64_t d = r->ds;
	bool raw = r->type != VBLK_T_FLUSH && !aligned_simple(r);
	int ret;

	r->op = st.op;
	while (!st.failed && req_conflicts(r))
		wait_some("a request conflicts");
	while (!st.failed &&
	       (raw ? !vblk_can_submit_raw(st.dev, r->nseg) : !vblk_can_submit(st.dev)))
		wait_some("no room in the queue");
	if (st.failed)
		return;
	for (cookie = 0; sreqs[cookie].busy; cookie++)
		;
	/* The model changes now: nothing in flight can see the difference. */
	for (unsigned j = 0; j < r->nseg; j++) {
		for (uint32_t i = 0; i < r->k[j]; i++) {
			if (r->type == VBLK_T_IN)
				st.msec[r->ms[j] + i] = st.dsec[d + i];
			else if (r->type == VBLK_T_OUT)
				st.dsec[d + i] = st.msec[r->ms[j] + i];
		}
		/* Whole pages <-> whole blocks, also inside a longer buffer. */
		if (r->type != VBLK_T_FLUSH && !(d % SPP) && !(r->ms[j] % SPP) && r->k[j] >= SPP)
			note_recent(r->ms[j] / SPP, (uint32_t)(d / SPP), r->k[j] / SPP);
		d += r->k[j];
	}
	if (r->type == VBLK_T_FLUSH) {
		ret = vblk_submit(st.dev, VBLK_T_FLUSH, 0, NULL, 0, cookie);
	} else if (!raw) {
		ret = vblk_submit(st.dev, r->type, r->ds, msec_addr(r->ms[0]), r->k[0] * SECT,
				  cookie);
	} else {
		struct vblk_seg seg[MAXSEG];

		for (unsigned j = 0; j < r->nseg; j++)
			seg[j] = (struct vblk_seg){(uint64_t)(uintptr_t)msec_addr(r->ms[j]),
						   r->k[j] * SECT, r->type == VBLK_T_IN};
		ret = vblk_submit_raw(st.dev, r->type, r->ds, seg, r->nseg, 0, cookie);
	}
	if (ret < 0) {
		st.failed = true;
		return;
	}
	if (tracing()) {
		printk("blkstress: trace op %lu: %s %s disk sector %lu <->", st.op,
		       r->type == VBLK_T_IN    ? "read"
		       : r->type == VBLK_T_OUT ? "write"
					       : "flush",
		       raw ? "raw" : "", r->ds);
		for (unsigned j = 0; j < r->nseg; j++)
			printk(" mem %u+%u (page %u.%u)", r->ms[j], r->k[j], r->ms[j] / SPP,
			       r->ms[j] % SPP);
		printk("\n");
	}
	sreqs[cookie] = *r;
	sreqs[cookie].busy = true;
	req_mark(r, +1);
	st.pending++;
	if (++st.inflight > st.max_inflight)
		st.max_inflight = st.inflight;
	if (r->type == VBLK_T_IN)
		st.n.reads++;
	else if (r->type == VBLK_T_OUT)
		st.n.writes++;
	else
		st.n.flushes++;
	if (r->shape == SH_PARTIAL || r->shape == SH_MIXED)
		st.n.partial++;
	else if (r->shape == SH_MULTI)
		st.n.multi++;
	else if (r->shape == SH_SCATTER)
		st.n.scatter++;
}

/* Guest writes to memory sectors [m, m + n): wait until no request uses them. */
static void own_memory(uint32_t m, uint32_t n)
{
	while (!st.failed && range_busy(st.mem_r, st.mem_w, m, n))
		wait_some("memory is busy");
}

/* ---- request shapes ---------------------------------------------------------- */

static bool mem_overlaps(const struct sreq *r, unsigned nseg, uint32_t ms, uint32_t k)
{
	for (unsigned j = 0; j < nseg; j++)
		if (ms < r->ms[j] + r->k[j] && r->ms[j] < ms + k)
			return true;
	return false;
}

/* A memory range of k sectors not overlapping r's first nseg buffers. */
static bool pick_mem(struct sreq *r, unsigned nseg, uint32_t k, bool page_aligned)
{
	for (unsigned tries = 0; tries < 32; tries++) {
		uint32_t ms = page_aligned ? rnd_below(st.nms / SPP - k / SPP + 1) * SPP
					   : rnd_below(st.nms - k + 1);

		if (!mem_overlaps(r, nseg, ms, k)) {
			r->ms[nseg] = ms;
			r->k[nseg] = k;
			return true;
		}
	}
	return false;
}

static uint32_t max_multi(void)
{
	uint32_t n = MAX_MULTI;

	if (n > scfg.pages)
		n = (uint32_t)scfg.pages;
	if (n > scfg.blocks)
		n = (uint32_t)scfg.blocks;
	return n;
}

static void shape_pages(struct sreq *r, uint32_t npages)
{
	r->shape = npages == 1 ? SH_PAGE : SH_MULTI;
	r->nseg = 1;
	r->ms[0] = rnd_below(scfg.pages - npages + 1) * SPP;
	r->k[0] = npages * SPP;
	r->ds = (uint64_t)rnd_below(scfg.blocks - npages + 1) * SPP;
}

static void gen_shape(struct sreq *r, uint8_t type)
{
	unsigned x = rnd_below(100);

	*r = (struct sreq){.type = type};
	if (x < 50) {
		shape_pages(r, 1);
	} else if (x < 65 && max_multi() >= 2) {
		shape_pages(r, 2 + rnd_below(max_multi() - 1));
	} else if (x < 77) {
		/* 2-4 runs of 1-4 whole pages, anywhere, to contiguous blocks. */
		unsigned want = 2 + rnd_below(3);
		uint32_t total = 0;

		r->shape = SH_SCATTER;
		for (unsigned j = 0; j < want; j++) {
			uint32_t n = 1 + rnd_below(4);

			if (total + n > scfg.blocks || n > scfg.pages ||
			    !pick_mem(r, j, n * SPP, true))
				break;
			total += n;
			r->nseg++;
		}
		if (r->nseg == 0) {
			shape_pages(r, 1);
			return;
		}
		r->ds = (uint64_t)rnd_below(scfg.blocks - total + 1) * SPP;
	} else if (x < 95) {
		/* One sector-granular transfer that is not whole blocks <-> whole pages. */
		unsigned y = rnd_below(8);
		uint32_t k = y == 0   ? 1
			     : y == 1 ? 3
			     : y == 2 ? 1 + rnd_below(15)
			     : y == 5 ? 2 + rnd_below(6)
				      : SPP;

		r->shape = SH_PARTIAL;
		r->nseg = 1;
		r->k[0] = k;
		if (y == 3 && scfg.blocks > 1) {
			/* a whole page from an odd sector of the disk */
			r->ms[0] = rnd_below(scfg.pages) * SPP;
			r->ds = (uint64_t)rnd_below(scfg.blocks - 1) * SPP + 1 + rnd_below(SPP - 1);
		} else if (y == 4 && scfg.pages > 1) {
			/* a whole block into memory at an odd sector */
			r->ms[0] = rnd_below(scfg.pages - 1) * SPP + 1 + rnd_below(SPP - 1);
			r->ds = (uint64_t)rnd_below(scfg.blocks) * SPP;
		} else if (y >= 6 && scfg.pages > 1 && scfg.blocks > 1) {
			/*
			 * Both on the grid, the length not: a whole page and block
			 * and a bit more (9-15 sectors), or a page's first 1-7.
			 */
			r->k[0] = y == 6 ? SPP + 1 + rnd_below(SPP - 1) : 1 + rnd_below(SPP - 1);
			r->ms[0] = rnd_below(scfg.pages - 1) * SPP;
			r->ds = (uint64_t)rnd_below(scfg.blocks - 1) * SPP;
		} else {
			r->ds = rnd_below(st.nds - k + 1);
			if (!(r->ds % SPP) && !(k % SPP)) { /* keep it off the block grid */
				if (r->ds + k < st.nds)
					r->ds++;
				else
					r->ds--;
			}
			r->ms[0] = rnd_below(2) ? rnd_below(st.nms / SPP) * SPP
						: rnd_below(st.nms - k + 1);
			if (r->ms[0] + k > st.nms)
				r->ms[0] = st.nms - k;
		}
	} else {
		/* 2-4 sector-granular buffers anywhere, to contiguous disk sectors. */
		unsigned want = 2 + rnd_below(3);
		uint32_t total = 0;

		r->shape = SH_MIXED;
		for (unsigned j = 0; j < want; j++) {
			uint32_t k = 1 + rnd_below(12);

			if (total + k > st.nds || !pick_mem(r, j, k, false))
				break;
			total += k;
			r->nseg++;
		}
		if (r->nseg == 0) {
			shape_pages(r, 1);
			return;
		}
		r->ds = rnd_below(st.nds - total + 1);
	}
}

/* ---- operations -------------------------------------------------------------- */

static void op_fill(void)
{
	uint32_t n = 1 + rnd_below(4), p;

	if (n > scfg.pages)
		n = (uint32_t)scfg.pages;
	p = rnd_below(scfg.pages - n + 1);
	own_memory(p * SPP, n * SPP);
	for (uint32_t q = p; q < p + n && !st.failed; q++) {
		uint64_t tag = make_tag(rnd_below(scfg.blocks));

		for (unsigned s = 0; s < SPP; s++) {
			st.msec[q * SPP + s] = (struct sdesc){.tag = tag, .sub = (uint8_t)s};
			fill_sector(q * SPP + s);
		}
		if (tracing())
			printk("blkstress: trace op %lu: fill page %u with version %u\n", st.op, q,
			       tag_version(tag));
	}
	st.n.fills++;
}

static void op_rw(uint8_t type)
{
	struct sreq r;

	gen_shape(&r, type);
	submit(&r);
}

/* A recent whole-page transfer, or false. */
static bool pick_recent(uint32_t *p, uint32_t *b, uint32_t *n)
{
	unsigned i;

	if (!st.nrecent)
		return false;
	i = rnd_below(st.nrecent);
	*p = st.recent[i].p;
	*b = st.recent[i].b;
	*n = st.recent[i].n;
	return true;
}

static void op_reread(void)
{
	uint32_t p, b, n;
	unsigned x = rnd_below(10);
	struct sreq r = {.type = VBLK_T_IN, .nseg = 1};

	if (!pick_recent(&p, &b, &n)) {
		op_rw(VBLK_T_IN);
		return;
	}
	r.shape = n == 1 ? SH_PAGE : SH_MULTI;
	r.ms[0] = p * SPP;
	r.k[0] = n * SPP;
	r.ds = (uint64_t)b * SPP;
	if (x >= 6 && x < 8) /* the same blocks into other pages */
		r.ms[0] = rnd_below(scfg.pages - n + 1) * SPP;
	else if (x >= 8) /* other blocks into the same pages */
		r.ds = (uint64_t)rnd_below(scfg.blocks - n + 1) * SPP;
	st.n.rereads++;
	submit(&r);
}

/* The byte change for memory sector m: offset and new value. */
static void pick_byte(uint32_t m, uint16_t *off, uint8_t *val)
{
	const struct sdesc *s = &st.msec[m];

	*off = s->mod ? (uint16_t)(s->mod - 1) : (uint16_t)rnd_below(SECT);
	*val = (uint8_t)(sector_byte(s, *off) ^ (1 + rnd_below(255)));
}

static void op_modify(void)
{
	uint32_t p, b, n, q, m;
	uint16_t off;
	uint8_t val;

	if (!pick_recent(&p, &b, &n))
		return;
	q = p + rnd_below(n);
	m = q * SPP + rnd_below(SPP);
	own_memory(m, 1);
	if (st.failed)
		return;
	pick_byte(m, &off, &val);
	msec_addr(m)[off] = val;
	st.msec[m].mod = (uint16_t)(off + 1);
	st.msec[m].modval = val;
	st.n.mods++;
	if (tracing())
		printk("blkstress: trace op %lu: byte %u of page %u.%u\n", st.op, off, m / SPP,
		       m % SPP);
}

static void op_double(void)
{
	uint32_t n = 1 + rnd_below(max_multi() < 4 ? max_multi() : 4);
	struct sreq a, c;

	if (2 * n > scfg.pages) {
		op_rw(VBLK_T_IN);
		return;
	}
	shape_pages(&a, n);
	a.type = VBLK_T_IN;
	c = a;
	for (unsigned tries = 0; tries < 32; tries++) {
		c.ms[0] = rnd_below(scfg.pages - n + 1) * SPP;
		if (c.ms[0] >= a.ms[0] + a.k[0] || a.ms[0] >= c.ms[0] + c.k[0]) {
			submit(&a);
			submit(&c);
			st.n.doubles++;
			return;
		}
	}
	submit(&a);
}

/* vCPU 1 changes a byte in pages just read or written while vCPU 0 reads their blocks. */
static void op_helper(void)
{
	uint32_t blocks[HELPER_PAGES];
	unsigned n = 0;

	if (!st.helper || st.helper_busy || st.op >= st.helper_until) {
		op_modify();
		return;
	}
	for (unsigned t = 0; t < HELPER_PAGES; t++) {
		uint32_t p, b, cnt, q, j;
		bool dup = false;

		if (!pick_recent(&p, &b, &cnt))
			break;
		j = rnd_below(cnt);
		q = p + j;
		for (unsigned i = 0; i < n; i++)
			dup |= st.hpage[i] == q;
		if (dup || range_busy(st.mem_r, st.mem_w, q * SPP, SPP))
			continue;
		st.hpage[n] = q;
		st.hsec[n] = rnd_below(SPP);
		pick_byte(q * SPP + st.hsec[n], &st.hoff[n], &st.hval[n]);
		blocks[n] = b + j;
		mbox.addr[n] = (uint64_t)(uintptr_t)msec_addr(q * SPP + st.hsec[n]) + st.hoff[n];
		mbox.val[n] = st.hval[n];
		for (unsigned i = 0; i < SPP; i++)
			st.mem_w[q * SPP + i]++;
		n++;
	}
	if (!n)
		return;
	st.hn = n;
	st.helper_busy = true;
	mbox.n = n;
	mbox.delay = rnd_below(20000);
	__atomic_store_n(&mbox.seq, mbox.seq + 1, __ATOMIC_RELEASE);
	/* Meanwhile: read those blocks into other pages (from the replicas, if any). */
	for (unsigned i = 0; i < n && !st.failed; i++) {
		struct sreq r = {.type = VBLK_T_IN, .shape = SH_PAGE, .nseg = 1};

		r.ds = (uint64_t)blocks[i] * SPP;
		r.k[0] = SPP;
		r.ms[0] = rnd_below(scfg.pages) * SPP;
		if (req_conflicts(&r))
			continue;
		submit(&r);
	}
	kick();
}

static void op_flush(void)
{
	struct sreq r = {.type = VBLK_T_FLUSH};

	if (vblk_info(st.dev)->flush)
		submit(&r);
}

/* Every block read back (one block per request, many in flight) and checked. */
static void final_check(void)
{
	for (uint32_t b = 0; b < scfg.blocks && !st.failed; b++) {
		struct sreq r = {.type = VBLK_T_IN, .shape = SH_FINAL, .nseg = 1};

		r.ds = (uint64_t)b * SPP;
		r.k[0] = SPP;
		r.ms[0] = (uint32_t)((b % scfg.pages) * SPP);
		submit(&r);
		if (st.pending >= 16)
			kick();
	}
	drain();
}

/* Fresh patterns in every page, then every block written from them. */
static void init_model(void)
{
	uint32_t n = max_multi();

	for (uint32_t p = 0; p < scfg.pages; p += 1) {
		uint64_t tag = make_tag(p % scfg.blocks);

		for (unsigned s = 0; s < SPP; s++) {
			st.msec[p * SPP + s] = (struct sdesc){.tag = tag, .sub = (uint8_t)s};
			fill_sector(p * SPP + s);
		}
	}
	for (uint32_t b = 0; b < scfg.blocks && !st.failed; b += n) {
		struct sreq r = {.type = VBLK_T_OUT, .shape = SH_MULTI, .nseg = 1};
		uint32_t cnt = scfg.blocks - b < n ? (uint32_t)(scfg.blocks - b) : n;

		r.ds = (uint64_t)b * SPP;
		r.k[0] = cnt * SPP;
		r.ms[0] = (uint32_t)((b / n) % (scfg.pages / n) * n * SPP);
		submit(&r);
		if (st.pending >= 8)
			kick();
	}
	drain();
	st.nrecent = 0;
}

static bool stress_setup(void)
{
	const struct vblk_info *in;
	uint64_t area, model, counters;
	uint8_t *base;

	st.dev = blk_target_open(&scfg.t, "blkstress");
	if (!st.dev)
		return false;
	in = vblk_info(st.dev);
	if (in->ro) {
		printk("blkstress: disk %lu is read-only\n", scfg.t.disk);
		return false;
	}
	if (scfg.blocks * PAGE > in->capacity) {
		printk("blkstress: blocks=%lu needs %lu KiB of disk; disk %lu has %lu KiB\n",
		       scfg.blocks, scfg.blocks * PAGE >> 10, scfg.t.disk, in->capacity >> 10);
		return false;
	}
	st.nms = (uint32_t)(scfg.pages * SPP);
	st.nds = (uint32_t)(scfg.blocks * SPP);
	area = scfg.pages * PAGE;
	model = (uint64_t)(st.nms + st.nds) * sizeof(struct sdesc);
	counters = 2ULL * (st.nms + st.nds);
	base = blk_ram_place(area + model + counters);
	if (!base) {
		printk("blkstress: no room for %lu pages and the model in RAM\n", scfg.pages);
		return false;
	}
	st.area = base;
	st.msec = (struct sdesc *)(base + area);
	st.dsec = st.msec + st.nms;
	st.mem_r = (uint8_t *)(st.dsec + st.nds);
	st.mem_w = st.mem_r + st.nms;
	st.disk_r = st.mem_w + st.nms;
	st.disk_w = st.disk_r + st.nds;
	memset(st.msec, 0, model + counters);
	st.rng = blk_mix64(scfg.seed ^ 0x626c6b73ULL) | 1;
	st.helper_until = scfg.ops / 4;
	st.batch = 1;
	printk("blkstress: %lu pages at 0x%lx, blocks 0-%lu, seed %lu, %lu ops", scfg.pages,
	       (uint64_t)(uintptr_t)st.area, scfg.blocks - 1, scfg.seed, scfg.ops);
	if (st.helper)
		printk(", vCPU 1 writes bytes during the first %lu\n", st.helper_until);
	else
		printk(", one vCPU\n");
	return true;
}

static void helper_loop(void)
{
	uint32_t seen = 0;

	for (;;) {
		uint32_t s;

		while ((s = __atomic_load_n(&mbox.seq, __ATOMIC_ACQUIRE)) == seen) {
			if (__atomic_load_n(&mbox.quit, __ATOMIC_ACQUIRE))
				return;
			cpu_relax();
		}
		seen = s;
		for (uint32_t i = 0; i < mbox.delay; i++)
			cpu_relax();
		for (uint32_t j = 0; j < mbox.n; j++)
			*(volatile uint8_t *)(uintptr_t)mbox.addr[j] = mbox.val[j];
		__atomic_store_n(&mbox.done, s, __ATOMIC_RELEASE);
	}
}

/* vCPU 1 is done helping: wait until it has left (it parks, costing nothing). */
static void helper_stop(void)
{
	if (!st.helper)
		return;
	while (!st.failed && st.helper_busy)
		harvest(true);
	__atomic_store_n(&mbox.quit, 1, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&mbox.gone, __ATOMIC_ACQUIRE))
		cpu_relax();
	st.helper = false;
}

static enum guestos_exit stress_run(unsigned cpu, unsigned nr)
{
	static bool ok_to_start;
	uint64_t t0;

	/*
	 * Only vCPU 0 and (for a while) vCPU 1 take part; the others leave at
	 * once. vCPU 0 ends by waiting for vCPU 1 to leave, not by a barrier.
	 */
	if (cpu != 0) {
		smp_barrier();
		if (cpu == 1 && ok_to_start)
			helper_loop();
		if (cpu == 1)
			__atomic_store_n(&mbox.gone, 1, __ATOMIC_RELEASE);
		return GUESTOS_EXIT_OK;
	}
	st.helper = nr >= 2;
	ok_to_start = stress_setup();
	smp_barrier();
	if (!ok_to_start)
		goto out;
	t0 = rdtsc();
	init_model();
	for (st.op = 0; st.op < scfg.ops && !st.failed; st.op++) {
		unsigned x = rnd_below(100);

		if (st.helper && st.op == st.helper_until)
			helper_stop();
		if (x < 10)
			op_fill();
		else if (x < 33)
			op_rw(VBLK_T_OUT);
		else if (x < 52)
			op_rw(VBLK_T_IN);
		else if (x < 68)
			op_reread();
		else if (x < 80)
			op_modify();
		else if (x < 87)
			op_double();
		else if (x < 89)
			op_flush();
		else if (x < 98)
			op_helper();
		else
			drain();
		if (st.pending >= st.batch) {
			kick();
			st.batch = 1 + rnd_below(12);
		}
		harvest(false);
	}
	drain();
	if (!st.failed)
		final_check();
	if (!st.failed) {
		printk(
		    "blkstress: %lu ops (reads %lu, writes %lu, fills %lu, byte writes %lu + %lu "
		    "on vCPU 1, flushes %lu; partial %lu, multi-page %lu, scattered %lu, "
		    "rereads %lu, doubles %lu) ok\n",
		    scfg.ops, st.n.reads, st.n.writes, st.n.fills, st.n.mods, st.n.helper_mods,
		    st.n.flushes, st.n.partial, st.n.multi, st.n.scatter, st.n.rereads,
		    st.n.doubles);
		printk(
		    "blkstress: %lu requests in %lu notifies, up to %u in flight, %lu waits, %lu "
		    "sectors checked, %lu tsc cycles\n",
		    vblk_requests(st.dev), vblk_notifies(st.dev), st.max_inflight, st.n.waits,
		    st.n.sectors_checked, rdtsc() - t0);
		printk("blkstress ok\n");
	}
out:
	__atomic_store_n(&mbox.quit, 1, __ATOMIC_RELEASE);
	if (nr >= 2)
		while (!__atomic_load_n(&mbox.gone, __ATOMIC_ACQUIRE))
			cpu_relax();
	if (!ok_to_start)
		return GUESTOS_EXIT_WORKLOAD;
	return st.failed ? GUESTOS_EXIT_WORKLOAD : GUESTOS_EXIT_OK;
}

static int stress_parse(const struct cmdline *cl)
{
	blk_target_init(&scfg.t, cl);
	scfg.ops = 20000;
	scfg.seed = 1;
	scfg.pages = 64;
	scfg.blocks = 128;
	scfg.trace = 0;
	for (unsigned i = 1; i < cl->argc; i++) {
		const char *a = cl->argv[i], *v;

		if ((v = cmdline_value(a, "disk"))) {
			if (parse_u64(v, &scfg.t.disk) < 0 || scfg.t.disk >= VIRTIO_MMIO_MAX)
				return bad_arg("blkstress", stress_usage, a);
		} else if ((v = cmdline_value(a, "ops"))) {
			if (parse_u64(v, &scfg.ops) < 0 || scfg.ops > (1ULL << 32))
				return bad_arg("blkstress", stress_usage, a);
		} else if ((v = cmdline_value(a, "seed"))) {
			if (parse_u64(v, &scfg.seed) < 0)
				return bad_arg("blkstress", stress_usage, a);
		} else if ((v = cmdline_value(a, "trace"))) {
			if (parse_u64(v, &scfg.trace) < 0)
				return bad_arg("blkstress", stress_usage, a);
		} else if ((v = cmdline_value(a, "pages"))) {
			if (parse_u64(v, &scfg.pages) < 0 || scfg.pages < 2 ||
			    scfg.pages > MAX_PAGES)
				return bad_arg("blkstress", stress_usage, a);
		} else if ((v = cmdline_value(a, "blocks"))) {
			if (parse_u64(v, &scfg.blocks) < 0 || scfg.blocks < 2 ||
			    scfg.blocks > MAX_BLOCKS)
				return bad_arg("blkstress", stress_usage, a);
		} else {
			return bad_arg("blkstress", stress_usage, a);
		}
	}
	if (!guestos_bootinfo.has_memmap) {
		printk("blkstress: start_info has no memory map\n");
		return -1;
	}
	return 0;
}

const struct workload workload_blkstress = {
    .name = "blkstress",
    .usage = stress_usage,
    .parse = stress_parse,
    .run = stress_run,
};

/* ======================================================================== */
/* blkbad                                                                    */
/* ======================================================================== */

static const char bad_usage[] = "blkbad [disk=N]";

#define OUTSIDE_RAM  0x7000000000ULL /* 448 GiB: no guest here has that much */
#define IN_HOLE	     0xe0000000ULL   /* the 3-4 GiB MMIO hole, no device there */
#define BIG_BYTES    (17u << 20)     /* over the 16 MiB a request may carry */
#define KNOWN_BLOCKS 8		     /* at each end of the disk */
#define POISON	     0xdeadbeefcafef00dULL

static struct blk_target bcfg;

static struct {
	struct vblk *dev;
	uint8_t *big;	/* BIG_BYTES + 64 KiB of poison-filled buffer */
	uint8_t *check; /* one block, for read-backs */
	uint64_t cap_sectors, nblocks;
	unsigned cases, failed, ioerr, unsupp, resets;
} bb;

static uint64_t known_word(uint64_t block, unsigned i)
{
	return blk_mix64(0x6b6e6f776eULL ^ (block << 12) ^ i);
}

static void fill_known(uint8_t *buf, uint64_t block)
{
	for (unsigned i = 0; i < PAGE / 8; i++)
		((uint64_t *)buf)[i] = known_word(block, i);
}

static uint64_t poison_word(unsigned i)
{
	return POISON ^ i;
}

/* Waits for the one request in flight: its status, or -1 (device stuck, reset done). */
static int bad_wait(const char *name)
{
	uint64_t t0 = rdtsc(), next_look = 1ULL << 26;
	struct vblk_done done;

	for (;;) {
		int n = vblk_poll(bb.dev, &done, 1);
		uint64_t dt;

		if (n > 0)
			return (int)done.status;
		if (n < 0)
			break;
		dt = rdtsc() - t0;
		if (dt < next_look) {
			cpu_relax();
			continue;
		}
		next_look = dt + (1ULL << 28);
		if (vblk_device_status(bb.dev) & VBLK_STATUS_NEEDS_RESET) {
			printk(
			    "blkbad: %s: the device went to NEEDS_RESET (status 0x%x) instead of "
			    "answering\n",
			    name, vblk_device_status(bb.dev));
			break;
		}
		if (dt > (1ULL << 36)) {
			printk("blkbad: %s: no answer\n", name);
			break;
		}
	}
	bb.resets++;
	if (vblk_reset(bb.dev) < 0) {
		printk("blkbad: %s: the device does not come back after a reset\n", name);
		return -2;
	}
	printk("blkbad: %s: device reset (status 0, set-up again)\n", name);
	return -1;
}

/* A normal read of a known block, compared. */
static bool known_ok(const char *name, uint64_t block)
{
	int status = vblk_sync(bb.dev, VBLK_T_IN, block * SPP, bb.check, PAGE);

	if (status != VBLK_S_OK) {
		printk("blkbad: %s: the read of block %lu afterwards failed: %s\n", name, block,
		       status < 0 ? "driver error" : vblk_status_name((unsigned)status));
		return false;
	}
	for (unsigned i = 0; i < PAGE / 8; i++)
		if (((uint64_t *)bb.check)[i] != known_word(block, i)) {
			printk("blkbad: %s: block %lu changed on disk (word %u: 0x%016lx)\n", name,
			       block, i, ((uint64_t *)bb.check)[i]);
			return false;
		}
	return true;
}

/* The first 64 KiB of the buffer still hold poison (a refused read wrote nothing). */
static bool poison_ok(const char *name)
{
	for (unsigned i = 0; i < (64u << 10) / 8; i++)
		if (((uint64_t *)bb.big)[i] != poison_word(i)) {
			printk(
			    "blkbad: %s: the device wrote into the buffer of a refused read (byte "
			    "%u)\n",
			    name, i * 8);
			for (unsigned j = 0; j < (64u << 10) / 8; j++)
				((uint64_t *)bb.big)[j] = poison_word(j);
			return false;
		}
	return true;
}

static uint64_t addr(const void *p)
{
	return (uint64_t)(uintptr_t)p;
}

/*
 * One malformed request: sent, answered with IOERR (or UNSUPP when unsupp),
 * then a normal read of check_block shows the device works and the block is
 * unchanged.
 */
static void bad_case(const char *name, uint32_t type, uint64_t sector, const struct vblk_seg *seg,
		     unsigned nseg, unsigned flags, uint64_t check_block, bool unsupp)
{
	bool ok = true;
	int status;

	bb.cases++;
	if (!vblk_can_submit_raw(bb.dev, nseg) ||
	    vblk_submit_raw(bb.dev, type, sector, seg, nseg, flags, 0) < 0) {
		printk("blkbad: %s: could not be sent\n", name);
		bb.failed++;
		return;
	}
	vblk_kick(bb.dev);
	status = bad_wait(name);
	if (status == -2) {
		bb.failed++;
		return;
	}
	if (status == VBLK_S_IOERR && !unsupp) {
		bb.ioerr++;
	} else if (status == VBLK_S_UNSUPP && unsupp) {
		bb.unsupp++;
	} else {
		if (status >= 0)
			printk("blkbad: %s: completed with status %d (%s), want %s\n", name, status,
			       vblk_status_name((unsigned)status),
			       unsupp ? "unsupported" : "I/O error");
		ok = false;
	}
	if (!poison_ok(name))
		ok = false;
	if (!known_ok(name, check_block))
		ok = false;
	if (ok)
		printk("blkbad: %s: %s as expected\n", name, unsupp ? "unsupported" : "I/O error");
	else
		bb.failed++;
}

static enum guestos_exit bad_all(void)
{
	const struct vblk_info *in;
	uint64_t last;
	struct vblk_seg s[17];
	uint8_t *buf;
	int status;

	bb.dev = blk_target_open(&bcfg, "blkbad");
	if (!bb.dev)
		return GUESTOS_EXIT_WORKLOAD;
	in = vblk_info(bb.dev);
	bb.cap_sectors = in->capacity / SECT;
	bb.nblocks = in->capacity / PAGE;
	if (in->ro || bb.nblocks < 4 * KNOWN_BLOCKS) {
		printk("blkbad: disk %lu must be writable and hold %u KiB at least\n", bcfg.disk,
		       4 * KNOWN_BLOCKS * PAGE >> 10);
		return GUESTOS_EXIT_WORKLOAD;
	}
	buf = blk_ram_place(BIG_BYTES + (64u << 10) + 2 * PAGE);
	if (!buf) {
		printk("blkbad: not enough RAM for a %u MiB buffer\n", BIG_BYTES >> 20);
		return GUESTOS_EXIT_WORKLOAD;
	}
	bb.check = buf;
	bb.big = buf + 2 * PAGE;
	/* Known blocks at both ends of the disk. */
	last = bb.nblocks - 1;
	for (uint64_t i = 0; i < 2 * KNOWN_BLOCKS; i++) {
		uint64_t b = i < KNOWN_BLOCKS ? i : bb.nblocks - 2 * KNOWN_BLOCKS + i;

		fill_known(buf, b);
		status = vblk_sync(bb.dev, VBLK_T_OUT, b * SPP, buf, PAGE);
		if (status != VBLK_S_OK) {
			printk("blkbad: writing known block %lu failed: %s\n", b,
			       status < 0 ? "driver error" : vblk_status_name((unsigned)status));
			return GUESTOS_EXIT_WORKLOAD;
		}
	}
	if (in->flush && vblk_sync(bb.dev, VBLK_T_FLUSH, 0, NULL, 0) != VBLK_S_OK) {
		printk("blkbad: flush failed\n");
		return GUESTOS_EXIT_WORKLOAD;
	}
	for (unsigned i = 0; i < (64u << 10) / 8; i++)
		((uint64_t *)bb.big)[i] = poison_word(i);
	printk("blkbad: known blocks 0-%u and %lu-%lu written; %lu sectors\n", KNOWN_BLOCKS - 1,
	       bb.nblocks - KNOWN_BLOCKS, last, bb.cap_sectors);

#define SEG(a, l, w) ((struct vblk_seg){(a), (l), (w)})
	/* Addresses the device must not follow. */
	s[0] = SEG(OUTSIDE_RAM, PAGE, true);
	bad_case("read into a buffer outside guest RAM (0x7000000000)", VBLK_T_IN, 8, s, 1, 0, 1,
		 false);
	s[0] = SEG(OUTSIDE_RAM, PAGE, false);
	bad_case("write from a buffer outside guest RAM (0x7000000000)", VBLK_T_OUT, 8, s, 1, 0, 1,
		 false);
	s[0] = SEG(IN_HOLE, PAGE, false);
	bad_case("write from a buffer in the 3-4 GiB hole (0xe0000000)", VBLK_T_OUT, 16, s, 1, 0, 2,
		 false);
	s[0] = SEG(in->base, PAGE, true);
	bad_case("read into the device's own MMIO window", VBLK_T_IN, 16, s, 1, 0, 2, false);
	s[0] = SEG(addr(bb.big), PAGE, false);
	s[1] = SEG(OUTSIDE_RAM, PAGE, false);
	bad_case("write of a good buffer and one outside guest RAM", VBLK_T_OUT, 0, s, 2, 0, 0,
		 false);

	/* Lengths. */
	s[0] = SEG(addr(bb.big), 0, true);
	bad_case("read into a zero-length buffer", VBLK_T_IN, 8, s, 1, 0, 1, false);
	s[0] = SEG(addr(bb.big), 0, false);
	bad_case("write from a zero-length buffer", VBLK_T_OUT, 8, s, 1, 0, 1, false);
	bad_case("read without a data buffer", VBLK_T_IN, 8, s, 0, 0, 1, false);
	bad_case("write without a data buffer", VBLK_T_OUT, 8, s, 0, 0, 1, false);
	s[0] = SEG(addr(bb.big), PAGE, false);
	s[1] = SEG(addr(bb.big) + PAGE, 0, false);
	bad_case("write of a good buffer and a zero-length one", VBLK_T_OUT, 0, s, 2, 0, 0, false);
	s[0] = SEG(addr(bb.big), 1000, false);
	bad_case("write of 1000 bytes (not a multiple of 512)", VBLK_T_OUT, 24, s, 1, 0, 3, false);
	s[0] = SEG(addr(bb.big), PAGE + 1, true);
	bad_case("read of 4097 bytes (not a multiple of 512)", VBLK_T_IN, 24, s, 1, 0, 3, false);
	s[0] = SEG(addr(bb.big), 512, false);
	s[1] = SEG(addr(bb.big) + 512, 100, false);
	bad_case("write of 512 + 100 bytes in two buffers", VBLK_T_OUT, 24, s, 2, 0, 3, false);

	/* The end of the disk. */
	s[0] = SEG(addr(bb.big), PAGE, false);
	bad_case("write of 4 KiB from 2 KiB before the end of the disk", VBLK_T_OUT,
		 bb.cap_sectors - 4, s, 1, 0, last, false);
	s[0] = SEG(addr(bb.big), SECT, true);
	bad_case("read of 512 bytes at the end of the disk", VBLK_T_IN, bb.cap_sectors, s, 1, 0,
		 last, false);
	s[0] = SEG(addr(bb.big), SECT, false);
	bad_case("write of 512 bytes far past the end of the disk", VBLK_T_OUT,
		 bb.cap_sectors + (1ULL << 20), s, 1, 0, last, false);
	s[0] = SEG(addr(bb.big), SECT, true);
	bad_case("read at sector 2^63", VBLK_T_IN, 1ULL << 63, s, 1, 0, last, false);
	s[0] = SEG(addr(bb.big), PAGE, true);
	bad_case("read at sector 2^64 - 1", VBLK_T_IN, ~0ULL, s, 1, 0, last, false);

	/* Sizes over what the device offers (size_max 1 MiB, seg_max 16, 16 MiB). */
	s[0] = SEG(addr(bb.big), (1u << 20) + PAGE, false);
	bad_case("write of one 1 MiB + 4 KiB buffer (over size_max)", VBLK_T_OUT, 0, s, 1, 0, 0,
		 false);
	s[0] = SEG(addr(bb.big), BIG_BYTES, false);
	bad_case("write of 17 MiB in one buffer (over 16 MiB)", VBLK_T_OUT, 0, s, 1, 0, 0, false);
	for (unsigned i = 0; i < 17; i++)
		s[i] = SEG(addr(bb.big) + i * PAGE, PAGE, false);
	bad_case("write of 17 buffers (over seg_max 16)", VBLK_T_OUT, 0, s, 17, 0, 0, false);

	/* Directions, headers, types. */
	s[0] = SEG(addr(bb.big), PAGE, false);
	bad_case("read into a device-readable buffer", VBLK_T_IN, 8, s, 1, 0, 1, false);
	s[0] = SEG(addr(bb.big), PAGE, true);
	bad_case("write from a device-writable buffer", VBLK_T_OUT, 8, s, 1, 0, 1, false);
	s[0] = SEG(addr(bb.big), PAGE, true);
	bad_case("read with a device-writable header", VBLK_T_IN, 8, s, 1, VBLK_RAW_HDR_WRITABLE, 1,
		 false);
	s[0] = SEG(addr(bb.big), PAGE, false);
	bad_case("write with an 8-byte header", VBLK_T_OUT, 8, s, 1, VBLK_RAW_HDR_SHORT, 1, false);
	s[0] = SEG(addr(bb.big), PAGE, false);
	bad_case("unknown request type 99", 99, 8, s, 1, 0, 1, true);
	s[0] = SEG(addr(bb.big), 16, false);
	bad_case("discard (type 11, not offered)", 11, 8, s, 1, 0, 1, true);
#undef SEG

	if (bb.failed) {
		printk("blkbad: %u of %u cases failed (%u device resets)\n", bb.failed, bb.cases,
		       bb.resets);
		return GUESTOS_EXIT_WORKLOAD;
	}
	printk("blkbad: %u malformed requests: %u I/O errors, %u unsupported; device and disk "
	       "intact\n",
	       bb.cases, bb.ioerr, bb.unsupp);
	printk("blkbad ok\n");
	return GUESTOS_EXIT_OK;
}

static enum guestos_exit bad_run(unsigned cpu, unsigned nr)
{
	enum guestos_exit e = GUESTOS_EXIT_OK;

	if (cpu == 0)
		e = bad_all();
	smp_barrier();
	return e;
}

static int bad_parse(const struct cmdline *cl)
{
	blk_target_init(&bcfg, cl);
	for (unsigned i = 1; i < cl->argc; i++) {
		const char *a = cl->argv[i], *v;

		if ((v = cmdline_value(a, "disk"))) {
			if (parse_u64(v, &bcfg.disk) < 0 || bcfg.disk >= VIRTIO_MMIO_MAX)
				return bad_arg("blkbad", bad_usage, a);
		} else {
			return bad_arg("blkbad", bad_usage, a);
		}
	}
	if (!guestos_bootinfo.has_memmap) {
		printk("blkbad: start_info has no memory map\n");
		return -1;
	}
	return 0;
}

const struct workload workload_blkbad = {
    .name = "blkbad",
    .usage = bad_usage,
    .parse = bad_parse,
    .run = bad_run,
};
