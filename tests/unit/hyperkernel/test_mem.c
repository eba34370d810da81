/*
 * Guest RAM through userfaultfd, without KVM: host threads touch guest
 * memory exactly as a vCPU would, and the fault thread must place every
 * page.  These run on any machine with userfaultfd.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#include "hyperkernel.h"

static char err[256];

TestSuite(mem);

static long rss_pages(void)
{
	long size, rss = -1;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f) {
		if (fscanf(f, "%ld %ld", &size, &rss) != 2)
			rss = -1;
		fclose(f);
	}
	return rss;
}

Test(mem, rejects_bad_sizes_and_windows)
{
	struct hk_mem *m;

	cr_assert_eq(hk_mem_create(63ull << 20, 0, &m, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "64 MiB"), "%s", err);
	cr_assert_eq(hk_mem_create((64ull << 20) + 4096, 0, &m, err, sizeof(err)), -EINVAL);
	cr_assert_eq(hk_mem_create(128ull << 40, 0, &m, err, sizeof(err)), -EINVAL);
	cr_assert_eq(hk_mem_create(64ull << 20, 3 * 4096, &m, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "fault window"), "%s", err);
	cr_assert_eq(hk_mem_create(64ull << 20, 4ull << 20, &m, err, sizeof(err)), -EINVAL);
}

Test(mem, address_checks)
{
	struct hk_mem *m;
	uint64_t sz = 64ull << 20;

	cr_assert_eq(hk_mem_create(sz, 0, &m, err, sizeof(err)), 0, "%s", err);
	cr_assert_not_null(hk_mem_gpa(m, 0, 1));
	cr_assert_not_null(hk_mem_gpa(m, sz - 1, 1));
	cr_assert_not_null(hk_mem_gpa(m, 0, sz));
	cr_assert_null(hk_mem_gpa(m, sz - 1, 2), "range past the end accepted");
	cr_assert_null(hk_mem_gpa(m, sz, 1));
	cr_assert_null(hk_mem_gpa(m, 0, 0), "zero-length range accepted");
	cr_assert_null(hk_mem_gpa(m, UINT64_MAX, 2), "wrapping range accepted");
	cr_assert_null(hk_mem_gpa(m, 4096, UINT64_MAX), "wrapping length accepted");
	cr_assert_eq(hk_mem_write(m, sz - 2, "abc", 3), -EFAULT);
	hk_mem_destroy(m);
}

Test(mem, hole_between_3g_and_4g)
{
	struct hk_mem *m;
	struct hk_mem_range r[2];
	char buf[8] = {0};

	cr_assert_eq(hk_mem_create(5ull << 30, 0, &m, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(hk_mem_ranges(m, r), 2);
	cr_assert_eq(r[0].len, 3ull << 30);
	cr_assert_eq(r[1].gpa, 4ull << 30);
	cr_assert_eq(r[1].len, 2ull << 30);
	cr_assert_null(hk_mem_gpa(m, 3ull << 30, 1), "MMIO hole mapped as RAM");
	cr_assert_null(hk_mem_gpa(m, (3ull << 30) - 4, 8), "range into the hole accepted");
	cr_assert_null(hk_mem_gpa(m, 6ull << 30, 1));
	cr_assert_eq(hk_mem_write(m, (6ull << 30) - 7, "highram", 7), 0);
	cr_assert_eq(hk_mem_read(m, (6ull << 30) - 7, buf, 7), 0);
	cr_assert_str_eq(buf, "highram");
	/* Low and high RAM are distinct pages of the host mapping. */
	cr_assert_neq(hk_mem_gpa(m, (3ull << 30) - 1, 1), hk_mem_gpa(m, (5ull << 30) - 1, 1));
	hk_mem_destroy(m);
}

