/*
 * storage/ disks under load: far more requests than the queue depth from
 * several threads, read-modify-write of shared blocks by concurrent
 * writes, and random batches checked against an in-memory model.
 */
#include <sys/uio.h>

#include "disk_test.h"

#define MiB (1024ull * 1024)

TestSuite(disk_io, .init = tmp_init, .fini = tmp_fini);

static struct hk_disk *open_disk(const char *path, enum hk_disk_direct dm, unsigned qd,
				 uint64_t size)
{
	struct hk_disk_config cfg = {.name = "io",
				     .path = path,
				     .size = size,
				     .create = true,
				     .direct = dm,
				     .queue_depth = qd};
	struct hk_disk *d = open_ok(&cfg);
	cr_assert_eq(hk_disk_uses_direct(d), dm == HK_DISK_DIRECT_ON);
	return d;
}

/* ---- 1000 requests with depth 8, from four threads --------------------------- */

#define NOPS	 1000
#define NTHREADS 4
#define SLOT	 8192ull

struct load {
	struct hk_disk *d;
	unsigned first, count;
	enum hk_disk_op op;
	uint8_t (*bufs)[SLOT];
	struct tio *t;
	struct waiter *w;
};

/* Request i: slot i, 4 KiB aligned for two in three, 1000 bytes at +7 for the third. */
static void req_shape(unsigned i, uint64_t *off, size_t *len, size_t *skew)
{
	bool odd = i % 3 == 2;
	*off = i * SLOT + (odd ? 7 : 0);
	*len = odd ? 1000 : 4096;
	*skew = odd ? 3 : 0;
}

static void *load_thread(void *arg)
{
	struct load *l = arg;
	enum { BATCH = 50 };

	for (unsigned b = l->first; b < l->first + l->count; b += BATCH) {
		struct hk_disk_io *ios[BATCH];
		unsigned n = 0;
		for (unsigned i = b; i < b + BATCH && i < l->first + l->count; i++, n++) {
			uint64_t off;
			size_t len, skew;
			req_shape(i, &off, &len, &skew);
			if (l->op == HK_DISK_WRITE)
				fill(l->bufs[i] + skew, len, off, 11);
			tio_set(&l->t[i], l->w, l->op, off, l->bufs[i] + skew, len);
			ios[n] = &l->t[i].io;
		}
		if (hk_disk_submit(l->d, ios, n) != 0)
			abort();
	}
	return NULL;
}

static void run_load(struct hk_disk *d, enum hk_disk_op op, uint8_t (*bufs)[SLOT], struct tio *t)
{
	struct waiter w = WAITER_INIT;
	struct load l[NTHREADS];
	pthread_t th[NTHREADS];

	for (unsigned k = 0; k < NTHREADS; k++) {
		l[k] = (struct load){d, k * (NOPS / NTHREADS), NOPS / NTHREADS, op, bufs, t, &w};
		cr_assert_eq(pthread_create(&th[k], NULL, load_thread, &l[k]), 0);
	}
	for (unsigned k = 0; k < NTHREADS; k++)
		pthread_join(th[k], NULL);
	wait_for(&w, NOPS);
	cr_assert_eq(w.errors, 0, "first error %d", w.first_error);
	for (unsigned i = 0; i < NOPS; i++)
		cr_assert_eq(t[i].res, (int)t[i].v[0].iov_len, "request %u: %d", i, t[i].res);
}

