/*
 * Pooled memory: a page a node just received stays there for a short
 * while before another node may take it.
 *
 * Without it two nodes that both need the same two pages for one step
 * livelock: node A gets page 1, asks for page 2; node B takes page 1 back
 * while A waits for page 2, and so on.  Guest page tables are the classic
 * case: a page walk under nested paging may need the page-table page
 * writable (EPT A/D tracking treats walks as writes), every node running
 * vCPUs walks the same tables, and every page that leaves a node flushes
 * that node's guest TLBs.  Holding each page for hold_ns after it arrives
 * lets the waiting vCPU finish the step that needed it.
 *
 * A fetch or invalidation for a held page (holder side), or a request the
 * home would answer by giving up its own held page (home side), is put on
 * a deferred list; the hold thread runs it when the hold ends.  Deferring
 * never reorders two messages about one frame: the home sends nothing else
 * about a frame while it waits for that frame's answer.
 *
 * A hold from arrival is not enough when one step needs several contended
 * pages at once: a guest page walk needs pml4, pdpt and pd writable
 * together.  Node A holds pml4 and waits for pdpt, which B holds and
 * keeps for its own walk; by the time pdpt comes, A's hold on pml4 has
 * run out and B took it, and so on (HK_POOL_TRACE=1 on litmus sbfence over
 * two nodes in the nested VM: 66 faults per iteration, 94 % of them on
 * those three pages, the page given up while the node's own request was
 * in flight).  So while a node waits for a page, the pages it received
 * lately stay until the wait ends, up to POOL_WAIT_HOLDS holds.  Two
 * nodes that wait on each other must not both do that (neither would get
 * on), so only one node at a time may: turns of POOL_WAIT_HOLDS holds go
 * round the nodes by wall-clock time, which nodes share closely enough
 * (a turn seen differently only costs that turn's extension).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pool_internal.h"

#define HOLD_DEFAULT_US 200
#define HOLD_MAX_US	1000000
#define PIN_RETRY_NS	(50ull * 1000 * 1000)
#define POOL_WAIT_HOLDS 8u

static struct pool_hold *hold_slot(struct hk_pool *p, uint64_t frame)
{
	return &p->holds[(frame * 0x9e3779b97f4a7c15ull) >> (64 - POOL_HOLD_BITS)];
}

void pool_hold_mark(struct hk_pool *p, uint64_t frame)
{
	struct pool_hold *h;

	if (!p->hold_ns)
		return;
	/* A direct-mapped table: a collision forgets an older hold, which
	 * only makes that page movable a little early. */
	h = hold_slot(p, frame);
	h->frame = frame;
	h->until_ns = hk_now_ns() + p->hold_ns;
}

/* End of this node's turn to keep pages while it waits, or 0 outside it. */
static uint64_t wait_turn_end(const struct hk_pool *p)
{
	uint64_t turn = p->hold_ns * POOL_WAIT_HOLDS, now, k;
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	k = now / turn;
	if (k % p->cfg.n_nodes != p->cfg.self)
		return 0;
	return hk_now_ns() + (k + 1) * turn - now; /* on the monotonic clock */
}

void pool_hold_wait(struct hk_pool *p)
{
	p->waits++;
}

void pool_hold_answered(struct hk_pool *p)
{
	uint64_t grace;
	bool any = false;

	if (p->waits && --p->waits)
		return;
	/* Nothing asked any more: what was kept for the wait goes after one
	 * more hold, time for the vCPU to use the pages together. */
	grace = hk_now_ns() + p->hold_ns;
	for (struct pool_deferred *d = p->deferred; d; d = d->next)
		if (d->waited && d->due_ns > grace) {
			d->due_ns = grace;
			any = true;
		}
	if (any)
		pthread_cond_signal(&p->hold_cv);
}

