/*
 * Scale and cost of the replica table: extents for sequential I/O,
 * memory per extent for random 4 KiB entries, and rough speed.  Nothing
 * here asserts a time (machines differ, sanitizers are slow); figures go
 * to the log (meson-logs/testlog.txt) with cr_log_info and the memory
 * figures are asserted against the record size.
 */
#include <inttypes.h>
#include <malloc.h>
#include <time.h>

#include "test_replica.h"

#define GIB (1ull << 30)

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t mix(uint64_t x)
{
	/* splitmix64 finaliser: a stateless stream of random-looking values */
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static void rate(const char *what, uint64_t n, double secs)
{
	cr_log_info("  %-34s %9" PRIu64 " in %6.3f s: %7.2f M/s, %6.0f ns each", what, n, secs,
		    n / secs / 1e6, secs * 1e9 / n);
}

RT_TEST(replica_scale, sequential_gib_in_mib_chunks)
{
	struct hk_replica *t = rt_new();
	const uint64_t chunk = (1 << 20) / PG;
	struct hk_replica_stats st;
	uint64_t empty = rt_stats(t).metadata_bytes;
	double t0 = now_s();

	for (uint64_t i = 0; i < GIB / (1 << 20); i++)
		cr_assert_eq(hk_replica_add(t, 4 * GIB + i * (1 << 20), 0, 777 + i * chunk, 1,
					    123456 + i * chunk, chunk),
			     0);
	st = rt_stats(t);
	cr_assert_leq(st.extents, 4);
	cr_assert_eq(st.bytes_covered, GIB);
	cr_log_info("sequential 1 GiB as 1024 x 1 MiB adds: %" PRIu64 " extent(s), %.1f us; "
		    "metadata %" PRIu64 " B (%" PRIu64
		    " B for the empty table: the slab's first chunk, "
		    "the I/O history and pins)",
		    st.extents, (now_s() - t0) * 1e6, st.metadata_bytes, empty);
	rt_done(t);
}

RT_TEST(replica_scale, sequential_tib)
{
	struct hk_replica *t = rt_new();
	const uint64_t chunk = (1 << 20) / PG, n = (1ull << 40) / (1 << 20);
	struct hk_replica_stats st;
	double t0 = now_s();

	/* a 1 TiB data set read sequentially, 2 MiB node stripes: a frame
	 * discontinuity every 2 MiB, as when guest memory is striped over
	 * nodes -- one extent per stripe */
	for (uint64_t i = 0; i < n; i++) {
		uint64_t stripe = i / 2;

		cr_assert_eq(hk_replica_add(t, i * (1 << 20), (uint16_t)(stripe % 4),
					    stripe * 1000000 + (i % 2) * chunk, 2, i * chunk,
					    chunk),
			     0);
	}
	rate("1 TiB as 1 MiB adds, 2 MiB stripes", n, now_s() - t0);
	st = rt_stats(t);
	cr_assert_eq(st.extents, n / 2);
	cr_log_info("  %" PRIu64 " extents, metadata %.1f MiB for 1 TiB covered (%.1f B/extent)",
		    st.extents, st.metadata_bytes / 1048576.0,
		    (double)st.metadata_bytes / st.extents);
	rt_done(t);
}

struct sink {
	uint64_t runs, hits;
};

static int sink_cb(void *ctx, const struct hk_replica_run *r)
{
	struct sink *s = ctx;

	s->runs++;
	s->hits += r->hit;
	return 0;
}

static int count_cb(void *ctx, const struct hk_replica_extent *e)
{
	(*(uint64_t *)ctx)++;
	return 0;
}

RT_TEST(replica_scale, million_random_pages)
{
	const uint64_t N = 1000000, SPACE = 1ull << 24; /* pages: 64 GiB of guest */
	struct hk_replica *t = rt_new();
	struct hk_replica_stats st;
	struct mallinfo2 m0, m1;
	struct sink sk = {0};
	uint64_t empty = rt_stats(t).metadata_bytes, n = 0, dropped = 0;
	double t0;

	m0 = mallinfo2();
	t0 = now_s();
	/* distinct random pages (an odd multiplier permutes 2^24), random
	 * blocks on 4 disks of 4 TiB: nothing merges */
	for (uint64_t i = 0; i < N; i++) {
		uint64_t gfn = (i * 0x9e3779b1ull) & (SPACE - 1), r = mix(i);

		cr_assert_eq(hk_replica_add(t, gfn * PG, (uint16_t)(r & 3), mix(r) & 0xffffffff,
					    (uint16_t)((r >> 2) & 3), (r >> 8) & ((1ull << 30) - 1),
					    1),
			     0);
	}
	cr_log_info("1M random 4 KiB entries:");
	rate("add", N, now_s() - t0);
	m1 = mallinfo2();
	st = rt_stats(t);
	cr_assert_geq(st.extents, N - N / 1000, "random pages should almost never merge");
	cr_log_info("  %" PRIu64 " extents: metadata %" PRIu64 " B, %.1f B/extent beyond the "
		    "empty table (record: %zu B); malloc's own count grew by %zu B",
		    st.extents, st.metadata_bytes, (double)(st.metadata_bytes - empty) / st.extents,
		    sizeof(struct ext), m1.uordblks + m1.hblkhd - m0.uordblks - m0.hblkhd);
	cr_log_info("  random 4 KiB pattern: %.2f MiB of metadata per GiB covered (%.2f%%)",
		    (double)st.metadata_bytes / (st.bytes_covered / (double)GIB) / 1048576.0,
		    100.0 * st.metadata_bytes / st.bytes_covered);
	/* within one chunk of slack and the fixed part of a record each */
	cr_assert_leq(st.metadata_bytes,
		      empty + (st.extents + 2 * CHUNK_SLOTS) * sizeof(struct ext) + 8 * 4096);

	t0 = now_s();
	for (uint64_t i = 0; i < N; i++) {
		struct hk_replica_extent e;
		uint64_t gfn = (mix(i + 7) % N * 0x9e3779b1ull) & (SPACE - 1);

		n += hk_replica_lookup_gpa(t, gfn * PG, &e) == 0;
	}
	rate("lookup_gpa (all present)", N, now_s() - t0);
	cr_assert_eq(n, N);

	t0 = now_s();
	for (uint64_t i = 0; i < N; i++) {
		uint64_t r = mix(i * 3);

		hk_replica_lookup_blocks(t, (uint16_t)(r & 3), (r >> 8) & ((1ull << 30) - 1), 256,
					 sink_cb, &sk);
	}
	rate("lookup_blocks, 1 MiB random reads", N, now_s() - t0);

	t0 = now_s();
	n = 0;
	hk_replica_foreach(t, NULL, count_cb, &n);
	rate("foreach", n, now_s() - t0);

	t0 = now_s();
	for (uint64_t i = 0; i < N / 4; i++) {
		uint64_t r = mix(i * 5);

		dropped += hk_replica_drop_blocks(t, (uint16_t)(r & 3),
						  (r >> 8) & ((1ull << 30) - 1), 256);
	}
	rate("drop_blocks, 1 MiB random writes", N / 4, now_s() - t0);

	t0 = now_s();
	for (uint64_t i = 0; i < N / 4; i++)
		dropped += hk_replica_drop_gpa(t, ((i * 0x9e3779b1ull) & (SPACE - 1)) * PG, 1);
	rate("drop_gpa, single pages", N / 4, now_s() - t0);

	t0 = now_s();
	rt_check(t);
	rate("invariant check (O(n))", rt_stats(t).extents, now_s() - t0);

	t0 = now_s();
	dropped += hk_replica_drop_node(t, 2);
	rate("drop_node (a quarter of them)", rt_stats(t).extents, now_s() - t0);
	st = rt_stats(t);
	cr_assert_eq(st.entries + dropped, N);
	cr_log_info("  after drops: %" PRIu64 " extents, metadata %" PRIu64 " B", st.extents,
		    st.metadata_bytes);
	cr_assert_leq(st.metadata_bytes,
		      empty + (st.extents + 2 * CHUNK_SLOTS) * sizeof(struct ext) + 8 * 4096,
		      "memory follows the live extents");
	rt_done(t);
}

/* One block in thousands of pages, and long runs nested in block space:
 * the interval tree keeps lookups logarithmic. */
RT_TEST(replica_scale, duplicates_and_nesting)
{
	struct hk_replica *t = rt_new();
	struct sink sk = {0};
	double t0;

	for (uint64_t i = 0; i < 5000; i++) /* block 7 of disk 0 in 5000 pages */
		cr_assert_eq(hk_replica_add(t, (i * 3) * PG, 0, i * 3, 0, 7, 1), 0);
	for (uint64_t i = 0; i < 100000; i++) /* 100k runs of 64 blocks, overlapping */
		cr_assert_eq(hk_replica_add(t, (1000000 + i * 100) * PG, 1, 1000000 + i * 100, 1,
					    i * 16, 64),
			     0);
	t0 = now_s();
	for (uint64_t i = 0; i < 100000; i++)
		hk_replica_lookup_blocks(t, 1, mix(i) % 1600000, 8, sink_cb, &sk);
	rate("lookup_blocks, 4-deep nesting", 100000, now_s() - t0);
	cr_assert_eq(sk.hits, sk.runs, "every block of disk 1 below 1.6M is replicated");
	t0 = now_s();
	cr_assert_eq(hk_replica_drop_blocks(t, 0, 7, 1), 5000);
	rate("drop_blocks of a block in 5000 pages", 5000, now_s() - t0);
	cr_assert_eq(hk_replica_drop_blocks(t, 1, 0, 1600000 + 64), 6400000);
	cr_assert_eq(rt_stats(t).entries, 0);
	rt_done(t);
}
