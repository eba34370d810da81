/*
 * hyperkernel/ public contract: one guest machine on this node.
 *
 * A guest is a KVM VM whose RAM is a single anonymous mapping managed by
 * userfaultfd: every missing page is resolved by the hyper-kernel (today
 * zero-filled in windows; later issues fetch pages from other nodes or
 * restore them from disk through the same path).  Guests boot through
 * the PVH convention; see docs/boot-abi.md.
 *
 * Callers (node/, tests) include only this header.
 */
#ifndef HK_HYPERKERNEL_H
#define HK_HYPERKERNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HK_PAGE_SIZE 4096ull
#define HK_MAX_VCPUS 64

/* Guest-physical layout (docs/boot-abi.md). */
#define HK_GPA_BOOT_GDT     0x5000ull
#define HK_GPA_START_INFO   0x6000ull
#define HK_GPA_MEMMAP       0x6040ull
#define HK_GPA_CMDLINE      0x7000ull
#define HK_CMDLINE_MAX      4096u
#define HK_GPA_LEGACY_HOLE  0xa0000ull
#define HK_GPA_KERNEL_MIN   0x100000ull
#define HK_GPA_MMIO_HOLE    0xc0000000ull /* 3 GiB: start of the device hole */
#define HK_GPA_HIGH_RAM     0x100000000ull
#define HK_MEM_MIN          (64ull << 20)
#define HK_MEM_ALIGN        (2ull << 20)
#define HK_MEM_MAX          (64ull << 40) /* 64 TiB: far below 48-bit GPA limits */

/* Bytes zero-filled per missing-page fault: one uffd round trip costs
 * ~60 us here against ~4 us for an ordinary first touch, so never-written
 * memory is resolved in windows, not page by page (ARCHITECTURE.md). */
#define HK_FAULT_WINDOW_DEFAULT (1ull << 20)

/* CLOCK_MONOTONIC in nanoseconds: every timing in hyperkernel uses it. */
uint64_t hk_now_ns(void);

/* ---- guest memory ------------------------------------------------------ */

struct hk_mem;

/* See hk_mem_set_wp_hook(). */
typedef void (*hk_wp_hook_fn)(void *ctx, uint64_t gpa, uint8_t flags);

struct hk_mem_stats {
	uint64_t resident_pages; /* pages placed by the fault handler */
	uint64_t faults;         /* missing-page events resolved */
	uint64_t fault_races;    /* events for pages already present (woken) */
	uint64_t fault_ns;       /* time spent resolving */
	uint64_t wp_faults;      /* first writes to write-protected pages */
	/* KVM dirty-log tracking (wtrack_kvm.c); 0 with uffd */
	uint64_t harvests;     /* dirty-log reads */
	uint64_t false_alarms; /* pages KVM called dirty whose bytes had not changed */
};

/*
 * Reserve size bytes of guest RAM (a multiple of HK_MEM_ALIGN, between
 * HK_MEM_MIN and HK_MEM_MAX), register it with userfaultfd and start the
 * fault thread.  window: bytes resolved per fault (power of two between
 * 4 KiB and 2 MiB), 0 for the default.  Returns 0 or -errno, with a line in err.
 */
int hk_mem_create(uint64_t size, uint64_t window, struct hk_mem **out, char *err, size_t errlen);
void hk_mem_destroy(struct hk_mem *mem);

uint64_t hk_mem_size(const struct hk_mem *mem);
/* Host address of [gpa, gpa+len) if the whole range is guest RAM, else NULL.
 * Every guest-supplied address goes through this check. */
void *hk_mem_gpa(const struct hk_mem *mem, uint64_t gpa, uint64_t len);
/* Copy into / out of guest RAM; -EFAULT unless the range is RAM. */
int hk_mem_write(struct hk_mem *mem, uint64_t gpa, const void *src, uint64_t len);
int hk_mem_read(const struct hk_mem *mem, uint64_t gpa, void *dst, uint64_t len);

/*
 * Page flags kept per 4 KiB of guest RAM (indexed by frame: the page's
 * offset in this node's guest mapping / 4 KiB).
 */
