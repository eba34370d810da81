/*
 * The storage-replica table, rule by rule: what an entry means, extents
 * (merge, split), the unique GPA index, the (disk, block) multimap, every
 * drop, lookups for serving reads, iteration, statistics, unaligned I/O,
 * and running out of memory.  Each test ends with the invariant checker.
 */
#include "test_replica.h"

#define G(p) ((uint64_t)(p)*PG) /* page number -> GPA */

/* ---- the empty table --------------------------------------------------------- */

RT_TEST(replica, empty_table)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_stats st = rt_stats(t);
	struct rt_runs *rs;

	cr_assert_eq(st.entries, 0);
	cr_assert_eq(st.extents, 0);
	cr_assert_eq(st.bytes_covered, 0);
	cr_assert_gt(st.metadata_bytes, 0);
	rt_expect_none(t, 0);
	rs = rt_lookup(t, 0, 0, 100);
	cr_assert_eq(rs->n, 1);
	cr_assert_not(rs->r[0].hit);
	cr_assert_eq(rs->r[0].block, 0);
	cr_assert_eq(rs->r[0].nblocks, 100);
	cr_assert_eq(rt_list(t, NULL)->n, 0);
	cr_assert_eq(hk_replica_drop_gpa(t, 0, 1000), 0);
	cr_assert_eq(hk_replica_drop_blocks(t, 3, 0, 1000), 0);
	cr_assert_eq(hk_replica_drop_node(t, 1), 0);
	hk_replica_destroy(NULL); /* allowed */
	rt_done(t);
}

/* ---- an entry ------------------------------------------------------------------ */

RT_TEST(replica, entry_associates_page_frame_and_block)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_extent e;

	cr_assert_eq(hk_replica_add(t, G(0x100), 3, 7000, 2, 900, 4), 0);
	for (unsigned i = 0; i < 4; i++)
		rt_expect_page(t, G(0x100 + i), 3, 7000 + i, 2, 900 + i);
	/* any byte of a page finds it */
	cr_assert_eq(hk_replica_lookup_gpa(t, G(0x101) + 123, &e), 0);
	cr_assert_eq(e.gpa, G(0x100));
	cr_assert_eq(e.npages, 4);
	rt_expect_none(t, G(0x104));
	rt_expect_none(t, G(0xff));
	rt_done(t);
}

RT_TEST(replica, add_rejects_bad_input_and_changes_nothing)
{
	struct hk_replica *t = rt_new();

	cr_assert_eq(hk_replica_add(t, G(10), 0, 10, 0, 10, 2), 0);
	cr_assert_eq(hk_replica_add(t, G(10) + 8, 0, 1, 0, 1, 1), -EINVAL);
	cr_assert_eq(hk_replica_add(t, HK_REPLICA_GPA_LIMIT, 0, 1, 0, 1, 1), -ERANGE);
	cr_assert_eq(hk_replica_add(t, HK_REPLICA_GPA_LIMIT - PG, 0, 1, 0, 1, 2), -ERANGE);
	cr_assert_eq(hk_replica_add(t, 0, 0, 1, 0, HK_REPLICA_BLOCK_LIMIT - 1, 2), -ERANGE);
	cr_assert_eq(hk_replica_add(t, 0, 0, UINT64_MAX, 0, 1, 2), -ERANGE);
	cr_assert_eq(hk_replica_add(t, G(10), 0, 99, 0, 99, 0), 0); /* no-op */
	rt_expect_page(t, G(10), 0, 10, 0, 10);
	cr_assert_eq(rt_stats(t).entries, 2);
	/* the last page below each limit is fine */
	cr_assert_eq(hk_replica_add(t, HK_REPLICA_GPA_LIMIT - PG, 0, 1, 0, 1, 1), 0);
	cr_assert_eq(hk_replica_add(t, G(50), 0, 1, 9, HK_REPLICA_BLOCK_LIMIT - 1, 1), 0);
	rt_expect_page(t, G(50), 0, 1, 9, HK_REPLICA_BLOCK_LIMIT - 1);
	rt_done(t);
}

/* ---- extents: merge ------------------------------------------------------------- */

RT_TEST(replica, adjacent_adds_merge_into_one_extent)
{
	struct hk_replica *t = rt_new();

	for (unsigned i = 0; i < 100; i++)
		cr_assert_eq(hk_replica_add(t, G(1000 + i), 1, 5000 + i, 4, 70 + i, 1), 0);
	cr_assert_eq(rt_stats(t).extents, 1);
	cr_assert_eq(rt_stats(t).entries, 100);
	/* downwards too */
	for (unsigned i = 0; i < 50; i++)
		cr_assert_eq(hk_replica_add(t, G(999 - i), 1, 4999 - i, 4, 69 - i, 1), 0);
	cr_assert_eq(rt_stats(t).extents, 1);
	cr_assert_eq(rt_stats(t).entries, 150);
	rt_expect_page(t, G(950), 1, 4950, 4, 20);
	rt_done(t);
}

