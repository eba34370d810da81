/*
 * Guest RAM: one sparse anonymous mapping, split into at most two
 * guest-physical ranges around the 3-4 GiB device hole, and handed to KVM
 * as memory slots.  Every page of it is missing until the fault thread
 * (fault.c) places it, so untouched guest memory costs the host nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hk_internal.h"
#include "mem_internal.h"
#include "pool_internal.h"

/* KVM caps one slot at 2^31 - 1 pages; stay well inside with 4 TiB slots. */
#define HK_SLOT_MAX (4ull << 40)

static bool is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

int hk_mem_create(uint64_t size, uint64_t window, struct hk_mem **out, char *err, size_t errlen)
{
	struct hk_mem *mem;
	uint64_t low;
	int ret;

	if (size < HK_MEM_MIN || size > HK_MEM_MAX || size % HK_MEM_ALIGN) {
		snprintf(err, errlen,
			 "guest memory %llu bytes: must be a multiple of 2 MiB between 64 MiB and 64 TiB",
			 (unsigned long long)size);
		return -EINVAL;
	}
	if (!window)
		window = HK_FAULT_WINDOW_DEFAULT;
	if (!is_pow2(window) || window < HK_PAGE_SIZE || window > HK_MEM_ALIGN) {
		snprintf(err, errlen, "fault window %llu: must be a power of two from 4 KiB to 2 MiB",
			 (unsigned long long)window);
		return -EINVAL;
	}

	mem = calloc(1, sizeof(*mem));
	if (!mem) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	mem->uffd = -1;
	mem->stop_fd = -1;
	mem->size = size;
	mem->window = window;
	mem->wtrack = &hk_wtrack_uffd_ops;
	mem->slot_max = HK_SLOT_MAX;

	low = size < HK_GPA_MMIO_HOLE ? size : HK_GPA_MMIO_HOLE;
	mem->ranges[0] = (struct hk_mem_range){.gpa = 0, .len = low};
	mem->host_off[0] = 0;
	mem->n_ranges = 1;
	if (size > low) {
		mem->ranges[1] = (struct hk_mem_range){.gpa = HK_GPA_HIGH_RAM, .len = size - low};
		mem->host_off[1] = low;
		mem->n_ranges = 2;
	}

	/* MAP_NORESERVE: a 1 TiB guest must not be refused by overcommit
	 * accounting when it will touch a fraction of it. */
	mem->base = mmap(NULL, size, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem->base == MAP_FAILED) {
		ret = -errno;
		mem->base = NULL;
		snprintf(err, errlen, "cannot reserve %llu bytes of guest memory: %s",
			 (unsigned long long)size, strerror(-ret));
		goto fail;
	}
	/* Pages move between nodes 4 KiB at a time in later issues; keep the
	 * host from backing guest RAM with huge pages behind our back. */
	madvise(mem->base, size, MADV_NOHUGEPAGE);

	mem->zero = mmap(NULL, window, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem->zero == MAP_FAILED) {
		ret = -errno;
		mem->zero = NULL;
		snprintf(err, errlen, "cannot map zero window: %s", strerror(-ret));
		goto fail;
	}

	mem->window_done = calloc((size / window + 63) / 64, sizeof(uint64_t));
	if (!mem->window_done) {
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory for the window bitmap");
		goto fail;
	}

	if (hk_pagestate_init(mem)) {
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory for page state");
		goto fail;
	}
	ret = hk_fault_start(mem, err, errlen);
	if (ret)
		goto fail;

	*out = mem;
	return 0;
fail:
	hk_mem_destroy(mem);
	return ret;
}

void hk_mem_destroy(struct hk_mem *mem)
{
	if (!mem)
		return;
	hk_pool_detach(mem); /* no delivery may reach memory being torn down */
	hk_fault_stop(mem);
	hk_pool_free(mem);
	if (mem->base)
		munmap(mem->base, mem->size);
	if (mem->zero)
		munmap((void *)mem->zero, mem->window);
	free(mem->window_done);
	hk_pagestate_free(mem);
	hk_wtrack_kvm_free(mem);
	free(mem);
}

