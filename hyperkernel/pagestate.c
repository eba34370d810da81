/*
 * Per-page flags of guest RAM and the operations on them: write-protect
 * through userfaultfd, and the reboot scrub that keeps replica frames.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "hk_internal.h"
#include "mem_internal.h"

#define CHUNK_PAGES 512u

uint64_t hk_mem_frame(const struct hk_mem *mem, uint64_t gpa)
{
	const uint8_t *h = hk_mem_gpa(mem, gpa, 1);

	return h ? (uint64_t)(h - mem->base) / HK_PAGE_SIZE : UINT64_MAX;
}

uint64_t hk_mem_frame_gpa(const struct hk_mem *mem, uint64_t frame)
{
	uint64_t off = frame * HK_PAGE_SIZE;

	for (unsigned i = 0; i < mem->n_ranges; i++)
		if (off >= mem->host_off[i] && off - mem->host_off[i] < mem->ranges[i].len)
			return mem->ranges[i].gpa + (off - mem->host_off[i]);
	return UINT64_MAX;
}

static _Atomic uint8_t *chunk_of(const struct hk_mem *mem, uint64_t frame, bool create)
{
	uint64_t c = frame / CHUNK_PAGES;
	_Atomic uint8_t *leaf, *expected = NULL;

	if (c >= mem->n_chunks)
		return NULL;
	leaf = atomic_load(&mem->chunks[c]);
	if (leaf || !create)
		return leaf;
	leaf = calloc(CHUNK_PAGES, 1);
	if (!leaf)
		return NULL;
	if (!atomic_compare_exchange_strong(&((struct hk_mem *)mem)->chunks[c], &expected, leaf)) {
		free((void *)leaf); /* someone else installed it first */
		leaf = expected;
	}
	return leaf;
}

bool hk_mem_page_chunk_used(const struct hk_mem *mem, uint64_t frame)
{
	return chunk_of(mem, frame, false) != NULL;
}

uint8_t hk_mem_page_flags(const struct hk_mem *mem, uint64_t frame)
{
	_Atomic uint8_t *leaf = chunk_of(mem, frame, false);

	return leaf ? atomic_load(&leaf[frame % CHUNK_PAGES]) : 0;
}

uint8_t hk_mem_page_set(struct hk_mem *mem, uint64_t frame, uint8_t flags)
{
	_Atomic uint8_t *leaf = chunk_of(mem, frame, true);

	return leaf ? atomic_fetch_or(&leaf[frame % CHUNK_PAGES], flags) : 0;
}

uint8_t hk_mem_page_clear(struct hk_mem *mem, uint64_t frame, uint8_t flags)
{
	_Atomic uint8_t *leaf = chunk_of(mem, frame, false);

	return leaf ? atomic_fetch_and(&leaf[frame % CHUNK_PAGES], (uint8_t)~flags) : 0;
}

int hk_pagestate_init(struct hk_mem *mem)
{
	mem->n_chunks = (mem->size / HK_PAGE_SIZE + CHUNK_PAGES - 1) / CHUNK_PAGES;
	mem->chunks = calloc(mem->n_chunks, sizeof(*mem->chunks));
	return mem->chunks ? 0 : -ENOMEM;
}

void hk_pagestate_free(struct hk_mem *mem)
{
	if (!mem->chunks)
		return;
	for (uint64_t c = 0; c < mem->n_chunks; c++)
		free((void *)atomic_load(&mem->chunks[c]));
	free(mem->chunks);
	mem->chunks = NULL;
}

bool hk_mem_can_protect(const struct hk_mem *mem)
{
	return mem->wp;
}

int hk_mem_protect(struct hk_mem *mem, uint64_t gpa, uint64_t len, bool on)
{
	uint8_t *h = hk_mem_gpa(mem, gpa, len);
	struct uffdio_writeprotect wp;

	if (!mem->wp)
		return -ENOTSUP;
	if (!h || ((uintptr_t)h | len) & (HK_PAGE_SIZE - 1))
		return -EINVAL;
	wp = (struct uffdio_writeprotect){
		.range = {.start = (uintptr_t)h, .len = len},
		.mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
	};
	if (ioctl(mem->uffd, UFFDIO_WRITEPROTECT, &wp) < 0)
		return -errno;
	return 0;
}

void hk_mem_set_wp_hook(struct hk_mem *mem, hk_wp_hook_fn fn, void *ctx)
{
	mem->wp_ctx = ctx;
	mem->wp_hook = fn;
}

/* Fault thread: the first write to a write-protected page (uffd tracking). */
void hk_pagestate_wp_fault(struct hk_mem *mem, uint64_t addr)
{
	uint64_t off = (addr - (uintptr_t)mem->base) & ~(HK_PAGE_SIZE - 1);
	uint64_t frame = off / HK_PAGE_SIZE;

	hk_pagestate_wp_event(mem, frame);

	struct uffdio_writeprotect wp = {
		.range = {.start = (uintptr_t)mem->base + off, .len = HK_PAGE_SIZE},
		.mode = 0, /* releasing also wakes the writer */
	};
	if (ioctl(mem->uffd, UFFDIO_WRITEPROTECT, &wp) < 0)
		fprintf(stderr, "hyperkernel: releasing write-protect at frame %llu: %s\n",
			(unsigned long long)frame, strerror(errno));
}

uint64_t hk_mem_scrub(struct hk_mem *mem, bool keep_replicas)
{
	uint64_t kept = 0, pages_per_window = mem->window / HK_PAGE_SIZE;

	for (uint64_t w = 0; w < mem->size / mem->window; w++) {
		uint64_t first = w * pages_per_window, run = UINT64_MAX;

		if (!(mem->window_done[w / 64] & (1ull << (w % 64))))
			continue; /* never populated, nothing to give back */
		for (uint64_t p = first; p <= first + pages_per_window; p++) {
			bool keep = keep_replicas && p < first + pages_per_window &&
				    (hk_mem_page_flags(mem, p) & HK_PG_REPLICA);

			if (p < first + pages_per_window && !keep) {
				if (run == UINT64_MAX)
					run = p;
				continue;
			}
			if (keep)
				kept++;
			if (run != UINT64_MAX) {
				madvise(mem->base + run * HK_PAGE_SIZE, (p - run) * HK_PAGE_SIZE,
					MADV_DONTNEED);
				atomic_fetch_sub(&mem->resident_pages, p - run);
				run = UINT64_MAX;
			}
		}
		/* The fill path skips pages that still exist, so clearing the
		 * bit is right even for windows that keep replicas. */
		mem->window_done[w / 64] &= ~(1ull << (w % 64));
	}
	if (!keep_replicas) /* no page is anything now */
		for (uint64_t c = 0; c < mem->n_chunks; c++)
			if (atomic_load(&mem->chunks[c]))
				memset((void *)atomic_load(&mem->chunks[c]), 0, CHUNK_PAGES);
	return kept;
}

/* Pages of this node flagged as replicas (pooled memory is not scrubbed). */
uint64_t hk_mem_replica_pages(const struct hk_mem *mem)
{
	uint64_t n = 0, frames = mem->size / HK_PAGE_SIZE;

	for (uint64_t f = 0; f < frames; f += 512) {
		if (!hk_mem_page_chunk_used(mem, f))
			continue;
		for (uint64_t i = f; i < f + 512 && i < frames; i++)
			n += !!(hk_mem_page_flags(mem, i) & HK_PG_REPLICA);
	}
	return n;
}
