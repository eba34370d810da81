/*
 * Write tracking through KVM's dirty log (wtrack.c has the contract).
 *
 * The VM enables KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 with INITIALLY_SET
 * before its memory slots exist, and every slot logs dirty pages.  With
 * INITIALLY_SET every bit starts at 1 and no page is write-protected, so
 * KVM keeps its large mappings; only KVM_CLEAR_DIRTY_LOG on a page (arm)
 * write-protects that page in KVM's own tables -- the host PTE stays
 * writable -- and splits a large mapping around it.  The first guest
 * write sets the bit again.  KVM_GET_DIRTY_LOG only copies the bitmap
 * (manual protect: it clears nothing), so harvesting is a read.
 *
 * The invariant: while a page is HK_PG_TRACKED its bit was cleared when
 * it was armed and is cleared again only by a harvest that then proves the
 * page unchanged, so bit set = maybe written since.  Pages never armed
 * keep their bit at 1 and are ignored.
 *
 * "Maybe": KVM also sets the bit when it merely maps a page writable,
 * which it does on a read fault too (one fault instead of two).  A page
 * the device filled and the guest has not touched yet has no KVM mapping,
 * so the guest's first read of a freshly loaded replica would look like a
 * write and cost the entry.  So arm also takes the page's XXH3 hash, and
 * a harvest that finds the bit set re-arms the page first and then hashes
 * it again: unchanged (the same bytes as its block) it stays a replica,
 * changed it is reported.  Re-arm before the hash: a write after the
 * re-arm sets the bit again, a write during the hash changes the hash.
 *
 * Cost: GET_DIRTY_LOG copies a whole slot's bitmap, so slots are 1 GiB
 * here (32 KiB of bitmap); arm and harvest of a request touch one or two.
 * One mutex orders arm against harvest: a bitmap fetched before a page
 * was re-armed must not be read as a write after it.
 *
 * Caveat: on Intel hosts with PML, KVM logs writes asynchronously and
 * flushes the buffers when GET_DIRTY_LOG kicks the vCPUs; kvm_pvm (shadow
 * paging) and AMD's NPT write-protect, which reports a write before it
 * completes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <xxhash.h>

#include "hk_internal.h"
#include "mem_internal.h"

#define CLEAR_WORDS 64 /* pages armed per KVM_CLEAR_DIRTY_LOG: 64 * 64 */

static bool overlap(const struct hk_kvm_slot *s, uint64_t f0, uint64_t f1, uint64_t *a, uint64_t *b)
{
	*a = f0 > s->first_frame ? f0 : s->first_frame;
	*b = f1 < s->first_frame + s->pages ? f1 : s->first_frame + s->pages;
	return *a < *b;
}

/* Clear the bits of frames [a, b) of slot s that have a flag of `which`. */
static int clear_bits(struct hk_mem *mem, const struct hk_kvm_slot *s, uint64_t a, uint64_t b,
		      uint8_t which)
{
	uint64_t bits[CLEAR_WORDS];

	for (uint64_t w0 = (a - s->first_frame) & ~63ull; s->first_frame + w0 < b;
	     w0 += 64 * CLEAR_WORDS) {
		uint64_t n = s->pages - w0 < 64 * CLEAR_WORDS ? s->pages - w0 : 64 * CLEAR_WORDS;
		struct kvm_clear_dirty_log c = {.slot = s->id,
						.num_pages = (uint32_t)n,
						.first_page = w0,
						.dirty_bitmap = bits};
		bool any = false;

		memset(bits, 0, sizeof(bits));
		for (uint64_t i = 0; i < n; i++) {
			uint64_t f = s->first_frame + w0 + i;

			if (!(f % 512) && !hk_mem_page_chunk_used(mem, f)) {
				i += 511; /* no page of this 2 MiB chunk ever had a flag */
				continue;
			}
			if (f < a || f >= b || !(hk_mem_page_flags(mem, f) & which))
				continue;
			bits[i / 64] |= 1ull << (i % 64);
			any = true;
		}
		if (any && ioctl(mem->kvm_wt.vm_fd, KVM_CLEAR_DIRTY_LOG, &c) < 0)
			return -errno;
	}
	return 0;
}

/* The hash slot of frame f (under k->lock); NULL if out of memory. */
static uint64_t *hash_slot(struct hk_mem *mem, uint64_t f)
{
	struct hk_wtrack_kvm *k = &mem->kvm_wt;
	uint64_t c = f / 512;

	if (!k->hashes[c])
		k->hashes[c] = calloc(512, sizeof(uint64_t));
	return k->hashes[c] ? &k->hashes[c][f % 512] : NULL;
}

