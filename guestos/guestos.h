/*
 * guestos internal header: constants shared with the assembly files and the
 * declarations every C file of the guest needs. guestos is freestanding: no
 * libc header beyond what gcc itself ships (stdint, stddef, stdbool, stdarg).
 *
 * Privilege split (see docs/boot-abi.md and ARCHITECTURE.md section 3): on
 * kvm_pvm ring-0 guest code is emulated ~4000x slower than ring 3, so ring 0
 * only builds the CPU tables and drops to ring 3 (IOPL=0). Everything else
 * (command line, console output, workloads, the exit) runs in ring 3, which
 * reaches its host through host.c: hyperkernel's service page (MMIO), or
 * under QEMU a syscall into ring 0, never ring-3 port I/O or `int $n`.
 */
#ifndef GUESTOS_H
#define GUESTOS_H

/* ---- constants usable from assembly ---------------------------------- */

#define GUESTOS_MAX_VCPUS    64
#define GUESTOS_KSTACK_SHIFT 13 /* 8 KiB ring-0 stack per vCPU (trap frames only) */
#define GUESTOS_KSTACK_SIZE  (1 << GUESTOS_KSTACK_SHIFT)
#define GUESTOS_USTACK_SIZE  16384 /* ring-3 stack per vCPU (workloads) */

/* EDI at entry when hyperkernel started us ("HKVC"); ESI is then the index. */
#define HK_BOOT_MAGIC 0x43564b48

/* GDT layout (boot.S builds it). TSS descriptors are 16 bytes, one per vCPU. */
#define SEL_KCODE      0x08
#define SEL_KDATA      0x10
#define SEL_UDATA      0x18
#define SEL_UCODE      0x20
#define SEL_TSS0       0x28
#define GDT_TSS0_INDEX 5
#define GDT_ENTRIES    (GDT_TSS0_INDEX + 2 * GUESTOS_MAX_VCPUS)

/* RFLAGS for ring-3 tasks: IOPL=0 (port I/O faults), IF=0, reserved bit 1. */
#define USER_RFLAGS 0x0002

/* Where sipi.S's trampoline runs under QEMU: page-aligned, below 1 MiB. */
#define SIPI_TRAMPOLINE 0x8000

#define NR_EXCEPTIONS 32

#ifndef __ASSEMBLER__

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Everything the boot page tables map, identity, 2 MiB pages (boot.S). */
#define GUESTOS_MAPPED_LIMIT (64ULL << 30)

#define GUESTOS_PAGE_SIZE 4096ULL

/* Exit values (host_exit); hkd and QEMU report (v << 1) | 1. */
enum guestos_exit {
	GUESTOS_EXIT_OK = 0,
	GUESTOS_EXIT_WORKLOAD = 1,
	GUESTOS_EXIT_CMDLINE = 2,
	GUESTOS_EXIT_EXCEPTION = 3,
};

#define NORETURN	  __attribute__((noreturn))
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#define CACHELINE_ALIGNED __attribute__((aligned(64)))
/* With a page-sized type: nothing else shares its page (see smp.c). */
#define PAGE_ALONE __attribute__((aligned(4096)))

/* ---- linker script and assembly symbols ------------------------------- */

extern char __guestos_start[], __guestos_end[];
extern uint64_t guestos_gdt[GDT_ENTRIES];
extern const uint64_t guestos_trap_stubs[NR_EXCEPTIONS];
void guestos_syscall_entry(void);
NORETURN void enter_user(void (*entry)(unsigned), uint64_t rsp, unsigned arg);

/* ---- per-vCPU memory (smp.c) ------------------------------------------ */

extern uint8_t guestos_kstacks[GUESTOS_MAX_VCPUS][GUESTOS_KSTACK_SIZE];

/* ---- ring 0: cpu.c, trap.c, smp.c ------------------------------------- */

void cpu_load_tss(unsigned cpu);
void idt_init(void);
void idt_load(void);
struct trap_frame;
NORETURN void guestos_trap(struct trap_frame *tf);
NORETURN void guestos_kmain(unsigned cpu, unsigned hyperkernel, uint32_t start_info);

/* ---- small helpers usable in both rings -------------------------------- */

static inline void cpu_relax(void)
{
	__asm__ volatile("pause" ::: "memory");
}

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

/* ---- host.c: console, exit and park from either ring ------------------- */

