/*
 * virtio-mmio transport, version 2 (virtio 1.1 section 4.2).  Windows of
 * 4 KiB from HK_VIRTIO_MMIO_BASE, announced to the guest on its command
 * line the way Linux expects (virtio_mmio.device=4K@BASE:IRQ).  The IRQ
 * number is nominal: there is no interrupt controller, drivers poll.
 *
 * Every queue address the driver gives is checked against guest RAM when
 * the queue is made ready; a queue that does not fit is refused (the
 * device goes to NEEDS_RESET) instead of being trusted later.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hk_internal.h"
#include "virtio.h"

#define REG_MAGIC            0x000
#define REG_VERSION          0x004
#define REG_DEVICE_ID        0x008
#define REG_VENDOR_ID        0x00c
#define REG_DEV_FEATURES     0x010
#define REG_DEV_FEATURES_SEL 0x014
#define REG_DRV_FEATURES     0x020
#define REG_DRV_FEATURES_SEL 0x024
#define REG_QUEUE_SEL        0x030
#define REG_QUEUE_NUM_MAX    0x034
#define REG_QUEUE_NUM        0x038
#define REG_QUEUE_READY      0x044
#define REG_QUEUE_NOTIFY     0x050
#define REG_INT_STATUS       0x060
#define REG_INT_ACK          0x064
#define REG_STATUS           0x070
#define REG_QUEUE_DESC_LO    0x080
#define REG_QUEUE_DESC_HI    0x084
#define REG_QUEUE_AVAIL_LO   0x090
#define REG_QUEUE_AVAIL_HI   0x094
#define REG_QUEUE_USED_LO    0x0a0
#define REG_QUEUE_USED_HI    0x0a4
#define REG_CONFIG_GEN       0x0fc
#define REG_CONFIG           0x100

#define VIRTIO_MMIO_MAGIC 0x74726976u /* "virt" */
#define HK_VIRTIO_VENDOR  0x4b564b48u /* "HKVK" */
#define HK_VIRTIO_IRQ     5

static uint64_t offered(const struct hk_virtio_dev *d)
{
	return d->ops->features | (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_RING_F_EVENT_IDX);
}

static struct hk_virtqueue *cur_vq(struct hk_virtio_dev *d)
{
	return d->queue_sel < HK_VQ_MAX_QUEUES ? &d->vq[d->queue_sel] : NULL;
}

void hk_virtio_needs_reset(struct hk_virtio_dev *d, const char *why)
{
	fprintf(stderr, "hyperkernel: %s at 0x%llx: %s; device needs reset\n", d->ops->name,
		(unsigned long long)d->base, why);
	atomic_store(&d->broken, true);
}

static void virtio_reset(struct hk_virtio_dev *d)
{
	atomic_fetch_add(&d->generation, 1);
	if (d->ops->reset)
		d->ops->reset(d);
	d->status = 0;
	atomic_store(&d->broken, false);
	d->driver_features = 0;
	d->dev_features_sel = d->drv_features_sel = d->queue_sel = 0;
	for (unsigned i = 0; i < HK_VQ_MAX_QUEUES; i++) {
		struct hk_virtqueue *vq = &d->vq[i];

		pthread_mutex_lock(&vq->used_lock);
		vq->num = 0;
		vq->ready = false;
		vq->desc_gpa = vq->avail_gpa = vq->used_gpa = 0;
		vq->desc = NULL;
		vq->avail = vq->used = NULL;
		vq->last_avail = vq->used_idx = 0;
		pthread_mutex_unlock(&vq->used_lock);
	}
}

