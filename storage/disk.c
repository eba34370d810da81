/*
 * Disk objects: validate a config, pick the backend from the path's type,
 * open (O_DIRECT when asked and possible), size and prepare the backing
 * object, set up the ring; close; the synchronous helpers and queries.
 * The request machinery is in disk_io.c, backends in disk_file.c and
 * disk_blk.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "disk_internal.h"

static const struct hk_disk_ops *const disk_backends[] = {
    &hk_disk_file_ops,
    &hk_disk_blk_ops,
};

void hk_disk_errf(const struct hk_disk *d, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!err || !errlen)
		return;
	n = snprintf(err, errlen, "disk %s: ", d->name);
	if (n < 0 || (size_t)n >= errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
	va_end(ap);
}

void hk_disk_notef(struct hk_disk *d, const char *fmt, ...)
{
	size_t n = strlen(d->note);
	va_list ap;

	if (n)
		n += (size_t)snprintf(d->note + n, sizeof d->note - n, "; ");
	else
		n = (size_t)snprintf(d->note, sizeof d->note, "disk %s: ", d->name);
	if (n >= sizeof d->note)
		return;
	va_start(ap, fmt);
	vsnprintf(d->note + n, sizeof d->note - n, fmt, ap);
	va_end(ap);
}

struct sync_wait {
	pthread_mutex_t m;
	pthread_cond_t c;
	bool done;
	int res;
};

static void sync_done(struct hk_disk_io *io, int res)
{
	struct sync_wait *w = io->ctx;

	pthread_mutex_lock(&w->m);
	w->res = res;
	w->done = true;
	pthread_cond_signal(&w->c);
	pthread_mutex_unlock(&w->m);
}

static int disk_sync_one(struct hk_disk *d, enum hk_disk_op op, void *buf, size_t len, uint64_t off)
{
	struct sync_wait w = {.m = PTHREAD_MUTEX_INITIALIZER, .c = PTHREAD_COND_INITIALIZER};
	struct iovec v = {.iov_base = buf, .iov_len = len};
	struct hk_disk_io io = {
	    .op = op,
	    .offset = off,
	    .iov = &v,
	    .iovcnt = op == HK_DISK_FLUSH ? 0 : 1,
	    .done = sync_done,
	    .ctx = &w,
	};
	struct hk_disk_io *one = &io;
	int ret = hk_disk_submit(d, &one, 1);

	if (ret == 0) {
		pthread_mutex_lock(&w.m);
		while (!w.done)
			pthread_cond_wait(&w.c, &w.m);
		pthread_mutex_unlock(&w.m);
		ret = w.res < 0 ? w.res : (op != HK_DISK_FLUSH && (size_t)w.res != len) ? -EIO : 0;
	}
	pthread_cond_destroy(&w.c);
	pthread_mutex_destroy(&w.m);
	return ret;
}

/* Requests over HK_DISK_IO_MAX are split: the helpers take any size_t. */
static int disk_sync(struct hk_disk *d, enum hk_disk_op op, void *buf, size_t len, uint64_t off)
{
	if (!d || (len && !buf))
		return -EINVAL;
	if (pthread_equal(pthread_self(), d->thread))
		return -EDEADLK;
	do {
		size_t n = len < HK_DISK_IO_MAX ? len : HK_DISK_IO_MAX;
		int ret = disk_sync_one(d, op, buf, n, off);
		if (ret)
			return ret;
		buf = (char *)buf + n;
		off += n;
		len -= n;
	} while (len);
	return 0;
}

int hk_disk_pread(struct hk_disk *disk, void *buf, size_t len, uint64_t off)
{
	return disk_sync(disk, HK_DISK_READ, buf, len, off);
}

int hk_disk_pwrite(struct hk_disk *disk, const void *buf, size_t len, uint64_t off)
{
	/* The iovec is not const, but a write only reads it. */
	return disk_sync(disk, HK_DISK_WRITE, (void *)(uintptr_t)buf, len, off);
}

