/*
 * kvdb-gen FILE SIZE SEED: writes a kvdb data set (guestos/kvdb_format.h)
 * of SIZE bytes (a multiple of 4 KiB, at least 8 KiB; K/M/G suffixes) to
 * FILE: the superblock and SIZE / 4 KiB - 1 records. For the QEMU tests
 * of guestos's kvdb workload only; `hkctl disk mkdata` is the real tool.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kvdb_format.h"

#define BATCH_BLOCKS 256 /* 1 MiB per write */

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	unsigned shift = 0;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s)
		return -1;
	switch (*end) {
	case 'k':
	case 'K':
		shift = 10;
		end++;
		break;
	case 'm':
	case 'M':
		shift = 20;
		end++;
		break;
	case 'g':
	case 'G':
		shift = 30;
		end++;
		break;
	default:
		break;
	}
	if (*end || v > (UINT64_MAX >> shift))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

static int write_all(int fd, const void *buf, size_t len, off_t off)
{
	const char *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static uint64_t buf[BATCH_BLOCKS * KVDB_BLOCK_WORDS];
	uint64_t size, seed, records, sum = 0;
	int fd;

	if (argc != 4 || parse_size(argv[2], &size) < 0 || parse_size(argv[3], &seed) < 0) {
		fprintf(stderr, "usage: kvdb-gen FILE SIZE SEED\n");
		return 2;
	}
	if (size % KVDB_BLOCK_SIZE || size < 2 * KVDB_BLOCK_SIZE ||
	    size / KVDB_BLOCK_SIZE - 1 > 0xfffffffeULL) {
		fprintf(stderr, "kvdb-gen: SIZE must be a multiple of 4 KiB, 8 KiB to 16 TiB\n");
		return 2;
	}
	records = size / KVDB_BLOCK_SIZE - 1;
	fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "kvdb-gen: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	for (uint64_t i = 0; i < records; i += BATCH_BLOCKS) {
		uint64_t n = records - i < BATCH_BLOCKS ? records - i : BATCH_BLOCKS;

		for (uint64_t j = 0; j < n; j++) {
			void *blk = &buf[j * KVDB_BLOCK_WORDS];

			kvdb_make_record(blk, i + j, seed);
			sum += kvdb_state_term(blk);
		}
		if (write_all(fd, buf, n * KVDB_BLOCK_SIZE, (off_t)((i + 1) * KVDB_BLOCK_SIZE)) < 0)
			goto fail;
	}
	kvdb_make_super(buf, records, seed, sum);
	if (write_all(fd, buf, KVDB_BLOCK_SIZE, 0) < 0 || fsync(fd) < 0)
		goto fail;
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	printf("kvdb-gen: %s: %" PRIu64 " records, seed %" PRIu64
	       ", data-set checksum 0x%016" PRIx64 "\n",
	       argv[1], records, seed, sum);
	return 0;
fail:
	fprintf(stderr, "kvdb-gen: %s: %s\n", argv[1], strerror(errno));
	if (fd >= 0)
		close(fd);
	return 1;
}