#define HK_PG_REPLICA   0x01 /* holds a storage replica; write-protected */
#define HK_PG_WRITEBACK 0x02 /* being written to disk; write-protected */
#define HK_PG_DIRTY     0x04 /* written by the guest during writeback */
/* Pooled memory (P3): this node's copy of the page.  Neither bit: invalid. */
#define HK_PG_SHARED    0x08 /* read-only copy; write-protected */
#define HK_PG_EXCL      0x10 /* the only copy, writable */
#define HK_PG_PENDING   0x20 /* a request for this page is in flight */
/* Write tracking (wtrack.c): a guest write to the page will be reported. */
#define HK_PG_TRACKED 0x40
#define HK_PG_ARMING  0x80 /* wtrack_kvm.c, under its lock only */

/* Frame of a guest-physical page, or UINT64_MAX when not RAM. */
uint64_t hk_mem_frame(const struct hk_mem *mem, uint64_t gpa);
uint8_t hk_mem_page_flags(const struct hk_mem *mem, uint64_t frame);
/* Atomically set / clear flags; returns the flags before. */
uint8_t hk_mem_page_set(struct hk_mem *mem, uint64_t frame, uint8_t flags);
uint8_t hk_mem_page_clear(struct hk_mem *mem, uint64_t frame, uint8_t flags);

/*
 * Write-protect (on) or release [gpa, gpa+len) through userfaultfd.  The
 * pages must be present.  -ENOTSUP where the kernel offers no uffd-wp.
 */
int hk_mem_protect(struct hk_mem *mem, uint64_t gpa, uint64_t len, bool on);
bool hk_mem_can_protect(const struct hk_mem *mem);

/*
 * Called on the fault thread for the first write to a write-protected
 * page, with the page's flags before the handler cleared HK_PG_REPLICA
 * and set HK_PG_DIRTY (if it was in writeback).  The page is released
 * and the writer resumed after the hook returns.
 */
void hk_mem_set_wp_hook(struct hk_mem *mem, hk_wp_hook_fn fn, void *ctx);

/*
 * Guest reboot: give back every resident page that does not hold a
 * replica (it will fault in as zeros again), keep the ones that do
 * (all go when !keep_replicas).  The guest must be stopped.  Returns the
 * number of pages kept.
 */
uint64_t hk_mem_scrub(struct hk_mem *mem, bool keep_replicas);

/*
 * How guest writes to replica pages are noticed: "uffd" (write-protect,
 * reported at the write) or "kvm-dirty-log" (reported at the next
 * harvest; see hyperkernel/wtrack.c).  hk_mem_harvest_all takes in every
 * write made so far and returns the pages that stopped being replicas;
 * call it before trusting the table from outside the device (verify).
 */
const char *hk_mem_tracking(const struct hk_mem *mem);
uint64_t hk_mem_harvest_all(struct hk_mem *mem);

/* RAM ranges in guest-physical order (at most two: below the hole, above 4 GiB). */
struct hk_mem_range {
	uint64_t gpa;
	uint64_t len;
};
unsigned hk_mem_ranges(const struct hk_mem *mem, struct hk_mem_range out[2]);
void hk_mem_get_stats(const struct hk_mem *mem, struct hk_mem_stats *st);

/* ---- pooled memory: page coherence across nodes (P3) ------------------ */

/*
 * In a cluster every node maps the whole guest RAM; a page is present on a
 * node only while that node holds a valid copy.  Each frame (offset in the
 * RAM mapping / 4 KiB) has a home node, fixed by position: node i homes a
 * contiguous run of frames proportional to its memory.  The home keeps the
 * frame's directory entry (untouched, shared by a set of nodes, or
 * exclusive to one) and resolves faults: read faults get shared read-only
 * copies, write faults exclusive ownership after every other copy was
 * invalidated and acknowledged.  docs/architecture.md has the protocol.
 */
#define HK_POOL_MAX_NODES 64
#define HK_POOL_MSG_MAX	  (HK_PAGE_SIZE + 256) /* largest message the engine sends */

