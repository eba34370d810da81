/*
 * Pooled memory, this node's side: placing, protecting and dropping its
 * copies of guest pages, and making room by giving pages back to their
 * homes.  Every function runs with the engine's lock held.
 *
 * The kernel does the hard part: UFFDIO_COPY places a page atomically and
 * wakes every thread (vCPU, device, loader) blocked on it; write-protect
 * and MADV_DONTNEED reach KVM through the MMU notifiers, so the guest's
 * nested page tables never keep a stale or writable mapping of a page we
 * downgraded or dropped.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "kvm_compat.h"
#include "pool_internal.h"

static uint8_t *frame_addr(const struct hk_pool *p, uint64_t frame)
{
	return p->mem->base + frame * HK_PAGE_SIZE;
}

static void fifo_compact(struct hk_pool *p)
{
	uint64_t kept = 0;

	for (uint64_t i = 0; i < p->fifo_len; i++) {
		uint64_t f = p->fifo[(p->fifo_head + i) % p->fifo_cap];

		if (hk_mem_page_flags(p->mem, f) & (HK_PG_SHARED | HK_PG_EXCL))
			p->fifo[(p->fifo_head + kept++) % p->fifo_cap] = f;
		else
			hk_mem_page_clear(p->mem, f, POOL_PG_INFIFO);
	}
	p->fifo_len = kept;
}

/* Remember a page that is not homed here as an eviction candidate. */
static void fifo_push(struct hk_pool *p, uint64_t frame)
{
	if (pool_home(p, frame) == p->cfg.self)
		return;
	if (hk_mem_page_set(p->mem, frame, POOL_PG_INFIFO) & POOL_PG_INFIFO)
		return; /* already queued: keeps its older place */
	if (p->fifo_len == p->fifo_cap)
		fifo_compact(p);
	if (p->fifo_len == p->fifo_cap) {
		/* Every queued page is present: the budget check will evict
		 * the oldest right after this install anyway. */
		hk_mem_page_clear(p->mem, frame, POOL_PG_INFIFO);
		return;
	}
	p->fifo[(p->fifo_head + p->fifo_len++) % p->fifo_cap] = frame;
}

static void set_state(struct hk_pool *p, uint64_t frame, uint8_t state)
{
	uint8_t before =
	    hk_mem_page_clear(p->mem, frame, HK_PG_SHARED | HK_PG_EXCL | HK_PG_PENDING);

	if (state)
		hk_mem_page_set(p->mem, frame, state);
	if (before & HK_PG_PENDING)
		pool_hold_answered(p);
}

void pool_page_install(struct hk_pool *p, uint64_t frame, const uint8_t *data, bool exclusive)
{
	struct uffdio_copy c = {
		.dst = (uintptr_t)frame_addr(p, frame),
		.src = (uintptr_t)data,
		.len = HK_PAGE_SIZE,
		.mode = exclusive ? 0 : UFFDIO_COPY_MODE_WP,
	};

	if (hk_mem_page_flags(p->mem, frame) & (HK_PG_SHARED | HK_PG_EXCL)) {
		/* A copy we still hold is replaced: the protocol never asks
		 * for that, so say so, but keep the newer data. */
		fprintf(stderr, "hyperkernel: pool: frame %llu placed while present\n",
			(unsigned long long)frame);
		p->st.bad_msgs++;
		pool_page_drop(p, frame);
	}
	if (ioctl(p->mem->uffd, UFFDIO_COPY, &c) < 0) {
		fprintf(stderr, "hyperkernel: pool: UFFDIO_COPY frame %llu: %s\n",
			(unsigned long long)frame, strerror(errno));
		return;
	}
	set_state(p, frame, exclusive ? HK_PG_EXCL : HK_PG_SHARED);
	atomic_fetch_add(&p->mem->resident_pages, 1);
	fifo_push(p, frame);
	pool_hold_mark(p, frame);
}

