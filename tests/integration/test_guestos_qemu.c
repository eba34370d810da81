/*
 * Boots guestos and the tiny PVH kernel under QEMU (TCG, no /dev/kvm
 * needed) and checks what a user sees: the serial output and the exit
 * status that isa-debug-exit turns the guest's exit value v into,
 * (v << 1) | 1. meson passes the kernels as HK_GUESTOS and HK_TINY_KERNEL.
 *
 * QEMU starts only the boot vCPU of a PVH kernel. guestos.sipi=N makes
 * guestos wake N-1 more processors itself (INIT/SIPI), which then enter
 * pvh_entry as hyperkernel's vCPUs do, so the SMP paths run here too;
 * memtest's shares= argument splits the work as N vCPUs would.
 */
#include <criterion/criterion.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "hk_test.h"

#define QEMU "qemu-system-x86_64"
/*
 * Per QEMU run (TCG: 64 MiB of memtest takes ~1 s). Enforced by hk_run rather
 * than with Criterion's .timeout, whose runner leaks under LeakSanitizer (2.4.1).
 */
#define QEMU_TIMEOUT_S 120

/* Exit statuses: guestos writes v to port 0x501, QEMU exits with (v << 1) | 1. */
#define STATUS_OK	 1
#define STATUS_WORKLOAD	 3
#define STATUS_CMDLINE	 5
#define STATUS_EXCEPTION 7
#define STATUS_TINY	 85

static const char *kernel_from_env(const char *var)
{
	hk_need_prog(QEMU);
	return hk_env_file(var);
}

/*
 * Boots kernel with QEMU, one vCPU unless smp says otherwise, and waits for
 * it to exit: b->status is QEMU's exit status (128 + signal if killed),
 * b->out its serial output. QEMU is killed on timeout and dies with this
 * process if Criterion kills the test (hk_run): no process is left behind.
 */
static void boot(struct hk_proc_result *b, const char *kernel, const char *append, const char *mem,
		 const char *smp)
{
	const char *argv[] = {
	    QEMU,
	    "-machine",
	    "q35",
	    "-accel",
	    "tcg",
	    "-m",
	    mem,
	    "-smp",
	    smp,
	    "-nodefaults",
	    "-no-user-config",
	    "-display",
	    "none",
	    "-monitor",
	    "none",
	    "-serial",
	    "stdio",
	    "-no-reboot",
	    "-device",
	    "isa-debug-exit,iobase=0x501,iosize=4",
	    "-kernel",
	    kernel,
	    append ? "-append" : NULL,
	    append,
	    NULL,
	};

	hk_run_checked((char *const *)argv, QEMU_TIMEOUT_S, b);
	cr_log_info("kernel %s, append '%s', status %d:\n%s", kernel, append ? append : "",
		    b->status, b->out);
}

static void boot_guestos(struct hk_proc_result *b, const char *append, const char *mem)
{
	boot(b, kernel_from_env("HK_GUESTOS"), append, mem, "1");
}

/* The value of the checksum line, which must be well-formed. */
static unsigned long long checksum_of(const struct hk_proc_result *b)
{
	char line[128];
	unsigned long long v;
	int end = 0;

	hk_line_with(b->out, "memtest checksum 0x", line, sizeof(line));
	cr_assert(sscanf(line, "memtest checksum 0x%16llx%n", &v, &end) == 1 &&
		      end == (int)strlen(line) && strlen(line) == 35,
		  "no well-formed checksum line in:\n%s", b->out);
	return v;
}

Test(guestos, memtest_64m_ok)
{
	static struct hk_proc_result b;
	char line[256];

	boot_guestos(&b, "memtest size=64M seed=7", "256M");
	cr_expect_eq(b.status, STATUS_OK, "status %d, want %d; output:\n%s", b.status, STATUS_OK,
		     b.out);
	hk_line_with(b.out, "guestos: 1 vCPU, ", line, sizeof(line));
	cr_expect(strstr(line, " MiB RAM, cmdline \"memtest size=64M seed=7\""), "banner '%s'",
		  line);
	cr_expect(strstr(b.out, "memtest: 64 MiB at 0x") && strstr(b.out, " seed 7 on 1 vCPU\n"),
		  "no size line in:\n%s", b.out);
	cr_expect(strstr(b.out, "memtest: first-touch fill+verify "), "no timing line:\n%s", b.out);
	checksum_of(&b);
	cr_expect(strstr(b.out, "\nmemtest ok\n"), "no 'memtest ok' in:\n%s", b.out);
	cr_expect(!strstr(b.out, "FAIL"), "FAIL in:\n%s", b.out);
}

/*
 * The checksum is a function of (size, seed) alone: the same with a split
 * into 1 or 7 shares (as 1 or 7 vCPUs would split it), on 3 vCPUs, with
 * twice the RAM, and with extra passes. A different seed changes it.
 */