uint64_t hk_mem_size(const struct hk_mem *mem)
{
	return mem->size;
}

void *hk_mem_gpa(const struct hk_mem *mem, uint64_t gpa, uint64_t len)
{
	if (!len)
		return NULL;
	for (unsigned i = 0; i < mem->n_ranges; i++) {
		const struct hk_mem_range *r = &mem->ranges[i];

		/* Written so that gpa + len cannot overflow. */
		if (gpa < r->gpa || gpa - r->gpa >= r->len || len > r->len - (gpa - r->gpa))
			continue;
		return mem->base + mem->host_off[i] + (gpa - r->gpa);
	}
	return NULL;
}

int hk_mem_write(struct hk_mem *mem, uint64_t gpa, const void *src, uint64_t len)
{
	void *dst = hk_mem_gpa(mem, gpa, len);

	if (!dst)
		return -EFAULT;
	memcpy(dst, src, len);
	return 0;
}

int hk_mem_read(const struct hk_mem *mem, uint64_t gpa, void *dst, uint64_t len)
{
	const void *src = hk_mem_gpa(mem, gpa, len);

	if (!src)
		return -EFAULT;
	memcpy(dst, src, len);
	return 0;
}

unsigned hk_mem_ranges(const struct hk_mem *mem, struct hk_mem_range out[2])
{
	for (unsigned i = 0; i < mem->n_ranges; i++)
		out[i] = mem->ranges[i];
	return mem->n_ranges;
}

void hk_mem_get_stats(const struct hk_mem *mem, struct hk_mem_stats *st)
{
	st->resident_pages = atomic_load(&mem->resident_pages);
	st->faults = atomic_load(&mem->faults);
	st->fault_races = atomic_load(&mem->fault_races);
	st->fault_ns = atomic_load(&mem->fault_ns);
	st->wp_faults = atomic_load(&mem->wp_faults);
	st->harvests = atomic_load(&mem->kvm_wt.harvests);
	st->false_alarms = atomic_load(&mem->kvm_wt.false_alarms);
}

int hk_mem_attach_kvm(struct hk_mem *mem, int vm_fd, char *err, size_t errlen)
{
	bool dirty_log = mem->wtrack == &hk_wtrack_kvm_ops;
	unsigned slot = 0;
	int ret;

	for (unsigned i = 0; i < mem->n_ranges; i++) {
		for (uint64_t off = 0; off < mem->ranges[i].len; off += mem->slot_max) {
			uint64_t len = mem->ranges[i].len - off;
			struct kvm_userspace_memory_region r;

			if (len > mem->slot_max)
				len = mem->slot_max;
			r = (struct kvm_userspace_memory_region){
			    .slot = slot,
			    .flags = dirty_log ? KVM_MEM_LOG_DIRTY_PAGES : 0,
			    .guest_phys_addr = mem->ranges[i].gpa + off,
			    .memory_size = len,
			    .userspace_addr = (uintptr_t)(mem->base + mem->host_off[i] + off),
			};
			if (dirty_log)
				mem->kvm_wt.slots[slot] = (struct hk_kvm_slot){
				    .id = slot,
				    .first_frame = (mem->host_off[i] + off) / HK_PAGE_SIZE,
				    .pages = len / HK_PAGE_SIZE,
				};
			if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
				int e = errno;

				snprintf(err, errlen,
					 "KVM_SET_USER_MEMORY_REGION slot %u gpa 0x%llx size 0x%llx: %s",
					 slot, (unsigned long long)r.guest_phys_addr,
					 (unsigned long long)len, strerror(e));
				return -e;
			}
			slot++;
		}
	}
	if (!dirty_log)
		return 0;
	mem->kvm_wt.n_slots = slot;
	ret = hk_wtrack_kvm_attach(mem, vm_fd);
	if (ret)
		snprintf(err, errlen, "cannot re-arm write tracking in the new VM: %s",
			 strerror(-ret));
	return ret;
}