RT_TEST(replica, filling_a_gap_merges_both_sides)
{
	struct hk_replica *t = rt_new();

	cr_assert_eq(hk_replica_add(t, G(0), 0, 100, 1, 500, 10), 0);
	cr_assert_eq(hk_replica_add(t, G(20), 0, 120, 1, 520, 10), 0);
	cr_assert_eq(rt_stats(t).extents, 2);
	cr_assert_eq(hk_replica_add(t, G(10), 0, 110, 1, 510, 10), 0);
	cr_assert_eq(rt_stats(t).extents, 1);
	cr_assert_eq(rt_list(t, NULL)->e[0].npages, 30);
	rt_done(t);
}

RT_TEST(replica, merge_needs_all_three_contiguous)
{
	struct hk_replica *t = rt_new();

	/* base run, then right neighbours that break one rule each */
	cr_assert_eq(hk_replica_add(t, G(0), 0, 100, 1, 500, 1), 0);
	cr_assert_eq(hk_replica_add(t, G(1), 0, 999, 1, 501, 1), 0); /* frame jumps */
	cr_assert_eq(hk_replica_add(t, G(10), 0, 100, 1, 500, 1), 0);
	cr_assert_eq(hk_replica_add(t, G(11), 0, 101, 1, 777, 1), 0); /* block jumps */
	cr_assert_eq(hk_replica_add(t, G(20), 0, 100, 1, 500, 1), 0);
	cr_assert_eq(hk_replica_add(t, G(21), 5, 101, 1, 501, 1), 0); /* other node */
	cr_assert_eq(hk_replica_add(t, G(30), 0, 100, 1, 500, 1), 0);
	cr_assert_eq(hk_replica_add(t, G(31), 0, 101, 2, 501, 1), 0); /* other disk */
	cr_assert_eq(rt_stats(t).extents, 8);
	/* blocks contiguous across the disk boundary are not: disk 1's last
	 * block and disk 2's first have adjacent keys internally */
	cr_assert_eq(hk_replica_add(t, G(40), 0, 100, 1, HK_REPLICA_BLOCK_LIMIT - 1, 1), 0);
	cr_assert_eq(hk_replica_add(t, G(41), 0, 101, 2, 0, 1), 0);
	cr_assert_eq(rt_stats(t).extents, 10);
	rt_done(t);
}

RT_TEST(replica, sequential_gib_in_mib_chunks_is_one_extent)
{
	struct hk_replica *t = rt_new();
	const uint64_t chunk = 256; /* 1 MiB in pages */

	for (uint64_t i = 0; i < 1024; i++)
		cr_assert_eq(hk_replica_add(t, G(0x40000 + i * chunk), 2, 0x9000 + i * chunk, 1,
					    i * chunk, chunk),
			     0);
	cr_assert_leq(rt_stats(t).extents, 4);
	cr_assert_eq(rt_stats(t).extents, 1);
	cr_assert_eq(rt_stats(t).bytes_covered, 1ull << 30);
	/* in a shuffled order the result is the same: merging is order-free */
	hk_replica_clear(t);
	for (uint64_t k = 0; k < 1024; k++) {
		uint64_t i = (k * 97) % 1024; /* 97 is coprime to 1024: a permutation */

		cr_assert_eq(hk_replica_add(t, G(i * chunk), 2, i * chunk, 1, i * chunk, chunk), 0);
	}
	cr_assert_eq(rt_stats(t).extents, 1);
	rt_done(t);
}

RT_TEST(replica, runs_beyond_the_record_limit_are_several_records)
{
	struct hk_replica *t = rt_new();
	uint64_t n = (uint64_t)EXT_MAX_PAGES + 5;

	cr_assert_eq(hk_replica_add(t, 0, 0, 0, 0, 0, n), 0);
	cr_assert_eq(rt_stats(t).extents, 2);
	cr_assert_eq(rt_stats(t).entries, n);
	rt_expect_page(t, G(n - 1), 0, n - 1, 0, n - 1);
	/* a full record does not absorb its neighbour */
	cr_assert_eq(hk_replica_add(t, G(n), 0, n, 0, n, 1), 0);
	rt_check(t);
	cr_assert_eq(hk_replica_drop_gpa(t, G(EXT_MAX_PAGES - 1), 2), 2);
	cr_assert_eq(rt_stats(t).entries, n - 1);
	rt_done(t);
}

/* ---- extents: split and trim ------------------------------------------------------ */

RT_TEST(replica, drop_in_the_middle_splits)
{
	struct hk_replica *t = rt_new();
	struct rt_exts *xs;

	cr_assert_eq(hk_replica_add(t, G(100), 1, 1000, 3, 50, 10), 0);
	cr_assert_eq(hk_replica_drop_gpa(t, G(104), 2), 2);
	xs = rt_list(t, NULL);
	cr_assert_eq(xs->n, 2);
	cr_assert_eq(xs->e[0].gpa, G(100));
	cr_assert_eq(xs->e[0].npages, 4);
	cr_assert_eq(xs->e[1].gpa, G(106));
	cr_assert_eq(xs->e[1].frame, 1006);
	cr_assert_eq(xs->e[1].block, 56);
	cr_assert_eq(xs->e[1].npages, 4);
	rt_expect_none(t, G(104));
	rt_expect_none(t, G(105));
	rt_expect_page(t, G(109), 1, 1009, 3, 59);
	/* re-adding the hole makes it one extent again */
	cr_assert_eq(hk_replica_add(t, G(104), 1, 1004, 3, 54, 2), 0);
	cr_assert_eq(rt_stats(t).extents, 1);
	rt_done(t);
}