/* host_syscall operations (ring 3 -> ring 0, ports backend only). */
enum guestos_sys {
	GUESTOS_SYS_CONSOLE = 0, /* a = text, b = length */
	GUESTOS_SYS_EXIT = 1,	 /* a = exit value */
	GUESTOS_SYS_PARK = 2,
};

/* Ring 0, vCPU 0, before the others leave boot: picks the backend. */
void host_init(bool hyperkernel);
/* Ring 0, every vCPU: per-CPU set-up the backend needs (syscall MSRs). */
void host_init_cpu(void);
const char *host_name(void);
void host_console_write(const char *s, size_t n);
/* End the guest with v (status (v << 1) | 1). */
NORETURN void host_exit(unsigned v);
/* Stop this vCPU for good. */
NORETURN void host_park(void);
/* entry.S: `syscall` with op, a, b in rdi, rsi, rdx (SysV clobbers). */
void host_syscall(uint64_t op, uint64_t a, uint64_t b);

/* ---- lib.c: the few string functions a freestanding build still needs -- */

void *memset(void *dst, int c, size_t n);
void *memcpy(void *dst, const void *src, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);

/* ---- console.c, printf.c (ring 3; trap.c uses the unlocked variant) ---- */

void console_write(const char *s, size_t n);
void console_write_unlocked(const char *s, size_t n);
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap) PRINTF_LIKE(3, 0);
int snprintf(char *buf, size_t size, const char *fmt, ...) PRINTF_LIKE(3, 4);
int printk(const char *fmt, ...) PRINTF_LIKE(1, 2);

/* ---- bootinfo.c: what start_info tells us (ring 3, read by vCPU 0) ----- */

struct mem_range {
	uint64_t base;
	uint64_t len;
};

#define BOOTINFO_MAX_RANGES 32

struct bootinfo {
	const char *cmdline; /* copy, NUL-terminated */
	uint64_t ram_bytes;  /* all type-1 RAM in the memory map */
	unsigned nr_usable;  /* RAM above the kernel image, mapped, 4 KiB aligned */
	struct mem_range usable[BOOTINFO_MAX_RANGES];
	bool has_memmap;
};

extern struct bootinfo guestos_bootinfo;
extern uint32_t guestos_start_info_paddr;
extern unsigned guestos_hyperkernel;
int bootinfo_read(struct bootinfo *bi, uint32_t start_info_paddr);

/* ---- cmdline.c -------------------------------------------------------- */

#define CMDLINE_MAX_ARGS 64
#define VIRTIO_MMIO_MAX	 16 /* virtio_mmio.device= words kept */

/* One virtio_mmio.device=<size>@<base>:<irq>[:<id>] word (Linux's syntax). */
struct virtio_mmio_window {
	uint64_t base;
	uint64_t size; /* 512 (QEMU microvm) or 4096 (hyperkernel) */
	uint32_t irq;  /* unused: guestos has no interrupts and polls */
};

struct cmdline {
	unsigned argc; /* argv[0] is the workload; hk.*, guestos.*, virtio_mmio.* words are not */
	const char *argv[CMDLINE_MAX_ARGS];
	unsigned vcpus; /* hk.vcpus, 0 when absent */
	unsigned sipi;	/* guestos.sipi, 0 when absent */
	unsigned nr_virtio;
	struct virtio_mmio_window virtio[VIRTIO_MMIO_MAX]; /* in command-line order */
};

int cmdline_parse(struct cmdline *cl, const char *text);
const char *cmdline_value(const char *arg, const char *key);
int parse_u64(const char *s, uint64_t *out);
int parse_size(const char *s, uint64_t *out);

/* ---- sipi.c: starting processors ourselves under QEMU ------------------ */

int sipi_start_aps(unsigned nr, uint32_t start_info);

/* ---- smp.c: running one workload on every vCPU (ring 3) ---------------- */

/*
 * A workload is SPMD: vCPU 0 calls parse() alone, then every vCPU calls
 * run(cpu, nr) and vCPU 0 turns run()'s return value into the exit value.
 * run() must not return on vCPU 0 before the others are done with shared
 * state (end with smp_barrier()).
 */
struct workload {
	const char *name;
	const char *usage;
	int (*parse)(const struct cmdline *cl); /* 0 or -1 after printing why */
	enum guestos_exit (*run)(unsigned cpu, unsigned nr);
};

