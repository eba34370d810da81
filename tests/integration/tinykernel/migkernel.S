/*
 * migkernel: a PVH kernel whose result depends on every part of a vCPU's
 * state that migration moves (tests/integration/test_vcpu_migrate.c).
 *
 * Ring 0 only sets up: long mode with the first GiB identity-mapped
 * (2 MiB pages, user-accessible), SSE on, and AVX2 through XSAVE/XCR0
 * when CPUID offers it; no vector instruction runs in ring 0 (AVX in
 * ring 0 fails on kvm_pvm). Then iretq to ring 3 with IOPL 0, where the
 * work runs at native speed and reaches hkd through the service page
 * (proto/hk_service_page.h; mapped like RAM, it exits because no memory
 * slot backs it): no ring-3 port I/O, which kvm_pvm refuses whatever
 * IOPL says.
 * Ring 3 first tries one AVX2 instruction: where CPUID offers AVX2 but
 * the CPU still raises #UD (QEMU 7.2 TCG running KVM's nested-SVM guests
 * does), the #UD gate switches to the SSE path instead of triple-faulting.
 *
 * Ring 3 runs ROUNDS rounds of ITERS iterations with its whole state in
 * registers: eight GPRs mixed through an add/adc carry chain, rotates
 * and a multiply; the 16 vector registers (ymm with AVX2, else xmm)
 * mixed through integer adds, xors, shifts, lane permutes, a multiply
 * rounded under a non-default MXCSR rounding mode, and values passed
 * between GPRs and vectors; and the TSC, read every iteration and
 * compared with the previous read (r14 counts reads that went
 * backwards). A vCPU parked and moved anywhere in this loop must come
 * back with every bit, or the sum differs. Output on the console:
 *
 *   migkernel: start vec=avx2|sse
 *   ................................      (one dot per round)
 *   migkernel: sum=<16 hex> tsc_back=<16 hex> vec=avx2|sse
 *
 * and exit value 0x2a (status 85) when the TSC never went backwards,
 * 0x15 (status 43) when it did.
 */

#define PML4	   0x300000 /* page tables, zeroed here */
#define PDPT	   0x301000
#define PD	   0x302000
#define DUMP	   0x310000 /* 16 x 32 bytes: the vector registers at the end */
#define VECFLAG	   0x311000 /* 1: AVX2 path */
#define TSS	   0x312000 /* 64-bit TSS: only RSP0 is used */
#define IDT	   0x313000 /* 256 gates, only #UD present */
#define KSTACK_TOP 0x318000 /* PVH gives no stack */
#define USTACK_TOP 0x320000

#include "hk_service_page.h"

#define PD_HOLE	   0x303000 /* maps the 2 MiB around the service page */
#define SVC	   HK_SERVICE_PAGE_GPA

#define ROUNDS 32
#define ITERS  (1 << 17)

	.section .note.Xen, "a", @note
	.balign 4
	.long 4                 /* namesz: "Xen\0" */
	.long 4                 /* descsz */
	.long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.balign 4
	.long mig_entry

	.text
	.code32
	.globl mig_entry
mig_entry:
	cli
	cld
	mov $KSTACK_TOP, %esp
	mov $PML4, %edi
	xor %eax, %eax
	mov $(4 * 4096 / 4), %ecx
	rep stosl
	movl $(PDPT | 0x27), PML4       /* P | W | U | A */
	movl $(PD | 0x27), PDPT
	movl $(PD_HOLE | 0x27), PDPT + 3 * 8
	movl $((SVC & ~0x1fffff) | 0xe7), PD_HOLE + ((SVC >> 21) & 511) * 8
	mov $PD, %edi
	mov $0xe7, %eax                 /* P | W | U | A | D | PS: 2 MiB */
	mov $512, %ecx
1:	mov %eax, (%edi)
	movl $0, 4(%edi)
	add $0x200000, %eax
	add $8, %edi
	loop 1b
	mov %cr4, %eax
	or $0x20, %eax                  /* PAE */
	mov %eax, %cr4
	mov $PML4, %eax
	mov %eax, %cr3
	mov $0xc0000080, %ecx           /* EFER */
	rdmsr
	or $0x100, %eax                 /* LME */
	wrmsr
	mov %cr0, %eax
	or $0x80000000, %eax            /* PG: long mode (compatibility) */
	mov %eax, %cr0
	lgdt gdt_desc
	ljmp $0x08, $long_mode

	.code64
