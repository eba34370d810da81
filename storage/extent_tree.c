/*
 * The replica table's storage: a slab of 56-byte extent records and two
 * AVL trees threaded through them.
 *
 *   GPA tree    keyed by gfn; extents never overlap in GPA space, so
 *               "the extent containing g" is a predecessor search.
 *   block tree  keyed by (bkey, gfn) -- the gfn makes keys unique, since
 *               one block may be replicated in many pages -- and augmented
 *               with bmax, the furthest block end in each subtree, so it
 *               is an interval tree: overlapping runs are found in
 *               O(log n) each even though they may nest arbitrarily.
 *
 * Why AVL over 32-bit slot numbers: a record carries both trees' links in
 * 16 bytes and both heights in 2, so nothing but the slab is allocated per
 * extent (a pointer-based red-black tree pair with malloc'd nodes costs
 * ~100 bytes), and AVL's tighter height bound (1.44 log2 n, < 48 for 2^32
 * extents) keeps lookups short.  The slab is kept dense -- freeing moves
 * the last record into the hole -- so memory follows the live count and
 * drop_node can scan an array.
 *
 * Everything here runs under the table lock (replica.c).
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "replica_internal.h"

static_assert(sizeof(struct ext) == 56, "extent record grew: update docs/storage.md");

/* ---- slab ----------------------------------------------------------------- */

