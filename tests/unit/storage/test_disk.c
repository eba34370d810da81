/*
 * storage/ disks on regular files: open and create, config errors, byte
 * round trips with and without O_DIRECT, the end of the disk, flush,
 * durability through close.
 */
#include <stdatomic.h>
#include <sys/uio.h>

#include "disk_test.h"

#define MiB (1024ull * 1024)

TestSuite(disk, .init = tmp_init, .fini = tmp_fini);

/* ---- open, create, config ------------------------------------------------- */

DISK_TEST(disk, create_allocates_and_reopens)
{
	char *path = tmp_file("d0.img");
	struct hk_disk_config cfg = {.name = "d0", .path = path, .size = 4 * MiB, .create = true};
	struct hk_disk *d = open_ok(&cfg);
	struct stat st;
	uint8_t buf[4096];

	cr_assert_eq(hk_disk_size(d), 4 * MiB);
	cr_assert_str_eq(hk_disk_backend(d), "file");
	cr_assert_str_eq(hk_disk_name(d), "d0");
	cr_assert(hk_disk_uses_direct(d), "AUTO on ext4 in /tmp should use O_DIRECT");
	cr_assert_str_eq(hk_disk_note(d), "");
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_size, (off_t)(4 * MiB));
	/* fallocate'd: every block allocated, not a sparse file */
	cr_assert_geq((uint64_t)st.st_blocks * 512, 4 * MiB, "only %lld bytes allocated",
		      (long long)st.st_blocks * 512);
	cr_assert_eq(st.st_mode & 0777, 0600);

	fill(buf, sizeof buf, 8192, 7);
	cr_assert_eq(hk_disk_pwrite(d, buf, sizeof buf, 8192), 0);
	hk_disk_close(d);

	/* Reopen without create and without a size: the whole file, data kept. */
	cfg = (struct hk_disk_config){.name = "d0", .path = path};
	d = open_ok(&cfg);
	cr_assert_eq(hk_disk_size(d), 4 * MiB);
	memset(buf, 0, sizeof buf);
	cr_assert_eq(hk_disk_pread(d, buf, sizeof buf, 8192), 0);
	cr_assert_eq(check(buf, sizeof buf, 8192, 7), -1);
	hk_disk_close(d);

	/* create on an existing file keeps its data and extends it. */
	cfg = (struct hk_disk_config){.name = "d0", .path = path, .size = 8 * MiB, .create = true};
	d = open_ok(&cfg);
	cr_assert_eq(hk_disk_size(d), 8 * MiB);
	cr_assert_eq(hk_disk_pread(d, buf, sizeof buf, 8192), 0);
	cr_assert_eq(check(buf, sizeof buf, 8192, 7), -1);
	hk_disk_close(d);
	free(path);
}

DISK_TEST(disk, short_file_refused_with_one_line)
{
	char *path = tmp_file("short.img");
	char err[256], want[512];
	struct hk_disk *d = (struct hk_disk *)1;

	make_file(path, 1048576);
	struct hk_disk_config cfg = {.name = "d0", .path = path, .size = 4294967296ull};
	cr_assert_eq(hk_disk_open(&cfg, &d, err, sizeof err), -EINVAL);
	cr_assert_null(d);
	snprintf(want, sizeof want, "disk d0: %s is 1048576 bytes, configured 4294967296", path);
	cr_assert_str_eq(err, want);
	cr_assert_null(strchr(err, '\n'));
	free(path);
}

DISK_TEST(disk, bad_configs_named_in_one_line)
{
	char *path = tmp_file("x.img"), *missing = tmp_file("missing.img");
	char err[256];
	struct hk_disk *d = NULL;
	struct {
		struct hk_disk_config cfg;
		int ret;
		const char *needle;
	} cases[] = {
	    {{.name = "d1"}, -EINVAL, "disk d1: no path"},
	    {{.name = "d1", .path = path, .queue_depth = 100000}, -EINVAL, "queue depth 100000"},
	    {{.name = "d1", .path = path, .size = 1000}, -EINVAL, "size 1000 is not a multiple"},
	    {{.name = "d1", .path = path, .direct = 7}, -EINVAL, "bad direct mode 7"},
	    {{.name = "d1", .path = missing, .create = true}, -EINVAL, "create needs a size"},
	    {{.name = "d1", .path = missing}, -ENOENT, "No such file"},
	    {{.name = "d1", .path = "/dev/null"}, -EINVAL, "not a regular file or block device"},
	    {{.name = "d1", .path = tmp_dir}, -EINVAL, "not a regular file or block device"},
	    {{.path = path}, -EINVAL, "disk disk: "}, /* empty file, default name */
	};

	make_file(path, 0);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int ret = hk_disk_open(&cases[i].cfg, &d, err, sizeof err);
		cr_expect_eq(ret, cases[i].ret, "case %zu: %d (%s)", i, ret, err);
		cr_expect_null(d, "case %zu", i);
		cr_expect_not_null(strstr(err, cases[i].needle), "case %zu: '%s' lacks '%s'", i,
				   err, cases[i].needle);
		cr_expect_null(strchr(err, '\n'));
	}
	cr_assert_eq(access(missing, F_OK), -1, "a refused config created the file");
	cr_assert_eq(hk_disk_open(NULL, &d, err, sizeof err), -EINVAL);
	free(path);
	free(missing);
}

