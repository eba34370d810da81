/*
 * The I/O protocol (hk_replica_io_begin / io_end): a completion adds its
 * entries only if nothing could have changed the pages or the blocks
 * while the transfer was in flight.  Each race an integrator can meet is
 * one test; the last test runs them all at once on several threads and
 * checks every replica served against the bytes.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>

#include "test_replica.h"

#define G(p) ((uint64_t)(p)*PG)

static struct hk_replica_io rd(uint64_t page, uint64_t npages, uint16_t disk, uint64_t block)
{
	return (struct hk_replica_io){.dir = HK_REPLICA_IO_READ,
				      .gpa = G(page),
				      .len = npages * PG,
				      .node = 1,
				      .frame = 100 + page,
				      .disk = disk,
				      .offset = block * PG};
}

static struct hk_replica_io wr(uint64_t page, uint64_t npages, uint16_t disk, uint64_t block)
{
	struct hk_replica_io io = rd(page, npages, disk, block);

	io.dir = HK_REPLICA_IO_WRITE;
	return io;
}

/* ---- reads ---------------------------------------------------------------------- */

RT_TEST(replica_io, read_adds_its_pages)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_io io = rd(10, 4, 2, 500);

	cr_assert_eq(hk_replica_add(t, G(10), 1, 110, 7, 7, 2), 0); /* old content */
	cr_assert_eq(hk_replica_io_begin(t, &io), 2, "the destination's entries go at once");
	rt_expect_none(t, G(10));
	cr_assert_eq(hk_replica_io_end(t, &io, true), 4);
	for (unsigned i = 0; i < 4; i++)
		rt_expect_page(t, G(10 + i), 1, 110 + i, 2, 500 + i);
	rt_done(t);
}

RT_TEST(replica_io, failed_read_adds_nothing)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_io io = rd(10, 4, 2, 500);

	hk_replica_io_begin(t, &io);
	cr_assert_eq(hk_replica_io_end(t, &io, false), 0);
	cr_assert_eq(rt_stats(t).entries, 0);
	rt_done(t);
}

RT_TEST(replica_io, unrelated_changes_do_not_spoil_a_read)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_io io = rd(10, 4, 2, 500);

	hk_replica_io_begin(t, &io);
	hk_replica_drop_gpa(t, G(14), 10);			      /* next pages */
	hk_replica_drop_blocks(t, 2, 504, 10);			      /* next blocks */
	hk_replica_drop_blocks(t, 3, 500, 4);			      /* same blocks, other disk */
	hk_replica_drop_node(t, 2);				      /* other node */
	cr_assert_eq(hk_replica_add(t, G(50), 1, 150, 2, 500, 4), 0); /* same blocks elsewhere */
	cr_assert_eq(hk_replica_io_end(t, &io, true), 4);
	rt_done(t);
}

RT_TEST(replica_io, guest_write_during_a_read_spoils_it)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_io io = rd(10, 4, 2, 500);

	hk_replica_io_begin(t, &io);
	hk_replica_drop_gpa(t, G(12), 1); /* the write-protect fault */
	cr_assert_eq(hk_replica_io_end(t, &io, true), -ESTALE);
	cr_assert_eq(rt_stats(t).entries, 0, "nothing added, not even the untouched pages");
	cr_assert_eq(rt_stats(t).stale_adds, 4);
	rt_done(t);
}

RT_TEST(replica_io, disk_write_completing_during_a_read_spoils_it)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_io io = rd(10, 4, 2, 500);

	/* the read may have fetched the blocks before or after the write */
	hk_replica_io_begin(t, &io);
	hk_replica_drop_blocks_bytes(t, 2, 503 * PG + 100, 1);
	cr_assert_eq(hk_replica_io_end(t, &io, true), -ESTALE);
	rt_expect_none(t, G(10));
	rt_done(t);
}

