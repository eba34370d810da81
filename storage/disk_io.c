/*
 * Disk requests: the state machine, the range locks, the ring and the
 * completion thread.  Every byte a disk moves goes through here.
 *
 * A request has at most one SQE in the ring at a time and moves through
 * stages:
 *
 *   aligned (or buffered)   PLAIN --------------------------------> done
 *   unaligned read          BREAD (covering blocks) -> copy out --> done
 *   unaligned write         [RMW_HEAD] [RMW_TAIL] -> BWRITE ------> done
 *   flush                   FLUSH --------------------------------> done
 *   refused                 NOP (carries the error) -------------> done
 *
 * Refused requests go through the ring too, so done() always runs on the
 * completion thread and never inside hk_disk_submit.
 *
 * Locking: one mutex per disk guards the SQ side of the ring, the queues,
 * the range locks and the statistics.  The completion thread reaps CQEs
 * without it (the CQ has a single consumer), then takes it once per batch
 * to advance requests and refill the ring, and calls done() without it.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "disk_internal.h"

enum disk_stage {
	ST_NOP = 0, /* deliver priv.res */
	ST_PLAIN,   /* readv/writev straight into the caller's iovecs */
	ST_BREAD,   /* read the covering aligned range into the bounce buffer */
	ST_RMW_HEAD,
	ST_RMW_TAIL,
	ST_BWRITE, /* write the bounce buffer */
	ST_FLUSH,
};

#define CQE_BATCH    64
#define RETRY_MAX    16 /* -EAGAIN/-EINTR from the kernel, per request */
#define BOUNCE_ALIGN 4096u

/* ---- request classification (no lock: the request is not shared yet) ---- */

static uint64_t io_end(const struct hk_disk_io *io)
{
	return io->offset + io->priv.len;
}

static bool io_aligned(const struct hk_disk *d, const struct hk_disk_io *io)
{
	uint64_t m = d->bs - 1;

	if ((io->offset | io->priv.len) & m)
		return false;
	for (unsigned i = 0; i < io->iovcnt; i++)
		if (((uintptr_t)io->iov[i].iov_base | io->iov[i].iov_len) & m)
			return false;
	return true;
}

/* Copy len bytes between the caller's iovecs and buf, in either direction. */
static void iov_copy(const struct iovec *iov, unsigned cnt, void *buf, uint64_t len, bool to_buf)
{
	char *p = buf;

	for (unsigned i = 0; i < cnt && len; i++) {
		size_t n = iov[i].iov_len < len ? iov[i].iov_len : len;
		if (to_buf)
			memcpy(p, iov[i].iov_base, n);
		else
			memcpy(iov[i].iov_base, p, n);
		p += n;
		len -= n;
	}
}

/*
 * Decide what a request needs before the disk sees it.  Errors are not
 * returned but stored in priv.res and delivered through a NOP, so a bad
 * request in a batch does not refuse the good ones.
 */
