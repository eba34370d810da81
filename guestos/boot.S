/*
 * PVH entry: 32-bit protected mode, paging off (docs/boot-abi.md), on every
 * vCPU at once under hyperkernel. Switches to 64-bit long mode with the
 * static identity page tables below and calls guestos_kmain(cpu, hk, si).
 *
 * Nothing here builds tables at run time: ring 0 is emulated ~4000x slower
 * on kvm_pvm, so the page tables and GDT are assembled into .data and the
 * entry path is a few dozen instructions per vCPU. No stack is used before
 * long mode, so all vCPUs can run this code concurrently without sharing
 * anything writable.
 */
#include "guestos.h"

#define MSR_EFER 0xc0000080
#define EFER_LME (1 << 8)
#define CR0_PG (1 << 31)
#define CR4_PAE (1 << 5)

/*
 * Page-table entry bits: present, writable, user (ring 3 runs everything),
 * with Accessed (0x20) preset, and Dirty (0x40) too on the 2 MiB leaves.
 * Without them the CPU's page walker writes A/D into these tables on a
 * page's first use, i.e. every vCPU's first touch of a 2 MiB page dirties
 * a page-table page: under pooled memory (issue 4) that write makes the
 * page-table pages bounce between nodes like contended data. Preset, the
 * walker only reads them, so every node can keep a shared read-only copy.
 * Nothing in guestos reads A/D.
 */
#define PTE_PWU 0x27		/* P | W | U | A */
#define PDE_2M_PWU 0xe7		/* P | W | U | A | D | PS: 2 MiB page */
#define PDE_PCD_PWT 0x18 /* uncached (PAT entry 3 = UC at reset) */
#define MMIO_HOLE_GIB 3  /* 3-4 GiB: device windows (docs/boot-abi.md), never RAM */

/* 64 GiB / 2 MiB = 32768 page-directory entries in 64 page directories. */
#define MAPPED_GIB 64

	/*
	 * XEN_ELFNOTE_PHYS32_ENTRY (type 18): the loader (hyperkernel/pvh.c,
	 * QEMU) finds the 32-bit entry point here and nowhere else.
	 */
	.section .note.Xen, "a", @note
	.balign 4
	.long 4                 /* namesz: "Xen\0" */
	.long 4                 /* descsz */
	.long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.balign 4
	.long pvh_entry

	.section .text.boot, "ax"
	.code32
	.globl pvh_entry
pvh_entry:
	cli
	cld
	/*
	 * hyperkernel starts every vCPU here with EDI = "HKVC" and ESI = index.
	 * Anyone else (QEMU) starts only the boot vCPU and leaves EDI/ESI
	 * undefined, so without the magic we are vCPU 0 of 1.
	 */
	cmp $HK_BOOT_MAGIC, %edi
	jne 1f
	mov $1, %edi            /* EDI: 1 = booted by hyperkernel */
	jmp 2f
1:	xor %edi, %edi
	xor %esi, %esi          /* ESI: vCPU index */
2:	cmp $GUESTOS_MAX_VCPUS, %esi
	jae halt32              /* no stack or TSS for it: stay out of the way */

	/* Our GDT before any segment reload: the loader's GDT is not ours. */
	lgdt gdt_ptr

	mov %cr4, %eax
	or $CR4_PAE, %eax
	mov %eax, %cr4
	mov $pml4, %eax
	mov %eax, %cr3
	mov $MSR_EFER, %ecx     /* rdmsr/wrmsr use EAX, ECX, EDX only */
	rdmsr
	or $EFER_LME, %eax
	wrmsr
	mov %cr0, %eax
	or $CR0_PG, %eax        /* with LME set this activates long mode */
	mov %eax, %cr0
	ljmp $SEL_KCODE, $long_mode

halt32:
	hlt
	jmp halt32

	.code64
long_mode:
	mov $SEL_KDATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	xor %eax, %eax
	mov %eax, %fs
	mov %eax, %gs
	/* Upper register halves are undefined after 32-bit code: clear them. */
	mov %esi, %esi
	mov %edi, %edi
	/* RSP = top of this vCPU's ring-0 stack: kstacks + (index + 1) * size */
	lea 1(%rsi), %rax
	shl $GUESTOS_KSTACK_SHIFT, %rax
	add $guestos_kstacks, %rax
	mov %rax, %rsp
	xor %ebp, %ebp
	/* guestos_kmain(cpu = ESI, hyperkernel = EDI, start_info = EBX) */
	xchg %esi, %edi
	mov %ebx, %edx
	call guestos_kmain
	ud2

	.section .data.pagetables, "aw"
	/*
	 * Identity map of the first 64 GiB: PML4[0] -> one PDPT -> 64 page
	 * directories of 2 MiB pages, all user-accessible so ring 3 can reach
	 * everything. Page 0 stays mapped: QEMU's PVH option ROM puts the
	 * memory map there. The MMIO hole (3-4 GiB: virtio-mmio windows, the
	 * local APIC) is mapped uncached, as device registers must be; under
	 * KVM every access to it exits anyway, as no RAM backs it.
	 */
	.balign 4096
pml4:
	.quad pdpt + PTE_PWU
	.fill 511, 8, 0
pdpt:
	.set i, 0
	.rept MAPPED_GIB
	.quad pd + i * 4096 + PTE_PWU
	.set i, i + 1
	.endr
	.fill 512 - MAPPED_GIB, 8, 0
pd:
	.set i, 0
	.rept MAPPED_GIB * 512
	.if (i >> 9) == MMIO_HOLE_GIB
	.quad (i << 21) + PDE_2M_PWU + PDE_PCD_PWT
	.else
	.quad (i << 21) + PDE_2M_PWU
	.endif
	.set i, i + 1
	.endr

	.section .data, "aw"
	/*
	 * Flat 64-bit segments. TSS descriptors (two slots each) are filled in
	 * by each vCPU for itself (cpu.c): their base is split across fields,
	 * which assembler relocations cannot express.
	 */
	.balign 16
	.globl guestos_gdt
guestos_gdt:
	.quad 0                     /* null */
	.quad 0x00af9a000000ffff    /* 0x08 kernel code: 64-bit, DPL 0 */
	.quad 0x00cf92000000ffff    /* 0x10 kernel data */
	.quad 0x00cff2000000ffff    /* 0x18 user data: DPL 3 */
	.quad 0x00affa000000ffff    /* 0x20 user code: 64-bit, DPL 3 */
	.fill 2 * GUESTOS_MAX_VCPUS, 8, 0
gdt_end:

	.balign 8
	.word 0                     /* align the base for the 64-bit form */
gdt_ptr:
	.word gdt_end - guestos_gdt - 1
	.quad guestos_gdt

	.section .note.GNU-stack, "", @progbits