RT_TEST(replica_io, node_loss_or_clear_during_a_read_spoils_it)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_io a = rd(10, 4, 2, 500), b = rd(20, 4, 2, 600);

	hk_replica_io_begin(t, &a);
	hk_replica_drop_node(t, 1);
	cr_assert_eq(hk_replica_io_end(t, &a, true), -ESTALE);
	hk_replica_io_begin(t, &b);
	hk_replica_clear(t);
	cr_assert_eq(hk_replica_io_end(t, &b, true), -ESTALE);
	rt_done(t);
}

RT_TEST(replica_io, two_reads_into_the_same_page_both_give_up)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_io a = rd(10, 4, 2, 500), b = rd(13, 2, 2, 900);

	/* which one's data is in page 13 depends on the device */
	hk_replica_io_begin(t, &a);
	hk_replica_io_begin(t, &b);
	cr_assert_eq(hk_replica_io_end(t, &a, true), -ESTALE);
	cr_assert_eq(hk_replica_io_end(t, &b, true), -ESTALE);
	cr_assert_eq(rt_stats(t).entries, 0);
	rt_done(t);
}

RT_TEST(replica_io, plain_add_into_a_page_being_read_is_busy)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_io io = rd(10, 4, 2, 500);

	hk_replica_io_begin(t, &io);
	cr_assert_eq(hk_replica_add(t, G(12), 1, 112, 5, 5, 1), -EBUSY);
	cr_assert_eq(hk_replica_add_bytes(t, G(8), 1, 108, 5, 0, 3 * PG), -EBUSY);
	rt_expect_none(t, G(8));
	rt_expect_none(t, G(12));
	cr_assert_eq(hk_replica_add(t, G(14), 1, 114, 5, 5, 1), 0, "the next page is free");
	cr_assert_eq(hk_replica_io_end(t, &io, true), -ESTALE);
	cr_assert_eq(hk_replica_add(t, G(12), 1, 112, 5, 5, 1), 0, "unpinned at io_end");
	rt_done(t);
}

RT_TEST(replica_io, unaligned_read_adds_only_whole_pages)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_io io = rd(10, 0, 2, 0);

	io.gpa = G(10) + 512;
	io.offset = 500 * PG + 512;
	io.len = 3 * PG;
	cr_assert_eq(hk_replica_add(t, G(13), 1, 113, 7, 7, 1), 0);
	hk_replica_io_begin(t, &io);
	rt_expect_none(t, G(13));
	cr_assert_eq(hk_replica_io_end(t, &io, true), 2);
	rt_expect_none(t, G(10));
	rt_expect_page(t, G(11), 1, 111, 2, 501);
	rt_expect_page(t, G(12), 1, 112, 2, 502);
	rt_expect_none(t, G(13));
	rt_done(t);
}

RT_TEST(replica_io, end_without_begin_is_refused)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_io io = rd(10, 4, 2, 500);

	hk_replica_io_begin(t, &io);
	cr_assert_eq(hk_replica_io_end(t, &io, true), 4);
	cr_assert_eq(hk_replica_io_end(t, &io, true), -EINVAL, "ended twice");
	io.len = 0;
	hk_replica_io_begin(t, &io);
	cr_assert_eq(hk_replica_io_end(t, &io, true), 0);
	rt_done(t);
}

/* ---- writes ------------------------------------------------------------------------ */

RT_TEST(replica_io, write_replaces_every_replica_of_its_blocks)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_io io = wr(10, 4, 2, 500);

	cr_assert_eq(hk_replica_add(t, G(50), 1, 150, 2, 498, 10), 0); /* blocks 498-507 */
	cr_assert_eq(hk_replica_add(t, G(10), 1, 110, 3, 9, 4), 0);    /* source's old entry */
	hk_replica_io_begin(t, &io);
	cr_assert_eq(rt_stats(t).entries, 14, "a write's begin drops nothing");
	cr_assert_eq(hk_replica_io_end(t, &io, true), 4);
	for (unsigned i = 0; i < 4; i++) {
		rt_expect_page(t, G(10 + i), 1, 110 + i, 2, 500 + i);
		rt_expect_none(t, G(52 + i));
	}
	rt_expect_page(t, G(51), 1, 151, 2, 499);
	rt_expect_page(t, G(56), 1, 156, 2, 504);
	rt_done(t);
}

