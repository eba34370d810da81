/*
 * kvdb data-set format: what the guest workload `kvdb` (guestos/kvdb.c)
 * reads from a virtual disk and what host tools write (`hkctl disk
 * mkdata`, tests/integration/kvdb_gen.c). One definition for both sides:
 * plain C, <stdint.h>/<stddef.h> only, no libc calls, no floating point,
 * no SSE (the guest is built -mgeneral-regs-only); everything is static
 * inline. All integers are little-endian (x86-64 on both sides).
 *
 * Disk layout, in 4 KiB blocks (byte offset = block * KVDB_BLOCK_SIZE):
 *
 *   block 0            superblock (struct kvdb_super, rest of the block 0)
 *   block 1 + i        record i, 0 <= i < record_count
 *                      (struct kvdb_record header, value, zeroes to 4 KiB)
 *
 * The disk may be larger than (1 + record_count) blocks; the rest is
 * ignored. Record i always holds key kvdb_key(i, seed): keys are a
 * bijection of the record index, so they are unique and a reader can name
 * keys that are present (index < record_count) or absent (>= record_count)
 * without a table. A put rewrites a record in place: generation + 1, a new
 * value (kvdb_fill_record), a new checksum.
 *
 * Checksums (kvdb_block_hash) cover the whole 4 KiB block with the
 * checksum word taken as 0, seeded with the block number and the data-set
 * seed: a flipped bit, a record written to the wrong block and a block of
 * another data set all fail verification.
 */
#ifndef KVDB_FORMAT_H
#define KVDB_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#define KVDB_BLOCK_SIZE	       4096u
#define KVDB_BLOCK_WORDS       (KVDB_BLOCK_SIZE / 8)
#define KVDB_SECTORS_PER_BLOCK (KVDB_BLOCK_SIZE / 512)
#define KVDB_FORMAT_VERSION    1u
#define KVDB_SUPER_MAGIC       0x4253564bu /* "KVSB" in disk byte order */
#define KVDB_RECORD_MAGIC      0x4244564bu /* "KVDB" in disk byte order */

/* The checksum field of both headers is 64-bit word 4 of its block. */
#define KVDB_CSUM_WORD 4u

/* Values are 1 KiB to the rest of the block after the 40-byte header. */
#define KVDB_VALUE_OFFSET 40u
#define KVDB_VALUE_MAX	  (KVDB_BLOCK_SIZE - KVDB_VALUE_OFFSET) /* 4056 */
#define KVDB_VALUE_MIN	  1024u

/* Block 0. Bytes after the struct are zero and covered by the checksum. */
struct kvdb_super {
	uint32_t magic;		   /*  0: KVDB_SUPER_MAGIC */
	uint32_t version;	   /*  4: KVDB_FORMAT_VERSION */
	uint64_t record_count;	   /*  8: records in blocks 1 .. record_count */
	uint32_t record_size;	   /* 16: KVDB_BLOCK_SIZE (one record per block) */
	uint32_t reserved;	   /* 20: 0 */
	uint64_t seed;		   /* 24: data-set seed: keys, values, checksums */
	uint64_t checksum;	   /* 32: kvdb_super_checksum() */
	uint64_t dataset_checksum; /* 40: kvdb state checksum as generated (all generation 0) */
};

/* Blocks 1 .. record_count: header, value_len bytes of value, zeroes. */
struct kvdb_record {
	uint32_t magic;	     /*  0: KVDB_RECORD_MAGIC */
	uint32_t version;    /*  4: KVDB_FORMAT_VERSION */
	uint64_t key;	     /*  8: kvdb_key(block - 1, seed) */
	uint64_t generation; /* 16: 0 as generated, + 1 per put */
	uint32_t value_len;  /* 24: KVDB_VALUE_MIN .. KVDB_VALUE_MAX */
	uint32_t reserved;   /* 28: 0 */
	uint64_t checksum;   /* 32: kvdb_record_checksum() */
};

_Static_assert(sizeof(struct kvdb_super) == 48, "kvdb_super layout");
_Static_assert(sizeof(struct kvdb_record) == KVDB_VALUE_OFFSET, "kvdb_record layout");
_Static_assert(offsetof(struct kvdb_super, checksum) == 8 * KVDB_CSUM_WORD, "super csum");
_Static_assert(offsetof(struct kvdb_record, checksum) == 8 * KVDB_CSUM_WORD, "record csum");

#define KVDB_GOLDEN 0x9e3779b97f4a7c15ULL

