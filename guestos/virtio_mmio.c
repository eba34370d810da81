/*
 * virtio over MMIO, the virtio 1.x ("modern", register version 2) transport
 * of the virtio spec 1.1 section 4.2.2, with split virtqueues (2.6). Legacy
 * version-1 windows are refused: their ring layout and page-frame queue
 * registers are another protocol.
 *
 * Runs in ring 3 (see guestos.h): every register access below is one MMIO
 * exit (~25 us on kvm_pvm), so the data path touches exactly one register,
 * QueueNotify, and only when the device asks for it (event index); the
 * rings are polled in RAM. Set-up (probe, reset, features, queue) is a
 * couple of dozen accesses per device, once.
 *
 * Ordering: x86 keeps stores in order and loads in order, so the release
 * store of avail.idx and the acquire load of used.idx are plain moves with
 * a compiler barrier; only "publish avail.idx, then read avail_event" needs
 * a full fence (store then load).
 */
#include "guestos.h"

#define VIRTIO_MMIO_MAGIC 0x74726976 /* "virt" */

/* Register offsets (spec 4.2.2, table "MMIO Device Register Layout"). */
#define REG_MAGIC	      0x000
#define REG_VERSION	      0x004
#define REG_DEVICE_ID	      0x008
#define REG_VENDOR_ID	      0x00c
#define REG_DEVICE_FEATURES   0x010
#define REG_DEVICE_FEAT_SEL   0x014
#define REG_DRIVER_FEATURES   0x020
#define REG_DRIVER_FEAT_SEL   0x024
#define REG_QUEUE_SEL	      0x030
#define REG_QUEUE_NUM_MAX     0x034
#define REG_QUEUE_NUM	      0x038
#define REG_QUEUE_READY	      0x044
#define REG_QUEUE_NOTIFY      0x050
#define REG_STATUS	      0x070
#define REG_QUEUE_DESC_LO     0x080
#define REG_QUEUE_DESC_HI     0x084
#define REG_QUEUE_DRIVER_LO   0x090
#define REG_QUEUE_DRIVER_HI   0x094
#define REG_QUEUE_DEVICE_LO   0x0a0
#define REG_QUEUE_DEVICE_HI   0x0a4
#define REG_CONFIG_GENERATION 0x0fc
#define REG_CONFIG	      0x100

/* Device status bits (spec 2.1). */
#define STATUS_ACKNOWLEDGE 1
#define STATUS_DRIVER	   2
#define STATUS_DRIVER_OK   4
#define STATUS_FEATURES_OK 8
#define STATUS_NEEDS_RESET 64
#define STATUS_FAILED	   128

#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY	   1

/* Register reads a device may legitimately repeat before settling. */
#define SETTLE_TRIES 1000

static inline uint32_t rd32(const struct virtio_mmio *vm, unsigned off)
{
	return *(volatile uint32_t *)(vm->regs + off);
}

static inline void wr32(const struct virtio_mmio *vm, unsigned off, uint32_t v)
{
	*(volatile uint32_t *)(vm->regs + off) = v;
}

int virtio_mmio_probe(struct virtio_mmio *vm, const struct virtio_mmio_window *w)
{
	uint32_t magic;

	memset(vm, 0, sizeof(*vm));
	vm->regs = (volatile uint8_t *)(uintptr_t)w->base;
	vm->base = w->base;
	vm->size = w->size;
	magic = rd32(vm, REG_MAGIC);
	if (magic != VIRTIO_MMIO_MAGIC) {
		printk("virtio-mmio 0x%lx: no virtio device (magic 0x%08x)\n", vm->base, magic);
		return -1;
	}
	vm->version = rd32(vm, REG_VERSION);
	if (vm->version != 2) {
		printk("virtio-mmio 0x%lx: register version %u; guestos drives version 2 "
		       "(virtio 1.x) only%s\n",
		       vm->base, vm->version,
		       vm->version == 1 ? " (QEMU: -global virtio-mmio.force-legacy=false)" : "");
		return -1;
	}
	vm->device_id = rd32(vm, REG_DEVICE_ID);
	vm->vendor_id = rd32(vm, REG_VENDOR_ID);
	return 0;
}

uint32_t virtio_mmio_status(const struct virtio_mmio *vm)
{
	return rd32(vm, REG_STATUS);
}

void virtio_mmio_fail(struct virtio_mmio *vm)
{
	wr32(vm, REG_STATUS, rd32(vm, REG_STATUS) | STATUS_FAILED);
}

