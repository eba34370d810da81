/*
 * The service page: how ring-3 guest code reaches the hyper-kernel.
 *
 * One 4 KiB MMIO page at a fixed guest-physical address in the device
 * hole.  Shared by hkd (hyperkernel/dev_service.c) and every guest built
 * here (guestos, the test kernels), so it holds only #defines: it is
 * included from C on both sides and from assembly.  docs/boot-abi.md
 * describes it for kernels written elsewhere.
 *
 * Why MMIO: an access to a GPA with no memory slot exits to the VMM on
 * every x86 hypervisor, from any ring.  Ring-3 port I/O depends on IOPL
 * (kvm_pvm ignores IOPL=3 and raises #GP) and ring-3 software interrupts
 * through DPL-3 gates raise #UD there; neither is used by ring-3 code.
 *
 * ABI version 1.  Registers are little-endian; offsets from the page base.
 */
#ifndef HK_SERVICE_PAGE_H
#define HK_SERVICE_PAGE_H

#define HK_SERVICE_PAGE_GPA  0xcffff000 /* just below the virtio-mmio windows */
#define HK_SERVICE_PAGE_SIZE 0x1000

/* Read-only: HK_SERVICE_MAGIC ("HKSP") and HK_SERVICE_VERSION, 4 bytes each. */
#define HK_SERVICE_ID      0x00
#define HK_SERVICE_VER     0x04
#define HK_SERVICE_MAGIC   0x50534b48
#define HK_SERVICE_VERSION 1

/* Write 1-8 bytes: each byte up to the first NUL goes to the console, so
 * one 8-byte store carries 8 characters for the cost of one exit. */
#define HK_SERVICE_CONSOLE 0x08

/* Write v (1, 2, 4 or 8 bytes; the low 31 bits count): the guest ends with
 * status (v << 1) | 1, exactly as a write of v to isa-debug-exit. */
#define HK_SERVICE_EXIT 0x10

/* Write any value: the writing vCPU stops for good, as if it had halted
 * with interrupts off.  When every vCPU has stopped, the guest has crashed
 * (it never said how it ended). */
#define HK_SERVICE_PARK 0x18

/* Read 4 bytes: the index of the reading vCPU (its APIC ID). */
#define HK_SERVICE_VCPU 0x20

#endif