RT_TEST(replica, drop_accepts_ranges_over_parts_of_extents)
{
	struct hk_replica *t = rt_new();

	/* three extents: [0,10) [20,30) [40,50) */
	for (unsigned i = 0; i < 3; i++)
		cr_assert_eq(hk_replica_add(t, G(i * 20), 0, i * 1000, 0, i * 1000, 10), 0);
	cr_assert_eq(hk_replica_drop_gpa(t, G(0), 3), 3);     /* head */
	cr_assert_eq(hk_replica_drop_gpa(t, G(8), 14), 4);    /* tail of 1st, head of 2nd */
	cr_assert_eq(hk_replica_drop_gpa(t, G(25), 100), 15); /* tail of 2nd, all of 3rd */
	cr_assert_eq(hk_replica_drop_gpa(t, G(60), 100), 0);  /* nothing there */
	cr_assert_eq(rt_stats(t).entries, 5 + 3);
	rt_expect_page(t, G(3), 0, 3, 0, 3);
	rt_expect_page(t, G(7), 0, 7, 0, 7);
	rt_expect_none(t, G(8));
	rt_expect_page(t, G(22), 0, 1002, 0, 1002);
	rt_expect_page(t, G(24), 0, 1004, 0, 1004);
	rt_expect_none(t, G(25));
	cr_assert_eq(rt_stats(t).invalidations, 22);
	rt_done(t);
}

RT_TEST(replica, drop_gpa_rounds_the_address_down_and_clips)
{
	struct hk_replica *t = rt_new();

	cr_assert_eq(hk_replica_add(t, G(4), 0, 4, 0, 4, 4), 0);
	cr_assert_eq(hk_replica_drop_gpa(t, G(5) + 100, 1), 1); /* page 5 */
	rt_expect_none(t, G(5));
	rt_expect_page(t, G(6), 0, 6, 0, 6);
	/* a range running past the end of everything */
	cr_assert_eq(hk_replica_drop_gpa(t, G(6), UINT64_MAX), 2);
	cr_assert_eq(hk_replica_drop_gpa(t, UINT64_MAX - 5, UINT64_MAX), 0);
	cr_assert_eq(rt_stats(t).entries, 1);
	rt_done(t);
}

/* ---- the GPA index is unique --------------------------------------------------- */

RT_TEST(replica, adding_a_page_again_replaces_its_old_block)
{
	struct hk_replica *t = rt_new();
	struct rt_runs *rs;

	cr_assert_eq(hk_replica_add(t, G(7), 0, 7, 1, 100, 1), 0); /* (G, D1) */
	cr_assert_eq(hk_replica_add(t, G(7), 0, 7, 1, 200, 1), 0); /* (G, D2) */
	rt_expect_page(t, G(7), 0, 7, 1, 200);
	rs = rt_lookup(t, 1, 100, 1);
	cr_assert_not(rs->r[0].hit, "page 7 no longer holds block 100");
	cr_assert(rt_lookup(t, 1, 200, 1)->r[0].hit);
	cr_assert_eq(rt_stats(t).entries, 1);
	cr_assert_eq(rt_stats(t).invalidations, 1);
	rt_done(t);
}

RT_TEST(replica, disk_read_into_a_page_holding_another_block)
{
	struct hk_replica *t = rt_new();
	struct rt_runs *rs;

	/* the guest read blocks 100..107 into pages 0..7 */
	cr_assert_eq(hk_replica_add(t, G(0), 0, 0, 0, 100, 8), 0);
	/* then blocks 500..501 (of another disk) into pages 2..3 */
	cr_assert_eq(hk_replica_add(t, G(2), 0, 2, 1, 500, 2), 0);
	cr_assert_eq(rt_stats(t).extents, 3);
	rs = rt_lookup(t, 0, 100, 8);
	cr_assert_eq(rs->n, 3);
	cr_assert(rs->r[0].hit && rs->r[0].nblocks == 2);
	cr_assert(!rs->r[1].hit && rs->r[1].block == 102 && rs->r[1].nblocks == 2,
		  "blocks 102-103 must not be served from pages 2-3 any more");
	cr_assert(rs->r[2].hit && rs->r[2].block == 104 && rs->r[2].gpa == G(4));
	rt_expect_page(t, G(3), 0, 3, 1, 501);
	/* re-reading what a page already holds changes nothing */
	cr_assert_eq(hk_replica_add(t, G(4), 0, 4, 0, 104, 2), 0);
	cr_assert_eq(rt_stats(t).extents, 3);
	cr_assert_eq(rt_stats(t).invalidations, 2);
	rt_done(t);
}

/* ---- the block index is a multimap ---------------------------------------------- */