Test(mem, first_touch_is_zero_and_resolved_by_the_fault_thread)
{
	struct hk_mem *m;
	struct hk_mem_stats st;
	uint64_t *p;

	cr_assert_eq(hk_mem_create(64ull << 20, 64 << 10, &m, err, sizeof(err)), 0, "%s", err);
	hk_mem_get_stats(m, &st);
	cr_assert_eq(st.resident_pages, 0);
	p = hk_mem_gpa(m, 1 << 20, 8);
	cr_assert_eq(*p, 0);
	*p = 0x1234;
	hk_mem_get_stats(m, &st);
	cr_assert_eq(st.faults, 1, "one fault expected, got %llu", (unsigned long long)st.faults);
	cr_assert_eq(st.resident_pages, 16, "a 64 KiB window is 16 pages");
	/* Same window: no new fault. */
	cr_assert_eq(*(uint64_t *)hk_mem_gpa(m, (1 << 20) + 4096, 8), 0);
	hk_mem_get_stats(m, &st);
	cr_assert_eq(st.faults, 1);
	cr_assert_eq(*p, 0x1234);
	hk_mem_destroy(m);
}

/* The F1 acceptance shape without KVM: 1 TiB of guest memory, 256 MiB
 * touched, host RSS grows by about 256 MiB, not by the guest size. */
Test(mem, one_tib_guest_costs_only_touched_pages)
{
	struct hk_mem *m;
	struct hk_mem_stats st;
	long before, after;
	uint64_t touch = 256ull << 20;

	cr_assert_eq(hk_mem_create(1ull << 40, 0, &m, err, sizeof(err)), 0, "%s", err);
	before = rss_pages();
	for (uint64_t gpa = 0x100000; gpa < 0x100000 + touch; gpa += 4096)
		*(volatile uint8_t *)hk_mem_gpa(m, gpa, 1) = 1;
	/* And a few scattered pages far up in high memory. */
	for (uint64_t gpa = 8ull << 30; gpa < (1ull << 40); gpa += 100ull << 30)
		*(volatile uint8_t *)hk_mem_gpa(m, gpa, 1) = 1;
	after = rss_pages();
	hk_mem_get_stats(m, &st);
	cr_assert_geq(st.resident_pages, touch / 4096);
	cr_assert_lt(st.resident_pages, touch / 4096 + 16 * 256, "windows over-allocated");
	cr_assert_lt((after - before) * 4096, 1ll << 30, "RSS grew by %ld MiB",
		     (after - before) * 4096 >> 20);
	cr_log_info("1 TiB guest, 256 MiB touched: RSS +%ld MiB, %llu faults", (after - before) >> 8,
		    (unsigned long long)st.faults);
	hk_mem_destroy(m);
}

struct toucher {
	struct hk_mem *m;
	unsigned seed;
};

static void *touch_all(void *arg)
{
	struct toucher *t = arg;

	/* Every thread walks the same windows in a different order, so most
	 * faults race with another thread's fault on the same window. */
	for (unsigned i = 0; i < 512; i++) {
		uint64_t w = (i * 37u + t->seed * 101u) % 512;
		volatile uint64_t *p = hk_mem_gpa(t->m, (1 << 20) + w * 65536 + t->seed * 8, 8);

		if (*p != 0)
			return (void *)1; /* asserts belong to the test thread */
	}
	return NULL;
}

Test(mem, concurrent_faults_on_the_same_windows)
{
	struct hk_mem *m;
	struct hk_mem_stats st;
	pthread_t th[8];
	struct toucher t[8];

	cr_assert_eq(hk_mem_create(64ull << 20, 64 << 10, &m, err, sizeof(err)), 0, "%s", err);
	for (unsigned i = 0; i < 8; i++) {
		t[i] = (struct toucher){m, i};
		pthread_create(&th[i], NULL, touch_all, &t[i]);
	}
	for (unsigned i = 0; i < 8; i++) {
		void *bad;

		pthread_join(th[i], &bad);
		cr_assert_null(bad, "thread %u read a non-zero fresh page", i);
	}
	hk_mem_get_stats(m, &st);
	cr_assert_eq(st.faults, 512, "every window filled exactly once");
	cr_assert_eq(st.resident_pages, 512 * 16);
	hk_mem_destroy(m);
}