int hk_disk_flush(struct hk_disk *disk)
{
	if (!disk)
		return -EINVAL;
	if (pthread_equal(pthread_self(), disk->thread))
		return -EDEADLK;
	return disk_sync_one(disk, HK_DISK_FLUSH, NULL, 0, 0);
}

/* ---- public: open, close, queries ----------------------------------------- */

static void disk_free(struct hk_disk *d)
{
	hk_disk_thread_stop(d);
	/*
	 * The ring's own teardown runs later in a kernel worker; a file still
	 * registered with it would stay open after we return, and a block
	 * device opened O_EXCL would stay claimed.  Unregistering drops that
	 * reference now.
	 */
	if (d->fixed)
		io_uring_unregister_files(&d->ring);
	if (d->ring_up)
		io_uring_queue_exit(&d->ring);
	if (d->fd >= 0)
		close(d->fd);
	pthread_cond_destroy(&d->idle);
	pthread_mutex_destroy(&d->lock);
	free(d->name);
	free(d->path);
	free(d);
}

/* Open the backing object, with O_DIRECT as cfg->direct asks. */
static int disk_open_fd(struct hk_disk *d, const struct hk_disk_config *cfg, char *err,
			size_t errlen)
{
	const int base = O_RDWR | O_CLOEXEC;
	int ret;

	if (cfg->direct == HK_DISK_DIRECT_OFF) {
		ret = d->ops->open(d, cfg, base);
	} else {
		ret = d->ops->open(d, cfg, base | O_DIRECT);
		if (ret == 0) {
			d->direct = true;
		} else if (ret == -EINVAL && cfg->direct == HK_DISK_DIRECT_AUTO) {
			hk_disk_notef(d, "%s: file system refuses O_DIRECT, using the page cache",
				      d->path);
			ret = d->ops->open(d, cfg, base);
		} else if (ret == -EINVAL) {
			hk_disk_errf(d, err, errlen,
				     "%s: file system refuses O_DIRECT (direct = on)", d->path);
			return ret;
		}
	}
	if (ret)
		hk_disk_errf(d, err, errlen, "%s: %s", d->path, strerror(-ret));
	return ret;
}