struct hk_pool_transport {
	size_t size; /* sizeof(struct hk_pool_transport) */
	/*
	 * Queue msg[0..len) for node; must copy it and never block on the
	 * network.  Called with the engine's lock held, from the fault thread
	 * and from inside hk_mem_pool_deliver.  Messages from one node to
	 * another must arrive in the order sent.  Returns 0 or -errno.
	 */
	int (*send)(void *ctx, unsigned node, const void *msg, size_t len);
	/*
	 * Optional.  attach: mem is ready for hk_mem_pool_deliver (called by
	 * hk_mem_pool, before any page is touched).  detach: stop delivering
	 * to mem and wait for deliveries in progress (called first thing when
	 * mem is destroyed).
	 */
	void (*attach)(void *ctx, struct hk_mem *mem, uint64_t guest);
	void (*detach)(void *ctx, struct hk_mem *mem);
	/*
	 * Optional.  A message some vCPU's page depends on could not be sent
	 * (why: one line naming it and the peer): the pooled guest cannot go
	 * on, end it.  Called once, without the engine's lock, from the thread
	 * whose send failed, just before the engine runs hk_mem_pool_abort(mem,
	 * why) to release every waiting thread; must not wait for the engine.
	 */
	void (*fail)(void *ctx, struct hk_mem *mem, const char *why);
};

struct hk_pool_config {
	unsigned self;
	unsigned n_nodes;
	/* Bytes of guest memory each node holds at most (its budget); homes
	 * are cut in proportion to these. */
	uint64_t node_memory[HK_POOL_MAX_NODES];
	const struct hk_pool_transport *transport;
	void *ctx;
	uint64_t guest; /* boot generation; messages of another one are dropped */
};

struct hk_pool_stats {
	uint64_t resident_pages; /* pages present on this node */
	uint64_t home_pages;     /* frames homed here */
	uint64_t budget_pages;
	uint64_t remote_faults;  /* faults that needed a message to another node */
	uint64_t local_faults;   /* faults the home (this node) resolved alone */
	uint64_t invalidations;  /* copies this node dropped because another wrote */
	uint64_t invalidations_sent;
	uint64_t upgrades;       /* shared copy made exclusive without data */
	uint64_t pages_sent, pages_recv;
	uint64_t zero_pages;     /* never-written pages granted (no data moved) */
	uint64_t evictions;      /* pages given back to their home for room */
	uint64_t bad_msgs;       /* malformed or unexpected messages dropped */
	uint64_t holds;          /* requests put off while a page was held here */
	uint64_t pins;           /* device requests that pinned their pages here */
	uint64_t pin_retries;    /* pins that first had to fault a page in */
	uint64_t pin_waits;      /* deferrals of requests for pinned pages */
};

/*
 * Make mem one node's view of pooled guest memory.  Must be called before
 * any page is touched.  Returns 0 or -EINVAL (bad config) with a line in err.
 */
int hk_mem_pool(struct hk_mem *mem, const struct hk_pool_config *cfg, char *err, size_t errlen);
bool hk_mem_pooled(const struct hk_mem *mem);
/* Coherence was stopped (hk_mem_pool_abort, a failed send): the memory
 * can no longer be trusted across nodes. */
bool hk_mem_pool_stopped(struct hk_mem *mem);
/* A coherence message from node `from` (transport receive path). */
void hk_mem_pool_deliver(struct hk_mem *mem, unsigned from, const void *msg, size_t len);
/*
 * The guest is being ended (a node was lost, or it is stopped): stop
 * coherence, let every thread waiting for a page go (with zeros), resolve
 * later faults locally.  The guest's memory is no longer consistent after
 * this.  why goes into one log line.
 */
void hk_mem_pool_abort(struct hk_mem *mem, const char *why);
/* Home node of a guest-physical address, or -1 when not RAM. */
int hk_mem_pool_home(const struct hk_mem *mem, uint64_t gpa);
void hk_mem_pool_stats(const struct hk_mem *mem, struct hk_pool_stats *st);
/*
 * vCPU placement: the thread running vCPU index here (vcpu.c registers it),
 * and the faults that vCPU took on this node, by home node of the page
 * (counting only grows; callers take differences).
 */
void hk_mem_pool_vcpu_thread(struct hk_mem *mem, unsigned index, uint32_t tid);
void hk_mem_pool_vcpu_faults(const struct hk_mem *mem, unsigned index,
			     uint64_t faults[HK_POOL_MAX_NODES]);

/* ---- PVH loader ---------------------------------------------------------- */

struct hk_boot_info {
	uint64_t entry;       /* PVH 32-bit entry point */
	uint64_t image_start; /* lowest loaded byte */
	uint64_t image_end;   /* one past the highest */
};

/*
 * Validate an ELF image (in host memory, size bytes), copy its PT_LOAD
 * segments into guest RAM and write start_info, the memory map and the
 * command line.  Returns 0 or -EINVAL/-E2BIG/-EFAULT with one line in err.
 * Nothing is written to guest memory unless the whole image is valid.
 */
