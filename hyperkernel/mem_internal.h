/* Internal to hyperkernel/: guest RAM and its userfaultfd state. */
#ifndef HK_MEM_INTERNAL_H
#define HK_MEM_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "hyperkernel.h"

struct hk_pool;

struct hk_mem {
	uint8_t *base; /* one host mapping for all RAM ranges, back to back */
	uint64_t size;
	struct hk_mem_range ranges[2];
	uint64_t host_off[2]; /* offset of each range inside base */
	unsigned n_ranges;

	int uffd;
	int stop_fd; /* eventfd: tells the fault thread to leave */
	pthread_t fault_thread;
	bool fault_thread_started;

	uint64_t window;
	/* One bit per window: set once the fault thread has filled it.  Only
	 * the fault thread touches it; calloc'd, so a multi-TiB guest pays
	 * only for the bitmap pages its touched windows land in. */
	uint64_t *window_done;
	const uint8_t *zero; /* window-sized, never written: reads hit the zero page */

	/*
	 * Per-page state, two levels so a multi-TiB guest pays only for the
	 * 2 MiB chunks that ever had a flagged page: chunks[i] points at 512
	 * flag bytes, installed on first use with a compare-and-swap.  The
	 * write-protect fault handler reads a page's byte directly: no search.
	 */
	_Atomic(_Atomic uint8_t *) *chunks;
	uint64_t n_chunks;
	bool wp; /* userfaultfd write-protect available and registered */
	hk_wp_hook_fn wp_hook;
	void *wp_ctx;
	_Atomic uint64_t wp_faults;

	/* Pooled memory (pool.c), or NULL on a single node.  Set before the
	 * first page is touched and never changed while the fault thread runs. */
	struct hk_pool *pool;

	_Atomic uint64_t resident_pages;
	_Atomic uint64_t faults;
	_Atomic uint64_t fault_races;
	_Atomic uint64_t fault_ns;
};

/* pagestate.c */
int hk_pagestate_init(struct hk_mem *mem);
void hk_pagestate_free(struct hk_mem *mem);
void hk_pagestate_wp_fault(struct hk_mem *mem, uint64_t addr);
/* Has any page of the 512-frame chunk holding frame ever had a flag? */
bool hk_mem_page_chunk_used(const struct hk_mem *mem, uint64_t frame);
/* Pages flagged HK_PG_REPLICA (present on this node). */
uint64_t hk_mem_replica_pages(const struct hk_mem *mem);
/* Guest-physical address of a frame (frames are offsets in base / 4 KiB). */
uint64_t hk_mem_frame_gpa(const struct hk_mem *mem, uint64_t frame);

/*
 * pool_pin.c: keep the pages of a device transfer exclusive on this node
 * until unpinned.  Pooled memory only: on a single node both return at
 * once, checking nothing.  All ranges are pinned together or none.
 * hk_mem_pin may fault pages in: never call it on the transport's delivery
 * thread.  Returns 0, -EFAULT (a range outside guest memory),
 * -ECONNABORTED (coherence stopped) or -EAGAIN.
 */
int hk_mem_pin(struct hk_mem *mem, const struct hk_mem_range *r, unsigned n);
void hk_mem_unpin(struct hk_mem *mem, const struct hk_mem_range *r, unsigned n);

/* fault.c */
int hk_fault_start(struct hk_mem *mem, char *err, size_t errlen);
void hk_fault_stop(struct hk_mem *mem);

#endif