static void io_prepare(const struct hk_disk *d, struct hk_disk_io *io)
{
	struct hk_disk_io_priv *p = &io->priv;
	uint64_t len = 0;

	memset(p, 0, sizeof *p);
	p->stage = ST_NOP;
	if (io->op == HK_DISK_FLUSH) {
		p->stage = ST_FLUSH;
		return;
	}
	if ((io->op != HK_DISK_READ && io->op != HK_DISK_WRITE) || io->iovcnt > HK_DISK_IOV_MAX ||
	    (io->iovcnt && !io->iov)) {
		p->res = -EINVAL;
		return;
	}
	for (unsigned i = 0; i < io->iovcnt; i++) {
		if (io->iov[i].iov_len > HK_DISK_IO_MAX - len) {
			p->res = -EINVAL;
			return;
		}
		len += io->iov[i].iov_len;
	}
	p->len = len;
	if (io->offset > d->size || len > d->size - io->offset) {
		p->res = io->op == HK_DISK_WRITE ? -ENOSPC : -EINVAL;
		return;
	}
	if (!len) /* res 0 through a NOP */
		return;
	if (!d->direct || io_aligned(d, io)) {
		p->stage = ST_PLAIN;
		return;
	}

	/* O_DIRECT and something is unaligned: go through an aligned copy. */
	uint64_t m = d->bs - 1;
	bool head = io->offset & m, tail = io_end(io) & m;
	p->b_off = io->offset & ~m;
	p->b_len = ((io_end(io) + m) & ~m) - p->b_off;
	p->rmw = io->op == HK_DISK_WRITE && (head || tail);
	/* An RMW write keeps the two edge blocks it reads after the data. */
	size_t sz = p->b_len + (p->rmw ? 2u * d->bs : 0);
	if (posix_memalign(&p->bounce, d->bs > BOUNCE_ALIGN ? d->bs : BOUNCE_ALIGN, sz)) {
		p->bounce = NULL;
		p->rmw = 0;
		p->res = -ENOMEM;
		return;
	}
	if (io->op == HK_DISK_READ) {
		p->stage = ST_BREAD;
		return;
	}
	iov_copy(io->iov, io->iovcnt, (char *)p->bounce + (io->offset - p->b_off), len, true);
	p->stage = head ? ST_RMW_HEAD : tail ? ST_RMW_TAIL : ST_BWRITE;
}

/* ---- range locks for O_DIRECT writes (under d->lock) ----------------------- */

/*
 * A read-modify-write reads its edge blocks and writes them back whole; a
 * write to the same blocks in between would be undone.  So under O_DIRECT
 * every write takes a range lock: an RMW write conflicts with any write
 * overlapping its covering blocks, an aligned write only with RMW writes
 * (two aligned writes never wait for each other).  Waiters are FIFO and a
 * newcomer also waits behind conflicting waiters, so no write starves.
 * Cost: O(writes in flight + waiting) per write, both bounded by what the
 * caller submits.
 */
static bool io_needs_lock(const struct hk_disk *d, const struct hk_disk_io *io)
{
	return d->direct && io->op == HK_DISK_WRITE && io->priv.stage != ST_NOP;
}

static void io_lock_range(const struct hk_disk_io *io, uint64_t *a, uint64_t *b)
{
	if (io->priv.rmw) {
		*a = io->priv.b_off;
		*b = io->priv.b_off + io->priv.b_len;
	} else {
		*a = io->offset;
		*b = io_end(io);
	}
}

static bool io_conflict(const struct hk_disk_io *x, const struct hk_disk_io *y)
{
	uint64_t xa, xb, ya, yb;

	if (!x->priv.rmw && !y->priv.rmw)
		return false;
	io_lock_range(x, &xa, &xb);
	io_lock_range(y, &ya, &yb);
	return xa < yb && ya < xb;
}

/* Conflicts with a lock holder, or with a waiter queued before `upto`. */
static bool lock_busy(const struct hk_disk *d, const struct hk_disk_io *io,
		      const struct hk_disk_io *upto)
{
	for (const struct hk_disk_io *h = d->locked; h; h = h->priv.lk_next)
		if (io_conflict(io, h))
			return true;
	for (const struct hk_disk_io *w = d->lw_head; w && w != upto; w = w->priv.next)
		if (io_conflict(io, w))
			return true;
	return false;
}

static void lock_take(struct hk_disk *d, struct hk_disk_io *io)
{
	io->priv.lk_prev = NULL;
	io->priv.lk_next = d->locked;
	if (d->locked)
		d->locked->priv.lk_prev = io;
	d->locked = io;
	io->priv.locked = 1;
}

static void lock_drop(struct hk_disk *d, struct hk_disk_io *io)
{
	struct hk_disk_io_priv *p = &io->priv;

	if (p->lk_prev)
		p->lk_prev->priv.lk_next = p->lk_next;
	else
		d->locked = p->lk_next;
	if (p->lk_next)
		p->lk_next->priv.lk_prev = p->lk_prev;
	p->locked = 0;
}

