/*
 * Helpers for the storage/ disk suites: a temporary folder per test,
 * waiting for asynchronous completions, patterns, and a leak check.
 *
 * Criterion 2.4 ignores what LeakSanitizer prints when a test's worker
 * exits, so DISK_TEST asks LeakSanitizer directly after the body (without
 * ASan the weak symbol is NULL and the check is skipped).  Disks must be
 * closed inside the body for it to mean anything.
 */
#ifndef DISK_TEST_H
#define DISK_TEST_H

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "disk.h"

extern int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

#define DISK_TEST(suite, name, ...)                                                                \
	static void suite##_##name##_body(void);                                                   \
	Test(suite, name, ##__VA_ARGS__)                                                           \
	{                                                                                          \
		suite##_##name##_body();                                                           \
		if (__lsan_do_recoverable_leak_check)                                              \
			cr_assert_eq(__lsan_do_recoverable_leak_check(), 0,                        \
				     "LeakSanitizer found leaks (report above)");                  \
	}                                                                                          \
	static void suite##_##name##_body(void)

/* ---- a temporary folder, removed by tmp_fini (use as .init/.fini) ---------- */

static char tmp_dir[64];

static inline void tmp_init(void)
{
	snprintf(tmp_dir, sizeof tmp_dir, "/tmp/hk-disk-XXXXXX");
	cr_assert_not_null(mkdtemp(tmp_dir), "mkdtemp: %s", strerror(errno));
}

static inline int tmp_rm(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

static inline void tmp_fini(void)
{
	if (tmp_dir[0])
		nftw(tmp_dir, tmp_rm, 8, FTW_DEPTH | FTW_PHYS);
}

/* tmp_dir/name, malloc'd. */
static inline char *tmp_file(const char *name)
{
	char *p = malloc(strlen(tmp_dir) + strlen(name) + 2);
	cr_assert_not_null(p);
	sprintf(p, "%s/%s", tmp_dir, name);
	return p;
}

/* Make a file of size bytes (sparse) with plain syscalls, independent of storage/. */
static inline void make_file(const char *path, uint64_t size)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(ftruncate(fd, (off_t)size), 0);
	close(fd);
}

static inline struct hk_disk *open_ok(const struct hk_disk_config *cfg)
{
	char err[256];
	struct hk_disk *d = NULL;
	int ret = hk_disk_open(cfg, &d, err, sizeof err);
	cr_assert_eq(ret, 0, "hk_disk_open: %d: %s", ret, err);
	cr_assert_not_null(d);
	return d;
}

/* ---- byte patterns --------------------------------------------------------- */

static inline uint8_t pat(uint64_t off, unsigned seed)
{
	uint64_t x = (off + 1) * 0x9e3779b97f4a7c15ull ^ (uint64_t)seed * 0xbf58476d1ce4e5b9ull;
	return (uint8_t)(x >> 56);
}

static inline void fill(void *buf, size_t len, uint64_t off, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		((uint8_t *)buf)[i] = pat(off + i, seed);
}

/* Index of the first byte that differs from the pattern, or -1. */
static inline long check(const void *buf, size_t len, uint64_t off, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		if (((const uint8_t *)buf)[i] != pat(off + i, seed))
			return (long)i;
	return -1;
}

static inline uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* ---- waiting for completions ----------------------------------------------- */

struct waiter {
	pthread_mutex_t m;
	pthread_cond_t c;
	unsigned done;
	unsigned errors;
	int first_error;
};

#define WAITER_INIT                                                                                \
	{                                                                                          \
		.m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER                      \
	}

/* An I/O that records its result and counts itself done on a waiter. */
struct tio {
	struct hk_disk_io io;
	struct waiter *w;
	int res;
	struct iovec v[8];
};

static inline void tio_done(struct hk_disk_io *io, int res)
{
	struct tio *t = io->ctx;
	struct waiter *w = t->w;

	t->res = res;
	pthread_mutex_lock(&w->m);
	w->done++;
	if (res < 0 && !w->errors++)
		w->first_error = res;
	pthread_cond_broadcast(&w->c);
	pthread_mutex_unlock(&w->m);
}

static inline void wait_for(struct waiter *w, unsigned n)
{
	pthread_mutex_lock(&w->m);
	while (w->done < n)
		pthread_cond_wait(&w->c, &w->m);
	pthread_mutex_unlock(&w->m);
}

static inline void tio_set(struct tio *t, struct waiter *w, enum hk_disk_op op, uint64_t off,
			   void *buf, size_t len)
{
	memset(t, 0, sizeof *t);
	t->w = w;
	t->v[0].iov_base = buf;
	t->v[0].iov_len = len;
	t->io.op = op;
	t->io.offset = off;
	t->io.iov = t->v;
	t->io.iovcnt = op == HK_DISK_FLUSH ? 0 : 1;
	t->io.done = tio_done;
	t->io.ctx = t;
}

#endif