static uint64_t page_hash(struct hk_mem *mem, uint64_t f)
{
	return XXH3_64bits(mem->base + f * HK_PAGE_SIZE, HK_PAGE_SIZE);
}

/* Hash the frames of [a, b) flagged `which` (after their bits were cleared). */
static void hash_pages(struct hk_mem *mem, uint64_t a, uint64_t b, uint8_t which)
{
	for (uint64_t f = a; f < b; f++) {
		uint64_t *h;

		if (!(hk_mem_page_flags(mem, f) & which))
			continue;
		h = hash_slot(mem, f);
		if (h)
			*h = page_hash(mem, f);
		else /* no memory for its hash: no replica either (drops are safe) */
			hk_pagestate_wp_event(mem, f);
	}
}

static int kvm_arm(struct hk_mem *mem, uint64_t gpa, uint64_t len, bool on)
{
	struct hk_wtrack_kvm *k = &mem->kvm_wt;
	uint64_t f0 = hk_mem_frame(mem, gpa), f1 = f0 + len / HK_PAGE_SIZE, a, b;
	int ret = 0;

	pthread_mutex_lock(&k->lock);
	if (!on) {
		/* The bit may stay as it is: an untracked page's bit means nothing. */
		for (uint64_t f = f0; f < f1; f++)
			hk_mem_page_clear(mem, f, HK_PG_TRACKED);
		goto out;
	}
	/* Only pages not yet tracked: re-clearing a tracked page's bit would
	 * forget a write made since it was armed.  HK_PG_ARMING marks them
	 * for the clear (only under k->lock). */
	for (uint64_t f = f0; f < f1; f++)
		if (!(hk_mem_page_set(mem, f, HK_PG_TRACKED) & HK_PG_TRACKED))
			hk_mem_page_set(mem, f, HK_PG_ARMING);
	for (unsigned i = 0; i < k->n_slots && !ret; i++)
		if (overlap(&k->slots[i], f0, f1, &a, &b))
			ret = clear_bits(mem, &k->slots[i], a, b, HK_PG_ARMING);
	hash_pages(mem, f0, f1, HK_PG_ARMING);
	for (uint64_t f = f0; f < f1; f++)
		hk_mem_page_clear(mem, f, HK_PG_ARMING);
	if (ret)
		fprintf(stderr, "hyperkernel: KVM_CLEAR_DIRTY_LOG: %s\n", strerror(-ret));
out:
	atomic_fetch_add(&k->arms, 1);
	pthread_mutex_unlock(&k->lock);
	return ret;
}