/* ---- the ring (under d->lock) ---------------------------------------------- */

static void sqe_rw(struct hk_disk *d, struct io_uring_sqe *sqe, bool write, void *buf, uint64_t len,
		   uint64_t off)
{
	if (write)
		io_uring_prep_write(sqe, d->fixed ? 0 : d->fd, buf, (unsigned)len, off);
	else
		io_uring_prep_read(sqe, d->fixed ? 0 : d->fd, buf, (unsigned)len, off);
}

/* Put the request's current stage into a free SQE: the caller checked there is one. */
static void io_issue(struct hk_disk *d, struct hk_disk_io *io)
{
	struct hk_disk_io_priv *p = &io->priv;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&d->ring);
	int fd = d->fixed ? 0 : d->fd;
	bool fua = io->op == HK_DISK_WRITE && (io->flags & HK_DISK_IO_FUA);
	/* An RMW bounce buffer holds the head and tail block slots after the data. */
	char *edge = p->rmw ? (char *)p->bounce + p->b_len : NULL;

	/* inflight < qd <= SQ entries, and every SQE is submitted before the lock drops. */
	if (!sqe)
		abort();
	switch (p->stage) {
	case ST_PLAIN:
		if (io->op == HK_DISK_WRITE)
			io_uring_prep_writev(sqe, fd, p->rest ? p->rest : io->iov,
					     p->rest ? p->rest_cnt : io->iovcnt,
					     io->offset + p->moved);
		else
			io_uring_prep_readv(sqe, fd, p->rest ? p->rest : io->iov,
					    p->rest ? p->rest_cnt : io->iovcnt,
					    io->offset + p->moved);
		break;
	case ST_BREAD:
	case ST_BWRITE:
		sqe_rw(d, sqe, p->stage == ST_BWRITE, (char *)p->bounce + p->moved,
		       p->b_len - p->moved, p->b_off + p->moved);
		break;
	case ST_RMW_HEAD:
		sqe_rw(d, sqe, false, edge + p->moved, d->bs - p->moved, p->b_off + p->moved);
		break;
	case ST_RMW_TAIL:
		sqe_rw(d, sqe, false, edge + d->bs + p->moved, d->bs - p->moved,
		       p->b_off + p->b_len - d->bs + p->moved);
		break;
	case ST_FLUSH:
		io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
		break;
	default: /* ST_NOP */
		io_uring_prep_nop(sqe);
		break;
	}
	if (p->stage != ST_NOP && d->fixed)
		sqe->flags |= IOSQE_FIXED_FILE;
	if (fua && (p->stage == ST_PLAIN || p->stage == ST_BWRITE))
		sqe->rw_flags = RWF_DSYNC;
	io_uring_sqe_set_data(sqe, io);
	d->inflight++;
}

/* Into the ring if there is room and nobody is waiting for it, else wait in order. */
static void io_push(struct hk_disk *d, struct hk_disk_io *io)
{
	if (!d->rq_head && d->inflight < d->qd) {
		io_issue(d, io);
		return;
	}
	io->priv.next = NULL;
	if (d->rq_tail)
		d->rq_tail->priv.next = io;
	else
		d->rq_head = io;
	d->rq_tail = io;
	d->st.ring_waits++;
}

static void ring_refill(struct hk_disk *d)
{
	while (d->rq_head && d->inflight < d->qd) {
		struct hk_disk_io *io = d->rq_head;
		d->rq_head = io->priv.next;
		if (!d->rq_head)
			d->rq_tail = NULL;
		io_issue(d, io);
	}
}

