/*
 * virtio-blk (virtio 1.1 section 5.2) served by a storage/ disk.
 *
 * A notify pops every available request, checks it completely, and hands
 * the whole batch to the disk with one submission; completions arrive on
 * the disk's thread, which writes the status byte and returns the chain.
 * A malformed request (descriptor outside guest RAM, zero length, past the
 * end of the disk, too large, wrong direction) completes with
 * VIRTIO_BLK_S_IOERR and touches nothing; only a request whose status
 * byte cannot be written puts the device in NEEDS_RESET.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blk.h"
#include "hk_internal.h"
#include "mem_internal.h"
#include "virtio.h"

#define VIRTIO_ID_BLOCK 2

#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX  2
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH    9

#define VIRTIO_BLK_T_IN     0
#define VIRTIO_BLK_T_OUT    1
#define VIRTIO_BLK_T_FLUSH  4
#define VIRTIO_BLK_T_GET_ID 8

#define VIRTIO_BLK_S_OK     0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2

#define BLK_SEG_MAX  16u          /* data segments per request */
#define BLK_SIZE_MAX (1u << 20)   /* bytes per segment */
#define BLK_REQ_MAX  (BLK_SEG_MAX * BLK_SIZE_MAX)
#define BLK_BATCH    64u          /* requests per disk submission */

/* struct virtio_blk_outhdr: guest memory, fixed by the spec. */
struct blk_outhdr {
	uint32_t type;
	uint32_t ioprio;
	uint64_t sector;
} __attribute__((packed));

/*
 * Pooled memory: the request's data pages stay exclusive on this node until
 * it completes (pool_pin.c), so the transfer and the guest agree on them.
 * blk_replica.c asks for it where it would otherwise only prefault: before
 * the pages' protection changes and before the disk moves data.
 */
/* The data segments, and the status byte: the completion thread writes
 * it, and must not wait there for a page another node's completion
 * thread is pinning (two disks on two nodes could wait on each other). */
static unsigned pin_ranges(const struct hk_blk_req *r, struct hk_mem_range *rg)
{
	for (unsigned i = 0; i < r->nseg; i++)
		rg[i] = (struct hk_mem_range){r->seg[i].gpa, r->seg[i].len};
	rg[r->nseg] = (struct hk_mem_range){r->status_gpa, 1};
	return r->nseg + 1;
}

int hk_blk_pin(struct hk_blk_req *r)
{
	struct hk_mem_range rg[17];
	int ret;

	if (!hk_mem_pooled(r->blk->vm->mem) || !r->nseg || r->pinned)
		return 0;
	ret = hk_mem_pin(r->blk->vm->mem, rg, pin_ranges(r, rg));
	if (ret)
		fprintf(stderr, "hyperkernel: %s: cannot keep the request's pages here: %s\n",
			r->blk->name, strerror(-ret));
	r->pinned = ret == 0;
	return ret;
}

static void blk_unpin(struct hk_blk_req *r)
{
	struct hk_mem_range rg[17];

	if (!r->pinned)
		return;
	hk_mem_unpin(r->blk->vm->mem, rg, pin_ranges(r, rg));
	r->pinned = false;
}

static void blk_finish(struct hk_blk_req *r, uint8_t status)
{
	struct hk_blk *b = r->blk;

	/* After a reset the rings belong to a new driver: say nothing. */
	if (r->gen == atomic_load(&b->vdev->generation)) {
		*r->status = status; /* pinned with the data: no fault here */
		hk_vq_push(b->vdev, &b->vdev->vq[0], r->head, r->written + 1);
	}
	blk_unpin(r); /* a reader that saw the used entry waits this long at most */
	if (status != VIRTIO_BLK_S_OK)
		atomic_fetch_add(&b->stats.errors, 1);
	atomic_fetch_sub(&b->inflight, 1);
	free(r);
}

static void blk_io_done(struct hk_disk_io *io, int res)
{
	struct hk_blk_req *r = io->ctx;

	hk_blk_replica_done(r, res >= 0);
	if (res < 0) {
		fprintf(stderr, "hyperkernel: %s: %s at byte %llu failed: %s\n", r->blk->name,
			io->op == HK_DISK_READ ? "read" : io->op == HK_DISK_WRITE ? "write" : "flush",
			(unsigned long long)io->offset, strerror(-res));
		blk_finish(r, VIRTIO_BLK_S_IOERR);
		return;
	}
	if (io->op == HK_DISK_READ)
		r->written = (uint32_t)r->len;
	blk_finish(r, VIRTIO_BLK_S_OK);
}

/*
 * Check a popped chain and build the request.  Returns NULL after
 * completing the chain itself when it is malformed.
 */
