/*
 * The storage-replica rules on virtio-blk requests (storage/replica.h):
 *
 *   read D into G   served from a replica of D when every block of the
 *                   request has one (zero-copy when the replica already is
 *                   G, as after a guest reboot that re-reads its data set
 *                   into the same buffers), else read from the disk; G
 *                   becomes a replica of D when the read completes;
 *   write G to D    every replica of D is dropped when the write completes,
 *                   before the guest hears of it, and G becomes one (the
 *                   write is FUA, so "complete" means durable);
 *   guest writes G  G is tracked (wtrack.c) while it is a replica or is
 *                   being written out, and a write to it drops G's entry
 *                   (vm.c installs that hook): at once with uffd, at the
 *                   next harvest with KVM's dirty log.  So every read
 *                   served from replicas harvests its source pages first,
 *                   and again after copying them: a write that landed
 *                   during the copy makes the disk serve the read instead.
 *                   A writeback harvests its pages before io_end decides.
 *
 * Pages are faulted in before they are protected: write-protecting a
 * missing page does nothing, and such a page could then change unseen.
 *
 * Known limit: a guest that writes into a read buffer while the device
 * still owns it (a virtio protocol violation) is not detected during the
 * transfer itself; pages are protected from completion on.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "blk.h"
#include "hk_internal.h"
#include "mem_internal.h"
#include "replica.h"

#define PG HK_PAGE_SIZE

static bool seg_whole_pages(const struct hk_vq_buf *s, uint64_t off)
{
	return !(s->gpa % PG) && !(off % PG) && !(s->len % PG);
}

/*
 * Before the pages' protection changes or the disk moves data: touch every
 * page so it is present (resolved by the fault thread), or with pooled
 * memory make them exclusive here and keep them so until the request
 * completes (hk_blk_pin) -- a shared copy's protection belongs to
 * coherence, and io_uring must not lose its pages to another node.  Not
 * done for a read served in place: no page changes.
 */
static int prefault(struct hk_blk_req *r)
{
	if (hk_mem_pooled(r->blk->vm->mem))
		return hk_blk_pin(r);
	for (unsigned i = 0; i < r->nseg; i++)
		for (uint64_t o = 0; o < r->seg[i].len; o += PG)
			(void)*(volatile uint8_t *)((uint8_t *)r->seg[i].hva + o);
	return 0;
}

/* Pages about to be overwritten by the device: no longer replicas. */
static void release(struct hk_blk *b, const struct hk_vq_buf *s)
{
	struct hk_mem *mem = b->vm->mem;
	uint64_t first = s->gpa & ~(PG - 1), end = (s->gpa + s->len + PG - 1) & ~(PG - 1);

	for (uint64_t g = first; g < end; g += PG)
		hk_mem_page_clear(mem, hk_mem_frame(mem, g), HK_PG_REPLICA);
	hk_mem_track(mem, first, end - first, false);
}

/* Protect whole pages of a segment and mark them as replicas-to-be. */
static void protect(struct hk_blk *b, const struct hk_vq_buf *s)
{
	struct hk_mem *mem = b->vm->mem;

	for (uint64_t g = s->gpa; g < s->gpa + s->len; g += PG)
		hk_mem_page_set(mem, hk_mem_frame(mem, g), HK_PG_REPLICA);
	hk_mem_track(mem, s->gpa, s->len, true);
}

/* After io_end: pages without an entry go back to plain memory. */
static void settle(struct hk_blk *b, const struct hk_vq_buf *s)
{
	struct hk_mem *mem = b->vm->mem;
	struct hk_replica_extent e;

	for (uint64_t g = s->gpa; g < s->gpa + s->len; g += PG) {
		if (hk_replica_lookup_gpa(b->replicas, g, &e) == 0)
			continue;
		hk_mem_page_clear(mem, hk_mem_frame(mem, g), HK_PG_REPLICA);
		hk_mem_track(mem, g, PG, false);
	}
}

static void io_begin(struct hk_blk_req *r, unsigned i, uint64_t off, enum hk_replica_io_dir dir)
{
	struct hk_blk *b = r->blk;

	r->rio[i] = (struct hk_replica_io){
		.dir = dir,
		.gpa = r->seg[i].gpa,
		.len = r->seg[i].len,
		.node = b->node_id,
		.frame = hk_mem_frame(b->vm->mem, r->seg[i].gpa),
		.disk = b->disk_id,
		.offset = off,
	};
	hk_replica_io_begin(b->replicas, &r->rio[i]);
	r->rio_on[i] = true;
}