RT_TEST(replica, same_block_in_two_pages)
{
	struct hk_replica *t = rt_new();
	struct rt_exts *xs;

	cr_assert_eq(hk_replica_add(t, G(10), 0, 10, 5, 42, 1), 0); /* read D into G1 */
	cr_assert_eq(hk_replica_add(t, G(90), 1, 90, 5, 42, 1), 0); /* and later into G2 */
	rt_expect_page(t, G(10), 0, 10, 5, 42);
	rt_expect_page(t, G(90), 1, 90, 5, 42);
	xs = rt_list(t, &(struct hk_replica_filter){.by_disk = true, .disk = 5});
	cr_assert_eq(xs->n, 2);
	cr_assert(rt_lookup(t, 5, 42, 1)->r[0].hit);
	/* G1 is written by the guest: G2 still replicates D */
	cr_assert_eq(hk_replica_drop_gpa(t, G(10), 1), 1);
	cr_assert_eq(rt_lookup(t, 5, 42, 1)->r[0].gpa, G(90));
	/* a disk write to D drops every replica, in every page */
	cr_assert_eq(hk_replica_add(t, G(10), 0, 10, 5, 42, 1), 0);
	cr_assert_eq(hk_replica_drop_blocks(t, 5, 42, 1), 2);
	rt_expect_none(t, G(10));
	rt_expect_none(t, G(90));
	cr_assert_not(rt_lookup(t, 5, 42, 1)->r[0].hit);
	rt_done(t);
}

RT_TEST(replica, drop_blocks_splits_every_overlapping_replica)
{
	struct hk_replica *t = rt_new();

	/* blocks 0..99 in pages 1000..1099; 40..59 also in pages 5000..5019;
	 * 50..51 also in pages 9000..9001 (nested runs in block space) */
	cr_assert_eq(hk_replica_add(t, G(1000), 0, 1000, 2, 0, 100), 0);
	cr_assert_eq(hk_replica_add(t, G(5000), 0, 5000, 2, 40, 20), 0);
	cr_assert_eq(hk_replica_add(t, G(9000), 0, 9000, 2, 50, 2), 0);
	cr_assert_eq(hk_replica_add(t, G(7000), 0, 7000, 3, 51, 1), 0); /* other disk */
	cr_assert_eq(hk_replica_drop_blocks(t, 2, 51, 1), 3);
	rt_expect_none(t, G(1051));
	rt_expect_none(t, G(5011));
	rt_expect_none(t, G(9001));
	rt_expect_page(t, G(1050), 0, 1050, 2, 50);
	rt_expect_page(t, G(1052), 0, 1052, 2, 52);
	rt_expect_page(t, G(5010), 0, 5010, 2, 50);
	rt_expect_page(t, G(9000), 0, 9000, 2, 50);
	rt_expect_page(t, G(7000), 0, 7000, 3, 51);
	rt_check(t);
	/* a wide write */
	cr_assert_eq(hk_replica_drop_blocks(t, 2, 45, 10), 9 + 9 + 1);
	cr_assert_eq(rt_lookup(t, 2, 45, 10)->n, 1);
	cr_assert_not(rt_lookup(t, 2, 45, 10)->r[0].hit);
	/* past the block limit: clipped, not refused */
	cr_assert_eq(hk_replica_drop_blocks(t, 2, 90, UINT64_MAX), 10);
	cr_assert_eq(hk_replica_drop_blocks(t, 2, HK_REPLICA_BLOCK_LIMIT, 5), 0);
	rt_done(t);
}

/* ---- serving reads ---------------------------------------------------------------- */

RT_TEST(replica, lookup_blocks_tiles_the_range_with_hits_and_misses)
{
	struct hk_replica *t = rt_new();
	struct rt_runs *rs;
	struct hk_replica_stats st;

	cr_assert_eq(hk_replica_add(t, G(300), 4, 8300, 1, 10, 5), 0);	/* blocks 10-14 */
	cr_assert_eq(hk_replica_add(t, G(600), 6, 8600, 1, 15, 3), 0);	/* blocks 15-17 */
	cr_assert_eq(hk_replica_add(t, G(700), 4, 8700, 1, 30, 10), 0); /* blocks 30-39 */
	rs = rt_lookup(t, 1, 8, 30);					/* blocks 8..37 */
	cr_assert_eq(rs->n, 5);
	cr_assert(!rs->r[0].hit && rs->r[0].block == 8 && rs->r[0].nblocks == 2);
	cr_assert(rs->r[1].hit && rs->r[1].block == 10 && rs->r[1].nblocks == 5);
	cr_assert(rs->r[1].gpa == G(300) && rs->r[1].node == 4 && rs->r[1].frame == 8300);
	cr_assert(rs->r[2].hit && rs->r[2].block == 15 && rs->r[2].nblocks == 3);
	cr_assert(rs->r[2].gpa == G(600) && rs->r[2].node == 6);
	cr_assert(!rs->r[3].hit && rs->r[3].block == 18 && rs->r[3].nblocks == 12);
	cr_assert(rs->r[4].hit && rs->r[4].block == 30 && rs->r[4].nblocks == 8);
	/* starting inside an extent: the run starts at the right page */
	rs = rt_lookup(t, 1, 33, 2);
	cr_assert_eq(rs->n, 1);
	cr_assert(rs->r[0].hit && rs->r[0].gpa == G(703) && rs->r[0].frame == 8703);
	st = rt_stats(t);
	cr_assert_eq(st.hits, 16 + 2);
	cr_assert_eq(st.misses, 14);
	/* other disks see nothing */
	cr_assert_not(rt_lookup(t, 0, 10, 5)->r[0].hit);
	cr_assert_not(rt_lookup(t, 2, 10, 5)->r[0].hit);
	rt_done(t);
}