int hk_pvh_load(struct hk_mem *mem, const void *image, size_t size, const char *cmdline,
		struct hk_boot_info *bi, char *err, size_t errlen);
/*
 * The same checks without writing anything: fills bi.  Nodes of a pooled
 * guest other than the one that loads the kernel start their vCPUs with it.
 */
int hk_pvh_probe(struct hk_mem *mem, const void *image, size_t size, struct hk_boot_info *bi,
		 char *err, size_t errlen);

/* ---- the guest machine --------------------------------------------------- */

struct hk_vm;

typedef void (*hk_console_fn)(void *ctx, const char *buf, size_t len);

struct hk_disk;    /* storage/ */
struct hk_replica; /* storage/ */

/* A disk the guest sees as a virtio-blk device, in this order. */
struct hk_vm_disk {
	/* Opened by the caller, outlives the VM.  NULL (pooled guest): the
	 * disk is attached to another node, reached through
	 * hk_vm_config.remote. */
	struct hk_disk *disk;
	uint16_t id;          /* the disk's number in the replica table */
};

/*
 * Pooled guest: register accesses to the window of a disk another node
 * serves.  Called on the vCPU thread that made the access; blocks until
 * that node did it (hk_vm_device_access there) and, for a read, data holds
 * the answer.  Must return even if the node cannot answer (data is then
 * left all ones for a read, as on an empty bus).
 */
struct hk_vm_remote_ops {
	size_t size;
	void (*mmio)(void *ctx, unsigned slot, uint64_t off, bool write, uint8_t *data,
		     unsigned len);
};

#define HK_VM_MAX_DISKS 8

/* How guest writes to replica pages are noticed (hk_mem_tracking). */
enum hk_write_tracking {
	HK_WT_AUTO = 0, /* KVM's dirty log where it offers manual protect, else uffd */
	HK_WT_UFFD,	/* userfaultfd write-protect */
	HK_WT_KVM,	/* KVM's dirty log; refused where KVM cannot */
};

struct hk_vm_config {
	const char *kernel_path;
	const char *cmdline; /* NULL = empty; " hk.vcpus=N" is appended */
	uint64_t memory;
	unsigned vcpus;
	uint64_t fault_window; /* 0 = HK_FAULT_WINDOW_DEFAULT */
	/* Pooled guests always use uffd: coherence write-protects shared copies. */
	enum hk_write_tracking write_tracking;
	hk_console_fn console; /* serial output; may be NULL */
	void *console_ctx;
	const struct hk_vm_disk *disks;
	unsigned n_disks;
	/*
	 * The storage-replica table (outlives the VM: it is what a reboot
	 * keeps), or NULL to serve every guest read from the disk.  Needs
	 * userfaultfd write-protect; hk_vm_create refuses a table without it.
	 */
	struct hk_replica *replicas;
	uint16_t node_id; /* this node's number in the table */
	/*
	 * Bit i set: vCPU i starts parked (hk_vm_vcpu_park) at every boot.
	 * Pooled mode: each node creates every vCPU's KVM object and parks
	 * the ones placed on other nodes until their state arrives.
	 */
	uint64_t start_parked;
	/*
	 * Pooled memory (P3), or NULL for a guest on this node alone.  Only
	 * node 0 of the pool writes the kernel and boot data into guest
	 * memory; the others start their vCPUs at the same entry point.
	 */
	const struct hk_pool_config *pool;
	/* Disks with disk == NULL are forwarded here (pooled guest). */
	const struct hk_vm_remote_ops *remote;
	void *remote_ctx;
};

enum hk_vm_state {
	HK_VM_CREATED = 0,
	HK_VM_RUNNING,
	HK_VM_EXITED,  /* guest wrote to the debug-exit port */
	HK_VM_CRASHED, /* shutdown, internal error, every vCPU halted */
	HK_VM_STOPPED, /* hk_vm_stop() */
};

struct hk_vm_result {
	enum hk_vm_state state;
	int exit_status;  /* (v << 1) | 1 when EXITED */
	char reason[160]; /* one line when CRASHED or STOPPED */
	uint64_t runtime_ns;
	bool rebooting; /* stopped for a reboot: it runs again (hk_vm_reboot_prepare) */
	uint32_t boot;	/* 1 for the first boot, +1 per reboot */
};