extern const struct workload workload_memtest;
extern const struct workload workload_hello;
extern const struct workload workload_fault;
extern const struct workload workload_kvdb;
extern const struct workload workload_blkstress;
extern const struct workload workload_blkbad;
extern const struct workload workload_blkbench;
extern const struct workload workload_litmus;
extern const struct workload workload_psort;

void smp_barrier(void);
/* The vCPUs the workload will run on (hk.vcpus or guestos.sipi), for parse(). */
unsigned smp_nr_vcpus(const struct cmdline *cl);
NORETURN void task_main(unsigned cpu);

/* ---- virtio_mmio.c: virtio 1.x MMIO transport (version 2), split rings --- */

/*
 * Everything here runs in ring 3: the device windows lie in the identity
 * map with the U bit (boot.S maps the 3-4 GiB hole uncached), so a
 * register access is one MMIO exit and nothing else; ring memory is plain
 * RAM the device reads and writes (guest-virtual = guest-physical). No
 * interrupts: drivers poll the used ring, which costs no exit.
 */
#define VIRTQ_MAX_SIZE 256

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags; /* VIRTQ_DESC_F_* */
	uint16_t next;
};

#define VIRTQ_DESC_F_NEXT  1
#define VIRTQ_DESC_F_WRITE 2 /* device writes this buffer */

struct virtq_avail {
	uint16_t flags; /* VIRTQ_AVAIL_F_NO_INTERRUPT without EVENT_IDX, else 0 */
	uint16_t idx;
	uint16_t ring[VIRTQ_MAX_SIZE + 1]; /* ring[size] is used_event */
};

struct virtq_used_elem {
	uint32_t id;  /* head descriptor of the finished chain */
	uint32_t len; /* bytes the device wrote into the chain */
};

struct virtq_used {
	uint16_t flags;
	uint16_t idx;
	struct virtq_used_elem ring[VIRTQ_MAX_SIZE];
	uint16_t tail; /* room for avail_event, the u16 right after ring[size - 1] */
};

/* The memory of one split virtqueue of up to VIRTQ_MAX_SIZE entries. */
struct virtq_mem {
	struct virtq_desc desc[VIRTQ_MAX_SIZE] __attribute__((aligned(4096)));
	struct virtq_avail avail __attribute__((aligned(64)));
	struct virtq_used used __attribute__((aligned(4096)));
};

struct virtq {
	struct virtq_mem *mem;
	uint16_t size;	     /* a power of two, <= VIRTQ_MAX_SIZE */
	uint16_t avail_idx;  /* our copy of avail.idx (the next entry to publish) */
	uint16_t kicked_idx; /* avail.idx when we last decided whether to notify */
	uint16_t last_used;  /* used entries consumed */
	bool event_idx;	     /* VIRTIO_F_EVENT_IDX negotiated */
	uint32_t index;	     /* queue number */
	uint64_t notifies;   /* QueueNotify writes (one exit each) */
	uint64_t published;  /* chains made available */
};

struct virtio_mmio {
	volatile uint8_t *regs;
	uint64_t base;
	uint64_t size;
	uint32_t version;
	uint32_t device_id; /* 0: an empty transport */
	uint32_t vendor_id;
	uint64_t features; /* negotiated */
};

#define VIRTIO_F_RING_EVENT_IDX 29
#define VIRTIO_F_VERSION_1	32

int virtio_mmio_probe(struct virtio_mmio *vm, const struct virtio_mmio_window *w);
int virtio_mmio_negotiate(struct virtio_mmio *vm, uint64_t wanted, uint64_t required);
int virtio_mmio_queue_setup(struct virtio_mmio *vm, struct virtq *vq, uint32_t index,
			    struct virtq_mem *mem, unsigned max_size);
void virtio_mmio_driver_ok(struct virtio_mmio *vm);
void virtio_mmio_fail(struct virtio_mmio *vm);
uint32_t virtio_mmio_status(const struct virtio_mmio *vm);
uint32_t virtio_mmio_config32(const struct virtio_mmio *vm, unsigned off);
uint64_t virtio_mmio_config64(const struct virtio_mmio *vm, unsigned off);
void virtq_publish(struct virtq *vq, uint16_t head);
void virtq_kick(struct virtio_mmio *vm, struct virtq *vq);
int virtq_next_used(struct virtq *vq, struct virtq_used_elem *e);