RT_TEST(replica_io, failed_write_still_drops_the_blocks)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_io io = wr(10, 4, 2, 500);

	cr_assert_eq(hk_replica_add(t, G(50), 1, 150, 2, 500, 4), 0);
	hk_replica_io_begin(t, &io);
	cr_assert_eq(hk_replica_io_end(t, &io, false), 0);
	cr_assert_eq(rt_stats(t).entries, 0, "what the disk holds now is unknown");
	rt_done(t);
}

RT_TEST(replica_io, unaligned_write_drops_outward_adds_inward)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_io io = wr(10, 0, 2, 0);

	io.gpa = G(10) + 100;
	io.offset = 500 * PG + 100;
	io.len = 3 * PG;
	cr_assert_eq(hk_replica_add(t, G(60), 1, 160, 2, 500, 4), 0);
	hk_replica_io_begin(t, &io);
	cr_assert_eq(hk_replica_io_end(t, &io, true), 2);
	for (unsigned i = 0; i < 4; i++)
		rt_expect_none(t, G(60 + i)); /* blocks 500 and 503 written in part */
	rt_expect_none(t, G(10));
	rt_expect_page(t, G(11), 1, 111, 2, 501);
	rt_expect_page(t, G(12), 1, 112, 2, 502);
	rt_done(t);
}

RT_TEST(replica_io, guest_write_to_the_source_spoils_a_write)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_io io = wr(10, 4, 2, 500);

	cr_assert_eq(hk_replica_add(t, G(50), 1, 150, 2, 500, 4), 0);
	hk_replica_io_begin(t, &io);
	hk_replica_drop_gpa(t, G(13), 1); /* the disk may hold the old or the new bytes */
	cr_assert_eq(hk_replica_io_end(t, &io, true), -ESTALE);
	cr_assert_eq(rt_stats(t).entries, 0, "old replicas of the blocks go all the same");
	rt_done(t);
}

RT_TEST(replica_io, read_into_the_source_spoils_a_write)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_io w = wr(10, 4, 2, 500), r = rd(12, 1, 5, 5), r2 = rd(13, 1, 5, 6);

	/* a read lands in the source while the write is in flight */
	hk_replica_io_begin(t, &w);
	hk_replica_io_begin(t, &r);
	cr_assert_eq(hk_replica_io_end(t, &w, true), -ESTALE, "read still in flight");
	cr_assert_eq(hk_replica_io_end(t, &r, true), 1);
	/* the same, with the read over before the write completes */
	w = wr(10, 4, 2, 500);
	hk_replica_io_begin(t, &w);
	hk_replica_io_begin(t, &r2);
	cr_assert_eq(hk_replica_io_end(t, &r2, true), 1);
	cr_assert_eq(hk_replica_io_end(t, &w, true), -ESTALE, "read came and went");
	rt_expect_page(t, G(13), 1, 113, 5, 6);
	rt_done(t);
}

RT_TEST(replica_io, a_read_begun_before_the_write_spoils_it_too)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_io r = rd(12, 1, 5, 5), w = wr(10, 4, 2, 500);

	hk_replica_io_begin(t, &r);
	hk_replica_io_begin(t, &w);
	cr_assert_eq(hk_replica_io_end(t, &r, true), 1);
	cr_assert_eq(hk_replica_io_end(t, &w, true), -ESTALE);
	rt_done(t);
}

