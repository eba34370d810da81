/*
 * Disk backend: a block device.  Opened O_EXCL, so a device that is
 * mounted or claimed by another exclusive opener is refused with -EBUSY
 * instead of being written under a file system's feet.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "disk_internal.h"

static bool blk_match(mode_t mode)
{
	return S_ISBLK(mode);
}

static int blk_open(struct hk_disk *d, const struct hk_disk_config *cfg, int flags)
{
	struct stat st;

	d->fd = open(d->path, flags | O_EXCL);
	if (d->fd < 0)
		return -errno;
	/* The path was a block device when it was looked up; make sure the fd is one. */
	if (fstat(d->fd, &st) < 0 || !S_ISBLK(st.st_mode)) {
		close(d->fd);
		d->fd = -1;
		return -ENOTBLK;
	}
	return 0;
}

static int blk_size_of(struct hk_disk *d, uint64_t *size, char *err, size_t errlen)
{
	if (ioctl(d->fd, BLKGETSIZE64, size) < 0) {
		int e = errno;
		hk_disk_errf(d, err, errlen, "%s: BLKGETSIZE64: %s", d->path, strerror(e));
		return -e;
	}
	return 0;
}

/* The logical block size is what O_DIRECT must be aligned to on a device. */
static int blk_block_size(struct hk_disk *d, unsigned *bs, char *err, size_t errlen)
{
	int ss = 0;

	if (ioctl(d->fd, BLKSSZGET, &ss) < 0) {
		int e = errno;
		hk_disk_errf(d, err, errlen, "%s: BLKSSZGET: %s", d->path, strerror(e));
		return -e;
	}
	if (ss < (int)HK_DISK_SECTOR || ss > (1 << 16) || (ss & (ss - 1))) {
		hk_disk_errf(d, err, errlen, "%s: odd logical block size %d", d->path, ss);
		return -EINVAL;
	}
	*bs = (unsigned)ss;
	return 0;
}

const struct hk_disk_ops hk_disk_blk_ops = {
    .size = sizeof(struct hk_disk_ops),
    .name = "blk",
    .match = blk_match,
    .open = blk_open,
    .size_of = blk_size_of,
    .block_size = blk_block_size,
    .prepare = NULL, /* a device's blocks always exist */
};