bool pool_hold_defer(struct hk_pool *p, unsigned from, int type, uint64_t frame, bool exclusive)
{
	struct pool_hold *h = hold_slot(p, frame);
	struct pool_deferred *d, **tail;
	bool waited = false;
	uint64_t due;

	if (pool_pinned(p, frame)) {
		/* A device transfer: until the unpin (pool_pin.c), which makes
		 * it due; the retry time only bounds a lost wake-up.  Deferred
		 * again when run from the list while still pinned. */
		due = hk_now_ns() + PIN_RETRY_NS;
	} else {
		uint64_t now = hk_now_ns();

		if (!p->hold_ns || p->in_deferred || h->frame != frame)
			return false;
		due = h->until_ns;
		if (p->waits && !(hk_mem_page_flags(p->mem, frame) & HK_PG_PENDING)) {
			/* This node waits for another page: in its turn, keep
			 * this one until the answer (pool_hold_answered). */
			uint64_t cap = h->until_ns + (POOL_WAIT_HOLDS - 1) * p->hold_ns;
			uint64_t end = now < cap ? wait_turn_end(p) : 0;

			if (end) {
				due = cap < end ? cap : end;
				waited = true;
			}
		}
		if (now >= due)
			return false;
	}
	d = malloc(sizeof(*d));
	if (!d)
		return false; /* serve it now rather than lose it */
	*d = (struct pool_deferred){
		.from = from,
		.type = type,
		.frame = frame,
		.exclusive = exclusive,
		.waited = waited,
		.due_ns = due,
	};
	/* FIFO: holds have the same length, so due times arrive in order
	 * (a pinned frame's entry may wait behind them a little longer). */
	for (tail = &p->deferred; *tail; tail = &(*tail)->next)
		;
	*tail = d;
	if (pool_pinned(p, frame))
		p->st.pin_waits++; /* counted again at each retry while pinned */
	else
		p->st.holds++;
	pthread_cond_signal(&p->hold_cv);
	return true;
}

bool pool_hold_release(struct hk_pool *p, uint64_t frame)
{
	bool any = false;

	for (struct pool_deferred *d = p->deferred; d; d = d->next)
		if (d->frame == frame) {
			d->due_ns = 0;
			any = true;
		}
	return any;
}

/* The first entry that is due and has no older entry for its frame (two
 * messages about one frame run in arrival order), or NULL and the time
 * the next one is due. */
static struct pool_deferred **next_due(struct hk_pool *p, uint64_t *wait_until)
{
	uint64_t now = hk_now_ns(), first = UINT64_MAX;

	for (struct pool_deferred **dp = &p->deferred; *dp; dp = &(*dp)->next) {
		struct pool_deferred *d = *dp;
		bool older = false;

		for (struct pool_deferred *o = p->deferred; o != d && !older; o = o->next)
			older = o->frame == d->frame;
		if (older)
			continue;
		if (d->due_ns <= now)
			return dp;
		if (d->due_ns < first)
			first = d->due_ns;
	}
	*wait_until = first;
	return NULL;
}

static void *hold_thread(void *arg)
{
	struct hk_pool *p = arg;

	pthread_mutex_lock(&p->lock);
	while (!p->hold_stop) {
		struct pool_deferred **dp, *d;
		struct timespec until;
		uint64_t due;

		if (!p->deferred) {
			pthread_cond_wait(&p->hold_cv, &p->lock);
			continue;
		}
		dp = next_due(p, &due);
		if (!dp) {
			until.tv_sec = (time_t)(due / 1000000000ull);
			until.tv_nsec = (long)(due % 1000000000ull);
			pthread_cond_timedwait(&p->hold_cv, &p->lock, &until);
			continue;
		}
		d = *dp;
		*dp = d->next;
		if (!p->aborted && !p->failed) {
			p->in_deferred = true;
			pool_run_deferred(p, d->from, d->type, d->frame, d->exclusive);
			p->in_deferred = false;
			pool_evict(p);
		}
		free(d);
		if (p->fail_report) { /* a reply could not be sent: end the guest */
			pool_unlock(p);
			pthread_mutex_lock(&p->lock);
		}
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int pool_hold_start(struct hk_pool *p, char *err, size_t errlen)
{
	const char *env = getenv("HK_POOL_HOLD_US");
	pthread_condattr_t ca;
	unsigned long us = HOLD_DEFAULT_US;
	int ret;

	if (env && *env) {
		char *end;

		errno = 0;
		us = strtoul(env, &end, 10);
		if (errno || *end || us > HOLD_MAX_US) {
			snprintf(err, errlen, "HK_POOL_HOLD_US=%s: want microseconds, 0 to %d", env,
				 HOLD_MAX_US);
			return -EINVAL;
		}
	}
	p->hold_ns = us * 1000ull;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* hk_now_ns() */
	pthread_cond_init(&p->hold_cv, &ca);
	pthread_condattr_destroy(&ca);
	ret = pthread_create(&p->hold_thread, NULL, hold_thread, p);
	if (ret) {
		snprintf(err, errlen, "pool: cannot start the hold thread: %s", strerror(ret));
		pthread_cond_destroy(&p->hold_cv);
		return -ret;
	}
	p->hold_started = true;
	return 0;
}

void pool_hold_stop(struct hk_pool *p)
{
	if (!p->hold_started)
		return;
	pthread_mutex_lock(&p->lock);
	p->hold_stop = true;
	pthread_cond_signal(&p->hold_cv);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->hold_thread, NULL);
	while (p->deferred) {
		struct pool_deferred *d = p->deferred;

		p->deferred = d->next;
		free(d);
	}
	pthread_cond_destroy(&p->hold_cv);
	p->hold_started = false;
}
