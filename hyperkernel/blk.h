/* Internal to hyperkernel/: virtio-blk requests and the replica rules on them. */
#ifndef HK_BLK_H
#define HK_BLK_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/uio.h>
#include <unistd.h>

#include "disk.h"
#include "replica.h"
#include "hyperkernel.h"
#include "virtio.h"

struct hk_blk;

struct hk_blk_req {
	struct hk_disk_io io; /* what goes to the disk (may cover part of the request) */
	struct hk_blk *blk;
	uint16_t head;
	uint32_t type;
	uint64_t offset; /* bytes */
	uint64_t len;    /* data bytes */
	uint8_t *status;
	uint64_t status_gpa;
	uint32_t written; /* bytes written into guest buffers */
	uint32_t gen;     /* transport generation at pop */
	bool pinned;      /* pooled memory: data pages pinned here (virtio_blk.c) */
	unsigned nseg;
	struct hk_vq_buf seg[16];
	struct iovec iov[16];
	/* Replica bookkeeping, one io per segment (blk_replica.c). */
	struct hk_replica_io rio[16];
	bool rio_on[16];
};

struct hk_blk_stats {
	_Atomic uint64_t reads, writes, flushes, errors;
	_Atomic uint64_t bytes_from_disk, bytes_from_replicas, bytes_written;
};

struct hk_blk {
	struct hk_vm *vm;
	struct hk_virtio_dev *vdev;
	struct hk_disk *disk;
	uint16_t disk_id;
	struct hk_replica *replicas; /* NULL: table off for this guest */
	uint16_t node_id;
	char name[32];
	uint64_t capacity_sectors;
	pthread_mutex_t notify_lock;
	_Atomic unsigned inflight;
	struct hk_blk_stats stats;
};

int hk_blk_add(struct hk_vm *vm, const struct hk_vm_disk *vd, struct hk_blk **out, char *err,
	       size_t errlen);
void hk_blk_free(struct hk_blk *b);

/* virtio_blk.c: pooled memory, keep the request's pages here until it
 * completes (undone by the completion); 0 or -errno. */
int hk_blk_pin(struct hk_blk_req *r);

/* blk_replica.c: the storage-replica rules, applied around disk I/O. */
/* Serve a read from replica frames: 1 when nothing is left for the disk,
 * 0 when the disk must do (the rest of) it, -errno when it cannot be done. */
int hk_blk_replica_read(struct hk_blk_req *r);
/* Before a write goes to the disk: drop every replica of its blocks.
 * 0 or -errno (the pages could not be kept here). */
int hk_blk_replica_write(struct hk_blk_req *r);
/* The disk part of a request completed (ok or not): record new replicas. */
void hk_blk_replica_done(struct hk_blk_req *r, bool ok);

#endif