/* ---- virtio_blk.c: virtio-blk over virtio_mmio, polled, batched -------- */

#define VBLK_SECTOR_SIZE 512
#define VBLK_MAX_DISKS	 4

enum vblk_type {
	VBLK_T_IN = 0,
	VBLK_T_OUT = 1,
	VBLK_T_FLUSH = 4,
	VBLK_T_GET_ID = 8,
};

/* Status bytes; anything else (or a byte the device never wrote) is an error too. */
enum vblk_status {
	VBLK_S_OK = 0,
	VBLK_S_IOERR = 1,
	VBLK_S_UNSUPP = 2,
};

#define VBLK_ID_BYTES 20

struct vblk_info {
	uint64_t base;	      /* MMIO window */
	uint64_t capacity;    /* bytes */
	uint32_t blk_size;    /* logical block: requests are multiples of it */
	uint32_t max_request; /* bytes per request the driver can express */
	unsigned queue_size;
	unsigned slots; /* requests in flight at most */
	bool ro, flush, event_idx;
	uint64_t features; /* negotiated */
};

struct vblk_done {
	uint64_t cookie;
	unsigned status; /* enum vblk_status, or the bad byte the device left */
	enum vblk_type type;
	uint64_t sector;
	uint32_t len;
};

struct vblk;
struct vblk *vblk_open(const struct virtio_mmio_window *w, unsigned nr_windows, unsigned disk);
const struct vblk_info *vblk_info(const struct vblk *d);
bool vblk_can_submit(const struct vblk *d);
unsigned vblk_inflight(const struct vblk *d);
int vblk_submit(struct vblk *d, enum vblk_type type, uint64_t sector, void *buf, uint32_t len,
		uint64_t cookie);
void vblk_kick(struct vblk *d);
int vblk_poll(struct vblk *d, struct vblk_done *done, unsigned max);
int vblk_sync(struct vblk *d, enum vblk_type type, uint64_t sector, void *buf, uint32_t len);
uint64_t vblk_notifies(const struct vblk *d);
uint64_t vblk_requests(const struct vblk *d);
const char *vblk_status_name(unsigned status);

/*
 * For tests only (blkbad, blkstress): requests vblk_submit() would refuse
 * (sub-block transfers, scattered buffers, malformed chains), sent as
 * given; vblk_poll() returns their completions like any other. A device
 * in NEEDS_RESET (vblk_device_status() & 0x40) answers nothing until
 * vblk_reset().
 */
#define VBLK_RAW_MAX_SEGS     32
#define VBLK_RAW_HDR_WRITABLE 1u /* header descriptor marked device-writable */
#define VBLK_RAW_HDR_SHORT    2u /* header descriptor of 8 bytes instead of 16 */
#define VBLK_STATUS_NEEDS_RESET 0x40u

struct vblk_seg {
	uint64_t addr; /* guest-physical, unchecked */
	uint32_t len;
	bool dev_writes; /* VIRTQ_DESC_F_WRITE */
};

bool vblk_can_submit_raw(const struct vblk *d, unsigned nseg);
int vblk_submit_raw(struct vblk *d, uint32_t type, uint64_t sector, const struct vblk_seg *seg,
		    unsigned nseg, unsigned flags, uint64_t cookie);
uint32_t vblk_device_status(const struct vblk *d);
int vblk_reset(struct vblk *d);

/* ---- blktest.c: helpers shared by the disk workloads (blktest.c, blkbench.c) -- */

/* disk=N and the virtio windows of the command line, for vblk_open(). */
struct blk_target {
	uint64_t disk;
	unsigned nr_windows;
	struct virtio_mmio_window windows[VIRTIO_MMIO_MAX];
};

void blk_target_init(struct blk_target *t, const struct cmdline *cl);
/* Opens the disk and prints one line describing it; NULL after one line. */
struct vblk *blk_target_open(const struct blk_target *t, const char *who);
/*
 * bytes of RAM in one usable range, at the lowest 2 MiB boundary >= 64 MiB
 * (above any guestos image; the same address on every boot), or NULL.
 */
void *blk_ram_place(uint64_t bytes);
uint64_t blk_mix64(uint64_t z);

#endif /* !__ASSEMBLER__ */
#endif /* GUESTOS_H */
