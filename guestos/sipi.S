/*
 * QEMU only: a real-mode trampoline that brings an application processor
 * woken by INIT/SIPI into the PVH entry state hyperkernel gives every vCPU
 * (32-bit protected mode, flat CS 0x10 / DS 0x18, EDI = "HKVC", ESI = a
 * fresh vCPU index), then jumps to pvh_entry. From there on an AP takes
 * exactly the path it would take under hyperkernel, which is the point:
 * the SMP code can be tested under QEMU. sipi.c copies this blob to
 * SIPI_TRAMPOLINE (the SIPI vector is its page number) and fills in the
 * fields at the end. Position-dependent on that address, not on ours.
 */
#include "guestos.h"

#define AT(label) (SIPI_TRAMPOLINE + ((label) - sipi_trampoline))

	.section .rodata
	.balign 16
	.globl sipi_trampoline, sipi_trampoline_end
	.globl sipi_trampoline_next, sipi_trampoline_start_info
	.code16
sipi_trampoline:
	cli
	cld
	xor %ax, %ax
	mov %ax, %ds
	lgdtl AT(t_gdt_ptr)
	mov %cr0, %eax
	or $1, %eax             /* CR0.PE */
	mov %eax, %cr0
	ljmpl $0x10, $AT(t_prot32)

	.code32
t_prot32:
	mov $0x18, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov %eax, %fs
	mov %eax, %gs
	mov $1, %esi            /* take the next vCPU index */
	lock xadd %esi, AT(sipi_trampoline_next)
	mov $HK_BOOT_MAGIC, %edi
	mov AT(sipi_trampoline_start_info), %ebx
	mov $pvh_entry, %eax
	jmp *%eax

	.balign 8
t_gdt:                          /* the selectors PVH prescribes */
	.quad 0
	.quad 0
	.quad 0x00cf9a000000ffff    /* 0x10: 32-bit code, flat */
	.quad 0x00cf92000000ffff    /* 0x18: data, flat */
t_gdt_ptr:
	.word t_gdt_ptr - t_gdt - 1
	.long AT(t_gdt)
	.balign 4
sipi_trampoline_next:
	.long 0                 /* index of the next AP; sipi.c sets 1 */
sipi_trampoline_start_info:
	.long 0
sipi_trampoline_end:

	.section .note.GNU-stack, "", @progbits