/*
 * Reset, then ACKNOWLEDGE, DRIVER, features, FEATURES_OK (spec 3.1.1).
 * Accepts the offered features in `wanted`; fails if any of `required` is
 * not offered or the device does not keep FEATURES_OK.
 */
int virtio_mmio_negotiate(struct virtio_mmio *vm, uint64_t wanted, uint64_t required)
{
	uint64_t offered;
	unsigned tries = 0;

	wr32(vm, REG_STATUS, 0);
	while (rd32(vm, REG_STATUS) != 0) {
		if (++tries == SETTLE_TRIES) {
			printk("virtio-mmio 0x%lx: device does not reset\n", vm->base);
			return -1;
		}
		cpu_relax();
	}
	wr32(vm, REG_STATUS, STATUS_ACKNOWLEDGE);
	wr32(vm, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);

	wr32(vm, REG_DEVICE_FEAT_SEL, 0);
	offered = rd32(vm, REG_DEVICE_FEATURES);
	wr32(vm, REG_DEVICE_FEAT_SEL, 1);
	offered |= (uint64_t)rd32(vm, REG_DEVICE_FEATURES) << 32;
	if ((offered & required) != required) {
		printk("virtio-mmio 0x%lx: device lacks features 0x%lx (offers 0x%lx)\n", vm->base,
		       required & ~offered, offered);
		virtio_mmio_fail(vm);
		return -1;
	}
	vm->features = offered & wanted;
	wr32(vm, REG_DRIVER_FEAT_SEL, 0);
	wr32(vm, REG_DRIVER_FEATURES, (uint32_t)vm->features);
	wr32(vm, REG_DRIVER_FEAT_SEL, 1);
	wr32(vm, REG_DRIVER_FEATURES, (uint32_t)(vm->features >> 32));

	wr32(vm, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
	if (!(rd32(vm, REG_STATUS) & STATUS_FEATURES_OK)) {
		printk("virtio-mmio 0x%lx: device refused features 0x%lx\n", vm->base,
		       vm->features);
		virtio_mmio_fail(vm);
		return -1;
	}
	return 0;
}

void virtio_mmio_driver_ok(struct virtio_mmio *vm)
{
	wr32(vm, REG_STATUS,
	     STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
}

/* 8-, 16- and 32-bit fields are read whole; wider ones under ConfigGeneration. */
uint32_t virtio_mmio_config32(const struct virtio_mmio *vm, unsigned off)
{
	return rd32(vm, REG_CONFIG + off);
}

uint64_t virtio_mmio_config64(const struct virtio_mmio *vm, unsigned off)
{
	uint32_t gen, lo, hi;
	unsigned tries = 0;

	do {
		gen = rd32(vm, REG_CONFIG_GENERATION);
		lo = rd32(vm, REG_CONFIG + off);
		hi = rd32(vm, REG_CONFIG + off + 4);
	} while (gen != rd32(vm, REG_CONFIG_GENERATION) && ++tries < SETTLE_TRIES);
	return ((uint64_t)hi << 32) | lo;
}

static inline volatile uint16_t *used_event(struct virtq *vq)
{
	return &vq->mem->avail.ring[vq->size];
}

static inline volatile uint16_t *avail_event(struct virtq *vq)
{
	return (volatile uint16_t *)&vq->mem->used.ring[vq->size];
}

/*
 * Interrupt suppression: with EVENT_IDX the device interrupts when used.idx
 * passes used_event. We never want one (there is no irqchip), so
 * used_event stays half the index space ahead of what we consumed; at most
 * `size` entries are outstanding, so the device never reaches it.
 */
static inline void push_used_event(struct virtq *vq)
{
	*used_event(vq) = (uint16_t)(vq->last_used + 0x8000);
}

int virtio_mmio_queue_setup(struct virtio_mmio *vm, struct virtq *vq, uint32_t index,
			    struct virtq_mem *mem, unsigned max_size)
{
	uint32_t max;
	uint64_t desc = (uint64_t)(uintptr_t)mem->desc;
	uint64_t drv = (uint64_t)(uintptr_t)&mem->avail;
	uint64_t dev = (uint64_t)(uintptr_t)&mem->used;
	uint16_t size = 1;

	wr32(vm, REG_QUEUE_SEL, index);
	if (rd32(vm, REG_QUEUE_READY)) {
		printk("virtio-mmio 0x%lx: queue %u is live after reset\n", vm->base, index);
		return -1;
	}
	max = rd32(vm, REG_QUEUE_NUM_MAX);
	if (max > VIRTQ_MAX_SIZE)
		max = VIRTQ_MAX_SIZE;
	if (max > max_size)
		max = max_size;
	while ((unsigned)size * 2 <= max)
		size = (uint16_t)(size * 2);
	if (max < 2) {
		printk("virtio-mmio 0x%lx: queue %u not available (QueueNumMax %u)\n", vm->base,
		       index, rd32(vm, REG_QUEUE_NUM_MAX));
		return -1;
	}

	/* Clean rings whatever a previous user left (bss is zero on a fresh boot). */
	for (uint64_t *p = (uint64_t *)mem, *end = (uint64_t *)(mem + 1); p < end; p++)
		*p = 0;
	*vq = (struct virtq){
	    .mem = mem,
	    .size = size,
	    .index = index,
	    .event_idx = (vm->features >> VIRTIO_F_RING_EVENT_IDX) & 1,
	};
	/* Spec 2.6.7.2: flags must be 0 with EVENT_IDX; used_event does the job. */
	mem->avail.flags = vq->event_idx ? 0 : VIRTQ_AVAIL_F_NO_INTERRUPT;
	if (vq->event_idx)
		push_used_event(vq);

	wr32(vm, REG_QUEUE_NUM, size);
	wr32(vm, REG_QUEUE_DESC_LO, (uint32_t)desc);
	wr32(vm, REG_QUEUE_DESC_HI, (uint32_t)(desc >> 32));
	wr32(vm, REG_QUEUE_DRIVER_LO, (uint32_t)drv);
	wr32(vm, REG_QUEUE_DRIVER_HI, (uint32_t)(drv >> 32));
	wr32(vm, REG_QUEUE_DEVICE_LO, (uint32_t)dev);
	wr32(vm, REG_QUEUE_DEVICE_HI, (uint32_t)(dev >> 32));
	wr32(vm, REG_QUEUE_READY, 1);
	return 0;
}

/* Makes the chain at `head` available; the device may see it at once. No exit. */
void virtq_publish(struct virtq *vq, uint16_t head)
{
	vq->mem->avail.ring[vq->avail_idx & (vq->size - 1)] = head;
	vq->avail_idx++;
	/* Descriptors and the ring entry before the index (x86: a compiler barrier). */
	__atomic_store_n(&vq->mem->avail.idx, vq->avail_idx, __ATOMIC_RELEASE);
	vq->published++;
}

/*
 * Tells the device about everything published since the last kick, with
 * one QueueNotify write, unless it asked not to be told: with EVENT_IDX a
 * notification is due only if avail_event lies in [old, new) (spec 2.6.7.2,
 * vring_need_event), which lets a device that is still working through the
 * ring (or polls it) run without any exit.
 */
void virtq_kick(struct virtio_mmio *vm, struct virtq *vq)
{
	uint16_t new = vq->avail_idx, old = vq->kicked_idx;
	bool need;

	if (new == old)
		return;
	/* The store of avail.idx must be visible before we read the device's wish. */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (vq->event_idx)
		need = (uint16_t)(new - *avail_event(vq) - 1) < (uint16_t)(new - old);
	else
		need = !(__atomic_load_n(&vq->mem->used.flags, __ATOMIC_RELAXED) &
			 VIRTQ_USED_F_NO_NOTIFY);
	vq->kicked_idx = new;
	if (need) {
		wr32(vm, REG_QUEUE_NOTIFY, vq->index);
		vq->notifies++;
	}
}

/*
 * The next used entry: 1 and *e, 0 if none yet, -1 if the device's used
 * index claims more entries than can be outstanding (a broken device).
 */
int virtq_next_used(struct virtq *vq, struct virtq_used_elem *e)
{
	uint16_t idx = __atomic_load_n(&vq->mem->used.idx, __ATOMIC_ACQUIRE);
	const volatile struct virtq_used_elem *u;

	if (idx == vq->last_used)
		return 0;
	if ((uint16_t)(idx - vq->last_used) > (uint16_t)(vq->avail_idx - vq->last_used))
		return -1;
	u = &vq->mem->used.ring[vq->last_used & (vq->size - 1)];
	e->id = u->id;
	e->len = u->len;
	vq->last_used++;
	if (vq->event_idx)
		push_used_event(vq);
	return 1;
}
