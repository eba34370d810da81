/*
 * kvdb [disk=N] [ops=N] [seed=S] [writeback=0|1]
 *
 * An in-memory key-value store whose data set lives on a virtio-blk disk
 * (format: kvdb_format.h). It
 *
 *  1. reads the superblock (block 0) of the disk-th virtio-blk device;
 *  2. reads every record with large sequential requests (up to 1 MiB,
 *     as many in flight as the queue holds, one notify per batch) straight
 *     into one arena: disk block b lands at arena + b * 4 KiB, and the
 *     arena's address depends only on the memory map (the lowest 2 MiB
 *     boundary >= 64 MiB where it fits), so the same blocks land on the same
 *     guest-physical pages on every boot;
 *  3. verifies every record (magic, key, length, checksum) and inserts it
 *     into an open-addressing hash index (key -> record), chunk by chunk as
 *     reads complete, on every vCPU; a bad record is reported by number and
 *     block and the workload fails (exit value 1): it is never served;
 *  4. serves `ops` deterministic gets (1/16 of them for absent keys) and
 *     puts (1/4 of all ops; new value, generation + 1, new checksum, in
 *     place), on vCPU 0;
 *  5. writes the modified records back (writeback=1, the default), runs of
 *     adjacent blocks as one OUT request each, then FLUSH;
 *  6. prints the state checksum: the sum of kvdb_state_term() over all
 *     records, which depends on the records only (not on vCPUs or order).
 *
 * The lines "kvdb: loading", "kvdb: loaded", "kvdb: serving", "kvdb: ops",
 * "kvdb: wrote back", "kvdb checksum" and "kvdb ok" are parsed by tools.
 * Errors (no disk, bad superblock, I/O error, corrupt record) are one line
 * and exit value 1; a bad command line is exit value 2.
 */
#include "guestos.h"
#include "kvdb_format.h"

#define ARENA_MIN   (64ULL << 20) /* above any guestos image */
#define ARENA_ALIGN (2ULL << 20)
#define CHUNK_MAX   (1u << 20)	  /* bytes per read request */
#define MAX_RECORDS 0xfffffffeULL /* the index stores record + 1 in 32 bits */
#define MAX_OPS	    (1ULL << 40)
#define DONE_BATCH  64

static const char kvdb_usage[] = "kvdb [disk=N] [ops=N] [seed=S] [writeback=0|1]";

/* Written by vCPU 0 in parse(). */
static struct {
	uint64_t disk;
	uint64_t ops;
	uint64_t seed;
	bool writeback;
	unsigned nr_windows;
	struct virtio_mmio_window windows[VIRTIO_MMIO_MAX];
} cfg;

/* Written by vCPU 0 before the first barrier; read-only afterwards except where noted. */
static struct {
	struct vblk *dev;
	uint64_t nrec;	       /* records: blocks 1 .. nrec */
	uint64_t seed;	       /* data-set seed */
	uint64_t dataset_csum; /* from the superblock */
	uint8_t *arena;	       /* disk block b at arena + b * KVDB_BLOCK_SIZE */
	uint32_t *index;       /* record + 1, 0 = empty; CAS-inserted during the load */
	uint64_t index_mask;
	uint8_t *chunk_ready; /* per chunk: its read completed (vCPU 0 sets it) */
	uint64_t *dirty;      /* per record: modified by a put (vCPU 0 only) */
	uint64_t chunk_recs;  /* records per read request */
	uint64_t nchunks;
	uint64_t t0;			       /* tsc at the first read */
	uint64_t next_check CACHELINE_ALIGNED; /* next chunk to verify (CAS) */
	uint32_t abort;			       /* vCPU 0: the load failed, stop waiting */
	bool stop;			       /* vCPU 0, between barriers: end the workload */
	enum guestos_exit exit;
} db;

enum bad_why { BAD_NONE, BAD_MAGIC, BAD_KEY, BAD_LENGTH, BAD_CHECKSUM, BAD_DUPLICATE };

