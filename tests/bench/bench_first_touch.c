/*
 * First touch of fresh guest memory through userfaultfd, against the host
 * first-touching the same amount of anonymous memory, in the same run.
 *
 *   bench-first-touch [SIZE] [WINDOW...]     defaults: 1G, windows 4K 64K 1M 2M
 *
 * The toucher is a host thread writing one byte per page, exactly the
 * access a vCPU makes, so the uffd round trip (event, UFFDIO_COPY, wake)
 * is what is measured.  A guest's own first touch through KVM adds the
 * fault delivery inside KVM_RUN on top; tests/bench/run.sh measures that
 * with guestos when /dev/kvm is present.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "hyperkernel.h"
#include "node.h"

static double touch(volatile uint8_t *p, uint64_t size)
{
	uint64_t t0 = hk_now_ns();

	for (uint64_t off = 0; off < size; off += 4096)
		p[off] = 1;
	return (hk_now_ns() - t0) / 1e9;
}

static double host_first_touch(uint64_t size)
{
	uint8_t *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	double s;

	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	madvise(p, size, MADV_NOHUGEPAGE); /* same page size as guest RAM */
	s = touch(p, size);
	munmap(p, size);
	return s;
}

static double uffd_first_touch(uint64_t size, uint64_t window, uint64_t *faults)
{
	struct hk_mem_stats st;
	struct hk_mem *m;
	char err[256];
	double s;

	/* Guest RAM must be at least 64 MiB and starts at GPA 0. */
	if (hk_mem_create(size, window, &m, err, sizeof(err))) {
		fprintf(stderr, "bench: %s\n", err);
		exit(1);
	}
	s = touch(hk_mem_gpa(m, 0, size), size);
	hk_mem_get_stats(m, &st);
	*faults = st.faults;
	hk_mem_destroy(m);
	return s;
}

int main(int argc, char **argv)
{
	const char *def_windows[] = {"4K", "64K", "1M", "2M"};
	const char **windows = def_windows;
	int nwin = 4;
	uint64_t size = 1ull << 30;
	char buf[32];
	double host;

	if (argc > 1 && hk_parse_size(argv[1], &size)) {
		fprintf(stderr, "bench: bad size '%s'\n", argv[1]);
		return 2;
	}
	if (argc > 2) {
		windows = (const char **)argv + 2;
		nwin = argc - 2;
	}
	host = host_first_touch(size);
	printf("first touch of %s, 4 KiB pages\n", hk_format_size(size, buf, sizeof(buf)));
	printf("%-26s %9.3f s  %8.2f GiB/s  %6.2f us/page\n", "host anonymous memory", host,
	       size / host / (1 << 30), host * 1e6 / (size / 4096));
	for (int i = 0; i < nwin; i++) {
		uint64_t w, faults;
		double s;

		if (hk_parse_size(windows[i], &w)) {
			fprintf(stderr, "bench: bad window '%s'\n", windows[i]);
			return 2;
		}
		s = uffd_first_touch(size, w, &faults);
		snprintf(buf, sizeof(buf), "uffd, %s window", windows[i]);
		printf("%-26s %9.3f s  %8.2f GiB/s  %6.2f us/page  %7llu faults  %5.2fx host\n",
		       buf, s, size / s / (1 << 30), s * 1e6 / (size / 4096),
		       (unsigned long long)faults, s / host);
	}
	return 0;
}
