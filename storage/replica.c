/*
 * The storage-replica table: operations, locking, statistics.  The trees
 * and the slab are in extent_tree.c, the I/O protocol in replica_io.c.
 *
 * Invariants (hk_replica_check verifies them all):
 *   - extents are disjoint in GPA space (a page replicates one block);
 *   - every extent is in both trees, and the slab holds nothing else;
 *   - no two extents are mergeable: GPA-adjacent extents differ in node,
 *     frame contiguity or block contiguity (or would exceed EXT_MAX_PAGES),
 *     so the extent count depends only on what is covered, not on the
 *     order in which it was added;
 *   - pages == sum of npages.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replica_internal.h"

#define GFN_LIMIT (HK_REPLICA_GPA_LIMIT >> HK_REPLICA_PAGE_SHIFT)
#define PAGE_MASK (HK_REPLICA_PAGE_SIZE - 1)

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

/* a + b, saturating: drop ranges are clipped, never refused. */
static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static void wrlock(struct hk_replica *t)
{
	pthread_rwlock_wrlock(&t->lock);
}

static void rdlock(struct hk_replica *t)
{
	pthread_rwlock_rdlock(&t->lock);
}

/* End of every change: give back spare slab and release. */
static void unlock_changed(struct hk_replica *t)
{
	slab_trim(t);
	pthread_rwlock_unlock(&t->lock);
}

static void unlock(struct hk_replica *t)
{
	pthread_rwlock_unlock(&t->lock);
}

