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

/* RAM ranges in guest-physical order (at most two: below the hole, above 4 GiB). */
struct hk_mem_range {
	uint64_t gpa;
	uint64_t len;
};
unsigned hk_mem_ranges(const struct hk_mem *mem, struct hk_mem_range out[2]);
void hk_mem_get_stats(const struct hk_mem *mem, struct hk_mem_stats *st);

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

/* ---- the guest machine --------------------------------------------------- */

struct hk_vm;

typedef void (*hk_console_fn)(void *ctx, const char *buf, size_t len);

struct hk_disk;    /* storage/ */
struct hk_replica; /* storage/ */

/* A disk the guest sees as a virtio-blk device, in this order. */
struct hk_vm_disk {
	struct hk_disk *disk;        /* opened by the caller, outlives the VM */
	uint16_t id;          /* the disk's number in the replica table */
};

#define HK_VM_MAX_DISKS 8

struct hk_vm_config {
	const char *kernel_path;
	const char *cmdline; /* NULL = empty; " hk.vcpus=N" is appended */
	uint64_t memory;
	unsigned vcpus;
	uint64_t fault_window; /* 0 = HK_FAULT_WINDOW_DEFAULT */
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
/* Stop every vCPU (if still running) and join its thread; idempotent. */
void hk_vm_stop(struct hk_vm *vm, const char *why);
void hk_vm_destroy(struct hk_vm *vm);
void hk_vm_get_stats(struct hk_vm *vm, struct hk_vm_stats *st);
unsigned hk_vm_vcpus(const struct hk_vm *vm);
/* Guest RAM, for device-side tools (replica verify). */
struct hk_mem *hk_vm_mem(struct hk_vm *vm);
/* The guest's TSC rate in kHz (KVM_GET_TSC_KHZ), 0 if unknown. */
uint64_t hk_vm_tsc_khz(struct hk_vm *vm);
/* Use this table (or none) from the next boot or reboot on. */
void hk_vm_set_replicas(struct hk_vm *vm, struct hk_replica *replicas);
uint64_t hk_vm_memory(const struct hk_vm *vm);

#endif
