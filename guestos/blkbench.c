/*
 * blkbench [disk=N] [size=SIZE] [req=SIZE] [depth=N] [mode=read|write] [passes=N]
 *
 * Sequential reads (or writes) of `size` bytes from the start of the disk
 * (default: all of it) in requests of `req` bytes (default 1 MiB, a
 * multiple of the block size, at most what the driver sends in one
 * request), `depth` of them in flight (default 32), one notify per batch,
 * timed with rdtsc from the first submission to the last completion:
 *
 *   blkbench: read BYTES bytes in CYCLES tsc cycles (req R, depth D)
 *
 * once per pass (default 1), then "blkbench ok". Each request in flight has
 * its own buffer (depth * req bytes of RAM at the lowest 2 MiB boundary
 * >= 64 MiB); writes send whatever pattern the buffers hold.
 *
 * A `size` past the end of the disk is allowed on purpose: the requests
 * beyond it go to the device unchecked (the driver would refuse them), and
 * the device must fail them alone. Any failed request is reported (the
 * first one in full, then a count per pass), the disk is read once more to
 * show that it still answers, and the exit value is 1.
 */
#include "guestos.h"

#define BENCH_MAX_DEPTH VIRTQ_MAX_SIZE

static const char bench_usage[] =
    "blkbench [disk=N] [size=SIZE] [req=SIZE] [depth=N] [mode=read|write] [passes=N]";

static struct {
	struct blk_target t;
	uint64_t size; /* 0: the whole disk */
	uint64_t req, depth, passes;
	bool write;
} cfg;

static uint64_t slot_off[BENCH_MAX_DEPTH];

static bool bench_pass(struct vblk *d, uint8_t *buf, uint64_t size, uint64_t *cycles,
		       uint64_t *failed, uint64_t *requests)
{
	const struct vblk_info *in = vblk_info(d);
	enum vblk_type type = cfg.write ? VBLK_T_OUT : VBLK_T_IN;
	uint32_t free_slots[BENCH_MAX_DEPTH];
	unsigned nfree = 0, inflight = 0;
	uint64_t next = 0, t0 = rdtsc();
	struct vblk_done done[64];

	for (unsigned i = (unsigned)cfg.depth; i-- > 0;)
		free_slots[nfree++] = i;
	*failed = *requests = 0;
	while (next < size || inflight) {
		bool queued = false;
		int n;

		while (next < size && nfree && vblk_can_submit(d)) {
			uint32_t len = (uint32_t)(size - next < cfg.req ? size - next : cfg.req);
			uint32_t slot = free_slots[nfree - 1];
			uint8_t *b = buf + slot * cfg.req;
			int ret;

			if (next + len <= in->capacity) {
				ret = vblk_submit(d, type, next / VBLK_SECTOR_SIZE, b, len, slot);
			} else {
				struct vblk_seg seg = {(uint64_t)(uintptr_t)b, len, !cfg.write};

				ret = vblk_submit_raw(d, type, next / VBLK_SECTOR_SIZE, &seg, 1, 0,
						      slot);
			}
			if (ret < 0)
				return false;
			slot_off[slot] = next;
			nfree--;
			inflight++;
			next += len;
			queued = true;
			(*requests)++;
		}
		if (queued)
			vblk_kick(d);
		n = vblk_poll(d, done, 64);
		if (n < 0)
			return false;
		for (int i = 0; i < n; i++) {
			if (done[i].status != VBLK_S_OK && !(*failed)++)
				printk(
				    "blkbench: %s of %u bytes at byte %lu failed: %s (status %u)\n",
				    cfg.write ? "write" : "read", done[i].len,
				    slot_off[done[i].cookie], vblk_status_name(done[i].status),
				    done[i].status);
			free_slots[nfree++] = (uint32_t)done[i].cookie;
			inflight--;
		}
		if (n == 0)
			cpu_relax();
	}
	*cycles = rdtsc() - t0;
	return true;
}

static enum guestos_exit bench_all(void)
{
	const struct vblk_info *in;
	struct vblk *d = blk_target_open(&cfg.t, "blkbench");
	uint64_t size, bad_passes = 0;
	uint8_t *buf;