RT_TEST(replica_io, overlapping_writes_keep_no_replica)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_io a = wr(10, 4, 2, 500), b = wr(30, 4, 2, 502);

	/* which write reached the disk last is unknown */
	hk_replica_io_begin(t, &a);
	hk_replica_io_begin(t, &b);
	cr_assert_eq(hk_replica_io_end(t, &a, true), 4);
	cr_assert_eq(hk_replica_io_end(t, &b, true), -ESTALE);
	rt_expect_page(t, G(10), 1, 110, 2, 500);
	rt_expect_page(t, G(11), 1, 111, 2, 501);
	rt_expect_none(t, G(12));
	rt_expect_none(t, G(30));
	cr_assert_not(rt_lookup(t, 2, 502, 4)->r[0].hit);
	rt_done(t);
}

/* ---- limits ---------------------------------------------------------------------------- */

RT_TEST(replica_io, too_much_history_means_no_entry)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_io io = rd(10, 4, 2, 500), ok = rd(10, 4, 2, 500);

	hk_replica_io_begin(t, &io);
	for (unsigned i = 0; i <= HK_REPLICA_IO_HISTORY; i++)
		hk_replica_drop_gpa(t, G(1000 + i), 1); /* unrelated, but too many */
	cr_assert_eq(hk_replica_io_end(t, &io, true), -ESTALE);
	hk_replica_io_begin(t, &ok);
	for (unsigned i = 0; i < HK_REPLICA_IO_HISTORY; i++)
		hk_replica_drop_gpa(t, G(1000 + i), 1);
	cr_assert_eq(hk_replica_io_end(t, &ok, true), 4, "just inside the history");
	rt_done(t);
}

RT_TEST(replica_io, too_many_reads_in_flight_means_no_entry)
{
	struct hk_replica *t = rt_new();
	static struct hk_replica_io io[HK_REPLICA_IO_INFLIGHT + 1];
	const unsigned last = HK_REPLICA_IO_INFLIGHT;

	for (unsigned i = 0; i <= last; i++) {
		io[i] = rd(i, 1, 0, i);
		hk_replica_io_begin(t, &io[i]);
	}
	/* the last one found no pin slot: where its data lands is not
	 * tracked, so until it ends nothing is added anywhere */
	cr_assert_eq(hk_replica_add(t, G(5000), 1, 5100, 0, 0, 1), -EBUSY);
	cr_assert_eq(hk_replica_io_end(t, &io[0], true), -ESTALE);
	cr_assert_eq(hk_replica_io_end(t, &io[last], true), -ESTALE);
	cr_assert_eq(hk_replica_io_end(t, &io[last], true), -EINVAL, "ended twice");
	for (unsigned i = 1; i < last; i++)
		cr_assert_eq(hk_replica_io_end(t, &io[i], true), 1);
	cr_assert_eq(rt_stats(t).entries, HK_REPLICA_IO_INFLIGHT - 1);
	cr_assert_eq(hk_replica_add(t, G(5000), 1, 5100, 0, 0, 1), 0);
	rt_done(t);
}

RT_TEST(replica_io, bad_ranges)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_io io = rd(0, 1, 0, 0);

	io.gpa = HK_REPLICA_GPA_LIMIT - PG;
	io.len = 2 * PG;
	hk_replica_io_begin(t, &io);
	cr_assert_eq(hk_replica_io_end(t, &io, true), -ERANGE);
	io = wr(0, 1, 0, 0);
	io.offset = HK_REPLICA_BLOCK_LIMIT * PG;
	hk_replica_io_begin(t, &io);
	cr_assert_eq(hk_replica_io_end(t, &io, true), -ERANGE);
	cr_assert_eq(rt_stats(t).entries, 0);
	rt_done(t);
}

/* ---- all at once, on threads ------------------------------------------------------------- */

