/*
 * The fault thread: every access to a missing guest page — by a vCPU inside
 * KVM_RUN, by the loader, by a device model — blocks in the kernel and
 * arrives here as a userfaultfd event.  We resolve it with UFFDIO_COPY, so
 * the hyper-kernel, not the kernel's zero page, decides what a page holds.
 * Today that is zeros for never-written memory; P3 fetches pages from
 * other nodes and S2 restores them from disk through this same path.
 *
 * A vCPU blocked on a fault is not released by signals (ARCHITECTURE.md),
 * so this thread must never wait on anything a vCPU holds.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "hk_internal.h"
#include "mem_internal.h"
#include "pool_internal.h"

#define FAULT_BATCH 64

static int uffd_open(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	int dev;

	if (fd >= 0 || errno != EPERM)
		return fd;
	/* Without CAP_SYS_PTRACE and with vm.unprivileged_userfaultfd=0 the
	 * syscall only offers user-mode faults, which would miss KVM's own
	 * accesses; /dev/userfaultfd grants full uffds by file permission. */
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return -1;
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
	close(dev);
	return fd;
}

static void fault_wake(struct hk_mem *mem, uint64_t addr, uint64_t len)
{
	struct uffdio_range r = {.start = addr, .len = len};

	if (ioctl(mem->uffd, UFFDIO_WAKE, &r) < 0)
		fprintf(stderr, "hyperkernel: UFFDIO_WAKE 0x%llx: %s\n",
			(unsigned long long)r.start, strerror(errno));
}

/*
 * Fill one window with zeros.  Pages already present (EEXIST) are skipped
 * one at a time; the kernel reports how far it got before stopping.
 * Copies do not wake anyone (DONTWAKE): the bookkeeping is finished first
 * and one UFFDIO_WAKE then releases every thread blocked in the window.
 */
static void fault_fill_window(struct hk_mem *mem, uint64_t addr)
{
	uint64_t off = addr - (uintptr_t)mem->base;
	uint64_t w = off / mem->window;
	uint64_t start = w * mem->window, done = 0, placed = 0;
	uint64_t t0 = hk_now_ns();

	if (mem->window_done[w / 64] & (1ull << (w % 64))) {
		/* A second vCPU faulted on the window we just filled. */
		atomic_fetch_add(&mem->fault_races, 1);
		fault_wake(mem, addr & ~(HK_PAGE_SIZE - 1), HK_PAGE_SIZE);
		return;
	}

	while (done < mem->window) {
		struct uffdio_copy c = {
			.dst = (uintptr_t)mem->base + start + done,
			.src = (uintptr_t)mem->zero + done,
			.len = mem->window - done,
			.mode = UFFDIO_COPY_MODE_DONTWAKE,
		};

		if (ioctl(mem->uffd, UFFDIO_COPY, &c) == 0) {
			placed += c.len;
			done += c.len;
			continue;
		}
		if (c.copy > 0) {
			placed += (uint64_t)c.copy;
			done += (uint64_t)c.copy;
		}
		if (errno == EEXIST) {
			done += HK_PAGE_SIZE;
		} else if (errno != EAGAIN) {
			/* Leaving the waiter blocked would hang a vCPU forever;
			 * say so loudly, the page stays missing. */
			fprintf(stderr, "hyperkernel: UFFDIO_COPY at guest offset 0x%llx: %s\n",
				(unsigned long long)(start + done), strerror(errno));
			break;
		}
	}
	if (done >= mem->window)
		mem->window_done[w / 64] |= 1ull << (w % 64);
	atomic_fetch_add(&mem->resident_pages, placed / HK_PAGE_SIZE);
	atomic_fetch_add(&mem->faults, 1);
	fault_wake(mem, (uintptr_t)mem->base + start, mem->window);
	atomic_fetch_add(&mem->fault_ns, hk_now_ns() - t0);
}

