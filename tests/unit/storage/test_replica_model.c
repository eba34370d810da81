/*
 * Randomised model test of the replica table.
 *
 * A reference model holds what the bytes are: a content id per guest page
 * and per disk block (a write makes a fresh id; a transfer copies ids; a
 * partial page or block becomes a fresh id, since mixed bytes equal
 * nothing).  Thousands of random operations -- guest page writes, disk
 * reads into pages, disk writes from pages, writes by someone else,
 * unaligned variants, node loss, clear -- are applied to both, with the
 * calls an integrator would make, and then:
 *
 *   safety  every replica the table hands out (lookup_blocks,
 *           lookup_gpa, foreach) has page content == block content.  A
 *           missing or short invalidation serves a stale copy and fails
 *           here; tests/unit/storage/meson.build builds this file against
 *           replica.c compiled with HK_REPLICA_MUTANT (drop_blocks does
 *           nothing, or misses the last block) and expects it to FAIL.
 *   exact   (synchronous I/O only) the table holds exactly the entries the
 *           model predicts: nothing stale, nothing lost.
 *
 * The safety test also keeps up to 8 I/Os in flight through io_begin /
 * io_end, with the transfer at a random moment in between, so the
 * protocol's refusals are what keeps it safe.
 *
 * HK_MODEL_OPS / HK_MODEL_SEED in the environment change the run length
 * and seed (a failure prints its seed and operation number).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

#include "test_replica.h"

#define NP     512 /* guest pages */
#define STRIPE 64  /* pages per node stripe */
#define RUN    16  /* frames are contiguous within 16-page runs, with gaps */
#define NN     3   /* nodes */
#define ND     2   /* disks */
#define NB     384 /* blocks per disk */
#define NAIO   8

struct aio {
	struct hk_replica_io io;
	bool transferred;
};

enum mode {
	EXACT,	/* synchronous I/O only: the entries are predictable */
	SAFETY, /* everything, I/O in flight too; half of it in a hot spot */
	RACES,	/* mostly I/O in flight, all in a 16-page, 16-block spot */
};

struct model {
	struct hk_replica *t;
	bool exact;
	enum mode mode;
	uint64_t hot_pages, hot_blocks, max_io;
	uint64_t rng;
	uint64_t next; /* content ids */
	uint64_t pg[NP];
	uint64_t blk[ND][NB];
	int ed[NP]; /* exact: expected entry of each page (disk, block) or -1 */
	int eb[NP];
	struct aio aio[NAIO];
	int naio;
	unsigned long op; /* operation number, for messages */
	uint64_t seed;
	/* what was exercised */
	uint64_t hit_blocks, checked_pages, added, refused;
};

static uint64_t rnd(struct model *m)
{
	/* xorshift64* */
	m->rng ^= m->rng >> 12;
	m->rng ^= m->rng << 25;
	m->rng ^= m->rng >> 27;
	return m->rng * 2685821657736338717ull;
}

static uint64_t below(struct model *m, uint64_t n)
{
	return rnd(m) % n;
}

static uint16_t node_of(uint64_t p)
{
	return (uint16_t)((p / STRIPE) % NN);
}

/* Gaps between runs on the same node, so that merging across a frame
 * discontinuity would show as a wrong frame. */
static uint64_t frame_of(uint64_t p)
{
	return 1000000ull * node_of(p) + p + 7 * (p / RUN);
}

#define MFAIL(m, ...)                                                                              \
	cr_assert_fail("seed %" PRIu64 " op %lu: %s", (m)->seed, (m)->op,                          \
		       (msg_(__VA_ARGS__), msgbuf))

static char msgbuf[256];
__attribute__((format(printf, 1, 2))) static void msg_(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msgbuf, sizeof(msgbuf), fmt, ap);
	va_end(ap);
}

/* ---- the safety property ------------------------------------------------------ */

/* Is block (d, b) being written by an I/O whose data has landed but whose
 * io_end has not run?  Its old replicas may legitimately still be served:
 * the write is not acknowledged yet, so any read racing it may see either. */
