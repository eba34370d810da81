/*
 * Ring transitions: the drop to ring 3 (enter_user), the exception stubs
 * that bring a fault back to ring 0 for reporting, and the syscall entry
 * through which ring 3 asks ring 0 for port I/O when there is no service
 * page (host.c: under QEMU).
 */
#include "guestos.h"

	.text
	.code64

/*
 * enter_user(entry, rsp, arg): iretq to entry(arg) in ring 3 on stack rsp
 * with IOPL=0: ring 3 does no port I/O (host.c). IF stays 0: guestos takes
 * no interrupts. The ring-0 stack this runs on is reused for traps via
 * TSS.rsp0.
 */
	.globl enter_user
enter_user:
	mov %edx, %edx
	sub $8, %rsi            /* entry sees a (zero) return address, as after a call */
	movq $0, (%rsi)
	pushq $(SEL_UDATA | 3)  /* SS */
	pushq %rsi              /* RSP */
	pushq $USER_RFLAGS      /* RFLAGS */
	pushq $(SEL_UCODE | 3)  /* CS */
	pushq %rdi              /* RIP */
	mov %rdx, %rdi          /* the one argument */
	mov $(SEL_UDATA | 3), %eax
	mov %eax, %ds
	mov %eax, %es
	xor %eax, %eax
	xor %ebx, %ebx
	xor %ecx, %ecx
	xor %edx, %edx
	xor %esi, %esi
	xor %ebp, %ebp
	xor %r8d, %r8d
	xor %r9d, %r9d
	xor %r10d, %r10d
	xor %r11d, %r11d
	iretq

/*
 * Exceptions 0-31. The CPU pushes an error code for some vectors only; the
 * others push a 0 so every frame has the same layout (struct trap_frame).
 */
.macro TRAP_NOERR vec
trap_\vec:
	pushq $0
	pushq $\vec
	jmp trap_common
.endm

.macro TRAP_ERR vec
trap_\vec:
	pushq $\vec
	jmp trap_common
.endm

	.balign 16
.irp v, 0, 1, 2, 3, 4, 5, 6, 7, 9, 15, 16, 18, 19, 20, 22, 23, 24, 25, 26, 27, 28, 31
	TRAP_NOERR \v
.endr
.irp v, 8, 10, 11, 12, 13, 14, 17, 21, 29, 30
	TRAP_ERR \v
.endr

trap_common:
	pushq %rax
	pushq %rbx
	pushq %rcx
	pushq %rdx
	pushq %rsi
	pushq %rdi
	pushq %rbp
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	cld
	mov %rsp, %rdi          /* 16-byte aligned here: 5+2+15 quadwords */
	call guestos_trap       /* reports and exits; never returns */
	ud2

/*
 * host_syscall(op, a, b): ring 3 -> ring 0 -> ring 3.  A function, not
 * inline asm, so the caller already treats every SysV caller-saved
 * register as clobbered by guestos_syscall.
 */
	.globl host_syscall
host_syscall:
	syscall
	ret

/*
 * syscall lands here in ring 0 with RCX = return RIP, R11 = RFLAGS and
 * RSP still the caller's ring-3 stack, which ring 0 simply keeps using:
 * guestos maps one address space for both rings, takes no interrupts
 * (FMASK clears IF) and runs a few port accesses here.
 */
	.globl guestos_syscall_entry
guestos_syscall_entry:
	pushq %rcx
	pushq %r11
	sub $8, %rsp            /* entered at 8 mod 16 (after host_syscall's call) */
	cld
	call guestos_syscall
	add $8, %rsp
	popq %r11
	popq %rcx
	sysretq

	.section .rodata
	.balign 8
	.globl guestos_trap_stubs
guestos_trap_stubs:
.irp v, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31
	.quad trap_\v
.endr

	.section .note.GNU-stack, "", @progbits
