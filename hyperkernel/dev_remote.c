/*
 * Pooled guest: device windows served by another node.
 *
 * Every node of a pooled guest has the same device windows, one per disk
 * in hk.conf order, so the guest sees one machine whichever node runs the
 * vCPU.  A disk is served by the node it is attached to; on the others its
 * window forwards each register access to that node (hk_vm_remote_ops,
 * provided by the daemon) and the vCPU waits for the answer.  Only
 * register accesses travel: the serving node reads and writes the
 * virtqueues and buffers through pooled memory itself.
 */
#include <errno.h>
#include <string.h>

#include "hk_internal.h"
#include "virtio.h"

static void remote_read(struct hk_vm *vm, void *dev, uint64_t off, void *data, unsigned len)
{
	const struct hk_remote_win *w = dev;

	memset(data, 0xff, len); /* what a failed forward leaves */
	vm->remote->mmio(vm->remote_ctx, w->slot, off, false, data, len);
}

static void remote_write(struct hk_vm *vm, void *dev, uint64_t off, const void *data,
			 unsigned len)
{
	const struct hk_remote_win *w = dev;
	uint8_t buf[8];

	memcpy(buf, data, len);
	vm->remote->mmio(vm->remote_ctx, w->slot, off, true, buf, len);
}

static const struct hk_mmio_ops remote_ops = {
	.size = sizeof(struct hk_mmio_ops),
	.name = "remote device",
	.read = remote_read,
	.write = remote_write,
};

int hk_dev_remote_add(struct hk_vm *vm, unsigned slot, uint64_t *base)
{
	struct hk_remote_win *w = &vm->remote_win[slot];
	int ret;

	if (!vm->remote)
		return -ENODEV;
	*w = (struct hk_remote_win){slot};
	/* The same place a local virtio-mmio device would take. */
	*base = HK_VIRTIO_MMIO_BASE + vm->n_mmio * HK_VIRTIO_MMIO_SIZE;
	ret = hk_mmio_register(vm, *base, HK_VIRTIO_MMIO_SIZE, &remote_ops, w);
	return ret;
}

int hk_vm_device_access(struct hk_vm *vm, unsigned slot, uint64_t off, bool write, uint8_t *data,
			unsigned len)
{
	int ret = 0;

	if ((len != 1 && len != 2 && len != 4 && len != 8) || off >= HK_VIRTIO_MMIO_SIZE ||
	    len > HK_VIRTIO_MMIO_SIZE - off)
		return -EINVAL;
	pthread_rwlock_rdlock(&vm->boot_lock);
	if (slot >= vm->n_blks || !vm->blks[slot])
		ret = -ENODEV; /* not served here, or not booted */
	else
		hk_mmio_access(vm, vm->dev_base[slot] + off, write, data, len);
	pthread_rwlock_unlock(&vm->boot_lock);
	return ret;
}