static bool unsettled(const struct model *m, int d, uint64_t b)
{
	for (int i = 0; i < m->naio; i++) {
		const struct hk_replica_io *io = &m->aio[i].io;
		uint64_t lo = io->offset / PG, hi = (io->offset + io->len + PG - 1) / PG;

		if (io->dir == HK_REPLICA_IO_WRITE && m->aio[i].transferred && io->disk == d &&
		    b >= lo && b < hi)
			return true;
	}
	return false;
}

static void check_copy(struct model *m, uint64_t page, uint16_t node, uint64_t frame, int d,
		       uint64_t b, const char *via)
{
	if (page >= NP || b >= NB || d >= ND)
		MFAIL(m, "%s: entry page %" PRIu64 " block %d:%" PRIu64 " outside anything added",
		      via, page, d, b);
	if (node != node_of(page) || frame != frame_of(page))
		MFAIL(m, "%s: page %" PRIu64 " at node %u frame %" PRIu64 ", added at %u/%" PRIu64,
		      via, page, node, frame, node_of(page), frame_of(page));
	m->checked_pages++;
	if (unsettled(m, d, b))
		return;
	if (m->pg[page] != m->blk[d][b])
		MFAIL(m,
		      "%s: STALE replica: page %" PRIu64 " holds %" PRIu64 ", block %d:%" PRIu64
		      " holds %" PRIu64,
		      via, page, m->pg[page], d, b, m->blk[d][b]);
}

static int safety_cb(void *ctx, const struct hk_replica_extent *e)
{
	struct model *m = ctx;

	for (uint64_t i = 0; i < e->npages; i++)
		check_copy(m, e->gpa / PG + i, e->node, e->frame + i, e->disk, e->block + i,
			   "foreach");
	return 0;
}

struct lookup_ctx {
	struct model *m;
	int d;
	uint64_t next; /* the block the next run must start at */
};

static int lookup_cb(void *ctx, const struct hk_replica_run *r)
{
	struct lookup_ctx *lc = ctx;
	struct model *m = lc->m;

	if (r->block != lc->next || !r->nblocks)
		MFAIL(m, "lookup: run at %" PRIu64 "+%" PRIu64 ", expected one at %" PRIu64,
		      r->block, r->nblocks, lc->next);
	lc->next = r->block + r->nblocks;
	for (uint64_t i = 0; i < r->nblocks; i++) {
		uint64_t b = r->block + i;
		bool want = false;

		if (r->hit) {
			check_copy(m, r->gpa / PG + i, r->node, r->frame + i, lc->d, b, "lookup");
			m->hit_blocks++;
		}
		if (!m->exact)
			continue;
		for (int p = 0; p < NP && !want; p++)
			want = m->ed[p] == lc->d && m->eb[p] == (int)b;
		if (want != r->hit)
			MFAIL(m, "lookup %d:%" PRIu64 ": table says %s, model %s", lc->d, b,
			      r->hit ? "hit" : "miss", want ? "hit" : "miss");
		if (r->hit && (m->ed[r->gpa / PG + i] != lc->d || m->eb[r->gpa / PG + i] != (int)b))
			MFAIL(m,
			      "lookup %d:%" PRIu64 ": served from page %" PRIu64
			      " which the model says holds something else",
			      lc->d, b, (uint64_t)(r->gpa / PG + i));
	}
	return 0;
}

static void check_lookup(struct model *m, int d, uint64_t b, uint64_t n)
{
	struct lookup_ctx lc = {.m = m, .d = d, .next = b};

	cr_assert_eq(hk_replica_lookup_blocks(m->t, (uint16_t)d, b, n, lookup_cb, &lc), 0);
	if (lc.next != b + n)
		MFAIL(m, "lookup %d:%" PRIu64 "+%" PRIu64 ": runs end at %" PRIu64, d, b, n,
		      lc.next);
}

