/*
 * isa-debug-exit at port 0x501, QEMU's convention: a write of v ends the
 * guest with status (v << 1) | 1, so no value is mistaken for success by
 * a shell that only checks for 0.
 */
#include "hk_internal.h"

static uint32_t debug_exit_read(struct hk_vm *vm, void *dev, uint16_t off, unsigned width)
{
	return ~0u;
}

static void debug_exit_write(struct hk_vm *vm, void *dev, uint16_t off, unsigned width,
			     uint32_t val)
{
	if (width == 1)
		val &= 0xff;
	else if (width == 2)
		val &= 0xffff;
	hk_vm_finish(vm, HK_VM_EXITED, (int)((val << 1) | 1), "guest wrote %u to the debug-exit port",
		     val);
}

const struct hk_pio_ops hk_debug_exit_ops = {
	.size = sizeof(struct hk_pio_ops),
	.name = "isa-debug-exit",
	.base = 0x501,
	.len = 1,
	.read = debug_exit_read,
	.write = debug_exit_write,
};
