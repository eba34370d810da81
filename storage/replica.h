/*
 * The storage-replica table (ARCHITECTURE.md sections 1 and 5).
 *
 * An entry says "this guest page, held in frame F of node N, is an exact
 * copy of block B of disk D".  Entries are kept as extents: a run of pages
 * whose GPA, frame and block all advance by one page together is ONE
 * extent, so a 1 GiB sequential read is one 56-byte record however it was
 * added.  Two indexes over the same extents:
 *
 *   by GPA          unique: a page replicates at most one block, so adding
 *                   (G, D2) replaces G's old entry (G, D1);
 *   by (disk,block) a multimap: the guest may read block B into G1 and
 *                   later into G2, and both are copies of B.
 *
 * Both are balanced search trees (AVL) keyed by extent start; the block
 * index is an interval tree (each node knows the largest block end below
 * it), so "which extents cover block B" is O(log n + k).  Costs, measured
 * figures and invariants: docs/storage.md, "Storage-replica table".
 *
 * Correctness rule above all: a replica is used only while it is provably
 * equal to its block.  So invalidations (the drop_* calls) never fail: when
 * a split finds no memory, the whole extent goes (a lost replica costs a
 * disk read; a stale one is silent data corruption).
 *
 * Thread safety: every call may be made from any thread.  One rwlock per
 * table, writer-preferring: lookups and iteration share it, changes take
 * it exclusively.  Callbacks run with the lock held for reading and must
 * not call back into the same table.
 *
 * Units: GPAs and disk offsets in the *_bytes calls are bytes; block
 * numbers, frame numbers and counts are 4 KiB pages.
 */
#ifndef HK_STORAGE_REPLICA_H
#define HK_STORAGE_REPLICA_H

#include <stdbool.h>
#include <stdint.h>

#define HK_REPLICA_PAGE_SHIFT 12
#define HK_REPLICA_PAGE_SIZE  (1ull << HK_REPLICA_PAGE_SHIFT)

/* Address limits: GPAs below 2^52 (x86-64 MAXPHYADDR), blocks below 2^48
 * per disk (1 EiB of 4 KiB blocks).  Adds beyond them are -ERANGE; drops
 * beyond them are clipped (nothing can live there). */
#define HK_REPLICA_GPA_LIMIT   (1ull << 52)
#define HK_REPLICA_BLOCK_LIMIT (1ull << 48)

struct hk_replica;

/* One extent as callers see it. */
struct hk_replica_extent {
	uint64_t gpa;	 /* first page, 4 KiB aligned */
	uint64_t frame;	 /* frame number of that page on node */
	uint64_t block;	 /* its block on disk, 4 KiB units */
	uint64_t npages; /* pages (= frames = blocks) in the run */
	uint16_t node;
	uint16_t disk;
};

struct hk_replica_stats {
	uint64_t entries;	 /* pages that have an entry */
	uint64_t extents;	 /* records holding them */
	uint64_t bytes_covered;	 /* entries * 4 KiB */
	uint64_t metadata_bytes; /* heap the table holds, slack included */
	uint64_t hits;		 /* blocks lookup_blocks found a replica for */
	uint64_t misses;	 /* blocks it reported as to be read from disk */
	uint64_t invalidations;	 /* pages that lost their entry (drops, replacement, node loss) */
	uint64_t overdrops;  /* of those, pages dropped beyond the request: no memory to split */
	uint64_t adds;	     /* pages passed to successful adds */
	uint64_t stale_adds; /* pages an I/O completion did not add: it raced a change */
};

/* Returns 0 or -ENOMEM. */
int hk_replica_create(struct hk_replica **out);
void hk_replica_destroy(struct hk_replica *t);

/* ---- adding ---------------------------------------------------------------- */

/*
 * Record that npages pages from gpa (4 KiB aligned), held in frames
 * frame.. of node, are exact copies of blocks block.. of disk.  Whatever
 * those pages replicated before is dropped (a page holds one block's data);
 * the new run merges with neighbouring extents where GPA, frame and block
 * are all contiguous.  O(log n) plus O(log n) per extent it replaces.
 *
 * Returns 0, -EINVAL (gpa unaligned), -ERANGE (beyond the limits above),
 * -EBUSY (an I/O begun with hk_replica_io_begin is writing into these pages)
 * or -ENOMEM.  After -EBUSY or -ENOMEM no page of the range keeps its old
 * entry -- the caller is telling us the pages changed -- and none has the
 * new one (except, for runs over 2^31 pages, the pieces added before the
 * failure).  -EINVAL and -ERANGE change nothing.  npages == 0 is a no-op.
 * An add needs two spare records even when it merges, so at the memory
 * limit it fails rather than guess.
 */