static void io_end_all(struct hk_blk_req *r, bool ok)
{
	struct hk_blk *b = r->blk;

	for (unsigned i = 0; i < r->nseg; i++) {
		int64_t added;

		if (!r->rio_on[i])
			continue;
		/* Protect first: a guest write from here on reaches the fault
		 * hook, which io_end then sees as a reason not to add.  A
		 * writeback's pages were tracked since io_begin: take in what
		 * the guest wrote meanwhile before io_end decides. */
		if (ok && seg_whole_pages(&r->seg[i], r->rio[i].offset))
			protect(b, &r->seg[i]);
		if (r->rio[i].dir == HK_REPLICA_IO_WRITE &&
		    seg_whole_pages(&r->seg[i], r->rio[i].offset))
			hk_mem_harvest(b->vm->mem, r->seg[i].gpa, r->seg[i].len);
		/* Only protected (whole-page) segments may add entries; the
		 * table would add the whole pages inside any segment. */
		added = hk_replica_io_end(b->replicas, &r->rio[i],
					  ok && seg_whole_pages(&r->seg[i], r->rio[i].offset));
		r->rio_on[i] = false;
		if (seg_whole_pages(&r->seg[i], r->rio[i].offset) && (added <= 0 || !ok))
			settle(b, &r->seg[i]);
	}
}

/* Source pages a served read copies from (or is), for the harvests. */
#define SERVE_SOURCES 32

struct serve {
	struct hk_blk *b;
	const struct hk_vq_buf *seg;
	uint64_t block0;
	bool copy;      /* false: only check that every block has a replica */
	bool need_copy; /* some replica is in another page */
	struct hk_mem_range *src; /* non-NULL: collect the sources here */
	unsigned *n_src;
};

static int serve_run(void *ctx, const struct hk_replica_run *run)
{
	struct serve *c = ctx;
	uint64_t dst = c->seg->gpa + (run->block - c->block0) * PG, n = run->nblocks * PG;
	void *from, *to;

	if (!run->hit || run->node != c->b->node_id)
		return 1;
	if (c->src && *c->n_src <= SERVE_SOURCES) {
		if (*c->n_src < SERVE_SOURCES)
			c->src[*c->n_src] = (struct hk_mem_range){run->gpa, n};
		++*c->n_src; /* SERVE_SOURCES + 1: too many, harvest everything */
	}
	if (run->gpa == dst)
		return 0; /* the page already is the replica */
	if (!c->copy) {
		c->need_copy = true;
		return 0;
	}
	from = hk_mem_gpa(c->b->vm->mem, run->gpa, n);
	to = hk_mem_gpa(c->b->vm->mem, dst, n);
	if (!from || !to)
		return 1;
	/* Under the table's read lock: the source cannot stop being a
	 * replica in the table while we copy it (a guest write to it is
	 * caught by the harvest after the copy). */
	memcpy(to, from, n);
	return 0;
}

static int lookup_all(struct hk_blk_req *r, bool copy, bool *need_copy, struct hk_mem_range *src,
		      unsigned *n_src)
{
	uint64_t off = r->offset;

	for (unsigned i = 0; i < r->nseg; i++) {
		struct serve c = {r->blk, &r->seg[i], off / PG, copy, false, src, n_src};

		if (hk_replica_lookup_blocks(r->blk->replicas, r->blk->disk_id, off / PG,
					     r->seg[i].len / PG, serve_run, &c))
			return 1;
		if (c.need_copy)
			*need_copy = true;
		off += r->seg[i].len;
	}
	return 0;
}

/* Every guest write to the sources so far drops their entries; returns how
 * many pages stopped being replicas.  Outside the table's lock: the drops
 * take it. */
static uint64_t harvest_sources(struct hk_blk *b, const struct hk_mem_range *src, unsigned n)
{
	uint64_t dropped = 0;

	if (n > SERVE_SOURCES)
		return hk_mem_harvest_all(b->vm->mem);
	for (unsigned i = 0; i < n; i++)
		dropped += hk_mem_harvest(b->vm->mem, src[i].gpa, src[i].len);
	return dropped;
}

/*
 * Test knob (docs/testing.md): HK_SERVE_DELAY_US widens the window between
 * a served read's first harvest and its copy, so a test can land guest
 * writes in it.  Read once; 0 (unset) in production.
 */
static void serve_delay(void)
{
	static long us = -1;

	if (us < 0) {
		const char *v = getenv("HK_SERVE_DELAY_US");

		us = v ? strtol(v, NULL, 10) : 0;
	}
	if (us > 0)
		usleep((useconds_t)us);
}

