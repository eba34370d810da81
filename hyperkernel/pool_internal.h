/*
 * Internal to hyperkernel/: the page-coherence engine of pooled memory.
 *
 * One engine per node and guest memory.  Everything it owns is guarded by
 * one mutex: the directory of the frames homed here, home transactions in
 * flight, requests queued behind them, and the local page states
 * (HK_PG_SHARED / HK_PG_EXCL / HK_PG_PENDING in the page-flag bytes).
 * Holding the lock, the engine only issues userfaultfd ioctls, madvise and
 * memcpy from pages it knows are present, and queues messages: it never
 * touches a missing page, so it cannot wait on itself.
 */
#ifndef HK_POOL_INTERNAL_H
#define HK_POOL_INTERNAL_H

#include <pthread.h>

#include "coh.pb-c.h"
#include "mem_internal.h"

#define POOL_WIRE_VERSION 1
/* Never-written frames granted per zero reply to another node: a
 * sequential first touch costs one round trip per 256 KiB, not per page. */
#define POOL_ZERO_BATCH 64u
#define POOL_DIR_CHUNK	512u
/* Page-flag bit private to the engine: the frame sits in the eviction FIFO. */
#define POOL_PG_INFIFO 0x40
/* Page-flag bit private to the engine: a device pinned the page here. */
#define POOL_PG_PINNED 0x80

/* Directory state of a frame at its home. */
enum pool_dir_state { DIR_UNTOUCHED = 0, DIR_SHARED, DIR_EXCL };

/* 16 bytes per homed frame, allocated per 512 frames on first use. */
struct pool_dirent {
	uint64_t sharers; /* DIR_SHARED: bit per node; the home's bit is always set */
	uint8_t state;
	uint8_t owner; /* DIR_EXCL */
	uint8_t busy;  /* a transaction waits on other nodes */
	uint8_t pad[5];
};

/* The last arrival of a frame, for the hold (pool_hold.c). */
#define POOL_HOLD_BITS 10
struct pool_hold {
	uint64_t frame;
	uint64_t until_ns;
};

/* A message put off until the page it would take away has been held. */
struct pool_deferred {
	struct pool_deferred *next;
	unsigned from;
	int type; /* Hk__Coh__CohType */
	uint64_t frame;
	bool exclusive;
	bool waited; /* put off because this node waits for another page */
	uint64_t due_ns;
};

/* A request the home is resolving, or one queued behind a busy frame. */
struct pool_txn {
	struct pool_txn *next;
	uint64_t frame;
	unsigned from;
	bool write;
	unsigned acks_left;	 /* invalidations not yet acknowledged */
	uint64_t waiting;	 /* nodes an answer is due from (INV_ACK, FETCH_REPLY) */
	bool have_data;		 /* data holds the frame's content */
	uint8_t data[HK_PAGE_SIZE];
};

struct hk_pool {
	struct hk_mem *mem;
	pthread_mutex_t lock;
	struct hk_pool_config cfg;
	uint64_t n_frames;
	uint64_t home_start[HK_POOL_MAX_NODES + 1]; /* node i homes [start[i], start[i+1]) */

	struct pool_dirent **dir; /* chunks over this node's home frames */
	uint64_t dir_chunks;
	struct pool_txn *active; /* busy frames' transactions */
	struct pool_txn *queued; /* requests waiting for a busy frame, FIFO */

	/* Frames not homed here, in the order they arrived: eviction victims. */
	uint64_t *fifo;
	uint64_t fifo_cap, fifo_head, fifo_len;
	uint64_t budget_pages;
	bool warned_budget;

	/* Hold (pool_hold.c): HK_POOL_HOLD_US, default 200 us. */
	uint64_t hold_ns;
	struct pool_hold holds[1u << POOL_HOLD_BITS];
	struct pool_deferred *deferred;
	pthread_t hold_thread;
	pthread_cond_t hold_cv;
	bool hold_started, hold_stop, in_deferred;
	uint64_t waits; /* this node's requests in flight (its pages marked PENDING) */

	/* Pin counts of frames a device is using (pool_pin.c), hashed. */
	struct pool_pin *pins[256];

