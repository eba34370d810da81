/*
 * The service page (proto/hk_service_page.h): console, exit and park for
 * guest code in any ring, through MMIO, which exits to us on every x86
 * hypervisor.  The 16550 and isa-debug-exit stay for ring 0 and for
 * kernels written elsewhere; this page is what ring 3 uses.
 */
#include <string.h>

#include "hk_internal.h"
#include "hk_service_page.h"

static uint64_t load_le(const void *data, unsigned len)
{
	uint64_t v = 0;

	memcpy(&v, data, len > 8 ? 8 : len); /* x86 host: little-endian like the guest */
	return v;
}

static void service_read(struct hk_vm *vm, void *dev, uint64_t off, void *data, unsigned len)
{
	struct hk_vcpu *self = hk_vcpu_self();
	uint64_t v;

	switch (off) {
	case HK_SERVICE_ID:
		v = HK_SERVICE_MAGIC | ((uint64_t)HK_SERVICE_VERSION << 32);
		break;
	case HK_SERVICE_VER:
		v = HK_SERVICE_VERSION;
		break;
	case HK_SERVICE_VCPU:
		v = self ? self->index : 0;
		break;
	case HK_SERVICE_CONSOLE:
	case HK_SERVICE_EXIT:
	case HK_SERVICE_PARK:
		v = 0; /* write-only registers read as zero */
		break;
	default:
		atomic_fetch_add(&vm->unhandled_io, 1);
		v = ~0ull;
		break;
	}
	memcpy(data, &v, len > 8 ? 8 : len);
}

static void service_console(struct hk_vm *vm, const void *data, unsigned len)
{
	const char *c = data;
	size_t n = strnlen(c, len > 8 ? 8 : len);

	if (!n || !vm->console)
		return;
	/* The UART's lock: a line from ring 0 and one from ring 3 stay whole. */
	pthread_mutex_lock(&vm->serial.lock);
	vm->console(vm->console_ctx, c, n);
	pthread_mutex_unlock(&vm->serial.lock);
}

static void service_write(struct hk_vm *vm, void *dev, uint64_t off, const void *data, unsigned len)
{
	struct hk_vcpu *self = hk_vcpu_self();
	uint32_t v;

	switch (off) {
	case HK_SERVICE_CONSOLE:
		service_console(vm, data, len);
		break;
	case HK_SERVICE_EXIT:
		v = (uint32_t)load_le(data, len) & 0x7fffffff;
		hk_vm_finish(vm, HK_VM_EXITED, (int)((v << 1) | 1),
			     "guest wrote %u to the service page's exit register", v);
		break;
	case HK_SERVICE_PARK:
		/* Only a vCPU thread can stop itself; vcpu.c acts on the flag
		 * once this exit is complete. */
		if (self)
			self->stop_self = true;
		break;
	default:
		atomic_fetch_add(&vm->unhandled_io, 1);
		break;
	}
}

const struct hk_mmio_ops hk_service_ops = {
    .size = sizeof(struct hk_mmio_ops),
    .name = "service-page",
    .read = service_read,
    .write = service_write,
};
