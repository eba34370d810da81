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
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pool_internal.h"

#define HOLD_DEFAULT_US 200
#define HOLD_MAX_US	1000000

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

bool pool_hold_defer(struct hk_pool *p, unsigned from, int type, uint64_t frame, bool exclusive)
{
	struct pool_hold *h = hold_slot(p, frame);
	struct pool_deferred *d, **tail;
	uint64_t now;

	if (!p->hold_ns || p->in_deferred || h->frame != frame)
		return false;
	now = hk_now_ns();
	if (now >= h->until_ns)
		return false;
	d = malloc(sizeof(*d));
	if (!d)
		return false; /* serve it now rather than lose it */
	*d = (struct pool_deferred){
		.from = from,
		.type = type,
		.frame = frame,
		.exclusive = exclusive,
		.due_ns = h->until_ns,
	};
	/* FIFO: holds have the same length, so due times arrive in order. */
	for (tail = &p->deferred; *tail; tail = &(*tail)->next)
		;
	*tail = d;
	p->st.holds++;
	pthread_cond_signal(&p->hold_cv);
	return true;
}

static void *hold_thread(void *arg)
{
	struct hk_pool *p = arg;

	pthread_mutex_lock(&p->lock);
	while (!p->hold_stop) {
		struct pool_deferred *d = p->deferred;
		struct timespec until;

		if (!d) {
			pthread_cond_wait(&p->hold_cv, &p->lock);
			continue;
		}
		if (hk_now_ns() < d->due_ns) {
			until.tv_sec = (time_t)(d->due_ns / 1000000000ull);
			until.tv_nsec = (long)(d->due_ns % 1000000000ull);
			pthread_cond_timedwait(&p->hold_cv, &p->lock, &until);
			continue;
		}
		p->deferred = d->next;
		if (!p->aborted) {
			p->in_deferred = true;
			pool_run_deferred(p, d->from, d->type, d->frame, d->exclusive);
			p->in_deferred = false;
			pool_evict(p);
		}
		free(d);
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