void pool_page_zero(struct hk_pool *p, uint64_t frame, uint64_t count)
{
	uint64_t done = 0, win = p->mem->window / HK_PAGE_SIZE;

	/* Copy in pieces no larger than the zero window; pages that already
	 * exist (EEXIST) are skipped one at a time, as in fault.c. */
	while (done < count) {
		uint64_t n = count - done < win ? count - done : win;
		struct uffdio_copy c = {
			.dst = (uintptr_t)frame_addr(p, frame + done),
			.src = (uintptr_t)p->mem->zero,
			.len = n * HK_PAGE_SIZE,
		};
		uint64_t placed;

		if (ioctl(p->mem->uffd, UFFDIO_COPY, &c) == 0) {
			placed = n;
		} else {
			placed = c.copy > 0 ? (uint64_t)c.copy / HK_PAGE_SIZE : 0;
			if (errno != EEXIST && errno != EAGAIN) {
				fprintf(stderr, "hyperkernel: pool: zero fill of frame %llu: %s\n",
					(unsigned long long)(frame + done), strerror(errno));
				return;
			}
		}
		for (uint64_t i = 0; i < placed; i++) {
			set_state(p, frame + done + i, HK_PG_EXCL);
			fifo_push(p, frame + done + i);
		}
		if (placed)
			pool_hold_mark(p, frame + done); /* the one faulted on, mostly */
		atomic_fetch_add(&p->mem->resident_pages, placed);
		done += placed;
		if (placed < n && errno == EEXIST)
			done++; /* present already: keep what is there */
	}
	p->st.zero_pages += count;
}

/* Release write protection; a page that holds a storage replica loses
 * it first, exactly as on a single node (pagestate.c). */
static void page_unprotect(struct hk_pool *p, uint64_t frame)
{
	struct uffdio_writeprotect wp = {
		.range = {.start = (uintptr_t)frame_addr(p, frame), .len = HK_PAGE_SIZE},
		.mode = 0, /* and wake whoever waits for the write */
	};

	if (hk_mem_page_flags(p->mem, frame) & (HK_PG_REPLICA | HK_PG_WRITEBACK)) {
		hk_pagestate_wp_fault(p->mem, wp.range.start);
		return;
	}
	if (ioctl(p->mem->uffd, UFFDIO_WRITEPROTECT, &wp) < 0)
		fprintf(stderr, "hyperkernel: pool: unprotect frame %llu: %s\n",
			(unsigned long long)frame, strerror(errno));
}

void pool_page_upgrade(struct hk_pool *p, uint64_t frame)
{
	set_state(p, frame, HK_PG_EXCL);
	pool_hold_mark(p, frame);
	page_unprotect(p, frame);
}

void pool_page_protect(struct hk_pool *p, uint64_t frame)
{
	struct uffdio_writeprotect wp = {
		.range = {.start = (uintptr_t)frame_addr(p, frame), .len = HK_PAGE_SIZE},
		.mode = UFFDIO_WRITEPROTECT_MODE_WP,
	};

	if (ioctl(p->mem->uffd, UFFDIO_WRITEPROTECT, &wp) < 0)
		fprintf(stderr, "hyperkernel: pool: protect frame %llu: %s\n",
			(unsigned long long)frame, strerror(errno));
	set_state(p, frame, HK_PG_SHARED);
}

void pool_page_drop(struct hk_pool *p, uint64_t frame)
{
	uint8_t before = hk_mem_page_clear(p->mem, frame, HK_PG_SHARED | HK_PG_EXCL);

	if (!(before & (HK_PG_SHARED | HK_PG_EXCL)))
		return;
	/* A frame that leaves no longer holds its replica: another node may
	 * write the page next, so the entry goes now (pagestate.c's hook). */
	if (before & HK_PG_REPLICA) {
		hk_mem_page_clear(p->mem, frame, HK_PG_REPLICA);
		if (p->mem->wp_hook)
			p->mem->wp_hook(p->mem->wp_ctx, hk_mem_frame_gpa(p->mem, frame), before);
	}
	if (madvise(frame_addr(p, frame), HK_PAGE_SIZE, MADV_DONTNEED) < 0)
		fprintf(stderr, "hyperkernel: pool: dropping frame %llu: %s\n",
			(unsigned long long)frame, strerror(errno));
	atomic_fetch_sub(&p->mem->resident_pages, 1);
}