/* Map the three rings; all of each must be guest RAM. */
static int queue_enable(struct hk_virtio_dev *d, struct hk_virtqueue *vq)
{
	uint64_t n = vq->num;

	if (!n || n > HK_VQ_MAX_SIZE || (n & (n - 1)))
		return -EINVAL;
	if ((vq->desc_gpa & 15) || (vq->avail_gpa & 1) || (vq->used_gpa & 3))
		return -EINVAL;
	vq->desc = hk_mem_gpa(d->mem, vq->desc_gpa, 16 * n);
	vq->avail = hk_mem_gpa(d->mem, vq->avail_gpa, 6 + 2 * n);
	vq->used = hk_mem_gpa(d->mem, vq->used_gpa, 6 + 8 * n);
	if (!vq->desc || !vq->avail || !vq->used) {
		vq->desc = NULL;
		vq->avail = vq->used = NULL;
		return -EFAULT;
	}
	vq->event_idx = d->driver_features & (1ull << VIRTIO_RING_F_EVENT_IDX);
	vq->last_avail = vq->avail[1];
	vq->used_idx = vq->used[1];
	vq->ready = true;
	return 0;
}

static uint32_t reg_read(struct hk_virtio_dev *d, uint64_t off)
{
	struct hk_virtqueue *vq = cur_vq(d);

	switch (off) {
	case REG_MAGIC:
		return VIRTIO_MMIO_MAGIC;
	case REG_VERSION:
		return 2;
	case REG_DEVICE_ID:
		return d->ops->device_id;
	case REG_VENDOR_ID:
		return HK_VIRTIO_VENDOR;
	case REG_DEV_FEATURES:
		return d->dev_features_sel < 2 ? (uint32_t)(offered(d) >> (32 * d->dev_features_sel))
					       : 0;
	case REG_QUEUE_NUM_MAX:
		return vq ? HK_VQ_MAX_SIZE : 0;
	case REG_QUEUE_READY:
		return vq ? vq->ready : 0;
	case REG_INT_STATUS:
		return 0;
	case REG_STATUS:
		return d->status | (atomic_load(&d->broken) ? VIRTIO_STATUS_NEEDS_RESET : 0);
	case REG_CONFIG_GEN:
		return 0; /* config never changes under the driver */
	default:
		return 0;
	}
}

static void reg_write(struct hk_virtio_dev *d, uint64_t off, uint32_t v)
{
	struct hk_virtqueue *vq = cur_vq(d);

	switch (off) {
	case REG_DEV_FEATURES_SEL:
		d->dev_features_sel = v;
		break;
	case REG_DRV_FEATURES_SEL:
		d->drv_features_sel = v;
		break;
	case REG_DRV_FEATURES:
		if (d->drv_features_sel < 2 && !(d->status & VIRTIO_STATUS_FEATURES_OK)) {
			unsigned sh = 32 * d->drv_features_sel;

			d->driver_features &= ~(0xffffffffull << sh);
			d->driver_features |= ((uint64_t)v << sh) & offered(d);
		}
		break;
	case REG_QUEUE_SEL:
		d->queue_sel = v;
		break;
	case REG_QUEUE_NUM:
		if (vq && !vq->ready)
			vq->num = (uint16_t)v;
		break;
	case REG_QUEUE_DESC_LO:
	case REG_QUEUE_DESC_HI:
	case REG_QUEUE_AVAIL_LO:
	case REG_QUEUE_AVAIL_HI:
	case REG_QUEUE_USED_LO:
	case REG_QUEUE_USED_HI: {
		uint64_t *a;

		if (!vq || vq->ready)
			break;
		a = off < REG_QUEUE_AVAIL_LO ? &vq->desc_gpa
		    : off < REG_QUEUE_USED_LO ? &vq->avail_gpa : &vq->used_gpa;
		if (off & 4)
			*a = (*a & 0xffffffffull) | ((uint64_t)v << 32);
		else
			*a = (*a & ~0xffffffffull) | v;
		break;
	}
	case REG_QUEUE_READY:
		if (!vq)
			break;
		if (v && !vq->ready) {
			if (queue_enable(d, vq))
				hk_virtio_needs_reset(d, "queue rings outside guest RAM or malformed");
		} else if (!v) {
			vq->ready = false;
		}
		break;
	case REG_QUEUE_NOTIFY:
		if (v < HK_VQ_MAX_QUEUES && d->vq[v].ready &&
		    (d->status & VIRTIO_STATUS_DRIVER_OK) && !atomic_load(&d->broken)) {
			pthread_mutex_unlock(&d->lock);
			d->ops->notify(d, v);
			pthread_mutex_lock(&d->lock);
		}
		break;
	case REG_INT_ACK:
		break;
	case REG_STATUS:
		if (v == 0) {
			virtio_reset(d);
			break;
		}
		/* FEATURES_OK only sticks if VERSION_1 was accepted. */
		if ((v & VIRTIO_STATUS_FEATURES_OK) &&
		    !(d->driver_features & (1ull << VIRTIO_F_VERSION_1)))
			v &= ~VIRTIO_STATUS_FEATURES_OK;
		d->status = v & ~VIRTIO_STATUS_NEEDS_RESET;
		break;
	default:
		break;
	}
}

