/*
 * Pooled memory: pages a device is reading or writing stay on this node.
 *
 * A disk request moves data between the disk and guest pages through
 * io_uring, which (with O_DIRECT) pins the pages in the kernel for the
 * whole transfer.  If coherence took such a page away meanwhile (another
 * node's write, a read that write-protects it, an eviction), the transfer
 * would go to a page the guest no longer sees, or another node would copy
 * the page before the disk filled it.  So a device pins its pages first:
 * every page of the request is made exclusive here, then counted as
 * pinned; until the last unpin, fetches and invalidations for it are
 * deferred (pool_hold.c) and eviction passes it by.
 *
 * Pinning takes all pages of a request at once or none: a page that is
 * not exclusive yet is faulted in with no pin held, then the whole set is
 * tried again.  A device never holds one page while waiting for another,
 * so two nodes pinning overlapping pages cannot deadlock.
 */
#include <errno.h>
#include <stdlib.h>

#include "pool_internal.h"

#define PIN_BUCKETS   256u
#define PIN_MAX_TRIES 100000u

struct pool_pin {
	struct pool_pin *next;
	uint64_t frame;
	uint32_t count;
};

static struct pool_pin **bucket(struct hk_pool *p, uint64_t frame)
{
	return &p->pins[(frame * 0x9e3779b97f4a7c15ull) >> (64 - 8)];
}

static void pin_inc(struct hk_pool *p, uint64_t frame)
{
	struct pool_pin **b = bucket(p, frame), *e;

	for (e = *b; e; e = e->next)
		if (e->frame == frame) {
			e->count++;
			return;
		}
	e = malloc(sizeof(*e));
	if (!e)
		abort(); /* a handful of bytes; no way to honour a pin without it */
	*e = (struct pool_pin){*b, frame, 1};
	*b = e;
	hk_mem_page_set(p->mem, frame, POOL_PG_PINNED);
}

/* true when the last pin went */
static bool pin_dec(struct hk_pool *p, uint64_t frame)
{
	for (struct pool_pin **b = bucket(p, frame), *e; (e = *b); b = &e->next) {
		if (e->frame != frame)
			continue;
		if (--e->count)
			return false;
		*b = e->next;
		free(e);
		hk_mem_page_clear(p->mem, frame, POOL_PG_PINNED);
		return true;
	}
	return false;
}

bool pool_pinned(struct hk_pool *p, uint64_t frame)
{
	return hk_mem_page_flags(p->mem, frame) & POOL_PG_PINNED;
}

/* Every frame f of the n ranges r, in order (ranges are inside memory). */
#define FOR_EACH_FRAME(p, r, n, f)                                                                 \
	for (unsigned i_ = 0; i_ < (n); i_++)                                                      \
		for (uint64_t f = hk_mem_frame((p)->mem, (r)[i_].gpa),                             \
			      end_ = hk_mem_frame((p)->mem, (r)[i_].gpa + (r)[i_].len - 1);        \
		     f <= end_; f++)

static bool exclusive_here(struct hk_pool *p, uint64_t frame)
{
	uint8_t fl = hk_mem_page_flags(p->mem, frame);

	return (fl & HK_PG_EXCL) && !(fl & HK_PG_PENDING);
}

/* First page of the ranges not exclusive here, or UINT64_MAX.  Lock held. */
static uint64_t first_missing(struct hk_pool *p, const struct hk_mem_range *r, unsigned n)
{
	FOR_EACH_FRAME(p, r, n, f)
	{
		if (!exclusive_here(p, f))
			return f;
	}
	return UINT64_MAX;
}

/* Write-touch each page of the ranges that is not exclusive here (no lock
 * held: the touches fault; the flags read without it are only a hint). */
static void touch_missing(struct hk_pool *p, const struct hk_mem_range *r, unsigned n)
{
	FOR_EACH_FRAME(p, r, n, f)
	{
		uint8_t *h = hk_mem_gpa(p->mem, hk_mem_frame_gpa(p->mem, f), 1);

		if (!exclusive_here(p, f))
			__atomic_fetch_or(h, 0, __ATOMIC_RELAXED);
	}
}

static void for_each_frame(struct hk_pool *p, const struct hk_mem_range *r, unsigned n, bool pin)
{
	bool woke = false;

	FOR_EACH_FRAME(p, r, n, f)
	{
		if (pin)
			pin_inc(p, f);
		else if (pin_dec(p, f))
			woke |= pool_hold_release(p, f);
	}
	if (woke)
		pthread_cond_signal(&p->hold_cv);
}

static bool ranges_valid(struct hk_mem *mem, const struct hk_mem_range *r, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (!r[i].len || !hk_mem_gpa(mem, r[i].gpa, r[i].len))
			return false;
	return true;
}

int hk_mem_pin(struct hk_mem *mem, const struct hk_mem_range *r, unsigned n)
{
	struct hk_pool *p = mem->pool;

	if (!p)
		return 0;
	if (!ranges_valid(mem, r, n))
		return -EFAULT;
	for (unsigned tries = 0; tries < PIN_MAX_TRIES; tries++) {
		uint64_t miss;

		pthread_mutex_lock(&p->lock);
		if (p->aborted) {
			pthread_mutex_unlock(&p->lock);
			return -ECONNABORTED;
		}
		miss = first_missing(p, r, n);
		if (miss == UINT64_MAX) {
			for_each_frame(p, r, n, true);
			p->st.pins++;
			pthread_mutex_unlock(&p->lock);
			return 0;
		}
		p->st.pin_retries++;
		pthread_mutex_unlock(&p->lock);
		/* A write that changes nothing: the fault handler makes the
		 * page exclusive here (and the hold keeps it a moment).  Every
		 * page not here yet, in one round: fetched one per round, the
		 * first ones could be gone again before the last came. */
		touch_missing(p, r, n);
	}
	return -EAGAIN;
}

void hk_mem_unpin(struct hk_mem *mem, const struct hk_mem_range *r, unsigned n)
{
	struct hk_pool *p = mem->pool;

	if (!p || !ranges_valid(mem, r, n))
		return;
	pthread_mutex_lock(&p->lock);
	for_each_frame(p, r, n, false);
	pthread_mutex_unlock(&p->lock);
}

void pool_pin_free(struct hk_pool *p)
{
	for (unsigned i = 0; i < PIN_BUCKETS; i++)
		while (p->pins[i]) {
			struct pool_pin *e = p->pins[i];

			p->pins[i] = e->next;
			free(e);
		}
}