static const char *const bad_names[] = {
    [BAD_NONE] = "",
    [BAD_MAGIC] = "bad magic or version",
    [BAD_KEY] = "wrong key for its block",
    [BAD_LENGTH] = "bad value length",
    [BAD_CHECKSUM] = "checksum mismatch",
    [BAD_DUPLICATE] = "duplicate key",
};

/* One vCPU's share of the load; a cache line each. */
struct load_result {
	uint64_t state;	   /* sum of kvdb_state_term over good records */
	uint64_t good;	   /* records verified and indexed */
	uint64_t pristine; /* of those, at generation 0 */
	uint64_t nbad;
	uint64_t bad_rec; /* lowest bad record */
	enum bad_why why;
} CACHELINE_ALIGNED;

static struct load_result results[GUESTOS_MAX_VCPUS];

/*
 * The superblock is read before the arena's place is known: straight to
 * ARENA_MIN, where the arena nearly always starts, if that is RAM, else
 * here; place_memory() copies it into the arena if it landed elsewhere.
 */
static uint8_t super_fallback[KVDB_BLOCK_SIZE] __attribute__((aligned(4096)));
static uint8_t *super_buf;
static char disk_id[VBLK_ID_BYTES + 1] __attribute__((aligned(64)));

static inline struct kvdb_record *record(uint64_t i)
{
	return (struct kvdb_record *)(db.arena + (i + 1) * KVDB_BLOCK_SIZE);
}

static void zero64(void *p, uint64_t bytes)
{
	uint64_t *w = p;

	for (uint64_t n = bytes / 8; n; n--)
		*w++ = 0;
}

static uint64_t round_up(uint64_t v, uint64_t align)
{
	return (v + align - 1) & ~(align - 1);
}

/* ---- the hash index ---------------------------------------------------- */

