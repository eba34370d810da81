/* Internal to hyperkernel/: guest RAM and its userfaultfd state. */
#ifndef HK_MEM_INTERNAL_H
#define HK_MEM_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "hyperkernel.h"

struct hk_pool;
struct hk_mem;

/*
 * Write tracking of replica pages (wtrack.c): arm or disarm whole present
 * pages; harvest reports, through hk_pagestate_wp_event, every write to an
 * armed page of the range made before the call, and returns how many.
 */
struct hk_wtrack_ops {
	size_t size;
	const char *name;
	int (*arm)(struct hk_mem *mem, uint64_t gpa, uint64_t len, bool on);
	uint64_t (*harvest)(struct hk_mem *mem, uint64_t gpa, uint64_t len);
};

extern const struct hk_wtrack_ops hk_wtrack_uffd_ops;
extern const struct hk_wtrack_ops hk_wtrack_kvm_ops;

/* One KVM memory slot: frames [first_frame, first_frame + pages). */
struct hk_kvm_slot {
	uint32_t id;
	uint64_t first_frame;
	uint64_t pages;
};

#define HK_KVM_SLOTS_MAX 4096 /* 4 TiB in 1 GiB slots (the dirty-log layout) */

/* State of the KVM dirty-log backend (wtrack_kvm.c). */
struct hk_wtrack_kvm {
	pthread_mutex_t lock; /* orders arm against harvest */
	int vm_fd;
	struct hk_kvm_slot *slots;
	unsigned n_slots;
	uint64_t *bitmap; /* one slot's worth, reused by every harvest */
	/* XXH3 of each tracked page when armed: 512 per 2 MiB chunk, made on
	 * the chunk's first arm (4 KiB per 2 MiB of replicas). */
	uint64_t **hashes;
	_Atomic uint64_t arms, harvests, harvest_ns;
	_Atomic uint64_t false_alarms; /* bit set, page unchanged: kept */
};

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
	const struct hk_wtrack_ops *wtrack; /* uffd unless the VM chose kvm */
	struct hk_wtrack_kvm kvm_wt;
	uint64_t slot_max; /* bytes per KVM memory slot */
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

/* wtrack.c, wtrack_kvm.c */
void hk_pagestate_wp_event(struct hk_mem *mem, uint64_t frame);
bool hk_wtrack_kvm_supported(int vm_fd);
int hk_wtrack_kvm_enable(int vm_fd);
/* Switch mem to the dirty log (before the first attach): 1 GiB slots. */
int hk_wtrack_kvm_use(struct hk_mem *mem);
int hk_wtrack_kvm_attach(struct hk_mem *mem, int vm_fd);
void hk_wtrack_kvm_detach(struct hk_mem *mem);
/*
 * The seam, for the replica rules (blk_replica.c): track (on) or stop
 * tracking whole present pages of [gpa, gpa+len); harvest every write to a
 * tracked page of the range made before the call (returns how many pages
 * stopped being replicas).  -EINVAL / 0 for a range that is not RAM.
 */
int hk_mem_track(struct hk_mem *mem, uint64_t gpa, uint64_t len, bool on);
uint64_t hk_mem_harvest(struct hk_mem *mem, uint64_t gpa, uint64_t len);
void hk_wtrack_kvm_free(struct hk_mem *mem);

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