/*
 * Serve from replicas if every block of the request has one here: 1 (done,
 * counted), 0 (the disk must serve it; ios are begun and the destination
 * released when began is set) or -errno.
 *
 * The sources are harvested until a harvest drops nothing, so at that
 * moment every one of them equals its block; a copy is then harvested
 * again over the sources it really copied from (the table may have named
 * other pages by then), which catches a write that landed in between.
 */
static int serve_from_replicas(struct hk_blk_req *r, bool *began)
{
	struct hk_blk *b = r->blk;
	struct hk_mem_range src[SERVE_SOURCES];
	unsigned n_src, tries = 0;
	bool need_copy;
	uint64_t off;
	int ret;

	*began = false;
	do {
		if (++tries > 4)
			return 0; /* the guest keeps writing them: the disk is simpler */
		n_src = 0;
		need_copy = false;
		if (lookup_all(r, false, &need_copy, src, &n_src))
			return 0;
	} while (harvest_sources(b, src, n_src));
	if (!need_copy)
		return 1; /* every page already holds its block */
	ret = prefault(r);
	if (ret)
		return ret;
	off = r->offset;
	for (unsigned i = 0; i < r->nseg; i++) {
		io_begin(r, i, off, HK_REPLICA_IO_READ);
		release(b, &r->seg[i]);
		off += r->seg[i].len;
	}
	*began = true;
	serve_delay();
	n_src = 0;
	if (lookup_all(r, true, &need_copy, src, &n_src))
		return 0; /* a replica went away between the looks */
#ifndef HK_WTRACK_MUTANT
	/* A guest write that landed before or during the copy shows now: the
	 * copy may hold it, so the disk serves the read.  (The mutant build
	 * skips this, and the race test must then fail.) */
	if (harvest_sources(b, src, n_src))
		return 0;
#endif
	io_end_all(r, true);
	return 1;
}

int hk_blk_replica_read(struct hk_blk_req *r)
{
	struct hk_blk *b = r->blk;
	bool aligned = b->replicas != NULL, began = false;
	uint64_t off = r->offset;
	int ret;

	for (unsigned i = 0; i < r->nseg && aligned; i++) {
		aligned = seg_whole_pages(&r->seg[i], off);
		off += r->seg[i].len;
	}
	if (aligned) {
		ret = serve_from_replicas(r, &began);
		if (ret < 0)
			return ret;
		if (ret == 1)
			goto served;
		/* The disk finishes the job; ios begun by the serve are ended
		 * when it completes. */
		if (began)
			goto disk;
	}

	ret = prefault(r);
	if (ret)
		return ret;
	off = r->offset;
	for (unsigned i = 0; i < r->nseg; i++) {
		if (b->replicas)
			io_begin(r, i, off, HK_REPLICA_IO_READ);
		release(b, &r->seg[i]);
		off += r->seg[i].len;
	}
disk:
	atomic_fetch_add(&b->stats.bytes_from_disk, r->len);
	return 0;
served:
	atomic_fetch_add(&b->stats.bytes_from_replicas, r->len);
	return 1;
}

int hk_blk_replica_write(struct hk_blk_req *r)
{
	struct hk_blk *b = r->blk;
	uint64_t off = r->offset;
	int ret;

	atomic_fetch_add(&b->stats.bytes_written, r->len);
	ret = prefault(r);
	if (ret || !b->replicas) {
		/* Nothing is ever a replica, but the blocks may have been
		 * replicated by an earlier run with the table on. */
		return ret;
	}
	for (unsigned i = 0; i < r->nseg; i++) {
		/* Writes the guest made before this request are history, not a
		 * change during it: take them in before the window opens, or
		 * io_end would refuse the page it is about to copy to disk. */
		if (seg_whole_pages(&r->seg[i], off))
			hk_mem_harvest(b->vm->mem, r->seg[i].gpa, r->seg[i].len);
		io_begin(r, i, off, HK_REPLICA_IO_WRITE);
		/* Protected during the write: a guest change reaches the hook
		 * and io_end will not call the page a copy. */
		if (seg_whole_pages(&r->seg[i], off))
			hk_mem_track(b->vm->mem, r->seg[i].gpa, r->seg[i].len, true);
		off += r->seg[i].len;
	}
	r->io.flags |= HK_DISK_IO_FUA;
	return 0;
}

void hk_blk_replica_done(struct hk_blk_req *r, bool ok)
{
	if (r->blk->replicas)
		io_end_all(r, ok);
}