RT_TEST(replica, lookup_blocks_prefers_the_longest_replica_and_can_stop)
{
	struct hk_replica *t = rt_new();
	struct rt_runs rs = {.stop_after = 1};

	cr_assert_eq(hk_replica_add(t, G(10), 0, 10, 0, 100, 2), 0); /* 100-101 */
	cr_assert_eq(hk_replica_add(t, G(50), 1, 50, 0, 99, 10), 0); /* 99-108 */
	cr_assert_eq(hk_replica_add(t, G(90), 2, 90, 0, 100, 4), 0); /* 100-103 */
	cr_assert_eq(hk_replica_lookup_blocks(t, 0, 100, 20, rt_run_cb, &rs), 7);
	cr_assert_eq(rs.n, 1);
	cr_assert(rs.r[0].hit && rs.r[0].gpa == G(51) && rs.r[0].nblocks == 9);
	cr_assert_eq(rt_stats(t).hits, 9);
	cr_assert_eq(rt_stats(t).misses, 0, "runs after the stop are not counted");
	cr_assert_eq(hk_replica_lookup_blocks(t, 0, HK_REPLICA_BLOCK_LIMIT, 1, rt_run_cb, &rs),
		     -EINVAL);
	cr_assert_eq(hk_replica_lookup_blocks(t, 0, 5, UINT64_MAX, rt_run_cb, &rs), -EINVAL);
	rs.n = 0;
	rs.stop_after = 0;
	cr_assert_eq(hk_replica_lookup_blocks(t, 0, 5, 0, rt_run_cb, &rs), 0);
	cr_assert_eq(rs.n, 0);
	rt_done(t);
}

/* ---- iteration (hkctl replica show) ------------------------------------------------ */

static void fill_show(struct hk_replica *t)
{
	/* pages 0-9 disk 1 blocks 500-509 node 0; pages 20-24 disk 2 blocks
	 * 0-4 node 1; pages 30-39 disk 1 blocks 100-109 node 1 */
	cr_assert_eq(hk_replica_add(t, G(0), 0, 0, 1, 500, 10), 0);
	cr_assert_eq(hk_replica_add(t, G(20), 1, 20, 2, 0, 5), 0);
	cr_assert_eq(hk_replica_add(t, G(30), 1, 30, 1, 100, 10), 0);
}

RT_TEST(replica, foreach_all_in_gpa_order)
{
	struct hk_replica *t = rt_new();
	struct rt_exts *xs;

	fill_show(t);
	xs = rt_list(t, NULL);
	cr_assert_eq(xs->n, 3);
	cr_assert_eq(xs->e[0].gpa, G(0));
	cr_assert_eq(xs->e[1].gpa, G(20));
	cr_assert_eq(xs->e[1].disk, 2);
	cr_assert_eq(xs->e[2].gpa, G(30));
	cr_assert_eq(rt_list(t, &(struct hk_replica_filter){0})->n, 3);
	rt_done(t);
}

RT_TEST(replica, foreach_by_disk_in_block_order)
{
	struct hk_replica *t = rt_new();
	struct rt_exts *xs;

	fill_show(t);
	xs = rt_list(t, &(struct hk_replica_filter){.by_disk = true, .disk = 1});
	cr_assert_eq(xs->n, 2);
	cr_assert_eq(xs->e[0].block, 100);
	cr_assert_eq(xs->e[1].block, 500);
	cr_assert_eq(rt_list(t, &(struct hk_replica_filter){.by_disk = true, .disk = 7})->n, 0);
	xs = rt_list(
	    t, &(struct hk_replica_filter){.by_disk = true, .disk = 1, .by_node = true, .node = 0});
	cr_assert_eq(xs->n, 1);
	cr_assert_eq(xs->e[0].gpa, G(0));
	rt_done(t);
}

RT_TEST(replica, foreach_gpa_range_clips_and_limit_stops)
{
	struct hk_replica *t = rt_new();
	struct rt_exts *xs;
	struct rt_exts mine = {.stop_after = 1};

	fill_show(t);
	xs = rt_list(t, &(struct hk_replica_filter){.gpa_start = G(5), .gpa_end = G(32)});
	cr_assert_eq(xs->n, 3);
	cr_assert(xs->e[0].gpa == G(5) && xs->e[0].npages == 5 && xs->e[0].block == 505 &&
		  xs->e[0].frame == 5);
	cr_assert(xs->e[2].gpa == G(30) && xs->e[2].npages == 2);
	/* a range ending mid-page includes that page */
	xs = rt_list(t, &(struct hk_replica_filter){.gpa_start = G(31) + 1, .gpa_end = G(31) + 2});
	cr_assert(xs->n == 1 && xs->e[0].gpa == G(31) && xs->e[0].npages == 1);
	xs = rt_list(t, &(struct hk_replica_filter){.gpa_start = G(10), .gpa_end = G(20)});
	cr_assert_eq(xs->n, 0);
	xs = rt_list(t, &(struct hk_replica_filter){.gpa_start = G(40), .gpa_end = G(30)});
	cr_assert_eq(xs->n, 0);
	xs = rt_list(t, &(struct hk_replica_filter){.gpa_start = G(1), .by_disk = true, .disk = 1});
	cr_assert_eq(xs->n, 2, "disk filter with a GPA range");
	xs = rt_list(t, &(struct hk_replica_filter){.limit = 2});
	cr_assert_eq(xs->n, 2);
	xs = rt_list(t, &(struct hk_replica_filter){.by_node = true, .node = 1});
	cr_assert_eq(xs->n, 2);
	cr_assert_eq(hk_replica_foreach(t, NULL, rt_ext_cb, &mine), 1, "callback stops the walk");
	rt_done(t);
}