static void check_page(struct model *m, uint64_t p)
{
	struct hk_replica_extent e;
	int ret = hk_replica_lookup_gpa(m->t, p * PG, &e);

	if (ret == 0) {
		uint64_t k = p - e.gpa / PG;

		check_copy(m, p, e.node, e.frame + k, e.disk, e.block + k, "lookup_gpa");
	}
	if (!m->exact)
		return;
	if ((ret == 0) != (m->ed[p] >= 0))
		MFAIL(m, "page %" PRIu64 ": table %s an entry, model %s", p, ret ? "has no" : "has",
		      m->ed[p] >= 0 ? "has one" : "has none");
	if (ret == 0 && (e.disk != m->ed[p] || e.block + (p - e.gpa / PG) != (uint64_t)m->eb[p]))
		MFAIL(m, "page %" PRIu64 ": table says block %u:%" PRIu64 ", model %d:%d", p,
		      e.disk, e.block + (p - e.gpa / PG), m->ed[p], m->eb[p]);
}

static void check_all(struct model *m)
{
	struct hk_replica_stats st;
	uint64_t want = 0;

	rt_check(m->t);
	hk_replica_foreach(m->t, NULL, safety_cb, m);
	for (uint64_t p = 0; p < NP; p++)
		check_page(m, p);
	hk_replica_get_stats(m->t, &st);
	if (m->exact) {
		for (int p = 0; p < NP; p++)
			want += m->ed[p] >= 0;
		if (st.entries != want)
			MFAIL(m, "table has %" PRIu64 " entries, model %" PRIu64, st.entries, want);
	}
}

/* ---- model side of each operation ---------------------------------------------- */

static void forget_page(struct model *m, uint64_t p)
{
	m->ed[p] = m->eb[p] = -1;
}

static void forget_block(struct model *m, int d, uint64_t b)
{
	for (int p = 0; p < NP; p++)
		if (m->ed[p] == d && m->eb[p] == (int)b)
			forget_page(m, p);
}

/* Disk bytes [off, off+len) of d land in guest bytes [gpa, gpa+len).  Whole
 * pages lined up with whole blocks copy the block; anything partial is new
 * mixed content.  entries: the pages' expected entries (exact mode). */
static void model_read(struct model *m, uint64_t gpa, int d, uint64_t off, uint64_t len,
		       bool entries)
{
	for (uint64_t p = gpa / PG; p * PG < gpa + len; p++) {
		uint64_t a = p * PG;
		bool whole = a >= gpa && a + PG <= gpa + len && (off + (a - gpa)) % PG == 0;

		if (whole) {
			uint64_t b = (off + (a - gpa)) / PG;

			m->pg[p] = m->blk[d][b];
			if (entries) {
				m->ed[p] = d;
				m->eb[p] = (int)b;
			}
		} else {
			m->pg[p] = ++m->next;
			if (entries)
				forget_page(m, p);
		}
	}
}

/* Guest bytes [gpa, gpa+len) are written to disk bytes [off, off+len). */
static void model_write(struct model *m, uint64_t gpa, int d, uint64_t off, uint64_t len,
			bool entries)
{
	for (uint64_t b = off / PG; b * PG < off + len; b++) {
		uint64_t a = b * PG;
		bool whole = a >= off && a + PG <= off + len && (gpa + (a - off)) % PG == 0;

		if (entries)
			forget_block(m, d, b);
		if (whole) {
			uint64_t p = (gpa + (a - off)) / PG;

			m->blk[d][b] = m->pg[p];
			if (entries) {
				m->ed[p] = d;
				m->eb[p] = (int)b;
			}
		} else {
			m->blk[d][b] = ++m->next;
		}
	}
}

/*
 * In safety mode half of everything happens in a hot spot (the first
 * stripe, the first blocks of disk 0), so that I/Os in flight collide
 * with each other and with page and block writes often.
 */
static bool is_hot(struct model *m)
{
	return m->mode == RACES || (m->mode == SAFETY && below(m, 2));
}

/* A random I/O range: guest bytes inside one run of contiguous frames (the
 * caller splits requests there), disk bytes inside the disk.  Mostly
 * aligned; sometimes any bytes. */
