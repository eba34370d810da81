/*
 * Internal to storage/: the replica table's records and its two ordered
 * indexes.  replica.c (operations, locking), replica_io.c (the I/O
 * protocol) and extent_tree.c (slab and trees) share it; tests include it
 * for the invariant checker and the allocation-failure hook.
 */
#ifndef HK_STORAGE_REPLICA_INTERNAL_H
#define HK_STORAGE_REPLICA_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "replica.h"

/*
 * One extent, in both trees at once (intrusive nodes, 32-bit slot indexes
 * instead of pointers): 56 bytes, nothing else per extent.  Blocks are
 * keyed as bkey = disk << 48 | block, so one integer orders (disk, block)
 * and a run never crosses into the next disk (block + npages <= 2^48).
 */
struct ext {
	uint64_t gfn;	    /* gpa >> 12 */
	uint64_t frame;	    /* frame of the first page on node */
	uint64_t bkey;	    /* disk << 48 | block */
	uint64_t bmax;	    /* block tree: max(bkey + npages) over this subtree */
	uint32_t npages;    /* 1 .. EXT_MAX_PAGES */
	uint32_t kid[2][2]; /* [tree][0 left, 1 right]; 0 = none */
	uint16_t node;
	uint8_t h[2]; /* AVL height per tree; 1 for a leaf */
};

enum { T_GPA = 0, T_BLK = 1 };

/* Merging stops at 2^31 pages (8 TiB) so npages fits 32 bits with room. */
#define EXT_MAX_PAGES (1u << 31)

/* The slab: chunks of 4096 records (224 KiB), never moved, so a record's
 * address is stable while the table is locked.  Slot 0 is the all-zero
 * "none" record (height 0, bmax 0), which spares the trees NULL checks. */
#define CHUNK_SHIFT 12
#define CHUNK_SLOTS (1u << CHUNK_SHIFT)
#define CHUNK_MASK  (CHUNK_SLOTS - 1)

/* I/O protocol history: what changed, in order (replica_io.c). */
enum ev_kind { EV_GPA = 1, EV_BLK, EV_NODE, EV_ALL };
struct ev {
	uint64_t lo, hi; /* [lo, hi) in gfn (EV_GPA) or bkey (EV_BLK) units */
	uint16_t node;	 /* EV_NODE */
	uint8_t kind;
};

/* A read in flight into [lo, hi) (gfn units); identified by its ticket. */
struct pin {
	uint64_t lo, hi;
	uint64_t ticket;
};

struct hk_replica {
	pthread_rwlock_t lock;

	struct ext **chunks;
	uint32_t nchunks, chunks_cap;
	uint32_t used;	     /* slots in use, slot 0 included: extents = used - 1 */
	uint32_t slot_limit; /* test hook: reservations beyond fail as -ENOMEM */
	uint32_t root[2];
	uint64_t pages; /* sum of npages */

	/* counters changed under the write lock */
	uint64_t invalidations, overdrops, adds, stale_adds;
	/* counted by lookups under the read lock */
	_Atomic uint64_t hits, misses;

	/* I/O protocol (replica_io.c); under the write lock */
	uint64_t ev_seq; /* changes recorded so far; ev[seq % HISTORY] */
	struct ev ev[HK_REPLICA_IO_HISTORY];
	uint32_t npins;
	uint32_t unpinned; /* reads in flight that found no pin slot: while
			    * any is, every page counts as pinned */
	struct pin pins[HK_REPLICA_IO_INFLIGHT];
};

static inline struct ext *E(const struct hk_replica *t, uint32_t i)
{
	return &t->chunks[i >> CHUNK_SHIFT][i & CHUNK_MASK];
}

static inline uint64_t ext_end(const struct ext *x)
{
	return x->gfn + x->npages;
}

static inline uint64_t ext_bend(const struct ext *x)
{
	return x->bkey + x->npages;
}

static inline uint64_t bkey_of(uint16_t disk, uint64_t block)
{
	return (uint64_t)disk << 48 | block;
}

/* ---- extent_tree.c: slab and the two trees ---------------------------------- */

