/* Internal to hyperkernel/: the VM, vCPU and device structures. */
#ifndef HK_INTERNAL_H
#define HK_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "hyperkernel.h"
#include "kvm_compat.h"

struct hk_vm;
struct hk_blk;
struct hk_kvm_stats;

/*
 * A port-I/O device.  Devices are tables, not if-chains: the I/O bus finds
 * the one whose [base, base+len) covers the port and calls it.  size lets
 * the table grow without breaking older devices.
 */
struct hk_pio_ops {
	size_t size;
	const char *name;
	uint16_t base;
	uint16_t len;
	/* offset is port - base; width is 1, 2 or 4 bytes */
	uint32_t (*read)(struct hk_vm *vm, void *dev, uint16_t offset, unsigned width);
	void (*write)(struct hk_vm *vm, void *dev, uint16_t offset, unsigned width, uint32_t val);
};

#define HK_MAX_PIO_DEVICES 8

/* An MMIO device: the bus hands it offsets inside its window. */
struct hk_mmio_ops {
	size_t size;
	const char *name;
	void (*read)(struct hk_vm *vm, void *dev, uint64_t offset, void *data, unsigned len);
	void (*write)(struct hk_vm *vm, void *dev, uint64_t offset, const void *data, unsigned len);
};

#define HK_MAX_MMIO_DEVICES 16

struct hk_mmio_dev {
	const struct hk_mmio_ops *ops;
	void *state;
	uint64_t base, len;
};

struct hk_pio_dev {
	const struct hk_pio_ops *ops;
	void *state;
};

extern const struct hk_pio_ops hk_serial_ops;
extern const struct hk_pio_ops hk_debug_exit_ops;
extern const struct hk_mmio_ops hk_service_ops; /* at HK_SERVICE_PAGE_GPA */

/* A device window another node serves (dev_remote.c). */
struct hk_remote_win {
	unsigned slot;
};

/* 16550 register file; one per VM. */
struct hk_serial {
	pthread_mutex_t lock;
	uint8_t ier, lcr, mcr, scr, dll, dlm;
};

struct hk_vcpu {
	struct hk_vm *vm;
	unsigned index;
	int fd;
	struct kvm_run *run;
	size_t run_size;
	pthread_t thread;
	bool thread_started;
	_Atomic uint64_t exits;
	_Atomic uint64_t io_exits;
	struct hk_kvm_stats *kstats; /* KVM's counters of this vCPU, NULL without */
	/*
	 * Parking (vcpu.c), under vm->lock: park_req asks the thread to stop
	 * at its next exit and wait on vm->park_cv; parked says it does;
	 * running is true from hk_vcpu_start until the thread returns.
	 */
	_Atomic bool park_req;
	bool parked;
	bool running;
	/* Set by the service page's park register on this vCPU's own thread:
	 * the vCPU ends at the end of the current exit, as after a halt. */
	bool stop_self;
};

struct hk_vm {
	int kvm_fd;
	int vm_fd;
	struct kvm_cpuid2 *cpuid; /* KVM_GET_SUPPORTED_CPUID, once */
	struct hk_mem *mem;
	unsigned n_vcpus;
	struct hk_vcpu vcpus[HK_MAX_VCPUS];
	struct hk_boot_info boot;

	struct hk_pio_dev pio[HK_MAX_PIO_DEVICES];
	unsigned n_pio;
	struct hk_mmio_dev mmio[HK_MAX_MMIO_DEVICES];
	unsigned n_mmio;
	struct hk_serial serial;

	hk_console_fn console;
	void *console_ctx;

	uint8_t *image; /* the kernel file, kept for reboots */
	size_t image_len;
	char *user_cmdline;
	struct hk_vm_disk disks[HK_VM_MAX_DISKS];
	unsigned n_disks;
	struct hk_blk *blks[HK_VM_MAX_DISKS]; /* NULL: served by another node */
	unsigned n_blks;		      /* slots booted */
	uint64_t dev_base[HK_VM_MAX_DISKS];  /* each slot's MMIO window */
	struct hk_remote_win remote_win[HK_VM_MAX_DISKS];
	const struct hk_vm_remote_ops *remote;
	void *remote_ctx;
	struct hk_replica *replicas; /* for devices at the next boot */
	_Atomic(struct hk_replica *) wp_table; /* what the write-protect hook drops from */
	uint16_t node_id;
	enum hk_write_tracking write_tracking; /* as configured; see vm_setup_tracking */
	bool loader; /* writes the kernel into guest memory (not pooled, or node 0) */

