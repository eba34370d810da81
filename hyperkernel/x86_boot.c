/*
 * x86 architectural state for a vCPU at the PVH entry point
 * (docs/boot-abi.md): 32-bit protected mode, flat segments, paging off.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "hk_internal.h"

#define HK_BOOT_MAGIC 0x43564b48u /* "HKVC" in EDI: booted by hyperkernel */

#define SEL_CODE32 0x10
#define SEL_DATA32 0x18
#define SEL_TSS32  0x20

/*
 * A GDT matching the selectors loaded at entry, so the hidden segment state
 * and the descriptor table agree if the guest reloads a selector before it
 * installs its own GDT (PVH promises nothing here; this is defensive).
 */
int hk_x86_write_boot_gdt(struct hk_mem *mem)
{
	static const uint64_t gdt[] = {
		0,
		0,
		0x00cf9b000000ffffull, /* 0x10: code, 32-bit, 4 GiB */
		0x00cf93000000ffffull, /* 0x18: data, 4 GiB */
		0x00008b0000000067ull, /* 0x20: 32-bit TSS (busy), base 0 */
	};

	return hk_mem_write(mem, HK_GPA_BOOT_GDT, gdt, sizeof(gdt));
}

static struct kvm_segment flat_seg(uint16_t sel, uint8_t type)
{
	return (struct kvm_segment){
		.base = 0,
		.limit = 0xffffffff,
		.selector = sel,
		.type = type,
		.present = 1,
		.dpl = 0,
		.db = 1,
		.s = 1,
		.l = 0,
		.g = 1,
		.avl = 0,
		.unusable = 0,
	};
}

int hk_x86_setup_pvh_state(struct hk_vm *vm, struct hk_vcpu *vcpu, char *err, size_t errlen)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0) {
		snprintf(err, errlen, "vCPU %u: KVM_GET_SREGS: %s", vcpu->index, strerror(errno));
		return -errno;
	}
	sregs.cs = flat_seg(SEL_CODE32, 0xb); /* execute/read, accessed */
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = flat_seg(SEL_DATA32, 0x3);
	sregs.tr = (struct kvm_segment){
		.base = 0, .limit = 0x67, .selector = SEL_TSS32, .type = 0xb, .present = 1,
	};
	sregs.ldt = (struct kvm_segment){.selector = 0, .type = 0x2, .present = 1, .limit = 0xffff};
	sregs.gdt.base = HK_GPA_BOOT_GDT;
	sregs.gdt.limit = 5 * 8 - 1;
	sregs.idt.base = 0;
	sregs.idt.limit = 0;
	sregs.cr0 = 0x11; /* PE | ET */
	sregs.cr3 = 0;
	sregs.cr4 = 0;
	sregs.efer = 0;
	if (ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0) {
		snprintf(err, errlen, "vCPU %u: KVM_SET_SREGS: %s", vcpu->index, strerror(errno));
		return -errno;
	}

	memset(&regs, 0, sizeof(regs));
	regs.rflags = 0x2;
	regs.rip = vm->boot.entry;
	regs.rbx = HK_GPA_START_INFO;
	regs.rdi = HK_BOOT_MAGIC;
	regs.rsi = vcpu->index;
	if (ioctl(vcpu->fd, KVM_SET_REGS, &regs) < 0) {
		snprintf(err, errlen, "vCPU %u: KVM_SET_REGS: %s", vcpu->index, strerror(errno));
		return -errno;
	}
	return 0;
}

/*
 * What KVM supports, fetched once per VM: every vCPU gets a copy with its
 * own APIC ID, and the guest-physical address width bounds guest memory.
 */
int hk_x86_load_cpuid(struct hk_vm *vm, char *err, size_t errlen)
{
	unsigned nent = 256;
	struct kvm_cpuid2 *c = NULL;

	for (;;) {
		free(c);
		c = calloc(1, sizeof(*c) + nent * sizeof(c->entries[0]));
		if (!c) {
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
		c->nent = nent;
		if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0)
			break;
		if (errno != E2BIG || nent >= 4096) {
			int ret = -errno;

			snprintf(err, errlen, "KVM_GET_SUPPORTED_CPUID: %s", strerror(errno));
			free(c);
			return ret;
		}
		nent *= 2;
	}
	vm->cpuid = c;
	return 0;
}

/* Guest-physical address bits (CPUID 0x80000008 EAX[7:0]); 36 if absent,
 * the architectural minimum with PAE. */
unsigned hk_x86_phys_bits(const struct hk_vm *vm)
{
	for (unsigned i = 0; i < vm->cpuid->nent; i++) {
		const struct kvm_cpuid_entry2 *e = &vm->cpuid->entries[i];

		if (e->function == 0x80000008 && (e->eax & 0xff))
			return e->eax & 0xff;
	}
	return 36;
}

/* Each vCPU's APIC ID is its index, so guests can tell vCPUs apart
 * through CPUID as well as through ESI at entry. */
int hk_x86_setup_cpuid(struct hk_vm *vm, struct hk_vcpu *vcpu, char *err, size_t errlen)
{
	size_t len = sizeof(*vm->cpuid) + vm->cpuid->nent * sizeof(vm->cpuid->entries[0]);
	struct kvm_cpuid2 *c = malloc(len);
	int ret = 0;

	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	memcpy(c, vm->cpuid, len);
	for (unsigned i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];

		if (e->function == 1)
			e->ebx = (e->ebx & 0x00ffffff) | (vcpu->index << 24);
		else if (e->function == 0xb || e->function == 0x1f)
			e->edx = vcpu->index;
	}
	if (ioctl(vcpu->fd, KVM_SET_CPUID2, c) < 0) {
		ret = -errno;
		snprintf(err, errlen, "vCPU %u: KVM_SET_CPUID2: %s", vcpu->index, strerror(errno));
	}
	free(c);
	return ret;
}