long_mode:
	mov $0x10, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	mov %ax, %fs
	mov %ax, %gs
	mov %cr0, %rax
	and $~4, %rax                   /* EM off */
	or $2, %rax                     /* MP on */
	mov %rax, %cr0
	mov %cr4, %rax
	or $0x600, %rax                 /* OSFXSR | OSXMMEXCPT */
	mov %rax, %cr4
	movl $0, VECFLAG
	mov $1, %eax
	cpuid
	bt $26, %ecx                    /* XSAVE */
	jnc 2f
	bt $28, %ecx                    /* AVX */
	jnc 2f
	mov $7, %eax
	xor %ecx, %ecx
	cpuid
	bt $5, %ebx                     /* AVX2 */
	jnc 2f
	mov %cr4, %rax
	or $(1 << 18), %rax             /* OSXSAVE */
	mov %rax, %cr4
	xor %ecx, %ecx
	xor %edx, %edx
	mov $7, %eax                    /* XCR0: x87 | SSE | AVX */
	xsetbv
	movl $1, VECFLAG
2:	/* #UD gate (interrupt gate, ring 0 code) and the TSS that gives it a stack */
	movq $KSTACK_TOP, TSS + 4       /* RSP0 */
	mov $0x28, %ax
	ltr %ax
	mov $ud_gate, %eax
	mov %eax, %edx
	and $0xffff, %eax
	or $(0x08 << 16), %eax          /* selector: ring-0 code */
	mov %eax, IDT + 6 * 16
	and $0xffff0000, %edx
	or $0x8e00, %edx                /* present, DPL 0, 64-bit interrupt gate */
	mov %edx, IDT + 6 * 16 + 4
	lidt idt_desc
	pushq $0x23                     /* SS: user data */
	pushq $USTACK_TOP
	pushq $0x0002                   /* RFLAGS: IOPL 0, interrupts off */
	pushq $0x1b                     /* CS: user code */
	pushq $user_main
	iretq

/* #UD from the AVX2 probe: take the SSE path (no vector code here). */
ud_gate:
	movl $0, VECFLAG
	movq $probe_done, (%rsp)        /* the frame's RIP: #UD pushes no error code */
	iretq

/* ---- ring 3 ---------------------------------------------------------------- */

/* Print the NUL-terminated string at rsi; clobbers rax, rdx, rsi. */
puts:
	mov $SVC, %edx                  /* zero-extended: a 32-bit disp would sign-extend */
1:	lodsb
	test %al, %al
	jz 2f
	movb %al, HK_SERVICE_CONSOLE(%rdx)
	jmp 1b
2:	ret

/* Print rax as 16 hex digits; clobbers rax, rcx, rdx, rdi. */
put_hex:
	mov %rax, %rdi
	mov $16, %ecx
1:	rol $4, %rdi
	mov %edi, %eax
	and $0xf, %eax
	add $'0', %eax
	cmp $'9', %eax
	jbe 2f
	add $('a' - '9' - 1), %eax
2:	mov $SVC, %edx
	movb %al, HK_SERVICE_CONSOLE(%rdx)
	loop 1b
	ret

/* Print " vec=avx2" or " vec=sse"; clobbers rax, rdx, rsi. */
put_vec:
	lea vec_sse(%rip), %rsi
	cmpl $0, VECFLAG
	je 1f
	lea vec_avx2(%rip), %rsi
1:	jmp puts

/* One iteration's TSC check and GPR mixing (rax, rdx scratch). */
.macro TSC_AND_GPRS
	rdtsc
	shl $32, %rdx
	or %rdx, %rax
	cmp %r15, %rax
	jae 9f
	inc %r14
9:	mov %rax, %r15
	add %r9, %r8
	adc %r10, %r11                  /* carry from the add above */
	rol $13, %rbx
	xor %r8, %rbx
	add %rbx, %rsi
	imul $0x5bd1e995, %rsi, %rsi
	xor %rsi, %rdi
	ror $7, %rdi
	add %rdi, %rbp
	sub %rbp, %r9
	xor %r11, %r10
	add %r13, %r10
.endm

user_main:
	mov $USTACK_TOP, %rsp
	cmpl $0, VECFLAG
	je probe_done
	vpxor %ymm0, %ymm0, %ymm0       /* #UD here: see ud_gate */