static void many_requests(enum hk_disk_direct dm)
{
	char *path = tmp_file("many.img");
	struct hk_disk *d = open_disk(path, dm, 8, NOPS * SLOT);
	uint8_t(*bufs)[SLOT] = aligned_alloc(4096, NOPS * SLOT);
	struct tio *t = calloc(NOPS, sizeof *t);

	cr_assert(bufs && t);
	run_load(d, HK_DISK_WRITE, bufs, t);
	memset(bufs, 0, NOPS * SLOT);
	run_load(d, HK_DISK_READ, bufs, t);
	for (unsigned i = 0; i < NOPS; i++) {
		uint64_t off;
		size_t len, skew;
		req_shape(i, &off, &len, &skew);
		cr_assert_eq(check(bufs[i] + skew, len, off, 11), -1, "request %u read back wrong",
			     i);
	}

	struct hk_disk_stats st;
	hk_disk_get_stats(d, &st);
	cr_assert_eq(st.writes, NOPS);
	cr_assert_eq(st.reads, NOPS);
	cr_assert_eq(st.errors, 0);
	cr_assert_gt(st.ring_waits, 0, "depth 8 never filled up?");
	if (dm == HK_DISK_DIRECT_ON)
		cr_assert_eq(st.bounced, 2 * (NOPS / 3)); /* the 1000-byte ones */
	hk_disk_close(d);
	free(bufs);
	free(t);
	free(path);
}

DISK_TEST(disk_io, many_beyond_queue_depth_direct)
{
	many_requests(HK_DISK_DIRECT_ON);
}

DISK_TEST(disk_io, many_beyond_queue_depth_buffered)
{
	many_requests(HK_DISK_DIRECT_OFF);
}

/* ---- read-modify-write of shared blocks ------------------------------------------ */

/*
 * 64 one-byte writes to distinct bytes of the same two 512-byte blocks, and
 * 4-byte writes straddling their boundary, all in one batch: without
 * serialization two RMWs read the same old block and the later write-back
 * loses the earlier byte.
 */
DISK_TEST(disk_io, rmw_of_shared_blocks_loses_nothing)
{
	char *path = tmp_file("rmw.img");
	struct hk_disk *d = open_disk(path, HK_DISK_DIRECT_ON, 64, 1 * MiB);
	enum { N = 80, SPAN = 2048 };
	static uint8_t bytes[N][4], back[SPAN];
	static uint8_t model[SPAN];
	struct tio t[N];
	struct hk_disk_io *ios[N];

	cr_assert_eq(hk_disk_block_size(d), 512, "test assumes 512-byte blocks here");
	cr_assert_eq(hk_disk_pwrite(d, model, SPAN, 0), 0);
	for (unsigned round = 0; round < 40; round++) {
		struct waiter w = WAITER_INIT;
		for (unsigned k = 0; k < N; k++) {
			/* 64 single bytes 13 apart over [0, 832); 16 4-byte writes at 1022+64j */
			uint64_t off = k < 64 ? k * 13 + round % 13 : 1022 + (k - 64) * 64;
			size_t len = k < 64 ? 1 : 4;
			for (size_t i = 0; i < len; i++)
				bytes[k][i] = model[off + i] = (uint8_t)(round * 7 + k + i + 1);
			tio_set(&t[k], &w, HK_DISK_WRITE, off, bytes[k], len);
			ios[k] = &t[k].io;
		}
		cr_assert_eq(hk_disk_submit(d, ios, N), 0);
		wait_for(&w, N);
		cr_assert_eq(w.errors, 0);
		cr_assert_eq(hk_disk_pread(d, back, SPAN, 0), 0);
		for (unsigned i = 0; i < SPAN; i++)
			cr_assert_eq(back[i], model[i], "round %u: byte %u is %#x, wrote %#x",
				     round, i, back[i], model[i]);
	}

	struct hk_disk_stats st;
	hk_disk_get_stats(d, &st);
	cr_assert_eq(st.rmw, 40 * N);
	cr_assert_gt(st.lock_waits, 0);
	hk_disk_close(d);
	free(path);
}

/* ---- random batches against a model --------------------------------------------- */

/*
 * 16 requests per batch, each inside its own slice of the disk.  Slices are
 * 65537 bytes, so neighbours share 512-byte blocks (and range locks) but
 * never bytes: the model stays exact whatever order the batch runs in.
 */