int hk_disk_open(const struct hk_disk_config *cfg, struct hk_disk **out, char *err, size_t errlen)
{
	struct hk_disk *d;
	struct stat st;
	uint64_t cur;
	int ret;

	if (err && errlen)
		err[0] = '\0';
	if (!out || !cfg) {
		if (err && errlen)
			snprintf(err, errlen, "disk: no configuration");
		return -EINVAL;
	}
	*out = NULL;

	d = calloc(1, sizeof *d);
	if (!d) {
		if (err && errlen)
			snprintf(err, errlen, "disk: out of memory");
		return -ENOMEM;
	}
	d->fd = -1;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->idle, NULL);
	d->name = strdup(cfg->name && *cfg->name ? cfg->name : "disk");
	d->path = strdup(cfg->path ? cfg->path : "");
	if (!d->name || !d->path) {
		if (err && errlen)
			snprintf(err, errlen, "disk: out of memory");
		ret = -ENOMEM;
		goto fail;
	}

	/* Config values first: nothing is opened or created for a bad config. */
	ret = -EINVAL;
	if (!*d->path) {
		hk_disk_errf(d, err, errlen, "no path");
		goto fail;
	}
	if ((unsigned)cfg->direct > HK_DISK_DIRECT_OFF) {
		hk_disk_errf(d, err, errlen, "bad direct mode %d", (int)cfg->direct);
		goto fail;
	}
	d->qd = cfg->queue_depth ? cfg->queue_depth : HK_DISK_QD_DEFAULT;
	if (d->qd > HK_DISK_QD_MAX) {
		hk_disk_errf(d, err, errlen, "queue depth %u out of range 1..%u", d->qd,
			     HK_DISK_QD_MAX);
		goto fail;
	}
	if (cfg->size % HK_DISK_SECTOR) {
		hk_disk_errf(d, err, errlen, "size %llu is not a multiple of %u bytes",
			     (unsigned long long)cfg->size, HK_DISK_SECTOR);
		goto fail;
	}
	/* The path's type picks the backend; a missing path may become a file. */
	if (stat(d->path, &st) == 0) {
		for (size_t i = 0; i < sizeof disk_backends / sizeof disk_backends[0]; i++)
			if (disk_backends[i]->match(st.st_mode))
				d->ops = disk_backends[i];
		if (!d->ops) {
			hk_disk_errf(d, err, errlen, "%s is not a regular file or block device",
				     d->path);
			goto fail;
		}
	} else if (errno == ENOENT && cfg->create) {
		d->ops = &hk_disk_file_ops;
	} else {
		ret = -errno;
		hk_disk_errf(d, err, errlen, "%s: %s", d->path, strerror(-ret));
		goto fail;
	}

	if (cfg->create && d->ops->prepare && !cfg->size) {
		hk_disk_errf(d, err, errlen, "%s: create needs a size", d->path);
		goto fail;
	}

	ret = disk_open_fd(d, cfg, err, errlen);
	if (ret)
		goto fail;
	d->bs = HK_DISK_SECTOR;
	if (d->direct && (ret = d->ops->block_size(d, &d->bs, err, errlen)))
		goto fail;
	if (cfg->create && d->ops->prepare && (ret = d->ops->prepare(d, cfg->size, err, errlen)))
		goto fail;
	if ((ret = d->ops->size_of(d, &cur, err, errlen)))
		goto fail;

	d->size = cfg->size ? cfg->size : cur;
	ret = -EINVAL;
	if (!d->size) {
		hk_disk_errf(d, err, errlen, "%s is empty; configure a size", d->path);
		goto fail;
	}
	if (cur < d->size) {
		hk_disk_errf(d, err, errlen, "%s is %llu bytes, configured %llu", d->path,
			     (unsigned long long)cur, (unsigned long long)d->size);
		goto fail;
	}
	if (d->size % d->bs) {
		hk_disk_errf(d, err, errlen,
			     "size %llu is not a multiple of the %u-byte block size",
			     (unsigned long long)d->size, d->bs);
		goto fail;
	}

	ret = io_uring_queue_init(d->qd, &d->ring, 0);
	if (ret < 0) {
		hk_disk_errf(d, err, errlen, "io_uring_queue_init(%u): %s", d->qd, strerror(-ret));
		goto fail;
	}
	d->ring_up = true;
	/* A fixed file saves a file-table lookup per request; optional. */
	d->fixed = io_uring_register_files(&d->ring, &d->fd, 1) == 0;

	if ((ret = hk_disk_thread_start(d, err, errlen)))
		goto fail;
	*out = d;
	return 0;

fail:
	if (d->created)
		unlink(d->path);
	disk_free(d);
	return ret;
}

void hk_disk_close(struct hk_disk *disk)
{
	if (!disk)
		return;
	pthread_mutex_lock(&disk->lock);
	disk->closing = true;
	while (disk->outstanding)
		pthread_cond_wait(&disk->idle, &disk->lock);
	pthread_mutex_unlock(&disk->lock);
	disk_free(disk);
}

const char *hk_disk_name(const struct hk_disk *disk)
{
	return disk->name;
}

const char *hk_disk_backend(const struct hk_disk *disk)
{
	return disk->ops->name;
}

uint64_t hk_disk_size(const struct hk_disk *disk)
{
	return disk->size;
}

unsigned hk_disk_block_size(const struct hk_disk *disk)
{
	return disk->bs;
}

bool hk_disk_uses_direct(const struct hk_disk *disk)
{
	return disk->direct;
}

const char *hk_disk_note(const struct hk_disk *disk)
{
	return disk->note;
}

void hk_disk_get_stats(struct hk_disk *disk, struct hk_disk_stats *st)
{
	pthread_mutex_lock(&disk->lock);
	*st = disk->st;
	pthread_mutex_unlock(&disk->lock);
}