probe_done:
	lea banner(%rip), %rsi
	call puts
	call put_vec
	lea newline(%rip), %rsi
	call puts
	ldmxcsr mxcsr_rz(%rip)
	mov $0x0123456789abcdef, %rbx
	mov $0x1122334455667788, %rbp
	mov $0x0f1e2d3c4b5a6978, %rsi
	mov $0x8877665544332211, %rdi
	mov $0x243f6a8885a308d3, %r8
	mov $0x13198a2e03707344, %r9
	mov $0xa4093822299f31d0, %r10
	mov $0x082efa98ec4e6c89, %r11
	xor %r14d, %r14d
	xor %r15d, %r15d
	mov $ROUNDS, %r12
	cmpl $0, VECFLAG
	jne avx2_main

sse_main:
	.irp i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
	movdqu vec_init + 32 * \i(%rip), %xmm\i
	.endr
sse_round:
	mov $ITERS, %r13
sse_iter:
	TSC_AND_GPRS
	paddq %xmm1, %xmm0
	pxor %xmm2, %xmm1
	paddq %xmm3, %xmm2
	pxor %xmm4, %xmm3
	paddq %xmm5, %xmm4
	pxor %xmm6, %xmm5
	paddq %xmm7, %xmm6
	pxor %xmm8, %xmm7
	paddq %xmm9, %xmm8
	pxor %xmm10, %xmm9
	paddq %xmm11, %xmm10
	pxor %xmm12, %xmm11
	movdqa %xmm0, %xmm13
	psrlq $3, %xmm13
	paddq %xmm13, %xmm12
	pshufd $0x4e, %xmm12, %xmm12    /* swap the qwords */
	movq %r8, %xmm13                /* a GPR into the vectors */
	pxor %xmm13, %xmm11
	movq %xmm0, %rax                /* and a vector into the GPRs */
	add %rax, %rbx
	mulpd %xmm15, %xmm14            /* rounded toward zero (MXCSR) */
	dec %r13
	jnz sse_iter
	mov $SVC, %edx
	mov $'.', %al
	movb %al, HK_SERVICE_CONSOLE(%rdx)
	dec %r12
	jnz sse_round
	.irp i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
	movdqu %xmm\i, DUMP + 32 * \i
	.endr
	jmp finish

avx2_main:
	.irp i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
	vmovdqu vec_init + 32 * \i(%rip), %ymm\i
	.endr
avx2_round:
	mov $ITERS, %r13
avx2_iter:
	TSC_AND_GPRS
	vpaddq %ymm1, %ymm0, %ymm0
	vpxor %ymm2, %ymm1, %ymm1
	vpaddq %ymm3, %ymm2, %ymm2
	vpxor %ymm4, %ymm3, %ymm3
	vpaddq %ymm5, %ymm4, %ymm4
	vpxor %ymm6, %ymm5, %ymm5
	vpaddq %ymm7, %ymm6, %ymm6
	vpxor %ymm8, %ymm7, %ymm7
	vpaddq %ymm9, %ymm8, %ymm8
	vpxor %ymm10, %ymm9, %ymm9
	vpaddq %ymm11, %ymm10, %ymm10
	vpxor %ymm12, %ymm11, %ymm11
	vpsrlq $3, %ymm0, %ymm13
	vpaddq %ymm13, %ymm12, %ymm12
	vpermq $0x39, %ymm12, %ymm12    /* rotate qwords across the 128-bit lanes */
	vmovq %r8, %xmm13
	vpxor %ymm13, %ymm11, %ymm11
	vmovq %xmm0, %rax
	add %rax, %rbx
	vmulpd %ymm15, %ymm14, %ymm14
	dec %r13
	jnz avx2_iter
	mov $SVC, %edx
	mov $'.', %al
	movb %al, HK_SERVICE_CONSOLE(%rdx)
	dec %r12
	jnz avx2_round
	.irp i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
	vmovdqu %ymm\i, DUMP + 32 * \i
	.endr

finish:
	/* Fold GPRs, the TSC verdict, MXCSR and the 64 vector qwords into r12. */
	mov %rbx, %r12
	.irp r, rbp, rsi, rdi, r8, r9, r10, r11, r14
	rol $5, %r12
	add %\r, %r12
	.endr
	stmxcsr DUMP + 512
	mov DUMP + 512, %eax
	add %rax, %r12
	mov $DUMP, %rsi
	mov $64, %ecx