int hk_replica_add(struct hk_replica *t, uint64_t gpa, uint16_t node, uint64_t frame, uint16_t disk,
		   uint64_t block, uint64_t npages);

/*
 * Byte-granular form for I/O of any alignment: guest bytes [gpa, gpa+len)
 * now equal disk bytes [offset, offset+len) (frame is the frame of the page
 * that contains gpa; frames advance with pages).
 *   - every page the range touches loses its old entry (rounding OUTWARD:
 *     a page partly overwritten no longer equals anything);
 *   - entries are added only for pages the range covers whole whose disk
 *     bytes are a whole block (rounding INWARD), so none is added at all
 *     unless gpa and offset are congruent modulo 4 KiB.
 * Returns the number of pages added (>= 0) or the errors of hk_replica_add.
 */
int64_t hk_replica_add_bytes(struct hk_replica *t, uint64_t gpa, uint16_t node, uint64_t frame,
			     uint16_t disk, uint64_t offset, uint64_t len);

/* ---- invalidation: never fails ------------------------------------------------ */

/*
 * The guest (or a device) wrote pages [gpa, gpa+npages*4K): their entries
 * go.  gpa is rounded down to a page; the range may cover any part of any
 * extents (extents are trimmed or split).  Returns the pages that lost an
 * entry.  O(log n) per extent touched.
 */
uint64_t hk_replica_drop_gpa(struct hk_replica *t, uint64_t gpa, uint64_t npages);
/* Same for a byte range, rounding OUTWARD: every page touched loses its entry. */
uint64_t hk_replica_drop_gpa_bytes(struct hk_replica *t, uint64_t gpa, uint64_t len);

/*
 * Blocks [block, block+nblocks) of disk are being overwritten: every
 * replica of them, in every page, is dropped.  Call it once the data has
 * reached the disk (whether or not the write succeeded) and BEFORE the
 * write is acknowledged to the guest; with the io_begin/io_end protocol
 * below, io_end does it.  Returns the pages that lost an entry.
 * O(log n + k) for k extents touched.
 */
uint64_t hk_replica_drop_blocks(struct hk_replica *t, uint16_t disk, uint64_t block,
				uint64_t nblocks);
/* Byte range, rounding OUTWARD: a block written in part loses its replicas. */
uint64_t hk_replica_drop_blocks_bytes(struct hk_replica *t, uint16_t disk, uint64_t offset,
				      uint64_t len);

/* A node was lost: every entry whose frame lives there goes.  O(n log n) worst. */
uint64_t hk_replica_drop_node(struct hk_replica *t, uint16_t node);

/* Drop everything (counted in invalidations) and return memory to the heap. */
void hk_replica_clear(struct hk_replica *t);

/* ---- lookups --------------------------------------------------------------- */

/* The extent (whole, not clipped) whose pages include gpa: 0 or -ENOENT. */
int hk_replica_lookup_gpa(struct hk_replica *t, uint64_t gpa, struct hk_replica_extent *out);

/*
 * A read of blocks [block, block+nblocks) of disk, cut into runs in block
 * order that tile the range exactly: a hit run has a replica (gpa, node and
 * frame of its first block; the following blocks are in the following
 * pages), a miss run must be read from the disk.  Where several pages
 * replicate a block, the one covering the longest run is reported.
 */
struct hk_replica_run {
	uint64_t block;	  /* first block of the run */
	uint64_t nblocks; /* >= 1 */
	bool hit;
	uint16_t node;	/* hit only */
	uint64_t gpa;	/* hit only: page holding `block` */
	uint64_t frame; /* hit only: frame holding `block` */
};

/* Return 0 to go on; anything else stops the walk and is returned. */
typedef int (*hk_replica_run_fn)(void *ctx, const struct hk_replica_run *run);

/*
 * Calls fn for each run.  fn runs under the read lock, so no drop can
 * complete while it runs: copy the replica's data INSIDE fn and the copy is
 * known to equal the block (provided the write-protect fault handler drops
 * a page's entry before it lets the write through).  Counts hits and misses
 * in blocks.  Returns 0, fn's non-zero value, or -EINVAL for a range past
 * HK_REPLICA_BLOCK_LIMIT.  O(log n) per run.
 */