/*
 * Hand every prepared SQE to the kernel.  Per-request errors come back as
 * CQEs; io_uring_enter itself fails only for ring-wide reasons, of which
 * -EAGAIN (no memory for requests) and -EBUSY (CQ backlog; cannot happen
 * as the CQ has twice the SQ's entries and inflight <= SQ) are transient.
 */
static void ring_submit(struct hk_disk *d)
{
	int tries = 0;

	while (io_uring_sq_ready(&d->ring)) {
		int ret = io_uring_submit(&d->ring);
		if (ret > 0)
			continue;
		if ((ret == -EINTR || ret == -EAGAIN || ret == -EBUSY || ret == 0) &&
		    tries++ < 1000) {
			nanosleep(&(struct timespec){.tv_nsec = 100000}, NULL);
			continue;
		}
		/* Left in the SQ: the next submission or completion batch tries again. */
		break;
	}
}

/* Start a prepared request: take its range lock or wait for it. */
static void io_admit(struct hk_disk *d, struct hk_disk_io *io)
{
	if (io_needs_lock(d, io)) {
		if (lock_busy(d, io, NULL)) {
			io->priv.next = NULL;
			if (d->lw_tail)
				d->lw_tail->priv.next = io;
			else
				d->lw_head = io;
			d->lw_tail = io;
			d->st.lock_waits++;
			return;
		}
		lock_take(d, io);
	}
	io_push(d, io);
}

/* After locks were dropped: start every waiter that no longer conflicts. */
static void lock_waiters_admit(struct hk_disk *d)
{
	struct hk_disk_io *prev = NULL, *w = d->lw_head;

	while (w) {
		struct hk_disk_io *next = w->priv.next;
		if (lock_busy(d, w, w)) {
			prev = w;
		} else {
			if (prev)
				prev->priv.next = next;
			else
				d->lw_head = next;
			if (d->lw_tail == w)
				d->lw_tail = prev;
			lock_take(d, w);
			io_push(d, w);
		}
		w = next;
	}
}

/* ---- completion (under d->lock unless said otherwise) ---------------------- */

static void io_finish(struct hk_disk *d, struct hk_disk_io *io, int res,
		      struct hk_disk_io ***done_tail)
{
	struct hk_disk_io_priv *p = &io->priv;

	p->res = res;
	if (p->locked)
		lock_drop(d, io);
	switch (io->op) {
	case HK_DISK_READ:
		d->st.reads++;
		if (res > 0)
			d->st.bytes_read += (uint64_t)res;
		break;
	case HK_DISK_WRITE:
		d->st.writes++;
		if (res > 0)
			d->st.bytes_written += (uint64_t)res;
		break;
	case HK_DISK_FLUSH:
		d->st.flushes++;
		break;
	}
	if (res < 0)
		d->st.errors++;
	if (p->bounce)
		d->st.bounced++;
	if (p->rmw)
		d->st.rmw++;
	p->next = NULL;
	**done_tail = io;
	*done_tail = &p->next;
}

/* The caller's iovecs minus the first p->moved bytes, for a resubmission. */
static int io_rest(struct hk_disk_io *io)
{
	struct hk_disk_io_priv *p = &io->priv;
	uint64_t skip = p->moved;
	unsigned n = 0;

	if (!p->rest) {
		p->rest = malloc(io->iovcnt * sizeof *p->rest);
		if (!p->rest)
			return -ENOMEM;
	}
	for (unsigned i = 0; i < io->iovcnt; i++) {
		if (skip >= io->iov[i].iov_len) {
			skip -= io->iov[i].iov_len;
			continue;
		}
		p->rest[n].iov_base = (char *)io->iov[i].iov_base + skip;
		p->rest[n].iov_len = io->iov[i].iov_len - skip;
		skip = 0;
		n++;
	}
	p->rest_cnt = n;
	return 0;
}

static uint64_t stage_len(const struct hk_disk *d, const struct hk_disk_io *io)
{
	switch (io->priv.stage) {
	case ST_PLAIN:
		return io->priv.len;
	case ST_RMW_HEAD:
	case ST_RMW_TAIL:
		return d->bs;
	default:
		return io->priv.b_len;
	}
}

