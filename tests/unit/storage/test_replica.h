/*
 * Helpers for the replica-table suites: leak checking (as in
 * tests/unit/node/node_test.h: Criterion 2.4 ignores LeakSanitizer's
 * report at worker exit, so each test asks for it), the invariant checker
 * after every test, and collectors for the callback APIs.
 */
#ifndef TEST_REPLICA_H
#define TEST_REPLICA_H

#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "replica.h"
#include "replica_internal.h"

#define PG ((uint64_t)HK_REPLICA_PAGE_SIZE)

extern int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

static inline void rt_assert_no_leaks(void)
{
	if (__lsan_do_recoverable_leak_check)
		cr_assert_eq(__lsan_do_recoverable_leak_check(), 0,
			     "LeakSanitizer found leaks (report above)");
}

static inline void rt_check(struct hk_replica *t)
{
	char err[256] = "";
	int ret = hk_replica_check(t, err, sizeof(err));

	cr_assert_eq(ret, 0, "table invariant broken: %s", err);
}

static inline struct hk_replica *rt_new(void)
{
	struct hk_replica *t = NULL;

	cr_assert_eq(hk_replica_create(&t), 0);
	cr_assert_not_null(t);
	return t;
}

/* Check the invariants, destroy; the test wrapper then checks for leaks. */
static inline void rt_done(struct hk_replica *t)
{
	rt_check(t);
	hk_replica_destroy(t);
}

/* Test(suite, name) followed by a leak check; same body syntax. */
#define RT_TEST(suite, name, ...)                                                                  \
	static void suite##_##name##_body(void);                                                   \
	Test(suite, name, ##__VA_ARGS__)                                                           \
	{                                                                                          \
		suite##_##name##_body();                                                           \
		rt_assert_no_leaks();                                                              \
	}                                                                                          \
	static void suite##_##name##_body(void)

/* ---- collectors ------------------------------------------------------------ */

#define RT_MAX 256

struct rt_runs {
	unsigned n;
	int stop_after; /* stop the walk after this many runs (0: never) */
	struct hk_replica_run r[RT_MAX];
};

static inline int rt_run_cb(void *ctx, const struct hk_replica_run *run)
{
	struct rt_runs *rs = ctx;

	cr_assert_lt(rs->n, RT_MAX);
	rs->r[rs->n++] = *run;
	return rs->stop_after && (int)rs->n >= rs->stop_after ? 7 : 0;
}

static inline struct rt_runs *rt_lookup(struct hk_replica *t, uint16_t disk, uint64_t block,
					uint64_t n)
{
	static struct rt_runs rs;
	int ret;

	memset(&rs, 0, sizeof(rs));
	ret = hk_replica_lookup_blocks(t, disk, block, n, rt_run_cb, &rs);
	cr_assert_eq(ret, 0);
	return &rs;
}

struct rt_exts {
	unsigned n;
	int stop_after;
	struct hk_replica_extent e[RT_MAX];
};

static inline int rt_ext_cb(void *ctx, const struct hk_replica_extent *e)
{
	struct rt_exts *xs = ctx;

	cr_assert_lt(xs->n, RT_MAX);
	xs->e[xs->n++] = *e;
	return xs->stop_after && (int)xs->n >= xs->stop_after;
}

static inline struct rt_exts *rt_list(struct hk_replica *t, const struct hk_replica_filter *f)
{
	static struct rt_exts xs;
	int64_t n;

	memset(&xs, 0, sizeof(xs));
	n = hk_replica_foreach(t, f, rt_ext_cb, &xs);
	cr_assert_eq(n, (int64_t)xs.n);
	return &xs;
}

static inline struct hk_replica_stats rt_stats(struct hk_replica *t)
{
	struct hk_replica_stats st;

	hk_replica_get_stats(t, &st);
	return st;
}

/* Expect lookup_gpa(gpa) to give the page's own (node, frame, disk, block). */
static inline void rt_expect_page(struct hk_replica *t, uint64_t gpa, uint16_t node, uint64_t frame,
				  uint16_t disk, uint64_t block)
{
	struct hk_replica_extent e;
	uint64_t d;

	cr_assert_eq(hk_replica_lookup_gpa(t, gpa, &e), 0, "gpa %#llx has no entry",
		     (unsigned long long)gpa);
	d = (gpa - e.gpa) / PG;
	cr_assert(gpa >= e.gpa && d < e.npages);
	cr_assert_eq(e.node, node, "gpa %#llx node %u, want %u", (unsigned long long)gpa, e.node,
		     node);
	cr_assert_eq(e.frame + d, frame, "gpa %#llx frame %llu, want %llu", (unsigned long long)gpa,
		     (unsigned long long)(e.frame + d), (unsigned long long)frame);
	cr_assert_eq(e.disk, disk);
	cr_assert_eq(e.block + d, block, "gpa %#llx block %llu, want %llu", (unsigned long long)gpa,
		     (unsigned long long)(e.block + d), (unsigned long long)block);
}

static inline void rt_expect_none(struct hk_replica *t, uint64_t gpa)
{
	struct hk_replica_extent e;

	cr_assert_eq(hk_replica_lookup_gpa(t, gpa, &e), -ENOENT, "gpa %#llx still has an entry",
		     (unsigned long long)gpa);
}

#endif