static void mmio_read(struct hk_vm *vm, void *dev, uint64_t off, void *data, unsigned len)
{
	struct hk_virtio_dev *d = dev;
	uint32_t v;

	memset(data, 0, len);
	pthread_mutex_lock(&d->lock);
	if (off >= REG_CONFIG) {
		uint64_t c = off - REG_CONFIG;

		if (c < d->ops->config_len && len <= d->ops->config_len - c)
			d->ops->config_read(d, (uint32_t)c, data, len);
	} else if (len == 4 && !(off & 3)) {
		v = reg_read(d, off);
		memcpy(data, &v, 4);
	}
	pthread_mutex_unlock(&d->lock);
}

static void mmio_write(struct hk_vm *vm, void *dev, uint64_t off, const void *data, unsigned len)
{
	struct hk_virtio_dev *d = dev;
	uint32_t v = 0;

	if (off >= REG_CONFIG || len != 4 || (off & 3))
		return; /* config space is read-only here; registers are 32-bit */
	memcpy(&v, data, 4);
	pthread_mutex_lock(&d->lock);
	reg_write(d, off, v);
	pthread_mutex_unlock(&d->lock);
}

static const struct hk_mmio_ops virtio_mmio_ops = {
	.size = sizeof(struct hk_mmio_ops),
	.name = "virtio-mmio",
	.read = mmio_read,
	.write = mmio_write,
};

int hk_virtio_mmio_add(struct hk_vm *vm, const struct hk_virtio_ops *ops, void *priv,
		       struct hk_virtio_dev **out)
{
	struct hk_virtio_dev *d;
	int ret;

	if (vm->n_mmio >= HK_VIRTIO_MAX_DEVICES)
		return -ENOSPC;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->ops = ops;
	d->priv = priv;
	d->vm = vm;
	d->mem = vm->mem;
	d->base = HK_VIRTIO_MMIO_BASE + vm->n_mmio * HK_VIRTIO_MMIO_SIZE;
	pthread_mutex_init(&d->lock, NULL);
	for (unsigned i = 0; i < HK_VQ_MAX_QUEUES; i++)
		pthread_mutex_init(&d->vq[i].used_lock, NULL);
	ret = hk_mmio_register(vm, d->base, HK_VIRTIO_MMIO_SIZE, &virtio_mmio_ops, d);
	if (ret) {
		hk_virtio_mmio_free(d);
		return ret;
	}
	*out = d;
	return 0;
}

void hk_virtio_mmio_free(struct hk_virtio_dev *d)
{
	if (!d)
		return;
	pthread_mutex_destroy(&d->lock);
	for (unsigned i = 0; i < HK_VQ_MAX_QUEUES; i++)
		pthread_mutex_destroy(&d->vq[i].used_lock);
	free(d);
}

int hk_virtio_mmio_cmdline(uint64_t base, char *buf, size_t len)
{
	int n = snprintf(buf, len, " virtio_mmio.device=4K@0x%llx:%d", (unsigned long long)base,
			 HK_VIRTIO_IRQ);

	return n < 0 || (size_t)n >= len ? -E2BIG : 0;
}