static void *fault_thread(void *arg)
{
	struct hk_mem *mem = arg;
	struct uffd_msg msgs[FAULT_BATCH];

	for (;;) {
		struct pollfd p[2] = {
			{.fd = mem->uffd, .events = POLLIN},
			{.fd = mem->stop_fd, .events = POLLIN},
		};
		ssize_t n;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "hyperkernel: fault thread poll: %s\n", strerror(errno));
			return NULL;
		}
		if (p[1].revents)
			return NULL;

		n = read(mem->uffd, msgs, sizeof(msgs));
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			fprintf(stderr, "hyperkernel: userfaultfd read: %s\n", strerror(errno));
			return NULL;
		}
		for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++) {
			uint64_t flags = msgs[i].arg.pagefault.flags;

			if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			if (mem->pool) /* pooled memory: pages come from their home */
				hk_pool_fault(mem, msgs[i].arg.pagefault.address,
					      flags & UFFD_PAGEFAULT_FLAG_WRITE,
					      flags & UFFD_PAGEFAULT_FLAG_WP,
					      msgs[i].arg.pagefault.feat.ptid);
			else if (flags & UFFD_PAGEFAULT_FLAG_WP)
				hk_pagestate_wp_fault(mem, msgs[i].arg.pagefault.address);
			else
				fault_fill_window(mem, msgs[i].arg.pagefault.address);
		}
	}
}

/* Features this kernel offers, from a throw-away uffd (UFFDIO_API can be
 * called once per uffd, so asking and enabling need two). */
static uint64_t uffd_features(void)
{
	struct uffdio_api api = {.api = UFFD_API, .features = 0};
	int fd = uffd_open();
	uint64_t f = 0;

	if (fd < 0)
		return 0;
	if (ioctl(fd, UFFDIO_API, &api) == 0)
		f = api.features;
	close(fd);
	return f;
}

int hk_fault_start(struct hk_mem *mem, char *err, size_t errlen)
{
	uint64_t have = uffd_features();
	bool wp = have & UFFD_FEATURE_PAGEFAULT_FLAG_WP;
	struct uffdio_api api = {
		.api = UFFD_API,
		/* THREAD_ID: pooled memory counts remote faults per vCPU (placement). */
		.features = (wp ? UFFD_FEATURE_PAGEFAULT_FLAG_WP : 0) |
			    (have & UFFD_FEATURE_THREAD_ID),
	};
	struct uffdio_register reg = {
		.range = {.start = (uintptr_t)mem->base, .len = mem->size},
		.mode = UFFDIO_REGISTER_MODE_MISSING | (wp ? UFFDIO_REGISTER_MODE_WP : 0),
	};
	int ret;

	mem->uffd = uffd_open();
	if (mem->uffd < 0) {
		ret = -errno;
		snprintf(err, errlen, "userfaultfd: %s", strerror(-ret));
		return ret;
	}
	if (ioctl(mem->uffd, UFFDIO_API, &api) < 0) {
		ret = -errno;
		snprintf(err, errlen, "UFFDIO_API: %s", strerror(-ret));
		return ret;
	}
	if (ioctl(mem->uffd, UFFDIO_REGISTER, &reg) < 0) {
		ret = -errno;
		snprintf(err, errlen, "UFFDIO_REGISTER of %llu bytes: %s",
			 (unsigned long long)mem->size, strerror(-ret));
		return ret;
	}
	mem->wp = wp && (reg.ioctls & (1ull << _UFFDIO_WRITEPROTECT));
	if (!(reg.ioctls & (1ull << _UFFDIO_COPY))) {
		snprintf(err, errlen, "userfaultfd: UFFDIO_COPY not offered for guest memory");
		return -ENOTSUP;
	}
	mem->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (mem->stop_fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "eventfd: %s", strerror(-ret));
		return ret;
	}
	ret = pthread_create(&mem->fault_thread, NULL, fault_thread, mem);
	if (ret) {
		snprintf(err, errlen, "cannot start the fault thread: %s", strerror(ret));
		return -ret;
	}
	mem->fault_thread_started = true;
	return 0;
}

void hk_fault_stop(struct hk_mem *mem)
{
	if (mem->fault_thread_started) {
		uint64_t one = 1;

		if (write(mem->stop_fd, &one, sizeof(one)) != sizeof(one))
			fprintf(stderr, "hyperkernel: cannot signal the fault thread\n");
		pthread_join(mem->fault_thread, NULL);
		mem->fault_thread_started = false;
	}
	if (mem->stop_fd >= 0)
		close(mem->stop_fd);
	if (mem->uffd >= 0)
		close(mem->uffd);
	mem->stop_fd = mem->uffd = -1;
}