const uint8_t *pool_page_copy(struct hk_pool *p, uint64_t frame)
{
	/* Only for present pages (the caller checked the state), so this
	 * memcpy never faults into our own userfaultfd. */
	memcpy(p->scratch, frame_addr(p, frame), HK_PAGE_SIZE);
	return p->scratch;
}

void pool_page_wake(struct hk_pool *p, uint64_t frame)
{
	struct uffdio_range r = {.start = (uintptr_t)frame_addr(p, frame), .len = HK_PAGE_SIZE};

	if (ioctl(p->mem->uffd, UFFDIO_WAKE, &r) < 0)
		fprintf(stderr, "hyperkernel: pool: wake frame %llu: %s\n",
			(unsigned long long)frame, strerror(errno));
}

/*
 * Over budget: give the oldest pages homed elsewhere back.  A shared copy
 * is dropped and the home told; an exclusive page is protected first (a
 * writer then faults and asks the home again), copied, dropped and sent
 * home.  Pages with a request in flight stay.  A page whose message cannot
 * leave stays too: the home would otherwise still count it here.
 */
void pool_evict(struct hk_pool *p)
{
	uint64_t scanned = 0;

	if (p->aborted || p->failed)
		return; /* coherence stopped: nothing moves any more */
	while (atomic_load(&p->mem->resident_pages) > p->budget_pages && p->fifo_len &&
	       scanned++ < p->fifo_cap) {
		uint64_t frame = p->fifo[p->fifo_head];
		uint8_t fl;

		p->fifo_head = (p->fifo_head + 1) % p->fifo_cap;
		p->fifo_len--;
		fl = hk_mem_page_clear(p->mem, frame, POOL_PG_INFIFO);
		if (!(fl & (HK_PG_SHARED | HK_PG_EXCL)))
			continue;
		if (fl & (HK_PG_PENDING | POOL_PG_PINNED)) {
			fifo_push(p, frame); /* an upgrade or a device transfer: later */
			continue;
		}
		if (fl & HK_PG_SHARED) {
			/* A home that still lists this node as a sharer would
			 * answer its next write with UPGRADE, and no page. */
			if (pool_send(p, pool_home(p, frame), HK__COH__COH_TYPE__COH_EVICT, frame,
				      0, false, NULL)) {
				fifo_push(p, frame); /* try again later */
				break;
			}
			pool_page_drop(p, frame);
		} else {
			const uint8_t *data;

			/* Send before dropping: if the write-back cannot leave,
			 * the page must not be lost (it is the only copy). */
			pool_page_protect(p, frame);
			data = pool_page_copy(p, frame);
			if (pool_send(p, pool_home(p, frame), HK__COH__COH_TYPE__COH_WRITEBACK,
				      frame, 0, true, data)) {
				pool_page_upgrade(p, frame);
				fifo_push(p, frame); /* try again later */
				break;
			}
			pool_page_drop(p, frame);
			p->st.pages_sent++;
		}
		p->st.evictions++;
	}
	if (atomic_load(&p->mem->resident_pages) > p->budget_pages && !p->warned_budget) {
		p->warned_budget = true;
		fprintf(stderr,
			"hyperkernel: pool: %llu pages resident, budget %llu: the pages homed here "
			"alone exceed this node's memory\n",
			(unsigned long long)atomic_load(&p->mem->resident_pages),
			(unsigned long long)p->budget_pages);
	}
}