	if (!d)
		return GUESTOS_EXIT_WORKLOAD;
	in = vblk_info(d);
	size = cfg.size ? cfg.size : in->capacity;
	if (cfg.req % in->blk_size || cfg.req > in->max_request) {
		printk("blkbench: req=%lu must be a multiple of %u bytes, at most %u\n", cfg.req,
		       in->blk_size, in->max_request);
		return GUESTOS_EXIT_WORKLOAD;
	}
	if (size % in->blk_size) {
		printk("blkbench: size=%lu is not a multiple of the block size %u\n", size,
		       in->blk_size);
		return GUESTOS_EXIT_WORKLOAD;
	}
	if (cfg.depth > in->slots) {
		printk(
		    "blkbench: depth %lu is more than the %u requests the queue holds; using %u\n",
		    cfg.depth, in->slots, in->slots);
		cfg.depth = in->slots;
	}
	if (cfg.write && in->ro) {
		printk("blkbench: disk %lu is read-only\n", cfg.t.disk);
		return GUESTOS_EXIT_WORKLOAD;
	}
	buf = blk_ram_place(cfg.depth * cfg.req);
	if (!buf) {
		printk("blkbench: no room for %lu buffers of %lu bytes\n", cfg.depth, cfg.req);
		return GUESTOS_EXIT_WORKLOAD;
	}
	if (size > in->capacity)
		printk(
		    "blkbench: size %lu is past the end of the disk (%lu bytes): the device gets "
		    "the requests beyond it unchecked\n",
		    size, in->capacity);
	if (cfg.write)
		for (uint64_t i = 0; i < cfg.depth * cfg.req / 8; i++)
			((uint64_t *)buf)[i] = blk_mix64(i);

	for (uint64_t p = 0; p < cfg.passes; p++) {
		uint64_t cycles, failed, requests;

		if (!bench_pass(d, buf, size, &cycles, &failed, &requests))
			return GUESTOS_EXIT_WORKLOAD;
		if (failed) {
			printk("blkbench: pass %lu: %lu of %lu requests failed\n", p + 1, failed,
			       requests);
			bad_passes++;
			break;
		}
		printk("blkbench: %s %lu bytes in %lu tsc cycles (req %lu, depth %lu)\n",
		       cfg.write ? "write" : "read", size, cycles, cfg.req, cfg.depth);
	}
	printk("blkbench: %lu requests, %lu notifies\n", vblk_requests(d), vblk_notifies(d));
	if (bad_passes) {
		int st = vblk_sync(d, VBLK_T_IN, 0, buf, in->blk_size);

		if (st == VBLK_S_OK)
			printk("blkbench: disk %lu still answers after the errors\n", cfg.t.disk);
		else
			printk("blkbench: disk %lu no longer answers: %s\n", cfg.t.disk,
			       st < 0 ? "driver error" : vblk_status_name((unsigned)st));
		return GUESTOS_EXIT_WORKLOAD;
	}
	printk("blkbench ok\n");
	return GUESTOS_EXIT_OK;
}

static enum guestos_exit bench_run(unsigned cpu, unsigned nr)
{
	enum guestos_exit e = GUESTOS_EXIT_OK;

	if (cpu == 0)
		e = bench_all();
	smp_barrier();
	return e;
}

static int bench_bad(const char *a)
{
	printk("blkbench: bad argument '%s' (usage: %s)\n", a, bench_usage);
	return -1;
}

static int bench_parse(const struct cmdline *cl)
{
	blk_target_init(&cfg.t, cl);
	cfg.size = 0;
	cfg.req = 1 << 20;
	cfg.depth = 32;
	cfg.passes = 1;
	cfg.write = false;
	for (unsigned i = 1; i < cl->argc; i++) {
		const char *a = cl->argv[i], *v;

		if ((v = cmdline_value(a, "disk"))) {
			if (parse_u64(v, &cfg.t.disk) < 0 || cfg.t.disk >= VIRTIO_MMIO_MAX)
				return bench_bad(a);
		} else if ((v = cmdline_value(a, "size"))) {
			if (parse_size(v, &cfg.size) < 0 || cfg.size == 0)
				return bench_bad(a);
		} else if ((v = cmdline_value(a, "req"))) {
			if (parse_size(v, &cfg.req) < 0 || cfg.req == 0 || cfg.req > (1u << 30))
				return bench_bad(a);
		} else if ((v = cmdline_value(a, "depth"))) {
			if (parse_u64(v, &cfg.depth) < 0 || cfg.depth == 0 ||
			    cfg.depth > BENCH_MAX_DEPTH)
				return bench_bad(a);
		} else if ((v = cmdline_value(a, "passes"))) {
			if (parse_u64(v, &cfg.passes) < 0 || cfg.passes == 0)
				return bench_bad(a);
		} else if ((v = cmdline_value(a, "mode"))) {
			if (strcmp(v, "read") && strcmp(v, "write"))
				return bench_bad(a);
			cfg.write = !strcmp(v, "write");
		} else {
			return bench_bad(a);
		}
	}
	if (!guestos_bootinfo.has_memmap) {
		printk("blkbench: start_info has no memory map\n");
		return -1;
	}
	return 0;
}

const struct workload workload_blkbench = {
    .name = "blkbench",
    .usage = bench_usage,
    .parse = bench_parse,
    .run = bench_run,
};
