/*
 * Pooled memory, the home's side: the directory of the frames homed on
 * this node and the transactions that move them.  Every function runs with
 * the engine's lock held.
 *
 * Invariants the rest relies on:
 *  - DIR_SHARED: every node in sharers holds an identical read-only copy,
 *    and the home is always one of them, so a read is answered at once;
 *  - DIR_EXCL: exactly the owner holds the page, writable;
 *  - DIR_UNTOUCHED: nobody holds it; its content is zeros;
 *  - a frame with a transaction in flight is busy: later requests for it
 *    queue in arrival order and run when it completes.
 * A write is granted only after every other copy was dropped and its
 * holder acknowledged, and a copy is read from its owner only after the
 * owner lost write permission: together with per-pair FIFO delivery this
 * gives one order of writes per page that every node observes (x86-TSO
 * across nodes: docs/architecture.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool_internal.h"

#define BIT(n) (1ull << (n))

struct pool_dirent *pool_dirent(struct hk_pool *p, uint64_t frame)
{
	uint64_t first = p->home_start[p->cfg.self], idx, c;

	if (frame < first || frame >= p->home_start[p->cfg.self + 1])
		return NULL;
	idx = frame - first;
	c = idx / POOL_DIR_CHUNK;
	if (!p->dir[c]) {
		p->dir[c] = calloc(POOL_DIR_CHUNK, sizeof(struct pool_dirent));
		if (!p->dir[c])
			return NULL;
	}
	return &p->dir[c][idx % POOL_DIR_CHUNK];
}

static struct pool_txn *txn_new(struct hk_pool *p, unsigned from, uint64_t frame, bool write)
{
	struct pool_txn *t = calloc(1, sizeof(*t));

	if (!t) {
		fprintf(stderr, "hyperkernel: pool: out of memory for a page transaction\n");
		return NULL;
	}
	t->from = from;
	t->frame = frame;
	t->write = write;
	(void)p;
	return t;
}

static struct pool_txn *txn_take(struct pool_txn **list, uint64_t frame)
{
	for (struct pool_txn **pp = list; *pp; pp = &(*pp)->next) {
		struct pool_txn *t = *pp;

		if (t->frame == frame) {
			*pp = t->next;
			t->next = NULL;
			return t;
		}
	}
	return NULL;
}

static struct pool_txn *txn_find(struct hk_pool *p, uint64_t frame)
{
	for (struct pool_txn *t = p->active; t; t = t->next)
		if (t->frame == frame)
			return t;
	return NULL;
}

static void txn_start(struct hk_pool *p, struct pool_dirent *d, struct pool_txn *t)
{
	d->busy = 1;
	t->next = p->active;
	p->active = t;
}

/* The frame is free again: run the requests that queued behind it. */
static void txn_done(struct hk_pool *p, struct pool_dirent *d, uint64_t frame)
{
	struct pool_txn *t = txn_take(&p->active, frame), *q;

	free(t);
	d->busy = 0;
	while (!d->busy && (q = txn_take(&p->queued, frame))) {
		pool_home_request(p, q->from, frame, q->write);
		free(q);
	}
}

/* Grant the run of never-written frames around frame to `from`, exclusive. */
static void grant_zero(struct hk_pool *p, unsigned from, uint64_t frame)
{
	uint64_t batch = from == p->cfg.self ? p->mem->window / HK_PAGE_SIZE : POOL_ZERO_BATCH;
	uint64_t base = frame - frame % batch, lo = frame, hi = frame + 1;
	struct pool_dirent *d;

	while (lo > base && (d = pool_dirent(p, lo - 1)) && d->state == DIR_UNTOUCHED && !d->busy)
		lo--;
	while (hi < base + batch && (d = pool_dirent(p, hi)) && d->state == DIR_UNTOUCHED &&
	       !d->busy)
		hi++;
	for (uint64_t f = lo; f < hi; f++) {
		d = pool_dirent(p, f);
		d->state = DIR_EXCL;
		d->owner = (uint8_t)from;
	}
	if (from == p->cfg.self)
		pool_page_zero(p, lo, hi - lo);
	else
		pool_send(p, from, HK__COH__COH_TYPE__COH_ZERO, lo, (uint32_t)(hi - lo), true,
			  NULL);
}