static uint64_t kvm_harvest(struct hk_mem *mem, uint64_t gpa, uint64_t len)
{
	struct hk_wtrack_kvm *k = &mem->kvm_wt;
	uint64_t f0 = hk_mem_frame(mem, gpa), f1 = f0 + len / HK_PAGE_SIZE, a, b, seen = 0;
	uint64_t t0 = hk_now_ns();
	bool rearm_failed = false;

	pthread_mutex_lock(&k->lock);
	/* No VM (between a reboot's two VMs): no vCPU can write, and the
	 * old VM's log was harvested before it went (hk_wtrack_kvm_detach). */
	for (unsigned i = 0; i < k->n_slots && k->vm_fd >= 0; i++) {
		const struct hk_kvm_slot *s = &k->slots[i];
		struct kvm_dirty_log log = {.slot = s->id, .dirty_bitmap = k->bitmap};

		if (!overlap(s, f0, f1, &a, &b))
			continue;
		if (ioctl(k->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0) {
			/* Cannot tell what was written: nothing tracked may be trusted. */
			fprintf(stderr, "hyperkernel: KVM_GET_DIRTY_LOG slot %u: %s\n", s->id,
				strerror(errno));
			memset(k->bitmap, 0xff, (s->pages + 7) / 8);
		}
		/* Pages whose bit is set: re-armed (ARMING marks them), then
		 * hashed; only a changed page is a write. */
		for (uint64_t f = a; f < b; f++) {
			uint64_t i2 = f - s->first_frame;

			if (!hk_mem_page_chunk_used(mem, f)) {
				f |= 511; /* no flags anywhere in this 2 MiB chunk */
				continue;
			}
			if ((k->bitmap[i2 / 64] >> (i2 % 64) & 1) &&
			    (hk_mem_page_flags(mem, f) & HK_PG_TRACKED))
				hk_mem_page_set(mem, f, HK_PG_ARMING);
		}
		if (clear_bits(mem, s, a, b, HK_PG_ARMING))
			rearm_failed = true;
		for (uint64_t f = a; f < b; f++) {
			uint8_t fl;
			uint64_t *h;

			if (!hk_mem_page_chunk_used(mem, f)) {
				f |= 511;
				continue;
			}
			fl = hk_mem_page_flags(mem, f);
			if (!(fl & HK_PG_ARMING))
				continue;
			hk_mem_page_clear(mem, f, HK_PG_ARMING);
			h = hash_slot(mem, f);
			if (!rearm_failed && h && *h == page_hash(mem, f)) {
				atomic_fetch_add(&k->false_alarms, 1);
				continue; /* mapped, not changed: still its block's copy */
			}
			hk_pagestate_wp_event(mem, f);
			seen++;
		}
	}
	atomic_fetch_add(&k->harvests, 1);
	atomic_fetch_add(&k->harvest_ns, hk_now_ns() - t0);
	pthread_mutex_unlock(&k->lock);
	return seen;
}

const struct hk_wtrack_ops hk_wtrack_kvm_ops = {
    .size = sizeof(struct hk_wtrack_ops),
    .name = "kvm-dirty-log",
    .arm = kvm_arm,
    .harvest = kvm_harvest,
};

bool hk_wtrack_kvm_supported(int vm_fd)
{
	int flags = ioctl(vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
	uint64_t want = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET;

	return flags > 0 && ((uint64_t)flags & want) == want;
}

int hk_wtrack_kvm_enable(int vm_fd)
{
	struct kvm_enable_cap cap = {
	    .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
	    .args = {KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET},
	};

	return ioctl(vm_fd, KVM_ENABLE_CAP, &cap) < 0 ? -errno : 0;
}

/*
 * A new KVM VM (first boot or reboot) has new slots whose bits are all
 * set: every page still tracked must be armed again before a vCPU runs.
 * Pages written under the old VM were harvested before it went.
 */
int hk_wtrack_kvm_attach(struct hk_mem *mem, int vm_fd)
{
	struct hk_wtrack_kvm *k = &mem->kvm_wt;
	int ret = 0;

	pthread_mutex_lock(&k->lock);
	k->vm_fd = vm_fd;
	for (unsigned i = 0; i < k->n_slots && !ret; i++)
		ret = clear_bits(mem, &k->slots[i], k->slots[i].first_frame,
				 k->slots[i].first_frame + k->slots[i].pages, HK_PG_TRACKED);
	pthread_mutex_unlock(&k->lock);
	return ret;
}

#define KVM_WT_SLOT (1ull << 30)

/* The VM is about to go (its vCPUs stopped): take in its last writes. */
void hk_wtrack_kvm_detach(struct hk_mem *mem)
{
	struct hk_wtrack_kvm *k;

	if (!mem || mem->wtrack != &hk_wtrack_kvm_ops)
		return;
	k = &mem->kvm_wt;
	hk_mem_harvest_all(mem);
	pthread_mutex_lock(&k->lock);
	k->vm_fd = -1;
	pthread_mutex_unlock(&k->lock);
}

int hk_wtrack_kvm_use(struct hk_mem *mem)
{
	struct hk_wtrack_kvm *k = &mem->kvm_wt;

	if (mem->wtrack == &hk_wtrack_kvm_ops)
		return 0;
	if (mem->size / KVM_WT_SLOT + 2 > HK_KVM_SLOTS_MAX)
		return -E2BIG;
	k->slots = calloc(HK_KVM_SLOTS_MAX, sizeof(*k->slots));
	k->bitmap = malloc(KVM_WT_SLOT / HK_PAGE_SIZE / 8);
	k->hashes = calloc(mem->n_chunks, sizeof(*k->hashes));
	if (!k->slots || !k->bitmap || !k->hashes) {
		free(k->slots);
		free(k->bitmap);
		free(k->hashes);
		k->slots = NULL;
		k->bitmap = NULL;
		k->hashes = NULL;
		return -ENOMEM;
	}
	pthread_mutex_init(&k->lock, NULL);
	k->vm_fd = -1;
	mem->slot_max = KVM_WT_SLOT;
	mem->wtrack = &hk_wtrack_kvm_ops;
	return 0;
}

void hk_wtrack_kvm_free(struct hk_mem *mem)
{
	struct hk_wtrack_kvm *k = &mem->kvm_wt;

	if (mem->wtrack != &hk_wtrack_kvm_ops)
		return;
	pthread_mutex_destroy(&k->lock);
	for (uint64_t c = 0; c < mem->n_chunks; c++)
		free(k->hashes[c]);
	free(k->hashes);
	free(k->slots);
	free(k->bitmap);
	k->slots = NULL;
	k->bitmap = NULL;
}