/* Lock-free insert; false if the key is already there. */
static bool index_insert(uint64_t key, uint32_t rec)
{
	uint64_t h = kvdb_mix64(key) & db.index_mask;

	for (;;) {
		uint32_t cur = __atomic_load_n(&db.index[h], __ATOMIC_ACQUIRE);

		if (cur == 0 && __atomic_compare_exchange_n(&db.index[h], &cur, rec + 1, false,
							    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
			return true;
		/* cur: the record that holds this slot (the CAS loser reloads it) */
		if (record(cur - 1)->key == key)
			return false;
		h = (h + 1) & db.index_mask;
	}
}

/* The record holding key, or -1. */
static int64_t index_find(uint64_t key)
{
	for (uint64_t h = kvdb_mix64(key) & db.index_mask;; h = (h + 1) & db.index_mask) {
		uint32_t cur = db.index[h];

		if (cur == 0)
			return -1;
		if (record(cur - 1)->key == key)
			return cur - 1;
	}
}

/* ---- load: verify and index, chunk by chunk ----------------------------- */

static enum bad_why check_record(uint64_t i)
{
	const struct kvdb_record *r = record(i);

	if (r->magic != KVDB_RECORD_MAGIC || r->version != KVDB_FORMAT_VERSION)
		return BAD_MAGIC;
	if (r->key != kvdb_key(i, db.seed))
		return BAD_KEY;
	if (r->value_len < KVDB_VALUE_MIN || r->value_len > KVDB_VALUE_MAX || r->reserved)
		return BAD_LENGTH;
	if (r->checksum != kvdb_record_checksum(r, i + 1, db.seed))
		return BAD_CHECKSUM;
	return BAD_NONE;
}

static void check_chunk(struct load_result *res, uint64_t c)
{
	uint64_t lo = c * db.chunk_recs;
	uint64_t hi = lo + db.chunk_recs < db.nrec ? lo + db.chunk_recs : db.nrec;

	for (uint64_t i = lo; i < hi; i++) {
		enum bad_why why = check_record(i);

		if (why == BAD_NONE && !index_insert(record(i)->key, (uint32_t)i))
			why = BAD_DUPLICATE;
		if (why != BAD_NONE) {
			if (!res->nbad++ || i < res->bad_rec) {
				res->bad_rec = i;
				res->why = why;
			}
			continue;
		}
		res->state += kvdb_state_term(record(i));
		res->pristine += record(i)->generation == 0;
		res->good++;
	}
}

/*
 * Verifies the next chunk whose read is done. With wait, spins until one
 * is ready; false when none is left (or the load was aborted).
 */
static bool check_next(unsigned cpu, bool wait)
{
	for (;;) {
		uint64_t c = __atomic_load_n(&db.next_check, __ATOMIC_ACQUIRE);

		if (c >= db.nchunks || __atomic_load_n(&db.abort, __ATOMIC_ACQUIRE))
			return false;
		if (!__atomic_load_n(&db.chunk_ready[c], __ATOMIC_ACQUIRE)) {
			if (!wait)
				return false;
			cpu_relax();
			continue;
		}
		if (__atomic_compare_exchange_n(&db.next_check, &c, c + 1, false, __ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE)) {
			check_chunk(&results[cpu], c);
			return true;
		}
	}
}

static void io_failed(const struct vblk_done *d)
{
	printk("kvdb: disk %lu: %s of %u blocks at block %lu failed: %s (status %u)\n", cfg.disk,
	       d->type == VBLK_T_OUT ? "write" : "read", d->len / KVDB_BLOCK_SIZE,
	       d->sector / KVDB_SECTORS_PER_BLOCK, vblk_status_name(d->status), d->status);
}

/*
 * vCPU 0: keeps the queue full of chunk reads (one kick per batch),
 * publishes finished chunks to the checkers, and checks chunks itself
 * while reads are in flight. Returns false after one line on an I/O error.
 */
static bool load_chunks(void)
{
	struct vblk_done done[DONE_BATCH];
	uint64_t next = 0, finished = 0;

	while (finished < db.nchunks) {
		bool queued = false;
		int n;

		while (next < db.nchunks && vblk_can_submit(db.dev)) {
			uint64_t lo = next * db.chunk_recs;
			uint64_t recs = db.nrec - lo < db.chunk_recs ? db.nrec - lo : db.chunk_recs;

			if (vblk_submit(db.dev, VBLK_T_IN, (lo + 1) * KVDB_SECTORS_PER_BLOCK,
					record(lo), (uint32_t)(recs * KVDB_BLOCK_SIZE), next) < 0)
				return false;
			next++;
			queued = true;
		}
		if (queued)
			vblk_kick(db.dev);
		n = vblk_poll(db.dev, done, DONE_BATCH);
		if (n < 0)
			return false;
		for (int i = 0; i < n; i++) {
			if (done[i].status != VBLK_S_OK) {
				io_failed(&done[i]);
				return false;
			}
			__atomic_store_n(&db.chunk_ready[done[i].cookie], 1, __ATOMIC_RELEASE);
			finished++;
		}
		/* While the device works: verify what has arrived. */
		if (!check_next(0, false) && n == 0)
			cpu_relax();
	}
	return true;
}

/* ---- vCPU 0: device, superblock, memory ---------------------------------- */

static const char *features_text(const struct vblk_info *in)
{
	static char text[64];

	snprintf(text, sizeof(text), "%s%s%s", in->event_idx ? " event-idx" : "",
		 in->flush ? " flush" : "", in->ro ? " read-only" : "");
	return text;
}

/* The device's serial, or "" if it has none; false if the device broke. */
static bool read_disk_id(void)
{
	int st = vblk_sync(db.dev, VBLK_T_GET_ID, 0, disk_id, VBLK_ID_BYTES);

	if (st != VBLK_S_OK) {
		disk_id[0] = '\0';
		return st >= 0;
	}
	/* Up to 20 bytes, NUL-terminated if shorter; keep it printable. */
	disk_id[VBLK_ID_BYTES] = '\0';
	for (unsigned i = 0; i < VBLK_ID_BYTES && disk_id[i]; i++)
		if (disk_id[i] < 0x20 || disk_id[i] > 0x7e)
			disk_id[i] = '?';
	return true;
}

static bool super_ok(const struct vblk_info *in)
{
	const struct kvdb_super *s = (const struct kvdb_super *)super_buf;
	const char *why = NULL;
	char detail[96] = "";

	if (s->magic != KVDB_SUPER_MAGIC) {
		why = "magic";
		snprintf(detail, sizeof(detail), " 0x%08x, want 0x%08x", s->magic,
			 KVDB_SUPER_MAGIC);
	} else if (s->version != KVDB_FORMAT_VERSION) {
		why = "format version";
		snprintf(detail, sizeof(detail), " %u, want %u", s->version, KVDB_FORMAT_VERSION);
	} else if (s->checksum != kvdb_super_checksum(super_buf)) {
		why = "checksum";
	} else if (s->record_size != KVDB_BLOCK_SIZE) {
		why = "record size";
		snprintf(detail, sizeof(detail), " %u, want %u", s->record_size, KVDB_BLOCK_SIZE);
	} else if (s->record_count == 0 || s->record_count > MAX_RECORDS) {
		why = "record count";
		snprintf(detail, sizeof(detail), " %lu", s->record_count);
	} else if (s->record_count + 1 > in->capacity / KVDB_BLOCK_SIZE) {
		why = "size";
		snprintf(detail, sizeof(detail), ": %lu records, the disk holds %lu blocks",
			 s->record_count, in->capacity / KVDB_BLOCK_SIZE);
	}
	if (why) {
		printk("kvdb: disk %lu: bad superblock (%s%s)\n", cfg.disk, why, detail);
		return false;
	}
	db.nrec = s->record_count;
	db.seed = s->seed;
	db.dataset_csum = s->dataset_checksum;
	return true;
}

/*
 * Arena (all records) then the index, the chunk flags and the dirty
 * bitmap, in one range of RAM: the lowest 2 MiB boundary at or above
 * ARENA_MIN where everything fits. Depends on the memory map only.
 */
static bool place_memory(void)
{
	const struct bootinfo *bi = &guestos_bootinfo;
	uint64_t arena = round_up((db.nrec + 1) * KVDB_BLOCK_SIZE, ARENA_ALIGN);
	uint64_t slots = 1024, index_bytes, chunk_bytes, dirty_bytes, need, base = 0;
	uint8_t *p;

	while (slots < 2 * db.nrec)
		slots *= 2;
	index_bytes = slots * sizeof(uint32_t);
	chunk_bytes = round_up(db.nchunks, 64);
	dirty_bytes = round_up((db.nrec + 63) / 64 * 8, 64);
	need = arena + index_bytes + chunk_bytes + dirty_bytes;

	for (unsigned i = 0; i < bi->nr_usable && !base; i++) {
		uint64_t lo = bi->usable[i].base, end = lo + bi->usable[i].len;
		uint64_t b = round_up(lo > ARENA_MIN ? lo : ARENA_MIN, ARENA_ALIGN);

		if (b < end && end - b >= need)
			base = b;
	}
	if (!base) {
		printk("kvdb: %lu records need %lu MiB of RAM in one range above %llu MiB; "
		       "the guest has too little\n",
		       db.nrec, need >> 20, ARENA_MIN >> 20);
		return false;
	}
	db.arena = (uint8_t *)(uintptr_t)base;
	p = db.arena + arena;
	db.index = (uint32_t *)p;
	db.index_mask = slots - 1;
	db.chunk_ready = p + index_bytes;
	db.dirty = (uint64_t *)(p + index_bytes + chunk_bytes);
	/* Fresh RAM is zero, but a rebooted guest's is not. */
	zero64(p, index_bytes + chunk_bytes + dirty_bytes);
	/* The arena mirrors the disk from block 0 on. */
	if (super_buf != db.arena)
		for (unsigned i = 0; i < KVDB_BLOCK_WORDS; i++)
			((uint64_t *)db.arena)[i] = ((const uint64_t *)super_buf)[i];
	return true;
}

static bool is_ram(uint64_t base, uint64_t len)
{
	const struct bootinfo *bi = &guestos_bootinfo;

	for (unsigned i = 0; i < bi->nr_usable; i++)
		if (base >= bi->usable[i].base && base - bi->usable[i].base < bi->usable[i].len &&
		    len <= bi->usable[i].len - (base - bi->usable[i].base))
			return true;
	return false;
}

static enum guestos_exit setup(void)
{
	const struct vblk_info *in;
	uint64_t chunk;
	int st;

	if (cfg.nr_windows == 0) {
		printk("kvdb: no disk: the command line has no virtio_mmio.device=\n");
		return GUESTOS_EXIT_WORKLOAD;
	}
	db.dev = vblk_open(cfg.windows, cfg.nr_windows, (unsigned)cfg.disk);
	if (!db.dev)
		return GUESTOS_EXIT_WORKLOAD;
	in = vblk_info(db.dev);
	if (!read_disk_id())
		return GUESTOS_EXIT_WORKLOAD;
	printk("kvdb: disk %lu: virtio-blk at 0x%lx, %lu MiB, block %u, queue %u, %u requests "
	       "of up to %u KiB,%s id \"%s\"\n",
	       cfg.disk, in->base, in->capacity >> 20, in->blk_size, in->queue_size, in->slots,
	       in->max_request >> 10, features_text(in), disk_id);
	if (cfg.writeback && in->ro) {
		printk("kvdb: disk %lu is read-only (run with writeback=0)\n", cfg.disk);
		return GUESTOS_EXIT_WORKLOAD;
	}
	chunk = in->max_request < CHUNK_MAX ? in->max_request : CHUNK_MAX;
	db.chunk_recs = chunk / KVDB_BLOCK_SIZE;
	if (db.chunk_recs == 0) {
		printk("kvdb: disk %lu takes requests of %u bytes at most; records are %u\n",
		       cfg.disk, in->max_request, KVDB_BLOCK_SIZE);
		return GUESTOS_EXIT_WORKLOAD;
	}

	super_buf =
	    is_ram(ARENA_MIN, KVDB_BLOCK_SIZE) ? (uint8_t *)(uintptr_t)ARENA_MIN : super_fallback;
	db.t0 = rdtsc();
	st = vblk_sync(db.dev, VBLK_T_IN, 0, super_buf, KVDB_BLOCK_SIZE);
	if (st != VBLK_S_OK) {
		if (st > 0)
			printk("kvdb: disk %lu: reading the superblock failed: %s (status %d)\n",
			       cfg.disk, vblk_status_name((unsigned)st), st);
		return GUESTOS_EXIT_WORKLOAD;
	}
	if (!super_ok(in))
		return GUESTOS_EXIT_WORKLOAD;
	db.nchunks = (db.nrec + db.chunk_recs - 1) / db.chunk_recs;
	if (!place_memory())
		return GUESTOS_EXIT_WORKLOAD;
	printk("kvdb: loading %lu records (%lu MiB) from disk %lu\n", db.nrec,
	       (db.nrec * KVDB_BLOCK_SIZE + (1 << 20) - 1) >> 20, cfg.disk);
	printk("kvdb: arena 0x%lx, index 0x%lx (%lu slots), %lu reads of up to %lu KiB\n",
	       (uint64_t)(uintptr_t)db.arena, (uint64_t)(uintptr_t)db.index, db.index_mask + 1,
	       db.nchunks, db.chunk_recs * KVDB_BLOCK_SIZE >> 10);
	return GUESTOS_EXIT_OK;
}

/* vCPU 0 after the load barrier: the verdict on what every vCPU checked. */
static bool load_verdict(unsigned nr, uint64_t *state)
{
	struct load_result all = {0};

	for (unsigned i = 0; i < nr; i++) {
		const struct load_result *r = &results[i];

		all.state += r->state;
		all.good += r->good;
		all.pristine += r->pristine;
		if (r->nbad && (!all.nbad || r->bad_rec < all.bad_rec)) {
			all.bad_rec = r->bad_rec;
			all.why = r->why;
		}
		all.nbad += r->nbad;
	}
	if (all.nbad) {
		printk("kvdb: record %lu at block %lu corrupt (%s)\n", all.bad_rec, all.bad_rec + 1,
		       bad_names[all.why]);
		if (all.nbad > 1)
			printk("kvdb: %lu corrupt records in all\n", all.nbad);
		return false;
	}
	if (all.good != db.nrec) {
		printk("kvdb: checked %lu of %lu records\n", all.good, db.nrec);
		return false;
	}
	if (all.pristine == db.nrec && all.state != db.dataset_csum) {
		printk("kvdb: data set checksum 0x%016lx, superblock says 0x%016lx\n", all.state,
		       db.dataset_csum);
		return false;
	}
	*state = all.state;
	return true;
}

/* ---- vCPU 0: serving and writing back ---------------------------------- */

static bool serve(uint64_t *state)
{
	uint64_t opkey = kvdb_mix64(cfg.seed ^ 0x6f7073ULL), digest = 0;
	uint64_t gets = 0, puts = 0, misses = 0, t = rdtsc();

	for (uint64_t op = 0; op < cfg.ops; op++) {
		uint64_t x = kvdb_mix64(opkey + op);
		uint64_t rec = ((x & 0xffffffffULL) * db.nrec) >> 32;
		uint64_t key = kvdb_key(rec, db.seed);
		bool put = ((x >> 32) & 3) == 0, miss = !put && ((x >> 34) & 15) == 0;
		int64_t got;

		if (miss) {
			key = kvdb_key(db.nrec + rec, db.seed);
			if ((got = index_find(key)) >= 0) {
				printk("kvdb: absent key 0x%016lx found at record %ld\n", key, got);
				return false;
			}
			gets++;
			misses++;
			continue;
		}
		got = index_find(key);
		if (got != (int64_t)rec) {
			printk("kvdb: key 0x%016lx of record %lu found at %ld\n", key, rec, got);
			return false;
		}
		if (put) {
			struct kvdb_record *r = record(rec);

			*state -= kvdb_state_term(r);
			kvdb_fill_record(r, rec + 1, key, r->generation + 1, db.seed);
			*state += kvdb_state_term(r);
			db.dirty[rec / 64] |= 1ULL << (rec % 64);
			puts++;
		} else {
			const uint64_t *v = (const uint64_t *)record(rec) + KVDB_VALUE_OFFSET / 8;
			uint64_t sum = 0;

			for (uint32_t w = 0; w < (record(rec)->value_len + 7) / 8; w++)
				sum += v[w];
			digest = kvdb_mix64(digest ^ sum);
			gets++;
		}
	}
	t = rdtsc() - t;
	printk("kvdb: ops %lu gets %lu puts %lu in %lu tsc cycles\n", cfg.ops, gets, puts, t);
	printk("kvdb: %lu gets missed, value digest 0x%016lx\n", misses, digest);
	return true;
}

/* The next dirty record at or after i, or db.nrec. */
static uint64_t next_dirty(uint64_t i)
{
	while (i < db.nrec) {
		uint64_t w = db.dirty[i / 64] >> (i % 64);

		if (w)
			return i + (uint64_t)__builtin_ctzll(w);
		i = (i / 64 + 1) * 64;
	}
	return db.nrec;
}

static bool write_back(void)
{
	struct vblk_done done[DONE_BATCH];
	uint64_t i = next_dirty(0), records = 0, requests = 0, t = rdtsc();
	int st;

	if (!cfg.writeback) {
		for (uint64_t j = i; j < db.nrec; j = next_dirty(j + 1))
			records++;
		printk("kvdb: wrote back 0 records (writeback=0, %lu modified)\n", records);
		return true;
	}
	while (i < db.nrec || vblk_inflight(db.dev)) {
		bool queued = false;
		int n;

		/* Runs of adjacent modified blocks, a chunk at most, each one request. */
		while (i < db.nrec && vblk_can_submit(db.dev)) {
			uint64_t j = i + 1;

			while (j < db.nrec && j - i < db.chunk_recs && next_dirty(j) == j)
				j++;
			if (vblk_submit(db.dev, VBLK_T_OUT, (i + 1) * KVDB_SECTORS_PER_BLOCK,
					record(i), (uint32_t)((j - i) * KVDB_BLOCK_SIZE), i) < 0)
				return false;
			records += j - i;
			requests++;
			queued = true;
			i = next_dirty(j);
		}
		if (queued)
			vblk_kick(db.dev);
		n = vblk_poll(db.dev, done, DONE_BATCH);
		if (n < 0)
			return false;
		for (int k = 0; k < n; k++)
			if (done[k].status != VBLK_S_OK) {
				io_failed(&done[k]);
				return false;
			}
		if (n == 0)
			cpu_relax();
	}
	if (vblk_info(db.dev)->flush) {
		st = vblk_sync(db.dev, VBLK_T_FLUSH, 0, NULL, 0);
		if (st != VBLK_S_OK) {
			if (st > 0)
				printk("kvdb: disk %lu: flush failed: %s (status %d)\n", cfg.disk,
				       vblk_status_name((unsigned)st), st);
			return false;
		}
	}
	t = rdtsc() - t;
	printk("kvdb: wrote back %lu records\n", records);
	printk("kvdb: write-back %lu requests%s in %lu tsc cycles\n", requests,
	       vblk_info(db.dev)->flush ? " and a flush" : " (no flush: write-through disk)", t);
	return true;
}

static enum guestos_exit kvdb_run(unsigned cpu, unsigned nr)
{
	uint64_t state;

	if (cpu == 0) {
		db.exit = setup();
		db.stop = db.exit != GUESTOS_EXIT_OK;
	}
	smp_barrier();
	if (db.stop)
		return db.exit;

	if (cpu == 0) {
		if (!load_chunks())
			__atomic_store_n(&db.abort, 1, __ATOMIC_RELEASE);
	}
	while (check_next(cpu, true))
		;
	smp_barrier();
	/* From here on vCPU 0 works alone; the others' results are final. */
	if (cpu != 0)
		return GUESTOS_EXIT_OK;
	if (db.abort || !load_verdict(nr, &state))
		return GUESTOS_EXIT_WORKLOAD;
	printk("kvdb: loaded %lu records in %lu tsc cycles\n", db.nrec, rdtsc() - db.t0);
	printk("kvdb: loaded state 0x%016lx\n", state);
	printk("kvdb: serving\n");
	if (!serve(&state) || !write_back())
		return GUESTOS_EXIT_WORKLOAD;
	printk("kvdb: %lu virtio requests, %lu notifies\n", vblk_requests(db.dev),
	       vblk_notifies(db.dev));
	printk("kvdb checksum 0x%016lx\n", state);
	printk("kvdb ok\n");
	return GUESTOS_EXIT_OK;
}

static int bad_arg(const char *arg)
{
	printk("kvdb: bad argument '%s' (usage: %s)\n", arg, kvdb_usage);
	return -1;
}

static int kvdb_parse(const struct cmdline *cl)
{
	uint64_t wb = 1;

	cfg.disk = 0;
	cfg.ops = 100000;
	cfg.seed = 1;
	for (unsigned i = 1; i < cl->argc; i++) {
		const char *a = cl->argv[i], *v;

		if ((v = cmdline_value(a, "disk"))) {
			if (parse_u64(v, &cfg.disk) < 0 || cfg.disk >= VIRTIO_MMIO_MAX)
				return bad_arg(a);
		} else if ((v = cmdline_value(a, "ops"))) {
			if (parse_u64(v, &cfg.ops) < 0 || cfg.ops > MAX_OPS)
				return bad_arg(a);
		} else if ((v = cmdline_value(a, "seed"))) {
			if (parse_u64(v, &cfg.seed) < 0)
				return bad_arg(a);
		} else if ((v = cmdline_value(a, "writeback"))) {
			if (parse_u64(v, &wb) < 0 || wb > 1)
				return bad_arg(a);
		} else {
			return bad_arg(a);
		}
	}
	cfg.writeback = wb;
	if (!guestos_bootinfo.has_memmap) {
		printk("kvdb: start_info has no memory map\n");
		return -1;
	}
	cfg.nr_windows = cl->nr_virtio;
	for (unsigned i = 0; i < cl->nr_virtio; i++)
		cfg.windows[i] = cl->virtio[i];
	return 0;
}

const struct workload workload_kvdb = {
    .name = "kvdb",
    .usage = kvdb_usage,
    .parse = kvdb_parse,
    .run = kvdb_run,
};
