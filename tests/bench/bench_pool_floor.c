/*
 * Floor (a) of the remote page-fault benchmark: what a fault costs when it
 * is resolved from memory on this node, measured exactly as bench_pool.c
 * times a remote fault (one byte read by a plain thread, clock_gettime
 * around it).  The minimal handler is the floor; the hk_mem run shows what
 * hk's own fault thread adds on top of it.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bench_pool.h"
#include "hyperkernel.h"

#define PAGE HK_PAGE_SIZE

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return a < b ? -1 : a > b;
}

void lat_summarize(uint64_t *ns, size_t n, struct lat *out)
{
	double sum = 0;

	*out = (struct lat){.n = n};
	if (!n)
		return;
	for (size_t i = 0; i < n; i++)
		sum += (double)ns[i];
	qsort(ns, n, sizeof(*ns), cmp_u64);
	out->med_us = ns[n / 2] / 1e3;
	out->p99_us = ns[n * 99 / 100 < n ? n * 99 / 100 : n - 1] / 1e3;
	out->mean_us = sum / n / 1e3;
}

/* As hyperkernel/fault.c: the syscall, else /dev/userfaultfd (root-less
 * hosts with vm.unprivileged_userfaultfd=0). */
static int uffd_open(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	int dev;

	if (fd >= 0 || errno != EPERM)
		return fd;
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return -1;
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
	close(dev);
	return fd;
}

struct handler {
	int uffd, stop_fd;
	const uint8_t *page;
	bool wp;
	uint64_t copy_errors;
};

static void *handler_main(void *arg)
{
	struct handler *h = arg;
	struct uffd_msg msgs[64];

	for (;;) {
		struct pollfd p[2] = {{.fd = h->uffd, .events = POLLIN},
				      {.fd = h->stop_fd, .events = POLLIN}};
		ssize_t n;

		if (poll(p, 2, -1) < 0 && errno != EINTR)
			return NULL;
		if (p[1].revents)
			return NULL;
		n = read(h->uffd, msgs, sizeof(msgs));
		for (ssize_t i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++) {
			struct uffdio_copy c = {
			    .dst = msgs[i].arg.pagefault.address & ~(PAGE - 1),
			    .src = (uintptr_t)h->page,
			    .len = PAGE,
			    .mode = h->wp ? UFFDIO_COPY_MODE_WP : 0,
			};

			if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			if (ioctl(h->uffd, UFFDIO_COPY, &c) < 0 && errno != EEXIST)
				h->copy_errors++;
		}
	}
}

static void touch_pages(const uint8_t *base, unsigned pages, uint64_t *ns, uint8_t *last)
{
	volatile const uint8_t *p = base;
	uint8_t v = 0;

	for (unsigned i = 0; i < pages; i++) {
		uint64_t t0 = hk_now_ns();

		v ^= p[(uint64_t)i * PAGE];
		ns[i] = hk_now_ns() - t0;
	}
	*last = v;
}

int floor_uffd_minimal(unsigned pages, uint64_t *ns, char *err, size_t errlen)
{
	struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_PAGEFAULT_FLAG_WP};
	struct handler h = {.uffd = -1, .stop_fd = -1};
	uint64_t size = (uint64_t)pages * PAGE, one = 1;
	uint8_t *region = MAP_FAILED, *page = NULL, v;
	pthread_t t;
	int ret;

	h.uffd = uffd_open();
	if (h.uffd < 0) {
		ret = -errno;
		snprintf(err, errlen, "floor: userfaultfd: %s", strerror(errno));
		goto out;
	}
	if (ioctl(h.uffd, UFFDIO_API, &api) < 0) {
		/* No write-protect on this kernel: plain missing-page mode. */
		close(h.uffd);
		h.uffd = uffd_open();
		api = (struct uffdio_api){.api = UFFD_API};
		if (h.uffd < 0 || ioctl(h.uffd, UFFDIO_API, &api) < 0) {
			ret = -errno;
			snprintf(err, errlen, "floor: UFFDIO_API: %s", strerror(errno));
			goto out;
		}
	}
	h.wp = api.features & UFFD_FEATURE_PAGEFAULT_FLAG_WP;
	region = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	page = aligned_alloc(PAGE, PAGE);
	h.stop_fd = eventfd(0, EFD_CLOEXEC);
	if (region == MAP_FAILED || !page || h.stop_fd < 0) {
		ret = -ENOMEM;
		snprintf(err, errlen, "floor: cannot map %llu bytes", (unsigned long long)size);
		goto out;
	}
	madvise(region, size, MADV_NOHUGEPAGE); /* 4 KiB faults, as guest RAM */
	for (unsigned i = 0; i < PAGE; i++)
		page[i] = (uint8_t)(i * 7 + 1);
	h.page = page;
	struct uffdio_register reg = {
	    .range = {.start = (uintptr_t)region, .len = size},
	    .mode = UFFDIO_REGISTER_MODE_MISSING | (h.wp ? UFFDIO_REGISTER_MODE_WP : 0),
	};
	if (ioctl(h.uffd, UFFDIO_REGISTER, &reg) < 0) {
		ret = -errno;
		snprintf(err, errlen, "floor: UFFDIO_REGISTER: %s", strerror(errno));
		goto out;
	}
	ret = -pthread_create(&t, NULL, handler_main, &h);
	if (ret) {
		snprintf(err, errlen, "floor: handler thread: %s", strerror(-ret));
		goto out;
	}
	touch_pages(region, pages, ns, &v);
	if (write(h.stop_fd, &one, sizeof(one)) != sizeof(one))
		abort(); /* the handler would never leave */
	pthread_join(t, NULL);
	if (h.copy_errors || (pages % 2 == 0 && v) || (pages % 2 && v != page[0])) {
		ret = -EIO;
		snprintf(err, errlen, "floor: %llu UFFDIO_COPY failures or wrong data",
			 (unsigned long long)h.copy_errors);
	}
out:
	if (region != MAP_FAILED)
		munmap(region, size);
	free(page);
	if (h.stop_fd >= 0)
		close(h.stop_fd);
	if (h.uffd >= 0)
		close(h.uffd);
	return ret;
}

int floor_uffd_hk_mem(unsigned pages, uint64_t *ns, char *err, size_t errlen)
{
	uint64_t size = ((uint64_t)pages * PAGE + HK_MEM_ALIGN - 1) & ~(HK_MEM_ALIGN - 1);
	struct hk_mem *m;
	uint8_t v;
	int ret;

	if (size < HK_MEM_MIN)
		size = HK_MEM_MIN;
	ret = hk_mem_create(size, PAGE, &m, err, errlen);
	if (ret)
		return ret;
	touch_pages(hk_mem_gpa(m, 0, size), pages, ns, &v);
	hk_mem_destroy(m);
	return v ? -EIO : 0;
}