int hk_replica_lookup_blocks(struct hk_replica *t, uint16_t disk, uint64_t block, uint64_t nblocks,
			     hk_replica_run_fn fn, void *ctx);

/* ---- iteration (hkctl replica show) ---------------------------------------- */

/* Zero-initialised: everything, in GPA order. */
struct hk_replica_filter {
	bool by_disk;
	uint16_t disk;
	bool by_node;
	uint16_t node;
	uint64_t gpa_start; /* bytes: extents overlapping [gpa_start, gpa_end) */
	uint64_t gpa_end;   /* 0: no upper bound */
	uint64_t limit;	    /* at most this many extents; 0: no limit */
};

typedef int (*hk_replica_extent_fn)(void *ctx, const struct hk_replica_extent *e);

/*
 * Calls fn for each extent that passes the filter; non-zero from fn stops.
 * Order: by (block, gpa) when the filter is by_disk without a GPA range
 * (whole extents), otherwise by GPA, each extent clipped to the GPA range.
 * Returns the number of extents passed to fn.  O(log n) + O(1) per extent
 * visited (extents the filter rejects are visited too).
 */
int64_t hk_replica_foreach(struct hk_replica *t, const struct hk_replica_filter *filter,
			   hk_replica_extent_fn fn, void *ctx);

void hk_replica_get_stats(struct hk_replica *t, struct hk_replica_stats *st);

/* ---- I/O protocol: entries from disk I/O without races ---------------------- */

/*
 * A page's content can change while the I/O that should make it a replica
 * is in flight (the guest writes the buffer, another request lands in it,
 * another write hits the same blocks and completes first).  Adding the
 * entry at completion would then record a copy that is not one.  Bracket
 * every virtio-blk request (each piece with contiguous frames on one node)
 * with io_begin before submitting and io_end after completion:
 *
 *   read  (disk -> guest): io_begin drops the destination pages' entries
 *         and marks them in flight; io_end adds the entries unless anything
 *         touched those pages or blocks meanwhile;
 *   write (guest -> disk): io_end drops every replica of the blocks written
 *         (rounding outward) and then adds the source pages as replicas of
 *         them unless anything touched either meanwhile.
 *
 * "Touched" means a drop_gpa/drop_blocks/drop_node/clear/add of an
 * overlapping range, another in-flight read into the pages, or more than
 * HK_REPLICA_IO_HISTORY changes of any kind since io_begin (the history
 * is a ring; overflow means "maybe", hence no entry).  The caller must
 * write-protect the pages before submitting so a guest write during the
 * I/O reaches hk_replica_drop_gpa.  Skipping an entry is always safe.
 */
#define HK_REPLICA_IO_HISTORY 4096u
/* Reads in flight per table with their own pin; one more gets no entry and,
 * until it ends, no add anywhere succeeds. */
#define HK_REPLICA_IO_INFLIGHT 1024u

enum hk_replica_io_dir {
	HK_REPLICA_IO_READ = 0,	 /* disk -> guest pages */
	HK_REPLICA_IO_WRITE = 1, /* guest pages -> disk */
};

struct hk_replica_io {
	enum hk_replica_io_dir dir;
	uint64_t gpa;	/* guest buffer, bytes, any alignment */
	uint64_t len;	/* bytes */
	uint16_t node;	/* node holding the buffer's frames */
	uint64_t frame; /* frame of the page containing gpa; contiguous after */
	uint16_t disk;
	uint64_t offset; /* disk bytes */
	uint64_t ticket; /* set by io_begin; opaque */
};

/* Before submitting.  Never fails.  Returns the pages whose entries a read
 * dropped.  Every io_begin must be matched by one io_end: a read left
 * pinned keeps its pages from ever becoming replicas. */
uint64_t hk_replica_io_begin(struct hk_replica *t, struct hk_replica_io *io);
/*
 * After completion, before acknowledging to the guest; ok: the whole
 * transfer succeeded.  Returns the pages added (0 if !ok), -ESTALE if a
 * race made the entry unprovable (nothing added; the drops still done),
 * -EINVAL for an io that io_begin did not see, or -ENOMEM.
 */
int64_t hk_replica_io_end(struct hk_replica *t, struct hk_replica_io *io, bool ok);

#endif