int hk_replica_create(struct hk_replica **out)
{
	pthread_rwlockattr_t attr;
	struct hk_replica *t;
	int ret;

	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	ret = slab_init(t);
	if (ret)
		goto fail_slab;
	/* Writers first: a drop_blocks holds up a guest write's completion and
	 * a drop_gpa a vCPU's write fault; a stream of lookups (reads served
	 * from memory) must not starve them, as glibc's default would. */
	ret = -pthread_rwlockattr_init(&attr);
	if (ret)
		goto fail_lock;
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	ret = -pthread_rwlock_init(&t->lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	if (ret)
		goto fail_lock;
	*out = t;
	return 0;
fail_lock:
	slab_fini(t);
fail_slab:
	free(t);
	return ret;
}

void hk_replica_destroy(struct hk_replica *t)
{
	if (!t)
		return;
	pthread_rwlock_destroy(&t->lock);
	slab_fini(t);
	free(t);
}

void hk_replica_set_extent_limit(struct hk_replica *t, uint32_t max)
{
	wrlock(t);
	t->slot_limit = max == UINT32_MAX ? UINT32_MAX : max + 1; /* + the none slot */
	unlock(t);
}

/* ---- removing ----------------------------------------------------------------- */

/* Callers account t->pages. */
static void unlink_free(struct hk_replica *t, uint32_t x)
{
	tree_remove(t, T_GPA, x);
	tree_remove(t, T_BLK, x);
	slab_free(t, x);
}

/*
 * Remove GPA pages [lo, hi) (gfn units) from the table: extents inside go,
 * extents across an edge are trimmed, an extent across both is split.
 * Never fails: with no memory for the split the whole extent goes and the
 * extra pages count as overdrops.  Returns the pages that lost an entry.
 * Write lock held.
 */
uint64_t replica_drop_range(struct hk_replica *t, uint64_t lo, uint64_t hi)
{
	uint64_t removed = 0;

	while (lo < hi) {
		uint32_t x = gpa_first_overlap(t, lo, hi);
		struct ext *X;
		uint64_t xs, xe, a, b;

		if (!x)
			break;
		X = E(t, x);
		xs = X->gfn;
		xe = ext_end(X);
		a = max_u64(xs, lo);
		b = min_u64(xe, hi);
		removed += b - a;

		if (xs < a && xe > b) {
			uint32_t y = slab_alloc(t); /* X stays valid: chunks never move */
			struct ext *Y;

			if (!y) {
				t->overdrops += (a - xs) + (xe - b);
				removed += (a - xs) + (xe - b);
				t->pages -= xe - xs;
				unlink_free(t, x);
				lo = b;
				continue;
			}
			Y = E(t, y);
			Y->gfn = b;
			Y->frame = X->frame + (b - xs);
			Y->bkey = X->bkey + (b - xs);
			Y->npages = (uint32_t)(xe - b);
			Y->node = X->node;
			tree_remove(t, T_BLK, x);
			X->npages = (uint32_t)(a - xs); /* GPA key unchanged */
			tree_insert(t, T_BLK, x);
			tree_insert(t, T_GPA, y);
			tree_insert(t, T_BLK, y);
		} else if (xs < a) {
			tree_remove(t, T_BLK, x);
			X->npages = (uint32_t)(a - xs);
			tree_insert(t, T_BLK, x);
		} else if (xe > b) {
			uint64_t d = b - xs;

			/* The GPA order survives in place: [a, b) is cleared, so
			 * nothing else lies between the old and the new start. */
			tree_remove(t, T_BLK, x);
			X->gfn += d;
			X->frame += d;
			X->bkey += d;
			X->npages -= (uint32_t)d;
			tree_insert(t, T_BLK, x);
		} else {
			unlink_free(t, x);
		}
		t->pages -= b - a;
		lo = b;
	}
	t->invalidations += removed;
	return removed;
}

/* Every replica of bkey range [lo, hi).  Write lock held. */
uint64_t replica_drop_bkeys(struct hk_replica *t, uint64_t lo, uint64_t hi)
{
	uint64_t removed = 0;
	uint32_t x;

	/* Each pass clears one extent's overlap, which then no longer
	 * overlaps: O(log n) per extent touched. */
	while (lo < hi && (x = blk_first_overlap(t, lo, hi))) {
		const struct ext *X = E(t, x);
		uint64_t a = max_u64(X->bkey, lo), b = min_u64(ext_bend(X), hi);
		uint64_t g = X->gfn + (a - X->bkey);

		removed += replica_drop_range(t, g, g + (b - a));
	}
	return removed;
}

uint64_t hk_replica_drop_gpa(struct hk_replica *t, uint64_t gpa, uint64_t npages)
{
	uint64_t lo = gpa >> HK_REPLICA_PAGE_SHIFT;
	uint64_t hi = min_u64(sat_add(lo, npages), GFN_LIMIT);
	uint64_t n = 0;

	wrlock(t);
	if (lo < hi) {
		io_note(t, EV_GPA, lo, hi, 0);
		n = replica_drop_range(t, lo, hi);
	}
	unlock_changed(t);
	return n;
}

void replica_gfn_outward(uint64_t gpa, uint64_t len, uint64_t *lo, uint64_t *hi)
{
	uint64_t end = sat_add(gpa, len);

	*lo = gpa >> HK_REPLICA_PAGE_SHIFT;
	*hi = min_u64((end >> HK_REPLICA_PAGE_SHIFT) + !!(end & PAGE_MASK), GFN_LIMIT);
	if (!len)
		*hi = *lo;
}

uint64_t hk_replica_drop_gpa_bytes(struct hk_replica *t, uint64_t gpa, uint64_t len)
{
	uint64_t lo, hi;

	replica_gfn_outward(gpa, len, &lo, &hi);
	return hk_replica_drop_gpa(t, lo << HK_REPLICA_PAGE_SHIFT, hi > lo ? hi - lo : 0);
}

uint64_t hk_replica_drop_blocks(struct hk_replica *t, uint16_t disk, uint64_t block,
				uint64_t nblocks)
{
	uint64_t end = min_u64(sat_add(block, nblocks), HK_REPLICA_BLOCK_LIMIT);
	uint64_t n = 0;

	if (block >= end)
		return 0;
#if defined(HK_REPLICA_MUTANT) && HK_REPLICA_MUTANT == 1
	/* Mutation test only (tests/unit/storage): a table that forgets disk
	 * writes.  The model test must fail against it. */
	return 0;
#endif
#if defined(HK_REPLICA_MUTANT) && HK_REPLICA_MUTANT == 2
	end--; /* off by one: the last block keeps its replicas */
#endif
	wrlock(t);
	io_note(t, EV_BLK, bkey_of(disk, block), bkey_of(disk, end), 0);
	n = replica_drop_bkeys(t, bkey_of(disk, block), bkey_of(disk, end));
	unlock_changed(t);
	return n;
}

void replica_bkey_outward(uint16_t disk, uint64_t offset, uint64_t len, uint64_t *lo, uint64_t *hi)
{
	uint64_t end = sat_add(offset, len);
	uint64_t b = offset >> HK_REPLICA_PAGE_SHIFT;
	uint64_t e = (end >> HK_REPLICA_PAGE_SHIFT) + !!(end & PAGE_MASK);

	b = min_u64(b, HK_REPLICA_BLOCK_LIMIT);
	e = len ? min_u64(e, HK_REPLICA_BLOCK_LIMIT) : b;
	*lo = bkey_of(disk, b);
	*hi = bkey_of(disk, e);
}

uint64_t hk_replica_drop_blocks_bytes(struct hk_replica *t, uint16_t disk, uint64_t offset,
				      uint64_t len)
{
	uint64_t lo, hi, b;

	replica_bkey_outward(disk, offset, len, &lo, &hi);
	b = lo - bkey_of(disk, 0);
	return hk_replica_drop_blocks(t, disk, b, hi - lo);
}

uint64_t hk_replica_drop_node(struct hk_replica *t, uint16_t node)
{
	uint64_t removed = 0;

	wrlock(t);
	io_note(t, EV_NODE, 0, 0, node);
	/* Downwards: a free moves the last record into the hole, and the last
	 * one has already been looked at. */
	for (uint32_t x = t->used - 1; x >= 1; x--) {
		if (E(t, x)->node != node)
			continue;
		removed += E(t, x)->npages;
		t->pages -= E(t, x)->npages;
		unlink_free(t, x);
	}
	t->invalidations += removed;
	unlock_changed(t);
	return removed;
}

void hk_replica_clear(struct hk_replica *t)
{
	wrlock(t);
	io_note(t, EV_ALL, 0, 0, 0);
	t->invalidations += t->pages;
	t->pages = 0;
	t->root[T_GPA] = t->root[T_BLK] = 0;
	t->used = 1;
	unlock_changed(t);
}

/* ---- adding ------------------------------------------------------------------- */

static bool mergeable(const struct ext *L, const struct ext *R)
{
	return L->node == R->node && ext_end(L) == R->gfn && L->frame + L->npages == R->frame &&
	       ext_bend(L) == R->bkey && (L->bkey >> 48) == (R->bkey >> 48) &&
	       (uint64_t)L->npages + R->npages <= EXT_MAX_PAGES;
}

/* Does an extent already say exactly this about [gfn, gfn+n)? */
static bool already(const struct hk_replica *t, uint64_t gfn, uint16_t node, uint64_t frame,
		    uint64_t bkey, uint64_t n)
{
	uint32_t x = gpa_covering(t, gfn);
	const struct ext *X = E(t, x);
	uint64_t d = gfn - X->gfn;

	return x && gfn + n <= ext_end(X) && X->node == node && X->frame + d == frame &&
	       X->bkey + d == bkey;
}

/*
 * Put one run (n <= EXT_MAX_PAGES, limits checked, [gfn, gfn+n) empty) in
 * the table, merged with its neighbours.  Two records must be reserved.
 */
static void insert_run(struct hk_replica *t, uint64_t gfn, uint16_t node, uint64_t frame,
		       uint64_t bkey, uint64_t n)
{
	struct ext nx = {
	    .gfn = gfn, .frame = frame, .bkey = bkey, .npages = (uint32_t)n, .node = node};
	uint32_t l = gfn ? gpa_covering(t, gfn - 1) : 0;
	uint32_t r = gpa_ceil(t, gfn + n);
	bool ml = l && mergeable(E(t, l), &nx);
	bool mr = r && mergeable(&nx, E(t, r));
	uint32_t x;

	t->pages += n;
	if (ml && mr && (uint64_t)E(t, l)->npages + n + E(t, r)->npages > EXT_MAX_PAGES)
		mr = false; /* both would overflow one record: merge left only */
	if (ml) {
		struct ext *L = E(t, l);

		tree_remove(t, T_BLK, l);
		L->npages += (uint32_t)n;
		if (mr) {
			uint32_t rn = E(t, r)->npages;

			tree_remove(t, T_GPA, r);
			tree_remove(t, T_BLK, r);
			L->npages += rn;
			tree_insert(t, T_BLK, l);
			slab_free(t, r); /* may move l: not used after this */
		} else {
			tree_insert(t, T_BLK, l);
		}
		return;
	}
	if (mr) {
		struct ext *R = E(t, r);

		/* GPA order survives in place: [gfn, R->gfn) was empty. */
		tree_remove(t, T_BLK, r);
		R->gfn = gfn;
		R->frame = frame;
		R->bkey = bkey;
		R->npages += (uint32_t)n;
		tree_insert(t, T_BLK, r);
		return;
	}
	x = slab_alloc(t); /* reserved by the caller */
	*E(t, x) = nx;
	tree_insert(t, T_GPA, x);
	tree_insert(t, T_BLK, x);
}

static int check_run(uint64_t gfn, uint64_t frame, uint64_t block, uint64_t n)
{
	if (gfn > GFN_LIMIT || n > GFN_LIMIT - gfn)
		return -ERANGE;
	if (block > HK_REPLICA_BLOCK_LIMIT || n > HK_REPLICA_BLOCK_LIMIT - block)
		return -ERANGE;
	if (frame > UINT64_MAX - n)
		return -ERANGE;
	return 0;
}

/*
 * The body of every add, write lock held, limits checked: [gfn, gfn+n)
 * loses its old entries and gains these.  -EBUSY (pinned by an in-flight
 * read) and -ENOMEM leave the range empty.
 */
int replica_insert(struct hk_replica *t, uint64_t gfn, uint16_t node, uint64_t frame, uint64_t bkey,
		   uint64_t n)
{
	if (!n)
		return 0;
	if (io_pinned(t, gfn, gfn + n)) {
		replica_drop_range(t, gfn, gfn + n);
		return -EBUSY;
	}
	/* Re-reading a block into the page that already holds it (a guest
	 * reboot re-reading its data set) changes nothing: no churn. */
	if (n <= EXT_MAX_PAGES && already(t, gfn, node, frame, bkey, n)) {
		t->adds += n;
		return 0;
	}
	while (n) {
		uint64_t k = min_u64(n, EXT_MAX_PAGES);

		/* One record for the split an overlapped extent may need, one
		 * for the run; reserved first so nothing below can fail. */
		if (slab_reserve(t, 2)) {
			replica_drop_range(t, gfn, gfn + n);
			return -ENOMEM;
		}
		replica_drop_range(t, gfn, gfn + k);
		insert_run(t, gfn, node, frame, bkey, k);
		t->adds += k;
		gfn += k;
		frame += k;
		bkey += k;
		n -= k;
	}
	return 0;
}

int hk_replica_add(struct hk_replica *t, uint64_t gpa, uint16_t node, uint64_t frame, uint16_t disk,
		   uint64_t block, uint64_t npages)
{
	uint64_t gfn = gpa >> HK_REPLICA_PAGE_SHIFT;
	int ret;

	if (!npages)
		return 0;
	if (gpa & PAGE_MASK)
		return -EINVAL;
	ret = check_run(gfn, frame, block, npages);
	if (ret)
		return ret;
	wrlock(t);
	io_note(t, EV_GPA, gfn, gfn + npages, 0);
	ret = replica_insert(t, gfn, node, frame, bkey_of(disk, block), npages);
	unlock_changed(t);
	return ret;
}

int replica_span(uint64_t gpa, uint64_t frame, uint16_t disk, uint64_t offset, uint64_t len,
		 struct span *s)
{
	uint64_t first, end, skip;

	memset(s, 0, sizeof(*s));
	if (gpa > HK_REPLICA_GPA_LIMIT || len > HK_REPLICA_GPA_LIMIT - gpa)
		return -ERANGE;
	if (offset > UINT64_MAX - len)
		return -ERANGE;
	/* A page equals a block only if the page boundary falls on a block
	 * boundary: the buffer and the disk offset must agree modulo 4 KiB. */
	if ((gpa & PAGE_MASK) != (offset & PAGE_MASK))
		return 0;
	first = (gpa + PAGE_MASK) & ~PAGE_MASK;
	end = (gpa + len) & ~PAGE_MASK;
	if (first >= end)
		return 0;
	skip = (gpa & PAGE_MASK) ? 1 : 0; /* frame is that of the partial first page */
	s->gfn = first >> HK_REPLICA_PAGE_SHIFT;
	s->n = (end - first) >> HK_REPLICA_PAGE_SHIFT;
	s->frame = frame + skip;
	if (s->frame < frame)
		return -ERANGE;
	first = (offset + PAGE_MASK) >> HK_REPLICA_PAGE_SHIFT;
	if (check_run(s->gfn, s->frame, first, s->n)) {
		s->n = 0;
		return -ERANGE;
	}
	s->bkey = bkey_of(disk, first);
	return 0;
}

int64_t hk_replica_add_bytes(struct hk_replica *t, uint64_t gpa, uint16_t node, uint64_t frame,
			     uint16_t disk, uint64_t offset, uint64_t len)
{
	uint64_t lo, hi;
	struct span s;
	int ret;

	if (!len)
		return 0;
	ret = replica_span(gpa, frame, disk, offset, len, &s);
	if (ret)
		return ret;
	replica_gfn_outward(gpa, len, &lo, &hi);
	wrlock(t);
	io_note(t, EV_GPA, lo, hi, 0);
	/* Pages touched in part changed too: outward first, then inward. */
	replica_drop_range(t, lo, hi);
	ret = replica_insert(t, s.gfn, node, s.frame, s.bkey, s.n);
	unlock_changed(t);
	return ret ? ret : (int64_t)s.n;
}

/* ---- lookups -------------------------------------------------------------------- */

static void to_public(const struct ext *X, struct hk_replica_extent *e)
{
	e->gpa = X->gfn << HK_REPLICA_PAGE_SHIFT;
	e->frame = X->frame;
	e->block = X->bkey & (HK_REPLICA_BLOCK_LIMIT - 1);
	e->npages = X->npages;
	e->node = X->node;
	e->disk = (uint16_t)(X->bkey >> 48);
}

int hk_replica_lookup_gpa(struct hk_replica *t, uint64_t gpa, struct hk_replica_extent *out)
{
	uint32_t x;

	rdlock(t);
	x = gpa_covering(t, gpa >> HK_REPLICA_PAGE_SHIFT);
	if (x)
		to_public(E(t, x), out);
	unlock(t);
	return x ? 0 : -ENOENT;
}

int hk_replica_lookup_blocks(struct hk_replica *t, uint16_t disk, uint64_t block, uint64_t nblocks,
			     hk_replica_run_fn fn, void *ctx)
{
	uint64_t p, e, hits = 0, misses = 0;
	int ret = 0;

	if (block > HK_REPLICA_BLOCK_LIMIT || nblocks > HK_REPLICA_BLOCK_LIMIT - block)
		return -EINVAL;
	p = bkey_of(disk, block);
	e = p + nblocks;
	rdlock(t);
	while (p < e && !ret) {
		struct hk_replica_run run = {.block = p - bkey_of(disk, 0)};
		uint32_t x = blk_covering_longest(t, p);

		if (x) {
			const struct ext *X = E(t, x);
			uint64_t d = p - X->bkey;
			uint64_t q = min_u64(ext_bend(X), e);

			run.nblocks = q - p;
			run.hit = true;
			run.node = X->node;
			run.gpa = (X->gfn + d) << HK_REPLICA_PAGE_SHIFT;
			run.frame = X->frame + d;
			hits += run.nblocks;
			p = q;
		} else {
			uint32_t s = blk_ceil(t, p);
			uint64_t q = s ? min_u64(E(t, s)->bkey, e) : e;

			run.nblocks = q - p;
			misses += run.nblocks;
			p = q;
		}
		ret = fn(ctx, &run);
	}
	unlock(t);
	atomic_fetch_add_explicit(&t->hits, hits, memory_order_relaxed);
	atomic_fetch_add_explicit(&t->misses, misses, memory_order_relaxed);
	return ret;
}

int64_t hk_replica_foreach(struct hk_replica *t, const struct hk_replica_filter *filter,
			   hk_replica_extent_fn fn, void *ctx)
{
	static const struct hk_replica_filter all;
	const struct hk_replica_filter *f = filter ? filter : &all;
	uint64_t lo = f->gpa_start >> HK_REPLICA_PAGE_SHIFT, hi = GFN_LIMIT;
	struct tree_iter it;
	int64_t count = 0;
	uint32_t x;

	if (f->gpa_end) {
		uint64_t dummy;

		replica_gfn_outward(f->gpa_start,
				    f->gpa_end > f->gpa_start ? f->gpa_end - f->gpa_start : 0,
				    &dummy, &hi);
	}
	rdlock(t);
	if (f->by_disk && !f->gpa_start && !f->gpa_end) {
		uint64_t dlo = bkey_of(f->disk, 0), dhi = dlo + HK_REPLICA_BLOCK_LIMIT;

		tree_iter_seek(&it, t, T_BLK, dlo);
		while ((x = tree_iter_next(&it)) && E(t, x)->bkey < dhi) {
			struct hk_replica_extent e;

			if (f->by_node && E(t, x)->node != f->node)
				continue;
			to_public(E(t, x), &e);
			count++;
			if (fn(ctx, &e) || (f->limit && (uint64_t)count >= f->limit))
				break;
		}
		unlock(t);
		return count;
	}
	x = gpa_covering(t, lo);
	tree_iter_seek(&it, t, T_GPA, x ? E(t, x)->gfn : lo);
	while (lo < hi && (x = tree_iter_next(&it)) && E(t, x)->gfn < hi) {
		const struct ext *X = E(t, x);
		struct hk_replica_extent e;
		uint64_t a = max_u64(X->gfn, lo), b = min_u64(ext_end(X), hi);

		if ((f->by_node && X->node != f->node) ||
		    (f->by_disk && (uint16_t)(X->bkey >> 48) != f->disk))
			continue;
		to_public(X, &e);
		e.gpa = a << HK_REPLICA_PAGE_SHIFT;
		e.frame += a - X->gfn;
		e.block += a - X->gfn;
		e.npages = b - a;
		count++;
		if (fn(ctx, &e) || (f->limit && (uint64_t)count >= f->limit))
			break;
	}
	unlock(t);
	return count;
}

void hk_replica_get_stats(struct hk_replica *t, struct hk_replica_stats *st)
{
	rdlock(t);
	st->entries = t->pages;
	st->extents = t->used - 1;
	st->bytes_covered = t->pages << HK_REPLICA_PAGE_SHIFT;
	st->metadata_bytes = sizeof(*t) + slab_bytes(t);
	st->invalidations = t->invalidations;
	st->overdrops = t->overdrops;
	st->adds = t->adds;
	st->stale_adds = t->stale_adds;
	st->hits = atomic_load_explicit(&t->hits, memory_order_relaxed);
	st->misses = atomic_load_explicit(&t->misses, memory_order_relaxed);
	unlock(t);
}

/* ---- invariant checker (tests, hkctl replica verify) ------------------------------ */

struct walk {
	const struct hk_replica *t;
	uint8_t *seen;
	uint64_t nodes, pages;
	uint32_t prev;
	char *err;
	size_t errlen;
};

static int walk(struct walk *w, int tr, uint32_t n, int depth)
{
	const struct hk_replica *t = w->t;
	const struct ext *N = E(t, n);
	uint32_t l, r;
	int hl, hr, ret;
	uint64_t m;

	if (!n)
		return 0;
	if (n >= t->used || depth > 64) {
		snprintf(w->err, w->errlen, "tree %d: slot %u out of range or cycle", tr, n);
		return -EUCLEAN;
	}
	l = N->kid[tr][0];
	r = N->kid[tr][1];
	if ((ret = walk(w, tr, l, depth + 1)))
		return ret;
	/* in order: keys strictly increase */
	if (w->prev) {
		const struct ext *P = E(t, w->prev);
		bool ok = tr == T_GPA
			      ? ext_end(P) <= N->gfn
			      : (P->bkey < N->bkey || (P->bkey == N->bkey && P->gfn < N->gfn));

		if (!ok) {
			snprintf(w->err, w->errlen, "tree %d: slot %u out of order after %u%s", tr,
				 n, w->prev, tr == T_GPA ? " (or GPA overlap)" : "");
			return -EUCLEAN;
		}
		if (tr == T_GPA && mergeable(P, N)) {
			snprintf(w->err, w->errlen, "gfn %#llx: extents %u and %u should be one",
				 (unsigned long long)N->gfn, w->prev, n);
			return -EUCLEAN;
		}
	}
	w->prev = n;
	if (!N->npages || N->npages > EXT_MAX_PAGES || ext_end(N) > GFN_LIMIT ||
	    (N->bkey & (HK_REPLICA_BLOCK_LIMIT - 1)) + N->npages > HK_REPLICA_BLOCK_LIMIT) {
		snprintf(w->err, w->errlen, "slot %u: bad run (%u pages)", n, N->npages);
		return -EUCLEAN;
	}
	if (w->seen[n] & (1u << tr)) {
		snprintf(w->err, w->errlen, "tree %d: slot %u reached twice", tr, n);
		return -EUCLEAN;
	}
	w->seen[n] |= 1u << tr;
	w->nodes++;
	w->pages += N->npages;
	if ((ret = walk(w, tr, r, depth + 1)))
		return ret;
	hl = E(t, l)->h[tr];
	hr = E(t, r)->h[tr];
	if (N->h[tr] != 1 + (hl > hr ? hl : hr) || hl - hr > 1 || hr - hl > 1) {
		snprintf(w->err, w->errlen, "tree %d: slot %u height %u, children %d/%d", tr, n,
			 N->h[tr], hl, hr);
		return -EUCLEAN;
	}
	if (tr == T_BLK) {
		m = max_u64(ext_bend(N), max_u64(E(t, l)->bmax, E(t, r)->bmax));
		if (N->bmax != m) {
			snprintf(w->err, w->errlen, "block tree: slot %u bmax %#llx, want %#llx", n,
				 (unsigned long long)N->bmax, (unsigned long long)m);
			return -EUCLEAN;
		}
	}
	return 0;
}

int hk_replica_check(struct hk_replica *t, char *err, size_t errlen)
{
	struct walk w = {.t = t, .err = err, .errlen = errlen};
	static const struct ext zero;
	int ret = 0;

	rdlock(t);
	w.seen = calloc(t->used, 1);
	if (!w.seen) {
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (memcmp(E(t, 0), &zero, sizeof(zero))) {
		snprintf(err, errlen, "the none record was written");
		ret = -EUCLEAN;
		goto out;
	}
	for (int tr = T_GPA; tr <= T_BLK; tr++) {
		w.nodes = w.pages = 0;
		w.prev = 0;
		ret = walk(&w, tr, t->root[tr], 0);
		if (ret)
			goto out;
		if (w.nodes != t->used - 1u || w.pages != t->pages) {
			snprintf(err, errlen,
				 "tree %d: %llu extents / %llu pages, table says %u / %llu", tr,
				 (unsigned long long)w.nodes, (unsigned long long)w.pages,
				 t->used - 1, (unsigned long long)t->pages);
			ret = -EUCLEAN;
			goto out;
		}
	}
	if ((uint64_t)t->used > (uint64_t)t->nchunks * CHUNK_SLOTS) {
		snprintf(err, errlen, "%u slots used in %u chunks", t->used, t->nchunks);
		ret = -EUCLEAN;
	}
out:
	free(w.seen);
	unlock(t);
	return ret;
}