DISK_TEST(disk, failed_create_leaves_no_file)
{
	char *path = tmp_file("huge.img");
	char err[256];
	struct hk_disk *d = NULL;
	/* 1 PiB: past ext4's file size limit, so extending it fails. */
	struct hk_disk_config cfg = {
	    .name = "big", .path = path, .size = 1ull << 50, .create = true};

	int ret = hk_disk_open(&cfg, &d, err, sizeof err);
	cr_assert_lt(ret, 0);
	cr_assert_not_null(strstr(err, "disk big: "), "%s", err);
	cr_assert_eq(access(path, F_OK), -1, "%s left behind after: %s", path, err);
	free(path);
}

DISK_TEST(disk, size_smaller_than_file_is_the_disk)
{
	char *path = tmp_file("big.img");
	uint8_t b = 0;

	make_file(path, 2 * MiB);
	struct hk_disk_config cfg = {.name = "d0", .path = path, .size = 1 * MiB};
	struct hk_disk *d = open_ok(&cfg);
	cr_assert_eq(hk_disk_size(d), 1 * MiB);
	cr_assert_eq(hk_disk_pread(d, &b, 1, 1 * MiB), -EINVAL);
	cr_assert_eq(hk_disk_pread(d, &b, 1, 1 * MiB - 1), 0);
	hk_disk_close(d);
	free(path);
}

/* ---- round trips ------------------------------------------------------------ */

static struct hk_disk *open_mode(const char *path, enum hk_disk_direct dm)
{
	struct hk_disk_config cfg = {
	    .name = "rt", .path = path, .size = 1 * MiB, .create = true, .direct = dm};
	struct hk_disk *d = open_ok(&cfg);
	cr_assert_eq(hk_disk_uses_direct(d), dm == HK_DISK_DIRECT_ON);
	return d;
}

/* Compare the file's bytes with plain pread: what storage/ wrote is really there. */
static void assert_file_bytes(const char *path, uint64_t off, size_t len, unsigned seed)
{
	uint8_t *buf = malloc(len);
	int fd = open(path, O_RDONLY);

	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, buf, len, (off_t)off), (ssize_t)len);
	long bad = check(buf, len, off, seed);
	cr_assert_eq(bad, -1, "file byte %llu differs", (unsigned long long)(off + (uint64_t)bad));
	close(fd);
	free(buf);
}

static void round_trips(enum hk_disk_direct dm)
{
	char *path = tmp_file("rt.img");
	struct hk_disk *d = open_mode(path, dm);
	/* Requests at odd offsets and lengths, some crossing 512-byte blocks. */
	struct {
		uint64_t off;
		size_t len;
	} cases[] = {
	    {0, 4096},	      {1, 3},
	    {510, 4},	      {511, 1},
	    {512, 512},	      {4095, 4098},
	    {100000, 1},      {65536, 65536},
	    {1 * MiB - 3, 3}, {1 * MiB - 4096, 4096},
	    {777, 1000 + 37}, {123457, 70001},
	};
	static uint8_t buf[80000] __attribute__((aligned(4096)));
	unsigned seed = 1;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++, seed++) {
		uint64_t off = cases[i].off;
		size_t len = cases[i].len;
		/* also from a misaligned buffer */
		uint8_t *p = buf + (i & 1);

		fill(p, len, off, seed);
		cr_assert_eq(hk_disk_pwrite(d, p, len, off), 0, "write %zu@%llu", len,
			     (unsigned long long)off);
		memset(buf, 0, sizeof buf);
		cr_assert_eq(hk_disk_pread(d, p, len, off), 0);
		long bad = check(p, len, off, seed);
		cr_assert_eq(bad, -1, "case %zu (%zu@%llu): byte %ld differs", i, len,
			     (unsigned long long)off, bad);
	}
	/* The last case is on the disk as written, seen by plain pread after close. */
	hk_disk_close(d);
	size_t last = sizeof cases / sizeof cases[0] - 1;
	assert_file_bytes(path, cases[last].off, cases[last].len, (unsigned)last + 1);
	free(path);
}