static void pick_io(struct model *m, uint64_t *gpa, int *d, uint64_t *off, uint64_t *len)
{
	bool hot = is_hot(m);
	uint64_t stripe = below(m, (hot ? m->hot_pages : NP) / RUN) * RUN * PG;
	uint64_t np = RUN;
	uint64_t nb = hot ? m->hot_blocks : NB;
	uint64_t n = 1 + below(m, m->max_io);

	*d = hot ? 0 : (int)below(m, ND);
	if (below(m, 4)) { /* aligned */
		*len = n * PG;
		*gpa = stripe + below(m, np - n + 1) * PG;
		*off = below(m, nb - n + 1) * PG;
		return;
	}
	*len = 1 + below(m, n * PG);
	*gpa = stripe + below(m, np * PG - *len + 1);
	*off = below(m, nb * PG - *len + 1);
	if (below(m, 2)) /* congruent: the whole pages in the middle line up */
		*off = (*off & ~(PG - 1)) | (*gpa & (PG - 1));
	if (*off + *len > NB * PG)
		*off -= PG;
}

static void fill_io(struct hk_replica_io *io, enum hk_replica_io_dir dir, uint64_t gpa, int d,
		    uint64_t off, uint64_t len)
{
	*io = (struct hk_replica_io){.dir = dir,
				     .gpa = gpa,
				     .len = len,
				     .node = node_of(gpa / PG),
				     .frame = frame_of(gpa / PG),
				     .disk = (uint16_t)d,
				     .offset = off};
}

/* ---- operations ------------------------------------------------------------------ */

/* The guest writes some pages (the write-protect fault drops them first). */
static void op_guest_write(struct model *m)
{
	uint64_t p = below(m, is_hot(m) ? m->hot_pages : NP), n = 1 + below(m, 8);

	if (p + n > NP)
		n = NP - p;
	if (below(m, 3)) {
		hk_replica_drop_gpa(m->t, p * PG, n);
	} else { /* a device or partial store: bytes, rounded outward */
		uint64_t a = p * PG + below(m, PG), len = 1 + below(m, n * PG);

		if (a + len > NP * PG)
			len = NP * PG - a;
		hk_replica_drop_gpa_bytes(m->t, a, len);
		n = (a + len + PG - 1) / PG - p;
	}
	for (uint64_t i = 0; i < n; i++) {
		m->pg[p + i] = ++m->next;
		forget_page(m, p + i);
	}
}

/* With I/O in flight (safety mode) a synchronous add may meet a pinned
 * page or a raced ticket; refusing is always allowed. */
static void expect_added(struct model *m, int64_t ret)
{
	if (ret >= 0 || (!m->exact && (ret == -EBUSY || ret == -ESTALE)))
		return;
	MFAIL(m, "add returned %" PRId64, ret);
}

/* A disk read, completed at once. */
static void op_read_sync(struct model *m)
{
	struct hk_replica_io io;
	uint64_t gpa, off, len;
	int d;

	pick_io(m, &gpa, &d, &off, &len);
	switch (below(m, 3)) {
	case 0: /* the protocol */
		fill_io(&io, HK_REPLICA_IO_READ, gpa, d, off, len);
		hk_replica_io_begin(m->t, &io);
		model_read(m, gpa, d, off, len, true);
		expect_added(m, hk_replica_io_end(m->t, &io, true));
		break;
	case 1: /* the byte helper */
		model_read(m, gpa, d, off, len, true);
		expect_added(m, hk_replica_add_bytes(m->t, gpa, node_of(gpa / PG),
						     frame_of(gpa / PG), (uint16_t)d, off, len));
		break;
	default: /* page granular: only for aligned I/O */
		if (gpa % PG || off % PG || len % PG)
			return;
		model_read(m, gpa, d, off, len, true);
		expect_added(m, hk_replica_add(m->t, gpa, node_of(gpa / PG), frame_of(gpa / PG),
					       (uint16_t)d, off / PG, len / PG));
	}
	m->added++;
}