/* ---- statistics ------------------------------------------------------------------------ */

RT_TEST(replica, stats_count_what_happened)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_stats st;

	cr_assert_eq(hk_replica_add(t, G(0), 0, 0, 0, 0, 64), 0);
	cr_assert_eq(hk_replica_add(t, G(100), 0, 100, 0, 1000, 16), 0);
	st = rt_stats(t);
	cr_assert_eq(st.entries, 80);
	cr_assert_eq(st.extents, 2);
	cr_assert_eq(st.bytes_covered, 80 * PG);
	cr_assert_eq(st.adds, 80);
	cr_assert_geq(st.metadata_bytes, 2 * sizeof(struct ext));
	rt_lookup(t, 0, 60, 10); /* 4 hits, 6 misses */
	hk_replica_drop_gpa(t, G(10), 2);
	hk_replica_drop_blocks(t, 0, 1000, 1);
	st = rt_stats(t);
	cr_assert_eq(st.hits, 4);
	cr_assert_eq(st.misses, 6);
	cr_assert_eq(st.invalidations, 3);
	cr_assert_eq(st.entries, 77);
	cr_assert_eq(st.extents, 3);
	rt_done(t);
}

/* ---- node loss, clear ----------------------------------------------------------------- */

RT_TEST(replica, drop_node_drops_only_that_nodes_frames)
{
	struct hk_replica *t = rt_new();

	for (unsigned i = 0; i < 300; i++)
		cr_assert_eq(hk_replica_add(t, G(i * 2), (uint16_t)(i % 3), i * 2, 0, i * 7, 1), 0);
	cr_assert_eq(hk_replica_drop_node(t, 1), 100);
	rt_check(t);
	for (unsigned i = 0; i < 300; i++) {
		if (i % 3 == 1)
			rt_expect_none(t, G(i * 2));
		else
			rt_expect_page(t, G(i * 2), (uint16_t)(i % 3), i * 2, 0, i * 7);
	}
	cr_assert_eq(hk_replica_drop_node(t, 1), 0);
	cr_assert_eq(rt_stats(t).entries, 200);
	rt_done(t);
}

RT_TEST(replica, clear_empties_and_returns_memory)
{
	struct hk_replica *t = rt_new();
	uint64_t empty = rt_stats(t).metadata_bytes;

	for (unsigned i = 0; i < 20000; i++)
		cr_assert_eq(hk_replica_add(t, G(i * 2), 0, i, 0, i, 1), 0);
	cr_assert_geq(rt_stats(t).metadata_bytes, 20000 * sizeof(struct ext));
	hk_replica_clear(t);
	cr_assert_eq(rt_stats(t).entries, 0);
	cr_assert_eq(rt_stats(t).extents, 0);
	cr_assert_eq(rt_stats(t).invalidations, 20000);
	cr_assert_leq(rt_stats(t).metadata_bytes, empty + 64 * sizeof(void *));
	rt_expect_none(t, G(0));
	cr_assert_eq(hk_replica_add(t, G(4), 0, 4, 0, 4, 1), 0);
	rt_expect_page(t, G(4), 0, 4, 0, 4);
	rt_done(t);
}

RT_TEST(replica, memory_follows_the_live_extents)
{
	struct hk_replica *t = rt_new();
	uint64_t full;

	for (unsigned i = 0; i < 50000; i++)
		cr_assert_eq(hk_replica_add(t, G(i * 2), 0, i, 0, i, 1), 0);
	full = rt_stats(t).metadata_bytes;
	for (unsigned i = 0; i < 50000; i += 2) /* every other one, scattered */
		cr_assert_eq(hk_replica_drop_gpa(t, G(i * 2), 1), 1);
	rt_check(t);
	cr_assert_lt(rt_stats(t).metadata_bytes, full * 6 / 10, "%llu of %llu",
		     (unsigned long long)rt_stats(t).metadata_bytes, (unsigned long long)full);
	for (unsigned i = 1; i < 50000; i += 2)
		rt_expect_page(t, G(i * 2), 0, i, 0, i);
	rt_done(t);
}

/* ---- unaligned I/O: the rule ---------------------------------------------------------- */

RT_TEST(replica, add_bytes_aligned_is_add)
{
	struct hk_replica *t = rt_new();

	cr_assert_eq(hk_replica_add_bytes(t, G(8), 0, 8, 1, 80 * PG, 4 * PG), 4);
	rt_expect_page(t, G(11), 0, 11, 1, 83);
	cr_assert_eq(hk_replica_add_bytes(t, G(8), 0, 8, 1, 80 * PG, 0), 0);
	rt_done(t);
}