static struct hk_blk_req *blk_parse(struct hk_blk *b, uint16_t head, struct hk_vq_buf *bufs,
				    int n)
{
	struct hk_virtio_dev *d = b->vdev;
	struct hk_blk_req *r;
	struct blk_outhdr hdr = {0};
	uint64_t total = 0;
	const char *why = NULL;
	int ndata, last = n > (int)(BLK_SEG_MAX + 2) ? (int)BLK_SEG_MAX + 1 : n - 1;

	if (n < 2 || !bufs[last].writable || bufs[last].len < 1 || !bufs[last].hva) {
		/* No status byte to answer through: the driver is broken. */
		hk_virtio_needs_reset(d, "request without a writable status byte");
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		*(uint8_t *)bufs[last].hva = VIRTIO_BLK_S_IOERR;
		hk_vq_push(d, &d->vq[0], head, 1);
		return NULL;
	}
	r->blk = b;
	r->head = head;
	r->status = bufs[last].hva;
	r->status_gpa = bufs[last].gpa;
	r->gen = atomic_load(&d->generation);
	atomic_fetch_add(&b->inflight, 1);

	if (bufs[0].writable || bufs[0].len < sizeof(hdr) || !bufs[0].hva) {
		why = "bad request header";
		goto bad;
	}
	memcpy(&hdr, bufs[0].hva, sizeof(hdr));
	r->type = hdr.type;
	ndata = n - 2;
	if (ndata > (int)BLK_SEG_MAX) {
		why = "too many segments";
		goto bad;
	}
	for (int i = 0; i < ndata; i++) {
		const struct hk_vq_buf *s = &bufs[1 + i];

		if (!s->len || s->len > BLK_SIZE_MAX) {
			why = "segment of zero or oversized length";
			goto bad;
		}
		if (!s->hva) {
			why = "segment outside guest RAM";
			goto bad;
		}
		if (s->writable != (hdr.type == VIRTIO_BLK_T_IN || hdr.type == VIRTIO_BLK_T_GET_ID)) {
			why = "segment direction does not match the request";
			goto bad;
		}
		r->seg[i] = *s;
		r->iov[i] = (struct iovec){s->hva, s->len};
		total += s->len;
	}
	r->nseg = (unsigned)ndata;
	r->len = total;

	switch (hdr.type) {
	case VIRTIO_BLK_T_IN:
	case VIRTIO_BLK_T_OUT:
		if (!ndata || total % 512 || total > BLK_REQ_MAX) {
			why = "zero, unaligned or oversized transfer";
			goto bad;
		}
		if (hdr.sector > b->capacity_sectors ||
		    total / 512 > b->capacity_sectors - hdr.sector) {
			why = "transfer past the end of the disk";
			goto bad;
		}
		r->offset = hdr.sector * 512;
		break;
	case VIRTIO_BLK_T_FLUSH:
	case VIRTIO_BLK_T_GET_ID:
		break;
	default:
		*r->status = VIRTIO_BLK_S_UNSUPP;
		hk_vq_push(d, &d->vq[0], head, 1);
		atomic_fetch_sub(&b->inflight, 1);
		free(r);
		return NULL;
	}
	return r;
bad:
	fprintf(stderr, "hyperkernel: %s: %s (type %u, sector %llu, %llu bytes): I/O error to guest\n",
		b->name, why, r->type, (unsigned long long)hdr.sector, (unsigned long long)total);
	atomic_fetch_add(&d->bad_requests, 1);
	blk_finish(r, VIRTIO_BLK_S_IOERR);
	return NULL;
}

/* Returns true when the request needs the disk. */
static bool blk_prepare(struct hk_blk *b, struct hk_blk_req *r)
{
	switch (r->type) {
	case VIRTIO_BLK_T_GET_ID: {
		char id[21] = {0}; /* 20 bytes, not NUL-terminated when full */
		uint32_t left = 20;

		snprintf(id, sizeof(id), "hk-%.17s", b->name);
		for (unsigned i = 0; i < r->nseg && left; i++) {
			uint32_t c = r->seg[i].len < left ? r->seg[i].len : left;

			memcpy(r->seg[i].hva, id + (20 - left), c);
			r->written += c;
			left -= c;
		}
		blk_finish(r, VIRTIO_BLK_S_OK);
		return false;
	}
	case VIRTIO_BLK_T_FLUSH:
		r->io.op = HK_DISK_FLUSH;
		atomic_fetch_add(&b->stats.flushes, 1);
		break;
	case VIRTIO_BLK_T_IN:
		r->io.op = HK_DISK_READ;
		atomic_fetch_add(&b->stats.reads, 1);
		/* The replica table may serve some or all of it from memory. */
		switch (hk_blk_replica_read(r)) {
		case 1:
			r->written = (uint32_t)r->len;
			blk_finish(r, VIRTIO_BLK_S_OK);
			return false;
		case 0:
			break;
		default:
			blk_finish(r, VIRTIO_BLK_S_IOERR);
			return false;
		}
		break;
	case VIRTIO_BLK_T_OUT:
		r->io.op = HK_DISK_WRITE;
		atomic_fetch_add(&b->stats.writes, 1);
		if (hk_blk_replica_write(r)) {
			blk_finish(r, VIRTIO_BLK_S_IOERR);
			return false;
		}
		break;
	}
	r->io.offset = r->offset;
	r->io.iov = r->iov;
	r->io.iovcnt = r->nseg;
	r->io.done = blk_io_done;
	r->io.ctx = r;
	return true;
}