/* Bytes [b_off, offset) of the first block, read before the write. */
static void rmw_merge_head(const struct hk_disk *d, struct hk_disk_io *io)
{
	struct hk_disk_io_priv *p = &io->priv;

	memcpy(p->bounce, (char *)p->bounce + p->b_len, io->offset - p->b_off);
}

/* Bytes [end, b_off + b_len) of the last block, from the slot that holds it. */
static void rmw_merge_tail(const struct hk_disk *d, struct hk_disk_io *io, const char *slot)
{
	struct hk_disk_io_priv *p = &io->priv;
	uint64_t blk = p->b_off + p->b_len - d->bs, end = io_end(io);

	memcpy((char *)p->bounce + (end - p->b_off), slot + (end - blk), p->b_off + p->b_len - end);
}

/* One CQE for io: advance it to its next stage, resubmit, or finish it. */
static void io_step(struct hk_disk *d, struct hk_disk_io *io, int res,
		    struct hk_disk_io ***done_tail)
{
	struct hk_disk_io_priv *p = &io->priv;
	char *edge = p->rmw ? (char *)p->bounce + p->b_len : NULL;

	if (p->stage == ST_NOP) {
		io_finish(d, io, p->res, done_tail);
		return;
	}
	if ((res == -EAGAIN || res == -EINTR) && p->retries++ < RETRY_MAX) {
		d->st.short_retries++;
		io_push(d, io);
		return;
	}
	if (res < 0) {
		io_finish(d, io, res, done_tail);
		return;
	}
	if (p->stage == ST_FLUSH) {
		io_finish(d, io, 0, done_tail);
		return;
	}
	/* No progress: the file shrank under us, or the device ended early. */
	if (res == 0) {
		io_finish(d, io, -EIO, done_tail);
		return;
	}
	p->moved += (uint64_t)res;
	if (p->moved < stage_len(d, io)) {
		d->st.short_retries++;
		if (p->stage == ST_PLAIN && io_rest(io) < 0) {
			io_finish(d, io, -ENOMEM, done_tail);
			return;
		}
		io_push(d, io);
		return;
	}
	p->moved = 0;
	bool tail = io_end(io) & (d->bs - 1);
	switch (p->stage) {
	case ST_RMW_HEAD:
		rmw_merge_head(d, io);
		if (tail && p->b_len > d->bs) {
			p->stage = ST_RMW_TAIL;
		} else {
			if (tail) /* head and tail are the same block */
				rmw_merge_tail(d, io, edge);
			p->stage = ST_BWRITE;
		}
		io_push(d, io);
		return;
	case ST_RMW_TAIL:
		rmw_merge_tail(d, io, edge + d->bs);
		p->stage = ST_BWRITE;
		io_push(d, io);
		return;
	default: /* PLAIN, BREAD, BWRITE */
		io_finish(d, io, (int)p->len, done_tail);
		return;
	}
}

/* Without the lock: the requests are off every list and belong to this thread. */
static unsigned io_complete_list(struct hk_disk_io *io)
{
	unsigned n = 0;

	while (io) {
		struct hk_disk_io *next = io->priv.next;
		struct hk_disk_io_priv *p = &io->priv;
		if (p->bounce && io->op == HK_DISK_READ && p->res > 0)
			iov_copy(io->iov, io->iovcnt, (char *)p->bounce + (io->offset - p->b_off),
				 p->len, false);
		free(p->bounce);
		free(p->rest);
		p->bounce = NULL;
		p->rest = NULL;
		io->done(io, p->res); /* io may be gone after this */
		n++;
		io = next;
	}
	return n;
}