RT_TEST(replica, add_bytes_rounds_inward_and_drops_outward)
{
	struct hk_replica *t = rt_new();

	/* pages 0..9 replicate blocks 0..9 */
	cr_assert_eq(hk_replica_add(t, G(0), 0, 0, 0, 0, 10), 0);
	/* a read of 3 pages' worth at +512 into page 2: disk bytes
	 * [50*4K+512, 53*4K+512) -> guest [2*4K+512, 5*4K+512).  Only pages 3
	 * and 4 are whole (blocks 51, 52); pages 2 and 5 are partly
	 * overwritten and keep no entry. */
	cr_assert_eq(hk_replica_add_bytes(t, G(2) + 512, 0, 2, 1, 50 * PG + 512, 3 * PG), 2);
	rt_expect_page(t, G(1), 0, 1, 0, 1);
	rt_expect_none(t, G(2));
	rt_expect_page(t, G(3), 0, 3, 1, 51);
	rt_expect_page(t, G(4), 0, 4, 1, 52);
	rt_expect_none(t, G(5));
	rt_expect_page(t, G(6), 0, 6, 0, 6);
	rt_done(t);
}

RT_TEST(replica, add_bytes_needs_page_and_block_to_line_up)
{
	struct hk_replica *t = rt_new();

	cr_assert_eq(hk_replica_add(t, G(0), 0, 0, 0, 0, 10), 0);
	/* buffer page-aligned, disk offset not: no page equals any block */
	cr_assert_eq(hk_replica_add_bytes(t, G(2), 0, 2, 1, 50 * PG + 512, 4 * PG), 0);
	for (unsigned p = 2; p < 6; p++)
		rt_expect_none(t, G(p));
	rt_expect_page(t, G(6), 0, 6, 0, 6);
	/* a sub-page I/O inside one page: no entry, and the page's old one goes */
	cr_assert_eq(hk_replica_add_bytes(t, G(7) + 100, 0, 7, 1, 7 * PG + 100, 200), 0);
	rt_expect_none(t, G(7));
	rt_expect_page(t, G(8), 0, 8, 0, 8);
	/* out of range */
	cr_assert_eq(hk_replica_add_bytes(t, HK_REPLICA_GPA_LIMIT - PG, 0, 0, 0, 0, 2 * PG),
		     -ERANGE);
	rt_done(t);
}

RT_TEST(replica, drop_blocks_bytes_rounds_outward)
{
	struct hk_replica *t = rt_new();

	cr_assert_eq(hk_replica_add(t, G(0), 0, 0, 3, 0, 10), 0);
	cr_assert_eq(hk_replica_add(t, G(50), 0, 50, 3, 0, 10), 0); /* same blocks again */
	/* one byte of block 4 */
	cr_assert_eq(hk_replica_drop_blocks_bytes(t, 3, 4 * PG + 77, 1), 2);
	rt_expect_none(t, G(4));
	rt_expect_none(t, G(54));
	rt_expect_page(t, G(3), 0, 3, 3, 3);
	rt_expect_page(t, G(5), 0, 5, 3, 5);
	/* 512 bytes straddling blocks 6 and 7 */
	cr_assert_eq(hk_replica_drop_blocks_bytes(t, 3, 7 * PG - 256, 512), 4);
	rt_expect_none(t, G(6));
	rt_expect_none(t, G(57));
	rt_expect_page(t, G(8), 0, 8, 3, 8);
	/* an aligned write drops exactly its blocks */
	cr_assert_eq(hk_replica_drop_blocks_bytes(t, 3, 8 * PG, PG), 2);
	rt_expect_page(t, G(9), 0, 9, 3, 9);
	cr_assert_eq(hk_replica_drop_blocks_bytes(t, 3, 9 * PG, 0), 0);
	rt_expect_page(t, G(9), 0, 9, 3, 9);
	rt_done(t);
}

RT_TEST(replica, drop_gpa_bytes_rounds_outward)
{
	struct hk_replica *t = rt_new();

	cr_assert_eq(hk_replica_add(t, G(0), 0, 0, 0, 0, 10), 0);
	cr_assert_eq(hk_replica_drop_gpa_bytes(t, G(2) + 4000, 200), 2); /* pages 2 and 3 */
	rt_expect_page(t, G(1), 0, 1, 0, 1);
	rt_expect_none(t, G(2));
	rt_expect_none(t, G(3));
	rt_expect_page(t, G(4), 0, 4, 0, 4);
	cr_assert_eq(hk_replica_drop_gpa_bytes(t, G(5), 0), 0);
	cr_assert_eq(hk_replica_drop_gpa_bytes(t, G(5), 1), 1);
	rt_done(t);
}

/* ---- running out of memory --------------------------------------------------------------- */

struct dump {
	unsigned n;
	struct hk_replica_extent e[64];
};

static int dump_cb(void *ctx, const struct hk_replica_extent *e)
{
	struct dump *d = ctx;

	cr_assert_lt(d->n, 64);
	d->e[d->n++] = *e;
	return 0;
}

static void dump(struct hk_replica *t, struct dump *d)
{
	memset(d, 0, sizeof(*d));
	hk_replica_foreach(t, NULL, dump_cb, d);
}

static void same_dump(const struct dump *a, const struct dump *b)
{
	cr_assert_eq(a->n, b->n);
	for (unsigned i = 0; i < a->n; i++) {
		const struct hk_replica_extent *x = &a->e[i], *y = &b->e[i];

		cr_assert(x->gpa == y->gpa && x->frame == y->frame && x->block == y->block &&
			      x->npages == y->npages && x->node == y->node && x->disk == y->disk,
			  "extent %u changed", i);
	}
}