static void blk_notify(struct hk_virtio_dev *d, unsigned q)
{
	struct hk_blk *b = d->priv;
	struct hk_virtqueue *vq = &d->vq[q];
	struct hk_disk_io *batch[BLK_BATCH];
	struct hk_vq_buf bufs[BLK_SEG_MAX + 2];
	unsigned nb = 0;

	pthread_mutex_lock(&b->notify_lock);
	for (;;) {
		uint16_t head;
		int n = hk_vq_pop(d, vq, &head, bufs, BLK_SEG_MAX + 2);
		struct hk_blk_req *r;

		if (n == 0) {
			/* Publish how far we got, then look once more: a
			 * request added meanwhile would otherwise wait for a
			 * notify the driver will not send. */
			hk_vq_set_avail_event(vq);
			if (!hk_vq_has_avail(vq))
				break;
			continue;
		}
		if (n < 0) {
			/* A chain we cannot walk (loop, indirect): we cannot
			 * even find its status byte. */
			fprintf(stderr, "hyperkernel: %s: malformed descriptor chain\n", b->name);
			atomic_fetch_add(&d->bad_requests, 1);
			hk_virtio_needs_reset(d, "malformed descriptor chain");
			break;
		}
		r = blk_parse(b, head, bufs, n);
		if (!r || !blk_prepare(b, r))
			continue;
		batch[nb++] = &r->io;
		if (nb == BLK_BATCH) {
			if (hk_disk_submit(b->disk, batch, nb))
				for (unsigned i = 0; i < nb; i++)
					blk_finish(batch[i]->ctx, VIRTIO_BLK_S_IOERR);
			nb = 0;
		}
	}
	if (nb && hk_disk_submit(b->disk, batch, nb))
		for (unsigned i = 0; i < nb; i++)
			blk_finish(batch[i]->ctx, VIRTIO_BLK_S_IOERR);
	pthread_mutex_unlock(&b->notify_lock);
}

static void blk_config_read(struct hk_virtio_dev *d, uint32_t off, void *buf, uint32_t len)
{
	struct hk_blk *b = d->priv;
	uint8_t cfg[24] = {0};
	uint32_t size_max = BLK_SIZE_MAX, seg_max = BLK_SEG_MAX, blk_size = 4096;

	memcpy(cfg + 0, &b->capacity_sectors, 8);
	memcpy(cfg + 8, &size_max, 4);
	memcpy(cfg + 12, &seg_max, 4);
	memcpy(cfg + 20, &blk_size, 4);
	memcpy(buf, cfg + off, len);
}

static void blk_reset(struct hk_virtio_dev *d)
{
	/* In-flight requests finish on the disk thread; their generation no
	 * longer matches, so they return nothing to the new driver. */
}

static const struct hk_virtio_ops blk_ops = {
	.size = sizeof(struct hk_virtio_ops),
	.name = "virtio-blk",
	.device_id = VIRTIO_ID_BLOCK,
	.features = (1ull << VIRTIO_BLK_F_SIZE_MAX) | (1ull << VIRTIO_BLK_F_SEG_MAX) |
		    (1ull << VIRTIO_BLK_F_BLK_SIZE) | (1ull << VIRTIO_BLK_F_FLUSH),
	.config_len = 24,
	.config_read = blk_config_read,
	.notify = blk_notify,
	.reset = blk_reset,
};

int hk_blk_add(struct hk_vm *vm, const struct hk_vm_disk *vd, struct hk_blk **out, char *err,
	       size_t errlen)
{
	struct hk_blk *b = calloc(1, sizeof(*b));
	int ret;

	if (!b) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	b->vm = vm;
	b->disk = vd->disk;
	b->disk_id = vd->id;
	b->replicas = vm->replicas;
	b->node_id = vm->node_id;
	snprintf(b->name, sizeof(b->name), "%s", hk_disk_name(vd->disk));
	b->capacity_sectors = hk_disk_size(vd->disk) / 512;
	pthread_mutex_init(&b->notify_lock, NULL);
	ret = hk_virtio_mmio_add(vm, &blk_ops, b, &b->vdev);
	if (ret) {
		snprintf(err, errlen, "disk %s: cannot add a virtio-mmio window: %s", b->name,
			 strerror(-ret));
		pthread_mutex_destroy(&b->notify_lock);
		free(b);
		return ret;
	}
	*out = b;
	return 0;
}

/* Wait for in-flight requests: their buffers are guest memory. */
void hk_blk_free(struct hk_blk *b)
{
	if (!b)
		return;
	while (atomic_load(&b->inflight))
		usleep(1000);
	hk_virtio_mmio_free(b->vdev);
	pthread_mutex_destroy(&b->notify_lock);
	free(b);
}