/* A disk write from guest pages, completed at once. */
static void op_write_sync(struct model *m)
{
	struct hk_replica_io io;
	uint64_t gpa, off, len;
	int d;

	pick_io(m, &gpa, &d, &off, &len);
	if (below(m, 2)) {
		fill_io(&io, HK_REPLICA_IO_WRITE, gpa, d, off, len);
		hk_replica_io_begin(m->t, &io);
		model_write(m, gpa, d, off, len, true);
		expect_added(m, hk_replica_io_end(m->t, &io, true));
	} else {
		/* by hand: drop every replica of the blocks, then the source
		 * pages replicate what they wrote */
		model_write(m, gpa, d, off, len, true);
		hk_replica_drop_blocks_bytes(m->t, (uint16_t)d, off, len);
		expect_added(m, hk_replica_add_bytes(m->t, gpa, node_of(gpa / PG),
						     frame_of(gpa / PG), (uint16_t)d, off, len));
		/* add_bytes dropped the pages it touched in part: so does the model */
		for (uint64_t p = gpa / PG; p * PG < gpa + len; p++)
			if (p * PG < gpa || (p + 1) * PG > gpa + len || (off - gpa) % PG)
				forget_page(m, p);
	}
	m->added++;
}

/* Someone else writes the disk (another guest's node, a partial write). */
static void op_foreign_write(struct model *m)
{
	bool hot = is_hot(m);
	int d = hot ? 0 : (int)below(m, ND);
	uint64_t b = below(m, hot ? m->hot_blocks : NB), n = 1 + below(m, 16);

	if (b + n > NB)
		n = NB - b;
	if (below(m, 2)) {
		hk_replica_drop_blocks(m->t, (uint16_t)d, b, n);
	} else {
		uint64_t off = b * PG + below(m, PG), len = 1 + below(m, n * PG);

		if (off + len > NB * PG)
			len = NB * PG - off;
		hk_replica_drop_blocks_bytes(m->t, (uint16_t)d, off, len);
		n = (off + len + PG - 1) / PG - b;
	}
	for (uint64_t i = 0; i < n; i++) {
		m->blk[d][b + i] = ++m->next;
		forget_block(m, d, b + i);
	}
}

static void op_lookup(struct model *m)
{
	bool hot = is_hot(m);
	int d = hot ? 0 : (int)below(m, ND);
	uint64_t b = below(m, hot ? m->hot_blocks : NB), n = 1 + below(m, 32);

	if (b + n > NB)
		n = NB - b;
	check_lookup(m, d, b, n);
	check_page(m, below(m, NP));
}

static void op_node_loss(struct model *m)
{
	uint16_t node = (uint16_t)below(m, NN);

	hk_replica_drop_node(m->t, node);
	/* the node's memory is gone: its pages come back as something new */
	for (uint64_t p = 0; p < NP; p++) {
		if (node_of(p) == node) {
			m->pg[p] = ++m->next;
			forget_page(m, p);
		}
	}
}

static void op_clear(struct model *m)
{
	hk_replica_clear(m->t);
	for (uint64_t p = 0; p < NP; p++)
		forget_page(m, p);
}

/* ---- I/O in flight (safety mode) ---------------------------------------------------- */

static void aio_start(struct model *m)
{
	struct aio *a = &m->aio[m->naio];
	uint64_t gpa, off, len;
	int d;

	if (m->naio == NAIO)
		return;
	pick_io(m, &gpa, &d, &off, &len);
	fill_io(&a->io, below(m, 2) ? HK_REPLICA_IO_READ : HK_REPLICA_IO_WRITE, gpa, d, off, len);
	a->transferred = false;
	hk_replica_io_begin(m->t, &a->io);
	m->naio++;
}

/* The device moves the data at some moment between begin and end. */
static void aio_transfer_one(struct model *m, struct aio *a)
{
	if (a->transferred)
		return;
	if (a->io.dir == HK_REPLICA_IO_READ)
		model_read(m, a->io.gpa, a->io.disk, a->io.offset, a->io.len, false);
	else
		model_write(m, a->io.gpa, a->io.disk, a->io.offset, a->io.len, false);
	a->transferred = true;
}

static void aio_transfer(struct model *m)
{
	if (m->naio)
		aio_transfer_one(m, &m->aio[below(m, m->naio)]);
}

static void aio_end(struct model *m)
{
	int i;
	struct aio a;
	int64_t ret;

	if (!m->naio)
		return;
	i = (int)below(m, m->naio);
	if (!m->aio[i].transferred)
		return;
	a = m->aio[i];
	m->aio[i] = m->aio[--m->naio];
	ret = hk_replica_io_end(m->t, &a.io, below(m, 16) != 0);
	if (ret == -ESTALE)
		m->refused++;
	else if (ret > 0)
		m->added++;
	else if (ret < 0)
		MFAIL(m, "io_end: %" PRId64, ret);
}

