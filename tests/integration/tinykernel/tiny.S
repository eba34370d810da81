/*
 * The smallest PVH kernel: proves a loader found the PVH entry note, loaded
 * the segment, and entered in 32-bit protected mode with flat segments,
 * without depending on anything in guestos/. It prints one line on COM1
 * and writes 0x2a to isa-debug-exit (status (0x2a << 1) | 1 = 85), then
 * halts in case no debug-exit device is present. No stack, no paging.
 */

	.section .note.Xen, "a", @note
	.balign 4
	.long 4                 /* namesz: "Xen\0" */
	.long 4                 /* descsz */
	.long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.balign 4
	.long tiny_entry

	.text
	.code32
	.globl tiny_entry
tiny_entry:
	cli
	cld
	mov $message, %esi
	mov $0x3f8, %dx         /* COM1 THR; the loader's UART needs no setup */
1:	lodsb
	test %al, %al
	jz 2f
	outb %al, %dx
	jmp 1b
2:	mov $0x501, %dx
	mov $0x2a, %al
	outb %al, %dx
3:	hlt
	jmp 3b

	.section .rodata
message:
	.asciz "tiny kernel ok\n"

	.section .note.GNU-stack, "", @progbits
