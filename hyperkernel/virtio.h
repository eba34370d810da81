/*
 * Internal to hyperkernel/: virtio 1.1 over MMIO with split virtqueues.
 *
 * virtio_mmio.c implements the transport (register file, feature
 * negotiation, queue set-up and validation); virtqueue.c walks descriptor
 * chains and returns used buffers; a device (virtio_blk.c) plugs in with
 * a struct hk_virtio_ops table.  No interrupts exist (no irqchip): drivers
 * poll the used ring, so the device never raises one.
 */
#ifndef HK_VIRTIO_H
#define HK_VIRTIO_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

struct hk_vm;
struct hk_mem;

#define HK_VIRTIO_MMIO_BASE  0xd0000000ull /* first window, in the MMIO hole */
#define HK_VIRTIO_MMIO_SIZE  0x1000ull
#define HK_VIRTIO_MAX_DEVICES 8
#define HK_VQ_MAX_SIZE 256
#define HK_VQ_MAX_QUEUES 1

/* Feature bits (virtio 1.1 section 6). */
#define VIRTIO_F_VERSION_1      32
#define VIRTIO_RING_F_EVENT_IDX 29

/* Device status bits. */
#define VIRTIO_STATUS_ACK          1
#define VIRTIO_STATUS_DRIVER       2
#define VIRTIO_STATUS_DRIVER_OK    4
#define VIRTIO_STATUS_FEATURES_OK  8
#define VIRTIO_STATUS_NEEDS_RESET  64
#define VIRTIO_STATUS_FAILED       128

/* Split-ring layouts: guest memory, little endian, fixed by the spec. */
struct vring_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
} __attribute__((packed));

#define VRING_DESC_F_NEXT     1
#define VRING_DESC_F_WRITE    2
#define VRING_DESC_F_INDIRECT 4

struct vring_used_elem {
	uint32_t id;
	uint32_t len;
} __attribute__((packed));

/* One guest buffer of a chain, already translated and bounds-checked. */
struct hk_vq_buf {
	uint64_t gpa;
	void *hva;
	uint32_t len;
	bool writable; /* device writes it */
};

struct hk_virtqueue {
	/* Set by the driver through the transport. */
	uint16_t num;
	bool ready;
	uint64_t desc_gpa, avail_gpa, used_gpa;
	/* Host views, valid while ready (checked against guest RAM at ready). */
	struct vring_desc *desc;
	volatile uint16_t *avail; /* flags, idx, ring[num], used_event */
	volatile uint16_t *used;  /* flags, idx, then elems, avail_event */
	uint16_t last_avail;
	bool event_idx;
	pthread_mutex_t used_lock; /* completions push from the disk thread */
	uint16_t used_idx;
};

struct hk_virtio_dev;

struct hk_virtio_ops {
	size_t size;
	const char *name;
	uint32_t device_id;
	uint64_t features;   /* offered, VERSION_1 and EVENT_IDX added by the transport */
	uint32_t config_len; /* bytes of device config space */
	void (*config_read)(struct hk_virtio_dev *d, uint32_t off, void *buf, uint32_t len);
	/* Driver wrote QueueNotify: take what is available.  vCPU thread. */
	void (*notify)(struct hk_virtio_dev *d, unsigned queue);
	/* Status written 0: drop in-flight work (completions must not touch
	 * rings any more); called with the transport lock held. */
	void (*reset)(struct hk_virtio_dev *d);
};

struct hk_virtio_dev {
	const struct hk_virtio_ops *ops;
	void *priv;
	struct hk_vm *vm;
	struct hk_mem *mem;
	uint64_t base;

	pthread_mutex_t lock; /* register file */
	uint32_t status;
	uint32_t dev_features_sel, drv_features_sel;
	uint64_t driver_features;
	uint32_t queue_sel;
	_Atomic uint32_t generation; /* bumped on reset: stale completions drop */
	/* Set from the notify path without the lock; reads of Status see it. */
	_Atomic bool broken;
	struct hk_virtqueue vq[HK_VQ_MAX_QUEUES];
	_Atomic uint64_t bad_requests;
};

/* virtio_mmio.c */
int hk_virtio_mmio_add(struct hk_vm *vm, const struct hk_virtio_ops *ops, void *priv,
		       struct hk_virtio_dev **out);
void hk_virtio_mmio_free(struct hk_virtio_dev *d);
/* " virtio_mmio.device=4K@0x...:5" words for the kernel command line, for
 * the window at base (a local device's or a remote one's). */
int hk_virtio_mmio_cmdline(uint64_t base, char *buf, size_t len);
/* Mark the device broken (a descriptor we cannot even answer); any thread,
 * lock held or not: Status reads NEEDS_RESET until the driver resets. */
void hk_virtio_needs_reset(struct hk_virtio_dev *d, const char *why);

/* virtqueue.c */
/*
 * Pop the next available chain: head index and up to max buffers.  A
 * buffer not wholly in guest RAM comes back with hva NULL (len > 0); the
 * device must refuse the request.  Returns the number of buffers, or
 * max + 1 for a chain longer than max (bufs[0 .. max - 2] are its first
 * buffers, bufs[max - 1] its last), 0 when nothing is available, or
 * -EINVAL for a chain that cannot be walked (loop, indirect, next out of
 * range) — then *head is still valid.
 */
int hk_vq_pop(struct hk_virtio_dev *d, struct hk_virtqueue *vq, uint16_t *head,
	      struct hk_vq_buf *bufs, unsigned max);
/* Return a chain to the driver with len bytes written. Any thread. */
void hk_vq_push(struct hk_virtio_dev *d, struct hk_virtqueue *vq, uint16_t head, uint32_t len);
/* Tell an EVENT_IDX driver which avail index to notify at next. */
void hk_vq_set_avail_event(struct hk_virtqueue *vq);
bool hk_vq_has_avail(struct hk_virtqueue *vq);

#endif