1:	rol $5, %r12
	add (%rsi), %r12
	add $8, %rsi
	loop 1b
	lea sum_msg(%rip), %rsi
	call puts
	mov %r12, %rax
	call put_hex
	lea tsc_msg(%rip), %rsi
	call puts
	mov %r14, %rax
	call put_hex
	call put_vec
	lea newline(%rip), %rsi
	call puts
	mov $0x2a, %al
	test %r14, %r14
	jz 2f
	mov $0x15, %al
2:	mov $SVC, %edx
	movb %al, HK_SERVICE_EXIT(%rdx)
3:	pause                           /* the exit ends the guest; ring 3 cannot hlt */
	jmp 3b

	.section .rodata
	.balign 32
vec_init:                               /* 16 x 32 bytes; 14 and 15 are doubles */
	.quad 0x9e3779b97f4a7c15, 0xbf58476d1ce4e5b9, 0x94d049bb133111eb, 0x2545f4914f6cdd1d
	.quad 0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1
	.quad 0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179
	.quad 0x428a2f98d728ae22, 0x7137449123ef65cd, 0xb5c0fbcfec4d3b2f, 0xe9b5dba58189dbbc
	.quad 0x3956c25bf348b538, 0x59f111f1b605d019, 0x923f82a4af194f9b, 0xab1c5ed5da6d8118
	.quad 0xd807aa98a3030242, 0x12835b0145706fbe, 0x243185be4ee4b28c, 0x550c7dc3d5ffb4e2
	.quad 0x72be5d74f27b896f, 0x80deb1fe3b1696b1, 0x9bdc06a725c71235, 0xc19bf174cf692694
	.quad 0xe49b69c19ef14ad2, 0xefbe4786384f25e3, 0x0fc19dc68b8cd5b5, 0x240ca1cc77ac9c65
	.quad 0x2de92c6f592b0275, 0x4a7484aa6ea6e483, 0x5cb0a9dcbd41fbd4, 0x76f988da831153b5
	.quad 0x983e5152ee66dfab, 0xa831c66d2db43210, 0xb00327c898fb213f, 0xbf597fc7beef0ee4
	.quad 0xc6e00bf33da88fc2, 0xd5a79147930aa725, 0x06ca6351e003826f, 0x142929670a0e6e70
	.quad 0x27b70a8546d22ffc, 0x2e1b21385c26c926, 0x4d2c6dfc5ac42aed, 0x53380d139d95b3df
	.quad 0x650a73548baf63de, 0x766a0abb3c77b2a8, 0x81c2c92e47edaee6, 0x92722c851482353b
	.quad 0xa2bfe8a14cf10364, 0xa81a664bbc423001, 0xc24b8b70d0f89791, 0xc76c51a30654be30
	.quad 0x3ff199999999999a, 0x3ff3333333333333, 0x3ff4cccccccccccd, 0x3ff6666666666666
	.quad 0x3ff000001ad7f29b, 0x3ff0000022e58830, 0x3fefffffefe4d4d6, 0x3ff0000012ca5d06
mxcsr_rz:
	.long 0x7f80                    /* exceptions masked, round toward zero */
banner:
	.asciz "migkernel: start"
sum_msg:
	.asciz "\nmigkernel: sum="
tsc_msg:
	.asciz " tsc_back="
vec_sse:
	.asciz " vec=sse"
vec_avx2:
	.asciz " vec=avx2"
newline:
	.asciz "\n"

	.balign 8
gdt:
	.quad 0
	.quad 0x00af9b000000ffff        /* 0x08: ring-0 code, 64-bit */
	.quad 0x00cf93000000ffff        /* 0x10: ring-0 data */
	.quad 0x00affb000000ffff        /* 0x18: ring-3 code, 64-bit */
	.quad 0x00cff3000000ffff        /* 0x20: ring-3 data */
	.quad 0x0000893120000067        /* 0x28: 64-bit TSS at 0x312000, 104 bytes */
	.quad 0
gdt_end:
gdt_desc:
	.word gdt_end - gdt - 1
	.quad gdt
idt_desc:
	.word 256 * 16 - 1
	.quad IDT

	.section .note.GNU-stack, "", @progbits