Test(guestos, memtest_checksum_depends_on_size_and_seed_only)
{
	static struct hk_proc_result b;
	unsigned long long one, seven, other_seed;

	boot_guestos(&b, "memtest size=16M seed=7 shares=1", "256M");
	cr_assert_eq(b.status, STATUS_OK, "output:\n%s", b.out);
	one = checksum_of(&b);

	boot_guestos(&b, "memtest size=16M seed=7 shares=7 passes=2", "512M");
	cr_assert_eq(b.status, STATUS_OK, "output:\n%s", b.out);
	seven = checksum_of(&b);
	cr_expect_eq(seven, one, "checksum 0x%llx with shares/RAM/passes, 0x%llx without", seven,
		     one);
	cr_expect(strstr(b.out, "memtest: pass 1 fill+verify 16777216 bytes ") &&
		      strstr(b.out, "memtest: pass 2 fill+verify 16777216 bytes "),
		  "no pass lines in:\n%s", b.out);

	boot(&b, kernel_from_env("HK_GUESTOS"), "memtest size=16M seed=7 guestos.sipi=3", "256M",
	     "3");
	cr_assert_eq(b.status, STATUS_OK, "output:\n%s", b.out);
	cr_expect(strstr(b.out, " seed 7 on 3 vCPUs\n"), "output:\n%s", b.out);
	cr_expect_eq(checksum_of(&b), one, "checksum changed on 3 vCPUs");

	boot_guestos(&b, "memtest size=16M seed=8", "256M");
	cr_assert_eq(b.status, STATUS_OK, "output:\n%s", b.out);
	other_seed = checksum_of(&b);
	cr_expect_neq(other_seed, one, "seed does not change the checksum");
}

/* Default size: all RAM above the kernel, from the start_info memory map. */
Test(guestos, memtest_default_size_uses_memmap)
{
	static struct hk_proc_result b;

	boot_guestos(&b, "memtest", "128M");
	cr_expect_eq(b.status, STATUS_OK, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "memtest ok\n"), "output:\n%s", b.out);
	/* 128 MiB less the low 1 MiB, the kernel image and QEMU's reserved tail */
	cr_expect(strstr(b.out, " KiB at 0x") || strstr(b.out, " MiB at 0x"), "output:\n%s", b.out);
}

Test(guestos, memtest_reports_a_bad_word)
{
	static struct hk_proc_result b;

	boot_guestos(&b, "memtest size=8M corrupt=0x1234 shares=3", "256M");
	cr_expect_eq(b.status, STATUS_WORKLOAD, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "memtest FAIL at 0x"), "no FAIL line in:\n%s", b.out);
	cr_expect(!strstr(b.out, "memtest ok"), "output:\n%s", b.out);
}

Test(guestos, bad_size_is_a_one_line_error)
{
	static struct hk_proc_result b;
	char line[512];

	boot_guestos(&b, "memtest size=banana", "256M");
	cr_expect_eq(b.status, STATUS_CMDLINE, "output:\n%s", b.out);
	/* the banner, then exactly one line naming the bad argument */
	cr_expect_eq(hk_lines(b.out), 2, "output:\n%s", b.out);
	hk_line_with(b.out, "memtest: ", line, sizeof(line));
	cr_expect(strstr(line, "size=banana"), "error line '%s'", line);
}

Test(guestos, unknown_workload_is_a_one_line_error)
{
	static struct hk_proc_result b;
	char line[512];

	boot_guestos(&b, "frobnicate now", "256M");
	cr_expect_eq(b.status, STATUS_CMDLINE, "output:\n%s", b.out);
	cr_expect_eq(hk_lines(b.out), 2, "output:\n%s", b.out);
	hk_line_with(b.out, "guestos: unknown workload", line, sizeof(line));
	cr_expect(strstr(line, "'frobnicate'"), "output:\n%s", b.out);
}

Test(guestos, hello)
{
	static struct hk_proc_result b;

	boot_guestos(&b, "hello", "256M");
	cr_expect_eq(b.status, STATUS_OK, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "\nhello from vCPU 0\n"), "output:\n%s", b.out);
	cr_expect(!strstr(b.out, "hello from vCPU 1"), "output:\n%s", b.out);
}

/* Every vCPU prints, in index order, from ring 3. */
Test(guestos, hello_from_4_vcpus)
{
	static struct hk_proc_result b;

	boot(&b, kernel_from_env("HK_GUESTOS"), "hello guestos.sipi=4", "256M", "4");
	cr_expect_eq(b.status, STATUS_OK, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "guestos: 4 vCPUs, ") &&
		      strstr(b.out, "\nhello from vCPU 0\nhello from vCPU 1\n"
				    "hello from vCPU 2\nhello from vCPU 3\n"),
		  "output:\n%s", b.out);
}

/* QEMU starts only the boot vCPU of a PVH kernel: guestos must not wait for others. */
Test(guestos, hello_with_qemu_smp2_runs_on_boot_vcpu)
{
	static struct hk_proc_result b;

	boot(&b, kernel_from_env("HK_GUESTOS"), "hello hk.vcpus=2", "256M", "2");
	cr_expect_eq(b.status, STATUS_OK, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "guestos: 1 vCPU, "), "output:\n%s", b.out);
	cr_expect(strstr(b.out, "\nhello from vCPU 0\n"), "output:\n%s", b.out);
}

Test(guestos, exception_is_reported)
{
	static struct hk_proc_result b;
	char line[512];

	boot_guestos(&b, "fault", "256M");
	cr_expect_eq(b.status, STATUS_EXCEPTION, "output:\n%s", b.out);
	hk_line_with(b.out, "guestos: exception 14 at RIP 0x", line, sizeof(line));
	cr_expect(strstr(line, " cr2 0x1000000000 ") && strstr(line, "ring 3"), "output:\n%s",
		  b.out);
}

Test(tinykernel, prints_and_exits_85)
{
	static struct hk_proc_result b;

	boot(&b, kernel_from_env("HK_TINY_KERNEL"), NULL, "64M", "1");
	cr_expect_eq(b.status, STATUS_TINY, "output:\n%s", b.out);
	cr_expect_str_eq(b.out, "tiny kernel ok\n");
}