	/* Guest lifecycle, guarded by lock; done is broadcast on every change. */
	pthread_mutex_t lock;
	pthread_mutex_t join_lock; /* one hk_vm_stop joins the vCPU threads at a time */
	/* Written while a reboot rebuilds devices; read by accesses forwarded
	 * from other nodes (hk_vm_device_access), which no vCPU stop holds off. */
	pthread_rwlock_t boot_lock;
	pthread_cond_t done;
	struct hk_vm_result result;
	unsigned halted_vcpus;
	uint64_t start_ns;
	_Atomic bool stopping;
	pthread_cond_t park_cv; /* a vCPU parked or unparked; broadcast */
	uint64_t start_parked;	/* hk_vm_config.start_parked, applied at every boot */

	_Atomic uint64_t unhandled_io;
	_Atomic uint64_t tsc_khz; /* guest TSC rate, read at boot */
	uint32_t boots;		  /* vm_boot calls (under lock): 1 after creation */

	/* KVM's counters of this boot's VM (kvm_stats.c); NULL, with why
	 * in kstats_why, when the kernel offers none. */
	struct hk_kvm_stats *kstats;
	char kstats_why[128];
};

/* vm.c */
/* End the guest with this outcome (first caller wins) and kick every vCPU. */
void hk_vm_finish(struct hk_vm *vm, enum hk_vm_state state, int exit_status, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* dev_remote.c: register the window of disk slot `slot`, served elsewhere. */
int hk_dev_remote_add(struct hk_vm *vm, unsigned slot, uint64_t *base);

/* iobus.c */
int hk_pio_register(struct hk_vm *vm, const struct hk_pio_ops *ops, void *state);
void hk_pio_access(struct hk_vm *vm, uint16_t port, bool write, unsigned width, uint8_t *data);
int hk_mmio_register(struct hk_vm *vm, uint64_t base, uint64_t len, const struct hk_mmio_ops *ops,
		     void *state);
void hk_mmio_access(struct hk_vm *vm, uint64_t addr, bool write, uint8_t *data, unsigned len);

/* x86_boot.c: architectural state at the PVH entry (docs/boot-abi.md). */
int hk_x86_load_cpuid(struct hk_vm *vm, char *err, size_t errlen);
unsigned hk_x86_phys_bits(const struct hk_vm *vm);
int hk_x86_setup_cpuid(struct hk_vm *vm, struct hk_vcpu *vcpu, char *err, size_t errlen);
int hk_x86_setup_pvh_state(struct hk_vm *vm, struct hk_vcpu *vcpu, char *err, size_t errlen);
int hk_x86_write_boot_gdt(struct hk_mem *mem);

/* vcpu.c */
int hk_vcpu_init(struct hk_vm *vm, unsigned index, char *err, size_t errlen);
/* The vCPU whose thread this is, or NULL (device models called elsewhere). */
struct hk_vcpu *hk_vcpu_self(void);
int hk_vcpu_start(struct hk_vcpu *vcpu);
void hk_vcpu_kick(struct hk_vcpu *vcpu);
void hk_vcpu_join(struct hk_vcpu *vcpu);
void hk_vcpu_destroy(struct hk_vcpu *vcpu);
/* Parked, or no thread runs it: its state may be read and written. */
bool hk_vcpu_is_stopped(struct hk_vcpu *vcpu);

/*
 * kvm_stats.c: one stats fd of a VM or vCPU (kvm_obj_fd), its layout read
 * once.  -ENOTSUP (and a line in err) when the kernel has no
 * KVM_GET_STATS_FD.  Histograms are skipped: only scalars are read.
 */
typedef void (*hk_kvm_stats_fn)(void *ctx, const char *name, uint32_t flags, uint64_t value);
int hk_kvm_stats_open(int kvm_obj_fd, struct hk_kvm_stats **out, char *err, size_t errlen);
void hk_kvm_stats_close(struct hk_kvm_stats *s);
/* The value named now; -ENOENT when this kernel has no such stat.  flags
 * (may be NULL): its KVM_STATS_TYPE_* and unit. */
int hk_kvm_stats_get(const struct hk_kvm_stats *s, const char *name, uint64_t *value,
		     uint32_t *flags);
int hk_kvm_stats_foreach(const struct hk_kvm_stats *s, hk_kvm_stats_fn fn, void *ctx);
/* At every boot, once the vCPUs exist and before any runs (the ioctl on a
 * vCPU waits for KVM_RUN to return); closed first thing by vm_unboot. */
void hk_vm_kvm_stats_open(struct hk_vm *vm);
void hk_vm_kvm_stats_close(struct hk_vm *vm);

/* mem.c: KVM memory slots for every RAM range. */
int hk_mem_attach_kvm(struct hk_mem *mem, int vm_fd, char *err, size_t errlen);

#endif