static void random_model(enum hk_disk_direct dm, uint64_t seed)
{
	enum { SLICES = 16, SLICE = 65537, ROUNDS = 150 };
	char *path = tmp_file("model.img");
	uint64_t size = ((uint64_t)SLICES * SLICE + 511) & ~511ull;
	struct hk_disk *d = open_disk(path, dm, 8, size);
	uint8_t *model = calloc(1, size), *disk = malloc(size);
	/* a multiple of 4096 per slice, so every slice's buffer starts aligned */
	uint8_t(*buf)[18 * 4096] = aligned_alloc(4096, SLICES * sizeof *buf);
	struct tio t[SLICES];
	struct hk_disk_io *ios[SLICES];

	cr_assert(model && disk && buf);
	for (unsigned r = 0; r < ROUNDS; r++) {
		struct waiter w = WAITER_INIT;
		for (unsigned s = 0; s < SLICES; s++) {
			uint64_t base = (uint64_t)s * SLICE, off, len;
			bool aligned = rnd(&seed) % 4 == 0; /* some take the direct path */
			if (aligned) {
				off = (base + 511) & ~511ull;
				len = (rnd(&seed) % 64) * 512;
				if (off + len > base + SLICE)
					len = 0;
			} else {
				off = base + rnd(&seed) % SLICE;
				len = rnd(&seed) % (base + SLICE - off + 1);
			}
			enum hk_disk_op op = rnd(&seed) & 1 ? HK_DISK_WRITE : HK_DISK_READ;
			tio_set(&t[s], &w, op, off, NULL, 0);
			/* up to 4 iovecs of random sizes at random (or aligned) addresses */
			unsigned n = 1 + rnd(&seed) % 4;
			uint8_t *p = buf[s] + (aligned ? 0 : rnd(&seed) % 64);
			uint64_t left = len;
			for (unsigned v = 0; v < n; v++) {
				uint64_t piece = v == n - 1 ? left
						 : aligned  ? 0
							    : rnd(&seed) % (left + 1);
				t[s].v[v] = (struct iovec){p, piece};
				if (op == HK_DISK_WRITE)
					for (uint64_t i = 0; i < piece; i++)
						p[i] = model[off + (len - left) + i] =
						    (uint8_t)rnd(&seed);
				p += piece;
				left -= piece;
			}
			t[s].io.iovcnt = n;
			ios[s] = &t[s].io;
		}
		cr_assert_eq(hk_disk_submit(d, ios, SLICES), 0);
		wait_for(&w, SLICES);
		for (unsigned s = 0; s < SLICES; s++) {
			uint64_t len = 0, at = t[s].io.offset;
			for (unsigned v = 0; v < t[s].io.iovcnt; v++)
				len += t[s].v[v].iov_len;
			cr_assert_eq(t[s].res, (int)len, "round %u slice %u: %d", r, s, t[s].res);
			if (t[s].io.op != HK_DISK_READ)
				continue;
			for (unsigned v = 0; v < t[s].io.iovcnt; v++) {
				cr_assert_eq(
				    memcmp(t[s].v[v].iov_base, model + at, t[s].v[v].iov_len), 0,
				    "round %u slice %u: read differs from the model", r, s);
				at += t[s].v[v].iov_len;
			}
		}
	}
	/* The whole disk, through a fresh open: what close left behind. */
	hk_disk_close(d);
	struct hk_disk_config cfg = {.name = "again", .path = path};
	d = open_ok(&cfg);
	cr_assert_eq(hk_disk_pread(d, disk, size, 0), 0);
	cr_assert_eq(memcmp(disk, model, size), 0);
	hk_disk_close(d);
	free(model);
	free(disk);
	free(buf);
	free(path);
}

DISK_TEST(disk_io, random_batches_match_model_direct)
{
	random_model(HK_DISK_DIRECT_ON, 0x1234567);
}

DISK_TEST(disk_io, random_batches_match_model_buffered)
{
	random_model(HK_DISK_DIRECT_OFF, 0x7654321);
}