DISK_TEST(disk, round_trips_direct)
{
	round_trips(HK_DISK_DIRECT_ON);
}

DISK_TEST(disk, round_trips_buffered)
{
	round_trips(HK_DISK_DIRECT_OFF);
}

/* Writes must not disturb the bytes around them inside the same blocks. */
static void neighbours(enum hk_disk_direct dm)
{
	char *path = tmp_file("nb.img");
	struct hk_disk *d = open_mode(path, dm);
	static uint8_t all[16384];
	uint8_t three[3] = {0xa1, 0xa2, 0xa3};

	fill(all, sizeof all, 0, 9);
	cr_assert_eq(hk_disk_pwrite(d, all, sizeof all, 0), 0);
	cr_assert_eq(hk_disk_pwrite(d, three, 3, 1), 0);    /* offset 1, length 3 */
	cr_assert_eq(hk_disk_pwrite(d, three, 3, 1022), 0); /* crosses 1024 */
	cr_assert_eq(hk_disk_pread(d, all, sizeof all, 0), 0);
	memcpy(&all[1], three, 3);
	memcpy(&all[1022], three, 3);
	for (size_t i = 0; i < sizeof all; i++) {
		uint8_t want = i >= 1 && i < 4	       ? three[i - 1]
			       : i >= 1022 && i < 1025 ? three[i - 1022]
						       : pat(i, 9);
		cr_assert_eq(all[i], want, "byte %zu: %#x, want %#x", i, all[i], want);
	}

	struct hk_disk_stats st;
	hk_disk_get_stats(d, &st);
	if (dm == HK_DISK_DIRECT_ON) {
		cr_assert_geq(st.rmw, 2);
		cr_assert_geq(st.bounced, 2);
	} else {
		cr_assert_eq(st.bounced, 0);
	}
	hk_disk_close(d);
	free(path);
}

DISK_TEST(disk, neighbours_direct)
{
	neighbours(HK_DISK_DIRECT_ON);
}

DISK_TEST(disk, neighbours_buffered)
{
	neighbours(HK_DISK_DIRECT_OFF);
}

/* iovecs of odd sizes at odd addresses, in one request each way. */
static void odd_iovecs(enum hk_disk_direct dm)
{
	char *path = tmp_file("iov.img");
	struct hk_disk *d = open_mode(path, dm);
	static uint8_t a[5000], b[5000];
	size_t sizes[] = {1, 1000, 37, 512, 3, 2047};
	struct iovec wv[6], rv[6];
	size_t total = 0, pos = 0;
	struct waiter w = WAITER_INIT;
	struct tio t[2];

	for (size_t i = 0; i < 6; i++)
		total += sizes[i];
	fill(a + 1, total, 777, 3);
	for (size_t i = 0; i < 6; i++) {
		wv[i] = (struct iovec){a + 1 + pos, sizes[i]};
		rv[i] = (struct iovec){b + 3 + pos, sizes[i]};
		pos += sizes[i];
	}
	tio_set(&t[0], &w, HK_DISK_WRITE, 777, NULL, 0);
	t[0].io.iov = wv;
	t[0].io.iovcnt = 6;
	struct hk_disk_io *one = &t[0].io;
	cr_assert_eq(hk_disk_submit(d, &one, 1), 0);
	wait_for(&w, 1);
	cr_assert_eq(t[0].res, (int)total);

	tio_set(&t[1], &w, HK_DISK_READ, 777, NULL, 0);
	t[1].io.iov = rv;
	t[1].io.iovcnt = 6;
	one = &t[1].io;
	cr_assert_eq(hk_disk_submit(d, &one, 1), 0);
	wait_for(&w, 2);
	cr_assert_eq(t[1].res, (int)total);
	cr_assert_eq(check(b + 3, total, 777, 3), -1);
	hk_disk_close(d);
	free(path);
}

DISK_TEST(disk, odd_iovecs_direct)
{
	odd_iovecs(HK_DISK_DIRECT_ON);
}

