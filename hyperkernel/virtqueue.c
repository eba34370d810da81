/*
 * Split virtqueues: the guest owns the rings, so every index and every
 * descriptor is checked before use, and chains are bounded by the queue
 * size (a looping chain is refused, not followed forever).
 */
#include <errno.h>
#include <string.h>

#include "hk_internal.h"
#include "virtio.h"

/* avail: flags, idx, ring[num], used_event.  used: flags, idx, elems[num], avail_event. */
#define AVAIL_IDX(vq)        ((vq)->avail[1])
#define AVAIL_RING(vq, i)    ((vq)->avail[2 + (i)])
#define USED_ELEMS(vq)       ((volatile struct vring_used_elem *)((vq)->used + 2))
#define USED_AVAIL_EVENT(vq) ((vq)->used[2 + 4 * (vq)->num])

bool hk_vq_has_avail(struct hk_virtqueue *vq)
{
	return vq->ready && __atomic_load_n(&AVAIL_IDX(vq), __ATOMIC_ACQUIRE) != vq->last_avail;
}

int hk_vq_pop(struct hk_virtio_dev *d, struct hk_virtqueue *vq, uint16_t *head,
	      struct hk_vq_buf *bufs, unsigned max)
{
	uint16_t avail_idx, idx;
	unsigned n = 0;

	if (!vq->ready)
		return 0;
	avail_idx = __atomic_load_n(&AVAIL_IDX(vq), __ATOMIC_ACQUIRE);
	if (avail_idx == vq->last_avail)
		return 0;
	if ((uint16_t)(avail_idx - vq->last_avail) > vq->num) {
		hk_virtio_needs_reset(d, "avail index ran ahead of the queue size");
		vq->ready = false;
		return 0;
	}
	*head = AVAIL_RING(vq, vq->last_avail % vq->num);
	vq->last_avail++;
	if (*head >= vq->num) {
		hk_virtio_needs_reset(d, "avail ring names a descriptor past the queue");
		vq->ready = false;
		return 0;
	}

	idx = *head;
	for (unsigned walked = 0;; walked++) {
		struct vring_desc desc;
		struct hk_vq_buf *b;

		memcpy(&desc, &vq->desc[idx], sizeof(desc));
		if (desc.flags & VRING_DESC_F_INDIRECT)
			return -EINVAL; /* not offered */
		if (walked == vq->num)
			return -EINVAL; /* a loop */
		/* Past max: keep walking, the last buffer lands in bufs[max - 1]. */
		b = &bufs[n < max ? n : max - 1];
		b->gpa = desc.addr;
		b->len = desc.len;
		b->writable = desc.flags & VRING_DESC_F_WRITE;
		/* Outside guest RAM: hva NULL, for the device to refuse. */
		b->hva = desc.len ? hk_mem_gpa(d->mem, desc.addr, desc.len) : NULL;
		if (n <= max)
			n++;
		if (!(desc.flags & VRING_DESC_F_NEXT))
			break;
		if (desc.next >= vq->num)
			return -EINVAL;
		idx = desc.next;
	}
	return (int)n;
}

void hk_vq_push(struct hk_virtio_dev *d, struct hk_virtqueue *vq, uint16_t head, uint32_t len)
{
	pthread_mutex_lock(&vq->used_lock);
	if (vq->ready) {
		volatile struct vring_used_elem *e = &USED_ELEMS(vq)[vq->used_idx % vq->num];

		e->id = head;
		e->len = len;
		vq->used_idx++;
		/* The element must be visible before the index that publishes it. */
		__atomic_store_n(&vq->used[1], vq->used_idx, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&vq->used_lock);
}

void hk_vq_set_avail_event(struct hk_virtqueue *vq)
{
	if (vq->ready && vq->event_idx)
		__atomic_store_n(&USED_AVAIL_EVENT(vq), vq->last_avail, __ATOMIC_RELEASE);
}