static void *disk_thread(void *arg)
{
	struct hk_disk *d = arg;
	struct io_uring_cqe *cqes[CQE_BATCH];
	struct {
		struct hk_disk_io *io;
		int res;
	} got[CQE_BATCH];
	bool stop = false;

	while (!stop) {
		struct io_uring_cqe *cqe;
		int ret = io_uring_wait_cqe(&d->ring, &cqe);
		if (ret < 0) {
			if (ret != -EINTR) /* not expected; do not spin */
				nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
			continue;
		}
		unsigned n = io_uring_peek_batch_cqe(&d->ring, cqes, CQE_BATCH);
		for (unsigned i = 0; i < n; i++) {
			got[i].io = io_uring_cqe_get_data(cqes[i]);
			got[i].res = cqes[i]->res;
		}
		io_uring_cq_advance(&d->ring, n);

		struct hk_disk_io *done = NULL, **done_tail = &done;
		pthread_mutex_lock(&d->lock);
		for (unsigned i = 0; i < n; i++) {
			if (!got[i].io) { /* hk_disk_close's NOP */
				stop = true;
				continue;
			}
			d->inflight--;
			io_step(d, got[i].io, got[i].res, &done_tail);
		}
		lock_waiters_admit(d);
		ring_refill(d);
		ring_submit(d);
		pthread_mutex_unlock(&d->lock);

		unsigned finished = io_complete_list(done);
		if (finished) {
			pthread_mutex_lock(&d->lock);
			d->outstanding -= finished;
			if (!d->outstanding)
				pthread_cond_broadcast(&d->idle);
			pthread_mutex_unlock(&d->lock);
		}
	}
	return NULL;
}

/* ---- public: submission ----------------------------------------------------- */

int hk_disk_submit(struct hk_disk *disk, struct hk_disk_io *const *ios, unsigned n)
{
	if (!disk || (n && !ios))
		return -EINVAL;
	for (unsigned i = 0; i < n; i++)
		if (!ios[i] || !ios[i]->done)
			return -EINVAL;
	if (!n)
		return 0;

	/* Bounce buffers are allocated and filled outside the lock. */
	for (unsigned i = 0; i < n; i++)
		io_prepare(disk, ios[i]);

	pthread_mutex_lock(&disk->lock);
	if (disk->closing) {
		pthread_mutex_unlock(&disk->lock);
		for (unsigned i = 0; i < n; i++) {
			free(ios[i]->priv.bounce);
			ios[i]->priv.bounce = NULL;
		}
		return -ESHUTDOWN;
	}
	disk->outstanding += n;
	for (unsigned i = 0; i < n; i++)
		io_admit(disk, ios[i]);
	ring_submit(disk);
	pthread_mutex_unlock(&disk->lock);
	return 0;
}

/* ---- the completion thread's life ------------------------------------------ */

int hk_disk_thread_start(struct hk_disk *d, char *err, size_t errlen)
{
	sigset_t all, old;
	char tname[16];
	int ret;

	/* The thread must never take the process's signals (hkd sigwaits for them). */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = pthread_create(&d->thread, NULL, disk_thread, d);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret) {
		hk_disk_errf(d, err, errlen, "completion thread: %s", strerror(ret));
		return -ret;
	}
	d->thread_up = true;
	snprintf(tname, sizeof tname, "hkdisk-%s", d->name);
	pthread_setname_np(d->thread, tname);
	return 0;
}

void hk_disk_thread_stop(struct hk_disk *d)
{
	if (!d->thread_up)
		return;
	pthread_mutex_lock(&d->lock);
	/* Nothing is in flight (outstanding is 0), so an SQE is free for the stop NOP. */
	struct io_uring_sqe *sqe = io_uring_get_sqe(&d->ring);
	io_uring_prep_nop(sqe);
	io_uring_sqe_set_data(sqe, NULL);
	ring_submit(d);
	pthread_mutex_unlock(&d->lock);
	pthread_join(d->thread, NULL);
	d->thread_up = false;
}