/* All other copies are gone: `t->from` owns the frame now. */
static void finish_write(struct hk_pool *p, struct pool_dirent *d, struct pool_txn *t)
{
	d->state = DIR_EXCL;
	d->owner = (uint8_t)t->from;
	d->sharers = 0;
	if (t->from == p->cfg.self) {
		if (hk_mem_page_flags(p->mem, t->frame) & HK_PG_SHARED)
			pool_page_upgrade(p, t->frame);
		else
			pool_page_install(p, t->frame, t->data, true);
	} else if (t->have_data) {
		pool_send(p, t->from, HK__COH__COH_TYPE__COH_DATA, t->frame, 0, true, t->data);
		p->st.pages_sent++;
	} else {
		pool_send(p, t->from, HK__COH__COH_TYPE__COH_UPGRADE, t->frame, 0, true, NULL);
	}
}

static void request_shared(struct hk_pool *p, struct pool_dirent *d, unsigned from,
			   uint64_t frame, bool write)
{
	uint64_t others;
	struct pool_txn *t;

	if (!write) {
		d->sharers |= BIT(from);
		if (from == p->cfg.self) {
			pool_page_wake(p, frame); /* our own copy is there */
			return;
		}
		pool_send(p, from, HK__COH__COH_TYPE__COH_DATA, frame, 0, false,
			  pool_page_copy(p, frame));
		p->st.pages_sent++;
		return;
	}
	t = txn_new(p, from, frame, true);
	if (!t)
		return;
	if (!(d->sharers & BIT(from))) {
		memcpy(t->data, pool_page_copy(p, frame), HK_PAGE_SIZE);
		t->have_data = true;
	}
	if (from != p->cfg.self) {
		pool_page_drop(p, frame); /* the home's own copy */
		p->st.invalidations++;
	}
	others = d->sharers & ~BIT(from) & ~BIT(p->cfg.self);
	for (unsigned n = 0; n < p->cfg.n_nodes; n++) {
		if (!(others & BIT(n)))
			continue;
		pool_send(p, n, HK__COH__COH_TYPE__COH_INV, frame, 0, false, NULL);
		p->st.invalidations_sent++;
		t->acks_left++;
		t->waiting |= BIT(n);
	}
	d->sharers = BIT(from);
	if (!t->acks_left) {
		finish_write(p, d, t);
		free(t);
		return;
	}
	txn_start(p, d, t);
}

static void request_exclusive(struct hk_pool *p, struct pool_dirent *d, unsigned from,
			      uint64_t frame, bool write)
{
	unsigned owner = d->owner;
	struct pool_txn *t;

	if (owner == from) {
		/* The requester holds the page writable: it never asks, unless
		 * a message was lost or forged. */
		fprintf(stderr, "hyperkernel: pool: node %u asked for frame %llu it owns\n", from,
			(unsigned long long)frame);
		p->st.bad_msgs++;
		return;
	}
	if (owner == p->cfg.self) {
		const uint8_t *data;

		if (write) {
			pool_page_protect(p, frame);
			data = pool_page_copy(p, frame);
			pool_page_drop(p, frame);
			p->st.invalidations++;
			d->owner = (uint8_t)from;
		} else {
			pool_page_protect(p, frame); /* the home keeps a read-only copy */
			data = pool_page_copy(p, frame);
			d->state = DIR_SHARED;
			d->sharers = BIT(p->cfg.self) | BIT(from);
		}
		pool_send(p, from, HK__COH__COH_TYPE__COH_DATA, frame, 0, write, data);
		p->st.pages_sent++;
		return;
	}
	t = txn_new(p, from, frame, write);
	if (!t)
		return;
	t->waiting = BIT(owner);
	txn_start(p, d, t);
	pool_send(p, owner, HK__COH__COH_TYPE__COH_FETCH, frame, 0, write, NULL);
}

