/*
 * virtio-blk (virtio spec 1.1 section 5.2) over virtio_mmio.c, one queue,
 * polled, for ring-3 workloads.
 *
 * The interface is asynchronous and batched on purpose: vblk_submit() only
 * writes descriptors and the available ring (RAM, no exit); vblk_kick()
 * then notifies the device once for everything submitted, and not at all
 * if the device said with EVENT_IDX that it is still looking at the ring;
 * vblk_poll() harvests completions from the used ring (RAM, no exit). A
 * caller keeps the queue full of large requests and pays about one exit
 * per batch (ARCHITECTURE.md section 3).
 *
 * Each request is one chain: a 16-byte header (type, sector), the data as
 * physically contiguous segments (guestos is identity mapped, so the
 * caller's buffer address is its physical address), and a status byte the
 * device writes. Chains are carved out of the descriptor table in fixed
 * slots of 2 + segments descriptors, so a used entry names its slot by its
 * head index, which is checked like everything else the device returns.
 */
#include "guestos.h"

#define VIRTIO_ID_BLOCK 2

/* Feature bits (spec 5.2.3). */
#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX  2
#define VIRTIO_BLK_F_RO	      5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH    9

/* Configuration space offsets (struct virtio_blk_config). */
#define CFG_CAPACITY 0 /* le64, in 512-byte sectors */
#define CFG_SIZE_MAX 8
#define CFG_SEG_MAX  12
#define CFG_BLK_SIZE 20

#define VBLK_WANTED                                                                                \
	((1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_F_RING_EVENT_IDX) |                        \
	 (1ULL << VIRTIO_BLK_F_SIZE_MAX) | (1ULL << VIRTIO_BLK_F_SEG_MAX) |                        \
	 (1ULL << VIRTIO_BLK_F_RO) | (1ULL << VIRTIO_BLK_F_BLK_SIZE) |                             \
	 (1ULL << VIRTIO_BLK_F_FLUSH))

/*
 * Largest request we build. 1 MiB moves in ~0.4 ms at disk speed, so an
 * exit's ~25 us is noise; larger ones would only take descriptors from
 * other requests (chains are fixed slots).
 */
#define VBLK_REQ_MAX  (1u << 20)
#define VBLK_MAX_SEGS 16
/* No completion for this long with requests in flight: the device is gone. */
#define VBLK_TIMEOUT_TSC  (1ULL << 37)
#define VBLK_STATUS_UNSET 0xff

/* Our status for a read the device said was fine but did not fill. */
#define VBLK_S_SHORT 0x100

struct vblk_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

struct vblk_slot {
	struct vblk_hdr hdr;	 /* device-readable */
	volatile uint8_t status; /* device-writable */
	bool busy;
	uint8_t span; /* slots the request occupies (vblk_submit_raw); 0: not a head */
	uint8_t type;
	uint32_t len;
	uint32_t writable; /* bytes of the chain the device may write */
	uint64_t cookie;
} __attribute__((aligned(64)));

struct vblk {
	struct virtio_mmio vm;
	struct virtq vq;
	struct vblk_info info;
	unsigned dps;	     /* descriptors per slot: header + segments + status */
	uint32_t seg_bytes;  /* largest data segment */
	unsigned inflight;   /* requests */
	unsigned slots_used; /* slots they occupy (raw requests may take several) */
	unsigned next_free;
	unsigned idle_polls;
	uint64_t last_progress; /* tsc of the last submission into an idle queue or completion */
	uint64_t requests;
	bool broken;
	struct vblk_slot slots[VIRTQ_MAX_SIZE];
};

static struct vblk disks[VBLK_MAX_DISKS];
static struct virtq_mem rings[VBLK_MAX_DISKS];
static unsigned nr_disks;

const char *vblk_status_name(unsigned status)
{
	switch (status) {
	case VBLK_S_OK:
		return "ok";
	case VBLK_S_IOERR:
		return "I/O error";
	case VBLK_S_UNSUPP:
		return "unsupported";
	case VBLK_S_SHORT:
		return "short transfer";
	case VBLK_STATUS_UNSET:
		return "status never written";
	default:
		return "bad status byte";
	}
}