struct hk_vm_stats {
	struct hk_mem_stats mem;
	uint64_t vcpu_exits;
	uint64_t io_exits;
	uint64_t unhandled_io; /* accesses to ports/MMIO with no device */
	uint64_t disk_reads, disk_writes;
	uint64_t bytes_from_disk;     /* guest reads that went to the disk */
	uint64_t bytes_from_replicas; /* guest reads served from replica frames */
	uint64_t bytes_written;
	uint64_t bad_requests;        /* malformed virtio requests */
};

/*
 * KVM's own counters of the current boot (KVM_GET_STATS_FD): every boot is
 * a new KVM VM with new vCPUs, so they start from zero at each boot and a
 * boot's values are what that boot did.  They stay readable after the
 * guest ended, until the next boot.  docs/hkctl.md says what each shown
 * one means.
 */
struct hk_kvm_stat {
	const char *name; /* KVM's name (pages_4k, exits, ...); valid while vm is */
	uint64_t value;
	bool vcpu; /* a vCPU stat, summed over the vCPUs (peaks: the largest) */
};

#define HK_KVM_STATS_SHOWN 24 /* most hk_vm_kvm_stats fills */

/*
 * The stats hkctl status shows, a fixed list (VM: pages_4k, pages_2m,
 * mmu_shadow_zapped, remote_tlb_flush, ...; vCPUs: exits, pf_fixed, ...)
 * of which those this kernel lacks are left out, not zeroed.  Fills
 * out[0..max) and returns how many, or -ENOTSUP with a line in why when
 * there are none (kernel without KVM_GET_STATS_FD, or no VM booted).
 * Takes no vCPU lock: safe while the guest runs.
 */
int hk_vm_kvm_stats(struct hk_vm *vm, struct hk_kvm_stat *out, unsigned max, char *why,
		    size_t whylen);
/* Every scalar stat the kernel has: the VM's, then the vCPUs' (summed).
 * 0, -ENOTSUP (none), or -errno if a read failed. */
typedef void (*hk_kvm_stat_fn)(void *ctx, const struct hk_kvm_stat *st);
int hk_vm_kvm_stats_foreach(struct hk_vm *vm, hk_kvm_stat_fn fn, void *ctx);

/* Is /dev/kvm usable here?  Fills why when not. */
bool hk_kvm_available(char *why, size_t len);

/* Create the VM, its memory and vCPUs and load the kernel; nothing runs yet. */
int hk_vm_create(const struct hk_vm_config *cfg, struct hk_vm **out, char *err, size_t errlen);
/* Start every vCPU thread. */
int hk_vm_start(struct hk_vm *vm);
/*
 * Wait until the guest ends.  timeout_ms < 0 waits forever.
 * Returns 0 with *res filled, or -ETIMEDOUT.
 */
int hk_vm_wait(struct hk_vm *vm, int timeout_ms, struct hk_vm_result *res);
/* Current state without waiting. */
void hk_vm_result(struct hk_vm *vm, struct hk_vm_result *res);
/*
 * Guest reboot: stop the vCPUs, reset every device, give back guest pages
 * that hold no replica, load the kernel again and start it.  Pages that
 * hold replicas keep them, with their entries, so the rebooted guest's
 * reads of those blocks come from memory.  *kept_pages (may be NULL)
 * tells how many.  Returns 0 or -errno with a line in err.
 */
int hk_vm_reboot(struct hk_vm *vm, uint64_t *kept_pages, char *err, size_t errlen);
/*
 * A reboot in two steps, for a pooled guest whose nodes reboot together:
 * hk_vm_reboot_prepare stops the vCPUs (hk_vm_halt), rebuilds devices and
 * vCPUs and, on the loading node, the kernel, but starts nothing;
 * hk_vm_start then runs it.  Pooled memory is kept as it is, a warm reset
 * as on real hardware (the guest must not expect zeroed RAM); *kept_pages
 * counts this node's replica pages.  On one node it scrubs like
 * hk_vm_reboot.  Refused once pooled memory was stopped (a node lost).
 */
int hk_vm_reboot_prepare(struct hk_vm *vm, uint64_t *kept_pages, char *err, size_t errlen);
/*
 * End the guest with an outcome seen elsewhere (another node of a pooled
 * guest): as if this node's vCPUs had seen it.  The first outcome wins.
 */