DISK_TEST(disk, odd_iovecs_buffered)
{
	odd_iovecs(HK_DISK_DIRECT_OFF);
}

/* ---- the end of the disk ----------------------------------------------------- */

static void beyond_end(enum hk_disk_direct dm)
{
	char *path = tmp_file("end.img");
	struct hk_disk *d = open_mode(path, dm);
	uint64_t size = hk_disk_size(d);
	uint8_t buf[8192], back[8192];

	fill(buf, sizeof buf, size - sizeof buf, 5);
	cr_assert_eq(hk_disk_pwrite(d, buf, sizeof buf, size - sizeof buf), 0);

	cr_assert_eq(hk_disk_pread(d, back, 2, size - 1), -EINVAL);
	cr_assert_eq(hk_disk_pread(d, back, 512, size), -EINVAL);
	cr_assert_eq(hk_disk_pread(d, back, 1, UINT64_MAX), -EINVAL); /* no wrap-around */
	cr_assert_eq(hk_disk_pwrite(d, back, 1, size), -ENOSPC);
	cr_assert_eq(hk_disk_pwrite(d, back, 4096, size - 512), -ENOSPC);
	cr_assert_eq(hk_disk_pwrite(d, back, 2, UINT64_MAX - 1), -ENOSPC);
	/* the refused writes touched nothing */
	cr_assert_eq(hk_disk_pread(d, back, sizeof back, size - sizeof back), 0);
	cr_assert_eq(memcmp(buf, back, sizeof buf), 0);

	/* A bad request in a batch fails alone. */
	struct waiter w = WAITER_INIT;
	struct tio t[3];
	uint8_t x[3][16];
	tio_set(&t[0], &w, HK_DISK_WRITE, 0, x[0], 16);
	tio_set(&t[1], &w, HK_DISK_WRITE, size - 8, x[1], 16);
	tio_set(&t[2], &w, HK_DISK_READ, 100, x[2], 16);
	struct hk_disk_io *ios[3] = {&t[0].io, &t[1].io, &t[2].io};
	cr_assert_eq(hk_disk_submit(d, ios, 3), 0);
	wait_for(&w, 3);
	cr_assert_eq(t[0].res, 16);
	cr_assert_eq(t[1].res, -ENOSPC);
	cr_assert_eq(t[2].res, 16);

	/* Over the per-request limits. */
	struct iovec big[2] = {{x[0], HK_DISK_IO_MAX}, {x[1], HK_DISK_IO_MAX}};
	tio_set(&t[0], &w, HK_DISK_READ, 0, NULL, 0);
	t[0].io.iov = big;
	t[0].io.iovcnt = 2;
	tio_set(&t[1], &w, HK_DISK_READ, 0, x[1], 1);
	t[1].io.iovcnt = HK_DISK_IOV_MAX + 1;
	tio_set(&t[2], &w, (enum hk_disk_op)42, 0, x[2], 1);
	cr_assert_eq(hk_disk_submit(d, ios, 3), 0);
	wait_for(&w, 6);
	cr_assert_eq(t[0].res, -EINVAL);
	cr_assert_eq(t[1].res, -EINVAL);
	cr_assert_eq(t[2].res, -EINVAL);

	struct hk_disk_stats st;
	hk_disk_get_stats(d, &st);
	cr_assert_eq(st.errors, 10);
	cr_assert_eq(hk_disk_submit(NULL, ios, 1), -EINVAL);
	t[0].io.done = NULL;
	cr_assert_eq(hk_disk_submit(d, ios, 1), -EINVAL);
	hk_disk_close(d);
	free(path);
}

DISK_TEST(disk, beyond_end_direct)
{
	beyond_end(HK_DISK_DIRECT_ON);
}

DISK_TEST(disk, beyond_end_buffered)
{
	beyond_end(HK_DISK_DIRECT_OFF);
}

/* ---- flush, FUA, zero length ---------------------------------------------------- */