/* Marks the device unusable after one line saying why; returns -1. */
static int PRINTF_LIKE(2, 3) broken(struct vblk *d, const char *fmt, ...)
{
	char why[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	printk("virtio-blk 0x%lx: %s\n", d->info.base, why);
	d->broken = true;
	virtio_mmio_fail(&d->vm);
	return -1;
}

static bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

static int setup(struct vblk *d, struct virtq_mem *mem)
{
	struct virtio_mmio *vm = &d->vm;
	struct vblk_info *in = &d->info;
	uint64_t sectors;
	uint32_t seg_max = 1, size_max = 0;
	unsigned segs;

	in->base = vm->base;
	if (virtio_mmio_negotiate(vm, VBLK_WANTED, 1ULL << VIRTIO_F_VERSION_1) < 0)
		return -1;
	in->features = vm->features;
	in->ro = (vm->features >> VIRTIO_BLK_F_RO) & 1;
	in->flush = (vm->features >> VIRTIO_BLK_F_FLUSH) & 1;
	in->event_idx = (vm->features >> VIRTIO_F_RING_EVENT_IDX) & 1;

	sectors = virtio_mmio_config64(vm, CFG_CAPACITY);
	if (sectors > UINT64_MAX / VBLK_SECTOR_SIZE)
		return broken(d, "capacity of %lu sectors is not sane", sectors);
	in->capacity = sectors * VBLK_SECTOR_SIZE;
	in->blk_size = VBLK_SECTOR_SIZE;
	if ((vm->features >> VIRTIO_BLK_F_BLK_SIZE) & 1)
		in->blk_size = virtio_mmio_config32(vm, CFG_BLK_SIZE);
	/* 4 KiB is the most guestos's users (4 KiB records, pages) can address. */
	if (!is_pow2(in->blk_size) || in->blk_size < VBLK_SECTOR_SIZE || in->blk_size > 4096)
		return broken(d, "unsupported block size %u", in->blk_size);
	if ((vm->features >> VIRTIO_BLK_F_SEG_MAX) & 1)
		seg_max = virtio_mmio_config32(vm, CFG_SEG_MAX);
	if (seg_max == 0)
		seg_max = 1;
	if ((vm->features >> VIRTIO_BLK_F_SIZE_MAX) & 1) {
		size_max = virtio_mmio_config32(vm, CFG_SIZE_MAX);
		if (size_max < in->blk_size)
			return broken(d, "size_max %u is below the block size %u", size_max,
				      in->blk_size);
	}
	d->seg_bytes = size_max && size_max < VBLK_REQ_MAX ? size_max : VBLK_REQ_MAX;
	d->seg_bytes &= ~(in->blk_size - 1);
	segs = (VBLK_REQ_MAX + d->seg_bytes - 1) / d->seg_bytes;
	if (segs > seg_max)
		segs = seg_max;
	if (segs > VBLK_MAX_SEGS)
		segs = VBLK_MAX_SEGS;

	if (virtio_mmio_queue_setup(vm, &d->vq, 0, mem, VIRTQ_MAX_SIZE) < 0) {
		virtio_mmio_fail(vm);
		return -1;
	}
	in->queue_size = d->vq.size;
	if (in->queue_size < 3)
		return broken(d, "queue of %u entries cannot hold a request", in->queue_size);
	if (segs + 2 > in->queue_size)
		segs = in->queue_size - 2;
	d->dps = segs + 2;
	in->slots = in->queue_size / d->dps;
	in->max_request = segs * d->seg_bytes;
	if (in->max_request > VBLK_REQ_MAX)
		in->max_request = VBLK_REQ_MAX;
	virtio_mmio_driver_ok(vm);
	if (virtio_mmio_status(vm) & 0xc0)
		return broken(d, "device failed at start (status 0x%x)", virtio_mmio_status(vm));
	return 0;
}

/*
 * Opens the disk-th virtio-blk device among the windows (command-line
 * order; transports without a device or with another device are skipped).
 * Prints one line and returns NULL on any failure.
 */
struct vblk *vblk_open(const struct virtio_mmio_window *w, unsigned nr_windows, unsigned disk)
{
	unsigned found = 0;

	for (unsigned i = 0; i < nr_windows; i++) {
		struct virtio_mmio vm;
		struct vblk *d;

		if (virtio_mmio_probe(&vm, &w[i]) < 0)
			return NULL;
		if (vm.device_id != VIRTIO_ID_BLOCK || found++ != disk)
			continue;
		if (nr_disks == VBLK_MAX_DISKS) {
			printk("virtio-blk 0x%lx: more than %d disks opened\n", vm.base,
			       VBLK_MAX_DISKS);
			return NULL;
		}
		d = &disks[nr_disks];
		memset(d, 0, sizeof(*d));
		d->vm = vm;
		if (setup(d, &rings[nr_disks]) < 0)
			return NULL;
		nr_disks++;
		return d;
	}
	printk("virtio-blk: no disk %u: %u virtio-blk device%s in %u virtio_mmio.device window%s\n",
	       disk, found, found == 1 ? "" : "s", nr_windows, nr_windows == 1 ? "" : "s");
	return NULL;
}

const struct vblk_info *vblk_info(const struct vblk *d)
{
	return &d->info;
}

bool vblk_can_submit(const struct vblk *d)
{
	return !d->broken && d->slots_used < d->info.slots;
}

unsigned vblk_inflight(const struct vblk *d)
{
	return d->inflight;
}

uint64_t vblk_notifies(const struct vblk *d)
{
	return d->vq.notifies;
}

uint64_t vblk_requests(const struct vblk *d)
{
	return d->requests;
}

static const char *type_name(enum vblk_type t)
{
	switch (t) {
	case VBLK_T_IN:
		return "read";
	case VBLK_T_OUT:
		return "write";
	case VBLK_T_FLUSH:
		return "flush";
	case VBLK_T_GET_ID:
		return "get-id";
	}
	return "?";
}

/* Why a request cannot be sent, or NULL. */
static const char *check_request(const struct vblk *d, enum vblk_type type, uint64_t sector,
				 const void *buf, uint32_t len)
{
	const struct vblk_info *in = &d->info;
	uint64_t addr = (uint64_t)(uintptr_t)buf;
	uint64_t per_blk = in->blk_size / VBLK_SECTOR_SIZE;

	switch (type) {
	case VBLK_T_IN:
	case VBLK_T_OUT:
		if (type == VBLK_T_OUT && in->ro)
			return "the disk is read-only";
		if (len == 0 || len % in->blk_size || len > in->max_request)
			return "bad length";
		if (sector % per_blk)
			return "sector not aligned to the block size";
		if (sector >= in->capacity / VBLK_SECTOR_SIZE ||
		    len / VBLK_SECTOR_SIZE > in->capacity / VBLK_SECTOR_SIZE - sector)
			return "beyond the end of the disk";
		break;
	case VBLK_T_FLUSH:
		if (!in->flush)
			return "the device offers no flush";
		if (len)
			return "a flush carries no data";
		return NULL;
	case VBLK_T_GET_ID:
		if (len != VBLK_ID_BYTES)
			return "bad length";
		break;
	default:
		return "unknown request type";
	}
	if (!buf || addr >= GUESTOS_MAPPED_LIMIT || len > GUESTOS_MAPPED_LIMIT - addr)
		return "buffer outside guest memory";
	return NULL;
}

/*
 * Queues one request: descriptors and the available ring only, no exit;
 * vblk_kick() tells the device. 0, or -1 after one line (bad request,
 * queue full: call vblk_can_submit() first, device broken).
 */
int vblk_submit(struct vblk *d, enum vblk_type type, uint64_t sector, void *buf, uint32_t len,
		uint64_t cookie)
{
	struct virtq_desc *desc = d->vq.mem->desc;
	const char *why = d->broken ? "device is broken" : check_request(d, type, sector, buf, len);
	bool dev_writes = type == VBLK_T_IN || type == VBLK_T_GET_ID;
	uint64_t addr = (uint64_t)(uintptr_t)buf;
	struct vblk_slot *s;
	unsigned slot, head, n = 0;

	if (!why && d->slots_used == d->info.slots)
		why = "queue full";
	if (why) {
		printk("virtio-blk 0x%lx: %s of %u bytes at sector %lu refused: %s\n", d->info.base,
		       type_name(type), len, sector, why);
		return -1;
	}
	for (slot = d->next_free; d->slots[slot].busy; slot = (slot + 1) % d->info.slots)
		;
	d->next_free = (slot + 1) % d->info.slots;
	s = &d->slots[slot];
	s->hdr = (struct vblk_hdr){.type = type, .sector = type == VBLK_T_FLUSH ? 0 : sector};
	s->status = VBLK_STATUS_UNSET;
	s->busy = true;
	s->span = 1;
	s->type = (uint8_t)type;
	s->len = len;
	s->writable = (dev_writes ? len : 0) + 1;
	s->cookie = cookie;

	head = slot * d->dps;
	desc[head] = (struct virtq_desc){
	    .addr = (uint64_t)(uintptr_t)&s->hdr,
	    .len = sizeof(s->hdr),
	    .flags = VIRTQ_DESC_F_NEXT,
	    .next = (uint16_t)(head + 1),
	};
	for (uint32_t off = 0; off < len; off += d->seg_bytes) {
		uint32_t seg = len - off < d->seg_bytes ? len - off : d->seg_bytes;

		n++;
		desc[head + n] = (struct virtq_desc){
		    .addr = addr + off,
		    .len = seg,
		    .flags = VIRTQ_DESC_F_NEXT | (dev_writes ? VIRTQ_DESC_F_WRITE : 0),
		    .next = (uint16_t)(head + n + 1),
		};
	}
	n++;
	desc[head + n] = (struct virtq_desc){
	    .addr = (uint64_t)(uintptr_t)&s->status,
	    .len = 1,
	    .flags = VIRTQ_DESC_F_WRITE,
	};
	if (d->inflight++ == 0)
		d->last_progress = rdtsc();
	d->slots_used++;
	d->requests++;
	virtq_publish(&d->vq, (uint16_t)head);
	return 0;
}

void vblk_kick(struct vblk *d)
{
	if (!d->broken)
		virtq_kick(&d->vm, &d->vq);
}

/*
 * Harvests up to max completions into done[]: the number harvested (0 if
 * none yet; never waits), or -1 after one line if the device broke the
 * protocol or went silent for VBLK_TIMEOUT_TSC with requests in flight.
 * A request the device failed is a completion with status != VBLK_S_OK:
 * the caller must look at every status.
 */
int vblk_poll(struct vblk *d, struct vblk_done *done, unsigned max)
{
	unsigned n = 0;

	if (d->broken)
		return -1;
	while (n < max) {
		struct virtq_used_elem e;
		struct vblk_slot *s;
		unsigned status;
		int r = virtq_next_used(&d->vq, &e);

		if (r < 0)
			return broken(d, "used index ran past the requests in flight");
		if (r == 0)
			break;
		if (e.id >= d->info.slots * d->dps || e.id % d->dps ||
		    !d->slots[e.id / d->dps].busy || !d->slots[e.id / d->dps].span)
			return broken(d, "used entry names descriptor %u, not a request in flight",
				      e.id);
		s = &d->slots[e.id / d->dps];
		if (e.len > s->writable)
			return broken(d, "used length %u for a %s with %u writable bytes", e.len,
				      type_name(s->type), s->writable);
		status = s->status;
		if (status == VBLK_S_OK && s->writable > 1 && e.len != s->writable)
			status = VBLK_S_SHORT;
		done[n++] = (struct vblk_done){
		    .cookie = s->cookie,
		    .status = status,
		    .type = (enum vblk_type)s->type,
		    .sector = s->hdr.sector,
		    .len = s->len,
		};
		d->slots_used -= s->span;
		for (unsigned i = s->span; i-- > 0;)
			s[i].busy = false;
		s->span = 0;
		d->inflight--;
		d->last_progress = rdtsc();
	}
	/* Reading the TSC is cheap, but not free: look at the clock now and then. */
	if (n == 0 && d->inflight && (++d->idle_polls & 1023) == 0 &&
	    rdtsc() - d->last_progress > VBLK_TIMEOUT_TSC)
		return broken(d, "no completion for %u request%s in flight (device status 0x%x)",
			      d->inflight, d->inflight == 1 ? "" : "s", virtio_mmio_status(&d->vm));
	return (int)n;
}

/* One request, waited for, on an idle queue: its status, or -1 (line printed). */
int vblk_sync(struct vblk *d, enum vblk_type type, uint64_t sector, void *buf, uint32_t len)
{
	struct vblk_done done;
	int n;

	if (d->inflight) {
		printk("virtio-blk 0x%lx: synchronous %s with requests in flight\n", d->info.base,
		       type_name(type));
		return -1;
	}
	if (vblk_submit(d, type, sector, buf, len, 0) < 0)
		return -1;
	vblk_kick(d);
	while ((n = vblk_poll(d, &done, 1)) == 0)
		cpu_relax();
	return n < 0 ? -1 : (int)done.status;
}

/* ---- for tests: requests the checks above would refuse ------------------ */

static unsigned raw_span(const struct vblk *d, unsigned nseg)
{
	return (nseg + 2 + d->dps - 1) / d->dps;
}

/* First of `span` adjacent free slots (no wrap), or -1. */
static int raw_find(const struct vblk *d, unsigned span)
{
	for (unsigned i = 0; i < d->info.slots; i++) {
		unsigned first = (d->next_free + i) % d->info.slots, j;

		if (first + span > d->info.slots)
			continue;
		for (j = 0; j < span && !d->slots[first + j].busy; j++)
			;
		if (j == span)
			return (int)first;
	}
	return -1;
}

bool vblk_can_submit_raw(const struct vblk *d, unsigned nseg)
{
	return !d->broken && nseg <= VBLK_RAW_MAX_SEGS && raw_span(d, nseg) <= d->info.slots &&
	       raw_find(d, raw_span(d, nseg)) >= 0;
}

/*
 * Queues one request built exactly as described, without any of
 * vblk_submit()'s checks on the type, sector, lengths, alignment or
 * addresses: the device has to cope (blkbad, and blkstress's sub-block
 * requests). The header and status byte are the driver's own; the data
 * buffers are seg[0..nseg), in chain order, each device-writable or not as
 * it says. A chain takes as many adjacent slots as its descriptors need.
 * Completions come through vblk_poll(), whose checks all still apply.
 * 0, or -1 after one line (no room: see vblk_can_submit_raw()).
 */
int vblk_submit_raw(struct vblk *d, uint32_t type, uint64_t sector, const struct vblk_seg *seg,
		    unsigned nseg, unsigned flags, uint64_t cookie)
{
	struct virtq_desc *desc = d->vq.mem->desc;
	unsigned span, head, n = 0;
	uint64_t writable = 1, len = 0;
	struct vblk_slot *s;
	int first;

	if (d->broken || nseg > VBLK_RAW_MAX_SEGS || raw_span(d, nseg) > d->info.slots ||
	    (first = raw_find(d, raw_span(d, nseg))) < 0) {
		printk("virtio-blk 0x%lx: raw request of %u segments refused: %s\n", d->info.base,
		       nseg, d->broken ? "device is broken" : "no room");
		return -1;
	}
	span = raw_span(d, nseg);
	for (unsigned i = 0; i < nseg; i++) {
		len += seg[i].len;
		writable += seg[i].dev_writes ? seg[i].len : 0;
	}
	s = &d->slots[first];
	for (unsigned i = 1; i < span; i++) {
		s[i].busy = true;
		s[i].span = 0;
	}
	s->hdr = (struct vblk_hdr){.type = type, .sector = sector};
	s->status = VBLK_STATUS_UNSET;
	s->busy = true;
	s->span = (uint8_t)span;
	s->type = (uint8_t)type;
	s->len = len > UINT32_MAX ? UINT32_MAX : (uint32_t)len;
	s->writable = writable > UINT32_MAX ? UINT32_MAX : (uint32_t)writable;
	s->cookie = cookie;
	d->next_free = (first + span) % d->info.slots;

	head = (unsigned)first * d->dps;
	desc[head] = (struct virtq_desc){
	    .addr = (uint64_t)(uintptr_t)&s->hdr,
	    .len = flags & VBLK_RAW_HDR_SHORT ? 8 : sizeof(s->hdr),
	    .flags = VIRTQ_DESC_F_NEXT | (flags & VBLK_RAW_HDR_WRITABLE ? VIRTQ_DESC_F_WRITE : 0),
	    .next = (uint16_t)(head + 1),
	};
	for (unsigned i = 0; i < nseg; i++) {
		n++;
		desc[head + n] = (struct virtq_desc){
		    .addr = seg[i].addr,
		    .len = seg[i].len,
		    .flags = VIRTQ_DESC_F_NEXT | (seg[i].dev_writes ? VIRTQ_DESC_F_WRITE : 0),
		    .next = (uint16_t)(head + n + 1),
		};
	}
	n++;
	desc[head + n] = (struct virtq_desc){
	    .addr = (uint64_t)(uintptr_t)&s->status,
	    .len = 1,
	    .flags = VIRTQ_DESC_F_WRITE,
	};
	if (d->inflight++ == 0)
		d->last_progress = rdtsc();
	d->slots_used += span;
	d->requests++;
	virtq_publish(&d->vq, (uint16_t)head);
	return 0;
}

/* The device status register (one exit): VIRTIO_STATUS_NEEDS_RESET is 0x40. */
uint32_t vblk_device_status(const struct vblk *d)
{
	return virtio_mmio_status(&d->vm);
}

/*
 * Resets the device and sets it up again on the same rings, forgetting every
 * request in flight (the device returns none of them after a reset). For a
 * device in NEEDS_RESET, or one the driver gave up on. 0, or -1 after one line.
 */
int vblk_reset(struct vblk *d)
{
	struct virtq_mem *mem = d->vq.mem;
	struct virtio_mmio vm = d->vm;
	uint64_t requests = d->requests;

	memset(d, 0, sizeof(*d));
	d->vm = vm;
	d->requests = requests;
	return setup(d, mem);
}