RT_TEST(replica, split_without_memory_drops_the_whole_extent)
{
	struct hk_replica *t = rt_new();
	struct hk_replica_stats st;

	cr_assert_eq(hk_replica_add(t, G(0), 0, 0, 0, 0, 10), 0);
	cr_assert_eq(hk_replica_add(t, G(20), 0, 20, 0, 100, 10), 0);
	hk_replica_set_extent_limit(t, 2);
	/* a split would need a third record: the extent goes whole */
	cr_assert_eq(hk_replica_drop_gpa(t, G(4), 1), 10);
	rt_check(t);
	rt_expect_none(t, G(0));
	rt_expect_none(t, G(9));
	st = rt_stats(t);
	cr_assert_eq(st.overdrops, 9);
	cr_assert_eq(st.invalidations, 10);
	/* the same for a disk write */
	hk_replica_set_extent_limit(t, UINT32_MAX);
	cr_assert_eq(hk_replica_add(t, G(0), 0, 0, 0, 0, 10), 0);
	hk_replica_set_extent_limit(t, 2);
	cr_assert_eq(hk_replica_drop_blocks(t, 0, 105, 1), 10);
	rt_expect_none(t, G(20));
	rt_expect_page(t, G(0), 0, 0, 0, 0);
	/* trims need no memory and stay exact */
	cr_assert_eq(hk_replica_drop_gpa(t, G(9), 1), 1);
	rt_expect_page(t, G(8), 0, 8, 0, 8);
	hk_replica_set_extent_limit(t, UINT32_MAX);
	cr_assert_eq(hk_replica_drop_gpa(t, G(4), 1), 1);
	cr_assert_eq(rt_stats(t).extents, 2);
	rt_done(t);
}

RT_TEST(replica, add_without_memory_fails_cleanly)
{
	struct hk_replica *t = rt_new();
	struct dump before, after;

	cr_assert_eq(hk_replica_add(t, G(0), 0, 0, 0, 0, 10), 0);
	cr_assert_eq(hk_replica_add(t, G(20), 0, 20, 0, 100, 10), 0);
	hk_replica_set_extent_limit(t, 2);
	dump(t, &before);
	/* an add over empty pages: -ENOMEM, nothing else changes */
	cr_assert_eq(hk_replica_add(t, G(50), 0, 50, 0, 50, 1), -ENOMEM);
	dump(t, &after);
	same_dump(&before, &after);
	/* an add over pages that replicated something: the pages changed, so
	 * their old entries must not survive the failure -- and with no
	 * memory to split, their whole extent goes */
	cr_assert_eq(hk_replica_add(t, G(3), 0, 3, 1, 777, 2), -ENOMEM);
	rt_check(t);
	for (unsigned p = 0; p < 10; p++)
		rt_expect_none(t, G(p));
	cr_assert_not(rt_lookup(t, 1, 777, 2)->r[0].hit);
	cr_assert_eq(rt_stats(t).overdrops, 8);
	rt_expect_page(t, G(20), 0, 20, 0, 100);
	/* at the end of an extent no split is needed: exact */
	cr_assert_eq(hk_replica_add(t, G(29), 0, 29, 1, 5, 1), -ENOMEM);
	rt_expect_none(t, G(29));
	rt_expect_page(t, G(28), 0, 28, 0, 108);
	cr_assert_eq(rt_stats(t).overdrops, 8);
	cr_assert_eq(hk_replica_add_bytes(t, G(20), 0, 20, 1, 0, PG), -ENOMEM);
	rt_expect_none(t, G(20));
	hk_replica_set_extent_limit(t, UINT32_MAX);
	cr_assert_eq(hk_replica_add(t, G(3), 0, 3, 1, 777, 2), 0);
	rt_expect_page(t, G(4), 0, 4, 1, 778);
	rt_done(t);
}

/* A failure at each possible allocation inside a burst of mixed work
 * leaves a table that passes the checker and never invents entries. */
RT_TEST(replica, every_operation_consistent_at_every_limit)
{
	for (uint32_t limit = 0; limit < 12; limit++) {
		struct hk_replica *t = rt_new();

		hk_replica_set_extent_limit(t, limit);
		for (unsigned i = 0; i < 40; i++) {
			uint64_t p = (i * 37) % 64;

			hk_replica_add(t, G(p), 0, p, 0, p, 1 + i % 5);
			hk_replica_add(t, G(p + 100), 0, p + 100, 0, p, 3);
			hk_replica_drop_gpa(t, G((i * 11) % 64), 1);
			hk_replica_drop_blocks(t, 0, (i * 13) % 64, 2);
			rt_check(t);
			cr_assert_leq(rt_stats(t).extents, limit);
		}
		/* whatever survived still says page p (or p+100) = block p */
		for (uint64_t p = 0; p < 170; p++) {
			struct hk_replica_extent e;

			if (hk_replica_lookup_gpa(t, G(p), &e) == 0)
				cr_assert_eq(e.block + (p - e.gpa / PG), p >= 100 ? p - 100 : p);
		}
		rt_done(t);
	}
}
