/*
 * The disks a node serves, and `hkctl disk mkdata`: writing a kvdb data
 * set through the disk's io_uring like any other I/O.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../guestos/kvdb_format.h"
#include "daemon.h"

#define MKDATA_CHUNK (4u << 20)

int hk_daemon_open_disks(struct hk_daemon *d, char *err, size_t errlen)
{
	for (unsigned i = 0; i < d->cfg->n_disks; i++) {
		const struct hk_disk_conf *c = &d->cfg->disks[i];
		struct hk_disk_config dc = {
			.name = c->name,
			.path = c->path,
			.size = c->size,
			.queue_depth = c->queue_depth,
			.direct = c->direct == HK_DIRECT_ON    ? HK_DISK_DIRECT_ON
				  : c->direct == HK_DIRECT_OFF ? HK_DISK_DIRECT_OFF
							       : HK_DISK_DIRECT_AUTO,
		};
		struct hk_daemon_disk *dd;
		struct stat st;
		int ret;

		/* A missing file is made (sparse, preallocated); an existing one
		 * shorter than configured is an error, never silently grown:
		 * it is probably not the disk the config means. */
		dc.create = stat(c->path, &st) != 0 && errno == ENOENT;
		if (strcmp(c->node, d->node->name))
			continue; /* another node serves it */
		dd = &d->disks[d->n_disks];
		ret = hk_disk_open(&dc, &dd->disk, err, errlen);
		if (ret)
			return ret;
		dd->conf = c;
		dd->id = (uint16_t)i;
		d->n_disks++;
		if (*hk_disk_note(dd->disk))
			fprintf(stderr, "hkd[%s]: disk %s: %s\n", d->node->name, c->name,
				hk_disk_note(dd->disk));
	}
	return 0;
}

void hk_daemon_close_disks(struct hk_daemon *d)
{
	for (unsigned i = 0; i < d->n_disks; i++) {
		hk_disk_flush(d->disks[i].disk);
		hk_disk_close(d->disks[i].disk);
	}
	d->n_disks = 0;
}

struct hk_daemon_disk *hk_daemon_disk(struct hk_daemon *d, const char *name)
{
	for (unsigned i = 0; i < d->n_disks; i++)
		if (!strcmp(d->disks[i].conf->name, name))
			return &d->disks[i];
	return NULL;
}

/* Is the data set of this shape already on the disk? */
static bool mkdata_present(struct hk_daemon_disk *dd, uint64_t records, uint64_t seed, void *buf)
{
	const struct kvdb_super *s = buf;

	if (hk_disk_pread(dd->disk, buf, KVDB_BLOCK_SIZE, 0))
		return false;
	return s->magic == KVDB_SUPER_MAGIC && s->version == KVDB_FORMAT_VERSION &&
	       s->checksum == kvdb_super_checksum(buf) && s->record_count == records &&
	       s->seed == seed;
}

int hk_daemon_mkdata(struct hk_daemon_disk *dd, uint64_t size, uint64_t seed, bool force,
		     uint64_t *records, bool *reused, char *err, size_t errlen)
{
	uint64_t n = size / KVDB_BLOCK_SIZE, sum = 0;
	uint8_t *buf;
	int ret = 0;

	if (n < 2) {
		snprintf(err, errlen, "disk mkdata: %llu bytes is too small (at least 8 KiB)",
			 (unsigned long long)size);
		return -EINVAL;
	}
	if (size > hk_disk_size(dd->disk)) {
		snprintf(err, errlen, "disk mkdata: %llu bytes do not fit disk %s (%llu bytes)",
			 (unsigned long long)size, dd->conf->name,
			 (unsigned long long)hk_disk_size(dd->disk));
		return -ENOSPC;
	}
	n -= 1; /* block 0 is the superblock */
	if (posix_memalign((void **)&buf, 4096, MKDATA_CHUNK)) {
		snprintf(err, errlen, "disk mkdata: out of memory");
		return -ENOMEM;
	}
	*records = n;
	*reused = !force && mkdata_present(dd, n, seed, buf);
	if (*reused)
		goto out;

	for (uint64_t i = 0; i < n;) {
		uint64_t k = 0;

		for (; k < MKDATA_CHUNK / KVDB_BLOCK_SIZE && i + k < n; k++) {
			uint8_t *rec = buf + k * KVDB_BLOCK_SIZE;

			kvdb_make_record(rec, i + k, seed);
			sum += kvdb_state_term((const struct kvdb_record *)rec);
		}
		ret = hk_disk_pwrite(dd->disk, buf, k * KVDB_BLOCK_SIZE, (i + 1) * KVDB_BLOCK_SIZE);
		if (ret)
			break;
		i += k;
	}
	if (!ret) {
		/* Superblock last: a data set interrupted half-way is not
		 * mistaken for a complete one. */
		kvdb_make_super(buf, n, seed, sum);
		ret = hk_disk_pwrite(dd->disk, buf, KVDB_BLOCK_SIZE, 0);
	}
	if (!ret)
		ret = hk_disk_flush(dd->disk);
	if (ret)
		snprintf(err, errlen, "disk mkdata: writing disk %s: %s", dd->conf->name,
			 strerror(-ret));
out:
	free(buf);
	return ret;
}