	/* Faults sent to each home node, per vCPU (by thread id), for placement. */
	_Atomic uint32_t vcpu_tid[HK_MAX_VCPUS];
	_Atomic uint64_t vcpu_faults[HK_MAX_VCPUS][HK_POOL_MAX_NODES];

	bool trace;   /* HK_POOL_TRACE=1 */
	bool aborted; /* a node was lost: faults resolve locally, messages are ignored */
	/* A send a page depends on failed (pool_send): nothing moves any more
	 * and new faults wait; fail_report asks the thread that holds the
	 * lock to tell the transport and abort once it lets go (pool_unlock). */
	bool failed, fail_report;
	char fail_why[160];
	bool evict_warned; /* an EVICT / WRITEBACK could not leave (logged once) */
	uint8_t scratch[HK_PAGE_SIZE]; /* page copies made under the lock */
	struct hk_pool_stats st;
};

/* pool.c */
/* tid: the faulting thread (0 when unknown), to count faults per vCPU */
void hk_pool_fault(struct hk_mem *mem, uint64_t addr, bool write, bool wp, uint32_t tid);
void hk_pool_free(struct hk_mem *mem);
/* First step of destroying pooled memory: the transport stops delivering. */
void hk_pool_detach(struct hk_mem *mem);
unsigned pool_home(const struct hk_pool *p, uint64_t frame);
/* 0 or -errno.  A failed send other than EVICT / WRITEBACK (whose callers
 * keep the page instead) ends coherence: see pool_unlock. */
int pool_send(struct hk_pool *p, unsigned node, Hk__Coh__CohType type, uint64_t frame,
	      uint32_t count, bool exclusive, const void *data);
/* Release the lock; after a fatal send failure, end the guest through the
 * transport's fail hook and hk_mem_pool_abort (both without the lock). */
void pool_unlock(struct hk_pool *p);

/* pool_home.c: the directory side (lock held) */
void pool_home_request(struct hk_pool *p, unsigned from, uint64_t frame, bool write);
void pool_home_evict(struct hk_pool *p, unsigned from, uint64_t frame);
void pool_home_writeback(struct hk_pool *p, unsigned from, uint64_t frame, const uint8_t *data);
void pool_home_inv_ack(struct hk_pool *p, unsigned from, uint64_t frame);
void pool_home_fetch_reply(struct hk_pool *p, unsigned from, uint64_t frame, const uint8_t *data);
struct pool_dirent *pool_dirent(struct hk_pool *p, uint64_t frame);

/* pool_hold.c (lock held, but for start/stop) */
void pool_hold_mark(struct hk_pool *p, uint64_t frame);
/* true: the message was deferred until frame's hold ends */
bool pool_hold_defer(struct hk_pool *p, unsigned from, int type, uint64_t frame, bool exclusive);
int pool_hold_start(struct hk_pool *p, char *err, size_t errlen);
void pool_hold_stop(struct hk_pool *p);
/* A frame's last pin went: its deferred messages run now.  true: some did. */
bool pool_hold_release(struct hk_pool *p, uint64_t frame);
/* This node asked for a page (pool_request) / got its answer (pool_page.c). */
void pool_hold_wait(struct hk_pool *p);
void pool_hold_answered(struct hk_pool *p);
/* pool.c: run a deferred message */
void pool_run_deferred(struct hk_pool *p, unsigned from, int type, uint64_t frame,
		       bool exclusive);

/* pool_page.c: this node's copies (lock held) */
void pool_page_install(struct hk_pool *p, uint64_t frame, const uint8_t *data, bool exclusive);
void pool_page_zero(struct hk_pool *p, uint64_t frame, uint64_t count);
void pool_page_upgrade(struct hk_pool *p, uint64_t frame);
void pool_page_drop(struct hk_pool *p, uint64_t frame);
void pool_page_protect(struct hk_pool *p, uint64_t frame);
const uint8_t *pool_page_copy(struct hk_pool *p, uint64_t frame);
void pool_page_wake(struct hk_pool *p, uint64_t frame);
void pool_evict(struct hk_pool *p);

/* pool_pin.c (lock held, but for free) */
bool pool_pinned(struct hk_pool *p, uint64_t frame);
void pool_pin_free(struct hk_pool *p);

#endif
