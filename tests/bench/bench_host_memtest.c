/*
 * Host baseline for guest memtest bandwidth: memset + verify over memory
 * that is already resident, timed in TSC cycles like guestos does, so the
 * two figures compare without knowing the TSC frequency.
 *
 *   bench-host-memtest SIZE PASSES
 *
 * The first round runs on fresh memory (first touch, the host's own page
 * faults), the others on resident memory, mirroring guestos memtest's
 * "first-touch" and "pass N" lines:
 *   host first-touch fill+verify BYTES bytes CYCLES tsc cycles
 *   host pass N fill+verify BYTES bytes CYCLES tsc cycles
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <x86intrin.h>

#include "node.h"

int main(int argc, char **argv)
{
	uint64_t size, passes;
	uint64_t *p;

	if (argc != 3 || hk_parse_size(argv[1], &size) || hk_parse_size(argv[2], &passes) ||
	    !passes || size < 4096) {
		fprintf(stderr, "usage: bench-host-memtest SIZE PASSES\n");
		return 2;
	}
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	madvise(p, size, MADV_NOHUGEPAGE); /* 4 KiB pages, like guest RAM */
	for (uint64_t pass = 0; pass <= passes; pass++) {
		uint8_t v = (uint8_t)(0x5a + pass);
		uint64_t want = 0x0101010101010101ull * v, bad = 0;
		uint64_t t0 = __rdtsc();

		memset(p, v, size);
		for (uint64_t i = 0; i < size / 8; i++)
			bad |= p[i] ^ want;
		uint64_t t1 = __rdtsc();

		if (bad) {
			fprintf(stderr, "host memtest: verify failed\n");
			return 1;
		}
		if (pass == 0)
			printf("host first-touch fill+verify %llu bytes %llu tsc cycles\n",
			       (unsigned long long)size, (unsigned long long)(t1 - t0));
		else
			printf("host pass %llu fill+verify %llu bytes %llu tsc cycles\n",
			       (unsigned long long)pass, (unsigned long long)size,
			       (unsigned long long)(t1 - t0));
	}
	return 0;
}
