/* Port-I/O and MMIO dispatch: short tables of devices, searched linearly
 * (there are a handful, and each access already cost a VM exit). */
#include <errno.h>
#include <string.h>

#include "hk_internal.h"

int hk_pio_register(struct hk_vm *vm, const struct hk_pio_ops *ops, void *state)
{
	if (vm->n_pio == HK_MAX_PIO_DEVICES || ops->size < sizeof(struct hk_pio_ops))
		return -EINVAL;
	for (unsigned i = 0; i < vm->n_pio; i++) {
		const struct hk_pio_ops *o = vm->pio[i].ops;

		if (ops->base < o->base + o->len && o->base < ops->base + ops->len)
			return -EEXIST;
	}
	vm->pio[vm->n_pio++] = (struct hk_pio_dev){.ops = ops, .state = state};
	return 0;
}

void hk_pio_access(struct hk_vm *vm, uint16_t port, bool write, unsigned width, uint8_t *data)
{
	for (unsigned i = 0; i < vm->n_pio; i++) {
		const struct hk_pio_dev *d = &vm->pio[i];
		uint32_t v = 0;

		if (port < d->ops->base || port >= d->ops->base + d->ops->len)
			continue;
		if (write) {
			memcpy(&v, data, width > 4 ? 4 : width);
			if (d->ops->write)
				d->ops->write(vm, d->state, port - d->ops->base, width, v);
		} else {
			v = d->ops->read ? d->ops->read(vm, d->state, port - d->ops->base, width)
					 : ~0u;
			memcpy(data, &v, width > 4 ? 4 : width);
		}
		return;
	}
	/* Nothing there: reads float high, as on a real ISA bus. */
	atomic_fetch_add(&vm->unhandled_io, 1);
	if (!write)
		memset(data, 0xff, width);
}

int hk_mmio_register(struct hk_vm *vm, uint64_t base, uint64_t len, const struct hk_mmio_ops *ops,
		     void *state)
{
	if (vm->n_mmio == HK_MAX_MMIO_DEVICES || ops->size < sizeof(struct hk_mmio_ops) || !len)
		return -EINVAL;
	/* Device windows must never shadow guest RAM. */
	if (hk_mem_gpa(vm->mem, base, 1) || hk_mem_gpa(vm->mem, base + len - 1, 1))
		return -EINVAL;
	for (unsigned i = 0; i < vm->n_mmio; i++) {
		const struct hk_mmio_dev *d = &vm->mmio[i];

		if (base < d->base + d->len && d->base < base + len)
			return -EEXIST;
	}
	vm->mmio[vm->n_mmio++] = (struct hk_mmio_dev){ops, state, base, len};
	return 0;
}

void hk_mmio_access(struct hk_vm *vm, uint64_t addr, bool write, uint8_t *data, unsigned len)
{
	for (unsigned i = 0; i < vm->n_mmio; i++) {
		const struct hk_mmio_dev *d = &vm->mmio[i];

		if (addr < d->base || addr - d->base >= d->len || len > d->len - (addr - d->base))
			continue;
		if (write)
			d->ops->write(vm, d->state, addr - d->base, data, len);
		else
			d->ops->read(vm, d->state, addr - d->base, data, len);
		return;
	}
	atomic_fetch_add(&vm->unhandled_io, 1);
	if (!write)
		memset(data, 0xff, len);
}