DISK_TEST(disk, flush_and_fua)
{
	char *path = tmp_file("fl.img");
	struct hk_disk *d = open_mode(path, HK_DISK_DIRECT_ON);
	struct waiter w = WAITER_INIT;
	struct tio t[3];
	uint8_t a[4096] __attribute__((aligned(4096))), b[100];

	fill(a, sizeof a, 0, 4);
	fill(b, sizeof b, 5000, 4);
	tio_set(&t[0], &w, HK_DISK_WRITE, 0, a, sizeof a);
	t[0].io.flags = HK_DISK_IO_FUA;
	tio_set(&t[1], &w, HK_DISK_WRITE, 5000, b, sizeof b); /* FUA through the bounce path */
	t[1].io.flags = HK_DISK_IO_FUA;
	tio_set(&t[2], &w, HK_DISK_READ, 9000, b, 0); /* zero length: completes with 0 */
	struct hk_disk_io *ios[3] = {&t[0].io, &t[1].io, &t[2].io};
	cr_assert_eq(hk_disk_submit(d, ios, 3), 0);
	wait_for(&w, 3);
	cr_assert_eq(t[0].res, 4096);
	cr_assert_eq(t[1].res, 100);
	cr_assert_eq(t[2].res, 0);

	cr_assert_eq(hk_disk_flush(d), 0);
	tio_set(&t[0], &w, HK_DISK_FLUSH, 0, NULL, 0);
	cr_assert_eq(hk_disk_submit(d, ios, 1), 0);
	wait_for(&w, 4);
	cr_assert_eq(t[0].res, 0);

	struct hk_disk_stats st;
	hk_disk_get_stats(d, &st);
	cr_assert_eq(st.flushes, 2);
	cr_assert_eq(st.writes, 2);
	cr_assert_eq(st.bytes_written, 4196);
	cr_assert_eq(st.errors, 0);
	hk_disk_close(d);
	assert_file_bytes(path, 0, sizeof a, 4);
	assert_file_bytes(path, 5000, sizeof b, 4);
	free(path);
}

/* ---- close, callbacks ------------------------------------------------------------ */

static atomic_uint close_done;

static void count_done(struct hk_disk_io *io, int res)
{
	if (res == (int)io->iov[0].iov_len)
		atomic_fetch_add(&close_done, 1);
	free(io);
}

DISK_TEST(disk, close_drains_everything)
{
	char *path = tmp_file("cl.img");
	struct hk_disk_config cfg = {
	    .name = "cl", .path = path, .size = 1 * MiB, .create = true, .queue_depth = 4};
	struct hk_disk *d = open_ok(&cfg);
	static uint8_t buf[200][700];

	for (unsigned i = 0; i < 200; i++) {
		/* heap requests, freed by their own done(): nothing of them is touched after */
		struct hk_disk_io *io = calloc(1, sizeof *io + sizeof(struct iovec));
		struct iovec *v = (struct iovec *)(io + 1);
		*v = (struct iovec){buf[i], sizeof buf[i]};
		io->op = i & 1 ? HK_DISK_READ : HK_DISK_WRITE;
		io->offset = i * 1000ull;
		io->iov = v;
		io->iovcnt = 1;
		io->done = count_done;
		cr_assert_eq(hk_disk_submit(d, &io, 1), 0);
	}
	hk_disk_close(d);
	cr_assert_eq(atomic_load(&close_done), 200);
	free(path);
}

struct reentry {
	struct hk_disk *d;
	int sync_res;
	int submit_res;
	struct tio again;
	struct waiter *w;
};

static void reenter_done(struct hk_disk_io *io, int res)
{
	struct tio *t = io->ctx;
	struct reentry *r = (struct reentry *)t->v[1].iov_base;
	uint8_t b;

	r->sync_res = hk_disk_pread(r->d, &b, 1, 0); /* would wait for itself */
	/* but submitting more from done() is fine */
	tio_set(&r->again, r->w, HK_DISK_READ, 0, t->v[0].iov_base, 1);
	struct hk_disk_io *one = &r->again.io;
	r->submit_res = hk_disk_submit(r->d, &one, 1);
	tio_done(io, res);
}

DISK_TEST(disk, done_may_submit_but_not_wait)
{
	char *path = tmp_file("re.img");
	struct hk_disk *d = open_mode(path, HK_DISK_DIRECT_OFF);
	struct waiter w = WAITER_INIT;
	struct reentry r = {.d = d, .w = &w};
	struct tio t;
	uint8_t b;

	tio_set(&t, &w, HK_DISK_READ, 0, &b, 1);
	t.io.done = reenter_done;
	t.v[1].iov_base = &r; /* smuggle the context */
	struct hk_disk_io *one = &t.io;
	cr_assert_eq(hk_disk_submit(d, &one, 1), 0);
	wait_for(&w, 2);
	cr_assert_eq(r.sync_res, -EDEADLK);
	cr_assert_eq(r.submit_res, 0);
	cr_assert_eq(r.again.res, 1);
	hk_disk_close(d);
	free(path);
}