/* ---- drivers ------------------------------------------------------------------------ */

static uint64_t env_u64(const char *name, uint64_t dflt)
{
	const char *s = getenv(name);

	return s && *s ? strtoull(s, NULL, 0) : dflt;
}

static struct model *model_new(enum mode mode, uint64_t seed)
{
	struct model *m = calloc(1, sizeof(*m));

	cr_assert_not_null(m);
	m->t = rt_new();
	m->mode = mode;
	m->exact = mode == EXACT;
	m->hot_pages = mode == RACES ? 16 : STRIPE;
	m->hot_blocks = mode == RACES ? 16 : 48;
	m->max_io = mode == RACES ? 4 : 12;
	m->seed = seed;
	m->rng = seed * 0x9e3779b97f4a7c15ull + 1;
	for (int p = 0; p < NP; p++) {
		m->pg[p] = ++m->next;
		forget_page(m, p);
	}
	for (int d = 0; d < ND; d++)
		for (int b = 0; b < NB; b++)
			m->blk[d][b] = ++m->next;
	return m;
}

static void model_free(struct model *m)
{
	/* reads still in flight would stay pinned: finish them */
	while (m->naio) {
		aio_transfer_one(m, &m->aio[0]);
		aio_end(m);
	}
	check_all(m);
	rt_done(m->t);
	free(m);
}

/* RACES: I/Os begin, transfer and end in every order, with a little of
 * everything else between. */
static void step_races(struct model *m)
{
	unsigned r = (unsigned)below(m, 100);

	if (r < 25)
		aio_start(m);
	else if (r < 55)
		aio_transfer(m);
	else if (r < 80)
		aio_end(m);
	else if (r < 85)
		op_guest_write(m);
	else if (r < 90)
		op_foreign_write(m);
	else if (r < 93)
		op_read_sync(m);
	else
		op_lookup(m);
}

static const char *const mode_name[] = {"exact", "safety", "races"};

static void run(enum mode mode, uint64_t seed, unsigned long ops)
{
	struct model *m = model_new(mode, seed);
	bool exact = mode == EXACT;

	for (m->op = 0; m->op < ops; m->op++) {
		unsigned r = (unsigned)below(m, 1000);

		if (mode == RACES)
			step_races(m);
		else if (r < 180)
			op_guest_write(m);
		else if (r < 400)
			op_read_sync(m);
		else if (r < 530)
			op_write_sync(m);
		else if (r < 620)
			op_foreign_write(m);
		else if (r < 860)
			op_lookup(m);
		else if (r < 863)
			op_node_loss(m);
		else if (r < 864)
			op_clear(m);
		else if (exact)
			op_lookup(m);
		else if (r < 910)
			aio_start(m);
		else if (r < 960)
			aio_transfer(m);
		else
			aio_end(m);
		if (m->op % 512 == 0)
			check_all(m);
	}
	cr_log_info("model %s seed %" PRIu64 ": %lu ops, %" PRIu64
		    " replica pages checked, %" PRIu64 " blocks served from replicas, %" PRIu64
		    " I/Os added entries, %" PRIu64 " refused as raced",
		    mode_name[mode], seed, ops, m->checked_pages, m->hit_blocks, m->added,
		    m->refused);
	cr_assert_gt(m->hit_blocks, ops / (mode == RACES ? 200 : 50),
		     "the run served too little to mean anything");
	if (!exact)
		cr_assert_gt(m->refused, 0, "no I/O ever raced: the protocol was not exercised");
	model_free(m);
}

static void run_seeds(enum mode mode)
{
	uint64_t seed = env_u64("HK_MODEL_SEED", 1);
	unsigned long ops = env_u64("HK_MODEL_OPS", 30000);

	for (uint64_t s = seed; s < seed + 4; s++)
		run(mode, s, ops);
}

RT_TEST(model, safety)
{
	run_seeds(SAFETY);
}

RT_TEST(model, races)
{
	run_seeds(RACES);
}

RT_TEST(model, exact)
{
	run_seeds(EXACT);
}