int slab_init(struct hk_replica *t);
void slab_fini(struct hk_replica *t);
/* Make room for k more records; -ENOMEM leaves everything as it was. */
int slab_reserve(struct hk_replica *t, uint32_t k);
/* A zeroed record, or 0 when no memory. */
uint32_t slab_alloc(struct hk_replica *t);
/* x is in neither tree: the last record moves into its slot (both trees
 * relinked), so slot numbers are not stable across frees. */
void slab_free(struct hk_replica *t, uint32_t x);
/* Return whole spare chunks beyond a half-chunk of slack; call at the end
 * of an operation, never inside one (reservations would be lost). */
void slab_trim(struct hk_replica *t);
size_t slab_bytes(const struct hk_replica *t);

void tree_insert(struct hk_replica *t, int tr, uint32_t x);
/* x must be in the tree with its current key. */
void tree_remove(struct hk_replica *t, int tr, uint32_t x);

/* GPA index: the extent containing gfn, or 0. */
uint32_t gpa_covering(const struct hk_replica *t, uint64_t gfn);
/* The first extent with start >= gfn, or 0. */
uint32_t gpa_ceil(const struct hk_replica *t, uint64_t gfn);
/* The first extent (lowest start) overlapping [lo, hi), or 0. */
uint32_t gpa_first_overlap(const struct hk_replica *t, uint64_t lo, uint64_t hi);

/* Block index: the first extent in (bkey, gfn) order overlapping
 * [lo, hi) in bkey space, or 0.  O(log n). */
uint32_t blk_first_overlap(const struct hk_replica *t, uint64_t lo, uint64_t hi);
/* Of the extents containing bkey, the one reaching furthest, or 0. */
uint32_t blk_covering_longest(const struct hk_replica *t, uint64_t bkey);
/* The first extent with bkey >= key, or 0. */
uint32_t blk_ceil(const struct hk_replica *t, uint64_t key);

/* In-order iteration with an explicit stack (AVL height < 48 for 2^32). */
struct tree_iter {
	const struct hk_replica *t;
	int tr;
	int sp;
	uint32_t stack[64];
};
/* Position at the first extent whose primary key (gfn or bkey) >= key. */
void tree_iter_seek(struct tree_iter *it, const struct hk_replica *t, int tr, uint64_t key);
uint32_t tree_iter_next(struct tree_iter *it);

/* ---- test hooks ------------------------------------------------------------- */

/* Check every invariant (docs/storage.md); 0 or -EUCLEAN with one line in
 * err.  O(n); takes the read lock. */
int hk_replica_check(struct hk_replica *t, char *err, size_t errlen);
/* Fail reservations that would hold more than max extents, as if malloc
 * had; UINT32_MAX lifts it. */
void hk_replica_set_extent_limit(struct hk_replica *t, uint32_t max);

/* ---- replica_io.c ----------------------------------------------------------- */

/* Record a change for in-flight I/O to see; under the write lock. */
void io_note(struct hk_replica *t, uint8_t kind, uint64_t lo, uint64_t hi, uint16_t node);
/* Is [lo, hi) (gfn units) being written by a read in flight? */
bool io_pinned(const struct hk_replica *t, uint64_t lo, uint64_t hi);

/* ---- replica.c, for replica_io.c (write lock held) ---------------------------- */

uint64_t replica_drop_range(struct hk_replica *t, uint64_t lo, uint64_t hi);
uint64_t replica_drop_bkeys(struct hk_replica *t, uint64_t lo, uint64_t hi);
/* Inward part of an aligned byte I/O: the (gfn, frame, bkey, n) to add, or
 * n = 0 when no page is whole. */
struct span {
	uint64_t gfn, frame, bkey, n;
};
int replica_span(uint64_t gpa, uint64_t frame, uint16_t disk, uint64_t offset, uint64_t len,
		 struct span *s);
int replica_insert(struct hk_replica *t, uint64_t gfn, uint16_t node, uint64_t frame, uint64_t bkey,
		   uint64_t n);
void replica_gfn_outward(uint64_t gpa, uint64_t len, uint64_t *lo, uint64_t *hi);
void replica_bkey_outward(uint16_t disk, uint64_t offset, uint64_t len, uint64_t *lo, uint64_t *hi);

#endif