/* splitmix64's output function: a bijection with good avalanche. */
static inline uint64_t kvdb_mix64(uint64_t z)
{
	z += KVDB_GOLDEN;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* The key of record `index`: a bijection of index for a given seed. */
static inline uint64_t kvdb_key(uint64_t index, uint64_t seed)
{
	return kvdb_mix64(index ^ kvdb_mix64(seed ^ 0x6b65797370616365ULL));
}

/* One hash lane step: both halves are bijections, so any changed word changes the lane. */
static inline uint64_t kvdb_lane(uint64_t h, uint64_t w)
{
	h = (h ^ w) * 0xff51afd7ed558ccdULL;
	return h ^ (h >> 32);
}

/*
 * 64-bit hash of one 4 KiB block (8-byte aligned) with word `skip` read as
 * 0 (pass KVDB_BLOCK_WORDS to skip nothing). Four independent
 * multiply-xorshift lanes over 8-byte words hide the multiply latency
 * (~5 bytes a cycle, about memory speed); the lanes are folded together
 * with kvdb_mix64, a bijection in each lane, so any single changed word
 * changes the result.
 */
static inline uint64_t kvdb_block_hash(const void *block, unsigned skip, uint64_t seed)
{
	const uint64_t *w = (const uint64_t *)block;
	uint64_t a = kvdb_mix64(seed), b = kvdb_mix64(a), c = kvdb_mix64(b), d = kvdb_mix64(c);

	for (unsigned i = 0; i < KVDB_BLOCK_WORDS; i += 4) {
		uint64_t w0 = w[i], w1 = w[i + 1], w2 = w[i + 2], w3 = w[i + 3];

		if (i == (skip & ~3u)) {
			w0 = skip == i ? 0 : w0;
			w1 = skip == i + 1 ? 0 : w1;
			w2 = skip == i + 2 ? 0 : w2;
			w3 = skip == i + 3 ? 0 : w3;
		}
		a = kvdb_lane(a, w0);
		b = kvdb_lane(b, w1);
		c = kvdb_lane(c, w2);
		d = kvdb_lane(d, w3);
	}
	return kvdb_mix64(kvdb_mix64(kvdb_mix64(kvdb_mix64(a) ^ b) ^ c) ^ d);
}

static inline uint64_t kvdb_super_checksum(const void *block)
{
	return kvdb_block_hash(block, KVDB_CSUM_WORD, KVDB_SUPER_MAGIC);
}

/* Seeded with the block number: a valid record in the wrong block fails. */
static inline uint64_t kvdb_record_checksum(const void *block, uint64_t block_no, uint64_t seed)
{
	return kvdb_block_hash(block, KVDB_CSUM_WORD, kvdb_mix64(block_no) ^ seed);
}

/*
 * One record's share of the state checksum. The state checksum is the sum
 * (mod 2^64) of this over all records: independent of the order in which
 * records are visited, so of the vCPU count and of the index layout.
 */
static inline uint64_t kvdb_state_term(const struct kvdb_record *r)
{
	return kvdb_mix64(r->checksum ^ kvdb_mix64(r->key));
}

/*
 * Writes a complete record into block (4 KiB, 8-byte aligned): the value
 * is a pseudo-random function of (key, generation, seed), 1 KiB to 4056
 * bytes long; the rest of the block is zero.
 */
static inline void kvdb_fill_record(void *block, uint64_t block_no, uint64_t key,
				    uint64_t generation, uint64_t seed)
{
	uint64_t *w = (uint64_t *)block;
	struct kvdb_record *r = (struct kvdb_record *)block;
	uint64_t vkey = kvdb_mix64(key ^ kvdb_mix64(generation ^ kvdb_mix64(seed)));
	uint32_t len = KVDB_VALUE_MIN + (uint32_t)(vkey % (KVDB_VALUE_MAX - KVDB_VALUE_MIN + 1));
	unsigned first = KVDB_VALUE_OFFSET / 8, full = first + len / 8, i;

	r->magic = KVDB_RECORD_MAGIC;
	r->version = KVDB_FORMAT_VERSION;
	r->key = key;
	r->generation = generation;
	r->value_len = len;
	r->reserved = 0;
	r->checksum = 0;
	for (i = first; i < full; i++)
		w[i] = kvdb_mix64(vkey + (uint64_t)i * KVDB_GOLDEN);
	if (len % 8) /* the last partial word: value bytes low, zeroes above */
		w[i++] = kvdb_mix64(vkey + (uint64_t)full * KVDB_GOLDEN) &
			 ((1ULL << (8 * (len % 8))) - 1);
	for (; i < KVDB_BLOCK_WORDS; i++)
		w[i] = 0;
	r->checksum = kvdb_record_checksum(block, block_no, seed);
}

/* Record `index` as generated: key kvdb_key(index, seed), generation 0. */
static inline void kvdb_make_record(void *block, uint64_t index, uint64_t seed)
{
	kvdb_fill_record(block, index + 1, kvdb_key(index, seed), 0, seed);
}

/*
 * The superblock (4 KiB, 8-byte aligned). dataset_checksum is the sum of
 * kvdb_state_term() over the generated records, which a generator adds up
 * as it writes them.
 */
static inline void kvdb_make_super(void *block, uint64_t record_count, uint64_t seed,
				   uint64_t dataset_checksum)
{
	uint64_t *w = (uint64_t *)block;
	struct kvdb_super *s = (struct kvdb_super *)block;

	for (unsigned i = 0; i < KVDB_BLOCK_WORDS; i++)
		w[i] = 0;
	s->magic = KVDB_SUPER_MAGIC;
	s->version = KVDB_FORMAT_VERSION;
	s->record_count = record_count;
	s->record_size = KVDB_BLOCK_SIZE;
	s->seed = seed;
	s->dataset_checksum = dataset_checksum;
	s->checksum = kvdb_super_checksum(block);
}

#endif /* KVDB_FORMAT_H */