void pool_home_request(struct hk_pool *p, unsigned from, uint64_t frame, bool write)
{
	struct pool_dirent *d = pool_dirent(p, frame);

	if (!d) {
		p->st.bad_msgs++;
		return;
	}
	if (d->busy) {
		struct pool_txn *q = txn_new(p, from, frame, write), **tail = &p->queued;

		if (!q)
			return;
		while (*tail)
			tail = &(*tail)->next;
		*tail = q;
		return;
	}
	/* The home gives up its own copy for this request: not while held. */
	if (from != p->cfg.self &&
	    ((d->state == DIR_EXCL && d->owner == p->cfg.self) ||
	     (d->state == DIR_SHARED && write)) &&
	    pool_hold_defer(p, from,
			    write ? HK__COH__COH_TYPE__COH_WRITE : HK__COH__COH_TYPE__COH_READ,
			    frame, write))
		return;
	switch (d->state) {
	case DIR_UNTOUCHED:
		grant_zero(p, from, frame);
		break;
	case DIR_SHARED:
		request_shared(p, d, from, frame, write);
		break;
	default:
		request_exclusive(p, d, from, frame, write);
		break;
	}
}

void pool_home_evict(struct hk_pool *p, unsigned from, uint64_t frame)
{
	struct pool_dirent *d = pool_dirent(p, frame);

	if (!d || d->state != DIR_SHARED || from == p->cfg.self) {
		p->st.bad_msgs++;
		return;
	}
	d->sharers &= ~BIT(from);
}

void pool_home_writeback(struct hk_pool *p, unsigned from, uint64_t frame, const uint8_t *data)
{
	struct pool_dirent *d = pool_dirent(p, frame);

	if (!d || d->state != DIR_EXCL || d->owner != from || !data) {
		p->st.bad_msgs++;
		return;
	}
	/* A fetch sent to `from` before this arrived is answered "gone";
	 * pool_home_fetch_reply then serves it from this copy. */
	pool_page_install(p, frame, data, true);
	d->owner = (uint8_t)p->cfg.self;
	p->st.pages_recv++;
}

void pool_home_inv_ack(struct hk_pool *p, unsigned from, uint64_t frame)
{
	struct pool_dirent *d = pool_dirent(p, frame);
	struct pool_txn *t = txn_find(p, frame);

	/* Only from a node an invalidation went to, once: a forged or
	 * repeated ack must not grant a write while a copy still exists. */
	if (!d || !t || !t->acks_left || !(t->waiting & BIT(from))) {
		p->st.bad_msgs++;
		return;
	}
	t->waiting &= ~BIT(from);
	if (--t->acks_left)
		return;
	finish_write(p, d, t);
	txn_done(p, d, frame);
}

void pool_home_fetch_reply(struct hk_pool *p, unsigned from, uint64_t frame, const uint8_t *data)
{
	struct pool_dirent *d = pool_dirent(p, frame);
	struct pool_txn *t = txn_find(p, frame);

	if (!d || !t || t->acks_left || !(t->waiting & BIT(from))) {
		p->st.bad_msgs++; /* only the owner the fetch went to answers */
		return;
	}
	t->waiting = 0;
	if (!data) {
		/* The owner had written the page back: the home holds it now
		 * (pool_home_writeback), so the request runs again from there. */
		unsigned rfrom = t->from;
		bool rwrite = t->write;

		txn_take(&p->active, frame);
		free(t);
		d->busy = 0;
		pool_home_request(p, rfrom, frame, rwrite);
		if (!d->busy) /* resolved at once: let the queue move */
			txn_done(p, d, frame);
		return;
	}
	p->st.pages_recv++;
	if (t->write) {
		d->state = DIR_EXCL;
		d->owner = (uint8_t)t->from;
		if (t->from == p->cfg.self) {
			pool_page_install(p, frame, data, true);
		} else {
			pool_send(p, t->from, HK__COH__COH_TYPE__COH_DATA, frame, 0, true, data);
			p->st.pages_sent++;
		}
	} else {
		/* The old owner kept a read-only copy; the home takes one too. */
		pool_page_install(p, frame, data, false);
		d->state = DIR_SHARED;
		d->sharers = BIT(from) | BIT(p->cfg.self) | BIT(t->from);
		if (t->from != p->cfg.self) {
			pool_send(p, t->from, HK__COH__COH_TYPE__COH_DATA, frame, 0, false, data);
			p->st.pages_sent++;
		}
	}
	txn_done(p, d, frame);
}
