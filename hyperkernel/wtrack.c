/*
 * Write tracking of replica pages: how the hyper-kernel learns that the
 * guest wrote a page that is (or is about to become) a copy of a disk
 * block.  Two backends behind one table (struct hk_wtrack_ops):
 *
 *   uffd  userfaultfd write-protect.  The first write faults to the fault
 *         thread, which drops the entry before the write goes on; harvest
 *         has nothing to do.  Exact at once, but the host PTE is
 *         write-protected, which pushes every KVM fault on the page off its
 *         fast path (~4x slower mapping installs on kvm_pvm), and
 *         pooled coherence needs it for shared copies anyway.
 *   kvm   KVM's dirty log with manual protect (wtrack_kvm.c).  Host PTEs
 *         stay writable; a guest write only sets a bit, and the entry is
 *         dropped at the next harvest.  So every use of an entry (serve a
 *         read, keep it over a reboot, verify it) harvests the pages it
 *         uses first, and a copy made from a page is harvested again after
 *         the copy (a write during the copy shows there).
 *
 * The rule both keep: before any replica is served or kept, every guest
 * write that happened before has dropped its entry.  A page is armed with
 * HK_PG_TRACKED set; a write reported for it clears the flag, clears
 * HK_PG_REPLICA and calls the VM's hook, exactly as the uffd fault did.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "hk_internal.h"
#include "mem_internal.h"

/* A guest write to frame was seen (fault or harvest): forget it as a copy. */
void hk_pagestate_wp_event(struct hk_mem *mem, uint64_t frame)
{
	uint64_t gpa = hk_mem_frame_gpa(mem, frame);
	uint8_t before;

	/* Order matters: the page stops being a replica before anyone can
	 * serve it again, and a writeback in flight learns it is stale. */
	before = hk_mem_page_clear(mem, frame, HK_PG_REPLICA | HK_PG_TRACKED);
	if (before & HK_PG_WRITEBACK)
		hk_mem_page_set(mem, frame, HK_PG_DIRTY);
	if (mem->wp_hook && gpa != UINT64_MAX)
		mem->wp_hook(mem->wp_ctx, gpa, before);
	atomic_fetch_add(&mem->wp_faults, 1);
}

/* ---- uffd backend ---------------------------------------------------------- */

static int uffd_arm(struct hk_mem *mem, uint64_t gpa, uint64_t len, bool on)
{
	uint64_t f0 = hk_mem_frame(mem, gpa);

	for (uint64_t i = 0; i < len / HK_PAGE_SIZE; i++) {
		if (on)
			hk_mem_page_set(mem, f0 + i, HK_PG_TRACKED);
		else
			hk_mem_page_clear(mem, f0 + i, HK_PG_TRACKED);
	}
	return hk_mem_protect(mem, gpa, len, on);
}

static uint64_t uffd_harvest(struct hk_mem *mem, uint64_t gpa, uint64_t len)
{
	return 0; /* every write already faulted and was reported */
}

const struct hk_wtrack_ops hk_wtrack_uffd_ops = {
    .size = sizeof(struct hk_wtrack_ops),
    .name = "uffd",
    .arm = uffd_arm,
    .harvest = uffd_harvest,
};

/* ---- the seam ---------------------------------------------------------------- */

static bool range_ok(struct hk_mem *mem, uint64_t gpa, uint64_t len)
{
	return len && !((gpa | len) & (HK_PAGE_SIZE - 1)) && hk_mem_gpa(mem, gpa, len);
}

int hk_mem_track(struct hk_mem *mem, uint64_t gpa, uint64_t len, bool on)
{
	if (!range_ok(mem, gpa, len))
		return -EINVAL;
	return mem->wtrack->arm(mem, gpa, len, on);
}

uint64_t hk_mem_harvest(struct hk_mem *mem, uint64_t gpa, uint64_t len)
{
	if (!range_ok(mem, gpa, len))
		return 0;
	return mem->wtrack->harvest(mem, gpa, len);
}

uint64_t hk_mem_harvest_all(struct hk_mem *mem)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < mem->n_ranges; i++)
		n += hk_mem_harvest(mem, mem->ranges[i].gpa, mem->ranges[i].len);
	return n;
}

const char *hk_mem_tracking(const struct hk_mem *mem)
{
	return mem->wtrack->name;
}