static int chunk_add(struct hk_replica *t)
{
	struct ext *c;

	if (t->nchunks == t->chunks_cap) {
		uint32_t cap = t->chunks_cap ? t->chunks_cap * 2 : 16;
		struct ext **n = realloc(t->chunks, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		t->chunks = n;
		t->chunks_cap = cap;
	}
	c = calloc(CHUNK_SLOTS, sizeof(*c));
	if (!c)
		return -ENOMEM;
	t->chunks[t->nchunks++] = c;
	return 0;
}

int slab_init(struct hk_replica *t)
{
	t->slot_limit = UINT32_MAX;
	if (chunk_add(t))
		return -ENOMEM;
	t->used = 1; /* slot 0: the "none" record, all zero */
	return 0;
}

void slab_fini(struct hk_replica *t)
{
	for (uint32_t i = 0; i < t->nchunks; i++)
		free(t->chunks[i]);
	free(t->chunks);
	t->chunks = NULL;
	t->nchunks = t->chunks_cap = 0;
	t->used = 0;
}

int slab_reserve(struct hk_replica *t, uint32_t k)
{
	uint64_t need = (uint64_t)t->used + k;

	if (need > t->slot_limit || need > UINT32_MAX)
		return -ENOMEM;
	while (need > (uint64_t)t->nchunks * CHUNK_SLOTS)
		if (chunk_add(t))
			return -ENOMEM;
	return 0;
}

uint32_t slab_alloc(struct hk_replica *t)
{
	uint32_t x;

	if (slab_reserve(t, 1))
		return 0;
	x = t->used++;
	memset(E(t, x), 0, sizeof(struct ext));
	return x;
}

static int cmp(const struct hk_replica *t, int tr, uint32_t a, uint32_t b)
{
	const struct ext *A = E(t, a), *B = E(t, b);

	if (tr == T_BLK && A->bkey != B->bkey)
		return A->bkey < B->bkey ? -1 : 1;
	if (A->gfn != B->gfn)
		return A->gfn < B->gfn ? -1 : 1;
	return 0;
}

/* Point whichever link refers to `from` (a child link or the root) at `to`. */
static void relink(struct hk_replica *t, int tr, uint32_t from, uint32_t to)
{
	uint32_t *p = &t->root[tr];

	while (*p != from) {
		assert(*p);
		p = &E(t, *p)->kid[tr][cmp(t, tr, from, *p) > 0];
	}
	*p = to;
}

void slab_free(struct hk_replica *t, uint32_t x)
{
	uint32_t last = t->used - 1;

	assert(x && x < t->used);
	if (x != last) {
		/* O(log n): find last's parents by its (unique) keys. */
		relink(t, T_GPA, last, x);
		relink(t, T_BLK, last, x);
		*E(t, x) = *E(t, last);
	}
	t->used--;
}

void slab_trim(struct hk_replica *t)
{
	/* Keep half a chunk of slack so an add/drop pair at a boundary does
	 * not free and reallocate 224 KiB each time. */
	while (t->nchunks > 1 &&
	       (uint64_t)t->used + CHUNK_SLOTS / 2 <= (uint64_t)(t->nchunks - 1) * CHUNK_SLOTS)
		free(t->chunks[--t->nchunks]);
}

size_t slab_bytes(const struct hk_replica *t)
{
	return (size_t)t->nchunks * CHUNK_SLOTS * sizeof(struct ext) +
	       (size_t)t->chunks_cap * sizeof(struct ext *);
}

/* ---- AVL -------------------------------------------------------------------- */

static void fix(struct hk_replica *t, int tr, uint32_t n)
{
	struct ext *N = E(t, n);
	const struct ext *L = E(t, N->kid[tr][0]), *R = E(t, N->kid[tr][1]);

	N->h[tr] = 1 + (L->h[tr] > R->h[tr] ? L->h[tr] : R->h[tr]);
	if (tr == T_BLK) {
		uint64_t m = ext_bend(N);

		if (L->bmax > m)
			m = L->bmax;
		if (R->bmax > m)
			m = R->bmax;
		N->bmax = m;
	}
}

/* dir 0: the right child rises (rotate left); dir 1: the left child rises. */
static uint32_t rotate(struct hk_replica *t, int tr, uint32_t n, int dir)
{
	uint32_t c = E(t, n)->kid[tr][!dir];

	E(t, n)->kid[tr][!dir] = E(t, c)->kid[tr][dir];
	E(t, c)->kid[tr][dir] = n;
	fix(t, tr, n);
	fix(t, tr, c);
	return c;
}

static int height(const struct hk_replica *t, int tr, uint32_t n)
{
	return E(t, n)->h[tr];
}

static uint32_t rebalance(struct hk_replica *t, int tr, uint32_t n)
{
	struct ext *N = E(t, n);
	int bf;

	fix(t, tr, n);
	bf = height(t, tr, N->kid[tr][0]) - height(t, tr, N->kid[tr][1]);
	if (bf > 1) {
		uint32_t l = N->kid[tr][0];

		if (height(t, tr, E(t, l)->kid[tr][0]) < height(t, tr, E(t, l)->kid[tr][1]))
			N->kid[tr][0] = rotate(t, tr, l, 0);
		return rotate(t, tr, n, 1);
	}
	if (bf < -1) {
		uint32_t r = N->kid[tr][1];

		if (height(t, tr, E(t, r)->kid[tr][1]) < height(t, tr, E(t, r)->kid[tr][0]))
			N->kid[tr][1] = rotate(t, tr, r, 1);
		return rotate(t, tr, n, 0);
	}
	return n;
}

/* Recursion depth is the tree height: < 48 frames for 2^32 extents. */
static uint32_t insert_at(struct hk_replica *t, int tr, uint32_t root, uint32_t x)
{
	int dir;

	if (!root) {
		struct ext *X = E(t, x);

		X->kid[tr][0] = X->kid[tr][1] = 0;
		fix(t, tr, x);
		return x;
	}
	dir = cmp(t, tr, x, root) > 0;
	E(t, root)->kid[tr][dir] = insert_at(t, tr, E(t, root)->kid[tr][dir], x);
	return rebalance(t, tr, root);
}

void tree_insert(struct hk_replica *t, int tr, uint32_t x)
{
	t->root[tr] = insert_at(t, tr, t->root[tr], x);
}

static uint32_t remove_min(struct hk_replica *t, int tr, uint32_t n, uint32_t *min)
{
	struct ext *N = E(t, n);

	if (!N->kid[tr][0]) {
		*min = n;
		return N->kid[tr][1];
	}
	N->kid[tr][0] = remove_min(t, tr, N->kid[tr][0], min);
	return rebalance(t, tr, n);
}

static uint32_t remove_at(struct hk_replica *t, int tr, uint32_t n, uint32_t x)
{
	struct ext *N = E(t, n);
	int c;

	assert(n);
	c = cmp(t, tr, x, n);
	if (c == 0) {
		uint32_t l = N->kid[tr][0], r = N->kid[tr][1], m;

		if (!l || !r)
			return l ? l : r;
		r = remove_min(t, tr, r, &m);
		E(t, m)->kid[tr][0] = l;
		E(t, m)->kid[tr][1] = r;
		return rebalance(t, tr, m);
	}
	N->kid[tr][c > 0] = remove_at(t, tr, N->kid[tr][c > 0], x);
	return rebalance(t, tr, n);
}

void tree_remove(struct hk_replica *t, int tr, uint32_t x)
{
	t->root[tr] = remove_at(t, tr, t->root[tr], x);
	E(t, x)->kid[tr][0] = E(t, x)->kid[tr][1] = 0;
}

/* ---- queries ------------------------------------------------------------------ */

uint32_t gpa_covering(const struct hk_replica *t, uint64_t gfn)
{
	uint32_t n = t->root[T_GPA], best = 0;

	while (n) {
		const struct ext *N = E(t, n);

		if (N->gfn <= gfn) {
			best = n;
			n = N->kid[T_GPA][1];
		} else {
			n = N->kid[T_GPA][0];
		}
	}
	return best && gfn < ext_end(E(t, best)) ? best : 0;
}

uint32_t gpa_ceil(const struct hk_replica *t, uint64_t gfn)
{
	uint32_t n = t->root[T_GPA], best = 0;

	while (n) {
		const struct ext *N = E(t, n);

		if (N->gfn >= gfn) {
			best = n;
			n = N->kid[T_GPA][0];
		} else {
			n = N->kid[T_GPA][1];
		}
	}
	return best;
}

uint32_t gpa_first_overlap(const struct hk_replica *t, uint64_t lo, uint64_t hi)
{
	uint32_t x = gpa_covering(t, lo);

	if (x)
		return x;
	x = gpa_ceil(t, lo);
	return x && E(t, x)->gfn < hi ? x : 0;
}

uint32_t blk_first_overlap(const struct hk_replica *t, uint64_t lo, uint64_t hi)
{
	uint32_t n = t->root[T_BLK];

	/*
	 * If the left subtree reaches past lo, the answer is there or nowhere:
	 * a run in it that ends after lo but does not overlap starts at or
	 * after hi, and everything to its right starts later still.
	 */
	while (n) {
		const struct ext *N = E(t, n);
		uint32_t l = N->kid[T_BLK][0];

		if (l && E(t, l)->bmax > lo) {
			n = l;
			continue;
		}
		if (N->bkey >= hi)
			return 0;
		if (ext_bend(N) > lo)
			return n;
		n = N->kid[T_BLK][1];
	}
	return 0;
}

static void longest_at(const struct hk_replica *t, uint32_t n, uint64_t key, uint32_t *best)
{
	/* Every node visited either covers key or prunes a subtree, so this is
	 * O(log n) per run containing key: the multimap's duplicates. */
	while (n) {
		const struct ext *N = E(t, n);

		if (N->bmax <= key)
			return;
		longest_at(t, N->kid[T_BLK][0], key, best);
		if (N->bkey > key)
			return;
		if (ext_bend(N) > key && (!*best || ext_bend(N) > ext_bend(E(t, *best))))
			*best = n;
		n = N->kid[T_BLK][1];
	}
}

uint32_t blk_covering_longest(const struct hk_replica *t, uint64_t bkey)
{
	uint32_t best = 0;

	longest_at(t, t->root[T_BLK], bkey, &best);
	return best;
}

uint32_t blk_ceil(const struct hk_replica *t, uint64_t key)
{
	uint32_t n = t->root[T_BLK], best = 0;

	while (n) {
		const struct ext *N = E(t, n);

		if (N->bkey >= key) {
			best = n;
			n = N->kid[T_BLK][0];
		} else {
			n = N->kid[T_BLK][1];
		}
	}
	return best;
}

static uint64_t primary(const struct hk_replica *t, int tr, uint32_t n)
{
	return tr == T_GPA ? E(t, n)->gfn : E(t, n)->bkey;
}

void tree_iter_seek(struct tree_iter *it, const struct hk_replica *t, int tr, uint64_t key)
{
	uint32_t n = t->root[tr];

	it->t = t;
	it->tr = tr;
	it->sp = 0;
	while (n) {
		if (primary(t, tr, n) >= key) {
			it->stack[it->sp++] = n;
			n = E(t, n)->kid[tr][0];
		} else {
			n = E(t, n)->kid[tr][1];
		}
	}
}

uint32_t tree_iter_next(struct tree_iter *it)
{
	uint32_t n, m;

	if (!it->sp)
		return 0;
	n = it->stack[--it->sp];
	for (m = E(it->t, n)->kid[it->tr][1]; m; m = E(it->t, m)->kid[it->tr][0])
		it->stack[it->sp++] = m;
	return n;
}