/*
 * 64 guest pages, 64 blocks of disk 0, content ids in atomics.  Threads:
 * disk reads into pages and disk writes from pages through the protocol,
 * guest writes (drop, then store, as the write-protect fault does),
 * foreign disk writes (store, drop, then "acknowledge"), and lookups that
 * check, inside the callback, that every replica served equals its block.
 *
 * A block being written may legitimately have stale replicas until the
 * write's drop: a writer raises inflight[b] before touching the block
 * and lowers it after the drop, bumping gen[b] too, so a checker skips
 * blocks that were or became in flight while it looked (a seqlock).
 * Guest stores and io_begin share one mutex: it stands for the
 * write-protection a real integrator arms before submitting (a store
 * after that faults into drop_gpa).
 */
#define CP    64
#define CB    64
#define ITERS 4000

static struct {
	struct hk_replica *t;
	_Atomic uint64_t pg[CP], blk[CB];
	_Atomic uint64_t gen[CB], inflight[CB];
	_Atomic uint64_t next, checked, skipped, stale, added, refused;
	_Atomic int producers; /* lookers run until they are all done */
	pthread_mutex_t wp;
	char why[200];
} S;

static uint64_t xrand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void begin_wp(struct hk_replica_io *io)
{
	pthread_mutex_lock(&S.wp);
	hk_replica_io_begin(S.t, io);
	pthread_mutex_unlock(&S.wp);
}

static void blocks_busy(uint64_t b, uint64_t n, int d)
{
	for (uint64_t i = 0; i < n; i++) {
		if (d > 0)
			atomic_fetch_add(&S.inflight[b + i], 1);
		atomic_fetch_add(&S.gen[b + i], 1);
		if (d < 0)
			atomic_fetch_sub(&S.inflight[b + i], 1);
	}
}

static void *reader_io(void *arg)
{
	uint64_t s = (uintptr_t)arg;

	for (int i = 0; i < ITERS; i++) {
		uint64_t n = 1 + xrand(&s) % 4, p = xrand(&s) % (CP - n + 1),
			 b = xrand(&s) % (CB - n + 1);
		struct hk_replica_io io = {.dir = HK_REPLICA_IO_READ,
					   .gpa = G(p),
					   .len = n * PG,
					   .frame = p,
					   .offset = b * PG};
		int64_t ret;

		begin_wp(&io);
		sched_yield(); /* let the others run while this is in flight */
		for (uint64_t k = 0; k < n; k++)
			S.pg[p + k] = S.blk[b + k];
		sched_yield();
		ret = hk_replica_io_end(S.t, &io, true);
		atomic_fetch_add(ret == -ESTALE ? &S.refused : &S.added, 1);
	}
	atomic_fetch_sub(&S.producers, 1);
	return NULL;
}

static void *writer_io(void *arg)
{
	uint64_t s = (uintptr_t)arg;

	for (int i = 0; i < ITERS; i++) {
		uint64_t n = 1 + xrand(&s) % 4, p = xrand(&s) % (CP - n + 1),
			 b = xrand(&s) % (CB - n + 1);
		struct hk_replica_io io = {.dir = HK_REPLICA_IO_WRITE,
					   .gpa = G(p),
					   .len = n * PG,
					   .frame = p,
					   .offset = b * PG};
		int64_t ret;

		begin_wp(&io);
		blocks_busy(b, n, +1);
		sched_yield();
		for (uint64_t k = 0; k < n; k++)
			S.blk[b + k] = S.pg[p + k];
		sched_yield();
		ret = hk_replica_io_end(S.t, &io, true);
		blocks_busy(b, n, -1);
		atomic_fetch_add(ret == -ESTALE ? &S.refused : &S.added, 1);
	}
	atomic_fetch_sub(&S.producers, 1);
	return NULL;
}

static void *guest(void *arg)
{
	uint64_t s = (uintptr_t)arg;

	for (int i = 0; i < ITERS / 4; i++) {
		uint64_t p = xrand(&s) % CP;

		pthread_mutex_lock(&S.wp);
		hk_replica_drop_gpa(S.t, G(p), 1);
		S.pg[p] = atomic_fetch_add(&S.next, 1);
		pthread_mutex_unlock(&S.wp);
	}
	atomic_fetch_sub(&S.producers, 1);
	return NULL;
}

