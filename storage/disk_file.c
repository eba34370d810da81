/*
 * Disk backend: a regular file.  Created sparse and then fully
 * allocated (fallocate), because writes into unallocated ranges were ~17x
 * slower than overwrites on these machines (ARCHITECTURE.md section 3).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "disk_internal.h"

static bool file_match(mode_t mode)
{
	return S_ISREG(mode);
}

static int file_open(struct hk_disk *d, const struct hk_disk_config *cfg, int flags)
{
	d->fd = open(d->path, flags);
	if (d->fd >= 0 || errno != ENOENT || !cfg->create)
		return d->fd >= 0 ? 0 : -errno;

	/* O_EXCL tells us the file is ours, so a failed open can remove it. */
	d->fd = open(d->path, flags | O_CREAT | O_EXCL, 0600);
	if (d->fd >= 0) {
		d->created = true;
		return 0;
	}
	int e = errno;
	/*
	 * The kernel creates the inode before it checks O_DIRECT, so a file
	 * system that refuses O_DIRECT leaves an empty file behind: ours.
	 */
	if (e == EINVAL && (flags & O_DIRECT))
		unlink(d->path);
	if (e == EEXIST) /* someone else created it meanwhile */
		return file_open(d, &(struct hk_disk_config){.create = false}, flags);
	return -e;
}

static int file_size_of(struct hk_disk *d, uint64_t *size, char *err, size_t errlen)
{
	struct stat st;

	if (fstat(d->fd, &st) < 0) {
		int e = errno;
		hk_disk_errf(d, err, errlen, "%s: stat: %s", d->path, strerror(e));
		return -e;
	}
	*size = (uint64_t)st.st_size;
	return 0;
}

/*
 * statx(STATX_DIOALIGN) (Linux 6.1) gives the file system's answer; without
 * it the file system block size is a safe over-estimate (it is a multiple
 * of the device's logical block size).
 */
static int file_block_size(struct hk_disk *d, unsigned *bs, char *err, size_t errlen)
{
	unsigned a = 0;

#ifdef STATX_DIOALIGN
	struct statx sx;
	if (statx(d->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
	    (sx.stx_mask & STATX_DIOALIGN) && sx.stx_dio_offset_align) {
		a = sx.stx_dio_offset_align;
		if (sx.stx_dio_mem_align > a)
			a = sx.stx_dio_mem_align;
	}
#endif
	if (!a) {
		struct stat st;
		if (fstat(d->fd, &st) < 0) {
			int e = errno;
			hk_disk_errf(d, err, errlen, "%s: stat: %s", d->path, strerror(e));
			return -e;
		}
		a = (unsigned)st.st_blksize;
	}
	if (a < HK_DISK_SECTOR)
		a = HK_DISK_SECTOR;
	if (a & (a - 1) || a > (1u << 16)) {
		hk_disk_errf(d, err, errlen, "%s: odd O_DIRECT alignment %u", d->path, a);
		return -EINVAL;
	}
	*bs = a;
	return 0;
}

static int file_prepare(struct hk_disk *d, uint64_t size, char *err, size_t errlen)
{
	uint64_t cur;
	int ret = file_size_of(d, &cur, err, errlen);

	if (ret)
		return ret;
	if (cur < size && ftruncate(d->fd, (off_t)size) < 0) {
		int e = errno;
		hk_disk_errf(d, err, errlen, "%s: extend to %llu bytes: %s", d->path,
			     (unsigned long long)size, strerror(e));
		return -e;
	}
	/* Mode 0 keeps existing data and only allocates the holes. */
	if (fallocate(d->fd, 0, 0, (off_t)size) < 0) {
		int e = errno;
		if (e == EOPNOTSUPP) {
			hk_disk_notef(
			    d, "%s: file system cannot preallocate, first writes will be slow",
			    d->path);
			return 0;
		}
		hk_disk_errf(d, err, errlen, "%s: allocate %llu bytes: %s", d->path,
			     (unsigned long long)size, strerror(e));
		return -e;
	}
	return 0;
}

const struct hk_disk_ops hk_disk_file_ops = {
    .size = sizeof(struct hk_disk_ops),
    .name = "file",
    .match = file_match,
    .open = file_open,
    .size_of = file_size_of,
    .block_size = file_block_size,
    .prepare = file_prepare,
};