void hk_vm_end(struct hk_vm *vm, enum hk_vm_state state, int exit_status, const char *reason);
/* Stop every vCPU (if still running) and join its thread; idempotent.
 * Pooled memory stops too: vCPUs waiting for pages are released. */
void hk_vm_stop(struct hk_vm *vm, const char *why);
/* Stop and join every vCPU but leave pooled memory serving the other nodes
 * (a guest that ended, or a reboot: for_reboot marks the result). */
void hk_vm_halt(struct hk_vm *vm, const char *why, bool for_reboot);
/* A reboot that halted the vCPUs (for_reboot) could not finish: the guest
 * ends crashed, "reboot failed: why", no longer marked rebooting. */
void hk_vm_reboot_failed(struct hk_vm *vm, const char *why);
void hk_vm_destroy(struct hk_vm *vm);
/*
 * The node serving disk slot `slot` (its place in hk_vm_config.disks) does
 * a register access another node forwarded.  May fault pooled pages in:
 * never call it on the transport's delivery thread.  Returns 0, -ENODEV
 * (the slot is not served here) or -EINVAL (offset or width out of range).
 */
int hk_vm_device_access(struct hk_vm *vm, unsigned slot, uint64_t off, bool write, uint8_t *data,
			unsigned len);
void hk_vm_get_stats(struct hk_vm *vm, struct hk_vm_stats *st);
unsigned hk_vm_vcpus(const struct hk_vm *vm);
/* Guest RAM, for device-side tools (replica verify). */
struct hk_mem *hk_vm_mem(struct hk_vm *vm);
/* The guest's TSC rate in kHz (KVM_GET_TSC_KHZ), 0 if unknown. */
uint64_t hk_vm_tsc_khz(struct hk_vm *vm);
/* Use this table (or none) from the next boot or reboot on. */
void hk_vm_set_replicas(struct hk_vm *vm, struct hk_replica *replicas);
uint64_t hk_vm_memory(const struct hk_vm *vm);

/* ---- vCPU migration ------------------------------------------------------ */

/*
 * Stop vCPU index at its next exit (pending port I/O and MMIO completed)
 * and keep its thread waiting, without destroying it.  Blocks until it is
 * parked: a vCPU waiting on a missing page parks once the page arrives.
 * A parked vCPU does not count as halted: the guest goes on without it.
 * Before hk_vm_start the vCPU simply starts parked.  Never call it from a
 * vCPU thread (a device model): it would wait for itself.  Returns 0, -EINVAL
 * (no such vCPU) or -ESRCH (its thread has ended: halted or guest over;
 * it is stopped all the same).
 */
int hk_vm_vcpu_park(struct hk_vm *vm, unsigned index);
/* Let a parked vCPU run again.  0, -EINVAL, or -ESRCH (its thread ended). */
int hk_vm_vcpu_resume(struct hk_vm *vm, unsigned index);

/* Format version of the state messages hk_vm_vcpu_save writes (proto/vcpu.proto). */
#define HK_VCPU_STATE_VERSION 1
/* Most MSRs a state message may carry; hk moves about 40. */
#define HK_VCPU_STATE_MAX_MSRS 64

/*
 * The whole architectural state of a stopped (parked or never started)
 * vCPU as a serialized hk.vcpu.VcpuState: registers, segment and control
 * registers, XSAVE area, XCRs, debug registers, pending events, the MSRs
 * hk migrates and the guest TSC.  *buf is malloc'd (the caller frees it).
 * Returns 0, or -EBUSY (vCPU running), -EINVAL, -errno with a line in err.
 */
int hk_vm_vcpu_save(struct hk_vm *vm, unsigned index, uint8_t **buf, size_t *len, char *err,
		    size_t errlen);
/*
 * Load a state saved by hk_vm_vcpu_save (on this node or another) into
 * stopped vCPU index of vm, whose guest memory must already hold the
 * guest's pages.  Every field is checked first: a malformed message gets
 * -EINVAL and a line in err and leaves the vCPU as it was; if KVM refuses
 * a part of a well-formed one, the parts already written are put back.
 * The guest TSC continues from the saved value plus the real time that
 * passed since, so it never goes backwards.  Resume with hk_vm_vcpu_resume.
 */
int hk_vm_vcpu_restore(struct hk_vm *vm, unsigned index, const uint8_t *buf, size_t len,
		       char *err, size_t errlen);

#endif