static void *foreign(void *arg)
{
	uint64_t s = (uintptr_t)arg;

	for (int i = 0; i < ITERS / 4; i++) {
		uint64_t b = xrand(&s) % CB;

		blocks_busy(b, 1, +1);
		S.blk[b] = atomic_fetch_add(&S.next, 1);
		hk_replica_drop_blocks(S.t, 0, b, 1);
		blocks_busy(b, 1, -1);
	}
	atomic_fetch_sub(&S.producers, 1);
	return NULL;
}

static int check_run_cb(void *ctx, const struct hk_replica_run *r)
{
	if (!r->hit)
		return 0;
	for (uint64_t i = 0; i < r->nblocks; i++) {
		uint64_t b = r->block + i, p = r->gpa / PG + i;
		uint64_t g1 = S.gen[b], busy = S.inflight[b];
		uint64_t pv = S.pg[p], bv = S.blk[b];
		uint64_t g2 = S.gen[b];

		if (busy || g1 != g2) {
			atomic_fetch_add(&S.skipped, 1);
			continue;
		}
		atomic_fetch_add(&S.checked, 1);
		if (pv != bv && !atomic_fetch_add(&S.stale, 1))
			snprintf(S.why, sizeof(S.why),
				 "page %llu holds %llu, block %llu holds %llu",
				 (unsigned long long)p, (unsigned long long)pv,
				 (unsigned long long)b, (unsigned long long)bv);
	}
	return 0;
}

static void *looker(void *arg)
{
	uint64_t s = (uintptr_t)arg;

	while (S.producers) {
		uint64_t n = 1 + xrand(&s) % 16, b = xrand(&s) % (CB - n + 1);

		hk_replica_lookup_blocks(S.t, 0, b, n, check_run_cb, NULL);
		sched_yield();
	}
	return NULL;
}

static int final_cb(void *ctx, const struct hk_replica_extent *e)
{
	for (uint64_t i = 0; i < e->npages; i++)
		cr_expect_eq(
		    S.pg[e->gpa / PG + i], S.blk[e->block + i], "at rest: page %llu vs block %llu",
		    (unsigned long long)(e->gpa / PG + i), (unsigned long long)(e->block + i));
	return 0;
}

RT_TEST(replica_io, threads_never_see_a_stale_replica)
{
	void *(*fns[])(void *) = {reader_io, reader_io, writer_io, writer_io,
				  guest,     foreign,	looker,	   looker};
	pthread_t th[8];

	memset(&S, 0, sizeof(S));
	S.t = rt_new();
	pthread_mutex_init(&S.wp, NULL);
	S.next = 1;
	S.producers = 6;
	for (int i = 0; i < CP; i++)
		S.pg[i] = S.next++;
	for (int i = 0; i < CB; i++)
		S.blk[i] = S.next++;
	for (int i = 0; i < 8; i++)
		cr_assert_eq(
		    pthread_create(&th[i], NULL, fns[i], (void *)(uintptr_t)(i * 7919 + 1)), 0);
	for (int i = 0; i < 8; i++)
		pthread_join(th[i], NULL);
	cr_log_info("threads: %llu replica blocks checked, %llu skipped (write in flight), "
		    "%llu I/Os added entries, %llu refused as raced",
		    (unsigned long long)S.checked, (unsigned long long)S.skipped,
		    (unsigned long long)S.added, (unsigned long long)S.refused);
	cr_assert_eq(S.stale, 0, "%llu stale replicas served, first: %s",
		     (unsigned long long)S.stale, S.why);
	cr_assert_gt(S.checked, 0, "no replica was ever served: the test tested nothing");
	hk_replica_foreach(S.t, NULL, final_cb, NULL);
	rt_done(S.t);
	pthread_mutex_destroy(&S.wp);
}
